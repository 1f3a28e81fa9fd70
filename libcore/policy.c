/*
 * policy.c - the batching policies of the serving engine (sched.h).
 *
 * Every policy is a plan function over a view of the engine; the engine
 * fills the plan with its own limits first and a policy only tightens it
 * (min of counts, max of reserves), which is also what lets hybrid run
 * several of them in a row over one plan.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmkit/error.h"
#include "llmkit/sched.h"

void llm_policy_params_default(struct llm_policy_params *p)
{
	memset(p, 0, sizeof(*p));
	p->max_batch = 32;
	p->batch_timeout_ms = 100;
	p->min_batch = 4;
	p->window_ms = 50;
	p->target_tpot_ms = 100;
	p->kv_high = 0.90;
	p->kv_low = 0.70;
	p->cpu_high = 0.25;
	p->cpu_low = 0.10;
	p->aging_s = 10;
	p->history = NULL;
	p->period_s = 86400;
	p->buckets = 144;
	p->horizon_s = 600;
	p->surge_ratio = 1.5;
	p->epoch = 0;
	p->hybrid = "priority,window,load";
}

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* The policy's own batch limit on top of the engine's. */
static int cap_of(const struct llm_policy *p, const struct llm_sched_plan *plan)
{
	return imin(plan->max_running, p->prm.max_batch);
}

static void set_wake(struct llm_sched_plan *plan, double t)
{
	if (plan->wake <= 0 || t < plan->wake)
		plan->wake = t;
}

/* ---------------------------------------------------------------- continuous */

/* Admit whenever a sequence slot and KV blocks are free. */
static void continuous_plan(struct llm_policy *p, const struct llm_sched_view *v,
                            struct llm_sched_plan *plan)
{
	(void)v;
	plan->max_running = cap_of(p, plan);
}

static const struct llm_policy_ops continuous_ops = {
	.name = "continuous", .plan = continuous_plan,
};

/* ---------------------------------------------------------------- static */

/* A batch is formed only when nothing runs: max_batch requests waiting,
 * or the oldest waited batch_timeout_ms; it then runs to completion. */
static void static_plan(struct llm_policy *p, const struct llm_sched_view *v,
                        struct llm_sched_plan *plan)
{
	int cap = cap_of(p, plan);
	double timeout = p->prm.batch_timeout_ms / 1000;

	plan->max_running = cap;
	if (v->n_running > 0) {
		plan->admit = 0;
	} else if (v->n_waiting >= cap || v->oldest_wait >= timeout) {
		plan->admit = imin(plan->admit, cap);
	} else {
		plan->admit = 0;
		set_wake(plan, v->now + timeout - v->oldest_wait);
	}
}

static const struct llm_policy_ops static_ops = {
	.name = "static", .plan = static_plan,
};

/* ---------------------------------------------------------------- window */

/* Admit when min_batch requests wait or the oldest waited window_ms;
 * between those, arrivals gather into one group. */
static void window_plan(struct llm_policy *p, const struct llm_sched_view *v,
                        struct llm_sched_plan *plan)
{
	double window = p->prm.window_ms / 1000;

	plan->max_running = cap_of(p, plan);
	if (v->n_waiting >= p->prm.min_batch || v->oldest_wait >= window) {
		plan->admit = imin(plan->admit, imax(plan->max_running - v->n_running, 0));
	} else {
		plan->admit = 0;
		set_wake(plan, v->now + window - v->oldest_wait);
	}
}

static const struct llm_policy_ops window_ops = {
	.name = "window", .plan = window_plan,
};

/* ---------------------------------------------------------------- adaptive */

/*
 * The cap on running sequences follows the time per output token (each
 * step gives every decoding sequence one token, so TPOT is the step time):
 * it grows by one while steps (their decoding part, for steps that also
 * take prompt tokens) stay under 90% of target_tpot_ms and
 * requests wait, and shrinks by a fifth when they go over (additive
 * increase, multiplicative decrease).  The prompt tokens of a step are
 * held to what fits in the target too, from the measured cost per prompt
 * token.  The arrival rate bounds the cap from above by the concurrency it
 * needs (Little's law: rate x service time, with a quarter of headroom),
 * so a quiet server keeps its batches, and its steps, small.
 */
