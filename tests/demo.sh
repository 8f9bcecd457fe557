#!/bin/sh
# The trained demo model (models/demo.gguf, tools/train/) against the trainer's independent
# numpy reference (tools/train/ref.py, which reproduces shared/golden's logits bitwise):
#  1. logits of a few prompts + their greedy continuations, one token per call (seq) and
#     whole prompt (batch), within the golden tolerance (cmp-logits), argmax identical;
#  2. held-out prompts of every corpus task (models/demo.greedy.tsv): the engine's greedy
#     continuation must equal the reference's token for token, and the test states how
#     often it is the right answer (at least 95% required);
#  3. held-out conversations in the chat format bitnetd uses for this architecture
#     (models/demo.chat.tsv: their first question, e.g. "what comes after tuesday?", is one
#     that no training conversation asks; a second turn is a follow-up such as "and after
#     that?"): one-turn ones through `bitnet run --template auto`, one- and two-turn ones
#     through `bitnetctl chat` (one line per turn) against bitnetd on a private bus
#     (tests/daemon-lib.sh). Every answer must equal the reference's, and the test states
#     how often a conversation is answered right (one turn: at least MIN_CHAT1 on both
#     paths; two turns: both answers right in at least MIN_CHAT2).
# Greedy continuations are checked through logits: feeding prompt + the reference's greedy
# tokens, the engine's argmax at every generated position must be that same token, which is
# exactly "greedy decoding produces the same tokens". No python needed.
P="${DEMO_PREFIX:-$top_srcdir/models/demo}"
CMP="$top_builddir/tests/cmp-logits"
MIN_PCT=95
# one turn: 86/100 for the committed model. Two turns need both answers: the follow-up
# after a right first answer is right 51/52 (98%), so at the one-turn floor of 80% two turns
# come to about 0.8 x 0.98 = 78%; the committed model has 51/60 (85%).
MIN_CHAT1=80
MIN_CHAT2=75
CHAT_TOKENS=24   # mkdata.py --chat-tokens
for f in "$P.gguf" "$P.prompts.txt" "$P.ref.bin" "$P.greedy.tsv" "$P.chat.tsv"; do
	[ -f "$f" ] || { echo "FAIL: $f missing"; exit 1; }
done
[ -x "$BITNET" ] || { echo "SKIP: bitnet tool not built ($BITNET)"; exit 77; }
[ -x "$CMP" ] || { echo "SKIP: $CMP not built"; exit 77; }
"$BITNET" logits --help >/dev/null 2>&1 || { echo "SKIP: bitnet has no logits verb"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0

# n_vocab from the first reference file's header (int32 little endian at byte 4)
V=$(od -An -v -j 4 -N 4 -t d4 "$P.ref.bin" | tr -d ' ')
[ "$V" -gt 0 ] 2>/dev/null || { echo "FAIL: $P.ref.bin: bad header"; exit 1; }

# argmax of every row of a logits file, one per line (lowest id on ties)
argmax_rows() {
	od -An -v -j 8 -w$((V * 4)) -t f4 "$1" | awk '{
		best = 1
		for (i = 2; i <= NF; i++) if ($i + 0 > $best + 0) best = i
		print best - 1
	}'
}

# 1. logits of the demo prompts; demo.ref.bin holds their files back to back
off=0
while IFS='	' read -r name toks text cont; do
	n=$(echo "$toks" | tr ',' '\n' | wc -l)
	size=$((8 + n * V * 4))
	tail -c +$((off + 1)) "$P.ref.bin" | head -c $size > "$tmp/ref.bin"
	off=$((off + size))
	for mode in seq batch; do
		if ! "$BITNET" logits --model "$P.gguf" --tokens "$toks" --mode $mode \
			--out "$tmp/out.bin" > "$tmp/log" 2>&1; then
			echo "FAIL $name $mode: bitnet logits failed: $(cat "$tmp/log")"
			fail=1
			continue
		fi
		if out=$("$CMP" "$tmp/out.bin" "$tmp/ref.bin" 2>&1); then
			echo "ok   $name ($text) $mode: $out"
		else
			echo "FAIL $name ($text) $mode: $out"
			fail=1
		fi
	done
