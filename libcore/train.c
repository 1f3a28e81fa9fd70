/*
 * train.c - the training engine (train.h): forward over whole sequences
 * with saved activations, the backward of a Llama block, AdamW.
 *
 * Per layer, over the n = n_seq * seq_len rows of a micro-batch:
 *
 *   xn1 = rmsnorm(x) ; q, k, v = xn1 W^T + s (drop(xn1) A^T) B^T ; rope(q, k)
 *   att, lse = attention(q, k, v)        (causal within each document)
 *   x2 = x + att Wo^T (+ LoRA) ; xn2 = rmsnorm(x2)
 *   g, u = xn2 Wg^T, xn2 Wu^T (+ LoRA) ; h = silu(g) u
 *   x' = x2 + h Wd^T (+ LoRA)
 *
 * The backward walks it in reverse, one running gradient dx of the
 * residual stream.  A LoRA projection y += s t B^T with t = drop(x) A^T
 * gives  dB += s dy^T t,  dt = s dy B,  dA += dt^T drop(x),
 * dx += drop'(dt A);  the frozen base adds dx += dy W (matmul_bwd, any
 * dtype).  Full training adds dW += dy^T x for every matrix.
 *
 * With recompute, only each layer's input x is kept; the backward of layer
 * l first runs its forward again into one shared set of buffers.
 *
 * The output layer runs over rows in chunks (logits of a big vocabulary
 * for every token of a batch would not fit), each chunk's cross-entropy
 * gradient going straight back through the output matrix.
 *
 * Memory: parameters, gradients, moments and activations are the
 * backend's (be->ops->alloc: host memory on the CPU, device memory on
 * CUDA); the model's weights, token ids, targets, positions and document
 * starts stay host memory (backend.h).  On a device backend the adapter
 * (and its gradient and moments) has a host mirror, the adapter itself
 * (t->lora, updated after every step), which checkpoints and the caller
 * read; the loss values, the gradient's norm and clipping, and dropout's
 * masks go through host copies.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/train.h"
#include "llmkit/util.h"

#define LOGIT_CHUNK 256

void llm_train_params_default(struct llm_train_params *p)
{
	memset(p, 0, sizeof(*p));
	p->seq_len = 256;
	p->max_seqs = 4;
	p->lr = 1e-3f;
	p->lr_min = 0.0f;
	p->beta1 = 0.9f;
	p->beta2 = 0.999f;
	p->eps = 1e-8f;
	p->weight_decay = 0.0f;
	p->grad_clip = 1.0f;
	p->qat_type = -1;
}

/* One trained tensor: values, gradient, AdamW moments (backend memory),
 * and their host mirrors (the same pointers on a host-memory backend). */
struct tparam {
	float *p, *g, *m, *v;
	float *hp, *hg, *hm, *hv;
	int64_t n;
	bool decay;
	const void *key;      /* weight data pointer (full training) */
};

/* Activations of one layer (n rows). */
struct acts {
	float *x;             /* input (n x d), always its own */
	float *xn1, *q, *k, *v, *att, *lse, *x2, *xn2, *g, *u, *h;
	float *lt[LLM_LORA_N];   /* drop(x) A^T (n x rank) */
};

struct llm_trainer {
	const struct llm_model *base;
	struct llm_model fm;           /* the model computed with */
	struct llm_layer *layers;      /* fm.layers (full: f32 copies) */
	struct llm_train_params p;
	struct llm_backend *be;
	const struct llm_backend_ops *op;
	struct llm_lora *lora, *lgrad, *lm, *lv;
	struct tparam *params;
	int n_params;
	float *full_mem;               /* full: weights, grads, m, v */
	int64_t step;
	int64_t n_rows;                /* max_seqs * seq_len */
	int64_t micro;                 /* micro-batches seen (dropout masks) */

