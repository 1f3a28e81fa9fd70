/*
 * llm-bench - prompt-processing and generation throughput of a GGUF model,
 * single stream and batched; memory bandwidth and the decode roofline; the
 * cost and quality of each decoding strategy.
 *
 * Throughput (pp, tg): every repetition, for each batch size B, a sequence
 * is prefilled with the prompt (p pseudo-random token ids, the same every
 * time), B-1 copies of it are made (forked, then every block unshared, so
 * each sequence reads its own KV memory), and n decode steps each run one
 * forward pass over B tokens, one per sequence, feeding back the arg-max of
 * its logits.  pp = p / prefill seconds; tg = B * n / decode seconds.
 * --full-prefill prefills all B sequences in forward passes instead (pp
 * then is B * p / seconds, one row per B).
 *
 * Strategies: a fixed set of story prompts run as one static batch through
 * llm_generate with each decoding strategy, ignore_eos, the same number of
 * tokens; each strategy in its own child process so its peak memory and CPU
 * time are its own.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmkit/backend.h"
#include "llmkit/bench.h"
#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static const char *prog = "llm-bench";

#define MAX_BATCHES 32
#define MAX_REPS 1000

enum {
	OPT_FULL_PREFILL = 256, OPT_NO_WARMUP, OPT_MEMBW, OPT_MEMBW_SIZE,
	OPT_STRATEGIES, OPT_PROMPTS, OPT_NO_THROUGHPUT, OPT_N_BATCH, OPT_KV_BLOCK, OPT_KV_TYPE, OPT_MMAP, OPT_DEVICE,
};

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "GGUF model, a path or a name in the model directories "
	                        "(default: " LLM_DEFAULT_MODEL ")" },
	{ 'p', "n-prompt", "N", "\nThroughput\nprompt tokens (default: 512); "
	                        "pseudo-random ids, the same in every run" },
	{ 'n', "n-gen", "N", "tokens generated per sequence (default: 128)" },
	{ 'b', "batch", "LIST", "batch sizes: sequences decoded together "
	                        "(default: 1,4,16,64)" },
	{ OPT_FULL_PREFILL, "full-prefill", NULL, "prefill every sequence of a batch "
	                                          "(default: prefill one, copy its KV)" },
	{ OPT_NO_THROUGHPUT, "no-throughput", NULL, "skip the pp/tg measurements" },
	{ OPT_MEMBW, "membw", NULL, "\nRoofline\nmeasure memory read bandwidth and "
	                            "give decode's fraction of it" },
	{ OPT_MEMBW_SIZE, "membw-size", "SIZE", "buffer read by --membw (default: "
	                                        "512M)" },
	{ OPT_STRATEGIES, "strategies", NULL, "\nStrategies\ncompare greedy, sampling "
	                                      "and beam search: speed, CPU, memory, "
	                                      "log-probability" },
	{ OPT_PROMPTS, "prompts", "N", "story prompts run together per strategy "
	                               "(default: 4, at most 8)" },
	{ 'r', "repetitions", "N", "\nMeasurement\nruns of each test; mean and standard "
	                           "deviation are reported (default: 3)" },
	{ OPT_NO_WARMUP, "no-warmup", NULL, "do not run a warm-up pass first" },
	{ 's', "seed", "N", "seed of the prompt ids and of sampling (default: 1234)" },
	{ 't', "threads", "N", "threads (default: all CPUs)" },
	{ OPT_DEVICE, "device", LLM_CLI_DEVICE_ARG, LLM_CLI_DEVICE_HELP },
	{ OPT_N_BATCH, "batch-tokens", "N", "most tokens per forward pass (default: "
	                                    "512)" },
	{ OPT_KV_BLOCK, "kv-block", "N", "positions per KV cache block (default: 16)" },
	{ OPT_KV_TYPE, "kv-type", "TYPE", "KV cache element type: f16 or f32 (default: f16)" },
	{ OPT_MMAP, "mmap", NULL, "map the model instead of reading it into memory on "
	                          "huge pages (starts at once, decodes slower)" },
	{ 'o', "output", "FMT", "\nOutput\ntable, csv or json (default: table)" },
	{ 'v', "verbose", NULL, "progress on stderr" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-bench", "[OPTION]...",
	"Measure prompt processing (pp) and generation (tg) throughput of a GGUF "
	"model, single stream and batched, with optional memory-bandwidth roofline "
	"and a side-by-side cost of decoding strategies.",
	opts,
	"Examples:\n"
	"  llm-bench -m model.gguf -t 4\n"
	"  llm-bench -m model.gguf -b 1,16 --membw -o csv\n"
	"  llm-bench -m model.gguf -p 16 -n 64 --strategies --no-throughput",
};

/* ---------------------------------------------------------------- options */

enum fmt { FMT_TABLE, FMT_CSV, FMT_JSON };

struct options {
	const char *model;
	int n_prompt, n_gen, reps, threads, n_batch, kv_block, n_prompts;
	enum llm_dtype kv_type;
	const char *device;
	bool mmap;
	int batches[MAX_BATCHES], n_batches;
	bool full_prefill, warmup, membw, strategies, throughput, verbose;
	uint64_t membw_size, seed;
	enum fmt fmt;
};

static void die_rc(int rc)
{
	if (rc)
		llm_cli_usage_error(&cli, "%s", llm_errmsg());
}

/* --membw: the memory the computation reads - the GPU's, by a copy
 * kernel, with --device cuda (bytes read and written per second) */
static int measure_bw(const struct options *o, struct llm_membw *w)
{
	if (o->device && !strncmp(o->device, "cuda", 4)) {
		memset(w, 0, sizeof(*w));
		w->bytes = o->membw_size ? o->membw_size : 1ull << 30;
		w->reps = 5;
		int rc = llm_cuda_membw(w->bytes, w->reps, &w->best);
		w->mean = w->best;
		return rc;
	}
	return llm_bench_membw(o->threads, o->membw_size, 5, w);
}

