#!/bin/sh
# Soak: SOAK_REQUESTS requests (default 240; the long form in the issue note used 1200) from
# SOAK_CLIENTS concurrent clients with random options (sampling, stops, templates, Chat and
# Generate, Tokenize), random Ctrl-C and SIGKILL, and a reload (SIGHUP) in the middle.
# Every client that was not killed gets its answer or a named error; after the warm-up the
# daemon's open fds and threads do not grow and VmRSS grows less than SOAK_RSS_KB.
#   long form: SOAK_REQUESTS=1200 SOAK_CLIENTS=6 make check TESTS=tests/soak.sh
. "${top_srcdir:-$(dirname "$0")/..}/tests/daemon-lib.sh"
need_dbus
N=${SOAK_REQUESTS:-240}
C=${SOAK_CLIENTS:-4}
make_model 2048
write_config "$T/bitnetd.conf" "[engine]" "threads = 2" "[server]" "slots = 4" "max_tokens_limit = 256" \
	"max_tokens = 32" "max_queue = 64"
start_bus
start_daemon "$T/bitnetd.conf"

fds() { ls "/proc/$DAEMON_PID/fd" | wc -l; }
threads() { sed -n 's/^Threads:[[:space:]]*//p' "/proc/$DAEMON_PID/status"; }
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$DAEMON_PID/status"; }

# client ID COUNT: COUNT requests with options drawn from a small LCG seeded by ID; writes
# one line per request to $T/c.ID: "<kind> <exit status> <named error or ->"
client() {
	id=$1 n=$2 x=$(( $1 * 7919 + 17 ))
	: > "$T/c.$id"
	i=0
	while [ $i -lt $n ]; do
		x=$(( (x * 1103515245 + 12345) % 2147483648 ))
		r=$(( x / 65536 ))
		mt=$(( r % 48 + 1 ))
		temp=$(( r % 5 ))
		set -- --max-tokens $mt --seed $r
		case $(( r % 4 )) in
		0) set -- "$@" --greedy ;;
		1) set -- "$@" --temperature "0.$temp" --top-k $(( r % 50 )) ;;
		2) set -- "$@" --temperature 1.$temp --top-p 0.9 --min-p 0.05 --repeat-penalty 1.1 ;;
		3) set -- "$@" --temperature 0.7 --stop "e" --stop "the" ;;
		esac
		[ $(( r % 3 )) = 0 ] && set -- "$@" --template bitnet
		prompt="soak $id/$i: the $(( r % 997 )) quick brown foxes"
		action=$(( r % 10 ))   # 0: Ctrl-C, 1: SIGKILL, 2: tokenize, 3: chat, else generate
		err=$T/e.$id
		case $action in
		2)
			timeout 60 "$BITNETCTL" --address "$ADDR" tokenize "$prompt" > /dev/null 2> "$err"
			rc=$? kind=tokenize ;;
		3)
			printf 'hello\nwhat now?\n' | timeout 60 "$BITNETCTL" --address "$ADDR" chat \
				--max-tokens $mt > /dev/null 2> "$err"
			rc=$? kind=chat ;;
		0|1)
			"$BITNETCTL" --address "$ADDR" generate "$@" --max-tokens 200 "$prompt" > "$T/o.$id" 2> "$err" &
			p=$!
			sleep 0.0$(( r % 9 + 1 ))
			if [ $action = 0 ]; then kill -INT $p 2>/dev/null; kind=ctrl-c; else kill -KILL $p 2>/dev/null; kind=killed; fi
			wait $p
			rc=$? ;;
		*)
			timeout 60 "$BITNETCTL" --address "$ADDR" generate "$@" "$prompt" > /dev/null 2> "$err"
			rc=$? kind=generate ;;
		esac
		name=$(grep -o 'org\.[A-Za-z0-9.]*Error\.[A-Za-z]*\|generation failed: [^:]*\|Busy\|busy' "$err" | head -n 1)
		[ -n "$name" ] || [ ! -s "$err" ] || name="msg:$(head -c 60 "$err" | tr ' \n' '__')"
		echo "$kind $rc ${name:--}" >> "$T/c.$id"
		i=$((i + 1))
	done
}

per=$(( (N + C - 1) / C ))
warm=$(( per / 5 ))
# warm-up: a fifth of each client's share, then the baseline
pids=
for id in $(seq "$C"); do client "$id" "$warm" & pids="$pids $!"; done
for p in $pids; do wait "$p"; done
fd0=$(fds) th0=$(threads) rss0=$(rss)
for id in $(seq "$C"); do mv "$T/c.$id" "$T/warm.$id"; done

t0=$(date +%s)
pids=
for id in $(seq "$C"); do client "$id" $(( per - warm )) & pids="$pids $!"; done
BG_PIDS=$pids
# a reload in the middle of it
sleep 2
kill -HUP "$DAEMON_PID"
for p in $pids; do wait "$p"; done
BG_PIDS=
t1=$(date +%s)
daemon_alive
# the daemon settles (killed clients' requests are cancelled when their names leave)
for _ in $(seq 100); do [ "$(prop ActiveRequests)" = 0 ] && [ "$(prop QueueDepth)" = 0 ] && break; sleep 0.1; done
fd1=$(fds) th1=$(threads) rss1=$(rss)

cat "$T"/warm.* "$T"/c.* > "$T/all"
total=$(wc -l < "$T/all")
[ "$total" -ge "$N" ] || fail "only $total of $N requests recorded"
# every client not killed ended with success, Ctrl-C (130) or a named error
bad=$(awk '$1 != "killed" && $2 != 0 && !($1 == "ctrl-c" && $2 == 130) && $3 == "-"' "$T/all" | head -n 5)
[ -z "$bad" ] || fail "clients ended without an answer or a named error: $bad"
unnamed=$(awk '$3 ~ /^msg:/' "$T/all" | head -n 3)
[ -z "$unnamed" ] || echo "note: messages without an error name: $unnamed"
grep -q "reload" "$T/daemon.log" || fail "no reload in the log"
summary=$(awk '{ k[$1]++; if ($2 == 0) ok++ } END { for (x in k) printf "%s %d, ", x, k[x]; printf "exit 0: %d", ok }' "$T/all")

[ "$fd1" -le "$fd0" ] || fail "fds: $fd0 after the warm-up, $fd1 at the end: $(ls -l "/proc/$DAEMON_PID/fd")"
[ "$th1" -le "$th0" ] || fail "threads: $th0 after the warm-up, $th1 at the end"
bound=${SOAK_RSS_KB:-16384}
case " ${CFLAGS:-} $(grep -o -- '-fsanitize=address' "$top_builddir/Makefile" 2>/dev/null | head -n1) " in
*fsanitize=address*) bound=$((bound * 8)) ;;   # ASan's quarantine holds freed memory
esac
[ $((rss1 - rss0)) -lt "$bound" ] || fail "VmRSS grew from $rss0 kB to $rss1 kB (bound $bound kB)"
ok "$total requests in $((t1 - t0)) s from $C clients ($summary), a reload in the middle: fds $fd0 -> $fd1, threads $th0 -> $th1, VmRSS $rss0 -> $rss1 kB"
stop_daemon
