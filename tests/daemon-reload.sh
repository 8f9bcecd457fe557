#!/bin/sh
# sd_notify lifecycle; SIGHUP during a generation lets it finish and the next request
# uses the newly configured plugin (or thread count); a failed reload keeps serving.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
# start on the slow scalar plugin so that a generation is still running at SIGHUP
scalar_config() { write_config "$T/bitnetd.conf" && sed -i 's|^\[engine\]|[engine]\nplugin = scalar|' "$T/bitnetd.conf"; }
scalar_config
start_bus

NOTIFY=
if [ -n "${PYTHON3:-}" ] || command -v python3 >/dev/null; then
	"${PYTHON3:-python3}" "$top_srcdir/tests/daemon-notify.py" "$T/notify.sock" "$T/notify.log" &
	NOTIFY=$!
	BG_PIDS=$NOTIFY
	for _ in $(seq 100); do [ -S "$T/notify.sock" ] && break; sleep 0.05; done
	export NOTIFY_SOCKET=$T/notify.sock
fi
start_daemon "$T/bitnetd.conf"
unset NOTIFY_SOCKET
if [ -n "$NOTIFY" ]; then
	for _ in $(seq 40); do grep -q READY=1 "$T/notify.log" && break; sleep 0.05; done
	grep -q "READY=1" "$T/notify.log" || fail "no READY=1: $(cat "$T/notify.log")"
	grep -q "STATUS=" "$T/notify.log" || fail "no STATUS= progress"
	ok "sd_notify READY=1"
fi

# the plugin to switch to: another usable one if there is one, else change the threads
cur=$(prop Kernel)
other=$(ctl kernels | awk '$1 != "*" && $2 == "usable" { print $1; exit }')
if [ -n "$other" ]; then
	write_config "$T/bitnetd.conf" && sed -i "s|^\[engine\]|[engine]\nplugin = $other|" "$T/bitnetd.conf"
	want_kernel=$other
else
	echo "NOTE: only one usable kernel plugin ($cur): reload switches the thread count instead"
	THREADS=2 scalar_config
	want_kernel=$cur
fi

# SIGHUP while a generation runs: it finishes normally with the old plugin
ctl generate --json --temperature 1 --seed 3 --max-tokens 450 "long one" > "$T/long.json" 2>&1 &
G=$!
sleep 0.2
kill -HUP "$DAEMON_PID"
wait $G || fail "the generation running during SIGHUP failed: $(cat "$T/long.json")"
grep -q '"reason":"\(length\|stop\)"' "$T/long.json" || fail "running generation did not finish: $(cat "$T/long.json")"
grep -q "\"kernel\":\"$cur\"" "$T/long.json" || fail "running generation changed kernel"
for _ in $(seq 100); do [ "$(prop State)" = ready ] && break; sleep 0.05; done
ctl generate --json --greedy --max-tokens 4 "after reload" > "$T/after.json" || fail "generate after reload"
grep -q "\"kernel\":\"$want_kernel\"" "$T/after.json" || fail "next request did not use $want_kernel: $(cat "$T/after.json")"
[ "$(prop Kernel)" = "$want_kernel" ] || fail "Kernel property is $(prop Kernel)"
[ -n "$other" ] || [ "$(prop Threads)" = 2 ] || fail "Threads property is $(prop Threads) after reload"
ok "SIGHUP: running request finished, next uses the new settings"
if [ -n "$NOTIFY" ]; then
	grep -q "RELOADING=1" "$T/notify.log" || fail "no RELOADING=1"
	grep -q "MONOTONIC_USEC=[0-9]" "$T/notify.log" || fail "no MONOTONIC_USEC"
	[ "$(grep -c READY=1 "$T/notify.log")" -ge 2 ] || fail "no READY=1 after reload"
	ok "sd_notify RELOADING=1 / MONOTONIC_USEC / READY=1"
fi

# a reload that fails keeps the old model serving and says why
cp "$MODEL" "$T/second.gguf"
MODEL=$T/missing.gguf write_config "$T/bitnetd.conf"
ctl reload 2>"$T/reload.err" && fail "reload with a missing model succeeded"
grep -q "missing.gguf" "$T/reload.err" || fail "reload error does not name the file: $(cat "$T/reload.err")"
prop LastReloadError | grep -q missing.gguf || fail "LastReloadError not set"
ctl generate --greedy --max-tokens 4 "still serving" > /dev/null || fail "not serving after a failed reload"
ok "failed reload: $(cat "$T/reload.err")"

# a reload with a changed model path loads the new model
MODEL=$T/second.gguf write_config "$T/bitnetd.conf"
ctl reload || fail "reload to a new model path"
prop Model | grep -q second.gguf || fail "Model property after reload: $(prop Model)"
[ -z "$(prop LastReloadError)" ] || fail "LastReloadError not cleared"
ctl generate --greedy --max-tokens 4 "new model" > /dev/null || fail "generate with the new model"
ok "reload to a new model path"

# a config error on reload: rejected, old settings kept
echo "[server]" >> "$T/bitnetd.conf"
echo "max_queue = lots" >> "$T/bitnetd.conf"
ctl reload 2>"$T/reload2.err" && fail "reload with a bad config succeeded"
grep -q max_queue "$T/reload2.err" || fail "bad config reload error: $(cat "$T/reload2.err")"
ok "bad config on reload rejected"

stop_daemon
if [ -n "$NOTIFY" ]; then
	grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1"
	kill "$NOTIFY"
	ok "sd_notify STOPPING=1"
fi
