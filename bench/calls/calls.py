#!/usr/bin/env python3
"""Helpers for bench/calls/run.sh (Python 3 standard library only).

  calls.py ports-free PORT...           exit 1 naming a UDP port on 127.0.0.1 in use
  calls.py probe PORT SECONDS           OPTIONS to 127.0.0.1:PORT until any SIP answer
  calls.py quiet MAX_S CPUS             wait (<= MAX_S) for a second with < CPUS busy
  calls.py cpu KIND:PID ... [udp:P,..]  CPU snapshot (JSON on stdout); KIND is
                                        threads (one process, per thread),
                                        tree (a process and its child processes),
                                        proc (one process); udp: drop counters
  calls.py pick ATTEMPT.json...         the attempt with the least foreign load
  calls.py report KEY=VALUE...          one run's numbers: prints them, appends a JSON
                                        line; exit 0 ok, 1 failed calls, 3 no failures
                                        but SIPp did not keep the offered rate
  calls.py summary RESULTS.jsonl        the closing table (ratio, sweep verdict)

CPU figures are utime+stime from /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat
in clock ticks (getconf CLK_TCK, 100 here): the kernel scales the sampled
user/system split to the task's exact run time, so the sum is exact to a tick.
"""

import json
import os
import random
import socket
import sys
import time

IP = "127.0.0.1"
TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"calls.py: {msg}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------- ports, probe

def ports_free(ports):
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((IP, int(p)))
        except OSError as e:
            print(f"UDP {IP}:{p} is in use ({e.strerror}); pick other ports with --ports",
                  file=sys.stderr)
            sys.exit(1)
        finally:
            s.close()


def probe(port, seconds):
    """Sends OPTIONS from an ephemeral loopback port until a SIP response
    arrives (any status: the appliance answers 200, kamailio.cfg 404)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((IP, 0))
    lport = s.getsockname()[1]
    s.settimeout(0.2)
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        branch = "z9hG4bK-probe-%d-%d" % (random.getrandbits(32), n)
        msg = (
            f"OPTIONS sip:{IP}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {IP}:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{IP}>;tag=p{n}\r\n"
            f"To: <sip:{IP}:{port}>\r\n"
            f"Call-ID: probe-{random.getrandbits(48)}@{IP}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (IP, int(port)))
        try:
            data, _ = s.recvfrom(65535)
            if data.startswith(b"SIP/2.0 "):
                return 0
        except (socket.timeout, ConnectionRefusedError):
            time.sleep(0.05)
    return 1


# ------------------------------------------------------------------------ CPU

def _stat(path):
    """(comm, ppid, utime+stime ticks) from a /proc stat file, or None."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    lp, rp = raw.index("("), raw.rindex(")")
    comm = raw[lp + 1:rp]
    rest = raw[rp + 2:].split()
    # rest[0] = state (field 3); ppid field 4; utime 14; stime 15
    return comm, int(rest[1]), int(rest[11]) + int(rest[12])


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(f"/proc/{d}/stat")
            if st and st[1] == pid:
                kids.append(int(d))
    return kids


def busy_ticks():
    """Busy clock ticks of all CPUs together (user, nice, system, irq,
    softirq, steal) and the number of CPUs, from /proc/stat."""
    ncpu = 0
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                total = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            elif line.startswith("cpu"):
                ncpu += 1
    return total, ncpu


def udp_drops(ports):
    """{port: drops} for UDP sockets bound on 127.0.0.1 (/proc/net/udp)."""
    want = {f"0100007F:{int(p):04X}": str(p) for p in ports}
    out = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            c = line.split()
            if c[1] in want:
                out[want[c[1]]] = out.get(want[c[1]], 0) + int(c[12])
    return out


def quiet(max_s, threshold):
    """Waits until one second passes with fewer than `threshold` CPUs busy
    (everything on the box: builds, other benchmarks), at most max_s seconds.
    Prints the last sample; exit 0 when quiet."""
    deadline = time.monotonic() + max_s
    while True:
        b0, _ = busy_ticks()
        time.sleep(1.0)
        b1, _ = busy_ticks()
        load = (b1 - b0) / TCK
        if load < threshold:
            print(f"{load:.2f}")
            return 0
        if time.monotonic() >= deadline:
            print(f"{load:.2f}")
            return 1


