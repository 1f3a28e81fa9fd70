/*
 * llm-generate - generate text from a GGUF model: one prompt, many prompts
 * as static batches, or an interactive chat.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llmkit/adapters.h"
#include "llmkit/backend.h"
#include "llmkit/chat.h"
#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/gguf.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/sched.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static const char *prog = "llm-generate";

enum {
	OPT_TEMP = 256, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_REPEAT_PENALTY,
	OPT_REPEAT_LAST_N, OPT_FREQ_PENALTY, OPT_PRES_PENALTY, OPT_GREEDY,
	OPT_BEAMS, OPT_LENGTH_PENALTY, OPT_NO_EARLY_STOP, OPT_STOP, OPT_IGNORE_EOS,
	OPT_NO_BOS, OPT_SPECIAL, OPT_ECHO, OPT_JSON, OPT_CHAT, OPT_CHAT_TEMPLATE,
	OPT_SYSTEM, OPT_PROMPTS, OPT_N_BATCH, OPT_LOGPROBS, OPT_NO_STREAM,
	OPT_KV_BLOCK, OPT_KV_TYPE, OPT_MMAP, OPT_LORA, OPT_DEVICE, OPT_ADAPTERS,
};

#define MAX_LORA 16   /* LLM_CTX_MAX_LORA */

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "GGUF model, a path or a name in the model directories "
	                        "(default: " LLM_DEFAULT_MODEL ")" },
	{ OPT_LORA, "lora", "PATH[:SCALE]", "apply a LoRA adapter (a PEFT directory or "
	                                    "a GGUF adapter) at run time, its delta "
	                                    "times SCALE (default 1); repeatable: "
	                                    "deltas add up" },
	{ OPT_ADAPTERS, "adapters", "DIR", "--prompts lines may name an adapter of DIR "
	                                   "(\"model\" or \"adapter\"; \"base\": none): "
	                                   "prompts of many adapters run in one batch" },
	{ 'p', "prompt", "TEXT", "\nInput\nthe prompt (default: none: start from BOS)" },
	{ 'f', "file", "FILE", "read the prompt from FILE ('-': standard input)" },
	{ 'i', "prompts", "FILE", "many prompts, one per line ('\\n' escapes) or JSONL "
	                          "objects with per-prompt settings; '-': stdin" },
	{ 'b', "batch", "N", "prompts generated together as one static batch "
	                     "(default: 16)" },
	{ OPT_NO_BOS, "no-bos", NULL, "do not start the prompt with BOS" },
	{ OPT_SPECIAL, "special", NULL, "parse special tokens (<|im_start|> ...) in prompts" },
	{ 'n', "max-tokens", "N", "\nDecoding\ntokens to generate (default: 128; -1: "
	                          "until the context is full)" },
	{ OPT_TEMP, "temp", "T", "temperature; 0 is greedy (default: 0.8)" },
	{ OPT_GREEDY, "greedy", NULL, "greedy decoding (same as --temp 0)" },
	{ OPT_TOP_K, "top-k", "K", "sample from the K most likely tokens; 0: off "
	                           "(default: 40)" },
	{ OPT_TOP_P, "top-p", "P", "nucleus: the smallest set with mass >= P; 1: off "
	                           "(default: 0.95)" },
	{ OPT_MIN_P, "min-p", "P", "drop tokens below P times the best one's "
	                           "probability; 0: off (default: 0.05)" },
	{ OPT_REPEAT_PENALTY, "repeat-penalty", "F", "penalise recent tokens (CTRL "
	                                             "style); 1: off (default: 1)" },
	{ OPT_REPEAT_LAST_N, "repeat-last-n", "N", "window of recent tokens for all "
	                                           "penalties; -1: all (default: 64)" },
	{ OPT_FREQ_PENALTY, "frequency-penalty", "F", "subtract F x count (default: 0)" },
	{ OPT_PRES_PENALTY, "presence-penalty", "F", "subtract F once if present "
	                                             "(default: 0)" },
	{ 's', "seed", "N", "random seed (default: from the clock)" },
	{ OPT_BEAMS, "beams", "N", "beam search of width N; 0: off (default: 0)" },
	{ OPT_LENGTH_PENALTY, "length-penalty", "F", "beams rank by logprob / "
	                                             "length^F (default: 1)" },
	{ OPT_NO_EARLY_STOP, "no-early-stopping", NULL, "beams go on until none can "
	                                                "beat the finished ones" },
	{ OPT_STOP, "stop", "STR", "stop when STR is generated (repeatable; '\\n' "
	                           "escapes)" },
	{ OPT_IGNORE_EOS, "ignore-eos", NULL, "keep generating past end-of-text" },
	{ OPT_JSON, "json", NULL, "\nOutput\none JSON object per prompt: text, token "
	                          "counts, finish reason, timings" },
	{ OPT_LOGPROBS, "logprobs", NULL, "include the sum of token log-probs (--json)" },
	{ OPT_ECHO, "echo", NULL, "print the prompt before its completion" },
	{ OPT_NO_STREAM, "no-stream", NULL, "print a single prompt's text at the end, "
	                                    "not as it is decoded" },
	{ 'v', "verbose", NULL, "model facts and timings on stderr" },
	{ OPT_CHAT, "chat", NULL, "\nChat\ninteractive chat in the terminal" },
	{ OPT_CHAT_TEMPLATE, "chat-template", "NAME", "chatml, llama2, llama3, mistral, "
	                                              "zephyr, gemma, phi3 (default: "
	                                              "from the model)" },
	{ OPT_SYSTEM, "system", "TEXT", "system message for --chat" },
	{ 'c', "ctx-size", "N", "\nResources\ncontext size per sequence (default: the "
	                        "model's, at most 4096)" },
	{ 't', "threads", "N", "threads (default: all CPUs)" },
	{ OPT_DEVICE, "device", LLM_CLI_DEVICE_ARG, LLM_CLI_DEVICE_HELP },
	{ OPT_N_BATCH, "batch-tokens", "N", "most tokens per forward pass (default: 512)" },
	{ OPT_KV_BLOCK, "kv-block", "N", "positions per KV cache block (default: 16)" },
	{ OPT_KV_TYPE, "kv-type", "TYPE", "KV cache element type: f16 or f32 (default: f16)" },
	{ OPT_MMAP, "mmap", NULL, "map the model instead of reading it into memory on "
	                          "huge pages (starts at once, decodes slower)" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-generate", "[OPTION]...",
	"Generate text with a GGUF language model.",
	opts,
	"Examples:\n"
	"  llm-generate --temp 0 -n 200\n"
	"  llm-generate -m model.gguf -p 'Once upon a time' --top-p 0.9 -s 42\n"
	"  llm-generate -m model.gguf --prompts questions.txt --batch 32 --json\n"
	"  llm-generate -m base.gguf --lora support/ --lora sales/:0.5 -p 'Hi'\n"
	"  llm-generate -m chat-model.gguf --chat --system 'You are terse.'",
};

