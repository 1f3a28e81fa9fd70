/*
 * test-sched - the serving engine on stories260K: greedy outputs equal a
 * request run alone (llm_generate) whatever shares its batch, with chunked
 * prefill, prefix caching and preemption under a tiny KV budget; cancel
 * frees the blocks; the queue limit; and each batching policy's promised
 * behaviour on synthetic views and arrival patterns.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/gguf.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sched.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"
#include "testutil.h"

static struct llm_model *model;
static struct llm_tokenizer *tok;
static const char *model_path;

#define NREQ 32
#define PREFIX 40      /* shared by the even requests (a "system prompt") */
#define MAXTOK 24

static int32_t prompts[NREQ][96];
static int plen[NREQ];
static int32_t ref_toks[NREQ][MAXTOK];
static int ref_n[NREQ];
static bool have_ref;

static void make_prompts(void)
{
	uint32_t x = 12345;
	int32_t prefix[PREFIX];
	prefix[0] = 1;
	for (int i = 1; i < PREFIX; i++) {
		x = x * 1103515245u + 12345u;
		prefix[i] = 3 + (int32_t)((x >> 8) % 500);
	}
	for (int r = 0; r < NREQ; r++) {
		int n = 0;
		if (r % 2 == 0)
			for (; n < PREFIX; n++)
				prompts[r][n] = prefix[n];
		else
			prompts[r][n++] = 1;
		int extra = 3 + (r * 7) % 41;
		for (int i = 0; i < extra; i++) {
			x = x * 1103515245u + 12345u;
			prompts[r][n++] = 3 + (int32_t)((x >> 8) % 500);
		}
		plen[r] = n;
	}
}

static void greedy_params(struct llm_gen_params *g)
{
	llm_gen_params_default(g);
	g->sampling.temperature = 0;
	g->max_tokens = MAXTOK;
}

static struct llm_ctx *new_ctx(int n_seq, int kv_blocks)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.n_threads = 2;
	p.n_ctx = 256;
	p.n_seq_max = n_seq;
	p.kv_blocks = kv_blocks;
	p.kv_type = LLM_F32;
	ck_assert_msg(llm_ctx_new(&c, model, &p) == 0, "%s", llm_errmsg());
	return c;
}

/* Each request alone through llm_generate (no engine). */
static void make_reference(void)
{
	if (have_ref)
		return;
	make_prompts();
	struct llm_ctx *c = new_ctx(1, 0);
	for (int r = 0; r < NREQ; r++) {
		struct llm_gen_request q;
		memset(&q, 0, sizeof(q));
		q.prompt = prompts[r];
		q.n_prompt = plen[r];
		greedy_params(&q.params);
		ck_assert_msg(llm_generate(c, tok, &q, 1, NULL, NULL, NULL) == 0, "%s",
		              llm_errmsg());
		ck_assert(q.n_tokens <= MAXTOK);
		memcpy(ref_toks[r], q.tokens, q.n_tokens * sizeof(int32_t));
		ref_n[r] = q.n_tokens;
		llm_gen_request_clear(&q);
	}
	llm_ctx_free(c);
	have_ref = true;
}

static void setup(void)
{
	ck_assert_msg(llm_model_load(&model, model_path) == 0, "%s", llm_errmsg());
	ck_assert_msg(llm_tokenizer_from_gguf(&tok, model->gguf) == 0, "%s",
	              llm_errmsg());
	make_reference();
}

static void teardown(void)
{
	llm_tokenizer_free(tok);
	llm_model_free(model);
}

struct run_result {
	int32_t toks[NREQ][MAXTOK];
	int n[NREQ];
	int n_cached_total;
	uint64_t preemptions;
	int max_seqs;             /* most sequences in one step */
	struct llm_engine_metrics m;
};

static void note_step(void *user, const struct llm_step_info *si)
{
	int *most = user;
	if (si->n_seqs > *most)
		*most = si->n_seqs;
}

