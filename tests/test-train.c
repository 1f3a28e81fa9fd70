/*
 * test-train - the training engine on stories260K:
 *
 *   peft_step       one LoRA step (loss, adapter gradients, clipped AdamW
 *                   update) equal to PyTorch + PEFT's, from the fixture
 *                   scripts/ref/peft_step.py wrote in data/fixtures/train/
 *   full_grads_fd   full fine-tuning gradients of every kind of weight
 *                   (embedding, norms, projections, output) against finite
 *                   differences of the loss
 *   recompute_same  recomputing activations, or one thread instead of two,
 *                   gives the same bits (dropout on)
 *   micro_batches_add_up  two micro-batches give the gradient of one
 *   qat_forward     --qat's forward equals the merged, quantized model's
 *   data_*          JSONL masks, bad lines reported with file:line, packing
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/tokenizer.h"
#include "llmkit/train.h"
#include "testutil.h"

static struct llm_model *model;

static const char *fixture(const char *rel)
{
	static char buf[4][4096];
	static int k;
	const char *src = getenv("LLMKIT_SRC");
	char *p = buf[k++ % 4];
	snprintf(p, 4096, "%s/data/fixtures/train/%s", src && *src ? src : ".", rel);
	return p;
}

/* ---------------------------------------------------------------- PEFT */

struct ref_batch {
	int32_t tok[64], tgt[64], start[64];
	double loss, grad_norm;
};

static void read_step(struct ref_batch *rb, struct llm_train_params *p)
{
	json_error_t je;
	json_t *j = json_load_file(fixture("step.json"), 0, &je);
	ck_assert_msg(j, "step.json: %s", je.text);
	json_t *ids = json_object_get(j, "tokens"), *lab = json_object_get(j, "labels");
	ck_assert_int_eq(json_array_size(ids), 2);
	for (int s = 0; s < 2; s++) {
		json_t *a = json_array_get(ids, s), *b = json_array_get(lab, s);
		ck_assert_int_eq(json_array_size(a), 33);
		for (int i = 0; i < 32; i++) {
			rb->tok[s * 32 + i] = (int32_t)json_integer_value(json_array_get(a, i));
			int64_t t = json_integer_value(json_array_get(b, i + 1));
			rb->tgt[s * 32 + i] = t < 0 ? -1 : (int32_t)t;
			rb->start[s * 32 + i] = 0;
		}
	}
	rb->loss = json_real_value(json_object_get(j, "loss"));
	rb->grad_norm = json_real_value(json_object_get(j, "grad_norm"));
	llm_train_params_default(p);
	p->n_threads = 2;
	p->seq_len = 32;
	p->max_seqs = 2;
	p->lr = (float)json_real_value(json_object_get(j, "lr"));
	p->beta1 = (float)json_real_value(json_object_get(j, "beta1"));
	p->beta2 = (float)json_real_value(json_object_get(j, "beta2"));
	p->eps = (float)json_real_value(json_object_get(j, "eps"));
	p->weight_decay = (float)json_real_value(json_object_get(j, "weight_decay"));
	p->grad_clip = (float)json_real_value(json_object_get(j, "grad_clip"));
	json_decref(j);
}

static float max_abs(const float *a, int64_t n)
{
	float m = 0;
	for (int64_t i = 0; i < n; i++)
		m = fabsf(a[i]) > m ? fabsf(a[i]) : m;
	return m;
}

