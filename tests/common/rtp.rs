//! What each party of a call hears: a [`TonePeer`] is one party's audio.
//!
//! A SIPp scenario does the signalling (tests/sipp/tone_*.xml, whose SDP
//! names the peer's port: `-set rtp <TonePeer::port>`); the TonePeer, on
//! that port, sends a continuous sine of its own frequency in PCMU and keeps
//! every PCMU sample it receives, so a test asks "does this party hear
//! 1000 Hz, and not its own 440 Hz?" ([`TonePeer::wait_hearing`],
//! [`TonePeer::level`], [`TonePeer::spectrum`]).
//!
//! Where it sends. The appliance anchors media: each party sends to, and
//! hears from, one of the appliance's RTP ports, which the appliance names
//! in the SDP it gives that party. A TonePeer sends nothing until it has a
//! destination, and it gets one in either of two ways:
//!
//! * it is told: [`TonePeer::send_to`] with the address of the appliance's
//!   SDP, e.g. [`traced_media_addr`] (the SDP the SIPp run received, read
//!   from its message trace while the call runs — the run must have
//!   [`super::Sipp::trace_messages`], which [`super::phones::Phone::start`]
//!   and [`super::phones::call`] turn on) or [`sdp_media_addr`] of any SDP;
//! * it learns: the source of an RTP packet received (symmetric RTP). A
//!   packet from another source than the current destination makes that
//!   source the destination.
//!
//! Telling is the robust choice: the appliance relays only what it
//! receives, so two parties who only learned would wait for each other for
//! ever (an agent's phone hears nothing but relayed audio). The appliance
//! sends to the SDP address until it latches onto the source of what it
//! receives, and a TonePeer sends from the very port its SDP names, so
//! both directions meet on the first packet.
//!
//! Levels are one DFT bin (Goertzel) over the samples received in a
//! window, normalised so that a sine of amplitude A filling the whole
//! window reads about A, and a part of the window that heard nothing counts
//! as silence (see [`TonePeer::level`] and [`tone_level`]). A TonePeer sends at
//! [`TONE_AMPLITUDE`] (8000, about -12 dBFS); [`PRESENT`] and [`ABSENT`]
//! are the thresholds tests compare with.
//!
//! Nothing here sends to any address but loopback ones.

#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::media::g711::{decode_ulaw, encode_ulaw};

use super::{PortBlock, SippProc, find, parse_sipp_messages, reserve_ports};

/// Sample rate of G.711.
pub const RATE: f64 = 8000.0;
/// Samples in one 20 ms packet.
pub const FRAME: usize = 160;
/// Packet interval.
pub const PTIME: Duration = Duration::from_millis(20);
/// Amplitude of the tone a TonePeer sends: about -12 dBFS.
pub const TONE_AMPLITUDE: f64 = 8000.0;
/// A level above this (an eighth of [`TONE_AMPLITUDE`], -18 dB) means the
/// tone is heard: a relayed tone reads about 8000 once it fills the window
/// and above 1000 once it has filled an eighth of it (about 60 ms of a
/// 500 ms window: a few packets, not a stray one), while μ-law
/// quantisation noise, the leak of another tone into this bin and silence
/// read well under 100.
pub const PRESENT: f64 = TONE_AMPLITUDE / 8.0;
/// A level below this (1/40 of [`TONE_AMPLITUDE`], -32 dB) means the tone is
/// not heard: room for quantisation noise and the sidelobes of the tones
/// that are heard, far below anything relayed.
pub const ABSENT: f64 = TONE_AMPLITUDE / 40.0;
/// The window [`TonePeer::wait_hearing`] measures over.
pub const LISTEN: Duration = Duration::from_millis(500);
/// How long received audio is kept.
const KEEP: Duration = Duration::from_secs(60);
/// RTP payload type of PCMU.
const PT_PCMU: u8 = 0;

/// What the peer's thread and the test share.
struct Shared {
    /// PCMU packets received: arrival time and decoded samples, oldest
    /// first, at most [`KEEP`] old.
    heard: Mutex<VecDeque<(Instant, Vec<i16>)>>,
    /// RTP packets received (any payload type; RTCP not counted).
    packets: AtomicU64,
    /// RTP packets sent.
    sent: AtomicU64,
    /// Where it sends; `None` until told or until a first packet came.
    target: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
}

