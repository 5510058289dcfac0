#!/usr/bin/env bash
# bench/shapes.sh: the shapes of issue 21, where the upstream pool is stressed, hearth against
# nginx (`keepalive 64`) and HAProxy (`http-reuse safe`) in one run. bench/run.sh calls it for the
# shapes named in its SHAPES and puts what it writes (OUT, a Markdown section) into results.md;
# it also runs alone: `SHAPES="cap large" OUT=/tmp/s.md bash bench/shapes.sh`.
#
# One nginx origin (one worker) with two listeners: one closing idle keep-alive connections after
# 2 s (`return 200` for every method; the stale shape), and one keeping them 300 s that answers
# `/` and `/fast` at once, `/delay` after 20 ms and `/slow` after 200 ms (echo_sleep, from
# Debian's libnginx-mod-http-echo, installed when missing), serves a 1 MiB file at `/1m` and
# reads 1 MiB uploads at `/up`. Each shape starts its own rows in front of the listener it
# needs, one worker each: hearth with its defaults (pool size 320 per node, idle timeout 60 s;
# client limits lifted so keep-alive clients are never cut), nginx with `keepalive 64` and bodies
# streamed (`proxy_buffering off`, `proxy_request_buffering off`, as hearth and HAProxy relay
# them), HAProxy with `http-reuse safe`. Rows alternate within a round and rotate between rounds; each
# figure is the median over ROUNDS rounds. bench/shapes_report.py turns the raw figures into
# tables, ratios and PASS/FAIL against the targets of issue 21. Shapes:
#   stale  examples/burst.rs against the 2 s listener: 40 clients, bursts of 6 requests each,
#          half GETs, half POSTs of 200 bytes, STALE_BURSTS bursts with idle gaps drawn from
#          1.5-3 s (the same gaps for every row of a round). Error answers (non-2xx and requests
#          with no whole answer) and upstream connects per 10,000 requests.
#   spike  examples/load.rs --mode step against `/delay` (20 ms): 10 clients, SPIKE_PEAK (300)
#          for 5 s from second 3, then 10 again. p99 of the requests started in the step,
#          upstream connects during the step (origin accepts), and the proxy's ESTABLISHED
#          connections to the origin 10 s after the step (ss; 10 of them carry the remaining
#          clients), which is where hearth's purges (issue 20) show. Each run has fresh proxies,
#          so no row starts with connections an earlier run left. hearth also runs a second row
#          here with `keepalive_pool.preconnect = 1.5` (issue 20's warm-ahead), whose connects
#          in the step are made ahead of the requests rather than in their path.
#   cap    at most 50 upstream connections (hearth `max_connections = 50` and its queue, HAProxy
#          `maxconn 50` on the server with its queue, nginx `max_conns=50`, which has no queue):
#          examples/load.rs --mode closed, 200 clients, every 10th request of each to `/slow`
#          (200 ms), the rest to `/fast`. p99 per class and error answers. hearth and HAProxy
#          also run a second row each that ranks `/slow` behind `/fast` in the queue (hearth
#          `queue_class = 1` on a `/slow` route, HAProxy `http-request set-priority-class int(1)`
#          for `/slow`): the lever for the fast requests' tail, compared like for like. The
#          target's verdict compares the first-come-first-served rows.
#   large  wrk, 10 connections: GET of 1 MiB answers, then POST of 1 MiB uploads. CPU per
#          request and MB/s. Rows: hearth (splice, the default), hearth with `splice = false`,
#          nginx, HAProxy with `option splice-auto`.
#   rate   the direct origin's capacity first (load.rs --mode closed, 50 connections, GET /), then
#          an open loop (load.rs --mode rate, 64 connections) at 25%, 50% and 75% of it against
#          direct and each proxy: p50, p99 and p99.9 latency, and what each proxy adds over
#          direct at each rate.
# It is a benchmark, not a test: a proxy doing badly is reported, never turned into a non-zero
# exit; only a broken setup is.
#
# Knobs (environment):
#   SHAPES        any of: stale spike cap large rate (default all)
#   ROUNDS        rounds per shape (3)
#   PROXIES       any of: hearth hearthb nginx64 haproxy (default hearth nginx64 haproxy);
#                 large adds hearth's splice = false row whenever hearth runs. hearthb is a
#                 second hearth with the hearth row's settings, run from HEARTH_BASE_BIN: another
#                 build for an A/B, or, with HEARTH_BASE_BIN unset, the same binary, for an A/A
#                 that shows how far two identical rows land apart on this machine
#   STALE_BURSTS  bursts per stale run (10)
#   SPIKE_PEAK    clients during the spike's step (300; issue 20 measures a drop from 500)
#   CAP_SECS, LARGE_SECS, RATE_SECS   seconds per run of those shapes (6, 4, 5)
#   CAP_FAST      the cap shape's fast path: /fast (answered at once, the default) or /fast1ms
#                 (answered after 1 ms), to see how long a fast request holds its connection
#                 moves the fast p99 (bench/cap.md)
#   CAP_TRACE     1: after the cap rounds, one more run per row with the origin's syscalls
#                 recorded for 2 s (perf), for how quickly each proxy gives a connection its
#                 next request (bench/capturn.py); 0 (the default) leaves it out
#   RATES         percentages of the direct capacity for the rate shape ("25 50 75")
#   BUILD         1 builds hearth and the generators first; 0 takes them as they are (1)
#   HEARTH_BIN    the hearth binary (target/release/hearth)
#   HEARTH_BASE_BIN  the hearthb row's binary (HEARTH_BIN when unset)
#   OUT           where to write the Markdown section (bench/shapes.md)
set -euo pipefail

