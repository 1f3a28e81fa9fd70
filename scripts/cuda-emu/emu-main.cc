/*
 * emu-main - the CUDA kernels of libcore/cuda, run on the host by the
 * emulator (shim/cuda_runtime.h, emu.cc) against the CPU backend's ops or
 * plain loops.  Usage: emu-tests [SUITE...]  (train lora ops quant sample;
 * all by default).  Exit status 1 when a check failed or the emulator saw a
 * launch error or a deadlock.  Built and run by run.sh.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_runtime.h"
#include "emu-check.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"

int emu_n_fail, emu_n_pass;
struct llm_backend *emu_cpu;

float emu_frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

vec emu_rnd(size_t n, unsigned *seed, float scale)
{
	vec v(n);
	for (size_t i = 0; i < n; i++)
		v[i] = emu_frand(seed) * scale;
	return v;
}

bool emu_close(const char *what, const float *got, const float *want, size_t n,
               double tol)
{
	double mx = 1e-30, err = 0;
	for (size_t i = 0; i < n; i++) {
		mx = fmax(mx, fabs((double)want[i]));
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= err))
			err = isnan(e) ? INFINITY : e;
	}
	if (err / mx <= tol) {
		emu_n_pass++;
		printf("ok    %-56s %.2g\n", what, err / mx);
		return true;
	}
	emu_n_fail++;
	printf("FAIL  %-56s %.3g > %.3g\n", what, err / mx, tol);
	return false;
}

bool emu_check(bool ok, const char *fmt, ...)
{
	va_list ap;
	printf(ok ? "ok    " : "FAIL  ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (ok)
		emu_n_pass++;
	else
		emu_n_fail++;
	return ok;
}

static const struct {
	const char *name;
	void (*run)(void);
} suites[] = {
	{ "train", emu_test_train },
	{ "lora", emu_test_lora },
	{ "ops", emu_test_ops },
	{ "quant", emu_test_quant },
	{ "sample", emu_test_sample },
};

int main(int argc, char **argv)
{
	if (llm_backend_cpu_init(&emu_cpu, 1)) {
		fprintf(stderr, "%s\n", llm_errmsg());
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (const auto &s : suites) {
		bool run = argc < 2;
		for (int i = 1; i < argc; i++)
			run |= !strcmp(argv[i], s.name);
		if (!run)
			continue;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		s.run();
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("--    %s: %.2f s\n", s.name,
		       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
	}
	llm_backend_free(emu_cpu);
	int errs = emu_errors();
	printf("%d checks passed, %d failed; %d emulator errors\n", emu_n_pass, emu_n_fail,
	       errs);
	return emu_n_fail || errs ? 1 : 0;
}