/// One party's audio: sends a tone, keeps what it hears. Dropping it stops
/// its thread.
pub struct TonePeer {
    tone_hz: f64,
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The RTP port and the RTCP port after it, claimed.
    _ports: PortBlock,
}

impl TonePeer {
    /// Binds 127.0.0.1 on an even port of its own (the next port, RTCP's,
    /// is claimed too but never bound) and starts its thread, which sends
    /// `tone_hz` once it has a destination (see the module doc).
    pub fn start(tone_hz: f64) -> TonePeer {
        assert!(
            tone_hz > 0.0 && tone_hz < RATE / 2.0,
            "a tone between 0 and 4000 Hz, not {tone_hz}"
        );
        // Three consecutive ports hold an even one and its successor,
        // whatever the parity of the base the kernel chose.
        let ports = reserve_ports(3);
        let i = ports.base % 2;
        let port = ports.port(i);
        let socket = UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("TonePeer cannot bind 127.0.0.1:{port}: {e}"));
        let shared = Arc::new(Shared {
            heard: Mutex::new(VecDeque::new()),
            packets: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            target: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("tone-{tone_hz}-{port}"))
                .spawn(move || run(&socket, &shared, tone_hz, port))
                .expect("spawn the TonePeer thread")
        };
        TonePeer {
            tone_hz,
            port,
            shared,
            thread: Some(thread),
            _ports: ports,
        }
    }

    /// The RTP port, for the SDP (`-set rtp PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The frequency it sends.
    pub fn tone_hz(&self) -> f64 {
        self.tone_hz
    }

    /// Starts sending to `addr` now (a loopback address), e.g. the
    /// appliance's media address from its SDP. A packet received later
    /// from another source still makes that source the destination.
    pub fn send_to(&self, addr: SocketAddr) {
        assert!(
            addr.ip().is_loopback(),
            "TonePeer sends only to loopback, not {addr}"
        );
        *self.shared.target.lock().expect("TonePeer target") = Some(addr);
    }

    /// Where it sends, if anywhere yet.
    pub fn target(&self) -> Option<SocketAddr> {
        *self.shared.target.lock().expect("TonePeer target")
    }

    /// RTP packets received so far (any payload type; RTCP is not counted).
    pub fn packets(&self) -> u64 {
        self.shared.packets.load(Ordering::Relaxed)
    }

    /// RTP packets sent so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// The PCMU samples received in the last `window`, in arrival order.
    pub fn heard(&self, window: Duration) -> Vec<i16> {
        let now = Instant::now();
        let heard = self.shared.heard.lock().expect("TonePeer buffer");
        heard
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= window)
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }

    /// The level of `hz` in what was heard in the last `window`: the
    /// [`tone_level`] of the samples received, scaled down when they are
    /// fewer than the window holds (8 per ms), as if the missing ones were
    /// silence. A sine of amplitude A heard all through the window reads
    /// about A; heard during a part of it (just starting, or stopped),
    /// about A times that part; nothing heard reads 0.
    pub fn level(&self, hz: f64, window: Duration) -> f64 {
        let pcm = self.heard(window);
        let expected = window.as_secs_f64() * RATE;
        let n = pcm.len() as f64;
        tone_level(&pcm, hz) * n / n.max(expected)
    }

    /// Waits (polling every 50 ms) until [`TonePeer::level`] of `hz` over
    /// [`LISTEN`] is above [`PRESENT`]; returns that level. Panics at
    /// `deadline` with what it heard instead.
    #[track_caller]
    pub fn wait_hearing(&self, hz: f64, deadline: Instant) -> f64 {
        self.wait_level(hz, PRESENT, deadline)
    }

    /// Waits (polling every 50 ms) until the level of `hz` over [`LISTEN`]
    /// is above `min`; returns it. `min` near [`TONE_AMPLITUDE`] (say 0.9
    /// of it) waits until the tone fills (nearly) the whole window, so
    /// that what was heard before it (ringback, silence) is out of it.
    /// Panics at `deadline` with the spectrum heard.
    #[track_caller]
    pub fn wait_level(&self, hz: f64, min: f64, deadline: Instant) -> f64 {
        loop {
            let level = self.level(hz, LISTEN);
            if level > min {
                return level;
            }
            assert!(
                Instant::now() < deadline,
                "the {} Hz peer on port {} never heard {hz} Hz above {min:.0} (last level \
                 {level:.1}): {}",
                self.tone_hz,
                self.port,
                self.spectrum(&[hz, self.tone_hz], LISTEN)
            );
            // Paces the polling of the received audio.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it heard in the last `window`, for assertion messages: the
    /// level at each of `freqs`, the strongest frequencies on a 10 Hz grid
    /// (measured over the last 100 ms of it, whose 10 Hz resolution cannot
    /// miss a tone between grid points), the RMS, and the packet counts and
    /// destination.
    pub fn spectrum(&self, freqs: &[f64], window: Duration) -> String {
        let pcm = self.heard(window);
        let mut s = format!(
            "heard {} samples in the last {window:?} ({} RTP packets received, {} sent, \
             sending to {:?})",
            pcm.len(),
            self.packets(),
            self.sent(),
            self.target()
        );
        if pcm.is_empty() {
            return s;
        }
        s.push_str("; levels:");
        for &f in freqs {
            let _ = write!(s, " {f} Hz {:.1},", tone_level(&pcm, f));
        }
        let rms =
            (pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        let _ = write!(s, " RMS {rms:.1}; strongest:");
        for (f, l) in peaks(&pcm[pcm.len().saturating_sub(800)..], 5) {
            let _ = write!(s, " {f} Hz {l:.1},");
        }
        s.pop();
        s
    }
}

impl Drop for TonePeer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The peer's thread: receives with a timeout no longer than the time to
/// the next packet due, and sends a packet every [`PTIME`] once it has a
/// destination.
fn run(socket: &UdpSocket, shared: &Shared, tone_hz: f64, port: u16) {
    // Fixed per peer, different between peers (no randomness needed).
    let ssrc = 0x5eed_0000 ^ (std::process::id() << 16) ^ u32::from(port);
    let mut seq: u16 = port.wrapping_mul(7);
    let mut first = true;
    let mut ts: u32 = u32::from(port) << 8;
    let step = 2.0 * std::f64::consts::PI * tone_hz / RATE;
    let mut phase = 0.0_f64;
    let mut due: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let target = *shared.target.lock().expect("TonePeer target");
        if let Some(to) = target {
            let at = due.get_or_insert(now);
            if now >= *at {
                let mut pcm = [0i16; FRAME];
                for s in &mut pcm {
                    *s = (TONE_AMPLITUDE * phase.sin()).round() as i16;
                    phase = (phase + step) % (2.0 * std::f64::consts::PI);
                }
                let mut packet = [0u8; 12 + FRAME];
                packet[0] = 0x80;
                // The marker on the first packet of the stream.
                packet[1] = PT_PCMU | if first { 0x80 } else { 0 };
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[4..8].copy_from_slice(&ts.to_be_bytes());
                packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                encode_ulaw(&pcm, &mut packet[12..]);
                if socket.send_to(&packet, to).is_ok() {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                first = false;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(FRAME as u32);
                *at += PTIME;
                // Fell far behind (a stalled box): carry on from now
                // rather than send a burst.
                if now > *at + 5 * PTIME {
                    *at = now + PTIME;
                }
            }
        }
        let wait = match (target, due) {
            (Some(_), Some(at)) => at.saturating_duration_since(Instant::now()),
            _ => PTIME,
        };
        // A zero timeout is an error for set_read_timeout.
        let wait = wait.clamp(Duration::from_millis(1), PTIME);
        if socket.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            receive(shared, &buf[..n], from);
        }
    }
}

/// One datagram in: RTP (version 2, not RTCP) counts and teaches the
/// destination; PCMU is decoded into the buffer.
fn receive(shared: &Shared, d: &[u8], from: SocketAddr) {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return;
    }
    let pt = d[1] & 0x7f;
    // RTCP (SR, RR, SDES, BYE, APP: 200..=204) shows as 72..=76 here.
    if (72..=76).contains(&pt) {
        return;
    }
    shared.packets.fetch_add(1, Ordering::Relaxed);
    {
        let mut target = shared.target.lock().expect("TonePeer target");
        if *target != Some(from) && from.ip().is_loopback() {
            *target = Some(from);
        }
    }
    if pt != PT_PCMU {
        return;
    }
    let Some(payload) = rtp_payload(d) else {
        return;
    };
    let mut pcm = vec![0i16; payload.len()];
    decode_ulaw(payload, &mut pcm);
    let now = Instant::now();
    let mut heard = shared.heard.lock().expect("TonePeer buffer");
    while heard
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > KEEP)
    {
        heard.pop_front();
    }
    heard.push_back((now, pcm));
}

