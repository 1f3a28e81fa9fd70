/*
 * bench.h - measuring the machine and the code: memory read bandwidth,
 * running a measurement in a child process (its own peak memory and CPU
 * time), and summary statistics.
 *
 * Used by llm-bench; anything that compares configurations by speed or
 * memory (batching policies, quantization types) can use the same pieces.
 */
#ifndef LLMKIT_BENCH_H
#define LLMKIT_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * STREAM-style read bandwidth: n_threads threads each sum their own slice
 * of a buffer of 'bytes' (64-bit integer adds, which compilers vectorise
 * and which cannot be skipped), all starting together; the time is from
 * the first thread's start to the last one's end.  The buffer is written once
 * before timing so every page is resident.  Choose bytes well above the
 * last-level cache (the default, 0, is 512 MiB).  Best and mean over reps.
 */
struct llm_membw {
	double best;          /* bytes per second, fastest pass */
	double mean;          /* bytes per second, mean over passes */
	double stddev;
	uint64_t bytes;       /* buffer size read per pass */
	int n_threads;
	int reps;
};

int llm_bench_membw(int n_threads, uint64_t bytes, int reps,
                    struct llm_membw *out);

/*
 * The same over memory the caller has (8-byte aligned), e.g. a model's
 * mapped weights: what decoding can read them at.  A first pass, untimed,
 * faults in the pages and warms the TLBs.
 *
 * On a virtual machine the rate depends on where the memory lies (host
 * pages behind guest pages): two buffers of the same size can read at
 * rates far apart, so the buffer that matters is worth measuring.
 */
int llm_bench_read_bw(int n_threads, const void *buf, uint64_t bytes, int reps,
                      struct llm_membw *out);

/*
 * Run fn(arg, result, result_size) in a forked child and wait for it.  The
 * child's return value and up to result_size bytes of result come back
 * through a pipe; if fn fails, its error message comes back too and is
 * recorded as this thread's (llm_errmsg) with fn's code.  Usage is the
 * child's own, from wait4: peak resident set (which counts the pages of a
 * mapped model file it touched), user and system CPU seconds of all its
 * threads.
 *
 * Fork only from a process with no other threads running (a thread pool
 * created before the fork is absent in the child, with whatever locks it
 * held): create contexts in fn, in the child.
 */
struct llm_child_usage {
	uint64_t max_rss;     /* bytes */
	double utime, stime;  /* seconds */
	double wall;          /* seconds from fork to exit */
};

typedef int (*llm_child_fn)(void *arg, void *result, size_t result_size);

int llm_bench_in_child(llm_child_fn fn, void *arg, void *result,
                       size_t result_size, struct llm_child_usage *usage);

/* Mean and sample standard deviation (0 for n < 2) of n values. */
void llm_stats_mean_sd(const double *v, int n, double *mean, double *sd);

#ifdef __cplusplus
}
#endif
#endif
