/*
 * forward.c - the forward pass over a token batch (forward.h).
 *
 * Per layer, over all n tokens of the batch at once:
 *
 *   xb = rmsnorm(x) ; q, k, v = xb Wq, xb Wk, xb Wv (+ biases) ; rope(q, k)
 *   store k, v at each token's KV slot ; a = attention(q, its sequence's KV)
 *   x += a Wo ; xb = rmsnorm(x) ; x += (silu(xb Wg) * xb Wu) Wd
 *
 * then the final norm and output matrix only for the tokens that want
 * logits.  Everything here is backend calls; this file never touches an
 * activation itself, so it drives any backend.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "llmkit/util.h"

/* ---------------------------------------------------------------- batch */

int llm_batch_init(struct llm_batch *b, int cap)
{
	memset(b, 0, sizeof(*b));
	if (cap < 1)
		return llm_error(LLM_EINVAL, "batch capacity must be positive");
	b->token = malloc(cap * sizeof(*b->token));
	b->pos = malloc(cap * sizeof(*b->pos));
	b->seq = malloc(cap * sizeof(*b->seq));
	b->adapter = malloc(cap * sizeof(*b->adapter));
	b->logits = malloc(cap * sizeof(*b->logits));
	b->cand_scale = malloc(cap * sizeof(*b->cand_scale));
	if (!b->token || !b->pos || !b->seq || !b->adapter || !b->logits ||
	    !b->cand_scale) {
		llm_batch_free(b);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	b->cap = cap;
	return 0;
}

void llm_batch_free(struct llm_batch *b)
{
	free(b->token);
	free(b->pos);
	free(b->seq);
	free(b->adapter);
	free(b->logits);
	free(b->cand_scale);
	memset(b, 0, sizeof(*b));
}

void llm_batch_clear(struct llm_batch *b)
{
	b->n = 0;
}

int llm_batch_add(struct llm_batch *b, int32_t token, int32_t pos, int32_t seq,
                  bool logits)
{
	if (b->n >= b->cap)
		return llm_error(LLM_ENOMEM, "batch full (%d tokens)", b->cap);
	b->token[b->n] = token;
	b->pos[b->n] = pos;
	b->seq[b->n] = seq;
	b->adapter[b->n] = -1;
	b->logits[b->n] = logits;
	if (b->cand_scale)
		b->cand_scale[b->n] = 1.0f;
	b->n++;
	return 0;
}

int llm_batch_add_cands(struct llm_batch *b, int32_t token, int32_t pos,
                        int32_t seq, float scale, bool sums)
{
	int rc = llm_batch_add(b, token, pos, seq, true);
	if (rc)
		return rc;
	b->logits[b->n - 1] = sums ? LLM_LOGITS_CANDS_SUMS : LLM_LOGITS_CANDS;
	b->cand_scale[b->n - 1] = scale;
	return 0;
}

/* ---------------------------------------------------------------- context */

struct llm_ctx {
	const struct llm_model *m;
	struct llm_backend *be;
	struct llm_kvcache *kv;
	int n_ctx, n_batch;

	/* activations, backend memory, n_batch rows each */
	float *x, *xb, *q, *k, *v, *att, *g, *u;
	/* logits: backend rows and their host view */
	float *out_x;          /* (n_batch x n_embd) rows wanting logits */
	float *logits;         /* (n_batch x n_vocab) backend */
	float *logits_host;    /* == logits for host-memory backends */
	int logits_cap;        /* rows allocated */
	int *out_row;          /* (n_batch) batch token -> logits row, -1 */
	int out_cap;           /* batch size out_row covers */

	/* candidates (LLM_LOGITS_CANDS rows), logits_cap rows each */
	bool cands_on;         /* the context gives candidates for such rows */
	bool cands_sums;       /* ... and for those that want the sums too */
	int cand_k;            /* candidates a row */
	int8_t *row_state;     /* ROW_* of each logits row */
	int *row_cand;         /* a candidates row's index in the arrays below */
	int32_t *cand_rows;    /* the logits rows, in batch order */
	float *cand_scale;
	uint8_t *cand_sums;
	int32_t *cand_ids;     /* (logits_cap x cand_k) */
	float *cand_vals;      /* (logits_cap x cand_k) */
	struct llm_topk_stat *cand_st;

	/* per-call host scratch */
	int32_t *slots;
	const int32_t **tables;
	int32_t *next_pos;     /* (n_seq_max) */
	int32_t *first_pos;    /* (n_seq_max) */

	struct llm_ctx_stats stats;

	/* LoRA: adapters for every token, per-slot adapters, and the tokens
	 * of the current chunk grouped by slot: one segment per slot, a run
	 * of consecutive tokens or a list of scattered ones (grp_rows) */
	struct lora_ref { const struct llm_lora *a; float scale; } lora[LLM_CTX_MAX_LORA];
	int n_lora;
	struct lora_ref *slot;
	int n_slot;
	struct llm_lora_seg *segs;  /* (n_batch + LLM_CTX_MAX_LORA) */
	struct lora_run { int t0, n, slot; const int32_t *rows; } *runs;  /* (n_batch) */
	int32_t *grp_rows;          /* (n_batch) */
	int n_runs;
};

_Static_assert(LLM_CANDS_MAX == LLM_TOPK_MAX, "sampler.h and backend.h agree");

static bool is_cands(int mode)
{
	return mode == LLM_LOGITS_CANDS || mode == LLM_LOGITS_CANDS_SUMS;
}

/* A logits row: on the host, or candidates with the row still on the
 * backend, or candidates with the row fetched since. */
enum { ROW_HOST, ROW_CANDS, ROW_FETCHED };

void llm_ctx_params_default(struct llm_ctx_params *p)
{
	memset(p, 0, sizeof(*p));
	p->n_batch = 512;
	p->n_seq_max = 64;
	p->kv_block_size = 16;
	p->kv_type = LLM_F16;
}

static void *balloc(struct llm_ctx *c, size_t n_floats)
{
	return c->be->ops->alloc(c->be, n_floats * sizeof(float));
}

static void bfree(struct llm_ctx *c, void *p)
{
	if (p)
		c->be->ops->dealloc(c->be, p);
}

static void free_cands(struct llm_ctx *c)
{
	free(c->row_state);
	free(c->row_cand);
	free(c->cand_rows);
	free(c->cand_scale);
	free(c->cand_sums);
	free(c->cand_ids);
	free(c->cand_vals);
	free(c->cand_st);
	c->row_state = NULL;
	c->row_cand = NULL;
	c->cand_rows = NULL;
	c->cand_scale = NULL;
	c->cand_sums = NULL;
	c->cand_ids = NULL;
	c->cand_vals = NULL;
	c->cand_st = NULL;
}

/* A device backend gets every weight once, up front (backend.h: weight),
 * so a model too big for the device fails here and not mid-decode. */
static int upload_weights(struct llm_ctx *c)
{
	const struct llm_model *m = c->m;
	const struct llm_hparams *hp = &m->hp;
	struct llm_backend *be = c->be;
	int rc;

#define UP(t) do { if ((t).data && (rc = be->ops->weight(be, (t).data, (t).nbytes))) \
		return rc; } while (0)
	UP(m->tok_embd);
	UP(m->output);
	UP(m->output_norm);
	for (int il = 0; il < hp->n_layer; il++) {
		const struct llm_layer *l = &m->layers[il];
		UP(l->attn_norm); UP(l->wq); UP(l->wk); UP(l->wv); UP(l->wo);
		UP(l->bq); UP(l->bk); UP(l->bv);
		UP(l->ffn_norm); UP(l->w_gate); UP(l->w_up); UP(l->w_down);
	}
#undef UP
	if (hp->rope.inv_freq && (rc = be->ops->weight(be, hp->rope.inv_freq,
	                          (size_t)(hp->rope.n_rot / 2) * sizeof(float))))
		return rc;
	return 0;
}

