/*
 * chat.c - chat templates (see chat.h).
 *
 * Each family is formatted the way its reference template renders in
 * Jinja (transformers' apply_chat_template: trim_blocks, lstrip_blocks):
 *
 *   chatml   teknium/OpenHermes-2.5 (Qwen2's adds a default system prompt
 *            when there is none; we do not)
 *   llama2   meta-llama/Llama-2-7b-chat-hf: system in <<SYS>> inside the
 *            first [INST], content strip()ped, BOS before every [INST]
 *   llama3   meta-llama/Meta-Llama-3-8B-Instruct: content trimmed
 *   mistral  mistralai/Mistral-7B-Instruct-v0.1 (current template): system
 *            prefixed to the first user message
 *   zephyr   TinyLlama/TinyLlama-1.1B-Chat-v1.0
 *   gemma    google/gemma-3-*-it: system folded into the first user turn,
 *            content trimmed
 *   phi3     microsoft/Phi-3-mini-4k-instruct: without a generation prompt
 *            the text ends with <|endoftext|>
 *
 * Where the Jinja raises (roles out of order, a system message that is not
 * first), we format anyway: a system message is kept for the next turn.
 */
#include <stdlib.h>
#include <string.h>

#include "llmkit/chat.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"

static const char *const names[LLM_CHAT_COUNT] = {
	[LLM_CHAT_UNKNOWN] = "unknown",
	[LLM_CHAT_CHATML] = "chatml",
	[LLM_CHAT_LLAMA2] = "llama2",
	[LLM_CHAT_LLAMA3] = "llama3",
	[LLM_CHAT_MISTRAL] = "mistral",
	[LLM_CHAT_ZEPHYR] = "zephyr",
	[LLM_CHAT_GEMMA] = "gemma",
	[LLM_CHAT_PHI3] = "phi3",
};

const char *llm_chat_template_name(enum llm_chat_template t)
{
	return t > LLM_CHAT_UNKNOWN && t < LLM_CHAT_COUNT ? names[t] : names[0];
}

int llm_chat_template_from_name(const char *name)
{
	for (int i = LLM_CHAT_UNKNOWN + 1; i < LLM_CHAT_COUNT; i++)
		if (name && !strcmp(name, names[i]))
			return i;
	return -1;
}

/* Distinctive markers, most specific first: Phi-3 and Zephyr share
 * <|user|>, Llama 2 and Mistral share [INST]. */
enum llm_chat_template llm_chat_detect(const char *j)
{
	if (!j)
		return LLM_CHAT_UNKNOWN;
	if (strstr(j, "<|im_start|>"))
		return LLM_CHAT_CHATML;
	if (strstr(j, "<|start_header_id|>") && strstr(j, "<|end_header_id|>"))
		return LLM_CHAT_LLAMA3;
	if (strstr(j, "<start_of_turn>"))
		return LLM_CHAT_GEMMA;
	if (strstr(j, "<|assistant|>") && strstr(j, "<|end|>"))
		return LLM_CHAT_PHI3;
	if (strstr(j, "<|user|>") && strstr(j, "<|assistant|>"))
		return LLM_CHAT_ZEPHYR;
	if (strstr(j, "[INST]"))
		return strstr(j, "<<SYS>>") ? LLM_CHAT_LLAMA2 : LLM_CHAT_MISTRAL;
	return LLM_CHAT_UNKNOWN;
}

enum llm_chat_template llm_chat_from_gguf(const struct llm_gguf *g)
{
	const char *j;
	if (llm_gguf_get_str(g, "tokenizer.chat_template", &j))
		return LLM_CHAT_UNKNOWN;
	return llm_chat_detect(j);
}

/* ---------------------------------------------------------------- text */

struct sbuf {
	char *s;
	size_t n, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->s, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = 0;
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* Length of a whitespace character at s (Python's str.isspace, which is
 * what Jinja's trim and str.strip() remove), 0 if none. */
static int space_len(const unsigned char *s, size_t n)
{
	if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20)))
		return 1;
	if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0))
		return 2;
	if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80)       /* U+1680 */
		return 3;
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&                    /* U+2000.. */
	    ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
		return 3;
	if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)       /* U+205F */
		return 3;
	if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80)       /* U+3000 */
		return 3;
	return 0;
}

/* [*start, *end) of s without leading and trailing whitespace. */
static void trim(const char *s, size_t *start, size_t *end)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t a = 0, b = strlen(s);
	int k;
	while (a < b && (k = space_len(u + a, b - a)))
		a += (size_t)k;
	/* from the right: try each possible character length */
	for (;;) {
		bool cut = false;
		for (int len = 1; len <= 3 && !cut; len++)
			if (b >= a + (size_t)len && space_len(u + b - len, (size_t)len) == len) {
				b -= (size_t)len;
				cut = true;
			}
		if (!cut)
			break;
	}
	*start = a;
	*end = b;
}

static void sb_trimmed(struct sbuf *b, const char *s)
{
	size_t x, y;
	trim(s, &x, &y);
	sb_add(b, s + x, y - x);
}

/* ---------------------------------------------------------------- format */

