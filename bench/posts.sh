#!/usr/bin/env bash
# bench/posts.sh: how many upstream connections hearth, nginx and HAProxy open for bursts of GETs
# and for bursts of POSTs, in one run, so the claim that a POST costs hearth its pooled connection
# is checked by a command. `make bench-posts` runs it.
#
# It owns its nginx origin (every method answered by `return 200`, which answers as soon as the
# head is in and discards the body afterwards; idle keep-alive connections closed after
# ORIGIN_IDLE seconds; stub_status to count accepted connections) and one row per proxy, each
# with one worker in front of that origin: hearth with `keepalive_pool = { size = 64 }` and
# otherwise its defaults, nginx with `keepalive 64`, HAProxy with `http-reuse safe` (the last two
# as bench/lib.sh starts them for `make bench`). examples/burst.rs drives each in turn: CLIENTS
# keep-alive clients, REQUESTS requests each per burst, BURSTS bursts GAP seconds apart, for each
# mix: GETs, POSTs with head and body in one write, POSTs whose body is a second write, and a
# longer mixed run (half POSTs, MIXED_BURSTS bursts, idle gaps drawn from MIXED_GAP seconds,
# around the origin's idle timeout so some pooled connections go stale). Upstream connections
# opened per run come from the origin's stub_status. Before each run it waits until the origin
# has closed every connection the previous run left idle, so every run starts from an empty pool.
# Rows alternate within a round; bench/posts_report.py turns the runs into OUT: medians over
# ROUNDS rounds, hearth's POST/GET ratio, hearth against nginx and HAProxy, and hearth's own
# counters of why it opened and closed upstream connections. It is a benchmark, not a test: a proxy doing badly is reported,
# never turned into a non-zero exit; only a broken setup is.
#
# Knobs (environment):
#   ROUNDS        rounds; each runs every row on every mix once (3)
#   MIXES         any of get, post, post-split, mixed, mixed-split (default "get post post-split
#                 mixed"); the mixed ones are the long shape
#   PROXIES       any of hearth, hearthb, nginx64, haproxy, direct (default "hearth nginx64
#                 haproxy"); hearthb is HEARTH_BASE_BIN with hearth's settings, for A/B in one
#                 run; direct sends the load to the origin itself (a check of the counting: one
#                 connection per client)
#   CLIENTS       keep-alive clients (40)
#   REQUESTS      requests per client per burst (6)
#   BURSTS, GAP   bursts of the short mixes and the idle seconds between them (3, 1)
#   MIXED_BURSTS, MIXED_GAP   the same for the long mixes; a range draws each gap (14, 1.5-3)
#   BODY          bytes per POST body (200)
#   SPREAD        seconds over which the clients' starts are spread within a burst; 0 starts all
#                 at once, so the first burst needs one upstream connection per client (0)
#   ORIGIN_IDLE   the origin's keepalive_timeout, whole seconds (2)
#   SEED          gap seed; round N uses SEED+N, the same for every row of the round (1)
#   BUILD         1 builds hearth and the generator first; 0 takes the binaries as they are (1)
#   HEARTH_BIN, HEARTH_BASE_BIN   the binaries of the hearth and hearthb rows
#   OUT           where to write the report (bench/posts.md)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MIXES=${MIXES:-get post post-split mixed}
PROXIES=${PROXIES:-hearth nginx64 haproxy}
CLIENTS=${CLIENTS:-40}
REQUESTS=${REQUESTS:-6}
BURSTS=${BURSTS:-3}
GAP=${GAP:-1}
MIXED_BURSTS=${MIXED_BURSTS:-14}
MIXED_GAP=${MIXED_GAP:-1.5-3}
BODY=${BODY:-200}
SPREAD=${SPREAD:-0}
ORIGIN_IDLE=${ORIGIN_IDLE:-2}
SEED=${SEED:-1}
BUILD=${BUILD:-1}
OUT_ARG=${OUT:-bench/posts.md}
COMMAND="${HEARTH_BASE_BIN:+HEARTH_BASE_BIN=$HEARTH_BASE_BIN }ROUNDS=$ROUNDS MIXES=\"$MIXES\" PROXIES=\"$PROXIES\" CLIENTS=$CLIENTS REQUESTS=$REQUESTS BURSTS=$BURSTS GAP=$GAP MIXED_BURSTS=$MIXED_BURSTS MIXED_GAP=$MIXED_GAP BODY=$BODY SPREAD=$SPREAD ORIGIN_IDLE=$ORIGIN_IDLE SEED=$SEED BUILD=$BUILD OUT=$OUT_ARG bash bench/posts.sh"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(absolute "$OUT_ARG")
BURST_BIN=$ROOT/target/release/examples/burst

