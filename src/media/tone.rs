//! Tone generation: single and dual frequencies with an optional on/off
//! cadence, at 8, 16 or 48 kHz, into 16-bit linear PCM.
//!
//! Owns the oscillators and the cadence position of one tone; nothing else.
//! Driven by [`ToneGen::fill`], once per frame: the phase and the cadence
//! carry over between calls, so 20 ms frames join without clicks. No clock:
//! time is the number of samples filled.
//!
//! Levels are in dBm0: 0 dBm0 is a sine whose peak is [`DBM0_PEAK`], since
//! G.711 puts the theoretical load capacity of µ-law (a sine of peak 8159
//! on its 14-bit scale, 32 636 here) at +3.17 dBm0.
//!
//! Signals implemented:
//! * DTMF (ITU-T Q.23): row frequency at −10 dBm0, column at −8 dBm0 (the
//!   usual 2 dB pre-emphasis of the high group; well inside the 4 dB of
//!   reverse twist a Q.24 receiver accepts).
//! * Ringback and busy per ITU-T E.180 (and ETSI TR 101 041 for most of
//!   Europe): 425 Hz at −10 dBm0; ringback 1 s on, 4 s off; busy 0.5 s on,
//!   0.5 s off. The North American 440+480 Hz ringback is one
//!   [`ToneGen::new`] away (`[Tone::dbm0(440.0, -19.0), Tone::dbm0(480.0,
//!   -19.0)]`, cadence 2 s / 4 s) if a deployment wants it.

use thiserror::Error;

use super::dtmf;
use super::resample::is_supported_rate;

/// Peak of a 0 dBm0 sine on the 16-bit scale (G.711 µ-law: +3.17 dBm0 is
/// the full-scale sine of peak 32 636).
pub const DBM0_PEAK: f64 = 22_657.0;

/// Peak amplitude (16-bit scale) of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f64) -> f64 {
    DBM0_PEAK * 10f64.powf(dbm0 / 20.0)
}

/// Why a tone could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ToneError {
    /// The sample rate is not 8 000, 16 000 or 48 000 Hz.
    #[error("unsupported tone sample rate {0} Hz: use 8000, 16000 or 48000")]
    UnsupportedRate(u32),
    /// A frequency is not below the Nyquist frequency of the rate.
    #[error("tone frequency {freq_hz} Hz is not in 1..{} Hz at {rate} Hz", rate / 2)]
    FrequencyOutOfRange {
        /// The offending frequency.
        freq_hz: f64,
        /// The sample rate.
        rate: u32,
    },
    /// A tone has one or two frequencies.
    #[error("a tone has one or two frequencies, not {0}")]
    FrequencyCount(usize),
    /// Not one of 0-9, *, #, A-D.
    #[error("no DTMF digit {0:?}: use 0-9, *, #, A-D")]
    UnknownDigit(char),
}

/// How loud one frequency is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Relative to the digital milliwatt (see [`DBM0_PEAK`]).
    Dbm0(f64),
    /// Peak amplitude on the 16-bit scale.
    Linear(f64),
}

impl Level {
    fn peak(self) -> f64 {
        match self {
            Level::Dbm0(d) => dbm0_to_peak(d),
            Level::Linear(p) => p,
        }
    }
}

/// One frequency of a tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Frequency in Hz.
    pub freq_hz: f64,
    /// Level.
    pub level: Level,
}

impl Tone {
    /// A frequency at a level in dBm0.
    pub fn dbm0(freq_hz: f64, dbm0: f64) -> Tone {
        Tone {
            freq_hz,
            level: Level::Dbm0(dbm0),
        }
    }
}

/// On/off pattern of a tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Tone on, in milliseconds.
    pub on_ms: u32,
    /// Silence after each burst, in milliseconds.
    pub off_ms: u32,
    /// Number of on/off cycles, or `None` to repeat forever.
    pub repeat: Option<u32>,
}

