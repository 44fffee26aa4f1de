//! Decoding and transcoding for one leg: what the decoded paths share.
//!
//! [`Decode`] turns a leg's voice payloads into 8 kHz PCM (recording,
//! in-band DTMF). [`Inlet`] makes a leg's packets a steady stream of 20 ms
//! frames: they go into an adaptive [`JitterBuffer`]; every frame time the
//! next one is decoded (or concealed: [`Plc`] for G.711, libopus's own for
//! Opus). [`Transcode`] bridges two legs that share no codec: an inlet,
//! re-encoded in 20 ms frames for the other leg; a conference mixes the
//! inlets of its members (`super::conference`).
//!
//! Everything runs at 8 kHz: G.711 is narrowband, and libopus decodes to
//! and encodes from 8 kHz directly (its RTP clock stays 48 kHz, RFC 7587
//! §4.1), so no resampling is needed between the codecs the appliance
//! offers. Sans-IO: time is a millisecond count; output goes to a callback.

use super::anchor::Known;
use super::g711;
use super::jitter::{JitterBuffer, JitterConfig, Playout};
use super::opus::{OpusDecoder, OpusEncoder};
use super::plc::Plc;

/// Samples in a 20 ms frame at 8 kHz.
pub(crate) const FRAME: usize = 160;
/// Most samples one packet decodes to (120 ms at 8 kHz, Opus's longest).
pub const MAX_SAMPLES: usize = 960;

/// Decoder of a leg's voice payloads, to 8 kHz PCM.
pub struct Decode {
    /// Payload type of the voice codec.
    pub pt: u8,
    pub codec: Known,
    /// Opus decodes straight to 8 kHz.
    opus: Option<OpusDecoder>,
}

impl std::fmt::Debug for Decode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decode({:?}, pt {})", self.codec, self.pt)
    }
}

impl Decode {
    /// None for telephone-event, or when libopus refuses.
    pub fn new(pt: u8, codec: Known) -> Option<Decode> {
        let opus = match codec {
            Known::Opus => Some(OpusDecoder::new(8000, 1).ok()?),
            Known::Pcmu | Known::Pcma => None,
            Known::TelephoneEvent => return None,
        };
        Some(Decode { pt, codec, opus })
    }

    /// Decodes one payload into `out`; returns the samples.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        match (self.codec, self.opus.as_mut()) {
            (Known::Pcmu, _) => g711::decode_ulaw(&payload[..n], &mut out[..n]),
            (Known::Pcma, _) => g711::decode_alaw(&payload[..n], &mut out[..n]),
            (Known::Opus, Some(d)) => return d.decode(Some(payload), out).unwrap_or(0),
            _ => return 0,
        }
        n
    }

    /// Opus's own concealment of a lost frame (0 for G.711: use [`Plc`]).
    fn conceal(&mut self, out: &mut [i16]) -> usize {
        match self.opus.as_mut() {
            Some(d) => d.decode(None, out).unwrap_or(0),
            None => 0,
        }
    }
}

/// Encoder towards the other leg (or of a prompt played to a leg).
pub(crate) enum Encode {
    Ulaw,
    Alaw,
    Opus(Box<OpusEncoder>),
}

impl Encode {
    pub(crate) fn new(codec: Known) -> Option<Encode> {
        Some(match codec {
            Known::Pcmu => Encode::Ulaw,
            Known::Pcma => Encode::Alaw,
            Known::Opus => {
                let mut e = OpusEncoder::new(8000, 1).ok()?;
                // In-band FEC against loss on the far leg (RFC 7587 §3.3).
                let _ = e.set_fec(true);
                Encode::Opus(Box::new(e))
            }
            Known::TelephoneEvent => return None,
        })
    }

    /// Encodes one 20 ms frame; returns the payload length.
    pub(crate) fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self {
            Encode::Ulaw => {
                g711::encode_ulaw(pcm, &mut out[..pcm.len()]);
                pcm.len()
            }
            Encode::Alaw => {
                g711::encode_alaw(pcm, &mut out[..pcm.len()]);
                pcm.len()
            }
            Encode::Opus(e) => e.encode(pcm, out).unwrap_or(0),
        }
    }
}

/// Receives each encoded packet: sequence number, timestamp, marker,
/// payload.
pub type Emit<'a> = dyn FnMut(u16, u32, bool, &[u8]) + 'a;

/// A leg's received voice made into a steady stream of 20 ms PCM frames:
/// its packets go into an adaptive [`JitterBuffer`]; every frame time the
/// next one is decoded, or concealed when lost ([`Plc`] for G.711,
/// libopus's own for Opus). What a [`Transcode`] re-encodes and a
/// conference mixes.
pub(crate) struct Inlet {
    jb: JitterBuffer,
    dec: Decode,
    plc: Plc,
    frame_ms: u32,
    /// 8 kHz samples of one input frame.
    frame_samples: usize,
    next_ms: Option<u64>,
    fifo: Box<[i16; 4 * MAX_SAMPLES]>,
    fifo_len: usize,
    pcm: Box<[i16; MAX_SAMPLES]>,
    /// The stream paused (nothing to play) since the last frame given out.
    paused: bool,
}

