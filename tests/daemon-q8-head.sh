#!/bin/sh
# bitnetd with an 8-bit LM head (bitnet requant --head q8_0): the Model property and the
# request receipt name the head, and the daemon's greedy text equals bitnet run's.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
make_model
"$BITNET" requant --head q8_0 --quiet "$MODEL" "$T/tiny-q8.gguf" || fail "requant"
MODEL=$T/tiny-q8.gguf
write_config "$T/bitnetd.conf"
start_bus
start_daemon "$T/bitnetd.conf"

ctl status > "$T/status.out" || fail "status"
grep -q "q8_0 head" "$T/status.out" || fail "status does not name the head: $(cat "$T/status.out")"
ctl status --json | grep -Eq '"head_type": *"q8_0"' || fail "Model property lacks head_type"
ok "status and the Model property: q8_0 head"

PROMPT="The quick brown fox"
ctl generate --greedy --max-tokens 16 "$PROMPT" > "$T/ctl.out" || fail "generate"
timeout 60 "$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --threads 1 --greedy \
	--template raw --max-tokens 16 --prompt "$PROMPT" > "$T/run.out" 2>"$T/run.err" ||
	fail "bitnet run: $(cat "$T/run.err")"
cmp "$T/ctl.out" "$T/run.out" || fail "bitnetctl generate differs from bitnet run --greedy"
ok "greedy text equals bitnet run's"
ctl generate --json --greedy --max-tokens 3 "$PROMPT" > "$T/json.out" || fail "generate --json"
grep -Eq '"head_type": *"q8_0"' "$T/json.out" || fail "receipt lacks head_type: $(cat "$T/json.out")"
ok "the receipt names the q8_0 head"
