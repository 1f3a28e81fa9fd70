/*
 * A stand-in for cuda_runtime.h that runs CUDA kernels on the host
 * (scripts/cuda-emu/run.sh; emu.cc).  A launch runs its blocks one after
 * the other; the threads of a block are fibers of one host thread, each
 * running until it waits (__syncthreads, a warp shuffle) or ends, so
 * shared memory, barriers, warp shuffles and index math behave as on a
 * GPU, and a thread missing a barrier is reported as a deadlock instead
 * of racing.  Only what libcore/cuda/kernels-*.cu use is here.
 */
#ifndef CUDA_EMU_RUNTIME_H
#define CUDA_EMU_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4,
       cudaErrorInvalidConfiguration = 9 };
typedef void *cudaStream_t;

struct dim3 {
	unsigned x, y, z;
	constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

/* the running thread's coordinates (set by the scheduler at each switch) */
extern dim3 blockIdx, blockDim, gridDim, threadIdx;
/* the launch's dynamic shared memory (transform.py: extern __shared__) */
extern unsigned char *emu_dsmem;
/* a static __shared__ array, poisoned (0xff bytes: NaN) when a block's
 * first thread declares it (transform.py adds the call) */
void emu_shared(void *p, size_t bytes);
void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);

/* Warp shuffles: every lane named by mask must reach the same shuffle;
 * the last to arrive hands each lane its source lane's value. */
enum emu_shfl_kind { EMU_SHFL_IDX, EMU_SHFL_UP, EMU_SHFL_DOWN, EMU_SHFL_XOR };
uint64_t emu_shfl(unsigned mask, uint64_t v, int kind, int arg, int width);
template <class T>
static inline T emu_shfl_t(unsigned mask, T v, int kind, int arg, int width)
{
	static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
	uint64_t u = 0;
	memcpy(&u, &v, sizeof(T));
	u = emu_shfl(mask, u, kind, arg, width);
	memcpy(&v, &u, sizeof(T));
	return v;
}
template <class T>
T __shfl_sync(unsigned m, T v, int src, int w = 32) { return emu_shfl_t(m, v, EMU_SHFL_IDX, src, w); }
template <class T>
T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return emu_shfl_t(m, v, EMU_SHFL_UP, (int)d, w); }
template <class T>
T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return emu_shfl_t(m, v, EMU_SHFL_DOWN, (int)d, w); }
template <class T>
T __shfl_xor_sync(unsigned m, T v, int lm, int w = 32) { return emu_shfl_t(m, v, EMU_SHFL_XOR, lm, w); }

static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
/* rounded to float, never fused into a multiply-add (volatile: whatever
 * -ffp-contract or -march the compiler is given) */
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }

/* Runtime calls the launchers make. */
cudaError_t cudaGetLastError(void);
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
void emu_func_attr(const void *fn, int bytes);
template <class T>
cudaError_t cudaFuncSetAttribute(T fn, cudaFuncAttribute, int v)
{
	emu_func_attr((const void *)fn, v);
	return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
static inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
static inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int)
{
	*v = 2;
	return cudaSuccess;
}

/* A launch k<<<grid, block, shm, stream>>>(args), as transform.py writes
 * it: emu_launch(emu_cfg(grid, block, shm, stream), k, [=] { k(args); }). */
struct emu_cfg {
	dim3 grid, block;
	size_t shm;
	emu_cfg(dim3 g, dim3 b, size_t sh = 0, cudaStream_t = 0) : grid(g), block(b), shm(sh) {}
};
void emu_launch(const emu_cfg &c, const char *name, const void *fn,
                const std::function<void()> &f);
/* Launch errors and deadlocks seen so far (each also said on stderr). */
int emu_errors(void);

#endif