struct adaptive {
	double cap;
	double t_decode;    /* seconds per step without prompt tokens (EWMA) */
	double per_prompt;  /* seconds per prompt token (EWMA) */
	int waiting;
};

static int adaptive_init(struct llm_policy *p)
{
	struct adaptive *a = calloc(1, sizeof(*a));
	if (!a)
		return llm_error(LLM_ENOMEM, "out of memory");
	a->cap = p->prm.min_batch;
	p->state = a;
	return 0;
}

static void adaptive_plan(struct llm_policy *p, const struct llm_sched_view *v,
                          struct llm_sched_plan *plan)
{
	struct adaptive *a = p->state;
	double target = p->prm.target_tpot_ms / 1000;
	int cap = cap_of(p, plan), c = (int)a->cap;

	a->waiting = v->n_waiting;
	if (v->arrival_rate > 0 && v->service_time > 0) {
		int need = (int)ceil(1.25 * v->arrival_rate * v->service_time);
		if (c > need)
			c = need;
	}
	c = imax(imin(c, cap), imin(p->prm.min_batch, cap));
	plan->max_running = c;
	if (a->per_prompt > 0 && a->t_decode > 0) {
		int room = (int)((target - a->t_decode) / a->per_prompt);
		plan->prefill_tokens = imin(plan->prefill_tokens, imax(room, 16));
	}
}

static void adaptive_step(struct llm_policy *p, const struct llm_step_info *s)
{
	struct adaptive *a = p->state;
	double target = p->prm.target_tpot_ms / 1000;
	int decode = s->n_tokens - s->n_prefill;
	double t;   /* the step's decoding part */

	if (s->n_seqs == 0)
		return;
	if (s->n_prefill == 0) {
		a->t_decode = a->t_decode > 0 ? 0.8 * a->t_decode + 0.2 * s->t_step
		                              : s->t_step;
		t = s->t_step;
	} else {
		if (a->t_decode > 0 && s->t_step > a->t_decode) {
			double pp = (s->t_step - a->t_decode) / s->n_prefill;
			a->per_prompt = a->per_prompt > 0 ? 0.8 * a->per_prompt + 0.2 * pp : pp;
		}
		/* Under steady arrivals almost every step carries prompt
		 * tokens (held to the target's room above): the cap follows
		 * what the decoding part of such a step costs, the step less
		 * its prompt tokens at the measured price. */
		if (!(a->per_prompt > 0) || decode <= 0)
			return;
		t = s->t_step - s->n_prefill * a->per_prompt;
	}
	if (t > target)
		a->cap = fmax(p->prm.min_batch, fmin(a->cap, decode) * 0.8);
	else if (t < 0.9 * target && a->waiting > 0 && decode >= (int)a->cap)
		a->cap = fmin(p->prm.max_batch, a->cap + 1);
}

static const struct llm_policy_ops adaptive_ops = {
	.name = "adaptive", .init = adaptive_init, .plan = adaptive_plan,
	.step = adaptive_step,
};

/* ---------------------------------------------------------------- load */

/*
 * The cap shrinks by a quarter (from what runs) when the KV cache is used
 * above kv_high or other processes take more than cpu_high of the CPUs,
 * at most every 100 ms, never under min_batch; it grows back by one per
 * 100 ms once both are under kv_low and cpu_low.
 */
struct load {
	double cap;
	double last;
};

static int load_init(struct llm_policy *p)
{
	struct load *l = calloc(1, sizeof(*l));
	if (!l)
		return llm_error(LLM_ENOMEM, "out of memory");
	l->cap = p->prm.max_batch;
	p->state = l;
	return 0;
}

static void load_plan(struct llm_policy *p, const struct llm_sched_view *v,
                      struct llm_sched_plan *plan)
{
	struct load *l = p->state;
	const struct llm_policy_params *q = &p->prm;
	double kv = v->kv_blocks > 0 ? 1.0 - (double)v->kv_free / v->kv_blocks : 0;

