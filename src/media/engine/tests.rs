//! Engine tests: two legs, SDP through the engine, packets in, queue out.

use super::*;
use crate::media::{g711, rtcp};
use std::collections::HashMap;

const CALLER_SDP: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn callee_sdp(dir: &str) -> String {
    format!(
        "v=0\r\no=b 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
    )
}

impl World {
    /// A re-offers with direction `dir`; returns the offer B gets.
    fn caller_reoffers(&mut self, dir: &str) -> String {
        let offer = self
            .m
            .translate_offer(
                self.a,
                self.b,
                CALLER_SDP.replace("sendrecv", dir).as_bytes(),
            )
            .unwrap();
        String::from_utf8_lossy(&offer).into_owned()
    }
}

struct World {
    m: MediaEngine,
    counters: Arc<ShardCounters>,
    now: Instant,
    a: LegId,
    b: LegId,
}

fn pair(i: u16) -> PortPair {
    PortPair {
        port: 20000 + 2 * i,
        rtp: MediaSock(10 + 2 * i),
        rtcp: MediaSock(11 + 2 * i),
    }
}

/// A call: A offered, B answered.
fn world() -> World {
    world_with(MediaConfig::loopback(), &callee_sdp("sendrecv"))
}

/// A call on an engine with `cfg`: A offered, B answered `answer`.
fn world_with(cfg: MediaConfig, answer: &str) -> World {
    let counters = Arc::new(ShardCounters::default());
    let mut m = MediaEngine::new(cfg, counters.clone());
    for i in 0..4 {
        m.add_pair(pair(i));
    }
    let now = Instant::now();
    let a = m.open_leg(now, 1).unwrap();
    let b = m.open_leg(now, 1).unwrap();
    m.translate_offer(a, b, CALLER_SDP.as_bytes()).unwrap();
    m.translate_answer(now, b, a, answer.as_bytes()).unwrap();
    World {
        m,
        counters,
        now,
        a,
        b,
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 12 + 160];
    rtp::write_header(&mut p, false, pt, seq, ts, ssrc);
    p
}

fn sent(m: &mut MediaEngine) -> Vec<(MediaSock, SocketAddr, RtpHeader)> {
    let mut v = Vec::new();
    m.drain_transmits(|s, d, data| v.push((s, d, RtpHeader::parse(data).unwrap())));
    v
}

/// A second's worth of sweeps: one liveness check, every recording flushed.
fn sweep_all(m: &mut MediaEngine, now: Instant) {
    for _ in 0..SWEEPS_PER_SECOND {
        m.sweep(now);
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn relays_from_caller_to_callees_sdp_address_through_callees_port() {
    let mut w = world();
    w.m.handle_packet(
        w.now,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 5, 800, 77),
    );
    let out = sent(&mut w.m);
    assert_eq!(out.len(), 1);
    let (sock, dst, h) = out[0];
    assert_eq!(sock, pair(1).rtp);
    assert_eq!(dst, addr("192.0.2.20:6000"));
    assert_eq!(
        (h.payload_type, h.seq, h.timestamp, h.ssrc),
        (0, 5, 800, 77)
    );
    assert_eq!(h.payload_len, 160);
    assert_eq!(w.counters.rtp_relayed.get(), 1);
}

#[test]
fn latches_to_the_first_source_and_drops_others() {
    let mut w = world();
    // B's packets come from a NAT address, not its SDP address.
    let nat = addr("198.51.100.7:31000");
    w.m.handle_packet(w.now, pair(1).rtp, nat, &rtp(0, 1, 0, 5));
    w.m.handle_packet(
        w.now,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 1, 0, 9),
    );
    let out = sent(&mut w.m);
    assert_eq!(out[1].1, nat, "A's audio goes where B's comes from");
    w.m.handle_packet(
        w.now,
        pair(1).rtp,
        addr("203.0.113.1:999"),
        &rtp(0, 2, 160, 5),
    );
    assert!(sent(&mut w.m).is_empty());
    assert_eq!(w.counters.rtp_foreign.get(), 1);
    // A new description from B lets it latch again.
    w.m.translate_offer(
        w.b,
        w.a,
        callee_sdp("sendrecv").replace("6000", "6002").as_bytes(),
    )
    .unwrap();
    w.m.handle_packet(
        w.now,
        pair(1).rtp,
        addr("203.0.113.1:999"),
        &rtp(0, 3, 320, 5),
    );
    assert_eq!(sent(&mut w.m).len(), 1);
}

/// Each latch asks the shell to connect the leg's RTP socket to the latched
/// source; a new description, and closing the leg, undo it first.
#[test]
fn latching_connects_the_rtp_socket_and_moving_or_closing_disconnects_it() {
    let mut w = world();
    assert_eq!(w.m.poll_connect(), None, "nothing latched yet");
    let nat = addr("198.51.100.7:31000");
    w.m.handle_packet(w.now, pair(1).rtp, nat, &rtp(0, 1, 0, 5));
    w.m.handle_packet(w.now, pair(1).rtp, nat, &rtp(0, 2, 160, 5));
    assert_eq!(w.m.poll_connect(), Some((pair(1).rtp, Some(nat))));
    assert_eq!(w.m.poll_connect(), None, "once per latch");
    let moved = callee_sdp("sendrecv").replace("6000", "6002");
    w.m.translate_offer(w.b, w.a, moved.as_bytes()).unwrap();
    assert_eq!(w.m.poll_connect(), Some((pair(1).rtp, None)));
    let new = addr("203.0.113.1:999");
    w.m.handle_packet(w.now, pair(1).rtp, new, &rtp(0, 3, 320, 5));
    assert_eq!(w.m.poll_connect(), Some((pair(1).rtp, Some(new))));
    w.m.close_leg(w.b);
    w.m.close_leg(w.a);
    assert_eq!(w.m.poll_connect(), Some((pair(1).rtp, None)), "B's pair");
    assert_eq!(w.m.poll_connect(), None, "A never latched");
}