/// A quadrature oscillator: a unit phasor rotated once per sample.
#[derive(Debug, Clone, Copy)]
struct Osc {
    re: f64,
    im: f64,
    step_re: f64,
    step_im: f64,
    peak: f64,
}

impl Osc {
    fn new(tone: Tone, rate: u32) -> Result<Osc, ToneError> {
        if !(tone.freq_hz >= 1.0 && tone.freq_hz < rate as f64 / 2.0) {
            return Err(ToneError::FrequencyOutOfRange {
                freq_hz: tone.freq_hz,
                rate,
            });
        }
        let w = 2.0 * std::f64::consts::PI * tone.freq_hz / rate as f64;
        Ok(Osc {
            re: 1.0,
            im: 0.0,
            step_re: w.cos(),
            step_im: w.sin(),
            peak: tone.level.peak(),
        })
    }

    /// The current sample, then advance one sample.
    #[inline]
    fn next(&mut self) -> f64 {
        let v = self.peak * self.im;
        let re = self.re * self.step_re - self.im * self.step_im;
        self.im = self.re * self.step_im + self.im * self.step_re;
        self.re = re;
        v
    }

    /// Puts the phasor back on the unit circle (rounding drift).
    fn renormalize(&mut self) {
        let norm = (self.re * self.re + self.im * self.im).sqrt();
        if norm > 0.0 {
            self.re /= norm;
            self.im /= norm;
        }
    }

    fn restart(&mut self) {
        self.re = 1.0;
        self.im = 0.0;
    }
}

/// Cadence position, in samples.
#[derive(Debug, Clone, Copy)]
struct CadenceState {
    on: u64,
    off: u64,
    repeat: Option<u32>,
    /// Position within the current on+off cycle.
    pos: u64,
    /// Cycles completed.
    cycles: u32,
}

/// A tone generator (see the module doc).
#[derive(Debug, Clone)]
pub struct ToneGen {
    rate: u32,
    oscs: [Osc; 2],
    count: usize,
    cadence: Option<CadenceState>,
}

impl ToneGen {
    /// A continuous tone of one or two frequencies at `rate`.
    pub fn new(rate: u32, tones: &[Tone]) -> Result<ToneGen, ToneError> {
        if !is_supported_rate(rate) {
            return Err(ToneError::UnsupportedRate(rate));
        }
        let silent = Osc {
            re: 1.0,
            im: 0.0,
            step_re: 1.0,
            step_im: 0.0,
            peak: 0.0,
        };
        let mut oscs = [silent; 2];
        match tones {
            [a] => oscs[0] = Osc::new(*a, rate)?,
            [a, b] => {
                oscs[0] = Osc::new(*a, rate)?;
                oscs[1] = Osc::new(*b, rate)?;
            }
            _ => return Err(ToneError::FrequencyCount(tones.len())),
        }
        Ok(ToneGen {
            rate,
            oscs,
            count: tones.len(),
            cadence: None,
        })
    }

    /// Adds an on/off cadence; the tone starts with an "on" period.
    pub fn with_cadence(mut self, cadence: Cadence) -> ToneGen {
        let ms = |v: u32| v as u64 * self.rate as u64 / 1000;
        self.cadence = Some(CadenceState {
            on: ms(cadence.on_ms),
            off: ms(cadence.off_ms),
            repeat: cadence.repeat,
            pos: 0,
            cycles: 0,
        });
        self
    }

    /// A continuous sine at −10 dBm0.
    pub fn sine(freq_hz: f64, rate: u32) -> Result<ToneGen, ToneError> {
        ToneGen::new(rate, &[Tone::dbm0(freq_hz, -10.0)])
    }

