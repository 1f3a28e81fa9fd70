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
#include <math.h>
#include <pthread.h>
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

static float qk_scalar(const float *q, const float *kb, int hd, int nb, float scale,
                       float *out)
{
	float mx = -INFINITY;
	for (int o = 0; o < nb; o++) {
		float s = 0;
		for (int d = 0; d < hd; d++)
			s += q[d] * kb[o * hd + d];
		out[o] = s * scale;
		mx = out[o] > mx ? out[o] : mx;
	}
	return mx;
}

static void pv_scalar(float *acc, const float *p, const float *vb, int hd, int nb)
{
	for (int o = 0; o < nb; o++)
		for (int d = 0; d < hd; d++)
			acc[d] += p[o] * vb[o * hd + d];
}

static float qk16_scalar(const float *q, const uint16_t *kb, int hd, int nb,
                         float scale, float *out)
{
	float mx = -INFINITY;
	for (int o = 0; o < nb; o++) {
		float s = 0;
		for (int d = 0; d < hd; d++)
			s += q[d] * llm_f16_to_f32(kb[o * hd + d]);
		out[o] = s * scale;
		mx = out[o] > mx ? out[o] : mx;
	}
	return mx;
}

static void pv16_scalar(float *acc, const float *p, const uint16_t *vb, int hd,
                        int nb)
{
	for (int o = 0; o < nb; o++)
		for (int d = 0; d < hd; d++)
			acc[d] += p[o] * llm_f16_to_f32(vb[o * hd + d]);
}

static float exp_sum_scalar(float *x, int n, float mx)
{
	float sum = 0;
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - mx);
		sum += x[i];
	}
	return sum;
}

