/*
 * test-train-dev - the training engine's device path without a device: a
 * "shadow" backend that says its memory is not host memory and hands out
 * addresses the host cannot read (host memory with a high address bit
 * set: touching one faults), translating them back inside its ops, which
 * are the CPU backend's.  So every host access train.c makes to a device
 * buffer crashes this test, and everything else must give the CPU's bits:
 * LoRA training of stories260K through it (with and without dropout,
 * recompute) ends with the same adapter bytes and losses as on the CPU
 * backend; checkpoints written through it resume on the CPU and back; a
 * failure the backend reports (out of memory) ends the step with its
 * error.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/train.h"
#include "checks.h"




/* ---------------------------------------------------------------- shadow */

/* Bit 62: a non-canonical x86-64 (and unmapped elsewhere) address. */
#define KEY ((uintptr_t)1 << 62)

static void *D(const void *p)
{
	return p ? (void *)((uintptr_t)p ^ KEY) : NULL;
}

struct shadow {
	struct llm_backend *cpu;
	int64_t ops, fail_at;   /* ops counted; fail from op fail_at (0: never) */
	int64_t live;           /* allocations not yet freed */
};

static struct llm_backend *C(struct llm_backend *be)
{
	return ((struct shadow *)be->impl)->cpu;
}

static void count(struct llm_backend *be)
{
	((struct shadow *)be->impl)->ops++;
}

static void *sh_alloc(struct llm_backend *be, size_t bytes)
{
	void *h = C(be)->ops->alloc(C(be), bytes);
	if (!h)
		return NULL;
	memset(h, 0, bytes);   /* as a device's */
	((struct shadow *)be->impl)->live++;
	return D(h);
}

static void sh_dealloc(struct llm_backend *be, void *p)
{
	if (!p)
		return;
	if (!((uintptr_t)p & KEY)) {
		failf("dealloc of a pointer that is not the backend's");
		return;
	}
	((struct shadow *)be->impl)->live--;
	C(be)->ops->dealloc(C(be), D(p));
}

static void sh_copy(struct llm_backend *be, void *dst, const void *src, size_t n)
{
	(void)be;
	memcpy(D(dst), D(src), n);
}

static void sh_upload(struct llm_backend *be, void *dst, const void *host, size_t n)
{
	(void)be;
	memcpy(D(dst), host, n);
}

static void sh_download(struct llm_backend *be, void *host, const void *src, size_t n)
{
	(void)be;
	memcpy(host, D(src), n);
}

static bool sh_supports(struct llm_backend *be, enum llm_dtype t)
{
	return C(be)->ops->supports(C(be), t);
}

static void sh_get_rows(struct llm_backend *be, const struct llm_tensor *w,
                        const int32_t *ids, int n, float *out)
{
	count(be);
	C(be)->ops->get_rows(C(be), w, ids, n, D(out));
}

static void sh_rmsnorm(struct llm_backend *be, const float *x, const float *w,
                       float *y, int n, int dim, float eps)
{
	count(be);
	C(be)->ops->rmsnorm(C(be), D(x), w, D(y), n, dim, eps);
}

static void sh_add_bias(struct llm_backend *be, float *y, const float *b, int n,
                        int dim)
{
	count(be);
	C(be)->ops->add_bias(C(be), D(y), b, n, dim);
}

static void sh_rope(struct llm_backend *be, float *x, const int32_t *pos, int n,
                    int n_head, int head_dim, const struct llm_rope *r)
{
	count(be);
	C(be)->ops->rope(C(be), D(x), pos, n, n_head, head_dim, r);
}

static void sh_add(struct llm_backend *be, float *y, const float *x, int64_t n)
{
	count(be);
	C(be)->ops->add(C(be), D(y), D(x), n);
}

static void sh_sync(struct llm_backend *be)
{
	(void)be;
}

static int sh_status(struct llm_backend *be)
{
	struct shadow *s = be->impl;
	if (s->fail_at && s->ops >= s->fail_at)
		return llm_error(LLM_ENOMEM, "shadow: out of device memory (injected)");
	return 0;
}

static void sh_gemm(struct llm_backend *be, enum llm_gemm_op ta, enum llm_gemm_op tb,
                    int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc)
{
	count(be);
	C(be)->ops->gemm(C(be), ta, tb, m, n, k, alpha, D(a), lda, D(b), ldb, beta,
	                 D(c), ldc);
}

