/*
 * quantize.c - a model file to a quantized model file (quant.h,
 * llm_quantize_model): the choice of type per tensor, with llama.cpp's
 * mix rules and fallbacks, and the conversion, streamed tensor by tensor
 * into an atomically written GGUF.
 */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/imatrix.h"
#include "llmkit/quant.h"
#include "cpu/pool.h"

/* ---------------------------------------------------------------- file types */

enum mix { MIX_PLAIN, MIX_Q2_K, MIX_Q3_K_S, MIX_Q3_K_M, MIX_Q3_K_L, MIX_Q4_K_S,
           MIX_Q4_K_M, MIX_Q5_K_S, MIX_Q5_K_M };

/* llama.cpp's llama_ftype numbers (general.file_type). */
static const struct ftype {
	const char *name;
	int base;
	int file_type;
	enum mix mix;
} ftypes[] = {
	{ "f32", LLM_F32, 0, MIX_PLAIN },
	{ "f16", LLM_F16, 1, MIX_PLAIN },
	{ "bf16", LLM_BF16, 32, MIX_PLAIN },
	{ "q8_0", LLM_Q8_0, 7, MIX_PLAIN },
	{ "q4_0", LLM_Q4_0, 2, MIX_PLAIN },
	{ "q4_1", LLM_Q4_1, 3, MIX_PLAIN },
	{ "q5_0", LLM_Q5_0, 8, MIX_PLAIN },
	{ "q5_1", LLM_Q5_1, 9, MIX_PLAIN },
	{ "q2_k", LLM_Q2_K, 10, MIX_Q2_K },
	{ "q3_k", LLM_Q3_K, 11, MIX_Q3_K_S },     /* as q3_k_s */
	{ "q3_k_s", LLM_Q3_K, 11, MIX_Q3_K_S },
	{ "q3_k_m", LLM_Q3_K, 12, MIX_Q3_K_M },
	{ "q3_k_l", LLM_Q3_K, 13, MIX_Q3_K_L },
	{ "q4_k", LLM_Q4_K, 14, MIX_Q4_K_S },     /* as q4_k_s */
	{ "q4_k_s", LLM_Q4_K, 14, MIX_Q4_K_S },
	{ "q4_k_m", LLM_Q4_K, 15, MIX_Q4_K_M },
	{ "q5_k", LLM_Q5_K, 16, MIX_Q5_K_S },     /* as q5_k_s */
	{ "q5_k_s", LLM_Q5_K, 16, MIX_Q5_K_S },
	{ "q5_k_m", LLM_Q5_K, 17, MIX_Q5_K_M },
	{ "q6_k", LLM_Q6_K, 18, MIX_PLAIN },
};
#define N_FTYPES ((int)(sizeof(ftypes) / sizeof(ftypes[0])))

const char *const *llm_quant_ftypes(void)
{
	static const char *names[N_FTYPES + 1];
	if (!names[0])
		for (int i = 0; i < N_FTYPES; i++)
			names[i] = ftypes[i].name;
	return names;
}

/* ---------------------------------------------------------------- rules */

enum cat { CAT_OTHER, CAT_EMBD, CAT_OUTPUT, CAT_ATTN_Q, CAT_ATTN_K, CAT_ATTN_V,
           CAT_ATTN_OUT, CAT_FFN_GATE, CAT_FFN_UP, CAT_FFN_DOWN };

static enum cat category(const char *name)
{
	static const struct { const char *s; enum cat c; } tab[] = {
		{ "attn_q.", CAT_ATTN_Q }, { "attn_k.", CAT_ATTN_K },
		{ "attn_v.", CAT_ATTN_V }, { "attn_output.", CAT_ATTN_OUT },
		{ "ffn_gate.", CAT_FFN_GATE }, { "ffn_up.", CAT_FFN_UP },
		{ "ffn_down.", CAT_FFN_DOWN },
	};
	if (!strcmp(name, "token_embd.weight"))
		return CAT_EMBD;
	if (!strcmp(name, "output.weight"))
		return CAT_OUTPUT;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strstr(name, tab[i].s))
			return tab[i].c;
	return CAT_OTHER;
}

struct model_info {
	int n_layer, n_gqa;
	bool tied;              /* no output.weight: the embedding is the output */
	bool has_imatrix;
};

