/*
 * serve.c - OpenAI-style requests over the serving engine (serve.h):
 * parsing, jobs (the engine requests of one HTTP request or batch line),
 * replies and stream chunks, /v1/models and /metrics, and the offline
 * JSONL batch mode.
 *
 * The engine tells a request's reader about news through a notify
 * callback on its own thread.  Its user pointer is the service, which
 * outlives the engine thread; the request itself (which the engine holds
 * while it calls) is looked up in the service's table of waiters, under
 * the table's lock.  A job takes its requests out of the table before it
 * lets go of them, so a client that goes away while the engine still
 * holds its request leaves nothing dangling: a late notify finds nothing.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/sched.h"
#include "llmkit/serve.h"
#include "llmkit/tokenizer.h"
#include "llmkit/util.h"
#include "serve-adapters.h"

/* ---------------------------------------------------------------- waiters */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t seq;             /* notifications so far */
};

/* sreq -> waiter, chained */
struct wentry {
	const struct llm_sreq *sr;
	struct waiter *w;
	struct wentry *next;
};

#define N_WBUCKETS 1024
#define N_STATUS 16

struct llm_serve {
	struct llm_engine *e;
	const struct llm_tokenizer *tok;
	int n_ctx, n_vocab;
	enum llm_chat_template chat;
	char *model_name;
	int max_choices;
	time_t created;

	pthread_mutex_t wmu;      /* the waiter table */
	struct wentry *wtab[N_WBUCKETS];

	pthread_mutex_t mu;       /* ids, seeds, HTTP counters */
	uint64_t next_id;
	struct llm_rng rng;
	int status_code[N_STATUS];
	uint64_t status_count[N_STATUS];
	uint64_t http_requests;
	double http_busy;
};

static void waiter_init(struct waiter *w)
{
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->seq = 0;
}

static void waiter_destroy(struct waiter *w)
{
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

static unsigned wbucket(const struct llm_sreq *sr)
{
	uint64_t x = (uint64_t)(uintptr_t)sr;
	x ^= x >> 17;
	x *= 0x9e3779b97f4a7c15ull;
	return (unsigned)(x >> 40) % N_WBUCKETS;
}

static int waiter_add(struct llm_serve *s, const struct llm_sreq *sr,
                      struct waiter *w)
{
	struct wentry *en = malloc(sizeof(*en));
	if (!en)
		return llm_error(LLM_ENOMEM, "serve: out of memory");
	en->sr = sr;
	en->w = w;
	pthread_mutex_lock(&s->wmu);
	unsigned b = wbucket(sr);
	en->next = s->wtab[b];
	s->wtab[b] = en;
	pthread_mutex_unlock(&s->wmu);
	return 0;
}

static void waiter_del(struct llm_serve *s, const struct llm_sreq *sr)
{
	pthread_mutex_lock(&s->wmu);
	for (struct wentry **p = &s->wtab[wbucket(sr)]; *p; p = &(*p)->next)
		if ((*p)->sr == sr) {
			struct wentry *en = *p;
			*p = en->next;
			free(en);
			break;
		}
	pthread_mutex_unlock(&s->wmu);
}

static void waiter_wake(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->seq++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* The engine's notify callback (engine thread; never blocks for long). */
static void job_notify(void *user, struct llm_sreq *sr)
{
	struct llm_serve *s = user;

	pthread_mutex_lock(&s->wmu);
	for (struct wentry *en = s->wtab[wbucket(sr)]; en; en = en->next)
		if (en->sr == sr) {
			waiter_wake(en->w);
			break;
		}
	pthread_mutex_unlock(&s->wmu);
}

/* Wait for more than *seen notifications, at most timeout seconds. */
static bool waiter_wait(struct waiter *w, uint64_t *seen, double timeout)
{
	bool news;

	pthread_mutex_lock(&w->mu);
	if (w->seq == *seen && timeout > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		double t = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout;
		ts.tv_sec = (time_t)t;
		ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
		while (w->seq == *seen)
			if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
				break;
	}
	news = w->seq != *seen;
	*seen = w->seq;
	pthread_mutex_unlock(&w->mu);
	return news;
}

/* ---------------------------------------------------------------- service */

int llm_serve_err_set(struct llm_serve_err *e, int code, int status,
                      const char *type, const char *param, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return code;
	e->status = status;
	e->type = type ? type : "invalid_request_error";
	e->code = NULL;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return code;
}

int llm_serve_new(struct llm_serve **out, struct llm_engine *e,
                  const struct llm_serve_params *p)
{
	struct llm_serve *s;

	*out = NULL;
	if (!e || !p || !p->model_name || !*p->model_name)
		return llm_error(LLM_EINVAL, "serve: an engine and a model name are needed");
	if (!(s = calloc(1, sizeof(*s))) || !(s->model_name = strdup(p->model_name))) {
		free(s);
		return llm_error(LLM_ENOMEM, "serve: out of memory");
	}
	s->e = e;
	s->tok = llm_engine_tok(e);
	s->n_ctx = llm_ctx_n_ctx(llm_engine_ctx(e));
	s->n_vocab = llm_tokenizer_n_vocab(s->tok);
	s->chat = p->chat == LLM_CHAT_UNKNOWN ? LLM_CHAT_CHATML : p->chat;
	s->max_choices = p->max_choices > 0 ? p->max_choices : 64;
	s->created = time(NULL);
	pthread_mutex_init(&s->wmu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	llm_rng_seed(&s->rng, (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^
	                      (uint64_t)(uintptr_t)s);
	*out = s;
	return 0;
}

void llm_serve_free(struct llm_serve *s)
{
	if (!s)
		return;
	for (int i = 0; i < N_WBUCKETS; i++)
		while (s->wtab[i]) {
			struct wentry *en = s->wtab[i];
			s->wtab[i] = en->next;
			free(en);
		}
	free(s->model_name);
	pthread_mutex_destroy(&s->wmu);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

struct llm_engine *llm_serve_engine(struct llm_serve *s)
{
	return s->e;
}

void llm_serve_count_http(struct llm_serve *s, int status, double busy_s)
{
	pthread_mutex_lock(&s->mu);
	s->http_requests++;
	s->http_busy += busy_s;
	for (int i = 0; i < N_STATUS; i++) {
		if (s->status_code[i] == status || !s->status_code[i]) {
			s->status_code[i] = status;
			s->status_count[i]++;
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- JSON help */

/* A JSON string of bytes that may not be valid UTF-8 (token pieces):
 * invalid bytes become U+FFFD. */
static json_t *jstr_lossy(const char *p, size_t n)
{
	if (llm_utf8_invalid_at(p, n) < 0)
		return json_stringn(p, n);
	char *b = malloc(3 * n + 1);
	size_t w = 0, i = 0;
	if (!b)
		return json_string("");
	while (i < n) {
		int64_t bad = llm_utf8_invalid_at(p + i, n - i);
		size_t good = bad < 0 ? n - i : (size_t)bad;
		memcpy(b + w, p + i, good);
		w += good;
		i += good;
		if (i < n) {
			memcpy(b + w, "\xef\xbf\xbd", 3);
			w += 3;
			i++;
		}
	}
	json_t *j = json_stringn(b, w);
	free(b);
	return j;
}

static const char *finish_reason(enum llm_finish f)
{
	switch (f) {
	case LLM_FINISH_LENGTH:
	case LLM_FINISH_CONTEXT:
		return "length";
	case LLM_FINISH_EOS:
	case LLM_FINISH_STOP:
		return "stop";
	default:
		return NULL;
	}
}

char *llm_serve_err_json(const struct llm_serve_err *e)
{
	json_t *o = json_object(), *in = json_object();
	json_object_set_new(in, "message", jstr_lossy(e->message, strlen(e->message)));
	json_object_set_new(in, "type", json_string(e->type ? e->type
	                                                    : "invalid_request_error"));
	json_object_set_new(in, "param", e->param[0] ? json_string(e->param) : json_null());
	json_object_set_new(in, "code", e->code ? json_string(e->code) : json_null());
	json_object_set_new(o, "error", in);
	char *txt = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return txt;
}

/* ---------------------------------------------------------------- parsing */

void llm_serve_req_free(struct llm_serve_req *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->n_prompts; i++) {
		free(r->prompts[i]);
		if (r->prompt_text)
			free(r->prompt_text[i]);
	}
	free(r->prompts);
	free(r->n_prompt);
	free(r->prompt_text);
	for (int i = 0; i < LLM_MAX_STOP; i++)
		free(r->stops[i]);
	memset(r, 0, sizeof(*r));
}

#define BAD(param, ...) \
	llm_serve_err_set(e, LLM_EINVAL, 400, "invalid_request_error", param, __VA_ARGS__)

static int get_num(json_t *v, const char *key, double lo, double hi, double *out,
                   struct llm_serve_err *e)
{
	if (!json_is_number(v))
		return BAD(key, "'%s' must be a number", key);
	double d = json_number_value(v);
	if (!(d >= lo && d <= hi))
		return BAD(key, "'%s' = %g is out of range [%g, %g]", key, d, lo, hi);
	*out = d;
	return 0;
}

static int get_int(json_t *v, const char *key, double lo, double hi, int64_t *out,
                   struct llm_serve_err *e)
{
	double d;
	int rc;

	if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);
		if ((double)n < lo || (double)n > hi)
			return BAD(key, "'%s' = %" JSON_INTEGER_FORMAT " is out of range "
			           "[%.0f, %.0f]", key, n, lo, hi);
		*out = n;
		return 0;
	}
	if ((rc = get_num(v, key, lo, hi, &d, e)))
		return rc;
	if (d != floor(d))
		return BAD(key, "'%s' must be an integer", key);
	*out = (int64_t)d;
	return 0;
}

/* Append a prompt (tokens, text kept for echo). */
static int add_prompt(struct llm_serve_req *r, int32_t *toks, int n, char *text,
                      struct llm_serve_err *e)
{
	int32_t **p = realloc(r->prompts, (r->n_prompts + 1) * sizeof(*p));
	if (p)
		r->prompts = p;
	int *np = p ? realloc(r->n_prompt, (r->n_prompts + 1) * sizeof(*np)) : NULL;
	if (np)
		r->n_prompt = np;
	char **pt = np ? realloc(r->prompt_text, (r->n_prompts + 1) * sizeof(*pt)) : NULL;
	if (!pt) {
		free(toks);
		free(text);
		return llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
		                         "out of memory");
	}
	r->prompt_text = pt;
	r->prompts[r->n_prompts] = toks;
	r->n_prompt[r->n_prompts] = n;
	r->prompt_text[r->n_prompts] = text;
	r->n_prompts++;
	return 0;
}

/*
 * Text to prompt tokens: BOS first when the model wants it (unless the
 * text already starts with it, as chat templates write it); empty text is
 * BOS alone.
 */
static int tokenize_text(struct llm_serve *s, struct llm_serve_req *r,
                         const char *text, size_t len, bool special,
                         struct llm_serve_err *e)
{
	int32_t bos = llm_token_bos(s->tok);
	int32_t *t = NULL;
	int n = 0, rc;

	if (llm_utf8_invalid_at(text, len) >= 0)
		return BAD("prompt", "the prompt is not valid UTF-8");
	if (len == 0 && bos < 0)
		return BAD("prompt", "an empty prompt needs a model with a BOS token");
	if ((rc = llm_tokenize(s->tok, text, len, false, special, &t, &n)))
		return BAD("prompt", "tokenizing the prompt: %s", llm_errmsg());
	if ((len == 0 || llm_tokenizer_add_bos(s->tok)) && bos >= 0 &&
	    (n == 0 || t[0] != bos)) {
		int32_t *t2 = realloc(t, (n + 1) * sizeof(*t2));
		if (!t2) {
			free(t);
			return llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
			                         "out of memory");
		}
		memmove(t2 + 1, t2, n * sizeof(*t2));
		t2[0] = bos;
		t = t2;
		n++;
	}
	if (len == 0)
		r->text_start = true;
	char *copy = strndup(text, len);
	return add_prompt(r, t, n, copy, e);
}

static int parse_token_prompt(struct llm_serve *s, struct llm_serve_req *r,
                              json_t *arr, struct llm_serve_err *e)
{
	size_t n = json_array_size(arr), i;
	json_t *v;

	if (n == 0)
		return BAD("prompt", "'prompt' holds an empty token list");
	int32_t *t = malloc(n * sizeof(*t));
	if (!t)
		return llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
		                         "out of memory");
	json_array_foreach(arr, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) >= s->n_vocab) {
			free(t);
			return BAD("prompt", "'prompt' token %zu is not an id below %d", i,
			           s->n_vocab);
		}
		t[i] = (int32_t)json_integer_value(v);
	}
	return add_prompt(r, t, (int)n, NULL, e);
}