START_TEST(peft_step)
{
	struct llm_lora *lora, *gref, *aref;
	struct llm_trainer *t;
	struct llm_train_params p;
	struct ref_batch rb;
	struct llm_train_stats st;
	double nll;

	if (access(fixture("step.json"), R_OK)) {
		fprintf(stderr, "SKIP: %s missing\n", fixture("step.json"));
		exit(77);
	}
	read_step(&rb, &p);
	ck_assert_msg(!llm_lora_load(&lora, fixture("init"), model), "%s", llm_errmsg());
	ck_assert_msg(!llm_lora_load(&gref, fixture("grad"), model), "%s", llm_errmsg());
	ck_assert_msg(!llm_lora_load(&aref, fixture("after"), model), "%s", llm_errmsg());
	ck_assert(lora->rslora);
	ck_assert_float_eq_tol(lora->scale, 4.0f / sqrtf(2.0f), 1e-6);
	ck_assert_int_eq(lora->targets, LLM_LORA_ALL);
	ck_assert_msg(!llm_trainer_new(&t, model, lora, &p), "%s", llm_errmsg());

	struct llm_train_batch b = { 2, rb.tok, rb.tgt, rb.start };
	int total = 0;
	for (int i = 0; i < 64; i++)
		total += rb.tgt[i] >= 0;
	llm_trainer_zero_grad(t);
	ck_assert(!llm_trainer_backward(t, &b, 1.0f / total, &nll));
	ck_assert_msg(fabs(nll / total - rb.loss) < 1e-5 * rb.loss, "loss %.7f, "
	              "PEFT %.7f", nll / total, rb.loss);

	/* gradients: within 1e-4 of the largest, matrix by matrix */
	const struct llm_lora *g = llm_trainer_lora_grad(t);
	for (int i = 0; i < model->hp.n_layer * LLM_LORA_N; i++) {
		const struct llm_lora_mat *gm = &g->m[i], *rm = &gref->m[i];
		ck_assert(gm->a && rm->a);
		int64_t na = (int64_t)gm->rank * gm->n_in, nb = (int64_t)gm->rank * gm->n_out;
		float sa = max_abs(rm->a, na), sb = max_abs(rm->b, nb);
		ck_assert(sa > 0 && sb > 0);
		for (int64_t j = 0; j < na; j++)
			ck_assert_msg(fabsf(gm->a[j] - rm->a[j]) <= 1e-4f * sa,
			              "layer %d %s dA[%lld]: %g vs PEFT %g", i / LLM_LORA_N,
			              llm_lora_target_name(i % LLM_LORA_N), (long long)j,
			              gm->a[j], rm->a[j]);
		for (int64_t j = 0; j < nb; j++)
			ck_assert_msg(fabsf(gm->b[j] - rm->b[j]) <= 1e-4f * sb,
			              "layer %d %s dB[%lld]: %g vs PEFT %g", i / LLM_LORA_N,
			              llm_lora_target_name(i % LLM_LORA_N), (long long)j,
			              gm->b[j], rm->b[j]);
	}

	/* the update: AdamW's first step moves each weight by about lr, its
	 * direction the gradient's sign, so entries whose gradient is near
	 * zero (where float rounding decides the sign) are left out */
	float gmax = max_abs(gref->mem, gref->n_params);
	ck_assert(!llm_trainer_update(t, &st));
	ck_assert_msg(fabs(st.grad_norm - rb.grad_norm) < 1e-4 * rb.grad_norm,
	              "grad norm %g, PEFT %g", st.grad_norm, rb.grad_norm);
	int64_t checked = 0;
	for (int64_t j = 0; j < lora->n_params; j++) {
		if (fabsf(gref->mem[j]) < 1e-3f * gmax)
			continue;
		checked++;
		ck_assert_msg(fabsf(lora->mem[j] - aref->mem[j]) < 2e-6f,
		              "updated parameter %lld: %.8g vs PEFT %.8g", (long long)j,
		              lora->mem[j], aref->mem[j]);
	}
	ck_assert_msg(checked > lora->n_params * 8 / 10, "only %lld of %lld "
	              "updates compared", (long long)checked, (long long)lora->n_params);
	ck_assert_int_eq(llm_trainer_steps(t), 1);
	llm_trainer_free(t);
	llm_lora_free(lora);
	llm_lora_free(gref);
	llm_lora_free(aref);
}
END_TEST

/* ---------------------------------------------------------------- full */

static void batch_of(int32_t *tok, int32_t *tgt, int32_t *start, int n_seq, int T,
                     unsigned seed)
{
	for (int i = 0; i < n_seq * T; i++) {
		seed = seed * 1103515245u + 12345u;
		tok[i] = 3 + (seed >> 8) % 500;
	}
	for (int s = 0; s < n_seq; s++)
		for (int i = 0; i < T; i++) {
			int k = s * T + i;
			tgt[k] = i + 1 < T ? tok[k + 1] : 7;
			/* sequence 1 holds two documents */
			start[k] = s == 1 && i >= T / 2 ? T / 2 : 0;
		}
	tgt[3] = -1;
}