static void swiglu_scalar(float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static struct llm_cpu_kernels k_scalar = {
	.isa = "scalar",
	.rows = {
		[LLM_F32] = rows_f32_scalar,
		[LLM_F16] = rows_f16_scalar,
		[LLM_BF16] = rows_bf16_scalar,
	},
	.qk = qk_scalar,
	.pv = pv_scalar,
	.qk16 = qk16_scalar,
	.pv16 = pv16_scalar,
	.exp_sum = exp_sum_scalar,
	.swiglu = swiglu_scalar,
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
 * One row against up to four tokens, two accumulators a token: the rows a
 * block of four leaves over.  The n_in tail that is not a multiple of 8 is
 * done in scalar arithmetic.
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

/* The four sums of a, b, c, d in one 128-bit vector. */
AVX2 static inline __m128 reduce4_8(__m256 a, __m256 b, __m256 c, __m256 d)
{
	__m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
	return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/*
 * Several tokens are compute-bound, and AVX2 has sixteen registers: four
 * weight rows against three tokens hold twelve accumulators, the three
 * token vectors and the weight vector being used.  Each weight vector
 * loaded feeds three FMAs and each token vector four, so an 8-wide step
 * is 12 FMAs for 7 loads and the FMA units, not the loads, set the pace
 * (one row at a time against four tokens, two loads an FMA, ran at half
 * the FMA rate).  Inputs [i0, i1) (multiples of 8); the sums are stored,
 * or added to y when ADD (the later pieces of a long row).
 */
#define AVX2_BLOCK4(NAME, LD)                                                 \
AVX2 static inline __attribute__((always_inline)) void                        \
NAME(const char *w0, size_t rb, int64_t es, int64_t i0, int64_t i1,           \
     const float *xt, int64_t ldx, const int NT, float *yt, int64_t ldy,      \
     bool add, bool pf)                                                       \
{                                                                             \
	__m256 c[4][3];                                                       \
	_Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                   \
		_Pragma("GCC unroll 3") for (int k = 0; k < NT; k++)          \
			c[j][k] = _mm256_setzero_ps();                        \
	for (int64_t i = i0; i < i1; i += 8) {                                \
		__m256 v[3];                                                  \
		_Pragma("GCC unroll 3") for (int k = 0; k < NT; k++)          \
			v[k] = _mm256_loadu_ps(xt + k * ldx + i);             \
		_Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {         \
			if (pf)                                               \
				_mm_prefetch(w0 + (j + 8) * rb + i * es, _MM_HINT_T0); \
			__m256 q = LD(w0 + j * rb, i);                        \
			_Pragma("GCC unroll 3") for (int k = 0; k < NT; k++)  \
				c[j][k] = _mm256_fmadd_ps(q, v[k], c[j][k]);  \
		}                                                             \
	}                                                                     \
	_Pragma("GCC unroll 3") for (int k = 0; k < NT; k++) {                \
		__m128 s = reduce4_8(c[0][k], c[1][k], c[2][k], c[3][k]);     \
		if (add)                                                      \
			s = _mm_add_ps(s, _mm_loadu_ps(yt + k * ldy));        \
		_mm_storeu_ps(yt + k * ldy, s);                               \
	}                                                                     \
}

/*
 * Several tokens go four rows at a time (AVX2_BLOCK4), in passes over up
 * to sixteen rows and AVX2_TILE_TOK tokens whose sums collect in a small
 * tile and are copied out a token at a time.  Written in place, the sums
 * of a block would land in one short piece of each token's output row,
 * ldy apart: for the 2048 outputs of a gate projection that is 8 KiB, and
 * every token's piece fell in the same L1 set (768 -> 2048, 32 tokens:
 * 52 GFLOP/s in place, 66 through the tile).
 *
 * A block takes its inputs in pieces of at most AVX2_PIECE (equal pieces,
 * multiples of 8), so that the rows' piece stays in L1 while every token
 * passes over it (a 2048-wide f32 block is 32 KiB, all of L1).  The
 * pieces are the same whatever the tokens, so a token's sums do not
 * depend on what else is in the batch.  The first pass of a block over
 * its tokens, which brings the weights from memory, prefetches those of
 * the block after next (measured a little ahead of the next block's, and
 * 10% ahead of none at 6-8 tokens).
 */
#define AVX2_PIECE 1024
#define AVX2_TILE_TOK 48

#define AVX2_ROWS(NAME, LD, SLOAD)                                            \
AVX2_MULTI(NAME##_multi, LD, SLOAD)                                           \
AVX2_BLOCK4(NAME##_block4, LD)                                                \
AVX2 static void NAME##_tile(const char *w, size_t rb, int64_t n_in,          \
                             int nb, const float *x, int64_t ldx, int nt,     \
                             float *tile)                                     \
{                                                                             \
	int64_t n8 = n_in & ~(int64_t)7, es = (int64_t)rb / n_in;             \
	int64_t pieces = (n8 + AVX2_PIECE - 1) / AVX2_PIECE;                  \
	int64_t piece = pieces ? ((n8 / pieces + 7) & ~(int64_t)7) : 0;       \
	for (int b = 0; b < nb; b++) {                                        \
		const char *wb = w + 4 * b * rb;                              \
		for (int64_t i0 = 0; i0 < n8; i0 += piece) {                  \
			int64_t i1 = i0 + piece < n8 ? i0 + piece : n8;       \
			/* threes, and two twos where a one would be left */  \
			for (int t = 0, g; t < nt; t += g) {                  \
				const float *xt = x + t * ldx;                \
				float *yt = tile + t * 16 + 4 * b;            \
				bool add = i0 > 0, pf = t == 0;               \
				g = nt - t == 4 ? 2 : nt - t < 3 ? nt - t : 3; \
				switch (g) {                                  \
				case 1: NAME##_block4(wb, rb, es, i0, i1, xt, ldx, 1, yt, 16, add, pf); break; \
				case 2: NAME##_block4(wb, rb, es, i0, i1, xt, ldx, 2, yt, 16, add, pf); break; \
				default: NAME##_block4(wb, rb, es, i0, i1, xt, ldx, 3, yt, 16, add, pf); break; \
				}                                             \
			}                                                     \
		}                                                             \
		for (int j = 0; j < 4 && n8 < n_in; j++)                      \
			for (int t = 0; t < nt; t++) {                        \
				float s = n8 ? tile[t * 16 + 4 * b + j] : 0;  \
				for (int64_t i = n8; i < n_in; i++)           \
					s += SLOAD(wb + j * rb, i) * x[t * ldx + i]; \
				tile[t * 16 + 4 * b + j] = s;                 \
			}                                                     \
	}                                                                     \
}                                                                             \
AVX2 static void NAME(const void *w, size_t row_bytes, int64_t n_in,          \
                      int64_t r0, int64_t r1, const float *x, int64_t ldx,    \
                      int n_tok, float *y, int64_t ldy)                       \
{                                                                             \
	int64_t n32 = n_in & ~(int64_t)31, n8 = n_in & ~(int64_t)7, r = r0;   \
	if (n_tok > 1) {                                                      \
		float tile[AVX2_TILE_TOK * 16] __attribute__((aligned(64)));  \
		for (; r + 4 <= r1; ) {                                       \
			int nb = (r1 - r) / 4 < 4 ? (int)((r1 - r) / 4) : 4;  \
			for (int t0 = 0; t0 < n_tok; t0 += AVX2_TILE_TOK) {   \
				int nt = n_tok - t0 < AVX2_TILE_TOK ? n_tok - t0 : AVX2_TILE_TOK; \
				NAME##_tile((const char *)w + r * row_bytes, row_bytes, \
				            n_in, nb, x + t0 * ldx, ldx, nt, tile); \
				for (int t = 0; t < nt; t++)                  \
					memcpy(y + (t0 + t) * ldy + r, tile + t * 16, \
					       sizeof(float) * 4 * nb);       \
			}                                                     \
			r += 4 * nb;                                          \
		}                                                             \
	}                                                                     \
	for (; r < r1; r++) {                                                 \
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

/*
 * exp(x) as 2^n * e^r with |r| <= ln2/2: Cephes' degree-6 polynomial for
 * e^r, Cody-Waite reduction; within 2 ulp of expf over the range used (the
 * test checks it).  Inputs below -87 flush to ~0, above 88 saturate.
 */
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

AVX2 static inline __m256 exp8(__m256 x)
{
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)),
	                  _mm256_set1_ps(88.0f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
	                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C1), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C2), r);
	__m256 p = _mm256_set1_ps(EXP_P0);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
	p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
	                                               _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/*
 * Scores of eight keys at a time: one accumulator a key over the
 * head's dimensions (q comes from L1 each time; keys stream), then a
 * horizontal-add tree turns the eight accumulators into one vector of
 * eight scores; the keys a block has beyond a multiple of eight, one at
 * a time (in scalar arithmetic they took 3% of a serving run).
 */
AVX2 static inline __m256 hsum8x8(const __m256 a[8])
{
	__m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
	__m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
	return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20),
	                     _mm256_permute2f128_ps(t0, t1, 0x31));
}