	struct acts *a;                /* n_layer (or 1 with recompute) */
	float **xs;                    /* recompute: n_layer + 1 layer inputs */
	float *xl;                     /* final layer output (n x d) */
	float *xf;                     /* final norm output (n x d) */
	float *dx, *dtmp, *dq, *dk, *dv, *datt, *dh, *dg, *du, *dxn;
	float *drop, *drop2, *dt, *logits, *loss;
	float *ones;                   /* full with biases: n ones (bias sums) */
	int32_t *pos;
	bool dev;                      /* device backend (not host memory) */
	float *hloss;                  /* host copy of loss (dev), else loss */
	float *hdrop, *hdrop2;         /* dev with dropout: host copies */
	float *zeros;                  /* dev: zeros to clear buffers with */
	int64_t n_zeros;
	/* QAT: fake-quantized merged weights, per matrix */
	float *qat_w;
	struct llm_tensor qat_t;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float *fa(size_t n)
{
	float *p = aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
	if (p)
		memset(p, 0, (n ? n : 1) * sizeof(float));
	return p;
}

/* n zeroed floats of the backend's memory (NULL when out of memory). */
static float *ba(const struct llm_trainer *t, size_t n)
{
	size_t bytes = (n ? n : 1) * sizeof(float);
	float *p = t->be->ops->alloc(t->be, bytes);
	if (p && t->be->ops->host_memory)
		memset(p, 0, bytes);   /* device allocations come zeroed */
	return p;
}

static void bfree(const struct llm_trainer *t, void *p)
{
	if (p)
		t->be->ops->dealloc(t->be, p);
}

/* p[0..n) = 0 in backend memory. */
static void bzero_(struct llm_trainer *t, float *p, int64_t n)
{
	if (!t->dev) {
		memset(p, 0, (size_t)n * sizeof(float));
		return;
	}
	for (int64_t i = 0; i < n; i += t->n_zeros) {
		int64_t c = n - i < t->n_zeros ? n - i : t->n_zeros;
		t->op->copy(t->be, p + i, t->zeros, (size_t)c * sizeof(float));
	}
}

/* The device backend's first failure, or 0. */
static int be_status(const struct llm_trainer *t)
{
	return t->op->status ? t->op->status(t->be) : 0;
}

static int q_dim(const struct llm_hparams *hp) { return hp->n_head * hp->head_dim; }
static int kv_dim(const struct llm_hparams *hp) { return hp->n_head_kv * hp->head_dim; }

static int lora_rank(const struct llm_trainer *t, int il, int k)
{
	if (!t->lora)
		return 0;
	const struct llm_lora_mat *lm = llm_lora_mat(t->lora, il, k);
	return lm->a ? lm->rank : 0;
}

float llm_train_lr(const struct llm_train_params *p, int64_t step)
{
	if (p->warmup > 0 && step < p->warmup)
		return p->lr * (float)(step + 1) / (float)(p->warmup + 1);
	if (p->total_steps <= p->warmup)
		return p->lr;
	double prog = (double)(step - p->warmup) / (double)(p->total_steps - p->warmup);
	if (prog > 1)
		prog = 1;
	double c = 0.5 * (1.0 + cos(M_PI * prog));
	return (float)(p->lr * (p->lr_min + (1.0 - p->lr_min) * c));
}

/* ---------------------------------------------------------------- setup */

static int acts_alloc(struct acts *a, const struct llm_trainer *t, int il,
                      bool with_x)
{
	const struct llm_hparams *hp = &t->fm.hp;
	int64_t n = t->n_rows;
	if (with_x)
		a->x = ba(t, n * hp->n_embd);
	a->xn1 = ba(t, n * hp->n_embd);
	a->q = ba(t, n * q_dim(hp));
	a->k = ba(t, n * kv_dim(hp));
	a->v = ba(t, n * kv_dim(hp));
	a->att = ba(t, n * q_dim(hp));
	a->lse = ba(t, n * hp->n_head);
	a->x2 = ba(t, n * hp->n_embd);
	a->xn2 = ba(t, n * hp->n_embd);
	a->g = ba(t, n * hp->n_ff);
	a->u = ba(t, n * hp->n_ff);
	a->h = ba(t, n * hp->n_ff);
	if ((with_x && !a->x) || !a->xn1 || !a->q || !a->k || !a->v || !a->att ||
	    !a->lse || !a->x2 || !a->xn2 || !a->g || !a->u || !a->h)
		return LLM_ENOMEM;
	for (int k = 0; k < LLM_LORA_N; k++) {
		int r = 0;
		if (il >= 0) {
			r = lora_rank(t, il, k);
		} else {
			for (int l = 0; l < hp->n_layer; l++)
				if (lora_rank(t, l, k) > r)
					r = lora_rank(t, l, k);
		}
		if (r && !(a->lt[k] = ba(t, n * r)))
			return LLM_ENOMEM;
	}
	return 0;
}

static void acts_free(const struct llm_trainer *t, struct acts *a)
{
	bfree(t, a->x);
	bfree(t, a->xn1);
	bfree(t, a->q);
	bfree(t, a->k);
	bfree(t, a->v);
	bfree(t, a->att);
	bfree(t, a->lse);
	bfree(t, a->x2);
	bfree(t, a->xn2);
	bfree(t, a->g);
	bfree(t, a->u);
	bfree(t, a->h);
	for (int k = 0; k < LLM_LORA_N; k++)
		bfree(t, a->lt[k]);
}

/* Full training: an f32 copy of a weight, registered as a parameter. */
static int full_tensor(struct llm_trainer *t, struct llm_tensor *w, float **mem,
                       bool decay)
{
	int64_t n = llm_tensor_nelements(w);
	const struct llm_dtype_traits *tr = llm_dtype_traits(w->type);
	if (!tr || !tr->to_float)
		return llm_error(LLM_EUNSUPPORTED, "%s: %s weights cannot be trained",
		                 w->name, llm_dtype_name(w->type));
	struct tparam *tp = &t->params[t->n_params++];
	tp->p = *mem;
	*mem += n;
	tr->to_float(w->data, tp->p, n);
	tp->n = n;
	tp->decay = decay;
	w->type = LLM_F32;
	w->nbytes = n * sizeof(float);
	w->data = tp->p;
	tp->key = tp->p;
	return 0;
}

static int setup_full(struct llm_trainer *t)
{
	struct llm_model *m = &t->fm;
	const struct llm_hparams *hp = &m->hp;
	int64_t total = 0;
	bool bias = m->layers[0].bq.data != NULL;   /* qwen2: q/k/v biases */
	int nt = 2 + (m->tied_output ? 0 : 1) + (bias ? 12 : 9) * hp->n_layer;
	int rc;

	total += llm_tensor_nelements(&m->tok_embd) + hp->n_embd;
	if (!m->tied_output)
		total += llm_tensor_nelements(&m->output);
	for (int il = 0; il < hp->n_layer; il++) {
		total += 2 * hp->n_embd;
		if (bias)
			total += llm_tensor_nelements(&m->layers[il].bq) +
			         llm_tensor_nelements(&m->layers[il].bk) +
			         llm_tensor_nelements(&m->layers[il].bv);
		for (int k = 0; k < LLM_LORA_N; k++)
			total += llm_tensor_nelements(llm_lora_base_weight(m, il, k));
	}
	t->params = calloc(nt, sizeof(*t->params));
	t->full_mem = ba(t, 4 * (size_t)total);
	if (!t->params || !t->full_mem)
		return llm_error(LLM_ENOMEM, "out of memory for %lld trained weights",
		                 (long long)total);
	float *mem = t->full_mem;
	if ((rc = full_tensor(t, &m->tok_embd, &mem, true)))
		return rc;
	if (m->tied_output)
		m->output = m->tok_embd;
	else if ((rc = full_tensor(t, &m->output, &mem, true)))
		return rc;
	if ((rc = full_tensor(t, &m->output_norm, &mem, false)))
		return rc;
	for (int il = 0; il < hp->n_layer; il++) {
		struct llm_layer *l = &m->layers[il];
		struct llm_tensor *ws[] = { &l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate,
		                            &l->w_up, &l->w_down };
		if ((rc = full_tensor(t, &l->attn_norm, &mem, false)) ||
		    (rc = full_tensor(t, &l->ffn_norm, &mem, false)))
			return rc;
		for (int k = 0; k < 7; k++)
			if ((rc = full_tensor(t, ws[k], &mem, true)))
				return rc;
		/* biases are trained too, without weight decay (as norms) */
		if (bias && ((rc = full_tensor(t, &l->bq, &mem, false)) ||
		             (rc = full_tensor(t, &l->bk, &mem, false)) ||
		             (rc = full_tensor(t, &l->bv, &mem, false))))
			return rc;
	}
	for (int i = 0; i < t->n_params; i++) {
		struct tparam *tp = &t->params[i];
		tp->g = mem;
		mem += tp->n;
	}
	for (int i = 0; i < t->n_params; i++) {
		struct tparam *tp = &t->params[i];
		tp->m = mem;
		mem += tp->n;
	}
	for (int i = 0; i < t->n_params; i++) {
		struct tparam *tp = &t->params[i];
		tp->v = mem;
		mem += tp->n;
		/* the CPU only (llm_trainer_new): host memory */
		tp->hp = tp->p;
		tp->hg = tp->g;
		tp->hm = tp->m;
		tp->hv = tp->v;
	}
	return 0;
}

static int setup_lora(struct llm_trainer *t)
{
	const struct llm_hparams *hp = &t->fm.hp;
	int n = hp->n_layer * LLM_LORA_N, rc;
	int *ranks = calloc(n, sizeof(int));
	if (!ranks)
		return llm_error(LLM_ENOMEM, "out of memory");
	if (t->lora->n_layer != hp->n_layer) {
		free(ranks);
		return llm_error(LLM_EINVAL, "adapter has %d layers, the model %d",
		                 t->lora->n_layer, hp->n_layer);
	}
	for (int i = 0; i < n; i++)
		ranks[i] = t->lora->m[i].a ? t->lora->m[i].rank : 0;
	rc = llm_lora_new_ranks(&t->lgrad, &t->fm, ranks);
	if (!rc)
		rc = llm_lora_new_ranks(&t->lm, &t->fm, ranks);
	if (!rc)
		rc = llm_lora_new_ranks(&t->lv, &t->fm, ranks);
	free(ranks);
	if (rc)
		return rc;
	/* one parameter over the adapter's single allocation: the gradient and
	 * moment adapters have the same layout */
	LLM_ASSERT(t->lgrad->n_params == t->lora->n_params);
	for (int i = 0; i < n; i++)
		if (t->lora->m[i].a)
			LLM_ASSERT(t->lgrad->m[i].a - t->lgrad->mem ==
			           t->lora->m[i].a - t->lora->mem);
	t->params = calloc(1, sizeof(*t->params));
	if (!t->params)
		return llm_error(LLM_ENOMEM, "out of memory");
	struct tparam *tp = &t->params[0];
	*tp = (struct tparam){ t->lora->mem, t->lgrad->mem, t->lm->mem, t->lv->mem,
	                       t->lora->mem, t->lgrad->mem, t->lm->mem, t->lv->mem,
	                       t->lora->n_params, true, NULL };
	t->n_params = 1;
	if (t->dev) {
		/* the device copies; the adapters' own memory is the host mirror */
		tp->p = ba(t, tp->n);
		tp->g = ba(t, tp->n);
		tp->m = ba(t, tp->n);
		tp->v = ba(t, tp->n);
		if (!tp->p || !tp->g || !tp->m || !tp->v) {
			bfree(t, tp->p);
			bfree(t, tp->g);
			bfree(t, tp->m);
			bfree(t, tp->v);
			tp->p = tp->g = tp->m = tp->v = NULL;
			return llm_error(LLM_ENOMEM, "device %s: out of memory for the "
			                 "adapter's %lld parameters", t->op->name,
			                 (long long)tp->n);
		}
		t->op->upload(t->be, tp->p, tp->hp, (size_t)tp->n * sizeof(float));
		t->op->upload(t->be, tp->m, tp->hm, (size_t)tp->n * sizeof(float));
		t->op->upload(t->be, tp->v, tp->hv, (size_t)tp->n * sizeof(float));
		return be_status(t);
	}
	return 0;
}

int llm_trainer_new(struct llm_trainer **out, const struct llm_model *m,
                    struct llm_lora *lora, const struct llm_train_params *p)
{
	const struct llm_hparams *hp = &m->hp;
	struct llm_trainer *t;
	int rc;