    /// A continuous DTMF digit (Q.23 frequencies; levels in the module doc).
    pub fn dtmf(digit: char, rate: u32) -> Result<ToneGen, ToneError> {
        let (row, col) = dtmf::dtmf_frequencies(digit).ok_or(ToneError::UnknownDigit(digit))?;
        ToneGen::new(
            rate,
            &[
                Tone::dbm0(row as f64, DTMF_ROW_DBM0),
                Tone::dbm0(col as f64, DTMF_COL_DBM0),
            ],
        )
    }

    /// Ringback: 425 Hz, 1 s on, 4 s off, forever (ITU-T E.180).
    pub fn ringback(rate: u32) -> Result<ToneGen, ToneError> {
        Ok(
            ToneGen::new(rate, &[Tone::dbm0(425.0, -10.0)])?.with_cadence(Cadence {
                on_ms: 1000,
                off_ms: 4000,
                repeat: None,
            }),
        )
    }

    /// Busy: 425 Hz, 0.5 s on, 0.5 s off, forever (ITU-T E.180).
    pub fn busy(rate: u32) -> Result<ToneGen, ToneError> {
        Ok(
            ToneGen::new(rate, &[Tone::dbm0(425.0, -10.0)])?.with_cadence(Cadence {
                on_ms: 500,
                off_ms: 500,
                repeat: None,
            }),
        )
    }

    /// Sample rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Whether a finite cadence has played all its cycles (only silence
    /// follows).
    pub fn is_done(&self) -> bool {
        match self.cadence {
            Some(CadenceState {
                repeat: Some(n),
                cycles,
                ..
            }) => cycles >= n,
            _ => false,
        }
    }

    /// Back to the start: phase zero, first "on" period.
    pub fn reset(&mut self) {
        for osc in &mut self.oscs {
            osc.restart();
        }
        if let Some(c) = &mut self.cadence {
            c.pos = 0;
            c.cycles = 0;
        }
    }

    /// Writes the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        let mut rest = out;
        while !rest.is_empty() {
            // The run of samples that are all on (or all off).
            let (on, run) = match &self.cadence {
                None => (true, rest.len()),
                Some(c) if c.repeat.is_some_and(|n| c.cycles >= n) => (false, rest.len()),
                Some(c) if c.pos < c.on => (true, (c.on - c.pos).min(rest.len() as u64) as usize),
                Some(c) => {
                    let left = (c.on + c.off).saturating_sub(c.pos).max(1);
                    (false, left.min(rest.len() as u64) as usize)
                }
            };
            let (chunk, tail) = rest.split_at_mut(run);
            if on {
                self.fill_on(chunk);
            } else {
                chunk.fill(0);
            }
            if let Some(c) = &mut self.cadence {
                c.pos += run as u64;
                if c.pos >= c.on + c.off {
                    c.pos = 0;
                    c.cycles = c.cycles.saturating_add(1);
                    // Each burst starts at phase zero, as a keyed generator.
                    for osc in &mut self.oscs {
                        osc.restart();
                    }
                }
            }
            rest = tail;
        }
        for osc in &mut self.oscs {
            osc.renormalize();
        }
    }

    fn fill_on(&mut self, out: &mut [i16]) {
        if self.count == 1 {
            let osc = &mut self.oscs[0];
            for s in out {
                *s = osc.next().round() as i16;
            }
        } else {
            let [a, b] = &mut self.oscs;
            for s in out {
                // `as` saturates a sum beyond the 16-bit range.
                *s = (a.next() + b.next()).round() as i16;
            }
        }
    }
}

/// DTMF low-group (row) level.
pub const DTMF_ROW_DBM0: f64 = -10.0;
/// DTMF high-group (column) level.
pub const DTMF_COL_DBM0: f64 = -8.0;

/// Test signals and measurements shared by the media tests.
#[cfg(test)]
pub(crate) mod test_signals {
    use std::f64::consts::PI;

