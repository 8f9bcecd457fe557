#!/bin/sh
# bitnet perplexity: a finite value above 1 on a synthetic model; bitwise the same whatever the
# threads and the batch size, and the same within float tolerance on every plugin (only the
# LM head's float sums differ between plugins); the stride; a text shorter than one chunk;
# the demo model on text in its corpus style (far below the vocabulary size); and, with
# numpy, the same perplexity from tools/train/ref.py's independent forward pass.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
field() {   # field NAME FILE: a number of the --json object
	sed -n "s/^ *\"$1\": *\([^,]*\),*\$/\1/p" "$2"
}
m="$tmp/tiny.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --quiet --out "$m" || { echo "FAIL mkmodel"; exit 1; }

# ~1100 tokens of words drawn from a fixed sentence
awk 'BEGIN { srand(3); s = "the cat sat on a mat and then it ran far away from home";
	for (i = 0; i < 300; i++) printf "%s%s", (i ? " " : ""), substr(s, 1 + int(rand() * 40), 5);
	print "" }' > "$tmp/text.txt"

ppl() {   # ppl OUT [options]: --json into OUT
	o=$1
	shift
	"$BITNET" perplexity --model "$m" --file "$tmp/text.txt" --ctx 128 --json "$@" \
		> "$tmp/$o.json" 2> "$tmp/$o.err"
}
ppl t1 --threads 1 --plugin scalar || bad "perplexity failed: $(cat "$tmp/t1.err")"
v=$(field ppl "$tmp/t1.json")
if awk -v v="$v" 'BEGIN { exit !(v + 0 > 1 && v + 0 < 1e30 && v == v + 0) }'; then
	ok "tiny model: perplexity $v"
else
	bad "tiny model: perplexity '$v' is not a finite value above 1"
fi
for k in model plugin ctx chunks tokens_scored nll_mean ppl ppl_stderr; do
	grep -q "\"$k\":" "$tmp/t1.json" || bad "--json lacks $k"
done
[ "$(field chunks "$tmp/t1.json")" = 8 ] && [ "$(field tokens_scored "$tmp/t1.json")" = 504 ] &&
	ok "8 chunks of 128, 63 tokens scored in each" ||
	bad "chunks/tokens scored: $(field chunks "$tmp/t1.json")/$(field tokens_scored "$tmp/t1.json")"
grep -q '^\[8\] [0-9.]*$' "$tmp/t1.err" && ok "running perplexity per chunk on stderr" ||
	bad "no progress line for chunk 8: $(cat "$tmp/t1.err")"

ppl t2 --threads 2 --plugin scalar
ppl b5 --threads 2 --plugin scalar --batch 5
for o in t2 b5; do
	if [ "$(field ppl "$tmp/$o.json")" = "$v" ] && [ "$(field nll_mean "$tmp/$o.json")" = "$(field nll_mean "$tmp/t1.json")" ]; then
		ok "$o: the same perplexity bit for bit"
	else
		bad "$o: $(field ppl "$tmp/$o.json") != $v"
	fi
done
for p in $("$BITNET" kernels | awk '$NF == "usable" { print $1 }'); do
	ppl "p-$p" --plugin "$p" --threads 2
	pv=$(field ppl "$tmp/p-$p.json")
	if awk -v a="$pv" -v b="$v" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-6 * b) }'; then
		ok "plugin $p: $pv"
	else
		bad "plugin $p: $pv, scalar $v"
	fi
	ppl "p1-$p" --plugin "$p" --threads 1
	[ "$(field ppl "$tmp/p1-$p.json")" = "$pv" ] || bad "plugin $p: 1 and 2 threads differ"
done

ppl s64 --stride 64
[ "$(field chunks "$tmp/s64.json")" = 16 ] && [ "$(field stride "$tmp/s64.json")" = 64 ] &&
	ok "--stride 64: 16 overlapping chunks" || bad "--stride 64: $(cat "$tmp/s64.json")"

echo "too short" > "$tmp/short.txt"
if "$BITNET" perplexity --model "$m" --file "$tmp/short.txt" --ctx 128 > /dev/null 2> "$tmp/err"; then
	bad "a text shorter than one chunk was accepted"
