/*
 * bench.c - memory bandwidth, measuring in a child process, statistics
 * (bench.h).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmkit/bench.h"
#include "llmkit/error.h"
#include "llmkit/util.h"

void llm_stats_mean_sd(const double *v, int n, double *mean, double *sd)
{
	double s = 0, ss = 0;
	*mean = *sd = 0;
	if (n < 1)
		return;
	for (int i = 0; i < n; i++)
		s += v[i];
	*mean = s / n;
	if (n < 2)
		return;
	for (int i = 0; i < n; i++)
		ss += (v[i] - *mean) * (v[i] - *mean);
	*sd = sqrt(ss / (n - 1));
}

/* ---------------------------------------------------------------- bandwidth */

struct membw_job {
	const uint64_t *buf;
	size_t n_words;
	int nth, reps;
	pthread_barrier_t bar;
	pthread_mutex_t mu;     /* the gate: workers wait until all exist */
	pthread_cond_t cv;
	int gate;               /* 0 wait, 1 go, -1 give up */
	double *t_start;        /* (reps * nth) */
	double *t_end;          /* (reps * nth) */
	uint64_t *sink;         /* (nth) keeps the sums alive */
};

struct membw_thread {
	struct membw_job *job;
	int ith;
};

/* Four independent accumulators: the adds vectorise and overlap, so the
 * loop runs at the speed memory delivers. */
static uint64_t sum_words(const uint64_t *p, size_t n)
{
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		s0 += p[i];
		s1 += p[i + 1];
		s2 += p[i + 2];
		s3 += p[i + 3];
	}
	for (; i < n; i++)
		s0 += p[i];
	return s0 + s1 + s2 + s3;
}

static void *membw_worker(void *arg)
{
	struct membw_thread *t = arg;
	struct membw_job *j = t->job;
	/* slices on 4 KiB boundaries */
	size_t per_page = 4096 / sizeof(uint64_t);
	size_t pages = (j->n_words + per_page - 1) / per_page;
	size_t w0 = pages * t->ith / j->nth * per_page;
	size_t w1 = pages * (t->ith + 1) / j->nth * per_page;
	if (w1 > j->n_words)
		w1 = j->n_words;
	if (w0 > w1)
		w0 = w1;

	pthread_mutex_lock(&j->mu);
	while (!j->gate)
		pthread_cond_wait(&j->cv, &j->mu);
	int go = j->gate > 0;
	pthread_mutex_unlock(&j->mu);
	if (!go)
		return NULL;
	for (int r = 0; r < j->reps; r++) {
		pthread_barrier_wait(&j->bar);
		/* every thread its own start: one descheduled after the barrier
		 * must not shorten the pass */
		j->t_start[(size_t)r * j->nth + t->ith] = llm_time_now();
		j->sink[t->ith] += sum_words(j->buf + w0, w1 - w0);
		j->t_end[(size_t)r * j->nth + t->ith] = llm_time_now();
	}
	return NULL;
}

int llm_bench_read_bw(int n_threads, const void *buf, uint64_t bytes, int reps,
                      struct llm_membw *out)
{
	struct membw_job j = { 0 };
	struct membw_thread *th = NULL;
	pthread_t *tid = NULL;
	double *bw = NULL;
	int started = 0, rc = 0, passes;

