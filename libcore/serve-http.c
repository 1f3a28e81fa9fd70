/*
 * serve-http.c - the OpenAI-compatible HTTP front of the serving engine
 * (serve.h), on GNU libmicrohttpd.
 *
 * One thread per connection: a slow client (or one reading a long
 * stream) holds only its own thread, never the others or the engine.  A
 * handler waits on its job's waiter in short slices and, between them,
 * looks at its socket: a client that closed it gets its requests canceled
 * at once (their KV blocks are freed at the engine's next iteration), not
 * when the reply would have been written.
 *
 * Draining (SIGTERM): the listening socket is closed, new requests on open
 * connections get 503, and the requests in flight run to their end.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/serve.h"
#include "llmkit/util.h"
#include "serve-adapters.h"

struct llm_http {
	struct llm_serve *s;
	struct MHD_Daemon *d;
	struct llm_http_params p;
	char *api_key;
	char *host;
	int port;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int inflight;             /* requests between their first call and the end */
	bool draining;            /* refuse new requests */
	bool cancel_all;          /* the drain timed out: give up what runs */
};

/* One HTTP request (MHD's per-request context). */
struct conn_req {
	struct llm_http *h;
	char *body;
	size_t len, cap;
	bool too_big;
	bool responded;
	int fd;
	int status;
	double busy;              /* seconds of work (not waiting) */
	bool have_req;
	struct llm_serve_req r;
	struct llm_serve_job *j;
	/* streaming */
	char *sbuf;
	size_t slen, scap, soff;
	bool sfinished;
};

#define SLICE 0.05            /* seconds between looks at the socket */

void llm_http_params_default(struct llm_http_params *p)
{
	memset(p, 0, sizeof(*p));
	p->host = "127.0.0.1";
	p->port = 8080;
	p->max_body = 1 << 20;
	p->max_conns = 1024;
	p->retry_after = 1;
	p->conn_timeout = 60;
}

