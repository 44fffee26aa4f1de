//! Malformed and hostile input against the running appliance, for both I/O
//! drivers (io_uring and epoll), peer: raw UDP and TCP sockets.
//!
//! * UDP storm: thousands of datagrams — every RFC 4475 message truncated at
//!   many offsets, seeded random byte flips (xorshift, seed printed on
//!   failure), binary junk, a 60 KB header, 5000 headers, wrong
//!   Content-Lengths, empty datagrams and a 65,507-byte datagram. Sent in
//!   batches, each followed by an OPTIONS that must be answered 200 (so the
//!   appliance is alive throughout and the storm is paced by its answers,
//!   not by sleeps). Resident memory may grow by less than 64 MiB; parse
//!   errors are counted; SIGTERM exits 0.
//! * TCP framing: an unterminated header section over `sip.max_message_bytes`
//!   and a Content-Length of 999999999 (and a non-numeric one) close the
//!   connection; CRLFCRLF is answered with CRLF; two messages in one write
//!   and one message in 1-byte writes are both answered.
//! * TCP slow sender: with `sip.tcp_message_timeout_s=1` half a message gets
//!   the connection closed and `tcp_closed_slow` counted.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::{
    Appliance, Driver, HANG, Options, RFC4475_DIR, TcpPeer, UdpPeer, options_request, unique,
};

/// Growth of the appliance's resident memory the storm may cause.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// Datagrams between two liveness probes.
const BATCH: usize = 64;
const SEED: u64 = 0x5EED_4475_C0FF_EE01;

/// xorshift64*: a tiny seeded PRNG, so the corpus is the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn rfc4475_messages() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(RFC4475_DIR)
        .expect("tests/data/rfc4475")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read a .dat"),
            )
        })
        .collect();
    v.sort();
    assert_eq!(v.len(), 49, "49 RFC 4475 messages");
    v
}

fn options_with(extra_headers: &str, content_length: &str, body: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:switchboard.local SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-storm-{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:storm@127.0.0.1>;tag=s\r\n\
         To: <sip:switchboard.local>\r\n\
         Call-ID: storm-{}\r\n\
         CSeq: 1 OPTIONS\r\n\
         {extra_headers}\
         Content-Length: {content_length}\r\n\r\n{body}",
        unique(),
        unique()
    )
    .into_bytes()
}

/// The malformed corpus: (what, datagram).
fn corpus(rng: &mut XorShift) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let msgs = rfc4475_messages();
    // Truncations at many offsets.
    for (name, data) in &msgs {
        let step = (data.len() / 60).max(3);
        for cut in (1..data.len()).step_by(step) {
            out.push((format!("{name} cut at {cut}"), data[..cut].to_vec()));
        }
    }
    // Random byte flips.
    for (name, data) in &msgs {
        for k in 0..25 {
            let mut d = data.clone();
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let i = rng.below(d.len());
                d[i] = match rng.below(4) {
                    0 => d[i] ^ (1 << rng.below(8)),
                    1 => 0,
                    2 => b"\r\n:;,<>\"%@ "[rng.below(11)],
                    _ => rng.next() as u8,
                };
            }
            out.push((format!("{name} flip #{k}"), d));
        }
    }
    // Binary junk.
    for k in 0..300 {
        let len = 1 + rng.below(1500);
        let d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        out.push((format!("junk #{k} ({len} bytes)"), d));
    }
    // Junk that starts like SIP.
    for k in 0..100 {
        let mut d = b"INVITE sip:1001@switchboard.local SIP/2.0\r\n".to_vec();
        let len = rng.below(600);
        d.extend((0..len).map(|_| rng.next() as u8));
        out.push((format!("sip-prefixed junk #{k}"), d));
        let mut d = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK".to_vec();
        d.extend((0..len).map(|_| rng.next() as u8));
        out.push((format!("response-prefixed junk #{k}"), d));
    }
    // Empty datagrams and lone line ends.
    for k in 0..20 {
        out.push((format!("empty #{k}"), Vec::new()));
    }
    out.push(("CRLF".into(), b"\r\n".to_vec()));
    out.push(("CRLFCRLF".into(), b"\r\n\r\n".to_vec()));
    // A 60 KB header.
    out.push((
        "60 KB header".into(),
        options_with(&format!("X-Flood: {}\r\n", "a".repeat(60 * 1024)), "0", ""),
    ));
    // 5000 headers.
    let many: String = (0..5000)
        .map(|i| format!("X{}:{}\r\n", i % 10, i % 7))
        .collect();
    out.push(("5000 headers".into(), options_with(&many, "0", "")));
    // 1500 Via headers (the header responses echo), in one datagram.
    let vias: String = (0..1500)
        .map(|i| format!("v:SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n"))
        .collect();
    out.push(("1500 Vias".into(), options_with(&vias, "0", "")));
    // Wrong Content-Lengths.
    for cl in [
        "10",
        "100000",
        "4294967296",
        "18446744073709551616",
        "-1",
        "abc",
        "",
        "0x10",
        "1 1",
    ] {
        out.push((
            format!("Content-Length {cl:?} with a 4-byte body"),
            options_with("", cl, "body"),
        ));
    }
    out.push((
        "Content-Length 0 with a body".into(),
        options_with("Content-Type: application/sdp\r\n", "0", "v=0\r\n"),
    ));
    // The largest UDP payload over IPv4.
    out.push(("65,507-byte datagram".into(), padded_options(65_507)));
    out
}

