//! Generated RTCP for one leg: when to report and what (RFC 3550 §6).
//!
//! Owns the report schedule of one leg whose outgoing stream we produce
//! (transcoded, a prompt, music): relayed RTCP would describe another
//! stream there, so the engine drops it and sends ours instead. A
//! [`Reporter`] keeps
//!
//! * the schedule (§6.2, §6.3.1): the first report after half the minimum
//!   interval, then every [`INTERVAL_MS`], each interval randomized to
//!   [0.5, 1.5] × itself so that legs do not report in lockstep. With the
//!   two members and the bandwidth of a voice call the computed interval is
//!   always below the 5 s minimum, so the minimum is the interval; we do not
//!   do timer reconsideration (§6.3.3 ff.), so there is no e − 3/2
//!   compensation either;
//! * the last SR heard from the leg (§6.4.1): the middle 32 bits of its NTP
//!   timestamp and when it arrived, to echo as LSR and DLSR.
//!
//! What it writes is a compound SR (when we have sent the leg RTP) or RR,
//! with our SSRC, at most one report block (on the RTP we receive from the
//! leg, from [`ReceiveStats::report_block`]), then SDES with our CNAME
//! (§6.1). To say goodbye, append [`rtcp::write_bye`] after a report.
//!
//! Sans-IO and without allocation: the caller hands in a monotonic
//! millisecond count (`now_ms`), the wall time for the NTP timestamp, the
//! received RTCP and an output buffer. The engine asks [`Reporter::due`]
//! from its sweep and calls [`Reporter::write`] when it says so, and passes
//! the leg's RTCP to [`Reporter::on_rtcp`]. The randomization is an
//! xorshift generator seeded by the caller, so runs are reproducible.

use crate::media::quality::ReceiveStats;
use crate::media::rtcp::{self, ReportBlock, RtcpPacket, SenderInfo};

/// The minimum report interval, RFC 3550 §6.2 (Tmin), which is the interval
/// of a two-party voice call (see the module doc).
pub const INTERVAL_MS: u64 = 5_000;

/// What we send to the leg, for the sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sending {
    /// Our SSRC towards the leg (the sender SSRC of SR, RR and SDES).
    pub ssrc: u32,
    /// Whether we sent the leg RTP recently (RFC 3550 §6.4: since the
    /// report before the last one): an SR if so, else an RR.
    pub sent_any: bool,
    /// The RTP timestamp that corresponds to the wall time of the report.
    pub rtp_ts: u32,
    /// RTP packets sent to the leg since the stream started (wraps).
    pub packets: u32,
    /// RTP payload octets sent to the leg since the stream started (wraps).
    pub octets: u32,
}

/// The last SR received from the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastSr {
    /// Its sender SSRC: only a block on that source echoes it.
    ssrc: u32,
    /// The middle 32 bits of its NTP timestamp.
    lsr: u32,
    /// When it arrived (`now_ms`).
    at_ms: u64,
}

/// The RTCP schedule and report state of one leg (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    /// When the next report is due (`now_ms`).
    next_ms: u64,
    /// xorshift32 state, never 0.
    rng: u32,
    last_sr: Option<LastSr>,
}

impl Reporter {
    /// A leg's reporter from `now_ms`: the first report is due after
    /// [0.5, 1.5] × half of [`INTERVAL_MS`] (RFC 3550 §6.2), drawn from `seed`.
    pub fn new(now_ms: u64, seed: u32) -> Reporter {
        let mut r = Reporter {
            next_ms: 0,
            rng: scramble(seed),
            last_sr: None,
        };
        r.next_ms = now_ms.saturating_add(r.randomized(INTERVAL_MS / 2));
        r
    }

    /// RTCP arrived from the leg at `now_ms`: remembers its latest SR for
    /// LSR/DLSR. A datagram that fails the compound checks of RFC 3550
    /// A.2 ([`rtcp::validate_compound`]) is ignored whole.
    pub fn on_rtcp(&mut self, now_ms: u64, packet: &[u8]) {
        if rtcp::validate_compound(packet).is_err() {
            return;
        }
        for p in rtcp::parse_compound(packet) {
            if let Ok(RtcpPacket::SenderReport { ssrc, ntp, .. }) = p {
                self.last_sr = Some(LastSr {
                    ssrc,
                    lsr: rtcp::ntp_middle(ntp),
                    at_ms: now_ms,
                });
            }
        }
    }

