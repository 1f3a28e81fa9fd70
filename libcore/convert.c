/* convert.c - llama2.c, Hugging Face and dummy models to GGUF (convert.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "llmkit/convert.h"
#include "llmkit/error.h"
#include "llmkit/safetensors.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"

#define SPM_SPACE "\xe2\x96\x81"   /* U+2581, SentencePiece's visible space */

/* llama.cpp's general.file_type values. */
enum { FTYPE_ALL_F32 = 0, FTYPE_MOSTLY_F16 = 1, FTYPE_MOSTLY_BF16 = 32 };

/* ================================================================ helpers */

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s%s%s", dir,
		         *dir && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
	return p;
}

static bool is_file(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The directory part of a path ("." when it has none); malloc'd. */
static char *dir_of(const char *path)
{
	const char *s = strrchr(path, '/');
	if (!s)
		return strdup(".");
	if (s == path)
		return strdup("/");
	return strndup(path, (size_t)(s - path));
}

/* Base name without directory and extension, into buf. */
static void stem_of(const char *path, char *buf, size_t n)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	snprintf(buf, n, "%s", b);
	char *dot = strrchr(buf, '.');
	if (dot && dot != buf)
		*dot = 0;
}

static json_t *load_json(const char *path)
{
	json_error_t e;
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
	if (!j) {
		if (!is_file(path))
			llm_error(LLM_ENOTFOUND, "%s: %s", path,
			          access(path, F_OK) ? strerror(ENOENT) : "not a regular file");
		else
			llm_error(LLM_EFORMAT, "%s: line %d: %s", path, e.line, e.text);
	}
	return j;
}

/* ================================================================ vocab */

/*
 * A vocabulary as GGUF stores it.  Token strings are as the model sees
 * them: SentencePiece pieces with U+2581 for spaces, byte-level BPE tokens
 * in GPT-2's printable byte alphabet.
 */
struct cv_vocab {
	char model[16];          /* "llama" | "gpt2" */
	char pre[32];            /* tokenizer.ggml.pre, "" = do not write */
	int64_t n;
	char **tok;
	size_t *len;
	float *score;
	int32_t *type;
	char **merges;
	int64_t n_merges;
	int64_t bos, eos, unk, pad;   /* -1: none */
	int add_bos, add_eos, add_space_prefix;  /* -1: unset */
	char *chat_template;
};

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4,
       TT_UNUSED = 5, TT_BYTE = 6 };

static void vocab_init(struct cv_vocab *v)
{
	memset(v, 0, sizeof(*v));
	v->bos = v->eos = v->unk = v->pad = -1;
	v->add_bos = v->add_eos = v->add_space_prefix = -1;
}

static void vocab_free(struct cv_vocab *v)
{
	for (int64_t i = 0; i < v->n; i++)
		free(v->tok[i]);
	for (int64_t i = 0; i < v->n_merges; i++)
		free(v->merges[i]);
	free(v->tok);
	free(v->len);
	free(v->score);
	free(v->type);
	free(v->merges);
	free(v->chat_template);
	vocab_init(v);
}

/* Grow to n tokens (new ones empty, NULL text). */
static int vocab_resize(struct cv_vocab *v, int64_t n)
{
	if (n <= v->n)
		return 0;
	char **t = realloc(v->tok, (size_t)n * sizeof(*t));
	if (t)
		v->tok = t;
	size_t *l = realloc(v->len, (size_t)n * sizeof(*l));
	if (l)
		v->len = l;
	float *s = realloc(v->score, (size_t)n * sizeof(*s));
	if (s)
		v->score = s;
	int32_t *y = realloc(v->type, (size_t)n * sizeof(*y));
	if (y)
		v->type = y;
	if (!t || !l || !s || !y)
		return llm_error(LLM_ENOMEM, "vocabulary: out of memory");
	for (int64_t i = v->n; i < n; i++) {
		v->tok[i] = NULL;
		v->len[i] = 0;
		v->score[i] = 0;
		v->type[i] = TT_NORMAL;
	}
	v->n = n;
	return 0;
}

static int vocab_set(struct cv_vocab *v, int64_t id, const char *s, size_t n,
                     float score, int32_t type)
{
	char *c = malloc(n + 1);
	if (!c)
		return llm_error(LLM_ENOMEM, "vocabulary: out of memory");
	memcpy(c, s, n);
	c[n] = 0;
	free(v->tok[id]);
	v->tok[id] = c;
	v->len[id] = n;
	v->score[id] = score;
	v->type[id] = type;
	return 0;
}

/* Fill holes (ids nothing named) and grow to n with unused tokens named
 * pre + id + post ("[PAD17]" as llama.cpp names them, "<dummy17>"). */
static int vocab_pad(struct cv_vocab *v, int64_t n, const char *pre,
                     const char *post, const char *what)
{
	if (v->n > n)
		return llm_error(LLM_ERANGE, "%s: the tokenizer has %" PRId64 " tokens, "
		                 "more than the model's %" PRId64, what, v->n, n);
	int64_t old = v->n;
	int rc = vocab_resize(v, n);
	for (int64_t i = 0; !rc && i < n; i++) {
		if (i < old && v->tok[i])
			continue;
		char buf[48];
		int k = snprintf(buf, sizeof(buf), "%.16s%" PRId64 "%.16s", pre, i, post);
		rc = vocab_set(v, i, buf, (size_t)k, -1000.0f, TT_UNUSED);
	}
	return rc;
}

static int vocab_add_merge(struct cv_vocab *v, const char *a, size_t na,
                           const char *b, size_t nb, int64_t *cap)
{
	if (v->n_merges == *cap) {
		int64_t nc = *cap ? 2 * *cap : 1024;
		char **m = realloc(v->merges, (size_t)nc * sizeof(*m));
		if (!m)
			return llm_error(LLM_ENOMEM, "vocabulary: out of memory");
		v->merges = m;
		*cap = nc;
	}
	char *s = malloc(na + nb + 2);
	if (!s)
		return llm_error(LLM_ENOMEM, "vocabulary: out of memory");
	memcpy(s, a, na);
	s[na] = ' ';
	memcpy(s + na + 1, b, nb);
	s[na + nb + 1] = 0;
	v->merges[v->n_merges++] = s;
	return 0;
}

/* "<0xHH>" exactly. */
static bool is_byte_token(const char *s, size_t n)
{
	return n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' &&
	       strchr("0123456789ABCDEFabcdef", s[3]) && s[3] &&
	       strchr("0123456789ABCDEFabcdef", s[4]) && s[4];
}

/* ---------------------------------------------------------------- llama2.c */

/*
 * llama2.c's tokenizer.bin: i32 max_token_length, then per token an f32
 * score, an i32 byte length and the bytes.  Pieces are stored with plain
 * spaces; GGUF wants U+2581.  As llama.cpp's llama2c converter: ids 0, 1, 2
 * are <unk> (unknown), <s>, </s> (control); <0xHH> pieces are byte
 * tokens; empty pieces control.  expect < 0: as many tokens as the file has.
 */
static int vocab_from_llama2c(struct cv_vocab *v, const char *path, int64_t expect)
{
	char *buf = NULL, *piece = NULL;
	size_t size, off = 4;
	int rc = llm_read_file(path, &buf, &size);
	if (rc)
		return rc;
	if (size < 4) {
		rc = llm_error(LLM_EFORMAT, "%s: truncated tokenizer (no header)", path);
		goto cleanup;
	}
	strcpy(v->model, "llama");
	strcpy(v->pre, "default");
	for (int64_t id = 0; off < size; id++) {
		float score;
		int32_t len;
		if (expect >= 0 && id == expect) {
			rc = llm_error(LLM_EFORMAT, "%s: more than the model's %" PRId64
			               " tokens", path, expect);
			goto cleanup;
		}
		if (size - off < 8) {
			rc = llm_error(LLM_EFORMAT, "%s: truncated at token %" PRId64, path, id);
			goto cleanup;
		}
		memcpy(&score, buf + off, 4);
		memcpy(&len, buf + off + 4, 4);
		off += 8;
		if (len < 0 || (size_t)len > size - off) {
			rc = llm_error(LLM_EFORMAT, "%s: token %" PRId64 ": length %d %s",
			               path, id, len, len < 0 ? "is negative" : "runs past end of file");
			goto cleanup;
		}
		const char *s = buf + off;
		off += (size_t)len;
		int32_t type = TT_NORMAL;
		if (id == 0) {
			s = "<unk>";
			len = 5;
			type = TT_UNKNOWN;
		} else if (id == 1 || id == 2) {
			s = id == 1 ? "<s>" : "</s>";
			len = id == 1 ? 3 : 4;
			type = TT_CONTROL;
		} else if (len == 0) {
			type = TT_CONTROL;
		} else if (is_byte_token(s, (size_t)len)) {
			type = TT_BYTE;
		}
		/* spaces -> U+2581 */
		size_t n_sp = 0, k = 0;
		for (int32_t i = 0; i < len; i++)
			n_sp += s[i] == ' ';
		free(piece);
		if (!(piece = malloc((size_t)len + 2 * n_sp + 1))) {
			rc = llm_error(LLM_ENOMEM, "%s: out of memory", path);
			goto cleanup;
		}
		for (int32_t i = 0; i < len; i++) {
			if (s[i] == ' ') {
				memcpy(piece + k, SPM_SPACE, 3);
				k += 3;
			} else {
				piece[k++] = s[i];
			}
		}
		if ((rc = vocab_resize(v, id + 1)) || (rc = vocab_set(v, id, piece, k, score, type)))
			goto cleanup;
	}
	if (expect >= 0 && v->n != expect) {
		rc = llm_error(LLM_EFORMAT, "%s: %" PRId64 " tokens, the model has %"
		               PRId64, path, v->n, expect);
		goto cleanup;
	}
	if (v->n < 3) {
		rc = llm_error(LLM_EFORMAT, "%s: only %" PRId64 " tokens", path, v->n);
		goto cleanup;
	}
	v->unk = 0;
	v->bos = 1;
	v->eos = 2;
	v->add_bos = 1;
	v->add_space_prefix = 1;
cleanup:
	free(piece);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- default */

/* <unk>, <s>, </s> and the 256 byte tokens: any text tokenizes (bytes). */
static int vocab_bytes(struct cv_vocab *v)
{
	static const char *const sp[] = { "<unk>", "<s>", "</s>" };
	int rc = vocab_resize(v, 259);
	for (int i = 0; !rc && i < 3; i++)
		rc = vocab_set(v, i, sp[i], strlen(sp[i]), 0, i ? TT_CONTROL : TT_UNKNOWN);
	for (int b = 0; !rc && b < 256; b++) {
		char s[8];
		snprintf(s, sizeof(s), "<0x%02X>", b);
		rc = vocab_set(v, 3 + b, s, 6, 0, TT_BYTE);
	}
	strcpy(v->model, "llama");
	strcpy(v->pre, "default");
	v->unk = 0;
	v->bos = 1;
	v->eos = 2;
	v->add_bos = 1;
	v->add_space_prefix = 0;
	return rc;
}

/* ---------------------------------------------------------------- GPT-2 */

/* encoder.json (token -> id) and vocab.bpe (a "#version" line, then one
 * "a b" merge a line), as OpenAI released GPT-2's tokenizer. */
static int vocab_from_gpt2(struct cv_vocab *v, const char *dir)
{
	char *enc_path = path_join(dir, "encoder.json");
	char *bpe_path = path_join(dir, "vocab.bpe");
	char *bpe = NULL;
	size_t bpe_n;
	json_t *enc = NULL;
	int rc = 0;
	int64_t cap = 0;

	if (!enc_path || !bpe_path) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (!(enc = load_json(enc_path))) {
		rc = LLM_EFORMAT;
		goto cleanup;
	}
	if (!json_is_object(enc)) {
		rc = llm_error(LLM_EFORMAT, "%s: not a JSON object", enc_path);
		goto cleanup;
	}
	const char *key;
	json_t *val;
	int64_t max_id = -1;
	json_object_foreach(enc, key, val) {
		if (!json_is_integer(val) || json_integer_value(val) < 0 ||
		    json_integer_value(val) >= (1 << 24)) {
			rc = llm_error(LLM_EFORMAT, "%s: token \"%s\": id is not an integer "
			               "in [0, 2^24)", enc_path, key);
			goto cleanup;
		}
		if (json_integer_value(val) > max_id)
			max_id = json_integer_value(val);
	}
	if ((rc = vocab_resize(v, max_id + 1)))
		goto cleanup;
	json_object_foreach(enc, key, val) {
		int64_t id = json_integer_value(val);
		if (v->tok[id]) {
			rc = llm_error(LLM_EFORMAT, "%s: id %" PRId64 " given twice", enc_path, id);
			goto cleanup;
		}
		bool ctl = !strcmp(key, "<|endoftext|>");
		if ((rc = vocab_set(v, id, key, strlen(key), 0, ctl ? TT_CONTROL : TT_NORMAL)))
			goto cleanup;
		if (ctl)
			v->bos = v->eos = id;
	}
	if ((rc = llm_read_file(bpe_path, &bpe, &bpe_n)))
		goto cleanup;
	char *line = bpe, *end = bpe + bpe_n;
	for (int lineno = 1; line < end; lineno++) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		char *le = nl ? nl : end;
		if (le > line && le[-1] == '\r')
			le--;
		if (le > line && !(lineno == 1 && *line == '#')) {
			char *sp = memchr(line, ' ', (size_t)(le - line));
			if (!sp || sp == line || sp + 1 == le || memchr(sp + 1, ' ', (size_t)(le - sp - 1))) {
				rc = llm_error(LLM_EFORMAT, "%s: line %d: not a merge \"a b\"",
				               bpe_path, lineno);
				goto cleanup;
			}
			if ((rc = vocab_add_merge(v, line, (size_t)(sp - line), sp + 1,
			                          (size_t)(le - sp - 1), &cap)))
				goto cleanup;
		}
		line = nl ? nl + 1 : end;
	}
	strcpy(v->model, "gpt2");
	strcpy(v->pre, "gpt-2");
	v->add_bos = 0;
cleanup:
	json_decref(enc);
	free(bpe);
	free(enc_path);
	free(bpe_path);
	return rc;
}

