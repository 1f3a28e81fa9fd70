/*
 * test-cuda-train - the CUDA backend's training ops against the CPU
 * backend's, op by op on the same inputs (tolerances by op), then LoRA
 * training of stories260K on the GPU against the CPU: losses and the
 * trained adapter close, two GPU runs identical in their bits, a run
 * resumed from a checkpoint identical to an uninterrupted one.
 *
 * Without a GPU (or in a build without CUDA) it exits 77 (SKIP) before
 * testing anything: it never passes without a device.  A missing data
 * directory skips only the model part (said on stderr).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "llmkit/train.h"
#include "checks.h"

static struct llm_backend *cpu, *gpu;




/* Never freed while the backends live: the CUDA backend keeps weights by
 * host address, and a new array at a freed one's address would read the
 * old copy.  The test's memory is small. */

static float *fdup(const float *a, int64_t n)
{
	float *v = malloc((n ? n : 1) * sizeof(float));
	memcpy(v, a, n * sizeof(float));
	return v;
}

/* Largest |got - want| over the largest |want|; NaN is an error. */

/* ||got - want|| / ||want - base|| (base NULL: zeros). */
static double rel_l2(const float *got, const float *want, const float *base,
                     int64_t n)
{
	double e = 0, w = 1e-60;
	for (int64_t i = 0; i < n; i++) {
		double d = (double)got[i] - want[i], c = (double)want[i] - (base ? base[i] : 0);
		e += d * d;
		w += c * c;
	}
	return isnan(e) ? INFINITY : sqrt(e / w);
}


static void *dev_floats(const float *host, int64_t n)
{
	void *d = gpu->ops->alloc(gpu, (n ? n : 1) * sizeof(float));
	if (!d) {
		fprintf(stderr, "FATAL: device alloc of %lld floats failed\n", (long long)n);
		exit(1);
	}
	if (host)
		gpu->ops->upload(gpu, d, host, n * sizeof(float));
	return d;
}

static float *host_of(const void *dev, int64_t n)
{
	float *h = malloc((n ? n : 1) * sizeof(float));
	gpu->ops->synchronize(gpu);
	gpu->ops->download(gpu, h, dev, n * sizeof(float));
	return h;
}

static void expect_no_error(const char *what)
{
	int rc = gpu->ops->status(gpu);
	CHECK(rc == 0, "%s: device error: %s", what, llm_errmsg());
	if (rc) {
		fprintf(stderr, "the CUDA backend is stuck after an error; stopping\n");
		exit(1);
	}
}

/* ---------------------------------------------------------------- gemm */

static void test_gemm(void)
{
	unsigned seed = 11;
	const int m = 37, n = 53, k = 29;
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++)
			for (int bz = 0; bz < 2; bz++) {
				int ar = ta ? k : m, ac = ta ? m : k, lda = ac + 3;
				int br = tb ? n : k, bc = tb ? k : n, ldb = bc + 1;
				int ldc = n + 2;
				float beta = bz ? 0.0f : 0.3f;
				float *a = rnd((int64_t)ar * lda, &seed, 1);
				float *b = rnd((int64_t)br * ldb, &seed, 1);
				float *c = rnd((int64_t)m * ldc, &seed, 1);
				float *cc = fdup(c, (int64_t)m * ldc);
				void *da = dev_floats(a, (int64_t)ar * lda);
				void *db = dev_floats(b, (int64_t)br * ldb);
				void *dc = dev_floats(c, (int64_t)m * ldc);
				cpu->ops->gemm(cpu, ta, tb, m, n, k, 0.7f, a, lda, b, ldb, beta,
				               cc, ldc);
				gpu->ops->gemm(gpu, ta, tb, m, n, k, 0.7f, da, lda, db, ldb, beta,
				               dc, ldc);
				float *g = host_of(dc, (int64_t)m * ldc);
				char what[64];
				snprintf(what, sizeof(what), "gemm %c%c beta %g", ta ? 'T' : 'N',
				         tb ? 'T' : 'N', beta);
				expect_close(what, g, cc, (int64_t)m * ldc, 1e-5);
				/* the padding between rows is left alone */
				int pad_ok = 1;
				for (int i = 0; i < m; i++)
					for (int j = n; j < ldc; j++)
						pad_ok &= g[i * ldc + j] == c[i * ldc + j];
				CHECK(pad_ok, "%s: wrote outside the rows", what);
				/* the same bits again */
				gpu->ops->upload(gpu, dc, c, (int64_t)m * ldc * sizeof(float));
				gpu->ops->gemm(gpu, ta, tb, m, n, k, 0.7f, da, lda, db, ldb, beta,
				               dc, ldc);
				float *g2 = host_of(dc, (int64_t)m * ldc);
				CHECK(!memcmp(g, g2, (size_t)m * ldc * sizeof(float)),
				      "%s: two runs differ", what);
				gpu->ops->dealloc(gpu, da);
				gpu->ops->dealloc(gpu, db);
				gpu->ops->dealloc(gpu, dc);
				free(g);
				free(g2);
				free(cc);
			}
	expect_no_error("gemm");
}

