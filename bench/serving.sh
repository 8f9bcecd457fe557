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
#
#   bench/serving.sh --clients LIST MODEL [REPS=3] [TOKENS=64] [THREADS=2]
#
# Concurrent clients instead (LIST: client counts, e.g. 1,2,4,8): one bitnetd with slots =
# max(LIST, 4) (4: the four-at-once figure) and the default step_tokens; bench/loadgen.py
# drives it with `bitnetctl generate --json --greedy --max-tokens TOKENS`, one process per
# client. Every prompt starts with a character no recent prompt started with, so its first
# token after BOS differs from what the idle slots hold (the prefix cache matches against
# those); the cached_tokens the daemon reports are printed. Per repetition, for each N in
# LIST in turn, alternating which goes first:
# - N clients at once; aggregate t/s = all generated tokens / wall time from the first
#   bitnetctl's start to the last one's exit;
# - `bitnet bench -p 0 -n TOKENS -r 1 --parallel N` (its tg t/s is the aggregate over the N
#   sequences);
# then four requests one after another and four (other prompts, same shape) at once,
# alternating which goes first; a ~900-token prompt (counted on the daemon's tokenizer) with
# 8 tokens, then the same prompt plus a few words; a long greedy stream (cancelled once the
# rest is done) into which another ~900-token prompt arrives. The table gives medians over
# the repetitions for t/s, and over all requests of all repetitions for the latencies:
# TTFT = first_token_seconds (server side, submission to first token), p50 and p95; ITL =
# the median of the requests' own token_gap_p50_seconds and of their token_gap_p95_seconds;
# max gap = the largest token_gap_max_seconds. Then the three target lines: sequential /
# concurrent wall time for the four requests (>= 2.5x) and that gain over bench's
# --parallel 4 / --parallel 1 (>= 0.85); second / first time of the prefix pair, server
# side from submission to the last token (<= 0.3); the stream's token_gap_max_seconds over
# the long prompt's first_token_seconds (<= 0.2).
set -u
usage() {
	echo "usage: bench/serving.sh [--clients N,N,...] MODEL [REPS] [TOKENS] [THREADS]" >&2
	exit 2
}
CLIENTS=
if [ "${1:-}" = --clients ]; then
	[ $# -ge 3 ] || usage
	CLIENTS=$2
	shift 2
	echo "$CLIENTS" | grep -Eq '^[1-9][0-9]*(,[1-9][0-9]*)*$' ||
		{ echo "bench/serving.sh: --clients wants counts like 1,2,4,8" >&2; exit 2; }
fi
[ $# -ge 1 ] || usage
MODEL_ARG=$1
if [ -n "$CLIENTS" ]; then REPS=${2:-3}; else REPS=${2:-7}; fi
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
if [ -n "$CLIENTS" ]; then
	SLOTS=$(echo "$CLIENTS" | tr , '\n' | sort -n | tail -n 1)
	[ "$SLOTS" -ge 4 ] || SLOTS=4
	MAX_QUEUE=$((SLOTS + 16))
	write_config "$T/bitnetd.conf" "slots = $SLOTS"
	start_daemon "$T/bitnetd.conf"
	CPU=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
	"$PY" "$top_srcdir/bench/loadgen.py" --ctl "$BITNETCTL" --bitnet "$BITNET" --addr "$ADDR" \
		--model "$MODEL" --kernel "$(prop Kernel)" --cpu "${CPU:-unknown}" --threads "$THREADS" \
		--tokens "$TOKENS" --reps "$REPS" --slots "$(prop Slots)" \
		--step-tokens "$(prop StepTokens)" --context "$(prop Context)" "$CLIENTS" ||
		fail "bench/loadgen.py failed"
	daemon_alive
	exit 0
fi
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
