#!/usr/bin/env python3
"""Helpers for bench/media/run.sh (Python 3 standard library only).

  media.py ports-free SPEC...            exit 1 naming a UDP port in use; SPEC is PORT
                                         or LOW-HIGH (every port of the range)
  media.py quiet MAX_S CPUS              wait (<= MAX_S) for a second with < CPUS busy
  media.py probe PORT SECONDS            SIP OPTIONS to 127.0.0.1:PORT until any answer
  media.py plan KIND STREAMS GEN_BASE OUT [RELAY_BASE]
                                         a plan for rtpgen: KIND raw (the caller sends to
                                         fwd socket 2k, the callee to 2k+1, fwd sockets
                                         at RELAY_BASE + 2j) or direct (no relay)
  media.py ng-ping NG_PORT SECONDS       rtpengine ng "ping" until "pong"
  media.py rtpengine-setup NG_PORT STREAMS GEN_BASE PLAN STATE
                                         offer + answer per call; the plan from the SDPs
  media.py rtpengine-teardown NG_PORT STATE
                                         delete every call of STATE
  media.py sip-calls KEY=VALUE...        the appliance's calls: REGISTER the callee, one
                                         INVITE per call, the plan from the SDPs; touches
                                         READY, then holds the calls until SIGTERM and
                                         sends BYE. Exit 2 when the appliance does not
                                         anchor media (its SDP names our own ports).
  media.py report KEY=VALUE...           one run's block and JSON line; exit 0 ok,
                                         1 failed (loss over the limit, no packets, ...)
  media.py pick ATTEMPT.json...          the attempt with the least foreign load
  media.py summary RESULTS.jsonl MAX_LOSS_PCT
                                         the closing table and the ratios

Every port is on 127.0.0.1. A call is two streams: stream 2k is the caller's
(rtpgen socket GEN_BASE + 4k), stream 2k+1 the callee's (GEN_BASE + 4k + 2);
each is received at the other's socket. Plan line: BIND_PORT DEST_IP
DEST_PORT PEER (see rtpgen.c).
"""

import hashlib
import json
import os
import random
import re
import signal
import socket
import sys
import time

IP = "127.0.0.1"
TCK = os.sysconf("SC_CLK_TCK")


def die(msg, code=2):
    print(f"media.py: {msg}", file=sys.stderr)
    sys.exit(code)


# --------------------------------------------------------------- ports, quiet

def _bound_udp_ports():
    """{port: 'ip:port'} of every bound UDP socket (v4 and v6) on the box."""
    out = {}
    for path, v6 in (("/proc/net/udp", False), ("/proc/net/udp6", True)):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            c = line.split()
            if len(c) < 2:
                continue
            addr, port = c[1].split(":")
            port = int(port, 16)
            if v6:
                out.setdefault(port, f"[{addr}]:{port}")
            else:
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                out.setdefault(port, f"{ip}:{port}")
    return out


def ports_free(specs):
    """Only sockets that would clash with 127.0.0.1:PORT count: 127.0.0.1,
    0.0.0.0 and any IPv6 address (a dual-stack wildcard)."""
    bound = _bound_udp_ports()
    for spec in specs:
        lo, _, hi = spec.partition("-")
        lo = int(lo)
        hi = int(hi) if hi else lo
        for p in range(lo, hi + 1):
            who = bound.get(p)
            if who and (who.startswith(("127.0.0.1:", "0.0.0.0:", "["))):
                what = f"port {p}" if lo == hi else f"port {p} of the range {lo}-{hi}"
                print(f"UDP {what} is in use ({who}); pick other ports (see --help)",
                      file=sys.stderr)
                sys.exit(1)


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def quiet(max_s, threshold):
    deadline = time.monotonic() + max_s
    while True:
        b0 = busy_ticks()
        time.sleep(1.0)
        load = (busy_ticks() - b0) / TCK
        if load < threshold:
            print(f"{load:.2f}")
            return 0
        if time.monotonic() >= deadline:
            print(f"{load:.2f}")
            return 1


