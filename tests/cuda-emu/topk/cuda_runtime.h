/*
 * A stand-in for cuda_runtime.h that runs kernels-sample.cu on the host
 * (tests/cuda-topk-emu.sh): a thread per CUDA thread, a barrier per
 * __syncthreads, and warp shuffles through a per-warp exchange with a
 * barrier of its 32 lanes, so the kernel's index math, shared memory,
 * barriers and shuffles behave as on a GPU (a lane missing a shuffle or a
 * thread missing a barrier hangs the run instead of racing).
 */
#ifndef TOPK_EMU_RUNTIME_H
#define TOPK_EMU_RUNTIME_H

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef void *cudaStream_t;
struct dim3 { unsigned x, y, z; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

extern dim3 blockIdx, blockDim;
extern thread_local dim3 threadIdx;
extern pthread_barrier_t emu_block_bar, emu_warp_bar[32];
extern uint64_t emu_warp_slot[32][32];

inline void __syncthreads(void) { pthread_barrier_wait(&emu_block_bar); }
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }

/* rounded products and differences: plain float arithmetic on x86-64
 * (SSE, no excess precision; volatile keeps them from being fused) */
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, sizeof(f)); return f; }

template <class T> T __shfl_xor_sync(unsigned mask, T v, int o)
{
	(void)mask;
	unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
	uint64_t b = 0;
	memcpy(&b, &v, sizeof(T));
	emu_warp_slot[w][l] = b;
	pthread_barrier_wait(&emu_warp_bar[w]);
	uint64_t r = emu_warp_slot[w][l ^ (unsigned)o];
	pthread_barrier_wait(&emu_warp_bar[w]);
	T out;
	memcpy(&out, &r, sizeof(T));
	return out;
}

#endif