static void sh_matmul_train(struct llm_backend *be, const struct llm_tensor *w,
                            const float *x, float *y, int n)
{
	count(be);
	C(be)->ops->matmul_train(C(be), w, D(x), D(y), n);
}

static void sh_matmul_bwd(struct llm_backend *be, const struct llm_tensor *w,
                          const float *dy, float *dx, int n, float beta)
{
	count(be);
	C(be)->ops->matmul_bwd(C(be), w, D(dy), D(dx), n, beta);
}

static void sh_rmsnorm_bwd(struct llm_backend *be, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, int n, int dim,
                           float eps)
{
	count(be);
	C(be)->ops->rmsnorm_bwd(C(be), D(x), w, D(dy), D(dx), D(dw), n, dim, eps);
}

static void sh_rope_bwd(struct llm_backend *be, float *dx, const int32_t *pos, int n,
                        int n_head, int head_dim, const struct llm_rope *r)
{
	count(be);
	C(be)->ops->rope_bwd(C(be), D(dx), pos, n, n_head, head_dim, r);
}

static void sh_attn_train(struct llm_backend *be, const struct llm_attn_train *at,
                          const float *q, const float *k, const float *v,
                          float *out, float *lse)
{
	count(be);
	C(be)->ops->attn_train(C(be), at, D(q), D(k), D(v), D(out), D(lse));
}

static void sh_attn_train_bwd(struct llm_backend *be, const struct llm_attn_train *at,
                              const float *q, const float *k, const float *v,
                              const float *out, const float *lse, const float *dout,
                              float *dq, float *dk, float *dv)
{
	count(be);
	C(be)->ops->attn_train_bwd(C(be), at, D(q), D(k), D(v), D(out), D(lse), D(dout),
	                           D(dq), D(dk), D(dv));
}

static void sh_swiglu_fwd(struct llm_backend *be, const float *g, const float *u,
                          float *h, int64_t n)
{
	count(be);
	C(be)->ops->swiglu_fwd(C(be), D(g), D(u), D(h), n);
}

static void sh_swiglu_bwd(struct llm_backend *be, const float *g, const float *u,
                          const float *dh, float *dg, float *du, int64_t n)
{
	count(be);
	C(be)->ops->swiglu_bwd(C(be), D(g), D(u), D(dh), D(dg), D(du), n);
}

static void sh_cross_entropy(struct llm_backend *be, float *logits,
                             const int32_t *targets, int n, int n_vocab, float scale,
                             float *loss)
{
	count(be);
	C(be)->ops->cross_entropy(C(be), D(logits), targets, n, n_vocab, scale, D(loss));
}

static void sh_adamw(struct llm_backend *be, float *p, const float *g, float *m,
                     float *v, int64_t n, float lr, float beta1, float beta2,
                     float eps, float wd, int64_t step)
{
	count(be);
	C(be)->ops->adamw(C(be), D(p), D(g), D(m), D(v), n, lr, beta1, beta2, eps, wd,
	                  step);
}

static void sh_free(struct llm_backend *be)
{
	(void)be;
}

static const struct llm_backend_ops shadow_ops = {
	.name = "shadow",
	.host_memory = false,
	.free = sh_free,
	.alloc = sh_alloc,
	.dealloc = sh_dealloc,
	.copy = sh_copy,
	.upload = sh_upload,
	.download = sh_download,
	.supports = sh_supports,
	.get_rows = sh_get_rows,
	.rmsnorm = sh_rmsnorm,
	.add_bias = sh_add_bias,
	.rope = sh_rope,
	.add = sh_add,
	.synchronize = sh_sync,
	.status = sh_status,
	.gemm = sh_gemm,
	.matmul_train = sh_matmul_train,
	.matmul_bwd = sh_matmul_bwd,
	.rmsnorm_bwd = sh_rmsnorm_bwd,
	.rope_bwd = sh_rope_bwd,
	.attn_train = sh_attn_train,
	.attn_train_bwd = sh_attn_train_bwd,
	.swiglu_fwd = sh_swiglu_fwd,
	.swiglu_bwd = sh_swiglu_bwd,
	.cross_entropy = sh_cross_entropy,
	.adamw = sh_adamw,
};

