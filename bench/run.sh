#!/usr/bin/env bash
# bench/run.sh: hearth against nginx and HAProxy, end to end over loopback. `make bench` runs it.
#
# One nginx origin and each proxy (one worker each, plus hearth with two) start on ports the
# kernel hands out; wrk drives each in turn, in rounds that rotate the order. Per run it records
# requests/s, p50/p99 latency, the proxy's CPU time and syscalls per request, upstream connections
# opened per 10,000 requests and the proxy's RSS; it reports the median over the rounds, hearth's
# ratios to HAProxy and nginx, and PASS or FAIL against each numeric target of issue 4. Then, on
# fresh processes, the RSS each idle keep-alive client connection costs (10,000 of them held by
# bench/idle_conns.py), and a `strace -c` breakdown of hearth under load, saved beside OUT as
# strace.txt. The shapes of issue 21, where the upstream pool is stressed (stale, spike, cap,
# large, rate), run afterwards in bench/shapes.sh, whose header says what each does; their tables
# and targets go into the same results file. It is a benchmark, not a test: a slow or failing
# proxy is reported, never turned into a non-zero exit; only a broken setup is.
#
# A whole run takes about 25 minutes on the 2-core machine. A subset, e.g. only two of the new
# shapes and nothing else: SHAPES="stale spike" IDLE_CONNS=0 STRACE=0 bash bench/run.sh
#
# Knobs (environment):
#   ROUNDS        measured rounds per shape (3)
#   DURATION      seconds per measured run of the small shape (10)
#   SIDE_DURATION seconds per measured run of the c500 and body shapes (4)
#   WARMUP        seconds of warm-up per row and shape (2)
#   SHAPES        any of: small (GET /, 50 conns), c500 (GET /, 500 conns), body (POST 1 KiB to
#                 /big, 16 KiB answers, 50 conns), https (GET /, 50 conns, proxies talk TLS to
#                 the origin: hearth with its pool, hearth with size 0, nginx keepalive 32 with
#                 proxy_ssl_session_reuse on), and those of bench/shapes.sh: stale, spike, cap,
#                 large, rate       (default "small c500 body https stale spike cap large rate")
#   SHAPE_ROUNDS  rounds of bench/shapes.sh's shapes (ROUNDS); its own knobs (STALE_BURSTS,
#                 CAP_SECS, LARGE_SECS, RATE_SECS, RATES) pass through
#   PROXIES       any of: hearth hearth2 hearthb floor nginx32 nginx64 haproxy (default all but
#                 hearthb); hearth2 (two workers) runs in the small shape only, to compare with
#                 hearth; hearthb is one worker of HEARTH_BASE_BIN, for A/B within one run (in
#                 bench/shapes.sh's shapes too);
#                 floor is examples/floor.rs, a forwarder that does nothing but relay bytes over
#                 one upstream connection per client, the least any proxy can cost here
#   HEARTH_BIN    the hearth binary under test (target/release/hearth, built first)
#   BUILD         1 builds hearth, the floor and the generators first; 0 takes the binaries as
#                 they are (1)
#   HEARTH_BASE_BIN  the binary of the hearthb row (e.g. an older commit's release build); when
#                 unset, HEARTH_BIN, which makes hearthb an A/A: two identical rows, whose
#                 distance apart is the machine's
#   IDLE_CONNS    idle keep-alive connections for the RSS measure (10000; 0 skips it)
#   IDLE_PROXIES  which proxies get that measure (default "hearth nginx64 haproxy")
#   STRACE        seconds of load under `strace -c` for the breakdown (3; 0 skips it)
#   OUT           where to write results (bench/results.md)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SIDE_DURATION=${SIDE_DURATION:-4}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-small c500 body https stale spike cap large rate}
SHAPE_ROUNDS=${SHAPE_ROUNDS:-$ROUNDS}
PROXIES=${PROXIES:-hearth hearth2 floor nginx32 nginx64 haproxy}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_PROXIES=${IDLE_PROXIES:-hearth nginx64 haproxy}
STRACE=${STRACE:-3}
BUILD=${BUILD:-1}
OUT_ARG=${OUT:-bench/results.md}
COMMAND="${HEARTH_BASE_BIN:+HEARTH_BASE_BIN=$HEARTH_BASE_BIN }ROUNDS=$ROUNDS SHAPE_ROUNDS=$SHAPE_ROUNDS DURATION=$DURATION SIDE_DURATION=$SIDE_DURATION WARMUP=$WARMUP SHAPES=\"$SHAPES\" PROXIES=\"$PROXIES\" IDLE_CONNS=$IDLE_CONNS IDLE_PROXIES=\"$IDLE_PROXIES\" STRACE=$STRACE BUILD=$BUILD OUT=$OUT_ARG bench/run.sh"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")
STRACE_OUT=$(dirname "$OUT")/strace.txt
METRICS_OUT=$(dirname "$OUT")/hearth-metrics.txt

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, not '$DURATION'"
[[ $SIDE_DURATION =~ ^[1-9][0-9]*$ ]] || die "SIDE_DURATION must be a positive integer, not '$SIDE_DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds, not '$WARMUP'"
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "IDLE_CONNS must be a whole number, not '$IDLE_CONNS'"
[[ $BUILD == 0 || $BUILD == 1 ]] || die "BUILD must be 0 or 1, not '$BUILD'"
[[ $STRACE =~ ^[0-9]+$ ]] || die "STRACE must be a whole number of seconds, not '$STRACE'"
[[ $SHAPE_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "SHAPE_ROUNDS must be a positive integer, not '$SHAPE_ROUNDS'"
# The shapes measured here with wrk, and those bench/shapes.sh measures.
WRK_SHAPES="" POOL_SHAPES=""
for shape in $SHAPES; do
	case $shape in
	small | c500 | body | https) WRK_SHAPES+="$shape " ;;
	stale | spike | cap | large | rate) POOL_SHAPES+="$shape " ;;
	*) die "unknown shape '$shape' (small, c500, body, https, stale, spike, cap, large, rate)" ;;
	esac
