//! Adaptive jitter buffer for one RTP receive stream.
//!
//! Owns the encoded payloads of one stream between arrival and playout, in
//! preallocated slots indexed by sequence number, and decides per playout
//! tick what the decoder gets: the next frame, a loss to conceal, or
//! nothing (before the first packet, or DTX silence). Codec-agnostic: one
//! packet is one frame of `frame_ms` (the negotiated ptime).
//!
//! RTP rules used (RFC 3550): sequence numbers (§5.1) order packets and
//! wrap at 2^16; timestamps place them in time and wrap at 2^32 (both are
//! extended to 64 bits internally); the marker bit marks the first packet
//! of a talkspurt (RFC 3551 §4.1); the interarrival jitter estimate is that
//! of §6.4.1 / Appendix A.8 (J += (|D| − J) / 16), kept in milliseconds.
//!
//! ## Playout and adaptation
//!
//! The target delay is `clamp(jitter_factor × J, min_delay, max_delay)`. A
//! packet's delay is measured against the smoothed transit time (mean of
//! arrival − timestamp): `delay = playout time − (timestamp + mean
//! transit)`. The delay is set at the start of each talkspurt (a packet
//! with the marker bit, or whose timestamp jumps past the playout position:
//! the silence before it is lengthened or shortened) and otherwise changes
//! only slowly:
//! * an underrun (the next packet missing and nothing later buffered)
//!   stalls the playout one tick (the decoder conceals): the delay grows by
//!   a frame; if the missing packet then turns out lost, the stalled tick
//!   counts as its concealment;
//! * a delay above target by more than 1.5 frames for a second of
//!   continuous speech drops one frame (at most one per
//!   [`ADAPT_INTERVAL_MS`], counted as `discarded`).
//!
//! A packet that is missing when its turn comes while a later one is
//! buffered is declared lost (`Playout::Lost`); if it arrives afterwards it
//! is too late (counted, dropped).
//!
//! Driven by the caller with a monotonic millisecond clock: [`JitterBuffer::push`]
//! for every received packet (the payload is copied into a slot), and
//! [`JitterBuffer::pop`] once per `frame_ms` tick. Neither allocates: all
//! slots are allocated in [`JitterBuffer::new`].

/// The delay is adapted inside a talkspurt at most once per this long.
pub const ADAPT_INTERVAL_MS: u64 = 1000;
/// Underrun ticks reported as `Lost` before the stream counts as paused
/// (`Empty`): 200 ms of concealment, which the decoder fades to silence.
const UNDERRUN_LOST_TICKS: u32 = 10;
/// A forward sequence jump this large is a sender restart (RFC 3550 A.1).
const MAX_DROPOUT: i64 = 3000;
/// A packet this far behind the playout is a restart, not a late packet.
const MAX_MISORDER: i64 = 100;
/// History of played sequence numbers kept to tell duplicates from late.
const HISTORY: u64 = 64;
/// Extended sequence numbers start here so that earlier ones stay positive.
const SEQ_BASE: u64 = 1 << 32;

/// Jitter buffer settings. Out-of-range values are corrected in
/// [`JitterBuffer::new`] (see each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate (Hz); below 1000 is taken as 8000.
    pub clock_rate: u32,
    /// Frame (packet) duration and pop interval; 0 or above 200 is 20.
    pub frame_ms: u32,
    /// Lower bound of the target delay.
    pub min_delay_ms: u32,
    /// Upper bound of the target delay (raised to `min_delay_ms`).
    pub max_delay_ms: u32,
    /// Largest payload stored; larger packets are refused (`TooBig`).
    pub max_payload: usize,
    /// Slots; raised to hold `max_delay_ms` plus half a second.
    pub capacity: usize,
    /// Target delay as a multiple of the interarrival jitter.
    pub jitter_factor: f64,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            frame_ms: 20,
            min_delay_ms: 20,
            max_delay_ms: 200,
            max_payload: 1500,
            capacity: 64,
            jitter_factor: 3.0,
        }
    }
}

