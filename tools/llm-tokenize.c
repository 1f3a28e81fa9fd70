/* llm-tokenize - text to token ids and back, with a model's tokenizer. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

enum {
	OPT_GPT2 = 256, OPT_PRE, OPT_PIECES, OPT_JSON, OPT_NO_BOS, OPT_SPECIAL,
	OPT_DECODE, OPT_COUNT,
};

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "\nTokenizer\nmodel whose tokenizer to use (GGUF)" },
	{ OPT_GPT2, "gpt2", "DIR", "use DIR/encoder.json and DIR/vocab.bpe instead" },
	{ OPT_PRE, "pre", "NAME", "pre-tokenizer for --gpt2: gpt2, llama3, qwen2, "
	  "smollm (default: gpt2)" },
	{ 'p', "prompt", "TEXT", "\nInput\ntokenize TEXT" },
	{ 'f', "file", "FILE", "tokenize the bytes of FILE ('-': standard input); "
	  "default: standard input" },
	{ OPT_NO_BOS, "no-bos", NULL, "do not add BOS (default: as the model says)" },
	{ OPT_SPECIAL, "special", NULL, "match special tokens (<|im_start|>, <s> ...) "
	  "in the text; with --decode, print them" },
	{ OPT_DECODE, "decode", NULL, "read token ids (separated by blanks or "
	  "commas) and print the text" },
	{ OPT_PIECES, "pieces", NULL, "\nOutput\none token a line: id, a tab, its "
	  "text escaped" },
	{ OPT_JSON, "json", NULL, "print JSON: an array of ids (of {\"id\",\"piece\"} "
	  "with --pieces; a string with --decode)" },
	{ OPT_COUNT, "count", NULL, "print only the number of tokens" },
	{ 't', "threads", "N", "accepted for uniformity; tokenizing uses one thread" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-tokenize", "(-m MODEL.gguf | --gpt2 DIR) [OPTION]... [-p TEXT | -f FILE]",
	"Turn text into token ids (one line, separated by spaces) with a model's "
	"tokenizer, or ids back into text with --decode.  Any bytes are accepted: "
	"those that are not valid UTF-8 become byte tokens.",
	opts,
	"Examples:\n"
	"  llm-tokenize -m stories260K.gguf -p 'Once upon a time'\n"
	"  llm-tokenize --gpt2 gpt2/ --pieces < notes.txt\n"
	"  echo 1 403 407 | llm-tokenize -m stories260K.gguf --decode",
};

/* Escape bytes for one-line output: C escapes for controls, backslash and
 * bytes that are not valid UTF-8; valid characters as they are. */
static void put_escaped(FILE *f, const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		int64_t bad = llm_utf8_invalid_at(s + i, n - i);
		size_t ok = bad < 0 ? n - i : (size_t)bad;
		if (c >= 0x80 && ok > 0) {
			/* a run of valid multi-byte characters up to the next ASCII */
			size_t k = 0;
			while (k < ok && (unsigned char)s[i + k] >= 0x80)
				k++;
			fwrite(s + i, 1, k, f);
			i += k;
			continue;
		}
		switch (c) {
		case '\n': fputs("\\n", f); break;
		case '\t': fputs("\\t", f); break;
		case '\r': fputs("\\r", f); break;
		case '\\': fputs("\\\\", f); break;
		default:
			if (c < 0x20 || c >= 0x7f)
				fprintf(f, "\\x%02x", c);
			else
				fputc(c, f);
		}
		i++;
	}
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD. */
static void put_json_string(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			int64_t bad = llm_utf8_invalid_at(s + i, n - i);
			if (bad == 0) {
				fputs("\\ufffd", f);
				i++;
				continue;
			}
			size_t k = 1;
			while (i + k < n && ((unsigned char)s[i + k] & 0xc0) == 0x80)
				k++;
			fwrite(s + i, 1, k, f);
			i += k;
			continue;
		}
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c == '\r')
			fputs("\\r", f);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
		i++;
	}
	fputc('"', f);
}

