/*
 * tokenizer.c - SentencePiece-style BPE and byte-level BPE (see tokenizer.h).
 *
 * Both families share one object: the vocabulary (text, score, type of each
 * token), a hash map from text to id, the bytes each token decodes to, and
 * the list of special tokens.  What differs is how a run of plain text
 * becomes ids:
 *
 *   SPM  the text (with a space prefixed and spaces as U+2581) is split
 *        into UTF-8 characters; adjacent symbols whose concatenation is a
 *        piece are merged, highest piece score first (ties: leftmost),
 *        until no pair is a piece; symbols that are no piece fall back to
 *        <0xXX> byte tokens.  This is the merge of llama.cpp's SPM tokenizer,
 *        of SentencePiece's BPE model and of llama2.c's encode().
 *   BPE  a pre-tokenizer regex cuts the text into chunks; each chunk's bytes
 *        start as the single-byte tokens of GPT-2's byte-to-unicode map and
 *        merge by rank (the line number in tokenizer.ggml.merges / vocab.bpe),
 *        lowest rank first (ties: leftmost), as in GPT-2's encoder.py and
 *        Hugging Face tokenizers.
 *
 * Both merges use a priority queue of candidate pairs over a linked list of
 * symbols, so a chunk of n symbols costs O(n log n).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

/* ---------------------------------------------------------------- tables */

/* Pre-tokenizer regexes, as in the models' tokenizer.json.  A family may
 * split twice: the chunks of the first regex are split by the second. */
#define PAT_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define PAT_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define PAT_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

struct pre_def {
	const char *names[6];     /* tokenizer.ggml.pre values */
	const char *pat[2];
	bool ignore_merges;       /* a chunk that is a token is taken whole */
};

static const struct pre_def pre_defs[] = {
	{ { "gpt2", "gpt-2", "default", "mpt", "olmo", "jais" }, { PAT_GPT2, NULL }, false },
	{ { "llama3", "llama-bpe", "llama-v3" }, { PAT_LLAMA3, NULL }, true },
	{ { "qwen2", "stablelm2" }, { PAT_QWEN2, NULL }, false },
	/* Hugging Face: Digits(individual_digits) then ByteLevel(use_regex) */
	{ { "smollm", "starcoder", "refact", "command-r", "codeshell" },
	  { "\\p{N}", PAT_GPT2 }, false },
};

/* Control tokens that end a turn whatever the model's metadata says. */
static const char *const eog_texts[] = {
	"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>",
	"<|endoftext|>", "<|end_of_text|>",
};

/* ---------------------------------------------------------------- object */

struct llm_tokenizer {
	enum llm_tok_kind kind;
	int n_vocab;
	const char **text;        /* (n_vocab) NUL-terminated, in arena */
	uint32_t *text_len;
	float *score;
	uint8_t *type;
	const char **dec;         /* (n_vocab) bytes when decoded */
	uint32_t *dec_len;
	bool *eog;
	bool *mergeable;          /* SPM: may a merge produce this piece */
	char *arena;
	char *dec_arena;

	/* text -> id, open addressing, -1 = empty */
	int32_t *map;
	uint32_t map_mask;

	/* BPE merges: (left, right) -> (rank, result) */
	struct pair_ent *pairs;
	uint32_t pairs_mask;
	int32_t byte_tok[256];    /* SPM: <0xXX>; BPE: the byte's code point */

	/* special tokens bucketed by first byte, longest first */
	int32_t *spec;
	uint32_t spec_start[257];

	const struct pre_def *pre;
	pcre2_code *re[2];

	int32_t bos, eos, eot, eom, unk;
	bool add_bos, add_eos, add_space_prefix;
	size_t max_len;
};

struct pair_ent {
	uint64_t key;             /* UINT64_MAX = empty */
	int32_t rank;
	int32_t id;
};

/* ---------------------------------------------------------------- utf-8 */

/* Length of the valid UTF-8 character at p (at most rem bytes), 0 if the
 * bytes there are not one. */
static int utf8_valid_len(const unsigned char *p, size_t rem)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return rem >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		return rem >= 3 && p[1] >= lo && p[1] <= hi &&
		       (p[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		return rem >= 4 && p[1] >= lo && p[1] <= hi &&
		       (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
	}
	return 0;
}

/* Decode the character at p (valid or not): code point, or -1 and length
 * 1 for a byte that starts no valid character. */
static int32_t utf8_next(const unsigned char *p, size_t rem, int *len)
{
	int n = utf8_valid_len(p, rem);
	if (n == 0) {
		*len = 1;
		return -1;
	}
	*len = n;
	switch (n) {
	case 1: return p[0];
	case 2: return (p[0] & 0x1f) << 6 | (p[1] & 0x3f);
	case 3: return (p[0] & 0x0f) << 12 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f);
	default: return (p[0] & 0x07) << 18 | (p[1] & 0x3f) << 12 |
	                (p[2] & 0x3f) << 6 | (p[3] & 0x3f);
	}
}

static int utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * GPT-2's byte <-> unicode map: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes (0x00-0x20, 0x7f-0xa0, 0xad) take the
 * code points 256, 257, ... in byte order, so every byte string becomes
 * printable text without spaces.
 */
static uint32_t byte_to_cp(unsigned b)
{
	if (b <= 0x20)
		return 256 + b;
	if (b >= 0x7f && b <= 0xa0)
		return 256 + 33 + (b - 0x7f);
	if (b == 0xad)
		return 256 + 67;
	return b;
}

static int cp_to_byte(uint32_t cp)
{
	if (cp < 256)
		return byte_to_cp(cp) == cp ? (int)cp : -1;
	if (cp <= 256 + 32)
		return (int)(cp - 256);
	if (cp <= 256 + 66)
		return (int)(cp - 256 - 33 + 0x7f);
	return cp == 256 + 67 ? 0xad : -1;
}

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ull;
	}
	return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static int32_t vocab_find(const struct llm_tokenizer *t, const char *s, size_t n)
{
	uint32_t i = (uint32_t)hash_bytes(s, n) & t->map_mask;
	for (;; i = (i + 1) & t->map_mask) {
		int32_t id = t->map[i];
		if (id < 0)
			return -1;
		if (t->text_len[id] == n && !memcmp(t->text[id], s, n))
			return id;
	}
}

