/*
 * perplexity.h - how well a model predicts a text: mean negative
 * log-likelihood per token and its exponential, perplexity; and, against a
 * base model, the KL divergence of the next-token distributions and how
 * often their top choices agree (the quality meter for quantization).
 *
 * The token stream is cut into windows of n_ctx tokens that start every
 * stride tokens.  Each token is scored once, in the first window that
 * holds it after its predecessors' overlap: with stride < n_ctx every
 * scored token sees at least n_ctx - stride tokens of context (the first
 * window scores all of its tokens).  A window that starts inside the text
 * has its first token replaced by BOS when bos >= 0, as llama.cpp's
 * perplexity does, so each window looks like the start of a document.
 * Several windows are evaluated together as separate sequences of one
 * batch (n_seq).
 */
#ifndef LLMKIT_PERPLEXITY_H
#define LLMKIT_PERPLEXITY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_ctx;

struct llm_ppl_params {
	int n_ctx;        /* tokens per window (> 1) */
	int stride;       /* window starts apart (1..n_ctx) */
	int n_seq;        /* windows per batch (>= 1); the contexts need n_seq
	                     sequences and n_seq * n_ctx batch tokens */
	int32_t bos;      /* token replacing a window's first one; -1: none */
};

struct llm_ppl_result {
	int64_t n_scored;     /* tokens scored */
	int n_windows;
	double nll;           /* mean negative log-likelihood (nats) */
	double nll_stderr;    /* its standard error */
	double ppl;           /* exp(nll) */
	/* with a base model */
	double base_nll, base_ppl;
	double kl;            /* mean KL(base || model), nats */
	double kl_stderr;
	double kl_max;
	double top1;          /* fraction of tokens whose argmax agrees */
};

/* Called after each batch of windows; non-zero stops (LLM_ECANCELED). */
typedef int (*llm_ppl_progress_fn)(void *user, int windows_done, int windows_total);

/*
 * Score tokens (n >= 2) with ctx; base (may be NULL, same vocabulary) is
 * run over the same windows for the KL statistics.  Both contexts must be
 * empty of sequences the caller uses: windows take and release sequence
 * ids.
 */
int llm_perplexity(struct llm_ctx *ctx, struct llm_ctx *base, const int32_t *tokens,
                   int64_t n, const struct llm_ppl_params *p,
                   struct llm_ppl_result *r, llm_ppl_progress_fn progress,
                   void *user);

/* The number of windows tokens of length n make. */
int llm_ppl_n_windows(int64_t n, const struct llm_ppl_params *p);

#ifdef __cplusplus
}
#endif
#endif
