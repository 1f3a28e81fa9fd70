#!/bin/sh
# Run the CUDA training kernels on the host (no GPU, no nvcc) against the
# CPU backend: ./scripts/cuda-emu/run.sh [BUILD_DIR]  (default: the source
# tree, built).  See emu-train.cc.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/transform.py" "$src/libcore/cuda/kernels-train.cu" > "$tmp/kernels-train.emu.cc"
${CXX:-g++} -std=c++17 -O1 -g -Wall -pthread -I"$here/shim" -I"$tmp" \
	-I"$src/libcore/include" -I"$src/libcore" \
	"$here/emu-train.cc" "$here/emu.cc" -o "$tmp/emu-train" \
	-L"$build/libcore/.libs" -lllmcore -Wl,-rpath,"$build/libcore/.libs" -lm
timeout 600 "$tmp/emu-train"
