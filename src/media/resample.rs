//! Sample-rate conversion of 16-bit linear PCM between 8 000, 16 000 and
//! 48 000 Hz: integer ratios 2, 3 and 6 up or down, and identity.
//!
//! Owns one polyphase FIR per stream direction, with its history, so that
//! consecutive frames (20 ms each, typically) join without seams. Driven by
//! [`Resampler::process`] once per frame; no clock, no allocation after
//! [`Resampler::new`].
//!
//! # Filter
//!
//! A Kaiser-windowed sinc (β = 6.2) designed at the higher rate, cut off at
//! 15/32 of the lower rate (3 750 Hz for an 8 kHz side, 7 500 Hz for a
//! 16 kHz side): the passband is flat (ripple < 0.01 dB) to 7/16 of the lower
//! rate (3.5 kHz at 8 kHz) and the stopband, from the lower rate's Nyquist
//! frequency up, is below −60 dB, so decimation folds nothing audible back.
//! Arithmetic is `f32` with the taps split by phase ([`TAPS_PER_PHASE`] per
//! output sample when interpolating, `R × TAPS_PER_PHASE` when decimating by
//! `R`); outputs are rounded and saturated to `i16`.
//!
//! # Group delay
//!
//! Exactly [`DELAY`] samples of the *lower* rate in both directions: 4 ms
//! when one side is 8 kHz, 2 ms when the lower side is 16 kHz. Upsampling
//! output sample `n·R` shows input sample `n − 32`; decimated output `m`
//! shows input sample `(m − 32)·R`. [`Resampler::latency_in`] and
//! [`Resampler::latency_out`] give the same figure counted in input and
//! output samples, e.g. to trim it off a whole prompt.

use thiserror::Error;

/// Taps of the interpolation filter per output phase; the decimation filter
/// has about `R` times as many per output sample.
pub const TAPS_PER_PHASE: usize = 65;
/// Group delay in samples of the lower of the two rates.
pub const DELAY: usize = 32;
/// Kaiser window shape: with these lengths, 64.5 dB of stopband from the
/// lower Nyquist frequency and < 0.01 dB of droop at 7/16 of the lower rate.
const KAISER_BETA: f64 = 6.2;
/// Cut-off (−6 dB point) as a fraction of the lower rate.
const CUTOFF: f64 = 15.0 / 32.0;

/// Why a [`Resampler`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResampleError {
    /// One of the rates is not 8 000, 16 000 or 48 000 Hz.
    #[error(
        "unsupported resampling {from_hz} Hz -> {to_hz} Hz: rates must be 8000, 16000 or 48000"
    )]
    UnsupportedRate {
        /// Input rate asked for.
        from_hz: u32,
        /// Output rate asked for.
        to_hz: u32,
    },
}

/// Whether `hz` is one of the rates the media plane works at.
pub fn is_supported_rate(hz: u32) -> bool {
    matches!(hz, 8000 | 16000 | 48000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Identity,
    /// Interpolate by the factor.
    Up(usize),
    /// Decimate by the factor.
    Down(usize),
}

/// A streaming converter from one rate to another (see the module doc).
#[derive(Debug, Clone)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    mode: Mode,
    /// Up: `R` phases of [`TAPS_PER_PHASE`] taps each, oldest-first and
    /// scaled by `R`. Down: one filter, oldest-first.
    taps: Box<[f32]>,
    line: DelayLine,
    /// Down: input samples since the last output (0..R).
    phase: usize,
}

