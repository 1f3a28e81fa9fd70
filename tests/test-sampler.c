/*
 * test-sampler - logits processors and sampling: greedy is the arg-max,
 * filters keep exactly the tokens they should, draws follow the softmax,
 * seeds reproduce, penalties do the published arithmetic.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "llmkit/tokenizer.h"
#include "testutil.h"

#define NV 1000

static float logits[NV];

static void setup(void)
{
	/* a spread of logits, unsorted, with a clear order */
	for (int i = 0; i < NV; i++)
		logits[i] = (float)((i * 7919) % NV) / 100.0f;   /* 0 .. 9.99 */
}

static int32_t rank_id(int r)   /* id of the r-th largest logit */
{
	/* (i * 7919) % NV == NV - 1 - r */
	for (int i = 0; i < NV; i++)
		if ((i * 7919) % NV == NV - 1 - r)
			return i;
	return -1;
}

static struct llm_sampler *mk(struct llm_sampling *p)
{
	struct llm_sampler *s;
	ck_assert_msg(llm_sampler_new(&s, p, NV) == 0, "%s", llm_errmsg());
	return s;
}

START_TEST(greedy_is_argmax)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.temperature = 0;
	struct llm_sampler *s = mk(&p);
	ck_assert_int_eq(llm_sampler_sample(s, logits), rank_id(0));
	ck_assert_int_eq(llm_argmax(logits, NV), rank_id(0));
	llm_sampler_free(s);
}
END_TEST

START_TEST(top_k_one_is_greedy)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.top_k = 1;
	p.temperature = 5.0f;
	struct llm_sampler *s = mk(&p);
	for (int i = 0; i < 200; i++)
		ck_assert_int_eq(llm_sampler_sample(s, logits), rank_id(0));
	llm_sampler_free(s);
}
END_TEST

/* Only the k best ever come out of top-k. */
START_TEST(top_k_keeps_k)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.top_k = 5;
	p.top_p = 1;
	p.min_p = 0;
	p.temperature = 10.0f;    /* flat: all five get drawn */
	struct llm_sampler *s = mk(&p);
	int seen[NV] = { 0 };
	for (int i = 0; i < 2000; i++)
		seen[llm_sampler_sample(s, logits)]++;
	for (int r = 0; r < 5; r++)
		ck_assert_int_gt(seen[rank_id(r)], 0);
	int total = 0;
	for (int r = 0; r < 5; r++)
		total += seen[rank_id(r)];
	ck_assert_int_eq(total, 2000);
	llm_sampler_free(s);
}
END_TEST

/* Nucleus: the smallest prefix with mass >= p, computed by hand. */
START_TEST(top_p_keeps_nucleus)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.top_k = 0;
	p.min_p = 0;
	p.temperature = 1.0f;
	p.top_p = 0.5f;
	double z = 0, cum = 0;
	for (int i = 0; i < NV; i++)
		z += exp(logits[i]);
	int keep = 0;
	while (cum < 0.5) {
		cum += exp(logits[rank_id(keep)]) / z;
		keep++;
	}
	struct llm_sampler *s = mk(&p);
	int in = 0, max_rank = 0;
	for (int i = 0; i < 5000; i++) {
		int32_t t = llm_sampler_sample(s, logits);
		int r = NV - 1 - (t * 7919) % NV;
		max_rank = r > max_rank ? r : max_rank;
		in += r < keep;
	}
	ck_assert_int_eq(in, 5000);
	ck_assert_int_eq(max_rank, keep - 1);   /* the last one is reachable */
	llm_sampler_free(s);
}
END_TEST

START_TEST(min_p_cuts_relative_to_best)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.top_k = 0;
	p.top_p = 1;
	p.temperature = 1;
	p.min_p = 0.5f;     /* logit >= max - ln 2: ranks with logit >= 9.99 - 0.693 */
	struct llm_sampler *s = mk(&p);
	for (int i = 0; i < 3000; i++) {
		int32_t t = llm_sampler_sample(s, logits);
		ck_assert(logits[t] >= 9.99f - logf(2.0f) - 1e-5f);
	}
	llm_sampler_free(s);
}
END_TEST