static void parse_batches(struct options *o, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	o->n_batches = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (o->n_batches == MAX_BATCHES)
			llm_cli_usage_error(&cli, "--batch: at most %d sizes", MAX_BATCHES);
		die_rc(llm_parse_int("--batch", t, 1, 4096, &o->batches[o->n_batches++]));
	}
	free(copy);
	if (!o->n_batches)
		llm_cli_usage_error(&cli, "--batch: give sizes such as 1,4,16");
}

static void parse_options(int argc, char **argv, struct options *o)
{
	const char *arg;
	int64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->n_prompt = 512;
	o->n_gen = 128;
	o->reps = 3;
	o->kv_type = LLM_F16;
	o->n_prompts = 4;
	o->warmup = true;
	o->throughput = true;
	o->seed = 1234;
	parse_batches(o, "1,4,16,64");
	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': o->model = arg; break;
		case 'p': die_rc(llm_parse_int("--n-prompt", arg, 1, 1 << 20, &o->n_prompt)); break;
		case 'n': die_rc(llm_parse_int("--n-gen", arg, 1, 1 << 20, &o->n_gen)); break;
		case 'b': parse_batches(o, arg); break;
		case 'r': die_rc(llm_parse_int("--repetitions", arg, 1, MAX_REPS, &o->reps)); break;
		case 't': die_rc(llm_parse_int("--threads", arg, 1, 1024, &o->threads)); break;
		case 's':
			die_rc(llm_parse_i64("--seed", arg, 0, INT64_MAX, &v));
			o->seed = (uint64_t)v;
			break;
		case 'o':
			if (!strcmp(arg, "table"))
				o->fmt = FMT_TABLE;
			else if (!strcmp(arg, "csv"))
				o->fmt = FMT_CSV;
			else if (!strcmp(arg, "json"))
				o->fmt = FMT_JSON;
			else
				llm_cli_usage_error(&cli, "--output: '%s' is not table, csv or "
				                    "json", arg);
			break;
		case 'v': o->verbose = true; break;
		case OPT_FULL_PREFILL: o->full_prefill = true; break;
		case OPT_NO_WARMUP: o->warmup = false; break;
		case OPT_NO_THROUGHPUT: o->throughput = false; break;
		case OPT_MEMBW: o->membw = true; break;
		case OPT_MEMBW_SIZE:
			die_rc(llm_parse_size("--membw-size", arg, &o->membw_size));
			if (o->membw_size < (1 << 20) || o->membw_size > (64ull << 30))
				llm_cli_usage_error(&cli, "--membw-size: %s is outside 1M to 64G",
				                    arg);
			o->membw = true;
			break;
		case OPT_STRATEGIES: o->strategies = true; break;
		case OPT_PROMPTS: die_rc(llm_parse_int("--prompts", arg, 1, 8, &o->n_prompts)); break;
		case OPT_N_BATCH: die_rc(llm_parse_int("--batch-tokens", arg, 1, 1 << 20,
		                                       &o->n_batch)); break;
		case OPT_MMAP: o->mmap = true; break;
		case OPT_DEVICE: die_rc(llm_cli_device(arg, &o->device)); break;
		case OPT_KV_TYPE: {
			static const int kv_types[] = { LLM_F16, LLM_F32 };
			int t;
			die_rc(llm_parse_dtype("--kv-type", arg, kv_types, 2, &t));
			o->kv_type = t;
			break;
		}
		case OPT_KV_BLOCK: die_rc(llm_parse_int("--kv-block", arg, 1, 4096,
		                                        &o->kv_block)); break;
		default:
			llm_cli_usage_error(&cli, "unhandled option");
		}
	}
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!o->throughput && !o->membw && !o->strategies)
		llm_cli_usage_error(&cli, "--no-throughput leaves nothing to measure "
		                    "(add --membw or --strategies)");
	if (!o->threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		o->threads = n > 0 ? (int)n : 1;
	}
}

/* ---------------------------------------------------------------- results */

/* One row of output.  NAN: not measured for this kind of row. */
struct row {
	const char *kind;        /* membw, pp, tg, strategy */
	char test[32];           /* membw, pp512, tg128, greedy, beam=4 ... */
	int batch;               /* sequences per forward (pp/tg), prompts (strategy) */
	int n_prompt, n_gen, reps;
	double tps, tps_sd;      /* tokens per second, mean and stddev */
	double bytes_per_s;      /* membw: best read bandwidth; tg: weights read */
	double roofline;         /* tg: bytes_per_s / membw best */
	double roofline_w;       /* tg: bytes_per_s / the weights' read rate */
	double cpu_per_1k;       /* CPU seconds per 1,000 generated tokens */
	double peak_rss;         /* bytes, of the measuring child */
	double kv_peak;          /* bytes of KV blocks in use at the peak */
	double logprob;          /* mean model log-prob per generated token */
	double fwd_per_tok;      /* tokens run through the model per generated token */
	double samples[MAX_REPS];
};

struct bench {
	struct options *o;
	struct llm_model *m;
	struct llm_tokenizer *tok;     /* NULL unless --strategies */
	char path[4096];
	const char *dtype;
	uint64_t file_bytes;
	double load[3];
	/* --membw: measured before the throughput tests and after them (the
	 * bandwidth a shared machine offers drifts); bw is the better one */
	struct llm_membw membw[2];
	int n_membw;
	double bw;
	struct llm_membw wbw;          /* reading the model's mapped tensors */
	struct row *rows;
	int n_rows;
};