static int parse_prompt(struct llm_serve *s, struct llm_serve_req *r, json_t *v,
                        struct llm_serve_err *e)
{
	size_t i;
	json_t *one;
	int rc;

	if (!v || json_is_null(v))
		return tokenize_text(s, r, "", 0, false, e);
	if (json_is_string(v))
		return tokenize_text(s, r, json_string_value(v), json_string_length(v),
		                     false, e);
	if (!json_is_array(v) || json_array_size(v) == 0)
		return BAD("prompt", "'prompt' must be a string, an array of strings, "
		           "or an array of token ids");
	if (json_is_integer(json_array_get(v, 0)))
		return parse_token_prompt(s, r, v, e);
	json_array_foreach(v, i, one) {
		if (json_is_string(one))
			rc = tokenize_text(s, r, json_string_value(one),
			                   json_string_length(one), false, e);
		else if (json_is_array(one))
			rc = parse_token_prompt(s, r, one, e);
		else
			rc = BAD("prompt", "'prompt' element %zu is neither a string nor a "
			         "token list", i);
		if (rc)
			return rc;
	}
	return 0;
}

/* Message content: a string, null, or an array of {"type": "text"} parts. */
static int content_text(json_t *c, size_t idx, char **out, struct llm_serve_err *e)
{
	size_t i, len = 0;
	json_t *part;

	*out = NULL;
	if (!c || json_is_null(c))
		return (*out = strdup("")) ? 0 : LLM_ENOMEM;
	if (json_is_string(c))
		return (*out = strndup(json_string_value(c), json_string_length(c))) ? 0
		                                                                     : LLM_ENOMEM;
	if (!json_is_array(c))
		return BAD("messages", "message %zu: 'content' must be a string or an "
		           "array of text parts", idx);
	char *b = strdup("");
	json_array_foreach(c, i, part) {
		json_t *type = json_object_get(part, "type");
		json_t *text = json_object_get(part, "text");
		if (!json_is_string(type) || strcmp(json_string_value(type), "text") ||
		    !json_is_string(text)) {
			free(b);
			return BAD("messages", "message %zu: only text content parts are "
			           "supported", idx);
		}
		size_t n = json_string_length(text);
		char *b2 = realloc(b, len + n + 1);
		if (!b2) {
			free(b);
			return LLM_ENOMEM;
		}
		b = b2;
		memcpy(b + len, json_string_value(text), n);
		len += n;
		b[len] = 0;
	}
	*out = b;
	return 0;
}