	if (v->now - l->last >= 0.1) {
		if (kv > q->kv_high || v->cpu_pressure > q->cpu_high) {
			double from = fmin(l->cap, fmax(v->n_running, 1));
			l->cap = fmax(q->min_batch, floor(from * 0.75));
			l->last = v->now;
		} else if (kv < q->kv_low && v->cpu_pressure < q->cpu_low &&
		           l->cap < q->max_batch) {
			l->cap = fmin(q->max_batch, l->cap + 1);
			l->last = v->now;
		}
	}
	plan->max_running = imin(cap_of(p, plan), (int)l->cap);
}

static const struct llm_policy_ops load_ops = {
	.name = "load", .init = load_init, .plan = load_plan,
};

/* ---------------------------------------------------------------- priority */

/* Rank = class + seconds waited / aging_s: higher classes first, and a
 * request gains a class per aging_s so none starves; a waiting request
 * ranked one class above a running one preempts it. */
static double priority_rank(struct llm_policy *p, const struct llm_sreq *r,
                            double now)
{
	return llm_sreq_priority(r) + (now - llm_sreq_arrival(r)) / p->prm.aging_s;
}

static void priority_plan(struct llm_policy *p, const struct llm_sched_view *v,
                          struct llm_sched_plan *plan)
{
	(void)v;
	plan->max_running = cap_of(p, plan);
	plan->preempt = true;
}

static const struct llm_policy_ops priority_ops = {
	.name = "priority", .plan = priority_plan, .rank = priority_rank,
};

/* ---------------------------------------------------------------- predictive */

/*
 * A seasonal history: the season (period_s, a day by default, starting at
 * epoch) is cut into buckets; each bucket keeps the arrival rate seen in
 * it, averaged over seasons (the last counting half).  The forecast for
 * the next horizon_s is the highest rate of the buckets it covers.  The
 * cap is the concurrency the larger of the forecast and the observed rate
 * needs (rate x service time, with a quarter of headroom, at least
 * min_batch); when the forecast is surge_ratio times the observed rate, KV
 * blocks for the requests the surge will add are reserved ahead (at most
 * half the cache).  Each bucket also learns the service time requests
 * had in it, and a surge is sized with its bucket's, not the short one of
 * the quiet hour before it: requests take longer when many share the
 * steps.
 */
struct predictive {
	double *rate;        /* (buckets) requests per second */
	int *seen;           /* (buckets) seasons observed */
	long long cur;       /* absolute bucket being counted, -1 */
	double cur_from;     /* wall time counting began in it */
	int count;           /* arrivals in it */
	double *svc;         /* (buckets) service time seen, seconds; 0: none */
	double svc_sum;      /* service times sampled in the counting bucket */
	int svc_n;
	double forecast;     /* last forecast (for tests and traces) */
	double forecast_svc; /* the forecast bucket's service time, 0: unknown */
};

static double bucket_len(const struct llm_policy *p)
{
	return p->prm.period_s / p->prm.buckets;
}

static long long bucket_at(const struct llm_policy *p, double wall)
{
	return (long long)floor((wall - p->prm.epoch) / bucket_len(p));
}

static int bucket_index(const struct llm_policy *p, long long b)
{
	long long n = p->prm.buckets;
	return (int)(((b % n) + n) % n);
}

static void predictive_fold(struct llm_policy *p, int i, double rate)
{
	struct predictive *s = p->state;
	s->rate[i] = s->seen[i] ? 0.5 * s->rate[i] + 0.5 * rate : rate;
	s->seen[i]++;
}

/* The service time sampled while bucket i was counted, into its profile. */
static void predictive_fold_svc(struct llm_policy *p, int i)
{
	struct predictive *s = p->state;
	if (s->svc_n > 0) {
		double t = s->svc_sum / s->svc_n;
		s->svc[i] = s->svc[i] > 0 ? 0.5 * s->svc[i] + 0.5 * t : t;
	}
	s->svc_sum = 0;
	s->svc_n = 0;
}

/* Move the counting bucket to the one holding wall, folding what was
 * counted (and zero for buckets that passed without arrivals). */
