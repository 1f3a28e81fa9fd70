/*
 * lora.c - LoRA adapters in memory: targets, allocation, PEFT's
 * initialisation, concatenation and merging into a base model (lora.h).
 * Reading and writing files is in adapter.c.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"

static const char *const target_names[LLM_LORA_N] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *llm_lora_target_name(int t)
{
	return t >= 0 && t < LLM_LORA_N ? target_names[t] : "?";
}

int llm_lora_parse_targets(const char *s, unsigned *mask)
{
	static const char *const short_names[LLM_LORA_N] = {
		"q", "k", "v", "o", "gate", "up", "down",
	};
	char buf[256];
	unsigned m = 0;

	if (strlen(s) >= sizeof(buf))
		return llm_error(LLM_EINVAL, "target list too long");
	strcpy(buf, s);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		int found = 0;
		if (!strcmp(tok, "all")) {
			m |= LLM_LORA_ALL;
			continue;
		}
		if (!strcmp(tok, "attn")) {
			m |= 0xfu;
			continue;
		}
		if (!strcmp(tok, "mlp") || !strcmp(tok, "ffn")) {
			m |= 0x70u;
			continue;
		}
		for (int t = 0; t < LLM_LORA_N; t++)
			if (!strcmp(tok, short_names[t]) || !strcmp(tok, target_names[t])) {
				m |= 1u << t;
				found = 1;
			}
		if (!found)
			return llm_error(LLM_EINVAL, "unknown LoRA target '%s' (q, k, v, o, "
			                 "gate, up, down, attn, mlp, all)", tok);
	}
	if (!m)
		return llm_error(LLM_EINVAL, "no LoRA targets given");
	*mask = m;
	return 0;
}

const struct llm_tensor *llm_lora_base_weight(const struct llm_model *m, int il,
                                              int t)
{
	const struct llm_layer *l = &m->layers[il];
	switch (t) {
	case LLM_LORA_Q: return &l->wq;
	case LLM_LORA_K: return &l->wk;
	case LLM_LORA_V: return &l->wv;
	case LLM_LORA_O: return &l->wo;
	case LLM_LORA_GATE: return &l->w_gate;
	case LLM_LORA_UP: return &l->w_up;
	case LLM_LORA_DOWN: return &l->w_down;
	}
	return NULL;
}

int llm_lora_parse_spec(const char *arg, char *path, size_t n, float *w)
{
	const char *colon = strrchr(arg, ':');
	size_t len = strlen(arg);
	char *end;

	*w = 1;
	if (colon && colon[1]) {
		errno = 0;
		double v = strtod(colon + 1, &end);
		if (!*end && !errno && isfinite(v) && fabs(v) <= 1e6) {
			*w = (float)v;
			len = (size_t)(colon - arg);
		}
	}
	if (!len)
		return llm_error(LLM_EINVAL, "'%s': no adapter path", arg);
	if (len >= n)
		return llm_error(LLM_EINVAL, "'%s': adapter path too long", arg);
	memcpy(path, arg, len);
	path[len] = 0;
	return 0;
}

float llm_lora_scale_of(float alpha, int rank, bool rslora)
{
	return rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
}

struct llm_lora_mat *llm_lora_mat(const struct llm_lora *a, int il, int t)
{
	if (il < 0 || il >= a->n_layer || t < 0 || t >= LLM_LORA_N)
		return NULL;
	return &a->m[il * LLM_LORA_N + t];
}

/*
 * The adapter's matrices, zeroed.  Serving streams them per token (sixteen
 * adapters of rank 16 on a 110M model are 180 MB per decode step), so big
 * adapters go on 2 MiB pages as the model does: with 4 KiB pages every page
 * of every matrix is a TLB miss.
 */
static float *alloc_params(int64_t n)
{
	const size_t huge = 2u << 20;
	size_t bytes = (size_t)(n ? n : 1) * sizeof(float);
	if (bytes >= huge) {
		size_t span = (bytes + huge - 1) & ~(huge - 1);
		float *p = aligned_alloc(huge, span);
		if (p) {
#ifdef MADV_HUGEPAGE
			madvise(p, span, MADV_HUGEPAGE);
#endif
			memset(p, 0, span);
		}
		return p;
	}
	return calloc(1, bytes);
}