static struct row *row_new(struct bench *b, const char *kind)
{
	struct row *r = realloc(b->rows, (b->n_rows + 1) * sizeof(*r));
	LLM_ASSERT(r);
	b->rows = r;
	r = &b->rows[b->n_rows++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->tps = r->tps_sd = r->bytes_per_s = r->roofline = NAN;
	r->cpu_per_1k = r->peak_rss = r->kv_peak = r->logprob = r->fwd_per_tok = NAN;
	r->roofline_w = NAN;
	return r;
}

static void row_samples(struct row *r, const double *v, int n)
{
	memcpy(r->samples, v, n * sizeof(*v));
	r->reps = n;
	llm_stats_mean_sd(v, n, &r->tps, &r->tps_sd);
}

/* ---------------------------------------------------------------- throughput */

struct tp {
	struct llm_ctx *ctx;
	struct llm_kvcache *kv;
	struct llm_batch batch;
	int32_t *prompt;               /* (n_prompt) */
	int *seqs;                     /* (max batch) */
	int32_t *next;                 /* (max batch) next token of each sequence */
	int n_seqs;
	int n_vocab;
};

static void tp_reset(struct tp *t)
{
	for (int i = 0; i < t->n_seqs; i++)
		llm_kv_seq_free(t->kv, t->seqs[i]);
	t->n_seqs = 0;
}

/* B sequences holding the prompt, each with its first generated token in
 * next[]; *t_pp gets the prefill seconds. */
static int tp_prefill(struct tp *t, const struct options *o, int B, double *t_pp)
{
	int rc, np = o->n_prompt;

	tp_reset(t);
	int n_filled = o->full_prefill ? B : 1;
	for (int s = 0; s < n_filled; s++) {
		if ((rc = t->seqs[s] = llm_kv_seq_new(t->kv)) < 0)
			return rc;
		t->n_seqs++;
	}
	llm_batch_clear(&t->batch);
	for (int s = 0; s < n_filled; s++)
		for (int i = 0; i < np; i++)
			if ((rc = llm_batch_add(&t->batch, t->prompt[i], i, t->seqs[s],
			                        i == np - 1)))
				return rc;
	double t0 = llm_time_now();
	if ((rc = llm_decode(t->ctx, &t->batch)))
		return rc;
	*t_pp = llm_time_now() - t0;
	for (int s = 0; s < n_filled; s++)
		t->next[s] = llm_argmax(llm_ctx_logits(t->ctx, s * np + np - 1), t->n_vocab);
	/* copies of the first, each with its own blocks */
	for (int s = n_filled; s < B; s++) {
		if ((rc = t->seqs[s] = llm_kv_seq_fork(t->kv, t->seqs[0])) < 0)
			return rc;
		t->n_seqs++;
		if ((rc = llm_kv_prepare(t->kv, t->seqs[s], 0, np)))
			return rc;
		t->next[s] = t->next[0];
	}
	return 0;
}

/* n decode steps of B tokens; returns seconds in *t_tg. */
static int tp_decode(struct tp *t, const struct options *o, int B, int n,
                     double *t_tg)
{
	int rc;
	double t0 = llm_time_now();
	for (int step = 0; step < n; step++) {
		llm_batch_clear(&t->batch);
		for (int s = 0; s < B; s++)
			if ((rc = llm_batch_add(&t->batch, t->next[s], o->n_prompt + step,
			                        t->seqs[s], true)))
				return rc;
		if ((rc = llm_decode(t->ctx, &t->batch)))
			return rc;
		for (int s = 0; s < B; s++)
			t->next[s] = llm_argmax(llm_ctx_logits(t->ctx, s), t->n_vocab);
	}
	*t_tg = llm_time_now() - t0;
	return 0;
}

static int run_throughput(struct bench *b)
{
	struct options *o = b->o;
	struct tp t = { 0 };
	struct llm_ctx_params cp;
	double *pp = NULL, *tg = NULL;   /* (n_batches x reps) */
	int max_b = 1, rc;

	for (int i = 0; i < o->n_batches; i++)
		max_b = o->batches[i] > max_b ? o->batches[i] : max_b;
	llm_ctx_params_default(&cp);
	cp.n_threads = o->threads;
	cp.device = o->device;
	cp.n_ctx = o->n_prompt + o->n_gen;
	cp.n_seq_max = max_b;
	if (o->n_batch)
		cp.n_batch = o->n_batch;
	if (o->kv_block)
		cp.kv_block_size = o->kv_block;
	cp.kv_type = o->kv_type;
	int64_t per_seq = (cp.n_ctx + cp.kv_block_size - 1) / cp.kv_block_size;
	if ((int64_t)max_b * per_seq > INT32_MAX / cp.kv_block_size)
		return llm_error(LLM_EINVAL, "batch %d of %d positions is too large",
		                 max_b, cp.n_ctx);
	cp.kv_blocks = (int)(max_b * per_seq);
	if (o->verbose) {
		const struct llm_hparams *hp = &b->m->hp;
		double kvb = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 4.0 *
		             cp.kv_blocks * cp.kv_block_size;
		fprintf(stderr, "%s: KV cache for %d sequences of %d positions: %.0f MiB\n",
		        prog, max_b, cp.n_ctx, kvb / (1 << 20));
	}
	if ((rc = llm_ctx_new(&t.ctx, b->m, &cp)))
		return rc;
	t.kv = llm_ctx_kv(t.ctx);
	t.n_vocab = b->m->hp.n_vocab;
	int64_t cap = (int64_t)(o->full_prefill ? max_b : 1) * o->n_prompt;
	if (cap < max_b)
		cap = max_b;
	if (cap > INT32_MAX / 8) {
		rc = llm_error(LLM_EINVAL, "%d sequences of %d prompt tokens are too "
		               "many tokens", max_b, o->n_prompt);
		goto out;
	}
	if ((rc = llm_batch_init(&t.batch, (int)cap)))
		goto out;
	t.prompt = malloc(o->n_prompt * sizeof(*t.prompt));
	t.seqs = malloc(max_b * sizeof(*t.seqs));
	t.next = malloc(max_b * sizeof(*t.next));
	pp = calloc((size_t)o->n_batches * o->reps, sizeof(*pp));
	tg = calloc((size_t)o->n_batches * o->reps, sizeof(*tg));
	if (!t.prompt || !t.seqs || !t.next || !pp || !tg) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto out;
	}
	struct llm_rng rng;
	llm_rng_seed(&rng, o->seed);
	for (int i = 0; i < o->n_prompt; i++)
		t.prompt[i] = (int32_t)(llm_rng_next(&rng) % (uint64_t)t.n_vocab);