/* ---------------------------------------------------------------- matmul */

static struct llm_tensor make_weight(int type, int n_in, int n_out, unsigned *seed)
{
	struct llm_tensor w;
	float *f = rnd((int64_t)n_in * n_out, seed, 1);
	size_t rb = llm_row_size(type, n_in);
	memset(&w, 0, sizeof(w));
	w.name = "test.weight";
	w.type = type;
	w.n_dims = 2;
	w.ne[0] = n_in;
	w.ne[1] = n_out;
	w.nbytes = rb * n_out;
	w.data = malloc(w.nbytes);
	llm_quantize(type, f, w.data, n_out, n_in, NULL);
	free(f);
	return w;   /* data never freed (see rnd) */
}

static void test_matmul_train(int type, int n_in, int n_out, int n)
{
	unsigned seed = 100 + type;
	struct llm_tensor w = make_weight(type, n_in, n_out, &seed);
	float *x = rnd((int64_t)n * n_in, &seed, 1);
	float *dy = rnd((int64_t)n * n_out, &seed, 1);
	float *dx0 = rnd((int64_t)n * n_in, &seed, 1);
	float *y = malloc((size_t)n * n_out * sizeof(float));
	float *dx = fdup(dx0, (int64_t)n * n_in);
	void *dX = dev_floats(x, (int64_t)n * n_in);
	void *dY = dev_floats(NULL, (int64_t)n * n_out);
	void *dDY = dev_floats(dy, (int64_t)n * n_out);
	void *dDX = dev_floats(dx0, (int64_t)n * n_in);
	char what[96];

	cpu->ops->matmul_train(cpu, &w, x, y, n);
	gpu->ops->matmul_train(gpu, &w, dX, dY, n);
	float *g = host_of(dY, (int64_t)n * n_out);
	snprintf(what, sizeof(what), "matmul_train %s %dx%d, %d rows",
	         llm_dtype_name(type), n_out, n_in, n);
	expect_close(what, g, y, (int64_t)n * n_out, 1e-5);
	free(g);

	for (int b = 0; b < 2; b++) {
		float beta = b ? 0.5f : 0.0f;
		memcpy(dx, dx0, (size_t)n * n_in * sizeof(float));
		gpu->ops->upload(gpu, dDX, dx0, (size_t)n * n_in * sizeof(float));
		cpu->ops->matmul_bwd(cpu, &w, dy, dx, n, beta);
		gpu->ops->matmul_bwd(gpu, &w, dDY, dDX, n, beta);
		g = host_of(dDX, (int64_t)n * n_in);
		snprintf(what, sizeof(what), "matmul_bwd %s %dx%d, %d rows, beta %g",
		         llm_dtype_name(type), n_out, n_in, n, beta);
		expect_close(what, g, dx, (int64_t)n * n_in, 1e-5);
		free(g);
	}
	gpu->ops->dealloc(gpu, dX);
	gpu->ops->dealloc(gpu, dY);
	gpu->ops->dealloc(gpu, dDY);
	gpu->ops->dealloc(gpu, dDX);
	free(x);
	free(dy);
	free(dx0);
	free(y);
	free(dx);
	expect_no_error("matmul_train / matmul_bwd");
}

