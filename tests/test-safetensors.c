/* test-safetensors - the safetensors reader and writer: round trips, and
 * headers that lie (each refused with the right status, never read out of
 * bounds: run under --enable-sanitizers to be sure). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/safetensors.h"
#include "llmkit/tensor.h"
#include "testutil.h"

/* Serialize a writer into a malloc'd buffer. */
static char *write_mem(struct llm_safetensors_writer *w, size_t *size)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, size);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(llm_safetensors_write_stream(w, f, NULL), 0);
	fclose(f);
	return buf;
}

static int fill_ramp(void *user, const char *name, void *dst, size_t nbytes)
{
	int32_t *p = dst;
	(void)name;
	for (size_t i = 0; i < nbytes / 4; i++)
		p[i] = (int32_t)i * *(int *)user;
	return 0;
}

START_TEST(round_trip)
{
	struct llm_safetensors_writer *w = llm_safetensors_writer_new();
	float a[6] = { 1, -2, 3.5f, 0, 1e-3f, 7 };
	uint16_t h[4] = { llm_f32_to_f16(1), llm_f32_to_f16(-0.5f), 0, 0x7bff };
	uint16_t b[2] = { llm_f32_to_bf16(3), llm_f32_to_bf16(-1) };
	float scalar = 42;
	int mul = 3;
	const int64_t sa[2] = { 2, 3 }, sh[1] = { 4 }, sb[3] = { 1, 2, 1 }, si[2] = { 5, 2 };

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(llm_safetensors_set_metadata(w, "format", "pt"), 0);
	ck_assert_int_eq(llm_safetensors_add(w, "a.weight", LLM_F32, 2, sa, a), 0);
	ck_assert_int_eq(llm_safetensors_add(w, "h", LLM_F16, 1, sh, h), 0);
	ck_assert_int_eq(llm_safetensors_add(w, "b", LLM_BF16, 3, sb, b), 0);
	ck_assert_int_eq(llm_safetensors_add(w, "scalar", LLM_F32, 0, NULL, &scalar), 0);
	ck_assert_int_eq(llm_safetensors_add_fill(w, "ramp", LLM_I32, 2, si, fill_ramp,
	                                          &mul), 0);
	ck_assert_int_eq(llm_safetensors_add(w, "a.weight", LLM_F32, 2, sa, a), LLM_EINVAL);
	ck_assert_int_eq(llm_safetensors_add(w, "q", LLM_Q4_0, 1, sh, a), LLM_EUNSUPPORTED);

	size_t n;
	char *buf = write_mem(w, &n);
	uint64_t hlen;
	memcpy(&hlen, buf, 8);
	ck_assert_uint_eq(hlen % 8, 0);
	ck_assert_uint_eq(n, 8 + hlen + sizeof(a) + sizeof(h) + sizeof(b) + 4 + 40);

	struct llm_safetensors *st;
	ck_assert_int_eq(llm_safetensors_from_memory(&st, buf, n, "mem", true), 0);
	ck_assert_int_eq(llm_safetensors_n_tensors(st), 5);
	ck_assert_str_eq(llm_safetensors_metadata(st, "format"), "pt");
	ck_assert_ptr_null(llm_safetensors_metadata(st, "nope"));
	const struct llm_safetensors_tensor *t = llm_safetensors_find(st, "a.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->type, LLM_F32);
	ck_assert_int_eq(t->n_dims, 2);
	ck_assert_int_eq(t->shape[0], 2);
	ck_assert_int_eq(t->shape[1], 3);
	ck_assert_mem_eq(t->data, a, sizeof(a));
	t = llm_safetensors_find(st, "h");
	ck_assert_int_eq(t->type, LLM_F16);
	ck_assert_mem_eq(t->data, h, sizeof(h));
	t = llm_safetensors_find(st, "b");
	ck_assert_int_eq(t->type, LLM_BF16);
	ck_assert_int_eq(t->n_dims, 3);
	ck_assert_mem_eq(t->data, b, sizeof(b));
	t = llm_safetensors_find(st, "scalar");
	ck_assert_int_eq(t->n_dims, 0);
	ck_assert_uint_eq(t->nbytes, 4);
	ck_assert_mem_eq(t->data, &scalar, 4);
	t = llm_safetensors_find(st, "ramp");
	ck_assert_int_eq(t->type, LLM_I32);
	ck_assert_int_eq(((const int32_t *)t->data)[9], 27);
	/* in offset order, contiguous */
	uint64_t end = 0;
	for (int64_t i = 0; i < llm_safetensors_n_tensors(st); i++) {
		t = llm_safetensors_tensor(st, i);
		ck_assert_uint_eq(t->offset, end);
		end += t->nbytes;
	}
	llm_safetensors_free(st);
	llm_safetensors_writer_free(w);
}
END_TEST

START_TEST(write_file_atomic)
{
	char dir[] = "/tmp/test-st-XXXXXX", path[64];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/x.safetensors", dir);
	struct llm_safetensors_writer *w = llm_safetensors_writer_new();
	float v[3] = { 1, 2, 3 };
	const int64_t s[1] = { 3 };
	ck_assert_int_eq(llm_safetensors_add(w, "v", LLM_F32, 1, s, v), 0);
	ck_assert_int_eq(llm_safetensors_write_file(w, path), 0);
	struct llm_safetensors *st;
	ck_assert_int_eq(llm_safetensors_open(&st, path), 0);
	ck_assert_mem_eq(llm_safetensors_find(st, "v")->data, v, sizeof(v));
	ck_assert_str_eq(llm_safetensors_path(st), path);
	llm_safetensors_free(st);
	llm_safetensors_writer_free(w);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);   /* nothing else (no temporary) left */
	ck_assert_int_eq(llm_safetensors_open(&st, path), LLM_ENOTFOUND);
	ck_assert_ptr_null(st);
}
END_TEST

