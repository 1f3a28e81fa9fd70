/*
 * cuda-internal.h - what the CUDA backend's files share: the kernel
 * launchers (each returns the launch's cudaError_t, cudaSuccess when it was
 * queued) and their limits.  Included only by .cu files (C++).
 *
 * All launchers queue work on the given stream and never synchronize.
 * Pointers are device memory unless a name says host.
 */
#ifndef LLMKIT_CUDA_INTERNAL_H
#define LLMKIT_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "llmkit/tensor.h"

/* Token rows a matmul takes through the matvec kernels (weights streamed
 * once, dequantized in registers); more go to cuBLAS. */
#define CUDA_MV_MAX 8
/* Largest head dimension the attention kernel takes. */
#define CUDA_ATTN_MAX_HD 256

/* Whether the kernels below take weights of type t. */
bool cuda_type_supported(enum llm_dtype t);

/* y (n x n_out) = x (n x n_in) . w^T for n <= CUDA_MV_MAX, w of n_out rows
 * of row_bytes in type t. */
cudaError_t cuda_matvec(cudaStream_t s, enum llm_dtype t, const void *w,
                        size_t row_bytes, int n_in, int64_t n_out,
                        const float *x, int n, float *y);
/* rows rows of w (type t), starting at w, as halves (rows x n_in). */
cudaError_t cuda_dequant_f16(cudaStream_t s, enum llm_dtype t, const void *w,
                             size_t row_bytes, int n_in, int64_t rows,
                             void *out);
/* out[i] = row ids[i] of w as floats (n_in each). */
cudaError_t cuda_get_rows(cudaStream_t s, enum llm_dtype t, const void *w,
                          size_t row_bytes, int n_in, const int32_t *ids,
                          int n, float *out);
/* n floats to halves (to_bf16: bfloat16) */
cudaError_t cuda_f32_to_half(cudaStream_t s, const float *x, void *out,
                             int64_t n, bool to_bf16);

cudaError_t cuda_rmsnorm(cudaStream_t s, const float *x, const float *w,
                         float *y, int n, int dim, float eps);
cudaError_t cuda_add_bias(cudaStream_t s, float *y, const float *b, int n,
                          int dim);
/* pos: device; inv_freq: device (n_rot/2); kind: 0 NORM, 1 NEOX */
cudaError_t cuda_rope(cudaStream_t s, float *x, const int32_t *pos, int n,
                      int n_head, int head_dim, int n_rot, int kind,
                      const float *inv_freq, float mscale);
cudaError_t cuda_kv_store(cudaStream_t s, void *k_cache, void *v_cache,
                          bool f16, int n_head_kv, int head_dim,
                          int block_size, int n_blocks, const float *k,
                          const float *v, const int32_t *slots, int n);
cudaError_t cuda_swiglu(cudaStream_t s, float *g, const float *u, int64_t n);
cudaError_t cuda_add(cudaStream_t s, float *y, const float *x, int64_t n);

/*
 * Attention of n tokens: token i at position pos[i] reads the blocks
 * blocks[tok_off[i]], blocks[tok_off[i] + 1] ... (pos[i] / block_size + 1
 * of them).  Softmax online (running max and sum), so any length fits.
 * Two kernels, each launched once for the whole batch:
 *   - singles (decode): one thread block per (listed token, query head),
 *     every sequence in one launch;
 *   - tiles (prefill): a tile is up to CUDA_ATTN_TILE tokens with one
 *     block table (consecutive in the batch), given as (first token,
 *     count, largest position); one thread block per (tile, query head)
 *     reads each key and value once into shared memory for all of them.
 */
#define CUDA_ATTN_TILE 16
struct cuda_attn_args {
	int n_tokens, n_head, n_head_kv, head_dim;
	float scale;
	int block_size, n_blocks;
	bool f16;
	const void *k, *v;
	const int32_t *pos, *tok_off, *blocks;
	const int32_t *singles;   /* (n_singles) token indices */
	const int32_t *tiles;     /* (3 * n_tiles) */
	int n_singles, n_tiles;
	const float *q;
	float *out;
};
cudaError_t cuda_attention(cudaStream_t s, const struct cuda_attn_args *a);

/*
 * Candidates of n rows of logits (backend.h topk), one block per row:
 * args holds the n row indices, then the n scales' bits (int32 each); ids
 * and vals are n x k, st n.  k <= CUDA_TOPK_MAX and k <= n_vocab.
 */
