#!/usr/bin/env bash
# bench/run.sh: hearth against nginx and HAProxy, end to end over loopback. `make bench` runs it.
#
# One nginx origin and each proxy (one worker each) start on ports the kernel hands out; wrk drives
# each in turn. Per run it records requests/s, p50/p99 latency, the proxy's CPU time and syscalls
# per request, upstream connections opened per 10,000 requests and the proxy's RSS; it prints the
# median over the rounds and writes the same tables to OUT. It is a benchmark, not a test: a slow
# or failing proxy is reported, never turned into a non-zero exit; only a broken setup is.
#
# Knobs (environment):
#   ROUNDS    measured rounds per shape (3)          DURATION  seconds per measured run (10)
#   WARMUP    seconds of warm-up per proxy/shape (2)  OUT       where to write results (bench/results.md)
#   SHAPES    any of: small (GET /, 50 conns), c500 (GET /, 500 conns), body (POST 1 KiB to /big,
#             16 KiB answers)                                        (default "small")
#   PROXIES   any of: hearth nginx32 nginx64 haproxy                 (default all four)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-small}
PROXIES=${PROXIES:-hearth nginx32 nginx64 haproxy}
OUT_ARG=${OUT:-bench/results.md}
COMMAND="ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SHAPES=\"$SHAPES\" PROXIES=\"$PROXIES\" OUT=$OUT_ARG bench/run.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case $OUT_ARG in
/*) OUT=$OUT_ARG ;;
*) OUT="$PWD/$OUT_ARG" ;;
esac
# nginx and haproxy live in sbin, which a non-login shell may not have on its PATH.
PATH="$PATH:/usr/sbin:/sbin"

say() { printf '%s\n' "$*" >&2; }
die() {
	say "bench: $*"
	exit 1
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds, not '$WARMUP'"
for shape in $SHAPES; do
	case $shape in small | c500 | body) ;; *) die "unknown shape '$shape' (small, c500, body)" ;; esac
done
for proxy in $PROXIES; do
	case $proxy in hearth | nginx32 | nginx64 | haproxy) ;; *) die "unknown proxy '$proxy'" ;; esac
done
wants() { [[ " $PROXIES " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Tools. Install only what is missing, quietly; perf is optional (its column then says n/a).
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v python3 >/dev/null || missing+=(python3)
if wants haproxy && ! command -v haproxy >/dev/null; then missing+=(haproxy); fi
command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then
	say "installing ${missing[*]}"
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
	"${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying anyway"
	# One package at a time, so an unavailable linux-perf does not block the rest.
	for package in "${missing[@]}"; do
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" \
			>/dev/null 2>&1 || say "could not install $package"
	done
fi
for tool in wrk nginx python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
if wants haproxy && ! command -v haproxy >/dev/null; then die "haproxy is required for PROXIES=haproxy"; fi
PERF=0
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
	PERF=1
else
	say "perf cannot count syscalls here; that column will say n/a"
fi
CLK_TCK=$(getconf CLK_TCK)
# 500 client connections plus the proxies' upstream connections outgrow the usual soft limit of
# 1024, so take what the hard limit allows (nofile cannot be unlimited; 65536 is plenty).
fd_hard=$(ulimit -Hn)
if [[ $fd_hard == unlimited ]] || ((fd_hard > 65536)); then fd_hard=65536; fi
if (($(ulimit -n) < fd_hard)); then ulimit -n "$fd_hard" 2>/dev/null || true; fi
FD_LIMIT=$(ulimit -n)
# A proxied client connection may need an upstream one too; keep a little for logs and listeners.
MAX_CONNS=$(((FD_LIMIT - 64) / 2))
if ((MAX_CONNS < 600)); then say "only $FD_LIMIT file descriptors; the c500 shape may see errors"; fi

# ---------------------------------------------------------------------------------------------
# Build hearth; a failed build costs the hearth row, not the run.
if wants hearth; then
	say "building hearth (cargo build --release)"
	if ! (cd "$ROOT" && cargo build --release --quiet); then
		say "hearth: release build FAILED; continuing without the hearth row"
		PROXIES=$(tr " " "\n" <<<"$PROXIES" | grep -vx hearth | tr "\n" " " || true)
	fi
fi

# ---------------------------------------------------------------------------------------------
# Processes: everything started here is in PIDS and goes when the script does, however it ends.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hearth-bench.XXXXXX")
PIDS=()
# The wrk and perf of the run in progress; wrk runs in the background and is waited for, because
# bash defers a trap until a foreground command ends, and a signal should stop the run now.
LOAD_PID=
PERF_PID=
cleanup() {
	local pid tries
	[[ -z $LOAD_PID ]] || kill "$LOAD_PID" 2>/dev/null || true
	[[ -z $PERF_PID ]] || kill -INT "$PERF_PID" 2>/dev/null || true
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		# Give each a moment to exit on SIGTERM, then insist.
		for ((tries = 0; tries < 20; tries++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background with output to log file $1 (shifted off); sets LAST_PID.
LAST_PID=
start() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# Waits until something accepts on 127.0.0.1:$1, while process $2 lives, for up to 10 s.
wait_port() {
	local tries
	for ((tries = 0; tries < 100; tries++)); do
		kill -0 "$2" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# Ports come from the kernel: bind port 0 on several sockets at once, so they are distinct.
read -r UP_PORT HEARTH_PORT N32_PORT N64_PORT HAP_PORT < <(python3 -c '
import socket
held = [socket.socket() for _ in range(5)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
')

# Temp paths keep nginx away from /var/lib/nginx and /var/log/nginx.
nginx_common() {
	local dir=$1
	cat <<EOF
master_process off;
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((FD_LIMIT - 64)); }
EOF
}
nginx_http_common() {
	local dir=$1
	cat <<EOF
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
EOF
}

# The origin: a fixed small answer at /, a 16 KiB file at /big that also answers POST, and
# stub_status so accepted upstream connections can be counted around each run.
up=$TMP/upstream
mkdir -p "$up/www"
head -c 16384 /dev/zero | tr '\0' 'x' >"$up/www/big"
{
	nginx_common "$up"
	cat <<EOF
http {
$(nginx_http_common "$up")
    server {
        listen 127.0.0.1:$UP_PORT;
        root $up/www;
        location / { return 200 "hello\n"; }
        # The static module refuses POST with 405; turn that into the file itself, so the body
        # shape gets 16 KiB answers to its 1 KiB uploads.
        location = /big { error_page 405 =200 \$uri; }
        location = /nginx_status { stub_status; }
    }
}
EOF
} >"$up/nginx.conf"
start "$up/out.log" nginx -p "$up" -e "$up/error.log" -c "$up/nginx.conf"
UP_PID=$LAST_PID
wait_port "$UP_PORT" "$UP_PID" || die "the nginx origin did not start: $(tail -5 "$up/error.log" "$up/out.log" 2>/dev/null)"

# Connections the origin has accepted so far, from stub_status. Asked over HTTP/1.0 with bash's
# /dev/tcp, so it needs no client and costs exactly one accepted connection of its own.
stub_accepts() {
	local reply
	exec 3<>"/dev/tcp/127.0.0.1/$UP_PORT" || return 1
	printf 'GET /nginx_status HTTP/1.0\r\nHost: bench\r\n\r\n' >&3
	reply=$(cat <&3)
	exec 3<&-
	awk 'seen { print $1; exit } /^server accepts/ { seen = 1 }' <<<"$reply"
}

declare -A PORT=([direct]=$UP_PORT) PID=() LABEL=(
	[direct]="direct (no proxy)" [hearth]="hearth" [nginx32]="nginx keepalive 32"
	[nginx64]="nginx keepalive 64" [haproxy]="HAProxy"
)

start_hearth() {
	local dir=$TMP/hearth
	mkdir -p "$dir"
	cat >"$dir/hearth.toml" <<EOF
workers = 1
[[listen]]
addr = "127.0.0.1:$HEARTH_PORT"
[upstreams.u]
nodes = { "127.0.0.1:$UP_PORT" = 1 }
keepalive_pool = { size = 320, requests = 1000000 }   # as nginx rows: keepalive_requests 1000000
[[routes]]
uris = ["/*"]
upstream = "u"
EOF
	local binary=$ROOT/target/release/hearth
	[[ -x $binary ]] || return 1
	start "$dir/hearth.log" env RUST_LOG=warn "$binary" -c "$dir/hearth.toml"
	PID[hearth]=$LAST_PID
	PORT[hearth]=$HEARTH_PORT
	# hearth logs `listening on ADDR` once bound, but RUST_LOG=warn may hide it, so the port
	# accepting is what counts.
	wait_port "$HEARTH_PORT" "$LAST_PID"
}

start_nginx_proxy() {
	local name=$1 keepalive=$2 port=$3 dir=$TMP/$1
	mkdir -p "$dir"
	{
		nginx_common "$dir"
		cat <<EOF
http {
$(nginx_http_common "$dir")
    upstream u {
        server 127.0.0.1:$UP_PORT;
        keepalive $keepalive;
        # Same limits as the client side, so nginx does not recycle pooled connections every
        # 1000 requests (its default) and the pool comparison is about pool size alone.
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
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

start_haproxy() {
	local dir=$TMP/haproxy
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAX_CONNS

defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:$HAP_PORT
    default_backend origin

backend origin
    server u 127.0.0.1:$UP_PORT
EOF
	start "$dir/out.log" haproxy -db -f "$dir/haproxy.cfg"
	PID[haproxy]=$LAST_PID
	PORT[haproxy]=$HAP_PORT
	wait_port "$HAP_PORT" "$LAST_PID"
}

ACTIVE=()
for proxy in $PROXIES; do
	case $proxy in
	hearth) start_hearth && ok=1 || ok=0 ;;
	nginx32) start_nginx_proxy nginx32 32 "$N32_PORT" && ok=1 || ok=0 ;;
	nginx64) start_nginx_proxy nginx64 64 "$N64_PORT" && ok=1 || ok=0 ;;
	haproxy) start_haproxy && ok=1 || ok=0 ;;
	esac
	if ((ok)); then
		ACTIVE+=("$proxy")
	else
		pid=${PID[$proxy]:-}
		if [[ -z $pid ]]; then
			why="no executable found"
		elif kill -0 "$pid" 2>/dev/null; then
			why="still not accepting on 127.0.0.1:${PORT[$proxy]} after 10 s"
			kill "$pid" 2>/dev/null || true
		else
			wait "$pid" 2>/dev/null && status=0 || status=$?
			why="it exited with status $status before accepting"
		fi
		say "$proxy: FAILED to start ($why); continuing without it."
		if [[ -s "$TMP/$proxy/$proxy.log" || -s "$TMP/$proxy/out.log" || -s "$TMP/$proxy/error.log" ]]; then
			say "    last lines of its output:"
			tail -q -n 5 "$TMP/$proxy"/*.log 2>/dev/null | sed 's/^/    /' >&2 || true
		fi
	fi
done
say "origin on :$UP_PORT; proxies up: ${ACTIVE[*]:-none}"

# ---------------------------------------------------------------------------------------------
# Load.
cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

set_shape() {
	CONNS=50
	TARGET=/
	LUA=
	case $1 in
	c500) CONNS=500 ;;
	body)
		TARGET=/big
		LUA=$TMP/post.lua
		;;
	esac
}

# utime + stime of a whole process, in clock ticks. The command name may hold spaces, so fields
# are counted from after its closing parenthesis: utime and stime are fields 14 and 15 overall.
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat") || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086 # splitting the fields is the point
	set -- $stat
	echo $((${12} + ${13}))
}

# wrk --latency output -> "req/s p50_ms p99_ms requests errors"; errors are non-2xx/3xx answers
# plus socket errors, so a proxy that fails fast cannot pass for a fast one.
parse_wrk() {
	awk '
	function ms(v) {
		if (v ~ /us$/) return v / 1000
		if (v ~ /ms$/) return v + 0
		if (v ~ /m$/) return v * 60000
		if (v ~ /s$/) return v * 1000
		return v + 0
	}
	$1 == "50%" { p50 = ms($2) }
	$1 == "99%" { p99 = ms($2) }
	/ requests in / { requests = $1 }
	/^Requests\/sec:/ { rps = $2 }
	/Non-2xx or 3xx responses:/ { errors += $NF }
	/Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
	END {
		if (requests == "") { print "n/a n/a n/a 0 0"; exit }
		printf "%s %s %s %s %d\n", rps, p50, p99, requests, errors
	}' "$1"
}

# Runs wrk with arguments "$2"... and output to file $1, in the background so a signal to the
# script is handled at once (see LOAD_PID).
load() {
	local out=$1 status=0
	shift
	wrk "$@" >"$out" 2>&1 &
	LOAD_PID=$!
	wait "$LOAD_PID" || status=$?
	LOAD_PID=
	return "$status"
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"
declare -A DEAD=()

# One wrk run against row $1 for shape $2 lasting $3 seconds; with $4 = a round number, measure
# and append a line to RESULTS, without it (warm-up) just load.
run_once() {
	local name=$1 shape=$2 secs=$3 round=${4:-} pid=${PID[$1]:-} tag="$1.$2.${4:-warm}"
	local url="http://127.0.0.1:${PORT[$1]}$TARGET"
	local wrk_args=(-t1 "-c$CONNS" "-d${secs}s" --latency)
	[[ -n $LUA ]] && wrk_args+=(-s "$LUA")
	if [[ -z $round ]]; then
		load "$TMP/wrk.$tag" "${wrk_args[@]}" "$url" || true
		return
	fi

	local accepts0 accepts1 ticks0=0 ticks1=0
	accepts0=$(stub_accepts || echo)
	if [[ -n $pid ]]; then
		ticks0=$(cpu_ticks "$pid" || echo 0)
		if ((PERF)); then
			perf stat -e raw_syscalls:sys_enter -x, -o "$TMP/perf.$tag" -p "$pid" 2>/dev/null &
			PERF_PID=$!
			# Let perf attach before the load starts.
			sleep 0.3
		fi
	fi
	load "$TMP/wrk.$tag" "${wrk_args[@]}" "$url" || say "$name: wrk failed: $(tail -1 "$TMP/wrk.$tag")"
	if [[ -n $pid ]]; then ticks1=$(cpu_ticks "$pid" || echo); fi
	local counted=
	if [[ -n $PERF_PID ]]; then
		# perf stat prints its counts when interrupted.
		kill -INT "$PERF_PID" 2>/dev/null || true
		wait "$PERF_PID" 2>/dev/null || true
		PERF_PID=
		counted=1
	fi
	accepts1=$(stub_accepts || echo)

	local rps p50 p99 requests errors cpu=- syscalls=- conns=n/a rss=-
	read -r rps p50 p99 requests errors < <(parse_wrk "$TMP/wrk.$tag")
	if [[ -n $pid ]]; then
		if kill -0 "$pid" 2>/dev/null; then
			rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
		else
			say "$name: DIED during the $shape run; dropping it from later runs"
			DEAD[$name]=1
			rss=n/a
		fi
		cpu=n/a
		# A process that died has no stat left to read.
		if [[ -n $ticks1 ]]; then
			cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v n="$requests" \
				'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "n/a" }')
		fi
		syscalls=n/a
		if [[ -n $counted ]]; then
			syscalls=$(awk -F, -v n="$requests" '$3 ~ /raw_syscalls:sys_enter/ {
				if ($1 ~ /^[0-9]+$/ && n > 0) printf "%.2f", $1 / n; else print "n/a" }' "$TMP/perf.$tag")
			[[ -n $syscalls ]] || syscalls=n/a
		fi
	fi
	if [[ $accepts0 =~ ^[0-9]+$ && $accepts1 =~ ^[0-9]+$ ]]; then
		# The later stub_status request's own connection is counted in accepts1; take it off.
		conns=$(awk -v d="$((accepts1 - accepts0 - 1))" -v n="$requests" \
			'BEGIN { if (n > 0) printf "%.2f", d * 10000 / n; else print "n/a" }')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$name" "$round" \
		"$rps" "$p50" "$p99" "$cpu" "$syscalls" "$conns" "$rss" "$errors" >>"$RESULTS"
	say "  round $round $(printf '%-20s' "${LABEL[$name]}") $rps req/s, p99 $p99 ms, errors $errors"
}

ROWS=(direct "${ACTIVE[@]}")
for shape in $SHAPES; do
	set_shape "$shape"
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
			run_once "$name" "$shape" "$DURATION" "$round"
		done
	done
done

# ---------------------------------------------------------------------------------------------
# Report: medians per row and shape, then hearth's ratios to HAProxy and nginx-64.
TABLES=$TMP/tables.md
python3 - "$RESULTS" "$SHAPES" >"$TABLES" <<'EOF'
import statistics
import sys

results, shapes = sys.argv[1], sys.argv[2].split()
order = ["direct", "hearth", "nginx32", "nginx64", "haproxy"]
label = {"direct": "direct (no proxy)", "hearth": "hearth", "nginx32": "nginx keepalive 32",
         "nginx64": "nginx keepalive 64", "haproxy": "HAProxy"}
columns = [("req/s", "%.0f"), ("p50 ms", "%.3f"), ("p99 ms", "%.3f"), ("CPU us/req", "%.2f"),
           ("syscalls/req", "%.2f"), ("upstream conns/10k req", "%.2f"), ("RSS MiB", "%.1f")]
shape_title = {"small": "small: GET /, 50 connections",
               "c500": "c500: GET /, 500 connections",
               "body": "body: POST 1 KiB to /big, 16 KiB answers, 50 connections"}

runs = {}
with open(results) as f:
    for line in f:
        shape, name, _round, *values = line.rstrip("\n").split("\t")
        runs.setdefault((shape, name), []).append(values)

def median(rows, i):
    numbers = []
    for row in rows:
        try:
            numbers.append(float(row[i]))
        except ValueError:
            pass
    return statistics.median(numbers) if numbers else None

def cell(value, fmt):
    return "n/a" if value is None else fmt % value

def table(header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(r, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in body])

for shape in shapes:
    print(f"### {shape_title[shape]}\n")
    header = ["proxy"] + [c for c, _ in columns] + ["errors", "runs"]
    body, med = [], {}
    for name in order:
        rows = runs.get((shape, name))
        if not rows:
            continue
        med[name] = [median(rows, i) for i in range(len(columns))]
        direct = name == "direct"
        cells = [label[name]]
        for i, (_, fmt) in enumerate(columns):
            # The direct row has no proxy process, so its per-proxy figures do not apply.
            cells.append("-" if direct and i in (3, 4, 6) else cell(med[name][i], fmt))
        errors = sum(int(r[7]) for r in rows if r[7].isdigit())
        body.append(cells + [str(errors), str(len(rows))])
    if not body:
        print("(no runs)\n")
        continue
    print(table(header, body) + "\n")
    if "hearth" not in med:
        print("- hearth not measured, so no ratios\n")
        continue
    for peer in ("haproxy", "nginx64"):
        if peer not in med:
            print(f"- hearth / {label[peer]}: {label[peer]} not measured")
            continue
        parts = []
        for i, what in ((0, "req/s"), (3, "CPU per request")):
            a = med.get("hearth", [None] * 7)[i]
            b = med.get(peer, [None] * 7)[i]
            parts.append(f"{what} {a / b:.2f}x" if a and b else f"{what} n/a")
        print(f"- hearth / {label[peer]}: " + ", ".join(parts))
    print()
EOF

cat "$TABLES"

mkdir -p "$(dirname "$OUT")"
{
	echo "# hearth benchmark results"
	echo
	echo "Written by bench/run.sh; rerun it rather than editing this file."
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "- kernel: $(uname -r)"
	echo "- CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc)"
	echo "- hearth commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "- tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | awk 'NR == 1 { print "HAProxy " $3 }' || true), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)"
	echo "- command: \`$COMMAND\`"
	echo "- proxies that ran: ${ACTIVE[*]:-none}"
	echo
	echo "Each figure is the median over the rounds. Everything shares the same machine, unpinned:"
	echo "wrk (-t1), the nginx origin and the proxy under test. CPU us/req is the proxy's"
	echo "utime+stime over the run divided by requests; syscalls/req counts raw_syscalls:sys_enter"
	echo "with perf; upstream conns/10k req comes from the origin's stub_status accepts; RSS is the"
	echo "proxy's VmRSS after the run; errors sums non-2xx/3xx answers and socket errors over all runs."
	echo
	cat "$TABLES"
} >"$OUT"
say "wrote $OUT"
