/*
 * sched.h - the serving engine: a request queue, batching policies, and
 * the step loop of continuous batching.
 *
 * The engine runs on its own thread over one context (forward.h).  Other
 * threads create requests and hand them over with llm_engine_submit; the
 * engine answers through the request itself: a mutex-protected record of
 * the text that has become final, the tokens and their log-probabilities,
 * and the finish reason, which readers wait on (llm_sreq_wait) and copy
 * out (llm_sreq_snapshot).
 *
 * Every iteration of the engine:
 *
 *   1. takes new requests in, drops canceled ones (their KV blocks are
 *      freed at once);
 *   2. asks the policy for a plan: how many sequences may run, how many
 *      waiting requests may join now, how many prompt tokens the step may
 *      hold, how many KV blocks to keep free, whether higher-ranked
 *      waiting requests may preempt running ones;
 *   3. admits waiting requests in the policy's rank order while sequences
 *      and KV blocks allow (a request's prompt blocks already in the
 *      prefix cache are taken, not recomputed);
 *   4. builds ONE batch: a decode token for each running sequence and
 *      chunks of the prompts still being prefilled, within the prompt
 *      budget (chunked prefill: a long prompt is spread over several
 *      steps, so nobody's next token waits for all of it);
 *   5. if the step needs more KV blocks than are free, preempts the
 *      lowest-ranked running requests (their state is kept, their KV is
 *      recomputed when they run again) - running out of KV never fails a
 *      request that fits the cache on its own;
 *   6. runs llm_decode once, samples each sequence's next token through
 *      its llm_gen_state, publishes new text, and retires finished
 *      requests at once (their blocks are freed or kept as cached
 *      prefixes).
 *
 * A request's tokens do not depend on what else runs beside it, on
 * chunking, on preemption or on prefix caching (the sampler is per request
 * and seeded; tests hold greedy outputs identical).
 */
#ifndef LLMKIT_SCHED_H
#define LLMKIT_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmkit/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_ctx;
struct llm_tokenizer;
struct llm_engine;
struct llm_sreq;
struct llm_policy;
struct llm_adapters;

/* ---------------------------------------------------------------- requests */

/* Called on the engine thread when a request has new final text or is
 * done; it must not block (wake a waiter, queue a job). */
typedef void (*llm_sreq_notify_fn)(void *user, struct llm_sreq *r);

struct llm_sreq_params {
	const int32_t *prompt;    /* copied; at least one token */
	int n_prompt;
	struct llm_gen_params gen;  /* sampling, limits, stop strings (copied);
	                               beam search is not served (n_beams 0) */
	bool text_start;          /* the prompt holds no text (see generate.h) */
	int priority;             /* class: higher runs first (priority policy) */
	int adapter;              /* -1: the base model; else an adapter id of
	                             the engine's adapter cache (adapters.h) */
	llm_sreq_notify_fn notify;
	void *user;
};

/* A new request holding one reference (the caller's). */
int llm_sreq_new(struct llm_sreq **out, const struct llm_sreq_params *p);
/* Drop a reference; the request is freed with the last one. */
void llm_sreq_release(struct llm_sreq *r);
/* Ask the engine to drop the request (a client went away): its sequence
 * and KV blocks are freed at the start of the next iteration. */
void llm_sreq_cancel(struct llm_sreq *r);

/* What a reader copies out of a request (llm_sreq_snapshot). */
struct llm_sreq_snap {
	char *text;               /* final text from byte text_from on (malloc'd,
	                             NUL-terminated) */
	size_t text_len;
	size_t text_total;        /* final text so far, bytes */
	int n_tokens;             /* tokens generated so far */
	int n_new;                /* tokens from tok_from on, with their ... */
	int32_t *tokens;          /* (n_new) ids */
	float *logprobs;          /* (n_new) log-probs, NULL without gen.logprobs */
	int top_k;                /* gen.top_logprobs */
	int32_t *top_ids;         /* (n_new x top_k) best alternatives */
	float *top_lps;
	bool done;
	enum llm_finish finish;   /* NONE while running or after an error */
	int error;                /* 0, or the LLM_E* code that ended it */
	char errmsg[256];
	int n_prompt;             /* prompt tokens */
	int n_cached;             /* of those, taken from the prefix cache */
	int n_preempted;          /* times preempted */
	double t_queue;           /* seconds waiting before it first ran */
	double t_first;           /* seconds from submission to the first token */
	double t_total;           /* seconds from submission to done */
};

