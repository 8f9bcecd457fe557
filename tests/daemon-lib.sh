# Sourced by tests/daemon-*.sh: a private dbus-daemon whose configuration includes
# etc/org.bitnetd.Daemon1.conf, a tiny model, and bitnetd on that bus. Everything started
# here is stopped by the EXIT trap; every wait is bounded.

set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$(pwd)}"
BITNETD=$top_builddir/daemon/bitnetd
BITNETCTL=$top_builddir/client/bitnetctl
: "${BITNET:=$top_builddir/tools/bitnet}"

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
ok() { echo "ok: $*"; }

[ -x "$BITNETD" ] || fail "$BITNETD not built"
[ -x "$BITNETCTL" ] || fail "$BITNETCTL not built"
[ -x "$BITNET" ] || fail "$BITNET not built"

T=$(mktemp -d "${TMPDIR:-/tmp}/bitnetd-test.XXXXXX") || exit 1
chmod 755 "$T"
BUS_PID=
DAEMON_PID=
BG_PIDS=        # helpers a test started in the background
cleanup() {
	for p in $DAEMON_PID $BG_PIDS; do kill -KILL "$p" 2>/dev/null; done
	[ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
	for p in $DAEMON_PID $BG_PIDS $BUS_PID; do wait "$p" 2>/dev/null; done
	if [ -n "${KEEP_TEST_DIR:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

need_dbus() {
	command -v dbus-daemon >/dev/null 2>&1 || skip "dbus-daemon is not installed"
}

# A deterministic model: the tiny preset, made once per test, with context $1 (default 8192,
# so that a long generation outlasts the tests that interrupt one mid-stream).
make_model() {
	MODEL=$T/tiny.gguf
	"$BITNET" mkmodel --preset tiny --seed 1 --ctx "${1:-8192}" --out "$MODEL" >/dev/null 2>&1 ||
		fail "bitnet mkmodel failed"
}

PLUGIN_DIR=$top_builddir/plugins/.libs

# write_config FILE [extra lines...]: a config for the tiny model
write_config() {
	f=$1
	shift
	{
		echo "[model]"
		echo "path = $MODEL"
		echo "[engine]"
		echo "plugin_dir = $PLUGIN_DIR"
		echo "threads = ${THREADS:-1}"
		echo "[server]"
		echo "max_queue = ${MAX_QUEUE:-16}"
		for l in "$@"; do echo "$l"; done
	} > "$f"
}

start_bus() {
	need_dbus
	cat > "$T/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>bitnetd-test</type>
  <listen>unix:path=$T/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <include>$top_srcdir/etc/org.bitnetd.Daemon1.conf</include>
</busconfig>
EOF
	dbus-daemon --config-file="$T/bus.conf" --nofork --print-address=3 3>"$T/bus.addr" \
		2>"$T/bus.log" &
	BUS_PID=$!
	for _ in $(seq 100); do
		[ -s "$T/bus.addr" ] && break
		sleep 0.05
	done
	[ -s "$T/bus.addr" ] || fail "the private dbus-daemon did not start: $(cat "$T/bus.log")"
	ADDR=$(head -n1 "$T/bus.addr")
	chmod 666 "$T/bus" 2>/dev/null
	export DBUS_SESSION_BUS_ADDRESS=$ADDR
	export DBUS_SYSTEM_BUS_ADDRESS=$ADDR
}

ctl() { timeout 60 "$BITNETCTL" --address "$ADDR" "$@"; }

# start_daemon CONFIG: runs bitnetd on the private bus and waits for its name
start_daemon() {
	"$BITNETD" --address "$ADDR" --config "$1" 2>>"$T/daemon.log" &
	DAEMON_PID=$!
	for _ in $(seq 200); do
		if grep -q "ready on" "$T/daemon.log" 2>/dev/null; then return 0; fi
		kill -0 "$DAEMON_PID" 2>/dev/null || fail "bitnetd exited: $(cat "$T/daemon.log")"
		sleep 0.05
	done
	fail "bitnetd did not become ready in 10 s: $(cat "$T/daemon.log")"
}

stop_daemon() {
	kill -TERM "$DAEMON_PID"
	for _ in $(seq 100); do
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$DAEMON_PID" 2>/dev/null && fail "bitnetd did not stop within 5 s of SIGTERM"
	wait "$DAEMON_PID"
	rc=$?
	DAEMON_PID=
	[ "$rc" = 0 ] || fail "bitnetd exited $rc after SIGTERM"
}

# prop NAME: one Manager property through dbus-send (a client nobody here wrote)
prop() {
	dbus-send --bus="$ADDR" --print-reply=literal --dest=org.bitnetd.Daemon1 \
		/org/bitnetd/Daemon1 org.freedesktop.DBus.Properties.Get \
		string:org.bitnetd.Daemon1.Manager "string:$1" | sed 's/^ *variant *//; s/^ *[a-z0-9]* //'
}

daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null || fail "bitnetd died: $(tail -5 "$T/daemon.log")"; }
