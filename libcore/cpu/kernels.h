/*
 * kernels.h - the CPU backend's inner loops (internal).
 *
 * One table per instruction set; "scalar" is the plain reference the SIMD
 * tables are tested against.  The table is picked once at startup from what
 * the CPU supports (LLMKIT_CPU=scalar|avx2 caps the choice).
 */
#ifndef LLMKIT_CPU_KERNELS_H
#define LLMKIT_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "llmkit/tensor.h"

/*
 * Rows kernel (matrix times a few vectors): for rows r in [r0, r1) of w
 * (row_bytes apart, n_in elements each) and tokens t < n_tok:
 *     y[t * ldy + r] = dot(w row r, x + t * ldx)
 * Reads each weight row once for all the tokens.
 */
typedef void (*llm_rows_fn)(const void *w, size_t row_bytes, int64_t n_in,
                            int64_t r0, int64_t r1, const float *x,
                            int64_t ldx, int n_tok, float *y, int64_t ldy);

/*
 * The same for quantized weights with activations already quantized to
 * the weight type's vec_dot_type (quant.h): token t's row of blocks is at
 * (char *)xq + t * xq_stride.  The backend quantizes a batch's activations
 * once per matmul and hands every thread the same blocks; rows[] of a
 * quantized type does both steps itself (for callers with float rows).
 */
typedef void (*llm_qrows_fn)(const void *w, size_t row_bytes, int64_t n_in,
                             int64_t r0, int64_t r1, const void *xq,
                             size_t xq_stride, int n_tok, float *y, int64_t ldy);

struct llm_cpu_kernels {
	const char *isa;
	llm_rows_fn rows[LLM_DTYPE_COUNT];   /* NULL: dtype not supported */
	/* quantized weights (qkernels.c): per weight dtype, and activation
	 * quantizers per vec_dot_type (LLM_Q8_0, LLM_Q8_1, LLM_Q8_K) */
	llm_qrows_fn qrows[LLM_DTYPE_COUNT];
	llm_from_float_fn quantize_x[LLM_DTYPE_COUNT];
	const char *qisa;                    /* "scalar", "avx2", "avx512vnni" */
	/* Attention over one block of one KV head (layout in kvcache.h, both
	 * slot-major): out[o] = scale * sum_d q[d] * kb[o * hd + d] for o < nb,
	 * and acc[d] += sum_o p[o] * vb[o * hd + d].  qk returns the largest
	 * score it wrote. */
	float (*qk)(const float *q, const float *kb, int hd, int nb, float scale,
	            float *out);
	void (*pv)(float *acc, const float *p, const float *vb, int hd, int nb);
	/* the same over an f16 cache */
	float (*qk16)(const float *q, const uint16_t *kb, int hd, int nb,
	              float scale, float *out);
	void (*pv16)(float *acc, const float *p, const uint16_t *vb, int hd, int nb);
	/* x[i] = exp(x[i] - mx) for i < n; returns their sum (softmax) */
	float (*exp_sum)(float *x, int n, float mx);
	/* g[i] = silu(g[i]) * u[i] */
	void (*swiglu)(float *g, const float *u, int64_t n);
};

/* Fill a table's quantized entries for its ISA (qkernels.c). */
void llm_cpu_quant_register(struct llm_cpu_kernels *k);

/* The table for an ISA name ("scalar", "avx2", "avx512"); NULL if this CPU
 * cannot run it. */
const struct llm_cpu_kernels *llm_cpu_kernels_for(const char *isa);
/* The best table for this CPU (respecting LLMKIT_CPU). */
const struct llm_cpu_kernels *llm_cpu_kernels(void);

#endif
