#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz with clang (-fsanitize=fuzzer,address,undefined,
# libbitnet instrumented for coverage) and runs one or all of them for a while.
#
#   scripts/fuzz.sh [TARGET|all|build] [SECONDS] [-- LIBFUZZER_ARGS...]
#
# TARGET: gguf model tokjson tokenizer chat config options safetensors (default: all, one after the
# other). SECONDS: per target (default 60). `build` only builds. The build goes to
# $BUILD_FUZZ (default build-fuzz/ at the top of the tree): the instrumented library in it
# (its own configure, CC=clang), the targets in $BUILD_FUZZ/fuzz/, the corpus each run
# grows in $BUILD_FUZZ/corpus/TARGET (tests/fuzz/corpus/TARGET is read, never written),
# crashes in $BUILD_FUZZ/artifacts/TARGET/ and the log in $BUILD_FUZZ/logs/TARGET.log.
# Needs clang and its fuzzer runtime (Debian 12: clang, libclang-rt-14-dev).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
bdir=${BUILD_FUZZ:-$top/build-fuzz}
CLANG=${CLANG:-clang}
all_targets="gguf model tokjson tokenizer chat config options safetensors"

target=${1:-all}
secs=${2:-60}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

case $target in
all|build) targets=$all_targets ;;
*)
	case " $all_targets " in
	*" $target "*) targets=$target ;;
	*) echo "fuzz.sh: unknown target '$target' (one of: $all_targets, all, build)" >&2; exit 2 ;;
	esac ;;
esac
case $secs in
''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number, not '$secs'" >&2; exit 2 ;;
esac

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

# --- the library, instrumented (rebuilt by make when sources change) ------------------
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' \
	> "${TMPDIR:-/tmp}/fuzz-probe.$$.c"
if ! $CLANG -fsanitize=fuzzer "${TMPDIR:-/tmp}/fuzz-probe.$$.c" -o "${TMPDIR:-/tmp}/fuzz-probe.$$" \
	2>/dev/null; then
	rm -f "${TMPDIR:-/tmp}/fuzz-probe.$$.c"
	echo "fuzz.sh: '$CLANG -fsanitize=fuzzer' does not link (Debian: apt-get install clang" \
	     "libclang-rt-14-dev)" >&2
	exit 1
fi
rm -f "${TMPDIR:-/tmp}/fuzz-probe.$$.c" "${TMPDIR:-/tmp}/fuzz-probe.$$"

mkdir -p "$bdir"
# one build at a time: two runs started together share the library and the targets
exec 9> "$bdir/.build-lock"
flock 9
if [ ! -f "$bdir/Makefile" ]; then
	[ -x "$top/configure" ] || (cd "$top" && ./autogen.sh)
	(cd "$bdir" && "$top/configure" -q CC="$CLANG" \
		CFLAGS="-g -O1 -fsanitize=fuzzer-no-link $SAN \
		-fsanitize-coverage-ignorelist=$top/tests/fuzz/coverage-ignore.txt")
fi
if ! make -C "$bdir" -j2 lib/libbitnet.la > "$bdir/make.log" 2>&1; then
	tail -n 30 "$bdir/make.log" >&2
	exit 1
fi

# --- the targets -------------------------------------------------------------------
libs="$bdir/lib/.libs/libbitnet.a $(pkg-config --libs libpcre2-8 json-c hwloc) -liniparser -ldl -lm -pthread"
mkdir -p "$bdir/fuzz"
for t in $targets; do
	extra=
	case $t in
	config) extra="$top/daemon/config.c" ;;
	options) extra="$top/daemon/options.c $top/daemon/config.c" ;;
	esac
	# shellcheck disable=SC2086
	$CLANG -std=gnu11 -g -O1 -ffp-contract=off -fsanitize=fuzzer $SAN -DHAVE_CONFIG_H \
		-I"$bdir" -I"$top/include" -I"$top/lib" -iquote "$top/daemon" \
		$(pkg-config --cflags dbus-1) \
		"$top/tests/fuzz/fuzz_$t.c" $extra $libs $(pkg-config --libs dbus-1) \
		-o "$bdir/fuzz/fuzz_$t"
done
flock -u 9
exec 9>&-
echo "fuzz.sh: targets in $bdir/fuzz"
[ "$target" = build ] && exit 0

# --- runs ------------------------------------------------------------------------------
status=0
for t in $targets; do
	seeds="$top/tests/fuzz/corpus/$t"
	max_len=4096
	case $t in
	gguf) seeds="$seeds $top/tests/fuzz/corpus/model"; max_len=131072 ;;
	model) seeds="$seeds $top/tests/fuzz/corpus/gguf"; max_len=131072 ;;
	tokjson) max_len=16384 ;;
	config) max_len=8192 ;;
	esac
	dict=
	[ -f "$top/tests/fuzz/dict/$t.dict" ] && dict="-dict=$top/tests/fuzz/dict/$t.dict"
	mkdir -p "$bdir/corpus/$t" "$bdir/artifacts/$t" "$bdir/logs"
	echo "fuzz.sh: $t for ${secs}s (log: $bdir/logs/$t.log)"
	rc=0
	# shellcheck disable=SC2086
	"$bdir/fuzz/fuzz_$t" -max_total_time="$secs" -max_len=$max_len -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 $dict \
		-artifact_prefix="$bdir/artifacts/$t/" "$@" "$bdir/corpus/$t" $seeds \
		> "$bdir/logs/$t.log" 2>&1 || rc=$?
	grep -E '^#[0-9]+[[:space:]]+DONE' "$bdir/logs/$t.log" | tail -n 1 || true
	grep -E '^stat::number_of_executed_units' "$bdir/logs/$t.log" || true
	if [ $rc -ne 0 ]; then
		echo "fuzz.sh: $t stopped with status $rc; see $bdir/logs/$t.log and $bdir/artifacts/$t/" >&2
		status=1
	fi
done
exit $status
