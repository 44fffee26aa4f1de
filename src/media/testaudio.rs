//! Test audio: sine tones and a Goertzel level meter (tests only).

/// `n` samples of an 8 kHz sine at `hz`, amplitude 8000, from sample
/// `phase0` of it.
pub fn tone(hz: f64, n: usize, phase0: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (phase0 + i) as f64 / 8000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

/// The amplitude of `hz` in `x` (8 kHz): about A for a sine of amplitude A
/// filling `x`.
pub fn goertzel(x: &[i16], hz: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt() / x.len() as f64 * 2.0
}