impl Inlet {
    /// For packets of `codec` (payload type `pt`) carrying `ptime_ms`
    /// each. None when it is not a voice codec of ours.
    pub(crate) fn new(pt: u8, codec: Known, ptime_ms: u32) -> Option<Inlet> {
        let frame_ms = if (10..=120).contains(&ptime_ms) && ptime_ms.is_multiple_of(10) {
            ptime_ms
        } else {
            20
        };
        let jb = JitterBuffer::new(JitterConfig {
            clock_rate: codec.clock_rate(),
            frame_ms,
            ..JitterConfig::default()
        });
        Some(Inlet {
            jb,
            dec: Decode::new(pt, codec)?,
            plc: Plc::new(8000),
            frame_ms,
            frame_samples: (8 * frame_ms) as usize,
            next_ms: None,
            fifo: Box::new([0; 4 * MAX_SAMPLES]),
            fifo_len: 0,
            pcm: Box::new([0; MAX_SAMPLES]),
            paused: true,
        })
    }

    /// Payload type of the voice packets taken in.
    pub(crate) fn pt(&self) -> u8 {
        self.dec.pt
    }

    /// A voice packet of the leg.
    pub(crate) fn push(&mut self, now_ms: u64, seq: u16, ts: u32, marker: bool, payload: &[u8]) {
        self.jb.push(now_ms, seq, ts, marker, payload);
        self.next_ms.get_or_insert(now_ms);
    }

    /// Decodes every input frame due at `now_ms` and hands each 20 ms of
    /// audio to `frame(pcm, after_pause)`; `after_pause` is true for the
    /// first frame after a pause in the stream (a new talkspurt).
    pub(crate) fn tick(&mut self, now_ms: u64, frame: &mut dyn FnMut(&[i16], bool)) {
        let Some(mut next) = self.next_ms else { return };
        // Catch up at most a few frames after a stall; skip the rest.
        if now_ms.saturating_sub(next) > u64::from(4 * self.frame_ms) {
            next = now_ms - u64::from(self.frame_ms);
        }
        while next <= now_ms {
            next += u64::from(self.frame_ms);
            let want = self.frame_samples.min(MAX_SAMPLES);
            let n = match self.jb.pop(now_ms) {
                Playout::Frame(p) => {
                    let n = self.dec.decode(p, &mut self.pcm[..]);
                    if self.dec.codec != Known::Opus {
                        self.plc.good(&mut self.pcm[..n]);
                    }
                    n
                }
                Playout::Lost => match self.dec.codec {
                    Known::Opus => self.dec.conceal(&mut self.pcm[..want]),
                    _ => {
                        self.plc.conceal(&mut self.pcm[..want]);
                        want
                    }
                },
                Playout::Empty => {
                    // Nothing to play (not started, or a pause in the
                    // talk): the stream pauses too.
                    self.paused = true;
                    0
                }
            };
            let room = self.fifo.len() - self.fifo_len;
            let n = n.min(room);
            self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&self.pcm[..n]);
            self.fifo_len += n;
            while self.fifo_len >= FRAME {
                frame(&self.fifo[..FRAME], std::mem::take(&mut self.paused));
                self.fifo.copy_within(FRAME..self.fifo_len, 0);
                self.fifo_len -= FRAME;
            }
        }
        self.next_ms = Some(next);
    }
}

/// One direction of a transcoded bridge: this leg's packets in, the other
/// leg's codec out.
pub struct Transcode {
    /// Payload type of the voice packets taken in.
    pub in_pt: u8,
    /// Payload type the other leg expects.
    pub out_pt: u8,
    /// RTP clock of the output (8000, or 48000 for Opus).
    pub out_clock: u32,
    /// SSRC of the encoded stream.
    pub ssrc: u32,
    inlet: Inlet,
    enc: Encode,
    payload: Box<[u8; 1500]>,
    seq: u16,
    ts: u32,
}

impl std::fmt::Debug for Transcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Transcode({:?} pt {} → pt {})",
            self.inlet.dec, self.in_pt, self.out_pt
        )
    }
}

