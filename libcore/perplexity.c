/*
 * perplexity.c - windowed perplexity and KL divergence (perplexity.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/perplexity.h"

struct window {
	int64_t start, end;     /* tokens [start, end) */
	int64_t first;          /* first scored target (absolute) */
};

/* The next window after *prev_end (0 at the start); false when done. */
static bool next_window(int64_t n, const struct llm_ppl_params *p, int64_t *start,
                        int64_t *prev_end, struct window *w)
{
	while (*prev_end < n) {
		int64_t s = *start, e = s + p->n_ctx < n ? s + p->n_ctx : n;
		int64_t first = s + 1 > *prev_end ? s + 1 : *prev_end;
		*start += p->stride;
		*prev_end = e;
		if (first < e) {
			w->start = s;
			w->end = e;
			w->first = first;
			return true;
		}
	}
	return false;
}

int llm_ppl_n_windows(int64_t n, const struct llm_ppl_params *p)
{
	int64_t start = 0, prev_end = 0;
	struct window w;
	int k = 0;
	while (next_window(n, p, &start, &prev_end, &w))
		k++;
	return k;
}

/* log-sum-exp of n logits, and the index of the largest. */
static double lse(const float *l, int n, int *argmax)
{
	float mx = l[0];
	int am = 0;
	for (int i = 1; i < n; i++)
		if (l[i] > mx) {
			mx = l[i];
			am = i;
		}
	double s = 0;
	for (int i = 0; i < n; i++)
		s += exp((double)l[i] - mx);
	*argmax = am;
	return mx + log(s);
}

struct acc {
	double nll, nll2, bnll, kl, kl2, klmax;
	int64_t n, agree;
};

static int fill_batch(struct llm_batch *b, struct llm_kvcache *kv, const int32_t *tok,
                      const struct window *ws, int nw, const struct llm_ppl_params *p,
                      int *seqs)
{
	llm_batch_clear(b);
	for (int k = 0; k < nw; k++) {
		int seq = llm_kv_seq_new(kv);
		if (seq < 0) {
			for (int j = 0; j < k; j++)
				llm_kv_seq_free(kv, seqs[j]);
			return seq;
		}
		seqs[k] = seq;
		for (int64_t a = ws[k].start; a < ws[k].end; a++) {
			int32_t t = a == ws[k].start && a > 0 && p->bos >= 0 ? p->bos : tok[a];
			bool want = a + 1 >= ws[k].first && a + 1 < ws[k].end;
			int rc = llm_batch_add(b, t, (int32_t)(a - ws[k].start), seq, want);
			if (rc) {
				for (int j = 0; j <= k; j++)
					llm_kv_seq_free(kv, seqs[j]);
				return rc;
			}
		}
	}
	return 0;
}

