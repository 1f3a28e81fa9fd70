/*
 * forward.h - the one forward pass, over a token batch.
 *
 * A batch is a flat list of tokens, each with the KV sequence it belongs
 * to, its position in that sequence, an adapter slot (-1: none; LoRA) and
 * whether its logits are wanted.  One call can hold the prompt of a new
 * request, one decode token of each of forty running requests and the beams
 * of a beam search.  Matrix products run over all tokens at once; attention
 * runs per token over its own sequence's KV blocks; so a sequence's result
 * does not depend on what else shares its batch.
 *
 * Rules a batch must follow (checked, LLM_EINVAL otherwise): tokens of one
 * sequence appear in increasing, contiguous positions, the first of them
 * equal to the sequence's current length (use llm_kv_seq_truncate to
 * rewind); token ids < n_vocab; positions < n_ctx.
 */
#ifndef LLMKIT_FORWARD_H
#define LLMKIT_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_model;
struct llm_backend;
struct llm_kvcache;

/*
 * What a token asks of its logits (llm_batch.logits).  LLM_LOGITS_CANDS:
 * the row stays on the backend and only its candidates come back
 * (sampler.h, llm_cands: LLM_CANDS_MAX ids and logits and three numbers,
 * about 530 bytes, where a row is 4 * n_vocab); llm_ctx_row fetches the
 * whole row when the sampler needs it after all.  On a host-memory backend
 * (the CPU) the rows cost no copy; a context gives candidates there only
 * where they cost less than the full-row sampler, unless told otherwise
 * (llm_ctx_params.cands).
 */
enum llm_logits_mode {
	LLM_LOGITS_NONE = 0,
	LLM_LOGITS_FULL = 1,
	LLM_LOGITS_CANDS = 2,       /* candidates; their sums NaN */
	LLM_LOGITS_CANDS_SUMS = 3,  /* candidates with the row's sums */
};

struct llm_batch {
	int n, cap;
	int32_t *token;    /* (cap) */
	int32_t *pos;      /* (cap) */
	int32_t *seq;      /* (cap) */
	int32_t *adapter;  /* (cap) -1: base model */
	int8_t *logits;    /* (cap) enum llm_logits_mode; 1: produce logits */
	float *cand_scale; /* (cap) LLM_LOGITS_CANDS: the order's scale, the
	                      sampler's llm_sampler_cands_scale (> 0) */
};

int llm_batch_init(struct llm_batch *b, int cap);
void llm_batch_free(struct llm_batch *b);
void llm_batch_clear(struct llm_batch *b);
/* Append a token; LLM_ENOMEM when the batch is full. */
int llm_batch_add(struct llm_batch *b, int32_t token, int32_t pos, int32_t seq,
                  bool logits);
/* Append a token whose logits are wanted as candidates ordered by
 * logit * scale, with the row's sums or not (llm_sampler_cands_ok). */
int llm_batch_add_cands(struct llm_batch *b, int32_t token, int32_t pos,
                        int32_t seq, float scale, bool sums);

struct llm_ctx_params {
	int n_threads;        /* <= 0: all CPUs */
	const char *device;   /* "cpu" (default) */
	int n_ctx;            /* positions per sequence; 0: the model's, capped at 4096 */
	int n_batch;          /* most tokens per llm_decode call (default 512) */
	int n_seq_max;        /* sequences (default 64) */
	int kv_block_size;    /* default 16 */
	int kv_blocks;        /* 0: from kv_mem, else enough for n_seq_max full contexts capped by 1 GiB */
	uint64_t kv_mem;      /* bytes for the KV cache when kv_blocks is 0 */
	enum llm_dtype kv_type; /* LLM_F16 (default: half the memory and traffic)
	                           or LLM_F32 */
	int cands;            /* LLM_LOGITS_CANDS rows: 0 (default) candidates on
	                         device backends; on the CPU, with a vocabulary
	                         of 8192 or more, for the rows that do not want
	                         the sums (cheaper there than the full-row
	                         sampler), else full rows;
	                         1 candidates always; -1 full rows always.
	                         LLMKIT_CANDS=auto|on|off in the environment
	                         overrides it (for measurements) */
};

void llm_ctx_params_default(struct llm_ctx_params *p);

struct llm_ctx;

int llm_ctx_new(struct llm_ctx **out, const struct llm_model *m,
                const struct llm_ctx_params *p);
void llm_ctx_free(struct llm_ctx *ctx);

const struct llm_model *llm_ctx_model(const struct llm_ctx *ctx);
struct llm_kvcache *llm_ctx_kv(struct llm_ctx *ctx);
struct llm_backend *llm_ctx_backend(struct llm_ctx *ctx);
int llm_ctx_n_ctx(const struct llm_ctx *ctx);
int llm_ctx_n_batch(const struct llm_ctx *ctx);
int llm_ctx_n_vocab(const struct llm_ctx *ctx);

/*
 * Run the model over a batch: KV rows of every token are written into its
 * sequence, and logits are computed for the tokens that asked.  On error
 * nothing is written into any sequence (KV blocks are reserved first).
 * Batches larger than n_batch are split internally.
 */
int llm_decode(struct llm_ctx *ctx, const struct llm_batch *b);

/*
 * LoRA adapters (lora.h), applied at run time without merging: the delta
 * scale * (x A^T) B^T of each adapted projection is added per segment of
 * batch tokens that share an adapter (a backend op, lora_seg): tokens are
 * grouped by adapter slot, so an adapter's matrices are read once per
 * forward pass however its tokens interleave with others'.  Adapters are
 * checked against the model when attached.  The ctx keeps pointers: an
 * adapter must outlive its use.
 *
 * llm_ctx_add_lora: applied to every token of every batch; adapters added
 * one after another stack (their deltas add up).  llm_ctx_set_adapter: slot
 * s >= 0 for the tokens whose batch adapter[] is s (NULL clears it); a
 * batch naming an empty slot is LLM_EINVAL.
 */
struct llm_lora;
#define LLM_CTX_MAX_LORA 16
int llm_ctx_add_lora(struct llm_ctx *ctx, const struct llm_lora *a, float scale);
void llm_ctx_clear_lora(struct llm_ctx *ctx);
int llm_ctx_set_adapter(struct llm_ctx *ctx, int slot, const struct llm_lora *a,
                        float scale);

/* Logits (n_vocab floats) of token i of the last batch; NULL if token i did
 * not ask for them (or its row could not be fetched: see llm_ctx_row).
 * Valid until the next llm_decode. */
const float *llm_ctx_logits(const struct llm_ctx *ctx, int i);
/* The same with the reason: 0 and *out, LLM_EINVAL when token i asked for
 * no logits, or the backend's error when the row could not be fetched. */
int llm_ctx_row(struct llm_ctx *ctx, int i, const float **out);
/* Candidates of token i (it asked LLM_LOGITS_CANDS and the context gives
 * them): true and *out, valid until the next llm_decode; else false. */
struct llm_cands;
bool llm_ctx_cands(const struct llm_ctx *ctx, int i, struct llm_cands *out);

/* Time spent in llm_decode and tokens processed, since creation. */
struct llm_ctx_stats {
	double t_decode;
	int64_t n_tokens;
	int64_t n_calls;
	/* logits bytes a device backend copies to the host - full rows,
	 * candidates, rows fetched after them - counted on every backend */
	int64_t logits_bytes;
};
void llm_ctx_stats(const struct llm_ctx *ctx, struct llm_ctx_stats *s);

#ifdef __cplusplus
}
#endif
#endif
