/*
 * gguf.c - GGUF reader and writer (format in gguf.h).
 *
 * The reader parses with a bounds-checked cursor over the whole file held
 * in memory (mapped, or read from a pipe).  Counts are checked against the
 * bytes left before anything is allocated, so a hostile header cannot make
 * us allocate more than the file could describe.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/util.h"

struct kv {
	char *key;
	enum llm_gguf_type type;
	enum llm_gguf_type arr_type;
	uint64_t arr_n;
	union {
		uint64_t u;
		int64_t i;
		double f;
	} v;
	char *str;          /* STRING value */
	void *arr;          /* numeric array elements (copied, aligned) */
	char **strs;        /* string array elements */
	size_t *lens;
	size_t raw_off;     /* serialized value (type onwards) in the file */
	size_t raw_len;
};

struct llm_gguf {
	char *path;
	const unsigned char *buf;
	size_t size;
	struct llm_map map;     /* what holds the bytes */
	uint32_t version;
	size_t alignment;
	size_t data_offset;
	int64_t n_kv;
	struct kv *kvs;
	int64_t n_tensors;
	struct llm_gguf_tensor *tensors;
};

static const size_t type_size[LLM_GGUF_TYPE_COUNT] = {
	[LLM_GGUF_U8] = 1, [LLM_GGUF_I8] = 1, [LLM_GGUF_U16] = 2,
	[LLM_GGUF_I16] = 2, [LLM_GGUF_U32] = 4, [LLM_GGUF_I32] = 4,
	[LLM_GGUF_F32] = 4, [LLM_GGUF_BOOL] = 1, [LLM_GGUF_U64] = 8,
	[LLM_GGUF_I64] = 8, [LLM_GGUF_F64] = 8,
};

const char *llm_gguf_type_name(enum llm_gguf_type t)
{
	static const char *names[LLM_GGUF_TYPE_COUNT] = {
		"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
		"string", "array", "u64", "i64", "f64",
	};
	return (unsigned)t < LLM_GGUF_TYPE_COUNT ? names[t] : "invalid";
}

/* ---------------------------------------------------------------- cursor */

struct cur {
	const struct llm_gguf *g;
	size_t pos;
};

static size_t cur_left(const struct cur *c)
{
	return c->g->size - c->pos;
}

static int cur_read(struct cur *c, void *dst, size_t n, const char *what)
{
	if (cur_left(c) < n)
		return llm_error(LLM_EFORMAT, "gguf: %s: truncated file: %.128s at offset %zu "
		                 "needs %zu bytes, %zu left", c->g->path, what, c->pos, n,
		                 cur_left(c));
	memcpy(dst, c->g->buf + c->pos, n);
	c->pos += n;
	return 0;
}

static int cur_u32(struct cur *c, uint32_t *v, const char *what)
{
	return cur_read(c, v, 4, what);
}

static int cur_u64(struct cur *c, uint64_t *v, const char *what)
{
	return cur_read(c, v, 8, what);
}

/* A string, returned as a NUL-terminated copy. */
static int cur_str(struct cur *c, char **out, size_t *len_out, const char *what)
{
	uint64_t len;
	int rc = cur_u64(c, &len, what);
	if (rc)
		return rc;
	if (len > cur_left(c))
		return llm_error(LLM_EFORMAT, "gguf: %s: %.128s: string length %llu at offset "
		                 "%zu exceeds the file", c->g->path, what,
		                 (unsigned long long)len, c->pos - 8);
	char *s = malloc(len + 1);
	if (!s)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", c->g->path);
	memcpy(s, c->g->buf + c->pos, len);
	s[len] = 0;
	c->pos += len;
	*out = s;
	if (len_out)
		*len_out = len;
	return 0;
}

static int skip_value(struct cur *c, enum llm_gguf_type t, const char *key,
                      int depth);

/* ---------------------------------------------------------------- parse */

