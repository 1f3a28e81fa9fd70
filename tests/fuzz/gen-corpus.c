/*
 * gen-corpus.c - seed corpus for fuzz-gguf (not committed; made by
 * scripts/fuzz-gguf.sh).
 *
 *   gen-corpus OUTDIR [stories260K.gguf]
 *
 * Writes small valid files made with the writer (every value type, string
 * and nested arrays, several dtypes and alignments, GGUF v2), hand-built
 * edge cases, and - when the model is given - its metadata, pieces of it
 * cut at several offsets, and a shrunk copy (few tokens, small tensors).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"

static const char *outdir;
static int n_written;

static void die(const char *what)
{
	fprintf(stderr, "gen-corpus: %s: %s\n", what, llm_errmsg());
	exit(1);
}

static void save(const char *name, const void *data, size_t n)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
	n_written++;
}

/* Write w into memory and save it; the bytes are returned. */
static char *save_writer(const char *name, struct llm_gguf_writer *w, size_t *n)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (!f || llm_gguf_write_stream(w, f, NULL) || fclose(f))
		die(name);
	save(name, buf, size);
	if (n) {
		*n = size;
		return buf;
	}
	free(buf);
	return NULL;
}

/* ---------------------------------------------------------------- raw */

struct bytes {
	unsigned char b[4096];
	size_t n;
};

static void raw(struct bytes *b, const void *p, size_t n)
{
	if (b->n + n > sizeof(b->b))
		abort();
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void r32(struct bytes *b, uint32_t v) { raw(b, &v, 4); }
static void r64(struct bytes *b, uint64_t v) { raw(b, &v, 8); }
static void rstr(struct bytes *b, const char *s)
{
	r64(b, strlen(s));
	raw(b, s, strlen(s));
}

static void header(struct bytes *b, uint32_t version, uint64_t nt, uint64_t nkv)
{
	b->n = 0;
	r32(b, LLM_GGUF_MAGIC);
	r32(b, version);
	r64(b, nt);
	r64(b, nkv);
}

static void crafted(void)
{
	struct bytes b;

	save("empty", "", 0);
	save("magic-only", "GGUF", 4);
	header(&b, 3, 0, 0);
	save("header-only", b.b, b.n);

	/* nested arrays: [[1,2],[3]] of u8, and [["a"],[]] of strings */
	header(&b, 3, 0, 2);
	rstr(&b, "nested.u8");
	r32(&b, LLM_GGUF_ARRAY); r32(&b, LLM_GGUF_ARRAY); r64(&b, 2);
	r32(&b, LLM_GGUF_U8); r64(&b, 2); raw(&b, "\x01\x02", 2);
	r32(&b, LLM_GGUF_U8); r64(&b, 1); raw(&b, "\x03", 1);
	rstr(&b, "nested.str");
	r32(&b, LLM_GGUF_ARRAY); r32(&b, LLM_GGUF_ARRAY); r64(&b, 2);
	r32(&b, LLM_GGUF_STRING); r64(&b, 1); rstr(&b, "a");
	r32(&b, LLM_GGUF_STRING); r64(&b, 0);
	save("nested-arrays", b.b, b.n);

	/* one tiny tensor by hand, v2, alignment 8 */
	header(&b, 2, 1, 1);
	rstr(&b, "general.alignment"); r32(&b, LLM_GGUF_U32); r32(&b, 8);
	rstr(&b, "t"); r32(&b, 2); r64(&b, 2); r64(&b, 1); r32(&b, LLM_F32); r64(&b, 0);
	while (b.n % 8)
		raw(&b, "", 1);
	raw(&b, "\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
	save("v2-align8", b.b, b.n);
}

static int fill_ramp(void *user, const char *name, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++)
		d[i] = (unsigned char)(i * 7 + (uintptr_t)user);
	return 0;
}

static void written(void)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	uint8_t u8[3] = { 1, 2, 255 };
	int16_t i16[2] = { -5, 7 };
	float f32[3] = { 0.5f, -1e30f, 3 };
	double f64[2] = { 1e300, -0.0 };
	uint64_t u64[2] = { 0, UINT64_MAX };
	uint8_t bools[2] = { 0, 1 };
	const char *strs[3] = { "hello", "", "w\xc3\xb6rld" };

	if (!w)
		die("writer");
	llm_gguf_set_str(w, "general.architecture", "llama");
	llm_gguf_set_u32(w, "llama.block_count", 2);
	llm_gguf_set_i32(w, "i32", -3);
	llm_gguf_set_u64(w, "u64", 1ull << 40);
	llm_gguf_set_f32(w, "f32", 1e-5f);
	llm_gguf_set_bool(w, "bool", true);
	llm_gguf_set_arr(w, "arr.u8", LLM_GGUF_U8, u8, 3);
	llm_gguf_set_arr(w, "arr.i16", LLM_GGUF_I16, i16, 2);
	llm_gguf_set_arr(w, "arr.f32", LLM_GGUF_F32, f32, 3);
	llm_gguf_set_arr(w, "arr.f64", LLM_GGUF_F64, f64, 2);
	llm_gguf_set_arr(w, "arr.u64", LLM_GGUF_U64, u64, 2);
	llm_gguf_set_arr(w, "arr.bool", LLM_GGUF_BOOL, bools, 2);
	llm_gguf_set_arr(w, "arr.empty", LLM_GGUF_I32, NULL, 0);
	llm_gguf_set_arr_str(w, "arr.str", strs, NULL, 3);
	save_writer("kv-only", w, NULL);

	int64_t ne_f32[2] = { 3, 2 }, ne_f16[1] = { 5 }, ne_q[2] = { 32, 2 };
	int64_t ne_k[1] = { 256 }, ne_4d[4] = { 2, 1, 2, 1 }, ne_0[2] = { 0, 4 };
	llm_gguf_add_tensor_fill(w, "a.weight", LLM_F32, 2, ne_f32, fill_ramp, (void *)1);
	llm_gguf_add_tensor_fill(w, "b.f16", LLM_F16, 1, ne_f16, fill_ramp, (void *)2);
	llm_gguf_add_tensor_fill(w, "c.q4_0", LLM_Q4_0, 2, ne_q, fill_ramp, (void *)3);
	llm_gguf_add_tensor_fill(w, "d.q8_0", LLM_Q8_0, 2, ne_q, fill_ramp, (void *)4);
	llm_gguf_add_tensor_fill(w, "e.q4_k", LLM_Q4_K, 1, ne_k, fill_ramp, (void *)5);
	llm_gguf_add_tensor_fill(w, "f.4d", LLM_BF16, 4, ne_4d, fill_ramp, (void *)6);
	llm_gguf_add_tensor_fill(w, "g.empty", LLM_F32, 2, ne_0, fill_ramp, (void *)7);
	save_writer("tensors-align32", w, NULL);
	llm_gguf_set_u32(w, "general.alignment", 64);
	save_writer("tensors-align64", w, NULL);
	llm_gguf_set_u32(w, "general.alignment", 1);
	save_writer("tensors-align1", w, NULL);
	llm_gguf_writer_free(w);

	w = llm_gguf_writer_new();
	llm_gguf_add_tensor_fill(w, "only", LLM_I8, 1, ne_f16, fill_ramp, (void *)8);
	save_writer("one-tensor", w, NULL);
	llm_gguf_writer_free(w);
}

