/*
 * A stand-in for cuda_runtime.h that runs the training kernels on the host
 * (scripts/cuda-emu/run.sh): a kernel launch runs its blocks one after the
 * other, each with blockDim.x POSIX threads and a barrier for
 * __syncthreads, so shared memory, barriers and index math behave as on
 * a GPU (a thread missing a barrier hangs the run instead of racing).
 */
#ifndef CUDA_EMU_RUNTIME_H
#define CUDA_EMU_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <functional>

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef void *cudaStream_t;
struct dim3 { unsigned x, y, z; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

extern dim3 blockIdx, blockDim, gridDim;
extern thread_local dim3 threadIdx;
extern float *emu_smem;
void __syncthreads(void);

inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <class T>
cudaError_t cudaFuncSetAttribute(T, cudaFuncAttribute, int) { return cudaSuccess; }

struct emu_cfg {
	unsigned grid, block;
	size_t shm;
	emu_cfg(long long g, long long b, size_t sh = 0, cudaStream_t = 0)
		: grid((unsigned)g), block((unsigned)b), shm(sh) {}
};
void emu_launch(emu_cfg c, std::function<void()> f);

#endif