SHAPES=${SHAPES:-stale spike cap large rate}
SPIKE_PEAK=${SPIKE_PEAK:-300}
ROUNDS=${ROUNDS:-3}
PROXIES=${PROXIES:-hearth nginx64 haproxy}
STALE_BURSTS=${STALE_BURSTS:-10}
CAP_SECS=${CAP_SECS:-6}
CAP_FAST=${CAP_FAST:-/fast}
CAP_TRACE=${CAP_TRACE:-0}
# The cap shape's load, less its address and length.
CAP_LOAD=(--mode closed --clients 200 --path "$CAP_FAST" --slow-every 10 --slow-path /slow)
LARGE_SECS=${LARGE_SECS:-4}
RATE_SECS=${RATE_SECS:-5}
RATES=${RATES:-25 50 75}
BUILD=${BUILD:-1}
OUT_ARG=${OUT:-bench/shapes.md}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")
BURST_BIN=$ROOT/target/release/examples/burst
LOAD_BIN=$ROOT/target/release/examples/load
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so

positive_knobs ROUNDS STALE_BURSTS CAP_SECS LARGE_SECS RATE_SECS
for r in $RATES; do [[ $r =~ ^[1-9][0-9]?$ ]] || die "RATES are percentages 1-99, not '$r'"; done
for shape in $SHAPES; do
	case $shape in stale | spike | cap | large | rate) ;; *) die "unknown shape '$shape'" ;; esac
done
case $CAP_FAST in /fast | /fast1ms) ;; *) die "CAP_FAST is /fast or /fast1ms, not '$CAP_FAST'" ;; esac
case $CAP_TRACE in
0) ;;
1) command -v perf >/dev/null || die "CAP_TRACE=1 needs perf (apt-get install linux-perf)" ;;
*) die "CAP_TRACE is 0 or 1, not '$CAP_TRACE'" ;;
esac
for proxy in $PROXIES; do
	case $proxy in hearth | hearthb | nginx64 | haproxy) ;; *) die "unknown proxy '$proxy' (hearth hearthb nginx64 haproxy)" ;; esac