static int build_vocab_map(struct llm_tokenizer *t)
{
	uint32_t cap = 16;
	while (cap < (uint32_t)t->n_vocab * 2u)
		cap <<= 1;
	t->map = malloc(cap * sizeof(*t->map));
	if (!t->map)
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	memset(t->map, 0xff, cap * sizeof(*t->map));
	t->map_mask = cap - 1;
	for (int32_t id = 0; id < t->n_vocab; id++) {
		if (vocab_find(t, t->text[id], t->text_len[id]) >= 0)
			continue;   /* a duplicate text keeps its first id */
		uint32_t i = (uint32_t)hash_bytes(t->text[id], t->text_len[id]) & t->map_mask;
		while (t->map[i] >= 0)
			i = (i + 1) & t->map_mask;
		t->map[i] = id;
	}
	return 0;
}

static uint64_t pair_key(int32_t a, int32_t b)
{
	return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static const struct pair_ent *pair_find(const struct llm_tokenizer *t,
                                        int32_t a, int32_t b)
{
	uint64_t key = pair_key(a, b);
	uint32_t i = (uint32_t)hash_u64(key) & t->pairs_mask;
	for (;; i = (i + 1) & t->pairs_mask) {
		const struct pair_ent *e = &t->pairs[i];
		if (e->key == UINT64_MAX)
			return NULL;
		if (e->key == key)
			return e;
	}
}

/* ---------------------------------------------------------------- building */

static struct llm_tokenizer *tok_alloc(enum llm_tok_kind kind, int n, size_t text_bytes)
{
	struct llm_tokenizer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->kind = kind;
	t->n_vocab = n;
	t->bos = t->eos = t->eot = t->eom = t->unk = -1;
	t->text = calloc(n, sizeof(*t->text));
	t->text_len = calloc(n, sizeof(*t->text_len));
	t->score = calloc(n, sizeof(*t->score));
	t->type = calloc(n, sizeof(*t->type));
	t->dec = calloc(n, sizeof(*t->dec));
	t->dec_len = calloc(n, sizeof(*t->dec_len));
	t->eog = calloc(n, sizeof(*t->eog));
	t->mergeable = calloc(n, sizeof(*t->mergeable));
	t->arena = malloc(text_bytes + (size_t)n);
	t->dec_arena = malloc(text_bytes + 4 * (size_t)n);
	if (!t->text || !t->text_len || !t->score || !t->type || !t->dec ||
	    !t->dec_len || !t->eog || !t->mergeable || !t->arena || !t->dec_arena) {
		llm_tokenizer_free(t);
		return NULL;
	}
	return t;
}

void llm_tokenizer_free(struct llm_tokenizer *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->text_len);
	free(t->score);
	free(t->type);
	free(t->dec);
	free(t->dec_len);
	free(t->eog);
	free(t->mergeable);
	free(t->arena);
	free(t->dec_arena);
	free(t->map);
	free(t->pairs);
	free(t->spec);
	for (int i = 0; i < 2; i++)
		if (t->re[i])
			pcre2_code_free(t->re[i]);
	free(t);
}

static int hex_digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 :
	       c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parse "<0xXX>"; -1 if the text is not a byte token's. */
static int parse_byte_token(const char *s, size_t n)
{
	int hi, lo;
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	hi = hex_digit(s[3]);
	lo = hex_digit(s[4]);
	return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

/* The bytes each token decodes to (without special). */
static void build_decoded(struct llm_tokenizer *t)
{
	char *d = t->dec_arena;
	for (int32_t id = 0; id < t->n_vocab; id++) {
		const char *s = t->text[id];
		size_t n = t->text_len[id];
		char *start = d;
		int b;

		switch (t->type[id]) {
		case LLM_TOKTYPE_CONTROL:
		case LLM_TOKTYPE_UNUSED:
			break;
		case LLM_TOKTYPE_UNKNOWN:
			memcpy(d, "\xef\xbf\xbd", 3);   /* U+FFFD */
			d += 3;
			break;
		case LLM_TOKTYPE_BYTE:
			if ((b = parse_byte_token(s, n)) >= 0) {
				*d++ = (char)b;
				break;
			}
			/* fall through */
		default:
			if (t->kind == LLM_TOK_SPM) {
				for (size_t i = 0; i < n; i++) {
					if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
						*d++ = ' ';
						i += 2;
					} else {
						*d++ = s[i];
					}
				}
			} else if (t->type[id] == LLM_TOKTYPE_USER_DEFINED) {
				memcpy(d, s, n);
				d += n;
			} else {
				for (size_t i = 0; i < n;) {
					int len;
					int32_t cp = utf8_next((const unsigned char *)s + i, n - i, &len);
					int byte = cp >= 0 ? cp_to_byte((uint32_t)cp) : -1;
					if (byte >= 0) {
						*d++ = (char)byte;
					} else {
						memcpy(d, s + i, len);
						d += len;
					}
					i += len;
				}
			}
		}
		t->dec[id] = start;
		t->dec_len[id] = (uint32_t)(d - start);
		if (t->dec_len[id] > t->max_len)
			t->max_len = t->dec_len[id];
		if (t->text_len[id] > t->max_len)
			t->max_len = t->text_len[id];
	}
}

struct spec_key {
	unsigned char first;
	uint32_t len;
	int32_t id;
};

static int cmp_spec(const void *a, const void *b)
{
	const struct spec_key *x = a, *y = b;
	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static bool is_special(const struct llm_tokenizer *t, int32_t id)
{
	return (t->type[id] == LLM_TOKTYPE_CONTROL ||
	        t->type[id] == LLM_TOKTYPE_USER_DEFINED) && t->text_len[id] > 0;
}

/* Special tokens sorted by first byte, then longest first, so that the
 * candidates at a position are one bucket tried in order. */
static int build_specials(struct llm_tokenizer *t)
{
	uint32_t n = 0;
	struct spec_key *keys;

	for (int32_t id = 0; id < t->n_vocab; id++)
		n += is_special(t, id);
	keys = malloc((n + 1) * sizeof(*keys));
	t->spec = malloc((n + 1) * sizeof(*t->spec));
	if (!keys || !t->spec) {
		free(keys);
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	}
	n = 0;
	for (int32_t id = 0; id < t->n_vocab; id++)
		if (is_special(t, id))
			keys[n++] = (struct spec_key){ (unsigned char)t->text[id][0],
			                               t->text_len[id], id };
	qsort(keys, n, sizeof(*keys), cmp_spec);
	memset(t->spec_start, 0, sizeof(t->spec_start));
	for (uint32_t i = 0; i < n; i++) {
		t->spec[i] = keys[i].id;
		t->spec_start[keys[i].first + 1]++;
	}
	for (int c = 0; c < 256; c++)
		t->spec_start[c + 1] += t->spec_start[c];
	free(keys);
	return 0;
}

static int compile_pre(struct llm_tokenizer *t)
{
	for (int i = 0; i < 2 && t->pre->pat[i]; i++) {
		int err;
		PCRE2_SIZE off;
		t->re[i] = pcre2_compile((PCRE2_SPTR)t->pre->pat[i], PCRE2_ZERO_TERMINATED,
		                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
		                         &err, &off, NULL);
		if (!t->re[i]) {
			PCRE2_UCHAR buf[256];
			pcre2_get_error_message(err, buf, sizeof(buf));
			return llm_error(LLM_EUNSUPPORTED, "tokenizer: pre-tokenizer "
			                 "regex: %s at offset %zu", (char *)buf, (size_t)off);
		}
		/* JIT is an optimization only: without it the interpreter runs. */
		(void)pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE);
	}
	return 0;
}

