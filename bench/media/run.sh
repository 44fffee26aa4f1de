#!/usr/bin/env bash
# RTP relay benchmark (issue #4): rtpgen (bench/media/rtpgen.c) sends N
# streams of 50 pps G.711 RTP (a call = 2 streams, one per direction) through
# a relay on 127.0.0.1 and receives them back at the other party's socket.
# Relays ("targets"): raw (bench/media/fwd.c, epoll + recvmmsg/sendmmsg, the
# floor), rtpengine (userspace forwarding, set up over its ng protocol), the
# appliance (calls set up over SIP), and direct (no relay: the latency
# baseline). Per target and stream count: packets relayed, the target's CPU
# (utime+stime of all its threads, read by rtpgen at the edges of the
# measured window) per relayed packet, loss, latency percentiles; then
# appliance / raw and appliance / rtpengine CPU per packet.
# bench/media/README.md explains the method.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/media/run.sh [--streams "N1 N2 ..."] [--duration S] [--warmup S]
                          [--target all|raw|rtpengine|appliance|direct|"T1 T2 ..."]
                          [--max-loss PCT] [--quiet-wait S] [--max-other-load CPUS] [--retries N]
                          [--pin TARGET_CPUS:GEN_CPUS | --no-pin] [--gen-base PORT]
                          [--relay-ports LOW-HIGH] [--ports SIP,UAC,UAS,NG]
                          [--rtpengine-threads N] [--rt PRIO] [--appliance-bin PATH]
                          [--appliance-set KEY=VALUE]... [--allow-unanchored] [--keep]

  --streams L       stream counts to run, each even (a call = 2 streams; default "500 1000")
  --duration S      measured window per run, seconds (default 20)
  --warmup S        sending before the window, excluded from every figure (default 5)
  --target T        all (= raw rtpengine appliance, in that order), or a list of raw,
                    rtpengine, appliance, direct (no relay: the latency baseline)
  --max-loss PCT    a run with more loss than this fails (default 0.1)
  --quiet-wait S    before each run, wait up to S s for a second in which the box (builds,
                    other benchmarks) uses less than --max-other-load CPUs (default 60)
  --max-other-load  CPUs other processes may use during a run (default 0.15); a run above
                    it is marked disturbed and repeated (--retries, default 2), keeping
                    the attempt with the least other load
  --pin T:G         taskset CPU lists for the target and for rtpgen and the helpers
                    (default 1:0); --no-pin lets the scheduler place everything
  --gen-base PORT   rtpgen's first port; stream s uses PORT + 2s (default 10000)
  --relay-ports R   the relay's RTP ports: fwd's sockets from LOW up (2 apart),
                    rtpengine's --port-min/--port-max, the appliance's media.rtp_ports
                    (default 20000-29999, the appliance's default; both ranges stay below
                    the kernel's ephemeral ports, 32768 and up)
  --ports S,C,E,N   UDP ports on 127.0.0.1: the appliance's SIP listener, the caller (UAC),
                    the callee (UAS, registered as 1001), rtpengine's ng control
                    (default 16160,16170,16180,16190)
  --rtpengine-threads N
                    rtpengine --num-threads, its packet worker threads (default 1: one
                    core, like fwd's one thread and the appliance's one shard)
  --rt PRIO         run the target and rtpgen under SCHED_FIFO priority PRIO (chrt -f,
                    1..99; needs root or CAP_SYS_NICE), so that other jobs on a shared
                    box cannot keep them off their CPUs; default: normal scheduling
  --appliance-bin P the switchboard binary (default target/release/switchboard, built with
                    cargo build --release --locked when missing)
  --appliance-set KEY=VALUE
                    extra config override for the appliance (repeatable)
  --allow-unanchored
                    run the appliance target even though its SDP names the parties' own
                    ports (no media anchoring: RTP goes direct); a test of the SIP
                    plumbing, the run is reported as failed
  --keep            keep the work directory (logs, plans, JSON) and print its path

Exit status: 0 when every run completed with loss within --max-loss, 1 when a run failed
(loss, nothing relayed, misrouted packets, a target that died), 2 on a usage or set-up
error (missing tool, port in use, target not answering, the appliance not anchoring
media); a set-up error of the appliance alone still lets the other targets run.
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IP=127.0.0.1

STREAMS="500 1000"
DURATION=20
WARMUP=5
TARGET=all
MAX_LOSS=0.1
QUIET_WAIT=60
MAX_OTHER=0.15
RETRIES=2
PIN="1:0"
GEN_BASE=10000
RELAY_PORTS=20000-29999
PORT_SIP=16160
PORT_UAC=16170
PORT_UAS=16180
PORT_NG=16190
RTPE_THREADS=1
RT=""
BIN=$ROOT/target/release/switchboard
APPLIANCE_SET=()
ALLOW_UNANCHORED=0
KEEP=0

die() { echo "run.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --streams) STREAMS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --target) TARGET=${2:?}; shift 2 ;;
        --max-loss) MAX_LOSS=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --max-other-load) MAX_OTHER=${2:?}; shift 2 ;;
        --retries) RETRIES=${2:?}; shift 2 ;;
        --pin) PIN=${2:?}; shift 2 ;;
        --no-pin) PIN=""; shift ;;
        --gen-base) GEN_BASE=${2:?}; shift 2 ;;
        --relay-ports) RELAY_PORTS=${2:?}; shift 2 ;;
        --ports) IFS=, read -r PORT_SIP PORT_UAC PORT_UAS PORT_NG <<<"${2:?}"; shift 2 ;;
        --rtpengine-threads) RTPE_THREADS=${2:?}; shift 2 ;;
        --rt) RT=${2:?}; shift 2 ;;
        --appliance-bin) BIN=${2:?}; shift 2 ;;
        --appliance-set) APPLIANCE_SET+=(--set "${2:?}"); shift 2 ;;
        --allow-unanchored) ALLOW_UNANCHORED=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