/* The client closed its end (or the socket failed). */
static bool client_gone(int fd)
{
	struct pollfd pf = { .fd = fd, .events = POLLRDHUP };
	if (fd < 0)
		return false;
	if (poll(&pf, 1, 0) <= 0)
		return false;
	return (pf.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static bool giving_up(struct llm_http *h)
{
	pthread_mutex_lock(&h->mu);
	bool g = h->cancel_all;
	pthread_mutex_unlock(&h->mu);
	return g;
}

/* Queue a response with a malloc'd body (taken). */
static enum MHD_Result respond(struct MHD_Connection *c, struct conn_req *cr,
                               int status, const char *ctype, char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!body)
		body = strdup("");
	resp = MHD_create_response_from_buffer(body ? strlen(body) : 0, body,
	                                       MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (status == 429 || status == 503) {
		char ra[32];
		snprintf(ra, sizeof(ra), "%d", cr->h->p.retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if (status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (status == 405)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, POST");
	if (cr->h->draining)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	cr->status = status;
	cr->responded = true;
	return ret;
}

static enum MHD_Result respond_err(struct MHD_Connection *c, struct conn_req *cr,
                                   const struct llm_serve_err *e)
{
	return respond(c, cr, e->status, "application/json", llm_serve_err_json(e));
}

static enum MHD_Result respond_simple(struct MHD_Connection *c,
                                      struct conn_req *cr, int status,
                                      const char *type, const char *code,
                                      const char *msg)
{
	struct llm_serve_err e;
	llm_serve_err_set(&e, 0, status, type, NULL, "%s", msg);
	e.code = code;
	return respond_err(c, cr, &e);
}

/* Constant-time comparison of the bearer token. */
static bool authorized(struct llm_http *h, struct MHD_Connection *c)
{
	if (!h->api_key)
		return true;
	const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	                                            MHD_HTTP_HEADER_AUTHORIZATION);
	if (!a || strncasecmp(a, "Bearer ", 7))
		return false;
	a += 7;
	while (*a == ' ')
		a++;
	size_t n = strlen(a), k = strlen(h->api_key);
	unsigned char diff = n != k;
	for (size_t i = 0; i < n && i < k; i++)
		diff |= (unsigned char)(a[i] ^ h->api_key[i]);
	return diff == 0;
}

/* ---------------------------------------------------------------- streaming */

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct conn_req *cr = cls;
	struct llm_http *h = cr->h;

	(void)pos;
	for (;;) {
		if (cr->soff < cr->slen) {
			size_t n = cr->slen - cr->soff < max ? cr->slen - cr->soff : max;
			memcpy(buf, cr->sbuf + cr->soff, n);
			cr->soff += n;
			return (ssize_t)n;
		}
		if (cr->sfinished)
			return MHD_CONTENT_READER_END_OF_STREAM;
		cr->slen = cr->soff = 0;
		double t0 = llm_time_now();
		int rc = llm_serve_stream(cr->j, &cr->sbuf, &cr->slen, &cr->scap,
		                          &cr->sfinished);
		cr->busy += llm_time_now() - t0;
		if (rc)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (cr->slen || cr->sfinished)
			continue;
		while (!llm_serve_job_wait(cr->j, SLICE)) {
			if (client_gone(cr->fd) || giving_up(h)) {
				llm_serve_job_cancel(cr->j);
				return MHD_CONTENT_READER_END_WITH_ERROR;
			}
		}
	}
}

/* ---------------------------------------------------------------- handlers */

static enum MHD_Result handle_generate(struct MHD_Connection *c,
                                       struct conn_req *cr,
                                       enum llm_serve_kind kind)
{
	struct llm_http *h = cr->h;
	struct llm_serve_err e;
	double t0 = llm_time_now();

	if (llm_serve_parse(h->s, kind, cr->body ? cr->body : "", cr->len, &cr->r, &e))
		return respond_err(c, cr, &e);
	cr->have_req = true;
	if (llm_serve_start(h->s, &cr->r, &cr->j, &e))
		return respond_err(c, cr, &e);
	cr->busy += llm_time_now() - t0;

	if (cr->r.stream) {
		struct MHD_Response *resp = MHD_create_response_from_callback(
			MHD_SIZE_UNKNOWN, 16384, stream_cb, cr, NULL);
		if (!resp)
			return MHD_NO;
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		                        "text/event-stream");
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
		enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
		MHD_destroy_response(resp);
		cr->status = 200;
		cr->responded = true;
		return ret;
	}
	double t_look = llm_time_now();
	while (!llm_serve_job_done(cr->j)) {
		/* news comes with every token: look at the socket by the clock */
		if (llm_serve_job_wait(cr->j, SLICE) && llm_time_now() - t_look < SLICE)
			continue;
		t_look = llm_time_now();
		if (client_gone(cr->fd) || giving_up(h)) {
			llm_serve_job_cancel(cr->j);
			cr->status = 499;     /* nginx's "client closed request" */
			return MHD_NO;
		}
	}
	t0 = llm_time_now();
	char *json = NULL;
	if (llm_serve_reply(cr->j, NULL, &json, &e))
		return respond_err(c, cr, &e);
	cr->busy += llm_time_now() - t0;
	return respond(c, cr, 200, "application/json", json);
}

static enum MHD_Result route(struct MHD_Connection *c, struct conn_req *cr,
                             const char *url, const char *method)
{
	struct llm_http *h = cr->h;
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	bool post = !strcmp(method, "POST");

	if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
		if (!post)
			return respond_simple(c, cr, 405, "invalid_request_error", NULL,
			                      "use POST");
		return handle_generate(c, cr, url[4] == 'c' && url[5] == 'h'
		                              ? LLM_SERVE_CHAT : LLM_SERVE_COMPLETION);
	}
	if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
		if (!get)
			return respond_simple(c, cr, 405, "invalid_request_error", NULL,
			                      "use GET");
		if (url[10] == 0)
			return respond(c, cr, 200, "application/json",
			               llm_serve_models_json(h->s));
		/* one model: the base model or an adapter */
		char *one = llm_serve_model_one(h->s, url + 11);
		if (!one)
			return respond_simple(c, cr, 404, "invalid_request_error",
			                      "model_not_found", "no such model");
		return respond(c, cr, 200, "application/json", one);
	}
	if (!strcmp(url, "/v1/adapters") || !strncmp(url, "/v1/adapters/", 13)) {
		char *json = NULL;
		int st = llm_serve_adapters_api(h->s, method, url, cr->body, cr->len, &json);
		return respond(c, cr, st, "application/json", json);
	}
	if (!strcmp(url, "/health")) {
		if (!get)
			return respond_simple(c, cr, 405, "invalid_request_error", NULL,
			                      "use GET");
		return h->draining
		       ? respond(c, cr, 503, "application/json",
		                 strdup("{\"status\":\"draining\"}"))
		       : respond(c, cr, 200, "application/json", strdup("{\"status\":\"ok\"}"));
	}
	if (!strcmp(url, "/metrics")) {
		if (!get)
			return respond_simple(c, cr, 405, "invalid_request_error", NULL,
			                      "use GET");
		return respond(c, cr, 200, "text/plain; version=0.0.4",
		               llm_serve_metrics_text(h->s));
	}
	return respond_simple(c, cr, 404, "invalid_request_error", "not_found",
	                      "no such endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
	struct llm_http *h = cls;
	struct conn_req *cr = *con_cls;

	(void)version;
	if (!cr) {
		if (!(cr = calloc(1, sizeof(*cr))))
			return MHD_NO;
		cr->h = h;
		cr->fd = -1;
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci)
			cr->fd = ci->connect_fd;
		*con_cls = cr;
		pthread_mutex_lock(&h->mu);
		h->inflight++;
		bool draining = h->draining;
		pthread_mutex_unlock(&h->mu);
		/* answers that need no body: given at once (MHD skips the body) */
		if (draining)
			return respond_simple(c, cr, 503, "server_error", "shutting_down",
			                      "the server is shutting down");
		if (!strncmp(url, "/v1/", 4) && !authorized(h, c))
			return respond_simple(c, cr, 401, "invalid_request_error",
			                      "invalid_api_key", "Incorrect or missing API key "
			                      "(Authorization: Bearer KEY)");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > h->p.max_body) {
			char msg[128];
			snprintf(msg, sizeof(msg), "the request body is larger than %zu bytes",
			         h->p.max_body);
			return respond_simple(c, cr, 413, "invalid_request_error",
			                      "request_too_large", msg);
		}
		return MHD_YES;
	}
	if (cr->responded) {      /* a body after an early answer: drop it */
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (cr->len + *upload_size > h->p.max_body) {
			cr->too_big = true;
		} else {
			if (cr->len + *upload_size + 1 > cr->cap) {
				size_t cap = cr->cap ? cr->cap : 4096;
				while (cr->len + *upload_size + 1 > cap)
					cap *= 2;
				char *b = realloc(cr->body, cap);
				if (!b)
					return MHD_NO;
				cr->body = b;
				cr->cap = cap;
			}
			memcpy(cr->body + cr->len, upload, *upload_size);
			cr->len += *upload_size;
			cr->body[cr->len] = 0;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (cr->too_big) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the request body is larger than %zu bytes",
		         h->p.max_body);
		return respond_simple(c, cr, 413, "invalid_request_error",
		                      "request_too_large", msg);
	}
	return route(c, cr, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct llm_http *h = cls;
	struct conn_req *cr = *con_cls;

	(void)c;
	if (!cr)
		return;
	*con_cls = NULL;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && cr->status == 200)
		cr->status = 499;
	llm_serve_job_free(cr->j);          /* cancels what still runs */
	if (cr->have_req)
		llm_serve_req_free(&cr->r);
	llm_serve_count_http(h->s, cr->status ? cr->status : 499, cr->busy);
	free(cr->body);
	free(cr->sbuf);
	free(cr);
	pthread_mutex_lock(&h->mu);
	h->inflight--;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* ---------------------------------------------------------------- daemon */

