#!/bin/sh
# slots = 1 behaves as the one-request daemon did: max_queue = 2 with six concurrent
# clients, the extra ones get Busy at once, the rest complete; a client killed mid-stream
# has its request cancelled and counted. (tests/daemon-slots.sh covers several slots.)
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
MAX_QUEUE=2
# the scalar plugin is slow enough (hundreds of tokens per second on the tiny model) that
# all six clients are in before the first request finishes; SIMD plugins are not
write_config "$T/bitnetd.conf" "slots = 1" && sed -i 's|^\[engine\]|[engine]\nplugin = scalar|' "$T/bitnetd.conf"
start_bus
start_daemon "$T/bitnetd.conf"

# long enough that all six are in before the first finishes (the tiny model runs
# hundreds of tokens per second, so 400 tokens take the better part of a second)
for i in 1 2 3 4 5 6; do
	(
		s=$(date +%s%N)
		ctl generate --temperature 1 --seed $i --max-tokens 400 "client $i" > "$T/c$i.out" 2> "$T/c$i.err"
		echo $? > "$T/c$i.rc"
		echo $(( ($(date +%s%N) - s) / 1000000 )) > "$T/c$i.ms"
	) &
	CLIENTS="${CLIENTS:-} $!"
done
BG_PIDS=$CLIENTS
for p in $CLIENTS; do wait "$p"; done
BG_PIDS=
busy=0 done=0
for i in 1 2 3 4 5 6; do
	rc=$(cat "$T/c$i.rc")
	case $rc in
	0) done=$((done + 1)) ;;
	4) busy=$((busy + 1))
	   # queued + running = slots + max_queue (how they split depends on whether the
	   # generation thread has admitted the first one yet)
	   q=$(sed -n 's/.*daemon busy: \([0-9]*\) requests queued (max_queue 2), \([0-9]*\) of 1 slots running.*/\1 \2/p' "$T/c$i.err")
	   [ -n "$q" ] && [ $(( ${q% *} + ${q#* } )) = 3 ] || fail "Busy message: $(cat "$T/c$i.err")"
	   [ "$(cat "$T/c$i.ms")" -lt 2000 ] || fail "Busy took $(cat "$T/c$i.ms") ms"
	   ;;
	*) fail "client $i exited $rc: $(cat "$T/c$i.err")" ;;
	esac
done
echo "completed $done, busy $busy"
[ $done -ge 3 ] || fail "only $done clients completed"
[ $busy -ge 1 ] || fail "no client got Busy with max_queue = 2"
[ $((done + busy)) = 6 ] || fail "lost clients"
[ "$(prop RequestsRejected)" = "$busy" ] || fail "RequestsRejected is $(prop RequestsRejected), expected $busy"
ok "queue: $done completed, $busy answered Busy"

# a client killed mid-stream: its request is cancelled and counted. Greedy, so that the
# generation is the same long one every time (thousands of tokens before EOS on this model)
# rather than a random one that may end before the signal.
before=$(prop RequestsCancelled)
"$BITNETCTL" --address "$ADDR" generate --max-tokens 4000 --greedy "killed" > "$T/k.out" 2>&1 &
K=$!
for _ in $(seq 100); do [ -s "$T/k.out" ] && break; sleep 0.05; done
[ -s "$T/k.out" ] || fail "the doomed client got no text"
kill -KILL $K
wait $K 2>/dev/null
for _ in $(seq 100); do
	[ "$(prop RequestsCancelled)" -gt "$before" ] && break
	sleep 0.05
done
[ "$(prop RequestsCancelled)" -gt "$before" ] || fail "killed client's request not cancelled"
[ "$(prop ActiveRequests)" = 0 ] || fail "a request is still running"
ok "killed client: request cancelled"

# Ctrl-C on bitnetctl cancels on the daemon and exits 130
"$BITNETCTL" --address "$ADDR" generate --max-tokens 4000 --greedy "interrupted" > "$T/i.out" 2>&1 &
I=$!
for _ in $(seq 100); do [ -s "$T/i.out" ] && break; sleep 0.05; done
kill -INT $I
wait $I
rc=$?
[ $rc = 130 ] || fail "bitnetctl after SIGINT exited $rc"
ok "Ctrl-C: exit 130"

ctl generate --greedy --max-tokens 8 "next" > /dev/null || fail "the next request was not served"
ok "next request served"
stop_daemon