START_TEST(full_grads_fd)
{
	struct llm_trainer *t;
	struct llm_train_params p;
	int T = 12, n_seq = 2;
	int32_t tok[24], tgt[24], start[24];
	double nll;
	int64_t nt;

	llm_train_params_default(&p);
	p.n_threads = 2;
	p.seq_len = T;
	p.max_seqs = n_seq;
	p.full = true;
	ck_assert_msg(!llm_trainer_new(&t, model, NULL, &p), "%s", llm_errmsg());
	batch_of(tok, tgt, start, n_seq, T, 99);
	struct llm_train_batch b = { n_seq, tok, tgt, start };
	llm_trainer_zero_grad(t);
	ck_assert(!llm_trainer_backward(t, &b, 1.0f, &nll));

	const struct llm_model *m = llm_trainer_model(t);
	const struct llm_layer *l1 = &m->layers[1], *l4 = &m->layers[4];
	const struct llm_tensor *ws[] = { &m->tok_embd, &m->output, &m->output_norm,
	                                  &l1->attn_norm, &l1->ffn_norm, &l1->wq,
	                                  &l1->wk, &l1->wv, &l1->wo, &l1->w_gate,
	                                  &l1->w_up, &l4->w_down };
	for (size_t w = 0; w < sizeof(ws) / sizeof(ws[0]); w++) {
		float *d = ws[w]->data;
		const float *g = llm_trainer_weight_grad(t, d);
		int64_t n = llm_tensor_nelements(ws[w]);
		ck_assert_msg(g, "%s has no gradient", ws[w]->name);
		/* the three entries with the largest gradients */
		for (int k = 0; k < 3; k++) {
			int64_t at = -1;
			for (int64_t j = 0; j < n; j++)
				if (at < 0 || fabsf(g[j]) > fabsf(g[at]))
					at = j;
			float gv = g[at], x0 = d[at], h = 1e-2f;
			double lp, lm;
			d[at] = x0 + h;
			ck_assert(!llm_trainer_eval(t, &b, &lp, &nt));
			d[at] = x0 - h;
			ck_assert(!llm_trainer_eval(t, &b, &lm, &nt));
			d[at] = x0;
			double fd = (lp - lm) / (2 * h);
			ck_assert_msg(fabs(fd - gv) < 2e-2 * fabs(gv) + 1e-3,
			              "%s[%lld]: gradient %g, finite difference %g",
			              ws[w]->name, (long long)at, gv, fd);
			/* the next largest: exclude this one by zeroing its copy */
			((float *)g)[at] = 0;
		}
	}
	llm_trainer_free(t);
}
END_TEST

/* Full training of a model with q/k/v biases (qwen2): the biases are
 * trained, with the gradients finite differences give.  stories260K is
 * given biases here (each test runs in a process of its own). */