int llm_http_start(struct llm_http **out, struct llm_serve *s,
                   const struct llm_http_params *p)
{
	struct llm_http *h;
	struct addrinfo hints = { 0 }, *ai = NULL;
	char port[16];
	int rc;

	*out = NULL;
	if (!(h = calloc(1, sizeof(*h))))
		return llm_error(LLM_ENOMEM, "http: out of memory");
	h->s = s;
	if (p)
		h->p = *p;
	else
		llm_http_params_default(&h->p);
	if (!h->p.host)
		h->p.host = "127.0.0.1";
	if (!h->p.max_body)
		h->p.max_body = 1 << 20;
	if (h->p.max_conns <= 0)
		h->p.max_conns = 1024;
	if (h->p.retry_after <= 0)
		h->p.retry_after = 1;
	if (h->p.conn_timeout <= 0)
		h->p.conn_timeout = 60;
	h->host = strdup(h->p.host);
	h->p.host = h->host;
	if (h->p.api_key && *h->p.api_key)
		h->api_key = strdup(h->p.api_key);
	h->p.api_key = h->api_key;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", h->p.port);
	if ((rc = getaddrinfo(h->p.host, port, &hints, &ai)) || !ai) {
		rc = llm_error(LLM_EINVAL, "http: cannot resolve '%s': %s", h->p.host,
		               gai_strerror(rc));
		goto fail;
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
	                 MHD_USE_POLL | MHD_USE_ITC;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->d = MHD_start_daemon(flags, (uint16_t)h->p.port, NULL, NULL, on_request, h,
	                        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	                        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
	                        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->p.max_conns,
	                        MHD_OPTION_CONNECTION_TIMEOUT,
	                        (unsigned)(h->p.conn_timeout + 0.5),
	                        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 << 10),
	                        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
	                        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
	                        MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!h->d) {
		rc = llm_error(LLM_EIO, "http: cannot listen on %s port %d (in use, or "
		               "not an address of this machine)", h->p.host, h->p.port);
		goto fail;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d,
	                                                     MHD_DAEMON_INFO_BIND_PORT);
	h->port = di ? di->port : h->p.port;
	*out = h;
	return 0;
fail:
	llm_http_free(h);
	return rc;
}

