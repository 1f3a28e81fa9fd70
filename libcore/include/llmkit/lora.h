/*
 * lora.h - LoRA adapters: the low-rank deltas, reading and writing them
 * (PEFT directories and llama.cpp's GGUF adapters), and merging them into a
 * base model.
 *
 * An adapted projection computes  y = x W^T + scale * (x A^T) B^T  with A
 * the rank x n_in down-projection and B the n_out x rank up-projection
 * (PEFT's lora_A.weight and lora_B.weight, row-major f32), and
 * scale = alpha / rank, or alpha / sqrt(rank) with rsLoRA.
 *
 * Row order.  llmkit computes on GGUF-ordered weights, whose Q and K rows
 * are permuted per head relative to Hugging Face's (llm-convert applies
 * that permutation; see convert.c).  In memory an adapter's B rows for q
 * and k are in GGUF order too; the PEFT reader and writer (un)permute them,
 * so a PEFT directory holds what PEFT expects on the Hugging Face weights,
 * and a GGUF adapter holds what llama.cpp expects on the GGUF weights.
 *
 * PEFT directory:  adapter_config.json  {"peft_type": "LORA", "r": 8,
 *                  "lora_alpha": 16, "target_modules": ["q_proj", ...],
 *                  "use_rslora": false, "lora_dropout": 0.0, ...}
 *                  adapter_model.safetensors, tensors named
 *                  base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
 *                  ([r, in]) and ...lora_B.weight ([out, r]); the MLP ones
 *                  are ...layers.N.mlp.gate_proj... (up_proj, down_proj).
 * GGUF adapter:    general.type = "adapter", general.architecture = the
 *                  base's, adapter.type = "lora", adapter.lora.alpha (f32,
 *                  scale = alpha / rank); tensors blk.N.attn_q.weight.lora_a
 *                  (ne {n_in, r}) and ...lora_b (ne {r, n_out}).  rsLoRA is
 *                  written as the alpha giving the same scale.
 */
#ifndef LLMKIT_LORA_H
#define LLMKIT_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_model;

enum llm_lora_target {
	LLM_LORA_Q, LLM_LORA_K, LLM_LORA_V, LLM_LORA_O,
	LLM_LORA_GATE, LLM_LORA_UP, LLM_LORA_DOWN,
	LLM_LORA_N
};
#define LLM_LORA_ALL ((1u << LLM_LORA_N) - 1)

/* "q_proj" ... "down_proj" (PEFT's module names). */
const char *llm_lora_target_name(int t);
/* A comma-separated list of targets: q,k,v,o,gate,up,down (or q_proj ...),
 * "attn" (q,k,v,o), "mlp" (gate,up,down), "all". */
int llm_lora_parse_targets(const char *s, unsigned *mask);
/* The base weight a target adapts in layer il. */
const struct llm_tensor *llm_lora_base_weight(const struct llm_model *m, int il,
                                              int t);

struct llm_lora_mat {
	int n_in, n_out, rank;
	float *a;              /* (rank x n_in); NULL: this projection is not adapted */
	float *b;              /* (n_out x rank) */
};

struct llm_lora {
	int n_layer;
	int rank;              /* the largest rank (all are equal when trained here) */
	float alpha;
	bool rslora;
	float dropout;         /* training only */
	unsigned targets;      /* bit t: some layer adapts target t */
	float scale;           /* alpha / rank, or alpha / sqrt(rank) */
	struct llm_lora_mat *m;  /* (n_layer * LLM_LORA_N), index il * LLM_LORA_N + t */
	int64_t n_params;
	float *mem;            /* one allocation for all A and B */
	char *path;            /* where it was read from, or NULL */
};

/* A new adapter for model m: rank r on the targets in the mask, in every
 * layer, A and B zero (see llm_lora_init_peft). */
int llm_lora_new(struct llm_lora **out, const struct llm_model *m, int rank,
                 float alpha, unsigned targets, bool rslora);
/* The same with a rank per matrix (ranks[il * LLM_LORA_N + t]; 0: not
 * adapted); alpha, scale and rslora are left for the caller to set. */
int llm_lora_new_ranks(struct llm_lora **out, const struct llm_model *m,
                       const int *ranks);
void llm_lora_free(struct llm_lora *a);
struct llm_lora_mat *llm_lora_mat(const struct llm_lora *a, int il, int t);
/* PEFT's initialisation: A from kaiming_uniform(a=sqrt(5)), i.e.
 * U(-1/sqrt(n_in), 1/sqrt(n_in)), B = 0 (a fresh adapter changes nothing);
 * deterministic in seed. */
void llm_lora_init_peft(struct llm_lora *a, uint64_t seed);
/* alpha / rank or alpha / sqrt(rank). */
float llm_lora_scale_of(float alpha, int rank, bool rslora);

/* "PATH" or "PATH:W" (a weight or scale, a number after the last colon;
 * default 1) from a command line; path gets at most n bytes. */
int llm_lora_parse_spec(const char *arg, char *path, size_t n, float *w);

/* ---------------------------------------------------------------- files */

/* Read an adapter: a PEFT directory (or its adapter_model.safetensors), or
 * a GGUF adapter file.  Shapes are checked against the model; q/k B rows of
 * a PEFT adapter are permuted into GGUF order. */
int llm_lora_load(struct llm_lora **out, const char *path,
                  const struct llm_model *m);
/* Write a PEFT directory (created if needed; files written atomically). */
int llm_lora_save_peft(const struct llm_lora *a, const struct llm_model *m,
                       const char *dir);
/* Write a llama.cpp GGUF adapter (atomically; "-" is stdout). */
int llm_lora_save_gguf(const struct llm_lora *a, const struct llm_model *m,
                       const char *path);

/* ---------------------------------------------------------------- merging */

/*
 * Concatenate adapters into one whose delta is the weighted sum of theirs
 * (ranks add up; PEFT's "cat" combination): weight w_i and adapter i's scale
 * are folded into its B columns, so the result has scale 1.
 */
int llm_lora_cat(struct llm_lora **out, struct llm_lora *const *as,
                 const float *weights, int n, const struct llm_model *m);

/*
 * Write model m with sum_i weights[i] * delta_i added to its adapted
 * projections, as GGUF, to path ("-": stdout), atomically.  The matrices
 * are written in out_type (a type whose from_float exists; -1 keeps each
 * tensor's type, f32 for adapted ones whose type cannot be written); norms
 * stay f32.  The base's metadata is copied (general.file_type updated).
 */
int llm_lora_merge_write(const struct llm_model *m, struct llm_lora *const *as,
                         const float *weights, int n, int out_type,
                         const char *path);

/* W (n_out x n_in, f32, GGUF order) += scale * B A of one matrix. */
void llm_lora_mat_add_delta(const struct llm_lora_mat *lm, float scale, float *w);

#ifdef __cplusplus
}
#endif
#endif