/* ---------------------------------------------------------------- options */

struct options {
	const char *model;
	const char *prompt, *file, *prompts;
	int batch;
	bool no_bos, special, echo, json, logprobs, no_stream, verbose, chat;
	bool seed_set, n_set;
	const char *chat_template, *system;
	int n_ctx, threads, n_batch, kv_block;
	enum llm_dtype kv_type;
	const char *device;
	bool mmap;
	struct llm_gen_params gp;
	char *stops[LLM_MAX_STOP];
	char *lora[MAX_LORA];
	float lora_scale[MAX_LORA];
	int n_lora;
	const char *adapters;   /* --adapters DIR: per-prompt adapters */
};

/* "\n", "\t", "\\" escapes, in place. */
static size_t unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '\\' && r[1]) {
			r++;
			switch (*r) {
			case 'n': *w++ = '\n'; break;
			case 't': *w++ = '\t'; break;
			case 'r': *w++ = '\r'; break;
			case '\\': *w++ = '\\'; break;
			default: *w++ = '\\'; *w++ = *r; break;
			}
		} else {
			*w++ = *r;
		}
	}
	*w = 0;
	return (size_t)(w - s);
}

static void die_usage_rc(int rc)
{
	if (rc)
		llm_cli_usage_error(&cli, "%s", llm_errmsg());
}

static void parse_options(int argc, char **argv, struct options *o)
{
	struct llm_sampling *sp = &o->gp.sampling;
	const char *arg;
	int c;
	int64_t v;

	memset(o, 0, sizeof(*o));
	llm_gen_params_default(&o->gp);
	o->batch = 16;
	o->threads = 0;
	o->kv_type = LLM_F16;
	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': o->model = arg; break;
		case 'p': o->prompt = arg; break;
		case 'f': o->file = arg; break;
		case 'i': o->prompts = arg; break;
		case 'b': die_usage_rc(llm_parse_int("--batch", arg, 1, 4096, &o->batch)); break;
		case 'n': die_usage_rc(llm_parse_int("--max-tokens", arg, -1, 1 << 24,
		                                     &o->gp.max_tokens));
			o->n_set = true;
			break;
		case OPT_TEMP: die_usage_rc(llm_parse_float("--temp", arg, 0, 100,
		                                            &sp->temperature)); break;
		case OPT_GREEDY: sp->temperature = 0; break;
		case OPT_TOP_K: die_usage_rc(llm_parse_int("--top-k", arg, 0, 1 << 24,
		                                           &sp->top_k)); break;
		case OPT_TOP_P: die_usage_rc(llm_parse_float("--top-p", arg, 1e-9, 1,
		                                             &sp->top_p)); break;
		case OPT_MIN_P: die_usage_rc(llm_parse_float("--min-p", arg, 0, 1,
		                                             &sp->min_p)); break;
		case OPT_REPEAT_PENALTY: die_usage_rc(llm_parse_float("--repeat-penalty", arg,
		                                      1e-3, 100, &sp->repeat_penalty)); break;
		case OPT_REPEAT_LAST_N: die_usage_rc(llm_parse_int("--repeat-last-n", arg,
		                                     -1, 1 << 24, &sp->repeat_last_n)); break;
		case OPT_FREQ_PENALTY: die_usage_rc(llm_parse_float("--frequency-penalty",
		                                    arg, -100, 100, &sp->frequency_penalty)); break;
		case OPT_PRES_PENALTY: die_usage_rc(llm_parse_float("--presence-penalty",
		                                    arg, -100, 100, &sp->presence_penalty)); break;
		case 's':
			die_usage_rc(llm_parse_i64("--seed", arg, 0, INT64_MAX, &v));
			sp->seed = (uint64_t)v;
			o->seed_set = true;
			break;
		case OPT_BEAMS: die_usage_rc(llm_parse_int("--beams", arg, 0, 64,
		                                           &o->gp.n_beams)); break;
		case OPT_LENGTH_PENALTY: die_usage_rc(llm_parse_float("--length-penalty",
		                                      arg, -10, 10, &o->gp.length_penalty)); break;
		case OPT_NO_EARLY_STOP: o->gp.early_stopping = false; break;
		case OPT_STOP:
			if (o->gp.n_stop == LLM_MAX_STOP)
				llm_cli_usage_error(&cli, "at most %d --stop strings", LLM_MAX_STOP);
			o->stops[o->gp.n_stop] = strdup(arg);
			if (!unescape(o->stops[o->gp.n_stop]))
				llm_cli_usage_error(&cli, "--stop: empty string");
			o->gp.stop[o->gp.n_stop] = o->stops[o->gp.n_stop];
			o->gp.n_stop++;
			break;
		case OPT_IGNORE_EOS: o->gp.ignore_eos = true; break;
		case OPT_NO_BOS: o->no_bos = true; break;
		case OPT_SPECIAL: o->special = true; break;
		case OPT_ECHO: o->echo = true; break;
		case OPT_JSON: o->json = true; break;
		case OPT_LOGPROBS: o->logprobs = true; break;
		case OPT_NO_STREAM: o->no_stream = true; break;
		case 'v': o->verbose = true; break;
		case OPT_CHAT: o->chat = true; break;
		case OPT_CHAT_TEMPLATE:
			if (llm_chat_template_from_name(arg) < 0)
				llm_cli_usage_error(&cli, "--chat-template: unknown template '%s' "
				                    "(chatml, llama2, llama3, mistral, zephyr, "
				                    "gemma, phi3)", arg);
			o->chat_template = arg;
			break;
		case OPT_SYSTEM: o->system = arg; break;
		case 'c': die_usage_rc(llm_parse_int("--ctx-size", arg, 1, 1 << 24,
		                                     &o->n_ctx)); break;
		case 't': die_usage_rc(llm_parse_int("--threads", arg, 1, 1024,
		                                     &o->threads)); break;
		case OPT_N_BATCH: die_usage_rc(llm_parse_int("--batch-tokens", arg, 1,
		                                             1 << 20, &o->n_batch)); break;
		case OPT_MMAP: o->mmap = true; break;
		case OPT_ADAPTERS: o->adapters = arg; break;
		case OPT_LORA:
			if (o->n_lora == MAX_LORA)
				llm_cli_usage_error(&cli, "at most %d --lora adapters", MAX_LORA);
			o->lora[o->n_lora] = malloc(4096);
			if (!o->lora[o->n_lora] ||
			    llm_lora_parse_spec(arg, o->lora[o->n_lora], 4096,
			                        &o->lora_scale[o->n_lora]))
				llm_cli_usage_error(&cli, "--lora: %s", llm_errmsg());
			o->n_lora++;
			break;
		case OPT_DEVICE: die_usage_rc(llm_cli_device(arg, &o->device)); break;
		case OPT_KV_TYPE: {
			static const int kv_types[] = { LLM_F16, LLM_F32 };
			int t;
			die_usage_rc(llm_parse_dtype("--kv-type", arg, kv_types, 2, &t));
			o->kv_type = t;
			break;
		}
		case OPT_KV_BLOCK: die_usage_rc(llm_parse_int("--kv-block", arg, 1, 4096,
		                                              &o->kv_block)); break;
		default:
			llm_cli_usage_error(&cli, "unhandled option");
		}
	}
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s' (prompts go in -p, -f "
		                    "or --prompts)", argv[optind]);
	if (!!o->prompt + !!o->file + !!o->prompts + o->chat > 1)
		llm_cli_usage_error(&cli, "use only one of -p, -f, --prompts and --chat");
	if (!o->seed_set)
		sp->seed = ((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)) & INT64_MAX;
	o->gp.logprobs = o->logprobs;
	if (o->chat && !o->n_set)
		o->gp.max_tokens = -1;   /* a reply ends at end-of-turn */
}

