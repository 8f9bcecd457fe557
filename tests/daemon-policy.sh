#!/bin/sh
# The system bus policy: a caller outside group bitnet is refused; root may do everything.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
[ "$(id -u)" = 0 ] || skip "needs root to run a client as another user (setpriv)"
command -v setpriv >/dev/null || skip "setpriv is not installed"
make_model
write_config "$T/bitnetd.conf"
start_bus
start_daemon "$T/bitnetd.conf"

# a uid/gid outside group bitnet
NOBODY=$(id -u nobody 2>/dev/null || echo 65534)
as_nobody() { timeout 20 setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$@"; }
for m in "org.bitnetd.Daemon1.Manager.Generate string:hi dict:string:string:" \
         "org.bitnetd.Daemon1.Manager.Reload" \
         "org.freedesktop.DBus.Properties.GetAll string:org.bitnetd.Daemon1.Manager"; do
	set -- $m
	out=$(as_nobody dbus-send --bus="$ADDR" --print-reply --dest=org.bitnetd.Daemon1 \
		/org/bitnetd/Daemon1 "$@" 2>&1) && fail "nobody could call $1: $out"
	echo "$out" | grep -q AccessDenied || fail "nobody calling $1: $out"
	ok "nobody: $1 refused"
done
# owning the name is refused too
out=$(as_nobody dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus / \
	org.freedesktop.DBus.RequestName string:org.bitnetd.Daemon1 uint32:4 2>&1) && fail "nobody owns the name"
echo "$out" | grep -q AccessDenied || fail "RequestName by nobody: $out"
ok "nobody cannot own the name"

# members of group bitnet (when the group exists on this system)
if getent group bitnet >/dev/null; then
	G=$(getent group bitnet | cut -d: -f3)
	as_bitnet() { timeout 20 setpriv --reuid="$NOBODY" --regid="$NOBODY" --groups="$G" "$@"; }
	as_bitnet "$BITNETCTL" --address "$ADDR" generate --max-tokens 3 hi >/dev/null ||
		fail "a member of group bitnet cannot generate"
	out=$(as_bitnet "$BITNETCTL" --address "$ADDR" reload 2>&1)
	[ $? = 6 ] || fail "a member of bitnet could reload: $out"
	ok "group bitnet: generate allowed, reload refused"
else
	echo "NOTE: no group bitnet on this system: the group's rules are not exercised"
fi
# root: everything
ctl reload || fail "root cannot reload"
stop_daemon
ok "root may reload"