    /// Whether a report is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms
    }

    /// When the next report is due (`now_ms` units).
    pub fn due_at(&self) -> u64 {
        self.next_ms
    }

    /// Writes the compound report into `out` and schedules the next one
    /// [0.5, 1.5] × [`INTERVAL_MS`] after `now_ms`; returns its length.
    ///
    /// An SR when `ours.sent_any`, else an RR, then SDES with `cname`. With
    /// `heard` (the receive statistics of the leg's RTP and its SSRC) and
    /// once those count a packet, one report block on it, which starts a
    /// new loss interval in the statistics; it echoes the leg's last SR
    /// when that came from the same SSRC. `wall_unix_ms` gives the SR's NTP
    /// timestamp. Returns 0, and changes nothing, when `out` is too small
    /// or `cname` is longer than 255 bytes.
    pub fn write(
        &mut self,
        now_ms: u64,
        wall_unix_ms: u64,
        out: &mut [u8],
        ours: &Sending,
        heard: Option<(&mut ReceiveStats, u32)>,
        cname: &str,
    ) -> usize {
        // The block comes from a copy of the statistics (plain fields, no
        // allocation), which replaces them once the report is written.
        let heard = heard.filter(|(stats, _)| stats.expected() > 0);
        let mut advanced = None;
        let mut block = [ReportBlock::default()];
        let mut count = 0;
        if let Some((stats, leg_ssrc)) = &heard {
            let mut copy = (**stats).clone();
            let (lsr, dlsr) = self.echo(now_ms, *leg_ssrc);
            block[0] = copy.report_block(*leg_ssrc, lsr, dlsr);
            advanced = Some(copy);
            count = 1;
        }
        let blocks = &block[..count];
        let written = if ours.sent_any {
            let info = SenderInfo {
                ssrc: ours.ssrc,
                ntp: rtcp::ntp_from_unix_ms(wall_unix_ms),
                rtp_ts: ours.rtp_ts,
                packets: ours.packets,
                octets: ours.octets,
            };
            rtcp::write_sr(out, &info, blocks, cname)
        } else {
            rtcp::write_rr(out, ours.ssrc, blocks, cname)
        };
        let Ok(len) = written else {
            return 0;
        };
        if let (Some((stats, _)), Some(copy)) = (heard, advanced) {
            *stats = copy;
        }
        self.next_ms = now_ms.saturating_add(self.randomized(INTERVAL_MS));
        len
    }

    /// LSR and DLSR (1/65536 s) for a block on `leg_ssrc`; zeros when no
    /// SR from that source has arrived.
    fn echo(&self, now_ms: u64, leg_ssrc: u32) -> (u32, u32) {
        match self.last_sr {
            Some(sr) if sr.ssrc == leg_ssrc => {
                let delay = now_ms.saturating_sub(sr.at_ms);
                (sr.lsr, rtcp::ms_to_ntp_short(delay))
            }
            _ => (0, 0),
        }
    }

    /// `base_ms` × a factor uniform in [0.5, 1.5) (RFC 3550 §6.3.1).
    fn randomized(&mut self, base_ms: u64) -> u64 {
        // xorshift32 (Marsaglia 2003): the state is never 0.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        base_ms / 2 + ((base_ms * u64::from(x)) >> 32)
    }
}

