#!/bin/sh
# bitnetctl believes only bitnetd. Anyone on the bus may send a signal addressed to a client
# (a destination bypasses match rules): forged Text, Finished and NameOwnerChanged sent to
# a running `bitnetctl generate` change nothing, and the real stream completes. A request
# that waits in the queue longer than bitnetctl's silence check is not given up on.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
# one slot on the scalar plugin: the victim's request waits behind a long one while the
# forgeries go in, so they reach it before any real text and before its real Finished
write_config "$T/bitnetd.conf" "slots = 1" && sed -i 's|^\[engine\]|[engine]\nplugin = scalar|' "$T/bitnetd.conf"
start_bus
start_daemon "$T/bitnetd.conf"

# the forger: another user where we can be one (as on a system bus), else another connection
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	NOBODY=$(id -u nobody 2>/dev/null || echo 65534)
	as_other() { timeout 20 setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$@"; }
	WHO="user $NOBODY"
else
	as_other() { timeout 20 "$@"; }
	WHO="another connection of this user"
fi

# wait_exit PID SECONDS: true once PID has exited (then reaped with its status in $rc)
wait_exit() {
	_n=$(($2 * 20))
	while kill -0 "$1" 2>/dev/null && [ $_n -gt 0 ]; do sleep 0.05; _n=$((_n - 1)); done
	kill -0 "$1" 2>/dev/null && return 1
	wait "$1"
	rc=$?
	return 0
}
bus() { dbus-send --bus="$ADDR" --print-reply=literal --dest=org.freedesktop.DBus / "$@"; }

P="The quick brown fox"
N=48
ctl generate --greedy --max-tokens $N "$P" > "$T/ref.out" || fail "reference generate"
[ -s "$T/ref.out" ] || fail "the reference generation is empty"

# the blocker holds the one slot (4000 tokens on scalar take many seconds)
"$BITNETCTL" --address "$ADDR" generate --greedy --max-tokens 4000 "blocker" > "$T/b.out" 2>&1 &
B=$!
BG_PIDS=$B
for _ in $(seq 200); do [ -s "$T/b.out" ] && break; sleep 0.05; done
[ -s "$T/b.out" ] || fail "the blocking request streams nothing"

"$BITNETCTL" --address "$ADDR" generate --greedy --max-tokens $N "$P" > "$T/v.out" 2> "$T/v.err" &
V=$!
BG_PIDS="$B $V"
for _ in $(seq 200); do [ "$(prop QueueDepth)" = 1 ] && break; sleep 0.05; done
[ "$(prop QueueDepth)" = 1 ] || fail "the victim's request is not queued"

# the victim's unique name (by its pid), its request (the newest object), the daemon's name
VNAME=
for n in $(bus org.freedesktop.DBus.ListNames | tr -s ' \n' '\n\n' | grep '^:'); do
	pid=$(bus org.freedesktop.DBus.GetConnectionUnixProcessID "string:$n" 2>/dev/null |
		awk '{ print $NF }')
	[ "$pid" = "$V" ] && VNAME=$n
done
[ -n "$VNAME" ] || fail "cannot find bitnetctl (pid $V) on the bus"
id=$(dbus-send --bus="$ADDR" --print-reply=literal --dest=org.bitnetd.Daemon1 \
	/org/bitnetd/Daemon1/request org.freedesktop.DBus.Introspectable.Introspect |
	grep -o 'node name="[0-9]*"' | grep -o '[0-9]*' | sort -n | tail -n1)
[ -n "$id" ] || fail "no request objects"
VPATH=/org/bitnetd/Daemon1/request/$id
DNAME=$(dbus-send --bus="$ADDR" --print-reply=literal --dest=org.freedesktop.DBus / \
	org.freedesktop.DBus.GetNameOwner string:org.bitnetd.Daemon1 | tr -d ' ')
echo "victim $VNAME, request $VPATH, bitnetd $DNAME; forging as $WHO"

# each forgery on its own would end or corrupt the stream of a client that trusts the path
forge() { as_other dbus-send --bus="$ADDR" --type=signal --dest="$VNAME" "$@" || fail "dbus-send $*"; }
forge "$VPATH" org.bitnetd.Daemon1.Request.Text string:FORGED-TEXT
forge /org/freedesktop/DBus org.freedesktop.DBus.NameOwnerChanged \
	string:org.bitnetd.Daemon1 "string:$DNAME" string:
forge "$VPATH" org.bitnetd.Daemon1.Request.Finished string:stop dict:string:string:
forge "$VPATH" org.bitnetd.Daemon1.Request.Text string:FORGED-AFTER-FINISHED

# queued, silent, for longer than bitnetctl's 5 s silence check: still waiting
sleep 6
if ! kill -0 "$V" 2>/dev/null; then
	wait "$V"
	fail "bitnetctl ended (exit $?) while its request was queued; stdout: $(cat "$T/v.out"); stderr: $(cat "$T/v.err")"
fi
grep -q FORGED "$T/v.out" && fail "bitnetctl printed forged text: $(cat "$T/v.out")"
ok "forged Text, NameOwnerChanged and Finished ignored; a request queued 6 s is waited for"

kill -INT "$B"
wait_exit "$B" 20 || fail "the blocker did not end on Ctrl-C"
[ "$rc" = 130 ] || fail "the blocker exited $rc after Ctrl-C"
wait_exit "$V" 60 || fail "the victim's real stream did not finish in 60 s"
BG_PIDS=
[ "$rc" = 0 ] || fail "the victim exited $rc: $(cat "$T/v.err")"
grep -q FORGED "$T/v.out" && fail "bitnetctl printed forged text: $(cat "$T/v.out")"
cmp "$T/ref.out" "$T/v.out" || fail "the victim's text differs from the same request unforged"
grep -q "ignoring a .* signal from :" "$T/v.err" || fail "no word about the forged signals: $(cat "$T/v.err")"
ok "the real stream completed, equal to the same request unforged; stderr: $(cat "$T/v.err")"

daemon_alive
stop_daemon