    /// `len` samples of a sine at `freq` Hz, peak `amplitude`, phase 0.
    pub(crate) fn sine(freq: f64, rate: u32, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| (amplitude * (2.0 * PI * freq * n as f64 / rate as f64).sin()).round() as i16)
            .collect()
    }

    /// Peak amplitude of the component at `freq`: one DFT bin over the
    /// whole signal, Hann-windowed (little leakage from other components)
    /// and corrected for the window's gain.
    pub(crate) fn amplitude_at(signal: &[i16], freq: f64, rate: u32) -> f64 {
        let n = signal.len() as f64;
        let (mut re, mut im, mut wsum) = (0.0, 0.0, 0.0);
        for (i, &s) in signal.iter().enumerate() {
            let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
            let ph = 2.0 * PI * freq * i as f64 / rate as f64;
            re += w * s as f64 * ph.cos();
            im += w * s as f64 * ph.sin();
            wsum += w;
        }
        2.0 * (re * re + im * im).sqrt() / wsum
    }
}

#[cfg(test)]
mod tests {
    use super::test_signals::amplitude_at;
    use super::*;

    fn render(tone: &mut ToneGen, samples: usize, frame: usize) -> Vec<i16> {
        let mut out = vec![0i16; samples];
        for chunk in out.chunks_mut(frame) {
            tone.fill(chunk);
        }
        out
    }

    #[test]
    fn sine_has_its_frequency_and_level_at_every_rate() {
        for rate in [8000, 16_000, 48_000] {
            let mut g = ToneGen::sine(1000.0, rate).unwrap();
            let s = render(&mut g, rate as usize, rate as usize / 50);
            let a = amplitude_at(&s, 1000.0, rate);
            let expected = dbm0_to_peak(-10.0);
            assert!(
                (a / expected - 1.0).abs() < 0.001,
                "{rate}: {a} vs {expected}"
            );
            assert!(amplitude_at(&s, 1100.0, rate) < expected * 1e-3);
        }
    }

    #[test]
    fn zero_dbm0_is_3_17_db_below_ulaw_full_scale() {
        let full_scale_dbm0 = 20.0 * (32_636.0 / DBM0_PEAK).log10();
        assert!((full_scale_dbm0 - 3.17).abs() < 0.01);
    }

