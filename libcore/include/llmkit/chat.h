/*
 * chat.h - chat templates: turn a list of messages into the prompt text a
 * chat model was trained on.
 *
 * Models carry a Jinja template in "tokenizer.chat_template"; rather than run
 * Jinja, we recognise the common families from distinctive markers in it and
 * format them in C.  --chat-template NAME overrides the detection.
 */
#ifndef LLMKIT_CHAT_H
#define LLMKIT_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_gguf;

enum llm_chat_template {
	LLM_CHAT_UNKNOWN = 0,
	LLM_CHAT_CHATML,     /* <|im_start|>role\n...<|im_end|>\n (Qwen2, SmolLM) */
	LLM_CHAT_LLAMA2,     /* <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] */
	LLM_CHAT_LLAMA3,     /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
	LLM_CHAT_MISTRAL,    /* [INST] ... [/INST] without <<SYS>> */
	LLM_CHAT_ZEPHYR,     /* <|user|>\n...</s>\n<|assistant|>\n (TinyLlama chat) */
	LLM_CHAT_GEMMA,      /* <start_of_turn>user\n...<end_of_turn>\n */
	LLM_CHAT_PHI3,       /* <|user|>\n...<|end|>\n<|assistant|>\n */
	LLM_CHAT_COUNT
};

struct llm_chat_msg {
	const char *role;     /* "system", "user", "assistant" */
	const char *content;
};

/* Template family from a Jinja source; LLM_CHAT_UNKNOWN if unrecognised. */
enum llm_chat_template llm_chat_detect(const char *jinja);
/* From a model: tokenizer.chat_template detected, else LLM_CHAT_UNKNOWN. */
enum llm_chat_template llm_chat_from_gguf(const struct llm_gguf *g);
/* "chatml", "llama2", ...; -1 when unknown. */
int llm_chat_template_from_name(const char *name);
const char *llm_chat_template_name(enum llm_chat_template t);

/*
 * Format n messages.  With add_assistant the text ends with the opening of
 * an assistant turn, ready for generation.  The result contains the
 * template's special tokens as text (tokenize it with parse_special) and
 * includes a leading BOS string where the template has one ("<s>",
 * "<|begin_of_text|>", "<bos>"), so tokenize without add_bos.  *out is
 * malloc'd.  Unknown roles give LLM_EINVAL.
 */
int llm_chat_format(enum llm_chat_template t, const struct llm_chat_msg *msgs,
                    int n, bool add_assistant, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
