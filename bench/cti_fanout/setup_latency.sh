#!/usr/bin/env bash
# CTI fan-out vs call set-up latency (issue #6, "no effect on call setup
# latency"). The real appliance (firmware-config/default.toml with --set
# overrides for its ports, data dir and a bench-friendly queue "support")
# takes SIPp customers calling queue 200 at a fixed rate, answered by SIPp
# agents 1001..1010 (the demo's agents, registered from one SIPp port); the
# per-call set-up latencies are bench/contact_center's (cc.py report).
# Each round measures twice, a fresh appliance each time: with 0 CTI
# clients and with CLIENTS WebSocket clients (`cti_fanout --hold`, Rust,
# bench/cti_fanout.rs) connected to /v1/cti with `Bearer demo-token`, each
# subscribed to one agent (client i to agent 1001 + i mod 10, the default)
# or to everything (--subscribe all). The events the calls make
# (call.ringing/established/cleared, agent.state, ...) are what the clients
# get. Reports set-up p50/p99 per run, the ratio with/without clients, and
# switchboard_cti_events_delivered_total / _missed_total from GET /metrics.
set -euo pipefail

usage() {
    cat <<'EOF2'
usage: bench/cti_fanout/setup_latency.sh [--rate R] [--duration S] [--talk MS] [--clients N]
                                         [--subscribe agent|all] [--rounds K]
                                         [--ports APPLIANCE,AGENTS,CALLERS,CTI] [--quiet-wait S] [--keep]

  --rate R          customer calls per second to queue 200 (default 20)
  --duration S      seconds of calls per run (default 20; calls = R x S)
  --talk MS         how long an agent talks before hanging up (default 200)
  --clients N       CTI WebSocket clients in the loaded runs (default 1000)
  --subscribe W     agent: client i follows agent 1001 + i mod 10 (default);
                    all: every client subscribes to everything
  --rounds K        rounds of (0 clients, N clients) (default 2)
  --ports A,G,C,W   127.0.0.1 ports: appliance SIP (UDP), agents' SIPp, customers' SIPp,
                    control plane (TCP) (default 16260,16270,16280,18280)
  --quiet-wait S    before each run's calls wait up to S s for an idle box (default 30)
  --keep            keep the work directory (logs, SIPp traces, metrics)

Exit status: 0 when every call of every run completed and every client
subscribed, 1 otherwise, 2 on a set-up error.
EOF2
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IP=127.0.0.1
DOMAIN=switchboard.local
RATE=20
DURATION=20
TALK=200
CLIENTS=1000
SUBSCRIBE=agent
ROUNDS=2
PORTS=16260,16270,16280,18280
QUIET_WAIT=30
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --talk) TALK=${2:?}; shift 2 ;;
        --clients) CLIENTS=${2:?}; shift 2 ;;
        --subscribe) SUBSCRIBE=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --ports) PORTS=${2:?}; shift 2 ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
die() { echo "setup_latency.sh: $*" >&2; exit 2; }
for v in RATE DURATION TALK CLIENTS ROUNDS QUIET_WAIT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "--$(echo "$v" | tr A-Z_ a-z-) takes a whole number"
done
case "$SUBSCRIBE" in agent|all) ;; *) die "--subscribe takes agent or all" ;; esac
IFS=, read -r PORT_A PORT_G PORT_C PORT_W <<<"$PORTS"
[ -n "${PORT_W:-}" ] || die "--ports takes four ports"
CALLS=$((RATE * DURATION))
command -v sipp >/dev/null || die "sipp not found (apt-get install sip-tester)"
command -v python3 >/dev/null || die "python3 not found"
CC=$ROOT/bench/contact_center
C=$ROOT/bench/calls/calls.py
H=$HERE/setup_latency.py
AGENT_IDS=(1001 1002 1003 1004 1005 1006 1007 1008 1009 1010)   # the demo config's agents
if [ "$SUBSCRIBE" = all ]; then SUB_ARG=all; else SUB_ARG=$(IFS=,; echo "${AGENT_IDS[*]}"); fi