	if (p->seq_len < 1 || p->max_seqs < 1)
		return llm_error(LLM_EINVAL, "training sequence length and batch must "
		                 "be positive");
	if (!p->full && !lora)
		return llm_error(LLM_EINVAL, "nothing to train: no adapter and not full");
	if (p->dropout < 0 || p->dropout >= 1)
		return llm_error(LLM_EINVAL, "dropout %g is outside [0, 1)", p->dropout);
	if (p->qat_type >= 0) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(p->qat_type);
		if (!tr || !tr->to_float || !tr->from_float)
			return llm_error(LLM_EUNSUPPORTED, "QAT type %s cannot be "
			                 "quantized yet", llm_dtype_name(p->qat_type));
	}
	if (!(t = calloc(1, sizeof(*t))))
		return llm_error(LLM_ENOMEM, "out of memory");
	t->base = m;
	t->fm = *m;
	t->p = *p;
	t->lora = p->full ? NULL : lora;
	t->n_rows = (int64_t)p->max_seqs * p->seq_len;
	t->layers = malloc(hp->n_layer * sizeof(*t->layers));
	if (!t->layers) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	memcpy(t->layers, m->layers, hp->n_layer * sizeof(*t->layers));
	t->fm.layers = t->layers;
	if (p->backend)
		t->be = p->backend;
	else if ((rc = llm_backend_init(&t->be, p->device ? p->device : "cpu",
	                                p->n_threads)))
		goto fail;
	t->op = t->be->ops;
	t->dev = !t->op->host_memory;
	if (t->dev) {
		const struct llm_backend_ops *o = t->op;
		if (p->full || p->qat_type >= 0) {
			rc = llm_error(LLM_EUNSUPPORTED, "device %s: %s training runs on "
			               "the CPU only", t->op->name,
			               p->full ? "full" : "quantization-aware");
			goto fail;
		}
		if (!o->gemm || !o->matmul_train || !o->matmul_bwd || !o->rmsnorm_bwd ||
		    !o->rope_bwd || !o->attn_train || !o->attn_train_bwd ||
		    !o->swiglu_fwd || !o->swiglu_bwd || !o->cross_entropy || !o->adamw ||
		    !o->status) {
			rc = llm_error(LLM_EUNSUPPORTED, "device %s: the backend has no "
			               "training ops", t->op->name);
			goto fail;
		}
	}
	for (int il = 0; il < hp->n_layer; il++)
		for (int k = 0; k < LLM_LORA_N; k++) {
			const struct llm_tensor *w = llm_lora_base_weight(m, il, k);
			if (!t->op->supports(t->be, w->type) ||
			    !llm_dtype_traits(w->type)->to_float) {
				rc = llm_error(LLM_EUNSUPPORTED, "%s: %s weights are not "
				               "supported for training", w->name,
				               llm_dtype_name(w->type));
				goto fail;
			}
		}
	if ((rc = p->full ? setup_full(t) : setup_lora(t)))
		goto fail;