/*
 * Wait until the request has more than text_seen bytes of final text or
 * more than tok_seen tokens, or is done; at most timeout seconds (< 0:
 * no limit).  Returns true when there is something new.
 */
bool llm_sreq_wait(struct llm_sreq *r, size_t text_seen, int tok_seen,
                   double timeout);
/* Copy the request's state; text and tokens from the given offsets. */
int llm_sreq_snapshot(struct llm_sreq *r, size_t text_from, int tok_from,
                      struct llm_sreq_snap *s);
void llm_sreq_snap_free(struct llm_sreq_snap *s);

/* For policies: a request's class, arrival time (llm_time_now clock),
 * prompt length, and how often it was preempted. */
int llm_sreq_priority(const struct llm_sreq *r);
double llm_sreq_arrival(const struct llm_sreq *r);
int llm_sreq_n_prompt(const struct llm_sreq *r);
int llm_sreq_n_preempted(const struct llm_sreq *r);

/* ---------------------------------------------------------------- policies */

/*
 * A batching policy is consulted by the engine before every step.  It
 * sees a view of the engine and fills a plan (prefilled with the engine's
 * limits: a policy only ever tightens them).  Policies are small objects
 * behind this vtable, created by name (llm_policy_new); each one's
 * parameters are documented beside struct llm_policy_params and in
 * llm-batchd(1).
 */
struct llm_sched_view {
	double now;               /* seconds, llm_time_now clock */
	double wall;              /* seconds since the Unix epoch (seasons) */
	int n_waiting;            /* requests waiting (preempted ones included) */
	int n_running;            /* sequences running */
	int n_prefilling;         /* of those, still in their prompt */
	double oldest_wait;       /* seconds the longest-waiting request waited */
	int max_batch;            /* the engine's hard limit on sequences */
	int max_prefill;          /* the engine's prompt-token budget per step */
	int kv_blocks;            /* KV blocks in the cache */
	int kv_free;              /* free (cached-but-unused included) */
	double arrival_rate;      /* requests per second, recent (EWMA) */
	double step_time;         /* seconds per step, recent (EWMA) */
	double service_time;      /* seconds from admission to done, recent */
	double blocks_per_req;    /* KV blocks a finished request held, recent */
	double cpu_pressure;      /* CPU time used by other processes, in CPUs,
	                             over this machine's CPUs (0 idle .. 1 full) */
};

struct llm_sched_plan {
	int max_running;          /* sequences running after admission */
	int admit;                /* most requests to admit now; 0: hold */
	int prefill_tokens;       /* prompt tokens this step (>= 1) */
	int kv_reserve;           /* blocks kept free for arrivals to come */
	bool preempt;             /* higher-ranked waiting requests may preempt
	                             running ones (by llm_policy_ops.rank) */
	double wake;              /* if idle, plan again at this time (seconds,
	                             now clock); 0: at the next arrival */
};

/* What happened in a step (for feedback and traces). */
struct llm_step_info {
	double t;                 /* start, now clock */
	double t_step;            /* seconds for the whole iteration */
	double t_decode;          /* of which in llm_decode */
	int n_seqs;               /* sequences in the batch */
	int n_tokens;             /* tokens in the batch */
	int n_prefill;            /* of which prompt tokens */
	int n_waiting, n_running; /* after the step */
	int n_admitted, n_preempted, n_finished;
	int kv_used, kv_cached, kv_blocks;
	int cap;                  /* the plan's max_running */
	int kv_reserve;           /* the plan's reserve */
	double cpu_pressure;
};

struct llm_policy_params {
	int max_batch;            /* all: most sequences at once (default 32) */
	double batch_timeout_ms;  /* static: start a partial batch after the
	                             oldest request waited this long (100) */
	int min_batch;            /* window: admit when this many wait (4);
	                             load, adaptive, predictive: smallest cap */
	double window_ms;         /* window: ... or when the oldest waited this
	                             long (50) */
	double target_tpot_ms;    /* adaptive: time per output token to keep
	                             under (100) */
	double kv_high, kv_low;   /* load: KV used fractions that shrink / let
	                             grow the batch (0.90, 0.70) */
	double cpu_high, cpu_low; /* load: CPU pressure that shrinks / lets grow
	                             (0.25, 0.10) */
	double aging_s;           /* priority: a waiting request gains one class
	                             per aging_s seconds (10) */
	const char *history;      /* predictive: seasonal history file, read at
	                             start and written by llm_policy_save (NULL:
	                             learn from scratch, keep nothing) */
	double period_s;          /* predictive: length of a season (86400) */
	int buckets;              /* predictive: buckets per season (144) */
	double horizon_s;         /* predictive: look ahead this far (600) */
	double surge_ratio;       /* predictive: forecast over observed rate that
	                             counts as a coming surge (1.5) */
	double epoch;             /* predictive: wall time a season starts at
	                             (0: the Unix epoch, i.e. UTC midnight) */
	const char *hybrid;       /* hybrid: components, comma-separated, ranked
	                             by the first that ranks ("priority,window,
	                             load") */
};

