/*
 * pool.c - work-sharing thread pool (pool.h).
 *
 * A job is published by bumping a generation counter.  Workers join it by
 * incrementing `active` - unless the caller has already marked it closed -
 * and then claim pieces from `next`.  The caller claims pieces too; when
 * none are left it closes the job and waits only for the workers that did
 * join.  Joining and closing are one atomic word, so no worker can slip in
 * after the caller has stopped counting.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "llmkit/error.h"
#include "cpu/pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin this many rounds waiting for work before sleeping (~0.1-1 ms). */
#define SPIN_ROUNDS 20000
#define CLOSED (1u << 30)

struct worker {
	struct llm_pool *pool;
	int ith;
	pthread_t th;
};

struct llm_pool {
	int n;
	struct worker *w;
	/* the current job */
	llm_pool_fn fn;
	void *arg;
	int64_t n_items, chunk;
	atomic_llong next;      /* next unclaimed item */
	atomic_uint active;     /* joined threads still working | CLOSED */
	atomic_uint gen;        /* bumped for each job */
	atomic_int sleepers;
	atomic_bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void work(struct llm_pool *p, int ith)
{
	for (;;) {
		int64_t i0 = atomic_fetch_add_explicit(&p->next, p->chunk,
		                                       memory_order_relaxed);
		if (i0 >= p->n_items)
			return;
		int64_t i1 = i0 + p->chunk < p->n_items ? i0 + p->chunk : p->n_items;
		p->fn(p->arg, i0, i1, ith);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct llm_pool *p = w->pool;
	unsigned seen = 0;

	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_ROUNDS) {
				cpu_relax();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while (atomic_load(&p->gen) == seen)
				pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&p->stop))
			return NULL;
		/* join unless the caller already finished without us */
		unsigned a = atomic_load(&p->active);
		while (!(a & CLOSED) &&
		       !atomic_compare_exchange_weak(&p->active, &a, a + 1))
			;
		if (a & CLOSED)
			continue;
		work(p, w->ith);
		atomic_fetch_sub_explicit(&p->active, 1, memory_order_release);
	}
}

int llm_pool_new(struct llm_pool **out, int n_threads)
{
	struct llm_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return llm_error(LLM_ENOMEM, "out of memory");
	if (n_threads < 1)
		n_threads = 1;
	p->n = n_threads;
	atomic_init(&p->active, CLOSED);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->w = calloc(n_threads, sizeof(*p->w));
	if (!p->w) {
		free(p);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	for (int i = 1; i < n_threads; i++) {
		p->w[i].pool = p;
		p->w[i].ith = i;
		if (pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]) != 0) {
			p->n = i;
			llm_pool_free(p);
			return llm_error(LLM_ENOMEM, "cannot start thread %d of %d", i,
			                 n_threads);
		}
	}
	*out = p;
	return 0;
}

void llm_pool_free(struct llm_pool *p)
{
	if (!p)
		return;
	atomic_store(&p->stop, true);
	pthread_mutex_lock(&p->mu);
	atomic_fetch_add(&p->gen, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->w[i].th, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->w);
	free(p);
}

int llm_pool_size(const struct llm_pool *p)
{
	return p->n;
}

void llm_pool_for(struct llm_pool *p, int64_t n, int64_t chunk, llm_pool_fn fn,
                  void *arg)
{
	if (n <= 0)
		return;
	if (chunk < 1)
		chunk = 1;
	if (p->n == 1 || n <= chunk) {
		fn(arg, 0, n, 0);
		return;
	}
	/* The previous job is closed and drained, so no worker reads these
	 * while they change. */
	p->fn = fn;
	p->arg = arg;
	p->n_items = n;
	p->chunk = chunk;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	atomic_store_explicit(&p->active, 1, memory_order_release);   /* the caller */
	/* Sequentially consistent bump, then a look at the sleepers: a worker
	 * going to sleep counts itself before it re-checks gen, so one of the
	 * two sides always sees the other. */
	atomic_fetch_add(&p->gen, 1);
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	work(p, 0);
	/* close: later arrivals skip this job; wait for those that joined */
	atomic_fetch_or(&p->active, CLOSED);
	unsigned a = atomic_fetch_sub(&p->active, 1) - 1;
	for (int spins = 0; (a & ~CLOSED) != 0; spins++) {
		if (spins < 4096)
			cpu_relax();
		else
			sched_yield();
		a = atomic_load_explicit(&p->active, memory_order_acquire);
	}
}
