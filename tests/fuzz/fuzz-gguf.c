/*
 * fuzz-gguf.c - libFuzzer target for the GGUF reader (and writer).
 *
 * Each input is parsed with llm_gguf_from_memory.  A rejected input must
 * come back as a negative status with a message naming the buffer; an
 * accepted one is walked through every accessor (every key, value, array
 * element and tensor byte is touched, so AddressSanitizer sees any read
 * outside the buffer), its invariants are checked, and it is copied through
 * the writer and read back: whatever the reader accepts the writer must be
 * able to reproduce, and writing the copy again must give the same bytes.
 *
 * Build and run: scripts/fuzz-gguf.sh (or "make fuzz").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"

#define NAME "fuzz-input"

#define CHECK(x) \
	do { \
		if (!(x)) { \
			fprintf(stderr, "fuzz-gguf: %s:%d: check failed: %s (last " \
			        "message: %s)\n", __FILE__, __LINE__, #x, llm_errmsg()); \
			abort(); \
		} \
	} while (0)

static volatile uint64_t sink;

static void touch(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0;
	for (size_t i = 0; i < n; i++)
		h = h * 31 + b[i];
	sink += h;
}

static size_t value_size(enum llm_gguf_type t)
{
	switch (t) {
	case LLM_GGUF_U8: case LLM_GGUF_I8: case LLM_GGUF_BOOL: return 1;
	case LLM_GGUF_U16: case LLM_GGUF_I16: return 2;
	case LLM_GGUF_U32: case LLM_GGUF_I32: case LLM_GGUF_F32: return 4;
	case LLM_GGUF_U64: case LLM_GGUF_I64: case LLM_GGUF_F64: return 8;
	default: return 0;
	}
}

static void walk(const struct llm_gguf *g, const unsigned char *buf, size_t size)
{
	CHECK(!strcmp(llm_gguf_path(g), NAME));
	CHECK(llm_gguf_version(g) == 2 || llm_gguf_version(g) == 3);
	size_t align = llm_gguf_alignment(g);
	CHECK(align && !(align & (align - 1)));
	CHECK(llm_gguf_file_size(g) == size);

	int64_t n_kv = llm_gguf_n_kv(g);
	CHECK(n_kv >= 0 && (uint64_t)n_kv <= size);
	for (int64_t i = 0; i < n_kv; i++) {
		const char *key = llm_gguf_key(g, i);
		CHECK(key);
		CHECK(llm_gguf_find_key(g, key) == i);   /* keys are unique */
		enum llm_gguf_type t = llm_gguf_kv_type(g, i);
		CHECK((unsigned)t < LLM_GGUF_TYPE_COUNT);
		enum llm_gguf_type at = llm_gguf_arr_type(g, i);
		uint64_t n = llm_gguf_arr_n(g, i);
		if (t == LLM_GGUF_ARRAY) {
			CHECK((unsigned)at < LLM_GGUF_TYPE_COUNT);
			const void *d = llm_gguf_arr_data(g, i);
			if (value_size(at)) {
				CHECK(d && n <= size);
				touch(d, n * value_size(at));
			}
			if (at == LLM_GGUF_STRING) {
				for (uint64_t j = 0; j < n; j++) {
					size_t len = (size_t)-1;
					const char *s = llm_gguf_arr_str(g, i, j, &len);
					CHECK(s && len <= size && s[len] == 0);
					touch(s, len + 1);
				}
				CHECK(!llm_gguf_arr_str(g, i, n, NULL));
			} else {
				CHECK(!llm_gguf_arr_str(g, i, 0, NULL));
			}
		} else {
			CHECK(at == LLM_GGUF_TYPE_COUNT && n == 0);
			CHECK(!llm_gguf_arr_str(g, i, 0, NULL));
		}
		const char *s = llm_gguf_str(g, i);
		CHECK((t == LLM_GGUF_STRING) == (s != NULL));
		if (s)
			touch(s, strlen(s));

		/* The typed getters: found, and either a value or EFORMAT. */
		uint32_t u32;
		int64_t i64;
		float f;
		bool b;
		const char *str;
		int rc;
		rc = llm_gguf_get_u32(g, key, &u32);
		CHECK(rc == 0 || rc == LLM_EFORMAT);
		rc = llm_gguf_get_i64(g, key, &i64);
		CHECK(rc == 0 || rc == LLM_EFORMAT);
		rc = llm_gguf_get_f32(g, key, &f);
		CHECK(rc == 0 || rc == LLM_EFORMAT);
		rc = llm_gguf_get_bool(g, key, &b);
		CHECK((rc == 0) == (t == LLM_GGUF_BOOL));
		rc = llm_gguf_get_str(g, key, &str);
		CHECK((rc == 0) == (t == LLM_GGUF_STRING));
		if (!rc)
			CHECK(str == s);
	}
	CHECK(llm_gguf_find_key(g, "\x01no such key\x02") == -1);

	int64_t n_t = llm_gguf_n_tensors(g);
	CHECK(n_t >= 0 && (uint64_t)n_t <= size);
	for (int64_t i = 0; i < n_t; i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		CHECK(t && t->name && t->name[0]);
		CHECK(llm_gguf_find_tensor(g, t->name) == t);
		const struct llm_dtype_traits *tr = llm_dtype_traits(t->type);
		CHECK(tr);
		CHECK(t->n_dims >= 1 && t->n_dims <= LLM_MAX_DIMS);
		uint64_t nrows = 1;
		for (int d = 0; d < LLM_MAX_DIMS; d++) {
			CHECK(t->ne[d] >= 0);
			if (d >= t->n_dims)
				CHECK(t->ne[d] == 1);
			if (d > 0)
				nrows *= (uint64_t)t->ne[d];
		}
		size_t row = llm_row_size(t->type, t->ne[0]);
		CHECK(row || t->ne[0] == 0);
		CHECK(t->nbytes == row * nrows);
		CHECK(t->offset % align == 0);
		const unsigned char *d = t->data;
		CHECK(d >= buf && d <= buf + size && t->nbytes <= (size_t)(buf + size - d));
		CHECK((size_t)(d - buf) % align == 0);
		touch(d, t->nbytes);
	}
	CHECK(!llm_gguf_tensor(g, -1) && !llm_gguf_tensor(g, n_t));
	CHECK(!llm_gguf_find_tensor(g, "\x01no such tensor"));
}