/* Draws follow softmax(logits / T): chi-square over the top tokens. */
START_TEST(draws_follow_softmax)
{
	float l[8] = { 1.0f, 2.0f, 0.5f, 3.0f, -1.0f, 2.5f, 0.0f, 1.5f };
	struct llm_sampling p;
	struct llm_sampler *s;
	llm_sampling_default(&p);
	p.top_k = 0;
	p.top_p = 1;
	p.min_p = 0;
	p.temperature = 1.5f;
	p.seed = 42;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 8), 0);
	int n = 200000, cnt[8] = { 0 };
	for (int i = 0; i < n; i++)
		cnt[llm_sampler_sample(s, l)]++;
	double z = 0, chi = 0;
	for (int i = 0; i < 8; i++)
		z += exp(l[i] / 1.5);
	for (int i = 0; i < 8; i++) {
		double e = n * exp(l[i] / 1.5) / z;
		chi += (cnt[i] - e) * (cnt[i] - e) / e;
	}
	ck_assert_msg(chi < 24.3, "chi-square %g (7 dof, p = 0.001)", chi);
	llm_sampler_free(s);
}
END_TEST

START_TEST(seed_reproduces)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.seed = 1234;
	struct llm_sampler *a = mk(&p), *b = mk(&p);
	p.seed = 1235;
	struct llm_sampler *c = mk(&p);
	int diff = 0;
	for (int i = 0; i < 100; i++) {
		int32_t ta = llm_sampler_sample(a, logits);
		ck_assert_int_eq(ta, llm_sampler_sample(b, logits));
		diff += ta != llm_sampler_sample(c, logits);
	}
	ck_assert_int_gt(diff, 0);
	llm_sampler_free(a);
	llm_sampler_free(b);
	llm_sampler_free(c);
}
END_TEST

START_TEST(penalties_arithmetic)
{
	/* greedy after penalties reveals the adjusted order */
	float l[4] = { 2.0f, 1.9f, -1.0f, -1.2f };
	struct llm_sampling p;
	struct llm_sampler *s;
	llm_sampling_default(&p);
	p.temperature = 0;

	/* repetition 2.0 on token 0: 2.0 -> 1.0 < 1.9 */
	p.repeat_penalty = 2.0f;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), 0);
	ck_assert_int_eq(llm_sampler_sample(s, l), 0);
	llm_sampler_accept(s, 0);
	ck_assert_int_eq(llm_sampler_sample(s, l), 1);
	llm_sampler_free(s);

	/* negative logits are multiplied: -1.0 -> -2.0 < -1.2 */
	float m[2] = { -1.0f, -1.2f };
	ck_assert_int_eq(llm_sampler_new(&s, &p, 2), 0);
	llm_sampler_accept(s, 0);
	ck_assert_int_eq(llm_sampler_sample(s, m), 1);
	llm_sampler_free(s);

	/* frequency: 2 occurrences x 0.06 = 0.12 > 0.1 gap */
	p.repeat_penalty = 1.0f;
	p.frequency_penalty = 0.06f;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), 0);
	llm_sampler_accept(s, 0);
	ck_assert_int_eq(llm_sampler_sample(s, l), 0);   /* 0.06 < 0.1 */
	llm_sampler_accept(s, 0);
	ck_assert_int_eq(llm_sampler_sample(s, l), 1);
	llm_sampler_free(s);

	/* presence counts once; window limits what is seen */
	p.frequency_penalty = 0;
	p.presence_penalty = 0.2f;
	p.repeat_last_n = 2;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), 0);
	llm_sampler_accept(s, 0);
	ck_assert_int_eq(llm_sampler_sample(s, l), 1);
	llm_sampler_accept(s, 2);
	llm_sampler_accept(s, 3);                        /* 0 left the window */
	ck_assert_int_eq(llm_sampler_sample(s, l), 0);
	llm_sampler_free(s);
}
END_TEST

START_TEST(bad_params_refused)
{
	struct llm_sampling p;
	struct llm_sampler *s;
	llm_sampling_default(&p);
	p.top_p = 0;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "top_p"));
	llm_sampling_default(&p);
	p.temperature = -1;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), LLM_EINVAL);
	llm_sampling_default(&p);
	p.min_p = 1.5f;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 4), LLM_EINVAL);
}
END_TEST

