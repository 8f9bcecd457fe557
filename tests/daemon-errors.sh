#!/bin/sh
# Bad calls each get their named error, and the daemon keeps serving.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
command -v gdbus >/dev/null || skip "gdbus is not installed"
make_model 512
write_config "$T/bitnetd.conf" "max_prompt_bytes = 4096" "max_tokens_limit = 64" "max_tokens = 16"
start_bus
start_daemon "$T/bitnetd.conf"

# expect ERROR_NAME WORD METHOD ARGS...: the call fails with that D-Bus error, message has WORD
expect() {
	want=$1 word=$2 method=$3
	shift 3
	out=$(timeout 20 gdbus call --address "$ADDR" -d org.bitnetd.Daemon1 -o /org/bitnetd/Daemon1 \
		-m "org.bitnetd.Daemon1.Manager.$method" "$@" 2>&1) && fail "$method $* succeeded: $out"
	echo "$out" | grep -q "$want" || fail "$method $*: expected $want, got: $out"
	echo "$out" | grep -q -- "$word" || fail "$method $*: message does not name '$word': $out"
	daemon_alive
	ok "$method $* -> ${want##*.}"
}
IA=org.freedesktop.DBus.Error.InvalidArgs
expect $IA max_tokens Generate "hi" "{'max_tokens': <int32 5>}"
expect $IA temperature Generate "hi" "{'temperature': <'hot'>}"
expect $IA seed Generate "hi" "{'seed': <uint32 5>}"
expect $IA stop Generate "hi" "{'stop': <'x'>}"
expect $IA max_tokens Generate "hi" "{'max_tokens': <uint32 0>}"
expect $IA max_tokens Generate "hi" "{'max_tokens': <uint32 65>}"
expect $IA temperature Generate "hi" "{'temperature': <-1.0>}"
expect $IA temperature Generate "hi" "{'temperature': <101.0>}"
expect $IA top_p Generate "hi" "{'top_p': <0.0>}"
expect $IA top_p Generate "hi" "{'top_p': <1.5>}"
expect $IA min_p Generate "hi" "{'min_p': <2.0>}"
expect $IA repeat_penalty Generate "hi" "{'repeat_penalty': <0.0>}"
# in range as doubles but 0 as the sampler's floats: refused, the message shows the value given
expect $IA "top_p: 1e-300 is too small" Generate "hi" "{'top_p': <1e-300>}"
expect $IA "repeat_penalty: 1e-50 is too small" Generate "hi" "{'repeat_penalty': <1e-50>}"
expect $IA top_k Generate "hi" "{'top_k': <uint32 4294967295>}"
expect $IA template Generate "hi" "{'template': <'fancy'>}"
expect $IA stop Generate "hi" "{'stop': <['']>}"
expect $IA bogus Generate "hi" "{'bogus': <1>}"
expect $IA "known options: .*temperature, .*seed" Generate "hi" "{'bogus': <1>}"
expect $IA system Generate "hi" "{'system': <'be nice'>}"
expect $IA empty Generate "" "{}"
big=$(head -c 5000 /dev/zero | tr '\0' a)
expect $IA max_prompt_bytes Generate "$big" "{}"
expect $IA role Chat "[('wizard', 'hi')]" "{}"
expect $IA empty Chat "@a(ss) []" "{}"
expect $IA add_bos Tokenize "hi" "{'add_bos': <'yes'>}"
expect $IA expects Generate "hi"
# wrong argument types altogether
out=$(dbus-send --bus="$ADDR" --print-reply --dest=org.bitnetd.Daemon1 /org/bitnetd/Daemon1 \
	org.bitnetd.Daemon1.Manager.Generate int32:5 2>&1) && fail "Generate(i) succeeded"
echo "$out" | grep -q InvalidArgs || fail "Generate(i): $out"
ok "Generate(int32) -> InvalidArgs"

# a prompt past the context: ContextFull naming both sizes (tiny model: 512 positions;
# "a b " is two tokens per word pair at least)
long=$(for i in $(seq 700); do printf 'x%d ' $i; done)
out=$(timeout 20 gdbus call --address "$ADDR" -d org.bitnetd.Daemon1 -o /org/bitnetd/Daemon1 \
	-m org.bitnetd.Daemon1.Manager.Generate "$long" "{}" 2>&1) && fail "long prompt accepted"
echo "$out" | grep -q org.bitnetd.Daemon1.Error.ContextFull || fail "long prompt: $out"
echo "$out" | grep -q "context of 512 tokens" || fail "ContextFull message lacks the sizes: $out"
ctl generate "$long" 2>"$T/cf.err" && fail "bitnetctl accepted a long prompt"
[ $? = 5 ] || fail "bitnetctl: wrong exit code for ContextFull"
ok "ContextFull: $(cat "$T/cf.err")"

# properties are read-only, unknown ones named
out=$(dbus-send --bus="$ADDR" --print-reply --dest=org.bitnetd.Daemon1 /org/bitnetd/Daemon1 \
	org.freedesktop.DBus.Properties.Set string:org.bitnetd.Daemon1.Manager string:State \
	variant:string:ready 2>&1) && fail "Set succeeded"
echo "$out" | grep -q PropertyReadOnly || fail "Set: $out"
out=$(dbus-send --bus="$ADDR" --print-reply --dest=org.bitnetd.Daemon1 /org/bitnetd/Daemon1 \
	org.freedesktop.DBus.Properties.Get string:org.bitnetd.Daemon1.Manager string:Nope 2>&1) &&
	fail "Get(Nope) succeeded"
echo "$out" | grep -q UnknownProperty || fail "Get(Nope): $out"
# a finished request's object is gone; Cancel from someone else is refused
out=$(dbus-send --bus="$ADDR" --print-reply --dest=org.bitnetd.Daemon1 \
	/org/bitnetd/Daemon1/request/9999 org.bitnetd.Daemon1.Request.Cancel 2>&1) && fail "Cancel(9999)"
echo "$out" | grep -q UnknownObject || fail "Cancel on a missing request: $out"
ok "read-only properties, unknown objects"

# bitnetctl: one line naming the cause, distinct exit codes
ctl generate --max-tokens 100000 hi 2>"$T/e1"
[ $? = 5 ] || fail "bitnetctl out-of-range max_tokens exit code"
[ "$(wc -l < "$T/e1")" = 1 ] || fail "bitnetctl error is not one line: $(cat "$T/e1")"
grep -q max_tokens "$T/e1" || fail "bitnetctl error does not name the option"
ctl bogus 2>/dev/null
[ $? = 2 ] || fail "unknown command exit code"
timeout 10 "$BITNETCTL" --address "unix:path=$T/nope" status 2>/dev/null
[ $? = 3 ] || fail "unreachable bus exit code"
ok "bitnetctl errors"

# still serving
ctl generate --greedy --max-tokens 4 "still there" >/dev/null || fail "daemon stopped serving"
[ "$(prop RequestsRejected)" -ge 1 ] || fail "RequestsRejected not counted"
stop_daemon
ok "daemon kept serving"
