#!/bin/sh
# cuda-emu.sh - the CUDA kernels of libcore/cuda (training, LoRA, the
# inference ops and attention, the weight kernels of every type, the
# sampling candidates) run on the host by the emulator of scripts/cuda-emu
# (a fiber per GPU thread, a barrier per __syncthreads, warp shuffles)
# against the CPU backend and plain loops: their index math, shared
# memory, barriers and shuffles checked without a GPU.  SKIP without g++
# or python3 or a shared libllmcore.
src=${LLMKIT_SRC:-.}
bin=${LLMKIT_BIN:-.}
command -v "${CXX:-g++}" >/dev/null 2>&1 || { echo "SKIP: no C++ compiler"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
[ -e "$bin/libcore/.libs/libllmcore.so" ] || { echo "SKIP: no shared libllmcore"; exit 77; }
exec "$src/scripts/cuda-emu/run.sh" "$bin"
