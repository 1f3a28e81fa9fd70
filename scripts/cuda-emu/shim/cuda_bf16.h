/* A stand-in for cuda_bf16.h (scripts/cuda-emu). */
#ifndef CUDA_EMU_BF16_H
#define CUDA_EMU_BF16_H

#include "cuda_runtime.h"

struct __nv_bfloat16 { unsigned short bits; };

static inline float __bfloat162float(__nv_bfloat16 h)
{
	return __uint_as_float((uint32_t)h.bits << 16);
}

static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
	uint32_t x = __float_as_uint(f);
	if ((x & 0x7fffffff) > 0x7f800000)
		return __nv_bfloat16{ (unsigned short)((x >> 16) | 0x40) };
	return __nv_bfloat16{ (unsigned short)((x + 0x7fff + ((x >> 16) & 1)) >> 16) };
}

#endif
