#!/bin/sh
# Run the CUDA kernels of libcore/cuda on the host (no GPU, no nvcc)
# against the CPU backend and plain loops:
#   ./scripts/cuda-emu/run.sh [BUILD_DIR [SUITE...]]
# BUILD_DIR (default: the source tree, built) holds libcore/.libs with the
# shared libllmcore; SUITEs: train lora ops quant sample (default: all).  Each
# kernels-X.cu is rewritten by transform.py and compiled as C++ with
# shim/ standing in for CUDA's headers (emu.cc: the scheduler); see
# emu-main.cc.  CXX and EMU_CXXFLAGS may be set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src}
[ $# -gt 0 ] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cxx=${CXX:-g++}
flags="-std=c++17 -O1 -g -Wall -Wno-unknown-pragmas -Wno-unused-function ${EMU_CXXFLAGS:-}"
inc="-I$here/shim -I$here -I$tmp -I$src/libcore/include -I$src/libcore"
for k in train lora ops quant sample; do
	python3 "$here/transform.py" "$src/libcore/cuda/kernels-$k.cu" > "$tmp/kernels-$k.emu.cc"
done
# two compilers at a time (the quant kernels' templates take longest)
pids=
for f in emu-quant emu-ops emu-train emu-lora emu-sample emu-main emu; do
	$cxx $flags $inc -c "$here/$f.cc" -o "$tmp/$f.o" 2> "$tmp/$f.err" &
	pids="$pids $!"
	if [ "$f" = emu-ops ] || [ "$f" = emu-lora ]; then
		for p in $pids; do wait "$p" || touch "$tmp/failed"; done
		pids=
	fi
done
for p in $pids; do wait "$p" || touch "$tmp/failed"; done
cat "$tmp"/*.err >&2
[ ! -e "$tmp/failed" ] || { echo "cuda-emu: compiling failed" >&2; exit 1; }
$cxx ${EMU_CXXFLAGS:-} -o "$tmp/emu-tests" "$tmp"/*.o -L"$build/libcore/.libs" -lllmcore \
	-Wl,-rpath,"$build/libcore/.libs" -lm
timeout 600 "$tmp/emu-tests" "$@"
