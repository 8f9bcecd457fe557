#!/bin/sh
# The engine against the independent numpy reference (tools/train/ref.py, no shared code) on
# synthetic models of shapes and seeds that the golden set does not have: GQA ratios 1..4,
# head dims 64 and 128, both FFN activations, .scale tensors; one token per call and the
# whole prompt at once, held to the golden tolerances.
PY=
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "SKIP: no python3 with numpy (Debian: python3-numpy)"; exit 77; }
REF="$top_srcdir/tools/train/ref.py"
CMP="$top_builddir/tests/cmp-logits"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
# name: mkmodel arguments
while IFS=: read -r name args; do
	[ -n "$name" ] || continue
	m="$tmp/$name.gguf"
	# shellcheck disable=SC2086
	"$BITNET" mkmodel $args --quiet --out "$m" || { echo "FAIL $name: mkmodel $args"; fail=1; continue; }
	v=$("$BITNET" inspect --json "$m" | sed -n 's/.*"n_vocab": *\([0-9]*\).*/\1/p' | head -n 1)
	toks=$(awk -v v="$v" -v s="${#name}" 'BEGIN { srand(s * 7 + v); printf "%d", v - 4;
		for (i = 0; i < 15; i++) printf ",%d", int(rand() * (v - 4)); }')
	"$PY" "$REF" logits "$m" --tokens "$toks" --out "$tmp/$name.ref.bin" >/dev/null ||
		{ echo "FAIL $name: ref.py"; fail=1; continue; }
	for mode in seq batch; do
		"$BITNET" logits --model "$m" --tokens "$toks" --mode $mode --out "$tmp/$name.$mode.bin" ||
			{ echo "FAIL $name: bitnet logits"; fail=1; continue; }
		if r=$("$CMP" -q "$tmp/$name.$mode.bin" "$tmp/$name.ref.bin"); then
			echo "ok   $name $mode ($args): $r"
		else
			echo "FAIL $name $mode ($args): $r"
			fail=1
		fi
	done
done <<'CASES'
gqa3:--hidden 384 --ff 768 --layers 2 --heads 6 --kv-heads 2 --vocab 600 --seed 101
mha:--hidden 256 --ff 384 --layers 3 --heads 4 --kv-heads 4 --vocab 520 --seed 202
hd128:--hidden 512 --ff 1024 --layers 2 --heads 4 --kv-heads 1 --vocab 777 --seed 303
lowgamma:--hidden 640 --ff 1280 --layers 2 --heads 10 --kv-heads 5 --vocab 900 --gamma-rms 0.0395 --seed 404
silu:--arch bitnet --scale-tensors --hidden 256 --ff 640 --layers 2 --heads 2 --kv-heads 1 --vocab 530 --seed 505
b25:--arch bitnet-25 --hidden 384 --ff 896 --layers 2 --heads 3 --kv-heads 3 --vocab 610 --seed 606
CASES
exit $fail
