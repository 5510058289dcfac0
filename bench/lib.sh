# shellcheck shell=bash disable=SC2034 # the callers use PORT, PID, ADMIN, LABEL and friends
# bench/lib.sh: what bench/run.sh and bench/profile.sh share, sourced by both, never run alone.
#
# It owns the tools (installed when missing), the release build, every process the scripts start
# (listed in PIDS and stopped by an EXIT trap however the script ends, with TMP removed unless
# KEEP_TMP is set, for reading every run's raw output and the proxies' logs afterwards), the
# nginx origin with its stub_status counter, and the proxies under test, each started on a port
# the kernel handed out and checked to accept before it counts as up. Nothing here writes outside
# TMP; the callers write their own results.

# nginx and haproxy live in sbin, which a non-login shell may not have on its PATH.
PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The hearth binary under test, and for the `hearthb` row a second build to compare it with in
# the same run (e.g. one of an older commit, built in a worktree of its own).
HEARTH_BIN=${HEARTH_BIN:-$ROOT/target/release/hearth}
HEARTH_BASE_BIN=${HEARTH_BASE_BIN:-}

say() { printf '%s\n' "$*" >&2; }
die() {
	say "bench: $*"
	exit 1
}

# Turns a path given relative to where the script was started into an absolute one.
absolute() {
	case $1 in
	/*) echo "$1" ;;
	*) echo "$PWD/$1" ;;
	esac
}

# ---------------------------------------------------------------------------------------------
# Tools. ensure_tools TOOL...: installs the Debian package of each missing one, quietly and one at
# a time, so one unavailable package does not block the rest; callers then check what they need.
ensure_tools() {
	local tool missing=() sudo=()
	for tool in "$@"; do
		command -v "$tool" >/dev/null && continue
		case $tool in
		perf) missing+=(linux-perf) ;;
		ss) missing+=(iproute2) ;;
		*) missing+=("$tool") ;;
		esac
	done
	((${#missing[@]})) || return 0
	say "installing ${missing[*]}"
	[[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
	"${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying anyway"
	for tool in "${missing[@]}"; do
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" \
			>/dev/null 2>&1 || say "could not install $tool"
	done
}

# Sets FD_LIMIT to the raised soft limit on open files and MAX_CONNS to the client connections a
# proxy can hold at that limit. 500 client connections plus their upstream ones, or 10,000 idle
# clients, outgrow the usual soft limit of 1024, so take what the hard limit allows (nofile
# cannot be unlimited; 65536 is plenty).
raise_fd_limit() {
	local hard
	hard=$(ulimit -Hn)
	if [[ $hard == unlimited ]] || ((hard > 65536)); then hard=65536; fi
	if (($(ulimit -n) < hard)); then ulimit -n "$hard" 2>/dev/null || true; fi
	FD_LIMIT=$(ulimit -n)
	# A proxied client connection may need an upstream one too; keep a little for logs and
	# listeners.
	MAX_CONNS=$(((FD_LIMIT - 64) / 2))
}

# Builds hearth; returns non-zero when the build fails, so the caller decides what that costs.
build_hearth() {
	say "building hearth (cargo build --release)"
	(cd "$ROOT" && cargo build --release --quiet)
}

# The floor row's forwarder, examples/floor.rs.
FLOOR_BIN=$ROOT/target/release/examples/floor
build_floor() {
	say "building the floor forwarder (cargo build --release --example floor)"
	(cd "$ROOT" && cargo build --release --quiet --example floor)
}

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
	[[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
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

# Stops process $1, started by `start`, before the script ends: SIGTERM, up to 2 s, then SIGKILL.
stop() {
	local tries
	kill "$1" 2>/dev/null || true
	for ((tries = 0; tries < 20; tries++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# Waits until something accepts on 127.0.0.1:$1, while process $2 lives, for up to 10 s. The
# listener must be process $2's own (ss -p names it; not checked where ss is missing): a row
# given a port that another already holds would otherwise pass for up, and its load would go to
# the other.
wait_port() {
	local tries
	for ((tries = 0; tries < 100; tries++)); do
		kill -0 "$2" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			if command -v ss >/dev/null && ! ss -Hltnp "sport = :$1" | grep -q "pid=$2,"; then
				say "port $1 is held by another process, not by $2"
				return 1
			fi
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# Prints $1 distinct free ports. They come from the kernel: bind port 0 on all the sockets at
# once, so no two are the same.
free_ports() {
	python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
' "$1"
}

# VmRSS of process $1 in KiB, or nothing when it is gone.
rss_kib() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# utime and stime of a whole process, in clock ticks. The command name may hold spaces, so fields
# are counted from after its closing parenthesis: utime and stime are fields 14 and 15 overall.
proc_times() {
	local stat
	stat=$(<"/proc/$1/stat") || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086 # splitting the fields is the point
	set -- $stat
	echo "${12} ${13}"
}

# utime + stime of a whole process, in clock ticks.
cpu_ticks() {
	local t
	t=$(proc_times "$1") || return 1
	echo $((${t% *} + ${t#* }))
}

# ---------------------------------------------------------------------------------------------
# The origin and the proxies. Per row name: PORT, PID and LABEL.
declare -A PORT=() PID=() ADMIN=() LABEL=(
	[direct]="direct (no proxy)" [hearth]="hearth" [hearth2]="hearth, 2 workers"
	[hearthb]="hearth, base build" [floor]="floor (bare forwarder)"
	[nginx32]="nginx keepalive 32" [nginx64]="nginx keepalive 64" [haproxy]="HAProxy"
	[tls_hearth]="hearth, https pool" [tls_hearth0]="hearth, https size 0"
	[tls_nginx32]="nginx 32, ssl reuse"
)

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

# The origin on 127.0.0.1:$1: a fixed small answer at /, a 16 KiB file at /big that also answers
# POST, and stub_status so accepted upstream connections can be counted around each run. Sets
# UP_PORT, UP_PID and PORT[direct]; PID[direct] stays unset, as the direct row has no proxy.
start_origin() {
	local up=$TMP/upstream
	UP_PORT=$1
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
        # Reads a whole request body before it answers (nginx's own proxy buffers it, then asks
        # /sink), for bench/chunks.sh: an origin that answered first would leave the body
        # undrained, and hearth would rightly close the connection.
        location = /upload { client_max_body_size 0; proxy_pass http://127.0.0.1:$UP_PORT/sink; }
        location = /sink { return 200 "ok\n"; }
        location = /nginx_status { stub_status; }
    }
$(origin_tls_server "$up")
}
EOF
	} >"$up/nginx.conf"
	start "$up/out.log" nginx -p "$up" -e "$up/error.log" -c "$up/nginx.conf"
	UP_PID=$LAST_PID
	PORT[direct]=$UP_PORT
	wait_port "$UP_PORT" "$UP_PID" ||
		die "the nginx origin did not start: $(tail -5 "$up/error.log" "$up/out.log" 2>/dev/null)"
}

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

# start_hearth NAME PORT WORKERS [ADMIN_PORT]: hearth in front of the origin, with its /metrics
# on ADMIN_PORT when given. Every limit that would recycle a connection during a run is lifted to
# match the nginx rows (keepalive_requests 1000000, keepalive_timeout 300s on both sides), so the
# rows differ in the proxy, not in its settings.
# The origin's https listener for the https shape: the same answers over TLS, with a session cache
# so that proxies which offer a session resume it. Prints nothing unless UP_TLS_PORT is set.
origin_tls_server() {
	local up=$1
	[[ -n ${UP_TLS_PORT:-} ]] || return 0
	make_origin_cert "$up"
	cat <<EOF
    server {
        listen 127.0.0.1:$UP_TLS_PORT ssl;
        ssl_certificate $up/origin.crt;
        ssl_certificate_key $up/origin.key;
        ssl_session_cache shared:origin:1m;
        ssl_session_timeout 1h;
        location / { return 200 "hello\n"; }
    }
EOF
}

# A CA and a leaf certificate for "localhost" signed by it, so hearth verifies the origin the way
# it would in production (rustls does not accept a self-signed leaf as its own anchor).
make_origin_cert() {
	local d=$1
	[[ -s $d/origin.crt ]] && return 0
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=hearth bench CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=localhost" -keyout "$d/origin.key" -out "$d/origin.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$d/origin.ext"
	openssl x509 -req -in "$d/origin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
		-days 2 -extfile "$d/origin.ext" -out "$d/origin.crt" 2>/dev/null
}

# hearth in front of the origin's https listener; $3 is the pool size (0 turns pooling off).
start_hearth_tls() {
	local name=$1 port=$2 size=$3 dir=$TMP/$1
	mkdir -p "$dir"
	{
		echo "workers = 1"
		hearth_front "$port"
		cat <<EOF
[upstreams.u]
nodes = { "127.0.0.1:$UP_TLS_PORT" = 1 }
scheme = "https"
tls = { sni = "localhost", ca = "$TMP/upstream/ca.crt" }
keepalive_pool = { size = $size, requests = 1000000, idle_timeout = "300s" }
[[routes]]
uris = ["/*"]
upstream = "u"
EOF
	} >"$dir/hearth.toml"
	launch_hearth "$name" "$port" "$dir" "$HEARTH_BIN"
}

# The listener and client limits every hearth row shares: keep-alive clients are never cut.
hearth_front() {
	cat <<EOF
[[listen]]
addr = "127.0.0.1:$1"
[client]
idle_timeout = "300s"
max_requests = 1000000
EOF
}

# Starts hearth `$1` on port `$2` with `$3/hearth.toml`, using binary `$4`.
launch_hearth() {
	local name=$1 port=$2 dir=$3 binary=$4
	[[ -x $binary ]] || return 1
	start "$dir/hearth.log" env RUST_LOG=warn "$binary" -c "$dir/hearth.toml"
	PID[$name]=$LAST_PID
	PORT[$name]=$port
	# hearth logs `listening on ADDR` once bound, but RUST_LOG=warn may hide it, so the port
	# accepting is what counts.
	wait_port "$port" "$LAST_PID"
}

# positive_knobs NAME...: dies unless each named variable holds a positive integer.
positive_knobs() {
	local knob
	for knob in "$@"; do
		[[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob must be a positive integer, not '${!knob}'"
	done
}

# hearth_binary_ready: builds hearth when BUILD is 1, and dies unless HEARTH_BIN is there.
hearth_binary_ready() {
	if ((BUILD)); then build_hearth || die "hearth: release build failed"; fi
	[[ -x $HEARTH_BIN ]] || die "no hearth at $HEARTH_BIN (BUILD=1 builds it)"
}

# hearth_origin_route: the upstream `u` (the origin on UP_PORT, with the pool of every hearth
# row) and the route sending everything to it, as TOML on stdout.
hearth_origin_route() {
	cat <<EOF
[upstreams.u]
nodes = { "127.0.0.1:$UP_PORT" = 1 }
# size covers the c500 shape's concurrency, as the zero-connects target assumes (with 320, hearth
# evicts and reopens connections at 500 clients, and warns that size is too small).
keepalive_pool = { size = 1024, requests = 1000000, idle_timeout = "300s" }
[[routes]]
uris = ["/*"]
upstream = "u"
EOF
}

start_hearth() {
	local name=$1 port=$2 workers=$3 admin=${4:-} dir=$TMP/$1
	mkdir -p "$dir"
	{
		echo "workers = $workers"
		[[ -z $admin ]] || printf '[admin]\naddr = "127.0.0.1:%s"\n' "$admin"
		hearth_front "$port"
		hearth_origin_route
	} >"$dir/hearth.toml"
	local binary=$HEARTH_BIN
	[[ $name != hearthb ]] || binary=$HEARTH_BASE_BIN
	ADMIN[$name]=$admin
	launch_hearth "$name" "$port" "$dir" "$binary"
}

# start_floor NAME PORT: examples/floor.rs relaying to the origin, one upstream connection per
# client; the least a user-space proxy can cost here, to measure hearth against.
start_floor() {
	local name=$1 port=$2 dir=$TMP/$1
	mkdir -p "$dir"
	[[ -x $FLOOR_BIN ]] || return 1
	start "$dir/floor.log" "$FLOOR_BIN" "127.0.0.1:$port" "127.0.0.1:$UP_PORT"
	PID[$name]=$LAST_PID
	PORT[$name]=$port
	wait_port "$port" "$LAST_PID"
}

# start_nginx_proxy NAME KEEPALIVE PORT [https]: nginx, one worker, with an upstream pool of
# KEEPALIVE; with "https", in front of the origin's TLS listener with the usual tuning
# (proxy_ssl_session_reuse on, SNI localhost).
start_nginx_proxy() {
	local name=$1 keepalive=$2 port=$3 scheme=${4:-http} dir=$TMP/$1
	local upstream_port=$UP_PORT ssl=
	if [[ $scheme == https ]]; then
		upstream_port=$UP_TLS_PORT
		ssl="
            proxy_ssl_session_reuse on;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;"
	fi
	mkdir -p "$dir"
	{
		nginx_common "$dir"
		cat <<EOF
http {
$(nginx_http_common "$dir")
    upstream u {
        server 127.0.0.1:$upstream_port;
        keepalive $keepalive;
        # Same limits as the client side, so nginx does not recycle pooled connections every
        # 1000 requests (its default) and the pool comparison is about pool size alone.
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass $scheme://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$ssl
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

# start_haproxy NAME PORT [MAXCONN]: HAProxy, one thread, http-reuse safe. MAXCONN defaults to
# what the file limit allows for proxied connections.
start_haproxy() {
	local name=$1 port=$2 maxconn=${3:-$MAX_CONNS} dir=$TMP/$1
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn

defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:$port
    default_backend origin

backend origin
    server u 127.0.0.1:$UP_PORT
EOF
	start "$dir/out.log" haproxy -db -f "$dir/haproxy.cfg"
	PID[$name]=$LAST_PID
	PORT[$name]=$port
	wait_port "$port" "$LAST_PID"
}

# start_row NAME PORT [ADMIN_PORT]: starts the proxy behind row NAME (hearth's /metrics on
# ADMIN_PORT); returns non-zero when it is not up.
start_row() {
	case $1 in
	hearth) start_hearth hearth "$2" 1 "${3:-}" ;;
	hearth2) start_hearth hearth2 "$2" 2 ;;
	hearthb) start_hearth hearthb "$2" 1 ;;
	floor) start_floor floor "$2" ;;
	nginx32) start_nginx_proxy nginx32 32 "$2" ;;
	nginx64) start_nginx_proxy nginx64 64 "$2" ;;
	haproxy) start_haproxy haproxy "$2" ;;
	tls_hearth) start_hearth_tls tls_hearth "$2" 1024 ;;
	tls_hearth0) start_hearth_tls tls_hearth0 "$2" 0 ;;
	tls_nginx32) start_nginx_proxy tls_nginx32 32 "$2" https ;;
	*) return 1 ;;
	esac
}

# Says why row $1 did not come up, with the last lines of its output, and stops what is left.
explain_failure() {
	local name=$1 pid=${PID[$1]:-} why status
	if [[ -z $pid ]]; then
		why="no executable found"
	elif kill -0 "$pid" 2>/dev/null; then
		why="still not accepting on 127.0.0.1:${PORT[$name]} after 10 s"
		stop "$pid"
	else
		wait "$pid" 2>/dev/null && status=0 || status=$?
		why="it exited with status $status before accepting"
	fi
	say "$name: FAILED to start ($why); continuing without it."
	if compgen -G "$TMP/$name/*.log" >/dev/null; then
		say "    last lines of its output:"
		tail -q -n 5 "$TMP/$name"/*.log 2>/dev/null | sed 's/^/    /' >&2 || true
	fi
}

# ---------------------------------------------------------------------------------------------
# Load.
cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

# Sets CONNS, TARGET and LUA for shape $1: small (GET /, 50 connections), c500 (GET /, 500
# connections) or body (POST 1 KiB to /big, 16 KiB answers, 50 connections).
set_shape() {
	CONNS=50
	TARGET=/
	LUA=
	case $1 in
	c500) CONNS=500 ;;
	https) ;;
	body)
		TARGET=/big
		LUA=$TMP/post.lua
		;;
	esac
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

# wrk arguments for the current shape, $1 seconds long, against row $2.
wrk_args() {
	WRK_ARGS=(-t1 "-c$CONNS" "-d${1}s" --latency)
	[[ -z $LUA ]] || WRK_ARGS+=(-s "$LUA")
	WRK_ARGS+=("http://127.0.0.1:${PORT[$2]}$TARGET")
}

# hearth's /metrics from admin port $1, asked like stub_accepts.
hearth_metrics() {
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3
	cat <&3
	exec 3<&-
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

