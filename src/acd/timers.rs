//! The engine's deadlines: a min-heap of (when, what, serial), plus FIFO
//! lanes for deadlines armed a fixed delay ahead (ring timeout, wrap-ups),
//! which arrive in deadline order and need no heap. Entries
//! are never removed; each carries the serial of the agent or call it was
//! armed for and is ignored when it fires if that serial has moved on
//! (re-armed, state changed, call gone). `poll_timeout` may therefore
//! report a deadline that turns out to be void: the caller then wakes for
//! nothing, which is harmless.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Agent ring timeout or wrap-up end: (agent, agent serial).
    Agent(u32, u32),
    /// A caller's next deadline (relax, sticky end, overflow, max wait,
    /// announcement): (call slot, call timer serial).
    Call(u32, u32),
}

/// Fixed-delay lanes kept besides the heap.
const LANES: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Deadlines armed at `now + d` for a few fixed `d` (ring timeout,
    /// wrap-ups): FIFOs, since `now` only grows (O(1) both ways).
    lanes: Vec<(Duration, VecDeque<(Instant, Timer)>)>,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, t: Timer) {
        self.heap.push(Reverse((at, t)));
    }

    /// Arms `t` at `now + d`.
    pub fn arm_after(&mut self, now: Instant, d: Duration, t: Timer) {
        let at = now + d;
        let lane = match self.lanes.iter().position(|(x, _)| *x == d) {
            Some(i) => Some(i),
            None if self.lanes.len() < LANES => {
                self.lanes.push((d, VecDeque::new()));
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        match lane {
            Some(i) if self.lanes[i].1.back().is_none_or(|(b, _)| *b <= at) => {
                self.lanes[i].1.push_back((at, t));
            }
            _ => self.arm(at, t),
        }
    }

    pub fn next(&self) -> Option<Instant> {
        let mut next = self.heap.peek().map(|Reverse((at, _))| *at);
        for (_, l) in &self.lanes {
            if let Some((at, _)) = l.front() {
                next = Some(next.map_or(*at, |n| n.min(*at)));
            }
        }
        next
    }

    /// The next timer due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let mut best: Option<(Instant, usize)> =
            self.heap.peek().map(|Reverse((at, _))| (*at, usize::MAX));
        for (i, (_, l)) in self.lanes.iter().enumerate() {
            if let Some((at, _)) = l.front()
                && best.is_none_or(|(b, _)| *at < b)
            {
                best = Some((*at, i));
            }
        }
        match best {
            Some((at, _)) if at > now => None,
            None => None,
            Some((_, usize::MAX)) => self.heap.pop().map(|Reverse(x)| x),
            Some((_, i)) => self.lanes[i].1.pop_front(),
        }
    }
}