def probe(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((IP, 0))
    lport = s.getsockname()[1]
    s.settimeout(0.2)
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        msg = (
            f"OPTIONS sip:{IP}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {IP}:{lport};branch=z9hG4bK-probe-{random.getrandbits(32)}-{n};rport\r\n"
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


# ---------------------------------------------------------------------- plans

def gen_port(base, stream):
    """rtpgen's socket for a stream: even ports, 2 apart (RTCP would be +1)."""
    return base + 2 * stream


def write_plan(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# BIND_PORT DEST_IP DEST_PORT PEER\n")
        for ln in lines:
            f.write(" ".join(str(x) for x in ln) + "\n")
    os.replace(tmp, path)


def plan(kind, streams, gen_base, out, relay_base=None):
    lines = []
    for s in range(streams):
        peer = s ^ 1
        if kind == "raw":
            dest = relay_base + 2 * s          # fwd socket s: pair s//2, side s%2
        elif kind == "direct":
            dest = gen_port(gen_base, peer)
        else:
            die(f"unknown plan kind {kind}")
        lines.append((gen_port(gen_base, s), IP, dest, peer))
    write_plan(out, lines)


# ------------------------------------------------------------------------ SDP

def sdp_offer(port, sess):
    return (
        "v=0\r\n"
        f"o=bench {sess} {sess} IN IP4 {IP}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {IP}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def sdp_audio(sdp):
    """(ip, port) of the first audio stream: media-level c= over session-level."""
    ip, port, in_audio = None, None, False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            if port is not None:
                break
            f = line[2:].split()
            in_audio = f and f[0] == "audio"
            if in_audio:
                port = int(f[1])
        elif line.startswith("c=") and (port is None or in_audio):
            f = line[2:].split()
            if len(f) >= 3:
                ip = f[2].split("/")[0]
    if port is None or ip is None:
        raise ValueError("no audio m= line or no c= address in the SDP")
    return ip, port


# ------------------------------------------------------------- rtpengine (ng)

def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(v) for v in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(benc(k) + benc(x[k]) for k in sorted(x)) + b"e"
    raise TypeError(type(x))


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k.decode()] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


class Ng:
    """rtpengine's ng control protocol: 'COOKIE bencoded-dict' over UDP."""

    def __init__(self, port):
        self.addr = (IP, int(port))
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((IP, 0))
        self.n = 0

    def call(self, cmd, timeout=2.0, tries=3):
        self.n += 1
        cookie = f"{os.getpid()}_{self.n}".encode()
        data = cookie + b" " + benc(cmd)
        for _ in range(tries):
            self.s.sendto(data, self.addr)
            self.s.settimeout(timeout)
            end = time.monotonic() + timeout
            try:
                while time.monotonic() < end:
                    raw, _ = self.s.recvfrom(65535)
                    ck, _, body = raw.partition(b" ")
                    if ck == cookie:
                        res, _ = bdec(body)
                        return res
            except (socket.timeout, ConnectionRefusedError):
                continue
        raise TimeoutError(f"no answer from rtpengine ng on {self.addr[0]}:{self.addr[1]}"
                           f" to {cmd['command']}")


def ng_ping(port, seconds):
    ng = Ng(port)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            r = ng.call({"command": "ping"}, timeout=0.3, tries=1)
            if r.get("result") == b"pong":
                return 0
        except (TimeoutError, ValueError):
            time.sleep(0.1)
    return 1


def rtpengine_setup(ng_port, streams, gen_base, plan_path, state_path):
    ng = Ng(ng_port)
    calls = []
    lines = []
    tag = random.getrandbits(32)
    for k in range(streams // 2):
        cid = f"bench-media-{tag:08x}-{k}"
        ft, tt = f"caller{k}", f"callee{k}"
        pc, pe = gen_port(gen_base, 2 * k), gen_port(gen_base, 2 * k + 1)
        r = ng.call({"command": "offer", "call-id": cid, "from-tag": ft,
                     "sdp": sdp_offer(pc, 1000 + k), "ICE": "remove"})
        if r.get("result") != b"ok":
            die(f"rtpengine refused the offer of call {k}: {r.get('error-reason', r)}")
        b_ip, b_port = sdp_audio(r["sdp"].decode())      # where the callee sends
        r = ng.call({"command": "answer", "call-id": cid, "from-tag": ft, "to-tag": tt,
                     "sdp": sdp_offer(pe, 2000 + k), "ICE": "remove"})
        if r.get("result") != b"ok":
            die(f"rtpengine refused the answer of call {k}: {r.get('error-reason', r)}")
        a_ip, a_port = sdp_audio(r["sdp"].decode())      # where the caller sends
        if a_port in (pc, pe) or b_port in (pc, pe):
            die(f"rtpengine's SDP for call {k} names our own port (no relay?)")
        calls.append({"call-id": cid, "from-tag": ft, "to-tag": tt})
        lines.append((pc, a_ip, a_port, 2 * k + 1))
        lines.append((pe, b_ip, b_port, 2 * k))
    with open(state_path, "w") as f:
        json.dump(calls, f)
    write_plan(plan_path, lines)
    print(f"{len(calls)} calls through rtpengine, e.g. caller {lines[0][0]} -> "
          f"{lines[0][1]}:{lines[0][2]}, callee {lines[1][0]} -> {lines[1][1]}:{lines[1][2]}")


def rtpengine_teardown(ng_port, state_path):
    ng = Ng(ng_port)
    try:
        calls = json.load(open(state_path))
    except (OSError, ValueError):
        return 0
    bad = 0
    for c in calls:
        try:
            r = ng.call({"command": "delete", "call-id": c["call-id"], "from-tag": c["from-tag"]},
                        timeout=1.0, tries=2)
            bad += r.get("result") != b"ok"
        except TimeoutError:
            bad += 1
    if bad:
        print(f"rtpengine: {bad} of {len(calls)} deletes failed", file=sys.stderr)
    return 0


# -------------------------------------------------------- SIP (the appliance)

def parse_sip(data):
    """(first line, [(name lower, value)], body) or None."""
    try:
        text = data.decode("utf-8", "replace")
    except Exception:
        return None
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        return None
    lines = head.split("\r\n")
    hdrs = []
    for ln in lines[1:]:
        if ln[:1] in (" ", "\t") and hdrs:
            hdrs[-1] = (hdrs[-1][0], hdrs[-1][1] + " " + ln.strip())
            continue
        name, _, val = ln.partition(":")
        hdrs.append((name.strip().lower(), val.strip()))
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
               "l": "content-length", "c": "content-type"}
    hdrs = [(compact.get(n, n), v) for n, v in hdrs]
    return lines[0], hdrs, body


def hget(hdrs, name):
    for n, v in hdrs:
        if n == name:
            return v
    return None


def hall(hdrs, name):
    return [v for n, v in hdrs if n == name]


def tag_of(v):
    m = re.search(r";\s*tag=([^;>\s]+)", v or "")
    return m.group(1) if m else None


def uri_of(v):
    m = re.search(r"<([^>]+)>", v or "")
    return m.group(1) if m else (v or "").split(";")[0].strip()


class SipError(Exception):
    pass


class Sip:
    """The appliance's two parties: a caller (UAC socket) and the registered
    callee (UAS socket). Calls are set up one at a time, so the B2BUA's
    outgoing INVITE that arrives while call k is pending belongs to call k."""

    def __init__(self, a):
        self.target = (IP, int(a["sip_port"]))
        self.uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.uac.bind((IP, int(a["uac_port"])))
        self.uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.uas.bind((IP, int(a["uas_port"])))
        for s in (self.uac, self.uas):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.user = a.get("user", "1001")
        self.password = a.get("password", "pw" + self.user)
        self.caller = a.get("caller", "1002")
        self.domain = a.get("domain", "switchboard.local")
        self.timeout = float(a.get("timeout", "5"))
        self.tag = f"{random.getrandbits(32):08x}"
        self.n = 0
        self.uas_calls = {}     # B-leg Call-ID -> {"sdp": its offer, "resp": our 200}
        self.our_sdp = {}       # Call-ID (either leg) -> the SDP we sent
        self.log = []

    def branch(self):
        self.n += 1
        return f"z9hG4bK-{self.tag}-{self.n}"

    def send(self, sock, text, addr=None):
        sock.sendto(text.encode(), addr or self.target)

    def recv(self, until):
        """Next (socket name, first line, headers, body, address) or None at
        `until`. Requests to the callee side are answered here."""
        import select
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.uac, self.uas], [], [], left)
            for sock in r:
                data, addr = sock.recvfrom(65535)
                m = parse_sip(data)
                if not m:
                    continue
                name = "uac" if sock is self.uac else "uas"
                return name, m[0], m[1], m[2], addr

    # -- responses to requests we receive
    def respond(self, sock, addr, first, hdrs, status, reason, body="", to_tag=None, contact=None):
        out = [f"SIP/2.0 {status} {reason}"]
        out += [f"Via: {v}" for v in hall(hdrs, "via")]
        out += [f"Record-Route: {v}" for v in hall(hdrs, "record-route")]
        out.append(f"From: {hget(hdrs, 'from')}")
        to = hget(hdrs, "to") or ""
        if to_tag and not tag_of(to):
            to += f";tag={to_tag}"
        out.append(f"To: {to}")
        out.append(f"Call-ID: {hget(hdrs, 'call-id')}")
        out.append(f"CSeq: {hget(hdrs, 'cseq')}")
        if contact:
            out.append(f"Contact: {contact}")
        if body:
            out.append("Content-Type: application/sdp")
        out.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(out) + "\r\n\r\n" + body
        sock.sendto(text.encode(), addr)
        return text

    def handle_request(self, name, first, hdrs, body, addr, answer_sdp=None):
        """Answers a request that reached one of our parties. Returns the SDP
        of a new INVITE to the callee, else None."""
        sock = self.uac if name == "uac" else self.uas
        method = first.split(" ", 1)[0]
        cid = hget(hdrs, "call-id")
        if method == "ACK":
            return None
        if method == "INVITE" and name == "uas" and not tag_of(hget(hdrs, "to")):
            known = self.uas_calls.get(cid)
            if known:                                   # a retransmission
                sock.sendto(known["resp"].encode(), addr)
                return None
            if answer_sdp is None:
                self.respond(sock, addr, first, hdrs, 486, "Busy Here (no call pending)",
                             to_tag="late")
                return None
            port = self.uas.getsockname()[1]
            contact = f"<sip:{self.user}@{IP}:{port}>"
            totag = f"uas{len(self.uas_calls)}"
            self.respond(sock, addr, first, hdrs, 180, "Ringing", to_tag=totag, contact=contact)
            resp = self.respond(sock, addr, first, hdrs, 200, "OK", body=answer_sdp,
                                to_tag=totag, contact=contact)
            self.uas_calls[cid] = {"sdp": body, "resp": resp}
            self.our_sdp[cid] = answer_sdp
            return body
        if method == "INVITE":                          # re-INVITE (session refresh)
            sdp = self.our_sdp.get(cid, "")
            port = sock.getsockname()[1]
            self.respond(sock, addr, first, hdrs, 200, "OK", body=sdp,
                         contact=f"<sip:{self.user}@{IP}:{port}>")
            return None
        # BYE, UPDATE, OPTIONS, INFO, NOTIFY...: 200
        self.respond(sock, addr, first, hdrs, 200, "OK")
        if method == "BYE":
            self.log.append(f"{name} got BYE for {cid}")
        return None

    def auth_header(self, challenge, method, uri):
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        alg = p.get("algorithm", "MD5").upper()
        h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}.get(alg)
        if h is None:
            raise SipError(f"cannot answer a {alg} digest challenge")
        H = lambda s: h(s.encode()).hexdigest()
        realm, nonce = p.get("realm", ""), p.get("nonce", "")
        ha1 = H(f"{self.user}:{realm}:{self.password}")
        ha2 = H(f"{method}:{uri}")
        parts = [f'username="{self.user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        qop = p.get("qop")
        if qop:
            cnonce, nc = f"{random.getrandbits(64):016x}", "00000001"
            resp = H(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            resp = H(f"{ha1}:{nonce}:{ha2}")
        parts += [f'response="{resp}"', f"algorithm={alg}"]
        if "opaque" in p:
            parts.append(f'opaque="{p["opaque"]}"')
        return "Digest " + ", ".join(parts)

    def register(self):
        port = self.uas.getsockname()[1]
        uri = f"sip:{self.domain}"
        cid = f"reg-{self.tag}@{IP}"
        auth = None
        for cseq in (1, 2):
            msg = (
                f"REGISTER {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {IP}:{port};branch={self.branch()};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{self.user}@{self.domain}>;tag=r{self.tag}\r\n"
                f"To: <sip:{self.user}@{self.domain}>\r\n"
                f"Call-ID: {cid}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{self.user}@{IP}:{port}>\r\n"
                "Expires: 3600\r\n"
                "User-Agent: bench-media\r\n"
                + (f"Authorization: {auth}\r\n" if auth else "")
                + "Content-Length: 0\r\n\r\n"
            )
            self.send(self.uas, msg)
            until = time.monotonic() + self.timeout
            while True:
                m = self.recv(until)
                if m is None:
                    raise SipError(f"no answer to REGISTER within {self.timeout:g} s")
                name, first, hdrs, body, addr = m
                if not first.startswith("SIP/2.0 ") or hget(hdrs, "call-id") != cid:
                    continue
                code = int(first[8:11])
                if code < 200:
                    continue
                if code == 200:
                    return
                if code in (401, 407) and cseq == 1:
                    chals = hall(hdrs, "www-authenticate") + hall(hdrs, "proxy-authenticate")
                    md5 = [c for c in chals if re.search(r"algorithm=\"?MD5\b", c, re.I)]
                    plain = [c for c in chals if "algorithm" not in c.lower()]
                    pick = (md5 or plain or chals or [None])[0]
                    if pick is None:
                        raise SipError(f"REGISTER got {code} without a challenge")
                    auth = self.auth_header(pick, "REGISTER", uri)
                    break
                raise SipError(f"REGISTER as {self.user} refused: {first}")

    def call(self, k, pc, pe):
        """One call: INVITE from the caller (SDP port pc), the B2BUA's INVITE
        to the callee answered with SDP port pe. Returns the dialog and the
        SDPs both parties saw."""
        uport = self.uac.getsockname()[1]
        cid = f"media-{self.tag}-{k}@{IP}"
        ftag = f"c{self.tag}{k}"
        ruri = f"sip:{self.user}@{self.domain}"
        br = self.branch()
        offer = sdp_offer(pc, 1000 + k)
        self.our_sdp[cid] = offer
        head = (
            f"Via: SIP/2.0/UDP {IP}:{uport};branch={br};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.caller}@{self.domain}>;tag={ftag}\r\n"
            f"To: <sip:{self.user}@{self.domain}>\r\n"
            f"Call-ID: {cid}\r\n"
        )
        self.send(self.uac, (
            f"INVITE {ruri} SIP/2.0\r\n" + head + "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:{self.caller}@{IP}:{uport}>\r\n"
            "Subject: bench media\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(offer)}\r\n\r\n{offer}"))
        answer = sdp_offer(pe, 2000 + k)
        b_sdp = None
        until = time.monotonic() + self.timeout
        seen = []
        while True:
            m = self.recv(until)
            if m is None:
                raise SipError(f"call {k}: no 200 to the INVITE within {self.timeout:g} s"
                               f" (seen: {', '.join(seen) or 'nothing'})")
            name, first, hdrs, body, addr = m
            if not first.startswith("SIP/2.0 "):
                seen.append(f"{name} {first.split(' ', 1)[0]}")
                got = self.handle_request(name, first, hdrs, body, addr,
                                          answer_sdp=answer if b_sdp is None else None)
                if got is not None:
                    b_sdp = got
                continue
            if name != "uac" or hget(hdrs, "call-id") != cid:
                continue
            code = int(first[8:11])
            seen.append(str(code))
            if code < 200:
                continue
            to = hget(hdrs, "to")
            if code >= 300:
                self.send(self.uac, (           # ACK for a failure: same branch
                    f"ACK {ruri} SIP/2.0\r\n"
                    + head.replace(f"To: <sip:{self.user}@{self.domain}>", f"To: {to}")
                    + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"))
                raise SipError(f"call {k}: INVITE {ruri} got {first[8:]}")
            contact = uri_of(hget(hdrs, "contact")) or ruri
            self.send(self.uac, (
                f"ACK {contact} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {IP}:{uport};branch={self.branch()};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{self.caller}@{self.domain}>;tag={ftag}\r\n"
                f"To: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\n"
                "Content-Length: 0\r\n\r\n"))
            if b_sdp is None:
                raise SipError(f"call {k}: the caller got 200 but the callee never got an INVITE")
            return {"call-id": cid, "from-tag": ftag, "to": to, "contact": contact,
                    "a_sdp": body, "b_sdp": b_sdp}

    def bye_all(self, dialogs):
        uport = self.uac.getsockname()[1]
        pending = {}
        ok = 0
        i = 0
        window = 50
        until = time.monotonic() + self.timeout + len(dialogs) * 0.01
        while (i < len(dialogs) or pending) and time.monotonic() < until:
            while i < len(dialogs) and len(pending) < window:
                d = dialogs[i]
                i += 1
                self.send(self.uac, (
                    f"BYE {d['contact']} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {IP}:{uport};branch={self.branch()};rport\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:{self.caller}@{self.domain}>;tag={d['from-tag']}\r\n"
                    f"To: {d['to']}\r\nCall-ID: {d['call-id']}\r\nCSeq: 2 BYE\r\n"
                    "Content-Length: 0\r\n\r\n"))
                pending[d["call-id"]] = d
            m = self.recv(min(until, time.monotonic() + 1.0))
            if m is None:
                continue
            name, first, hdrs, body, addr = m
            if not first.startswith("SIP/2.0 "):
                self.handle_request(name, first, hdrs, body, addr)
                continue
            cid = hget(hdrs, "call-id")
            if name == "uac" and cid in pending and int(first[8:11]) >= 200 \
                    and (hget(hdrs, "cseq") or "").endswith("BYE"):
                ok += first[8:11] == "200"
                del pending[cid]
        # A B2BUA may answer the caller's BYE before it sends its own BYE to
        # the callee: stay a moment to answer those (up to 2 s).
        byes = lambda: sum(1 for line in self.log if line.startswith("uas got BYE"))
        until = time.monotonic() + 2.0
        while byes() < len(dialogs) and time.monotonic() < until:
            m = self.recv(until)
            if m and not m[1].startswith("SIP/2.0 "):
                self.handle_request(*m)
        return ok


def sip_calls(a):
    """The appliance target's call set-up, then hold until SIGTERM, then BYE."""
    streams = int(a["streams"])
    gen_base = int(a["gen_base"])
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    sip = Sip(a)
    try:
        sip.register()
    except SipError as e:
        die(f"appliance: {e}")
    dialogs, lines = [], []
    unanchored = False
    t0 = time.monotonic()
    for k in range(streams // 2):
        pc, pe = gen_port(gen_base, 2 * k), gen_port(gen_base, 2 * k + 1)
        try:
            d = sip.call(k, pc, pe)
        except SipError as e:
            sip.bye_all(dialogs)
            die(f"appliance: {e}")
        dialogs.append(d)
        try:
            a_ip, a_port = sdp_audio(d["a_sdp"])    # where the caller sends (A side)
            b_ip, b_port = sdp_audio(d["b_sdp"])    # where the callee sends (B side)
        except ValueError as e:
            sip.bye_all(dialogs)
            die(f"appliance: call {k}: {e}")
        if (b_port == pc or a_port == pe) and a.get("allow_unanchored") == "1":
            unanchored = True
        elif b_port == pc or a_port == pe:
            ok = sip.bye_all(dialogs)
            die("appliance does not anchor media yet: the INVITE the callee got names the "
                f"caller's own RTP address ({b_ip}:{b_port}) and the caller's 200 names the "
                f"callee's ({a_ip}:{a_port}), so RTP would go straight between the parties. "
                "The appliance target needs the media relay (SDP rewritten to the "
                f"appliance's own ports). (The test call was ended: {ok} of {len(dialogs)} "
                "BYE answered 200.)")
        elif b_port in (pc, pe) or a_port in (pc, pe):
            sip.bye_all(dialogs)
            die(f"appliance: call {k}: the SDPs name our own ports (A {a_ip}:{a_port},"
                f" B {b_ip}:{b_port})")
        lines.append((pc, a_ip, a_port, 2 * k + 1))
        lines.append((pe, b_ip, b_port, 2 * k))
        if stop["flag"]:
            sip.bye_all(dialogs)
            die("interrupted during call set-up")
    write_plan(a["plan"], lines)
    print(f"{len(dialogs)} calls through the appliance in {time.monotonic() - t0:.1f} s, e.g."
          f" caller {lines[0][0]} -> {lines[0][1]}:{lines[0][2]},"
          f" callee {lines[1][0]} -> {lines[1][1]}:{lines[1][2]}", flush=True)
    if unanchored:
        print("WARNING: the appliance does not anchor media: RTP goes straight between the"
              " parties (allow_unanchored: a test of the SIP plumbing only)", flush=True)
        open(a["ready"] + ".unanchored", "w").close()
    open(a["ready"], "w").close()
    # Hold: answer whatever arrives (session refreshes, OPTIONS) until SIGTERM.
    while not stop["flag"]:
        m = sip.recv(time.monotonic() + 0.2)
        if m and not m[1].startswith("SIP/2.0 "):
            sip.handle_request(*m)
    ok = sip.bye_all(dialogs)
    byes = sum(1 for line in sip.log if line.startswith("uas got BYE"))
    print(f"BYE: {ok} of {len(dialogs)} calls ended with 200; the callee got {byes} BYEs",
          flush=True)
    sys.exit(0 if ok == len(dialogs) else 1)


# -------------------------------------------------------------------- report

def report(a):
    g = json.load(open(a["gen"]))
    target = a["target"]
    streams = int(a["streams"])
    max_loss = float(a["max_loss"])
    foreign_max = float(a["foreign_max"])
    fwd = {}
    if a.get("fwd") and os.path.exists(a["fwd"]):
        try:
            fwd = json.loads(open(a["fwd"]).read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            fwd = {}
    win = g["window_s"] or float(g["duration_s"])
    cpu = g["cpu"]
    t = cpu["targets"][0] if cpu["targets"] else None
    t_cpu = t["cpu_s"] if t else None
    relayed = g["received"]
    per_pkt = round(t_cpu / relayed * 1e6, 3) if t and relayed else None
    gen_per_pkt = round(cpu["self_s"] / relayed * 1e6, 3) if relayed else None
    ours = (t_cpu or 0.0) + cpu["self_s"]
    foreign = max(0.0, cpu["busy_all_s"] - ours) / win if win else 0.0
    L = g["latency_us"]
    problems = []
    if relayed == 0:
        problems.append("no packet came through")
    if g["loss_pct"] > max_loss:
        problems.append(f"loss {g['loss_pct']:.3f} % over the {max_loss:g} % limit")
    if g["misrouted"]:
        problems.append(f"{g['misrouted']} packets arrived at the wrong socket")
    if g["dead_streams"]:
        problems.append(f"{g['dead_streams']} streams received nothing")
    if a.get("unanchored") == "1":
        problems.append("the appliance did not anchor media: RTP went direct (plumbing test)")
    if g["cpu"].get("target_gone"):
        problems.append("the target exited during the window")
    sat = []
    if t and t_cpu / win >= 0.9:
        sat.append("target (cpu)")
    if cpu["self_s"] / win >= 0.9:
        sat.append("rtpgen (cpu)")
    if g["sent_late_1ms"] > 0.01 * max(1, g["sent"]):
        sat.append("rtpgen (> 1 % of packets sent > 1 ms late)")
    if g["skipped_in_window"]:
        sat.append(f"rtpgen (stalled: {g['skipped_in_window']} packets skipped)")
    if g["drops"]["target"]:
        sat.append("target (socket drops)")
    if g["drops"]["own"]:
        sat.append("rtpgen (socket drops)")
    res = {
        "target": target, "streams": streams, "calls": streams // 2,
        "pps_offered": streams * g["pps_per_stream"],
        "pps_relayed": round(relayed / win, 1) if win else 0.0,
        "window_s": round(win, 3), "sent": g["sent"], "received": relayed, "lost": g["lost"],
        "loss_pct": g["loss_pct"], "duplicates": g["duplicates"], "reordered": g["reordered"],
        "misrouted": g["misrouted"], "dead_streams": g["dead_streams"],
        "ssrc_rewritten": g["ssrc_rewritten"], "seq_rewritten": g["seq_rewritten"],
        "target_cpu_s": t_cpu, "target_threads": t["threads"] if t else None,
        "target_run_s": t["run_s"] if t else None,
        "target_runq_wait_s": t["runq_wait_s"] if t else None,
        "target_us_per_pkt": per_pkt,
        "rtpgen_cpu_s": cpu["self_s"], "rtpgen_us_per_pkt": gen_per_pkt,
        "busy_cpu_s": cpu["busy_cpu_s"],
        "latency_us": {k: L[k] for k in ("p50", "p90", "p99", "p99.9", "max")},
        "latency_n": L["n"], "late_ticks": g["late_ticks"], "sent_late_1ms": g["sent_late_1ms"],
        "send_lag_max_us": g["send_lag_max_us"], "skipped": g["skipped_in_window"],
        "drops": g["drops"],
        "foreign_cores": round(foreign, 2), "saturated": sat, "problems": problems,
        "fwd": fwd, "status": 1 if problems else 0,
    }
    with open(a["out"], "w") as f:
        f.write(json.dumps(res) + "\n")

    f1 = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    print(f"  packets     sent {g['sent']}, received {relayed}, lost {g['lost']}"
          f" ({g['loss_pct']:.3f} %), duplicates {g['duplicates']}, reordered {g['reordered']},"
          f" misrouted {g['misrouted']}; streams with loss {g['streams_with_loss']}"
          f" (worst {g['worst_stream_loss_pct']:.2f} %), dead {g['dead_streams']}")
    print(f"  rate        relayed {res['pps_relayed']:.0f} pps of {res['pps_offered']} offered"
          f" | window {win:.2f} s")
    if t:
        print(f"  CPU s       target {t_cpu:.2f} over {t['threads']} thread(s)"
              f" ({t_cpu / win * 100:.1f} % of a core; sched run {t['run_s']:.2f} s,"
              f" run-queue wait {t['runq_wait_s']:.3f} s) | rtpgen {cpu['self_s']:.2f}"
              f" ({cpu['self_s'] / win * 100:.1f} %) | busy per CPU "
              + ", ".join(f"cpu{i} {v:.2f}" for i, v in enumerate(cpu["busy_cpu_s"])))
        print(f"  CPU/packet  target {f1(per_pkt, 2)} µs | rtpgen {f1(gen_per_pkt, 2)} µs"
              " (send + receive)")
    else:
        print(f"  CPU s       no relay | rtpgen {cpu['self_s']:.2f}"
              f" ({cpu['self_s'] / win * 100:.1f} %)")
    print(f"  latency µs  p50 {f1(L['p50'], 0)}  p90 {f1(L['p90'], 0)}  p99 {f1(L['p99'], 0)}"
          f"  p99.9 {f1(L['p99.9'], 0)}  max {f1(L['max'], 0)}  (n={L['n']}; send to receive,"
          " rtpgen's clock)")
    print(f"  generator   late ticks {g['late_ticks']} ({g['ticks_missed']} missed),"
          f" packets sent > 1 ms late {g['sent_late_1ms']}, max lag {g['send_lag_max_us']:.0f} µs,"
          f" skipped after a stall {g['skipped_in_window']}")
    print(f"  UDP drops   target sockets {g['drops']['target']}"
          f" ({g['drops']['target_sockets']} sockets), rtpgen sockets {g['drops']['own']}"
          f" (whole run) | other load on the box {foreign:.2f} CPUs"
          f"{'  <-- disturbed' if foreign > foreign_max else ''}")
    if g["ssrc_rewritten"] or g["seq_rewritten"] or g["not_ours"]:
        print(f"  other       SSRC rewritten in {g['ssrc_rewritten']} packets, seq in"
              f" {g['seq_rewritten']}; {g['not_ours']} datagrams not from rtpgen (RTCP, ...)")
    if fwd:
        print(f"  fwd         rx {fwd.get('rx')}, tx {fwd.get('tx')}, unlatched {fwd.get('unlatched')},"
              f" send errors {fwd.get('send_errors')} (whole run)")
    print(f"  saturated   {', '.join(sat) if sat else 'nothing (< 90 % of a core, no drops)'}")
    if problems:
        print(f"  FAILED      {'; '.join(problems)}")
    return res["status"]


def pick(paths):
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


def summary(path, max_loss):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    if not rows:
        print("no results")
        return 1
    f1 = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    print()
    print("| target | streams | pps relayed | loss % | target CPU µs/pkt | target % core |"
          " rtpgen µs/pkt | latency p50 / p99 / p99.9 µs | saturated | other load (CPUs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        L = r["latency_us"]
        core = "-" if r["target_cpu_s"] is None else f"{r['target_cpu_s'] / r['window_s'] * 100:.1f}"
        print(f"| {r['target']} | {r['streams']} | {r['pps_relayed']:.0f} | {r['loss_pct']:.3f} |"
              f" {f1(r['target_us_per_pkt'])} | {core} | {f1(r['rtpgen_us_per_pkt'])} |"
              f" {f1(L['p50'], 0)} / {f1(L['p99'], 0)} / {f1(L['p99.9'], 0)} |"
              f" {', '.join(r['saturated']) or '-'} | {r['foreign_cores']:.2f} |")
    by = {}
    for r in rows:
        by.setdefault(r["streams"], {})[r["target"]] = r
    print()
    for n, d in sorted(by.items()):
        def ratio(a, b, goal):
            x, y = d.get(a), d.get(b)
            if not x or not y:
                return
            if not (x["target_us_per_pkt"] and y["target_us_per_pkt"]):
                print(f"@ {n} streams: no {a}/{b} ratio (a side relayed nothing)")
                return
            q = x["target_us_per_pkt"] / y["target_us_per_pkt"]
            clean = x["status"] == 0 and y["status"] == 0
            verdict = "" if goal is None else (f" (meets the ≤ {goal:g} target" if q <= goal
                                               else f" (misses the ≤ {goal:g} target")
            if verdict:
                verdict += ")" if clean else "; a run failed)"
            print(f"@ {n} streams: CPU per packet {a} / {b} = {x['target_us_per_pkt']:.2f} /"
                  f" {y['target_us_per_pkt']:.2f} µs = {q:.2f}{verdict}")
        ratio("appliance", "raw", 1.0)
        ratio("appliance", "rtpengine", 0.55)
        ratio("rtpengine", "raw", None)
        if "direct" in d:
            base = d["direct"]["latency_us"]
            for tg in ("raw", "rtpengine", "appliance"):
                if tg in d and base["p50"] is not None and d[tg]["latency_us"]["p50"] is not None:
                    L = d[tg]["latency_us"]
                    print(f"@ {n} streams: latency {tg} added over direct: p50"
                          f" {L['p50'] - base['p50']:+.0f} µs, p99 {L['p99'] - base['p99']:+.0f} µs")
    return 1 if any(r["status"] for r in rows) else 0


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    kv = lambda: dict(x.split("=", 1) for x in args)
    try:
        if cmd == "ports-free":
            ports_free(args)
        elif cmd == "quiet":
            sys.exit(quiet(float(args[0]), float(args[1])))
        elif cmd == "probe":
            sys.exit(probe(int(args[0]), float(args[1])))
        elif cmd == "plan":
            plan(args[0], int(args[1]), int(args[2]), args[3],
                 int(args[4]) if len(args) > 4 else None)
        elif cmd == "ng-ping":
            sys.exit(ng_ping(int(args[0]), float(args[1])))
        elif cmd == "rtpengine-setup":
            rtpengine_setup(int(args[0]), int(args[1]), int(args[2]), args[3], args[4])
        elif cmd == "rtpengine-teardown":
            sys.exit(rtpengine_teardown(int(args[0]), args[1]))
        elif cmd == "sip-calls":
            sip_calls(kv())
        elif cmd == "report":
            sys.exit(report(kv()))
        elif cmd == "pick":
            pick(args)
        elif cmd == "summary":
            sys.exit(summary(args[0], float(args[1])))
        else:
            die(f"unknown command {cmd}")
    except TimeoutError as e:
        die(str(e))


if __name__ == "__main__":
    main()