#[test]
fn switching_source_keeps_ssrc_and_numbering_continuous() {
    let mut w = world();
    let src_b = addr("192.0.2.20:6000");
    for i in 0..3u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(i));
        w.m.handle_packet(
            t,
            pair(1).rtp,
            src_b,
            &rtp(0, 100 + i, 1000 + 160 * u32::from(i), 0xb),
        );
    }
    let before = sent(&mut w.m);
    assert_eq!(before.last().unwrap().2.seq, 102);
    // A third leg (a transfer target) replaces B.
    let c = w.m.open_leg(w.now, 1).unwrap();
    w.m.translate_offer(
        c,
        w.a,
        callee_sdp("sendrecv")
            .replace("192.0.2.20", "192.0.2.30")
            .as_bytes(),
    )
    .unwrap();
    w.m.translate_answer(w.now, w.a, c, CALLER_SDP.as_bytes())
        .unwrap();
    let t = w.now + Duration::from_millis(100);
    w.m.handle_packet(
        t,
        pair(2).rtp,
        addr("192.0.2.30:6000"),
        &rtp(0, 9000, 555_555, 0xc),
    );
    let after = sent(&mut w.m);
    assert_eq!(after.len(), 1);
    let h = after[0].2;
    assert_eq!(h.ssrc, 0xb, "one SSRC towards A");
    assert_eq!(h.seq, 103);
    assert!(h.marker, "a new talkspurt starts at the switch");
    // 60 ms after the last packet (ts 1320): 480 ticks at 8 kHz.
    assert_eq!(h.timestamp, 1320 + 480);
    // B no longer reaches A.
    w.m.handle_packet(t, pair(1).rtp, src_b, &rtp(0, 103, 1480, 0xb));
    assert!(sent(&mut w.m).is_empty());
}

#[test]
fn rtcp_goes_to_the_peers_rtcp_port() {
    let mut w = world();
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 0x42];
    w.m.handle_packet(w.now, pair(0).rtcp, addr("192.0.2.10:4001"), &rr);
    let mut v = Vec::new();
    w.m.drain_transmits(|s, d, data| v.push((s, d, data.to_vec())));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, pair(1).rtcp);
    assert_eq!(v[0].1, addr("192.0.2.20:6001"));
    assert_eq!(v[0].2, rr);
}

#[test]
fn dtmf_events_are_reported_once_per_press() {
    let mut w = world();
    let src = addr("192.0.2.10:4000");
    let mut ev = |digit: u8, end: bool, ts: u32, seq: u16| {
        let mut p = rtp(101, seq, ts, 1);
        p.truncate(16);
        p[12] = digit;
        p[13] = if end { 0x80 } else { 0 };
        w.m.handle_packet(w.now, pair(0).rtp, src, &p);
    };
    ev(5, false, 8000, 1);
    ev(5, false, 8000, 2);
    ev(5, true, 8000, 3);
    ev(5, true, 8000, 4);
    ev(11, false, 9600, 5);
    let mut digits = Vec::new();
    while let Some(e) = w.m.poll_event() {
        if let MediaEvent::Dtmf { digit, call, .. } = e {
            assert_eq!(call, 1);
            digits.push(digit);
        }
    }
    assert_eq!(digits, ['5', '#']);
    // Events are relayed to B with B's event payload type.
    assert!(sent(&mut w.m).iter().all(|(_, _, h)| h.payload_type == 101));
}

#[test]
fn silent_leg_is_reported_after_the_timeout_and_held_calls_wait_longer() {
    let mut w = world();
    w.m.arm(w.now, w.a);
    w.m.arm(w.now, w.b);
    let src = addr("192.0.2.10:4000");
    w.m.handle_packet(
        w.now + Duration::from_secs(50),
        pair(0).rtp,
        src,
        &rtp(0, 1, 0, 1),
    );
    sweep_all(&mut w.m, w.now + Duration::from_secs(59));
    assert_eq!(w.m.poll_event(), None);
    sweep_all(&mut w.m, w.now + Duration::from_secs(60));
    assert_eq!(
        w.m.poll_event(),
        Some(MediaEvent::Inactive { call: 1, leg: w.b })
    );
    assert_eq!(w.m.poll_event(), None, "A spoke at 50 s");
    sweep_all(&mut w.m, w.now + Duration::from_secs(61));
    assert_eq!(w.m.poll_event(), None, "reported once");

    // On hold (B answered a sendonly re-offer with recvonly): an hour.
    let mut w = world();
    w.caller_reoffers("sendonly");
    w.m.translate_answer(w.now, w.b, w.a, callee_sdp("recvonly").as_bytes())
        .unwrap();
    w.m.arm(w.now, w.b);
    sweep_all(&mut w.m, w.now + Duration::from_secs(600));
    assert_eq!(w.m.poll_event(), None);
    sweep_all(&mut w.m, w.now + Duration::from_secs(3600));
    assert!(matches!(
        w.m.poll_event(),
        Some(MediaEvent::Inactive { .. })
    ));
}

