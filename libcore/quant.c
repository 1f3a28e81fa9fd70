/*
 * quant.c - block quantization formats (see quant.h): reference quantizers
 * with and without importance weights, dequantizers, reference dot
 * products against quantized activations.
 *
 * The rounding follows ggml's reference code step by step (the same float
 * operations in the same order), because "the same bytes as llama.cpp" is
 * what makes a quantized file reproducible; tests compare against the gguf
 * Python package and against fixtures written by ggml itself.  This file
 * is built without FMA contraction (the library is compiled for baseline
 * x86-64), which keeps the float arithmetic exactly as written.
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"

_Static_assert(sizeof(struct llm_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct llm_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct llm_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(struct llm_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(struct llm_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct llm_block_q8_1) == 36, "q8_1 block");
_Static_assert(sizeof(struct llm_block_q2_k) == 84, "q2_k block");
_Static_assert(sizeof(struct llm_block_q3_k) == 110, "q3_k block");
_Static_assert(sizeof(struct llm_block_q4_k) == 144, "q4_k block");
_Static_assert(sizeof(struct llm_block_q5_k) == 176, "q5_k block");
_Static_assert(sizeof(struct llm_block_q6_k) == 210, "q6_k block");
_Static_assert(sizeof(struct llm_block_q8_k) == 292, "q8_k block");

#define QK LLM_QK
#define QKK LLM_QK_K
#define EPS 1e-15f   /* a group whose largest magnitude is below this is zero */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline float h2f(uint16_t h) { return llm_f16_to_f32(h); }
static inline uint16_t f2h(float f) { return llm_f32_to_f16(f); }

/* Round to nearest, ties to even, for |f| < 2^22: adding 1.5 * 2^23 puts
 * the integer in the low mantissa bits. */
static inline int nearest_int(float f)
{
	float v = f + 12582912.f;
	int32_t i;
	memcpy(&i, &v, sizeof(i));
	return (i & 0x007fffff) - 0x00400000;
}

/* ================================================================ 32-blocks */

/* Low nibbles hold elements 0..15, high nibbles 16..31. */
static void pack_nibbles(uint8_t *qs, const uint8_t *l)
{
	for (int j = 0; j < QK / 2; j++)
		qs[j] = (uint8_t)(l[j] | (l[j + QK / 2] << 4));
}

/* 5-bit: low nibbles as above, bit 4 of element j in bit j of qh. */
static void pack_5bit(uint8_t *qs, uint8_t *qh4, const uint8_t *l)
{
	uint32_t qh = 0;
	for (int j = 0; j < QK / 2; j++) {
		qs[j] = (uint8_t)((l[j] & 0xF) | ((l[j + QK / 2] & 0xF) << 4));
		qh |= (uint32_t)((l[j] >> 4) & 1) << j;
		qh |= (uint32_t)((l[j + QK / 2] >> 4) & 1) << (j + QK / 2);
	}
	memcpy(qh4, &qh, 4);
}

/* The element of largest magnitude (the first, on ties). */
static float absmax_signed(const float *x, int n)
{
	float amax = 0, max = 0;
	for (int j = 0; j < n; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	return max;
}

void llm_quantize_row_q4_0(const float *x, void *dst, int64_t n)
{
	struct llm_block_q4_0 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		const float d = absmax_signed(x, QK) / -8;
		const float id = d ? 1.0f / d : 0.0f;
		uint8_t l[QK];
		for (int j = 0; j < QK; j++)
			l[j] = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
		y[i].d = f2h(d);
		pack_nibbles(y[i].qs, l);
	}
}

void llm_quantize_row_q5_0(const float *x, void *dst, int64_t n)
{
	struct llm_block_q5_0 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		const float d = absmax_signed(x, QK) / -16;
		const float id = d ? 1.0f / d : 0.0f;
		uint8_t l[QK];
		for (int j = 0; j < QK; j++)
			l[j] = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
		y[i].d = f2h(d);
		pack_5bit(y[i].qs, y[i].qh, l);
	}
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
	*mn = FLT_MAX;
	*mx = -FLT_MAX;
	for (int j = 0; j < n; j++) {
		if (x[j] < *mn)
			*mn = x[j];
		if (x[j] > *mx)
			*mx = x[j];
	}
}

void llm_quantize_row_q4_1(const float *x, void *dst, int64_t n)
{
	struct llm_block_q4_1 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		float mn, mx;
		min_max(x, QK, &mn, &mx);
		const float d = (mx - mn) / 15;
		const float id = d ? 1.0f / d : 0.0f;
		uint8_t l[QK];
		for (int j = 0; j < QK; j++)
			l[j] = (uint8_t)imin(15, (int8_t)((x[j] - mn) * id + 0.5f));
		y[i].d = f2h(d);
		y[i].m = f2h(mn);
		pack_nibbles(y[i].qs, l);
	}
}

void llm_quantize_row_q5_1(const float *x, void *dst, int64_t n)
{
	struct llm_block_q5_1 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		float mn, mx;
		min_max(x, QK, &mn, &mx);
		const float d = (mx - mn) / 31;
		const float id = d ? 1.0f / d : 0.0f;
		uint8_t l[QK];
		for (int j = 0; j < QK; j++)
			l[j] = (uint8_t)((x[j] - mn) * id + 0.5f);
		y[i].d = f2h(d);
		y[i].m = f2h(mn);
		pack_5bit(y[i].qs, y[i].qh, l);
	}
}

void llm_quantize_row_q8_0(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_0 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		float amax = 0;
		for (int j = 0; j < QK; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		const float d = amax / 127;
		const float id = d ? 1.0f / d : 0.0f;
		y[i].d = f2h(d);
		for (int j = 0; j < QK; j++)
			y[i].qs[j] = (int8_t)roundf(x[j] * id);
	}
}