done
for proxy in $PROXIES; do
	case $proxy in hearth | hearth2 | hearthb | floor | nginx32 | nginx64 | haproxy) ;; *) die "unknown proxy '$proxy'" ;; esac
done
for proxy in $IDLE_PROXIES; do
	case $proxy in hearth | nginx32 | nginx64 | haproxy) ;; *) die "unknown idle proxy '$proxy'" ;; esac
done
in_list() { [[ " $2 " == *" $1 "* ]]; }
if in_list hearthb "$PROXIES"; then
	if [[ -z $HEARTH_BASE_BIN ]]; then
		# The same binary as the hearth row, built below with it when BUILD is 1.
		HEARTH_BASE_BIN=$HEARTH_BIN
	elif [[ ! -x $HEARTH_BASE_BIN ]]; then
		die "PROXIES has hearthb but HEARTH_BASE_BIN ('$HEARTH_BASE_BIN') is not an executable"
	fi
fi
if ((IDLE_CONNS == 0)); then IDLE_PROXIES=; fi
if ((STRACE > 0)) && ! in_list hearth "$PROXIES"; then STRACE=0; fi

# ---------------------------------------------------------------------------------------------
# Tools; perf and strace are optional (their figures then say n/a).
ensure_tools wrk nginx python3 perf strace ss
if in_list haproxy "$PROXIES $IDLE_PROXIES"; then ensure_tools haproxy; fi
for tool in wrk nginx python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
if in_list haproxy "$PROXIES $IDLE_PROXIES" && ! command -v haproxy >/dev/null; then
	die "haproxy is required for PROXIES=haproxy"