#define CUDA_TOPK_MAX 64
struct llm_topk_stat;
cudaError_t cuda_topk(cudaStream_t s, const float *logits, int n_vocab,
                      const int32_t *args, int n, int k, int32_t *ids,
                      float *vals, struct llm_topk_stat *st);

/*
 * LoRA deltas over segments (the SGMV idea, backend.h lora_seg), in two
 * launches over a list of work items, each up to CUDA_LORA_TOK rows of one
 * segment:
 *   shrink: t[toff + i * rank + k] = scale * (a[k] . x[row i])
 *   expand: y[row i] += b t[toff + i * rank ...]
 * The items of one launch must not share a row of y (each y element is
 * written by one thread); t holds every segment's intermediates apart
 * (toff), so the launches of several passes may reuse nothing.
 */
#define CUDA_LORA_TOK 8
/* Largest rank the expand kernel takes (its t rows in shared memory). */
#define CUDA_LORA_MAX_RANK 1024
struct cuda_lora_seg {
	const float *a;       /* device (rank x n_in) */
	const float *b;       /* device (n_out x rank) */
	int64_t toff;         /* its intermediates: t[toff ..], n x rank */
	int rank;
	float scale;
	int t0;               /* rows t0 .. without a rows list */
	int rows;             /* offset of its rows list in rows[], -1: none */
};
struct cuda_lora_item {
	int seg;              /* index into segs */
	int i0, n;            /* rows i0 .. i0 + n - 1 of the segment, n <= TOK */
};
cudaError_t cuda_lora_shrink(cudaStream_t s, const float *x, int n_in,
                             const struct cuda_lora_seg *segs,
                             const int32_t *rows,
                             const struct cuda_lora_item *items, int n_items,
                             float *t);
/* max_rank: the largest rank among the items' segments (shared memory). */
cudaError_t cuda_lora_expand(cudaStream_t s, const float *t, float *y, int n_out,
                             const struct cuda_lora_seg *segs,
                             const int32_t *rows,
                             const struct cuda_lora_item *items, int n_items,
                             int max_rank);

/* Copy kernel for the bandwidth measurement of the benchmark. */
cudaError_t cuda_copy_kernel(cudaStream_t s, const void *src, void *dst,
                             size_t bytes);

/* ---------------------------------------------------------------- training
 * (kernels-train.cu; backend.h's training ops) */

/* Longest training sequence the attention kernels take (a row's scores
 * sit in shared memory). */
#define CUDA_ATTN_TRAIN_MAX_T 16384

/* r: n floats of scratch (each row's 1/rms); dw may be NULL. */
cudaError_t cuda_rmsnorm_bwd(cudaStream_t s, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *r,
                             int n, int dim, float eps);
cudaError_t cuda_rope_bwd(cudaStream_t s, float *x, const int32_t *pos, int n,
                          int n_head, int head_dim, int n_rot, int kind,
                          const float *inv_freq, float mscale);

/* llm_attn_train's sizes with device pointers; D: n * n_head floats of
 * scratch for the backward (unused by the forward). */
struct cuda_attn_train_args {
	int n_seq, seq_len, n_head, n_head_kv, head_dim;
	float scale;
	const int32_t *start;
	const float *q, *k, *v;
	float *out, *lse;                      /* forward: written */
	const float *dout;                     /* backward (out, lse read) */
	float *dq, *dk, *dv, *D;
};
bool cuda_attn_train_fits(int seq_len, int head_dim);
cudaError_t cuda_attn_train(cudaStream_t s, const struct cuda_attn_train_args *a);
cudaError_t cuda_attn_train_bwd(cudaStream_t s, const struct cuda_attn_train_args *a);

cudaError_t cuda_swiglu_fwd(cudaStream_t s, const float *g, const float *u,
                            float *h, int64_t n);
cudaError_t cuda_swiglu_bwd(cudaStream_t s, const float *g, const float *u,
                            const float *dh, float *dg, float *du, int64_t n);
/* targets: device */
cudaError_t cuda_cross_entropy(cudaStream_t s, float *logits, const int32_t *targets,
                               int n, int n_vocab, float scale, float *loss);
/* decay = 1 - lr wd, step_size = lr / (1 - beta1^t), bc2_sqrt =
 * sqrt(1 - beta2^t), computed by the caller as the CPU backend does. */
cudaError_t cuda_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v,
                       int64_t n, float beta1, float beta2, float eps, float decay,
                       float step_size, float bc2_sqrt);

#endif