    #[test]
    fn phase_continues_across_fill_calls() {
        let mut whole = ToneGen::dtmf('5', 8000).unwrap();
        let mut split = ToneGen::dtmf('5', 8000).unwrap();
        let a = render(&mut whole, 1600, 1600);
        let b = render(&mut split, 1600, 7);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as i32 - y as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "frames differ by {worst}");
    }

    #[test]
    fn dtmf_digits_carry_their_q23_frequency_pairs() {
        for digit in "123A456B789C*0#D".chars() {
            let (row, col) = dtmf::dtmf_frequencies(digit).unwrap();
            let mut g = ToneGen::dtmf(digit, 8000).unwrap();
            let s = render(&mut g, 8000, 160);
            let r = amplitude_at(&s, row as f64, 8000);
            let c = amplitude_at(&s, col as f64, 8000);
            assert!(
                (r / dbm0_to_peak(DTMF_ROW_DBM0) - 1.0).abs() < 0.01,
                "{digit}"
            );
            assert!(
                (c / dbm0_to_peak(DTMF_COL_DBM0) - 1.0).abs() < 0.01,
                "{digit}"
            );
            for other in dtmf::DTMF_ROW_HZ.iter().chain(&dtmf::DTMF_COL_HZ) {
                if *other != row && *other != col {
                    assert!(
                        amplitude_at(&s, *other as f64, 8000) < 20.0,
                        "{digit} {other}"
                    );
                }
            }
        }
        assert_eq!(
            ToneGen::dtmf('x', 8000).unwrap_err(),
            ToneError::UnknownDigit('x')
        );
    }

    #[test]
    fn cadence_switches_on_and_off_at_the_right_samples() {
        let mut g = ToneGen::sine(1000.0, 8000).unwrap().with_cadence(Cadence {
            on_ms: 50,
            off_ms: 30,
            repeat: Some(2),
        });
        let s = render(&mut g, 2000, 160);
        let is_on = |range: std::ops::Range<usize>| s[range].iter().any(|&v| v != 0);
        assert!(is_on(0..400));
        // A 1 kHz sine at 8 kHz is not zero for long: check whole stretches.
        assert!(is_on(396..400));
        assert!(!is_on(400..640));
        assert!(is_on(640..1040));
        assert!(!is_on(1040..2000));
        assert!(g.is_done());
    }

    #[test]
    fn ringback_is_425_hz_one_second_on_four_off() {
        let mut g = ToneGen::ringback(16_000).unwrap();
        let s = render(&mut g, 16_000 * 11, 320);
        let seconds: Vec<&[i16]> = s.chunks(16_000).collect();
        let on: Vec<bool> = seconds.iter().map(|c| c.iter().any(|&v| v != 0)).collect();
        assert_eq!(
            on,
            [
                true, false, false, false, false, true, false, false, false, false, true
            ]
        );
        let a = amplitude_at(seconds[0], 425.0, 16_000);
        assert!((a / dbm0_to_peak(-10.0) - 1.0).abs() < 0.01);
        assert!(!g.is_done());
    }

    #[test]
    fn busy_is_425_hz_half_second_on_half_off() {
        let mut g = ToneGen::busy(48_000).unwrap();
        let s = render(&mut g, 48_000 * 2, 960);
        let halves: Vec<bool> = s
            .chunks(24_000)
            .map(|c| c.iter().any(|&v| v != 0))
            .collect();
        assert_eq!(halves, [true, false, true, false]);
        assert!(amplitude_at(&s[..24_000], 425.0, 48_000) > dbm0_to_peak(-10.5));
    }

    #[test]
    fn oscillator_stays_on_frequency_and_level_for_an_hour() {
        // One hour at 8 kHz in 20 ms frames: no amplitude or phase drift.
        let mut g = ToneGen::sine(1000.0, 8000).unwrap();
        let mut frame = [0i16; 160];
        for _ in 0..(3600 * 50) {
            g.fill(&mut frame);
        }
        let s = render(&mut g, 8000, 160);
        let a = amplitude_at(&s, 1000.0, 8000);
        assert!((a / dbm0_to_peak(-10.0) - 1.0).abs() < 0.001);
        // 1 kHz at 8 kHz repeats every 8 samples: phase is still exact.
        let fresh = render(&mut ToneGen::sine(1000.0, 8000).unwrap(), 8, 8);
        for (x, y) in s[..8].iter().zip(&fresh) {
            assert!((*x as i32 - *y as i32).abs() <= 2, "{x} vs {y}");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            ToneGen::sine(1000.0, 44_100).unwrap_err(),
            ToneError::UnsupportedRate(44_100)
        );
        assert!(matches!(
            ToneGen::sine(4000.0, 8000),
            Err(ToneError::FrequencyOutOfRange { .. })
        ));
        assert!(matches!(
            ToneGen::sine(f64::NAN, 8000),
            Err(ToneError::FrequencyOutOfRange { .. })
        ));
        assert_eq!(
            ToneGen::new(8000, &[]).unwrap_err(),
            ToneError::FrequencyCount(0)
        );
    }

    #[test]
    fn loud_dual_tone_saturates_instead_of_wrapping() {
        let mut g = ToneGen::new(
            8000,
            &[
                Tone {
                    freq_hz: 500.0,
                    level: Level::Linear(30_000.0),
                },
                Tone {
                    freq_hz: 1000.0,
                    level: Level::Linear(30_000.0),
                },
            ],
        )
        .unwrap();
        let s = render(&mut g, 800, 160);
        assert!(s.contains(&i16::MAX) || s.contains(&i16::MIN));
        // No wrap: consecutive samples never jump by more than the slope.
        for w in s.windows(2) {
            assert!((w[0] as i32 - w[1] as i32).abs() < 40_000);
        }
    }
}
