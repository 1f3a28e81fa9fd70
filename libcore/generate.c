/*
 * generate.c - static-batch generation: sampling and beam search over the
 * token-batch forward (generate.h).
 *
 * One loop serves both kinds of request.  Each step gathers the last token
 * of every live sequence - a sampled request has one, a beam search has one
 * per beam - into a single batch, runs llm_decode once, and hands each
 * request its logits.  Beams fork their KV sequence when a beam has several
 * children, so the prompt and the common prefix are stored once and copied
 * a block at a time only where they diverge.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

const char *llm_finish_name(enum llm_finish f)
{
	switch (f) {
	case LLM_FINISH_NONE: return "none";
	case LLM_FINISH_LENGTH: return "length";
	case LLM_FINISH_EOS: return "eos";
	case LLM_FINISH_STOP: return "stop";
	case LLM_FINISH_CONTEXT: return "context";
	}
	return "?";
}

void llm_gen_params_default(struct llm_gen_params *p)
{
	memset(p, 0, sizeof(*p));
	llm_sampling_default(&p->sampling);
	p->max_tokens = 128;
	p->n_beams = 0;
	p->length_penalty = 1.0f;
	p->early_stopping = true;
}

void llm_gen_request_clear(struct llm_gen_request *r)
{
	free(r->tokens);
	free(r->text);
	r->tokens = NULL;
	r->text = NULL;
	r->n_tokens = 0;
	r->text_len = 0;
	r->logprob = 0;
	r->finish = LLM_FINISH_NONE;
	r->t_first_token = r->t_done = 0;
}

/* ---------------------------------------------------------------- buffers */

struct toks {
	int32_t *v;
	int n, cap;
};

static int toks_push(struct toks *t, int32_t x)
{
	if (t->n == t->cap) {
		int nc = t->cap ? t->cap * 2 : 64;
		int32_t *v = realloc(t->v, nc * sizeof(*v));
		if (!v)
			return llm_error(LLM_ENOMEM, "out of memory");
		t->v = v;
		t->cap = nc;
	}
	t->v[t->n++] = x;
	return 0;
}

static int toks_copy(struct toks *dst, const struct toks *src)
{
	dst->v = malloc((src->cap ? src->cap : 1) * sizeof(int32_t));
	if (!dst->v)
		return llm_error(LLM_ENOMEM, "out of memory");
	memcpy(dst->v, src->v, src->n * sizeof(int32_t));
	dst->n = src->n;
	dst->cap = src->cap ? src->cap : 1;
	return 0;
}

struct text {
	char *s;
	size_t n, cap;
};

static int text_add(struct text *t, const char *p, size_t n)
{
	if (t->n + n + 1 > t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 256;
		while (nc < t->n + n + 1)
			nc *= 2;
		char *s = realloc(t->s, nc);
		if (!s)
			return llm_error(LLM_ENOMEM, "out of memory");
		t->s = s;
		t->cap = nc;
	}
	memcpy(t->s + t->n, p, n);
	t->n += n;
	t->s[t->n] = 0;
	return 0;
}

/* ---------------------------------------------------------------- stops */

/* Earliest stop string in s[0..n) that ends after 'from'; -1 if none. */
static int64_t find_stop(const struct llm_gen_params *p, const char *s, size_t n,
                         size_t from)
{
	int64_t best = -1;
	for (int k = 0; k < p->n_stop; k++) {
		size_t ls = strlen(p->stop[k]);
		if (!ls || ls > n)
			continue;
		size_t start = from >= ls ? from - ls + 1 : 0;
		for (size_t i = start; i + ls <= n; i++) {
			if (!memcmp(s + i, p->stop[k], ls)) {
				if (best < 0 || (int64_t)i < best)
					best = (int64_t)i;
				break;
			}
		}
	}
	return best;
}

/* Bytes at the end of s that could begin a stop string: held back. */
static size_t stop_hold(const struct llm_gen_params *p, const char *s, size_t n)
{
	size_t hold = 0;
	for (int k = 0; k < p->n_stop; k++) {
		size_t ls = strlen(p->stop[k]);
		for (size_t h = ls > 1 ? ls - 1 : 0; h > hold; h--)
			if (h <= n && !memcmp(s + n - h, p->stop[k], h)) {
				hold = h;
				break;
			}
	}
	return hold;
}

