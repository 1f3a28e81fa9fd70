/*
 * generate.h - generating text for a set of requests run together as one
 * static batch: every prompt is prefilled in shared forward passes, then
 * each step decodes one token for every request still running (and every
 * live beam of a beam search), until all are done.
 *
 * Requests are independent: each has its own sampler, seed, stop strings
 * and limits, and its tokens are the same whether it runs alone or beside
 * others.
 */
#ifndef LLMKIT_GENERATE_H
#define LLMKIT_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmkit/sampler.h"
#include "llmkit/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_ctx;
struct llm_tokenizer;

enum llm_finish {
	LLM_FINISH_NONE = 0,
	LLM_FINISH_LENGTH,     /* max_tokens reached */
	LLM_FINISH_EOS,        /* the model ended its turn */
	LLM_FINISH_STOP,       /* a stop string appeared (it is not in the text) */
	LLM_FINISH_CONTEXT,    /* the context is full */
};

const char *llm_finish_name(enum llm_finish f);

#define LLM_MAX_STOP 16

struct llm_gen_params {
	struct llm_sampling sampling;
	int max_tokens;           /* tokens to generate; -1: until the context is full */
	const char *stop[LLM_MAX_STOP];
	int n_stop;
	int n_beams;              /* 0: sample; >= 1: beam search of this width
	                             (deterministic; sampling ignored) */
	float length_penalty;     /* beams rank by sum(logprob) / length^length_penalty */
	bool early_stopping;      /* beam search ends once n_beams hypotheses are
	                             finished (default); else when no live beam
	                             can beat the worst of them */
	bool ignore_eos;
	bool logprobs;            /* compute the log-probs sum (costs a pass over
	                             the vocabulary per token; beams always do) */
	int top_logprobs;         /* with logprobs: also keep the k best alternatives
	                             of every sampled token (0..20; llm_gen_state) */
};

void llm_gen_params_default(struct llm_gen_params *p);

struct llm_gen_request {
	/* in */
	const int32_t *prompt;    /* at least one token */
	int n_prompt;
	struct llm_gen_params params;
	bool text_start;          /* the prompt holds no text (only BOS): the
	                             output starts the text (SPM leading space) */
	/* out */
	int32_t *tokens;          /* generated tokens, malloc'd */
	int n_tokens;
	char *text;               /* decoded, stop string cut off, NUL-terminated */
	size_t text_len;
	double logprob;           /* sum of the model's log-probs of tokens */
	enum llm_finish finish;
	double t_first_token;     /* seconds from the start of llm_generate */
	double t_done;
};

/* Release a request's outputs (not its prompt). */
void llm_gen_request_clear(struct llm_gen_request *r);

/*
 * The state machine of one sampled request, shared by llm_generate and the
 * serving engine (sched.h): logits in, the next token out, and the text
 * that has become final.  It owns the request's sampler (seeded, primed
 * with the prompt for the penalties), the streaming detokenizer (UTF-8
 * characters are never split), stop strings (text that could still begin
 * one is held back; a stop string found is cut off and never shown) and
 * the limits (max_tokens, the context).  It never touches the model or the
 * KV cache, so a request can be preempted and resumed, or moved between
 * batches, without its text changing.
 */
struct llm_gen_state {
	const struct llm_tokenizer *tok;
	const struct llm_gen_params *p;  /* not owned; outlives the state */
	int n_vocab;
	struct llm_sampler *smp;
	struct llm_detok dt;
	int32_t *tokens;          /* generated (EOS not included) */
	int n_tokens, cap_tokens;
	char *text;               /* decoded text, NUL-terminated */
	size_t text_len, text_cap;
	size_t emitted;           /* bytes of text handed out by _take */
	size_t final_len;         /* bytes of text that are final */
	double logprob;           /* sum of the tokens' log-probs (p->logprobs) */
	float *token_logprob;     /* (n_tokens) with p->logprobs */
	int32_t *top_ids;         /* (n_tokens x top_logprobs) best first */
	float *top_lps;
	int max_new;              /* tokens allowed: max_tokens capped by the context */
	bool limited_by_ctx;      /* max_new comes from the context */
	enum llm_finish finish;   /* LLM_FINISH_NONE while running */
};

/*
 * Start a request: prompt of n_prompt tokens (ids < n_vocab), in a context
 * of n_ctx positions (the prompt must leave room: n_prompt < n_ctx).
 * text_start: the prompt holds no text, the output begins it.  p must
 * stay valid as long as the state.  A request allowed no tokens at all
 * (max_tokens 0) is finished at once.
 */
int llm_gen_state_init(struct llm_gen_state *s, const struct llm_tokenizer *tok,
                       const struct llm_gen_params *p, int n_vocab,
                       const int32_t *prompt, int n_prompt, bool text_start,
                       int n_ctx);
void llm_gen_state_free(struct llm_gen_state *s);
/*
 * Take the next token from the logits of the last position: sample it,
 * then end the request on end-of-generation, a stop string or a limit
 * (s->finish is set then; the token is appended unless it is EOS).
 */
int llm_gen_state_step(struct llm_gen_state *s, const float *logits);
/*
 * The same from token i of ctx's last batch: from its candidates when they
 * decide the token and the log-probs asked for (sampler.h), else from the
 * full row, fetched then.  The token is the one the full row gives.
 */
struct llm_ctx;
int llm_gen_state_step_ctx(struct llm_gen_state *s, struct llm_ctx *ctx, int i);
/* Whether the next step may ask for candidates (forward.h
 * LLM_LOGITS_CANDS), the scale to order them by and whether with the
 * row's sums (LLM_LOGITS_CANDS_SUMS). */
bool llm_gen_state_cands(const struct llm_gen_state *s, float *scale, bool *sums);
/* End the request now (a reason other than NONE); what was held back as
 * a possible stop string or a partial character becomes final. */
int llm_gen_state_finish(struct llm_gen_state *s, enum llm_finish why);
/* Text that became final since the last call: a pointer into s->text
 * (valid until the next step) and its length, 0 when none. */
size_t llm_gen_state_take(struct llm_gen_state *s, const char **text);

/*
 * Called with each piece of newly final text of request index (complete
 * UTF-8, never part of a stop string) as it is decoded; non-zero return
 * stops generation with LLM_ECANCELED.  Beam search requests report their
 * text once, when done.
 */
typedef int (*llm_gen_stream_fn)(void *user, int index, const char *text,
                                 size_t len);

struct llm_gen_stats {
	double t_prefill;         /* seconds in prompt processing */
	double t_decode;          /* seconds in generation steps */
	int64_t n_prompt;         /* prompt tokens processed */
	int64_t n_decoded;        /* tokens decoded in generation steps */
	int n_steps;              /* generation steps */
	int peak_seqs;            /* most sequences live at once */
	int peak_blocks;          /* most KV blocks in use at once */
};

/*
 * Run n requests together.  The context must have room for them: sequences
 * (n_beams each) and KV blocks for prompt + max_tokens of each (checked up
 * front, LLM_ERANGE / LLM_ENOMEM with what is needed).
 */
int llm_generate(struct llm_ctx *ctx, const struct llm_tokenizer *tok,
                 struct llm_gen_request *reqs, int n, llm_gen_stream_fn cb,
                 void *user, struct llm_gen_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