void llm_quantize_row_q8_1(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_1 *y = dst;
	for (int64_t i = 0; i < n / QK; i++, x += QK) {
		float amax = 0;
		for (int j = 0; j < QK; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		const float d = amax / 127;
		const float id = d ? 1.0f / d : 0.0f;
		int sum = 0;
		y[i].d = f2h(d);
		for (int j = 0; j < QK; j++) {
			y[i].qs[j] = (int8_t)roundf(x[j] * id);
			sum += y[i].qs[j];
		}
		y[i].s = f2h(sum * d);
	}
}

void llm_dequantize_row_q4_0(const void *src, float *y, int64_t n)
{
	const struct llm_block_q4_0 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d);
		for (int j = 0; j < QK / 2; j++) {
			y[j] = ((x[i].qs[j] & 0xF) - 8) * d;
			y[j + QK / 2] = ((x[i].qs[j] >> 4) - 8) * d;
		}
	}
}

void llm_dequantize_row_q4_1(const void *src, float *y, int64_t n)
{
	const struct llm_block_q4_1 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d), m = h2f(x[i].m);
		for (int j = 0; j < QK / 2; j++) {
			y[j] = (x[i].qs[j] & 0xF) * d + m;
			y[j + QK / 2] = (x[i].qs[j] >> 4) * d + m;
		}
	}
}

void llm_dequantize_row_q5_0(const void *src, float *y, int64_t n)
{
	const struct llm_block_q5_0 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d);
		uint32_t qh;
		memcpy(&qh, x[i].qh, 4);
		for (int j = 0; j < QK / 2; j++) {
			int h0 = ((qh >> j) << 4) & 0x10;
			int h1 = (qh >> (j + 12)) & 0x10;
			y[j] = (((x[i].qs[j] & 0xF) | h0) - 16) * d;
			y[j + QK / 2] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
		}
	}
}

void llm_dequantize_row_q5_1(const void *src, float *y, int64_t n)
{
	const struct llm_block_q5_1 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d), m = h2f(x[i].m);
		uint32_t qh;
		memcpy(&qh, x[i].qh, 4);
		for (int j = 0; j < QK / 2; j++) {
			int h0 = ((qh >> j) << 4) & 0x10;
			int h1 = (qh >> (j + 12)) & 0x10;
			y[j] = ((x[i].qs[j] & 0xF) | h0) * d + m;
			y[j + QK / 2] = ((x[i].qs[j] >> 4) | h1) * d + m;
		}
	}
}

void llm_dequantize_row_q8_0(const void *src, float *y, int64_t n)
{
	const struct llm_block_q8_0 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d);
		for (int j = 0; j < QK; j++)
			y[j] = x[i].qs[j] * d;
	}
}

void llm_dequantize_row_q8_1(const void *src, float *y, int64_t n)
{
	const struct llm_block_q8_1 *x = src;
	for (int64_t i = 0; i < n / QK; i++, y += QK) {
		const float d = h2f(x[i].d);
		for (int j = 0; j < QK; j++)
			y[j] = x[i].qs[j] * d;
	}
}

/* ================================================================ scale search */

/*
 * Symmetric quantization of n values to [-nmax, nmax-1] (stored + nmax):
 * the scale that minimises sum w (x - s l)^2, trying 19 candidate grids
 * around nmax / max.  w = qw when given, else x^2 (rmse_type 1).
 */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L,
                            int rmse_type, const float *qw)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			max = x[i];
		}
	if (amax < EPS) {
		memset(L, 0, n);
		return 0.f;
	}
	float iscale = -nmax / max;
	if (rmse_type == 0) {
		for (int i = 0; i < n; i++)
			L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
		return 1 / iscale;
	}
	/* only rmse_type 1 is used: weights x^2 or qw */
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
		L[i] = (int8_t)(l + nmax);
		float w = qw ? qw[i] : x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	float scale = suml2 ? sumlx / suml2 : 0.0f;
	float best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		iscale = -(nmax + 0.1f * is) / max;
		sumlx = suml2 = 0;
		for (int i = 0; i < n; i++) {
			int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
			float w = qw ? qw[i] : x[i] * x[i];
			sumlx += w * x[i] * l;
			suml2 += w * l * l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (int i = 0; i < n; i++)
				L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1,
				                nearest_int(iscale * x[i]))));
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

/* q3_k's symmetric search: start from nmax / max, then move single
 * elements to the level that improves the weighted fit (up to 5 rounds). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
	float max = 0, amax = 0;
	for (int i = 0; i < n; i++)
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			max = x[i];
		}
	if (amax < EPS) {
		memset(L, 0, n);
		return 0.f;
	}
	float iscale = -nmax / max;
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
		L[i] = (int8_t)l;
		float w = x[i] * x[i];
		sumlx += w * x[i] * l;
		suml2 += w * l * l;
	}
	for (int itry = 0; itry < 5; itry++) {
		int changed = 0;
		for (int i = 0; i < n; i++) {
			float w = x[i] * x[i];
			float slx = sumlx - w * x[i] * L[i];
			if (slx > 0) {
				float sl2 = suml2 - w * L[i] * L[i];
				int nl = imax(-nmax, imin(nmax - 1, nearest_int(x[i] * sl2 / slx)));
				if (nl != L[i]) {
					slx += w * x[i] * nl;
					sl2 += w * nl * nl;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (int8_t)nl;
						sumlx = slx;
						suml2 = sl2;
						changed++;
					}
				}
			}
		}
		if (!changed)
			break;
	}
	for (int i = 0; i < n; i++)
		L[i] = (int8_t)(L[i] + nmax);
	return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/*
 * Asymmetric quantization to [0, nmax] with a minimum (x ~ s l - m):
 * start from the min-max grid, then try nstep+1 grids and solve the
 * weighted least-squares scale and offset for each, keeping the best.
 * weights NULL: x^2.  mad: absolute instead of squared error.  The
 * minimum is returned negated in *the_min (as the format stores it).
 */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights,
                             uint8_t *L, float *the_min, uint8_t *Laux,
                             float rmin, float rdelta, int nstep, bool mad,
                             bool strict)
{
	float min = x[0], max = x[0];
	float sum_w = weights ? weights[0] : x[0] * x[0];
	float sum_x = sum_w * x[0];
	for (int i = 1; i < n; i++) {
		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		float w = weights ? weights[i] : x[i] * x[i];
		sum_w += w;
		sum_x += w * x[i];
	}
	if (min > 0)
		min = 0;
	/* "strict" (the importance-matrix search) also treats max < min as
	 * degenerate; both agree whenever max >= min, which always holds */
	if (strict ? max <= min : max == min) {
		memset(L, 0, n);
		*the_min = -min;
		return 0.f;
	}
	float iscale = nmax / (max - min);
	float scale = 1 / iscale;
	float best_error = 0;
	for (int i = 0; i < n; i++) {
		int l = nearest_int(iscale * (x[i] - min));
		L[i] = (uint8_t)imax(0, imin(nmax, l));
		float diff = scale * L[i] + min - x[i];
		diff = mad ? fabsf(diff) : diff * diff;
		float w = weights ? weights[i] : x[i] * x[i];
		best_error += w * diff;
	}
	if (nstep < 1) {
		*the_min = -min;
		return scale;
	}
	for (int is = 0; is <= nstep; is++) {
		iscale = (rmin + rdelta * is + nmax) / (max - min);
		float sum_l = 0, sum_l2 = 0, sum_xl = 0;
		for (int i = 0; i < n; i++) {
			int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
			Laux[i] = (uint8_t)l;
			float w = weights ? weights[i] : x[i] * x[i];
			sum_l += w * l;
			sum_l2 += w * l * l;
			sum_xl += w * l * x[i];
		}
		float D = sum_w * sum_l2 - sum_l * sum_l;
		if (D > 0) {
			float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
			float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
			if (this_min > 0) {
				this_min = 0;
				this_scale = sum_xl / sum_l2;
			}
			float err = 0;
			for (int i = 0; i < n; i++) {
				float diff = this_scale * Laux[i] + this_min - x[i];
				diff = mad ? fabsf(diff) : diff * diff;
				float w = weights ? weights[i] : x[i] * x[i];
				err += w * diff;
			}
			if (err < best_error) {
				memcpy(L, Laux, n);
				best_error = err;
				scale = this_scale;
				min = this_min;
			}
		}
	}
	*the_min = -min;
	return scale;
}