/* ---------------------------------------------------------------- state */

/* The limit on new tokens: max_tokens, or the room the context leaves. */
static void gen_limit(const struct llm_gen_params *p, int n_prompt, int n_ctx,
                      int *max_new, bool *by_ctx)
{
	int room = n_ctx - n_prompt;
	*by_ctx = p->max_tokens < 0 || p->max_tokens > room;
	*max_new = *by_ctx ? room : p->max_tokens;
}

int llm_gen_state_init(struct llm_gen_state *s, const struct llm_tokenizer *tok,
                       const struct llm_gen_params *p, int n_vocab,
                       const int32_t *prompt, int n_prompt, bool text_start,
                       int n_ctx)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->tok = tok;
	s->p = p;
	s->n_vocab = n_vocab;
	if (p->top_logprobs < 0 || p->top_logprobs > 20)
		return llm_error(LLM_EINVAL, "top_logprobs %d (0 to 20)", p->top_logprobs);
	if ((rc = llm_sampler_new(&s->smp, &p->sampling, n_vocab)))
		return rc;
	for (int j = 0; j < n_prompt; j++)
		llm_sampler_accept(s->smp, prompt[j]);
	llm_detok_init(&s->dt, tok, text_start, false);
	gen_limit(p, n_prompt, n_ctx, &s->max_new, &s->limited_by_ctx);
	s->text = malloc(1);
	if (!s->text) {
		llm_gen_state_free(s);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	s->text[0] = 0;
	s->text_cap = 1;
	if (s->max_new <= 0) {
		/* nothing to generate: the prompt is only evaluated */
		s->dt.at_start = false;
		return llm_gen_state_finish(s, s->limited_by_ctx ? LLM_FINISH_CONTEXT
		                                                 : LLM_FINISH_LENGTH);
	}
	return 0;
}

void llm_gen_state_free(struct llm_gen_state *s)
{
	llm_sampler_free(s->smp);
	free(s->tokens);
	free(s->text);
	free(s->token_logprob);
	free(s->top_ids);
	free(s->top_lps);
	memset(s, 0, sizeof(*s));
}

static int state_text_add(struct llm_gen_state *s, const char *p, size_t n)
{
	if (s->text_len + n + 1 > s->text_cap) {
		size_t nc = s->text_cap < 256 ? 256 : s->text_cap * 2;
		while (nc < s->text_len + n + 1)
			nc *= 2;
		char *t = realloc(s->text, nc);
		if (!t)
			return llm_error(LLM_ENOMEM, "out of memory");
		s->text = t;
		s->text_cap = nc;
	}
	memcpy(s->text + s->text_len, p, n);
	s->text_len += n;
	s->text[s->text_len] = 0;
	return 0;
}

/* Room for one more generated token and its log-probs. */
static int state_grow(struct llm_gen_state *s)
{
	if (s->n_tokens < s->cap_tokens)
		return 0;
	int nc = s->cap_tokens ? s->cap_tokens * 2 : 64, k = s->p->top_logprobs;
	int32_t *t = realloc(s->tokens, nc * sizeof(*t));
	if (!t)
		return llm_error(LLM_ENOMEM, "out of memory");
	s->tokens = t;
	if (s->p->logprobs) {
		float *l = realloc(s->token_logprob, nc * sizeof(*l));
		if (!l)
			return llm_error(LLM_ENOMEM, "out of memory");
		s->token_logprob = l;
		if (k > 0) {
			int32_t *ti = realloc(s->top_ids, (size_t)nc * k * sizeof(*ti));
			if (ti)
				s->top_ids = ti;
			float *tl = realloc(s->top_lps, (size_t)nc * k * sizeof(*tl));
			if (tl)
				s->top_lps = tl;
			if (!ti || !tl)
				return llm_error(LLM_ENOMEM, "out of memory");
		}
	}
	s->cap_tokens = nc;
	return 0;
}

int llm_gen_state_finish(struct llm_gen_state *s, enum llm_finish why)
{
	char piece[64];
	int rc;

	LLM_ASSERT(why != LLM_FINISH_NONE);
	if (s->finish != LLM_FINISH_NONE)
		return 0;
	/* anything held back as an incomplete character */
	size_t k = llm_detok_flush(&s->dt, piece, sizeof(piece));
	if (k && why != LLM_FINISH_STOP && (rc = state_text_add(s, piece, k)))
		return rc;
	if (why != LLM_FINISH_STOP) {
		int64_t at = find_stop(s->p, s->text, s->text_len, 0);
		if (at >= 0) {
			s->text_len = (size_t)at;
			why = LLM_FINISH_STOP;
		}
	}
	s->text[s->text_len] = 0;
	s->final_len = s->text_len;
	s->finish = why;
	return 0;
}

