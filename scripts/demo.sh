#!/bin/sh
# The main job, end to end: build, start bitnetd on a private D-Bus session bus with the demo
# model (models/demo.gguf, trained by tools/train), stream a raw continuation with
# `bitnetctl generate` and hold a two-turn conversation with `bitnetctl chat` (the chat
# format of the model's architecture; the second message refers to the first answer).
# Usage: scripts/demo.sh [PROMPT [MESSAGE1 MESSAGE2]]
#   defaults: "seven eight nine"; "what comes after monday?", "and after that?"
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
prompt=${1:-seven eight nine}
msg1=${2:-what comes after monday?}
msg2=${3:-and after that?}
cd "$top"
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"

model="$top/models/demo.gguf"
if [ ! -f "$model" ]; then
	echo "demo: $model is missing; using a random synthetic model (it only babbles)" >&2
	model="$PWD/demo-random.gguf"
	./tools/bitnet mkmodel --preset tiny --seed 1 --out "$model"
fi
run=$(mktemp -d "${TMPDIR:-/tmp}/bitnetd-demo.XXXXXX")
trap 'rm -rf "$run"' EXIT
cat > "$run/bitnetd.conf" <<CONF
[model]
path = $model
template = auto
[engine]
plugin_dir = $PWD/plugins/.libs
[server]
temperature = 0
CONF

# Everything below runs inside a private session bus that goes away with it.
export run
# generate is raw text (no template); chat renders the messages in the model's chat format.
BITNETD="$PWD/daemon/bitnetd" BITNETCTL="$PWD/client/bitnetctl" PROMPT="$prompt" \
MSG1="$msg1" MSG2="$msg2" dbus-run-session -- sh -ec '
	"$BITNETD" --session --config "$run/bitnetd.conf" 2>"$run/bitnetd.log" &
	pid=$!
	i=0
	until "$BITNETCTL" --session status >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
			echo "demo: bitnetd did not become ready:" >&2
			cat "$run/bitnetd.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "prompt: $PROMPT"
	printf "bitnetd: "
	"$BITNETCTL" --session generate --max-tokens 16 "$PROMPT"
	echo
	# bitnetctl chat reads one message per line and prints one answer per line
	printf "%s\n%s\n" "$MSG1" "$MSG2" |
		"$BITNETCTL" --session chat --max-tokens 16 > "$run/answers"
	echo "chat:"
	echo "  you:     $MSG1"
	echo "  bitnetd: $(sed -n 1p "$run/answers")"
	echo "  you:     $MSG2"
	echo "  bitnetd: $(sed -n 2p "$run/answers")"
	kill -TERM $pid
	wait $pid
'
