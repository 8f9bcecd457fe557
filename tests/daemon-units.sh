#!/bin/sh
# System integration files: the unit passes systemd-analyze verify, the policy and the
# interface XML are well-formed, the interface file matches the daemon's tables.
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$(pwd)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/bitnetd-units.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
UNIT=$top_builddir/etc/bitnetd.service
[ -f "$UNIT" ] || fail "$UNIT not generated"
grep -q '^Type=notify' "$UNIT" || fail "unit is not Type=notify"
grep -q '^ExecStart=/' "$UNIT" || fail "ExecStart not substituted"
grep -q '@[a-z_]*@' "$UNIT" && fail "unsubstituted @VAR@ in the unit"
for k in BusName=org.bitnetd.Daemon1 User=bitnetd ProtectSystem=strict ProtectHome=yes \
	PrivateTmp=yes PrivateDevices=yes NoNewPrivileges=yes RestrictAddressFamilies=AF_UNIX \
	MemoryDenyWriteExecute=yes SystemCallFilter=@system-service LockPersonality=yes ExecReload=; do
	grep -q "^$k" "$UNIT" || fail "unit lacks $k"
done
echo "ok: unit settings"
if command -v systemd-analyze >/dev/null 2>&1; then
	# verify against a copy whose ExecStart exists on this machine
	sed "s|^ExecStart=[^ ]*|ExecStart=$top_builddir/daemon/bitnetd|" "$UNIT" > "$T/bitnetd.service"
	out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$T/bitnetd.service" 2>&1)
	# missing dbus.socket on a container without systemd running is not the unit's fault
	bad=$(echo "$out" | grep -v -e 'dbus.socket' -e 'Failed to prepare' -e '^$' -e 'not running' \
		-e 'Unit .* not found' -e 'Failed to connect' || true)
	[ -z "$bad" ] || fail "systemd-analyze verify: $out"
	echo "ok: systemd-analyze verify"
else
	echo "NOTE: systemd-analyze not installed: unit not verified"
fi
if command -v xmllint >/dev/null 2>&1; then
	xmllint --noout "$top_srcdir/etc/org.bitnetd.Daemon1.conf" || fail "policy XML"
	xmllint --noout "$top_builddir/daemon/org.bitnetd.Daemon1.xml" || fail "interface XML"
	echo "ok: XML well-formed"
elif [ -n "${PYTHON3:-}" ]; then
	for f in "$top_srcdir/etc/org.bitnetd.Daemon1.conf" "$top_builddir/daemon/org.bitnetd.Daemon1.xml"; do
		"$PYTHON3" -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$f" || fail "$f is not well-formed"
	done
	echo "ok: XML well-formed"
fi
"$top_builddir/daemon/bitnetd" --introspect | cmp -s - "$top_builddir/daemon/org.bitnetd.Daemon1.xml" ||
	fail "installed interface XML differs from the daemon's tables"
grep -q 'SystemdService=bitnetd.service' "$top_srcdir/etc/org.bitnetd.Daemon1.service" || fail "activation file"
# the HTTP-only instance template: --no-bus, its own config, the network for HTTP
IUNIT=$top_builddir/etc/bitnetd@.service
[ -f "$IUNIT" ] || fail "$IUNIT not generated"
grep -q '@[a-z_]*@' "$IUNIT" && fail "unsubstituted @VAR@ in the instance unit"
for k in Type=notify 'ExecStart=/.* --no-bus --config .*/%i.conf' User=bitnetd ProtectSystem=strict \
	'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' NoNewPrivileges=yes; do
	grep -q "^$k" "$IUNIT" || fail "instance unit lacks $k"
done
grep -q '^BusName=' "$IUNIT" && fail "the instance unit takes the bus name"
if command -v systemd-analyze >/dev/null 2>&1; then
	sed "s|^ExecStart=[^ ]*|ExecStart=$top_builddir/daemon/bitnetd|" "$IUNIT" > "$T/bitnetd@.service"
	cp "$T/bitnetd@.service" "$T/bitnetd@node0.service"
	out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$T/bitnetd@node0.service" 2>&1)
	bad=$(echo "$out" | grep -v -e 'Failed to prepare' -e '^$' -e 'not running' -e 'Unit .* not found' \
		-e 'Failed to connect' -e 'network.target' || true)
	[ -z "$bad" ] || fail "systemd-analyze verify (instance): $out"
fi
echo "ok: instance unit bitnetd@.service"
# the HTTP socket of bitnetd.service
grep -q '^ListenStream=127.0.0.1:8080' "$top_srcdir/etc/bitnetd.socket" || fail "bitnetd.socket lacks its ListenStream"
if command -v systemd-analyze >/dev/null 2>&1; then
	cp "$top_srcdir/etc/bitnetd.socket" "$T/bitnetd.socket"
	out=$(cd "$T" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$T/bitnetd.socket" 2>&1)
	bad=$(echo "$out" | grep -v -e 'dbus.socket' -e 'Failed to prepare' -e '^$' -e 'not running' \
		-e 'Unit .* not found' -e 'Failed to connect' || true)
	[ -z "$bad" ] || fail "systemd-analyze verify (socket): $out"
fi
echo "ok: bitnetd.socket"
grep -q '^u bitnetd' "$top_srcdir/etc/sysusers.d/bitnetd.conf" || fail "sysusers: user"
grep -q '^g bitnet' "$top_srcdir/etc/sysusers.d/bitnetd.conf" || fail "sysusers: group"
bash -n "$top_srcdir/etc/completion/bitnetctl" && bash -n "$top_srcdir/etc/completion/bitnet" || fail "completion syntax"
echo "ok: activation, sysusers, completion"
