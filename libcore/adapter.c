/*
 * adapter.c - LoRA adapter files: PEFT directories (adapter_config.json +
 * adapter_model.safetensors) and llama.cpp GGUF adapters, read and written
 * (formats in lora.h).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/safetensors.h"
#include "llmkit/util.h"

static const char *const gguf_names[LLM_LORA_N] = {
	"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};

/* Q/K rows are permuted between HF and GGUF order ("llama" only). */
static int perm_heads(const struct llm_model *m, int t)
{
	if (m->hp.arch != LLM_ARCH_LLAMA)
		return 0;
	return t == LLM_LORA_Q ? m->hp.n_head : t == LLM_LORA_K ? m->hp.n_head_kv : 0;
}

/* The HF row that GGUF row r comes from (heads of rows/n_heads rows). */
static int64_t hf_row(int64_t r, int64_t rows, int n_heads)
{
	if (!n_heads)
		return r;
	int64_t hd = rows / n_heads, k = r % hd;
	return r - k + (k % 2) * (hd / 2) + k / 2;
}

static void peft_name(char *buf, size_t n, int il, int t, char ab)
{
	snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", il,
	         t >= LLM_LORA_GATE ? "mlp" : "self_attn", llm_lora_target_name(t), ab);
}

static void peft_module(char *buf, size_t n, int il, int t)
{
	snprintf(buf, n, "model.layers.%d.%s.%s", il,
	         t >= LLM_LORA_GATE ? "mlp" : "self_attn", llm_lora_target_name(t));
}

/* ---------------------------------------------------------------- reading */

/* Per-matrix ranks and scales as found in a file; the adapter-level scale
 * is the first matrix's, and matrices whose scale differs get the ratio
 * folded into B. */
struct found {
	int rank;
	float scale;
	const void *a, *b;
	enum llm_dtype ta, tb;
	bool a_rows_first;   /* a stored [rank, n_in] (always, both formats) */
};

static int build(struct llm_lora **out, const struct llm_model *m,
                 struct found *f, const char *path, bool from_hf, float alpha,
                 bool rslora)
{
	int n = m->hp.n_layer * LLM_LORA_N, rc;
	int *ranks = calloc(n, sizeof(int));
	struct llm_lora *a;
	float scale = 0;

	if (!ranks)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++) {
		ranks[i] = f[i].rank;
		if (f[i].rank && !scale)
			scale = f[i].scale;
	}
	if (!scale) {
		free(ranks);
		return llm_error(LLM_EFORMAT, "%s: no LoRA tensors for this model", path);
	}
	rc = llm_lora_new_ranks(&a, m, ranks);
	free(ranks);
	if (rc)
		return rc;
	a->scale = scale;
	a->alpha = alpha;
	a->rslora = rslora;
	for (int i = 0; i < n; i++) {
		struct llm_lora_mat *lm = &a->m[i];
		if (!lm->a)
			continue;
		int t = i % LLM_LORA_N, ph = from_hf ? perm_heads(m, t) : 0;
		llm_to_float_fn ca = llm_dtype_traits(f[i].ta)->to_float;
		llm_to_float_fn cb = llm_dtype_traits(f[i].tb)->to_float;
		size_t ea = llm_dtype_traits(f[i].ta)->type_size;
		size_t eb = llm_dtype_traits(f[i].tb)->type_size;
		ca(f[i].a, lm->a, (int64_t)lm->rank * lm->n_in);
		for (int64_t r = 0; r < lm->n_out; r++)
			cb((const char *)f[i].b + hf_row(r, lm->n_out, ph) * lm->rank * eb,
			   lm->b + r * lm->rank, lm->rank);
		(void)ea;
		if (f[i].scale != scale)
			for (int64_t j = 0; j < (int64_t)lm->n_out * lm->rank; j++)
				lm->b[j] *= f[i].scale / scale;
	}
	a->path = strdup(path);
	*out = a;
	return 0;
}

static bool float_type(enum llm_dtype t)
{
	return t == LLM_F32 || t == LLM_F16 || t == LLM_BF16;
}

