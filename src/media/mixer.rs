//! N−1 audio mixing for a conference of up to [`MAX_PARTICIPANTS`].
//!
//! Owns, for one conference at one sample rate and frame size, each
//! participant's input frame for the current tick, a hearing matrix (who
//! hears whom), a per-talker gain, and each listener's output frame: the
//! saturating sum of the inputs it hears, never its own (N−1 mixing). The
//! contact-center shapes are hearing matrices: by default everyone hears
//! everyone else (barge); **monitor** is a supervisor who hears all and whom
//! nobody hears; **whisper** is a supervisor whom only the agent hears.
//! No RFC: this is linear PCM arithmetic.
//!
//! Driven by the caller once per tick: `set_input` for each participant
//! that has audio (absent is silence), then [`Mixer::mix`], then
//! [`Mixer::output`] per listener. When every active participant hears
//! every other, `mix` sums all inputs once and subtracts each listener's own
//! (O(N) per sample); otherwise it sums per listener over its matrix row
//! (O(N²)). Buffers are allocated in [`Mixer::new`]; `mix` does not
//! allocate.

use thiserror::Error;

/// The most participants one mixer holds.
pub const MAX_PARTICIPANTS: usize = 16;

/// Gains are Q12 fixed point: 4096 is 0 dB.
const UNITY: i32 = 1 << 12;
/// Gains are clamped to this range in dB (+20 dB keeps `sample · gain`
/// within i32).
const MAX_GAIN_DB: f64 = 20.0;
const MIN_GAIN_DB: f64 = -96.0;

/// A participant of one mixer. Stale ids (of a removed participant) are
/// refused even when the slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantId {
    slot: u8,
    generation: u32,
}

impl ParticipantId {
    /// The slot index (0..MAX_PARTICIPANTS), for arrays the caller keeps.
    pub fn index(self) -> usize {
        usize::from(self.slot)
    }
}

/// Why a mixer call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MixerError {
    /// The id is not (or no longer) a participant of this mixer.
    #[error("unknown participant")]
    UnknownParticipant,
    /// An input frame of the wrong length.
    #[error("frame of {got} samples, the mixer's frame is {want}")]
    FrameLength { got: usize, want: usize },
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    active: bool,
    generation: u32,
    /// Bit t set: this participant (as listener) hears slot t.
    hears: u16,
    /// Q12 gain applied to this participant's input for every listener.
    gain: i32,
}

/// The conference mixer (see the module doc).
#[derive(Debug, Clone)]
pub struct Mixer {
    frame: usize,
    slots: [Slot; MAX_PARTICIPANTS],
    /// Bit t set: slot t is active.
    active: u16,
    /// Bit t set: slot t supplied input this tick.
    has_input: u16,
    inputs: Vec<i16>,
    outputs: Vec<i16>,
    /// Scratch: gained inputs (i32) and the running total.
    scaled: Vec<i32>,
    total: Vec<i32>,
}

fn bit(slot: usize) -> u16 {
    1 << slot
}

/// dB to Q12, clamped to MIN_GAIN_DB..=MAX_GAIN_DB.
fn gain_q12(db: f64) -> i32 {
    let db = if db.is_nan() {
        0.0
    } else {
        db.clamp(MIN_GAIN_DB, MAX_GAIN_DB)
    };
    (f64::from(UNITY) * 10f64.powf(db / 20.0)).round() as i32
}

