/*
 * backend-cpu.c - the CPU backend: every op of the forward pass over host
 * memory, split across a fork-join thread pool.
 *
 * Matrix products take one of two paths.  A few token rows (decode) stream
 * the weights once through the rows kernels of kernels.c, which is bound by
 * memory bandwidth; many rows (prefill, big batches) go to BLAS, each thread
 * calling single-threaded sgemm on its own slice of output features, with
 * non-f32 weights converted to f32 a tile at a time.  Our pool is the only
 * source of threads, so BLAS and our kernels never fight over cores.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "cpu/backward.h"
#include "cpu/kernels.h"
#include "cpu/pool.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

/* From this many token rows on, a matmul goes to BLAS (measured: below it
 * the rows kernels win, since BLAS repacks the weights on every call;
 * stories110M shape, 2 threads, rows kernels vs BLAS: f32 prompt of 64
 * tokens 910 vs 700 tok/s, of 200 953 vs 880, of 512 892 vs 913; decoding
 * 32 sequences 631 vs 399; f16 prompt of 64 1079 vs 402). */
#define BLAS_MIN_TOKENS 256
/* For quantized weights the integer kernels (activations quantized once,
 * several tokens per weight read) beat dequantizing tiles for sgemm up to
 * about this many rows (stories110M shape, 2 threads: 628 vs 393 tok/s at
 * 32 rows, 703 vs 736 at 128, 659 vs 846 at 256 for q4_0). */
#define QUANT_BLAS_MIN_TOKENS 128
/* Rows of converted weights per tile on the BLAS path. */
#define TILE_ROWS 128

struct cpu {
	struct llm_pool *pool;
	const struct llm_cpu_kernels *k;
	int blas_min;
	/* per-thread scratch */
	float **scratch;
	size_t *scratch_n;
	/* one buffer shared by a whole op (a weight matrix converted to f32) */
	float *shared;
	size_t shared_n;
	/* a matmul's activations quantized for quantized weights */
	void *xq;
	size_t xq_n;
	/* a matmul's activations at a padded row stride (see x_padded) */
	float *xpad;
	size_t xpad_n;
	int quant_blas_min;    /* the same for quantized weights; 0: never */
};

static struct cpu *cpu_of(struct llm_backend *be)
{
	return be->impl;
}

static float *scratch(struct cpu *c, int ith, size_t n)
{
	if (c->scratch_n[ith] < n) {
		free(c->scratch[ith]);
		c->scratch[ith] = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
		LLM_ASSERT(c->scratch[ith]);
		c->scratch_n[ith] = n;
	}
	return c->scratch[ith];
}

/* For the training ops in backward.c. */
struct llm_pool *llm_cpu_pool(struct llm_backend *be)
{
	return cpu_of(be)->pool;
}

float *llm_cpu_scratch(struct llm_backend *be, int ith, size_t n)
{
	return scratch(cpu_of(be), ith, n);
}

float *llm_cpu_shared(struct llm_backend *be, size_t n)
{
	struct cpu *c = cpu_of(be);
	if (c->shared_n < n) {
		free(c->shared);
		c->shared = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
		LLM_ASSERT(c->shared);
		c->shared_n = n;
	}
	return c->shared;
}

/* ---------------------------------------------------------------- memory */

/*
 * Big buffers (the KV cache above all) go on 2 MiB pages where the kernel
 * offers them - with 4 KiB pages every block is a TLB miss of its own - and
 * are touched here, once: otherwise the first tokens that reach each page
 * pay for faulting it in and zeroing it (measured: a fifth of a batched
 * benchmark's decode time went to that).
 */
#define HUGE_PAGE (2u << 20)

static void *cpu_alloc(struct llm_backend *be, size_t bytes)
{
	(void)be;
	if (bytes >= 4 * (size_t)HUGE_PAGE) {
		size_t n = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
		void *p = aligned_alloc(HUGE_PAGE, n);
		if (p) {
#ifdef MADV_HUGEPAGE
			madvise(p, n, MADV_HUGEPAGE);
#endif
			memset(p, 0, n);
		}
		return p;
	}
	return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static void cpu_dealloc(struct llm_backend *be, void *p)
{
	(void)be;
	free(p);
}

static void cpu_copy(struct llm_backend *be, void *dst, const void *src, size_t n)
{
	(void)be;
	memcpy(dst, src, n);
}

static bool cpu_supports(struct llm_backend *be, enum llm_dtype t)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	return tr && tr->to_float && cpu_of(be)->k->rows[t];
}