/* ---------------------------------------------------------------- tokenizer.json */

/* What a Hugging Face pre-tokenizer does, as far as the .pre name needs. */
struct pre_info {
	const char *split[8];    /* Split regexes */
	int n_split;
	bool digits;             /* Digits (individual) */
	bool bytelevel;          /* a ByteLevel pre-tokenizer */
	bool bytelevel_regex;    /* ... applying GPT-2's regex */
	bool metaspace_prefix;   /* Metaspace that prepends U+2581 */
};

static void pre_walk(json_t *p, struct pre_info *pi)
{
	const char *type = json_string_value(json_object_get(p, "type"));
	if (!type)
		return;
	if (!strcmp(type, "Sequence")) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(p, "pretokenizers"), i, e)
			pre_walk(e, pi);
	} else if (!strcmp(type, "Split")) {
		const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
		if (re && pi->n_split < 8)
			pi->split[pi->n_split++] = re;
	} else if (!strcmp(type, "Digits")) {
		pi->digits = true;
	} else if (!strcmp(type, "ByteLevel")) {
		json_t *ur = json_object_get(p, "use_regex");
		pi->bytelevel = true;
		pi->bytelevel_regex = !ur || json_is_true(ur);
	} else if (!strcmp(type, "Metaspace")) {
		json_t *aps = json_object_get(p, "add_prefix_space");
		const char *scheme = json_string_value(json_object_get(p, "prepend_scheme"));
		pi->metaspace_prefix = scheme ? strcmp(scheme, "never") != 0 : json_is_true(aps);
	}
}

static const char GPT2_RE[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/*
 * The tokenizer.ggml.pre name for a byte-level BPE pre-tokenizer.
 * llama.cpp hashes the tokenization of a probe text to decide; without the
 * tokenizer at hand we recognise the regexes instead: Llama 3's splits
 * numbers in runs of up to 3 digits (\p{N}{1,3}), Qwen2's the same shape
 * with single digits, SmolLM's is GPT-2's after splitting every digit.
 */
static const char *pre_name(const struct pre_info *pi)
{
	for (int i = 0; i < pi->n_split; i++) {
		const char *re = pi->split[i];
		bool letters = strstr(re, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+") != NULL;
		if (letters && strstr(re, "\\p{N}{1,3}"))
			return "llama-bpe";
		if (letters && strstr(re, "|\\p{N}|"))
			return "qwen2";
		if (!strcmp(re, GPT2_RE) && !pi->digits)
			return "gpt-2";
	}
	if (pi->n_split == 0 && pi->bytelevel_regex)
		return pi->digits ? "smollm" : "gpt-2";
	return NULL;
}

/* Whether a normalizer prepends U+2581 (Llama 2's tokenizer.json). */
static bool normalizer_prepends(json_t *n)
{
	const char *type = json_string_value(json_object_get(n, "type"));
	if (!type)
		return false;
	if (!strcmp(type, "Sequence")) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(n, "normalizers"), i, e)
			if (normalizer_prepends(e))
				return true;
		return false;
	}
	if (!strcmp(type, "Prepend")) {
		const char *s = json_string_value(json_object_get(n, "prepend"));
		return s && !strcmp(s, SPM_SPACE);
	}
	return false;
}

static bool looks_special(const char *s, size_t n)
{
	return n >= 4 && !memcmp(s, "<|", 2) && !memcmp(s + n - 2, "|>", 2);
}

/* "bos_token": "<s>" or {"content": "<s>", ...} in tokenizer_config.json. */
static const char *special_content(json_t *tc, const char *typ)
{
	char key[32];
	snprintf(key, sizeof(key), "%s_token", typ);
	json_t *e = json_object_get(tc, key);
	if (json_is_object(e))
		e = json_object_get(e, "content");
	return json_string_value(e);
}

static int64_t find_token(const struct cv_vocab *v, const char *s)
{
	size_t n = strlen(s);
	for (int64_t i = 0; i < v->n; i++)
		if (v->tok[i] && v->len[i] == n && !memcmp(v->tok[i], s, n))
			return i;
	return -1;
}

/* Special ids: tokenizer_config.json's "<typ>_token" strings, then
 * config.json's "<typ>_token_id" (an integer or a list: the first). */
static void set_special(struct cv_vocab *v, int64_t *dst, const char *typ,
                        json_t *tc, json_t *config)
{
	const char *content = tc ? special_content(tc, typ) : NULL;
	if (content) {
		int64_t id = find_token(v, content);
		if (id >= 0) {
			*dst = id;
			return;
		}
	}
	if (config) {
		char key[32];
		snprintf(key, sizeof(key), "%s_token_id", typ);
		json_t *e = json_object_get(config, key);
		if (json_is_array(e))
			e = json_array_get(e, 0);
		if (json_is_integer(e) && json_integer_value(e) >= 0 &&
		    json_integer_value(e) < v->n)
			*dst = json_integer_value(e);
	}
}

static int read_chat_template(struct cv_vocab *v, json_t *tc, const char *dir)
{
	json_t *ct = tc ? json_object_get(tc, "chat_template") : NULL;
	const char *s = NULL;
	if (json_is_string(ct)) {
		s = json_string_value(ct);
	} else if (json_is_array(ct)) {
		size_t i;
		json_t *e;
		json_array_foreach(ct, i, e) {
			const char *name = json_string_value(json_object_get(e, "name"));
			const char *t = json_string_value(json_object_get(e, "template"));
			if (t && (!s || (name && !strcmp(name, "default"))))
				s = t;
		}
	}
	if (s)
		return (v->chat_template = strdup(s)) ? 0 : llm_error(LLM_ENOMEM, "out of memory");
	char *p = path_join(dir, "chat_template.jinja");
	int rc = 0;
	if (!p)
		return llm_error(LLM_ENOMEM, "out of memory");
	if (is_file(p)) {
		size_t n;
		rc = llm_read_file(p, &v->chat_template, &n);
	}
	free(p);
	return rc;
}

/*
 * A Hugging Face tokenizer.json (with tokenizer_config.json and
 * chat_template.jinja from the same directory when present).  Two kinds:
 *
 *   BPE with byte_fallback (Llama 2, TinyLlama, Mistral): GGUF "llama".
 *   SentencePiece merges by score, so each token gets the score that
 *   makes the merge order the tokenizer.json's: -(rank of the first merge
 *   producing it); tokens no merge produces (single characters) rank
 *   after every merge, -(n_merges + id); special, byte and unknown
 *   tokens 0.  This is the order SentencePiece itself gives its pieces.
 *
 *   byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): GGUF "gpt2", with
 *   the merges ("a b"; pairs holding a space get U+0120 for it, as
 *   llama.cpp writes them) and a pre-tokenizer name.
 *
 * Added tokens: special ones (or ones that look like "<|...|>") are
 * control tokens, others user-defined.
 */
