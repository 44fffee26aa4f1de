//! Receive statistics for one RTP stream and an estimated MOS.
//!
//! Owns what a receiver counts about one source (RFC 3550 Appendix A):
//! the extended highest sequence number with source probation and restart
//! detection (A.1), expected and lost packets, the fraction lost since the
//! previous report (A.3) and the interarrival jitter (A.8). From those it
//! builds the report block of an RTCP RR/SR ([`ReceiveStats::report_block`])
//! and a listening-and-conversation quality estimate with a simplified
//! ITU-T G.107 E-model ([`mos`]).
//!
//! Driven by the caller: [`ReceiveStats::on_packet`] for every RTP packet of
//! the stream with its arrival time (`now_ms`, a monotonic millisecond count
//! the caller provides), `report_block` when an RTCP report is due,
//! `snapshot` whenever a figure is wanted. No clock, no allocation.
//!
//! ## The E-model, simplified
//!
//! R = 93.2 − Id − Ie,eff (G.107 §7 with default values: Ro − Is = 93.2,
//! A = 0). Id is the pure-delay impairment Idd of G.107 §7.4 for the absolute
//! delay Ta (no echo: talker echo is taken as fully controlled, so Idte and
//! Idle vanish). Ta = the one-way delay the caller supplies plus the jitter
//! buffer's delay, taken as [`JITTER_BUFFER_FACTOR`] × jitter. Ie,eff =
//! Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl) (G.107 §7.5) with random loss
//! (BurstR = 1). MOS from R per G.107 Annex B.
//!
//! Codec values: G.711 with packet-loss concealment, Ie = 0, Bpl = 25.1
//! (ITU-T G.113 Appendix I). Opus: G.113 lists no values; we use Ie = 0 (at
//! the 20+ kbit/s of a voice call Opus is at least transparent on the
//! narrowband scale) and Bpl = 30, a project estimate reflecting Opus's
//! built-in concealment being more robust than G.711 Appendix I. The Opus
//! figures are a planning estimate, not an ITU value.

use crate::media::rtcp::ReportBlock;

/// RFC 3550 A.1: a jump of this many or more is not a plain loss burst.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: this far behind is a reordered packet, not a restart.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: sequential packets before a source is valid.
const MIN_SEQUENTIAL: u32 = 2;
const SEQ_MOD: u32 = 1 << 16;

/// The jitter buffer's delay as a multiple of the interarrival jitter, for
/// the E-model's absolute delay.
pub const JITTER_BUFFER_FACTOR: f64 = 2.0;

/// The codec whose E-model values [`mos`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MosCodec {
    /// G.711 (µ-law or A-law) with packet-loss concealment.
    G711,
    /// Opus (RFC 6716) in a voice configuration.
    Opus,
}

impl MosCodec {
    /// (Ie, Bpl): equipment impairment and packet-loss robustness.
    fn impairment(self) -> (f64, f64) {
        match self {
            Self::G711 => (0.0, 25.1),
            Self::Opus => (0.0, 30.0),
        }
    }
}

/// The E-model transmission rating R for random loss (`loss_fraction`,
/// 0..=1), interarrival jitter and one-way delay in ms.
pub fn r_factor(loss_fraction: f64, jitter_ms: f64, one_way_delay_ms: f64, codec: MosCodec) -> f64 {
    let ta = one_way_delay_ms.max(0.0) + JITTER_BUFFER_FACTOR * jitter_ms.max(0.0);
    let ppl = 100.0 * loss_fraction.clamp(0.0, 1.0);
    let (ie, bpl) = codec.impairment();
    let burst_r = 1.0;
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl);
    93.2 - delay_impairment(ta) - ie_eff
}

/// Idd of ITU-T G.107 §7.4: zero up to 100 ms of absolute delay Ta, then
/// 25·{(1 + X⁶)^⅙ − 3·(1 + (X/3)⁶)^⅙ + 2} with X = log2(Ta / 100).
pub fn delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms.is_nan() || ta_ms <= 100.0 {
        return 0.0;
    }
    let x = (ta_ms / 100.0).log2();
    let sixth = 1.0 / 6.0;
    25.0 * ((1.0 + x.powi(6)).powf(sixth) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(sixth) + 2.0)
}