/* All NREQ requests submitted at once to an engine; waits for all. */
static void run_engine(struct llm_ctx *c, int max_batch, int max_prefill,
                       bool prefix, struct run_result *out)
{
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *rq[NREQ];

	memset(out, 0, sizeof(*out));
	llm_engine_params_default(&ep);
	ep.max_batch = max_batch;
	ep.max_prefill_tokens = max_prefill;
	ep.prefix_caching = prefix;
	ep.on_step = note_step;
	ep.step_user = &out->max_seqs;
	ck_assert_msg(llm_engine_new(&e, c, tok, &ep) == 0, "%s", llm_errmsg());
	/* submitted before the thread starts: all in the first plan */
	for (int r = 0; r < NREQ; r++) {
		struct llm_sreq_params sp;
		memset(&sp, 0, sizeof(sp));
		sp.prompt = prompts[r];
		sp.n_prompt = plen[r];
		greedy_params(&sp.gen);
		sp.adapter = -1;
		ck_assert_msg(llm_sreq_new(&rq[r], &sp) == 0, "%s", llm_errmsg());
		ck_assert_msg(llm_engine_submit(e, rq[r]) == 0, "%s", llm_errmsg());
	}
	ck_assert_int_eq(llm_engine_start(e), 0);
	for (int r = 0; r < NREQ; r++) {
		struct llm_sreq_snap s;
		while (!llm_sreq_wait(rq[r], (size_t)-1, MAXTOK + 1, 5.0))
			;
		ck_assert_int_eq(llm_sreq_snapshot(rq[r], 0, 0, &s), 0);
		ck_assert(s.done);
		ck_assert_msg(s.error == 0, "request %d: %s", r, s.errmsg);
		ck_assert(s.n_tokens <= MAXTOK);
		memcpy(out->toks[r], s.tokens, s.n_tokens * sizeof(int32_t));
		out->n[r] = s.n_tokens;
		out->n_cached_total += s.n_cached;
		llm_sreq_snap_free(&s);
		llm_sreq_release(rq[r]);
	}
	llm_engine_stop(e, true);
	llm_engine_metrics(e, &out->m);
	out->preemptions = out->m.preemptions;
	llm_engine_free(e);
}

static void expect_reference(const struct run_result *res, const char *what)
{
	for (int r = 0; r < NREQ; r++) {
		ck_assert_msg(res->n[r] == ref_n[r], "%s: request %d: %d tokens, alone %d",
		              what, r, res->n[r], ref_n[r]);
		for (int i = 0; i < ref_n[r]; i++)
			ck_assert_msg(res->toks[r][i] == ref_toks[r][i], "%s: request %d: "
			              "token %d is %d, alone %d", what, r, i, res->toks[r][i],
			              ref_toks[r][i]);
	}
}

/* ---------------------------------------------------------------- outputs */

START_TEST(full_batch_equals_alone)
{
	struct run_result *res = malloc(sizeof(*res));
	struct llm_ctx *c = new_ctx(NREQ, 0);
	run_engine(c, NREQ, 4096, false, res);
	expect_reference(res, "batch of 32");
	ck_assert_int_eq(res->m.requests_done, NREQ);
	ck_assert_int_eq(res->n_cached_total, 0);
	/* the batch really was full at some point */
	ck_assert_int_eq(res->max_seqs, NREQ);
	llm_ctx_free(c);
	free(res);
}
END_TEST

START_TEST(chunked_prefill_equals_alone)
{
	struct run_result *res = malloc(sizeof(*res));
	struct llm_ctx *c = new_ctx(NREQ, 0);
	run_engine(c, NREQ, 7, false, res);
	expect_reference(res, "prefill chunks of 7");
	llm_ctx_free(c);
	free(res);
}
END_TEST

START_TEST(prefix_caching_equals_alone)
{
	struct run_result *res = malloc(sizeof(*res));
	struct llm_ctx *c = new_ctx(NREQ, 0);
	/* chunks of 16 so the shared prefix is registered before most of the
	 * requests reach it */
	run_engine(c, NREQ, 16, true, res);
	expect_reference(res, "prefix caching, chunks of 16");
	/* the shared prefix's full blocks are computed once: every other
	 * request that shares it takes them */
	ck_assert_int_eq(res->n_cached_total, (NREQ / 2 - 1) * (PREFIX / 16 * 16));
	ck_assert(res->m.prompt_tokens_cached > 0);
	ck_assert(res->m.prefix_hits > 0);
	llm_ctx_free(c);
	free(res);
}
END_TEST

START_TEST(preemption_equals_alone)
{
	struct run_result *res = malloc(sizeof(*res));
	/* 20 blocks of 16 positions for 32 requests of up to 110 positions */
	struct llm_ctx *c = new_ctx(NREQ, 20);
	for (int prefix = 0; prefix < 2; prefix++) {
		run_engine(c, NREQ, 32, prefix, res);
		expect_reference(res, prefix ? "tiny KV, prefix caching" : "tiny KV");
		ck_assert_msg(res->preemptions > 0, "no preemption with 20 blocks");
		ck_assert_int_eq(llm_kv_n_free_blocks(llm_ctx_kv(c)), 20);
	}
	llm_ctx_free(c);
	free(res);
}
END_TEST

/* ---------------------------------------------------------------- engine */

