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

/// How a pool keeps its free agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// LongestIdle, RingAll: push order is idle order.
    Fifo,
    /// LeastTalkTime: min-heap on (talk, idle).
    Heap,
    /// FewestCalls: a FIFO per count of calls (idle order within one).
    Buckets,
    /// Random: an unordered bag, a seeded random slot is taken.
    Bag,
    /// Linear, RoundRobin: one bit per eligible agent in member order.
    Bits,
}

#[derive(Debug)]
enum Store {
    Fifo(VecDeque<(u32, u32)>),
    Heap(BinaryHeap<Reverse<Entry>>),
    Buckets {
        /// Count → FIFO; no empty bucket is kept.
        b: BTreeMap<u64, VecDeque<(u32, u32)>>,
        /// Emptied FIFOs, for reuse (no allocation in steady state).
        spare: Vec<VecDeque<(u32, u32)>>,
        /// Entries in all buckets.
        n: usize,
    },
    Bag(Vec<(u32, u32)>),
    Bits {
        words: Vec<u64>,
        /// Lowest word that may have a bit set.
        lo: usize,
        /// Per bit: the agent and its rank, ascending.
        agents: Vec<u32>,
        ranks: Vec<u32>,
    },
}

/// Free agents of one pool (see the module documentation).
#[derive(Debug)]
pub(crate) struct Pool {
    store: Store,
    /// Agents eligible for this pool (the compaction threshold).
    eligible: u32,
}

/// What a pick may take: `valid(agent, serial)` says an entry is current;
/// agents for which `avoid` holds are taken only when no other is free;
/// `never` is never taken.
pub(crate) struct Pick<'a, V: Fn(u32, u32) -> bool, A: Fn(u32) -> bool> {
    pub valid: V,
    pub avoid: A,
    pub never: Option<u32>,
    /// Bits pools: start after this rank, wrapping (RoundRobin).
    pub after: Option<u32>,
    pub rng: &'a mut u64,
    pub scratch: &'a mut Vec<Entry>,
}

