#!/usr/bin/env bash
# Zero-downtime proof: a rolling restart of two demo servers behind HAProxy, under steady load.
#
# Three runs, each with fresh processes:
#   steady  wrk load through HAProxy while instance A, then B, is sent SIGTERM, waited for,
#           restarted and waited for until HAProxy routes to it again. Passes only if wrk
#           saw no non-2xx response, no socket error and no timeout, and every demo exited 0.
#   sse     the same, plus SSE clients (curl -N on /events through HAProxy, reconnecting
#           when a stream ends) that must keep receiving ticks across both restarts.
#   wrong   the same restart with a lame-duck delay of 0, which leaves HAProxy routing to an
#           instance that already refuses: the run must show errors, or the harness is not
#           sensitive enough to prove anything.
#
# Usage: tests/e2e/rolling_restart.sh            (as root if haproxy or wrk must be installed)
# Environment (all optional):
#   RUNS="steady sse wrong"   which runs, in order
#   DEMO_BIN=path             use this demo binary instead of `cargo build --release --example demo`
#   LAME_DUCK_MS=1000 DRAIN_TIMEOUT_MS=10000   the demo's flags for the steady and sse runs
#   WRK_THREADS=2 WRK_CONNECTIONS=32 SETTLE_SECONDS=2 SSE_CLIENTS=4 SSE_MAX_GAP_MS=2000
#   KEEP_WORK=1               keep the work directory (logs, configs) even on success
#
# Everything listens on 127.0.0.1 only. Every wait is bounded. Prints one summary line
# starting with "rolling-restart:" and exits non-zero on any failure.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-"steady sse wrong"}
LAME_DUCK_MS=${LAME_DUCK_MS:-1000}
DRAIN_TIMEOUT_MS=${DRAIN_TIMEOUT_MS:-10000}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
# wrk's own duration is only a backstop: it is stopped with SIGINT once the restart is over.
WRK_MAX_SECONDS=${WRK_MAX_SECONDS:-300}
SETTLE_SECONDS=${SETTLE_SECONDS:-2}
SSE_CLIENTS=${SSE_CLIENTS:-4}
SSE_MAX_GAP_MS=${SSE_MAX_GAP_MS:-2000}
DEMO_BIN=${DEMO_BIN:-}
KEEP_WORK=${KEEP_WORK:-}

# Bounds on waits, in tenths of a second.
READY_WAIT=$((30 * 10))
HAPROXY_WAIT=$((10 * 10))
# A demo's shutdown: lame duck + drain timeout + its hooks and flush, with room to spare.
EXIT_WAIT=$(((LAME_DUCK_MS + DRAIN_TIMEOUT_MS) / 100 + 20 * 10))

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rolling-restart.XXXXXX")
PIDS=()          # every process this script started, for the cleanup trap
FAILED=""
SUMMARY=()

log() { printf 'e2e: %s\n' "$*" >&2; }