START_TEST(full_bias_grads_fd)
{
	struct llm_trainer *t;
	struct llm_train_params p;
	int T = 12, n_seq = 2;
	int32_t tok[24], tgt[24], start[24];
	double nll;
	int64_t nt;
	unsigned seed = 7;
	const struct llm_hparams *hp = &model->hp;

	for (int il = 0; il < hp->n_layer; il++) {
		struct llm_layer *l = &model->layers[il];
		struct llm_tensor *b3[] = { &l->bq, &l->bk, &l->bv };
		int64_t w3[] = { (int64_t)hp->n_head * hp->head_dim,
		                 (int64_t)hp->n_head_kv * hp->head_dim,
		                 (int64_t)hp->n_head_kv * hp->head_dim };
		for (int j = 0; j < 3; j++) {
			float *d = malloc(w3[j] * sizeof(float));
			for (int64_t i = 0; i < w3[j]; i++) {
				seed = seed * 1103515245u + 12345u;
				d[i] = ((int)((seed >> 8) % 2001) - 1000) * 1e-4f;
			}
			*b3[j] = (struct llm_tensor){ .name = "bias", .type = LLM_F32,
			                              .n_dims = 1, .ne = { w3[j], 1, 1, 1 },
			                              .nbytes = w3[j] * sizeof(float),
			                              .data = d };
		}
	}
	llm_train_params_default(&p);
	p.n_threads = 2;
	p.seq_len = T;
	p.max_seqs = n_seq;
	p.full = true;
	ck_assert_msg(!llm_trainer_new(&t, model, NULL, &p), "%s", llm_errmsg());
	batch_of(tok, tgt, start, n_seq, T, 99);
	struct llm_train_batch b = { n_seq, tok, tgt, start };
	llm_trainer_zero_grad(t);
	ck_assert(!llm_trainer_backward(t, &b, 1.0f, &nll));

	const struct llm_model *m = llm_trainer_model(t);
	const struct llm_tensor *ws[] = { &m->layers[0].bq, &m->layers[2].bk,
	                                  &m->layers[4].bv };
	for (size_t w = 0; w < sizeof(ws) / sizeof(ws[0]); w++) {
		float *d = ws[w]->data;
		const float *g = llm_trainer_weight_grad(t, d);
		int64_t n = llm_tensor_nelements(ws[w]);
		ck_assert_msg(g, "bias %zu has no gradient", w);
		for (int k = 0; k < 3; k++) {
			int64_t at = -1;
			for (int64_t j = 0; j < n; j++)
				if (at < 0 || fabsf(g[j]) > fabsf(g[at]))
					at = j;
			float gv = g[at], x0 = d[at], h = 1e-2f;
			double lp, lm;
			ck_assert(gv != 0);
			d[at] = x0 + h;
			ck_assert(!llm_trainer_eval(t, &b, &lp, &nt));
			d[at] = x0 - h;
			ck_assert(!llm_trainer_eval(t, &b, &lm, &nt));
			d[at] = x0;
			double fd = (lp - lm) / (2 * h);
			ck_assert_msg(fabs(fd - gv) < 2e-2 * fabs(gv) + 1e-3,
			              "bias %zu [%lld]: gradient %g, finite difference %g",
			              w, (long long)at, gv, fd);
			((float *)g)[at] = 0;
		}
	}
	llm_trainer_free(t);
}
END_TEST

/* ---------------------------------------------------------------- modes */

START_TEST(recompute_same)
{
	/* 0: stored activations, 2 threads; 1: recompute; 2: one thread;
	 * 3: one sequence per micro-batch */
	struct llm_trainer *t[4];
	struct llm_lora *lora[4];
	struct llm_train_params p;
	int T = 80;
	int32_t tok[160], tgt[160], start[160];
	double nll[4];

	batch_of(tok, tgt, start, 2, T, 5);
	for (int k = 0; k < 4; k++) {
		llm_train_params_default(&p);
		p.n_threads = k == 2 ? 1 : 2;
		p.seq_len = T;
		p.max_seqs = 2;
		p.recompute = k == 1;
		p.dropout = 0.1f;
		p.seed = 3;
		ck_assert(!llm_lora_new(&lora[k], model, 4, 8, LLM_LORA_ALL, false));
		llm_lora_init_peft(lora[k], 42);
		for (int64_t j = 0; j < lora[k]->n_params; j++)   /* B nonzero too */
			lora[k]->mem[j] += 0.01f * (float)((j * 7919) % 13 - 6);
		ck_assert(!llm_trainer_new(&t[k], model, lora[k], &p));
		llm_trainer_zero_grad(t[k]);
		if (k < 3) {
			struct llm_train_batch b = { 2, tok, tgt, start };
			ck_assert(!llm_trainer_backward(t[k], &b, 0.01f, &nll[k]));
		} else {
			double a, c;
			struct llm_train_batch b0 = { 1, tok, tgt, start };
			struct llm_train_batch b1 = { 1, tok + T, tgt + T, start + T };
			ck_assert(!llm_trainer_backward(t[k], &b0, 0.01f, &a));
			ck_assert(!llm_trainer_backward(t[k], &b1, 0.01f, &c));
			nll[k] = a + c;
		}
	}
	const struct llm_lora *g0 = llm_trainer_lora_grad(t[0]);
	size_t bytes = g0->n_params * sizeof(float);
	for (int k = 1; k <= 2; k++) {
		ck_assert_msg(nll[0] == nll[k], "trainer %d: loss %.17g vs %.17g", k,
		              nll[k], nll[0]);
		ck_assert_msg(!memcmp(g0->mem, llm_trainer_lora_grad(t[k])->mem, bytes),
		              "trainer %d: gradients differ in their bits", k);
	}
	/* micro-batches draw other dropout masks: the loss only roughly */
	ck_assert_double_eq_tol(nll[0], nll[3], 5e-2 * nll[0]);
	for (int k = 0; k < 4; k++) {
		llm_trainer_free(t[k]);
		llm_lora_free(lora[k]);
	}
}
END_TEST