static const struct pre_def *find_pre(const char *name)
{
	for (size_t i = 0; i < sizeof(pre_defs) / sizeof(pre_defs[0]); i++)
		for (int k = 0; k < 6 && pre_defs[i].names[k]; k++)
			if (!strcmp(pre_defs[i].names[k], name))
				return &pre_defs[i];
	return NULL;
}

/* Everything derived from the vocabulary, once texts, types and special
 * ids are in place. */
static int tok_finish(struct llm_tokenizer *t)
{
	int rc = build_vocab_map(t);
	if (rc)
		return rc;
	build_decoded(t);
	if ((rc = build_specials(t)))
		return rc;

	for (int b = 0; b < 256; b++)
		t->byte_tok[b] = -1;
	for (int32_t id = 0; id < t->n_vocab; id++) {
		unsigned ty = t->type[id];
		t->mergeable[id] = ty == LLM_TOKTYPE_NORMAL ||
		                   ty == LLM_TOKTYPE_USER_DEFINED || ty == 0;
		if (t->kind == LLM_TOK_SPM && ty == LLM_TOKTYPE_BYTE) {
			int b = parse_byte_token(t->text[id], t->text_len[id]);
			if (b >= 0 && t->byte_tok[b] < 0)
				t->byte_tok[b] = id;
		}
	}
	if (t->kind == LLM_TOK_BPE) {
		for (int b = 0; b < 256; b++) {
			char buf[4];
			int n = utf8_put(buf, byte_to_cp((unsigned)b));
			t->byte_tok[b] = vocab_find(t, buf, (size_t)n);
		}
		if ((rc = compile_pre(t)))
			return rc;
	}

	for (int32_t id = 0; id < t->n_vocab; id++) {
		if (id == t->eos || id == t->eot || id == t->eom) {
			t->eog[id] = true;
			continue;
		}
		if (t->type[id] != LLM_TOKTYPE_CONTROL)
			continue;
		for (size_t k = 0; k < sizeof(eog_texts) / sizeof(eog_texts[0]); k++)
			if (!strcmp(t->text[id], eog_texts[k]))
				t->eog[id] = true;
	}
	return 0;
}

/* Add the merges "a b" (ranks in order) for a BPE tokenizer. */
/* Errors name the merge as "<where><line0 + r><after>". */
static int add_merges(struct llm_tokenizer *t, const char *const *lines,
                      const size_t *lens, size_t n, const char *where,
                      size_t line0, const char *after)
{
	uint32_t cap = 16;
	while (cap < n * 2 + 2)
		cap <<= 1;
	t->pairs = malloc(cap * sizeof(*t->pairs));
	if (!t->pairs)
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	for (uint32_t i = 0; i < cap; i++)
		t->pairs[i].key = UINT64_MAX;
	t->pairs_mask = cap - 1;

	for (size_t r = 0; r < n; r++) {
		const char *s = lines[r];
		size_t len = lens[r];
		const char *sp = memchr(s, ' ', len);
		int32_t a, b, m;
		char *joined;

		if (!sp || sp == s || sp == s + len - 1 || memchr(sp + 1, ' ', len - (size_t)(sp - s) - 1))
			return llm_error(LLM_EFORMAT, "%s%zu%s: expected two tokens "
			                 "separated by one space, found '%.*s'", where,
			                 line0 + r, after, (int)(len > 60 ? 60 : len), s);
		a = vocab_find(t, s, (size_t)(sp - s));
		b = vocab_find(t, sp + 1, len - (size_t)(sp - s) - 1);
		joined = malloc(len);
		if (!joined)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		memcpy(joined, s, (size_t)(sp - s));
		memcpy(joined + (sp - s), sp + 1, len - (size_t)(sp - s) - 1);
		m = vocab_find(t, joined, len - 1);
		free(joined);
		if (a < 0 || b < 0 || m < 0)
			return llm_error(LLM_EFORMAT, "%s%zu%s: merge '%.*s': %s not in the "
			                 "vocabulary", where, line0 + r, after,
			                 (int)(len > 60 ? 60 : len), s,
			                 a < 0 ? "first token" : b < 0 ? "second token" :
			                 "merged token");
		uint64_t key = pair_key(a, b);
		uint32_t i = (uint32_t)hash_u64(key) & t->pairs_mask;
		while (t->pairs[i].key != UINT64_MAX && t->pairs[i].key != key)
			i = (i + 1) & t->pairs_mask;
		if (t->pairs[i].key == key)
			continue;   /* a repeated merge keeps its first rank */
		t->pairs[i].key = key;
		t->pairs[i].rank = (int32_t)r;
		t->pairs[i].id = m;
	}
	return 0;
}

/* ---------------------------------------------------------------- from GGUF */

