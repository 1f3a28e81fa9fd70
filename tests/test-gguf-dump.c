/*
 * test-gguf-dump.c - test helper (not a suite): what our GGUF reader sees,
 * as JSON, and copies and samples made by our writer; tests/gguf-python.sh
 * runs scripts/gguf-pycheck.py, which compares them with the independent
 * "gguf" Python package.
 *
 *   test-gguf-dump FILE            JSON: version, alignment, every key (type,
 *                                  value; strings as hex, floats as C99
 *                                  hex floats) and tensor (dtype, shape,
 *                                  offset, size, CRC-32 of the data)
 *   test-gguf-dump --copy IN OUT   copy every key and tensor via the writer
 *   test-gguf-dump --sample OUT    write a file holding every value type
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"

static void die(const char *what)
{
	fprintf(stderr, "test-gguf-dump: %s: %s\n", what, llm_errmsg());
	exit(1);
}

static void put_hex(const void *p, size_t n)
{
	const unsigned char *b = p;
	putchar('"');
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	putchar('"');
}

/* One element of type t at p, as JSON. */
static void put_value(enum llm_gguf_type t, const void *p)
{
	union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32;
	        int32_t i32; float f32; uint64_t u64; int64_t i64; double f64; } v;
	static const size_t size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
	memcpy(&v, p, size[t]);
	switch (t) {
	case LLM_GGUF_U8: printf("%u", v.u8); break;
	case LLM_GGUF_I8: printf("%d", v.i8); break;
	case LLM_GGUF_U16: printf("%u", v.u16); break;
	case LLM_GGUF_I16: printf("%d", v.i16); break;
	case LLM_GGUF_U32: printf("%" PRIu32, v.u32); break;
	case LLM_GGUF_I32: printf("%" PRId32, v.i32); break;
	case LLM_GGUF_U64: printf("%" PRIu64, v.u64); break;
	case LLM_GGUF_I64: printf("%" PRId64, v.i64); break;
	case LLM_GGUF_BOOL: printf("%s", v.u8 ? "true" : "false"); break;
	case LLM_GGUF_F32: printf("\"%a\"", (double)v.f32); break;
	case LLM_GGUF_F64: printf("\"%a\"", v.f64); break;
	default: printf("null"); break;
	}
}

static void dump(const char *path)
{
	struct llm_gguf *g;
	if (llm_gguf_open(&g, path))
		die(path);
	printf("{\"version\": %u, \"alignment\": %zu, \"kv\": [\n",
	       llm_gguf_version(g), llm_gguf_alignment(g));
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++) {
		enum llm_gguf_type t = llm_gguf_kv_type(g, i);
		const char *key = llm_gguf_key(g, i);
		printf("  {\"key\": ");
		put_hex(key, strlen(key));
		printf(", \"type\": \"%s\"", llm_gguf_type_name(t));
		if (t == LLM_GGUF_STRING) {
			printf(", \"value\": ");
			const char *s = llm_gguf_str(g, i);
			put_hex(s, strlen(s));
		} else if (t == LLM_GGUF_ARRAY) {
			enum llm_gguf_type at = llm_gguf_arr_type(g, i);
			uint64_t n = llm_gguf_arr_n(g, i);
			printf(", \"elem\": \"%s\", \"n\": %" PRIu64 ", \"value\": [",
			       llm_gguf_type_name(at), n);
			for (uint64_t j = 0; j < n && at != LLM_GGUF_ARRAY; j++) {
				if (j)
					printf(", ");
				if (at == LLM_GGUF_STRING) {
					size_t len;
					const char *s = llm_gguf_arr_str(g, i, j, &len);
					put_hex(s, len);
				} else {
					static const size_t es[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0,
					                             0, 8, 8, 8 };
					put_value(at, (const char *)llm_gguf_arr_data(g, i) +
					          j * es[at]);
				}
			}
			printf("]");
		} else {
			/* the scalar's bytes are not exposed: read it back through the
			 * typed getters */
			int64_t v;
			float f;
			bool b;
			if (t == LLM_GGUF_F32 || t == LLM_GGUF_F64) {
				if (llm_gguf_get_f32(g, key, &f))
					die(key);
				printf(", \"value\": \"%a\"", (double)f);
			} else if (t == LLM_GGUF_BOOL) {
				if (llm_gguf_get_bool(g, key, &b))
					die(key);
				printf(", \"value\": %s", b ? "true" : "false");
			} else if (llm_gguf_get_i64(g, key, &v) == 0) {
				printf(", \"value\": %" PRId64, v);
			} else {
				/* a u64 above INT64_MAX */
				printf(", \"value\": \"u64>i64\"");
			}
		}
		printf("}%s\n", i + 1 < llm_gguf_n_kv(g) ? "," : "");
	}
	printf("], \"tensors\": [\n");
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		uLong crc = crc32(0, Z_NULL, 0);
		for (size_t off = 0; off < t->nbytes;) {
			size_t k = t->nbytes - off > (1u << 30) ? (1u << 30) : t->nbytes - off;
			crc = crc32(crc, (const Bytef *)t->data + off, (uInt)k);
			off += k;
		}
		printf("  {\"name\": ");
		put_hex(t->name, strlen(t->name));
		printf(", \"dtype\": %d, \"ne\": [", t->type);
		for (int d = 0; d < t->n_dims; d++)
			printf("%s%" PRId64, d ? ", " : "", t->ne[d]);
		printf("], \"offset\": %" PRIu64 ", \"nbytes\": %zu, \"crc32\": %lu}%s\n",
		       t->offset, t->nbytes, (unsigned long)crc,
		       i + 1 < llm_gguf_n_tensors(g) ? "," : "");
	}
	printf("]}\n");
	llm_gguf_free(g);
}

