/*
 * tensor.h - element types and tensor views.
 *
 * Types are numbered as ggml numbers them (the values are stored in GGUF
 * files), so the enum is only ever appended to.  Each type is a row in a
 * traits table: block size, bytes per block, and conversions.  A type whose
 * conversions are NULL is known (a GGUF holding it parses and its sizes are
 * validated) but cannot be computed with yet.
 *
 * Shapes follow GGUF: ne[0] is the innermost (contiguous) dimension.  A
 * weight matrix of n_out rows of n_in inputs has ne = {n_in, n_out}.
 */
#ifndef LLMKIT_TENSOR_H
#define LLMKIT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum llm_dtype {
	LLM_F32 = 0, LLM_F16 = 1, LLM_Q4_0 = 2, LLM_Q4_1 = 3,
	LLM_Q5_0 = 6, LLM_Q5_1 = 7, LLM_Q8_0 = 8, LLM_Q8_1 = 9,
	LLM_Q2_K = 10, LLM_Q3_K = 11, LLM_Q4_K = 12, LLM_Q5_K = 13,
	LLM_Q6_K = 14, LLM_Q8_K = 15,
	LLM_IQ2_XXS = 16, LLM_IQ2_XS = 17, LLM_IQ3_XXS = 18, LLM_IQ1_S = 19,
	LLM_IQ4_NL = 20, LLM_IQ3_S = 21, LLM_IQ2_S = 22, LLM_IQ4_XS = 23,
	LLM_I8 = 24, LLM_I16 = 25, LLM_I32 = 26, LLM_I64 = 27, LLM_F64 = 28,
	LLM_IQ1_M = 29, LLM_BF16 = 30,
	LLM_TQ1_0 = 34, LLM_TQ2_0 = 35, LLM_MXFP4 = 39,
	LLM_DTYPE_COUNT = 40,
};

/* Convert n elements (a multiple of block_size) of a row. */
typedef void (*llm_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*llm_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of a row of n weights with n activations quantized to the
 * weight type's vec_dot_type (quant.h). */
typedef float (*llm_vec_dot_fn)(int64_t n, const void *w, const void *x);

struct llm_dtype_traits {
	const char *name;        /* "f32", "q4_k" ...; NULL: unused id */
	int block_size;          /* elements per block */
	size_t type_size;        /* bytes per block */
	bool quantized;
	llm_to_float_fn to_float;      /* NULL: cannot be read yet */
	llm_from_float_fn from_float;  /* NULL: cannot be written yet */
	/* Quantized weight types: the reference dot product and the format
	 * activations are quantized to for it (LLM_Q8_0, LLM_Q8_1, LLM_Q8_K). */
	llm_vec_dot_fn vec_dot;
	int vec_dot_type;
};

/* Traits of a dtype; NULL when t is not a known type id. */
const struct llm_dtype_traits *llm_dtype_traits(int t);
const char *llm_dtype_name(int t);
/* Parse a name ("f16", "BF16", "q8_0"); returns -1 when unknown. */
int llm_dtype_from_name(const char *name);
/* Bytes of one row of n elements; 0 when n is not a whole number of blocks. */
size_t llm_row_size(enum llm_dtype t, int64_t n);

#define LLM_MAX_DIMS 4

struct llm_tensor {
	const char *name;
	enum llm_dtype type;
	int n_dims;
	int64_t ne[LLM_MAX_DIMS];  /* elements per dim, ne[0] innermost */
	size_t nbytes;
	void *data;                /* backend memory (host memory on the CPU) */
};

int64_t llm_tensor_nelements(const struct llm_tensor *t);
/* Bytes of one row (ne[0] elements). */
size_t llm_tensor_row_size(const struct llm_tensor *t);

/* Scalar conversions (IEEE half and bfloat16, round to nearest even). */
float llm_f16_to_f32(uint16_t h);
uint16_t llm_f32_to_f16(float f);
float llm_bf16_to_f32(uint16_t h);
uint16_t llm_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
