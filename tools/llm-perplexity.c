/*
 * llm-perplexity - perplexity and mean NLL of a model over a text, and
 * the KL divergence of its next-token distributions from a base model's.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/perplexity.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static const char *prog = "llm-perplexity";

enum {
	OPT_STRIDE = 256, OPT_KL_BASE, OPT_JSON, OPT_NO_BOS, OPT_CHUNKS, OPT_KV_TYPE,
	OPT_MMAP, OPT_PROGRESS, OPT_LORA, OPT_DEVICE,
};

#define MAX_LORA 16   /* LLM_CTX_MAX_LORA */

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "GGUF model, a path or a name in the model directories "
	                        "(default: " LLM_DEFAULT_MODEL ")" },
	{ OPT_LORA, "lora", "PATH[:SCALE]", "apply a LoRA adapter (PEFT directory or "
	                                    "GGUF adapter) to the model at run time, "
	                                    "scaled (default 1); repeatable" },
	{ 'f', "file", "FILE", "\nInput\ntext to score ('-': standard input; .gz is "
	                       "inflated; default: standard input when it is not a terminal)" },
	{ OPT_NO_BOS, "no-bos", NULL, "do not start the text, and each window, with BOS" },
	{ 'c', "ctx-size", "N", "\nWindows\ntokens per window (default: 512, at most "
	                        "the text)" },
	{ OPT_STRIDE, "stride", "N", "windows start every N tokens; each token is "
	                             "scored once, with at least ctx-size - N tokens "
	                             "before it (default: ctx-size / 2)" },
	{ OPT_CHUNKS, "chunks", "N", "score at most N windows; 0: all (default: 0)" },
	{ 'b', "batch", "N", "windows evaluated together, as sequences of one batch "
	                     "(default: 4)" },
	{ OPT_KL_BASE, "kl-base", "FILE", "\nComparison\nalso run this model (same "
	                                  "vocabulary) and report KL(base || model) of "
	                                  "the next-token distributions and top-1 "
	                                  "agreement" },
	{ OPT_JSON, "json", NULL, "\nOutput\none JSON object on standard output" },
	{ OPT_PROGRESS, "progress", NULL, "windows done on stderr even when it is not "
	                                  "a terminal" },
	{ 't', "threads", "N", "\nResources\nthreads (default: all CPUs)" },
	{ OPT_KV_TYPE, "kv-type", "TYPE", "KV cache element type: f16 or f32 "
	                                  "(default: f16)" },
	{ OPT_MMAP, "mmap", NULL, "map the models instead of reading them" },
	{ OPT_DEVICE, "device", LLM_CLI_DEVICE_ARG, LLM_CLI_DEVICE_HELP },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-perplexity", "[OPTION]... [-f TEXT | < TEXT]",
	"Score a text with a GGUF model: perplexity, mean negative log-likelihood "
	"per token (nats) and its standard error; with --kl-base, how far the "
	"model's next-token distributions are from a base model's.",
	opts,
	"Examples:\n"
	"  llm-perplexity -m model.gguf -f held-out.txt\n"
	"  llm-perplexity -m base.gguf --lora support/ --kl-base base.gguf -f held-out.txt\n"
	"  llm-perplexity -m model-q4_0.gguf --kl-base model.gguf -f text.txt.gz --json\n"
	"  zcat corpus.gz | llm-perplexity -m model.gguf -f - -c 256 --chunks 20",
};

struct options {
	const char *model, *file, *kl_base;
	int n_ctx, stride, chunks, batch, threads;
	bool no_bos, json, mmap, progress;
	enum llm_dtype kv_type;
	char *lora[MAX_LORA];
	float lora_scale[MAX_LORA];
	int n_lora;
	const char *device;
};

static int on_progress(void *user, int done, int total)
{
	(void)user;
	fprintf(stderr, "\r%s: %d/%d windows", prog, done, total);
	if (done == total)
		fputc('\n', stderr);
	return 0;
}

