//! The indexes behind every decision.
//!
//! * [`Pool`]: per (queue, requirement step), the agents free to take its
//!   calls: a FIFO for LongestIdle and RingAll (free order is idle order),
//!   else a binary min-heap keyed by the queue's strategy (calls today,
//!   talk today, member rank, a seeded random draw, or a RoundRobin
//!   virtual position). Removal is lazy: an entry carries the
//!   agent's availability serial and is dropped when popped or at
//!   compaction if the agent has been taken since (so an agent leaving
//!   Ready touches nothing here). A pool is compacted when it holds more
//!   than twice its eligible agents (+32), which keeps pushes O(1) (FIFO)
//!   or O(log n) (heap) amortised and memory bounded.
//! * [`Waiting`]: per (queue, step), the waiting callers ordered by
//!   (priority desc, arrival sequence) in a `BTreeMap`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// (primary key, secondary key, agent, availability serial); min first.
pub(crate) type Entry = (u64, u64, u32, u32);

/// Free agents of one (queue, step). LongestIdle and RingAll pools are
/// FIFOs: agents are pushed when they become free, so arrival order is
/// idle-since order and no heap is needed (O(1) both ways). The other
/// strategies use a binary min-heap on their key.
#[derive(Debug)]
pub(crate) struct Pool {
    fifo: bool,
    queue: VecDeque<(u32, u32)>,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Agents eligible for this pool (the compaction threshold).
    pub eligible: u32,
}

impl Pool {
    pub fn new(fifo: bool, eligible: u32) -> Pool {
        Pool {
            fifo,
            queue: VecDeque::new(),
            heap: BinaryHeap::new(),
            eligible,
        }
    }

    fn len(&self) -> usize {
        if self.fifo {
            self.queue.len()
        } else {
            self.heap.len()
        }
    }

    pub fn push(&mut self, e: Entry, valid: impl Fn(u32, u32) -> bool) {
        if self.len() >= 2 * self.eligible as usize + 32 {
            if self.fifo {
                self.queue.retain(|e| valid(e.0, e.1));
            } else {
                self.heap.retain(|Reverse(e)| valid(e.2, e.3));
            }
        }
        self.push_raw(e);
    }

    /// The best valid entry, without removing it (invalid ones on top are
    /// dropped).
    pub fn peek_valid(&mut self, valid: impl Fn(u32, u32) -> bool) -> Option<Entry> {
        if self.fifo {
            while let Some(&(a, s)) = self.queue.front() {
                if valid(a, s) {
                    return Some((0, 0, a, s));
                }
                self.queue.pop_front();
            }
            return None;
        }
        while let Some(Reverse(e)) = self.heap.peek() {
            if valid(e.2, e.3) {
                return Some(*e);
            }
            self.heap.pop();
        }
        None
    }

    pub fn pop(&mut self) -> Option<Entry> {
        if self.fifo {
            self.queue.pop_front().map(|(a, s)| (0, 0, a, s))
        } else {
            self.heap.pop().map(|Reverse(e)| e)
        }
    }

    pub fn push_raw(&mut self, e: Entry) {
        if self.fifo {
            self.queue.push_back((e.2, e.3));
        } else {
            self.heap.push(Reverse(e));
        }
    }

    /// Puts back entries popped (best first) from the top.
    pub fn unpop(&mut self, es: &[Entry]) {
        if self.fifo {
            for e in es.iter().rev() {
                self.queue.push_front((e.2, e.3));
            }
        } else {
            for e in es {
                self.heap.push(Reverse(*e));
            }
        }
    }

    /// Every entry (for re-keying at day roll).
    pub fn drain_all(&mut self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.queue.drain(..).map(|(a, s)| (0, 0, a, s)).collect();
        v.extend(
            std::mem::take(&mut self.heap)
                .into_vec()
                .into_iter()
                .map(|Reverse(e)| e),
        );
        v
    }
}

/// Waiting order key: (255 - priority, arrival sequence): smallest first.
pub(crate) type WaitKey = (u8, u64);

pub(crate) fn wait_key(priority: u8, seq: u64) -> WaitKey {
    (u8::MAX - priority, seq)
}

/// Waiting callers of one (queue, step): key → call slot.
pub(crate) type Waiting = BTreeMap<WaitKey, u32>;
