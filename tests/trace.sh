#!/bin/sh
# bitnet trace: the trace of a synthetic model is the same whatever the threads (bit for bit)
# and the plugin (within the tolerance); --compare of a trace with itself matches, and with a
# changed value names that (layer, op, position), the first in pass order; bad input; and,
# with numpy, tools/train/ref.py trace (the independent reference) matches the engine's.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
m="$tmp/tiny.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --quiet --out "$m" || { echo "FAIL mkmodel"; exit 1; }
toks=508,17,300,42,7,99

"$BITNET" trace --model "$m" --tokens $toks --json --threads 1 --plugin scalar > "$tmp/t1.json" ||
	bad "trace --json failed"
"$BITNET" trace --model "$m" --tokens $toks --json --threads 2 --plugin scalar > "$tmp/t2.json"
cmp -s "$tmp/t1.json" "$tmp/t2.json" && ok "1 and 2 threads: the same trace" ||
	bad "1 and 2 threads: the traces differ"
# 2 layers x 13 ops + out_norm and logits, one line each
n=$(grep -c '^{"layer":' "$tmp/t1.json")
[ "$n" = 28 ] && ok "28 (layer, op) entries" || bad "$n entries, expected 28"
for op in attn_norm q k v attn attn_sub_norm wo ffn_norm gate up ffn_act down layer_out; do
	grep -q "^{\"layer\":1,\"op\":\"$op\",\"rms\":\[[^],]*,[^],]*,[^],]*,[^],]*,[^],]*,[^],]*\]" "$tmp/t1.json" ||
		bad "no layer 1 $op with 6 positions"
done
grep -q '^{"layer":2,"op":"logits"' "$tmp/t1.json" || bad "no logits entry"
if [ -n "${PYTHON3:-}" ] && "$PYTHON3" -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/t1.json" 2>/dev/null; then
	ok "the trace is valid JSON"
elif [ -n "${PYTHON3:-}" ] && "$PYTHON3" -c '' 2>/dev/null; then
	bad "the trace is not valid JSON"
fi

cmpr() {   # cmpr FILE [options]: compare a fresh trace against FILE; output in $tmp/out
	f=$1
	shift
	"$BITNET" trace --model "$m" --compare "$f" "$@" > "$tmp/out" 2>&1
}
if cmpr "$tmp/t1.json" --plugin scalar && grep -q "traces match.*largest difference 0)" "$tmp/out"; then
	ok "compare with itself (tokens from the file): $(tail -n 1 "$tmp/out")"
else
	bad "compare with itself: $(cat "$tmp/out")"
fi
for p in $("$BITNET" kernels | awk '$NF == "usable" { print $1 }'); do
	cmpr "$tmp/t1.json" --plugin "$p" --tokens $toks && ok "plugin $p matches scalar" ||
		bad "plugin $p: $(cat "$tmp/out")"
done

# one rms value changed: layer 1 ffn_act position 0
sed '/^{"layer":1,"op":"ffn_act"/ s/"rms":\[[^,]*/"rms":[123.5/' "$tmp/t1.json" > "$tmp/mod.json"
cmp -s "$tmp/t1.json" "$tmp/mod.json" && bad "sed did not change the trace"
cmpr "$tmp/mod.json"
rc=$?
if [ $rc -eq 1 ] && grep -q "^first divergence: layer 1 op ffn_act position 0: " "$tmp/out"; then
	ok "changed value: $(grep '^first' "$tmp/out")"
else
	bad "changed value (exit $rc): $(cat "$tmp/out")"
fi
# a second change earlier in the pass (layer 0 v, position 1) is the one reported
sed '/^{"layer":0,"op":"v"/ s/"rms":\[\([^,]*\),[^,]*/"rms":[\1,0.001/' "$tmp/mod.json" > "$tmp/mod2.json"
cmpr "$tmp/mod2.json"
grep -q "^first divergence: layer 0 op v position 1: " "$tmp/out" && ok "the first in pass order" ||
	bad "two changes: $(cat "$tmp/out")"
cmpr "$tmp/mod.json" --tolerance 1e9 && ok "--tolerance 1e9 lets it pass" ||
	bad "--tolerance 1e9: $(cat "$tmp/out")"

# bad input
cmpr "$tmp/t1.json" --tokens 508,17,300
[ $? -eq 2 ] && grep -q "6 in" "$tmp/out" && ok "other tokens: $(cat "$tmp/out")" ||
	bad "other tokens: $(cat "$tmp/out")"
echo '{"tokens": [1, 2' > "$tmp/broken.json"
cmpr "$tmp/broken.json"
[ $? -eq 1 ] && grep -q "cannot read" "$tmp/out" && ok "broken JSON: $(cat "$tmp/out")" ||
	bad "broken JSON: $(cat "$tmp/out")"
grep -v '"op":"down"' "$tmp/t1.json" > "$tmp/missing.json"
cmpr "$tmp/missing.json"
[ $? -eq 1 ] && grep -q "no entry for layer 0 op down" "$tmp/out" && ok "missing entry: $(cat "$tmp/out")" ||
	bad "missing entry: $(cat "$tmp/out")"
"$BITNET" trace --model "$m" --tokens 508,512 > "$tmp/out" 2>&1
[ $? -eq 1 ] && grep -q "outside the vocabulary" "$tmp/out" || bad "token 512 accepted: $(cat "$tmp/out")"
"$BITNET" trace --model "$m" --tokens 1 --json --compare "$tmp/t1.json" > /dev/null 2>&1
[ $? -eq 2 ] || bad "--json with --compare is not a usage error"

# --prompt and the table
"$BITNET" trace --model "$m" --prompt "hello there" > "$tmp/table" 2>&1 &&
	grep -q "^out   logits " "$tmp/table" && ok "--prompt: $(wc -l < "$tmp/table") table lines" ||
	bad "--prompt: $(head -n 3 "$tmp/table")"

PY=
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
	echo "skip reference check: no python3 with numpy"
	exit $fail
fi
REF="$top_srcdir/tools/train/ref.py"
# the tiny model, and the other activation (SiLU) with .scale tensors
s="$tmp/silu.gguf"
"$BITNET" mkmodel --arch bitnet --scale-tensors --hidden 256 --ff 640 --layers 2 --heads 2 \
	--kv-heads 1 --vocab 530 --seed 505 --quiet --out "$s" || bad "mkmodel silu"
for mm in "$m" "$s"; do
	"$PY" "$REF" trace "$mm" --tokens $toks --out "$tmp/ref.json" || { bad "ref.py trace"; continue; }
	if "$BITNET" trace --model "$mm" --compare "$tmp/ref.json" > "$tmp/out" 2>&1; then
		ok "$(basename "$mm") against ref.py: $(tail -n 1 "$tmp/out")"
	else
		bad "$(basename "$mm") against ref.py: $(cat "$tmp/out")"
	fi
done
exit $fail
