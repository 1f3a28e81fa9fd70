/*
 * sched.c - the serving engine (sched.h): requests, the engine thread and
 * its step loop, metrics.
 *
 * Threads: any thread creates, submits, cancels and reads requests; one
 * engine thread owns the context, the KV cache, the queues and the policy.
 * Incoming requests pass through a list under the engine mutex; each
 * request has its own mutex for what readers copy out (its llm_gen_state),
 * so a reader never waits for a step, only for one request's sampling.
 *
 * A request's place in its sequence: toks holds the prompt and then every
 * generated token, n_toks of them; the KV cache holds the first n_kv.  The
 * logits for the next token come from position n_toks - 1, so each step
 * feeds positions n_kv .. n_toks - 1: one token when decoding, a chunk of
 * the prompt while prefilling, and after a preemption (n_kv back to 0, or
 * to what the prefix cache still holds) the whole recomputation, which is
 * just a longer prefill.  Sampling state never leaves the request, so none
 * of this changes its tokens.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llmkit/adapters.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/sched.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

enum rq_state { RQ_NEW, RQ_WAITING, RQ_RUNNING, RQ_DONE };

struct llm_sreq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_int refs;
	atomic_bool canceled;
	struct llm_engine *eng;       /* set by submit */

	/* copies of the parameters */
	struct llm_gen_params gen;    /* stop strings point into stops */
	char *stops;
	bool text_start;
	int priority, adapter;
	llm_sreq_notify_fn notify;
	void *user;
	int n_prompt;
	int32_t *toks;                /* (cap_toks) prompt, then generated */
	int cap_toks;

	/* under mu: what readers see */
	struct llm_gen_state st;
	bool st_ok;                   /* st initialised */
	bool done;
	int error;
	char errmsg[256];
	int n_cached, n_preempted;
	double t_submit, t_admit, t_first, t_done;

	/* engine thread only */
	enum rq_state state;
	int seq;                      /* KV sequence, -1 */
	int n_toks;                   /* tokens known: prompt + generated */
	int n_kv;                     /* of those, in the KV cache */
	int chunk;                    /* tokens fed this step */
	int row;                      /* this step's logits row, -1 */
	double rank;
	uint64_t order;               /* admission order (latest is preempted first) */
	bool admitted_once;
	struct llm_sreq *next;        /* incoming list */
	/* multi-LoRA (engine thread) */
	bool adapter_used;            /* counted as a user of its adapter */
	const struct llm_lora *lora;  /* pinned and bound to its sequence */
	uint64_t skip_round;          /* its adapter was not ready this round */
};

struct llm_engine {
	struct llm_ctx *ctx;
	const struct llm_tokenizer *tok;
	struct llm_kvcache *kv;
	struct llm_engine_params p;
	struct llm_policy *pol;
	int n_ctx, n_vocab, bs, n_blocks;

	pthread_t th;
	bool started;

	/* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct llm_sreq *in_head, *in_tail;
	int n_in;
	int n_pending;                /* submitted and not finished */
	int n_queued;                 /* waiting, as of the last step */
	bool stopping, drain;
	uint64_t submitted, rejected;
	struct llm_engine_metrics m;  /* the engine's copy, published per step */

	atomic_int n_cancel;          /* cancels not yet handled */

	/* engine thread only */
	struct llm_sreq **waiting;    /* (cap_waiting) FCFS order, preempted first */
	int n_waiting, cap_waiting;
	struct llm_sreq **running;    /* (max_batch) admission order */
	int n_running;
	struct llm_sreq **inbatch;    /* (max_batch) requests fed this step */
	int n_inbatch;
	struct llm_batch batch;
	uint64_t order;
	struct llm_engine_metrics mp; /* private, copied to m after each step */
	int kv_reserve_plan, cap_plan;

	/* recent figures */
	double arr_count, arr_last;   /* decayed arrival count, last update */
	double tok_count, tok_last;   /* decayed generated-token count */
	double step_time, service_time, blocks_per_req;
	double cpu_pressure, cpu_t, cpu_own;
	unsigned long long cpu_busy;

	/* multi-LoRA */
	uint64_t admit_round;
	int starving;                 /* adapter a starved request waits for, -1 */
};

#define RATE_TAU 10.0   /* seconds: arrival-rate and tokens/s memory */
#define IDLE_REPLAN_S 0.25  /* an idle engine asks its policy again this often */

