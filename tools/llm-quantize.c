/*
 * llm-quantize - quantize a GGUF model to GGUF block types, optionally
 * calibrated on text (an importance matrix).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/gguf.h"
#include "llmkit/imatrix.h"
#include "llmkit/model.h"
#include "llmkit/perplexity.h"
#include "llmkit/quant.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static const char *prog = "llm-quantize";

enum {
	OPT_TENSOR_TYPE = 256, OPT_OUTPUT_TYPE, OPT_EMBD_TYPE, OPT_PURE, OPT_CALIBRATE,
	OPT_IMATRIX, OPT_IMATRIX_OUT, OPT_CALIB_CTX, OPT_CALIB_CHUNKS, OPT_THREADS,
	OPT_PROGRESS, OPT_LIST,
};

static const struct llm_opt opts[] = {
	{ 't', "type", "TYPE", "file type: q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k "
	                       "q6_k, mixes q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s "
	                       "q5_k_m, or f16 bf16 f32 (required)" },
	{ OPT_TENSOR_TYPE, "tensor-type", "RE=TYPE", "weights whose name matches the "
	                                             "regular expression RE get TYPE "
	                                             "(repeatable; the first match wins)" },
	{ OPT_OUTPUT_TYPE, "output-tensor-type", "TYPE", "type of output.weight" },
	{ OPT_EMBD_TYPE, "token-embedding-type", "TYPE", "type of token_embd.weight" },
	{ OPT_PURE, "pure", NULL, "every weight matrix TYPE: no mix rules (output, "
	                          "value and down projections at higher precision)" },
	{ OPT_LIST, "list-types", NULL, "print the accepted file types and exit" },
	{ OPT_CALIBRATE, "calibrate", "FILE", "\nCalibration\nrun the model over this "
	                                      "text (.gz ok) and quantize by weighted "
	                                      "least squares against its activations" },
	{ OPT_IMATRIX, "imatrix", "FILE", "use an importance matrix saved before (ours "
	                                  "or llama.cpp's imatrix GGUF)" },
	{ OPT_IMATRIX_OUT, "imatrix-out", "FILE", "save the importance matrix "
	                                          "--calibrate collected" },
	{ OPT_CALIB_CTX, "calib-ctx", "N", "tokens per calibration window (default: 256)" },
	{ OPT_CALIB_CHUNKS, "calib-chunks", "N", "at most N windows; 0: all of the text "
	                                         "(default: 0)" },
	{ OPT_THREADS, "threads", "N", "\nResources\nthreads (default: all CPUs)" },
	{ OPT_PROGRESS, "progress", NULL, "a line per tensor even when stderr is not a "
	                                  "terminal" },
	{ 'q', "quiet", NULL, "no progress, notices or summary" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-quantize", "[OPTION]... -t TYPE IN.gguf OUT.gguf",
	"Quantize a GGUF model to block types llama.cpp reads.  IN or OUT may be "
	"'-' (standard input / output).  Norms stay f32; weights whose rows do not "
	"fit the type's blocks keep a compatible type, with a notice.",
	opts,
	"Examples:\n"
	"  llm-quantize -t q8_0 model.gguf model-q8_0.gguf\n"
	"  llm-quantize -t q4_k_m --calibrate train.txt --imatrix-out m.imatrix "
	"model.gguf model-q4km.gguf\n"
	"  llm-quantize -t q4_k --imatrix m.imatrix --tensor-type 'attn_v=q6_k' "
	"model.gguf out.gguf\n"
	"  llm-convert --dummy stories110M -o - | llm-quantize -t q4_0 - - > q.gguf",
};

struct state {
	bool quiet, lines;
};

static void on_notice(void *user, const char *msg)
{
	struct state *s = user;
	if (!s->quiet)
		fprintf(stderr, "%s: notice: %s\n", prog, msg);
}

static void on_progress(void *user, int i, int n, const char *name, int from, int to,
                        uint64_t in, uint64_t out)
{
	struct state *s = user;
	if (s->quiet || !s->lines)
		return;
	fprintf(stderr, "[%4d/%4d] %-32s %5s -> %-5s %9.1f KiB -> %9.1f KiB\n", i, n, name,
	        llm_dtype_name(from), llm_dtype_name(to), in / 1024.0, out / 1024.0);
}

static int calib_progress(void *user, int done, int total)
{
	struct state *s = user;
	if (!s->quiet && s->lines)
		fprintf(stderr, "\r%s: calibrating: %d/%d windows", prog, done, total);
	return 0;
}

static int parse_type(const char *what, const char *s)
{
	int t = llm_dtype_from_name(s);
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	if (!tr || !tr->from_float || t == LLM_Q8_1 || t == LLM_Q8_K)
		llm_cli_usage_error(&cli, "%s: unknown or unwritable type '%s'", what, s);
	return t;
}

/* Run the model over the text with an importance matrix attached. */
static int calibrate(struct llm_model *m, const char *path, int n_ctx, int chunks,
                     int threads, struct llm_imatrix *im, struct state *st)
{
	struct llm_tokenizer *tok = NULL;
	struct llm_ctx *ctx = NULL;
	char *text = NULL;
	int32_t *ids = NULL;
	int n_ids = 0, rc;
	size_t len;
	struct llm_ppl_result r;

	if ((rc = llm_read_file(path, &text, &len)) ||
	    (rc = llm_tokenizer_from_gguf(&tok, m->gguf)) ||
	    (rc = llm_tokenize(tok, text, len, llm_tokenizer_add_bos(tok), false, &ids,
	                       &n_ids)))
		goto cleanup;
	if (n_ids < 2) {
		rc = llm_error(LLM_EINVAL, "%s: calibration text has fewer than 2 tokens",
		               path);
		goto cleanup;
	}
	if (n_ctx > n_ids)
		n_ctx = n_ids;
	struct llm_ppl_params pp = { .n_ctx = n_ctx, .stride = n_ctx, .n_seq = 1,
	                             .bos = llm_tokenizer_add_bos(tok) ? llm_token_bos(tok) : -1 };
	int64_t n_use = n_ids;
	if (chunks > 0 && (int64_t)chunks * n_ctx < n_use)
		n_use = (int64_t)chunks * n_ctx;
	struct llm_ctx_params cp;
	llm_ctx_params_default(&cp);
	cp.n_threads = threads;
	cp.n_ctx = n_ctx;
	cp.n_batch = n_ctx;
	cp.n_seq_max = 1;
	if ((rc = llm_ctx_new(&ctx, m, &cp)) || (rc = llm_imatrix_attach(im, ctx)))
		goto cleanup;
	rc = llm_perplexity(ctx, NULL, ids, n_use, &pp, &r, calib_progress, st);
	llm_imatrix_detach(im, ctx);
	if (!st->quiet && st->lines)
		fputc('\n', stderr);
	if (rc)
		goto cleanup;
	llm_imatrix_set_chunks(im, r.n_windows, n_ctx, path);
	if (!st->quiet)
		fprintf(stderr, "%s: calibrated on %lld tokens of %s (%d windows of %d; "
		        "perplexity %.4f), %d weights\n", prog, (long long)n_use, path,
		        r.n_windows, n_ctx, r.ppl, llm_imatrix_n_entries(im));
cleanup:
	llm_ctx_free(ctx);
	llm_tokenizer_free(tok);
	free(ids);
	free(text);
	return rc;
}