/* ---------------------------------------------------------------- matmul */

struct mm_args {
	struct cpu *c;
	const struct llm_tensor *w;
	const float *x;
	float *y;
	int n;
	const void *xq;        /* quantized activations (qrows) */
	size_t xq_stride;
	int64_t ldx;           /* x's row stride in floats (rows) */
};

/* Output rows [r0, r1) through the rows kernel (streams the weights). */
static void mm_rows_task(void *p, int64_t r0, int64_t r1, int ith)
{
	struct mm_args *a = p;
	int64_t n_out = a->w->ne[1], n_in = a->w->ne[0];
	(void)ith;
	a->c->k->rows[a->w->type](a->w->data, llm_tensor_row_size(a->w), n_in, r0, r1,
	                          a->x, a->ldx, a->n, a->y, n_out);
}

/* The same for quantized weights over activations quantized once. */
static void mm_qrows_task(void *p, int64_t r0, int64_t r1, int ith)
{
	struct mm_args *a = p;
	int64_t n_out = a->w->ne[1], n_in = a->w->ne[0];
	(void)ith;
	a->c->k->qrows[a->w->type](a->w->data, llm_tensor_row_size(a->w), n_in, r0,
	                           r1, a->xq, a->xq_stride, a->n, a->y, n_out);
}

static void quantize_x_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct mm_args *a = p;
	int64_t n_in = a->w->ne[0];
	int vt = llm_dtype_traits(a->w->type)->vec_dot_type;
	(void)ith;
	for (int64_t i = i0; i < i1; i++)
		a->c->k->quantize_x[vt](a->x + i * n_in,
		                        (char *)a->xq + i * a->xq_stride, n_in);
}

/*
 * Token rows whose length in bytes is a multiple of 4 KiB (the 2048-wide
 * input of stories110M's down projection) all start in the same L1 sets,
 * as do the weight rows the rows kernel reads beside them: a kernel taking
 * four rows and four tokens then thrashes eight lines of one set.  Copied
 * at a stride 64 bytes longer, the tokens spread over other sets (one
 * thread, 2048 x 768 f32, 32 tokens: 65 -> 86 GFLOP/s).  The sums are the
 * same, element for element.
 */
#define XPAD_FLOATS 16

static void x_padded(struct cpu *c, struct mm_args *a)
{
	int64_t n_in = a->w->ne[0], ld = n_in + XPAD_FLOATS;
	size_t need = (size_t)ld * a->n;
	a->ldx = n_in;
	if (a->n < 2 || (n_in * sizeof(float)) % 4096)
		return;
	if (c->xpad_n < need) {
		free(c->xpad);
		c->xpad = aligned_alloc(64, (need * sizeof(float) + 63) & ~(size_t)63);
		LLM_ASSERT(c->xpad);
		c->xpad_n = need;
	}
	for (int t = 0; t < a->n; t++)
		memcpy(c->xpad + t * ld, a->x + t * n_in, n_in * sizeof(float));
	a->x = c->xpad;
	a->ldx = ld;
}

/* Quantize the activations for a quantized weight (once per matmul). */
static void quantize_x(struct cpu *c, struct mm_args *a)
{
	int vt = llm_dtype_traits(a->w->type)->vec_dot_type;
	size_t stride = llm_row_size(vt, a->w->ne[0]), need = stride * a->n;
	LLM_ASSERT(stride);
	if (c->xq_n < need) {
		free(c->xq);
		c->xq = aligned_alloc(64, (need + 63) & ~(size_t)63);
		LLM_ASSERT(c->xq);
		c->xq_n = need;
	}
	a->xq = c->xq;
	a->xq_stride = stride;
	if (a->n >= 8)
		llm_pool_for(c->pool, a->n, 1, quantize_x_task, a);
	else
		quantize_x_task(a, 0, a->n, 0);
}

#ifdef HAVE_OPENBLAS
/* Output rows [r0, r1) through single-threaded sgemm; weights that are not
 * f32 are converted into this thread's tile first. */
