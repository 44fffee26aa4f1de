//! A hashed timer wheel, one per shard.
//!
//! Deadlines are rounded *up* to the wheel's tick (`shell.timer_tick_ms`), so
//! a timer never fires early and at most one tick late. The wheel covers
//! `SLOTS` ticks ahead of its cursor; deadlines beyond that wait in an
//! overflow heap and move into the wheel as the cursor approaches them (most
//! SIP timers are short; registration expiry is the long tail).
//!
//! Cancelling is not needed: engines ignore a timer that fires for a
//! deadline they no longer hold, so stale entries simply fall out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

const SLOTS: usize = 1024;

/// The timer wheel of one shard, generic over the key an engine wants back.
#[derive(Debug)]
pub struct TimerWheel<K> {
    origin: Instant,
    tick: Duration,
    /// Tick number the cursor stands on: every slot before it has fired.
    cursor: u64,
    slots: Vec<Vec<(u64, K)>>,
    /// Entries beyond the wheel's span, by tick.
    overflow: BinaryHeap<Reverse<(u64, u64, usize)>>,
    overflow_keys: Vec<Option<K>>,
    overflow_free: Vec<usize>,
    seq: u64,
    len: usize,
    /// Entries in the slots (the rest are in the overflow heap).
    in_wheel: usize,
}

impl<K: Copy> TimerWheel<K> {
    pub fn new(origin: Instant, tick: Duration) -> Self {
        TimerWheel {
            origin,
            tick: tick.max(Duration::from_millis(1)),
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            overflow: BinaryHeap::new(),
            overflow_keys: Vec::new(),
            overflow_free: Vec::new(),
            seq: 0,
            len: 0,
            in_wheel: 0,
        }
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick at or after `at` (ceil), never before the cursor.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let t = self.tick.as_nanos();
        let ticks = d.as_nanos().div_ceil(t);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(self.cursor)
    }

    fn tick_instant(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * self.tick.as_nanos();
        let d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.origin
            .checked_add(d)
            .unwrap_or(self.origin + Duration::from_secs(86400 * 365))
    }

    /// Schedules `key` at `at`.
    pub fn insert(&mut self, at: Instant, key: K) {
        let tick = self.tick_of(at);
        self.len += 1;
        if tick < self.cursor + SLOTS as u64 {
            self.slots[(tick % SLOTS as u64) as usize].push((tick, key));
            self.in_wheel += 1;
        } else {
            let idx = match self.overflow_free.pop() {
                Some(i) => {
                    self.overflow_keys[i] = Some(key);
                    i
                }
                None => {
                    self.overflow_keys.push(Some(key));
                    self.overflow_keys.len() - 1
                }
            };
            self.seq += 1;
            self.overflow.push(Reverse((tick, self.seq, idx)));
        }
    }

    /// Fires every entry due at `now`, appending keys to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<K>) {
        let now_tick = {
            let d = now.saturating_duration_since(self.origin);
            u64::try_from(d.as_nanos() / self.tick.as_nanos()).unwrap_or(u64::MAX)
        };
        while self.cursor <= now_tick {
            if self.in_wheel == 0 {
                // Nothing in the slots: jump straight to the next overflow
                // entry (or past `now`) instead of walking empty ticks.
                let next = self
                    .overflow
                    .peek()
                    .map_or(u64::MAX, |Reverse((t, _, _))| *t);
                let target = next.saturating_sub(SLOTS as u64 - 1).min(now_tick + 1);
                self.cursor = self.cursor.max(target);
                self.pull_overflow();
                if self.in_wheel == 0 {
                    break;
                }
                continue;
            }
            let slot = &mut self.slots[(self.cursor % SLOTS as u64) as usize];
            // Every entry of this slot is due exactly at the cursor's tick.
            self.in_wheel -= slot.len();
            self.len -= slot.len();
            out.extend(slot.drain(..).map(|(_, k)| k));
            self.cursor += 1;
            self.pull_overflow();
        }
    }

    /// Moves overflow entries that now fall inside the wheel's span.
    fn pull_overflow(&mut self) {
        while let Some(Reverse((tick, _, idx))) = self.overflow.peek().copied() {
            if tick >= self.cursor + SLOTS as u64 {
                break;
            }
            self.overflow.pop();
            if let Some(key) = self.overflow_keys.get_mut(idx).and_then(Option::take) {
                self.overflow_free.push(idx);
                let tick = tick.max(self.cursor);
                self.slots[(tick % SLOTS as u64) as usize].push((tick, key));
                self.in_wheel += 1;
            }
        }
    }

    /// When the earliest entry is due (its tick's instant), if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if self.in_wheel > 0 {
            // Invariant: every slotted entry's tick is in
            // [cursor, cursor + SLOTS), one tick per slot.
            for t in self.cursor..self.cursor + SLOTS as u64 {
                if !self.slots[(t % SLOTS as u64) as usize].is_empty() {
                    return Some(self.tick_instant(t));
                }
            }
        }
        self.overflow
            .peek()
            .map(|Reverse((tick, _, _))| self.tick_instant(*tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_fires_early_and_at_most_one_tick_late() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(5);
        let mut w = TimerWheel::new(t0, tick);
        let offsets = [0u64, 1, 4, 5, 6, 499, 500, 4_000, 32_000, 3_600_000];
        for (i, ms) in offsets.iter().enumerate() {
            w.insert(t0 + Duration::from_millis(*ms), i);
        }
        let mut fired = vec![None; offsets.len()];
        let mut now = t0;
        let mut out = Vec::new();
        while !w.is_empty() {
            // Jump to the next deadline, as a shard does.
            now = w.next_deadline().unwrap().max(now);
            w.expire(now, &mut out);
            for k in out.drain(..) {
                fired[k] = Some(now);
            }
        }
        for (i, ms) in offsets.iter().enumerate() {
            let due = t0 + Duration::from_millis(*ms);
            let at = fired[i].unwrap();
            assert!(at >= due, "timer {i} fired early");
            assert!(at - due <= tick, "timer {i} fired {:?} late", at - due);
        }
    }

    #[test]
    fn late_expire_fires_everything_due_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(5));
        for i in 0..100u64 {
            w.insert(t0 + Duration::from_millis(i * 37), i);
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(10), &mut out);
        out.sort();
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_on_the_next_tick() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(5);
        let mut w = TimerWheel::new(t0, tick);
        let mut out = Vec::new();
        let now = t0 + Duration::from_secs(1);
        w.expire(now, &mut out);
        w.insert(t0, 7u8);
        assert_eq!(w.next_deadline(), Some(now + tick));
        w.expire(now + tick, &mut out);
        assert_eq!(out, [7]);
    }
}
