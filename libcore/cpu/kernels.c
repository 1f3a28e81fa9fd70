/*
 * kernels.c - CPU inner loops: a scalar reference and AVX2 / AVX-512
 * versions, chosen at run time (see kernels.h).
 *
 * The rows kernels are what decode time is spent in: a weight matrix
 * streamed once from memory against one or a few token vectors.  The SIMD
 * versions keep a 4-row by N-token block of accumulators in registers, so
 * each weight vector loaded feeds several FMAs and each token vector loaded
 * feeds four.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/tensor.h"
#include "cpu/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- scalar */

static inline float load_f32(const void *w, int64_t i) { return ((const float *)w)[i]; }
static inline float load_f16(const void *w, int64_t i) { return llm_f16_to_f32(((const uint16_t *)w)[i]); }
static inline float load_bf16(const void *w, int64_t i) { return llm_bf16_to_f32(((const uint16_t *)w)[i]); }

#define SCALAR_ROWS(NAME, LOAD)                                               \
static void NAME(const void *w, size_t row_bytes, int64_t n_in, int64_t r0,   \
                 int64_t r1, const float *x, int64_t ldx, int n_tok,          \
                 float *y, int64_t ldy)                                       \
{                                                                             \
	for (int64_t r = r0; r < r1; r++) {                                   \
		const void *wr = (const char *)w + r * row_bytes;             \
		for (int t = 0; t < n_tok; t++) {                             \
			const float *xt = x + t * ldx;                        \
			double sum = 0;                                       \
			for (int64_t i = 0; i < n_in; i++)                    \
				sum += (double)LOAD(wr, i) * xt[i];           \
			y[t * ldy + r] = (float)sum;                          \
		}                                                             \
	}                                                                     \
}

SCALAR_ROWS(rows_f32_scalar, load_f32)
SCALAR_ROWS(rows_f16_scalar, load_f16)
SCALAR_ROWS(rows_bf16_scalar, load_bf16)

static void qk_scalar(const float *q, const float *k, int64_t stride, int n,
                      int hd, float scale, float *out)
{
	for (int j = 0; j < n; j++) {
		const float *kj = k + j * stride;
		float s = 0;
		for (int d = 0; d < hd; d++)
			s += q[d] * kj[d];
		out[j] = s * scale;
	}
}

static void pv_scalar(float *acc, const float *p, const float *v, int64_t stride,
                      int n, int hd)
{
	for (int j = 0; j < n; j++) {
		const float *vj = v + j * stride;
		for (int d = 0; d < hd; d++)
			acc[d] += p[j] * vj[d];
	}
}

static const struct llm_cpu_kernels k_scalar = {
	.isa = "scalar",
	.rows = {
		[LLM_F32] = rows_f32_scalar,
		[LLM_F16] = rows_f16_scalar,
		[LLM_BF16] = rows_bf16_scalar,
	},
	.qk = qk_scalar,
	.pv = pv_scalar,
};

#if defined(__x86_64__)

/* ---------------------------------------------------------------- AVX2 */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __m256 ld8_f32(const void *w, int64_t i)
{
	return _mm256_loadu_ps((const float *)w + i);
}

AVX2 static inline __m256 ld8_f16(const void *w, int64_t i)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}

