/*
 * backward.c - the CPU backend's LoRA and training ops (backend.h): a
 * threaded GEMM over OpenBLAS, the backward of every op of a Llama block,
 * training attention over whole sequences, cross entropy and AdamW.
 *
 * Determinism: work is cut into pieces whose boundaries depend only on the
 * problem size, never on the number of threads, and every output element is
 * written by exactly one piece; sums across pieces (weight gradients over
 * tokens) are split by output column, not by token.  So the same inputs
 * give the same bits on 1 or 16 threads, which --resume relies on.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/model.h"
#include "cpu/backward.h"
#include "cpu/pool.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

/* ---------------------------------------------------------------- gemm */

/* One single-threaded row-major GEMM (BLAS, or plain loops without it). */
static void sgemm1(enum llm_gemm_op ta, enum llm_gemm_op tb, int m, int n, int k,
                   float alpha, const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc)
{
	if (m <= 0 || n <= 0)
		return;
#ifdef HAVE_OPENBLAS
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
	            tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
	            beta, c, ldc);
#else
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			float s = 0;
			for (int l = 0; l < k; l++)
				s += (ta ? a[(size_t)l * lda + i] : a[(size_t)i * lda + l]) *
				     (tb ? b[(size_t)j * ldb + l] : b[(size_t)l * ldb + j]);
			float *cij = &c[(size_t)i * ldc + j];
			*cij = alpha * s + (beta == 0 ? 0 : beta * *cij);
		}
#endif
}

struct gemm_args {
	enum llm_gemm_op ta, tb;
	int m, n, k;
	float alpha, beta;
	const float *a, *b;
	float *c;
	int lda, ldb, ldc;
	bool split_m;
};

#define GEMM_PIECE 128

/* Items [i0, i1) in pieces of GEMM_PIECE: the pool hands a single thread
 * the whole range at once, and one sgemm call over it could round
 * differently from several over its pieces. */
static void gemm_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct gemm_args *g = p;
	(void)ith;
	for (int64_t j0 = i0; j0 < i1; j0 += GEMM_PIECE) {
		int64_t j1 = j0 + GEMM_PIECE < i1 ? j0 + GEMM_PIECE : i1;
		if (g->split_m) {
			const float *a = g->ta ? g->a + j0 : g->a + j0 * g->lda;
			sgemm1(g->ta, g->tb, (int)(j1 - j0), g->n, g->k, g->alpha, a, g->lda,
			       g->b, g->ldb, g->beta, g->c + j0 * g->ldc, g->ldc);
		} else {
			const float *b = g->tb ? g->b + j0 * g->ldb : g->b + j0;
			sgemm1(g->ta, g->tb, g->m, (int)(j1 - j0), g->k, g->alpha, g->a, g->lda,
			       b, g->ldb, g->beta, g->c + j0, g->ldc);
		}
	}
}

/* Pieces of GEMM_PIECE rows (or columns, whichever dimension is larger); small
 * products run as one piece on the calling thread. */