/// Why the buffer restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The sequence number jumped (a sender restart, RFC 3550 A.1).
    SeqJump,
    /// The timestamp went back by more than a second.
    TsJump,
    /// The caller saw a new SSRC ([`JitterBuffer::push_rtp`]).
    Ssrc,
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Stored for playout.
    Accepted,
    /// Already stored or already played: dropped.
    Duplicate,
    /// Its turn has passed (played around or declared lost): dropped.
    TooLate,
    /// Larger than `max_payload`: dropped.
    TooBig,
    /// Beyond the buffer's window while older packets wait: dropped.
    Overflow,
    /// The stream restarted: the buffer was flushed and this packet stored
    /// as the first of the new stream.
    Reset(ResetReason),
}

/// What the decoder gets for one playout tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next frame's payload.
    Frame(&'a [u8]),
    /// A frame is missing: conceal it.
    Lost,
    /// Nothing to play: before the first packet, or silence (DTX).
    Empty,
}

/// Counters of a jitter buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Frames handed to the decoder.
    pub played: u64,
    /// Sequence numbers declared lost (never arrived in time).
    pub lost: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Duplicate packets.
    pub duplicate: u64,
    /// Packets that arrived after a later one (and were still in time).
    pub reordered: u64,
    /// Frames dropped to shrink the delay.
    pub discarded: u64,
    /// Ticks with the next packet missing and nothing later buffered.
    pub underruns: u64,
    /// Packets refused as larger than `max_payload`.
    pub too_big: u64,
    /// Packets refused as beyond the window.
    pub overflow: u64,
    /// Restarts (sequence or timestamp jump, new SSRC).
    pub resets: u64,
    /// The delay of the last played frame (see the module doc).
    pub current_delay_ms: f64,
    /// The target delay now.
    pub target_delay_ms: f64,
    /// Interarrival jitter estimate (RFC 3550 A.8) in milliseconds.
    pub jitter_ms: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    full: bool,
    marker: bool,
    seq: u64,
    ts: i64,
    len: usize,
}

