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
#include <stdatomic.h>
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
	/* metrics: every request observed once, every token counted */
	uint64_t toks = 0, prompt = 0;
	for (int r = 0; r < NREQ; r++) {
		toks += res->n[r];
		prompt += plen[r];
	}
	ck_assert_uint_eq(res->m.gen_tokens, toks);
	ck_assert_uint_eq(res->m.prompt_tokens, prompt);
	ck_assert_uint_eq(res->m.ttft.total, NREQ);
	ck_assert_uint_eq(res->m.e2e.total, NREQ);
	ck_assert_uint_eq(res->m.queue_time.total, NREQ);
	ck_assert_uint_eq(res->m.requests_submitted, NREQ);
	ck_assert_int_eq(res->m.running, 0);
	ck_assert_int_eq(res->m.waiting, 0);
	ck_assert(res->m.t_decode > 0 && res->m.t_busy >= res->m.t_decode);
	ck_assert(llm_hist_quantile(&res->m.ttft, 0.5) <= llm_hist_quantile(&res->m.ttft, 0.99));
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



/*
 * Seeded sampling and stop strings through the engine: a request beside
 * seven others gives llm_generate's text for it alone, streamed in pieces
 * (wait / snapshot from offsets) that add up to the final text; with a
 * stop string taken from that text, the text ends just before it.
 */
static atomic_int notified;

static void count_notify(void *user, struct llm_sreq *r)
{
	(void)r;
	atomic_fetch_add((atomic_int *)user, 1);
}

START_TEST(sampled_text_streams_like_alone)
{
	struct llm_ctx *c = new_ctx(8, 0);
	int32_t *prompt;
	int n_prompt;
	const char *story = "Once upon a time, there was a little girl named Lily.";
	ck_assert_int_eq(llm_tokenize(tok, story, strlen(story), true, false, &prompt,
	                              &n_prompt), 0);
	for (int pass = 0; pass < 2; pass++) {
		struct llm_gen_request alone;
		struct llm_gen_params g;
		llm_gen_params_default(&g);
		g.sampling.temperature = 0.9f;
		g.sampling.seed = 7;
		g.max_tokens = 60;
		g.ignore_eos = true;
		char stop[8] = "";
		if (pass == 1) {
			/* a stop string from the middle of the first pass's text */
			memset(&alone, 0, sizeof(alone));
			alone.prompt = prompt;
			alone.n_prompt = n_prompt;
			alone.params = g;
			ck_assert_int_eq(llm_generate(c, tok, &alone, 1, NULL, NULL, NULL), 0);
			ck_assert(alone.text_len > 40);
			memcpy(stop, alone.text + alone.text_len / 2, 3);
			llm_gen_request_clear(&alone);
			g.stop[0] = stop;
			g.n_stop = 1;
		}
		memset(&alone, 0, sizeof(alone));
		alone.prompt = prompt;
		alone.n_prompt = n_prompt;
		alone.params = g;
		ck_assert_int_eq(llm_generate(c, tok, &alone, 1, NULL, NULL, NULL), 0);
		if (pass == 1) {
			ck_assert_int_eq(alone.finish, LLM_FINISH_STOP);
			ck_assert(!strstr(alone.text, stop));
		}

		struct llm_engine_params ep;
		struct llm_engine *e;
		struct llm_sreq *rq[8];
		llm_engine_params_default(&ep);
		ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
		for (int i = 0; i < 8; i++) {
			struct llm_sreq_params sp;
			memset(&sp, 0, sizeof(sp));
			sp.prompt = i == 3 ? prompt : prompts[i];
			sp.n_prompt = i == 3 ? n_prompt : plen[i];
			sp.gen = g;
			sp.gen.sampling.seed = i == 3 ? 7 : 100 + i;
			sp.adapter = -1;
			if (i == 3) {
				sp.notify = count_notify;
				sp.user = &notified;
			}
			ck_assert_int_eq(llm_sreq_new(&rq[i], &sp), 0);
			ck_assert_int_eq(llm_engine_submit(e, rq[i]), 0);
		}
		atomic_store(&notified, 0);
		ck_assert_int_eq(llm_engine_start(e), 0);
		/* stream request 3 */
		char text[4096];
		size_t got = 0;
		int toks = 0, pieces = 0;
		for (;;) {
			struct llm_sreq_snap s;
			llm_sreq_wait(rq[3], got, toks, 5.0);
			ck_assert_int_eq(llm_sreq_snapshot(rq[3], got, toks, &s), 0);
			ck_assert_uint_eq(s.text_total, got + s.text_len);
			ck_assert(got + s.text_len < sizeof(text));
			memcpy(text + got, s.text, s.text_len);
			got += s.text_len;
			for (int k = 0; k < s.n_new; k++)
				ck_assert_int_eq(s.tokens[k], alone.tokens[toks + k]);
			toks += s.n_new;
			pieces += s.text_len > 0;
			bool done = s.done;
			if (done) {
				ck_assert_int_eq(s.error, 0);
				ck_assert_int_eq(s.finish, alone.finish);
			}
			llm_sreq_snap_free(&s);
			if (done)
				break;
		}
		text[got] = 0;
		ck_assert_int_eq(toks, alone.n_tokens);
		ck_assert_str_eq(text, alone.text);
		/* the engine published the text as it grew, not once at the end
		 * (how many pieces the reader saw depends on how the threads were
		 * scheduled) */
		ck_assert_int_gt(atomic_load(&notified), 1);
		(void)pieces;
		llm_engine_stop(e, true);
		for (int i = 0; i < 8; i++)
			llm_sreq_release(rq[i]);
		llm_engine_free(e);
		llm_gen_request_clear(&alone);
	}
	free(prompt);
	llm_ctx_free(c);
}
END_TEST