/* Two micro-batches accumulate the gradient of one batch of both. */
START_TEST(micro_batches_add_up)
{
	struct llm_trainer *t[2];
	struct llm_lora *lora[2];
	struct llm_train_params p;
	int T = 16;
	int32_t tok[32], tgt[32], start[32];
	double nll[2];

	batch_of(tok, tgt, start, 2, T, 5);
	for (int k = 0; k < 2; k++) {
		llm_train_params_default(&p);
		p.n_threads = 2;
		p.seq_len = T;
		p.max_seqs = 2;
		ck_assert(!llm_lora_new(&lora[k], model, 4, 8, LLM_LORA_ALL, false));
		llm_lora_init_peft(lora[k], 42);
		for (int64_t j = 0; j < lora[k]->n_params; j++)
			lora[k]->mem[j] += 0.01f * (float)((j * 7919) % 13 - 6);
		ck_assert(!llm_trainer_new(&t[k], model, lora[k], &p));
		llm_trainer_zero_grad(t[k]);
		if (k == 0) {
			struct llm_train_batch b = { 2, tok, tgt, start };
			ck_assert(!llm_trainer_backward(t[k], &b, 0.01f, &nll[k]));
		} else {
			double a, c;
			struct llm_train_batch b0 = { 1, tok, tgt, start };
			struct llm_train_batch b1 = { 1, tok + T, tgt + T, start + T };
			ck_assert(!llm_trainer_backward(t[k], &b0, 0.01f, &a));
			ck_assert(!llm_trainer_backward(t[k], &b1, 0.01f, &c));
			nll[k] = a + c;
		}
	}
	const struct llm_lora *g0 = llm_trainer_lora_grad(t[0]);
	const struct llm_lora *g1 = llm_trainer_lora_grad(t[1]);
	ck_assert_double_eq_tol(nll[0], nll[1], 1e-4);
	float mx = max_abs(g0->mem, g0->n_params);
	ck_assert(mx > 0);
	for (int64_t j = 0; j < g0->n_params; j++)
		ck_assert_msg(fabsf(g0->mem[j] - g1->mem[j]) < 1e-4f * mx, "micro-batch "
		              "gradient %lld: %g vs %g", (long long)j, g1->mem[j], g0->mem[j]);
	for (int k = 0; k < 2; k++) {
		llm_trainer_free(t[k]);
		llm_lora_free(lora[k]);
	}
}
END_TEST

/* --qat: the forward is the model with every adapted matrix replaced by
 * dequant(quant(W + s B A)), computed here by hand. */
