/*
 * llm-batchd - serve a GGUF model with continuous batching: an
 * OpenAI-compatible HTTP server, or an offline JSONL batch (--offline).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llmkit/adapters.h"
#include "llmkit/backend.h"
#include "llmkit/chat.h"
#include "llmkit/cli.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/gguf.h"
#include "llmkit/model.h"
#include "llmkit/sched.h"
#include "llmkit/serve.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"

static const char *prog = "llm-batchd";

enum {
	OPT_LISTEN = 256, OPT_POLICY, OPT_MAX_BATCH, OPT_MIN_BATCH, OPT_WINDOW_MS,
	OPT_TARGET_TPOT, OPT_BATCH_TIMEOUT, OPT_KV_HIGH, OPT_KV_LOW, OPT_CPU_HIGH,
	OPT_CPU_LOW, OPT_AGING, OPT_HISTORY, OPT_PERIOD, OPT_BUCKETS, OPT_HORIZON,
	OPT_SURGE, OPT_EPOCH, OPT_HYBRID, OPT_KV_MEM, OPT_KV_BLOCK, OPT_KV_TYPE,
	OPT_MAX_PREFILL, OPT_NO_PREFIX, OPT_MAX_QUEUE, OPT_WATERMARK, OPT_API_KEY,
	OPT_OFFLINE, OPT_INFLIGHT, OPT_MAX_BODY, OPT_MAX_CONNS, OPT_MODEL_NAME,
	OPT_CHAT_TEMPLATE, OPT_DRAIN_TIMEOUT, OPT_PORT_FILE, OPT_MMAP, OPT_N_BATCH,
	OPT_LIST_POLICIES,
	OPT_ADAPTERS, OPT_MAX_ADAPTERS, OPT_ADAPTER_MEM, OPT_ADAPTER_WAIT,
	OPT_PRELOAD, OPT_DEVICE,
};

static const struct llm_opt opts[] = {
	{ 'm', "model", "FILE", "GGUF model, a path or a name in the model directories "
	                        "(default: " LLM_DEFAULT_MODEL ")" },
	{ OPT_MODEL_NAME, "model-name", "NAME", "the model's id in the API (default: "
	                                        "the file name without .gguf)" },
	{ OPT_CHAT_TEMPLATE, "chat-template", "NAME", "chatml, llama2, llama3, mistral, "
	                                              "zephyr, gemma, phi3 (default: "
	                                              "from the model, else chatml)" },
	{ OPT_LISTEN, "listen", "HOST:PORT", "\nServer\naddress to serve HTTP on "
	                                     "(default: 127.0.0.1:8080; port 0: any)" },
	{ OPT_API_KEY, "api-key", "KEY", "require 'Authorization: Bearer KEY' on /v1/ "
	                                 "(default: $LLM_API_KEY, else none)" },
	{ OPT_MAX_BODY, "max-body", "SIZE", "largest request body; larger gets 413 "
	                                    "(default: 1M)" },
	{ OPT_MAX_CONNS, "max-conns", "N", "open connections at most (default: 1024)" },
	{ OPT_DRAIN_TIMEOUT, "drain-timeout", "S", "on SIGTERM, seconds to let requests "
	                                           "in flight finish (default: 300)" },
	{ OPT_PORT_FILE, "port-file", "FILE", "write the bound port to FILE once "
	                                      "listening" },
	{ OPT_OFFLINE, "offline", NULL, "\nOffline\nrequests as JSONL on stdin, replies "
	                                "as JSONL on stdout; progress on stderr" },
	{ OPT_INFLIGHT, "inflight", "N", "offline: requests in flight at once "
	                                 "(default: 256)" },
	{ OPT_POLICY, "policy", "NAME", "\nBatching\nstatic, continuous, adaptive, "
	                                "window, load, predictive, priority, hybrid "
	                                "(default: continuous)" },
	{ OPT_LIST_POLICIES, "list-policies", NULL, "print the policy names and exit" },
	{ OPT_MAX_BATCH, "max-batch", "N", "sequences running at once (default: 32)" },
	{ OPT_MIN_BATCH, "min-batch", "N", "window: admit when N wait; load, adaptive, "
	                                   "predictive: smallest cap (default: 4)" },
	{ OPT_WINDOW_MS, "window-ms", "MS", "window: ... or when the oldest waited MS "
	                                    "(default: 50)" },
	{ OPT_BATCH_TIMEOUT, "batch-timeout-ms", "MS", "static: start a partial batch "
	                                               "after MS (default: 100)" },
	{ OPT_TARGET_TPOT, "target-tpot-ms", "MS", "adaptive: time per output token "
	                                           "to keep under (default: 100)" },
	{ OPT_KV_HIGH, "kv-high", "F", "load: KV use that shrinks the batch "
	                               "(default: 0.90)" },
	{ OPT_KV_LOW, "kv-low", "F", "load: KV use that lets it grow (default: 0.70)" },
	{ OPT_CPU_HIGH, "cpu-high", "F", "load: CPU pressure that shrinks the batch "
	                                 "(default: 0.25)" },
	{ OPT_CPU_LOW, "cpu-low", "F", "load: CPU pressure that lets it grow "
	                               "(default: 0.10)" },
	{ OPT_AGING, "aging-s", "S", "priority: a waiting request gains a class per S "
	                             "seconds (default: 10)" },
	{ OPT_HISTORY, "history", "FILE", "predictive: seasonal history, read at start "
	                                  "and saved at exit" },
	{ OPT_PERIOD, "period-s", "S", "predictive: length of a season (default: 86400)" },
	{ OPT_BUCKETS, "buckets", "N", "predictive: buckets per season (default: 144)" },
	{ OPT_HORIZON, "horizon-s", "S", "predictive: look ahead S seconds "
	                                 "(default: 600)" },
	{ OPT_SURGE, "surge-ratio", "F", "predictive: forecast / observed rate that is "
	                                 "a surge (default: 1.5)" },
	{ OPT_EPOCH, "epoch", "T", "predictive: Unix time a season starts at "
	                           "(default: 0, UTC midnight)" },
	{ OPT_HYBRID, "hybrid", "LIST", "hybrid: components, comma-separated "
	                                "(default: priority,window,load)" },
	{ OPT_MAX_PREFILL, "max-prefill-tokens", "N", "\nEngine\nprompt tokens per step "
	                                              "(chunked prefill; default: 512)" },
	{ OPT_NO_PREFIX, "no-prefix-cache", NULL, "do not share KV blocks of equal "
	                                          "prompt prefixes" },
	{ OPT_MAX_QUEUE, "max-queue", "N", "requests waiting at most; more get 429 "
	                                   "(default: 0, no limit)" },
	{ OPT_WATERMARK, "watermark", "F", "fraction of KV blocks admission leaves free "
	                                   "(default: 0.02)" },
	{ OPT_KV_MEM, "kv-mem", "SIZE", "KV cache budget, e.g. 256M (default: enough "
	                                "for max-batch full contexts, at most 1G)" },
	{ OPT_KV_BLOCK, "kv-block", "N", "positions per KV block (default: 16)" },
	{ OPT_KV_TYPE, "kv-type", "TYPE", "KV element type: f16 or f32 (default: f16)" },
	{ 'c', "ctx-size", "N", "context per sequence (default: the model's, at most "
	                        "4096)" },
	{ 't', "threads", "N", "threads (default: all CPUs)" },
	{ OPT_DEVICE, "device", LLM_CLI_DEVICE_ARG, LLM_CLI_DEVICE_HELP },
	{ OPT_N_BATCH, "batch-tokens", "N", "most tokens per forward pass (default: "
	                                    "max-batch + max-prefill-tokens)" },
	{ OPT_MMAP, "mmap", NULL, "map the model instead of reading it into memory" },
	{ OPT_ADAPTERS, "adapters", "DIR", "\nMulti-LoRA\nserve the LoRA adapters in DIR "
	                                  "(PEFT subdirectories, NAME.gguf files): a "
	                                  "request's \"model\" names one" },
	{ OPT_MAX_ADAPTERS, "max-active-adapters", "N", "adapters in memory at once "
	                                               "(default: 64; 0: no limit)" },
	{ OPT_ADAPTER_MEM, "adapter-mem", "SIZE", "memory for adapters in all "
	                                         "(default: no limit)" },
	{ OPT_ADAPTER_WAIT, "adapter-max-wait", "S", "seconds a request waits for "
	                                            "its adapter before others' are "
	                                            "held back (default: 2)" },
	{ OPT_PRELOAD, "preload-adapters", NULL, "read adapters into memory at start "
	                                        "(as many as --max-active-adapters "
	                                        "allows), not on first use" },
	{ 'v', "verbose", NULL, "more on stderr" },
	{ 0 }
};

static const struct llm_cli cli = {
	"llm-batchd", "[OPTION]...",
	"Serve a GGUF model to many clients at once with continuous batching: an "
	"OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
	"/v1/models, /health, /metrics), or an offline batch of JSONL requests.",
	opts,
	"Examples:\n"
	"  llm-batchd -m model.gguf --listen 127.0.0.1:8080 --policy hybrid\n"
	"  llm-batchd -m model.gguf --offline < requests.jsonl > replies.jsonl\n"
	"  llm-batchd -m model.gguf --device cuda --adapters adapters/\n"
	"  curl localhost:8080/v1/completions -d '{\"prompt\": \"Once\", \"max_tokens\": 20}'",
};

struct options {
	const char *model, *model_name, *chat_template;
	char *host;
	int port;
	const char *api_key;
	uint64_t max_body;
	int max_conns;
	double drain_timeout;
	const char *port_file;
	bool offline;
	int inflight;
	const char *policy;
	struct llm_policy_params pp;
	struct llm_engine_params ep;
	uint64_t kv_mem;
	int kv_block, n_ctx, threads, n_batch;
	enum llm_dtype kv_type;
	bool mmap, verbose;
	const char *device;
	const char *adapters;
	struct llm_adapters_params ap;
	bool preload;
};

static void die_rc(int rc)
{
	if (rc)
		llm_cli_usage_error(&cli, "%s", llm_errmsg());
}

static void parse_listen(struct options *o, const char *arg)
{
	const char *colon = strrchr(arg, ':');
	int port;

	if (!colon)
		llm_cli_usage_error(&cli, "--listen: expected HOST:PORT, got '%s'", arg);
	die_rc(llm_parse_int("--listen port", colon + 1, 0, 65535, &port));
	free(o->host);
	if (arg[0] == '[' && colon > arg && colon[-1] == ']')
		o->host = strndup(arg + 1, (size_t)(colon - arg - 2));
	else
		o->host = strndup(arg, (size_t)(colon - arg));
	if (!*o->host) {
		free(o->host);
		o->host = strdup("0.0.0.0");
	}
	o->port = port;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	struct llm_policy_params *pp = &o->pp;
	const char *arg;
	int c;
	uint64_t sz;
	bool min_batch_set = false;

	memset(o, 0, sizeof(*o));
	llm_policy_params_default(pp);
	llm_adapters_params_default(&o->ap);
	llm_engine_params_default(&o->ep);
	o->host = strdup("127.0.0.1");
	o->port = 8080;
	o->max_body = 1 << 20;
	o->max_conns = 1024;
	o->drain_timeout = 300;
	o->policy = "continuous";
	o->kv_type = LLM_F16;
	o->api_key = getenv("LLM_API_KEY");
	while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) {
		switch (c) {
		case 'm': o->model = arg; break;
		case OPT_MODEL_NAME: o->model_name = arg; break;
		case OPT_CHAT_TEMPLATE:
			if (llm_chat_template_from_name(arg) < 0)
				llm_cli_usage_error(&cli, "--chat-template: unknown template '%s'",
				                    arg);
			o->chat_template = arg;
			break;
		case OPT_LISTEN: parse_listen(o, arg); break;
		case OPT_API_KEY: o->api_key = arg; break;
		case OPT_MAX_BODY: die_rc(llm_parse_size("--max-body", arg, &o->max_body)); break;
		case OPT_MAX_CONNS: die_rc(llm_parse_int("--max-conns", arg, 1, 65536,
		                                         &o->max_conns)); break;
		case OPT_DRAIN_TIMEOUT: die_rc(llm_parse_double("--drain-timeout", arg, 0,
		                                                1e6, &o->drain_timeout)); break;
		case OPT_PORT_FILE: o->port_file = arg; break;
		case OPT_OFFLINE: o->offline = true; break;
		case OPT_INFLIGHT: die_rc(llm_parse_int("--inflight", arg, 1, 1 << 20,
		                                        &o->inflight)); break;
		case OPT_POLICY: o->policy = arg; break;
		case OPT_LIST_POLICIES:
			for (const char *const *n = llm_policy_names(); *n; n++)
				printf("%s\n", *n);
			exit(llm_cli_finish(prog, 0));
		case OPT_MAX_BATCH: die_rc(llm_parse_int("--max-batch", arg, 1, 4096,
		                                         &pp->max_batch)); break;
		case OPT_MIN_BATCH: die_rc(llm_parse_int("--min-batch", arg, 1, 4096,
		                                         &pp->min_batch));
			min_batch_set = true;
			break;
		case OPT_WINDOW_MS: die_rc(llm_parse_double("--window-ms", arg, 0, 1e7,
		                                            &pp->window_ms)); break;
		case OPT_BATCH_TIMEOUT: die_rc(llm_parse_double("--batch-timeout-ms", arg, 0,
		                                                1e7, &pp->batch_timeout_ms)); break;
		case OPT_TARGET_TPOT: die_rc(llm_parse_double("--target-tpot-ms", arg, 0.01,
		                                              1e7, &pp->target_tpot_ms)); break;
		case OPT_KV_HIGH: die_rc(llm_parse_double("--kv-high", arg, 0, 1,
		                                          &pp->kv_high)); break;
		case OPT_KV_LOW: die_rc(llm_parse_double("--kv-low", arg, 0, 1,
		                                         &pp->kv_low)); break;
		case OPT_CPU_HIGH: die_rc(llm_parse_double("--cpu-high", arg, 0, 1,
		                                           &pp->cpu_high)); break;
		case OPT_CPU_LOW: die_rc(llm_parse_double("--cpu-low", arg, 0, 1,
		                                          &pp->cpu_low)); break;
		case OPT_AGING: die_rc(llm_parse_double("--aging-s", arg, 0, 1e9,
		                                        &pp->aging_s)); break;
		case OPT_HISTORY: pp->history = arg; break;
		case OPT_PERIOD: die_rc(llm_parse_double("--period-s", arg, 1, 1e10,
		                                         &pp->period_s)); break;
		case OPT_BUCKETS: die_rc(llm_parse_int("--buckets", arg, 1, 1 << 20,
		                                       &pp->buckets)); break;
		case OPT_HORIZON: die_rc(llm_parse_double("--horizon-s", arg, 0, 1e10,
		                                          &pp->horizon_s)); break;
		case OPT_SURGE: die_rc(llm_parse_double("--surge-ratio", arg, 1, 1e6,
		                                        &pp->surge_ratio)); break;
		case OPT_EPOCH: die_rc(llm_parse_double("--epoch", arg, 0, 1e12,
		                                        &pp->epoch)); break;
		case OPT_HYBRID: pp->hybrid = arg; break;
		case OPT_MAX_PREFILL: die_rc(llm_parse_int("--max-prefill-tokens", arg, 1,
		                                           1 << 20,
		                                           &o->ep.max_prefill_tokens)); break;
		case OPT_NO_PREFIX: o->ep.prefix_caching = false; break;
		case OPT_MAX_QUEUE: die_rc(llm_parse_int("--max-queue", arg, 0, 1 << 24,
		                                         &o->ep.max_queue)); break;
		case OPT_WATERMARK: die_rc(llm_parse_double("--watermark", arg, 0, 0.99,
		                                            &o->ep.watermark)); break;
		case OPT_KV_MEM:
			die_rc(llm_parse_size("--kv-mem", arg, &sz));
			if (sz == 0)
				llm_cli_usage_error(&cli, "--kv-mem: must be more than 0");
			o->kv_mem = sz;
			break;
		case OPT_KV_BLOCK: die_rc(llm_parse_int("--kv-block", arg, 1, 4096,
		                                        &o->kv_block)); break;
		case OPT_KV_TYPE: {
			static const int kv_types[] = { LLM_F16, LLM_F32 };
			int t;
			die_rc(llm_parse_dtype("--kv-type", arg, kv_types, 2, &t));
			o->kv_type = t;
			break;
		}
		case 'c': die_rc(llm_parse_int("--ctx-size", arg, 2, 1 << 24, &o->n_ctx)); break;
		case 't': die_rc(llm_parse_int("--threads", arg, 1, 1024, &o->threads)); break;
		case OPT_N_BATCH: die_rc(llm_parse_int("--batch-tokens", arg, 1, 1 << 20,
		                                       &o->n_batch)); break;
		case OPT_MMAP: o->mmap = true; break;
		case OPT_DEVICE: die_rc(llm_cli_device(arg, &o->device)); break;
		case OPT_ADAPTERS: o->adapters = arg; break;
		case OPT_PRELOAD: o->preload = true; break;
		case OPT_MAX_ADAPTERS: die_rc(llm_parse_int("--max-active-adapters", arg, 0,
		                                            1 << 20, &o->ap.max_active)); break;
		case OPT_ADAPTER_MEM: die_rc(llm_parse_size("--adapter-mem", arg,
		                                            &o->ap.max_mem)); break;
		case OPT_ADAPTER_WAIT: die_rc(llm_parse_double("--adapter-max-wait", arg, 0,
		                                               1e6,
		                                               &o->ep.adapter_max_wait)); break;
		case 'v': o->verbose = true; break;
		default: llm_cli_usage_error(&cli, "unhandled option");
		}
	}
	if (optind < argc)
		llm_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (pp->kv_low > pp->kv_high)
		llm_cli_usage_error(&cli, "--kv-low %g is above --kv-high %g", pp->kv_low,
		                    pp->kv_high);
	if (pp->cpu_low > pp->cpu_high)
		llm_cli_usage_error(&cli, "--cpu-low %g is above --cpu-high %g", pp->cpu_low,
		                    pp->cpu_high);
	if (pp->min_batch > pp->max_batch && !min_batch_set)
		pp->min_batch = pp->max_batch;
	if (pp->min_batch > pp->max_batch)
		llm_cli_usage_error(&cli, "--min-batch %d is above --max-batch %d",
		                    pp->min_batch, pp->max_batch);
	bool known = false;
	for (const char *const *n = llm_policy_names(); *n; n++)
		known |= !strcmp(*n, o->policy);
	if (!known)
		llm_cli_usage_error(&cli, "--policy: unknown policy '%s' (--list-policies "
		                    "shows them)", o->policy);
	o->ep.max_batch = pp->max_batch;
	if (o->api_key && !*o->api_key)
		o->api_key = NULL;
}

/* "dir/stories260K.gguf" -> "stories260K" */
static char *default_name(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	size_t n = strlen(b);
	if (n > 5 && !strcmp(b + n - 5, ".gguf"))
		n -= 5;
	return strndup(b, n);
}

