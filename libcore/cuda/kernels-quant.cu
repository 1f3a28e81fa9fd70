/*
 * kernels-quant.cu - kernels over weights in their stored type: matvec for
 * decode, dequantization to halves for cuBLAS, embedding lookup.
 *
 * Every type is read 32 elements (a "unit") at a time: a block of the
 * 32-families is one unit, a k-quant super-block of 256 is eight.  deq32
 * turns unit u of a row into 32 floats in registers, with the arithmetic
 * of quant.c's llm_dequantize_row_* (same products in the same order), so
 * the device sees exactly the weights the CPU sees.
 *
 * Block layouts (quant.h): every block size is even and every half sits at
 * an even offset, so with rows starting at even offsets the 16-bit loads
 * below are aligned; quants are read a byte at a time.
 */
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/cuda-internal.h"
#include "llmkit/quant.h"

#define HD __host__ __device__ __forceinline__

static HD float h2f(const uint8_t *p)
{
	return __half2float(__ushort_as_half(*(const uint16_t *)p));
}

static HD float bits_float(uint32_t u)
{
#ifdef __CUDA_ARCH__
	return __uint_as_float(u);
#else
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
#endif
}

/* n bytes (even) from p (2-aligned) a half-word at a time */
template <int N>
static HD void ld_bytes(const uint8_t *p, uint8_t *dst)
{
	const uint16_t *p16 = (const uint16_t *)p;
#pragma unroll
	for (int j = 0; j < N / 2; j++) {
		const uint16_t v = p16[j];
		dst[2 * j] = (uint8_t)(v & 0xFF);
		dst[2 * j + 1] = (uint8_t)(v >> 8);
	}
}

/* ---------------------------------------------------------------- deq32 */

/* Elements of unit u that exist (float types may end mid-unit). */
static HD int unit_len(int u, int n_in)
{
	int r = n_in - u * 32;
	return r < 32 ? r : 32;
}

template <int T> struct qtraits;
template <> struct qtraits<LLM_F32>  { static const int bs = 1, ts = 4; };
template <> struct qtraits<LLM_F16>  { static const int bs = 1, ts = 2; };
template <> struct qtraits<LLM_BF16> { static const int bs = 1, ts = 2; };
template <> struct qtraits<LLM_Q4_0> { static const int bs = 32, ts = 18; };
template <> struct qtraits<LLM_Q4_1> { static const int bs = 32, ts = 20; };
template <> struct qtraits<LLM_Q5_0> { static const int bs = 32, ts = 22; };
template <> struct qtraits<LLM_Q5_1> { static const int bs = 32, ts = 24; };
template <> struct qtraits<LLM_Q8_0> { static const int bs = 32, ts = 34; };
template <> struct qtraits<LLM_Q2_K> { static const int bs = 256, ts = 84; };
template <> struct qtraits<LLM_Q3_K> { static const int bs = 256, ts = 110; };
template <> struct qtraits<LLM_Q4_K> { static const int bs = 256, ts = 144; };
template <> struct qtraits<LLM_Q5_K> { static const int bs = 256, ts = 176; };
template <> struct qtraits<LLM_Q6_K> { static const int bs = 256, ts = 210; };

/* The block holding unit u of a row, and u's index within it. */
template <int T>
static HD const uint8_t *unit_block(const uint8_t *row,
                                                            int u, int *sub)
{
	/* units per block (the float types: one element "block", unit = u) */
	const int per = qtraits<T>::bs >= 32 ? qtraits<T>::bs / 32 : 1;
	*sub = per > 1 ? u % per : 0;
	return row + (size_t)(per > 1 ? u / per : u) * qtraits<T>::ts;
}

