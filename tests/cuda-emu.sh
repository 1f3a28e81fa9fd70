#!/bin/sh
# cuda-emu.sh - the CUDA training kernels run on the host by the emulator
# of scripts/cuda-emu (a thread per GPU thread, a barrier per
# __syncthreads) against the CPU backend: their index math, shared memory
# and barriers checked without a GPU.  SKIP without g++ or python3.
src=${LLMKIT_SRC:-.}
bin=${LLMKIT_BIN:-.}
command -v "${CXX:-g++}" >/dev/null 2>&1 || { echo "SKIP: no C++ compiler"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
[ -e "$bin/libcore/.libs/libllmcore.so" ] || { echo "SKIP: no shared libllmcore"; exit 77; }
exec "$src/scripts/cuda-emu/run.sh" "$bin"