static void mm_blas_task(void *p, int64_t r0, int64_t r1, int ith)
{
	struct mm_args *a = p;
	const struct llm_tensor *w = a->w;
	int64_t n_out = w->ne[1], n_in = w->ne[0];
	const float *wr = (const float *)w->data + r0 * n_in;

	if (w->type != LLM_F32) {
		size_t rb = llm_tensor_row_size(w);
		llm_to_float_fn conv = llm_dtype_traits(w->type)->to_float;
		float *tile = scratch(a->c, ith, (size_t)(r1 - r0) * n_in);
		for (int64_t i = r0; i < r1; i++)
			conv((const char *)w->data + i * rb, tile + (i - r0) * n_in, n_in);
		wr = tile;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, (int)(r1 - r0),
	            (int)n_in, 1.0f, a->x, (int)n_in, wr, (int)n_in, 0.0f,
	            a->y + r0, (int)n_out);
}
#endif

/*
 * Rows are handed out in pieces from a shared counter (pool.h), about eight
 * a thread, whole 16-row blocks; BLAS gets bigger pieces to amortise its
 * packing of the weights, and at most TILE_ROWS of converted weights.
 */
static void cpu_matmul(struct llm_backend *be, const struct llm_tensor *w,
                       const float *x, float *y, int n)
{
	struct cpu *c = cpu_of(be);
	struct mm_args a = { c, w, x, y, n, NULL, 0, w->ne[0] };
	int nth = llm_pool_size(c->pool);
	int64_t n_out = w->ne[1];
	int64_t chunk = (n_out / (8 * nth) + 15) & ~(int64_t)15;
	bool quant = c->k->qrows[w->type] != NULL;

	LLM_ASSERT(c->k->rows[w->type]);
#ifdef HAVE_OPENBLAS
	if (quant ? c->quant_blas_min > 0 && n >= c->quant_blas_min : n >= c->blas_min) {
		chunk = (n_out / (2 * nth) + 15) & ~(int64_t)15;
		if (chunk < 64)
			chunk = 64;
		if (chunk > TILE_ROWS && w->type != LLM_F32)
			chunk = TILE_ROWS;
		llm_pool_for(c->pool, n_out, chunk, mm_blas_task, &a);
		return;
	}
#endif
	if (quant) {
		quantize_x(c, &a);
		llm_pool_for(c->pool, n_out, chunk < 16 ? 16 : chunk, mm_qrows_task, &a);
		return;
	}
	x_padded(c, &a);
	llm_pool_for(c->pool, n_out, chunk < 16 ? 16 : chunk, mm_rows_task, &a);
}

/* ---------------------------------------------------------------- small ops */

static void cpu_get_rows(struct llm_backend *be, const struct llm_tensor *w,
                         const int32_t *ids, int n, float *out)
{
	llm_to_float_fn conv = llm_dtype_traits(w->type)->to_float;
	size_t rb = llm_tensor_row_size(w);
	(void)be;
	for (int i = 0; i < n; i++) {
		LLM_ASSERT(ids[i] >= 0 && ids[i] < w->ne[1]);
		conv((const char *)w->data + ids[i] * rb, out + (int64_t)i * w->ne[0],
		     w->ne[0]);
	}
}

struct rows_args {
	const float *x, *w;
	float *y;
	int n, dim;
	float eps;
};

static void rmsnorm_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct rows_args *a = p;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		const float *x = a->x + i * a->dim;
		float *y = a->y + i * a->dim;
		double ss = 0;
		for (int j = 0; j < a->dim; j++)
			ss += (double)x[j] * x[j];
		float s = 1.0f / sqrtf((float)(ss / a->dim) + a->eps);
		for (int j = 0; j < a->dim; j++)
			y[j] = x[j] * s * a->w[j];
	}
}

static void cpu_rmsnorm(struct llm_backend *be, const float *x, const float *w,
                        float *y, int n, int dim, float eps)
{
	struct rows_args a = { x, w, y, n, dim, eps };
	llm_pool_for(cpu_of(be)->pool, n, 4, rmsnorm_task, &a);
}

static void cpu_add_bias(struct llm_backend *be, float *y, const float *b, int n,
                         int dim)
{
	(void)be;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < dim; j++)
			y[(int64_t)i * dim + j] += b[j];
}

struct rope_args {
	float *x;
	const int32_t *pos;
	int n, n_head, head_dim;
	const struct llm_rope *r;
};