static int parse_array(struct cur *c, struct kv *kv, int depth)
{
	uint32_t at;
	uint64_t n;
	int rc;

	if ((rc = cur_u32(c, &at, kv->key)) || (rc = cur_u64(c, &n, kv->key)))
		return rc;
	if (at >= LLM_GGUF_TYPE_COUNT)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: invalid array element "
		                 "type %u", c->g->path, kv->key, at);
	kv->arr_type = at;
	kv->arr_n = n;
	if (at == LLM_GGUF_STRING) {
		/* every string takes at least its 8-byte length */
		if (n > cur_left(c) / 8)
			return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: array of %llu "
			                 "strings exceeds the file", c->g->path, kv->key,
			                 (unsigned long long)n);
		kv->strs = calloc(n ? n : 1, sizeof(char *));
		kv->lens = calloc(n ? n : 1, sizeof(size_t));
		if (!kv->strs || !kv->lens)
			return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", c->g->path);
		for (uint64_t j = 0; j < n; j++)
			if ((rc = cur_str(c, &kv->strs[j], &kv->lens[j], kv->key)))
				return rc;
		return 0;
	}
	if (at == LLM_GGUF_ARRAY) {
		/* nested arrays: no use for them, but valid - skip */
		if (depth > 4)
			return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: arrays nested too "
			                 "deeply", c->g->path, kv->key);
		if (n > cur_left(c) / 12)
			return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: array of %llu "
			                 "arrays exceeds the file", c->g->path, kv->key,
			                 (unsigned long long)n);
		for (uint64_t j = 0; j < n; j++)
			if ((rc = skip_value(c, LLM_GGUF_ARRAY, kv->key, depth + 1)))
				return rc;
		return 0;
	}
	size_t es = type_size[at];
	if (n > cur_left(c) / es)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: array of %llu %s "
		                 "exceeds the file", c->g->path, kv->key,
		                 (unsigned long long)n, llm_gguf_type_name(at));
	kv->arr = malloc(n ? n * es : 1);
	if (!kv->arr)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", c->g->path);
	if ((rc = cur_read(c, kv->arr, n * es, kv->key)))
		return rc;
	if (at == LLM_GGUF_BOOL)
		for (uint64_t j = 0; j < n; j++)
			if (((const uint8_t *)kv->arr)[j] > 1)
				return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: invalid "
				                 "bool %u at index %llu", c->g->path, kv->key,
				                 ((const uint8_t *)kv->arr)[j],
				                 (unsigned long long)j);
	return 0;
}

static int skip_value(struct cur *c, enum llm_gguf_type t, const char *key,
                      int depth)
{
	struct kv tmp = { .key = (char *)key };
	int rc = 0;

	if (t == LLM_GGUF_STRING) {
		char *s;
		rc = cur_str(c, &s, NULL, key);
		if (!rc)
			free(s);
		return rc;
	}
	if (t != LLM_GGUF_ARRAY) {
		if (cur_left(c) < type_size[t])
			return cur_read(c, &tmp.v, type_size[t], key);
		c->pos += type_size[t];
		return 0;
	}
	rc = parse_array(c, &tmp, depth);
	if (tmp.strs)
		for (uint64_t j = 0; j < tmp.arr_n; j++)
			free(tmp.strs[j]);
	free(tmp.strs);
	free(tmp.lens);
	free(tmp.arr);
	return rc;
}

static int parse_kv(struct cur *c, struct kv *kv)
{
	uint32_t t;
	int rc;

	size_t len;
	if ((rc = cur_str(c, &kv->key, &len, "key")))
		return rc;
	if (strlen(kv->key) != len)
		return llm_error(LLM_EFORMAT, "gguf: %s: key '%.128s' contains a NUL byte",
		                 c->g->path, kv->key);
	kv->raw_off = c->pos;
	if ((rc = cur_u32(c, &t, kv->key)))
		return rc;
	if (t >= LLM_GGUF_TYPE_COUNT)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: invalid value type %u",
		                 c->g->path, kv->key, t);
	kv->type = t;
	kv->arr_type = LLM_GGUF_TYPE_COUNT;
	switch (t) {
	case LLM_GGUF_STRING:
		rc = cur_str(c, &kv->str, NULL, kv->key);
		break;
	case LLM_GGUF_ARRAY:
		rc = parse_array(c, kv, 0);
		break;
	case LLM_GGUF_U8:  { uint8_t x;  rc = cur_read(c, &x, 1, kv->key); kv->v.u = x; break; }
	case LLM_GGUF_I8:  { int8_t x;   rc = cur_read(c, &x, 1, kv->key); kv->v.i = x; break; }
	case LLM_GGUF_U16: { uint16_t x; rc = cur_read(c, &x, 2, kv->key); kv->v.u = x; break; }
	case LLM_GGUF_I16: { int16_t x;  rc = cur_read(c, &x, 2, kv->key); kv->v.i = x; break; }
	case LLM_GGUF_U32: { uint32_t x; rc = cur_read(c, &x, 4, kv->key); kv->v.u = x; break; }
	case LLM_GGUF_I32: { int32_t x;  rc = cur_read(c, &x, 4, kv->key); kv->v.i = x; break; }
	case LLM_GGUF_U64: rc = cur_read(c, &kv->v.u, 8, kv->key); break;
	case LLM_GGUF_I64: rc = cur_read(c, &kv->v.i, 8, kv->key); break;
	case LLM_GGUF_F32: { float x;    rc = cur_read(c, &x, 4, kv->key); kv->v.f = x; break; }
	case LLM_GGUF_F64: rc = cur_read(c, &kv->v.f, 8, kv->key); break;
	case LLM_GGUF_BOOL: {
		uint8_t x;
		rc = cur_read(c, &x, 1, kv->key);
		if (!rc && x > 1)
			rc = llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: invalid bool %u",
			               c->g->path, kv->key, x);
		kv->v.u = x;
		break;
	}
	default:
		break;
	}
	kv->raw_len = c->pos - kv->raw_off;
	return rc;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct llm_gguf_tensor *x = *(const struct llm_gguf_tensor *const *)a;
	const struct llm_gguf_tensor *y = *(const struct llm_gguf_tensor *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse_tensor_info(struct cur *c, struct llm_gguf_tensor *t)
{
	uint32_t n_dims, type;
	int rc;

	size_t len;
	if ((rc = cur_str(c, &t->name, &len, "tensor name")))
		return rc;
	if (!len || len > 255 || strlen(t->name) != len)
		return llm_error(LLM_EFORMAT, "gguf: %s: invalid tensor name '%.64s' "
		                 "(1 to 255 bytes, no NUL)", c->g->path, t->name);
	if ((rc = cur_u32(c, &n_dims, t->name)))
		return rc;
	if (n_dims < 1 || n_dims > LLM_MAX_DIMS)
		return llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: %u dimensions "
		                 "(1 to %d allowed)", c->g->path, t->name, n_dims,
		                 LLM_MAX_DIMS);
	t->n_dims = (int)n_dims;
	/* The element count, and also the product with empty dimensions taken
	 * as 1, must fit: a tensor of {2^62, 0} holds nothing, but its row
	 * size would still overflow for whoever computes it. */
	uint64_t nel = 1, span = 1;
	for (int d = 0; d < LLM_MAX_DIMS; d++) {
		uint64_t ne = 1;
		if (d < t->n_dims && (rc = cur_u64(c, &ne, t->name)))
			return rc;
		if (ne > (uint64_t)INT64_MAX || (ne && span > (uint64_t)INT64_MAX / ne))
			return llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: shape overflows",
			                 c->g->path, t->name);
		t->ne[d] = (int64_t)ne;
		nel *= ne;
		span *= ne ? ne : 1;
	}
	if ((rc = cur_u32(c, &type, t->name)))
		return rc;
	const struct llm_dtype_traits *tr = llm_dtype_traits((int)type);
	if (!tr)
		return llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: unknown type %u",
		                 c->g->path, t->name, type);
	t->type = type;
	if (t->ne[0] % tr->block_size)
		return llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: row of %lld is not "
		                 "a multiple of the %s block size %d", c->g->path, t->name,
		                 (long long)t->ne[0], tr->name, tr->block_size);
	if (span / tr->block_size > SIZE_MAX / tr->type_size)
		return llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: size overflows",
		                 c->g->path, t->name);
	t->nbytes = nel / tr->block_size * tr->type_size;
	return cur_u64(c, &t->offset, t->name);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *tensor_name(const struct llm_gguf *g, int64_t i)
{
	return g->tensors[i].name;
}

