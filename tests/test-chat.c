/*
 * test-chat.c - chat template detection and formatting.
 *
 * Each family is pinned to exact strings below, and to the renderings in
 * data/fixtures/tokenizer/chat.json, which scripts/gen-tokenizer-fixtures.py
 * made by running the models' own Jinja templates (from their
 * tokenizer_config.json) through jinja2 as transformers does, for several
 * conversations, with and without a generation prompt.
 */
#define _GNU_SOURCE
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/chat.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "testutil.h"

static char fix_path[4096];

static const struct llm_chat_msg conv[] = {
	{ "system", "You are a helpful assistant." },
	{ "user", "Hello!" },
	{ "assistant", "Hi there. How can I help?" },
	{ "user", "Tell me a joke." },
};

static void expect_format(enum llm_chat_template t, const struct llm_chat_msg *m,
                          int n, bool gen, const char *want)
{
	char *out;
	size_t len;
	int rc = llm_chat_format(t, m, n, gen, &out, &len);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	ck_assert_uint_eq(len, strlen(out));
	ck_assert_msg(!strcmp(out, want), "%s (add_assistant %d):\n got  \"%s\"\n want \"%s\"",
	              llm_chat_template_name(t), gen, out, want);
	free(out);
}

START_TEST(pinned_strings)
{
	expect_format(LLM_CHAT_CHATML, conv, 4, true,
		"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
		"<|im_start|>user\nHello!<|im_end|>\n"
		"<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n"
		"<|im_start|>user\nTell me a joke.<|im_end|>\n"
		"<|im_start|>assistant\n");
	expect_format(LLM_CHAT_LLAMA2, conv, 4, true,
		"<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST]"
		" Hi there. How can I help? </s><s>[INST] Tell me a joke. [/INST]");
	expect_format(LLM_CHAT_LLAMA3, conv, 4, true,
		"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
		"You are a helpful assistant.<|eot_id|>"
		"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
		"<|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|>"
		"<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
		"<|start_header_id|>assistant<|end_header_id|>\n\n");
	expect_format(LLM_CHAT_MISTRAL, conv, 4, true,
		"<s> [INST] You are a helpful assistant.\n\nHello! [/INST]"
		" Hi there. How can I help?</s> [INST] Tell me a joke. [/INST]");
	expect_format(LLM_CHAT_ZEPHYR, conv, 4, true,
		"<|system|>\nYou are a helpful assistant.</s>\n"
		"<|user|>\nHello!</s>\n"
		"<|assistant|>\nHi there. How can I help?</s>\n"
		"<|user|>\nTell me a joke.</s>\n"
		"<|assistant|>\n");
	expect_format(LLM_CHAT_GEMMA, conv, 4, true,
		"<bos><start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n"
		"<start_of_turn>model\nHi there. How can I help?<end_of_turn>\n"
		"<start_of_turn>user\nTell me a joke.<end_of_turn>\n"
		"<start_of_turn>model\n");
	expect_format(LLM_CHAT_PHI3, conv, 4, true,
		"<|system|>\nYou are a helpful assistant.<|end|>\n"
		"<|user|>\nHello!<|end|>\n"
		"<|assistant|>\nHi there. How can I help?<|end|>\n"
		"<|user|>\nTell me a joke.<|end|>\n"
		"<|assistant|>\n");
	/* without a generation prompt */
	expect_format(LLM_CHAT_PHI3, conv + 1, 1, false,
		"<|user|>\nHello!<|end|>\n<|endoftext|>");
	expect_format(LLM_CHAT_LLAMA3, conv + 1, 1, false,
		"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>");
	/* trimming: Llama 2 strips content (Python whitespace, Unicode too) */
	struct llm_chat_msg pad[] = {
		{ "user", " \t\xc2\xa0 hi \xe3\x80\x80\n" },
		{ "assistant", "\xe2\x80\x83yo\x1f" },
	};
	expect_format(LLM_CHAT_LLAMA2, pad, 2, true, "<s>[INST] hi [/INST] yo </s>");
	expect_format(LLM_CHAT_GEMMA, pad, 2, false,
		"<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n");
	/* empty conversations */
	expect_format(LLM_CHAT_CHATML, conv, 0, true, "<|im_start|>assistant\n");
	expect_format(LLM_CHAT_ZEPHYR, conv, 0, true, "");
	/* a system message that is not first goes to the next turn */
	struct llm_chat_msg late[] = {
		{ "user", "a" }, { "assistant", "b" }, { "system", "s" }, { "user", "c" },
	};
	expect_format(LLM_CHAT_GEMMA, late, 4, false,
		"<bos><start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n"
		"<start_of_turn>user\ns\n\nc<end_of_turn>\n");
	expect_format(LLM_CHAT_LLAMA2, late, 4, false,
		"<s>[INST] a [/INST] b </s><s>[INST] <<SYS>>\ns\n<</SYS>>\n\nc [/INST]");
}
END_TEST

static const struct llm_chat_msg *json_conv(json_t *c, struct llm_chat_msg *m, int *n)
{
	size_t i;
	json_t *x;
	*n = 0;
	json_array_foreach(c, i, x) {
		m[i].role = json_string_value(json_object_get(x, "role"));
		m[i].content = json_string_value(json_object_get(x, "content"));
		(*n)++;
	}
	return m;
}

