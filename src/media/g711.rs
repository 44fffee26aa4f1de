//! G.711 companding: µ-law and A-law (ITU-T G.711 (11/88), §2 tables 1a/1b
//! and 2a/2b; RTP payload types 0 `PCMU` and 8 `PCMA` of RFC 3551 §4.5.14).
//!
//! Owns the sample-level conversion between 16-bit linear PCM and the 8-bit
//! companded codes, and nothing else: no framing, no clock. Decoding goes
//! through 256-entry tables built at compile time; encoding finds the segment
//! with one `leading_zeros`, so both are branch-light and allocation-free.
//!
//! Linear values are 16-bit: G.711 works on 14-bit (µ-law) and 13-bit
//! (A-law) magnitudes, which this module scales by 4 and 8. The decoded
//! extremes are therefore ±32 124 (µ-law) and ±32 256 (A-law), and the
//! encoders agree bit for bit with the classic reference implementation
//! (truncating the low 2 / 3 bits, then quantizing).
//!
//! Driven per packet: [`G711::decode`] on a received payload, [`G711::encode`]
//! on 20 ms of PCM before sending; the single-sample forms serve the mixer.

/// µ-law: bias added to the 14-bit magnitude before segment search (§2, Table 2a).
const ULAW_BIAS: i32 = 0x84;
/// µ-law: largest 16-bit magnitude that still encodes without saturation.
const ULAW_CLIP: i32 = 32_635;

/// µ-law code of linear 0 (positive zero).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code of linear 0 (the smallest positive step, even bits inverted).
pub const ALAW_SILENCE: u8 = 0xD5;

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = ((mantissa << 3) + ULAW_BIAS) << exponent;
    let value = magnitude - ULAW_BIAS;
    if u & 0x80 != 0 {
        -value as i16
    } else {
        value as i16
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    table
}

/// µ-law code → 16-bit linear.
static ULAW_DECODE: [i16; 256] = build_table(false);
/// A-law code → 16-bit linear.
static ALAW_DECODE: [i16; 256] = build_table(true);

/// Encodes one 16-bit linear sample to µ-law.
#[inline]
pub fn ulaw_encode(s: i16) -> u8 {
    // Work on the 14-bit value the standard quantizes (arithmetic shift, so
    // -1..=-4 become -1: magnitude 1, as in the reference coder).
    let pcm = (s as i32) >> 2;
    let (magnitude, mask) = if pcm < 0 { (-pcm, 0x7F) } else { (pcm, 0xFF) };
    let biased = magnitude.min(ULAW_CLIP >> 2) + (ULAW_BIAS >> 2);
    // `biased` is in 33..=8192: segment = position of its top bit - 5,
    // saturating at segment 7 (the clip value lands exactly on 8192).
    let top_bit = 31 - biased.leading_zeros() as i32;
    let code = if top_bit >= 13 {
        0x7F
    } else {
        let segment = (top_bit - 5).max(0);
        (segment << 4) | ((biased >> (segment + 1)) & 0x0F)
    };
    (code ^ mask) as u8
}

/// Decodes one µ-law code to 16-bit linear.
#[inline]
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_DECODE[b as usize]
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn alaw_encode(s: i16) -> u8 {
    let pcm = (s as i32) >> 3;
    let (magnitude, mask) = if pcm >= 0 {
        (pcm, 0xD5)
    } else {
        (-pcm - 1, 0x55)
    };
    // `magnitude` is in 0..=4095: segment 0 covers 0..=31, then one segment
    // per doubling up to 7 (2048..=4095). Segments 0 and 1 share step 2.
    let top_bit = 31 - (magnitude | 1).leading_zeros() as i32;
    let segment = (top_bit - 4).max(0);
    let shift = segment.max(1);
    let code = (segment << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

/// Decodes one A-law code to 16-bit linear.
#[inline]
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_DECODE[b as usize]
}

/// Decodes µ-law codes into `dst`; processes `min(src.len(), dst.len())`.
pub fn decode_ulaw(src: &[u8], dst: &mut [i16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = ULAW_DECODE[s as usize];
    }
}

/// Decodes A-law codes into `dst`; processes `min(src.len(), dst.len())`.
pub fn decode_alaw(src: &[u8], dst: &mut [i16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = ALAW_DECODE[s as usize];
    }
}

/// Encodes linear samples to µ-law; processes `min(src.len(), dst.len())`.
pub fn encode_ulaw(src: &[i16], dst: &mut [u8]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = ulaw_encode(s);
    }
}