positive_knobs ROUNDS CLIENTS REQUESTS BURSTS MIXED_BURSTS ORIGIN_IDLE
[[ $BODY =~ ^[0-9]+$ ]] || die "BODY must be a whole number of bytes, not '$BODY'"
[[ $SPREAD =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SPREAD must be seconds, not '$SPREAD'"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED must be a whole number, not '$SEED'"
[[ $BUILD == 0 || $BUILD == 1 ]] || die "BUILD must be 0 or 1, not '$BUILD'"
for gap in "$GAP" "$MIXED_GAP"; do
	[[ $gap =~ ^[0-9]+(\.[0-9]+)?(-[0-9]+(\.[0-9]+)?)?$ ]] ||
		die "a gap is seconds (1) or a range of them (1.5-3), not '$gap'"
done
for mix in $MIXES; do
	case $mix in get | post | post-split | mixed | mixed-split) ;; *) die "unknown mix '$mix'" ;; esac
done
for proxy in $PROXIES; do
	case $proxy in hearth | hearthb | nginx64 | haproxy | direct) ;; *) die "unknown proxy '$proxy'" ;; esac
done
in_list() { [[ " $2 " == *" $1 "* ]]; }
if in_list hearthb "$PROXIES" && [[ ! -x $HEARTH_BASE_BIN ]]; then
	die "PROXIES has hearthb but HEARTH_BASE_BIN ('$HEARTH_BASE_BIN') is not an executable"
fi
# Whatever the previous run left idle must be closed by the origin, and seen closed by the proxy,
# before the next run counts: a second past the origin's idle timeout.
SETTLE=$((ORIGIN_IDLE + 1))

# ---------------------------------------------------------------------------------------------
# Tools and builds. The generator is the measuring instrument: without it nothing can run.
ensure_tools nginx python3
if in_list haproxy "$PROXIES"; then ensure_tools haproxy; fi
for tool in nginx python3; do command -v "$tool" >/dev/null || die "$tool is required"; done
if in_list haproxy "$PROXIES" && ! command -v haproxy >/dev/null; then
	die "haproxy is required for PROXIES=haproxy"
fi
raise_fd_limit
if ((BUILD)); then
	say "building the load generator (cargo build --release --example burst)"
	(cd "$ROOT" && cargo build --release --quiet --example burst) || die "the load generator did not build"
	# As in run.sh, a failed build costs the hearth row, not the run.
	if in_list hearth "$PROXIES" && ! build_hearth; then
		say "hearth: release build FAILED; continuing without the hearth row"
		PROXIES=$(tr " " "\n" <<<"$PROXIES" | grep -vx hearth | tr "\n" " " || true)
	fi
fi
[[ -x $BURST_BIN ]] || die "no load generator at $BURST_BIN (BUILD=1 builds it)"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The origin: every method gets `return 200`, which nginx sends as soon as it has the head,
# discarding any body after; idle connections are closed after ORIGIN_IDLE seconds. lib.sh's
# start_origin serves other shapes with a 300 s keep-alive, so this one is written here; the
# server-level keepalive_timeout overrides the http-level one of nginx_http_common.
start_posts_origin() {
	local up=$TMP/upstream
	UP_PORT=$1
	mkdir -p "$up"
	{
		nginx_common "$up"
		cat <<EOF
http {
$(nginx_http_common "$up")
    server {
        listen 127.0.0.1:$UP_PORT;
        keepalive_timeout ${ORIGIN_IDLE}s;
        location / { return 200 "ok\n"; }
        location = /nginx_status { stub_status; }
    }
}
EOF
	} >"$up/nginx.conf"
	start "$up/out.log" nginx -p "$up" -e "$up/error.log" -c "$up/nginx.conf"
	UP_PID=$LAST_PID
	PORT[direct]=$UP_PORT
	wait_port "$UP_PORT" "$UP_PID" ||
		die "the nginx origin did not start: $(tail -5 "$up/error.log" "$up/out.log" 2>/dev/null)"
}

# start_hearth_pool64 NAME PORT BINARY ADMIN_PORT: hearth as the issue runs it, one worker and
# `keepalive_pool = { size = 64 }`, every other setting at its default (lib.sh's rows lift the
# client and pool limits for throughput runs; here the defaults are the point). The admin listener
# only serves /metrics, to say why connections were opened.
start_hearth_pool64() {
	local name=$1 port=$2 binary=$3 admin=$4 dir=$TMP/$1
	mkdir -p "$dir"
	cat >"$dir/hearth.toml" <<EOF
workers = 1
[admin]
addr = "127.0.0.1:$admin"
[[listen]]
addr = "127.0.0.1:$port"
[upstreams.u]
nodes = { "127.0.0.1:$UP_PORT" = 1 }
keepalive_pool = { size = 64 }
[[routes]]
uris = ["/*"]
upstream = "u"
EOF
	ADMIN[$name]=$admin
	launch_hearth "$name" "$port" "$dir" "$binary"
}

