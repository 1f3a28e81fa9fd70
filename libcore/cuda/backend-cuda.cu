/*
 * backend-cuda.cu - the CUDA backend: the backend table (backend.h) over
 * device memory on one stream.
 *
 * Memory.  Buffers are plain cudaMalloc (never managed memory), zeroed when
 * made.  Weights are host memory of the model (the forward pass passes
 * w->data, norm weights and biases as the model holds them): the first time
 * a weight is seen, or ahead of time through ops->weight, it is copied to
 * the device once, in its stored type (quantized blocks stay quantized),
 * and found again by its host address.  The model outlives the context
 * that owns this backend, so the addresses stay valid.
 *
 * Index arrays (token ids, positions, KV slots, block tables) are host
 * memory; each role has a pinned staging buffer and a device copy, and an
 * array equal to the last one uploaded for its role is not uploaded again,
 * so a forward pass uploads them once, not once per layer.
 *
 * Errors.  The ops return nothing, so the first failure (a CUDA or cuBLAS
 * error, out of memory included, or a bad index) is kept with its message;
 * later ops do nothing and ops->status reports it.  Nothing aborts.
 *
 * Matrix products: up to CUDA_MV_MAX token rows go to our matvec kernels,
 * which read every weight once and dequantize in registers (quantized
 * weights: up to QUANT_MV_MAX rows, CUDA_MV_MAX a pass); more go to
 * cublasGemmEx with f32 accumulation: f32 weights as they are (f32 math),
 * f16 / bf16 weights on tensor cores with the activations converted to the
 * weight's type, quantized weights dequantized to halves a tile of rows at
 * a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>
#include <pthread.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "cuda/cuda-internal.h"

/*
 * cuBLAS is opened when the first CUDA backend is made, not linked: mapping
 * libcublas costs a process about 200 MiB of resident memory at start,
 * which every program linking libllmcore would pay, CUDA or not.  The five
 * functions used go through this table.
 */
static struct {
	decltype(&cublasCreate_v2) create;
	decltype(&cublasDestroy_v2) destroy;
	decltype(&cublasSetStream_v2) set_stream;
	decltype(&cublasSetMathMode) set_math_mode;
	/* the C entry (C++ also sees an overload taking a cudaDataType) */
	cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
	                          int, int, int, const void *, const void *,
	                          cudaDataType, int, const void *, cudaDataType, int,
	                          const void *, void *, cudaDataType, int,
	                          cublasComputeType_t, cublasGemmAlgo_t);
	char err[256];
} cublas;
static pthread_once_t cublas_once = PTHREAD_ONCE_INIT;

static void cublas_open(void)
{
	static const char *const names[] = {
		LLM_CUDA_LIBDIR "/libcublas.so", "libcublas.so.13", "libcublas.so.12",
		"libcublas.so",
	};
	void *lib = NULL;
	const char *why = "not found";
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !lib; i++) {
		lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
		if (!lib && i == 0)
			why = dlerror();
	}
	if (!lib) {
		snprintf(cublas.err, sizeof(cublas.err), "cannot open cuBLAS: %s", why);
		return;
	}
	*(void **)&cublas.create = dlsym(lib, "cublasCreate_v2");
	*(void **)&cublas.destroy = dlsym(lib, "cublasDestroy_v2");
	*(void **)&cublas.set_stream = dlsym(lib, "cublasSetStream_v2");
	*(void **)&cublas.set_math_mode = dlsym(lib, "cublasSetMathMode");
	*(void **)&cublas.gemm_ex = dlsym(lib, "cublasGemmEx");
	if (!cublas.create || !cublas.destroy || !cublas.set_stream ||
	    !cublas.set_math_mode || !cublas.gemm_ex) {
		snprintf(cublas.err, sizeof(cublas.err),
		         "cuBLAS lacks a function this backend needs");
		cublas.gemm_ex = NULL;
	}
}

#undef cublasCreate
#undef cublasDestroy
#undef cublasSetStream
#define cublasCreate(...) cublas.create(__VA_ARGS__)
#define cublasDestroy(...) cublas.destroy(__VA_ARGS__)
#define cublasSetStream(...) cublas.set_stream(__VA_ARGS__)
#define cublasSetMathMode(...) cublas.set_math_mode(__VA_ARGS__)
#define cublasGemmEx(...) cublas.gemm_ex(__VA_ARGS__)

/* Bytes of halves a dequantized weight tile may take on the cuBLAS path. */
#define TILE_BYTES (64u << 20)
/* Quantized weights stay on the matvec kernels (CUDA_MV_MAX rows a pass,
 * weights read once a pass) up to this many rows: below it, reading the
 * quantized weights a few times costs less than writing and reading them
 * back as halves for cuBLAS. */
#define QUANT_MV_MAX 32

/* A weight's device copy, by host address. */
struct wentry {
	const void *host;
	size_t bytes;
	void *dev;
};

/* A host index array's pinned staging copy and device copy. */
struct staged {
	void *host;            /* pinned, cap bytes */
	void *dev;             /* cap bytes */
	size_t cap, n;         /* n: bytes of the last upload */
	bool valid;            /* host[0..n) equals what dev holds */
	cudaEvent_t done;      /* the last upload from host finished */
	bool pending;
};

enum { ST_IDS, ST_POS, ST_SLOTS, ST_TABLE, ST_TOPK, ST_COUNT };

struct cuda {
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	int status;            /* first failure, 0 if none */
	char msg[512];

	struct wentry *w;      /* open addressing, cap_w a power of two */
	size_t n_w, cap_w;

	struct staged st[ST_COUNT];
	int32_t *table_host;   /* attention table being built */
	size_t table_cap;      /* int32s */

