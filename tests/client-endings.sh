#!/bin/sh
# Every way bitnetctl ends says why on stderr: the daemon stopped (SIGTERM) or vanished
# (SIGKILL) mid-generation; a prompt from standard input with a NUL byte is refused, naming
# the byte's offset, rather than silently cut there; a read error on standard input too.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
# scalar: slow enough that a long generation is still running when the daemon is stopped
write_config "$T/bitnetd.conf" && sed -i 's|^\[engine\]|[engine]\nplugin = scalar|' "$T/bitnetd.conf"
start_bus
start_daemon "$T/bitnetd.conf"

# wait_exit PID SECONDS: true once PID has exited (then reaped with its status in $rc)
wait_exit() {
	_n=$(($2 * 20))
	while kill -0 "$1" 2>/dev/null && [ $_n -gt 0 ]; do sleep 0.05; _n=$((_n - 1)); done
	kill -0 "$1" 2>/dev/null && return 1
	wait "$1"
	rc=$?
	return 0
}

# 1. NUL bytes in the text: refused (exit 5, as invalid UTF-8 is) with the offset
served=$(prop RequestsServed)
printf 'abc\000def' | ctl generate --max-tokens 4 - > "$T/nul.out" 2> "$T/nul.err"
rc=$?
[ "$rc" = 5 ] || fail "generate - with a NUL byte exited $rc: $(cat "$T/nul.err")"
grep -q "NUL byte at offset 3" "$T/nul.err" || fail "generate - with a NUL byte: $(cat "$T/nul.err")"
[ -s "$T/nul.out" ] && fail "generate - with a NUL byte printed: $(cat "$T/nul.out")"
printf '\000' | ctl generate - 2> "$T/nul.err" >/dev/null
rc=$?
[ "$rc" = 5 ] && grep -q "offset 0" "$T/nul.err" || fail "a lone NUL: exit $rc: $(cat "$T/nul.err")"
printf 'hello world\000' | ctl tokenize - > "$T/nul.out" 2> "$T/nul.err"
rc=$?
[ "$rc" = 5 ] && grep -q "NUL byte at offset 11" "$T/nul.err" ||
	fail "tokenize - with a NUL byte: exit $rc: $(cat "$T/nul.err")"
printf 'hi\000there\n/exit\n' | ctl chat --max-tokens 2 > "$T/nul.out" 2> "$T/nul.err" ||
	fail "interactive chat with a NUL byte in a line exited $?: $(cat "$T/nul.err")"
grep -q "that line has a NUL byte at offset 2" "$T/nul.err" || fail "chat: $(cat "$T/nul.err")"
[ "$(prop RequestsServed)" = "$served" ] || fail "a prompt with a NUL byte reached the daemon"
ok "a NUL byte in the text is refused with its offset (generate, tokenize, chat)"

# a read error is not the end of the prompt (a directory reads as EISDIR)
ctl generate - < "$T" > /dev/null 2> "$T/rd.err"
rc=$?
[ "$rc" != 0 ] && grep -q "cannot read standard input" "$T/rd.err" ||
	fail "generate - reading a directory: exit $rc: $(cat "$T/rd.err")"
ok "a read error on standard input: $(cat "$T/rd.err")"

# 2. SIGTERM to bitnetd mid-generation: it cancels the request and leaves; the client says so
"$BITNETCTL" --address "$ADDR" generate --greedy --max-tokens 4000 "stopped" > "$T/t.out" 2> "$T/t.err" &
C=$!
BG_PIDS=$C
for _ in $(seq 200); do [ -s "$T/t.out" ] && break; sleep 0.05; done
[ -s "$T/t.out" ] || fail "the long generation streams nothing: $(cat "$T/t.err")"
stop_daemon
wait_exit "$C" 20 || fail "bitnetctl still runs 20 s after bitnetd stopped"
BG_PIDS=
[ "$rc" = 3 ] || fail "bitnetctl exited $rc after bitnetd stopped (expected 3): stderr: '$(cat "$T/t.err")'"
[ -s "$T/t.err" ] || fail "bitnetctl exited $rc without a word after bitnetd stopped"
grep -Eq "bitnetd (is stopping|left the bus)" "$T/t.err" || fail "after SIGTERM: $(cat "$T/t.err")"
ok "SIGTERM to bitnetd: exit 3, $(cat "$T/t.err")"

# 3. bitnetd killed mid-generation: no Finished at all, the bus's NameOwnerChanged ends it
mv "$T/daemon.log" "$T/daemon-1.log"   # start_daemon waits for "ready on" in a fresh log
start_daemon "$T/bitnetd.conf"
"$BITNETCTL" --address "$ADDR" generate --greedy --max-tokens 4000 "killed" > "$T/k.out" 2> "$T/k.err" &
C=$!
BG_PIDS=$C
for _ in $(seq 200); do [ -s "$T/k.out" ] && break; sleep 0.05; done
[ -s "$T/k.out" ] || fail "the long generation streams nothing: $(cat "$T/k.err")"
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
wait_exit "$C" 20 || fail "bitnetctl still runs 20 s after bitnetd was killed"
BG_PIDS=
[ "$rc" = 3 ] || fail "bitnetctl exited $rc after bitnetd was killed: $(cat "$T/k.err")"
grep -q "bitnetd left the bus before the request finished" "$T/k.err" ||
	fail "after SIGKILL: '$(cat "$T/k.err")'"
ok "SIGKILL to bitnetd: exit 3, $(cat "$T/k.err")"
