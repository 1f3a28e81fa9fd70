/*
 * backend.h - the compute interface the forward pass runs on.
 *
 * A backend is a table of functions over its own memory (host memory for
 * the CPU; device memory for CUDA): allocation, copies, and the op set of a
 * Llama block over a batch of n token rows.  The CPU backend is always
 * present and is the reference every other backend's ops are tested
 * against.  Row-major throughout: an activation of n tokens by dim is
 * n * dim floats, token after token.
 */
#ifndef LLMKIT_BACKEND_H
#define LLMKIT_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_backend;
struct llm_rope;
struct llm_kv_params;

/*
 * Attention of n query tokens over a paged KV cache layer (laid out as
 * kvcache.h says: per block and KV head, keys dimension-major, values
 * slot-major).  Token i sits at position pos[i] of a sequence whose
 * positions 0..pos[i] are in the blocks table[i][0], table[i][1], ...
 * Query heads share KV heads in groups (GQA): head h reads KV head
 * h / (n_head / n_head_kv).
 */
struct llm_attn_batch {
	int n_tokens;
	int n_head, n_head_kv, head_dim;
	float scale;                  /* usually 1/sqrt(head_dim) */
	const int32_t *pos;           /* (n_tokens) */
	const int32_t *const *table;  /* (n_tokens) block table of each token's sequence */
	int block_size;
	int n_blocks;                 /* blocks in the cache (its layout needs it) */
	enum llm_dtype kv_type;       /* LLM_F32 or LLM_F16 */
	const void *k, *v;            /* this layer's cache */
};

/*
 * LoRA deltas over a segment of token rows that share an adapter (the SGMV
 * idea): for each row t of the segment,  y[t] += scale * b (a x[t]),  with
 * a the rank x n_in down-projection and b the n_out x rank up-projection,
 * both row-major f32 as PEFT stores lora_A / lora_B.  The rows are
 * t0 .. t0 + n - 1, or with a rows list the n rows it names (the tokens of
 * one adapter scattered through a batch: the kernel gathers them, so the
 * adapter's matrices are read once for all of them).
 */
struct llm_lora_seg {
	int t0, n;
	const float *a;       /* (rank x n_in) */
	const float *b;       /* (n_out x rank) */
	int rank;
	float scale;
	const int32_t *rows;  /* (n) or NULL: rows t0 .. t0 + n - 1 */
};

/*
 * Causal attention over whole training sequences (not the paged cache):
 * n_seq sequences of seq_len rows each, rows contiguous.  Token i of a
 * sequence attends to the tokens [start[i], i] of its own sequence (start
 * is an index within the sequence: documents packed into one sequence do
 * not see each other).  q is (n x n_head*head_dim), k and v are
 * (n x n_head_kv*head_dim); lse (n x n_head) keeps each row's log-sum-exp
 * of scaled scores for the backward pass.
 */
struct llm_attn_train {
	int n_seq, seq_len;
	int n_head, n_head_kv, head_dim;
	float scale;
	const int32_t *start;         /* (n_seq * seq_len) */
};

/* What llm_backend_ops.topk reports of a row besides its candidates:
 * sums in double, of exp((double)(l - max)) and of exp((double)(l * scale -
 * max * scale)) with the float products and differences rounded as float. */
struct llm_topk_stat {
	float max;            /* the largest logit */
	double sum;
	double sum_scaled;
};
/* The most candidates topk takes (sampler.h LLM_CANDS_MAX). */
#define LLM_TOPK_MAX 64

/* Transposition flags of llm_backend_ops.gemm. */
enum llm_gemm_op { LLM_GEMM_N = 0, LLM_GEMM_T = 1 };

struct llm_backend_ops {
	const char *name;
	bool host_memory;     /* backend memory is host memory (no copies needed) */
	void (*free)(struct llm_backend *be);

	/* Memory.  alloc returns NULL when out of memory (no message). */
	void *(*alloc)(struct llm_backend *be, size_t bytes);
	void (*dealloc)(struct llm_backend *be, void *p);
	void (*copy)(struct llm_backend *be, void *dst, const void *src, size_t bytes);
	void (*upload)(struct llm_backend *be, void *dst, const void *host, size_t bytes);
	void (*download)(struct llm_backend *be, void *host, const void *src, size_t bytes);

	/* Whether matmul/get_rows take weights of this dtype. */
	bool (*supports)(struct llm_backend *be, enum llm_dtype t);