/* Parse ids separated by blanks, commas or brackets ("[1, 2]" works). */
static int parse_ids(const char *name, const char *s, size_t n,
                     const struct llm_tokenizer *t, int32_t **ids, int *n_ids)
{
	size_t cap = 64, k = 0;
	int32_t *v = malloc(cap * sizeof(*v));
	size_t line = 1;

	if (!v)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n')
			line++;
		if (isspace(c) || c == ',' || c == '[' || c == ']') {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !isspace((unsigned char)s[j]) && s[j] != ',' &&
		       s[j] != '[' && s[j] != ']')
			j++;
		char word[32];
		int64_t id;
		if (j - i >= sizeof(word)) {
			free(v);
			return llm_error(LLM_EINVAL, "%s:%zu: '%.20s...' is not a token id",
			                 name, line, s + i);
		}
		memcpy(word, s + i, j - i);
		word[j - i] = 0;
		if (llm_parse_i64("token id", word, INT32_MIN, INT32_MAX, &id)) {
			free(v);
			return llm_error(LLM_EINVAL, "%s:%zu: '%s' is not a token id",
			                 name, line, word);
		}
		if (id < 0 || id >= llm_tokenizer_n_vocab(t)) {
			free(v);
			return llm_error(LLM_EINVAL, "%s:%zu: token id %lld out of range "
			                 "(vocabulary of %d)", name, line, (long long)id,
			                 llm_tokenizer_n_vocab(t));
		}
		if (k == cap) {
			int32_t *p = realloc(v, (cap *= 2) * sizeof(*v));
			if (!p) {
				free(v);
				return llm_error(LLM_ENOMEM, "out of memory");
			}
			v = p;
		}
		v[k++] = (int32_t)id;
		i = j;
	}
	*ids = v;
	*n_ids = (int)k;
	return 0;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *gpt2 = NULL, *pre = NULL, *prompt = NULL;
	const char *file = NULL, *arg;
	bool pieces = false, json = false, no_bos = false, special = false;
	bool decode = false, count = false;
	struct llm_gguf *g = NULL;
	struct llm_tokenizer *t = NULL;
	char *text = NULL;
	size_t len = 0;
	int32_t *ids = NULL;
	int n_ids = 0, c, threads = 1, status = 1;

	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': model = arg; break;
		case OPT_GPT2: gpt2 = arg; break;
		case OPT_PRE: pre = arg; break;
		case 'p': prompt = arg; break;
		case 'f': file = arg; break;
		case OPT_NO_BOS: no_bos = true; break;
		case OPT_SPECIAL: special = true; break;
		case OPT_DECODE: decode = true; break;
		case OPT_PIECES: pieces = true; break;
		case OPT_JSON: json = true; break;
		case OPT_COUNT: count = true; break;
		case 't':
			if (llm_parse_int("-t", arg, 1, 4096, &threads))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		default:
			llm_cli_usage_error(&cli, "unexpected option");
		}
	}
	(void)threads;
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!model == !gpt2)
		llm_cli_usage_error(&cli, "give one of -m MODEL or --gpt2 DIR");
	if (pre && !gpt2)
		llm_cli_usage_error(&cli, "--pre goes with --gpt2 (a GGUF names its own)");
	if (prompt && file)
		llm_cli_usage_error(&cli, "give -p TEXT or -f FILE, not both");
	if (decode && (pieces || count || no_bos))
		llm_cli_usage_error(&cli, "--decode takes no --pieces, --count or --no-bos");
	if (count && (pieces || json))
		llm_cli_usage_error(&cli, "--count prints a number: no --pieces or --json");

	if (model) {
		if (llm_gguf_open(&g, model) || llm_tokenizer_from_gguf(&t, g))
			goto fail;
	} else {
		size_t n = strlen(gpt2) + 32;
		char *enc = malloc(n), *bpe = malloc(n);
		int rc;
		if (!enc || !bpe) {
			free(enc);
			free(bpe);
			llm_error(LLM_ENOMEM, "out of memory");
			goto fail;
		}
		snprintf(enc, n, "%s/encoder.json", gpt2);
		snprintf(bpe, n, "%s/vocab.bpe", gpt2);
		rc = llm_tokenizer_from_gpt2_files(&t, enc, bpe, pre);
		free(enc);
		free(bpe);
		if (rc)
			goto fail;
	}

	const char *name = prompt ? "-p" : file && strcmp(file, "-") ? file : "<stdin>";
	if (prompt) {
		len = strlen(prompt);
		text = malloc(len + 1);
		if (!text) {
			llm_error(LLM_ENOMEM, "out of memory");
			goto fail;
		}
		memcpy(text, prompt, len + 1);
	} else if (llm_read_file(file ? file : "-", &text, &len)) {
		goto fail;
	}

	if (decode) {
		char *out;
		size_t n;
		if (parse_ids(name, text, len, t, &ids, &n_ids) ||
		    llm_detokenize(t, ids, n_ids, special, &out, &n))
			goto fail;
		if (json) {
			put_json_string(stdout, out, n);
			putchar('\n');
		} else {
			fwrite(out, 1, n, stdout);
		}
		free(out);
		status = 0;
		goto done;
	}

	bool bos = !no_bos && llm_tokenizer_add_bos(t);
	if (llm_tokenize(t, text, len, bos, special, &ids, &n_ids))
		goto fail;
	if (count) {
		printf("%d\n", n_ids);
	} else if (json) {
		putchar('[');
		for (int i = 0; i < n_ids; i++) {
			if (i)
				fputs(pieces ? ",\n " : ", ", stdout);
			if (pieces) {
				size_t n;
				const char *p = llm_token_bytes(t, ids[i], true, &n);
				printf("{\"id\": %d, \"piece\": ", ids[i]);
				put_json_string(stdout, p, n);
				putchar('}');
			} else {
				printf("%d", ids[i]);
			}
		}
		fputs("]\n", stdout);
	} else if (pieces) {
		for (int i = 0; i < n_ids; i++) {
			size_t n;
			const char *p = llm_token_bytes(t, ids[i], true, &n);
			printf("%d\t", ids[i]);
			put_escaped(stdout, p, n);
			putchar('\n');
		}
	} else {
		for (int i = 0; i < n_ids; i++)
			printf(i ? " %d" : "%d", ids[i]);
		putchar('\n');
	}
	status = 0;
	goto done;
fail:
	llm_cli_report(cli.prog);
done:
	free(ids);
	free(text);
	llm_tokenizer_free(t);
	llm_gguf_free(g);
	return llm_cli_finish(cli.prog, status);
}
