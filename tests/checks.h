/*
 * checks.h - counting checks for the test programs that are not Check
 * suites (the GPU tests and the training engine's device path): CHECK
 * counts a pass or prints a failure and goes on, so one run lists every
 * difference; random inputs and relative errors for comparing a backend
 * with the CPU's.
 */
#ifndef LLMKIT_TEST_CHECKS_H
#define LLMKIT_TEST_CHECKS_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int n_fail, n_pass;

static inline void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void failf(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	n_fail++;
}

#define CHECK(cond, ...) do { if (cond) n_pass++; else failf(__VA_ARGS__); } while (0)

/* Uniform in [-1, 1), from a seed the caller keeps. */
static inline float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* n such values times scale, malloc'd (exits when out of memory). */
static inline float *rnd(int64_t n, unsigned *seed, float scale)
{
	float *v = malloc((n ? n : 1) * sizeof(float));
	if (!v) {
		fprintf(stderr, "FATAL: out of memory\n");
		exit(1);
	}
	for (int64_t i = 0; i < n; i++)
		v[i] = frand(seed) * scale;
	return v;
}

/* Largest |got - want| over the largest |want| (the vector's scale). */
static inline double rel_err(const float *got, const float *want, int64_t n)
{
	double mx = 1e-30, err = 0;
	for (int64_t i = 0; i < n; i++) {
		double a = fabs((double)want[i]);
		mx = a > mx ? a : mx;
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= err))  /* NaN counts as an error */
			err = isnan(e) ? INFINITY : e;
	}
	return err / mx;
}

static inline void expect_close(const char *what, const float *got,
                                const float *want, int64_t n, double tol)
{
	double e = rel_err(got, want, n);
	CHECK(e <= tol, "%s: relative error %.3g > %.3g", what, e, tol);
}

#endif