	/* out[i] = row ids[i] of w, as floats (embedding lookup). */
	void (*get_rows)(struct llm_backend *be, const struct llm_tensor *w,
	                 const int32_t *ids, int n, float *out);
	/* y (n x w->ne[1]) = x (n x w->ne[0]) . w^T */
	void (*matmul)(struct llm_backend *be, const struct llm_tensor *w,
	               const float *x, float *y, int n);
	/* y = x / rms(x) * w, per row of dim. y may be x. */
	void (*rmsnorm)(struct llm_backend *be, const float *x, const float *w,
	                float *y, int n, int dim, float eps);
	/* y[i][j] += b[j] */
	void (*add_bias)(struct llm_backend *be, float *y, const float *b, int n, int dim);
	/* Rotate the first rope->n_rot dims of each head of each row, in place. */
	void (*rope)(struct llm_backend *be, float *x, const int32_t *pos, int n,
	             int n_head, int head_dim, const struct llm_rope *rope);
	/* Keys and values of token i (rows of n_head_kv * head_dim) into slot
	 * slots[i] of a layer's cache, in the cache's layout and type. */
	void (*kv_store)(struct llm_backend *be, void *k_cache, void *v_cache,
	                 const struct llm_kv_params *kvp, const float *k,
	                 const float *v, const int32_t *slots, int n);
	/* out (n x n_head*head_dim) = softmax(q k^T * scale) v, causal. */
	void (*attention)(struct llm_backend *be, const struct llm_attn_batch *ab,
	                  const float *q, float *out);
	/* g = silu(g) * u */
	void (*swiglu)(struct llm_backend *be, float *g, const float *u, int64_t n);
	/* y += x */
	void (*add)(struct llm_backend *be, float *y, const float *x, int64_t n);
	/* Wait for queued work (no-op on the CPU). */
	void (*synchronize)(struct llm_backend *be);

	/*
	 * Device backends (host_memory false; both NULL on the CPU).  Their
	 * ops take weights - matmul's and get_rows' w->data, rmsnorm's w,
	 * add_bias's b, rope's inv_freq - as the model's host memory and keep
	 * one device copy of each, found by address; index arrays (ids, pos,
	 * slots, the attention batch's pos and tables) are host memory on
	 * every backend.  weight makes the device copy ahead of time (0, or
	 * LLM_ENOMEM when the device is full).  The ops return nothing, so a
	 * device backend keeps its first failure (a device error, out of
	 * memory, a bad index; later ops then do nothing): status returns it
	 * with its message set again, or 0.
	 */
	int (*weight)(struct llm_backend *be, const void *host, size_t bytes);
	int (*status)(struct llm_backend *be);
	/* Free the device copy of the weights at host (made by weight or by an
	 * op), once the work queued before has finished with it, so the host
	 * memory may be freed or reused (an evicted adapter); unknown
	 * addresses are ignored.  weight and forget may be called from any
	 * thread.  NULL on the CPU. */
	void (*forget)(struct llm_backend *be, const void *host);

	/* ------------------------------------------------ LoRA and training
	 * Every op below writes its outputs in a fixed order that does not
	 * depend on the number of threads or on timing, so a training run is
	 * reproducible bit for bit (checkpoint/resume relies on it). */
	/* On a device backend the training ops take weights - matmul_train's
	 * and matmul_bwd's w, rmsnorm_bwd's w, rope_bwd's inv_freq - as host
	 * memory like the forward ops, and pos, start and targets as host
	 * index arrays; every other pointer is the backend's memory. */

	/* y (n x n_out) += the LoRA deltas of each segment (see above), in the
	 * order given where rows overlap.  Only segments without a rows list
	 * may share rows with another segment of the same call. */
	void (*lora_seg)(struct llm_backend *be, const float *x, float *y,
	                 int n_in, int n_out, const struct llm_lora_seg *segs,
	                 int n_segs);
	/* f32 GEMM, row-major: c (m x n) = alpha op(a) op(b) + beta c, with
	 * op(a) m x k and op(b) k x n; lda/ldb/ldc are row strides. */
	void (*gemm)(struct llm_backend *be, enum llm_gemm_op ta,
	             enum llm_gemm_op tb, int m, int n, int k, float alpha,
	             const float *a, int lda, const float *b, int ldb, float beta,
	             float *c, int ldc);
	/* y (n x w->ne[1]) = x . w^T like matmul, but for training: the pieces
	 * depend only on the sizes, so the bits do not depend on the thread
	 * count (matmul sizes its pieces by the threads); non-f32 weights are
	 * dequantized a tile of rows at a time and multiplied in f32. */
	void (*matmul_train)(struct llm_backend *be, const struct llm_tensor *w,
	                     const float *x, float *y, int n);
	/* Backward of matmul for the input: dx (n x w->ne[0]) = beta dx +
	 * dy (n x w->ne[1]) . w, for every dtype matmul takes (non-f32 weights
	 * are converted a block of rows at a time). */
	void (*matmul_bwd)(struct llm_backend *be, const struct llm_tensor *w,
	                   const float *dy, float *dx, int n, float beta);
	/* Backward of rmsnorm (y = x / rms(x) * w): dx += dL/dx; dw (may be
	 * NULL) += dL/dw summed over the n rows. */
	void (*rmsnorm_bwd)(struct llm_backend *be, const float *x, const float *w,
	                    const float *dy, float *dx, float *dw, int n, int dim,
	                    float eps);
	/* Backward of rope: rotate the gradient back (the transposed rotation),
	 * in place. */
	void (*rope_bwd)(struct llm_backend *be, float *dx, const int32_t *pos,
	                 int n, int n_head, int head_dim, const struct llm_rope *rope);
	/* Training attention forward: out and lse (see llm_attn_train). */
	void (*attn_train)(struct llm_backend *be, const struct llm_attn_train *at,
	                   const float *q, const float *k, const float *v,
	                   float *out, float *lse);
	/* Its backward: dq, dk, dv (overwritten) from dout, the saved q, k, v,
	 * out and lse. */
	void (*attn_train_bwd)(struct llm_backend *be,
	                       const struct llm_attn_train *at, const float *q,
	                       const float *k, const float *v, const float *out,
	                       const float *lse, const float *dout, float *dq,
	                       float *dk, float *dv);
	/* h = silu(g) * u (g, u kept); its backward: dg, du from dh. */
	void (*swiglu_fwd)(struct llm_backend *be, const float *g, const float *u,
	                   float *h, int64_t n);
	void (*swiglu_bwd)(struct llm_backend *be, const float *g, const float *u,
	                   const float *dh, float *dg, float *du, int64_t n);
	/* Cross entropy of n rows of logits (n x n_vocab) against targets
	 * (-1: no loss): loss[i] = logsumexp(row) - row[target] (0 without a
	 * target), and the row is replaced by scale * (softmax - onehot), its
	 * gradient (zeros without a target). */
	void (*cross_entropy)(struct llm_backend *be, float *logits,
	                      const int32_t *targets, int n, int n_vocab,
	                      float scale, float *loss);
	/* One AdamW step over n parameters (PyTorch's AdamW: decoupled weight
	 * decay p -= lr wd p, then the bias-corrected Adam update); step >= 1. */
	void (*adamw)(struct llm_backend *be, float *p, const float *g, float *m,
	              float *v, int64_t n, float lr, float beta1, float beta2,
	              float eps, float wd, int64_t step);

