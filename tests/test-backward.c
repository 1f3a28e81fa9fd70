/*
 * test-backward - every backward op of the CPU backend against central
 * finite differences of its forward op: for a random dy, the gradient of
 * L = sum(dy * f(x)) computed by the op must match (L(x + h) - L(x - h)) / 2h
 * entry by entry.  Also gemm against loops, AdamW against its formula, and
 * the results are the same bits on 1 and 3 threads.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/model.h"
#include "llmkit/tensor.h"
#include "testutil.h"

static struct llm_backend *be;

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float *rnd(size_t n, unsigned *s, float scale)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	for (size_t i = 0; i < n; i++)
		p[i] = frand(s) * scale;
	return p;
}

static double dot(const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* Compare an analytic gradient with finite differences of loss() over
 * every entry of x (n entries). */
typedef double (*loss_fn)(void *ctx);

static void check_grad(const char *what, float *x, size_t n, const float *g,
                       loss_fn loss, void *ctx, float h, double tol)
{
	double worst = 0;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		float x0 = x[i];
		x[i] = x0 + h;
		double lp = loss(ctx);
		x[i] = x0 - h;
		double lm = loss(ctx);
		x[i] = x0;
		double fd = (lp - lm) / (2.0 * (double)h);
		double err = fabs(fd - g[i]) / (fabs(fd) + fabs(g[i]) + 1e-2);
		if (err > worst) {
			worst = err;
			at = i;
		}
	}
	ck_assert_msg(worst < tol, "%s: entry %zu: analytic %g vs finite "
	              "difference, relative error %g", what, at, g[at], worst);
}

/* ---------------------------------------------------------------- matmul */

struct mm_ctx {
	struct llm_tensor *w;
	float *x, *y, *dy;
	int n;
	int n_in, n_out;
	float *wf;    /* f32 values of w (what the fd perturbs for f32) */
};

static double mm_loss(void *p)
{
	struct mm_ctx *c = p;
	be->ops->matmul(be, c->w, c->x, c->y, c->n);
	return dot(c->y, c->dy, (size_t)c->n * c->n_out);
}

START_TEST(matmul_bwd_fd)
{
	/* the quantized ones on a matrix of several conversion tiles */
	static const int types[] = { LLM_F32, LLM_F16, LLM_BF16, LLM_Q8_0, LLM_Q4_K };
	unsigned s = 11;
	for (int ti = 0; ti < 5; ti++) {
		bool q = llm_dtype_traits(types[ti])->quantized;
		int n = q ? 3 : 5, n_in = q ? 256 : 24, n_out = q ? 600 : 13;
		float *wf = rnd((size_t)n_in * n_out, &s, 0.5f);
		const struct llm_dtype_traits *tr = llm_dtype_traits(types[ti]);
		size_t rb = llm_row_size(types[ti], n_in);
		void *wd = malloc(rb * n_out);
		for (int r = 0; r < n_out; r++)
			tr->from_float(wf + r * n_in, (char *)wd + r * rb, n_in);
		struct llm_tensor w = { "w", types[ti], 2, { n_in, n_out, 1, 1 },
		                        rb * n_out, wd };
		struct mm_ctx c = { &w, rnd((size_t)n * n_in, &s, 1), malloc(sizeof(float) * n * n_out),
		                    rnd((size_t)n * n_out, &s, 1), n, n_in, n_out, wf };
		float *dx = rnd((size_t)n * n_in, &s, 1), *dx0 = malloc(sizeof(float) * n * n_in);
		memcpy(dx0, dx, sizeof(float) * n * n_in);
		/* beta = 1 adds to what is there */
		be->ops->matmul_bwd(be, &w, c.dy, dx, n, 1.0f);
		for (int i = 0; i < n * n_in; i++)
			dx[i] -= dx0[i];
		ck_assert(tr->from_float && tr->to_float);
		if (!q) {
			check_grad(llm_dtype_name(types[ti]), c.x, (size_t)n * n_in, dx,
			           mm_loss, &c, 1e-2f, 2e-3);
		} else {
			/* the forward quantizes activations too, so finite differences
			 * through it are steps; the gradient is dy . dequant(w) */
			float *wq = malloc(sizeof(float) * n_in * n_out);
			for (int r = 0; r < n_out; r++)
				tr->to_float((char *)wd + r * rb, wq + r * n_in, n_in);
			for (int i = 0; i < n; i++)
				for (int j = 0; j < n_in; j++) {
					double acc = 0;
					for (int r = 0; r < n_out; r++)
						acc += (double)c.dy[i * n_out + r] * wq[r * n_in + j];
					ck_assert_msg(fabs(dx[i * n_in + j] - acc) < 1e-4 * (1 + fabs(acc)),
					              "%s dx[%d][%d] %g vs %g", llm_dtype_name(types[ti]),
					              i, j, dx[i * n_in + j], acc);
				}
			free(wq);
		}
		/* beta = 0 overwrites */
		be->ops->matmul_bwd(be, &w, c.dy, dx0, n, 0.0f);
		for (int i = 0; i < n * n_in; i++)
			ck_assert_float_eq_tol(dx0[i], dx[i], 1e-4);
		free(wf); free(wd); free(c.x); free(c.y); free(c.dy); free(dx); free(dx0);
	}
}
END_TEST