/* An adapter finished loading: requests waiting for it may be admitted. */
static void engine_wake(void *user)
{
	struct llm_engine *e = user;
	pthread_mutex_lock(&e->mu);
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------- histograms */

void llm_hist_add(struct llm_hist *h, double x)
{
	int i = 0;
	while (i < h->n && x > h->le[i])
		i++;
	h->count[i]++;
	h->sum += x;
	h->total++;
}

double llm_hist_quantile(const struct llm_hist *h, double q)
{
	if (h->total == 0)
		return 0;
	double want = q * (double)h->total;
	uint64_t cum = 0;
	for (int i = 0; i < h->n; i++) {
		cum += h->count[i];
		if ((double)cum >= want && cum > 0)
			return h->le[i];
	}
	return h->n ? h->le[h->n - 1] * 2 : 0;
}

static void hist_init(struct llm_hist *h, const double *le, int n)
{
	memset(h, 0, sizeof(*h));
	h->n = n;
	memcpy(h->le, le, n * sizeof(*le));
}

static void metrics_init(struct llm_engine_metrics *m)
{
	static const double batch[] = { 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96,
	                                 128, 256 };
	static const double step[] = { 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04,
	                               0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2,
	                               5 };
	static const double lat[] = { 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75,
	                              1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60,
	                              120, 300 };
	static const double tpot[] = { 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06,
	                               0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1,
	                               2 };
	memset(m, 0, sizeof(*m));
	hist_init(&m->batch_size, batch, sizeof(batch) / sizeof(*batch));
	hist_init(&m->step_time, step, sizeof(step) / sizeof(*step));
	hist_init(&m->ttft, lat, sizeof(lat) / sizeof(*lat));
	hist_init(&m->tpot, tpot, sizeof(tpot) / sizeof(*tpot));
	hist_init(&m->e2e, lat, sizeof(lat) / sizeof(*lat));
	hist_init(&m->queue_time, lat, sizeof(lat) / sizeof(*lat));
}

/* ---------------------------------------------------------------- requests */

int llm_sreq_new(struct llm_sreq **out, const struct llm_sreq_params *p)
{
	struct llm_sreq *r;
	size_t stop_bytes = 0;

	*out = NULL;
	if (!p->prompt || p->n_prompt < 1)
		return llm_error(LLM_EINVAL, "request: empty prompt");
	if (p->gen.n_beams > 0)
		return llm_error(LLM_EINVAL, "request: beam search is not served");
	if (p->adapter < -1)
		return llm_error(LLM_EINVAL, "request: adapter %d (-1: the base model)",
		                 p->adapter);
	if (p->gen.n_stop < 0 || p->gen.n_stop > LLM_MAX_STOP)
		return llm_error(LLM_EINVAL, "request: %d stop strings (at most %d)",
		                 p->gen.n_stop, LLM_MAX_STOP);
	for (int i = 0; i < p->gen.n_stop; i++) {
		if (!p->gen.stop[i] || !p->gen.stop[i][0])
			return llm_error(LLM_EINVAL, "request: stop string %d is empty", i);
		stop_bytes += strlen(p->gen.stop[i]) + 1;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return llm_error(LLM_ENOMEM, "out of memory");
	r->toks = malloc(p->n_prompt * sizeof(*r->toks));
	r->stops = stop_bytes ? malloc(stop_bytes) : NULL;
	if (!r->toks || (stop_bytes && !r->stops)) {
		free(r->toks);
		free(r->stops);
		free(r);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	memcpy(r->toks, p->prompt, p->n_prompt * sizeof(*r->toks));
	r->cap_toks = r->n_toks = r->n_prompt = p->n_prompt;
	r->gen = p->gen;
	for (int i = 0, at = 0; i < p->gen.n_stop; i++) {
		size_t n = strlen(p->gen.stop[i]) + 1;
		memcpy(r->stops + at, p->gen.stop[i], n);
		r->gen.stop[i] = r->stops + at;
		at += (int)n;
	}
	for (int i = p->gen.n_stop; i < LLM_MAX_STOP; i++)
		r->gen.stop[i] = NULL;
	r->text_start = p->text_start;
	r->priority = p->priority;
	r->adapter = p->adapter;
	r->notify = p->notify;
	r->user = p->user;
	r->seq = -1;
	r->row = -1;
	r->state = RQ_NEW;
	atomic_init(&r->refs, 1);
	atomic_init(&r->canceled, false);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	*out = r;
	return 0;
}

void llm_sreq_release(struct llm_sreq *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->st_ok)
		llm_gen_state_free(&r->st);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r->toks);
	free(r->stops);
	free(r);
}

void llm_sreq_cancel(struct llm_sreq *r)
{
	struct llm_engine *e;
	if (atomic_exchange(&r->canceled, true))
		return;
	pthread_mutex_lock(&r->mu);
	e = r->eng;
	pthread_mutex_unlock(&r->mu);
	if (!e)
		return;
	atomic_fetch_add(&e->n_cancel, 1);
	pthread_mutex_lock(&e->mu);
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

static bool sreq_has_news(struct llm_sreq *r, size_t text_seen, int tok_seen)
{
	if (r->done)
		return true;
	if (!r->st_ok)
		return false;
	return r->st.final_len > text_seen || r->st.n_tokens > tok_seen;
}

bool llm_sreq_wait(struct llm_sreq *r, size_t text_seen, int tok_seen,
                   double timeout)
{
	struct timespec until;
	bool news;

	if (timeout >= 0) {
		clock_gettime(CLOCK_REALTIME, &until);
		double s = floor(timeout);
		until.tv_sec += (time_t)s;
		until.tv_nsec += (long)((timeout - s) * 1e9);
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&r->mu);
	while (!(news = sreq_has_news(r, text_seen, tok_seen))) {
		if (timeout < 0)
			pthread_cond_wait(&r->cv, &r->mu);
		else if (pthread_cond_timedwait(&r->cv, &r->mu, &until))
			break;
	}
	news = sreq_has_news(r, text_seen, tok_seen);
	pthread_mutex_unlock(&r->mu);
	return news;
}

int llm_sreq_snapshot(struct llm_sreq *r, size_t text_from, int tok_from,
                      struct llm_sreq_snap *s)
{
	int rc = 0;

	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&r->mu);
	const struct llm_gen_state *st = &r->st;
	size_t total = r->st_ok ? st->final_len : 0;
	int ntok = r->st_ok ? st->n_tokens : 0;
	if (text_from > total)
		text_from = total;
	if (tok_from < 0)
		tok_from = 0;
	if (tok_from > ntok)
		tok_from = ntok;
	s->text_total = total;
	s->text_len = total - text_from;
	s->text = malloc(s->text_len + 1);
	s->n_tokens = ntok;
	s->n_new = ntok - tok_from;
	s->top_k = r->gen.logprobs ? r->gen.top_logprobs : 0;
	if (s->n_new) {
		s->tokens = malloc(s->n_new * sizeof(*s->tokens));
		if (r->gen.logprobs)
			s->logprobs = malloc(s->n_new * sizeof(*s->logprobs));
		if (s->top_k) {
			s->top_ids = malloc((size_t)s->n_new * s->top_k * sizeof(*s->top_ids));
			s->top_lps = malloc((size_t)s->n_new * s->top_k * sizeof(*s->top_lps));
		}
	}
	if (!s->text || (s->n_new && (!s->tokens ||
	    (r->gen.logprobs && !s->logprobs) ||
	    (s->top_k && (!s->top_ids || !s->top_lps))))) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto unlock;
	}
	if (s->text_len)
		memcpy(s->text, st->text + text_from, s->text_len);
	s->text[s->text_len] = 0;
	if (s->n_new) {
		memcpy(s->tokens, st->tokens + tok_from, s->n_new * sizeof(*s->tokens));
		if (s->logprobs)
			memcpy(s->logprobs, st->token_logprob + tok_from,
			       s->n_new * sizeof(*s->logprobs));
		if (s->top_k) {
			size_t k = (size_t)s->top_k;
			memcpy(s->top_ids, st->top_ids + tok_from * k,
			       s->n_new * k * sizeof(*s->top_ids));
			memcpy(s->top_lps, st->top_lps + tok_from * k,
			       s->n_new * k * sizeof(*s->top_lps));
		}
	}
	s->done = r->done;
	s->finish = r->done && !r->error && r->st_ok ? st->finish : LLM_FINISH_NONE;
	s->error = r->error;
	memcpy(s->errmsg, r->errmsg, sizeof(s->errmsg));
	s->n_prompt = r->n_prompt;
	s->n_cached = r->n_cached;
	s->n_preempted = r->n_preempted;
	double now = llm_time_now();
	s->t_queue = r->t_admit > 0 ? r->t_admit - r->t_submit
	           : r->t_submit > 0 ? now - r->t_submit : 0;
	s->t_first = r->t_first > 0 ? r->t_first - r->t_submit : 0;
	s->t_total = r->t_done > 0 ? r->t_done - r->t_submit : 0;
unlock:
	pthread_mutex_unlock(&r->mu);
	if (rc)
		llm_sreq_snap_free(s);
	return rc;
}