static uint32_t rd32(const void *p)
{
	const unsigned char *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

/* An array key of n elements of string type, or -1 with a message. */
static int64_t gguf_array(const struct llm_gguf *g, const char *key,
                          enum llm_gguf_type want, uint64_t n, bool required)
{
	int64_t i = llm_gguf_find_key(g, key);
	if (i < 0) {
		if (required)
			llm_error(LLM_EFORMAT, "gguf: %s: key %s missing",
			          llm_gguf_path(g), key);
		return -1;
	}
	if (llm_gguf_kv_type(g, i) != LLM_GGUF_ARRAY ||
	    (want != LLM_GGUF_TYPE_COUNT && llm_gguf_arr_type(g, i) != want)) {
		llm_error(LLM_EFORMAT, "gguf: %s: key %s: expected an array of %s",
		          llm_gguf_path(g), key, llm_gguf_type_name(want));
		return -2;
	}
	if (n && llm_gguf_arr_n(g, i) != n) {
		llm_error(LLM_EFORMAT, "gguf: %s: key %s: %llu elements for %llu tokens",
		          llm_gguf_path(g), key, (unsigned long long)llm_gguf_arr_n(g, i),
		          (unsigned long long)n);
		return -2;
	}
	return i;
}

static int gguf_token_id(const struct llm_gguf *g, const char *key, int n,
                         int32_t *out)
{
	int64_t v;
	int rc = llm_gguf_get_i64(g, key, &v);
	if (rc == LLM_ENOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (v < 0 || v == UINT32_MAX) {    /* "none" as written by converters */
		*out = -1;
		return 0;
	}
	if (v >= n)
		return llm_error(LLM_EFORMAT, "gguf: %s: key %s: token id %lld out of "
		                 "range (vocabulary of %d)", llm_gguf_path(g), key,
		                 (long long)v, n);
	*out = (int32_t)v;
	return 0;
}

static int gguf_flag(const struct llm_gguf *g, const char *key, bool *out)
{
	int rc = llm_gguf_get_bool(g, key, out);
	return rc == LLM_ENOTFOUND ? 0 : rc;
}

int llm_tokenizer_from_gguf(struct llm_tokenizer **out, const struct llm_gguf *g)
{
	const char *path = llm_gguf_path(g);
	const char *model, *pre = NULL;
	enum llm_tok_kind kind;
	struct llm_tokenizer *t = NULL;
	int64_t ki, si, ti, mi;
	uint64_t n;
	size_t bytes = 0;
	int rc;

	*out = NULL;
	rc = llm_gguf_get_str(g, "tokenizer.ggml.model", &model);
	if (rc == LLM_ENOTFOUND)
		return llm_error(LLM_ENOTFOUND, "gguf: %s: no tokenizer "
		                 "(key tokenizer.ggml.model missing)", path);
	if (rc)
		return rc;
	if (!strcmp(model, "llama"))
		kind = LLM_TOK_SPM;
	else if (!strcmp(model, "gpt2"))
		kind = LLM_TOK_BPE;
	else
		return llm_error(LLM_EUNSUPPORTED, "gguf: %s: tokenizer.ggml.model "
		                 "'%s' not supported (llama and gpt2 are)", path, model);

	if ((ki = gguf_array(g, "tokenizer.ggml.tokens", LLM_GGUF_STRING, 0, true)) < 0)
		return LLM_EFORMAT;
	n = llm_gguf_arr_n(g, ki);
	if (n == 0 || n > INT32_MAX / 4)
		return llm_error(LLM_EFORMAT, "gguf: %s: tokenizer.ggml.tokens: %llu "
		                 "tokens", path, (unsigned long long)n);
	if ((si = gguf_array(g, "tokenizer.ggml.scores", LLM_GGUF_F32, n, false)) < -1 ||
	    (ti = gguf_array(g, "tokenizer.ggml.token_type", LLM_GGUF_TYPE_COUNT, n, false)) < -1)
		return LLM_EFORMAT;
	if (ti >= 0 && llm_gguf_arr_type(g, ti) != LLM_GGUF_I32 &&
	    llm_gguf_arr_type(g, ti) != LLM_GGUF_U32)
		return llm_error(LLM_EFORMAT, "gguf: %s: key tokenizer.ggml.token_type: "
		                 "expected an array of i32", path);
	mi = -1;
	if (kind == LLM_TOK_BPE &&
	    (mi = gguf_array(g, "tokenizer.ggml.merges", LLM_GGUF_STRING, 0, true)) < 0)
		return LLM_EFORMAT;
	rc = llm_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
	if (rc && rc != LLM_ENOTFOUND)
		return rc;

	for (uint64_t i = 0; i < n; i++) {
		size_t len;
		llm_gguf_arr_str(g, ki, i, &len);
		bytes += len;
	}
	t = tok_alloc(kind, (int)n, bytes);
	if (!t)
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");

	char *a = t->arena;
	const unsigned char *scores = si >= 0 ? llm_gguf_arr_data(g, si) : NULL;
	const unsigned char *types = ti >= 0 ? llm_gguf_arr_data(g, ti) : NULL;
	for (uint64_t i = 0; i < n; i++) {
		size_t len;
		const char *s = llm_gguf_arr_str(g, ki, i, &len);
		memcpy(a, s, len);
		a[len] = 0;
		t->text[i] = a;
		t->text_len[i] = (uint32_t)len;
		a += len + 1;
		if (scores) {
			uint32_t u = rd32(scores + 4 * i);
			memcpy(&t->score[i], &u, 4);
		}
		t->type[i] = LLM_TOKTYPE_NORMAL;
		if (types) {
			int32_t ty = (int32_t)rd32(types + 4 * i);
			if (ty < 0 || ty > LLM_TOKTYPE_BYTE) {
				rc = llm_error(LLM_EFORMAT, "gguf: %s: tokenizer.ggml.token_type[%llu]: "
				          "%d is not a token type", path, (unsigned long long)i, ty);
				goto fail;
			}
			t->type[i] = (uint8_t)(ty ? ty : LLM_TOKTYPE_NORMAL);
		}
	}

	t->add_bos = kind == LLM_TOK_SPM;
	t->add_space_prefix = kind == LLM_TOK_SPM;
	if ((rc = gguf_token_id(g, "tokenizer.ggml.bos_token_id", (int)n, &t->bos)) ||
	    (rc = gguf_token_id(g, "tokenizer.ggml.eos_token_id", (int)n, &t->eos)) ||
	    (rc = gguf_token_id(g, "tokenizer.ggml.eot_token_id", (int)n, &t->eot)) ||
	    (rc = gguf_token_id(g, "tokenizer.ggml.eom_token_id", (int)n, &t->eom)) ||
	    (rc = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", (int)n, &t->unk)) ||
	    (rc = gguf_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) ||
	    (rc = gguf_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos)) ||
	    (rc = gguf_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix)))
		goto fail;
	if (kind == LLM_TOK_BPE) {
		t->add_space_prefix = false;
		t->pre = find_pre(pre ? pre : "gpt2");
		if (!t->pre) {
			rc = llm_error(LLM_EUNSUPPORTED, "gguf: %s: tokenizer.ggml.pre '%s' not "
			          "supported (gpt2, llama3, qwen2, smollm and their aliases are)",
			          path, pre);
			goto fail;
		}
	}
	if ((rc = tok_finish(t)))
		goto fail;
	if (kind == LLM_TOK_BPE) {
		uint64_t nm = llm_gguf_arr_n(g, mi);
		const char **lines = malloc((nm + 1) * sizeof(*lines));
		size_t *lens = malloc((nm + 1) * sizeof(*lens));
		char what[256];
		if (!lines || !lens) {
			free(lines);
			free(lens);
			rc = llm_error(LLM_ENOMEM, "tokenizer: out of memory");
			goto fail;
		}
		for (uint64_t i = 0; i < nm; i++)
			lines[i] = llm_gguf_arr_str(g, mi, i, &lens[i]);
		snprintf(what, sizeof(what), "gguf: %s: tokenizer.ggml.merges[", path);
		rc = add_merges(t, lines, lens, nm, what, 0, "]");
		free(lines);
		free(lens);
		if (rc)
			goto fail;
	}
	*out = t;
	return 0;
fail:
	llm_tokenizer_free(t);
	return rc;
}

/* ---------------------------------------------------------------- GPT-2 files */

int llm_tokenizer_from_gpt2_files(struct llm_tokenizer **out,
                                  const char *encoder_json,
                                  const char *vocab_bpe, const char *pre)
{
	json_error_t jerr;
	json_t *root = NULL, *val;
	const char *key;
	struct llm_tokenizer *t = NULL;
	const char **keys = NULL;
	char *bpe = NULL;
	const char **lines = NULL;
	size_t *lens = NULL;
	size_t n, bytes = 0, bpe_size, n_lines = 0, line0 = 1;
	int rc = LLM_EFORMAT;

	*out = NULL;
	const struct pre_def *pd = find_pre(pre ? pre : "gpt2");
	if (!pd)
		return llm_error(LLM_EINVAL, "tokenizer: pre-tokenizer '%s' not "
		                 "supported (gpt2, llama3, qwen2, smollm are)", pre);

	root = json_load_file(encoder_json, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && json_error_code(&jerr) == json_error_cannot_open_file)
		return llm_error(LLM_EIO, "%s", jerr.text);
	if (!root)
		return llm_error(LLM_EFORMAT, "%s:%d: %s", encoder_json, jerr.line, jerr.text);
	if (!json_is_object(root) || json_object_size(root) == 0) {
		llm_error(LLM_EFORMAT, "%s: expected an object of token ids", encoder_json);
		goto cleanup;
	}
	n = json_object_size(root);
	if (n > INT32_MAX / 4) {
		llm_error(LLM_EFORMAT, "%s: too many tokens", encoder_json);
		goto cleanup;
	}
	keys = calloc(n, sizeof(*keys));
	if (!keys) {
		rc = llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		goto cleanup;
	}
	json_object_foreach(root, key, val) {
		json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
		if (id < 0 || (size_t)id >= n) {
			llm_error(LLM_EFORMAT, "%s: token '%.40s': id must be an integer "
			          "in 0..%zu", encoder_json, key, n - 1);
			goto cleanup;
		}
		if (keys[id]) {
			llm_error(LLM_EFORMAT, "%s: id %lld given to both '%.40s' and "
			          "'%.40s'", encoder_json, (long long)id, keys[id], key);
			goto cleanup;
		}
		keys[id] = key;
		bytes += strlen(key);
	}
	t = tok_alloc(LLM_TOK_BPE, (int)n, bytes);
	if (!t) {
		rc = llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		goto cleanup;
	}
	char *a = t->arena;
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(keys[i]);
		memcpy(a, keys[i], len + 1);
		t->text[i] = a;
		t->text_len[i] = (uint32_t)len;
		t->type[i] = LLM_TOKTYPE_NORMAL;
		if (!strcmp(keys[i], "<|endoftext|>")) {
			t->type[i] = LLM_TOKTYPE_CONTROL;
			t->bos = t->eos = (int32_t)i;
		}
		a += len + 1;
	}
	t->pre = pd;
	if ((rc = tok_finish(t)))
		goto cleanup;

	if ((rc = llm_read_file(vocab_bpe, &bpe, &bpe_size)))
		goto cleanup;
	lines = malloc((bpe_size / 2 + 2) * sizeof(*lines));
	lens = malloc((bpe_size / 2 + 2) * sizeof(*lens));
	if (!lines || !lens) {
		rc = llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		goto cleanup;
	}
	/* One merge a line, after an optional "#version" line; the file may
	 * end in newlines, but a blank line among the merges is an error. */
	while (bpe_size && (bpe[bpe_size - 1] == '\n' || bpe[bpe_size - 1] == '\r'))
		bpe_size--;
	for (size_t p = 0, ln = 1; p < bpe_size; ln++) {
		char *nl = memchr(bpe + p, '\n', bpe_size - p);
		size_t end = nl ? (size_t)(nl - bpe) : bpe_size;
		size_t len = end - p;
		if (len && bpe[p + len - 1] == '\r')
			len--;
		if (ln == 1 && len >= 8 && !memcmp(bpe + p, "#version", 8)) {
			line0 = 2;
		} else {
			lines[n_lines] = bpe + p;
			lens[n_lines++] = len;
		}
		p = end + 1;
	}
	{
		char where[1024];
		snprintf(where, sizeof(where), "%s:", vocab_bpe);
		if ((rc = add_merges(t, lines, lens, n_lines, where, line0, "")))
			goto cleanup;
	}
	*out = t;
	t = NULL;
	rc = 0;
cleanup:
	llm_tokenizer_free(t);
	json_decref(root);
	free(keys);
	free(bpe);
	free(lines);
	free(lens);
	return rc;
}