/* The n names name_of(g, i) must be unique.  Sorted, not compared in
 * pairs, so a file with a million tensors costs no million squared. */
static int check_unique(const struct llm_gguf *g, const char *what,
                        const char *(*name_of)(const struct llm_gguf *, int64_t),
                        int64_t n)
{
	if (n < 2)
		return 0;
	const char **names = malloc((size_t)n * sizeof(*names));
	if (!names)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", g->path);
	for (int64_t i = 0; i < n; i++)
		names[i] = name_of(g, i);
	qsort(names, (size_t)n, sizeof(*names), cmp_name);
	int rc = 0;
	for (int64_t i = 1; i < n && !rc; i++)
		if (!strcmp(names[i - 1], names[i]))
			rc = llm_error(LLM_EFORMAT, "gguf: %s: duplicate %s %.128s",
			               g->path, what, names[i]);
	free((void *)names);
	return rc;
}

static int parse(struct llm_gguf *g)
{
	struct cur c = { g, 0 };
	uint32_t magic;
	uint64_t n_kv, n_tensors;
	int rc;

	if (g->size < 4 || (memcpy(&magic, g->buf, 4), magic != LLM_GGUF_MAGIC))
		return llm_error(LLM_EFORMAT, "gguf: %s: not a GGUF file (bad magic)",
		                 g->path);
	c.pos = 4;
	if ((rc = cur_u32(&c, &g->version, "version")))
		return rc;
	if (g->version == 0 || (g->version & 0xffff) == 0)
		return llm_error(LLM_EFORMAT, "gguf: %s: big-endian or invalid version "
		                 "0x%08x", g->path, g->version);
	if (g->version == 1 || g->version > 3)
		return llm_error(LLM_EFORMAT, "gguf: %s: unsupported GGUF version %u "
		                 "(2 and 3 are read)", g->path, g->version);
	if ((rc = cur_u64(&c, &n_tensors, "tensor count")) ||
	    (rc = cur_u64(&c, &n_kv, "key/value count")))
		return rc;
	/* A key/value pair takes at least 8 (key) + 4 (type) + 1 bytes. */
	if (n_kv > cur_left(&c) / 13)
		return llm_error(LLM_EFORMAT, "gguf: %s: key/value count %llu exceeds "
		                 "what the file can hold", g->path,
		                 (unsigned long long)n_kv);
	/* A tensor description: 8 (name) + 1 + 4 + 8 + 4 + 8 bytes at least. */
	if (n_tensors > cur_left(&c) / 33)
		return llm_error(LLM_EFORMAT, "gguf: %s: tensor count %llu exceeds what "
		                 "the file can hold", g->path,
		                 (unsigned long long)n_tensors);

	g->kvs = calloc(n_kv ? n_kv : 1, sizeof(*g->kvs));
	if (!g->kvs)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", g->path);
	for (uint64_t i = 0; i < n_kv; i++) {
		g->n_kv = (int64_t)i + 1;
		if ((rc = parse_kv(&c, &g->kvs[i])))
			return rc;
	}
	if ((rc = check_unique(g, "key", llm_gguf_key, g->n_kv)))
		return rc;

	g->alignment = LLM_GGUF_DEFAULT_ALIGNMENT;
	int64_t ai = llm_gguf_find_key(g, "general.alignment");
	if (ai >= 0) {
		const struct kv *kv = &g->kvs[ai];
		if (kv->type != LLM_GGUF_U32 || kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)))
			return llm_error(LLM_EFORMAT, "gguf: %s: general.alignment must be a "
			                 "u32 power of two", g->path);
		g->alignment = kv->v.u;
	}

	g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(*g->tensors));
	if (!g->tensors)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", g->path);
	for (uint64_t i = 0; i < n_tensors; i++) {
		g->n_tensors = (int64_t)i + 1;
		if ((rc = parse_tensor_info(&c, &g->tensors[i])))
			return rc;
	}

	size_t a = g->alignment;
	size_t data = c.pos + (a - c.pos % a) % a;
	if (data > g->size && n_tensors)
		return llm_error(LLM_EFORMAT, "gguf: %s: truncated file: no data section",
		                 g->path);
	g->data_offset = data;
	size_t data_size = data <= g->size ? g->size - data : 0;

	/* Every tensor inside the data section, aligned, no two overlapping,
	 * names unique. */
	struct llm_gguf_tensor **order = malloc((n_tensors ? n_tensors : 1) * sizeof(*order));
	if (!order)
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", g->path);
	for (int64_t i = 0; i < g->n_tensors; i++) {
		struct llm_gguf_tensor *t = &g->tensors[i];
		order[i] = t;
		if (t->offset % a) {
			rc = llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: offset %llu is not "
			               "a multiple of the alignment %zu", g->path, t->name,
			               (unsigned long long)t->offset, a);
			goto out;
		}
		if (t->offset > data_size || t->nbytes > data_size - t->offset) {
			rc = llm_error(LLM_EFORMAT, "gguf: %s: tensor %s: data extends past "
			               "end of file", g->path, t->name);
			goto out;
		}
		t->data = g->buf + data + t->offset;
	}
	/* Empty tensors hold no bytes and overlap nothing. */
	qsort(order, g->n_tensors, sizeof(*order), cmp_offset);
	const struct llm_gguf_tensor *prev = NULL;
	for (int64_t i = 0; i < g->n_tensors; i++) {
		if (!order[i]->nbytes)
			continue;
		if (prev && prev->offset + prev->nbytes > order[i]->offset) {
			rc = llm_error(LLM_EFORMAT, "gguf: %s: tensors %s and %s overlap",
			               g->path, prev->name, order[i]->name);
			goto out;
		}
		prev = order[i];
	}
	rc = check_unique(g, "tensor", tensor_name, g->n_tensors);