/* ---------------------------------------------------------------- prompts */

/* One prompt with its own settings. */
struct item {
	char *id;
	char *text;             /* the prompt text (after chat formatting) */
	size_t text_len;
	bool empty;             /* no prompt: start from BOS */
	bool seed_set;
	struct llm_gen_params gp;
	char *stops[LLM_MAX_STOP];
	int32_t *tokens;
	int n_tokens;
	struct llm_gen_request req;
	char *adapter;          /* JSONL "model" / "adapter" (with --adapters) */
	int adapter_id;
};

static void item_free(struct item *it)
{
	free(it->id);
	free(it->text);
	for (int i = 0; i < LLM_MAX_STOP; i++)
		free(it->stops[i]);
	free(it->tokens);
	llm_gen_request_clear(&it->req);
	free(it->adapter);
}

static int json_num(json_t *v, const char *where, const char *key, double lo,
                    double hi, double *out)
{
	*out = 0;
	if (!json_is_number(v))
		return llm_error(LLM_EINVAL, "%s: \"%s\" must be a number", where, key);
	double d = json_number_value(v);
	if (d < lo || d > hi)
		return llm_error(LLM_EINVAL, "%s: \"%s\" = %g is out of range [%g, %g]",
		                 where, key, d, lo, hi);
	*out = d;
	return 0;
}

static int json_int(json_t *v, const char *where, const char *key, double lo,
                    double hi, int64_t *out)
{
	double d;
	int rc = json_num(v, where, key, lo, hi, &d);
	if (rc)
		return rc;
	if (d != (double)(int64_t)d)
		return llm_error(LLM_EINVAL, "%s: \"%s\" must be an integer", where, key);
	*out = (int64_t)d;
	return 0;
}

static int set_stop(struct item *it, json_t *v, const char *where)
{
	json_t *one;
	size_t i;

	it->gp.n_stop = 0;
	if (json_is_string(v)) {
		if (!json_string_length(v))
			return llm_error(LLM_EINVAL, "%s: \"stop\" is empty", where);
		it->stops[0] = strdup(json_string_value(v));
		it->gp.stop[0] = it->stops[0];
		it->gp.n_stop = 1;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) > LLM_MAX_STOP)
		return llm_error(LLM_EINVAL, "%s: \"stop\" must be a string or an array of "
		                 "at most %d strings", where, LLM_MAX_STOP);
	json_array_foreach(v, i, one) {
		if (!json_is_string(one) || !json_string_length(one))
			return llm_error(LLM_EINVAL, "%s: \"stop\" holds a non-string or an "
			                 "empty string", where);
		it->stops[i] = strdup(json_string_value(one));
		it->gp.stop[i] = it->stops[i];
		it->gp.n_stop++;
	}
	return 0;
}

/* Chat messages -> prompt text through the template. */
static int format_messages(json_t *msgs, enum llm_chat_template tmpl,
                           const char *where, char **out, size_t *len)
{
	struct llm_chat_msg m[256];
	json_t *one;
	size_t i;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0 ||
	    json_array_size(msgs) > 256)
		return llm_error(LLM_EINVAL, "%s: \"messages\" must be an array of 1 to "
		                 "256 messages", where);
	json_array_foreach(msgs, i, one) {
		json_t *role = json_object_get(one, "role");
		json_t *content = json_object_get(one, "content");
		if (!json_is_string(role) || !json_is_string(content))
			return llm_error(LLM_EINVAL, "%s: message %zu needs string \"role\" and "
			                 "\"content\"", where, i);
		m[i].role = json_string_value(role);
		m[i].content = json_string_value(content);
	}
	int rc = llm_chat_format(tmpl, m, (int)json_array_size(msgs), true, out, len);
	return rc ? llm_error_prefix(rc, "%s", where) : 0;
}

