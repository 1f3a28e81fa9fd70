/* safetensors.c - safetensors reader (mmap, validated) and writer. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "llmkit/error.h"
#include "llmkit/safetensors.h"
#include "llmkit/util.h"

/* ---------------------------------------------------------------- dtypes */

static const struct {
	const char *name;
	enum llm_dtype type;
} st_dtypes[] = {
	{ "F32", LLM_F32 }, { "F16", LLM_F16 }, { "BF16", LLM_BF16 },
	{ "F64", LLM_F64 }, { "I8", LLM_I8 }, { "I16", LLM_I16 },
	{ "I32", LLM_I32 }, { "I64", LLM_I64 },
};

/* Other names the format defines: known, but not types we can hold. */
static const char *const st_other_dtypes[] = {
	"BOOL", "U8", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
	"F6_E2M3", "F6_E3M2", "F4", "C64",
};

const char *llm_safetensors_dtype_name(enum llm_dtype t)
{
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (st_dtypes[i].type == t)
			return st_dtypes[i].name;
	return NULL;
}

static size_t elem_size(enum llm_dtype t)
{
	return llm_dtype_traits(t)->type_size;   /* all block size 1 here */
}

/* ================================================================ reader */

struct llm_safetensors {
	char *path;
	const unsigned char *buf;
	size_t size;
	struct llm_map map;     /* what holds the bytes */
	struct llm_safetensors_tensor *ts;
	int64_t n_tensors;
	char **meta_keys, **meta_vals;
	size_t n_meta;
};

static int cmp_offset(const void *a, const void *b)
{
	const struct llm_safetensors_tensor *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* A non-negative JSON integer. */
static bool get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static int parse_tensor(struct llm_safetensors *st, const char *name,
                        json_t *desc, uint64_t data_size,
                        struct llm_safetensors_tensor *t)
{
	const char *p = st->path;
	json_t *jd = json_object_get(desc, "dtype");
	json_t *js = json_object_get(desc, "shape");
	json_t *jo = json_object_get(desc, "data_offsets");

	if (!json_is_object(desc))
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: not an object",
		                 p, name);
	if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: needs "
		                 "\"dtype\", \"shape\" and \"data_offsets\"", p, name);
	const char *dn = json_string_value(jd);
	bool found = false;
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++) {
		if (!strcmp(dn, st_dtypes[i].name)) {
			t->type = st_dtypes[i].type;
			found = true;
		}
	}
	if (!found) {
		for (size_t i = 0; i < sizeof(st_other_dtypes) / sizeof(*st_other_dtypes); i++)
			if (!strcmp(dn, st_other_dtypes[i]))
				return llm_error(LLM_EUNSUPPORTED, "safetensors: %s: tensor %s: "
				                 "dtype %s is not supported", p, name, dn);
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: unknown "
		                 "dtype \"%s\"", p, name, dn);
	}
	size_t nd = json_array_size(js);
	if (nd > LLM_SAFETENSORS_MAX_DIMS)
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: %zu dimensions "
		                 "(at most %d)", p, name, nd, LLM_SAFETENSORS_MAX_DIMS);
	t->n_dims = (int)nd;
	uint64_t nel = 1;
	for (size_t d = 0; d < nd; d++) {
		uint64_t v;
		if (!get_u64(json_array_get(js, d), &v))
			return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: shape[%zu] "
			                 "is not a non-negative integer", p, name, d);
		if (v && nel > UINT64_MAX / v)
			return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: shape "
			                 "overflows", p, name);
		nel *= v;
		t->shape[d] = (int64_t)v;
	}
	uint64_t begin, end;
	if (json_array_size(jo) != 2 || !get_u64(json_array_get(jo, 0), &begin) ||
	    !get_u64(json_array_get(jo, 1), &end))
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: data_offsets "
		                 "must be two non-negative integers", p, name);
	if (end < begin)
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: data_offsets "
		                 "end %" PRIu64 " before begin %" PRIu64, p, name, end, begin);
	uint64_t es = elem_size(t->type);
	if (nel > UINT64_MAX / es || nel * es != end - begin)
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: %" PRIu64
		                 " bytes at data_offsets, but %s x %" PRIu64
		                 " elements need %" PRIu64, p, name, end - begin, dn,
		                 nel, nel <= UINT64_MAX / es ? nel * es : UINT64_MAX);
	if (end > data_size)
		return llm_error(LLM_EFORMAT, "safetensors: %s: tensor %s: data extends "
		                 "past end of file (%" PRIu64 " > %" PRIu64 " data bytes)",
		                 p, name, end, data_size);
	if (!(t->name = strdup(name)))
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	t->offset = begin;
	t->nbytes = (size_t)(end - begin);
	return 0;
}

