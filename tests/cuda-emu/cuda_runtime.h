/* cuda_runtime.h - a stand-in for lora-emu.cpp (no CUDA needed). */
#pragma once
typedef void *cudaStream_t;
typedef int cudaError_t;
#define cudaSuccess 0