/* ---------------------------------------------------------------- accessors */

enum llm_tok_kind llm_tokenizer_kind(const struct llm_tokenizer *t) { return t->kind; }
int llm_tokenizer_n_vocab(const struct llm_tokenizer *t) { return t->n_vocab; }
int32_t llm_token_bos(const struct llm_tokenizer *t) { return t->bos; }
int32_t llm_token_eos(const struct llm_tokenizer *t) { return t->eos; }
bool llm_tokenizer_add_bos(const struct llm_tokenizer *t) { return t->add_bos; }
bool llm_tokenizer_add_eos(const struct llm_tokenizer *t) { return t->add_eos; }
size_t llm_tokenizer_max_token_len(const struct llm_tokenizer *t) { return t->max_len; }

const char *llm_tokenizer_pre(const struct llm_tokenizer *t)
{
	return t->kind == LLM_TOK_BPE ? t->pre->names[0] : "";
}

bool llm_token_is_eog(const struct llm_tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab && t->eog[id];
}

enum llm_tok_type llm_token_type(const struct llm_tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab)
		return LLM_TOKTYPE_UNUSED;
	return (enum llm_tok_type)t->type[id];
}

const char *llm_token_text(const struct llm_tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab ? t->text[id] : NULL;
}

int32_t llm_token_find(const struct llm_tokenizer *t, const char *text)
{
	return vocab_find(t, text, strlen(text));
}