/// The payload of an RTP packet: after the CSRCs and any header
/// extension, before any padding.
fn rtp_payload(d: &[u8]) -> Option<&[u8]> {
    let mut start = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let ext = d.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*d.last()?))?;
    }
    d.get(start..end)
}

/// The level of `hz` in 8 kHz `pcm`: the magnitude of one DFT bin at `hz`
/// (Goertzel; `hz` need not fall on a bin), times 2/N. A sine of amplitude
/// A over all N samples reads about A (exactly A when N spans whole
/// periods); a tone over only part of them reads A times that part; other
/// frequencies leak in by their sidelobes, about A / (π · Δf · N/8000) at a
/// distance Δf Hz (≈ 9 for 8000 at 560 Hz over 500 ms). 0 for no samples.
pub fn tone_level(pcm: &[i16], hz: f64) -> f64 {
    tone_level_at(pcm, hz, RATE)
}

/// [`tone_level`] of `pcm` sampled at `rate` Hz.
pub fn tone_level_at(pcm: &[i16], hz: f64, rate: f64) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
    let (mut s1, mut s2) = (0.0_f64, 0.0_f64);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / pcm.len() as f64
}

/// The `n` strongest local maxima of [`tone_level`] on a 10 Hz grid from
/// 50 to 3950 Hz, strongest first.
fn peaks(pcm: &[i16], n: usize) -> Vec<(u32, f64)> {
    let grid: Vec<(u32, f64)> = (5..=395)
        .map(|i| (i * 10, tone_level(pcm, f64::from(i * 10))))
        .collect();
    let mut maxima: Vec<(u32, f64)> = grid
        .iter()
        .enumerate()
        .filter(|&(i, &(_, l))| {
            let left = i.checked_sub(1).map_or(0.0, |j| grid[j].1);
            let right = grid.get(i + 1).map_or(0.0, |g| g.1);
            l >= 1.0 && l >= left && l > right
        })
        .map(|(_, &g)| g)
        .collect();
    maxima.sort_by(|a, b| b.1.total_cmp(&a.1));
    maxima.truncate(n);
    maxima
}

