/*
 * train.h - training: a forward pass over whole sequences that keeps what
 * the backward needs, a hand-written backward for every op of the Llama
 * block, AdamW, and the data that feeds them (plain text, JSONL
 * prompt/completion or chat messages, packed into fixed-length sequences).
 *
 * What is trained: a LoRA adapter (lora.h) on a frozen base of any dtype
 * the backend computes with, or, with full = true, every weight of the
 * model (the trainer then keeps f32 copies of them).
 *
 * One optimizer step:
 *
 *   llm_trainer_zero_grad(t);
 *   for each micro-batch b:  llm_trainer_backward(t, b, 1.0f / n_targets, &nll);
 *   llm_trainer_update(t, &st);   (clip, schedule, AdamW; step++)
 *
 * where n_targets counts the targets of all micro-batches of the step, so
 * the loss is the mean over every predicted token of the step, whatever
 * way it was cut into micro-batches (llm_trainer_step does all three).
 * Every op is deterministic (backend.h), so the same data, seed and state
 * give the same bits: a run stopped and resumed from a checkpoint ends
 * exactly where an uninterrupted one does.
 */
#ifndef LLMKIT_TRAIN_H
#define LLMKIT_TRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_model;
struct llm_lora;
struct llm_tokenizer;
struct llm_gguf;
struct llm_backend;

struct llm_train_params {
	int n_threads;        /* <= 0: all CPUs */
	const char *device;   /* backend (backend.h): NULL or "cpu", "cuda[:N]";
	                         a device backend trains LoRA adapters (not
	                         full or qat_type); its parameters, gradients,
	                         moments and activations live in device memory */
	struct llm_backend *backend;  /* NULL, or the backend to compute on
	                         (kept, not freed; device is then unused) */
	int seq_len;          /* tokens per sequence (positions 0..seq_len-1) */
	int max_seqs;         /* most sequences per micro-batch (buffers) */
	float lr;             /* peak learning rate */
	float lr_min;         /* cosine decays to lr_min (fraction of lr) */
	int64_t warmup;       /* linear warmup steps */
	int64_t total_steps;  /* for the cosine schedule; 0: constant after warmup */
	float beta1, beta2, eps, weight_decay;
	float grad_clip;      /* max global gradient norm; 0: no clipping */
	bool full;            /* train every weight instead of an adapter */
	bool recompute;       /* keep only each layer's input; recompute the
	                         rest during the backward pass */
	float dropout;        /* LoRA dropout on the adapters' input */
	uint64_t seed;        /* dropout masks */
	int qat_type;         /* -1, or a dtype: forward with fake-quantized
	                         weights Q(W + s B A), straight-through gradient */
};

void llm_train_params_default(struct llm_train_params *p);

/*
 * A micro-batch: n_seq sequences of seq_len tokens.  targets[i] is the
 * token to predict after tokens[i] (-1: no loss there).  start[i] is the
 * index within its sequence where token i's document begins: tokens attend
 * only within their document and their RoPE positions restart there.
 */
struct llm_train_batch {
	int n_seq;
	const int32_t *tokens;    /* (n_seq * seq_len) */
	const int32_t *targets;   /* (n_seq * seq_len) */
	const int32_t *start;     /* (n_seq * seq_len) */
};

struct llm_trainer;

/* lora: the adapter to train (kept by pointer, updated in place after
 * every step, also on a device backend); NULL with p->full. */
int llm_trainer_new(struct llm_trainer **out, const struct llm_model *m,
                    struct llm_lora *lora, const struct llm_train_params *p);
void llm_trainer_free(struct llm_trainer *t);

void llm_trainer_zero_grad(struct llm_trainer *t);
/* Forward and backward over one micro-batch: gradients of
 * scale * sum(token NLL) are added; *nll (may be NULL) gets the sum of the
 * NLL over its targets. */
int llm_trainer_backward(struct llm_trainer *t, const struct llm_train_batch *b,
                         float scale, double *nll);

struct llm_train_stats {
	int64_t step;         /* steps done, after this one */
	float lr;             /* learning rate used */
	float grad_norm;      /* global norm before clipping */
	double loss;          /* mean NLL of the step's targets */
	int64_t n_targets;
};

/* Clip, AdamW at the scheduled learning rate, step++. */
int llm_trainer_update(struct llm_trainer *t, struct llm_train_stats *st);
/* zero_grad + backward over each micro-batch + update. */
int llm_trainer_step(struct llm_trainer *t, const struct llm_train_batch *mb,
                     int n_micro, struct llm_train_stats *st);