int llm_ctx_new(struct llm_ctx **out, const struct llm_model *m,
                const struct llm_ctx_params *pin)
{
	struct llm_ctx_params p = *pin;
	const struct llm_hparams *hp = &m->hp;
	struct llm_ctx *c;
	int rc;

	if (p.n_batch <= 0)
		p.n_batch = 512;
	if (p.n_seq_max <= 0)
		p.n_seq_max = 64;
	if (p.kv_block_size <= 0)
		p.kv_block_size = 16;
	if (p.n_ctx <= 0)
		p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
	if (p.n_ctx > (1 << 24))
		return llm_error(LLM_EINVAL, "context size %d is too large", p.n_ctx);

	c = calloc(1, sizeof(*c));
	if (!c)
		return llm_error(LLM_ENOMEM, "out of memory");
	c->m = m;
	c->n_ctx = p.n_ctx;
	c->n_batch = p.n_batch;
	if ((rc = llm_backend_init(&c->be, p.device, p.n_threads)))
		goto fail;
	{
		const char *env = getenv("LLMKIT_CANDS");
		int mode = p.cands;
		if (env && *env)
			mode = !strcmp(env, "on") ? 1 : !strcmp(env, "off") ? -1 : 0;
		/* auto on the CPU: a row costs no copy there, but over a large
		 * vocabulary candidates without the sums cost less than the
		 * full-row sampler (one pass, no sort, no exp over the row:
		 * 62 against 219 us a row of 32000); with the sums (two exp
		 * passes) they do not, nor over a small vocabulary (6.4 against
		 * 5.5 us a row of 512) */
		bool dev = !c->be->ops->host_memory;
		c->cands_on = c->be->ops->topk &&
		              (mode > 0 || (mode == 0 && (dev || hp->n_vocab >= 8192)));
		c->cands_sums = c->cands_on && (mode > 0 || dev);
		c->cand_k = hp->n_vocab < LLM_CANDS_MAX ? hp->n_vocab : LLM_CANDS_MAX;
		if (c->cand_k < 1)
			c->cands_on = c->cands_sums = false;
	}

	/* every weight dtype must be computable on this backend */
	for (int il = 0; il < hp->n_layer; il++) {
		const struct llm_layer *l = &m->layers[il];
		const struct llm_tensor *ws[] = { &l->wq, &l->wk, &l->wv, &l->wo,
		                                  &l->w_gate, &l->w_up, &l->w_down };
		for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
			if (!c->be->ops->supports(c->be, ws[i]->type)) {
				rc = llm_error(LLM_EUNSUPPORTED, "%s: %s weights are not "
				               "supported by the %s backend", ws[i]->name,
				               llm_dtype_name(ws[i]->type), c->be->ops->name);
				goto fail;
			}
	}
	if (!c->be->ops->supports(c->be, m->output.type) ||
	    !c->be->ops->supports(c->be, m->tok_embd.type)) {
		rc = llm_error(LLM_EUNSUPPORTED, "output/embedding dtype %s is not "
		               "supported by the %s backend",
		               llm_dtype_name(m->output.type), c->be->ops->name);
		goto fail;
	}

	struct llm_kv_params kp = {
		.n_layer = hp->n_layer,
		.n_head_kv = hp->n_head_kv,
		.head_dim = hp->head_dim,
		.block_size = p.kv_block_size,
		.n_blocks = p.kv_blocks,
		.max_seqs = p.n_seq_max,
		.max_pos = p.n_ctx,
		.type = p.kv_type,
	};
	int kv_dim = hp->n_head_kv * hp->head_dim;
	uint64_t per_block = 2ull * hp->n_layer * p.kv_block_size * kv_dim *
	                     (p.kv_type == LLM_F16 ? 2 : 4);
	if (kp.n_blocks <= 0) {
		uint64_t want;
		if (p.kv_mem) {
			want = p.kv_mem / per_block;
		} else {
			/* every sequence at full context, within 1 GiB, but at
			 * least one full context */
			uint64_t full = (uint64_t)p.n_seq_max *
			                ((p.n_ctx + p.kv_block_size - 1) / p.kv_block_size);
			uint64_t cap = (1ull << 30) / per_block;
			uint64_t one = (p.n_ctx + p.kv_block_size - 1) / p.kv_block_size;
			want = full < cap ? full : cap;
			if (want < one)
				want = one;
		}
		if (want < 1 || want > INT32_MAX / (uint64_t)p.kv_block_size) {
			rc = llm_error(LLM_EINVAL, "KV cache memory of %llu bytes holds "
			               "%llu blocks", (unsigned long long)p.kv_mem,
			               (unsigned long long)want);
			goto fail;
		}
		kp.n_blocks = (int)want;
	}
	if (c->be->ops->weight && (rc = upload_weights(c)))
		goto fail;
	if ((rc = llm_kv_init(&c->kv, &kp, c->be)))
		goto fail;

	int64_t nb = p.n_batch, q_dim = (int64_t)hp->n_head * hp->head_dim;
	c->x = balloc(c, nb * hp->n_embd);
	c->xb = balloc(c, nb * hp->n_embd);
	c->q = balloc(c, nb * q_dim);
	c->k = balloc(c, nb * kv_dim);
	c->v = balloc(c, nb * kv_dim);
	c->att = balloc(c, nb * q_dim);
	c->g = balloc(c, nb * hp->n_ff);
	c->u = balloc(c, nb * hp->n_ff);
	c->out_x = balloc(c, nb * hp->n_embd);
	c->slots = malloc(nb * sizeof(*c->slots));
	c->tables = malloc(nb * sizeof(*c->tables));
	c->next_pos = malloc(p.n_seq_max * sizeof(*c->next_pos));
	c->first_pos = malloc(p.n_seq_max * sizeof(*c->first_pos));
	c->segs = malloc((nb + LLM_CTX_MAX_LORA) * sizeof(*c->segs));
	c->runs = malloc(nb * sizeof(*c->runs));
	c->grp_rows = malloc(nb * sizeof(*c->grp_rows));
	if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->g || !c->u ||
	    !c->out_x || !c->slots || !c->tables || !c->next_pos || !c->first_pos ||
	    !c->segs || !c->runs || !c->grp_rows) {
		rc = llm_error(LLM_ENOMEM, "out of memory for a batch of %d tokens",
		               p.n_batch);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	llm_ctx_free(c);
	return rc;
}