/* Non-negative values (sub-block scales) to [0, nmax] with weights. */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L,
                            const float *qw)
{
	float max = 0;
	for (int i = 0; i < n; i++)
		max = fmaxf(max, x[i]);
	if (max < EPS) {
		memset(L, 0, n);
		return 0.f;
	}
	float iscale = nmax / max;
	for (int i = 0; i < n; i++)
		L[i] = (uint8_t)nearest_int(iscale * x[i]);
	float scale = 1 / iscale;
	float best_mse = 0;
	for (int i = 0; i < n; i++) {
		float diff = x[i] - scale * L[i];
		best_mse += qw[i] * diff * diff;
	}
	for (int is = -4; is <= 4; is++) {
		if (is == 0)
			continue;
		float iscale_is = (0.1f * is + nmax) / max;
		float scale_is = 1 / iscale_is;
		float mse = 0;
		for (int i = 0; i < n; i++) {
			int l = imin(nmax, nearest_int(iscale_is * x[i]));
			float diff = x[i] - scale_is * l;
			mse += qw[i] * diff * diff;
		}
		if (mse < best_mse) {
			best_mse = mse;
			iscale = iscale_is;
		}
	}
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = imin(nmax, nearest_int(iscale * x[i]));
		L[i] = (uint8_t)l;
		sumlx += qw[i] * x[i] * l;
		suml2 += qw[i] * l * l;
	}
	for (int itry = 0; itry < 5; itry++) {
		int changed = 0;
		for (int i = 0; i < n; i++) {
			float w = qw[i];
			float slx = sumlx - w * x[i] * L[i];
			float sl2 = suml2 - w * L[i] * L[i];
			if (slx > 0 && sl2 > 0) {
				int nl = imin(nmax, nearest_int(x[i] * sl2 / slx));
				if (nl != L[i]) {
					slx += w * x[i] * nl;
					sl2 += w * nl * nl;
					if (slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (uint8_t)nl;
						sumlx = slx;
						suml2 = sl2;
						changed++;
					}
				}
			}
		}
		if (!changed)
			break;
	}
	return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ================================================================ importance */

/* sigma2 = mean of x^2 over the row (the 32-families' importance floor). */
static float row_sigma2(const float *x, int64_t n)
{
	float s = 0;
	for (int64_t j = 0; j < n; j++)
		s += x[j] * x[j];
	return s / n;
}

static void quantize_q4_0_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q4_0 *y = dst;
	float sigma2 = row_sigma2(x, n), w[QK];
	int8_t L[QK];
	for (int64_t i = 0; i < n / QK; i++) {
		const float *xb = x + QK * i, *q = qw + QK * i;
		for (int j = 0; j < QK; j++)
			w[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
		y[i].d = f2h(make_qx_quants(QK, 8, xb, L, 1, w));
		pack_nibbles(y[i].qs, (uint8_t *)L);
	}
}

static void quantize_q5_0_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q5_0 *y = dst;
	float sigma2 = row_sigma2(x, n), w[QK];
	int8_t L[QK];
	for (int64_t i = 0; i < n / QK; i++) {
		const float *xb = x + QK * i, *q = qw + QK * i;
		for (int j = 0; j < QK; j++)
			w[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
		y[i].d = f2h(make_qx_quants(QK, 16, xb, L, 1, w));
		pack_5bit(y[i].qs, y[i].qh, (uint8_t *)L);
	}
}

static void quantize_q4_1_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q4_1 *y = dst;
	float sigma2 = row_sigma2(x, n), w[QK], min;
	uint8_t L[QK], Laux[QK];
	for (int64_t i = 0; i < n / QK; i++) {
		const float *xb = x + QK * i, *q = qw + QK * i;
		for (int j = 0; j < QK; j++)
			w[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
		float d = make_qkx_quants(QK, 15, xb, w, L, &min, Laux, -0.9f, 0.05f, 36,
		                          false, true);
		y[i].d = f2h(d);
		y[i].m = f2h(-min);
		pack_nibbles(y[i].qs, L);
	}
}

static void quantize_q5_1_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q5_1 *y = dst;
	float sigma2 = row_sigma2(x, n), w[QK], min;
	uint8_t L[QK], Laux[QK];
	for (int64_t i = 0; i < n / QK; i++) {
		const float *xb = x + QK * i, *q = qw + QK * i;
		for (int j = 0; j < QK; j++)
			w[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
		float d = make_qkx_quants(QK, 31, xb, w, L, &min, Laux, -0.9f, 0.05f, 36,
		                          false, true);
		y[i].d = f2h(d);
		y[i].m = f2h(-min);
		pack_5bit(y[i].qs, y[i].qh, L);
	}
}

