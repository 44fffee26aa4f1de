//! Stereo call-recording timeline, aligned to wall time.
//!
//! Owns the sample timeline of one call recording: a stereo WAV at 8 kHz,
//! 16-bit, left = the caller, right = the other party, sample 0 at the
//! recording's start (`start_ms`). It places each channel's decoded RTP
//! audio at the right sample position, fills what nobody sent with silence
//! and hands out the interleaved little-endian bytes once they are final.
//! The caller owns the file: it writes a 44-byte WAV header, then each chunk
//! at offset `44 + written_bytes` before the chunk, then patches the header's
//! lengths at the end. RTP semantics per RFC 3550 §5.1 (sequence number and
//! timestamp); no RFC covers recording.
//!
//! ## Placement rule, per channel
//!
//! * The first packet is placed so that its audio ends at its arrival time:
//!   start = (arrival_ms − start_ms) × 8 − len ("wall position").
//! * Every later packet is placed by its RTP timestamp relative to the
//!   channel's reference packet (the newest placed): position = reference
//!   position + (ts − reference ts). Contiguous packets therefore follow
//!   each other exactly, losses and DTX silence leave gaps of exactly their
//!   timestamp span, and reordered packets land in place.
//! * Drift bound, [`MAX_DRIFT_MS`] (60 ms), compared with the wall position
//!   of each packet newer than the reference (older ones, reordered or
//!   duplicated, go where their timestamp says): a packet placed more than 60 ms *ahead* of wall time (the sender's
//!   clock runs fast, or it jumped) is resynchronised to its wall position at
//!   once (network delay can only make audio look late, never early). A
//!   channel more than 60 ms *behind* is resynchronised only when it has
//!   been so for [`BEHIND_CONFIRM_MS`] of arrivals (a slow sender clock, not
//!   a burst of network delay), forward by the least lateness seen in that
//!   time. A jump of more than [`JUMP_MS`] either way, or of more than 100
//!   in sequence number, is a sender restart: resynchronised at once.
//!   Each resynchronisation is counted (`resyncs`).
//! * Overlapping audio overwrites what was there. Audio for a position
//!   already handed out is dropped and counted (`late_dropped`).
//!
//! While paused, pushed audio is discarded and the paused span stays silent
//! (audio placed in it later is discarded too).
//!
//! ## Length invariant
//!
//! Positions are final [`LAG_MS`] after their wall time; [`Recorder::poll_chunk`]
//! hands out everything final. [`Recorder::finish`] hands out the rest up to
//! `end_ms`, padded with silence: the total data length is exactly
//! `(end_ms − start_ms) × 8 × 4` bytes (8 samples per ms, 4 bytes per stereo
//! sample), provided `end_ms` is not before what the polls already covered
//! (`now_ms − LAG_MS` of the last poll); then it is what was covered.
//!
//! Driven by the caller with wall-clock milliseconds (`arrival_ms`,
//! `now_ms`): `push` per decoded packet, `poll_chunk` on a timer (at least
//! every second: about 2 s of audio per channel is buffered, preallocated
//! in [`Recorder::new`]; audio further ahead is dropped and counted as
//! `overflow_dropped`), `finish` at the end. No clock, no I/O, no
//! allocation after `new`.

/// The recording's sample rate.
pub const RATE: u32 = 8000;
/// Audio becomes final this long after its wall time.
pub const LAG_MS: u64 = 200;
/// A channel is kept within this distance of wall time.
pub const MAX_DRIFT_MS: u64 = 60;
/// How long a channel must stay behind before it is moved forward.
pub const BEHIND_CONFIRM_MS: u64 = 500;
/// A jump this large is a restart, resynchronised at once.
pub const JUMP_MS: u64 = 1000;
/// Bytes per stereo sample frame: two 16-bit samples.
pub const FRAME_BYTES: usize = 4;

const PER_MS: u64 = RATE as u64 / 1000;
/// Buffered samples per channel: 2 s.
const CAPACITY: usize = 2 * RATE as usize;
const MAX_SEQ_JUMP: i16 = 100;

