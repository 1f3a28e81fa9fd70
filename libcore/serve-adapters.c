/*
 * serve-adapters.c - the multi-LoRA parts of the serving front
 * (serve-adapters.h): a request's "model" naming an adapter, the adapter
 * management API, adapters in /v1/models and /metrics.
 */
#include "config.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/adapters.h"
#include "llmkit/error.h"
#include "llmkit/sched.h"
#include "llmkit/serve.h"
#include "serve-adapters.h"

int llm_serve_adapter_of(struct llm_engine *eng, const char *model_name,
                         const char *model, int *out, struct llm_serve_err *e)
{
	struct llm_adapters *ac = llm_engine_adapters(eng);
	*out = -1;
	if (!strcmp(model, model_name) || !strcmp(model, "base"))
		return 0;
	if (!ac) {
		llm_serve_err_set(e, LLM_ENOTFOUND, 404, "invalid_request_error", "model",
		                  "The model '%.200s' does not exist (this server serves "
		                  "'%.200s')", model, model_name);
		e->code = "model_not_found";
		return LLM_ENOTFOUND;
	}
	int id = llm_adapters_find(ac, model);
	if (id == LLM_EINVAL)
		return llm_serve_err_set(e, id, 400, "invalid_request_error", "model",
		                         "%s", llm_errmsg());
	if (id < 0) {
		llm_serve_err_set(e, id, 404, "invalid_request_error", "model",
		                  "The model '%.200s' does not exist: no such adapter "
		                  "(this server serves '%.200s' and its adapters, see "
		                  "/v1/adapters)", model, model_name);
		e->code = "model_not_found";
		return id;
	}
	*out = id;
	return 0;
}

void llm_serve_adapters_models(struct llm_engine *eng, const char *model_name,
                               long long created, json_t *data)
{
	struct llm_adapters *ac = llm_engine_adapters(eng);
	struct llm_adapter_info *v;
	int n;
	if (!ac || llm_adapters_list(ac, &v, &n))
		return;
	for (int i = 0; i < n; i++) {
		json_t *m = json_object();
		json_object_set_new(m, "id", json_string(v[i].name));
		json_object_set_new(m, "object", json_string("model"));
		json_object_set_new(m, "created", json_integer(created));
		json_object_set_new(m, "owned_by", json_string("llmkit"));
		json_object_set_new(m, "root", json_string(v[i].name));
		json_object_set_new(m, "parent", json_string(model_name));
		json_array_append_new(data, m);
	}
	free(v);
}

char *llm_serve_model_one(struct llm_serve *s, const char *name)
{
	char *all = llm_serve_models_json(s), *one = NULL;
	json_t *o = all ? json_loads(all, 0, NULL) : NULL;
	json_t *data = o ? json_object_get(o, "data") : NULL;
	size_t i;
	json_t *m;
	free(all);
	json_array_foreach(data, i, m) {
		json_t *id = json_object_get(m, "id");
		if (json_is_string(id) && !strcmp(json_string_value(id), name)) {
			one = json_dumps(m, JSON_COMPACT);
			break;
		}
	}
	json_decref(o);
	return one;
}

static void escape_label(FILE *f, const char *s)
{
	/* names are [A-Za-z0-9_.-]: nothing to escape, but stay safe */
	for (; *s; s++)
		if (*s != '"' && *s != '\\' && *s != '\n')
			fputc(*s, f);
}

