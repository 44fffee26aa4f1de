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
//! description (a re-INVITE may move it). Each latch is also handed to the
//! shell ([`MediaEngine::poll_connect`]), which connects the RTP socket to
//! the source: the kernel then filters foreign packets itself and sends
//! skip the per-packet route lookup; a new description or the leg's end
//! disconnects it again.
//!
//! **Prompts and music** ([`MediaEngine::play`]): a leg can hear a clip
//! instead of its peer, encoded in its own codec on the 10 ms tick; hold
//! music plays to a party while the other holds (sendonly/inactive offer).
//!
//! **Conferences** ([`MediaEngine::conference`]): legs that each hear the
//! mix of the others ([`super::conference`]) instead of a peer, in their
//! own codecs, on the 10 ms tick; a member's packets go to the mix and are
//! not relayed. A recorded caller's mix is recorded as its other channel.
//!
//! **RTCP**: relayed with the SSRC rewritten while RTP is relayed; a leg
//! that hears a stream made here (a clip, or its peer transcoded) gets our
//! own SR/RR instead ([`super::reports`]).
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

use super::anchor::{self, AnchorError, Codec, Known, LocalSide, Remote};
use super::conference::Conference;
use super::dtmf::{EventReceiver, InbandDetector, TelephoneEvent};
use super::player::{Clip, Player, PlayerState};
use super::quality::{MosCodec, ReceiveStats};
use super::recorder::{Channel, Recorder};
use super::reports::{Reporter, Sending};
use super::rtp::{self, RtpHeader};
use super::transcode::{Decode, Encode, FRAME, MAX_SAMPLES, Transcode};
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

/// A conference ([`MediaEngine::conference`]), with a generation so a
/// stale id never reaches a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfId {
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
    /// Listen for in-band DTMF on legs without telephone-event (decodes
    /// every packet of such legs: about 2 µs each).
    pub inband_dtmf: bool,
    /// Seed for SSRCs and SDP session ids.
    pub seed: u64,
    /// The shard: recording ids carry it, so they are unique across shards.
    pub shard: u16,
    /// Played, looped, to a party while the other holds the call.
    pub hold_music: Option<Clip>,
    /// Wall clock: an instant and its Unix time in milliseconds (for the
    /// NTP timestamps of the RTCP we send). None: the engine's own clock.
    pub wall: Option<(Instant, u64)>,
}

impl MediaConfig {
    /// 127.0.0.1, 60 s / 1 h timeouts (tests).
    pub fn loopback() -> MediaConfig {
        MediaConfig {
            ip: IpAddr::from([127, 0, 0, 1]),
            rtp_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(3600),
            transcode: true,
            inband_dtmf: true,
            seed: 11,
            shard: 0,
            hold_music: None,
            wall: None,
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
    /// A clip played once to the leg ([`MediaEngine::play`]) has ended;
    /// the leg hears its peer again.
    PlayDone { call: u64, leg: LegId },
}

/// Work for the recording writer (off the shard): one WAV file per
/// recording, stereo 8 kHz 16-bit, data from offset 44.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingOp {
    /// Create the file for call `call_id` with an empty data chunk.
    Open { id: u64, call_id: String },
    /// Interleaved stereo samples at data offset `offset`.
    Data {
        id: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Complete: `data_len` bytes of data.
    Close { id: u64, data_len: u64 },
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
    #[error("the leg has agreed no voice codec of ours")]
    NoCodec,
    #[error("the conference is full")]
    ConferenceFull,
    #[error("unknown conference")]
    NoConference,
    #[error("a leg given twice")]
    Duplicate,
}

/// Per-leg media statistics for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    /// Expected minus received, from sequence numbers (RFC 3550 A.3).
    pub lost: i64,
    /// RFC 3550 interarrival jitter, in microseconds.
    pub jitter_us: u32,
    /// Estimated MOS (E-model, ITU-T G.107) × 100; 0 before any packet.
    pub mos_x100: u16,
}

/// How often [`MediaEngine::sweep`] runs while legs are open.
pub const SWEEP: Duration = Duration::from_millis(20);
/// Sweeps per second: liveness is checked once a second, RTCP reports every
/// fifth sweep (100 ms), and recordings are flushed a fiftieth at a time,
/// so no sweep copies more than 2 % of the recorded audio at once.
const SWEEPS_PER_SECOND: u64 = 50;

/// How often [`MediaEngine::tick`] runs while legs are transcoded.
pub const TICK: Duration = Duration::from_millis(10);

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

/// A clip playing to a leg, encoded in the leg's codec, 20 ms a packet.
struct Playback {
    player: Player,
    enc: Encode,
    /// Payload type and RTP clock of the leg's voice codec.
    pt: u8,
    clock: u32,
    /// The playback's own stream; [`TxStream`] maps it into the leg's.
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// When the next frame is due (engine milliseconds).
    next_ms: u64,
    /// Hold music: stops when the holder resumes.
    hold: bool,
    pcm: [i16; FRAME],
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Playback(pt {}, hold {})", self.pt, self.hold)
    }
}

/// One call's recording.
struct Rec {
    id: u64,
    recorder: Recorder,
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
    events: EventReceiver,
    /// Its voice codec (payload type it sends, which codec), once agreed.
    voice: Option<(u8, Option<Known>)>,
    /// Decoder, while a feature needs its audio.
    decode: Option<Box<Decode>>,
    /// The recording it feeds, and on which channel.
    rec: Option<(u32, Channel)>,
    /// When it shares no codec with its peer: its audio, re-encoded.
    transcode: Option<Box<Transcode>>,
    /// In-band DTMF detection (when it has no telephone-event).
    inband: Option<Box<InbandDetector>>,
    /// What it hears instead of its peer, while a clip plays.
    play: Option<Box<Playback>>,
    /// The conference it is in (slot of `confs`, member slot): it hears
    /// the mix of the other members instead of a peer.
    conf: Option<(u32, u8)>,
    /// Its RTP SSRC (the last packet's).
    rx_ssrc: u32,
    /// Payload octets sent to it (wraps; RTCP sender info).
    octets_out: u32,
    /// Our own RTCP to it, while what it hears is made here (transcoded
    /// or played) so relayed RTCP would describe another stream.
    reporter: Option<Box<Reporter>>,
    /// Liveness armed since.
    watch: Option<Instant>,
    last_rx: Option<Instant>,
    tx: TxStream,
    quality: ReceiveStats,
    stats: LegStats,
}