/*
 * Take token t, sampled from logits (a host row) or from candidates cd of
 * row i of ctx (logits NULL; the log-probs come from the candidates when
 * they can, else from the row, fetched then).
 */
static int state_take(struct llm_gen_state *s, int32_t t, const float *logits,
                      const struct llm_cands *cd, struct llm_ctx *ctx, int i)
{
	const struct llm_gen_params *p = s->p;
	char piece[1024];
	int rc;

	if (!p->ignore_eos && llm_token_is_eog(s->tok, t))
		return llm_gen_state_finish(s, LLM_FINISH_EOS);
	if ((rc = state_grow(s)))
		return rc;
	if (p->logprobs) {
		double lp = 0;
		int k = p->top_logprobs < s->n_vocab ? p->top_logprobs : s->n_vocab;
		int32_t *ti = s->top_ids + (size_t)s->n_tokens * p->top_logprobs;
		float *tl = s->top_lps + (size_t)s->n_tokens * p->top_logprobs;
		bool done = !logits && cd && llm_cands_logprob(cd, t, &lp) &&
		            (k <= 0 || llm_cands_top_logprobs(cd, k, ti, tl));
		if (!done) {
			if (!logits && (rc = llm_ctx_row(ctx, i, &logits)))
				return rc;
			lp = llm_logprob(logits, s->n_vocab, t);
			if (k > 0)
				llm_top_logprobs(logits, s->n_vocab, k, ti, tl);
		}
		s->logprob += lp;
		s->token_logprob[s->n_tokens] = (float)lp;
	}
	s->tokens[s->n_tokens++] = t;
	llm_sampler_accept(s->smp, t);

	size_t before = s->text_len;
	size_t k = llm_detok_push(&s->dt, t, piece, sizeof(piece));
	if (k && (rc = state_text_add(s, piece, k)))
		return rc;
	if (p->n_stop && s->text_len > before) {
		int64_t at = find_stop(p, s->text, s->text_len, before);
		if (at >= 0) {
			s->text_len = (size_t)at;
			return llm_gen_state_finish(s, LLM_FINISH_STOP);
		}
	}
	if (s->n_tokens >= s->max_new)
		return llm_gen_state_finish(s, s->limited_by_ctx ? LLM_FINISH_CONTEXT
		                                                 : LLM_FINISH_LENGTH);
	s->final_len = s->text_len - stop_hold(p, s->text, s->text_len);
	return 0;
}

int llm_gen_state_step(struct llm_gen_state *s, const float *logits)
{
	LLM_ASSERT(s->finish == LLM_FINISH_NONE);
	return state_take(s, llm_sampler_sample(s->smp, logits), logits, NULL, NULL, 0);
}

int llm_gen_state_step_ctx(struct llm_gen_state *s, struct llm_ctx *ctx, int i)
{
	struct llm_cands cd;
	const float *logits = NULL;
	int32_t t;
	int rc;

	LLM_ASSERT(s->finish == LLM_FINISH_NONE);
	bool have = llm_ctx_cands(ctx, i, &cd);
	if (!have || !llm_sampler_sample_cands(s->smp, &cd, &t)) {
		if ((rc = llm_ctx_row(ctx, i, &logits)))
			return rc;
		t = llm_sampler_sample(s->smp, logits);
	}
	return state_take(s, t, logits, have ? &cd : NULL, ctx, i);
}

bool llm_gen_state_cands(const struct llm_gen_state *s, float *scale, bool *sums)
{
	int k = s->n_vocab < LLM_CANDS_MAX ? s->n_vocab : LLM_CANDS_MAX;
	*scale = llm_sampler_cands_scale(s->smp);
	if (s->p->logprobs && s->p->top_logprobs > k)
		return false;
	bool ok = llm_sampler_cands_ok(s->smp, k, sums);
	*sums = *sums || s->p->logprobs;
	return ok;
}

