//! A conference of one shard's legs: each member's voice in, the mix of
//! the others out, each in the member's own codec.
//!
//! Every 20 ms ([`Conference::tick`]) each member's [`Inlet`] gives its
//! next frame of audio (decoded from its jitter buffer, a lost packet
//! concealed, silence while it says nothing), the [`Mixer`] sums for each
//! member what the others said (N−1 mixing, so nobody hears an echo of
//! themselves), and each member's mix is encoded in the codec the member
//! agreed on and handed out as one RTP payload, numbered as the member's own
//! stream: one SSRC, sequence numbers and timestamps that run on, the
//! marker on the first packet. Silence is sent too, so every member hears a
//! steady stream, as from any conference bridge.
//!
//! Knows codecs and time, not legs, sockets or addresses: the media engine
//! maps members to legs, feeds packets in ([`Conference::push`]) and sends
//! what comes out. Sans-IO: time is a millisecond count. Buffers are made
//! when a member joins; a tick does not allocate.

use super::anchor::Known;
use super::mixer::{MAX_PARTICIPANTS, Mixer, MixerError, ParticipantId};
use super::transcode::{Encode, FRAME, Inlet};

/// Frames of a member's audio kept between ticks: absorbs the drift
/// between its inlet's frame times and the conference's.
const QUEUE: usize = 3;
/// Frames a late conference catches up at most (the rest is skipped).
const CATCH_UP: u64 = 4;
/// One frame, in milliseconds.
const FRAME_MS: u64 = 20;

/// One member's mix for one tick, encoded.
#[derive(Debug)]
pub struct Mixed<'a> {
    /// The caller's tag of the member ([`Conference::add`]).
    pub tag: u32,
    /// Payload type and RTP clock of its codec.
    pub pt: u8,
    pub clock: u32,
    /// Its stream's SSRC, sequence number and timestamp.
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    /// First packet of the stream.
    pub mark: bool,
    pub payload: &'a [u8],
    /// The mix before encoding (8 kHz): what a recording of the member's
    /// call hears.
    pub pcm: &'a [i16],
}

struct Member {
    tag: u32,
    id: ParticipantId,
    /// None for a codec we cannot decode: the member is heard as silence.
    inlet: Option<Inlet>,
    enc: Encode,
    pt: u8,
    clock: u32,
    ssrc: u32,
    seq: u16,
    ts: u32,
    started: bool,
    queue: [[i16; FRAME]; QUEUE],
    head: usize,
    queued: usize,
}

impl Member {
    fn enqueue(&mut self, pcm: &[i16]) {
        if self.queued == QUEUE {
            // Full: the oldest frame goes (latency stays bounded).
            self.head = (self.head + 1) % QUEUE;
            self.queued -= 1;
        }
        let at = (self.head + self.queued) % QUEUE;
        self.queue[at].copy_from_slice(&pcm[..FRAME]);
        self.queued += 1;
    }
}

/// A conference: up to [`MAX_PARTICIPANTS`] members (see the module doc).
pub struct Conference {
    mixer: Mixer,
    members: [Option<Box<Member>>; MAX_PARTICIPANTS],
    /// When the next mix is due (None until the first tick).
    next_ms: Option<u64>,
    payload: Box<[u8; 1500]>,
}

impl std::fmt::Debug for Conference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conference({} members)", self.len())
    }
}

impl Default for Conference {
    fn default() -> Self {
        Self::new()
    }
}

impl Conference {
    pub fn new() -> Conference {
        Conference {
            mixer: Mixer::new(FRAME),
            members: Default::default(),
            next_ms: None,
            payload: Box::new([0; 1500]),
        }
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.mixer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mixer.is_empty()
    }

    /// Adds a member speaking `codec` on payload type `pt` in packets of
    /// `ptime_ms`, its outgoing stream numbered from `ssrc`; `tag` is the
    /// caller's name for it. Returns its slot; None when the conference is
    /// full or `codec` is not a voice codec.
    pub fn add(
        &mut self,
        tag: u32,
        pt: u8,
        codec: Known,
        ptime_ms: u32,
        ssrc: u32,
    ) -> Option<usize> {
        let enc = Encode::new(codec)?;
        let id = self.mixer.add()?;
        let slot = id.index();
        self.members[slot] = Some(Box::new(Member {
            tag,
            id,
            inlet: Inlet::new(pt, codec, ptime_ms),
            enc,
            pt,
            clock: codec.clock_rate(),
            ssrc,
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(13),
            started: false,
            queue: [[0; FRAME]; QUEUE],
            head: 0,
            queued: 0,
        }));
        Some(slot)
    }

