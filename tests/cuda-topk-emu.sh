#!/bin/sh
# cuda-topk-emu.sh - the topk kernel (libcore/cuda/kernels-sample.cu) run on
# the host by tests/cuda-emu/topk (a thread per CUDA thread, barriers for
# __syncthreads and warp shuffles) against the CPU backend's candidates:
# its index math, shared memory, barriers and shuffles checked without a
# GPU.  SKIP (77) without a C++ compiler or a shared libllmcore.
set -u
src=${LLMKIT_SRC:-.}
bin=${LLMKIT_BIN:-.}
cxx=${CXX:-g++}
command -v "$cxx" >/dev/null 2>&1 || { echo "SKIP: no C++ compiler ($cxx)"; exit 77; }
[ -e "$bin/libcore/.libs/libllmcore.so" ] || { echo "SKIP: no shared libllmcore"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
# the kernel, cut before its launcher (<<< >>> is not C++)
sed '/^cudaError_t cuda_topk(/,$d' "$src/libcore/cuda/kernels-sample.cu" > "$tmp/kernels.cpp"
grep -q "topk_kernel" "$tmp/kernels.cpp" || { echo "FAIL: no kernel in the cut"; exit 1; }
"$cxx" -std=c++17 -O1 -pthread -I"$src/tests/cuda-emu/topk" -I"$src/libcore" \
	-I"$src/libcore/include" -I"$bin" -DKERNELS="\"$tmp/kernels.cpp\"" -o "$tmp/emu" \
	"$src/tests/cuda-emu/topk/topk-emu.cpp" -L"$bin/libcore/.libs" -lllmcore \
	-Wl,-rpath,"$bin/libcore/.libs" -lm 2> "$tmp/err" ||
	{ echo "FAIL: compiling the emulation:"; cat "$tmp/err"; exit 1; }
timeout 600 "$tmp/emu"