/* ---------------------------------------------------------------- small ops */

static void test_rmsnorm_bwd(int n, int dim)
{
	unsigned seed = 7 + dim;
	float *x = rnd((int64_t)n * dim, &seed, 2), *w = rnd(dim, &seed, 1);
	float *dy = rnd((int64_t)n * dim, &seed, 1), *dx = rnd((int64_t)n * dim, &seed, 1);
	float *dw = rnd(dim, &seed, 1);
	void *dX = dev_floats(x, (int64_t)n * dim), *dDY = dev_floats(dy, (int64_t)n * dim);
	void *dDX = dev_floats(dx, (int64_t)n * dim), *dDW = dev_floats(dw, dim);
	void *dDX2 = dev_floats(dx, (int64_t)n * dim);
	cpu->ops->rmsnorm_bwd(cpu, x, w, dy, dx, dw, n, dim, 1e-5f);
	gpu->ops->rmsnorm_bwd(gpu, dX, w, dDY, dDX, dDW, n, dim, 1e-5f);
	gpu->ops->rmsnorm_bwd(gpu, dX, w, dDY, dDX2, NULL, n, dim, 1e-5f);
	float *g = host_of(dDX, (int64_t)n * dim), *gw = host_of(dDW, dim);
	float *g2 = host_of(dDX2, (int64_t)n * dim);
	expect_close("rmsnorm_bwd dx", g, dx, (int64_t)n * dim, 1e-5);
	expect_close("rmsnorm_bwd dw", gw, dw, dim, 1e-5);
	CHECK(!memcmp(g, g2, (size_t)n * dim * sizeof(float)),
	      "rmsnorm_bwd: dx depends on whether dw is asked for");
	free(g);
	free(gw);
	free(g2);
	gpu->ops->dealloc(gpu, dX);
	gpu->ops->dealloc(gpu, dDY);
	gpu->ops->dealloc(gpu, dDX);
	gpu->ops->dealloc(gpu, dDW);
	gpu->ops->dealloc(gpu, dDX2);
	expect_no_error("rmsnorm_bwd");
}

static void test_rope_bwd(int kind, int n_rot, float mscale)
{
	unsigned seed = 3 + n_rot;
	const int n = 9, n_head = 3, hd = 64;
	float *inv = malloc(n_rot / 2 * sizeof(float));
	for (int k = 0; k < n_rot / 2; k++)
		inv[k] = powf(10000.0f, -2.0f * k / n_rot);
	struct llm_rope r = { .kind = kind, .n_rot = n_rot, .theta = 10000.0f,
	                      .inv_freq = inv, .mscale = mscale };
	int32_t pos[9];
	for (int i = 0; i < n; i++)
		pos[i] = (i * 131) % 500;
	float *x = rnd((int64_t)n * n_head * hd, &seed, 1);
	void *dX = dev_floats(x, (int64_t)n * n_head * hd);
	cpu->ops->rope_bwd(cpu, x, pos, n, n_head, hd, &r);
	gpu->ops->rope_bwd(gpu, dX, pos, n, n_head, hd, &r);
	float *g = host_of(dX, (int64_t)n * n_head * hd);
	char what[64];
	snprintf(what, sizeof(what), "rope_bwd %s %d of %d, mscale %g",
	         kind == LLM_ROPE_NEOX ? "neox" : "norm", n_rot, hd, mscale);
	expect_close(what, g, x, (int64_t)n * n_head * hd, 2e-5);
	free(g);
	gpu->ops->dealloc(gpu, dX);
	expect_no_error("rope_bwd");
}