done
in_list() { [[ " $2 " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Tools and builds.
ensure_tools nginx wrk python3 haproxy
if [[ ! -f $ECHO_MODULE ]]; then
	ensure_tools libnginx-mod-http-echo
	[[ -f $ECHO_MODULE ]] || die "nginx's echo module ($ECHO_MODULE) is required for the delays"
fi
for tool in nginx wrk python3 ss; do command -v "$tool" >/dev/null || die "$tool is required"; done
if in_list haproxy "$PROXIES" && ! command -v haproxy >/dev/null; then
	die "haproxy is required for PROXIES=haproxy"
fi
raise_fd_limit
if ((BUILD)); then
	say "building the load generators (cargo build --release --example burst --example load)"
	(cd "$ROOT" && cargo build --release --quiet --example burst --example load) ||
		die "the load generators did not build"
	if in_list hearth "$PROXIES" && ! build_hearth; then
		say "hearth: release build FAILED; continuing without the hearth rows"
		PROXIES=$(tr " " "\n" <<<"$PROXIES" | grep -vx hearth | tr "\n" " " || true)
	fi
fi
if in_list hearthb "$PROXIES"; then
	BASE_LABEL=${HEARTH_BASE_BIN:-the same binary}
	HEARTH_BASE_BIN=${HEARTH_BASE_BIN:-$HEARTH_BIN}
	[[ -x $HEARTH_BASE_BIN ]] || die "PROXIES has hearthb but HEARTH_BASE_BIN ('$HEARTH_BASE_BIN') is not an executable"
fi
[[ -x $BURST_BIN && -x $LOAD_BIN ]] || die "no load generators in target/release/examples (BUILD=1 builds them)"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# The origin.
read -r STALE_PORT POOL_PORT < <(free_ports 2)
UP_PORT=$POOL_PORT
start_shapes_origin() {
	local up=$TMP/upstream
	mkdir -p "$up/www"
	head -c 1048576 /dev/zero | tr '\0' 'x' >"$up/www/1m"
	{
		echo "load_module $ECHO_MODULE;"
		nginx_common "$up"
		cat <<EOF
http {
$(nginx_http_common "$up")
    server {
        listen 127.0.0.1:$STALE_PORT;
        keepalive_timeout 2s;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$POOL_PORT;
        root $up/www;
        location = / { return 200 "hello\n"; }
        location = /fast { return 200 "fast\n"; }
        location = /fast1ms { echo_sleep 0.001; echo "fast"; }
        location = /delay { echo_sleep 0.02; echo "ok"; }
        location = /slow { echo_sleep 0.2; echo "slow"; }
        location = /1m { }
        # The whole upload is read (into memory) before the answer, as an application would.
        location = /up {
            client_max_body_size 0;
            client_body_buffer_size 2m;
            echo_read_request_body;
            echo "ok";
        }
        location = /nginx_status { stub_status; }
    }
}
EOF
	} >"$up/nginx.conf"
	start "$up/out.log" nginx -p "$up" -e "$up/error.log" -c "$up/nginx.conf"
	UP_PID=$LAST_PID
	PORT[direct]=$POOL_PORT
	wait_port "$POOL_PORT" "$UP_PID" ||
		die "the nginx origin did not start: $(tail -5 "$up/error.log" "$up/out.log" 2>/dev/null)"
}
start_shapes_origin

# ---------------------------------------------------------------------------------------------
# The rows. Each start_* takes NAME PORT UPSTREAM_PORT and a shape-specific variant; PID and
# PORT are lib.sh's tables.
read -r -a PROXY_LIST <<<"$PROXIES"

# VARIANT: "" (defaults), cap (50 connections and a queue), caprank (the same, `/slow` ranked
# behind), nosplice, preconnect.
start_shape_hearth() {
	local name=$1 port=$2 upport=$3 variant=${4:-} dir=$TMP/$1
	mkdir -p "$dir"
	{
		echo "workers = 1"
		hearth_front "$port"
		[[ $variant != nosplice ]] || echo "splice = false"
		cat <<EOF
[upstreams.u]
nodes = { "127.0.0.1:$upport" = 1 }
EOF
		[[ $variant != preconnect ]] || echo 'keepalive_pool = { preconnect = 1.5 }'
		if [[ $variant == cap* ]]; then
			echo "max_connections = 50"
			echo 'queue = { size = 1024, timeout = "5s" }'
		fi
		[[ $variant != caprank ]] ||
			printf '[[routes]]\nuris = ["/slow"]\nupstream = "u"\nqueue_class = 1\n'
		printf '[[routes]]\nuris = ["/*"]\nupstream = "u"\n'
	} >"$dir/hearth.toml"
	local binary=$HEARTH_BIN
	[[ $name != hearthb ]] || binary=$HEARTH_BASE_BIN
	launch_hearth "$name" "$port" "$dir" "$binary"
}

start_shape_nginx() {
	local name=$1 port=$2 upport=$3 variant=${4:-} dir=$TMP/$1 server_extra=''
	[[ $variant != cap ]] || server_extra=" max_conns=50"
	mkdir -p "$dir"
	{
		nginx_common "$dir"
		cat <<EOF
http {
$(nginx_http_common "$dir")
    client_max_body_size 0;
    upstream u {
        server 127.0.0.1:$upport$server_extra;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream bodies as hearth and HAProxy do, rather than through temp files.
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
	} >"$dir/nginx.conf"
	start "$dir/out.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	PID[$name]=$LAST_PID
	PORT[$name]=$port
	wait_port "$port" "$LAST_PID"
}

start_shape_haproxy() {
	local name=$1 port=$2 upport=$3 variant=${4:-} dir=$TMP/$1 server_extra='' defaults_extra=''
	local backend_extra=''
	[[ $variant != cap* ]] || server_extra=" maxconn 50"
	[[ $variant != caprank ]] ||
		backend_extra="    http-request set-priority-class int(1) if { path_beg /slow }"
	[[ $variant != splice ]] || defaults_extra="    option splice-auto"
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    # Plenty for 300 clients, and within the file limit with splice's pipes.
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse safe
$defaults_extra
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 5s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:$port
    default_backend origin

backend origin
$backend_extra
    server u 127.0.0.1:$upport$server_extra
EOF
	start "$dir/out.log" haproxy -db -f "$dir/haproxy.cfg"
	PID[$name]=$LAST_PID
	PORT[$name]=$port
	wait_port "$port" "$LAST_PID"
}

# start_shape_row ROW PORT UPSTREAM_PORT [VARIANT]: the row's proxy; non-zero when not up.
start_shape_row() {
	case $1 in
	hearth) start_shape_hearth hearth "$2" "$3" "${4:-}" ;;
	hearthb) start_shape_hearth hearthb "$2" "$3" "${4:-}" ;;
	hearth_copy) start_shape_hearth hearth_copy "$2" "$3" nosplice ;;
	hearth_pre) start_shape_hearth hearth_pre "$2" "$3" preconnect ;;
	hearth_rank) start_shape_hearth hearth_rank "$2" "$3" caprank ;;
	nginx64) start_shape_nginx nginx64 "$2" "$3" "${4:-}" ;;
	haproxy) start_shape_haproxy haproxy "$2" "$3" "${4:-}" ;;
	haproxy_splice) start_shape_haproxy haproxy_splice "$2" "$3" splice ;;
	haproxy_rank) start_shape_haproxy haproxy_rank "$2" "$3" caprank ;;
	*) return 1 ;;
	esac
}

