#!/bin/sh
# A stream whose end never arrives must still end. A bus drops the messages for a reader
# too slow for them (here: bitnetctl stopped with SIGSTOP while the bus may queue only
# 4 KiB for it), and the Finished signal with them; bitnetctl, finding the request object
# gone after 5 s without a signal, ends with a message instead of waiting forever.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
write_config "$T/bitnetd.conf" "slots = 1"
start_bus
# the real limit is 127 MiB; with 4 KiB, a connection whose socket is full loses messages
sed -i 's|<auth>EXTERNAL</auth>|&\n  <limit name="max_outgoing_bytes">4096</limit>|' "$T/bus.conf"
dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus / \
	org.freedesktop.DBus.ReloadConfig >/dev/null || fail "the bus did not reload its configuration"
start_daemon "$T/bitnetd.conf"

"$BITNETCTL" --address "$ADDR" generate --greedy --max-tokens 4096 "The quick brown fox" \
	> "$T/v.out" 2> "$T/v.err" &
V=$!
BG_PIDS=$V
for _ in $(seq 200); do [ -s "$T/v.out" ] && break; sleep 0.01; done
[ -s "$T/v.out" ] || fail "the generation streams nothing: $(cat "$T/v.err")"
kill -STOP "$V"
# the request runs to its end while its client reads nothing
for _ in $(seq 600); do
	[ "$(prop ActiveRequests)" = 0 ] && [ "$(prop QueueDepth)" = 0 ] && break
	sleep 0.1
done
[ "$(prop ActiveRequests)" = 0 ] || fail "the request did not finish in 60 s"
sleep 0.2
if ! grep -q 'Rejected: destination has a full message queue.*member="Finished"' "$T/bus.log"; then
	kill -CONT "$V"
	wait "$V"
	skip "the kernel buffered the whole stream for the stopped client: no Finished was dropped"
fi
ok "the bus dropped the Finished signal ($(grep -c 'full message queue' "$T/bus.log") messages dropped)"
kill -CONT "$V"
s=$(date +%s)
n=300
while kill -0 "$V" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
kill -0 "$V" 2>/dev/null && fail "bitnetctl still waits 30 s after its request ended without a Finished"
wait "$V"
rc=$?
BG_PIDS=
[ "$rc" = 1 ] || fail "bitnetctl exited $rc (expected 1): $(cat "$T/v.err")"
grep -q "Finished signal never arrived" "$T/v.err" || fail "no explanation: '$(cat "$T/v.err")'"
ok "ended after $(($(date +%s) - s)) s with exit 1: $(cat "$T/v.err")"
daemon_alive
stop_daemon
