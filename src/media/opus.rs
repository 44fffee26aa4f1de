//! Opus (RFC 6716) through the system libopus (`audiopus`), and the RTP/SDP
//! side of it (RFC 7587).
//!
//! Owns one libopus encoder or decoder per stream direction, set up for
//! voice: `OPUS_APPLICATION_VOIP`, mono (stereo accepted), 20 ms frames,
//! DTX off, in-band FEC off until asked for. The internal sample rate is
//! 8, 16 or 48 kHz, whatever the RTP clock says: RFC 7587 §4.1 fixes the RTP
//! timestamp rate at 48 000 and §7 writes the rtpmap as `opus/48000/2` in
//! every case ([`RTPMAP`], [`RTP_CLOCK`]); the bandwidth actually used is
//! negotiated with the fmtp parameters of §6.1 ([`OpusFmtp`]).
//!
//! Driven per packet: [`OpusEncoder::encode`] one 20 ms frame before
//! sending, [`OpusDecoder::decode`] each received packet, `decode(None, ..)`
//! for a lost one (libopus packet-loss concealment), or
//! [`OpusDecoder::decode_fec`] with the packet after a loss to rebuild the
//! lost frame from its in-band FEC (RFC 6716 §2.1.7, LBRR). No allocation
//! after construction, except [`OpusFmtp::to_fmtp`] (setup time).

use audiopus::coder::{Decoder, Encoder, GenericCtl};
use audiopus::{Application, Bitrate, Channels, SampleRate};
use thiserror::Error;

/// The SDP rtpmap encoding for Opus: always 48 kHz, 2 channels (RFC 7587 §7).
pub const RTPMAP: &str = "opus/48000/2";
/// RTP timestamp units per second for Opus (RFC 7587 §4.1).
pub const RTP_CLOCK: u32 = 48_000;
/// Largest Opus packet we produce or expect for one 20 ms frame: the
/// RFC 6716 §3.2.1 bound on one frame's size.
pub const MAX_PACKET: usize = 1275;
/// Frame duration the media plane uses.
pub const FRAME_MS: u32 = 20;

/// Why an Opus operation failed.
#[derive(Debug, Error)]
pub enum OpusError {
    /// Not one of the internal rates the media plane uses.
    #[error("unsupported Opus sample rate {0} Hz: use 8000, 16000 or 48000")]
    UnsupportedRate(u32),
    /// Opus streams here are mono or stereo.
    #[error("unsupported Opus channel count {0}: use 1 or 2")]
    UnsupportedChannels(u16),
    /// The PCM buffer is not one Opus frame (2.5, 5, 10, 20, 40 or 60 ms).
    #[error("{samples} samples is not one Opus frame at {rate} Hz x {channels} channel(s)")]
    FrameSize {
        /// Samples given (all channels).
        samples: usize,
        /// Encoder rate.
        rate: u32,
        /// Encoder channels.
        channels: u16,
    },
    /// libopus refused (bad packet, buffer too small, ...).
    #[error("libopus: {0}")]
    Codec(#[from] audiopus::Error),
}

fn sample_rate(rate: u32) -> Result<SampleRate, OpusError> {
    match rate {
        8000 => Ok(SampleRate::Hz8000),
        16_000 => Ok(SampleRate::Hz16000),
        48_000 => Ok(SampleRate::Hz48000),
        _ => Err(OpusError::UnsupportedRate(rate)),
    }
}

fn channel_count(channels: u16) -> Result<Channels, OpusError> {
    match channels {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(OpusError::UnsupportedChannels(channels)),
    }
}

/// Samples (all channels) in one [`FRAME_MS`] frame.
pub fn frame_samples(rate: u32, channels: u16) -> usize {
    (rate / 1000 * FRAME_MS) as usize * channels as usize
}

/// The internal rate to use for a peer's `maxplaybackrate` or our capture
/// limit: the highest of 8/16/48 kHz not above it (at least 8 kHz).
pub fn internal_rate_for(max_hz: u32) -> u32 {
    match max_hz {
        0..=15_999 => 8000,
        16_000..=47_999 => 16_000,
        _ => 48_000,
    }
}

/// One direction's encoder (see the module doc).
#[derive(Debug)]
pub struct OpusEncoder {
    inner: Encoder,
    rate: u32,
    channels: u16,
    fec: bool,
    expected_loss: u8,
}

impl OpusEncoder {
    /// Expected loss assumed when FEC is turned on without a figure: libopus
    /// adds no FEC at 0 %.
    pub const DEFAULT_FEC_LOSS_PERCENT: u8 = 10;