/* Stopping without draining ends what is in flight as canceled. */
START_TEST(stop_without_drain_cancels)
{
	struct llm_ctx *c = new_ctx(4, 0);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *r[3];
	llm_engine_params_default(&ep);
	ep.max_batch = 1;
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	ck_assert_int_eq(llm_engine_start(e), 0);
	for (int i = 0; i < 3; i++) {
		struct llm_sreq_params sp;
		memset(&sp, 0, sizeof(sp));
		sp.prompt = prompts[i];
		sp.n_prompt = plen[i];
		greedy_params(&sp.gen);
		sp.gen.max_tokens = 200;
		sp.gen.ignore_eos = true;
		sp.adapter = -1;
		ck_assert_int_eq(llm_sreq_new(&r[i], &sp), 0);
		ck_assert_int_eq(llm_engine_submit(e, r[i]), 0);
	}
	ck_assert(llm_sreq_wait(r[0], (size_t)-1, 1, 10));
	llm_engine_stop(e, false);
	for (int i = 0; i < 3; i++) {
		struct llm_sreq_snap s;
		ck_assert_int_eq(llm_sreq_snapshot(r[i], 0, 0, &s), 0);
		ck_assert(s.done);
		/* the first may have finished in the meantime; the last waited
		 * behind two of 200 tokens in one slot */
		if (i == 2 || s.error)
			ck_assert_int_eq(s.error, LLM_ECANCELED);
		else
			ck_assert_int_eq(s.n_tokens, 200);
		llm_sreq_snap_free(&s);
		llm_sreq_release(r[i]);
	}
	ck_assert_int_eq(llm_engine_pending(e), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(llm_ctx_kv(c)), llm_kv_n_blocks(llm_ctx_kv(c)));
	llm_engine_free(e);
	llm_ctx_free(c);
}
END_TEST


/* Requests that outgrow the whole cache end at its size (finish
 * "length"), one after the other, instead of failing or looping. */
START_TEST(outgrowing_the_cache_ends_at_its_size)
{
	struct llm_ctx *c = new_ctx(4, 4);   /* 64 positions in all */
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *r[2];
	llm_engine_params_default(&ep);
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	for (int i = 0; i < 2; i++) {
		struct llm_sreq_params sp;
		memset(&sp, 0, sizeof(sp));
		sp.prompt = prompts[1 + 2 * i];
		sp.n_prompt = plen[1 + 2 * i];
		greedy_params(&sp.gen);
		sp.gen.max_tokens = 150;
		sp.gen.ignore_eos = true;
		sp.adapter = -1;
		ck_assert_int_lt(sp.n_prompt, 40);
		ck_assert_int_eq(llm_sreq_new(&r[i], &sp), 0);
		ck_assert_int_eq(llm_engine_submit(e, r[i]), 0);
	}
	ck_assert_int_eq(llm_engine_start(e), 0);
	llm_engine_stop(e, true);
	for (int i = 0; i < 2; i++) {
		struct llm_sreq_snap s;
		ck_assert_int_eq(llm_sreq_snapshot(r[i], 0, 0, &s), 0);
		ck_assert(s.done && s.error == 0);
		ck_assert_int_eq(s.finish, LLM_FINISH_LENGTH);
		/* 64 positions computed, the last one's token sampled */
		ck_assert_int_eq(s.n_prompt + s.n_tokens, 65);
		llm_sreq_snap_free(&s);
		llm_sreq_release(r[i]);
	}
	llm_engine_free(e);
	llm_ctx_free(c);
}
END_TEST

