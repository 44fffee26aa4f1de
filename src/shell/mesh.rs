//! The cross-shard mesh: one bounded lock-free queue (crossbeam `ArrayQueue`)
//! for every ordered pair of shards, so each queue has exactly one producer
//! and one consumer and nothing on the path takes a lock.
//!
//! A shard pushes during its loop iteration and remembers which shards it
//! touched; at the end of the iteration it wakes each of them once (an
//! eventfd write through the driver's `Waker`), so one wake-up carries a
//! batch. A full queue drops the message and counts it: the sender does not
//! block, and SIP's own retransmissions recover a lost forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;

use crate::sip::endpoint::Forwarded;
use crate::sip::registrar::BindingChange;

/// What shards send each other.
#[derive(Debug)]
pub enum MeshMsg {
    /// A SIP message for the shard that owns it.
    Sip(Forwarded),
    /// A registrar change for the location replicas.
    Binding(BindingChange),
    /// Bytes for a TCP connection the receiving shard owns.
    Stream { conn: u64, data: Bytes },
}

/// All queues of the mesh; shared by every shard.
pub struct Mesh {
    shards: usize,
    /// Index `from * shards + to`.
    queues: Vec<ArrayQueue<MeshMsg>>,
    dropped: AtomicU64,
}

impl Mesh {
    pub fn new(shards: usize, capacity: usize) -> Arc<Self> {
        Arc::new(Mesh {
            shards,
            queues: (0..shards * shards)
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Queues `msg` from shard `from` to shard `to`; false (and counted) when
    /// the queue is full or the shard does not exist.
    pub fn push(&self, from: usize, to: usize, msg: MeshMsg) -> bool {
        let ok = from < self.shards
            && to < self.shards
            && self.queues[from * self.shards + to].push(msg).is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Takes everything queued for shard `to`, in per-sender order.
    pub fn drain(&self, to: usize, mut f: impl FnMut(MeshMsg)) {
        if to >= self.shards {
            return;
        }
        for from in 0..self.shards {
            let q = &self.queues[from * self.shards + to];
            while let Some(m) = q.pop() {
                f(m);
            }
        }
    }

    /// Messages dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pair_fifo_and_full_queue_counted() {
        let mesh = Mesh::new(3, 2);
        for i in 0..3u64 {
            let ok = mesh.push(
                0,
                2,
                MeshMsg::Stream {
                    conn: i,
                    data: Bytes::new(),
                },
            );
            assert_eq!(ok, i < 2);
        }
        assert!(mesh.push(
            1,
            2,
            MeshMsg::Stream {
                conn: 9,
                data: Bytes::new()
            }
        ));
        assert!(!mesh.push(
            0,
            7,
            MeshMsg::Stream {
                conn: 0,
                data: Bytes::new()
            }
        ));
        let mut got = Vec::new();
        mesh.drain(2, |m| {
            if let MeshMsg::Stream { conn, .. } = m {
                got.push(conn);
            }
        });
        assert_eq!(got, [0, 1, 9]);
        assert_eq!(mesh.dropped(), 2);
    }

    #[test]
    fn concurrent_producers_lose_nothing_below_capacity() {
        let mesh = Mesh::new(2, 100_000);
        let m2 = mesh.clone();
        let t = std::thread::spawn(move || {
            for i in 0..50_000u64 {
                assert!(m2.push(
                    1,
                    0,
                    MeshMsg::Stream {
                        conn: i,
                        data: Bytes::new()
                    }
                ));
            }
        });
        let mut next = 0u64;
        while next < 50_000 {
            mesh.drain(0, |m| {
                if let MeshMsg::Stream { conn, .. } = m {
                    assert_eq!(conn, next, "FIFO per sender");
                    next += 1;
                }
            });
            std::hint::spin_loop();
        }
        t.join().unwrap();
    }
}
