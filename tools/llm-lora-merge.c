/*
 * llm-lora-merge - bake LoRA adapters into a base model (the weighted sum
 * of their deltas), or combine them into one adapter (--cat).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"

enum { OPT_CAT = 256, OPT_DTYPE, OPT_FORMAT };

#define MAX_ADAPTERS 64

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "\nInput\nbase model (GGUF; a path or a name in the "
	                        "model directories)" },
	{ 'a', "adapter", "PATH[:W]", "adapter: a PEFT directory or a GGUF adapter, "
	                              "with weight W (default 1); repeatable" },
	{ 'o', "output", "PATH", "\nOutput\nwhere to write ('-': standard output); "
	                         "never one of the inputs" },
	{ OPT_DTYPE, "dtype", "TYPE", "type of the merged matrices: keep (each "
	                              "base tensor's type, f32 where it cannot be "
	                              "written), f32, f16, bf16 or a quantized type "
	                              "the library can write (default: keep)" },
	{ OPT_CAT, "cat", NULL, "write one adapter holding all the weighted "
	                        "adapters side by side (ranks add up) instead of "
	                        "a merged model" },
	{ OPT_FORMAT, "format", "FMT", "--cat output: peft (a directory) or gguf (a "
	                               "llama.cpp adapter file) (default: peft)" },
	{ 't', "threads", "N", "accepted for uniformity; merging is bound by reading "
	                       "and writing the model" },
	{ 'v', "verbose", NULL, "what is merged, on stderr" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-lora-merge", "-m BASE.gguf -a ADAPTER[:W]... -o OUT",
	"Merge LoRA adapters into a base model: every adapted projection becomes "
	"W + sum_i w_i * scale_i * B_i A_i, written as a GGUF model (atomically; "
	"'-' streams it to standard output, e.g. into llm-quantize).  With --cat "
	"the adapters are combined into one adapter instead (PEFT's \"cat\" "
	"combination), which also converts between the PEFT and GGUF formats.",
	opts,
	"Examples:\n"
	"  llm-lora-merge -m base.gguf -a support/ -o support.gguf\n"
	"  llm-lora-merge -m base.gguf -a support/ -a sales/:0.5 --dtype f16 -o out.gguf\n"
	"  llm-lora-merge -m base.gguf -a support/ -o - | llm-quantize -t q4_k - > q4.gguf\n"
	"  llm-lora-merge -m base.gguf -a support/ --cat --format gguf -o support.gguf",
};

/* Types a merge can write: floats and whatever the library can quantize. */
static int writable_types(int *out)
{
	int n = 0;
	for (int t = 0; t < LLM_DTYPE_COUNT; t++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(t);
		/* q8_1 and q8_k hold activations, never weights */
		if (tr && tr->name && tr->from_float && t != LLM_Q8_1 && t != LLM_Q8_K &&
		    (t == LLM_F32 || t == LLM_F16 || t == LLM_BF16 || tr->quantized))
			out[n++] = t;
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *out = NULL, *arg;
	char *paths[MAX_ADAPTERS];
	float weights[MAX_ADAPTERS];
	struct llm_lora *as[MAX_ADAPTERS] = { 0 };
	int n = 0, c, threads = 1, dtype = -1, status = 1, rc;
	bool cat = false, gguf_out = false, verbose = false;
	struct llm_model *m = NULL;
	struct llm_lora *combined = NULL;
	char path[4096];

	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': model = arg; break;
		case 'a':
			if (n == MAX_ADAPTERS)
				llm_cli_usage_error(&cli, "at most %d adapters", MAX_ADAPTERS);
			paths[n] = malloc(4096);
			if (!paths[n] || llm_lora_parse_spec(arg, paths[n], 4096, &weights[n]))
				llm_cli_usage_error(&cli, "-a: %s", llm_errmsg());
			n++;
			break;
		case 'o': out = arg; break;
		case OPT_DTYPE:
			if (strcmp(arg, "keep")) {
				int types[LLM_DTYPE_COUNT], nt = writable_types(types);
				if (llm_parse_dtype("--dtype", arg, types, nt, &dtype))
					llm_cli_usage_error(&cli, "%s (or keep)", llm_errmsg());
			} else {
				dtype = -1;
			}
			break;
		case OPT_CAT: cat = true; break;
		case OPT_FORMAT:
			if (!strcmp(arg, "gguf"))
				gguf_out = true;
			else if (!strcmp(arg, "peft"))
				gguf_out = false;
			else
				llm_cli_usage_error(&cli, "--format: '%s' is not peft or gguf", arg);
			break;
		case 't':
			if (llm_parse_int("--threads", arg, 1, 4096, &threads))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case 'v': verbose = true; break;
		default:
			llm_cli_usage_error(&cli, "unhandled option");
		}
	}
	(void)threads;
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!n)
		llm_cli_usage_error(&cli, "no adapter given (-a PATH[:W])");
	if (!out)
		llm_cli_usage_error(&cli, "no output given (-o PATH, '-' for stdout)");
	if (cat && dtype >= 0)
		llm_cli_usage_error(&cli, "--dtype is for merged models (adapters are f32)");
	if (cat && !gguf_out && !strcmp(out, "-"))
		llm_cli_usage_error(&cli, "a PEFT directory cannot go to standard output "
		                    "(use --format gguf)");

	if ((rc = llm_find_model(model ? model : LLM_DEFAULT_MODEL, path, sizeof(path))))
		goto fail;
	if (strcmp(out, "-")) {
		bool clash = llm_same_file(out, path);
		for (int i = 0; i < n && !clash; i++)
			clash = llm_same_file(out, paths[i]);
		if (clash) {
			fprintf(stderr, "%s: %s: the output would overwrite an input\n",
			        cli.prog, out);
			goto done;
		}
	}
	/* each tensor is read once: mapping beats copying into memory */
	if ((rc = llm_model_load_ex(&m, path, &(struct llm_model_params){ .use_mmap = true })))
		goto fail;
	for (int i = 0; i < n; i++) {
		if ((rc = llm_lora_load(&as[i], paths[i], m)))
			goto fail;
		if (verbose)
			fprintf(stderr, "%s: %s: weight %g, rank %d, scale %g, %lld parameters\n",
			        cli.prog, paths[i], weights[i], as[i]->rank, as[i]->scale,
			        (long long)as[i]->n_params);
	}
	if (cat) {
		/* one adapter at weight 1 is written as it is (a format
		 * conversion keeps its alpha, rsLoRA and ranks) */
		const struct llm_lora *w = as[0];
		if ((n > 1 || weights[0] != 1) &&
		    (rc = llm_lora_cat(&combined, as, weights, n, m)))
			goto fail;
		if (combined)
			w = combined;
		rc = gguf_out ? llm_lora_save_gguf(w, m, out) : llm_lora_save_peft(w, m, out);
	} else {
		rc = llm_lora_merge_write(m, as, weights, n, dtype, out);
	}
	if (rc)
		goto fail;
	status = 0;
	goto done;
fail:
	llm_cli_report(cli.prog);
done:
	llm_lora_free(combined);
	for (int i = 0; i < n; i++) {
		llm_lora_free(as[i]);
		free(paths[i]);
	}
	llm_model_free(m);
	return llm_cli_finish(cli.prog, status);
}