int llm_lora_new_ranks(struct llm_lora **out, const struct llm_model *m,
                      const int *ranks)
{
	struct llm_lora *a = calloc(1, sizeof(*a));
	int n = m->hp.n_layer * LLM_LORA_N;
	int64_t total = 0;

	if (!a || !(a->m = calloc(n, sizeof(*a->m)))) {
		free(a);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	a->n_layer = m->hp.n_layer;
	for (int i = 0; i < n; i++) {
		const struct llm_tensor *w = llm_lora_base_weight(m, i / LLM_LORA_N,
		                                                  i % LLM_LORA_N);
		struct llm_lora_mat *lm = &a->m[i];
		lm->n_in = (int)w->ne[0];
		lm->n_out = (int)w->ne[1];
		lm->rank = ranks[i];
		if (ranks[i] > a->rank)
			a->rank = ranks[i];
		if (ranks[i])
			a->targets |= 1u << (i % LLM_LORA_N);
		total += (int64_t)ranks[i] * (lm->n_in + lm->n_out);
	}
	a->mem = alloc_params(total);
	if (!a->mem) {
		llm_lora_free(a);
		return llm_error(LLM_ENOMEM, "out of memory for %lld adapter parameters",
		                 (long long)total);
	}
	a->n_params = total;
	float *p = a->mem;
	for (int i = 0; i < n; i++) {
		struct llm_lora_mat *lm = &a->m[i];
		if (!lm->rank)
			continue;
		lm->a = p;
		p += (int64_t)lm->rank * lm->n_in;
		lm->b = p;
		p += (int64_t)lm->rank * lm->n_out;
	}
	*out = a;
	return 0;
}

int llm_lora_new(struct llm_lora **out, const struct llm_model *m, int rank,
                 float alpha, unsigned targets, bool rslora)
{
	int n = m->hp.n_layer * LLM_LORA_N, rc;
	int *ranks = calloc(n, sizeof(int));

	if (rank < 1 || rank > 65536)
		return llm_error(LLM_EINVAL, "LoRA rank %d is out of range", rank);
	if (!ranks)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++)
		ranks[i] = targets & (1u << (i % LLM_LORA_N)) ? rank : 0;
	rc = llm_lora_new_ranks(out, m, ranks);
	free(ranks);
	if (rc)
		return rc;
	(*out)->alpha = alpha;
	(*out)->rslora = rslora;
	(*out)->scale = llm_lora_scale_of(alpha, rank, rslora);
	return 0;
}

void llm_lora_free(struct llm_lora *a)
{
	if (!a)
		return;
	free(a->m);
	free(a->mem);
	free(a->path);
	free(a);
}

/* splitmix64: small, seedable, and the same everywhere. */
static uint64_t mix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void llm_lora_init_peft(struct llm_lora *a, uint64_t seed)
{
	uint64_t s = seed ^ 0x4c6f5241ull;   /* "LoRA" */
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		struct llm_lora_mat *lm = &a->m[i];
		if (!lm->a)
			continue;
		/* kaiming_uniform_(a=sqrt(5)): gain sqrt(2/6), bound
		 * gain * sqrt(3/fan_in) = 1/sqrt(fan_in) */
		float bound = 1.0f / sqrtf((float)lm->n_in);
		for (int64_t j = 0; j < (int64_t)lm->rank * lm->n_in; j++)
			lm->a[j] = bound * (2.0f * (float)((mix64(&s) >> 40) * 0x1p-24) - 1.0f);
		memset(lm->b, 0, (size_t)lm->rank * lm->n_out * sizeof(float));
	}
}

void llm_lora_mat_add_delta(const struct llm_lora_mat *lm, float scale, float *w)
{
	int r = lm->rank;
	if (!lm->a || scale == 0)
		return;
#ifdef HAVE_OPENBLAS
	/* a 4096 x 4096 matrix at rank 16 is 270 M multiply-adds */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, lm->n_out, lm->n_in, r,
	            scale, lm->b, r, lm->a, lm->n_in, 1.0f, w, lm->n_in);
#else
	for (int o = 0; o < lm->n_out; o++) {
		float *wr = w + (int64_t)o * lm->n_in;
		const float *br = lm->b + (int64_t)o * r;
		for (int k = 0; k < r; k++) {
			float c = scale * br[k];
			const float *ar = lm->a + (int64_t)k * lm->n_in;
			if (c != 0)
				for (int i = 0; i < lm->n_in; i++)
					wr[i] += c * ar[i];
		}
	}
#endif
}

/* ---------------------------------------------------------------- cat */