fi
PERF=0
PERF_EVENTS=raw_syscalls:sys_enter
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
	PERF=1
	# The waits for readiness, counted apart: the epoll_waits per request are what separates
	# the proxies' syscall counts (each makes two reads and two writes per request). Whichever
	# of the three entry points this kernel traces is counted.
	for call in epoll_wait epoll_pwait epoll_pwait2; do
		if perf stat -e "syscalls:sys_enter_$call" -x, -o /dev/null true 2>/dev/null; then
			PERF_EVENTS+=",syscalls:sys_enter_$call"
		fi
	done
else
	say "perf cannot count syscalls here; that column will say n/a"
fi
if ((STRACE > 0)) && ! command -v strace >/dev/null; then
	say "no strace; skipping the syscall breakdown"
	STRACE=0
fi
CLK_TCK=$(getconf CLK_TCK)
raise_fd_limit
if ((MAX_CONNS < 600)); then say "only $FD_LIMIT file descriptors; the c500 shape may see errors"; fi
if ((IDLE_CONNS + 200 > FD_LIMIT)); then
	say "only $FD_LIMIT file descriptors; holding $((FD_LIMIT - 200)) idle connections, not $IDLE_CONNS"
	IDLE_CONNS=$((FD_LIMIT - 200))
fi

# A failed build costs the hearth rows, not the run.
if ((BUILD)) && { in_list hearth "$PROXIES $IDLE_PROXIES" || in_list hearth2 "$PROXIES"; }; then
	if ! build_hearth; then
		say "hearth: release build FAILED; continuing without the hearth rows"
		PROXIES=$(tr " " "\n" <<<"$PROXIES" | grep -vx 'hearth2\?' | tr "\n" " " || true)
		IDLE_PROXIES=$(tr " " "\n" <<<"$IDLE_PROXIES" | grep -vx hearth | tr "\n" " " || true)
		STRACE=0
	fi
fi

floor_ok=1
if ((BUILD)) && in_list floor "$PROXIES"; then build_floor || floor_ok=0; fi
[[ -x $FLOOR_BIN ]] || floor_ok=0
if in_list floor "$PROXIES" && ((!floor_ok)); then
	say "floor: build FAILED; continuing without the floor row"
	PROXIES=$(tr " " "\n" <<<"$PROXIES" | grep -vx floor | tr "\n" " " || true)
fi

