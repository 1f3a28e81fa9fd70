/*
 * mlora-kernel - the grouped LoRA op (backend.h, lora_seg) against the base
 * matmul it rides on, for a decode step of a heterogeneous batch:
 *
 *   mlora-kernel MODEL [THREADS [TOKENS [RANK [REPS]]]]
 *
 * For TOKENS tokens (one per sequence) over K adapters (K = 1, 4, 8, 16, 32,
 * TOKENS; sequence i has adapter i % K, so each adapter's tokens scatter
 * through the batch and form one segment over a rows list, as the forward
 * builds them), every projection of every layer of MODEL in turn (so the
 * adapters come from memory, as in a forward pass): milliseconds of the
 * base matmuls and of lora_seg, best of REPS, and the ratio
 * base / (base + lora), the throughput a forward could keep if nothing
 * else cost.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/util.h"

static void die(const char *what)
{
	fprintf(stderr, "mlora-kernel: %s: %s\n", what, llm_errmsg());
	exit(1);
}

int main(int argc, char **argv)
{
	struct llm_model *m;
	struct llm_backend *be;

	if (argc < 2) {
		fprintf(stderr, "usage: mlora-kernel MODEL [THREADS [TOKENS [RANK [REPS]]]]\n");
		return 2;
	}
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	int n = argc > 3 ? atoi(argv[3]) : 32;
	int rank = argc > 4 ? atoi(argv[4]) : 8;
	int reps = argc > 5 ? atoi(argv[5]) : 30;
	if (llm_model_load(&m, argv[1]))
		die(argv[1]);
	if (llm_backend_cpu_init(&be, threads))
		die("backend");
	int ks[] = { 1, 4, 8, 16, 32, n };
	int nk = n == 32 ? 5 : 6;
	struct llm_lora **ad = calloc(n, sizeof(*ad));
	for (int i = 0; i < n; i++) {
		if (llm_lora_new(&ad[i], m, rank, 2.0f * rank, LLM_LORA_ALL, false))
			die("adapter");
		llm_lora_init_peft(ad[i], (uint64_t)i + 1);
		for (int j = 0; j < ad[i]->n_layer * LLM_LORA_N; j++)
			if (ad[i]->m[j].b)
				for (int64_t q = 0; q < (int64_t)ad[i]->m[j].n_out * rank; q++)
					ad[i]->m[j].b[q] = 0.01f * (float)((q * 7 + i) % 13 - 6);
	}
	int max_dim = 0;
	for (int t = 0; t < LLM_LORA_N; t++) {
		const struct llm_tensor *w = llm_lora_base_weight(m, 0, t);
		if (w->ne[0] > max_dim)
			max_dim = (int)w->ne[0];
		if (w->ne[1] > max_dim)
			max_dim = (int)w->ne[1];
	}
	float *x = malloc((size_t)n * max_dim * sizeof(float));
	float *y = calloc((size_t)n * max_dim, sizeof(float));
	for (int64_t i = 0; i < (int64_t)n * max_dim; i++)
		x[i] = (float)((i * 31) % 17 - 8) * 0.05f;
	int32_t *rows = malloc(n * sizeof(int32_t));
	struct llm_lora_seg *segs = malloc(n * sizeof(*segs));

	printf("threads %d tokens %d rank %d\n", threads, n, rank);
	int n_layer = m->hp.n_layer;
	for (int ki = 0; ki < nk; ki++) {
		int k = ks[ki];
		double best_b = 1e9, best_l = 1e9;
		for (int r = 0; r < reps; r++) {
			/* every layer in turn, as a forward pass: the adapters' matrices
			 * come from memory, not from the cache of the previous rep */
			double tb = 0, tl = 0;
			for (int il = 0; il < n_layer; il++)
				for (int t = 0; t < LLM_LORA_N; t++) {
					const struct llm_tensor *w = llm_lora_base_weight(m, il, t);
					int n_in = (int)w->ne[0], n_out = (int)w->ne[1];
					/* adapter a has tokens a, a + k, a + 2k ... */
					int nr = 0;
					for (int a = 0; a < k; a++) {
						const struct llm_lora_mat *lm = llm_lora_mat(ad[a], il, t);
						int r0 = nr;
						for (int i = a; i < n; i += k)
							rows[nr++] = i;
						segs[a] = (struct llm_lora_seg){
							rows[r0], nr - r0, lm->a, lm->b, lm->rank, 1.0f,
							nr - r0 > 1 ? rows + r0 : NULL };
					}
					double t0 = llm_time_now();
					be->ops->matmul(be, w, x, y, n);
					double t1 = llm_time_now();
					be->ops->lora_seg(be, x, y, n_in, n_out, segs, k);
					double t2 = llm_time_now();
					tb += t1 - t0;
					tl += t2 - t1;
				}
			if (tb < best_b)
				best_b = tb;
			if (tl < best_l)
				best_l = tl;
		}
		printf("adapters %d base_ms %.2f lora_ms %.2f ratio %.3f\n", k,
		       1e3 * best_b, 1e3 * best_l, best_b / (best_b + best_l));
	}
	for (int i = 0; i < n; i++)
		llm_lora_free(ad[i]);
	free(ad);
	free(x);
	free(y);
	free(rows);
	free(segs);
	llm_backend_free(be);
	llm_model_free(m);
	return 0;
}