static void test_attn(int n_seq, int T, int n_head, int n_head_kv, int hd)
{
	unsigned seed = 5 + T + hd;
	const int64_t n = (int64_t)n_seq * T;
	const int qd = n_head * hd, kd = n_head_kv * hd;
	int32_t *start = malloc(n * sizeof(int32_t));
	/* sequence 0: documents at 0, T/4 and 2T/3; the others one document */
	for (int s = 0; s < n_seq; s++)
		for (int i = 0; i < T; i++)
			start[s * T + i] = s ? 0 : i >= 2 * T / 3 ? 2 * T / 3 : i >= T / 4 ? T / 4 : 0;
	struct llm_attn_train at = { n_seq, T, n_head, n_head_kv, hd,
	                             1.0f / sqrtf((float)hd), start };
	float *q = rnd(n * qd, &seed, 1), *k = rnd(n * kd, &seed, 1);
	float *v = rnd(n * kd, &seed, 1), *dout = rnd(n * qd, &seed, 1);
	float *out = malloc(n * qd * sizeof(float)), *lse = malloc(n * n_head * sizeof(float));
	float *dq = malloc(n * qd * sizeof(float)), *dk = malloc(n * kd * sizeof(float));
	float *dv = malloc(n * kd * sizeof(float));
	void *dQ = dev_floats(q, n * qd), *dK = dev_floats(k, n * kd);
	void *dV = dev_floats(v, n * kd), *dO = dev_floats(dout, n * qd);
	void *gOut = dev_floats(NULL, n * qd), *gL = dev_floats(NULL, n * n_head);
	void *gdq = dev_floats(NULL, n * qd), *gdk = dev_floats(NULL, n * kd);
	void *gdv = dev_floats(NULL, n * kd);
	char what[96];

	cpu->ops->attn_train(cpu, &at, q, k, v, out, lse);
	gpu->ops->attn_train(gpu, &at, dQ, dK, dV, gOut, gL);
	float *go = host_of(gOut, n * qd), *gl = host_of(gL, n * n_head);
	snprintf(what, sizeof(what), "attn_train %dx%d, %d/%d heads of %d: out",
	         n_seq, T, n_head, n_head_kv, hd);
	expect_close(what, go, out, n * qd, 1e-5);
	snprintf(what, sizeof(what), "attn_train %dx%d, %d/%d heads of %d: lse",
	         n_seq, T, n_head, n_head_kv, hd);
	expect_close(what, gl, lse, n * n_head, 1e-5);

	/* the backward from the CPU's saved out and lse on both */
	gpu->ops->upload(gpu, gOut, out, n * qd * sizeof(float));
	gpu->ops->upload(gpu, gL, lse, n * n_head * sizeof(float));
	cpu->ops->attn_train_bwd(cpu, &at, q, k, v, out, lse, dout, dq, dk, dv);
	gpu->ops->attn_train_bwd(gpu, &at, dQ, dK, dV, gOut, gL, dO, gdq, gdk, gdv);
	float *gq = host_of(gdq, n * qd), *gk = host_of(gdk, n * kd);
	float *gv = host_of(gdv, n * kd);
	snprintf(what, sizeof(what), "attn_train_bwd %dx%d, %d/%d heads of %d: dq",
	         n_seq, T, n_head, n_head_kv, hd);
	expect_close(what, gq, dq, n * qd, 1e-4);
	what[strlen(what) - 1] = 'k';
	expect_close(what, gk, dk, n * kd, 1e-4);
	what[strlen(what) - 1] = 'v';
	expect_close(what, gv, dv, n * kd, 1e-4);

	/* the same bits again (no atomics) */
	gpu->ops->attn_train_bwd(gpu, &at, dQ, dK, dV, gOut, gL, dO, gdq, gdk, gdv);
	float *gq2 = host_of(gdq, n * qd), *gk2 = host_of(gdk, n * kd);
	float *gv2 = host_of(gdv, n * kd);
	CHECK(!memcmp(gq, gq2, n * qd * sizeof(float)) &&
	      !memcmp(gk, gk2, n * kd * sizeof(float)) &&
	      !memcmp(gv, gv2, n * kd * sizeof(float)),
	      "attn_train_bwd %dx%d: two runs differ", n_seq, T);

	void *bufs[] = { dQ, dK, dV, dO, gOut, gL, gdq, gdk, gdv };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		gpu->ops->dealloc(gpu, bufs[i]);
	float *hs[] = { go, gl, gq, gk, gv, gq2, gk2, gv2, q, k, v, dout, out, lse,
	                dq, dk, dv };
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		free(hs[i]);
	free(start);
	expect_no_error("attn_train");
}

