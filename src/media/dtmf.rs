//! DTMF in both forms a call carries it: RFC 4733 telephone-events and
//! in-band tones.
//!
//! Owns:
//! * [`TelephoneEvent`], the 4-byte payload of RFC 4733 §2.3 (event, E bit,
//!   volume, duration), parsed and written;
//! * [`EventReceiver`], which turns the stream of telephone-event packets of
//!   one RTP stream into one digit per key press (RFC 4733 §2.5.1 sender
//!   rules, §2.5.2 receiver rules);
//! * [`InbandDetector`], a Goertzel detector for the ITU-T Q.23 tone pairs at
//!   8 000 Hz meeting the ITU-T Q.24 receiver figures (durations,
//!   frequency tolerance, twist, level), with talk-off guards;
//! * the Q.23 frequency table ([`dtmf_frequencies`]), shared with
//!   [`super::tone`].
//!
//! Driven per packet ([`EventReceiver::handle_event`]) or per 20 ms frame
//! of decoded audio ([`InbandDetector::push`]); no clock (RTP timestamps and
//! sample counts are the time base), no allocation.

use heapless::Deque;
use thiserror::Error;

use super::tone::dbm0_to_peak;

/// Q.23 low group (rows of the keypad), Hz.
pub const DTMF_ROW_HZ: [u32; 4] = [697, 770, 852, 941];
/// Q.23 high group (columns of the keypad), Hz.
pub const DTMF_COL_HZ: [u32; 4] = [1209, 1336, 1477, 1633];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// The (row, column) frequencies of a digit: 0-9, *, #, A-D (a-d too).
pub fn dtmf_frequencies(digit: char) -> Option<(u32, u32)> {
    let digit = digit.to_ascii_uppercase();
    KEYPAD.iter().enumerate().find_map(|(r, keys)| {
        keys.iter()
            .position(|&k| k == digit)
            .map(|c| (DTMF_ROW_HZ[r], DTMF_COL_HZ[c]))
    })
}

/// The digit of an RFC 4733 §3.2 DTMF event code (0-9, 10 `*`, 11 `#`,
/// 12-15 A-D); other events are not digits.
pub fn event_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The RFC 4733 §3.2 event code of a digit (a-d accepted as A-D).
pub fn digit_event(c: char) -> Option<u8> {
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// Why a telephone-event payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DtmfError {
    /// Fewer than the 4 bytes of RFC 4733 §2.3.
    #[error("telephone-event payload of {len} bytes: at least 4 expected")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
}

/// One RFC 4733 §2.3 payload:
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (§3.2: 0-15 are DTMF).
    pub event: u8,
    /// E bit: the last packet(s) of the event.
    pub end: bool,
    /// Power level as 0..=63 dBm0 below zero (6 bits).
    pub volume: u8,
    /// Duration so far in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Bytes in one payload.
    pub const LEN: usize = 4;

    /// Parses the first 4 bytes of `payload` (bytes after them, which some
    /// senders pad with, are ignored; the R bit is ignored as §2.3 says).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::Truncated { len: payload.len() }),
        }
    }

    /// Writes the payload (R bit zero; volume masked to 6 bits).
    pub fn write(&self, out: &mut [u8; 4]) {
        let [d0, d1] = self.duration.to_be_bytes();
        *out = [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F),
            d0,
            d1,
        ];
    }
}

/// Press timestamps remembered to drop late and repeated packets.
const RECENT_PRESSES: usize = 8;
/// A timestamp older than the newest press by less than this is a late
/// packet of an earlier press; older than that, the sender restarted its
/// clock (2^20 units: 131 s at 8 kHz, 21 s at 48 kHz).
const STALE_WINDOW: u32 = 1 << 20;

/// The press being received (the newest timestamp).
#[derive(Debug, Clone, Copy)]
struct Segment {
    ts: u32,
    event: u8,
    ended: bool,
    duration: u16,
}

/// Digits from the telephone-events of one RTP stream (one SSRC; call
/// [`EventReceiver::reset`] when it changes).
///
/// An RFC 4733 sender stamps every packet of one key press with the RTP
/// timestamp of its start, sets the marker on the first, updates the
/// duration as the key stays down, then sends the end packet three times
/// (§2.5.1.2-4). A press is therefore one timestamp, and the digit is
/// reported on the *first* packet seen with a new timestamp, whichever it is:
/// * that is the earliest the digit is known (an IVR can stop a prompt
///   without waiting for the key's release), and
/// * it does not depend on the marker or the end packets, either of which
///   may be lost: a press whose start packet is lost is reported on its next
///   update, one whose end packets are all lost still counts once.
///
/// Duplicates (retransmissions, the redundant end packets) repeat a known
/// timestamp and are ignored. A packet with a timestamp older than the
/// newest press is a late packet of an earlier press and is ignored too, so
/// digits are never reported out of order (a press whose every packet
/// arrives after the next press's first is lost; that takes a reordering
/// of a whole key press). A segment continuing an unfinished long event
/// (§2.5.1.3: a new timestamp every 0xFFFF units while the key is held, 1.4 s
/// at the 48 kHz clock) is the same press.
#[derive(Debug, Clone, Default)]
pub struct EventReceiver {
    recent: [u32; RECENT_PRESSES],
    recent_len: usize,
    next_slot: usize,
    current: Option<Segment>,
}