done < "$P.prompts.txt"
[ $off -eq $(wc -c < "$P.ref.bin") ] || { echo "FAIL: $P.ref.bin size does not match $P.prompts.txt"; fail=1; }

# the same prompts as text through `bitnet run` (tokenizer + generation loop + detokenizer)
if "$BITNET" run --help >/dev/null 2>&1; then
	while IFS='	' read -r name toks text cont; do
		case $name in chat*) tpl=auto ;; *) tpl=raw ;; esac
		out=$("$BITNET" run --model "$P.gguf" --prompt "$text" --template $tpl --greedy \
			--max-tokens 8 2>"$tmp/log")
		if [ "$out" = "$cont" ]; then
			echo "ok   run ($tpl) '$text' -> '$out'"
		else
			echo "FAIL run ($tpl) '$text' -> '$out', reference '$cont' ($(cat "$tmp/log"))"
			fail=1
		fi
	done < "$P.prompts.txt"
else
	echo "note: bitnet has no run verb yet; text generation not checked"
fi

# 2. held-out greedy continuations
total=0 right=0 same=0
grep -v '^#' "$P.greedy.tsv" > "$tmp/cases"
while IFS='	' read -r task prompt answer pids aids gids ok; do
	total=$((total + 1))
	np=$(echo "$pids" | tr ',' '\n' | wc -l)
	ng=$(echo "$gids" | tr ',' '\n' | wc -l)
	# prompt + all reference greedy tokens but the last: rows np-1 .. np+ng-2 predict them
	feed=$pids
	if [ $ng -gt 1 ]; then
		feed="$pids,$(echo "$gids" | cut -d, -f1-$((ng - 1)))"
	fi
	if ! "$BITNET" logits --model "$P.gguf" --tokens "$feed" --mode batch \
		--out "$tmp/g.bin" > "$tmp/log" 2>&1; then
		echo "FAIL $task '$prompt': bitnet logits failed: $(cat "$tmp/log")"
		fail=1
		continue
	fi
	eng=$(argmax_rows "$tmp/g.bin" | tail -n $ng | paste -sd, -)
	if [ "$eng" = "$gids" ]; then
		same=$((same + 1))
	else
		echo "FAIL $task '$prompt': engine greedy $eng, reference $gids"
		fail=1
	fi
	[ "$eng" = "$aids" ] && right=$((right + 1))
done < "$tmp/cases"
[ $total -gt 0 ] || { echo "FAIL: no held-out cases"; exit 1; }
pct=$((right * 1000 / total))
echo "held-out greedy continuations identical to the reference: $same/$total"
echo "held-out greedy accuracy (engine): $right/$total = $((pct / 10)).$((pct % 10))% (required: $MIN_PCT%)"
[ $same -eq $total ] || fail=1
[ $((right * 100)) -ge $((MIN_PCT * total)) ] || { echo "FAIL: accuracy below $MIN_PCT%"; fail=1; }

# 3. held-out conversations. demo.chat.tsv: turns, forms, then user message, expected answer
# and the reference's answer of each turn (an answer may be empty: cut, not read, splits it).
grep -v '^#' "$P.chat.tsv" > "$tmp/chat"
field() { printf '%s\n' "$line" | cut -f"$1"; }
# pct RIGHT TOTAL: "RIGHT/TOTAL = P%"
pct() { [ "$2" -gt 0 ] && p=$(($1 * 1000 / $2)) || p=0; echo "$1/$2 = $((p / 10)).$((p % 10))%"; }
# judge PATH MIN_PCT RIGHT SAME TOTAL WHAT
judge() {
	echo "held-out chat $6 via $1: answers identical to the reference: $4/$5"
	echo "held-out chat $6 via $1: right: $(pct $3 $5) (required: $2%)"
	[ "$5" -gt 0 ] || { echo "FAIL: no held-out conversations ($6)"; return 1; }
	[ "$4" -eq "$5" ] || { echo "FAIL: $1 answers differ from the reference ($6)"; return 1; }
	[ $(($3 * 100)) -ge $(($2 * $5)) ] || { echo "FAIL: $1 below $2% ($6)"; return 1; }
	return 0
}

