/* The launch and barrier of shim/cuda_runtime.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cuda_runtime.h"

dim3 blockIdx, blockDim, gridDim;
thread_local dim3 threadIdx;
float *emu_smem;
static pthread_barrier_t bar;

void __syncthreads(void)
{
	pthread_barrier_wait(&bar);
}

struct arg {
	unsigned t;
	std::function<void()> *f;
};

static void *run(void *p)
{
	struct arg *a = (struct arg *)p;
	threadIdx = dim3{ a->t, 0, 0 };
	(*a->f)();
	return NULL;
}

void emu_launch(emu_cfg c, std::function<void()> f)
{
	static std::vector<float> smem;
	if (c.shm > 227 * 1024) {
		fprintf(stderr, "emu: %zu bytes of shared memory\n", c.shm);
		exit(1);
	}
	smem.assign(c.shm / sizeof(float) + 1, NAN);   /* garbage: NaN */
	emu_smem = smem.data();
	gridDim = dim3{ c.grid, 1, 1 };
	blockDim = dim3{ c.block, 1, 1 };
	std::vector<pthread_t> th(c.block);
	std::vector<arg> args(c.block);
	for (unsigned b = 0; b < c.grid; b++) {
		blockIdx = dim3{ b, 0, 0 };
		pthread_barrier_init(&bar, NULL, c.block);
		for (unsigned t = 0; t < c.block; t++) {
			args[t] = arg{ t, &f };
			if (pthread_create(&th[t], NULL, run, &args[t])) {
				fprintf(stderr, "emu: pthread_create failed\n");
				exit(1);
			}
		}
		for (unsigned t = 0; t < c.block; t++)
			pthread_join(th[t], NULL);
		pthread_barrier_destroy(&bar);
	}
}