# Starts ROWS (each on a fresh port) for a shape, in front of UPSTREAM_PORT $1 with variant $2;
# sets ACTIVE to those that came up.
start_rows() {
	local upport=$1 variant=$2 row ports i=0
	shift 2
	read -r -a ports < <(free_ports "$#")
	ACTIVE=()
	for row in "$@"; do
		if [[ $row == direct ]]; then
			ACTIVE+=(direct)
		elif start_shape_row "$row" "${ports[$i]}" "$upport" "$variant"; then
			ACTIVE+=("$row")
		else
			explain_failure "$row"
		fi
		i=$((i + 1))
	done
}

stop_rows() {
	local row
	for row in "${ACTIVE[@]}"; do
		[[ $row == direct || -z ${PID[$row]:-} ]] || stop "${PID[$row]}"
		unset "PID[$row]"
	done
}

# ---------------------------------------------------------------------------------------------
# Measuring. RESULTS: shape, row, round, then key=value pairs.
RESULTS=$TMP/shapes.tsv
: >"$RESULTS"
record() {
	local shape=$1 row=$2 round=$3
	shift 3
	printf '%s\t%s\t%s\t%s\n' "$shape" "$row" "$round" "$*" >>"$RESULTS"
}

# Runs "$@" in the background with stdout to file $1 (shifted off) and waits, as lib.sh's load().
run_to() {
	local out=$1 status=0
	shift
	"$@" >"$out" 2>"$out.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || status=$?
	LOAD_PID=
	((status == 0)) || say "    the generator exited with $status: $(tail -2 "$out.err")"
}