AVX2 static inline __m256 ld8_bf16(const void *w, int64_t i)
{
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/*
 * As the AVX-512 kernels below (which explain the shape): one row at a
 * time, four accumulators for one token, two per token for up to four.
 * The n_in tail that is not a multiple of 8 is done in scalar arithmetic.
 */
#define AVX2_MULTI(NAME, LD, SLOAD)                                           \
AVX2 static inline __attribute__((always_inline)) void                        \
NAME(const char *wr, int64_t n_in, const float *xt, int64_t ldx, const int NT, \
     float *yt, int64_t ldy)                                                  \
{                                                                             \
	int64_t n16 = n_in & ~(int64_t)15, n8 = n_in & ~(int64_t)7, i = 0;    \
	__m256 c[8];                                                          \
	_Pragma("GCC unroll 8") for (int k = 0; k < 2 * NT; k++)                                      \
		c[k] = _mm256_setzero_ps();                                   \
	for (; i < n16; i += 16) {                                            \
		__m256 q0 = LD(wr, i), q1 = LD(wr, i + 8);                    \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {                                \
			c[2 * k] = _mm256_fmadd_ps(q0,                        \
			        _mm256_loadu_ps(xt + k * ldx + i), c[2 * k]); \
			c[2 * k + 1] = _mm256_fmadd_ps(q1,                    \
			        _mm256_loadu_ps(xt + k * ldx + i + 8),        \
			        c[2 * k + 1]);                                \
		}                                                             \
	}                                                                     \
	for (; i < n8; i += 8) {                                              \
		__m256 q0 = LD(wr, i);                                        \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                                  \
			c[2 * k] = _mm256_fmadd_ps(q0,                        \
			        _mm256_loadu_ps(xt + k * ldx + i), c[2 * k]); \
	}                                                                     \
	_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {                                        \
		float s = hsum8(_mm256_add_ps(c[2 * k], c[2 * k + 1]));       \
		for (int64_t j = n8; j < n_in; j++)                           \
			s += SLOAD(wr, j) * xt[k * ldx + j];                  \
		yt[k * ldy] = s;                                              \
	}                                                                     \
}

#define AVX2_ROWS(NAME, LD, SLOAD)                                            \
AVX2_MULTI(NAME##_multi, LD, SLOAD)                                           \
AVX2 static void NAME(const void *w, size_t row_bytes, int64_t n_in,          \
                      int64_t r0, int64_t r1, const float *x, int64_t ldx,    \
                      int n_tok, float *y, int64_t ldy)                       \
{                                                                             \
	int64_t n32 = n_in & ~(int64_t)31, n8 = n_in & ~(int64_t)7;           \
	for (int64_t r = r0; r < r1; r++) {                                   \
		const char *wr = (const char *)w + r * row_bytes;             \
		if (n_tok == 1) {                                             \
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; \
			int64_t i = 0;                                        \
			for (; i < n32; i += 32) {                            \
				a0 = _mm256_fmadd_ps(LD(wr, i),               \
				        _mm256_loadu_ps(x + i), a0);          \
				a1 = _mm256_fmadd_ps(LD(wr, i + 8),           \
				        _mm256_loadu_ps(x + i + 8), a1);      \
				a2 = _mm256_fmadd_ps(LD(wr, i + 16),          \
				        _mm256_loadu_ps(x + i + 16), a2);     \
				a3 = _mm256_fmadd_ps(LD(wr, i + 24),          \
				        _mm256_loadu_ps(x + i + 24), a3);     \
			}                                                     \
			for (; i < n8; i += 8)                                \
				a0 = _mm256_fmadd_ps(LD(wr, i),               \
				        _mm256_loadu_ps(x + i), a0);          \
			float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1),  \
			                              _mm256_add_ps(a2, a3))); \
			for (; i < n_in; i++)                                 \
				s += SLOAD(wr, i) * x[i];                     \
			y[r] = s;                                             \
			continue;                                             \
		}                                                             \
		for (int t = 0; t < n_tok; t += 4) {                          \
			const float *xt = x + t * ldx;                        \
			float *yt = y + t * ldy + r;                          \
			switch (n_tok - t) {                                  \
			case 1: NAME##_multi(wr, n_in, xt, ldx, 1, yt, ldy); break; \
			case 2: NAME##_multi(wr, n_in, xt, ldx, 2, yt, ldy); break; \
			case 3: NAME##_multi(wr, n_in, xt, ldx, 3, yt, ldy); break; \
			default: NAME##_multi(wr, n_in, xt, ldx, 4, yt, ldy); break; \
			}                                                     \
		}                                                             \
	}                                                                     \
}

AVX2_ROWS(rows_f32_avx2, ld8_f32, load_f32)
AVX2_ROWS(rows_f16_avx2, ld8_f16, load_f16)
AVX2_ROWS(rows_bf16_avx2, ld8_bf16, load_bf16)

AVX2 static void qk_avx2(const float *q, const float *k, int64_t stride, int n,
                         int hd, float scale, float *out)
{
	if (hd % 8) {
		qk_scalar(q, k, stride, n, hd, scale, out);
		return;
	}
	for (int j = 0; j < n; j++) {
		const float *kj = k + j * stride;
		__m256 a = _mm256_setzero_ps();
		for (int d = 0; d < hd; d += 8)
			a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kj + d), a);
		out[j] = hsum8(a) * scale;
	}
}

AVX2 static void pv_avx2(float *acc, const float *p, const float *v,
                         int64_t stride, int n, int hd)
{
	if (hd % 8) {
		pv_scalar(acc, p, v, stride, n, hd);
		return;
	}
	for (int d = 0; d < hd; d += 8) {
		__m256 a = _mm256_loadu_ps(acc + d);
		for (int j = 0; j < n; j++)
			a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]),
			                    _mm256_loadu_ps(v + j * stride + d), a);
		_mm256_storeu_ps(acc + d, a);
	}
}

static const struct llm_cpu_kernels k_avx2 = {
	.isa = "avx2",
	.rows = {
		[LLM_F32] = rows_f32_avx2,
		[LLM_F16] = rows_f16_avx2,
		[LLM_BF16] = rows_bf16_avx2,
	},
	.qk = qk_avx2,
	.pv = pv_avx2,
};