#[test]
fn ports_run_out_and_come_back_oldest_first() {
    let mut w = world();
    let c = w.m.open_leg(w.now, 2).unwrap();
    let d = w.m.open_leg(w.now, 2).unwrap();
    assert_eq!(w.m.open_leg(w.now, 3), Err(MediaError::NoPorts));
    assert_eq!(w.counters.media_ports_exhausted.get(), 1);
    w.m.close_leg(c);
    w.m.close_leg(w.a);
    w.m.close_leg(w.a); // twice is harmless
    assert_eq!(w.m.port(c), None);
    let e = w.m.open_leg(w.now, 4).unwrap();
    assert_eq!(w.m.port(e), Some(pair(2).port));
    assert_eq!(w.m.open_legs(), 3);
    // Packets to a closed leg's port go nowhere.
    w.m.handle_packet(
        w.now,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 1, 0, 1),
    );
    assert!(sent(&mut w.m).is_empty());
    let _ = d;
}

#[test]
fn garbage_is_counted_not_relayed() {
    let mut w = world();
    for junk in [&b""[..], b"\x80", b"hello world, not rtp", &[0x8f; 20]] {
        w.m.handle_packet(w.now, pair(0).rtp, addr("192.0.2.10:4000"), junk);
    }
    assert!(sent(&mut w.m).is_empty());
    assert_eq!(w.counters.rtp_malformed.get(), 4);
    assert_eq!(w.counters.rtcp_in.get(), 0);
}

#[test]
fn loss_is_counted_from_sequence_gaps() {
    let mut w = world();
    let src = addr("192.0.2.10:4000");
    for seq in [65534u16, 65535, 2, 3] {
        w.m.handle_packet(w.now, pair(0).rtp, src, &rtp(0, seq, 0, 1));
    }
    let s = w.m.stats(w.a).unwrap();
    assert_eq!((s.packets_in, s.lost), (4, 2));
}

#[test]
fn recording_puts_the_caller_left_the_callee_right_and_lasts_the_call() {
    let mut w = world();
    let id = w.m.start_recording(w.now, "rec-1@host", w.a, w.b).unwrap();
    assert_eq!(
        w.m.poll_recording(),
        Some(RecordingOp::Open {
            id,
            call_id: "rec-1@host".into()
        })
    );
    // 2 s of µ-law: the caller sends a constant +1000, the callee -1000.
    let (a_byte, b_byte) = (g711::ulaw_encode(1000), g711::ulaw_encode(-1000));
    for i in 0..100u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(i) + 20);
        let ts = 160 * u32::from(i);
        w.m.handle_packet(t, pair(0).rtp, addr("192.0.2.10:4000"), &{
            let mut p = rtp(0, i, ts, 1);
            p[12..].fill(a_byte);
            p
        });
        w.m.handle_packet(t, pair(1).rtp, addr("192.0.2.20:6000"), &{
            let mut p = rtp(0, i, ts, 2);
            p[12..].fill(b_byte);
            p
        });
        if i % 50 == 49 {
            sweep_all(&mut w.m, t);
        }
    }
    sent(&mut w.m);
    w.m.stop_recording(w.now + Duration::from_millis(2000), id);
    let mut data = Vec::new();
    let mut closed = None;
    while let Some(op) = w.m.poll_recording() {
        match op {
            RecordingOp::Data { offset, bytes, .. } => {
                assert_eq!(offset as usize, data.len(), "chunks in order, no gap");
                data.extend_from_slice(&bytes);
            }
            RecordingOp::Close { data_len, .. } => closed = Some(data_len),
            RecordingOp::Open { .. } => panic!("one open"),
        }
    }
    assert_eq!(closed, Some(data.len() as u64));
    assert_eq!(
        data.len(),
        2 * 8000 * 4,
        "exactly the call's 2 s, stereo 16-bit"
    );
    let frames: Vec<(i16, i16)> = data
        .chunks_exact(4)
        .map(|f| {
            (
                i16::from_le_bytes([f[0], f[1]]),
                i16::from_le_bytes([f[2], f[3]]),
            )
        })
        .collect();
    let mid = &frames[4000..12000];
    let a = g711::ulaw_decode(a_byte);
    let b = g711::ulaw_decode(b_byte);
    assert!(
        mid.iter().filter(|f| **f == (a, b)).count() > 7900,
        "caller left, callee right"
    );
    // After the stop nothing is recorded any more.
    w.m.handle_packet(
        w.now + Duration::from_secs(3),
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 200, 32000, 1),
    );
    assert_eq!(w.m.poll_recording(), None);
}