static void rope_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct rope_args *a = p;
	const struct llm_rope *r = a->r;
	int half = r->n_rot / 2;
	float cs[2 * 256];

	(void)ith;
	LLM_ASSERT(half <= 256);
	for (int64_t i = i0; i < i1; i++) {
		/* the angles depend on position and pair, not on the head */
		for (int k = 0; k < half; k++) {
			float th = (float)a->pos[i] * r->inv_freq[k];
			cs[2 * k] = cosf(th) * r->mscale;
			cs[2 * k + 1] = sinf(th) * r->mscale;
		}
		for (int h = 0; h < a->n_head; h++) {
			float *v = a->x + (i * a->n_head + h) * a->head_dim;
			for (int k = 0; k < half; k++) {
				/* NORM rotates (2k, 2k+1); NEOX rotates (k, k+half) */
				int j0 = r->kind == LLM_ROPE_NORM ? 2 * k : k;
				int j1 = r->kind == LLM_ROPE_NORM ? 2 * k + 1 : k + half;
				float c = cs[2 * k], s = cs[2 * k + 1];
				float v0 = v[j0], v1 = v[j1];
				v[j0] = v0 * c - v1 * s;
				v[j1] = v0 * s + v1 * c;
			}
		}
	}
}

static void cpu_rope(struct llm_backend *be, float *x, const int32_t *pos, int n,
                     int n_head, int head_dim, const struct llm_rope *rope)
{
	struct rope_args a = { x, pos, n, n_head, head_dim, rope };
	llm_pool_for(cpu_of(be)->pool, n, 4, rope_task, &a);
}

static void cpu_kv_store(struct llm_backend *be, void *k_cache, void *v_cache,
                         const struct llm_kv_params *lp, const float *k,
                         const float *v, const int32_t *slots, int n)
{
	int hd = lp->head_dim, bs = lp->block_size;
	bool half = lp->type == LLM_F16;
	(void)be;
	LLM_ASSERT(lp->type == LLM_F32 || half);
	for (int i = 0; i < n; i++) {
		for (int h = 0; h < lp->n_head_kv; h++) {
			int64_t off = llm_kv_off(lp, slots[i] / bs, slots[i] % bs, h, 0);
			const float *ki = k + ((int64_t)i * lp->n_head_kv + h) * hd;
			const float *vi = v + ((int64_t)i * lp->n_head_kv + h) * hd;
			if (half) {
				uint16_t *kd = (uint16_t *)k_cache + off;
				uint16_t *vd = (uint16_t *)v_cache + off;
				for (int d = 0; d < hd; d++) {
					kd[d] = llm_f32_to_f16(ki[d]);
					vd[d] = llm_f32_to_f16(vi[d]);
				}
			} else {
				memcpy((float *)k_cache + off, ki, hd * sizeof(float));
				memcpy((float *)v_cache + off, vi, hd * sizeof(float));
			}
		}
	}
}

struct ew_args {
	const struct llm_cpu_kernels *k;
	float *y;
	const float *x;
	int64_t n;
};

static void swiglu_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct ew_args *a = p;
	(void)ith;
	a->k->swiglu(a->y + i0, a->x + i0, i1 - i0);
}

static void cpu_swiglu(struct llm_backend *be, float *g, const float *u, int64_t n)
{
	struct ew_args a = { cpu_of(be)->k, g, u, n };
	llm_pool_for(cpu_of(be)->pool, n, 4096, swiglu_task, &a);
}

static void cpu_add(struct llm_backend *be, float *y, const float *x, int64_t n)
{
	(void)be;
	for (int64_t i = 0; i < n; i++)
		y[i] += x[i];
}

static void cpu_synchronize(struct llm_backend *be)
{
	(void)be;
}

/* ---------------------------------------------------------------- attention */

struct attn_args {
	struct cpu *c;
	const struct llm_attn_batch *ab;
	const float *q;
	float *out;
	int max_pos;           /* largest query position: the score row length */
};

/*
 * One task per (token, KV head); the query heads of a GQA group share the
 * key and value blocks, which stay in cache between them.  Scores go to a
 * scratch row (positions 0..pos) a block at a time, then softmax, then the
 * values, a block at a time.  No software prefetch: with the head-major
 * cache a sequence's blocks are mostly one stream, which the hardware
 * prefetcher follows better than explicit prefetches did (measured).
 */