static int parse_messages(struct llm_serve *s, struct llm_serve_req *r, json_t *v,
                          struct llm_serve_err *e)
{
	size_t n = json_array_size(v), i;
	json_t *one;
	struct llm_chat_msg *m;
	char **texts;
	char *prompt = NULL;
	size_t plen = 0;
	int rc = 0;

	if (!json_is_array(v) || n == 0)
		return BAD("messages", "'messages' must be a non-empty array");
	m = calloc(n, sizeof(*m));
	texts = calloc(n, sizeof(*texts));
	if (!m || !texts) {
		rc = llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
		                       "out of memory");
		goto out;
	}
	json_array_foreach(v, i, one) {
		json_t *role = json_object_get(one, "role");
		if (!json_is_object(one) || !json_is_string(role)) {
			rc = BAD("messages", "message %zu needs a string 'role'", i);
			goto out;
		}
		m[i].role = json_string_value(role);
		if (!strcmp(m[i].role, "developer"))
			m[i].role = "system";
		if ((rc = content_text(json_object_get(one, "content"), i, &texts[i], e))) {
			if (rc == LLM_ENOMEM)
				llm_serve_err_set(e, rc, 500, "server_error", NULL, "out of memory");
			goto out;
		}
		m[i].content = texts[i];
	}
	if ((rc = llm_chat_format(s->chat, m, (int)n, true, &prompt, &plen))) {
		rc = BAD("messages", "%s", llm_errmsg());
		goto out;
	}
	rc = tokenize_text(s, r, prompt, plen, true, e);
	if (!rc) {
		/* chat text is not a plain-text prompt: nothing to echo */
		free(r->prompt_text[r->n_prompts - 1]);
		r->prompt_text[r->n_prompts - 1] = NULL;
		r->text_start = false;
	}
out:
	for (i = 0; texts && i < n; i++)
		free(texts[i]);
	free(texts);
	free(m);
	free(prompt);
	return rc;
}

static int parse_stop(struct llm_serve_req *r, json_t *v, struct llm_serve_err *e)
{
	size_t i;
	json_t *one;

	if (json_is_null(v))
		return 0;
	if (json_is_string(v)) {
		if (!json_string_length(v))
			return BAD("stop", "'stop' is an empty string");
		r->stops[0] = strndup(json_string_value(v), json_string_length(v));
		r->gen.stop[0] = r->stops[0];
		r->gen.n_stop = 1;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) > LLM_MAX_STOP)
		return BAD("stop", "'stop' must be a string or an array of at most %d "
		           "strings", LLM_MAX_STOP);
	json_array_foreach(v, i, one) {
		if (!json_is_string(one) || !json_string_length(one))
			return BAD("stop", "'stop' element %zu is not a non-empty string", i);
		r->stops[i] = strndup(json_string_value(one), json_string_length(one));
		r->gen.stop[i] = r->stops[i];
		r->gen.n_stop++;
	}
	return 0;
}

/* Fields that change what is generated in ways not served: refuse them
 * rather than answer something else. */
static int refuse_unsupported(json_t *o, struct llm_serve_err *e)
{
	static const char *const keys[] = { "suffix", "logit_bias", "tools",
	                                    "functions", "tool_choice",
	                                    "function_call", NULL };
	for (int i = 0; keys[i]; i++) {
		json_t *v = json_object_get(o, keys[i]);
		if (!v || json_is_null(v) || (json_is_object(v) && !json_object_size(v)) ||
		    (json_is_array(v) && !json_array_size(v)) ||
		    (json_is_string(v) && (!json_string_length(v) ||
		                           !strcmp(json_string_value(v), "none"))))
			continue;
		return BAD(keys[i], "'%s' is not supported", keys[i]);
	}
	json_t *rf = json_object_get(o, "response_format");
	if (rf && !json_is_null(rf)) {
		json_t *t = json_object_get(rf, "type");
		if (!json_is_string(t) || strcmp(json_string_value(t), "text"))
			return BAD("response_format", "only {\"type\": \"text\"} is supported");
	}
	return 0;
}

int llm_serve_parse(struct llm_serve *s, enum llm_serve_kind kind,
                    const char *body, size_t len, struct llm_serve_req *r,
                    struct llm_serve_err *e)
{
	json_error_t jerr;
	json_t *o, *v;
	struct llm_sampling *sp = &r->gen.sampling;
	const char *key;
	double d;
	int64_t n;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->n = 1;
	r->logprobs = -1;
	r->adapter = -1;
	llm_gen_params_default(&r->gen);
	/* OpenAI's defaults, not llm-generate's */
	sp->temperature = 1.0f;
	sp->top_p = 1.0f;
	sp->top_k = 0;
	sp->min_p = 0.0f;
	r->gen.max_tokens = kind == LLM_SERVE_CHAT ? -1 : 16;