size_t llm_gen_state_take(struct llm_gen_state *s, const char **text)
{
	size_t n = s->final_len > s->emitted ? s->final_len - s->emitted : 0;
	*text = s->text + s->emitted;
	s->emitted += n;
	return n;
}

/* ---------------------------------------------------------------- runs */

struct beam {
	int seq;
	struct toks t;
	double score;        /* sum of log-probs */
};

struct hyp {
	struct toks t;
	double score;        /* sum of log-probs */
	double rank;         /* length-penalised score */
	enum llm_finish finish;
};

struct run {
	struct llm_gen_request *r;
	int index;
	bool done;
	int max_new;             /* tokens allowed (max_tokens capped by context) */
	bool limited_by_ctx;

	/* sampling */
	bool sampled;
	int seq;
	struct llm_gen_state st;
	int batch_row;           /* this step's row in the batch */

	/* beam search */
	struct beam *beams;
	int n_beams;
	struct hyp *hyps;
	int n_hyps;
	int *rows;               /* batch row of each beam */
};

struct gen {
	struct llm_ctx *ctx;
	const struct llm_tokenizer *tok;
	struct llm_kvcache *kv;
	int n_vocab;
	llm_gen_stream_fn cb;
	void *user;
	double t0;
	struct llm_gen_stats *st;
	char piece[1024];
};

/* Hand newly final text to the callback; once finished, the results to
 * the request. */
static int sampled_emit(struct gen *g, struct run *u)
{
	struct llm_gen_request *r = u->r;
	struct llm_gen_state *s = &u->st;
	const char *piece;
	size_t n = llm_gen_state_take(s, &piece);

	if (n && g->cb && g->cb(g->user, u->index, piece, n))
		return llm_error(LLM_ECANCELED, "generation canceled");
	if (s->finish == LLM_FINISH_NONE)
		return 0;
	r->tokens = s->tokens;
	r->n_tokens = s->n_tokens;
	s->tokens = NULL;
	r->text = s->text;
	r->text_len = s->text_len;
	s->text = NULL;
	r->logprob = s->logprob;
	r->finish = s->finish;
	r->t_done = llm_time_now() - g->t0;
	u->done = true;
	llm_kv_seq_free(g->kv, u->seq);
	u->seq = -1;
	return 0;
}

/* A sampled request takes its next token from token i of the batch. */
static int step_sampled(struct gen *g, struct run *u, int i)
{
	int rc;
	if (u->st.n_tokens == 0)
		u->r->t_first_token = llm_time_now() - g->t0;
	if ((rc = llm_gen_state_step_ctx(&u->st, g->ctx, i)))
		return rc;
	return sampled_emit(g, u);
}

/* Add a sampled request's token to the batch, asking for candidates when
 * its sampler can use them. */
static void add_sampled(struct llm_batch *b, struct run *u, int32_t tok, int pos)
{
	float scale;
	bool sums;
	if (u->st.finish == LLM_FINISH_NONE && llm_gen_state_cands(&u->st, &scale, &sums))
		llm_batch_add_cands(b, tok, pos, u->seq, scale, sums);
	else
		llm_batch_add(b, tok, pos, u->seq, true);
}

/* ---------------------------------------------------------------- beams */

struct cand {
	int beam;
	int32_t tok;
	double score;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->score != y->score)
		return x->score < y->score ? 1 : -1;
	if (x->beam != y->beam)
		return x->beam - y->beam;
	return x->tok - y->tok;
}

static double beam_rank(double score, int len, float lp)
{
	return score / pow(len > 0 ? len : 1, lp);
}

static int hyp_cmp(const void *a, const void *b)
{
	const struct hyp *x = a, *y = b;
	return x->rank < y->rank ? 1 : x->rank > y->rank ? -1 : 0;
}

/* Keep the n_beams best hypotheses; takes t. */
static int add_hyp(struct run *u, struct toks *t, double score,
                   enum llm_finish why)
{
	const struct llm_gen_params *p = &u->r->params;
	struct hyp h = { *t, score, beam_rank(score, t->n, p->length_penalty), why };
	memset(t, 0, sizeof(*t));
	if (u->n_hyps == p->n_beams) {
		/* replace the worst if better */
		if (h.rank <= u->hyps[u->n_hyps - 1].rank) {
			free(h.t.v);
			return 0;
		}
		free(u->hyps[u->n_hyps - 1].t.v);
		u->n_hyps--;
	}
	u->hyps[u->n_hyps++] = h;
	qsort(u->hyps, u->n_hyps, sizeof(*u->hyps), hyp_cmp);
	return 0;
}