impl Resampler {
    /// A converter from `from_hz` to `to_hz`; both must be 8 000, 16 000 or
    /// 48 000 Hz.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Resampler, ResampleError> {
        if !is_supported_rate(from_hz) || !is_supported_rate(to_hz) {
            return Err(ResampleError::UnsupportedRate { from_hz, to_hz });
        }
        let (mode, taps, window) = if from_hz == to_hz {
            (Mode::Identity, Vec::new(), 0)
        } else if to_hz > from_hz {
            let r = (to_hz / from_hz) as usize;
            // 2·DELAY·R + 1 taps centred on DELAY·R: a whole number of
            // input samples of delay. Phase p holds h[k·R + p] for
            // k = 0..TAPS_PER_PHASE, stored newest-last.
            let h = design(2 * DELAY * r + 1, r);
            let mut taps = vec![0.0f32; r * TAPS_PER_PHASE];
            for p in 0..r {
                for i in 0..TAPS_PER_PHASE {
                    let k = TAPS_PER_PHASE - 1 - i;
                    let j = k * r + p;
                    let tap = h.get(j).copied().unwrap_or(0.0);
                    taps[p * TAPS_PER_PHASE + i] = (tap * r as f64) as f32;
                }
            }
            (Mode::Up(r), taps, TAPS_PER_PHASE)
        } else {
            let r = (from_hz / to_hz) as usize;
            // An output is due after every R-th input, i.e. R − 1 samples
            // after the instant it stands for: centring the filter on
            // DELAY·R + R − 1 makes the whole delay DELAY output samples.
            let len = 2 * (DELAY * r + r - 1) + 1;
            let taps: Vec<f32> = design(len, r).iter().map(|&t| t as f32).collect();
            (Mode::Down(r), taps, len)
        };
        Ok(Resampler {
            from_hz,
            to_hz,
            mode,
            taps: taps.into_boxed_slice(),
            line: DelayLine::new(window),
            phase: 0,
        })
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// How many samples [`Resampler::process`] will write for `input_len`
    /// input samples, given what earlier calls left pending. Equals
    /// `input_len × to / from` whenever every call so far passed a multiple
    /// of the decimation factor (any whole number of milliseconds does).
    pub fn output_len(&self, input_len: usize) -> usize {
        match self.mode {
            Mode::Identity => input_len,
            Mode::Up(r) => input_len * r,
            Mode::Down(r) => (self.phase + input_len) / r,
        }
    }

    /// The group delay counted in input samples.
    pub fn latency_in(&self) -> usize {
        match self.mode {
            Mode::Identity => 0,
            Mode::Up(_) => DELAY,
            Mode::Down(r) => DELAY * r,
        }
    }

    /// The group delay counted in output samples.
    pub fn latency_out(&self) -> usize {
        match self.mode {
            Mode::Identity => 0,
            Mode::Up(r) => DELAY * r,
            Mode::Down(_) => DELAY,
        }
    }

    /// Converts `input` into `output` and returns the number of samples
    /// written: [`Resampler::output_len`]`(input.len())` when `output` has
    /// room for them (`input.len() × to / from` for whole-millisecond
    /// frames). Outputs beyond `output.len()` are computed but dropped.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        match self.mode {
            Mode::Identity => {
                let n = input.len().min(output.len());
                output[..n].copy_from_slice(&input[..n]);
                n
            }
            Mode::Up(r) => self.interpolate(r, input, output),
            Mode::Down(r) => self.decimate(r, input, output),
        }
    }

    /// Clears the history: the next frame starts from silence.
    pub fn reset(&mut self) {
        self.line.clear();
        self.phase = 0;
    }

    fn interpolate(&mut self, r: usize, input: &[i16], output: &mut [i16]) -> usize {
        let mut written = 0;
        for &x in input {
            let window = self.line.push(x);
            for phase in self.taps.chunks_exact(TAPS_PER_PHASE).take(r) {
                if let Some(slot) = output.get_mut(written) {
                    *slot = to_i16(dot(window, phase));
                    written += 1;
                }
            }
        }
        written
    }

    fn decimate(&mut self, r: usize, input: &[i16], output: &mut [i16]) -> usize {
        let mut written = 0;
        for &x in input {
            let window = self.line.push(x);
            self.phase += 1;
            if self.phase == r {
                self.phase = 0;
                if let Some(slot) = output.get_mut(written) {
                    *slot = to_i16(dot(window, &self.taps));
                    written += 1;
                }
            }
        }
        written
    }
}

/// The last `len` input samples, kept twice over (`buf` is `2 × len` long)
/// so that they are always one contiguous slice, oldest first.
#[derive(Debug, Clone)]
struct DelayLine {
    buf: Box<[f32]>,
    len: usize,
    /// Where the next sample goes, in `0..len`.
    pos: usize,
}

impl DelayLine {
    fn new(len: usize) -> DelayLine {
        DelayLine {
            buf: vec![0.0f32; 2 * len].into_boxed_slice(),
            len,
            pos: 0,
        }
    }

    fn clear(&mut self) {
        self.buf.fill(0.0);
        self.pos = 0;
    }

    /// Stores one sample; returns the window, oldest first.
    #[inline]
    fn push(&mut self, x: i16) -> &[f32] {
        let v = x as f32;
        self.buf[self.pos] = v;
        self.buf[self.pos + self.len] = v;
        self.pos += 1;
        if self.pos == self.len {
            self.pos = 0;
        }
        &self.buf[self.pos..self.pos + self.len]
    }
}

/// Rounds and saturates.
#[inline]
fn to_i16(v: f32) -> i16 {
    // `as` saturates out-of-range floats (and maps NaN to 0).
    v.round() as i16
}

