/*
 * mlora-bench - multi-LoRA serving throughput, in-process (driven by
 * scripts/bench/mlora.sh): the serving engine with closed-loop clients,
 * each submitting its next request when the last one ends.
 *
 *   mlora-bench MODEL DIR_DISTINCT DIR_MANY [-t threads] [-c clients]
 *               [-p prompt] [-g gen] [-d seconds] [-w warmup] [-r rounds]
 *               [-A max_active] [-z zipf_s] [-k cold_samples] [-x device]
 *
 * Modes, alternated in each of the rounds (so drifting load hits them
 * alike); tokens/s counted from the end of the warmup to the end:
 *
 *   none      every request on the base model (no adapter cache);
 *   distinct  client i always names adapter a<i> of DIR_DISTINCT, all of
 *             them resident (read before the run): a heterogeneous batch
 *             of as many adapters as clients in every step;
 *   zipf      requests name adapters of DIR_MANY (all registered, at most
 *             max_active resident, nothing read before the run) drawn from
 *             a Zipf distribution of exponent zipf_s over a random order
 *             of the names: hot adapters stay, the tail is loaded and
 *             evicted as it comes.
 *
 * Then first-request latency on an idle engine: a cold adapter (on disk)
 * against the same adapter warm (resident) and the base model (seconds to
 * the first token, median of cold_samples adapters).  Prompts are random
 * tokens; outputs are forced to gen tokens (ignore_eos).  Prints "key value"
 * lines.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmkit/adapters.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/model.h"
#include "llmkit/sched.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static int threads = 2, clients = 32, n_prompt = 32, n_gen = 64, rounds = 2;
static int max_active = 64, n_cold = 5;
static double duration = 10, warmup = 2, zipf_s = 1.0;
static int n_vocab;

enum mode { M_NONE, M_DISTINCT, M_ZIPF };

struct run {
	struct llm_engine *e;
	struct llm_adapters *ac;
	enum mode mode;
	int *ids;                 /* adapter ids: distinct per client, or zipf ranks */
	int n_ids;
	double *cdf;              /* zipf */
	double t_end;
	atomic_int errors;
	atomic_int requests;
};

struct client {
	struct run *r;
	int i;
	uint64_t rng;
};

static void die(const char *what)
{
	fprintf(stderr, "mlora-bench: %s: %s\n", what, llm_errmsg());
	exit(1);
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * 0x1p-53;
}