static void test_swiglu(void)
{
	unsigned seed = 21;
	const int64_t n = 3001;
	float *g = rnd(n, &seed, 6), *u = rnd(n, &seed, 2), *dh = rnd(n, &seed, 1);
	float *h = malloc(n * sizeof(float)), *dg = malloc(n * sizeof(float));
	float *du = malloc(n * sizeof(float));
	void *dG = dev_floats(g, n), *dU = dev_floats(u, n), *dH = dev_floats(NULL, n);
	void *dDH = dev_floats(dh, n), *dDG = dev_floats(NULL, n), *dDU = dev_floats(NULL, n);
	cpu->ops->swiglu_fwd(cpu, g, u, h, n);
	cpu->ops->swiglu_bwd(cpu, g, u, dh, dg, du, n);
	gpu->ops->swiglu_fwd(gpu, dG, dU, dH, n);
	gpu->ops->swiglu_bwd(gpu, dG, dU, dDH, dDG, dDU, n);
	float *a = host_of(dH, n), *b = host_of(dDG, n), *c = host_of(dDU, n);
	expect_close("swiglu_fwd", a, h, n, 1e-6);
	expect_close("swiglu_bwd dg", b, dg, n, 1e-6);
	expect_close("swiglu_bwd du", c, du, n, 1e-6);
	void *bufs[] = { dG, dU, dH, dDH, dDG, dDU };
	for (size_t i = 0; i < 6; i++)
		gpu->ops->dealloc(gpu, bufs[i]);
	free(a);
	free(b);
	free(c);
	free(h);
	free(dg);
	free(du);
	expect_no_error("swiglu");
}

static void test_cross_entropy(int nv)
{
	unsigned seed = 31 + nv;
	const int n = 6;
	const int32_t tg[6] = { 3, -1, nv - 1, 0, nv / 2, -1 };
	float *lg = rnd((int64_t)n * nv, &seed, 8);
	float loss[6], *cl = fdup(lg, (int64_t)n * nv);
	void *dL = dev_floats(lg, (int64_t)n * nv), *dLoss = dev_floats(NULL, n);
	cpu->ops->cross_entropy(cpu, cl, tg, n, nv, 0.25f, loss);
	gpu->ops->cross_entropy(gpu, dL, tg, n, nv, 0.25f, dLoss);
	float *g = host_of(dL, (int64_t)n * nv), *gl = host_of(dLoss, n);
	char what[64];
	snprintf(what, sizeof(what), "cross_entropy over %d: gradient", nv);
	expect_close(what, g, cl, (int64_t)n * nv, 1e-5);
	snprintf(what, sizeof(what), "cross_entropy over %d: loss", nv);
	expect_close(what, gl, loss, n, 1e-5);
	CHECK(gl[1] == 0 && gl[5] == 0 && g[nv] == 0 && g[2 * nv - 1] == 0,
	      "cross_entropy: rows without a target are not zero");
	free(g);
	free(gl);
	free(cl);
	gpu->ops->dealloc(gpu, dL);
	gpu->ops->dealloc(gpu, dLoss);
	expect_no_error("cross_entropy");
}

