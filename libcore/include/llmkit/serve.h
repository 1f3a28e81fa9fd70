/*
 * serve.h - the front of the serving engine (sched.h): OpenAI-style
 * requests in, replies out, over HTTP (llm_http_*) or as JSONL batches
 * (llm_serve_offline).
 *
 * A service (struct llm_serve) ties an engine to what request parsing
 * needs: the tokenizer, the chat template, the context size and the name
 * the model is served under.  Both ways in share it.
 *
 * Requests (the JSON body of POST /v1/completions or /v1/chat/completions,
 * or one line of an offline batch):
 *
 *   prompt        completions: a string, an array of strings (one reply
 *                 choice set each), or an array of token ids
 *   messages      chat: [{"role": "system"|"user"|"assistant",
 *                 "content": "..."}], formatted by the model's template
 *   max_tokens    tokens to generate (completions 16, chat: until the end
 *                 of the turn or the context); max_completion_tokens too
 *   temperature   0..2 (1); 0 is greedy
 *   top_p         (0, 1] (1)
 *   top_k         0: off (0)
 *   min_p, frequency_penalty, presence_penalty, repetition_penalty
 *   seed          the draw is reproducible with it (else random)
 *   stop          a string or up to 16 strings, cut from the text
 *   n             choices per prompt (1..16), seeds seed, seed+1, ...
 *   logprobs      completions: 0..20 alternatives per token; chat: true,
 *                 with top_logprobs 0..20
 *   echo          completions: the prompt text before the completion
 *   priority      the request's class (higher runs first under the
 *                 priority and hybrid policies; default 0)
 *   stream        server-sent events, ended by "data: [DONE]"
 *   stream_options {"include_usage": true}: a last chunk with usage
 *   model         the served model (or "base"), or an adapter of the
 *                 engine's adapters directory (multi-LoRA; 404 naming an
 *                 unknown one)
 *   ignore_eos    (extension) generate past end-of-text
 *
 * Unknown fields are ignored, as OpenAI's own clients send many.
 */
#ifndef LLMKIT_SERVE_H
#define LLMKIT_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llmkit/chat.h"
#include "llmkit/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_engine;
struct llm_tokenizer;
struct llm_sreq;
struct llm_serve;

/* ---------------------------------------------------------------- service */

struct llm_serve_params {
	const char *model_name;   /* served as this "model" id (required) */
	enum llm_chat_template chat;  /* LLM_CHAT_UNKNOWN: chatml */
	int max_choices;          /* most prompts x n per request (default 64) */
};

int llm_serve_new(struct llm_serve **out, struct llm_engine *e,
                  const struct llm_serve_params *p);
/* Does not free the engine. */
void llm_serve_free(struct llm_serve *s);
struct llm_engine *llm_serve_engine(struct llm_serve *s);

/* ---------------------------------------------------------------- requests */

enum llm_serve_kind { LLM_SERVE_COMPLETION, LLM_SERVE_CHAT };

/* A parsed request: one or more prompts, each run n times. */
struct llm_serve_req {
	enum llm_serve_kind kind;
	bool stream, include_usage, echo;
	int n;                    /* choices per prompt */
	int n_prompts;
	int32_t **prompts;        /* (n_prompts) token ids */
	int *n_prompt;            /* (n_prompts) */
	char **prompt_text;       /* (n_prompts) for echo; may hold NULLs */
	bool text_start;          /* the prompts hold no text (BOS alone) */
	int logprobs;             /* -1: none, else alternatives per token */
	int priority;
	int adapter;              /* -1: the base model; else the adapter id
	                             "model" named (adapters.h) */
	bool seed_set;
	struct llm_gen_params gen;
	char *stops[LLM_MAX_STOP];
};

/*
 * An HTTP-style failure: status 400, 404, 413, 429, 500 ... and the message
 * for the error object.  llm_serve_parse and llm_serve_start fill one.
 */
struct llm_serve_err {
	int status;
	const char *type;         /* "invalid_request_error", ... */
	const char *code;         /* NULL or a short code ("context_length_exceeded") */
	char param[64];           /* the field at fault, "" if none */
	char message[512];
};

/*
 * Parse a request body (JSON) of the given kind.  0, or a negative LLM_E*
 * with e filled (status 400 for bad JSON or fields, 404 for an unknown
 * model, 400 "context_length_exceeded" for a prompt that leaves no room).
 */
int llm_serve_parse(struct llm_serve *s, enum llm_serve_kind kind,
                    const char *body, size_t len, struct llm_serve_req *r,
                    struct llm_serve_err *e);
void llm_serve_req_free(struct llm_serve_req *r);