/* The text of a beam's tokens, as the streaming decoder would give it. */
static int beam_text(struct gen *g, const struct run *u, const struct toks *t,
                     struct text *out)
{
	struct llm_detok dt;
	int rc;

	llm_detok_init(&dt, g->tok, u->r->text_start, false);
	memset(out, 0, sizeof(*out));
	if ((rc = text_add(out, "", 0)))
		return rc;
	for (int i = 0; i < t->n; i++) {
		size_t k = llm_detok_push(&dt, t->v[i], g->piece, sizeof(g->piece));
		if (k && (rc = text_add(out, g->piece, k)))
			return rc;
	}
	size_t k = llm_detok_flush(&dt, g->piece, sizeof(g->piece));
	return k ? text_add(out, g->piece, k) : 0;
}

/* Whether a beam's text holds a stop string. */
static int beam_stopped(struct gen *g, const struct run *u, const struct toks *t,
                        bool *stopped)
{
	const struct llm_gen_params *p = &u->r->params;
	struct text s;
	int rc;

	*stopped = false;
	if (!p->n_stop)
		return 0;
	if ((rc = beam_text(g, u, t, &s)) == 0)
		*stopped = find_stop(p, s.s, s.n, 0) >= 0;
	free(s.s);
	return rc;
}

static int finish_beams(struct gen *g, struct run *u)
{
	struct llm_gen_request *r = u->r;
	const struct llm_gen_params *p = &r->params;
	int rc;

	for (int b = 0; b < u->n_beams; b++) {
		llm_kv_seq_free(g->kv, u->beams[b].seq);
		free(u->beams[b].t.v);
	}
	u->n_beams = 0;
	LLM_ASSERT(u->n_hyps > 0);
	struct hyp *best = &u->hyps[0];
	struct text txt;
	if ((rc = beam_text(g, u, &best->t, &txt))) {
		free(txt.s);
		return rc;
	}
	char *s = txt.s;
	size_t n = txt.n;
	enum llm_finish why = best->finish;
	int64_t at = find_stop(p, s, n, 0);
	if (at >= 0) {
		n = (size_t)at;
		s[n] = 0;
		why = LLM_FINISH_STOP;
	}
	r->tokens = best->t.v;
	r->n_tokens = best->t.n;
	best->t.v = NULL;
	r->text = s;
	r->text_len = n;
	r->logprob = best->score;
	r->finish = why;
	r->t_done = llm_time_now() - g->t0;
	for (int i = 0; i < u->n_hyps; i++)
		free(u->hyps[i].t.v);
	u->n_hyps = 0;
	u->done = true;
	if (g->cb && n && g->cb(g->user, u->index, s, n))
		return llm_error(LLM_ECANCELED, "generation canceled");
	return 0;
}

/*
 * One beam-search step: logits[b] of each live beam.  Each beam proposes
 * its 2B best continuations; the B best proposals overall that do not end
 * the text become the next beams, proposals that end it (EOS, a stop
 * string) and rank among the B best become finished hypotheses.
 */