impl EventReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> EventReceiver {
        EventReceiver::default()
    }

    /// Forgets every press (new SSRC, re-INVITE).
    pub fn reset(&mut self) {
        *self = EventReceiver::default();
    }

    /// One received telephone-event packet; returns the digit when it is
    /// the first packet of a new key press of a DTMF event.
    pub fn handle_event(
        &mut self,
        rtp_timestamp: u32,
        marker: bool,
        ev: TelephoneEvent,
    ) -> Option<char> {
        let _ = marker; // see the type's doc: presses are told by timestamp
        if let Some(cur) = &mut self.current {
            if cur.ts == rtp_timestamp {
                cur.ended |= ev.end;
                cur.duration = cur.duration.max(ev.duration);
                return None;
            }
            let age = cur.ts.wrapping_sub(rtp_timestamp);
            if age < STALE_WINDOW {
                return None;
            }
        }
        if self.recent[..self.recent_len].contains(&rtp_timestamp) {
            return None;
        }
        let continues = self.current.is_some_and(|cur| {
            let gap = rtp_timestamp.wrapping_sub(cur.ts);
            !cur.ended
                && cur.event == ev.event
                && cur.duration >= 0x8000
                && gap >= cur.duration as u32
                && gap <= 0xFFFF
        });
        self.recent[self.next_slot] = rtp_timestamp;
        self.next_slot = (self.next_slot + 1) % RECENT_PRESSES;
        self.recent_len = (self.recent_len + 1).min(RECENT_PRESSES);
        self.current = Some(Segment {
            ts: rtp_timestamp,
            event: ev.event,
            ended: ev.end,
            duration: ev.duration,
        });
        if continues {
            None
        } else {
            event_digit(ev.event)
        }
    }
}

/// Detector sample rate.
const RATE: f32 = 8000.0;
/// Half-block: the rectangular filters run per half.
const HALF: usize = 51;
/// Block: 102 samples, 12.75 ms, 78.4 Hz bins.
const BLOCK: usize = 2 * HALF;
/// Frequency deviation accepted, as a fraction: halfway between Q.24's
/// "must accept" ±1.5 % and "must reject" ±3.5 %.
const FREQ_TOLERANCE: f32 = 0.025;
/// Weakest tone accepted (Q.24 asks for −25 dBm0; the margin covers the
/// loss of a tone 1.5 % off its bin and noise).
const MIN_LEVEL_DBM0: f64 = -28.0;
/// Normal twist: the high group up to 8 dB below the low group.
const NORMAL_TWIST_DB: f32 = 8.0;
/// Reverse twist: the high group up to 4 dB above the low group.
const REVERSE_TWIST_DB: f32 = 4.0;
/// Measurement allowance on both twist limits (scalloping of tones off
/// their bins, leakage between the groups).
const TWIST_ALLOWANCE_DB: f32 = 0.5;
/// The chosen tone of each group is this much above the group's next one.
const RELATIVE_PEAK_DB: f32 = 8.0;
/// Share of the block's power the two tones must carry.
const MIN_TONE_SHARE: f32 = 0.6;
/// The two halves of a block must hold the same power within 2.2 dB: the
/// burst fills the block (its first and last blocks are not hits).
const HALF_BALANCE: f32 = 0.6;
/// Blocks without the digit that end a press: 3 × 12.75 ms bridges Q.24's
/// 10 ms interruptions and fits in its 40 ms minimum pause.
const MISSES_TO_END: u8 = 3;

/// One frequency's filter constants.
#[derive(Debug, Clone, Copy)]
struct Bin {
    freq: f32,
    /// 2 cos ω.
    coef: f32,
    cos: f32,
    sin: f32,
    /// e^{−jωH}: the phase a tone exactly on the bin gains in a half-block.
    half_turn: (f32, f32),
    /// e^{−jωN}: the same over a whole block.
    block_turn: (f32, f32),
}

impl Bin {
    fn new(freq: u32) -> Bin {
        let w = 2.0 * std::f64::consts::PI * freq as f64 / RATE as f64;
        let turn = |n: usize| ((w * n as f64).cos() as f32, -(w * n as f64).sin() as f32);
        Bin {
            freq: freq as f32,
            coef: (2.0 * w.cos()) as f32,
            cos: w.cos() as f32,
            sin: w.sin() as f32,
            half_turn: turn(HALF),
            block_turn: turn(BLOCK),
        }
    }

