/* test-convert - the convert library: stories260K.bin + tok512.bin against
 * llama.cpp's stories260K.gguf (in C, so it runs without Python), model
 * shapes, Llama 3.1 rope factors, dummy determinism, refusing to overwrite
 * inputs. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/convert.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "testutil.h"

static char data_dir[4096];
static char tmpdir[64];

static bool have(const char *name, char *path, size_t n)
{
	snprintf(path, n, "%s/models/%s", data_dir, name);
	return access(path, R_OK) == 0;
}

static void tmp_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* Same element type and count, equal raw arrays. */
static void same_array(const struct llm_gguf *a, const struct llm_gguf *b,
                       const char *key)
{
	int64_t i = llm_gguf_find_key(a, key), j = llm_gguf_find_key(b, key);
	ck_assert_msg(i >= 0 && j >= 0, "%s missing", key);
	ck_assert_int_eq(llm_gguf_arr_type(a, i), llm_gguf_arr_type(b, j));
	uint64_t n = llm_gguf_arr_n(a, i);
	ck_assert_uint_eq(n, llm_gguf_arr_n(b, j));
	if (llm_gguf_arr_type(a, i) == LLM_GGUF_STRING) {
		for (uint64_t k = 0; k < n; k++) {
			size_t la, lb;
			const char *sa = llm_gguf_arr_str(a, i, k, &la);
			const char *sb = llm_gguf_arr_str(b, j, k, &lb);
			ck_assert_msg(la == lb && !memcmp(sa, sb, la), "%s[%llu]: '%s' != '%s'",
			              key, (unsigned long long)k, sa, sb);
		}
	} else {
		ck_assert_mem_eq(llm_gguf_arr_data(a, i), llm_gguf_arr_data(b, j), n * 4);
	}
}

START_TEST(llama2c_matches_llama_cpp)
{
	char bin[4200], tok[4200], ref[4200], out[128];
	ck_assert(have("stories260K.bin", bin, sizeof(bin)) && have("tok512.bin", tok, sizeof(tok)) &&
	          have("stories260K.gguf", ref, sizeof(ref)));
	struct llm_convert_opts o;
	struct llm_convert *c;
	llm_convert_opts_init(&o);
	o.tok_llama2c = tok;
	o.n_threads = 2;
	ck_assert_msg(llm_convert_open_llama2c(&c, bin, &o) == 0, "%s", llm_errmsg());
	tmp_path(out, sizeof(out), "s.gguf");
	ck_assert_msg(llm_convert_write(c, out) == 0, "%s", llm_errmsg());
	llm_convert_free(c);

	struct llm_gguf *a, *b;
	ck_assert_int_eq(llm_gguf_open(&a, out), 0);
	ck_assert_int_eq(llm_gguf_open(&b, ref), 0);
	/* every tensor of the reference, bit for bit (output.weight is tied:
	 * we leave it out and it must equal token_embd.weight) */
	ck_assert_int_eq(llm_gguf_n_tensors(a), llm_gguf_n_tensors(b) - 1);
	for (int64_t i = 0; i < llm_gguf_n_tensors(b); i++) {
		const struct llm_gguf_tensor *r = llm_gguf_tensor(b, i);
		const struct llm_gguf_tensor *t = llm_gguf_find_tensor(a, r->name);
		if (!t && !strcmp(r->name, "output.weight"))
			t = llm_gguf_find_tensor(a, "token_embd.weight");
		ck_assert_msg(t != NULL, "%s missing", r->name);
		ck_assert_int_eq(t->type, r->type);
		ck_assert_int_eq(t->n_dims, r->n_dims);
		for (int d = 0; d < r->n_dims; d++)
			ck_assert_int_eq(t->ne[d], r->ne[d]);
		ck_assert_uint_eq(t->nbytes, r->nbytes);
		ck_assert_msg(!memcmp(t->data, r->data, r->nbytes), "%s differs", r->name);
	}
	same_array(a, b, "tokenizer.ggml.tokens");
	same_array(a, b, "tokenizer.ggml.scores");
	same_array(a, b, "tokenizer.ggml.token_type");
	static const char *const keys[] = {
		"llama.embedding_length", "llama.feed_forward_length",
		"llama.attention.head_count", "llama.attention.head_count_kv",
		"llama.block_count", "llama.rope.dimension_count",
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.unknown_token_id",
	};
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		uint32_t x, y;
		ck_assert_int_eq(llm_gguf_get_u32(a, keys[k], &x), 0);
		ck_assert_int_eq(llm_gguf_get_u32(b, keys[k], &y), 0);
		ck_assert_msg(x == y, "%s: %u != %u", keys[k], x, y);
	}
	float ea, eb;
	ck_assert_int_eq(llm_gguf_get_f32(a, "llama.attention.layer_norm_rms_epsilon", &ea), 0);
	ck_assert_int_eq(llm_gguf_get_f32(b, "llama.attention.layer_norm_rms_epsilon", &eb), 0);
	ck_assert(ea == eb);
	const char *sa, *sb;
	ck_assert_int_eq(llm_gguf_get_str(a, "general.architecture", &sa), 0);
	ck_assert_int_eq(llm_gguf_get_str(b, "general.architecture", &sb), 0);
	ck_assert_str_eq(sa, sb);
	ck_assert_int_eq(llm_gguf_get_str(a, "tokenizer.ggml.model", &sa), 0);
	ck_assert_str_eq(sa, "llama");
	uint32_t ctx;
	ck_assert_int_eq(llm_gguf_get_u32(a, "llama.context_length", &ctx), 0);
	ck_assert_uint_eq(ctx, 512);   /* the checkpoint's seq_len */
	llm_gguf_free(a);
	llm_gguf_free(b);
	unlink(out);

	/* never overwrite an input */
	ck_assert_int_eq(llm_convert_open_llama2c(&c, bin, &o), 0);
	ck_assert_int_eq(llm_convert_write(c, tok), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "refusing to overwrite"));
	llm_convert_free(c);
}
END_TEST