#[test]
fn a_transfer_target_takes_the_right_channel() {
    let mut w = world();
    let id = w.m.start_recording(w.now, "rec-2", w.a, w.b).unwrap();
    let c = w.m.open_leg(w.now, 1).unwrap();
    w.m.translate_offer(
        c,
        w.a,
        callee_sdp("sendrecv")
            .replace("192.0.2.20", "192.0.2.30")
            .as_bytes(),
    )
    .unwrap();
    w.m.translate_answer(w.now, w.a, c, CALLER_SDP.as_bytes())
        .unwrap();
    let c_byte = g711::ulaw_encode(3000);
    for i in 0..50u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(i) + 20);
        let mut p = rtp(0, i, 160 * u32::from(i), 3);
        p[12..].fill(c_byte);
        w.m.handle_packet(t, pair(2).rtp, addr("192.0.2.30:6000"), &p);
    }
    w.m.stop_recording(w.now + Duration::from_secs(1), id);
    let mut right = Vec::new();
    while let Some(op) = w.m.poll_recording() {
        if let RecordingOp::Data { bytes, .. } = op {
            right.extend(
                bytes
                    .chunks_exact(4)
                    .map(|f| i16::from_le_bytes([f[2], f[3]])),
            );
        }
    }
    let want = g711::ulaw_decode(c_byte);
    assert!(
        right.iter().filter(|s| **s == want).count() > 7000,
        "the target is heard on the right"
    );
}

#[test]
fn inband_digits_are_heard_when_a_leg_has_no_telephone_event() {
    let counters = Arc::new(ShardCounters::default());
    let mut m = MediaEngine::new(MediaConfig::loopback(), counters);
    for i in 0..4 {
        m.add_pair(pair(i));
    }
    let now = Instant::now();
    let a = m.open_leg(now, 7).unwrap();
    let b = m.open_leg(now, 7).unwrap();
    let plain = CALLER_SDP
        .replace(" 0 101", " 0")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
    m.translate_offer(a, b, plain.as_bytes()).unwrap();
    let answer = callee_sdp("sendrecv")
        .replace(" 0 101", " 0")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
    m.translate_answer(now, b, a, answer.as_bytes()).unwrap();
    // "4", a pause, "2": 60 ms tones, 200 ms silences, in 20 ms µ-law packets.
    let mut seq = 0u16;
    let mut pcm = [0i16; 160];
    for digit in ['4', '2'] {
        let mut tone = crate::media::tone::ToneGen::dtmf(digit, 8000).unwrap();
        for frame in 0..13 {
            if frame < 3 {
                tone.fill(&mut pcm);
            } else {
                pcm = [0; 160];
            }
            let mut p = rtp(0, seq, 160 * u32::from(seq), 1);
            g711::encode_ulaw(&pcm, &mut p[12..]);
            let t = now + Duration::from_millis(20 * u64::from(seq));
            m.handle_packet(t, pair(0).rtp, addr("192.0.2.10:4000"), &p);
            seq += 1;
        }
    }
    let mut digits = String::new();
    while let Some(e) = m.poll_event() {
        if let MediaEvent::Dtmf { digit, leg, .. } = e {
            assert_eq!(leg, a);
            digits.push(digit);
        }
    }
    assert_eq!(digits, "42");
}

/// A clip of `n` samples: a ramp, so every frame differs.
fn clip(n: usize) -> Clip {
    (0..n).map(|i| ((i % 400) as i16 - 200) * 50).collect()
}

/// A call whose engine plays `music` to a held party.
fn world_with_music(music: Clip) -> World {
    let cfg = MediaConfig {
        hold_music: Some(music),
        ..MediaConfig::loopback()
    };
    world_with(cfg, &callee_sdp("sendrecv"))
}

/// Packets sent, with their payloads.
fn sent_with_payload(m: &mut MediaEngine) -> Vec<(MediaSock, SocketAddr, RtpHeader, Vec<u8>)> {
    let mut v = Vec::new();
    m.drain_transmits(|s, d, data| {
        let h = RtpHeader::parse(data).unwrap();
        v.push((s, d, h, h.payload(data).to_vec()));
    });
    v
}

/// µ-law of `pcm`.
fn ulaw(pcm: &[i16]) -> Vec<u8> {
    let mut out = vec![0u8; pcm.len()];
    g711::encode_ulaw(pcm, &mut out);
    out
}

/// A holds (sendonly), B hears the music in its codec, continuing the
/// stream it heard from A; A resumes and B hears A again, still one
/// stream.
#[test]
fn hold_music_replaces_the_holder_and_the_stream_stays_continuous() {
    let music = clip(8000);
    let mut w = world_with_music(music.clone());
    let from_a = addr("192.0.2.10:4000");
    for i in 0..3u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(i));
        w.m.handle_packet(
            t,
            pair(0).rtp,
            from_a,
            &rtp(0, 10 + i, 160 * u32::from(i), 0xa),
        );
    }
    assert_eq!(sent(&mut w.m).len(), 3);
    assert!(!w.m.wants_tick());

    // A holds at 100 ms.
    let t_hold = w.now + Duration::from_millis(100);
    let offer = w.caller_reoffers("sendonly");
    assert!(offer.contains("a=sendonly"));
    w.m.translate_answer(t_hold, w.b, w.a, callee_sdp("recvonly").as_bytes())
        .unwrap();
    assert!(w.m.is_playing(w.b) && w.m.wants_tick());
    // A packet A still sends is not heard over the music.
    w.m.handle_packet(t_hold, pair(0).rtp, from_a, &rtp(0, 13, 480, 0xa));
    assert!(sent(&mut w.m).is_empty());

    // One frame every 20 ms, from B's port to B, in µ-law.
    let mut frames = Vec::new();
    for k in 0..=10u64 {
        w.m.tick(t_hold + Duration::from_millis(10 * k));
        frames.extend(sent_with_payload(&mut w.m));
    }
    assert_eq!(frames.len(), 6, "0, 20, … 100 ms");
    for (i, (sock, dst, h, payload)) in frames.iter().enumerate() {
        assert_eq!((*sock, *dst), (pair(1).rtp, addr("192.0.2.20:6000")));
        assert_eq!(h.ssrc, 0xa, "the SSRC B already knows");
        assert_eq!(h.seq, 13 + i as u16, "numbering carries on");
        assert_eq!(h.marker, i == 0, "a marker at the switch only");
        assert_eq!(h.payload_type, 0);
        assert_eq!(payload, &ulaw(&music[160 * i..160 * (i + 1)]));
    }
    // 60 ms after A's last packet (ts 320), then 160 a frame.
    assert_eq!(frames[0].2.timestamp, 320 + 480);
    assert_eq!(frames[1].2.timestamp, 320 + 480 + 160);

    // A resumes at 200 ms: the music stops, A is heard again.
    let t_resume = w.now + Duration::from_millis(200);
    w.caller_reoffers("sendrecv");
    w.m.translate_answer(t_resume, w.b, w.a, callee_sdp("sendrecv").as_bytes())
        .unwrap();
    assert!(!w.m.is_playing(w.b) && !w.m.wants_tick());
    w.m.handle_packet(t_resume, pair(0).rtp, from_a, &rtp(0, 20, 3200, 0xa));
    let back = sent(&mut w.m);
    assert_eq!(back.len(), 1);
    let h = back[0].2;
    assert_eq!((h.ssrc, h.seq, h.marker), (0xa, 19, true));
    assert_eq!(w.counters.rtp_unrouted.get(), 0);
}