START_TEST(cancel_frees_blocks)
{
	struct llm_ctx *c = new_ctx(4, 0);
	struct llm_kvcache *kv = llm_ctx_kv(c);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *r;
	struct llm_sreq_params sp;
	struct llm_sreq_snap s;

	llm_engine_params_default(&ep);
	ep.prefix_caching = false;
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	ck_assert_int_eq(llm_engine_start(e), 0);
	memset(&sp, 0, sizeof(sp));
	sp.prompt = prompts[0];
	sp.n_prompt = plen[0];
	llm_gen_params_default(&sp.gen);
	sp.gen.max_tokens = -1;
	sp.gen.ignore_eos = true;
	sp.adapter = -1;
	ck_assert_int_eq(llm_sreq_new(&r, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, r), 0);
	ck_assert(llm_sreq_wait(r, 0, 2, 10.0));
	ck_assert_int_lt(llm_kv_n_free_blocks(kv), llm_kv_n_blocks(kv));
	llm_sreq_cancel(r);
	while (!llm_sreq_wait(r, (size_t)-1, 1 << 30, 5.0))
		;
	ck_assert_int_eq(llm_sreq_snapshot(r, 0, 0, &s), 0);
	ck_assert(s.done);
	ck_assert_int_eq(s.error, LLM_ECANCELED);
	ck_assert_int_lt(s.n_tokens, 200);
	llm_sreq_snap_free(&s);
	/* freed by the engine at once, not at stop */
	double t0 = llm_time_now();
	while (llm_engine_pending(e) > 0 && llm_time_now() - t0 < 5)
		usleep(1000);
	ck_assert_int_eq(llm_engine_pending(e), 0);
	struct llm_engine_metrics m;
	llm_engine_metrics(e, &m);
	ck_assert_int_eq(m.requests_canceled, 1);
	ck_assert_int_eq(m.kv_used, 0);
	llm_engine_stop(e, true);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), llm_kv_n_blocks(kv));
	llm_sreq_release(r);
	llm_engine_free(e);
	llm_ctx_free(c);
}
END_TEST

START_TEST(queue_limit_and_bad_requests)
{
	struct llm_ctx *c = new_ctx(4, 0);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *r[4];
	struct llm_sreq_params sp;
	int32_t bad[2] = { 1, 99999 };

	llm_engine_params_default(&ep);
	ep.max_queue = 2;
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	memset(&sp, 0, sizeof(sp));
	sp.prompt = prompts[1];
	sp.n_prompt = plen[1];
	greedy_params(&sp.gen);
	sp.adapter = -1;
	/* not started: requests stay queued */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(llm_sreq_new(&r[i], &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, r[0]), 0);
	ck_assert_int_eq(llm_engine_submit(e, r[1]), 0);
	ck_assert_int_eq(llm_engine_submit(e, r[2]), LLM_ENOMEM);
	ck_assert_int_eq(llm_engine_submit(e, r[0]), LLM_EINVAL);
	sp.prompt = bad;
	sp.n_prompt = 2;
	ck_assert_int_eq(llm_sreq_new(&r[3], &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, r[3]), LLM_EINVAL);
	llm_sreq_release(r[3]);
	sp.n_prompt = 0;
	ck_assert_int_eq(llm_sreq_new(&r[3], &sp), LLM_EINVAL);
	struct llm_engine_metrics m;
	llm_engine_metrics(e, &m);
	ck_assert_int_eq(m.requests_rejected, 1);
	ck_assert_int_eq(llm_engine_start(e), 0);
	llm_engine_stop(e, true);   /* drains the two */
	for (int i = 0; i < 2; i++) {
		struct llm_sreq_snap s;
		ck_assert_int_eq(llm_sreq_snapshot(r[i], 0, 0, &s), 0);
		ck_assert(s.done && s.error == 0 && s.n_tokens > 0);
		llm_sreq_snap_free(&s);
	}
	ck_assert_int_eq(llm_engine_submit(e, r[2]), LLM_ECANCELED);
	for (int i = 0; i < 3; i++)
		llm_sreq_release(r[i]);
	llm_engine_free(e);
	llm_ctx_free(c);
}
END_TEST

static Suite *sched_suite(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("engine");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, full_batch_equals_alone);
	tcase_add_test(tc, chunked_prefill_equals_alone);
	tcase_add_test(tc, prefix_caching_equals_alone);
	tcase_add_test(tc, preemption_equals_alone);
	tcase_add_test(tc, cancel_frees_blocks);
	tcase_add_test(tc, queue_limit_and_bad_requests);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	model_path = test_data(STORIES260K);
	return test_run(sched_suite()) ? 1 : 0;
}