    /// The Goertzel output y = s[n] − e^{−jω}·s[n−1], as (re, im): the DFT
    /// at ω of the samples fed, times e^{jω(n)} (a phase common to every
    /// block, which cancels in the comparisons below).
    #[inline]
    fn output(&self, s: Goertzel) -> (f32, f32) {
        (s.s1 - self.cos * s.s2, self.sin * s.s2)
    }

    /// The frequency offset, in Hz, that turns `before` into `after` over
    /// `n` samples, given `turn` = e^{−jωn}; within ±RATE / 2n.
    fn offset_hz(before: (f32, f32), after: (f32, f32), turn: (f32, f32), n: usize) -> f32 {
        let p = cmul(cmul(after, conj(before)), turn);
        p.1.atan2(p.0) * RATE / (2.0 * std::f32::consts::PI * n as f32)
    }
}

/// A Goertzel filter's two state variables.
#[derive(Debug, Clone, Copy, Default)]
struct Goertzel {
    s1: f32,
    s2: f32,
}

impl Goertzel {
    #[inline]
    fn step(&mut self, x: f32, coef: f32) {
        let s0 = x + coef * self.s1 - self.s2;
        self.s2 = self.s1;
        self.s1 = s0;
    }
}

#[inline]
fn cmul(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

#[inline]
fn conj(a: (f32, f32)) -> (f32, f32) {
    (a.0, -a.1)
}

#[inline]
fn norm2(a: (f32, f32)) -> f32 {
    a.0 * a.0 + a.1 * a.1
}

/// A block that passed every single-block test.
#[derive(Debug, Clone, Copy)]
struct Hit {
    row: usize,
    col: usize,
    /// Hann-windowed block DFT at the row and column frequencies.
    row_z: (f32, f32),
    col_z: (f32, f32),
    /// Offsets from the nominal frequencies measured between the halves
    /// (coarse: ±78 Hz unambiguous, a few Hz of leakage error).
    row_coarse_hz: f32,
    col_coarse_hz: f32,
}

impl Hit {
    fn digit(&self) -> char {
        KEYPAD[self.row][self.col]
    }
}

/// In-band DTMF detector at 8 000 Hz (ITU-T Q.24 figures).
///
/// Audio is cut into 102-sample blocks (12.75 ms). Every sample runs
/// through two banks of eight Goertzel filters (one per Q.23 frequency):
/// rectangular ones restarted at each half-block (sharp bins, to pick the
/// tone of each group, and a coarse frequency from the phase turned between
/// the halves) and Hann-windowed ones over the whole block (little leakage
/// between the groups, for levels, twist and a fine frequency).
///
/// A block is a *hit* for a digit when: both tones reach −28 dBm0; the
/// twist is within 8 dB normal / 4 dB reverse; each tone is 8 dB above the
/// other frequencies of its group; the two tones carry 60 % of the block's
/// power (noise, speech and music spread theirs); and both halves of the
/// block hold the same power within 2.2 dB (the block lies inside the
/// burst). A digit is reported once, on the second consecutive hit, when
/// the phase each tone turned between the two blocks puts it within 2.5 %
/// of its nominal frequency; three blocks without it end the press.
///
/// Timing that follows: a burst of 40 ms always contains two whole blocks,
/// so it is detected; a block less than about 80 % covered fails the
/// half-balance test, so two hits need more than 160 samples of tone and
/// bursts under 20 ms are never reported. A 10 ms interruption spoils at
/// most two blocks and does not split a press; a 40 ms pause spoils at
/// least three and does.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    bins: [Bin; 8],
    /// Hann window over a block.
    window: [f32; BLOCK],
    /// Rectangular filters, restarted every half-block.
    rect: [Goertzel; 8],
    /// Hann-windowed filters over the block.
    hann: [Goertzel; 8],
    /// Rectangular outputs of the block's first half.
    first: [(f32, f32); 8],
    /// Σx² over each half of the block.
    energy: [f32; 2],
    /// Samples into the current block.
    n: usize,
    /// Amplitude of a tone at the minimum level.
    min_amplitude: f32,
    previous: Option<Hit>,
    active: Option<char>,
    misses: u8,
    reports: Deque<char, 8>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new()
    }
}

impl InbandDetector {
    /// A detector for 8 000 Hz audio.
    pub fn new() -> InbandDetector {
        let mut bins = [Bin::new(0); 8];
        for (bin, &f) in bins.iter_mut().zip(DTMF_ROW_HZ.iter().chain(&DTMF_COL_HZ)) {
            *bin = Bin::new(f);
        }
        let mut window = [0.0f32; BLOCK];
        for (i, w) in window.iter_mut().enumerate() {
            let s = (std::f64::consts::PI * (i as f64 + 0.5) / BLOCK as f64).sin();
            *w = (s * s) as f32;
        }
        InbandDetector {
            bins,
            window,
            rect: [Goertzel::default(); 8],
            hann: [Goertzel::default(); 8],
            first: [(0.0, 0.0); 8],
            energy: [0.0; 2],
            n: 0,
            min_amplitude: dbm0_to_peak(MIN_LEVEL_DBM0) as f32,
            previous: None,
            active: None,
            misses: MISSES_TO_END,
            reports: Deque::new(),
        }
    }