int llm_lora_cat(struct llm_lora **out, struct llm_lora *const *as,
                 const float *weights, int n, const struct llm_model *m)
{
	int nm = m->hp.n_layer * LLM_LORA_N, rc;
	int *ranks = calloc(nm, sizeof(int));
	struct llm_lora *c;

	if (!ranks)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < nm; i++)
		for (int j = 0; j < n; j++)
			ranks[i] += as[j]->m[i].a ? as[j]->m[i].rank : 0;
	rc = llm_lora_new_ranks(&c, m, ranks);
	free(ranks);
	if (rc)
		return rc;
	for (int i = 0; i < nm; i++) {
		struct llm_lora_mat *d = &c->m[i];
		int k0 = 0;
		for (int j = 0; j < n; j++) {
			const struct llm_lora_mat *s = &as[j]->m[i];
			if (!s->a)
				continue;
			float f = weights[j] * as[j]->scale;
			memcpy(d->a + (int64_t)k0 * d->n_in, s->a,
			       (size_t)s->rank * s->n_in * sizeof(float));
			for (int o = 0; o < d->n_out; o++)
				for (int k = 0; k < s->rank; k++)
					d->b[(int64_t)o * d->rank + k0 + k] = f * s->b[(int64_t)o * s->rank + k];
			k0 += s->rank;
		}
	}
	/* scale 1: alpha = rank (rsLoRA off) */
	c->alpha = (float)c->rank;
	c->scale = 1.0f;
	*out = c;
	return 0;
}

/* ---------------------------------------------------------------- merge */

struct merge_src {
	const struct llm_model *m;
	struct llm_lora *const *as;
	const float *weights;
	int n;
	const struct llm_tensor *t;   /* base tensor */
	int il, target;               /* -1: not adaptable */
	int out_type;
};

static int merge_fill(void *user, const char *name, void *dst, size_t nbytes)
{
	struct merge_src *s = user;
	const struct llm_tensor *t = s->t;
	int64_t n_in = t->ne[0], n_out = t->ne[1];
	const struct llm_dtype_traits *ti = llm_dtype_traits(t->type);
	const struct llm_dtype_traits *to = llm_dtype_traits(s->out_type);
	bool adapted = false;
	(void)nbytes;

	if (s->target >= 0)
		for (int j = 0; j < s->n; j++)
			adapted |= llm_lora_mat(s->as[j], s->il, s->target)->a != NULL;
	if (!adapted && (int)t->type == s->out_type) {
		memcpy(dst, t->data, t->nbytes);
		return 0;
	}
	float *w = malloc((size_t)n_in * n_out * sizeof(float));
	if (!w)
		return llm_error(LLM_ENOMEM, "%s: out of memory", name);
	size_t rb = llm_row_size(t->type, n_in);
	for (int64_t r = 0; r < n_out; r++)
		ti->to_float((const char *)t->data + r * rb, w + r * n_in, n_in);
	if (adapted)
		for (int j = 0; j < s->n; j++)
			llm_lora_mat_add_delta(llm_lora_mat(s->as[j], s->il, s->target),
			                       s->weights[j] * s->as[j]->scale, w);
	size_t ob = llm_row_size(s->out_type, n_in);
	for (int64_t r = 0; r < n_out; r++)
		to->from_float(w + r * n_in, (char *)dst + r * ob, n_in);
	free(w);
	return 0;
}

/* llama.cpp's general.file_type for a whole-model type. */
static int file_type_of(int t)
{
	switch (t) {
	case LLM_F32: return 0;
	case LLM_F16: return 1;
	case LLM_Q4_0: return 2;
	case LLM_Q4_1: return 3;
	case LLM_Q8_0: return 7;
	case LLM_Q5_0: return 8;
	case LLM_Q5_1: return 9;
	case LLM_Q2_K: return 10;
	case LLM_Q4_K: return 15;
	case LLM_Q5_K: return 17;
	case LLM_Q6_K: return 18;
	case LLM_BF16: return 32;
	}
	return -1;
}

