/*
 * model.c - hyper-parameters and weight binding from GGUF (see model.h).
 *
 * Keys and tensor names are llama.cpp's, so models from the hub load as
 * they are.  Every tensor's dtype and shape is checked against the
 * hyper-parameters here, once, so the forward pass can trust them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/model.h"
#include "llmkit/util.h"

const char *llm_arch_name(enum llm_arch a)
{
	switch (a) {
	case LLM_ARCH_LLAMA: return "llama";
	case LLM_ARCH_QWEN2: return "qwen2";
	}
	return "?";
}

struct loader {
	struct llm_gguf *g;
	const char *path;
	char arch[64];
};

static int key_u32(struct loader *ld, const char *suffix, int *out, bool required,
                   int min)
{
	char key[160];
	uint32_t v;
	int rc;

	snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
	rc = llm_gguf_get_u32(ld->g, key, &v);
	if (rc == LLM_ENOTFOUND) {
		if (required)
			return llm_error(LLM_EFORMAT, "%s: missing metadata key %s",
			                 ld->path, key);
		return 0;
	}
	if (rc)
		return rc;
	if (v < (uint32_t)min || v > (1u << 30))
		return llm_error(LLM_EFORMAT, "%s: %s = %u is out of range", ld->path,
		                 key, v);
	*out = (int)v;
	return 0;
}

static int key_f32(struct loader *ld, const char *suffix, float *out)
{
	char key[160];
	int rc;

	snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
	rc = llm_gguf_get_f32(ld->g, key, out);
	if (rc == LLM_ENOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (!isfinite(*out))
		return llm_error(LLM_EFORMAT, "%s: %s is not finite", ld->path, key);
	return 0;
}

/*
 * Bind a tensor by name, checking dtype and shape.  ne0/ne1: expected
 * dims (ne1 = 0 for vectors).  Absent optional tensors leave t zeroed.
 */
static int bind(struct loader *ld, struct llm_tensor *t, const char *name,
                int64_t ne0, int64_t ne1, bool required)
{
	const struct llm_gguf_tensor *gt = llm_gguf_find_tensor(ld->g, name);
	int n_dims = ne1 ? 2 : 1;

	memset(t, 0, sizeof(*t));
	if (!gt) {
		if (required)
			return llm_error(LLM_EFORMAT, "%s: missing tensor %s", ld->path, name);
		return 0;
	}
	if (gt->ne[0] != ne0 || gt->ne[1] != (ne1 ? ne1 : 1) || gt->ne[2] != 1 ||
	    gt->ne[3] != 1) {
		if (ne1)
			return llm_error(LLM_EFORMAT, "%s: tensor %s: expected shape [%lld, "
			                 "%lld], found [%lld, %lld, %lld, %lld]", ld->path, name,
			                 (long long)ne0, (long long)ne1, (long long)gt->ne[0],
			                 (long long)gt->ne[1], (long long)gt->ne[2],
			                 (long long)gt->ne[3]);
		return llm_error(LLM_EFORMAT, "%s: tensor %s: expected shape [%lld], "
		                 "found [%lld, %lld]", ld->path, name, (long long)ne0,
		                 (long long)gt->ne[0], (long long)gt->ne[1]);
	}
	const struct llm_dtype_traits *tr = llm_dtype_traits(gt->type);
	if (!tr->to_float)
		return llm_error(LLM_EUNSUPPORTED, "%s: tensor %s: type %s is not "
		                 "supported", ld->path, name, tr->name);
	/* Norms and biases are used as plain floats. */
	if (!ne1 && gt->type != LLM_F32)
		return llm_error(LLM_EUNSUPPORTED, "%s: tensor %s: vectors must be f32, "
		                 "found %s", ld->path, name, tr->name);
	t->name = gt->name;
	t->type = gt->type;
	t->n_dims = n_dims;
	t->ne[0] = ne0;
	t->ne[1] = ne1 ? ne1 : 1;
	t->ne[2] = t->ne[3] = 1;
	t->nbytes = gt->nbytes;
	t->data = (void *)gt->data;
	return 0;
}