	/* warm-up: touch every weight page, start the threads, size buffers */
	if (o->warmup) {
		double dt;
		if (o->verbose)
			fprintf(stderr, "%s: warm-up\n", prog);
		for (int bi = 0; bi < o->n_batches; bi++)
			if ((rc = tp_prefill(&t, o, o->batches[bi], &dt)) ||
			    (rc = tp_decode(&t, o, o->batches[bi],
			                    o->n_gen < 2 ? o->n_gen : 2, &dt)))
				goto out;
	}
	for (int r = 0; r < o->reps; r++) {
		for (int bi = 0; bi < o->n_batches; bi++) {
			int B = o->batches[bi];
			double t_pp, t_tg;
			if ((rc = tp_prefill(&t, o, B, &t_pp)) ||
			    (rc = tp_decode(&t, o, B, o->n_gen, &t_tg)))
				goto out;
			int filled = o->full_prefill ? B : 1;
			pp[bi * o->reps + r] = (double)filled * o->n_prompt / t_pp;
			tg[bi * o->reps + r] = (double)B * o->n_gen / t_tg;
			if (o->verbose)
				fprintf(stderr, "%s: run %d, batch %d: pp %.1f tok/s, tg %.1f "
				        "tok/s\n", prog, r + 1, B, pp[bi * o->reps + r],
				        tg[bi * o->reps + r]);
		}
	}

	/* rows: pp (once, or per batch with --full-prefill), then tg */
	for (int bi = 0; bi < (o->full_prefill ? o->n_batches : 1); bi++) {
		struct row *rw = row_new(b, "pp");
		snprintf(rw->test, sizeof(rw->test), "pp%d", o->n_prompt);
		rw->batch = o->full_prefill ? o->batches[bi] : 1;
		rw->n_prompt = o->n_prompt;
		/* without --full-prefill every run's prefill is the same test */
		if (o->full_prefill) {
			row_samples(rw, pp + bi * o->reps, o->reps);
		} else {
			int n = o->n_batches * o->reps < MAX_REPS ? o->n_batches * o->reps
			                                          : MAX_REPS;
			row_samples(rw, pp, n);
		}
	}
	uint64_t bpt = llm_model_bytes_per_token(b->m);
	for (int bi = 0; bi < o->n_batches; bi++) {
		struct row *rw = row_new(b, "tg");
		snprintf(rw->test, sizeof(rw->test), "tg%d", o->n_gen);
		rw->batch = o->batches[bi];
		rw->n_prompt = o->n_prompt;
		rw->n_gen = o->n_gen;
		row_samples(rw, tg + bi * o->reps, o->reps);
		/* the weights are read once per forward pass of B tokens */
		rw->bytes_per_s = (double)bpt * rw->tps / rw->batch;
	}
	rc = 0;
out:
	if (t.kv)
		tp_reset(&t);
	llm_batch_free(&t.batch);
	free(t.prompt);
	free(t.seqs);
	free(t.next);
	free(pp);
	free(tg);
	llm_ctx_free(t.ctx);
	return rc;
}

/* ---------------------------------------------------------------- strategies */

static const char *const story_prompts[8] = {
	"Once upon a time",
	"The little dog",
	"One day, a girl named Lily",
	"Tom and his mom went to the",
	"There was a big red ball",
	"The sun was shining and",
	"A bird sat on the tree",
	"Sam wanted to play with",
};

struct strategy {
	const char *name;
	float temperature;
	int top_k;
	float top_p, min_p;
	int n_beams;
};

static const struct strategy strategies[] = {
	{ "greedy",     0.0f,  0, 1.0f, 0.0f,  0 },
	{ "sample",     1.0f,  0, 1.0f, 0.0f,  0 },
	{ "top-k=40",   1.0f, 40, 1.0f, 0.0f,  0 },
	{ "top-p=0.9",  1.0f,  0, 0.9f, 0.0f,  0 },
	{ "min-p=0.05", 1.0f,  0, 1.0f, 0.05f, 0 },
	{ "beam=2",     0.0f,  0, 1.0f, 0.0f,  2 },
	{ "beam=4",     0.0f,  0, 1.0f, 0.0f,  4 },
	{ "beam=8",     0.0f,  0, 1.0f, 0.0f,  8 },
};

struct strat_job {
	struct bench *b;
	const struct strategy *s;
	int32_t **prompts;
	int *n_prompt;
};

struct strat_result {
	double tps[MAX_REPS];
	int reps;
	double cpu;             /* CPU seconds of the measured runs */
	int64_t generated;      /* tokens generated by the measured runs */
	int64_t forwarded;      /* tokens the model ran in generation steps */
	double logprob;         /* sum over the last run's requests */
	int64_t lp_tokens;
	int peak_blocks;
	uint64_t block_bytes;
};