void llm_cpu_gemm(struct llm_backend *be, enum llm_gemm_op ta,
                  enum llm_gemm_op tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta,
                  float *c, int ldc)
{
	struct gemm_args g = { ta, tb, m, n, k, alpha, beta, a, b, c, lda, ldb, ldc,
	                       m >= n };
	int64_t len = g.split_m ? m : n;
	if ((int64_t)m * n * k < (1 << 18) || len <= GEMM_PIECE) {
		sgemm1(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
		return;
	}
	llm_pool_for(llm_cpu_pool(be), len, GEMM_PIECE, gemm_task, &g);
}

/* ---------------------------------------------------------------- matmul */

struct conv_args {
	const struct llm_tensor *w;
	float *dst;
};

static void conv_task(void *p, int64_t r0, int64_t r1, int ith)
{
	struct conv_args *a = p;
	size_t rb = llm_tensor_row_size(a->w);
	int64_t n_in = a->w->ne[0];
	llm_to_float_fn conv = llm_dtype_traits(a->w->type)->to_float;
	(void)ith;
	for (int64_t r = r0; r < r1; r++)
		conv((const char *)a->w->data + r * rb, a->dst + r * n_in, n_in);
}

/* Non-f32 weights are converted a tile of MMB_TILE rows at a time, so a
 * quantized base (QLoRA) never exists in f32 as a whole: dx accumulates
 * dy[:, tile] . w[tile, :] tile after tile, in a fixed order. */
#define MMB_TILE 256

void llm_cpu_matmul_train(struct llm_backend *be, const struct llm_tensor *w,
                          const float *x, float *y, int n)
{
	int n_in = (int)w->ne[0], n_out = (int)w->ne[1];

	if (w->type == LLM_F32) {
		llm_cpu_gemm(be, LLM_GEMM_N, LLM_GEMM_T, n, n_out, n_in, 1.0f, x, n_in,
		             w->data, n_in, 0.0f, y, n_out);
		return;
	}
	size_t rb = llm_tensor_row_size(w);
	float *tile = llm_cpu_shared(be, (size_t)MMB_TILE * n_in);
	for (int r0 = 0; r0 < n_out; r0 += MMB_TILE) {
		int nr = n_out - r0 < MMB_TILE ? n_out - r0 : MMB_TILE;
		struct llm_tensor part = *w;
		part.ne[1] = nr;
		part.data = (char *)w->data + (size_t)r0 * rb;
		struct conv_args a = { &part, tile };
		llm_pool_for(llm_cpu_pool(be), nr, 16, conv_task, &a);
		llm_cpu_gemm(be, LLM_GEMM_N, LLM_GEMM_T, n, nr, n_in, 1.0f, x, n_in, tile,
		             n_in, 0.0f, y + r0, n_out);
	}
}

void llm_cpu_matmul_bwd(struct llm_backend *be, const struct llm_tensor *w,
                        const float *dy, float *dx, int n, float beta)
{
	int n_in = (int)w->ne[0], n_out = (int)w->ne[1];

	if (w->type == LLM_F32) {
		llm_cpu_gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, n_out, 1.0f, dy, n_out,
		             w->data, n_in, beta, dx, n_in);
		return;
	}
	size_t rb = llm_tensor_row_size(w);
	float *tile = llm_cpu_shared(be, (size_t)MMB_TILE * n_in);
	for (int r0 = 0; r0 < n_out; r0 += MMB_TILE) {
		int nr = n_out - r0 < MMB_TILE ? n_out - r0 : MMB_TILE;
		struct llm_tensor part = *w;
		part.ne[1] = nr;
		part.data = (char *)w->data + (size_t)r0 * rb;
		struct conv_args a = { &part, tile };
		llm_pool_for(llm_cpu_pool(be), nr, 16, conv_task, &a);
		llm_cpu_gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, nr, 1.0f, dy + r0, n_out,
		             tile, n_in, r0 ? 1.0f : beta, dx, n_in);
	}
}

/* ---------------------------------------------------------------- rmsnorm */

struct rms_args {
	const float *x, *w, *dy;
	float *dx, *dw, *r;
	int dim;
	float eps;
};

static void rms_bwd_rows(void *p, int64_t i0, int64_t i1, int ith)
{
	struct rms_args *a = p;
	int d = a->dim;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		const float *x = a->x + i * d, *dy = a->dy + i * d;
		float *dx = a->dx + i * d;
		double ss = 0, dot = 0;
		for (int j = 0; j < d; j++) {
			ss += (double)x[j] * x[j];
			dot += (double)dy[j] * a->w[j] * x[j];
		}
		float r = 1.0f / sqrtf((float)(ss / d) + a->eps);
		float c = (float)(dot * r * r * r / d);
		a->r[i] = r;
		for (int j = 0; j < d; j++)
			dx[j] += r * a->w[j] * dy[j] - x[j] * c;
	}
}

static void rms_bwd_cols(void *p, int64_t j0, int64_t j1, int ith)
{
	struct rms_args *a = p;
	int d = a->dim;
	(void)ith;
	for (int64_t j = j0; j < j1; j++) {
		double s = 0;
		for (int64_t i = 0; a->r[i] >= 0; i++)
			s += (double)a->dy[i * d + j] * a->x[i * d + j] * a->r[i];
		a->dw[j] += (float)s;
	}
}