void llm_serve_adapters_metrics(struct llm_engine *eng, FILE *f)
{
	struct llm_adapters *ac = llm_engine_adapters(eng);
	struct llm_adapters_stats st;
	struct llm_adapter_info *v;
	int n;
	if (!ac)
		return;
	llm_adapters_stats(ac, &st);
	fprintf(f, "# HELP llmkit_adapters_registered Adapters in the adapters "
	        "directory.\n# TYPE llmkit_adapters_registered gauge\n"
	        "llmkit_adapters_registered %d\n", st.registered);
	fprintf(f, "# HELP llmkit_adapters_resident Adapters in memory.\n"
	        "# TYPE llmkit_adapters_resident gauge\nllmkit_adapters_resident %d\n",
	        st.resident);
	fprintf(f, "# HELP llmkit_adapters_memory_bytes Bytes of resident adapter "
	        "matrices.\n# TYPE llmkit_adapters_memory_bytes gauge\n"
	        "llmkit_adapters_memory_bytes %" PRIu64 "\n", st.mem_bytes);
	if (st.device)
		fprintf(f, "# HELP llmkit_adapters_device_memory_bytes Bytes of resident "
		        "adapter matrices on the device.\n# TYPE "
		        "llmkit_adapters_device_memory_bytes gauge\n"
		        "llmkit_adapters_device_memory_bytes %" PRIu64 "\n", st.device_bytes);
	fprintf(f, "# HELP llmkit_adapter_loads_total Adapter loads, all adapters.\n"
	        "# TYPE llmkit_adapter_loads_total counter\n"
	        "llmkit_adapter_loads_total %" PRIu64 "\n", st.loads);
	fprintf(f, "# HELP llmkit_adapter_load_failures_total Adapter loads that "
	        "failed.\n# TYPE llmkit_adapter_load_failures_total counter\n"
	        "llmkit_adapter_load_failures_total %" PRIu64 "\n", st.load_failures);
	if (llm_adapters_list(ac, &v, &n))
		return;
	static const struct {
		const char *name, *type, *help;
	} series[] = {
		{ "llmkit_adapter_requests_total", "counter", "Requests per adapter." },
		{ "llmkit_adapter_prompt_tokens_total", "counter", "Prompt tokens per "
		  "adapter." },
		{ "llmkit_adapter_generation_tokens_total", "counter", "Generated tokens "
		  "per adapter." },
		{ "llmkit_adapter_load_seconds_total", "counter", "Seconds loading the "
		  "adapter." },
		{ "llmkit_adapter_evictions_total", "counter", "Times the adapter was "
		  "evicted from memory." },
		{ "llmkit_adapter_hits_total", "counter", "Admissions that found the "
		  "adapter resident." },
		{ "llmkit_adapter_resident", "gauge", "1 when the adapter is in "
		  "memory." },
	};
	for (size_t k = 0; k < sizeof(series) / sizeof(series[0]); k++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", series[k].name, series[k].help,
		        series[k].name, series[k].type);
		for (int i = 0; i < n; i++) {
			const struct llm_adapter_info *a = &v[i];
			if (!a->requests && !a->loads && a->state != LLM_ADAPTER_RESIDENT)
				continue;   /* a thousand idle adapters say nothing */
			double x = 0;
			switch (k) {
			case 0: x = (double)a->requests; break;
			case 1: x = (double)a->prompt_tokens; break;
			case 2: x = (double)a->gen_tokens; break;
			case 3: x = a->load_seconds; break;
			case 4: x = (double)a->evictions; break;
			case 5: x = (double)a->hits; break;
			default: x = a->state == LLM_ADAPTER_RESIDENT; break;
			}
			fprintf(f, "%s{adapter=\"", series[k].name);
			escape_label(f, a->name);
			fprintf(f, "\"} %.17g\n", x);
		}
	}
	free(v);
}

/* ---------------------------------------------------------------- the API */

static json_t *info_json(const struct llm_adapter_info *a)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(a->name));
	json_object_set_new(o, "object", json_string("adapter"));
	json_object_set_new(o, "format", json_string(a->format));
	json_object_set_new(o, "state", json_string(llm_adapter_state_name(a->state)));
	json_object_set_new(o, "resident", json_boolean(a->state == LLM_ADAPTER_RESIDENT));
	json_object_set_new(o, "unloading", json_boolean(a->unloading));
	json_object_set_new(o, "disk_bytes", json_integer((json_int_t)a->disk_bytes));
	json_object_set_new(o, "memory_bytes", json_integer((json_int_t)a->mem_bytes));
	json_object_set_new(o, "device_memory_bytes",
	                    json_integer((json_int_t)a->device_bytes));
	if (a->rank)
		json_object_set_new(o, "rank", json_integer(a->rank));
	json_object_set_new(o, "requests_in_flight", json_integer(a->users));
	json_object_set_new(o, "requests_running", json_integer(a->pins));
	json_object_set_new(o, "requests", json_integer((json_int_t)a->requests));
	json_object_set_new(o, "requests_failed", json_integer((json_int_t)a->failed));
	json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)a->prompt_tokens));
	json_object_set_new(o, "completion_tokens", json_integer((json_int_t)a->gen_tokens));
	json_object_set_new(o, "hits", json_integer((json_int_t)a->hits));
	json_object_set_new(o, "misses", json_integer((json_int_t)a->misses));
	json_object_set_new(o, "loads", json_integer((json_int_t)a->loads));
	json_object_set_new(o, "evictions", json_integer((json_int_t)a->evictions));
	json_object_set_new(o, "load_seconds", json_real(a->load_seconds));
	json_object_set_new(o, "last_load_seconds", json_real(a->last_load_seconds));
	if (a->error[0])
		json_object_set_new(o, "error", json_string(a->error));
	return o;
}

static int err_reply(int status, const char *type, const char *code, char **json,
                     const char *fmt, const char *arg)
	__attribute__((format(printf, 5, 0)));

static int err_reply(int status, const char *type, const char *code, char **json,
                     const char *fmt, const char *arg)
{
	struct llm_serve_err e;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	llm_serve_err_set(&e, 0, status, type, NULL, fmt, arg);
#pragma GCC diagnostic pop
	e.code = code;
	*json = llm_serve_err_json(&e);
	return status;
}

static int ok_reply(json_t *o, char **json)
{
	*json = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return 200;
}

/* A status for an adapters.h failure. */
static int status_of(int rc)
{
	switch (rc) {
	case LLM_EINVAL: return 400;
	case LLM_ENOTFOUND: return 404;
	case LLM_ERANGE: return 408;
	case LLM_ECANCELED: return 409;
	case LLM_ENOMEM: return 503;
	case LLM_EFORMAT: return 422;
	default: return 500;
	}
}

