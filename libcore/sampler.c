/*
 * sampler.c - logits processors and sampling (sampler.h).
 *
 * Sorting a whole vocabulary for every token would cost more than a small
 * model's forward pass (and does, with the flat distributions of random
 * weights), so no filter sorts: top-k is a quickselect, the nucleus a
 * quickselect on probability mass, min-p a single pass.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/sampler.h"

/* ---------------------------------------------------------------- rng */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void llm_rng_seed(struct llm_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t llm_rng_next(struct llm_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double llm_rng_uniform(struct llm_rng *r)
{
	return (llm_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- params */

void llm_sampling_default(struct llm_sampling *s)
{
	memset(s, 0, sizeof(*s));
	s->temperature = 0.8f;
	s->top_k = 40;
	s->top_p = 0.95f;
	s->min_p = 0.05f;
	s->repeat_penalty = 1.0f;
	s->repeat_last_n = 64;
}

int llm_sampling_check(const struct llm_sampling *s)
{
	if (!(s->temperature >= 0) || !isfinite(s->temperature))
		return llm_error(LLM_EINVAL, "temperature must be >= 0");
	if (s->top_k < 0)
		return llm_error(LLM_EINVAL, "top_k must be >= 0");
	if (!(s->top_p > 0 && s->top_p <= 1))
		return llm_error(LLM_EINVAL, "top_p must be in (0, 1]");
	if (!(s->min_p >= 0 && s->min_p <= 1))
		return llm_error(LLM_EINVAL, "min_p must be in [0, 1]");
	if (!(s->repeat_penalty > 0) || !isfinite(s->repeat_penalty))
		return llm_error(LLM_EINVAL, "repeat_penalty must be > 0");
	if (s->repeat_last_n < -1)
		return llm_error(LLM_EINVAL, "repeat_last_n must be >= -1");
	if (!isfinite(s->frequency_penalty) || fabsf(s->frequency_penalty) > 100)
		return llm_error(LLM_EINVAL, "frequency_penalty must be in [-100, 100]");
	if (!isfinite(s->presence_penalty) || fabsf(s->presence_penalty) > 100)
		return llm_error(LLM_EINVAL, "presence_penalty must be in [-100, 100]");
	return 0;
}

/* ---------------------------------------------------------------- sampler */

struct cand {
	int32_t id;
	float logit;
};

struct llm_sampler {
	struct llm_sampling p;
	int n_vocab;
	struct llm_rng rng;
	int32_t *hist;        /* every accepted token */
	int n_hist, cap_hist;
	int32_t *count;       /* (n_vocab) occurrences in the window, scratch */
	struct cand *c;       /* (n_vocab) */
	float *prob;          /* (n_vocab) */
};

int llm_sampler_new(struct llm_sampler **out, const struct llm_sampling *p,
                    int n_vocab)
{
	int rc = llm_sampling_check(p);
	if (rc)
		return rc;
	struct llm_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return llm_error(LLM_ENOMEM, "out of memory");
	s->p = *p;
	s->n_vocab = n_vocab;
	llm_rng_seed(&s->rng, p->seed);
	s->count = calloc(n_vocab, sizeof(*s->count));
	s->c = malloc(n_vocab * sizeof(*s->c));
	s->prob = malloc(n_vocab * sizeof(*s->prob));
	if (!s->count || !s->c || !s->prob) {
		llm_sampler_free(s);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	*out = s;
	return 0;
}

void llm_sampler_free(struct llm_sampler *s)
{
	if (!s)
		return;
	free(s->hist);
	free(s->count);
	free(s->c);
	free(s->prob);
	free(s);
}

void llm_sampler_accept(struct llm_sampler *s, int32_t token)
{
	if (s->n_hist == s->cap_hist) {
		int nc = s->cap_hist ? s->cap_hist * 2 : 256;
		int32_t *h = realloc(s->hist, nc * sizeof(*h));
		LLM_ASSERT(h);
		s->hist = h;
		s->cap_hist = nc;
	}
	s->hist[s->n_hist++] = token;
}

/* Penalties on the recent window, applied to the candidate logits (which
 * are in id order, c[i].id == i). */
static void apply_penalties(struct llm_sampler *s)
{
	const struct llm_sampling *p = &s->p;
	if (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f &&
	    p->presence_penalty == 0.0f)
		return;
	if (p->repeat_last_n == 0)
		return;
	int from = p->repeat_last_n < 0 || p->repeat_last_n > s->n_hist
	           ? 0 : s->n_hist - p->repeat_last_n;
	for (int i = from; i < s->n_hist; i++)
		if (s->hist[i] >= 0 && s->hist[i] < s->n_vocab)
			s->count[s->hist[i]]++;
	for (int i = from; i < s->n_hist; i++) {
		int32_t t = s->hist[i];
		if (t < 0 || t >= s->n_vocab || s->count[t] == 0)
			continue;
		float *l = &s->c[t].logit;
		if (p->repeat_penalty != 1.0f)
			*l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
		*l -= p->frequency_penalty * s->count[t] + p->presence_penalty;
		s->count[t] = 0;   /* once per distinct token; leaves count clean */
	}
}

static int cand_desc(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit < y->logit ? 1 : -1;
	return x->id - y->id;
}

static bool cand_better(const struct cand *x, const struct cand *y)
{
	return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

/* Move the k best of c[0..n) to the front (unordered), O(n) expected. */
static void select_top(struct cand *c, int n, int k)
{
	int lo = 0, hi = n - 1;
	if (k >= n)
		return;
	while (lo < hi) {
		struct cand pivot = c[lo + (hi - lo) / 2];
		int i = lo, j = hi;
		while (i <= j) {
			while (cand_better(&c[i], &pivot))
				i++;
			while (cand_better(&pivot, &c[j]))
				j--;
			if (i <= j) {
				struct cand t = c[i];
				c[i] = c[j];
				c[j] = t;
				i++;
				j--;
			}
		}
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			break;
	}
}

/* Sort the best m candidates of n to the front, best first. */
static void sort_top(struct cand *c, int n, int m)
{
	if (m > n)
		m = n;
	select_top(c, n, m);
	qsort(c, m, sizeof(*c), cand_desc);
}

static int cand_id_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return (x->id > y->id) - (x->id < y->id);
}

/*
 * Nucleus without sorting: reorder c[0..n) so that c[0..k) is the smallest
 * set of most likely tokens whose mass (exp(logit - mx)) reaches need, and
 * return k.  A quickselect on mass: partition around a pivot logit; if the
 * larger side already holds enough, the set lies within it, else it is all
 * of it plus part of the rest.  O(n) expected; ties at the cut are taken
 * lower id first.
 */
static int nucleus(struct cand *c, int n, float mx, double need)
{
	int lo = 0, hi = n;
	double acc = 0;       /* mass of c[0..lo), all in the set */

	while (lo < hi) {
		float pv = c[lo + (hi - lo) / 2].logit;
		int a = lo, i = lo, b = hi;
		while (i < b) {   /* [lo,a) > pv, [a,b) == pv, [b,hi) < pv */
			struct cand t = c[i];
			if (t.logit > pv) {
				c[i++] = c[a];
				c[a++] = t;
			} else if (t.logit < pv) {
				c[i] = c[--b];
				c[b] = t;
			} else {
				i++;
			}
		}
		double gt = 0;
		for (int j = lo; j < a; j++)
			gt += exp((double)(c[j].logit - mx));
		if (acc + gt >= need) {
			hi = a;
			continue;
		}
		acc += gt;
		/* equal logits at the cut: the lower ids first, as candidates
		 * (llm_cands) rank them */
		if (b - a > 1)
			qsort(c + a, b - a, sizeof(*c), cand_id_cmp);
		for (int j = a; j < b; j++) {
			acc += exp((double)(c[j].logit - mx));
			if (acc >= need)
				return j + 1;
		}
		lo = b;
	}
	return lo > 0 ? lo : 1;
}

int32_t llm_argmax(const float *l, int n)
{
	int32_t best = 0;
	for (int i = 1; i < n; i++)
		if (l[i] > l[best])
			best = i;
	return best;
}

int32_t llm_sampler_sample(struct llm_sampler *s, const float *logits)
{
	const struct llm_sampling *p = &s->p;
	int n = s->n_vocab;
	struct cand *c = s->c;

	for (int i = 0; i < n; i++)
		c[i] = (struct cand){ i, logits[i] };
	apply_penalties(s);

	if (p->temperature <= 0) {
		int32_t best = 0;
		for (int i = 1; i < n; i++)
			if (c[i].logit > c[best].logit)
				best = i;
		return best;
	}

	/* temperature, then the filters; none of them sorts */
	float inv_t = 1.0f / p->temperature;
	float mx = -INFINITY;
	for (int i = 0; i < n; i++) {
		c[i].logit *= inv_t;
		mx = c[i].logit > mx ? c[i].logit : mx;
	}
	int m = n;
	if (p->top_k > 0 && p->top_k < n) {
		select_top(c, n, p->top_k);
		m = p->top_k;
	}
	if (p->top_p < 1.0f) {
		double z = 0;   /* mass renormalised within top-k */
		for (int i = 0; i < m; i++)
			z += exp((double)(c[i].logit - mx));
		m = nucleus(c, m, mx, p->top_p * z);
	}
	if (p->min_p > 0.0f) {   /* relative to the best token: logit mx */
		float cut = mx + logf(p->min_p);
		int j = 0;
		for (int i = 0; i < m; i++)
			if (c[i].logit >= cut)
				c[j++] = c[i];
		m = j;
	}
	/*
	 * Draw in token-id order: the filters leave the survivors in an order
	 * that depends on the last bits of the logits, and a draw over that
	 * order would give another token for the same seed whenever the batch
	 * around a request shifts a logit by an ulp.
	 */
	for (int i = 0; i < n; i++)
		s->prob[i] = 0.0f;
	for (int i = 0; i < m; i++) {
		float w = (float)exp((double)(c[i].logit - mx));
		s->prob[c[i].id] = w > 0 ? w : FLT_MIN;
	}
	/* the total in id order too: candidates sum the same terms in the
	 * same order, so both paths draw against the same bits */
	double zz = 0;
	for (int i = 0; i < n; i++)
		zz += s->prob[i];
	double r = llm_rng_uniform(&s->rng) * zz, acc = 0;
	int32_t last = c[0].id;
	for (int i = 0; i < n; i++) {
		if (s->prob[i] == 0.0f)
			continue;
		acc += s->prob[i];
		last = i;
		if (r < acc)
			return i;
	}
	return last;
}

double llm_logprob(const float *l, int n, int32_t id)
{
	float mx = -INFINITY;
	for (int i = 0; i < n; i++)
		mx = l[i] > mx ? l[i] : mx;
	double z = 0;
	for (int i = 0; i < n; i++)
		z += exp((double)(l[i] - mx));
	return (double)(l[id] - mx) - log(z);
}

void llm_top_logprobs(const float *logits, int n, int k, int32_t *ids,
                      float *logprobs)
{
	struct cand *c = malloc(n * sizeof(*c));
	LLM_ASSERT(c);
	float mx = -INFINITY;
	double z = 0;
	for (int i = 0; i < n; i++) {
		c[i] = (struct cand){ i, logits[i] };
		mx = logits[i] > mx ? logits[i] : mx;
	}
	for (int i = 0; i < n; i++)
		z += exp((double)(logits[i] - mx));
	double lz = log(z);
	if (k > n)
		k = n;
	sort_top(c, n, k);
	for (int i = 0; i < k; i++) {
		ids[i] = c[i].id;
		logprobs[i] = (float)((double)(c[i].logit - mx) - lz);
	}
	free(c);
}

/* ---------------------------------------------------------------- candidates */

/* A logit in candidate order: times the scale; NaN ranks last. */
static float cand_key(float l, float scale)
{
	float s = l * scale;
	return s != s ? -INFINITY : s;
}

/* A heap of candidates with the worst at the root. */
static void heap_up(struct cand *h, int i)
{
	while (i > 0) {
		int p = (i - 1) / 2;
		if (!cand_better(&h[p], &h[i]))
			return;
		struct cand t = h[p];
		h[p] = h[i];
		h[i] = t;
		i = p;
	}
}

static void heap_down(struct cand *h, int n, int i)
{
	for (;;) {
		int w = i, l = 2 * i + 1, r = l + 1;
		if (l < n && cand_better(&h[w], &h[l]))
			w = l;
		if (r < n && cand_better(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		struct cand t = h[w];
		h[w] = h[i];
		h[i] = t;
		i = w;
	}
}

void llm_cands_compute(const float *l, int n, float scale, int k, bool sums,
                       int32_t *ids, float *vals, float *max, double *sum,
                       double *sum_scaled)
{
	struct cand h[LLM_CANDS_MAX];
	int nh = 0;
	float mx = -INFINITY;

	LLM_ASSERT(k >= 1 && k <= LLM_CANDS_MAX && k <= n);
	/* one pass: the k best in a heap (a later id never beats an equal
	 * value already in it), and the largest logit as llm_logprob finds it */
	for (int i = 0; i < n; i++) {
		mx = l[i] > mx ? l[i] : mx;
		struct cand x = { i, cand_key(l[i], scale) };
		if (nh < k) {
			h[nh] = x;
			heap_up(h, nh++);
		} else if (cand_better(&x, &h[0])) {
			h[0] = x;
			heap_down(h, nh, 0);
		}
	}
	qsort(h, nh, sizeof(*h), cand_desc);
	for (int i = 0; i < nh; i++) {
		ids[i] = h[i].id;
		vals[i] = l[h[i].id];
	}
	*max = mx;
	if (!sums) {
		*sum = *sum_scaled = NAN;
		return;
	}
	double z = 0;
	for (int i = 0; i < n; i++)
		z += exp((double)(l[i] - mx));
	*sum = z;
	if (scale == 1.0f) {
		*sum_scaled = z;
		return;
	}
	/* the scaled row's largest value is the largest logit scaled
	 * (rounding is monotone), as the sampler finds it */
	float mxs = mx * scale;
	z = 0;
	for (int i = 0; i < n; i++) {
		float sv = l[i] * scale;
		z += exp((double)(sv - mxs));
	}
	*sum_scaled = z;
}

float llm_sampler_cands_scale(const struct llm_sampler *s)
{
	return s->p.temperature > 0 ? 1.0f / s->p.temperature : 1.0f;
}

static bool penalties_on(const struct llm_sampling *p)
{
	return p->repeat_last_n != 0 &&
	       (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
	        p->presence_penalty != 0.0f);
}

/* The size of the top-k set: n when top-k is off. */
static int top_k_size(const struct llm_sampling *p, int n)
{
	return p->top_k > 0 && p->top_k < n ? p->top_k : n;
}

bool llm_sampler_cands_ok(const struct llm_sampler *s, int k, bool *sums)
{
	const struct llm_sampling *p = &s->p;
	int n = s->n_vocab;
	*sums = false;
	if (k < 1 || penalties_on(p))
		return false;
	if (p->temperature <= 0)
		return true;
	int m = top_k_size(p, n);
	if (m <= k)
		return true;
	if (p->top_p < 1.0f) {
		*sums = true;       /* its mass is relative to the whole row */
		return m == n;      /* a nucleus of the whole row may end early */
	}
	return p->min_p > 0.0f;     /* the cut may lie within the candidates */
}

static int cand_id_asc(const void *a, const void *b)
{
	return cand_id_cmp(a, b);
}

bool llm_sampler_sample_cands(struct llm_sampler *s, const struct llm_cands *cd,
                              int32_t *token)
{
	const struct llm_sampling *p = &s->p;
	const int n = s->n_vocab, K = cd->k;
	struct cand c[LLM_CANDS_MAX];

	if (K < 1 || K > LLM_CANDS_MAX || cd->n_vocab != n || penalties_on(p) ||
	    cd->scale != llm_sampler_cands_scale(s))
		return false;
	if (p->temperature <= 0) {
		*token = cd->ids[0];   /* the arg-max, lowest id on ties */
		return true;
	}

	/* the scaled logits, as llm_sampler_sample computes them; the first
	 * is the row's largest */
	const float inv_t = cd->scale;
	for (int i = 0; i < K; i++)
		c[i] = (struct cand){ cd->ids[i], cd->logits[i] * inv_t };
	const float mx = c[0].logit;

	/* the set is the best m of the row; only the first K are known */
	int m = top_k_size(p, n);
	if (p->top_p < 1.0f) {
		double z = 0;
		if (m <= K) {
			for (int i = 0; i < m; i++)
				z += exp((double)(c[i].logit - mx));
		} else if (m == n && cd->sum_scaled > 0) {   /* NaN: not asked */
			z = cd->sum_scaled;
		} else {
			return false;
		}
		/*
		 * The cut: the first candidate at which the mass reaches need.
		 * The full row sums the same terms in another order (and a
		 * device in another way), so the cut stands only when it is
		 * clear of need by more than any such rounding: at most a
		 * relative n * 2^-53 for sums of positive terms, taken 8 times.
		 */
		double need = p->top_p * z;
		double tol = z * ((double)n + 64) * 0x1p-50;
		double acc = 0, prev = 0;
		int lim = m < K ? m : K, j;
		for (j = 0; j < lim; j++) {
			prev = acc;
			acc += exp((double)(c[j].logit - mx));
			if (acc >= need)
				break;
		}
		if (j == lim || acc < need + tol || prev > need - tol)
			return false;
		m = j + 1;
	}
	if (p->min_p > 0.0f) {   /* relative to the best token: logit mx */
		float cut = mx + logf(p->min_p);
		if (m > K) {
			/* past the K-th nothing is better than it: if it falls
			 * below the cut, so does everything after it */
			if (!(c[K - 1].logit < cut))
				return false;
			m = K;
		}
		int j = 0;
		for (int i = 0; i < m; i++)
			if (c[i].logit >= cut)
				c[j++] = c[i];
		m = j;
	} else if (m > K) {
		return false;
	}

	/* the draw of llm_sampler_sample, over the survivors in id order */
	qsort(c, m, sizeof(*c), cand_id_asc);
	float w[LLM_CANDS_MAX];
	double zz = 0;
	for (int i = 0; i < m; i++) {
		float x = (float)exp((double)(c[i].logit - mx));
		w[i] = x > 0 ? x : FLT_MIN;
		zz += w[i];
	}
	double r = llm_rng_uniform(&s->rng) * zz, acc = 0;
	*token = c[m - 1].id;
	for (int i = 0; i < m; i++) {
		acc += w[i];
		if (r < acc) {
			*token = c[i].id;
			break;
		}
	}
	return true;
}

bool llm_cands_logprob(const struct llm_cands *c, int32_t id, double *lp)
{
	if (!(c->sum > 0))   /* NaN: not asked for */
		return false;
	for (int i = 0; i < c->k; i++)
		if (c->ids[i] == id) {
			*lp = (double)(c->logits[i] - c->max) - log(c->sum);
			return true;
		}
	return false;
}

bool llm_cands_top_logprobs(const struct llm_cands *cd, int k, int32_t *ids,
                            float *logprobs)
{
	struct cand c[LLM_CANDS_MAX];
	const int K = cd->k;

	if (k > cd->n_vocab)
		k = cd->n_vocab;
	if (k < 1)
		return true;
	if (k > K || K > LLM_CANDS_MAX || !(cd->sum > 0))
		return false;
	/* the order by logit; with a scale other than 1 it may differ from
	 * the candidates' order where scaling makes logits equal */
	for (int i = 0; i < K; i++)
		c[i] = (struct cand){ cd->ids[i], cd->logits[i] };
	if (cd->scale != 1.0f) {
		qsort(c, K, sizeof(*c), cand_desc);
		/* a token past the K-th scales to at most the K-th's value
		 * sK: the k-th by logit is surely ahead of it when it scales
		 * above sK (scaling is monotone) */
		float sK = cd->logits[K - 1] * cd->scale;
		if (K < cd->n_vocab && !(c[k - 1].logit * cd->scale > sK))
			return false;
	}
	double lz = log(cd->sum);
	for (int i = 0; i < k; i++) {
		ids[i] = c[i].id;
		logprobs[i] = (float)((double)(c[i].logit - cd->max) - lz);
	}
	return true;
}