	int64_t n = t->n_rows;
	int nl = p->recompute ? 1 : hp->n_layer;
	t->a = calloc(nl, sizeof(*t->a));
	t->xs = calloc(hp->n_layer + 1, sizeof(float *));
	if (!t->a || !t->xs) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	for (int il = 0; il < nl; il++)
		if (acts_alloc(&t->a[il], t, p->recompute ? -1 : il, !p->recompute)) {
			rc = llm_error(LLM_ENOMEM, "out of memory for the activations of "
			               "%lld tokens", (long long)n);
			goto fail;
		}
	for (int il = 0; il < hp->n_layer; il++) {
		t->xs[il] = p->recompute ? ba(t, n * hp->n_embd) : t->a[il].x;
		if (!t->xs[il]) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto fail;
		}
	}
	int wide = hp->n_ff > q_dim(hp) ? hp->n_ff : q_dim(hp);
	if (wide < hp->n_embd)
		wide = hp->n_embd;
	int max_rank = t->lora ? t->lora->rank : 1;
	t->xl = ba(t, n * hp->n_embd);
	t->xs[hp->n_layer] = t->xl;
	t->xf = ba(t, n * hp->n_embd);
	t->dx = ba(t, n * hp->n_embd);
	t->dtmp = ba(t, n * hp->n_embd);
	t->dq = ba(t, n * q_dim(hp));
	t->dk = ba(t, n * kv_dim(hp));
	t->dv = ba(t, n * kv_dim(hp));
	t->datt = ba(t, n * q_dim(hp));
	t->dh = ba(t, n * hp->n_ff);
	t->dg = ba(t, n * hp->n_ff);
	t->du = ba(t, n * hp->n_ff);
	t->dxn = ba(t, n * hp->n_embd);
	t->drop = ba(t, n * wide);
	t->drop2 = p->dropout > 0 ? ba(t, n * wide) : NULL;
	t->dt = ba(t, n * (max_rank > 0 ? max_rank : 1));
	t->logits = ba(t, (size_t)LOGIT_CHUNK * hp->n_vocab);
	t->loss = ba(t, n);
	if (p->full && t->fm.layers[0].bq.data) {
		/* full training is on the CPU only (llm_trainer_new): host memory */
		LLM_ASSERT(!t->dev);
		if ((t->ones = ba(t, n)))
			for (int64_t i = 0; i < n; i++)
				t->ones[i] = 1.0f;
	}
	t->pos = malloc(n * sizeof(int32_t));
	t->hloss = t->dev ? fa(n) : t->loss;
	if (t->dev) {
		t->n_zeros = n * hp->n_embd;
		t->zeros = ba(t, t->n_zeros);
		if (p->dropout > 0) {
			t->hdrop = fa(n * wide);
			t->hdrop2 = fa(n * wide);
		}
	}
	bool dev_ok = !t->dev || (t->zeros && (p->dropout <= 0 ||
	                                        (t->hdrop && t->hdrop2)));
	if (!dev_ok || !t->hloss ||
	    !t->xl || !t->xf || !t->dx || !t->dtmp || !t->dq || !t->dk || !t->dv ||
	    !t->datt || !t->dh || !t->dg || !t->du || !t->dxn || !t->drop ||
	    (p->dropout > 0 && !t->drop2) || !t->dt ||
	    !t->logits || !t->loss || !t->pos ||
	    (p->full && t->fm.layers[0].bq.data && !t->ones)) {
		rc = llm_error(LLM_ENOMEM, "out of memory for the activations of %lld "
		               "tokens", (long long)n);
		goto fail;
	}
	if (p->qat_type >= 0) {
		int64_t mx = 0;
		for (int il = 0; il < hp->n_layer; il++)
			for (int k = 0; k < LLM_LORA_N; k++) {
				int64_t e = llm_tensor_nelements(llm_lora_base_weight(m, il, k));
				mx = e > mx ? e : mx;
			}
		if (!(t->qat_w = fa(2 * mx))) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto fail;
		}
	}
	if ((rc = be_status(t)))
		goto fail;
	*out = t;
	return 0;
fail:
	llm_trainer_free(t);
	return rc;
}

void llm_trainer_free(struct llm_trainer *t)
{
	if (!t)
		return;
	int nl = t->p.recompute ? 1 : t->fm.hp.n_layer;
	if (t->be) {   /* the backend's memory, while there is a backend */
		if (t->a)
			for (int il = 0; il < nl; il++)
				acts_free(t, &t->a[il]);
		if (t->xs && t->p.recompute)
			for (int il = 0; il < t->fm.hp.n_layer; il++)
				bfree(t, t->xs[il]);
		float *bufs[] = { t->xl, t->xf, t->dx, t->dtmp, t->dq, t->dk, t->dv,
		                  t->datt, t->dh, t->dg, t->du, t->dxn, t->drop,
		                  t->drop2, t->dt, t->logits, t->loss, t->zeros,
		                  t->ones, t->full_mem };
		for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
			bfree(t, bufs[i]);
		if (t->dev && t->params && t->n_params == 1 && !t->p.full) {
			bfree(t, t->params[0].p);
			bfree(t, t->params[0].g);
			bfree(t, t->params[0].m);
			bfree(t, t->params[0].v);
		}
	}
	free(t->a);
	free(t->xs);
	if (t->dev)
		free(t->hloss);
	free(t->hdrop);
	free(t->hdrop2);
	free(t->pos);
	free(t->qat_w);
	llm_lora_free(t->lgrad);
	llm_lora_free(t->lm);
	llm_lora_free(t->lv);
	free(t->params);
	free(t->layers);
	if (t->be && !t->p.backend)
		llm_backend_free(t->be);
	free(t);
}

int64_t llm_trainer_steps(const struct llm_trainer *t) { return t->step; }
const struct llm_lora *llm_trainer_lora_grad(const struct llm_trainer *t)
{
	if (t->dev && t->lgrad) {
		const struct tparam *tp = &t->params[0];
		t->op->download(t->be, tp->hg, tp->g, (size_t)tp->n * sizeof(float));
	}
	return t->lgrad;
}
const struct llm_model *llm_trainer_model(const struct llm_trainer *t) { return &t->fm; }

static struct tparam *param_of(const struct llm_trainer *t, const void *data)
{
	for (int i = 0; i < t->n_params; i++)
		if (t->params[i].key && t->params[i].key == data)
			return &t->params[i];
	return NULL;
}

const float *llm_trainer_weight_grad(const struct llm_trainer *t,
                                     const void *data)
{
	struct tparam *tp = param_of(t, data);
	return tp ? tp->g : NULL;
}

void llm_trainer_zero_grad(struct llm_trainer *t)
{
	for (int i = 0; i < t->n_params; i++)
		bzero_(t, t->params[i].g, t->params[i].n);
}

/* The backend copy of an A or B matrix of the adapter (grad: of the
 * gradient adapter), given its host address (the same on the CPU). */
static float *lora_dev(const struct llm_trainer *t, const float *host, bool grad)
{
	const struct tparam *tp = &t->params[0];
	return grad ? tp->g + (host - tp->hg) : tp->p + (host - tp->hp);
}

/* ---------------------------------------------------------------- forward */

struct pass {
	int n;                          /* rows */
	int n_seq;
	const int32_t *start;
	bool train;                     /* dropout on */
	int64_t micro;
};

/* Dropout of the LoRA input of target k: the mask is a hash of (seed,
 * micro-batch, layer, target, element), so the backward regenerates it.
 * With x, out = drop(x); without, out = the mask (0 or 1 / (1 - p)). */
static void drop_fill(struct llm_trainer *t, const struct pass *ps, int il,
                      int k, const float *x, float *out, int n_in)
{
	float p = t->p.dropout, keep = 1.0f / (1.0f - p);
	uint64_t base = mix(t->p.seed ^ mix((uint64_t)ps->micro * 64 + il * 8 + k));
	int64_t tot = (int64_t)ps->n * n_in;
	for (int64_t i = 0; i < tot; i++) {
		double u = (double)(mix(base + (uint64_t)i) >> 11) * 0x1p-53;
		float f = u < p ? 0.0f : keep;
		out[i] = x ? x[i] * f : f;
	}
}

/* The input the LoRA of target k sees: x, or x with dropout. */
static const float *lora_input(struct llm_trainer *t, const struct pass *ps,
                               int il, int k, const float *x, int n_in)
{
	if (!ps->train || t->p.dropout <= 0)
		return x;
	if (t->dev) {
		/* the mask is made on the host: x there and back */
		size_t bytes = (size_t)ps->n * n_in * sizeof(float);
		t->op->download(t->be, t->hdrop, x, bytes);
		drop_fill(t, ps, il, k, t->hdrop, t->hdrop, n_in);
		t->op->upload(t->be, t->drop, t->hdrop, bytes);
		return t->drop;
	}
	drop_fill(t, ps, il, k, x, t->drop, n_in);
	return t->drop;
}