START_TEST(shapes)
{
	struct llm_model_shape s;
	ck_assert_int_eq(llm_model_shape_parse("TinyLlama-1.1B", &s), 0);
	ck_assert_int_eq(s.n_embd, 2048);
	ck_assert_int_eq(s.n_head_kv, 4);
	ck_assert_int_eq(llm_model_shape_params(&s), 1100048384);   /* TinyLlama */
	ck_assert_int_eq(llm_model_shape_parse("stories15M", &s), 0);
	ck_assert_int_eq(llm_model_shape_params(&s), 15191712);     /* llama2.c's 15M */
	ck_assert_int_eq(llm_model_shape_parse("Llama-3.2-1B", &s), 0);
	ck_assert_int_eq(llm_model_shape_params(&s), 1235814400);   /* Llama 3.2 1B */
	ck_assert_int_eq(s.rope_scaling, LLM_ROPE_SCALING_LLAMA3);
	ck_assert_int_eq(llm_model_shape_parse("custom:dim=128,layers=3,heads=4,"
	                                       "kv_heads=2,arch=qwen2,tied=0", &s), 0);
	ck_assert_int_eq(s.n_embd, 128);
	ck_assert_int_eq(s.n_layer, 3);
	ck_assert_str_eq(s.arch, "qwen2");
	ck_assert(!s.tied);
	ck_assert_int_eq(llm_model_shape_parse("nosuch", &s), LLM_EINVAL);
	ck_assert_int_eq(llm_model_shape_parse("custom:dim=x", &s), LLM_EINVAL);
	ck_assert_int_eq(llm_model_shape_parse("custom:heads=5", &s), LLM_EFORMAT);
	ck_assert_int_eq(llm_model_shape_parse("custom:dim", &s), LLM_EINVAL);
}
END_TEST