/// MOS (1.0..=4.5) from R, ITU-T G.107 Annex B.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The cubic dips just below 1 for R under about 6.5: clamp.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// Estimated MOS for random loss (`loss_fraction`, 0..=1), jitter and
/// one-way delay in ms (see the module doc for the model).
pub fn mos(loss_fraction: f64, jitter_ms: f64, one_way_delay_ms: f64, codec: MosCodec) -> f64 {
    mos_from_r(r_factor(loss_fraction, jitter_ms, one_way_delay_ms, codec))
}

/// A summary of one stream's reception.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualitySnapshot {
    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub packets: u64,
    /// Expected minus received: negative with duplicates.
    pub lost: i64,
    /// Extended highest sequence number minus the base, plus one.
    pub expected: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Estimated MOS with the configured codec and one-way delay.
    pub mos: f64,
}

/// RFC 3550 receive statistics for one source (see the module doc).
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    codec: MosCodec,
    one_way_delay_ms: f64,
    started: bool,
    probation: u32,
    max_seq: u16,
    /// Wraps of the sequence number, shifted left by 16 (A.1 `cycles`).
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    received_prior: u64,
    expected_prior: u64,
    restarts: u64,
    /// Relative transit time of the previous packet, timestamp units.
    transit: Option<u32>,
    /// Interarrival jitter, timestamp units (A.8, floating-point form).
    jitter: f64,
    clock_rate: u32,
}

impl ReceiveStats {
    /// Statistics for a stream of `codec`, with no known network delay.
    pub fn new(codec: MosCodec) -> Self {
        Self {
            codec,
            one_way_delay_ms: 0.0,
            started: false,
            probation: MIN_SEQUENTIAL,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: SEQ_MOD + 1,
            received: 0,
            received_prior: 0,
            expected_prior: 0,
            restarts: 0,
            transit: None,
            jitter: 0.0,
            clock_rate: 8000,
        }
    }

    /// The one-way network delay for the MOS estimate (e.g. half the RTCP
    /// round-trip time, plus codec and packetization delay).
    pub fn set_one_way_delay_ms(&mut self, ms: f64) {
        self.one_way_delay_ms = ms;
    }