static int vocab_from_tokenizer_json(struct cv_vocab *v, const char *path,
                                     json_t *config)
{
	char *dir = dir_of(path), *tc_path = NULL;
	json_t *root = NULL, *tc = NULL;
	bool *scored = NULL;      /* spm: score set by a merge */
	int rc = 0;
	int64_t cap = 0;

	if (!dir || !(tc_path = path_join(dir, "tokenizer_config.json"))) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (!(root = load_json(path))) {
		rc = LLM_EFORMAT;
		goto cleanup;
	}
	if (is_file(tc_path) && !(tc = load_json(tc_path))) {
		rc = LLM_EFORMAT;
		goto cleanup;
	}
	json_t *model = json_object_get(root, "model");
	const char *mtype = json_string_value(json_object_get(model, "type"));
	json_t *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	json_t *added = json_object_get(root, "added_tokens");
	if (!json_is_object(model)) {
		rc = llm_error(LLM_EFORMAT, "%s: no \"model\" object", path);
		goto cleanup;
	}
	if (!mtype || strcmp(mtype, "BPE")) {
		rc = llm_error(LLM_EUNSUPPORTED, "%s: model type %s is not supported "
		               "(only BPE)", path, mtype ? mtype : "(none)");
		goto cleanup;
	}
	if (!json_is_object(vocab) || !json_is_array(merges)) {
		rc = llm_error(LLM_EFORMAT, "%s: model.vocab must be an object and "
		               "model.merges an array", path);
		goto cleanup;
	}
	if (added && !json_is_array(added)) {
		rc = llm_error(LLM_EFORMAT, "%s: added_tokens is not an array", path);
		goto cleanup;
	}
	bool spm = json_is_true(json_object_get(model, "byte_fallback"));
	struct pre_info pi = { .n_split = 0 };
	pre_walk(json_object_get(root, "pre_tokenizer"), &pi);
	if (!spm && !pi.bytelevel) {
		json_t *dec = json_object_get(root, "decoder");
		const char *dt = json_string_value(json_object_get(dec, "type"));
		if (!dt || strcmp(dt, "ByteLevel")) {
			rc = llm_error(LLM_EUNSUPPORTED, "%s: BPE that is neither byte-level "
			               "nor byte-fallback is not supported", path);
			goto cleanup;
		}
	}

	/* ids */
	int64_t max_id = -1;
	const char *key;
	json_t *val;
	json_object_foreach(vocab, key, val) {
		if (!json_is_integer(val) || json_integer_value(val) < 0 ||
		    json_integer_value(val) >= (1 << 24)) {
			rc = llm_error(LLM_EFORMAT, "%s: model.vocab[\"%s\"]: id is not an "
			               "integer in [0, 2^24)", path, key);
			goto cleanup;
		}
		if (json_integer_value(val) > max_id)
			max_id = json_integer_value(val);
	}
	size_t i;
	json_array_foreach(added, i, val) {
		json_t *id = json_object_get(val, "id");
		if (!json_is_integer(id) || json_integer_value(id) < 0 ||
		    json_integer_value(id) >= (1 << 24) ||
		    !json_is_string(json_object_get(val, "content"))) {
			rc = llm_error(LLM_EFORMAT, "%s: added_tokens[%zu]: needs an integer "
			               "\"id\" in [0, 2^24) and a \"content\" string", path, i);
			goto cleanup;
		}
		if (json_integer_value(id) > max_id)
			max_id = json_integer_value(id);
	}
	if (max_id < 0) {
		rc = llm_error(LLM_EFORMAT, "%s: empty vocabulary", path);
		goto cleanup;
	}
	if ((rc = vocab_resize(v, max_id + 1)))
		goto cleanup;
	const char *unk = json_string_value(json_object_get(model, "unk_token"));
	json_object_foreach(vocab, key, val) {
		int64_t id = json_integer_value(val);
		size_t n = strlen(key);
		if (v->tok[id]) {
			rc = llm_error(LLM_EFORMAT, "%s: id %" PRId64 " given twice", path, id);
			goto cleanup;
		}
		int32_t type = TT_NORMAL;
		if (spm && is_byte_token(key, n))
			type = TT_BYTE;
		else if (unk && !strcmp(key, unk))
			type = TT_UNKNOWN;
		if ((rc = vocab_set(v, id, key, n, 0, type)))
			goto cleanup;
	}
	json_array_foreach(added, i, val) {
		int64_t id = json_integer_value(json_object_get(val, "id"));
		json_t *c = json_object_get(val, "content");
		const char *s = json_string_value(c);
		size_t n = json_string_length(c);
		int32_t type = json_is_true(json_object_get(val, "special")) ||
		               looks_special(s, n) ? TT_CONTROL : TT_USER;
		if (unk && !strcmp(s, unk))
			type = TT_UNKNOWN;
		else if (spm && is_byte_token(s, n))
			type = TT_BYTE;
		if (v->tok[id] && (v->len[id] != n || memcmp(v->tok[id], s, n))) {
			rc = llm_error(LLM_EFORMAT, "%s: added token %" PRId64 " \"%s\" "
			               "differs from model.vocab's \"%s\"", path, id, s, v->tok[id]);
			goto cleanup;
		}
		if ((rc = vocab_set(v, id, s, n, 0, type)))
			goto cleanup;
	}

	/* merges */
	int64_t n_merges = (int64_t)json_array_size(merges);
	if (spm && !(scored = calloc((size_t)v->n, sizeof(bool)))) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	json_array_foreach(merges, i, val) {
		const char *a, *b;
		size_t na, nb;
		char *tmp = NULL;
		if (json_is_string(val)) {
			a = json_string_value(val);
			const char *sp = strchr(a, ' ');
			if (!sp || sp == a || !sp[1] || strchr(sp + 1, ' ')) {
				rc = llm_error(LLM_EFORMAT, "%s: model.merges[%zu]: not \"a b\"",
				               path, i);
				goto cleanup;
			}
			na = (size_t)(sp - a);
			b = sp + 1;
			nb = strlen(b);
		} else if (json_is_array(val) && json_array_size(val) == 2 &&
		           json_is_string(json_array_get(val, 0)) &&
		           json_is_string(json_array_get(val, 1))) {
			a = json_string_value(json_array_get(val, 0));
			b = json_string_value(json_array_get(val, 1));
			na = strlen(a);
			nb = strlen(b);
		} else {
			rc = llm_error(LLM_EFORMAT, "%s: model.merges[%zu]: neither \"a b\" "
			               "nor [\"a\", \"b\"]", path, i);
			goto cleanup;
		}
		if (spm) {
			/* score the merge's product by rank (first merge wins) */
			if (!(tmp = malloc(na + nb + 1))) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
				goto cleanup;
			}
			memcpy(tmp, a, na);
			memcpy(tmp + na, b, nb);
			tmp[na + nb] = 0;
			json_t *idv = json_object_get(vocab, tmp);
			free(tmp);
			if (idv) {
				int64_t id = json_integer_value(idv);
				if (v->type[id] == TT_NORMAL && !scored[id]) {
					v->score[id] = -(float)i;
					scored[id] = true;
				}
			}
			continue;
		}
		/* byte-level: keep the merge; spaces inside a part become U+0120 */
		if (memchr(a, ' ', na) || memchr(b, ' ', nb)) {
			size_t cap2 = 2 * (na + nb) + 2, k = 0;
			char *buf = malloc(cap2 + 1);
			if (!buf) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
				goto cleanup;
			}
			for (int part = 0; part < 2; part++) {
				const char *s = part ? b : a;
				size_t n = part ? nb : na;
				if (part)
					buf[k++] = ' ';
				for (size_t j = 0; j < n; j++) {
					if (s[j] == ' ') {
						buf[k++] = '\xc4';
						buf[k++] = '\xa0';
					} else {
						buf[k++] = s[j];
					}
				}
			}
			char *sp2 = NULL;
			/* the separator is the first space not inside part a */
			size_t la = 0;
			for (size_t j = 0; j < na; j++)
				la += a[j] == ' ' ? 2 : 1;
			sp2 = buf + la;
			rc = vocab_add_merge(v, buf, la, sp2 + 1, k - la - 1, &cap);
			free(buf);
		} else {
			rc = vocab_add_merge(v, a, na, b, nb, &cap);
		}
		if (rc)
			goto cleanup;
	}
	if (spm) {
		for (int64_t id = 0; id < v->n; id++) {
			if (v->type[id] != TT_NORMAL || !v->tok[id])
				continue;
			if (!scored[id])
				v->score[id] = -(float)(n_merges + id);
		}
		strcpy(v->model, "llama");
		strcpy(v->pre, "default");
		v->add_space_prefix = normalizer_prepends(json_object_get(root, "normalizer")) ||
		                      pi.metaspace_prefix;
	} else {
		const char *pre = pre_name(&pi);
		strcpy(v->model, "gpt2");
		if (pre)
			snprintf(v->pre, sizeof(v->pre), "%s", pre);
	}

	/* special tokens, add_bos */
	if (tc) {
		json_t *aps = json_object_get(tc, "add_prefix_space");
		if (json_is_boolean(aps) && spm)
			v->add_space_prefix = json_is_true(aps);
	}
	if (unk)
		v->unk = find_token(v, unk);
	set_special(v, &v->bos, "bos", tc, config);
	set_special(v, &v->eos, "eos", tc, config);
	if (v->unk < 0)
		set_special(v, &v->unk, "unk", tc, config);
	set_special(v, &v->pad, "pad", tc, config);
	json_t *ab = tc ? json_object_get(tc, "add_bos_token") : NULL;
	json_t *ae = tc ? json_object_get(tc, "add_eos_token") : NULL;
	if (json_is_boolean(ab))
		v->add_bos = json_is_true(ab);
	if (json_is_boolean(ae))
		v->add_eos = json_is_true(ae);
	if (v->add_bos < 0) {
		/* a TemplateProcessing whose single template starts with BOS */
		json_t *pp = json_object_get(root, "post_processor"), *procs;
		procs = json_object_get(pp, "processors");
		size_t n_p = json_is_array(procs) ? json_array_size(procs) : 1;
		for (size_t k = 0; k < n_p; k++) {
			json_t *p = json_is_array(procs) ? json_array_get(procs, k) : pp;
			const char *t = json_string_value(json_object_get(p, "type"));
			if (!t || strcmp(t, "TemplateProcessing"))
				continue;
			json_t *first = json_array_get(json_object_get(p, "single"), 0);
			const char *sid = json_string_value(json_object_get(
				json_object_get(first, "SpecialToken"), "id"));
			v->add_bos = sid && v->bos >= 0 && !strcmp(sid, v->tok[v->bos]);
		}
	}
	rc = read_chat_template(v, tc, dir);
cleanup:
	free(scored);
	json_decref(root);
	json_decref(tc);
	free(tc_path);
	free(dir);
	return rc;
}

static int vocab_to_gguf(struct llm_gguf_writer *w, const struct cv_vocab *v)
{
	int rc = llm_gguf_set_str(w, "tokenizer.ggml.model", v->model);
	if (!rc && v->pre[0])
		rc = llm_gguf_set_str(w, "tokenizer.ggml.pre", v->pre);
	if (!rc)
		rc = llm_gguf_set_arr_str(w, "tokenizer.ggml.tokens",
		                          (const char *const *)v->tok, v->len, (uint64_t)v->n);
	if (!rc && !strcmp(v->model, "llama"))
		rc = llm_gguf_set_arr(w, "tokenizer.ggml.scores", LLM_GGUF_F32, v->score,
		                      (uint64_t)v->n);
	if (!rc)
		rc = llm_gguf_set_arr(w, "tokenizer.ggml.token_type", LLM_GGUF_I32, v->type,
		                      (uint64_t)v->n);
	if (!rc && v->n_merges)
		rc = llm_gguf_set_arr_str(w, "tokenizer.ggml.merges",
		                          (const char *const *)v->merges, NULL,
		                          (uint64_t)v->n_merges);
	static const char *const id_keys[] = {
		"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
	};
	const int64_t ids[] = { v->bos, v->eos, v->unk, v->pad };
	for (int i = 0; !rc && i < 4; i++)
		if (ids[i] >= 0)
			rc = llm_gguf_set_u32(w, id_keys[i], (uint32_t)ids[i]);
	if (!rc && v->add_bos >= 0)
		rc = llm_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
	if (!rc && v->add_eos >= 0)
		rc = llm_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos);
	if (!rc && v->add_space_prefix >= 0 && !strcmp(v->model, "llama"))
		rc = llm_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix",
		                       v->add_space_prefix);
	if (!rc && v->chat_template)
		rc = llm_gguf_set_str(w, "tokenizer.chat_template", v->chat_template);
	return rc;
}

/* ================================================================ shapes */

