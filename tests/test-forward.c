/*
 * test-forward - the token-batch forward pass on stories260K: a sequence's
 * logits do not depend on what shares its batch, how the batch is split,
 * or how many threads run it; forks continue like their source; bad
 * batches are refused without touching the cache.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "testutil.h"

static struct llm_model *model;
static const char *model_path;

/* three prompts of different lengths */
static const int32_t P0[] = { 1, 403, 407, 261, 378, 30, 99, 200, 17, 44, 87, 260 };
static const int32_t P1[] = { 1, 300, 301, 302 };
static const int32_t P2[] = { 1, 511, 3, 87, 260, 300, 301, 302, 303, 304, 305,
                              306, 307, 308, 309, 310, 311, 312, 313, 314, 315 };
static const int32_t *P[] = { P0, P1, P2 };
static const int PN[] = { 12, 4, 21 };

#define NV 512

/* the suites run with an f32 cache (exact comparisons); one test swaps */
static enum llm_dtype kv_type = LLM_F32;

static struct llm_ctx *new_ctx(int threads, int n_batch)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.n_threads = threads;
	p.n_batch = n_batch;
	p.n_ctx = 128;
	p.n_seq_max = 8;
	p.kv_type = kv_type;
	ck_assert_msg(llm_ctx_new(&c, model, &p) == 0, "%s", llm_errmsg());
	return c;
}

/* Logits of every position of prompt k run alone, token by token. */
static float *alone(int k)
{
	struct llm_ctx *c = new_ctx(1, 512);
	struct llm_batch b;
	float *out = malloc(sizeof(float) * NV * PN[k]);
	int s = llm_kv_seq_new(llm_ctx_kv(c));
	llm_batch_init(&b, 1);
	for (int i = 0; i < PN[k]; i++) {
		llm_batch_clear(&b);
		llm_batch_add(&b, P[k][i], i, s, true);
		ck_assert_int_eq(llm_decode(c, &b), 0);
		memcpy(out + i * NV, llm_ctx_logits(c, 0), sizeof(float) * NV);
	}
	llm_batch_free(&b);
	llm_ctx_free(c);
	return out;
}

static double maxdiff(const float *a, const float *b, int n)
{
	double d = 0;
	for (int i = 0; i < n; i++)
		d = fmax(d, fabs((double)a[i] - b[i]));
	return d;
}

static void setup(void)
{
	ck_assert_msg(llm_model_load(&model, model_path) == 0, "%s", llm_errmsg());
}

static void teardown(void)
{
	llm_model_free(model);
}

START_TEST(model_facts)
{
	const struct llm_hparams *hp = &model->hp;
	ck_assert_int_eq(hp->n_vocab, 512);
	ck_assert_int_eq(hp->n_embd, 64);
	ck_assert_int_eq(hp->n_layer, 5);
	ck_assert_int_eq(hp->n_head, 8);
	ck_assert_int_eq(hp->n_head_kv, 4);
	ck_assert_int_eq(hp->head_dim, 8);
	ck_assert_int_eq(hp->n_ff, 172);
	ck_assert(fabsf(hp->rms_eps - 1e-5f) < 1e-9f);
	ck_assert_int_eq(hp->rope.kind, LLM_ROPE_NORM);
	ck_assert(!model->tied_output);
}
END_TEST

/*
 * All three prompts interleaved in one batch, every token asking for
 * logits, for several thread counts and batch splits: each position's
 * logits equal the one-sequence, one-token-at-a-time run.
 */
START_TEST(batched_equals_single)
{
	static const int threads[] = { 1, 2, 3 };
	static const int splits[] = { 512, 5, 1 };
	float *ref[3];
	for (int k = 0; k < 3; k++)
		ref[k] = alone(k);
	for (int ti = 0; ti < 3; ti++)
	for (int si = 0; si < 3; si++) {
		struct llm_ctx *c = new_ctx(threads[ti], splits[si]);
		struct llm_batch b;
		int seq[3], row[3][32], n = 0;
		llm_batch_init(&b, 64);
		/* a sequence id order unlike the prompt order */
		seq[2] = llm_kv_seq_new(llm_ctx_kv(c));
		seq[0] = llm_kv_seq_new(llm_ctx_kv(c));
		seq[1] = llm_kv_seq_new(llm_ctx_kv(c));
		for (int i = 0; i < 21; i++)
			for (int k = 0; k < 3; k++)
				if (i < PN[k]) {
					row[k][i] = n++;
					llm_batch_add(&b, P[k][i], i, seq[k], true);
				}
		ck_assert_int_eq(llm_decode(c, &b), 0);
		for (int k = 0; k < 3; k++)
			for (int i = 0; i < PN[k]; i++) {
				double d = maxdiff(llm_ctx_logits(c, row[k][i]),
				                   ref[k] + i * NV, NV);
				ck_assert_msg(d < 1e-4, "threads %d split %d prompt %d pos %d: "
				              "diff %g", threads[ti], splits[si], k, i, d);
			}
		llm_batch_free(&b);
		llm_ctx_free(c);
	}
	for (int k = 0; k < 3; k++)
		free(ref[k]);
}
END_TEST

