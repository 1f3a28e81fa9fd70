/*
 * dump-logits - print the logits of every position of a token sequence, as
 * computed by llm_decode (for comparison with tests/ref/llama_ref.py).
 *
 *   dump-logits MODEL.gguf TOKENS [THREADS [N_BATCH]]
 *
 * TOKENS is comma-separated.  The whole sequence goes through one batch
 * (split at N_BATCH tokens).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"

int main(int argc, char **argv)
{
	struct llm_model *m;
	struct llm_ctx *c;
	struct llm_ctx_params p;
	struct llm_batch b;
	int n = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: dump-logits MODEL TOKENS [THREADS [N_BATCH]]\n");
		return 2;
	}
	if (llm_model_load(&m, argv[1])) {
		fprintf(stderr, "dump-logits: %s\n", llm_errmsg());
		return 1;
	}
	llm_ctx_params_default(&p);
	p.n_threads = argc > 3 ? atoi(argv[3]) : 1;
	p.n_batch = argc > 4 ? atoi(argv[4]) : 512;
	p.n_seq_max = 1;
	p.kv_type = LLM_F32;     /* exact comparison with the float64 reference */
	if (llm_ctx_new(&c, m, &p) || llm_batch_init(&b, 4096)) {
		fprintf(stderr, "dump-logits: %s\n", llm_errmsg());
		return 1;
	}
	int seq = llm_kv_seq_new(llm_ctx_kv(c));
	for (char *s = strtok(argv[2], ","); s; s = strtok(NULL, ","))
		llm_batch_add(&b, atoi(s), n++, seq, true);
	if (llm_decode(c, &b)) {
		fprintf(stderr, "dump-logits: %s\n", llm_errmsg());
		return 1;
	}
	for (int i = 0; i < n; i++) {
		const float *l = llm_ctx_logits(c, i);
		for (int j = 0; j < llm_ctx_n_vocab(c); j++)
			printf(j ? " %.7g" : "%.7g", l[j]);
		printf("\n");
	}
	llm_batch_free(&b);
	llm_ctx_free(c);
	llm_model_free(m);
	return 0;
}
