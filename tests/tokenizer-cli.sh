#!/bin/sh
# bitnet tokenize / detokenize on the golden tiny model's byte-level llama-bpe vocabulary
# (ids 0-255 are the bytes; 508 BOS, 510 <|eot_id|>). Needs $TEST_DATA (else SKIP).
set -u
model=${TEST_DATA:-}/golden/tiny-i2_s.gguf
[ -f "$model" ] || { echo "SKIP: $model absent"; exit 77; }
: "${BITNET:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
has_id() { case " $1 " in *" $2 "*) return 0;; esac; return 1; }

# BOS follows the file's add_bos_token (true) unless --no-bos
ids=$("$BITNET" tokenize --model "$model" "Hello world") || bad "tokenize exit $?"
[ "${ids%% *}" = 508 ] || bad "no BOS first: $ids"
ids=$("$BITNET" tokenize --model "$model" --no-bos "Hello world") || bad "tokenize --no-bos"
has_id "$ids" 508 && bad "BOS with --no-bos: $ids"

# control tokens only with --special
ids=$("$BITNET" tokenize --model "$model" --no-bos --special "a<|eot_id|>b")
[ "$ids" = "97 510 98" ] || bad "--special: '$ids'"
ids=$("$BITNET" tokenize --model "$model" --no-bos "a<|eot_id|>b")
has_id "$ids" 510 && bad "control token parsed without --special: $ids"

# round trip through stdin: exact bytes, trailing newline, tabs, CRLF, multi-byte text
printf 'Hello,\tworld!\r\n  caf\303\251 \342\202\254 \360\237\230\200\n\n' > "$tmp/in"
ids=$("$BITNET" tokenize --model "$model" --no-bos - < "$tmp/in") || bad "tokenize stdin"
"$BITNET" detokenize --model "$model" $ids > "$tmp/out" || bad "detokenize"
cmp -s "$tmp/in" "$tmp/out" || bad "round trip through stdin differs"
echo "$ids" | "$BITNET" detokenize --model "$model" - > "$tmp/out2" || bad "detokenize -"
cmp -s "$tmp/in" "$tmp/out2" || bad "detokenize from stdin differs"

# bytes that are not UTF-8 survive with --raw and become U+FFFD without it
printf 'a\377b\342\202' > "$tmp/inv"
ids=$("$BITNET" tokenize --model "$model" --no-bos - < "$tmp/inv") || bad "tokenize invalid UTF-8"
"$BITNET" detokenize --model "$model" --raw $ids > "$tmp/outr"
cmp -s "$tmp/inv" "$tmp/outr" || bad "--raw round trip of invalid UTF-8 differs"
"$BITNET" detokenize --model "$model" $ids > "$tmp/outf"
printf 'a\357\277\275b\357\277\275' | cmp -s - "$tmp/outf" || bad "U+FFFD replacement"
out=$("$BITNET" detokenize --model "$model" 226,130,172) || bad "detokenize split euro"
[ "$out" = "$(printf '\342\202\254')" ] || bad "euro from byte tokens: '$out'"

# --pieces: one line per token after the ids
n=$("$BITNET" tokenize --model "$model" --pieces "ab" | wc -l)
[ "$n" -ge 2 ] || bad "--pieces printed $n lines"

# errors: usage 2, failures 1, one line on stderr
"$BITNET" tokenize "x" 2>/dev/null; [ $? = 2 ] || bad "missing --model not exit 2"
"$BITNET" tokenize --model "$model" 2>/dev/null; [ $? = 2 ] || bad "missing text not exit 2"
"$BITNET" detokenize --model "$model" 1 x 2>/dev/null; [ $? = 2 ] || bad "bad id not exit 2"
"$BITNET" detokenize --model "$model" 99999 2>"$tmp/err"; [ $? = 1 ] || bad "out-of-range id not exit 1"
[ "$(wc -l < "$tmp/err")" = 1 ] && grep -q 99999 "$tmp/err" || bad "out-of-range message: $(cat "$tmp/err")"
"$BITNET" tokenize --model "$tmp/none.gguf" x 2>"$tmp/err"; [ $? = 1 ] || bad "missing model not exit 1"
grep -q none.gguf "$tmp/err" || bad "missing-model message does not name the file"
exit $fail