void llm_cpu_rmsnorm_bwd(struct llm_backend *be, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, int n, int dim,
                         float eps)
{
	float *r = malloc(((size_t)n + 1) * sizeof(float));
	LLM_ASSERT(r);
	struct rms_args a = { x, w, dy, dx, dw, r, dim, eps };
	r[n] = -1;   /* end mark for the column pass */
	llm_pool_for(llm_cpu_pool(be), n, 4, rms_bwd_rows, &a);
	if (dw)
		llm_pool_for(llm_cpu_pool(be), dim, 16, rms_bwd_cols, &a);
	free(r);
}

/* ---------------------------------------------------------------- rope */

struct rope_args {
	float *x;
	const int32_t *pos;
	int n_head, head_dim;
	const struct llm_rope *r;
};

/* The transposed rotation: the forward's with the sine negated. */
static void rope_bwd_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct rope_args *a = p;
	const struct llm_rope *r = a->r;
	int half = r->n_rot / 2;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		for (int k = 0; k < half; k++) {
			float th = (float)a->pos[i] * r->inv_freq[k];
			float c = cosf(th) * r->mscale, s = -sinf(th) * r->mscale;
			int j0 = r->kind == LLM_ROPE_NORM ? 2 * k : k;
			int j1 = r->kind == LLM_ROPE_NORM ? 2 * k + 1 : k + half;
			for (int h = 0; h < a->n_head; h++) {
				float *v = a->x + (i * a->n_head + h) * a->head_dim;
				float v0 = v[j0], v1 = v[j1];
				v[j0] = v0 * c - v1 * s;
				v[j1] = v0 * s + v1 * c;
			}
		}
	}
}

void llm_cpu_rope_bwd(struct llm_backend *be, float *dx, const int32_t *pos,
                      int n, int n_head, int head_dim, const struct llm_rope *rope)
{
	struct rope_args a = { dx, pos, n_head, head_dim, rope };
	llm_pool_for(llm_cpu_pool(be), n, 4, rope_bwd_task, &a);
}

/* ---------------------------------------------------------------- attention */

struct attn_args {
	struct llm_backend *be;
	const struct llm_attn_train *at;
	const float *q, *k, *v, *out, *lse, *dout;
	float *o, *l, *dq, *dk, *dv;
};

/* Scores of head h of sequence s: S = scale q k^T (T x T), only the rows'
 * windows [start, i] meaningful. */
static void attn_scores(const struct attn_args *a, int s, int h, float *S)
{
	const struct llm_attn_train *at = a->at;
	int T = at->seq_len, hd = at->head_dim, kvh = h / (at->n_head / at->n_head_kv);
	int qs = at->n_head * hd, ks = at->n_head_kv * hd;
	sgemm1(LLM_GEMM_N, LLM_GEMM_T, T, T, hd, at->scale,
	       a->q + (int64_t)s * T * qs + h * hd, qs,
	       a->k + (int64_t)s * T * ks + kvh * hd, ks, 0.0f, S, T);
}

static void attn_fwd_task(void *p, int64_t t0, int64_t t1, int ith)
{
	struct attn_args *a = p;
	const struct llm_attn_train *at = a->at;
	int T = at->seq_len, hd = at->head_dim;
	int qs = at->n_head * hd, ks = at->n_head_kv * hd;
	float *S = llm_cpu_scratch(a->be, ith, (size_t)T * T);

	for (int64_t task = t0; task < t1; task++) {
		int s = (int)(task / at->n_head), h = (int)(task % at->n_head);
		int kvh = h / (at->n_head / at->n_head_kv);
		const int32_t *start = at->start + (int64_t)s * T;
		attn_scores(a, s, h, S);
		for (int i = 0; i < T; i++) {
			float *row = S + (int64_t)i * T, mx = -INFINITY;
			int j0 = start[i];
			LLM_ASSERT(j0 >= 0 && j0 <= i);
			for (int j = j0; j <= i; j++)
				mx = row[j] > mx ? row[j] : mx;
			double sum = 0;
			for (int j = j0; j <= i; j++) {
				row[j] = expf(row[j] - mx);
				sum += row[j];
			}
			float inv = (float)(1.0 / sum);
			for (int j = 0; j < j0; j++)
				row[j] = 0;
			for (int j = j0; j <= i; j++)
				row[j] *= inv;
			for (int j = i + 1; j < T; j++)
				row[j] = 0;
			a->l[((int64_t)s * T + i) * at->n_head + h] = mx + (float)log(sum);
		}
		sgemm1(LLM_GEMM_N, LLM_GEMM_N, T, hd, T, 1.0f, S, T,
		       a->v + (int64_t)s * T * ks + kvh * hd, ks, 0.0f,
		       a->o + (int64_t)s * T * qs + h * hd, qs);
	}
}