static int check_pair(const char *path, const char *name, const struct llm_lora_mat *shape,
                      int64_t a0, int64_t a1, int64_t b0, int64_t b1)
{
	/* a is [rank, n_in], b is [n_out, rank] (row-major) */
	if (a1 != shape->n_in || b0 != shape->n_out || a0 != b1 || a0 < 1)
		return llm_error(LLM_EFORMAT, "%s: %s: LoRA shapes [%lld, %lld] and "
		                 "[%lld, %lld] do not fit a %d x %d weight", path, name,
		                 (long long)a0, (long long)a1, (long long)b0, (long long)b1,
		                 shape->n_out, shape->n_in);
	return 0;
}

/* A number field of adapter_config.json: dflt when absent or null,
 * LLM_EFORMAT when it is not a number in [lo, hi]. */
static int cfg_num(json_t *o, const char *path, const char *key, double lo,
                   double hi, double dflt, double *out)
{
	json_t *v = json_object_get(o, key);
	*out = dflt;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || json_number_value(v) < lo ||
	    json_number_value(v) > hi)
		return llm_error(LLM_EFORMAT, "%s: \"%s\" must be a number in [%g, %g]",
		                 path, key, lo, hi);
	*out = json_number_value(v);
	return 0;
}

static int cfg_bool(json_t *o, const char *path, const char *key, bool *out)
{
	json_t *v = json_object_get(o, key);
	*out = false;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return llm_error(LLM_EFORMAT, "%s: \"%s\" must be true or false", path,
		                 key);
	*out = json_is_true(v);
	return 0;
}

/* alpha_pattern / rank_pattern keys match a module name by suffix. */
static json_t *pattern_get(json_t *pat, const char *module)
{
	const char *key;
	json_t *v;
	if (!json_is_object(pat))
		return NULL;
	json_object_foreach(pat, key, v) {
		size_t lk = strlen(key), lm = strlen(module);
		if (lk <= lm && !strcmp(module + lm - lk, key) &&
		    (lk == lm || module[lm - lk - 1] == '.'))
			return v;
	}
	return NULL;
}

/*
 * A PEFT tensor by its usual name (a causal LM: base_model.model.model.
 * layers...), or as saved from a bare base model (base_model.model.
 * layers...) or with the adapter's name left in (...lora_A.default.weight).
 */
static const struct llm_safetensors_tensor *
peft_find(const struct llm_safetensors *st, const char *name)
{
	static const char full[] = "base_model.model.model.";
	const struct llm_safetensors_tensor *t = llm_safetensors_find(st, name);
	char alt[300];
	size_t n = strlen(name);
	if (t)
		return t;
	snprintf(alt, sizeof(alt), "base_model.model.%s", name + strlen(full));
	if ((t = llm_safetensors_find(st, alt)))
		return t;
	/* "...lora_A.weight" -> "...lora_A.default.weight" */
	snprintf(alt, sizeof(alt), "%.*s.default.weight", (int)(n - 7), name);
	return llm_safetensors_find(st, alt);
}