START_TEST(logprobs)
{
	float l[3] = { 0.0f, 1.0f, 2.0f };
	double z = log(exp(0.0) + exp(1.0) + exp(2.0));
	ck_assert(fabs(llm_logprob(l, 3, 2) - (2.0 - z)) < 1e-6);
	int32_t ids[2];
	float lp[2];
	llm_top_logprobs(l, 3, 2, ids, lp);
	ck_assert_int_eq(ids[0], 2);
	ck_assert_int_eq(ids[1], 1);
	ck_assert(fabs(lp[1] - (1.0 - z)) < 1e-6);
}
END_TEST

/* ---------------------------------------------------------------- candidates
 * The candidate path against the full-row path: the same token every
 * time and the same log-probs, over many random rows, temperatures,
 * filters and seeds. */

static uint64_t rng_state = 88172645463325252ull;

static double urand(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (rng_state >> 11) * 0x1.0p-53;
}

static double nrand(void)
{
	double u = urand() + 1e-300, v = urand();
	return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* A row of one of several shapes: sharp, medium, flat, ties, few ties at
 * the top, all equal. */
static void fill_row(float *l, int n, int shape)
{
	for (int i = 0; i < n; i++) {
		double x = nrand();
		switch (shape % 6) {
		case 0: l[i] = (float)(x * 8); break;
		case 1: l[i] = (float)(x * 3); break;
		case 2: l[i] = (float)(x * 0.3); break;
		case 3: l[i] = (float)(floor(x * 4) / 4); break;   /* many ties */
		case 4: l[i] = (float)(x * 2); if (i % 7 == 0) l[i] = 5.0f; break;
		default: l[i] = 1.5f; break;
		}
	}
}

struct ref { int32_t id; float key; };

static int ref_cmp(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? 1 : -1;
	return x->id - y->id;
}

/* llm_cands_compute against a full sort by (logit * scale, id). */
START_TEST(cands_compute_is_sorted_prefix)
{
	static const int ns[] = { 1, 3, 63, 64, 65, 1000, 4099 };
	static const float temps[] = { 1.0f, 0.7f, 1.3f, 0.05f, 3.0f };
	float *l = malloc(4099 * sizeof(float));
	struct ref *r = malloc(4099 * sizeof(*r));
	int32_t ids[LLM_CANDS_MAX];
	float vals[LLM_CANDS_MAX];

	for (int a = 0; a < 7; a++)
		for (int shape = 0; shape < 6; shape++)
			for (int t = 0; t < 5; t++) {
				int n = ns[a];
				float scale = 1.0f / temps[t];
				fill_row(l, n, shape);
				for (int i = 0; i < n; i++)
					r[i] = (struct ref){ i, l[i] * scale };
				qsort(r, n, sizeof(*r), ref_cmp);
				int k = n < LLM_CANDS_MAX ? n : LLM_CANDS_MAX;
				for (int kk = 1; kk <= k; kk = kk < k && kk * 3 > k ? k : kk * 3) {
					float mx;
					double sum, sums;
					llm_cands_compute(l, n, scale, kk, true, ids, vals, &mx, &sum,
					                  &sums);
					for (int i = 0; i < kk; i++) {
						ck_assert_int_eq(ids[i], r[i].id);
						ck_assert(vals[i] == l[ids[i]]);
					}
					ck_assert(mx == l[llm_argmax(l, n)]);
					struct llm_cands c = { n, kk, ids, vals, scale, mx, sum, sums };
					for (int i = 0; i < kk; i++) {
						double lp;
						ck_assert(llm_cands_logprob(&c, ids[i], &lp));
						/* the same sums in the same order: the same bits */
						ck_assert(lp == llm_logprob(l, n, ids[i]));
					}
					if (kk < n)
						ck_assert(!llm_cands_logprob(&c, r[kk].id, &(double){ 0 }));
				}
			}
	free(l);
	free(r);
}
END_TEST

struct cand_count { long decided, total; };

/* One setting: a full-row sampler and a candidate sampler with one seed
 * over the same rows; the candidate one samples the full row whenever its
 * candidates do not decide.  Returns how many they decided. */
static void cands_vs_full(const struct llm_sampling *p, int n, int rows,
                          struct cand_count *cnt)
{
	struct llm_sampler *full, *cs;
	float *l = malloc(n * sizeof(float));
	int32_t ids[LLM_CANDS_MAX], tid[20], cid[20];
	float vals[LLM_CANDS_MAX], tlp[20], clp[20];
	int K = n < LLM_CANDS_MAX ? n : LLM_CANDS_MAX;

	ck_assert_int_eq(llm_sampler_new(&full, p, n), 0);
	ck_assert_int_eq(llm_sampler_new(&cs, p, n), 0);
	for (int row = 0; row < rows; row++) {
		fill_row(l, n, row);
		int32_t t1 = llm_sampler_sample(full, l), t2;
		struct llm_cands c = { n, K, ids, vals, llm_sampler_cands_scale(cs), 0, 0, 0 };
		/* the sums only when the sampler says it needs them, as a
		 * context asks for them; NaN otherwise */
		bool sums;
		llm_sampler_cands_ok(cs, K, &sums);
		llm_cands_compute(l, n, c.scale, K, sums, ids, vals, &c.max, &c.sum,
		                  &c.sum_scaled);
		ck_assert(sums || (isnan(c.sum) && isnan(c.sum_scaled)));
		bool ok = llm_sampler_sample_cands(cs, &c, &t2);
		if (!sums) {   /* the log-probs below want them */
			ck_assert(!llm_cands_logprob(&c, c.ids[0], &(double){ 0 }));
			llm_cands_compute(l, n, c.scale, K, true, ids, vals, &c.max, &c.sum,
			                  &c.sum_scaled);
		}
		if (ok)
			cnt->decided++;
		else
			t2 = llm_sampler_sample(cs, l);
		cnt->total++;
		ck_assert_msg(t1 == t2, "T %g top_k %d top_p %g min_p %g n %d row %d: "
		              "full %d, candidates %d (%s)", p->temperature, p->top_k,
		              p->top_p, p->min_p, n, row, t1, t2,
		              ok ? "decided" : "fell back");
		double lp;
		if (ok) {
			ck_assert(llm_cands_logprob(&c, t2, &lp));
			ck_assert(fabs(lp - llm_logprob(l, n, t1)) <= 1e-6);
		}
		int k = 5 < n ? 5 : n;
		if (llm_cands_top_logprobs(&c, k, cid, clp)) {
			llm_top_logprobs(l, n, k, tid, tlp);
			for (int i = 0; i < k; i++) {
				ck_assert_int_eq(cid[i], tid[i]);
				ck_assert(fabsf(clp[i] - tlp[i]) <= 1e-6f);
			}
		}
	}
	llm_sampler_free(full);
	llm_sampler_free(cs);
	free(l);
}

START_TEST(cands_sample_like_full_rows)
{
	static const float temps[] = { 0.0f, 0.3f, 0.8f, 1.0f, 1.7f };
	static const int top_ks[] = { 0, 1, 5, 40, 64, 100 };
	static const float top_ps[] = { 1.0f, 0.5f, 0.9f, 0.95f, 0.999f };
	static const float min_ps[] = { 0.0f, 0.05f, 0.2f };
	static const int ns[] = { 50, 1000 };
	long decided_k = 0, total_k = 0;
	struct cand_count all = { 0, 0 };

	for (int a = 0; a < 5; a++)
		for (int b = 0; b < 6; b++)
			for (int c = 0; c < 5; c++)
				for (int d = 0; d < 3; d++)
					for (int e = 0; e < 2; e++) {
						struct llm_sampling p;
						llm_sampling_default(&p);
						p.temperature = temps[a];
						p.top_k = top_ks[b];
						p.top_p = top_ps[c];
						p.min_p = min_ps[d];
						p.seed = 1000 + a * 97 + b * 31 + c * 7 + d * 3 + e;
						struct cand_count cnt = { 0, 0 };
						cands_vs_full(&p, ns[e], 24, &cnt);
						all.decided += cnt.decided;
						all.total += cnt.total;
						/* greedy, and top-k within the candidates, are
						 * decided by them, save a nucleus cut within
						 * rounding of the threshold (rows of equal
						 * logits: a sixth of them) */
						if (temps[a] == 0 || (top_ks[b] > 0 && top_ks[b] <= 64)) {
							decided_k += cnt.decided;
							total_k += cnt.total;
						}
					}
	ck_assert_msg(decided_k >= total_k * 97 / 100, "top-k candidates decided "
	              "%ld of %ld", decided_k, total_k);
	ck_assert_msg(all.decided >= all.total / 2, "candidates decided %ld of %ld",
	              all.decided, all.total);
}
END_TEST

/* With penalties the candidates never decide: the logits change. */
START_TEST(cands_refuse_penalties)
{
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.repeat_penalty = 1.3f;
	struct llm_sampler *s = mk(&p);
	bool sums;
	ck_assert(!llm_sampler_cands_ok(s, LLM_CANDS_MAX, &sums));
	int32_t ids[LLM_CANDS_MAX], t;
	float vals[LLM_CANDS_MAX];
	struct llm_cands c = { NV, LLM_CANDS_MAX, ids, vals, llm_sampler_cands_scale(s),
	                       0, 0, 0 };
	llm_cands_compute(logits, NV, c.scale, c.k, true, ids, vals, &c.max, &c.sum,
	                  &c.sum_scaled);
	ck_assert(!llm_sampler_sample_cands(s, &c, &t));
	llm_sampler_free(s);
}
END_TEST

/* Equal logits at the nucleus cut are taken lower id first. */
START_TEST(nucleus_ties_by_id)
{
	float l[10];
	for (int i = 0; i < 10; i++)
		l[i] = 1.0f;
	struct llm_sampling p;
	llm_sampling_default(&p);
	p.temperature = 1.0f;
	p.top_k = 0;
	p.min_p = 0;
	p.top_p = 0.35f;         /* 4 of 10 equal tokens: ids 0 .. 3 */
	struct llm_sampler *s;
	ck_assert_int_eq(llm_sampler_new(&s, &p, 10), 0);
	int seen[10] = { 0 };
	for (int i = 0; i < 400; i++)
		seen[llm_sampler_sample(s, l)]++;
	for (int i = 0; i < 10; i++)
		ck_assert_msg(i < 4 ? seen[i] > 0 : seen[i] == 0, "token %d drawn %d times",
		              i, seen[i]);
	llm_sampler_free(s);
}
END_TEST

/* stories260K end to end on the CPU: candidates forced on against full
 * rows, greedy and sampled, with log-probs. */
static const char *model_path;

static void gen_run(struct llm_model *m, const struct llm_tokenizer *tok, int cands,
                    const struct llm_gen_params *gp, struct llm_gen_request *rq,
                    int n, struct llm_ctx_stats *st)
{
	struct llm_ctx_params cp;
	struct llm_ctx *ctx;
	llm_ctx_params_default(&cp);
	cp.n_threads = 2;
	cp.n_ctx = 256;
	cp.n_seq_max = 8;
	cp.cands = cands;
	ck_assert_int_eq(llm_ctx_new(&ctx, m, &cp), 0);
	for (int i = 0; i < n; i++)
		rq[i].params = *gp;
	ck_assert_msg(llm_generate(ctx, tok, rq, n, NULL, NULL, NULL) == 0, "%s",
	              llm_errmsg());
	llm_ctx_stats(ctx, st);
	llm_ctx_free(ctx);
}

START_TEST(cands_generate_like_full_rows)
{
	struct llm_model *m;
	struct llm_tokenizer *tok;
	ck_assert_msg(llm_model_load(&m, model_path) == 0, "%s", llm_errmsg());
	ck_assert_int_eq(llm_tokenizer_from_gguf(&tok, m->gguf), 0);
	static const int32_t p0[] = { 1, 400, 300 }, p1[] = { 1, 50 }, p2[] = { 1 };
	struct { float t; int k; float p, mp; bool lp; } set[] = {
		{ 0.0f, 40, 0.95f, 0.05f, true },   /* greedy */
		{ 0.8f, 40, 0.95f, 0.05f, true },   /* the defaults */
		{ 1.0f, 0, 0.9f, 0.0f, false },     /* nucleus of the whole row */
		{ 1.3f, 0, 1.0f, 0.1f, true },      /* min-p alone */
		{ 1.0f, 0, 1.0f, 0.0f, false },     /* the whole row: full rows */
	};
	for (size_t s = 0; s < sizeof(set) / sizeof(set[0]); s++) {
		struct llm_gen_params gp;
		llm_gen_params_default(&gp);
		gp.max_tokens = 60;
		gp.sampling.temperature = set[s].t;
		gp.sampling.top_k = set[s].k;
		gp.sampling.top_p = set[s].p;
		gp.sampling.min_p = set[s].mp;
		gp.sampling.seed = 42 + s;
		gp.logprobs = set[s].lp;
		gp.top_logprobs = set[s].lp ? 5 : 0;
		gp.ignore_eos = true;
		struct llm_gen_request a[3] = { { .prompt = p0, .n_prompt = 3 },
		                                { .prompt = p1, .n_prompt = 2 },
		                                { .prompt = p2, .n_prompt = 1 } };
		struct llm_gen_request b[3] = { { .prompt = p0, .n_prompt = 3 },
		                                { .prompt = p1, .n_prompt = 2 },
		                                { .prompt = p2, .n_prompt = 1 } };
		struct llm_ctx_stats sa, sb;
		gen_run(m, tok, -1, &gp, a, 3, &sa);
		gen_run(m, tok, 1, &gp, b, 3, &sb);
		for (int i = 0; i < 3; i++) {
			ck_assert_int_eq(a[i].n_tokens, b[i].n_tokens);
			ck_assert_msg(!memcmp(a[i].tokens, b[i].tokens,
			                      a[i].n_tokens * sizeof(int32_t)),
			              "setting %zu request %d: tokens differ", s, i);
			ck_assert(fabs(a[i].logprob - b[i].logprob) <= 1e-6 * a[i].n_tokens);
			llm_gen_request_clear(&a[i]);
			llm_gen_request_clear(&b[i]);
		}
		/* candidates are fewer bytes than rows, except for the last
		 * setting, which needs every row */
		int nv = m->hp.n_vocab;
		ck_assert(sa.logits_bytes >= (int64_t)sa.n_calls * nv * 4);
		fprintf(stderr, "setting %zu: %lld logits bytes with candidates, %lld "
		        "without\n", s, (long long)sb.logits_bytes,
		        (long long)sa.logits_bytes);
		if (s < 2)   /* greedy and top-k: always decided */
			ck_assert_msg(sb.logits_bytes < sa.logits_bytes / 2,
			              "setting %zu: %lld bytes with candidates, %lld without",
			              s, (long long)sb.logits_bytes, (long long)sa.logits_bytes);
		else if (s + 1 == sizeof(set) / sizeof(set[0]))
			ck_assert(sb.logits_bytes == sa.logits_bytes);
	}
	llm_tokenizer_free(tok);
	llm_model_free(m);
}
END_TEST

/* One batch mixing full rows, candidates rows and tokens without logits:
 * full rows as without candidates, candidates as computed from the row,
 * the row of a candidates row fetched on demand. */
START_TEST(cands_mixed_batch)
{
	struct llm_model *m;
	ck_assert_msg(llm_model_load(&m, model_path) == 0, "%s", llm_errmsg());
	/* full rows, candidates always, and the CPU's default: candidates
	 * only for rows that do not want the sums, over a large vocabulary */
	struct llm_ctx *cx[3];
	for (int v = 0; v < 3; v++) {
		struct llm_ctx_params cp;
		llm_ctx_params_default(&cp);
		cp.n_threads = 2;
		cp.n_ctx = 64;
		cp.n_seq_max = 4;
		cp.cands = v - 1;
		ck_assert_int_eq(llm_ctx_new(&cx[v == 0 ? 0 : v == 2 ? 1 : 2], m, &cp), 0);
	}
	int nv = m->hp.n_vocab;
	/* modes of the 12 tokens of three sequences */
	static const int8_t mode[12] = { 0, 1, 2, 3, 0, 2, 2, 1, 0, 0, 3, 1 };
	struct llm_batch b;
	ck_assert_int_eq(llm_batch_init(&b, 12), 0);
	for (int v = 0; v < 3; v++) {
		int seq[3];
		for (int s = 0; s < 3; s++)
			seq[s] = llm_kv_seq_new(llm_ctx_kv(cx[v]));
		llm_batch_clear(&b);
		for (int i = 0; i < 12; i++) {
			if (mode[i] >= 2)
				llm_batch_add_cands(&b, 5 + i * 7, i % 4, seq[i / 4], 1.25f,
				                    mode[i] == 3);
			else
				llm_batch_add(&b, 5 + i * 7, i % 4, seq[i / 4], mode[i] == 1);
		}
		ck_assert_msg(llm_decode(cx[v], &b) == 0, "%s", llm_errmsg());
	}
	struct llm_ctx_stats st;
	llm_ctx_stats(cx[1], &st);
	ck_assert_int_eq(st.logits_bytes, 3 * nv * 4 + 5 * (64 * 8 + 24));
	for (int i = 0; i < 12; i++) {
		struct llm_cands c;
		/* (stories260K's 512 tokens are below the CPU's 8192) */
		ck_assert(llm_ctx_cands(cx[2], i, &c) == (mode[i] == 2 && nv >= 8192));
		bool have = llm_ctx_cands(cx[1], i, &c);
		ck_assert(have == (mode[i] >= 2));
		ck_assert(!llm_ctx_cands(cx[0], i, &c));
		if (have) {
			int32_t ids[LLM_CANDS_MAX];
			float vals[LLM_CANDS_MAX], mx;
			double sum, sums;
			const float *row;
			ck_assert_int_eq(llm_ctx_row(cx[1], i, &row), 0);
			llm_cands_compute(row, nv, 1.25f, c.k, true, ids, vals, &mx, &sum, &sums);
			ck_assert_int_eq(c.k, 64);
			ck_assert(!memcmp(ids, c.ids, sizeof(ids)));
			ck_assert(!memcmp(vals, c.logits, sizeof(vals)));
			ck_assert(mx == c.max);
			ck_assert(mode[i] == 3 ? sum == c.sum && sums == c.sum_scaled
			                       : isnan(c.sum) && isnan(c.sum_scaled));
		}
		const float *a = llm_ctx_logits(cx[0], i), *r = llm_ctx_logits(cx[1], i);
		ck_assert(!a == (mode[i] == 0) && !r == (mode[i] == 0));
		if (a)
			ck_assert(!memcmp(a, r, nv * sizeof(float)));
	}
	/* the three rows fetched count too */
	llm_ctx_stats(cx[1], &st);
	ck_assert_int_eq(st.logits_bytes, 8 * nv * 4 + 5 * (64 * 8 + 24));
	/* a scale that is not positive is refused */
	llm_kv_seq_truncate(llm_ctx_kv(cx[1]), 0, 0);
	llm_batch_clear(&b);
	llm_batch_add_cands(&b, 1, 0, 0, 0.0f, false);
	ck_assert_int_eq(llm_decode(cx[1], &b), LLM_EINVAL);
	llm_batch_free(&b);
	for (int v = 0; v < 3; v++)
		llm_ctx_free(cx[v]);
	llm_model_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sampler");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, greedy_is_argmax);
	tcase_add_test(tc, top_k_one_is_greedy);
	tcase_add_test(tc, top_k_keeps_k);
	tcase_add_test(tc, top_p_keeps_nucleus);
	tcase_add_test(tc, min_p_cuts_relative_to_best);
	tcase_add_test(tc, draws_follow_softmax);
	tcase_add_test(tc, seed_reproduces);
	tcase_add_test(tc, penalties_arithmetic);
	tcase_add_test(tc, bad_params_refused);
	tcase_add_test(tc, logprobs);
	tcase_add_test(tc, cands_compute_is_sorted_prefix);
	tcase_add_test(tc, cands_sample_like_full_rows);
	tcase_add_test(tc, cands_refuse_penalties);
	tcase_add_test(tc, nucleus_ties_by_id);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);

	/* the model part needs the data; without it only that part is
	 * skipped (said on stderr) */
	static char path[4096];
	const char *dir = getenv("LLMKIT_DATA");
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "../shared/data",
	         STORIES260K);
	if (access(path, R_OK) == 0) {
		model_path = path;
		TCase *tm = tcase_create("model");
		tcase_add_test(tm, cands_generate_like_full_rows);
		tcase_add_test(tm, cands_mixed_batch);
		tcase_set_timeout(tm, 300);
		suite_add_tcase(s, tm);
	} else {
		fprintf(stderr, "note: %s not found; candidate generation skipped\n", path);
	}
	int failed = test_run(s);
	return failed ? 1 : 0;
}