/* Copy everything g holds through the writer into memory. */
static int rewrite(const struct llm_gguf *g, char **out, size_t *out_size)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	CHECK(w);
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++)
		CHECK(llm_gguf_copy_kv(w, g, i) == 0);
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		CHECK(llm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne,
		                          t->data) == 0);
	}
	FILE *f = open_memstream(out, out_size);
	CHECK(f);
	uint64_t written = 0;
	int rc = llm_gguf_write_stream(w, f, &written);
	CHECK(fclose(f) == 0);
	llm_gguf_writer_free(w);
	CHECK(rc == 0 && written == *out_size);
	return 0;
}

static void check_same(const struct llm_gguf *a, const struct llm_gguf *b)
{
	CHECK(llm_gguf_n_kv(a) == llm_gguf_n_kv(b));
	CHECK(llm_gguf_n_tensors(a) == llm_gguf_n_tensors(b));
	CHECK(llm_gguf_alignment(a) == llm_gguf_alignment(b));
	for (int64_t i = 0; i < llm_gguf_n_kv(a); i++) {
		CHECK(!strcmp(llm_gguf_key(a, i), llm_gguf_key(b, i)));
		CHECK(llm_gguf_kv_type(a, i) == llm_gguf_kv_type(b, i));
		CHECK(llm_gguf_arr_type(a, i) == llm_gguf_arr_type(b, i));
		CHECK(llm_gguf_arr_n(a, i) == llm_gguf_arr_n(b, i));
	}
	for (int64_t i = 0; i < llm_gguf_n_tensors(a); i++) {
		const struct llm_gguf_tensor *x = llm_gguf_tensor(a, i);
		const struct llm_gguf_tensor *y = llm_gguf_tensor(b, i);
		CHECK(!strcmp(x->name, y->name) && x->type == y->type);
		CHECK(x->n_dims == y->n_dims && x->nbytes == y->nbytes);
		CHECK(!memcmp(x->ne, y->ne, sizeof(x->ne)));
		CHECK(!x->nbytes || !memcmp(x->data, y->data, x->nbytes));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy the gguf owns, so ASan catches any overrun. */
	unsigned char *buf = malloc(size ? size : 1);
	struct llm_gguf *g = NULL;
	CHECK(buf);
	if (size)
		memcpy(buf, data, size);
	int rc = llm_gguf_from_memory(&g, buf, size, NAME, true);
	if (rc) {
		CHECK(rc < 0 && !g);
		CHECK(rc == LLM_EFORMAT || rc == LLM_ENOMEM);
		CHECK(strstr(llm_errmsg(), NAME));
		return 0;
	}
	walk(g, buf, size);

	/* The writer pads the header to the alignment, which a tiny file may
	 * set to 2^31: a copy that big is what was asked for, not a bug, but
	 * no use to the fuzzer. */
	if (llm_gguf_alignment(g) > 65536) {
		llm_gguf_free(g);
		return 0;
	}
	char *w1 = NULL, *w2 = NULL;
	size_t n1 = 0, n2 = 0;
	struct llm_gguf *g1 = NULL, *g2 = NULL;
	rewrite(g, &w1, &n1);
	unsigned char *copy = malloc(n1 ? n1 : 1);
	CHECK(copy);
	memcpy(copy, w1, n1);
	rc = llm_gguf_from_memory(&g1, copy, n1, NAME, true);
	CHECK(rc == 0);
	walk(g1, copy, n1);
	check_same(g, g1);
	rewrite(g1, &w2, &n2);
	CHECK(n1 == n2 && !memcmp(w1, w2, n1));
	rc = llm_gguf_from_memory(&g2, w2, n2, NAME, true);
	CHECK(rc == 0);
	w2 = NULL;
	check_same(g, g2);
	llm_gguf_free(g2);
	llm_gguf_free(g1);
	free(w1);
	free(w2);
	llm_gguf_free(g);
	return 0;
}
