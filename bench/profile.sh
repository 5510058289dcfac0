#!/usr/bin/env bash
# bench/profile.sh: where a loaded hearth worker spends its CPU. `make profile` runs it.
#
# Starts the nginx origin and a 1-worker hearth in front of it (the same configuration as the
# hearth row of bench/run.sh), loads it with wrk in the small shape (GET /, 50 connections), and
# while the load runs samples the process with `perf record -e cpu-clock -g` (a software clock:
# hardware counters are not available on these machines). The top of `perf report --stdio`, by
# self time and then with callers, goes to OUT with the date, machine and the load's req/s.
#
# Knobs (environment):
#   DURATION  seconds sampled (10)        WARMUP  seconds of load before sampling starts (2)
#   TOP       lines of the flat report (60; 4x that of the call graphs)  OUT     where to write the report (bench/profile.txt)
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
TOP=${TOP:-60}
OUT_ARG=${OUT:-bench/profile.txt}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds, not '$WARMUP'"
[[ $TOP =~ ^[1-9][0-9]*$ ]] || die "TOP must be a positive integer, not '$TOP'"

ensure_tools wrk nginx python3 perf
for tool in wrk nginx python3 perf; do command -v "$tool" >/dev/null || die "$tool is required"; done
raise_fd_limit
build_hearth || die "hearth: release build failed"

read -r -a ports < <(free_ports 2)
start_origin "${ports[0]}"
start_hearth hearth "${ports[1]}" 1 || {
	explain_failure hearth
	exit 1
}
pid=${PID[hearth]}

set_shape small
# The load outlasts the sampling on both sides, so every sample is of a loaded worker.
wrk_args "$((WARMUP + DURATION + 2))" hearth
say "loading hearth for $((WARMUP + DURATION + 2))s; sampling ${DURATION}s of it"
wrk "${WRK_ARGS[@]}" >"$TMP/wrk.out" 2>&1 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
sleep "$WARMUP"
# perf stops sampling when `sleep` ends; -p leaves the workload alone.
perf record -e cpu-clock -g -p "$pid" -o "$TMP/perf.data" -- sleep "$DURATION" \
	>"$TMP/perf-record.log" 2>&1 &
PERF_PID=$!
wait "$PERF_PID" || die "perf record failed: $(tail -3 "$TMP/perf-record.log")"
PERF_PID=
wait "$LOAD_PID" || say "wrk failed: $(tail -1 "$TMP/wrk.out")"
LOAD_PID=
read -r rps _ p99 requests errors < <(parse_wrk "$TMP/wrk.out")

# report LINES ARGS...: the first LINES lines of `perf report --stdio ARGS`, without perf's
# blank lines, tips and padding. Symbols resolve against the release binary, which carries debug
# info for this (Cargo.toml). head closing the pipe early is the point, so SIGPIPE is no failure.
report() {
	local lines=$1
	shift
	perf report --stdio -i "$TMP/perf.data" "$@" 2>/dev/null |
		sed -e 's/[[:space:]]*$//' |
		grep -v -e '^$' -e '^#$' -e '^# To display' -e '^# (Tip' -e '^# Total Lost' -e '^# \.\.' |
		head -n "$lines" || true
}
mkdir -p "$(dirname "$OUT")"
{
	echo "# hearth profile, written by bench/profile.sh; rerun it rather than editing this file."
	echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel $(uname -r); $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc)"
	echo "# hearth commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes to src or Cargo files)')"
	echo "# command: DURATION=$DURATION WARMUP=$WARMUP TOP=$TOP OUT=$OUT_ARG bench/profile.sh"
	echo "# load: wrk ${WRK_ARGS[*]} -> $rps req/s, p99 $p99 ms, $requests requests, $errors errors"
	echo "# sampled: perf record -e cpu-clock -g -p HEARTH_PID -- sleep $DURATION, after ${WARMUP}s of load"
	echo
	echo "## Where the time goes: inclusive share of the system calls, and of the softirq work that"
	echo "## loopback runs inside sendto (the receiving side of each segment hearth sends)"
	echo "## perf report --stdio --children --sort sym -g none, these symbols"
	report 200 --children --sort sym -g none --percent-limit 1 |
		grep -E '\] (entry_SYSCALL_64_after_hwframe|__x64_sys_(sendto|sendmsg|recvfrom|epoll_wait)|do_softirq[.a-z0-9]*)$' || true
	echo
	echo "## Everything, by self time"
	echo "## perf report --stdio --no-children --fields overhead,dso,sym -g none --percent-limit 0.5"
	report "$TOP" --no-children --fields overhead,dso,sym -g none --percent-limit 0.5
	echo
	echo "## hearth's own code, by self time (percent of all samples)"
	echo "## perf report --stdio --no-children --dsos hearth --percentage absolute --fields overhead,sym -g none"
	report "$TOP" --no-children --dsos hearth --percentage absolute --fields overhead,sym -g none \
		--percent-limit 0.1
	echo
	echo "## Inclusive time with callers (user stacks end at libc: the release build has no frame pointers)"
	echo "## perf report --stdio --children --sort sym -g caller,2,callee --percent-limit 5"
	report $((TOP * 2)) --children --sort sym -g caller,2,callee --percent-limit 5
} >"$OUT"
say "wrote $OUT"