	void *tile;            /* dequantized weights (halves) */
	size_t tile_n;
	void *xh;              /* activations as halves */
	size_t xh_n;
	bool attn_simple;      /* LLMKIT_CUDA_ATTN=simple: no tiled attention */

	/* topk: rows and scales being staged, the results on the device and
	 * their pinned host copy (ids | vals | stats) */
	int32_t *topk_args;
	size_t topk_args_n;    /* int32s */
	void *topk_dev;
	size_t topk_dev_n;
	void *topk_host;
	size_t topk_host_n;
};

static struct cuda *cuda_of(struct llm_backend *be)
{
	return (struct cuda *)be->impl;
}

/* ---------------------------------------------------------------- errors */

static void fail(struct cuda *c, int code, const char *fmt, ...) LLM_PRINTF(3, 4);

static void fail(struct cuda *c, int code, const char *fmt, ...)
{
	if (c->status)
		return;  /* keep the first */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	c->status = code;
}

static int code_of(cudaError_t e)
{
	return e == cudaErrorMemoryAllocation ? LLM_ENOMEM : LLM_EIO;
}

/* Check a CUDA call; on failure record it (out of memory as LLM_ENOMEM)
 * and clear the runtime's last error so it is not reported twice. */
static bool ok_(struct cuda *c, cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return true;
	(void)cudaGetLastError();
	fail(c, code_of(e), "cuda: %s: %s", what, cudaGetErrorString(e));
	return false;
}
#define OK(c, call, what) ok_((c), (call), (what))

static const char *blas_name(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
	case CUBLAS_STATUS_ALLOC_FAILED: return "out of memory";
	case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
	case CUBLAS_STATUS_ARCH_MISMATCH: return "not supported by this GPU";
	case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
	case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
	case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
	case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
	default: return "error";
	}
}

static bool blas_ok(struct cuda *c, cublasStatus_t s, const char *what)
{
	if (s == CUBLAS_STATUS_SUCCESS)
		return true;
	(void)cudaGetLastError();
	fail(c, s == CUBLAS_STATUS_ALLOC_FAILED ? LLM_ENOMEM : LLM_EIO,
	     "cublas: %s: %s (%d)", what, blas_name(s), (int)s);
	return false;
}

int llm_cuda_blas_open(void)
{
	pthread_once(&cublas_once, cublas_open);
	return cublas.gemm_ex ? 0 : llm_error(LLM_EUNSUPPORTED, "device cuda: %s",
	                                      cublas.err);
}

/* cuBLAS opened (once per process), or the reason in c. */
static bool blas_load(struct cuda *c)
{
	pthread_once(&cublas_once, cublas_open);
	if (cublas.gemm_ex)
		return true;
	fail(c, LLM_EUNSUPPORTED, "%s", cublas.err);
	return false;
}

static int cuda_status(struct llm_backend *be)
{
	struct cuda *c = cuda_of(be);
	if (!c->status)
		return 0;
	return llm_error(c->status, "%s", c->msg);
}

/* ---------------------------------------------------------------- memory */

static void *cuda_alloc(struct llm_backend *be, size_t bytes)
{
	struct cuda *c = cuda_of(be);
	void *p = NULL;
	if (!bytes)
		bytes = 1;
	cudaError_t e = cudaMalloc(&p, bytes);
	if (e != cudaSuccess) {
		/* out of memory is the caller's to report (backend.h); other
		 * failures mean the device is gone, and are kept */
		(void)cudaGetLastError();
		if (e != cudaErrorMemoryAllocation)
			fail(c, LLM_EIO, "cuda: cudaMalloc: %s", cudaGetErrorString(e));
		return NULL;
	}
	if (!OK(c, cudaMemsetAsync(p, 0, bytes, c->stream), "cudaMemsetAsync")) {
		cudaFree(p);
		return NULL;
	}
	return p;
}

static void cuda_dealloc(struct llm_backend *be, void *p)
{
	struct cuda *c = cuda_of(be);
	if (!p)
		return;
	/* kernels queued on the stream may still use it */
	cudaStreamSynchronize(c->stream);
	(void)cudaGetLastError();
	OK(c, cudaFree(p), "cudaFree");
}

static void cuda_copy(struct llm_backend *be, void *dst, const void *src, size_t n)
{
	struct cuda *c = cuda_of(be);
	if (c->status || !n)
		return;
	OK(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream),
	   "cudaMemcpyAsync (device to device)");
}

/* The host buffer may be reused as soon as this returns. */
static void cuda_upload(struct llm_backend *be, void *dst, const void *host, size_t n)
{
	struct cuda *c = cuda_of(be);
	if (c->status || !n)
		return;
	if (OK(c, cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, c->stream),
	       "cudaMemcpyAsync (upload)"))
		OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

