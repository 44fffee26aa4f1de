//! The rings between the engines and the control plane.
//!
//! One bounded lock-free queue (crossbeam `ArrayQueue`) per direction and
//! per shard, plus one each way with the ACD thread, so every queue has
//! one producer and one consumer and nothing takes a lock. The engines
//! never wait for the control plane: a shard whose ring is full keeps the
//! rest in its own backlog and tries again on its next turn. The control
//! plane drains its rings every [`POLL_EVERY`] and wakes a shard (its
//! eventfd) or the ACD thread after pushing to them.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use super::event::{AgentEvent, CallCommand, ToControl};
use crate::acd;

/// Messages each ring holds.
const RING: usize = 16 * 1024;

/// How often the control plane looks at its rings.
pub const POLL_EVERY: Duration = Duration::from_millis(2);

type Wake = Box<dyn Fn(usize) + Send + Sync>;

pub struct CtiLink {
    to_control: Vec<ArrayQueue<ToControl>>,
    to_shard: Vec<ArrayQueue<CallCommand>>,
    agent_events: ArrayQueue<AgentEvent>,
    to_acd: ArrayQueue<acd::Input>,
    wake_shard: OnceLock<Wake>,
    wake_acd: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Times a ring was found full.
    pub full: AtomicU64,
}

impl CtiLink {
    pub fn new(shards: usize) -> CtiLink {
        CtiLink {
            to_control: (0..shards).map(|_| ArrayQueue::new(RING)).collect(),
            to_shard: (0..shards).map(|_| ArrayQueue::new(RING)).collect(),
            agent_events: ArrayQueue::new(RING),
            to_acd: ArrayQueue::new(RING),
            wake_shard: OnceLock::new(),
            wake_acd: OnceLock::new(),
            full: AtomicU64::new(0),
        }
    }

    pub fn shards(&self) -> usize {
        self.to_shard.len()
    }

    /// How the control plane wakes shard `n` and the ACD thread (set once
    /// they run).
    pub fn set_wakers(
        &self,
        shard: impl Fn(usize) + Send + Sync + 'static,
        acd: impl Fn() + Send + Sync + 'static,
    ) {
        let _ = self.wake_shard.set(Box::new(shard));
        let _ = self.wake_acd.set(Box::new(acd));
    }

    /// Shard `shard` hands over what it has for the control plane, in
    /// order; what does not fit stays in `backlog`.
    pub fn submit(&self, shard: usize, backlog: &mut VecDeque<ToControl>) {
        let Some(q) = self.to_control.get(shard) else {
            backlog.clear();
            return;
        };
        while let Some(m) = backlog.pop_front() {
            if let Err(m) = q.push(m) {
                backlog.push_front(m);
                self.full.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }

    /// The ACD thread hands over agent state changes (kept in `backlog`
    /// when the ring is full).
    pub fn submit_agent(&self, backlog: &mut VecDeque<AgentEvent>) {
        while let Some(m) = backlog.pop_front() {
            if let Err(m) = self.agent_events.push(m) {
                backlog.push_front(m);
                self.full.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }

    /// Commands for shard `shard`.
    pub fn drain_commands(&self, shard: usize, mut f: impl FnMut(CallCommand)) {
        if let Some(q) = self.to_shard.get(shard) {
            while let Some(c) = q.pop() {
                f(c);
            }
        }
    }

    /// Inputs for the ACD from the control plane.
    pub fn drain_acd(&self, mut f: impl FnMut(acd::Input)) {
        while let Some(i) = self.to_acd.pop() {
            f(i);
        }
    }

    /// Control plane side: a command for shard `shard`. False when the
    /// ring is full (the client is told to retry).
    pub fn command(&self, shard: usize, c: CallCommand) -> bool {
        let Some(q) = self.to_shard.get(shard) else {
            return false;
        };
        if q.push(c).is_err() {
            self.full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(w) = self.wake_shard.get() {
            w(shard);
        }
        true
    }

    /// Control plane side: an input for the ACD.
    pub fn acd(&self, i: acd::Input) -> bool {
        if self.to_acd.push(i).is_err() {
            self.full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(w) = self.wake_acd.get() {
            w();
        }
        true
    }

    /// Control plane side: what the shards sent, shard by shard (each
    /// shard's messages in order).
    pub fn drain_shards(&self, mut f: impl FnMut(ToControl)) {
        for q in &self.to_control {
            while let Some(m) = q.pop() {
                f(m);
            }
        }
    }

    /// Control plane side: the agents' state changes, in order.
    pub fn drain_agents(&self, mut f: impl FnMut(AgentEvent)) {
        while let Some(e) = self.agent_events.pop() {
            f(e);
        }
    }
}
