#!/usr/bin/env bash
# bench/upgrade.sh: the proof of issue 22, item 1. Binary upgrades under continuous keep-alive
# load: wrk (-c 50 -t 2 -d 20 s by default) against a release hearth in front of the nginx
# origin of bench/lib.sh, and SIGUSR2 UPGRADES times (3) during the run, each to the hearth that
# the one before started, each waited for until the new hearth says it took over. It reports what
# wrk counted (requests, socket errors by kind, non-2xx answers) and the connections the origin
# accepted during the run (stub_status), against the pool the warm-up filled: zero is the
# target, since every upgrade hands the idle plain upstream connections over.
#
# The warm-up is a wrk run of its own (WARMUP seconds, the same clients), so the pool holds what
# 50 clients need before the measured run starts; its client connections close at its end, the
# pool's stay (idle timeout 300 s, request cap lifted, as bench/lib.sh's rows have them). The
# script's own stub_status reads cost one accept each and are taken out of the figures.
#
# It is a benchmark, not a test: failures are reported, never turned into a non-zero exit; only
# a broken setup is. `bash bench/upgrade.sh`, or `OUT=/tmp/u.md BUILD=0 bash bench/upgrade.sh`.
#
# Knobs (environment):
#   SECS       length of the measured wrk run (20)
#   CONNS      wrk connections (50)
#   THREADS    wrk threads (2)
#   WORKERS    hearth workers (2)
#   UPGRADES   SIGUSR2s during the run, spread evenly over it (3)
#   WARMUP     seconds of the warm-up run (3)
#   BUILD      1 builds hearth first; 0 takes target/release/hearth as it is (1)
#   HEARTH_BIN the hearth binary (target/release/hearth)
#   OUT        where to write the Markdown section (stdout only when unset)
set -euo pipefail

SECS=${SECS:-20}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
UPGRADES=${UPGRADES:-3}
WARMUP=${WARMUP:-3}
BUILD=${BUILD:-1}
OUT_ARG=${OUT:-}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=
[[ -z $OUT_ARG ]] || OUT=$(absolute "$OUT_ARG")

positive_knobs SECS CONNS THREADS WORKERS UPGRADES WARMUP
((SECS > UPGRADES * 2)) || die "SECS ($SECS) leaves too little time between $UPGRADES upgrades"

ensure_tools nginx wrk python3
for tool in nginx wrk python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
raise_fd_limit
hearth_binary_ready

# ---------------------------------------------------------------------------------------------
# The origin and hearth.
read -r ORIGIN_PORT HEARTH_PORT < <(free_ports 2)
start_origin "$ORIGIN_PORT"

DIR=$TMP/hearth
mkdir -p "$DIR"
LOG=$DIR/hearth.log
{
	echo "workers = $WORKERS"
	echo "upgrade_socket = \"$DIR/upgrade.sock\""
	hearth_front "$HEARTH_PORT"
	hearth_origin_route
} >"$DIR/hearth.toml"
# info: the upgrade's own lines (the new pid, what moved) are what this script follows. Every
# hearth an upgrade starts writes to the same log, as it inherits its parent's output.
start "$LOG" env RUST_LOG=info "$HEARTH_BIN" -c "$DIR/hearth.toml"
HEARTH_PID=$LAST_PID
wait_port "$HEARTH_PORT" "$HEARTH_PID" || die "hearth did not start: $(tail -5 "$LOG")"
for ((tries = 0; tries < 100; tries++)); do
	grep -q "upgrade socket on" "$LOG" && break
	sleep 0.1
done
grep -q "upgrade socket on" "$LOG" || die "hearth offers no upgrade socket: $(tail -5 "$LOG")"

# Lines of the log that contain $1.
lines() { grep -c -- "$1" "$LOG" || true; }

# Sends SIGUSR2 to the hearth serving now and waits up to 30 s until the new one has taken
# everything over (its "took over" line, the $1th); the new pid joins PIDS, so it is stopped
# with the rest.
upgrade() {
	local n=$1 tries pid
	kill -USR2 "$HEARTH_PID"
	for ((tries = 0; tries < 300; tries++)); do
		(($(lines "upgrade: took over") >= n)) && break
		grep -q "upgrade failed" "$LOG" && break
		sleep 0.1
	done
	pid=$(grep -o "SIGUSR2: started .* (pid [0-9]*)" "$LOG" | tail -1 | grep -o "[0-9]*)$" | tr -d ')')
	if (($(lines "upgrade: took over") < n)) || [[ -z $pid ]]; then
		say "upgrade $n did not complete: $(grep -i "upgrade" "$LOG" | tail -3)"
		return 1
	fi
	PIDS+=("$pid")
	HEARTH_PID=$pid
	say "upgrade $n: hearth pid $pid serves"
}

