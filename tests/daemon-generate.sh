#!/bin/sh
# bitnetd end to end: streaming generation equals `bitnet run --greedy`, chat, tokenize,
# properties, and the request objects seen through clients nobody here wrote.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
# numa = interleave changes where pages live, never a result (checked against bitnet run);
# kernels without NUMA support (no numa_maps) cannot place anything, so it is left out there
if [ -r /proc/self/numa_maps ]; then
	write_config "$T/bitnetd.conf" "[engine]" "numa = interleave"
else
	write_config "$T/bitnetd.conf"
fi
start_bus
start_daemon "$T/bitnetd.conf"
if [ -r /proc/self/numa_maps ]; then
	grep -q "numa = interleave: .* MB of weights on NUMA node" "$T/daemon.log" ||
		fail "no numa placement in the log: $(cat "$T/daemon.log")"
	ok "numa = interleave placed the weights"
fi

# plugin = auto (the default): the plugins were timed on the model, or the cached choice used
grep -Eq "kernel calibration: ([0-9]+ variants? timed in|.* from .*kernel-calibration)" "$T/daemon.log" ||
	fail "no kernel calibration in the log: $(cat "$T/daemon.log")"
ok "plugin = auto chose by calibration"

PROMPT="The quick brown fox"
N=24
command -v dbus-monitor >/dev/null && {
	timeout 30 dbus-monitor --address "$ADDR" "type='signal',interface='org.bitnetd.Daemon1.Request'" \
		> "$T/monitor.txt" 2>/dev/null &
	MON=$!
	BG_PIDS=$MON
	sleep 0.3
}
ctl generate --greedy --max-tokens $N "$PROMPT" > "$T/ctl.out" || fail "bitnetctl generate exited $?"
[ -s "$T/ctl.out" ] || fail "no text streamed"
ok "bitnetctl generate streamed $(wc -c < "$T/ctl.out") bytes"

if "$BITNET" run --help >/dev/null 2>&1; then
	timeout 60 "$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --threads 1 --greedy \
		--template raw --max-tokens $N --prompt "$PROMPT" > "$T/run.out" 2>"$T/run.err" ||
		fail "bitnet run failed: $(cat "$T/run.err")"
	cmp "$T/ctl.out" "$T/run.out" || fail "bitnetctl generate differs from bitnet run --greedy"
	ok "output equals bitnet run --greedy --template raw"
else
	echo "NOTE: 'bitnet run' is not built yet: the comparison with it is skipped"
fi

# same request again: greedy is deterministic through the daemon too
ctl generate --greedy --max-tokens $N "$PROMPT" > "$T/ctl2.out" || fail "second generate"
cmp "$T/ctl.out" "$T/ctl2.out" || fail "two greedy runs differ"
printf '%s' "$PROMPT" | ctl generate --greedy --max-tokens $N - > "$T/ctl3.out" || fail "prompt from stdin"
cmp "$T/ctl.out" "$T/ctl3.out" || fail "prompt from standard input gives different text"
ok "greedy output repeats, prompt from stdin"

if [ -n "${MON:-}" ]; then
	sleep 0.3
	kill "$MON" 2>/dev/null
	n=$(grep -c 'member=Text' "$T/monitor.txt")
	f=$(grep -c 'member=Finished' "$T/monitor.txt")
	[ "$n" -ge 2 ] || fail "expected several Text signals per request, saw $n"
	[ "$n" -lt $((3 * N)) ] || fail "Text signals are not coalesced ($n for 3 x $N tokens)"
	[ "$f" -ge 3 ] || fail "expected Finished signals, saw $f"
	grep 'member=Text' "$T/monitor.txt" | grep -q 'destination=:' || fail "Text is not unicast"
	ok "$n Text signals (unicast, coalesced) and $f Finished"
fi