/// A nonzero xorshift state from any seed. The seeds of neighbouring legs
/// may differ in one bit, and xorshift's first outputs from such states are
/// close: a full-avalanche mix (the MurmurHash3 finalizer) spreads them.
fn scramble(seed: u32) -> u32 {
    let mut h = seed;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    // The finalizer is a bijection that maps 0 to 0 and nothing else to 0.
    if h == 0 { 0x9e37_79b9 } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::quality::MosCodec;
    use crate::media::rtcp::{parse_compound, validate_compound};

    /// 2024-01-01T00:00:00Z.
    const WALL: u64 = 1_704_067_200_000;
    const LEG_SSRC: u32 = 0x1e65_0001;

    fn ours(sent_any: bool) -> Sending {
        Sending {
            ssrc: 0x5b0a_2d00,
            sent_any,
            rtp_ts: 123_456,
            packets: 500,
            octets: 80_000,
        }
    }

    /// Receive statistics after the leg sent sequence numbers `seqs`, each
    /// sent at seq × 20 ms and the `i`th arriving `late_ms(i)` late.
    fn heard_stats(seqs: &[u16], late_ms: impl Fn(usize) -> u64) -> ReceiveStats {
        let mut s = ReceiveStats::new(MosCodec::G711);
        for (i, &seq) in seqs.iter().enumerate() {
            let sent = u64::from(seq) * 20;
            s.on_packet(sent + late_ms(i), seq, u32::from(seq) * 160, 8000);
        }
        s
    }

    /// The one report block of a written compound, if it has one.
    fn only_block(pkt: &[u8]) -> Option<ReportBlock> {
        let first = parse_compound(pkt).next()?.ok()?;
        let mut blocks = first.report_blocks()?;
        let b = blocks.next();
        assert!(blocks.next().is_none(), "more than one block");
        b
    }

    /// An SR as the leg would send it, at wall time `wall_ms`.
    fn leg_sr(wall_ms: u64) -> ([u8; 128], usize, u64) {
        let ntp = rtcp::ntp_from_unix_ms(wall_ms);
        let info = SenderInfo {
            ssrc: LEG_SSRC,
            ntp,
            rtp_ts: 9_000,
            packets: 10,
            octets: 1_600,
        };
        let mut buf = [0u8; 128];
        let n = rtcp::write_sr(&mut buf, &info, &[], "leg@example.net").unwrap();
        (buf, n, ntp)
    }

    /// Writes a report at `now_ms` (wall time [`WALL`], CNAME "c") with a
    /// block on `heard` as [`LEG_SSRC`]; returns the datagram.
    fn report(
        r: &mut Reporter,
        now_ms: u64,
        sent_any: bool,
        heard: Option<&mut ReceiveStats>,
    ) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let heard = heard.map(|s| (s, LEG_SSRC));
        let n = r.write(now_ms, WALL, &mut buf, &ours(sent_any), heard, "c");
        assert!(n > 0);
        buf[..n].to_vec()
    }

    #[test]
    fn first_report_after_half_the_interval_randomized_per_seed() {
        let start = 40_000;
        let mut firsts = Vec::new();
        for seed in 0..64 {
            let r = Reporter::new(start, seed);
            assert!(!r.due(start), "seed {seed}");
            let after = r.due_at() - start;
            assert!((1_250..=3_750).contains(&after), "seed {seed}: {after}");
            assert!(!r.due(r.due_at() - 1) && r.due(r.due_at()), "seed {seed}");
            firsts.push(after);
        }
        firsts.sort_unstable();
        firsts.dedup();
        // Neighbouring seeds do not report in lockstep.
        assert!(firsts.len() > 48, "{firsts:?}");
        assert!(firsts[firsts.len() - 1] - firsts[0] > 1_500, "{firsts:?}");
    }

    #[test]
    fn intervals_are_randomized_between_half_and_one_and_a_half_of_5_s() {
        for seed in [1, 7, 0xdead_beef] {
            let mut r = Reporter::new(0, seed);
            let mut buf = [0u8; 256];
            let mut intervals = Vec::new();
            for _ in 0..500 {
                let now = r.due_at();
                assert!(r.write(now, WALL + now, &mut buf, &ours(true), None, "c") > 0);
                intervals.push(r.due_at() - now);
            }
            let (lo, hi) = (intervals.iter().min(), intervals.iter().max());
            assert!(intervals.iter().all(|i| (2_500..=7_500).contains(i)));
            assert!(lo < Some(&3_000) && hi > Some(&7_000), "seed {seed}");
            let mean = intervals.iter().sum::<u64>() / intervals.len() as u64;
            assert!((4_700..=5_300).contains(&mean), "seed {seed}: {mean}");
        }
    }

    #[test]
    fn same_seed_same_schedule() {
        let mut a = Reporter::new(100, 42);
        let mut b = Reporter::new(100, 42);
        for _ in 0..20 {
            assert_eq!(a.due_at(), b.due_at());
            let now = a.due_at();
            assert_eq!(
                report(&mut a, now, false, None),
                report(&mut b, now, false, None)
            );
        }
    }

    #[test]
    fn sr_after_sending_rr_otherwise_rfc3550_6_4() {
        let mut r = Reporter::new(0, 3);
        let sr = report(&mut r, 5_000, true, None);
        let first = parse_compound(&sr).next().unwrap().unwrap();
        assert_eq!(first.packet_type(), rtcp::PT_SR);
        let rr = report(&mut r, 10_000, false, None);
        let first = parse_compound(&rr).next().unwrap().unwrap();
        assert!(matches!(
            first,
            RtcpPacket::ReceiverReport { ssrc: 0x5b0a_2d00, reports } if reports.is_empty()
        ));
    }

    #[test]
    fn written_sr_is_a_valid_compound_with_sender_info_and_cname() {
        let mut r = Reporter::new(0, 5);
        let mut stats = heard_stats(&[1, 2, 3, 4], |_| 0);
        let mut buf = [0u8; 256];
        let cname = "leg-7@switchboard";
        let heard = Some((&mut stats, LEG_SSRC));
        let n = r.write(3_000, WALL, &mut buf, &ours(true), heard, cname);
        assert_eq!(validate_compound(&buf[..n]), Ok(2));
        let mut pkts = parse_compound(&buf[..n]).map(Result::unwrap);
        let sr = pkts.next().unwrap();
        let want = SenderInfo {
            ssrc: 0x5b0a_2d00,
            ntp: rtcp::ntp_from_unix_ms(WALL),
            rtp_ts: 123_456,
            packets: 500,
            octets: 80_000,
        };
        assert_eq!(sr.sender_info(), Some(want));
        assert_eq!(only_block(&buf[..n]).map(|b| b.ssrc), Some(LEG_SSRC));
        let Some(RtcpPacket::Sdes(mut chunks)) = pkts.next() else {
            panic!("no SDES")
        };
        let chunk = chunks.next().unwrap();
        assert_eq!(chunk.ssrc, 0x5b0a_2d00);
        assert_eq!(chunk.cname(), Some(cname.as_bytes()));
        assert!(pkts.next().is_none());
    }

    #[test]
    fn block_echoes_lsr_and_dlsr_of_the_legs_last_sr() {
        let mut r = Reporter::new(0, 9);
        let mut stats = heard_stats(&[10, 11, 12], |_| 0);
        let (sr, len, ntp) = leg_sr(WALL - 700);
        r.on_rtcp(20_000, &sr[..len]);
        let mut buf = [0u8; 256];
        let heard = Some((&mut stats, LEG_SSRC));
        let n = r.write(21_500, WALL + 800, &mut buf, &ours(false), heard, "c");
        let b = only_block(&buf[..n]).unwrap();
        assert_eq!(b.lsr, rtcp::ntp_middle(ntp));
        assert_eq!(b.dlsr, 3 << 15); // 1.5 s in 1/65536 s
        // The leg's RTT from it: its A − LSR − DLSR, 0 for no network delay.
        let arrival = rtcp::ntp_middle(rtcp::ntp_from_unix_ms(WALL + 800));
        assert_eq!(rtcp::rtt_ms(arrival, &b), Some(0));
        // The next report keeps echoing it, with a longer delay.
        let b = only_block(&report(&mut r, 24_000, true, Some(&mut stats))).unwrap();
        assert_eq!((b.lsr, b.dlsr), (rtcp::ntp_middle(ntp), 4 << 16));
    }

    #[test]
    fn no_lsr_without_an_sr_from_the_reported_source() {
        let mut r = Reporter::new(0, 9);
        let mut stats = heard_stats(&[10, 11, 12], |_| 0);
        let b = only_block(&report(&mut r, 3_000, false, Some(&mut stats))).unwrap();
        assert_eq!((b.lsr, b.dlsr), (0, 0));
        // An SR, but from another source than the RTP we report on.
        let (sr, len, _) = leg_sr(WALL);
        r.on_rtcp(4_000, &sr[..len]);
        let mut buf = [0u8; 256];
        let heard = Some((&mut stats, 77));
        let n = r.write(5_000, WALL, &mut buf, &ours(false), heard, "c");
        let b = only_block(&buf[..n]).unwrap();
        assert_eq!((b.ssrc, b.lsr, b.dlsr), (77, 0, 0));
    }

    #[test]
    fn loss_and_jitter_come_from_the_receive_statistics() {
        let mut r = Reporter::new(0, 1);
        // 1..=40 without 20..=24, odd packets 5 ms late.
        let seqs: Vec<u16> = (1..=40).filter(|s| !(20..=24).contains(s)).collect();
        let mut stats = heard_stats(&seqs, |i| if i % 2 == 1 { 5 } else { 0 });
        let want = stats.clone().report_block(LEG_SSRC, 0, 0);
        assert_eq!(want.cumulative_lost, 5);
        assert!(want.fraction_lost > 0 && want.jitter > 0);
        let first = report(&mut r, 3_000, true, Some(&mut stats));
        assert_eq!(only_block(&first), Some(want));
        // Writing started a new loss interval (RFC 3550 A.3): none lost since.
        let b = only_block(&report(&mut r, 8_000, true, Some(&mut stats))).unwrap();
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 5));
    }

    #[test]
    fn no_block_before_the_leg_is_heard() {
        let mut r = Reporter::new(0, 1);
        // The first packet of a source is in probation: nothing counted yet.
        let mut stats = heard_stats(&[100], |_| 0);
        let pkt = report(&mut r, 3_000, true, Some(&mut stats));
        assert_eq!(only_block(&pkt), None);
        assert_eq!(validate_compound(&pkt), Ok(2));
        assert_eq!(only_block(&report(&mut r, 8_000, false, None)), None);
    }

    #[test]
    fn malformed_rtcp_is_ignored_whole() {
        let mut r = Reporter::new(0, 2);
        let (good, len, _) = leg_sr(WALL);
        let before = r.clone();
        // Every truncation of a valid SR + SDES but the one that leaves the
        // whole SR (28 bytes): a compound of one SR is valid.
        for cut in (0..len).filter(|&cut| cut != 28) {
            r.on_rtcp(1_000, &good[..cut]);
        }
        // A valid SR followed by a broken packet.
        let mut tail = good;
        tail[len..len + 4].copy_from_slice(&[0x80, rtcp::PT_RR, 0, 9]);
        r.on_rtcp(1_000, &tail[..len + 4]);
        // An SR with a wrong version.
        let mut v1 = good;
        v1[0] = (v1[0] & 0x3f) | 0x40;
        r.on_rtcp(1_000, &v1[..len]);
        // Random bytes, some with an SR-looking header.
        let mut x = 0x1234_5678u32;
        let mut junk = [0u8; 96];
        for i in 0..5_000 {
            for b in junk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            if i % 2 == 0 {
                junk[..2].copy_from_slice(&[0x80, rtcp::PT_SR]);
            }
            r.on_rtcp(1_000, &junk[..i % junk.len()]);
        }
        assert_eq!(r, before);
        r.on_rtcp(1_000, &good[..len]);
        assert_ne!(r, before);
    }

    #[test]
    fn too_small_a_buffer_writes_nothing_and_changes_nothing() {
        let mut r = Reporter::new(0, 4);
        let now = r.due_at();
        let mut stats = heard_stats(&[1, 2, 3, 5, 6], |_| 0);
        let full = report(&mut r.clone(), now, true, Some(&mut stats.clone())).len();
        let (r0, stats0) = (r.clone(), stats.clone());
        let mut buf = [0u8; 256];
        for have in [0, 8, full - 1] {
            let heard = Some((&mut stats, LEG_SSRC));
            let n = r.write(now, WALL, &mut buf[..have], &ours(true), heard, "c");
            assert_eq!(n, 0, "{have} bytes");
        }
        let long = "x".repeat(256);
        assert_eq!(r.write(now, WALL, &mut buf, &ours(false), None, &long), 0);
        assert_eq!(r, r0);
        // The loss interval was not consumed either.
        let block = |s: &ReceiveStats| s.clone().report_block(1, 0, 0);
        assert_eq!(block(&stats), block(&stats0));
        let heard = Some((&mut stats, LEG_SSRC));
        let n = r.write(now, WALL, &mut buf[..full], &ours(true), heard, "c");
        assert_eq!(n, full);
        assert_eq!(only_block(&buf[..n]).map(|b| b.fraction_lost), Some(51));
    }
}