START_TEST(llama3_factors)
{
	/* Llama 3.2 1B: theta 500000, factor 32, low 1, high 4, original
	 * context 8192, head size 64: 15 ones, three blended, then 32s (the
	 * values llama.cpp's converter writes for that model). */
	float f[32];
	llm_rope_llama3_factors(f, 64, 500000, 32, 1, 4, 8192);
	for (int i = 0; i < 15; i++)
		ck_assert(f[i] == 1.0f);
	ck_assert_float_eq_tol(f[15], 1.6513293f, 1e-5);
	ck_assert_float_eq_tol(f[16], 3.2922628f, 1e-5);
	ck_assert_float_eq_tol(f[17], 9.666731f, 1e-4);
	for (int i = 18; i < 32; i++)
		ck_assert(f[i] == 32.0f);
}
END_TEST

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	rewind(f);
	char *b = malloc(*n);
	ck_assert_uint_eq(fread(b, 1, *n, f), *n);
	fclose(f);
	return b;
}

START_TEST(dummy_deterministic)
{
	const char *shape = "custom:dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=300";
	char p1[128], p2[128];
	size_t n1, n2;
	struct llm_convert_opts o;
	struct llm_convert *c;
	llm_convert_opts_init(&o);
	o.seed = 11;
	tmp_path(p1, sizeof(p1), "d1.gguf");
	tmp_path(p2, sizeof(p2), "d2.gguf");
	ck_assert_int_eq(llm_convert_open_dummy(&c, shape, &o), 0);
	ck_assert_uint_eq(llm_convert_data_bytes(c),
	                  4 * (64 * 300 + 64 + 2 * (2 * 64 + 64 * 64 * 2 + 64 * 32 * 2 +
	                                            3 * 64 * 96)));
	ck_assert_int_eq(llm_convert_write(c, p1), 0);
	llm_convert_free(c);
	o.n_threads = 4;
	ck_assert_int_eq(llm_convert_open_dummy(&c, shape, &o), 0);
	ck_assert_int_eq(llm_convert_write(c, p2), 0);
	llm_convert_free(c);
	char *a = slurp(p1, &n1), *b = slurp(p2, &n2);
	ck_assert_uint_eq(n1, n2);
	ck_assert(!memcmp(a, b, n1));
	free(b);

	struct llm_gguf *g;
	ck_assert_int_eq(llm_gguf_open(&g, p1), 0);
	ck_assert_int_eq(llm_gguf_n_tensors(g), 1 + 2 * 9 + 1);
	uint32_t v;
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.vocab_size", &v), 0);
	ck_assert_uint_eq(v, 300);
	int64_t k = llm_gguf_find_key(g, "tokenizer.ggml.tokens");
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 300);
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 299, NULL), "<dummy299>");
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 3, NULL), "<0x00>");
	llm_gguf_free(g);

	o.seed = 12;
	ck_assert_int_eq(llm_convert_open_dummy(&c, shape, &o), 0);
	ck_assert_int_eq(llm_convert_write(c, p2), 0);
	llm_convert_free(c);
	b = slurp(p2, &n2);
	ck_assert_uint_eq(n1, n2);
	ck_assert(memcmp(a, b, n1) != 0);
	free(a);
	free(b);
	unlink(p1);
	unlink(p2);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("convert");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	char p[4200];
	if (have("stories260K.bin", p, sizeof(p)) && have("tok512.bin", p, sizeof(p)) &&
	    have("stories260K.gguf", p, sizeof(p)))
		tcase_add_test(tc, llama2c_matches_llama_cpp);
	else   /* convert-llama2c.sh reports the SKIP */
		fprintf(stderr, "test-convert: no stories260K in %s: llama2.c "
		        "comparison left out\n", data_dir);
	tcase_add_test(tc, shapes);
	tcase_add_test(tc, llama3_factors);
	tcase_add_test(tc, dummy_deterministic);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *d = getenv("LLMKIT_DATA");
	snprintf(data_dir, sizeof(data_dir), "%s", d ? d : "../shared/data");
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-convert-XXXXXX");
	if (!mkdtemp(tmpdir))
		return 99;
	int failed = test_run(suite());
	rmdir(tmpdir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