void llm_policy_params_default(struct llm_policy_params *p);

struct llm_policy_ops {
	const char *name;
	int (*init)(struct llm_policy *p);
	void (*destroy)(struct llm_policy *p);
	/* A request arrived (now clock, wall clock). */
	void (*arrival)(struct llm_policy *p, const struct llm_sreq *r, double now,
	                double wall);
	void (*plan)(struct llm_policy *p, const struct llm_sched_view *v,
	             struct llm_sched_plan *plan);
	/* Higher is admitted first, and with plan.preempt a waiting request
	 * preempts a running one ranked lower by at least 1.  NULL: first
	 * come, first served. */
	double (*rank)(struct llm_policy *p, const struct llm_sreq *r, double now);
	void (*step)(struct llm_policy *p, const struct llm_step_info *s);
	/* Persist what was learned (predictive); may be NULL. */
	int (*save)(struct llm_policy *p);
};

struct llm_policy {
	const struct llm_policy_ops *ops;
	struct llm_policy_params prm;
	void *state;
};

/*
 * "static", "continuous", "adaptive", "window", "load", "predictive",
 * "priority", "hybrid".  LLM_EINVAL for an unknown name or bad parameter;
 * predictive: LLM_EFORMAT / LLM_EIO for a history file it cannot use (a
 * missing one is not an error: it learns from scratch).  p NULL: defaults.
 *
 *   static      admits only when nothing runs: a batch of max_batch, or
 *               what waited batch_timeout_ms; the batch runs to completion.
 *   continuous  admits whenever a sequence and KV blocks are free.
 *   adaptive    cap on running sequences by additive increase (+1 while
 *               steps stay under 90% of target_tpot_ms and requests wait)
 *               and multiplicative decrease (x0.8 when a step goes over);
 *               prompt tokens per step held to what fits the target at the
 *               measured cost per prompt token; the cap never exceeds the
 *               concurrency the arrival rate needs (rate x service time x
 *               1.25), never goes under min_batch.
 *   window      admits when min_batch wait or the oldest waited window_ms,
 *               up to max_batch running.
 *   load        cap cut by a quarter (from what runs) when KV use passes
 *               kv_high or other processes' CPU passes cpu_high, grown by
 *               one when both are under kv_low and cpu_low; at most one
 *               change per 100 ms, never under min_batch.
 *   predictive  a seasonal arrival-rate history (buckets per period_s from
 *               epoch, each averaged over seasons) forecasts the highest
 *               rate within horizon_s; cap = concurrency of the larger of
 *               forecast and observed rate (x service time x 1.25, at
 *               least min_batch and what runs and waits); when the
 *               forecast is surge_ratio times the observed rate, KV blocks
 *               for the extra requests are reserved ahead (at most half).
 *               History file (text): "llmkit-predictive 1", "period P",
 *               "buckets B", "epoch E", then B lines "rate seasons";
 *               written by llm_policy_save (to FILE.tmp, then renamed).
 *   priority    rank = priority + seconds waited / aging_s; admitted by
 *               rank; a waiting request ranked at least one above a
 *               running one preempts it (its KV is recomputed later).
 *   hybrid      components in order over one plan (each only tightens);
 *               the first that ranks ranks.
 */
int llm_policy_new(struct llm_policy **out, const char *name,
                   const struct llm_policy_params *p);
void llm_policy_free(struct llm_policy *p);
int llm_policy_save(struct llm_policy *p);
/* NULL-terminated list of the names. */
const char *const *llm_policy_names(void);

/* ---------------------------------------------------------------- engine */