    /// A VoIP encoder at `rate` (8 000, 16 000 or 48 000 Hz), DTX and FEC
    /// off, bitrate chosen by libopus until [`OpusEncoder::set_bitrate`].
    pub fn new(rate: u32, channels: u16) -> Result<OpusEncoder, OpusError> {
        let mut inner = Encoder::new(
            sample_rate(rate)?,
            channel_count(channels)?,
            Application::Voip,
        )?;
        inner.set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, 0)?;
        inner.set_inband_fec(false)?;
        Ok(OpusEncoder {
            inner,
            rate,
            channels,
            fec: false,
            expected_loss: 0,
        })
    }

    /// Internal sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Channels.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Target bitrate in bit/s (libopus accepts 500..=512 000).
    pub fn set_bitrate(&mut self, bits_per_second: u32) -> Result<(), OpusError> {
        let bps = bits_per_second.min(i32::MAX as u32) as i32;
        self.inner.set_bitrate(Bitrate::BitsPerSecond(bps))?;
        Ok(())
    }

    /// The bitrate libopus is aiming at, in bit/s.
    pub fn bitrate(&self) -> Result<u32, OpusError> {
        Ok(match self.inner.bitrate()? {
            Bitrate::BitsPerSecond(b) => b.max(0) as u32,
            Bitrate::Max | Bitrate::Auto => 0,
        })
    }

    /// In-band FEC (LBRR) on or off. Turning it on with no expected loss set
    /// assumes [`OpusEncoder::DEFAULT_FEC_LOSS_PERCENT`]: libopus only spends
    /// bits on FEC for a non-zero expected loss.
    pub fn set_fec(&mut self, enabled: bool) -> Result<(), OpusError> {
        self.inner.set_inband_fec(enabled)?;
        self.fec = enabled;
        if enabled && self.expected_loss == 0 {
            self.set_expected_loss(Self::DEFAULT_FEC_LOSS_PERCENT)?;
        }
        Ok(())
    }

    /// Whether in-band FEC is on.
    pub fn fec(&self) -> bool {
        self.fec
    }

    /// The packet loss libopus should plan for, in percent (0..=100), e.g.
    /// from RTCP receiver reports.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), OpusError> {
        let percent = percent.min(100);
        self.inner.set_packet_loss_perc(percent)?;
        self.expected_loss = percent;
        Ok(())
    }

    /// Discontinuous transmission (RFC 7587 `usedtx`): off by default.
    pub fn set_dtx(&mut self, enabled: bool) -> Result<(), OpusError> {
        self.inner
            .set_encoder_ctl_request(audiopus::ffi::OPUS_SET_DTX_REQUEST, i32::from(enabled))?;
        Ok(())
    }

    /// Encoder effort, 0..=10 (libopus default 10). SILK at 8/16 kHz costs
    /// about three times the CPU of 48 kHz at the default: lower it to carry
    /// more calls per core at a small loss of quality.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), OpusError> {
        self.inner.set_complexity(complexity)?;
        Ok(())
    }

    /// Encoder lookahead in samples at the internal rate: decoded audio
    /// lags the input by this much.
    pub fn lookahead(&self) -> Result<usize, OpusError> {
        Ok(self.inner.lookahead()? as usize)
    }

    /// Encodes one frame (`pcm` interleaved if stereo; 20 ms is
    /// [`frame_samples`]) into `out` (room for [`MAX_PACKET`] is always
    /// enough) and returns the packet's length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        let per_channel = pcm.len() / self.channels as usize;
        // Opus frames last k × 2.5 ms, k in {1, 2, 4, 8, 16, 24}: k·rate/400
        // samples per channel.
        let valid = pcm.len().is_multiple_of(self.channels as usize)
            && [1usize, 2, 4, 8, 16, 24]
                .iter()
                .any(|&k| per_channel * 400 == k * self.rate as usize);
        if !valid {
            return Err(OpusError::FrameSize {
                samples: pcm.len(),
                rate: self.rate,
                channels: self.channels,
            });
        }
        Ok(self.inner.encode(pcm, out)?)
    }

    /// Clears the encoder's history (new stream).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.inner.reset_state()?;
        Ok(())
    }
}