/* ---------------------------------------------------------------- runs */

#define T_LEN 32
#define N_STEPS 3

static struct llm_model *model;
static struct llm_backend *cpu;

static void batch_fill(int32_t *tok, int32_t *tgt, int32_t *start, int nv, int salt)
{
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < T_LEN; i++) {
			int r = s * T_LEN + i;
			tok[r] = (r * 37 + salt * 11 + 5) % nv;
			tgt[r] = i % 7 == 6 ? -1 : (r * 53 + salt * 3 + 1) % nv;
			start[r] = s == 1 && i >= 20 ? 20 : 0;
		}
}

static struct llm_trainer *trainer(struct llm_lora **lora, struct llm_backend *be,
                                   float dropout, bool recompute)
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
	p.backend = be;
	if (llm_lora_new(lora, model, 4, 8, LLM_LORA_ALL, false)) {
		failf("llm_lora_new: %s", llm_errmsg());
		exit(1);
	}
	llm_lora_init_peft(*lora, 42);
	for (int64_t j = 0; j < (*lora)->n_params; j++)
		(*lora)->mem[j] += 0.01f * (float)((j * 7919) % 13 - 6);
	if (llm_trainer_new(&t, model, *lora, &p)) {
		failf("llm_trainer_new (%s): %s", be ? be->ops->name : "cpu", llm_errmsg());
		exit(1);
	}
	return t;
}

/* Steps from..N_STEPS-1 (two micro-batches each); with ckpt, saved after
 * step 2.  Returns the first error (0). */
static int run_steps(struct llm_trainer *t, int from, double *loss, const char *ckpt)
{
	int32_t tok[2][2 * T_LEN], tgt[2][2 * T_LEN], st[2][2 * T_LEN];
	int rc;
	for (int s = from; s < N_STEPS; s++) {
		struct llm_train_batch mb[2];
		struct llm_train_stats stats;
		for (int k = 0; k < 2; k++) {
			batch_fill(tok[k], tgt[k], st[k], model->hp.n_vocab, 2 * s + k);
			mb[k] = (struct llm_train_batch){ 2, tok[k], tgt[k], st[k] };
		}
		if ((rc = llm_trainer_step(t, mb, 2, &stats)))
			return rc;
		loss[s] = stats.loss;
		if (ckpt && s == 1 && (rc = llm_trainer_save(t, ckpt, NULL, 0)))
			return rc;
	}
	return 0;
}