/*
 * A request in flight: the engine requests of its choices, and a waiter
 * the engine wakes when any of them has news.  Created by llm_serve_start
 * (which submits every choice: on a failure none stays queued), polled by
 * llm_serve_job_wait, replies built from snapshots.
 */
struct llm_serve_job;

int llm_serve_start(struct llm_serve *s, struct llm_serve_req *r,
                    struct llm_serve_job **out, struct llm_serve_err *e);
/* Wait at most timeout seconds for news; true when something changed. */
bool llm_serve_job_wait(struct llm_serve_job *j, double timeout);
/* True when every choice is done. */
bool llm_serve_job_done(struct llm_serve_job *j);
/* Cancel every choice (the client went away). */
void llm_serve_job_cancel(struct llm_serve_job *j);
/* Cancels what still runs, waits for the engine to let go, frees. */
void llm_serve_job_free(struct llm_serve_job *j);

/*
 * The whole reply (a "text_completion" or "chat.completion" object), once
 * the job is done; malloc'd JSON text.  id may be NULL (one is made up).
 * An error of a choice (the engine failed it) gives status 500 and e.
 */
int llm_serve_reply(struct llm_serve_job *j, const char *id, char **json,
                    struct llm_serve_err *e);
/*
 * Streaming: server-sent events for what is new since the last call
 * ("data: {...}\n\n" chunks, then a usage chunk if asked, then
 * "data: [DONE]\n\n" once done).  Appends to a malloc'd buffer.
 */
int llm_serve_stream(struct llm_serve_job *j, char **buf, size_t *len,
                     size_t *cap, bool *finished);

/* An error object {"error": {...}} as malloc'd JSON text. */
char *llm_serve_err_json(const struct llm_serve_err *e);
/* Fill e; returns the LLM_E* code given. */
int llm_serve_err_set(struct llm_serve_err *e, int code, int status,
                      const char *type, const char *param, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* GET /v1/models */
char *llm_serve_models_json(struct llm_serve *s);
/* GET /metrics: Prometheus text from llm_engine_metrics and the HTTP
 * counters (malloc'd). */
char *llm_serve_metrics_text(struct llm_serve *s);

/* HTTP counters, kept by the HTTP front and shown in /metrics. */
void llm_serve_count_http(struct llm_serve *s, int status, double busy_s);

/* ---------------------------------------------------------------- offline */

/*
 * Offline batch: one JSON request per line of in (completion, or chat when
 * it has "messages"; an "id" or "custom_id" of any JSON type is echoed
 * back, else the line number is the id), one JSON reply per line of out,
 * in the order requests finish: the completion object with "id" replaced
 * by the request's, or {"id": ..., "error": {...}} for a line that could
 * not be run (the others go on).  Up to window requests are in flight at
 * once (0: 256).  progress (may be NULL) is called about once a second and
 * at the end.  Returns 0, or a negative LLM_E* when reading or writing
 * failed; *n_failed counts the lines that got an error object.
 */
struct llm_offline_progress {
	int64_t read, done, failed;
	int64_t prompt_tokens, gen_tokens;
	double elapsed;
	bool final;
};

typedef void (*llm_offline_progress_fn)(void *user,
                                        const struct llm_offline_progress *p);

int llm_serve_offline(struct llm_serve *s, FILE *in, FILE *out, int window,
                      llm_offline_progress_fn progress, void *user,
                      int64_t *n_failed);

/* ---------------------------------------------------------------- HTTP */

struct llm_http_params {
	const char *host;         /* address to listen on (default 127.0.0.1) */
	int port;                 /* default 8080; 0: any free port */
	const char *api_key;      /* NULL: no authentication; else Bearer KEY */
	size_t max_body;          /* bytes; larger bodies get 413 (default 1 MiB) */
	int max_conns;            /* open connections (default 1024) */
	int retry_after;          /* seconds, in 429 replies (default 1) */
	double conn_timeout;      /* idle connection timeout, seconds (default 60) */
};

void llm_http_params_default(struct llm_http_params *p);

struct llm_http;

/* Listen and serve in background threads (one per connection). */
int llm_http_start(struct llm_http **out, struct llm_serve *s,
                   const struct llm_http_params *p);
/* The port actually bound (for port 0). */
int llm_http_port(const struct llm_http *h);
/*
 * Stop accepting connections, answer 503 to new requests on open ones,
 * and wait up to timeout seconds for the requests in flight to be
 * answered; what is still running then is canceled.  The engine keeps
 * running (stop it after).
 */
void llm_http_drain(struct llm_http *h, double timeout);
void llm_http_free(struct llm_http *h);

#ifdef __cplusplus
}
#endif
#endif