int llm_perplexity(struct llm_ctx *ctx, struct llm_ctx *base, const int32_t *tokens,
                   int64_t n, const struct llm_ppl_params *p,
                   struct llm_ppl_result *r, llm_ppl_progress_fn progress,
                   void *user)
{
	struct llm_batch b = { 0 }, bb = { 0 };
	struct window *ws = NULL;
	int *seqs = NULL, *bseqs = NULL;
	int n_vocab = llm_ctx_n_vocab(ctx), rc = 0, total, done = 0;
	int64_t start = 0, prev_end = 0;
	struct acc a = { 0 };

	memset(r, 0, sizeof(*r));
	if (n < 2)
		return llm_error(LLM_EINVAL, "perplexity: need at least 2 tokens, have %lld",
		                 (long long)n);
	if (p->n_ctx < 2 || p->stride < 1 || p->stride > p->n_ctx || p->n_seq < 1)
		return llm_error(LLM_EINVAL, "perplexity: bad window parameters (context %d, "
		                 "stride %d, sequences %d)", p->n_ctx, p->stride, p->n_seq);
	if (base && llm_ctx_n_vocab(base) != n_vocab)
		return llm_error(LLM_EINVAL, "perplexity: base model has %d tokens in its "
		                 "vocabulary, this one %d", llm_ctx_n_vocab(base), n_vocab);
	for (int64_t i = 0; i < n; i++)
		if (tokens[i] < 0 || tokens[i] >= n_vocab)
			return llm_error(LLM_EINVAL, "perplexity: token %lld is %d, outside "
			                 "the vocabulary", (long long)i, tokens[i]);
	total = llm_ppl_n_windows(n, p);
	ws = malloc(p->n_seq * sizeof(*ws));
	seqs = malloc(p->n_seq * sizeof(int));
	bseqs = malloc(p->n_seq * sizeof(int));
	if (!ws || !seqs || !bseqs) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = llm_batch_init(&b, p->n_seq * p->n_ctx)) ||
	    (base && (rc = llm_batch_init(&bb, p->n_seq * p->n_ctx))))
		goto cleanup;

	for (;;) {
		int nw = 0;
		while (nw < p->n_seq && next_window(n, p, &start, &prev_end, &ws[nw]))
			nw++;
		if (!nw)
			break;
		if ((rc = fill_batch(&b, llm_ctx_kv(ctx), tokens, ws, nw, p, seqs)))
			goto cleanup;
		if (base && (rc = fill_batch(&bb, llm_ctx_kv(base), tokens, ws, nw, p, bseqs))) {
			for (int k = 0; k < nw; k++)
				llm_kv_seq_free(llm_ctx_kv(ctx), seqs[k]);
			goto cleanup;
		}
		if ((rc = llm_decode(ctx, &b)) || (base && (rc = llm_decode(base, &bb))))
			goto release;
		for (int i = 0, k = 0; i < b.n; i++) {
			while (k + 1 < nw && b.seq[i] != seqs[k])
				k++;
			if (!b.logits[i])
				continue;
			int64_t abs = ws[k].start + b.pos[i];
			int32_t target = tokens[abs + 1];
			const float *l = llm_ctx_logits(ctx, i);
			int am;
			double lz = lse(l, n_vocab, &am);
			double nll = lz - l[target];
			a.nll += nll;
			a.nll2 += nll * nll;
			a.n++;
			if (base) {
				const float *lb = llm_ctx_logits(base, i);
				int bam;
				double lzb = lse(lb, n_vocab, &bam), kl = 0;
				for (int v = 0; v < n_vocab; v++) {
					double lpb = lb[v] - lzb;
					kl += exp(lpb) * (lpb - (l[v] - lz));
				}
				if (kl < 0)
					kl = 0;   /* rounding on identical distributions */
				a.bnll += lzb - lb[target];
				a.kl += kl;
				a.kl2 += kl * kl;
				if (kl > a.klmax)
					a.klmax = kl;
				a.agree += am == bam;
			}
		}
release:
		for (int k = 0; k < nw; k++) {
			llm_kv_seq_free(llm_ctx_kv(ctx), seqs[k]);
			if (base)
				llm_kv_seq_free(llm_ctx_kv(base), bseqs[k]);
		}
		if (rc)
			goto cleanup;
		done += nw;
		if (progress && progress(user, done, total)) {
			rc = llm_error(LLM_ECANCELED, "perplexity: stopped");
			goto cleanup;
		}
	}
	r->n_scored = a.n;
	r->n_windows = done;
	if (a.n) {
		r->nll = a.nll / a.n;
		double var = a.nll2 / a.n - r->nll * r->nll;
		r->nll_stderr = a.n > 1 && var > 0 ? sqrt(var / (a.n - 1)) : 0;
		r->ppl = exp(r->nll);
		if (base) {
			r->base_nll = a.bnll / a.n;
			r->base_ppl = exp(r->base_nll);
			r->kl = a.kl / a.n;
			double kv = a.kl2 / a.n - r->kl * r->kl;
			r->kl_stderr = a.n > 1 && kv > 0 ? sqrt(kv / (a.n - 1)) : 0;
			r->kl_max = a.klmax;
			r->top1 = (double)a.agree / a.n;
		}
	}
cleanup:
	llm_batch_free(&b);
	if (base)
		llm_batch_free(&bb);
	free(ws);
	free(seqs);
	free(bseqs);
	return rc;
}