static const struct llm_model_shape shapes[] = {
	{ "stories15M", "llama", 288, 6, 6, 6, 768, 32000, 256, 0, 10000, 1e-5,
	  true, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
	{ "stories42M", "llama", 512, 8, 8, 8, 1376, 32000, 1024, 0, 10000, 1e-5,
	  true, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
	{ "stories110M", "llama", 768, 12, 12, 12, 2048, 32000, 1024, 0, 10000, 1e-5,
	  true, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
	{ "SmolLM2-135M", "llama", 576, 30, 9, 3, 1536, 49152, 8192, 0, 100000, 1e-5,
	  true, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
	{ "TinyLlama-1.1B", "llama", 2048, 22, 32, 4, 5632, 32000, 2048, 0, 10000, 1e-5,
	  false, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
	{ "Llama-3.2-1B", "llama", 2048, 16, 32, 8, 8192, 128256, 131072, 0, 500000, 1e-5,
	  true, LLM_ROPE_SCALING_LLAMA3, 32, 8192, 1, 4 },
	{ "Llama-3-8B", "llama", 4096, 32, 32, 8, 14336, 128256, 8192, 0, 500000, 1e-5,
	  false, LLM_ROPE_SCALING_NONE, 0, 0, 0, 0 },
};

int llm_model_shape_count(void)
{
	return (int)(sizeof(shapes) / sizeof(shapes[0]));
}

const struct llm_model_shape *llm_model_shape_get(int i)
{
	return i >= 0 && i < llm_model_shape_count() ? &shapes[i] : NULL;
}

static int64_t shape_head_dim(const struct llm_model_shape *s)
{
	return s->head_dim ? s->head_dim : (s->n_head ? s->n_embd / s->n_head : 0);
}

int64_t llm_model_shape_params(const struct llm_model_shape *s)
{
	int64_t hd = shape_head_dim(s), q = s->n_head * hd, kv = s->n_head_kv * hd;
	int64_t layer = 2 * s->n_embd + s->n_embd * (2 * q + 2 * kv) + 3 * s->n_embd * s->n_ff;
	if (!strcmp(s->arch, "qwen2"))
		layer += q + 2 * kv;
	return s->n_vocab * s->n_embd * (s->tied ? 1 : 2) + s->n_embd + s->n_layer * layer;
}

/* Sanity of a shape, whatever its source; what names the source. */
static int shape_check(const struct llm_model_shape *s, const char *what)
{
	const struct { const char *name; int64_t v, max; } f[] = {
		{ "embedding length", s->n_embd, 1 << 20 },
		{ "block count", s->n_layer, 1 << 12 },
		{ "head count", s->n_head, 1 << 12 },
		{ "kv head count", s->n_head_kv, 1 << 12 },
		{ "feed-forward length", s->n_ff, 1 << 22 },
		{ "vocabulary size", s->n_vocab, 1 << 24 },
		{ "context length", s->n_ctx, (int64_t)1 << 31 },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (f[i].v <= 0 || f[i].v > f[i].max)
			return llm_error(LLM_EFORMAT, "%s: %s %" PRId64 " is out of range "
			                 "[1, %" PRId64 "]", what, f[i].name, f[i].v, f[i].max);
	if (s->head_dim < 0 || s->head_dim > 4096)
		return llm_error(LLM_EFORMAT, "%s: head_dim %" PRId64 " is out of range",
		                 what, s->head_dim);
	if (!s->head_dim && s->n_embd % s->n_head)
		return llm_error(LLM_EFORMAT, "%s: embedding length %" PRId64 " is not a "
		                 "multiple of the head count %" PRId64, what, s->n_embd,
		                 s->n_head);
	if (s->n_head % s->n_head_kv)
		return llm_error(LLM_EFORMAT, "%s: head count %" PRId64 " is not a "
		                 "multiple of the kv head count %" PRId64, what, s->n_head,
		                 s->n_head_kv);
	if (shape_head_dim(s) % 2)
		return llm_error(LLM_EFORMAT, "%s: head size %" PRId64 " is odd (RoPE "
		                 "rotates pairs)", what, shape_head_dim(s));
	if (!(s->rope_theta > 0) || !(s->rms_eps > 0) || !isfinite(s->rope_theta))
		return llm_error(LLM_EFORMAT, "%s: rope theta and rms epsilon must be "
		                 "positive", what);
	if (s->rope_scaling != LLM_ROPE_SCALING_NONE && !(s->rope_factor > 0))
		return llm_error(LLM_EFORMAT, "%s: rope scaling factor must be positive",
		                 what);
	if (strcmp(s->arch, "llama") && strcmp(s->arch, "qwen2"))
		return llm_error(LLM_EUNSUPPORTED, "%s: architecture %s is not supported",
		                 what, s->arch);
	return 0;
}

int llm_model_shape_parse(const char *spec, struct llm_model_shape *out)
{
	const char *colon = strchr(spec, ':');
	size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
	const struct llm_model_shape *base = NULL;
	bool custom = nlen == 6 && !strncmp(spec, "custom", 6);

	for (int i = 0; i < llm_model_shape_count(); i++)
		if (strlen(shapes[i].name) == nlen && !strncasecmp(shapes[i].name, spec, nlen))
			base = &shapes[i];
	if (custom)
		base = &shapes[0];
	if (!base)
		return llm_error(LLM_EINVAL, "unknown model shape \"%.*s\" (try --dummy list)",
		                 (int)nlen, spec);
	*out = *base;
	if (custom)
		snprintf(out->name, sizeof(out->name), "custom");
	if (colon) {
		char *list = strdup(colon + 1), *save = NULL;
		int rc = 0;
		if (!list)
			return llm_error(LLM_ENOMEM, "out of memory");
		for (char *kv = strtok_r(list, ",", &save); kv && !rc;
		     kv = strtok_r(NULL, ",", &save)) {
			char *eq = strchr(kv, '=');
			if (!eq) {
				rc = llm_error(LLM_EINVAL, "model shape: \"%s\" is not key=value", kv);
				break;
			}
			*eq = 0;
			const char *k = kv, *val = eq + 1;
			struct { const char *key; int64_t *dst; int64_t min, max; } ints[] = {
				{ "dim", &out->n_embd, 1, 1 << 20 },
				{ "layers", &out->n_layer, 1, 1 << 12 },
				{ "heads", &out->n_head, 1, 1 << 12 },
				{ "kv_heads", &out->n_head_kv, 1, 1 << 12 },
				{ "ffn", &out->n_ff, 1, 1 << 22 },
				{ "vocab", &out->n_vocab, 1, 1 << 24 },
				{ "ctx", &out->n_ctx, 1, (int64_t)1 << 31 },
				{ "head_dim", &out->head_dim, 0, 4096 },
			};
			bool done = false;
			for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]) && !done; i++) {
				if (strcmp(k, ints[i].key))
					continue;
				rc = llm_parse_i64(k, val, ints[i].min, ints[i].max, ints[i].dst);
				done = true;
			}
			if (done)
				continue;
			if (!strcmp(k, "theta")) {
				rc = llm_parse_double(k, val, 1e-3, 1e12, &out->rope_theta);
			} else if (!strcmp(k, "eps")) {
				rc = llm_parse_double(k, val, 1e-12, 1, &out->rms_eps);
			} else if (!strcmp(k, "tied")) {
				int64_t t;
				rc = llm_parse_i64(k, val, 0, 1, &t);
				out->tied = t;
			} else if (!strcmp(k, "arch")) {
				if (strcmp(val, "llama") && strcmp(val, "qwen2"))
					rc = llm_error(LLM_EINVAL, "model shape: arch must be llama or "
					               "qwen2, not \"%s\"", val);
				else
					snprintf(out->arch, sizeof(out->arch), "%s", val);
			} else if (!strcmp(k, "llama3_factor")) {
				rc = llm_parse_double(k, val, 0, 1e6, &out->rope_factor);
				out->rope_scaling = out->rope_factor > 0 ? LLM_ROPE_SCALING_LLAMA3
				                                         : LLM_ROPE_SCALING_NONE;
				if (!out->rope_orig_ctx) {
					out->rope_orig_ctx = 8192;
					out->rope_low_freq = 1;
					out->rope_high_freq = 4;
				}
			} else {
				rc = llm_error(LLM_EINVAL, "model shape: unknown key \"%s\"", k);
			}
		}
		free(list);
		if (rc)
			return rc;
	}
	return shape_check(out, "model shape");
}

void llm_rope_llama3_factors(float *out, int64_t n_rot, double theta,
                             double factor, double low_freq,
                             double high_freq, int64_t orig_ctx)
{
	/* in float32, as the reference computes it with torch */
	const float pi2 = (float)(2 * M_PI);
	float low_wl = (float)orig_ctx / (float)low_freq;
	float high_wl = (float)orig_ctx / (float)high_freq;
	for (int64_t i = 0; i < n_rot / 2; i++) {
		float freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)n_rot);
		float wl = pi2 / freq;
		if (wl < high_wl) {
			out[i] = 1.0f;
		} else if (wl > low_wl) {
			out[i] = (float)factor;
		} else {
			float smooth = ((float)orig_ctx / wl - (float)low_freq) /
			               (float)(high_freq - low_freq);
			out[i] = 1.0f / ((1.0f - smooth) / (float)factor + smooth);
		}
	}
}

static int shape_to_gguf(struct llm_gguf_writer *w, const struct llm_model_shape *s,
                         int file_type)
{
	char key[96];
	const char *a = s->arch;
	int rc = 0;
#define U32(suffix, v) do { if (!rc) { snprintf(key, sizeof(key), "%s." suffix, a); \
	rc = llm_gguf_set_u32(w, key, (uint32_t)(v)); } } while (0)
#define F32(suffix, v) do { if (!rc) { snprintf(key, sizeof(key), "%s." suffix, a); \
	rc = llm_gguf_set_f32(w, key, (float)(v)); } } while (0)
	rc = llm_gguf_set_str(w, "general.architecture", a);
	if (!rc)
		rc = llm_gguf_set_str(w, "general.name", s->name);
	U32("block_count", s->n_layer);
	U32("context_length", s->n_ctx);
	U32("embedding_length", s->n_embd);
	U32("feed_forward_length", s->n_ff);
	U32("attention.head_count", s->n_head);
	U32("attention.head_count_kv", s->n_head_kv);
	F32("rope.freq_base", s->rope_theta);
	F32("attention.layer_norm_rms_epsilon", s->rms_eps);
	if (s->head_dim) {
		U32("attention.key_length", s->head_dim);
		U32("attention.value_length", s->head_dim);
	}
	if (!rc)
		rc = llm_gguf_set_u32(w, "general.file_type", (uint32_t)file_type);
	U32("vocab_size", s->n_vocab);
	U32("rope.dimension_count", shape_head_dim(s));
	if (s->rope_scaling == LLM_ROPE_SCALING_LINEAR ||
	    s->rope_scaling == LLM_ROPE_SCALING_YARN) {
		if (!rc) {
			snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
			rc = llm_gguf_set_str(w, key, s->rope_scaling == LLM_ROPE_SCALING_YARN
			                              ? "yarn" : "linear");
		}
		F32("rope.scaling.factor", s->rope_factor);
		if (s->rope_scaling == LLM_ROPE_SCALING_YARN)
			U32("rope.scaling.original_context_length", s->rope_orig_ctx);
	}
#undef U32
#undef F32
	return rc;
}

/* ================================================================ tensors */

enum src_kind { SRC_DATA, SRC_Q8, SRC_RANDOM, SRC_CONST };

