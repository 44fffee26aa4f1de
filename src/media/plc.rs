//! Packet-loss concealment for decoded 16-bit PCM (G.711 paths).
//!
//! Owns one stream's recent audio history and, during a loss, the pitch
//! buffer it repeats. The method is that of ITU-T G.711 Appendix I: on the
//! first lost frame the pitch period is estimated from the last 20 ms
//! (normalised cross-correlation over 5..15 ms, i.e. 66..200 Hz); the last
//! period is repeated, its end overlap-added (a quarter period) onto the
//! samples before it so that the loop is smooth; after 10 ms of loss the
//! loop widens to two periods, after 20 ms to three (less buzzy); from 10 ms
//! on the output is attenuated by 20 % per 10 ms, reaching silence at 60 ms.
//! The first good frame after a loss is overlap-added with a continuation
//! of the concealment over 4 ms, plus 4 ms per further 10 ms lost (at most
//! 10 ms), so the join has no step.
//!
//! Unlike Appendix I there is no 3.75 ms output delay: the repetition
//! starts at the sample one period back, which for voiced speech is the
//! natural continuation, so the start of a loss joins without an overlap.
//!
//! Works at any rate that is a multiple of 8 kHz (8, 16, 48 kHz): the pitch
//! search runs on an 8 kHz copy (averaged), then is refined at the full rate.
//!
//! Driven by the caller per frame: [`Plc::good`] with each decoded frame
//! (it may rewrite the frame's start to join a loss), [`Plc::conceal`] in
//! place of each lost one. All buffers are allocated in [`Plc::new`].

use std::ops::RangeInclusive;

/// Pitch search range and correlation window at 8 kHz (Appendix I).
const PITCH_MIN_8K: usize = 40;
const PITCH_MAX_8K: usize = 120;
const CORR_LEN_8K: usize = 160;
/// Three periods plus a quarter-period overlap: 48.75 ms at 8 kHz.
const HISTORY_8K: usize = 3 * PITCH_MAX_8K + PITCH_MAX_8K / 4;

/// Packet-loss concealment state for one stream (see the module doc).
#[derive(Debug, Clone)]
pub struct Plc {
    rate: u32,
    /// Full-rate samples per 8 kHz sample.
    decim: usize,
    /// Samples in 10 ms.
    ten_ms: usize,
    /// The most recent output, oldest first.
    history: Vec<i16>,
    /// An 8 kHz copy of the history's tail, for the pitch search.
    decimated: Vec<f32>,
    /// The history at the start of the current loss.
    pitch_buf: Vec<i16>,
    /// The loop being repeated: the last `periods` periods, tail smoothed.
    region: Vec<i16>,
    /// The continuation of the concealment for the join.
    join: Vec<i16>,
    /// Samples concealed in the current loss (0: not in a loss).
    erased: usize,
    period: usize,
    periods: usize,
    /// Position within `region[..periods * period]`.
    idx: usize,
}

impl Plc {
    /// Concealment for audio at `rate` Hz (a multiple of 8000; other rates
    /// are treated as the nearest multiple).
    pub fn new(rate: u32) -> Self {
        let decim = (rate as usize + 4000) / 8000;
        let decim = decim.max(1);
        let hist = HISTORY_8K * decim;
        Self {
            rate,
            decim,
            ten_ms: 80 * decim,
            history: vec![0; hist],
            decimated: vec![0.0; CORR_LEN_8K + PITCH_MAX_8K],
            pitch_buf: vec![0; hist],
            region: vec![0; 3 * PITCH_MAX_8K * decim + decim],
            join: vec![0; 80 * decim],
            erased: 0,
            period: PITCH_MIN_8K * decim,
            periods: 1,
            idx: 0,
        }
    }

    /// The sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Whether the last frame was concealed.
    pub fn in_loss(&self) -> bool {
        self.erased > 0
    }

    /// Records a decoded frame. After a loss, the frame's first few
    /// milliseconds are cross-faded from the concealment into it.
    pub fn good(&mut self, frame: &mut [i16]) {
        if self.erased > 0 {
            // 4 ms, plus 4 ms per further 10 ms lost, at most 10 ms.
            let tens = self.erased.div_ceil(self.ten_ms);
            let four_ms = self.ten_ms * 2 / 5;
            let len = (four_ms * tens).min(self.ten_ms).min(frame.len());
            let mut join = std::mem::take(&mut self.join);
            self.synthesize(&mut join[..len]);
            for (i, (f, &c)) in frame.iter_mut().zip(&join[..len]).enumerate() {
                let w = (i + 1) as f32 / (len + 1) as f32;
                *f = (f32::from(c) * (1.0 - w) + f32::from(*f) * w).round() as i16;
            }
            self.join = join;
            self.erased = 0;
        }
        self.remember(frame);
    }