/* ---------------------------------------------------------------- AVX-512 */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

AVX512 static inline __m512 ld16_f32(const void *w, int64_t i, __mmask16 m)
{
	return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}

AVX512 static inline __m512 ld16_f16(const void *w, int64_t i, __mmask16 m)
{
	return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
}

AVX512 static inline __m512 ld16_bf16(const void *w, int64_t i, __mmask16 m)
{
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/*
 * One weight row at a time, read front to back: a single sequential stream
 * is what the hardware prefetchers follow best (interleaving four rows ran
 * at 60% of the bandwidth one row reaches on the machines we measured).
 * One token: four accumulators over 64 elements per iteration.  Several
 * tokens: each weight vector loaded feeds up to four tokens, two
 * accumulators each.  Tails are masked loads.
 */
#define M16(i, n) ((n) - (i) >= 16 ? (__mmask16)0xffff \
                                   : (__mmask16)((1u << ((n) - (i))) - 1))

/* NT tokens (a constant after inlining, so the accumulators stay in
 * registers) against one weight row. */
#define AVX512_MULTI(NAME, LD)                                                \
AVX512 static inline __attribute__((always_inline)) void                      \
NAME(const char *wr, int64_t n_in, const float *xt, int64_t ldx, const int NT, \
     float *yt, int64_t ldy)                                                  \
{                                                                             \
	int64_t n32 = n_in & ~(int64_t)31, i = 0;                             \
	__m512 c[8];                                                          \
	_Pragma("GCC unroll 8") for (int k = 0; k < 2 * NT; k++)                                      \
		c[k] = _mm512_setzero_ps();                                   \
	for (; i < n32; i += 32) {                                            \
		__m512 q0 = LD(wr, i, 0xffff), q1 = LD(wr, i + 16, 0xffff);   \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {                                \
			c[2 * k] = _mm512_fmadd_ps(q0,                        \
			        _mm512_loadu_ps(xt + k * ldx + i), c[2 * k]); \
			c[2 * k + 1] = _mm512_fmadd_ps(q1,                    \
			        _mm512_loadu_ps(xt + k * ldx + i + 16),       \
			        c[2 * k + 1]);                                \
		}                                                             \
	}                                                                     \
	for (; i < n_in; i += 16) {                                           \
		__mmask16 m = M16(i, n_in);                                   \
		__m512 q0 = LD(wr, i, m);                                     \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                                  \
			c[2 * k] = _mm512_fmadd_ps(q0, _mm512_maskz_loadu_ps(m, \
			        xt + k * ldx + i), c[2 * k]);                 \
	}                                                                     \
	_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                                          \
		yt[k * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(c[2 * k],    \
		                                                 c[2 * k + 1])); \
}

/* Four weight rows against NT tokens (NT <= 4): 4 x NT accumulators, each
 * weight vector loaded feeding NT FMAs and each token vector four. */
#define AVX512_BLOCK4(NAME, LD)                                               \
AVX512 static inline __attribute__((always_inline)) void                      \
NAME(const char *w0, size_t rb, int64_t n_in, const float *xt, int64_t ldx,   \
     const int NT, float *yt, int64_t ldy)                                    \
{                                                                             \
	__m512 c[4][4];                                                       \
	_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)                                           \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                                  \
			c[j][k] = _mm512_setzero_ps();                        \
	for (int64_t i = 0; i < n_in; i += 16) {                              \
		__mmask16 m = M16(i, n_in);                                   \
		__m512 q[4];                                                  \
		_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {                                 \
			_mm_prefetch(w0 + (j + 4) * rb + i * (rb / n_in), _MM_HINT_T0); \
			q[j] = LD(w0 + j * rb, i, m);                         \
		}                                                             \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {                                \
			__m512 v = _mm512_maskz_loadu_ps(m, xt + k * ldx + i); \
			_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)                           \
				c[j][k] = _mm512_fmadd_ps(q[j], v, c[j][k]);  \
		}                                                             \
	}                                                                     \
	_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                                          \
		_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)                                   \
			yt[k * ldy + j] = _mm512_reduce_add_ps(c[j][k]);      \
}