static void test_adamw(void)
{
	unsigned seed = 41;
	const int64_t n = 5000;
	float *p = rnd(n, &seed, 1), *g = rnd(n, &seed, 1), *m = rnd(n, &seed, 0.1f);
	float *v = rnd(n, &seed, 0.1f);
	for (int64_t i = 0; i < n; i++)
		v[i] = v[i] * v[i];
	void *dP = dev_floats(p, n), *dG = dev_floats(g, n), *dM = dev_floats(m, n);
	void *dV = dev_floats(v, n);
	for (int step = 1; step <= 3; step++) {
		cpu->ops->adamw(cpu, p, g, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step);
		gpu->ops->adamw(gpu, dP, dG, dM, dV, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f,
		                step);
	}
	float *a = host_of(dP, n), *b = host_of(dM, n), *c = host_of(dV, n);
	expect_close("adamw p", a, p, n, 1e-6);
	expect_close("adamw m", b, m, n, 1e-6);
	expect_close("adamw v", c, v, n, 1e-6);
	free(a);
	free(b);
	free(c);
	gpu->ops->dealloc(gpu, dP);
	gpu->ops->dealloc(gpu, dG);
	gpu->ops->dealloc(gpu, dM);
	gpu->ops->dealloc(gpu, dV);
	expect_no_error("adamw");
}

/* ---------------------------------------------------------------- training */

#define T_LEN 32

static void batch_fill(int32_t *tok, int32_t *tgt, int32_t *start, int n_seq,
                       int nv, int salt)
{
	for (int s = 0; s < n_seq; s++)
		for (int i = 0; i < T_LEN; i++) {
			int r = s * T_LEN + i;
			tok[r] = (r * 37 + salt * 11 + 5) % nv;
			tgt[r] = i % 7 == 6 ? -1 : (r * 53 + salt * 3 + 1) % nv;
			/* sequence 1 packs two documents */
			start[r] = s == 1 && i >= 20 ? 20 : 0;
		}
}

/* A trainer of an adapter of rank 4 on every target (B nonzero). */
static struct llm_trainer *trainer(const struct llm_model *m, struct llm_lora **lora,
                                   const char *device, float dropout,
                                   bool recompute)
{
	struct llm_train_params p;
	struct llm_trainer *t;
	llm_train_params_default(&p);
	p.n_threads = 2;
	p.seq_len = T_LEN;
	p.max_seqs = 2;
	p.dropout = dropout;
	p.recompute = recompute;
	p.seed = 3;
	p.lr = 1e-2f;
	p.weight_decay = 0.01f;
	p.device = device;
	if (llm_lora_new(lora, m, 4, 8, LLM_LORA_ALL, false)) {
		failf("llm_lora_new: %s", llm_errmsg());
		return NULL;
	}
	llm_lora_init_peft(*lora, 42);
	for (int64_t j = 0; j < (*lora)->n_params; j++)
		(*lora)->mem[j] += 0.01f * (float)((j * 7919) % 13 - 6);
	if (llm_trainer_new(&t, m, *lora, &p)) {
		failf("llm_trainer_new (%s): %s", device ? device : "cpu", llm_errmsg());
		llm_lora_free(*lora);
		*lora = NULL;
		return NULL;
	}
	return t;
}

#define N_STEPS 3

/* N_STEPS steps (two micro-batches each); losses into loss[]; with ckpt,
 * the state is saved after step 2 into it. */
static int run_steps(struct llm_trainer *t, const struct llm_model *m, int from,
                     double *loss, const char *ckpt)
{
	int32_t tok[2][2 * T_LEN], tgt[2][2 * T_LEN], st[2][2 * T_LEN];
	for (int s = from; s < N_STEPS; s++) {
		struct llm_train_batch mb[2];
		struct llm_train_stats stats;
		for (int k = 0; k < 2; k++) {
			batch_fill(tok[k], tgt[k], st[k], 2, m->hp.n_vocab, 2 * s + k);
			mb[k] = (struct llm_train_batch){ 2, tok[k], tgt[k], st[k] };
		}
		if (llm_trainer_step(t, mb, 2, &stats)) {
			failf("step %d: %s", s + 1, llm_errmsg());
			return -1;
		}
		loss[s] = stats.loss;
		if (ckpt && s == 1 && llm_trainer_save(t, ckpt, NULL, 0)) {
			failf("save: %s", llm_errmsg());
			return -1;
		}
	}
	return 0;
}