out:
	free(order);
	return rc;
}

/* ---------------------------------------------------------------- open */

static int finish_open(struct llm_gguf *g, struct llm_gguf **out)
{
	int rc = parse(g);
	if (rc) {
		llm_gguf_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

/* A gguf over the bytes m holds; takes m over, also on failure. */
static int open_map(struct llm_gguf **out, struct llm_map *m, const char *name)
{
	struct llm_gguf *g = calloc(1, sizeof(*g));
	if (!g || !(g->path = strdup(name))) {
		free(g);
		llm_unmap(m);
		return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", name);
	}
	g->map = *m;
	g->buf = m->data ? m->data : (const unsigned char *)"";
	g->size = m->size;
	return finish_open(g, out);
}

int llm_gguf_from_memory(struct llm_gguf **out, const void *data, size_t size,
                         const char *name, bool own)
{
	struct llm_map m;

	if (!name)
		name = "<memory>";
	if (!own) {
		void *copy = malloc(size ? size : 1);
		if (!copy)
			return llm_error(LLM_ENOMEM, "gguf: %s: out of memory", name);
		memcpy(copy, data, size);
		data = copy;
	}
	llm_map_heap(&m, data, size);
	return open_map(out, &m, name);
}

int llm_gguf_open_ex(struct llm_gguf **out, const char *path, unsigned flags)
{
	struct llm_map m;
	int rc = llm_map_file(&m, path, flags | LLM_MAP_STREAMS);

	if (rc)
		return rc;
	return open_map(out, &m, strcmp(path, "-") ? path : "standard input");
}

int llm_gguf_open(struct llm_gguf **out, const char *path)
{
	return llm_gguf_open_ex(out, path, 0);
}

void llm_gguf_free(struct llm_gguf *g)
{
	if (!g)
		return;
	for (int64_t i = 0; i < g->n_kv; i++) {
		struct kv *kv = &g->kvs[i];
		free(kv->key);
		free(kv->str);
		free(kv->arr);
		if (kv->strs)
			for (uint64_t j = 0; j < kv->arr_n; j++)
				free(kv->strs[j]);
		free(kv->strs);
		free(kv->lens);
	}
	free(g->kvs);
	for (int64_t i = 0; i < g->n_tensors; i++)
		free(g->tensors[i].name);
	free(g->tensors);
	llm_unmap(&g->map);
	free(g->path);
	free(g);
}

/* ---------------------------------------------------------------- access */

const char *llm_gguf_path(const struct llm_gguf *g) { return g->path; }
uint32_t llm_gguf_version(const struct llm_gguf *g) { return g->version; }
size_t llm_gguf_alignment(const struct llm_gguf *g) { return g->alignment; }
size_t llm_gguf_file_size(const struct llm_gguf *g) { return g->size; }
int64_t llm_gguf_n_kv(const struct llm_gguf *g) { return g->n_kv; }
int64_t llm_gguf_n_tensors(const struct llm_gguf *g) { return g->n_tensors; }

int64_t llm_gguf_find_key(const struct llm_gguf *g, const char *key)
{
	for (int64_t i = 0; i < g->n_kv; i++)
		if (!strcmp(g->kvs[i].key, key))
			return i;
	return -1;
}

const char *llm_gguf_key(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].key;
}

enum llm_gguf_type llm_gguf_kv_type(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].type;
}

