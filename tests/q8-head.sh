#!/bin/sh
# The opt-in 8-bit LM head (bitnet requant --head q8_0, issue 13) on the demo model:
# - requant adds output.weight (q8_0) and copies every other tensor byte for byte;
#   mkmodel --head q8_0 writes exactly the file requant makes of the tied one;
# - the logits stay close to the f16 head's (same argmax at every position of the demo's
#   reference sequences) and are bit-identical across threads, seq/batch and every plugin
#   (q8_gemm's float order is fixed by the ABI, unlike f16_gemm's);
# - receipts name the head; requant refuses what makes no sense;
# - hostile files: q8_0 on a projection, a norm or token_embd, and a truncated q8_0 head.
set -u
: "${top_srcdir:?}" "${top_builddir:?}" "${BITNET:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bitnet-q8.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
CMP="$top_builddir/tests/cmp-logits"
demo="$top_srcdir/models/demo.gguf"
q="$tmp/demo-q8.gguf"

# --- requant ------------------------------------------------------------------------
"$BITNET" requant --head q8_0 "$demo" "$q" > "$tmp/out.txt" 2>&1 ||
	{ echo "FAIL requant: $(cat "$tmp/out.txt")"; exit 1; }
ok "$(cat "$tmp/out.txt")"
grep -q "relative RMS error 0\.00[0-9]" "$tmp/out.txt" || bad "requant: error not below 1%"
"$BITNET" inspect --json "$q" > "$tmp/q.json" || bad "inspect"
grep -Eq '"head_type": *"q8_0"' "$tmp/q.json" && grep -Eq '"head_tied": *false' "$tmp/q.json" &&
	ok "inspect: head_type q8_0, not tied" || bad "inspect: no q8_0 head in $(head -c 400 "$tmp/q.json")"
"$BITNET" inspect --json "$demo" | grep -Eq '"head_type": *"f16"' || bad "inspect: demo head not f16"
"$BITNET" inspect "$q" | grep -q "LM head q8_0 (output.weight)" || bad "inspect text: no head line"