static void cuda_download(struct llm_backend *be, void *host, const void *src, size_t n)
{
	struct cuda *c = cuda_of(be);
	if (c->status || !n)
		return;
	if (OK(c, cudaMemcpyAsync(host, src, n, cudaMemcpyDeviceToHost, c->stream),
	       "cudaMemcpyAsync (download)"))
		OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

static void cuda_synchronize(struct llm_backend *be)
{
	struct cuda *c = cuda_of(be);
	if (!c->status)
		OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

static bool cuda_supports(struct llm_backend *be, enum llm_dtype t)
{
	(void)be;
	return cuda_type_supported(t);
}

/* Scratch device memory that only grows; NULL (recorded) on failure. */
static void *scratch(struct cuda *c, void **p, size_t *have, size_t need)
{
	if (*have >= need)
		return *p;
	if (*p) {
		/* queued kernels may still read it */
		if (!OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize"))
			return NULL;
		cudaFree(*p);
		*p = NULL;
		*have = 0;
	}
	if (!OK(c, cudaMalloc(p, need), "cudaMalloc (scratch)")) {
		*p = NULL;
		return NULL;
	}
	*have = need;
	return *p;
}

/* ---------------------------------------------------------------- weights */

static size_t hash_ptr(const void *p, size_t cap)
{
	uint64_t h = (uint64_t)(uintptr_t)p;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (size_t)h & (cap - 1);
}

static bool weights_grow(struct cuda *c)
{
	size_t cap = c->cap_w ? 2 * c->cap_w : 256;
	struct wentry *w = (struct wentry *)calloc(cap, sizeof(*w));
	if (!w) {
		fail(c, LLM_ENOMEM, "cuda: out of host memory for the weight table");
		return false;
	}
	for (size_t i = 0; i < c->cap_w; i++) {
		if (!c->w[i].host)
			continue;
		size_t j = hash_ptr(c->w[i].host, cap);
		while (w[j].host)
			j = (j + 1) & (cap - 1);
		w[j] = c->w[i];
	}
	free(c->w);
	c->w = w;
	c->cap_w = cap;
	return true;
}

/* The device copy of bytes of host weights at host, made on first use;
 * NULL (recorded) when it cannot be made. */
static const void *weight(struct cuda *c, const void *host, size_t bytes)
{
	if (c->status)
		return NULL;
	if (!host) {
		fail(c, LLM_EINVAL, "cuda: a weight has no data");
		return NULL;
	}
	if (c->cap_w) {
		for (size_t j = hash_ptr(host, c->cap_w); c->w[j].host;
		     j = (j + 1) & (c->cap_w - 1))
			if (c->w[j].host == host) {
				if (c->w[j].bytes >= bytes)
					return c->w[j].dev;
				fail(c, LLM_EINVAL, "cuda: weight at %p read as %zu bytes, "
				     "uploaded as %zu", host, bytes, c->w[j].bytes);
				return NULL;
			}
	}
	if ((c->n_w + 1) * 2 > c->cap_w && !weights_grow(c))
		return NULL;
	void *dev = NULL;
	cudaError_t e = cudaMalloc(&dev, bytes ? bytes : 1);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		size_t fr = 0, tot = 0;
		if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
			(void)cudaGetLastError();
			fr = tot = 0;
		}
		fail(c, code_of(e), "cuda: cannot place %zu MiB of weights on the device "
		     "(%zu of %zu MiB free): %s", bytes >> 20, fr >> 20, tot >> 20,
		     cudaGetErrorString(e));
		return NULL;
	}
	/* on the stream, so kernels queued after it see it; the model's pages
	 * outlive the copy */
	if (bytes && !OK(c, cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice,
	                                    c->stream), "cudaMemcpyAsync (weights)")) {
		cudaFree(dev);
		return NULL;
	}
	size_t j = hash_ptr(host, c->cap_w);
	while (c->w[j].host)
		j = (j + 1) & (c->cap_w - 1);
	c->w[j].host = host;
	c->w[j].bytes = bytes;
	c->w[j].dev = dev;
	c->n_w++;
	return dev;
}

static int cuda_weight(struct llm_backend *be, const void *host, size_t bytes)
{
	struct cuda *c = cuda_of(be);
	if (!weight(c, host, bytes))
		return cuda_status(be);
	return 0;
}

static const void *tensor_dev(struct cuda *c, const struct llm_tensor *w)
{
	return weight(c, w->data, llm_row_size(w->type, w->ne[0]) * (size_t)w->ne[1]);
}

/* ---------------------------------------------------------------- staging */

/* The device copy of n bytes of host data for role r (uploaded unless the
 * last upload of r was the same bytes); NULL (recorded) on failure. */