int main(int argc, char **argv)
{
	struct llm_quantize_params qp = { .output_type = -1, .embd_type = -1 };
	struct llm_quant_override ov[64];
	struct state st = { .lines = isatty(2) };
	const char *arg, *calib = NULL, *im_in = NULL, *im_out = NULL;
	int c, n_ov = 0, calib_ctx = 256, calib_chunks = 0, threads = 0, rc;
	struct llm_gguf *g = NULL;
	struct llm_model *m = NULL;
	struct llm_imatrix *im = NULL;

	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 't':
			qp.ftype = arg;
			break;
		case OPT_TENSOR_TYPE: {
			const char *eq = strrchr(arg, '=');
			if (!eq || eq == arg || !eq[1])
				llm_cli_usage_error(&cli, "--tensor-type '%s': expected RE=TYPE",
				                    arg);
			if (n_ov == (int)(sizeof(ov) / sizeof(ov[0])))
				llm_cli_usage_error(&cli, "--tensor-type: too many");
			char *pat = strndup(arg, (size_t)(eq - arg));
			ov[n_ov].pattern = pat;
			ov[n_ov].type = parse_type("--tensor-type", eq + 1);
			n_ov++;
			break;
		}
		case OPT_OUTPUT_TYPE:
			qp.output_type = parse_type("--output-tensor-type", arg);
			break;
		case OPT_EMBD_TYPE:
			qp.embd_type = parse_type("--token-embedding-type", arg);
			break;
		case OPT_PURE:
			qp.pure = true;
			break;
		case OPT_LIST:
			for (const char *const *f = llm_quant_ftypes(); *f; f++)
				printf("%s\n", *f);
			return llm_cli_finish(prog, 0);
		case OPT_CALIBRATE:
			calib = arg;
			break;
		case OPT_IMATRIX:
			im_in = arg;
			break;
		case OPT_IMATRIX_OUT:
			im_out = arg;
			break;
		case OPT_CALIB_CTX:
			if (llm_parse_int("--calib-ctx", arg, 2, 1 << 20, &calib_ctx))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_CALIB_CHUNKS:
			if (llm_parse_int("--calib-chunks", arg, 0, 1 << 30, &calib_chunks))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_THREADS:
			if (llm_parse_int("--threads", arg, 1, 1024, &threads))
				llm_cli_usage_error(&cli, "%s", llm_errmsg());
			break;
		case OPT_PROGRESS:
			st.lines = true;
			break;
		case 'q':
			st.quiet = true;
			break;
		}
	}
	if (!qp.ftype)
		llm_cli_usage_error(&cli, "no type given (-t TYPE; --list-types)");
	{
		bool known = false;
		for (const char *const *f = llm_quant_ftypes(); *f; f++)
			known |= !strcasecmp(*f, qp.ftype);
		if (!known)
			llm_cli_usage_error(&cli, "unknown type '%s' (--list-types)", qp.ftype);
	}
	if (argc - optind != 2)
		llm_cli_usage_error(&cli, "expected IN and OUT, got %d operands", argc - optind);
	const char *in = argv[optind], *out = argv[optind + 1];
	if (calib && im_in)
		llm_cli_usage_error(&cli, "--calibrate and --imatrix exclude each other");
	if (im_out && !calib)
		llm_cli_usage_error(&cli, "--imatrix-out needs --calibrate");
	if (calib && !strcmp(calib, "-") && !strcmp(in, "-"))
		llm_cli_usage_error(&cli, "the model and the calibration text cannot both "
		                    "come from standard input");
	if (strcmp(out, "-") && llm_same_file(in, out))
		llm_cli_usage_error(&cli, "the output would overwrite the input %s", in);

	if ((rc = llm_gguf_open(&g, in)))
		goto fail;
	if (im_in && (rc = llm_imatrix_load(&im, im_in)))
		goto fail;
	if (calib) {
		if ((rc = llm_model_from_gguf(&m, g)))
			goto fail;
		g = m->gguf;      /* the model owns it now */
		if ((rc = llm_imatrix_new(&im)) ||
		    (rc = calibrate(m, calib, calib_ctx, calib_chunks, threads, im, &st)))
			goto fail;
		if (im_out && (rc = llm_imatrix_save(im, im_out)))
			goto fail;
	}
	qp.imatrix = im;
	qp.overrides = ov;
	qp.n_overrides = n_ov;
	qp.n_threads = threads;
	qp.notice = on_notice;
	qp.progress = on_progress;
	qp.user = &st;
	struct llm_quantize_stats s;
	if ((rc = llm_quantize_model(g, out, &qp, &s)))
		goto fail;
	if (!st.quiet) {
		fprintf(stderr, "%s: %s -> %s (%s): %.2f MiB -> %.2f MiB (%.1f%%); weights "
		        "%.3f -> %.3f bits per weight; tensors:", prog, in, out, qp.ftype,
		        s.bytes_in / 1048576.0, s.bytes_out / 1048576.0,
		        s.bytes_in ? 100.0 * s.bytes_out / s.bytes_in : 0.0,
		        s.n_weights ? 8.0 * s.weight_bytes_in / s.n_weights : 0.0,
		        s.n_weights ? 8.0 * s.weight_bytes_out / s.n_weights : 0.0);
		for (int t = 0; t < LLM_DTYPE_COUNT; t++)
			if (s.count[t])
				fprintf(stderr, " %s %d", llm_dtype_name(t), s.count[t]);
		if (s.n_fallback)
			fprintf(stderr, " (%d kept at a compatible type)", s.n_fallback);
		fputc('\n', stderr);
	}
	llm_imatrix_free(im);
	if (m)
		llm_model_free(m);
	else
		llm_gguf_free(g);
	for (int i = 0; i < n_ov; i++)
		free((char *)ov[i].pattern);
	return llm_cli_finish(prog, 0);
fail:
	llm_cli_report(prog);
	llm_imatrix_free(im);
	if (m)
		llm_model_free(m);
	else
		llm_gguf_free(g);
	for (int i = 0; i < n_ov; i++)
		free((char *)ov[i].pattern);
	return 1;
}
