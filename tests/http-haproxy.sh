#!/bin/sh
# Scale-out: two HTTP-only instances (bitnetd --no-bus, as bitnetd@.service runs them) behind
# HAProxy with /health checks. Requests spread over both; with one stopped, every new request
# still succeeds. Skipped where haproxy is not installed.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
command -v haproxy >/dev/null || skip "haproxy is not installed"
command -v curl >/dev/null || skip "curl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
make_model
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PA=$(free_port) PB=$(free_port) PF=$(free_port)

# --no-bus without [http] listen has nothing to serve
write_config "$T/none.conf"
"$BITNETD" --no-bus --config "$T/none.conf" > "$T/none.log" 2>&1 && fail "--no-bus without [http] listen started"
grep -q "no \[http\] listen" "$T/none.log" || fail "no reason: $(cat "$T/none.log")"
ok "--no-bus needs [http] listen"

start_instance() {   # NAME PORT
	write_config "$T/$1.conf" "[http]" "listen = 127.0.0.1:$2"
	"$BITNETD" --no-bus --config "$T/$1.conf" 2> "$T/$1.log" &
	eval "PID_$1=$!"
	BG_PIDS="$BG_PIDS $!"
	for _ in $(seq 200); do
		grep -q "ready on no bus" "$T/$1.log" && return 0
		sleep 0.05
	done
	fail "instance $1 did not start: $(cat "$T/$1.log")"
}
start_instance a "$PA"
start_instance b "$PB"
ok "two HTTP-only instances on ports $PA and $PB"

cat > "$T/haproxy.cfg" <<CFG
global
	maxconn 64
defaults
	mode http
	timeout connect 2s
	timeout client 30s
	timeout server 30s
	retries 3
	option redispatch
frontend fe
	bind 127.0.0.1:$PF
	default_backend bitnetd
backend bitnetd
	balance roundrobin
	option httpchk GET /health
	http-check expect status 200
	default-server inter 200ms fall 1 rise 1
	server a 127.0.0.1:$PA check
	server b 127.0.0.1:$PB check
CFG
haproxy -f "$T/haproxy.cfg" -db > "$T/haproxy.log" 2>&1 &
BG_PIDS="$BG_PIDS $!"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PF/health" && break; sleep 0.05; done

served() { curl -s "http://127.0.0.1:$1/metrics" | sed -n 's/^bitnetd_requests_total{outcome="served"} //p'; }
complete() {   # N: N completions through HAProxy, each must answer 200
	i=0
	while [ $i -lt "$1" ]; do
		code=$(curl -s -o "$T/out" -w '%{http_code}' --data-binary \
			"{\"prompt\": \"balanced $i\", \"max_tokens\": 8}" "http://127.0.0.1:$PF/v1/completions")
		[ "$code" = 200 ] || fail "request $i through HAProxy: $code $(cat "$T/out")"
		i=$((i + 1))
	done
}
complete 8
a=$(served "$PA") b=$(served "$PB")
[ "$a" -ge 2 ] && [ "$b" -ge 2 ] || fail "requests did not spread: a served $a, b served $b"
ok "8 requests spread over both instances (a $a, b $b)"

kill -TERM "$PID_a"
wait "$PID_a"
complete 8
b2=$(served "$PB")
[ "$b2" -ge $((b + 8)) ] || fail "after stopping a, b served $b2 (was $b)"
ok "instance a stopped: 8 more requests all answered (by b: $b -> $b2)"
