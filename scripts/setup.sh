#!/bin/sh
# Set up a build of llmkit: install the Debian packages it needs (when
# missing and we can), then configure and build in the source tree.
#
#   scripts/setup.sh [--no-build] [--python] [CONFIGURE-ARGS...]
#
# --python also installs the Python packages the reference checks use
# (numpy, gguf, tokenizers, safetensors) and the openai client the
# server tests use, with pip.
set -eu
cd "$(dirname "$0")/.."

build=1 python=0
while [ $# -gt 0 ]; do
	case $1 in
	--no-build) build=0 ;;
	--python) python=1 ;;
	*) break ;;
	esac
	shift
done

pkgs="build-essential autoconf automake libtool pkg-config libopenblas-dev
      check zlib1g-dev libpcre2-dev libjansson-dev libmicrohttpd-dev curl
      python3 python3-pip"
missing=
if command -v dpkg-query >/dev/null 2>&1; then
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing="$missing $p"
	done
fi
if [ -n "$missing" ]; then
	echo "setup: installing Debian packages:$missing" >&2
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

if [ "$python" = 1 ]; then
	python3 -m pip install -q --disable-pip-version-check \
		numpy gguf tokenizers safetensors openai 2>&1 | grep -v 'WARNING: Running pip as' >&2 || true
fi

[ "$build" = 1 ] || exit 0
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
	autoreconf -fi >/dev/null
fi
if [ ! -f Makefile ] || [ $# -gt 0 ]; then
	./configure -q "$@"
fi
make -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
echo "setup: built llmkit in $(pwd)" >&2