/// Encodes linear samples to A-law; processes `min(src.len(), dst.len())`.
pub fn encode_alaw(src: &[i16], dst: &mut [u8]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = alaw_encode(s);
    }
}

/// Which G.711 law a stream uses (RFC 3551 §4.5.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, `PCMU`, static payload type 0.
    Ulaw,
    /// A-law, `PCMA`, static payload type 8.
    Alaw,
}

impl G711 {
    /// Decodes `min(src.len(), dst.len())` codes.
    pub fn decode(&self, src: &[u8], dst: &mut [i16]) {
        match self {
            G711::Ulaw => decode_ulaw(src, dst),
            G711::Alaw => decode_alaw(src, dst),
        }
    }

    /// Encodes `min(src.len(), dst.len())` samples.
    pub fn encode(&self, src: &[i16], dst: &mut [u8]) {
        match self {
            G711::Ulaw => encode_ulaw(src, dst),
            G711::Alaw => encode_alaw(src, dst),
        }
    }

    /// Decodes one code.
    #[inline]
    pub fn decode_sample(&self, b: u8) -> i16 {
        match self {
            G711::Ulaw => ulaw_decode(b),
            G711::Alaw => alaw_decode(b),
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode_sample(&self, s: i16) -> u8 {
        match self {
            G711::Ulaw => ulaw_encode(s),
            G711::Alaw => alaw_encode(s),
        }
    }

    /// The static RTP payload type (RFC 3551 Table 4).
    pub fn payload_type(&self) -> u8 {
        match self {
            G711::Ulaw => 0,
            G711::Alaw => 8,
        }
    }

    /// The SDP `rtpmap` encoding name (RFC 3551 Table 4).
    pub fn encoding_name(&self) -> &'static str {
        match self {
            G711::Ulaw => "PCMU",
            G711::Alaw => "PCMA",
        }
    }

    /// The law for a static payload type (0 or 8).
    pub fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Ulaw),
            8 => Some(G711::Alaw),
            _ => None,
        }
    }

    /// The code of linear silence: fill for comfort or gaps.
    pub fn silence(&self) -> u8 {
        match self {
            G711::Ulaw => ULAW_SILENCE,
            G711::Alaw => ALAW_SILENCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference coders (segment search by table, as in the original
    /// CCITT-derived C code) to check the fast encoders bit for bit.
    fn ulaw_encode_reference(s: i16) -> u8 {
        const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
        let mut pcm = (s as i32) >> 2;
        let mask = if pcm < 0 {
            pcm = -pcm;
            0x7F
        } else {
            0xFF
        };
        pcm = pcm.min(8159) + 33;
        let seg = SEG_END.iter().position(|&e| pcm <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        (((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask) as u8
    }

    fn alaw_encode_reference(s: i16) -> u8 {
        const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
        let mut pcm = (s as i32) >> 3;
        let mask = if pcm >= 0 {
            0xD5
        } else {
            pcm = -pcm - 1;
            0x55
        };
        let seg = SEG_END.iter().position(|&e| pcm <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let q = if seg < 2 { pcm >> 1 } else { pcm >> seg };
        (((seg << 4) | (q & 0xF)) ^ mask) as u8
    }

    #[test]
    fn ulaw_encoder_matches_reference_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(s), ulaw_encode_reference(s), "sample {s}");
        }
    }

    #[test]
    fn alaw_encoder_matches_reference_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(alaw_encode(s), alaw_encode_reference(s), "sample {s}");
        }
    }

    #[test]
    fn ulaw_decode_matches_g711_table_2_values() {
        // Code → value (G.711 Table 2a decision/output values × 4).
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x80), 32_124);
        assert_eq!(ulaw_decode(0x00), -32_124);
        // Segment boundaries: 0xF0 is the top of segment 0 (step 8).
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_decode(0xEF), 132);
    }

    #[test]
    fn alaw_decode_matches_g711_table_1_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        // First step of segment 1 (code 0x10 before inversion → 0x45).
        assert_eq!(alaw_decode(0x10 ^ 0xD5), 264);
    }

    #[test]
    fn encoding_zero_gives_the_silence_codes() {
        assert_eq!(ulaw_encode(0), G711::Ulaw.silence());
        assert_eq!(alaw_encode(0), G711::Alaw.silence());
        assert_eq!(G711::Ulaw.decode_sample(G711::Ulaw.silence()), 0);
        assert_eq!(G711::Alaw.decode_sample(G711::Alaw.silence()), 8);
    }

    #[test]
    fn decode_then_encode_returns_the_same_code() {
        for b in 0..=255u8 {
            // µ-law negative zero (0x7F) decodes to 0, which encodes as +0.
            let expected = if b == 0x7F { 0xFF } else { b };
            assert_eq!(ulaw_encode(ulaw_decode(b)), expected, "µ-law {b:#04x}");
            assert_eq!(alaw_encode(alaw_decode(b)), b, "A-law {b:#04x}");
        }
    }

    /// The error of decode(encode(s)) is at most half the quantization step
    /// of the segment `s` falls in (G.711 Tables 1/2: µ-law steps 2·2^seg,
    /// A-law 2·2^max(seg−1, 0) in the 14/13-bit domain), plus the low bits
    /// the standard truncates first (2 for µ-law, 3 for A-law) and the
    /// floor of negative values by that shift.
    fn assert_within_half_step(law: G711, s: i16) {
        let code = law.encode_sample(s);
        let decoded = law.decode_sample(code) as i32;
        let error = (decoded - s as i32).abs();
        let (step, slack) = match law {
            G711::Ulaw => (8 << ((!code >> 4) & 7), 4),
            G711::Alaw => (16 << (((code ^ 0x55) >> 4) & 7).saturating_sub(1), 8),
        };
        assert!(
            error <= step / 2 + slack,
            "{law:?} sample {s}: code {code:#04x} decodes to {decoded}, error {error}, step {step}"
        );
    }

    #[test]
    fn ulaw_round_trip_is_within_quantization_step() {
        // Beyond ±32 635 µ-law saturates at ±32 124.
        for s in -32_635..=32_635 {
            assert_within_half_step(G711::Ulaw, s);
        }
    }

    #[test]
    fn alaw_round_trip_is_within_quantization_step() {
        for s in i16::MIN..=i16::MAX {
            assert_within_half_step(G711::Alaw, s);
        }
    }

    #[test]
    fn slice_forms_process_the_shorter_length() {
        let pcm = [0i16, 1000, -1000, 32_767, -32_768];
        let mut codes = [0u8; 3];
        G711::Ulaw.encode(&pcm, &mut codes);
        assert_eq!(codes, [0xFF, ulaw_encode(1000), ulaw_encode(-1000)]);
        let mut out = [7i16; 5];
        G711::Alaw.decode(&[0xD5, 0x55], &mut out);
        assert_eq!(out, [8, -8, 7, 7, 7]);
        let mut a = [0u8; 5];
        encode_alaw(&pcm, &mut a);
        let mut back = [0i16; 5];
        decode_alaw(&a, &mut back);
        assert_eq!(back[3], 32_256);
        assert_eq!(back[4], -32_256);
        let mut u = [0u8; 5];
        encode_ulaw(&pcm, &mut u);
        decode_ulaw(&u, &mut back);
        assert_eq!(back[3], 32_124);
        assert_eq!(back[4], -32_124);
    }

    #[test]
    fn payload_types_and_names_follow_rfc_3551() {
        assert_eq!(G711::Ulaw.payload_type(), 0);
        assert_eq!(G711::Alaw.payload_type(), 8);
        assert_eq!(G711::Ulaw.encoding_name(), "PCMU");
        assert_eq!(G711::Alaw.encoding_name(), "PCMA");
        assert_eq!(G711::from_payload_type(8), Some(G711::Alaw));
        assert_eq!(G711::from_payload_type(0), Some(G711::Ulaw));
        assert_eq!(G711::from_payload_type(9), None);
    }
}