static int load_peft(struct llm_lora **out, const char *dir, const char *st_path,
                     const struct llm_model *m)
{
	char cfg_path[4096], name[256], module[200];
	struct llm_safetensors *st = NULL;
	json_t *cfg = NULL;
	json_error_t jerr;
	int n = m->hp.n_layer * LLM_LORA_N, rc = 0;
	struct found *f = calloc(n, sizeof(*f));

	if (!f)
		return llm_error(LLM_ENOMEM, "out of memory");
	snprintf(cfg_path, sizeof(cfg_path), "%s/adapter_config.json", dir);
	cfg = json_load_file(cfg_path, 0, &jerr);
	if (!cfg) {
		rc = llm_error(LLM_EFORMAT, "%s: %s (line %d)", cfg_path, jerr.text,
		               jerr.line);
		goto cleanup;
	}
	if (!json_is_object(cfg)) {
		rc = llm_error(LLM_EFORMAT, "%s: not a JSON object", cfg_path);
		goto cleanup;
	}
	json_t *pt = json_object_get(cfg, "peft_type");
	if (pt && (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))) {
		rc = llm_error(LLM_EUNSUPPORTED, "%s: peft_type %s is not supported (LORA "
		               "is)", cfg_path, json_is_string(pt) ? json_string_value(pt)
		                                                   : "(not a string)");
		goto cleanup;
	}
	double r_cfg, alpha_d, dropout;
	bool rslora, dora, fifo;
	if ((rc = cfg_num(cfg, cfg_path, "r", 1, 65536, 8, &r_cfg)) ||
	    (rc = cfg_num(cfg, cfg_path, "lora_alpha", -1e9, 1e9, r_cfg, &alpha_d)) ||
	    (rc = cfg_num(cfg, cfg_path, "lora_dropout", 0, 1, 0, &dropout)) ||
	    (rc = cfg_bool(cfg, cfg_path, "use_rslora", &rslora)) ||
	    (rc = cfg_bool(cfg, cfg_path, "use_dora", &dora)) ||
	    (rc = cfg_bool(cfg, cfg_path, "fan_in_fan_out", &fifo)))
		goto cleanup;
	float alpha = (float)alpha_d;
	json_t *alpha_pat = json_object_get(cfg, "alpha_pattern");
	if (alpha_pat && !json_is_null(alpha_pat) && !json_is_object(alpha_pat)) {
		rc = llm_error(LLM_EFORMAT, "%s: \"alpha_pattern\" must be an object",
		               cfg_path);
		goto cleanup;
	}
	if (dora || fifo) {
		rc = llm_error(LLM_EUNSUPPORTED, "%s: %s adapters are not supported",
		               cfg_path, dora ? "DoRA (use_dora)" : "fan_in_fan_out");
		goto cleanup;
	}
	if ((rc = llm_safetensors_open(&st, st_path)))
		goto cleanup;

	int64_t used = 0;
	for (int i = 0; i < n; i++) {
		int il = i / LLM_LORA_N, t = i % LLM_LORA_N;
		const struct llm_safetensors_tensor *ta, *tb;
		peft_name(name, sizeof(name), il, t, 'A');
		ta = peft_find(st, name);
		peft_name(name, sizeof(name), il, t, 'B');
		tb = peft_find(st, name);
		if (!ta && !tb)
			continue;
		if (!ta || !tb) {
			rc = llm_error(LLM_EFORMAT, "%s: %s has only one of lora_A and lora_B",
			               st_path, name);
			goto cleanup;
		}
		used += 2;
		const struct llm_tensor *w = llm_lora_base_weight(m, il, t);
		struct llm_lora_mat shape = { (int)w->ne[0], (int)w->ne[1], 0, 0, 0 };
		if (ta->n_dims != 2 || tb->n_dims != 2 || !float_type(ta->type) ||
		    !float_type(tb->type)) {
			rc = llm_error(LLM_EFORMAT, "%s: %s: LoRA tensors must be 2-d f32, f16 "
			               "or bf16", st_path, name);
			goto cleanup;
		}
		if ((rc = check_pair(st_path, name, &shape, ta->shape[0], ta->shape[1],
		                     tb->shape[0], tb->shape[1])))
			goto cleanup;
		peft_module(module, sizeof(module), il, t);
		json_t *ap = pattern_get(alpha_pat, module);
		if (ap && !json_is_number(ap)) {
			rc = llm_error(LLM_EFORMAT, "%s: alpha_pattern for %s is not a number",
			               cfg_path, module);
			goto cleanup;
		}
		float al = ap ? (float)json_number_value(ap) : alpha;
		f[i] = (struct found){ (int)ta->shape[0],
		                       llm_lora_scale_of(al, (int)ta->shape[0], rslora),
		                       ta->data, tb->data, ta->type, tb->type, true };
	}
	if (used != llm_safetensors_n_tensors(st)) {
		for (int64_t j = 0; j < llm_safetensors_n_tensors(st); j++) {
			const char *nm = llm_safetensors_tensor(st, j)->name;
			if (!strstr(nm, ".lora_A.") && !strstr(nm, ".lora_B."))
				continue;
			int il;
			if ((sscanf(nm, "base_model.model.model.layers.%d.", &il) == 1 ||
			     sscanf(nm, "base_model.model.layers.%d.", &il) == 1) &&
			    (il < 0 || il >= m->hp.n_layer)) {
				rc = llm_error(LLM_EFORMAT, "%s: %s: layer %d does not exist in "
				               "a model of %d layers", st_path, nm, il,
				               m->hp.n_layer);
				goto cleanup;
			}
		}
		/* name one tensor that was not used */
		const char *odd = "?";
		for (int64_t j = 0; j < llm_safetensors_n_tensors(st) && *odd == '?'; j++) {
			const char *nm = llm_safetensors_tensor(st, j)->name;
			bool known = false;
			for (int i = 0; i < n && !known; i++)
				for (int ab = 0; ab < 2 && !known; ab++) {
					if (!f[i].rank)
						continue;
					peft_name(name, sizeof(name), i / LLM_LORA_N, i % LLM_LORA_N,
					          ab ? 'B' : 'A');
					known = peft_find(st, name) == llm_safetensors_tensor(st, j);
				}
			if (!known)
				odd = nm;
		}
		rc = llm_error(LLM_EUNSUPPORTED, "%s: %s is not a LoRA pair tensor of a "
		               "q/k/v/o/gate/up/down projection of this model", st_path,
		               odd);
		goto cleanup;
	}
	rc = build(out, m, f, dir, true, alpha, rslora);
	if (!rc)
		(*out)->dropout = (float)dropout;
