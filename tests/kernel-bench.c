/*
 * kernel-bench - the CPU rows kernel beside single-threaded OpenBLAS sgemm
 * on one thread, for the matrix shapes of a model and a range of token
 * counts: the choice the CPU backend makes between them (backend-cpu.c,
 * BLAS_MIN_TOKENS) and how close each comes to the machine.
 *
 *   kernel-bench [-s SHAPES] [-n TOKENS] [-i ISAS] [-d dtype] [-T seconds]
 *
 * SHAPES: n_in x n_out pairs, comma-separated (default stories110M's:
 * 768x768 attention, 768x2048 gate/up, 2048x768 down, 768x32000 output);
 * TOKENS: token counts (default 1,2,4,8,16,32,64,128,256); ISAS: the
 * kernel tables to time (default every one this CPU runs but scalar);
 * dtype f32, f16 or bf16 for the weights (sgemm always reads f32).
 *
 * The weights are cycled through copies that together exceed the last
 * level cache (256 MiB), so every call reads them from memory as decoding
 * does.  Each cell runs for about -T seconds (0.3) and prints GFLOP/s, the
 * weight bytes per second, and the rows kernel's speed over sgemm's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"
#include "cpu/kernels.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#define POOL_BYTES (256ull << 20)

struct shape {
	int n_in, n_out;
};

struct cell {
	double gflops, gbs;
};

static int parse_list(const char *s, int *v, int cap)
{
	int n = 0;
	char *end;
	while (*s && n < cap) {
		long x = strtol(s, &end, 10);
		if (end == s || x < 1 || x > 1 << 20)
			return -1;
		v[n++] = (int)x;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

/* Time fn over the copies of the weights for about `secs`. */
typedef void (*run_fn)(void *arg, const void *w);

static struct cell timeit(run_fn fn, void *arg, const char *pool, size_t bytes,
                          int copies, double flops, double secs)
{
	double t = 0;
	long calls = 0;
	fn(arg, pool);                      /* warm the code and the tokens */
	while (t < secs || calls < 3 * copies) {
		const char *w = pool + (size_t)(calls % copies) * bytes;
		double t0 = llm_time_now();
		fn(arg, w);
		t += llm_time_now() - t0;
		calls++;
	}
	return (struct cell){ flops * calls / t * 1e-9, (double)bytes * calls / t * 1e-9 };
}

struct rows_arg {
	const struct llm_cpu_kernels *k;
	int dt, n_in, n_out, n_tok;
	size_t rb;
	const float *x;
	float *y;
};

static void run_rows(void *p, const void *w)
{
	struct rows_arg *a = p;
	a->k->rows[a->dt](w, a->rb, a->n_in, 0, a->n_out, a->x, a->n_in, a->n_tok,
	                  a->y, a->n_out);
}

#ifdef HAVE_OPENBLAS
static void run_sgemm(void *p, const void *w)
{
	struct rows_arg *a = p;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n_tok, a->n_out,
	            a->n_in, 1.0f, a->x, a->n_in, w, a->n_in, 0.0f, a->y, a->n_out);
}
#endif

int main(int argc, char **argv)
{
	struct shape shapes[16] = { { 768, 768 }, { 768, 2048 }, { 2048, 768 },
	                            { 768, 32000 } };
	int n_shapes = 4, toks[32] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 }, n_toks = 9;
	const char *isas = NULL, *dtname = "f32";
	double secs = 0.3;
	int opt;

	while ((opt = getopt(argc, argv, "s:n:i:d:T:h")) != -1) {
		switch (opt) {
		case 's': {
			int v[32], n = 0;
			char buf[256], *p = buf;
			snprintf(buf, sizeof(buf), "%s", optarg);
			for (char *c = buf; *c; c++)
				if (*c == 'x')
					*c = ',';
			n = parse_list(p, v, 32);
			if (n < 2 || n % 2) {
				fprintf(stderr, "kernel-bench: -s: '%s' is not a list of "
				        "n_inxn_out\n", optarg);
				return 2;
			}
			n_shapes = n / 2;
			for (int i = 0; i < n_shapes; i++)
				shapes[i] = (struct shape){ v[2 * i], v[2 * i + 1] };
			break;
		}
		case 'n':
			if ((n_toks = parse_list(optarg, toks, 32)) < 1) {
				fprintf(stderr, "kernel-bench: -n: '%s' is not a list of "
				        "token counts\n", optarg);
				return 2;
			}
			break;
		case 'i': isas = optarg; break;
		case 'd': dtname = optarg; break;
		case 'T': {
			char *end;
			secs = strtod(optarg, &end);
			if (end == optarg || *end || !(secs > 0 && secs <= 60)) {
				fprintf(stderr, "kernel-bench: -T: '%s' is not a number "
				        "of seconds in (0, 60]\n", optarg);
				return 2;
			}
			break;
		}
		default:
			fprintf(stderr, "usage: kernel-bench [-s 768x768,...] "
			        "[-n 1,2,4,...] [-i avx2,avx512] [-d f32|f16|bf16] "
			        "[-T seconds]\n");
			return 2;
		}
	}
	int dt = !strcmp(dtname, "f32") ? LLM_F32 : !strcmp(dtname, "f16") ? LLM_F16
	       : !strcmp(dtname, "bf16") ? LLM_BF16 : -1;
	if (dt < 0) {
		fprintf(stderr, "kernel-bench: -d: '%s' is not f32, f16 or bf16\n", dtname);
		return 2;
	}

	const char *all[] = { "avx2", "avx512" };
	const struct llm_cpu_kernels *ks[2];
	int n_ks = 0;
	for (int i = 0; i < 2; i++) {
		if (isas && !strstr(isas, all[i]))
			continue;
		if ((ks[n_ks] = llm_cpu_kernels_for(all[i])))
			n_ks++;
	}
	if (!n_ks) {
		fprintf(stderr, "kernel-bench: no SIMD kernels on this CPU\n");
		return 77;
	}