# --json: one record with reason and stats
ctl generate --json --greedy --max-tokens 5 --seed 7 "$PROMPT" > "$T/json.out" || fail "generate --json"
grep -q '"reason":"length"' "$T/json.out" || fail "json record lacks reason: $(cat "$T/json.out")"
grep -q '"generated_tokens":5' "$T/json.out" || fail "json record lacks stats: $(cat "$T/json.out")"
grep -q '"seed":7' "$T/json.out" || fail "json record lacks the seed"
ok "--json record"

# stop string: the text stops before it
first=$(head -c 3 "$T/ctl.out" | cut -c2-)
if [ -n "$first" ]; then
	ctl generate --greedy --max-tokens $N --stop "$first" --json "$PROMPT" > "$T/stop.out" ||
		fail "generate --stop"
	grep -q '"reason":"stop-string"' "$T/stop.out" || fail "stop string not honoured: $(cat "$T/stop.out")"
	ok "stop string"
fi

# chat and tokenize
ctl chat --max-tokens 8 --system "Be brief." "Hello there" > "$T/chat.out" || fail "chat one-shot"
printf 'hi\n/exit\n' | ctl chat --max-tokens 4 > "$T/chat2.out" || fail "interactive chat"
ids=$(ctl tokenize "$PROMPT") || fail "tokenize"
[ -n "$ids" ] || fail "tokenize gave nothing"
ids2=$(gdbus call --address "$ADDR" -d org.bitnetd.Daemon1 -o /org/bitnetd/Daemon1 \
	-m org.bitnetd.Daemon1.Manager.Tokenize "$PROMPT" "{}" 2>&1) || fail "gdbus Tokenize: $ids2"
first_id=${ids%% *}
echo "$ids2" | grep -q "$first_id" || fail "gdbus Tokenize differs: $ids2 vs $ids"
ok "chat, tokenize"

# properties, through busctl/dbus-send as well
ctl status > "$T/status.out" || fail "status"
grep -q "State: *ready" "$T/status.out" || fail "status: $(cat "$T/status.out")"
ctl status --json | grep -q '"RequestsServed"' || fail "status --json"
ctl kernels | grep -q '^\* ' || fail "kernels lists no current plugin"
[ "$(prop State)" = ready ] || fail "State property: $(prop State)"
served=$(prop RequestsServed)
[ "$served" -ge 5 ] || fail "RequestsServed is $served"
if command -v busctl >/dev/null; then
	busctl --address="$ADDR" introspect org.bitnetd.Daemon1 /org/bitnetd/Daemon1 > "$T/busctl.out" 2>&1 ||
		fail "busctl introspect: $(cat "$T/busctl.out")"
	for m in .Generate .Chat .Tokenize .Reload .QueueDepth .Kernels; do
		grep -q "^$m " "$T/busctl.out" || fail "busctl introspect lacks $m"
	done
	busctl --address="$ADDR" tree org.bitnetd.Daemon1 >/dev/null 2>&1 || fail "busctl tree"
fi
gdbus introspect --address "$ADDR" -d org.bitnetd.Daemon1 -o /org/bitnetd/Daemon1/request >/dev/null ||
	fail "introspecting the request node"
# the installed XML is what the daemon says
"$BITNETD" --introspect > "$T/iface.xml"
for m in Generate Chat Tokenize Reload Cancel Text Finished; do
	grep -q "name=\"$m\"" "$T/iface.xml" || fail "--introspect lacks $m"
done
ok "properties and introspection"

# gdbus: a request object streams to its caller, who can cancel it
out=$(timeout 20 gdbus call --address "$ADDR" -d org.bitnetd.Daemon1 -o /org/bitnetd/Daemon1 \
	-m org.bitnetd.Daemon1.Manager.Generate "hi" "{'max_tokens': <uint32 3>, 'seed': <uint64 1>}") ||
	fail "gdbus Generate: $out"
echo "$out" | grep -q "/org/bitnetd/Daemon1/request/" || fail "Generate returned $out"
ok "gdbus Generate -> $out"

daemon_alive
stop_daemon
ok "SIGTERM: clean exit 0"