/* ================================================================ k-quants */

/* Four 2-bit planes: byte l of each 32 holds elements l, l+32, l+64, l+96
 * of its 128 (q2_k and q3_k low bits). */
static void pack_2bit(uint8_t *qs, const uint8_t *L)
{
	for (int j = 0; j < QKK; j += 128)
		for (int l = 0; l < 32; l++)
			qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
			                          (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* q2_k: requantize with the stored (rounded) scales and mins, then pack. */
static void q2k_finish(struct llm_block_q2_k *y, const float *x, uint8_t *L)
{
	const float dm = h2f(y->d), mm = h2f(y->dmin);
	for (int j = 0; j < QKK / 16; j++) {
		const float d = dm * (y->scales[j] & 0xF);
		if (!d)
			continue;
		const float m = mm * (y->scales[j] >> 4);
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (uint8_t)imax(0, imin(3, nearest_int((x[16 * j + ii] + m) / d)));
	}
	pack_2bit(y->qs, L);
}

void llm_quantize_row_q2_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q2_k *y = dst;
	uint8_t L[QKK], Laux[16];
	float w[16], mins[QKK / 16], scales[QKK / 16];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		float max_scale = 0, max_min = 0;
		for (int j = 0; j < QKK / 16; j++) {
			for (int l = 0; l < 16; l++)
				w[l] = fabsf(x[16 * j + l]);
			scales[j] = make_qkx_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j],
			                            Laux, -0.5f, 0.1f, 15, true, false);
			if (scales[j] > max_scale)
				max_scale = scales[j];
			if (mins[j] > max_min)
				max_min = mins[j];
		}
		if (max_scale > 0) {
			float iscale = 15.f / max_scale;
			for (int j = 0; j < QKK / 16; j++)
				y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
			y[i].d = f2h(max_scale / 15.f);
		} else {
			memset(y[i].scales, 0, 16);
			y[i].d = f2h(0.f);
		}
		if (max_min > 0) {
			float iscale = 15.f / max_min;
			for (int j = 0; j < QKK / 16; j++)
				y[i].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
			y[i].dmin = f2h(max_min / 15.f);
		} else {
			y[i].dmin = f2h(0.f);
		}
		q2k_finish(&y[i], x, L);
	}
}

static void quantize_q2_k_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q2_k *y = dst;
	uint8_t L[QKK], Laux[16], Ls[QKK / 16], Lm[QKK / 16];
	float mins[QKK / 16], scales[QKK / 16], sw[QKK / 16], w[16];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		float sumx2 = 0;
		for (int j = 0; j < QKK; j++)
			sumx2 += x[j] * x[j];
		float sigma2 = sumx2 / QKK;
		for (int j = 0; j < QKK / 16; j++) {
			const float *q = qw + QKK * i + 16 * j;
			sw[j] = 0;
			for (int l = 0; l < 16; l++)
				w[l] = q[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
			for (int l = 0; l < 16; l++)
				sw[j] += w[l];
			scales[j] = make_qkx_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j],
			                            Laux, -0.9f, 0.05f, 36, false, true);
		}
		float dm = make_qp_quants(QKK / 16, 15, scales, Ls, sw);
		float mm = make_qp_quants(QKK / 16, 15, mins, Lm, sw);
		y[i].d = f2h(dm);
		y[i].dmin = f2h(mm);
		for (int j = 0; j < QKK / 16; j++)
			y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
		q2k_finish(&y[i], x, L);
	}
}

void llm_dequantize_row_q2_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q2_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++) {
		const float d = h2f(x[i].d), min = h2f(x[i].dmin);
		const uint8_t *q = x[i].qs;
		int is = 0;
		for (int nn = 0; nn < QKK; nn += 128, q += 32)
			for (int shift = 0; shift < 8; shift += 2)
				for (int half = 0; half < 2; half++) {
					uint8_t sc = x[i].scales[is++];
					float dl = d * (sc & 0xF), ml = min * (sc >> 4);
					for (int l = 0; l < 16; l++)
						*y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
				}
	}
}

/* q3_k scales: 16 6-bit values, low nibbles in bytes 0..7 (two each),
 * high pairs of bits in bytes 8..11. */
static void q3k_pack_scales(uint8_t *s, const int *l)
{
	memset(s, 0, 12);
	for (int j = 0; j < 16; j++) {
		if (j < 8)
			s[j] = (uint8_t)(l[j] & 0xF);
		else
			s[j - 8] |= (uint8_t)((l[j] & 0xF) << 4);
		s[j % 4 + 8] |= (uint8_t)((l[j] >> 4) << (2 * (j / 4)));
	}
}

void llm_q3k_scales(const uint8_t *s, int8_t *out)
{
	for (int j = 0; j < 16; j++) {
		int sc = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
		out[j] = (int8_t)((sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
	}
}

/* q3_k: requantize with the stored scales, split off the high bits. */
static void q3k_finish(struct llm_block_q3_k *y, const float *x, int8_t *L)
{
	int8_t sc[16];
	llm_q3k_scales(y->scales, sc);
	for (int j = 0; j < QKK / 16; j++) {
		float d = h2f(y->d) * sc[j];
		if (!d)
			continue;
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (int8_t)(imax(-4, imin(3, nearest_int(x[16 * j + ii] / d))) + 4);
	}
	memset(y->hmask, 0, QKK / 8);
	/* the high bit of elements 0..31 goes to bit 0, of 32..63 to bit 1 ... */
	for (int j = 0; j < QKK; j++)
		if (L[j] > 3) {
			y->hmask[j % 32] |= (uint8_t)(1 << (j / 32));
			L[j] -= 4;
		}
	pack_2bit(y->qs, (uint8_t *)L);
}

void llm_quantize_row_q3_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q3_k *y = dst;
	int8_t L[QKK];
	float scales[QKK / 16];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		float max_scale = 0, amax = 0;
		for (int j = 0; j < QKK / 16; j++) {
			scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
			if (fabsf(scales[j]) > amax) {
				amax = fabsf(scales[j]);
				max_scale = scales[j];
			}
		}
		if (max_scale) {
			float iscale = -32.f / max_scale;
			int l[16];
			for (int j = 0; j < 16; j++) {
				int8_t v = (int8_t)nearest_int(iscale * scales[j]);
				l[j] = imax(-32, imin(31, v)) + 32;
			}
			q3k_pack_scales(y[i].scales, l);
			y[i].d = f2h(1 / iscale);
		} else {
			memset(y[i].scales, 0, 12);
			y[i].d = f2h(0.f);
		}
		q3k_finish(&y[i], x, L);
	}
}