impl Transcode {
    /// From `input` (payload type `in_pt`, packets of `ptime_ms`) to
    /// `output` (payload type `out_pt`). None when either is not a voice
    /// codec of ours.
    pub fn new(
        in_pt: u8,
        input: Known,
        ptime_ms: u32,
        out_pt: u8,
        output: Known,
        ssrc: u32,
    ) -> Option<Transcode> {
        Some(Transcode {
            in_pt,
            out_pt,
            out_clock: output.clock_rate(),
            ssrc,
            inlet: Inlet::new(in_pt, input, ptime_ms)?,
            enc: Encode::new(output)?,
            payload: Box::new([0; 1500]),
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(7),
        })
    }

    /// A voice packet of this leg.
    pub fn push(&mut self, now_ms: u64, seq: u16, ts: u32, marker: bool, payload: &[u8]) {
        self.inlet.push(now_ms, seq, ts, marker, payload);
    }

    /// Plays every frame due at `now_ms` and hands each encoded 20 ms
    /// packet to `emit(seq, ts, marker, payload)`.
    pub fn tick(&mut self, now_ms: u64, emit: &mut Emit<'_>) {
        let (enc, payload, seq, ts) = (
            &mut self.enc,
            &mut self.payload,
            &mut self.seq,
            &mut self.ts,
        );
        let ticks = self.out_clock / 50;
        self.inlet.tick(now_ms, &mut |pcm, mark| {
            let len = enc.encode(pcm, &mut payload[..]);
            if len > 0 {
                emit(*seq, *ts, mark, &payload[..len]);
                *seq = seq.wrapping_add(1);
            }
            *ts = ts.wrapping_add(ticks);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testaudio::{goertzel, tone};

    /// Runs 1 s of a 1 kHz tone from `input` through to `output` and
    /// decodes what came out.
    fn bridge(
        input: Known,
        in_pt: u8,
        output: Known,
        out_pt: u8,
    ) -> (Vec<i16>, Vec<(u16, u32, bool)>) {
        let mut t = Transcode::new(in_pt, input, 20, out_pt, output, 0x1234_5678).unwrap();
        let mut enc = Encode::new(input).unwrap();
        let mut dec = Decode::new(out_pt, output).unwrap();
        let mut heard = Vec::new();
        let mut headers = Vec::new();
        let mut buf = [0u8; 1500];
        for i in 0..50u16 {
            let pcm = tone(1000.0, FRAME, usize::from(i) * FRAME);
            let n = enc.encode(&pcm, &mut buf);
            let ts = u32::from(i) * input.clock_rate() / 50;
            let now = 1000 + 20 * u64::from(i);
            t.push(now, i, ts, i == 0, &buf[..n]);
            t.tick(now, &mut |seq, ts, mark, payload| {
                headers.push((seq, ts, mark));
                let mut out = [0i16; MAX_SAMPLES];
                let k = dec.decode(payload, &mut out);
                heard.extend_from_slice(&out[..k]);
            });
        }
        (heard, headers)
    }

    #[test]
    fn pcmu_to_opus_and_back_keeps_the_tone() {
        for (input, in_pt, output, out_pt) in [
            (Known::Pcmu, 0, Known::Opus, 96),
            (Known::Opus, 111, Known::Pcmu, 0),
            (Known::Pcma, 8, Known::Pcmu, 0),
        ] {
            let (heard, headers) = bridge(input, in_pt, output, out_pt);
            assert!(
                headers.len() >= 40,
                "{input:?}→{output:?}: {} packets",
                headers.len()
            );
            let mid = &heard[heard.len() / 4..];
            let (at, off) = (goertzel(mid, 1000.0), goertzel(mid, 440.0));
            assert!(
                at > 2000.0 && at > 20.0 * off,
                "{input:?}→{output:?}: {at:.0} at 1 kHz, {off:.0} at 440 Hz"
            );
            // Numbering: consecutive, timestamps one frame apart at the
            // output clock, the marker on the first packet only.
            let step = output.clock_rate() / 50;
            for w in headers.windows(2) {
                assert_eq!(w[1].0, w[0].0.wrapping_add(1));
                assert_eq!(w[1].1, w[0].1.wrapping_add(step));
                assert!(!w[1].2);
            }
            assert!(headers[0].2, "the first packet starts a talkspurt");
        }
    }

    #[test]
    fn lost_packets_are_concealed_not_skipped() {
        let mut t = Transcode::new(0, Known::Pcmu, 20, 8, Known::Pcma, 1).unwrap();
        let mut sent = 0;
        let mut buf = [0u8; 160];
        for i in 0..100u16 {
            let now = 20 * u64::from(i);
            if i % 10 != 5 {
                g711::encode_ulaw(&tone(1000.0, FRAME, usize::from(i) * FRAME), &mut buf);
                t.push(now, i, 160 * u32::from(i), false, &buf);
            }
            t.tick(now, &mut |_, _, _, _| sent += 1);
        }
        // One frame per 20 ms once playing, losses included.
        assert!(sent >= 95, "{sent} frames for 100 ticks");
    }
}
