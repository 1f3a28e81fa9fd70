/*
 * pool.h - a work-sharing thread pool for the CPU backend (internal).
 *
 * llm_pool_for(pool, n, chunk, fn, arg) runs fn over [0, n) in pieces of
 * chunk items: the caller and every worker that is awake claim pieces from a
 * shared counter until none are left.  The call returns when all pieces are
 * done.  A worker that has not started by the time the caller runs out of
 * pieces does not join that job at all, so a thread that has lost its core
 * (another process, an oversubscribed machine) never holds everyone up for
 * more than the piece it is working on.
 *
 * Idle workers spin briefly (an op follows an op within microseconds during
 * a forward pass) and then sleep, so an idle pool costs no CPU.
 */
#ifndef LLMKIT_CPU_POOL_H
#define LLMKIT_CPU_POOL_H

#include <stdint.h>

struct llm_pool;

/* Items [i0, i1) on thread ith (0 = the caller; < llm_pool_size). */
typedef void (*llm_pool_fn)(void *arg, int64_t i0, int64_t i1, int ith);

int llm_pool_new(struct llm_pool **out, int n_threads);
void llm_pool_free(struct llm_pool *p);
int llm_pool_size(const struct llm_pool *p);
void llm_pool_for(struct llm_pool *p, int64_t n, int64_t chunk, llm_pool_fn fn,
                  void *arg);

#endif
