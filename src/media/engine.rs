//! The media engine of one shard: anchored legs, the RTP relay, symmetric
//! latching, stream continuity and liveness.
//!
//! A **leg** is one party's media: an RTP/RTCP port pair of this shard
//! (RTP even, RTCP + 1), the description it sent ([`anchor::Remote`]) and
//! ours to it. The call engine opens a leg per party, passes every SDP it
//! relays through [`MediaEngine::translate_offer`] /
//! [`MediaEngine::translate_answer`] (which connect the two legs), and
//! closes the legs when the call ends.
//!
//! **Relay fast path** ([`MediaEngine::handle_packet`]): a datagram on a
//! leg's RTP port is parsed (header only), latched, counted and copied
//! into the shard's send queue with its payload type mapped to the peer's
//! and its sequence number, timestamp and SSRC rewritten for continuity,
//! addressed to where the peer's packets come from. No allocation, no
//! lookup beyond two vector indexes: ports map to legs by socket index.
//!
//! **Latching** (symmetric RTP, RFC 4961 §3): the first packet from a leg
//! sets where we send to it, whatever its SDP said (NAT). Packets from
//! elsewhere are dropped and counted, until the leg sends a new
//! description (a re-INVITE may move it).
//!
//! **Continuity**: what a receiver hears may switch sources (another leg
//! after a transfer, a prompt, music). Each leg's outgoing stream keeps one
//! SSRC (the first source's), and sequence numbers and timestamps carry on
//! from the last packet sent, the timestamp advanced by the wall time that
//! passed; the first packet after a switch has the marker bit set.
//!
//! **Liveness**: once the call engine arms a leg, a leg that sends nothing
//! for `rtp_timeout` (`hold_timeout` while on hold) is reported as
//! [`MediaEvent::Inactive`]; the call engine ends the call.
//!
//! Sans-IO: sockets are opaque [`MediaSock`] indexes the shell binds and
//! hands in with [`MediaEngine::add_pair`]; time comes in as `now`.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::anchor::{self, AnchorError, Codec, LocalSide, Remote};
use super::rtp::{self, RtpHeader};
use crate::sdp::{Direction, SessionDescription};
use crate::stats::ShardCounters;

/// A socket of the shell, by index (the driver's socket id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaSock(pub u16);

/// A bound RTP/RTCP port pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    pub port: u16,
    pub rtp: MediaSock,
    pub rtcp: MediaSock,
}

/// A leg, with a generation so a stale id never reaches a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LegId {
    idx: u32,
    generation: u32,
}

/// Settings of the media engine.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address in our SDP (the RTP sockets are bound to it).
    pub ip: IpAddr,
    /// An armed leg silent this long ends its call.
    pub rtp_timeout: Duration,
    /// The same while the call is on hold.
    pub hold_timeout: Duration,
    /// Offer the codecs we can transcode to callees.
    pub transcode: bool,
    /// Seed for SSRCs and SDP session ids.
    pub seed: u64,
}

impl MediaConfig {
    /// 127.0.0.1, 60 s / 1 h timeouts (tests).
    pub fn loopback() -> MediaConfig {
        MediaConfig {
            ip: IpAddr::from([127, 0, 0, 1]),
            rtp_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(3600),
            transcode: true,
            seed: 11,
        }
    }
}

/// What the engine reports to the call engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF digit from the leg.
    Dtmf { call: u64, leg: LegId, digit: char },
    /// The leg sent no RTP for the timeout.
    Inactive { call: u64, leg: LegId },
}

/// Problems the call engine turns into SIP answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("no free RTP port on this shard")]
    NoPorts,
    #[error("unknown media leg")]
    NoLeg,
    #[error("bad SDP: {0}")]
    Sdp(String),
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    #[error("an answer without an offer")]
    NoOffer,
}

/// Per-leg media statistics for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    /// Expected minus received, from sequence numbers (RFC 3550 A.3).
    pub lost: i64,
}

/// Largest datagram the relay carries.
pub const MAX_PACKET: usize = 1500;
/// Packets the send queue holds between two drains.
const TX_SLOTS: usize = 4096;
/// A payload type with no mapping.
const UNMAPPED: u8 = 0xff;
/// The send queue's slot stride.
const SLOT: usize = MAX_PACKET;