isint() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
isnum() { [[ "$1" =~ ^[0-9]*\.?[0-9]+$ ]]; }
for n in $STREAMS; do
    isint "$n" && [ $((n % 2)) = 0 ] || die "--streams: '$n' is not a positive even number"
done
[ -n "$STREAMS" ] || die "--streams is empty"
isint "$DURATION" || die "--duration must be a positive whole number of seconds"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds"
isnum "$MAX_LOSS" || die "--max-loss must be a percentage"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || die "--quiet-wait must be a whole number of seconds"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--retries must be a whole number"
isnum "$MAX_OTHER" || die "--max-other-load must be a number of CPUs"
isint "$RTPE_THREADS" || die "--rtpengine-threads must be a positive integer"
[ -z "$RT" ] || { isint "$RT" && [ "$RT" -le 99 ]; } || die "--rt takes a priority 1..99"
[[ "$RELAY_PORTS" =~ ^([0-9]+)-([0-9]+)$ ]] || die "--relay-ports takes LOW-HIGH"
RELAY_LO=${BASH_REMATCH[1]}
RELAY_HI=${BASH_REMATCH[2]}
[ $((RELAY_LO % 2)) = 0 ] && [ "$RELAY_HI" -lt 65536 ] || die "--relay-ports: LOW must be even, HIGH < 65536"
for p in "$PORT_SIP" "$PORT_UAC" "$PORT_UAS" "$PORT_NG" "$GEN_BASE"; do
    isint "$p" && [ "$p" -lt 65536 ] || die "bad port '$p'"
done
MAXN=0
for n in $STREAMS; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
GEN_HI=$((GEN_BASE + 2 * MAXN - 2))
[ "$GEN_HI" -lt 65536 ] || die "--gen-base: $MAXN streams need ports up to $GEN_HI"
[ $((RELAY_HI - RELAY_LO + 1)) -ge $((4 * MAXN)) ] ||
    die "--relay-ports: $MAXN streams need at least $((4 * MAXN)) ports (RTP + RTCP per stream, with room)"
overlap() { [ "$1" -le "$4" ] && [ "$3" -le "$2" ]; }
overlap "$GEN_BASE" "$GEN_HI" "$RELAY_LO" "$RELAY_HI" && die "rtpgen's ports overlap --relay-ports"
for p in "$PORT_SIP" "$PORT_UAC" "$PORT_UAS" "$PORT_NG"; do
    overlap "$p" "$p" "$RELAY_LO" "$RELAY_HI" && die "port $p lies inside --relay-ports"
    overlap "$p" "$p" "$GEN_BASE" "$GEN_HI" && die "port $p lies inside rtpgen's ports"
done

# A port in the kernel's ephemeral range can be taken by any client socket on
# the box at any moment (a DNS lookup, another test).
if read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
    if overlap "$GEN_BASE" "$GEN_HI" "$EPH_LO" "$EPH_HI" || overlap "$RELAY_LO" "$RELAY_HI" "$EPH_LO" "$EPH_HI"; then
        echo "run.sh: warning: rtpgen's ports ($GEN_BASE-$GEN_HI) or --relay-ports overlap the ephemeral range $EPH_LO-$EPH_HI"
    fi