static const void *stage(struct cuda *c, int r, const void *host, size_t n)
{
	struct staged *s = &c->st[r];
	if (c->status)
		return NULL;
	if (s->valid && s->n == n && !memcmp(s->host, host, n))
		return s->dev;
	if (s->pending) {
		/* the pinned buffer is still being read by the last upload */
		if (!OK(c, cudaEventSynchronize(s->done), "cudaEventSynchronize"))
			return NULL;
		s->pending = false;
	}
	s->valid = false;
	if (n > s->cap) {
		size_t cap = n < 4096 ? 4096 : 2 * n;
		if (s->dev) {
			/* queued kernels may still read the device copy */
			if (!OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize"))
				return NULL;
			cudaFree(s->dev);
			s->dev = NULL;
		}
		if (s->host)
			cudaFreeHost(s->host);
		s->host = NULL;
		s->cap = 0;
		if (!OK(c, cudaMallocHost(&s->host, cap), "cudaMallocHost (staging)"))
			return NULL;
		if (!OK(c, cudaMalloc(&s->dev, cap), "cudaMalloc (staging)")) {
			cudaFreeHost(s->host);
			s->host = NULL;
			return NULL;
		}
		s->cap = cap;
	}
	memcpy(s->host, host, n);
	/* stream order: kernels queued before still see the old contents */
	if (!OK(c, cudaMemcpyAsync(s->dev, s->host, n, cudaMemcpyHostToDevice,
	                           c->stream), "cudaMemcpyAsync (indices)"))
		return NULL;
	if (!OK(c, cudaEventRecord(s->done, c->stream), "cudaEventRecord"))
		return NULL;
	s->pending = true;
	s->n = n;
	s->valid = true;
	return s->dev;
}

/* ---------------------------------------------------------------- matmul */

static void cuda_matmul(struct llm_backend *be, const struct llm_tensor *w,
                        const float *x, float *y, int n)
{
	struct cuda *c = cuda_of(be);
	const int64_t n_in = w->ne[0], n_out = w->ne[1];
	const size_t rb = llm_row_size(w->type, n_in);
	if (c->status || n < 1)
		return;
	if (!cuda_type_supported(w->type) || !rb || n_in > INT32_MAX ||
	    n_out > INT32_MAX) {
		fail(c, LLM_EUNSUPPORTED, "cuda: matmul over %s: %s weights of %lld x %lld",
		     w->name ? w->name : "a tensor", llm_dtype_name(w->type),
		     (long long)n_out, (long long)n_in);
		return;
	}
	const void *wd = tensor_dev(c, w);
	if (!wd)
		return;
	const bool quant = llm_dtype_traits(w->type)->quantized;
	if (n <= CUDA_MV_MAX || (quant && n <= QUANT_MV_MAX)) {
		for (int i0 = 0; i0 < n; i0 += CUDA_MV_MAX) {
			int m = n - i0 < CUDA_MV_MAX ? n - i0 : CUDA_MV_MAX;
			if (!OK(c, cuda_matvec(c->stream, w->type, wd, rb, (int)n_in, n_out,
			                       x + (int64_t)i0 * n_in, m,
			                       y + (int64_t)i0 * n_out), "matvec kernel"))
				return;
		}
		return;
	}

	/* column-major view: y^T (n_out x n) = W (n_out x n_in) . x^T, where
	 * W is the row-major weight read transposed */
	const float one = 1.0f, zero = 0.0f;
	if (w->type == LLM_F32) {
		blas_ok(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, n,
		                        (int)n_in, &one, wd, CUDA_R_32F, (int)n_in, x,
		                        CUDA_R_32F, (int)n_in, &zero, y, CUDA_R_32F,
		                        (int)n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
		        "cublasGemmEx (f32)");
		return;
	}
	const bool bf = w->type == LLM_BF16;
	const cudaDataType_t ht = bf ? CUDA_R_16BF : CUDA_R_16F;
	void *xh = scratch(c, &c->xh, &c->xh_n, (size_t)n * n_in * 2);
	if (!xh || !OK(c, cuda_f32_to_half(c->stream, x, xh, (int64_t)n * n_in, bf),
	               "conversion kernel"))
		return;
	if (w->type == LLM_F16 || bf) {
		blas_ok(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, n,
		                        (int)n_in, &one, wd, ht, (int)n_in, xh, ht,
		                        (int)n_in, &zero, y, CUDA_R_32F, (int)n_out,
		                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
		        "cublasGemmEx (f16)");
		return;
	}
	/* quantized: a tile of rows dequantized to halves, then its product */
	int64_t rows = (int64_t)(TILE_BYTES / ((size_t)n_in * 2));
	if (rows < 64)
		rows = 64;
	rows &= ~(int64_t)63;
	if (rows > n_out)
		rows = n_out;
	void *tile = scratch(c, &c->tile, &c->tile_n, (size_t)rows * n_in * 2);
	if (!tile)
		return;
	for (int64_t r0 = 0; r0 < n_out; r0 += rows) {
		int64_t nr = n_out - r0 < rows ? n_out - r0 : rows;
		if (!OK(c, cuda_dequant_f16(c->stream, w->type,
		                            (const char *)wd + r0 * rb, rb, (int)n_in, nr,
		                            tile), "dequantize kernel"))
			return;
		if (!blas_ok(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, n,
		                             (int)n_in, &one, tile, CUDA_R_16F, (int)n_in,
		                             xh, CUDA_R_16F, (int)n_in, &zero, y + r0,
		                             CUDA_R_32F, (int)n_out, CUBLAS_COMPUTE_32F,
		                             CUBLAS_GEMM_DEFAULT),
		             "cublasGemmEx (dequantized tile)"))
			return;
	}
}

/* ---------------------------------------------------------------- small ops */

static void cuda_get_rows(struct llm_backend *be, const struct llm_tensor *w,
                          const int32_t *ids, int n, float *out)
{
	struct cuda *c = cuda_of(be);
	const size_t rb = llm_row_size(w->type, w->ne[0]);
	if (c->status || n < 1)
		return;
	if (!cuda_type_supported(w->type) || !rb || w->ne[0] > INT32_MAX) {
		fail(c, LLM_EUNSUPPORTED, "cuda: get_rows over %s weights",
		     llm_dtype_name(w->type));
		return;
	}
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= w->ne[1]) {
			fail(c, LLM_EINVAL, "cuda: row %d of %s is out of range (%lld rows)",
			     ids[i], w->name ? w->name : "a tensor", (long long)w->ne[1]);
			return;
		}
	const void *wd = tensor_dev(c, w);
	const int32_t *d_ids = (const int32_t *)stage(c, ST_IDS, ids, n * sizeof(*ids));
	if (!wd || !d_ids)
		return;
	OK(c, cuda_get_rows(c->stream, w->type, wd, rb, (int)w->ne[0], d_ids, n, out),
	   "get_rows kernel");
}

static void cuda_rmsnorm(struct llm_backend *be, const float *x, const float *w,
                         float *y, int n, int dim, float eps)
{
	struct cuda *c = cuda_of(be);
	if (c->status || n < 1)
		return;
	const float *wd = (const float *)weight(c, w, (size_t)dim * sizeof(float));
	if (wd)
		OK(c, cuda_rmsnorm(c->stream, x, wd, y, n, dim, eps), "rmsnorm kernel");
}

