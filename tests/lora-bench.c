/*
 * lora-bench - speed of LoRA at run time (driven by scripts/bench/lora.sh).
 *
 *   lora-bench MODEL.gguf [THREADS [RANK [PROMPT [GEN [SEQS [ROUNDS]]]]]]
 *
 * Random adapters of rank RANK on all seven projections (A and B nonzero)
 * are made in memory for MODEL.  Measured, in ROUNDS rounds that alternate
 * the configurations (so drifting load hits them alike), best round kept:
 *
 *   single    one sequence: prefill PROMPT tokens, then GEN decode steps,
 *             with no adapter, one adapter applied at run time, and the
 *             model with that adapter merged (written to a temporary file
 *             and read back);
 *   batch     SEQS sequences: prefill PROMPT/4 tokens each in one batch,
 *             then GEN steps of one token per sequence (sequences
 *             interleaved), with no adapters, with SEQS distinct adapters
 *             (one slot per sequence), and with 4 adapters shared round
 *             robin (sequence i has slot i % 4: each slot's tokens scatter
 *             through the batch and are grouped into one segment).
 *
 * Prints tokens per second and ratios to the adapter-free run, one
 * "key value" pair a line.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/util.h"

static int threads = 2, rank = 16, n_prompt = 128, n_gen = 32, n_seqs = 16;
static int rounds = 3;

static void die(const char *what)
{
	fprintf(stderr, "lora-bench: %s: %s\n", what, llm_errmsg());
	exit(1);
}

static struct llm_ctx *new_ctx(const struct llm_model *m)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.n_threads = threads;
	p.n_ctx = n_prompt + n_gen + 8;
	p.n_seq_max = n_seqs;
	p.n_batch = 512;
	if (llm_ctx_new(&c, m, &p))
		die("context");
	return c;
}

/* Prefill and decode seconds of n sequences; slot[i] >= 0 gives sequence i
 * that adapter slot. */
static void run(struct llm_ctx *c, int n, int plen, const int *slot,
                double *t_pf, double *t_dec)
{
	struct llm_batch b;
	struct llm_kvcache *kv = llm_ctx_kv(c);
	int seq[64], nv = llm_ctx_n_vocab(c);
	llm_batch_init(&b, 512);
	for (int i = 0; i < n; i++)
		seq[i] = llm_kv_seq_new(kv);
	double t0 = llm_time_now();
	for (int i = 0; i < n; i++)
		for (int p = 0; p < plen; p++) {
			if (b.n == 512) {
				if (llm_decode(c, &b))
					die("prefill");
				llm_batch_clear(&b);
			}
			llm_batch_add(&b, (7 * p + 13 * i + 1) % nv, p, seq[i], p == plen - 1);
			b.adapter[b.n - 1] = slot ? slot[i] : -1;
		}
	if (b.n && llm_decode(c, &b))
		die("prefill");
	double t1 = llm_time_now();
	for (int g = 0; g < n_gen; g++) {
		llm_batch_clear(&b);
		for (int i = 0; i < n; i++) {
			llm_batch_add(&b, (11 * g + 5 * i + 3) % nv, plen + g, seq[i], true);
			b.adapter[b.n - 1] = slot ? slot[i] : -1;
		}
		if (llm_decode(c, &b))
			die("decode");
	}
	*t_pf = t1 - t0;
	*t_dec = llm_time_now() - t1;
	for (int i = 0; i < n; i++)
		llm_kv_seq_free(kv, seq[i]);
	llm_batch_free(&b);
}

static struct llm_lora *random_adapter(const struct llm_model *m, uint64_t seed)
{
	struct llm_lora *a;
	if (llm_lora_new(&a, m, rank, 2.0f * rank, LLM_LORA_ALL, false))
		die("adapter");
	llm_lora_init_peft(a, seed);
	/* B nonzero: the work must not be skippable */
	uint64_t s = seed * 2654435761u + 1;
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		struct llm_lora_mat *lm = &a->m[i];
		for (int64_t j = 0; j < (int64_t)lm->n_out * lm->rank; j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			lm->b[j] = ((float)(s >> 40) * 0x1p-24f - 0.5f) * 0.01f;
		}
	}
	return a;
}

static double best(const double *v, int n)
{
	double b = v[0];
	for (int i = 1; i < n; i++)
		b = v[i] < b ? v[i] : b;
	return b;
}