static int parse_metadata(struct llm_safetensors *st, json_t *meta)
{
	const char *k;
	json_t *v;
	if (!json_is_object(meta))
		return llm_error(LLM_EFORMAT, "safetensors: %s: __metadata__ is not an "
		                 "object", st->path);
	size_t n = json_object_size(meta);
	st->meta_keys = calloc(n ? n : 1, sizeof(char *));
	st->meta_vals = calloc(n ? n : 1, sizeof(char *));
	if (!st->meta_keys || !st->meta_vals)
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	json_object_foreach(meta, k, v) {
		if (!json_is_string(v))
			return llm_error(LLM_EFORMAT, "safetensors: %s: __metadata__.%s is "
			                 "not a string", st->path, k);
		st->meta_keys[st->n_meta] = strdup(k);
		st->meta_vals[st->n_meta] = strdup(json_string_value(v));
		if (!st->meta_keys[st->n_meta++] || !st->meta_vals[st->n_meta - 1])
			return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	}
	return 0;
}

static int parse(struct llm_safetensors *st)
{
	const char *p = st->path;
	uint64_t hlen;
	json_error_t jerr;
	json_t *root = NULL;
	int rc = 0;

	if (st->size < 8)
		return llm_error(LLM_EFORMAT, "safetensors: %s: file of %zu bytes is too "
		                 "short for a header", p, st->size);
	memcpy(&hlen, st->buf, 8);
	if (hlen > st->size - 8)
		return llm_error(LLM_EFORMAT, "safetensors: %s: header of %" PRIu64
		                 " bytes extends past end of file (%zu bytes)", p, hlen,
		                 st->size);
	if (hlen > LLM_SAFETENSORS_MAX_HEADER)
		return llm_error(LLM_EFORMAT, "safetensors: %s: header of %" PRIu64
		                 " bytes is too large", p, hlen);
	if (hlen < 2 || st->buf[8] != '{')
		return llm_error(LLM_EFORMAT, "safetensors: %s: header is not a JSON "
		                 "object", p);
	root = json_loadb((const char *)st->buf + 8, (size_t)hlen,
	                  JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return llm_error(LLM_EFORMAT, "safetensors: %s: header: %s (column %d)",
		                 p, jerr.text, jerr.column);
	if (!json_is_object(root)) {
		rc = llm_error(LLM_EFORMAT, "safetensors: %s: header is not a JSON object", p);
		goto cleanup;
	}
	uint64_t data_off = 8 + hlen, data_size = st->size - data_off;
	size_t n = json_object_size(root);
	st->ts = calloc(n ? n : 1, sizeof(*st->ts));
	if (!st->ts) {
		rc = llm_error(LLM_ENOMEM, "safetensors: out of memory");
		goto cleanup;
	}
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val) {
		if (!strcmp(key, "__metadata__")) {
			if ((rc = parse_metadata(st, val)))
				goto cleanup;
			continue;
		}
		struct llm_safetensors_tensor *t = &st->ts[st->n_tensors];
		if ((rc = parse_tensor(st, key, val, data_size, t)))
			goto cleanup;
		t->data = st->buf + data_off + t->offset;
		st->n_tensors++;
	}
	qsort(st->ts, (size_t)st->n_tensors, sizeof(*st->ts), cmp_offset);
	for (int64_t i = 1; i < st->n_tensors; i++) {
		const struct llm_safetensors_tensor *a = &st->ts[i - 1], *b = &st->ts[i];
		if (a->offset + a->nbytes > b->offset) {
			rc = llm_error(LLM_EFORMAT, "safetensors: %s: tensors %s and %s "
			               "overlap", p, a->name, b->name);
			goto cleanup;
		}
	}
cleanup:
	json_decref(root);
	return rc;
}

static int finish_open(struct llm_safetensors *st, struct llm_safetensors **out)
{
	int rc = parse(st);
	if (rc) {
		llm_safetensors_free(st);
		return rc;
	}
	*out = st;
	return 0;
}

/* A reader over the bytes m holds; takes m over, also on failure. */
static int open_map(struct llm_safetensors **out, struct llm_map *m,
                    const char *name)
{
	struct llm_safetensors *st = calloc(1, sizeof(*st));
	if (!st || !(st->path = strdup(name))) {
		free(st);
		llm_unmap(m);
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	}
	st->map = *m;
	st->buf = m->data ? m->data : (const unsigned char *)"";
	st->size = m->size;
	return finish_open(st, out);
}

int llm_safetensors_open(struct llm_safetensors **out, const char *path)
{
	struct llm_map m;
	int rc;

	*out = NULL;
	if ((rc = llm_map_file(&m, path, 0)))
		return rc;
	return open_map(out, &m, path);
}