/// An inactive hold is offered to the held party as sendonly, so it
/// listens to the music; without music configured it stays inactive and
/// nothing plays.
#[test]
fn an_inactive_hold_is_offered_sendonly_when_music_plays() {
    let mut w = world_with_music(clip(800));
    let offer = w.caller_reoffers("inactive");
    assert!(
        offer.contains("a=sendonly") && !offer.contains("inactive"),
        "{offer}"
    );
    w.m.translate_answer(w.now, w.b, w.a, callee_sdp("recvonly").as_bytes())
        .unwrap();
    assert!(w.m.is_playing(w.b));
    assert!(!w.m.is_playing(w.a), "the holder hears nothing from us");

    let mut w = world();
    let offer = w.caller_reoffers("inactive");
    assert!(offer.contains("a=inactive"));
    w.m.translate_answer(w.now, w.b, w.a, callee_sdp("inactive").as_bytes())
        .unwrap();
    assert!(!w.m.is_playing(w.b) && !w.m.wants_tick());
}

/// A clip played once ends with `PlayDone` after its last frame (the last
/// one padded with silence), and the leg hears its peer again.
#[test]
fn a_clip_played_once_ends_with_an_event_and_the_peer_is_heard_again() {
    let mut w = world();
    let c = clip(400); // 2.5 frames
    assert!(w.m.play(w.now, w.a, c.clone(), false));
    let mut frames = Vec::new();
    for k in 0..10u64 {
        w.m.tick(w.now + Duration::from_millis(10 * k));
        frames.extend(sent_with_payload(&mut w.m));
    }
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.0 == pair(0).rtp));
    let mut last = c[320..].to_vec();
    last.resize(160, 0);
    assert_eq!(frames[2].3, ulaw(&last));
    assert_eq!(
        w.m.poll_event(),
        Some(MediaEvent::PlayDone { call: 1, leg: w.a })
    );
    assert_eq!(w.m.poll_event(), None);
    assert!(!w.m.is_playing(w.a) && !w.m.wants_tick());
    let t = w.now + Duration::from_millis(100);
    w.m.handle_packet(t, pair(1).rtp, addr("192.0.2.20:6000"), &rtp(0, 1, 0, 0xb));
    let out = sent(&mut w.m);
    assert_eq!(out.len(), 1);
    assert!(out[0].2.marker, "a switch back from the clip");

    // A leg without an agreed codec cannot play; closing a playing leg
    // ends its playback.
    let lone = w.m.open_leg(w.now, 2).unwrap();
    assert!(!w.m.play(w.now, lone, c.clone(), false));
    assert!(w.m.play(w.now, w.b, c, true));
    w.m.close_leg(w.b);
    assert!(!w.m.wants_tick());
}

