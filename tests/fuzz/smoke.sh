#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target on the STABLE toolchain (no
# sanitizer, so no -Z flag), then for each target
#   1. replays the saved reproducers in regressions/<target>/ (must not crash),
#   2. runs the seeds plus random mutations for a bounded time.
# Exits non-zero when any target crashes (panic, failed invariant, timeout,
# out-of-memory) and prints which target found what, with the saved input.
#
# Knobs (environment):
#   SMOKE_TARGETS   targets to run (default: all fourteen)
#   SMOKE_SECONDS   random-phase time per target (default 15)
#   SMOKE_RUNS      random-phase iteration cap per target (default 1000000)
#   CARGO_TARGET_DIR  build dir (default <repo>/target/fuzz, apart from the main build)
#
# Installs cargo-fuzz when missing (`cargo install cargo-fuzz --locked`).
# New corpus entries go to tests/fuzz/corpus/<target>/, crashing inputs to
# tests/fuzz/artifacts/<target>/ (both git-ignored).

set -u -o pipefail
# The exploration-only escape hatch (README.md) must never weaken the smoke.
unset SB_FUZZ_TOLERATE

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}"
targets=${SMOKE_TARGETS:-"sip_message sip_stream digest uri config endpoint sdp rtcp rtp_event wav media directory lookup_answer cti_request"}
seconds=${SMOKE_SECONDS:-15}
runs=${SMOKE_RUNS:-1000000}

start=$(date +%s)
cd "$root" || exit 2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked || exit 2
fi

echo "fuzz-smoke: building targets (cargo fuzz build --fuzz-dir tests/fuzz --sanitizer none -O -a)"
if ! cargo fuzz build --fuzz-dir tests/fuzz --sanitizer none -O -a; then
    echo "fuzz-smoke: FAILED to build the fuzz targets" >&2
    exit 1
fi
host=$(rustc -vV | sed -n 's/^host: //p')
bin="$CARGO_TARGET_DIR/$host/release"

failed=()
summary=()

# Prints the panic (or libFuzzer's reason) and the saved input from a log.
explain() {
    local log=$1
    grep -m1 -A4 "panicked at" "$log" | cut -c1-300
    grep -m1 -E "ERROR: libFuzzer|SUMMARY: libFuzzer" "$log"
    grep -m1 "Test unit written to" "$log"
}

for t in $targets; do
    if [ ! -x "$bin/$t" ]; then
        echo "fuzz-smoke: no such target: $t" >&2
        failed+=("$t")
        continue
    fi
    mkdir -p "tests/fuzz/corpus/$t" "tests/fuzz/artifacts/$t"
    log="tests/fuzz/artifacts/$t/smoke.log"
    dict=()
    case $t in
        sip_message | sip_stream | endpoint) dict=(-dict=tests/fuzz/sip.dict) ;;
    esac

    # 1. Saved reproducers of past findings.
    regressions=()
    if [ -d "tests/fuzz/regressions/$t" ]; then
        while IFS= read -r -d '' f; do regressions+=("$f"); done \
            < <(find "tests/fuzz/regressions/$t" -type f ! -name '*.md' -print0 | sort -z)
    fi
    if [ ${#regressions[@]} -gt 0 ]; then
        if ! "$bin/$t" "${regressions[@]}" >"$log" 2>&1; then
            echo "fuzz-smoke: $t: a saved reproducer in tests/fuzz/regressions/$t/ still fails:"
            grep -m1 "^Running: " "$log" | tail -1
            explain "$log"
            failed+=("$t")
            summary+=("$t: REGRESSION")
            continue
        fi
    fi

    # 2. Seeds, then random mutations. The first corpus dir receives new
    #    inputs; the seeds dir is only read.
    t0=$(date +%s)
    if "$bin/$t" "${dict[@]}" -runs="$runs" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="tests/fuzz/artifacts/$t/" \
        "tests/fuzz/corpus/$t" "tests/fuzz/seeds/$t" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | grep -o "cov: [0-9]*")
        summary+=("$t: ok, ${execs:-?} execs in $(($(date +%s) - t0))s, ${cov:-cov: ?}")
    else
        echo "fuzz-smoke: $t found a crash:"
        explain "$log"
        echo "  full log: $log"
        failed+=("$t")
        summary+=("$t: CRASH (see $log)")
    fi
done

echo "fuzz-smoke: summary ($(($(date +%s) - start))s)"
for s in "${summary[@]}"; do echo "  $s"; done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: all targets passed"