fi

TARGETS=""
for t in ${TARGET//,/ }; do
    case "$t" in
        all) TARGETS="$TARGETS raw rtpengine appliance" ;;
        raw|rtpengine|appliance|direct) TARGETS="$TARGETS $t" ;;
        *) die "--target: unknown target '$t' (raw, rtpengine, appliance, direct, all)" ;;
    esac
done
TARGETS=${TARGETS# }
[ -n "$TARGETS" ] || die "--target is empty"
has() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }

# ------------------------------------------------------------------ tools
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' (Debian package: $2)"; }
need python3 python3
need cc "gcc (or any C compiler as cc)"
need pgrep procps
if [ -n "$PIN" ]; then
    need taskset util-linux
    [[ "$PIN" == *:* ]] || die "--pin takes TARGET_CPUS:GEN_CPUS, e.g. 1:0"
    TARGET_CPUS=${PIN%%:*}
    GEN_CPUS=${PIN#*:}
    taskset -c "$TARGET_CPUS" true 2>/dev/null || die "cannot pin to CPUs '$TARGET_CPUS'"
    taskset -c "$GEN_CPUS" true 2>/dev/null || die "cannot pin to CPUs '$GEN_CPUS'"
    PIN_T=(taskset -c "$TARGET_CPUS")
    PIN_G=(taskset -c "$GEN_CPUS")
    # the appliance's shard CPUs: the target's CPU list as a TOML array
    CORES=$(taskset -c "$TARGET_CPUS" python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))') ||
        die "cannot read the CPU list '$TARGET_CPUS'"
else
    PIN_T=()
    PIN_G=()
    CORES='"all"'
fi
if [ -n "$RT" ]; then
    need chrt util-linux
    chrt -f "$RT" true 2>/dev/null || die "cannot use SCHED_FIFO priority $RT (chrt -f; root or CAP_SYS_NICE needed)"
    PIN_T=(chrt -f "$RT" "${PIN_T[@]}")
    PIN_GEN=(chrt -f "$RT" "${PIN_G[@]}")
else
    PIN_GEN=("${PIN_G[@]+"${PIN_G[@]}"}")
fi
if has rtpengine; then
    command -v rtpengine >/dev/null 2>&1 ||
        die "missing tool 'rtpengine' (Debian package: rtpengine-daemon; install it with apt-get install -y rtpengine-daemon)"
fi
if has appliance && [ ! -x "$BIN" ]; then
    [ "$BIN" = "$ROOT/target/release/switchboard" ] || die "no executable at --appliance-bin $BIN"
    need cargo "rustup (the Rust toolchain)"
    echo "run.sh: building the appliance (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked) || die "build failed"
fi

# Each stream is a socket in rtpgen and one or two in the relay.
want=$((4 * MAXN + 1024))
soft=$(ulimit -n)
if [ "$soft" != unlimited ] && [ "$soft" -lt "$want" ]; then
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then ulimit -n "$want"
    else die "open-file limit $hard is below the $want that $MAXN streams need (ulimit -n)"; fi
fi