/* ---------------------------------------------------------------- rmsnorm */

struct rms_ctx {
	float *x, *w, *y, *dy;
	int n, d;
};

static double rms_loss(void *p)
{
	struct rms_ctx *c = p;
	be->ops->rmsnorm(be, c->x, c->w, c->y, c->n, c->d, 1e-5f);
	return dot(c->y, c->dy, (size_t)c->n * c->d);
}

START_TEST(rmsnorm_bwd_fd)
{
	unsigned s = 3;
	int n = 4, d = 19;
	struct rms_ctx c = { rnd(n * d, &s, 1), rnd(d, &s, 1), malloc(sizeof(float) * n * d),
	                     rnd(n * d, &s, 1), n, d };
	float *dx = calloc(n * d, sizeof(float)), *dw = calloc(d, sizeof(float));
	be->ops->rmsnorm_bwd(be, c.x, c.w, c.dy, dx, dw, n, d, 1e-5f);
	check_grad("rmsnorm dx", c.x, n * d, dx, rms_loss, &c, 1e-3f, 2e-3);
	check_grad("rmsnorm dw", c.w, d, dw, rms_loss, &c, 1e-3f, 2e-3);
	/* dw == NULL: dx alone, added */
	float *dx2 = calloc(n * d, sizeof(float));
	be->ops->rmsnorm_bwd(be, c.x, c.w, c.dy, dx2, NULL, n, d, 1e-5f);
	be->ops->rmsnorm_bwd(be, c.x, c.w, c.dy, dx2, NULL, n, d, 1e-5f);
	for (int i = 0; i < n * d; i++)
		ck_assert_float_eq_tol(dx2[i], 2 * dx[i], 1e-5);
	free(c.x); free(c.w); free(c.y); free(c.dy); free(dx); free(dw); free(dx2);
}
END_TEST

/* ---------------------------------------------------------------- rope */

struct rope_ctx {
	float *x, *y, *dy;
	int32_t *pos;
	int n, nh, hd;
	struct llm_rope *r;
};

static double rope_loss(void *p)
{
	struct rope_ctx *c = p;
	memcpy(c->y, c->x, sizeof(float) * c->n * c->nh * c->hd);
	be->ops->rope(be, c->y, c->pos, c->n, c->nh, c->hd, c->r);
	return dot(c->y, c->dy, (size_t)c->n * c->nh * c->hd);
}