/// One direction's decoder (see the module doc).
#[derive(Debug)]
pub struct OpusDecoder {
    inner: Decoder,
    rate: u32,
    channels: u16,
}

impl OpusDecoder {
    /// A decoder producing `rate` (8 000, 16 000 or 48 000 Hz) audio, whatever
    /// rate the sender encoded at.
    pub fn new(rate: u32, channels: u16) -> Result<OpusDecoder, OpusError> {
        let inner = Decoder::new(sample_rate(rate)?, channel_count(channels)?)?;
        Ok(OpusDecoder {
            inner,
            rate,
            channels,
        })
    }

    /// Output sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Channels.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Decodes one packet into `out` and returns the samples per channel
    /// written. `None` (or an empty payload) is a lost packet: libopus
    /// conceals it, filling `out.len() / channels` samples per channel,
    /// which must be a multiple of 2.5 ms (a 20 ms frame, normally).
    /// `out` needs room for the packet's duration (120 ms at most).
    pub fn decode(&mut self, packet: Option<&[u8]>, out: &mut [i16]) -> Result<usize, OpusError> {
        let packet = packet.filter(|p| !p.is_empty());
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Rebuilds a lost frame from the in-band FEC carried by the packet that
    /// follows it. `out` must hold exactly the lost frame's duration (20 ms
    /// normally). Without FEC data in `next_packet`, libopus conceals the
    /// frame as for `decode(None, ..)`. Decode `next_packet` itself
    /// afterwards, as usual.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if next_packet.is_empty() {
            return self.decode(None, out);
        }
        Ok(self.inner.decode(Some(next_packet), out, true)?)
    }

    /// Clears the decoder's history (new stream).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.inner.reset_state()?;
        Ok(())
    }
}

/// The Opus fmtp parameters of RFC 7587 §6.1 that matter here, with its
/// defaults ([`Default`]). Unknown parameters are ignored, as are values
/// that do not parse (the default stays); rates and bitrates are clamped to
/// the ranges §6.1 gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFmtp {
    /// Highest rate the receiver will play, Hz (default 48 000).
    pub maxplaybackrate: u32,
    /// Highest rate the sender captures at, Hz (default 48 000).
    pub sprop_maxcapturerate: u32,
    /// Receiver prefers stereo (default false).
    pub stereo: bool,
    /// Sender is likely to send stereo (default false).
    pub sprop_stereo: bool,
    /// Receiver can use in-band FEC (default false).
    pub useinbandfec: bool,
    /// Receiver prefers DTX (default false).
    pub usedtx: bool,
    /// Receiver prefers constant bitrate (default false).
    pub cbr: bool,
    /// Receiver's maximum average bitrate, bit/s (6 000..=510 000; default
    /// none).
    pub maxaveragebitrate: Option<u32>,
    /// Packet duration preferred, ms (normally its own `a=ptime` line).
    pub ptime: Option<u32>,
    /// Longest packet duration accepted, ms (normally `a=maxptime`).
    pub maxptime: Option<u32>,
    /// Shortest packet duration wanted, ms (`minptime`, common in offers).
    pub minptime: Option<u32>,
}

impl Default for OpusFmtp {
    fn default() -> Self {
        OpusFmtp {
            maxplaybackrate: 48_000,
            sprop_maxcapturerate: 48_000,
            stereo: false,
            sprop_stereo: false,
            useinbandfec: false,
            usedtx: false,
            cbr: false,
            maxaveragebitrate: None,
            ptime: None,
            maxptime: None,
            minptime: None,
        }
    }
}