static void copy(const char *in, const char *out)
{
	struct llm_gguf *g;
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	if (!w || llm_gguf_open(&g, in))
		die(in);
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++)
		if (llm_gguf_copy_kv(w, g, i))
			die(llm_gguf_key(g, i));
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		if (llm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data))
			die(t->name);
	}
	if (llm_gguf_write_file(w, out))
		die(out);
	llm_gguf_writer_free(w);
	llm_gguf_free(g);
}

static int fill_ramp(void *user, const char *name, void *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((unsigned char *)dst)[i] = (unsigned char)(i * 29 + 3);
	return 0;
}

static void sample(const char *out)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	uint8_t u8[] = { 0, 7, 255 };
	int8_t i8[] = { -128, 5, 127 };
	uint16_t u16[] = { 1, 65535 };
	int16_t i16[] = { -32768, 32767, 0 };
	uint32_t u32[] = { 4000000000u, 0 };
	int32_t i32[] = { INT32_MIN, -1, INT32_MAX };
	float f32[] = { 0.1f, -3.0e38f, 1e-45f };
	uint8_t bools[] = { 1, 0, 0, 1 };
	uint64_t u64[] = { 1ull << 63, 5 };
	int64_t i64[] = { INT64_MIN, -2, INT64_MAX };
	double f64[] = { 0.1, -1e-310, 1e308 };
	const char *strs[] = { "<unk>", "", "\xe2\x96\x81the", "tab\there" };

	int rc = 0;
	rc |= llm_gguf_set_str(w, "general.architecture", "llama");
	rc |= llm_gguf_set_str(w, "general.name", "sample \xc3\xa9t\xc3\xa9");
	rc |= llm_gguf_set_u32(w, "general.alignment", 64);
	rc |= llm_gguf_set_u32(w, "s.u32", 3000000000u);
	rc |= llm_gguf_set_i32(w, "s.i32", -123456);
	rc |= llm_gguf_set_u64(w, "s.u64", 1ull << 40);
	rc |= llm_gguf_set_f32(w, "s.f32", 1e-5f);
	rc |= llm_gguf_set_bool(w, "s.bool", true);
	rc |= llm_gguf_set_str(w, "s.empty", "");
	rc |= llm_gguf_set_arr(w, "a.u8", LLM_GGUF_U8, u8, 3);
	rc |= llm_gguf_set_arr(w, "a.i8", LLM_GGUF_I8, i8, 3);
	rc |= llm_gguf_set_arr(w, "a.u16", LLM_GGUF_U16, u16, 2);
	rc |= llm_gguf_set_arr(w, "a.i16", LLM_GGUF_I16, i16, 3);
	rc |= llm_gguf_set_arr(w, "a.u32", LLM_GGUF_U32, u32, 2);
	rc |= llm_gguf_set_arr(w, "a.i32", LLM_GGUF_I32, i32, 3);
	rc |= llm_gguf_set_arr(w, "a.f32", LLM_GGUF_F32, f32, 3);
	rc |= llm_gguf_set_arr(w, "a.bool", LLM_GGUF_BOOL, bools, 4);
	rc |= llm_gguf_set_arr(w, "a.u64", LLM_GGUF_U64, u64, 2);
	rc |= llm_gguf_set_arr(w, "a.i64", LLM_GGUF_I64, i64, 3);
	rc |= llm_gguf_set_arr(w, "a.f64", LLM_GGUF_F64, f64, 3);
	rc |= llm_gguf_set_arr(w, "a.empty", LLM_GGUF_I32, NULL, 0);
	rc |= llm_gguf_set_arr_str(w, "a.str", strs, NULL, 4);

	int64_t ne_a[2] = { 5, 3 }, ne_b[1] = { 7 }, ne_c[2] = { 64, 2 };
	int64_t ne_d[3] = { 4, 3, 2 }, ne_e[1] = { 256 }, ne_f[4] = { 2, 2, 2, 2 };
	rc |= llm_gguf_add_tensor_fill(w, "t.f32", LLM_F32, 2, ne_a, fill_ramp, NULL);
	rc |= llm_gguf_add_tensor_fill(w, "t.f16", LLM_F16, 1, ne_b, fill_ramp, NULL);
	rc |= llm_gguf_add_tensor_fill(w, "t.q8_0", LLM_Q8_0, 2, ne_c, fill_ramp, NULL);
	rc |= llm_gguf_add_tensor_fill(w, "t.bf16", LLM_BF16, 3, ne_d, fill_ramp, NULL);
	rc |= llm_gguf_add_tensor_fill(w, "t.q4_k", LLM_Q4_K, 1, ne_e, fill_ramp, NULL);
	rc |= llm_gguf_add_tensor_fill(w, "t.i32", LLM_I32, 4, ne_f, fill_ramp, NULL);
	if (rc || llm_gguf_write_file(w, out))
		die(out);
	llm_gguf_writer_free(w);
}

int main(int argc, char **argv)
{
	if (argc == 2 && argv[1][0] != '-')
		dump(argv[1]);
	else if (argc == 4 && !strcmp(argv[1], "--copy"))
		copy(argv[2], argv[3]);
	else if (argc == 3 && !strcmp(argv[1], "--sample"))
		sample(argv[2]);
	else {
		fprintf(stderr, "usage: test-gguf-dump FILE | --copy IN OUT | --sample OUT\n");
		return 2;
	}
	if (fflush(stdout) || ferror(stdout)) {
		perror("test-gguf-dump: standard output");
		return 1;
	}
	return 0;
}