	/* ------------------------------------------------ sampling
	 * Candidates of rows of logits without their download (sampler.h,
	 * llm_cands): for each i < n, row rows[i] of logits (n_vocab floats a
	 * row), the k best ids by logit * scale[i] (1 <= k <= LLM_TOPK_MAX, k
	 * <= n_vocab; higher first, equal values: the lower id first; NaN
	 * last) into ids[i * k ..], their logits unscaled into vals[i * k ..],
	 * and st[i]; its sums only where sums[i] (sums NULL: every row; a
	 * backend may leave the others NaN).  rows, scale, sums, ids, vals and
	 * st are host memory.  NULL on backends without it (callers then
	 * download the rows). */
	void (*topk)(struct llm_backend *be, const float *logits, int n_vocab,
	             const int32_t *rows, const float *scale, const uint8_t *sums,
	             int n, int k, int32_t *ids, float *vals,
	             struct llm_topk_stat *st);
};

struct llm_backend {
	const struct llm_backend_ops *ops;
	void *impl;
	int n_threads;
};

/*
 * Create a backend: device "cpu" (or NULL), or "cuda" / "cuda:N" (GPU N,
 * default 0) when built with CUDA.  n_threads <= 0 picks the number of
 * online CPUs.  No device, or a build without CUDA: LLM_ENOTFOUND /
 * LLM_EUNSUPPORTED with a message saying which.
 */
int llm_backend_init(struct llm_backend **out, const char *device, int n_threads);
void llm_backend_free(struct llm_backend *be);

/* The CPU backend itself (tests compare other backends against it). */
int llm_backend_cpu_init(struct llm_backend **out, int n_threads);
/* Instruction set the CPU kernels use: "avx512", "avx2" or "scalar".
 * LLMKIT_CPU=scalar|avx2 in the environment caps it (for tests). */
const char *llm_cpu_isa(void);

/* The CUDA backend on GPU device (libcore/cuda; LLM_EUNSUPPORTED in a
 * build without CUDA), and llm_backend_init's parsing of "cuda[:N]". */
int llm_backend_cuda_init(struct llm_backend **out, int device, int n_threads);
int llm_backend_cuda_open(struct llm_backend **out, const char *device,
                          int n_threads);
/* CUDA devices present: 0 without any, or in a build without CUDA. */
int llm_cuda_device_count(void);
/* Open cuBLAS (the backend does on its first use; it is not linked, see
 * backend-cuda.cu): 0, or LLM_EUNSUPPORTED with the reason.  Needs no GPU. */
int llm_cuda_blas_open(void);
/* Device memory bandwidth by a copy kernel over bytes (0: 1 GiB) read and
 * written, best of reps: bytes moved per second (read + write). */
int llm_cuda_membw(uint64_t bytes, int reps, double *best);
/* cuBLAS peak of the prefill path's product (f16 in, f32 sums), dim^3
 * (0: 8192), best of reps: floating-point operations per second. */
int llm_cuda_gemm_peak(int dim, int reps, double *best);

#ifdef __cplusplus
}
#endif
#endif
