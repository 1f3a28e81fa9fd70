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
