/* tensor.c - the dtype traits table and scalar conversions. */
#include <math.h>
#include <string.h>
#include <strings.h>

#include "llmkit/quant.h"
#include "llmkit/tensor.h"

/* ---------------------------------------------------------------- half */

float llm_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	uint32_t bits;
	float f;

	if (exp == 0x1f) {                 /* inf / nan */
		bits = sign | 0x7f800000 | (man << 13);
	} else if (exp != 0) {             /* normal */
		bits = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man == 0) {             /* zero */
		bits = sign;
	} else {                           /* subnormal: normalise */
		int e = -1;
		do {
			e++;
			man <<= 1;
		} while (!(man & 0x400));
		bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
	}
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t llm_f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t absx = x & 0x7fffffff;

	if (absx >= 0x7f800000)            /* inf or nan (keep nan quiet) */
		return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
	if (absx >= 0x477ff000)            /* rounds to >= 65520: overflow */
		return (uint16_t)(sign | 0x7c00);
	if (absx < 0x38800000) {           /* below the smallest normal half */
		/* Denormal: scale so the result lands in the low bits, with
		 * round-to-nearest-even done by float addition. */
		float a;
		memcpy(&a, &absx, 4);
		a += 0.5f;                 /* 2^-1: aligns ulp to 2^-24 */
		uint32_t r;
		memcpy(&r, &a, 4);
		return (uint16_t)(sign | (r - 0x3f000000));
	}
	/* Normal: rebias exponent, round mantissa to nearest even. */
	uint32_t mant_odd = (absx >> 13) & 1;
	absx += 0xc8000fff + mant_odd;     /* (15-127)<<23 + rounding bias */
	return (uint16_t)(sign | (absx >> 13));
}

float llm_bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t llm_f32_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffff) > 0x7f800000)  /* nan: keep it a (quiet) nan */
		return (uint16_t)((x >> 16) | 64);
	return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

/* ---------------------------------------------------------------- rows */

