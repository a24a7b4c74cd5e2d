#!/bin/sh
# Bounded run of every cargo-fuzz target (fuzz/): builds them with `cargo +nightly fuzz
# build`, runs each for SECONDS_PER_TARGET (default 60) with libFuzzer's -max_total_time,
# and ends with one line per target: runs executed, crashes. Exits nonzero when a target
# crashes (the input is kept in fuzz/artifacts/<target>/), or when the nightly toolchain
# or cargo-fuzz is missing: a fuzz run that cannot run fails, it never passes silently.
#
# Corpora: fuzz/corpus/<target>/ (not committed) grows across runs; it is seeded from
# fuzz/regressions/<target>/ (read as a second corpus) and, for object and rewrite, from
# the bundled objects in bpf/out/. Reproduce a crash under stable with the regression
# test: copy the input to fuzz/regressions/<target>/ and run
#   cargo test --release -p kops-fuzz-bodies
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"decode object rewrite jit_vs_interp"}

fail() {
    echo "fuzz.sh: FAILED: $*" >&2
    exit 1
}
rustup toolchain list 2>/dev/null | grep -q '^nightly' ||
    fail "no nightly Rust toolchain (cargo-fuzz needs one): run 'rustup toolchain install nightly'"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    fail "cargo-fuzz is not installed: run scripts/setup.sh (or 'cargo install cargo-fuzz --locked')"

start=$(date +%s)
cargo +nightly fuzz build || fail "cargo +nightly fuzz build failed"
echo "fuzz.sh: build took $(($(date +%s) - start)) s"

# Seeds.
for t in $targets; do mkdir -p "fuzz/corpus/$t"; done
for o in bpf/out/*.bpf.o; do
    n=$(basename "$o" .bpf.o)
    [ -d fuzz/corpus/object ] && cp "$o" "fuzz/corpus/object/seed-$n.bpf.o"
    if [ -d fuzz/corpus/rewrite ]; then
        # Control prefix (see kops_fuzz_bodies::rewrite): policy auto, then policy all with
        # three inserted hostile sites.
        { head -c 32 /dev/zero; cat "$o"; } >"fuzz/corpus/rewrite/seed-auto-$n.bpf.o"
        { printf '\017\000'; head -c 30 /dev/urandom; cat "$o"; } >"fuzz/corpus/rewrite/seed-all-$n.bpf.o"
    fi
done

total_crashes=0
summary=""
for t in $targets; do
    mkdir -p "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    log="fuzz/artifacts/$t.log"
    set +e
    # -timeout: an input that runs 20 s is a hang (a bug, reported like a crash).
    # -rss_limit_mb: memory blow-ups on hostile input are bugs too.
    # -seed: a fixed seed (KOPS_FUZZ_SEED) keeps CI's run repeatable; vary it to explore.
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
        -seed="${KOPS_FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    after=$(ls "fuzz/artifacts/$t" | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # libFuzzer failed without writing an artifact: count it, see the log
    fi
    if [ "$crashes" -gt 0 ]; then
        echo "fuzz.sh: $t crashed (exit $rc); log: $log; new inputs in fuzz/artifacts/$t/" >&2
        grep -m 5 -E "panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written" "$log" >&2 || true
    fi
    total_crashes=$((total_crashes + crashes))
    summary="${summary}fuzz $t: ${runs:-0} runs, $crashes crashes (${secs} s)
"
done
printf '%s' "$summary"
echo "fuzz.sh: total $(($(date +%s) - start)) s"
[ "$total_crashes" -eq 0 ] || fail "$total_crashes crash(es)"