/* llama.cpp's: the first and last eighth, and every third layer between. */
static bool more_bits(int i, int n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type llama_tensor_get_type gives a weight in a mix. */
static int mix_type(const struct ftype *ft, const struct model_info *mi, enum cat c,
                    int layer, int64_t ne0)
{
	int t = ft->base, n = mi->n_layer;
	enum mix m = ft->mix;

	if (c == CAT_OUTPUT || (mi->tied && c == CAT_EMBD)) {
		if (ne0 % LLM_QK_K)
			return LLM_Q8_0;
		return t == LLM_Q8_0 ? LLM_Q8_0 : LLM_Q6_K;
	}
	switch (c) {
	case CAT_ATTN_V:
		if (m == MIX_Q2_K)
			t = mi->n_gqa >= 4 ? LLM_Q4_K : LLM_Q3_K;
		else if (m == MIX_Q3_K_M)
			t = layer < 2 ? LLM_Q5_K : LLM_Q4_K;
		else if (m == MIX_Q3_K_L)
			t = LLM_Q5_K;
		else if ((m == MIX_Q4_K_M || m == MIX_Q5_K_M) && more_bits(layer, n))
			t = LLM_Q6_K;
		else if (m == MIX_Q4_K_S && layer < 4)
			t = LLM_Q5_K;
		break;
	case CAT_FFN_DOWN:
		if (m == MIX_Q2_K)
			t = LLM_Q3_K;
		else if (m == MIX_Q3_K_M)
			t = layer < n / 16 ? LLM_Q5_K : LLM_Q4_K;
		else if (m == MIX_Q3_K_L)
			t = LLM_Q5_K;
		else if ((m == MIX_Q4_K_M || m == MIX_Q5_K_M) && more_bits(layer, n))
			t = LLM_Q6_K;
		else if (m == MIX_Q4_K_S && layer < n / 8)
			t = LLM_Q5_K;
		else if ((t == LLM_Q4_0 || t == LLM_Q5_0) && mi->has_imatrix && layer < n / 8)
			t = t == LLM_Q4_0 ? LLM_Q4_1 : LLM_Q5_1;
		break;
	case CAT_ATTN_OUT:
		if (m == MIX_Q2_K)
			t = LLM_Q3_K;
		else if (m == MIX_Q3_K_M)
			t = LLM_Q4_K;
		else if (m == MIX_Q3_K_L)
			t = LLM_Q5_K;
		break;
	default:
		break;
	}
	return t;
}

/* A type whose blocks fit rows of ne0 (llama.cpp's fallbacks, then f16). */
static int fallback(int t, int64_t ne0)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	if (ne0 % tr->block_size == 0)
		return t;
	switch (t) {
	case LLM_Q2_K: case LLM_Q3_K: t = LLM_Q4_0; break;
	case LLM_Q4_K: t = LLM_Q5_0; break;
	case LLM_Q5_K: t = LLM_Q5_1; break;
	case LLM_Q6_K: t = LLM_Q8_0; break;
	default: t = LLM_F16; break;
	}
	return ne0 % llm_dtype_traits(t)->block_size ? LLM_F16 : t;
}

/* ---------------------------------------------------------------- plan */

struct item {
	const struct llm_gguf_tensor *src;
	int type;               /* written as */
	const float *imatrix;   /* (ne0) or NULL */
	uint64_t nbytes;
};

struct job {
	const struct llm_quantize_params *p;
	struct item *items;
	int n_items, done;
	struct llm_pool *pool;
	struct llm_quantize_stats *st;
};

static void notice(const struct llm_quantize_params *p, const char *fmt, ...)
	LLM_PRINTF(2, 3);

static void notice(const struct llm_quantize_params *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	if (!p->notice)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p->notice(p->user, msg);
}

static int layer_of(const char *name)
{
	int l;
	return sscanf(name, "blk.%d.", &l) == 1 ? l : -1;
}

static bool is_weight_matrix(const struct llm_gguf_tensor *t)
{
	size_t len = strlen(t->name);
	return t->n_dims >= 2 && t->ne[1] > 1 && t->ne[2] == 1 && t->ne[3] == 1 &&
	       len > 7 && !strcmp(t->name + len - 7, ".weight") &&
	       !strstr(t->name, "_norm") && llm_dtype_traits(t->type)->to_float;
}

