#!/bin/sh
# Serving overhead: generation speed through `bitnet run` and through bitnetd + bitnetctl
# against `bitnet bench`, on one model, same threads, runs interleaved (not a test).
#
#   bench/serving.sh MODEL [REPS=7] [TOKENS=64] [THREADS=2]     (from the build directory)
#
# Each repetition runs the three in turn (rotating which goes first): bench decodes TOKENS
# steps; run and bitnetctl generate TOKENS+1 greedy tokens, i.e. the same TOKENS forward
# passes after the prompt (the first token comes from the prompt's logits). All three are
# reported per forward pass, so the comparison is like for like; the prompt is short and
# raw (no chat template, as Generate), so the passes sit at about the same positions as
# bench's. bitnetd runs on a private bus (tests/daemon-lib.sh) with the same plugin
# directory and thread count.
set -u
[ $# -ge 1 ] || { echo "usage: bench/serving.sh MODEL [REPS] [TOKENS] [THREADS]" >&2; exit 2; }
MODEL_ARG=$1
REPS=${2:-7}
TOKENS=${3:-64}
THREADS=${4:-2}
case $MODEL_ARG in /*) ;; *) MODEL_ARG=$(pwd)/$MODEL_ARG ;; esac
[ -r "$MODEL_ARG" ] || { echo "bench/serving.sh: cannot read $MODEL_ARG" >&2; exit 2; }
top_builddir=$(pwd)
top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
. "$top_srcdir/tests/daemon-lib.sh"
MODEL=$MODEL_ARG
export THREADS

PY=
for p in python3 /usr/bin/python3; do
	command -v "$p" >/dev/null 2>&1 && { PY=$p; break; }
done
[ -n "$PY" ] || fail "python3 is needed to read the JSON figures"
field() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d'"$1"')'; }

start_bus
write_config "$T/bitnetd.conf"
start_daemon "$T/bitnetd.conf"
PROMPT="The quick brown fox"
N1=$((TOKENS + 1))

bench_once() {
	"$BITNET" bench -m "$MODEL" -p 0 -n "$TOKENS" -r 1 --threads "$THREADS" --json 2>/dev/null |
		field "['tg_tokens_per_second']"
}
run_once() {
	"$BITNET" run -m "$MODEL" --threads "$THREADS" --template raw --greedy --max-tokens "$N1" --json \
		-p "$PROMPT" 2>/dev/null | tail -n 1 |
		field "['generated_tokens'] and (d['generated_tokens'] - 1) / d['generation_seconds']"
}
ctl_once() {
	ctl generate --greedy --max-tokens "$N1" --json "$PROMPT" 2>/dev/null | tail -n 1 |
		field "['stats']['generated_tokens'] and (d['stats']['generated_tokens'] - 1) / d['stats']['generation_seconds']"
}

echo "bench/serving.sh: $MODEL, $TOKENS forward passes, $THREADS threads, $REPS repetitions"
B= R= C=
i=0
while [ $i -lt "$REPS" ]; do
	case $((i % 3)) in
	0) order="bench run ctl" ;;
	1) order="run ctl bench" ;;
	*) order="ctl bench run" ;;
	esac
	line="rep $((i + 1)):"
	for what in $order; do
		v=$(${what}_once) || fail "$what failed"
		[ -n "$v" ] || fail "$what printed no figure"
		case $what in bench) B="$B $v" ;; run) R="$R $v" ;; ctl) C="$C $v" ;; esac
		line="$line $what $(printf %.2f "$v")"
	done
	echo "$line"
	i=$((i + 1))
done
"$PY" - "$B" "$R" "$C" <<'EOF'
import statistics as s, sys
b, r, c = ([float(x) for x in a.split()] for a in sys.argv[1:4])
mb = s.median(b)
print("median per-pass t/s: bench %.2f, bitnet run %.2f (%+.1f %%), bitnetctl/bitnetd %.2f (%+.1f %%)"
      % (mb, s.median(r), 100 * (s.median(r) / mb - 1), s.median(c), 100 * (s.median(c) / mb - 1)))
EOF