/// The audio address of an SDP: the first `m=audio` line's port, at the
/// `c=` address of that media section or else of the session. `None`
/// without an audio stream, with port 0 (a declined stream) or without a
/// usable `c=` line.
pub fn sdp_media_addr(sdp: &str) -> Option<SocketAddr> {
    let conn = |l: &str| -> Option<IpAddr> {
        let mut f = l.strip_prefix("c=")?.split_whitespace();
        let (_net, _kind, addr) = (f.next()?, f.next()?, f.next()?);
        // A multicast TTL or count follows a slash.
        addr.split('/').next()?.parse().ok()
    };
    let mut session: Option<IpAddr> = None;
    let mut audio: Option<(u16, Option<IpAddr>)> = None;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            if audio.is_some() {
                break;
            }
            if let Some(rest) = line.strip_prefix("m=audio ") {
                // `port` or `port/count`.
                let port: u16 = rest
                    .split_whitespace()
                    .next()?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()?;
                audio = Some((port, None));
            }
        } else if line.starts_with("c=") {
            match &mut audio {
                Some((_, c)) => *c = conn(line),
                None => session = conn(line),
            }
        }
    }
    let (port, media) = audio?;
    let ip = media.or(session)?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

/// The appliance's audio address from the latest SDP a running SIPp
/// received (an INVITE for a phone, the 200 for a caller), read from its
/// message trace ([`super::Sipp::trace_messages`]) while the call runs.
/// Waits for one until `deadline`, then panics.
#[track_caller]
pub fn traced_media_addr(proc: &SippProc, deadline: Instant) -> SocketAddr {
    let path = proc.dir.path().join("messages.log");
    loop {
        let log = std::fs::read(&path).unwrap_or_default();
        if find(&log, b"m=audio").is_some() {
            let found = parse_sipp_messages(&log)
                .iter()
                .rev()
                .filter(|t| !t.sent)
                .find_map(|t| sdp_media_addr(&t.msg.body_text()));
            if let Some(addr) = found {
                return addr;
            }
        }
        assert!(
            Instant::now() < deadline,
            "SIPp ({}) received no SDP with an audio address by the deadline",
            proc.scenario.display()
        );
        // Paces the polling of the trace file.
        std::thread::sleep(Duration::from_millis(10));
    }
}