#define AVX512_ROWS(NAME, LD)                                                 \
AVX512_MULTI(NAME##_multi, LD)                                                \
AVX512_BLOCK4(NAME##_block4, LD)                                              \
AVX512 static void NAME(const void *w, size_t row_bytes, int64_t n_in,        \
                        int64_t r0, int64_t r1, const float *x, int64_t ldx,  \
                        int n_tok, float *y, int64_t ldy)                     \
{                                                                             \
	int64_t n64 = n_in & ~(int64_t)63;                                    \
	for (int64_t r = r0; r < r1; r++) {                                   \
		const char *wr = (const char *)w + r * row_bytes;             \
		if (n_tok == 1) {                                             \
			__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; \
			int64_t i = 0;                                        \
			for (; i < n64; i += 64) {                            \
				a0 = _mm512_fmadd_ps(LD(wr, i, 0xffff),       \
				        _mm512_loadu_ps(x + i), a0);          \
				a1 = _mm512_fmadd_ps(LD(wr, i + 16, 0xffff),  \
				        _mm512_loadu_ps(x + i + 16), a1);     \
				a2 = _mm512_fmadd_ps(LD(wr, i + 32, 0xffff),  \
				        _mm512_loadu_ps(x + i + 32), a2);     \
				a3 = _mm512_fmadd_ps(LD(wr, i + 48, 0xffff),  \
				        _mm512_loadu_ps(x + i + 48), a3);     \
			}                                                     \
			for (; i < n_in; i += 16) {                           \
				__mmask16 m = M16(i, n_in);                   \
				a0 = _mm512_fmadd_ps(LD(wr, i, m),            \
				        _mm512_maskz_loadu_ps(m, x + i), a0); \
			}                                                     \
			y[r] = _mm512_reduce_add_ps(_mm512_add_ps(            \
			        _mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
			continue;                                             \
		}                                                             \
		if (r + 4 <= r1) {                                            \
			/* several tokens: four rows at a time, compute-bound */ \
			for (int t = 0; t < n_tok; t += 4) {                  \
				const float *xt = x + t * ldx;                \
				float *yt = y + t * ldy + r;                  \
				switch (n_tok - t) {                          \
				case 1: NAME##_block4(wr, row_bytes, n_in, xt, ldx, 1, yt, ldy); break; \
				case 2: NAME##_block4(wr, row_bytes, n_in, xt, ldx, 2, yt, ldy); break; \
				case 3: NAME##_block4(wr, row_bytes, n_in, xt, ldx, 3, yt, ldy); break; \
				default: NAME##_block4(wr, row_bytes, n_in, xt, ldx, 4, yt, ldy); break; \
				}                                             \
			}                                                     \
			r += 3;                                               \
			continue;                                             \
		}                                                             \
		for (int t = 0; t < n_tok; t += 4) {                          \
			const float *xt = x + t * ldx;                        \
			float *yt = y + t * ldy + r;                          \
			switch (n_tok - t) {                                  \
			case 1: NAME##_multi(wr, n_in, xt, ldx, 1, yt, ldy); break; \
			case 2: NAME##_multi(wr, n_in, xt, ldx, 2, yt, ldy); break; \
			case 3: NAME##_multi(wr, n_in, xt, ldx, 3, yt, ldy); break; \
			default: NAME##_multi(wr, n_in, xt, ldx, 4, yt, ldy); break; \
			}                                                     \
		}                                                             \
	}                                                                     \
}

AVX512_ROWS(rows_f32_avx512, ld16_f32)
AVX512_ROWS(rows_f16_avx512, ld16_f16)
AVX512_ROWS(rows_bf16_avx512, ld16_bf16)

static const struct llm_cpu_kernels k_avx512 = {
	.isa = "avx512",
	.rows = {
		[LLM_F32] = rows_f32_avx512,
		[LLM_F16] = rows_f16_avx512,
		[LLM_BF16] = rows_bf16_avx512,
	},
	.qk = qk_avx2,
	.pv = pv_avx2,
};

#endif /* __x86_64__ */

/* ---------------------------------------------------------------- dispatch */

static bool cpu_has(const char *isa)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (!strcmp(isa, "avx2"))
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
		       __builtin_cpu_supports("f16c");
	if (!strcmp(isa, "avx512"))
		return cpu_has("avx2") && __builtin_cpu_supports("avx512f") &&
		       __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl");
#endif
	return !strcmp(isa, "scalar");
}

const struct llm_cpu_kernels *llm_cpu_kernels_for(const char *isa)
{
	if (!cpu_has(isa))
		return NULL;
#if defined(__x86_64__)
	if (!strcmp(isa, "avx512"))
		return &k_avx512;
	if (!strcmp(isa, "avx2"))
		return &k_avx2;
#endif
	return &k_scalar;
}

const struct llm_cpu_kernels *llm_cpu_kernels(void)
{
	static const struct llm_cpu_kernels *best;
	if (!best) {
		static const char *order[] = { "avx512", "avx2", "scalar" };
		const char *cap = getenv("LLMKIT_CPU");
		int start = 0;
		for (int i = 0; cap && i < 3; i++)
			if (!strcmp(cap, order[i]))
				start = i;
		for (int i = start; i < 3 && !best; i++)
			best = llm_cpu_kernels_for(order[i]);
	}
	return best;
}