#ifdef HAVE_OPENBLAS
	openblas_set_num_threads(1);
#endif
	int max_tok = 0;
	for (int i = 0; i < n_toks; i++)
		max_tok = toks[i] > max_tok ? toks[i] : max_tok;
	printf("# one thread, weights %s from memory (cycled through %llu MiB); "
	       "GFLOP/s (weight GB/s)", dtname, POOL_BYTES >> 20);
#ifdef HAVE_OPENBLAS
	printf("; sgemm reads f32 weights");
#endif
	printf("\n%-11s %5s", "shape", "tok");
	for (int j = 0; j < n_ks; j++)
		printf(" %20s", ks[j]->isa);
#ifdef HAVE_OPENBLAS
	printf(" %20s", "sgemm");
	for (int j = 0; j < n_ks; j++)
		printf(" %8s/sgemm", ks[j]->isa);
#endif
	printf("\n");

	unsigned seed = 1;
	for (int s = 0; s < n_shapes; s++) {
		int n_in = shapes[s].n_in, n_out = shapes[s].n_out;
		size_t rb = llm_row_size(dt, n_in), bytes = rb * n_out;
		size_t fbytes = sizeof(float) * n_in * n_out;
		int copies = (int)(POOL_BYTES / bytes) + 1;
		int fcopies = (int)(POOL_BYTES / fbytes) + 1;
		float *row = malloc(sizeof(float) * n_in);
		char *pool = malloc(bytes * copies);
		float *fpool = malloc(fbytes * fcopies);
		float *x = malloc(sizeof(float) * n_in * max_tok);
		float *y = malloc(sizeof(float) * n_out * max_tok);
		if (!row || !pool || !fpool || !x || !y) {
			fprintf(stderr, "kernel-bench: out of memory\n");
			return 1;
		}
		for (size_t r = 0; r < (size_t)n_out * copies; r++) {
			for (int i = 0; i < n_in; i++) {
				seed = seed * 1103515245u + 12345u;
				row[i] = ((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
			}
			llm_dtype_traits(dt)->from_float(row, pool + r * rb, n_in);
			if (r < (size_t)n_out * fcopies)
				memcpy(fpool + r * n_in, row, sizeof(float) * n_in);
		}
		for (size_t i = 0; i < (size_t)n_in * max_tok; i++)
			x[i] = (float)(i % 13) * 0.01f;

		for (int ti = 0; ti < n_toks; ti++) {
			int n_tok = toks[ti];
			double flops = 2.0 * n_in * n_out * n_tok;
			struct cell c[2];
			char name[32];
			snprintf(name, sizeof(name), "%dx%d", n_in, n_out);
			printf("%-11s %5d", name, n_tok);
			for (int j = 0; j < n_ks; j++) {
				struct rows_arg a = { ks[j], dt, n_in, n_out, n_tok, rb, x, y };
				c[j] = timeit(run_rows, &a, pool, bytes, copies, flops, secs);
				printf("  %8.1f (%6.1f GB/s)", c[j].gflops, c[j].gbs);
			}
#ifdef HAVE_OPENBLAS
			struct rows_arg a = { NULL, LLM_F32, n_in, n_out, n_tok, 0, x, y };
			struct cell b = timeit(run_sgemm, &a, (const char *)fpool, fbytes,
			                       fcopies, flops, secs);
			printf("  %8.1f (%6.1f GB/s)", b.gflops, b.gbs);
			for (int j = 0; j < n_ks; j++)
				printf(" %13.2fx", c[j].gflops / b.gflops);
#endif
			printf("\n");
			fflush(stdout);
		}
		free(row); free(pool); free(fpool); free(x); free(y);
	}
	return 0;
}
