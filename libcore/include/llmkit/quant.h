/*
 * quant.h - block quantization types, bit for bit those of ggml/GGUF.
 *
 * A quantized row is a sequence of blocks; each block holds a fixed number
 * of weights (32, or 256 for the "k-quants") as small integers and one or
 * two half-precision scales.  The layouts below are the ones llama.cpp
 * reads and writes, so a file quantized here loads there and back.
 *
 *   type   block bytes bits/w  value of element i
 *   q4_0    32   18    4.5     d * (q[i] - 8)
 *   q4_1    32   20    5.0     d * q[i] + m
 *   q5_0    32   22    5.5     d * (q[i] - 16)            (5th bit in qh)
 *   q5_1    32   24    6.0     d * q[i] + m
 *   q8_0    32   34    8.5     d * q[i]                   (q signed)
 *   q2_k   256   84    2.625   d*sc[j] * q[i] - dmin*m[j] (16 groups of 16)
 *   q3_k   256  110    3.4375  d*(sc[j]-32) * (q[i] - 4)  (16 groups of 16)
 *   q4_k   256  144    4.5     d*sc[j] * q[i] - dmin*m[j] (8 groups of 32)
 *   q5_k   256  176    5.5     d*sc[j] * q[i] - dmin*m[j] (8 groups of 32)
 *   q6_k   256  210    6.5625  d*sc[j] * (q[i] - 32)      (16 groups of 16)
 *
 * q8_1 and q8_k are the activation formats the dot products take: every
 * weight type names its partner (vec_dot_type in its dtype traits) and the
 * activations are quantized to it on the fly.  q8_1 carries d * sum(q) and
 * q8_k carries the sums of each 16 quants, which the types with an offset
 * or a minimum need.
 *
 * Quantizing: without an importance matrix each type uses ggml's reference
 * rounding (quantize_row_*_ref), so the bytes equal what llama.cpp and the
 * "gguf" Python package produce.  With one (imatrix: for each input column,
 * the mean of x^2 over calibration activations) scales and minimums are
 * chosen by weighted least squares, as ggml's quantize_*_impl do, so the
 * errors land on the columns that matter least.
 */
#ifndef LLMKIT_QUANT_H
#define LLMKIT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LLM_QK 32     /* elements per block of the 32-families */
#define LLM_QK_K 256  /* elements per k-quant super-block */

/* Halves are IEEE binary16 bit patterns (llm_f16_to_f32). */
struct llm_block_q4_0 { uint16_t d; uint8_t qs[16]; };
struct llm_block_q4_1 { uint16_t d, m; uint8_t qs[16]; };
struct llm_block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct llm_block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct llm_block_q8_0 { uint16_t d; int8_t qs[32]; };
struct llm_block_q8_1 { uint16_t d, s; int8_t qs[32]; };   /* s = d * sum(qs) */
struct llm_block_q2_k {
	uint8_t scales[16];   /* low 4 bits scale, high 4 bits min, per 16 */
	uint8_t qs[64];       /* 2-bit quants */
	uint16_t d, dmin;
};
struct llm_block_q3_k {
	uint8_t hmask[32];    /* high bit of each quant */
	uint8_t qs[64];       /* low 2 bits */
	uint8_t scales[12];   /* 16 6-bit scales (offset 32) */
	uint16_t d;
};
struct llm_block_q4_k {
	uint16_t d, dmin;
	uint8_t scales[12];   /* 8 6-bit scales and 8 6-bit mins */
	uint8_t qs[128];
};
struct llm_block_q5_k {
	uint16_t d, dmin;
	uint8_t scales[12];
	uint8_t qh[32];
	uint8_t qs[128];
};
struct llm_block_q6_k {
	uint8_t ql[128];      /* low 4 bits */
	uint8_t qh[64];       /* high 2 bits */
	int8_t scales[16];
	uint16_t d;
};
struct llm_block_q8_k {
	float d;
	int8_t qs[256];
	int16_t bsums[16];    /* sum of each 16 quants */
};

/*
 * Quantize nrows rows of n_per_row floats (a multiple of the block size)
 * into dst; imatrix (n_per_row importances, may be NULL) steers the
 * rounding.  Returns the bytes written.  Types that are not quantized
 * (f32, f16, bf16) are converted.  The caller checks the type is
 * writable (its traits have from_float).
 */
size_t llm_quantize(enum llm_dtype t, const float *src, void *dst, int64_t nrows,
                    int64_t n_per_row, const float *imatrix);
/* Whether llm_quantize uses an importance matrix for this type. */
int llm_quant_uses_imatrix(enum llm_dtype t);

