/*
 * device.c - "cuda[:N]" device names, and what a build without CUDA says
 * when asked for it (compiled in every build; the backend itself is
 * backend-cuda.cu).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"

int llm_backend_cuda_open(struct llm_backend **out, const char *device,
                          int n_threads)
{
	long n = 0;

	*out = NULL;
	if (strncmp(device, "cuda", 4) || (device[4] && device[4] != ':'))
		return llm_error(LLM_EINVAL, "unknown device '%s' (cpu or cuda)", device);
	if (device[4] == ':') {
		char *end;
		errno = 0;
		n = strtol(device + 5, &end, 10);
		if (!device[5] || *end || errno || n < 0 || n > 1023)
			return llm_error(LLM_EINVAL, "device '%s': expected cuda:N with N a "
			                 "GPU number", device);
	}
#ifdef HAVE_CUDA
	return llm_backend_cuda_init(out, (int)n, n_threads);
#else
	(void)n_threads;
	return llm_error(LLM_EUNSUPPORTED, "device %s: this build has no CUDA backend "
	                 "(configure --with-cuda)", device);
#endif
}

#ifndef HAVE_CUDA
int llm_backend_cuda_init(struct llm_backend **out, int device, int n_threads)
{
	(void)n_threads;
	*out = NULL;
	return llm_error(LLM_EUNSUPPORTED, "device cuda:%d: this build has no CUDA "
	                 "backend (configure --with-cuda)", device);
}

int llm_cuda_device_count(void)
{
	return 0;
}

int llm_cuda_blas_open(void)
{
	return llm_error(LLM_EUNSUPPORTED, "device cuda: this build has no CUDA "
	                 "backend (configure --with-cuda)");
}

int llm_cuda_membw(uint64_t bytes, int reps, double *best)
{
	(void)bytes;
	(void)reps;
	*best = 0;
	return llm_error(LLM_EUNSUPPORTED, "device cuda: this build has no CUDA "
	                 "backend (configure --with-cuda)");
}

int llm_cuda_gemm_peak(int dim, int reps, double *best)
{
	(void)dim;
	(void)reps;
	*best = 0;
	return llm_error(LLM_EUNSUPPORTED, "device cuda: this build has no CUDA "
	                 "backend (configure --with-cuda)");
}
#endif