echo "setup_latency.sh: building (cargo build --release --locked; the cti_fanout bench binary)"
(cd "$ROOT" && cargo build --release --locked) || die "build failed"
HOLD=$(cd "$ROOT" && cargo build --release --locked --bench cti_fanout --message-format=json |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cti_fanout" and m.get("executable"):
        print(m["executable"])') || die "building the cti_fanout bench failed"
[ -x "$HOLD" ] || die "cti_fanout bench binary not found"
BIN=$ROOT/target/release/switchboard
# 1,000 clients = 1,000 sockets on each side, plus the appliance's own.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((CLIENTS + 1024)) ] ||
    die "ulimit -n is $(ulimit -n); $CLIENTS clients need more"

WORK=$(mktemp -d /tmp/benchctisetup.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "setup_latency.sh: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # pid signal
    kill "-$2" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

start_appliance() { # dir
    # (mode appliance+cti: cc.py checks lost/failed calls; its ACD check
    # reads queue "bench", ours is "support".)
    # The demo config; bench overrides: own ports and data dir, MD5 first
    # (SIPp 3.6 answers only a first MD5 challenge), the ACD's log line at
    # exit, and queue support (queues[0], dialled as 200) without wrap-up,
    # entry prompt and announcements so 10 agents take RATE calls/s.
    (cd "$1" && exec "$BIN" run --config "$ROOT/firmware-config/default.toml" \
        --set "sip.listen=[\"udp:$IP:$PORT_A\"]" \
        --set "cti.listen=\"$IP:$PORT_W\"" \
        --set "node.data_dir=\"$1/data\"" \
        --set 'node.log="warn,switchboard::shell::acd=info,switchboard::shell=info"' \
        --set 'registrar.digest_algorithms=["MD5", "SHA-256"]' \
        --set 'media.rtp_ports="32000-33999"' \
        --set 'queues[0].wrap_up_s=0' --set 'queues[0].wrap_up_max_s=0' \
        --set 'queues[0].entry_prompt=""' --set 'queues[0].announce_every_s=0') \
        >"$1/appliance.log" 2>&1 &
    APID=$!
    PIDS+=("$APID")
    python3 "$C" probe "$PORT_A" 10 || { tail -n 20 "$1/appliance.log" >&2; die "the appliance did not answer OPTIONS"; }
    local u
    for u in "${AGENT_IDS[@]}"; do
        (cd "$1" && sipp -sf "$ROOT/bench/calls/register.xml" -s "$u" -au "$u" -ap "pw$u" \
            -key domain "$DOMAIN" -i "$IP" -p "$PORT_G" -t u1 -m 1 -nostdin -timeout 10s \
            -timeout_error -trace_err -error_file register_err.log "$IP:$PORT_A" >register.out 2>&1) ||
            { tail -n 20 "$1/register.out" "$1/register_err.log" >&2 2>/dev/null; die "agent $u could not register"; }
    done
}

start_agents() { # dir
    (cd "$1" && exec sipp -sf "$CC/agent.xml" -i "$IP" -p "$PORT_G" -t u1 -nostdin \
        -key domain "$DOMAIN" -d "$TALK" -buff_size 4194304 -trace_stat -stf agent_stat.csv -fd 1 \
        -trace_msg -message_file agent_msg.log -trace_err -error_file agent_err.log) \
        >"$1/agent.out" 2>&1 &
    AGENTS_PID=$!
    PIDS+=("$AGENTS_PID")
    sleep 0.5
    kill -0 "$AGENTS_PID" 2>/dev/null || { tail -n 20 "$1/agent.out" >&2; die "the agents' SIPp exited at start"; }
}

run_callers() { # dir
    local safety=$((DURATION + TALK / 1000 + 60)) rc=0
    (cd "$1" && sipp -sf "$CC/caller.xml" -s 200 -key domain "$DOMAIN" -i "$IP" -p "$PORT_C" \
        -t u1 -m "$CALLS" -r "$RATE" -l $((RATE * 10 + 100)) -nostdin -buff_size 4194304 \
        -recv_timeout 30000 -timeout "${safety}s" -trace_stat -stf caller_stat.csv -fd 1 \
        -trace_shortmsg -shortmessage_file caller_short.log -trace_err -error_file caller_err.log \
        "$IP:$PORT_A" >caller.out 2>&1) || rc=$?
    return "$rc"
}

status=0
run_one() { # round clients
    local d=$WORK/r$1-c$2 hold_pid="" line="" i
    mkdir -p "$d/data"
    echo "== round $1, $2 CTI clients ($SUBSCRIBE)"
    start_appliance "$d"
    if [ "$2" -gt 0 ]; then
        "$HOLD" --hold "$2" --url "ws://$IP:$PORT_W/v1/cti" --token demo-token --agents "$SUB_ARG" \
            --stop-file "$d/stop" >"$d/hold.out" 2>"$d/hold.err" &
        hold_pid=$!
        PIDS+=("$hold_pid")
        for ((i = 0; i < 1200; i++)); do
            line=$(grep -m1 '^ready ' "$d/hold.out" 2>/dev/null || true)
            [ -n "$line" ] && break
            kill -0 "$hold_pid" 2>/dev/null || break
            sleep 0.05
        done
        echo "  clients: $line"
        [ "$line" = "ready $2 failed 0" ] || { cat "$d/hold.err" >&2; status=1; }
    fi
    load=$(python3 "$C" quiet "$QUIET_WAIT" 0.15) || echo "  (box still busy: $load CPUs by others)"
    start_agents "$d"
    run_callers "$d" || true
    stop "$AGENTS_PID" USR1
    sleep 0.5   # the last calls' events reach the clients
    python3 "$H" metrics "$PORT_W" "$d/metrics.txt" || status=1
    if [ -n "$hold_pid" ]; then
        touch "$d/stop"
        wait "$hold_pid" || status=1
        cat "$d/hold.out" | grep '^hold:' | sed 's/^/  /'
    fi
    stop "$APID" TERM
    python3 "$CC/cc.py" report mode=appliance+cti calls="$CALLS" rate="$RATE" agents="${#AGENT_IDS[@]}" \
        talk_ms="$TALK" caller_stat="$d/caller_stat.csv" agent_stat="$d/agent_stat.csv" \
        caller_short="$d/caller_short.log" agent_msg="$d/agent_msg.log" log="$d/appliance.log" \
        results="$WORK/results.jsonl" || status=1
    local delivered missed hold
    delivered=$(awk '$1=="switchboard_cti_events_delivered_total"{print $2}' "$d/metrics.txt")
    missed=$(awk '$1=="switchboard_cti_events_missed_total"{print $2}' "$d/metrics.txt")
    hold=$(grep '^hold:' "$d/hold.out" 2>/dev/null || true)
    python3 "$H" tag "$WORK/results.jsonl" round="$1" clients="$2" subscribe="$SUBSCRIBE" \
        delivered="${delivered:-0}" missed="${missed:-0}" \
        hold_events="$(awk '{for(i=1;i<NF;i++) if($i=="events") print $(i+1)}' <<<"$hold")" \
        hold_p50="$(awk '{for(i=1;i<NF;i++) if($i=="p50") print $(i+1)}' <<<"$hold")" \
        hold_p99="$(awk '{for(i=1;i<NF;i++) if($i=="p99") print $(i+1)}' <<<"$hold")"
}

echo "setup_latency.sh: $ROUNDS rounds x (0, $CLIENTS CTI clients); each $CALLS calls at $RATE/s" \
    "to queue 200, ${#AGENT_IDS[@]} agents talking $TALK ms; SIPp $(sipp -v 2>&1 | grep -o 'v[0-9.]*' | head -1);" \
    "$(nproc) CPUs; ulimit -n $(ulimit -n)"
python3 "$C" ports-free "$PORT_A" "$PORT_G" "$PORT_C" || exit 2
python3 "$H" tcp-free "$PORT_W" || exit 2
for ((r = 1; r <= ROUNDS; r++)); do
    run_one "$r" 0
    run_one "$r" "$CLIENTS"
done
python3 "$H" summary "$WORK/results.jsonl"
[ "$KEEP" = 1 ] || cat "$WORK/results.jsonl"
exit "$status"
