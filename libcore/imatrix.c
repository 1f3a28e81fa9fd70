/*
 * imatrix.c - importance matrices (imatrix.h): collected by wrapping the
 * backend's matmul, saved and loaded as llama.cpp's imatrix GGUF.
 */
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/gguf.h"
#include "llmkit/imatrix.h"

struct entry {
	char *name;
	int64_t n;
	double *sum2;      /* (n) */
	double count;      /* tokens */
	float *mean;       /* (n) cache for llm_imatrix_get */
};

/* The wrapped op table: be->ops points at ops, the first member. */
struct wrap {
	struct llm_backend_ops ops;
	const struct llm_backend_ops *orig;
	struct llm_imatrix *im;
};

struct llm_imatrix {
	struct entry *e;
	int n, cap;
	struct wrap wrap;
	struct llm_backend *be;    /* attached to */
	int n_chunks, chunk_size;
	char *dataset;
};

int llm_imatrix_new(struct llm_imatrix **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : llm_error(LLM_ENOMEM, "out of memory");
}

void llm_imatrix_free(struct llm_imatrix *im)
{
	if (!im)
		return;
	LLM_ASSERT(!im->be);
	for (int i = 0; i < im->n; i++) {
		free(im->e[i].name);
		free(im->e[i].sum2);
		free(im->e[i].mean);
	}
	free(im->e);
	free(im->dataset);
	free(im);
}

static struct entry *find(struct llm_imatrix *im, const char *name)
{
	for (int i = 0; i < im->n; i++)
		if (!strcmp(im->e[i].name, name))
			return &im->e[i];
	return NULL;
}

static struct entry *add(struct llm_imatrix *im, const char *name, int64_t n)
{
	if (im->n == im->cap) {
		int cap = im->cap ? 2 * im->cap : 64;
		struct entry *e = realloc(im->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		im->e = e;
		im->cap = cap;
	}
	struct entry *e = &im->e[im->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	e->sum2 = calloc(n, sizeof(double));
	if (!e->name || !e->sum2) {
		free(e->name);
		free(e->sum2);
		return NULL;
	}
	e->n = n;
	im->n++;
	return e;
}

static void im_matmul(struct llm_backend *be, const struct llm_tensor *w,
                      const float *x, float *y, int n)
{
	const struct wrap *wr = (const struct wrap *)be->ops;
	struct llm_imatrix *im = wr->im;
	struct entry *e = w->name ? find(im, w->name) : NULL;
	int64_t n_in = w->ne[0];

	if (w->name && !e)
		e = add(im, w->name, n_in);
	/* an entry of another width (never in one model) is left alone */
	if (e && e->n == n_in) {
		for (int t = 0; t < n; t++) {
			const float *xt = x + (int64_t)t * n_in;
			for (int64_t j = 0; j < n_in; j++)
				e->sum2[j] += (double)xt[j] * xt[j];
		}
		e->count += n;
		free(e->mean);
		e->mean = NULL;
	}
	wr->orig->matmul(be, w, x, y, n);
}

int llm_imatrix_attach(struct llm_imatrix *im, struct llm_ctx *ctx)
{
	struct llm_backend *be = llm_ctx_backend(ctx);
	if (im->be)
		return llm_error(LLM_EINVAL, "imatrix: already attached");
	if (!be->ops->host_memory)
		return llm_error(LLM_EUNSUPPORTED, "imatrix: collecting on the %s backend "
		                 "is not supported", be->ops->name);
	im->wrap.ops = *be->ops;
	im->wrap.ops.matmul = im_matmul;
	im->wrap.orig = be->ops;
	im->wrap.im = im;
	be->ops = &im->wrap.ops;
	im->be = be;
	return 0;
}

void llm_imatrix_detach(struct llm_imatrix *im, struct llm_ctx *ctx)
{
	struct llm_backend *be = llm_ctx_backend(ctx);
	if (im->be && be == im->be && be->ops == &im->wrap.ops)
		be->ops = im->wrap.orig;
	im->be = NULL;
}

const float *llm_imatrix_get(struct llm_imatrix *im, const char *name, int64_t n_in)
{
	struct entry *e = find(im, name);
	if (!e || e->n != n_in || !(e->count > 0))
		return NULL;
	if (!e->mean) {
		e->mean = malloc(e->n * sizeof(float));
		if (!e->mean)
			return NULL;
		/* from the sums rounded to float as a saved file holds them,
		 * so a saved and reloaded matrix quantizes to the same bytes */
		for (int64_t j = 0; j < e->n; j++)
			e->mean[j] = (float)e->sum2[j] / (float)e->count;
	}
	return e->mean;
}

int llm_imatrix_n_entries(const struct llm_imatrix *im)
{
	return im->n;
}

void llm_imatrix_set_chunks(struct llm_imatrix *im, int n_chunks, int chunk_size,
                            const char *dataset)
{
	im->n_chunks = n_chunks;
	im->chunk_size = chunk_size;
	free(im->dataset);
	im->dataset = dataset ? strdup(dataset) : NULL;
}

/* ---------------------------------------------------------------- files */

int llm_imatrix_save(const struct llm_imatrix *im, const char *path)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	float **bufs = calloc(im->n + 1, 2 * sizeof(float *));
	char name[512];
	int rc = 0;

	if (!w || !bufs) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = llm_gguf_set_str(w, "general.type", "imatrix")))
		goto cleanup;
	if (im->dataset) {
		const char *ds[1] = { im->dataset };
		size_t len[1] = { strlen(im->dataset) };
		if ((rc = llm_gguf_set_arr_str(w, "imatrix.datasets", ds, len, 1)))
			goto cleanup;
	}
	if ((rc = llm_gguf_set_u32(w, "imatrix.chunk_count", (uint32_t)im->n_chunks)) ||
	    (rc = llm_gguf_set_u32(w, "imatrix.chunk_size", (uint32_t)im->chunk_size)))
		goto cleanup;
	for (int i = 0; i < im->n; i++) {
		const struct entry *e = &im->e[i];
		float *s = bufs[2 * i] = malloc(e->n * sizeof(float));
		float *c = bufs[2 * i + 1] = malloc(sizeof(float));
		if (!s || !c) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto cleanup;
		}
		for (int64_t j = 0; j < e->n; j++)
			s[j] = (float)e->sum2[j];
		*c = (float)e->count;
		int64_t ne_s[2] = { e->n, 1 }, ne_c[2] = { 1, 1 };
		snprintf(name, sizeof(name), "%s.in_sum2", e->name);
		if ((rc = llm_gguf_add_tensor(w, name, LLM_F32, 2, ne_s, s)))
			goto cleanup;
		snprintf(name, sizeof(name), "%s.counts", e->name);
		if ((rc = llm_gguf_add_tensor(w, name, LLM_F32, 2, ne_c, c)))
			goto cleanup;
	}
	rc = llm_gguf_write_file(w, path);