#define AVX2_QK(NAME, T, LD, SCALAR)                                          \
AVX2 static float NAME(const float *q, const T *kb, int hd, int nb,           \
                       float scale, float *out)                               \
{                                                                             \
	__m256 mx = _mm256_set1_ps(-INFINITY);                                \
	int hd8 = hd & ~7, o0 = 0;                                            \
	if (hd8 != hd)                                                        \
		return SCALAR(q, kb, hd, nb, scale, out);                     \
	for (; o0 + 8 <= nb; o0 += 8) {                                       \
		__m256 a[8];                                                  \
		_Pragma("GCC unroll 8") for (int j = 0; j < 8; j++)           \
			a[j] = _mm256_setzero_ps();                           \
		for (int d = 0; d < hd; d += 8) {                             \
			__m256 qd = _mm256_loadu_ps(q + d);                   \
			_Pragma("GCC unroll 8") for (int j = 0; j < 8; j++)   \
				a[j] = _mm256_fmadd_ps(qd,                    \
				        LD(kb, (int64_t)(o0 + j) * hd + d), a[j]); \
		}                                                             \
		__m256 r = _mm256_mul_ps(hsum8x8(a), _mm256_set1_ps(scale));  \
		_mm256_storeu_ps(out + o0, r);                                \
		mx = _mm256_max_ps(mx, r);                                    \
	}                                                                     \
	__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx),                    \
	                       _mm256_extractf128_ps(mx, 1));                 \
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));                           \
	m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));                             \
	float m = _mm_cvtss_f32(m4);                                          \
	for (; o0 < nb; o0++) {   /* the last keys, one at a time */          \
		__m256 a = _mm256_setzero_ps();                               \
		for (int d = 0; d < hd; d += 8)                               \
			a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d),           \
			        LD(kb, (int64_t)o0 * hd + d), a);             \
		float t = hsum8(a) * scale;                                   \
		out[o0] = t;                                                  \
		m = t > m ? t : m;                                            \
	}                                                                     \
	return m;                                                             \
}

