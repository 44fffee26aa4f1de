#!/usr/bin/env bash
# Call-setup benchmark (issue #3): SIPp uac -> target -> SIPp uas (registered),
# at a fixed call rate, for the appliance and for Kamailio (stateful proxy +
# registrar, bench/calls/kamailio.cfg). Per target: calls attempted / succeeded
# / failed, the target's CPU time (user+sys from /proc) per call, INVITE->200
# setup latency percentiles, SIPp's own CPU; then appliance / kamailio CPU per
# call. --sweep steps the rate up until calls fail or SIPp cannot keep the rate.
# Everything runs on 127.0.0.1. bench/calls/README.md explains the method.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/calls/run.sh [--rate R] [--calls N | --duration S] [--target kamailio|appliance|both]
                          [--sweep [--sweep-rates "R1 R2 ..."]] [--hold MS]
                          [--ports TARGET,UAS,UAC] [--pin TARGET_CPUS:SIPP_CPUS | --no-pin]
                          [--kam-children N] [--quiet-wait S] [--max-other-load CPUS]
                          [--retries N] [--keep] [--appliance-set KEY=VALUE]...

  --rate R          calls per second offered by the SIPp uac (default 200)
  --calls N         calls per run (default: R x duration)
  --duration S      seconds of calls per run when --calls is not given (default 20)
  --target T        kamailio, appliance or both (default both; kamailio runs first)
  --sweep           run each target at every rate of --sweep-rates, in order, until a run
                    has failed calls or SIPp does not keep the offered rate
  --sweep-rates L   default "200 400 800 1200 1600 2000 2400 3200 4000 4800 6400 8000"
  --hold MS         time between ACK and BYE (SIPp -d; default 0)
  --ports T,S,C     UDP ports on 127.0.0.1 of the target, the uas and the uac
                    (default 16060,16070,16080; outside the appliance's default RTP
                    range 20000-29999, which must not contain a SIP listen port)
  --pin T:S         taskset CPU lists for the target and for both SIPp processes
                    (default 1:0); --no-pin lets the scheduler place everything
  --kam-children N  Kamailio UDP worker processes (-n; default 2, one per core)
  --quiet-wait S    before each run, wait up to S s for a second in which the box (builds,
                    other benchmarks) uses less than --max-other-load CPUs (default 60)
  --max-other-load  CPUs other processes may use during a run (default 0.15); a run above
                    it is marked disturbed and repeated (--retries, default 2), keeping
                    the attempt with the least other load
  --keep            keep the work directory (logs, SIPp traces) and print its path
  --appliance-set KEY=VALUE
                    extra config override for the appliance (repeatable), e.g.
                    shell.timer_tick_ms=20

Exit status: 0 when every call of every run succeeded, 1 when any call failed
(or a run completed no call), 2 on a usage or set-up error.
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IP=127.0.0.1                      # the only address anything is sent to
DOMAIN=switchboard.local
CALLER=1001
CALLEE=1002                       # the registered uas; password pw1002 in default.toml

RATE=200
CALLS=""
DURATION=20
TARGET=both
SWEEP=0
SWEEP_RATES="200 400 800 1200 1600 2000 2400 3200 4000 4800 6400 8000"
HOLD_MS=0
PORT_T=16060
PORT_UAS=16070
PORT_UAC=16080
PIN="1:0"
KAM_CHILDREN=2
QUIET_WAIT=60
MAX_OTHER=0.15
RETRIES=2
KEEP=0
APPLIANCE_SET=()

die() { echo "run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?}; shift 2 ;;
        --calls) CALLS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --target) TARGET=${2:?}; shift 2 ;;
        --sweep) SWEEP=1; shift ;;
        --sweep-rates) SWEEP_RATES=${2:?}; shift 2 ;;
        --hold) HOLD_MS=${2:?}; shift 2 ;;
        --ports) IFS=, read -r PORT_T PORT_UAS PORT_UAC <<<"${2:?}"; shift 2 ;;
        --pin) PIN=${2:?}; shift 2 ;;
        --no-pin) PIN=""; shift ;;
        --kam-children) KAM_CHILDREN=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --max-other-load) MAX_OTHER=${2:?}; shift 2 ;;
        --retries) RETRIES=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --appliance-set) APPLIANCE_SET+=(--set "${2:?}"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

isint() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
isint "$RATE" || die "--rate must be a positive integer"
[ -z "$CALLS" ] || isint "$CALLS" || die "--calls must be a positive integer"
isint "$DURATION" || die "--duration must be a positive integer"
isint "$KAM_CHILDREN" || die "--kam-children must be a positive integer"
[[ "$HOLD_MS" =~ ^[0-9]+$ ]] || die "--hold must be a whole number of ms"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || die "--quiet-wait must be a whole number of seconds"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--retries must be a whole number"
[[ "$MAX_OTHER" =~ ^[0-9]*\.?[0-9]+$ ]] || die "--max-other-load must be a number of CPUs"
for p in "$PORT_T" "$PORT_UAS" "$PORT_UAC"; do
    isint "$p" && [ "$p" -lt 65536 ] || die "bad port '$p' in --ports"
done
for r in $SWEEP_RATES; do isint "$r" || die "bad rate '$r' in --sweep-rates"; done
case "$TARGET" in
    both) TARGETS="kamailio appliance" ;;
    kamailio|appliance) TARGETS=$TARGET ;;
    *) die "--target must be kamailio, appliance or both" ;;
