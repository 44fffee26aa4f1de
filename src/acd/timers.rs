//! The engine's deadlines: one min-heap of (when, what, serial). Entries
//! are never removed; each carries the serial of the agent or call it was
//! armed for and is ignored when it fires if that serial has moved on
//! (re-armed, state changed, call gone). `poll_timeout` may therefore
//! report a deadline that turns out to be void: the caller then wakes for
//! nothing, which is harmless.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Agent ring timeout or wrap-up end: (agent, agent serial).
    Agent(u32, u32),
    /// A caller's next deadline (relax, sticky end, overflow, max wait,
    /// announcement): (call slot, call timer serial).
    Call(u32, u32),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, t: Timer) {
        self.heap.push(Reverse((at, t)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(x)| x),
            _ => None,
        }
    }
}