/* ---------------------------------------------------------------- policies */

static struct llm_policy *policy(const char *name, struct llm_policy_params *q)
{
	struct llm_policy *p;
	ck_assert_msg(llm_policy_new(&p, name, q) == 0, "%s", llm_errmsg());
	return p;
}

/* A view of an engine with 32 slots, 100 blocks, nothing running. */
static struct llm_sched_view view(double now)
{
	struct llm_sched_view v;
	memset(&v, 0, sizeof(v));
	v.now = now;
	v.wall = 1e9;
	v.max_batch = 32;
	v.max_prefill = 512;
	v.kv_blocks = 100;
	v.kv_free = 100;
	return v;
}

static struct llm_sched_plan plan_of(struct llm_policy *p,
                                     const struct llm_sched_view *v)
{
	struct llm_sched_plan pl = { .max_running = v->max_batch,
	                             .admit = v->max_batch,
	                             .prefill_tokens = v->max_prefill };
	p->ops->plan(p, v, &pl);
	return pl;
}

START_TEST(policy_names_and_bad_params)
{
	struct llm_policy_params q;
	struct llm_policy *p;
	int n = 0;
	for (const char *const *nm = llm_policy_names(); *nm; nm++, n++) {
		p = policy(*nm, NULL);
		ck_assert_str_eq(p->ops->name, *nm);
		llm_policy_free(p);
	}
	ck_assert_int_eq(n, 8);
	ck_assert_int_eq(llm_policy_new(&p, "fastest", NULL), LLM_EINVAL);
	llm_policy_params_default(&q);
	q.kv_low = 0.95;   /* above kv_high */
	ck_assert_int_eq(llm_policy_new(&p, "load", &q), LLM_EINVAL);
	llm_policy_params_default(&q);
	q.hybrid = "priority,nonsense";
	ck_assert_int_eq(llm_policy_new(&p, "hybrid", &q), LLM_EINVAL);
	ck_assert(strstr(llm_errmsg(), "nonsense"));
}
END_TEST

START_TEST(static_runs_batches_to_completion)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.max_batch = 8;
	q.batch_timeout_ms = 100;
	struct llm_policy *p = policy("static", &q);
	struct llm_sched_view v = view(10);
	struct llm_sched_plan pl;

	v.n_waiting = 3;
	v.oldest_wait = 0.03;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.admit, 0);                 /* gathers a batch */
	ck_assert(fabs(pl.wake - 10.07) < 1e-9);       /* until the timeout */
	v.oldest_wait = 0.1;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.admit, 8);                 /* timeout: a partial batch */
	v.oldest_wait = 0;
	v.n_waiting = 8;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.admit, 8);                 /* a full batch */
	ck_assert_int_eq(pl.max_running, 8);
	v.n_running = 1;
	v.n_waiting = 40;
	v.oldest_wait = 5;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.admit, 0);                 /* never joins a running batch */
	llm_policy_free(p);
}
END_TEST

START_TEST(window_waits_or_admits_at_min_batch)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.min_batch = 4;
	q.window_ms = 50;
	q.max_batch = 16;
	struct llm_policy *p = policy("window", &q);
	struct llm_sched_view v = view(1);
	struct llm_sched_plan pl;

	v.n_waiting = 3;
	v.oldest_wait = 0.02;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.admit, 0);
	ck_assert(fabs(pl.wake - 1.03) < 1e-9);
	v.oldest_wait = 0.05;
	pl = plan_of(p, &v);
	ck_assert_int_gt(pl.admit, 0);                 /* the window passed */
	v.n_waiting = 4;
	v.oldest_wait = 0;
	pl = plan_of(p, &v);
	ck_assert_int_gt(pl.admit, 0);                 /* min_batch reached */
	v.n_running = 14;
	v.n_waiting = 10;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.max_running, 16);
	ck_assert_int_le(pl.admit, 2);                 /* never above max_batch */
	llm_policy_free(p);
}
END_TEST