/* A JSONL line: {"prompt": ... | "messages": [...], settings...}. */
static bool adapters_on;   /* --adapters given */

static int parse_json_item(struct item *it, const char *line, const char *where,
                           enum llm_chat_template tmpl)
{
	json_error_t err;
	json_t *o = json_loads(line, 0, &err), *v;
	const char *key;
	int rc = 0;

	if (!o)
		return llm_error(LLM_EINVAL, "%s: bad JSON: %s (column %d)", where,
		                 err.text, err.column);
	if (!json_is_object(o)) {
		json_decref(o);
		return llm_error(LLM_EINVAL, "%s: expected a JSON object", where);
	}
	json_object_foreach(o, key, v) {
		double d;
		int64_t n;
		struct llm_sampling *sp = &it->gp.sampling;
		if (!strcmp(key, "prompt")) {
			if (!json_is_string(v)) {
				rc = llm_error(LLM_EINVAL, "%s: \"prompt\" must be a string", where);
				break;
			}
			it->text = strndup(json_string_value(v), json_string_length(v));
			it->text_len = json_string_length(v);
		} else if (!strcmp(key, "messages")) {
			if ((rc = format_messages(v, tmpl, where, &it->text, &it->text_len)))
				break;
		} else if (!strcmp(key, "id")) {
			it->id = json_is_string(v) ? strdup(json_string_value(v))
			                           : json_dumps(v, JSON_ENCODE_ANY);
		} else if (!strcmp(key, "max_tokens")) {
			if ((rc = json_int(v, where, key, -1, 1 << 24, &n)))
				break;
			it->gp.max_tokens = (int)n;
		} else if (!strcmp(key, "temperature")) {
			if ((rc = json_num(v, where, key, 0, 100, &d)))
				break;
			sp->temperature = (float)d;
		} else if (!strcmp(key, "top_p")) {
			if ((rc = json_num(v, where, key, 1e-9, 1, &d)))
				break;
			sp->top_p = (float)d;
		} else if (!strcmp(key, "top_k")) {
			if ((rc = json_int(v, where, key, 0, 1 << 24, &n)))
				break;
			sp->top_k = (int)n;
		} else if (!strcmp(key, "min_p")) {
			if ((rc = json_num(v, where, key, 0, 1, &d)))
				break;
			sp->min_p = (float)d;
		} else if (!strcmp(key, "repeat_penalty")) {
			if ((rc = json_num(v, where, key, 1e-3, 100, &d)))
				break;
			sp->repeat_penalty = (float)d;
		} else if (!strcmp(key, "frequency_penalty")) {
			if ((rc = json_num(v, where, key, -100, 100, &d)))
				break;
			sp->frequency_penalty = (float)d;
		} else if (!strcmp(key, "presence_penalty")) {
			if ((rc = json_num(v, where, key, -100, 100, &d)))
				break;
			sp->presence_penalty = (float)d;
		} else if (!strcmp(key, "seed")) {
			if ((rc = json_int(v, where, key, 0, 9.2e18, &n)))
				break;
			sp->seed = (uint64_t)n;
			it->seed_set = true;
		} else if (!strcmp(key, "stop")) {
			if ((rc = set_stop(it, v, where)))
				break;
		} else if (!strcmp(key, "beams") || !strcmp(key, "n_beams")) {
			if ((rc = json_int(v, where, key, 0, 64, &n)))
				break;
			it->gp.n_beams = (int)n;
		} else if (!strcmp(key, "ignore_eos")) {
			if (!json_is_boolean(v)) {
				rc = llm_error(LLM_EINVAL, "%s: \"ignore_eos\" must be a boolean",
				               where);
				break;
			}
			it->gp.ignore_eos = json_is_true(v);
		} else if ((!strcmp(key, "model") && adapters_on) || !strcmp(key, "adapter")) {
			if (!json_is_string(v)) {
				rc = llm_error(LLM_EINVAL, "%s: \"%s\" must be a string", where, key);
				break;
			}
			if (!adapters_on) {
				rc = llm_error(LLM_EINVAL, "%s: \"adapter\" needs --adapters DIR",
				               where);
				break;
			}
			free(it->adapter);
			it->adapter = strdup(json_string_value(v));
		} else if (!strcmp(key, "model") || !strcmp(key, "stream") ||
		           !strcmp(key, "user") || !strcmp(key, "priority")) {
			/* OpenAI request fields with no meaning here */
		} else {
			rc = llm_error(LLM_EINVAL, "%s: unknown field \"%s\"", where, key);
			break;
		}
	}
	if (!rc && !it->text)
		rc = llm_error(LLM_EINVAL, "%s: needs \"prompt\" or \"messages\"", where);
	json_decref(o);
	return rc;
}

/* Read prompts: one per line, JSONL lines recognised by a leading '{'. */
static int read_prompts(const char *path, const struct options *o,
                        enum llm_chat_template tmpl, struct item **out, int *n_out)
{
	char *data, *line;
	size_t size;
	int rc, n = 0, cap = 0, lineno = 0;
	struct item *items = NULL;
	const char *name = strcmp(path, "-") ? path : "standard input";