static void predictive_roll(struct llm_policy *p, double wall)
{
	struct predictive *s = p->state;
	long long b = bucket_at(p, wall);
	double len = bucket_len(p);

	if (s->cur < 0) {
		s->cur = b;
		s->cur_from = wall;
		s->count = 0;
		return;
	}
	if (b <= s->cur)
		return;
	double end = (double)(s->cur + 1) * len + p->prm.epoch;
	double span = end - s->cur_from;
	if (span >= 0.25 * len)
		predictive_fold(p, bucket_index(p, s->cur), s->count / span);
	predictive_fold_svc(p, bucket_index(p, s->cur));
	for (long long k = s->cur + 1; k < b && k < s->cur + 1 + p->prm.buckets; k++)
		predictive_fold(p, bucket_index(p, k), 0);
	s->cur = b;
	s->cur_from = (double)b * len + p->prm.epoch;
	s->count = 0;
}

static int predictive_load(struct llm_policy *p)
{
	struct predictive *s = p->state;
	const char *path = p->prm.history;
	char line[256];
	int lineno = 0, n = 0, rc = 0, nf;
	double svc;
	FILE *f = fopen(path, "r");

	if (!f) {
		if (errno == ENOENT)
			return 0;   /* first run: learn from scratch */
		return llm_error(LLM_EIO, "%s: %s", path, strerror(errno));
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		double x;
		int k;
		if (lineno == 1) {
			if (strncmp(line, "llmkit-predictive 1", 19)) {
				rc = llm_error(LLM_EFORMAT, "%s: line 1: not a predictive "
				               "history (\"llmkit-predictive 1\")", path);
				break;
			}
		} else if (sscanf(line, "period %lf", &x) == 1) {
			if (fabs(x - p->prm.period_s) > 1e-6) {
				rc = llm_error(LLM_EFORMAT, "%s: line %d: period %g, not %g",
				               path, lineno, x, p->prm.period_s);
				break;
			}
		} else if (sscanf(line, "buckets %d", &k) == 1) {
			if (k != p->prm.buckets) {
				rc = llm_error(LLM_EFORMAT, "%s: line %d: %d buckets, not %d",
				               path, lineno, k, p->prm.buckets);
				break;
			}
		} else if (sscanf(line, "epoch %lf", &x) == 1) {
			if (fabs(x - p->prm.epoch) > 1e-6) {
				rc = llm_error(LLM_EFORMAT, "%s: line %d: epoch %g, not %g",
				               path, lineno, x, p->prm.epoch);
				break;
			}
		} else if ((nf = sscanf(line, "%lf %d %lf", &x, &k, &svc)) >= 2) {
			/* rate, seasons seen, and (since the third column was
			 * added) the service time */
			if (nf == 2)
				svc = 0;
			if (n >= p->prm.buckets || !(x >= 0) || k < 0 ||
			    !(svc >= 0 && svc < 1e6)) {
				rc = llm_error(LLM_EFORMAT, "%s: line %d: bucket %d: rate %g, "
				               "seasons %d, service time %g", path, lineno, n,
				               x, k, svc);
				break;
			}
			s->rate[n] = x;
			s->seen[n] = k;
			s->svc[n] = svc;
			n++;
		} else if (line[0] != '#' && line[0] != '\n') {
			rc = llm_error(LLM_EFORMAT, "%s: line %d: cannot read \"%.40s\"",
			               path, lineno, line);
			break;
		}
	}
	fclose(f);
	if (!rc && n != p->prm.buckets)
		rc = llm_error(LLM_EFORMAT, "%s: %d buckets listed, %d expected", path, n,
		               p->prm.buckets);
	return rc;
}

static int predictive_init(struct llm_policy *p)
{
	struct predictive *s = calloc(1, sizeof(*s));
	if (!s)
		return llm_error(LLM_ENOMEM, "out of memory");
	p->state = s;
	s->cur = -1;
	s->rate = calloc(p->prm.buckets, sizeof(*s->rate));
	s->seen = calloc(p->prm.buckets, sizeof(*s->seen));
	s->svc = calloc(p->prm.buckets, sizeof(*s->svc));
	if (!s->rate || !s->seen || !s->svc)
		return llm_error(LLM_ENOMEM, "out of memory");
	return p->prm.history ? predictive_load(p) : 0;
}

