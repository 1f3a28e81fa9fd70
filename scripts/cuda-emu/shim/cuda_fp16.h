/* A stand-in for cuda_fp16.h (scripts/cuda-emu): halves as their bits,
 * conversions rounding to nearest even as the device's do. */
#ifndef CUDA_EMU_FP16_H
#define CUDA_EMU_FP16_H

#include "cuda_runtime.h"

struct __half { unsigned short bits; };

static inline float __half2float(__half h)
{
	uint32_t s = (uint32_t)(h.bits & 0x8000) << 16, e = (h.bits >> 10) & 0x1f;
	uint32_t m = h.bits & 0x3ff, u;
	if (e == 0x1f) {
		u = s | 0x7f800000 | (m << 13);
	} else if (e) {
		u = s | ((e + 112) << 23) | (m << 13);
	} else if (!m) {
		u = s;
	} else {  /* subnormal: m * 2^-24 */
		float f = (float)m * 5.9604644775390625e-8f;
		return s ? -f : f;
	}
	return __uint_as_float(u);
}

static inline __half __float2half_rn(float f)
{
	uint32_t x = __float_as_uint(f), s = (x >> 16) & 0x8000, r;
	x &= 0x7fffffff;
	if (x > 0x7f800000)
		r = 0x7e00;                             /* NaN */
	else if (x >= 0x477ff000)
		r = 0x7c00;                             /* >= 65520: inf */
	else if (x >= 0x38800000)                      /* normal */
		r = (x + 0xfff + ((x >> 13) & 1) - 0x38000000) >> 13;
	else if (x < 0x33000000)                       /* below 2^-25: zero */
		r = 0;
	else {                                         /* subnormal */
		uint32_t m = (x & 0x7fffff) | 0x800000, sh = 126 - (x >> 23);
		uint32_t rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
		r = m >> sh;
		if (rem > half || (rem == half && (r & 1)))
			r++;
	}
	return __half{ (unsigned short)(s | r) };
}

static inline __half __ushort_as_half(unsigned short u) { return __half{ u }; }
static inline unsigned short __half_as_ushort(__half h) { return h.bits; }

#endif