enum llm_gguf_type llm_gguf_arr_type(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].type == LLM_GGUF_ARRAY ? g->kvs[i].arr_type : LLM_GGUF_TYPE_COUNT;
}

uint64_t llm_gguf_arr_n(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].type == LLM_GGUF_ARRAY ? g->kvs[i].arr_n : 0;
}

const void *llm_gguf_arr_data(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].arr;
}

const char *llm_gguf_arr_str(const struct llm_gguf *g, int64_t i, uint64_t j,
                             size_t *len)
{
	const struct kv *kv = &g->kvs[i];
	if (!kv->strs || j >= kv->arr_n)
		return NULL;
	if (len)
		*len = kv->lens[j];
	return kv->strs[j];
}

const char *llm_gguf_str(const struct llm_gguf *g, int64_t i)
{
	return g->kvs[i].str;
}

static int kv_lookup(const struct llm_gguf *g, const char *key, const struct kv **kv)
{
	int64_t i = llm_gguf_find_key(g, key);
	if (i < 0)
		return LLM_ENOTFOUND;
	*kv = &g->kvs[i];
	return 0;
}

static bool kv_is_int(const struct kv *kv, bool *is_signed)
{
	switch (kv->type) {
	case LLM_GGUF_U8: case LLM_GGUF_U16: case LLM_GGUF_U32: case LLM_GGUF_U64:
		*is_signed = false;
		return true;
	case LLM_GGUF_I8: case LLM_GGUF_I16: case LLM_GGUF_I32: case LLM_GGUF_I64:
		*is_signed = true;
		return true;
	default:
		return false;
	}
}

int llm_gguf_get_i64(const struct llm_gguf *g, const char *key, int64_t *out)
{
	const struct kv *kv;
	bool sgn;
	if (kv_lookup(g, key, &kv))
		return LLM_ENOTFOUND;
	if (!kv_is_int(kv, &sgn) || (!sgn && kv->v.u > (uint64_t)INT64_MAX))
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: expected an integer, "
		                 "found %s", g->path, key, llm_gguf_type_name(kv->type));
	*out = sgn ? kv->v.i : (int64_t)kv->v.u;
	return 0;
}

int llm_gguf_get_u32(const struct llm_gguf *g, const char *key, uint32_t *out)
{
	int64_t v;
	int rc = llm_gguf_get_i64(g, key, &v);
	if (rc)
		return rc;
	if (v < 0 || v > UINT32_MAX)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: value %lld out of range",
		                 g->path, key, (long long)v);
	*out = (uint32_t)v;
	return 0;
}

int llm_gguf_get_f32(const struct llm_gguf *g, const char *key, float *out)
{
	const struct kv *kv;
	bool sgn;
	if (kv_lookup(g, key, &kv))
		return LLM_ENOTFOUND;
	if (kv->type == LLM_GGUF_F32 || kv->type == LLM_GGUF_F64)
		*out = (float)kv->v.f;
	else if (kv_is_int(kv, &sgn))
		*out = sgn ? (float)kv->v.i : (float)kv->v.u;
	else
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: expected a number, "
		                 "found %s", g->path, key, llm_gguf_type_name(kv->type));
	return 0;
}

int llm_gguf_get_bool(const struct llm_gguf *g, const char *key, bool *out)
{
	const struct kv *kv;
	if (kv_lookup(g, key, &kv))
		return LLM_ENOTFOUND;
	if (kv->type != LLM_GGUF_BOOL)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: expected a bool, found %s",
		                 g->path, key, llm_gguf_type_name(kv->type));
	*out = kv->v.u != 0;
	return 0;
}