cleanup:
	free(f);
	json_decref(cfg);
	llm_safetensors_free(st);
	return rc;
}

static int load_gguf(struct llm_lora **out, const char *path,
                     const struct llm_model *m)
{
	struct llm_gguf *g;
	const char *s;
	float alpha = 0;
	char name[128];
	int n = m->hp.n_layer * LLM_LORA_N, rc;
	struct found *f = calloc(n, sizeof(*f));

	if (!f)
		return llm_error(LLM_ENOMEM, "out of memory");
	if ((rc = llm_gguf_open(&g, path))) {
		free(f);
		return rc;
	}
	if (llm_gguf_get_str(g, "general.type", &s) || strcmp(s, "adapter") ||
	    llm_gguf_get_str(g, "adapter.type", &s) || strcmp(s, "lora")) {
		rc = llm_error(LLM_EFORMAT, "%s: not a LoRA adapter (general.type = "
		               "adapter, adapter.type = lora expected)", path);
		goto cleanup;
	}
	if (!llm_gguf_get_str(g, "general.architecture", &s) &&
	    strcmp(s, llm_arch_name(m->hp.arch)) &&
	    !(m->hp.arch == LLM_ARCH_LLAMA && !strcmp(s, "mistral"))) {
		rc = llm_error(LLM_EINVAL, "%s: adapter for architecture %s, the model is "
		               "%s", path, s, llm_arch_name(m->hp.arch));
		goto cleanup;
	}
	rc = llm_gguf_get_f32(g, "adapter.lora.alpha", &alpha);
	if (rc && rc != LLM_ENOTFOUND)
		goto cleanup;
	int64_t used = 0;
	for (int i = 0; i < n; i++) {
		int il = i / LLM_LORA_N, t = i % LLM_LORA_N;
		const struct llm_gguf_tensor *ta, *tb;
		snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_a", il, gguf_names[t]);
		ta = llm_gguf_find_tensor(g, name);
		snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_b", il, gguf_names[t]);
		tb = llm_gguf_find_tensor(g, name);
		if (!ta && !tb)
			continue;
		if (!ta || !tb) {
			rc = llm_error(LLM_EFORMAT, "%s: %s has only one of lora_a and lora_b",
			               path, name);
			goto cleanup;
		}
		used += 2;
		const struct llm_tensor *w = llm_lora_base_weight(m, il, t);
		struct llm_lora_mat shape = { (int)w->ne[0], (int)w->ne[1], 0, 0, 0 };
		if (!float_type(ta->type) || !float_type(tb->type) || ta->n_dims != 2 ||
		    tb->n_dims != 2) {
			rc = llm_error(LLM_EFORMAT, "%s: %s: LoRA tensors must be 2-d f32, f16 "
			               "or bf16", path, name);
			goto cleanup;
		}
		if ((rc = check_pair(path, name, &shape, ta->ne[1], ta->ne[0], tb->ne[1],
		                     tb->ne[0])))
			goto cleanup;
		int r = (int)ta->ne[1];
		f[i] = (struct found){ r, alpha ? alpha / r : 1.0f, ta->data, tb->data,
		                       ta->type, tb->type, true };
	}
	if (used != llm_gguf_n_tensors(g)) {
		const char *odd = "?";
		for (int64_t j = 0; j < llm_gguf_n_tensors(g) && *odd == '?'; j++) {
			const char *nm = llm_gguf_tensor(g, j)->name;
			int il, k = 0;
			char proj[32], ab;
			bool known = false;
			if (sscanf(nm, "blk.%d.%31[a-z_].weight.lora_%c%n", &il, proj, &ab,
			           &k) == 3 && !nm[k] && il >= 0 && il < m->hp.n_layer)
				for (int t = 0; t < LLM_LORA_N; t++)
					known |= !strcmp(proj, gguf_names[t]) && f[il * LLM_LORA_N + t].rank;
			if (!known)
				odd = nm;
		}
		rc = llm_error(LLM_EUNSUPPORTED, "%s: %s is not a LoRA pair tensor of a "
		               "q/k/v/o/gate/up/down projection of this model", path, odd);
		goto cleanup;
	}
	rc = build(out, m, f, path, false, alpha, false);
	if (!rc && !alpha)
		(*out)->alpha = (float)(*out)->rank;
cleanup:
	free(f);
	llm_gguf_free(g);
	return rc;
}