    /// Fills `out` (a lost frame) with concealment.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.erased == 0 {
            self.start_loss();
        }
        self.synthesize(out);
        self.remember(out);
    }

    /// Appends to the history, keeping the newest samples.
    fn remember(&mut self, frame: &[i16]) {
        let h = self.history.len();
        if frame.len() >= h {
            self.history.copy_from_slice(&frame[frame.len() - h..]);
        } else {
            self.history.copy_within(frame.len().., 0);
            self.history[h - frame.len()..].copy_from_slice(frame);
        }
    }

    fn start_loss(&mut self) {
        self.period = self.find_pitch();
        self.pitch_buf.copy_from_slice(&self.history);
        self.periods = 1;
        self.build_region();
        self.idx = 0;
    }

    /// The pitch period in full-rate samples: the best normalised
    /// correlation on the 8 kHz copy, refined at the full rate.
    fn find_pitch(&mut self) -> usize {
        let d = self.decim;
        let h = &self.history;
        let n = self.decimated.len();
        for (i, v) in self.decimated.iter_mut().enumerate() {
            let start = h.len() - (n - i) * d;
            *v = h[start..start + d]
                .iter()
                .map(|&s| f32::from(s))
                .sum::<f32>()
                / d as f32;
        }
        let coarse = best_lag(&self.decimated, CORR_LEN_8K, PITCH_MIN_8K..=PITCH_MAX_8K);
        if d == 1 {
            return coarse;
        }
        let lo = (coarse * d).saturating_sub(d).max(PITCH_MIN_8K * d);
        let hi = (coarse * d + d).min(PITCH_MAX_8K * d);
        best_lag(h, CORR_LEN_8K * d, lo..=hi)
    }

    /// The loop for `periods` periods: the history's last `periods · P`
    /// samples, the final quarter period cross-faded into the samples that
    /// precede the loop's start, so that wrapping around is smooth.
    fn build_region(&mut self) {
        let p = self.period;
        let len = self.periods * p;
        let ola = p / 4;
        let h = &self.pitch_buf;
        let start = h.len() - len;
        self.region[..len].copy_from_slice(&h[start..]);
        for j in 0..ola {
            let w = (j + 1) as f32 / (ola + 1) as f32;
            let end = &mut self.region[len - ola + j];
            let before = h[start - ola + j];
            *end = (f32::from(*end) * (1.0 - w) + f32::from(before) * w).round() as i16;
        }
    }

    /// Continues the concealment into `out`, advancing the loss.
    fn synthesize(&mut self, out: &mut [i16]) {
        let ten = self.ten_ms;
        for o in out.iter_mut() {
            let t = self.erased;
            let want = if t < ten {
                1
            } else if t < 2 * ten {
                2
            } else {
                3
            };
            if want > self.periods {
                // The same history sample sits one period further in.
                self.idx += self.period;
                self.periods = want;
                self.build_region();
            }
            let gain = if t < ten {
                1.0
            } else {
                (1.0 - 0.2 * (t - ten) as f32 / ten as f32).max(0.0)
            };
            *o = (f32::from(self.region[self.idx]) * gain).round() as i16;
            self.idx = (self.idx + 1) % (self.periods * self.period);
            self.erased = self.erased.saturating_add(1);
        }
    }
}

