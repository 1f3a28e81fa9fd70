#!/bin/sh
# Make sure the default model (stories260K) is where llmkit looks for it.
# Beside a checkout it is already in ../shared/data/models; elsewhere it is
# downloaded from its public source and its sha256 checked.
#
#   scripts/get-model.sh [DIR]     (default: $LLMKIT_MODELS, then
#                                   ${XDG_DATA_HOME:-~/.local/share}/llmkit/models)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

for d in "${LLMKIT_MODELS:-}" "${LLMKIT_DATA:+$LLMKIT_DATA/models}" \
         "$here/../shared/data/models"; do
	if [ -n "$d" ] && [ -r "$d/stories260K.gguf" ]; then
		echo "$d/stories260K.gguf"
		exit 0
	fi
done

dir=${1:-${LLMKIT_MODELS:-${XDG_DATA_HOME:-$HOME/.local/share}/llmkit/models}}
mkdir -p "$dir"

# name  sha256  url
fetch() {
	name=$1 sum=$2 url=$3
	if [ -r "$dir/$name" ] &&
	   echo "$sum  $dir/$name" | sha256sum -c --status 2>/dev/null; then
		return 0
	fi
	echo "get-model: downloading $name from $url" >&2
	tmp="$dir/.$name.part"
	if command -v curl >/dev/null 2>&1; then
		curl -fL --retry 3 -o "$tmp" "$url"
	else
		wget -q -O "$tmp" "$url"
	fi
	if ! echo "$sum  $tmp" | sha256sum -c --status; then
		rm -f "$tmp"
		echo "get-model: $name: sha256 mismatch, download rejected" >&2
		exit 1
	fi
	mv "$tmp" "$dir/$name"
}

fetch stories260K.gguf \
	270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d \
	https://huggingface.co/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf
fetch stories260K.bin \
	b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 \
	https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin
fetch tok512.bin \
	037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312 \
	https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin
echo "$dir/stories260K.gguf"