# key=value from a line of generator output: field KEY of the line starting with PREFIX.
field() {
	awk -v p="$2" -v k="$3" 'index($0, p) == 1 {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$1"
}

cpu_of() { if [[ -n ${PID[$1]:-} ]]; then cpu_ticks "${PID[$1]}" || echo; fi; }

# CPU microseconds per request from ticks $1 to $2 over $3 requests, or n/a.
cpu_per_req() {
	if [[ -z $1 || -z $2 ]]; then
		echo n/a
		return
	fi
	awk -v t="$(($2 - $1))" -v hz="$CLK_TCK" -v n="$3" \
		'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "n/a" }'
}

# Origin accepts between two stub_status reads, less the read's own connection.
accepts_between() {
	if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]]; then echo $(($2 - $1 - 1)); else echo n/a; fi
}

# Rotated order of ACTIVE for round $1 (sets ORDER).
rotate() {
	local n=${#ACTIVE[@]} i
	ORDER=()
	for ((i = 0; i < n; i++)); do ORDER+=("${ACTIVE[$(((i + $1 - 1) % n))]}"); done
}

# ---------------------------------------------------------------------------------------------
shape_stale() {
	say "shape stale: origin closes idle connections after 2 s; $STALE_BURSTS bursts, gaps 1.5-3 s"
	start_rows "$STALE_PORT" "" "${PROXY_LIST[@]}"
	local round row out a0 a1
	for ((round = 1; round <= ROUNDS; round++)); do
		rotate "$round"
		for row in "${ORDER[@]}"; do
			# Whatever the last run left idle has been closed by the origin.
			sleep 3
			out=$TMP/stale.$row.$round
			a0=$(stub_accepts || echo)
			run_to "$out" "$BURST_BIN" --addr "127.0.0.1:${PORT[$row]}" --clients 40 --requests 6 \
				--bursts "$STALE_BURSTS" --gap 1.5-3 --mix mixed --body 200 --seed "$round" \
				--deadline $((20 + STALE_BURSTS * 13))
			a1=$(stub_accepts || echo)
			local requests non2xx errors
			requests=$(field "$out" requests= requests)
			non2xx=$(field "$out" requests= non2xx)
			errors=$(field "$out" requests= errors)
			record stale "$row" "$round" requests="${requests:-0}" non2xx="${non2xx:-n/a}" \
				errors="${errors:-n/a}" connects="$(accepts_between "$a0" "$a1")"
			say "  round $round $(printf '%-8s' "$row") $requests requests, non-2xx ${non2xx:-?}, no answer ${errors:-?}, upstream connects $(accepts_between "$a0" "$a1")"
		done
	done
	stop_rows
}

shape_spike() {
	say "shape spike: 10 -> $SPIKE_PEAK clients for 5 s -> 10, origin answers in 20 ms"
	local round row out a0 a1 held pid rows=()
	for row in "${PROXY_LIST[@]}"; do
		case $row in
		hearth) rows+=(hearth hearth_pre) ;;
		*) rows+=("$row") ;;
		esac
	done
	for ((round = 1; round <= ROUNDS; round++)); do
		ACTIVE=("${rows[@]}")
		rotate "$round"
		for row in "${ORDER[@]}"; do
			start_rows "$POOL_PORT" "" "$row"
			((${#ACTIVE[@]})) || continue
			pid=${PID[$row]}
			out=$TMP/spike.$row.$round
			"$LOAD_BIN" --addr "127.0.0.1:${PORT[$row]}" --mode step --clients 10 --step-clients "$SPIKE_PEAK" \
				--before 3 --step 5 --secs 20 --path /delay >"$out" 2>"$out.err" &
			LOAD_PID=$!
			sleep 3
			a0=$(stub_accepts || echo)
			sleep 5
			a1=$(stub_accepts || echo)
			sleep 10
			held=$(ss -Htnp state established "( dport = :$POOL_PORT )" 2>/dev/null | grep -c "pid=$pid," || true)
			wait "$LOAD_PID" || say "    the generator failed: $(tail -2 "$out.err")"
			LOAD_PID=
			local p99 errors
			p99=$(field "$out" class=step p99_us)
			errors=$(field "$out" total errors)
			record spike "$row" "$round" p99_step_us="${p99:-n/a}" connects="$(accepts_between "$a0" "$a1")" \
				held_after_10s="$held" errors="${errors:-n/a}" peak="$SPIKE_PEAK" \
				requests="$(field "$out" total requests)"
			say "  round $round $(printf '%-8s' "$row") step p99 ${p99:-?} us, connects in the step $(accepts_between "$a0" "$a1"), connections held 10 s after: $held, errors ${errors:-?}"
			stop_rows
		done
	done
}

shape_cap() {
	say "shape cap: 50 upstream connections, 200 clients, every 10th request 200 ms"
	local rows=() row
	for row in "${PROXY_LIST[@]}"; do
		case $row in
		hearth | haproxy) rows+=("$row" "${row}_rank") ;;
		*) rows+=("$row") ;;
		esac
	done
	start_rows "$POOL_PORT" cap "${rows[@]}"
	local round out
	for row in "${ACTIVE[@]}"; do
		run_to "$TMP/cap.$row.warm" "$LOAD_BIN" --addr "127.0.0.1:${PORT[$row]}" --secs 2 "${CAP_LOAD[@]}"
	done
	for ((round = 1; round <= ROUNDS; round++)); do
		rotate "$round"
		for row in "${ORDER[@]}"; do
			out=$TMP/cap.$row.$round
			run_to "$out" "$LOAD_BIN" --addr "127.0.0.1:${PORT[$row]}" --secs "$CAP_SECS" "${CAP_LOAD[@]}"
			record cap "$row" "$round" fast_p50_us="$(field "$out" class=fast p50_us)" \
				fast_p99_us="$(field "$out" class=fast p99_us)" slow_p99_us="$(field "$out" class=slow p99_us)" \
				errors="$(field "$out" total errors)" rps="$(field "$out" total rps)"
			say "  round $round $(printf '%-8s' "$row") fast p99 $(field "$out" class=fast p99_us) us, slow p99 $(field "$out" class=slow p99_us) us, errors $(field "$out" total errors)"
		done
	done
	((CAP_TRACE == 0)) || cap_trace
	stop_rows
}

