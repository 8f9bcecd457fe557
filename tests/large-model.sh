#!/bin/sh
# A model of the exact 2B-4T shape (1.2 GB, I2_S): loads in under 2 s from a warm page cache,
# the ternary weights are not copied (RSS well under the file size before the first token),
# and it decodes.
set -u
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bitnet-large.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
avail=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
if [ "${avail:-0}" -lt 2000000 ]; then
	echo "SKIP: less than 2 GB free in $tmp"
	exit 77
fi
m="$tmp/2b4t.gguf"
"$BITNET" mkmodel --preset 2b4t --type i2_s --seed 11 --out "$m" 2>/dev/null || { echo "FAIL: mkmodel"; exit 1; }
size_kb=$(( $(stat -c %s "$m") / 1024 ))
cat "$m" > /dev/null   # warm page cache
out=$("$BITNET" run --model "$m" --tokens 128000,100,200 --max-tokens 2 --greedy --json 2>"$tmp/err") || {
	echo "FAIL: bitnet run"; cat "$tmp/err"; exit 1; }
rec=$(printf '%s\n' "$out" | tail -n 1)
echo "$rec"
num() { printf '%s' "$rec" | sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
load=$(num load_seconds)
rss=$(num rss_kb_before_first_token)
copied=$(num model_bytes_copied)
gen=$(num generated_tokens)
echo "file ${size_kb} KiB, load ${load} s, RSS before first token ${rss} KiB, copied ${copied} bytes, generated ${gen}"
fail=0
awk -v l="$load" 'BEGIN { exit !(l < 2.0) }' || { echo "FAIL: load took ${load} s (limit 2 s)"; fail=1; }
[ "$rss" -lt $((size_kb / 2)) ] || { echo "FAIL: RSS ${rss} KiB is not well under the file's ${size_kb} KiB"; fail=1; }
[ "$copied" = 0 ] || { echo "FAIL: ${copied} bytes of weights copied at load"; fail=1; }
[ "$gen" = 2 ] || { echo "FAIL: expected 2 generated tokens"; fail=1; }
exit $fail