	if ((rc = llm_read_file(path, &data, &size)))
		return rc;
	if (memchr(data, 0, size)) {
		free(data);
		return llm_error(LLM_EINVAL, "%s: contains a NUL byte", name);
	}
	/* keep empty lines meaningful: split by hand, not strtok */
	line = data;
	while (line && *line) {
		char *nl = strchr(line, '\n');
		char where[512];
		if (nl)
			*nl = 0;
		lineno++;
		snprintf(where, sizeof(where), "%s:%d", name, lineno);
		size_t len = strlen(line);
		if (len && line[len - 1] == '\r')
			line[--len] = 0;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			struct item *ni = realloc(items, cap * sizeof(*ni));
			if (!ni) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
				goto fail;
			}
			items = ni;
		}
		struct item *it = &items[n];
		memset(it, 0, sizeof(*it));
		it->gp = o->gp;
		for (int i = 0; i < o->gp.n_stop; i++) {
			it->stops[i] = strdup(o->gp.stop[i]);
			it->gp.stop[i] = it->stops[i];
		}
		n++;
		const char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '{') {
			if ((rc = parse_json_item(it, p, where, tmpl)))
				goto fail;
		} else {
			it->text = strdup(line);
			it->text_len = unescape(it->text);
		}
		/* each prompt its own seed stream unless it set one */
		if (!it->seed_set)
			it->gp.sampling.seed = (o->gp.sampling.seed + (uint64_t)(n - 1)) &
			                       INT64_MAX;
		if ((rc = llm_sampling_check(&it->gp.sampling))) {
			llm_error_prefix(rc, "%s", where);
			goto fail;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(data);
	*out = items;
	*n_out = n;
	return 0;
fail:
	for (int i = 0; i < n; i++)
		item_free(&items[i]);
	free(items);
	free(data);
	return rc;
}

/* ---------------------------------------------------------------- output */

/* Plain batch output: one line per prompt, newlines and backslashes
 * escaped so a line in is a line out. */
static void print_escaped(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (s[i]) {
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		default: putchar(s[i]);
		}
	}
	putchar('\n');
}

static void print_json(const struct options *o, const struct item *it, int index)
{
	const struct llm_gen_request *r = &it->req;
	json_t *j = json_object();
	double gen_s = r->t_done - r->t_first_token;

	if (it->id)
		json_object_set_new(j, "id", json_string(it->id));
	else
		json_object_set_new(j, "index", json_integer(index));
	if (o->echo)
		json_object_set_new(j, "prompt", json_stringn(it->text ? it->text : "",
		                                              it->text_len));
	json_object_set_new(j, "text", json_stringn(r->text, r->text_len));
	json_object_set_new(j, "finish_reason", json_string(llm_finish_name(r->finish)));
	json_object_set_new(j, "prompt_tokens", json_integer(it->n_tokens));
	json_object_set_new(j, "completion_tokens", json_integer(r->n_tokens));
	if (o->logprobs || it->gp.n_beams > 0)
		json_object_set_new(j, "logprob", json_real(r->logprob));
	json_object_set_new(j, "seed", json_integer((json_int_t)it->gp.sampling.seed));
	json_object_set_new(j, "time_to_first_token_ms", json_real(r->t_first_token * 1e3));
	json_object_set_new(j, "time_ms", json_real(r->t_done * 1e3));
	json_object_set_new(j, "tokens_per_second",
	                    json_real(r->n_tokens > 1 && gen_s > 0
	                              ? (r->n_tokens - 1) / gen_s : 0));
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
	puts(s);
	free(s);
	json_decref(j);
}

struct stream_state {
	bool on;
};

static int stream_cb(void *user, int index, const char *text, size_t len)
{
	struct stream_state *st = user;
	(void)index;
	if (st->on) {
		fwrite(text, 1, len, stdout);
		fflush(stdout);
	}
	return ferror(stdout) ? 1 : 0;
}

/* ---------------------------------------------------------------- running */

struct session {
	struct options *o;
	struct llm_model *m;
	struct llm_tokenizer *tok;
	struct llm_ctx *ctx;
	enum llm_chat_template tmpl;
	struct llm_adapters *adapters;
};

/*
 * Prompt text to tokens.  BOS goes first when the model wants it, unless
 * the text already begins with it (chat templates write "<s>" and the like
 * themselves, read as special tokens).  An empty prompt is BOS alone.
 */
static int tokenize_prompt(const struct options *o, const struct llm_tokenizer *tok,
                           struct item *it, bool special)
{
	int32_t bos = llm_token_bos(tok);
	bool want_bos = !o->no_bos && llm_tokenizer_add_bos(tok) && bos >= 0;
	int rc;

	free(it->tokens);
	it->tokens = NULL;
	it->empty = !it->text || it->text_len == 0;
	if (it->empty && bos < 0)
		return llm_error(LLM_EINVAL, "an empty prompt needs a model with a BOS "
		                 "token");
	if ((rc = llm_tokenize(tok, it->text ? it->text : "", it->text_len, false,
	                       special, &it->tokens, &it->n_tokens)))
		return rc;
	if ((it->empty || want_bos) && (it->n_tokens == 0 || it->tokens[0] != bos)) {
		int32_t *t = realloc(it->tokens, (it->n_tokens + 1) * sizeof(*t));
		if (!t)
			return llm_error(LLM_ENOMEM, "out of memory");
		memmove(t + 1, t, it->n_tokens * sizeof(*t));
		t[0] = bos;
		it->tokens = t;
		it->n_tokens++;
	}
	return 0;
}

/* Tokens -> a request for this context. */
static int bind_item(struct session *s, struct item *it)
{
	if (it->n_tokens >= llm_ctx_n_ctx(s->ctx))
		return llm_error(LLM_ERANGE, "prompt of %d tokens is longer than the "
		                 "context of %d (-c)", it->n_tokens, llm_ctx_n_ctx(s->ctx));
	it->req.prompt = it->tokens;
	it->req.n_prompt = it->n_tokens;
	it->req.params = it->gp;
	it->req.text_start = it->empty;
	return 0;
}

