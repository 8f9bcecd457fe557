#!/bin/sh
# A tokenizer.json in place of the model's vocabulary: bitnet tokenize / detokenize / run
# --tokenizer, bitnetd [model] tokenizer; a vocabulary larger than the embedding is refused.
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
make_model
# tokjson N FILE: byte-level BPE with a, b, ab, fillers and two specials (ids N-2, N-1)
tokjson() {
	{
		printf '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2'
		i=3
		while [ $i -lt $(($1 - 2)) ]; do printf ',"x%d":%d' $i $i; i=$((i + 1)); done
		printf '},"merges":["a b"]},"added_tokens":[{"id":%d,"content":"<|begin_of_text|>","special":true},' $(($1 - 2))
		printf '{"id":%d,"content":"<|end_of_text|>","special":true}]}' $(($1 - 1))
	} > "$2"
}
tokjson 300 "$T/t300.json"
tokjson 600 "$T/t600.json"

out=$("$BITNET" tokenize --tokenizer "$T/t300.json" "abab") || fail "tokenize --tokenizer"
[ "$out" = "298 2 2" ] || fail "tokenize --tokenizer: '$out'"
out=$("$BITNET" tokenize --model "$MODEL" --tokenizer "$T/t300.json" "abab") || fail "tokenize --model --tokenizer"
[ "$out" = "298 2 2" ] || fail "tokenize --model --tokenizer: '$out'"
[ "$("$BITNET" detokenize --tokenizer "$T/t300.json" 2 0 1)" = "abab" ] || fail "detokenize --tokenizer"
[ "$("$BITNET" tokenize --model "$MODEL" "abab")" != "298 2 2" ] || fail "the model's own vocabulary gives the same ids"
ok "tokenize / detokenize with --tokenizer, with and without a model"

"$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --tokenizer "$T/t300.json" --template raw \
	--greedy --max-tokens 4 --prompt "abab" --json > "$T/run.json" 2> "$T/run.err" || fail "run --tokenizer: $(cat "$T/run.err")"
grep -q '"prompt_tokens": *3' "$T/run.json" || fail "run --tokenizer: $(cat "$T/run.json")"
ok "bitnet run --tokenizer: the prompt is 3 tokens of that vocabulary"

"$BITNET" tokenize --model "$MODEL" --tokenizer "$T/t600.json" "abab" > /dev/null 2> "$T/err" &&
	fail "a 600-token vocabulary for a 512-row embedding was accepted"
grep -q "600 tokens, but the model's embedding has 512 rows" "$T/err" || fail "message: $(cat "$T/err")"
"$BITNET" run --model "$MODEL" --plugin-dir "$PLUGIN_DIR" --tokenizer "$T/t600.json" --prompt x > /dev/null 2> "$T/err" &&
	fail "run accepted the 600-token vocabulary"
grep -q "512 rows" "$T/err" || fail "run message: $(cat "$T/err")"
ok "a vocabulary larger than the embedding is refused, naming both sizes"

need_dbus
write_config "$T/rel.conf" "[model]" "tokenizer = t300.json"
"$BITNETD" --check-config --config "$T/rel.conf" > "$T/out" 2>&1 && fail "a relative tokenizer path passed the check"
grep -q "\[model\] tokenizer: 't300.json' is not an absolute path" "$T/out" || fail "check: $(cat "$T/out")"
write_config "$T/bad.conf" "[model]" "tokenizer = $T/nonexistent.json"
"$BITNETD" --check-config --config "$T/bad.conf" > "$T/out" 2>&1 && fail "a missing tokenizer passed the check"
grep -q "\[model\] tokenizer" "$T/out" || fail "check: $(cat "$T/out")"
write_config "$T/bitnetd.conf" "[model]" "tokenizer = $T/t300.json"
start_bus
start_daemon "$T/bitnetd.conf"
[ "$(ctl tokenize abab)" = "298 2 2" ] || fail "bitnetd [model] tokenizer: '$(ctl tokenize abab)'"
ok "bitnetd [model] tokenizer, and --check-config's checks of it"
stop_daemon