int llm_safetensors_from_memory(struct llm_safetensors **out, const void *data,
                                size_t size, const char *name, bool own)
{
	struct llm_map m;

	*out = NULL;
	if (!own) {
		void *copy = malloc(size ? size : 1);
		if (!copy)
			return llm_error(LLM_ENOMEM, "safetensors: out of memory");
		memcpy(copy, data, size);
		data = copy;
	}
	llm_map_heap(&m, data, size);
	return open_map(out, &m, name ? name : "<memory>");
}

void llm_safetensors_free(struct llm_safetensors *st)
{
	if (!st)
		return;
	for (int64_t i = 0; i < st->n_tensors; i++)
		free(st->ts[i].name);
	free(st->ts);
	for (size_t i = 0; i < st->n_meta; i++) {
		free(st->meta_keys[i]);
		free(st->meta_vals[i]);
	}
	free(st->meta_keys);
	free(st->meta_vals);
	llm_unmap(&st->map);
	free(st->path);
	free(st);
}

const char *llm_safetensors_path(const struct llm_safetensors *st)
{
	return st->path;
}

int64_t llm_safetensors_n_tensors(const struct llm_safetensors *st)
{
	return st->n_tensors;
}

const struct llm_safetensors_tensor *
llm_safetensors_tensor(const struct llm_safetensors *st, int64_t i)
{
	return i >= 0 && i < st->n_tensors ? &st->ts[i] : NULL;
}

const struct llm_safetensors_tensor *
llm_safetensors_find(const struct llm_safetensors *st, const char *name)
{
	for (int64_t i = 0; i < st->n_tensors; i++)
		if (!strcmp(st->ts[i].name, name))
			return &st->ts[i];
	return NULL;
}

const char *llm_safetensors_metadata(const struct llm_safetensors *st,
                                     const char *key)
{
	for (size_t i = 0; i < st->n_meta; i++)
		if (!strcmp(st->meta_keys[i], key))
			return st->meta_vals[i];
	return NULL;
}

/* ================================================================ writer */

struct st_wtensor {
	char *name;
	enum llm_dtype type;
	int n_dims;
	int64_t shape[LLM_SAFETENSORS_MAX_DIMS];
	size_t nbytes;
	const void *data;
	llm_gguf_fill_fn fill;
	void *user;
};

struct llm_safetensors_writer {
	struct st_wtensor *ts;
	size_t n, cap;
	json_t *meta;
};

struct llm_safetensors_writer *llm_safetensors_writer_new(void)
{
	struct llm_safetensors_writer *w = calloc(1, sizeof(*w));
	if (w && !(w->meta = json_object())) {
		free(w);
		return NULL;
	}
	return w;
}

void llm_safetensors_writer_free(struct llm_safetensors_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		free(w->ts[i].name);
	free(w->ts);
	json_decref(w->meta);
	free(w);
}

int llm_safetensors_set_metadata(struct llm_safetensors_writer *w,
                                 const char *key, const char *value)
{
	if (json_object_set_new(w->meta, key, json_string(value)))
		return llm_error(LLM_EINVAL, "safetensors: metadata %s: not UTF-8", key);
	return 0;
}

static int add(struct llm_safetensors_writer *w, const char *name,
               enum llm_dtype type, int n_dims, const int64_t *shape,
               const void *data, llm_gguf_fill_fn fill, void *user)
{
	if (!llm_safetensors_dtype_name(type))
		return llm_error(LLM_EUNSUPPORTED, "safetensors: tensor %s: dtype %s "
		                 "cannot be stored", name, llm_dtype_name(type));
	if (n_dims < 0 || n_dims > LLM_SAFETENSORS_MAX_DIMS)
		return llm_error(LLM_EINVAL, "safetensors: tensor %s: %d dimensions",
		                 name, n_dims);
	if (!strcmp(name, "__metadata__"))
		return llm_error(LLM_EINVAL, "safetensors: \"__metadata__\" is not a "
		                 "tensor name");
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->ts[i].name, name))
			return llm_error(LLM_EINVAL, "safetensors: duplicate tensor %s", name);
	if (w->n == w->cap) {
		size_t nc = w->cap ? 2 * w->cap : 64;
		struct st_wtensor *t = realloc(w->ts, nc * sizeof(*t));
		if (!t)
			return llm_error(LLM_ENOMEM, "safetensors: out of memory");
		w->ts = t;
		w->cap = nc;
	}
	struct st_wtensor *t = &w->ts[w->n];
	memset(t, 0, sizeof(*t));
	uint64_t nel = 1;
	for (int d = 0; d < n_dims; d++) {
		if (shape[d] < 0)
			return llm_error(LLM_EINVAL, "safetensors: tensor %s: negative "
			                 "dimension", name);
		t->shape[d] = shape[d];
		nel *= (uint64_t)shape[d];
	}
	if (!(t->name = strdup(name)))
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	t->type = type;
	t->n_dims = n_dims;
	t->nbytes = (size_t)nel * elem_size(type);
	t->data = data;
	t->fill = fill;
	t->user = user;
	w->n++;
	return 0;
}

