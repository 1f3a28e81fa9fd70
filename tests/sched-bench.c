/*
 * sched-bench - the serving engine in-process, with closed-loop clients:
 * each client submits a request, waits for it to finish, submits the
 * next, for a fixed time; throughput is the tokens generated in that time
 * (a time window, not a fixed set of requests: with a fixed set, the
 * client with the longest chain of outputs sets the wall time whatever
 * the policy).  Runs the same workload under several engine setups and
 * prints throughput, TTFT / end-to-end percentiles and the engine's own
 * overhead (time outside llm_decode and sampling, over the busy time).
 *
 *   sched-bench -m model.gguf [-t threads] [-c clients] [-b max_batch]
 *               [-D seconds] [-s serial-seconds] [-L lengths.csv]
 *               [-p prompt-divisor] [-d output-divisor]
 *               [-P modes] [-S seed] [-T step-trace]
 *
 * Modes (-P, comma-separated): serial (one request at a time: one client,
 * max_batch 1), and any policy name (continuous, static, ...) at max_batch
 * -b with -c clients.  Prompt and output lengths are drawn from a ShareGPT
 * lengths CSV (num_prefill_tokens,num_decode_tokens; divided by -p (64)
 * and -d (8) and clamped to 8..128 and 4..256 for a small model with a
 * 512-token context) or, without -L, from uniform ranges of the same
 * bounds.  Output lengths are forced (ignore_eos) so every mode does the
 * same kind of work; every client replays its own list of draws.
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sched.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

struct job {
	int n_prompt, max_tokens;
	int32_t prompt[128];
};

struct bench {
	struct llm_engine *e;
	struct job *jobs;         /* (clients x per_client) */
	int per_client;
	double *ttft, *e2e;       /* per finished or cut request */
	int n_ttft, n_e2e, cap;
	atomic_bool stop;
	pthread_mutex_t mu;
};

struct client {
	struct bench *b;
	int first;                /* its jobs: first .. first + per_client - 1 */
};

/* A closed-loop client: submit, wait for the end, submit the next, until
 * the measurement stops (the engine then cancels what is in flight). */