static int bind_layer(struct loader *ld, struct llm_model *m, int il)
{
	const struct llm_hparams *hp = &m->hp;
	struct llm_layer *l = &m->layers[il];
	int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
	int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
	bool bias = hp->arch == LLM_ARCH_QWEN2;
	char name[96];
	int rc = 0;

#define BIND(field, suffix, a, b, req) do { \
		snprintf(name, sizeof(name), "blk.%d." suffix, il); \
		if ((rc = bind(ld, &l->field, name, a, b, req))) return rc; \
	} while (0)
	BIND(attn_norm, "attn_norm.weight", hp->n_embd, 0, true);
	BIND(wq, "attn_q.weight", hp->n_embd, q_dim, true);
	BIND(wk, "attn_k.weight", hp->n_embd, kv_dim, true);
	BIND(wv, "attn_v.weight", hp->n_embd, kv_dim, true);
	BIND(wo, "attn_output.weight", q_dim, hp->n_embd, true);
	BIND(bq, "attn_q.bias", q_dim, 0, bias);
	BIND(bk, "attn_k.bias", kv_dim, 0, bias);
	BIND(bv, "attn_v.bias", kv_dim, 0, bias);
	BIND(ffn_norm, "ffn_norm.weight", hp->n_embd, 0, true);
	BIND(w_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, true);
	BIND(w_up, "ffn_up.weight", hp->n_embd, hp->n_ff, true);
	BIND(w_down, "ffn_down.weight", hp->n_ff, hp->n_embd, true);
#undef BIND
	return 0;
}

/* YaRN's ramp between the dimensions that interpolate and extrapolate. */
static float yarn_corr_dim(int n_rot, int n_ctx_orig, float beta, float base)
{
	return n_rot * logf(n_ctx_orig / (beta * 2.0f * (float)M_PI)) /
	       (2.0f * logf(base));
}

static int load_rope(struct loader *ld, struct llm_model *m)
{
	struct llm_hparams *hp = &m->hp;
	struct llm_rope *r = &hp->rope;
	char key[160];
	const char *stype = NULL;
	float factor = 1.0f, attn_factor = 1.0f;
	int n_ctx_orig = hp->n_ctx_train;
	int rc;

	r->kind = hp->arch == LLM_ARCH_QWEN2 ? LLM_ROPE_NEOX : LLM_ROPE_NORM;
	r->theta = 10000.0f;
	r->n_rot = hp->head_dim;
	r->mscale = 1.0f;
	if ((rc = key_f32(ld, "rope.freq_base", &r->theta)) ||
	    (rc = key_u32(ld, "rope.dimension_count", &r->n_rot, false, 2)))
		return rc;
	if (r->theta <= 0)
		return llm_error(LLM_EFORMAT, "%s: %s.rope.freq_base must be positive",
		                 ld->path, ld->arch);
	if (r->n_rot % 2 || r->n_rot > hp->head_dim)
		return llm_error(LLM_EFORMAT, "%s: %s.rope.dimension_count %d must be even "
		                 "and at most the head size %d", ld->path, ld->arch,
		                 r->n_rot, hp->head_dim);

	snprintf(key, sizeof(key), "%s.rope.scaling.type", ld->arch);
	rc = llm_gguf_get_str(ld->g, key, &stype);
	if (rc && rc != LLM_ENOTFOUND)
		return rc;
	if ((rc = key_f32(ld, "rope.scaling.factor", &factor)) ||
	    (rc = key_f32(ld, "rope.scaling.attn_factor", &attn_factor)) ||
	    (rc = key_u32(ld, "rope.scaling.original_context_length", &n_ctx_orig,
	                  false, 1)))
		return rc;
	if (!stype) {
		/* older files: rope.scale_linear */
		float lin = 1.0f;
		if ((rc = key_f32(ld, "rope.scale_linear", &lin)))
			return rc;
		if (lin != 1.0f) {
			stype = "linear";
			factor = lin;
		} else {
			stype = "none";
		}
	}
	if (factor <= 0)
		return llm_error(LLM_EFORMAT, "%s: rope scaling factor must be positive",
		                 ld->path);

	int half = r->n_rot / 2;
	r->inv_freq = malloc(half * sizeof(float));
	if (!r->inv_freq)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < half; i++)
		r->inv_freq[i] = powf(r->theta, -2.0f * i / r->n_rot);

	if (!strcmp(stype, "none") || factor == 1.0f) {
		/* nothing */
	} else if (!strcmp(stype, "linear")) {
		for (int i = 0; i < half; i++)
			r->inv_freq[i] /= factor;
	} else if (!strcmp(stype, "yarn")) {
		float fs = 1.0f / factor;
		float lo = floorf(yarn_corr_dim(r->n_rot, n_ctx_orig, 32.0f, r->theta));
		float hi = ceilf(yarn_corr_dim(r->n_rot, n_ctx_orig, 1.0f, r->theta));
		lo = fmaxf(0.0f, lo);
		hi = fminf((float)(r->n_rot - 1), hi);
		for (int i = 0; i < half; i++) {
			float y = (i - lo) / fmaxf(0.001f, hi - lo);
			float mix = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
			r->inv_freq[i] *= fs * (1.0f - mix) + mix;
		}
		r->mscale = attn_factor * (1.0f + 0.1f * logf(factor));
	} else {
		return llm_error(LLM_EUNSUPPORTED, "%s: rope scaling type '%s' is not "
		                 "supported", ld->path, stype);
	}

	/* Per-dimension frequency factors (Llama 3.1 style scaling). */
	const struct llm_gguf_tensor *ff = llm_gguf_find_tensor(ld->g, "rope_freqs.weight");
	if (ff) {
		if (ff->type != LLM_F32 || ff->n_dims != 1 || ff->ne[0] != half)
			return llm_error(LLM_EFORMAT, "%s: tensor rope_freqs.weight: expected "
			                 "f32 [%d]", ld->path, half);
		const float *f = ff->data;
		for (int i = 0; i < half; i++) {
			float v;
			memcpy(&v, &f[i], sizeof(v));
			if (!(v > 0) || !isfinite(v))
				return llm_error(LLM_EFORMAT, "%s: rope_freqs.weight[%d] is not "
				                 "positive", ld->path, i);
			r->inv_freq[i] /= v;
		}
	}
	return 0;
}