/// Which side of the stereo file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The caller.
    Left,
    /// The other party (agent, IVR, conference).
    Right,
}

/// Counters of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Packets with audio for positions already handed out.
    pub late_dropped: u64,
    /// Packets with audio further ahead than the buffer holds.
    pub overflow_dropped: u64,
    /// Packets pushed while paused or after `finish`.
    pub paused_dropped: u64,
    /// Times a channel was moved back to wall time.
    pub resyncs: u64,
}

/// The packet a channel's positions are reckoned from.
#[derive(Debug, Clone, Copy)]
struct Reference {
    seq: u16,
    ts: u32,
    /// Sample position of its first sample (may be negative: before start).
    pos: i64,
}

#[derive(Debug, Clone)]
struct Track {
    ring: Vec<i16>,
    reference: Option<Reference>,
    /// Arrival of the first packet of the current run more than the bound
    /// behind wall time, and the least lateness seen since (samples).
    behind_since: Option<u64>,
    behind_least: i64,
}

impl Track {
    fn new() -> Self {
        Self {
            ring: vec![0; CAPACITY],
            reference: None,
            behind_since: None,
            behind_least: i64::MAX,
        }
    }

    /// Decides where a packet starts; `true` when that is a resync.
    fn place(&mut self, arrival_ms: u64, wall: i64, seq: u16, ts: u32) -> (i64, bool) {
        let bound = (MAX_DRIFT_MS * PER_MS) as i64;
        let jump = (JUMP_MS * PER_MS) as i64;
        let Some(r) = self.reference else {
            return (wall, false);
        };
        let by_rtp = r.pos + i64::from(ts.wrapping_sub(r.ts) as i32);
        let seq_jump = seq.wrapping_sub(r.seq) as i16;
        let drift = by_rtp - wall;
        if (-MAX_SEQ_JUMP..=0).contains(&seq_jump) {
            // Reordered or duplicate: its place is known from the newer one.
            return (by_rtp, false);
        }
        if drift > bound || drift < -jump || !(-MAX_SEQ_JUMP..=MAX_SEQ_JUMP).contains(&seq_jump) {
            self.behind_since = None;
            return (wall, true);
        }
        if drift >= -bound {
            self.behind_since = None;
            return (by_rtp, false);
        }
        let since = match self.behind_since {
            Some(since) => {
                self.behind_least = self.behind_least.min(-drift);
                since
            }
            None => {
                self.behind_since = Some(arrival_ms);
                self.behind_least = -drift;
                arrival_ms
            }
        };
        if arrival_ms.saturating_sub(since) >= BEHIND_CONFIRM_MS {
            self.behind_since = None;
            return (by_rtp + self.behind_least, true);
        }
        (by_rtp, false)
    }
}

/// The recording timeline (see the module doc).
#[derive(Debug, Clone)]
pub struct Recorder {
    start_ms: u64,
    /// Samples handed out so far (per channel).
    flushed: u64,
    tracks: [Track; 2],
    paused_at: Option<u64>,
    /// The last paused span, [from, to) in samples: stays silent.
    muted: (u64, u64),
    end: Option<u64>,
    stats: RecorderStats,
}