# Other work on the machine moves every figure; say how busy it was.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Start the origin and the proxies.
# ports: the origin (0), the 1-worker hearth's admin listener (1), the origin's TLS listener (2),
# the https rows (3-5), and from 6 on one per row of PROXIES, however many it names.
read -r -a row_list <<<"$PROXIES"
read -r -a ports < <(free_ports $((6 + ${#row_list[@]})))
# The https shape's rows talk TLS to the origin's second listener.
TLS_ROWS=
if in_list https "$SHAPES"; then
	UP_TLS_PORT=${ports[2]}
	TLS_ROWS="tls_hearth tls_hearth0 tls_nginx32"
fi
start_origin "${ports[0]}"
ACTIVE=()
i=6
for proxy in "${row_list[@]}"; do
	if start_row "$proxy" "${ports[$i]}" "${ports[1]}"; then
		ACTIVE+=("$proxy")
	else
		explain_failure "$proxy"
	fi
	i=$((i + 1))
done
i=3
for proxy in $TLS_ROWS; do
	if [[ $proxy == tls_nginx32 ]] || in_list hearth "$PROXIES"; then
		if start_row "$proxy" "${ports[$i]}"; then
			ACTIVE+=("$proxy")
		else
			explain_failure "$proxy"
		fi
	fi
	i=$((i + 1))
done
say "origin on :$UP_PORT; proxies up: ${ACTIVE[*]:-none}"

RESULTS=$TMP/results.tsv
: >"$RESULTS"
METRICS=$TMP/metrics.txt
: >"$METRICS"
declare -A DEAD=()

# Clock ticks $1 spread over $2 requests, in microseconds each.
us_per_request() {
	awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" \
		'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "n/a" }'
}

# One wrk run against row $1 for shape $2 lasting $3 seconds; with $4 = a round number, measure
# and append a line to RESULTS, without it (warm-up) just load.
run_once() {
	local name=$1 shape=$2 secs=$3 round=${4:-} pid=${PID[$1]:-} tag="$1.$2.${4:-warm}"
	wrk_args "$secs" "$name"
	if [[ -z $round ]]; then
		load "$TMP/wrk.$tag" "${WRK_ARGS[@]}" || true
		return
	fi

	# utime and stime in clock ticks, before and after; sys1 stays empty if the process died.
	local accepts0 accepts1 user0=0 sys0=0 user1='' sys1=''
	accepts0=$(stub_accepts || echo)
	if [[ -n $pid ]]; then
		read -r user0 sys0 < <(proc_times "$pid" || echo 0 0)
		if ((PERF)); then
			perf stat -e "$PERF_EVENTS" -x, -o "$TMP/perf.$tag" -p "$pid" 2>/dev/null &
			PERF_PID=$!
			# Let perf attach before the load starts.
			sleep 0.3
		fi
	fi
	load "$TMP/wrk.$tag" "${WRK_ARGS[@]}" || say "$name: wrk failed: $(tail -1 "$TMP/wrk.$tag")"
	if [[ -n $pid ]]; then read -r user1 sys1 < <(proc_times "$pid" || echo); fi
	local counted=
	if [[ -n $PERF_PID ]]; then
		# perf stat prints its counts when interrupted.
		kill -INT "$PERF_PID" 2>/dev/null || true
		wait "$PERF_PID" 2>/dev/null || true
		PERF_PID=
		counted=1
	fi
	accepts1=$(stub_accepts || echo)

	local rps p50 p99 requests errors cpu=- user=- syscalls=- waits=- conns=n/a rss=-
	read -r rps p50 p99 requests errors < <(parse_wrk "$TMP/wrk.$tag")
	if [[ -n $pid ]]; then
		if kill -0 "$pid" 2>/dev/null; then
			rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
		else
			say "$name: DIED during the $shape run; dropping it from later runs"
			DEAD[$name]=1
			rss=n/a
		fi
		cpu=n/a user=n/a
		# A process that died has no stat left to read.
		if [[ -n $sys1 ]]; then
			cpu=$(us_per_request "$((user1 + sys1 - user0 - sys0))" "$requests")
			user=$(us_per_request "$((user1 - user0))" "$requests")
		fi
		syscalls=n/a waits=n/a
		if [[ -n $counted ]]; then
			syscalls=$(awk -F, -v n="$requests" '$3 ~ /raw_syscalls:sys_enter/ {
				if ($1 ~ /^[0-9]+$/ && n > 0) printf "%.2f", $1 / n; else print "n/a" }' "$TMP/perf.$tag")
			[[ -n $syscalls ]] || syscalls=n/a
			waits=$(awk -F, -v n="$requests" '$3 ~ /syscalls:sys_enter_epoll/ {
				if ($1 ~ /^[0-9]+$/) { sum += $1; seen = 1 } else bad = 1 }
				END { if (seen && !bad && n > 0) printf "%.3f", sum / n; else print "n/a" }' "$TMP/perf.$tag")
		fi
	fi
	if [[ $accepts0 =~ ^[0-9]+$ && $accepts1 =~ ^[0-9]+$ ]]; then
		# The later stub_status request's own connection is counted in accepts1; take it off.
		conns=$(awk -v d="$((accepts1 - accepts0 - 1))" -v n="$requests" \
			'BEGIN { if (n > 0) printf "%.2f", d * 10000 / n; else print "n/a" }')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$name" "$round" \
		"$rps" "$p50" "$p99" "$cpu" "$syscalls" "$conns" "$rss" "$errors" "$waits" "$user" >>"$RESULTS"
	say "  round $round $(printf '%-20s' "${LABEL[$name]}") $rps req/s, p99 $p99 ms, errors $errors"
}


# The rows of shape $1: hearth2 only answers the scaling question, which the small shape settles;
# the https shape has rows of its own.
rows_for() {
	local name
	ROWS=()
	[[ $1 == https ]] || ROWS=(direct)
	for name in "${ACTIVE[@]}"; do
		if [[ $1 == https ]]; then
			[[ $name != tls_* ]] || ROWS+=("$name")
		elif [[ $name != tls_* && ($name != hearth2 || $1 == small) ]]; then
			ROWS+=("$name")
		fi
	done
}

for shape in $WRK_SHAPES; do
	set_shape "$shape"
	rows_for "$shape"
	secs=$DURATION
	[[ $shape == small ]] || secs=$SIDE_DURATION
	say "shape $shape: warming up ${WARMUP}s each"
	if ((WARMUP > 0)); then
		for name in "${ROWS[@]}"; do run_once "$name" "$shape" "$WARMUP"; done
	fi
	for ((round = 1; round <= ROUNDS; round++)); do
		# Rotate the order each round so no row always runs first (or right after the same one).
		count=${#ROWS[@]}
		for ((i = 0; i < count; i++)); do
			name=${ROWS[$(((i + round - 1) % count))]}
			[[ -z ${DEAD[$name]:-} ]] || continue
			run_once "$name" "$shape" "$secs" "$round"
		done
	done
	# hearth's own counters say why an upstream connection was opened or closed; they add up
	# over the shapes.
	if [[ -n ${ADMIN[hearth]:-} && -z ${DEAD[hearth]:-} ]]; then
		{
			echo "## after shape $shape"
			hearth_metrics "${ADMIN[hearth]}" | sed '1,/^\r\?$/d' || echo "(no answer)"
			echo
		} >>"$METRICS"
	fi
done

# ---------------------------------------------------------------------------------------------
# Where hearth's syscalls go: `strace -c` on every thread of the 1-worker hearth during a short
# small-shape load. strace stops the process at each syscall, so its rate here is far below the
# measured runs; the counts per request are what this is for.
STRACE_DONE=0
if ((STRACE > 0)) && in_list hearth "${ACTIVE[*]}" && [[ -z ${DEAD[hearth]:-} ]]; then
	say "strace -c on hearth for ${STRACE}s"
	set_shape small
	wrk_args "$STRACE" hearth
	strace -c -f -p "${PID[hearth]}" -o "$TMP/strace.out" 2>"$TMP/strace.err" &
	PERF_PID=$!
	# strace says nothing once attached; give it a moment, as for perf.
	sleep 0.5
	load "$TMP/wrk.strace" "${WRK_ARGS[@]}" || true
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" 2>/dev/null || true
	PERF_PID=
	read -r _ _ _ strace_requests _ < <(parse_wrk "$TMP/wrk.strace")
	if [[ -s $TMP/strace.out ]]; then
		mkdir -p "$(dirname "$STRACE_OUT")"
		{
			echo "# strace -c -f -p HEARTH_PID, 1-worker hearth, small shape (GET /, 50 connections)"
			echo "# written by bench/run.sh on $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load: wrk ${WRK_ARGS[*]}"
			echo "# requests answered while traced: $strace_requests"
			# The total line: % time, seconds, usecs/call, calls, [errors,] "total".
			awk -v n="$strace_requests" '$NF == "total" && n > 0 {
				printf "# syscalls per request while traced: %.2f\n", $4 / n }' "$TMP/strace.out"
			echo "# strace slows every syscall, so the rate under it says nothing; the mix and counts do."
			echo
			cat "$TMP/strace.out"
		} >"$STRACE_OUT"
		STRACE_DONE=1
		say "wrote $STRACE_OUT"
	else
		say "strace recorded nothing: $(tail -2 "$TMP/strace.err" 2>/dev/null)"
	fi
fi

# ---------------------------------------------------------------------------------------------
# RSS per idle keep-alive client connection, on a fresh process per proxy so the buffers the
# loads above grew do not hide (or pad) the cost. The process first serves a short small-shape
# load, so it has reached its working size; then VmRSS before and after bench/idle_conns.py
# holds IDLE_CONNS answered connections open.
IDLE=$TMP/idle.tsv
: >"$IDLE"
if [[ -n $IDLE_PROXIES ]]; then
	read -r -a idle_ports < <(free_ports 4)
	i=0
	for proxy in $IDLE_PROXIES; do
		name=idle-$proxy
		LABEL[$name]=${LABEL[$proxy]}
		port=${idle_ports[$i]}
		i=$((i + 1))
		case $proxy in
		hearth) start_hearth "$name" "$port" 1 ;;
		nginx32) start_nginx_proxy "$name" 32 "$port" ;;
		nginx64) start_nginx_proxy "$name" 64 "$port" ;;
		haproxy) start_haproxy "$name" "$port" ;;
		esac && up=1 || up=0
		if ((!up)); then
			explain_failure "$name"
			continue
		fi
		pid=${PID[$name]}
		conns=$IDLE_CONNS
		# HAProxy refuses a maxconn whose sockets (two per connection) exceed the file limit, and
		# does not accept past maxconn, so it holds what the limit allows.
		if [[ $proxy == haproxy ]] && ((conns > MAX_CONNS - 50)); then
			conns=$((MAX_CONNS - 50))
			say "haproxy: maxconn $MAX_CONNS at $FD_LIMIT file descriptors; holding $conns, not $IDLE_CONNS"
		fi
		set_shape small
		wrk_args "$((WARMUP > 0 ? WARMUP : 1))" "$name"
		load "$TMP/wrk.$name" "${WRK_ARGS[@]}" || true
		sleep 0.5
		before=$(rss_kib "$pid")
		say "$proxy: holding $conns idle keep-alive connections (RSS before: ${before:-?} KiB)"
		status=$TMP/$name.status
		start "$TMP/$name.client.log" python3 "$ROOT/bench/idle_conns.py" "$port" "$conns" "$status"
		client=$LAST_PID
		# idle_conns.py gives up after 60 s on its own; this wait is bounded a little beyond that.
		for ((tries = 0; tries < 700; tries++)); do
			[[ -s $status ]] && break
			kill -0 "$client" 2>/dev/null || break
			sleep 0.1
		done
		held=0 failed=$conns
		[[ -s $status ]] && read -r held failed <"$status"
		# Let the proxy finish whatever it does after the last answer before reading its size.
		sleep 1
		after=$(rss_kib "$pid")
		stop "$client"
		stop "$pid"
		printf '%s\t%s\t%s\t%s\t%s\n' "$proxy" "${before:-n/a}" "${after:-n/a}" "$held" "$failed" >>"$IDLE"
		say "$proxy: $held held, $failed failed, RSS after: ${after:-?} KiB"
	done