void llm_cpu_attn_train(struct llm_backend *be, const struct llm_attn_train *at,
                        const float *q, const float *k, const float *v,
                        float *out, float *lse)
{
	struct attn_args a = { .be = be, .at = at, .q = q, .k = k, .v = v, .o = out,
	                       .l = lse };
	llm_pool_for(llm_cpu_pool(be), (int64_t)at->n_seq * at->n_head, 1,
	             attn_fwd_task, &a);
}

/* One piece per (sequence, KV head): the query heads of its group add into
 * the same dk and dv rows, in a fixed order. */
static void attn_bwd_task(void *p, int64_t t0, int64_t t1, int ith)
{
	struct attn_args *a = p;
	const struct llm_attn_train *at = a->at;
	int T = at->seq_len, hd = at->head_dim, group = at->n_head / at->n_head_kv;
	int qs = at->n_head * hd, ks = at->n_head_kv * hd;
	float *P = llm_cpu_scratch(a->be, ith, 2 * (size_t)T * T);
	float *dP = P + (size_t)T * T;

	for (int64_t task = t0; task < t1; task++) {
		int s = (int)(task / at->n_head_kv), kvh = (int)(task % at->n_head_kv);
		const int32_t *start = at->start + (int64_t)s * T;
		int64_t kv_off = (int64_t)s * T * ks + kvh * hd;
		float *dk = a->dk + kv_off, *dv = a->dv + kv_off;
		for (int i = 0; i < T; i++) {
			memset(dk + (int64_t)i * ks, 0, hd * sizeof(float));
			memset(dv + (int64_t)i * ks, 0, hd * sizeof(float));
		}
		for (int g = 0; g < group; g++) {
			int h = kvh * group + g;
			int64_t q_off = (int64_t)s * T * qs + h * hd;
			const float *dO = a->dout + q_off, *O = a->out + q_off;
			attn_scores(a, s, h, P);
			for (int i = 0; i < T; i++) {
				float *row = P + (int64_t)i * T;
				float l = a->lse[((int64_t)s * T + i) * at->n_head + h];
				for (int j = 0; j < T; j++)
					row[j] = j >= start[i] && j <= i ? expf(row[j] - l) : 0.0f;
			}
			/* dV += P^T dO ; dP = dO V^T */
			sgemm1(LLM_GEMM_T, LLM_GEMM_N, T, hd, T, 1.0f, P, T, dO, qs, 1.0f,
			       dv, ks);
			sgemm1(LLM_GEMM_N, LLM_GEMM_T, T, T, hd, 1.0f, dO, qs,
			       a->v + kv_off, ks, 0.0f, dP, T);
			/* dS = P (dP - rowsum(dO o O)) */
			for (int i = 0; i < T; i++) {
				const float *doi = dO + (int64_t)i * qs, *oi = O + (int64_t)i * qs;
				float D = 0;
				for (int d = 0; d < hd; d++)
					D += doi[d] * oi[d];
				float *pr = P + (int64_t)i * T, *dr = dP + (int64_t)i * T;
				for (int j = 0; j < T; j++)
					dr[j] = pr[j] * (dr[j] - D);
			}
			/* dQ = scale dS K ; dK += scale dS^T Q */
			sgemm1(LLM_GEMM_N, LLM_GEMM_N, T, hd, T, at->scale, dP, T,
			       a->k + kv_off, ks, 0.0f, a->dq + q_off, qs);
			sgemm1(LLM_GEMM_T, LLM_GEMM_N, T, hd, T, at->scale, dP, T,
			       a->q + q_off, qs, 1.0f, dk, ks);
		}
	}
}

void llm_cpu_attn_train_bwd(struct llm_backend *be,
                            const struct llm_attn_train *at, const float *q,
                            const float *k, const float *v, const float *out,
                            const float *lse, const float *dout, float *dq,
                            float *dk, float *dv)
{
	struct attn_args a = { .be = be, .at = at, .q = q, .k = k, .v = v,
	                       .out = out, .lse = lse, .dout = dout, .dq = dq,
	                       .dk = dk, .dv = dv };
	llm_pool_for(llm_cpu_pool(be), (int64_t)at->n_seq * at->n_head_kv, 1,
	             attn_bwd_task, &a);
}