static void quantize_q3_k_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q3_k *y = dst;
	int8_t L[QKK], Ls[QKK / 16];
	float scales[QKK / 16], w[16], sw[QKK / 16];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		float sumx2 = 0;
		for (int j = 0; j < QKK; j++)
			sumx2 += x[j] * x[j];
		float sigma2 = 2 * sumx2 / QKK;
		for (int j = 0; j < QKK / 16; j++) {
			const float *q = qw + QKK * i + 16 * j;
			float sumw = 0;
			for (int l = 0; l < 16; l++)
				w[l] = q[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
			for (int l = 0; l < 16; l++)
				sumw += w[l];
			sw[j] = sumw;
			scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, w);
		}
		float d_block = make_qx_quants(QKK / 16, 32, scales, Ls, 1, sw);
		int l[16];
		for (int j = 0; j < 16; j++)
			l[j] = Ls[j];
		q3k_pack_scales(y[i].scales, l);
		y[i].d = f2h(d_block);
		q3k_finish(&y[i], x, L);
	}
}

void llm_dequantize_row_q3_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q3_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++) {
		const float d_all = h2f(x[i].d);
		const uint8_t *q = x[i].qs, *hm = x[i].hmask;
		int8_t sc[16];
		uint8_t m = 1;
		int is = 0;
		llm_q3k_scales(x[i].scales, sc);
		for (int nn = 0; nn < QKK; nn += 128, q += 32)
			for (int shift = 0; shift < 8; shift += 2, m <<= 1)
				for (int half = 0; half < 2; half++) {
					float dl = d_all * sc[is++];
					for (int l = 0; l < 16; l++) {
						int k = l + 16 * half;
						*y++ = dl * (((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
					}
				}
	}
}

/* q4_k / q5_k: 8 scales and 8 mins of 6 bits in 12 bytes. */
static void q4k_pack_scales(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
	for (int j = 0; j < 8; j++) {
		if (j < 4) {
			s[j] = ls[j];
			s[j + 4] = lm[j];
		} else {
			s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
			s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
			s[j] |= (uint8_t)((lm[j] >> 4) << 6);
		}
	}
}

/* Requantize a q4_k/q5_k super-block to [0, nmax] with its stored scales. */
static void q45k_requant(uint16_t dh, uint16_t dminh, const uint8_t *scales,
                         const float *x, uint8_t *L, int nmax)
{
	for (int j = 0; j < QKK / 32; j++) {
		uint8_t sc, m;
		llm_q4k_scale_min(j, scales, &sc, &m);
		const float d = h2f(dh) * sc;
		if (!d)
			continue;
		const float dm = h2f(dminh) * m;
		for (int ii = 0; ii < 32; ii++)
			L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + ii] + dm) / d)));
	}
}

/* Scales and mins of the 8 sub-blocks to 6 bits against their maxima. */
static void q45k_scales_ref(const float *scales, const float *mins, uint8_t *out,
                            uint16_t *d, uint16_t *dmin)
{
	float max_scale = 0, max_min = 0;
	uint8_t ls[8], lm[8];
	for (int j = 0; j < 8; j++) {
		if (scales[j] > max_scale)
			max_scale = scales[j];
		if (mins[j] > max_min)
			max_min = mins[j];
	}
	float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
	float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	for (int j = 0; j < 8; j++) {
		ls[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_scale * scales[j]));
		lm[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_min * mins[j]));
	}
	q4k_pack_scales(out, ls, lm);
	*d = f2h(max_scale / 63.f);
	*dmin = f2h(max_min / 63.f);
}

/* Sub-block search of q4_k / q5_k without an importance matrix. */
static void q45k_subblocks_ref(const float *x, int nmax, float rmin, float rdelta,
                               int nstep, uint8_t *L, float *scales, float *mins)
{
	uint8_t Laux[32];
	float w[32];
	for (int j = 0; j < QKK / 32; j++) {
		float sum_x2 = 0;
		for (int l = 0; l < 32; l++)
			sum_x2 += x[32 * j + l] * x[32 * j + l];
		float av_x = sqrtf(sum_x2 / 32);
		for (int l = 0; l < 32; l++)
			w[l] = av_x + fabsf(x[32 * j + l]);
		scales[j] = make_qkx_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j],
		                            Laux, rmin, rdelta, nstep, false, false);
	}
}

/* ... and with one: weighted search, then the scales themselves fitted. */
static void q45k_subblocks_imatrix(const float *x, const float *qw, int nmax,
                                   uint8_t *L, uint8_t *scales12, uint16_t *d,
                                   uint16_t *dmin)
{
	uint8_t Laux[32], Ls[8], Lm[8];
	float w[32], sw[8], scales[8], mins[8], sum_x2 = 0;
	for (int l = 0; l < QKK; l++)
		sum_x2 += x[l] * x[l];
	float sigma2 = 2 * sum_x2 / QKK;
	float av_x = sqrtf(sigma2);
	for (int j = 0; j < QKK / 32; j++) {
		if (qw)
			for (int l = 0; l < 32; l++)
				w[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
		else
			for (int l = 0; l < 32; l++)
				w[l] = av_x + fabsf(x[32 * j + l]);
		float sumw = 0;
		for (int l = 0; l < 32; l++)
			sumw += w[l];
		sw[j] = sumw;
		scales[j] = make_qkx_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j],
		                            Laux, -0.9f, 0.05f, 36, false, true);
	}
	float d_block = make_qp_quants(8, 63, scales, Ls, sw);
	float m_block = make_qp_quants(8, 63, mins, Lm, sw);
	for (int j = 0; j < 8; j++) {
		Ls[j] = (uint8_t)imin(63, Ls[j]);
		Lm[j] = (uint8_t)imin(63, Lm[j]);
	}
	memset(scales12, 0, 12);
	q4k_pack_scales(scales12, Ls, Lm);
	*d = f2h(d_block);
	*dmin = f2h(m_block);
}