/* The loss alone (no dropout, no gradients): sum of NLL and target count. */
int llm_trainer_eval(struct llm_trainer *t, const struct llm_train_batch *b,
                     double *nll, int64_t *n_targets);

/* Learning rate of step s (0-based): linear warmup to lr over warmup steps,
 * then cosine down to lr * lr_min at total_steps. */
float llm_train_lr(const struct llm_train_params *p, int64_t step);

/* Steps done so far (a checkpoint restores it). */
int64_t llm_trainer_steps(const struct llm_trainer *t);
/* The gradient of the adapter, shaped as the adapter (LoRA training; on a
 * device backend copied to the host by this call). */
const struct llm_lora *llm_trainer_lora_grad(const struct llm_trainer *t);
/* The model with the trained weights (full training: f32 copies; else the
 * base).  Write it with llm_lora_merge_write(m, NULL, NULL, 0, type, path). */
const struct llm_model *llm_trainer_model(const struct llm_trainer *t);
/* Gradients of full training: the gradient buffer of a weight of
 * llm_trainer_model's model (by its data pointer), NULL if not trained. */
const float *llm_trainer_weight_grad(const struct llm_trainer *t,
                                     const void *weight_data);

/*
 * Training state (trained values, AdamW moments, step count) to and from a
 * file, atomically.  extra/n_extra: bytes the caller wants saved with it
 * (its data position); llm_trainer_load checks that the file belongs to a
 * trainer of the same shape, and returns the extra bytes (malloc'd).
 */
int llm_trainer_save(const struct llm_trainer *t, const char *path,
                     const void *extra, size_t n_extra);
int llm_trainer_load(struct llm_trainer *t, const char *path, void **extra,
                     size_t *n_extra);

/* ---------------------------------------------------------------- data */

/*
 * Training data: documents of tokens, each token with a flag saying
 * whether it is predicted (contributes to the loss).
 *
 *   plain text   the whole file, BOS first, one document; loss everywhere
 *   JSONL        one object a line: {"prompt": P, "completion": C} (loss on
 *                C and the EOS after it), {"text": T}, or {"messages":
 *                [{"role", "content"}...]} rendered through the model's chat
 *                template, loss on the assistant turns
 *
 * The format is told by the name (.jsonl, .json, .jsonl.gz) or by the
 * first non-blank character being '{'.  .gz is inflated.  A bad line is an
 * error naming file:line, or with skip_bad is skipped and counted (the
 * first few are reported through the warn callback).
 */
struct llm_train_data;

struct llm_data_params {
	const char *chat_template;  /* NULL: the model's */
	bool skip_bad;
	void (*warn)(void *user, const char *msg);
	void *warn_user;
};

int llm_data_load(struct llm_train_data **out, const char *path,
                  const struct llm_tokenizer *tok, const struct llm_gguf *g,
                  const struct llm_data_params *p);
void llm_data_free(struct llm_train_data *d);
int64_t llm_data_n_docs(const struct llm_train_data *d);
int64_t llm_data_n_tokens(const struct llm_train_data *d);
int64_t llm_data_n_bad(const struct llm_train_data *d);

/*
 * Move the last fraction of the data into a new held-out set: the last
 * documents of JSONL, the tail of a plain-text document (cut at a token).
 */
int llm_data_split(struct llm_train_data *d, double fraction,
                   struct llm_train_data **heldout);

/*
 * Cut the data into sequences of seq_len + 1 tokens: a long document is
 * cut into pieces (each next one starting where the previous one's last
 * target was), short documents are packed together.  Sequences are then
 * visited in an order shuffled per epoch by seed (shuffle false: in file
 * order).  A cursor is one int64 (sequences handed out so far), so a
 * checkpoint saves it and a resumed run gets the same sequences.
 */
struct llm_seqs;
int llm_seqs_new(struct llm_seqs **out, const struct llm_train_data *d,
                 int seq_len, uint64_t seed, bool shuffle);
void llm_seqs_free(struct llm_seqs *s);
int64_t llm_seqs_count(const struct llm_seqs *s);   /* sequences per epoch */
/* Fill a micro-batch with n sequences starting at cursor (cursor / count is
 * the epoch).  The buffers are the batch's own (n_seq * seq_len each). */
void llm_seqs_fill(const struct llm_seqs *s, int64_t cursor, int n,
                   int32_t *tokens, int32_t *targets, int32_t *start);
/* Targets among sequences [cursor, cursor + n). */
int64_t llm_seqs_targets(const struct llm_seqs *s, int64_t cursor, int n);

#ifdef __cplusplus
}
#endif
#endif