static int load(const char *name, bool use_mmap, struct llm_model **m)
{
	char path[4096];
	struct llm_model_params mp = { .use_mmap = use_mmap };
	int rc = llm_find_model(name, path, sizeof(path));
	return rc ? rc : llm_model_load_ex(m, path, &mp);
}

static int new_ctx(struct llm_model *m, const struct options *o, struct llm_ctx **c)
{
	struct llm_ctx_params cp;
	llm_ctx_params_default(&cp);
	cp.n_threads = o->threads;
	cp.device = o->device;
	cp.n_ctx = o->n_ctx;
	cp.n_batch = o->n_ctx * o->batch;
	cp.n_seq_max = o->batch;
	cp.kv_type = o->kv_type;
	return llm_ctx_new(c, m, &cp);
}

static void print_result(const struct options *o, const struct llm_ppl_result *r,
                         int64_t n_tokens)
{
	if (o->json) {
		json_t *j = json_pack("{s:f, s:f, s:f, s:I, s:I, s:i, s:i, s:i}",
		                      "perplexity", r->ppl, "nll", r->nll,
		                      "nll_stderr", r->nll_stderr,
		                      "tokens", (json_int_t)n_tokens,
		                      "scored", (json_int_t)r->n_scored,
		                      "windows", r->n_windows, "ctx", o->n_ctx,
		                      "stride", o->stride);
		json_object_set_new(j, "model", json_string(o->model));
		if (o->kl_base) {
			json_object_set_new(j, "base", json_string(o->kl_base));
			json_object_set_new(j, "base_perplexity", json_real(r->base_ppl));
			json_object_set_new(j, "base_nll", json_real(r->base_nll));
			json_object_set_new(j, "kl", json_real(r->kl));
			json_object_set_new(j, "kl_stderr", json_real(r->kl_stderr));
			json_object_set_new(j, "kl_max", json_real(r->kl_max));
			json_object_set_new(j, "top1", json_real(r->top1));
		}
		json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10));
		fputc('\n', stdout);
		json_decref(j);
		return;
	}
	printf("perplexity: %.4f\n", r->ppl);
	printf("mean NLL: %.6f +/- %.6f nats over %lld tokens (%d windows of %d, "
	       "stride %d)\n", r->nll, r->nll_stderr, (long long)r->n_scored,
	       r->n_windows, o->n_ctx, o->stride);
	if (o->kl_base) {
		printf("base perplexity: %.4f\n", r->base_ppl);
		printf("KL(base || model): %.6f +/- %.6f nats (max %.4f)\n", r->kl,
		       r->kl_stderr, r->kl_max);
		printf("top-1 agreement: %.4f\n", r->top1);
	}
}