const char *llm_token_bytes(const struct llm_tokenizer *t, int32_t id,
                            bool special, size_t *len)
{
	if (id < 0 || id >= t->n_vocab) {
		*len = 0;
		return "";
	}
	if (special && (t->type[id] == LLM_TOKTYPE_CONTROL ||
	                t->type[id] == LLM_TOKTYPE_UNKNOWN)) {
		*len = t->text_len[id];
		return t->text[id];
	}
	*len = t->dec_len[id];
	return t->dec[id];
}

/* ---------------------------------------------------------------- encoding */

struct ivec {
	int32_t *v;
	size_t n, cap;
};

static int ivec_push(struct ivec *v, int32_t x)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		int32_t *p = realloc(v->v, cap * sizeof(*p));
		if (!p)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		v->v = p;
		v->cap = cap;
	}
	v->v[v->n++] = x;
	return 0;
}

/* A candidate merge: smaller key first, then leftmost. */
struct bigram {
	float key;
	int32_t left, right;
	int32_t a, b;      /* SPM: merged length; BPE: left and right ids */
};

struct heap {
	struct bigram *v;
	size_t n, cap;
};

static bool bigram_before(const struct bigram *x, const struct bigram *y)
{
	return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static int heap_push(struct heap *h, struct bigram e)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 256;
		struct bigram *p = realloc(h->v, cap * sizeof(*p));
		if (!p)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		h->v = p;
		h->cap = cap;
	}
	size_t i = h->n++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!bigram_before(&e, &h->v[up]))
			break;
		h->v[i] = h->v[up];
		i = up;
	}
	h->v[i] = e;
	return 0;
}

static struct bigram heap_pop(struct heap *h)
{
	struct bigram top = h->v[0], last = h->v[--h->n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && bigram_before(&h->v[c + 1], &h->v[c]))
			c++;
		if (!bigram_before(&h->v[c], &last))
			break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n)
		h->v[i] = last;
	return top;
}

struct sym {
	int32_t start, len;    /* SPM: bytes of the symbol */
	int32_t id;            /* BPE: current token, -1 once merged away */
	int32_t prev, next;
};

/* Scratch space for one llm_tokenize call. */
struct work {
	struct sym *sym;
	size_t sym_cap;
	struct heap heap;
	char *buf;
	size_t buf_cap;
	pcre2_match_data *md;
	size_t *offs;
	size_t n_offs, offs_cap;
};

static void work_free(struct work *w)
{
	free(w->sym);
	free(w->heap.v);
	free(w->buf);
	free(w->offs);
	if (w->md)
		pcre2_match_data_free(w->md);
}

static int work_reserve(struct work *w, size_t n_sym, size_t n_buf)
{
	if (n_sym > w->sym_cap) {
		struct sym *p = realloc(w->sym, n_sym * sizeof(*p));
		if (!p)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		w->sym = p;
		w->sym_cap = n_sym;
	}
	if (n_buf > w->buf_cap) {
		char *p = realloc(w->buf, n_buf);
		if (!p)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		w->buf = p;
		w->buf_cap = n_buf;
	}
	return 0;
}

/* ---- SentencePiece-style BPE */

static int spm_try_pair(const struct llm_tokenizer *t, struct work *w,
                        const char *s, int32_t l, int32_t r)
{
	if (l < 0 || r < 0)
		return 0;
	int32_t n = w->sym[l].len + w->sym[r].len;
	int32_t id = vocab_find(t, s + w->sym[l].start, (size_t)n);
	if (id < 0 || !t->mergeable[id])
		return 0;
	return heap_push(&w->heap, (struct bigram){ -t->score[id], l, r, n, 0 });
}

static int spm_encode(const struct llm_tokenizer *t, struct work *w,
                      const char *text, size_t len, bool prefix, struct ivec *out)
{
	static const char sp[] = "\xe2\x96\x81";
	size_t cap = 3 * len + 3, n = 0;
	int32_t n_sym = 0;
	int rc;

	if (len > INT32_MAX / 4)
		return llm_error(LLM_ERANGE, "tokenizer: text of %zu bytes too long", len);
	if ((rc = work_reserve(w, len + 1, cap)))
		return rc;
	char *s = w->buf;
	if (prefix) {
		memcpy(s, sp, 3);
		n = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(s + n, sp, 3);
			n += 3;
		} else {
			s[n++] = text[i];
		}
	}

	/* one symbol per character (an invalid byte is a character) */
	for (size_t i = 0; i < n;) {
		int l = utf8_valid_len((const unsigned char *)s + i, n - i);
		if (l == 0)
			l = 1;
		w->sym[n_sym] = (struct sym){ (int32_t)i, l, -1, n_sym - 1, n_sym + 1 };
		n_sym++;
		i += (size_t)l;
	}
	if (n_sym == 0)
		return 0;
	w->sym[n_sym - 1].next = -1;

	w->heap.n = 0;
	for (int32_t i = 0; i + 1 < n_sym; i++)
		if ((rc = spm_try_pair(t, w, s, i, i + 1)))
			return rc;
	while (w->heap.n) {
		struct bigram b = heap_pop(&w->heap);
		struct sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		/* stale: one side was merged since this pair was queued */
		if (l->len == 0 || r->len == 0 || l->len + r->len != b.a)
			continue;
		l->len += r->len;
		r->len = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		if ((rc = spm_try_pair(t, w, s, l->prev, b.left)) ||
		    (rc = spm_try_pair(t, w, s, b.left, l->next)))
			return rc;
	}

	for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
		const struct sym *y = &w->sym[i];
		int32_t id = vocab_find(t, s + y->start, (size_t)y->len);
		if (id >= 0 && t->mergeable[id]) {
			if ((rc = ivec_push(out, id)))
				return rc;
			continue;
		}
		/* no piece: byte fallback, else one unknown token */
		bool bytes = true;
		for (int32_t k = 0; k < y->len; k++)
			if (t->byte_tok[(unsigned char)s[y->start + k]] < 0)
				bytes = false;
		if (bytes) {
			for (int32_t k = 0; k < y->len; k++)
				if ((rc = ivec_push(out, t->byte_tok[(unsigned char)s[y->start + k]])))
					return rc;
		} else if (t->unk >= 0) {
			if ((rc = ivec_push(out, t->unk)))
				return rc;
		} else {
			return llm_error(LLM_EFORMAT, "tokenizer: no token for '%.*s' "
			                 "(no byte tokens, no unknown token)", y->len,
			                 s + y->start);
		}
	}
	return 0;
}

