/*
 * tokenizer.h - text <-> token ids, from a model's GGUF metadata.
 *
 * Two families, as GGUF names them in "tokenizer.ggml.model":
 *
 *   "llama"  SentencePiece-style BPE: spaces become U+2581, a space is
 *            prefixed to the text (tokenizer.ggml.add_space_prefix, default
 *            true), pieces merge by score, bytes with no piece fall back to
 *            <0xXX> tokens.
 *   "gpt2"   byte-level BPE: the text is split by a pre-tokenizer regex
 *            (chosen by tokenizer.ggml.pre: GPT-2, Llama 3, Qwen2, ...), each
 *            chunk's bytes map to printable code points and merge by rank
 *            (tokenizer.ggml.merges).
 *
 * Token types follow GGUF (tokenizer.ggml.token_type): 1 normal, 2 unknown,
 * 3 control, 4 user-defined, 5 unused, 6 byte.  Control and user-defined
 * tokens are matched in the text as whole strings only when parse_special is
 * set (chat templates); otherwise "<|im_start|>" in user text is ordinary
 * text.
 */
#ifndef LLMKIT_TOKENIZER_H
#define LLMKIT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_gguf;
struct llm_tokenizer;

enum llm_tok_kind { LLM_TOK_SPM = 1, LLM_TOK_BPE = 2 };

enum llm_tok_type {
	LLM_TOKTYPE_NORMAL = 1, LLM_TOKTYPE_UNKNOWN = 2, LLM_TOKTYPE_CONTROL = 3,
	LLM_TOKTYPE_USER_DEFINED = 4, LLM_TOKTYPE_UNUSED = 5, LLM_TOKTYPE_BYTE = 6,
};

/* Build from the tokenizer.ggml.* keys of a GGUF file. */
int llm_tokenizer_from_gguf(struct llm_tokenizer **out, const struct llm_gguf *g);

/*
 * Build from GPT-2 style files: encoder.json (token -> id) and vocab.bpe
 * (merges, first line a "#version" comment).  pre names the pre-tokenizer
 * ("gpt2", "llama3", "qwen2").
 */
int llm_tokenizer_from_gpt2_files(struct llm_tokenizer **out,
                                  const char *encoder_json,
                                  const char *vocab_bpe, const char *pre);

void llm_tokenizer_free(struct llm_tokenizer *t);

enum llm_tok_kind llm_tokenizer_kind(const struct llm_tokenizer *t);
int llm_tokenizer_n_vocab(const struct llm_tokenizer *t);
/* Special ids; -1 when the model has none. */
int32_t llm_token_bos(const struct llm_tokenizer *t);
int32_t llm_token_eos(const struct llm_tokenizer *t);
/* End of generation: EOS, EOT (<|eot_id|>, <|im_end|>, <end_of_turn>,
 * <|end|> ...) and any other token the model marks as ending a turn. */
bool llm_token_is_eog(const struct llm_tokenizer *t, int32_t id);
/* Whether the tokenizer wants BOS at the start (tokenizer.ggml.add_bos_token;
 * default: true for "llama", false for "gpt2"). */
bool llm_tokenizer_add_bos(const struct llm_tokenizer *t);
enum llm_tok_type llm_token_type(const struct llm_tokenizer *t, int32_t id);
/* The vocabulary string of a token as stored (e.g. "\xe2\x96\x81the"). */
const char *llm_token_text(const struct llm_tokenizer *t, int32_t id);
/* Find a token by its vocabulary string; -1 if absent. */
int32_t llm_token_find(const struct llm_tokenizer *t, const char *text);

/*
 * Tokenize len bytes of text.  With add_bos the BOS token comes first (if
 * the model has one).  *out is allocated (free() it); *n_out is its length.
 * Text that is not valid UTF-8 is still tokenized (bytes fall back to byte
 * tokens), so every byte string round-trips.
 */
int llm_tokenize(const struct llm_tokenizer *t, const char *text, size_t len,
                 bool add_bos, bool parse_special, int32_t **out, int *n_out);

/*
 * The bytes a token stands for when decoded: byte tokens give their byte,
 * U+2581 becomes a space (SPM), byte-level code points become their bytes
 * (BPE), control tokens give "" unless special is set (then their text).
 */
const char *llm_token_bytes(const struct llm_tokenizer *t, int32_t id,
                            bool special, size_t *len);

/*
 * Decode a whole token list into a malloc'd, NUL-terminated string.  SPM:
 * the space added in front of the text is removed when tokens[0] (after a
 * BOS) starts the text.
 */
int llm_detokenize(const struct llm_tokenizer *t, const int32_t *tokens, int n,
                   bool special, char **out, size_t *len);

/*
 * Streaming decode: push tokens one at a time, get back only complete UTF-8
 * characters; bytes of a character split across tokens are held until it is
 * complete (or flushed).  at_start: the next token starts the text (strip
 * the SPM leading space).
 */
struct llm_detok {
	const struct llm_tokenizer *tok;
	bool at_start;
	bool special;
	unsigned char pending[8];
	int n_pending;
};

void llm_detok_init(struct llm_detok *d, const struct llm_tokenizer *t,
                    bool at_start, bool special);
/* Append the decodable text of token id to out (at most cap bytes; 64 is
 * always enough plus the token's length).  Returns the bytes written. */
size_t llm_detok_push(struct llm_detok *d, int32_t id, char *out, size_t cap);
/* Emit whatever is held (as-is, possibly invalid UTF-8). */
size_t llm_detok_flush(struct llm_detok *d, char *out, size_t cap);
/* Longest token in bytes (for sizing buffers). */
size_t llm_tokenizer_max_token_len(const struct llm_tokenizer *t);

#ifdef __cplusplus
}
#endif
#endif