/* QAT: Q(W + s B A) as f32 into t->qat_w. */
static const struct llm_tensor *qat_weight(struct llm_trainer *t,
                                           const struct llm_tensor *w,
                                           const struct llm_lora_mat *lm)
{
	int n_in = (int)w->ne[0], n_out = (int)w->ne[1];
	const struct llm_dtype_traits *ti = llm_dtype_traits(w->type);
	const struct llm_dtype_traits *tq = llm_dtype_traits(t->p.qat_type);
	float *wf = t->qat_w;
	size_t rb = llm_tensor_row_size(w);
	for (int r = 0; r < n_out; r++)
		ti->to_float((const char *)w->data + r * rb, wf + (int64_t)r * n_in, n_in);
	if (lm && lm->a)
		llm_lora_mat_add_delta(lm, t->lora->scale, wf);
	size_t qr = llm_row_size(t->p.qat_type, n_in);
	if (qr) {   /* rows that are no whole number of blocks stay as they are */
		void *qb = t->qat_w + (int64_t)n_in * n_out;
		for (int r = 0; r < n_out; r++) {
			tq->from_float(wf + (int64_t)r * n_in, (char *)qb + r * qr, n_in);
			tq->to_float((char *)qb + r * qr, wf + (int64_t)r * n_in, n_in);
		}
	}
	t->qat_t = *w;
	t->qat_t.type = LLM_F32;
	t->qat_t.data = wf;
	t->qat_t.nbytes = (size_t)n_in * n_out * sizeof(float);
	return &t->qat_t;
}

/* y (n x n_out) = x W^T + the adapter's delta; lt gets drop(x) A^T. */
static void proj_fwd(struct llm_trainer *t, const struct pass *ps, int il, int k,
                     const float *x, float *y, float *lt)
{
	const struct llm_tensor *w = llm_lora_base_weight(&t->fm, il, k);
	int n_in = (int)w->ne[0], n_out = (int)w->ne[1];
	const struct llm_lora_mat *lm = t->lora ? llm_lora_mat(t->lora, il, k) : NULL;
	bool adapted = lm && lm->a;

	if (t->qat_w) {
		/* forward through Q(W + s B A); lt still kept for the gradient */
		t->op->matmul_train(t->be, qat_weight(t, w, lm), x, y, ps->n);
		if (adapted) {
			const float *xd = lora_input(t, ps, il, k, x, n_in);
			t->op->gemm(t->be, LLM_GEMM_N, LLM_GEMM_T, ps->n, lm->rank, n_in, 1.0f,
			            xd, n_in, lm->a, n_in, 0.0f, lt, lm->rank);
		}
		return;
	}
	t->op->matmul_train(t->be, w, x, y, ps->n);
	if (!adapted)
		return;
	const float *xd = lora_input(t, ps, il, k, x, n_in);
	t->op->gemm(t->be, LLM_GEMM_N, LLM_GEMM_T, ps->n, lm->rank, n_in, 1.0f, xd,
	            n_in, lora_dev(t, lm->a, false), n_in, 0.0f, lt, lm->rank);
	t->op->gemm(t->be, LLM_GEMM_N, LLM_GEMM_T, ps->n, n_out, lm->rank,
	            t->lora->scale, lt, lm->rank, lora_dev(t, lm->b, false), lm->rank,
	            1.0f, y, n_out);
}

static void layer_fwd(struct llm_trainer *t, const struct pass *ps, int il,
                      struct acts *a, const float *x, float *xo)
{
	const struct llm_hparams *hp = &t->fm.hp;
	const struct llm_layer *l = &t->fm.layers[il];
	const struct llm_backend_ops *op = t->op;
	struct llm_backend *be = t->be;
	int n = ps->n, d = hp->n_embd;
	struct llm_attn_train at = { ps->n_seq, t->p.seq_len, hp->n_head,
	                             hp->n_head_kv, hp->head_dim,
	                             1.0f / sqrtf((float)hp->head_dim), ps->start };

	op->rmsnorm(be, x, l->attn_norm.data, a->xn1, n, d, hp->rms_eps);
	proj_fwd(t, ps, il, LLM_LORA_Q, a->xn1, a->q, a->lt[LLM_LORA_Q]);
	proj_fwd(t, ps, il, LLM_LORA_K, a->xn1, a->k, a->lt[LLM_LORA_K]);
	proj_fwd(t, ps, il, LLM_LORA_V, a->xn1, a->v, a->lt[LLM_LORA_V]);
	if (l->bq.data) {
		op->add_bias(be, a->q, l->bq.data, n, q_dim(hp));
		op->add_bias(be, a->k, l->bk.data, n, kv_dim(hp));
		op->add_bias(be, a->v, l->bv.data, n, kv_dim(hp));
	}
	op->rope(be, a->q, t->pos, n, hp->n_head, hp->head_dim, &hp->rope);
	op->rope(be, a->k, t->pos, n, hp->n_head_kv, hp->head_dim, &hp->rope);
	op->attn_train(be, &at, a->q, a->k, a->v, a->att, a->lse);
	proj_fwd(t, ps, il, LLM_LORA_O, a->att, a->x2, a->lt[LLM_LORA_O]);
	op->add(be, a->x2, x, (int64_t)n * d);
	op->rmsnorm(be, a->x2, l->ffn_norm.data, a->xn2, n, d, hp->rms_eps);
	proj_fwd(t, ps, il, LLM_LORA_GATE, a->xn2, a->g, a->lt[LLM_LORA_GATE]);
	proj_fwd(t, ps, il, LLM_LORA_UP, a->xn2, a->u, a->lt[LLM_LORA_UP]);
	op->swiglu_fwd(be, a->g, a->u, a->h, (int64_t)n * hp->n_ff);
	proj_fwd(t, ps, il, LLM_LORA_DOWN, a->h, xo, a->lt[LLM_LORA_DOWN]);
	op->add(be, xo, a->x2, (int64_t)n * d);
}

/* ---------------------------------------------------------------- backward */

/* dx (n x n_in) = beta dx + dy W (+ the adapter's part); gradients of the
 * adapter or the weight added.  x is the projection's input. */