/// Dot product with eight independent accumulators, so it vectorizes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

/// A linear-phase low-pass of `len` (odd) taps at the higher rate, cut off
/// at [`CUTOFF`] of the lower rate (= high rate / `r`), unity DC gain.
fn design(len: usize, r: usize) -> Vec<f64> {
    let centre = (len - 1) as f64 / 2.0;
    let fc = CUTOFF / r as f64; // cycles per high-rate sample
    let mut h: Vec<f64> = (0..len)
        .map(|i| {
            let t = i as f64 - centre;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let x = t / centre;
            sinc * bessel_i0(KAISER_BETA * (1.0 - x * x).max(0.0).sqrt()) / bessel_i0(KAISER_BETA)
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for t in &mut h {
        *t /= sum;
    }
    h
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::test_signals::{amplitude_at, sine};

    fn run_in_frames(rs: &mut Resampler, input: &[i16], frame: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for chunk in input.chunks(frame) {
            let mut buf = vec![0i16; rs.output_len(chunk.len())];
            let n = rs.process(chunk, &mut buf);
            assert_eq!(n, buf.len());
            out.extend_from_slice(&buf);
        }
        out
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    #[test]
    fn unsupported_rates_are_refused_with_both_rates_named() {
        let err = Resampler::new(44_100, 8000).unwrap_err();
        assert_eq!(
            err,
            ResampleError::UnsupportedRate {
                from_hz: 44_100,
                to_hz: 8000
            }
        );
        assert!(err.to_string().contains("44100"));
        assert!(Resampler::new(8000, 12_000).is_err());
    }

    #[test]
    fn identity_copies_samples() {
        let mut rs = Resampler::new(16_000, 16_000).unwrap();
        let input = [1i16, -2, 3, 32_767];
        let mut out = [0i16; 4];
        assert_eq!(rs.process(&input, &mut out), 4);
        assert_eq!(out, input);
        assert_eq!(rs.latency_out(), 0);
    }

    #[test]
    fn output_len_follows_the_ratio_for_20ms_frames() {
        for &(from, to, inp, outp) in &[
            (8000, 48_000, 160, 960),
            (48_000, 8000, 960, 160),
            (16_000, 48_000, 320, 960),
            (48_000, 16_000, 960, 320),
            (8000, 16_000, 160, 320),
            (16_000, 8000, 320, 160),
        ] {
            let mut rs = Resampler::new(from, to).unwrap();
            assert_eq!(rs.output_len(inp), outp, "{from}->{to}");
            let mut out = vec![0i16; outp];
            assert_eq!(rs.process(&vec![100i16; inp], &mut out), outp);
        }
    }

    #[test]
    fn decimation_carries_odd_chunks_over() {
        let mut rs = Resampler::new(48_000, 8000).unwrap();
        let mut out = [0i16; 4];
        assert_eq!(rs.output_len(5), 0);
        assert_eq!(rs.process(&[0; 5], &mut out), 0);
        assert_eq!(rs.output_len(7), 2);
        assert_eq!(rs.process(&[0; 7], &mut out), 2);
        assert_eq!(rs.output_len(6), 1);
    }

    #[test]
    fn stopband_of_every_filter_is_below_60_db() {
        for r in [2usize, 3, 6] {
            for len in [2 * DELAY * r + 1, 2 * (DELAY * r + r - 1) + 1] {
                let h = design(len, r);
                // Frequency response from the lower Nyquist to the upper one.
                let steps = 2000;
                let mut worst: f64 = 0.0;
                for s in 0..=steps {
                    let f = 0.5 / r as f64 + (0.5 - 0.5 / r as f64) * s as f64 / steps as f64;
                    let (mut re, mut im) = (0.0, 0.0);
                    for (i, &t) in h.iter().enumerate() {
                        let ph = 2.0 * std::f64::consts::PI * f * i as f64;
                        re += t * ph.cos();
                        im += t * ph.sin();
                    }
                    worst = worst.max((re * re + im * im).sqrt());
                }
                assert!(db(worst) < -60.0, "r={r} len={len}: {:.1} dB", db(worst));
            }
        }
    }

    #[test]
    fn tone_at_3500_hz_passes_48k_to_8k() {
        let mut rs = Resampler::new(48_000, 8000).unwrap();
        let out = run_in_frames(&mut rs, &sine(3500.0, 48_000, 10_000.0, 48_000), 960);
        let a = amplitude_at(&out[DELAY * 2..], 3500.0, 8000);
        assert!(db(a / 10_000.0).abs() < 0.5, "{:.2} dB", db(a / 10_000.0));
    }

    #[test]
    fn tone_at_6000_hz_is_attenuated_50_db_48k_to_8k() {
        let mut rs = Resampler::new(48_000, 8000).unwrap();
        let out = run_in_frames(&mut rs, &sine(6000.0, 48_000, 20_000.0, 48_000), 960);
        // 6 kHz would fold to 2 kHz; check the fold and the whole power.
        let tail = &out[DELAY * 2..];
        let folded = amplitude_at(tail, 2000.0, 8000);
        let rms = (tail.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / tail.len() as f64)
            .sqrt()
            * std::f64::consts::SQRT_2;
        assert!(
            db(folded / 20_000.0) < -50.0,
            "{:.1} dB",
            db(folded / 20_000.0)
        );
        assert!(db(rms / 20_000.0) < -50.0, "{:.1} dB", db(rms / 20_000.0));
    }

    #[test]
    fn tone_at_6000_hz_is_attenuated_50_db_16k_to_8k() {
        // At 16 kHz a 6 kHz tone would fold to 2 kHz too.
        let mut rs = Resampler::new(16_000, 8000).unwrap();
        let out = run_in_frames(&mut rs, &sine(6000.0, 16_000, 20_000.0, 16_000), 320);
        let a = amplitude_at(&out[DELAY * 2..], 2000.0, 8000);
        assert!(db(a / 20_000.0) < -50.0, "{:.1} dB", db(a / 20_000.0));
    }

    #[test]
    fn round_trip_8k_48k_8k_keeps_a_1khz_tone() {
        let input = sine(1000.0, 8000, 16_000.0, 8000);
        let mut up = Resampler::new(8000, 48_000).unwrap();
        let mut down = Resampler::new(48_000, 8000).unwrap();
        let wide = run_in_frames(&mut up, &input, 160);
        assert_eq!(wide.len(), 48_000);
        let back = run_in_frames(&mut down, &wide, 960);
        assert_eq!(back.len(), 8000);
        // Total delay: 32 + 32 samples at 8 kHz; then, once the start's
        // transient has passed, the waveform matches.
        let delay = 2 * DELAY;
        let settled = DELAY;
        let a = amplitude_at(&back[delay..], 1000.0, 8000);
        assert!(db(a / 16_000.0).abs() < 1.0, "{:.2} dB", db(a / 16_000.0));
        let worst = back[delay + settled..]
            .iter()
            .zip(&input[settled..])
            .map(|(&b, &i)| (b as i32 - i as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst < 160,
            "sample error {worst} after {delay} samples of delay"
        );
        // And nothing else: the 1 kHz bin holds the power.
        let other = amplitude_at(&back[delay..], 1500.0, 8000);
        assert!(db(other / 16_000.0) < -60.0);
    }

    #[test]
    fn upsampled_tone_shows_the_documented_delay() {
        // Output n·R shows input n − DELAY.
        for (from, to) in [(8000, 16_000), (16_000, 48_000), (8000, 48_000)] {
            let r = (to / from) as usize;
            let input = sine(440.0, from, 12_000.0, from as usize / 10);
            let mut rs = Resampler::new(from, to).unwrap();
            let out = run_in_frames(&mut rs, &input, from as usize / 50);
            for n in DELAY + 40..input.len() {
                let d = (out[n * r] as i32 - input[n - DELAY] as i32).abs();
                assert!(d < 40, "{from}->{to}: sample {n} off by {d}");
            }
        }
    }

    #[test]
    fn frames_join_seamlessly_whatever_the_split() {
        let input = sine(700.0, 48_000, 9000.0, 4800);
        let mut whole = Resampler::new(48_000, 16_000).unwrap();
        let mut split = Resampler::new(48_000, 16_000).unwrap();
        let a = run_in_frames(&mut whole, &input, 4800);
        let b = run_in_frames(&mut split, &input, 37);
        assert_eq!(a, b);
    }

    #[test]
    fn reset_forgets_the_history() {
        let mut rs = Resampler::new(8000, 16_000).unwrap();
        let mut out = [0i16; 320];
        rs.process(&[20_000; 160], &mut out);
        rs.reset();
        rs.process(&[0; 160], &mut out);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn full_scale_input_saturates_instead_of_wrapping() {
        // A full-scale square wave overshoots (Gibbs); outputs clamp.
        let input: Vec<i16> = (0..1600)
            .map(|n| if (n / 8) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut rs = Resampler::new(8000, 48_000).unwrap();
        let out = run_in_frames(&mut rs, &input, 160);
        assert!(out.contains(&i16::MAX));
        assert!(out.contains(&i16::MIN));
    }
}
