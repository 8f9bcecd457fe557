#!/bin/sh
# bitnet run: seeds, the context limit, Ctrl-C, the JSON record.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
m="$tmp/tiny.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --ctx 8192 --quiet --out "$m" || { echo "FAIL mkmodel"; exit 1; }
small="$tmp/small-ctx.gguf"
"$BITNET" mkmodel --preset tiny --seed 1 --ctx 64 --quiet --out "$small" || exit 1

gen() { "$BITNET" run --model "$m" --template raw --max-tokens 24 --temperature 1 "$@" 2>/dev/null; }
a=$(gen --prompt "hello there" --seed 7)
b=$(gen --prompt "hello there" --seed 7)
c=$(gen --prompt "hello there" --seed 8)
d=$(BITNET_SEED=7 gen --prompt "hello there")
e=$(gen --prompt "hello there" --seed 7 --plugin scalar --threads 1)
[ "$a" = "$b" ] && ok "same seed, same text" || bad "same seed gave different text"
[ "$a" != "$c" ] && ok "another seed, other text" || bad "seeds 7 and 8 gave the same text"
[ "$a" = "$d" ] && ok "BITNET_SEED sets the default seed" || bad "BITNET_SEED=7 differs from --seed 7"
[ "$a" = "$e" ] && ok "same tokens on the scalar plugin and one thread" || bad "plugin/threads changed the sampled text"

long=$(i=0; while [ $i -lt 200 ]; do printf 'word%d ' $i; i=$((i + 1)); done)
if "$BITNET" run --model "$small" --template raw --prompt "$long" >/dev/null 2>"$tmp/err"; then
	bad "a prompt longer than the context was accepted"
elif grep -q "does not fit the context of 64" "$tmp/err" && grep -Eq "prompt of [0-9]+ tokens" "$tmp/err"; then
	ok "prompt longer than the context: $(cat "$tmp/err")"
else
	bad "context error lacks the sizes: $(cat "$tmp/err")"
fi

# Ctrl-C: generation stops, the record is still printed, exit 130. Greedy on this model runs
# for thousands of tokens, far longer than the signal takes to arrive.
"$BITNET" run --model "$m" --template raw --prompt "interrupted" --greedy --max-tokens 4000 \
	--plugin scalar --json > "$tmp/out" 2>"$tmp/err" &
pid=$!
i=0
while [ ! -s "$tmp/out" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep 0.3
kill -INT $pid
wait $pid
rc=$?
rec=$(tail -n 1 "$tmp/out")
[ $rc = 130 ] && ok "Ctrl-C exits 130" || bad "Ctrl-C exit status $rc"
case $rec in
*'"stop_reason":"cancelled"'*) ok "the JSON record is printed after Ctrl-C" ;;
*) bad "no cancelled record after Ctrl-C: $rec" ;;
esac

rec=$("$BITNET" run --model "$m" --template raw --prompt "x" --greedy --max-tokens 3 --json 2>/dev/null | tail -n 1)
for key in prompt_tokens generated_tokens stop_reason prompt_tokens_per_second \
	generation_tokens_per_second plugin threads cpus seed model_header_sha256 corrections strict; do
	case $rec in *"\"$key\""*) ;; *) bad "JSON record lacks $key: $rec" ;; esac
done
case $rec in *'"stop_reason":"length"'*) ok "JSON record complete, stop reason length" ;; *) bad "stop reason: $rec" ;; esac

# BITNET_CPU_DISABLE: the features named are gone for plugin choice; a bad name is refused
feats=$(BITNET_CPU_DISABLE=avx2,avx512f,asimd "$BITNET" kernels 2>/dev/null | sed -n 's/^cpu features: //p')
case " $feats " in
*" avx2 "* | *" avx512f "* | *" asimd "*) bad "BITNET_CPU_DISABLE=avx2,avx512f,asimd left: $feats" ;;
*) ok "BITNET_CPU_DISABLE masks features ($feats)" ;;
esac
rec=$(BITNET_CPU_DISABLE=avx2,avx512f,asimd "$BITNET" run --model "$m" --template raw --prompt "x" \
	--greedy --max-tokens 2 --json 2>/dev/null | tail -n 1)
case $rec in
*'"plugin":"scalar"'*) ok "with avx2, avx512f and asimd disabled the scalar plugin runs" ;;
*) bad "BITNET_CPU_DISABLE=avx2,avx512f,asimd did not fall back to scalar: $rec" ;;
esac
BITNET_CPU_DISABLE=warp9 "$BITNET" kernels > /dev/null 2> "$tmp/err"
rc=$?
[ $rc = 2 ] && grep -q warp9 "$tmp/err" && ok "a bad BITNET_CPU_DISABLE is refused, named" ||
	bad "BITNET_CPU_DISABLE=warp9: exit $rc, $(cat "$tmp/err")"
exit $fail