void llm_ctx_free(struct llm_ctx *c)
{
	if (!c)
		return;
	if (c->be) {
		bfree(c, c->x);
		bfree(c, c->xb);
		bfree(c, c->q);
		bfree(c, c->k);
		bfree(c, c->v);
		bfree(c, c->att);
		bfree(c, c->g);
		bfree(c, c->u);
		bfree(c, c->out_x);
		bfree(c, c->logits);
		if (c->logits_host != c->logits)
			free(c->logits_host);
		llm_kv_free(c->kv);
		llm_backend_free(c->be);
	}
	free_cands(c);
	free(c->out_row);
	free(c->slot);
	free(c->segs);
	free(c->runs);
	free(c->grp_rows);
	free(c->slots);
	free(c->tables);
	free(c->next_pos);
	free(c->first_pos);
	free(c);
}

const struct llm_model *llm_ctx_model(const struct llm_ctx *c) { return c->m; }
struct llm_kvcache *llm_ctx_kv(struct llm_ctx *c) { return c->kv; }
struct llm_backend *llm_ctx_backend(struct llm_ctx *c) { return c->be; }
int llm_ctx_n_ctx(const struct llm_ctx *c) { return c->n_ctx; }
int llm_ctx_n_batch(const struct llm_ctx *c) { return c->n_batch; }
int llm_ctx_n_vocab(const struct llm_ctx *c) { return c->m->hp.n_vocab; }