static void cuda_add_bias(struct llm_backend *be, float *y, const float *b, int n,
                          int dim)
{
	struct cuda *c = cuda_of(be);
	if (c->status || n < 1)
		return;
	const float *bd = (const float *)weight(c, b, (size_t)dim * sizeof(float));
	if (bd)
		OK(c, cuda_add_bias(c->stream, y, bd, n, dim), "add_bias kernel");
}

static void cuda_rope(struct llm_backend *be, float *x, const int32_t *pos, int n,
                      int n_head, int head_dim, const struct llm_rope *r)
{
	struct cuda *c = cuda_of(be);
	if (c->status || n < 1)
		return;
	if (r->n_rot < 2 || r->n_rot > head_dim || r->n_rot % 2) {
		fail(c, LLM_EINVAL, "cuda: rope over %d of %d dimensions", r->n_rot,
		     head_dim);
		return;
	}
	const float *fd = (const float *)weight(c, r->inv_freq,
	                                        (size_t)(r->n_rot / 2) * sizeof(float));
	const int32_t *pd = (const int32_t *)stage(c, ST_POS, pos, n * sizeof(*pos));
	if (fd && pd)
		OK(c, cuda_rope(c->stream, x, pd, n, n_head, head_dim, r->n_rot,
		                r->kind == LLM_ROPE_NEOX, fd, r->mscale), "rope kernel");
}

static void cuda_kv_store(struct llm_backend *be, void *k_cache, void *v_cache,
                          const struct llm_kv_params *lp, const float *k,
                          const float *v, const int32_t *slots, int n)
{
	struct cuda *c = cuda_of(be);
	if (c->status || n < 1)
		return;
	if (lp->type != LLM_F32 && lp->type != LLM_F16) {
		fail(c, LLM_EUNSUPPORTED, "cuda: KV cache of %s", llm_dtype_name(lp->type));
		return;
	}
	const int64_t n_slots = (int64_t)lp->n_blocks * lp->block_size;
	for (int i = 0; i < n; i++)
		if (slots[i] < 0 || slots[i] >= n_slots) {
			fail(c, LLM_EINVAL, "cuda: KV slot %d is outside the cache (%lld)",
			     slots[i], (long long)n_slots);
			return;
		}
	const int32_t *sd = (const int32_t *)stage(c, ST_SLOTS, slots, n * sizeof(*slots));
	if (sd)
		OK(c, cuda_kv_store(c->stream, k_cache, v_cache, lp->type == LLM_F16,
		                    lp->n_head_kv, lp->head_dim, lp->block_size,
		                    lp->n_blocks, k, v, sd, n), "kv_store kernel");
}

static void cuda_swiglu(struct llm_backend *be, float *g, const float *u, int64_t n)
{
	struct cuda *c = cuda_of(be);
	if (!c->status)
		OK(c, cuda_swiglu(c->stream, g, u, n), "swiglu kernel");
}

static void cuda_add(struct llm_backend *be, float *y, const float *x, int64_t n)
{
	struct cuda *c = cuda_of(be);
	if (!c->status)
		OK(c, cuda_add(c->stream, y, x, n), "add kernel");
}

/* ---------------------------------------------------------------- attention */

/*
 * The device table: pos[n] | tok_off[n] | blocks | singles | tiles, where
 * the blocks of a run of tokens with one table (one sequence's prefill)
 * appear once, as many as the run's furthest token needs.  A run of two
 * or more tokens goes to the tiled kernel in tiles of CUDA_ATTN_TILE; the
 * rest (decode tokens) to the one-token kernel (cuda-internal.h).
 * LLMKIT_CUDA_ATTN=simple sends every token to the one-token kernel.
 */