static void progress(void *user, const struct llm_offline_progress *p)
{
	(void)user;
	fprintf(stderr, "%s: %lld read, %lld done (%lld failed), %lld prompt + %lld "
	        "generated tokens, %.1f tok/s, %.1f s%s\n", prog, (long long)p->read,
	        (long long)p->done, (long long)p->failed, (long long)p->prompt_tokens,
	        (long long)p->gen_tokens,
	        p->elapsed > 0 ? p->gen_tokens / p->elapsed : 0.0, p->elapsed,
	        p->final ? " - finished" : "");
}

static int write_port_file(const char *path, int port)
{
	struct llm_ofile *f;
	int rc = llm_ofile_open(&f, path);
	if (rc)
		return rc;
	fprintf(f->f, "%d\n", port);
	return llm_ofile_commit(f);
}

/* Every adapter into memory, up to the cache's limits. */
static int preload(struct llm_adapters *ac)
{
	struct llm_adapter_info *v;
	int n, rc = llm_adapters_list(ac, &v, &n);
	if (rc)
		return rc;
	for (int i = 0; !rc && i < n; i++) {
		struct llm_adapters_stats st;
		llm_adapters_stats(ac, &st);
		if (st.max_active > 0 && st.resident >= st.max_active)
			break;
		rc = llm_adapters_load(ac, v[i].name, -1);
		if (rc && rc != LLM_ENOMEM) {
			/* a bad adapter fails its own requests, not the server */
			fprintf(stderr, "%s: warning: %s\n", prog, llm_errmsg());
			rc = 0;
		}
	}
	free(v);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	struct llm_model *m = NULL;
	struct llm_tokenizer *tok = NULL;
	struct llm_ctx *ctx = NULL;
	struct llm_policy *pol = NULL;
	struct llm_engine *e = NULL;
	struct llm_serve *s = NULL;
	struct llm_http *h = NULL;
	struct llm_adapters *ac = NULL;
	char path[4096], *name = NULL;
	int rc, status = 0;
	sigset_t sigs;

	parse_options(argc, argv, &o);
	signal(SIGPIPE, SIG_IGN);
	/* signals are taken by sigwait in main, never by the worker threads */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (!o.offline)
		pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if ((rc = llm_find_model(o.model ? o.model : LLM_DEFAULT_MODEL, path,
	                         sizeof(path))) ||
	    (rc = llm_model_load_ex(&m, path, &(struct llm_model_params){ .use_mmap = o.mmap })) ||
	    (rc = llm_tokenizer_from_gguf(&tok, m->gguf)))
		goto fail;

	struct llm_ctx_params cp;
	llm_ctx_params_default(&cp);
	cp.n_threads = o.threads;
	cp.device = o.device;
	cp.n_ctx = o.n_ctx;
	cp.n_seq_max = o.ep.max_batch;
	cp.n_batch = o.n_batch ? o.n_batch : o.ep.max_batch + o.ep.max_prefill_tokens;
	if (o.kv_block)
		cp.kv_block_size = o.kv_block;
	cp.kv_mem = o.kv_mem;
	cp.kv_type = o.kv_type;
	if ((rc = llm_ctx_new(&ctx, m, &cp)))
		goto fail;

	if ((rc = llm_policy_new(&pol, o.policy, &o.pp)))
		goto fail;
	if (o.adapters) {
		o.ap.dir = o.adapters;
		/* on a GPU, resident adapters live in its memory too */
		o.ap.backend = llm_ctx_backend(ctx);
		if ((rc = llm_adapters_new(&ac, m, &o.ap)))
			goto fail;
		o.ep.adapters = ac;
		if (o.preload && (rc = preload(ac)))
			goto fail;
		if (o.verbose) {
			struct llm_adapters_stats as;
			llm_adapters_stats(ac, &as);
			fprintf(stderr, "%s: %s: %d adapters, at most %d in memory\n", prog,
			        o.adapters, as.registered, as.max_active);
		}
	}
	o.ep.policy = pol;
	pol = NULL;                 /* the engine owns it, also on failure */
	if ((rc = llm_engine_new(&e, ctx, tok, &o.ep)))
		goto fail;

	name = o.model_name ? strdup(o.model_name) : default_name(path);
	enum llm_chat_template tmpl = o.chat_template
		? (enum llm_chat_template)llm_chat_template_from_name(o.chat_template)
		: llm_chat_from_gguf(m->gguf);
	struct llm_serve_params sp = { .model_name = name, .chat = tmpl };
	if ((rc = llm_serve_new(&s, e, &sp)) || (rc = llm_engine_start(e)))
		goto fail;
	if (o.verbose)
		fprintf(stderr, "%s: %s: %d layers, dim %d, context %d, on %s, policy %s, "
		        "max batch %d, chat template %s\n", prog, path, m->hp.n_layer,
		        m->hp.n_embd, llm_ctx_n_ctx(ctx),
		        llm_ctx_backend(ctx)->ops->name, o.policy, o.ep.max_batch,
		        llm_chat_template_name(tmpl == LLM_CHAT_UNKNOWN ? LLM_CHAT_CHATML
		                                                        : tmpl));

	if (o.offline) {
		int64_t failed = 0;
		int inflight = o.inflight;
		if (!inflight)
			inflight = o.ep.max_queue ? o.ep.max_queue + o.ep.max_batch : 256;
		rc = llm_serve_offline(s, stdin, stdout, inflight, progress, NULL, &failed);
		llm_engine_stop(e, true);
		if (rc)
			goto fail;
		if (failed)
			status = 4;
	} else {
		struct llm_http_params hp;
		llm_http_params_default(&hp);
		hp.host = o.host;
		hp.port = o.port;
		hp.api_key = o.api_key;
		hp.max_body = o.max_body;
		hp.max_conns = o.max_conns;
		if ((rc = llm_http_start(&h, s, &hp)))
			goto fail;
		if (o.port_file && (rc = write_port_file(o.port_file, llm_http_port(h))))
			goto fail;
		fprintf(stderr, "%s: serving %s on http://%s%s%s:%d/ (policy %s)\n", prog,
		        name, strchr(o.host, ':') ? "[" : "", o.host,
		        strchr(o.host, ':') ? "]" : "", llm_http_port(h), o.policy);
		int sig = 0;
		while (sigwait(&sigs, &sig) == EINTR)
			;
		fprintf(stderr, "%s: %s: draining (%d requests in flight)\n", prog,
		        strsignal(sig), llm_engine_pending(e));
		llm_http_drain(h, o.drain_timeout);
		llm_engine_stop(e, true);
		llm_http_free(h);
		h = NULL;
		fprintf(stderr, "%s: stopped\n", prog);
	}
	if (llm_policy_save(llm_engine_policy(e)))
		llm_cli_report(prog);
	goto done;
fail:
	llm_cli_report(prog);
	status = 1;
	if (e)
		llm_engine_stop(e, false);
done:
	llm_http_free(h);
	llm_engine_free(e);         /* before the service its notify calls reach */
	llm_serve_free(s);
	llm_adapters_free(ac);      /* after the engine that pins them */
	llm_policy_free(pol);
	llm_ctx_free(ctx);
	llm_tokenizer_free(tok);
	llm_model_free(m);
	free(name);
	free(o.host);
	return llm_cli_finish(prog, status);
}