static void *client_main(void *arg)
{
	struct client *c = arg;
	struct bench *b = c->b;
	for (int k = 0; !atomic_load(&b->stop); k++) {
		struct job *jb = &b->jobs[c->first + k % b->per_client];
		struct llm_sreq_params sp;
		struct llm_sreq *r;
		struct llm_sreq_snap s;
		memset(&sp, 0, sizeof(sp));
		sp.prompt = jb->prompt;
		sp.n_prompt = jb->n_prompt;
		llm_gen_params_default(&sp.gen);
		sp.gen.sampling.temperature = 0;
		sp.gen.max_tokens = jb->max_tokens;
		sp.gen.ignore_eos = true;
		sp.adapter = -1;
		if (llm_sreq_new(&r, &sp)) {
			fprintf(stderr, "sched-bench: %s\n", llm_errmsg());
			exit(1);
		}
		if (llm_engine_submit(b->e, r)) {
			llm_sreq_release(r);
			break;                /* stopping */
		}
		while (!llm_sreq_wait(r, (size_t)-1, 1 << 30, -1))
			;
		if (llm_sreq_snapshot(r, 0, 0, &s)) {
			fprintf(stderr, "sched-bench: %s\n", llm_errmsg());
			exit(1);
		}
		if (s.error && s.error != LLM_ECANCELED) {
			fprintf(stderr, "sched-bench: request failed: %s\n", s.errmsg);
			exit(1);
		}
		pthread_mutex_lock(&b->mu);
		if (b->n_ttft < b->cap) {
			/* cut before its first token: it waited at least this long */
			b->ttft[b->n_ttft++] = s.t_first > 0 ? s.t_first : s.t_total;
			if (!s.error)
				b->e2e[b->n_e2e++] = s.t_total;
		}
		pthread_mutex_unlock(&b->mu);
		llm_sreq_snap_free(&s);
		llm_sreq_release(r);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	int i = (int)ceil(q * n) - 1;
	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

struct result {
	double tput, ttft50, ttft99, e2e50, e2e99, overhead, t_sample, wall;
	double mean_batch;
	double tput_cpu;          /* tokens per CPU second of this process */
	int done;
};

static FILE *trace;

static void trace_step(void *user, const struct llm_step_info *si)
{
	fprintf(trace, "%s %.4f %.5f %.5f %d %d %d %d %d %d\n", (const char *)user,
	        si->t, si->t_step, si->t_decode, si->n_seqs, si->n_tokens,
	        si->n_prefill, si->n_waiting, si->n_running, si->cap);
}

/*
 * clients closed-loop clients for `duration` seconds: throughput is the
 * tokens generated in that time over it; then the engine stops and
 * cancels what is in flight (a request cut before its first token counts
 * the time it waited as its TTFT, a lower bound).
 */
static int run_mode(struct llm_ctx *ctx, const struct llm_tokenizer *tok,
                    const char *policy, int max_batch, struct job *jobs,
                    int clients, int per_client, double duration,
                    struct result *res)
{
	struct llm_engine_params ep;
	struct llm_policy_params pp;
	struct bench b;
	struct llm_engine_metrics m;
	int rc;

	llm_engine_params_default(&ep);
	llm_policy_params_default(&pp);
	ep.max_batch = pp.max_batch = max_batch;
	/* Every mode replays the same prompts: a mode must not find the
	 * previous one's blocks in the prefix cache. */
	llm_kv_prefix_clear(llm_ctx_kv(ctx));
	if (trace) {
		ep.on_step = trace_step;
		ep.step_user = (void *)policy;
	}
	memset(&b, 0, sizeof(b));
	if ((rc = llm_policy_new(&ep.policy, policy, &pp)) ||
	    (rc = llm_engine_new(&b.e, ctx, tok, &ep)) ||
	    (rc = llm_engine_start(b.e)))
		return rc;
	b.jobs = jobs;
	b.per_client = per_client;
	b.cap = 1 << 16;
	b.ttft = calloc(b.cap, sizeof(double));
	b.e2e = calloc(b.cap, sizeof(double));
	atomic_init(&b.stop, false);
	pthread_mutex_init(&b.mu, NULL);
	pthread_t *th = calloc(clients, sizeof(*th));
	struct client *cl = calloc(clients, sizeof(*cl));
	double t0 = llm_time_now(), c0 = llm_time_cpu();
	for (int i = 0; i < clients; i++) {
		cl[i] = (struct client){ &b, i * per_client };
		pthread_create(&th[i], NULL, client_main, &cl[i]);
	}
	while (llm_time_now() - t0 < duration)
		usleep(20000);
	llm_engine_metrics(b.e, &m);
	double wall = llm_time_now() - t0, cpu = llm_time_cpu() - c0;
	atomic_store(&b.stop, true);
	llm_engine_stop(b.e, false);
	for (int i = 0; i < clients; i++)
		pthread_join(th[i], NULL);
	res->wall = wall;
	res->tput = m.gen_tokens / wall;
	res->tput_cpu = cpu > 0 ? m.gen_tokens / cpu : 0;
	res->done = b.n_e2e;
	res->ttft50 = pct(b.ttft, b.n_ttft, 0.50);
	res->ttft99 = pct(b.ttft, b.n_ttft, 0.99);
	res->e2e50 = pct(b.e2e, b.n_e2e, 0.50);
	res->e2e99 = pct(b.e2e, b.n_e2e, 0.99);
	res->overhead = m.t_busy > 0 ? m.t_sched / m.t_busy : 0;
	res->t_sample = m.t_busy > 0 ? m.t_sample / m.t_busy : 0;
	res->mean_batch = m.batch_size.total ? m.batch_size.sum / m.batch_size.total : 0;
	llm_engine_free(b.e);
	pthread_mutex_destroy(&b.mu);
	free(b.ttft);
	free(b.e2e);
	free(th);
	free(cl);
	return 0;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int clampi(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

int main(int argc, char **argv)
{
	const char *model_path = NULL, *lengths = NULL;
	const char *modes = "serial,continuous,static";
	int threads = 2, clients = 32, per_client = 64, max_batch = 32;
	int pdiv = 64, ddiv = 8;
	double duration = 30, serial_duration = 20;
	uint64_t seed = 42;
	int opt, rc;

	while ((opt = getopt(argc, argv, "m:t:c:b:D:s:L:P:S:p:d:T:h")) != -1) {
		switch (opt) {
		case 'm': model_path = optarg; break;
		case 't': threads = atoi(optarg); break;
		case 'c': clients = atoi(optarg); break;
		case 'D': duration = atof(optarg); break;
		case 'b': max_batch = atoi(optarg); break;
		case 's': serial_duration = atof(optarg); break;
		case 'L': lengths = optarg; break;
		case 'P': modes = optarg; break;
		case 'S': seed = strtoull(optarg, NULL, 10); break;
		case 'p': pdiv = atoi(optarg); break;
		case 'T':
			if (!(trace = fopen(optarg, "w"))) {
				perror(optarg);
				return 1;
			}
			break;
		case 'd': ddiv = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: sched-bench -m model.gguf [-t threads] "
			        "[-c clients] [-b max_batch] [-D seconds] "
			        "[-s serial-seconds] [-L sharegpt-lengths.csv] "
			        "[-p prompt-divisor] [-d output-divisor] "
			        "[-P serial,continuous,static] [-S seed] [-T step-trace]\n");
			return 2;
		}
	}
	if (!model_path || threads < 1 || clients < 1 || max_batch < 1 ||
	    !(duration > 0) || !(serial_duration > 0) || pdiv < 1 || ddiv < 1) {
		fprintf(stderr, "sched-bench: -m is required; counts must be >= 1\n");
		return 2;
	}

	struct llm_model *model;
	struct llm_tokenizer *tok;
	struct llm_ctx *ctx;
	struct llm_ctx_params cp;
	if ((rc = llm_model_load(&model, model_path)) ||
	    (rc = llm_tokenizer_from_gguf(&tok, model->gguf))) {
		fprintf(stderr, "sched-bench: %s\n", llm_errmsg());
		return 1;
	}
	llm_ctx_params_default(&cp);
	cp.n_threads = threads;
	cp.n_ctx = 512;
	cp.n_seq_max = max_batch;
	if ((rc = llm_ctx_new(&ctx, model, &cp))) {
		fprintf(stderr, "sched-bench: %s\n", llm_errmsg());
		return 1;
	}

	/* the workload */
	int n = clients * per_client;
	struct job *jobs = calloc(n, sizeof(*jobs));
	int (*len)[2] = NULL, n_len = 0;
	if (lengths) {
		FILE *f = fopen(lengths, "r");
		char line[256];
		if (!f) {
			perror(lengths);
			return 1;
		}
		len = malloc(sizeof(*len) * 40000);
		while (fgets(line, sizeof(line), f) && n_len < 40000) {
			int p, d;
			if (sscanf(line, "%d,%d", &p, &d) == 2) {
				len[n_len][0] = p;
				len[n_len][1] = d;
				n_len++;
			}
		}
		fclose(f);
		if (!n_len) {
			fprintf(stderr, "%s: no num_prefill_tokens,num_decode_tokens rows\n",
			        lengths);
			return 1;
		}
	}
	int n_vocab = llm_ctx_n_vocab(ctx);
	for (int i = 0; i < n; i++) {
		struct job *jb = &jobs[i];
		if (n_len) {
			int k = (int)(rng_next(&seed) % n_len);
			jb->n_prompt = clampi(len[k][0] / pdiv, 8, 128);
			jb->max_tokens = clampi(len[k][1] / ddiv, 4, 256);
		} else {
			jb->n_prompt = 8 + (int)(rng_next(&seed) % 121);
			jb->max_tokens = 4 + (int)(rng_next(&seed) % 253);
		}
		jb->prompt[0] = 1;
		for (int t = 1; t < jb->n_prompt; t++)
			jb->prompt[t] = 3 + (int32_t)(rng_next(&seed) % (n_vocab - 3));
	}
	free(len);

	printf("# sched-bench: %s, %d threads, %d closed-loop clients for %g s "
	       "(one at a time: 1 client for %g s), max batch %d\n", model_path,
	       threads, clients, duration, serial_duration, max_batch);
	printf("%-12s %7s %6s %9s %9s %9s %9s %9s %9s %7s %8s %8s\n", "mode",
	       "wall_s", "done", "tok/s", "tok/cpu_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99", "batch",
	       "sched%", "sample%");
	double serial = 0, cont = 0, stat = 0, cont99 = 0, stat99 = 0, ovh = -1;
	double serial_c = 0, cont_c = 0, stat_c = 0;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", modes);
	for (char *sv = NULL, *mode = strtok_r(buf, ",", &sv); mode;
	     mode = strtok_r(NULL, ",", &sv)) {
		struct result r;
		bool is_serial = !strcmp(mode, "serial");
		/* one request at a time: one client, max batch 1 */
		if (is_serial)
			rc = run_mode(ctx, tok, "continuous", 1, jobs, 1, per_client,
			              serial_duration, &r);
		else
			rc = run_mode(ctx, tok, mode, max_batch, jobs, clients, per_client,
			              duration, &r);
		if (rc) {
			fprintf(stderr, "sched-bench: %s: %s\n", mode, llm_errmsg());
			return 1;
		}
		printf("%-12s %7.2f %6d %9.1f %9.1f %9.3f %9.3f %9.3f %9.3f %7.1f %7.2f%% "
		       "%7.2f%%\n", mode, r.wall, r.done, r.tput, r.tput_cpu, r.ttft50, r.ttft99, r.e2e50, r.e2e99,
		       r.mean_batch, 100 * r.overhead, 100 * r.t_sample);
		fflush(stdout);
		if (is_serial) {
			serial = r.tput;
			serial_c = r.tput_cpu;
		} else if (!strcmp(mode, "continuous")) {
			cont = r.tput;
			cont_c = r.tput_cpu;
			cont99 = r.ttft99;
			ovh = r.overhead;
		} else if (!strcmp(mode, "static")) {
			stat = r.tput;
			stat_c = r.tput_cpu;
			stat99 = r.ttft99;
		}
	}
	if (serial > 0 && cont > 0)
		printf("continuous / one-at-a-time throughput: %.2fx (goal >= 6); per "
		       "CPU second %.2fx\n", cont / serial, cont_c / serial_c);
	if (stat > 0 && cont > 0) {
		printf("continuous / static throughput: %.2fx (goal >= 1.5); per CPU "
		       "second %.2fx\n", cont / stat, cont_c / stat_c);
		printf("p99 TTFT continuous %.3f s, static %.3f s (goal: lower)\n", cont99,
		       stat99);
	}
	if (ovh >= 0)
		printf("engine overhead (continuous): %.2f%% of busy step time "
		       "(goal < 5%%)\n", 100 * ovh);
	if (trace)
		fclose(trace);
	free(jobs);
	llm_ctx_free(ctx);
	llm_tokenizer_free(tok);
	llm_model_free(model);
	return fclose(stdout) ? 1 : 0;
}