/// An OPTIONS padded with one header to exactly `total` bytes.
fn padded_options(total: usize) -> Vec<u8> {
    let make = |pad: usize| {
        format!(
            "OPTIONS sip:switchboard.local SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-padded\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:storm@127.0.0.1>;tag=s\r\n\
             To: <sip:switchboard.local>\r\n\
             Call-ID: padded\r\n\
             CSeq: 1 OPTIONS\r\n\
             X-Pad: {}\r\n\
             Content-Length: 0\r\n\r\n",
            "p".repeat(pad)
        )
        .into_bytes()
    };
    let d = make(total - make(0).len());
    assert_eq!(d.len(), total);
    d
}

fn udp_storm(driver: Driver) {
    let mut rng = XorShift(SEED);
    let corpus = corpus(&mut rng);
    assert!(
        corpus.len() > 3000,
        "a storm of thousands: {}",
        corpus.len()
    );

    // INVITE variants answered with errors are never ACKed; that must not
    // hold the drain (default drain timeout kept).
    let mut a = Appliance::start(Options::new(driver).all_cores());
    let rss_before = a.rss_kib();
    let to = a.udp_addr();
    let peer = UdpPeer::new();
    for (b, batch) in corpus.chunks(BATCH).enumerate() {
        for (_, d) in batch {
            peer.send(to, d);
        }
        // Everything sent before the probe on this socket reached the same
        // shard first; the probe's 200 shows it is still serving.
        let probe = format!("storm-probe-{b}-{}", unique());
        peer.send(to, options_request(&probe, "UDP", peer.local()).as_bytes());
        let deadline = Instant::now() + HANG;
        let ok = peer
            .recv_call(&probe, deadline)
            .is_some_and(|r| r.status() == Some(200));
        if !ok {
            a.assert_running();
            panic!(
                "OPTIONS after storm batch {b} (seed {SEED:#x}; batch: {:?}) not answered 200\n{}",
                batch.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
                a.stderr_tail()
            );
        }
    }
    a.assert_alive();
    let rss_after = a.rss_kib();
    let s = a.stop();
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "{driver:?}: {} datagrams, RSS {rss_before} -> {rss_after} KiB",
        corpus.len()
    );
    for l in s.stderr.lines().filter(|l| l.contains("counters:")) {
        println!("{l}");
    }
    assert!(
        growth < RSS_BOUND_KIB,
        "resident memory grew by {growth} KiB ({rss_before} → {rss_after}) over the storm, \
         bound {RSS_BOUND_KIB} KiB\n{}",
        s.tail()
    );
    let parse_errors = s.counters.total("parse_errors_total");
    assert!(
        parse_errors >= 1000,
        "parse errors counted for the storm: {parse_errors}\n{}",
        s.tail()
    );
    assert!(
        s.counters.get("responses out", "400") >= 100,
        "salvageable requests answered 400\n{}",
        s.tail()
    );
}

#[test]
fn udp_storm_io_uring() {
    udp_storm(Driver::IoUring);
}

#[test]
fn udp_storm_epoll() {
    udp_storm(Driver::Epoll);
}

fn tcp_options(local: std::net::SocketAddr, call_id: &str) -> Vec<u8> {
    options_request(call_id, "TCP", local).into_bytes()
}

/// Expects a 200 for `call_id` next on the connection.
fn expect_200(c: &mut TcpPeer, call_id: &str, what: &str, a: &Appliance) {
    match c.recv_msg(Instant::now() + HANG) {
        Ok(Some(r)) if r.status() == Some(200) && r.call_id() == Some(call_id) => {}
        other => panic!(
            "{what}: expected 200 for {call_id}, got {:?}\n{}",
            other.map(|o| o.map(|m| m.start)),
            a.stderr_tail()
        ),
    }
}

fn expect_closed(c: &mut TcpPeer, what: &str, a: &Appliance) {
    if let Err(e) = c.wait_closed(Instant::now() + HANG) {
        panic!(
            "{what}: the appliance did not close the connection: {e}\n{}",
            a.stderr_tail()
        );
    }
}

