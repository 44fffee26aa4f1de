//! The ACD's thread and its rings to the shards.
//!
//! The ACD engine ([`crate::acd::Engine`]) is one single writer: it runs on
//! its own thread (off the shard cores when there are others), fed by one
//! bounded lock-free queue (crossbeam `ArrayQueue`) per shard and answering
//! through one per shard, so every queue has one producer and one consumer
//! and nothing takes a lock. A shard that pushed wakes the ACD thread once
//! per loop turn (`unpark`); the ACD wakes each shard it pushed to once per
//! turn (the shard's eventfd waker). A full queue never drops a message:
//! the sender keeps it and tries again on its next turn.
//!
//! The thread also rolls the engine's statistics at each wall-clock quarter
//! hour and at midnight UTC, and logs them then and at exit (the control
//! plane will serve them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

use super::driver::Waker;
use arc_swap::ArcSwapOption;

use crate::acd::{self, Engine, Output};
use crate::call::B2bua;
use crate::cti::event::AgentEvent;
use crate::cti::link::CtiLink;

/// Messages each ring holds.
const RING: usize = 16 * 1024;

/// The rings between the shards and the ACD thread.
pub struct AcdLink {
    to_acd: Vec<ArrayQueue<acd::Input>>,
    from_acd: Vec<ArrayQueue<Output>>,
    thread: OnceLock<Thread>,
    /// Times a ring was found full (the message waited for the next turn).
    pub full: AtomicU64,
    /// The ACD's statistics, republished every [`PUBLISH_EVERY`] for
    /// readers on other threads (the control plane's `/metrics`): swapped
    /// whole, so a reader never holds the ACD up.
    pub stats: ArcSwapOption<acd::stats::Stats>,
}

/// How often the ACD thread republishes its statistics.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl AcdLink {
    pub fn new(shards: usize) -> Arc<AcdLink> {
        Arc::new(AcdLink {
            to_acd: (0..shards).map(|_| ArrayQueue::new(RING)).collect(),
            from_acd: (0..shards).map(|_| ArrayQueue::new(RING)).collect(),
            thread: OnceLock::new(),
            full: AtomicU64::new(0),
            stats: ArcSwapOption::empty(),
        })
    }

    /// Shard `shard` hands its inputs over, in order; what does not fit
    /// stays in `backlog`. True when anything went.
    pub fn submit(&self, shard: usize, backlog: &mut VecDeque<acd::Input>) -> bool {
        let Some(q) = self.to_acd.get(shard) else {
            backlog.clear();
            return false;
        };
        let mut sent = false;
        while let Some(i) = backlog.pop_front() {
            if let Err(i) = q.push(i) {
                backlog.push_front(i);
                self.full.fetch_add(1, Ordering::Relaxed);
                break;
            }
            sent = true;
        }
        sent
    }

    /// Wakes the ACD thread (after a shard submitted).
    pub fn wake_acd(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The ACD's decisions for shard `shard`.
    pub fn drain(&self, shard: usize, mut f: impl FnMut(Output)) {
        if let Some(q) = self.from_acd.get(shard) {
            while let Some(o) = q.pop() {
                f(o);
            }
        }
    }
}

/// The shard an output is for (None: for the log only).
fn shard_of(o: &Output) -> Option<usize> {
    let call = match o {
        Output::Offer { call, .. }
        | Output::Cancel { call, .. }
        | Output::Announce { call, .. }
        | Output::Route { call, .. }
        | Output::CallBack { call, .. } => *call,
        Output::AgentState { .. } => return None,
    };
    Some(usize::from(B2bua::split_key(call).0))
}