static void attn_task(void *p, int64_t t0, int64_t t1, int ith)
{
	struct attn_args *a = p;
	const struct llm_attn_batch *ab = a->ab;
	const struct llm_cpu_kernels *k = a->c->k;
	int hd = ab->head_dim, bs = ab->block_size, group = ab->n_head / ab->n_head_kv;
	struct llm_kv_params lp = { .n_head_kv = ab->n_head_kv, .head_dim = hd,
	                            .block_size = bs, .n_blocks = ab->n_blocks };
	float *sc = scratch(a->c, ith, (size_t)a->max_pos + 1);
	bool half = ab->kv_type == LLM_F16;

	for (int64_t task = t0; task < t1; task++) {
		int i = (int)(task / ab->n_head_kv), kvh = (int)(task % ab->n_head_kv);
		int n_pos = ab->pos[i] + 1;
		const int32_t *table = ab->table[i];
		for (int g = 0; g < group; g++) {
			int h = kvh * group + g;
			const float *q = a->q + ((int64_t)i * ab->n_head + h) * hd;
			float *o = a->out + ((int64_t)i * ab->n_head + h) * hd;
			float mx = -INFINITY;

			int nblk = (n_pos + bs - 1) / bs;
			for (int b = 0; b < nblk; b++) {
				int p0 = b * bs, nb = n_pos - p0 < bs ? n_pos - p0 : bs;
				int64_t off = llm_kv_off(&lp, table[b], 0, kvh, 0);
				float m = half
				        ? k->qk16(q, (const uint16_t *)ab->k + off, hd, nb,
				                  ab->scale, sc + p0)
				        : k->qk(q, (const float *)ab->k + off, hd, nb,
				                ab->scale, sc + p0);
				mx = m > mx ? m : mx;
			}
			float inv = 1.0f / k->exp_sum(sc, n_pos, mx);
			memset(o, 0, hd * sizeof(float));
			for (int b = 0; b < nblk; b++) {
				int p0 = b * bs, nb = n_pos - p0 < bs ? n_pos - p0 : bs;
				int64_t off = llm_kv_off(&lp, table[b], 0, kvh, 0);
				if (half)
					k->pv16(o, sc + p0, (const uint16_t *)ab->v + off, hd, nb);
				else
					k->pv(o, sc + p0, (const float *)ab->v + off, hd, nb);
			}
			for (int d = 0; d < hd; d++)
				o[d] *= inv;
		}
	}
}

static void cpu_attention(struct llm_backend *be, const struct llm_attn_batch *ab,
                          const float *q, float *out)
{
	struct attn_args a = { cpu_of(be), ab, q, out, 0 };
	for (int i = 0; i < ab->n_tokens; i++)
		if (ab->pos[i] > a.max_pos)
			a.max_pos = ab->pos[i];
	/* one piece per (token, KV head): causal rows grow in cost with
	 * position, and claiming pieces one by one balances that */
	llm_pool_for(cpu_of(be)->pool, (int64_t)ab->n_tokens * ab->n_head_kv, 1,
	             attn_task, &a);
}

/* ---------------------------------------------------------------- sampling */

struct topk_args {
	const float *logits;
	int n_vocab, k;
	const int32_t *rows;
	const float *scale;
	const uint8_t *sums;
	int32_t *ids;
	float *vals;
	struct llm_topk_stat *st;
};

static void topk_task(void *arg, int64_t i0, int64_t i1, int ith)
{
	const struct topk_args *a = arg;
	(void)ith;
	for (int64_t i = i0; i < i1; i++)
		llm_cands_compute(a->logits + (int64_t)a->rows[i] * a->n_vocab,
		                  a->n_vocab, a->scale[i], a->k,
		                  !a->sums || a->sums[i], a->ids + i * a->k,
		                  a->vals + i * a->k, &a->st[i].max, &a->st[i].sum,
		                  &a->st[i].sum_scaled);
}

/* The sampler's own candidates (sampler.c), a row per piece. */
static void cpu_topk(struct llm_backend *be, const float *logits, int n_vocab,
                     const int32_t *rows, const float *scale,
                     const uint8_t *sums, int n, int k, int32_t *ids,
                     float *vals, struct llm_topk_stat *st)
{
	struct topk_args a = { logits, n_vocab, k, rows, scale, sums, ids, vals, st };
	LLM_ASSERT(k >= 1 && k <= LLM_TOPK_MAX && k <= n_vocab);
	/* small rows cost less than waking the pool */
	if ((int64_t)n * n_vocab < 65536)
		topk_task(&a, 0, n, 0);
	else if (n > 0)
		llm_pool_for(cpu_of(be)->pool, n, 1, topk_task, &a);
}

