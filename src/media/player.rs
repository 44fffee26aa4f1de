//! Prompt and music playback into 20 ms frames.
//!
//! Owns one playback position over shared, already-decoded clips
//! (`Arc<[i16]>`, mono 16-bit PCM at the player's rate, loaded once and
//! shared by every call that plays them): a prompt (`play`), a playlist
//! (`queue`), music on hold (`play_loop`). No RFC: the frames it produces
//! feed the mixer or an encoder.
//!
//! Driven by the caller once per tick: [`Player::fill`] writes the next
//! samples into the caller's frame (silence when idle or past the end) and
//! says whether anything is playing; it reports [`PlayerState::Finished`]
//! exactly once, on the tick a non-looped playlist runs out, so the call
//! engine can move on (collect digits, transfer). `fill` does not allocate:
//! the playlist is a fixed-capacity queue of reference-counted clips.

use std::sync::Arc;

use heapless::Deque;
use thiserror::Error;

/// Clips that can wait in the playlist behind the one playing.
pub const MAX_QUEUE: usize = 16;

/// A decoded clip: mono 16-bit PCM at the player's rate.
pub type Clip = Arc<[i16]>;

/// Why a clip was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PlayerError {
    /// The playlist already holds [`MAX_QUEUE`] clips.
    #[error("playlist full ({MAX_QUEUE} clips)")]
    QueueFull,
}

/// What [`Player::fill`] did this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerState {
    /// Nothing to play: the frame is silence.
    Idle,
    /// The frame holds audio (possibly padded with silence at the end).
    Playing,
    /// The playlist ended in this frame (reported once); the rest of the
    /// frame is silence.
    Finished,
}

/// Playback of clips at one sample rate (see the module doc).
#[derive(Debug)]
pub struct Player {
    rate: u32,
    current: Option<Clip>,
    pos: usize,
    looping: bool,
    queue: Deque<Clip, MAX_QUEUE>,
}

