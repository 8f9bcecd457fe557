#!/bin/sh
# The main job, end to end: build, start bitnetd on a private D-Bus session bus with the demo
# model (models/demo.gguf, trained by tools/train), and stream an answer with bitnetctl.
# Usage: scripts/demo.sh [PROMPT]   (default: "seven eight nine")
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
prompt=${1:-seven eight nine}
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
template = raw
[engine]
plugin_dir = $PWD/plugins/.libs
[server]
temperature = 0
CONF

# Everything below runs inside a private session bus that goes away with it.
export run
BITNETD="$PWD/daemon/bitnetd" BITNETCTL="$PWD/client/bitnetctl" PROMPT="$prompt" \
dbus-run-session -- sh -ec '
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
	kill -TERM $pid
	wait $pid
'