# 3a. one turn through `bitnet run` (the model's architecture picks the bitnet chat format)
if "$BITNET" run --help >/dev/null 2>&1; then
	total=0 right=0 same=0
	while IFS= read -r line; do
		[ "$(field 1)" = 1 ] || continue
		u=$(field 3) a=$(field 4) r=$(field 5)
		total=$((total + 1))
		out=$("$BITNET" run --model "$P.gguf" --prompt "$u" --template auto --greedy \
			--max-tokens $CHAT_TOKENS 2>"$tmp/log" </dev/null) ||
			echo "FAIL run '$u': $(cat "$tmp/log")"
		[ "$out" = "$r" ] && same=$((same + 1)) ||
			echo "FAIL chat run '$u' -> '$out', reference '$r'"
		[ "$out" = "$a" ] && right=$((right + 1)) ||
			echo "wrong chat run '$u' -> '$out' (right: '$a')"
	done < "$tmp/chat"
	judge "bitnet run" $MIN_CHAT1 $right $same $total "one turn" || fail=1
fi

# 3b. one and two turns through bitnetd and `bitnetctl chat`, in a subshell: daemon-lib.sh
# starts the private bus and the daemon and stops them (its EXIT trap) when the subshell ends.
# Exit 77 there (no dbus-daemon) skips this part only.
(
	. "$top_srcdir/tests/daemon-lib.sh"
	MODEL=$P.gguf
	start_bus
	write_config "$T/demo.conf"
	start_daemon "$T/demo.conf"
	res=0
	for n in 1 2; do
		total=0 right=0 same=0 first=0 second=0
		while IFS= read -r line; do
			[ "$(field 1)" = $n ] || continue
			total=$((total + 1))
			if [ $n = 1 ]; then
				printf '%s\n' "$(field 3)" > "$T/in"
			else
				printf '%s\n%s\n' "$(field 3)" "$(field 6)" > "$T/in"
			fi
			ctl chat --greedy --max-tokens $CHAT_TOKENS < "$T/in" > "$T/out" 2>"$T/err" ||
				echo "FAIL bitnetctl chat: $(cat "$T/err")"
			# the expected and the reference answers, one line per turn, like the output
			if [ $n = 1 ]; then
				field 4 > "$T/want"
				field 5 > "$T/ref"
			else
				printf '%s\n%s\n' "$(field 4)" "$(field 7)" > "$T/want"
				printf '%s\n%s\n' "$(field 5)" "$(field 8)" > "$T/ref"
			fi
			got=$(paste -sd'|' "$T/out")
			if cmp -s "$T/out" "$T/ref"; then same=$((same + 1))
			else echo "FAIL chat $(paste -sd'|' "$T/in") -> '$got', reference '$(paste -sd'|' "$T/ref")'"; fi
			if cmp -s "$T/out" "$T/want"; then right=$((right + 1))
			else echo "wrong chat $(paste -sd'|' "$T/in") -> '$got' (right: '$(paste -sd'|' "$T/want")')"; fi
			if [ $n = 2 ] && [ "$(sed -n 1p "$T/out")" = "$(field 4)" ]; then
				first=$((first + 1))
				[ "$(sed -n 2p "$T/out")" = "$(field 7)" ] && second=$((second + 1))
			fi
		done < "$tmp/chat"
		if [ $n = 1 ]; then
			judge "bitnetctl chat" $MIN_CHAT1 $right $same $total "one turn" || res=1
		else
			echo "held-out chat two turns via bitnetctl chat: follow-ups right after a right" \
				"first answer: $(pct $second $first)"
			judge "bitnetctl chat" $MIN_CHAT2 $right $same $total "two turns" || res=1
		fi
	done
	stop_daemon
	exit $res
)
case $? in
0) ;;
77) echo "note: no private bus (dbus-daemon missing): bitnetctl chat not checked" ;;
*) fail=1 ;;
esac
exit $fail