START_TEST(rope_bwd_fd)
{
	unsigned s = 5;
	for (int kind = 0; kind < 2; kind++) {
		int n = 3, nh = 2, hd = 8;
		float inv[3];
		for (int i = 0; i < 3; i++)
			inv[i] = powf(10000.0f, -2.0f * i / hd);
		struct llm_rope r = { kind ? LLM_ROPE_NEOX : LLM_ROPE_NORM, 6, 10000.0f, inv,
		                      kind ? 1.2f : 1.0f };
		int32_t pos[3] = { 0, 7, 130 };
		struct rope_ctx c = { rnd(n * nh * hd, &s, 1), malloc(sizeof(float) * n * nh * hd),
		                      rnd(n * nh * hd, &s, 1), pos, n, nh, hd, &r };
		float *g = malloc(sizeof(float) * n * nh * hd);
		memcpy(g, c.dy, sizeof(float) * n * nh * hd);
		be->ops->rope_bwd(be, g, pos, n, nh, hd, &r);
		check_grad(kind ? "rope neox" : "rope norm", c.x, n * nh * hd, g, rope_loss,
		           &c, 1e-2f, 1e-3);
		free(c.x); free(c.y); free(c.dy); free(g);
	}
}
END_TEST

/* ---------------------------------------------------------------- attention */

struct attn_ctx {
	struct llm_attn_train at;
	float *q, *k, *v, *o, *lse, *dout;
	int n;
};

static double attn_loss(void *p)
{
	struct attn_ctx *c = p;
	be->ops->attn_train(be, &c->at, c->q, c->k, c->v, c->o, c->lse);
	return dot(c->o, c->dout, (size_t)c->n * c->at.n_head * c->at.head_dim);
}

/* Plain softmax attention over one row, for the forward check. */
static void attn_naive(const struct llm_attn_train *at, const float *q,
                       const float *k, const float *v, float *o)
{
	int T = at->seq_len, hd = at->head_dim, g = at->n_head / at->n_head_kv;
	int qs = at->n_head * hd, ks = at->n_head_kv * hd;
	for (int s = 0; s < at->n_seq; s++)
		for (int i = 0; i < T; i++)
			for (int h = 0; h < at->n_head; h++) {
				const float *qi = q + (int64_t)(s * T + i) * qs + h * hd;
				double w[64], mx = -1e30, sum = 0;
				int j0 = at->start[s * T + i];
				for (int j = j0; j <= i; j++) {
					const float *kj = k + (int64_t)(s * T + j) * ks + (h / g) * hd;
					w[j] = dot(qi, kj, hd) * at->scale;
					mx = w[j] > mx ? w[j] : mx;
				}
				for (int j = j0; j <= i; j++)
					sum += (w[j] = exp(w[j] - mx));
				for (int d = 0; d < hd; d++) {
					double acc = 0;
					for (int j = j0; j <= i; j++)
						acc += w[j] / sum * v[(int64_t)(s * T + j) * ks + (h / g) * hd + d];
					o[(int64_t)(s * T + i) * qs + h * hd + d] = (float)acc;
				}
			}
}

START_TEST(attn_train_fd)
{
	unsigned s = 9;
	int n_seq = 2, T = 6, nh = 4, nkv = 2, hd = 4, n = n_seq * T;
	/* sequence 0: one document; sequence 1: documents at 0, 2 and 5 */
	int32_t start[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 5 };
	struct attn_ctx c = { { n_seq, T, nh, nkv, hd, 0.5f, start },
	                      rnd(n * nh * hd, &s, 1), rnd(n * nkv * hd, &s, 1),
	                      rnd(n * nkv * hd, &s, 1), malloc(sizeof(float) * n * nh * hd),
	                      malloc(sizeof(float) * n * nh), rnd(n * nh * hd, &s, 1), n };
	float *ref = malloc(sizeof(float) * n * nh * hd);
	attn_loss(&c);
	attn_naive(&c.at, c.q, c.k, c.v, ref);
	for (int i = 0; i < n * nh * hd; i++)
		ck_assert_float_eq_tol(c.o[i], ref[i], 1e-5);
	float *dq = malloc(sizeof(float) * n * nh * hd), *dk = malloc(sizeof(float) * n * nkv * hd);
	float *dv = malloc(sizeof(float) * n * nkv * hd);
	be->ops->attn_train_bwd(be, &c.at, c.q, c.k, c.v, c.o, c.lse, c.dout, dq, dk, dv);
	check_grad("attention dq", c.q, n * nh * hd, dq, attn_loss, &c, 1e-2f, 2e-3);
	check_grad("attention dk", c.k, n * nkv * hd, dk, attn_loss, &c, 1e-2f, 2e-3);
	check_grad("attention dv", c.v, n * nkv * hd, dv, attn_loss, &c, 1e-2f, 2e-3);
	free(c.q); free(c.k); free(c.v); free(c.o); free(c.lse); free(c.dout);
	free(ref); free(dq); free(dk); free(dv);
}
END_TEST