int llm_lora_merge_write(const struct llm_model *m, struct llm_lora *const *as,
                         const float *weights, int n, int out_type,
                         const char *path)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	const struct llm_gguf *g = m->gguf;
	int n_t = (int)llm_gguf_n_tensors(g);
	struct merge_src *src = calloc(n_t ? n_t : 1, sizeof(*src));
	int rc = 0;

	if (!w || !src) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (out_type >= 0) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(out_type);
		if (!tr || !tr->from_float) {
			rc = llm_error(LLM_EUNSUPPORTED, "output type %s cannot be written "
			               "yet", llm_dtype_name(out_type));
			goto cleanup;
		}
	}
	for (int j = 0; j < n; j++)
		if (as[j]->n_layer != m->hp.n_layer) {
			rc = llm_error(LLM_EINVAL, "adapter %d has %d layers, the model %d",
			               j + 1, as[j]->n_layer, m->hp.n_layer);
			goto cleanup;
		}
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++)
		if ((rc = llm_gguf_copy_kv(w, g, i)))
			goto cleanup;

	/* tensors in the base's order; the model's bound tensors (which may
	 * have been replaced, e.g. by fine-tuned f32 copies) by name */
	for (int i = 0; i < n_t; i++) {
		const struct llm_gguf_tensor *gt = llm_gguf_tensor(g, i);
		struct merge_src *s = &src[i];
		struct llm_tensor *bound = NULL;
		static struct llm_tensor plain;
		s->m = m;
		s->as = as;
		s->weights = weights;
		s->n = n;
		s->il = s->target = -1;
		for (int il = 0; il < m->hp.n_layer && !bound; il++)
			for (int t = 0; t < LLM_LORA_N; t++) {
				const struct llm_tensor *bt = llm_lora_base_weight(m, il, t);
				if (bt->name && !strcmp(bt->name, gt->name)) {
					bound = (struct llm_tensor *)bt;
					s->il = il;
					s->target = t;
					break;
				}
			}
		if (!bound && m->tok_embd.name && !strcmp(gt->name, m->tok_embd.name))
			bound = (struct llm_tensor *)&m->tok_embd;
		if (!bound && !m->tied_output && m->output.name &&
		    !strcmp(gt->name, m->output.name))
			bound = (struct llm_tensor *)&m->output;
		if (!bound && m->output_norm.name && !strcmp(gt->name, m->output_norm.name))
			bound = (struct llm_tensor *)&m->output_norm;
		for (int il = 0; il < m->hp.n_layer && !bound; il++) {
			struct llm_layer *l = &m->layers[il];
			if (l->attn_norm.name && !strcmp(gt->name, l->attn_norm.name))
				bound = &l->attn_norm;
			else if (l->ffn_norm.name && !strcmp(gt->name, l->ffn_norm.name))
				bound = &l->ffn_norm;
			else if (l->bq.name && !strcmp(gt->name, l->bq.name))
				bound = &l->bq;        /* qwen2's biases (trained by --full) */
			else if (l->bk.name && !strcmp(gt->name, l->bk.name))
				bound = &l->bk;
			else if (l->bv.name && !strcmp(gt->name, l->bv.name))
				bound = &l->bv;
		}
		if (!bound) {
			plain = (struct llm_tensor){ .name = gt->name, .type = gt->type,
			                             .n_dims = gt->n_dims, .nbytes = gt->nbytes,
			                             .data = (void *)gt->data };
			memcpy(plain.ne, gt->ne, sizeof(plain.ne));
			bound = &plain;
		}
		/* keep a copy: plain is reused */
		struct llm_tensor *copy = malloc(sizeof(*copy));
		if (!copy) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto cleanup;
		}
		*copy = *bound;
		s->t = copy;
		int ot = copy->type;
		bool matrix = gt->n_dims == 2 && gt->ne[1] > 1;
		if (matrix && out_type >= 0 &&
		    llm_row_size(out_type, gt->ne[0]) != 0)
			ot = out_type;
		if (matrix && s->target >= 0 && !llm_dtype_traits(ot)->from_float)
			ot = LLM_F32;
		if (!matrix && ot != LLM_F32 && !llm_dtype_traits(ot)->from_float)
			ot = copy->type;
		s->out_type = ot;
		if ((rc = llm_gguf_add_tensor_fill(w, gt->name, ot, gt->n_dims, gt->ne,
		                                   merge_fill, s)))
			goto cleanup;
	}
	if (out_type >= 0 && file_type_of(out_type) >= 0 &&
	    (rc = llm_gguf_set_u32(w, "general.file_type", file_type_of(out_type))))
		goto cleanup;
	rc = llm_gguf_write_file(w, path);
cleanup:
	if (src)
		for (int i = 0; i < n_t; i++)
			free((void *)src[i].t);
	free(src);
	llm_gguf_writer_free(w);
	return rc;
}