static void sleep_s(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

static int zipf_draw(const struct run *r, uint64_t *s)
{
	double u = rng_unit(s);
	int lo = 0, hi = r->n_ids - 1;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (r->cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return r->ids[lo];
}

/* One request; its TTFT and error. */
static int request(struct llm_engine *e, int adapter, uint64_t *rng, int max_tokens,
                   double *ttft)
{
	struct llm_sreq_params sp;
	struct llm_sreq *r;
	struct llm_sreq_snap s;
	int32_t prompt[512];

	for (int i = 0; i < n_prompt; i++)
		prompt[i] = 1 + (int32_t)(rng_next(rng) % (uint64_t)(n_vocab - 1));
	memset(&sp, 0, sizeof(sp));
	sp.prompt = prompt;
	sp.n_prompt = n_prompt;
	llm_gen_params_default(&sp.gen);
	sp.gen.sampling.temperature = 0;
	sp.gen.max_tokens = max_tokens;
	sp.gen.ignore_eos = true;
	sp.adapter = adapter;
	if (llm_sreq_new(&r, &sp))
		die("request");
	if (llm_engine_submit(e, r)) {
		fprintf(stderr, "mlora-bench: submit: %s\n", llm_errmsg());
		llm_sreq_release(r);
		return -1;
	}
	while (!llm_sreq_wait(r, (size_t)-1, 1 << 30, -1))
		;
	int rc = llm_sreq_snapshot(r, 0, 0, &s) || s.error ? -1 : 0;
	if (rc)
		fprintf(stderr, "mlora-bench: request failed: %s\n", s.errmsg);
	if (ttft)
		*ttft = s.t_first;
	llm_sreq_snap_free(&s);
	llm_sreq_release(r);
	return rc;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct run *r = c->r;
	while (llm_time_now() < r->t_end) {
		int a = -1;
		if (r->mode == M_DISTINCT)
			a = r->ids[c->i % r->n_ids];
		else if (r->mode == M_ZIPF)
			a = zipf_draw(r, &c->rng);
		if (request(r->e, a, &c->rng, n_gen, NULL))
			atomic_fetch_add(&r->errors, 1);
		atomic_fetch_add(&r->requests, 1);
	}
	return NULL;
}

static struct llm_engine *new_engine(struct llm_ctx *ctx,
                                     const struct llm_tokenizer *tok,
                                     struct llm_adapters *ac)
{
	struct llm_engine_params ep;
	struct llm_engine *e;
	llm_engine_params_default(&ep);
	ep.max_batch = clients;
	ep.adapters = ac;
	if (llm_engine_new(&e, ctx, tok, &ep) || llm_engine_start(e))
		die("engine");
	return e;
}

struct result {
	double tput;
	int errors, requests;
	uint64_t loads, evictions;
	double mean_batch;
};

static void run_mode(struct llm_ctx *ctx, const struct llm_tokenizer *tok,
                     const struct llm_model *m, enum mode mode, const char *dir,
                     struct result *res)
{
	struct run r;
	struct llm_adapters *ac = NULL;
	memset(&r, 0, sizeof(r));
	memset(res, 0, sizeof(*res));
	r.mode = mode;
	if (mode != M_NONE) {
		struct llm_adapters_params ap;
		llm_adapters_params_default(&ap);
		ap.dir = dir;
		ap.max_active = mode == M_ZIPF ? max_active : 0;
		ap.backend = llm_ctx_backend(ctx);
		if (llm_adapters_new(&ac, m, &ap))
			die(dir);
		struct llm_adapter_info *v;
		int n;
		if (llm_adapters_list(ac, &v, &n))
			die("list");
		r.ids = malloc(n * sizeof(int));
		r.n_ids = mode == M_DISTINCT ? (n < clients ? n : clients) : n;
		for (int i = 0; i < r.n_ids; i++) {
			char name[32];
			snprintf(name, sizeof(name), "a%d", i);
			if ((r.ids[i] = llm_adapters_find(ac, name)) < 0)
				die(name);
			if (mode == M_DISTINCT && llm_adapters_load(ac, name, -1))
				die(name);
		}
		free(v);
		if (mode == M_ZIPF) {
			uint64_t s = 12345;
			for (int i = r.n_ids - 1; i > 0; i--) {   /* random order */
				int j = (int)(rng_next(&s) % (uint64_t)(i + 1));
				int t = r.ids[i];
				r.ids[i] = r.ids[j];
				r.ids[j] = t;
			}
			r.cdf = malloc(r.n_ids * sizeof(double));
			double sum = 0;
			for (int i = 0; i < r.n_ids; i++)
				r.cdf[i] = sum += pow(i + 1, -zipf_s);
			for (int i = 0; i < r.n_ids; i++)
				r.cdf[i] /= sum;
		}
	}
	r.ac = ac;
	r.e = new_engine(ctx, tok, ac);
	atomic_init(&r.errors, 0);
	atomic_init(&r.requests, 0);
	double t0 = llm_time_now();
	r.t_end = t0 + warmup + duration;
	pthread_t *th = calloc(clients, sizeof(*th));
	struct client *cl = calloc(clients, sizeof(*cl));
	for (int i = 0; i < clients; i++) {
		cl[i] = (struct client){ &r, i, 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) };
		pthread_create(&th[i], NULL, client_main, &cl[i]);
	}
	struct llm_engine_metrics m0, m1;
	sleep_s(warmup);
	llm_engine_metrics(r.e, &m0);
	double t1 = llm_time_now();
	sleep_s(r.t_end - t1);
	llm_engine_metrics(r.e, &m1);
	double t2 = llm_time_now();
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	llm_engine_stop(r.e, true);
	res->tput = (double)(m1.gen_tokens - m0.gen_tokens) / (t2 - t1);
	res->errors = atomic_load(&r.errors);
	res->requests = atomic_load(&r.requests);
	uint64_t nb = m1.batch_size.total - m0.batch_size.total;
	res->mean_batch = nb ? (m1.batch_size.sum - m0.batch_size.sum) / (double)nb : 0;
	if (ac) {
		struct llm_adapters_stats st;
		llm_adapters_stats(ac, &st);
		res->loads = st.loads;
		res->evictions = st.evictions;
	}
	llm_engine_free(r.e);
	llm_adapters_free(ac);
	free(r.ids);
	free(r.cdf);
	free(th);
	free(cl);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct llm_model *m = NULL;
	struct llm_tokenizer *tok = NULL;
	struct llm_ctx *ctx = NULL;
	int opt;

	const char *device = NULL;

	while ((opt = getopt(argc, argv, "t:c:p:g:d:w:r:A:z:k:x:")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'c': clients = atoi(optarg); break;
		case 'p': n_prompt = atoi(optarg); break;
		case 'g': n_gen = atoi(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 'w': warmup = atof(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'A': max_active = atoi(optarg); break;
		case 'z': zipf_s = atof(optarg); break;
		case 'k': n_cold = atoi(optarg); break;
		case 'x': device = optarg; break;
		default: return 2;
		}
	}
	if (argc - optind != 3 || n_prompt < 1 || n_prompt > 512 || clients < 1) {
		fprintf(stderr, "usage: mlora-bench MODEL DIR_DISTINCT DIR_MANY [options]\n");
		return 2;
	}
	const char *dir1 = argv[optind + 1], *dir2 = argv[optind + 2];
	if (llm_model_load(&m, argv[optind]) || llm_tokenizer_from_gguf(&tok, m->gguf))
		die(argv[optind]);
	n_vocab = m->hp.n_vocab;
	struct llm_ctx_params cp;
	llm_ctx_params_default(&cp);
	cp.n_threads = threads;
	cp.n_ctx = n_prompt + n_gen + 16;
	cp.n_seq_max = clients;
	cp.n_batch = clients + 512;
	cp.device = device;
	if (llm_ctx_new(&ctx, m, &cp))
		die("context");

	static const char *const names[] = { "none", "distinct", "zipf" };
	struct result best[3], res;
	memset(best, 0, sizeof(best));
	int errors[3] = { 0 }, requests[3] = { 0 };
	for (int round = 0; round < rounds; round++)
		for (int k = 0; k < 3; k++) {
			run_mode(ctx, tok, m, (enum mode)k, k == M_DISTINCT ? dir1 : dir2, &res);
			fprintf(stderr, "round %d %s: %.1f tok/s, batch %.1f, %d requests, "
			        "%d errors, %llu loads, %llu evictions\n", round, names[k],
			        res.tput, res.mean_batch, res.requests, res.errors,
			        (unsigned long long)res.loads, (unsigned long long)res.evictions);
			errors[k] += res.errors;
			requests[k] += res.requests;
			if (res.tput > best[k].tput)
				best[k] = res;
		}
	for (int k = 0; k < 3; k++) {
		printf("%s_tok_s %.2f\n", names[k], best[k].tput);
		printf("%s_mean_batch %.2f\n", names[k], best[k].mean_batch);
		printf("%s_requests %d\n", names[k], requests[k]);
		printf("%s_errors %d\n", names[k], errors[k]);
		printf("%s_loads %llu\n", names[k], (unsigned long long)best[k].loads);
		printf("%s_evictions %llu\n", names[k], (unsigned long long)best[k].evictions);
	}
	printf("ratio_distinct_vs_none %.3f\n", best[1].tput / best[0].tput);
	printf("ratio_zipf_vs_none %.3f\n", best[2].tput / best[0].tput);

	/* first-request latency on an idle engine: cold, warm, base */
	struct llm_adapters *ac;
	struct llm_adapters_params ap;
	llm_adapters_params_default(&ap);
	ap.dir = dir2;
	ap.max_active = max_active;
	ap.backend = llm_ctx_backend(ctx);
	if (llm_adapters_new(&ac, m, &ap))
		die(dir2);
	struct llm_engine *e = new_engine(ctx, tok, ac);
	double *cold = calloc(n_cold, sizeof(double)), *warm = calloc(n_cold, sizeof(double));
	double *base = calloc(n_cold, sizeof(double));
	uint64_t rng = 99;
	struct llm_adapters_stats st0;
	llm_adapters_stats(ac, &st0);
	for (int i = 0; i < n_cold; i++) {
		char name[32];
		snprintf(name, sizeof(name), "a%d", st0.registered / 2 + i);
		int id = llm_adapters_find(ac, name);
		if (id < 0)
			die(name);
		if (request(e, id, &rng, 1, &cold[i]) || request(e, id, &rng, 1, &warm[i]) ||
		    request(e, -1, &rng, 1, &base[i]))
			die("latency");
	}
	qsort(cold, n_cold, sizeof(double), cmp_double);
	qsort(warm, n_cold, sizeof(double), cmp_double);
	qsort(base, n_cold, sizeof(double), cmp_double);
	printf("ttft_cold_ms %.2f\n", 1e3 * cold[n_cold / 2]);
	printf("ttft_warm_ms %.2f\n", 1e3 * warm[n_cold / 2]);
	printf("ttft_base_ms %.2f\n", 1e3 * base[n_cold / 2]);
	struct llm_adapter_info *v;
	int n;
	if (!llm_adapters_list(ac, &v, &n)) {
		double lt = 0;
		int nl = 0;
		for (int i = 0; i < n; i++)
			if (v[i].loads) {
				lt += v[i].last_load_seconds;
				nl++;
			}
		printf("adapter_load_ms %.2f\n", nl ? 1e3 * lt / nl : 0);
		free(v);
	}
	llm_engine_stop(e, true);
	llm_engine_free(e);
	llm_adapters_free(ac);
	free(cold);
	free(warm);
	free(base);
	llm_ctx_free(ctx);
	llm_tokenizer_free(tok);
	llm_model_free(m);
	return 0;
}
