/*
 * serve-adapters.h - (internal) the multi-LoRA parts of the serving front:
 * adapter names in requests, /v1/adapters, adapters in /v1/models and
 * /metrics.  All of them do nothing (or answer 404) when the engine serves
 * no adapters.
 */
#ifndef LLMKIT_SERVE_ADAPTERS_H
#define LLMKIT_SERVE_ADAPTERS_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "llmkit/serve.h"

struct llm_engine;

/* The adapter id a request's "model" names into *id: -1 for the served
 * model or "base", else an adapter's id.  0, or a negative LLM_E* with e
 * filled (404 naming an unknown adapter, 400 for a name not allowed). */
int llm_serve_adapter_of(struct llm_engine *eng, const char *model_name,
                         const char *model, int *id, struct llm_serve_err *e);
/* Append the adapters to /v1/models' data array. */
void llm_serve_adapters_models(struct llm_engine *eng, const char *model_name,
                               long long created, json_t *data);
/* GET /v1/models/NAME: the entry of /v1/models' list named NAME (malloc'd
 * JSON), NULL when there is none. */
char *llm_serve_model_one(struct llm_serve *s, const char *name);
/* Per-adapter series for /metrics. */
void llm_serve_adapters_metrics(struct llm_engine *eng, FILE *f);
/*
 * /v1/adapters[/NAME], /v1/adapters/load, /unload, /rescan: the HTTP
 * status, and the JSON body (malloc'd) in *json.
 */
int llm_serve_adapters_api(struct llm_serve *s, const char *method,
                           const char *url, const char *body, size_t len,
                           char **json);

#endif
