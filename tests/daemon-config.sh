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

# --check-config reads the model file's first bytes (it does not load it): a GGUF magic will do
MODEL=$T/model.gguf
printf 'GGUF\003\000\000\000' > "$MODEL"
good() {
	printf '[model]\npath = %s\n[engine]\nthreads = 2\n' "$MODEL"
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

# What the daemon refuses at start must be refused here too, short of loading the model.
# a key before any section header
{ printf 'colour = red\n'; good; } > "$T/c.conf"; bad "key 'colour' is outside any section"
# kernel plugins: unknown, a path for a name, one the CPU cannot run, a bad plugin_dir
{ good; printf 'plugin = nosuch\n'; } > "$T/c.conf"; bad "\[engine\] plugin" "nosuch" "available"
{ good; printf 'plugin = ../kernel-scalar\n'; } > "$T/c.conf"; bad "\[engine\] plugin" "'../kernel-scalar'"
{ good; printf 'plugin = /tmp/evil\n'; } > "$T/c.conf"; bad "\[engine\] plugin" "'/tmp/evil'"
{ good; printf 'plugin = ..\n'; } > "$T/c.conf"; bad "\[engine\] plugin" "'\.\.'"
PLUGINS=$top_builddir/plugins/.libs
if [ -e "$PLUGINS/kernel-avx2.so" ]; then
	{ good; printf 'plugin = avx2\nplugin_dir = %s\n' "$PLUGINS"; } > "$T/c.conf"
	( export BITNET_CPU_DISABLE=avx2; bad "\[engine\] plugin" "'avx2'" "CPU lacks" ) || exit 1
fi
{ good; printf 'plugin_dir = /nonexistent/plugins\n'; } > "$T/c.conf"; bad "\[engine\] plugin_dir" "/nonexistent/plugins"
{ good; printf 'plugin_dir = %s\n' "$MODEL"; } > "$T/c.conf"; bad "\[engine\] plugin_dir" "not a directory"
mkdir "$T/noplugins"
{ good; printf 'plugin_dir = %s\n' "$T/noplugins"; } > "$T/c.conf"; bad "\[engine\] plugin" "no usable kernel plugin"
# CPU lists: malformed, outside the allowed set, no CPU at all, more threads than cores
FIRST_CPU=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status | sed 's/[-,].*//')
{ good; printf 'cpus = 0-1x\n'; } > "$T/c.conf"; bad "\[engine\] cpus" "'0-1x'" "not a CPU list"
{ good; printf 'cpus = zero\n'; } > "$T/c.conf"; bad "\[engine\] cpus" "'zero'"
{ good; printf 'cpus = 4000\n'; } > "$T/c.conf"; bad "\[engine\] cpus" "4000" "allowed"
{ good; printf 'cpus = 3-1\n'; } > "$T/c.conf"; bad "\[engine\] cpus" "'3-1'"
printf '[model]\npath = %s\n[engine]\ncpus = %s\nthreads = 2\n' "$MODEL" "$FIRST_CPU" > "$T/c.conf"
bad "\[engine\] threads" "2" "usable core"
# the gate policy: missing, not INI rules
{ good; printf '[model]\ngate_policy = %s\n' "$T/nopolicy.ini"; } > "$T/c.conf"; bad "\[model\] gate_policy" "nopolicy.ini"
printf '[attn]\npattern = blk.*\nmin = low\nmax = 2\n' > "$T/policy.ini"
{ good; printf '[model]\ngate_policy = %s\n' "$T/policy.ini"; } > "$T/c.conf"; bad "\[model\] gate_policy" "policy.ini" "min"
printf '[attn\npattern\n' > "$T/policy2.ini"
{ good; printf '[model]\ngate_policy = %s\n' "$T/policy2.ini"; } > "$T/c.conf"; bad "\[model\] gate_policy" "policy2.ini"
# the model file: missing, not a regular file, not GGUF, not readable
{ good; printf '[model]\npath = %s\n' "$T/missing.gguf"; } > "$T/c.conf"; bad "\[model\] path" "missing.gguf"
{ good; printf '[model]\npath = %s\n' "$T"; } > "$T/c.conf"; bad "\[model\] path" "not a regular file"
printf 'NOPE\000\000\000\000' > "$T/notgguf.bin"
{ good; printf '[model]\npath = %s\n' "$T/notgguf.bin"; } > "$T/c.conf"; bad "\[model\] path" "notgguf.bin" "GGUF"
if [ "$(id -u)" != 0 ]; then
	cp "$MODEL" "$T/secret.gguf" && chmod 000 "$T/secret.gguf"
	{ good; printf '[model]\npath = %s\n' "$T/secret.gguf"; } > "$T/c.conf"; bad "\[model\] path" "secret.gguf"
fi
# all of these at once: every one is listed
{ printf 'stray = 1\n'; good; printf 'plugin = ../x\ncpus = 0-1x\n[model]\npath = %s\ngate_policy = %s\n' \
	"$T/missing.gguf" "$T/nopolicy.ini"; } > "$T/c.conf"
bad "'stray' is outside any section" "\[engine\] plugin" "\[engine\] cpus" "missing.gguf" "nopolicy.ini"
[ "$(grep -c '^error: ' "$T/out")" -ge 5 ] || fail "not one error line per problem: $(cat "$T/out")"
echo "ok: several problems listed together"

# unknown keys are only warnings when starting (the daemon then fails on the model here)
{ good; printf '[server]\ncolour = red\n'; } > "$T/c.conf"
timeout 10 "$BITNETD" --address unix:path=/nonexistent --config "$T/c.conf" > "$T/out" 2>&1
grep -q "^<4>.*unknown key 'colour'" "$T/out" || fail "no warning for an unknown key at start: $(cat "$T/out")"
grep -q "^<3>" "$T/out" || fail "no <3> error line for the missing model"
echo "ok: unknown key warned at start with a <4> prefix"
# a key before any section: a warning at start too
{ printf 'colour = red\n'; good; } > "$T/c.conf"
timeout 10 "$BITNETD" --address unix:path=/nonexistent --config "$T/c.conf" > "$T/out" 2>&1
grep -q "^<4>.*key 'colour' is outside any section" "$T/out" || fail "no warning for a key before any section at start: $(cat "$T/out")"
echo "ok: key before any section warned at start"
# the daemon runs the same check at start: a bad plugin stops it before the model is loaded
{ good; printf 'plugin = nosuch\n'; } > "$T/c.conf"
timeout 10 "$BITNETD" --address unix:path=/nonexistent --config "$T/c.conf" > "$T/out" 2>&1
rc=$?
[ $rc = 6 ] || fail "exit $rc (not 6) for an unknown plugin at start: $(cat "$T/out")"
grep -q "^<3>.*\[engine\] plugin: 'nosuch'" "$T/out" || fail "start error does not name the plugin: $(cat "$T/out")"
echo "ok: the start-up check refuses an unknown plugin"

# the shipped configuration lists every key at its default
"$BITNETD" --print-defaults | grep '^#[a-z_]* = ' > "$T/defaults"
while IFS= read -r line; do
	grep -qxF -- "$line" "$top_srcdir/etc/bitnetd.conf" || fail "etc/bitnetd.conf lacks '$line'"
done < "$T/defaults"
sed "s|^#path = \$|path = $MODEL|; s/^#\([a-z_]* = .\)/\1/" "$top_srcdir/etc/bitnetd.conf" > "$T/all.conf"
"$BITNETD" --check-config --config "$T/all.conf" > "$T/out" 2>&1 || fail "the defaults do not pass: $(cat "$T/out")"
echo "ok: etc/bitnetd.conf has every key at its default"