/// Outgoing stream state of a leg: one SSRC, continuous numbering.
#[derive(Debug, Clone, Copy)]
struct TxStream {
    ssrc: u32,
    started: bool,
    /// Current source: (leg index, its SSRC).
    source: (u32, u32),
    seq_delta: u16,
    ts_delta: u32,
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
    mark_next: bool,
}

impl TxStream {
    fn new(ssrc: u32) -> TxStream {
        TxStream {
            ssrc,
            started: false,
            source: (u32::MAX, 0),
            seq_delta: 0,
            ts_delta: 0,
            last_seq: 0,
            last_ts: 0,
            last_at: None,
            mark_next: false,
        }
    }

    /// Maps an incoming (seq, ts) from `source` to the outgoing stream.
    fn map(
        &mut self,
        now: Instant,
        source: (u32, u32),
        seq: u16,
        ts: u32,
        clock: u32,
    ) -> (u16, u32, u32, bool) {
        if !self.started {
            // The first source's numbering and SSRC are the stream's.
            self.started = true;
            self.ssrc = source.1;
            self.source = source;
        } else if self.source != source {
            let elapsed = self
                .last_at
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default();
            let ticks = ((elapsed.as_micros() as u64 * u64::from(clock)) / 1_000_000).max(1);
            let out_ts = self.last_ts.wrapping_add(ticks as u32);
            self.ts_delta = out_ts.wrapping_sub(ts);
            self.seq_delta = self.last_seq.wrapping_add(1).wrapping_sub(seq);
            self.source = source;
            self.mark_next = true;
        }
        let out_seq = seq.wrapping_add(self.seq_delta);
        let out_ts = ts.wrapping_add(self.ts_delta);
        if self.last_at.is_none() || rtp::seq_after(out_seq, self.last_seq) {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
            self.last_at = Some(now);
        }
        let mark = std::mem::take(&mut self.mark_next);
        (out_seq, out_ts, self.ssrc, mark)
    }
}

/// Receive sequence tracking for loss (RFC 3550 A.1, simplified); a new
/// SSRC starts a new count.
#[derive(Debug, Clone, Copy, Default)]
struct SeqTrack {
    ssrc: u32,
    base: u32,
    max: u32,
    started: bool,
    /// Packets expected from earlier SSRCs.
    earlier: u64,
}

impl SeqTrack {
    fn on(&mut self, ssrc: u32, seq: u16) {
        if self.started && ssrc != self.ssrc {
            self.earlier += self.current();
            self.started = false;
        }
        self.ssrc = ssrc;
        if !self.started {
            self.started = true;
            self.base = u32::from(seq);
            self.max = u32::from(seq);
            return;
        }
        let cycles = self.max & !0xffff;
        let cur = cycles | u32::from(seq);
        let ext = if rtp::seq_after(seq, self.max as u16) {
            if cur < self.max { cur + 0x1_0000 } else { cur }
        } else {
            return;
        };
        self.max = ext;
    }

    fn current(&self) -> u64 {
        if self.started {
            u64::from(self.max - self.base) + 1
        } else {
            0
        }
    }

    fn expected(&self) -> u64 {
        self.earlier + self.current()
    }
}

#[derive(Debug)]
struct Leg {
    generation: u32,
    call: u64,
    pair: PortPair,
    local: LocalSide,
    /// Its last description.
    remote: Option<Remote>,
    /// Its last offer (the answer to it is translated against it).
    offer: Option<SessionDescription>,
    /// Where its RTP / RTCP go.
    dst: Option<SocketAddr>,
    dst_rtcp: Option<SocketAddr>,
    latched: bool,
    rtcp_latched: bool,
    /// The leg hearing this one.
    peer: Option<u32>,
    /// Payload type received here → payload type to send to the peer.
    pt_out: [u8; 128],
    /// RTP clock rate per payload type received here (0 = unknown).
    clock: [u32; 128],
    /// telephone-event payload type this leg sends.
    event_pt: Option<u8>,
    last_event_ts: Option<u32>,
    /// Liveness armed since.
    watch: Option<Instant>,
    last_rx: Option<Instant>,
    tx: TxStream,
    seq: SeqTrack,
    stats: LegStats,
}

impl Leg {
    fn held(&self) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.direction != Direction::SendRecv || r.rtp.is_none())
    }
}

/// Preallocated queue of packets to send.
struct TxQueue {
    buf: Box<[u8]>,
    meta: Vec<(MediaSock, SocketAddr, u16)>,
}