    /// Forgets any tone in progress.
    pub fn reset(&mut self) {
        *self = InbandDetector::new();
    }

    /// Feeds 8 kHz audio (20 ms frames, typically) and returns a digit when
    /// a key press is recognized. At most one digit per call: should a long
    /// buffer hold several, the others wait for [`InbandDetector::poll_digit`]
    /// or the next call (up to 8 are kept).
    pub fn push(&mut self, pcm: &[i16]) -> Option<char> {
        for &x in pcm {
            let x = x as f32;
            let xw = x * self.window[self.n];
            self.energy[self.n / HALF] += x * x;
            for ((rect, hann), bin) in self.rect.iter_mut().zip(&mut self.hann).zip(&self.bins) {
                rect.step(x, bin.coef);
                hann.step(xw, bin.coef);
            }
            self.n += 1;
            if self.n == HALF {
                for (first, (rect, bin)) in
                    self.first.iter_mut().zip(self.rect.iter().zip(&self.bins))
                {
                    *first = bin.output(*rect);
                }
                self.rect = [Goertzel::default(); 8];
            } else if self.n == BLOCK {
                let hit = self.evaluate_block();
                self.rect = [Goertzel::default(); 8];
                self.hann = [Goertzel::default(); 8];
                self.energy = [0.0; 2];
                self.n = 0;
                self.advance(hit);
            }
        }
        self.reports.pop_front()
    }

    /// A digit recognized earlier and not yet returned.
    pub fn poll_digit(&mut self) -> Option<char> {
        self.reports.pop_front()
    }

    /// The single-block tests (see the type's doc).
    fn evaluate_block(&self) -> Option<Hit> {
        let mut sharp = [0.0f32; 8];
        let mut coarse = [0.0f32; 8];
        for k in 0..8 {
            let bin = &self.bins[k];
            let a = self.first[k];
            let b = bin.output(self.rect[k]);
            let b_turned = cmul(b, bin.half_turn);
            sharp[k] = norm2((a.0 + b_turned.0, a.1 + b_turned.1));
            coarse[k] = Bin::offset_hz(a, b, bin.half_turn, HALF);
        }
        // Rows are 73-89 Hz (about one bin) apart: only the rectangular
        // bins separate them. Columns are 127-156 Hz apart but within reach
        // of the (stronger) row tone's rectangular leakage: the Hann bins
        // separate them better.
        let mut windowed = [(0.0f32, 0.0f32); 4];
        let mut col_power = [0.0f32; 4];
        for c in 0..4 {
            windowed[c] = self.bins[4 + c].output(self.hann[4 + c]);
            col_power[c] = norm2(windowed[c]);
        }
        let (row, row_next) = best_two(&sharp[..4]);
        let (col, col_next) = best_two(&col_power);
        let peaks_ok = sharp[row] >= db(RELATIVE_PEAK_DB) * row_next
            && col_power[col] >= db(RELATIVE_PEAK_DB) * col_next;

        // A sine of peak a gives |X| = a·Σw/2 = a·N/4 through the window.
        let row_z = self.bins[row].output(self.hann[row]);
        let col_z = windowed[col];
        let scale = 4.0 / BLOCK as f32;
        let (ar, ac) = (norm2(row_z).sqrt() * scale, norm2(col_z).sqrt() * scale);
        let strong = ar >= self.min_amplitude && ac >= self.min_amplitude;
        let (pr, pc) = (ar * ar, ac * ac);
        let twist_ok = pc <= pr * db(REVERSE_TWIST_DB + TWIST_ALLOWANCE_DB)
            && pc * db(NORMAL_TWIST_DB + TWIST_ALLOWANCE_DB) >= pr;
        // Mean power: a²/2 per tone against Σx²/N.
        let total = self.energy[0] + self.energy[1];
        let share_ok = (pr + pc) / 2.0 >= MIN_TONE_SHARE * total / BLOCK as f32;
        let (e0, e1) = (self.energy[0], self.energy[1]);
        let steady = e0.min(e1) >= HALF_BALANCE * e0.max(e1);

        (strong && twist_ok && peaks_ok && share_ok && steady).then_some(Hit {
            row,
            col,
            row_z,
            col_z,
            row_coarse_hz: coarse[row],
            col_coarse_hz: coarse[4 + col],
        })
    }