/// The lag in `lags` maximising the normalised correlation of the last
/// `len` samples of `x` with the samples `lag` earlier.
fn best_lag<T: Copy + Into<f64>>(x: &[T], len: usize, lags: RangeInclusive<usize>) -> usize {
    let at = x.len() - len;
    let mut best = (f64::MIN, *lags.start());
    for lag in lags {
        let (mut corr, mut energy) = (0.0f64, 0.0f64);
        for i in 0..len {
            let s: f64 = x[at + i - lag].into();
            corr += x[at + i].into() * s;
            energy += s * s;
        }
        let score = if energy > 0.0 {
            corr / energy.sqrt()
        } else {
            0.0
        };
        if score > best.0 {
            best = (score, lag);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced-like signal: 125 Hz with two harmonics.
    fn voiced(rate: u32, n: usize, from: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                let w = 2.0 * std::f64::consts::PI * 125.0 * t;
                (6000.0 * w.sin() + 3000.0 * (2.0 * w).sin() + 1500.0 * (3.0 * w + 0.5).sin())
                    as i16
            })
            .collect()
    }

    fn correlation(a: &[i16], b: &[i16]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        let ea: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum();
        let eb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum();
        dot / (ea * eb).sqrt()
    }

    fn max_step(s: &[i16]) -> i32 {
        s.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    fn energy(s: &[i16]) -> f64 {
        s.iter().map(|&x| f64::from(x).powi(2)).sum()
    }

    /// Feeds `frames` good 20 ms frames of the voiced signal.
    fn primed(rate: u32, frames: usize) -> (Plc, usize) {
        let n = rate as usize / 50;
        let mut plc = Plc::new(rate);
        for f in 0..frames {
            let mut fr = voiced(rate, n, f * n);
            plc.good(&mut fr);
        }
        (plc, n)
    }

    #[test]
    fn concealed_frame_of_periodic_signal_follows_the_signal() {
        for rate in [8000, 16000, 48000] {
            let (mut plc, n) = primed(rate, 10);
            let mut lost = vec![0i16; n];
            plc.conceal(&mut lost);
            let truth = voiced(rate, n, 10 * n);
            let c = correlation(&lost, &truth);
            assert!(c > 0.95, "rate {rate}: correlation {c}");
            assert_eq!(plc.period, 64 * rate as usize / 8000, "rate {rate}");
        }
    }

    #[test]
    fn five_consecutive_losses_decay_to_silence() {
        let (mut plc, n) = primed(8000, 10);
        let mut frames = vec![vec![0i16; n]; 5];
        for f in &mut frames {
            plc.conceal(f);
        }
        let e: Vec<f64> = frames.iter().map(|f| energy(f)).collect();
        // The first 10 ms are at full level: as loud as the signal.
        let full = energy(&voiced(8000, n, 0));
        assert!(e[0] > 0.7 * full, "{e:?}");
        assert!(e[1] < e[0] && e[2] < e[1], "not decaying: {e:?}");
        assert!(e[2] > 0.0);
        // 60 ms and on: silence.
        assert!(frames[3].iter().all(|&s| s == 0));
        assert!(frames[4].iter().all(|&s| s == 0));
    }

    #[test]
    fn join_after_one_lost_frame_has_no_step() {
        for rate in [8000, 16000, 48000] {
            let (mut plc, n) = primed(rate, 10);
            let mut out = vec![0i16; n];
            plc.conceal(&mut out);
            let mut next = voiced(rate, n, 11 * n);
            plc.good(&mut next);
            let normal = max_step(&voiced(rate, 4 * n, 0));
            let mut seam = vec![*out.last().unwrap()];
            seam.extend_from_slice(&next);
            let step = max_step(&seam);
            assert!(
                step <= normal + normal / 4,
                "rate {rate}: join step {step} vs signal {normal}"
            );
        }
    }

    #[test]
    fn join_after_silence_fades_in() {
        let (mut plc, n) = primed(8000, 10);
        let mut out = vec![0i16; n];
        for _ in 0..5 {
            plc.conceal(&mut out);
        }
        let mut next = voiced(8000, n, 15 * n);
        let original = next.clone();
        plc.good(&mut next);
        assert!(!plc.in_loss());
        // 10 ms cross-fade from silence: the first sample is scaled down,
        // the rest of the frame untouched.
        assert!(i32::from(next[0]).abs() <= i32::from(original[0]).abs() / 40 + 1);
        assert_eq!(&next[80..], &original[80..]);
        let normal = max_step(&voiced(8000, 4 * n, 0));
        assert!(max_step(&next) <= normal + normal / 4);
    }

    #[test]
    fn start_of_loss_continues_without_a_step() {
        let (mut plc, n) = primed(8000, 10);
        let last = voiced(8000, n, 9 * n);
        let mut out = vec![0i16; n];
        plc.conceal(&mut out);
        let mut seam = vec![*last.last().unwrap()];
        seam.extend_from_slice(&out);
        let normal = max_step(&voiced(8000, 4 * n, 0));
        assert!(max_step(&seam) <= normal + normal / 4);
    }

    #[test]
    fn concealing_from_silence_stays_silent() {
        let mut plc = Plc::new(8000);
        let mut out = [1i16; 160];
        plc.conceal(&mut out);
        assert!(out.iter().all(|&s| s == 0));
        let mut good = [100i16; 160];
        plc.good(&mut good);
        assert!(good[0] < 100 && good[159] == 100);
    }
}