impl Player {
    /// An idle player for clips at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            current: None,
            pos: 0,
            looping: false,
            queue: Deque::new(),
        }
    }

    /// The sample rate the clips are at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Plays `clip` now, once, dropping whatever played or waited.
    pub fn play(&mut self, clip: Clip) {
        self.queue.clear();
        self.start(clip, false);
    }

    /// Plays `clip` now, over and over (music on hold), dropping whatever
    /// played or waited. A clip queued afterwards starts when the current
    /// pass ends.
    pub fn play_loop(&mut self, clip: Clip) {
        self.queue.clear();
        self.start(clip, true);
    }

    /// Appends `clip` to the playlist; it starts at once if idle.
    pub fn queue(&mut self, clip: Clip) -> Result<(), PlayerError> {
        if self.current.is_none() {
            self.start(clip, false);
            return Ok(());
        }
        self.queue
            .push_back(clip)
            .map_err(|_| PlayerError::QueueFull)
    }

    /// Stops and empties the playlist; no `Finished` is reported.
    pub fn stop(&mut self) {
        self.queue.clear();
        self.current = None;
        self.pos = 0;
        self.looping = false;
    }

    /// Whether a clip is playing or waiting.
    pub fn is_playing(&self) -> bool {
        self.current.is_some()
    }

    fn start(&mut self, clip: Clip, looping: bool) {
        self.current = Some(clip);
        self.pos = 0;
        self.looping = looping;
    }

    /// Fills `out` with the next samples (silence where nothing plays).
    pub fn fill(&mut self, out: &mut [i16]) -> PlayerState {
        if self.current.is_none() {
            out.fill(0);
            return PlayerState::Idle;
        }
        let mut written = 0;
        // Empty clips never advance a looped playback: stop after one pass
        // over the playlist without progress.
        let mut idle_passes = 0;
        while written < out.len() {
            let Some(clip) = &self.current else {
                out[written..].fill(0);
                return PlayerState::Finished;
            };
            let n = (clip.len() - self.pos.min(clip.len())).min(out.len() - written);
            out[written..written + n].copy_from_slice(&clip[self.pos..self.pos + n]);
            written += n;
            self.pos += n;
            if self.pos < clip.len() {
                continue;
            }
            idle_passes = if n == 0 { idle_passes + 1 } else { 0 };
            if idle_passes > MAX_QUEUE + 1 {
                self.stop();
                out[written..].fill(0);
                return PlayerState::Finished;
            }
            // The clip ended: next in the playlist, else loop, else done.
            if let Some(next) = self.queue.pop_front() {
                self.start(next, false);
            } else if self.looping {
                self.pos = 0;
            } else {
                self.current = None;
                self.pos = 0;
            }
        }
        if self.current.is_none() {
            // The last clip ended exactly at the frame's end.
            return PlayerState::Finished;
        }
        PlayerState::Playing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(start: i16, len: usize) -> Clip {
        (0..len).map(|i| start + i as i16).collect()
    }

    #[test]
    fn idle_player_fills_silence() {
        let mut p = Player::new(8000);
        let mut out = [7i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Idle);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn prompt_plays_then_reports_finished_once_with_silence_padding() {
        let mut p = Player::new(8000);
        p.play(ramp(1, 200));
        let mut out = [0i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Playing);
        assert_eq!(out[0], 1);
        assert_eq!(out[159], 160);
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert_eq!(out[39], 200);
        assert!(out[40..].iter().all(|&s| s == 0));
        assert_eq!(p.fill(&mut out), PlayerState::Idle);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn clip_ending_on_the_frame_boundary_finishes_in_that_frame() {
        let mut p = Player::new(8000);
        p.play(ramp(1, 320));
        let mut out = [0i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Playing);
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert_eq!(out[159], 320);
        assert_eq!(p.fill(&mut out), PlayerState::Idle);
    }

    #[test]
    fn playlist_plays_clips_back_to_back() {
        let mut p = Player::new(8000);
        p.queue(ramp(1, 100)).unwrap();
        p.queue(ramp(1000, 100)).unwrap();
        let mut out = [0i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Playing);
        assert_eq!(out[99], 100);
        assert_eq!(out[100], 1000);
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert_eq!(out[39], 1099);
        assert_eq!(out[40], 0);
    }

    #[test]
    fn music_on_hold_loops_until_stopped_without_finishing() {
        let mut p = Player::new(8000);
        p.play_loop(ramp(1, 50));
        let mut out = [0i16; 160];
        for _ in 0..100 {
            assert_eq!(p.fill(&mut out), PlayerState::Playing);
        }
        // 100 frames of 160 = 16000 samples, a multiple of 50: in phase.
        assert_eq!(p.fill(&mut out), PlayerState::Playing);
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(out[50], 1);
        p.stop();
        assert_eq!(p.fill(&mut out), PlayerState::Idle);
    }

    #[test]
    fn queued_prompt_interrupts_loop_at_the_end_of_its_pass() {
        let mut p = Player::new(8000);
        p.play_loop(ramp(1, 100));
        p.queue(ramp(500, 30)).unwrap();
        let mut out = [0i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert_eq!(out[99], 100);
        assert_eq!(&out[100..130], &ramp(500, 30)[..]);
        assert!(out[130..].iter().all(|&s| s == 0));
    }

    #[test]
    fn play_replaces_the_current_clip_and_playlist() {
        let mut p = Player::new(8000);
        p.play(ramp(1, 1000));
        p.queue(ramp(1, 1000)).unwrap();
        p.play(ramp(-100, 10));
        let mut out = [0i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert_eq!(out[0], -100);
        assert_eq!(out[10], 0);
    }

    #[test]
    fn queue_is_bounded() {
        let mut p = Player::new(8000);
        let clip = ramp(1, 10);
        p.queue(clip.clone()).unwrap();
        for _ in 0..MAX_QUEUE {
            p.queue(clip.clone()).unwrap();
        }
        assert_eq!(p.queue(clip), Err(PlayerError::QueueFull));
    }

    #[test]
    fn empty_looped_clip_does_not_hang() {
        let mut p = Player::new(8000);
        p.play_loop(Arc::from(Vec::new()));
        let mut out = [5i16; 160];
        assert_eq!(p.fill(&mut out), PlayerState::Finished);
        assert!(out.iter().all(|&s| s == 0));
        assert_eq!(p.fill(&mut out), PlayerState::Idle);
    }
}