# every tensor but output.weight: same bytes (name, size and offset from inspect's table)
tensors() { "$BITNET" inspect "$1" | awk 'NF >= 5 && $(NF-1) ~ /^[0-9]+$/ && $NF ~ /^[0-9]+$/ &&
	$2 ~ /^(f32|f16|bf16|i2_s|tq1_0|tq2_0|q8_0)$/ { print $1, $2, $(NF-1), $NF }'; }
tensors "$demo" > "$tmp/a.txt"
tensors "$q" > "$tmp/b.txt"
n=0
while read -r name type bytes off; do
	line=$(grep "^$name " "$tmp/b.txt") || { bad "$name missing after requant"; continue; }
	set -- $line
	[ "$2 $3" = "$type $bytes" ] || bad "$name: $2 $3 after requant, was $type $bytes"
	cmp -s -i "$off:$4" -n "$bytes" "$demo" "$q" || bad "$name: bytes differ"
	n=$((n + 1))
done < "$tmp/a.txt"
[ "$(wc -l < "$tmp/b.txt")" -eq $((n + 1)) ] && grep -q "^output.weight q8_0 139264 " "$tmp/b.txt" &&
	ok "$n tensors copied byte for byte, output.weight q8_0 (512 x 256 / 32 x 34 bytes) added" ||
	bad "tensor tables: $(cat "$tmp/b.txt" | tail -n 2)"
if [ -n "${PYTHON3:-}" ] && "$PYTHON3" -c 'import struct' 2>/dev/null; then
	# the KV section, whole: same bytes (an independent reader finds where it ends)
	"$PYTHON3" - "$top_srcdir/tests" "$demo" "$q" <<'EOF' && ok "KV section byte-identical" ||
import sys
sys.path.insert(0, sys.argv[1])
from gguf_read import GGUF
spans = []
for p in sys.argv[2:]:
    g = GGUF(p)
    off = 24
    import struct
    n_kv, = struct.unpack_from('<Q', g.buf, 16)
    for _ in range(n_kv):
        _, off = g._str(off)
        t, = struct.unpack_from('<I', g.buf, off)
        _, off = g._val(t, off + 4)
    spans.append(g.buf[16:off])
sys.exit(0 if spans[0] == spans[1] else 1)
EOF
		bad "KV sections differ"
else
	echo "skip KV byte comparison: no python3"
fi

# mkmodel --head q8_0 = requant of the tied model, byte for byte
"$BITNET" mkmodel --preset tiny --seed 5 --quiet --out "$tmp/t.gguf" &&
	"$BITNET" mkmodel --preset tiny --seed 5 --head q8_0 --quiet --out "$tmp/tq.gguf" &&
	"$BITNET" requant --head q8_0 --quiet "$tmp/t.gguf" "$tmp/tr.gguf" || bad "mkmodel/requant"
cmp -s "$tmp/tq.gguf" "$tmp/tr.gguf" && ok "mkmodel --head q8_0 = requant --head q8_0, byte for byte" ||
	bad "mkmodel --head q8_0 differs from requant"
# in place (OUT = IN) through the temporary file
cp "$tmp/t.gguf" "$tmp/inplace.gguf"
"$BITNET" requant --head q8_0 --quiet "$tmp/inplace.gguf" "$tmp/inplace.gguf" &&
	cmp -s "$tmp/inplace.gguf" "$tmp/tr.gguf" && ok "requant in place" || bad "requant in place"
ls "$tmp"/*.tmp-* > /dev/null 2>&1 && bad "a temporary file was left behind"

# --- logits -------------------------------------------------------------------------
# the demo's reference sequences: the q8_0 head's logits near the f16 head's, same argmax
tab=$(printf '\t')
i=0
while IFS="$tab" read -r name ids rest; do
	i=$((i + 1))
	"$BITNET" logits --model "$demo" --tokens "$ids" --out "$tmp/f$i.bin" &&
		"$BITNET" logits --model "$q" --tokens "$ids" --out "$tmp/q$i.bin" || { bad "$name: logits"; continue; }
	r=$("$CMP" -q --max-rel 2e-2 --median 1e-2 "$tmp/q$i.bin" "$tmp/f$i.bin") &&
		ok "$name: q8_0 vs f16 head: $r" || bad "$name: q8_0 vs f16 head: $r"
done < "$top_srcdir/models/demo.prompts.txt"
[ $i -ge 10 ] || bad "only $i reference sequences read"

# bit-identical whatever the threads, the batching and the plugin
ids=$(sed -n 1p "$top_srcdir/models/demo.prompts.txt" | cut -f2)
"$BITNET" logits --model "$q" --tokens "$ids" --threads 1 --plugin scalar --out "$tmp/ref.bin" || bad "scalar"
for p in $("$BITNET" kernels | awk '$NF == "usable" { print $1 }'); do
	for th in 1 2; do
		for mode in seq batch; do
			"$BITNET" logits --model "$q" --tokens "$ids" --plugin "$p" --threads $th --mode $mode \
				--out "$tmp/x.bin" 2> "$tmp/err.txt" || { bad "$p: $(cat "$tmp/err.txt")"; continue; }
			cmp -s "$tmp/x.bin" "$tmp/ref.bin" || bad "plugin $p, $th threads, $mode: logits differ"
		done
	done
	ok "plugin $p, 1 and 2 threads, seq and batch: logits bit-identical to scalar"
done

# greedy continuations of held-out prompts: the same with both heads
tail -n +2 "$top_srcdir/models/demo.greedy.tsv" | head -n 24 > "$tmp/held.tsv"
same=0 n=0
while IFS="$tab" read -r task prompt answer pids rest; do
	a=$("$BITNET" run --model "$demo" --tokens "$pids" --max-tokens 6 --greedy --json 2>/dev/null | head -n -1)
	b=$("$BITNET" run --model "$q" --tokens "$pids" --max-tokens 6 --greedy --json 2>/dev/null | head -n -1)
	n=$((n + 1))
	[ "$a" = "$b" ] && same=$((same + 1))
done < "$tmp/held.tsv"
[ $n -gt 0 ] && [ $same -ge $((n - 1)) ] && ok "held-out greedy continuations: $same of $n identical" ||
	bad "held-out greedy continuations: only $same of $n identical"

# --- receipts -----------------------------------------------------------------------
"$BITNET" run --model "$q" --tokens "$ids" --max-tokens 1 --greedy --json 2>/dev/null | tail -n 1 |
	grep -Eq '"head_type": *"q8_0"' && ok "run --json: head_type q8_0" || bad "run --json: no head_type"
"$BITNET" bench --model "$q" -p 4 -n 2 -r 1 --json 2>/dev/null | grep -Eq '"head_type": *"q8_0"' &&
	ok "bench --json: head_type q8_0" || bad "bench --json: no head_type"
"$BITNET" bench --model "$q" -p 0 -n 4 -r 1 --profile 2> /dev/null > "$tmp/prof.txt"
grep -q "q8_0 head" "$tmp/prof.txt" && grep -Eq "^lm head +[0-9.]+ +[0-9.]+% +1\.0 " "$tmp/prof.txt" &&
	ok "bench --profile: the q8_0 head in its lm head segment" || bad "bench --profile: $(cat "$tmp/prof.txt")"

# --- requant refuses ----------------------------------------------------------------
expect_fail() {   # expect_fail WHAT PATTERN ARGS...
	what=$1 pat=$2
	shift 2
	if "$BITNET" requant "$@" > "$tmp/out.txt" 2>&1; then
		bad "requant $what: accepted"
	elif grep -q -- "$pat" "$tmp/out.txt"; then
		ok "requant $what: $(head -n 1 "$tmp/out.txt")"
	else
		bad "requant $what: $(cat "$tmp/out.txt")"
	fi
}
expect_fail "a q8_0 head again" "already q8_0" --head q8_0 "$q" "$tmp/x.gguf"
expect_fail "q8_0 back to f16" "would keep the 8-bit rounding" --head f16 "$q" "$tmp/x.gguf"
expect_fail "an f16 tied head to f16" "already f16" --head f16 "$demo" "$tmp/x.gguf"
expect_fail "--head q4_0" "not q8_0 or f16" --head q4_0 "$demo" "$tmp/x.gguf"
expect_fail "without --head" "required" "$demo" "$tmp/x.gguf"
expect_fail "a missing input" "$tmp/missing.gguf" --head q8_0 "$tmp/missing.gguf" "$tmp/x.gguf"
expect_fail "into a missing directory" "cannot create" --head q8_0 "$demo" "$tmp/no/x.gguf"
[ -e "$tmp/x.gguf" ] && bad "a refused requant left $tmp/x.gguf"
# f16 from an f32 embedding, then q8_0 from that f16 output.weight
"$BITNET" mkmodel --preset tiny --embd-type f32 --quiet --out "$tmp/f32.gguf" &&
	"$BITNET" requant --head f16 --quiet "$tmp/f32.gguf" "$tmp/f32-h16.gguf" &&
	"$BITNET" requant --head q8_0 --quiet "$tmp/f32-h16.gguf" "$tmp/f32-h8.gguf" &&
	"$BITNET" inspect "$tmp/f32-h8.gguf" | grep -q "^output.weight  *q8_0" &&
	ok "f32 embedding -> f16 output.weight -> q8_0 output.weight (replaced)" ||
	bad "f32 -> f16 -> q8_0 heads"

# --- hostile files ------------------------------------------------------------------
# set_type FILE TENSOR N_DIMS TYPE: rewrites the tensor's type in the tensor table (the first
# byte of its u32: the types here are < 256). A type with fewer bytes than the original
# leaves a valid file (the extent only shrinks), so the loader's own checks are reached.
set_type() {
	off=$(grep -obUa "$2" "$1" | head -n 1 | cut -d: -f1)
	[ -n "$off" ] || return 1
	pos=$((off + ${#2} + 4 + 8 * $3))
	printf "$(printf '\\%03o' "$4")" | dd of="$1" bs=1 seek=$pos conv=notrunc 2>/dev/null
}
expect_load_fail() {   # expect_load_fail WHAT FILE PATTERN...
	what=$1 f=$2
	shift 2
	if "$BITNET" logits --model "$f" --tokens 1,2 --out "$tmp/x.bin" > "$tmp/out.txt" 2>&1; then
		bad "$what: loaded"
		return
	fi
	for pat in "$@"; do
		grep -q -- "$pat" "$tmp/out.txt" || { bad "$what: '$pat' not in: $(cat "$tmp/out.txt")"; return; }
	done
	ok "$what refused: $(head -n 1 "$tmp/out.txt")"
}
"$BITNET" mkmodel --preset tiny --type f16 --quiet --out "$tmp/f16p.gguf" || bad "mkmodel f16"
cp "$tmp/f16p.gguf" "$tmp/h1.gguf" && set_type "$tmp/h1.gguf" blk.0.attn_q.weight 2 8 &&
	expect_load_fail "q8_0 on a projection" "$tmp/h1.gguf" "blk.0.attn_q.weight" "q8_0"
cp "$tmp/f16p.gguf" "$tmp/h2.gguf" && set_type "$tmp/h2.gguf" token_embd.weight 2 8 &&
	expect_load_fail "q8_0 token_embd" "$tmp/h2.gguf" "token_embd.weight" "q8_0"
cp "$tmp/f16p.gguf" "$tmp/h3.gguf" && set_type "$tmp/h3.gguf" blk.1.ffn_norm.weight 1 8 &&
	expect_load_fail "q8_0 norm" "$tmp/h3.gguf" "blk.1.ffn_norm.weight" "q8_0"
# the q8_0 head is the last tensor: cut into it
size=$(stat -c %s "$q")
head -c $((size - 1000)) "$q" > "$tmp/trunc.gguf"
expect_load_fail "a truncated q8_0 head" "$tmp/trunc.gguf" "output.weight" "past the end"
# (a q8_0 row length that is not a multiple of 32: the reader's block check, check_gguf)
exit $fail