impl Leg {
    /// The event for a digit this leg (in slot `idx`) sent.
    fn digit(&self, idx: u32, digit: char) -> MediaEvent {
        MediaEvent::Dtmf {
            call: self.call,
            leg: LegId {
                idx,
                generation: self.generation,
            },
            digit,
        }
    }

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

    /// Queues packet `m`, made here, to leg `out`, continuing the stream
    /// it hears. False when nothing was queued: the leg has no address yet,
    /// or the queue is full (counted).
    fn push_made(
        &mut self,
        now: Instant,
        out: &mut Leg,
        m: Made<'_>,
        counters: &ShardCounters,
    ) -> bool {
        let Some(dst) = out.dst else { return false };
        let (seq, ts, ssrc, switched) = out.tx.map(now, m.source, m.seq, m.ts, m.clock);
        let Some(slot) = self.slot() else {
            counters.rtp_tx_overflow.bump();
            return false;
        };
        let len = rtp::HEADER_LEN + m.payload.len();
        rtp::write_header(slot, m.mark || switched, m.pt, seq, ts, ssrc);
        slot[rtp::HEADER_LEN..len].copy_from_slice(m.payload);
        self.commit(out.pair.rtp, dst, len);
        out.stats.packets_out += 1;
        out.octets_out = out.octets_out.wrapping_add(m.payload.len() as u32);
        true
    }
}

/// A packet made here (a transcoded frame, a frame of a clip).
struct Made<'a> {
    /// Its source, as [`TxStream::map`] tells sources apart.
    source: (u32, u32),
    pt: u8,
    /// RTP clock of `pt`.
    clock: u32,
    seq: u16,
    ts: u32,
    mark: bool,
    payload: &'a [u8],
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
    /// Times are kept as milliseconds since this instant.
    epoch: Option<Instant>,
    recs: Vec<Option<Rec>>,
    next_rec: u64,
    rec_ops: VecDeque<RecordingOp>,
    /// Decoded samples of one packet.
    pcm: Box<[i16; MAX_SAMPLES]>,
    /// Recorded bytes of one flush.
    chunk: Vec<u8>,
    /// Legs with a transcoder.
    transcoding: usize,
    /// Legs hearing a clip.
    playing: usize,
    /// Legs with a [`Reporter`].
    reporting: usize,
    /// Encoded frame of a playback.
    payload: Box<[u8; MAX_PACKET]>,
    /// CNAME of our RTCP (RFC 3550 §6.5.1).
    cname: String,
    /// RTP sockets to connect to their latched peer (or to disconnect).
    connects: VecDeque<(MediaSock, Option<SocketAddr>)>,
    /// Sweeps so far.
    sweeps: u64,
    /// Conferences, by slot, and each slot's generation.
    confs: Vec<Option<Box<Conference>>>,
    conf_generations: Vec<u32>,
    /// Conferences open.
    conferencing: usize,
}

/// Recorded audio handed to the writer per chunk: 1 s (stereo, 16-bit).
const CHUNK_BYTES: usize = 8000 * 4;

