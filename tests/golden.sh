#!/bin/sh
# Golden parity (tests/golden/README.md, unpacked into $TEST_DATA/golden by make check): every case, one token per call (seq) and the whole
# prompt in one call (batch), 1 and 2 threads, every plugin this CPU can run, against the
# independent reference (*.ref.bin) and, for I2_S cases, bitnet.cpp's generation path.
# Also: identical logits whatever the batching, threads and weight format; the 48-token
# prompt+greedy sequence; the 32-token greedy continuation through `bitnet run`.
G="${TEST_DATA:-$top_builddir/tests/golden-data}/golden"
[ -f "$G/cases.tsv" ] || { echo "SKIP: $G not present"; exit 77; }
CMP="$top_builddir/tests/cmp-logits"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() {   # check DESCRIPTION command...
	desc=$1
	shift
	if out=$("$@" 2>&1); then
		pass=$((pass + 1))
		echo "ok   $desc: $out"
	else
		fail=$((fail + 1))
		echo "FAIL $desc: $out"
	fi
}

plugins=$("$BITNET" kernels | awk '$NF == "usable" { print $1 }')
echo "plugins usable here: $plugins"

grep -v '^#' "$G/cases.tsv" | while IFS='	' read -r id file toks greedy args; do
	for plugin in $plugins; do
		for mode in seq batch; do
			for th in 1 2; do
				o="$tmp/$id.$plugin.$mode.$th.bin"
				"$BITNET" logits --model "$G/$file" --tokens "$toks" --mode $mode \
					--threads $th --plugin $plugin --out "$o" || { echo "FAIL $id: bitnet logits failed"; echo x >> "$tmp/failed"; continue; }
			done
			check "$id $plugin $mode vs ref" "$CMP" -q "$tmp/$id.$plugin.$mode.1.bin" "$G/$id.ref.bin"
			case $file in *i2_s*)
				check "$id $plugin $mode vs bitnet.cpp" "$CMP" -q "$tmp/$id.$plugin.$mode.1.bin" "$G/$id.bitnetcpp-seq.bin" ;;
			esac
		done
		check "$id $plugin: seq/1 thread == batch/2 threads bitwise" \
			cmp "$tmp/$id.$plugin.seq.1.bin" "$tmp/$id.$plugin.batch.2.bin"
	done
	[ $fail -eq 0 ] || echo x >> "$tmp/failed"
	echo "$pass" >> "$tmp/passed"
done
[ -f "$tmp/failed" ] && exit 1

pass=0
for fmt in tq2_0 tq1_0 f16; do
	check "tiny-$fmt logits == tiny-i2_s logits bitwise" cmp "$tmp/tiny-$fmt.scalar.batch.1.bin" "$tmp/tiny.scalar.batch.1.bin"
done

tiny_toks=$(awk -F'\t' '$1 == "tiny" { print $3 }' "$G/cases.tsv")
greedy=$(cat "$G/tiny.greedy.txt" | tr -d ' \n')
for plugin in $plugins; do
	"$BITNET" logits --model "$G/tiny-i2_s.gguf" --tokens "$tiny_toks,$greedy" --mode batch \
		--plugin $plugin --out "$tmp/full.$plugin.bin"
	check "tiny prompt+greedy (48) $plugin vs ref" "$CMP" -q "$tmp/full.$plugin.bin" "$G/tiny.full.ref.bin"
	check "tiny prompt+greedy (48) $plugin vs bitnet.cpp" "$CMP" -q "$tmp/full.$plugin.bin" "$G/tiny.full.bitnetcpp-seq.bin"
	got=$("$BITNET" run --model "$G/tiny-i2_s.gguf" --tokens "$tiny_toks" --greedy --max-tokens 32 \
		--plugin $plugin --json 2>/dev/null | tail -n 1 | sed -n 's/.*"output_ids":\[\([0-9,]*\)\].*/\1/p')
	check "bitnet run --greedy $plugin continuation == tiny.greedy.txt" test "$got" = "$greedy"
done
[ $fail -eq 0 ] || exit 1
echo "all golden checks passed"