fail() {
    log "FAIL: $*"
    FAILED="${FAILED:+$FAILED; }$*"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: give each a moment, then make sure.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
    done
    if [[ -n "$FAILED" || -n "$KEEP_WORK" ]]; then
        log "logs and configs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# === tools and the demo ===

need_tools() {
    local missing=()
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        log "missing ${missing[*]}: run as root to install them, or install them first"
        echo "rolling-restart: FAIL: missing ${missing[*]}"
        exit 1
    fi
    log "installing ${missing[*]} with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >"$WORK/apt.log" 2>&1; then
        log "apt-get failed; see $WORK/apt.log"
        FAILED="apt-get"
        echo "rolling-restart: FAIL: could not install ${missing[*]}"
        exit 1
    fi
}

build_demo() {
    if [[ -n "$DEMO_BIN" ]]; then
        [[ -x "$DEMO_BIN" ]] || { echo "rolling-restart: FAIL: DEMO_BIN=$DEMO_BIN is not executable"; exit 1; }
        return
    fi
    log "building the demo: cargo build --release --example demo"
    if ! (cd "$REPO" && cargo build --release --example demo) >"$WORK/build.log" 2>&1; then
        tail -n 30 "$WORK/build.log" >&2
        FAILED="build"
        echo "rolling-restart: FAIL: the demo did not build"
        exit 1
    fi
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    [[ "$target" = /* ]] || target="$REPO/$target"
    DEMO_BIN="$target/release/examples/demo"
}

# === ports ===

port_free() {
    # A connection attempt to a free loopback port is refused at once.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_ports() {
    local attempt base
    for ((attempt = 0; attempt < 50; attempt++)); do
        # Below the usual ephemeral range, so no outgoing connection can hold one of them.
        base=$((20000 + (RANDOM % 2000) * 5))
        if port_free "$base" && port_free $((base + 1)) && port_free $((base + 2)) &&
            port_free $((base + 3)); then
            FRONT_PORT=$base
            STATS_PORT=$((base + 1))
            A_PORT=$((base + 2))
            B_PORT=$((base + 3))
            return 0
        fi
    done
    fail "no free loopback ports found"
    return 1
}

# === processes ===

declare -A DEMO_PID DEMO_PORT DEMO_GEN
DEMO_EXITS=()    # "name.generation=status" for every demo that exited

start_demo() { # name port lame_duck_ms
    local name=$1 port=$2 lame=$3
    DEMO_GEN[$name]=$((${DEMO_GEN[$name]:-0} + 1))
    local stem="$WORK/$RUN.$name.${DEMO_GEN[$name]}"
    "$DEMO_BIN" --addr "127.0.0.1:$port" --lame-duck-ms "$lame" \
        --drain-timeout-ms "$DRAIN_TIMEOUT_MS" >"$stem.out" 2>"$stem.err" &
    DEMO_PID[$name]=$!
    DEMO_PORT[$name]=$port
    PIDS+=("$!")
}

http_code() { # url
    curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null
}

wait_ready() { # name: until the instance itself answers /readyz with 200
    local name=$1 i
    for ((i = 0; i < READY_WAIT; i++)); do
        [[ $(http_code "http://127.0.0.1:${DEMO_PORT[$name]}/readyz") == 200 ]] && return 0
        if ! kill -0 "${DEMO_PID[$name]}" 2>/dev/null; then
            fail "$RUN: demo $name exited before it was ready (see $WORK/$RUN.$name.${DEMO_GEN[$name]}.err)"
            return 1
        fi
        sleep 0.1
    done
    fail "$RUN: demo $name not ready after $((READY_WAIT / 10))s"
    return 1
}

haproxy_state() { # server name: UP, DOWN, ... as HAProxy's stats page says
    curl -s --max-time 1 "http://127.0.0.1:$STATS_PORT/stats;csv" 2>/dev/null |
        awk -F, -v server="$1" '$1 == "demos" && $2 == server { print $18 }'
}

wait_haproxy() { # server state
    local i
    for ((i = 0; i < HAPROXY_WAIT; i++)); do
        [[ $(haproxy_state "$1") == "$2"* ]] && return 0
        sleep 0.1
    done
    fail "$RUN: HAProxy did not see server $1 $2 within $((HAPROXY_WAIT / 10))s (it says: $(haproxy_state "$1"))"
    return 1
}

stop_demo() { # name: SIGTERM, wait for the exit, record its status
    local name=$1 pid=${DEMO_PID[$1]} i status
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < EXIT_WAIT; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "$RUN: demo $name still running $((EXIT_WAIT / 10))s after SIGTERM"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    status=$?
    DEMO_EXITS+=("$name.${DEMO_GEN[$name]}=$status")
    log "$RUN: demo $name (generation ${DEMO_GEN[$name]}) exited with status $status"
    return 0
}

restart() { # name lame_duck_ms
    local name=$1
    log "$RUN: rolling $name: SIGTERM, wait for exit, start anew, wait for /readyz and HAProxy"
    stop_demo "$name"
    start_demo "$name" "${DEMO_PORT[$name]}" "$2"
    wait_ready "$name" && wait_haproxy "$name" UP
}

start_haproxy() {
    sed -e "s/@FRONT_PORT@/$FRONT_PORT/" -e "s/@STATS_PORT@/$STATS_PORT/" \
        -e "s/@A_PORT@/$A_PORT/" -e "s/@B_PORT@/$B_PORT/" \
        "$HERE/haproxy.cfg.in" >"$WORK/$RUN.haproxy.cfg"
    if ! haproxy -c -q -f "$WORK/$RUN.haproxy.cfg" >"$WORK/$RUN.haproxy.check" 2>&1; then
        fail "$RUN: HAProxy rejected its config: $(head -n 3 "$WORK/$RUN.haproxy.check")"
        return 1
    fi
    haproxy -db -f "$WORK/$RUN.haproxy.cfg" >"$WORK/$RUN.haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=("$!")
}

# === SSE clients ===

sse_client() { # index: reconnects through HAProxy whenever a stream ends, until told to stop
    local out="$WORK/$RUN.sse.$1.log" codes="$WORK/$RUN.sse.$1.exit" i status
    : >"$codes"
    for ((i = 0; i < 500; i++)); do
        [[ -e "$WORK/$RUN.sse.stop" ]] && break
        curl -N -s --max-time 120 "http://127.0.0.1:$FRONT_PORT/events" |
            while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >>"$out"
        status=${PIPESTATUS[0]}
        [[ -e "$WORK/$RUN.sse.stop" ]] && break
        echo "$status" >>"$codes"
    done
}

SSE_PIDS=()

start_sse() {
    local i
    SSE_PIDS=()
    for ((i = 0; i < SSE_CLIENTS; i++)); do
        # Its stderr holds only the shell's notes on the curls stopped at the end.
        sse_client "$i" 2>>"$WORK/$RUN.sse.$i.err" &
        SSE_PIDS+=("$!")
        PIDS+=("$!")
    done
}

stop_sse() {
    local pid child i
    touch "$WORK/$RUN.sse.stop"
    for pid in "${SSE_PIDS[@]}"; do
        for ((i = 0; i < 30; i++)); do
            # The client's own children (its curl and the line reader), by parent id.
            for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
                kill -TERM "$child" 2>/dev/null
            done
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
}

# Checks every SSE client's log: ticks kept coming after the restarts, no gap longer than
# SSE_MAX_GAP_MS, every stream that ended did so cleanly, and each client was handed over
# by at least one `event: shutdown`.
check_sse() { # restarts_done_at
    local i out ticks after gap shutdowns bad reconnects
    SSE_TICKS=0
    SSE_RECONNECTS=0
    for ((i = 0; i < SSE_CLIENTS; i++)); do
        out="$WORK/$RUN.sse.$i.log"
        [[ -s "$out" ]] || { fail "$RUN: SSE client $i received nothing"; continue; }
        read -r ticks after gap shutdowns < <(awk -v done_at="$1" '
            / data: tick / {
                ticks++
                if ($1 > done_at) after++
                if (last != "" && ($1 - last) * 1000 > gap) gap = ($1 - last) * 1000
                last = $1
            }
            / event: shutdown/ { shutdowns++ }
            END { printf "%d %d %d %d\n", ticks, after, gap, shutdowns }' "$out")
        bad=$(grep -cv '^0$' "$WORK/$RUN.sse.$i.exit")
        reconnects=$(wc -l <"$WORK/$RUN.sse.$i.exit")
        log "$RUN: SSE client $i: $ticks ticks ($after after the restarts), longest gap ${gap}ms, $shutdowns shutdown events, $reconnects reconnects ($bad unclean)"
        ((after > 0)) || fail "$RUN: SSE client $i received no tick after the restarts"
        ((gap <= SSE_MAX_GAP_MS)) || fail "$RUN: SSE client $i went ${gap}ms without a tick (limit ${SSE_MAX_GAP_MS}ms)"
        ((shutdowns > 0)) || fail "$RUN: SSE client $i never saw 'event: shutdown': its stream was not handed over"
        ((bad == 0)) || fail "$RUN: SSE client $i had $bad streams end uncleanly (curl exit codes: $(sort "$WORK/$RUN.sse.$i.exit" | uniq -c | tr -s ' \n' ' '))"
        SSE_TICKS=$((SSE_TICKS + ticks))
        SSE_RECONNECTS=$((SSE_RECONNECTS + reconnects))
    done
}

# === one run ===

run_case() { # name lame_duck_ms with_sse expect_errors
    RUN=$1
    local lame=$2 with_sse=$3 expect_errors=$4 before=${FAILED:-} restarts=0 done_at wrk_pid i
    DEMO_EXITS=()
    DEMO_GEN=()
    log "=== run '$RUN': lame duck ${lame}ms, drain timeout ${DRAIN_TIMEOUT_MS}ms, SSE clients: $with_sse"
    pick_ports || return
    start_demo a "$A_PORT" "$lame"
    start_demo b "$B_PORT" "$lame"
    wait_ready a && wait_ready b || return
    start_haproxy || return
    wait_haproxy a UP && wait_haproxy b UP || return

    [[ $with_sse == yes ]] && start_sse
    wrk -t "$WRK_THREADS" -c "$WRK_CONNECTIONS" -d "${WRK_MAX_SECONDS}s" --timeout 2s \
        -s "$HERE/wrk_status.lua" "http://127.0.0.1:$FRONT_PORT/" >"$WORK/$RUN.wrk.out" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    sleep "$SETTLE_SECONDS"

    restart a "$lame" && restarts=$((restarts + 1)) &&
        restart b "$lame" && restarts=$((restarts + 1))
    done_at=$EPOCHREALTIME
    sleep "$SETTLE_SECONDS"

    if ! kill -0 "$wrk_pid" 2>/dev/null; then
        fail "$RUN: wrk ended before the restarts were over (raise WRK_MAX_SECONDS)"
    fi
    kill -INT "$wrk_pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$wrk_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$wrk_pid" 2>/dev/null && { fail "$RUN: wrk did not stop on SIGINT"; kill -KILL "$wrk_pid"; }
    wait "$wrk_pid" 2>/dev/null

    if [[ $with_sse == yes ]]; then
        stop_sse
        check_sse "$done_at"
    fi
    # Requests HAProxy sent to each server name (both generations), to show both served.
    log "$RUN: HAProxy sessions per server: $(curl -s --max-time 1 "http://127.0.0.1:$STATS_PORT/stats;csv" |
        awk -F, '$1 == "demos" && ($2 == "a" || $2 == "b") { printf "%s=%s ", $2, $8 }')"
    kill -TERM "$HAPROXY_PID" 2>/dev/null
    wait "$HAPROXY_PID" 2>/dev/null
    stop_demo a
    stop_demo b

    local line requests=0 non2xx=0 connect=0 read=0 write=0 timeout=0 errors
    line=$(grep '^wrk-summary ' "$WORK/$RUN.wrk.out")
    if [[ -z "$line" ]]; then
        fail "$RUN: no summary from wrk (see $WORK/$RUN.wrk.out)"
        return
    fi
    local field
    for field in ${line#wrk-summary }; do
        case ${field%%=*} in
        requests) requests=${field#*=} ;;
        non2xx) non2xx=${field#*=} ;;
        connect) connect=${field#*=} ;;
        read) read=${field#*=} ;;
        write) write=${field#*=} ;;
        timeout) timeout=${field#*=} ;;
        esac
    done
    errors=$((non2xx + connect + read + write + timeout))
    log "$RUN: wrk: $requests requests, $non2xx non-2xx, socket errors connect $connect read $read write $write timeout $timeout"
    sed -n '/Latency/,/Transfer/p' "$WORK/$RUN.wrk.out" >&2

    local summary="$RUN: requests=$requests errors=$errors (non2xx=$non2xx connect=$connect read=$read write=$write timeout=$timeout) restarts=$restarts"
    [[ $with_sse == yes ]] && summary+=" sse_clients=$SSE_CLIENTS sse_ticks=$SSE_TICKS sse_reconnects=$SSE_RECONNECTS"
    ((restarts == 2)) || fail "$RUN: only $restarts of 2 restarts completed"
    if [[ $expect_errors == yes ]]; then
        if ((errors == 0)); then
            fail "$RUN: a lame-duck delay of 0 produced no error: the harness cannot tell a bad setup from a good one"
        else
            log "$RUN: $errors errors, as a setup without a lame-duck delay must produce"
        fi
        summary+=" (errors expected)"
    else
        ((errors == 0)) || fail "$RUN: clients saw $errors errors during the rolling restart"
        local exit
        for exit in "${DEMO_EXITS[@]}"; do
            [[ ${exit#*=} == 0 ]] || fail "$RUN: demo ${exit%=*} exited with status ${exit#*=}"
        done
    fi
    ((requests > 0)) || fail "$RUN: wrk sent no request"
    [[ "${FAILED:-}" == "$before" ]] && summary+=" ok" || summary+=" FAILED"
    SUMMARY+=("$summary")
}

# === main ===

need_tools
build_demo
log "demo: $DEMO_BIN; work directory: $WORK"

for run in $RUNS; do
    case $run in
    steady) run_case steady "$LAME_DUCK_MS" no no ;;
    sse) run_case sse "$LAME_DUCK_MS" yes no ;;
    wrong) run_case wrong 0 no yes ;;
    *) fail "unknown run '$run' (known: steady sse wrong)" ;;
    esac
done

RESULTS=""
((${#SUMMARY[@]} > 0)) && RESULTS=" | $(printf '%s | ' "${SUMMARY[@]}" | sed 's/ | $//')"
if [[ -z "$FAILED" ]]; then
    echo "rolling-restart: PASS$RESULTS"
    exit 0
fi
echo "rolling-restart: FAIL: $FAILED$RESULTS"
exit 1
