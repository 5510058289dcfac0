#!/usr/bin/env bash
# bench/levers.sh: what each performance lever bought, measured by building hearth just before and
# just after the commit that brought it and counting both in one run.
#
# For each lever (a commit, and the load shape it was meant for) it builds the commit's parent and
# the commit itself from `git archive` into one scratch tree and one target directory
# (target/levers, kept between runs), so only hearth itself recompiles, then runs
# bench/callgrind.sh on the pair: user-space instructions per request under the same load, which
# repeat to well under 1% where CPU time on this machine moves by 10-20%. Kernel-side effects (fewer system calls, less copying in the kernel) do not show
# here; bench/results.md carries those for the current build. Writes OUT as a table, and leaves
# the per-lever callgrind reports (top functions of each build) beside it in OUT.d/.
#
# Knobs (environment):
#   LEVERS  space-separated COMMIT:SHAPE items (default: the levers listed below)
#   OUT     where to write the table (bench/levers.md)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
OUT=$(absolute "${OUT:-bench/levers.md}")
LEVERS=${LEVERS:-"333a4f8:small 2643ef8:small 145099e:small bba272e:body d1ea93b:small"}

ensure_tools wrk nginx valgrind
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hearth-levers.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT.d"

# build COMMIT: leaves hearth as built at COMMIT in target/levers/bin/COMMIT, where a later run
# finds it again.
BIN=$ROOT/target/levers/bin
build() {
	local commit=$1
	[[ -x $BIN/$commit ]] && return 0
	rm -rf "$TMP/src"
	mkdir -p "$TMP/src"
	# -m: files dated now, not at the commit, so that cargo sees them change and rebuilds.
	git -C "$ROOT" archive "$commit" | tar -x -m -C "$TMP/src"
	say "building $commit"
	(cd "$TMP/src" && CARGO_TARGET_DIR=$ROOT/target/levers cargo build --release --quiet --bin hearth) ||
		die "$commit: build failed"
	mkdir -p "$BIN"
	cp "$ROOT/target/levers/release/hearth" "$BIN/$commit"
}

rows=()
for item in $LEVERS; do
	commit=${item%%:*}
	shape=${item#*:}
	commit=$(git -C "$ROOT" rev-parse --short "$commit^{commit}") || die "no commit $item"
	parent=$(git -C "$ROOT" rev-parse --short "$commit^")
	build "$parent"
	build "$commit"
	report=$OUT.d/$commit.txt
	counts=$(BINS="$BIN/$parent $BIN/$commit" SHAPE=$shape OUT=$report \
		bash "$ROOT/bench/callgrind.sh" 2>&1 | sed -n 's/.*: \([0-9]*\) instructions\/request.*/\1/p' | tr '\n' ' ')
	read -r before after <<<"$counts"
	[[ -n ${after:-} ]] || die "$commit: callgrind gave no counts (see $report)"
	# The dumps are tens of MiB; the report keeps each build's top functions.
	rm -f "$report".*.out
	subject=$(git -C "$ROOT" log -1 --format=%s "$commit" | cut -c1-90)
	rows+=("$(printf '| %s | %s | %s | %s | %+.1f%% | %s |' "$commit" "$shape" "$before" "$after" \
		"$(awk -v a="$before" -v b="$after" 'BEGIN { print (b - a) * 100 / a }')" "${subject//|/\\|}")")
	say "$commit ($shape): $before -> $after instructions per request"
done

{
	echo "# What each lever bought"
	echo
	echo "Written by bench/levers.sh on $(date -u '+%Y-%m-%d %H:%M:%S UTC') at $(git -C "$ROOT" rev-parse --short HEAD); rerun it rather than editing this file."
	echo "Each row builds the commit's parent and the commit and counts hearth's user-space"
	echo "instructions per request under callgrind in the named load shape of bench/run.sh"
	echo "(small: GET /, 50 connections; body: POST 1 KiB, 16 KiB answers). Kernel-side effects"
	echo "(fewer system calls, less copying in the kernel) do not show here; the commit messages"
	echo "give their CPU and syscall figures, and bench/results.md the current build's."
	echo
	echo "| commit | shape | instructions/req before | after | change | lever |"
	echo "|---|---|---:|---:|---:|---|"
	printf '%s\n' "${rows[@]}"
} >"$OUT"
say "wrote $OUT"