static int load_hparams(struct loader *ld, struct llm_model *m)
{
	struct llm_hparams *hp = &m->hp;
	const char *arch;
	int rc;

	rc = llm_gguf_get_str(ld->g, "general.architecture", &arch);
	if (rc == LLM_ENOTFOUND)
		return llm_error(LLM_EFORMAT, "%s: missing metadata key "
		                 "general.architecture", ld->path);
	if (rc)
		return rc;
	if (!strcmp(arch, "llama") || !strcmp(arch, "mistral"))
		hp->arch = LLM_ARCH_LLAMA;
	else if (!strcmp(arch, "qwen2"))
		hp->arch = LLM_ARCH_QWEN2;
	else
		return llm_error(LLM_EUNSUPPORTED, "%s: architecture '%s' is not supported "
		                 "(llama, mistral and qwen2 are)", ld->path, arch);
	snprintf(ld->arch, sizeof(ld->arch), "%s", arch);

	hp->n_ctx_train = 2048;
	hp->rms_eps = 1e-5f;
	if ((rc = key_u32(ld, "embedding_length", &hp->n_embd, true, 1)) ||
	    (rc = key_u32(ld, "feed_forward_length", &hp->n_ff, true, 1)) ||
	    (rc = key_u32(ld, "block_count", &hp->n_layer, true, 1)) ||
	    (rc = key_u32(ld, "attention.head_count", &hp->n_head, true, 1)) ||
	    (rc = key_u32(ld, "context_length", &hp->n_ctx_train, false, 1)) ||
	    (rc = key_f32(ld, "attention.layer_norm_rms_epsilon", &hp->rms_eps)))
		return rc;
	hp->n_head_kv = hp->n_head;
	if ((rc = key_u32(ld, "attention.head_count_kv", &hp->n_head_kv, false, 1)))
		return rc;
	if (hp->n_head % hp->n_head_kv)
		return llm_error(LLM_EFORMAT, "%s: %d heads is not a multiple of %d KV "
		                 "heads", ld->path, hp->n_head, hp->n_head_kv);
	hp->head_dim = hp->n_embd / hp->n_head;
	if ((rc = key_u32(ld, "attention.key_length", &hp->head_dim, false, 1)))
		return rc;
	int v_dim = hp->head_dim;
	if ((rc = key_u32(ld, "attention.value_length", &v_dim, false, 1)))
		return rc;
	if (v_dim != hp->head_dim)
		return llm_error(LLM_EUNSUPPORTED, "%s: key length %d != value length %d",
		                 ld->path, hp->head_dim, v_dim);
	if (hp->head_dim > 512)
		return llm_error(LLM_EUNSUPPORTED, "%s: head size %d is too large",
		                 ld->path, hp->head_dim);
	if (!(hp->rms_eps > 0))
		return llm_error(LLM_EFORMAT, "%s: RMSNorm epsilon must be positive",
		                 ld->path);

	/* The vocabulary size is the embedding's row count. */
	const struct llm_gguf_tensor *te = llm_gguf_find_tensor(ld->g, "token_embd.weight");
	if (!te)
		return llm_error(LLM_EFORMAT, "%s: missing tensor token_embd.weight",
		                 ld->path);
	if (te->n_dims != 2 || te->ne[1] < 1 || te->ne[1] > (1 << 24))
		return llm_error(LLM_EFORMAT, "%s: tensor token_embd.weight: bad shape",
		                 ld->path);
	hp->n_vocab = (int)te->ne[1];
	return load_rope(ld, m);
}