/* ---------------------------------------------------------------- life */

static void cpu_free(struct llm_backend *be)
{
	struct cpu *c = cpu_of(be);
	if (c) {
		llm_pool_free(c->pool);
		for (int i = 0; c->scratch && i < be->n_threads; i++)
			free(c->scratch[i]);
		free(c->scratch);
		free(c->scratch_n);
		free(c->shared);
		free(c->xq);
		free(c->xpad);
		free(c);
	}
	free(be);
}

static const struct llm_backend_ops cpu_ops = {
	.name = "cpu",
	.host_memory = true,
	.free = cpu_free,
	.alloc = cpu_alloc,
	.dealloc = cpu_dealloc,
	.copy = cpu_copy,
	.upload = cpu_copy,
	.download = cpu_copy,
	.supports = cpu_supports,
	.get_rows = cpu_get_rows,
	.matmul = cpu_matmul,
	.rmsnorm = cpu_rmsnorm,
	.add_bias = cpu_add_bias,
	.rope = cpu_rope,
	.kv_store = cpu_kv_store,
	.attention = cpu_attention,
	.swiglu = cpu_swiglu,
	.add = cpu_add,
	.synchronize = cpu_synchronize,
	.lora_seg = llm_cpu_lora_seg,
	.gemm = llm_cpu_gemm,
	.matmul_train = llm_cpu_matmul_train,
	.matmul_bwd = llm_cpu_matmul_bwd,
	.rmsnorm_bwd = llm_cpu_rmsnorm_bwd,
	.rope_bwd = llm_cpu_rope_bwd,
	.attn_train = llm_cpu_attn_train,
	.attn_train_bwd = llm_cpu_attn_train_bwd,
	.swiglu_fwd = llm_cpu_swiglu_fwd,
	.swiglu_bwd = llm_cpu_swiglu_bwd,
	.cross_entropy = llm_cpu_cross_entropy,
	.adamw = llm_cpu_adamw,
	.topk = cpu_topk,
};

const char *llm_cpu_isa(void)
{
	return llm_cpu_kernels()->isa;
}

int llm_backend_cpu_init(struct llm_backend **out, int n_threads)
{
	struct llm_backend *be = calloc(1, sizeof(*be));
	struct cpu *c = calloc(1, sizeof(*c));
	int rc;

	if (n_threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		n_threads = n > 0 ? (int)n : 1;
	}
	if (!be || !c) {
		free(be);
		free(c);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	be->ops = &cpu_ops;
	be->impl = c;
	be->n_threads = n_threads;
	c->k = llm_cpu_kernels();
	c->blas_min = BLAS_MIN_TOKENS;
	const char *env = getenv("LLMKIT_BLAS_MIN");
	if (env && atoi(env) > 0)
		c->blas_min = atoi(env);
	/* quantized weights: the integer kernels up to QUANT_BLAS_MIN_TOKENS
	 * rows, dequantized tiles into sgemm from there (measured crossover;
	 * README); LLMKIT_QUANT_BLAS_MIN=0 keeps them on the integer kernels */
	c->quant_blas_min = QUANT_BLAS_MIN_TOKENS;
	env = getenv("LLMKIT_QUANT_BLAS_MIN");
	if (env && atoi(env) >= 0)
		c->quant_blas_min = atoi(env);
	c->scratch = calloc(n_threads, sizeof(*c->scratch));
	c->scratch_n = calloc(n_threads, sizeof(*c->scratch_n));
	if (!c->scratch || !c->scratch_n) {
		cpu_free(be);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	if ((rc = llm_pool_new(&c->pool, n_threads))) {
		cpu_free(be);
		return rc;
	}
#ifdef HAVE_OPENBLAS
	/* BLAS runs inside our threads, one slice each. */
	openblas_set_num_threads(1);
#endif
	*out = be;
	return 0;
}

int llm_backend_init(struct llm_backend **out, const char *device, int n_threads)
{
	if (!device || !strcmp(device, "cpu"))
		return llm_backend_cpu_init(out, n_threads);
	if (!strncmp(device, "cuda", 4))
		return llm_backend_cuda_open(out, device, n_threads);
	return llm_error(LLM_EINVAL, "unknown device '%s' (cpu or cuda)", device);
}

void llm_backend_free(struct llm_backend *be)
{
	if (be)
		be->ops->free(be);
}