impl OpusFmtp {
    /// Parses an fmtp value: `minptime=10;useinbandfec=1`, optionally
    /// preceded by `a=fmtp:<pt> ` or `<pt> `. Never fails: what it cannot
    /// read keeps its RFC 7587 default.
    pub fn parse(line: &str) -> OpusFmtp {
        let mut rest = line.trim();
        rest = rest.strip_prefix("a=").unwrap_or(rest);
        rest = rest.strip_prefix("fmtp:").unwrap_or(rest);
        // A leading payload type ("111 ") is not a parameter.
        if let Some((pt, params)) = rest.split_once(char::is_whitespace)
            && !pt.is_empty()
            && pt.bytes().all(|b| b.is_ascii_digit())
        {
            rest = params;
        }
        let mut fmtp = OpusFmtp::default();
        for param in rest.split(';') {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim();
            let number = value.parse::<u32>().ok();
            let flag = match value {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            };
            let rate = number.filter(|&n| n > 0).map(|n| n.clamp(8000, 48_000));
            let ms = number.filter(|&n| n > 0);
            let key = key.to_ascii_lowercase();
            match key.as_str() {
                "maxplaybackrate" => set(&mut fmtp.maxplaybackrate, rate),
                "sprop-maxcapturerate" => set(&mut fmtp.sprop_maxcapturerate, rate),
                "stereo" => set(&mut fmtp.stereo, flag),
                "sprop-stereo" => set(&mut fmtp.sprop_stereo, flag),
                "useinbandfec" => set(&mut fmtp.useinbandfec, flag),
                "usedtx" => set(&mut fmtp.usedtx, flag),
                "cbr" => set(&mut fmtp.cbr, flag),
                "maxaveragebitrate" => {
                    if let Some(n) = number {
                        fmtp.maxaveragebitrate = Some(n.clamp(6000, 510_000));
                    }
                }
                "ptime" => fmtp.ptime = ms.or(fmtp.ptime),
                "maxptime" => fmtp.maxptime = ms.or(fmtp.maxptime),
                "minptime" => fmtp.minptime = ms.or(fmtp.minptime),
                _ => {}
            }
        }
        fmtp
    }

    /// The fmtp value listing every parameter that differs from its
    /// default, in a fixed order (`""` when all are default: then no
    /// `a=fmtp` line is needed). Setup-time only: allocates.
    pub fn to_fmtp(&self) -> String {
        let d = OpusFmtp::default();
        let mut parts: Vec<String> = Vec::new();
        if let Some(v) = self.minptime {
            parts.push(format!("minptime={v}"));
        }
        if self.maxplaybackrate != d.maxplaybackrate {
            parts.push(format!("maxplaybackrate={}", self.maxplaybackrate));
        }
        if self.sprop_maxcapturerate != d.sprop_maxcapturerate {
            parts.push(format!(
                "sprop-maxcapturerate={}",
                self.sprop_maxcapturerate
            ));
        }
        if let Some(v) = self.maxaveragebitrate {
            parts.push(format!("maxaveragebitrate={v}"));
        }
        for (name, value, default) in [
            ("stereo", self.stereo, d.stereo),
            ("sprop-stereo", self.sprop_stereo, d.sprop_stereo),
            ("cbr", self.cbr, d.cbr),
            ("useinbandfec", self.useinbandfec, d.useinbandfec),
            ("usedtx", self.usedtx, d.usedtx),
        ] {
            if value != default {
                parts.push(format!("{name}={}", u8::from(value)));
            }
        }
        if let Some(v) = self.ptime {
            parts.push(format!("ptime={v}"));
        }
        if let Some(v) = self.maxptime {
            parts.push(format!("maxptime={v}"));
        }
        parts.join(";")
    }

    /// The internal rate to encode at for this receiver (its
    /// `maxplaybackrate`, rounded down to 8/16/48 kHz).
    pub fn send_rate(&self) -> u32 {
        internal_rate_for(self.maxplaybackrate)
    }

