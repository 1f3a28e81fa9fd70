/*
 * qkernels.c - the CPU backend's kernels for quantized weights (dynamic
 * quantization): weights stay in their blocks, the activations of a
 * matmul are quantized once to 8-bit blocks (q8_0 / q8_1 for the
 * 32-families, q8_k for the k-quants, as ggml pairs them) and rows are
 * integer dot products, scaled per block.
 *
 * Three versions, picked with the rest of the table (kernels.h): the
 * scalar reference (quant.c's llm_vec_dot_*), AVX2, and AVX-512 VNNI
 * where the CPU has it (vpdpbusd / vpdpwssd; the AVX-512 table falls back
 * to the AVX2 kernels on a CPU without VNNI).  The SIMD kernels are one
 * source, qkernels-simd.h, compiled once per instruction set.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "cpu/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- scalar */

#define SCALAR_QROWS(T)                                                       \
static void qrows_##T##_scalar(const void *w, size_t row_bytes, int64_t n_in, \
                               int64_t r0, int64_t r1, const void *xq,        \
                               size_t xs, int n_tok, float *y, int64_t ldy)   \
{                                                                             \
	for (int64_t r = r0; r < r1; r++)                                     \
		for (int t = 0; t < n_tok; t++)                               \
			y[t * ldy + r] = llm_vec_dot_##T(n_in,                \
			        (const char *)w + r * row_bytes,              \
			        (const char *)xq + t * xs);                   \
}
SCALAR_QROWS(q4_0) SCALAR_QROWS(q4_1) SCALAR_QROWS(q5_0) SCALAR_QROWS(q5_1)
SCALAR_QROWS(q8_0) SCALAR_QROWS(q2_k) SCALAR_QROWS(q3_k) SCALAR_QROWS(q4_k)
SCALAR_QROWS(q5_k) SCALAR_QROWS(q6_k)

/*
 * rows[] for quantized types: float activations in, so quantize them
 * first (into the heap: these entry points are for callers outside the
 * backend, which quantizes once per matmul and calls qrows directly).
 */
static void rows_via_qrows(const struct llm_cpu_kernels *k, enum llm_dtype t,
                           const void *w, size_t row_bytes, int64_t n_in,
                           int64_t r0, int64_t r1, const float *x, int64_t ldx,
                           int n_tok, float *y, int64_t ldy)
{
	int vt = llm_dtype_traits(t)->vec_dot_type;
	size_t xs = llm_row_size(vt, n_in);
	char *xq = malloc(xs * (size_t)n_tok + 1);
	LLM_ASSERT(xq && xs);
	for (int i = 0; i < n_tok; i++)
		k->quantize_x[vt](x + i * ldx, xq + i * xs, n_in);
	k->qrows[t](w, row_bytes, n_in, r0, r1, xq, xs, n_tok, y, ldy);
	free(xq);
}

#define ROWS_WRAPPER(ISA, TABLE, T, DT)                                       \
static void rows_##T##_##ISA(const void *w, size_t row_bytes, int64_t n_in,   \
                             int64_t r0, int64_t r1, const float *x,          \
                             int64_t ldx, int n_tok, float *y, int64_t ldy)   \
{                                                                             \
	rows_via_qrows(TABLE, DT, w, row_bytes, n_in, r0, r1, x, ldx, n_tok,  \
	               y, ldy);                                               \
}

#define ALL_WRAPPERS(ISA, TABLE)                                              \
	ROWS_WRAPPER(ISA, TABLE, q4_0, LLM_Q4_0)                              \
	ROWS_WRAPPER(ISA, TABLE, q4_1, LLM_Q4_1)                              \
	ROWS_WRAPPER(ISA, TABLE, q5_0, LLM_Q5_0)                              \
	ROWS_WRAPPER(ISA, TABLE, q5_1, LLM_Q5_1)                              \
	ROWS_WRAPPER(ISA, TABLE, q8_0, LLM_Q8_0)                              \
	ROWS_WRAPPER(ISA, TABLE, q2_k, LLM_Q2_K)                              \
	ROWS_WRAPPER(ISA, TABLE, q3_k, LLM_Q3_K)                              \
	ROWS_WRAPPER(ISA, TABLE, q4_k, LLM_Q4_K)                              \
	ROWS_WRAPPER(ISA, TABLE, q5_k, LLM_Q5_K)                              \
	ROWS_WRAPPER(ISA, TABLE, q6_k, LLM_Q6_K)

/* The table each wrapper quantizes with (set at registration). */
static const struct llm_cpu_kernels *tab_scalar, *tab_avx2, *tab_avx512;

ALL_WRAPPERS(scalar, tab_scalar)

#if defined(__x86_64__)

/* ---------------------------------------------------------------- AVX2 */