AVX2_QK(qk_avx2, float, ld8_f32, qk_scalar)
AVX2_QK(qk16_avx2, uint16_t, ld8_f16, qk16_scalar)

AVX2 static void pv_avx2(float *acc, const float *p, const float *vb, int hd, int nb)
{
	int d = 0;
	for (; d + 32 <= hd; d += 32) {
		__m256 a0 = _mm256_loadu_ps(acc + d), a1 = _mm256_loadu_ps(acc + d + 8);
		__m256 a2 = _mm256_loadu_ps(acc + d + 16), a3 = _mm256_loadu_ps(acc + d + 24);
		for (int o = 0; o < nb; o++) {
			__m256 w = _mm256_set1_ps(p[o]);
			const float *v = vb + o * hd + d;
			a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
			a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), a1);
			a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), a2);
			a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), a3);
		}
		_mm256_storeu_ps(acc + d, a0);
		_mm256_storeu_ps(acc + d + 8, a1);
		_mm256_storeu_ps(acc + d + 16, a2);
		_mm256_storeu_ps(acc + d + 24, a3);
	}
	for (; d + 8 <= hd; d += 8) {
		__m256 a0 = _mm256_loadu_ps(acc + d);
		for (int o = 0; o < nb; o++)
			a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[o]),
			                     _mm256_loadu_ps(vb + o * hd + d), a0);
		_mm256_storeu_ps(acc + d, a0);
	}
	for (; d < hd; d++)
		for (int o = 0; o < nb; o++)
			acc[d] += p[o] * vb[o * hd + d];
}


AVX2 static void pv16_avx2(float *acc, const float *p, const uint16_t *vb, int hd,
                           int nb)
{
	int d = 0;
	for (; d + 16 <= hd; d += 16) {
		__m256 a0 = _mm256_loadu_ps(acc + d), a1 = _mm256_loadu_ps(acc + d + 8);
		for (int o = 0; o < nb; o++) {
			__m256 w = _mm256_set1_ps(p[o]);
			a0 = _mm256_fmadd_ps(w, ld8_f16(vb, o * hd + d), a0);
			a1 = _mm256_fmadd_ps(w, ld8_f16(vb, o * hd + d + 8), a1);
		}
		_mm256_storeu_ps(acc + d, a0);
		_mm256_storeu_ps(acc + d + 8, a1);
	}
	for (; d < hd; d++)
		for (int o = 0; o < nb; o++)
			acc[d] += p[o] * llm_f16_to_f32(vb[o * hd + d]);
}

AVX2 static float exp_sum_avx2(float *x, int n, float mx)
{
	__m256 sum = _mm256_setzero_ps(), m = _mm256_set1_ps(mx);
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
		_mm256_storeu_ps(x + i, e);
		sum = _mm256_add_ps(sum, e);
	}
	float s = hsum8(sum);
	for (; i < n; i++) {
		x[i] = expf(x[i] - mx);
		s += x[i];
	}
	return s;
}

AVX2 static void swiglu_avx2(float *g, const float *u, int64_t n)
{
	int64_t i = 0;
	__m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(g + i);
		__m256 e = exp8(_mm256_sub_ps(zero, x));
		__m256 y = _mm256_div_ps(x, _mm256_add_ps(one, e));
		_mm256_storeu_ps(g + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
	}
	swiglu_scalar(g + i, u + i, n - i);
}