static void q4k_pack(uint8_t *q, const uint8_t *L)
{
	for (int j = 0; j < QKK; j += 64, q += 32)
		for (int l = 0; l < 32; l++)
			q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

void llm_quantize_row_q4_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q4_k *y = dst;
	uint8_t L[QKK];
	float scales[8], mins[8];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		q45k_subblocks_ref(x, 15, -1.f, 0.1f, 20, L, scales, mins);
		memset(y[i].scales, 0, 12);
		q45k_scales_ref(scales, mins, y[i].scales, &y[i].d, &y[i].dmin);
		q45k_requant(y[i].d, y[i].dmin, y[i].scales, x, L, 15);
		q4k_pack(y[i].qs, L);
	}
}

static void quantize_q4_k_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q4_k *y = dst;
	uint8_t L[QKK];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		q45k_subblocks_imatrix(x, qw + QKK * i, 15, L, y[i].scales, &y[i].d,
		                       &y[i].dmin);
		q45k_requant(y[i].d, y[i].dmin, y[i].scales, x, L, 15);
		q4k_pack(y[i].qs, L);
	}
}

void llm_dequantize_row_q4_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q4_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++) {
		const uint8_t *q = x[i].qs;
		const float d = h2f(x[i].d), min = h2f(x[i].dmin);
		for (int j = 0, is = 0; j < QKK; j += 64, q += 32, is += 2) {
			uint8_t sc, m;
			llm_q4k_scale_min(is, x[i].scales, &sc, &m);
			const float d1 = d * sc, m1 = min * m;
			llm_q4k_scale_min(is + 1, x[i].scales, &sc, &m);
			const float d2 = d * sc, m2 = min * m;
			for (int l = 0; l < 32; l++)
				*y++ = d1 * (q[l] & 0xF) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * (q[l] >> 4) - m2;
		}
	}
}

/* q5_k: low nibbles as q4_k; the high bit of element 64k+l in bit 2k of
 * qh[l], of 64k+32+l in bit 2k+1. */
static void q5k_pack(uint8_t *ql, uint8_t *qh, const uint8_t *L)
{
	uint8_t m1 = 1, m2 = 2;
	memset(qh, 0, QKK / 8);
	for (int nn = 0; nn < QKK; nn += 64, ql += 32, m1 <<= 2, m2 <<= 2)
		for (int j = 0; j < 32; j++) {
			int l1 = L[nn + j], l2 = L[nn + j + 32];
			if (l1 > 15) {
				l1 -= 16;
				qh[j] |= m1;
			}
			if (l2 > 15) {
				l2 -= 16;
				qh[j] |= m2;
			}
			ql[j] = (uint8_t)(l1 | (l2 << 4));
		}
}

void llm_quantize_row_q5_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q5_k *y = dst;
	uint8_t L[QKK];
	float scales[8], mins[8];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		q45k_subblocks_ref(x, 31, -0.5f, 0.1f, 15, L, scales, mins);
		memset(y[i].scales, 0, 12);
		q45k_scales_ref(scales, mins, y[i].scales, &y[i].d, &y[i].dmin);
		q45k_requant(y[i].d, y[i].dmin, y[i].scales, x, L, 31);
		q5k_pack(y[i].qs, y[i].qh, L);
	}
}

static void quantize_q5_k_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q5_k *y = dst;
	uint8_t L[QKK];
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		q45k_subblocks_imatrix(x, qw + QKK * i, 31, L, y[i].scales, &y[i].d,
		                       &y[i].dmin);
		q45k_requant(y[i].d, y[i].dmin, y[i].scales, x, L, 31);
		q5k_pack(y[i].qs, y[i].qh, L);
	}
}

void llm_dequantize_row_q5_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q5_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++) {
		const uint8_t *ql = x[i].qs, *qh = x[i].qh;
		const float d = h2f(x[i].d), min = h2f(x[i].dmin);
		uint8_t u1 = 1, u2 = 2;
		for (int j = 0, is = 0; j < QKK; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
			uint8_t sc, m;
			llm_q4k_scale_min(is, x[i].scales, &sc, &m);
			const float d1 = d * sc, m1 = min * m;
			llm_q4k_scale_min(is + 1, x[i].scales, &sc, &m);
			const float d2 = d * sc, m2 = min * m;
			for (int l = 0; l < 32; l++)
				*y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
			for (int l = 0; l < 32; l++)
				*y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
		}
	}
}

/* q6_k: element 128h + 32k + l has its low nibble in ql[64h + l + 32(k&1)]
 * (high nibble when k >= 2) and its top two bits at bits 2k of qh[32h+l]. */
static void q6k_body(struct llm_block_q6_k *y, const float *x, const float *qw)
{
	int8_t L[QKK];
	float scales[QKK / 16], max_scale = 0, max_abs = 0;
	for (int ib = 0; ib < QKK / 16; ib++) {
		scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1,
		                            qw ? qw + 16 * ib : NULL);
		if (fabsf(scales[ib]) > max_abs) {
			max_abs = fabsf(scales[ib]);
			max_scale = scales[ib];
		}
	}
	if (max_abs < EPS) {
		memset(y, 0, sizeof(*y));
		y->d = f2h(0.f);
		return;
	}
	float iscale = -128.f / max_scale;
	y->d = f2h(1 / iscale);
	for (int ib = 0; ib < QKK / 16; ib++)
		y->scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
	for (int j = 0; j < QKK / 16; j++) {
		float d = h2f(y->d) * y->scales[j];
		if (!d)
			continue;
		for (int ii = 0; ii < 16; ii++)
			L[16 * j + ii] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + ii] / d))) + 32);
	}
	uint8_t *ql = y->ql, *qh = y->qh;
	for (int j = 0; j < QKK; j += 128, ql += 64, qh += 32)
		for (int l = 0; l < 32; l++) {
			const uint8_t a = L[j + l], b = L[j + l + 32], c = L[j + l + 64],
			              e = L[j + l + 96];
			ql[l] = (uint8_t)((a & 0xF) | ((c & 0xF) << 4));
			ql[l + 32] = (uint8_t)((b & 0xF) | ((e & 0xF) << 4));
			qh[l] = (uint8_t)((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
		}
}

void llm_quantize_row_q6_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q6_k *y = dst;
	for (int64_t i = 0; i < n / QKK; i++)
		q6k_body(&y[i], x + QKK * i, NULL);
}