	o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return BAD(NULL, "malformed JSON: %s (line %d, column %d)", jerr.text,
		           jerr.line, jerr.column);
	if (!json_is_object(o)) {
		rc = BAD(NULL, "the request body must be a JSON object");
		goto out;
	}
	if ((rc = refuse_unsupported(o, e)))
		goto out;
	v = json_object_get(o, "model");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			rc = BAD("model", "'model' must be a string");
			goto out;
		}
		if ((rc = llm_serve_adapter_of(s->e, s->model_name,
		                               json_string_value(v), &r->adapter, e)))
			goto out;
	}
	json_object_foreach(o, key, v) {
		if (json_is_null(v))
			continue;
		if (!strcmp(key, "max_tokens") || !strcmp(key, "max_completion_tokens")) {
			if ((rc = get_int(v, key, 0, 1 << 24, &n, e)))
				goto out;
			r->gen.max_tokens = (int)n;
		} else if (!strcmp(key, "temperature")) {
			if ((rc = get_num(v, key, 0, 2, &d, e)))
				goto out;
			sp->temperature = (float)d;
		} else if (!strcmp(key, "top_p")) {
			if ((rc = get_num(v, key, 0, 1, &d, e)))
				goto out;
			sp->top_p = d > 0 ? (float)d : 1e-6f;
		} else if (!strcmp(key, "top_k")) {
			if ((rc = get_int(v, key, -1, 1 << 24, &n, e)))
				goto out;
			sp->top_k = n < 0 ? 0 : (int)n;
		} else if (!strcmp(key, "min_p")) {
			if ((rc = get_num(v, key, 0, 1, &d, e)))
				goto out;
			sp->min_p = (float)d;
		} else if (!strcmp(key, "frequency_penalty")) {
			if ((rc = get_num(v, key, -2, 2, &d, e)))
				goto out;
			sp->frequency_penalty = (float)d;
		} else if (!strcmp(key, "presence_penalty")) {
			if ((rc = get_num(v, key, -2, 2, &d, e)))
				goto out;
			sp->presence_penalty = (float)d;
		} else if (!strcmp(key, "repetition_penalty")) {
			if ((rc = get_num(v, key, 0.01, 100, &d, e)))
				goto out;
			sp->repeat_penalty = (float)d;
		} else if (!strcmp(key, "seed")) {
			if ((rc = get_int(v, key, -9.2e18, 9.2e18, &n, e)))
				goto out;
			sp->seed = (uint64_t)n;
			r->seed_set = true;
		} else if (!strcmp(key, "stop")) {
			if ((rc = parse_stop(r, v, e)))
				goto out;
		} else if (!strcmp(key, "n")) {
			if ((rc = get_int(v, key, 1, 16, &n, e)))
				goto out;
			r->n = (int)n;
		} else if (!strcmp(key, "best_of")) {
			if ((rc = get_int(v, key, 1, 16, &n, e)))
				goto out;
			json_t *nn = json_object_get(o, "n");
			if (n != (json_is_integer(nn) ? json_integer_value(nn) : 1)) {
				rc = BAD(key, "'best_of' other than 'n' is not supported");
				goto out;
			}
		} else if (!strcmp(key, "logprobs")) {
			if (kind == LLM_SERVE_CHAT) {
				if (!json_is_boolean(v)) {
					rc = BAD(key, "'logprobs' must be true or false");
					goto out;
				}
				if (json_is_true(v) && r->logprobs < 0)
					r->logprobs = 0;
			} else {
				if ((rc = get_int(v, key, 0, 20, &n, e)))
					goto out;
				r->logprobs = (int)n;
			}
		} else if (!strcmp(key, "top_logprobs") && kind == LLM_SERVE_CHAT) {
			if ((rc = get_int(v, key, 0, 20, &n, e)))
				goto out;
			json_t *lp = json_object_get(o, "logprobs");
			if (!json_is_true(lp)) {
				if (n > 0) {
					rc = BAD(key, "'top_logprobs' needs 'logprobs': true");
					goto out;
				}
			} else {
				r->logprobs = (int)n;
			}
		} else if (!strcmp(key, "echo") && kind == LLM_SERVE_COMPLETION) {
			if (!json_is_boolean(v)) {
				rc = BAD(key, "'echo' must be true or false");
				goto out;
			}
			r->echo = json_is_true(v);
		} else if (!strcmp(key, "stream")) {
			if (!json_is_boolean(v)) {
				rc = BAD(key, "'stream' must be true or false");
				goto out;
			}
			r->stream = json_is_true(v);
		} else if (!strcmp(key, "stream_options")) {
			if (!json_is_object(v)) {
				rc = BAD(key, "'stream_options' must be an object");
				goto out;
			}
			r->include_usage = json_is_true(json_object_get(v, "include_usage"));
		} else if (!strcmp(key, "priority")) {
			if ((rc = get_int(v, key, -1000000, 1000000, &n, e)))
				goto out;
			r->priority = (int)n;
		} else if (!strcmp(key, "ignore_eos")) {
			if (!json_is_boolean(v)) {
				rc = BAD(key, "'ignore_eos' must be true or false");
				goto out;
			}
			r->gen.ignore_eos = json_is_true(v);
		}
	}
	if (r->logprobs >= 0) {
		r->gen.logprobs = true;
		r->gen.top_logprobs = r->logprobs;
	}
	if (llm_sampling_check(sp)) {
		rc = BAD(NULL, "%s", llm_errmsg());
		goto out;
	}
	if (kind == LLM_SERVE_CHAT) {
		if (!(v = json_object_get(o, "messages"))) {
			rc = BAD("messages", "'messages' is required");
			goto out;
		}
		rc = parse_messages(s, r, v, e);
	} else {
		if (json_object_get(o, "messages") && !json_object_get(o, "prompt")) {
			rc = BAD("prompt", "'prompt' is required (messages go to "
			         "/v1/chat/completions)");
			goto out;
		}
		rc = parse_prompt(s, r, json_object_get(o, "prompt"), e);
	}
	if (rc)
		goto out;
	if ((int64_t)r->n_prompts * r->n > s->max_choices) {
		rc = BAD("n", "%d prompts x n = %d choices: at most %d per request",
		         r->n_prompts, r->n_prompts * r->n, s->max_choices);
		goto out;
	}
	for (int i = 0; i < r->n_prompts; i++)
		if (r->n_prompt[i] >= s->n_ctx) {
			rc = BAD("messages", "This model's maximum context length is %d "
			         "tokens; the prompt has %d", s->n_ctx, r->n_prompt[i]);
			snprintf(e->param, sizeof(e->param), "%s",
			         kind == LLM_SERVE_CHAT ? "messages" : "prompt");
			e->code = "context_length_exceeded";
			goto out;
		}
	if (!r->seed_set) {
		pthread_mutex_lock(&s->mu);
		sp->seed = llm_rng_next(&s->rng) >> 1;
		pthread_mutex_unlock(&s->mu);
	}
out:
	json_decref(o);
	if (rc)
		llm_serve_req_free(r);
	return rc;
}

/* ---------------------------------------------------------------- jobs */

struct choice {
	struct llm_sreq *sr;
	bool submitted, done, role_sent, finish_sent, echo_sent;
	size_t text_sent;
	int tok_sent;
	size_t text_offset;       /* for completion logprobs' text_offset */
};

struct llm_serve_job {
	struct llm_serve *s;
	struct llm_serve_req *r;
	struct waiter own;
	struct waiter *w;         /* own, or a shared one (offline) */
	uint64_t seen;
	int n;
	struct choice *c;
	char id[48];
	time_t created;
	bool done_sent;
};

static void make_id(struct llm_serve *s, const char *prefix, char *out, size_t n)
{
	uint64_t a, b;
	pthread_mutex_lock(&s->mu);
	a = llm_rng_next(&s->rng);
	b = ++s->next_id;
	pthread_mutex_unlock(&s->mu);
	snprintf(out, n, "%s%012" PRIx64 "%06" PRIx64, prefix, a & UINT64_C(0xffffffffffff),
	         b & 0xffffff);
}

static int job_start(struct llm_serve *s, struct llm_serve_req *r,
                     struct waiter *shared, struct llm_serve_job **out,
                     struct llm_serve_err *e)
{
	struct llm_serve_job *j;
	int rc = 0;

	*out = NULL;
	if (!(j = calloc(1, sizeof(*j))) ||
	    !(j->c = calloc((size_t)r->n_prompts * r->n, sizeof(*j->c)))) {
		free(j);
		return llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
		                         "out of memory");
	}
	j->s = s;
	j->r = r;
	j->n = r->n_prompts * r->n;
	j->created = time(NULL);
	make_id(s, r->kind == LLM_SERVE_CHAT ? "chatcmpl-" : "cmpl-", j->id,
	        sizeof(j->id));
	waiter_init(&j->own);
	j->w = shared ? shared : &j->own;
	for (int i = 0; i < j->n; i++) {
		struct llm_sreq_params sp = { 0 };
		int pi = i / r->n, k = i % r->n;
		sp.prompt = r->prompts[pi];
		sp.n_prompt = r->n_prompt[pi];
		sp.gen = r->gen;
		sp.gen.sampling.seed = r->gen.sampling.seed + (uint64_t)k;
		sp.text_start = r->text_start && r->n_prompt[pi] == 1;
		sp.priority = r->priority;
		sp.adapter = r->adapter;
		sp.notify = job_notify;
		sp.user = s;
		if ((rc = llm_sreq_new(&j->c[i].sr, &sp))) {
			llm_serve_err_set(e, rc, 400, "invalid_request_error", NULL, "%s",
			                  llm_errmsg());
			goto fail;
		}
		if ((rc = waiter_add(s, j->c[i].sr, j->w))) {
			llm_serve_err_set(e, rc, 500, "server_error", NULL, "out of memory");
			llm_sreq_release(j->c[i].sr);
			j->c[i].sr = NULL;
			goto fail;
		}
	}
	for (int i = 0; i < j->n; i++) {
		rc = llm_engine_submit(s->e, j->c[i].sr);
		if (rc == LLM_ENOMEM) {
			llm_serve_err_set(e, rc, 429, "server_overloaded", NULL,
			                  "the server is busy (request queue full); retry "
			                  "later");
			e->code = "queue_full";
			goto fail;
		} else if (rc == LLM_ERANGE) {
			llm_serve_err_set(e, rc, 400, "invalid_request_error", NULL, "%s",
			                  llm_errmsg());
			e->code = "context_length_exceeded";
			goto fail;
		} else if (rc == LLM_ECANCELED && r->adapter >= 0 &&
		           strstr(llm_errmsg(), "adapter")) {
			llm_serve_err_set(e, rc, 503, "server_error", "model", "%s",
			                  llm_errmsg());
			e->code = "adapter_unloading";
			goto fail;
		} else if (rc == LLM_ECANCELED) {
			llm_serve_err_set(e, rc, 503, "server_shutting_down", NULL,
			                  "the server is shutting down");
			goto fail;
		} else if (rc) {
			llm_serve_err_set(e, rc, rc == LLM_EINVAL ? 400 : 500,
			                  rc == LLM_EINVAL ? "invalid_request_error"
			                                   : "server_error", NULL, "%s",
			                  llm_errmsg());
			goto fail;
		}
		j->c[i].submitted = true;
	}
	*out = j;
	return 0;