int llm_chat_format(enum llm_chat_template t, const struct llm_chat_msg *msgs,
                    int n, bool add_assistant, char **out, size_t *len)
{
	struct sbuf b = { 0 };
	struct sbuf sys = { 0 };      /* system text waiting for the next turn */
	bool have_sys = false;

	*out = NULL;
	*len = 0;
	if (t <= LLM_CHAT_UNKNOWN || t >= LLM_CHAT_COUNT)
		return llm_error(LLM_EINVAL, "chat: no template given");
	for (int i = 0; i < n; i++) {
		const char *r = msgs[i].role;
		if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")))
			return llm_error(LLM_EINVAL, "chat: message %d: unknown role '%s' "
			                 "(system, user or assistant)", i + 1, r ? r : "(null)");
	}

	switch (t) {
	case LLM_CHAT_LLAMA3:
	case LLM_CHAT_GEMMA:
	case LLM_CHAT_MISTRAL:
		if (n > 0 || t != LLM_CHAT_LLAMA3)
			sb_str(&b, t == LLM_CHAT_LLAMA3 ? "<|begin_of_text|>" :
			           t == LLM_CHAT_GEMMA ? "<bos>" : "<s>");
		break;
	default:
		break;
	}

	for (int i = 0; i < n; i++) {
		const char *role = msgs[i].role;
		const char *c = msgs[i].content ? msgs[i].content : "";
		bool is_sys = !strcmp(role, "system"), is_user = !strcmp(role, "user");

		switch (t) {
		case LLM_CHAT_CHATML:
			sb_str(&b, "<|im_start|>");
			sb_str(&b, role);
			sb_str(&b, "\n");
			sb_str(&b, c);
			sb_str(&b, "<|im_end|>\n");
			break;
		case LLM_CHAT_LLAMA3:
			sb_str(&b, "<|start_header_id|>");
			sb_str(&b, role);
			sb_str(&b, "<|end_header_id|>\n\n");
			sb_trimmed(&b, c);
			sb_str(&b, "<|eot_id|>");
			break;
		case LLM_CHAT_ZEPHYR:
		case LLM_CHAT_PHI3:
			sb_str(&b, "<|");
			sb_str(&b, role);
			sb_str(&b, "|>\n");
			sb_str(&b, c);
			sb_str(&b, t == LLM_CHAT_ZEPHYR ? "</s>\n" : "<|end|>\n");
			break;
		case LLM_CHAT_LLAMA2:
		case LLM_CHAT_MISTRAL:
		case LLM_CHAT_GEMMA:
			if (is_sys) {
				if (have_sys)
					sb_str(&sys, "\n\n");
				sb_str(&sys, c);
				have_sys = true;
				break;
			}
			if (t == LLM_CHAT_GEMMA) {
				sb_str(&b, is_user ? "<start_of_turn>user\n" :
				                     "<start_of_turn>model\n");
				if (have_sys) {
					sb_add(&b, sys.s, sys.n);
					sb_str(&b, "\n\n");
					have_sys = false;
					sys.n = 0;
				}
				sb_trimmed(&b, c);
				sb_str(&b, "<end_of_turn>\n");
			} else if (t == LLM_CHAT_LLAMA2) {
				if (is_user) {
					/* strip() applies to the <<SYS>> block plus content */
					struct sbuf u = { 0 };
					if (have_sys) {
						sb_str(&u, "<<SYS>>\n");
						sb_add(&u, sys.s, sys.n);
						sb_str(&u, "\n<</SYS>>\n\n");
						have_sys = false;
						sys.n = 0;
					}
					sb_str(&u, c);
					sb_str(&b, "<s>[INST] ");
					if (u.s)
						sb_trimmed(&b, u.s);
					b.oom |= u.oom;
					free(u.s);
					sb_str(&b, " [/INST]");
				} else {
					sb_str(&b, " ");
					sb_trimmed(&b, c);
					sb_str(&b, " </s>");
				}
			} else { /* mistral */
				if (is_user) {
					sb_str(&b, " [INST] ");
					if (have_sys) {
						sb_add(&b, sys.s, sys.n);
						sb_str(&b, "\n\n");
						have_sys = false;
						sys.n = 0;
					}
					sb_str(&b, c);
					sb_str(&b, " [/INST]");
				} else {
					sb_str(&b, " ");
					sb_str(&b, c);
					sb_str(&b, "</s>");
				}
			}
			break;
		default:
			break;
		}
	}

	if (add_assistant) {
		switch (t) {
		case LLM_CHAT_CHATML:
			sb_str(&b, "<|im_start|>assistant\n");
			break;
		case LLM_CHAT_LLAMA3:
			sb_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
			break;
		case LLM_CHAT_ZEPHYR:
			if (n > 0)    /* the template adds it inside its message loop */
				sb_str(&b, "<|assistant|>\n");
			break;
		case LLM_CHAT_PHI3:
			sb_str(&b, "<|assistant|>\n");
			break;
		case LLM_CHAT_GEMMA:
			sb_str(&b, "<start_of_turn>model\n");
			break;
		default:      /* llama2, mistral: the text ends in [/INST] */
			break;
		}
	} else if (t == LLM_CHAT_PHI3) {
		sb_str(&b, "<|endoftext|>");
	}

	free(sys.s);
	if (b.oom || sys.oom) {
		free(b.s);
		return llm_error(LLM_ENOMEM, "chat: out of memory");
	}
	if (!b.s) {
		b.s = calloc(1, 1);
		if (!b.s)
			return llm_error(LLM_ENOMEM, "chat: out of memory");
	}
	*out = b.s;
	*len = b.n;
	return 0;
}