static void quantize_q6_k_imatrix(const float *x, void *dst, int64_t n, const float *qw)
{
	struct llm_block_q6_k *y = dst;
	for (int64_t i = 0; i < n / QKK; i++)
		q6k_body(&y[i], x + QKK * i, qw + QKK * i);
}

void llm_dequantize_row_q6_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q6_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++) {
		const float d = h2f(x[i].d);
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *sc = x[i].scales;
		for (int nn = 0; nn < QKK; nn += 128, y += 128, ql += 64, qh += 32, sc += 8)
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				y[l] = d * sc[is] * q1;
				y[l + 32] = d * sc[is + 2] * q2;
				y[l + 64] = d * sc[is + 4] * q3;
				y[l + 96] = d * sc[is + 6] * q4;
			}
	}
}

void llm_quantize_row_q8_k(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_k *y = dst;
	for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
		float max = 0, amax = 0;
		for (int j = 0; j < QKK; j++)
			if (fabsf(x[j]) > amax) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		if (!amax) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		const float iscale = -127.f / max;
		for (int j = 0; j < QKK; j++)
			y[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
		for (int j = 0; j < QKK / 16; j++) {
			int sum = 0;
			for (int ii = 0; ii < 16; ii++)
				sum += y[i].qs[j * 16 + ii];
			y[i].bsums[j] = (int16_t)sum;
		}
		y[i].d = 1 / iscale;
	}
}

void llm_dequantize_row_q8_k(const void *src, float *y, int64_t n)
{
	const struct llm_block_q8_k *x = src;
	for (int64_t i = 0; i < n / QKK; i++)
		for (int j = 0; j < QKK; j++)
			*y++ = x[i].d * x[i].qs[j];
}

/* ================================================================ dispatch */

typedef void (*quant_imatrix_fn)(const float *x, void *dst, int64_t n, const float *qw);

static quant_imatrix_fn imatrix_fn(enum llm_dtype t)
{
	switch (t) {
	case LLM_Q4_0: return quantize_q4_0_imatrix;
	case LLM_Q4_1: return quantize_q4_1_imatrix;
	case LLM_Q5_0: return quantize_q5_0_imatrix;
	case LLM_Q5_1: return quantize_q5_1_imatrix;
	case LLM_Q2_K: return quantize_q2_k_imatrix;
	case LLM_Q3_K: return quantize_q3_k_imatrix;
	case LLM_Q4_K: return quantize_q4_k_imatrix;
	case LLM_Q5_K: return quantize_q5_k_imatrix;
	case LLM_Q6_K: return quantize_q6_k_imatrix;
	default: return NULL;
	}
}

int llm_quant_uses_imatrix(enum llm_dtype t)
{
	return imatrix_fn(t) != NULL;
}

size_t llm_quantize(enum llm_dtype t, const float *src, void *dst, int64_t nrows,
                    int64_t n_per_row, const float *imatrix)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	size_t rb = llm_row_size(t, n_per_row);
	quant_imatrix_fn fi = imatrix ? imatrix_fn(t) : NULL;

	LLM_ASSERT(tr && tr->from_float && rb);
	for (int64_t r = 0; r < nrows; r++) {
		const float *x = src + r * n_per_row;
		void *y = (char *)dst + r * rb;
		if (fi)
			fi(x, y, n_per_row, imatrix);
		else
			tr->from_float(x, y, n_per_row);
	}
	return (size_t)nrows * rb;
}

/* ================================================================ dot products */

float llm_vec_dot_q4_0(int64_t n, const void *vw, const void *vx)
{
	const struct llm_block_q4_0 *w = vw;
	const struct llm_block_q8_0 *x = vx;
	float sum = 0;
	for (int64_t i = 0; i < n / QK; i++) {
		int s = 0;
		for (int j = 0; j < QK / 2; j++)
			s += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j] +
			     ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + QK / 2];
		sum += s * (h2f(w[i].d) * h2f(x[i].d));
	}
	return sum;
}

float llm_vec_dot_q4_1(int64_t n, const void *vw, const void *vx)
{
	const struct llm_block_q4_1 *w = vw;
	const struct llm_block_q8_1 *x = vx;
	float sum = 0;
	for (int64_t i = 0; i < n / QK; i++) {
		int s = 0;
		for (int j = 0; j < QK / 2; j++)
			s += (w[i].qs[j] & 0xF) * x[i].qs[j] +
			     (w[i].qs[j] >> 4) * x[i].qs[j + QK / 2];
		sum += s * (h2f(w[i].d) * h2f(x[i].d)) + h2f(w[i].m) * h2f(x[i].s);
	}
	return sum;
}

float llm_vec_dot_q5_0(int64_t n, const void *vw, const void *vx)
{
	const struct llm_block_q5_0 *w = vw;
	const struct llm_block_q8_0 *x = vx;
	float sum = 0;
	for (int64_t i = 0; i < n / QK; i++) {
		uint32_t qh;
		int s = 0;
		memcpy(&qh, w[i].qh, 4);
		for (int j = 0; j < QK / 2; j++) {
			int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
			s += (((w[i].qs[j] & 0xF) | h0) - 16) * x[i].qs[j] +
			     (((w[i].qs[j] >> 4) | h1) - 16) * x[i].qs[j + QK / 2];
		}
		sum += s * (h2f(w[i].d) * h2f(x[i].d));
	}
	return sum;
}