esac

# ------------------------------------------------------------------ tools
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (Debian package: $2)"; }
need sipp sip-tester
need python3 python3
need pgrep procps
if [ -n "$PIN" ]; then
    need taskset util-linux
    [[ "$PIN" == *:* ]] || die "--pin takes TARGET_CPUS:SIPP_CPUS, e.g. 1:0"
    TARGET_CPUS=${PIN%%:*}
    SIPP_CPUS=${PIN#*:}
    taskset -c "$TARGET_CPUS" true 2>/dev/null || die "cannot pin to CPUs '$TARGET_CPUS'"
    taskset -c "$SIPP_CPUS" true 2>/dev/null || die "cannot pin to CPUs '$SIPP_CPUS'"
    PIN_T=(taskset -c "$TARGET_CPUS")
    PIN_S=(taskset -c "$SIPP_CPUS")
else
    PIN_T=()
    PIN_S=()
fi
# CPUs a pinned group may use (for the saturation check): count a taskset list.
ncpus() {
    python3 -c 'import os,sys; print(len(os.sched_getaffinity(0)))' 2>/dev/null
}
if [ -n "$PIN" ]; then
    T_NCPUS=$(taskset -c "$TARGET_CPUS" python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
    S_NCPUS=$(taskset -c "$SIPP_CPUS" python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
else
    T_NCPUS=$(ncpus)
    S_NCPUS=$T_NCPUS
fi

BIN=$ROOT/target/release/switchboard
case " $TARGETS " in *" kamailio "*)
    need kamailio kamailio
    [ -f "$HERE/kamailio.cfg" ] || die "missing $HERE/kamailio.cfg" ;;
esac
case " $TARGETS " in *" appliance "*)
    if [ ! -x "$BIN" ]; then
        need cargo "rustup (the Rust toolchain)"
        echo "run.sh: building the appliance (cargo build --release --locked)"
        (cd "$ROOT" && cargo build --release --locked) || die "build failed"
    fi ;;
esac

# ------------------------------------------------------- process tracking
WORK=$(mktemp -d /tmp/benchcalls.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
PIDS=()

kill_pid() { # pid: TERM it (children first), KILL what is left after 5 s
    local pid=$1 kids
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for k in $kids; do kill -TERM "$k" 2>/dev/null || true; done
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill_pid "${PIDS[$i]}"; done
    PIDS=()
    if [ "$KEEP" = 1 ]; then
        echo "run.sh: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { # pid: drop from PIDS once it has been stopped
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

H=$HERE/calls.py

# ------------------------------------------------------------- the targets
start_target() { # target dir -> sets TPID, TSPEC
    local target=$1 d=$2
    case "$target" in
        kamailio)
            mkdir -p "$d/kam"
            "${PIN_T[@]}" kamailio -f "$HERE/kamailio.cfg" -DD -E -n "$KAM_CHILDREN" \
                -m 1024 -M 16 -l "udp:$IP:$PORT_T" -Y "$d/kam" -w "$d/kam" \
                >"$d/target.log" 2>&1 &
            TPID=$!
            TSPEC="tree:$TPID"
            ;;
        appliance)
            mkdir -p "$d/data"
            (cd "$ROOT" && exec "${PIN_T[@]}" "$BIN" run --config firmware-config/default.toml \
                --set "sip.listen=[\"udp:$IP:$PORT_T\"]" \
                --set 'registrar.digest_algorithms=["MD5","SHA-256"]' \
                --set "node.data_dir=\"$d/data\"" \
                --set 'node.log="warn"' "${APPLIANCE_SET[@]}") >"$d/target.log" 2>&1 &
            TPID=$!
            TSPEC="threads:$TPID"
            ;;
    esac
    PIDS+=("$TPID")
    if ! python3 "$H" probe "$PORT_T" 10; then
        tail -n 20 "$d/target.log" >&2 || true
        die "$target did not answer OPTIONS on $IP:$PORT_T within 10 s (log above)"
    fi
    kill -0 "$TPID" 2>/dev/null || die "$target exited at start (see $d/target.log)"
}

# --------------------------------------------------------------- one run
# run_attempt target rate calls dir -> $dir/result.json and $dir/result.txt
# (the printed block); returns calls.py report's status (0 ok, 1 failed
# calls, 3 rate not kept).
run_attempt() {
    local target=$1 rate=$2 calls=$3 d=$4
    mkdir -p "$d"
    python3 "$H" ports-free "$PORT_T" "$PORT_UAS" "$PORT_UAC" || exit 2
    local load
    if ! load=$(python3 "$H" quiet "$QUIET_WAIT" "$MAX_OTHER"); then
        echo "  (the box stayed busy: $load CPUs used by other processes after waiting ${QUIET_WAIT} s; running anyway)"
    fi
    start_target "$target" "$d"

    # Registration: a short SIPp run from the uas's port, so the binding's
    # Contact is the uas (digest for the appliance, none for Kamailio).
    if ! (cd "$d" && sipp -sf "$HERE/register.xml" -s "$CALLEE" -key domain "$DOMAIN" \
            -au "$CALLEE" -ap "pw$CALLEE" -i "$IP" -p "$PORT_UAS" -t u1 -m 1 \
            -nostdin -timeout 10s -timeout_error -trace_err -error_file register_err.log \
            "$IP:$PORT_T" >register.out 2>&1); then
        tail -n 30 "$d/register.out" "$d/register_err.log" >&2 2>/dev/null || true
        die "$CALLEE could not register with $target (see above)"
    fi

    # The called party, on the same port as the registration.
    (cd "$d" && exec "${PIN_S[@]}" sipp -sf "$HERE/uas.xml" -s "$CALLEE" -i "$IP" -p "$PORT_UAS" \
        -t u1 -nostdin -buff_size 1048576 -trace_stat -stf uas_stat.csv -fd 1 \
        -trace_err -error_file uas_err.log) >"$d/uas.out" 2>&1 &
    local uas=$!
    PIDS+=("$uas")
    sleep 0.5
    kill -0 "$uas" 2>/dev/null || { tail -n 20 "$d/uas.out" >&2; die "SIPp uas exited at start"; }

    # Window: CPU snapshot, uac run (its own CPU from the subshell's `times`),
    # CPU snapshot.
    # At most this many calls at once (SIPp -l): 4 s of calls beyond the hold
    # time, below the open-file limit (SIPp warns past it).
    local limit=$((rate * (4 + HOLD_MS / 1000) + 1000)) nofile
    nofile=$(ulimit -n)
    [ "$nofile" = unlimited ] || [ "$limit" -lt $((nofile - 100)) ] || limit=$((nofile - 100))
    local safety=$((calls / rate + HOLD_MS / 1000 + 60))
    python3 "$H" cpu "$TSPEC" "proc:$uas" "udp:$PORT_T,$PORT_UAS,$PORT_UAC" >"$d/cpu0.json" ||
        die "could not read the CPU counters of $target or the uas"
    local t0 t1 uac_rc=0
    t0=$(date +%s.%N)
    (
        cd "$d"
        rc=0
        "${PIN_S[@]}" sipp -sf "$HERE/uac.xml" -s "$CALLEE" -key domain "$DOMAIN" -i "$IP" \
            -p "$PORT_UAC" -t u1 -m "$calls" -r "$rate" -rp 1000 -l "$limit" -d "$HOLD_MS" \
            -nostdin -buff_size 1048576 -recv_timeout 10000 -timeout "${safety}s" \
            -trace_stat -stf uac_stat.csv -fd 1 -trace_shortmsg -shortmessage_file uac_short.log \
            -trace_err -error_file uac_err.log "$IP:$PORT_T" >uac.out 2>&1 || rc=$?
        times >uac.times
        exit "$rc"
    ) &
    local uacsh=$!
    PIDS+=("$uacsh")
    wait "$uacsh" || uac_rc=$?
    forget "$uacsh"
    t1=$(date +%s.%N)
    python3 "$H" cpu "$TSPEC" "proc:$uas" "udp:$PORT_T,$PORT_UAS,$PORT_UAC" >"$d/cpu1.json" || {
        tail -n 20 "$d/target.log" >&2 || true
        die "$target or the uas exited during the run (logs in $d; --keep keeps them)"
    }

    # Stop the uas (SIGUSR1: SIPp finishes and writes its final statistics),
    # then the target.
    kill -USR1 "$uas" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$uas" 2>/dev/null || break; sleep 0.1; done
    kill_pid "$uas"; forget "$uas"
    kill_pid "$TPID"; forget "$TPID"

    local rc=0
    python3 "$H" report out="$d/result.json" target="$target" rate="$rate" calls="$calls" \
        hold_ms="$HOLD_MS" t0="$t0" t1="$t1" cpu0="$d/cpu0.json" cpu1="$d/cpu1.json" \
        target_spec="$TSPEC" uas_spec="proc:$uas" uac_times="$d/uac.times" \
        uac_stat="$d/uac_stat.csv" uas_stat="$d/uas_stat.csv" uac_short="$d/uac_short.log" \
        uac_rc="$uac_rc" target_ncpus="$T_NCPUS" sipp_ncpus="$S_NCPUS" \
        pinned="$([ -n "$PIN" ] && echo 1 || echo 0)" ports="$PORT_T,$PORT_UAS,$PORT_UAC" \
        foreign_max="$MAX_OTHER" >"$d/result.txt" || rc=$?
    if [ "$rc" = 1 ] && [ -s "$d/uac_err.log" ]; then
        {
            echo "  first event in the uac's error log ($d/uac_err.log):"
            grep -m 1 -E 'Aborting|Dead call|Maximum|timeout|Timeout' "$d/uac_err.log" | cut -c1-240 | sed 's/^/    /' || true
        } >>"$d/result.txt"
    fi
    # Drop the per-message trace unless kept: it grows to tens of MB at high rates.
    [ "$KEEP" = 1 ] || rm -f "$d/uac_short.log"
    return "$rc"
}

# run_one target rate calls -> prints the block of the least disturbed
# attempt, appends its JSON line to $RESULTS, returns its status.
run_one() {
    local target=$1 rate=$2 calls=$3
    local where="no pinning"
    [ -z "$PIN" ] || where="target on CPU $TARGET_CPUS, SIPp uac+uas on CPU $SIPP_CPUS"
    echo
    echo "== $target: $calls calls at $rate cps, hold ${HOLD_MS} ms, $where"
    local n rc foreign attempts=()
    for ((n = 1; n <= RETRIES + 1; n++)); do
        local d=$WORK/$target-$rate-$n
        rc=0
        run_attempt "$target" "$rate" "$calls" "$d" || rc=$?
        [ -s "$d/result.json" ] || die "no result for $target at $rate cps (see $d)"
        attempts+=("$d/result.json")
        foreign=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["foreign_cores"])' "$d/result.json")
        if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$foreign" "$MAX_OTHER"; then
            break
        fi
        [ "$n" -le "$RETRIES" ] && echo "  attempt $n disturbed (other processes used $foreign CPUs); repeating"
    done
    local best
    best=$(python3 "$H" pick "${attempts[@]}")
    [ "${#attempts[@]}" -gt 1 ] && echo "  (kept $(basename "$(dirname "$best")"), the least disturbed of ${#attempts[@]} attempts)"
    cat "$(dirname "$best")/result.txt"
    cat "$best" >>"$RESULTS"
    return "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$best")"
}



# -------------------------------------------------------------------- main
echo "run.sh: targets: $TARGETS; SIPp $(sipp -v 2>&1 | grep -o 'v[0-9.]*' | head -1);" \
     "work dir $WORK"
status=0
if [ "$SWEEP" = 1 ]; then
    for target in $TARGETS; do
        for rate in $SWEEP_RATES; do
            n=${CALLS:-$((rate * DURATION))}
            rc=0
            run_one "$target" "$rate" "$n" || rc=$?
            if [ "$rc" = 1 ]; then status=1; echo "  -> $target: failed calls at $rate cps; sweep for $target ends"; break; fi
            if [ "$rc" = 3 ]; then echo "  -> SIPp did not keep $rate cps; sweep for $target ends"; break; fi
        done
    done
    python3 "$H" summary "$RESULTS" sweep || status=1
else
    n=${CALLS:-$((RATE * DURATION))}
    for target in $TARGETS; do
        rc=0
        run_one "$target" "$RATE" "$n" || rc=$?
        [ "$rc" = 1 ] && status=1
    done
    python3 "$H" summary "$RESULTS" || status=1
fi
exit "$status"