static void strat_requests(struct strat_job *j, struct llm_gen_request *reqs,
                           int n_gen)
{
	const struct options *o = j->b->o;
	for (int i = 0; i < o->n_prompts; i++) {
		struct llm_gen_request *r = &reqs[i];
		memset(r, 0, sizeof(*r));
		r->prompt = j->prompts[i];
		r->n_prompt = j->n_prompt[i];
		llm_gen_params_default(&r->params);
		r->params.max_tokens = n_gen;
		r->params.ignore_eos = true;
		r->params.logprobs = true;
		r->params.n_beams = j->s->n_beams;
		r->params.sampling.temperature = j->s->temperature;
		r->params.sampling.top_k = j->s->top_k;
		r->params.sampling.top_p = j->s->top_p;
		r->params.sampling.min_p = j->s->min_p;
		r->params.sampling.repeat_penalty = 1.0f;
		r->params.sampling.seed = o->seed + (uint64_t)i;
	}
}

/* In the child: one strategy, warm-up then the measured runs. */
static int strat_child(void *arg, void *result, size_t size)
{
	struct strat_job *j = arg;
	struct bench *b = j->b;
	const struct options *o = b->o;
	struct strat_result *res = result;
	struct llm_gen_request reqs[8];
	struct llm_ctx *ctx = NULL;
	struct llm_ctx_params cp;
	int width = j->s->n_beams > 0 ? j->s->n_beams : 1, max_np = 0, rc;

	LLM_ASSERT(size == sizeof(*res));
	memset(res, 0, sizeof(*res));
	memset(reqs, 0, sizeof(reqs));
	for (int i = 0; i < o->n_prompts; i++)
		max_np = j->n_prompt[i] > max_np ? j->n_prompt[i] : max_np;
	llm_ctx_params_default(&cp);
	cp.n_threads = o->threads;
	cp.device = o->device;
	cp.n_ctx = max_np + o->n_gen;
	cp.n_seq_max = o->n_prompts * width;
	if (o->n_batch)
		cp.n_batch = o->n_batch;
	if (o->kv_block)
		cp.kv_block_size = o->kv_block;
	cp.kv_type = o->kv_type;
	/* exactly what llm_generate asks for */
	int64_t blocks = 0;
	for (int i = 0; i < o->n_prompts; i++)
		blocks += (int64_t)(j->n_prompt[i] + o->n_gen + cp.kv_block_size - 1) /
		          cp.kv_block_size * width;
	cp.kv_blocks = (int)blocks;
	if ((rc = llm_ctx_new(&ctx, b->m, &cp)))
		return rc;
	const struct llm_hparams *hp = &b->m->hp;
	res->block_bytes = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim *
	                   (cp.kv_type == LLM_F16 ? 2 : 4) * cp.kv_block_size;

	if (o->warmup) {
		strat_requests(j, reqs, o->n_gen < 2 ? o->n_gen : 2);
		rc = llm_generate(ctx, b->tok, reqs, o->n_prompts, NULL, NULL, NULL);
		for (int i = 0; i < o->n_prompts; i++)
			llm_gen_request_clear(&reqs[i]);
		if (rc)
			goto out;
	}
	double cpu0 = llm_time_cpu();
	for (int r = 0; r < o->reps; r++) {
		struct llm_gen_stats st;
		int64_t gen = 0;
		strat_requests(j, reqs, o->n_gen);
		double t0 = llm_time_now();
		rc = llm_generate(ctx, b->tok, reqs, o->n_prompts, NULL, NULL, &st);
		double dt = llm_time_now() - t0;
		if (rc)
			goto out;
		res->logprob = 0;
		res->lp_tokens = 0;
		for (int i = 0; i < o->n_prompts; i++) {
			gen += reqs[i].n_tokens;
			res->logprob += reqs[i].logprob;
			res->lp_tokens += reqs[i].n_tokens;
			llm_gen_request_clear(&reqs[i]);
		}
		res->tps[r] = gen / dt;
		res->generated += gen;
		/* the first tokens come from the prefill's logits */
		res->forwarded += st.n_decoded;
		if (st.peak_blocks > res->peak_blocks)
			res->peak_blocks = st.peak_blocks;
	}
	res->cpu = llm_time_cpu() - cpu0;
	res->reps = o->reps;
out:
	llm_ctx_free(ctx);
	return rc;
}

static int run_strategies(struct bench *b)
{
	struct options *o = b->o;
	int32_t *prompts[8] = { 0 };
	int n_prompt[8] = { 0 }, rc = 0;
	struct strat_result *res = malloc(sizeof(*res));
	bool on_cpu = !o->device || !strncmp(o->device, "cpu", 3);

	if (!res)
		return llm_error(LLM_ENOMEM, "out of memory");
	for (int i = 0; i < o->n_prompts; i++) {
		const char *p = story_prompts[i];
		if ((rc = llm_tokenize(b->tok, p, strlen(p), llm_tokenizer_add_bos(b->tok),
		                       false, &prompts[i], &n_prompt[i])))
			goto out;
	}
	for (size_t si = 0; si < sizeof(strategies) / sizeof(strategies[0]); si++) {
		const struct strategy *s = &strategies[si];
		struct strat_job job = { b, s, prompts, n_prompt };
		struct llm_child_usage use;
		if (o->verbose)
			fprintf(stderr, "%s: strategy %s\n", prog, s->name);
		fflush(stdout);
		fflush(stderr);
		/* Each strategy runs in a child of its own, so its peak RSS is
		 * its own; but CUDA cannot be used across fork once the parent
		 * has used it, so on a device it runs here (no RSS column: the
		 * device's memory is not the process's). */
		memset(&use, 0, sizeof(use));
		rc = on_cpu ? llm_bench_in_child(strat_child, &job, res, sizeof(*res), &use)
		            : strat_child(&job, res, sizeof(*res));
		if (rc) {
			rc = llm_error_prefix(rc, "strategy %s", s->name);
			goto out;
		}
		struct row *rw = row_new(b, "strategy");
		snprintf(rw->test, sizeof(rw->test), "%s", s->name);
		rw->batch = o->n_prompts;
		rw->n_prompt = 0;
		for (int i = 0; i < o->n_prompts; i++)
			rw->n_prompt += n_prompt[i];   /* all prompts together */
		rw->n_gen = o->n_gen;
		row_samples(rw, res->tps, res->reps);
		rw->cpu_per_1k = res->generated ? res->cpu / res->generated * 1000 : NAN;
		rw->peak_rss = on_cpu ? (double)use.max_rss : NAN;
		rw->kv_peak = (double)res->peak_blocks * res->block_bytes;
		rw->logprob = res->lp_tokens ? res->logprob / res->lp_tokens : NAN;
		/* every generated token but each request's first came out of a
		 * generation step, which ran forwarded tokens */
		int64_t stepped = res->generated - (int64_t)o->n_prompts * res->reps;
		rw->fwd_per_tok = stepped > 0 ? (double)res->forwarded / stepped : NAN;
	}
out:
	for (int i = 0; i < 8; i++)
		free(prompts[i]);
	free(res);
	return rc;
}