static int step_beams(struct gen *g, struct run *u, const float *const *logits)
{
	struct llm_gen_request *r = u->r;
	const struct llm_gen_params *p = &r->params;
	int B = p->n_beams, K = 2 * B, nc = 0, rc = 0;
	int len = u->n_beams ? u->beams[0].t.n : 0;
	struct cand *c = malloc((size_t)u->n_beams * K * sizeof(*c));
	int32_t *ids = malloc(K * sizeof(*ids));
	float *lps = malloc(K * sizeof(*lps));
	struct beam *nb = calloc(B, sizeof(*nb));
	int *parent = malloc(B * sizeof(*parent));
	int *children = calloc(u->n_beams, sizeof(*children));
	int n_new = 0;

	if (!c || !ids || !lps || !nb || !parent || !children) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto out;
	}
	if (len == 0)
		r->t_first_token = llm_time_now() - g->t0;
	for (int b = 0; b < u->n_beams; b++) {
		int k = K < g->n_vocab ? K : g->n_vocab;
		llm_top_logprobs(logits[b], g->n_vocab, k, ids, lps);
		for (int i = 0; i < k; i++)
			c[nc++] = (struct cand){ b, ids[i], u->beams[b].score + lps[i] };
	}
	qsort(c, nc, sizeof(*c), cand_cmp);

	for (int i = 0; i < nc && n_new < B; i++) {
		struct beam *pb = &u->beams[c[i].beam];
		bool eos = !p->ignore_eos && llm_token_is_eog(g->tok, c[i].tok);
		if (eos) {
			if (i < B) {
				struct toks t;
				if ((rc = toks_copy(&t, &pb->t)) ||
				    (rc = add_hyp(u, &t, c[i].score, LLM_FINISH_EOS)))
					goto out;
			}
			continue;
		}
		struct toks t;
		bool stopped;
		if ((rc = toks_copy(&t, &pb->t)) || (rc = toks_push(&t, c[i].tok)) ||
		    (rc = beam_stopped(g, u, &t, &stopped))) {
			free(t.v);
			goto out;
		}
		if (stopped) {
			if (i < B && (rc = add_hyp(u, &t, c[i].score, LLM_FINISH_STOP)))
				goto out;
			free(t.v);
			continue;
		}
		nb[n_new] = (struct beam){ -1, t, c[i].score };
		parent[n_new] = c[i].beam;
		children[c[i].beam]++;
		n_new++;
	}

	/* sequences: childless parents go first, then children take over
	 * (first child) or fork (the others) their parent's sequence */
	for (int b = 0; b < u->n_beams; b++)
		if (!children[b])
			llm_kv_seq_free(g->kv, u->beams[b].seq);
	for (int j = 0; j < n_new; j++) {
		struct beam *pb = &u->beams[parent[j]];
		if (pb->seq >= 0 && children[parent[j]] == 1) {
			nb[j].seq = pb->seq;
			pb->seq = -1;
		} else {
			nb[j].seq = llm_kv_seq_fork(g->kv, pb->seq);
			LLM_ASSERT(nb[j].seq >= 0);  /* room was checked up front */
			children[parent[j]]--;
		}
	}
	for (int b = 0; b < u->n_beams; b++)
		free(u->beams[b].t.v);
	memcpy(u->beams, nb, n_new * sizeof(*nb));
	u->n_beams = n_new;
	len++;

	/* done? */
	bool done = n_new == 0;
	if (!done && u->n_hyps >= B) {
		if (p->early_stopping)
			done = true;
		else
			done = u->hyps[u->n_hyps - 1].rank >=
			       beam_rank(u->beams[0].score, len, p->length_penalty);
	}
	if (!done && len >= u->max_new) {
		enum llm_finish why = u->limited_by_ctx ? LLM_FINISH_CONTEXT
		                                        : LLM_FINISH_LENGTH;
		for (int b = 0; b < u->n_beams; b++) {
			struct toks t;
			if ((rc = toks_copy(&t, &u->beams[b].t)) ||
			    (rc = add_hyp(u, &t, u->beams[b].score, why)))
				goto out;
		}
		done = true;
	}
	if (done)
		rc = finish_beams(g, u);
out:
	free(c);
	free(ids);
	free(lps);
	free(nb);
	free(parent);
	free(children);
	return rc;
}

/* ---------------------------------------------------------------- driver */

static void run_free(struct gen *g, struct run *u)
{
	if (!u->done) {
		if (u->seq >= 0)
			llm_kv_seq_free(g->kv, u->seq);
		for (int b = 0; b < u->n_beams; b++)
			if (u->beams[b].seq >= 0)
				llm_kv_seq_free(g->kv, u->beams[b].seq);
	}
	for (int b = 0; b < u->n_beams; b++)
		free(u->beams[b].t.v);
	for (int i = 0; i < u->n_hyps; i++)
		free(u->hyps[i].t.v);
	free(u->beams);
	free(u->hyps);
	free(u->rows);
	llm_gen_state_free(&u->st);
}

static int check_requests(struct gen *g, struct llm_gen_request *reqs, int n,
                          struct run *runs)
{
	int n_ctx = llm_ctx_n_ctx(g->ctx), bs = llm_kv_block_size(g->kv);
	int64_t seqs = 0, blocks = 0;
	int rc;