/* Scale and min j of a q4_k/q5_k block (quant.h llm_q4k_scale_min). */
static HD void q4k_sm(int j, const uint8_t *q, int *sc,
                                              int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

/* Scale j (minus 32) of a q3_k block (quant.c llm_q3k_scales). */
static HD int q3k_scale(int j, const uint8_t *s)
{
	int sc = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
	return (sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

template <int T>
static HD void deq32(const uint8_t *row, int u, int n_in,
                                             float *w)
{
	if constexpr (T == LLM_F32 || T == LLM_F16 || T == LLM_BF16) {
		int nv = unit_len(u, n_in);
		const size_t e0 = (size_t)u * 32;
		if ((n_in & 31) == 0) {
			/* whole units, every row and unit 16-byte aligned (rows
			 * of a multiple of 64 bytes from a cudaMalloc base) */
			const uint4 *p = (const uint4 *)(row + e0 * qtraits<T>::ts);
			constexpr int per = 16 / qtraits<T>::ts;  /* elements per uint4 */
#pragma unroll
			for (int k = 0; k < 32 / per; k++) {
				const uint4 v = p[k];
				const uint32_t wd[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
				for (int q = 0; q < 4; q++) {
					if constexpr (T == LLM_F32) {
						w[k * 4 + q] = bits_float(wd[q]);
					} else if constexpr (T == LLM_F16) {
						w[k * 8 + 2 * q] = __half2float(__ushort_as_half((unsigned short)(wd[q] & 0xFFFF)));
						w[k * 8 + 2 * q + 1] = __half2float(__ushort_as_half((unsigned short)(wd[q] >> 16)));
					} else {
						w[k * 8 + 2 * q] = bits_float(wd[q] << 16);
						w[k * 8 + 2 * q + 1] = bits_float(wd[q] & 0xFFFF0000u);
					}
				}
			}
			return;
		}
#pragma unroll
		for (int j = 0; j < 32; j++) {
			if (j < nv) {
				if constexpr (T == LLM_F32)
					w[j] = ((const float *)row)[e0 + j];
				else if constexpr (T == LLM_F16)
					w[j] = __half2float(((const __half *)row)[e0 + j]);
				else
					w[j] = __bfloat162float(((const __nv_bfloat16 *)row)[e0 + j]);
			} else {
				w[j] = 0.0f;
			}
		}
	} else {
		int sub;
		const uint8_t *b = unit_block<T>(row, u, &sub);
		if constexpr (T == LLM_Q4_0) {
			const float d = h2f(b);
			uint8_t qs[16];
			ld_bytes<16>(b + 2, qs);
#pragma unroll
			for (int j = 0; j < 16; j++) {
				w[j] = (float)((qs[j] & 0xF) - 8) * d;
				w[j + 16] = (float)((qs[j] >> 4) - 8) * d;
			}
		} else if constexpr (T == LLM_Q4_1) {
			const float d = h2f(b), m = h2f(b + 2);
			uint8_t qs[16];
			ld_bytes<16>(b + 4, qs);
#pragma unroll
			for (int j = 0; j < 16; j++) {
				w[j] = (float)(qs[j] & 0xF) * d + m;
				w[j + 16] = (float)(qs[j] >> 4) * d + m;
			}
		} else if constexpr (T == LLM_Q5_0 || T == LLM_Q5_1) {
			const bool one = T == LLM_Q5_1;
			const float d = h2f(b), m = one ? h2f(b + 2) : 0.0f;
			const uint8_t *qhp = b + (one ? 4 : 2);
			uint8_t qs[16];
			ld_bytes<16>(qhp + 4, qs);
			const uint32_t qh = (uint32_t)qhp[0] | ((uint32_t)qhp[1] << 8) |
			                    ((uint32_t)qhp[2] << 16) | ((uint32_t)qhp[3] << 24);
#pragma unroll
			for (int j = 0; j < 16; j++) {
				int h0 = ((qh >> j) << 4) & 0x10;
				int h1 = (qh >> (j + 12)) & 0x10;
				if (one) {
					w[j] = (float)((qs[j] & 0xF) | h0) * d + m;
					w[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
				} else {
					w[j] = (float)(((qs[j] & 0xF) | h0) - 16) * d;
					w[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
				}
			}
		} else if constexpr (T == LLM_Q8_0) {
			const float d = h2f(b);
			uint8_t qs[32];
			ld_bytes<32>(b + 2, qs);
#pragma unroll
			for (int j = 0; j < 32; j++)
				w[j] = (float)(int8_t)qs[j] * d;
		} else if constexpr (T == LLM_Q2_K) {
			/* scales[16] qs[64] d dmin; unit = (h = sub / 4, shift 2 * (sub % 4)) */
			const uint8_t *scales = b, *qs = b + 16 + (sub / 4) * 32;
			const float d = h2f(b + 80), dmin = h2f(b + 82);
			const int shift = 2 * (sub % 4), is = (sub / 4) * 8 + (sub % 4) * 2;
#pragma unroll
			for (int half = 0; half < 2; half++) {
				const int sc = scales[is + half];
				const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
#pragma unroll
				for (int l = 0; l < 16; l++)
					w[16 * half + l] = dl * (float)((qs[16 * half + l] >> shift) & 3) - ml;
			}
		} else if constexpr (T == LLM_Q3_K) {
			/* hmask[32] qs[64] scales[12] d */
			const uint8_t *hm = b, *qs = b + 32 + (sub / 4) * 32, *scales = b + 96;
			const float d_all = h2f(b + 108);
			const int shift = 2 * (sub % 4), is = (sub / 4) * 8 + (sub % 4) * 2;
			const uint8_t m = (uint8_t)(1u << sub);
#pragma unroll
			for (int half = 0; half < 2; half++) {
				const float dl = d_all * (float)q3k_scale(is + half, scales);
#pragma unroll
				for (int l = 0; l < 16; l++) {
					int k = 16 * half + l;
					w[k] = dl * (float)(((qs[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
				}
			}
		} else if constexpr (T == LLM_Q4_K || T == LLM_Q5_K) {
			/* d dmin scales[12] (qh[32]) qs[128] */
			const bool five = T == LLM_Q5_K;
			const float d = h2f(b), dmin = h2f(b + 2);
			const uint8_t *scales = b + 4, *qh = b + 16;
			const uint8_t *qs = b + (five ? 48 : 16) + (sub / 2) * 32;
			int sc, mn;
			q4k_sm(sub, scales, &sc, &mn);
			const float d1 = d * (float)sc, m1 = dmin * (float)mn;
			const int nshift = (sub & 1) ? 4 : 0;
#pragma unroll
			for (int l = 0; l < 32; l++) {
				int q = (qs[l] >> nshift) & 0xF;
				if (five)
					q += (qh[l] >> sub) & 1 ? 16 : 0;
				w[l] = d1 * (float)q - m1;
			}
		} else if constexpr (T == LLM_Q6_K) {
			/* ql[128] qh[64] scales[16] d; unit: h = sub / 4, k = sub % 4 */
			const int h = sub / 4, k = sub % 4;
			const uint8_t *ql = b + 64 * h + 32 * (k & 1), *qh = b + 128 + 32 * h;
			const int8_t *sc = (const int8_t *)(b + 192) + 8 * h + 2 * k;
			const float d = h2f(b + 208);
			const int lshift = 4 * (k >> 1), hshift = 2 * k;
#pragma unroll
			for (int l = 0; l < 32; l++) {
				int q = (((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4)) - 32;
				w[l] = d * (float)sc[l / 16] * (float)q;
			}
		}
	}
}

/* ---------------------------------------------------------------- matvec */

#define MV_WARPS 8

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/*
 * One warp per output row: lane l dequantizes units l, l + 32 ... of the
 * row and dots each with the same 32 inputs of every token; the weights
 * are read once for all n tokens.
 */
template <int T>
static __global__ void __launch_bounds__(MV_WARPS * 32)
mv_kernel(const uint8_t *w, size_t row_bytes, int n_in, int64_t n_out,
          const float *x, int n, float *y, bool x_vec)
{
	const int lane = threadIdx.x & 31;
	const int64_t row = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
	if (row >= n_out)
		return;  /* the whole warp leaves together */
	const uint8_t *wr = w + row * row_bytes;
	const int units = (n_in + 31) / 32;
	float acc[CUDA_MV_MAX];
#pragma unroll
	for (int t = 0; t < CUDA_MV_MAX; t++)
		acc[t] = 0.0f;

	for (int u = lane; u < units; u += 32) {
		float wv[32];
		deq32<T>(wr, u, n_in, wv);
		const int nv = unit_len(u, n_in);
#pragma unroll
		for (int t = 0; t < CUDA_MV_MAX; t++) {
			if (t >= n)
				break;
			const float *xr = x + (int64_t)t * n_in + (int64_t)u * 32;
			float s = 0.0f;
			if (nv == 32 && x_vec) {
				const float4 *x4 = (const float4 *)xr;
#pragma unroll
				for (int j = 0; j < 8; j++) {
					const float4 v = x4[j];
					s += wv[4 * j] * v.x;
					s += wv[4 * j + 1] * v.y;
					s += wv[4 * j + 2] * v.z;
					s += wv[4 * j + 3] * v.w;
				}
			} else if (nv == 32) {
#pragma unroll
				for (int j = 0; j < 32; j++)
					s += wv[j] * xr[j];
			} else {
				for (int j = 0; j < nv; j++)
					s += wv[j] * xr[j];
			}
			acc[t] += s;
		}
	}
#pragma unroll
	for (int t = 0; t < CUDA_MV_MAX; t++) {
		if (t >= n)
			break;
		float s = warp_sum(acc[t]);
		if (lane == 0)
			y[(int64_t)t * n_out + row] = s;
	}
}

/* Rows of halves for cuBLAS: one thread per unit. */
template <int T>
static __global__ void deq_f16_kernel(const uint8_t *w, size_t row_bytes, int n_in,
                                      int64_t rows, __half *out)
{
	const int units = (n_in + 31) / 32;
	const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (idx >= rows * units)
		return;
	const int64_t r = idx / units;
	const int u = (int)(idx % units);
	float wv[32];
	deq32<T>(w + r * row_bytes, u, n_in, wv);
	const int nv = unit_len(u, n_in);
	__half *o = out + r * n_in + (int64_t)u * 32;
#pragma unroll
	for (int j = 0; j < 32; j++)
		if (j < nv)
			o[j] = __float2half_rn(wv[j]);
}

template <int T>
static __global__ void get_rows_kernel(const uint8_t *w, size_t row_bytes, int n_in,
                                       const int32_t *ids, int n, float *out)
{
	const int units = (n_in + 31) / 32;
	const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (idx >= (int64_t)n * units)
		return;
	const int i = (int)(idx / units), u = (int)(idx % units);
	float wv[32];
	deq32<T>(w + (int64_t)ids[i] * row_bytes, u, n_in, wv);
	const int nv = unit_len(u, n_in);
	float *o = out + (int64_t)i * n_in + (int64_t)u * 32;
#pragma unroll
	for (int j = 0; j < 32; j++)
		if (j < nv)
			o[j] = wv[j];
}

/* ---------------------------------------------------------------- launchers */

#define FOR_EACH_TYPE(X) \
	X(LLM_F32) X(LLM_F16) X(LLM_BF16) X(LLM_Q4_0) X(LLM_Q4_1) X(LLM_Q5_0) \
	X(LLM_Q5_1) X(LLM_Q8_0) X(LLM_Q2_K) X(LLM_Q3_K) X(LLM_Q4_K) X(LLM_Q5_K) \
	X(LLM_Q6_K)

bool cuda_type_supported(enum llm_dtype t)
{
	switch (t) {
#define X(T) case T:
	FOR_EACH_TYPE(X)
#undef X
		return true;
	default:
		return false;
	}
}

static unsigned grid_of(int64_t n, int per)
{
	return (unsigned)((n + per - 1) / per);
}

cudaError_t cuda_matvec(cudaStream_t s, enum llm_dtype t, const void *w,
                        size_t row_bytes, int n_in, int64_t n_out,
                        const float *x, int n, float *y)
{
	if (n < 1 || n > CUDA_MV_MAX || n_out < 1 || n_in < 1)
		return cudaErrorInvalidValue;
	const unsigned g = grid_of(n_out, MV_WARPS);
	const uint8_t *wb = (const uint8_t *)w;
	/* 16-byte loads of the activations: rows of a multiple of 4 floats
	 * from a 16-byte aligned start */
	const bool x_vec = n_in % 4 == 0 && ((uintptr_t)x & 15) == 0;
	switch (t) {
#define X(T) case T: \
		mv_kernel<T><<<g, MV_WARPS * 32, 0, s>>>(wb, row_bytes, n_in, n_out, x, n, y, \
		                                          x_vec); \
		break;
	FOR_EACH_TYPE(X)
#undef X
	default:
		return cudaErrorInvalidValue;
	}
	return cudaGetLastError();
}

cudaError_t cuda_dequant_f16(cudaStream_t s, enum llm_dtype t, const void *w,
                             size_t row_bytes, int n_in, int64_t rows, void *out)
{
	const int64_t total = rows * ((n_in + 31) / 32);
	if (total < 1)
		return cudaSuccess;
	const unsigned g = grid_of(total, 256);
	const uint8_t *wb = (const uint8_t *)w;
	__half *o = (__half *)out;
	switch (t) {
#define X(T) case T: \
		deq_f16_kernel<T><<<g, 256, 0, s>>>(wb, row_bytes, n_in, rows, o); \
		break;
	FOR_EACH_TYPE(X)
#undef X
	default:
		return cudaErrorInvalidValue;
	}
	return cudaGetLastError();
}

cudaError_t cuda_get_rows(cudaStream_t s, enum llm_dtype t, const void *w,
                          size_t row_bytes, int n_in, const int32_t *ids, int n,
                          float *out)
{
	const int64_t total = (int64_t)n * ((n_in + 31) / 32);
	if (total < 1)
		return cudaSuccess;
	const unsigned g = grid_of(total, 256);
	const uint8_t *wb = (const uint8_t *)w;
	switch (t) {
#define X(T) case T: \
		get_rows_kernel<T><<<g, 256, 0, s>>>(wb, row_bytes, n_in, ids, n, out); \
		break;
	FOR_EACH_TYPE(X)
#undef X
	default:
		return cudaErrorInvalidValue;
	}
	return cudaGetLastError();
}

/*
 * deq32 run on the host over a row of n_in elements: lets test-cuda check
 * every type's unpacking against quant.c's dequantization on machines
 * without a GPU (the same source the kernels compile).  row must be
 * 16-byte aligned.  Returns -1 for a type the kernels do not take.
 */
extern "C" int llm_cuda_dequant_host(int t, const void *row, int n_in, float *out);

extern "C" int llm_cuda_dequant_host(int t, const void *row, int n_in, float *out)
{
	const uint8_t *r = (const uint8_t *)row;
	for (int u = 0; u < (n_in + 31) / 32; u++) {
		float w[32];
		switch (t) {
#define X(T) case T: deq32<T>(r, u, n_in, w); break;
		FOR_EACH_TYPE(X)
#undef X
		default:
			return -1;
		}
		for (int j = 0; j < unit_len(u, n_in); j++)
			out[u * 32 + j] = w[j];
	}
	return 0;
}