static int plan(struct llm_gguf *g, const struct llm_quantize_params *p,
                const struct ftype *ft, regex_t *res, struct item *items,
                struct llm_quantize_stats *st)
{
	struct model_info mi = { .n_layer = 0, .n_gqa = 1, .has_imatrix = p->imatrix };
	const char *arch = NULL;
	int64_t n = llm_gguf_n_tensors(g);

	mi.tied = !llm_gguf_find_tensor(g, "output.weight");
	if (llm_gguf_get_str(g, "general.architecture", &arch) == 0 && arch) {
		char key[160];
		uint32_t v, h = 0, hkv = 0;
		snprintf(key, sizeof(key), "%s.block_count", arch);
		if (llm_gguf_get_u32(g, key, &v) == 0)
			mi.n_layer = (int)v;
		snprintf(key, sizeof(key), "%s.attention.head_count", arch);
		llm_gguf_get_u32(g, key, &h);
		snprintf(key, sizeof(key), "%s.attention.head_count_kv", arch);
		if (llm_gguf_get_u32(g, key, &hkv) || !hkv)
			hkv = h;
		if (h && hkv)
			mi.n_gqa = (int)(h / hkv);
	}
	for (int64_t i = 0; i < n; i++) {
		int l = layer_of(llm_gguf_tensor(g, i)->name);
		if (l + 1 > mi.n_layer)
			mi.n_layer = l + 1;
	}

	bool base_quantized = llm_dtype_traits(ft->base)->quantized;
	int missing_im = 0;
	for (int64_t i = 0; i < n; i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		struct item *it = &items[i];
		it->src = t;
		it->type = t->type;
		if (!is_weight_matrix(t))
			goto sized;
		enum cat c = category(t->name);
		int want = ft->base;
		bool manual = false;
		for (int k = 0; k < p->n_overrides; k++)
			if (!regexec(&res[k], t->name, 0, NULL, 0)) {
				want = p->overrides[k].type;
				manual = true;
				break;
			}
		if (!manual && !p->pure && base_quantized)
			want = mix_type(ft, &mi, c, layer_of(t->name), t->ne[0]);
		if (c == CAT_OUTPUT && p->output_type >= 0)
			want = p->output_type;
		if (c == CAT_EMBD && p->embd_type >= 0)
			want = p->embd_type;
		int fit = fallback(want, t->ne[0]);
		if (fit != want) {
			notice(p, "%s: rows of %lld are not a multiple of %s's %d: kept at %s",
			       t->name, (long long)t->ne[0], llm_dtype_name(want),
			       llm_dtype_traits(want)->block_size, llm_dtype_name(fit));
			st->n_fallback++;
		}
		it->type = fit;
		if (p->imatrix && llm_quant_uses_imatrix(fit)) {
			it->imatrix = llm_imatrix_get(p->imatrix, t->name, t->ne[0]);
			if (!it->imatrix)
				missing_im++;
		}
		st->n_weights += (uint64_t)t->ne[0] * t->ne[1];
sized:
		it->nbytes = llm_row_size(it->type, it->src->ne[0]) *
		             (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
		if (is_weight_matrix(t)) {
			st->weight_bytes_in += t->nbytes;
			st->weight_bytes_out += it->nbytes;
		}
		st->bytes_in += t->nbytes;
		st->bytes_out += it->nbytes;
		st->count[it->type]++;
		st->n_tensors++;
		if (it->type != (int)t->type)
			st->n_converted++;
	}
	if (missing_im)
		notice(p, "importance matrix: no entry for %d weights (quantized "
		       "without)", missing_im);
	return 0;
}

/* ---------------------------------------------------------------- convert */

struct conv {
	const struct item *it;
	void *dst;
	int64_t ne0;
};

#define ROWS_PER_TASK 64

static void conv_task(void *arg, int64_t r0, int64_t r1, int ith)
{
	struct conv *c = arg;
	const struct item *it = c->it;
	const struct llm_dtype_traits *from = llm_dtype_traits(it->src->type);
	size_t rb_in = llm_row_size(it->src->type, c->ne0);
	size_t rb_out = llm_row_size(it->type, c->ne0);
	float *buf = malloc((size_t)(r1 - r0) * c->ne0 * sizeof(float));
	(void)ith;
	LLM_ASSERT(buf);
	for (int64_t r = r0; r < r1; r++)
		from->to_float((const char *)it->src->data + r * rb_in,
		               buf + (r - r0) * c->ne0, c->ne0);
	llm_quantize(it->type, buf, (char *)c->dst + r0 * rb_out, r1 - r0, c->ne0,
	             it->imatrix);
	free(buf);
}

static int fill(void *user, const char *name, void *dst, size_t nbytes)
{
	struct job *j = user;
	struct item *it = NULL;
	for (int i = 0; i < j->n_items; i++)
		if (!strcmp(j->items[i].src->name, name)) {
			it = &j->items[i];
			break;
		}
	LLM_ASSERT(it && it->nbytes == nbytes);
	if (it->type == (int)it->src->type) {
		memcpy(dst, it->src->data, nbytes);
	} else {
		const struct llm_gguf_tensor *t = it->src;
		struct conv c = { it, dst, t->ne[0] };
		llm_pool_for(j->pool, t->ne[1] * t->ne[2] * t->ne[3], ROWS_PER_TASK,
		             conv_task, &c);
	}
	j->done++;
	if (j->p->progress)
		j->p->progress(j->p->user, j->done, j->n_items, name, it->src->type,
		               it->type, it->src->nbytes, it->nbytes);
	return 0;
}

int llm_quantize_model(struct llm_gguf *in, const char *out_path,
                       const struct llm_quantize_params *p,
                       struct llm_quantize_stats *st)
{
	const struct ftype *ft = NULL;
	struct llm_gguf_writer *w = NULL;
	struct item *items = NULL;
	regex_t *res = NULL;
	int n_re = 0, rc = 0;
	int64_t n = llm_gguf_n_tensors(in);
	struct job job = { .p = p };

