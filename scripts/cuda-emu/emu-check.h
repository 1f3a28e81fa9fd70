/*
 * emu-check.h - what the emulation tests share (emu-main.cc runs them):
 * the CPU backend they compare against, random inputs and the relative
 * error check of tests/test-cuda.c (largest |got - want| over the largest
 * |want|; NaN fails).
 */
#ifndef CUDA_EMU_CHECK_H
#define CUDA_EMU_CHECK_H

#include <math.h>
#include <stdio.h>

#include <vector>

extern int emu_n_fail, emu_n_pass;
extern struct llm_backend *emu_cpu;
typedef std::vector<float> vec;

float emu_frand(unsigned *s);
vec emu_rnd(size_t n, unsigned *seed, float scale);
/* relative error of got against want within tol: counted and printed */
bool emu_close(const char *what, const float *got, const float *want, size_t n,
               double tol);
static inline bool emu_close(const char *what, const vec &got, const vec &want, double tol)
{
	return emu_close(what, got.data(), want.data(), want.size(), tol);
}
/* a check that is true or false */
bool emu_check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* the suites */
void emu_test_train(void);
void emu_test_lora(void);
void emu_test_ops(void);
void emu_test_quant(void);
void emu_test_sample(void);

#endif