    /// The press state machine, one block at a time.
    fn advance(&mut self, hit: Option<Hit>) {
        let Some(hit) = hit else {
            self.previous = None;
            self.misses = self.misses.saturating_add(1);
            if self.misses >= MISSES_TO_END {
                self.active = None;
            }
            return;
        };
        let digit = hit.digit();
        if self.active == Some(digit) {
            self.misses = 0;
        } else if let Some(prev) = self.previous
            && prev.digit() == digit
            && self.on_frequency(hit.row, prev.row_z, hit.row_z, hit.row_coarse_hz)
            && self.on_frequency(4 + hit.col, prev.col_z, hit.col_z, hit.col_coarse_hz)
        {
            self.active = Some(digit);
            self.misses = 0;
            // Full only if nobody polls: drop the newest rather than panic.
            let _ = self.reports.push_back(digit);
        }
        self.previous = Some(hit);
    }

    /// Whether the tone of bin `k`, seen in two consecutive blocks, is
    /// within the tolerance: the phase it turned over the block gives its
    /// offset modulo 78.4 Hz; the coarse estimate picks the right turn.
    fn on_frequency(&self, k: usize, before: (f32, f32), after: (f32, f32), coarse: f32) -> bool {
        let bin = &self.bins[k];
        let fine = Bin::offset_hz(before, after, bin.block_turn, BLOCK);
        let period = RATE / BLOCK as f32;
        let offset = [fine - period, fine, fine + period]
            .into_iter()
            .min_by(|a, b| (a - coarse).abs().total_cmp(&(b - coarse).abs()))
            .unwrap_or(fine);
        offset.abs() <= FREQ_TOLERANCE * bin.freq
    }
}

/// A power ratio from decibels.
fn db(decibels: f32) -> f32 {
    10f32.powf(decibels / 10.0)
}