START_TEST(jinja_renderings)
{
	json_error_t err;
	json_t *fx = json_load_file(fix_path, 0, &err), *t, *r;
	size_t i, k;
	int checked = 0;
	bool seen[LLM_CHAT_COUNT] = { 0 };

	ck_assert_msg(fx != NULL, "%s:%d: %s", fix_path, err.line, err.text);
	json_t *convs = json_object_get(fx, "conversations");
	json_array_foreach(json_object_get(fx, "templates"), i, t) {
		const char *name = json_string_value(json_object_get(t, "name"));
		const char *model = json_string_value(json_object_get(t, "model"));
		int want = llm_chat_template_from_name(name);
		ck_assert_int_gt(want, 0);
		ck_assert_msg(llm_chat_detect(json_string_value(json_object_get(t, "template"))) ==
		              (enum llm_chat_template)want, "%s: not detected as %s", model, name);
		seen[want] = true;
		json_array_foreach(json_object_get(t, "rendered"), k, r) {
			struct llm_chat_msg m[16];
			int n;
			json_t *c = json_array_get(convs, (size_t)json_integer_value(
			                           json_object_get(r, "conversation")));
			json_conv(c, m, &n);
			expect_format((enum llm_chat_template)want, m, n,
			              json_is_true(json_object_get(r, "add_assistant")),
			              json_string_value(json_object_get(r, "text")));
			checked++;
		}
	}
	for (int f = LLM_CHAT_UNKNOWN + 1; f < LLM_CHAT_COUNT; f++)
		ck_assert_msg(seen[f], "no fixture for %s", llm_chat_template_name(f));
	ck_assert_int_ge(checked, 40);
	json_array_foreach(json_object_get(fx, "detect_only"), i, t) {
		const char *name = json_string_value(json_object_get(t, "name"));
		ck_assert_int_eq(llm_chat_detect(json_string_value(json_object_get(t, "template"))),
		                 llm_chat_template_from_name(name));
	}
	json_decref(fx);
}
END_TEST

START_TEST(names_and_detection)
{
	for (int f = LLM_CHAT_UNKNOWN + 1; f < LLM_CHAT_COUNT; f++)
		ck_assert_int_eq(llm_chat_template_from_name(llm_chat_template_name(f)), f);
	ck_assert_str_eq(llm_chat_template_name(LLM_CHAT_UNKNOWN), "unknown");
	ck_assert_str_eq(llm_chat_template_name(LLM_CHAT_COUNT), "unknown");
	ck_assert_int_eq(llm_chat_template_from_name("unknown"), -1);
	ck_assert_int_eq(llm_chat_template_from_name("ChatML"), -1);
	ck_assert_int_eq(llm_chat_template_from_name(NULL), -1);
	ck_assert_int_eq(llm_chat_detect(NULL), LLM_CHAT_UNKNOWN);
	ck_assert_int_eq(llm_chat_detect(""), LLM_CHAT_UNKNOWN);
	ck_assert_int_eq(llm_chat_detect("{{ messages[0]['content'] }}"), LLM_CHAT_UNKNOWN);
	/* Phi-3-medium's template: <|user|> ... <|end|>, no system role */
	ck_assert_int_eq(llm_chat_detect("{% for message in messages %}{% if (message['role'] "
		"== 'user') %}{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n' + "
		"'<|assistant|>' + '\\n'}}{% endif %}{% endfor %}"), LLM_CHAT_PHI3);
}
END_TEST

START_TEST(bad_input)
{
	char *out = (char *)1;
	size_t len;
	struct llm_chat_msg m[] = { { "user", "hi" }, { "tool", "x" } };
	ck_assert_int_eq(llm_chat_format(LLM_CHAT_CHATML, m, 2, true, &out, &len), LLM_EINVAL);
	ck_assert_ptr_null(out);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "message 2"));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "'tool'"));
	m[1].role = NULL;
	ck_assert_int_eq(llm_chat_format(LLM_CHAT_LLAMA3, m, 2, true, &out, &len), LLM_EINVAL);
	ck_assert_int_eq(llm_chat_format(LLM_CHAT_UNKNOWN, m, 1, true, &out, &len), LLM_EINVAL);
	ck_assert_int_eq(llm_chat_format(LLM_CHAT_COUNT, m, 1, true, &out, &len), LLM_EINVAL);
	/* no content is empty content */
	struct llm_chat_msg e[] = { { "user", NULL } };
	expect_format(LLM_CHAT_CHATML, e, 1, false, "<|im_start|>user\n<|im_end|>\n");
}
END_TEST

static struct llm_gguf *gguf_with(const char *tmpl)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	struct llm_gguf *g;
	ck_assert_int_eq(llm_gguf_set_str(w, "general.architecture", "llama"), 0);
	if (tmpl)
		ck_assert_int_eq(llm_gguf_set_str(w, "tokenizer.chat_template", tmpl), 0);
	ck_assert_int_eq(llm_gguf_write_stream(w, f, NULL), 0);
	fclose(f);
	ck_assert_int_eq(llm_gguf_from_memory(&g, buf, size, "chat.gguf", false), 0);
	free(buf);
	llm_gguf_writer_free(w);
	return g;
}

START_TEST(from_gguf)
{
	struct llm_gguf *g = gguf_with("{{ bos_token }}{% for m in messages %}"
		"<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}");
	ck_assert_int_eq(llm_chat_from_gguf(g), LLM_CHAT_GEMMA);
	llm_gguf_free(g);
	g = gguf_with(NULL);
	ck_assert_int_eq(llm_chat_from_gguf(g), LLM_CHAT_UNKNOWN);
	llm_gguf_free(g);
}
END_TEST

int main(void)
{
	const char *src = getenv("LLMKIT_SRC");
	snprintf(fix_path, sizeof(fix_path), "%s/data/fixtures/tokenizer/chat.json",
	         src && *src ? src : ".");
	Suite *s = suite_create("chat");
	TCase *tc = tcase_create("chat");
	tcase_add_test(tc, pinned_strings);
	tcase_add_test(tc, jinja_renderings);
	tcase_add_test(tc, names_and_detection);
	tcase_add_test(tc, bad_input);
	tcase_add_test(tc, from_gguf);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