static void cuda_attention(struct llm_backend *be, const struct llm_attn_batch *ab,
                           const float *q, float *out)
{
	struct cuda *c = cuda_of(be);
	const int n = ab->n_tokens;
	if (c->status || n < 1)
		return;
	if (ab->kv_type != LLM_F32 && ab->kv_type != LLM_F16) {
		fail(c, LLM_EUNSUPPORTED, "cuda: KV cache of %s", llm_dtype_name(ab->kv_type));
		return;
	}
	if (ab->head_dim < 1 || ab->head_dim > CUDA_ATTN_MAX_HD || ab->n_head_kv < 1 ||
	    ab->n_head % ab->n_head_kv || ab->block_size < 1) {
		fail(c, LLM_EUNSUPPORTED, "cuda: attention of %d heads over %d KV heads "
		     "of %d dimensions (at most %d)", ab->n_head, ab->n_head_kv,
		     ab->head_dim, CUDA_ATTN_MAX_HD);
		return;
	}
	/* worst case: every token its own table, a single and a tile */
	size_t need = 6 * (size_t)n;
	for (int i = 0; i < n; i++) {
		if (ab->pos[i] < 0) {
			fail(c, LLM_EINVAL, "cuda: attention at position %d", ab->pos[i]);
			return;
		}
		need += (size_t)ab->pos[i] / ab->block_size + 1;
	}
	if (need > c->table_cap) {
		int32_t *t = (int32_t *)realloc(c->table_host, need * 2 * sizeof(int32_t));
		if (!t) {
			fail(c, LLM_ENOMEM, "cuda: out of host memory for block tables");
			return;
		}
		c->table_host = t;
		c->table_cap = need * 2;
	}
	int32_t *pos = c->table_host, *tok_off = pos + n, *blocks = tok_off + n;
	/* built apart, appended after the blocks */
	int32_t *singles = c->table_host + (need - 4 * (size_t)n);
	int32_t *tiles = singles + n;
	int n_singles = 0, n_tiles = 0;
	size_t nb = 0;
	memcpy(pos, ab->pos, n * sizeof(int32_t));
	/* a run of tokens with one table (one sequence's prefill) shares one
	 * copy, as long as the run's furthest position needs */
	for (int i0 = 0, i1; i0 < n; i0 = i1) {
		int max_pos = ab->pos[i0];
		for (i1 = i0 + 1; i1 < n && ab->table[i1] == ab->table[i0]; i1++)
			if (ab->pos[i1] > max_pos)
				max_pos = ab->pos[i1];
		int nblk = max_pos / ab->block_size + 1;
		for (int i = i0; i < i1; i++)
			tok_off[i] = (int32_t)nb;
		if (i1 - i0 >= 2 && !c->attn_simple) {
			for (int t0 = i0; t0 < i1; t0 += CUDA_ATTN_TILE) {
				int t1 = t0 + CUDA_ATTN_TILE < i1 ? t0 + CUDA_ATTN_TILE : i1, mp = 0;
				for (int i = t0; i < t1; i++)
					mp = ab->pos[i] > mp ? ab->pos[i] : mp;
				tiles[3 * n_tiles] = t0;
				tiles[3 * n_tiles + 1] = t1 - t0;
				tiles[3 * n_tiles + 2] = mp;
				n_tiles++;
			}
		} else {
			for (int i = i0; i < i1; i++)
				singles[n_singles++] = i;
		}
		for (int b = 0; b < nblk; b++) {
			int32_t blk = ab->table[i0][b];
			if (blk < 0 || blk >= ab->n_blocks) {
				fail(c, LLM_EINVAL, "cuda: block %d of a sequence table is "
				     "outside the cache (%d blocks)", blk, ab->n_blocks);
				return;
			}
			blocks[nb++] = blk;
		}
	}
	if (nb > INT32_MAX) {
		fail(c, LLM_ERANGE, "cuda: attention tables too large");
		return;
	}
	/* singles and tiles right after the blocks (memmove: the regions may
	 * overlap when the blocks fill most of the buffer) */
	int32_t *tail = blocks + nb;
	memmove(tail, singles, n_singles * sizeof(int32_t));
	memmove(tail + n_singles, tiles, 3 * (size_t)n_tiles * sizeof(int32_t));
	size_t total = 2 * (size_t)n + nb + n_singles + 3 * (size_t)n_tiles;
	const int32_t *dev = (const int32_t *)stage(c, ST_TABLE, c->table_host,
	                                            total * sizeof(int32_t));
	if (!dev)
		return;
	struct cuda_attn_args a;
	a.n_tokens = n;
	a.n_head = ab->n_head;
	a.n_head_kv = ab->n_head_kv;
	a.head_dim = ab->head_dim;
	a.scale = ab->scale;
	a.block_size = ab->block_size;
	a.n_blocks = ab->n_blocks;
	a.f16 = ab->kv_type == LLM_F16;
	a.k = ab->k;
	a.v = ab->v;
	a.pos = dev;
	a.tok_off = dev + n;
	a.blocks = dev + 2 * n;
	a.singles = a.blocks + nb;
	a.n_singles = n_singles;
	a.tiles = a.singles + n_singles;
	a.n_tiles = n_tiles;
	a.q = q;
	a.out = out;
	OK(c, cuda_attention(c->stream, &a), "attention kernel");
}

/* ---------------------------------------------------------------- sampling */

/*
 * Candidates of rows of logits: one kernel for all rows, one copy of the
 * results (k ids, k logits and a llm_topk_stat a row) back to the host.
 * The sums cost the GPU little: every row gets them (sums ignored).
 */
