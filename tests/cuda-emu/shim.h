/* shim.h - just enough of CUDA's device dialect for lora-emu.cpp to
 * compile the kernels' source as C++ (see there). */
#pragma once
#include <cstdint>
#include <pthread.h>
struct edim3 { unsigned x, y, z; };
extern thread_local edim3 threadIdx, blockIdx;
extern edim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
void emu_syncthreads();
float emu_shfl_xor(unsigned mask, float v, int o);
#define __syncthreads() emu_syncthreads()
#define __shfl_xor_sync(m, v, o) emu_shfl_xor((m), (v), (o))