static int run_items(struct session *s, struct item *items, int n)
{
	struct options *o = s->o;
	int rc;

	for (int i = 0; i < n; i++)
		if ((rc = bind_item(s, &items[i]))) {
			if (n > 1)
				llm_error_prefix(rc, "prompt %d", i + 1);
			return rc;
		}
	bool single = n == 1 && !o->prompts;
	struct stream_state st = { single && !o->json && !o->no_stream };
	for (int b0 = 0; b0 < n; b0 += o->batch) {
		int nb = n - b0 < o->batch ? n - b0 : o->batch;
		struct llm_gen_request *reqs = calloc(nb, sizeof(*reqs));
		struct llm_gen_stats stats;
		if (!reqs)
			return llm_error(LLM_ENOMEM, "out of memory");
		for (int i = 0; i < nb; i++)
			reqs[i] = items[b0 + i].req;
		if (st.on && o->echo && items[0].text) {
			fwrite(items[0].text, 1, items[0].text_len, stdout);
			fflush(stdout);
		}
		rc = llm_generate(s->ctx, s->tok, reqs, nb, stream_cb, &st, &stats);
		for (int i = 0; i < nb; i++)
			items[b0 + i].req = reqs[i];
		free(reqs);
		if (rc)
			return rc;
		for (int i = b0; i < b0 + nb; i++) {
			struct item *it = &items[i];
			if (o->json)
				print_json(o, it, i);
			else if (single) {
				if (!st.on) {
					if (o->echo && it->text)
						fwrite(it->text, 1, it->text_len, stdout);
					fwrite(it->req.text, 1, it->req.text_len, stdout);
				}
				putchar('\n');
			} else {
				if (o->echo && it->text) {
					char *both = malloc(it->text_len + it->req.text_len + 1);
					if (!both)
						return llm_error(LLM_ENOMEM, "out of memory");
					memcpy(both, it->text, it->text_len);
					memcpy(both + it->text_len, it->req.text, it->req.text_len);
					print_escaped(both, it->text_len + it->req.text_len);
					free(both);
				} else {
					print_escaped(it->req.text, it->req.text_len);
				}
			}
		}
		fflush(stdout);
		if (o->verbose)
			fprintf(stderr, "%s: batch of %d: prompt %lld tokens in %.3f s (%.1f "
			        "tok/s), generation %lld tokens in %.3f s (%.1f tok/s), %d "
			        "steps, peak KV blocks %d\n", prog, nb,
			        (long long)stats.n_prompt, stats.t_prefill,
			        stats.t_prefill > 0 ? stats.n_prompt / stats.t_prefill : 0,
			        (long long)stats.n_decoded, stats.t_decode,
			        stats.t_decode > 0 ? stats.n_decoded / stats.t_decode : 0,
			        stats.n_steps, stats.peak_blocks);
		if (ferror(stdout))
			return llm_error(LLM_EIO, "standard output: write failed: %s",
			                 strerror(errno));
	}
	return 0;
}

/*
 * --adapters: the prompts through the serving engine (sched.h), each with
 * its adapter bound to its sequence, so prompts of many adapters share
 * every forward pass; results are printed in input order as run_items does.
 */
static int run_items_adapters(struct session *s, struct item *items, int n,
                              struct llm_adapters *ac)
{
	struct options *o = s->o;
	struct llm_engine_params ep;
	struct llm_engine *e = NULL;
	struct llm_sreq **rs = calloc(n, sizeof(*rs));
	int rc;

	if (!rs)
		return llm_error(LLM_ENOMEM, "out of memory");
	llm_engine_params_default(&ep);
	ep.max_batch = o->batch;
	ep.adapters = ac;
	if ((rc = llm_engine_new(&e, s->ctx, s->tok, &ep)) ||
	    (rc = llm_engine_start(e)))
		goto out;
	double t0 = llm_time_now();
	for (int i = 0; i < n && !rc; i++) {
		struct item *it = &items[i];
		struct llm_sreq_params sp = { 0 };
		if ((rc = bind_item(s, it)))
			break;
		if (it->gp.n_beams > 0) {
			rc = llm_error(LLM_EUNSUPPORTED, "beam search does not run with "
			               "--adapters");
			break;
		}
		sp.prompt = it->tokens;
		sp.n_prompt = it->n_tokens;
		sp.gen = it->gp;
		sp.gen.logprobs = o->logprobs;
		sp.text_start = it->empty;
		sp.adapter = it->adapter_id;
		if (!(rc = llm_sreq_new(&rs[i], &sp)))
			rc = llm_engine_submit(e, rs[i]);
	}
	for (int i = 0; i < n && !rc; i++) {
		struct item *it = &items[i];
		struct llm_gen_request *r = &it->req;
		struct llm_sreq_snap sn;
		while (!llm_sreq_wait(rs[i], SIZE_MAX, 1 << 30, -1))
			;
		if ((rc = llm_sreq_snapshot(rs[i], 0, 0, &sn)))
			break;
		if (sn.error) {
			rc = llm_error(sn.error, "%s", sn.errmsg);
		} else {
			r->text = malloc(sn.text_len + 1);
			r->tokens = malloc((sn.n_new + 1) * sizeof(*r->tokens));
			if (!r->text || !r->tokens) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
			} else {
				memcpy(r->text, sn.text, sn.text_len + 1);
				r->text_len = sn.text_len;
				memcpy(r->tokens, sn.tokens, sn.n_new * sizeof(*r->tokens));
				r->n_tokens = sn.n_tokens;
				r->finish = sn.finish;
				r->logprob = 0;
				for (int k = 0; sn.logprobs && k < sn.n_new; k++)
					r->logprob += sn.logprobs[k];
				double t_sub = sn.t_total;   /* submitted at about t0 */
				r->t_first_token = sn.t_first;
				r->t_done = t_sub;
			}
		}
		llm_sreq_snap_free(&sn);
		if (rc) {
			llm_error_prefix(rc, "prompt %d", i + 1);
			break;
		}
		if (o->json) {
			print_json(o, it, i);
		} else if (o->echo && it->text) {
			char *both = malloc(it->text_len + r->text_len + 1);
			if (!both) {
				rc = llm_error(LLM_ENOMEM, "out of memory");
				break;
			}
			memcpy(both, it->text, it->text_len);
			memcpy(both + it->text_len, r->text, r->text_len);
			print_escaped(both, it->text_len + r->text_len);
			free(both);
		} else {
			print_escaped(r->text, r->text_len);
		}
		fflush(stdout);
	}
	if (!rc && o->verbose)
		fprintf(stderr, "%s: %d prompts with adapters in %.3f s\n", prog, n,
		        llm_time_now() - t0);
out:
	if (e)
		llm_engine_stop(e, rc == 0);
	for (int i = 0; i < n; i++)
		llm_sreq_release(rs[i]);
	free(rs);
	llm_engine_free(e);
	return rc;
}