/// The adaptive jitter buffer (see the module doc).
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    /// Timestamp units per frame.
    spf: i64,
    slots: Vec<Slot>,
    payloads: Vec<u8>,
    ssrc: Option<u32>,
    /// Any packet since the last reset.
    have_first: bool,
    /// Playout running.
    started: bool,
    next_seq: u64,
    highest_seq: u64,
    highest_ts: i64,
    /// Extended timestamp of the next frame to play.
    play_ts: i64,
    /// Underrun ticks not yet matched by a packet.
    stall: u32,
    /// Bit i: sequence `next_seq − 1 − i` was played.
    played_mask: u64,
    last_transit: Option<f64>,
    mean_transit: f64,
    jitter_ms: f64,
    last_adapt_ms: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with every slot preallocated (see [`JitterConfig`] for the
    /// corrections made to out-of-range settings).
    pub fn new(cfg: JitterConfig) -> Self {
        let mut cfg = cfg;
        if cfg.clock_rate < 1000 {
            cfg.clock_rate = 8000;
        }
        if cfg.frame_ms == 0 || cfg.frame_ms > 200 {
            cfg.frame_ms = 20;
        }
        cfg.max_delay_ms = cfg.max_delay_ms.max(cfg.min_delay_ms);
        cfg.max_payload = cfg.max_payload.max(1);
        let least = (cfg.max_delay_ms + 500).div_ceil(cfg.frame_ms) as usize;
        cfg.capacity = cfg.capacity.max(least);
        if !cfg.jitter_factor.is_finite() || cfg.jitter_factor < 0.0 {
            cfg.jitter_factor = 3.0;
        }
        let spf = i64::from(cfg.clock_rate) * i64::from(cfg.frame_ms) / 1000;
        let mut jb = Self {
            cfg,
            spf,
            slots: vec![Slot::default(); cfg.capacity],
            payloads: vec![0; cfg.capacity * cfg.max_payload],
            ssrc: None,
            have_first: false,
            started: false,
            next_seq: 0,
            highest_seq: 0,
            highest_ts: 0,
            play_ts: 0,
            stall: 0,
            played_mask: 0,
            last_transit: None,
            mean_transit: 0.0,
            jitter_ms: 0.0,
            last_adapt_ms: 0,
            stats: JitterStats::default(),
        };
        jb.stats.target_delay_ms = f64::from(cfg.min_delay_ms);
        jb
    }

    /// The settings in force (after corrections).
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Flushes everything (the counters stay): the next packet starts a
    /// new stream.
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.full = false;
        }
        self.have_first = false;
        self.started = false;
        self.stall = 0;
        self.played_mask = 0;
        self.last_transit = None;
        self.jitter_ms = 0.0;
    }

    /// [`JitterBuffer::push`] with the packet's SSRC: a new SSRC resets
    /// the buffer first.
    pub fn push_rtp(
        &mut self,
        now_ms: u64,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> PushResult {
        let changed = self.ssrc.is_some_and(|s| s != ssrc);
        self.ssrc = Some(ssrc);
        if changed {
            self.reset();
            self.stats.resets += 1;
            return match self.push(now_ms, seq, ts, marker, payload) {
                PushResult::Accepted => PushResult::Reset(ResetReason::Ssrc),
                other => other,
            };
        }
        self.push(now_ms, seq, ts, marker, payload)
    }

    fn ts_ms(&self, ts: i64) -> f64 {
        ts as f64 * 1000.0 / f64::from(self.cfg.clock_rate)
    }

    fn target_ms(&self) -> f64 {
        (self.cfg.jitter_factor * self.jitter_ms).clamp(
            f64::from(self.cfg.min_delay_ms),
            f64::from(self.cfg.max_delay_ms),
        )
    }

    fn slot_index(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    /// The stored packet with extended sequence `seq`, if any.
    fn stored(&self, seq: u64) -> Option<Slot> {
        let s = self.slots[self.slot_index(seq)];
        (s.full && s.seq == seq).then_some(s)
    }

    /// One received packet. The payload is copied into a slot.
    pub fn push(
        &mut self,
        now_ms: u64,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> PushResult {
        if payload.len() > self.cfg.max_payload {
            self.stats.too_big += 1;
            return PushResult::TooBig;
        }
        if !self.have_first {
            self.have_first = true;
            self.next_seq = SEQ_BASE + u64::from(seq);
            self.highest_seq = self.next_seq;
            self.highest_ts = i64::from(ts);
            self.mean_transit = now_ms as f64 - self.ts_ms(self.highest_ts);
        }
        let ext = self
            .highest_seq
            .wrapping_add_signed(i64::from(seq.wrapping_sub(self.highest_seq as u16) as i16));
        let ext_ts = self.highest_ts + i64::from(ts.wrapping_sub(self.highest_ts as u32) as i32);
        let ahead = ext as i64 - self.highest_seq as i64;
        let behind = self.next_seq as i64 - ext as i64;
        let ts_back = ahead > 0 && self.highest_ts - ext_ts > i64::from(self.cfg.clock_rate);
        let reason = if ahead >= MAX_DROPOUT || behind > MAX_MISORDER {
            Some(ResetReason::SeqJump)
        } else if ts_back {
            Some(ResetReason::TsJump)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.reset();
            self.stats.resets += 1;
            let r = self.push(now_ms, seq, ts, marker, payload);
            debug_assert_eq!(r, PushResult::Accepted);
            return PushResult::Reset(reason);
        }
        if behind > 0 {
            let window = self.slots.len() as u64;
            if !self.started && self.highest_seq - ext < window {
                // Before playout starts, an earlier packet moves the start.
                self.next_seq = ext;
            } else if behind as u64 <= HISTORY && self.played_mask >> (behind - 1) & 1 == 1 {
                self.stats.duplicate += 1;
                return PushResult::Duplicate;
            } else {
                self.stats.late += 1;
                return PushResult::TooLate;
            }
        }
        if ext >= self.next_seq + self.slots.len() as u64 {
            let empty = (self.next_seq..=self.highest_seq).all(|s| self.stored(s).is_none());
            if !empty {
                self.stats.overflow += 1;
                return PushResult::Overflow;
            }
            // A long outage: skip to this packet, the gap counted lost.
            self.stats.lost += ext - self.next_seq;
            self.played_mask = 0;
            self.next_seq = ext;
            self.stall = 0;
        }
        let idx = self.slot_index(ext);
        if self.slots[idx].full && self.slots[idx].seq == ext {
            self.stats.duplicate += 1;
            return PushResult::Duplicate;
        }
        let at = idx * self.cfg.max_payload;
        self.payloads[at..at + payload.len()].copy_from_slice(payload);
        self.slots[idx] = Slot {
            full: true,
            marker,
            seq: ext,
            ts: ext_ts,
            len: payload.len(),
        };
        if ext < self.highest_seq {
            self.stats.reordered += 1;
        } else {
            self.highest_seq = ext;
            self.highest_ts = ext_ts;
        }
        // RFC 3550 A.8 in milliseconds, and the mean transit.
        let transit = now_ms as f64 - self.ts_ms(ext_ts);
        if let Some(prev) = self.last_transit {
            self.jitter_ms += ((transit - prev).abs() - self.jitter_ms) / 16.0;
        }
        self.last_transit = Some(transit);
        self.mean_transit += (transit - self.mean_transit) / 32.0;
        self.stats.jitter_ms = self.jitter_ms;
        self.stats.target_delay_ms = self.target_ms();
        PushResult::Accepted
    }

    /// When (ms, on the caller's clock) a packet with timestamp `ts` is due
    /// at the target delay.
    fn due_ms(&self, ts: i64) -> f64 {
        self.ts_ms(ts) + self.mean_transit + self.target_ms()
    }

    /// The delay a frame with timestamp `ts` has when played at `now_ms`.
    fn delay_ms(&self, now_ms: u64, ts: i64) -> f64 {
        now_ms as f64 - self.ts_ms(ts) - self.mean_transit
    }

    /// Marks `next_seq` lost and moves on.
    fn skip_lost(&mut self) {
        self.stats.lost += 1;
        self.played_mask <<= 1;
        self.next_seq += 1;
        self.play_ts += self.spf;
    }

    /// The first stored packet after `next_seq`.
    fn next_stored(&self) -> Option<Slot> {
        (self.next_seq + 1..=self.highest_seq).find_map(|s| self.stored(s))
    }

    /// What to play for the tick at `now_ms` (call once per `frame_ms`).
    pub fn pop(&mut self, now_ms: u64) -> Playout<'_> {
        if !self.have_first {
            return Playout::Empty;
        }
        if !self.started {
            let Some(first) = self.stored(self.next_seq) else {
                return Playout::Empty;
            };
            if (now_ms as f64) < self.due_ms(first.ts) {
                return Playout::Empty;
            }
            self.started = true;
            self.play_ts = first.ts;
            self.last_adapt_ms = now_ms;
        }
        let half = self.spf / 2;
        let slot = loop {
            let Some(p) = self.stored(self.next_seq) else {
                if let Some(later) = self.next_stored() {
                    if self.stall > 0 {
                        // An underrun tick already stood in for it.
                        self.stall -= 1;
                        self.skip_lost();
                        continue;
                    }
                    let missing = (later.seq - self.next_seq) as i64;
                    if later.ts - missing * self.spf > self.play_ts + half {
                        // Still in the silence before the missing packet.
                        self.play_ts += self.spf;
                        return Playout::Empty;
                    }
                    self.skip_lost();
                    return Playout::Lost;
                }
                self.stall = self.stall.saturating_add(1);
                self.stats.underruns += 1;
                return if self.stall <= UNDERRUN_LOST_TICKS {
                    Playout::Lost
                } else {
                    Playout::Empty
                };
            };
            if p.ts > self.play_ts + half || p.marker {
                // A talkspurt starts: play it at the target delay,
                // lengthening or shortening the silence before it.
                if (now_ms as f64) < self.due_ms(p.ts) {
                    if p.ts > self.play_ts {
                        self.play_ts += self.spf;
                    }
                    return Playout::Empty;
                }
                self.play_ts = p.ts;
                self.last_adapt_ms = now_ms;
            } else if self.should_shrink(now_ms, &p) {
                self.stats.discarded += 1;
                let idx = self.slot_index(p.seq);
                self.slots[idx].full = false;
                self.played_mask <<= 1;
                self.next_seq += 1;
                self.play_ts += self.spf;
                self.last_adapt_ms = now_ms;
                continue;
            }
            break p;
        };
        let idx = self.slot_index(slot.seq);
        self.slots[idx].full = false;
        self.next_seq += 1;
        self.play_ts = self.play_ts.max(slot.ts) + self.spf;
        self.played_mask = (self.played_mask << 1) | 1;
        self.stall = 0;
        self.stats.played += 1;
        self.stats.current_delay_ms = self.delay_ms(now_ms, slot.ts);
        let at = idx * self.cfg.max_payload;
        Playout::Frame(&self.payloads[at..at + slot.len])
    }

    /// Inside continuous speech: whether to drop `p` because the delay has
    /// stayed well above target (the next frame must be buffered already).
    fn should_shrink(&self, now_ms: u64, p: &Slot) -> bool {
        let frame = f64::from(self.cfg.frame_ms);
        now_ms.saturating_sub(self.last_adapt_ms) >= ADAPT_INTERVAL_MS
            && self.delay_ms(now_ms, p.ts) > self.target_ms() + 1.5 * frame
            && self
                .stored(p.seq + 1)
                .is_some_and(|n| n.ts == p.ts + self.spf && !n.marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::{BTreeMap, BTreeSet};

    /// Payload carrying the packet's sequence number.
    fn payload(seq: u64) -> [u8; 8] {
        seq.to_be_bytes()
    }

    fn seq_of(p: &[u8]) -> u64 {
        u64::from_be_bytes(p.try_into().unwrap())
    }

    #[derive(Debug, PartialEq)]
    enum Out {
        Frame(u64),
        Lost,
        Empty,
    }

    fn pop(jb: &mut JitterBuffer, now: u64) -> Out {
        match jb.pop(now) {
            Playout::Frame(p) => Out::Frame(seq_of(p)),
            Playout::Lost => Out::Lost,
            Playout::Empty => Out::Empty,
        }
    }

    /// Pushes seq k (ts 160·k from `ts0`) at `now`.
    fn push(jb: &mut JitterBuffer, now: u64, k: u64, ts0: u32) -> PushResult {
        let ts = ts0.wrapping_add((k as u32).wrapping_mul(160));
        jb.push(now, k as u16, ts, k == 0, &payload(k))
    }

    #[test]
    fn steady_stream_plays_every_frame_in_order_after_the_min_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        for t in 0..100u64 {
            let now = 20 * t;
            if t < 90 {
                assert_eq!(push(&mut jb, now, t, 0), PushResult::Accepted);
            }
            out.push(pop(&mut jb, now + 1));
        }
        // 20 ms minimum delay: the first frame is due at 20 ms.
        assert_eq!(out[0], Out::Empty);
        assert_eq!(out[1], Out::Frame(0));
        for t in 1..90 {
            assert_eq!(out[t as usize + 1], Out::Frame(t));
        }
        let s = jb.stats();
        assert_eq!(s.played, 90);
        assert_eq!(s.lost, 0);
        assert!(
            (s.current_delay_ms - 21.0).abs() < 0.5,
            "{}",
            s.current_delay_ms
        );
    }

    #[test]
    fn sequence_and_timestamp_wrap_play_through() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let ts0 = u32::MAX - 160 * 5;
        let mut played = Vec::new();
        for t in 0..40u64 {
            let k = 65_530 + t;
            let ts = ts0.wrapping_add((t as u32) * 160);
            assert_eq!(
                jb.push(20 * t, k as u16, ts, false, &payload(k)),
                PushResult::Accepted
            );
            if let Out::Frame(s) = pop(&mut jb, 20 * t + 1) {
                played.push(s);
            }
        }
        let want: Vec<u64> = (65_530..65_530 + 39).collect();
        assert_eq!(played, want);
        assert_eq!(jb.stats().lost, 0);
        assert_eq!(jb.stats().resets, 0);
    }

    #[test]
    fn reordered_packets_within_the_delay_play_in_order() {
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay_ms: 60,
            ..JitterConfig::default()
        });
        let order = [0u64, 2, 1, 3, 5, 4, 6, 7, 8, 9];
        let mut played = Vec::new();
        for (t, &k) in order.iter().enumerate() {
            push(&mut jb, 20 * t as u64, k, 0);
            if let Out::Frame(s) = pop(&mut jb, 20 * t as u64 + 1) {
                played.push(s);
            }
        }
        for t in 10..15u64 {
            if let Out::Frame(s) = pop(&mut jb, 20 * t + 1) {
                played.push(s);
            }
        }
        assert_eq!(played, (0..10).collect::<Vec<_>>());
        assert_eq!(jb.stats().reordered, 2);
    }

    #[test]
    fn missing_packet_with_a_later_one_buffered_is_lost_then_too_late() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = Vec::new();
        for t in 0..10u64 {
            if t != 4 {
                push(&mut jb, 20 * t, t, 0);
            }
            out.push(pop(&mut jb, 20 * t + 15));
        }
        // The first frame waits 20 ms: frame k plays at tick k + 1, but
        // packet 5 is already there when 4's turn comes at tick 5.
        assert_eq!(out[5], Out::Lost);
        assert_eq!(out[6], Out::Frame(5));
        assert_eq!(push(&mut jb, 200, 4, 0), PushResult::TooLate);
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn duplicates_are_reported_before_and_after_playout() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        push(&mut jb, 0, 0, 0);
        push(&mut jb, 5, 1, 0);
        assert_eq!(push(&mut jb, 6, 1, 0), PushResult::Duplicate);
        assert_eq!(pop(&mut jb, 20), Out::Frame(0));
        assert_eq!(push(&mut jb, 21, 0, 0), PushResult::Duplicate);
        assert_eq!(jb.stats().duplicate, 2);
        assert_eq!(pop(&mut jb, 40), Out::Frame(1));
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut jb = JitterBuffer::new(JitterConfig {
            max_payload: 4,
            ..JitterConfig::default()
        });
        assert_eq!(jb.push(0, 1, 0, false, &[0; 5]), PushResult::TooBig);
        assert_eq!(jb.push(0, 1, 0, false, &[0; 4]), PushResult::Accepted);
        assert_eq!(jb.stats().too_big, 1);
    }

    #[test]
    fn sender_restart_resets_and_plays_the_new_stream() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for t in 0..10u64 {
            push(&mut jb, 20 * t, t, 0);
            pop(&mut jb, 20 * t + 1);
        }
        let r = jb.push(200, 40_000, 12_345, true, &payload(40_000));
        assert_eq!(r, PushResult::Reset(ResetReason::SeqJump));
        assert_eq!(pop(&mut jb, 201), Out::Empty);
        assert_eq!(pop(&mut jb, 221), Out::Frame(40_000));
        // Timestamp jumping back with the sequence going on: restart.
        let r = jb.push(
            240,
            40_001,
            12_345u32.wrapping_sub(16_000),
            false,
            &payload(40_001),
        );
        assert_eq!(r, PushResult::Reset(ResetReason::TsJump));
        // A new SSRC.
        jb.push_rtp(260, 1, 40_002, 0, false, &payload(40_002));
        let r = jb.push_rtp(280, 2, 7, 0, false, &payload(7));
        assert_eq!(r, PushResult::Reset(ResetReason::Ssrc));
        assert_eq!(jb.stats().resets, 3);
    }

    #[test]
    fn dtx_silence_is_empty_and_the_next_talkspurt_plays_at_target() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = BTreeMap::new();
        // Spurt 1: seq 0..10 at 0..200 ms. Silence 200..1000 ms. Spurt 2:
        // seq 10..20 from 1000 ms (ts jumps, seq continues, marker).
        for t in 0..80u64 {
            let now = 20 * t;
            if t < 10 {
                push(&mut jb, now, t, 0);
            } else if (50..60).contains(&t) {
                let k = t - 40;
                jb.push(now, k as u16, (t * 160) as u32, k == 10, &payload(k));
            }
            out.insert(t, pop(&mut jb, now + 1));
        }
        assert_eq!(out[&10], Out::Frame(9));
        // Underrun after the spurt: concealed for at most 200 ms, then empty.
        assert_eq!(out[&11], Out::Lost);
        assert_eq!(out[&25], Out::Empty);
        assert_eq!(out[&50], Out::Empty);
        assert_eq!(out[&51], Out::Frame(10));
        assert_eq!(out[&60], Out::Frame(19));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn delay_grown_by_a_spike_shrinks_slowly_in_continuous_speech() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut frames = Vec::new();
        // Continuous speech; packets 50..55 are held back (by up to 100 ms)
        // and arrive together with 55 (a spike).
        for t in 0..500u64 {
            let now = 20 * t;
            if !(50..55).contains(&t) {
                push(&mut jb, now, t, 0);
            }
            if t == 55 {
                for k in 50..55 {
                    push(&mut jb, now, k, 0);
                }
            }
            if let Out::Frame(s) = pop(&mut jb, now + 1) {
                frames.push((t, s, jb.stats().current_delay_ms));
            }
        }
        let peak = frames.iter().map(|f| f.2).fold(0.0, f64::max);
        assert!(peak > 60.0, "stalls grew the delay to {peak}");
        let s = jb.stats();
        let last = frames.last().unwrap().2;
        let bound = s.target_delay_ms + 30.0;
        assert!(
            last <= bound,
            "delay still {last}, target {}",
            s.target_delay_ms
        );
        assert!(s.discarded >= 2, "{s:?}");
        assert_eq!(s.lost, 0);
        // Every packet played exactly once, in order, except the discarded.
        let seqs: Vec<u64> = frames.iter().map(|f| f.1).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seqs.len() as u64 + s.discarded, *seqs.last().unwrap() + 1);
    }

    /// One seeded run of a talkspurt stream over a simulated network: see
    /// `simulated_network_...` for what is checked.
    fn simulate(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The sender: talkspurts of 0.6..2 s, silences of 0.2..1 s (DTX:
        // the timestamp runs on, the sequence number does not).
        struct Sent {
            seq: u64,
            ts: u32,
            marker: bool,
            at: u64,
        }
        let mut sent = Vec::new();
        let (mut seq, mut tick) = (0u64, 0u64);
        let ts0 = rng.random::<u32>();
        let seq0 = u64::from(rng.random::<u16>());
        while tick * 20 < 60_000 {
            let spurt = rng.random_range(30..100);
            for i in 0..spurt {
                sent.push(Sent {
                    seq: seq0 + seq,
                    ts: ts0.wrapping_add((tick * 160) as u32),
                    marker: i == 0,
                    at: tick * 20,
                });
                seq += 1;
                tick += 1;
            }
            tick += rng.random_range(10..50);
        }
        // The network: 30 ms base delay, jitter of up to 80 ms between 10 s
        // and 30 s and up to 4 ms otherwise, 2 % random loss, bursts of 2 to
        // 6 losses, 1 % duplicates.
        let mut arrivals: Vec<(u64, usize)> = Vec::new();
        let mut lost_on_wire = BTreeSet::new();
        let mut burst = 0u32;
        for (i, p) in sent.iter().enumerate() {
            if burst == 0 && rng.random_bool(0.005) {
                burst = rng.random_range(2..=6);
            }
            if burst > 0 || rng.random_bool(0.02) {
                burst = burst.saturating_sub(1);
                lost_on_wire.insert(p.seq);
                continue;
            }
            let spread = if (10_000..30_000).contains(&p.at) {
                80
            } else {
                4
            };
            let delay = 30 + rng.random_range(0..=spread);
            arrivals.push((p.at + delay, i));
            if rng.random_bool(0.01) {
                arrivals.push((p.at + delay + rng.random_range(0..40), i));
            }
        }
        arrivals.sort();

        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut accepted = BTreeSet::new();
        let mut played = Vec::new();
        let mut outputs = Vec::new();
        let mut delays = Vec::new();
        let mut next = 0;
        let end = sent.last().unwrap().at + 1000;
        let mut now = 7;
        while now < end {
            while next < arrivals.len() && arrivals[next].0 <= now {
                let p = &sent[arrivals[next].1];
                let r = jb.push(
                    arrivals[next].0,
                    p.seq as u16,
                    p.ts,
                    p.marker,
                    &payload(p.seq),
                );
                match r {
                    PushResult::Accepted => {
                        assert!(
                            accepted.insert(p.seq),
                            "seed {seed}: {} accepted twice",
                            p.seq
                        );
                    }
                    PushResult::Duplicate | PushResult::TooLate => {}
                    r => panic!("seed {seed}: {} pushed: {r:?}", p.seq),
                }
                next += 1;
            }
            let discarded_before = jb.stats().discarded;
            let out = pop(&mut jb, now);
            if let Out::Frame(s) = out {
                played.push(s);
                delays.push((now, jb.stats().current_delay_ms));
            }
            outputs.push((out, jb.stats().discarded - discarded_before));
            now += 20;
        }
        let s = jb.stats();

        // Played in order, each once, nothing that did not arrive.
        assert!(
            played.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: out of order"
        );
        for p in &played {
            assert!(!lost_on_wire.contains(p), "seed {seed}: played lost {p}");
            assert!(accepted.contains(p), "seed {seed}: played unaccepted {p}");
        }
        // Every accepted packet played, except those dropped to shrink.
        let unplayed = accepted.len() - played.len();
        assert_eq!(unplayed as u64, s.discarded, "seed {seed}: {s:?}");
        // Between two frames, each skipped sequence number was concealed
        // (a Lost tick) unless it was discarded.
        let mut last: Option<u64> = None;
        let (mut lost_ticks, mut discards) = (0u64, 0u64);
        for (out, discarded) in &outputs {
            discards += discarded;
            match out {
                Out::Frame(s) => {
                    if let Some(l) = last {
                        let skipped = s - l - 1;
                        assert!(
                            lost_ticks + discards >= skipped,
                            "seed {seed}: {skipped} skipped before {s}, {lost_ticks} lost ticks"
                        );
                    }
                    last = Some(*s);
                    lost_ticks = 0;
                    discards = 0;
                }
                Out::Lost => lost_ticks += 1,
                Out::Empty => {}
            }
        }
        // Losses on the wire are counted lost; late packets are rare.
        let in_range = lost_on_wire
            .iter()
            .filter(|&&q| q < *played.last().unwrap())
            .count();
        assert!(s.lost >= in_range as u64, "seed {seed}: {s:?}");
        assert!(s.late * 20 < accepted.len() as u64, "seed {seed}: {s:?}");
        assert!(s.duplicate > 0, "seed {seed}");
        assert!(s.reordered > 0, "seed {seed}");
        // The delay adapts up under jitter and back down when it calms.
        let mean = |from: u64, to: u64| {
            let d: Vec<f64> = delays
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|(_, d)| *d)
                .collect();
            d.iter().sum::<f64>() / d.len() as f64
        };
        let (calm, rough, calm_again) = (
            mean(3000, 10_000),
            mean(15_000, 30_000),
            mean(40_000, 60_000),
        );
        assert!(calm < 40.0, "seed {seed}: calm delay {calm}");
        assert!(rough > 70.0, "seed {seed}: delay under jitter {rough}");
        assert!(calm_again < 40.0, "seed {seed}: delay after {calm_again}");
    }

    #[test]
    fn simulated_network_plays_each_timely_packet_once_and_adapts() {
        for seed in 0..8 {
            simulate(seed);
        }
    }
}