void llm_ctx_stats(const struct llm_ctx *c, struct llm_ctx_stats *s)
{
	*s = c->stats;
}

int llm_ctx_row(struct llm_ctx *c, int i, const float **out)
{
	const int64_t nv = c->m->hp.n_vocab;
	*out = NULL;
	if (i < 0 || i >= c->out_cap || c->out_row[i] < 0)
		return llm_error(LLM_EINVAL, "token %d of the batch asked for no "
		                 "logits", i);
	int r = c->out_row[i];
	float *host = c->logits_host + r * nv;
	if (c->row_state[r] == ROW_CANDS) {
		const struct llm_backend_ops *op = c->be->ops;
		if (!op->host_memory) {
			int rc;
			op->download(c->be, host, c->logits + r * nv, nv * sizeof(float));
			if (op->status && (rc = op->status(c->be)))
				return rc;
		}
		c->row_state[r] = ROW_FETCHED;
		c->stats.logits_bytes += nv * (int64_t)sizeof(float);
	}
	*out = host;
	return 0;
}

const float *llm_ctx_logits(const struct llm_ctx *c, int i)
{
	const float *l;
	if (i < 0 || i >= c->out_cap || c->out_row[i] < 0)
		return NULL;
	/* a candidates row is fetched on first use: the context is not
	 * changed in any way a caller sees, only its cache of the row */
	if (llm_ctx_row((struct llm_ctx *)c, i, &l))
		return NULL;
	return l;
}

bool llm_ctx_cands(const struct llm_ctx *c, int i, struct llm_cands *out)
{
	if (i < 0 || i >= c->out_cap || c->out_row[i] < 0)
		return false;
	int r = c->out_row[i];
	if (c->row_state[r] == ROW_HOST)
		return false;
	int j = c->row_cand[r], k = c->cand_k;
	out->n_vocab = c->m->hp.n_vocab;
	out->k = k;
	out->ids = c->cand_ids + (int64_t)j * k;
	out->logits = c->cand_vals + (int64_t)j * k;
	out->scale = c->cand_scale[j];
	out->max = c->cand_st[j].max;
	out->sum = c->cand_st[j].sum;
	out->sum_scaled = c->cand_st[j].sum_scaled;
	return true;
}

/* ---------------------------------------------------------------- LoRA */

static int lora_fits(const struct llm_ctx *c, const struct llm_lora *a)
{
	if (!c->be->ops->lora_seg)
		return llm_error(LLM_EUNSUPPORTED, "adapter %s: the %s backend cannot "
		                 "apply LoRA adapters yet (merge it with llm-lora-merge, "
		                 "or use --device cpu)", a->path ? a->path : "",
		                 c->be->ops->name);
	if (a->n_layer != c->m->hp.n_layer)
		return llm_error(LLM_EINVAL, "adapter %s has %d layers, the model %d",
		                 a->path ? a->path : "", a->n_layer, c->m->hp.n_layer);
	for (int il = 0; il < a->n_layer; il++)
		for (int t = 0; t < LLM_LORA_N; t++) {
			const struct llm_lora_mat *lm = llm_lora_mat(a, il, t);
			const struct llm_tensor *w = llm_lora_base_weight(c->m, il, t);
			if (lm->a && (lm->n_in != w->ne[0] || lm->n_out != w->ne[1]))
				return llm_error(LLM_EINVAL, "adapter %s: layer %d %s is %d x %d, "
				                 "the model's %lld x %lld", a->path ? a->path : "",
				                 il, llm_lora_target_name(t), lm->n_out, lm->n_in,
				                 (long long)w->ne[1], (long long)w->ne[0]);
		}
	return 0;
}