START_TEST(load_shrinks_under_pressure)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.min_batch = 2;
	struct llm_policy *p = policy("load", &q);
	struct llm_sched_view v = view(0);
	struct llm_sched_plan pl;
	int last = 32;

	v.n_running = 32;
	v.kv_free = 5;                                 /* 95% used */
	for (int i = 0; i < 12; i++) {
		v.now = 0.1 * (i + 1);
		pl = plan_of(p, &v);
		ck_assert_int_le(pl.max_running, last);
		last = pl.max_running;
		v.n_running = last;
	}
	ck_assert_int_eq(last, 2);                     /* down to min_batch */
	v.kv_free = 90;                                /* pressure gone: grows */
	for (int i = 0; i < 5; i++) {
		v.now += 0.1;
		pl = plan_of(p, &v);
	}
	ck_assert_int_eq(pl.max_running, 7);
	v.cpu_pressure = 0.5;                          /* CPU taken by others */
	v.now += 0.1;
	v.n_running = 7;
	pl = plan_of(p, &v);
	ck_assert_int_eq(pl.max_running, 5);
	llm_policy_free(p);
}
END_TEST

START_TEST(adaptive_follows_tpot_target)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.min_batch = 2;
	q.target_tpot_ms = 50;
	struct llm_policy *p = policy("adaptive", &q);
	struct llm_sched_view v = view(0);
	struct llm_sched_plan pl;
	struct llm_step_info si;

	v.n_waiting = 20;
	memset(&si, 0, sizeof(si));
	/* fast steps with requests waiting: the cap grows */
	int c0 = plan_of(p, &v).max_running;
	for (int i = 0; i < 10; i++) {
		pl = plan_of(p, &v);
		si.n_seqs = si.n_tokens = pl.max_running;
		si.t_step = 0.010;
		p->ops->step(p, &si);
	}
	int c1 = plan_of(p, &v).max_running;
	ck_assert_int_gt(c1, c0);
	/* slow steps: it shrinks */
	for (int i = 0; i < 3; i++) {
		si.n_seqs = si.n_tokens = c1;
		si.t_step = 0.080;
		p->ops->step(p, &si);
	}
	ck_assert_int_lt(plan_of(p, &v).max_running, c1);
	/* prompt tokens cost 1 ms each: the budget keeps steps near the target */
	si.t_step = 0.010;
	si.n_seqs = 2;
	si.n_tokens = 2;
	si.n_prefill = 0;
	for (int i = 0; i < 20; i++)
		p->ops->step(p, &si);
	si.n_tokens = 102;
	si.n_prefill = 100;
	si.t_step = 0.110;
	for (int i = 0; i < 20; i++)
		p->ops->step(p, &si);
	pl = plan_of(p, &v);
	ck_assert_int_lt(pl.prefill_tokens, 60);
	ck_assert_int_gt(pl.prefill_tokens, 20);
	/* every step carrying prompt tokens (steady arrivals): the cap
	 * follows the decoding part of the step, so it still grows while
	 * that stays fast, and shrinks when it goes over */
	int c2 = plan_of(p, &v).max_running;
	for (int i = 0; i < 10; i++) {
		pl = plan_of(p, &v);
		si.n_seqs = pl.max_running + 1;
		si.n_prefill = 20;
		si.n_tokens = pl.max_running + 20;
		si.t_step = 0.010 + 0.020;   /* 20 prompt tokens at 1 ms */
		p->ops->step(p, &si);
	}
	int c3 = plan_of(p, &v).max_running;
	ck_assert_int_gt(c3, c2);
	for (int i = 0; i < 3; i++) {
		si.n_seqs = c3 + 1;
		si.n_tokens = c3 + 20;
		si.t_step = 0.080 + 0.020;
		p->ops->step(p, &si);
	}
	ck_assert_int_lt(plan_of(p, &v).max_running, c3);
	llm_policy_free(p);
}
END_TEST