int llm_lora_load(struct llm_lora **out, const char *path,
                  const struct llm_model *m)
{
	struct stat sb;
	char st_path[4096];
	size_t l = strlen(path);

	if (stat(path, &sb))
		return llm_error(LLM_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode)) {
		snprintf(st_path, sizeof(st_path), "%s/adapter_model.safetensors", path);
		return load_peft(out, path, st_path, m);
	}
	if (l > 12 && !strcmp(path + l - 12, ".safetensors")) {
		char dir[4096];
		const char *slash = strrchr(path, '/');
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1,
		         slash ? path : ".");
		return load_peft(out, dir, path, m);
	}
	return load_gguf(out, path, m);
}

/* ---------------------------------------------------------------- writing */

struct b_src {
	const struct llm_lora_mat *lm;
	int ph;
};

static int fill_b_hf(void *user, const char *name, void *dst, size_t nbytes)
{
	struct b_src *s = user;
	const struct llm_lora_mat *lm = s->lm;
	float *d = dst;
	(void)name;
	(void)nbytes;
	for (int64_t r = 0; r < lm->n_out; r++)
		memcpy(d + hf_row(r, lm->n_out, s->ph) * lm->rank, lm->b + r * lm->rank,
		       lm->rank * sizeof(float));
	return 0;
}

static int mkdir_p(const char *dir)
{
	if (mkdir(dir, 0777) && errno != EEXIST)
		return llm_error(LLM_EIO, "%s: %s", dir, strerror(errno));
	return 0;
}

int llm_lora_save_peft(const struct llm_lora *a, const struct llm_model *m,
                       const char *dir)
{
	struct llm_safetensors_writer *w = llm_safetensors_writer_new();
	int n = a->n_layer * LLM_LORA_N, rc;
	struct b_src *bs = calloc(n, sizeof(*bs));
	char path[4096], name[256], module[200];
	json_t *cfg = json_object(), *tm = json_array(), *rp = json_object(),
	       *ap = json_object();
	char *text = NULL;

	if (!w || !bs || !cfg || !tm || !rp || !ap) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = mkdir_p(dir)))
		goto cleanup;
	llm_safetensors_set_metadata(w, "format", "pt");
	for (int i = 0; i < n; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		int il = i / LLM_LORA_N, t = i % LLM_LORA_N;
		if (!lm->a)
			continue;
		int64_t sa[2] = { lm->rank, lm->n_in }, sb[2] = { lm->n_out, lm->rank };
		bs[i] = (struct b_src){ lm, perm_heads(m, t) };
		peft_name(name, sizeof(name), il, t, 'A');
		if ((rc = llm_safetensors_add(w, name, LLM_F32, 2, sa, lm->a)))
			goto cleanup;
		peft_name(name, sizeof(name), il, t, 'B');
		if ((rc = llm_safetensors_add_fill(w, name, LLM_F32, 2, sb, fill_b_hf,
		                                   &bs[i])))
			goto cleanup;
		if (lm->rank != a->rank) {
			peft_module(module, sizeof(module), il, t);
			json_object_set_new(rp, module, json_integer(lm->rank));
			/* keep the adapter's scale for this rank */
			float al = a->rslora ? a->scale * sqrtf((float)lm->rank)
			                     : a->scale * lm->rank;
			json_object_set_new(ap, module, json_real(al));
		}
	}
	for (int t = 0; t < LLM_LORA_N; t++)
		if (a->targets & (1u << t))
			json_array_append_new(tm, json_string(llm_lora_target_name(t)));
	snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
	if ((rc = llm_safetensors_write_file(w, path)))
		goto cleanup;

	json_object_set_new(cfg, "peft_type", json_string("LORA"));
	json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
	json_object_set_new(cfg, "base_model_name_or_path",
	                    m->name ? json_string(m->name) : json_null());
	json_object_set_new(cfg, "r", json_integer(a->rank));
	json_object_set_new(cfg, "lora_alpha", json_real(a->alpha));
	json_object_set_new(cfg, "lora_dropout", json_real(a->dropout));
	json_object_set_new(cfg, "target_modules", tm);
	tm = NULL;
	json_object_set_new(cfg, "use_rslora", json_boolean(a->rslora));
	json_object_set_new(cfg, "use_dora", json_false());
	json_object_set_new(cfg, "bias", json_string("none"));
	json_object_set_new(cfg, "fan_in_fan_out", json_false());
	json_object_set_new(cfg, "inference_mode", json_true());
	json_object_set_new(cfg, "init_lora_weights", json_true());
	json_object_set_new(cfg, "rank_pattern", rp);
	json_object_set_new(cfg, "alpha_pattern", ap);
	rp = ap = NULL;
	text = json_dumps(cfg, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
	struct llm_ofile *of;
	snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
	if (!text) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = llm_ofile_open(&of, path)))
		goto cleanup;
	fputs(text, of->f);
	fputc('\n', of->f);
	rc = llm_ofile_commit(of);