static void f32_to_float(const void *src, float *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n)
{
	const uint16_t *s = src;
	for (int64_t i = 0; i < n; i++)
		dst[i] = llm_f16_to_f32(s[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n)
{
	uint16_t *d = dst;
	for (int64_t i = 0; i < n; i++)
		d[i] = llm_f32_to_f16(src[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
	const uint16_t *s = src;
	for (int64_t i = 0; i < n; i++)
		dst[i] = llm_bf16_to_f32(s[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n)
{
	uint16_t *d = dst;
	for (int64_t i = 0; i < n; i++)
		d[i] = llm_f32_to_bf16(src[i]);
}

/* ---------------------------------------------------------------- table */

#define QK 256  /* k-quant super-block */

static const struct llm_dtype_traits traits[LLM_DTYPE_COUNT] = {
	[LLM_F32]  = { "f32",  1, 4, false, f32_to_float, f32_from_float },
	[LLM_F16]  = { "f16",  1, 2, false, f16_to_float, f16_from_float },
	[LLM_BF16] = { "bf16", 1, 2, false, bf16_to_float, bf16_from_float },
#define QROWS(T) llm_dequantize_row_##T, llm_quantize_row_##T
	[LLM_Q4_0] = { "q4_0", 32, 18, true, QROWS(q4_0), llm_vec_dot_q4_0, LLM_Q8_0 },
	[LLM_Q4_1] = { "q4_1", 32, 20, true, QROWS(q4_1), llm_vec_dot_q4_1, LLM_Q8_1 },
	[LLM_Q5_0] = { "q5_0", 32, 22, true, QROWS(q5_0), llm_vec_dot_q5_0, LLM_Q8_0 },
	[LLM_Q5_1] = { "q5_1", 32, 24, true, QROWS(q5_1), llm_vec_dot_q5_1, LLM_Q8_1 },
	[LLM_Q8_0] = { "q8_0", 32, 34, true, QROWS(q8_0), llm_vec_dot_q8_0, LLM_Q8_0 },
	[LLM_Q8_1] = { "q8_1", 32, 36, true, QROWS(q8_1), NULL, 0 },
	[LLM_Q2_K] = { "q2_k", QK, 84, true, QROWS(q2_k), llm_vec_dot_q2_k, LLM_Q8_K },
	[LLM_Q3_K] = { "q3_k", QK, 110, true, QROWS(q3_k), llm_vec_dot_q3_k, LLM_Q8_K },
	[LLM_Q4_K] = { "q4_k", QK, 144, true, QROWS(q4_k), llm_vec_dot_q4_k, LLM_Q8_K },
	[LLM_Q5_K] = { "q5_k", QK, 176, true, QROWS(q5_k), llm_vec_dot_q5_k, LLM_Q8_K },
	[LLM_Q6_K] = { "q6_k", QK, 210, true, QROWS(q6_k), llm_vec_dot_q6_k, LLM_Q8_K },
	[LLM_Q8_K] = { "q8_k", QK, 292, true, QROWS(q8_k), NULL, 0 },
#undef QROWS
	[LLM_IQ2_XXS] = { "iq2_xxs", QK, 66, true, NULL, NULL },
	[LLM_IQ2_XS]  = { "iq2_xs", QK, 74, true, NULL, NULL },
	[LLM_IQ3_XXS] = { "iq3_xxs", QK, 98, true, NULL, NULL },
	[LLM_IQ1_S]   = { "iq1_s", QK, 50, true, NULL, NULL },
	[LLM_IQ4_NL]  = { "iq4_nl", 32, 18, true, NULL, NULL },
	[LLM_IQ3_S]   = { "iq3_s", QK, 110, true, NULL, NULL },
	[LLM_IQ2_S]   = { "iq2_s", QK, 82, true, NULL, NULL },
	[LLM_IQ4_XS]  = { "iq4_xs", QK, 136, true, NULL, NULL },
	[LLM_I8]  = { "i8",  1, 1, false, NULL, NULL },
	[LLM_I16] = { "i16", 1, 2, false, NULL, NULL },
	[LLM_I32] = { "i32", 1, 4, false, NULL, NULL },
	[LLM_I64] = { "i64", 1, 8, false, NULL, NULL },
	[LLM_F64] = { "f64", 1, 8, false, NULL, NULL },
	[LLM_IQ1_M] = { "iq1_m", QK, 56, true, NULL, NULL },
	[LLM_TQ1_0] = { "tq1_0", QK, 54, true, NULL, NULL },
	[LLM_TQ2_0] = { "tq2_0", QK, 66, true, NULL, NULL },
	[LLM_MXFP4] = { "mxfp4", 32, 17, true, NULL, NULL },
};

const struct llm_dtype_traits *llm_dtype_traits(int t)
{
	if (t < 0 || t >= LLM_DTYPE_COUNT || !traits[t].name)
		return NULL;
	return &traits[t];
}

const char *llm_dtype_name(int t)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	return tr ? tr->name : "unknown";
}

int llm_dtype_from_name(const char *name)
{
	for (int t = 0; t < LLM_DTYPE_COUNT; t++)
		if (traits[t].name && !strcasecmp(traits[t].name, name))
			return t;
	return -1;
}

size_t llm_row_size(enum llm_dtype t, int64_t n)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	if (!tr || n < 0 || n % tr->block_size ||
	    (uint64_t)(n / tr->block_size) > SIZE_MAX / tr->type_size)
		return 0;
	return (size_t)(n / tr->block_size) * tr->type_size;
}

int64_t llm_tensor_nelements(const struct llm_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->n_dims; i++)
		n *= t->ne[i];
	return n;
}

size_t llm_tensor_row_size(const struct llm_tensor *t)
{
	return llm_row_size(t->type, t->ne[0]);
}
