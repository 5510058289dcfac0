#!/usr/bin/env bash
# bench/chunks.sh: what one chunked upload of 1 MiB costs hearth, sent as one chunk and as 1 MiB
# of one-byte chunks (6 MiB on the wire), against the nginx origin of bench/lib.sh. `make bench`
# runs it after the load comparison.
#
# It owns the origin and one hearth (and, with HEARTH_BASE_BIN, a second one of another build, to
# show a change's effect in the same run). bench/chunks.py uploads each shape UPLOADS times per
# round on one keep-alive connection and times each upload to its answer; around each shape's
# uploads the hearth process's CPU ticks and system calls (perf stat raw_syscalls:sys_enter, or
# n/a where perf cannot count) are read. Rounds alternate the rows. Results go to OUT as medians
# over ROUNDS. A benchmark, not a test: only a broken setup makes it exit non-zero.
#
# Knobs (environment): ROUNDS (3), UPLOADS per round and shape (3), HEARTH_BIN, HEARTH_BASE_BIN,
# BUILD (1 builds hearth first), OUT (bench/chunks.md).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
UPLOADS=${UPLOADS:-3}
BUILD=${BUILD:-1}
OUT_ARG=${OUT:-bench/chunks.md}
COMMAND="${HEARTH_BASE_BIN:+HEARTH_BASE_BIN=$HEARTH_BASE_BIN }ROUNDS=$ROUNDS UPLOADS=$UPLOADS BUILD=$BUILD OUT=$OUT_ARG bash bench/chunks.sh"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $UPLOADS =~ ^[1-9][0-9]*$ ]] || die "UPLOADS must be a positive integer, not '$UPLOADS'"

ensure_tools nginx python3 perf
for tool in nginx python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
PERF=0
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
	PERF=1
else
	say "perf cannot count syscalls here; that column will say n/a"
fi
if ((BUILD)); then build_hearth || die "the release build failed"; fi
raise_fd_limit
CLK_TCK=$(getconf CLK_TCK)
ROWS=hearth
if [[ -n ${HEARTH_BASE_BIN:-} ]]; then
	[[ -x $HEARTH_BASE_BIN ]] || die "HEARTH_BASE_BIN ('$HEARTH_BASE_BIN') is not an executable"
	ROWS="hearth hearthb"
fi

read -r -a ports < <(free_ports 3)
start_origin "${ports[0]}"
start_hearth hearth "${ports[1]}" 1
if [[ $ROWS == *hearthb* ]]; then start_hearth hearthb "${ports[2]}" 1; fi

RESULTS=$TMP/results.tsv
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
	# Alternate which row goes first, so a drift of the machine does not favour one.
	order=$ROWS
	if ((round % 2 == 0)); then order=$(tr ' ' '\n' <<<"$ROWS" | tac | tr '\n' ' '); fi
	for name in $order; do
		for shape in one tiny; do
			pid=${PID[$name]}
			ticks0=$(cpu_ticks "$pid")
			if ((PERF)); then
				perf stat -e raw_syscalls:sys_enter -x, -o "$TMP/perf.$name.$shape.$round" -p "$pid" 2>/dev/null &
				PERF_PID=$!
				sleep 0.3
			fi
			secs=$(python3 "$ROOT/bench/chunks.py" "${PORT[$name]}" "$shape" "$UPLOADS") ||
				die "$name: the $shape uploads failed: $secs"
			ticks1=$(cpu_ticks "$pid")
			syscalls=n/a
			if [[ -n $PERF_PID ]]; then
				kill -INT "$PERF_PID" 2>/dev/null || true
				wait "$PERF_PID" 2>/dev/null || true
				PERF_PID=
				syscalls=$(awk -F, -v n="$UPLOADS" '$3 ~ /raw_syscalls:sys_enter/ {
					if ($1 ~ /^[0-9]+$/) printf "%.0f", $1 / n; else print "n/a" }' "$TMP/perf.$name.$shape.$round")
			fi
			cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v n="$UPLOADS" 'BEGIN { printf "%.1f", t * 1000 / hz / n }')
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$shape" "$round" "$secs" "$cpu" "$syscalls" >>"$RESULTS"
			say "  round $round $name $shape: ${secs} s per upload, $cpu ms CPU, $syscalls syscalls"
		done
	done
done

python3 - "$RESULTS" "$OUT" "$COMMAND" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$ROWS" <<'EOF'
import statistics, subprocess, sys, time
results, out, command, load0, load1, rows = sys.argv[1:]
runs = {}
for line in open(results):
    name, shape, _, secs, cpu, sc = line.rstrip("\n").split("\t")
    runs.setdefault((name, shape), []).append((float(secs), float(cpu), sc))
def med(xs):
    return statistics.median(xs) if xs else float("nan")
label = {"hearth": "hearth", "hearthb": "hearth, base build"}
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(out, "w") as f:
    f.write("# A 1 MiB chunked upload: one chunk against a million one-byte chunks\n\n")
    f.write("Written by bench/chunks.sh; rerun it rather than editing this file.\n\n")
    f.write(f"- command: `{command}`\n- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    f.write(f"- machine: {cpu_model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores; load average {load0} at the start, {load1} at the end\n")
    f.write(f"- hearth commit: {commit}\n\n")
    f.write("One hearth worker in front of the nginx origin (which reads and discards the body).\n")
    f.write("`one`: the body as one 1 MiB chunk (1 MiB on the wire). `tiny`: the same payload as\n")
    f.write("1,048,576 chunks of one byte (`1\\r\\nX\\r\\n`, 6 MiB on the wire). Per upload, medians over\n")
    f.write("the rounds: seconds from the first byte sent to the answer, hearth's CPU time and its\n")
    f.write("system calls (perf stat raw_syscalls:sys_enter on the hearth process).\n\n")
    f.write("| row | shape | seconds per upload | hearth CPU ms per upload | hearth syscalls per upload |\n|---|---|---:|---:|---:|\n")
    for name in rows.split():
        for shape in ("one", "tiny"):
            r = runs.get((name, shape), [])
            scs = [int(x[2]) for x in r if x[2].isdigit()]
            sc = f"{med(scs):.0f}" if scs else "n/a"
            f.write(f"| {label[name]} | {shape} | {med([x[0] for x in r]):.3f} | {med([x[1] for x in r]):.1f} | {sc} |\n")
EOF
say "wrote $OUT"