START_TEST(qat_forward)
{
	struct llm_trainer *tq, *tr;
	struct llm_lora *lora, *zero;
	struct llm_train_params p;
	int T = 24;
	int32_t tok[48], tgt[48], start[48];
	double lq, lr;
	int64_t nt;
	const struct llm_dtype_traits *q8 = llm_dtype_traits(LLM_Q8_0);

	batch_of(tok, tgt, start, 2, T, 77);
	ck_assert(!llm_lora_new(&lora, model, 4, 8, LLM_LORA_ALL, false));
	llm_lora_init_peft(lora, 9);
	for (int64_t j = 0; j < lora->n_params; j++)
		lora->mem[j] += 0.02f * (float)((j * 7919) % 13 - 6);
	llm_train_params_default(&p);
	p.n_threads = 2;
	p.seq_len = T;
	p.max_seqs = 2;
	p.qat_type = LLM_Q8_0;
	ck_assert_msg(!llm_trainer_new(&tq, model, lora, &p), "%s", llm_errmsg());
	struct llm_train_batch b = { 2, tok, tgt, start };
	ck_assert(!llm_trainer_eval(tq, &b, &lq, &nt));

	/* the reference model: f32 matrices Q(W + s B A), a zero adapter */
	struct llm_model ref = *model;
	int nl = model->hp.n_layer;
	ref.layers = malloc(nl * sizeof(*ref.layers));
	memcpy(ref.layers, model->layers, nl * sizeof(*ref.layers));
	float *bufs[64];
	int nb = 0;
	for (int il = 0; il < nl; il++)
		for (int k = 0; k < LLM_LORA_N; k++) {
			struct llm_tensor *w = (struct llm_tensor *)llm_lora_base_weight(&ref, il, k);
			int64_t n_in = w->ne[0], n_out = w->ne[1];
			float *wf = malloc(n_in * n_out * sizeof(float));
			size_t rb = llm_tensor_row_size(w), qr = llm_row_size(LLM_Q8_0, n_in);
			char *qb = malloc(qr ? qr : 1);
			for (int64_t r = 0; r < n_out; r++)
				llm_dtype_traits(w->type)->to_float((char *)w->data + r * rb,
				                                    wf + r * n_in, n_in);
			llm_lora_mat_add_delta(llm_lora_mat(lora, il, k), lora->scale, wf);
			for (int64_t r = 0; qr && r < n_out; r++) {
				q8->from_float(wf + r * n_in, qb, n_in);
				q8->to_float(qb, wf + r * n_in, n_in);
			}
			free(qb);
			w->type = LLM_F32;
			w->data = wf;
			w->nbytes = n_in * n_out * sizeof(float);
			if (nb < 64)
				bufs[nb++] = wf;
		}
	ck_assert_int_eq(nb, nl * LLM_LORA_N);
	ck_assert(!llm_lora_new(&zero, &ref, 4, 8, LLM_LORA_ALL, false));
	p.qat_type = -1;
	ck_assert(!llm_trainer_new(&tr, &ref, zero, &p));
	ck_assert(!llm_trainer_eval(tr, &b, &lr, &nt));
	ck_assert_msg(fabs(lq - lr) < 1e-5 * fabs(lr), "QAT loss %.9g, quantized "
	              "merged model %.9g", lq, lr);
	/* and it differs from the unquantized adapted model */
	p.qat_type = -1;
	struct llm_trainer *tp;
	double lp;
	ck_assert(!llm_trainer_new(&tp, model, lora, &p));
	ck_assert(!llm_trainer_eval(tp, &b, &lp, &nt));
	ck_assert(lp != lq);
	llm_trainer_free(tp);
	llm_trainer_free(tq);
	llm_trainer_free(tr);
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	free(ref.layers);
	llm_lora_free(lora);
	llm_lora_free(zero);
}
END_TEST

/* ---------------------------------------------------------------- data */

static struct llm_tokenizer *tok;
static int n_warn;
static char last_warn[512];

static void warn_cb(void *u, const char *msg)
{
	(void)u;
	n_warn++;
	snprintf(last_warn, sizeof(last_warn), "%s", msg);
}

static char *write_tmp(const char *text, const char *suffix)
{
	static char path[256];
	snprintf(path, sizeof(path), "/tmp/test-train-%d%s", (int)getpid(), suffix);
	FILE *f = fopen(path, "w");
	ck_assert(f);
	fputs(text, f);
	fclose(f);
	return path;
}

START_TEST(data_bad_lines)
{
	const char *text =
		"{\"prompt\": \"Once upon a time\", \"completion\": \" there was a cat.\"}\n"
		"\n"
		"{\"prompt\": \"x\"}\n"
		"not json\n"
		"{\"text\": \"Lily liked to play.\"}\n";
	char *path = write_tmp(text, ".jsonl");
	struct llm_train_data *d;
	struct llm_data_params dp = { 0 };
	int rc = llm_data_load(&d, path, tok, NULL, &dp);
	ck_assert_int_eq(rc, LLM_EFORMAT);
	char want[300];
	snprintf(want, sizeof(want), "%s:3:", path);
	ck_assert_msg(strstr(llm_errmsg(), want), "message: %s", llm_errmsg());
	dp.skip_bad = true;
	dp.warn = warn_cb;
	n_warn = 0;
	ck_assert(!llm_data_load(&d, path, tok, NULL, &dp));
	ck_assert_int_eq(llm_data_n_bad(d), 2);
	ck_assert_int_eq(n_warn, 2);
	snprintf(want, sizeof(want), "%s:4: invalid JSON", path);
	ck_assert_msg(strstr(last_warn, want), "warning: %s", last_warn);
	ck_assert_int_eq(llm_data_n_docs(d), 2);

	/* the completion alone carries the loss (plus EOS) */
	int32_t *ids;
	int n;
	ck_assert(!llm_tokenize(tok, " there was a cat.", 17, false, false, &ids, &n));
	struct llm_seqs *s;
	ck_assert(!llm_seqs_new(&s, d, 64, 1, false));
	ck_assert_int_eq(llm_seqs_count(s), 1);   /* both packed into one */
	int32_t tk[64], tg[64], st[64];
	llm_seqs_fill(s, 0, 1, tk, tg, st);
	int n_t = 0, first = -1;
	for (int i = 0; i < 64; i++)
		if (tg[i] >= 0 && st[i] == 0) {
			n_t++;
			if (first < 0)
				first = i;
		}
	/* completion tokens may merge with the prompt's last one: at least
	 * all but one of them, and the EOS */
	ck_assert_msg(n_t >= n && n_t <= n + 1, "%d targets in the first "
	              "document, completion has %d tokens", n_t, n);
	ck_assert_int_eq(tg[first + n_t - 1], llm_token_eos(tok));
	int doc2 = -1;
	for (int i = 0; i < 64; i++)
		if (st[i] > 0 && doc2 < 0)
			doc2 = i;
	ck_assert(doc2 > 0);
	ck_assert_int_eq(st[doc2], doc2);
	ck_assert_int_eq(tk[doc2], llm_token_bos(tok));
	int all = 0;
	for (int i = 0; i < 64; i++)
		all += tg[i] >= 0;
	ck_assert_int_eq(llm_seqs_targets(s, 0, 1), all);
	ck_assert(all > n_t);
	free(ids);
	llm_seqs_free(s);
	llm_data_free(d);
	unlink(path);
}
END_TEST