def cpu_snapshot(specs):
    """{label: {unit: ticks}} where unit is a thread or process id, plus
    "_busy" (all CPUs' busy ticks) and "_udp" (drops per port, if asked)."""
    out = {"_busy": busy_ticks()[0]}
    for spec in specs:
        if spec.startswith("udp:"):
            out["_udp"] = udp_drops(spec[4:].split(","))
            continue
        kind, pid = spec.split(":")
        pid = int(pid)
        units = {}
        if kind == "threads":
            for tid in os.listdir(f"/proc/{pid}/task"):
                st = _stat(f"/proc/{pid}/task/{tid}/stat")
                if st:
                    units[f"{tid} {st[0]}"] = st[2]
        elif kind == "tree":
            for p in [pid] + _children(pid):
                st = _stat(f"/proc/{p}/stat")
                if st:
                    units[f"{p} {st[0]}"] = st[2]
        elif kind == "proc":
            st = _stat(f"/proc/{pid}/stat")
            if st:
                units[f"{pid} {st[0]}"] = st[2]
        else:
            die(f"unknown cpu kind {kind}")
        if not units:
            die(f"no such process {pid}")
        out[spec] = units
    return out


def cpu_delta(before, after, spec):
    """(total seconds, busiest unit seconds, units) between two snapshots.
    A unit present only at the end (a process forked during the run) counts
    from zero."""
    b, a = before.get(spec, {}), after.get(spec, {})
    deltas = {u: (a[u] - b.get(u, 0)) / TCK for u in a}
    total = sum(deltas.values())
    busiest = max(deltas.values()) if deltas else 0.0
    return total, busiest, len(deltas)


# ------------------------------------------------------------- SIPp outputs

def sipp_final_stats(path):
    """Last line of a SIPp -trace_stat file as {column: value}."""
    try:
        with open(path) as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head = lines[0].rstrip(";").split(";")
    vals = lines[-1].rstrip(";").split(";")
    return dict(zip(head, vals))


def _int(stats, key):
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


def shortmsg(path):
    """From SIPp -trace_shortmsg (tab-separated: date, time, epoch, S/R,
    Call-ID, 'CSeq:N METHOD', first line): per call the first INVITE sent and
    the first 200 to it received; the final response codes to INVITEs."""
    inv, ok = {}, {}
    finals = {}
    seen_final = set()
    try:
        f = open(path, errors="replace")
    except OSError:
        return [], [], {}
    with f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                continue
            try:
                t = float(parts[2])
            except ValueError:
                continue
            d, cid, cseq, first = parts[3], parts[4], parts[5], parts[6]
            if not cseq.endswith(" INVITE"):
                continue
            if d == "S" and first.startswith("INVITE "):
                inv.setdefault(cid, t)
            elif d == "R" and first.startswith("SIP/2.0 "):
                code = first[8:11]
                if code >= "200" and cid not in seen_final:
                    seen_final.add(cid)
                    finals[code] = finals.get(code, 0) + 1
                if code == "200":
                    ok.setdefault(cid, t)
    lat = sorted(ok[c] - inv[c] for c in ok if c in inv)
    starts = sorted(inv.values())
    return lat, starts, finals