int llm_ctx_add_lora(struct llm_ctx *c, const struct llm_lora *a, float scale)
{
	int rc;
	if (c->n_lora == LLM_CTX_MAX_LORA)
		return llm_error(LLM_ERANGE, "at most %d stacked adapters", LLM_CTX_MAX_LORA);
	if ((rc = lora_fits(c, a)))
		return rc;
	c->lora[c->n_lora++] = (struct lora_ref){ a, scale };
	return 0;
}

void llm_ctx_clear_lora(struct llm_ctx *c)
{
	c->n_lora = 0;
}

int llm_ctx_set_adapter(struct llm_ctx *c, int slot, const struct llm_lora *a,
                        float scale)
{
	int rc;
	if (slot < 0 || slot > (1 << 20))
		return llm_error(LLM_EINVAL, "adapter slot %d is out of range", slot);
	if (a && (rc = lora_fits(c, a)))
		return rc;
	if (slot >= c->n_slot) {
		struct lora_ref *s = realloc(c->slot, (slot + 1) * sizeof(*s));
		if (!s)
			return llm_error(LLM_ENOMEM, "out of memory");
		memset(s + c->n_slot, 0, (slot + 1 - c->n_slot) * sizeof(*s));
		c->slot = s;
		c->n_slot = slot + 1;
	}
	c->slot[slot] = (struct lora_ref){ a, scale };
	return 0;
}

static int run_cmp(const void *pa, const void *pb)
{
	const struct lora_run *a = pa, *b = pb;
	if (a->slot != b->slot)
		return a->slot < b->slot ? -1 : 1;
	return a->t0 < b->t0 ? -1 : a->t0 > b->t0;
}

/*
 * Group the tokens of a chunk by adapter slot (the SGMV idea): runs of
 * consecutive tokens sharing a slot, sorted by slot; a slot with several
 * runs (decode steps interleave sequences) becomes one segment over the
 * list of its tokens, so its adapter's matrices are read once per chunk,
 * not once per run.
 */
static void lora_runs(struct llm_ctx *c, const int32_t *adapter, int n)
{
	struct lora_run *r = c->runs;
	int nr = 0, ng = 0, nrows = 0;

	for (int i = 0; i < n; i++) {
		int s = adapter[i];
		if (s < 0)
			continue;
		if (nr && r[nr - 1].slot == s && r[nr - 1].t0 + r[nr - 1].n == i) {
			r[nr - 1].n++;
			continue;
		}
		r[nr++] = (struct lora_run){ i, 1, s, NULL };
	}
	if (nr > 1)
		qsort(r, nr, sizeof(*r), run_cmp);
	for (int i = 0; i < nr;) {
		int j = i + 1;
		struct lora_run g = r[i];
		while (j < nr && r[j].slot == g.slot)
			j++;
		if (j - i > 1) {
			g.rows = c->grp_rows + nrows;
			g.t0 = r[i].t0;
			g.n = 0;
			for (int k = i; k < j; k++)
				for (int t = 0; t < r[k].n; t++, g.n++)
					c->grp_rows[nrows++] = r[k].t0 + t;
		}
		r[ng++] = g;      /* ng <= i: runs i .. j-1 are read already */
		i = j;
	}
	c->n_runs = ng;
}

/* y (n x n_out) += the deltas of projection t of layer il for x (n x n_in):
 * the adapters of every token (their segments overlap: one call, applied
 * in turn), then the per-slot ones (disjoint rows: another call). */