/* ---------------------------------------------------------------- chat */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int chat_stream_cb(void *user, int index, const char *text, size_t len)
{
	(void)user;
	(void)index;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	return interrupted ? 1 : 0;
}

static int run_chat(struct session *s)
{
	struct options *o = s->o;
	struct llm_chat_msg *msgs = NULL;
	char **owned = NULL;
	int n_msgs = 0, cap = 0, rc = 0;
	char *line = NULL;
	size_t line_cap = 0;
	bool tty = isatty(STDIN_FILENO);
	struct sigaction sa = { .sa_handler = on_sigint };

	sigaction(SIGINT, &sa, NULL);
	if (tty)
		fprintf(stderr, "%s: chatting with %s (template %s); Ctrl-C stops a "
		        "reply, Ctrl-D or /exit ends, /reset forgets\n", prog,
		        s->m->name ? s->m->name : "the model",
		        llm_chat_template_name(s->tmpl));
	for (;;) {
		if (n_msgs + 2 > cap) {
			cap = cap ? cap * 2 : 16;
			msgs = realloc(msgs, cap * sizeof(*msgs));
			owned = realloc(owned, cap * sizeof(*owned));
			if (!msgs || !owned)
				return llm_error(LLM_ENOMEM, "out of memory");
		}
		if (n_msgs == 0 && o->system) {
			owned[0] = strdup(o->system);
			msgs[0] = (struct llm_chat_msg){ "system", owned[0] };
			n_msgs = 1;
		}
		if (tty) {
			fputs("> ", stderr);
			fflush(stderr);
		}
		interrupted = 0;
		ssize_t got = getline(&line, &line_cap, stdin);
		if (got < 0)
			break;
		if (got && line[got - 1] == '\n')
			line[--got] = 0;
		if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
			break;
		if (!strcmp(line, "/reset")) {
			for (int i = 0; i < n_msgs; i++)
				free(owned[i]);
			n_msgs = 0;
			continue;
		}
		if (!got)
			continue;
		owned[n_msgs] = strdup(line);
		msgs[n_msgs] = (struct llm_chat_msg){ "user", owned[n_msgs] };
		n_msgs++;

		struct item it = { 0 };
		it.gp = o->gp;
		if ((rc = llm_chat_format(s->tmpl, msgs, n_msgs, true, &it.text,
		                          &it.text_len)))
			break;
		/* the template's markers are special tokens; the user's text in it is
		 * tokenized the same way, as llama.cpp's chat does */
		rc = tokenize_prompt(o, s->tok, &it, true);
		if (!rc)
			rc = bind_item(s, &it);
		if (rc == LLM_ERANGE) {
			fprintf(stderr, "%s: %s; /reset to start over\n", prog, llm_errmsg());
			item_free(&it);
			n_msgs--;
			free(owned[n_msgs]);
			continue;
		}
		if (rc) {
			item_free(&it);
			break;
		}
		rc = llm_generate(s->ctx, s->tok, &it.req, 1, chat_stream_cb, NULL, NULL);
		putchar('\n');
		fflush(stdout);
		if (rc == LLM_ECANCELED) {
			/* the reply so far is lost; the question stays unanswered */
			n_msgs--;
			free(owned[n_msgs]);
			item_free(&it);
			rc = 0;
			continue;
		}
		if (rc) {
			item_free(&it);
			break;
		}
		owned[n_msgs] = strndup(it.req.text, it.req.text_len);
		msgs[n_msgs] = (struct llm_chat_msg){ "assistant", owned[n_msgs] };
		n_msgs++;
		item_free(&it);
	}
	for (int i = 0; i < n_msgs; i++)
		free(owned[i]);
	free(owned);
	free(msgs);
	free(line);
	return rc;
}

/* ---------------------------------------------------------------- main */

/* KV blocks for the largest batch of prompts run together. */
static int kv_blocks_needed(const struct options *o, struct item *items, int n,
                            int n_ctx, int bs)
{
	int64_t most = 0;
	for (int b0 = 0; b0 < n; b0 += o->batch) {
		int64_t sum = 0;
		for (int i = b0; i < n && i < b0 + o->batch; i++) {
			const struct item *it = &items[i];
			int64_t len = it->n_tokens + (it->gp.max_tokens < 0 ? n_ctx
			                                                    : it->gp.max_tokens);
			if (len > n_ctx)
				len = n_ctx;
			sum += (len + bs - 1) / bs * (it->gp.n_beams > 0 ? it->gp.n_beams : 1);
		}
		most = sum > most ? sum : most;
	}
	return most > INT32_MAX / 2 ? INT32_MAX / 2 : (int)most;
}

static void free_lora(struct options *o, struct llm_lora **lora)
{
	for (int i = 0; i < o->n_lora; i++) {
		llm_lora_free(lora[i]);
		free(o->lora[i]);
	}
}

