#!/usr/bin/env python3
"""Helpers for bench/cti_fanout/setup_latency.sh (Python 3 standard library only).

  setup_latency.py tcp-free PORT               exit 1 when 127.0.0.1:PORT (TCP) is taken
  setup_latency.py metrics PORT OUT            GET /metrics of the control plane, saved to OUT
  setup_latency.py tag RESULTS KEY=VALUE...    adds fields to the last JSON line of RESULTS
  setup_latency.py summary RESULTS             the table: per run and per client count

The per-call numbers come from bench/contact_center/cc.py (its `report`).
"""

import json
import os
import socket
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "calls"))
import calls  # noqa: E402  (bench/calls/calls.py)

IP = "127.0.0.1"
COUNTERS = ("switchboard_cti_events_delivered_total", "switchboard_cti_events_missed_total",
            "switchboard_cti_clients")


def tcp_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((IP, int(port)))
    except OSError as e:
        print(f"TCP {IP}:{port} is in use ({e.strerror}); pick another with --ports", file=sys.stderr)
        sys.exit(1)
    finally:
        s.close()


def metrics(port, out):
    with urllib.request.urlopen(f"http://{IP}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    with open(out, "w") as f:
        f.write(text)
    vals = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        if k.split("{")[0] in COUNTERS:
            vals[k] = float(v)
    print("  /metrics: " + " ".join(f"{k}={v:g}" for k, v in sorted(vals.items())))


def tag(path, kv):
    lines = open(path).read().splitlines()
    last = json.loads(lines[-1])
    for k, v in kv:
        try:
            last[k] = json.loads(v)
        except ValueError:
            last[k] = v
    lines[-1] = json.dumps(last)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def ms(v):
    return "-" if v is None else f"{v * 1000:.2f}"


def summary(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    print("\n| round | CTI clients | calls | lost | INVITE->200 p50 / p99 ms | INVITE->agent's phone p50 / p99 / max ms"
          " | INVITE->agent's 200 p50 / p99 ms | CTI events delivered | missed | hold: events, latency p50 / p99 ms |")
    print("|---:|---:|---:|---:|---|---|---|---:|---:|---|")
    for r in runs:
        a, o, s = r["answer_p"], r["offer_p"], r["agent_answer_p"]
        hold = "-"
        if r.get("clients"):
            hold = f"{r.get('hold_events', '?')}, {r.get('hold_p50', '?')} / {r.get('hold_p99', '?')}"
        print(f"| {r.get('round')} | {r.get('clients')} | {r['calls']} | {r['lost']} "
              f"| {ms(a['50'] if '50' in a else a.get(50))} / {ms(a.get('99', a.get(99)))} "
              f"| {ms(o.get('50', o.get(50)))} / {ms(o.get('99', o.get(99)))} / {ms(o.get('100', o.get(100)))} "
              f"| {ms(s.get('50', s.get(50)))} / {ms(s.get('99', s.get(99)))} "
              f"| {r.get('delivered', 0):g} | {r.get('missed', 0):g} | {hold} |")
    # Per client count: all calls' p50/p99 pooled is not possible from the
    # percentiles, so report the median over rounds of each percentile.
    by = {}
    for r in runs:
        by.setdefault(r.get("clients"), []).append(r)
    if 0 not in by or len(by) < 2:
        return 0
    print()
    base = by[0]

    def med(rs, key, p):
        vals = sorted(x[key].get(str(p), x[key].get(p)) for x in rs)
        return vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2

    for key, name in (("offer_p", "INVITE -> INVITE at the agent's phone (call set-up through the ACD)"),
                      ("answer_p", "INVITE -> the appliance's 200 to the caller"),
                      ("agent_answer_p", "INVITE -> the agent's 200 (speed of answer)")):
        print(f"{name}:")
        for n, rs in sorted(by.items()):
            p50, p99 = med(rs, key, 50), med(rs, key, 99)
            line = f"  {n:5} CTI clients: p50 {ms(p50)} ms  p99 {ms(p99)} ms"
            if n != 0:
                b50, b99 = med(base, key, 50), med(base, key, 99)
                line += f"   ratio with/without: p50 {p50 / b50:.2f}x  p99 {p99 / b99:.2f}x"
            print(line)
    return 0


def main():
    if len(sys.argv) < 2:
        calls.die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tcp-free":
        tcp_free(args[0])
    elif cmd == "metrics":
        metrics(args[0], args[1])
    elif cmd == "tag":
        tag(args[0], [x.split("=", 1) for x in args[1:]])
    elif cmd == "summary":
        sys.exit(summary(args[0]))
    else:
        calls.die(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
