/* test-kvcache - paged KV cache: blocks, tables, refcounts, fork, CoW. */
#include <check.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/kvcache.h"
#include "testutil.h"

static struct llm_backend *be;
static struct llm_kvcache *kv;

static void setup(void)
{
	struct llm_kv_params p = {
		.n_layer = 2, .n_head_kv = 2, .head_dim = 2, .block_size = 4, .n_blocks = 8,
		.max_seqs = 4, .max_pos = 20,
	};
	ck_assert_int_eq(llm_backend_cpu_init(&be, 1), 0);
	ck_assert_int_eq(llm_kv_init(&kv, &p, be), 0);
}

static void teardown(void)
{
	llm_kv_free(kv);
	llm_backend_free(be);
}

/* Write a recognisable value into every float of positions [from, to). */
static void fill(int seq, int from, int to, float base)
{
	const struct llm_kv_params *p = llm_kv_params(kv);
	for (int l = 0; l < 2; l++)
		for (int pos = from; pos < to; pos++) {
			int32_t s = llm_kv_slot(kv, seq, pos);
			for (int h = 0; h < 2; h++)
				for (int d = 0; d < 2; d++) {
					int64_t b = s / 4, o = s % 4;
					((float *)llm_kv_k(kv, l))[llm_kv_off(p, b, o, h, d)] =
						base + pos + 0.1f * l;
					((float *)llm_kv_v(kv, l))[llm_kv_off(p, b, o, h, d)] =
						-(base + pos + 0.1f * l);
				}
		}
}

/* key (last head, last dimension) and value (first of both) of a position */
static float kat(int seq, int layer, int pos)
{
	const struct llm_kv_params *p = llm_kv_params(kv);
	int32_t s = llm_kv_slot(kv, seq, pos);
	float k = ((float *)llm_kv_k(kv, layer))[llm_kv_off(p, s / 4, s % 4, 1, 1)];
	float v = ((float *)llm_kv_v(kv, layer))[llm_kv_off(p, s / 4, s % 4, 0, 0)];
	ck_assert(k == -v);
	return k;
}

START_TEST(blocks_allocated_per_block_size)
{
	int s = llm_kv_seq_new(kv);
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 0, 5), 0);
	ck_assert_int_eq(llm_kv_seq_len(kv, s), 5);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 6);  /* 2 blocks for 5 positions */
	ck_assert_int_eq(llm_kv_prepare(kv, s, 5, 8), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 6);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 8, 9), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 5);
	/* slots of one block are consecutive */
	ck_assert_int_eq(llm_kv_slot(kv, s, 1), llm_kv_slot(kv, s, 0) + 1);
	llm_kv_seq_free(kv, s);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 8);
}
END_TEST

START_TEST(gap_and_context_rejected)
{
	int s = llm_kv_seq_new(kv);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 0, 3), 0);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 5, 6), LLM_EINVAL);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 3, 21), LLM_ERANGE);
	ck_assert_int_eq(llm_kv_seq_len(kv, s), 3);
}
END_TEST

START_TEST(fork_shares_then_copies_on_write)
{
	int a = llm_kv_seq_new(kv);
	ck_assert_int_eq(llm_kv_prepare(kv, a, 0, 6), 0);   /* blocks: full + half */
	fill(a, 0, 6, 100);
	int b = llm_kv_seq_fork(kv, a);
	ck_assert_int_ge(b, 0);
	ck_assert_int_eq(llm_kv_seq_len(kv, b), 6);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 6);      /* nothing copied yet */
	const int32_t *ta = llm_kv_table(kv, a), *tb = llm_kv_table(kv, b);
	ck_assert_int_eq(ta[0], tb[0]);
	ck_assert_int_eq(llm_kv_block_refs(kv, ta[0]), 2);
	ck_assert_int_eq(llm_kv_block_refs(kv, ta[1]), 2);

	/* b writes position 6: its shared half block is copied, a's kept */
	ck_assert_int_eq(llm_kv_prepare(kv, b, 6, 7), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 5);
	ta = llm_kv_table(kv, a);
	tb = llm_kv_table(kv, b);
	ck_assert_int_eq(ta[0], tb[0]);                     /* full block still shared */
	ck_assert_int_ne(ta[1], tb[1]);
	ck_assert_int_eq(llm_kv_block_refs(kv, ta[1]), 1);
	/* the copy holds a's rows for positions 4, 5, in every layer */
	ck_assert(kat(b, 0, 4) == kat(a, 0, 4));
	ck_assert(kat(b, 1, 5) == kat(a, 1, 5));
	fill(b, 6, 7, 500);
	ck_assert(kat(b, 0, 6) == 506.0f);
	/* a writing its own position 6 does not touch b's */
	ck_assert_int_eq(llm_kv_prepare(kv, a, 6, 7), 0);
	fill(a, 6, 7, 900);
	ck_assert(kat(b, 0, 6) == 506.0f);
	ck_assert(kat(a, 0, 6) == 906.0f);

	llm_kv_seq_free(kv, a);
	ck_assert_int_eq(llm_kv_block_refs(kv, tb[0]), 1);
	llm_kv_seq_free(kv, b);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 8);
}
END_TEST

START_TEST(truncate_frees_blocks)
{
	int s = llm_kv_seq_new(kv);
	ck_assert_int_eq(llm_kv_prepare(kv, s, 0, 12), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 5);
	llm_kv_seq_truncate(kv, s, 5);
	ck_assert_int_eq(llm_kv_seq_len(kv, s), 5);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 6);
	/* writing again from the truncation point */
	ck_assert_int_eq(llm_kv_prepare(kv, s, 5, 9), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 5);
}
END_TEST

START_TEST(exhaustion_changes_nothing)
{
	int a = llm_kv_seq_new(kv), b = llm_kv_seq_new(kv);
	ck_assert_int_eq(llm_kv_prepare(kv, a, 0, 20), 0);   /* 5 blocks */
	ck_assert_int_eq(llm_kv_prepare(kv, b, 0, 16), LLM_ENOMEM);
	ck_assert_int_eq(llm_kv_seq_len(kv, b), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 3);
	ck_assert_int_eq(llm_kv_prepare(kv, b, 0, 12), 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 0);
	/* a fork of a full sequence costs nothing until written */
	llm_kv_seq_free(kv, b);
	int c = llm_kv_seq_fork(kv, a);
	ck_assert_int_ge(c, 0);
	ck_assert_int_eq(llm_kv_n_free_blocks(kv), 3);
}
END_TEST

START_TEST(sequence_ids_run_out)
{
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(llm_kv_seq_new(kv), i);
	ck_assert_int_eq(llm_kv_seq_new(kv), LLM_ENOMEM);
	llm_kv_seq_free(kv, 2);
	ck_assert_int_eq(llm_kv_seq_new(kv), 2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kvcache");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, blocks_allocated_per_block_size);
	tcase_add_test(tc, gap_and_context_rejected);
	tcase_add_test(tc, fork_shares_then_copies_on_write);
	tcase_add_test(tc, truncate_frees_blocks);
	tcase_add_test(tc, exhaustion_changes_nothing);
	tcase_add_test(tc, sequence_ids_run_out);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? 1 : 0;
}