static void lora_apply(struct llm_ctx *c, int il, int t, const float *x, float *y,
                       int n)
{
	int ns = 0, n_in = 0, n_out = 0;
	for (int j = 0; j < c->n_lora; j++) {
		const struct llm_lora_mat *lm = llm_lora_mat(c->lora[j].a, il, t);
		if (!lm->a)
			continue;
		c->segs[ns++] = (struct llm_lora_seg){ 0, n, lm->a, lm->b, lm->rank,
		                                       c->lora[j].scale * c->lora[j].a->scale,
		                                       NULL };
		n_in = lm->n_in;
		n_out = lm->n_out;
	}
	if (ns)
		c->be->ops->lora_seg(c->be, x, y, n_in, n_out, c->segs, ns);
	ns = 0;
	for (int r = 0; r < c->n_runs; r++) {
		const struct lora_run *run = &c->runs[r];
		const struct lora_ref *ref = &c->slot[run->slot];
		const struct llm_lora_mat *lm = llm_lora_mat(ref->a, il, t);
		if (!lm->a)
			continue;
		c->segs[ns++] = (struct llm_lora_seg){ run->t0, run->n, lm->a, lm->b,
		                                       lm->rank, ref->scale * ref->a->scale,
		                                       run->rows };
		n_in = lm->n_in;
		n_out = lm->n_out;
	}
	if (ns)
		c->be->ops->lora_seg(c->be, x, y, n_in, n_out, c->segs, ns);
}

/* ---------------------------------------------------------------- decode */

/* Check the batch and give every token its logits row. */
static int check_batch(struct llm_ctx *c, const struct llm_batch *b, int *n_out)
{
	const struct llm_hparams *hp = &c->m->hp;
	int max_seqs = llm_kv_max_seqs(c->kv);

	for (int s = 0; s < max_seqs; s++)
		c->next_pos[s] = -1;
	*n_out = 0;
	for (int i = 0; i < b->n; i++) {
		int s = b->seq[i];
		if (b->token[i] < 0 || b->token[i] >= hp->n_vocab)
			return llm_error(LLM_EINVAL, "batch token %d: id %d is outside the "
			                 "vocabulary (%d)", i, b->token[i], hp->n_vocab);
		if (!(s >= 0 && s < max_seqs && llm_kv_seq_valid(c->kv, s)))
			return llm_error(LLM_EINVAL, "batch token %d: sequence %d does not "
			                 "exist", i, s);
		if (b->pos[i] < 0 || b->pos[i] >= c->n_ctx)
			return llm_error(LLM_ERANGE, "sequence %d: position %d is beyond the "
			                 "context size %d", s, b->pos[i], c->n_ctx);
		if (c->next_pos[s] < 0)
			c->first_pos[s] = c->next_pos[s] = llm_kv_seq_len(c->kv, s);
		if (b->pos[i] != c->next_pos[s])
			return llm_error(LLM_EINVAL, "batch token %d: sequence %d expects "
			                 "position %d, got %d", i, s, c->next_pos[s],
			                 b->pos[i]);
		c->next_pos[s]++;
		if (b->logits[i])
			(*n_out)++;
		if (is_cands(b->logits[i]) &&
		    !(b->cand_scale && b->cand_scale[i] > 0 && isfinite(b->cand_scale[i])))
			return llm_error(LLM_EINVAL, "batch token %d: candidates need a "
			                 "positive scale", i);
		if (b->adapter[i] >= 0 &&
		    (b->adapter[i] >= c->n_slot || !c->slot[b->adapter[i]].a))
			return llm_error(LLM_EINVAL, "batch token %d: adapter slot %d holds "
			                 "no adapter", i, b->adapter[i]);
	}
	return 0;
}

static int reserve_kv(struct llm_ctx *c)
{
	int max_seqs = llm_kv_max_seqs(c->kv);
	int rc = 0, s;

	for (s = 0; s < max_seqs; s++) {
		if (c->next_pos[s] < 0)
			continue;
		if ((rc = llm_kv_prepare(c->kv, s, c->first_pos[s], c->next_pos[s])))
			break;
	}
	if (rc)  /* undo: the batch's positions were never written */
		for (int t = 0; t < s; t++)
			if (c->next_pos[t] >= 0)
				llm_kv_seq_truncate(c->kv, t, c->first_pos[t]);
	return rc;
}

struct chunk {
	const struct llm_batch *b;
	int i0, n;
};

