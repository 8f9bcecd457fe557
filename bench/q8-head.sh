#!/bin/sh
# The 8-bit LM head against the f16 one (issue 13). Not a test: prints figures for
# bench/RESULTS.md. Run from the build tree (or set BITNET and CMP_LOGITS).
#
#   bench/q8-head.sh quality            the demo model: perplexity on its held-out text, top-1
#                                       agreement of the two heads at every position, and the
#                                       held-out answers each head predicts
#   bench/q8-head.sh speed [ROUNDS]     2B-4T shapes: bitnet bench tg64, f16 and q8_0 heads
#                                       alternating, ROUNDS rounds (default 5) of -r 3 each
#
# Environment: BITNET (default ./tools/bitnet), MODEL_DIR for the 2B-4T files (default
# /tmp/bitnet-q8-bench; kept between runs), BENCH_ARGS (default "-p 0 -n 64 -r 3").
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BITNET=${BITNET:-./tools/bitnet}
tab=$(printf '\t')

quality() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/q8-quality.XXXXXX") || exit 1
	trap 'rm -rf "$tmp"' EXIT
	demo="$here/models/demo.gguf"
	q="$tmp/demo-q8.gguf"
	"$BITNET" requant --head q8_0 "$demo" "$q" || exit 1
	# the held-out text: every held-out prompt of models/demo.greedy.tsv with its expected
	# answer (corpus.py keeps these questions out of training), one after the other
	grep -v '^#' "$here/models/demo.greedy.tsv" > "$tmp/cases"
	cut -f2,3 "$tmp/cases" | tr -d '\t' | tr '\n' ' ' > "$tmp/heldout.txt"
	# and tests/perplexity.sh's text in the corpus style (runs starting at position 0)
	awk 'BEGIN {
		split("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen", o, " ")
		split("twenty thirty forty fifty sixty seventy eighty ninety", t, " ")
		for (n = 1; n < 100; n++) printf "%s ", n < 20 ? o[n] : (n % 10 ? t[int(n / 10) - 1] " " o[n % 10] : t[n / 10 - 1])
		printf "one hundred. "
		for (w = 0; w < 4; w++) printf "monday tuesday wednesday thursday friday saturday sunday "
		for (y = 0; y < 3; y++) printf "january february march april may june july august september october november december "
		printf "a b c d e f g h i j k l m n o p q r s t u v w x y z.\n" }' > "$tmp/corpus.txt"
	for t in "heldout 32" "corpus 16"; do
		set -- $t
		for m in "$demo" "$q"; do
			echo "perplexity $1.txt --ctx $2, $(basename "$m"): $("$BITNET" perplexity --model "$m" \
				--file "$tmp/$1.txt" --ctx $2 2>/dev/null)"
		done
	done
	V=$("$BITNET" inspect --json "$demo" | sed -n 's/.*"n_vocab": *\([0-9]*\).*/\1/p' | head -n 1)
	argmax_rows() {   # one argmax per logits row (lowest id on ties)
		od -An -v -j 8 -w$((V * 4)) -t f4 "$1" | awk '{
			best = 1
			for (i = 2; i <= NF; i++) if ($i + 0 > $best + 0) best = i
			print best - 1 }'
	}
	pos=0 agree=0 ans=0 right_f=0 right_q=0 cases=0
	while IFS="$tab" read -r task prompt answer pids aids gids ok; do
		cases=$((cases + 1))
		na=$(echo "$aids" | tr ',' '\n' | wc -l)
		feed=$pids
		[ $na -gt 1 ] && feed="$pids,$(echo "$aids" | cut -d, -f1-$((na - 1)))"
		"$BITNET" logits --model "$demo" --tokens "$feed" --mode batch --out "$tmp/f.bin" &&
			"$BITNET" logits --model "$q" --tokens "$feed" --mode batch --out "$tmp/q.bin" || exit 1
		argmax_rows "$tmp/f.bin" > "$tmp/fa"
		argmax_rows "$tmp/q.bin" > "$tmp/qa"
		n=$(wc -l < "$tmp/fa")
		pos=$((pos + n))
		agree=$((agree + $(paste -d' ' "$tmp/fa" "$tmp/qa" | awk '$1 == $2' | wc -l)))
		# the answer positions, teacher-forced: does each head predict the expected token?
		echo "$aids" | tr ',' '\n' > "$tmp/want"
		ans=$((ans + na))
		right_f=$((right_f + $(tail -n $na "$tmp/fa" | paste -d' ' - "$tmp/want" | awk '$1 == $2' | wc -l)))
		right_q=$((right_q + $(tail -n $na "$tmp/qa" | paste -d' ' - "$tmp/want" | awk '$1 == $2' | wc -l)))
	done < "$tmp/cases"
	echo "top-1 agreement, q8_0 vs f16 head: $agree / $pos positions of $cases held-out sequences"
	echo "expected answer token predicted (teacher-forced): f16 head $right_f / $ans, q8_0 head $right_q / $ans"
}

speed() {
	rounds=${1:-5}
	dir=${MODEL_DIR:-/tmp/bitnet-q8-bench}
	args=${BENCH_ARGS:--p 0 -n 64 -r 3}
	mkdir -p "$dir" || exit 1
	f16="$dir/2b4t.gguf" q8="$dir/2b4t-q8.gguf"
	[ -f "$f16" ] || "$BITNET" mkmodel --preset 2b4t --out "$f16" || exit 1
	[ -f "$q8" ] || "$BITNET" requant --head q8_0 "$f16" "$q8" || exit 1
	cat "$f16" "$q8" > /dev/null   # page cache
	echo "bitnet bench $args, alternating f16 / q8_0 head, $rounds rounds ($(date -u +%H:%M) UTC)"
	: > "$dir/f16.tg"
	: > "$dir/q8.tg"
	for r in $(seq 1 "$rounds"); do
		line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
		for h in f16 q8; do
			m=$f16
			[ $h = q8 ] && m=$q8
			out=$("$BITNET" bench --model "$m" $args --json 2>/dev/null) || exit 1
			tg=$(printf '%s\n' "$out" | sed -n 's/^ *"tg_tokens_per_second": *\([0-9.]*\).*/\1/p')
			bw=$(printf '%s\n' "$out" | sed -n 's/^ *"read_bandwidth_gb_per_second": *\([0-9.]*\).*/\1/p')
			echo "$tg" >> "$dir/$h.tg"
			line="$line $(awk -v h=$h -v t="$tg" -v b="$bw" 'BEGIN { printf "%s %.2f t/s (read %.1f GB/s)", h, t, b }')"
		done
		echo "$line"
	done
	med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
	mf=$(med "$dir/f16.tg") mq=$(med "$dir/q8.tg")
	awk -v a="$mq" -v b="$mf" 'BEGIN { printf "median tg: f16 head %.2f t/s, q8_0 head %.2f t/s, speed-up %.2fx\n", b, a, a / b }'
}

case ${1:-} in
quality) quality ;;
speed) shift; speed "$@" ;;
*) echo "usage: bench/q8-head.sh quality | speed [ROUNDS]" >&2; exit 2 ;;
esac