/* Per-type rows, as in the traits table (n elements, whole blocks). */
#define LLM_QUANT_DECL(T)                                                     \
	void llm_quantize_row_##T(const float *src, void *dst, int64_t n);    \
	void llm_dequantize_row_##T(const void *src, float *dst, int64_t n);
LLM_QUANT_DECL(q4_0) LLM_QUANT_DECL(q4_1) LLM_QUANT_DECL(q5_0)
LLM_QUANT_DECL(q5_1) LLM_QUANT_DECL(q8_0) LLM_QUANT_DECL(q8_1)
LLM_QUANT_DECL(q2_k) LLM_QUANT_DECL(q3_k) LLM_QUANT_DECL(q4_k)
LLM_QUANT_DECL(q5_k) LLM_QUANT_DECL(q6_k) LLM_QUANT_DECL(q8_k)
#undef LLM_QUANT_DECL

/*
 * Reference dot products: a weight row of n elements (type T) against an
 * activation row quantized to T's vec_dot_type.  Integer sums per block,
 * scaled and summed in float.  The SIMD kernels of the CPU backend are
 * tested against these.
 */
float llm_vec_dot_q4_0(int64_t n, const void *w, const void *x);
float llm_vec_dot_q4_1(int64_t n, const void *w, const void *x);
float llm_vec_dot_q5_0(int64_t n, const void *w, const void *x);
float llm_vec_dot_q5_1(int64_t n, const void *w, const void *x);
float llm_vec_dot_q8_0(int64_t n, const void *w, const void *x);
float llm_vec_dot_q2_k(int64_t n, const void *w, const void *x);
float llm_vec_dot_q3_k(int64_t n, const void *w, const void *x);
float llm_vec_dot_q4_k(int64_t n, const void *w, const void *x);
float llm_vec_dot_q5_k(int64_t n, const void *w, const void *x);
float llm_vec_dot_q6_k(int64_t n, const void *w, const void *x);

/* The 6-bit scale and min j of a q4_k / q5_k block's scales[12]. */
static inline void llm_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc,
                                     uint8_t *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

/* The 16 signed scales (already minus 32) of a q3_k block. */
void llm_q3k_scales(const uint8_t *packed, int8_t *out);

/* ================================================================ model files */

struct llm_gguf;
struct llm_imatrix;

/* --tensor-type: weights whose name matches the (extended) regular
 * expression get the type; the first match wins. */
struct llm_quant_override {
	const char *pattern;
	int type;
};

/*
 * What to write.  ftype names the file type: a plain type ("q4_0", "q4_k",
 * "q8_0", "f16" ...) or one of llama.cpp's mixes ("q4_k_m", "q5_k_m",
 * "q3_k_m" ...).  Unless pure, the mix rules of llama.cpp's
 * llama_tensor_get_type apply: the output matrix (or the embedding tied
 * to it) at q6_k, value and down projections of some layers at higher
 * precision.  A weight whose rows are not a whole number of the type's
 * blocks falls back to a compatible type (q4_k -> q5_0, q6_k -> q8_0 ...,
 * then f16), with a notice.  Vectors (norms, biases) are copied as they are.
 */
struct llm_quantize_params {
	const char *ftype;
	bool pure;
	struct llm_imatrix *imatrix;            /* NULL: reference rounding */
	const struct llm_quant_override *overrides;
	int n_overrides;
	int output_type, embd_type;             /* -1: by the rules */
	int n_threads;                          /* <= 0: all CPUs */
	/* notices (fallbacks, missing importance) and per-tensor progress */
	void (*notice)(void *user, const char *msg);
	void (*progress)(void *user, int i, int n, const char *name, int from,
	                 int to, uint64_t bytes_in, uint64_t bytes_out);
	void *user;
};

struct llm_quantize_stats {
	uint64_t bytes_in, bytes_out;          /* all tensor data */
	uint64_t n_weights;                    /* elements of 2-D weights */
	uint64_t weight_bytes_in, weight_bytes_out;
	int n_tensors, n_converted, n_fallback;
	int count[LLM_DTYPE_COUNT];            /* tensors written, per type */
};

/* The file type names ftype accepts, NULL-terminated. */
const char *const *llm_quant_ftypes(void);

/* Quantize the model in `in` to out_path ("-": standard output), written
 * atomically (llm_gguf_write_file): a failure leaves nothing behind. */
int llm_quantize_model(struct llm_gguf *in, const char *out_path,
                       const struct llm_quantize_params *p,
                       struct llm_quantize_stats *st);

#ifdef __cplusplus
}
#endif
#endif