static void layer_forward(struct llm_ctx *c, int il, const struct chunk *ch)
{
	const struct llm_model *m = c->m;
	const struct llm_hparams *hp = &m->hp;
	const struct llm_layer *l = &m->layers[il];
	const struct llm_backend_ops *op = c->be->ops;
	struct llm_backend *be = c->be;
	int n = ch->n;
	int kv_dim = hp->n_head_kv * hp->head_dim;
	int q_dim = hp->n_head * hp->head_dim;
	const int32_t *pos = ch->b->pos + ch->i0;
	bool lora = c->n_lora || c->n_runs;

	op->rmsnorm(be, c->x, l->attn_norm.data, c->xb, n, hp->n_embd, hp->rms_eps);
	op->matmul(be, &l->wq, c->xb, c->q, n);
	op->matmul(be, &l->wk, c->xb, c->k, n);
	op->matmul(be, &l->wv, c->xb, c->v, n);
	if (lora) {
		lora_apply(c, il, LLM_LORA_Q, c->xb, c->q, n);
		lora_apply(c, il, LLM_LORA_K, c->xb, c->k, n);
		lora_apply(c, il, LLM_LORA_V, c->xb, c->v, n);
	}
	if (l->bq.data) {
		op->add_bias(be, c->q, l->bq.data, n, q_dim);
		op->add_bias(be, c->k, l->bk.data, n, kv_dim);
		op->add_bias(be, c->v, l->bv.data, n, kv_dim);
	}
	op->rope(be, c->q, pos, n, hp->n_head, hp->head_dim, &hp->rope);
	op->rope(be, c->k, pos, n, hp->n_head_kv, hp->head_dim, &hp->rope);
	op->kv_store(be, llm_kv_k(c->kv, il), llm_kv_v(c->kv, il),
	             llm_kv_params(c->kv), c->k, c->v, c->slots, n);

	struct llm_attn_batch ab = {
		.n_tokens = n,
		.n_head = hp->n_head,
		.n_head_kv = hp->n_head_kv,
		.head_dim = hp->head_dim,
		.scale = 1.0f / sqrtf((float)hp->head_dim),
		.pos = pos,
		.table = c->tables,
		.block_size = llm_kv_block_size(c->kv),
		.n_blocks = llm_kv_n_blocks(c->kv),
		.kv_type = llm_kv_params(c->kv)->type,
		.k = llm_kv_k(c->kv, il),
		.v = llm_kv_v(c->kv, il),
	};
	op->attention(be, &ab, c->q, c->att);
	op->matmul(be, &l->wo, c->att, c->xb, n);
	if (lora)
		lora_apply(c, il, LLM_LORA_O, c->att, c->xb, n);
	op->add(be, c->x, c->xb, (int64_t)n * hp->n_embd);

	op->rmsnorm(be, c->x, l->ffn_norm.data, c->xb, n, hp->n_embd, hp->rms_eps);
	op->matmul(be, &l->w_gate, c->xb, c->g, n);
	op->matmul(be, &l->w_up, c->xb, c->u, n);
	if (lora) {
		lora_apply(c, il, LLM_LORA_GATE, c->xb, c->g, n);
		lora_apply(c, il, LLM_LORA_UP, c->xb, c->u, n);
	}
	op->swiglu(be, c->g, c->u, (int64_t)n * hp->n_ff);
	op->matmul(be, &l->w_down, c->g, c->xb, n);
	if (lora)
		lora_apply(c, il, LLM_LORA_DOWN, c->g, c->xb, n);
	op->add(be, c->x, c->xb, (int64_t)n * hp->n_embd);
}

/* Make room for n_out logits rows (backend and host) and their
 * candidates. */
static int reserve_logits(struct llm_ctx *c, int n_out, int *cap)
{
	int64_t nv = c->m->hp.n_vocab;
	if (n_out <= *cap)
		return 0;
	int want = n_out < 16 ? 16 : n_out;
	size_t k = c->cand_k > 0 ? (size_t)c->cand_k : 1;
	bfree(c, c->logits);
	if (c->logits_host != c->logits)
		free(c->logits_host);
	free_cands(c);
	c->logits = balloc(c, (size_t)want * nv);
	c->logits_host = c->be->ops->host_memory ? c->logits
	                                         : malloc((size_t)want * nv * sizeof(float));
	c->row_state = malloc(want * sizeof(*c->row_state));
	c->row_cand = malloc(want * sizeof(*c->row_cand));
	c->cand_rows = malloc(want * sizeof(*c->cand_rows));
	c->cand_scale = malloc(want * sizeof(*c->cand_scale));
	c->cand_sums = malloc(want * sizeof(*c->cand_sums));
	c->cand_ids = malloc(want * k * sizeof(*c->cand_ids));
	c->cand_vals = malloc(want * k * sizeof(*c->cand_vals));
	c->cand_st = malloc(want * sizeof(*c->cand_st));
	if (!c->logits || !c->logits_host || !c->row_state || !c->row_cand ||
	    !c->cand_rows || !c->cand_scale || !c->cand_sums || !c->cand_ids ||
	    !c->cand_vals || !c->cand_st) {
		*cap = 0;
		return llm_error(LLM_ENOMEM, "out of memory for %d rows of logits", want);
	}
	*cap = want;
	return 0;
}

/* Rows [r0, r0 + n) to the host (device backends). */
static void download_rows(struct llm_ctx *c, int r0, int n)
{
	const int64_t nv = c->m->hp.n_vocab;
	const size_t bytes = (size_t)n * nv * sizeof(float);
	if (!c->be->ops->host_memory)
		c->be->ops->download(c->be, c->logits_host + r0 * nv, c->logits + r0 * nv,
		                     bytes);
	c->stats.logits_bytes += (int64_t)bytes;
}