static struct llm_cpu_kernels k_avx2 = {
	.isa = "avx2",
	.rows = {
		[LLM_F32] = rows_f32_avx2,
		[LLM_F16] = rows_f16_avx2,
		[LLM_BF16] = rows_bf16_avx2,
	},
	.qk = qk_avx2,
	.pv = pv_avx2,
	.qk16 = qk16_avx2,
	.pv16 = pv16_avx2,
	.exp_sum = exp_sum_avx2,
	.swiglu = swiglu_avx2,
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
/* The four row sums of a, b, c, d in one 128-bit vector. */
AVX512 static inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d)
{
	__m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
	__m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
	__m512 t = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
	                         _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
	/* t holds [a b c d] partial sums in each 128-bit lane */
	__m256 h = _mm256_add_ps(_mm512_castps512_ps256(t),
	                         _mm256_castpd_ps(_mm512_extractf64x4_pd(
	                                 _mm512_castps_pd(t), 1)));
	return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#define AVX512_BLOCK4(NAME, LD)                                               \
AVX512 static inline __attribute__((always_inline)) void                      \
NAME(const char *w0, size_t rb, int64_t n_in, const float *xt, int64_t ldx,   \
     const int NT, float *yt, int64_t ldy)                                    \
{                                                                             \
	__m512 c[4][4];                                                       \
	int64_t n16 = n_in & ~(int64_t)15, i = 0;                             \
	_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)                   \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)          \
			c[j][k] = _mm512_setzero_ps();                        \
	for (; i < n16; i += 16) {                                            \
		__m512 q[4];                                                  \
		_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++) {         \
			_mm_prefetch(w0 + (j + 4) * rb + i * (rb / n_in), _MM_HINT_T0); \
			q[j] = LD(w0 + j * rb, i, 0xffff);                    \
		}                                                             \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {        \
			__m512 v = _mm512_loadu_ps(xt + k * ldx + i);         \
			_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)   \
				c[j][k] = _mm512_fmadd_ps(q[j], v, c[j][k]);  \
		}                                                             \
	}                                                                     \
	if (i < n_in) {                                                       \
		__mmask16 m = M16(i, n_in);                                   \
		__m512 q[4];                                                  \
		_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)           \
			q[j] = LD(w0 + j * rb, i, m);                         \
		_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++) {        \
			__m512 v = _mm512_maskz_loadu_ps(m, xt + k * ldx + i); \
			_Pragma("GCC unroll 8") for (int j = 0; j < 4; j++)   \
				c[j][k] = _mm512_fmadd_ps(q[j], v, c[j][k]);  \
		}                                                             \
	}                                                                     \
	_Pragma("GCC unroll 8") for (int k = 0; k < NT; k++)                  \
		_mm_storeu_ps(yt + k * ldy, reduce4(c[0][k], c[1][k], c[2][k], c[3][k])); \
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

AVX512 static inline __m512 exp16(__m512 x)
{
	x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)),
	                  _mm512_set1_ps(88.0f));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
	                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C1), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C2), r);
	__m512 p = _mm512_set1_ps(EXP_P0);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
	p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

/*
 * Scores of up to sixteen keys at a time: an accumulator a key over the
 * head's dimensions, then four four-way transposing reductions give the
 * sixteen scores as one vector.
 */