fn tcp_framing(driver: Driver) {
    let mut a = Appliance::start(Options::new(driver));
    let to = a.tcp_addr();

    // A header section that never ends, longer than max_message_bytes.
    let mut c = TcpPeer::connect(to).expect("connect");
    let mut flood = b"OPTIONS sip:switchboard.local SIP/2.0\r\nX-Flood: ".to_vec();
    flood.extend(std::iter::repeat_n(b'a', 70_000));
    // The appliance may close while we are still writing: that is the point.
    let _ = c.try_send(&flood);
    expect_closed(&mut c, "unterminated 70 KB header section", &a);

    // Content-Length far beyond max_message_bytes.
    let mut c = TcpPeer::connect(to).expect("connect");
    let huge = String::from_utf8(tcp_options(c.local(), &format!("cl-{}", unique())))
        .expect("utf8")
        .replace("Content-Length: 0", "Content-Length: 999999999");
    let _ = c.try_send(huge.as_bytes());
    expect_closed(&mut c, "Content-Length: 999999999", &a);

    // Content-Length that is not a number.
    let mut c = TcpPeer::connect(to).expect("connect");
    let bad = String::from_utf8(tcp_options(c.local(), &format!("cl-{}", unique())))
        .expect("utf8")
        .replace("Content-Length: 0", "Content-Length: lots");
    let _ = c.try_send(bad.as_bytes());
    expect_closed(&mut c, "Content-Length: lots", &a);

    // RFC 5626 keep-alive: CRLFCRLF ping, CRLF pong; the connection stays up.
    let mut c = TcpPeer::connect(to).expect("connect");
    c.send(b"\r\n\r\n");
    let pong = c.recv_raw(2, Instant::now() + HANG);
    assert_eq!(
        pong,
        b"\r\n",
        "CRLFCRLF ping answered with a CRLF pong\n{}",
        a.stderr_tail()
    );
    let id = format!("after-ping-{}", unique());
    c.send(&tcp_options(c.local(), &id));
    expect_200(&mut c, &id, "OPTIONS after a ping", &a);

    // Two messages in one write.
    let id1 = format!("pair-1-{}", unique());
    let id2 = format!("pair-2-{}", unique());
    let mut two = tcp_options(c.local(), &id1);
    two.extend(tcp_options(c.local(), &id2));
    c.send(&two);
    expect_200(&mut c, &id1, "first of two messages in one write", &a);
    expect_200(&mut c, &id2, "second of two messages in one write", &a);

    // One message in 1-byte writes (Nagle is off: one segment per byte).
    let mut c = TcpPeer::connect(to).expect("connect");
    let id = format!("bytewise-{}", unique());
    for b in tcp_options(c.local(), &id) {
        c.send(&[b]);
    }
    expect_200(&mut c, &id, "message sent in 1-byte writes", &a);

    a.assert_alive();
    let s = a.stop();
    assert!(
        s.counters.total("tcp_closed_bad_framing") >= 3,
        "three connections closed for bad framing\n{}",
        s.tail()
    );
    assert!(
        s.counters.total("tcp_accepted") >= 5,
        "connections accepted\n{}",
        s.tail()
    );
}

#[test]
fn tcp_framing_io_uring() {
    tcp_framing(Driver::IoUring);
}

#[test]
fn tcp_framing_epoll() {
    tcp_framing(Driver::Epoll);
}

fn tcp_slow_sender(driver: Driver) {
    let mut a = Appliance::start(Options::new(driver).set("sip.tcp_message_timeout_s=1"));
    let mut c = TcpPeer::connect(a.tcp_addr()).expect("connect");
    let msg = tcp_options(c.local(), &format!("slow-{}", unique()));
    c.send(&msg[..msg.len() / 2]);
    // The appliance must give up on the rest and close (after ~1 s).
    expect_closed(&mut c, "half a message, then silence", &a);
    // Other connections are unaffected.
    let mut c2 = TcpPeer::connect(a.tcp_addr()).expect("connect");
    let id = format!("after-slow-{}", unique());
    c2.send(&tcp_options(c2.local(), &id));
    expect_200(&mut c2, &id, "OPTIONS on a new connection", &a);
    a.assert_alive();
    let s = a.stop();
    assert!(
        s.counters.total("tcp_closed_slow") >= 1,
        "tcp_closed_slow counted\n{}",
        s.tail()
    );
}

#[test]
fn tcp_slow_sender_io_uring() {
    tcp_slow_sender(Driver::IoUring);
}

#[test]
fn tcp_slow_sender_epoll() {
    tcp_slow_sender(Driver::Epoll);
}