int llm_http_port(const struct llm_http *h)
{
	return h->port;
}

void llm_http_drain(struct llm_http *h, double timeout)
{
	if (!h || !h->d)
		return;
	pthread_mutex_lock(&h->mu);
	h->draining = true;
	pthread_mutex_unlock(&h->mu);
	MHD_socket fd = MHD_quiesce_daemon(h->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	double end = llm_time_now() + timeout;
	pthread_mutex_lock(&h->mu);
	for (int phase = 0; phase < 2 && h->inflight > 0; phase++) {
		while (h->inflight > 0) {
			double left = end - llm_time_now();
			if (left <= 0)
				break;
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			double t = ts.tv_sec + ts.tv_nsec * 1e-9 + (left < 0.2 ? left : 0.2);
			ts.tv_sec = (time_t)t;
			ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
			pthread_cond_timedwait(&h->cv, &h->mu, &ts);
		}
		/* out of time: cancel what runs, give the handlers a moment */
		h->cancel_all = true;
		end = llm_time_now() + 2;
	}
	pthread_mutex_unlock(&h->mu);
}

void llm_http_free(struct llm_http *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->draining = true;
	h->cancel_all = true;
	pthread_mutex_unlock(&h->mu);
	if (h->d)
		MHD_stop_daemon(h->d);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h->api_key);
	free(h->host);
	free(h);
}