# One more run per row, apart from the measured rounds: 2 s of the origin's syscalls from its
# third second on, and the turnaround they show (bench/capturn.py).
cap_trace() {
	local row out turn
	for row in "${ACTIVE[@]}"; do
		out=$TMP/cap.$row.trace
		"$LOAD_BIN" --addr "127.0.0.1:${PORT[$row]}" --secs 6 "${CAP_LOAD[@]}" >"$out" 2>"$out.err" &
		LOAD_PID=$!
		sleep 2
		perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -p "$UP_PID" \
			-o "$out.perf" -- sleep 2 >/dev/null 2>"$out.perf.err" ||
			say "    perf record failed: $(tail -1 "$out.perf.err")"
		wait "$LOAD_PID" || say "    the generator exited with $?: $(tail -2 "$out.err")"
		LOAD_PID=
		# A trace that could not be taken or read is reported, not fatal to the rest of the run.
		turn=$(python3 "$ROOT/bench/capturn.py" "$out.perf" 2>>"$out.perf.err") || turn="turns=0"
		record cap_turn "$row" 1 "$turn"
		say "  traced $(printf '%-8s' "$row") $turn"
	done
}

shape_large() {
	say "shape large: 1 MiB answers and 1 MiB uploads, 10 connections"
	local rows=(direct) row
	for row in "${PROXY_LIST[@]}"; do
		case $row in
		hearth) rows+=(hearth hearth_copy) ;;
		haproxy) rows+=(haproxy_splice) ;;
		*) rows+=("$row") ;;
		esac
	done
	start_rows "$POOL_PORT" "" "${rows[@]}"
	cat >"$TMP/up.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
	local dir round out t0 t1
	for dir in get post; do
		local args=(-t1 -c10 --latency)
		local target=/1m
		if [[ $dir == post ]]; then
			args+=(-s "$TMP/up.lua")
			target=/up
		fi
		for row in "${ACTIVE[@]}"; do
			load "$TMP/large.$dir.$row.warm" "${args[@]}" -d1s "http://127.0.0.1:${PORT[$row]}$target" || true
		done
		for ((round = 1; round <= ROUNDS; round++)); do
			rotate "$round"
			for row in "${ORDER[@]}"; do
				out=$TMP/large.$dir.$row.$round
				t0=$(cpu_of "$row")
				load "$out" "${args[@]}" "-d${LARGE_SECS}s" "http://127.0.0.1:${PORT[$row]}$target" || true
				t1=$(cpu_of "$row")
				local rps p99 requests errors
				read -r rps _ p99 requests errors < <(parse_wrk "$out")
				record "large_$dir" "$row" "$round" rps="$rps" p99_ms="$p99" errors="$errors" \
					mbps="$(awk -v r="$rps" 'BEGIN { printf "%.1f", r * 1.048576 }')" \
					cpu_us="$(cpu_per_req "$t0" "$t1" "$requests")"
				say "  round $round $(printf '%-15s %-4s' "$row" "$dir") $rps req/s, CPU $(cpu_per_req "$t0" "$t1" "$requests") us/req, errors $errors"
			done
		done
	done
	stop_rows
}