START_TEST(priority_ranks_and_ages)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.aging_s = 0.05;
	struct llm_policy *p = policy("priority", &q);
	struct llm_ctx *c = new_ctx(2, 0);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *lo, *hi;
	struct llm_sreq_params sp;

	llm_engine_params_default(&ep);
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);   /* not started */
	memset(&sp, 0, sizeof(sp));
	sp.prompt = prompts[1];
	sp.n_prompt = plen[1];
	greedy_params(&sp.gen);
	sp.adapter = -1;
	ck_assert_int_eq(llm_sreq_new(&lo, &sp), 0);
	sp.priority = 3;
	ck_assert_int_eq(llm_sreq_new(&hi, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, lo), 0);
	ck_assert_int_eq(llm_engine_submit(e, hi), 0);
	double now = llm_sreq_arrival(hi);
	/* arrived together: the higher class ranks first, by its classes */
	ck_assert(p->ops->rank(p, hi, now) >= p->ops->rank(p, lo, now) + 2.9);
	llm_sreq_release(lo);
	llm_sreq_release(hi);
	/* a low one that waited 0.3 s gained 6 classes: it ranks above a
	 * class-3 request arriving now */
	sp.priority = 0;
	ck_assert_int_eq(llm_sreq_new(&lo, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, lo), 0);
	usleep(300000);
	sp.priority = 3;
	ck_assert_int_eq(llm_sreq_new(&hi, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, hi), 0);
	now = llm_sreq_arrival(hi);
	ck_assert(p->ops->rank(p, lo, now) > p->ops->rank(p, hi, now) + 2);
	struct llm_sched_view v = view(now);
	ck_assert(plan_of(p, &v).preempt);
	llm_engine_free(e);
	llm_sreq_release(lo);
	llm_sreq_release(hi);
	llm_ctx_free(c);
	llm_policy_free(p);
}
END_TEST

/* One slot: a long low-priority request runs; a high one arrives and
 * preempts it, finishes first; the low one resumes with the same tokens
 * as when run alone. */
START_TEST(priority_preempts_in_engine)
{
	struct llm_ctx *c = new_ctx(2, 0);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *lo, *hi;
	struct llm_sreq_params sp;
	struct llm_sreq_snap a, b;
	struct llm_gen_request alone;

	memset(&sp, 0, sizeof(sp));
	sp.prompt = prompts[3];
	sp.n_prompt = plen[3];
	greedy_params(&sp.gen);
	sp.gen.max_tokens = 200;
	sp.gen.ignore_eos = true;
	sp.adapter = -1;
	memset(&alone, 0, sizeof(alone));
	alone.prompt = sp.prompt;
	alone.n_prompt = sp.n_prompt;
	alone.params = sp.gen;
	ck_assert_int_eq(llm_generate(c, tok, &alone, 1, NULL, NULL, NULL), 0);

	llm_engine_params_default(&ep);
	ep.max_batch = 1;
	ck_assert_int_eq(llm_policy_new(&ep.policy, "priority", NULL), 0);
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	ck_assert_int_eq(llm_engine_start(e), 0);
	ck_assert_int_eq(llm_sreq_new(&lo, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, lo), 0);
	ck_assert(llm_sreq_wait(lo, (size_t)-1, 2, 10));
	sp.priority = 5;
	sp.prompt = prompts[4];
	sp.n_prompt = plen[4];
	sp.gen.max_tokens = MAXTOK;
	sp.gen.ignore_eos = false;
	ck_assert_int_eq(llm_sreq_new(&hi, &sp), 0);
	ck_assert_int_eq(llm_engine_submit(e, hi), 0);
	llm_engine_stop(e, true);
	ck_assert_int_eq(llm_sreq_snapshot(lo, 0, 0, &a), 0);
	ck_assert_int_eq(llm_sreq_snapshot(hi, 0, 0, &b), 0);
	ck_assert(a.done && b.done && !a.error && !b.error);
	ck_assert_int_ge(a.n_preempted, 1);
	ck_assert(b.t_total + llm_sreq_arrival(hi) < a.t_total + llm_sreq_arrival(lo));
	ck_assert_int_eq(a.n_tokens, 200);
	ck_assert_mem_eq(a.tokens, alone.tokens, 200 * sizeof(int32_t));
	ck_assert_int_eq(b.n_tokens, ref_n[4]);
	ck_assert_mem_eq(b.tokens, ref_toks[4], b.n_tokens * sizeof(int32_t));
	llm_gen_request_clear(&alone);
	llm_sreq_snap_free(&a);
	llm_sreq_snap_free(&b);
	llm_sreq_release(lo);
	llm_sreq_release(hi);
	llm_engine_free(e);
	llm_ctx_free(c);
}
END_TEST