/* A file of header text (padded) followed by ndata zero bytes. */
static int open_text(const char *header, size_t ndata, struct llm_safetensors **st)
{
	size_t hl = strlen(header), n = 8 + hl + ndata;
	char *buf = calloc(1, n);
	uint64_t h64 = hl;
	memcpy(buf, &h64, 8);
	memcpy(buf + 8, header, hl);
	return llm_safetensors_from_memory(st, buf, n, "bad", true);
}

static const struct {
	const char *header;
	size_t ndata;
	int rc;
	const char *msg;      /* part of the message */
} bad[] = {
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
	  LLM_EFORMAT, "data extends past end of file" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12,
	  LLM_EFORMAT, "need 12" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
	  LLM_EFORMAT, "before begin" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
	  LLM_EFORMAT, "overlap" },
	{ "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
	  LLM_EUNSUPPORTED, "BOOL is not supported" },
	{ "{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
	  LLM_EFORMAT, "unknown dtype" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
	  LLM_EFORMAT, "shape[0]" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
	  "\"data_offsets\":[0,8]}}", 8, LLM_EFORMAT, "overflows" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
	  "\"data_offsets\":[0,4]}}", 4, LLM_EFORMAT, "9 dimensions" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, LLM_EFORMAT, "data_offsets" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
	  LLM_EFORMAT, "two non-negative" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	  LLM_EFORMAT, "duplicate" },
	{ "{\"__metadata__\":{\"x\":1}}", 0, LLM_EFORMAT, "__metadata__.x" },
	{ "{\"a\":5}", 0, LLM_EFORMAT, "not an object" },
	{ "[1,2]", 0, LLM_EFORMAT, "not a JSON object" },
	{ "{\"a\":", 0, LLM_EFORMAT, "header:" },
};

START_TEST(bad_headers)
{
	struct llm_safetensors *st = (void *)1;
	int rc = open_text(bad[_i].header, bad[_i].ndata, &st);
	ck_assert_msg(rc == bad[_i].rc, "case %d: rc %d (%s), want %d", _i, rc,
	              llm_errmsg(), bad[_i].rc);
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(llm_errmsg(), bad[_i].msg), "case %d: message '%s' "
	              "lacks '%s'", _i, llm_errmsg(), bad[_i].msg);
	ck_assert_ptr_null(strchr(llm_errmsg(), '\n'));
}
END_TEST

START_TEST(bad_sizes)
{
	struct llm_safetensors *st;
	/* shorter than the length field */
	ck_assert_int_eq(llm_safetensors_from_memory(&st, "abc", 3, "x", false),
	                 LLM_EFORMAT);
	/* header length past the end, and absurdly large */
	unsigned char buf[16] = { 0 };
	uint64_t h = 9;
	memcpy(buf, &h, 8);
	memcpy(buf + 8, "{}", 2);
	ck_assert_int_eq(llm_safetensors_from_memory(&st, buf, 10, "x", false),
	                 LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "extends past end of file"));
	h = UINT64_MAX;
	memcpy(buf, &h, 8);
	ck_assert_int_eq(llm_safetensors_from_memory(&st, buf, 16, "x", false),
	                 LLM_EFORMAT);
	/* the empty header is a valid, empty file */
	h = 2;
	memcpy(buf, &h, 8);
	ck_assert_int_eq(llm_safetensors_from_memory(&st, buf, 10, "x", false), 0);
	ck_assert_int_eq(llm_safetensors_n_tensors(st), 0);
	llm_safetensors_free(st);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, round_trip);
	tcase_add_test(tc, write_file_atomic);
	tcase_add_loop_test(tc, bad_headers, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, bad_sizes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	int failed = test_run(suite());
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