#define QTARGET __attribute__((target("avx2,fma,f16c")))
#define QN(name) name##_avx2
#define DOT_U8S8(a, u, s) _mm256_add_epi32(a, _mm256_madd_epi16( \
	_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define DOT_SCALED(a, u, s, sc) _mm256_add_epi32(a, _mm256_madd_epi16( \
	_mm256_maddubs_epi16(u, s), sc))
#include "cpu/qkernels-simd.h"
#undef QTARGET
#undef QN
#undef DOT_U8S8
#undef DOT_SCALED

/* ---------------------------------------------------------------- AVX-512 VNNI */

#define QTARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define QN(name) name##_vnni
#define DOT_U8S8(a, u, s) _mm256_dpbusd_epi32(a, u, s)
#define DOT_SCALED(a, u, s, sc) _mm256_dpwssd_epi32(a, _mm256_maddubs_epi16(u, s), sc)
#include "cpu/qkernels-simd.h"
#undef QTARGET
#undef QN
#undef DOT_U8S8
#undef DOT_SCALED

ALL_WRAPPERS(avx2, tab_avx2)
ALL_WRAPPERS(avx512, tab_avx512)

#endif /* __x86_64__ */

/* ---------------------------------------------------------------- registration */

#define SET(k, DT, T, SUFFIX) ((k)->qrows[DT] = qrows_##T##_##SUFFIX)
#define SET_ALL(k, SUFFIX) do {                                               \
	SET(k, LLM_Q4_0, q4_0, SUFFIX); SET(k, LLM_Q4_1, q4_1, SUFFIX);       \
	SET(k, LLM_Q5_0, q5_0, SUFFIX); SET(k, LLM_Q5_1, q5_1, SUFFIX);       \
	SET(k, LLM_Q8_0, q8_0, SUFFIX); SET(k, LLM_Q2_K, q2_k, SUFFIX);       \
	SET(k, LLM_Q3_K, q3_k, SUFFIX); SET(k, LLM_Q4_K, q4_k, SUFFIX);       \
	SET(k, LLM_Q5_K, q5_k, SUFFIX); SET(k, LLM_Q6_K, q6_k, SUFFIX);       \
	} while (0)
#define SET_ROWS(k, ISA) do {                                                 \
	(k)->rows[LLM_Q4_0] = rows_q4_0_##ISA; (k)->rows[LLM_Q4_1] = rows_q4_1_##ISA; \
	(k)->rows[LLM_Q5_0] = rows_q5_0_##ISA; (k)->rows[LLM_Q5_1] = rows_q5_1_##ISA; \
	(k)->rows[LLM_Q8_0] = rows_q8_0_##ISA; (k)->rows[LLM_Q2_K] = rows_q2_k_##ISA; \
	(k)->rows[LLM_Q3_K] = rows_q3_k_##ISA; (k)->rows[LLM_Q4_K] = rows_q4_k_##ISA; \
	(k)->rows[LLM_Q5_K] = rows_q5_k_##ISA; (k)->rows[LLM_Q6_K] = rows_q6_k_##ISA; \
	} while (0)

void llm_cpu_quant_register(struct llm_cpu_kernels *k)
{
	if (!strcmp(k->isa, "scalar")) {
		SET_ALL(k, scalar);
		SET_ROWS(k, scalar);
		k->quantize_x[LLM_Q8_0] = llm_quantize_row_q8_0;
		k->quantize_x[LLM_Q8_1] = llm_quantize_row_q8_1;
		k->quantize_x[LLM_Q8_K] = llm_quantize_row_q8_k;
		k->qisa = "scalar";
		tab_scalar = k;
		return;
	}
#if defined(__x86_64__)
	bool vnni = !strcmp(k->isa, "avx512") && __builtin_cpu_supports("avx512vnni");
	const char *cap = getenv("LLMKIT_CPU");
	if (cap && !strcmp(cap, "avx512-novnni"))
		vnni = false;
	if (vnni) {
		SET_ALL(k, vnni);
		k->quantize_x[LLM_Q8_0] = quantize_q8_0_vnni;
		k->quantize_x[LLM_Q8_1] = quantize_q8_1_vnni;
		k->quantize_x[LLM_Q8_K] = quantize_q8_k_vnni;
		k->qisa = "avx512vnni";
	} else {
		SET_ALL(k, avx2);
		k->quantize_x[LLM_Q8_0] = quantize_q8_0_avx2;
		k->quantize_x[LLM_Q8_1] = quantize_q8_1_avx2;
		k->quantize_x[LLM_Q8_K] = quantize_q8_k_avx2;
		k->qisa = "avx2";
	}
	if (!strcmp(k->isa, "avx512")) {
		SET_ROWS(k, avx512);
		tab_avx512 = k;
	} else {
		SET_ROWS(k, avx2);
		tab_avx2 = k;
	}
#endif
}