fail:
	llm_serve_job_free(j);
	return rc;
}

int llm_serve_start(struct llm_serve *s, struct llm_serve_req *r,
                    struct llm_serve_job **out, struct llm_serve_err *e)
{
	return job_start(s, r, NULL, out, e);
}

bool llm_serve_job_wait(struct llm_serve_job *j, double timeout)
{
	return waiter_wait(j->w, &j->seen, timeout);
}

static bool choice_done(struct choice *c)
{
	if (!c->done && c->sr && c->submitted)
		c->done = llm_sreq_wait(c->sr, SIZE_MAX, INT_MAX, 0);
	return c->done || !c->submitted;
}

bool llm_serve_job_done(struct llm_serve_job *j)
{
	for (int i = 0; i < j->n; i++)
		if (!choice_done(&j->c[i]))
			return false;
	return true;
}

void llm_serve_job_cancel(struct llm_serve_job *j)
{
	for (int i = 0; i < j->n; i++)
		if (j->c[i].sr && j->c[i].submitted && !choice_done(&j->c[i]))
			llm_sreq_cancel(j->c[i].sr);
}

void llm_serve_job_free(struct llm_serve_job *j)
{
	if (!j)
		return;
	llm_serve_job_cancel(j);
	for (int i = 0; i < j->n; i++)
		if (j->c[i].sr) {
			waiter_del(j->s, j->c[i].sr);
			llm_sreq_release(j->c[i].sr);
		}
	waiter_destroy(&j->own);
	free(j->c);
	free(j);
}


/* ---------------------------------------------------------------- replies */

static json_t *token_piece(struct llm_serve *s, int32_t id)
{
	size_t n = 0;
	const char *p = llm_token_bytes(s->tok, id, false, &n);
	return jstr_lossy(p ? p : "", p ? n : 0);
}

static json_t *token_bytes(struct llm_serve *s, int32_t id)
{
	size_t n = 0;
	const char *p = llm_token_bytes(s->tok, id, false, &n);
	json_t *a = json_array();
	for (size_t i = 0; p && i < n; i++)
		json_array_append_new(a, json_integer((unsigned char)p[i]));
	return a;
}

/*
 * Log-probs of the new tokens of a snapshot: completions' {tokens,
 * token_logprobs, top_logprobs, text_offset} or chat's {content: [...]}.
 * *offset advances by the tokens' bytes (completions' text_offset).
 */
static json_t *logprobs_json(struct llm_serve *s, enum llm_serve_kind kind,
                             const struct llm_sreq_snap *sn, size_t *offset)
{
	if (!sn->logprobs)
		return json_null();
	int k = sn->top_k;
	if (kind == LLM_SERVE_CHAT) {
		json_t *content = json_array();
		for (int i = 0; i < sn->n_new; i++) {
			json_t *t = json_object(), *top = json_array();
			json_object_set_new(t, "token", token_piece(s, sn->tokens[i]));
			json_object_set_new(t, "logprob", json_real(sn->logprobs[i]));
			json_object_set_new(t, "bytes", token_bytes(s, sn->tokens[i]));
			for (int a = 0; a < k && sn->top_ids; a++) {
				json_t *alt = json_object();
				int32_t id = sn->top_ids[(size_t)i * k + a];
				json_object_set_new(alt, "token", token_piece(s, id));
				json_object_set_new(alt, "logprob",
				                    json_real(sn->top_lps[(size_t)i * k + a]));
				json_object_set_new(alt, "bytes", token_bytes(s, id));
				json_array_append_new(top, alt);
			}
			json_object_set_new(t, "top_logprobs", top);
			json_array_append_new(content, t);
		}
		json_t *o = json_object();
		json_object_set_new(o, "content", content);
		return o;
	}
	json_t *toks = json_array(), *lps = json_array(), *tops = json_array(),
	       *offs = json_array();
	for (int i = 0; i < sn->n_new; i++) {
		size_t n = 0;
		llm_token_bytes(s->tok, sn->tokens[i], false, &n);
		json_array_append_new(toks, token_piece(s, sn->tokens[i]));
		json_array_append_new(lps, json_real(sn->logprobs[i]));
		json_array_append_new(offs, json_integer((json_int_t)*offset));
		*offset += n;
		if (k > 0 && sn->top_ids) {
			json_t *d = json_object();
			for (int a = 0; a < k; a++) {
				size_t pn = 0;
				const char *p = llm_token_bytes(s->tok, sn->top_ids[(size_t)i * k + a],
				                                false, &pn);
				char key[256];
				snprintf(key, sizeof(key), "%.*s", (int)(pn < 255 ? pn : 255),
				         p ? p : "");
				json_t *ks = jstr_lossy(key, strlen(key));
				json_object_set_new(d, json_string_value(ks),
				                    json_real(sn->top_lps[(size_t)i * k + a]));
				json_decref(ks);
			}
			json_array_append_new(tops, d);
		} else {
			json_array_append_new(tops, json_null());
		}
	}
	json_t *o = json_object();
	json_object_set_new(o, "tokens", toks);
	json_object_set_new(o, "token_logprobs", lps);
	json_object_set_new(o, "top_logprobs", tops);
	json_object_set_new(o, "text_offset", offs);
	return o;
}

static json_t *usage_json(struct llm_serve_job *j, int64_t completion,
                          int64_t cached)
{
	int64_t prompt = 0;
	for (int i = 0; i < j->r->n_prompts; i++)
		prompt += j->r->n_prompt[i];
	json_t *u = json_object(), *d = json_object();
	json_object_set_new(u, "prompt_tokens", json_integer(prompt));
	json_object_set_new(u, "completion_tokens", json_integer(completion));
	json_object_set_new(u, "total_tokens", json_integer(prompt + completion));
	json_object_set_new(d, "cached_tokens", json_integer(cached));
	json_object_set_new(u, "prompt_tokens_details", d);
	return u;
}

static void snap_error(const struct llm_sreq_snap *sn, struct llm_serve_err *e)
{
	if (sn->error == LLM_ECANCELED)
		llm_serve_err_set(e, sn->error, 503, "server_error", NULL,
		                  "the request was canceled: %s",
		                  sn->errmsg[0] ? sn->errmsg : "server stopping");
	else if (!strncmp(sn->errmsg, "adapter ", 8))
		llm_serve_err_set(e, sn->error, 500, "adapter_error", "model",
		                  "the adapter could not be loaded: %s", sn->errmsg);
	else
		llm_serve_err_set(e, sn->error, 500, "server_error", NULL,
		                  "generation failed: %s", sn->errmsg);
}