static void proj_bwd(struct llm_trainer *t, const struct pass *ps, int il, int k,
                     const float *x, const float *dy, float *dx, float beta,
                     const float *lt)
{
	const struct llm_tensor *w = llm_lora_base_weight(&t->fm, il, k);
	int n = ps->n, n_in = (int)w->ne[0], n_out = (int)w->ne[1];
	const struct llm_lora_mat *lm = t->lora ? llm_lora_mat(t->lora, il, k) : NULL;
	struct llm_backend *be = t->be;

	if (t->qat_w) {
		/* straight through: the input gradient through the quantized
		 * merged weight (rebuilt: other projections used the buffer) */
		t->op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, n_out, 1.0f, dy, n_out,
		            qat_weight(t, w, lm)->data, n_in, beta, dx, n_in);
	} else {
		t->op->matmul_bwd(be, w, dy, dx, n, beta);
	}
	if (t->p.full) {
		struct tparam *tp = param_of(t, w->data);
		LLM_ASSERT(tp);
		t->op->gemm(be, LLM_GEMM_T, LLM_GEMM_N, n_out, n_in, n, 1.0f, dy, n_out,
		            x, n_in, 1.0f, tp->g, n_in);
		return;
	}
	if (!lm || !lm->a)
		return;
	const struct llm_lora_mat *gm = llm_lora_mat(t->lgrad, il, k);
	int r = lm->rank;
	float s = t->lora->scale;
	const float *A = lora_dev(t, lm->a, false), *B = lora_dev(t, lm->b, false);
	float *gA = lora_dev(t, gm->a, true), *gB = lora_dev(t, gm->b, true);
	/* dt = s dy B ; dB += s dy^T lt ; dA += dt^T drop(x) ; dx += drop'(dt A) */
	t->op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, r, n_out, s, dy, n_out, B, r,
	            0.0f, t->dt, r);
	t->op->gemm(be, LLM_GEMM_T, LLM_GEMM_N, n_out, r, n, s, dy, n_out, lt, r,
	            1.0f, gB, r);
	const float *xd = lora_input(t, ps, il, k, x, n_in);
	t->op->gemm(be, LLM_GEMM_T, LLM_GEMM_N, r, n_in, n, 1.0f, t->dt, r, xd, n_in,
	            1.0f, gA, n_in);
	if (xd == x) {
		t->op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, r, 1.0f, t->dt, r, A,
		            n_in, 1.0f, dx, n_in);
	} else if (t->dev) {
		/* dx += (dt A) * mask, the mask on the host: drop_fill of dt A
		 * gives each product (dt A)[i] * mask[i] as the CPU's loop does */
		t->op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, r, 1.0f, t->dt, r, A,
		            n_in, 0.0f, t->drop2, n_in);
		int64_t tot = (int64_t)n * n_in;
		size_t bytes = (size_t)tot * sizeof(float);
		t->op->download(be, t->hdrop2, t->drop2, bytes);
		drop_fill(t, ps, il, k, t->hdrop2, t->hdrop2, n_in);
		t->op->download(be, t->hdrop, dx, bytes);
		for (int64_t i = 0; i < tot; i++)
			t->hdrop[i] += t->hdrop2[i];
		t->op->upload(be, dx, t->hdrop, bytes);
	} else {
		/* dx += (dt A) * mask */
		t->op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, n, n_in, r, 1.0f, t->dt, r, A,
		            n_in, 0.0f, t->drop2, n_in);
		drop_fill(t, ps, il, k, NULL, t->drop, n_in);
		int64_t tot = (int64_t)n * n_in;
		for (int64_t i = 0; i < tot; i++)
			dx[i] += t->drop2[i] * t->drop[i];
	}
}

/* dx holds dL/d(layer output); leaves dL/d(layer input). */
static void layer_bwd(struct llm_trainer *t, const struct pass *ps, int il,
                      struct acts *a, const float *x)
{
	const struct llm_hparams *hp = &t->fm.hp;
	const struct llm_layer *l = &t->fm.layers[il];
	const struct llm_backend_ops *op = t->op;
	struct llm_backend *be = t->be;
	int n = ps->n, d = hp->n_embd;
	struct llm_attn_train at = { ps->n_seq, t->p.seq_len, hp->n_head,
	                             hp->n_head_kv, hp->head_dim,
	                             1.0f / sqrtf((float)hp->head_dim), ps->start };
	struct tparam *gn1 = t->p.full ? param_of(t, l->attn_norm.data) : NULL;
	struct tparam *gn2 = t->p.full ? param_of(t, l->ffn_norm.data) : NULL;

	/* x' = x2 + down(h) */
	proj_bwd(t, ps, il, LLM_LORA_DOWN, a->h, t->dx, t->dh, 0.0f,
	         a->lt[LLM_LORA_DOWN]);
	op->swiglu_bwd(be, a->g, a->u, t->dh, t->dg, t->du, (int64_t)n * hp->n_ff);
	proj_bwd(t, ps, il, LLM_LORA_GATE, a->xn2, t->dg, t->dxn, 0.0f,
	         a->lt[LLM_LORA_GATE]);
	proj_bwd(t, ps, il, LLM_LORA_UP, a->xn2, t->du, t->dxn, 1.0f,
	         a->lt[LLM_LORA_UP]);
	op->rmsnorm_bwd(be, a->x2, l->ffn_norm.data, t->dxn, t->dx,
	                gn2 ? gn2->g : NULL, n, d, hp->rms_eps);
	/* x2 = x + o(att) ; dx now dL/dx2 */
	proj_bwd(t, ps, il, LLM_LORA_O, a->att, t->dx, t->datt, 0.0f,
	         a->lt[LLM_LORA_O]);
	op->attn_train_bwd(be, &at, a->q, a->k, a->v, a->att, a->lse, t->datt,
	                   t->dq, t->dk, t->dv);
	op->rope_bwd(be, t->dq, t->pos, n, hp->n_head, hp->head_dim, &hp->rope);
	op->rope_bwd(be, t->dk, t->pos, n, hp->n_head_kv, hp->head_dim, &hp->rope);
	if (t->p.full && l->bq.data) {
		/* the biases were added before RoPE: their gradients are the
		 * column sums of dq, dk, dv (ones^T d) */
		const float *d3[] = { t->dq, t->dk, t->dv };
		const struct llm_tensor *b3[] = { &l->bq, &l->bk, &l->bv };
		for (int j = 0; j < 3; j++) {
			struct tparam *tp = param_of(t, b3[j]->data);
			int w = (int)b3[j]->ne[0];
			LLM_ASSERT(tp);
			op->gemm(be, LLM_GEMM_N, LLM_GEMM_N, 1, w, n, 1.0f, t->ones, n,
			         d3[j], w, 1.0f, tp->g, w);
		}
	}
	proj_bwd(t, ps, il, LLM_LORA_Q, a->xn1, t->dq, t->dxn, 0.0f, a->lt[LLM_LORA_Q]);
	proj_bwd(t, ps, il, LLM_LORA_K, a->xn1, t->dk, t->dxn, 1.0f, a->lt[LLM_LORA_K]);
	proj_bwd(t, ps, il, LLM_LORA_V, a->xn1, t->dv, t->dxn, 1.0f, a->lt[LLM_LORA_V]);
	op->rmsnorm_bwd(be, x, l->attn_norm.data, t->dxn, t->dx,
	                gn1 ? gn1->g : NULL, n, d, hp->rms_eps);
}

/* ---------------------------------------------------------------- passes */