#define AVX512_QK(NAME, T, LD)                                                \
AVX512 static float NAME(const float *q, const T *kb, int hd, int nb,         \
                         float scale, float *out)                             \
{                                                                             \
	__m512 mx = _mm512_set1_ps(-INFINITY);                                \
	for (int o0 = 0; o0 < nb; o0 += 16) {                                 \
		int n = nb - o0 < 16 ? nb - o0 : 16;                          \
		__m512 a[16];                                                 \
		_Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)         \
			a[j] = _mm512_setzero_ps();                           \
		for (int d = 0; d < hd; d += 16) {                            \
			__mmask16 m = M16(d, hd);                             \
			__m512 qd = _mm512_maskz_loadu_ps(m, q + d);          \
			_Pragma("GCC unroll 16") for (int j = 0; j < 16; j++) \
				if (j < n)                                    \
					a[j] = _mm512_fmadd_ps(qd, LD(kb,     \
					        (int64_t)(o0 + j) * hd + d, m), a[j]); \
		}                                                             \
		__m512 r = _mm512_castps128_ps512(reduce4(a[0], a[1], a[2], a[3])); \
		r = _mm512_insertf32x4(r, reduce4(a[4], a[5], a[6], a[7]), 1); \
		r = _mm512_insertf32x4(r, reduce4(a[8], a[9], a[10], a[11]), 2); \
		r = _mm512_insertf32x4(r, reduce4(a[12], a[13], a[14], a[15]), 3); \
		r = _mm512_mul_ps(r, _mm512_set1_ps(scale));                  \
		__mmask16 k = M16(0, n);                                      \
		_mm512_mask_storeu_ps(out + o0, k, r);                        \
		mx = _mm512_mask_max_ps(mx, k, mx, r);                        \
	}                                                                     \
	return _mm512_reduce_max_ps(mx);                                      \
}

AVX512_QK(qk_avx512, float, ld16_f32)
AVX512_QK(qk16_avx512, uint16_t, ld16_f16)

/*
 * The accumulator stays in registers, 64 dimensions a pass, in two sets
 * (even and odd positions) so consecutive FMAs do not wait on each other.
 */
AVX512 static void pv_avx512(float *acc, const float *p, const float *vb, int hd,
                             int nb)
{
	int d0 = 0;
	for (; d0 + 64 <= hd; d0 += 64) {
		__m512 a0 = _mm512_loadu_ps(acc + d0), a1 = _mm512_loadu_ps(acc + d0 + 16);
		__m512 a2 = _mm512_loadu_ps(acc + d0 + 32), a3 = _mm512_loadu_ps(acc + d0 + 48);
		__m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
		int o = 0;
		for (; o + 2 <= nb; o += 2) {
			const float *v = vb + o * hd + d0, *u = v + hd;
			__m512 w = _mm512_set1_ps(p[o]), x = _mm512_set1_ps(p[o + 1]);
			a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v), a0);
			a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 16), a1);
			a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 32), a2);
			a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 48), a3);
			b0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(u), b0);
			b1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(u + 16), b1);
			b2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(u + 32), b2);
			b3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(u + 48), b3);
		}
		if (o < nb) {
			const float *v = vb + o * hd + d0;
			__m512 w = _mm512_set1_ps(p[o]);
			a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v), a0);
			a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 16), a1);
			a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 32), a2);
			a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 48), a3);
		}
		_mm512_storeu_ps(acc + d0, _mm512_add_ps(a0, b0));
		_mm512_storeu_ps(acc + d0 + 16, _mm512_add_ps(a1, b1));
		_mm512_storeu_ps(acc + d0 + 32, _mm512_add_ps(a2, b2));
		_mm512_storeu_ps(acc + d0 + 48, _mm512_add_ps(a3, b3));
	}
	for (; d0 < hd; d0 += 16) {
		__mmask16 m = M16(d0, hd);
		__m512 a0 = _mm512_maskz_loadu_ps(m, acc + d0);
		for (int o = 0; o < nb; o++)
			a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[o]),
			                     _mm512_maskz_loadu_ps(m, vb + o * hd + d0), a0);
		_mm512_mask_storeu_ps(acc + d0, m, a0);
	}
}