/* Greedy continuation of prompt 0 decoded alone and beside others. */
START_TEST(greedy_tokens_identical_in_batch)
{
	int32_t alone_toks[40], mixed_toks[40];
	for (int pass = 0; pass < 2; pass++) {
		struct llm_ctx *c = new_ctx(2, 512);
		struct llm_batch b;
		int32_t *out = pass ? mixed_toks : alone_toks;
		int nseq = pass ? 3 : 1, seq[3], last[3], len[3];
		llm_batch_init(&b, 64);
		for (int k = 0; k < nseq; k++) {
			seq[k] = llm_kv_seq_new(llm_ctx_kv(c));
			len[k] = PN[k];
		}
		for (int k = 0; k < nseq; k++)
			for (int i = 0; i < PN[k]; i++)
				llm_batch_add(&b, P[k][i], i, seq[k], i == PN[k] - 1);
		ck_assert_int_eq(llm_decode(c, &b), 0);
		int r = 0;
		for (int k = 0; k < nseq; k++) {
			r += PN[k];
			last[k] = llm_argmax(llm_ctx_logits(c, r - 1), NV);
		}
		for (int step = 0; step < 40; step++) {
			out[step] = last[0];
			llm_batch_clear(&b);
			for (int k = 0; k < nseq; k++)
				llm_batch_add(&b, last[k], len[k]++, seq[k], true);
			ck_assert_int_eq(llm_decode(c, &b), 0);
			for (int k = 0; k < nseq; k++)
				last[k] = llm_argmax(llm_ctx_logits(c, k), NV);
		}
		llm_batch_free(&b);
		llm_ctx_free(c);
	}
	ck_assert_mem_eq(alone_toks, mixed_toks, sizeof(alone_toks));
}
END_TEST

/* A fork continues exactly like its source. */
START_TEST(fork_continues_like_source)
{
	struct llm_ctx *c = new_ctx(2, 512);
	struct llm_kvcache *kv = llm_ctx_kv(c);
	struct llm_batch b;
	float la[NV], lb[NV];
	llm_batch_init(&b, 32);
	int a = llm_kv_seq_new(kv);
	for (int i = 0; i < 11; i++)   /* ends mid-block: CoW on the next write */
		llm_batch_add(&b, P0[i], i, a, false);
	ck_assert_int_eq(llm_decode(c, &b), 0);
	int f = llm_kv_seq_fork(kv, a);
	llm_batch_clear(&b);
	llm_batch_add(&b, P0[11], 11, a, true);
	llm_batch_add(&b, P0[11], 11, f, true);
	ck_assert_int_eq(llm_decode(c, &b), 0);
	memcpy(la, llm_ctx_logits(c, 0), sizeof(la));
	memcpy(lb, llm_ctx_logits(c, 1), sizeof(lb));
	ck_assert(maxdiff(la, lb, NV) < 1e-5);
	/* diverge: different tokens at 12 give different logits, and a's
	 * history is unchanged by f's write */
	llm_batch_clear(&b);
	llm_batch_add(&b, 300, 12, a, true);
	llm_batch_add(&b, 301, 12, f, true);
	ck_assert_int_eq(llm_decode(c, &b), 0);
	ck_assert(maxdiff(llm_ctx_logits(c, 0), llm_ctx_logits(c, 1), NV) > 1e-3);
	float *ref = alone(0);
	llm_kv_seq_truncate(kv, a, 11);
	llm_batch_clear(&b);
	llm_batch_add(&b, P0[11], 11, a, true);
	ck_assert_int_eq(llm_decode(c, &b), 0);
	ck_assert(maxdiff(llm_ctx_logits(c, 0), ref + 11 * NV, NV) < 1e-4);
	free(ref);
	llm_batch_free(&b);
	llm_ctx_free(c);
}
END_TEST

/* An f16 cache stays close to the f32 one: logits within a few hundredths,
 * the same greedy tokens on these prompts. */