	memset(st, 0, sizeof(*st));
	for (int i = 0; i < N_FTYPES; i++)
		if (p->ftype && !strcasecmp(p->ftype, ftypes[i].name))
			ft = &ftypes[i];
	if (!ft)
		return llm_error(LLM_EINVAL, "unknown quantization type '%s'",
		                 p->ftype ? p->ftype : "");
	res = calloc(p->n_overrides + 1, sizeof(*res));
	items = calloc(n + 1, sizeof(*items));
	if (!res || !items) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (; n_re < p->n_overrides; n_re++) {
		const struct llm_quant_override *o = &p->overrides[n_re];
		const struct llm_dtype_traits *tr = llm_dtype_traits(o->type);
		if (!tr || !tr->from_float || o->type == LLM_Q8_1 || o->type == LLM_Q8_K) {
			rc = llm_error(LLM_EINVAL, "tensor type override '%s': type %s cannot "
			               "be written", o->pattern, llm_dtype_name(o->type));
			goto cleanup;
		}
		if (regcomp(&res[n_re], o->pattern, REG_EXTENDED | REG_NOSUB)) {
			rc = llm_error(LLM_EINVAL, "tensor type override: bad regular "
			               "expression '%s'", o->pattern);
			goto cleanup;
		}
	}
	if ((rc = plan(in, p, ft, res, items, st)))
		goto cleanup;

	if (!(w = llm_gguf_writer_new())) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (int64_t i = 0; i < llm_gguf_n_kv(in); i++)
		if ((rc = llm_gguf_copy_kv(w, in, i)))
			goto cleanup;
	if ((rc = llm_gguf_set_u32(w, "general.quantization_version", 2)) ||
	    (rc = llm_gguf_set_u32(w, "general.file_type", (uint32_t)ft->file_type)))
		goto cleanup;
	for (int64_t i = 0; i < n; i++) {
		const struct llm_gguf_tensor *t = items[i].src;
		if ((rc = llm_gguf_add_tensor_fill(w, t->name, items[i].type, t->n_dims,
		                                   t->ne, fill, &job)))
			goto cleanup;
	}
	int nth = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if ((rc = llm_pool_new(&job.pool, nth > 0 ? nth : 1)))
		goto cleanup;
	job.items = items;
	job.n_items = (int)n;
	job.st = st;
	rc = llm_gguf_write_file(w, out_path);
cleanup:
	if (job.pool)
		llm_pool_free(job.pool);
	for (int i = 0; i < n_re; i++)
		regfree(&res[i]);
	free(res);
	free(items);
	llm_gguf_writer_free(w);
	return rc;
}
