#!/bin/sh
# Replays every file under tests/fuzz/corpus through its fuzz target, built by `make check`
# as a replay program (tests/fuzz/fuzz_common.h): the seeds, and every input a fuzzer once
# crashed on, must now pass the target's checks. Built with --enable-sanitizers, the
# replay runs under ASan/UBSan (and LeakSanitizer at exit).
set -u
: "${top_srcdir:?run from make check}" "${top_builddir:?run from make check}"
corpus=$top_srcdir/tests/fuzz/corpus
fail=0

replay() {
	t=$1
	shift
	for d in "$@"; do
		if [ -z "$(ls -A "$d" 2>/dev/null)" ]; then
			echo "FAIL: $d: no corpus files"
			fail=1
		fi
	done
	if "$top_builddir/tests/fuzz/fuzz_$t" "$@"; then
		echo "PASS: fuzz_$t"
	else
		echo "FAIL: fuzz_$t (exit status $?)"
		fail=1
	fi
}

replay gguf "$corpus/gguf" "$corpus/model"
replay model "$corpus/model" "$corpus/gguf"
replay tokjson "$corpus/tokjson"
replay tokenizer "$corpus/tokenizer"
replay chat "$corpus/chat"
replay config "$corpus/config"
replay options "$corpus/options"
replay safetensors "$corpus/safetensors"
exit $fail
