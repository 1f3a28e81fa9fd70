/* llm-convert - import llama2.c / Hugging Face checkpoints, or make
 * random-weight models of real shapes, as GGUF. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/cli.h"
#include "llmkit/convert.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"

enum {
	OPT_LLAMA2C = 256, OPT_HF, OPT_DUMMY, OPT_TOKENIZER, OPT_TOKJSON, OPT_GPT2,
	OPT_DTYPE, OPT_SEED, OPT_CTX, OPT_NAME, OPT_PRE, OPT_PROGRESS,
};

static const struct llm_opt opts[] = {
	{ OPT_LLAMA2C, "llama2c", "FILE", "\nInput (exactly one)\n"
	  "llama2.c checkpoint (.bin, v0/v1/v2 header)" },
	{ OPT_HF, "hf", "DIR", "Hugging Face directory (config.json, "
	  "*.safetensors, tokenizer.json)" },
	{ OPT_DUMMY, "dummy", "SHAPE", "random weights of a model's shape; "
	  "'list' shows the shapes" },
	{ 'o', "output", "FILE", "\nOutput\nGGUF file to write ('-': stdout); required" },
	{ OPT_DTYPE, "dtype", "TYPE", "f32, f16 or bf16 for the matrices (default: "
	  "the source's; f32 for llama2.c and dummies)" },
	{ OPT_CTX, "ctx", "N", "context length to record (default: the source's)" },
	{ OPT_NAME, "name", "NAME", "general.name (default: from the input)" },
	{ OPT_TOKENIZER, "tokenizer", "FILE", "\nTokenizer\nllama2.c tokenizer.bin "
	  "(required with --llama2c)" },
	{ OPT_TOKJSON, "tokenizer-json", "FILE", "Hugging Face tokenizer.json "
	  "(--dummy)" },
	{ OPT_GPT2, "gpt2", "DIR", "GPT-2 encoder.json + vocab.bpe (--dummy)" },
	{ OPT_PRE, "pre", "NAME", "tokenizer.ggml.pre to record (default: detected)" },
	{ OPT_SEED, "seed", "N", "\nOther\nseed of the dummy weights (default: 0)" },
	{ 't', "threads", "N", "threads converting (default: all cores)" },
	{ OPT_PROGRESS, "progress", NULL, "show progress on stderr (default: when "
	  "stderr is a terminal)" },
	{ 'v', "verbose", NULL, "print a summary on stderr" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-convert",
	"(--llama2c FILE --tokenizer FILE | --hf DIR | --dummy SHAPE) -o FILE",
	"Convert a llama2.c or Hugging Face checkpoint to GGUF, or make a\n"
	"random-weight model of a real model's shape.",
	opts,
	"Examples:\n"
	"  llm-convert --llama2c stories260K.bin --tokenizer tok512.bin -o s.gguf\n"
	"  llm-convert --hf ./TinyLlama-1.1B-Chat-v1.0 --dtype f16 -o tl.gguf\n"
	"  llm-convert --dummy TinyLlama-1.1B --dtype f16 -o bench.gguf\n"
	"  llm-convert --dummy 'custom:dim=256,layers=4,heads=4,vocab=512' -o t.gguf",
};

struct progress {
	bool on;
	double t0;
	int last;
};

static void show_progress(void *user, const char *tensor, uint64_t done,
                          uint64_t total)
{
	struct progress *p = user;
	int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
	if (!p->on || (pct == p->last && done < total))
		return;
	p->last = pct;
	fprintf(stderr, "\r%3d%% %8.1f MiB  %-40.40s", pct, (double)done / 1048576.0,
	        tensor);
	if (done >= total)
		fputc('\n', stderr);
}

static void list_shapes(void)
{
	printf("%-16s %6s %6s %5s %8s %6s %7s %7s %10s %s\n", "shape", "dim",
	       "layers", "heads", "kv_heads", "ffn", "vocab", "ctx", "params", "notes");
	for (int i = 0; i < llm_model_shape_count(); i++) {
		const struct llm_model_shape *s = llm_model_shape_get(i);
		printf("%-16s %6" PRId64 " %6" PRId64 " %5" PRId64 " %8" PRId64 " %6" PRId64
		       " %7" PRId64 " %7" PRId64 " %9.1fM theta=%g%s%s\n", s->name,
		       s->n_embd, s->n_layer, s->n_head, s->n_head_kv, s->n_ff, s->n_vocab,
		       s->n_ctx, (double)llm_model_shape_params(s) / 1e6, s->rope_theta,
		       s->tied ? " tied" : "",
		       s->rope_scaling == LLM_ROPE_SCALING_LLAMA3 ? " llama3-rope" : "");
	}
}

int main(int argc, char **argv)
{
	struct llm_convert_opts o;
	struct llm_convert *c = NULL;
	const char *llama2c = NULL, *hf = NULL, *dummy = NULL, *output = NULL, *arg;
	struct progress prog = { isatty(2), 0, -1 };
	bool verbose = false;
	int ch, rc;

	llm_convert_opts_init(&o);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	o.n_threads = ncpu > 0 ? (ncpu > 64 ? 64 : (int)ncpu) : 1;
	while ((ch = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (ch) {
		case OPT_LLAMA2C: llama2c = arg; break;
		case OPT_HF: hf = arg; break;
		case OPT_DUMMY: dummy = arg; break;
		case 'o': output = arg; break;
		case OPT_TOKENIZER: o.tok_llama2c = arg; break;
		case OPT_TOKJSON: o.tok_json = arg; break;
		case OPT_GPT2: o.tok_gpt2 = arg; break;
		case OPT_NAME: o.name = arg; break;
		case OPT_PRE: o.pre = arg; break;
		case OPT_PROGRESS: prog.on = true; break;
		case 'v': verbose = true; break;
		case OPT_DTYPE:
			o.dtype = llm_dtype_from_name(arg);
			if (o.dtype != LLM_F32 && o.dtype != LLM_F16 && o.dtype != LLM_BF16)
				llm_cli_usage_error(&cli, "--dtype: \"%s\" is not f32, f16 or bf16",
				                    arg);
			break;
		case OPT_SEED: {
			int64_t v;
			if (llm_parse_i64("--seed", arg, 0, INT64_MAX, &v))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			o.seed = (uint64_t)v;
			break;
		}
		case OPT_CTX:
			if (llm_parse_i64("--ctx", arg, 1, (int64_t)1 << 31, &o.n_ctx))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case 't':
			if (llm_parse_int("--threads", arg, 1, 64, &o.n_threads))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		default:
			llm_cli_usage_error(&cli, "unexpected option");
		}
	}
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!!llama2c + !!hf + !!dummy != 1)
		llm_cli_usage_error(&cli, "give exactly one of --llama2c, --hf, --dummy");
	if (dummy && !strcmp(dummy, "list")) {
		list_shapes();
		return llm_cli_finish(cli.prog, 0);
	}
	if (!output)
		llm_cli_usage_error(&cli, "no output file (-o FILE, or -o - for stdout)");
	if (llama2c && !o.tok_llama2c)
		llm_cli_usage_error(&cli, "--llama2c needs --tokenizer TOKENIZER.bin");
	if ((llama2c || hf) && (o.tok_json || o.tok_gpt2))
		llm_cli_usage_error(&cli, "--tokenizer-json and --gpt2 go with --dummy");
	if (hf && o.tok_llama2c)
		llm_cli_usage_error(&cli, "--hf reads DIR/tokenizer.json; --tokenizer "
		                    "goes with --llama2c or --dummy");
	if (!!o.tok_llama2c + !!o.tok_json + !!o.tok_gpt2 > 1)
		llm_cli_usage_error(&cli, "give at most one tokenizer");

	o.progress = show_progress;
	o.progress_user = &prog;
	prog.t0 = llm_time_now();
	if (llama2c)
		rc = llm_convert_open_llama2c(&c, llama2c, &o);
	else if (hf)
		rc = llm_convert_open_hf(&c, hf, &o);
	else
		rc = llm_convert_open_dummy(&c, dummy, &o);
	if (!rc)
		rc = llm_convert_write(c, output);
	if (prog.on && prog.last >= 0 && prog.last < 100)
		fputc('\n', stderr);
	if (rc) {
		llm_cli_report(cli.prog);
		llm_convert_free(c);
		return llm_cli_finish(cli.prog, 1);
	}
	if (verbose)
		fprintf(stderr, "%s: wrote %s: %.1f MiB of tensors in %.2f s\n", cli.prog,
		        output, (double)llm_convert_data_bytes(c) / 1048576.0,
		        llm_time_now() - prog.t0);
	llm_convert_free(c);
	return llm_cli_finish(cli.prog, 0);
}