START_TEST(predictive_forecasts_from_history)
{
	char path[] = "/tmp/test-sched-historyXXXXXX";
	int fd = mkstemp(path);
	ck_assert(fd >= 0);
	FILE *f = fdopen(fd, "w");
	/* a day of 24 buckets: 0.5 requests/s, 50/s at 10:00 */
	fprintf(f, "llmkit-predictive 1\nperiod 86400\nbuckets 24\nepoch 0\n");
	for (int i = 0; i < 24; i++)
		fprintf(f, "%g 3\n", i == 10 ? 50.0 : 0.5);
	fclose(f);

	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.buckets = 24;
	q.min_batch = 4;
	q.history = path;
	struct llm_policy *p = policy("predictive", &q);
	struct llm_sched_view v = view(0);
	v.arrival_rate = 0.5;
	v.service_time = 2;
	v.blocks_per_req = 4;

	v.wall = 86400.0 * 100 + 3 * 3600;             /* 03:00: quiet */
	struct llm_sched_plan quiet = plan_of(p, &v);
	ck_assert_int_eq(quiet.max_running, 4);
	ck_assert_int_eq(quiet.kv_reserve, 0);
	v.wall = 86400.0 * 100 + 10 * 3600 - 300;      /* 09:55: the surge is due */
	struct llm_sched_plan ahead = plan_of(p, &v);
	ck_assert_int_eq(ahead.max_running, 32);       /* sized before it comes */
	ck_assert_int_gt(ahead.kv_reserve, 0);
	ck_assert_int_le(ahead.kv_reserve, 50);
	llm_policy_free(p);

	/* learned arrivals are saved and read back */
	remove(path);
	p = policy("predictive", &q);
	double t0 = 86400.0 * 7 + 5 * 3600;           /* 05:00 */
	for (int i = 0; i < 3600; i++)
		p->ops->arrival(p, NULL, i, t0 + i * 0.5);   /* 2/s for half an hour */
	v.wall = t0 + 3600 + 1800;                      /* 06:30 */
	(void)plan_of(p, &v);
	ck_assert_int_eq(llm_policy_save(p), 0);
	llm_policy_free(p);
	p = policy("predictive", &q);
	v.arrival_rate = 0.1;
	v.wall = 86400.0 * 8 + 5 * 3600 - 60;           /* next day, 04:59 */
	ck_assert_int_gt(plan_of(p, &v).kv_reserve, 0);
	v.wall = 86400.0 * 8 + 12 * 3600;               /* noon: nothing known */
	ck_assert_int_eq(plan_of(p, &v).kv_reserve, 0);
	llm_policy_free(p);

	/* a surge is sized with the service time its bucket had (a third
	 * column of the history), not the quiet hour's */
	FILE *g = fopen(path, "w");
	ck_assert(g != NULL);
	fprintf(g, "llmkit-predictive 1\nperiod 86400\nbuckets 24\nepoch 0\n");
	for (int i = 0; i < 24; i++)
		fprintf(g, i == 10 ? "4 3 3\n" : "0.5 3\n");   /* old lines: two columns */
	fclose(g);
	p = policy("predictive", &q);
	v.arrival_rate = 0.5;
	v.service_time = 0.5;
	v.wall = 86400.0 * 100 + 10 * 3600 - 300;      /* 09:55 */
	ck_assert_int_eq(plan_of(p, &v).max_running, 15);  /* 1.25 x 4/s x 3 s */
	llm_policy_free(p);
	/* and learned: 05:00-06:00 busy (3 s per request), saved, read back */
	remove(path);
	p = policy("predictive", &q);
	t0 = 86400.0 * 7 + 5 * 3600;
	v.service_time = 3;
	for (int i = 0; i < 14400; i++) {
		p->ops->arrival(p, NULL, i, t0 + i * 0.25);   /* 4/s for the hour */
		v.wall = t0 + i * 0.25;
		if (i % 240 == 0)
			(void)plan_of(p, &v);
	}
	v.service_time = 0.5;
	v.wall = t0 + 3600 + 600;                       /* 06:10: quiet */
	(void)plan_of(p, &v);
	ck_assert_int_eq(llm_policy_save(p), 0);
	llm_policy_free(p);
	p = policy("predictive", &q);
	v.arrival_rate = 0.1;
	v.wall = 86400.0 * 8 + 5 * 3600 - 60;           /* next day, 04:59 */
	/* saving folded the seasons up to today's date into the rates (the
	 * hour's 4/s halved to 2/s), the service time stays 3 s: the cap is
	 * 1.25 x 2/s x 3 s, where the quiet hour's 0.5 s would give 4 */
	struct llm_sched_plan pl = plan_of(p, &v);
	ck_assert_int_gt(pl.kv_reserve, 0);
	ck_assert_int_eq(pl.max_running, 8);
	llm_policy_free(p);

	/* a history made for other buckets is refused, naming the file */
	q.buckets = 48;
	struct llm_policy *bad;
	ck_assert_int_eq(llm_policy_new(&bad, "predictive", &q), LLM_EFORMAT);
	ck_assert(strstr(llm_errmsg(), path));
	remove(path);
}
END_TEST