impl MediaEngine {
    pub fn new(cfg: MediaConfig, counters: Arc<ShardCounters>) -> MediaEngine {
        let rng = cfg.seed | 1;
        let cname = format!("switchboard-{}@{}", cfg.shard, cfg.ip);
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
            epoch: None,
            recs: Vec::new(),
            next_rec: 0,
            rec_ops: VecDeque::new(),
            pcm: Box::new([0; MAX_SAMPLES]),
            chunk: vec![0; CHUNK_BYTES],
            transcoding: 0,
            playing: 0,
            reporting: 0,
            payload: Box::new([0; MAX_PACKET]),
            cname,
            connects: VecDeque::new(),
            sweeps: 0,
            confs: Vec::new(),
            conf_generations: Vec::new(),
            conferencing: 0,
        }
    }

    /// `now` in milliseconds of the engine's clock.
    fn ms(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u64
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
            events: EventReceiver::new(),
            voice: None,
            decode: None,
            rec: None,
            transcode: None,
            inband: None,
            play: None,
            conf: None,
            rx_ssrc: 0,
            octets_out: 0,
            reporter: None,
            watch: None,
            last_rx: None,
            tx: TxStream::new(ssrc),
            quality: ReceiveStats::new(MosCodec::G711),
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
            let q = l.quality.snapshot();
            s.lost = q.lost;
            s.jitter_us = (q.jitter_ms * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32;
            s.mos_x100 = if q.packets > 0 {
                (q.mos * 100.0).round() as u16
            } else {
                0
            };
            s
        })
    }

    /// Closes a leg: its ports go back to the pool.
    pub fn close_leg(&mut self, id: LegId) {
        if self.leg(id).is_none() {
            return;
        }
        self.set_transcode(id, None);
        self.stop_playing(id);
        self.leave(id);
        let Some(leg) = self.legs[id.idx as usize].take() else {
            return;
        };
        self.generations[id.idx as usize] = leg.generation.wrapping_add(1);
        if leg.reporter.is_some() {
            self.reporting -= 1;
        }
        if leg.latched {
            // The pair goes back to the pool: it must hear anyone again.
            self.connects.push_back((leg.pair.rtp, None));
        }
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
        let connects = &mut self.connects;
        let leg = self
            .legs
            .get_mut(id.idx as usize)
            .and_then(Option::as_mut)
            .filter(|l| l.generation == id.generation);
        if let Some(l) = leg {
            if l.remote.as_ref().map(|r| r.rtp) != Some(remote.rtp) {
                // A new address: send there until it speaks, then latch.
                if l.latched {
                    connects.push_back((l.pair.rtp, None));
                }
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
        let (idx, remote) = anchor::describe(&parsed)?;
        let transcode = self.cfg.transcode;
        // An inactive hold: the held party is offered sendonly, so it
        // listens to the hold music.
        let music_hold = self.cfg.hold_music.is_some() && remote.direction == Direction::Inactive;
        let towards = if music_hold {
            let mut t = parsed.clone();
            t.media[idx].set_direction(Direction::SendOnly);
            std::borrow::Cow::Owned(t)
        } else {
            std::borrow::Cow::Borrowed(&parsed)
        };
        let out = {
            let t = self.leg_mut(to).ok_or(MediaError::NoLeg)?;
            anchor::offer(&towards, &mut t.local, transcode)?.0
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
        now: Instant,
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
        let voice = |c: &Option<Codec>| c.as_ref().map(|c| (c.pt, c.known()));
        let (f_voice, t_voice) = (voice(&agreement.answerer), voice(&agreement.offerer));
        if let Some(f) = self.leg_mut(from) {
            f.pt_out = pt_map(&fr.codecs, &tr.codecs, relays);
            f.event_pt = f_events.or(fr.events().map(|c| c.pt));
            f.voice = f_voice;
        }
        if let Some(t) = self.leg_mut(to) {
            t.pt_out = pt_map(&tr.codecs, &fr.codecs, relays);
            t.event_pt = t_events.or(tr.events().map(|c| c.pt));
            t.voice = t_voice;
        }
        self.refresh_decoders(from);
        self.refresh_decoders(to);
        let ptime = |r: &Remote| r.ptime.unwrap_or(20);
        let bridge = |a: &Option<Codec>, b: &Option<Codec>, ptime: u32, ssrc: u32| {
            let (a, b) = (a.as_ref()?, b.as_ref()?);
            Transcode::new(a.pt, a.known()?, ptime, b.pt, b.known()?, ssrc).map(Box::new)
        };
        let (f_ssrc, t_ssrc) = (self.random() as u32, self.random() as u32);
        let (f_tc, t_tc) = if relays {
            (None, None)
        } else {
            (
                bridge(&agreement.answerer, &agreement.offerer, ptime(&fr), f_ssrc),
                bridge(&agreement.offerer, &agreement.answerer, ptime(&tr), t_ssrc),
            )
        };
        for (id, tc) in [(from, f_tc), (to, t_tc)] {
            self.set_transcode(id, tc);
        }
        self.update_hold_music(now, to, from);
        Ok(Bytes::from(out))
    }

    /// The appliance answers leg `id`'s offer itself (an IVR or queue
    /// call): the leg speaks the offer's first codec of ours and hears
    /// clips until [`MediaEngine::offer_onward`] and
    /// [`MediaEngine::bridge_answer`] connect it to another leg. Returns our
    /// answer.
    pub fn answer_locally(&mut self, id: LegId, sdp: &[u8]) -> Result<Bytes, MediaError> {
        let parsed = SessionDescription::parse(sdp).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let (_, remote) = anchor::describe(&parsed)?;
        let answer = {
            let l = self.leg_mut(id).ok_or(MediaError::NoLeg)?;
            anchor::answer_locally(&parsed, &mut l.local)?
        };
        self.learn(id, remote);
        let l = self.leg_mut(id).ok_or(MediaError::NoLeg)?;
        l.offer = Some(answer.narrowed);
        l.voice = answer.voice.as_ref().map(|c| (c.pt, c.known()));
        l.event_pt = answer.events.as_ref().map(|c| c.pt);
        let member = l.conf;
        self.refresh_decoders(id);
        if let Some((c, _)) = member {
            // Its codec may have changed: it joins again with the new one.
            let conf = ConfId {
                idx: c,
                generation: self.conf_generations[c as usize],
            };
            let _ = self.join(conf, id);
        }
        Ok(Bytes::from(answer.sdp))
    }

    /// Our own offer to leg `id` (a call the appliance places).
    pub fn offer_locally(&mut self, id: LegId) -> Result<Bytes, MediaError> {
        let l = self.leg_mut(id).ok_or(MediaError::NoLeg)?;
        Ok(Bytes::from(anchor::offer_locally(&mut l.local)))
    }

    /// Leg `id` answered [`MediaEngine::offer_locally`] with `sdp`: it
    /// speaks its chosen codec and hears clips; its answer then stands for
    /// it when another leg is offered onward ([`MediaEngine::offer_onward`]).
    pub fn accept_local_answer(&mut self, id: LegId, sdp: &[u8]) -> Result<(), MediaError> {
        let parsed = SessionDescription::parse(sdp).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let (_, remote) = anchor::describe(&parsed)?;
        let voice = remote
            .codecs
            .iter()
            .find(|c| c.known().is_some_and(|k| k != Known::TelephoneEvent))
            .map(|c| (c.pt, c.known()));
        let events = remote.events().map(|c| c.pt);
        self.learn(id, remote);
        let l = self.leg_mut(id).ok_or(MediaError::NoLeg)?;
        l.offer = Some(parsed);
        l.voice = voice;
        l.event_pt = events;
        self.refresh_decoders(id);
        Ok(())
    }

    /// An offer for leg `to` on behalf of `from`, a leg answered with
    /// [`MediaEngine::answer_locally`]: its agreed codec first, then those
    /// we transcode.
    pub fn offer_onward(&mut self, from: LegId, to: LegId) -> Result<Bytes, MediaError> {
        let offer = self
            .leg(from)
            .and_then(|l| l.offer.clone())
            .ok_or(MediaError::NoOffer)?;
        let transcode = self.cfg.transcode;
        let t = self.leg_mut(to).ok_or(MediaError::NoLeg)?;
        Ok(Bytes::from(
            anchor::offer(&offer, &mut t.local, transcode)?.0,
        ))
    }

    /// `from` answered the offer of [`MediaEngine::offer_onward`] with
    /// `sdp`: the two legs are connected (relayed, or transcoded to what
    /// `to` already speaks). `to` keeps the description it was given.
    pub fn bridge_answer(
        &mut self,
        now: Instant,
        from: LegId,
        to: LegId,
        sdp: &[u8],
    ) -> Result<(), MediaError> {
        let kept = self.leg(to).map(|l| l.local.clone());
        let result = self.translate_answer(now, from, to, sdp);
        if let (Some(k), Some(t)) = (kept, self.leg_mut(to)) {
            t.local = k;
        }
        self.stop_playing(to);
        result.map(|_| ())
    }

    /// Re-pairs two legs whose descriptions are agreed already (each with
    /// its own party): `x` and `y` hear each other from now on, relayed
    /// when they speak the same voice codec, transcoded otherwise. Their
    /// former peers hear nobody until paired again. Used to move a party
    /// between calls without an offer/answer exchange (a consultation, and
    /// back). False when either has no agreed voice codec.
    pub fn pair(&mut self, x: LegId, y: LegId) -> bool {
        let voice = |l: Option<&Leg>| l.and_then(|l| l.voice);
        let (Some((xpt, Some(xk))), Some((ypt, Some(yk)))) =
            (voice(self.leg(x)), voice(self.leg(y)))
        else {
            return false;
        };
        let (Some(xr), Some(yr)) = (
            self.leg(x).and_then(|l| l.remote.clone()),
            self.leg(y).and_then(|l| l.remote.clone()),
        ) else {
            return false;
        };
        self.link(x, y, false);
        let relays = xk == yk && xpt == ypt;
        if let Some(l) = self.leg_mut(x) {
            l.pt_out = pt_map(&xr.codecs, &yr.codecs, relays);
        }
        if let Some(l) = self.leg_mut(y) {
            l.pt_out = pt_map(&yr.codecs, &xr.codecs, relays);
        }
        self.refresh_decoders(x);
        self.refresh_decoders(y);
        let (x_tc, y_tc) = if relays {
            (None, None)
        } else {
            let ptime = |r: &Remote| r.ptime.unwrap_or(20);
            let (xs, ys) = (self.random() as u32, self.random() as u32);
            (
                Transcode::new(xpt, xk, ptime(&xr), ypt, yk, xs).map(Box::new),
                Transcode::new(ypt, yk, ptime(&yr), xpt, xk, ys).map(Box::new),
            )
        };
        self.set_transcode(x, x_tc);
        self.set_transcode(y, y_tc);
        self.stop_playing(x);
        self.stop_playing(y);
        true
    }

    /// Leg `to` takes `from`'s place in its recording (a party that
    /// stays after the recorded one left: the consulted party after
    /// `call.transfer_complete`, or who stays when the agent leaves a
    /// conference).
    pub fn hand_recording(&mut self, from: LegId, to: LegId) {
        let Some(r) = self.leg_mut(from).and_then(|l| l.rec.take()) else {
            return;
        };
        self.refresh_decoders(from);
        if let Some(l) = self.leg_mut(to) {
            l.rec = Some(r);
        }
        self.refresh_decoders(to);
    }

    /// `a` and `b` hear each other (and nobody else hears them); a leg in
    /// a conference leaves it. The party that replaced a former peer (a
    /// transfer target) takes that peer's place in the recording.
    pub fn connect(&mut self, a: LegId, b: LegId) {
        self.link(a, b, true);
    }

    fn link(&mut self, a: LegId, b: LegId, replaces: bool) {
        if self.leg(a).is_none() || self.leg(b).is_none() {
            return;
        }
        self.leave(a);
        self.leave(b);
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
            // The party that replaced `old` (a transfer target) takes its
            // place in the recording.
            if let Some(o) = old.filter(|o| replaces && *o != y.idx) {
                let moved = self
                    .legs
                    .get_mut(o as usize)
                    .and_then(Option::as_mut)
                    .and_then(|ol| ol.rec.take());
                if let Some(r) = moved
                    && let Some(yl) = self.leg_mut(y)
                {
                    yl.rec = Some(r);
                }
                self.refresh_decoders(y);
            }
        }
    }

    /// Gives a leg a decoder when it feeds a recording (and drops it when
    /// it does not), for the voice codec it now sends.
    fn refresh_decoders(&mut self, id: LegId) {
        let listen = self.cfg.inband_dtmf;
        let Some(l) = self.leg_mut(id) else { return };
        // In-band DTMF is listened for when the leg has no telephone-event.
        let inband = listen && l.event_pt.is_none() && l.voice.is_some_and(|(_, k)| k.is_some());
        if inband != l.inband.is_some() {
            l.inband = inband.then(|| Box::new(InbandDetector::new()));
        }
        let wanted = match (l.rec.is_some() || inband, l.voice) {
            (true, Some((pt, Some(k)))) => Some((pt, k)),
            _ => None,
        };
        let current = l.decode.as_ref().map(|d| (d.pt, d.codec));
        if wanted != current {
            l.decode = wanted.and_then(|(pt, k)| Decode::new(pt, k)).map(Box::new);
        }
    }

    // ------------------------------------------------------------------
    // Conferences
    // ------------------------------------------------------------------

    /// Puts `legs` in a new conference: from now on each hears the mix of
    /// the others ([`super::conference`]), encoded in its own codec, instead
    /// of a peer; their former peers hear nobody until paired again. A leg
    /// leaves with [`MediaEngine::leave`], [`MediaEngine::pair`],
    /// [`MediaEngine::connect`] or [`MediaEngine::close_leg`]; the
    /// conference ends with its last member. A clip playing to a member
    /// (hold music) stops. On an error nothing has changed.
    pub fn conference(&mut self, legs: &[LegId]) -> Result<ConfId, MediaError> {
        for &l in legs {
            match self.leg(l) {
                None => return Err(MediaError::NoLeg),
                Some(l) if !matches!(l.voice, Some((_, Some(k))) if k != Known::TelephoneEvent) => {
                    return Err(MediaError::NoCodec);
                }
                Some(_) => {}
            }
        }
        if legs.iter().enumerate().any(|(i, l)| legs[..i].contains(l)) {
            return Err(MediaError::Duplicate);
        }
        if legs.len() > super::mixer::MAX_PARTICIPANTS {
            return Err(MediaError::ConferenceFull);
        }
        let idx = match self.confs.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.confs.push(None);
                self.conf_generations.push(0);
                self.confs.len() - 1
            }
        };
        self.confs[idx] = Some(Box::new(Conference::new()));
        self.conferencing += 1;
        let id = ConfId {
            idx: idx as u32,
            generation: self.conf_generations[idx],
        };
        for &l in legs {
            self.join(id, l)?;
        }
        Ok(id)
    }

    /// Adds leg `id` to conference `conf` (leaving any other; joining its
    /// own again takes up a changed codec).
    pub fn join(&mut self, conf: ConfId, id: LegId) -> Result<(), MediaError> {
        let ssrc = self.random() as u32;
        let (pt, codec, ptime, peer, old) = {
            let l = self.leg(id).ok_or(MediaError::NoLeg)?;
            let Some((pt, Some(codec))) = l.voice else {
                return Err(MediaError::NoCodec);
            };
            let ptime = l.remote.as_ref().and_then(|r| r.ptime).unwrap_or(20);
            (pt, codec, ptime, l.peer, l.conf)
        };
        if self.conf_generations.get(conf.idx as usize) != Some(&conf.generation) {
            return Err(MediaError::NoConference);
        }
        // Out of its old conference (freed below if that empties it).
        if let Some((c, slot)) = old
            && let Some(Some(o)) = self.confs.get_mut(c as usize)
        {
            o.remove(usize::from(slot));
        }
        if let Some(l) = self.leg_mut(id) {
            l.conf = None;
        }
        let slot = self
            .confs
            .get_mut(conf.idx as usize)
            .and_then(Option::as_mut)
            .ok_or(MediaError::NoConference)?
            .add(id.idx, pt, codec, ptime, ssrc)
            .ok_or(MediaError::ConferenceFull);
        if let Some((c, _)) = old {
            self.free_conference_if_empty(c);
        }
        let slot = slot?;
        // Its peer hears nobody now (and stops transcoding towards it).
        if let Some(p) = peer
            && let Some(Some(pl)) = self.legs.get_mut(p as usize)
            && pl.peer == Some(id.idx)
        {
            pl.peer = None;
            let pid = LegId {
                idx: p,
                generation: pl.generation,
            };
            self.set_transcode(pid, None);
        }
        self.set_transcode(id, None);
        self.stop_playing(id);
        if let Some(l) = self.leg_mut(id) {
            l.peer = None;
            l.conf = Some((conf.idx, slot as u8));
        }
        Ok(())
    }

    /// Leg `id` leaves its conference (if in one): it hears nobody until
    /// paired or connected.
    pub fn leave(&mut self, id: LegId) {
        let Some((c, slot)) = self.leg_mut(id).and_then(|l| l.conf.take()) else {
            return;
        };
        if let Some(Some(conf)) = self.confs.get_mut(c as usize) {
            conf.remove(usize::from(slot));
        }
        self.free_conference_if_empty(c);
    }

    fn free_conference_if_empty(&mut self, c: u32) {
        let i = c as usize;
        if self
            .confs
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.is_empty())
        {
            self.confs[i] = None;
            self.conf_generations[i] = self.conf_generations[i].wrapping_add(1);
            self.conferencing -= 1;
        }
    }

    /// Whether leg `id` is in a conference.
    pub fn in_conference(&self, id: LegId) -> bool {
        self.leg(id).is_some_and(|l| l.conf.is_some())
    }

    /// Mixes the due frames of every conference and sends each member its
    /// mix (unless a clip plays to it); a member recorded on the left
    /// channel (the caller) has its mix recorded on the right one.
    fn mix_conferences(&mut self, now: Instant, ms: u64) {
        let (legs, tx, counters, recs) =
            (&mut self.legs, &mut self.tx, &self.counters, &mut self.recs);
        for conf in self.confs.iter_mut().flatten() {
            conf.tick(ms, &mut |m| {
                let Some(Some(out)) = legs.get_mut(m.tag as usize) else {
                    return;
                };
                if let Some((slot, Channel::Left)) = out.rec
                    && let Some(Some(rec)) = recs.get_mut(slot as usize)
                {
                    let ts = m.ts / (m.clock / 8000).max(1);
                    rec.recorder.push(Channel::Right, ms, m.seq, ts, m.pcm);
                }
                if out.play.is_some() {
                    // It hears a clip instead.
                    return;
                }
                let made = Made {
                    source: (m.tag | 0x2000_0000, m.ssrc),
                    pt: m.pt,
                    clock: m.clock,
                    seq: m.seq,
                    ts: m.ts,
                    mark: m.mark,
                    payload: m.payload,
                };
                if tx.push_made(now, out, made, counters) {
                    counters.rtp_relayed.bump();
                }
            });
        }
    }

    // ------------------------------------------------------------------
    // Recording
    // ------------------------------------------------------------------

    /// Starts recording call `call_id`: `left` (the caller) on the left
    /// channel, `right` on the right, from `now`. Returns the recording id.
    pub fn start_recording(
        &mut self,
        now: Instant,
        call_id: &str,
        left: LegId,
        right: LegId,
    ) -> Option<u64> {
        self.leg(left)?;
        self.leg(right)?;
        let start = self.ms(now);
        let id = (u64::from(self.cfg.shard) << 48) | self.next_rec;
        self.next_rec += 1;
        let slot = match self.recs.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.recs.push(None);
                self.recs.len() - 1
            }
        };
        self.recs[slot] = Some(Rec {
            id,
            recorder: Recorder::new(start),
        });
        for (leg, ch) in [(left, Channel::Left), (right, Channel::Right)] {
            if let Some(l) = self.leg_mut(leg) {
                l.rec = Some((slot as u32, ch));
            }
            self.refresh_decoders(leg);
        }
        self.rec_ops.push_back(RecordingOp::Open {
            id,
            call_id: call_id.to_owned(),
        });
        Some(id)
    }

    /// Pauses (true) or resumes a recording: the paused span is silence.
    pub fn pause_recording(&mut self, now: Instant, id: u64, paused: bool) {
        let ms = self.ms(now);
        if let Some(r) = self.recs.iter_mut().flatten().find(|r| r.id == id) {
            if paused {
                r.recorder.pause(ms);
            } else {
                r.recorder.resume(ms);
            }
        }
    }

    /// Ends a recording at `now`: the rest of its audio and the close go
    /// to the writer.
    pub fn stop_recording(&mut self, now: Instant, id: u64) {
        let ms = self.ms(now);
        let Some(slot) = self
            .recs
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.id == id))
        else {
            return;
        };
        let Some(mut r) = self.recs[slot].take() else {
            return;
        };
        loop {
            let offset = r.recorder.written_bytes();
            let n = r.recorder.finish(ms, &mut self.chunk);
            if n == 0 {
                break;
            }
            self.rec_ops.push_back(RecordingOp::Data {
                id,
                offset,
                bytes: self.chunk[..n].to_vec(),
            });
        }
        self.rec_ops.push_back(RecordingOp::Close {
            id,
            data_len: r.recorder.written_bytes(),
        });
        for l in self.legs.iter_mut().flatten() {
            if l.rec.is_some_and(|(s, _)| s as usize == slot) {
                l.rec = None;
                l.decode = None;
            }
        }
    }

    /// Hands the final audio of every recording to the writer.
    fn flush_recordings(&mut self, now: Instant) {
        let ms = self.ms(now);
        // A fiftieth of the recordings per sweep: each is flushed once a second
        // (about 1 s of audio, 32 KB), and no sweep stalls the shard with
        // every recording's copy at once.
        let phase = self.sweeps % SWEEPS_PER_SECOND;
        for (slot, r) in self.recs.iter_mut().enumerate() {
            let Some(r) = r else { continue };
            if slot as u64 % SWEEPS_PER_SECOND != phase {
                continue;
            }
            loop {
                let offset = r.recorder.written_bytes();
                let n = r.recorder.poll_chunk(ms, &mut self.chunk);
                if n == 0 {
                    break;
                }
                self.rec_ops.push_back(RecordingOp::Data {
                    id: r.id,
                    offset,
                    bytes: self.chunk[..n].to_vec(),
                });
            }
        }
    }

    /// The next RTP socket to connect to its latched peer (`Some`) or to
    /// disconnect (`None`: its leg closed or moved). The shell applies these
    /// before sending the queued packets.
    pub fn poll_connect(&mut self) -> Option<(MediaSock, Option<SocketAddr>)> {
        self.connects.pop_front()
    }

    /// The next operation for the recording writer.
    pub fn poll_recording(&mut self) -> Option<RecordingOp> {
        self.rec_ops.pop_front()
    }

    // ------------------------------------------------------------------
    // Prompts and music
    // ------------------------------------------------------------------

    /// Plays `clip` (8 kHz mono) to leg `id`, once or `looping`: the leg
    /// hears it instead of its peer, in its own codec, continuing its
    /// outgoing stream (same SSRC, sequence numbers and timestamps carry
    /// on, marker set at each switch). A clip played once ends with
    /// [`MediaEvent::PlayDone`], and the leg hears its peer again. Replaces
    /// whatever played. False when the leg has no agreed codec of ours.
    pub fn play(&mut self, now: Instant, id: LegId, clip: Clip, looping: bool) -> bool {
        self.start_playback(now, id, clip, looping, false)
    }

    fn start_playback(
        &mut self,
        now: Instant,
        id: LegId,
        clip: Clip,
        looping: bool,
        hold: bool,
    ) -> bool {
        let ms = self.ms(now);
        let ssrc = self.random() as u32;
        let Some(l) = self.leg_mut(id) else {
            return false;
        };
        let Some((pt, Some(codec))) = l.voice else {
            return false;
        };
        let Some(enc) = Encode::new(codec) else {
            return false;
        };
        let mut player = Player::new(8000);
        if looping {
            player.play_loop(clip);
        } else {
            player.play(clip);
        }
        let was_playing = l.play.is_some();
        l.play = Some(Box::new(Playback {
            player,
            enc,
            pt,
            clock: codec.clock_rate(),
            ssrc,
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(11),
            next_ms: ms,
            hold,
            pcm: [0; FRAME],
        }));
        if !was_playing {
            self.playing += 1;
        }
        true
    }

    /// Stops whatever plays to leg `id`: it hears its peer again.
    pub fn stop_playing(&mut self, id: LegId) {
        if let Some(l) = self.leg_mut(id)
            && l.play.take().is_some()
        {
            self.playing -= 1;
        }
    }

    /// Whether a clip plays to leg `id`.
    pub fn is_playing(&self, id: LegId) -> bool {
        self.leg(id).is_some_and(|l| l.play.is_some())
    }

    /// After an offer from `holder` was answered by `held`: hold music to
    /// `held` while `holder` does not want to hear it (sendonly, inactive,
    /// or no address), off again when it does.
    fn update_hold_music(&mut self, now: Instant, holder: LegId, held: LegId) {
        let Some(music) = self.cfg.hold_music.clone() else {
            return;
        };
        let holding = self
            .leg(holder)
            .and_then(|l| l.remote.as_ref())
            .is_some_and(|r| r.rtp.is_none() || !r.direction.receives());
        let hold_playing = self
            .leg(held)
            .and_then(|l| l.play.as_ref())
            .is_some_and(|p| p.hold);
        if holding && !hold_playing {
            self.start_playback(now, held, music, true, true);
        } else if !holding && hold_playing {
            self.stop_playing(held);
        }
    }

    /// Plays the due frames of every playback.
    fn play_frames(&mut self, now: Instant, ms: u64) {
        for idx in 0..self.legs.len() {
            let Some(Some(leg)) = self.legs.get_mut(idx) else {
                continue;
            };
            // Out of the leg while its frames go to the leg.
            let Some(mut pb) = leg.play.take() else {
                continue;
            };
            // Catch up at most a few frames after a stall; skip the rest.
            if ms.saturating_sub(pb.next_ms) > 80 {
                pb.next_ms = ms - 20;
            }
            let mut finished = false;
            while pb.next_ms <= ms && !finished {
                pb.next_ms += 20;
                finished = pb.player.fill(&mut pb.pcm) == PlayerState::Finished;
                let n = pb.enc.encode(&pb.pcm, &mut self.payload[..]);
                let m = Made {
                    source: (idx as u32 | 0x4000_0000, pb.ssrc),
                    pt: pb.pt,
                    clock: pb.clock,
                    seq: pb.seq,
                    ts: pb.ts,
                    mark: false,
                    payload: &self.payload[..n],
                };
                pb.seq = pb.seq.wrapping_add(1);
                pb.ts = pb.ts.wrapping_add(pb.clock / 50);
                self.tx.push_made(now, leg, m, &self.counters);
            }
            if !finished {
                leg.play = Some(pb);
                continue;
            }
            self.playing -= 1;
            let ev = MediaEvent::PlayDone {
                call: leg.call,
                leg: LegId {
                    idx: idx as u32,
                    generation: leg.generation,
                },
            };
            self.events.push_back(ev);
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
        let fresh = !leg.latched;
        if !latch(&mut leg.dst, &mut leg.latched, src) {
            self.counters.rtp_foreign.bump();
            return;
        }
        if fresh {
            // From now on the kernel filters for us, and sends back take
            // the socket's cached route.
            self.connects.push_back((leg.pair.rtp, Some(src)));
        }
        self.counters.rtp_in.bump();
        leg.last_rx = Some(now);
        leg.rx_ssrc = h.ssrc;
        leg.stats.packets_in += 1;
        leg.stats.bytes_in += data.len() as u64;
        let pt = h.payload_type;
        let clock = leg.clock[usize::from(pt & 0x7f)].max(8000);
        let epoch = *self.epoch.get_or_insert(now);
        let ms = now.saturating_duration_since(epoch).as_millis() as u64;
        if leg.event_pt == Some(pt) {
            let digit = TelephoneEvent::parse(h.payload(data))
                .ok()
                .and_then(|ev| leg.events.handle_event(h.timestamp, h.marker, ev));
            if let Some(digit) = digit {
                self.counters.dtmf_digits.bump();
                self.events.push_back(leg.digit(idx, digit));
            }
        } else {
            leg.quality.on_packet(ms, h.seq, h.timestamp, clock);
        }
        if let Some(dec) = leg.decode.as_mut()
            && dec.pt == pt
        {
            let n = dec.decode(h.payload(data), &mut self.pcm[..]);
            // In a conference the right channel records the caller's mix.
            let mixed = leg.conf.is_some();
            if let Some((slot, ch)) = leg.rec.filter(|&(_, ch)| !(mixed && ch == Channel::Right))
                && let Some(Some(rec)) = self.recs.get_mut(slot as usize)
            {
                let ts = h.timestamp / (clock / 8000).max(1);
                rec.recorder.push(ch, ms, h.seq, ts, &self.pcm[..n]);
            }
            if let Some(digit) = leg.inband.as_mut().and_then(|d| d.push(&self.pcm[..n])) {
                self.counters.dtmf_digits.bump();
                self.events.push_back(leg.digit(idx, digit));
            }
        }
        if let Some((c, slot)) = leg.conf {
            // A member: its voice goes to the mix, nothing is relayed.
            if let Some(Some(conf)) = self.confs.get_mut(c as usize) {
                let header = (pt, h.seq, h.timestamp, h.marker);
                conf.push(usize::from(slot), ms, header, h.payload(data));
            }
            return;
        }
        if let Some(tc) = leg.transcode.as_mut()
            && tc.in_pt == pt
        {
            tc.push(ms, h.seq, h.timestamp, h.marker, h.payload(data));
            return;
        }
        let Some(leg) = self.legs.get(idx as usize).and_then(Option::as_ref) else {
            return;
        };
        let out_pt = leg.pt_out[usize::from(pt & 0x7f)];
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
        if out.play.is_some() {
            // It hears a clip instead.
            return;
        }
        if data.len() > MAX_PACKET {
            self.counters.rtp_malformed.bump();
            return;
        }
        let (seq, ts, ssrc, mark) = out.tx.map(now, source, h.seq, h.timestamp, clock);
        out.stats.packets_out += 1;
        out.octets_out = out.octets_out.wrapping_add(h.payload_len as u32);
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
    fn handle_rtcp(&mut self, now: Instant, idx: u32, src: SocketAddr, data: &[u8]) {
        self.counters.rtcp_in.bump();
        let ms = self.ms(now);
        let Some(Some(leg)) = self.legs.get_mut(idx as usize) else {
            return;
        };
        if !latch(&mut leg.dst_rtcp, &mut leg.rtcp_latched, src) {
            self.counters.rtp_foreign.bump();
            return;
        }
        if let Some(r) = leg.reporter.as_mut() {
            r.on_rtcp(ms, data);
        }
        let Some(peer) = leg.peer else { return };
        if self.hears_ours(peer as usize) {
            // The peer hears a stream made here: it gets our own reports.
            return;
        }
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

    /// Whether a leg needs [`MediaEngine::tick`] every
    /// [`TICK`] (it is transcoded, hears a clip, or is in a conference).
    pub fn wants_tick(&self) -> bool {
        self.transcoding > 0 || self.playing > 0 || self.conferencing > 0
    }

    /// Sets (or clears) a leg's transcoder, keeping the count.
    fn set_transcode(&mut self, id: LegId, tc: Option<Box<Transcode>>) {
        let Some(l) = self.leg_mut(id) else { return };
        let before = l.transcode.is_some();
        let after = tc.is_some();
        l.transcode = tc;
        self.transcoding = self.transcoding + usize::from(after) - usize::from(before);
    }

    /// Plays the transcoded legs' due frames to their peers, the due
    /// frames of clips playing to legs, and the conferences' mixes.
    pub fn tick(&mut self, now: Instant) {
        let ms = self.ms(now);
        if self.playing > 0 {
            self.play_frames(now, ms);
        }
        if self.conferencing > 0 {
            self.mix_conferences(now, ms);
        }
        for idx in 0..self.legs.len() {
            let Some(Some(leg)) = self.legs.get_mut(idx) else {
                continue;
            };
            let Some(mut tc) = leg.transcode.take() else {
                continue;
            };
            let peer = leg.peer;
            let (legs, tx, counters) = (&mut self.legs, &mut self.tx, &self.counters);
            let source = (idx as u32 | 0x8000_0000, tc.ssrc);
            let (out_pt, out_clock) = (tc.out_pt, tc.out_clock);
            tc.tick(ms, &mut |seq, ts, mark, payload| {
                let Some(Some(out)) = peer.and_then(|p| legs.get_mut(p as usize)) else {
                    return;
                };
                if out.play.is_some() {
                    // It hears a clip instead.
                    return;
                }
                let m = Made {
                    source,
                    pt: out_pt,
                    clock: out_clock,
                    seq,
                    ts,
                    mark,
                    payload,
                };
                if tx.push_made(now, out, m, counters) {
                    counters.rtp_relayed.bump();
                }
            });
            if let Some(Some(leg)) = self.legs.get_mut(idx) {
                leg.transcode = Some(tc);
            }
        }
    }

    /// Liveness and recording sweep; the call engine runs it every
    /// [`SWEEP`] while legs are open.
    pub fn sweep(&mut self, now: Instant) {
        self.flush_recordings(now);
        if self.sweeps.is_multiple_of(5) {
            self.send_reports(now);
        }
        self.sweeps += 1;
        if !self.sweeps.is_multiple_of(SWEEPS_PER_SECOND) {
            return;
        }
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

impl MediaEngine {
    /// Whether what leg `idx` hears is made here (a clip, or its peer's
    /// audio re-encoded) rather than relayed.
    fn hears_ours(&self, idx: usize) -> bool {
        let Some(Some(l)) = self.legs.get(idx) else {
            return false;
        };
        l.play.is_some()
            || l.conf.is_some()
            || l.peer
                .and_then(|p| self.legs.get(p as usize)?.as_ref())
                .is_some_and(|p| p.transcode.is_some())
    }

    /// RTCP of our own (RFC 3550 §6.4) to the legs that hear a stream made
    /// here; relayed RTCP serves the others.
    fn send_reports(&mut self, now: Instant) {
        let ms = self.ms(now);
        let unix_ms = match self.cfg.wall {
            Some((at, unix)) => {
                let d = now.saturating_duration_since(at).as_millis() as u64;
                unix + d
            }
            None => ms,
        };
        if self.transcoding + self.playing + self.reporting + self.conferencing == 0 {
            return;
        }
        for idx in 0..self.legs.len() {
            let ours = self.hears_ours(idx);
            let fresh = ours && matches!(self.legs.get(idx), Some(Some(l)) if l.reporter.is_none());
            let seed = if fresh { self.random() as u32 } else { 0 };
            let Some(Some(leg)) = self.legs.get_mut(idx) else {
                continue;
            };
            if !ours {
                if leg.reporter.take().is_some() {
                    self.reporting -= 1;
                }
                continue;
            }
            if fresh {
                self.reporting += 1;
            }
            let r = leg
                .reporter
                .get_or_insert_with(|| Box::new(Reporter::new(ms, seed)));
            let Some(dst) = leg.dst_rtcp.filter(|_| r.due(ms)) else {
                continue;
            };
            let clock = leg.play.as_ref().map_or_else(
                || {
                    leg.voice
                        .and_then(|(_, k)| k)
                        .map_or(8000, |k| k.clock_rate())
                },
                |p| p.clock,
            );
            let since = leg.tx.last_at.map(|t| now.saturating_duration_since(t));
            let sending = Sending {
                ssrc: leg.tx.ssrc,
                // Sent within the last two report intervals (§6.4).
                sent_any: since.is_some_and(|d| d < Duration::from_secs(10)),
                rtp_ts: leg.tx.last_ts.wrapping_add(
                    (since.unwrap_or_default().as_micros() as u64 * u64::from(clock) / 1_000_000)
                        as u32,
                ),
                packets: leg.stats.packets_out as u32,
                octets: leg.octets_out,
            };
            let heard = leg.last_rx.map(|_| (&mut leg.quality, leg.rx_ssrc));
            let Some(slot) = self.tx.slot() else {
                self.counters.rtp_tx_overflow.bump();
                return;
            };
            let n = r.write(ms, unix_ms, slot, &sending, heard, &self.cname);
            if n > 0 {
                self.tx.commit(leg.pair.rtcp, dst, n);
                self.counters.rtcp_sent.bump();
            }
        }
    }
}

/// Symmetric latching (RFC 4961 §3): the first packet from a leg sets
/// where we send to it; later ones must come from there. Returns whether
/// `src` is accepted.
fn latch(dst: &mut Option<SocketAddr>, latched: &mut bool, src: SocketAddr) -> bool {
    if !*latched {
        *dst = Some(src);
        *latched = true;
    }
    *dst == Some(src)
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

#[cfg(test)]
mod tests;