static void predictive_destroy(struct llm_policy *p)
{
	struct predictive *s = p->state;
	if (!s)
		return;
	free(s->rate);
	free(s->seen);
	free(s->svc);
	free(s);
}

static void predictive_arrival(struct llm_policy *p, const struct llm_sreq *r,
                               double now, double wall)
{
	struct predictive *s = p->state;
	(void)r;
	(void)now;
	predictive_roll(p, wall);
	s->count++;
}

/* The highest learned rate over [wall, wall + horizon]; 0 if none known. */
static double predictive_forecast(struct llm_policy *p, double wall)
{
	struct predictive *s = p->state;
	long long b0 = bucket_at(p, wall), b1 = bucket_at(p, wall + p->prm.horizon_s);
	double f = 0;
	if (b1 - b0 >= p->prm.buckets)
		b1 = b0 + p->prm.buckets - 1;
	s->forecast_svc = 0;
	for (long long b = b0; b <= b1; b++) {
		int i = bucket_index(p, b);
		if (s->seen[i] && s->rate[i] > f) {
			f = s->rate[i];
			s->forecast_svc = s->svc[i];
		}
	}
	return f;
}

static void predictive_plan(struct llm_policy *p, const struct llm_sched_view *v,
                            struct llm_sched_plan *plan)
{
	struct predictive *s = p->state;
	const struct llm_policy_params *q = &p->prm;
	int cap = cap_of(p, plan);

	predictive_roll(p, v->wall);
	double f = predictive_forecast(p, v->wall);
	double obs = v->arrival_rate;
	double st = v->service_time > 0 ? v->service_time : 1.0;
	double bpr = v->blocks_per_req > 0 ? v->blocks_per_req : 4.0;
	s->forecast = f;

	if (v->service_time > 0) {
		s->svc_sum += v->service_time;
		s->svc_n++;
	}
	bool surge = f > q->surge_ratio * obs && f > 0;
	/* a surge takes the service time its bucket had */
	double st_f = surge ? fmax(st, s->forecast_svc) : st;

	int want = (int)ceil(1.25 * fmax(f * st_f, obs * st));
	/* never below what runs and waits now: the forecast sizes ahead,
	 * it does not turn away the present */
	want = imax(want, imin(v->n_running + v->n_waiting, cap));
	plan->max_running = imax(imin(want, cap), imin(q->min_batch, cap));
	if (surge) {
		int extra = (int)ceil((f - obs) * st_f * bpr);
		plan->kv_reserve = imax(plan->kv_reserve, imin(extra, v->kv_blocks / 2));
	}
}