/* ---------------------------------------------------------------- output */

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void print_json(struct bench *b)
{
	const struct options *o = b->o;
	const struct llm_model *m = b->m;
	json_t *root = json_object(), *tp = json_array(), *st = json_array();

	json_object_set_new(root, "model", json_pack(
		"{s:s, s:s, s:s, s:I, s:I, s:I, s:i, s:i, s:i, s:i}",
		"path", b->path, "arch", llm_arch_name(m->hp.arch), "dtype", b->dtype,
		"n_params", (json_int_t)llm_model_n_params(m),
		"file_bytes", (json_int_t)b->file_bytes,
		"bytes_per_token", (json_int_t)llm_model_bytes_per_token(m),
		"n_layer", m->hp.n_layer, "n_embd", m->hp.n_embd,
		"n_ff", m->hp.n_ff, "n_vocab", m->hp.n_vocab));
	json_object_set_new(root, "system", json_pack(
		"{s:i, s:s, s:[o, o, o], s:s, s:I}",
		"threads", o->threads, "isa", llm_cpu_isa(),
		"load_average", jnum(b->load[0]), jnum(b->load[1]), jnum(b->load[2]),
		"prompt_tokens", "pseudo-random ids (xoshiro256**, uniform over the "
		                 "vocabulary)",
		"seed", (json_int_t)o->seed));
	if (b->n_membw) {
		json_t *runs = json_array();
		for (int i = 0; i < b->n_membw; i++) {
			const struct llm_membw *w = &b->membw[i];
			json_array_append_new(runs, json_pack(
				"{s:s, s:f, s:f, s:f, s:I, s:i, s:i}",
				"when", i ? "after" : "before", "best_bytes_per_s", w->best,
				"mean_bytes_per_s", w->mean, "stddev", w->stddev,
				"buffer_bytes", (json_int_t)w->bytes, "threads", w->n_threads,
				"reps", w->reps));
		}
		const struct llm_membw *w = &b->wbw;
		json_t *wj = !w->reps ? json_null() : json_pack(
			"{s:f, s:f, s:f, s:I, s:i, s:i}",
			"best_bytes_per_s", w->best, "mean_bytes_per_s", w->mean,
			"stddev", w->stddev, "bytes", (json_int_t)w->bytes,
			"threads", w->n_threads, "reps", w->reps);
		json_object_set_new(root, "membw", json_pack("{s:f, s:o, s:o}",
		                    "bytes_per_s", b->bw, "runs", runs, "weights", wj));
	} else
		json_object_set_new(root, "membw", json_null());
	for (int i = 0; i < b->n_rows; i++) {
		const struct row *r = &b->rows[i];
		json_t *samples = json_array();
		json_t *o1;
		if (!strcmp(r->kind, "membw"))
			continue;
		for (int k = 0; k < r->reps; k++)
			json_array_append_new(samples, json_real(r->samples[k]));
		if (!strcmp(r->kind, "strategy")) {
			o1 = json_pack("{s:s, s:i, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, "
			               "s:o, s:o}",
			               "name", r->test, "n_prompts", r->batch, "n_gen", r->n_gen,
			               "reps", r->reps, "tokens_per_s", jnum(r->tps),
			               "stddev", jnum(r->tps_sd),
			               "cpu_s_per_1k_tokens", jnum(r->cpu_per_1k),
			               "peak_rss_bytes", jnum(r->peak_rss),
			               "kv_peak_bytes", jnum(r->kv_peak),
			               "logprob_per_token", jnum(r->logprob),
			               "forward_tokens_per_token", jnum(r->fwd_per_tok),
			               "samples", samples);
			json_array_append_new(st, o1);
		} else {
			o1 = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:o, "
			               "s:o, s:o}",
			               "test", r->test, "kind", r->kind, "batch", r->batch,
			               "n_prompt", r->n_prompt, "n_gen", r->n_gen,
			               "reps", r->reps, "tokens_per_s", jnum(r->tps),
			               "stddev", jnum(r->tps_sd),
			               "weight_bytes_per_s", jnum(r->bytes_per_s),
			               "roofline", jnum(r->roofline),
			               "roofline_weights", jnum(r->roofline_w),
			               "samples", samples);
			json_array_append_new(tp, o1);
		}
	}
	json_object_set_new(root, "throughput", tp);
	json_object_set_new(root, "strategies", st);
	json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	putchar('\n');
	json_decref(root);
}