int llm_gguf_get_str(const struct llm_gguf *g, const char *key, const char **out)
{
	const struct kv *kv;
	if (kv_lookup(g, key, &kv))
		return LLM_ENOTFOUND;
	if (kv->type != LLM_GGUF_STRING)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %.128s: expected a string, "
		                 "found %s", g->path, key, llm_gguf_type_name(kv->type));
	*out = kv->str;
	return 0;
}

const struct llm_gguf_tensor *llm_gguf_tensor(const struct llm_gguf *g, int64_t i)
{
	return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct llm_gguf_tensor *llm_gguf_find_tensor(const struct llm_gguf *g,
                                                   const char *name)
{
	for (int64_t i = 0; i < g->n_tensors; i++)
		if (!strcmp(g->tensors[i].name, name))
			return &g->tensors[i];
	return NULL;
}

/* ================================================================ writer */

struct wkv {
	char *key;
	unsigned char *val;     /* serialized: u32 type, then the value */
	size_t len;
};

struct wtensor {
	char *name;
	enum llm_dtype type;
	int n_dims;
	int64_t ne[LLM_MAX_DIMS];
	size_t nbytes;
	const void *data;
	llm_gguf_fill_fn fill;
	void *user;
};

struct llm_gguf_writer {
	struct wkv *kvs;
	size_t n_kv, cap_kv;
	struct wtensor *ts;
	size_t n_t, cap_t;
};

struct llm_gguf_writer *llm_gguf_writer_new(void)
{
	return calloc(1, sizeof(struct llm_gguf_writer));
}

void llm_gguf_writer_free(struct llm_gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_kv; i++) {
		free(w->kvs[i].key);
		free(w->kvs[i].val);
	}
	for (size_t i = 0; i < w->n_t; i++)
		free(w->ts[i].name);
	free(w->kvs);
	free(w->ts);
	free(w);
}

/* Store a serialized value under key (replacing, keeping position);
 * takes ownership of val. */
static int put_kv(struct llm_gguf_writer *w, const char *key, unsigned char *val,
                  size_t len)
{
	if (!val)
		return llm_error(LLM_ENOMEM, "gguf: out of memory");
	for (size_t i = 0; i < w->n_kv; i++) {
		if (!strcmp(w->kvs[i].key, key)) {
			free(w->kvs[i].val);
			w->kvs[i].val = val;
			w->kvs[i].len = len;
			return 0;
		}
	}
	if (w->n_kv == w->cap_kv) {
		size_t nc = w->cap_kv ? w->cap_kv * 2 : 32;
		struct wkv *n = realloc(w->kvs, nc * sizeof(*n));
		if (!n) {
			free(val);
			return llm_error(LLM_ENOMEM, "gguf: out of memory");
		}
		w->kvs = n;
		w->cap_kv = nc;
	}
	char *k = strdup(key);
	if (!k) {
		free(val);
		return llm_error(LLM_ENOMEM, "gguf: out of memory");
	}
	w->kvs[w->n_kv++] = (struct wkv){ k, val, len };
	return 0;
}

static int put_scalar(struct llm_gguf_writer *w, const char *key,
                      enum llm_gguf_type t, const void *v)
{
	size_t n = type_size[t];
	unsigned char *buf = malloc(4 + n);
	if (buf) {
		uint32_t tt = t;
		memcpy(buf, &tt, 4);
		memcpy(buf + 4, v, n);
	}
	return put_kv(w, key, buf, 4 + n);
}

int llm_gguf_set_u32(struct llm_gguf_writer *w, const char *key, uint32_t v)
{
	return put_scalar(w, key, LLM_GGUF_U32, &v);
}

int llm_gguf_set_i32(struct llm_gguf_writer *w, const char *key, int32_t v)
{
	return put_scalar(w, key, LLM_GGUF_I32, &v);
}

int llm_gguf_set_u64(struct llm_gguf_writer *w, const char *key, uint64_t v)
{
	return put_scalar(w, key, LLM_GGUF_U64, &v);
}

int llm_gguf_set_f32(struct llm_gguf_writer *w, const char *key, float v)
{
	return put_scalar(w, key, LLM_GGUF_F32, &v);
}

int llm_gguf_set_bool(struct llm_gguf_writer *w, const char *key, bool v)
{
	uint8_t b = v;
	return put_scalar(w, key, LLM_GGUF_BOOL, &b);
}

int llm_gguf_set_str(struct llm_gguf_writer *w, const char *key, const char *v)
{
	uint64_t n = strlen(v);
	unsigned char *buf = malloc(12 + n);
	if (buf) {
		uint32_t t = LLM_GGUF_STRING;
		memcpy(buf, &t, 4);
		memcpy(buf + 4, &n, 8);
		memcpy(buf + 12, v, n);
	}
	return put_kv(w, key, buf, 12 + n);
}