static json_t *reply_object(struct llm_serve_job *j, struct llm_serve_err *e,
                            int *rc)
{
	struct llm_serve *s = j->s;
	struct llm_serve_req *r = j->r;
	bool chat = r->kind == LLM_SERVE_CHAT;
	json_t *o = json_object(), *choices = json_array();
	int64_t completion = 0, cached = 0;

	*rc = 0;
	for (int i = 0; i < j->n; i++) {
		struct llm_sreq_snap sn;
		int pi = i / r->n;
		if ((*rc = llm_sreq_snapshot(j->c[i].sr, 0, 0, &sn))) {
			llm_serve_err_set(e, *rc, 500, "server_error", NULL, "%s", llm_errmsg());
			goto fail;
		}
		if (sn.error || !sn.done) {
			if (sn.error)
				snap_error(&sn, e);
			else
				llm_serve_err_set(e, LLM_EINVAL, 500, "server_error", NULL,
				                  "the request is not finished");
			*rc = sn.error ? sn.error : LLM_EINVAL;
			llm_sreq_snap_free(&sn);
			goto fail;
		}
		completion += sn.n_tokens;
		if (i % r->n == 0)
			cached += sn.n_cached;
		json_t *c = json_object();
		json_object_set_new(c, "index", json_integer(i));
		json_t *text;
		if (r->echo && r->prompt_text && r->prompt_text[pi]) {
			size_t pl = strlen(r->prompt_text[pi]);
			char *b = malloc(pl + sn.text_len + 1);
			memcpy(b, r->prompt_text[pi], pl);
			memcpy(b + pl, sn.text, sn.text_len);
			text = jstr_lossy(b, pl + sn.text_len);
			free(b);
		} else {
			text = jstr_lossy(sn.text, sn.text_len);
		}
		if (chat) {
			json_t *m = json_object();
			json_object_set_new(m, "role", json_string("assistant"));
			json_object_set_new(m, "content", text);
			json_object_set_new(c, "message", m);
		} else {
			json_object_set_new(c, "text", text);
		}
		size_t off = 0;
		json_object_set_new(c, "logprobs", logprobs_json(s, r->kind, &sn, &off));
		const char *fr = finish_reason(sn.finish);
		json_object_set_new(c, "finish_reason", fr ? json_string(fr) : json_null());
		json_array_append_new(choices, c);
		llm_sreq_snap_free(&sn);
	}
	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "object", json_string(chat ? "chat.completion"
	                                                  : "text_completion"));
	json_object_set_new(o, "created", json_integer((json_int_t)j->created));
	json_object_set_new(o, "model", json_string(s->model_name));
	json_object_set_new(o, "choices", choices);
	json_object_set_new(o, "usage", usage_json(j, completion, cached));
	return o;
fail:
	json_decref(o);
	json_decref(choices);
	return NULL;
}

int llm_serve_reply(struct llm_serve_job *j, const char *id, char **json,
                    struct llm_serve_err *e)
{
	int rc;
	json_t *o = reply_object(j, e, &rc);

	*json = NULL;
	if (!o)
		return rc;
	if (id)
		json_object_set_new(o, "id", json_string(id));
	*json = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return *json ? 0 : llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
	                                     "out of memory");
}

/* ---------------------------------------------------------------- streaming */

static int buf_add(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap : 1024;
		while (*len + n + 1 > c)
			c *= 2;
		char *b = realloc(*buf, c);
		if (!b)
			return llm_error(LLM_ENOMEM, "serve: out of memory");
		*buf = b;
		*cap = c;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = 0;
	return 0;
}

/* "data: <json>\n\n"; takes o. */
static int sse_add(char **buf, size_t *len, size_t *cap, json_t *o)
{
	char *t = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!t)
		return llm_error(LLM_ENOMEM, "serve: out of memory");
	int rc = buf_add(buf, len, cap, "data: ", 6);
	if (!rc)
		rc = buf_add(buf, len, cap, t, strlen(t));
	if (!rc)
		rc = buf_add(buf, len, cap, "\n\n", 2);
	free(t);
	return rc;
}

static json_t *chunk_new(struct llm_serve_job *j, json_t *choice)
{
	bool chat = j->r->kind == LLM_SERVE_CHAT;
	json_t *o = json_object(), *choices = json_array();
	json_object_set_new(o, "id", json_string(j->id));
	json_object_set_new(o, "object", json_string(chat ? "chat.completion.chunk"
	                                                  : "text_completion"));
	json_object_set_new(o, "created", json_integer((json_int_t)j->created));
	json_object_set_new(o, "model", json_string(j->s->model_name));
	if (choice)
		json_array_append_new(choices, choice);
	json_object_set_new(o, "choices", choices);
	return o;
}

static json_t *chat_delta(int index, json_t *delta, json_t *logprobs,
                          const char *finish)
{
	json_t *c = json_object();
	json_object_set_new(c, "index", json_integer(index));
	json_object_set_new(c, "delta", delta);
	json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
	json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
	return c;
}

int llm_serve_stream(struct llm_serve_job *j, char **buf, size_t *len,
                     size_t *cap, bool *finished)
{
	struct llm_serve *s = j->s;
	struct llm_serve_req *r = j->r;
	bool chat = r->kind == LLM_SERVE_CHAT;
	bool all = true;
	int rc = 0;

	*finished = false;
	if (j->done_sent) {
		*finished = true;
		return 0;
	}
	for (int i = 0; i < j->n; i++) {
		struct choice *c = &j->c[i];
		struct llm_sreq_snap sn;
		if (c->finish_sent)
			continue;
		if ((rc = llm_sreq_snapshot(c->sr, c->text_sent, c->tok_sent, &sn)))
			return rc;
		if (chat && !c->role_sent) {
			json_t *d = json_object();
			json_object_set_new(d, "role", json_string("assistant"));
			json_object_set_new(d, "content", json_string(""));
			if ((rc = sse_add(buf, len, cap, chunk_new(j, chat_delta(i, d, NULL,
			                                                           NULL)))))
				goto next;
			c->role_sent = true;
		}
		if (sn.error) {
			struct llm_serve_err e;
			snap_error(&sn, &e);
			char *t = llm_serve_err_json(&e);
			if (t) {
				rc = buf_add(buf, len, cap, "data: ", 6);
				if (!rc)
					rc = buf_add(buf, len, cap, t, strlen(t));
				if (!rc)
					rc = buf_add(buf, len, cap, "\n\n", 2);
				free(t);
			}
			c->finish_sent = true;
			c->done = true;
			goto next;
		}
		const char *fr = sn.done ? finish_reason(sn.finish) : NULL;
		if (sn.done && !fr)
			fr = "stop";
		bool news = sn.text_len > 0 || sn.n_new > 0;
		bool echo = !chat && r->echo && !c->echo_sent && r->prompt_text &&
		            r->prompt_text[i / r->n];
		if (news || echo || (!chat && fr)) {
			json_t *text;
			if (echo) {
				const char *pt = r->prompt_text[i / r->n];
				size_t pl = strlen(pt);
				char *b = malloc(pl + sn.text_len + 1);
				memcpy(b, pt, pl);
				memcpy(b + pl, sn.text, sn.text_len);
				text = jstr_lossy(b, pl + sn.text_len);
				free(b);
				c->echo_sent = true;
			} else {
				text = jstr_lossy(sn.text, sn.text_len);
			}
			json_t *lp = sn.n_new > 0 ? logprobs_json(s, r->kind, &sn,
			                                           &c->text_offset)
			                          : json_null();
			json_t *ch;
			if (chat) {
				json_t *d = json_object();
				json_object_set_new(d, "content", text);
				ch = chat_delta(i, d, lp, NULL);
			} else {
				ch = json_object();
				json_object_set_new(ch, "index", json_integer(i));
				json_object_set_new(ch, "text", text);
				json_object_set_new(ch, "logprobs", lp);
				json_object_set_new(ch, "finish_reason",
				                    fr ? json_string(fr) : json_null());
			}
			if ((rc = sse_add(buf, len, cap, chunk_new(j, ch))))
				goto next;
		}
		c->text_sent += sn.text_len;
		c->tok_sent += sn.n_new;
		if (sn.done) {
			if (chat && (rc = sse_add(buf, len, cap,
			                          chunk_new(j, chat_delta(i, json_object(),
			                                                  NULL, fr)))))
				goto next;
			c->finish_sent = true;
			c->done = true;
		}
next:
		llm_sreq_snap_free(&sn);
		if (rc)
			return rc;
		if (!c->finish_sent)
			all = false;
	}
	if (!all)
		return 0;
	if (r->include_usage) {
		int64_t completion = 0, cached = 0;
		for (int i = 0; i < j->n; i++) {
			completion += j->c[i].tok_sent;
			(void)cached;
		}
		json_t *o = chunk_new(j, NULL);
		json_object_set_new(o, "usage", usage_json(j, completion, cached));
		if ((rc = sse_add(buf, len, cap, o)))
			return rc;
	}
	if ((rc = buf_add(buf, len, cap, "data: [DONE]\n\n", 14)))
		return rc;
	j->done_sent = true;
	*finished = true;
	return 0;
}