/* ---------------------------------------------------------------- model */

static void from_model(const char *path)
{
	struct llm_gguf *g;
	if (llm_gguf_open(&g, path))
		die(path);

	/* Its metadata and a few cuts of the real file. */
	FILE *f = fopen(path, "rb");
	size_t cut[] = { 24, 100, 1000, 4096, 10000 };
	unsigned char *head = malloc(16384);
	size_t got = f ? fread(head, 1, 16384, f) : 0;
	if (f)
		fclose(f);
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		char name[64];
		snprintf(name, sizeof(name), "model-cut-%zu", cut[i]);
		if (cut[i] <= got)
			save(name, head, cut[i]);
	}
	free(head);

	/* Shrunk: every key (token arrays cut to 16), tensors of 8 x 2. */
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++) {
		const char *key = llm_gguf_key(g, i);
		if (llm_gguf_kv_type(g, i) != LLM_GGUF_ARRAY) {
			llm_gguf_copy_kv(w, g, i);
			continue;
		}
		uint64_t n = llm_gguf_arr_n(g, i) < 16 ? llm_gguf_arr_n(g, i) : 16;
		if (llm_gguf_arr_type(g, i) == LLM_GGUF_STRING) {
			const char *s[16];
			size_t l[16];
			for (uint64_t j = 0; j < n; j++)
				s[j] = llm_gguf_arr_str(g, i, j, &l[j]);
			llm_gguf_set_arr_str(w, key, s, l, n);
		} else {
			llm_gguf_set_arr(w, key, llm_gguf_arr_type(g, i),
			                 llm_gguf_arr_data(g, i), n);
		}
	}
	for (int64_t i = 0; i < llm_gguf_n_tensors(g) && i < 12; i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		int64_t ne[2] = { 8, 2 };
		if (llm_gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data))
			die(t->name);
	}
	save_writer("model-shrunk", w, NULL);
	llm_gguf_writer_free(w);
	llm_gguf_free(g);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: gen-corpus OUTDIR [model.gguf]\n");
		return 2;
	}
	outdir = argv[1];
	crafted();
	written();
	if (argc == 3)
		from_model(argv[2]);
	printf("gen-corpus: %d seeds in %s\n", n_written, outdir);
	return 0;
}