START_TEST(data_plain_split_pack)
{
	char text[4000] = "";
	for (int i = 0; i < 40; i++)
		strcat(text, "The little dog ran to the park and played. ");
	char *path = write_tmp(text, ".txt");
	struct llm_train_data *d, *h;
	ck_assert(!llm_data_load(&d, path, tok, NULL, NULL));
	int64_t n0 = llm_data_n_tokens(d);
	ck_assert(!llm_data_split(d, 0.25, &h));
	ck_assert(llm_data_n_tokens(h) > n0 / 5 && llm_data_n_tokens(h) < n0 / 3);
	struct llm_seqs *s, *s2;
	ck_assert(!llm_seqs_new(&s, d, 32, 7, true));
	ck_assert(!llm_seqs_new(&s2, d, 32, 7, true));
	int64_t c = llm_seqs_count(s);
	ck_assert_int_eq(c, (llm_data_n_tokens(d) - 1 + 31) / 32);
	/* a permutation per epoch, the same for the same seed */
	int32_t a[32], b[32], st[32], tk[32];
	int seen = 0;
	for (int64_t i = 0; i < c; i++) {
		llm_seqs_fill(s, c + i, 1, a, b, st);
		llm_seqs_fill(s2, c + i, 1, tk, b, st);
		ck_assert(!memcmp(a, tk, sizeof(a)));
		seen += b[0] >= 0;
	}
	ck_assert_int_eq(seen, c);
	/* consecutive pieces: the target of the last slot is the next piece's
	 * first token */
	struct llm_seqs *ord;
	ck_assert(!llm_seqs_new(&ord, d, 32, 0, false));
	llm_seqs_fill(ord, 0, 1, a, b, st);
	llm_seqs_fill(ord, 1, 1, tk, st, st);
	ck_assert_int_eq(b[31], tk[0]);
	llm_seqs_free(s);
	llm_seqs_free(s2);
	llm_seqs_free(ord);
	llm_data_free(d);
	llm_data_free(h);
	unlink(path);
}
END_TEST

int main(void)
{
	if (llm_model_load(&model, test_data(STORIES260K))) {
		fprintf(stderr, "%s\n", llm_errmsg());
		return 1;
	}
	if (llm_tokenizer_from_gguf(&tok, model->gguf)) {
		fprintf(stderr, "%s\n", llm_errmsg());
		return 1;
	}
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("stories260K");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, peft_step);
	tcase_add_test(tc, full_grads_fd);
	tcase_add_test(tc, full_bias_grads_fd);
	tcase_add_test(tc, recompute_same);
	tcase_add_test(tc, micro_batches_add_up);
	tcase_add_test(tc, qat_forward);
	tcase_add_test(tc, data_bad_lines);
	tcase_add_test(tc, data_plain_split_pack);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	llm_tokenizer_free(tok);
	llm_model_free(model);
	return failed ? 1 : 0;
}