void llm_sreq_snap_free(struct llm_sreq_snap *s)
{
	free(s->text);
	free(s->tokens);
	free(s->logprobs);
	free(s->top_ids);
	free(s->top_lps);
	memset(s, 0, sizeof(*s));
}

int llm_sreq_priority(const struct llm_sreq *r) { return r->priority; }
double llm_sreq_arrival(const struct llm_sreq *r) { return r->t_submit; }
int llm_sreq_n_prompt(const struct llm_sreq *r) { return r->n_prompt; }
int llm_sreq_n_preempted(const struct llm_sreq *r) { return r->n_preempted; }

/* ---------------------------------------------------------------- engine */

void llm_engine_params_default(struct llm_engine_params *p)
{
	memset(p, 0, sizeof(*p));
	p->max_batch = 32;
	p->max_prefill_tokens = 512;
	p->prefix_caching = true;
	p->max_queue = 0;
	p->watermark = 0.02;
	p->adapter_max_wait = 2.0;
}

int llm_engine_new(struct llm_engine **out, struct llm_ctx *ctx,
                   const struct llm_tokenizer *tok,
                   const struct llm_engine_params *p)
{
	struct llm_engine *e;
	struct llm_policy *pol = p->policy;
	int rc;

	*out = NULL;
	if (p->max_batch < 1 || p->max_prefill_tokens < 1 || p->max_queue < 0 ||
	    !(p->watermark >= 0 && p->watermark < 1)) {
		llm_policy_free(pol);
		return llm_error(LLM_EINVAL, "engine: max_batch %d, max_prefill_tokens "
		                 "%d, max_queue %d, watermark %g: out of range",
		                 p->max_batch, p->max_prefill_tokens, p->max_queue,
		                 p->watermark);
	}
	if (!pol && (rc = llm_policy_new(&pol, "continuous", NULL)))
		return rc;
	e = calloc(1, sizeof(*e));
	if (!e) {
		llm_policy_free(pol);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	e->ctx = ctx;
	e->tok = tok;
	e->kv = llm_ctx_kv(ctx);
	e->p = *p;
	e->p.policy = NULL;
	e->pol = pol;
	e->n_ctx = llm_ctx_n_ctx(ctx);
	e->n_vocab = llm_ctx_n_vocab(ctx);
	e->bs = llm_kv_block_size(e->kv);
	e->n_blocks = llm_kv_n_blocks(e->kv);
	if (e->p.max_batch > llm_kv_max_seqs(e->kv))
		e->p.max_batch = llm_kv_max_seqs(e->kv);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	atomic_init(&e->n_cancel, 0);
	e->cap_waiting = 64;
	e->waiting = malloc(e->cap_waiting * sizeof(*e->waiting));
	e->running = malloc(e->p.max_batch * sizeof(*e->running));
	e->inbatch = malloc(e->p.max_batch * sizeof(*e->inbatch));
	if (!e->waiting || !e->running || !e->inbatch ||
	    llm_batch_init(&e->batch, e->p.max_batch + e->p.max_prefill_tokens)) {
		llm_engine_free(e);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	metrics_init(&e->mp);
	e->mp.policy = pol->ops->name;
	e->mp.kv_blocks = e->n_blocks;
	e->m = e->mp;
	e->cap_plan = e->p.max_batch;
	e->starving = -1;
	if (e->p.adapters)
		llm_adapters_on_ready(e->p.adapters, engine_wake, e);
	*out = e;
	return 0;
}

struct llm_ctx *llm_engine_ctx(struct llm_engine *e) { return e->ctx; }
const struct llm_tokenizer *llm_engine_tok(struct llm_engine *e) { return e->tok; }
struct llm_policy *llm_engine_policy(struct llm_engine *e) { return e->pol; }
struct llm_adapters *llm_engine_adapters(struct llm_engine *e) { return e->p.adapters; }

int llm_engine_pending(struct llm_engine *e)
{
	pthread_mutex_lock(&e->mu);
	int n = e->n_pending;
	pthread_mutex_unlock(&e->mu);
	return n;
}

void llm_engine_metrics(struct llm_engine *e, struct llm_engine_metrics *m)
{
	pthread_mutex_lock(&e->mu);
	*m = e->m;
	m->requests_submitted = e->submitted;
	m->requests_rejected = e->rejected;
	m->waiting = e->m.waiting + e->n_in;
	pthread_mutex_unlock(&e->mu);
}

/* Blocks a sequence of len positions spans. */
static int blocks_for(const struct llm_engine *e, int len)
{
	return (len + e->bs - 1) / e->bs;
}

int llm_engine_submit(struct llm_engine *e, struct llm_sreq *r)
{
	int rc;

	if (r->state != RQ_NEW || r->eng)
		return llm_error(LLM_EINVAL, "request: submitted twice");
	for (int i = 0; i < r->n_prompt; i++)
		if (r->toks[i] < 0 || r->toks[i] >= e->n_vocab)
			return llm_error(LLM_EINVAL, "request: prompt token %d is %d, not "
			                 "below the vocabulary size %d", i, r->toks[i],
			                 e->n_vocab);
	if (r->n_prompt >= e->n_ctx)
		return llm_error(LLM_ERANGE, "request: a prompt of %d tokens leaves no "
		                 "room in the context of %d", r->n_prompt, e->n_ctx);
	if (blocks_for(e, r->n_prompt + 1) > e->n_blocks)
		return llm_error(LLM_ERANGE, "request: a prompt of %d tokens does not "
		                 "fit the KV cache (%d blocks of %d)", r->n_prompt,
		                 e->n_blocks, e->bs);
	if ((rc = llm_sampling_check(&r->gen.sampling)))
		return rc;
	if (r->adapter >= 0 && !e->p.adapters)
		return llm_error(LLM_EINVAL, "request: adapter %d, but the engine "
		                 "serves no adapters", r->adapter);

	pthread_mutex_lock(&r->mu);
	rc = llm_gen_state_init(&r->st, e->tok, &r->gen, e->n_vocab, r->toks,
	                        r->n_prompt, r->text_start, e->n_ctx);
	if (rc) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	r->st_ok = true;
	/* room for every token the request may generate */
	int cap = r->n_prompt + r->st.max_new + 1;
	int32_t *t = realloc(r->toks, cap * sizeof(*t));
	if (!t) {
		llm_gen_state_free(&r->st);
		r->st_ok = false;
		pthread_mutex_unlock(&r->mu);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	r->toks = t;
	r->cap_toks = cap;
	pthread_mutex_unlock(&r->mu);

	pthread_mutex_lock(&e->mu);
	if (e->stopping) {
		rc = llm_error(LLM_ECANCELED, "engine: stopping, no new requests");
	} else if (e->p.max_queue > 0 && e->n_queued + e->n_in >= e->p.max_queue) {
		e->rejected++;
		rc = llm_error(LLM_ENOMEM, "queue full (%d requests waiting)",
		               e->n_queued + e->n_in);
	}
	if (rc) {
		pthread_mutex_unlock(&e->mu);
		pthread_mutex_lock(&r->mu);
		llm_gen_state_free(&r->st);
		r->st_ok = false;
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	r->eng = e;
	r->t_submit = llm_time_now();
	if (r->st.finish != LLM_FINISH_NONE) {
		/* nothing to generate (max_tokens 0): done at once */
		r->state = RQ_DONE;
		r->done = true;
		r->t_admit = r->t_first = r->t_done = r->t_submit;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		e->submitted++;
		pthread_mutex_unlock(&e->mu);
		if (r->notify)
			r->notify(r->user, r);
		return 0;
	}
	if (r->adapter >= 0 && (rc = llm_adapters_use(e->p.adapters, r->adapter))) {
		llm_gen_state_free(&r->st);
		r->st_ok = false;
		r->eng = NULL;
		pthread_mutex_unlock(&r->mu);
		pthread_mutex_unlock(&e->mu);
		return rc;
	}
	r->adapter_used = r->adapter >= 0;
	r->state = RQ_WAITING;
	pthread_mutex_unlock(&r->mu);
	atomic_fetch_add(&r->refs, 1);
	r->next = NULL;
	if (e->in_tail)
		e->in_tail->next = r;
	else
		e->in_head = r;
	e->in_tail = r;
	e->n_in++;
	e->n_pending++;
	e->submitted++;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return 0;
}

/* ---------------------------------------------------------------- engine thread */

/* Decayed event counter: count/tau is the recent rate. */
static void decay(double *count, double *last, double now)
{
	if (*last > 0)
		*count *= exp(-(now - *last) / RATE_TAU);
	*last = now;
}

static double ewma(double old, double x, double a)
{
	return old > 0 ? old + a * (x - old) : x;
}

/* CPU time used by other processes over the machine's CPUs, sampled at
 * most twice a second from /proc/stat and our own CPU clock. */
static void cpu_sample(struct llm_engine *e, double now)
{
	if (now - e->cpu_t < 0.5)
		return;
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[8] = { 0 };
	if (!f)
		return;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
	               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 4)
		return;
	unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	double own = llm_time_cpu();
	if (e->cpu_t > 0) {
		long hz = sysconf(_SC_CLK_TCK);
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		double dt = now - e->cpu_t;
		double other = (double)(busy - e->cpu_busy) / (hz > 0 ? hz : 100) -
		               (own - e->cpu_own);
		double pr = other / (dt * (ncpu > 0 ? ncpu : 1));
		pr = pr < 0 ? 0 : pr > 1 ? 1 : pr;
		e->cpu_pressure = ewma(e->cpu_pressure, pr, 0.5);
	}
	e->cpu_t = now;
	e->cpu_busy = busy;
	e->cpu_own = own;
}

static int waiting_push(struct llm_engine *e, struct llm_sreq *r, bool front)
{
	if (e->n_waiting == e->cap_waiting) {
		int nc = e->cap_waiting * 2;
		struct llm_sreq **w = realloc(e->waiting, nc * sizeof(*w));
		if (!w)
			return llm_error(LLM_ENOMEM, "out of memory");
		e->waiting = w;
		e->cap_waiting = nc;
	}
	if (front) {
		memmove(e->waiting + 1, e->waiting, e->n_waiting * sizeof(*e->waiting));
		e->waiting[0] = r;
	} else {
		e->waiting[e->n_waiting] = r;
	}
	e->n_waiting++;
	return 0;
}

static void waiting_remove(struct llm_engine *e, int i)
{
	memmove(e->waiting + i, e->waiting + i + 1,
	        (e->n_waiting - i - 1) * sizeof(*e->waiting));
	e->n_waiting--;
}

static void running_remove(struct llm_engine *e, struct llm_sreq *r)
{
	for (int i = 0; i < e->n_running; i++)
		if (e->running[i] == r) {
			memmove(e->running + i, e->running + i + 1,
			        (e->n_running - i - 1) * sizeof(*e->running));
			e->n_running--;
			return;
		}
	LLM_ASSERT(!"request not running");
}

/* ---------------------------------------------------------------- adapters */

/* Unbind a running request's adapter from its sequence and unpin it. */
static void adapter_unbind(struct llm_engine *e, struct llm_sreq *r)
{
	if (!r->lora)
		return;
	llm_ctx_set_adapter(e->ctx, r->seq, NULL, 0);
	llm_adapters_release(e->p.adapters, r->adapter);
	r->lora = NULL;
}

/*
 * Pin the adapter of a waiting request about to be admitted: 0 when it is
 * resident (r->lora set), 1 when not yet (a load is under way or waits for
 * room), negative when it cannot be read.  Adapter-aware admission: while
 * a request starves for its adapter (waited adapter_max_wait), other
 * adapters' requests are held so the adapters they pin can be evicted.
 */
static int adapter_pin(struct llm_engine *e, struct llm_sreq *r, double now)
{
	if (r->adapter < 0)
		return 0;
	if (e->starving >= 0 && r->adapter != e->starving &&
	    !llm_adapters_resident(e->p.adapters, e->starving))
		return 1;
	bool starved = now - r->t_submit > e->p.adapter_max_wait;
	int rc = llm_adapters_acquire(e->p.adapters, r->adapter, starved, &r->lora);
	if (rc == 1 && starved && e->starving < 0)
		e->starving = r->adapter;
	if (rc == 0 && e->starving == r->adapter)
		e->starving = -1;
	return rc;
}

/* Bind a pinned adapter to the request's new sequence; on failure (a
 * backend without LoRA) it is unpinned and the error returned. */
static int adapter_bind(struct llm_engine *e, struct llm_sreq *r)
{
	int rc = 0;
	if (r->lora && (rc = llm_ctx_set_adapter(e->ctx, r->seq, r->lora, 1.0f))) {
		llm_adapters_release(e->p.adapters, r->adapter);
		r->lora = NULL;
	}
	return rc;
}

/* The request is done (finished, failed or canceled): its sequence goes,
 * readers are woken, the engine's reference dropped. */
static void sreq_retire(struct llm_engine *e, struct llm_sreq *r, int error,
                        const char *msg)
{
	double now = llm_time_now();
	adapter_unbind(e, r);
	if (r->seq >= 0) {
		e->blocks_per_req = ewma(e->blocks_per_req, blocks_for(e, r->n_kv), 0.1);
		llm_kv_seq_free(e->kv, r->seq);
		r->seq = -1;
	}
	if (r->state == RQ_RUNNING)
		running_remove(e, r);
	r->state = RQ_DONE;
	pthread_mutex_lock(&r->mu);
	if (error && !r->error) {
		r->error = error;
		snprintf(r->errmsg, sizeof(r->errmsg), "%s", msg);
	}
	if (!error && r->st.finish == LLM_FINISH_NONE)
		llm_gen_state_finish(&r->st, LLM_FINISH_LENGTH);
	r->done = true;
	r->t_done = now;
	int ntok = r->st.n_tokens;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (r->adapter_used) {
		llm_adapters_unuse(e->p.adapters, r->adapter, r->n_prompt, ntok,
		                   error && error != LLM_ECANCELED);
		r->adapter_used = false;
	}

	struct llm_engine_metrics *m = &e->mp;
	if (error == LLM_ECANCELED) {
		m->requests_canceled++;
	} else if (error) {
		m->requests_failed++;
	} else {
		m->requests_done++;
		llm_hist_add(&m->e2e, now - r->t_submit);
		if (ntok > 1 && r->t_first > 0)
			llm_hist_add(&m->tpot, (now - r->t_first) / (ntok - 1));
		if (r->t_admit > 0)
			e->service_time = ewma(e->service_time, now - r->t_admit, 0.2);
	}
	if (r->notify)
		r->notify(r->user, r);
	pthread_mutex_lock(&e->mu);
	e->n_pending--;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	llm_sreq_release(r);
}

/* Back to the front of the queue; its KV is recomputed when it runs again
 * (what the prefix cache still holds of it is taken back then). */
static void sreq_preempt(struct llm_engine *e, struct llm_sreq *r)
{
	LLM_ASSERT(r->state == RQ_RUNNING);
	adapter_unbind(e, r);
	llm_kv_seq_free(e->kv, r->seq);
	r->seq = -1;
	r->n_kv = 0;
	running_remove(e, r);
	r->state = RQ_WAITING;
	pthread_mutex_lock(&r->mu);
	r->n_preempted++;
	pthread_mutex_unlock(&r->mu);
	e->mp.preemptions++;
	if (waiting_push(e, r, true))
		sreq_retire(e, r, LLM_ENOMEM, llm_errmsg());
}

static void take_incoming(struct llm_engine *e, struct llm_sreq *head, double now)
{
	double wall = (double)time(NULL);
	while (head) {
		struct llm_sreq *r = head;
		head = r->next;
		r->next = NULL;
		decay(&e->arr_count, &e->arr_last, now);
		e->arr_count += 1;
		if (e->pol->ops->arrival)
			e->pol->ops->arrival(e->pol, r, now, wall);
		if (atomic_load(&r->canceled))
			sreq_retire(e, r, LLM_ECANCELED, "canceled");
		else if (waiting_push(e, r, false))
			sreq_retire(e, r, LLM_ENOMEM, llm_errmsg());
	}
}

static void handle_cancels(struct llm_engine *e)
{
	if (atomic_load(&e->n_cancel) == 0)
		return;
	atomic_store(&e->n_cancel, 0);
	for (int i = 0; i < e->n_waiting;) {
		struct llm_sreq *r = e->waiting[i];
		if (atomic_load(&r->canceled)) {
			waiting_remove(e, i);
			sreq_retire(e, r, LLM_ECANCELED, "canceled");
		} else {
			i++;
		}
	}
	for (int i = 0; i < e->n_running;) {
		struct llm_sreq *r = e->running[i];
		if (atomic_load(&r->canceled))
			sreq_retire(e, r, LLM_ECANCELED, "canceled");
		else
			i++;
	}
}

static void cancel_all(struct llm_engine *e)
{
	while (e->n_running)
		sreq_retire(e, e->running[0], LLM_ECANCELED, "engine stopped");
	while (e->n_waiting) {
		struct llm_sreq *r = e->waiting[0];
		waiting_remove(e, 0);
		sreq_retire(e, r, LLM_ECANCELED, "engine stopped");
	}
}

static double sreq_rank(struct llm_engine *e, struct llm_sreq *r, double now)
{
	return e->pol->ops->rank ? e->pol->ops->rank(e->pol, r, now) : 0;
}

/* The running request to preempt first: lowest rank, latest admitted. */
static struct llm_sreq *pick_victim(struct llm_engine *e)
{
	struct llm_sreq *v = NULL;
	for (int i = 0; i < e->n_running; i++) {
		struct llm_sreq *r = e->running[i];
		if (!v || r->rank < v->rank || (r->rank == v->rank && r->order > v->order))
			v = r;
	}
	return v;
}

/* Blocks the request's prompt (its known tokens) still needs beyond what
 * it holds. */
static int blocks_pending(const struct llm_engine *e, const struct llm_sreq *r)
{
	return blocks_for(e, r->n_toks) - blocks_for(e, r->n_kv);
}

static void fill_view(struct llm_engine *e, double now, struct llm_sched_view *v)
{
	memset(v, 0, sizeof(*v));
	v->now = now;
	v->wall = (double)time(NULL);
	v->n_waiting = e->n_waiting;
	v->n_running = e->n_running;
	for (int i = 0; i < e->n_running; i++)
		if (e->running[i]->n_kv < e->running[i]->n_toks - 1)
			v->n_prefilling++;
	for (int i = 0; i < e->n_waiting; i++) {
		double w = now - e->waiting[i]->t_submit;
		if (w > v->oldest_wait)
			v->oldest_wait = w;
	}
	v->max_batch = e->p.max_batch;
	v->max_prefill = e->p.max_prefill_tokens;
	v->kv_blocks = e->n_blocks;
	v->kv_free = llm_kv_n_free_blocks(e->kv);
	decay(&e->arr_count, &e->arr_last, now);
	v->arrival_rate = e->arr_count / RATE_TAU;
	v->step_time = e->step_time;
	v->service_time = e->service_time;
	v->blocks_per_req = e->blocks_per_req;
	v->cpu_pressure = e->cpu_pressure;
}

static int admit_one(struct llm_engine *e, int wi, double now)
{
	struct llm_sreq *r = e->waiting[wi];
	int seq = llm_kv_seq_new(e->kv);

	LLM_ASSERT(seq >= 0);   /* max_batch <= the cache's sequences */
	waiting_remove(e, wi);
	r->seq = seq;
	int rc = adapter_bind(e, r);
	r->n_kv = 0;
	if (e->p.prefix_caching) {
		/* the last known token is always computed: its logits are needed */
		r->n_kv = llm_kv_prefix_attach(e->kv, seq, r->toks, r->n_toks - 1);
	}
	r->state = RQ_RUNNING;
	r->order = ++e->order;
	e->running[e->n_running++] = r;
	if (!r->admitted_once) {
		r->admitted_once = true;
		pthread_mutex_lock(&r->mu);
		r->t_admit = now;
		r->n_cached = r->n_kv;
		pthread_mutex_unlock(&r->mu);
		e->mp.prompt_tokens += r->n_prompt;
		e->mp.prompt_tokens_cached += r->n_kv;
		llm_hist_add(&e->mp.queue_time, now - r->t_submit);
	}
	return rc;
}

/* Admit waiting requests by rank, as the plan and the KV cache allow. */
static int admit(struct llm_engine *e, const struct llm_sched_plan *plan,
                 double now)
{
	int admitted = 0;
	int reserve = plan->kv_reserve + (int)(e->p.watermark * e->n_blocks);
	bool ranked = e->pol->ops->rank != NULL;

	if (e->n_waiting == 0 || plan->admit <= 0)
		return 0;
	if (ranked) {
		for (int i = 0; i < e->n_waiting; i++)
			e->waiting[i]->rank = sreq_rank(e, e->waiting[i], now);
		for (int i = 0; i < e->n_running; i++)
			e->running[i]->rank = sreq_rank(e, e->running[i], now);
	}
	uint64_t round = ++e->admit_round;
	if (e->starving >= 0) {
		/* still starving only while someone waits for it */
		bool waits = false;
		for (int i = 0; i < e->n_waiting && !waits; i++)
			waits = e->waiting[i]->adapter == e->starving;
		if (!waits)
			e->starving = -1;
	}
	while (admitted < plan->admit && e->n_waiting > 0) {
		/* best rank, earliest in the queue on ties; requests whose adapter
		 * is not ready this round are passed over */
		int best = -1;
		for (int i = 0; i < e->n_waiting; i++) {
			if (e->waiting[i]->skip_round == round)
				continue;
			if (best < 0 || (ranked && e->waiting[i]->rank > e->waiting[best]->rank))
				best = i;
			if (!ranked)
				break;
		}
		if (best < 0)
			break;
		struct llm_sreq *c = e->waiting[best];
		struct llm_sreq *victim = plan->preempt ? pick_victim(e) : NULL;
		bool may_preempt = victim && c->rank >= victim->rank + 1;

		if (e->n_running >= plan->max_running) {
			if (!may_preempt)
				break;
			sreq_preempt(e, victim);
			continue;
		}
		/* blocks it takes: what the cache does not hold of its tokens,
		 * and cached blocks nobody uses (they count as free now) */
		int revived = 0, cached = 0;
		if (e->p.prefix_caching)
			cached = llm_kv_prefix_lookup(e->kv, c->toks, c->n_toks - 1, &revived);
		int need = blocks_for(e, c->n_toks) - cached / e->bs + revived;
		int avail = llm_kv_n_free_blocks(e->kv);
		for (int i = 0; i < e->n_running; i++)
			avail -= blocks_pending(e, e->running[i]);
		if (need > avail - reserve && !(e->n_running == 0 && need <= avail)) {
			if (!may_preempt)
				break;
			sreq_preempt(e, victim);
			continue;
		}
		if (c->adapter >= 0 && !c->lora) {
			int rc = adapter_pin(e, c, now);
			if (rc == 1) {
				c->skip_round = round;
				continue;
			}
			if (rc < 0) {
				char msg[256];
				snprintf(msg, sizeof(msg), "%s", llm_errmsg());
				waiting_remove(e, best);
				sreq_retire(e, c, rc, msg);
				continue;
			}
		}
		if (admit_one(e, best, now)) {
			char msg[256];
			snprintf(msg, sizeof(msg), "%s", llm_errmsg());
			sreq_retire(e, c, LLM_EUNSUPPORTED, msg);
			continue;
		}
		admitted++;
	}
	return admitted;
}

/* Add a request's next chunk of n tokens to the batch. */
static void batch_add_chunk(struct llm_engine *e, struct llm_sreq *r, int n)
{
	struct llm_batch *b = &e->batch;
	for (int i = 0; i < n; i++) {
		int pos = r->n_kv + i;
		bool last = pos == r->n_toks - 1;
		if (last)
			r->row = b->n;
		b->token[b->n] = r->toks[pos];
		b->pos[b->n] = pos;
		b->seq[b->n] = r->seq;
		b->adapter[b->n] = r->lora ? r->seq : -1;
		b->logits[b->n] = last;
		b->cand_scale[b->n] = 1.0f;
		bool sums;
		if (last && llm_gen_state_cands(&r->st, &b->cand_scale[b->n], &sums))
			b->logits[b->n] = sums ? LLM_LOGITS_CANDS_SUMS : LLM_LOGITS_CANDS;
		b->n++;
	}
	r->chunk = n;
	e->inbatch[e->n_inbatch++] = r;
}

/* A request in its prompt whose next block another request registered
 * meanwhile takes it (and any after it) from the cache. */
static void extend_from_cache(struct llm_engine *e, struct llm_sreq *r)
{
	if (r->n_kv % e->bs || r->n_toks - 1 - r->n_kv < e->bs)
		return;
	int before = r->n_kv;
	r->n_kv = llm_kv_prefix_attach(e->kv, r->seq, r->toks, r->n_toks - 1);
	if (r->n_kv > before && r->n_preempted == 0) {
		pthread_mutex_lock(&r->mu);
		r->n_cached += r->n_kv - before;
		pthread_mutex_unlock(&r->mu);
		e->mp.prompt_tokens_cached += r->n_kv - before;
	}
}

/* Whether a prompt chunk already in this step (from index `from` of
 * inbatch) computes the whole block r would compute next, after the same
 * tokens: then r waits a step and takes that block from the cache, so a
 * prefix shared by a burst of requests is computed once. */
static bool computes_block_of(const struct llm_engine *e, int from,
                              const struct llm_sreq *r)
{
	if (r->n_kv % e->bs || r->n_toks - 1 - r->n_kv < e->bs)
		return false;
	int end = r->n_kv + e->bs;
	for (int i = from; i < e->n_inbatch && i < from + 16; i++) {
		const struct llm_sreq *a = e->inbatch[i];
		if (a->n_kv <= r->n_kv && a->n_kv + a->chunk >= end &&
		    !memcmp(a->toks, r->toks, end * sizeof(*r->toks)))
			return true;
	}
	return false;
}

/*
 * One batch: a decode token for every running request that has its
 * prompt in the cache, then prompt chunks in admission order within the
 * prompt budget and the free blocks.  When decode tokens need more blocks
 * than are free, the lowest-ranked, latest admitted requests are
 * preempted.  Returns the prompt tokens in the batch.
 */
static int build_batch(struct llm_engine *e, const struct llm_sched_plan *plan,
                       int *n_preempted)
{
	int free_blocks, need, budget, n_prefill = 0;

	if (e->p.prefix_caching)
		for (int i = 0; i < e->n_running; i++)
			extend_from_cache(e, e->running[i]);
again:
	llm_batch_clear(&e->batch);
	e->n_inbatch = 0;
	free_blocks = llm_kv_n_free_blocks(e->kv);
	need = 0;
	for (int i = 0; i < e->n_running; i++) {
		struct llm_sreq *r = e->running[i];
		r->row = -1;
		r->chunk = 0;
		if (r->n_kv == r->n_toks - 1)
			need += blocks_for(e, r->n_kv + 1) - blocks_for(e, r->n_kv);
	}
	if (need > free_blocks) {
		if (e->n_running == 1) {
			/* alone and the cache is full: as far as it can go */
			sreq_retire(e, e->running[0], 0, NULL);
			return 0;
		}
		sreq_preempt(e, pick_victim(e));
		(*n_preempted)++;
		goto again;
	}
	for (int i = 0; i < e->n_running; i++) {
		struct llm_sreq *r = e->running[i];
		if (r->n_kv == r->n_toks - 1)
			batch_add_chunk(e, r, 1);
	}
	free_blocks -= need;
	budget = plan->prefill_tokens;
	int first_prefill = e->n_inbatch;
	for (int i = 0; i < e->n_running && budget > 0; i++) {
		struct llm_sreq *r = e->running[i];
		int left = r->n_toks - r->n_kv;
		if (left <= 1)
			continue;
		if (e->p.prefix_caching &&
		    computes_block_of(e, first_prefill, r))
			continue;   /* takes it from the cache next step */
		int n = left < budget ? left : budget;
		/* positions the free blocks allow */
		int room = (blocks_for(e, r->n_kv) + free_blocks) * e->bs - r->n_kv;
		if (n > room)
			n = room;
		if (n <= 0)
			continue;
		free_blocks -= blocks_for(e, r->n_kv + n) - blocks_for(e, r->n_kv);
		batch_add_chunk(e, r, n);
		budget -= n;
		n_prefill += n;
	}
	if (e->batch.n == 0 && e->n_running > 0) {
		/* every running request is in its prompt and no block is free:
		 * make room for the earliest */
		if (e->n_running == 1) {
			sreq_retire(e, e->running[0], LLM_ENOMEM,
			            "KV cache too small for the prompt");
			return 0;
		}
		sreq_preempt(e, pick_victim(e));
		(*n_preempted)++;
		goto again;
	}
	return n_prefill;
}

/* After llm_decode: advance every request in the batch, sample those at
 * the end of their known tokens, publish, retire the finished. */
static int step_requests(struct llm_engine *e, double now, int *n_finished,
                         int *n_gen)
{
	for (int i = 0; i < e->n_inbatch; i++) {
		struct llm_sreq *r = e->inbatch[i];
		r->n_kv += r->chunk;
		if (r->row < 0) {
			if (e->p.prefix_caching)
				llm_kv_prefix_commit(e->kv, r->seq, r->toks, r->n_kv);
			continue;
		}
		pthread_mutex_lock(&r->mu);
		int before = r->st.n_tokens;
		int rc = llm_gen_state_step_ctx(&r->st, e->ctx, r->row);
		if (r->st.n_tokens > before) {
			LLM_ASSERT(r->n_toks < r->cap_toks);
			r->toks[r->n_toks++] = r->st.tokens[r->st.n_tokens - 1];
			if (before == 0)
				r->t_first = now;
		}
		bool finished = r->st.finish != LLM_FINISH_NONE;
		if (!finished && !rc)
			pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		if (r->st.n_tokens > before) {
			(*n_gen)++;
			if (before == 0)
				llm_hist_add(&e->mp.ttft, now - r->t_submit);
		}
		if (e->p.prefix_caching)
			llm_kv_prefix_commit(e->kv, r->seq, r->toks, r->n_kv);
		if (rc) {
			sreq_retire(e, r, rc, llm_errmsg());
			(*n_finished)++;
		} else if (finished) {
			sreq_retire(e, r, 0, NULL);
			(*n_finished)++;
		} else if (r->notify) {
			r->notify(r->user, r);
		}
	}
	return 0;
}

static void publish(struct llm_engine *e)
{
	struct llm_engine_metrics *m = &e->mp;
	m->running = e->n_running;
	m->cap = e->cap_plan;
	m->kv_reserve = e->kv_reserve_plan;
	m->kv_cached = llm_kv_n_cached_blocks(e->kv);
	m->kv_used = e->n_blocks - llm_kv_n_free_blocks(e->kv);
	m->cpu_pressure = e->cpu_pressure;
	struct llm_kv_prefix_stats ps;
	llm_kv_prefix_stats(e->kv, &ps);
	m->prefix_lookups = (uint64_t)ps.lookups;
	m->prefix_hits = (uint64_t)ps.hits;
	pthread_mutex_lock(&e->mu);
	e->n_queued = e->n_waiting;
	m->waiting = e->n_waiting;
	e->m = *m;
	pthread_mutex_unlock(&e->mu);
}

/* Ask the policy for this iteration's plan, within the engine's limits. */
static void make_plan(struct llm_engine *e, double now, struct llm_sched_view *v,
                      struct llm_sched_plan *plan)
{
	cpu_sample(e, now);
	fill_view(e, now, v);
	plan->max_running = e->p.max_batch;
	plan->admit = e->p.max_batch;
	plan->prefill_tokens = e->p.max_prefill_tokens;
	plan->kv_reserve = 0;
	plan->preempt = false;
	plan->wake = 0;
	e->pol->ops->plan(e->pol, v, plan);
	if (plan->max_running > e->p.max_batch)
		plan->max_running = e->p.max_batch;
	if (plan->max_running < 1)
		plan->max_running = 1;
	if (plan->prefill_tokens > e->p.max_prefill_tokens)
		plan->prefill_tokens = e->p.max_prefill_tokens;
	if (plan->prefill_tokens < 1)
		plan->prefill_tokens = 1;
	if (plan->kv_reserve < 0)
		plan->kv_reserve = 0;
	e->cap_plan = plan->max_running;
	e->kv_reserve_plan = plan->kv_reserve;
}

/* The CLOCK_REALTIME time d seconds from now (for pthread_cond_timedwait). */
static struct timespec deadline_in(double d)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)d;
	ts.tv_nsec += (long)((d - floor(d)) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static void *engine_main(void *arg)
{
	struct llm_engine *e = arg;
	struct llm_engine_metrics *m = &e->mp;

	for (;;) {
		double t0 = llm_time_now();
		pthread_mutex_lock(&e->mu);
		struct llm_sreq *in = e->in_head;
		e->in_head = e->in_tail = NULL;
		e->n_in = 0;
		bool stopping = e->stopping, drain = e->drain;
		pthread_mutex_unlock(&e->mu);

		take_incoming(e, in, t0);
		handle_cancels(e);
		if (stopping && !drain)
			cancel_all(e);
		/* the plan */
		struct llm_sched_view v;
		struct llm_sched_plan plan;
		make_plan(e, t0, &v, &plan);

		if (e->n_waiting == 0 && e->n_running == 0) {
			/* idle: the plan above keeps the policy's cap and KV
			 * reserve current (a forecast surge sizes them before
			 * its first request); look again IDLE_REPLAN_S on */
			publish(e);
			pthread_mutex_lock(&e->mu);
			if (e->stopping && !e->in_head) {
				pthread_mutex_unlock(&e->mu);
				break;
			}
			struct timespec ts = deadline_in(IDLE_REPLAN_S);
			while (!e->in_head && !e->stopping && atomic_load(&e->n_cancel) == 0)
				if (pthread_cond_timedwait(&e->cv, &e->mu, &ts) == ETIMEDOUT)
					break;
			pthread_mutex_unlock(&e->mu);
			continue;
		}
		if (stopping && drain && e->n_running == 0 && plan.admit <= 0)
			plan.admit = plan.max_running;   /* draining: no more holding */

		int n_pre0 = (int)m->preemptions;
		int n_adm = admit(e, &plan, t0);
		if (e->n_running == 0) {
			/* the policy holds: sleep until its wake time or news */
			publish(e);
			double wake = plan.wake > t0 ? plan.wake : t0 + 0.05;
			if (wake > t0 + 0.05)
				wake = t0 + 0.05;
			struct timespec ts = deadline_in(wake - t0);
			pthread_mutex_lock(&e->mu);
			if (!e->in_head && !e->stopping && atomic_load(&e->n_cancel) == 0)
				pthread_cond_timedwait(&e->cv, &e->mu, &ts);
			pthread_mutex_unlock(&e->mu);
			continue;
		}

		int n_pre = 0;
		int n_prefill = build_batch(e, &plan, &n_pre);
		int n_fin = 0, n_gen = 0, rc = 0;
		double t_dec = 0, t_smp = 0;
		int n_seqs = e->n_inbatch, n_tokens = e->batch.n;
		if (e->batch.n > 0) {
			double t1 = llm_time_now();
			rc = llm_decode(e->ctx, &e->batch);
			double t2 = llm_time_now();
			t_dec = t2 - t1;
			if (rc) {
				/* should not happen (blocks were counted): fail the batch */
				char msg[256];
				snprintf(msg, sizeof(msg), "%s", llm_errmsg());
				for (int i = 0; i < e->n_inbatch; i++)
					sreq_retire(e, e->inbatch[i], rc, msg);
				n_fin += e->n_inbatch;
			} else {
				step_requests(e, t2, &n_fin, &n_gen);
			}
			t_smp = llm_time_now() - t2;
		}
		double t3 = llm_time_now();
		double t_step = t3 - t0;

		m->steps++;
		m->gen_tokens += n_gen;
		m->t_decode += t_dec;
		m->t_sample += t_smp;
		m->t_sched += t_step - t_dec - t_smp;
		m->t_busy += t_step;
		decay(&e->tok_count, &e->tok_last, t3);
		e->tok_count += n_gen;
		m->tokens_per_s = e->tok_count / RATE_TAU;
		if (n_seqs > 0) {
			llm_hist_add(&m->batch_size, n_seqs);
			llm_hist_add(&m->step_time, t_step);
			if (n_gen > 0)
				e->step_time = ewma(e->step_time, t_step, 0.1);
		}
		publish(e);

		struct llm_step_info si = {
			.t = t0, .t_step = t_step, .t_decode = t_dec,
			.n_seqs = n_seqs, .n_tokens = n_tokens, .n_prefill = n_prefill,
			.n_waiting = e->n_waiting, .n_running = e->n_running,
			.n_admitted = n_adm,
			.n_preempted = (int)m->preemptions - n_pre0,
			.n_finished = n_fin,
			.kv_used = m->kv_used, .kv_cached = m->kv_cached,
			.kv_blocks = e->n_blocks, .cap = plan.max_running,
			.kv_reserve = plan.kv_reserve, .cpu_pressure = e->cpu_pressure,
		};
		if (e->pol->ops->step)
			e->pol->ops->step(e->pol, &si);
		if (e->p.on_step)
			e->p.on_step(e->p.step_user, &si);
	}
	return NULL;
}

int llm_engine_start(struct llm_engine *e)
{
	if (e->started)
		return llm_error(LLM_EINVAL, "engine: already started");
	if (pthread_create(&e->th, NULL, engine_main, e))
		return llm_error(LLM_ENOMEM, "engine: cannot start its thread");
	e->started = true;
	return 0;
}

void llm_engine_stop(struct llm_engine *e, bool drain)
{
	pthread_mutex_lock(&e->mu);
	if (!e->stopping) {
		e->stopping = true;
		e->drain = drain;
	} else if (!drain) {
		e->drain = false;
	}
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (e->started) {
		pthread_join(e->th, NULL);
		e->started = false;
	}
}

void llm_engine_free(struct llm_engine *e)
{
	if (!e)
		return;
	if (e->p.adapters)
		llm_adapters_on_ready(e->p.adapters, NULL, NULL);
	llm_engine_stop(e, false);
	/* requests never taken in by a thread */
	take_incoming(e, e->in_head, llm_time_now());
	e->in_head = e->in_tail = NULL;
	cancel_all(e);
	llm_batch_free(&e->batch);
	free(e->waiting);
	free(e->running);
	free(e->inbatch);
	llm_policy_free(e->pol);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
}