cleanup:
	for (int i = 0; bufs && i < 2 * im->n; i++)
		free(bufs[i]);
	free(bufs);
	llm_gguf_writer_free(w);
	return rc;
}

int llm_imatrix_load(struct llm_imatrix **out, const char *path)
{
	struct llm_gguf *g;
	struct llm_imatrix *im = NULL;
	int rc = llm_gguf_open(&g, path);
	if (rc)
		return rc;
	if ((rc = llm_imatrix_new(&im)))
		goto fail;
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		size_t len = strlen(t->name);
		const char *suf = ".in_sum2";
		if (len <= strlen(suf) || strcmp(t->name + len - strlen(suf), suf))
			continue;
		char base[512], cname[600];
		snprintf(base, sizeof(base), "%.*s", (int)(len - strlen(suf)), t->name);
		snprintf(cname, sizeof(cname), "%s.counts", base);
		const struct llm_gguf_tensor *c = llm_gguf_find_tensor(g, cname);
		if (t->type != LLM_F32 || !c || c->type != LLM_F32) {
			rc = llm_error(LLM_EFORMAT, "%s: %s: expected f32 in_sum2 and counts",
			               path, base);
			goto fail;
		}
		/* one matrix per weight (experts, ne[1] > 1, are not supported) */
		if (t->ne[1] != 1 || c->ne[0] * c->ne[1] != 1) {
			rc = llm_error(LLM_EUNSUPPORTED, "%s: %s: stacked (expert) matrices "
			               "are not supported", path, base);
			goto fail;
		}
		struct entry *e = add(im, base, t->ne[0]);
		if (!e) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto fail;
		}
		const float *s = t->data;
		float cnt;
		memcpy(&cnt, c->data, sizeof(cnt));
		for (int64_t j = 0; j < e->n; j++) {
			float v;
			memcpy(&v, &s[j], sizeof(v));
			e->sum2[j] = v;
		}
		e->count = cnt;
	}
	if (!im->n) {
		rc = llm_error(LLM_EFORMAT, "%s: no importance matrix entries (*.in_sum2)",
		               path);
		goto fail;
	}
	uint32_t v;
	if (llm_gguf_get_u32(g, "imatrix.chunk_count", &v) == 0)
		im->n_chunks = (int)v;
	if (llm_gguf_get_u32(g, "imatrix.chunk_size", &v) == 0)
		im->chunk_size = (int)v;
	llm_gguf_free(g);
	*out = im;
	return 0;
fail:
	llm_imatrix_free(im);
	llm_gguf_free(g);
	return rc;
}
