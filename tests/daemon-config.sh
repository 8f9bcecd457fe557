#!/bin/sh
# bitnetd --check-config catches each kind of bad configuration and prints every problem.
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$(pwd)}"
BITNETD=$top_builddir/daemon/bitnetd
[ -x "$BITNETD" ] || { echo "FAIL: $BITNETD not built"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/bitnetd-config.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

good() {
	printf '[model]\npath = /nonexistent/model.gguf\n[engine]\nthreads = 2\n'
}
# bad WORD... : --check-config must fail and print each WORD
bad() {
	"$BITNETD" --check-config --config "$T/c.conf" > "$T/out" 2>&1 &&
		fail "accepted: $(cat "$T/c.conf")"
	[ $? = 6 ] || fail "exit code for a bad config is not 6"
	for w in "$@"; do
		grep -q -- "$w" "$T/out" || fail "no mention of '$w' in: $(cat "$T/out")"
	done
	echo "ok: rejected ($*)"
}

good > "$T/c.conf"
"$BITNETD" --check-config --config "$T/c.conf" > "$T/out" 2>&1 || fail "good config rejected: $(cat "$T/out")"
grep -q "configuration OK" "$T/out" || fail "no OK line"

{ good; printf '[bogus]\nx = 1\n'; } > "$T/c.conf"; bad "unknown section \[bogus\]"
{ good; printf 'colour = red\n'; } > "$T/c.conf"; bad "unknown key 'colour'"
{ good; printf '[server]\nmax_queue = many\n'; } > "$T/c.conf"; bad "max_queue" "many"
{ good; printf '[server]\nmax_queue = 99999\n'; } > "$T/c.conf"; bad "max_queue" "99999"
{ good; printf '[server]\ntemperature = -1\n'; } > "$T/c.conf"; bad "temperature"
{ good; printf '[server]\ntop_p = nan\n'; } > "$T/c.conf"; bad "top_p"
{ good; printf '[engine]\nsmt = maybe\n'; } > "$T/c.conf"; bad "smt" "boolean"
{ good; printf '[engine]\nnuma = sideways\n'; } > "$T/c.conf"; bad "numa" "sideways"
{ good; printf '[model]\ntemplate = fancy\n'; } > "$T/c.conf"; bad "template" "fancy"
{ good; printf '[log]\nlevel = loud\n'; } > "$T/c.conf"; bad "level" "loud"
{ good; printf '[engine]\nplugin_dir = relative/dir\n'; } > "$T/c.conf"; bad "plugin_dir" "absolute"
printf '[model]\ncontext = 512\n' > "$T/c.conf"; bad "path" "not set"
printf '[model]\npath = model.gguf\n' > "$T/c.conf"; bad "path" "absolute"
{ good; printf '[server]\nmax_tokens = 100\nmax_tokens_limit = 10\n'; } > "$T/c.conf"; bad "max_tokens"
printf 'garbage line without equals\n[model\n' > "$T/c.conf"; bad "cannot parse"
# every problem at once, not just the first
{ good; printf '[server]\nmax_queue = x\ntop_k = y\n[nope]\n'; } > "$T/c.conf"
bad max_queue top_k nope
"$BITNETD" --check-config --config "$T/none.conf" > "$T/out" 2>&1 && fail "missing file accepted"
grep -q "none.conf" "$T/out" || fail "missing file not named"
echo "ok: missing file"

# unknown keys are only warnings when starting (the daemon then fails on the model here)
{ good; printf '[server]\ncolour = red\n'; } > "$T/c.conf"
timeout 10 "$BITNETD" --address unix:path=/nonexistent --config "$T/c.conf" > "$T/out" 2>&1
grep -q "^<4>.*unknown key 'colour'" "$T/out" || fail "no warning for an unknown key at start: $(cat "$T/out")"
grep -q "^<3>" "$T/out" || fail "no <3> error line for the missing model"
echo "ok: unknown key warned at start with a <4> prefix"

# the shipped configuration lists every key at its default
"$BITNETD" --print-defaults | grep '^#[a-z_]* = ' > "$T/defaults"
while IFS= read -r line; do
	grep -qxF -- "$line" "$top_srcdir/etc/bitnetd.conf" || fail "etc/bitnetd.conf lacks '$line'"
done < "$T/defaults"
sed 's/^#path = $/path = \/x.gguf/; s/^#\([a-z_]* = .\)/\1/' "$top_srcdir/etc/bitnetd.conf" > "$T/all.conf"
"$BITNETD" --check-config --config "$T/all.conf" > "$T/out" 2>&1 || fail "the defaults do not pass: $(cat "$T/out")"
echo "ok: etc/bitnetd.conf has every key at its default"