/// Seconds to the next wall-clock quarter hour, and whether it is midnight
/// UTC.
fn next_quarter(now_unix: u64) -> (u64, bool) {
    let next = (now_unix / 900 + 1) * 900;
    (next - now_unix, next.is_multiple_of(86_400))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the ACD thread; it runs until `stop` is set, then logs the day's
/// statistics. `wakers` arrive once the shards are up.
pub fn start(
    engine: Engine,
    link: Arc<AcdLink>,
    stop: Arc<AtomicBool>,
    wakers: Arc<OnceLock<Arc<Vec<Waker>>>>,
    cti: Arc<CtiLink>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let handle = std::thread::Builder::new().name("acd".into()).spawn({
        let link = link.clone();
        move || run(engine, &link, &stop, &wakers, &cti)
    })?;
    let _ = link.thread.set(handle.thread().clone());
    Ok(handle)
}

fn run(
    mut engine: Engine,
    link: &AcdLink,
    stop: &AtomicBool,
    wakers: &OnceLock<Arc<Vec<Waker>>>,
    cti: &CtiLink,
) {
    let shards = link.from_acd.len();
    let mut agent_events: VecDeque<AgentEvent> = VecDeque::new();
    let mut backlog: Vec<VecDeque<Output>> = (0..shards).map(|_| VecDeque::new()).collect();
    let mut touched = vec![false; shards];
    let (secs, mut midnight) = next_quarter(unix_now());
    let mut roll_at = Instant::now() + Duration::from_secs(secs);
    let mut publish_at = Instant::now();
    loop {
        let now = Instant::now();
        for q in &link.to_acd {
            while let Some(i) = q.pop() {
                engine.handle(now, i);
            }
        }
        cti.drain_acd(|i| engine.handle(now, i));
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        if now >= roll_at {
            engine.roll_interval(now);
            if midnight {
                engine.roll_day(now);
            }
            tracing::info!(
                "acd statistics (quarter hour ended):\n{}",
                engine.stats(now)
            );
            let (secs, m) = next_quarter(unix_now());
            midnight = m;
            roll_at = now + Duration::from_secs(secs.max(1));
        }
        if now >= publish_at {
            link.stats.store(Some(Arc::new(engine.stats(now))));
            publish_at = now + PUBLISH_EVERY;
        }
        while let Some(o) = engine.poll_output() {
            match shard_of(&o) {
                Some(s) if s < shards => backlog[s].push_back(o),
                Some(_) => {}
                None => {
                    log_agent(&engine, &o);
                    if let Output::AgentState {
                        agent,
                        state,
                        reason,
                    } = o
                    {
                        agent_events.push_back(AgentEvent {
                            agent: engine.settings().agent_name(agent).to_owned(),
                            state,
                            reason,
                            at_ms: unix_ms(),
                        });
                    }
                }
            }
        }
        if !agent_events.is_empty() {
            cti.submit_agent(&mut agent_events);
        }
        for (s, b) in backlog.iter_mut().enumerate() {
            while let Some(o) = b.pop_front() {
                if let Err(o) = link.from_acd[s].push(o) {
                    b.push_front(o);
                    link.full.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                touched[s] = true;
            }
        }
        if let Some(w) = wakers.get() {
            for (s, t) in touched.iter_mut().enumerate() {
                if std::mem::take(t)
                    && let Some(w) = w.get(s)
                {
                    w.wake();
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!("acd statistics at exit:\n{}", engine.stats(Instant::now()));
            return;
        }
        let backlogged = backlog.iter().any(|b| !b.is_empty()) || !agent_events.is_empty();
        let wait = engine
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(roll_at.saturating_duration_since(now))
            .min(publish_at.saturating_duration_since(now))
            .min(if backlogged {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(1)
            });
        if !wait.is_zero() {
            std::thread::park_timeout(wait);
        }
    }
}

fn log_agent(engine: &Engine, o: &Output) {
    if let Output::AgentState {
        agent,
        state,
        reason,
    } = o
    {
        tracing::info!(
            agent = engine.settings().agent_name(*agent),
            state = ?state,
            reason = ?reason,
            "agent state"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_hours_and_midnight() {
        assert_eq!(next_quarter(0), (900, false));
        assert_eq!(next_quarter(899), (1, false));
        assert_eq!(next_quarter(86_399), (1, true));
        assert_eq!(next_quarter(86_400 - 900), (900, true));
    }

    #[test]
    fn a_full_ring_keeps_the_rest_in_order() {
        let link = AcdLink::new(1);
        let mut backlog: VecDeque<acd::Input> = (0..RING as u64 + 2)
            .map(|i| acd::Input::Leave {
                call: acd::CallKey(i),
            })
            .collect();
        assert!(link.submit(0, &mut backlog));
        assert_eq!(backlog.len(), 2);
        assert_eq!(
            backlog.front(),
            Some(&acd::Input::Leave {
                call: acd::CallKey(RING as u64)
            })
        );
        assert_eq!(link.full.load(Ordering::Relaxed), 1);
    }
}