shape_rate() {
	start_rows "$POOL_PORT" "" direct "${PROXY_LIST[@]}"
	local out=$TMP/rate.capacity
	# The capacity: the best of three short closed-loop runs against the origin itself.
	local cap=0 i c
	for i in 1 2 3; do
		run_to "$out.$i" "$LOAD_BIN" --addr "127.0.0.1:$POOL_PORT" --mode closed --clients 50 --secs 3
		c=$(field "$out.$i" total rps)
		cap=$(awk -v a="$cap" -v b="${c:-0}" 'BEGIN { print (b > a) ? b : a }')
	done
	say "shape rate: the direct origin's capacity is $cap req/s (closed loop, 50 connections)"
	record rate_capacity direct 1 rps="$cap"
	local pct rate round row
	for pct in $RATES; do
		rate=$(awk -v c="$cap" -v p="$pct" 'BEGIN { printf "%d", c * p / 100 }')
		for ((round = 1; round <= ROUNDS; round++)); do
			rotate "$round"
			for row in "${ORDER[@]}"; do
				out=$TMP/rate.$pct.$row.$round
				run_to "$out" "$LOAD_BIN" --addr "127.0.0.1:${PORT[$row]}" --mode rate --clients 64 \
					--rate "$rate" --secs "$RATE_SECS"
				record "rate_$pct" "$row" "$round" rate="$rate" p50_us="$(field "$out" class=all p50_us)" \
					p99_us="$(field "$out" class=all p99_us)" p999_us="$(field "$out" class=all p999_us)" \
					errors="$(field "$out" total errors)" rps="$(field "$out" total rps)"
				say "  round $round $(printf '%-8s' "$row") ${pct}% ($rate req/s): p50 $(field "$out" class=all p50_us) us, p99 $(field "$out" class=all p99_us) us, p99.9 $(field "$out" class=all p999_us) us"
			done
		done
	done
	stop_rows
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for shape in $SHAPES; do
	"shape_$shape"
done

mkdir -p "$(dirname "$OUT")"
{
	echo "Written by bench/shapes.sh (\`SHAPES=\"$SHAPES\" ROUNDS=$ROUNDS PROXIES=\"$PROXIES\" STALE_BURSTS=$STALE_BURSTS CAP_SECS=$CAP_SECS CAP_FAST=$CAP_FAST CAP_TRACE=$CAP_TRACE LARGE_SECS=$LARGE_SECS RATE_SECS=$RATE_SECS RATES=\"$RATES\"\`)${BASE_LABEL:+, the hearthb row from $BASE_LABEL};"
	echo "load average at its start: $LOAD_START; at its end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	python3 "$ROOT/bench/shapes_report.py" "$RESULTS" "$SHAPES" "$RATES"
} >"$OUT"
cat "$OUT"
say "wrote $OUT"