/* ---- byte-level BPE */

static int bpe_try_pair(const struct llm_tokenizer *t, struct work *w,
                        int32_t l, int32_t r)
{
	if (l < 0 || r < 0)
		return 0;
	const struct pair_ent *e = pair_find(t, w->sym[l].id, w->sym[r].id);
	if (!e)
		return 0;
	return heap_push(&w->heap, (struct bigram){ (float)e->rank, l, r,
	                                            w->sym[l].id, w->sym[r].id });
}

static int bpe_chunk(const struct llm_tokenizer *t, struct work *w,
                     const unsigned char *p, size_t n, struct ivec *out)
{
	int rc;

	if (n == 0)
		return 0;
	if ((rc = work_reserve(w, n, 2 * n)))
		return rc;
	if (t->pre->ignore_merges && n > 1) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			k += (size_t)utf8_put(w->buf + k, byte_to_cp(p[i]));
		int32_t id = vocab_find(t, w->buf, k);
		if (id >= 0)
			return ivec_push(out, id);
	}
	for (size_t i = 0; i < n; i++) {
		int32_t id = t->byte_tok[p[i]];
		if (id < 0) {
			if (t->unk < 0)
				return llm_error(LLM_EFORMAT, "tokenizer: no token for byte "
				                 "0x%02x", p[i]);
			id = t->unk;
		}
		w->sym[i] = (struct sym){ 0, 0, id, (int32_t)i - 1, (int32_t)i + 1 };
	}
	w->sym[n - 1].next = -1;

	w->heap.n = 0;
	for (size_t i = 0; i + 1 < n; i++)
		if ((rc = bpe_try_pair(t, w, (int32_t)i, (int32_t)i + 1)))
			return rc;
	while (w->heap.n) {
		struct bigram b = heap_pop(&w->heap);
		struct sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		if (l->id != b.a || r->id != b.b || l->next != b.right)
			continue;   /* stale */
		l->id = pair_find(t, b.a, b.b)->id;
		r->id = -1;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		if ((rc = bpe_try_pair(t, w, l->prev, b.left)) ||
		    (rc = bpe_try_pair(t, w, b.left, l->next)))
			return rc;
	}
	for (int32_t i = 0; i >= 0; i = w->sym[i].next)
		if ((rc = ivec_push(out, w->sym[i].id)))
			return rc;
	return 0;
}

static int offs_push(struct work *w, size_t x)
{
	if (w->n_offs == w->offs_cap) {
		size_t cap = w->offs_cap ? w->offs_cap * 2 : 256;
		size_t *p = realloc(w->offs, cap * sizeof(*p));
		if (!p)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		w->offs = p;
		w->offs_cap = cap;
	}
	w->offs[w->n_offs++] = x;
	return 0;
}

/*
 * Split [0, len) of s by regex re, appending the end offset (plus base) of
 * each piece to w->offs.  Text between matches (only invalid UTF-8 can be
 * left unmatched by the patterns above) forms pieces of its own, as
 * Hugging Face's Split(behavior="isolated") does.
 */
static int regex_split(struct work *w, const pcre2_code *re, const char *s,
                       size_t len, size_t base)
{
	size_t pos = 0;
	int rc;

	if (!w->md) {
		w->md = pcre2_match_data_create(4, NULL);
		if (!w->md)
			return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	}
	while (pos < len) {
		int m = pcre2_match(re, (PCRE2_SPTR)s, len, pos, 0, w->md, NULL);
		if (m == PCRE2_ERROR_JIT_STACKLIMIT)
			m = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_JIT, w->md, NULL);
		if (m == PCRE2_ERROR_NOMATCH)
			break;
		if (m < 0) {
			PCRE2_UCHAR buf[256];
			pcre2_get_error_message(m, buf, sizeof(buf));
			return llm_error(LLM_EINVAL, "tokenizer: pre-tokenizer: %s", (char *)buf);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
		size_t ms = ov[0], me = ov[1];
		if (me <= ms) {
			/* cannot happen with our patterns; step over one byte */
			me = ms + 1;
		}
		if (ms > pos && (rc = offs_push(w, base + ms)))
			return rc;
		if ((rc = offs_push(w, base + me)))
			return rc;
		pos = me;
	}
	if (pos < len && (rc = offs_push(w, base + len)))
		return rc;
	return 0;
}

/* Pre-tokenize text into w->offs: [0, e1, e2, ..., len]. */
static int pre_split(const struct llm_tokenizer *t, struct work *w,
                     const char *text, size_t len)
{
	int rc;
	w->n_offs = 0;
	if ((rc = offs_push(w, 0)))
		return rc;
	if (t->kind != LLM_TOK_BPE) {
		return len ? offs_push(w, len) : 0;
	}
	if ((rc = regex_split(w, t->re[0], text, len, 0)))
		return rc;
	if (!t->re[1])
		return 0;
	/* second level: split every first-level piece again */
	size_t n1 = w->n_offs;
	size_t *first = malloc(n1 * sizeof(*first));
	if (!first)
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	memcpy(first, w->offs, n1 * sizeof(*first));
	w->n_offs = 1;
	for (size_t i = 0; i + 1 < n1 && !rc; i++)
		rc = regex_split(w, t->re[1], text + first[i], first[i + 1] - first[i],
		                 first[i]);
	free(first);
	return rc;
}

static int encode_text(const struct llm_tokenizer *t, struct work *w,
                       const char *text, size_t len, bool prev_special,
                       struct ivec *out)
{
	int rc;
	if (t->kind == LLM_TOK_SPM)
		return spm_encode(t, w, text, len, t->add_space_prefix && prev_special, out);
	if ((rc = pre_split(t, w, text, len)))
		return rc;
	for (size_t i = 0; i + 1 < w->n_offs; i++)
		if ((rc = bpe_chunk(t, w, (const unsigned char *)text + w->offs[i],
		                    w->offs[i + 1] - w->offs[i], out)))
			return rc;
	return 0;
}