	for (int i = 0; i < n; i++) {
		struct llm_gen_request *r = &reqs[i];
		const struct llm_gen_params *p = &r->params;
		struct run *u = &runs[i];
		if (r->n_prompt < 1)
			return llm_error(LLM_EINVAL, "request %d: empty prompt", i);
		if (r->n_prompt >= n_ctx)
			return llm_error(LLM_ERANGE, "request %d: prompt of %d tokens does "
			                 "not fit the context of %d", i, r->n_prompt, n_ctx);
		for (int j = 0; j < r->n_prompt; j++)
			if (r->prompt[j] < 0 || r->prompt[j] >= g->n_vocab)
				return llm_error(LLM_EINVAL, "request %d: token id %d is outside "
				                 "the vocabulary", i, r->prompt[j]);
		if ((rc = llm_sampling_check(&p->sampling)))
			return llm_error_prefix(rc, "request %d", i);
		if (p->n_beams < 0 || p->n_beams > 64)
			return llm_error(LLM_EINVAL, "request %d: beam width %d (0: off, or "
			                 "1 to 64)", i, p->n_beams);
		if (p->n_stop < 0 || p->n_stop > LLM_MAX_STOP)
			return llm_error(LLM_EINVAL, "request %d: at most %d stop strings",
			                 i, LLM_MAX_STOP);
		if (p->max_tokens < -1)
			return llm_error(LLM_EINVAL, "request %d: max_tokens %d", i,
			                 p->max_tokens);
		int room = n_ctx - r->n_prompt;
		u->max_new = p->max_tokens < 0 || p->max_tokens > room ? room : p->max_tokens;
		u->limited_by_ctx = p->max_tokens < 0 || p->max_tokens > room;
		int width = p->n_beams > 0 ? p->n_beams : 1;
		seqs += width;
		int64_t per = (r->n_prompt + u->max_new + bs - 1) / bs;
		blocks += per * width;
	}
	if (seqs > llm_kv_max_seqs(g->kv))
		return llm_error(LLM_ERANGE, "%lld sequences needed, the context holds %d",
		                 (long long)seqs, llm_kv_max_seqs(g->kv));
	if (blocks > llm_kv_n_free_blocks(g->kv))
		return llm_error(LLM_ENOMEM, "KV cache too small: %lld blocks of %d "
		                 "positions needed, %d free", (long long)blocks, bs,
		                 llm_kv_n_free_blocks(g->kv));
	return 0;
}

static void note_peak(struct gen *g)
{
	int used = llm_kv_n_blocks(g->kv) - llm_kv_n_free_blocks(g->kv);
	if (used > g->st->peak_blocks)
		g->st->peak_blocks = used;
}