impl TxQueue {
    fn new() -> TxQueue {
        TxQueue {
            buf: vec![0u8; TX_SLOTS * SLOT].into_boxed_slice(),
            meta: Vec::with_capacity(TX_SLOTS),
        }
    }

    /// A slot to fill, or None when full.
    fn slot(&mut self) -> Option<&mut [u8]> {
        let i = self.meta.len();
        (i < TX_SLOTS).then(|| &mut self.buf[i * SLOT..(i + 1) * SLOT])
    }

    fn commit(&mut self, sock: MediaSock, dst: SocketAddr, len: usize) {
        self.meta.push((sock, dst, len as u16));
    }
}

/// The media engine of one shard.
pub struct MediaEngine {
    cfg: MediaConfig,
    /// Bound pairs not in use, oldest released first.
    free: VecDeque<PortPair>,
    /// Socket index → (leg index, is RTCP).
    routes: Vec<Option<(u32, bool)>>,
    legs: Vec<Option<Leg>>,
    generations: Vec<u32>,
    vacant: Vec<u32>,
    open: usize,
    tx: TxQueue,
    events: VecDeque<MediaEvent>,
    counters: Arc<ShardCounters>,
    rng: u64,
}

impl MediaEngine {
    pub fn new(cfg: MediaConfig, counters: Arc<ShardCounters>) -> MediaEngine {
        let rng = cfg.seed | 1;
        MediaEngine {
            cfg,
            free: VecDeque::new(),
            routes: Vec::new(),
            legs: Vec::new(),
            generations: Vec::new(),
            vacant: Vec::new(),
            open: 0,
            tx: TxQueue::new(),
            events: VecDeque::new(),
            counters,
            rng,
        }
    }

    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: SSRCs and session ids only need to differ.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    // ------------------------------------------------------------------
    // Ports
    // ------------------------------------------------------------------

    /// A pair the shell bound for this engine.
    pub fn add_pair(&mut self, pair: PortPair) {
        self.free.push_back(pair);
    }

    /// Adds `n` pairs from RTP port `first_port`, with socket indexes from
    /// 0x8000 up: for simulations and tests, where no socket exists.
    pub fn add_virtual_pairs(&mut self, first_port: u16, n: u16) {
        for i in 0..n {
            self.add_pair(PortPair {
                port: first_port.wrapping_add(2 * i),
                rtp: MediaSock(0x8000 + 2 * i),
                rtcp: MediaSock(0x8001 + 2 * i),
            });
        }
    }