static int predictive_save(struct llm_policy *p)
{
	struct predictive *s = p->state;
	const char *path = p->prm.history;
	char tmp[4096];
	FILE *f;

	if (!path)
		return 0;
	/* buckets that ended are folded; the one being counted too, once it
	 * has run a quarter of its length (and counting starts over) */
	double wall = (double)time(NULL);
	predictive_roll(p, wall);
	if (s->cur >= 0 && wall - s->cur_from >= 0.25 * bucket_len(p)) {
		predictive_fold(p, bucket_index(p, s->cur), s->count / (wall - s->cur_from));
		predictive_fold_svc(p, bucket_index(p, s->cur));
		s->cur_from = wall;
		s->count = 0;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return llm_error(LLM_EINVAL, "%s: path too long", path);
	if (!(f = fopen(tmp, "w")))
		return llm_error(LLM_EIO, "%s: %s", tmp, strerror(errno));
	fprintf(f, "llmkit-predictive 1\n# arrival rate (requests/s), seasons "
	        "seen and service time (s; 0: none seen), one line per bucket\n"
	        "period %.17g\nbuckets %d\nepoch %.17g\n", p->prm.period_s,
	        p->prm.buckets, p->prm.epoch);
	for (int i = 0; i < p->prm.buckets; i++)
		fprintf(f, "%.9g %d %.9g\n", s->rate[i], s->seen[i], s->svc[i]);
	if (fflush(f) || ferror(f)) {
		fclose(f);
		remove(tmp);
		return llm_error(LLM_EIO, "%s: write failed", tmp);
	}
	if (fclose(f) || rename(tmp, path)) {
		remove(tmp);
		return llm_error(LLM_EIO, "%s: %s", path, strerror(errno));
	}
	return 0;
}

static const struct llm_policy_ops predictive_ops = {
	.name = "predictive", .init = predictive_init, .destroy = predictive_destroy,
	.arrival = predictive_arrival, .plan = predictive_plan,
	.save = predictive_save,
};

/* ---------------------------------------------------------------- hybrid */

/* Components run in order over the same plan, each tightening it; the
 * first that ranks ranks; arrivals, steps and saves go to all. */
#define HYBRID_MAX 8

static const struct llm_policy_ops hybrid_ranked_ops;

struct hybrid {
	struct llm_policy *part[HYBRID_MAX];
	int n;
};

static int hybrid_init(struct llm_policy *p)
{
	struct hybrid *h = calloc(1, sizeof(*h));
	char buf[256];
	int rc;

	if (!h)
		return llm_error(LLM_ENOMEM, "out of memory");
	p->state = h;
	if (!p->prm.hybrid || !*p->prm.hybrid)
		return llm_error(LLM_EINVAL, "policy hybrid: no components");
	if (snprintf(buf, sizeof(buf), "%s", p->prm.hybrid) >= (int)sizeof(buf))
		return llm_error(LLM_EINVAL, "policy hybrid: component list too long");
	for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t;
	     t = strtok_r(NULL, ", ", &save)) {
		if (!strcmp(t, "hybrid"))
			return llm_error(LLM_EINVAL, "policy hybrid: cannot hold itself");
		if (h->n == HYBRID_MAX)
			return llm_error(LLM_EINVAL, "policy hybrid: more than %d components",
			                 HYBRID_MAX);
		if ((rc = llm_policy_new(&h->part[h->n], t, &p->prm)))
			return llm_error_prefix(rc, "policy hybrid");
		h->n++;
	}
	if (h->n == 0)
		return llm_error(LLM_EINVAL, "policy hybrid: no components");
	for (int i = 0; i < h->n; i++)
		if (h->part[i]->ops->rank)
			p->ops = &hybrid_ranked_ops;
	return 0;
}

static void hybrid_destroy(struct llm_policy *p)
{
	struct hybrid *h = p->state;
	if (!h)
		return;
	for (int i = 0; i < h->n; i++)
		llm_policy_free(h->part[i]);
	free(h);
}

static void hybrid_arrival(struct llm_policy *p, const struct llm_sreq *r,
                           double now, double wall)
{
	struct hybrid *h = p->state;
	for (int i = 0; i < h->n; i++)
		if (h->part[i]->ops->arrival)
			h->part[i]->ops->arrival(h->part[i], r, now, wall);
}

static void hybrid_plan(struct llm_policy *p, const struct llm_sched_view *v,
                        struct llm_sched_plan *plan)
{
	struct hybrid *h = p->state;
	for (int i = 0; i < h->n; i++)
		h->part[i]->ops->plan(h->part[i], v, plan);
}

static double hybrid_rank(struct llm_policy *p, const struct llm_sreq *r, double now)
{
	struct hybrid *h = p->state;
	for (int i = 0; i < h->n; i++)
		if (h->part[i]->ops->rank)
			return h->part[i]->ops->rank(h->part[i], r, now);
	return 0;
}

static void hybrid_step(struct llm_policy *p, const struct llm_step_info *s)
{
	struct hybrid *h = p->state;
	for (int i = 0; i < h->n; i++)
		if (h->part[i]->ops->step)
			h->part[i]->ops->step(h->part[i], s);
}

static int hybrid_save(struct llm_policy *p)
{
	struct hybrid *h = p->state;
	int rc = 0;
	for (int i = 0; i < h->n; i++) {
		int r = llm_policy_save(h->part[i]);
		if (r && !rc)
			rc = r;
	}
	return rc;
}

static const struct llm_policy_ops hybrid_ops = {
	.name = "hybrid", .init = hybrid_init, .destroy = hybrid_destroy,
	.arrival = hybrid_arrival, .plan = hybrid_plan, .step = hybrid_step,
	.save = hybrid_save,
};

/* The same with a component that ranks (the engine admits first come,
 * first served when rank is NULL). */