/* The longest special token at text[i], or -1. */
static int32_t match_special(const struct llm_tokenizer *t, const char *text,
                             size_t len, size_t i)
{
	unsigned c = (unsigned char)text[i];
	for (uint32_t k = t->spec_start[c]; k < t->spec_start[c + 1]; k++) {
		int32_t id = t->spec[k];
		size_t n = t->text_len[id];
		if (n <= len - i && !memcmp(text + i, t->text[id], n))
			return id;
	}
	return -1;
}

int llm_tokenize(const struct llm_tokenizer *t, const char *text, size_t len,
                 bool add_bos, bool parse_special, int32_t **out, int *n_out)
{
	struct ivec v = { 0 };
	struct work w = { 0 };
	size_t start = 0;
	bool prev_special = true;    /* the text's start counts as a boundary */
	int rc = 0;

	*out = NULL;
	*n_out = 0;
	if (add_bos && t->bos >= 0 && (rc = ivec_push(&v, t->bos)))
		goto cleanup;
	if (parse_special) {
		for (size_t i = 0; i < len;) {
			int32_t id = match_special(t, text, len, i);
			if (id < 0) {
				i++;
				continue;
			}
			if (i > start &&
			    (rc = encode_text(t, &w, text + start, i - start, prev_special, &v)))
				goto cleanup;
			if ((rc = ivec_push(&v, id)))
				goto cleanup;
			prev_special = true;
			i += t->text_len[id];
			start = i;
		}
	}
	if (start < len && (rc = encode_text(t, &w, text + start, len - start,
	                                     prev_special, &v)))
		goto cleanup;
	if (v.n > INT_MAX) {
		rc = llm_error(LLM_ERANGE, "tokenizer: more than %d tokens", INT_MAX);
		goto cleanup;
	}
	if (!v.v && !(v.v = malloc(sizeof(*v.v)))) {
		rc = llm_error(LLM_ENOMEM, "tokenizer: out of memory");
		goto cleanup;
	}
	*out = v.v;
	*n_out = (int)v.n;
	v.v = NULL;
cleanup:
	free(v.v);
	work_free(&w);
	return rc;
}

int llm_tokenizer_split(const struct llm_tokenizer *t, const char *text,
                        size_t len, size_t **offs, int *n)
{
	struct work w = { 0 };
	int rc = pre_split(t, &w, text, len);
	*offs = NULL;
	*n = 0;
	if (rc) {
		work_free(&w);
		return rc;
	}
	if (w.n_offs - 1 > INT_MAX) {
		work_free(&w);
		return llm_error(LLM_ERANGE, "tokenizer: too many chunks");
	}
	*offs = w.offs;
	*n = (int)w.n_offs - 1;
	w.offs = NULL;
	work_free(&w);
	return 0;
}

/* ---------------------------------------------------------------- decoding */

/* Token bytes with the leading space of the text removed when the token
 * starts the text (SPM's prefix space). */
static const char *piece(const struct llm_tokenizer *t, int32_t id, bool special,
                         bool *at_start, size_t *len)
{
	const char *s = llm_token_bytes(t, id, special, len);
	if (!*at_start || id == t->bos)
		return s;
	*at_start = false;
	if (t->kind == LLM_TOK_SPM && t->add_space_prefix && *len && s[0] == ' ') {
		s++;
		(*len)--;
	}
	return s;
}

int llm_detokenize(const struct llm_tokenizer *t, const int32_t *tokens, int n,
                   bool special, char **out, size_t *len)
{
	size_t total = 0;
	bool at_start = true;
	char *s;

	*out = NULL;
	*len = 0;
	for (int i = 0; i < n; i++) {
		size_t k;
		if (tokens[i] < 0 || tokens[i] >= t->n_vocab)
			return llm_error(LLM_EINVAL, "tokenizer: token id %d out of range "
			                 "(vocabulary of %d)", tokens[i], t->n_vocab);
		llm_token_bytes(t, tokens[i], special, &k);
		total += k;
	}
	s = malloc(total + 1);
	if (!s)
		return llm_error(LLM_ENOMEM, "tokenizer: out of memory");
	total = 0;
	for (int i = 0; i < n; i++) {
		size_t k;
		const char *p = piece(t, tokens[i], special, &at_start, &k);
		memcpy(s + total, p, k);
		total += k;
	}
	s[total] = 0;
	*out = s;
	*len = total;
	return 0;
}

void llm_detok_init(struct llm_detok *d, const struct llm_tokenizer *t,
                    bool at_start, bool special)
{
	memset(d, 0, sizeof(*d));
	d->tok = t;
	d->at_start = at_start;
	d->special = special;
}

/* Bytes at the end of s[0..n) that begin a UTF-8 character still missing
 * its last bytes (0 when s ends on a whole character or on invalid bytes,
 * which no later byte can repair). */
static size_t incomplete_tail(const unsigned char *s, size_t n)
{
	for (size_t k = 1; k <= 3 && k <= n; k++) {
		unsigned c = s[n - k];
		if ((c & 0xc0) == 0x80)
			continue;            /* continuation: look further back */
		size_t need = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 :
		              c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		if (need <= k)
			return 0;            /* complete, or not a lead byte */
		if (k >= 2) {
			/* the second byte's range depends on the lead byte */
			unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
			unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
			if (s[n - k + 1] < lo || s[n - k + 1] > hi)
				return 0;
		}
		return k;
	}
	return 0;
}

size_t llm_detok_push(struct llm_detok *d, int32_t id, char *out, size_t cap)
{
	size_t k, n;
	const char *p = piece(d->tok, id, d->special, &d->at_start, &k);

	n = (size_t)d->n_pending + k;
	LLM_ASSERT(n <= cap);
	memcpy(out, d->pending, (size_t)d->n_pending);
	memcpy(out + d->n_pending, p, k);
	size_t hold = incomplete_tail((const unsigned char *)out, n);
	memcpy(d->pending, out + n - hold, hold);
	d->n_pending = (int)hold;
	return n - hold;
}

size_t llm_detok_flush(struct llm_detok *d, char *out, size_t cap)
{
	size_t n = (size_t)d->n_pending;
	LLM_ASSERT(n <= cap);
	memcpy(out, d->pending, n);
	d->n_pending = 0;
	return n;
}