cleanup:
	free(text);
	json_decref(cfg);
	json_decref(tm);
	json_decref(rp);
	json_decref(ap);
	free(bs);
	llm_safetensors_writer_free(w);
	return rc;
}

int llm_lora_save_gguf(const struct llm_lora *a, const struct llm_model *m,
                       const char *path)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	int n = a->n_layer * LLM_LORA_N, rc = 0;
	char name[128];
	float *bscaled = NULL;
	int64_t nb = 0;

	if (!w)
		return llm_error(LLM_ENOMEM, "out of memory");
	/* one alpha: matrices of a smaller rank get their B scaled to match */
	for (int i = 0; i < n; i++)
		if (a->m[i].a && a->m[i].rank != a->rank)
			nb += (int64_t)a->m[i].rank * a->m[i].n_out;
	if (nb && !(bscaled = malloc(nb * sizeof(float)))) {
		llm_gguf_writer_free(w);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	float alpha = a->scale * a->rank;  /* llama.cpp: scale = alpha / rank */
	if ((rc = llm_gguf_set_str(w, "general.architecture",
	                           llm_arch_name(m->hp.arch))) ||
	    (rc = llm_gguf_set_str(w, "general.type", "adapter")) ||
	    (rc = llm_gguf_set_str(w, "adapter.type", "lora")) ||
	    (rc = llm_gguf_set_f32(w, "adapter.lora.alpha", alpha)))
		goto cleanup;
	float *bp = bscaled;
	for (int i = 0; i < n; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		int il = i / LLM_LORA_N, t = i % LLM_LORA_N;
		if (!lm->a)
			continue;
		int64_t na[2] = { lm->n_in, lm->rank }, nbb[2] = { lm->rank, lm->n_out };
		const float *b = lm->b;
		if (lm->rank != a->rank) {
			/* alpha/rank_i must give scale: B *= rank / rank_i */
			for (int64_t j = 0; j < (int64_t)lm->rank * lm->n_out; j++)
				bp[j] = lm->b[j] * (float)lm->rank / (float)a->rank;
			b = bp;
			bp += (int64_t)lm->rank * lm->n_out;
		}
		snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_a", il, gguf_names[t]);
		if ((rc = llm_gguf_add_tensor(w, name, LLM_F32, 2, na, lm->a)))
			goto cleanup;
		snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_b", il, gguf_names[t]);
		if ((rc = llm_gguf_add_tensor(w, name, LLM_F32, 2, nbb, b)))
			goto cleanup;
	}
	rc = llm_gguf_write_file(w, path);
cleanup:
	free(bscaled);
	llm_gguf_writer_free(w);
	return rc;
}
