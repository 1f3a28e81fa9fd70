#!/bin/sh
# One command: install what is missing (Debian packages, and the Python
# packages of the reference checks), build, and run the test suite.
# TEST_DISTCHECK=1 also runs 'make distcheck'.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh --python
scripts/get-model.sh >/dev/null
if ! make -j"$(nproc 2>/dev/null || echo 2)" check; then
	cat test-suite.log >&2 || true
	exit 1
fi
if [ "${TEST_DISTCHECK:-0}" = 1 ]; then
	make -j"$(nproc 2>/dev/null || echo 2)" distcheck
fi