/* ---------------------------------------------------------------- swiglu */

struct ew_args {
	const float *g, *u, *dh;
	float *h, *dg, *du;
};

static void swiglu_fwd_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct ew_args *a = p;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		float g = a->g[i];
		a->h[i] = g / (1.0f + expf(-g)) * a->u[i];
	}
}

static void swiglu_bwd_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct ew_args *a = p;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		float g = a->g[i], sg = 1.0f / (1.0f + expf(-g)), dh = a->dh[i];
		float u = a->u[i];
		a->du[i] = dh * g * sg;
		a->dg[i] = dh * u * sg * (1.0f + g * (1.0f - sg));
	}
}

void llm_cpu_swiglu_fwd(struct llm_backend *be, const float *g, const float *u,
                        float *h, int64_t n)
{
	struct ew_args a = { .g = g, .u = u, .h = h };
	llm_pool_for(llm_cpu_pool(be), n, 4096, swiglu_fwd_task, &a);
}

void llm_cpu_swiglu_bwd(struct llm_backend *be, const float *g, const float *u,
                        const float *dh, float *dg, float *du, int64_t n)
{
	struct ew_args a = { .g = g, .u = u, .dh = dh, .dg = dg, .du = du };
	llm_pool_for(llm_cpu_pool(be), n, 4096, swiglu_bwd_task, &a);
}

/* ---------------------------------------------------------------- loss */

struct ce_args {
	float *logits;
	const int32_t *targets;
	int n_vocab;
	float scale;
	float *loss;
};

static void ce_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct ce_args *a = p;
	int nv = a->n_vocab;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		float *row = a->logits + i * nv;
		int t = a->targets[i];
		if (t < 0) {
			memset(row, 0, nv * sizeof(float));
			a->loss[i] = 0;
			continue;
		}
		LLM_ASSERT(t < nv);
		float mx = -INFINITY;
		for (int j = 0; j < nv; j++)
			mx = row[j] > mx ? row[j] : mx;
		double sum = 0;
		for (int j = 0; j < nv; j++)
			sum += expf(row[j] - mx);
		float lse = mx + (float)log(sum);
		a->loss[i] = lse - row[t];
		for (int j = 0; j < nv; j++)
			row[j] = a->scale * expf(row[j] - lse);
		row[t] -= a->scale;
	}
}

void llm_cpu_cross_entropy(struct llm_backend *be, float *logits,
                           const int32_t *targets, int n, int n_vocab,
                           float scale, float *loss)
{
	struct ce_args a = { logits, targets, n_vocab, scale, loss };
	llm_pool_for(llm_cpu_pool(be), n, 1, ce_task, &a);
}

/* ---------------------------------------------------------------- AdamW */

struct adam_args {
	float *p, *m, *v;
	const float *g;
	float lr, b1, b2, eps, decay, step_size, bc2_sqrt;
};

static void adam_task(void *pp, int64_t i0, int64_t i1, int ith)
{
	struct adam_args *a = pp;
	(void)ith;
	for (int64_t i = i0; i < i1; i++) {
		float g = a->g[i];
		float p = a->p[i] * a->decay;
		float m = a->m[i] = a->b1 * a->m[i] + (1.0f - a->b1) * g;
		float v = a->v[i] = a->b2 * a->v[i] + (1.0f - a->b2) * g * g;
		a->p[i] = p - a->step_size * (m / (sqrtf(v) / a->bc2_sqrt + a->eps));
	}
}

/* As torch.optim.AdamW computes it (single-tensor path). */
void llm_cpu_adamw(struct llm_backend *be, float *p, const float *g, float *m,
                   float *v, int64_t n, float lr, float beta1, float beta2,
                   float eps, float wd, int64_t step)
{
	double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
	struct adam_args a = { p, m, v, g, lr, beta1, beta2, eps,
	                       (float)(1.0 - (double)lr * wd), (float)(lr / bc1),
	                       (float)sqrt(bc2) };
	llm_pool_for(llm_cpu_pool(be), n, 1 << 14, adam_task, &a);
}
