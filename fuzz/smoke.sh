#!/usr/bin/env bash
# Runs every fuzz target for a short while and says how many inputs each one tried.
#
#   fuzz/smoke.sh                    # 30 s per target
#   SECS=300 fuzz/smoke.sh chunked   # one target, longer
#
# Exits non-zero when a target crashes (a panic is a broken invariant in src/http), leaving the
# input under fuzz/artifacts/TARGET/; `cargo fuzz run --fuzz-dir fuzz TARGET FILE` replays it.
# cargo-fuzz wants a nightly compiler for its -Z flags; RUSTC_BOOTSTRAP=1 lets the stable one
# accept them, so no other toolchain is needed. The first build takes several minutes: every
# dependency is compiled with coverage instrumentation and AddressSanitizer (the parsers sit on
# httparse, whose SIMD code is unsafe). FUZZ_SANITIZER=none builds faster and runs about twice
# as fast, at the cost of that check.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
SECS=${SECS:-30}
SANITIZER=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=(request_head chunked response client_codec)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Build first, so that each target's time is spent fuzzing.
for t in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir . -s "$SANITIZER" "$t"
done

mkdir -p target/smoke
failed=()
summary=()
for t in "${targets[@]}"; do
    # New inputs go to corpus/ (not committed); the committed seeds are read alongside.
    mkdir -p "corpus/$t" "artifacts/$t"
    log="target/smoke/$t.log"
    echo "fuzzing $t for ${SECS}s (log: fuzz/$log)"
    status=0
    cargo fuzz run --fuzz-dir . -s "$SANITIZER" "$t" "corpus/$t" "corpus-seed/$t" -- \
        -max_total_time="$SECS" -timeout=10 -dict=http.dict -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    units=$(find "corpus/$t" -type f | wc -l)
    if [[ $status -eq 0 ]]; then
        summary+=("$(printf '%-13s %10s executions  %6s/s  corpus %5s  ok' \
            "$t" "${execs:-?}" "${rate:-?}" "$units")")
    else
        failed+=("$t")
        summary+=("$(printf '%-13s %10s executions  %6s/s  corpus %5s  CRASH (exit %s)' \
            "$t" "${execs:-?}" "${rate:-?}" "$units" "$status")")
        echo "---- $t failed; the end of its log:"
        grep -v -E '^#[0-9]+' "$log" | tail -40
        echo "---- inputs kept:"
        ls -l "artifacts/$t"
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]}"
    exit 1
fi
echo "no crash in ${#targets[@]} targets, ${SECS}s each"
