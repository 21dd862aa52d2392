#!/usr/bin/env bash
# Runs every benchmark once and writes BENCHMARKS.md from what they wrote: criterion's
# estimates.json files, valgrind's instruction counts and the load example's JSON. No figure
# in BENCHMARKS.md is typed by hand.
#
#   benches/report.sh                      # full run (about 10 minutes)
#   MEASURE=1 WARMUP=0.5 ROUNDS=3 LOAD_SECONDS=1 LOAD_ROUNDS=3 INSTRUCTIONS=0 benches/report.sh  # quick
#
# Needs cargo, python3, and (optionally, for the instruction counts) valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

MEASURE=${MEASURE:-5}           # criterion measurement time per benchmark, seconds
WARMUP=${WARMUP:-2}             # criterion warm-up time per benchmark, seconds
LOAD_SECONDS=${LOAD_SECONDS:-2} # length of one end-to-end round, seconds
LOAD_ROUNDS=${LOAD_ROUNDS:-21}  # end-to-end rounds per side (odd: the median is one round)
INSTRUCTIONS=${INSTRUCTIONS:-1} # 0: skip the valgrind instruction counts
OUT=${OUT:-BENCHMARKS.md}

REPORT_ONLY=${REPORT_ONLY:-0}  # 1: rewrite $OUT from the last run's files, run nothing

work=$PWD/target/bench-report
export CRITERION_HOME=$work/criterion

criterion_args=(--warm-up-time "$WARMUP" --measurement-time "$MEASURE" --noplot)
overhead_cmd="cargo bench --bench overhead -- ${criterion_args[*]}"
drain_cmd="cargo bench --bench drain -- ${criterion_args[*]}"
ROUNDS=${ROUNDS:-21}            # interleaved rounds, every variant on 1 and 2 threads each
interleaved_cmd="cargo bench --bench interleaved -- --rounds $ROUNDS"
load_cmd="cargo run --release --example load -- --seconds $LOAD_SECONDS --rounds $LOAD_ROUNDS"
memory_cmd="cargo bench --bench memory"
instructions_cmd="valgrind --tool=cachegrind --cache-sim=no <instructions bench> VARIANT FRAMES N"

if [ "$REPORT_ONLY" = 0 ]; then
    # Start empty, so that every figure in the report comes from this run.
    rm -rf "$work"
    mkdir -p "$work"
    cat /proc/loadavg >"$work/loadavg-start"

    echo "== $overhead_cmd" >&2
    cargo bench --bench overhead -- "${criterion_args[@]}"
    echo "== $interleaved_cmd" >&2
    cargo bench --bench interleaved -- --rounds "$ROUNDS" --json "$work/interleaved.json"
    echo "== $drain_cmd" >&2
    cargo bench --bench drain -- "${criterion_args[@]}"
    echo "== $load_cmd" >&2
    cargo run --release --example load -- --seconds "$LOAD_SECONDS" --rounds "$LOAD_ROUNDS" \
        --json "$work/load.json"

    echo "== $memory_cmd" >&2
    cargo bench --bench memory -- --json "$work/memory.json"

    # Instructions per request: total instructions at two request counts, differenced, so
    # start-up and set-up cancel out.
    if [ "$INSTRUCTIONS" != 0 ] && command -v valgrind >/dev/null; then
        cargo bench --bench instructions --no-run
        harness=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
        count() {
            valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 |
                sed -n 's/.*I *refs: *//p' | tr -d ,
        }
        variants=$(sed -n '/^pub const NAMES/,/];/p' benches/common/mod.rs | grep -o '"[a-z_0-9]*"' | tr -d '"')
        for frames in 1 16; do
            for variant in $variants; do
                low=$(count "$harness" "$variant" "$frames" 10000)
                high=$(count "$harness" "$variant" "$frames" 20000)
                echo "$variant $frames $(((high - low) / 10000))" >>"$work/instructions.txt"
                echo "instructions: $variant, $frames frames: $(((high - low) / 10000))" >&2
            done
        done
    fi
    cat /proc/loadavg >"$work/loadavg-end"
fi

export WORK=$work OUT OVERHEAD_CMD=$overhead_cmd INTERLEAVED_CMD=$interleaved_cmd DRAIN_CMD=$drain_cmd LOAD_CMD=$load_cmd MEMORY_CMD=$memory_cmd \
    INSTRUCTIONS_CMD=$instructions_cmd
export CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
export CPU_COUNT=$(nproc)
export RUSTC=$(rustc --version)
export KERNEL=$(uname -sr)
export REPORT_ARGS="MEASURE=$MEASURE WARMUP=$WARMUP ROUNDS=$ROUNDS LOAD_SECONDS=$LOAD_SECONDS LOAD_ROUNDS=$LOAD_ROUNDS"
python3 benches/report.py
echo "wrote $OUT" >&2