def pct(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


# ------------------------------------------------------------------- report

def us(v, unit=" µs"):
    return "-" if v is None else f"{v:.1f}{unit}"


def report(a):
    before = json.load(open(a["cpu0"]))
    after = json.load(open(a["cpu1"]))
    wall = float(a["t1"]) - float(a["t0"])
    rate = float(a["rate"])
    calls = int(a["calls"])
    tcpus = int(a["target_ncpus"])
    scpus = int(a["sipp_ncpus"])
    pinned = a["pinned"] == "1"

    t_total, t_busiest, t_units = cpu_delta(before, after, a["target_spec"])
    uas_total, _, _ = cpu_delta(before, after, a["uas_spec"])
    try:
        lines = open(a["uac_times"]).read().split("\n")
        u_s, s_s = lines[1].split()
        conv = lambda s: int(s.split("m")[0]) * 60 + float(s.split("m")[1].rstrip("s"))
        uac_total = conv(u_s) + conv(s_s)
    except (OSError, IndexError, ValueError):
        uac_total = float("nan")

    st = sipp_final_stats(a["uac_stat"])
    ust = sipp_final_stats(a["uas_stat"])
    attempted = _int(st, "OutgoingCall(C)")
    succeeded = _int(st, "SuccessfulCall(C)")
    failed = _int(st, "FailedCall(C)")
    retrans = _int(st, "Retransmissions(C)")
    uas_failed = _int(ust, "FailedCall(C)")
    uas_retrans = _int(ust, "Retransmissions(C)")
    lat, starts, finals = shortmsg(a["uac_short"])
    if attempted == 0:
        attempted = len(starts)
    # Call creation rate SIPp achieved: calls started / span of their INVITEs.
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 and starts[-1] > starts[0] else 0.0
    kept_rate = achieved >= 0.97 * rate and attempted >= calls
    # Failures counted by SIPp, or calls it never finished (uac killed/timeout).
    if int(a["uac_rc"]) not in (0, 1) and failed == 0:
        failed = max(0, calls - succeeded)

    per_call = lambda s: round(s / succeeded * 1e6, 1) if succeeded and s == s else None
    util = lambda s: s / wall if wall > 0 else 0.0

    # CPU used on the box by anything but the three processes measured:
    # tick-sampled /proc/stat busy time minus their exact CPU time.
    ours = t_total + uas_total + (0.0 if uac_total != uac_total else uac_total)
    foreign = max(0.0, (after["_busy"] - before["_busy"]) / TCK - ours) / wall if wall > 0 else 0.0
    ports = a["ports"].split(",")
    drops = {name: after.get("_udp", {}).get(p, 0) - before.get("_udp", {}).get(p, 0)
             for name, p in zip(("target", "uas", "uac"), ports)}

    # Saturation: a group of processes that shares CPUs used >= 90 % of them,
    # or one single-threaded unit (SIPp, one appliance shard, one Kamailio
    # worker) used >= 90 % of a core; or a receiver fell so far behind that
    # its socket queue overflowed (drops), which SIPp's bursts cause before
    # the average reaches 90 %.
    sat = []
    def mark(name, cpu_full):
        why = [w for w, c in (("cpu", cpu_full), ("drops", drops.get(name, 0) > 0)) if c]
        if why:
            sat.append(f"{name} ({'+'.join(why)})")
    mark("target", util(t_total) >= 0.9 * tcpus or util(t_busiest) >= 0.9)
    mark("uac", util(uac_total) >= 0.9)
    mark("uas", util(uas_total) >= 0.9)
    if pinned and scpus == 1 and util(uac_total + uas_total) >= 0.9 \
            and not any(x.startswith(("uac", "uas")) for x in sat):
        sat.append("sipp cpu (uac+uas)")

    res = {
        "target": a["target"], "rate": rate, "calls": calls, "hold_ms": int(a["hold_ms"]),
        "wall_s": round(wall, 3), "attempted": attempted, "succeeded": succeeded,
        "failed": failed, "uac_rc": int(a["uac_rc"]), "retransmissions_uac": retrans,
        "uas_failed": uas_failed, "retransmissions_uas": uas_retrans,
        "invite_finals": finals, "achieved_cps": round(achieved, 1), "kept_rate": kept_rate,
        "target_cpu_s": round(t_total, 3), "target_busiest_unit_s": round(t_busiest, 3),
        "target_units": t_units, "target_ncpus": tcpus,
        "uac_cpu_s": round(uac_total, 3), "uas_cpu_s": round(uas_total, 3),
        "target_us_per_call": per_call(t_total),
        "uac_us_per_call": per_call(uac_total),
        "uas_us_per_call": per_call(uas_total),
        "latency_ms": {k: (None if v is None else round(v * 1000, 3)) for k, v in
                       (("p50", pct(lat, 50)), ("p90", pct(lat, 90)), ("p99", pct(lat, 99)),
                        ("max", lat[-1] if lat else None))},
        "latency_n": len(lat), "saturated": sat, "pinned": pinned,
        "foreign_cores": round(foreign, 2), "udp_drops": drops,
    }
    if failed or uas_failed or not succeeded:
        res["status"] = 1
    else:
        res["status"] = 0 if kept_rate else 3
    with open(a["out"], "w") as f:
        f.write(json.dumps(res) + "\n")

    L = res["latency_ms"]
    fin = ", ".join(f"{c}×{n}" for c, n in sorted(finals.items())) or "none"
    print(f"  calls       attempted {attempted}, succeeded {succeeded}, failed {failed}"
          f" (uas failed {uas_failed}); INVITE final responses: {fin}")
    print(f"  rate        offered {rate:g} cps, SIPp achieved {achieved:.1f} cps"
          f"{'' if kept_rate else '  <-- SIPp did not keep the rate'};"
          f" retransmissions uac {retrans}, uas {uas_retrans}")
    print(f"  CPU s       target {t_total:.2f} over {t_units} thread(s)/process(es)"
          f" ({util(t_total) * 100:.0f}% of a core, busiest one {util(t_busiest) * 100:.0f}%;"
          f" {tcpus} CPU(s) allowed) | SIPp uac {uac_total:.2f} ({util(uac_total) * 100:.0f}%),"
          f" uas {uas_total:.2f} ({util(uas_total) * 100:.0f}%) | window {wall:.2f} s")
    print(f"  CPU/call    target {us(res['target_us_per_call'])}"
          f" | SIPp uac {us(res['uac_us_per_call'])}, uas {us(res['uas_us_per_call'])}"
          f"{'' if succeeded else '  (no call succeeded)'}")
    lm = lambda k: "-" if L[k] is None else f"{L[k]:.2f}"
    print(f"  setup ms    INVITE→200 p50 {lm('p50')}  p90 {lm('p90')}  p99 {lm('p99')}"
          f"  max {lm('max')}  (n={len(lat)})")
    print(f"  saturated   {', '.join(sat) if sat else 'nothing (all < 90% of a core, no drops)'}")
    print(f"  UDP drops   target {drops['target']}, uas {drops['uas']}, uac {drops['uac']}"
          f" (socket receive queue full) | other load on the box {foreign:.2f} CPUs"
          f"{'  <-- disturbed' if foreign > float(a['foreign_max']) else ''}")
    return res["status"]


def pick(paths):
    """Prints the attempt with the least foreign load (first on ties)."""
    best, best_f = None, None
    for p in paths:
        try:
            r = json.loads(open(p).read())
        except (OSError, ValueError):
            continue
        if best is None or r["foreign_cores"] < best_f:
            best, best_f = p, r["foreign_cores"]
    if best is None:
        die("no attempt produced a result")
    print(best)


# ------------------------------------------------------------------ summary

def summary(path, sweep):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    if not rows:
        print("no results")
        return 1
    print()
    print("| target | cps offered | achieved | attempted | ok | failed uac / uas | target CPU µs/call |"
          " uac µs/call | uas µs/call | setup p50 / p90 / p99 / max ms | saturated | other load (CPUs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        L = r["latency_ms"]
        lat = " / ".join("-" if L[k] is None else f"{L[k]:.2f}" for k in ("p50", "p90", "p99", "max"))
        print(f"| {r['target']} | {r['rate']:g} | {r['achieved_cps']:.0f} | {r['attempted']} |"
              f" {r['succeeded']} | {r['failed']} / {r['uas_failed']} | {us(r['target_us_per_call'], '')} |"
              f" {us(r['uac_us_per_call'], '')} | {us(r['uas_us_per_call'], '')} | {lat} |"
              f" {', '.join(r['saturated']) or '-'} | {r['foreign_cores']:.2f} |")
    bad = any(r["failed"] or r["uas_failed"] or not r["succeeded"] for r in rows)

    # Ratio at each rate both targets ran.
    by = {}
    for r in rows:
        by.setdefault(r["rate"], {})[r["target"]] = r
    print()
    for rate, d in sorted(by.items()):
        if "appliance" in d and "kamailio" in d:
            a, k = d["appliance"], d["kamailio"]
            clean = not (a["failed"] or a["uas_failed"] or k["failed"] or k["uas_failed"]) \
                and a["succeeded"] and k["succeeded"]
            if a["target_us_per_call"] and k["target_us_per_call"]:
                ratio = a["target_us_per_call"] / k["target_us_per_call"]
                verdict = "meets" if ratio <= 0.5 else "misses"
                print(f"@ {rate:g} cps: CPU per call appliance / kamailio = "
                      f"{a['target_us_per_call']:.1f} / {k['target_us_per_call']:.1f} µs = {ratio:.2f}"
                      f" ({verdict} the ≤ 0.5 target{'' if clean else '; runs had failed calls'})")
            else:
                print(f"@ {rate:g} cps: no ratio (a side completed no call)")

    if sweep:
        print()
        for tgt in sorted({r["target"] for r in rows}):
            rs = sorted((r for r in rows if r["target"] == tgt), key=lambda r: r["rate"])
            good = [r for r in rs if not (r["failed"] or r["uas_failed"]) and r["kept_rate"] and r["succeeded"]]
            best = good[-1]["rate"] if good else None
            first_sat = next((r for r in rs if r["saturated"]), None)
            last = rs[-1]
            why = []
            if last["failed"] or last["uas_failed"]:
                why.append(f"{last['failed'] + last['uas_failed']} failed calls")
            if not last["kept_rate"]:
                why.append(f"SIPp achieved {last['achieved_cps']:.0f} of {last['rate']:g} cps")
            print(f"{tgt}: highest rate with 0 failed calls and the rate kept: "
                  f"{'none' if best is None else f'{best:g} cps'}; sweep stopped at {last['rate']:g} cps"
                  f" ({', '.join(why) or 'end of the rate list'}); first to saturate (≥ 90% CPU or socket drops): "
                  + (f"{', '.join(first_sat['saturated'])} at {first_sat['rate']:g} cps" if first_sat else "nothing"))
    return 1 if bad else 0


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports-free":
        ports_free(args)
    elif cmd == "probe":
        sys.exit(probe(int(args[0]), float(args[1])))
    elif cmd == "cpu":
        json.dump(cpu_snapshot(args), sys.stdout)
    elif cmd == "report":
        kv = dict(x.split("=", 1) for x in args)
        sys.exit(report(kv))
    elif cmd == "quiet":
        sys.exit(quiet(float(args[0]), float(args[1])))
    elif cmd == "pick":
        pick(args)
    elif cmd == "summary":
        sys.exit(summary(args[0], len(args) > 1 and args[1] == "sweep"))
    else:
        die(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
