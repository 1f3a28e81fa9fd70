/*
 * pool.h - a fork-join thread pool for the CPU backend (internal).
 *
 * llm_pool_run(pool, fn, arg) calls fn(arg, ith, nth) on every thread of the
 * pool, the caller being thread 0, and returns when all are done.  Workers
 * spin briefly between jobs (an op follows an op within microseconds during
 * a forward pass) and then sleep, so an idle pool costs no CPU.
 */
#ifndef LLMKIT_CPU_POOL_H
#define LLMKIT_CPU_POOL_H

struct llm_pool;

typedef void (*llm_pool_fn)(void *arg, int ith, int nth);

int llm_pool_new(struct llm_pool **out, int n_threads);
void llm_pool_free(struct llm_pool *p);
int llm_pool_size(const struct llm_pool *p);
void llm_pool_run(struct llm_pool *p, llm_pool_fn fn, void *arg);

#endif
