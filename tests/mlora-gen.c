/*
 * mlora-gen - random LoRA adapters for the multi-LoRA tests and benchmark:
 *
 *   mlora-gen MODEL DIR N [SEED [RANK [TARGETS [MAG]]]]
 *
 * writes N adapters into DIR: a0 ... a(N-1), even ones as PEFT
 * directories, odd ones as GGUF files (aK.gguf).  Without RANK (or RANK
 * 0) ranks and targets vary per adapter (ranks 2, 4, 8, 16; targets all,
 * attn, mlp, "q,v"), so adapters of different shapes mix; with RANK and
 * TARGETS every adapter is alike (the benchmark: rank 8 on "all").  A is
 * PEFT's initialisation, B uniform in [-MAG, MAG] (default 0.5), so every
 * adapter changes the model.  Deterministic in SEED.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

int main(int argc, char **argv)
{
	struct llm_model *m = NULL;
	int rc;

	if (argc < 4) {
		fprintf(stderr, "usage: mlora-gen MODEL DIR N [SEED [RANK [TARGETS "
		        "[MAG]]]]\n");
		return 2;
	}
	int n = atoi(argv[3]);
	uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1;
	int fixed_rank = argc > 5 ? atoi(argv[5]) : 0;
	unsigned fixed_targets = LLM_LORA_ALL;
	float mag = argc > 7 ? (float)atof(argv[7]) : 0.5f;
	if (argc > 6 && llm_lora_parse_targets(argv[6], &fixed_targets)) {
		fprintf(stderr, "mlora-gen: %s\n", llm_errmsg());
		return 2;
	}
	if ((rc = llm_model_load(&m, argv[1]))) {
		fprintf(stderr, "mlora-gen: %s\n", llm_errmsg());
		return 1;
	}
	mkdir(argv[2], 0755);
	static const char *const tsets[] = { "all", "attn", "mlp", "q,v" };
	for (int i = 0; i < n && !rc; i++) {
		struct llm_lora *a = NULL;
		unsigned targets = fixed_targets;
		int rank = fixed_rank;
		if (!rank) {
			rank = 2 << (i % 4);
			llm_lora_parse_targets(tsets[(i / 4) % 4], &targets);
		}
		uint64_t s = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 7919 + 1;
		if ((rc = llm_lora_new(&a, m, rank, 2.0f * rank, targets, false)))
			break;
		llm_lora_init_peft(a, s);
		for (int k = 0; k < a->n_layer * LLM_LORA_N; k++) {
			struct llm_lora_mat *lm = &a->m[k];
			if (!lm->a)
				continue;
			for (int64_t j = 0; j < (int64_t)lm->n_out * lm->rank; j++)
				lm->b[j] = mag * ((float)(rng_next(&s) >> 40) / (float)(1 << 24) *
				                  2 - 1);
		}
		char path[4096];
		if (i % 2) {
			snprintf(path, sizeof(path), "%s/a%d.gguf", argv[2], i);
			rc = llm_lora_save_gguf(a, m, path);
		} else {
			snprintf(path, sizeof(path), "%s/a%d", argv[2], i);
			rc = llm_lora_save_peft(a, m, path);
		}
		llm_lora_free(a);
	}
	if (rc)
		fprintf(stderr, "mlora-gen: %s\n", llm_errmsg());
	llm_model_free(m);
	return rc ? 1 : 0;
}