START_TEST(f16_cache_close_to_f32)
{
	float *ref[3];
	for (int k = 0; k < 3; k++)
		ref[k] = alone(k);
	kv_type = LLM_F16;
	for (int k = 0; k < 3; k++) {
		float *h = alone(k);
		for (int i = 0; i < PN[k]; i++) {
			double d = maxdiff(h + i * NV, ref[k] + i * NV, NV);
			ck_assert_msg(d < 0.05, "prompt %d pos %d: f16 cache differs by %g",
			              k, i, d);
			ck_assert(d > 0 || i == 0);    /* it really is another cache */
			ck_assert_int_eq(llm_argmax(h + i * NV, NV),
			                 llm_argmax(ref[k] + i * NV, NV));
		}
		free(h);
	}
	kv_type = LLM_F32;
	for (int k = 0; k < 3; k++)
		free(ref[k]);
}
END_TEST

START_TEST(bad_batches_refused)
{
	struct llm_ctx *c = new_ctx(1, 512);
	struct llm_kvcache *kv = llm_ctx_kv(c);
	struct llm_batch b;
	int s = llm_kv_seq_new(kv);
	llm_batch_init(&b, 8);

	llm_batch_add(&b, 512, 0, s, true);            /* token out of range */
	ck_assert_int_eq(llm_decode(c, &b), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "vocabulary"));
	llm_batch_clear(&b);
	llm_batch_add(&b, 1, 1, s, true);              /* gap: expects 0 */
	ck_assert_int_eq(llm_decode(c, &b), LLM_EINVAL);
	llm_batch_clear(&b);
	llm_batch_add(&b, 1, 0, 5, true);              /* no such sequence */
	ck_assert_int_eq(llm_decode(c, &b), LLM_EINVAL);
	llm_batch_clear(&b);
	llm_batch_add(&b, 1, 128, s, true);            /* beyond n_ctx */
	ck_assert_int_eq(llm_decode(c, &b), LLM_ERANGE);
	ck_assert_int_eq(llm_kv_seq_len(kv, s), 0);
	/* a good token for s and a bad one for t: nothing is written */
	int t = llm_kv_seq_new(kv);
	llm_batch_clear(&b);
	llm_batch_add(&b, 1, 0, s, true);
	llm_batch_add(&b, 1, 3, t, true);
	ck_assert_int_eq(llm_decode(c, &b), LLM_EINVAL);
	ck_assert_int_eq(llm_kv_seq_len(kv, s), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), llm_kv_n_blocks(kv));
	llm_batch_free(&b);
	llm_ctx_free(c);
}
END_TEST

START_TEST(kv_exhaustion_leaves_cache_intact)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	struct llm_batch b;
	llm_ctx_params_default(&p);
	p.n_threads = 1;
	p.n_ctx = 64;
	p.kv_blocks = 3;          /* 48 positions */
	ck_assert_int_eq(llm_ctx_new(&c, model, &p), 0);
	struct llm_kvcache *kv = llm_ctx_kv(c);
	int a = llm_kv_seq_new(kv), d = llm_kv_seq_new(kv);
	llm_batch_init(&b, 64);
	for (int i = 0; i < 20; i++)
		llm_batch_add(&b, P2[i], i, a, false);
	ck_assert_int_eq(llm_decode(c, &b), 0);       /* 2 blocks */
	llm_batch_clear(&b);
	for (int i = 0; i < 20; i++)
		llm_batch_add(&b, P2[i], i, d, false);
	llm_batch_add(&b, P2[20], 20, a, true);
	ck_assert_int_eq(llm_decode(c, &b), LLM_ENOMEM);
	ck_assert_int_eq(llm_kv_seq_len(kv, a), 20);
	ck_assert_int_eq(llm_kv_seq_len(kv, d), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 1);
	llm_batch_free(&b);
	llm_ctx_free(c);
}
END_TEST

int main(void)
{
	model_path = test_data(STORIES260K);   /* SKIP without the data */
	Suite *s = suite_create("forward");
	TCase *tc = tcase_create("stories260K");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, model_facts);
	tcase_add_test(tc, batched_equals_single);
	tcase_add_test(tc, greedy_tokens_identical_in_batch);
	tcase_add_test(tc, fork_continues_like_source);
	tcase_add_test(tc, f16_cache_close_to_f32);
	tcase_add_test(tc, bad_batches_refused);
	tcase_add_test(tc, kv_exhaustion_leaves_cache_intact);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? 1 : 0;
}
