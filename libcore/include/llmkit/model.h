/*
 * model.h - a Llama-family model: hyper-parameters from GGUF metadata and
 * the weights bound to the tensors of the (mapped, read-only) file.
 *
 * Supported: general.architecture "llama" (Llama 2 and 3, TinyLlama,
 * Mistral, SmolLM, stories), and "qwen2" (Q/K/V biases, NEOX RoPE).  GQA,
 * RoPE base and scaling (linear, YaRN, Llama 3 frequency factors), RMSNorm
 * epsilon, tied or separate output weights.
 */
#ifndef LLMKIT_MODEL_H
#define LLMKIT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_gguf;

enum llm_arch { LLM_ARCH_LLAMA, LLM_ARCH_QWEN2 };

enum llm_rope_kind {
	LLM_ROPE_NORM,  /* rotate adjacent pairs (x[2i], x[2i+1]) - GGUF "llama" */
	LLM_ROPE_NEOX,  /* rotate halves (x[i], x[i + n_rot/2]) - qwen2 */
};

/*
 * RoPE with any scaling reduces to a per-dimension-pair inverse frequency
 * and a magnitude factor: angle(pos, i) = pos * inv_freq[i], and the rotated
 * pair is scaled by mscale (YaRN's attention factor; 1 otherwise).
 */
struct llm_rope {
	enum llm_rope_kind kind;
	int n_rot;              /* rotated dims per head (even, <= head_dim) */
	float theta;            /* base */
	float *inv_freq;        /* (n_rot/2) after scaling */
	float mscale;
};

struct llm_hparams {
	enum llm_arch arch;
	int n_vocab;
	int n_ctx_train;
	int n_embd;
	int n_ff;
	int n_layer;
	int n_head;
	int n_head_kv;
	int head_dim;
	float rms_eps;
	struct llm_rope rope;
};

/* A tensor with data == NULL is absent (e.g. biases of a llama model). */
struct llm_layer {
	struct llm_tensor attn_norm;   /* (n_embd) */
	struct llm_tensor wq;          /* (n_embd -> n_head*head_dim) */
	struct llm_tensor wk;          /* (n_embd -> n_head_kv*head_dim) */
	struct llm_tensor wv;          /* (n_embd -> n_head_kv*head_dim) */
	struct llm_tensor wo;          /* (n_head*head_dim -> n_embd) */
	struct llm_tensor bq, bk, bv;  /* qwen2 */
	struct llm_tensor ffn_norm;    /* (n_embd) */
	struct llm_tensor w_gate;      /* (n_embd -> n_ff) */
	struct llm_tensor w_up;        /* (n_embd -> n_ff) */
	struct llm_tensor w_down;      /* (n_ff -> n_embd) */
};

struct llm_model {
	struct llm_hparams hp;
	char *name;
	struct llm_gguf *gguf;         /* owns the mapping the weights point into */
	struct llm_tensor tok_embd;    /* (n_embd x n_vocab) */
	struct llm_tensor output_norm; /* (n_embd) */
	struct llm_tensor output;      /* (n_embd -> n_vocab); tok_embd if tied */
	bool tied_output;
	struct llm_layer *layers;      /* (n_layer) */
};

/*
 * Load a GGUF file ("-" reads standard input).  The weights are read into
 * private memory on 2 MiB pages: decoding streams every weight once per
 * token, and with the 4 KiB pages of a file mapping each page is a TLB miss
 * (on the 2-core VMs we measure on, the mapped file decodes ~35% slower).
 * use_mmap maps the file instead: instant start, page cache shared between
 * processes, slower decoding.
 */
struct llm_model_params {
	bool use_mmap;
};

int llm_model_load(struct llm_model **out, const char *path);
int llm_model_load_ex(struct llm_model **out, const char *path,
                      const struct llm_model_params *p);
/* Bind to an opened GGUF; on success the model owns g. */
int llm_model_from_gguf(struct llm_model **out, struct llm_gguf *g);
void llm_model_free(struct llm_model *m);

/* Parameter count and the bytes of weights one decoded token reads (every
 * matrix once plus one embedding row). */
int64_t llm_model_n_params(const struct llm_model *m);
uint64_t llm_model_bytes_per_token(const struct llm_model *m);

const char *llm_arch_name(enum llm_arch a);

#ifdef __cplusplus
}
#endif
#endif