int main(int argc, char **argv)
{
	struct llm_model *m, *mm;
	struct llm_lora *as[64];
	char merged[] = "/tmp/lora-bench-XXXXXX";
	int *argsv[] = { &threads, &rank, &n_prompt, &n_gen, &n_seqs, &rounds };

	if (argc < 2 || argc > 8) {
		fprintf(stderr, "usage: lora-bench MODEL [THREADS [RANK [PROMPT [GEN "
		        "[SEQS [ROUNDS]]]]]]\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (llm_parse_int("argument", argv[i], 1, 1 << 20, argsv[i - 2]))
			die(argv[i]);
	if (n_seqs > 64)
		n_seqs = 64;
	if (llm_model_load(&m, argv[1]))
		die(argv[1]);
	for (int i = 0; i < n_seqs; i++)
		as[i] = random_adapter(m, 1000 + i);
	int fd = mkstemp(merged);
	if (fd < 0) {
		perror("mkstemp");
		return 1;
	}
	close(fd);
	float one = 1;
	if (llm_lora_merge_write(m, as, &one, 1, -1, merged) ||
	    llm_model_load(&mm, merged))
		die("merge");
	unlink(merged);

	struct llm_ctx *c_none = new_ctx(m), *c_lora = new_ctx(m), *c_merged = new_ctx(mm);
	struct llm_ctx *c_multi = new_ctx(m);
	if (llm_ctx_add_lora(c_lora, as[0], 1))
		die("add");
	int slots[64], slots4[64];
	for (int i = 0; i < n_seqs; i++) {
		slots[i] = i;
		slots4[i] = i % 4;
		if (llm_ctx_set_adapter(c_multi, i, as[i], 1))
			die("slot");
	}
	enum { NONE, LORA, MERGED, B_NONE, B_MULTI, B_SHARED, NCFG };
	static const char *names[NCFG] = { "single_none", "single_lora", "single_merged",
	                                   "batch_none", "batch_lora", "batch_lora4" };
	double pf[NCFG][32], dec[NCFG][32];
	if (rounds > 32)
		rounds = 32;
	for (int r = 0; r < rounds; r++) {
		run(c_none, 1, n_prompt, NULL, &pf[NONE][r], &dec[NONE][r]);
		run(c_lora, 1, n_prompt, NULL, &pf[LORA][r], &dec[LORA][r]);
		run(c_merged, 1, n_prompt, NULL, &pf[MERGED][r], &dec[MERGED][r]);
		run(c_none, n_seqs, n_prompt / 4, NULL, &pf[B_NONE][r], &dec[B_NONE][r]);
		run(c_multi, n_seqs, n_prompt / 4, slots, &pf[B_MULTI][r], &dec[B_MULTI][r]);
		run(c_multi, n_seqs, n_prompt / 4, slots4, &pf[B_SHARED][r], &dec[B_SHARED][r]);
	}
	printf("model %s\nthreads %d\nrank %d\nprompt %d\ngen %d\nseqs %d\nrounds %d\n",
	       argv[1], threads, rank, n_prompt, n_gen, n_seqs, rounds);
	double tp[NCFG], td[NCFG];
	for (int k = 0; k < NCFG; k++) {
		int seqs = k >= B_NONE ? n_seqs : 1, plen = k >= B_NONE ? n_prompt / 4 : n_prompt;
		tp[k] = seqs * plen / best(pf[k], rounds);
		td[k] = seqs * n_gen / best(dec[k], rounds);
		printf("%s_prefill_tok_s %.1f\n%s_decode_tok_s %.1f\n", names[k], tp[k],
		       names[k], td[k]);
	}
	printf("ratio_prefill_lora_vs_none %.3f\nratio_decode_lora_vs_none %.3f\n"
	       "ratio_prefill_merged_vs_none %.3f\nratio_decode_merged_vs_none %.3f\n"
	       "ratio_prefill_batch16_lora_vs_none %.3f\n"
	       "ratio_decode_batch16_lora_vs_none %.3f\n"
	       "ratio_prefill_batch16_lora4_vs_none %.3f\n"
	       "ratio_decode_batch16_lora4_vs_none %.3f\n",
	       tp[LORA] / tp[NONE], td[LORA] / td[NONE], tp[MERGED] / tp[NONE],
	       td[MERGED] / td[NONE], tp[B_MULTI] / tp[B_NONE], td[B_MULTI] / td[B_NONE],
	       tp[B_SHARED] / tp[B_NONE], td[B_SHARED] / td[B_NONE]);
	llm_ctx_free(c_none);
	llm_ctx_free(c_lora);
	llm_ctx_free(c_merged);
	llm_ctx_free(c_multi);
	for (int i = 0; i < n_seqs; i++)
		llm_lora_free(as[i]);
	llm_model_free(mm);
	llm_model_free(m);
	return 0;
}
