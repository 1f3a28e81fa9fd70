/*
 * convert.h - importing other checkpoint formats into GGUF v3, with
 * llama.cpp's metadata keys and tensor names.
 *
 * Sources:
 *
 *   llama2.c   a checkpoint .bin (legacy v0 header of 7 int32, or the
 *              "ak42" v1 (f32) / v2 (int8 groups, dequantized here)
 *              headers) and its tokenizer.bin.  llama2.c rotates adjacent
 *              pairs already, as GGUF "llama" does: no permutation.
 *   Hugging Face  a directory with config.json (LlamaForCausalLM,
 *              MistralForCausalLM, Qwen2ForCausalLM), model.safetensors or
 *              model.safetensors.index.json with its shards, tokenizer.json
 *              and optionally tokenizer_config.json / chat_template.jinja.
 *              Llama Q/K weights are permuted from HF's rotate-half layout
 *              to GGUF's adjacent pairs; Qwen2 (NEOX rotation) is not.
 *   dummy      random weights (deterministic PRNG, std 0.02, norms 1.0) of
 *              a real model's shape, for benchmarks.
 *
 * Output keys: general.architecture ("llama" | "qwen2"), general.name,
 * general.file_type, {arch}.context_length / embedding_length /
 * feed_forward_length / block_count / attention.head_count /
 * attention.head_count_kv / attention.layer_norm_rms_epsilon /
 * rope.freq_base / rope.dimension_count / vocab_size, key_length and
 * value_length when the source gives head_dim, rope.scaling.{type,factor,
 * original_context_length} for linear and yarn scaling, a rope_freqs.weight
 * F32 tensor of n_rot/2 factors for Llama 3.1 ("llama3") scaling, and the
 * tokenizer.ggml.* vocabulary (model, pre, tokens, scores, token_type,
 * merges, bos/eos/unknown/padding ids, add_bos_token, add_space_prefix,
 * tokenizer.chat_template).
 *
 * Tensors are converted one at a time, while the file is written, from the
 * mapped inputs (or generated), so memory stays near the largest tensor.
 * Matrices take the chosen dtype (f32, f16 or bf16); 1-D tensors (norms,
 * biases) and rope_freqs are always F32, as llama.cpp writes them.
 */
#ifndef LLMKIT_CONVERT_H
#define LLMKIT_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "llmkit/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_convert_opts {
	int dtype;               /* LLM_F32, LLM_F16, LLM_BF16; -1: default
	                          * (the source's dtype; f32 for dummies) */
	uint64_t seed;           /* dummy weights */
	int n_threads;           /* threads converting / generating (>= 1) */
	int64_t n_ctx;           /* context_length to record; 0: the source's */
	const char *name;        /* general.name; NULL: derived from the input */
	const char *pre;         /* tokenizer.ggml.pre; NULL: detected */
	/* Tokenizer: required for llama2.c (tok_llama2c); for dummies at most
	 * one of the three, none giving a 259-token byte vocabulary. */
	const char *tok_llama2c; /* llama2.c tokenizer.bin */
	const char *tok_json;    /* Hugging Face tokenizer.json */
	const char *tok_gpt2;    /* directory with encoder.json and vocab.bpe */
	/* Called after each tensor is produced (from the writing thread). */
	void (*progress)(void *user, const char *tensor, uint64_t done_bytes,
	                 uint64_t total_bytes);
	void *progress_user;
};

void llm_convert_opts_init(struct llm_convert_opts *o);

/* A conversion in progress: the GGUF writer with every key set and every
 * tensor described, and the inputs its tensors will be read from. */
struct llm_convert;

int llm_convert_open_llama2c(struct llm_convert **out, const char *model,
                             const struct llm_convert_opts *o);
int llm_convert_open_hf(struct llm_convert **out, const char *dir,
                        const struct llm_convert_opts *o);
int llm_convert_open_dummy(struct llm_convert **out, const char *shape,
                           const struct llm_convert_opts *o);

/* The writer, to inspect or add keys before writing. */
struct llm_gguf_writer *llm_convert_writer(struct llm_convert *c);
/* Bytes of tensor data the output will hold. */
uint64_t llm_convert_data_bytes(const struct llm_convert *c);

/*
 * Write the GGUF atomically to path ("-": standard output).  Refuses (and
 * writes nothing) when path names one of the inputs.  A failure leaves no
 * file behind (stdout excepted).  Call once.
 */
int llm_convert_write(struct llm_convert *c, const char *path);
void llm_convert_free(struct llm_convert *c);

/* ---------------------------------------------------------------- shapes */

enum llm_rope_scaling {
	LLM_ROPE_SCALING_NONE = 0,
	LLM_ROPE_SCALING_LINEAR,
	LLM_ROPE_SCALING_YARN,
	LLM_ROPE_SCALING_LLAMA3,
};

/* The shape of a model, as --dummy makes it. */
struct llm_model_shape {
	char name[64];
	char arch[16];           /* "llama" or "qwen2" (q/k/v biases) */
	int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
	int64_t head_dim;        /* 0: n_embd / n_head */
	double rope_theta, rms_eps;
	bool tied;               /* output shares token_embd (no output.weight) */
	enum llm_rope_scaling rope_scaling;
	double rope_factor;      /* scaling factor */
	int64_t rope_orig_ctx;   /* original context (llama3: 8192) */
	double rope_low_freq, rope_high_freq;   /* llama3 factors (1, 4) */
};

/* The built-in shapes (stories15M ... Llama-3-8B). */
int llm_model_shape_count(void);
const struct llm_model_shape *llm_model_shape_get(int i);
/* "NAME" or "NAME:key=value,..." (NAME a built-in or "custom", which
 * starts from stories15M).  Keys: dim, layers, heads, kv_heads, ffn,
 * vocab, ctx, head_dim, theta, eps, tied (0|1), arch (llama|qwen2),
 * llama3_factor (Llama 3.1 rope scaling, 0 = none). */
int llm_model_shape_parse(const char *spec, struct llm_model_shape *out);
/* Parameters (weights) of a shape. */
int64_t llm_model_shape_params(const struct llm_model_shape *s);

/*
 * Llama 3.1 rope scaling factors as llama.cpp's converter computes them:
 * for each of the n_rot/2 frequencies theta^(-2i/n_rot), 1 when its
 * wavelength is below orig_ctx/high_freq, factor above orig_ctx/low_freq,
 * and a smooth blend between.  out holds n_rot/2 floats.
 */
void llm_rope_llama3_factors(float *out, int64_t n_rot, double theta,
                             double factor, double low_freq,
                             double high_freq, int64_t orig_ctx);

#ifdef __cplusplus
}
#endif
#endif