    /// Bound pairs not in use.
    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }

    /// Legs open now.
    pub fn open_legs(&self) -> usize {
        self.open
    }

    fn route(&mut self, sock: MediaSock, to: Option<(u32, bool)>) {
        let i = usize::from(sock.0);
        if self.routes.len() <= i {
            self.routes.resize(i + 1, None);
        }
        self.routes[i] = to;
    }

    // ------------------------------------------------------------------
    // Legs (call set-up path)
    // ------------------------------------------------------------------

    /// Opens a leg for call `call` on a free port pair.
    pub fn open_leg(&mut self, now: Instant, call: u64) -> Result<LegId, MediaError> {
        let Some(pair) = self.free.pop_front() else {
            self.counters.media_ports_exhausted.bump();
            return Err(MediaError::NoPorts);
        };
        let idx = match self.vacant.pop() {
            Some(i) => i,
            None => {
                self.legs.push(None);
                self.generations.push(0);
                (self.legs.len() - 1) as u32
            }
        };
        let generation = self.generations[idx as usize];
        let session_id = self.random() >> 1;
        let ssrc = self.random() as u32;
        self.legs[idx as usize] = Some(Leg {
            generation,
            call,
            pair,
            local: LocalSide::new(self.cfg.ip, pair.port, session_id),
            remote: None,
            offer: None,
            dst: None,
            dst_rtcp: None,
            latched: false,
            rtcp_latched: false,
            peer: None,
            pt_out: [UNMAPPED; 128],
            clock: [0; 128],
            event_pt: None,
            last_event_ts: None,
            watch: None,
            last_rx: None,
            tx: TxStream::new(ssrc),
            seq: SeqTrack::default(),
            stats: LegStats::default(),
        });
        let _ = now;
        self.route(pair.rtp, Some((idx, false)));
        self.route(pair.rtcp, Some((idx, true)));
        self.open += 1;
        self.counters.media_legs.set(self.open as u64);
        Ok(LegId { idx, generation })
    }

    fn leg(&self, id: LegId) -> Option<&Leg> {
        self.legs
            .get(id.idx as usize)?
            .as_ref()
            .filter(|l| l.generation == id.generation)
    }

    fn leg_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        self.legs
            .get_mut(id.idx as usize)?
            .as_mut()
            .filter(|l| l.generation == id.generation)
    }

    /// Our RTP port of a leg.
    pub fn port(&self, id: LegId) -> Option<u16> {
        self.leg(id).map(|l| l.pair.port)
    }

    /// Statistics of a leg.
    pub fn stats(&self, id: LegId) -> Option<LegStats> {
        self.leg(id).map(|l| {
            let mut s = l.stats;
            s.lost = l.seq.expected() as i64 - s.packets_in as i64;
            s
        })
    }

    /// Closes a leg: its ports go back to the pool.
    pub fn close_leg(&mut self, id: LegId) {
        if self.leg(id).is_none() {
            return;
        }
        let Some(leg) = self.legs[id.idx as usize].take() else {
            return;
        };
        self.generations[id.idx as usize] = leg.generation.wrapping_add(1);
        self.vacant.push(id.idx);
        self.route(leg.pair.rtp, None);
        self.route(leg.pair.rtcp, None);
        if let Some(p) = leg.peer
            && let Some(Some(pl)) = self.legs.get_mut(p as usize)
            && pl.peer == Some(id.idx)
        {
            pl.peer = None;
        }
        self.free.push_back(leg.pair);
        self.open -= 1;
        self.counters.media_legs.set(self.open as u64);
    }

    /// Closes every leg of call `call` (set-up failed half way).
    pub fn close_legs_of(&mut self, call: u64) {
        let ids: Vec<LegId> = self
            .legs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.as_ref().filter(|l| l.call == call)?;
                Some(LegId {
                    idx: i as u32,
                    generation: l.generation,
                })
            })
            .collect();
        for id in ids {
            self.close_leg(id);
        }
    }

    /// Starts the liveness watch of a leg (the call is answered).
    pub fn arm(&mut self, now: Instant, id: LegId) {
        if let Some(l) = self.leg_mut(id) {
            l.watch.get_or_insert(now);
        }
    }

    /// Learns a leg's description: where to send until it latches.
    fn learn(&mut self, id: LegId, remote: Remote) {
        if let Some(l) = self.leg_mut(id) {
            if l.remote.as_ref().map(|r| r.rtp) != Some(remote.rtp) {
                // A new address: send there until it speaks, then latch.
                l.dst = remote.rtp;
                l.dst_rtcp = remote.rtcp;
                l.latched = false;
                l.rtcp_latched = false;
            }
            for c in &remote.codecs {
                if let Some(slot) = l.clock.get_mut(usize::from(c.pt)) {
                    *slot = c.clock_rate;
                }
            }
            l.remote = Some(remote);
        }
    }

    /// `from` sent `sdp` as an offer; returns the offer for `to`.
    pub fn translate_offer(
        &mut self,
        from: LegId,
        to: LegId,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        let parsed = SessionDescription::parse(sdp).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let (_, remote) = anchor::describe(&parsed)?;
        let transcode = self.cfg.transcode;
        let out = {
            let t = self.leg_mut(to).ok_or(MediaError::NoLeg)?;
            anchor::offer(&parsed, &mut t.local, transcode)?.0
        };
        self.learn(from, remote);
        let f = self.leg_mut(from).ok_or(MediaError::NoLeg)?;
        f.offer = Some(parsed);
        Ok(Bytes::from(out))
    }

    /// `from` answered `to`'s offer with `sdp`; returns the answer for
    /// `to` and connects the two legs.
    pub fn translate_answer(
        &mut self,
        from: LegId,
        to: LegId,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        let parsed = SessionDescription::parse(sdp).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let (_, remote) = anchor::describe(&parsed)?;
        let (out, agreement) = {
            let t = self.leg_mut(to).ok_or(MediaError::NoLeg)?;
            let offer = t.offer.clone().ok_or(MediaError::NoOffer)?;
            anchor::answer(&offer, &parsed, &mut t.local)?
        };
        self.learn(from, remote);
        self.connect(from, to);
        let (Some(f), Some(t)) = (self.leg(from), self.leg(to)) else {
            return Err(MediaError::NoLeg);
        };
        let (Some(fr), Some(tr)) = (f.remote.clone(), t.remote.clone()) else {
            return Err(MediaError::NoLeg);
        };
        let relays = agreement.relays();
        let f_events = agreement.answerer_events.as_ref().map(|c| c.pt);
        let t_events = agreement.offerer_events.as_ref().map(|c| c.pt);
        if let Some(f) = self.leg_mut(from) {
            f.pt_out = pt_map(&fr.codecs, &tr.codecs, relays);
            f.event_pt = f_events.or(fr.events().map(|c| c.pt));
        }
        if let Some(t) = self.leg_mut(to) {
            t.pt_out = pt_map(&tr.codecs, &fr.codecs, relays);
            t.event_pt = t_events.or(tr.events().map(|c| c.pt));
        }
        Ok(Bytes::from(out))
    }

    /// `a` and `b` hear each other (and nobody else hears them).
    pub fn connect(&mut self, a: LegId, b: LegId) {
        if self.leg(a).is_none() || self.leg(b).is_none() {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            let old = self.leg(x).and_then(|l| l.peer);
            if let Some(o) = old.filter(|o| *o != y.idx)
                && let Some(Some(ol)) = self.legs.get_mut(o as usize)
                && ol.peer == Some(x.idx)
            {
                ol.peer = None;
            }
            if let Some(l) = self.leg_mut(x) {
                l.peer = Some(y.idx);
            }
        }
    }

    // ------------------------------------------------------------------
    // Packets (the hot path)
    // ------------------------------------------------------------------

    /// A datagram arrived on media socket `sock` from `src`.
    pub fn handle_packet(&mut self, now: Instant, sock: MediaSock, src: SocketAddr, data: &[u8]) {
        let Some(&Some((idx, is_rtcp))) = self.routes.get(usize::from(sock.0)) else {
            self.counters.rtp_unrouted.bump();
            return;
        };
        if is_rtcp || rtp::is_rtcp(data) {
            self.handle_rtcp(now, idx, src, data);
            return;
        }
        let Some(h) = RtpHeader::parse(data) else {
            self.counters.rtp_malformed.bump();
            return;
        };
        let Some(Some(leg)) = self.legs.get_mut(idx as usize) else {
            return;
        };
        // Symmetric latching.
        if !leg.latched {
            leg.dst = Some(src);
            leg.latched = true;
        } else if leg.dst != Some(src) {
            self.counters.rtp_foreign.bump();
            return;
        }
        self.counters.rtp_in.bump();
        leg.last_rx = Some(now);
        leg.stats.packets_in += 1;
        leg.stats.bytes_in += data.len() as u64;
        leg.seq.on(h.ssrc, h.seq);
        let pt = h.payload_type;
        if leg.event_pt == Some(pt) {
            let call = leg.call;
            let id = LegId {
                idx,
                generation: leg.generation,
            };
            if leg.last_event_ts != Some(h.timestamp) {
                leg.last_event_ts = Some(h.timestamp);
                if let Some(digit) = event_digit(h.payload(data)) {
                    self.counters.dtmf_digits.bump();
                    self.events.push_back(MediaEvent::Dtmf {
                        call,
                        leg: id,
                        digit,
                    });
                }
            }
        }
        let Some(leg) = self.legs.get(idx as usize).and_then(Option::as_ref) else {
            return;
        };
        let out_pt = leg.pt_out[usize::from(pt & 0x7f)];
        let clock = leg.clock[usize::from(pt & 0x7f)].max(8000);
        let Some(peer) = leg.peer else {
            self.counters.rtp_unrouted.bump();
            return;
        };
        let source = (idx, h.ssrc);
        let Some(Some(out)) = self.legs.get_mut(peer as usize) else {
            self.counters.rtp_unrouted.bump();
            return;
        };
        let (Some(dst), true) = (out.dst, out_pt != UNMAPPED) else {
            self.counters.rtp_unrouted.bump();
            return;
        };
        if data.len() > MAX_PACKET {
            self.counters.rtp_malformed.bump();
            return;
        }
        let (seq, ts, ssrc, mark) = out.tx.map(now, source, h.seq, h.timestamp, clock);
        out.stats.packets_out += 1;
        let sock = out.pair.rtp;
        let Some(slot) = self.tx.slot() else {
            self.counters.rtp_tx_overflow.bump();
            return;
        };
        slot[..data.len()].copy_from_slice(data);
        rtp::rewrite(slot, h.marker || mark, out_pt, seq, ts, ssrc);
        self.tx.commit(sock, dst, data.len());
        self.counters.rtp_relayed.bump();
    }

    /// RTCP from a leg: latched like RTP and relayed to the peer's RTCP
    /// port with the sender SSRC of the peer's outgoing stream.
    fn handle_rtcp(&mut self, _now: Instant, idx: u32, src: SocketAddr, data: &[u8]) {
        self.counters.rtcp_in.bump();
        let Some(Some(leg)) = self.legs.get_mut(idx as usize) else {
            return;
        };
        if !leg.rtcp_latched {
            leg.dst_rtcp = Some(src);
            leg.rtcp_latched = true;
        } else if leg.dst_rtcp != Some(src) {
            self.counters.rtp_foreign.bump();
            return;
        }
        let Some(peer) = leg.peer else { return };
        let Some(Some(out)) = self.legs.get(peer as usize) else {
            return;
        };
        let (Some(dst), true) = (out.dst_rtcp, data.len() <= MAX_PACKET && data.len() >= 8) else {
            return;
        };
        let sock = out.pair.rtcp;
        let ssrc = out.tx.started.then_some(out.tx.ssrc);
        let Some(slot) = self.tx.slot() else {
            self.counters.rtp_tx_overflow.bump();
            return;
        };
        slot[..data.len()].copy_from_slice(data);
        if let Some(ssrc) = ssrc {
            slot[4..8].copy_from_slice(&ssrc.to_be_bytes());
        }
        self.tx.commit(sock, dst, data.len());
    }

    /// Hands every queued packet to `send` and empties the queue.
    pub fn drain_transmits(&mut self, mut send: impl FnMut(MediaSock, SocketAddr, &[u8])) {
        for (i, &(sock, dst, len)) in self.tx.meta.iter().enumerate() {
            send(
                sock,
                dst,
                &self.tx.buf[i * SLOT..i * SLOT + usize::from(len)],
            );
        }
        self.tx.meta.clear();
    }

    /// Packets waiting in the send queue.
    pub fn pending_transmits(&self) -> usize {
        self.tx.meta.len()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    /// Liveness sweep; the call engine runs it every second while legs
    /// are open.
    pub fn sweep(&mut self, now: Instant) {
        for (idx, slot) in self.legs.iter().enumerate() {
            let Some(l) = slot else { continue };
            let Some(since) = l.watch else { continue };
            let held = l.held()
                || l.peer
                    .and_then(|p| self.legs.get(p as usize)?.as_ref())
                    .is_some_and(Leg::held);
            let limit = if held {
                self.cfg.hold_timeout
            } else {
                self.cfg.rtp_timeout
            };
            let last = l.last_rx.map_or(since, |t| t.max(since));
            if now.saturating_duration_since(last) >= limit {
                self.counters.media_timeouts.bump();
                self.events.push_back(MediaEvent::Inactive {
                    call: l.call,
                    leg: LegId {
                        idx: idx as u32,
                        generation: l.generation,
                    },
                });
            }
        }
        // A reported leg is not reported again.
        for ev in &self.events {
            if let MediaEvent::Inactive { leg, .. } = *ev
                && let Some(Some(l)) = self.legs.get_mut(leg.idx as usize)
            {
                l.watch = None;
            }
        }
    }
}

/// Payload type map for packets received from a leg with formats `from`
/// to a leg with formats `to`: same encodings map to each other's numbers
/// (all of them when relaying; only telephone-event otherwise, since voice
/// is then transcoded).
fn pt_map(from: &[Codec], to: &[Codec], relays: bool) -> [u8; 128] {
    let mut map = [UNMAPPED; 128];
    for c in from {
        if !relays && !c.is_event() {
            continue;
        }
        if let Some(o) = to.iter().find(|o| o.same_as(c))
            && let Some(slot) = map.get_mut(usize::from(c.pt))
        {
            *slot = o.pt;
        }
    }
    map
}

/// The digit of an RFC 4733 event payload (events 0–15).
fn event_digit(payload: &[u8]) -> Option<char> {
    const DIGITS: &[u8; 16] = b"0123456789*#ABCD";
    DIGITS
        .get(usize::from(*payload.first()?))
        .map(|&d| char::from(d))
}

#[cfg(test)]
mod tests;