static void cuda_topk_op(struct llm_backend *be, const float *logits, int n_vocab,
                         const int32_t *rows, const float *scale,
                         const uint8_t *sums, int n, int k, int32_t *ids,
                         float *vals, struct llm_topk_stat *st)
{
	struct cuda *c = cuda_of(be);
	(void)sums;
	if (c->status || n < 1)
		return;
	if (k < 1 || k > CUDA_TOPK_MAX || k > n_vocab) {
		fail(c, LLM_EINVAL, "cuda: topk of %d candidates over rows of %d "
		     "(1 to %d)", k, n_vocab, CUDA_TOPK_MAX);
		return;
	}
	if ((size_t)2 * n > c->topk_args_n) {
		int32_t *a = (int32_t *)realloc(c->topk_args, 4 * (size_t)n * sizeof(int32_t));
		if (!a) {
			fail(c, LLM_ENOMEM, "cuda: out of host memory for topk rows");
			return;
		}
		c->topk_args = a;
		c->topk_args_n = 4 * (size_t)n;
	}
	for (int i = 0; i < n; i++) {
		if (rows[i] < 0) {
			fail(c, LLM_EINVAL, "cuda: topk of row %d", rows[i]);
			return;
		}
		c->topk_args[i] = rows[i];
		memcpy(&c->topk_args[n + i], &scale[i], sizeof(float));
	}
	const size_t idv = (size_t)n * k * sizeof(int32_t);   /* ids, then vals */
	const size_t bytes = 2 * idv + (size_t)n * sizeof(struct llm_topk_stat);
	const int32_t *dargs = (const int32_t *)stage(c, ST_TOPK, c->topk_args,
	                                              2 * (size_t)n * sizeof(int32_t));
	char *dout = (char *)scratch(c, &c->topk_dev, &c->topk_dev_n, bytes);
	if (!dargs || !dout)
		return;
	if (bytes > c->topk_host_n) {
		if (c->topk_host)
			cudaFreeHost(c->topk_host);
		c->topk_host = NULL;
		c->topk_host_n = 0;
		if (!OK(c, cudaMallocHost(&c->topk_host, 2 * bytes), "cudaMallocHost (topk)"))
			return;
		c->topk_host_n = 2 * bytes;
	}
	char *h = (char *)c->topk_host;
	if (!OK(c, cuda_topk(c->stream, logits, n_vocab, dargs, n, k, (int32_t *)dout,
	                     (float *)(dout + idv),
	                     (struct llm_topk_stat *)(dout + 2 * idv)), "topk kernel") ||
	    !OK(c, cudaMemcpyAsync(h, dout, bytes, cudaMemcpyDeviceToHost, c->stream),
	        "cudaMemcpyAsync (topk)") ||
	    !OK(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize"))
		return;
	memcpy(ids, h, idv);
	memcpy(vals, h + idv, idv);
	memcpy(st, h + 2 * idv, (size_t)n * sizeof(struct llm_topk_stat));
}

/* ---------------------------------------------------------------- life */

static void cuda_free(struct llm_backend *be)
{
	struct cuda *c = cuda_of(be);
	if (c) {
		/* nothing queued may outlive the buffers */
		if (c->stream)
			cudaStreamSynchronize(c->stream);
		for (size_t i = 0; i < c->cap_w; i++)
			if (c->w[i].host)
				cudaFree(c->w[i].dev);
		free(c->w);
		for (int r = 0; r < ST_COUNT; r++) {
			if (c->st[r].host)
				cudaFreeHost(c->st[r].host);
			if (c->st[r].dev)
				cudaFree(c->st[r].dev);
			if (c->st[r].done)
				cudaEventDestroy(c->st[r].done);
		}
		free(c->table_host);
		if (c->tile)
			cudaFree(c->tile);
		if (c->xh)
			cudaFree(c->xh);
		if (c->topk_dev)
			cudaFree(c->topk_dev);
		if (c->topk_host)
			cudaFreeHost(c->topk_host);
		free(c->topk_args);
		if (c->blas)
			cublasDestroy(c->blas);
		if (c->stream)
			cudaStreamDestroy(c->stream);
		(void)cudaGetLastError();
		free(c);
	}
	free(be);
}

/*
 * The table is filled by name (C++ before C++20 has no designated
 * initializers, and a positional list breaks silently when backend.h
 * gains an op); the LoRA and training ops stay NULL: not on this backend
 * yet (callers check).
 */
static struct llm_backend_ops cuda_ops;

static const struct llm_backend_ops *cuda_ops_table(void)
{
	if (!cuda_ops.name) {
		cuda_ops.host_memory = false;
		cuda_ops.free = cuda_free;
		cuda_ops.alloc = cuda_alloc;
		cuda_ops.dealloc = cuda_dealloc;
		cuda_ops.copy = cuda_copy;
		cuda_ops.upload = cuda_upload;
		cuda_ops.download = cuda_download;
		cuda_ops.supports = cuda_supports;
		cuda_ops.get_rows = cuda_get_rows;
		cuda_ops.matmul = cuda_matmul;
		cuda_ops.rmsnorm = cuda_rmsnorm;
		cuda_ops.add_bias = cuda_add_bias;
		cuda_ops.rope = cuda_rope;
		cuda_ops.kv_store = cuda_kv_store;
		cuda_ops.attention = cuda_attention;
		cuda_ops.swiglu = cuda_swiglu;
		cuda_ops.add = cuda_add;
		cuda_ops.synchronize = cuda_synchronize;
		cuda_ops.weight = cuda_weight;
		cuda_ops.status = cuda_status;
		cuda_ops.topk = cuda_topk_op;
		cuda_ops.name = "cuda";  /* last: the table is complete */
	}
	return &cuda_ops;
}

int llm_cuda_device_count(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		(void)cudaGetLastError();
		return 0;
	}
	return n;
}

int llm_backend_cuda_init(struct llm_backend **out, int device, int n_threads)
{
	struct llm_backend *be;
	struct cuda *c;
	int n_dev = 0, rc;
	cudaError_t e;

	*out = NULL;
	e = cudaGetDeviceCount(&n_dev);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return llm_error(LLM_ENOTFOUND, "device cuda: no CUDA device (%s)",
		                 cudaGetErrorString(e));
	}
	if (n_dev < 1)
		return llm_error(LLM_ENOTFOUND, "device cuda: no CUDA device");
	if (device < 0 || device >= n_dev)
		return llm_error(LLM_ENOTFOUND, "device cuda:%d: there %s %d CUDA "
		                 "device%s (0..%d)", device, n_dev == 1 ? "is" : "are",
		                 n_dev, n_dev == 1 ? "" : "s", n_dev - 1);
	be = (struct llm_backend *)calloc(1, sizeof(*be));
	c = (struct cuda *)calloc(1, sizeof(*c));
	if (!be || !c) {
		free(be);
		free(c);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	be->ops = cuda_ops_table();
	be->impl = c;
	be->n_threads = n_threads > 0 ? n_threads : 1;
	c->device = device;
	{
		const char *env = getenv("LLMKIT_CUDA_ATTN");
		c->attn_simple = env && !strcmp(env, "simple");
	}

	if (!OK(c, cudaSetDevice(device), "cudaSetDevice") ||
	    !OK(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
	        "cudaStreamCreate"))
		goto fail;
	for (int r = 0; r < ST_COUNT; r++)
		if (!OK(c, cudaEventCreateWithFlags(&c->st[r].done,
		                                     cudaEventDisableTiming),
		        "cudaEventCreate"))
			goto fail;
	if (!blas_load(c) || !blas_ok(c, cublasCreate(&c->blas), "cublasCreate") ||
	    !blas_ok(c, cublasSetStream(c->blas, c->stream), "cublasSetStream") ||
	    !blas_ok(c, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"))
		goto fail;
	*out = be;
	return 0;
fail:
	rc = llm_error(c->status ? c->status : LLM_EIO, "device cuda:%d: %s", device,
	               c->msg);
	cuda_free(be);
	return rc;
}

int llm_cuda_membw(uint64_t bytes, int reps, double *best)
{
	void *a = NULL, *b = NULL;
	cudaStream_t s = NULL;
	cudaEvent_t e0 = NULL, e1 = NULL;
	int rc = 0;
	struct cuda c0;
	struct cuda *c = &c0;

	memset(&c0, 0, sizeof(c0));
	*best = 0;
	if (!bytes)
		bytes = 1ull << 30;
	if (reps < 1)
		reps = 5;
	if (llm_cuda_device_count() < 1)
		return llm_error(LLM_ENOTFOUND, "device cuda: no CUDA device");
	if (!OK(c, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate") ||
	    !OK(c, cudaEventCreate(&e0), "cudaEventCreate") ||
	    !OK(c, cudaEventCreate(&e1), "cudaEventCreate") ||
	    !OK(c, cudaMalloc(&a, bytes), "cudaMalloc") ||
	    !OK(c, cudaMalloc(&b, bytes), "cudaMalloc") ||
	    !OK(c, cudaMemsetAsync(a, 1, bytes, s), "cudaMemsetAsync") ||
	    !OK(c, cuda_copy_kernel(s, a, b, bytes), "copy kernel"))
		goto done;
	for (int r = 0; r < reps; r++) {
		float ms = 0;
		if (!OK(c, cudaEventRecord(e0, s), "cudaEventRecord") ||
		    !OK(c, cuda_copy_kernel(s, a, b, bytes), "copy kernel") ||
		    !OK(c, cudaEventRecord(e1, s), "cudaEventRecord") ||
		    !OK(c, cudaEventSynchronize(e1), "cudaEventSynchronize") ||
		    !OK(c, cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime"))
			goto done;
		/* a copy reads and writes every byte */
		double bw = ms > 0 ? 2.0 * (double)(bytes & ~(uint64_t)15) / (ms * 1e-3) : 0;
		if (bw > *best)
			*best = bw;
	}
done:
	if (c->status)
		rc = llm_error(c->status, "%s", c->msg);
	if (a)
		cudaFree(a);
	if (b)
		cudaFree(b);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	if (s)
		cudaStreamDestroy(s);
	return rc;
}

int llm_cuda_gemm_peak(int dim, int reps, double *best)
{
	void *a = NULL, *b = NULL, *y = NULL;
	cudaStream_t s = NULL;
	cudaEvent_t e0 = NULL, e1 = NULL;
	cublasHandle_t h = NULL;
	const float one = 1.0f, zero = 0.0f;
	struct cuda c0;
	struct cuda *c = &c0;
	size_t n2;

	memset(&c0, 0, sizeof(c0));
	*best = 0;
	if (dim <= 0)
		dim = 8192;
	if (reps < 1)
		reps = 5;
	n2 = (size_t)dim * dim;
	if (llm_cuda_device_count() < 1)
		return llm_error(LLM_ENOTFOUND, "device cuda: no CUDA device");
	if (!OK(c, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate") ||
	    !OK(c, cudaEventCreate(&e0), "cudaEventCreate") ||
	    !OK(c, cudaEventCreate(&e1), "cudaEventCreate") ||
	    !OK(c, cudaMalloc(&a, n2 * 2), "cudaMalloc") ||
	    !OK(c, cudaMalloc(&b, n2 * 2), "cudaMalloc") ||
	    !OK(c, cudaMalloc(&y, n2 * 4), "cudaMalloc") ||
	    !OK(c, cudaMemsetAsync(a, 0, n2 * 2, s), "cudaMemsetAsync") ||
	    !OK(c, cudaMemsetAsync(b, 0, n2 * 2, s), "cudaMemsetAsync") ||
	    !blas_load(c) || !blas_ok(c, cublasCreate(&h), "cublasCreate") ||
	    !blas_ok(c, cublasSetStream(h, s), "cublasSetStream"))
		goto done;
	/* the product the prefill path runs: halves in, f32 out and sums */
	for (int r = -1; r < reps; r++) {
		float ms = 0;
		if (!OK(c, cudaEventRecord(e0, s), "cudaEventRecord") ||
		    !blas_ok(c, cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, dim, dim, dim, &one,
		                             a, CUDA_R_16F, dim, b, CUDA_R_16F, dim, &zero,
		                             y, CUDA_R_32F, dim, CUBLAS_COMPUTE_32F,
		                             CUBLAS_GEMM_DEFAULT), "cublasGemmEx") ||
		    !OK(c, cudaEventRecord(e1, s), "cudaEventRecord") ||
		    !OK(c, cudaEventSynchronize(e1), "cudaEventSynchronize") ||
		    !OK(c, cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime"))
			goto done;
		double f = ms > 0 ? 2.0 * dim * (double)dim * dim / (ms * 1e-3) : 0;
		if (r >= 0 && f > *best)  /* r = -1 warms up */
			*best = f;
	}
done:
	if (h)
		cublasDestroy(h);
	if (a)
		cudaFree(a);
	if (b)
		cudaFree(b);
	if (y)
		cudaFree(y);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	if (s)
		cudaStreamDestroy(s);
	return c->status ? llm_error(c->status, "%s", c->msg) : 0;
}