/* An idle engine keeps asking its policy: with a history that forecasts a
 * surge, the cap and the KV reserve are raised before any request. */
static void idle_engine_plan(double rate, struct llm_engine_metrics *m)
{
	char path[] = "/tmp/test-sched-idleXXXXXX";
	int fd = mkstemp(path);
	ck_assert(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "llmkit-predictive 1\nperiod 3600\nbuckets 60\nepoch 0\n");
	for (int i = 0; i < 60; i++)
		fprintf(f, "%g 2\n", rate);
	fclose(f);

	struct llm_ctx *c = new_ctx(8, 0);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	q.period_s = 3600;
	q.buckets = 60;
	q.min_batch = 2;
	q.history = path;
	llm_engine_params_default(&ep);
	ep.max_batch = 8;
	ck_assert_int_eq(llm_policy_new(&ep.policy, "predictive", &q), 0);
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	ck_assert_int_eq(llm_engine_start(e), 0);
	usleep(700 * 1000);
	llm_engine_metrics(e, m);
	llm_engine_stop(e, false);
	llm_engine_free(e);
	llm_ctx_free(c);
	remove(path);
}

START_TEST(predictive_engine_presizes_while_idle)
{
	struct llm_engine_metrics m;
	idle_engine_plan(40, &m);          /* a surge is forecast */
	ck_assert_int_eq(m.running + m.waiting, 0);
	ck_assert_int_eq(m.cap, 8);
	ck_assert_int_gt(m.kv_reserve, 0);
	idle_engine_plan(0, &m);           /* nothing is */
	ck_assert_int_eq(m.cap, 2);
	ck_assert_int_eq(m.kv_reserve, 0);
}
END_TEST

START_TEST(hybrid_composes)
{
	struct llm_policy_params q;
	llm_policy_params_default(&q);
	struct llm_policy *p = policy("hybrid", &q);   /* priority,window,load */
	struct llm_sched_view v = view(5);
	ck_assert(p->ops->rank != NULL);
	v.n_waiting = 1;
	v.oldest_wait = 0.01;
	struct llm_sched_plan pl = plan_of(p, &v);
	ck_assert(pl.preempt);                         /* priority */
	ck_assert_int_eq(pl.admit, 0);                 /* window holds */
	ck_assert(pl.wake > 5);
	v.n_waiting = 8;
	v.n_running = 32;
	v.kv_free = 2;
	v.now = 6;
	pl = plan_of(p, &v);
	ck_assert_int_lt(pl.max_running, 32);          /* load shrinks */
	llm_policy_free(p);
	q.hybrid = "window";
	p = policy("hybrid", &q);
	ck_assert(p->ops->rank == NULL);               /* nobody ranks: FCFS */
	llm_policy_free(p);
}
END_TEST

struct step_log {
	int prev_running;
	int bad_admits;       /* static: admitted beside running requests */
	int min_cap;
	int steps;
};

static void log_step(void *user, const struct llm_step_info *si)
{
	struct step_log *l = user;
	if (si->n_admitted > 0 && l->prev_running > 0)
		l->bad_admits++;
	l->prev_running = si->n_running;
	if (si->n_seqs > 0 && si->cap < l->min_cap)
		l->min_cap = si->cap;
	l->steps++;
}

/* NREQ requests through an engine under a policy; the step log. */
static void run_policy(const char *name, struct llm_policy_params *q, int kv_blocks,
                       struct step_log *log, struct llm_sreq_snap *snaps,
                       int n_req, int stagger_us)
{
	struct llm_ctx *c = new_ctx(NREQ, kv_blocks);
	struct llm_engine_params ep;
	struct llm_engine *e;
	struct llm_sreq *rq[NREQ];

	memset(log, 0, sizeof(*log));
	log->min_cap = 1 << 30;
	llm_engine_params_default(&ep);
	ep.max_batch = q->max_batch;
	ep.on_step = log_step;
	ep.step_user = log;
	ck_assert_int_eq(llm_policy_new(&ep.policy, name, q), 0);
	ck_assert_int_eq(llm_engine_new(&e, c, tok, &ep), 0);
	ck_assert_int_eq(llm_engine_start(e), 0);
	for (int r = 0; r < n_req; r++) {
		struct llm_sreq_params sp;
		memset(&sp, 0, sizeof(sp));
		sp.prompt = prompts[r];
		sp.n_prompt = plen[r];
		greedy_params(&sp.gen);
		sp.gen.max_tokens = 4 + (r * 5) % 20;
		sp.adapter = -1;
		ck_assert_int_eq(llm_sreq_new(&rq[r], &sp), 0);
		ck_assert_int_eq(llm_engine_submit(e, rq[r]), 0);
		if (stagger_us)
			usleep(stagger_us);
	}
	/* all done before the stop (a draining engine no longer holds) */
	for (int r = 0; r < n_req; r++)
		while (!llm_sreq_wait(rq[r], (size_t)-1, 1 << 30, 5.0))
			;
	llm_engine_stop(e, true);
	for (int r = 0; r < n_req; r++) {
		ck_assert_int_eq(llm_sreq_snapshot(rq[r], 0, 0, &snaps[r]), 0);
		ck_assert(snaps[r].done && snaps[r].error == 0);
		llm_sreq_release(rq[r]);
	}
	llm_engine_free(e);
	llm_ctx_free(c);
}