elif grep -Eq "[0-9]+ tokens are fewer than one chunk of 128" "$tmp/err"; then
	ok "short text: $(cat "$tmp/err")"
else
	bad "short text error lacks the sizes: $(cat "$tmp/err")"
fi
"$BITNET" perplexity --model "$m" --file "$tmp/missing.txt" > /dev/null 2>&1 && bad "missing file accepted"
"$BITNET" perplexity --model "$m" --file "$tmp/text.txt" --ctx 2 > /dev/null 2>&1
[ $? -eq 2 ] || bad "--ctx 2 is not a usage error"

# The demo model was trained on short documents in the words of tools/train/corpus.py: runs of
# numbers, days, months and letters, each run starting at position 0 as the model saw them.
demo="$top_srcdir/models/demo.gguf"
if [ -f "$demo" ]; then
	awk 'BEGIN {
		split("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen", o, " ")
		split("twenty thirty forty fifty sixty seventy eighty ninety", t, " ")
		for (n = 1; n < 100; n++) printf "%s ", n < 20 ? o[n] : (n % 10 ? t[int(n / 10) - 1] " " o[n % 10] : t[n / 10 - 1])
		printf "one hundred. "
		for (w = 0; w < 4; w++) printf "monday tuesday wednesday thursday friday saturday sunday "
		for (y = 0; y < 3; y++) printf "january february march april may june july august september october november december "
		printf "a b c d e f g h i j k l m n o p q r s t u v w x y z.\n" }' > "$tmp/demo.txt"
	"$BITNET" perplexity --model "$demo" --file "$tmp/demo.txt" --ctx 16 --json \
		> "$tmp/demo.json" 2> "$tmp/demo.err" || bad "demo: $(cat "$tmp/demo.err")"
	dv=$(field ppl "$tmp/demo.json")
	nv=$("$BITNET" inspect --json "$demo" | sed -n 's/.*"n_vocab": *\([0-9]*\).*/\1/p' | head -n 1)
	if awk -v v="$dv" -v n="$nv" 'BEGIN { exit !(v + 0 >= 1 && v + 0 < n / 10) }'; then
		ok "demo model: perplexity $dv on corpus-style text (vocabulary $nv)"
	else
		bad "demo model: perplexity '$dv', vocabulary $nv"
	fi
else
	echo "skip demo model: $demo not present"
fi

# The same method over tools/train/ref.py's numpy forward pass (no code shared with the engine).
PY=
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
	echo "skip reference check: no python3 with numpy"
	exit $fail
fi
head -c 400 "$tmp/text.txt" > "$tmp/small.txt"
"$BITNET" perplexity --model "$m" --file "$tmp/small.txt" --ctx 24 --stride 20 --json \
	> "$tmp/small.json" 2> "$tmp/small.err" || bad "small: $(cat "$tmp/small.err")"
"$BITNET" tokenize --model "$m" - < "$tmp/small.txt" > "$tmp/small.ids" || bad "tokenize"
bos=$(printf '' | "$BITNET" tokenize --model "$m" -)
if r=$("$PY" - "$top_srcdir/tools/train" "$m" "$tmp/small.ids" "${bos:--1}" 24 20 \
	"$(field ppl "$tmp/small.json")" <<'EOF'
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import ref
m = ref.Model(sys.argv[2])
ids = [int(t) for t in open(sys.argv[3]).read().split()]
bos, C, S, want = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
nll = []
for start in range(0, len(ids) - C + 1, S):
    chunk = ids[start:start + C]
    if bos >= 0:
        chunk[0] = bos
    lg = m.forward(chunk).astype(np.float64)
    for j in range(C // 2, C - 1):
        row = lg[j]
        mx = np.max(row)
        nll.append(-(row[chunk[j + 1]] - mx - np.log(np.sum(np.exp(row - mx)))))
got = float(np.exp(np.mean(nll)))
rel = abs(got - want) / got
print("ref.py %.6f, engine %.6f, relative %.2e over %d tokens" % (got, want, rel, len(nll)))
sys.exit(0 if rel <= 1e-3 else 1)
EOF
); then
	ok "against ref.py: $r"
else
	bad "against ref.py: $r"
fi
exit $fail