/// While A hears a clip, A gets our own RTCP: an SR about the stream we
/// send it, with a report block on A's RTP; B's RTCP is no longer relayed
/// to A (it would describe B's stream, not ours). B, hearing A relayed,
/// still gets A's RTCP as it is and none of ours.
#[test]
fn a_leg_hearing_our_stream_gets_our_rtcp_instead_of_its_peers() {
    let mut w = world();
    let wall_ms = 1_700_000_000_000u64;
    w.m.cfg.wall = Some((w.now, wall_ms));
    assert!(w.m.play(w.now, w.a, clip(80_000), true));
    let from_a = addr("192.0.2.10:4000");
    let mut ours = Vec::new();
    let mut frames = 0;
    for k in 0..=500u64 {
        let t = w.now + Duration::from_millis(10 * k);
        if k % 2 == 0 {
            let seq = (k / 2) as u16;
            w.m.handle_packet(
                t,
                pair(0).rtp,
                from_a,
                &rtp(0, seq, 160 * u32::from(seq), 0xaa),
            );
        }
        w.m.tick(t);
        if k % 10 == 0 {
            w.m.sweep(t);
        }
        w.m.drain_transmits(|s, d, data| {
            if s == pair(0).rtcp {
                ours.push((t, d, data.to_vec()));
            } else if s == pair(0).rtp {
                frames += 1;
            }
        });
    }
    // First report after 1.25–3.75 s, then every 2.5–7.5 s: one or two in 5 s.
    assert!((1..=2).contains(&ours.len()), "{} reports", ours.len());
    let (t, dst, data) = &ours[0];
    assert_eq!(*dst, addr("192.0.2.10:4001"), "A's RTCP port (RTP + 1)");
    let packets: Vec<_> = rtcp::parse_compound(data)
        .collect::<Result<_, _>>()
        .unwrap();
    let info = packets[0].sender_info().expect("an SR: we send A audio");
    let elapsed = t.duration_since(w.now).as_millis() as u64;
    assert_eq!(info.ntp, rtcp::ntp_from_unix_ms(wall_ms + elapsed));
    assert!(info.packets > 0 && info.packets as usize <= frames);
    assert_eq!(info.octets, info.packets * 160);
    let block = packets[0]
        .report_blocks()
        .unwrap()
        .next()
        .expect("a block on A's RTP");
    assert_eq!(block.ssrc, 0xaa);
    assert_eq!(block.cumulative_lost, 0);
    assert!(block.ext_highest_seq > 0);
    assert!(w.counters.rtcp_sent.get() >= 1);

    // B's RTCP is not relayed to A; A's still goes to B.
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 0x42];
    w.m.handle_packet(w.now, pair(1).rtcp, addr("192.0.2.20:6001"), &rr);
    assert_eq!(w.m.pending_transmits(), 0);
    w.m.handle_packet(w.now, pair(0).rtcp, addr("192.0.2.10:4001"), &rr);
    let mut v = Vec::new();
    w.m.drain_transmits(|s, d, _| v.push((s, d)));
    assert_eq!(v, vec![(pair(1).rtcp, addr("192.0.2.20:6001"))]);

    // The clip stops: A hears B relayed again, and our reports stop.
    w.m.stop_playing(w.a);
    let later = w.now + Duration::from_secs(30);
    for k in 0..100u64 {
        w.m.sweep(later + Duration::from_millis(100 * k));
    }
    w.m.drain_transmits(|s, _, _| assert_ne!(s, pair(0).rtcp, "no report once relayed"));
}

/// Legs that share no codec each hear a stream re-encoded here, so each
/// gets our RTCP and neither gets the other's.
#[test]
fn transcoded_legs_get_our_rtcp_both_ways() {
    let pcma_only = callee_sdp("sendrecv")
        .replace(" 0 101", " 8")
        .replace("a=rtpmap:101 telephone-event/8000\r\n", "");
    let World {
        mut m,
        counters,
        now,
        ..
    } = world_with(MediaConfig::loopback(), &pcma_only);
    assert!(m.wants_tick(), "transcoded");
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 0x42];
    m.handle_packet(now, pair(0).rtcp, addr("192.0.2.10:4001"), &rr);
    m.handle_packet(now, pair(1).rtcp, addr("192.0.2.20:6001"), &rr);
    assert_eq!(
        m.pending_transmits(),
        0,
        "no RTCP relayed across a transcoder"
    );
    let mut to = Vec::new();
    for k in 0..40u64 {
        m.sweep(now + Duration::from_millis(100 * k));
        m.drain_transmits(|s, d, _| to.push((s, d)));
    }
    assert!(
        to.contains(&(pair(0).rtcp, addr("192.0.2.10:4001"))),
        "{to:?}"
    );
    assert!(
        to.contains(&(pair(1).rtcp, addr("192.0.2.20:6001"))),
        "{to:?}"
    );
    assert_eq!(counters.rtcp_sent.get(), to.len() as u64);
}

/// A queue call: the appliance answers the caller itself and plays to it;
/// an agent is then offered the caller's agreed codec first and, once it
/// answers, the two are relayed and the music stops.
#[test]
fn a_locally_answered_leg_hears_clips_then_is_bridged_to_an_agent() {
    let counters = Arc::new(ShardCounters::default());
    let mut m = MediaEngine::new(MediaConfig::loopback(), counters);
    for i in 0..4 {
        m.add_pair(pair(i));
    }
    let now = Instant::now();
    let a = m.open_leg(now, 1).unwrap();
    let b = m.open_leg(now, 1).unwrap();
    let offer = CALLER_SDP.replace(" 0 101", " 8 0 101");
    let answer = m.answer_locally(a, offer.as_bytes()).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.contains("m=audio 20000 RTP/AVP 8 101"), "{answer}");
    assert!(m.play(now, a, clip(800), true));
    m.tick(now);
    let played = sent_with_payload(&mut m);
    assert_eq!(played.len(), 1);
    assert_eq!(played[0].1, addr("192.0.2.10:4000"));
    assert_eq!(played[0].2.payload_type, 8, "the caller's agreed codec");

    let onward = m.offer_onward(a, b).unwrap();
    let onward = String::from_utf8_lossy(&onward).into_owned();
    assert!(
        onward.contains("m=audio 20002 RTP/AVP 8 101 0 96"),
        "{onward}"
    );
    m.bridge_answer(now, b, a, callee_sdp("sendrecv").as_bytes())
        .unwrap();
    assert!(!m.is_playing(a), "the music stops when the agent is there");
    // The agent answered PCMU: the caller keeps PCMA, transcoded.
    for k in 0..10u16 {
        let t = now + Duration::from_millis(20 * u64::from(k + 1));
        let p = rtp(0, 1 + k, 160 * u32::from(k), 0xb);
        m.handle_packet(t, pair(1).rtp, addr("192.0.2.20:6000"), &p);
        m.tick(t);
        m.tick(t + Duration::from_millis(10));
    }
    let out = sent_with_payload(&mut m);
    assert!(!out.is_empty());
    assert!(
        out.iter()
            .all(|p| p.1 == addr("192.0.2.10:4000") && p.2.payload_type == 8)
    );
    // A re-offer to the caller continues its own description's version.
    let again = m.answer_locally(a, offer.as_bytes()).unwrap();
    let v = |s: &str| {
        SessionDescription::parse(s.as_bytes())
            .unwrap()
            .origin
            .session_version
    };
    assert_eq!(v(&String::from_utf8_lossy(&again)), v(&answer));
}

