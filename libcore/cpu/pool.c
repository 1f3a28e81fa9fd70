/* pool.c - fork-join thread pool with spin-then-sleep workers (pool.h). */
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

/* Spin this many rounds before sleeping: ~100 us on current x86. */
#define SPIN_ROUNDS 20000

struct worker {
	struct llm_pool *pool;
	int ith;
	pthread_t th;
};

struct llm_pool {
	int n;
	struct worker *w;
	llm_pool_fn fn;
	void *arg;
	atomic_uint gen;       /* bumped for each job */
	atomic_int pending;    /* workers still running the current job */
	atomic_int sleepers;
	atomic_bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct llm_pool *pool = w->pool;
	unsigned seen = 0;

	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_ROUNDS) {
				cpu_relax();
				continue;
			}
			pthread_mutex_lock(&pool->mu);
			atomic_fetch_add(&pool->sleepers, 1);
			while (atomic_load(&pool->gen) == seen)
				pthread_cond_wait(&pool->cv, &pool->mu);
			atomic_fetch_sub(&pool->sleepers, 1);
			pthread_mutex_unlock(&pool->mu);
			spins = 0;
		}
		seen = g;
		if (atomic_load(&pool->stop))
			return NULL;
		pool->fn(pool->arg, w->ith, pool->n);
		atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
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

static void wake_all(struct llm_pool *p)
{
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
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

void llm_pool_run(struct llm_pool *p, llm_pool_fn fn, void *arg)
{
	if (p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
	/* Sequentially consistent bump, then a look at the sleepers: a worker
	 * going to sleep counts itself before it re-checks gen, so one of the
	 * two sides always sees the other. */
	atomic_fetch_add(&p->gen, 1);
	wake_all(p);
	fn(arg, 0, p->n);
	/* a worker still busy has most likely lost its core: after a short
	 * spin, give ours up rather than burn it */
	for (int spins = 0;
	     atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
		if (spins < 4096)
			cpu_relax();
		else
			sched_yield();
	}
}