int llm_gguf_set_arr(struct llm_gguf_writer *w, const char *key,
                     enum llm_gguf_type t, const void *data, uint64_t n)
{
	if ((unsigned)t >= LLM_GGUF_TYPE_COUNT || !type_size[t])
		return llm_error(LLM_EINVAL, "gguf: key %s: %s is not a numeric type",
		                 key, llm_gguf_type_name(t));
	size_t bytes = n * type_size[t];
	unsigned char *buf = malloc(16 + bytes);
	if (buf) {
		uint32_t tt = LLM_GGUF_ARRAY, at = t;
		memcpy(buf, &tt, 4);
		memcpy(buf + 4, &at, 4);
		memcpy(buf + 8, &n, 8);
		if (bytes)
			memcpy(buf + 16, data, bytes);
	}
	return put_kv(w, key, buf, 16 + bytes);
}

int llm_gguf_set_arr_str(struct llm_gguf_writer *w, const char *key,
                         const char *const *strs, const size_t *lens, uint64_t n)
{
	size_t total = 16;
	for (uint64_t i = 0; i < n; i++)
		total += 8 + (lens ? lens[i] : strlen(strs[i]));
	unsigned char *buf = malloc(total), *p = buf;
	if (buf) {
		uint32_t tt = LLM_GGUF_ARRAY, at = LLM_GGUF_STRING;
		memcpy(p, &tt, 4);
		memcpy(p + 4, &at, 4);
		memcpy(p + 8, &n, 8);
		p += 16;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t l = lens ? lens[i] : strlen(strs[i]);
			memcpy(p, &l, 8);
			memcpy(p + 8, strs[i], l);
			p += 8 + l;
		}
	}
	return put_kv(w, key, buf, total);
}

int llm_gguf_copy_kv(struct llm_gguf_writer *w, const struct llm_gguf *g, int64_t i)
{
	const struct kv *kv = &g->kvs[i];
	unsigned char *buf = malloc(kv->raw_len);
	if (buf)
		memcpy(buf, g->buf + kv->raw_off, kv->raw_len);
	return put_kv(w, kv->key, buf, kv->raw_len);
}

int llm_gguf_remove_key(struct llm_gguf_writer *w, const char *key)
{
	for (size_t i = 0; i < w->n_kv; i++) {
		if (!strcmp(w->kvs[i].key, key)) {
			free(w->kvs[i].key);
			free(w->kvs[i].val);
			memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof(*w->kvs));
			w->n_kv--;
			return 0;
		}
	}
	return LLM_ENOTFOUND;
}

static int add_tensor(struct llm_gguf_writer *w, const char *name,
                      enum llm_dtype type, int n_dims, const int64_t *ne,
                      const void *data, llm_gguf_fill_fn fill, void *user)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(type);
	size_t len = strlen(name);
	if (!len || len > 255)
		return llm_error(LLM_EINVAL, "gguf: invalid tensor name '%.64s' (1 to "
		                 "255 bytes)", name);
	if (!tr)
		return llm_error(LLM_EINVAL, "gguf: tensor %s: unknown type %d", name, type);
	if (n_dims < 1 || n_dims > LLM_MAX_DIMS)
		return llm_error(LLM_EINVAL, "gguf: tensor %s: %d dimensions", name, n_dims);
	for (size_t i = 0; i < w->n_t; i++)
		if (!strcmp(w->ts[i].name, name))
			return llm_error(LLM_EINVAL, "gguf: duplicate tensor %s", name);
	if (w->n_t == w->cap_t) {
		size_t nc = w->cap_t ? w->cap_t * 2 : 64;
		struct wtensor *n = realloc(w->ts, nc * sizeof(*n));
		if (!n)
			return llm_error(LLM_ENOMEM, "gguf: out of memory");
		w->ts = n;
		w->cap_t = nc;
	}
	struct wtensor *t = &w->ts[w->n_t];
	memset(t, 0, sizeof(*t));
	/* the reader's rule: the shape with empty dimensions taken as 1 fits */
	uint64_t nel = 1, span = 1;
	for (int d = 0; d < LLM_MAX_DIMS; d++) {
		t->ne[d] = d < n_dims ? ne[d] : 1;
		if (t->ne[d] < 0)
			return llm_error(LLM_EINVAL, "gguf: tensor %s: negative dimension", name);
		uint64_t n = (uint64_t)t->ne[d];
		if (n && span > (uint64_t)INT64_MAX / n)
			return llm_error(LLM_EINVAL, "gguf: tensor %s: shape overflows", name);
		nel *= n;
		span *= n ? n : 1;
	}
	if (t->ne[0] % tr->block_size)
		return llm_error(LLM_EINVAL, "gguf: tensor %s: row of %lld is not a "
		                 "multiple of the %s block size %d", name,
		                 (long long)t->ne[0], tr->name, tr->block_size);
	if (span / tr->block_size > SIZE_MAX / tr->type_size)
		return llm_error(LLM_EINVAL, "gguf: tensor %s: size overflows", name);
	t->nbytes = nel / tr->block_size * tr->type_size;
	if (!data && !fill && t->nbytes)
		return llm_error(LLM_EINVAL, "gguf: tensor %s: no data", name);
	if (!(t->name = strdup(name)))
		return llm_error(LLM_ENOMEM, "gguf: out of memory");
	t->type = type;
	t->n_dims = n_dims;
	t->data = data;
	t->fill = fill;
	t->user = user;
	w->n_t++;
	return 0;
}