# ------------------------------------------------------- process tracking
WORK=$(mktemp -d /tmp/benchmedia.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
PIDS=()

kill_pid() { # pid [grace seconds]: TERM it, KILL it after the grace time (default 5 s)
    local pid=$1 grace=${2:-5} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill_pid "${PIDS[$i]}" 15; done
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

H=$HERE/media.py

# ------------------------------------------------------------------ build
cc -O2 -Wall -o "$WORK/fwd" "$HERE/fwd.c" || die "cannot build fwd.c"
cc -O2 -Wall -o "$WORK/rtpgen" "$HERE/rtpgen.c" || die "cannot build rtpgen.c"

# ------------------------------------------------------------- one attempt
# attempt target streams dir: sets up the target, runs rtpgen, tears down,
# writes $dir/result.json and $dir/result.txt. Returns 0 (ok), 1 (failed run),
# 2 (set-up error of this target: message in $dir/setup_error).
attempt() {
    local target=$1 n=$2 d=$3 calls=$(($2 / 2))
    mkdir -p "$d"
    local specs=("$GEN_BASE-$((GEN_BASE + 2 * n - 2))")
    case "$target" in
        raw) specs+=("$RELAY_LO-$((RELAY_LO + 2 * n - 2))") ;;      # fwd's sockets
        rtpengine) specs+=("$RELAY_LO-$RELAY_HI") ;;
        appliance) specs+=("$RELAY_LO-$RELAY_HI" "$PORT_SIP" "$PORT_UAC" "$PORT_UAS") ;;
    esac
    [ "$target" = rtpengine ] && specs+=("$PORT_NG")
    python3 "$H" ports-free "${specs[@]}" || exit 2
    local load
    if ! load=$(python3 "$H" quiet "$QUIET_WAIT" "$MAX_OTHER"); then
        echo "  (the box stayed busy: $load CPUs used by other processes after waiting ${QUIET_WAIT} s; running anyway)"
    fi

    local tpid="" helper="" fwd_out=""
    case "$target" in
        raw)
            fwd_out=$d/fwd.out
            "${PIN_T[@]}" "$WORK/fwd" "$RELAY_LO" "$calls" 32 >"$fwd_out" 2>"$d/target.log" &
            tpid=$!
            PIDS+=("$tpid")
            local i
            for ((i = 0; i < 50; i++)); do
                grep -q '^ready' "$fwd_out" 2>/dev/null && break
                kill -0 "$tpid" 2>/dev/null || break
                sleep 0.1
            done
            grep -q '^ready' "$fwd_out" 2>/dev/null || { cat "$d/target.log" >&2; die "fwd did not start"; }
            python3 "$H" plan raw "$n" "$GEN_BASE" "$d/plan.txt" "$RELAY_LO"
            ;;
        direct)
            python3 "$H" plan direct "$n" "$GEN_BASE" "$d/plan.txt"
            ;;
        rtpengine)
            "${PIN_T[@]}" rtpengine --foreground --config-file=none --log-stderr --log-level=4 \
                --table=-1 --interface="$IP" --listen-ng="$IP:$PORT_NG" \
                --port-min="$RELAY_LO" --port-max="$RELAY_HI" --num-threads="$RTPE_THREADS" \
                --delete-delay=0 --timeout=60 >"$d/target.log" 2>&1 &
            tpid=$!
            PIDS+=("$tpid")
            if ! python3 "$H" ng-ping "$PORT_NG" 10; then
                tail -n 20 "$d/target.log" >&2 || true
                die "rtpengine did not answer ng ping on $IP:$PORT_NG within 10 s (log above)"
            fi
            python3 "$H" rtpengine-setup "$PORT_NG" "$n" "$GEN_BASE" "$d/plan.txt" "$d/ng_state.json" \
                >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; die "rtpengine call set-up failed"; }
            sed 's/^/  /' "$d/setup.log"
            ;;
        appliance)
            mkdir -p "$d/data"
            (cd "$ROOT" && exec "${PIN_T[@]}" "$BIN" run --config firmware-config/default.toml \
                --set "sip.listen=[\"udp:$IP:$PORT_SIP\"]" \
                --set "node.cores=$CORES" \
                --set "media.rtp_ports=\"$RELAY_LO-$RELAY_HI\"" \
                --set 'registrar.digest_algorithms=["MD5","SHA-256"]' \
                --set "node.data_dir=\"$d/data\"" \
                --set 'node.log="warn"' "${APPLIANCE_SET[@]}") >"$d/target.log" 2>&1 &
            tpid=$!
            PIDS+=("$tpid")
            if ! python3 "$H" probe "$PORT_SIP" 10; then
                tail -n 20 "$d/target.log" >&2 || true
                die "the appliance did not answer OPTIONS on $IP:$PORT_SIP within 10 s (log above)"
            fi
            "${PIN_G[@]}" python3 "$H" sip-calls streams="$n" gen_base="$GEN_BASE" \
                sip_port="$PORT_SIP" uac_port="$PORT_UAC" uas_port="$PORT_UAS" \
                plan="$d/plan.txt" ready="$d/ready" allow_unanchored="$ALLOW_UNANCHORED" \
                >"$d/setup.log" 2>&1 &
            helper=$!
            PIDS+=("$helper")
            local i rc=0
            for ((i = 0; i < 600; i++)); do
                [ -e "$d/ready" ] && break
                kill -0 "$helper" 2>/dev/null || break
                sleep 0.1
            done
            if [ ! -e "$d/ready" ]; then
                wait "$helper" || rc=$?
                forget "$helper"
                sed 's/^media.py: //' "$d/setup.log" >"$d/setup_error"
                [ -s "$d/setup_error" ] || echo "call set-up did not finish in 60 s" >"$d/setup_error"
                kill_pid "$tpid" 15; forget "$tpid"
                return 2
            fi
            sed 's/^/  /' "$d/setup.log"
            ;;
    esac

    # The measured run. rtpgen reads the target's CPU counters itself at the
    # edges of the window.
    local gen_rc=0 cpuarg=()
    [ -n "$tpid" ] && cpuarg=(--cpu-pid "$tpid")
    "${PIN_GEN[@]}" "$WORK/rtpgen" --plan "$d/plan.txt" --warmup "$WARMUP" --duration "$DURATION" \
        "${cpuarg[@]}" --out "$d/gen.json" 2>"$d/gen.log" &
    local gpid=$!
    PIDS+=("$gpid")
    wait "$gpid" || gen_rc=$?
    forget "$gpid"

    # Teardown: calls first, then the target.
    case "$target" in
        rtpengine) python3 "$H" rtpengine-teardown "$PORT_NG" "$d/ng_state.json" >>"$d/setup.log" 2>&1 || true ;;
        appliance)
            kill -TERM "$helper" 2>/dev/null || true
            local i
            for ((i = 0; i < 300; i++)); do kill -0 "$helper" 2>/dev/null || break; sleep 0.1; done
            kill_pid "$helper"; forget "$helper"
            grep '^BYE' "$d/setup.log" | sed 's/^/  /' || true
            ;;
    esac
    if [ -n "$tpid" ]; then
        kill -0 "$tpid" 2>/dev/null || echo "  the target exited during the run (log: $d/target.log)"
        kill_pid "$tpid" 15; forget "$tpid"
    fi
    if [ ! -s "$d/gen.json" ]; then
        cat "$d/gen.log" >&2
        [ "$gen_rc" = 2 ] && die "rtpgen could not start (see above)"
        echo "  rtpgen failed (exit $gen_rc), no result" | tee "$d/result.txt"
        return 1
    fi
    local rc=0
    python3 "$H" report gen="$d/gen.json" target="$target" streams="$n" max_loss="$MAX_LOSS" \
        foreign_max="$MAX_OTHER" fwd="$fwd_out" unanchored="$([ -e "$d/ready.unanchored" ] && echo 1 || echo 0)" \
        out="$d/result.json" >"$d/result.txt" || rc=$?
    return "$rc"
}