float llm_vec_dot_q5_1(int64_t n, const void *vw, const void *vx)
{
	const struct llm_block_q5_1 *w = vw;
	const struct llm_block_q8_1 *x = vx;
	float sum = 0;
	for (int64_t i = 0; i < n / QK; i++) {
		uint32_t qh;
		int s = 0;
		memcpy(&qh, w[i].qh, 4);
		for (int j = 0; j < QK / 2; j++) {
			int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
			s += ((w[i].qs[j] & 0xF) | h0) * x[i].qs[j] +
			     ((w[i].qs[j] >> 4) | h1) * x[i].qs[j + QK / 2];
		}
		sum += s * (h2f(w[i].d) * h2f(x[i].d)) + h2f(w[i].m) * h2f(x[i].s);
	}
	return sum;
}

float llm_vec_dot_q8_0(int64_t n, const void *vw, const void *vx)
{
	const struct llm_block_q8_0 *w = vw;
	const struct llm_block_q8_0 *x = vx;
	float sum = 0;
	for (int64_t i = 0; i < n / QK; i++) {
		int s = 0;
		for (int j = 0; j < QK; j++)
			s += w[i].qs[j] * x[i].qs[j];
		sum += s * (h2f(w[i].d) * h2f(x[i].d));
	}
	return sum;
}

/*
 * k-quants: every type reduces to 16 groups of 16 with an integer scale
 * sc[j], unsigned quants u and an offset: w = d * sc[j] * u - c[j], where
 * c[j] is dmin * m[j] (types with a minimum) or d * sc[j] * off (q3_k's
 * 4, q6_k's 32).  Against q8_k (x = dx * q):
 *   dot = dx * (d * sum_j sc[j] * sum(u q) - sum_j c[j] * bsum[j]).
 */
struct kgroups {
	uint8_t u[QKK];
	int sc[16];
	float d;          /* multiplies sc */
	float c[16];      /* per-group offsets */
};

static void kgroups_q2_k(const struct llm_block_q2_k *b, struct kgroups *g)
{
	const uint8_t *q = b->qs;
	int k = 0;
	g->d = h2f(b->d);
	for (int j = 0; j < 16; j++) {
		g->sc[j] = b->scales[j] & 0xF;
		g->c[j] = h2f(b->dmin) * (b->scales[j] >> 4);
	}
	for (int nn = 0; nn < QKK; nn += 128, q += 32)
		for (int shift = 0; shift < 8; shift += 2)
			for (int l = 0; l < 32; l++)
				g->u[k++] = (q[l] >> shift) & 3;
}

static void kgroups_q3_k(const struct llm_block_q3_k *b, struct kgroups *g)
{
	const uint8_t *q = b->qs;
	int8_t sc[16];
	int k = 0, bit = 0;
	llm_q3k_scales(b->scales, sc);
	g->d = h2f(b->d);
	for (int j = 0; j < 16; j++) {
		g->sc[j] = sc[j];
		g->c[j] = g->d * sc[j] * 4;
	}
	for (int nn = 0; nn < QKK; nn += 128, q += 32)
		for (int shift = 0; shift < 8; shift += 2, bit++)
			for (int l = 0; l < 32; l++)
				g->u[k++] = (uint8_t)(((q[l] >> shift) & 3) +
				                      ((b->hmask[l] >> bit) & 1) * 4);
}

static void kgroups_q45_k(uint16_t dh, uint16_t dminh, const uint8_t *scales,
                          struct kgroups *g)
{
	g->d = h2f(dh);
	for (int j = 0; j < 8; j++) {
		uint8_t sc, m;
		llm_q4k_scale_min(j, scales, &sc, &m);
		g->sc[2 * j] = g->sc[2 * j + 1] = sc;
		g->c[2 * j] = g->c[2 * j + 1] = h2f(dminh) * m;
	}
}

static void kgroups_q4_k(const struct llm_block_q4_k *b, struct kgroups *g)
{
	kgroups_q45_k(b->d, b->dmin, b->scales, g);
	for (int j = 0; j < 4; j++)
		for (int l = 0; l < 32; l++) {
			g->u[64 * j + l] = b->qs[32 * j + l] & 0xF;
			g->u[64 * j + 32 + l] = b->qs[32 * j + l] >> 4;
		}
}

static void kgroups_q5_k(const struct llm_block_q5_k *b, struct kgroups *g)
{
	kgroups_q45_k(b->d, b->dmin, b->scales, g);
	for (int j = 0; j < 4; j++)
		for (int l = 0; l < 32; l++) {
			g->u[64 * j + l] = (uint8_t)((b->qs[32 * j + l] & 0xF) +
			                             ((b->qh[l] >> (2 * j)) & 1) * 16);
			g->u[64 * j + 32 + l] = (uint8_t)((b->qs[32 * j + l] >> 4) +
			                                  ((b->qh[l] >> (2 * j + 1)) & 1) * 16);
		}
}

static void kgroups_q6_k(const struct llm_block_q6_k *b, struct kgroups *g)
{
	g->d = h2f(b->d);
	for (int j = 0; j < 16; j++) {
		g->sc[j] = b->scales[j];
		g->c[j] = g->d * b->scales[j] * 32;
	}
	for (int h = 0; h < 2; h++) {
		const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
		uint8_t *u = g->u + 128 * h;
		for (int l = 0; l < 32; l++) {
			u[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
			u[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
			u[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
			u[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
		}
	}
}

static float kgroups_dot(const struct kgroups *g, const struct llm_block_q8_k *x)
{
	int isum = 0;
	float off = 0;
	for (int j = 0; j < 16; j++) {
		int s = 0;
		for (int l = 0; l < 16; l++)
			s += g->u[16 * j + l] * x->qs[16 * j + l];
		isum += g->sc[j] * s;
		off += g->c[j] * x->bsums[j];
	}
	return x->d * (g->d * isum - off);
}

#define KDOT(T)                                                               \
float llm_vec_dot_##T(int64_t n, const void *vw, const void *vx)             \
{                                                                             \
	const struct llm_block_##T *w = vw;                                   \
	const struct llm_block_q8_k *x = vx;                                  \
	struct kgroups g;                                                     \
	float sum = 0;                                                        \
	for (int64_t i = 0; i < n / QKK; i++) {                               \
		kgroups_##T(&w[i], &g);                                       \
		sum += kgroups_dot(&g, &x[i]);                                \
	}                                                                     \
	return sum;                                                           \
}
KDOT(q2_k)
KDOT(q3_k)
KDOT(q4_k)
KDOT(q5_k)
KDOT(q6_k)