int llm_gguf_add_tensor(struct llm_gguf_writer *w, const char *name,
                        enum llm_dtype type, int n_dims, const int64_t *ne,
                        const void *data)
{
	return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int llm_gguf_add_tensor_fill(struct llm_gguf_writer *w, const char *name,
                             enum llm_dtype type, int n_dims, const int64_t *ne,
                             llm_gguf_fill_fn fill, void *user)
{
	return add_tensor(w, name, type, n_dims, ne, NULL, fill, user);
}

struct wstate {
	FILE *f;
	uint64_t n;
	int err;
};

static void put(struct wstate *s, const void *p, size_t n)
{
	if (s->err || !n)
		return;
	if (fwrite(p, 1, n, s->f) != n)
		s->err = errno ? errno : EIO;
	s->n += n;
}

static void put_u32(struct wstate *s, uint32_t v) { put(s, &v, 4); }
static void put_u64(struct wstate *s, uint64_t v) { put(s, &v, 8); }

static void put_pad(struct wstate *s, size_t align)
{
	static const unsigned char zero[256];
	size_t pad = (align - s->n % align) % align;
	while (pad) {
		size_t k = pad < sizeof(zero) ? pad : sizeof(zero);
		put(s, zero, k);
		pad -= k;
	}
}

/* general.alignment if set (0 when it is not a u32 power of two). */
static size_t writer_alignment(const struct llm_gguf_writer *w)
{
	for (size_t i = 0; i < w->n_kv; i++) {
		uint32_t t, v;
		if (strcmp(w->kvs[i].key, "general.alignment"))
			continue;
		if (w->kvs[i].len != 8)
			return 0;
		memcpy(&t, w->kvs[i].val, 4);
		memcpy(&v, w->kvs[i].val + 4, 4);
		return t == LLM_GGUF_U32 && v && !(v & (v - 1)) ? v : 0;
	}
	return LLM_GGUF_DEFAULT_ALIGNMENT;
}

int llm_gguf_write_stream(struct llm_gguf_writer *w, FILE *f, uint64_t *written)
{
	struct wstate s = { f, 0, 0 };
	size_t align = writer_alignment(w);
	uint64_t off = 0;
	int rc = 0;

	if (!align)
		return llm_error(LLM_EINVAL, "gguf: general.alignment must be a u32 "
		                 "power of two");
	errno = 0;
	put_u32(&s, LLM_GGUF_MAGIC);
	put_u32(&s, 3);
	put_u64(&s, w->n_t);
	put_u64(&s, w->n_kv);
	for (size_t i = 0; i < w->n_kv; i++) {
		put_u64(&s, strlen(w->kvs[i].key));
		put(&s, w->kvs[i].key, strlen(w->kvs[i].key));
		put(&s, w->kvs[i].val, w->kvs[i].len);
	}
	for (size_t i = 0; i < w->n_t; i++) {
		const struct wtensor *t = &w->ts[i];
		put_u64(&s, strlen(t->name));
		put(&s, t->name, strlen(t->name));
		put_u32(&s, (uint32_t)t->n_dims);
		for (int d = 0; d < t->n_dims; d++)
			put_u64(&s, (uint64_t)t->ne[d]);
		put_u32(&s, t->type);
		put_u64(&s, off);
		off += t->nbytes + (align - t->nbytes % align) % align;
	}
	put_pad(&s, align);
	for (size_t i = 0; i < w->n_t && !s.err; i++) {
		const struct wtensor *t = &w->ts[i];
		if (t->fill) {
			void *buf = malloc(t->nbytes ? t->nbytes : 1);
			if (!buf)
				return llm_error(LLM_ENOMEM, "gguf: tensor %s: out of memory",
				                 t->name);
			rc = t->fill(t->user, t->name, buf, t->nbytes);
			if (!rc)
				put(&s, buf, t->nbytes);
			free(buf);
			if (rc)
				return rc;
		} else {
			put(&s, t->data, t->nbytes);
		}
		put_pad(&s, align);
	}
	if (!s.err && fflush(f) != 0)
		s.err = errno ? errno : EIO;
	if (s.err)
		return llm_error(LLM_EIO, "gguf: write failed: %s", strerror(s.err));
	if (written)
		*written = s.n;
	return 0;
}

int llm_gguf_write_file(struct llm_gguf_writer *w, const char *path)
{
	struct llm_ofile *o;
	int rc = llm_ofile_open(&o, path);
	if (rc)
		return rc;
	rc = llm_gguf_write_stream(w, o->f, NULL);
	if (rc) {
		llm_error_prefix(rc, "%s", path);
		llm_ofile_abort(o);
		return rc;
	}
	return llm_ofile_commit(o);
}