/// Index of the largest value, and the second largest value itself.
fn best_two(power: &[f32]) -> (usize, f32) {
    let mut best = 0;
    for (i, &p) in power.iter().enumerate() {
        if p > power[best] {
            best = i;
        }
    }
    let next = power
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &p)| p)
        .fold(0.0f32, f32::max);
    (best, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::{Cadence, Level, Tone, ToneGen};

    const DIGITS: &str = "123A456B789C*0#D";

    // ---- RFC 4733 payload ----

    #[test]
    fn telephone_event_parses_the_rfc_4733_layout() {
        // Digit 5, end, volume 10, duration 800 (RFC 4733 §2.3 figure).
        let ev = TelephoneEvent::parse(&[0x05, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        let mut out = [0u8; 4];
        ev.write(&mut out);
        assert_eq!(out, [0x05, 0x8A, 0x03, 0x20]);
    }

    #[test]
    fn reserved_bit_is_ignored_and_trailing_bytes_too() {
        let ev = TelephoneEvent::parse(&[11, 0x40 | 0x3F, 0xFF, 0xFF, 9, 9]).unwrap();
        assert_eq!(ev.event, 11);
        assert!(!ev.end);
        assert_eq!(ev.volume, 63);
        assert_eq!(ev.duration, 0xFFFF);
        let mut out = [0u8; 4];
        ev.write(&mut out);
        assert_eq!(out, [11, 0x3F, 0xFF, 0xFF]);
    }

    #[test]
    fn short_payload_is_refused_with_its_length() {
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::Truncated { len: 3 })
        );
        assert!(TelephoneEvent::parse(&[]).is_err());
    }

    #[test]
    fn event_codes_map_to_digits_per_rfc_4733_section_3_2() {
        let digits: String = (0..16).filter_map(event_digit).collect();
        assert_eq!(digits, "0123456789*#ABCD");
        for code in 0..16u8 {
            assert_eq!(digit_event(event_digit(code).unwrap()), Some(code));
        }
        assert_eq!(event_digit(16), None);
        assert_eq!(event_digit(32), None);
        assert_eq!(digit_event('b'), Some(13));
        assert_eq!(digit_event('E'), None);
        assert_eq!(digit_event('x'), None);
    }

    #[test]
    fn q23_frequencies_of_every_key() {
        assert_eq!(dtmf_frequencies('1'), Some((697, 1209)));
        assert_eq!(dtmf_frequencies('0'), Some((941, 1336)));
        assert_eq!(dtmf_frequencies('#'), Some((941, 1477)));
        assert_eq!(dtmf_frequencies('d'), Some((941, 1633)));
        assert_eq!(dtmf_frequencies('9'), Some((852, 1477)));
        assert_eq!(dtmf_frequencies('x'), None);
    }

    // ---- EventReceiver ----

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    /// The packets an RFC 4733 sender emits for one press at 8 kHz: start
    /// with the marker, an update every 50 ms, then the end three times.
    fn press(ts: u32, event: u8) -> Vec<(u32, bool, TelephoneEvent)> {
        let mut packets = vec![(ts, true, ev(event, false, 400))];
        for d in [800u16, 1200] {
            packets.push((ts, false, ev(event, false, d)));
        }
        for _ in 0..3 {
            packets.push((ts, false, ev(event, true, 1600)));
        }
        packets
    }

    fn feed(rx: &mut EventReceiver, packets: &[(u32, bool, TelephoneEvent)]) -> String {
        packets
            .iter()
            .filter_map(|&(ts, m, e)| rx.handle_event(ts, m, e))
            .collect()
    }

    #[test]
    fn one_press_is_reported_once_on_its_first_packet() {
        let mut rx = EventReceiver::new();
        let packets = press(1000, 7);
        assert_eq!(
            rx.handle_event(packets[0].0, packets[0].1, packets[0].2),
            Some('7')
        );
        assert_eq!(feed(&mut rx, &packets[1..]), "");
    }

    #[test]
    fn lost_start_packet_reports_on_the_next_one() {
        let mut rx = EventReceiver::new();
        let packets = press(1000, 3);
        assert_eq!(
            rx.handle_event(packets[1].0, packets[1].1, packets[1].2),
            Some('3')
        );
        assert_eq!(feed(&mut rx, &packets[2..]), "");
    }

    #[test]
    fn only_end_packets_still_count_once() {
        let mut rx = EventReceiver::new();
        assert_eq!(feed(&mut rx, &press(5000, 11)[3..]), "#");
    }

    #[test]
    fn retransmissions_and_reordering_within_a_press_count_once() {
        let mut rx = EventReceiver::new();
        let mut packets = press(1000, 1);
        packets.reverse();
        let again = packets.clone();
        packets.extend(again);
        assert_eq!(feed(&mut rx, &packets), "1");
    }

    #[test]
    fn repeated_digit_presses_are_separate_presses() {
        let mut rx = EventReceiver::new();
        let mut packets = press(1000, 5);
        packets.extend(press(4000, 5));
        packets.extend(press(7000, 5));
        assert_eq!(feed(&mut rx, &packets), "555");
    }

    #[test]
    fn late_packet_of_an_earlier_press_is_ignored() {
        let mut rx = EventReceiver::new();
        let first = press(1000, 1);
        let second = press(4000, 2);
        let mut packets = vec![first[0], second[0], first[5], first[4]];
        packets.extend_from_slice(&second[1..]);
        assert_eq!(feed(&mut rx, &packets), "12");
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut rx = EventReceiver::new();
        let mut packets = press(u32::MAX - 100, 4);
        packets.extend(press(2900, 6));
        assert_eq!(feed(&mut rx, &packets), "46");
    }

    #[test]
    fn sender_clock_restart_far_back_is_a_new_press() {
        let mut rx = EventReceiver::new();
        let mut packets = press(3_000_000_000, 8);
        packets.extend(press(1000, 9));
        assert_eq!(feed(&mut rx, &packets), "89");
    }

    #[test]
    fn long_event_segments_are_one_press() {
        // RFC 4733 §2.5.1.3: a 3 s key hold at the 48 kHz clock spans three
        // segments of at most 0xFFFF units, each with a new timestamp.
        let mut rx = EventReceiver::new();
        let mut got = String::new();
        let mut ts = 10_000u32;
        let mut packets = Vec::new();
        for segment in 0..3 {
            let last = segment == 2;
            let mut d = 0u16;
            let mut first = true;
            loop {
                d = d.saturating_add(960 * 5);
                let end = last && d > 20_000;
                packets.push((ts, segment == 0 && first, ev(0, end, d)));
                first = false;
                if end || d == 0xFFFF {
                    break;
                }
            }
            ts = ts.wrapping_add(0xFFFF);
        }
        for (t, m, e) in packets {
            got.extend(rx.handle_event(t, m, e));
        }
        assert_eq!(got, "0");
    }

    #[test]
    fn non_dtmf_events_are_tracked_but_not_reported() {
        let mut rx = EventReceiver::new();
        let mut packets = press(1000, 32); // ANS (fax), RFC 4734
        packets.extend(press(9000, 2));
        assert_eq!(feed(&mut rx, &packets), "2");
    }

    // ---- InbandDetector ----

    /// A deterministic noise source (xorshift64*), roughly Gaussian.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn gaussian(&mut self) -> f64 {
            (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
        }
    }

    fn detect(signal: &[i16]) -> String {
        let mut det = InbandDetector::new();
        let mut got = String::new();
        for frame in signal.chunks(160) {
            got.extend(det.push(frame));
        }
        while let Some(d) = det.poll_digit() {
            got.push(d);
        }
        got
    }

    fn tone_burst(tones: &[Tone], on_ms: u32, off_ms: u32) -> Vec<i16> {
        let mut g = ToneGen::new(8000, tones).unwrap().with_cadence(Cadence {
            on_ms,
            off_ms,
            repeat: Some(1),
        });
        let mut out = vec![0i16; ((on_ms + off_ms) * 8) as usize];
        g.fill(&mut out);
        out
    }

    fn digit_tones(digit: char, scale: (f64, f64), levels: (f64, f64)) -> [Tone; 2] {
        let (row, col) = dtmf_frequencies(digit).unwrap();
        [
            Tone::dbm0(row as f64 * scale.0, levels.0),
            Tone::dbm0(col as f64 * scale.1, levels.1),
        ]
    }

    fn sequence(digits: &str, on_ms: u32, off_ms: u32) -> Vec<i16> {
        let mut signal = vec![0i16; 400];
        for digit in digits.chars() {
            let mut g = ToneGen::dtmf(digit, 8000).unwrap().with_cadence(Cadence {
                on_ms,
                off_ms,
                repeat: Some(1),
            });
            let mut burst = vec![0i16; ((on_ms + off_ms) * 8) as usize];
            g.fill(&mut burst);
            signal.extend(burst);
        }
        signal
    }

    fn add_noise(signal: &mut [i16], snr_db: f64, seed: u64) {
        let power = signal.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / signal.len() as f64;
        let sigma = (power / 10f64.powf(snr_db / 10.0)).sqrt();
        let mut noise = Noise(seed);
        for s in signal {
            *s = (*s as f64 + sigma * noise.gaussian()).round() as i16;
        }
    }

    #[test]
    fn all_sixteen_digits_at_50_ms_on_50_ms_off_are_detected_once_in_order() {
        assert_eq!(detect(&sequence(DIGITS, 50, 50)), DIGITS);
    }

    #[test]
    fn digits_survive_20_db_snr_white_noise() {
        for seed in 1..=5u64 {
            let mut signal = sequence(DIGITS, 50, 50);
            // SNR against the tone bursts' power, not the silences'.
            let on_power_boost_db = 3.0; // 50 % duty cycle
            add_noise(&mut signal, 20.0 - on_power_boost_db, seed);
            assert_eq!(detect(&signal), DIGITS, "seed {seed}");
        }
    }

    #[test]
    fn plain_sines_never_trigger() {
        for freq in [440.0, 1000.0, 697.0, 1209.0, 941.0] {
            let mut g = ToneGen::new(8000, &[Tone::dbm0(freq, 0.0)]).unwrap();
            let mut signal = vec![0i16; 8000 * 3];
            g.fill(&mut signal);
            assert_eq!(detect(&signal), "", "{freq} Hz");
        }
    }

    #[test]
    fn white_noise_never_triggers() {
        for seed in 1..=4u64 {
            let mut noise = Noise(seed);
            let signal: Vec<i16> = (0..8000 * 5)
                .map(|_| (3000.0 * noise.gaussian()).round() as i16)
                .collect();
            assert_eq!(detect(&signal), "", "seed {seed}");
        }
    }

    #[test]
    fn voiced_speech_like_harmonics_never_trigger() {
        // Pitch glides 90..300 Hz with 30 harmonics under a vowel-like
        // envelope: harmonics sweep over every DTMF frequency pair.
        let mut signal = Vec::new();
        let mut phase = 0.0f64;
        for n in 0..8000 * 8 {
            let t = n as f64 / 8000.0;
            let f0 = 195.0 + 105.0 * (2.0 * std::f64::consts::PI * 0.25 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / 8000.0;
            let mut v = 0.0;
            for h in 1..=30 {
                let f = f0 * h as f64;
                if f >= 3800.0 {
                    break;
                }
                // Formants near 700 and 1200 Hz make the talk-off hard.
                let env = 1.0 / (1.0 + ((f - 700.0) / 150.0).powi(2))
                    + 0.8 / (1.0 + ((f - 1200.0) / 200.0).powi(2))
                    + 0.1;
                v += env * (phase * h as f64).sin();
            }
            signal.push((v * 4000.0).round() as i16);
        }
        assert_eq!(detect(&signal), "");
    }

    #[test]
    fn bursts_of_40_ms_are_accepted_at_any_alignment() {
        for offset in (0..BLOCK).step_by(7) {
            let mut signal = vec![0i16; offset];
            for digit in ['1', '5', '9', 'D'] {
                signal.extend(tone_burst(
                    &digit_tones(digit, (1.0, 1.0), (-10.0, -8.0)),
                    40,
                    60,
                ));
            }
            assert_eq!(detect(&signal), "159D", "offset {offset}");
        }
    }

    #[test]
    fn bursts_shorter_than_20_ms_are_rejected_at_any_alignment() {
        for offset in (0..BLOCK).step_by(5) {
            let mut signal = vec![0i16; offset];
            for digit in ['1', '5', '9', 'D'] {
                signal.extend(tone_burst(
                    &digit_tones(digit, (1.0, 1.0), (-10.0, -8.0)),
                    20,
                    60,
                ));
            }
            assert_eq!(detect(&signal), "", "offset {offset}");
        }
    }

    /// The 16 digits, 40 ms on, 40 ms off, after `offset` samples.
    fn all_digits(offset: usize, scale: (f64, f64), levels: (f64, f64), on_ms: u32) -> Vec<i16> {
        let mut signal = vec![0i16; offset];
        for digit in DIGITS.chars() {
            signal.extend(tone_burst(&digit_tones(digit, scale, levels), on_ms, 40));
        }
        signal
    }

    const ALIGNMENTS: [usize; 3] = [0, 37, 71];

    #[test]
    fn frequencies_within_1_5_percent_are_accepted() {
        for offset in ALIGNMENTS {
            for scale in [
                (1.015, 1.015),
                (0.985, 0.985),
                (1.015, 0.985),
                (0.985, 1.015),
            ] {
                let signal = all_digits(offset, scale, (-10.0, -8.0), 40);
                assert_eq!(detect(&signal), DIGITS, "{scale:?} offset {offset}");
            }
        }
    }

    #[test]
    fn frequencies_off_by_3_5_percent_or_more_are_rejected() {
        for offset in ALIGNMENTS {
            for scale in [
                (1.035, 1.0),
                (0.965, 1.0),
                (1.0, 1.035),
                (1.0, 0.965),
                (1.06, 1.0),
                (1.0, 0.94),
            ] {
                let signal = all_digits(offset, scale, (-10.0, -8.0), 100);
                assert_eq!(detect(&signal), "", "{scale:?} offset {offset}");
            }
        }
    }

    #[test]
    fn twist_at_the_q24_limits_is_accepted() {
        // Normal: high group 8 dB below the low group; reverse: 4 dB above.
        for offset in ALIGNMENTS {
            for levels in [(-6.0, -14.0), (-12.0, -8.0)] {
                let signal = all_digits(offset, (1.0, 1.0), levels, 40);
                assert_eq!(detect(&signal), DIGITS, "{levels:?} offset {offset}");
            }
        }
    }

    #[test]
    fn twist_beyond_the_limits_is_rejected() {
        // Normal 11 dB, reverse 7 dB.
        for levels in [(-5.0, -16.0), (-14.0, -7.0)] {
            let signal = all_digits(0, (1.0, 1.0), levels, 100);
            assert_eq!(detect(&signal), "", "{levels:?}");
        }
    }

    #[test]
    fn off_frequency_and_twisted_digits_survive_20_db_snr() {
        for (i, offset) in ALIGNMENTS.into_iter().enumerate() {
            for (scale, levels) in [
                ((1.015, 0.985), (-10.0, -8.0)),
                ((0.985, 1.015), (-8.0, -12.0)),
                ((1.015, 1.015), (-25.0, -25.0)),
            ] {
                let mut signal = all_digits(offset, scale, levels, 40);
                add_noise(&mut signal, 20.0 - 3.0, i as u64 + 11);
                assert_eq!(
                    detect(&signal),
                    DIGITS,
                    "{scale:?} {levels:?} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn weak_tones_at_minus_25_dbm0_are_accepted_and_at_minus_35_rejected() {
        let mut signal = Vec::new();
        for digit in DIGITS.chars() {
            signal.extend(tone_burst(
                &digit_tones(digit, (1.015, 0.985), (-25.0, -25.0)),
                50,
                50,
            ));
        }
        assert_eq!(detect(&signal), DIGITS);
        let quiet = tone_burst(&digit_tones('5', (1.0, 1.0), (-35.0, -35.0)), 200, 50);
        assert_eq!(detect(&quiet), "");
    }

    #[test]
    fn a_10_ms_interruption_does_not_split_a_press() {
        for gap_at in [0usize, 37, 71] {
            let mut signal = vec![0i16; 200 + gap_at];
            let mut g = ToneGen::dtmf('6', 8000).unwrap();
            let mut tone = vec![0i16; 8 * 200];
            g.fill(&mut tone);
            tone[8 * 80..8 * 90].fill(0);
            signal.extend(tone);
            signal.extend([0i16; 800]);
            assert_eq!(detect(&signal), "6", "gap at {gap_at}");
        }
    }

    #[test]
    fn a_long_press_is_one_digit_and_a_40_ms_pause_separates_two() {
        let mut signal = tone_burst(&digit_tones('8', (1.0, 1.0), (-10.0, -8.0)), 1500, 40);
        signal.extend(tone_burst(
            &digit_tones('8', (1.0, 1.0), (-10.0, -8.0)),
            60,
            100,
        ));
        assert_eq!(detect(&signal), "88");
    }

    #[test]
    fn a_long_buffer_queues_every_digit() {
        let signal = sequence("147*", 50, 50);
        let mut det = InbandDetector::new();
        let mut got = String::new();
        got.extend(det.push(&signal));
        while let Some(d) = det.poll_digit() {
            got.push(d);
        }
        assert_eq!(got, "147*");
    }

    #[test]
    fn linear_level_tones_work_like_dbm0_ones() {
        let peak = dbm0_to_peak(-10.0);
        let (row, col) = dtmf_frequencies('C').unwrap();
        let tones = [
            Tone {
                freq_hz: row as f64,
                level: Level::Linear(peak),
            },
            Tone {
                freq_hz: col as f64,
                level: Level::Linear(peak),
            },
        ];
        assert_eq!(detect(&tone_burst(&tones, 60, 60)), "C");
    }
}