    /// The internal rate worth decoding at for this sender (its
    /// `sprop-maxcapturerate`, rounded down to 8/16/48 kHz).
    pub fn receive_rate(&self) -> u32 {
        internal_rate_for(self.sprop_maxcapturerate)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::test_signals::{amplitude_at, sine};

    /// Encodes and decodes `input` in 20 ms frames; returns the output.
    fn round_trip(enc: &mut OpusEncoder, dec: &mut OpusDecoder, input: &[i16]) -> Vec<i16> {
        let frame = frame_samples(enc.rate(), 1);
        let mut packet = [0u8; MAX_PACKET];
        let mut out = vec![0i16; frame_samples(dec.rate(), 1)];
        let mut decoded = Vec::new();
        for chunk in input.chunks_exact(frame) {
            let len = enc.encode(chunk, &mut packet).unwrap();
            let n = dec.decode(Some(&packet[..len]), &mut out).unwrap();
            decoded.extend_from_slice(&out[..n]);
        }
        decoded
    }

    fn assert_1khz_dominates(decoded: &[i16], rate: u32, amplitude: f64) {
        let a = amplitude_at(decoded, 1000.0, rate);
        let level_db = 20.0 * (a / amplitude).log10();
        assert!(level_db.abs() < 3.0, "1 kHz at {level_db:.1} dB");
        for other in [300.0, 700.0, 1300.0, 2000.0, 3000.0] {
            let o = amplitude_at(decoded, other, rate);
            assert!(
                20.0 * (a / o).log10() > 30.0,
                "{other} Hz only {:.1} dB below 1 kHz",
                20.0 * (a / o).log10()
            );
        }
    }

    /// One second of a 1 kHz sine encoded at `enc_rate`, decoded at
    /// `dec_rate`: the output has the right length and, past the encoder's
    /// lookahead and start-up (10 frames), the tone's level and purity.
    fn assert_sine_survives(enc_rate: u32, dec_rate: u32) {
        let mut enc = OpusEncoder::new(enc_rate, 1).unwrap();
        let mut dec = OpusDecoder::new(dec_rate, 1).unwrap();
        let input = sine(1000.0, enc_rate, 8000.0, enc_rate as usize);
        let out = round_trip(&mut enc, &mut dec, &input);
        assert_eq!(out.len(), dec_rate as usize);
        let lookahead = enc.lookahead().unwrap() * (dec_rate / enc_rate).max(1) as usize;
        let skip = lookahead + 10 * frame_samples(dec_rate, 1);
        assert_1khz_dominates(&out[skip..], dec_rate, 8000.0);
    }

    #[test]
    fn sine_at_1khz_keeps_its_frequency_at_48k() {
        assert_sine_survives(48_000, 48_000);
    }

    #[test]
    fn sine_at_1khz_keeps_its_frequency_at_8k() {
        assert_sine_survives(8000, 8000);
    }

    #[test]
    fn decoder_rate_is_independent_of_encoder_rate() {
        // A 16 kHz sender decoded for the 48 kHz mixer, and the reverse.
        assert_sine_survives(16_000, 48_000);
        assert_sine_survives(48_000, 8000);
    }

    #[test]
    fn lost_packet_is_concealed_with_a_full_frame() {
        let mut enc = OpusEncoder::new(48_000, 1).unwrap();
        let mut dec = OpusDecoder::new(48_000, 1).unwrap();
        round_trip(&mut enc, &mut dec, &sine(1000.0, 48_000, 8000.0, 9600));
        let mut out = [0i16; 960];
        assert_eq!(dec.decode(None, &mut out).unwrap(), 960);
        // The concealment continues the tone rather than going silent.
        assert!(amplitude_at(&out, 1000.0, 48_000) > 1000.0);
        assert_eq!(dec.decode(Some(&[]), &mut out).unwrap(), 960);
        let mut short = [0i16; 160];
        let mut dec8 = OpusDecoder::new(8000, 1).unwrap();
        assert_eq!(dec8.decode(None, &mut short).unwrap(), 160);
    }

    #[test]
    fn fec_rebuilds_a_lost_frame_better_than_concealment() {
        // A gliding tone: concealment extrapolates the old pitch, FEC knows.
        let rate = 16_000;
        let frame = frame_samples(rate, 1);
        let mut phase = 0.0f64;
        let input: Vec<i16> = (0..rate as usize * 2)
            .map(|n| {
                let f = 300.0 + 900.0 * n as f64 / (rate as f64 * 2.0);
                phase += 2.0 * std::f64::consts::PI * f / rate as f64;
                (8000.0 * phase.sin()) as i16
            })
            .collect();
        let mut enc = OpusEncoder::new(rate, 1).unwrap();
        enc.set_bitrate(24_000).unwrap();
        enc.set_fec(true).unwrap();
        assert!(enc.fec());
        let mut packets = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        for chunk in input.chunks_exact(frame) {
            let len = enc.encode(chunk, &mut buf).unwrap();
            packets.push(buf[..len].to_vec());
        }
        let lost = 60;
        let decode_with = |fec: bool| {
            let mut dec = OpusDecoder::new(rate, 1).unwrap();
            let mut out = vec![0i16; frame];
            let mut all = Vec::new();
            for (i, p) in packets.iter().enumerate().take(lost + 2) {
                if i == lost {
                    let n = if fec {
                        dec.decode_fec(&packets[lost + 1], &mut out).unwrap()
                    } else {
                        dec.decode(None, &mut out).unwrap()
                    };
                    assert_eq!(n, frame);
                } else {
                    dec.decode(Some(p), &mut out).unwrap();
                }
                all.extend_from_slice(&out);
            }
            all
        };
        // Compare against the lossless decode of the same frame.
        let mut clean_dec = OpusDecoder::new(rate, 1).unwrap();
        let mut clean = Vec::new();
        let mut out = vec![0i16; frame];
        for p in packets.iter().take(lost + 2) {
            clean_dec.decode(Some(p), &mut out).unwrap();
            clean.extend_from_slice(&out);
        }
        let error = |x: &[i16]| -> f64 {
            let range = lost * frame..(lost + 1) * frame;
            x[range.clone()]
                .iter()
                .zip(&clean[range])
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum()
        };
        let (with_fec, with_plc) = (error(&decode_with(true)), error(&decode_with(false)));
        assert!(
            with_fec < with_plc / 2.0,
            "FEC error {with_fec:.3e} vs PLC {with_plc:.3e}"
        );
    }

    #[test]
    fn bitrate_setting_sizes_the_packets() {
        let input = sine(700.0, 16_000, 6000.0, 16_000);
        let mut sizes = Vec::new();
        for bitrate in [12_000u32, 48_000] {
            let mut enc = OpusEncoder::new(16_000, 1).unwrap();
            enc.set_bitrate(bitrate).unwrap();
            assert_eq!(enc.bitrate().unwrap(), bitrate);
            let mut buf = [0u8; MAX_PACKET];
            let total: usize = input
                .chunks_exact(320)
                .map(|c| enc.encode(c, &mut buf).unwrap())
                .sum();
            let kbps = total as f64 * 8.0 / 1000.0; // one second of audio
            sizes.push(kbps);
        }
        assert!(sizes[0] < 16.0, "{sizes:?}");
        assert!(sizes[1] > 30.0, "{sizes:?}");
    }

    #[test]
    fn complexity_is_bounded_to_libopus_range() {
        let mut enc = OpusEncoder::new(8000, 1).unwrap();
        enc.set_complexity(3).unwrap();
        assert!(matches!(enc.set_complexity(11), Err(OpusError::Codec(_))));
        let mut buf = [0u8; MAX_PACKET];
        assert!(
            enc.encode(&sine(500.0, 8000, 5000.0, 160), &mut buf)
                .unwrap()
                > 2
        );
    }

    #[test]
    fn dtx_is_off_by_default_and_can_be_turned_on() {
        let silence = [0i16; 320];
        let mut buf = [0u8; MAX_PACKET];
        let mut enc = OpusEncoder::new(16_000, 1).unwrap();
        // Without DTX every frame is a real packet.
        for _ in 0..50 {
            assert!(enc.encode(&silence, &mut buf).unwrap() > 2);
        }
        enc.set_dtx(true).unwrap();
        let tiny = (0..50)
            .filter(|_| enc.encode(&silence, &mut buf).unwrap() <= 2)
            .count();
        assert!(tiny > 30, "only {tiny} DTX frames");
    }

    #[test]
    fn wrong_frame_sizes_and_rates_are_refused() {
        let mut enc = OpusEncoder::new(8000, 1).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        assert!(matches!(
            enc.encode(&[0i16; 100], &mut buf),
            Err(OpusError::FrameSize { samples: 100, .. })
        ));
        // 10 and 60 ms are Opus frames too.
        assert!(enc.encode(&[0i16; 80], &mut buf).is_ok());
        assert!(enc.encode(&[0i16; 480], &mut buf).is_ok());
        assert!(matches!(
            OpusEncoder::new(44_100, 1),
            Err(OpusError::UnsupportedRate(44_100))
        ));
        assert!(matches!(
            OpusDecoder::new(8000, 3),
            Err(OpusError::UnsupportedChannels(3))
        ));
        let mut dec = OpusDecoder::new(8000, 1).unwrap();
        let mut out = [0i16; 160];
        // A TOC byte announcing a code-3 packet with no frame count.
        assert!(matches!(
            dec.decode(Some(&[0x03]), &mut out),
            Err(OpusError::Codec(_))
        ));
    }

    #[test]
    fn stereo_encoder_takes_interleaved_frames() {
        let mut enc = OpusEncoder::new(48_000, 2).unwrap();
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        let pcm = vec![0i16; frame_samples(48_000, 2)];
        let len = enc.encode(&pcm, &mut buf).unwrap();
        let mut out = vec![0i16; 1920];
        assert_eq!(dec.decode(Some(&buf[..len]), &mut out).unwrap(), 960);
    }

    #[test]
    fn sdp_constants_follow_rfc_7587() {
        assert_eq!(RTPMAP, "opus/48000/2");
        assert_eq!(RTP_CLOCK, 48_000);
        assert_eq!(frame_samples(8000, 1), 160);
        assert_eq!(frame_samples(48_000, 2), 1920);
    }

    #[test]
    fn fmtp_defaults_are_rfc_7587_section_6_1() {
        let d = OpusFmtp::default();
        assert_eq!(d.maxplaybackrate, 48_000);
        assert_eq!(d.sprop_maxcapturerate, 48_000);
        assert!(!d.stereo && !d.sprop_stereo && !d.useinbandfec && !d.usedtx && !d.cbr);
        assert_eq!(d.maxaveragebitrate, None);
        assert_eq!(OpusFmtp::parse(""), d);
        assert_eq!(d.to_fmtp(), "");
    }

    #[test]
    fn fmtp_parses_a_typical_offer() {
        let f = OpusFmtp::parse(
            "a=fmtp:111 minptime=10; useinbandfec=1;maxplaybackrate=16000; \
             sprop-maxcapturerate=16000;stereo=0;x-google-min-bitrate=32;maxaveragebitrate=20000",
        );
        assert_eq!(f.minptime, Some(10));
        assert!(f.useinbandfec);
        assert_eq!(f.maxplaybackrate, 16_000);
        assert_eq!(f.sprop_maxcapturerate, 16_000);
        assert!(!f.stereo);
        assert_eq!(f.maxaveragebitrate, Some(20_000));
        assert_eq!(f.send_rate(), 16_000);
        assert_eq!(f.receive_rate(), 16_000);
        let f = OpusFmtp::parse("111 usedtx=1;cbr=1;ptime=40;maxptime=60");
        assert!(f.usedtx && f.cbr);
        assert_eq!((f.ptime, f.maxptime), (Some(40), Some(60)));
    }

    #[test]
    fn fmtp_ignores_garbage_and_clamps_ranges() {
        let f = OpusFmtp::parse(
            "useinbandfec=yes;maxplaybackrate=;stereo;maxaveragebitrate=1;\
             sprop-maxcapturerate=96000;ptime=0;=1;;usedtx=2",
        );
        assert!(!f.useinbandfec);
        assert!(!f.usedtx);
        assert_eq!(f.maxplaybackrate, 48_000);
        assert_eq!(f.maxaveragebitrate, Some(6000));
        assert_eq!(f.sprop_maxcapturerate, 48_000);
        assert_eq!(f.ptime, None);
        assert_eq!(OpusFmtp::parse("maxplaybackrate=12000").send_rate(), 8000);
        assert_eq!(OpusFmtp::parse("maxplaybackrate=24000").send_rate(), 16_000);
    }

    #[test]
    fn fmtp_round_trips_through_text() {
        let f = OpusFmtp {
            maxplaybackrate: 8000,
            useinbandfec: true,
            usedtx: true,
            minptime: Some(10),
            maxaveragebitrate: Some(24_000),
            ..OpusFmtp::default()
        };
        let text = f.to_fmtp();
        assert_eq!(
            text,
            "minptime=10;maxplaybackrate=8000;maxaveragebitrate=24000;useinbandfec=1;usedtx=1"
        );
        assert_eq!(OpusFmtp::parse(&text), f);
    }
}