# ports: the origin, one per row (1-5), and the admin listeners of hearth and hearthb (6, 7).
read -r -a ports < <(free_ports 8)
start_posts_origin "${ports[0]}"
ACTIVE=()
i=1
for proxy in $PROXIES; do
	case $proxy in
	direct) up=0 ;;
	hearth) start_hearth_pool64 hearth "${ports[$i]}" "$HEARTH_BIN" "${ports[6]}" && up=0 || up=$? ;;
	hearthb) start_hearth_pool64 hearthb "${ports[$i]}" "$HEARTH_BASE_BIN" "${ports[7]}" && up=0 || up=$? ;;
	*) start_row "$proxy" "${ports[$i]}" && up=0 || up=$? ;;
	esac
	if ((up == 0)); then
		ACTIVE+=("$proxy")
	else
		explain_failure "$proxy"
	fi
	i=$((i + 1))
done
((${#ACTIVE[@]})) || die "no proxy came up"
say "origin on :$UP_PORT (idle timeout ${ORIGIN_IDLE}s); rows: ${ACTIVE[*]}"

# ---------------------------------------------------------------------------------------------
# Measuring.
RESULTS=$TMP/results.tsv
: >"$RESULTS"
# Per hearth run: mix, row, round, then counter=delta pairs from its /metrics.
COUNTERS=$TMP/counters.tsv
: >"$COUNTERS"
declare -A DEAD=()

# hearth's upstream counters from admin port $1, one `key value` a line, summed over nodes: the
# connects, reuses, replays and retries, and the closes by reason.
hearth_counters() {
	hearth_metrics "$1" 2>/dev/null | awk '
	/^hearth_upstream_(connects|reuses|replays|retries)_total[{ ]/ {
		name = $1; sub(/\{.*/, "", name); sub(/^hearth_upstream_/, "", name); sub(/_total$/, "", name)
		sum[name] += $NF
	}
	/^hearth_upstream_closes_total\{/ {
		if (match($1, /reason="[^"]*"/)) sum["closes." substr($1, RSTART + 8, RLENGTH - 9)] += $NF
	}
	END { for (k in sum) print k, sum[k] }' | sort
}

# The generator's arguments for mix $1 in round $2, and its deadline: every gap at its longest
# plus ten seconds a burst, which only a proxy that stops answering needs.
burst_args() {
	local mix=$1 round=$2 bursts=$BURSTS gap=$GAP
	if [[ $mix == mixed* ]]; then
		bursts=$MIXED_BURSTS
		gap=$MIXED_GAP
	fi
	local deadline
	deadline=$(awk -v n="$bursts" -v g="${gap#*-}" -v s="$SPREAD" 'BEGIN { printf "%d", 20 + n * (g + s + 10) }')
	BURST_ARGS=(--clients "$CLIENTS" --requests "$REQUESTS" --bursts "$bursts" --gap "$gap"
		--mix "$mix" --body "$BODY" --spread "$SPREAD" --seed $((SEED + round)) --deadline "$deadline" --verbose)
}

# One run of mix $2 against row $1 in round $3: appends a line to RESULTS (and, for a hearth row,
# one to COUNTERS).
run_once() {
	local name=$1 mix=$2 round=$3 pid=${PID[$1]:-} tag="$1.$2.$3"
	local log=$TMP/burst.$tag status=0
	burst_args "$mix" "$round"
	sleep "$SETTLE"
	local accepts0 accepts1 before=
	[[ -z ${ADMIN[$name]:-} ]] || before=$(hearth_counters "${ADMIN[$name]}")
	accepts0=$(stub_accepts || echo)
	# In the background and waited for, as lib.sh's load() does, so a signal stops the run now.
	"$BURST_BIN" --addr "127.0.0.1:${PORT[$name]}" "${BURST_ARGS[@]}" >"$log.out" 2>"$log.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || status=$?
	LOAD_PID=
	accepts1=$(stub_accepts || echo)
	((status == 0)) || say "$name: the generator exited with $status: $(tail -2 "$log.err")"

	local summary conns=n/a
	summary=$(grep '^requests=' "$log.out" | tail -1 || true)
	if [[ $accepts0 =~ ^[0-9]+$ && $accepts1 =~ ^[0-9]+$ ]]; then
		# accepts1 counts its own stub_status connection; take it off.
		conns=$((accepts1 - accepts0 - 1))
	fi
	# requests ok non2xx errors reconnects complete secs, or n/a when the generator said nothing.
	local fields
	fields=$(awk '{
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		print v["requests"], v["ok"], v["non2xx"], v["errors"], v["reconnects"], v["complete"], v["secs"]
	}' <<<"${summary:-requests=n/a ok=n/a non2xx=n/a errors=n/a reconnects=n/a complete=0 secs=n/a}")
	local requests ok non2xx errors reconnects complete secs
	read -r requests ok non2xx errors reconnects complete secs <<<"$fields"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mix" "$name" "$round" "$conns" \
		"$requests" "$ok" "$non2xx" "$errors" "$reconnects" "$complete" "$secs" >>"$RESULTS"
	say "  round $round $(printf '%-8s %-11s' "$name" "$mix") upstream conns $conns for $requests requests, non-2xx $non2xx, errors $errors, ${secs}s"

	if [[ -n $before ]]; then
		local after
		after=$(hearth_counters "${ADMIN[$name]}")
		# Deltas of every counter that moved during the run.
		printf '%s\t%s\t%s\t%s\n' "$mix" "$name" "$round" "$(join -a 2 -e 0 -o 0,1.2,2.2 \
			<(printf '%s\n' "$before") <(printf '%s\n' "$after") |
			awk '$3 - $2 != 0 { printf "%s%s=%d", sep, $1, $3 - $2; sep = " " }')" >>"$COUNTERS"
	fi
	if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
		say "$name: DIED during the $mix run; dropping it from later runs"
		DEAD[$name]=1
	fi
}

for ((round = 1; round <= ROUNDS; round++)); do
	m=0
	for mix in $MIXES; do
		# Rotate the order by round and mix, so no row always runs first or after the same one.
		count=${#ACTIVE[@]}
		for ((i = 0; i < count; i++)); do
			name=${ACTIVE[$(((i + round - 1 + m) % count))]}
			[[ -z ${DEAD[$name]:-} ]] || continue
			run_once "$name" "$mix" "$round"
		done
		m=$((m + 1))
	done
done

# ---------------------------------------------------------------------------------------------
# Report.
TABLES=$TMP/tables.md
python3 "$ROOT/bench/posts_report.py" "$RESULTS" "$COUNTERS" "$MIXES" >"$TABLES"
cat "$TABLES"

short_shape="$CLIENTS clients, $REQUESTS requests each per burst, $BURSTS bursts, ${GAP} s idle between bursts"
long_shape="$CLIENTS clients, $REQUESTS requests each per burst, $MIXED_BURSTS bursts, idle gaps drawn from ${MIXED_GAP} s"
mkdir -p "$(dirname "$OUT")"
{
	echo "# Upstream connections for bursts of GETs and of POSTs"
	echo
	echo "Written by bench/posts.sh; rerun it rather than editing this file."
	echo
	echo "- command: \`$COMMAND\`"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "- machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc), kernel $(uname -r)"
	echo "- load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- hearth commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes to src or Cargo files)'); binary $HEARTH_BIN"
	echo "- tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | awk 'NR == 1 { print "HAProxy " $3 }' || true)"
	echo "- rows that ran: ${ACTIVE[*]}"
	echo
	echo "The origin is nginx answering every request with \`return 200\` (sent as soon as the head"
	echo "is in; a body is discarded afterwards) and closing idle keep-alive connections after"
	echo "${ORIGIN_IDLE} s. In front of it, one worker each: hearth with \`keepalive_pool = { size = 64 }\`"
	echo "and otherwise its defaults; nginx with \`keepalive 64\`, \`proxy_http_version 1.1\` and"
	echo "\`proxy_set_header Connection \"\"\`; HAProxy with \`http-reuse safe\`. The load is"
	echo "examples/burst.rs: each client holds one keep-alive connection across bursts and sends its"
	if [[ $SPREAD == 0 ]]; then
		echo "requests one after another within a burst, all clients starting each burst at once."
	else
		echo "requests one after another within a burst, their starts spread over ${SPREAD} s."
	fi
	echo "Short mixes: $short_shape."
	echo "Long mixes: $long_shape (the same gaps for every row of a round). POST bodies are $BODY bytes,"
	echo "Content-Length framed: \`post\` writes head and body together, \`post-split\` writes the"
	echo "body 2 ms after the head, as Python's http.client and Java's HttpURLConnection do; \`mixed\`"
	echo "alternates GETs and \`post\` POSTs. Upstream connections are the origin's stub_status"
	echo "accepts over the run (less the one the count itself costs); every run starts after"
	echo "${SETTLE} s of quiet, when the origin has closed whatever the previous run left idle, so"
	echo "each starts from an empty pool. Figures are medians over the rounds, with each round's"
	echo "value after them; non-2xx counts answers, transport errors count requests that got no"
	echo "whole answer (reset, EOF, timeout)."
	echo
	cat "$TABLES"
} >"$OUT"
say "wrote $OUT"