# ---------------------------------------------------------------------------------------------
# Warm-up, then the measured run with the upgrades in it.
say "warm-up: wrk -c $CONNS -t $THREADS -d ${WARMUP}s"
load "$TMP/warmup.txt" -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$HEARTH_PORT/" ||
	die "wrk failed in the warm-up: $(tail -3 "$TMP/warmup.txt")"
POOL=$(stub_accepts)
BEFORE=$(stub_accepts)

say "run: wrk -c $CONNS -t $THREADS -d ${SECS}s, SIGUSR2 $UPGRADES times"
RUN=$TMP/run.txt
wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$HEARTH_PORT/" >"$RUN" 2>&1 &
LOAD_PID=$!
START=$(date +%s%N)
DONE_UPGRADES=0
# Origin accepts at the start of each stretch of the run: before the first upgrade (what the
# clients' own spread over the cores costs, with no upgrade), then from each SIGUSR2 to the next.
MARKS=("$BEFORE")
for ((i = 1; i <= UPGRADES; i++)); do
	# Upgrade i at i/(UPGRADES+1) of the run.
	at=$((START + SECS * 1000000000 * i / (UPGRADES + 1)))
	now=$(date +%s%N)
	((at <= now)) || sleep "$(awk -v ns=$((at - now)) 'BEGIN { printf "%.3f", ns / 1e9 }')"
	MARKS+=("$(stub_accepts)")
	upgrade "$i" || break
	DONE_UPGRADES=$i
done
wait "$LOAD_PID" || say "wrk exited with an error: $(tail -3 "$RUN")"
LOAD_PID=
MARKS+=("$(stub_accepts)")
# Each stub_accepts read is one accept, counted in the next stretch: take it out. POOL counts the
# warm-up's connections (its own read excluded).
POOL=$((POOL - 1))
STRETCHES=()
for ((i = 1; i < ${#MARKS[@]}; i++)); do STRETCHES+=($((MARKS[i] - MARKS[i - 1] - 1))); done
DURING=$((MARKS[${#MARKS[@]} - 1] - BEFORE - ${#MARKS[@]} + 1))

# ---------------------------------------------------------------------------------------------
# Report.
read -r RPS _ P99 REQUESTS _ < <(parse_wrk "$RUN")
SOCKET=$(grep "Socket errors:" "$RUN" | sed 's/^ *Socket errors: *//' || true)
NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$RUN")
TOOK=$(grep -o "took over [0-9]* idle upstream connection(s)" "$LOG" | grep -o "[0-9]*" | paste -sd/ - || true)
VAIN=$(lines "in vain; they connect")
FAILED=$(lines "upgrade failed")
report() {
	echo "## Binary upgrade under keep-alive load (issue 22, item 1)"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); nproc $(nproc); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- hearth commit: $(cd "$ROOT" && git rev-parse --short HEAD), $WORKERS worker(s); origin: nginx, one worker"
	echo "- command: \`SECS=$SECS CONNS=$CONNS THREADS=$THREADS WORKERS=$WORKERS UPGRADES=$UPGRADES WARMUP=$WARMUP bash bench/upgrade.sh\`"
	echo "- wrk: \`wrk -t$THREADS -c$CONNS -d${SECS}s --latency\`, keep-alive, GET /"
	echo
	echo "| figure | value |"
	echo "|---|---|"
	echo "| upgrades (SIGUSR2) completed | $DONE_UPGRADES of $UPGRADES |"
	echo "| requests (req/s, p99 ms) | $REQUESTS ($RPS, $P99) |"
	echo "| wrk socket errors | ${SOCKET:-none} |"
	echo "| non-2xx answers | ${NON2XX:-0} |"
	echo "| pool after the warm-up (origin accepts) | $POOL |"
	echo "| origin accepts during the run | $DURING |"
	echo "| of which before the first upgrade, then from each SIGUSR2 to the next | ${STRETCHES[*]} |"
	echo "| idle connections each new hearth took over | ${TOOK:-none} |"
	echo "| cores whose requests waited in vain and connected | $VAIN |"
	echo "| upgrade failures logged | $FAILED |"
}
if [[ -n $OUT ]]; then
	mkdir -p "$(dirname "$OUT")"
	report >"$OUT"
	cat "$OUT"
	say "wrote $OUT"
else
	report
fi