fn saturate(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

impl Mixer {
    /// A mixer for frames of `frame_len` samples (e.g. 160: 20 ms at 8 kHz).
    pub fn new(frame_len: usize) -> Self {
        Self {
            frame: frame_len,
            slots: [Slot::default(); MAX_PARTICIPANTS],
            active: 0,
            has_input: 0,
            inputs: vec![0; frame_len * MAX_PARTICIPANTS],
            outputs: vec![0; frame_len * MAX_PARTICIPANTS],
            scaled: vec![0; frame_len * MAX_PARTICIPANTS],
            total: vec![0; frame_len],
        }
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Active participants.
    pub fn len(&self) -> usize {
        self.active.count_ones() as usize
    }

    /// No participants.
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    /// Adds a participant who hears everyone and whom everyone hears, at
    /// 0 dB. `None` when the mixer is full.
    pub fn add(&mut self) -> Option<ParticipantId> {
        let slot = (0..MAX_PARTICIPANTS).find(|&s| !self.slots[s].active)?;
        let s = &mut self.slots[slot];
        s.active = true;
        s.generation = s.generation.wrapping_add(1);
        s.gain = UNITY;
        s.hears = self.active;
        let id = ParticipantId {
            slot: slot as u8,
            generation: s.generation,
        };
        for other in 0..MAX_PARTICIPANTS {
            if self.active & bit(other) != 0 {
                self.slots[other].hears |= bit(slot);
            }
        }
        self.active |= bit(slot);
        self.has_input &= !bit(slot);
        self.outputs[slot * self.frame..(slot + 1) * self.frame].fill(0);
        Some(id)
    }

    /// Removes a participant; its id becomes stale.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let slot = self.slot(id)?;
        self.slots[slot].active = false;
        self.active &= !bit(slot);
        self.has_input &= !bit(slot);
        for s in &mut self.slots {
            s.hears &= !bit(slot);
        }
        Ok(())
    }

    fn slot(&self, id: ParticipantId) -> Result<usize, MixerError> {
        let slot = usize::from(id.slot);
        match self.slots.get(slot) {
            Some(s) if s.active && s.generation == id.generation => Ok(slot),
            _ => Err(MixerError::UnknownParticipant),
        }
    }

    /// Sets `id`'s input for this tick (until the next [`Mixer::mix`]).
    pub fn set_input(&mut self, id: ParticipantId, frame: &[i16]) -> Result<(), MixerError> {
        let slot = self.slot(id)?;
        if frame.len() != self.frame {
            return Err(MixerError::FrameLength {
                got: frame.len(),
                want: self.frame,
            });
        }
        self.inputs[slot * self.frame..(slot + 1) * self.frame].copy_from_slice(frame);
        self.has_input |= bit(slot);
        Ok(())
    }

    /// Whether `listener` hears `talker`. Nobody hears themselves: setting
    /// it is ignored.
    pub fn set_hears(
        &mut self,
        listener: ParticipantId,
        talker: ParticipantId,
        hears: bool,
    ) -> Result<(), MixerError> {
        let l = self.slot(listener)?;
        let t = self.slot(talker)?;
        if l == t {
            return Ok(());
        }
        if hears {
            self.slots[l].hears |= bit(t);
        } else {
            self.slots[l].hears &= !bit(t);
        }
        Ok(())
    }

    /// Whether `listener` hears `talker`.
    pub fn hears(
        &self,
        listener: ParticipantId,
        talker: ParticipantId,
    ) -> Result<bool, MixerError> {
        let l = self.slot(listener)?;
        let t = self.slot(talker)?;
        Ok(self.slots[l].hears & bit(t) != 0)
    }

    /// `talker`'s gain in dB as every listener hears it (clamped to
    /// −96..=+20 dB).
    pub fn set_gain(&mut self, talker: ParticipantId, db: f64) -> Result<(), MixerError> {
        let t = self.slot(talker)?;
        self.slots[t].gain = gain_q12(db);
        Ok(())
    }

    /// Everyone hears everyone else (a barged-in supervisor, a plain
    /// conference).
    pub fn hear_all(&mut self) {
        for s in 0..MAX_PARTICIPANTS {
            self.slots[s].hears = self.active & !bit(s);
        }
    }

    /// Monitor: `supervisor` hears everyone, nobody hears `supervisor`.
    pub fn monitor(&mut self, supervisor: ParticipantId) -> Result<(), MixerError> {
        let sup = self.slot(supervisor)?;
        self.slots[sup].hears = self.active & !bit(sup);
        for s in 0..MAX_PARTICIPANTS {
            if s != sup {
                self.slots[s].hears &= !bit(sup);
            }
        }
        Ok(())
    }

    /// Whisper: `supervisor` hears everyone; only `agent` hears
    /// `supervisor`.
    pub fn whisper(
        &mut self,
        supervisor: ParticipantId,
        agent: ParticipantId,
    ) -> Result<(), MixerError> {
        self.monitor(supervisor)?;
        self.set_hears(agent, supervisor, true)
    }

    /// Every active participant hears every other: the O(N) path applies.
    fn all_hear_all(&self) -> bool {
        (0..MAX_PARTICIPANTS)
            .filter(|&s| self.active & bit(s) != 0)
            .all(|s| self.slots[s].hears & self.active == self.active & !bit(s))
    }

    /// Mixes this tick: every listener's output from the inputs it hears.
    /// Inputs are consumed: the next tick starts silent.
    pub fn mix(&mut self) {
        let n = self.frame;
        let talking = self.has_input & self.active;
        // Gained inputs of those who talked this tick.
        for t in 0..MAX_PARTICIPANTS {
            if talking & bit(t) == 0 {
                continue;
            }
            let gain = self.slots[t].gain;
            let src = &self.inputs[t * n..(t + 1) * n];
            let dst = &mut self.scaled[t * n..(t + 1) * n];
            if gain == UNITY {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = i32::from(s);
                }
            } else {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = (i32::from(s) * gain) >> 12;
                }
            }
        }
        if self.all_hear_all() {
            self.total.fill(0);
            for t in 0..MAX_PARTICIPANTS {
                if talking & bit(t) != 0 {
                    let src = &self.scaled[t * n..(t + 1) * n];
                    for (acc, &s) in self.total.iter_mut().zip(src) {
                        *acc += s;
                    }
                }
            }
            for l in 0..MAX_PARTICIPANTS {
                if self.active & bit(l) == 0 {
                    continue;
                }
                let out = &mut self.outputs[l * n..(l + 1) * n];
                if talking & bit(l) != 0 {
                    let own = &self.scaled[l * n..(l + 1) * n];
                    for ((o, &tot), &s) in out.iter_mut().zip(&self.total).zip(own) {
                        *o = saturate(tot - s);
                    }
                } else {
                    for (o, &tot) in out.iter_mut().zip(&self.total) {
                        *o = saturate(tot);
                    }
                }
            }
        } else {
            for l in 0..MAX_PARTICIPANTS {
                if self.active & bit(l) == 0 {
                    continue;
                }
                let heard = self.slots[l].hears & talking & !bit(l);
                self.total.fill(0);
                for t in 0..MAX_PARTICIPANTS {
                    if heard & bit(t) != 0 {
                        let src = &self.scaled[t * n..(t + 1) * n];
                        for (acc, &s) in self.total.iter_mut().zip(src) {
                            *acc += s;
                        }
                    }
                }
                let out = &mut self.outputs[l * n..(l + 1) * n];
                for (o, &tot) in out.iter_mut().zip(&self.total) {
                    *o = saturate(tot);
                }
            }
        }
        self.has_input = 0;
    }

    /// `id`'s output of the last [`Mixer::mix`].
    pub fn output(&self, id: ParticipantId) -> Option<&[i16]> {
        let slot = self.slot(id).ok()?;
        Some(&self.outputs[slot * self.frame..(slot + 1) * self.frame])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 160;

    fn frame(v: i16) -> [i16; N] {
        [v; N]
    }

    fn out(m: &Mixer, id: ParticipantId) -> i16 {
        let o = m.output(id).unwrap();
        assert!(o.iter().all(|&s| s == o[0]), "frame not uniform");
        o[0]
    }

    /// Caller, agent, supervisor with distinct constant inputs 1, 10, 100.
    fn trio() -> (Mixer, [ParticipantId; 3]) {
        let mut m = Mixer::new(N);
        let ids = [m.add().unwrap(), m.add().unwrap(), m.add().unwrap()];
        (m, ids)
    }

    fn talk(m: &mut Mixer, ids: &[ParticipantId; 3]) {
        for (id, v) in ids.iter().zip([1, 10, 100]) {
            m.set_input(*id, &frame(v)).unwrap();
        }
        m.mix();
    }

    #[test]
    fn everyone_hears_everyone_else_by_default() {
        let (mut m, ids @ [caller, agent, sup]) = trio();
        talk(&mut m, &ids);
        assert_eq!(out(&m, caller), 110);
        assert_eq!(out(&m, agent), 101);
        assert_eq!(out(&m, sup), 11);
    }

    #[test]
    fn whisper_agent_hears_supervisor_caller_does_not() {
        let (mut m, ids @ [caller, agent, sup]) = trio();
        m.whisper(sup, agent).unwrap();
        talk(&mut m, &ids);
        assert_eq!(out(&m, caller), 10);
        assert_eq!(out(&m, agent), 101);
        assert_eq!(out(&m, sup), 11);
    }

    #[test]
    fn monitor_supervisor_hears_all_nobody_hears_supervisor() {
        let (mut m, ids @ [caller, agent, sup]) = trio();
        m.monitor(sup).unwrap();
        talk(&mut m, &ids);
        assert_eq!(out(&m, caller), 10);
        assert_eq!(out(&m, agent), 1);
        assert_eq!(out(&m, sup), 11);
        // Barge: back to all hear all.
        m.hear_all();
        talk(&mut m, &ids);
        assert_eq!(out(&m, caller), 110);
        assert_eq!(out(&m, agent), 101);
    }

    #[test]
    fn general_and_total_minus_own_paths_agree() {
        let mut m = Mixer::new(N);
        let ids: Vec<_> = (0..MAX_PARTICIPANTS).map(|_| m.add().unwrap()).collect();
        assert!(m.add().is_none());
        let inputs: Vec<[i16; N]> = (0..MAX_PARTICIPANTS)
            .map(|p| std::array::from_fn(|i| ((p * 37 + i * 11) % 2001) as i16 - 1000))
            .collect();
        let run = |m: &mut Mixer| {
            for (id, f) in ids.iter().zip(&inputs) {
                m.set_input(*id, f).unwrap();
            }
            m.set_gain(ids[3], -6.0).unwrap();
            m.mix();
            ids.iter()
                .map(|id| m.output(*id).unwrap().to_vec())
                .collect::<Vec<_>>()
        };
        let fast = run(&mut m);
        assert!(m.all_hear_all());
        // Removing and restoring one edge forces the general path with the
        // same matrix semantics except for that edge.
        m.set_hears(ids[0], ids[1], false).unwrap();
        assert!(!m.all_hear_all());
        let slow = run(&mut m);
        for l in 1..MAX_PARTICIPANTS {
            assert_eq!(fast[l], slow[l], "listener {l}");
        }
        let without_1: Vec<i16> = (0..N)
            .map(|i| {
                let sum: i32 = (2..MAX_PARTICIPANTS)
                    .map(|t| {
                        let s = i32::from(inputs[t][i]);
                        if t == 3 {
                            (s * gain_q12(-6.0)) >> 12
                        } else {
                            s
                        }
                    })
                    .sum();
                saturate(sum)
            })
            .collect();
        assert_eq!(slow[0], without_1);
    }

    #[test]
    fn sum_saturates_instead_of_wrapping() {
        let (mut m, [a, b, c]) = trio();
        m.set_input(a, &frame(30_000)).unwrap();
        m.set_input(b, &frame(30_000)).unwrap();
        m.set_input(c, &frame(-30_000)).unwrap();
        m.mix();
        assert_eq!(out(&m, c), i16::MAX);
        assert_eq!(out(&m, a), 0);
        m.set_input(c, &frame(-30_000)).unwrap();
        m.set_input(b, &frame(-30_000)).unwrap();
        m.mix();
        assert_eq!(out(&m, a), i16::MIN);
    }

    #[test]
    fn absent_input_is_silence_and_inputs_do_not_carry_over() {
        let (mut m, [a, b, c]) = trio();
        m.set_input(a, &frame(500)).unwrap();
        m.mix();
        assert_eq!(out(&m, b), 500);
        assert_eq!(out(&m, a), 0);
        m.mix();
        assert_eq!(out(&m, b), 0);
        assert_eq!(out(&m, c), 0);
    }

    #[test]
    fn gain_scales_a_talker_for_every_listener() {
        let (mut m, [a, b, c]) = trio();
        m.set_gain(a, -6.0206).unwrap();
        m.set_input(a, &frame(1000)).unwrap();
        m.mix();
        assert_eq!(out(&m, b), 500);
        assert_eq!(out(&m, c), 500);
        m.set_gain(a, 6.0206).unwrap();
        m.set_input(a, &frame(1000)).unwrap();
        m.mix();
        assert_eq!(out(&m, b), 2000);
    }

    #[test]
    fn removed_participant_id_is_stale_and_slot_reused() {
        let (mut m, [a, b, c]) = trio();
        m.remove(b).unwrap();
        assert_eq!(
            m.set_input(b, &frame(1)),
            Err(MixerError::UnknownParticipant)
        );
        assert!(m.output(b).is_none());
        let d = m.add().unwrap();
        assert_eq!(d.index(), b.index());
        assert_ne!(d, b);
        assert_eq!(m.remove(b), Err(MixerError::UnknownParticipant));
        m.set_input(d, &frame(7)).unwrap();
        m.set_input(c, &frame(3)).unwrap();
        m.mix();
        assert_eq!(out(&m, a), 10);
        assert_eq!(out(&m, d), 3);
        assert!(m.hears(a, d).unwrap());
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn wrong_frame_length_is_refused() {
        let (mut m, [a, _, _]) = trio();
        assert_eq!(
            m.set_input(a, &[0; 80]),
            Err(MixerError::FrameLength { got: 80, want: N })
        );
    }

    #[test]
    fn nobody_hears_themselves_even_when_asked() {
        let (mut m, [a, b, _]) = trio();
        m.set_hears(a, a, true).unwrap();
        m.set_hears(b, a, false).unwrap();
        m.set_input(a, &frame(9)).unwrap();
        m.mix();
        assert_eq!(out(&m, a), 0);
        assert_eq!(out(&m, b), 0);
    }
}