/* Where one output tensor's rows come from. */
struct cv_src {
	struct llm_convert *cv;
	enum src_kind kind;
	enum llm_dtype dtype;     /* output */
	int64_t rows, cols;       /* output rows of ne[0] elements */
	size_t nbytes;
	/* SRC_DATA: rows of stype; with perm_heads, rows are reordered from
	 * rotate-half to adjacent pairs within each of perm_heads heads. */
	enum llm_dtype stype;
	const void *data;
	int64_t perm_heads;
	/* SRC_Q8: llama2.c v2 int8 groups */
	const int8_t *q;
	const float *qs;
	int64_t group;
	/* SRC_RANDOM: std and seed; SRC_CONST: value */
	float value;
	uint64_t seed;
	float *owned;             /* data we allocated (rope_freqs) */
};

struct llm_convert {
	struct llm_gguf_writer *w;
	struct llm_convert_opts opts;
	struct cv_src **srcs;
	size_t n_srcs, cap_srcs;
	char **inputs;            /* files the output must not replace */
	size_t n_inputs;
	struct llm_safetensors **sts;
	size_t n_sts;
	struct llm_map map;        /* llama2.c checkpoint */
	uint64_t total, done;
};

void llm_convert_opts_init(struct llm_convert_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dtype = -1;
	o->n_threads = 1;
}

static int cv_new(struct llm_convert **out, const struct llm_convert_opts *o)
{
	struct llm_convert *c = calloc(1, sizeof(*c));
	if (!c || !(c->w = llm_gguf_writer_new())) {
		free(c);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	if (o)
		c->opts = *o;
	else
		llm_convert_opts_init(&c->opts);
	if (c->opts.n_threads < 1)
		c->opts.n_threads = 1;
	*out = c;
	return 0;
}

void llm_convert_free(struct llm_convert *c)
{
	if (!c)
		return;
	llm_gguf_writer_free(c->w);
	for (size_t i = 0; i < c->n_srcs; i++) {
		free(c->srcs[i]->owned);
		free(c->srcs[i]);
	}
	free(c->srcs);
	for (size_t i = 0; i < c->n_inputs; i++)
		free(c->inputs[i]);
	free(c->inputs);
	for (size_t i = 0; i < c->n_sts; i++)
		llm_safetensors_free(c->sts[i]);
	free(c->sts);
	llm_unmap(&c->map);
	free(c);
}

struct llm_gguf_writer *llm_convert_writer(struct llm_convert *c)
{
	return c->w;
}

uint64_t llm_convert_data_bytes(const struct llm_convert *c)
{
	return c->total;
}

static int cv_input(struct llm_convert *c, const char *path)
{
	char **n = realloc(c->inputs, (c->n_inputs + 1) * sizeof(*n));
	if (!n)
		return llm_error(LLM_ENOMEM, "out of memory");
	c->inputs = n;
	if (!(c->inputs[c->n_inputs] = strdup(path)))
		return llm_error(LLM_ENOMEM, "out of memory");
	c->n_inputs++;
	return 0;
}

/* 64-bit mixing (splitmix64's finalizer). */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h;
}

/* Produce output row r of s as floats. */
static void src_row(const struct cv_src *s, int64_t r, float *dst)
{
	int64_t n = s->cols;
	switch (s->kind) {
	case SRC_DATA: {
		int64_t sr = r;
		if (s->perm_heads) {
			/* HF rotate-half -> GGUF adjacent pairs: within a head of hd
			 * rows, output row 2j+i is input row i*hd/2 + j. */
			int64_t hd = s->rows / s->perm_heads, k = r % hd;
			sr = r - k + (k % 2) * (hd / 2) + k / 2;
		}
		const struct llm_dtype_traits *tr = llm_dtype_traits(s->stype);
		tr->to_float((const char *)s->data + (size_t)sr * llm_row_size(s->stype, n),
		             dst, n);
		break;
	}
	case SRC_Q8: {
		int64_t e0 = r * n;
		for (int64_t i = 0; i < n; i++)
			dst[i] = (float)s->q[e0 + i] * s->qs[(e0 + i) / s->group];
		break;
	}
	case SRC_RANDOM: {
		/* Irwin-Hall: the sum of 4 uniform 16-bit draws, centred and
		 * scaled to unit variance, is near enough to normal, and cheap.
		 * Each row has its own stream, so rows can be made in parallel. */
		uint64_t st = mix64(s->seed + (uint64_t)r * 0x9e3779b97f4a7c15ull);
		const float scale = s->value * 1.7320508f / 65536.0f;
		for (int64_t i = 0; i < n; i++) {
			st += 0x9e3779b97f4a7c15ull;
			uint64_t x = mix64(st);
			int64_t sum = (int64_t)(x & 0xffff) + (int64_t)((x >> 16) & 0xffff) +
			              (int64_t)((x >> 32) & 0xffff) + (int64_t)(x >> 48);
			dst[i] = (float)(sum - 131070) * scale;
		}
		break;
	}
	case SRC_CONST:
		for (int64_t i = 0; i < n; i++)
			dst[i] = s->value;
		break;
	}
}

struct fill_job {
	const struct cv_src *s;
	unsigned char *dst;
	int64_t r0, r1;
	int rc;
};

static void *fill_rows(void *arg)
{
	struct fill_job *j = arg;
	const struct cv_src *s = j->s;
	size_t drow = llm_row_size(s->dtype, s->cols);
	float *tmp = malloc((size_t)s->cols * sizeof(float));
	if (!tmp) {
		j->rc = LLM_ENOMEM;
		return NULL;
	}
	llm_from_float_fn from = llm_dtype_traits(s->dtype)->from_float;
	for (int64_t r = j->r0; r < j->r1; r++) {
		src_row(s, r, tmp);
		from(tmp, j->dst + (size_t)r * drow, s->cols);
	}
	free(tmp);
	return NULL;
}

static int src_fill(void *user, const char *name, void *dst, size_t nbytes)
{
	struct cv_src *s = user;
	struct llm_convert *c = s->cv;
	LLM_ASSERT(nbytes == s->nbytes);
	if (s->kind == SRC_DATA && s->stype == s->dtype && !s->perm_heads) {
		memcpy(dst, s->data, nbytes);
	} else {
		int nt = c->opts.n_threads;
		if (nt > s->rows)
			nt = (int)s->rows;
		if ((uint64_t)s->rows * (uint64_t)s->cols < (1u << 16))
			nt = 1;
		struct fill_job jobs[64];
		pthread_t th[64];
		bool started[64] = { false };
		if (nt > 64)
			nt = 64;
		for (int t = 0; t < nt; t++) {
			jobs[t] = (struct fill_job){ s, dst, s->rows * t / nt,
			                             s->rows * (t + 1) / nt, 0 };
			if (t > 0)
				started[t] = !pthread_create(&th[t], NULL, fill_rows, &jobs[t]);
			if (t > 0 && !started[t])
				fill_rows(&jobs[t]);   /* no thread: do it here */
		}
		fill_rows(&jobs[0]);
		int rc = jobs[0].rc;
		for (int t = 1; t < nt; t++) {
			if (started[t])
				pthread_join(th[t], NULL);
			if (jobs[t].rc)
				rc = jobs[t].rc;
		}
		if (rc)
			return llm_error(rc, "%s: out of memory", name);
	}
	c->done += nbytes;
	if (c->opts.progress)
		c->opts.progress(c->opts.progress_user, name, c->done, c->total);
	return 0;
}

/* Describe output tensor name (GGUF ne order) read from *tmpl. */
static int cv_add(struct llm_convert *c, const char *name, enum llm_dtype dtype,
                  int n_dims, const int64_t *ne, const struct cv_src *tmpl)
{
	if (c->n_srcs == c->cap_srcs) {
		size_t nc = c->cap_srcs ? 2 * c->cap_srcs : 64;
		struct cv_src **n = realloc(c->srcs, nc * sizeof(*n));
		if (!n)
			return llm_error(LLM_ENOMEM, "out of memory");
		c->srcs = n;
		c->cap_srcs = nc;
	}
	struct cv_src *s = malloc(sizeof(*s));
	if (!s)
		return llm_error(LLM_ENOMEM, "out of memory");
	*s = *tmpl;
	s->cv = c;
	s->dtype = dtype;
	s->cols = ne[0];
	s->rows = 1;
	for (int d = 1; d < n_dims; d++)
		s->rows *= ne[d];
	s->nbytes = (size_t)s->rows * llm_row_size(dtype, s->cols);
	c->srcs[c->n_srcs++] = s;
	int rc = llm_gguf_add_tensor_fill(c->w, name, dtype, n_dims, ne, src_fill, s);
	if (!rc)
		c->total += s->nbytes;
	return rc;
}

static int file_type_of(enum llm_dtype t)
{
	return t == LLM_F16 ? FTYPE_MOSTLY_F16 : t == LLM_BF16 ? FTYPE_MOSTLY_BF16
	                                                       : FTYPE_ALL_F32;
}

static int add_rope_freqs(struct llm_convert *c, const struct llm_model_shape *s)
{
	if (s->rope_scaling != LLM_ROPE_SCALING_LLAMA3)
		return 0;
	int64_t n = shape_head_dim(s) / 2;
	struct cv_src t = { .kind = SRC_DATA, .stype = LLM_F32 };
	if (!(t.owned = malloc((size_t)n * sizeof(float))))
		return llm_error(LLM_ENOMEM, "out of memory");
	llm_rope_llama3_factors(t.owned, 2 * n, s->rope_theta, s->rope_factor,
	                        s->rope_low_freq, s->rope_high_freq, s->rope_orig_ctx);
	t.data = t.owned;
	int rc = cv_add(c, "rope_freqs.weight", LLM_F32, 1, &n, &t);
	if (rc)
		free(t.owned);
	return rc;
}

/* The tensors of one block, in GGUF's names. */
enum {
	W_ATTN_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_GATE, W_DOWN, W_UP,
	W_Q_BIAS, W_K_BIAS, W_V_BIAS, W_COUNT
};

static const char *const blk_names[W_COUNT] = {
	"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
	"attn_output.weight", "ffn_norm.weight", "ffn_gate.weight",
	"ffn_down.weight", "ffn_up.weight", "attn_q.bias", "attn_k.bias",
	"attn_v.bias",
};

/* GGUF shape (ne) of block tensor k; returns n_dims, 0 if the arch lacks it. */
static int blk_shape(const struct llm_model_shape *s, int k, int64_t ne[2])
{
	int64_t hd = shape_head_dim(s), q = s->n_head * hd, kv = s->n_head_kv * hd;
	bool bias = !strcmp(s->arch, "qwen2");
	switch (k) {
	case W_ATTN_NORM: case W_FFN_NORM: ne[0] = s->n_embd; return 1;
	case W_Q: ne[0] = s->n_embd; ne[1] = q; return 2;
	case W_K: case W_V: ne[0] = s->n_embd; ne[1] = kv; return 2;
	case W_O: ne[0] = q; ne[1] = s->n_embd; return 2;
	case W_GATE: case W_UP: ne[0] = s->n_embd; ne[1] = s->n_ff; return 2;
	case W_DOWN: ne[0] = s->n_ff; ne[1] = s->n_embd; return 2;
	case W_Q_BIAS: ne[0] = q; return bias;
	case W_K_BIAS: case W_V_BIAS: ne[0] = kv; return bias;
	}
	return 0;
}

/* ================================================================ llama2.c */