AVX512 static void pv16_avx512(float *acc, const float *p, const uint16_t *vb,
                               int hd, int nb)
{
	int d0 = 0;
	for (; d0 + 64 <= hd; d0 += 64) {
		__m512 a0 = _mm512_loadu_ps(acc + d0), a1 = _mm512_loadu_ps(acc + d0 + 16);
		__m512 a2 = _mm512_loadu_ps(acc + d0 + 32), a3 = _mm512_loadu_ps(acc + d0 + 48);
		__m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
		int o = 0;
		for (; o + 2 <= nb; o += 2) {
			const uint16_t *v = vb + o * hd + d0, *u = v + hd;
			__m512 w = _mm512_set1_ps(p[o]), x = _mm512_set1_ps(p[o + 1]);
			a0 = _mm512_fmadd_ps(w, ld16_f16(v, 0, 0xffff), a0);
			a1 = _mm512_fmadd_ps(w, ld16_f16(v, 16, 0xffff), a1);
			a2 = _mm512_fmadd_ps(w, ld16_f16(v, 32, 0xffff), a2);
			a3 = _mm512_fmadd_ps(w, ld16_f16(v, 48, 0xffff), a3);
			b0 = _mm512_fmadd_ps(x, ld16_f16(u, 0, 0xffff), b0);
			b1 = _mm512_fmadd_ps(x, ld16_f16(u, 16, 0xffff), b1);
			b2 = _mm512_fmadd_ps(x, ld16_f16(u, 32, 0xffff), b2);
			b3 = _mm512_fmadd_ps(x, ld16_f16(u, 48, 0xffff), b3);
		}
		if (o < nb) {
			const uint16_t *v = vb + o * hd + d0;
			__m512 w = _mm512_set1_ps(p[o]);
			a0 = _mm512_fmadd_ps(w, ld16_f16(v, 0, 0xffff), a0);
			a1 = _mm512_fmadd_ps(w, ld16_f16(v, 16, 0xffff), a1);
			a2 = _mm512_fmadd_ps(w, ld16_f16(v, 32, 0xffff), a2);
			a3 = _mm512_fmadd_ps(w, ld16_f16(v, 48, 0xffff), a3);
		}
		_mm512_storeu_ps(acc + d0, _mm512_add_ps(a0, b0));
		_mm512_storeu_ps(acc + d0 + 16, _mm512_add_ps(a1, b1));
		_mm512_storeu_ps(acc + d0 + 32, _mm512_add_ps(a2, b2));
		_mm512_storeu_ps(acc + d0 + 48, _mm512_add_ps(a3, b3));
	}
	for (; d0 < hd; d0 += 16) {
		__mmask16 m = M16(d0, hd);
		__m512 a0 = _mm512_maskz_loadu_ps(m, acc + d0);
		for (int o = 0; o < nb; o++)
			a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[o]), ld16_f16(vb, o * hd + d0, m), a0);
		_mm512_mask_storeu_ps(acc + d0, m, a0);
	}
}

AVX512 static float exp_sum_avx512(float *x, int n, float mx)
{
	__m512 sum = _mm512_setzero_ps(), m = _mm512_set1_ps(mx);
	for (int i = 0; i < n; i += 16) {
		__mmask16 k = M16(i, n);
		__m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
		_mm512_mask_storeu_ps(x + i, k, e);
		sum = _mm512_mask_add_ps(sum, k, sum, e);
	}
	return _mm512_reduce_add_ps(sum);
}

AVX512 static void swiglu_avx512(float *g, const float *u, int64_t n)
{
	__m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512 x = _mm512_maskz_loadu_ps(k, g + i);
		__m512 y = _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, x))));
		_mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(k, u + i)));
	}
}

static struct llm_cpu_kernels k_avx512 = {
	.isa = "avx512",
	.rows = {
		[LLM_F32] = rows_f32_avx512,
		[LLM_F16] = rows_f16_avx512,
		[LLM_BF16] = rows_bf16_avx512,
	},
	.qk = qk_avx512,
	.pv = pv_avx512,
	.qk16 = qk16_avx512,
	.pv16 = pv16_avx512,
	.exp_sum = exp_sum_avx512,
	.swiglu = swiglu_avx512,
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

/* The quantized kernels live in qkernels.c and join the tables once. */
static void register_quant(void)
{
	llm_cpu_quant_register(&k_scalar);
#if defined(__x86_64__)
	if (cpu_has("avx2"))
		llm_cpu_quant_register(&k_avx2);
	if (cpu_has("avx512"))
		llm_cpu_quant_register(&k_avx512);
#endif
}

const struct llm_cpu_kernels *llm_cpu_kernels_for(const char *isa)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	if (!cpu_has(isa))
		return NULL;
	pthread_once(&once, register_quant);
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