static void test_same_bits(struct llm_backend *sh, float dropout, bool recompute,
                           const char *ckpt)
{
	struct llm_lora *lc, *ls, *lr;
	double loss_c[N_STEPS], loss_s[N_STEPS], loss_r[N_STEPS];
	struct llm_trainer *tc = trainer(&lc, NULL, dropout, recompute);
	struct llm_trainer *ts = trainer(&ls, sh, dropout, recompute);
	size_t bytes = lc->n_params * sizeof(float);
	char what[64];
	snprintf(what, sizeof(what), "dropout %g%s", dropout, recompute ? ", recompute" : "");

	int rc = run_steps(tc, 0, loss_c, NULL);
	CHECK(rc == 0, "%s: CPU: %s", what, llm_errmsg());
	rc = run_steps(ts, 0, loss_s, ckpt);
	CHECK(rc == 0, "%s: shadow: %s", what, llm_errmsg());
	for (int s = 0; s < N_STEPS; s++)
		CHECK(loss_s[s] == loss_c[s], "%s, step %d: loss %.17g, CPU %.17g", what,
		      s + 1, loss_s[s], loss_c[s]);
	CHECK(!memcmp(ls->mem, lc->mem, bytes), "%s: adapter differs from the CPU's",
	      what);
	CHECK(!memcmp(llm_trainer_lora_grad(ts)->mem, llm_trainer_lora_grad(tc)->mem,
	              bytes), "%s: gradient differs from the CPU's", what);
	double nll_c, nll_s;
	int64_t nt_c, nt_s;
	int32_t tok[2 * T_LEN], tgt[2 * T_LEN], st[2 * T_LEN];
	batch_fill(tok, tgt, st, model->hp.n_vocab, 9);
	struct llm_train_batch b = { 2, tok, tgt, st };
	CHECK(!llm_trainer_eval(tc, &b, &nll_c, &nt_c) &&
	      !llm_trainer_eval(ts, &b, &nll_s, &nt_s) && nll_c == nll_s && nt_c == nt_s,
	      "%s: eval differs (%.17g vs %.17g)", what, nll_s, nll_c);

	/* the shadow's checkpoint (after step 2) resumed on the CPU, and the
	 * other way round: the same bits at the end */
	struct llm_trainer *tr = trainer(&lr, NULL, dropout, recompute);
	rc = llm_trainer_load(tr, ckpt, NULL, NULL);
	CHECK(rc == 0, "%s: load on the CPU: %s", what, llm_errmsg());
	rc = run_steps(tr, 2, loss_r, NULL);
	CHECK(rc == 0 && loss_r[2] == loss_c[2] && !memcmp(lr->mem, lc->mem, bytes),
	      "%s: the shadow's checkpoint resumed on the CPU differs", what);
	llm_trainer_free(tr);
	llm_lora_free(lr);
	CHECK(!llm_trainer_save(tc, ckpt, NULL, 0), "save: %s", llm_errmsg());
	tr = trainer(&lr, sh, dropout, recompute);
	rc = llm_trainer_load(tr, ckpt, NULL, NULL);
	CHECK(rc == 0 && llm_trainer_steps(tr) == N_STEPS, "%s: load on the shadow: %s",
	      what, llm_errmsg());
	rc = run_steps(tr, 0, loss_r, NULL);   /* three more steps on both */
	CHECK(rc == 0, "%s: shadow after load: %s", what, llm_errmsg());
	rc = run_steps(tc, 0, loss_c, NULL);
	CHECK(rc == 0 && !memcmp(lr->mem, lc->mem, bytes) && loss_r[2] == loss_c[2],
	      "%s: the CPU's checkpoint continued on the shadow differs", what);
	unlink(ckpt);
	llm_trainer_free(tr);
	llm_lora_free(lr);
	llm_trainer_free(tc);
	llm_trainer_free(ts);
	llm_lora_free(lc);
	llm_lora_free(ls);
}

int main(void)
{
	const char *dir = getenv("LLMKIT_DATA");
	char path[1024], ckpt[64];
	if (!dir)
		dir = "../shared/data";
	snprintf(path, sizeof(path), "%s/models/stories260K.gguf", dir);
	if (access(path, R_OK)) {
		printf("SKIP: %s not found\n", path);
		return 77;
	}
	if (llm_model_load(&model, path) || llm_backend_cpu_init(&cpu, 2)) {
		fprintf(stderr, "FAIL: %s\n", llm_errmsg());
		return 1;
	}
	snprintf(ckpt, sizeof(ckpt), "/tmp/test-train-dev.%d.llmt", (int)getpid());
	struct shadow s = { cpu, 0, 0, 0 };
	struct llm_backend sh = { &shadow_ops, &s, 2 };

	test_same_bits(&sh, 0.0f, false, ckpt);
	test_same_bits(&sh, 0.1f, false, ckpt);
	test_same_bits(&sh, 0.1f, true, ckpt);
	CHECK(s.live == 0, "%lld allocations of the shadow backend not freed",
	      (long long)s.live);

	/* a failure the device reports ends the step with its error */
	struct llm_lora *l;
	struct llm_trainer *t = trainer(&l, &sh, 0.0f, false);
	double loss[N_STEPS];
	s.fail_at = s.ops + 50;
	int rc = run_steps(t, 0, loss, NULL);
	CHECK(rc == LLM_ENOMEM && strstr(llm_errmsg(), "injected"),
	      "an injected device failure gave %d (%s)", rc, llm_errmsg());
	s.fail_at = 0;
	llm_trainer_free(t);
	llm_lora_free(l);

	/* what a device backend does not train */
	struct llm_train_params p;
	llm_train_params_default(&p);
	p.seq_len = T_LEN;
	p.full = true;
	p.backend = &sh;
	t = NULL;
	CHECK(llm_trainer_new(&t, model, NULL, &p) == LLM_EUNSUPPORTED && !t &&
	      strstr(llm_errmsg(), "CPU only"), "full training on a device: %s",
	      llm_errmsg());
	CHECK(s.live == 0, "%lld allocations of the shadow backend not freed",
	      (long long)s.live);

	llm_backend_free(cpu);
	llm_model_free(model);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