#[test]
fn pair_moves_a_party_to_a_third_leg_and_back() {
    let mut w = world();
    // C: a third party in the same codec (a consultation target).
    let c = w.m.open_leg(w.now, 1).unwrap();
    w.m.translate_offer(w.a, c, CALLER_SDP.as_bytes()).unwrap();
    let c_sdp = "v=0\r\no=c 1 1 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
    w.m.accept_local_answer(c, c_sdp.as_bytes()).unwrap();
    // B now talks to C; A hears nobody.
    assert!(w.m.pair(w.b, c));
    w.m.handle_packet(
        w.now,
        pair(1).rtp,
        addr("192.0.2.20:6000"),
        &rtp(0, 1, 0, 5),
    );
    let out = sent(&mut w.m);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, addr("192.0.2.30:7000"), "B's audio goes to C");
    w.m.handle_packet(
        w.now,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 1, 0, 9),
    );
    assert!(sent(&mut w.m).is_empty(), "A is on hold: heard by nobody");
    // And back: A and B again.
    assert!(w.m.pair(w.a, w.b));
    w.m.handle_packet(
        w.now,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 2, 160, 9),
    );
    let out = sent(&mut w.m);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, addr("192.0.2.20:6000"));
}

/// C: a third party speaking PCMA, answered to an offer made for A.
fn third_party(w: &mut World) -> LegId {
    let c = w.m.open_leg(w.now, 1).unwrap();
    w.m.offer_onward(w.a, c).unwrap_or_default();
    let c_sdp = "v=0\r\no=c 1 1 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8\r\na=sendrecv\r\n";
    w.m.accept_local_answer(c, c_sdp.as_bytes()).unwrap();
    c
}

#[test]
fn a_conference_sends_each_member_the_mix_of_the_others_in_its_own_codec() {
    use crate::media::testaudio::{goertzel, tone};
    let mut w = world();
    let c = third_party(&mut w);
    let rec = w.m.start_recording(w.now, "conf@host", w.a, w.b).unwrap();
    let conf = w.m.conference(&[w.a, w.b, c]).unwrap();
    assert!(w.m.in_conference(c) && w.m.wants_tick());
    // A says 440 Hz, B 1000 Hz, C 1800 Hz (in A-law), for 1 s.
    let talkers = [
        (pair(0).rtp, "192.0.2.10:4000", 0u8, 440.0),
        (pair(1).rtp, "192.0.2.20:6000", 0, 1000.0),
        (pair(2).rtp, "192.0.2.30:7000", 8, 1800.0),
    ];
    let mut heard: HashMap<SocketAddr, (Vec<i16>, Vec<RtpHeader>)> = HashMap::new();
    for f in 0..50u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(f));
        for &(sock, from, pt, hz) in &talkers {
            let pcm = tone(hz, 160, usize::from(f) * 160);
            let mut p = rtp(pt, f, 160 * u32::from(f), 0x100 + u32::from(pt));
            if pt == 8 {
                g711::encode_alaw(&pcm, &mut p[12..]);
            } else {
                g711::encode_ulaw(&pcm, &mut p[12..]);
            }
            w.m.handle_packet(t, sock, addr(from), &p);
        }
        w.m.tick(t);
        w.m.tick(t + Duration::from_millis(10));
        if f % 25 == 24 {
            sweep_all(&mut w.m, t);
        }
        for (_, dst, h, payload) in sent_with_payload(&mut w.m) {
            let mut pcm = [0i16; 160];
            if h.payload_type == 8 {
                g711::decode_alaw(&payload, &mut pcm);
            } else {
                g711::decode_ulaw(&payload, &mut pcm);
            }
            let e = heard.entry(dst).or_default();
            e.0.extend_from_slice(&pcm);
            e.1.push(h);
        }
    }
    for (i, &(_, me, pt, own)) in talkers.iter().enumerate() {
        let (pcm, headers) = &heard[&addr(me)];
        assert!(headers.len() >= 45, "{me}: {} packets", headers.len());
        assert!(
            headers.iter().all(|h| h.payload_type == pt),
            "{me}: its own codec"
        );
        // One stream: its SSRC, consecutive sequence numbers.
        assert!(
            headers
                .windows(2)
                .all(|w| w[1].ssrc == w[0].ssrc && w[1].seq == w[0].seq.wrapping_add(1))
        );
        let tail = &pcm[pcm.len() / 2..];
        assert!(goertzel(tail, own) < 300.0, "{me} hears itself");
        for (j, &(_, _, _, hz)) in talkers.iter().enumerate() {
            if j != i {
                let l = goertzel(tail, hz);
                assert!(l > 3000.0, "{me} misses {hz} Hz: {l:.0}");
            }
        }
    }
    // The recording: the caller left, what the caller heard (B and C) right.
    w.m.stop_recording(w.now + Duration::from_secs(1), rec);
    let mut data = Vec::new();
    while let Some(op) = w.m.poll_recording() {
        if let RecordingOp::Data { bytes, .. } = op {
            data.extend_from_slice(&bytes);
        }
    }
    let ch = |k: usize| -> Vec<i16> {
        data.chunks_exact(4)
            .map(|f| i16::from_le_bytes([f[2 * k], f[2 * k + 1]]))
            .collect()
    };
    let (left, right) = (ch(0), ch(1));
    let (left, right) = (&left[2000..6000], &right[2000..6000]);
    assert!(goertzel(left, 440.0) > 3000.0 && goertzel(left, 1000.0) < 300.0);
    assert!(goertzel(right, 1000.0) > 3000.0 && goertzel(right, 1800.0) > 3000.0);
    assert!(goertzel(right, 440.0) < 300.0);

    // C leaves; A and B are paired again: relayed, the conference gone.
    w.m.leave(c);
    assert!(!w.m.in_conference(c) && w.m.in_conference(w.a));
    assert!(w.m.pair(w.a, w.b));
    assert!(!w.m.wants_tick(), "no conference, no transcoding left");
    let t = w.now + Duration::from_secs(2);
    w.m.handle_packet(
        t,
        pair(0).rtp,
        addr("192.0.2.10:4000"),
        &rtp(0, 60, 9600, 0x100),
    );
    let out = sent(&mut w.m);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, addr("192.0.2.20:6000"));
    // A stale id cannot join.
    assert_eq!(w.m.join(conf, c), Err(MediaError::NoConference));
}