struct l2c_header {
	int32_t dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len;
	int version;              /* 0 legacy, 1 f32, 2 int8 */
	bool shared;
	int32_t group;
	size_t data_off;
};

#define L2C_MAGIC 0x616b3432u

static int l2c_header(const char *path, const struct llm_map *m, struct l2c_header *h)
{
	const unsigned char *p = m->data;
	uint32_t magic = 0;
	memset(h, 0, sizeof(*h));
	if (m->size >= 4)
		memcpy(&magic, p, 4);
	if (magic == L2C_MAGIC) {
		if (m->size < 256)
			return llm_error(LLM_EFORMAT, "%s: truncated header (%zu of 256 bytes)",
			                 path, m->size);
		int32_t v;
		memcpy(&v, p + 4, 4);
		if (v != 1 && v != 2)
			return llm_error(LLM_EUNSUPPORTED, "%s: llama2.c checkpoint version %d "
			                 "is not supported (0, 1, 2 are)", path, v);
		h->version = v;
		memcpy(&h->dim, p + 8, 28);
		h->shared = p[36] != 0;
		if (v == 2)
			memcpy(&h->group, p + 37, 4);
		h->data_off = 256;
		if (h->vocab <= 0)
			return llm_error(LLM_EFORMAT, "%s: vocab_size %d must be positive",
			                 path, h->vocab);
	} else {
		if (m->size < 28)
			return llm_error(LLM_EFORMAT, "%s: truncated header (%zu of 28 bytes)",
			                 path, m->size);
		memcpy(&h->dim, p, 28);
		h->shared = h->vocab > 0;
		if (h->vocab < 0 && h->vocab != INT32_MIN)
			h->vocab = -h->vocab;
		h->data_off = 28;
	}
	const struct { const char *name; int32_t v, max; } f[] = {
		{ "dim", h->dim, 1 << 16 }, { "hidden_dim", h->hidden, 1 << 20 },
		{ "n_layers", h->n_layers, 1 << 10 }, { "n_heads", h->n_heads, 1 << 10 },
		{ "n_kv_heads", h->n_kv, 1 << 10 }, { "vocab_size", h->vocab, 1 << 22 },
		{ "seq_len", h->seq_len, 1 << 24 },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (f[i].v <= 0 || f[i].v > f[i].max)
			return llm_error(LLM_EFORMAT, "%s: header: %s = %d is out of range "
			                 "[1, %d] (not a llama2.c checkpoint?)", path, f[i].name,
			                 f[i].v, f[i].max);
	if (h->dim % h->n_heads || h->n_heads % h->n_kv || (h->dim / h->n_heads) % 2)
		return llm_error(LLM_EFORMAT, "%s: header: dim %d, n_heads %d, n_kv_heads "
		                 "%d do not divide into even heads", path, h->dim,
		                 h->n_heads, h->n_kv);
	if (h->version == 2 && (h->group <= 0 || h->group > (1 << 20)))
		return llm_error(LLM_EFORMAT, "%s: header: group size %d is out of range",
		                 path, h->group);
	return 0;
}

/* The source of a llama2.c weight starting elem0 elements into slot:
 * f32 (v0, v1, and v2's norms) or int8 groups with their scales (v2). */
static void l2c_src(struct cv_src *t, const struct l2c_header *h,
                    const unsigned char *base, const uint64_t *off,
                    const uint64_t *sc, int slot, int64_t elem0, bool f32)
{
	memset(t, 0, sizeof(*t));
	if (h->version == 2 && !f32) {
		t->kind = SRC_Q8;
		t->q = (const int8_t *)(base + off[slot]) + elem0;
		t->qs = (const float *)(const void *)(base + sc[slot]) + elem0 / h->group;
		t->group = h->group;
	} else {
		t->kind = SRC_DATA;
		t->stype = LLM_F32;
		t->data = base + off[slot] + (uint64_t)elem0 * 4;
	}
}

int llm_convert_open_llama2c(struct llm_convert **out, const char *model,
                             const struct llm_convert_opts *o)
{
	struct llm_convert *c = NULL;
	struct cv_vocab v;
	struct l2c_header h;
	int rc;

	*out = NULL;
	vocab_init(&v);
	if ((rc = cv_new(&c, o)))
		return rc;
	if (!c->opts.tok_llama2c) {
		rc = llm_error(LLM_EINVAL, "a llama2.c model needs its tokenizer.bin");
		goto cleanup;
	}
	if ((rc = cv_input(c, model)) || (rc = cv_input(c, c->opts.tok_llama2c)))
		goto cleanup;
	if ((rc = llm_map_file(&c->map, model, 0)) || (rc = l2c_header(model, &c->map, &h)))
		goto cleanup;
	int dt = c->opts.dtype < 0 ? LLM_F32 : c->opts.dtype;

	/* hyper-parameters */
	struct llm_model_shape s = { .arch = "llama" };
	s.n_embd = h.dim;
	s.n_ff = h.hidden;
	s.n_layer = h.n_layers;
	s.n_head = h.n_heads;
	s.n_head_kv = h.n_kv;
	s.n_vocab = h.vocab;
	s.n_ctx = c->opts.n_ctx ? c->opts.n_ctx : h.seq_len;
	s.rope_theta = 10000;
	s.rms_eps = 1e-5;
	s.tied = h.shared;
	if (c->opts.name)
		snprintf(s.name, sizeof(s.name), "%s", c->opts.name);
	else
		stem_of(model, s.name, sizeof(s.name));
	if ((rc = shape_check(&s, model)))
		goto cleanup;

	/* layout: element offsets of each weight, in file order */
	int64_t D = h.dim, F = h.hidden, L = h.n_layers, V = h.vocab;
	int64_t hs = D / h.n_heads, KV = hs * h.n_kv;
	enum { T_EMB, T_RMS_ATT, T_WQ, T_WK, T_WV, T_WO, T_RMS_FFN, T_W1, T_W2, T_W3,
	       T_RMS_FINAL, T_FREQ, T_WCLS, T_N };
	const int64_t numel[T_N] = {
		V * D, L * D, L * D * D, L * KV * D, L * KV * D, L * D * D, L * D,
		L * F * D, L * D * F, L * F * D, D, h.version ? 0 : (int64_t)h.seq_len * hs,
		h.shared ? 0 : V * D,
	};
	static const int order_v0[] = { T_EMB, T_RMS_ATT, T_WQ, T_WK, T_WV, T_WO,
	                                T_RMS_FFN, T_W1, T_W2, T_W3, T_RMS_FINAL,
	                                T_FREQ, T_WCLS };
	static const int order_v1[] = { T_RMS_ATT, T_RMS_FFN, T_RMS_FINAL, T_EMB,
	                                T_WQ, T_WK, T_WV, T_WO, T_W1, T_W2, T_W3,
	                                T_WCLS, T_FREQ };
	const int *order = h.version ? order_v1 : order_v0;
	uint64_t off[T_N];       /* byte offsets */
	uint64_t pos = h.data_off, expect;
	if (h.version < 2) {
		for (int i = 0; i < T_N; i++) {
			off[order[i]] = pos;
			pos += (uint64_t)numel[order[i]] * 4;
		}
		expect = pos;
	} else {
		/* norms in f32, then int8 of every matrix, then all their scales */
		uint64_t nq = 0;
		for (int i = 0; i < 3; i++) {
			off[order[i]] = pos;
			pos += (uint64_t)numel[order[i]] * 4;
		}
		for (int i = 3; i < T_N; i++) {
			if (numel[order[i]] % h.group) {
				rc = llm_error(LLM_EFORMAT, "%s: a weight of %" PRId64 " elements is "
				               "not a multiple of the group size %d", model,
				               numel[order[i]], h.group);
				goto cleanup;
			}
			off[order[i]] = pos;
			pos += (uint64_t)numel[order[i]];
			nq += (uint64_t)numel[order[i]];
		}
		expect = pos + nq / (uint64_t)h.group * 4;
	}
	if (c->map.size != expect) {
		rc = llm_error(LLM_EFORMAT, "%s: %s: the header implies %" PRIu64 " bytes, "
		               "the file has %zu", model,
		               c->map.size < expect ? "truncated" : "trailing data",
		               expect, c->map.size);
		goto cleanup;
	}
	if ((rc = vocab_from_llama2c(&v, c->opts.tok_llama2c, V)))
		goto cleanup;
	if ((rc = shape_to_gguf(c->w, &s, file_type_of(dt))) ||
	    (rc = vocab_to_gguf(c->w, &v)))
		goto cleanup;

	/* v2: each matrix's scales follow all the int8 data, in the same order */
	uint64_t sc[T_N] = { 0 };
	if (h.version == 2) {
		uint64_t p2 = pos;
		for (int i = 3; i < T_N; i++) {
			sc[order[i]] = p2;
			p2 += (uint64_t)numel[order[i]] / (uint64_t)h.group * 4;
		}
	}
	static const struct { int slot, w; } blk[] = {
		{ T_RMS_ATT, W_ATTN_NORM }, { T_WQ, W_Q }, { T_WK, W_K }, { T_WV, W_V },
		{ T_WO, W_O }, { T_RMS_FFN, W_FFN_NORM }, { T_W1, W_GATE },
		{ T_W2, W_DOWN }, { T_W3, W_UP },
	};
	struct cv_src t;
	int64_t ne[2] = { D, V };
	l2c_src(&t, &h, c->map.data, off, sc, T_EMB, 0, false);
	if ((rc = cv_add(c, "token_embd.weight", dt, 2, ne, &t)))
		goto cleanup;
	for (int64_t l = 0; l < L; l++) {
		for (size_t k = 0; k < sizeof(blk) / sizeof(blk[0]); k++) {
			int nd = blk_shape(&s, blk[k].w, ne);
			int64_t per = ne[0] * (nd > 1 ? ne[1] : 1);
			char name[64];
			snprintf(name, sizeof(name), "blk.%" PRId64 ".%s", l, blk_names[blk[k].w]);
			if (h.version == 2 && nd > 1 && per % h.group) {
				rc = llm_error(LLM_EFORMAT, "%s: %s: %" PRId64 " elements are not "
				               "a multiple of the group size %d", model, name, per,
				               h.group);
				goto cleanup;
			}
			l2c_src(&t, &h, c->map.data, off, sc, blk[k].slot, l * per, nd == 1);
			if ((rc = cv_add(c, name, nd == 1 ? LLM_F32 : dt, nd, ne, &t)))
				goto cleanup;
		}
	}
	ne[0] = D;
	l2c_src(&t, &h, c->map.data, off, sc, T_RMS_FINAL, 0, true);
	if ((rc = cv_add(c, "output_norm.weight", LLM_F32, 1, ne, &t)))
		goto cleanup;
	if (!h.shared) {
		ne[1] = V;
		l2c_src(&t, &h, c->map.data, off, sc, T_WCLS, 0, false);
		if ((rc = cv_add(c, "output.weight", dt, 2, ne, &t)))
			goto cleanup;
	}
	*out = c;
	c = NULL;
cleanup:
	vocab_free(&v);
	llm_convert_free(c);
	return rc;
}

/* ================================================================ HF */

static int cfg_int(json_t *cfg, const char *path, const char *key, bool required,
                   int64_t def, int64_t *out)
{
	json_t *e = json_object_get(cfg, key);
	if (!e || json_is_null(e)) {
		if (required)
			return llm_error(LLM_EFORMAT, "%s: missing field %s", path, key);
		*out = def;
		return 0;
	}
	if (!json_is_integer(e) || json_integer_value(e) <= 0)
		return llm_error(LLM_EFORMAT, "%s: %s must be a positive integer", path, key);
	*out = json_integer_value(e);
	return 0;
}

static int cfg_num(json_t *obj, const char *path, const char *key, double def,
                   double *out)
{
	json_t *e = json_object_get(obj, key);
	if (!e || json_is_null(e)) {
		*out = def;
		return 0;
	}
	if (!json_is_number(e))
		return llm_error(LLM_EFORMAT, "%s: %s must be a number", path, key);
	*out = json_number_value(e);
	return 0;
}

/* config.json -> shape.  Qwen2 gets q/k/v biases and no Q/K permutation. */
static int hf_config(json_t *cfg, const char *path, struct llm_model_shape *s)
{
	int rc;
	json_t *archs = json_object_get(cfg, "architectures");
	const char *arch = json_string_value(json_array_get(archs, 0));
	if (!arch)
		return llm_error(LLM_EFORMAT, "%s: missing field architectures", path);
	if (!strcmp(arch, "LlamaForCausalLM") || !strcmp(arch, "MistralForCausalLM"))
		strcpy(s->arch, "llama");
	else if (!strcmp(arch, "Qwen2ForCausalLM"))
		strcpy(s->arch, "qwen2");
	else
		return llm_error(LLM_EUNSUPPORTED, "%s: architecture %s is not supported "
		                 "(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM "
		                 "are)", path, arch);
	if ((rc = cfg_int(cfg, path, "hidden_size", true, 0, &s->n_embd)) ||
	    (rc = cfg_int(cfg, path, "intermediate_size", true, 0, &s->n_ff)) ||
	    (rc = cfg_int(cfg, path, "num_hidden_layers", true, 0, &s->n_layer)) ||
	    (rc = cfg_int(cfg, path, "num_attention_heads", true, 0, &s->n_head)) ||
	    (rc = cfg_int(cfg, path, "vocab_size", true, 0, &s->n_vocab)) ||
	    (rc = cfg_int(cfg, path, "max_position_embeddings", true, 0, &s->n_ctx)) ||
	    (rc = cfg_int(cfg, path, "num_key_value_heads", false, s->n_head,
	                  &s->n_head_kv)) ||
	    (rc = cfg_int(cfg, path, "head_dim", false, 0, &s->head_dim)) ||
	    (rc = cfg_num(cfg, path, "rms_norm_eps", 1e-6, &s->rms_eps)))
		return rc;
	json_t *tie = json_object_get(cfg, "tie_word_embeddings");
	if (tie && !json_is_boolean(tie))
		return llm_error(LLM_EFORMAT, "%s: tie_word_embeddings must be true or false",
		                 path);
	s->tied = json_is_true(tie);
	/* head_dim equal to n_embd / n_head says nothing new */
	if (s->head_dim && s->head_dim * s->n_head == s->n_embd)
		s->head_dim = 0;

	/* RoPE: rope_theta + rope_scaling, or (newer) rope_parameters */
	json_t *rp = json_object_get(cfg, "rope_parameters");
	json_t *rs = json_is_object(rp) ? rp : json_object_get(cfg, "rope_scaling");
	double theta_top;
	if ((rc = cfg_num(cfg, path, "rope_theta", 10000, &theta_top)) ||
	    (rc = cfg_num(json_is_object(rp) ? rp : cfg, path, "rope_theta", theta_top,
	                  &s->rope_theta)))
		return rc;
	s->rope_scaling = LLM_ROPE_SCALING_NONE;
	if (json_is_object(rs)) {
		const char *type = json_string_value(json_object_get(rs, "rope_type"));
		if (!type)
			type = json_string_value(json_object_get(rs, "type"));
		if (!type || !strcmp(type, "default"))
			return 0;
		int64_t orig_top;
		if ((rc = cfg_num(rs, path, "factor", 0, &s->rope_factor)) ||
		    (rc = cfg_int(cfg, path, "original_max_position_embeddings", false, 8192,
		                  &orig_top)))
			return rc;
		double orig;
		if ((rc = cfg_num(rs, path, "original_max_position_embeddings",
		                  (double)orig_top, &orig)))
			return rc;
		s->rope_orig_ctx = (int64_t)orig;
		if (!strcmp(type, "linear")) {
			s->rope_scaling = LLM_ROPE_SCALING_LINEAR;
		} else if (!strcmp(type, "yarn")) {
			if (!json_object_get(rs, "original_max_position_embeddings"))
				return llm_error(LLM_EFORMAT, "%s: rope_scaling: yarn needs "
				                 "original_max_position_embeddings", path);
			s->rope_scaling = LLM_ROPE_SCALING_YARN;
		} else if (!strcmp(type, "llama3")) {
			s->rope_scaling = LLM_ROPE_SCALING_LLAMA3;
			if (!json_object_get(rs, "factor"))
				s->rope_factor = 8;
			if ((rc = cfg_num(rs, path, "low_freq_factor", 1, &s->rope_low_freq)) ||
			    (rc = cfg_num(rs, path, "high_freq_factor", 4, &s->rope_high_freq)))
				return rc;
			if (!(s->rope_high_freq > s->rope_low_freq))
				return llm_error(LLM_EFORMAT, "%s: rope_scaling: high_freq_factor "
				                 "must exceed low_freq_factor", path);
		} else {
			return llm_error(LLM_EUNSUPPORTED, "%s: rope_scaling type \"%s\" is not "
			                 "supported (linear, yarn, llama3 are)", path, type);
		}
		if (!(s->rope_factor > 0))
			return llm_error(LLM_EFORMAT, "%s: rope_scaling: missing or bad factor",
			                 path);
	}
	return 0;
}

struct hf_tensor {
	const struct llm_safetensors_tensor *t;
	bool used;
};

/* Open the shards and list every tensor. */
static int hf_open_weights(struct llm_convert *c, const char *dir)
{
	char *single = path_join(dir, "model.safetensors");
	char *index = path_join(dir, "model.safetensors.index.json");
	json_t *idx = NULL;
	int rc = 0;
	const char **files = NULL;
	size_t n_files = 0;

	if (!single || !index) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if (is_file(index)) {
		if (!(idx = load_json(index))) {
			rc = LLM_EFORMAT;
			goto cleanup;
		}
		json_t *wm = json_object_get(idx, "weight_map");
		if (!json_is_object(wm)) {
			rc = llm_error(LLM_EFORMAT, "%s: no weight_map object", index);
			goto cleanup;
		}
		files = calloc(json_object_size(wm) + 1, sizeof(*files));
		if (!files) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto cleanup;
		}
		const char *k;
		json_t *val;
		json_object_foreach(wm, k, val) {
			const char *f = json_string_value(val);
			if (!f || strchr(f, '/')) {
				rc = llm_error(LLM_EFORMAT, "%s: weight_map[\"%s\"] is not a file "
				               "name in the directory", index, k);
				goto cleanup;
			}
			bool seen = false;
			for (size_t i = 0; i < n_files && !seen; i++)
				seen = !strcmp(files[i], f);
			if (!seen)
				files[n_files++] = f;
		}
		if ((rc = cv_input(c, index)))
			goto cleanup;
	} else if (is_file(single)) {
		files = calloc(1, sizeof(*files));
		if (!files) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto cleanup;
		}
		files[n_files++] = "model.safetensors";
	} else {
		rc = llm_error(LLM_ENOTFOUND, "%s: no model.safetensors or "
		               "model.safetensors.index.json", dir);
		goto cleanup;
	}
	if (!(c->sts = calloc(n_files, sizeof(*c->sts)))) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	for (size_t i = 0; i < n_files; i++) {
		char *p = path_join(dir, files[i]);
		if (!p) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto cleanup;
		}
		rc = llm_safetensors_open(&c->sts[c->n_sts], p);
		if (!rc) {
			c->n_sts++;
			rc = cv_input(c, p);
		}
		free(p);
		if (rc)
			goto cleanup;
	}
	if (idx) {
		/* every tensor the index names must be where it says */
		json_t *wm = json_object_get(idx, "weight_map");
		const char *k;
		json_t *val;
		json_object_foreach(wm, k, val) {
			const char *f = json_string_value(val);
			bool found = false;
			for (size_t i = 0; i < n_files && !found; i++)
				if (!strcmp(files[i], f))
					found = llm_safetensors_find(c->sts[i], k) != NULL;
			if (!found) {
				rc = llm_error(LLM_EFORMAT, "%s: tensor %s is not in %s", index, k, f);
				goto cleanup;
			}
		}
	}
