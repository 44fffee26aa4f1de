//! The indexes behind every decision.
//!
//! * [`Pool`]: per (queue, requirement step), the agents free to take its
//!   calls, as a binary min-heap keyed by the queue's strategy (idle-since,
//!   calls today, talk today, member rank, a seeded random draw, or a
//!   RoundRobin virtual position). Removal is lazy: an entry carries the
//!   agent's availability serial and is dropped when popped or at
//!   compaction if the agent has been taken since (so an agent leaving
//!   Ready touches nothing here). A pool is compacted when it holds more
//!   than twice its eligible agents (+32), which keeps pushes O(log n)
//!   amortised and memory bounded.
//! * [`Waiting`]: per (queue, step), the waiting callers ordered by
//!   (priority desc, arrival sequence) in a `BTreeMap`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// (primary key, secondary key, agent, availability serial); min first.
pub(crate) type Entry = (u64, u64, u32, u32);

#[derive(Debug, Default)]
pub(crate) struct Pool {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Agents eligible for this pool (the compaction threshold).
    pub eligible: u32,
}

impl Pool {
    pub fn push(&mut self, e: Entry, valid: impl Fn(u32, u32) -> bool) {
        if self.heap.len() >= 2 * self.eligible as usize + 32 {
            self.heap.retain(|Reverse(e)| valid(e.2, e.3));
        }
        self.heap.push(Reverse(e));
    }

    /// The best valid entry, without removing it (invalid ones on top are
    /// dropped).
    pub fn peek_valid(&mut self, valid: impl Fn(u32, u32) -> bool) -> Option<Entry> {
        while let Some(Reverse(e)) = self.heap.peek() {
            if valid(e.2, e.3) {
                return Some(*e);
            }
            self.heap.pop();
        }
        None
    }

    pub fn pop(&mut self) -> Option<Entry> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    pub fn push_raw(&mut self, e: Entry) {
        self.heap.push(Reverse(e));
    }

    /// Every entry (for re-keying at day roll).
    pub fn drain_all(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|Reverse(e)| e)
            .collect()
    }
}

/// Waiting order key: (255 - priority, arrival sequence): smallest first.
pub(crate) type WaitKey = (u8, u64);

pub(crate) fn wait_key(priority: u8, seq: u64) -> WaitKey {
    (u8::MAX - priority, seq)
}

/// Waiting callers of one (queue, step): key → call slot.
pub(crate) type Waiting = BTreeMap<WaitKey, u32>;
