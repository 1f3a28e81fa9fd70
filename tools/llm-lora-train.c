/*
 * llm-lora-train - fine-tune a model on text or JSONL: a LoRA adapter on a
 * frozen base (any dtype the CPU computes with), or every weight (--full);
 * checkpoints, --resume, held-out evaluation; adapters also on a GPU
 * (--device cuda).
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/tokenizer.h"
#include "llmkit/train.h"
#include "llmkit/util.h"

enum {
	OPT_DATA = 256, OPT_EVAL_DATA, OPT_EVAL_SPLIT, OPT_EVAL_EVERY, OPT_EVAL_MAX,
	OPT_ALPHA, OPT_TARGETS, OPT_DROPOUT, OPT_RSLORA, OPT_LR, OPT_MIN_LR,
	OPT_WARMUP, OPT_WD, OPT_CLIP, OPT_STEPS, OPT_EPOCHS, OPT_MAX_TIME, OPT_BATCH,
	OPT_CTX, OPT_ACCUM, OPT_SEED, OPT_FORMAT, OPT_FULL, OPT_QAT, OPT_RECOMPUTE,
	OPT_INIT, OPT_CKPT_EVERY, OPT_CKPT, OPT_RESUME, OPT_CHAT_TEMPLATE,
	OPT_SKIP_BAD, OPT_PROGRESS, OPT_LOG_EVERY, OPT_EVAL_ONLY, OPT_NO_SHUFFLE,
	OPT_MMAP, OPT_DEVICE,
};

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "base model (GGUF; default: " LLM_DEFAULT_MODEL ")" },
	{ OPT_DATA, "data", "FILE", "\nData\ntraining data: plain text, or JSONL of "
	                            "{\"prompt\",\"completion\"}, {\"text\"} or "
	                            "{\"messages\"}; .gz is inflated" },
	{ OPT_EVAL_DATA, "eval-data", "FILE", "held-out data, same formats" },
	{ OPT_EVAL_SPLIT, "eval-split", "F", "hold out the last fraction F of --data "
	                                     "(default: 0, none)" },
	{ OPT_EVAL_EVERY, "eval-every", "N", "evaluate every N steps and at the end "
	                                     "(default: 50; 0: only at the end)" },
	{ OPT_EVAL_MAX, "eval-max", "N", "at most N held-out sequences per "
	                                 "evaluation (default: 256)" },
	{ OPT_CHAT_TEMPLATE, "chat-template", "NAME", "template for {\"messages\"} "
	                                              "(default: the model's)" },
	{ OPT_SKIP_BAD, "skip-bad", NULL, "skip bad JSONL lines (reported) instead "
	                                  "of stopping" },
	{ OPT_NO_SHUFFLE, "no-shuffle", NULL, "visit sequences in file order" },
	{ 'r', "rank", "N", "\nAdapter\nLoRA rank (default: 8)" },
	{ OPT_ALPHA, "alpha", "F", "LoRA alpha; scale alpha/r (default: 2r)" },
	{ OPT_TARGETS, "targets", "LIST", "projections: q,k,v,o,gate,up,down, attn, "
	                                  "mlp or all (default: all)" },
	{ OPT_DROPOUT, "dropout", "F", "dropout on the adapters' input (default: 0)" },
	{ OPT_RSLORA, "rslora", NULL, "rank-stabilised scale alpha/sqrt(r)" },
	{ OPT_INIT, "init", "DIR", "start from this adapter instead of a fresh one" },
	{ OPT_FULL, "full", NULL, "train every weight instead (-o is a GGUF model)" },
	{ OPT_QAT, "qat", "TYPE", "quantization-aware: forward through Q(W + sBA) "
	                          "in TYPE, straight-through gradient" },
	{ OPT_LR, "lr", "F", "\nOptimisation\npeak learning rate (default: 1e-3; "
	                     "--full: 1e-4)" },
	{ OPT_MIN_LR, "min-lr", "F", "cosine decays to F x lr (default: 0.1)" },
	{ OPT_WARMUP, "warmup", "N", "linear warmup steps (default: 0)" },
	{ OPT_WD, "weight-decay", "F", "AdamW weight decay (default: 0)" },
	{ OPT_CLIP, "clip", "F", "clip the global gradient norm to F; 0: off "
	                         "(default: 1)" },
	{ OPT_STEPS, "steps", "N", "optimizer steps (default: one epoch)" },
	{ OPT_EPOCHS, "epochs", "F", "passes over the data (instead of --steps)" },
	{ OPT_MAX_TIME, "max-time", "SEC", "stop (saving everything) after SEC "
	                                   "seconds" },
	{ OPT_BATCH, "batch", "N", "sequences per micro-batch (default: 4)" },
	{ OPT_CTX, "ctx", "N", "tokens per sequence (default: 256, at most the "
	                       "model's context)" },
	{ OPT_ACCUM, "grad-accum", "N", "micro-batches per step (default: 1)" },
	{ OPT_RECOMPUTE, "recompute", NULL, "keep only layer inputs, recompute the "
	                                    "rest in the backward (less memory)" },
	{ OPT_SEED, "seed", "N", "adapter init, data order, dropout (default: 42)" },
	{ 'o', "output", "DIR", "\nOutput\nthe adapter: a PEFT directory, or with "
	                        "--format gguf a file; --full: a GGUF model" },
	{ OPT_FORMAT, "format", "FMT", "peft or gguf (default: peft)" },
	{ OPT_CKPT_EVERY, "checkpoint-every", "N", "write a checkpoint every N steps "
	                                           "(default: 0, at the end and on "
	                                           "Ctrl-C only)" },
	{ OPT_CKPT, "checkpoint", "FILE", "checkpoint file (default: "
	                                  "OUTPUT/checkpoint.llmt, or OUTPUT.llmt)" },
	{ OPT_RESUME, "resume", NULL, "continue from the checkpoint, bit for bit" },
	{ OPT_EVAL_ONLY, "eval-only", NULL, "print the held-out loss of the model "
	                                    "(with --init: adapted) and exit" },
	{ OPT_LOG_EVERY, "log-every", "N", "a progress line every N steps (default: "
	                                   "10)" },
	{ OPT_PROGRESS, "progress", NULL, "progress bar (default: when stderr is a "
	                                  "terminal)" },
	{ 'q', "quiet", NULL, "no progress output" },
	{ 't', "threads", "N", "threads (default: all CPUs)" },
	{ OPT_DEVICE, "device", LLM_CLI_DEVICE_ARG, LLM_CLI_DEVICE_HELP
	                                            " (cuda: LoRA adapters only)" },
	{ OPT_MMAP, "mmap", NULL, "map the model file instead of reading it" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-lora-train", "-m MODEL --data FILE -o OUT [OPTION]...",
	"Fine-tune a model: train a LoRA adapter on a frozen base (f32, f16 or bf16 "
	"weights), or every weight with --full.  Progress goes to stderr; "
	"checkpoints let a stopped run continue exactly where it was.",
	opts,
	"Examples:\n"
	"  llm-lora-train -m base.gguf --data support.jsonl -r 8 --alpha 16 -o support/\n"
	"  llm-lora-train -m base.gguf --data book.txt --eval-split 0.1 --steps 500 \\\n"
	"      --checkpoint-every 50 -o book/    (then --resume after a crash)\n"
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void warn_line(void *user, const char *msg)
{
	int *n = user;
	if ((*n)++ < 20)
		fprintf(stderr, "%s: warning: skipped %s\n", cli.prog, msg);
}

/* What a checkpoint records beside the trainer's state: where the data
 * cursor is, and the settings that must not change across a resume. */