int llm_model_from_gguf(struct llm_model **out, struct llm_gguf *g)
{
	struct loader ld = { .g = g, .path = llm_gguf_path(g) };
	struct llm_model *m = calloc(1, sizeof(*m));
	const char *name = NULL;
	int rc;

	if (!m)
		return llm_error(LLM_ENOMEM, "out of memory");
	if ((rc = load_hparams(&ld, m)))
		goto fail;
	const struct llm_hparams *hp = &m->hp;
	if ((rc = bind(&ld, &m->tok_embd, "token_embd.weight", hp->n_embd,
	               hp->n_vocab, true)) ||
	    (rc = bind(&ld, &m->output_norm, "output_norm.weight", hp->n_embd, 0,
	               true)) ||
	    (rc = bind(&ld, &m->output, "output.weight", hp->n_embd, hp->n_vocab,
	               false)))
		goto fail;
	if (!m->output.data) {
		m->output = m->tok_embd;
		m->tied_output = true;
	}
	m->layers = calloc(hp->n_layer, sizeof(*m->layers));
	if (!m->layers) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	for (int il = 0; il < hp->n_layer; il++)
		if ((rc = bind_layer(&ld, m, il)))
			goto fail;
	if (llm_gguf_get_str(g, "general.name", &name) == 0 && name)
		m->name = strdup(name);
	m->gguf = g;
	*out = m;
	return 0;
fail:
	m->gguf = NULL;
	llm_model_free(m);
	return rc;
}

int llm_model_load(struct llm_model **out, const char *path)
{
	struct llm_model_params p = { .use_mmap = false };
	return llm_model_load_ex(out, path, &p);
}

int llm_model_load_ex(struct llm_model **out, const char *path,
                      const struct llm_model_params *p)
{
	struct llm_gguf *g;
	int rc = llm_gguf_open_ex(&g, path, p->use_mmap ? 0 : LLM_MAP_PRIVATE);
	if (rc)
		return rc;
	rc = llm_model_from_gguf(out, g);
	if (rc)
		llm_gguf_free(g);
	return rc;
}

void llm_model_free(struct llm_model *m)
{
	if (!m)
		return;
	free(m->hp.rope.inv_freq);
	free(m->layers);
	free(m->name);
	llm_gguf_free(m->gguf);
	free(m);
}

static const struct llm_tensor *layer_tensors(const struct llm_layer *l, int i)
{
	const struct llm_tensor *ts[] = {
		&l->attn_norm, &l->wq, &l->wk, &l->wv, &l->wo, &l->bq, &l->bk, &l->bv,
		&l->ffn_norm, &l->w_gate, &l->w_up, &l->w_down,
	};
	return i < (int)(sizeof(ts) / sizeof(ts[0])) ? ts[i] : NULL;
}

int64_t llm_model_n_params(const struct llm_model *m)
{
	int64_t n = llm_tensor_nelements(&m->tok_embd) +
	            llm_tensor_nelements(&m->output_norm);
	if (!m->tied_output)
		n += llm_tensor_nelements(&m->output);
	for (int il = 0; il < m->hp.n_layer; il++) {
		const struct llm_tensor *t;
		for (int i = 0; (t = layer_tensors(&m->layers[il], i)); i++)
			if (t->data)
				n += llm_tensor_nelements(t);
	}
	return n;
}

uint64_t llm_model_bytes_per_token(const struct llm_model *m)
{
	uint64_t b = llm_tensor_row_size(&m->tok_embd) + m->output_norm.nbytes +
	             m->output.nbytes;
	for (int il = 0; il < m->hp.n_layer; il++) {
		const struct llm_tensor *t;
		for (int i = 0; (t = layer_tensors(&m->layers[il], i)); i++)
			if (t->data)
				b += t->nbytes;
	}
	return b;
}
