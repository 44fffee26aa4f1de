//! Fuzz target `media`: the per-shard media engine (`media::engine`) fed
//! arbitrary datagrams on its RTP and RTCP ports, and arbitrary SDP from
//! the callee.
//!
//! Input: the first line is the callee's SDP answer (used when it parses;
//! otherwise a fixed PCMU answer); the rest is a series of records
//! `[op, len_hi, len_lo, bytes...]` where `op` picks the socket (caller /
//! callee, RTP / RTCP), the source (the latched address or a stranger) and
//! a clock step, and `len` bytes follow as the datagram.
//!
//! Invariants checked (beyond "never panics"):
//! * every datagram the engine sends is at most as long as the largest
//!   datagram it received or one encoded frame (1500 bytes), goes out on a
//!   socket of the other leg, and parses as RTP or RTCP;
//! * every DTMF digit reported is one of `0-9*#A-D`;
//! * after both legs close, nothing is left open and every port pair is
//!   free again.

#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::media::engine::{MediaConfig, MediaEngine, MediaEvent, MediaSock, PortPair};
use switchboard::media::rtp::RtpHeader;
use switchboard::stats::ShardCounters;

const CALLER: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
const CALLEE: &str = "v=0\r\no=b 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fuzz_target!(|data: &[u8]| {
    let (first, mut rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut m = MediaEngine::new(MediaConfig::loopback(), Arc::new(ShardCounters::default()));
    for i in 0..2u16 {
        m.add_pair(PortPair {
            port: 20000 + 2 * i,
            rtp: MediaSock(2 * i),
            rtcp: MediaSock(2 * i + 1),
        });
    }
    let mut now = Instant::now();
    let a = m.open_leg(now, 1).expect("a free pair");
    let b = m.open_leg(now, 1).expect("a free pair");
    if m.translate_offer(a, b, CALLER.as_bytes()).is_err() {
        panic!("the fixed offer anchors");
    }
    // The answer is one line: `\r\n` spelled out stands for CRLF.
    let answer = String::from_utf8_lossy(first).replace("\\r\\n", "\r\n");
    if m.translate_answer(now, b, a, answer.as_bytes()).is_err() {
        let _ = m.translate_answer(now, b, a, CALLEE.as_bytes());
    }
    m.arm(now, a);
    m.arm(now, b);
    let rec = m.start_recording(now, "fuzz", a, b);
    let mut largest = 0usize;
    while rest.len() >= 3 {
        let (op, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let len = len.min(rest.len() - 3);
        let datagram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        largest = largest.max(len);
        let sock = MediaSock(u16::from(op & 3));
        let src: SocketAddr = match (op & 1 == 1, op & 4 == 4) {
            (_, true) => "203.0.113.9:999".parse().unwrap(),
            (false, false) if op & 2 == 0 => "192.0.2.10:4000".parse().unwrap(),
            (true, false) if op & 2 == 0 => "192.0.2.10:4001".parse().unwrap(),
            (false, false) => "192.0.2.20:6000".parse().unwrap(),
            (true, false) => "192.0.2.20:6001".parse().unwrap(),
        };
        now += Duration::from_millis(u64::from(op >> 3) * 7);
        m.handle_packet(now, sock, src, datagram);
        if op & 0x40 != 0 {
            m.tick(now);
        }
        if op & 0x80 != 0 {
            m.sweep(now);
        }
        m.drain_transmits(|s, _dst, out| {
            assert!(s.0 < 4, "sent on a socket of ours");
            assert!(
                out.len() <= largest.max(1500),
                "no datagram grows past a frame"
            );
            assert!(
                RtpHeader::parse(out).is_some() || out.len() >= 8,
                "sends RTP or RTCP"
            );
        });
        while let Some(ev) = m.poll_event() {
            if let MediaEvent::Dtmf { digit, .. } = ev {
                assert!("0123456789*#ABCD".contains(digit), "digit {digit:?}");
            }
        }
    }
    if let Some(r) = rec {
        m.stop_recording(now, r);
    }
    while m.poll_recording().is_some() {}
    m.close_leg(a);
    m.close_leg(b);
    assert_eq!(m.open_legs(), 0);
    assert_eq!(m.free_pairs(), 2);
});