/* ---------------------------------------------------------------- swiglu */

struct sw_ctx {
	float *g, *u, *h, *dh;
	int n;
};

static double sw_loss(void *p)
{
	struct sw_ctx *c = p;
	be->ops->swiglu_fwd(be, c->g, c->u, c->h, c->n);
	return dot(c->h, c->dh, c->n);
}

START_TEST(swiglu_fd)
{
	unsigned s = 13;
	int n = 37;
	struct sw_ctx c = { rnd(n, &s, 4), rnd(n, &s, 2), malloc(sizeof(float) * n),
	                    rnd(n, &s, 1), n };
	float *dg = malloc(sizeof(float) * n), *du = malloc(sizeof(float) * n);
	sw_loss(&c);
	for (int i = 0; i < n; i++)
		ck_assert_float_eq_tol(c.h[i], c.g[i] / (1 + expf(-c.g[i])) * c.u[i], 1e-6);
	be->ops->swiglu_bwd(be, c.g, c.u, c.dh, dg, du, n);
	check_grad("swiglu dg", c.g, n, dg, sw_loss, &c, 1e-3f, 2e-3);
	check_grad("swiglu du", c.u, n, du, sw_loss, &c, 1e-3f, 2e-3);
	free(c.g); free(c.u); free(c.h); free(c.dh); free(dg); free(du);
}
END_TEST

/* ---------------------------------------------------------------- loss */

struct ce_ctx {
	float *x, *tmp, *loss;
	int32_t *tg;
	int n, nv;
};

static double ce_loss(void *p)
{
	struct ce_ctx *c = p;
	memcpy(c->tmp, c->x, sizeof(float) * c->n * c->nv);
	be->ops->cross_entropy(be, c->tmp, c->tg, c->n, c->nv, 1.0f, c->loss);
	double s = 0;
	for (int i = 0; i < c->n; i++)
		s += c->loss[i];
	return s;
}

START_TEST(cross_entropy_fd)
{
	unsigned s = 17;
	int n = 3, nv = 11;
	int32_t tg[3] = { 4, -1, 10 };
	struct ce_ctx c = { rnd(n * nv, &s, 3), malloc(sizeof(float) * n * nv),
	                    malloc(sizeof(float) * n), tg, n, nv };
	ce_loss(&c);
	/* row 0's loss by hand */
	double mx = -1e30, sum = 0;
	for (int j = 0; j < nv; j++)
		mx = c.x[j] > mx ? c.x[j] : mx;
	for (int j = 0; j < nv; j++)
		sum += exp(c.x[j] - mx);
	ck_assert_double_eq_tol(c.loss[0], mx + log(sum) - c.x[4], 1e-5);
	ck_assert_float_eq(c.loss[1], 0.0f);
	float *g = malloc(sizeof(float) * n * nv);
	memcpy(g, c.tmp, sizeof(float) * n * nv);   /* gradient, scale 1 */
	check_grad("cross entropy", c.x, n * nv, g, ce_loss, &c, 1e-2f, 2e-3);
	for (int j = 0; j < nv; j++)
		ck_assert_float_eq(g[nv + j], 0.0f);
	/* scale multiplies the gradient */
	memcpy(c.tmp, c.x, sizeof(float) * n * nv);
	be->ops->cross_entropy(be, c.tmp, tg, n, nv, 0.25f, c.loss);
	for (int i = 0; i < n * nv; i++)
		ck_assert_float_eq_tol(c.tmp[i], 0.25f * g[i], 1e-6);
	free(c.x); free(c.tmp); free(c.loss); free(g);
}
END_TEST

/* ---------------------------------------------------------------- gemm, adamw */