fi

# ---------------------------------------------------------------------------------------------
# Report: medians per row and shape, hearth's ratios, the idle RSS, and the targets of issue 4.
TABLES=$TMP/tables.md
python3 "$ROOT/bench/report.py" "$RESULTS" "$IDLE" "$WRK_SHAPES" "$IDLE_CONNS" >"$TABLES"

# ---------------------------------------------------------------------------------------------
# The shapes of issue 21, in bench/shapes.sh with origins and rows of their own; the rows above
# stay up but idle meanwhile. A broken setup there costs those tables, not this run.
POOL_OUT=$TMP/shapes.md
if [[ -n $POOL_SHAPES ]]; then
	pool_proxies=
	for proxy in hearth hearthb nginx64 haproxy; do
		if in_list "$proxy" "$PROXIES"; then pool_proxies+="$proxy "; fi
	done
	say "the shapes of issue 21: $POOL_SHAPES"
	SHAPES=$POOL_SHAPES ROUNDS=$SHAPE_ROUNDS PROXIES=${pool_proxies:-hearth nginx64 haproxy} OUT=$POOL_OUT BUILD=$BUILD \
		bash "$ROOT/bench/shapes.sh" || say "bench/shapes.sh FAILED; its tables are missing"
fi

cat "$TABLES"

