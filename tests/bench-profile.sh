#!/bin/sh
# bitnet bench --profile: the segments cover the pass, every op is listed, JSON agrees.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
m="$tmp/tiny.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --quiet --out "$m" || { echo "FAIL mkmodel"; exit 1; }
"$BITNET" bench -m "$m" -p 0 -n 16 -r 1 --threads 2 --profile > "$tmp/out" 2> "$tmp/err" || bad "bench --profile failed: $(cat "$tmp/err")"
cat "$tmp/out"
for op in embed norm+quantize "ternary qkv" "rope+kv store" attention "ternary wo" "ternary gate+up" \
	"ternary down" "residual add" "output norm" "lm head"; do
	grep -q "^$op  " "$tmp/out" || bad "no row for $op"
done
# the marks partition the pass: the shares add up to 100 %
sum=$(sed -n '/^op /,/^ternary projections in/p' "$tmp/out" | awk '/%/ { for (i = 1; i <= NF; i++) if ($i ~ /%$/) { sub("%", "", $i); s += $i } } END { print s }')
awk -v s="$sum" 'BEGIN { exit !(s > 98.5 && s < 101.5) }' && ok "shares add up to $sum %" || bad "shares add up to $sum %"
grep -q "^ternary qkv .* [0-9.]*$" "$tmp/out" && grep -Eq "alone [0-9.]+ GB/s" "$tmp/out" && ok "GB/s in the pass and alone" ||
	bad "no GB/s figures"
grep -Eq "^profile: tg16, 1 sequence, 16 passes" "$tmp/out" && ok "16 profiled passes" || bad "pass count"

"$BITNET" bench -m "$m" -p 0 -n 8 -r 1 --parallel 2 --profile --json > "$tmp/j" 2>/dev/null || bad "--json --profile failed"
if [ -n "$PYTHON3" ]; then
	"$PYTHON3" - "$tmp/j" <<'PY' && ok "JSON profile: 11 ops, fractions add up, 8 passes" || bad "JSON profile"
import json, sys
j = json.load(open(sys.argv[1]))
p = j["profile"]
assert len(p["ops"]) == 11, p
assert p["passes"] == 8, p
s = sum(o["fraction"] for o in p["ops"])
assert 0.985 < s < 1.015, s
assert p["ternary_gb_per_second"] > 0 and p["ternary_alone_gb_per_second"] > 0
PY
fi
"$BITNET" bench -m "$m" -p 4 -n 0 --profile > /dev/null 2> "$tmp/e" && bad "--profile with -n 0 accepted" ||
	{ grep -q "give -n > 0" "$tmp/e" && ok "--profile needs -n" || bad "message: $(cat "$tmp/e")"; }
exit $fail