static void test_training(void)
{
	const char *dir = getenv("LLMKIT_DATA");
	char path[1024], ckpt[64];
	struct llm_model *m;
	if (!dir)
		dir = "../shared/data";
	snprintf(path, sizeof(path), "%s/models/stories260K.gguf", dir);
	if (access(path, R_OK)) {
		fprintf(stderr, "note: %s not found: training part skipped\n", path);
		return;
	}
	if (llm_model_load(&m, path)) {
		failf("%s", llm_errmsg());
		return;
	}
	snprintf(ckpt, sizeof(ckpt), "/tmp/test-cuda-train.%d.llmt", (int)getpid());

	for (int drop = 0; drop < 2; drop++) {
		float dropout = drop ? 0.1f : 0.0f;
		struct llm_lora *lc, *lg, *lg2, *lr, *lrc;
		double loss_c[N_STEPS], loss_g[N_STEPS], loss_g2[N_STEPS], loss_r[N_STEPS];
		struct llm_trainer *tc = trainer(m, &lc, NULL, dropout, false);
		struct llm_trainer *tg = trainer(m, &lg, "cuda", dropout, false);
		struct llm_trainer *tg2 = trainer(m, &lg2, "cuda", dropout, true);
		if (!tc || !tg || !tg2)
			return;
		float *l0 = fdup(lc->mem, lc->n_params);   /* the initial adapter */
		if (run_steps(tc, m, 0, loss_c, NULL) || run_steps(tg, m, 0, loss_g, ckpt) ||
		    run_steps(tg2, m, 0, loss_g2, NULL))
			return;
		size_t bytes = lc->n_params * sizeof(float);
		for (int s = 0; s < N_STEPS; s++) {
			CHECK(fabs(loss_g[s] - loss_c[s]) <= 1e-4 * loss_c[s],
			      "dropout %g, step %d: GPU loss %.9g, CPU %.9g", dropout, s + 1,
			      loss_g[s], loss_c[s]);
			/* recompute runs the same kernels again: the same bits */
			CHECK(loss_g2[s] == loss_g[s], "dropout %g, step %d: GPU runs differ: "
			      "loss %.17g vs %.17g", dropout, s + 1, loss_g2[s], loss_g[s]);
		}
		fprintf(stderr, "dropout %g: losses CPU %.7f %.7f %.7f, GPU %.7f %.7f %.7f\n",
		        dropout, loss_c[0], loss_c[1], loss_c[2], loss_g[0], loss_g[1],
		        loss_g[2]);
		/* the adapter, updated in place on the host by every step: its
		 * change close to the CPU's (in norm: Adam's first steps move every
		 * element by about lr, so an element whose gradient is within
		 * rounding of 0 may step either way - one such is ~0.5% here) */
		double e = rel_l2(lg->mem, lc->mem, l0, lc->n_params);
		CHECK(e <= 3e-2, "dropout %g: trained adapter: relative L2 error of "
		      "the change %.3g", dropout, e);
		CHECK(memcmp(lc->mem, l0, bytes), "dropout %g: the CPU adapter did not "
		      "change", dropout);
		CHECK(!memcmp(lg->mem, lg2->mem, bytes), "dropout %g: two GPU runs give "
		      "adapters that differ in their bits", dropout);
		const struct llm_lora *gg = llm_trainer_lora_grad(tg);
		const struct llm_lora *gc = llm_trainer_lora_grad(tc);
		e = rel_l2(gg->mem, gc->mem, NULL, lc->n_params);
		CHECK(e <= 1e-2, "dropout %g: last step's gradient: relative L2 error "
		      "%.3g", dropout, e);

		/* resumed after step 2 from the checkpoint: step 3 the same bits */
		struct llm_trainer *tr = trainer(m, &lr, "cuda", dropout, false);
		if (!tr)
			return;
		if (llm_trainer_load(tr, ckpt, NULL, NULL)) {
			failf("load: %s", llm_errmsg());
		} else {
			CHECK(llm_trainer_steps(tr) == 2, "resumed at step %lld",
			      (long long)llm_trainer_steps(tr));
			if (!run_steps(tr, m, 2, loss_r, NULL)) {
				CHECK(loss_r[2] == loss_g[2], "resumed step 3: loss %.17g, "
				      "uninterrupted %.17g", loss_r[2], loss_g[2]);
				CHECK(!memcmp(lr->mem, lg->mem, bytes), "resumed run's adapter "
				      "differs in its bits from the uninterrupted one's");
			}
		}
		/* the checkpoint of the GPU run continues on the CPU, close */
		struct llm_trainer *trc = trainer(m, &lrc, NULL, dropout, false);
		if (trc && !llm_trainer_load(trc, ckpt, NULL, NULL) &&
		    !run_steps(trc, m, 2, loss_r, NULL))
			CHECK(fabs(loss_r[2] - loss_g[2]) <= 1e-4 * loss_g[2],
			      "GPU checkpoint resumed on the CPU: loss %.9g vs %.9g",
			      loss_r[2], loss_g[2]);
		unlink(ckpt);
		llm_trainer_free(trc);
		llm_lora_free(lrc);
		llm_trainer_free(tr);
		llm_lora_free(lr);
		llm_trainer_free(tc);
		llm_trainer_free(tg);
		llm_trainer_free(tg2);
		llm_lora_free(lc);
		llm_lora_free(lg);
		llm_lora_free(lg2);
		free(l0);
	}

	/* what a device does not train: a clear error */
	struct llm_train_params p;
	struct llm_trainer *t = NULL;
	llm_train_params_default(&p);
	p.seq_len = T_LEN;
	p.full = true;
	p.device = "cuda";
	CHECK(llm_trainer_new(&t, m, NULL, &p) == LLM_EUNSUPPORTED && !t,
	      "full training on the GPU is not refused");
	llm_model_free(m);
}

