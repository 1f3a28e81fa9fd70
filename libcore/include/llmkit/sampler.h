/*
 * sampler.h - turning logits into the next token.
 *
 * The processing order is fixed: penalties (repetition, frequency,
 * presence) over the recent tokens, then temperature, then the top-k,
 * top-p (nucleus) and min-p filters, then a draw from what is left.  A
 * temperature of 0 is greedy decoding: the arg-max after penalties.
 *
 * Each sequence has its own sampler with its own random state, so a seeded
 * request draws the same tokens whatever else runs beside it.
 */
#ifndef LLMKIT_SAMPLER_H
#define LLMKIT_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_sampling {
	float temperature;        /* 0: greedy */
	int top_k;                /* keep the k most likely; 0: off */
	float top_p;              /* keep the smallest set with mass >= p; 1: off */
	float min_p;              /* drop tokens below min_p * p(max); 0: off */
	float repeat_penalty;     /* divide positive logits, multiply negative ones, of
	                             recent tokens (CTRL); 1: off */
	int repeat_last_n;        /* the recent window for all penalties; -1: all */
	float frequency_penalty;  /* logit -= f * count (OpenAI); 0: off */
	float presence_penalty;   /* logit -= p if count > 0 (OpenAI); 0: off */
	uint64_t seed;
};

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1,
 * repeat_last_n 64, no frequency/presence penalty, seed 0. */
void llm_sampling_default(struct llm_sampling *s);
/* Check ranges; LLM_EINVAL with a message naming the field. */
int llm_sampling_check(const struct llm_sampling *s);

struct llm_sampler;

int llm_sampler_new(struct llm_sampler **out, const struct llm_sampling *p,
                    int n_vocab);
void llm_sampler_free(struct llm_sampler *s);
/* Record a token as part of the context (prompt or generated): penalties
 * look at these. */
void llm_sampler_accept(struct llm_sampler *s, int32_t token);
/* Pick the next token from n_vocab logits (not modified). */
int32_t llm_sampler_sample(struct llm_sampler *s, const float *logits);

/* log softmax(logits)[id]: the model's own log-probability of a token. */
double llm_logprob(const float *logits, int n, int32_t id);
/* The index of the largest logit (lowest index on ties). */
int32_t llm_argmax(const float *logits, int n);
/*
 * The k best (id, log-prob) pairs of a distribution, best first; k <= n.
 * Used by beam search and by "logprobs" replies.
 */
void llm_top_logprobs(const float *logits, int n, int k, int32_t *ids,
                      float *logprobs);

/*
 * Candidates: sampling from a row's best tokens instead of the whole row.
 *
 * A device backend (backend.h: topk) hands back, per row of logits, the k
 * best token ids in the order the sampler ranks them (logit * scale, the
 * sampler's 1/temperature; 1 for greedy; equal values: the lower id
 * first), their logits as they are, and the row's largest logit and two
 * softmax sums: a few hundred bytes instead of the n_vocab floats of the
 * row.  From those the sampler decides the same token the full row gives
 * whenever the draw cannot reach beyond the candidates: greedy, top-k with
 * k <= the candidates, top-p when the candidates' mass reaches it, min-p
 * when the candidates reach below its cut.  Otherwise - penalties (they
 * change logits the backend never saw), a draw over the whole vocabulary,
 * a cut that falls within a rounding error of the threshold - it says so,
 * and the caller samples from the full row instead.
 */
#define LLM_CANDS_MAX 64

struct llm_cands {
	int n_vocab;
	int k;                 /* candidates (<= LLM_CANDS_MAX, <= n_vocab) */
	const int32_t *ids;    /* (k) best first by logit * scale */
	const float *logits;   /* (k) their logits, unscaled */
	float scale;           /* the order's scale */
	float max;             /* the row's largest logit */
	double sum;            /* sum of exp((double)(l - max)) over the row */
	double sum_scaled;     /* sum of exp((double)(l * scale - max * scale));
	                          both NaN when not asked for */
};

/*
 * The candidates of a host row of n logits (the CPU backend's topk; k <=
 * LLM_CANDS_MAX and k <= n): ids and vals (k), the largest logit and,
 * with sums (else NaN: they cost a pass of exp over the row), the two
 * sums, summed in id order as llm_logprob and the sampler sum.
 */
void llm_cands_compute(const float *logits, int n, float scale, int k,
                       bool sums, int32_t *ids, float *vals, float *max,
                       double *sum, double *sum_scaled);
/* The scale the sampler wants its candidates ordered by. */
float llm_sampler_cands_scale(const struct llm_sampler *s);
/* Whether k candidates can ever decide this sampler's draw (false with
 * penalties, or a draw over the whole vocabulary), and whether the draw
 * needs the row's sums then (a nucleus beyond top-k). */
bool llm_sampler_cands_ok(const struct llm_sampler *s, int k, bool *sums);
/*
 * The next token from candidates c (ordered by llm_sampler_cands_scale):
 * true and *token when they decide it - the token llm_sampler_sample would
 * give for the full row -, false when they do not (nothing of the random
 * state is used then: sample the full row instead).
 */
bool llm_sampler_sample_cands(struct llm_sampler *s, const struct llm_cands *c,
                              int32_t *token);
/* llm_logprob from candidates: false when id is not among them. */
bool llm_cands_logprob(const struct llm_cands *c, int32_t id, double *lp);
/* llm_top_logprobs from candidates: false when they cannot tell the k
 * best (k > c->k, or a tie the scaled order hides). */
bool llm_cands_top_logprobs(const struct llm_cands *c, int k, int32_t *ids,
                            float *logprobs);

/* A small, fast, seedable generator (xoshiro256**). */
struct llm_rng {
	uint64_t s[4];
};
void llm_rng_seed(struct llm_rng *r, uint64_t seed);
uint64_t llm_rng_next(struct llm_rng *r);
/* Uniform in [0, 1). */
double llm_rng_uniform(struct llm_rng *r);

#ifdef __cplusplus
}
#endif
#endif