    /// Removes the member in `slot`; returns its tag.
    pub fn remove(&mut self, slot: usize) -> Option<u32> {
        let m = self.members.get_mut(slot)?.take()?;
        let _ = self.mixer.remove(m.id);
        Some(m.tag)
    }

    /// The tags of the members.
    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().flatten().map(|m| m.tag)
    }

    /// Whether `listener` hears `talker` (both slots).
    pub fn set_hears(
        &mut self,
        listener: usize,
        talker: usize,
        hears: bool,
    ) -> Result<(), MixerError> {
        let id = |s: usize| {
            self.members
                .get(s)
                .and_then(Option::as_ref)
                .map(|m| m.id)
                .ok_or(MixerError::UnknownParticipant)
        };
        let (l, t) = (id(listener)?, id(talker)?);
        self.mixer.set_hears(l, t, hears)
    }

    /// A voice packet of the member in `slot`; false when it is not its
    /// voice (another payload type), so the caller may do otherwise.
    pub fn push(
        &mut self,
        slot: usize,
        now_ms: u64,
        (pt, seq, ts, marker): (u8, u16, u32, bool),
        payload: &[u8],
    ) -> bool {
        let Some(inlet) = self
            .members
            .get_mut(slot)
            .and_then(Option::as_mut)
            .and_then(|m| m.inlet.as_mut())
            .filter(|i| i.pt() == pt)
        else {
            return false;
        };
        inlet.push(now_ms, seq, ts, marker, payload);
        true
    }

    /// Mixes every frame due at `now_ms` and hands each member's encoded
    /// mix to `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut dyn FnMut(Mixed<'_>)) {
        let mut next = *self.next_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(next) > CATCH_UP * FRAME_MS {
            next = now_ms - FRAME_MS;
        }
        while next <= now_ms {
            next += FRAME_MS;
            self.mix_one(now_ms, out);
        }
        self.next_ms = Some(next);
    }

    fn mix_one(&mut self, now_ms: u64, out: &mut dyn FnMut(Mixed<'_>)) {
        for m in self.members.iter_mut().flatten() {
            if let Some(mut inlet) = m.inlet.take() {
                inlet.tick(now_ms, &mut |pcm, _| m.enqueue(pcm));
                m.inlet = Some(inlet);
            }
            if m.queued > 0 {
                let _ = self.mixer.set_input(m.id, &m.queue[m.head]);
                m.head = (m.head + 1) % QUEUE;
                m.queued -= 1;
            }
        }
        self.mixer.mix();
        for m in self.members.iter_mut().flatten() {
            let Some(pcm) = self.mixer.output(m.id) else {
                continue;
            };
            let n = m.enc.encode(pcm, &mut self.payload[..]);
            let (seq, ts) = (m.seq, m.ts);
            m.ts = m.ts.wrapping_add(m.clock / 50);
            if n == 0 {
                continue;
            }
            m.seq = m.seq.wrapping_add(1);
            out(Mixed {
                tag: m.tag,
                pt: m.pt,
                clock: m.clock,
                ssrc: m.ssrc,
                seq,
                ts,
                mark: !std::mem::replace(&mut m.started, true),
                payload: &self.payload[..n],
                pcm,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;
    use crate::media::testaudio::{goertzel as level, tone};

    /// Three μ-law members saying 440, 1000 and 1800 Hz for 1 s: what
    /// each heard, decoded, and its packets' headers.
    /// What one member heard: samples, and (seq, ts, marker) per packet.
    type Heard = (Vec<i16>, Vec<(u16, u32, bool)>);

    fn three_way(silent: Option<usize>) -> Vec<Heard> {
        let freqs = [440.0, 1000.0, 1800.0];
        let mut c = Conference::new();
        let slots: Vec<usize> = (0..3)
            .map(|i| c.add(i, 0, Known::Pcmu, 20, 0x1000 * (i + 1)).unwrap())
            .collect();
        let mut heard = vec![(Vec::new(), Vec::new()); 3];
        let mut buf = [0u8; FRAME];
        for f in 0..50u16 {
            let now = 1000 + 20 * u64::from(f);
            for (i, &hz) in freqs.iter().enumerate() {
                if silent == Some(i) {
                    continue;
                }
                g711::encode_ulaw(&tone(hz, FRAME, usize::from(f) * FRAME), &mut buf);
                let h = (0, f, u32::from(f) * 160, f == 0);
                assert!(c.push(slots[i], now, h, &buf));
            }
            c.tick(now, &mut |m| {
                let mut pcm = [0i16; FRAME];
                g711::decode_ulaw(m.payload, &mut pcm);
                heard[m.tag as usize].0.extend_from_slice(&pcm);
                heard[m.tag as usize].1.push((m.seq, m.ts, m.mark));
            });
        }
        heard
    }

    #[test]
    fn each_member_hears_the_others_and_not_itself() {
        let freqs = [440.0, 1000.0, 1800.0];
        for (me, (pcm, headers)) in three_way(None).iter().enumerate() {
            assert!(
                headers.len() >= 48,
                "member {me}: {} packets",
                headers.len()
            );
            let tail = &pcm[pcm.len() / 2..];
            for (other, &hz) in freqs.iter().enumerate() {
                let l = level(tail, hz);
                if other == me {
                    assert!(l < 300.0, "member {me} hears itself at {hz} Hz: {l:.0}");
                } else {
                    assert!(l > 4000.0, "member {me} misses {hz} Hz: {l:.0}");
                }
            }
            // One stream: consecutive numbers, 20 ms of timestamp apart,
            // the marker on the first packet only.
            assert!(headers[0].2);
            for w in headers.windows(2) {
                assert_eq!(w[1].0, w[0].0.wrapping_add(1));
                assert_eq!(w[1].1, w[0].1.wrapping_add(160));
                assert!(!w[1].2);
            }
        }
    }

    #[test]
    fn a_silent_member_is_still_sent_the_mix_and_adds_nothing() {
        let heard = three_way(Some(2));
        let tail = |i: usize| heard[i].0[heard[i].0.len() / 2..].to_vec();
        assert!(level(&tail(2), 440.0) > 4000.0 && level(&tail(2), 1000.0) > 4000.0);
        assert!(level(&tail(0), 1800.0) < 300.0);
        assert!(level(&tail(0), 1000.0) > 4000.0);
        assert!(heard[2].1.len() >= 48, "the silent member gets a stream");
    }

    #[test]
    fn members_leave_and_hearing_can_be_narrowed() {
        let mut c = Conference::new();
        let a = c.add(7, 0, Known::Pcmu, 20, 1).unwrap();
        let b = c.add(8, 8, Known::Pcma, 20, 2).unwrap();
        let s = c.add(9, 0, Known::Pcmu, 20, 3).unwrap();
        assert_eq!(c.len(), 3);
        // The third (a supervisor) is heard by nobody but `a`.
        c.set_hears(b, s, false).unwrap();
        let mut buf = [0u8; FRAME];
        let mut got: Vec<(u32, f64)> = Vec::new();
        for f in 0..25u16 {
            let now = 20 * u64::from(f);
            g711::encode_ulaw(&tone(1000.0, FRAME, usize::from(f) * FRAME), &mut buf);
            assert!(c.push(s, now, (0, f, u32::from(f) * 160, false), &buf));
            // Not its payload type: refused.
            assert!(!c.push(b, now, (0, f, 0, false), &buf));
            c.tick(now, &mut |m| {
                if f > 10 {
                    got.push((m.tag, level(m.pcm, 1000.0)));
                }
            });
        }
        assert!(got.iter().filter(|g| g.0 == 7).all(|g| g.1 > 4000.0));
        assert!(got.iter().filter(|g| g.0 == 8).all(|g| g.1 < 1.0));
        assert_eq!(c.remove(s), Some(9));
        assert_eq!(c.remove(s), None);
        assert_eq!(c.tags().collect::<Vec<_>>(), vec![7, 8]);
        assert!(c.remove(a).is_some() && c.remove(b).is_some());
        assert!(c.is_empty());
    }
}