int main(void)
{
	if (llm_cuda_device_count() < 1) {
		printf("SKIP: no CUDA device (or a build without CUDA)\n");
		return 77;
	}
	if (llm_backend_cpu_init(&cpu, 2) || llm_backend_init(&gpu, "cuda", 1)) {
		fprintf(stderr, "FAIL: backends: %s\n", llm_errmsg());
		return 1;
	}
	const struct llm_backend_ops *o = gpu->ops;
	if (!o->gemm || !o->matmul_train || !o->matmul_bwd || !o->rmsnorm_bwd ||
	    !o->rope_bwd || !o->attn_train || !o->attn_train_bwd || !o->swiglu_fwd ||
	    !o->swiglu_bwd || !o->cross_entropy || !o->adamw) {
		fprintf(stderr, "FAIL: the CUDA backend lacks training ops\n");
		return 1;
	}
	test_gemm();
	static const int types[] = { LLM_F32, LLM_F16, LLM_BF16, LLM_Q4_0, LLM_Q8_0,
	                             LLM_Q4_K, LLM_Q6_K };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		test_matmul_train(types[i], 256, 300, 5);
		test_matmul_train(types[i], 512, 64, 70);
	}
	test_matmul_train(LLM_F32, 100, 13, 9);      /* no multiple of 32 */
	test_matmul_train(LLM_F16, 100, 13, 9);
	test_matmul_train(LLM_Q8_0, 256, 8300, 3);   /* two f32 tiles */
	test_rmsnorm_bwd(7, 300);
	test_rmsnorm_bwd(64, 64);
	test_rope_bwd(LLM_ROPE_NORM, 64, 1.0f);
	test_rope_bwd(LLM_ROPE_NEOX, 64, 1.0f);
	test_rope_bwd(LLM_ROPE_NEOX, 48, 1.3f);
	test_attn(2, 37, 4, 2, 16);
	test_attn(1, 300, 2, 1, 64);
	test_attn(2, 64, 2, 2, 128);
	test_attn(1, 200, 4, 4, 256);
	test_swiglu();
	test_cross_entropy(1000);
	test_cross_entropy(32000);
	test_adamw();
	test_training();
	llm_backend_free(gpu);
	llm_backend_free(cpu);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