static int list_reply(struct llm_adapters *ac, const char *one, char **json)
{
	struct llm_adapter_info *v;
	struct llm_adapters_stats st;
	int n;
	if (llm_adapters_list(ac, &v, &n))
		return err_reply(500, "server_error", NULL, json, "%s", llm_errmsg());
	json_t *data = json_array();
	json_t *found = NULL;
	for (int i = 0; i < n; i++) {
		if (one && strcmp(one, v[i].name))
			continue;
		json_t *o = info_json(&v[i]);
		if (one)
			found = o;
		else
			json_array_append_new(data, o);
	}
	free(v);
	if (one) {
		json_decref(data);
		if (!found)
			return err_reply(404, "invalid_request_error", "adapter_not_found",
			                 json, "no adapter '%.200s'", one);
		return ok_reply(found, json);
	}
	llm_adapters_stats(ac, &st);
	json_t *o = json_object();
	json_object_set_new(o, "object", json_string("list"));
	json_object_set_new(o, "registered", json_integer(st.registered));
	json_object_set_new(o, "resident", json_integer(st.resident));
	json_object_set_new(o, "loading", json_integer(st.loading));
	json_object_set_new(o, "max_active", json_integer(st.max_active));
	json_object_set_new(o, "memory_bytes", json_integer((json_int_t)st.mem_bytes));
	json_object_set_new(o, "device_memory_bytes",
	                    json_integer((json_int_t)st.device_bytes));
	json_object_set_new(o, "max_memory_bytes", json_integer((json_int_t)st.max_mem));
	/* what max_memory_bytes counts: the device copies with a device tier */
	json_object_set_new(o, "memory_tier", json_string(st.device ? "device" : "host"));
	json_object_set_new(o, "loads", json_integer((json_int_t)st.loads));
	json_object_set_new(o, "evictions", json_integer((json_int_t)st.evictions));
	json_object_set_new(o, "hits", json_integer((json_int_t)st.hits));
	json_object_set_new(o, "misses", json_integer((json_int_t)st.misses));
	json_object_set_new(o, "data", data);
	return ok_reply(o, json);
}

int llm_serve_adapters_api(struct llm_serve *s, const char *method,
                           const char *url, const char *body, size_t len,
                           char **json)
{
	struct llm_adapters *ac = llm_engine_adapters(llm_serve_engine(s));
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	bool post = !strcmp(method, "POST");
	const char *sub = url + strlen("/v1/adapters");

	*json = NULL;
	if (!ac)
		return err_reply(404, "invalid_request_error", "not_found", json, "%s",
		                 "this server serves no adapters (start it with "
		                 "--adapters DIR)");
	if (!*sub || !strcmp(sub, "/")) {
		if (!get)
			return err_reply(405, "invalid_request_error", NULL, json, "%s",
			                 "use GET");
		return list_reply(ac, NULL, json);
	}
	sub++;
	bool load = !strcmp(sub, "load"), unload = !strcmp(sub, "unload");
	if (!strcmp(sub, "rescan")) {
		if (!post)
			return err_reply(405, "invalid_request_error", NULL, json, "%s",
			                 "use POST");
		int added = 0, removed = 0;
		if (llm_adapters_rescan(ac, &added, &removed))
			return err_reply(500, "server_error", NULL, json, "%s", llm_errmsg());
		struct llm_adapters_stats st;
		llm_adapters_stats(ac, &st);
		json_t *o = json_object();
		json_object_set_new(o, "added", json_integer(added));
		json_object_set_new(o, "removed", json_integer(removed));
		json_object_set_new(o, "registered", json_integer(st.registered));
		return ok_reply(o, json);
	}
	if (!load && !unload) {
		if (!get)
			return err_reply(405, "invalid_request_error", NULL, json, "%s",
			                 "use GET");
		return list_reply(ac, sub, json);
	}
	if (!post)
		return err_reply(405, "invalid_request_error", NULL, json, "%s",
		                 "use POST");
	json_error_t jerr;
	json_t *o = json_loadb(body ? body : "", len, 0, &jerr);
	json_t *v = o ? json_object_get(o, "name") : NULL;
	if (!v && o)
		v = json_object_get(o, "adapter");
	if (!json_is_string(v)) {
		json_decref(o);
		return err_reply(400, "invalid_request_error", NULL, json, "%s",
		                 "the body must be {\"name\": \"ADAPTER\"}");
	}
	double timeout = 600;
	json_t *t = json_object_get(o, "timeout");
	if (json_is_number(t))
		timeout = json_number_value(t);
	char name[160];
	snprintf(name, sizeof(name), "%s", json_string_value(v));
	json_decref(o);
	int rc = load ? llm_adapters_load(ac, name, timeout)
	              : llm_adapters_unload(ac, name, timeout);
	if (rc)
		return err_reply(status_of(rc), rc == LLM_ENOMEM ? "server_overloaded"
		                 : rc == LLM_EFORMAT ? "adapter_error"
		                 : "invalid_request_error", NULL, json, "%s", llm_errmsg());
	return list_reply(ac, name, json);
}