/* ---------------------------------------------------------------- models, metrics */

char *llm_serve_models_json(struct llm_serve *s)
{
	json_t *o = json_object(), *data = json_array(), *m = json_object();
	json_object_set_new(m, "id", json_string(s->model_name));
	json_object_set_new(m, "object", json_string("model"));
	json_object_set_new(m, "created", json_integer((json_int_t)s->created));
	json_object_set_new(m, "owned_by", json_string("llmkit"));
	json_object_set_new(m, "max_model_len", json_integer(s->n_ctx));
	json_array_append_new(data, m);
	llm_serve_adapters_models(s->e, s->model_name, (long long)s->created, data);
	json_object_set_new(o, "object", json_string("list"));
	json_object_set_new(o, "data", data);
	char *t = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return t;
}

static void prom(FILE *f, const char *name, const char *type, const char *help,
                 double v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
	        name, v);
}

static void prom_hist(FILE *f, const char *name, const char *help,
                      const struct llm_hist *h)
{
	uint64_t cum = 0;
	fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i < h->n && i < LLM_HIST_MAX; i++) {
		cum += h->count[i];
		fprintf(f, "%s_bucket{le=\"%.17g\"} %" PRIu64 "\n", name, h->le[i], cum);
	}
	fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->total);
	fprintf(f, "%s_sum %.17g\n%s_count %" PRIu64 "\n", name, h->sum, name, h->total);
}

char *llm_serve_metrics_text(struct llm_serve *s)
{
	struct llm_engine_metrics m;
	char *out = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&out, &n);

	if (!f)
		return NULL;
	memset(&m, 0, sizeof(m));
	llm_engine_metrics(s->e, &m);
	fprintf(f, "# HELP llmkit_info The served model and batching policy.\n"
	        "# TYPE llmkit_info gauge\nllmkit_info{model=\"%s\",policy=\"%s\"} 1\n",
	        s->model_name, m.policy ? m.policy : "");
	prom(f, "llmkit_requests_waiting", "gauge", "Requests waiting (queue depth).",
	     m.waiting);
	prom(f, "llmkit_requests_running", "gauge", "Sequences running.", m.running);
	prom(f, "llmkit_batch_cap", "gauge", "The policy's current cap on running "
	     "sequences.", m.cap);
	prom(f, "llmkit_kv_blocks", "gauge", "KV cache blocks in all.", m.kv_blocks);
	prom(f, "llmkit_kv_blocks_used", "gauge", "KV cache blocks held by sequences.",
	     m.kv_used);
	prom(f, "llmkit_kv_blocks_cached", "gauge", "KV cache blocks kept as cached "
	     "prefixes.", m.kv_cached);
	prom(f, "llmkit_kv_blocks_reserved", "gauge", "KV blocks the policy keeps "
	     "free for arrivals.", m.kv_reserve);
	prom(f, "llmkit_kv_usage_ratio", "gauge", "Fraction of KV blocks in use.",
	     m.kv_blocks ? (double)m.kv_used / m.kv_blocks : 0);
	fprintf(f, "# HELP llmkit_requests_total Requests by outcome.\n"
	        "# TYPE llmkit_requests_total counter\n"
	        "llmkit_requests_total{outcome=\"submitted\"} %" PRIu64 "\n"
	        "llmkit_requests_total{outcome=\"done\"} %" PRIu64 "\n"
	        "llmkit_requests_total{outcome=\"failed\"} %" PRIu64 "\n"
	        "llmkit_requests_total{outcome=\"canceled\"} %" PRIu64 "\n"
	        "llmkit_requests_total{outcome=\"rejected\"} %" PRIu64 "\n",
	        m.requests_submitted, m.requests_done, m.requests_failed,
	        m.requests_canceled, m.requests_rejected);
	prom(f, "llmkit_prompt_tokens_total", "counter", "Prompt tokens.",
	     (double)m.prompt_tokens);
	prom(f, "llmkit_prompt_tokens_cached_total", "counter", "Prompt tokens taken "
	     "from the prefix cache.", (double)m.prompt_tokens_cached);
	prom(f, "llmkit_generation_tokens_total", "counter", "Generated tokens.",
	     (double)m.gen_tokens);
	prom(f, "llmkit_preemptions_total", "counter", "Sequences preempted.",
	     (double)m.preemptions);
	prom(f, "llmkit_steps_total", "counter", "Engine steps.", (double)m.steps);
	prom(f, "llmkit_prefix_lookups_total", "counter", "Prefix cache lookups.",
	     (double)m.prefix_lookups);
	prom(f, "llmkit_prefix_hits_total", "counter", "Prefix cache hits.",
	     (double)m.prefix_hits);
	prom(f, "llmkit_decode_seconds_total", "counter", "Seconds in the model's "
	     "forward (llm_decode).", m.t_decode);
	prom(f, "llmkit_sched_seconds_total", "counter", "Seconds of engine work "
	     "outside the forward and sampling (scheduling).", m.t_sched);
	prom(f, "llmkit_sample_seconds_total", "counter", "Seconds sampling and "
	     "decoding text.", m.t_sample);
	prom(f, "llmkit_busy_seconds_total", "counter", "Seconds of engine "
	     "iterations with work.", m.t_busy);
	prom(f, "llmkit_tokens_per_second", "gauge", "Generated tokens per second, "
	     "recent.", m.tokens_per_s);
	prom(f, "llmkit_cpu_pressure", "gauge", "CPU used by other processes, "
	     "fraction of the machine.", m.cpu_pressure);
	prom_hist(f, "llmkit_batch_size", "Sequences per step.", &m.batch_size);
	prom_hist(f, "llmkit_step_seconds", "Seconds per engine step.", &m.step_time);
	prom_hist(f, "llmkit_ttft_seconds", "Time to first token.", &m.ttft);
	prom_hist(f, "llmkit_tpot_seconds", "Time per output token after the first.",
	          &m.tpot);
	prom_hist(f, "llmkit_e2e_seconds", "End-to-end request latency.", &m.e2e);
	prom_hist(f, "llmkit_queue_seconds", "Seconds waiting before first run.",
	          &m.queue_time);

	llm_serve_adapters_metrics(s->e, f);

	pthread_mutex_lock(&s->mu);
	fprintf(f, "# HELP llmkit_http_requests_total HTTP requests answered, by "
	        "status.\n# TYPE llmkit_http_requests_total counter\n");
	for (int i = 0; i < N_STATUS && s->status_code[i]; i++)
		fprintf(f, "llmkit_http_requests_total{code=\"%d\"} %" PRIu64 "\n",
		        s->status_code[i], s->status_count[i]);
	double http = s->http_busy;
	pthread_mutex_unlock(&s->mu);
	prom(f, "llmkit_http_seconds_total", "counter", "Seconds HTTP threads spent "
	     "working (parsing, tokenizing, building replies; not waiting).", http);
	prom(f, "llmkit_server_overhead_ratio", "gauge", "(HTTP work + scheduling) "
	     "over step time.", m.t_busy > 0 ? (http + m.t_sched) / m.t_busy : 0);
	fclose(f);
	return out;
}