static const struct llm_policy_ops hybrid_ranked_ops = {
	.name = "hybrid", .init = hybrid_init, .destroy = hybrid_destroy,
	.arrival = hybrid_arrival, .plan = hybrid_plan, .rank = hybrid_rank,
	.step = hybrid_step, .save = hybrid_save,
};

/* ---------------------------------------------------------------- table */

static const struct llm_policy_ops *const policies[] = {
	&static_ops, &continuous_ops, &adaptive_ops, &window_ops, &load_ops,
	&predictive_ops, &priority_ops, &hybrid_ops,
};
#define N_POLICIES ((int)(sizeof(policies) / sizeof(*policies)))

const char *const *llm_policy_names(void)
{
	static const char *const names[] = {
		"static", "continuous", "adaptive", "window", "load", "predictive",
		"priority", "hybrid", NULL,
	};
	return names;
}

/* A policy and the strings its parameters point to, in one allocation. */
struct policy_box {
	struct llm_policy pol;
	char *history, *hybrid;
};

static int params_check(const char *name, const struct llm_policy_params *q)
{
	const char *bad = NULL;
	if (q->max_batch < 1)
		bad = "max_batch";
	else if (q->min_batch < 1)
		bad = "min_batch";
	else if (!(q->batch_timeout_ms >= 0))
		bad = "batch_timeout_ms";
	else if (!(q->window_ms >= 0))
		bad = "window_ms";
	else if (!(q->target_tpot_ms > 0))
		bad = "target_tpot_ms";
	else if (!(q->kv_low >= 0 && q->kv_low <= q->kv_high && q->kv_high <= 1))
		bad = "kv_low/kv_high";
	else if (!(q->cpu_low >= 0 && q->cpu_low <= q->cpu_high && q->cpu_high <= 1))
		bad = "cpu_low/cpu_high";
	else if (!(q->aging_s > 0))
		bad = "aging_s";
	else if (!(q->period_s > 0))
		bad = "period_s";
	else if (q->buckets < 1 || q->buckets > 1000000)
		bad = "buckets";
	else if (!(q->horizon_s >= 0))
		bad = "horizon_s";
	else if (!(q->surge_ratio >= 1))
		bad = "surge_ratio";
	if (bad)
		return llm_error(LLM_EINVAL, "policy %s: parameter %s out of range", name,
		                 bad);
	return 0;
}

int llm_policy_new(struct llm_policy **out, const char *name,
                   const struct llm_policy_params *prm)
{
	struct llm_policy_params def;
	const struct llm_policy_ops *ops = NULL;
	struct policy_box *b;
	int rc;

	*out = NULL;
	if (!prm) {
		llm_policy_params_default(&def);
		prm = &def;
	}
	for (int i = 0; i < N_POLICIES && name; i++)
		if (!strcmp(policies[i]->name, name))
			ops = policies[i];
	if (!ops)
		return llm_error(LLM_EINVAL, "unknown policy \"%s\" (static, continuous, "
		                 "adaptive, window, load, predictive, priority, hybrid)",
		                 name ? name : "");
	if ((rc = params_check(name, prm)))
		return rc;
	b = calloc(1, sizeof(*b));
	if (!b)
		return llm_error(LLM_ENOMEM, "out of memory");
	b->pol.ops = ops;
	b->pol.prm = *prm;
	if ((prm->history && !(b->history = strdup(prm->history))) ||
	    (prm->hybrid && !(b->hybrid = strdup(prm->hybrid)))) {
		llm_policy_free(&b->pol);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	b->pol.prm.history = b->history;
	b->pol.prm.hybrid = b->hybrid;
	if (ops->init && (rc = ops->init(&b->pol))) {
		llm_policy_free(&b->pol);
		return rc;
	}
	*out = &b->pol;
	return 0;
}

void llm_policy_free(struct llm_policy *p)
{
	if (!p)
		return;
	struct policy_box *b = (struct policy_box *)p;
	if (p->ops->destroy)
		p->ops->destroy(p);
	else
		free(p->state);
	free(b->history);
	free(b->hybrid);
	free(b);
}

int llm_policy_save(struct llm_policy *p)
{
	return p && p->ops->save ? p->ops->save(p) : 0;
}