mkdir -p "$(dirname "$OUT")"
if [[ -s $METRICS ]]; then
	{
		echo "# hearth's /metrics (1-worker row) after each shape of bench/run.sh; counters add up."
		echo "# written on $(date -u '+%Y-%m-%d %H:%M:%S UTC'); command: $COMMAND"
		echo
		cat "$METRICS"
	} >"$METRICS_OUT"
	say "wrote $METRICS_OUT"
fi
{
	echo "# hearth benchmark results"
	echo
	echo "Written by bench/run.sh; rerun it rather than editing this file."
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "- kernel: $(uname -r)"
	echo "- CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc)"
	echo "- load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "- hearth commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes to src or Cargo files)')"
	echo "- tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | awk 'NR == 1 { print "HAProxy " $3 }' || true), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)"
	echo "- command: \`$COMMAND\`"
	echo "- proxies that ran: ${ACTIVE[*]:-none}"
	echo
	echo "Each figure is the median over the rounds. Everything shares the same machine, unpinned:"
	echo "wrk (-t1), the nginx origin and the proxy under test. CPU us/req is the proxy's"
	echo "utime+stime over the run divided by requests, and proxy cores the same time over the"
	echo "run's length (1.00 is one core kept busy); user us/req is the utime part of CPU us/req, the"
	echo "proxy's own code rather than the kernel's work for it; syscalls/req counts raw_syscalls:sys_enter with"
	echo "perf, and epoll waits/req the epoll_wait family alone (every proxy here reads twice and"
	echo "writes twice per request, so the waits are where they differ: a proxy short of a full core"
	echo "finds fewer events per wait and waits more often); upstream conns/10k req comes from the"
	echo "origin's stub_status accepts; RSS is the proxy's VmRSS after the run; errors sums"
	echo "non-2xx/3xx answers and socket errors over all runs."
	echo "The floor row is examples/floor.rs, which relays bytes over one upstream connection per"
	echo "client and does nothing else: what it costs is the kernel's and the machine's share, which"
	echo "bounds what any proxy can reach against the same peers in the same run."
	echo
	cat "$TABLES"
	if [[ -s $POOL_OUT ]]; then
		echo "## Where the pool is stressed (issue 21)"
		echo
		cat "$POOL_OUT"
		echo
	fi
	if [[ -s $METRICS ]]; then
		echo "### Why hearth opened and closed upstream connections"
		echo
		echo "hearth's own counters (1-worker row, warm-ups included), summed up to the end of each"
		echo "shape; all of /metrics is in [hearth-metrics.txt](hearth-metrics.txt)."
		echo
		echo '```'
		grep -E '^(## |hearth_upstream_(connects|reuses|replays|closes)_total)' "$METRICS" |
			grep -v ' 0$' || true
		echo '```'
		echo
	fi
	if ((STRACE_DONE)); then
		echo "### Where hearth's syscalls go"
		echo
		echo "\`strace -c -f\` on the 1-worker hearth during ${STRACE} s of the small shape; the whole"
		echo "breakdown is in [strace.txt](strace.txt)."
		echo
		echo '```'
		grep '^#' "$STRACE_OUT" | sed -n '3,4p'
		# The column header, its rule and the ten busiest calls.
		grep -v '^#' "$STRACE_OUT" | sed '/^$/d' | head -12
		echo '```'
	fi
} >"$OUT"
say "wrote $OUT"