int main(int argc, char **argv)
{
	struct options o = { .model = LLM_DEFAULT_MODEL, .n_ctx = 512, .stride = -1,
	                     .batch = 4, .kv_type = LLM_F16, .progress = isatty(2) };
	const char *arg;
	int c, rc, n_ids = 0;
	struct llm_model *m = NULL, *bm = NULL;
	struct llm_ctx *ctx = NULL, *bctx = NULL;
	struct llm_lora *lora[MAX_LORA] = { 0 };
	struct llm_tokenizer *tok = NULL;
	char *text = NULL;
	int32_t *ids = NULL;
	size_t len;

	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': o.model = arg; break;
		case 'f': o.file = arg; break;
		case OPT_NO_BOS: o.no_bos = true; break;
		case 'c':
			if (llm_parse_int("-c", arg, 2, 1 << 20, &o.n_ctx))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_STRIDE:
			if (llm_parse_int("--stride", arg, 1, 1 << 20, &o.stride))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_CHUNKS:
			if (llm_parse_int("--chunks", arg, 0, 1 << 30, &o.chunks))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case 'b':
			if (llm_parse_int("-b", arg, 1, 1024, &o.batch))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_KL_BASE: o.kl_base = arg; break;
		case OPT_JSON: o.json = true; break;
		case OPT_PROGRESS: o.progress = true; break;
		case 't':
			if (llm_parse_int("-t", arg, 1, 1024, &o.threads))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_KV_TYPE: {
			static const int allowed[] = { LLM_F16, LLM_F32 };
			int t;
			if (llm_parse_dtype("--kv-type", arg, allowed, 2, &t))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			o.kv_type = t;
			break;
		}
		case OPT_MMAP: o.mmap = true; break;
		case OPT_LORA:
			if (o.n_lora == MAX_LORA)
				llm_cli_usage_error(&cli, "at most %d --lora adapters", MAX_LORA);
			if (!(o.lora[o.n_lora] = malloc(4096)) ||
			    llm_lora_parse_spec(arg, o.lora[o.n_lora], 4096,
			                        &o.lora_scale[o.n_lora]))
				llm_cli_usage_error(&cli, "--lora: %s", llm_errmsg());
			o.n_lora++;
			break;
		case OPT_DEVICE:
			if (llm_cli_device(arg, &o.device))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		}
	}
	if (optind != argc)
		llm_cli_usage_error(&cli, "unexpected operand '%s'", argv[optind]);
	if (!o.file) {
		if (isatty(0))
			llm_cli_usage_error(&cli, "no text given (-f FILE, or a pipe "
			                    "on standard input)");
		o.file = "-";
	}
	if (o.stride > o.n_ctx)
		llm_cli_usage_error(&cli, "--stride %d is larger than the window (%d)",
		                    o.stride, o.n_ctx);

	if ((rc = llm_read_file(o.file, &text, &len)) || (rc = load(o.model, o.mmap, &m)) ||
	    (rc = llm_tokenizer_from_gguf(&tok, m->gguf)))
		goto fail;
	if ((rc = llm_tokenize(tok, text, len, !o.no_bos && llm_tokenizer_add_bos(tok),
	                       false, &ids, &n_ids)))
		goto fail;
	if (n_ids < 2) {
		rc = llm_error(LLM_EINVAL, "%s: fewer than 2 tokens to score", o.file);
		goto fail;
	}
	if (o.n_ctx > n_ids)
		o.n_ctx = n_ids;          /* a short text: one window */
	if (o.stride < 0 || o.stride > o.n_ctx)
		o.stride = o.stride < 0 && o.n_ctx / 2 > 0 ? o.n_ctx / 2 : o.n_ctx;
	struct llm_ppl_params pp = {
		.n_ctx = o.n_ctx, .stride = o.stride, .n_seq = o.batch,
		.bos = !o.no_bos && llm_tokenizer_add_bos(tok) ? llm_token_bos(tok) : -1,
	};
	int64_t n_use = n_ids;
	if (o.chunks > 0) {
		/* the tokens the first `chunks` windows cover */
		int64_t end = (int64_t)(o.chunks - 1) * o.stride + o.n_ctx;
		if (end < n_use)
			n_use = end;
	}
	if ((rc = new_ctx(m, &o, &ctx)))
		goto fail;
	for (int i = 0; i < o.n_lora; i++)
		if ((rc = llm_lora_load(&lora[i], o.lora[i], m)) ||
		    (rc = llm_ctx_add_lora(ctx, lora[i], o.lora_scale[i])))
			goto fail;
	if (o.kl_base) {
		if ((rc = load(o.kl_base, o.mmap, &bm)) || (rc = new_ctx(bm, &o, &bctx)))
			goto fail;
	}
	struct llm_ppl_result r;
	if ((rc = llm_perplexity(ctx, bctx, ids, n_use, &pp, &r,
	                         o.progress ? on_progress : NULL, NULL)))
		goto fail;
	print_result(&o, &r, n_use);
	rc = 0;
	goto out;
fail:
	llm_cli_report(prog);
	rc = 1;
out:
	llm_ctx_free(ctx);
	llm_ctx_free(bctx);
	for (int i = 0; i < o.n_lora; i++) {
		llm_lora_free(lora[i]);
		free(o.lora[i]);
	}
	llm_model_free(m);
	llm_model_free(bm);
	llm_tokenizer_free(tok);
	free(ids);
	free(text);
	return rc ? rc : llm_cli_finish(prog, 0);
}