START_TEST(static_engine_never_joins_a_batch)
{
	struct llm_policy_params q;
	struct step_log log;
	struct llm_sreq_snap s[NREQ];
	llm_policy_params_default(&q);
	q.max_batch = 4;
	q.batch_timeout_ms = 20;
	run_policy("static", &q, 0, &log, s, 12, 2000);
	ck_assert_int_eq(log.bad_admits, 0);
	ck_assert_int_eq(log.min_cap, 4);
	for (int r = 0; r < 12; r++)
		llm_sreq_snap_free(&s[r]);
}
END_TEST

START_TEST(window_engine_waits_for_its_window)
{
	struct llm_policy_params q;
	struct step_log log;
	struct llm_sreq_snap s[NREQ];
	llm_policy_params_default(&q);
	q.min_batch = 4;
	q.window_ms = 200;
	/* one request alone waits for the window */
	run_policy("window", &q, 0, &log, s, 1, 0);
	ck_assert_msg(s[0].t_queue >= 0.19, "waited %g s", s[0].t_queue);
	ck_assert_msg(s[0].t_queue < 1.0, "waited %g s", s[0].t_queue);
	llm_sreq_snap_free(&s[0]);
	/* four at once are admitted without waiting */
	run_policy("window", &q, 0, &log, s, 4, 0);
	for (int r = 0; r < 4; r++) {
		ck_assert_msg(s[r].t_queue < 0.15, "request %d waited %g s", r, s[r].t_queue);
		llm_sreq_snap_free(&s[r]);
	}
}
END_TEST

START_TEST(load_engine_shrinks_under_kv_pressure)
{
	struct llm_policy_params q;
	struct step_log log;
	struct llm_sreq_snap s[NREQ];
	llm_policy_params_default(&q);
	q.min_batch = 2;
	run_policy("load", &q, 24, &log, s, NREQ, 0);
	ck_assert_msg(log.min_cap < 32, "cap stayed %d", log.min_cap);
	for (int r = 0; r < NREQ; r++) {
		ck_assert_mem_eq(s[r].tokens, ref_toks[r], s[r].n_tokens * sizeof(int32_t));
		llm_sreq_snap_free(&s[r]);
	}
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
	tcase_add_test(tc, sampled_text_streams_like_alone);
	tcase_add_test(tc, stop_without_drain_cancels);
	tcase_add_test(tc, outgrowing_the_cache_ends_at_its_size);
	tcase_add_test(tc, priority_ranks_and_ages);
	tcase_add_test(tc, priority_preempts_in_engine);
	tcase_add_test(tc, static_engine_never_joins_a_batch);
	tcase_add_test(tc, window_engine_waits_for_its_window);
	tcase_add_test(tc, load_engine_shrinks_under_kv_pressure);
	tcase_add_test(tc, predictive_engine_presizes_while_idle);
	suite_add_tcase(s, tc);
	tc = tcase_create("policies");
	tcase_add_test(tc, policy_names_and_bad_params);
	tcase_add_test(tc, static_runs_batches_to_completion);
	tcase_add_test(tc, window_waits_or_admits_at_min_batch);
	tcase_add_test(tc, load_shrinks_under_pressure);
	tcase_add_test(tc, adaptive_follows_tpot_target);
	tcase_add_test(tc, predictive_forecasts_from_history);
	tcase_add_test(tc, hybrid_composes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	model_path = test_data(STORIES260K);
	return test_run(sched_suite()) ? 1 : 0;
}