START_TEST(gemm_matches_loops)
{
	unsigned s = 21;
	int m = 70, n = 130, k = 40;
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++) {
			float *a = rnd(m * k, &s, 1), *b = rnd(k * n, &s, 1), *c = rnd(m * n, &s, 1);
			float *c0 = malloc(sizeof(float) * m * n);
			memcpy(c0, c, sizeof(float) * m * n);
			int lda = ta ? m : k, ldb = tb ? k : n;
			be->ops->gemm(be, ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, c, n);
			for (int i = 0; i < m; i++)
				for (int j = 0; j < n; j++) {
					double acc = 0;
					for (int l = 0; l < k; l++)
						acc += (double)(ta ? a[l * lda + i] : a[i * lda + l]) *
						       (tb ? b[j * ldb + l] : b[l * ldb + j]);
					ck_assert_double_eq_tol(c[i * n + j], 0.5 * acc + 2.0 * c0[i * n + j],
					                        1e-4);
				}
			free(a); free(b); free(c); free(c0);
		}
}
END_TEST

START_TEST(adamw_formula)
{
	unsigned s = 23;
	int n = 50;
	float *p = rnd(n, &s, 1), *g = rnd(n, &s, 1), *m = rnd(n, &s, 0.1f);
	float *v = rnd(n, &s, 0.1f);
	for (int i = 0; i < n; i++)
		v[i] = fabsf(v[i]);
	float *p0 = malloc(sizeof(float) * n), *m0 = malloc(sizeof(float) * n);
	float *v0 = malloc(sizeof(float) * n);
	memcpy(p0, p, sizeof(float) * n);
	memcpy(m0, m, sizeof(float) * n);
	memcpy(v0, v, sizeof(float) * n);
	float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
	be->ops->adamw(be, p, g, m, v, n, lr, b1, b2, eps, wd, 3);
	for (int i = 0; i < n; i++) {
		double mm = b1 * m0[i] + (1 - b1) * g[i];
		double vv = b2 * v0[i] + (1 - b2) * (double)g[i] * g[i];
		double pp = p0[i] * (1 - lr * wd);
		double mh = mm / (1 - pow(b1, 3)), vh = vv / (1 - pow(b2, 3));
		pp -= lr * mh / (sqrt(vh) + eps);
		ck_assert_double_eq_tol(m[i], mm, 1e-6);
		ck_assert_double_eq_tol(v[i], vv, 1e-6);
		ck_assert_double_eq_tol(p[i], pp, 1e-5);
	}
	free(p); free(g); free(m); free(v); free(p0); free(m0); free(v0);
}
END_TEST

/* The same bits on 1 and 3 threads (checkpoint/resume relies on it). */
START_TEST(threads_same_bits)
{
	struct llm_backend *b1, *b3;
	ck_assert_int_eq(llm_backend_cpu_init(&b1, 1), 0);
	ck_assert_int_eq(llm_backend_cpu_init(&b3, 3), 0);
	unsigned s = 29;
	int n_seq = 3, T = 40, nh = 4, nkv = 2, hd = 16, n = n_seq * T;
	int32_t *start = calloc(n, sizeof(int32_t));
	struct llm_attn_train at = { n_seq, T, nh, nkv, hd, 0.25f, start };
	float *q = rnd(n * nh * hd, &s, 1), *k = rnd(n * nkv * hd, &s, 1);
	float *v = rnd(n * nkv * hd, &s, 1), *dout = rnd(n * nh * hd, &s, 1);
	float *o[2], *lse[2], *dq[2], *dk[2], *dv[2], *c[2];
	float *a = rnd(300 * 200, &s, 1), *bm = rnd(200 * 250, &s, 1);
	struct llm_backend *bs[2] = { b1, b3 };
	for (int i = 0; i < 2; i++) {
		o[i] = malloc(sizeof(float) * n * nh * hd);
		lse[i] = malloc(sizeof(float) * n * nh);
		dq[i] = malloc(sizeof(float) * n * nh * hd);
		dk[i] = malloc(sizeof(float) * n * nkv * hd);
		dv[i] = malloc(sizeof(float) * n * nkv * hd);
		c[i] = calloc(300 * 250, sizeof(float));
		bs[i]->ops->attn_train(bs[i], &at, q, k, v, o[i], lse[i]);
		bs[i]->ops->attn_train_bwd(bs[i], &at, q, k, v, o[i], lse[i], dout, dq[i],
		                           dk[i], dv[i]);
		bs[i]->ops->gemm(bs[i], LLM_GEMM_N, LLM_GEMM_N, 300, 250, 200, 1.0f, a, 200,
		                 bm, 250, 0.0f, c[i], 250);
	}
	ck_assert(!memcmp(o[0], o[1], sizeof(float) * n * nh * hd));
	ck_assert(!memcmp(dq[0], dq[1], sizeof(float) * n * nh * hd));
	ck_assert(!memcmp(dk[0], dk[1], sizeof(float) * n * nkv * hd));
	ck_assert(!memcmp(dv[0], dv[1], sizeof(float) * n * nkv * hd));
	ck_assert(!memcmp(c[0], c[1], sizeof(float) * 300 * 250));
	for (int i = 0; i < 2; i++) {
		free(o[i]); free(lse[i]); free(dq[i]); free(dk[i]); free(dv[i]); free(c[i]);
	}
	free(start); free(q); free(k); free(v); free(dout); free(a); free(bm);
	llm_backend_free(b1);
	llm_backend_free(b3);
}
END_TEST