int main(int argc, char **argv)
{
	struct options o;
	struct session s = { .o = &o };
	struct item *items = NULL;
	int n_items = 0, rc;
	char path[4096];
	struct llm_gguf *g;
	struct llm_lora *lora[MAX_LORA] = { 0 };

	parse_options(argc, argv, &o);

	if ((rc = llm_find_model(o.model ? o.model : LLM_DEFAULT_MODEL, path,
	                         sizeof(path))) ||
	    (rc = llm_model_load_ex(&s.m, path, &(struct llm_model_params){ .use_mmap = o.mmap })))
		goto fail;
	g = s.m->gguf;
	if ((rc = llm_tokenizer_from_gguf(&s.tok, g)))
		goto fail;
	s.tmpl = o.chat_template
	         ? (enum llm_chat_template)llm_chat_template_from_name(o.chat_template)
	         : llm_chat_from_gguf(g);
	if (s.tmpl == LLM_CHAT_UNKNOWN) {
		if (o.chat)
			fprintf(stderr, "%s: the model has no chat template I recognise; "
			        "using chatml (--chat-template to choose)\n", prog);
		s.tmpl = LLM_CHAT_CHATML;
	}
	if (o.verbose)
		fprintf(stderr, "%s: %s: %s, %d layers, %d heads (%d KV), dim %d, "
		        "vocab %d, %.1fM parameters, %s weights, kernels %s\n", prog,
		        path, llm_arch_name(s.m->hp.arch), s.m->hp.n_layer,
		        s.m->hp.n_head, s.m->hp.n_head_kv, s.m->hp.n_embd,
		        s.m->hp.n_vocab, llm_model_n_params(s.m) / 1e6,
		        llm_dtype_name(s.m->layers[0].wq.type), llm_cpu_isa());
	for (int i = 0; i < o.n_lora; i++) {
		if ((rc = llm_lora_load(&lora[i], o.lora[i], s.m)))
			goto fail;
		if (o.verbose)
			fprintf(stderr, "%s: %s: LoRA rank %d, scale %g x %g, %lld "
			        "parameters\n", prog, o.lora[i], lora[i]->rank,
			        lora[i]->scale, o.lora_scale[i], (long long)lora[i]->n_params);
	}

	/* prompts */
	adapters_on = o.adapters != NULL;
	if (o.adapters && !o.prompts) {
		rc = llm_error(LLM_EINVAL, "--adapters goes with --prompts");
		goto fail;
	}
	if (o.prompts) {
		if ((rc = read_prompts(o.prompts, &o, s.tmpl, &items, &n_items)))
			goto fail;
		if (!n_items) {
			fprintf(stderr, "%s: %s: no prompts\n", prog, o.prompts);
			return llm_cli_finish(prog, 0);
		}
	} else if (!o.chat) {
		items = calloc(1, sizeof(*items));
		n_items = 1;
		items[0].gp = o.gp;
		if (o.prompt) {
			items[0].text = strdup(o.prompt);
			items[0].text_len = strlen(o.prompt);
		} else if (o.file) {
			if ((rc = llm_read_file(o.file, &items[0].text, &items[0].text_len)))
				goto fail;
		}
	}
	if (items && items[0].text &&
	    llm_utf8_invalid_at(items[0].text, items[0].text_len) >= 0 && !o.prompts) {
		rc = llm_error(LLM_EINVAL, "%s: the prompt is not valid UTF-8 (byte %lld)",
		               o.file ? o.file : "-p",
		               (long long)llm_utf8_invalid_at(items[0].text,
		                                              items[0].text_len));
		goto fail;
	}
	for (int i = 0; o.prompts && i < n_items; i++) {
		int64_t bad = items[i].text ? llm_utf8_invalid_at(items[i].text,
		                                                  items[i].text_len) : -1;
		if (bad >= 0) {
			rc = llm_error(LLM_EINVAL, "%s: prompt %d is not valid UTF-8 (byte "
			               "%lld)", o.prompts, i + 1, (long long)bad);
			goto fail;
		}
	}

	/* the context: sized for the prompts it will hold */
	struct llm_ctx_params cp;
	llm_ctx_params_default(&cp);
	cp.n_threads = o.threads;
	cp.device = o.device;
	cp.n_ctx = o.n_ctx;
	if (o.n_batch)
		cp.n_batch = o.n_batch;
	if (o.kv_block)
		cp.kv_block_size = o.kv_block;
	cp.kv_type = o.kv_type;
	int max_beams = o.gp.n_beams > 0 ? o.gp.n_beams : 1;
	for (int i = 0; i < n_items; i++)
		if (items[i].gp.n_beams > max_beams)
			max_beams = items[i].gp.n_beams;
	cp.n_seq_max = (o.chat ? 1 : (n_items < o.batch ? n_items : o.batch)) * max_beams;
	if (!o.chat) {
		/* exact KV need, known once the prompts are tokenized */
		int n_ctx = cp.n_ctx ? cp.n_ctx
		            : (s.m->hp.n_ctx_train < 4096 ? s.m->hp.n_ctx_train : 4096);
		for (int i = 0; i < n_items; i++)
			if ((rc = tokenize_prompt(&o, s.tok, &items[i], o.special))) {
				if (o.prompts)
					llm_error_prefix(rc, "%s: prompt %d", o.prompts, i + 1);
				goto fail;
			}
		cp.kv_blocks = kv_blocks_needed(&o, items, n_items, n_ctx,
		                                cp.kv_block_size);
	}
	if ((rc = llm_ctx_new(&s.ctx, s.m, &cp)))
		goto fail;
	for (int i = 0; i < o.n_lora; i++)
		if ((rc = llm_ctx_add_lora(s.ctx, lora[i], o.lora_scale[i])))
			goto fail;

	if (o.adapters) {
		struct llm_adapters_params ap;
		llm_adapters_params_default(&ap);
		ap.dir = o.adapters;
		ap.max_active = 0;
		ap.backend = llm_ctx_backend(s.ctx);
		if ((rc = llm_adapters_new(&s.adapters, s.m, &ap)))
			goto fail;
		for (int i = 0; i < n_items; i++) {
			const char *a = items[i].adapter;
			items[i].adapter_id = -1;
			if (!a || !*a || !strcmp(a, "base"))
				continue;
			if ((items[i].adapter_id = llm_adapters_find(s.adapters, a)) < 0) {
				rc = llm_error_prefix(items[i].adapter_id, "%s: prompt %d", o.prompts,
				                      i + 1);
				goto fail;
			}
		}
		rc = run_items_adapters(&s, items, n_items, s.adapters);
	} else {
		rc = o.chat ? run_chat(&s) : run_items(&s, items, n_items);
	}
	if (rc)
		goto fail;
	for (int i = 0; i < n_items; i++)
		item_free(&items[i]);
	free(items);
	llm_ctx_free(s.ctx);
	llm_adapters_free(s.adapters);
	free_lora(&o, lora);
	llm_tokenizer_free(s.tok);
	llm_model_free(s.m);
	for (int i = 0; i < o.gp.n_stop; i++)
		free(o.stops[i]);
	return llm_cli_finish(prog, 0);
fail:
	fflush(stdout);
	llm_cli_report(prog);
	llm_ctx_free(s.ctx);
	llm_adapters_free(s.adapters);
	free_lora(&o, lora);
	return llm_cli_finish(prog, 1);
}
