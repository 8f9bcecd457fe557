#!/bin/sh
# The OpenAI-compatible HTTP front door: models, health, a completion equal to bitnet run
# --greedy, a streamed chat equal to the same chat unstreamed, errors as OpenAI-style JSON
# (401, 400, 413, 404, 405), parallel requests, a client dropped mid-stream cancels, the
# /metrics text, and the official `openai` npm client where npm can fetch it.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
command -v curl >/dev/null || skip "curl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
make_model
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
echo "sk-test-one" > "$T/keys"
printf '# comment\nsk-test-two\n' >> "$T/keys"
write_config "$T/bitnetd.conf" "max_tokens_limit = 4000" "max_tokens = 16" "[http]" \
	"listen = 127.0.0.1:$PORT" "api_key_file = $T/keys" "max_body_bytes = 4096"
start_bus
start_daemon "$T/bitnetd.conf"
grep -q "http: listening on 127.0.0.1:$PORT (API keys required)" "$T/daemon.log" || fail "no listen line: $(cat "$T/daemon.log")"

AUTH="Authorization: Bearer sk-test-two"
# req METHOD PATH [BODY]: the body to $T/r, the status on stdout
req() {
	if [ $# -ge 3 ]; then
		curl -s -o "$T/r" -w '%{http_code}' -X "$1" -H "$AUTH" -H 'Content-Type: application/json' \
			--data-binary "$3" "$URL$2"
	else
		curl -s -o "$T/r" -w '%{http_code}' -X "$1" -H "$AUTH" "$URL$2"
	fi
}
jget() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/r" "$1"; }

[ "$(req GET /health)" = 200 ] && [ "$(jget 'd["status"]')" = ok ] || fail "/health: $(cat "$T/r")"
[ "$(req GET /v1/models)" = 200 ] && [ "$(jget 'd["data"][0]["id"]')" = tiny.gguf ] || fail "/v1/models: $(cat "$T/r")"
ok "/health and /v1/models"

# a completion equals bitnet run --greedy --template raw
P="The quick brown fox"
[ "$(req POST /v1/completions "{\"model\": \"tiny.gguf\", \"prompt\": \"$P\", \"max_tokens\": 24, \"temperature\": 0}")" = 200 ] ||
	fail "completion: $(cat "$T/r")"
jget 'd["choices"][0]["text"]' > "$T/http.out"
timeout 60 "$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --threads 1 --greedy --template raw \
	--max-tokens 24 --prompt "$P" > "$T/run.out" 2>/dev/null || fail "bitnet run"
cmp "$T/http.out" "$T/run.out" || fail "completion differs from bitnet run: '$(cat "$T/http.out")' vs '$(cat "$T/run.out")'"
[ "$(jget 'd["usage"]["completion_tokens"]')" = 24 ] && [ "$(jget 'd["choices"][0]["finish_reason"]')" = length ] &&
	[ "$(jget 'd["object"]')" = text_completion ] || fail "completion fields: $(cat "$T/r")"
ok "a completion equals bitnet run --greedy, with usage and finish_reason"

# a streamed chat is the same text as the unstreamed one, ends with [DONE], usage on request
CHAT='"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello"}]}], "max_tokens": 20, "temperature": 0'
[ "$(req POST /v1/chat/completions "{$CHAT}")" = 200 ] || fail "chat: $(cat "$T/r")"
jget 'd["choices"][0]["message"]["content"]' > "$T/chat.whole"
[ "$(jget 'd["choices"][0]["message"]["role"]')" = assistant ] || fail "chat role: $(cat "$T/r")"
curl -sN -H "$AUTH" --data-binary "{$CHAT, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" \
	"$URL/v1/chat/completions" > "$T/sse" || fail "streamed chat"
python3 - "$T/sse" > "$T/chat.streamed" <<'PY' || fail "SSE: $(cat "$T/sse")"
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert events[-1] == "[DONE]", events[-1]
chunks = [json.loads(e) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
assert chunks[-1]["usage"]["completion_tokens"] == 20 and chunks[-1]["choices"] == []
assert chunks[-2]["choices"][0]["finish_reason"] == "length"
print("".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]))
PY
cmp "$T/chat.whole" "$T/chat.streamed" || fail "streamed chat differs: '$(cat "$T/chat.streamed")' vs '$(cat "$T/chat.whole")'"
ok "a streamed chat (SSE, [DONE], usage) has the unstreamed text"

# errors: OpenAI-style JSON with the right status
code=$(curl -s -o "$T/r" -w '%{http_code}' -H "Authorization: Bearer sk-wrong" "$URL/v1/models")
[ "$code" = 401 ] && [ "$(jget 'd["error"]["type"]')" = authentication_error ] || fail "wrong key: $code $(cat "$T/r")"
code=$(curl -s -o "$T/r" -w '%{http_code}' "$URL/v1/models")
[ "$code" = 401 ] || fail "no key: $code"
[ "$(req POST /v1/completions '{"prompt": "x",')" = 400 ] && [ "$(jget 'd["error"]["code"]')" = invalid_json ] ||
	fail "malformed JSON: $(cat "$T/r")"
[ "$(req POST /v1/completions '{"prompt": "x", "temperature": 9000}')" = 400 ] &&
	jget 'd["error"]["message"]' | grep -q temperature || fail "bad temperature: $(cat "$T/r")"
[ "$(req POST /v1/completions '{"prompt": "x", "n": 2}')" = 400 ] || fail "n = 2: $(cat "$T/r")"
[ "$(req POST /v1/chat/completions '{"messages": [{"role": "wizard", "content": "x"}]}')" = 400 ] &&
	jget 'd["error"]["message"]' | grep -q "role 'wizard'" || fail "bad role: $(cat "$T/r")"
big=$(python3 -c 'print("{\"prompt\": \"" + "a" * 5000 + "\"}")')
[ "$(req POST /v1/completions "$big")" = 413 ] || fail "oversized body: $(cat "$T/r")"
[ "$(req GET /v1/nothing)" = 404 ] || fail "unknown route: $(cat "$T/r")"
[ "$(req GET /v1/completions)" = 405 ] || fail "GET a completion: $(cat "$T/r")"
daemon_alive
ok "401 (wrong or no key), 400 (JSON, values, n, role), 413, 404, 405 as JSON errors"

# four at once
for i in 1 2 3 4; do
	curl -s -o "$T/p$i" -w '%{http_code}' -H "$AUTH" --data-binary \
		"{\"prompt\": \"parallel $i\", \"max_tokens\": 32, \"seed\": $i}" "$URL/v1/completions" > "$T/p$i.code" &
	BG_PIDS="$BG_PIDS $!"
done
for p in $BG_PIDS; do wait "$p"; done
BG_PIDS=
for i in 1 2 3 4; do
	[ "$(cat "$T/p$i.code")" = 200 ] || fail "parallel request $i: $(cat "$T/p$i.code") $(cat "$T/p$i")"
done
ok "four parallel completions"

# a client that goes away mid-stream cancels its request
c0=$(prop RequestsCancelled)
python3 - "$PORT" > "$T/dropped" <<'PY' || fail "the dropping client"
import socket, sys
body = b'{"prompt": "go on", "max_tokens": 4000, "temperature": 0, "stream": true}'
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test-one\r\n"
          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
got = b""
while b"data: " not in got:   # the first event, then hang up
    got += s.recv(4096)
s.close()
print(len(got))
PY
for _ in $(seq 100); do [ "$(prop RequestsCancelled)" -gt "$c0" ] && break; sleep 0.05; done
[ "$(prop RequestsCancelled)" -gt "$c0" ] || fail "a dropped stream was not cancelled"
ok "a client dropped mid-stream cancels its request"

# /metrics: the Prometheus text format
[ "$(req GET /metrics)" = 200 ] || fail "/metrics"
grep -q '^bitnetd_requests_total{outcome="served"} [1-9]' "$T/r" || fail "metrics: no served count: $(head -20 "$T/r")"
grep -q '^bitnetd_requests_total{outcome="cancelled"} [1-9]' "$T/r" || fail "metrics: no cancelled count"
grep -q '^bitnetd_time_to_first_token_seconds_bucket{le="+Inf"} [1-9]' "$T/r" || fail "metrics: no TTFT histogram"
grep -q '^bitnetd_http_responses_total{code="401"} [1-9]' "$T/r" || fail "metrics: no 401 count"
awk '/^#/ || /^$/ { next } !/^bitnetd_[a-z_]+(\{[a-z_]+="[^"]*"\})? [0-9.e+-]+$/ { print; bad = 1 } END { exit bad }' "$T/r" ||
	fail "metrics lines not in the text format"
if command -v promtool >/dev/null; then
	promtool check metrics < "$T/r" || fail "promtool check metrics"
	ok "promtool check metrics"
fi
ok "/metrics in the Prometheus text format"

# the official openai client (npm), when it can be fetched
OAI=$top_builddir/tests/openai
if [ ! -d "$OAI/node_modules/openai" ] && command -v npm >/dev/null; then
	mkdir -p "$OAI"
	timeout 180 npm install --silent --no-audit --no-fund --prefix "$OAI" openai@4 >/dev/null 2>&1 ||
		echo "note: npm could not fetch the openai client"
fi
if [ -d "$OAI/node_modules/openai" ] && command -v node >/dev/null; then
	NODE_PATH=$OAI/node_modules timeout 60 node "$top_srcdir/tests/http-openai.js" "$URL/v1" sk-test-one > "$T/oai" 2>&1 ||
		fail "openai client: $(cat "$T/oai")"
	cat "$T/oai"
	ok "the openai npm client: models, completion, streamed chat, error"
else
	echo "note: the openai npm client is not available; its part is skipped"
fi
# random, truncated and malformed requests: answers or clean closes, the daemon stays up
python3 "$top_srcdir/tests/http-hostile.py" "$PORT" sk-test-one 1 ${HTTP_FUZZ_COUNT:-300} || fail "hostile requests"
daemon_alive
[ "$(req GET /health)" = 200 ] || fail "/health after the hostile requests"
ok "hostile HTTP requests: the daemon answers on"
stop_daemon

# a socket passed by systemd (bitnetd.socket): no [http] listen needed, and the first
# connection waits in the socket's backlog until the model is loaded
if command -v systemd-socket-activate >/dev/null; then
	P2=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	write_config "$T/sa.conf"
	systemd-socket-activate -l "127.0.0.1:$P2" "$BITNETD" --address "$ADDR" --config "$T/sa.conf" \
		2> "$T/sa.log" &
	SA=$!
	BG_PIDS="$BG_PIDS $SA"
	sleep 0.2
	code=$(curl -s -o "$T/r" -w '%{http_code}' --max-time 30 "http://127.0.0.1:$P2/health")
	[ "$code" = 200 ] || fail "socket-activated /health: $code $(cat "$T/sa.log")"
	grep -q "http: listening on a socket systemd passed (fd 3)" "$T/sa.log" || fail "no passed-socket line: $(cat "$T/sa.log")"
	code=$(curl -s -o "$T/r" -w '%{http_code}' --data-binary '{"prompt": "x", "max_tokens": 2}' "http://127.0.0.1:$P2/v1/completions")
	[ "$code" = 200 ] || fail "socket-activated completion: $code $(cat "$T/r")"
	kill -TERM "$SA"
	wait "$SA"
	ok "a socket passed by systemd (systemd-socket-activate) serves HTTP"
fi

# without an API key file only loopback addresses are allowed
write_config "$T/open.conf" "[http]" "listen = 0.0.0.0:$PORT"
mv "$T/daemon.log" "$T/daemon.1.log"
"$BITNETD" --address "$ADDR" --config "$T/open.conf" > "$T/daemon.log" 2>&1 && fail "listened on 0.0.0.0 without keys"
grep -q "not a loopback address and there is no api_key_file" "$T/daemon.log" || fail "no reason: $(cat "$T/daemon.log")"
ok "a non-loopback listener without keys is refused"
