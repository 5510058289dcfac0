#!/usr/bin/env bash
# bench/callgrind.sh: instructions per request of one or more hearth builds, for A/B of small
# changes on a machine too busy for wall-clock figures to tell them apart.
#
# Starts the nginx origin of bench/run.sh, then for each binary in turn a 1-worker hearth (the
# hearth row's configuration) under `valgrind --tool=callgrind`, loads it with wrk in the small
# shape (GET /, 50 connections; SHAPE=body for the body shape) for WARMUP seconds, zeroes the counters (`callgrind_control -z`),
# loads it for DURATION seconds more and dumps (`callgrind_control -d`). Instructions retired in
# hearth's process (user space only: the kernel's share is not counted) divided by the requests
# wrk completed in that window is the figure; it moves by well under 1% between runs of the same
# binary, where req/s and CPU time on this machine move by 10-20%. Under valgrind hearth runs
# some 50x slower, so more events are ready per `epoll_wait` than at full speed: compare builds
# with each other, not with the native run's syscall counts. The top functions of each dump go
# to OUT beside the totals; the dumps themselves to OUT.1.out, OUT.2.out and so on, for
# `callgrind_annotate`.
#
# Knobs (environment):
#   BINS      hearth binaries to measure, in order (default target/release/hearth, built first)
#   SHAPE     small or body, the load shapes of bench/run.sh (small)
#   DURATION  seconds counted (5)     WARMUP  seconds of load before counting (2)
#   LOAD_CONNS  wrk connections (50)  TOP     functions listed per binary (25)
#   OUT       where to write the report (bench/callgrind.txt)
set -euo pipefail

SHAPE=${SHAPE:-small}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
LOAD_CONNS=${LOAD_CONNS:-50}
TOP=${TOP:-25}
OUT_ARG=${OUT:-bench/callgrind.txt}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")

[[ $SHAPE == small || $SHAPE == body ]] || die "SHAPE must be small or body, not '$SHAPE'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds, not '$WARMUP'"
[[ $LOAD_CONNS =~ ^[1-9][0-9]*$ ]] || die "LOAD_CONNS must be a positive integer, not '$LOAD_CONNS'"

ensure_tools wrk nginx valgrind
for tool in wrk nginx valgrind callgrind_control callgrind_annotate; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
raise_fd_limit
if [[ -z ${BINS:-} ]]; then
	build_hearth || die "hearth: release build failed"
	BINS=$HEARTH_BIN
fi
for bin in $BINS; do [[ -x $bin ]] || die "not an executable: $bin"; done

read -r -a ports < <(free_ports 2)
start_origin "${ports[0]}"
set_shape "$SHAPE"
CONNS=$LOAD_CONNS

mkdir -p "$(dirname "$OUT")"
{
	echo "# written by bench/callgrind.sh on $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# command: BINS=\"$BINS\" SHAPE=$SHAPE DURATION=$DURATION WARMUP=$WARMUP LOAD_CONNS=$LOAD_CONNS bench/callgrind.sh"
} >"$OUT.tmp"

n=0
for bin in $BINS; do
	n=$((n + 1))
	name=cg$n
	dir=$TMP/$name
	mkdir -p "$dir"
	# start_hearth writes the hearth row's configuration and runs HEARTH_BIN on it: make that a
	# wrapper which runs the binary under callgrind.
	printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s "%s" "$@"\n' \
		"$dir/callgrind.out" "$bin" >"$dir/run.sh"
	chmod +x "$dir/run.sh"
	HEARTH_BIN=$dir/run.sh
	start_hearth "$name" "${ports[1]}" 1 || die "$bin did not start under valgrind"
	pid=${PID[$name]}
	if ((WARMUP > 0)); then
		wrk_args "$WARMUP" "$name"
		wrk "${WRK_ARGS[@]}" >/dev/null 2>&1 || true
	fi
	callgrind_control -z "$pid" >/dev/null 2>&1
	wrk_args "$DURATION" "$name"
	wrk "${WRK_ARGS[@]}" >"$dir/wrk.out" 2>&1 || true
	callgrind_control -d "$pid" >/dev/null 2>&1
	stop "$pid"
	read -r rps _ _ requests errors < <(parse_wrk "$dir/wrk.out")
	# The dump asked for is callgrind.out.1; callgrind.out is what ran after it, until exit.
	dump=$dir/callgrind.out.1
	[[ -f $dump ]] || die "no callgrind dump from $bin: $(tail -3 "$dir/hearth.log")"
	cp "$dump" "$OUT.$n.out"
	total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
	per=$(awk -v t="$total" -v r="$requests" 'BEGIN { if (r > 0) printf "%.0f", t / r; else print "n/a" }')
	say "$bin: $per instructions/request ($requests requests, $rps req/s under valgrind, $errors errors)"
	{
		echo
		echo "## $bin: $per instructions per request ($total over $requests requests, $errors errors)"
		# Self cost per function; the thread's entry points, at 100% inclusive, are left out.
		callgrind_annotate --auto=no --inclusive=no --threshold=100 "$dump" 2>/dev/null |
			sed -n -e '/file:function/,$p' | sed -e 's/[[:space:]]*$//' |
			grep -v -e '^-*$' -e '(100.0%)' | head -n "$((TOP + 1))" || true
	} >>"$OUT.tmp"
done
mv "$OUT.tmp" "$OUT"
say "wrote $OUT"