static int check_batch(struct llm_trainer *t, const struct llm_train_batch *b,
                       struct pass *ps)
{
	int T = t->p.seq_len;
	if (b->n_seq < 1 || b->n_seq > t->p.max_seqs)
		return llm_error(LLM_EINVAL, "micro-batch of %d sequences (1..%d)",
		                 b->n_seq, t->p.max_seqs);
	ps->n_seq = b->n_seq;
	ps->n = b->n_seq * T;
	ps->start = b->start;
	for (int i = 0; i < ps->n; i++) {
		int j = i % T;
		if (b->tokens[i] < 0 || b->tokens[i] >= t->fm.hp.n_vocab ||
		    b->targets[i] >= t->fm.hp.n_vocab || b->start[i] < 0 ||
		    b->start[i] > j)
			return llm_error(LLM_EINVAL, "micro-batch row %d: bad token, "
			                 "target or start", i);
		t->pos[i] = j - b->start[i];
	}
	return 0;
}

/* Forward through the layers; with save, every layer's activations kept
 * (or only inputs, with recompute). */
static void run_layers(struct llm_trainer *t, const struct pass *ps,
                       const struct llm_train_batch *b)
{
	const struct llm_hparams *hp = &t->fm.hp;
	t->op->get_rows(t->be, &t->fm.tok_embd, b->tokens, ps->n, t->xs[0]);
	for (int il = 0; il < hp->n_layer; il++) {
		struct acts *a = &t->a[t->p.recompute ? 0 : il];
		layer_fwd(t, ps, il, a, t->xs[il], t->xs[il + 1]);
	}
	t->op->rmsnorm(t->be, t->xl, t->fm.output_norm.data, t->xf, ps->n,
	               hp->n_embd, hp->rms_eps);
}

/* Logits chunk by chunk; with grads, their cross-entropy gradient back
 * into dxn (the gradient of xf). */
static double head(struct llm_trainer *t, const struct pass *ps,
                   const int32_t *targets, float scale, bool grads,
                   int64_t *n_targets)
{
	const struct llm_hparams *hp = &t->fm.hp;
	int d = hp->n_embd, nv = hp->n_vocab;
	double nll = 0;
	struct tparam *go = t->p.full ? param_of(t, t->fm.output.data) : NULL;
	int64_t cnt = 0;

	for (int r0 = 0; r0 < ps->n; r0 += LOGIT_CHUNK) {
		int c = ps->n - r0 < LOGIT_CHUNK ? ps->n - r0 : LOGIT_CHUNK;
		bool any = false;
		for (int i = 0; i < c; i++)
			any |= targets[r0 + i] >= 0;
		if (!any) {
			if (grads)
				bzero_(t, t->dxn + (int64_t)r0 * d, (int64_t)c * d);
			continue;
		}
		t->op->matmul_train(t->be, &t->fm.output, t->xf + (int64_t)r0 * d, t->logits, c);
		t->op->cross_entropy(t->be, t->logits, targets + r0, c, nv, scale,
		                     t->loss + r0);
		if (t->dev)
			t->op->download(t->be, t->hloss + r0, t->loss + r0,
			                (size_t)c * sizeof(float));
		for (int i = 0; i < c; i++)
			if (targets[r0 + i] >= 0) {
				nll += t->hloss[r0 + i];
				cnt++;
			}
		if (!grads)
			continue;
		t->op->matmul_bwd(t->be, &t->fm.output, t->logits,
		                  t->dxn + (int64_t)r0 * d, c, 0.0f);
		if (go)
			t->op->gemm(t->be, LLM_GEMM_T, LLM_GEMM_N, nv, d, c, 1.0f, t->logits,
			            nv, t->xf + (int64_t)r0 * d, d, 1.0f, go->g, d);
	}
	if (n_targets)
		*n_targets = cnt;
	return nll;
}

int llm_trainer_backward(struct llm_trainer *t, const struct llm_train_batch *b,
                         float scale, double *nll)
{
	const struct llm_hparams *hp = &t->fm.hp;
	struct pass ps = { .train = true, .micro = t->micro++ };
	int rc, d = hp->n_embd;

	if ((rc = check_batch(t, b, &ps)))
		return rc;
	run_layers(t, &ps, b);
	double l = head(t, &ps, b->targets, scale, true, NULL);
	if (nll)
		*nll = l;

	struct tparam *gon = t->p.full ? param_of(t, t->fm.output_norm.data) : NULL;
	bzero_(t, t->dx, (int64_t)ps.n * d);
	t->op->rmsnorm_bwd(t->be, t->xl, t->fm.output_norm.data, t->dxn, t->dx,
	                   gon ? gon->g : NULL, ps.n, d, hp->rms_eps);
	for (int il = hp->n_layer - 1; il >= 0; il--) {
		struct acts *a = &t->a[t->p.recompute ? 0 : il];
		if (t->p.recompute)  /* into dtmp: xs[il + 1] must stay */
			layer_fwd(t, &ps, il, a, t->xs[il], t->dtmp);
		layer_bwd(t, &ps, il, a, t->xs[il]);
	}
	if (t->p.full) {
		struct tparam *ge = param_of(t, t->fm.tok_embd.data);
		for (int i = 0; i < ps.n; i++) {
			float *gr = ge->g + (int64_t)b->tokens[i] * d;
			const float *dr = t->dx + (int64_t)i * d;
			for (int j = 0; j < d; j++)
				gr[j] += dr[j];
		}
	}
	return be_status(t);
}

int llm_trainer_eval(struct llm_trainer *t, const struct llm_train_batch *b,
                     double *nll, int64_t *n_targets)
{
	struct pass ps = { .train = false };
	int rc;
	if ((rc = check_batch(t, b, &ps)))
		return rc;
	run_layers(t, &ps, b);
	*nll = head(t, &ps, b->targets, 0.0f, false, n_targets);
	return be_status(t);
}

int llm_trainer_update(struct llm_trainer *t, struct llm_train_stats *st)
{
	double ss = 0;
	int rc;
	/* the norm and the clipping on the host, in the CPU's order */
	for (int i = 0; i < t->n_params && t->dev; i++)
		t->op->download(t->be, t->params[i].hg, t->params[i].g,
		                (size_t)t->params[i].n * sizeof(float));
	if ((rc = be_status(t)))
		return rc;
	for (int i = 0; i < t->n_params; i++) {
		const float *g = t->params[i].hg;
		double s = 0;
		for (int64_t j = 0; j < t->params[i].n; j++)
			s += (double)g[j] * g[j];
		ss += s;
	}
	float norm = (float)sqrt(ss);
	if (!isfinite(norm))
		return llm_error(LLM_ERANGE, "step %lld: the gradient is not finite",
		                 (long long)t->step + 1);
	if (t->p.grad_clip > 0 && norm > t->p.grad_clip) {
		/* as torch.nn.utils.clip_grad_norm_ */
		float c = t->p.grad_clip / (norm + 1e-6f);
		for (int i = 0; i < t->n_params; i++) {
			for (int64_t j = 0; j < t->params[i].n; j++)
				t->params[i].hg[j] *= c;
			if (t->dev)
				t->op->upload(t->be, t->params[i].g, t->params[i].hg,
				              (size_t)t->params[i].n * sizeof(float));
		}
	}
	float lr = llm_train_lr(&t->p, t->step);
	t->step++;
	for (int i = 0; i < t->n_params; i++) {
		struct tparam *tp = &t->params[i];
		t->op->adamw(t->be, tp->p, tp->g, tp->m, tp->v, tp->n, lr, t->p.beta1,
		             t->p.beta2, t->p.eps, tp->decay ? t->p.weight_decay : 0.0f,
		             t->step);
		if (t->dev)   /* the adapter, updated in place (train.h) */
			t->op->download(t->be, tp->hp, tp->p, (size_t)tp->n * sizeof(float));
	}
	if ((rc = be_status(t)))
		return rc;
	if (st) {
		st->step = t->step;
		st->lr = lr;
		st->grad_norm = norm;
	}
	return 0;
}

