#!/bin/sh
# cuda-lora-emu.sh - the LoRA kernels (libcore/cuda/kernels-lora.cu) run on
# the host by tests/cuda-emu/lora-emu.cpp (a thread per CUDA thread),
# against plain loops: their index math and the passes of overlapping
# segments are checked without a GPU.  SKIP (77) without a C++ compiler.
set -u
src=${LLMKIT_SRC:-.}
bin=${LLMKIT_BIN:-.}
cxx=${CXX:-g++}
command -v "$cxx" >/dev/null 2>&1 || { echo "SKIP: no C++ compiler ($cxx)"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
# the kernels, cut before their launchers (<<< >>> is not C++)
sed '/^cudaError_t cuda_lora_shrink(/,$d' "$src/libcore/cuda/kernels-lora.cu" \
	> "$tmp/kernels.cpp"
grep -q "lora_expand_kernel" "$tmp/kernels.cpp" || { echo "FAIL: no kernels in the cut"; exit 1; }
"$cxx" -std=c++17 -O1 -Wno-unknown-pragmas -include "$src/tests/cuda-emu/shim.h" \
	-I"$src/tests/cuda-emu" -I"$src/libcore" -I"$src/libcore/include" -I"$bin" \
	-DKERNELS="\"$tmp/kernels.cpp\"" -o "$tmp/emu" \
	"$src/tests/cuda-emu/lora-emu.cpp" -lpthread 2> "$tmp/err" ||
	{ echo "FAIL: compiling the emulation:"; cat "$tmp/err"; exit 1; }
"$tmp/emu"