/* A field, quoted (RFC 4180) when it holds a comma, quote or line break. */
static void csv_str(const char *s)
{
	if (!strpbrk(s, ",\"\r\n")) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

/* ",value" with that many decimals; ",": not measured */
static void csv_num(double v, int decimals)
{
	putchar(',');
	if (isfinite(v))
		printf("%.*f", decimals, v);
}

static void print_csv(struct bench *b)
{
	const struct options *o = b->o;
	printf("model,dtype,n_params,bytes_per_token,threads,kind,test,batch,"
	       "n_prompt,n_gen,reps,tokens_per_s,stddev,bytes_per_s,roofline,"
	       "cpu_s_per_1k_tokens,peak_rss_bytes,kv_peak_bytes,logprob_per_token,"
	       "forward_tokens_per_token\n");
	for (int i = 0; i < b->n_rows; i++) {
		const struct row *r = &b->rows[i];
		csv_str(base_name(b->path));
		printf(",%s,%lld,%llu,%d,%s,%s,%d,%d,%d,%d",
		       b->dtype, (long long)llm_model_n_params(b->m),
		       (unsigned long long)llm_model_bytes_per_token(b->m), o->threads,
		       r->kind, r->test, r->batch, r->n_prompt, r->n_gen, r->reps);
		csv_num(r->tps, 3);
		csv_num(r->tps_sd, 3);
		csv_num(r->bytes_per_s, 0);
		csv_num(r->roofline, 4);
		csv_num(r->cpu_per_1k, 4);
		csv_num(r->peak_rss, 0);
		csv_num(r->kv_peak, 0);
		csv_num(r->logprob, 5);
		csv_num(r->fwd_per_tok, 3);
		putchar('\n');
	}
}

static void print_table(struct bench *b)
{
	const struct options *o = b->o;
	const struct llm_model *m = b->m;
	bool any_tp = false, any_st = false;

	printf("model: %s: %s, %.1fM parameters, %s, %.1f MiB of weights read per "
	       "token\n", base_name(b->path), llm_arch_name(m->hp.arch),
	       llm_model_n_params(m) / 1e6, b->dtype,
	       llm_model_bytes_per_token(m) / 1048576.0);
	printf("threads: %d, kernels %s, load average before starting %.2f\n",
	       o->threads, llm_cpu_isa(), b->load[0]);
	for (int i = 0; i < b->n_membw; i++)
		printf("memory read bandwidth%s: %.2f GB/s best, %.2f +- %.2f mean (%d "
		       "threads, %llu MiB, %d passes)\n",
		       b->n_membw == 1 ? "" : i ? " after" : " before",
		       b->membw[i].best / 1e9, b->membw[i].mean / 1e9,
		       b->membw[i].stddev / 1e9, b->membw[i].n_threads,
		       (unsigned long long)(b->membw[i].bytes >> 20), b->membw[i].reps);
	if (b->wbw.reps)
		printf("reading the model's mapped tensors: %.2f GB/s best, %.2f +- %.2f "
		       "mean (%llu MiB, %d passes)\n", b->wbw.best / 1e9,
		       b->wbw.mean / 1e9, b->wbw.stddev / 1e9,
		       (unsigned long long)(b->wbw.bytes >> 20), b->wbw.reps);
	if (b->n_membw)
		printf("roofline: against %.2f GB/s (the better bandwidth run); "
		       "\"of weights\": against reading the tensors\n", b->bw / 1e9);
	for (int i = 0; i < b->n_rows; i++) {
		any_tp |= !strcmp(b->rows[i].kind, "pp") || !strcmp(b->rows[i].kind, "tg");
		any_st |= !strcmp(b->rows[i].kind, "strategy");
	}
	if (any_tp) {
		printf("\n| %-8s | %5s | %20s | %12s | %8s | %10s |\n", "test", "batch",
		       "tokens/s", "weights GB/s", "roofline", "of weights");
		printf("|----------|------:|---------------------:|-------------:|"
		       "---------:|-----------:|\n");
		for (int i = 0; i < b->n_rows; i++) {
			const struct row *r = &b->rows[i];
			char tps[64], gb[32] = "", rl[32] = "", rw[32] = "";
			if (strcmp(r->kind, "pp") && strcmp(r->kind, "tg"))
				continue;
			snprintf(tps, sizeof(tps), "%.2f +- %.2f", r->tps, r->tps_sd);
			if (isfinite(r->bytes_per_s))
				snprintf(gb, sizeof(gb), "%.2f", r->bytes_per_s / 1e9);
			if (isfinite(r->roofline))
				snprintf(rl, sizeof(rl), "%.3f", r->roofline);
			if (isfinite(r->roofline_w))
				snprintf(rw, sizeof(rw), "%.3f", r->roofline_w);
			printf("| %-8s | %5d | %20s | %12s | %8s | %10s |\n", r->test,
			       r->batch, tps, gb, rl, rw);
		}
	}
	if (any_st) {
		printf("\nstrategies: %d prompts together, %d tokens each (ignore EOS), "
		       "each strategy in its own process\n", o->n_prompts, o->n_gen);
		printf("\n| %-10s | %20s | %13s | %12s | %8s | %13s | %11s |\n",
		       "strategy", "tokens/s", "CPU s/1k tok", "peak RSS MiB",
		       "KV MiB", "logprob/token", "fwd tok/tok");
		printf("|------------|---------------------:|--------------:|-------------:|"
		       "---------:|--------------:|------------:|\n");
		for (int i = 0; i < b->n_rows; i++) {
			const struct row *r = &b->rows[i];
			char tps[64];
			if (strcmp(r->kind, "strategy"))
				continue;
			snprintf(tps, sizeof(tps), "%.2f +- %.2f", r->tps, r->tps_sd);
			printf("| %-10s | %20s | %13.3f | %12.1f | %8.2f | %13.4f | %11.2f |\n",
			       r->test, tps, r->cpu_per_1k, r->peak_rss / 1048576.0,
			       r->kv_peak / 1048576.0, r->logprob, r->fwd_per_tok);
		}
	}
}

/* ---------------------------------------------------------------- main */

/* The bytes the model's tensors span in the mapped file, 8-byte aligned. */
static void weights_span(const struct llm_model *m, const char **lo, const char **hi)
{
	const char *a = NULL, *z = NULL;
	const struct llm_tensor *ts[] = { &m->tok_embd, &m->output_norm, &m->output };

	*lo = *hi = NULL;
	for (int il = -1; il < m->hp.n_layer; il++) {
		const struct llm_layer *l = il >= 0 ? &m->layers[il] : NULL;
		const struct llm_tensor *lt[] = {
			l ? &l->attn_norm : NULL, l ? &l->wq : NULL, l ? &l->wk : NULL,
			l ? &l->wv : NULL, l ? &l->wo : NULL, l ? &l->bq : NULL,
			l ? &l->bk : NULL, l ? &l->bv : NULL, l ? &l->ffn_norm : NULL,
			l ? &l->w_gate : NULL, l ? &l->w_up : NULL, l ? &l->w_down : NULL,
		};
		const struct llm_tensor *const *set = l ? lt : ts;
		int n = l ? 12 : 3;
		for (int i = 0; i < n; i++) {
			const char *d = set[i]->data;
			if (!d)
				continue;
			if (!a || d < a)
				a = d;
			if (!z || d + set[i]->nbytes > z)
				z = d + set[i]->nbytes;
		}
	}
	LLM_ASSERT(a && z > a);
	*lo = (const char *)(((uintptr_t)a + 7) & ~(uintptr_t)7);
	*hi = (const char *)((uintptr_t)z & ~(uintptr_t)7);
}

int main(int argc, char **argv)
{
	struct options o;
	struct bench b = { .o = &o };
	struct stat sb;
	int rc;

	parse_options(argc, argv, &o);
	if ((rc = llm_find_model(o.model ? o.model : LLM_DEFAULT_MODEL, b.path,
	                         sizeof(b.path))) ||
	    (rc = llm_model_load_ex(&b.m, b.path, &(struct llm_model_params){ .use_mmap = o.mmap })))
		goto fail;
	if (o.strategies && (rc = llm_tokenizer_from_gguf(&b.tok, b.m->gguf))) {
		rc = llm_error_prefix(rc, "%s: --strategies needs the model's tokenizer",
		                      b.path);
		goto fail;
	}
	if ((int64_t)o.n_prompt + o.n_gen > b.m->hp.n_ctx_train) {
		rc = llm_error(LLM_ERANGE, "%s: %d prompt + %d generated tokens do not "
		               "fit the model's context of %d", b.path, o.n_prompt,
		               o.n_gen, b.m->hp.n_ctx_train);
		goto fail;
	}
	b.dtype = llm_dtype_name(b.m->layers[0].wq.type);
	b.file_bytes = stat(b.path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	if (getloadavg(b.load, 3) != 3)
		b.load[0] = b.load[1] = b.load[2] = NAN;
	if (o.verbose)
		fprintf(stderr, "%s: %s: %.1fM parameters, %s, %d threads, load %.2f\n",
		        prog, b.path, llm_model_n_params(b.m) / 1e6, b.dtype, o.threads,
		        b.load[0]);

	if (o.membw) {
		if (o.verbose)
			fprintf(stderr, "%s: memory bandwidth\n", prog);
		if ((rc = measure_bw(&o, &b.membw[0])))
			goto fail;
		b.n_membw = 1;
		row_new(&b, "membw");   /* bandwidth and weights: filled in below */
		row_new(&b, "membw");
	}
	if (o.throughput && (rc = run_throughput(&b)))
		goto fail;
	if (o.membw && o.throughput) {
		if ((rc = measure_bw(&o, &b.membw[1])))
			goto fail;
		b.n_membw = 2;
	}
	if (o.membw) {
		const char *lo, *hi;
		weights_span(b.m, &lo, &hi);
		/* after the throughput tests, when decoding has mapped them; a
		 * model of a few pages per thread is too small to time */
		if ((uint64_t)(hi - lo) >= 4096ull * o.threads &&
		    (rc = llm_bench_read_bw(o.threads, lo, (uint64_t)(hi - lo), 5, &b.wbw)))
			goto fail;
		struct row *rw = &b.rows[1];
		snprintf(rw->test, sizeof(rw->test), "weights");
		rw->reps = b.wbw.reps;
		rw->bytes_per_s = b.wbw.reps ? b.wbw.best : NAN;
	}
	if (o.membw) {
		struct row *rw = &b.rows[0];
		snprintf(rw->test, sizeof(rw->test), "membw");
		for (int i = 0; i < b.n_membw; i++) {
			rw->reps += b.membw[i].reps;
			b.bw = b.membw[i].best > b.bw ? b.membw[i].best : b.bw;
		}
		rw->bytes_per_s = b.bw;
		/* decode's weight traffic against it */
		for (int i = 0; i < b.n_rows; i++)
			if (!strcmp(b.rows[i].kind, "tg")) {
				b.rows[i].roofline = b.rows[i].bytes_per_s / b.bw;
				if (b.wbw.reps)
					b.rows[i].roofline_w = b.rows[i].bytes_per_s / b.wbw.best;
			}
	}
	if (o.strategies && (rc = run_strategies(&b)))
		goto fail;

	switch (o.fmt) {
	case FMT_TABLE: print_table(&b); break;
	case FMT_CSV: print_csv(&b); break;
	case FMT_JSON: print_json(&b); break;
	}
	free(b.rows);
	llm_tokenizer_free(b.tok);
	llm_model_free(b.m);
	return llm_cli_finish(prog, 0);
fail:
	fflush(stdout);
	llm_cli_report(prog);
	free(b.rows);
	llm_tokenizer_free(b.tok);
	llm_model_free(b.m);
	return llm_cli_finish(prog, 1);
}
