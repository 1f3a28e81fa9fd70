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
 * text.  Where special tokens overlap, the longest one starting leftmost
 * wins.
 *
 * Keys read: tokenizer.ggml.{model, tokens, scores, token_type, merges, pre,
 * bos_token_id, eos_token_id, eot_token_id, eom_token_id, unknown_token_id,
 * add_bos_token, add_eos_token, add_space_prefix}.  An id of -1 or
 * 0xffffffff means "none".  Pre-tokenizers (tokenizer.ggml.pre; absent =
 * gpt2): gpt2 (also gpt-2, default, mpt, olmo, jais), llama3 (llama-bpe,
 * llama-v3), qwen2 (stablelm2), smollm (starcoder, refact, command-r,
 * codeshell: digits split one by one, then the GPT-2 pattern).
 *
 * Details that matter for exact agreement with other implementations:
 *  - SPM: a space is prefixed to the text and again to the text after each
 *    special token (as llama.cpp does); merges only produce normal or
 *    user-defined pieces; a character with no piece becomes its UTF-8 bytes
 *    as <0xXX> tokens, or one unknown token when the model has no byte
 *    tokens.  U+2581 in the input is indistinguishable from a space.
 *  - BPE: "llama3" takes a chunk that is itself a token whole (Llama 3's
 *    ignore_merges); bytes no pattern matches (invalid UTF-8) form chunks of
 *    their own.
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
/* Whether it wants EOS at the end (tokenizer.ggml.add_eos_token; default
 * false).  llm_tokenize never appends EOS itself. */
bool llm_tokenizer_add_eos(const struct llm_tokenizer *t);
/* The pre-tokenizer's canonical name ("gpt2", "llama3", ...); "" for SPM. */
const char *llm_tokenizer_pre(const struct llm_tokenizer *t);
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
 * The pre-tokenizer's chunks of len bytes of text, without special-token
 * handling: *offs (malloc'd, free() it) gets *n + 1 byte offsets, chunk i
 * being [offs[i], offs[i + 1]).  SPM has no pre-tokenizer: one chunk (none
 * for empty text).
 */
int llm_tokenizer_split(const struct llm_tokenizer *t, const char *text,
                        size_t len, size_t **offs, int *n);

/*
 * The bytes a token stands for when decoded: byte tokens give their byte,
 * U+2581 becomes a space (SPM), byte-level code points become their bytes
 * (BPE), control and unused tokens give "" and the unknown token U+FFFD
 * unless special is set (then control and unknown tokens give their text).
 * An id out of range gives "".
 */
const char *llm_token_bytes(const struct llm_tokenizer *t, int32_t id,
                            bool special, size_t *len);

/*
 * Decode a whole token list into a malloc'd, NUL-terminated string.  SPM:
 * the space added in front of the text is removed when tokens[0] (after a
 * BOS) starts the text.  An id out of range is LLM_EINVAL, naming the id.
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
 * always enough plus the token's length; less is a bug that asserts).
 * Returns the bytes written.  Leading BOS tokens keep at_start; any other
 * token clears it. */
size_t llm_detok_push(struct llm_detok *d, int32_t id, char *out, size_t cap);
/* Emit whatever is held (as-is, possibly invalid UTF-8). */
size_t llm_detok_flush(struct llm_detok *d, char *out, size_t cap);
/* Longest token in bytes (for sizing buffers). */
size_t llm_tokenizer_max_token_len(const struct llm_tokenizer *t);

#ifdef __cplusplus
}
#endif
#endif