	memset(out, 0, sizeof(*out));
	if (n_threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		n_threads = n > 0 ? (int)n : 1;
	}
	if (reps < 1)
		reps = 1;
	if (!buf || (uintptr_t)buf % sizeof(uint64_t) ||
	    bytes < 4096 * (uint64_t)n_threads || bytes > (1ull << 40))
		return llm_error(LLM_EINVAL, "membw: buffer of %llu bytes for %d threads",
		                 (unsigned long long)bytes, n_threads);
	passes = reps + 1;      /* the first one warms TLBs and mappings, untimed */
	j.t_start = calloc((size_t)passes * n_threads, sizeof(double));
	j.t_end = calloc((size_t)passes * n_threads, sizeof(double));
	j.sink = calloc(n_threads, sizeof(uint64_t));
	th = calloc(n_threads, sizeof(*th));
	tid = calloc(n_threads, sizeof(*tid));
	bw = calloc(reps, sizeof(double));
	if (!j.t_start || !j.t_end || !j.sink || !th || !tid || !bw) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto out;
	}
	j.buf = buf;
	j.n_words = bytes / sizeof(uint64_t);
	j.nth = n_threads;
	j.reps = passes;
	if (pthread_barrier_init(&j.bar, NULL, n_threads)) {
		rc = llm_error(LLM_ENOMEM, "membw: cannot create a barrier");
		goto out;
	}
	pthread_mutex_init(&j.mu, NULL);
	pthread_cond_init(&j.cv, NULL);
	for (int i = 0; i < n_threads; i++)
		th[i] = (struct membw_thread){ &j, i };
	for (started = 1; started < n_threads; started++) {
		int e = pthread_create(&tid[started], NULL, membw_worker, &th[started]);
		if (e) {
			rc = llm_error(LLM_ENOMEM, "membw: cannot start thread %d: %s",
			               started, strerror(e));
			break;
		}
	}
	/* open the gate, or send the started threads home */
	pthread_mutex_lock(&j.mu);
	j.gate = rc ? -1 : 1;
	pthread_cond_broadcast(&j.cv);
	pthread_mutex_unlock(&j.mu);
	if (!rc)
		membw_worker(&th[0]);
	for (int i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
	pthread_barrier_destroy(&j.bar);
	pthread_mutex_destroy(&j.mu);
	pthread_cond_destroy(&j.cv);
	if (rc)
		goto out;

	out->best = 0;
	for (int r = 0; r < reps; r++) {
		size_t k0 = (size_t)(r + 1) * n_threads;
		double start = j.t_start[k0], end = 0;
		for (int i = 0; i < n_threads; i++) {
			start = j.t_start[k0 + i] < start ? j.t_start[k0 + i] : start;
			end = j.t_end[k0 + i] > end ? j.t_end[k0 + i] : end;
		}
		double dt = end - start;
		bw[r] = dt > 0 ? (double)j.n_words * sizeof(uint64_t) / dt : 0;
		if (bw[r] > out->best)
			out->best = bw[r];
	}
	llm_stats_mean_sd(bw, reps, &out->mean, &out->stddev);
	out->bytes = j.n_words * sizeof(uint64_t);
	out->n_threads = n_threads;
	out->reps = reps;
out:
	free(j.t_start);
	free(j.t_end);
	free(j.sink);
	free(th);
	free(tid);
	free(bw);
	return rc;
}

int llm_bench_membw(int n_threads, uint64_t bytes, int reps, struct llm_membw *out)
{
	uint64_t *buf;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!bytes)
		bytes = 512ull << 20;
	if (bytes < 4096 || bytes > (1ull << 40))
		return llm_error(LLM_EINVAL, "membw: buffer of %llu bytes",
		                 (unsigned long long)bytes);
	bytes &= ~(uint64_t)4095;
	buf = aligned_alloc(4096, bytes);
	if (!buf)
		return llm_error(LLM_ENOMEM, "membw: out of memory for %llu MiB",
		                 (unsigned long long)(bytes >> 20));
	/* resident, and not the zero page */
	for (uint64_t i = 0; i < bytes / sizeof(uint64_t); i++)
		buf[i] = i;
	rc = llm_bench_read_bw(n_threads, buf, bytes, reps, out);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- child */

struct child_head {
	int rc;
	char msg[1024];
};

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Bytes read (short only at end of file), or -1. */
static ssize_t read_all(int fd, void *p, size_t n)
{
	char *c = p;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, c + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int llm_bench_in_child(llm_child_fn fn, void *arg, void *result,
                       size_t result_size, struct llm_child_usage *usage)
{
	struct child_head h;
	struct rusage ru;
	int fds[2], status;
	pid_t pid;
	double t0 = llm_time_now();

	if (usage)
		memset(usage, 0, sizeof(*usage));
	if (pipe(fds))
		return llm_error(LLM_EIO, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(fds[0]);
		close(fds[1]);
		return llm_error(LLM_ENOMEM, "fork: %s", strerror(e));
	}
	if (pid == 0) {
		close(fds[0]);
		memset(&h, 0, sizeof(h));
		h.rc = fn(arg, result, result_size);
		if (h.rc)
			snprintf(h.msg, sizeof(h.msg), "%s", llm_errmsg());
		if (write_all(fds[1], &h, sizeof(h)) ||
		    (result_size && write_all(fds[1], result, result_size)))
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	ssize_t got = read_all(fds[0], &h, sizeof(h));
	ssize_t got_res = 0;
	if (got == (ssize_t)sizeof(h) && result_size)
		got_res = read_all(fds[0], result, result_size);
	close(fds[0]);
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR)
			return llm_error(LLM_EIO, "wait4: %s", strerror(errno));
	}
	if (usage) {
		usage->max_rss = (uint64_t)ru.ru_maxrss * 1024;  /* Linux: KiB */
		usage->utime = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
		usage->stime = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
		usage->wall = llm_time_now() - t0;
	}
	if (WIFSIGNALED(status))
		return llm_error(LLM_EIO, "measuring child killed by signal %d (%s)",
		                 WTERMSIG(status), strsignal(WTERMSIG(status)));
	if (got != (ssize_t)sizeof(h) ||
	    (result_size && got_res != (ssize_t)result_size) ||
	    !WIFEXITED(status) || WEXITSTATUS(status))
		return llm_error(LLM_EIO, "measuring child failed to report (exit "
		                 "status %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	if (h.rc) {
		h.msg[sizeof(h.msg) - 1] = 0;
		return llm_error(h.rc, "%s", h.msg);
	}
	return 0;
}
