#!/usr/bin/env bash
# Contact-center benchmark (issue #5): SIPp customers call a queue of the
# appliance at a fixed rate; SIPp agents (AGENTS users, registered and so
# logged in and ready) answer the calls the ACD offers them, talk and hang up.
# Reports lost calls (must be 0), the ACD's own ASA, and per call the
# latencies from the customer's INVITE to the appliance's 200, to the INVITE
# reaching an agent's phone and to the agent's 200. The anchor, measured in
# the same invocation: the same SIPp customer calling the same SIPp agent
# directly, without the appliance. bench/contact_center/README.md explains.
set -euo pipefail

usage() {
    cat <<'EOF2'
usage: bench/contact_center/run.sh [--rate R] [--duration S] [--agents N] [--talk MS]
                                   [--wrap-up S] [--ports APPLIANCE,AGENTS,CALLERS]
                                   [--quiet-wait S] [--keep]

  --rate R        customer calls per second (default 100)
  --duration S    seconds of calls (default 30; calls = R x S)
  --agents N      SIPp agents, users 2001.. (default 50)
  --talk MS       how long an agent talks before hanging up (default 200)
  --wrap-up S     the queue's wrap_up_s (default 0)
  --ports A,G,C   UDP ports on 127.0.0.1: appliance, agents' SIPp, customers' SIPp
                  (default 16060,16070,16080)
  --quiet-wait S  before each run wait up to S s for an idle box (default 60)
  --keep          keep the work directory (config, logs, SIPp traces)

Exit status: 0 when no call was lost or failed, 1 otherwise, 2 on a set-up error.
EOF2
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IP=127.0.0.1
DOMAIN=switchboard.local
RATE=100
DURATION=30
AGENTS=50
TALK=200
WRAP=0
PORTS=16060,16070,16080
QUIET_WAIT=60
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --agents) AGENTS=${2:?}; shift 2 ;;
        --talk) TALK=${2:?}; shift 2 ;;
        --wrap-up) WRAP=${2:?}; shift 2 ;;
        --ports) PORTS=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
die() { echo "run.sh: $*" >&2; exit 2; }
for v in RATE DURATION AGENTS TALK WRAP QUIET_WAIT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "--$(echo "$v" | tr A-Z_ a-z-) takes a whole number"
done
IFS=, read -r PORT_A PORT_G PORT_C <<<"$PORTS"
CALLS=$((RATE * DURATION))
command -v sipp >/dev/null || die "sipp not found (apt-get install sip-tester)"
command -v python3 >/dev/null || die "python3 not found"
BIN=$ROOT/target/release/switchboard
if [ ! -x "$BIN" ]; then
    echo "run.sh: building the appliance (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked) || die "build failed"
fi
H=$HERE/cc.py
C=$ROOT/bench/calls/calls.py

WORK=$(mktemp -d /tmp/benchcc.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "run.sh: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The agents' SIPp on PORT_G: talks TALK ms per call, then hangs up.
start_agents() { # dir
    (cd "$1" && exec sipp -sf "$HERE/agent.xml" -i "$IP" -p "$PORT_G" -t u1 -nostdin \
        -key domain "$DOMAIN" -d "$TALK" -buff_size 4194304 -trace_stat -stf agent_stat.csv -fd 1 \
        -trace_msg -message_file agent_msg.log -trace_err -error_file agent_err.log) \
        >"$1/agent.out" 2>&1 &
    AGENTS_PID=$!
    PIDS+=("$AGENTS_PID")
    sleep 0.5
    kill -0 "$AGENTS_PID" 2>/dev/null || { tail -n 20 "$1/agent.out" >&2; die "the agents' SIPp exited at start"; }
}

# The customers: CALLS calls at RATE/s to TARGET; returns when all ended.
run_callers() { # dir target
    local safety=$((DURATION + TALK / 1000 + 60)) rc=0
    (cd "$1" && sipp -sf "$HERE/caller.xml" -s 400 -key domain "$DOMAIN" -i "$IP" -p "$PORT_C" \
        -t u1 -m "$CALLS" -r "$RATE" -l $((RATE * 10 + 100)) -nostdin -buff_size 4194304 \
        -recv_timeout 30000 -timeout "${safety}s" -trace_stat -stf caller_stat.csv -fd 1 \
        -trace_shortmsg -shortmessage_file caller_short.log -trace_err -error_file caller_err.log \
        "$2" >caller.out 2>&1) || rc=$?
    return "$rc"
}

stop() { # pid signal
    kill "-$2" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

report() { # dir mode
    python3 "$H" report mode="$2" calls="$CALLS" rate="$RATE" agents="$AGENTS" talk_ms="$TALK" \
        caller_stat="$1/caller_stat.csv" agent_stat="$1/agent_stat.csv" \
        caller_short="$1/caller_short.log" agent_msg="$1/agent_msg.log" \
        log="$1/appliance.log" results="$WORK/results.jsonl"
}

echo "run.sh: $CALLS calls at $RATE/s, $AGENTS agents talking $TALK ms, wrap-up $WRAP s;" \
    "SIPp $(sipp -v 2>&1 | grep -o 'v[0-9.]*' | head -1); $(nproc) CPUs"
python3 "$C" ports-free "$PORT_A" "$PORT_G" "$PORT_C" || exit 2
status=0

# 1. Anchor: customer -> agent directly.
d=$WORK/anchor; mkdir -p "$d"
load=$(python3 "$C" quiet "$QUIET_WAIT" 0.15) || echo "  (box still busy: $load CPUs by others)"
start_agents "$d"
run_callers "$d" "$IP:$PORT_G" || true
stop "$AGENTS_PID" USR1
report "$d" sipp-direct || status=1

# 2. The appliance: customer -> queue 400 -> ACD -> agent.
d=$WORK/appliance; mkdir -p "$d/data"
python3 "$H" config "$d/bench.toml" "$AGENTS" "$PORT_A" "$ROOT/firmware-config/prompts/music.wav" "$WRAP"
"$BIN" check-config "$d/bench.toml" >/dev/null || die "generated config refused (see above)"
load=$(python3 "$C" quiet "$QUIET_WAIT" 0.15) || echo "  (box still busy: $load CPUs by others)"
(cd "$d" && exec "$BIN" run --config "$d/bench.toml" --set "node.data_dir=\"$d/data\"") \
    >"$d/appliance.log" 2>&1 &
APID=$!
PIDS+=("$APID")
python3 "$C" probe "$PORT_A" 10 || { tail -n 20 "$d/appliance.log" >&2; die "the appliance did not answer OPTIONS"; }
# Every agent registers from the agents' port (bench/calls/register.xml,
# digest), so each binding's Contact is the agents' SIPp.
for ((i = 0; i < AGENTS; i++)); do
    u=$((2001 + i))
    (cd "$d" && sipp -sf "$ROOT/bench/calls/register.xml" -s "$u" -au "$u" -ap "pw$u" \
        -key domain "$DOMAIN" -i "$IP" -p "$PORT_G" -t u1 -m 1 -nostdin -timeout 10s \
        -timeout_error -trace_err -error_file register_err.log "$IP:$PORT_A" >register.out 2>&1) ||
        { tail -n 20 "$d/register.out" "$d/register_err.log" >&2 2>/dev/null; die "agent $u could not register"; }
done
start_agents "$d"
run_callers "$d" "$IP:$PORT_A" || true
stop "$AGENTS_PID" USR1
stop "$APID" TERM
report "$d" appliance || status=1
echo "run.sh: results (JSON lines): $WORK/results.jsonl"
[ "$KEEP" = 1 ] || cat "$WORK/results.jsonl"
exit "$status"
