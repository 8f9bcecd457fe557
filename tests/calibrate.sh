#!/bin/sh
# plugin = auto by measurement: bitnet kernels --calibrate, the cache, its key and misuse.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
m="$tmp/tiny.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --quiet --out "$m" || { echo "FAIL mkmodel"; exit 1; }
usable=$("$BITNET" kernels | awk '$NF == "usable" { print $1 }' | sort)

# the table: every usable plugin timed, exactly one marked
"$BITNET" kernels --calibrate "$m" --threads 2 > "$tmp/table" 2>"$tmp/err" || bad "kernels --calibrate failed: $(cat "$tmp/err")"
cat "$tmp/table"
timed=$(awk 'NR > 2 && NF >= 6 { print $1 }' "$tmp/table" | sort -u)
[ "$timed" = "$usable" ] && ok "every usable plugin timed ($(echo $usable))" || bad "timed '$timed', usable '$usable'"
[ "$(grep -c -- '<- auto' "$tmp/table")" = 1 ] && ok "one choice marked" || bad "not exactly one '<- auto'"
awk 'NR > 2 && NF >= 6 && !($4 > 0 && $6 > 0) { exit 1 }' "$tmp/table" && ok "rates and token times positive" ||
	bad "a row without a rate"
[ -e "$tmp/cache" ] && bad "--calibrate without --cache wrote a cache"

# bitnet bench --plugin auto: first run measures and stores, the second reads the cache
export XDG_CACHE_HOME="$tmp/cache"
file="$tmp/cache/bitnet/kernel-calibration"
BITNET_LOG=info "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 2 > /dev/null 2> "$tmp/e1" || bad "bench failed: $(cat "$tmp/e1")"
grep -q "kernel calibration: .* timed in" "$tmp/e1" && ok "a cold start times the variants" || bad "no calibration on a cold start: $(cat "$tmp/e1")"
[ -s "$file" ] && ok "choice stored in $file" || bad "nothing stored in $file"
awk 'NF != 5 || length($1) != 64 { exit 1 }' "$file" && ok "cache line: key plugin features variant ms" || bad "cache line: $(cat "$file")"
BITNET_LOG=info "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 2 > /dev/null 2> "$tmp/e2" || bad "bench failed"
if grep -q "timed in" "$tmp/e2"; then bad "a warm start measured again"
elif grep -q "kernel calibration: .* from $file" "$tmp/e2"; then ok "a warm start reads the cache"
else bad "warm start: $(cat "$tmp/e2")"; fi

# the cache is what decides: an entry naming scalar makes auto load scalar
key=$(awk '{ print $1; exit }' "$file")
echo "$key scalar 0 scalar 1.0" > "$file"
"$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 2 > /dev/null 2> "$tmp/e3"
grep -q "plugin scalar (scalar)" "$tmp/e3" && ok "auto follows the cached choice" || bad "cached scalar not used: $(head -1 "$tmp/e3")"
# ... but not for another thread count (another key)
BITNET_LOG=info "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 1 > /dev/null 2> "$tmp/e4"
grep -q "timed in" "$tmp/e4" && ok "another thread count is measured anew" || bad "threads not in the key"
[ "$(wc -l < "$file")" = 2 ] && ok "both entries kept" || bad "cache file: $(cat "$file")"

# a stale entry (plugin gone) is measured again, a corrupt file is ignored
echo "$key nosuch 0 nosuch 1.0" > "$file"
BITNET_LOG=info "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 2 > /dev/null 2> "$tmp/e5" || bad "stale entry broke bench: $(cat "$tmp/e5")"
grep -q "cannot load the chosen nosuch" "$tmp/e5" && grep -q "timed in" "$tmp/e5" && ok "stale entry: measured again" ||
	bad "stale entry: $(cat "$tmp/e5")"
head -c 3000 /dev/urandom > "$file"
"$BITNET" bench -m "$m" -p 4 -n 4 -r 1 --threads 2 > /dev/null 2> "$tmp/e6" && ok "corrupt cache ignored" || bad "corrupt cache: $(cat "$tmp/e6")"
# an unwritable cache is not an error
XDG_CACHE_HOME=/proc/nonexistent "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 > /dev/null 2> "$tmp/e7" && ok "unwritable cache: runs" ||
	bad "unwritable cache: $(cat "$tmp/e7")"

# BITNET_CALIBRATE=0 keeps the static priority and measures nothing
top=$("$BITNET" kernels | awk '$NF == "usable" { print $1; exit }')
rm -rf "$tmp/cache"
BITNET_CALIBRATE=0 BITNET_LOG=info "$BITNET" bench -m "$m" -p 4 -n 4 -r 1 > /dev/null 2> "$tmp/e8"
if grep -q "calibration" "$tmp/e8" || [ -e "$file" ]; then bad "BITNET_CALIBRATE=0 calibrated"
elif grep -q "plugin $top " "$tmp/e8"; then ok "BITNET_CALIBRATE=0: $top by priority"
else bad "BITNET_CALIBRATE=0: $(head -1 "$tmp/e8")"; fi

# the same text whichever plugin auto takes
BITNET_CALIBRATE=0 "$BITNET" run --model "$m" --template raw --prompt "hello" --greedy --max-tokens 16 > "$tmp/a" 2>/dev/null
"$BITNET" run --model "$m" --template raw --prompt "hello" --greedy --max-tokens 16 > "$tmp/b" 2>/dev/null
[ -s "$tmp/a" ] && cmp -s "$tmp/a" "$tmp/b" && ok "same text with and without calibration" || bad "texts differ"
exit $fail
