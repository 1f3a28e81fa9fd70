/*
 * llmkit.h - the whole public API of libllmcore in one include.
 *
 *   #include <llmkit/llmkit.h>      cc prog.c $(pkg-config --cflags --libs libllmcore)
 *
 * A minimal generation loop:
 *
 *   struct llm_model *m;        llm_model_load(&m, "model.gguf");
 *   struct llm_tokenizer *tok;  llm_tokenizer_from_gguf(&tok, m->gguf);
 *   struct llm_ctx_params cp;   llm_ctx_params_default(&cp);
 *   struct llm_ctx *ctx;        llm_ctx_new(&ctx, m, &cp);
 *   struct llm_gen_request r = { .prompt = ids, .n_prompt = n };
 *   llm_gen_params_default(&r.params);
 *   llm_generate(ctx, tok, &r, 1, NULL, NULL, NULL);   -> r.text
 *
 * Every function returning int gives 0 or a negative LLM_E* code with a
 * message in llm_errmsg().
 */
#ifndef LLMKIT_LLMKIT_H
#define LLMKIT_LLMKIT_H

#include "llmkit/error.h"
#include "llmkit/util.h"
#include "llmkit/tensor.h"
#include "llmkit/gguf.h"
#include "llmkit/safetensors.h"
#include "llmkit/model.h"
#include "llmkit/tokenizer.h"
#include "llmkit/chat.h"
#include "llmkit/backend.h"
#include "llmkit/kvcache.h"
#include "llmkit/forward.h"
#include "llmkit/sampler.h"
#include "llmkit/generate.h"
#include "llmkit/sched.h"
#include "llmkit/quant.h"
#include "llmkit/imatrix.h"
#include "llmkit/perplexity.h"
#include "llmkit/lora.h"
#include "llmkit/train.h"
#include "llmkit/convert.h"
#include "llmkit/bench.h"

#endif