struct ckpt_extra {
	char magic[8];
	int64_t cursor;
	int64_t n_seqs;
	uint64_t seed;
	int32_t batch, ctx, accum, rank;
	uint32_t targets;
	int32_t full;
	int64_t total_steps;
	double t_spent;
};

struct run {
	struct llm_trainer *tr;
	struct llm_seqs *train, *eval;
	int batch, ctx, accum;
	int eval_max;
	int32_t *tok, *tgt, *start;
};

static int evaluate(struct run *r, double *loss)
{
	int64_t n = llm_seqs_count(r->eval), tot = 0;
	double nll = 0;
	int rc;
	if (n > r->eval_max)
		n = r->eval_max;
	for (int64_t c = 0; c < n; c += r->batch) {
		int k = n - c < r->batch ? (int)(n - c) : r->batch;
		struct llm_train_batch b = { k, r->tok, r->tgt, r->start };
		double l;
		int64_t nt;
		llm_seqs_fill(r->eval, c, k, r->tok, r->tgt, r->start);
		if ((rc = llm_trainer_eval(r->tr, &b, &l, &nt)))
			return rc;
		nll += l;
		tot += nt;
	}
	*loss = tot ? nll / (double)tot : 0;
	return 0;
}

static void fmt_time(char *buf, size_t n, double s)
{
	if (s < 0 || s > 1e8)
		snprintf(buf, n, "?");
	else if (s >= 3600)
		snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
	else
		snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static int save_output(const char *out, const char *fmt, bool full,
                       struct llm_trainer *tr, struct llm_lora *lora,
                       const struct llm_model *m)
{
	if (full)
		return llm_lora_merge_write(llm_trainer_model(tr), NULL, NULL, 0, -1, out);
	if (!strcmp(fmt, "gguf"))
		return llm_lora_save_gguf(lora, m, out);
	return llm_lora_save_peft(lora, m, out);
}

int main(int argc, char **argv)
{
	const char *model_path = NULL, *data = NULL, *eval_data = NULL, *out = NULL;
	const char *fmt = "peft", *init = NULL, *ckpt = NULL, *chat_tmpl = NULL, *arg;
	const char *targets_s = "all";
	double eval_split = 0, max_time = 0, epochs = 0;
	int64_t steps = 0, ckpt_every = 0;
	int rank = 8, batch = 4, ctx = 256, accum = 1, eval_every = 50, log_every = 10;
	int eval_max = 256, ch, rc = 0, n_warn = 0;
	float alpha = -1, dropout = 0, lr = -1, min_lr = 0.1f, wd = 0, clip = 1;
	int64_t warmup = 0, seed = 42;
	bool rslora = false, full = false, resume = false, skip_bad = false;
	const char *device = NULL;
	bool quiet = false, eval_only = false, shuffle = true, use_mmap = false;
	int progress = -1, n_threads = 0, qat = -1, recompute = 0;
	char model_buf[4096], ckpt_buf[4096];

	while ((ch = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		int e = 0;
		switch (ch) {
		case 'm': model_path = arg; break;
		case OPT_DATA: data = arg; break;
		case OPT_EVAL_DATA: eval_data = arg; break;
		case OPT_EVAL_SPLIT: e = llm_parse_double("--eval-split", arg, 0, 0.9, &eval_split); break;
		case OPT_EVAL_EVERY: e = llm_parse_int("--eval-every", arg, 0, 1 << 30, &eval_every); break;
		case OPT_EVAL_MAX: e = llm_parse_int("--eval-max", arg, 1, 1 << 30, &eval_max); break;
		case OPT_CHAT_TEMPLATE: chat_tmpl = arg; break;
		case OPT_SKIP_BAD: skip_bad = true; break;
		case OPT_NO_SHUFFLE: shuffle = false; break;
		case 'r': e = llm_parse_int("--rank", arg, 1, 4096, &rank); break;
		case OPT_ALPHA: e = llm_parse_float("--alpha", arg, 1e-6, 1e6, &alpha); break;
		case OPT_TARGETS: targets_s = arg; break;
		case OPT_DROPOUT: e = llm_parse_float("--dropout", arg, 0, 0.99, &dropout); break;
		case OPT_RSLORA: rslora = true; break;
		case OPT_INIT: init = arg; break;
		case OPT_FULL: full = true; break;
		case OPT_QAT: {
			static const int ok[] = { LLM_F16, LLM_BF16, LLM_Q4_0, LLM_Q4_1,
			                          LLM_Q5_0, LLM_Q5_1, LLM_Q8_0, LLM_Q2_K,
			                          LLM_Q3_K, LLM_Q4_K, LLM_Q5_K, LLM_Q6_K };
			e = llm_parse_dtype("--qat", arg, ok, sizeof(ok) / sizeof(ok[0]), &qat);
			break;
		}
		case OPT_LR: e = llm_parse_float("--lr", arg, 0, 10, &lr); break;
		case OPT_MIN_LR: e = llm_parse_float("--min-lr", arg, 0, 1, &min_lr); break;
		case OPT_WARMUP: e = llm_parse_i64("--warmup", arg, 0, INT64_MAX, &warmup); break;
		case OPT_WD: e = llm_parse_float("--weight-decay", arg, 0, 10, &wd); break;
		case OPT_CLIP: e = llm_parse_float("--clip", arg, 0, 1e9, &clip); break;
		case OPT_STEPS: e = llm_parse_i64("--steps", arg, 1, INT64_MAX, &steps); break;
		case OPT_EPOCHS: e = llm_parse_double("--epochs", arg, 1e-6, 1e6, &epochs); break;
		case OPT_MAX_TIME: e = llm_parse_double("--max-time", arg, 0, 1e9, &max_time); break;
		case OPT_BATCH: e = llm_parse_int("--batch", arg, 1, 4096, &batch); break;
		case OPT_CTX: e = llm_parse_int("--ctx", arg, 2, 1 << 20, &ctx); break;
		case OPT_ACCUM: e = llm_parse_int("--grad-accum", arg, 1, 1 << 20, &accum); break;
		case OPT_RECOMPUTE: recompute = 1; break;
		case OPT_SEED: e = llm_parse_i64("--seed", arg, 0, INT64_MAX, &seed); break;
		case 'o': out = arg; break;
		case OPT_FORMAT:
			if (strcmp(arg, "peft") && strcmp(arg, "gguf"))
				llm_cli_usage_error(&cli, "--format: \"%s\" is not peft or gguf", arg);
			fmt = arg;
			break;
		case OPT_CKPT_EVERY: e = llm_parse_i64("--checkpoint-every", arg, 0, INT64_MAX, &ckpt_every); break;
		case OPT_CKPT: ckpt = arg; break;
		case OPT_RESUME: resume = true; break;
		case OPT_EVAL_ONLY: eval_only = true; break;
		case OPT_LOG_EVERY: e = llm_parse_int("--log-every", arg, 1, 1 << 30, &log_every); break;
		case OPT_PROGRESS: progress = 1; break;
		case 'q': quiet = true; break;
		case 't': e = llm_parse_int("--threads", arg, 1, 1024, &n_threads); break;
		case OPT_MMAP: use_mmap = true; break;
		case OPT_DEVICE: e = llm_cli_device(arg, &device); break;
		default: llm_cli_usage_error(&cli, "unexpected option");
		}
		if (e)
			llm_cli_usage_error(&cli, "%s", llm_errmsg());
	}
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!eval_only && !data)
		llm_cli_usage_error(&cli, "no training data (--data FILE)");
	if (eval_only && !eval_data && !(data && eval_split > 0))
		llm_cli_usage_error(&cli, "--eval-only needs --eval-data, or --data with "
		                    "--eval-split");
	if (!eval_only && !out)
		llm_cli_usage_error(&cli, "no output (-o DIR)");
	if (eval_data && eval_split > 0)
		llm_cli_usage_error(&cli, "give --eval-data or --eval-split, not both");
	if (steps && epochs > 0)
		llm_cli_usage_error(&cli, "give --steps or --epochs, not both");
	if (device && strcmp(device, "cpu") && (full || qat >= 0))
		llm_cli_usage_error(&cli, "--device %s trains adapters: --full and --qat "
		                    "run on the CPU", device);
	if (full && (init || !strcmp(fmt, "gguf") || dropout > 0))
		llm_cli_usage_error(&cli, "--full trains the model itself: --init, "
		                    "--format and --dropout are for adapters");
	if (alpha < 0)
		alpha = 2.0f * rank;
	if (lr < 0)
		lr = full ? 1e-4f : 1e-3f;
	if (progress < 0)
		progress = isatty(2);
	if (quiet)
		progress = 0;

	struct llm_model *m = NULL;
	struct llm_tokenizer *tok = NULL;
	struct llm_lora *lora = NULL;
	struct llm_train_data *dtrain = NULL, *deval = NULL;
	struct run r = { 0 };
	unsigned tmask;
	void *extra = NULL;
	size_t n_extra = 0;

	if ((rc = llm_find_model(model_path ? model_path : LLM_DEFAULT_MODEL, model_buf,
	                         sizeof(model_buf))) ||
	    (rc = llm_model_load_ex(&m, model_buf,
	                            &(struct llm_model_params){ .use_mmap = use_mmap })) ||
	    (rc = llm_tokenizer_from_gguf(&tok, m->gguf)))
		goto fail;
	if (ctx > m->hp.n_ctx_train)
		ctx = m->hp.n_ctx_train;

	struct llm_data_params dp = { chat_tmpl, skip_bad, warn_line, &n_warn };
	if (data && (rc = llm_data_load(&dtrain, data, tok, m->gguf, &dp)))
		goto fail;
	if (eval_data && (rc = llm_data_load(&deval, eval_data, tok, m->gguf, &dp)))
		goto fail;
	if (eval_split > 0 && (rc = llm_data_split(dtrain, eval_split, &deval)))
		goto fail;
	if (n_warn)
		fprintf(stderr, "%s: %d bad line%s skipped\n", cli.prog, n_warn,
		        n_warn == 1 ? "" : "s");

	if (!full) {
		if (init) {
			if ((rc = llm_lora_load(&lora, init, m)))
				goto fail;
		} else {
			if ((rc = llm_lora_parse_targets(targets_s, &tmask)) ||
			    (rc = llm_lora_new(&lora, m, rank, alpha, tmask, rslora)))
				goto fail;
			llm_lora_init_peft(lora, (uint64_t)seed);
		}
		lora->dropout = dropout;
	}

	struct llm_train_params tp;
	llm_train_params_default(&tp);
	tp.n_threads = n_threads;
	tp.device = device;
	tp.seq_len = ctx - 1 > 0 ? ctx - 1 : 1;
	tp.max_seqs = batch;
	tp.lr = lr;
	tp.lr_min = min_lr;
	tp.warmup = warmup;
	tp.weight_decay = wd;
	tp.grad_clip = clip;
	tp.full = full;
	tp.recompute = recompute;
	tp.dropout = dropout;
	tp.seed = (uint64_t)seed;
	tp.qat_type = qat;
	r.batch = batch;
	r.ctx = tp.seq_len;
	r.accum = accum;
	r.eval_max = eval_max;
	if (dtrain && (rc = llm_seqs_new(&r.train, dtrain, tp.seq_len, (uint64_t)seed,
	                                 shuffle)))
		goto fail;
	if (deval && (rc = llm_seqs_new(&r.eval, deval, tp.seq_len, 0, false)))
		goto fail;
	int64_t per_step = (int64_t)batch * accum;
	if (!steps && r.train) {
		double ep = epochs > 0 ? epochs : 1.0;
		steps = (int64_t)(ep * (double)llm_seqs_count(r.train) / (double)per_step + 0.999);
		if (steps < 1)
			steps = 1;
	}
	tp.total_steps = steps;
	size_t nb = (size_t)batch * tp.seq_len;
	r.tok = malloc(nb * sizeof(int32_t));
	r.tgt = malloc(nb * sizeof(int32_t));
	r.start = malloc(nb * sizeof(int32_t));
	if (!r.tok || !r.tgt || !r.start) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = llm_trainer_new(&r.tr, m, lora, &tp)))
		goto fail;

	if (eval_only) {
		double loss;
		if ((rc = evaluate(&r, &loss)))
			goto fail;
		printf("eval_loss %.6f ppl %.4f sequences %lld\n", loss, exp(loss),
		       (long long)(llm_seqs_count(r.eval) < eval_max ? llm_seqs_count(r.eval)
		                                                     : eval_max));
		goto done;
	}

	if (!ckpt) {
		if (full || !strcmp(fmt, "gguf"))
			snprintf(ckpt_buf, sizeof(ckpt_buf), "%s.llmt", out);
		else
			snprintf(ckpt_buf, sizeof(ckpt_buf), "%s/checkpoint.llmt", out);
		ckpt = ckpt_buf;
	}
	if (!full && !strcmp(fmt, "peft"))
		mkdir(out, 0777);

	struct ckpt_extra ce = { "LLMTRAIN", 0, llm_seqs_count(r.train), (uint64_t)seed,
	                         batch, tp.seq_len, accum, full ? 0 : lora->rank,
	                         full ? 0 : lora->targets, full, steps, 0 };
	if (resume) {
		if ((rc = llm_trainer_load(r.tr, ckpt, &extra, &n_extra)))
			goto fail;
		struct ckpt_extra ck;
		if (n_extra != sizeof(ck)) {
			rc = llm_error(LLM_EFORMAT, "%s: not a checkpoint of llm-lora-train",
			               ckpt);
			goto fail;
		}
		memcpy(&ck, extra, sizeof(ck));
		if (ck.n_seqs != ce.n_seqs || ck.seed != ce.seed || ck.batch != ce.batch ||
		    ck.ctx != ce.ctx || ck.accum != ce.accum || ck.rank != ce.rank ||
		    ck.targets != ce.targets || ck.full != ce.full ||
		    ck.total_steps != ce.total_steps) {
			rc = llm_error(LLM_EINVAL, "%s: written with other settings (data, "
			               "--seed, --batch, --ctx, --grad-accum, --rank, "
			               "--targets, --full or --steps differ)", ckpt);
			goto fail;
		}
		ce.cursor = ck.cursor;
		ce.t_spent = ck.t_spent;
		if (!quiet)
			fprintf(stderr, "%s: resuming %s at step %lld of %lld\n", cli.prog,
			        ckpt, (long long)llm_trainer_steps(r.tr), (long long)steps);
	}

	if (!quiet)
		fprintf(stderr, "%s: %lld training sequences of %d tokens (%lld tokens, "
		        "%lld documents), %lld held out; %lld steps of %d x %d sequences; "
		        "training %s\n", cli.prog, (long long)llm_seqs_count(r.train),
		        tp.seq_len, (long long)llm_data_n_tokens(dtrain),
		        (long long)llm_data_n_docs(dtrain),
		        (long long)(r.eval ? llm_seqs_count(r.eval) : 0), (long long)steps,
		        accum, batch, full ? "every weight" : "a LoRA adapter");

	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	struct llm_train_batch *mb = calloc(accum, sizeof(*mb));
	int32_t *buf = malloc(3 * nb * accum * sizeof(int32_t));
	if (!mb || !buf) {
		free(mb);
		free(buf);
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	double t0 = llm_time_now(), eval_loss = -1, last_loss = 0;
	int64_t tokens_done = 0, step0 = llm_trainer_steps(r.tr);
	bool stopped = false;
	while (llm_trainer_steps(r.tr) < steps) {
		struct llm_train_stats st;
		for (int a = 0; a < accum; a++) {
			int32_t *base = buf + 3 * nb * a;
			llm_seqs_fill(r.train, ce.cursor + (int64_t)a * batch, batch, base,
			              base + nb, base + 2 * nb);
			mb[a] = (struct llm_train_batch){ batch, base, base + nb, base + 2 * nb };
		}
		if ((rc = llm_trainer_step(r.tr, mb, accum, &st)))
			break;
		ce.cursor += per_step;
		tokens_done += (int64_t)per_step * tp.seq_len;
		last_loss = st.loss;
		int64_t s = st.step;
		bool last = s == steps;
		double el = llm_time_now() - t0;
		if (max_time > 0 && ce.t_spent + el >= max_time && !last) {
			stopped = true;
			last = true;
		}
		if (r.eval && ((eval_every && s % eval_every == 0) || last)) {
			if ((rc = evaluate(&r, &eval_loss)))
				break;
		}
		if (!quiet && (progress || s % log_every == 0 || last || s == step0 + 1)) {
			double tps = tokens_done / (el > 0 ? el : 1e-9);
			double eta = (double)(steps - s) * el / (double)(s - step0);
			char eb[32], ev[64] = "";
			fmt_time(eb, sizeof(eb), eta);
			if (eval_loss >= 0)
				snprintf(ev, sizeof(ev), " eval %.4f (ppl %.2f)", eval_loss,
				         exp(eval_loss));
			fprintf(stderr, "%sstep %lld/%lld loss %.4f%s lr %.2e |g| %.3g "
			        "%.0f tok/s ETA %s%s", progress ? "\r" : "", (long long)s,
			        (long long)steps, st.loss, ev, st.lr, st.grad_norm, tps, eb,
			        progress && !last ? "\033[K" : "\n");
		}
		if (interrupted || (ckpt_every && s % ckpt_every == 0) || last) {
			ce.t_spent += llm_time_now() - t0;
			t0 = llm_time_now();
			tokens_done = 0;
			step0 = s;
			if ((rc = llm_trainer_save(r.tr, ckpt, &ce, sizeof(ce))))
				break;
		}
		if (interrupted || stopped)
			break;
	}
	free(mb);
	free(buf);
	if (rc)
		goto fail;
	if ((rc = save_output(out, fmt, full, r.tr, lora, m)))
		goto fail;
	if (!quiet) {
		if (progress)
			fputc('\n', stderr);
		fprintf(stderr, "%s: %s after step %lld: loss %.4f", cli.prog,
		        interrupted ? "interrupted" : stopped ? "time is up" : "done",
		        (long long)llm_trainer_steps(r.tr), last_loss);
		if (eval_loss >= 0)
			fprintf(stderr, ", eval loss %.4f (ppl %.2f)", eval_loss, exp(eval_loss));
		fprintf(stderr, "; wrote %s (checkpoint %s)\n", out, ckpt);
	}
	if (interrupted)
		rc = LLM_ECANCELED;
done:
	free(extra);
	free(r.tok);
	free(r.tgt);
	free(r.start);
	llm_trainer_free(r.tr);
	llm_seqs_free(r.train);
	llm_seqs_free(r.eval);
	llm_data_free(dtrain);
	llm_data_free(deval);
	llm_lora_free(lora);
	llm_tokenizer_free(tok);
	llm_model_free(m);
	return llm_cli_finish(cli.prog, rc == LLM_ECANCELED ? 130 : rc ? 1 : 0);
fail:
	llm_cli_report(cli.prog);
	rc = 1;
	goto done;
}