    /// RFC 3550 A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// RFC 3550 A.1 `update_seq`: whether the packet counts.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        }
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: a restart if the next packet follows it.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq);
                self.restarts += 1;
                self.transit = None;
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted as received.
        self.received += 1;
        true
    }

    /// One RTP packet of the stream arrived at `now_ms`.
    pub fn on_packet(&mut self, now_ms: u64, seq: u16, ts: u32, clock_rate: u32) {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        if !self.update_seq(seq) {
            return;
        }
        if clock_rate == 0 {
            return;
        }
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.transit = None;
            self.jitter = 0.0;
        }
        // A.8: arrival in timestamp units; differences are modulo 2^32.
        let arrival = (u128::from(now_ms) * u128::from(clock_rate) / 1000) as u32;
        let transit = arrival.wrapping_sub(ts);
        if let Some(prev) = self.transit {
            let d = f64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// The extended highest sequence number received (A.1).
    pub fn ext_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected: the span of extended sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        let ext = u64::from(self.cycles) + u64::from(self.max_seq);
        (ext + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative lost: expected − received (negative with duplicates).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter_ts(&self) -> u32 {
        self.jitter as u32
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// How many times the source restarted its sequence (A.1).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The report block for this source, and start a new report interval
    /// (A.3): `lsr` and `dlsr` come from the last SR received from it.
    pub fn report_block(&mut self, ssrc: u32, lsr: u32, dlsr: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            ext_highest_seq: self.ext_highest_seq(),
            jitter: self.jitter_ts(),
            lsr,
            dlsr,
        }
    }

    /// The figures so far, with the estimated MOS.
    pub fn snapshot(&self) -> QualitySnapshot {
        let expected = self.expected();
        let lost = self.lost();
        let loss = if expected == 0 {
            0.0
        } else {
            lost.max(0) as f64 / expected as f64
        };
        let jitter_ms = self.jitter_ms();
        QualitySnapshot {
            packets: self.received,
            lost,
            expected,
            jitter_ms,
            mos: mos(loss, jitter_ms, self.one_way_delay_ms, self.codec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn r_93_2_is_mos_4_41() {
        assert!(close(mos_from_r(93.2), 4.41, 0.005), "{}", mos_from_r(93.2));
        assert!(close(r_factor(0.0, 0.0, 0.0, MosCodec::G711), 93.2, 1e-9));
        assert!(close(mos(0.0, 0.0, 0.0, MosCodec::G711), 4.41, 0.005));
    }

    #[test]
    fn mos_from_r_is_clamped_and_monotonic() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        let mut prev = 1.0;
        for r in 1..100 {
            let m = mos_from_r(f64::from(r));
            assert!(m >= prev, "not monotonic at R {r}");
            prev = m;
        }
        // G.107 Annex B: R 50 is about MOS 2.58.
        assert!(close(mos_from_r(50.0), 2.58, 0.01));
    }

    #[test]
    fn g711_with_plc_one_percent_random_loss() {
        // Ie,eff = 95 · 1 / (1 + 25.1) = 3.64; R = 89.56; MOS 4.33.
        let r = r_factor(0.01, 0.0, 0.0, MosCodec::G711);
        assert!(close(r, 89.56, 0.01), "{r}");
        assert!(close(mos(0.01, 0.0, 0.0, MosCodec::G711), 4.33, 0.005));
        // 5 %: Ie,eff = 95 · 5 / 30.1 = 15.78; R = 77.42.
        assert!(close(r_factor(0.05, 0.0, 0.0, MosCodec::G711), 77.42, 0.01));
    }

    #[test]
    fn opus_degrades_more_gently_with_loss_than_g711() {
        for loss in [0.01, 0.03, 0.1] {
            let g = mos(loss, 0.0, 0.0, MosCodec::G711);
            let o = mos(loss, 0.0, 0.0, MosCodec::Opus);
            assert!(o > g, "loss {loss}: opus {o} g711 {g}");
        }
        assert!(close(mos(0.0, 0.0, 0.0, MosCodec::Opus), 4.41, 0.005));
    }

    #[test]
    fn delay_impairment_follows_g107_idd() {
        assert_eq!(delay_impairment(100.0), 0.0);
        assert_eq!(delay_impairment(50.0), 0.0);
        // X = 1: 25·(2^⅙ − 3·(1 + 3^-6)^⅙ + 2) = 3.04.
        assert!(close(delay_impairment(200.0), 3.04, 0.01));
        // X = 2: 24.07.
        assert!(close(delay_impairment(400.0), 24.07, 0.01));
        // Jitter counts through the jitter buffer: 50 ms of jitter and
        // 100 ms of network delay is Ta = 200 ms.
        let r = r_factor(0.0, 50.0, 100.0, MosCodec::G711);
        assert!(close(r, 93.2 - 3.04, 0.01), "{r}");
    }

    /// Feeds packets `seqs` at 20 ms spacing, ts 160 per seq.
    fn feed(s: &mut ReceiveStats, seqs: impl IntoIterator<Item = u16>) {
        for (i, seq) in seqs.into_iter().enumerate() {
            let ts = u32::from(seq).wrapping_mul(160);
            s.on_packet(1000 + 20 * i as u64, seq, ts, 8000);
        }
    }

    #[test]
    fn first_packet_is_probation_then_counting_starts() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        feed(&mut s, [10]);
        assert_eq!(s.snapshot().packets, 0);
        assert_eq!(s.expected(), 0);
        feed(&mut s, [11, 12, 13]);
        assert_eq!(s.snapshot().packets, 3);
        assert_eq!(s.expected(), 3);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn extended_sequence_counts_wraps() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        feed(&mut s, (65530..=65535).chain(0..=9));
        // Counting starts at 65531: 5 before the wrap, 10 after.
        assert_eq!(s.ext_highest_seq(), 65536 + 9);
        assert_eq!(s.expected(), 15);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn losses_and_fraction_lost_per_report_interval() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        // 100..=199 with every tenth missing: 10 lost of 100 expected
        // (counting starts at 101, so 99 expected, 9 or 10 lost).
        feed(&mut s, (100..200).filter(|q| q % 10 != 5));
        let b = s.report_block(1, 0, 0);
        assert_eq!(s.expected(), 99);
        assert_eq!(b.cumulative_lost, 10);
        assert_eq!(b.fraction_lost, (10 * 256 / 99) as u8);
        assert_eq!(b.ext_highest_seq, 199);
        // The next interval has no loss.
        feed(&mut s, 200..300);
        let b = s.report_block(1, 0, 0);
        assert_eq!(b.fraction_lost, 0);
        assert_eq!(b.cumulative_lost, 10);
        let snap = s.snapshot();
        assert_eq!(snap.lost, 10);
        assert_eq!(snap.expected, 199);
        let want = mos(10.0 / 199.0, s.jitter_ms(), 0.0, MosCodec::G711);
        assert!(close(snap.mos, want, 1e-12));
        assert!(snap.mos < mos(0.05, 0.0, 0.0, MosCodec::G711));
    }

    #[test]
    fn duplicates_make_lost_negative() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        feed(&mut s, [1, 2, 3, 3, 3, 4]);
        assert_eq!(s.expected(), 3);
        assert_eq!(s.lost(), -2);
        let b = s.report_block(1, 0, 0);
        assert_eq!(b.cumulative_lost, -2);
        assert_eq!(b.fraction_lost, 0);
        assert_eq!(
            s.snapshot().mos,
            mos(0.0, s.jitter_ms(), 0.0, MosCodec::G711)
        );
    }

    #[test]
    fn big_jump_restarts_after_two_sequential_packets() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        feed(&mut s, 1..=50);
        // One stray packet far away is ignored.
        feed(&mut s, [40_000]);
        assert_eq!(s.ext_highest_seq(), 50);
        assert_eq!(s.restarts(), 0);
        // The sender restarted: two in a row re-initialise the source.
        feed(&mut s, [20_000, 20_001, 20_002]);
        assert_eq!(s.restarts(), 1);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn reordered_packet_within_misorder_does_not_restart() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        feed(&mut s, [1, 2, 3, 5, 4, 6]);
        assert_eq!(s.ext_highest_seq(), 6);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.restarts(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550_a8_on_alternating_delay() {
        // Packets every 20 ms (160 ts units); odd ones arrive 10 ms late, so
        // every transit difference is 80 units: J_n = 80·(1 − (15/16)^n).
        let mut s = ReceiveStats::new(MosCodec::G711);
        let n = 40u32;
        for i in 0..=n {
            let late = if i % 2 == 1 { 10 } else { 0 };
            s.on_packet(
                5000 + 20 * u64::from(i) + late,
                i as u16 + 7,
                3_000_000 + 160 * i,
                8000,
            );
        }
        // The first packet is in probation; jitter starts at the second.
        let diffs = n - 1;
        let expected = 80.0 * (1.0 - (15.0f64 / 16.0).powi(diffs as i32));
        assert!(
            close(s.jitter, expected, 1e-9),
            "{} vs {expected}",
            s.jitter
        );
        assert!(close(s.jitter_ms(), expected / 8.0, 1e-9));
        assert_eq!(s.jitter_ts(), expected as u32);
    }

    #[test]
    fn jitter_is_zero_for_a_steady_stream_across_timestamp_wrap() {
        let mut s = ReceiveStats::new(MosCodec::G711);
        for i in 0..100u32 {
            let ts = (u32::MAX - 160 * 50).wrapping_add(160 * i);
            s.on_packet(20 * u64::from(i), i as u16, ts, 8000);
        }
        assert_eq!(s.jitter, 0.0);
    }
}