/*
 * After the forward pass: full rows to the host (device backends; one
 * copy per run of consecutive rows), candidates of the rows that asked
 * for them (one backend call for all).
 */
static void finish_logits(struct llm_ctx *c, const struct llm_batch *b)
{
	int n_cand = 0, run0 = 0, run_n = 0;

	for (int i = 0; i < b->n; i++) {
		int r = c->out_row[i];
		if (r < 0)
			continue;
		bool cands = b->logits[i] == LLM_LOGITS_CANDS ? c->cands_on
		             : b->logits[i] == LLM_LOGITS_CANDS_SUMS && c->cands_sums;
		if (!cands) {
			c->row_state[r] = ROW_HOST;
			if (run_n && r == run0 + run_n) {
				run_n++;
			} else {
				if (run_n)
					download_rows(c, run0, run_n);
				run0 = r;
				run_n = 1;
			}
			continue;
		}
		c->row_state[r] = ROW_CANDS;
		c->row_cand[r] = n_cand;
		c->cand_rows[n_cand] = r;
		c->cand_scale[n_cand] = b->cand_scale ? b->cand_scale[i] : 1.0f;
		c->cand_sums[n_cand] = b->logits[i] == LLM_LOGITS_CANDS_SUMS;
		n_cand++;
	}
	if (run_n)
		download_rows(c, run0, run_n);
	if (n_cand) {
		c->be->ops->topk(c->be, c->logits, c->m->hp.n_vocab, c->cand_rows,
		                 c->cand_scale, c->cand_sums, n_cand, c->cand_k,
		                 c->cand_ids, c->cand_vals, c->cand_st);
		c->stats.logits_bytes += (int64_t)n_cand *
		                         ((int64_t)c->cand_k * 8 + sizeof(struct llm_topk_stat));
	}
}

int llm_decode(struct llm_ctx *c, const struct llm_batch *b)
{
	const struct llm_model *m = c->m;
	const struct llm_hparams *hp = &m->hp;
	const struct llm_backend_ops *op = c->be->ops;
	int n_out, rc;
	double t0 = llm_time_now();

	if (b->n <= 0)
		return llm_error(LLM_EINVAL, "empty batch");
	if ((rc = check_batch(c, b, &n_out)))
		return rc;
	if (b->n > c->out_cap) {
		int *r = realloc(c->out_row, b->n * sizeof(int));
		if (!r)
			return llm_error(LLM_ENOMEM, "out of memory");
		c->out_row = r;
		c->out_cap = b->n;
	}
	if ((rc = reserve_logits(c, n_out, &c->logits_cap)))
		return rc;
	if ((rc = reserve_kv(c)))
		return rc;

	int row = 0;
	for (int i0 = 0; i0 < b->n; i0 += c->n_batch) {
		struct chunk ch = { b, i0, b->n - i0 < c->n_batch ? b->n - i0 : c->n_batch };
		for (int i = 0; i < ch.n; i++) {
			int s = b->seq[i0 + i];
			c->slots[i] = llm_kv_slot(c->kv, s, b->pos[i0 + i]);
			c->tables[i] = llm_kv_table(c->kv, s);
		}
		lora_runs(c, b->adapter + i0, ch.n);
		op->get_rows(c->be, &m->tok_embd, b->token + i0, ch.n, c->x);
		for (int il = 0; il < hp->n_layer; il++)
			layer_forward(c, il, &ch);

		/* gather the rows that want logits, then norm + output */
		int n_here = 0;
		for (int i = 0; i < ch.n; i++) {
			if (!b->logits[i0 + i]) {
				c->out_row[i0 + i] = -1;
				continue;
			}
			op->copy(c->be, c->out_x + (int64_t)n_here * hp->n_embd,
			         c->x + (int64_t)i * hp->n_embd, hp->n_embd * sizeof(float));
			c->out_row[i0 + i] = row + n_here;
			n_here++;
		}
		if (n_here) {
			op->rmsnorm(c->be, c->out_x, m->output_norm.data, c->out_x, n_here,
			            hp->n_embd, hp->rms_eps);
			op->matmul(c->be, &m->output, c->out_x,
			           c->logits + (int64_t)row * hp->n_vocab, n_here);
			row += n_here;
		}
	}
	for (int i = b->n; i < c->out_cap; i++)
		c->out_row[i] = -1;
	op->synchronize(c->be);
	if (n_out)
		finish_logits(c, b);
	if (op->status && (rc = op->status(c->be)))
		return rc;
	c->stats.t_decode += llm_time_now() - t0;
	c->stats.n_tokens += b->n;
	c->stats.n_calls++;
	return 0;
}