# run_one target streams: the least disturbed of up to RETRIES+1 attempts;
# prints its block, appends its JSON line to $RESULTS, returns its status.
run_one() {
    local target=$1 n=$2
    local where="no pinning"
    [ -z "$PIN" ] || where="target on CPU $TARGET_CPUS, rtpgen on CPU $GEN_CPUS"
    [ -z "$RT" ] || where="$where, SCHED_FIFO $RT"
    echo
    echo "== $target: $n streams ($((n / 2)) calls) x 50 pps, warm-up ${WARMUP} s + ${DURATION} s measured, $where"
    local k rc foreign attempts=()
    for ((k = 1; k <= RETRIES + 1; k++)); do
        local d=$WORK/$target-$n-$k
        rc=0
        attempt "$target" "$n" "$d" || rc=$?
        if [ "$rc" = 2 ]; then
            echo "  SET-UP ERROR: $(cat "$d/setup_error")"
            return 2
        fi
        [ -s "$d/result.json" ] || return 1
        attempts+=("$d/result.json")
        foreign=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["foreign_cores"])' "$d/result.json")
        if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$foreign" "$MAX_OTHER"; then
            break
        fi
        [ "$k" -le "$RETRIES" ] && echo "  attempt $k disturbed (other processes used $foreign CPUs); repeating"
    done
    local best
    best=$(python3 "$H" pick "${attempts[@]}")
    [ "${#attempts[@]}" -gt 1 ] && echo "  (kept $(basename "$(dirname "$best")"), the least disturbed of ${#attempts[@]} attempts)"
    cat "$(dirname "$best")/result.txt"
    cat "$best" >>"$RESULTS"
    return "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$best")"
}

# -------------------------------------------------------------------- main
echo "run.sh: targets: $TARGETS; streams: $STREAMS; $(nproc) CPUs; work dir $WORK"
has rtpengine && echo "run.sh: $(rtpengine --version 2>&1 | head -1)"
status=0
setup_failed=""
for n in $STREAMS; do
    for target in $TARGETS; do
        case " $setup_failed " in *" $target "*) continue ;; esac
        rc=0
        run_one "$target" "$n" || rc=$?
        if [ "$rc" = 2 ]; then
            setup_failed="$setup_failed $target"
        elif [ "$rc" != 0 ]; then
            status=1
        fi
    done
done
if [ -s "$RESULTS" ]; then
    python3 "$H" summary "$RESULTS" "$MAX_LOSS" || status=1
fi
if [ -n "$setup_failed" ]; then
    echo
    echo "run.sh: set-up error for:$setup_failed (see above)"
    exit 2
fi
exit "$status"