struct llm_engine_params {
	int max_batch;            /* most sequences running (default 32; at most
	                             the context's sequences) */
	int max_prefill_tokens;   /* prompt tokens per step (default 512) */
	bool prefix_caching;      /* share full KV blocks of equal prefixes
	                             (default true) */
	int max_queue;            /* most requests waiting; submit refuses more
	                             (0: no limit; default 0) */
	double watermark;         /* fraction of KV blocks admission leaves free
	                             for running sequences to grow (0.02) */
	struct llm_policy *policy;  /* NULL: continuous; the engine takes it */
	/* Multi-LoRA: the adapters requests may name (adapters.h; not taken
	 * over; NULL: base model only).  A request's adapter is loaded before
	 * it is admitted, bound to its sequence while it runs, and pinned
	 * (never evicted) meanwhile.  Admission prefers waiting requests whose
	 * adapter is resident; one that waited adapter_max_wait seconds for
	 * its adapter (default 2) stops admission of other adapters' requests
	 * until its adapter could be loaded (bounded unfairness). */
	struct llm_adapters *adapters;
	double adapter_max_wait;
	/* Called on the engine thread after every step (traces); may be NULL. */
	void (*on_step)(void *user, const struct llm_step_info *s);
	void *step_user;
};

void llm_engine_params_default(struct llm_engine_params *p);

/* Histograms for metrics: counts of observations <= le[i], cumulative
 * in the Prometheus way when printed; count[n] is everything. */
#define LLM_HIST_MAX 24
struct llm_hist {
	int n;
	double le[LLM_HIST_MAX];
	uint64_t count[LLM_HIST_MAX + 1];  /* per bucket, not cumulative */
	double sum;
	uint64_t total;
};

void llm_hist_add(struct llm_hist *h, double x);
/* The q-quantile (0..1) estimated from the buckets: the upper bound of
 * the bucket it falls in (beyond the last bound: twice that bound); 0
 * when empty. */
double llm_hist_quantile(const struct llm_hist *h, double q);

struct llm_engine_metrics {
	const char *policy;
	int waiting, running, cap;
	int kv_blocks, kv_used, kv_cached;
	int kv_reserve;
	uint64_t requests_submitted, requests_done, requests_failed,
	         requests_canceled, requests_rejected;
	uint64_t prompt_tokens, prompt_tokens_cached, gen_tokens;
	uint64_t preemptions, steps;
	uint64_t prefix_lookups, prefix_hits;  /* KV blocks (kvcache.h's
	                             llm_kv_prefix_stats) */
	double t_decode;          /* seconds in llm_decode */
	double t_sched;           /* seconds of engine work outside llm_decode and
	                             the per-request sampling/text */
	double t_sample;          /* seconds sampling and decoding text */
	double t_busy;            /* seconds of iterations with work */
	double tokens_per_s;      /* generated tokens per second, recent */
	double cpu_pressure;
	struct llm_hist batch_size, step_time, ttft, tpot, e2e, queue_time;
};

/*
 * An engine over ctx (which it uses alone while it runs; its sequences
 * bound max_batch).  The policy in p is taken over (freed with the engine,
 * also on failure).
 */
int llm_engine_new(struct llm_engine **out, struct llm_ctx *ctx,
                   const struct llm_tokenizer *tok,
                   const struct llm_engine_params *p);
/* Start the engine thread. */
int llm_engine_start(struct llm_engine *e);
/*
 * Hand a request over (the engine takes its own reference).  Checked
 * here: LLM_EINVAL for a bad request, LLM_ERANGE when the prompt leaves
 * no room in the context or cannot fit the KV cache even alone,
 * LLM_ENOMEM "queue full" when max_queue requests wait, LLM_ECANCELED
 * once the engine is stopping.
 */
int llm_engine_submit(struct llm_engine *e, struct llm_sreq *r);
/* Requests submitted and not finished. */
int llm_engine_pending(struct llm_engine *e);
/* Stop the engine thread: drain (finish every request, admitting no new
 * ones) or cancel what is left.  Waits for the thread. */
void llm_engine_stop(struct llm_engine *e, bool drain);
void llm_engine_free(struct llm_engine *e);
void llm_engine_metrics(struct llm_engine *e, struct llm_engine_metrics *m);
struct llm_ctx *llm_engine_ctx(struct llm_engine *e);
const struct llm_tokenizer *llm_engine_tok(struct llm_engine *e);
struct llm_policy *llm_engine_policy(struct llm_engine *e);
struct llm_adapters *llm_engine_adapters(struct llm_engine *e);

#ifdef __cplusplus
}
#endif
#endif