impl Recorder {
    /// A recording whose sample 0 is wall-clock `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            start_ms,
            flushed: 0,
            tracks: [Track::new(), Track::new()],
            paused_at: None,
            muted: (0, 0),
            end: None,
            stats: RecorderStats::default(),
        }
    }

    /// Sample position of a wall-clock time (0 before the start).
    fn position(&self, ms: u64) -> u64 {
        // Capped (at ~8900 years) so that positions stay far inside i64.
        ms.saturating_sub(self.start_ms).min(1 << 48) * PER_MS
    }

    /// Places one decoded packet (8 kHz mono) on `ch`'s timeline.
    pub fn push(&mut self, ch: Channel, arrival_ms: u64, seq: u16, ts: u32, pcm: &[i16]) {
        if self.paused_at.is_some() || self.end.is_some() {
            self.stats.paused_dropped += 1;
            return;
        }
        let wall = self.position(arrival_ms) as i64 - pcm.len() as i64;
        let track = &mut self.tracks[ch as usize];
        let (pos, resync) = track.place(arrival_ms, wall, seq, ts);
        if resync {
            self.stats.resyncs += 1;
        }
        let newer = match track.reference {
            None => true,
            Some(r) => resync || seq.wrapping_sub(r.seq) as i16 > 0,
        };
        if newer {
            track.reference = Some(Reference { seq, ts, pos });
        }
        let (mut late, mut overflow) = (false, false);
        let limit = self.flushed + CAPACITY as u64;
        for (i, &s) in pcm.iter().enumerate() {
            let at = pos + i as i64;
            if at < self.flushed as i64 {
                late = true;
                continue;
            }
            let at = at as u64;
            if at >= limit {
                overflow = true;
                break;
            }
            if (self.muted.0..self.muted.1).contains(&at) {
                continue;
            }
            track.ring[(at % CAPACITY as u64) as usize] = s;
        }
        self.stats.late_dropped += u64::from(late);
        self.stats.overflow_dropped += u64::from(overflow);
    }

    /// Pauses the recording at `now_ms` (e.g. while card details are read
    /// out): from here until [`Recorder::resume`] the file is silent.
    pub fn pause(&mut self, now_ms: u64) {
        if self.paused_at.is_some() {
            return;
        }
        let at = self.position(now_ms).max(self.flushed);
        self.paused_at = Some(at);
        // Audio already placed beyond the pause (a channel slightly ahead).
        for track in &mut self.tracks {
            for p in at..self.flushed + CAPACITY as u64 {
                track.ring[(p % CAPACITY as u64) as usize] = 0;
            }
        }
    }

    /// Resumes after [`Recorder::pause`].
    pub fn resume(&mut self, now_ms: u64) {
        if let Some(from) = self.paused_at.take() {
            self.muted = (from, self.position(now_ms).max(from));
        }
    }

    /// Whether the recording is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// Hands out the interleaved 16-bit little-endian stereo bytes that are
    /// final at `now_ms` (older than `now_ms − LAG_MS`), as many whole
    /// sample frames as fit in `out`. Returns the bytes written.
    pub fn poll_chunk(&mut self, now_ms: u64, out: &mut [u8]) -> usize {
        if self.end.is_some() {
            return 0;
        }
        let upto = self.position(now_ms.saturating_sub(LAG_MS));
        self.drain(upto, out)
    }

    /// Ends the recording at `end_ms` and hands out everything up to it,
    /// padded with silence; call again until it returns 0 (the first call's
    /// `end_ms` holds). After it, pushes are dropped.
    pub fn finish(&mut self, end_ms: u64, out: &mut [u8]) -> usize {
        let end = match self.end {
            Some(end) => end,
            None => {
                let end = self.position(end_ms);
                self.end = Some(end);
                end
            }
        };
        self.drain(end, out)
    }

    fn drain(&mut self, upto: u64, out: &mut [u8]) -> usize {
        let frames = upto
            .saturating_sub(self.flushed)
            .min((out.len() / FRAME_BYTES) as u64) as usize;
        let [left, right] = &mut self.tracks;
        for (k, chunk) in out.chunks_exact_mut(FRAME_BYTES).take(frames).enumerate() {
            let i = ((self.flushed + k as u64) % CAPACITY as u64) as usize;
            chunk[..2].copy_from_slice(&left.ring[i].to_le_bytes());
            chunk[2..].copy_from_slice(&right.ring[i].to_le_bytes());
            left.ring[i] = 0;
            right.ring[i] = 0;
        }
        self.flushed += frames as u64;
        frames * FRAME_BYTES
    }

    /// Data bytes handed out so far (the file offset of the next chunk is
    /// 44 plus this).
    pub fn written_bytes(&self) -> u64 {
        self.flushed * FRAME_BYTES as u64
    }

    /// The counters.
    pub fn stats(&self) -> RecorderStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const START: u64 = 1_000_000;
    const N: usize = 160;

    /// Sample value at timeline position `p` on a channel: never zero.
    fn value(ch: Channel, p: u64) -> i16 {
        let base = if ch == Channel::Left { 1 } else { 20_000 };
        base + (p % 5000) as i16
    }

    fn packet(ch: Channel, first: u64) -> Vec<i16> {
        (first..first + N as u64).map(|p| value(ch, p)).collect()
    }

    /// The whole file as (left, right) samples.
    struct File {
        left: Vec<i16>,
        right: Vec<i16>,
        bytes: u64,
    }

    impl File {
        fn new() -> Self {
            Self {
                left: Vec::new(),
                right: Vec::new(),
                bytes: 0,
            }
        }

        fn take(&mut self, buf: &[u8]) {
            assert_eq!(buf.len() % 4, 0);
            for f in buf.chunks_exact(4) {
                self.left.push(i16::from_le_bytes([f[0], f[1]]));
                self.right.push(i16::from_le_bytes([f[2], f[3]]));
            }
            self.bytes += buf.len() as u64;
        }

        /// Takes what `next` hands out until it hands out nothing.
        fn drain(&mut self, buf: &mut [u8], mut next: impl FnMut(&mut [u8]) -> usize) {
            loop {
                let n = next(buf);
                if n == 0 {
                    break;
                }
                self.take(&buf[..n]);
            }
        }

        fn poll(&mut self, r: &mut Recorder, now: u64) {
            self.drain(&mut [0u8; 4096], |b| r.poll_chunk(now, b));
        }

        fn finish(&mut self, r: &mut Recorder, end: u64) {
            self.drain(&mut [0u8; 1000], |b| r.finish(end, b));
            assert_eq!(self.bytes, r.written_bytes());
        }
    }

    /// Pushes packet `k` of a steady stream on `ch` (ts = 160·k + base).
    fn push_k(r: &mut Recorder, ch: Channel, k: u64, arrival: u64) {
        let ts = 90_000u32.wrapping_add((k as u32).wrapping_mul(N as u32));
        r.push(ch, arrival, k as u16, ts, &packet(ch, k * N as u64));
    }

    /// Packets `ticks` of a steady stream on `channels`, packet k arriving
    /// at 20·(k + 1) ms; `also` runs after each tick's pushes, then a poll.
    fn steady(
        r: &mut Recorder,
        file: &mut File,
        ticks: std::ops::Range<u64>,
        channels: &[Channel],
        mut also: impl FnMut(&mut Recorder, u64),
    ) {
        for k in ticks {
            let now = START + 20 * (k + 1);
            for &ch in channels {
                push_k(r, ch, k, now);
            }
            also(r, now);
            file.poll(r, now);
        }
    }

    const BOTH: [Channel; 2] = [Channel::Left, Channel::Right];

    #[test]
    fn steady_streams_give_exactly_the_duration_aligned() {
        let mut r = Recorder::new(START);
        let mut file = File::new();
        steady(&mut r, &mut file, 0..500, &BOTH, |_, _| {});
        let end = START + 10_000;
        file.finish(&mut r, end);
        assert_eq!(file.bytes, 10_000 * 8 * 4);
        for p in 0..80_000u64 {
            assert_eq!(file.left[p as usize], value(Channel::Left, p), "left {p}");
            assert_eq!(
                file.right[p as usize],
                value(Channel::Right, p),
                "right {p}"
            );
        }
        assert_eq!(r.stats(), RecorderStats::default());
    }

    #[test]
    fn one_second_gap_is_one_second_of_silence() {
        // Left loses 50 packets (seq and ts skip); right stops sending for
        // 1 s with the seq continuing (DTX: only the timestamp jumps).
        let mut r = Recorder::new(START);
        let mut file = File::new();
        let mut right_seq = 0u16;
        for k in 0..300u64 {
            let now = START + 20 * (k + 1);
            let gap = (100..150).contains(&k);
            if !gap {
                push_k(&mut r, Channel::Left, k, now);
                let ts = 90_000 + (k as u32) * N as u32;
                r.push(
                    Channel::Right,
                    now,
                    right_seq,
                    ts,
                    &packet(Channel::Right, k * N as u64),
                );
                right_seq += 1;
            }
            file.poll(&mut r, now);
        }
        file.finish(&mut r, START + 6000);
        assert_eq!(file.bytes, 6000 * 32);
        for (side, ch) in [(&file.left, Channel::Left), (&file.right, Channel::Right)] {
            for (p, &s) in side.iter().enumerate() {
                let p = p as u64;
                if (16_000..24_000).contains(&p) {
                    assert_eq!(s, 0, "{ch:?} {p}");
                } else {
                    assert_eq!(s, value(ch, p), "{ch:?} {p}");
                }
            }
        }
        assert_eq!(r.stats().resyncs, 0);
    }

    /// Runs 60 s of a sender whose clock runs `ppm` parts per million fast
    /// (negative: slow), with up to `jitter_ms` of network delay; returns
    /// the largest |position − wall| seen (ms) and the recorder.
    fn drifting_sender(ppm: i64, jitter_ms: u64, seed: u64) -> (f64, Recorder, File) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut r = Recorder::new(START);
        let mut file = File::new();
        let mut worst = 0.0f64;
        let period_us = 20_000 * 1_000_000 / (1_000_000 + ppm);
        for k in 0..3000u64 {
            let sent_us = (k + 1) * period_us as u64;
            let delay = if jitter_ms == 0 {
                0
            } else {
                rng.random_range(0..=jitter_ms)
            };
            let now = START + sent_us / 1000 + delay;
            push_k(&mut r, Channel::Left, k, now);
            let reference = r.tracks[0].reference.unwrap();
            // Drift of the sender's true capture time against the file.
            let true_start = sent_us as f64 / 1000.0 * 8.0 - N as f64;
            worst = worst.max(((reference.pos as f64) - true_start).abs() / 8.0);
            file.poll(&mut r, now);
        }
        (worst, r, file)
    }

    #[test]
    fn fast_sender_clock_stays_within_the_drift_bound() {
        let (worst, mut r, mut file) = drifting_sender(10_000, 0, 1);
        assert!(worst <= MAX_DRIFT_MS as f64 + 20.0, "drifted {worst} ms");
        // 1 % of 60 s is 600 ms: about ten resyncs of 60 ms.
        let resyncs = r.stats().resyncs;
        assert!((8..=12).contains(&resyncs), "{resyncs} resyncs");
        file.finish(&mut r, START + 60_000);
        assert_eq!(file.bytes, 60_000 * 32);
    }

    #[test]
    fn slow_sender_clock_stays_within_the_drift_bound() {
        let (worst, r, _) = drifting_sender(-10_000, 0, 2);
        let confirm_drift = BEHIND_CONFIRM_MS as f64 / 100.0;
        assert!(
            worst <= MAX_DRIFT_MS as f64 + confirm_drift + 20.0,
            "drifted {worst} ms"
        );
        assert!(r.stats().resyncs >= 8);
    }

    #[test]
    fn network_jitter_within_the_bound_does_not_resync() {
        for seed in 0..5 {
            let (worst, r, file) = drifting_sender(0, 50, seed);
            assert_eq!(r.stats().resyncs, 0, "seed {seed}");
            // Placed by timestamp: exactly aligned with the first packet.
            assert!(worst <= 50.0 + 1.0, "seed {seed}: {worst}");
            let first = file.left.iter().position(|&s| s != 0).unwrap();
            let offset = first as u64;
            assert!(offset <= 50 * 8, "seed {seed}");
            for (p, &s) in file.left.iter().enumerate().skip(first) {
                assert_eq!(
                    s,
                    value(Channel::Left, p as u64 - offset),
                    "seed {seed} at {p}"
                );
            }
        }
    }

    #[test]
    fn pause_and_resume_write_silence_for_the_span() {
        let mut r = Recorder::new(START);
        let mut file = File::new();
        steady(&mut r, &mut file, 0..250, &BOTH, |r, now| {
            if now == START + 2000 {
                r.pause(now);
            }
            if now == START + 3000 {
                r.resume(now);
            }
        });
        file.finish(&mut r, START + 5000);
        assert_eq!(file.bytes, 5000 * 32);
        for p in 0..40_000usize {
            let muted = (16_000..24_000).contains(&p);
            for (side, ch) in [(&file.left, Channel::Left), (&file.right, Channel::Right)] {
                let want = if muted { 0 } else { value(ch, p as u64) };
                assert_eq!(side[p], want, "{ch:?} {p}");
            }
        }
        // Arrivals 2020..=3000 ms, both channels.
        assert_eq!(r.stats().paused_dropped, 100);
    }

    #[test]
    fn reordered_packets_land_in_place() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut r = Recorder::new(START);
        let mut file = File::new();
        let mut order: Vec<u64> = (0..200).collect();
        // Swap neighbours at random (packet 0 stays first): each packet at
        // most one slot off.
        let mut i = 2;
        while i < order.len() {
            if rng.random_bool(0.3) {
                order.swap(i - 1, i);
                i += 1;
            }
            i += 1;
        }
        for (slot, &k) in order.iter().enumerate() {
            let now = START + 20 * (slot as u64 + 1) + 5;
            push_k(&mut r, Channel::Left, k, now);
            push_k(&mut r, Channel::Right, slot as u64, now);
            file.poll(&mut r, now);
        }
        file.finish(&mut r, START + 4000);
        // Packet 0 arrived 25 ms after the start: its audio starts at 5 ms.
        let offset = 40;
        assert!(file.left[..offset].iter().all(|&s| s == 0));
        for p in offset..30_000usize {
            assert_eq!(
                file.left[p],
                value(Channel::Left, (p - offset) as u64),
                "{p}"
            );
        }
        assert_eq!(r.stats().late_dropped, 0);
    }

    #[test]
    fn late_audio_for_flushed_positions_is_dropped_and_counted() {
        let mut r = Recorder::new(START);
        let mut file = File::new();
        steady(&mut r, &mut file, 0..100, &[Channel::Left], |_, _| {});
        // Packet 10 again, 1.8 s late: its position was handed out.
        push_k(&mut r, Channel::Left, 10, START + 2000);
        assert_eq!(r.stats().late_dropped, 1);
        file.finish(&mut r, START + 2000);
        assert_eq!(file.left[1600], value(Channel::Left, 1600));
    }

    #[test]
    fn finish_length_is_exact_for_any_duration_and_buffer() {
        for (dur, buf) in [(1, 4), (12_345, 1000), (7, 3), (999, 4096)] {
            let mut r = Recorder::new(START);
            let mut out = vec![0u8; buf];
            let mut total = 0;
            loop {
                let n = r.finish(START + dur, &mut out);
                if n == 0 {
                    break;
                }
                total += n;
                assert_eq!(n % 4, 0);
            }
            if buf < 4 {
                assert_eq!(total, 0, "a buffer under one frame holds nothing");
                continue;
            }
            assert_eq!(total as u64, dur * 8 * 4, "duration {dur}");
            assert_eq!(r.written_bytes(), dur * 32);
            r.push(Channel::Left, START + 1, 0, 0, &[1; 160]);
            assert_eq!(r.finish(START + dur + 1000, &mut out), 0);
        }
    }

    #[test]
    fn sender_restart_resyncs_at_once() {
        let mut r = Recorder::new(START);
        let mut file = File::new();
        steady(&mut r, &mut file, 0..100, &[Channel::Left], |_, _| {});
        // New sequence and timestamp space, continuing in time.
        steady(&mut r, &mut file, 100..200, &[], |r, now| {
            let k = (now - START) / 20 - 1;
            let j = k - 100;
            let (seq, ts) = (30_000 + j as u16, 7_777_777 + j as u32 * 160);
            r.push(Channel::Left, now, seq, ts, &packet(Channel::Left, k * 160));
        });
        file.finish(&mut r, START + 4000);
        assert_eq!(r.stats().resyncs, 1);
        for p in 0..32_000usize {
            assert_eq!(file.left[p], value(Channel::Left, p as u64), "{p}");
        }
    }
}