int llm_safetensors_add(struct llm_safetensors_writer *w, const char *name,
                        enum llm_dtype type, int n_dims, const int64_t *shape,
                        const void *data)
{
	return add(w, name, type, n_dims, shape, data, NULL, NULL);
}

int llm_safetensors_add_fill(struct llm_safetensors_writer *w, const char *name,
                             enum llm_dtype type, int n_dims,
                             const int64_t *shape, llm_gguf_fill_fn fill,
                             void *user)
{
	return add(w, name, type, n_dims, shape, NULL, fill, user);
}

/* The header JSON, padded with spaces to a multiple of 8 bytes. */
static int build_header(struct llm_safetensors_writer *w, char **out, size_t *len)
{
	json_t *root = json_object();
	uint64_t off = 0;
	int rc = 0;

	if (!root)
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	if (json_object_size(w->meta))
		json_object_set(root, "__metadata__", w->meta);
	for (size_t i = 0; i < w->n && !rc; i++) {
		const struct st_wtensor *t = &w->ts[i];
		json_t *shape = json_array(), *offs = json_array(), *d = json_object();
		for (int k = 0; shape && k < t->n_dims; k++)
			json_array_append_new(shape, json_integer(t->shape[k]));
		if (offs) {
			json_array_append_new(offs, json_integer((json_int_t)off));
			json_array_append_new(offs, json_integer((json_int_t)(off + t->nbytes)));
		}
		if (!shape || !offs || !d ||
		    json_object_set_new(d, "dtype", json_string(llm_safetensors_dtype_name(t->type))) ||
		    json_object_set_new(d, "shape", shape) ||
		    json_object_set_new(d, "data_offsets", offs)) {
			json_decref(d);
			rc = llm_error(LLM_ENOMEM, "safetensors: out of memory");
			break;
		}
		if (json_object_set_new(root, t->name, d))
			rc = llm_error(LLM_EINVAL, "safetensors: tensor name %s is not UTF-8",
			               t->name);
		off += t->nbytes;
	}
	char *s = rc ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (rc)
		return rc;
	if (!s)
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
	char *buf = realloc(s, padded + 1);
	if (!buf) {
		free(s);
		return llm_error(LLM_ENOMEM, "safetensors: out of memory");
	}
	memset(buf + n, ' ', padded - n);
	buf[padded] = 0;
	*out = buf;
	*len = padded;
	return 0;
}

int llm_safetensors_write_stream(struct llm_safetensors_writer *w, FILE *f,
                                 uint64_t *written)
{
	char *hdr = NULL;
	size_t hlen = 0;
	int rc = build_header(w, &hdr, &hlen);
	if (rc)
		return rc;
	uint64_t n = 0, h64 = hlen;
	bool ok = fwrite(&h64, 8, 1, f) == 1 && fwrite(hdr, 1, hlen, f) == hlen;
	free(hdr);
	n = 8 + hlen;
	for (size_t i = 0; ok && i < w->n; i++) {
		const struct st_wtensor *t = &w->ts[i];
		if (!t->nbytes)
			continue;
		if (t->fill) {
			void *buf = malloc(t->nbytes);
			if (!buf)
				return llm_error(LLM_ENOMEM, "safetensors: tensor %s: out of "
				                 "memory", t->name);
			rc = t->fill(t->user, t->name, buf, t->nbytes);
			if (!rc)
				ok = fwrite(buf, 1, t->nbytes, f) == t->nbytes;
			free(buf);
			if (rc)
				return rc;
		} else {
			ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
		}
		n += t->nbytes;
	}
	if (ok && fflush(f) != 0)
		ok = false;
	if (!ok)
		return llm_error(LLM_EIO, "safetensors: write failed: %s",
		                 strerror(errno ? errno : EIO));
	if (written)
		*written = n;
	return 0;
}

int llm_safetensors_write_file(struct llm_safetensors_writer *w, const char *path)
{
	struct llm_ofile *o;
	int rc = llm_ofile_open(&o, path);
	if (rc)
		return rc;
	rc = llm_safetensors_write_stream(w, o->f, NULL);
	if (rc) {
		llm_error_prefix(rc, "%s", path);
		llm_ofile_abort(o);
		return rc;
	}
	return llm_ofile_commit(o);
}
