#!/bin/sh
# bitnetd serves an arch llama model (mkmodel --arch llama --untied): the Model property names
# the architecture, and a greedy generation equals `bitnet run --greedy --template raw`.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
MODEL=$T/model.gguf
"$BITNET" mkmodel --arch llama --untied --preset tiny --seed 3 --ctx 1024 --out "$MODEL" \
	>/dev/null 2>&1 || fail "bitnet mkmodel --arch llama failed"
write_config "$T/bitnetd.conf" "[engine]" "plugin = scalar"
start_bus
start_daemon "$T/bitnetd.conf"
prop Model > "$T/model.prop"
grep -Eq "variant +llama *\)" "$T/model.prop" ||
	fail "Model property lacks the architecture: $(cat "$T/model.prop")"
ok "Model property: architecture llama"

PROMPT="The quick brown fox"
ctl generate --greedy --max-tokens 16 "$PROMPT" > "$T/ctl.out" || fail "bitnetctl generate exited $?"
[ -s "$T/ctl.out" ] || fail "no text streamed"
timeout 60 "$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --plugin scalar --threads 1 \
	--greedy --template raw --max-tokens 16 --prompt "$PROMPT" > "$T/run.out" 2>"$T/run.err" ||
	fail "bitnet run failed: $(cat "$T/run.err")"
cmp "$T/ctl.out" "$T/run.out" || fail "bitnetctl generate differs from bitnet run --greedy"
ok "generation ($(wc -c < "$T/ctl.out") bytes) equals bitnet run --greedy --template raw"
stop_daemon
echo "PASS: daemon-llama"
