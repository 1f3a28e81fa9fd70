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
#include "llmkit/sampler.h"
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
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? 1 : 0;
}
