#!/usr/bin/env bash
# bench/defaults.sh: issue 20's "no tuning" figure. hearth with no pool settings at all (the
# default keepalive_pool: size 320, purge every 5 s) and one worker, in front of the nginx origin
# of bench/lib.sh, loaded by 500 keep-alive clients in one wrk run: WARMUP seconds of warm-up,
# then ROUNDS windows of SECS seconds. Reported per window: the connections the origin accepted
# in it (stub_status), which is the figure the issue sets at zero. Before pool purges replaced eviction at release, this shape
# opened 680 upstream connections per 10,000 requests (12,462 for 183,611).
#
# A benchmark, not a test: it reports, and fails only on a broken setup.
# `bash bench/defaults.sh`, or `BUILD=0 ROUNDS=5 bash bench/defaults.sh`.
#
# Knobs (environment):
#   CONNS    wrk connections (500)     SECS    seconds per window (10)
#   WARMUP   seconds of the warm-up (3)  ROUNDS  windows (3)
#   BUILD    1 builds hearth first; 0 takes target/release/hearth as it is (1)
#   POOL     settings to try instead of none, as an inline table: POOL='{ size = 1024 }' ('')
set -euo pipefail

CONNS=${CONNS:-500}
SECS=${SECS:-10}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-3}
BUILD=${BUILD:-1}
POOL=${POOL:-}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

positive_knobs CONNS SECS WARMUP ROUNDS
ensure_tools nginx wrk
raise_fd_limit
hearth_binary_ready

read -r ORIGIN_PORT HEARTH_PORT < <(free_ports 2)
start_origin "$ORIGIN_PORT"
DIR=$TMP/hearth
mkdir -p "$DIR"
{
	echo "workers = 1"
	hearth_front "$HEARTH_PORT"
	cat <<TOML
[upstreams.u]
nodes = { "127.0.0.1:$UP_PORT" = 1 }
${POOL:+keepalive_pool = $POOL}
[[routes]]
uris = ["/*"]
upstream = "u"
TOML
} >"$DIR/hearth.toml"
launch_hearth hearth "$HEARTH_PORT" "$DIR" "$HEARTH_BIN" || die "hearth did not start: $(tail -5 "$DIR/hearth.log")"

URL="http://127.0.0.1:$HEARTH_PORT/"
# One continuous run: restarting wrk between windows would cut 500 requests in flight, and
# hearth rightly closes an upstream connection whose client left before its answer.
TOTAL=$((WARMUP + ROUNDS * SECS))
say "wrk -c $CONNS -d ${TOTAL}s: ${WARMUP}s of warm-up, then $ROUNDS windows of ${SECS}s"
wrk -t1 -c"$CONNS" -d"${TOTAL}s" "$URL" >"$TMP/run.txt" 2>&1 &
LOAD_PID=$!
START=$(date +%s%N)
# Waits until $1 seconds after the start of the run.
until_s() {
	local now
	now=$(date +%s%N)
	local left=$((START + $1 * 1000000000 - now))
	((left <= 0)) || sleep "$(awk -v ns="$left" 'BEGIN { printf "%.3f", ns / 1e9 }')"
}
until_s "$WARMUP"
mark=$(stub_accepts)
WARM=$((mark - 1))
printf '| window | origin accepts |\n|---|---:|\n'
for ((round = 1; round <= ROUNDS; round++)); do
	until_s $((WARMUP + round * SECS))
	next=$(stub_accepts)
	# Each read is one accept of its own, counted in the window after it: take it out.
	printf '| %ds-%ds | %d |\n' $((WARMUP + (round - 1) * SECS)) $((WARMUP + round * SECS)) $((next - mark - 1))
	mark=$next
done
wait "$LOAD_PID" || die "wrk failed: $(tail -3 "$TMP/run.txt")"
LOAD_PID=
say "requests in the whole run: $(awk '/requests in/ { print $1 }' "$TMP/run.txt"); the warm-up filled the pool with $WARM connection(s)"