#[test]
fn a_conference_needs_a_codec_and_ends_with_its_last_member() {
    let mut w = world();
    let bare = w.m.open_leg(w.now, 1).unwrap();
    assert_eq!(w.m.conference(&[w.a, bare]), Err(MediaError::NoCodec));
    let conf = w.m.conference(&[w.a, w.b]).unwrap();
    assert!(w.m.wants_tick());
    w.m.close_leg(w.b);
    assert!(w.m.in_conference(w.a));
    w.m.leave(w.a);
    assert!(
        !w.m.wants_tick(),
        "the conference ended with its last member"
    );
    assert_eq!(w.m.join(conf, w.a), Err(MediaError::NoConference));
    assert_eq!(w.m.conference(&[w.a, w.a]), Err(MediaError::Duplicate));
}

/// The right channel's audio over `t0..t0+1 s` while each of `talkers`
/// (socket, address, payload type, payload byte) sends 50 packets.
fn right_channel_of(w: &mut World, rec: u64, talkers: &[(MediaSock, &str, u8, u8)]) -> Vec<i16> {
    for f in 0..50u16 {
        let t = w.now + Duration::from_millis(20 * u64::from(f));
        for &(sock, from, pt, byte) in talkers {
            let mut p = rtp(pt, f, 160 * u32::from(f), u32::from(byte));
            p[12..].fill(byte);
            w.m.handle_packet(t, sock, addr(from), &p);
        }
        w.m.tick(t);
    }
    sent(&mut w.m);
    w.m.stop_recording(w.now + Duration::from_secs(1), rec);
    let mut right = Vec::new();
    while let Some(op) = w.m.poll_recording() {
        if let RecordingOp::Data { bytes, .. } = op {
            right.extend(
                bytes
                    .chunks_exact(4)
                    .map(|f| i16::from_le_bytes([f[2], f[3]])),
            );
        }
    }
    right
}

#[test]
fn the_recording_follows_the_customer_to_the_party_who_stays() {
    // C speaks A-law.
    let c_byte = g711::alaw_encode(3000);
    let c_talks = [(pair(2).rtp, "192.0.2.30:7000", 8, c_byte)];
    // A consultation completed: B talked to C, then A is paired with C.
    let mut w = world();
    let c = third_party(&mut w);
    let rec = w.m.start_recording(w.now, "r@h", w.a, w.b).unwrap();
    assert!(w.m.pair(w.b, c) && w.m.pair(w.a, c));
    w.m.hand_recording(w.b, c);
    w.m.close_leg(w.b);
    let right = right_channel_of(&mut w, rec, &c_talks);
    let c_level = g711::alaw_decode(c_byte);
    assert!(
        right.iter().filter(|&&s| s == c_level).count() > 7000,
        "C on the right"
    );
    // A conference the agent left: A and C paired again.
    let mut w = world();
    let c = third_party(&mut w);
    let rec = w.m.start_recording(w.now, "r@h", w.a, w.b).unwrap();
    w.m.conference(&[w.a, w.b, c]).unwrap();
    w.m.hand_recording(w.b, c);
    w.m.close_leg(w.b);
    assert!(w.m.pair(w.a, c));
    let right = right_channel_of(&mut w, rec, &c_talks);
    assert!(
        right.iter().filter(|&&s| s == c_level).count() > 7000,
        "C on the right"
    );
}