int llm_trainer_step(struct llm_trainer *t, const struct llm_train_batch *mb,
                     int n_micro, struct llm_train_stats *st)
{
	int64_t total = 0;
	double nll = 0;
	int rc;
	for (int i = 0; i < n_micro; i++)
		for (int j = 0; j < mb[i].n_seq * t->p.seq_len; j++)
			total += mb[i].targets[j] >= 0;
	llm_trainer_zero_grad(t);
	for (int i = 0; i < n_micro; i++) {
		double l;
		if ((rc = llm_trainer_backward(t, &mb[i], total ? 1.0f / (float)total : 0,
		                               &l)))
			return rc;
		nll += l;
	}
	if ((rc = llm_trainer_update(t, st)))
		return rc;
	if (st) {
		st->loss = total ? nll / (double)total : 0;
		st->n_targets = total;
	}
	return 0;
}

/* ---------------------------------------------------------------- state */

/*
 * Checkpoint file: "LLMTRAIN" magic, u32 version, u32 n_params, i64 step,
 * i64 micro, then for each parameter i64 n and its values, m and v, then
 * u64 n_extra and the extra bytes, and a u64 checksum (FNV-1a) of all the
 * preceding bytes.
 */
#define CKPT_MAGIC "LLMTRAIN"

struct wr {
	FILE *f;
	uint64_t h;
	bool ok;
};

static void wr(struct wr *w, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		w->h = (w->h ^ c[i]) * 0x100000001b3ull;
	if (fwrite(p, 1, n, w->f) != n)
		w->ok = false;
}

int llm_trainer_save(const struct llm_trainer *t, const char *path,
                     const void *extra, size_t n_extra)
{
	struct llm_ofile *o;
	int rc;
	for (int i = 0; i < t->n_params && t->dev; i++) {
		const struct tparam *tp = &t->params[i];
		size_t bytes = (size_t)tp->n * sizeof(float);
		t->op->download(t->be, tp->hp, tp->p, bytes);
		t->op->download(t->be, tp->hm, tp->m, bytes);
		t->op->download(t->be, tp->hv, tp->v, bytes);
	}
	if ((rc = be_status(t)))
		return rc;
	if ((rc = llm_ofile_open(&o, path)))
		return rc;
	struct wr w = { o->f, 0xcbf29ce484222325ull, true };
	uint32_t ver = 1, np = (uint32_t)t->n_params;
	uint64_t ne = n_extra;
	wr(&w, CKPT_MAGIC, 8);
	wr(&w, &ver, 4);
	wr(&w, &np, 4);
	wr(&w, &t->step, 8);
	wr(&w, &t->micro, 8);
	for (int i = 0; i < t->n_params; i++) {
		const struct tparam *tp = &t->params[i];
		wr(&w, &tp->n, 8);
		wr(&w, tp->hp, tp->n * sizeof(float));
		wr(&w, tp->hm, tp->n * sizeof(float));
		wr(&w, tp->hv, tp->n * sizeof(float));
	}
	wr(&w, &ne, 8);
	if (n_extra)
		wr(&w, extra, n_extra);
	uint64_t h = w.h;
	wr(&w, &h, 8);
	if (!w.ok) {
		llm_ofile_abort(o);
		return llm_error(LLM_EIO, "%s: write failed", path);
	}
	return llm_ofile_commit(o);
}

int llm_trainer_load(struct llm_trainer *t, const char *path, void **extra,
                     size_t *n_extra)
{
	char *data;
	size_t size, off = 0;
	int rc;
	if ((rc = llm_read_file(path, &data, &size)))
		return rc;
#define TAKE(dst, n) do { if (size - off < (size_t)(n)) goto bad; \
	memcpy((dst), data + off, (n)); off += (n); } while (0)
	char magic[8];
	uint32_t ver, np;
	int64_t step, micro;
	uint64_t ne, h = 0xcbf29ce484222325ull, hh;
	if (size < 8 + 8)
		goto bad;
	for (size_t i = 0; i < size - 8; i++)
		h = (h ^ (unsigned char)data[i]) * 0x100000001b3ull;
	memcpy(&hh, data + size - 8, 8);
	if (h != hh) {
		free(data);
		return llm_error(LLM_EFORMAT, "%s: checksum mismatch (truncated or "
		                 "damaged checkpoint)", path);
	}
	TAKE(magic, 8);
	if (memcmp(magic, CKPT_MAGIC, 8))
		goto bad;
	TAKE(&ver, 4);
	TAKE(&np, 4);
	if (ver != 1 || np != (uint32_t)t->n_params)
		goto mismatch;
	TAKE(&step, 8);
	TAKE(&micro, 8);
	for (int i = 0; i < t->n_params; i++) {
		struct tparam *tp = &t->params[i];
		int64_t n;
		TAKE(&n, 8);
		if (n != tp->n)
			goto mismatch;
		TAKE(tp->hp, n * sizeof(float));
		TAKE(tp->hm, n * sizeof(float));
		TAKE(tp->hv, n * sizeof(float));
	}
	TAKE(&ne, 8);
	if (ne > size - off)
		goto bad;
	if (extra) {
		*extra = malloc(ne ? ne : 1);
		if (!*extra) {
			free(data);
			return llm_error(LLM_ENOMEM, "out of memory");
		}
		memcpy(*extra, data + off, ne);
		*n_extra = ne;
	}
#undef TAKE
	t->step = step;
	t->micro = micro;
	free(data);
	for (int i = 0; i < t->n_params && t->dev; i++) {
		struct tparam *tp = &t->params[i];
		size_t bytes = (size_t)tp->n * sizeof(float);
		t->op->upload(t->be, tp->p, tp->hp, bytes);
		t->op->upload(t->be, tp->m, tp->hm, bytes);
		t->op->upload(t->be, tp->v, tp->hv, bytes);
	}
	return be_status(t);
bad:
	free(data);
	return llm_error(LLM_EFORMAT, "%s: not a training checkpoint", path);
mismatch:
	free(data);
	return llm_error(LLM_EINVAL, "%s: checkpoint of a different model, "
	                 "adapter shape or training mode", path);
}