/// The first entry of `q` that is valid and `ok`, removed; stale entries
/// at the front are dropped on the way; `fb` gets the index of the first
/// valid one that is only `fallback`.
fn fifo_pick(
    q: &mut VecDeque<(u32, u32)>,
    valid: &impl Fn(u32, u32) -> bool,
    ok: impl Fn(u32) -> bool,
    fallback: impl Fn(u32) -> bool,
    fb: &mut Option<usize>,
) -> Option<u32> {
    let mut i = 0;
    while i < q.len() {
        let (a, s) = q[i];
        if !valid(a, s) {
            if i == 0 {
                q.pop_front();
            } else {
                i += 1;
            }
            continue;
        }
        if ok(a) {
            q.remove(i);
            return Some(a);
        }
        if fb.is_none() && fallback(a) {
            *fb = Some(i);
        }
        i += 1;
    }
    None
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

impl Pool {
    /// A Bits pool gets its agents and ranks (ascending rank).
    pub fn new(kind: Kind, eligible: u32, members: Vec<(u32, u32)>) -> Pool {
        let store = match kind {
            Kind::Fifo => Store::Fifo(VecDeque::new()),
            Kind::Heap => Store::Heap(BinaryHeap::new()),
            Kind::Buckets => Store::Buckets {
                b: BTreeMap::new(),
                spare: Vec::new(),
                n: 0,
            },
            Kind::Bag => Store::Bag(Vec::new()),
            Kind::Bits => Store::Bits {
                words: vec![0; members.len().div_ceil(64)],
                lo: 0,
                ranks: members.iter().map(|m| m.0).collect(),
                agents: members.iter().map(|m| m.1).collect(),
            },
        };
        Pool { store, eligible }
    }

    /// Adds a free agent: `e.2` agent, `e.3` serial; for Heap `(e.0, e.1)`
    /// is the key, for Bits `e.0` the agent's bit.
    pub fn push(&mut self, e: Entry, valid: impl Fn(u32, u32) -> bool) {
        let cap = 2 * self.eligible as usize + 32;
        match &mut self.store {
            Store::Fifo(q) => {
                if q.len() >= cap {
                    q.retain(|x| valid(x.0, x.1));
                }
                q.push_back((e.2, e.3));
            }
            Store::Heap(h) => {
                if h.len() >= cap {
                    h.retain(|Reverse(x)| valid(x.2, x.3));
                }
                h.push(Reverse(e));
            }
            Store::Buckets { b, spare, n } => {
                if *n >= cap {
                    *n = 0;
                    for q in b.values_mut() {
                        q.retain(|x| valid(x.0, x.1));
                        *n += q.len();
                    }
                    b.retain(|_, q| {
                        if q.is_empty() {
                            spare.push(std::mem::take(q));
                        }
                        !q.is_empty()
                    });
                }
                b.entry(e.0)
                    .or_insert_with(|| spare.pop().unwrap_or_default())
                    .push_back((e.2, e.3));
                *n += 1;
            }
            Store::Bag(v) => {
                if v.len() >= cap {
                    v.retain(|x| valid(x.0, x.1));
                }
                v.push((e.2, e.3));
            }
            Store::Bits { words, lo, .. } => {
                let i = e.0 as usize;
                if let Some(w) = words.get_mut(i / 64) {
                    *w |= 1 << (i % 64);
                    *lo = (*lo).min(i / 64);
                }
            }
        }
    }

    /// Takes every valid agent but `never` (ring-all; Fifo pools).
    pub fn take_all(
        &mut self,
        valid: impl Fn(u32, u32) -> bool,
        never: Option<u32>,
        out: &mut Vec<u32>,
    ) {
        if let Store::Fifo(q) = &mut self.store {
            let mut kept = None;
            while let Some((a, s)) = q.pop_front() {
                if !valid(a, s) {
                    continue;
                }
                if Some(a) == never {
                    kept = Some((a, s));
                } else {
                    out.push(a);
                }
            }
            if let Some(k) = kept {
                q.push_back(k);
            }
        }
    }

    /// Takes the best agent the pick allows: (agent, rank).
    pub fn pick<V: Fn(u32, u32) -> bool, A: Fn(u32) -> bool>(
        &mut self,
        p: Pick<'_, V, A>,
    ) -> Option<(u32, u32)> {
        let ok = |a: u32| Some(a) != p.never && !(p.avoid)(a);
        let fallback = |a: u32| Some(a) != p.never;
        match &mut self.store {
            Store::Fifo(q) => {
                let mut fb = None;
                if let Some(a) = fifo_pick(q, &p.valid, ok, fallback, &mut fb) {
                    return Some((a, 0));
                }
                fb.and_then(|i| q.remove(i)).map(|(a, _)| (a, 0))
            }
            Store::Buckets { b, spare, n } => {
                let mut fb: Option<(u64, usize)> = None;
                let mut got = None;
                let mut emptied = 0;
                for (&k, q) in b.iter_mut() {
                    let before = q.len();
                    let mut f = None;
                    got = fifo_pick(q, &p.valid, ok, fallback, &mut f);
                    *n -= before - q.len();
                    if q.is_empty() {
                        emptied += 1;
                    }
                    if got.is_some() {
                        break;
                    }
                    if fb.is_none() {
                        fb = f.map(|i| (k, i));
                    }
                }
                if got.is_none()
                    && let Some((k, i)) = fb
                    && let Some(q) = b.get_mut(&k)
                {
                    *n -= 1;
                    got = q.remove(i).map(|(a, _)| a);
                    if q.is_empty() {
                        emptied += 1;
                    }
                }
                if emptied > 0 {
                    b.retain(|_, q| {
                        if q.is_empty() {
                            spare.push(std::mem::take(q));
                        }
                        !q.is_empty()
                    });
                }
                got.map(|a| (a, 0))
            }
            Store::Heap(h) => {
                p.scratch.clear();
                let mut found = None;
                while let Some(Reverse(e)) = h.pop() {
                    if !(p.valid)(e.2, e.3) {
                        continue;
                    }
                    if ok(e.2) {
                        found = Some(e);
                        break;
                    }
                    p.scratch.push(e);
                }
                if found.is_none()
                    && let Some(i) = p.scratch.iter().position(|e| fallback(e.2))
                {
                    found = Some(p.scratch.remove(i));
                }
                for e in p.scratch.drain(..) {
                    h.push(Reverse(e));
                }
                found.map(|e| (e.2, 0))
            }
            Store::Bag(v) => {
                let mut tries = 0;
                while !v.is_empty() && tries < 4 {
                    let i = (xorshift(p.rng) % v.len() as u64) as usize;
                    let (a, s) = v[i];
                    if !(p.valid)(a, s) {
                        v.swap_remove(i);
                    } else if ok(a) {
                        v.swap_remove(i);
                        return Some((a, 0));
                    } else {
                        tries += 1;
                    }
                }
                v.retain(|x| (p.valid)(x.0, x.1));
                let i = v
                    .iter()
                    .position(|x| ok(x.0))
                    .or_else(|| v.iter().position(|x| fallback(x.0)))?;
                Some((v.swap_remove(i).0, 0))
            }
            Store::Bits {
                words,
                lo,
                agents,
                ranks,
            } => {
                let n = agents.len();
                if n == 0 {
                    return None;
                }
                let start = p
                    .after
                    .map_or(0, |r| ranks.partition_point(|&x| x <= r) % n);
                let mut fb = None;
                // Bits from `start` to the end, then from 0 to `start`.
                for (from, to) in [(start, n), (0, start)] {
                    let mut w = (from / 64).max(if from == 0 { *lo } else { 0 });
                    let end_w = to.div_ceil(64);
                    let mut first_nonzero = None;
                    while w < end_w {
                        let mut bits = words[w];
                        if w == from / 64 {
                            bits &= !0u64 << (from % 64);
                        }
                        while bits != 0 {
                            let b = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            let i = w * 64 + b;
                            if i >= to {
                                break;
                            }
                            let a = agents[i];
                            if !(p.valid)(a, 0) {
                                words[w] &= !(1 << b);
                                continue;
                            }
                            if ok(a) {
                                words[w] &= !(1 << b);
                                return Some((a, ranks[i]));
                            }
                            if fb.is_none() && fallback(a) {
                                fb = Some(i);
                            }
                        }
                        if first_nonzero.is_none() && words[w] != 0 {
                            first_nonzero = Some(w);
                        }
                        w += 1;
                    }
                    if from == 0 && to == n {
                        *lo = first_nonzero.unwrap_or(words.len());
                    }
                }
                let i = fb?;
                words[i / 64] &= !(1 << (i % 64));
                Some((agents[i], ranks[i]))
            }
        }
    }

    /// Re-keys a pool's current entries at the day's roll (FewestCalls,
    /// LeastTalkTime: every count restarts at zero; FewestCalls keeps the
    /// agents in the order of their old counts).
    pub fn rekey(&mut self, valid: impl Fn(u32, u32) -> bool) {
        if let Store::Buckets { b, n, .. } = &mut self.store {
            let mut all: VecDeque<(u32, u32)> = VecDeque::new();
            for q in b.values_mut() {
                all.extend(q.drain(..).filter(|x| valid(x.0, x.1)));
            }
            *n = all.len();
            b.clear();
            if !all.is_empty() {
                b.insert(0, all);
            }
        }
        if let Store::Heap(h) = &mut self.store {
            let v: Vec<Entry> = std::mem::take(h)
                .into_vec()
                .into_iter()
                .map(|Reverse(e)| e)
                .filter(|e| valid(e.2, e.3))
                .collect();
            h.extend(v.into_iter().map(|e| Reverse((0, e.1, e.2, e.3))));
        }
    }
}

/// Waiting order key: (255 - priority, arrival sequence): smallest first.
pub(crate) type WaitKey = (u8, u64);

pub(crate) fn wait_key(priority: u8, seq: u64) -> WaitKey {
    (u8::MAX - priority, seq)
}

/// Waiting callers of one (queue, step): key → call slot.
pub(crate) type Waiting = BTreeMap<WaitKey, u32>;