cleanup:
	free(files);
	json_decref(idx);
	free(single);
	free(index);
	return rc;
}

static struct hf_tensor *hf_find(struct hf_tensor *all, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(all[i].t->name, name))
			return &all[i];
	return NULL;
}

/* Map one HF tensor to a GGUF tensor, checking its shape and dtype. */
static int hf_add(struct llm_convert *c, struct hf_tensor *all, size_t n,
                  const char *hf_name, const char *gguf_name, int n_dims,
                  const int64_t *ne, enum llm_dtype dt, int64_t perm_heads,
                  const char *dir)
{
	struct hf_tensor *h = hf_find(all, n, hf_name);
	if (!h)
		return llm_error(LLM_EFORMAT, "%s: tensor %s is missing", dir, hf_name);
	const struct llm_safetensors_tensor *t = h->t;
	h->used = true;
	bool ok = t->n_dims == n_dims;
	for (int d = 0; ok && d < n_dims; d++)
		ok = t->shape[d] == ne[n_dims - 1 - d];
	if (!ok) {
		char got[128] = "", want[128] = "";
		for (int d = 0; d < t->n_dims; d++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%" PRId64,
			         d ? ", " : "", t->shape[d]);
		for (int d = 0; d < n_dims; d++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%" PRId64,
			         d ? ", " : "", ne[n_dims - 1 - d]);
		return llm_error(LLM_EFORMAT, "%s: tensor %s has shape [%s], config.json "
		                 "implies [%s]", dir, hf_name, got, want);
	}
	if (t->type != LLM_F32 && t->type != LLM_F16 && t->type != LLM_BF16)
		return llm_error(LLM_EUNSUPPORTED, "%s: tensor %s: dtype %s cannot be "
		                 "converted (F32, F16, BF16 can)", dir, hf_name,
		                 llm_safetensors_dtype_name(t->type));
	struct cv_src s = { .kind = SRC_DATA, .stype = t->type, .data = t->data,
	                    .perm_heads = perm_heads };
	return cv_add(c, gguf_name, n_dims == 1 ? LLM_F32 : dt, n_dims, ne, &s);
}