/* matmul_train: matmul's values (for every dtype), the same bits on 1 and
 * 3 threads. */
START_TEST(matmul_train_matches)
{
	static const int types[] = { LLM_F32, LLM_F16, LLM_Q4_K };
	struct llm_backend *b1, *b3;
	ck_assert_int_eq(llm_backend_cpu_init(&b1, 1), 0);
	ck_assert_int_eq(llm_backend_cpu_init(&b3, 3), 0);
	unsigned s = 31;
	int n = 150, n_in = 256, n_out = 700;
	float *x = rnd((size_t)n * n_in, &s, 1);
	float *wf = rnd((size_t)n_in * n_out, &s, 0.1f);
	float *y[3];
	for (int i = 0; i < 3; i++)
		y[i] = malloc(sizeof(float) * n * n_out);
	for (int ti = 0; ti < 3; ti++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(types[ti]);
		size_t rb = llm_row_size(types[ti], n_in);
		void *wd = malloc(rb * n_out);
		for (int r = 0; r < n_out; r++)
			tr->from_float(wf + r * n_in, (char *)wd + r * rb, n_in);
		struct llm_tensor w = { "w", types[ti], 2, { n_in, n_out, 1, 1 },
		                        rb * n_out, wd };
		be->ops->matmul(be, &w, x, y[0], n);
		b1->ops->matmul_train(b1, &w, x, y[1], n);
		b3->ops->matmul_train(b3, &w, x, y[2], n);
		ck_assert(!memcmp(y[1], y[2], sizeof(float) * n * n_out));
		for (int i = 0; i < n * n_out; i++)
			ck_assert_msg(fabsf(y[0][i] - y[1][i]) < 1e-3f * (1 + fabsf(y[0][i])),
			              "%s: y[%d] %g vs matmul %g", llm_dtype_name(types[ti]),
			              i, y[1][i], y[0][i]);
		free(wd);
	}
	for (int i = 0; i < 3; i++)
		free(y[i]);
	free(x);
	free(wf);
	llm_backend_free(b1);
	llm_backend_free(b3);
}
END_TEST

int main(void)
{
	if (llm_backend_cpu_init(&be, 2))
		return 1;
	Suite *s = suite_create("backward");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, matmul_bwd_fd);
	tcase_add_test(tc, rmsnorm_bwd_fd);
	tcase_add_test(tc, rope_bwd_fd);
	tcase_add_test(tc, attn_train_fd);
	tcase_add_test(tc, swiglu_fd);
	tcase_add_test(tc, cross_entropy_fd);
	tcase_add_test(tc, gemm_matches_loops);
	tcase_add_test(tc, adamw_formula);
	tcase_add_test(tc, threads_same_bits);
	tcase_add_test(tc, matmul_train_matches);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	llm_backend_free(be);
	return failed ? 1 : 0;
}