int llm_generate(struct llm_ctx *ctx, const struct llm_tokenizer *tok,
                 struct llm_gen_request *reqs, int n, llm_gen_stream_fn cb,
                 void *user, struct llm_gen_stats *stats)
{
	struct llm_gen_stats st_local;
	struct gen g = {
		.ctx = ctx, .tok = tok, .kv = llm_ctx_kv(ctx),
		.n_vocab = llm_ctx_n_vocab(ctx), .cb = cb, .user = user,
		.t0 = llm_time_now(), .st = stats ? stats : &st_local,
	};
	struct run *runs = calloc(n > 0 ? n : 1, sizeof(*runs));
	struct llm_batch batch = { 0 };
	const float **lg = NULL;
	int64_t total_prompt = 0;
	int rc, live_seqs = 0;

	memset(g.st, 0, sizeof(*g.st));
	if (!runs)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		runs[i].seq = -1;
		runs[i].r = &reqs[i];
		runs[i].index = i;
		llm_gen_request_clear(&reqs[i]);
	}
	if ((rc = check_requests(&g, reqs, n, runs)))
		goto out;

	/* ---- prefill: every prompt in one batch, logits at each prompt's end */
	for (int i = 0; i < n; i++) {
		struct run *u = &runs[i];
		const struct llm_gen_params *p = &reqs[i].params;
		total_prompt += reqs[i].n_prompt;
		if ((rc = u->seq = llm_kv_seq_new(g.kv)) < 0)
			goto out;
		live_seqs += p->n_beams > 0 ? p->n_beams : 1;
		if (p->n_beams > 0) {
			u->beams = calloc(p->n_beams, sizeof(*u->beams));
			u->hyps = calloc(p->n_beams, sizeof(*u->hyps));
			u->rows = calloc(p->n_beams, sizeof(*u->rows));
			if (!u->beams || !u->hyps || !u->rows) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
				goto out;
			}
		} else {
			u->sampled = true;
			if ((rc = llm_gen_state_init(&u->st, tok, p, g.n_vocab,
			                             reqs[i].prompt, reqs[i].n_prompt,
			                             reqs[i].text_start, llm_ctx_n_ctx(ctx))))
				goto out;
		}
	}
	int cap = (int)(total_prompt > live_seqs ? total_prompt : live_seqs);
	if ((rc = llm_batch_init(&batch, cap)))
		goto out;
	lg = malloc(64 * sizeof(*lg));
	if (!lg) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < reqs[i].n_prompt; j++) {
			if (j == reqs[i].n_prompt - 1 && runs[i].sampled)
				add_sampled(&batch, &runs[i], reqs[i].prompt[j], j);
			else
				llm_batch_add(&batch, reqs[i].prompt[j], j, runs[i].seq,
				              j == reqs[i].n_prompt - 1);
		}
	double t = llm_time_now();
	if ((rc = llm_decode(ctx, &batch)))
		goto out;
	g.st->t_prefill = llm_time_now() - t;
	g.st->n_prompt = total_prompt;
	note_peak(&g);

	/* first tokens */
	int row = 0;
	for (int i = 0; i < n; i++) {
		struct run *u = &runs[i];
		row += reqs[i].n_prompt;
		if (u->max_new == 0) {
			/* nothing to generate: the prompt was only evaluated */
			if (!u->sampled) {
				reqs[i].text = strdup("");
				reqs[i].finish = u->limited_by_ctx ? LLM_FINISH_CONTEXT
				                                   : LLM_FINISH_LENGTH;
				reqs[i].t_done = llm_time_now() - g.t0;
				u->done = true;
				llm_kv_seq_free(g.kv, u->seq);
				u->seq = -1;
				if (!reqs[i].text) {
					rc = llm_error(LLM_ENOMEM, "out of memory");
					goto out;
				}
			} else if ((rc = sampled_emit(&g, u))) {
				goto out;
			}
			continue;
		}
		if (u->sampled) {
			if ((rc = step_sampled(&g, u, row - 1)))
				goto out;
		} else {
			const float *l = llm_ctx_logits(ctx, row - 1);
			/* one "beam" holding the prompt, expanded by the step */
			u->beams[0] = (struct beam){ u->seq, { 0 }, 0.0 };
			u->seq = -1;
			u->n_beams = 1;
			if ((rc = step_beams(&g, u, &l)))
				goto out;
		}
	}

	/* ---- generation steps */
	t = llm_time_now();
	for (;;) {
		llm_batch_clear(&batch);
		for (int i = 0; i < n; i++) {
			struct run *u = &runs[i];
			if (u->done)
				continue;
			if (u->sampled) {
				u->batch_row = batch.n;
				add_sampled(&batch, u, u->st.tokens[u->st.n_tokens - 1],
				            reqs[i].n_prompt + u->st.n_tokens - 1);
			} else {
				for (int b = 0; b < u->n_beams; b++) {
					struct beam *bm = &u->beams[b];
					u->rows[b] = batch.n;
					llm_batch_add(&batch, bm->t.v[bm->t.n - 1],
					              reqs[i].n_prompt + bm->t.n - 1, bm->seq, true);
				}
			}
		}
		if (batch.n == 0)
			break;
		if ((rc = llm_decode(ctx, &batch)))
			goto out;
		g.st->n_steps++;
		g.st->n_decoded += batch.n;
		note_peak(&g);
		for (int i = 0; i < n; i++) {
			struct run *u = &runs[i];
			if (u->done)
				continue;
			if (u->sampled) {
				rc = step_sampled(&g, u, u->batch_row);
			} else {
				for (int b = 0; b < u->n_beams; b++)
					lg[b] = llm_ctx_logits(ctx, u->rows[b]);
				rc = step_beams(&g, u, lg);
			}
			if (rc)
				goto out;
		}
	}
	g.st->t_decode = llm_time_now() - t;
	g.st->peak_seqs = live_seqs;
	rc = 0;
out:
	for (int i = 0; i < n; i++)
		run_free(&g, &runs[i]);
	free(runs);
	free(lg);
	llm_batch_free(&batch);
	return rc;
}