int llm_convert_open_hf(struct llm_convert **out, const char *dir,
                        const struct llm_convert_opts *o)
{
	struct llm_convert *c = NULL;
	struct cv_vocab v;
	json_t *cfg = NULL;
	char *cfg_path = path_join(dir, "config.json");
	char *tok_path = path_join(dir, "tokenizer.json");
	struct hf_tensor *all = NULL;
	size_t n_all = 0;
	int rc;

	*out = NULL;
	vocab_init(&v);
	if (!cfg_path || !tok_path) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = cv_new(&c, o)))
		goto cleanup;
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		rc = llm_error(LLM_ENOTFOUND, "%s: %s", dir,
		               access(dir, F_OK) ? strerror(errno) : "not a directory");
		goto cleanup;
	}
	if (!(cfg = load_json(cfg_path))) {
		rc = llm_errmsg()[0] && is_file(cfg_path) ? LLM_EFORMAT : LLM_ENOTFOUND;
		goto cleanup;
	}
	if (!json_is_object(cfg)) {
		rc = llm_error(LLM_EFORMAT, "%s: not a JSON object", cfg_path);
		goto cleanup;
	}
	struct llm_model_shape s = { .name = "" };
	if ((rc = hf_config(cfg, cfg_path, &s)))
		goto cleanup;
	if (c->opts.n_ctx)
		s.n_ctx = c->opts.n_ctx;
	if (c->opts.name) {
		snprintf(s.name, sizeof(s.name), "%s", c->opts.name);
	} else {
		const char *nop = json_string_value(json_object_get(cfg, "_name_or_path"));
		const char *b = nop && *nop ? nop : dir;
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "%s", b);
		size_t l = strlen(tmp);
		while (l > 1 && tmp[l - 1] == '/')
			tmp[--l] = 0;
		const char *sl = strrchr(tmp, '/');
		snprintf(s.name, sizeof(s.name), "%s", sl ? sl + 1 : tmp);
	}
	if ((rc = shape_check(&s, cfg_path)))
		goto cleanup;
	if ((rc = cv_input(c, cfg_path)))
		goto cleanup;

	/* tokenizer */
	if (!is_file(tok_path)) {
		rc = llm_error(LLM_ENOTFOUND, "%s: no tokenizer.json (only tokenizer.json "
		               "tokenizers are supported)", dir);
		goto cleanup;
	}
	if ((rc = cv_input(c, tok_path)) ||
	    (rc = vocab_from_tokenizer_json(&v, tok_path, cfg)) ||
	    (rc = vocab_pad(&v, s.n_vocab, "[PAD", "]", tok_path)))
		goto cleanup;
	if (c->opts.pre)
		snprintf(v.pre, sizeof(v.pre), "%s", c->opts.pre);
	if (!v.pre[0]) {
		rc = llm_error(LLM_EUNSUPPORTED, "%s: pre-tokenizer not recognised (give "
		               "its llama.cpp name with --pre)", tok_path);
		goto cleanup;
	}

	/* weights */
	if ((rc = hf_open_weights(c, dir)))
		goto cleanup;
	for (size_t i = 0; i < c->n_sts; i++)
		n_all += (size_t)llm_safetensors_n_tensors(c->sts[i]);
	if (!(all = calloc(n_all ? n_all : 1, sizeof(*all)))) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto cleanup;
	}
	n_all = 0;
	for (size_t i = 0; i < c->n_sts; i++)
		for (int64_t j = 0; j < llm_safetensors_n_tensors(c->sts[i]); j++)
			all[n_all++].t = llm_safetensors_tensor(c->sts[i], j);
	struct hf_tensor *emb = hf_find(all, n_all, "model.embed_tokens.weight");
	int dt = c->opts.dtype;
	if (dt < 0)
		dt = emb && (emb->t->type == LLM_F16 || emb->t->type == LLM_BF16)
		     ? (int)emb->t->type : LLM_F32;
	if ((rc = shape_to_gguf(c->w, &s, file_type_of(dt))) ||
	    (rc = vocab_to_gguf(c->w, &v)))
		goto cleanup;

	int64_t ne[2] = { s.n_embd, s.n_vocab };
	if ((rc = hf_add(c, all, n_all, "model.embed_tokens.weight", "token_embd.weight",
	                 2, ne, dt, 0, dir)) ||
	    (rc = add_rope_freqs(c, &s)))
		goto cleanup;
	static const char *const hf_blk[W_COUNT] = {
		"input_layernorm.weight", "self_attn.q_proj.weight",
		"self_attn.k_proj.weight", "self_attn.v_proj.weight",
		"self_attn.o_proj.weight", "post_attention_layernorm.weight",
		"mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
		"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
	};
	bool permute = !strcmp(s.arch, "llama");
	for (int64_t l = 0; l < s.n_layer; l++) {
		for (int k = 0; k < W_COUNT; k++) {
			int nd = blk_shape(&s, k, ne);
			char hn[128], gn[64];
			snprintf(hn, sizeof(hn), "model.layers.%" PRId64 ".%s", l, hf_blk[k]);
			snprintf(gn, sizeof(gn), "blk.%" PRId64 ".%s", l, blk_names[k]);
			if (!nd) {
				/* Llama with q/k/v biases (attention_bias) is not handled */
				if (hf_find(all, n_all, hn)) {
					rc = llm_error(LLM_EUNSUPPORTED, "%s: tensor %s: attention "
					               "biases are not supported for %s", dir, hn, s.arch);
					goto cleanup;
				}
				continue;
			}
			int64_t perm = 0;
			if (permute && (k == W_Q || k == W_Q_BIAS))
				perm = s.n_head;
			if (permute && (k == W_K || k == W_K_BIAS))
				perm = s.n_head_kv;
			if ((rc = hf_add(c, all, n_all, hn, gn, nd, ne, dt, perm, dir)))
				goto cleanup;
		}
	}
	ne[0] = s.n_embd;
	if ((rc = hf_add(c, all, n_all, "model.norm.weight", "output_norm.weight", 1, ne,
	                 dt, 0, dir)))
		goto cleanup;
	struct hf_tensor *head = hf_find(all, n_all, "lm_head.weight");
	if (!s.tied) {
		ne[1] = s.n_vocab;
		if (!head) {
			rc = llm_error(LLM_EFORMAT, "%s: tensor lm_head.weight is missing and "
			               "tie_word_embeddings is false", dir);
			goto cleanup;
		}
		if ((rc = hf_add(c, all, n_all, "lm_head.weight", "output.weight", 2, ne, dt,
		                 0, dir)))
			goto cleanup;
	} else if (head) {
		head->used = true;   /* a saved copy of the tied embedding */
	}
	for (size_t i = 0; i < n_all; i++) {
		const char *nm = all[i].t->name;
		static const char inv_freq[] = "rotary_emb.inv_freq";   /* a buffer */
		size_t l = strlen(nm), k = sizeof(inv_freq) - 1;
		if (all[i].used || (l >= k && !strcmp(nm + l - k, inv_freq)))
			continue;
		rc = llm_error(LLM_EUNSUPPORTED, "%s: unexpected tensor %s (not part of a "
		               "%s model)", dir, nm, s.arch);
		goto cleanup;
	}
	*out = c;
	c = NULL;
cleanup:
	free(all);
	json_decref(cfg);
	vocab_free(&v);
	free(cfg_path);
	free(tok_path);
	llm_convert_free(c);
	return rc;
}

/* ================================================================ dummy */

int llm_convert_open_dummy(struct llm_convert **out, const char *spec,
                           const struct llm_convert_opts *o)
{
	struct llm_convert *c = NULL;
	struct llm_model_shape s;
	struct cv_vocab v;
	int rc;

	*out = NULL;
	vocab_init(&v);
	if ((rc = llm_model_shape_parse(spec, &s)))
		return rc;
	if ((rc = cv_new(&c, o)))
		return rc;
	const struct llm_convert_opts *op = &c->opts;
	int n_tok = !!op->tok_llama2c + !!op->tok_json + !!op->tok_gpt2;
	if (n_tok > 1) {
		rc = llm_error(LLM_EINVAL, "give at most one tokenizer");
		goto cleanup;
	}
	if (op->n_ctx)
		s.n_ctx = op->n_ctx;
	if (op->name)
		snprintf(s.name, sizeof(s.name), "%s", op->name);
	const char *what = "byte vocabulary";
	if (op->tok_llama2c) {
		what = op->tok_llama2c;
		rc = cv_input(c, what);
		if (!rc)
			rc = vocab_from_llama2c(&v, what, -1);
	} else if (op->tok_json) {
		what = op->tok_json;
		rc = cv_input(c, what);
		if (!rc)
			rc = vocab_from_tokenizer_json(&v, what, NULL);
	} else if (op->tok_gpt2) {
		what = op->tok_gpt2;
		rc = vocab_from_gpt2(&v, what);
		char *p1 = path_join(what, "encoder.json"), *p2 = path_join(what, "vocab.bpe");
		if (!rc && p1 && p2 && !(rc = cv_input(c, p1)))
			rc = cv_input(c, p2);
		free(p1);
		free(p2);
	} else {
		rc = vocab_bytes(&v);
	}
	if (rc || (rc = vocab_pad(&v, s.n_vocab, "<dummy", ">", what)))
		goto cleanup;
	if (op->pre)
		snprintf(v.pre, sizeof(v.pre), "%s", op->pre);
	if (!v.pre[0]) {
		rc = llm_error(LLM_EUNSUPPORTED, "%s: pre-tokenizer not recognised (give "
		               "its llama.cpp name with --pre)", what);
		goto cleanup;
	}
	int dt = op->dtype < 0 ? LLM_F32 : op->dtype;
	if ((rc = shape_to_gguf(c->w, &s, file_type_of(dt))) ||
	    (rc = vocab_to_gguf(c->w, &v)))
		goto cleanup;

	uint64_t seed = mix64(op->seed ^ 0x6c6c6d6b6974ull);
	struct cv_src rnd = { .kind = SRC_RANDOM, .value = 0.02f };
	struct cv_src one = { .kind = SRC_CONST, .value = 1.0f };
	int64_t ne[2] = { s.n_embd, s.n_vocab };
	rnd.seed = seed ^ hash_str("token_embd.weight");
	if ((rc = cv_add(c, "token_embd.weight", dt, 2, ne, &rnd)) ||
	    (rc = add_rope_freqs(c, &s)))
		goto cleanup;
	for (int64_t l = 0; l < s.n_layer; l++) {
		for (int k = 0; k < W_COUNT; k++) {
			int nd = blk_shape(&s, k, ne);
			char name[64];
			if (!nd)
				continue;
			snprintf(name, sizeof(name), "blk.%" PRId64 ".%s", l, blk_names[k]);
			bool norm = k == W_ATTN_NORM || k == W_FFN_NORM;
			rnd.seed = mix64(seed ^ hash_str(name));
			if ((rc = cv_add(c, name, nd == 1 ? LLM_F32 : dt, nd, ne,
			                 norm ? &one : &rnd)))
				goto cleanup;
		}
	}
	ne[0] = s.n_embd;
	if ((rc = cv_add(c, "output_norm.weight", LLM_F32, 1, ne, &one)))
		goto cleanup;
	if (!s.tied) {
		ne[1] = s.n_vocab;
		rnd.seed = mix64(seed ^ hash_str("output.weight"));
		if ((rc = cv_add(c, "output.weight", dt, 2, ne, &rnd)))
			goto cleanup;
	}
	*out = c;
	c = NULL;
cleanup:
	vocab_free(&v);
	llm_convert_free(c);
	return rc;
}

/* ================================================================ write */

int llm_convert_write(struct llm_convert *c, const char *path)
{
	for (size_t i = 0; i < c->n_inputs; i++)
		if (llm_same_file(path, c->inputs[i]))
			return llm_error(LLM_EINVAL, "%s: refusing to overwrite an input (%s)",
			                 path, c->inputs[i]);
	c->done = 0;
	return llm_gguf_write_file(c->w, path);
}