/* ---------------------------------------------------------------- offline */

struct off_item {
	json_t *id;
	int64_t line;
	enum llm_serve_kind kind;
	struct llm_serve_req r;
	struct llm_serve_job *j;
};

static int write_line(FILE *out, json_t *o)
{
	int rc = json_dumpf(o, out, JSON_COMPACT);
	json_decref(o);
	if (rc || fputc('\n', out) == EOF || fflush(out))
		return llm_error(LLM_EIO, "offline: writing the replies: %s",
		                 strerror(errno));
	return 0;
}

static int write_error(FILE *out, json_t *id, int64_t line,
                       const struct llm_serve_err *e)
{
	json_t *o = json_object(), *in = json_object();
	json_object_set_new(o, "id", id ? json_incref(id) : json_integer(line));
	json_object_set_new(in, "message", jstr_lossy(e->message, strlen(e->message)));
	json_object_set_new(in, "type", json_string(e->type ? e->type
	                                                    : "invalid_request_error"));
	json_object_set_new(in, "param", e->param[0] ? json_string(e->param) : json_null());
	json_object_set_new(in, "code", e->code ? json_string(e->code) : json_null());
	json_object_set_new(in, "status", json_integer(e->status));
	json_object_set_new(in, "line", json_integer(line));
	json_object_set_new(o, "error", in);
	return write_line(out, o);
}

/*
 * One input line to an item (parsed, not started).  Either a request
 * body with an optional "id"/"custom_id", or OpenAI's batch form
 * {"custom_id", "url", "body"}.
 */
static int offline_parse(struct llm_serve *s, const char *line, size_t len,
                         struct off_item *it, struct llm_serve_err *e)
{
	json_error_t jerr;
	json_t *o = json_loadb(line, len, 0, &jerr), *body, *v;
	int rc;

	if (!o)
		return BAD(NULL, "malformed JSON: %s (column %d)", jerr.text, jerr.column);
	if (!json_is_object(o)) {
		json_decref(o);
		return BAD(NULL, "a request line must be a JSON object");
	}
	if ((v = json_object_get(o, "custom_id")) || (v = json_object_get(o, "id")))
		it->id = json_incref(v);
	body = json_object_get(o, "body");
	if (body && json_is_object(body)) {
		json_t *url = json_object_get(o, "url");
		it->kind = json_is_string(url) && strstr(json_string_value(url), "chat")
		           ? LLM_SERVE_CHAT : LLM_SERVE_COMPLETION;
		if (!json_is_string(url) && json_object_get(body, "messages"))
			it->kind = LLM_SERVE_CHAT;
	} else {
		body = o;
		it->kind = json_object_get(o, "messages") ? LLM_SERVE_CHAT
		                                          : LLM_SERVE_COMPLETION;
	}
	json_object_del(body, "stream");
	json_object_del(body, "id");
	json_object_del(body, "custom_id");
	char *t = json_dumps(body, JSON_COMPACT);
	json_decref(o);
	if (!t)
		return llm_serve_err_set(e, LLM_ENOMEM, 500, "server_error", NULL,
		                         "out of memory");
	rc = llm_serve_parse(s, it->kind, t, strlen(t), &it->r, e);
	free(t);
	return rc;
}

static void item_clear(struct off_item *it)
{
	llm_serve_job_free(it->j);
	llm_serve_req_free(&it->r);
	json_decref(it->id);
	free(it);
}

int llm_serve_offline(struct llm_serve *s, FILE *in, FILE *out, int window,
                      llm_offline_progress_fn progress, void *user,
                      int64_t *n_failed)
{
	struct waiter w;
	uint64_t seen = 0;
	struct off_item **items, *held = NULL;   /* held: refused by a full queue */
	int n_items = 0, rc = 0;
	int64_t lineno = 0;
	char *line = NULL;
	size_t line_cap = 0;
	bool eof = false;
	struct llm_offline_progress pr = { 0 };
	double t0 = llm_time_now(), t_report = t0;

	if (window <= 0)
		window = 256;
	if (n_failed)
		*n_failed = 0;
	if (!(items = calloc(window, sizeof(*items))))
		return llm_error(LLM_ENOMEM, "offline: out of memory");
	waiter_init(&w);
	while (!eof || n_items || held) {
		bool progressed = false;
		/* fill the window */
		while (n_items < window && (held || !eof)) {
			struct llm_serve_err e;
			struct off_item *it = held;
			held = NULL;
			if (!it) {
				errno = 0;
				ssize_t len = getline(&line, &line_cap, in);
				if (len < 0) {
					if (ferror(in)) {
						rc = llm_error(LLM_EIO, "offline: reading the requests: %s",
						               strerror(errno));
						goto out;
					}
					eof = true;
					break;
				}
				lineno++;
				while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
					line[--len] = 0;
				if ((size_t)len == strspn(line, " \t"))
					continue;       /* blank lines are not requests */
				pr.read++;
				if (!(it = calloc(1, sizeof(*it)))) {
					rc = llm_error(LLM_ENOMEM, "offline: out of memory");
					goto out;
				}
				it->line = lineno;
				if (offline_parse(s, line, len, it, &e)) {
					pr.failed++;
					pr.done++;
					rc = write_error(out, it->id, it->line, &e);
					item_clear(it);
					if (rc)
						goto out;
					continue;
				}
			}
			if (job_start(s, &it->r, &w, &it->j, &e)) {
				it->j = NULL;
				if (e.status == 429 && n_items > 0) {
					held = it;      /* the queue is full: retry later */
					break;
				}
				pr.failed++;
				pr.done++;
				rc = write_error(out, it->id, it->line, &e);
				item_clear(it);
				if (rc)
					goto out;
				continue;
			}
			items[n_items++] = it;
			progressed = true;
		}
		/* write what finished */
		for (int i = 0; i < n_items; i++) {
			struct off_item *it = items[i];
			if (!llm_serve_job_done(it->j))
				continue;
			struct llm_serve_err e;
			int rc2;
			json_t *o = reply_object(it->j, &e, &rc2);
			for (int p = 0; p < it->r.n_prompts; p++)
				pr.prompt_tokens += it->r.n_prompt[p];
			if (o) {
				json_t *u = json_object_get(json_object_get(o, "usage"),
				                            "completion_tokens");
				pr.gen_tokens += json_integer_value(u);
				json_object_set_new(o, "id", it->id ? json_incref(it->id)
				                                    : json_integer(it->line));
				rc = write_line(out, o);
			} else {
				pr.failed++;
				rc = write_error(out, it->id, it->line, &e);
			}
			pr.done++;
			item_clear(it);
			items[i--] = items[--n_items];
			progressed = true;
			if (rc)
				goto out;
		}
		double now = llm_time_now();
		if (progress && now - t_report >= 1.0) {
			pr.elapsed = now - t0;
			progress(user, &pr);
			t_report = now;
		}
		if (!progressed && (n_items || held))
			waiter_wait(&w, &seen, 0.25);
	}
out:
	for (int i = 0; i < n_items; i++)
		item_clear(items[i]);
	if (held)
		item_clear(held);
	free(items);
	free(line);
	waiter_destroy(&w);
	if (n_failed)
		*n_failed = pr.failed;
	if (progress) {
		pr.elapsed = llm_time_now() - t0;
		pr.final = true;
		progress(user, &pr);
	}
	return rc;
}
