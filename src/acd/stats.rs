//! Statistics: counters per queue (today, the current 15-minute interval
//! and the last closed one) and per agent (today), and the snapshot
//! [`Stats`] with its text form: per queue a line for today and one for the
//! last closed interval (the shell prints right after closing one), then a
//! line per agent.

use std::fmt;
use std::time::Duration;

use super::AgentState;

/// Counters of one queue over a period (interval or day).
///
/// Today's figures obey `offered = answered + abandoned + overflowed +
/// waiting` at every instant (a caller rejected on entry for max length or
/// an empty queue counts as offered and overflowed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Callers who entered (including those sent to `exit` at once).
    pub offered: u64,
    pub answered: u64,
    /// Callers who left (hung up) before an agent answered.
    pub abandoned: u64,
    /// Their total wait.
    pub abandoned_wait: Duration,
    /// Callers sent away: overflow, max wait, max length, empty.
    pub overflowed: u64,
    /// Answered within the queue's `service_level`.
    pub in_service_level: u64,
    /// Callbacks requested.
    pub callbacks: u64,
    /// Total wait of answered callers (ASA = this / answered).
    pub answered_wait: Duration,
    /// Calls whose handling (talk + wrap-up) ended in the period.
    pub handled: u64,
    /// Their total talk + wrap-up (AHT = this / handled).
    pub handle_time: Duration,
}

impl QueueCounters {
    /// Average speed of answer.
    pub fn asa(&self) -> Duration {
        avg(self.answered_wait, self.answered)
    }

    /// Average handle time (talk + wrap-up).
    pub fn aht(&self) -> Duration {
        avg(self.handle_time, self.handled)
    }
}

fn avg(total: Duration, n: u64) -> Duration {
    if n == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(total.as_secs_f64() / n as f64)
    }
}

/// Counters of one agent today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Calls answered.
    pub calls: u64,
    /// Talk time of calls that ended.
    pub talk: Duration,
    /// Time spent in each state, indexed by [`AgentState::index`].
    pub time_in: [Duration; 6],
}

/// One queue in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    /// Callers in the queue now (waiting, ringing, parked callbacks).
    pub waiting: u64,
    /// The longest current wait.
    pub longest_wait: Duration,
    pub today: QueueCounters,
    /// The current 15-minute interval.
    pub interval: QueueCounters,
    /// The interval closed by the last [`super::Engine::roll_interval`].
    pub last_interval: QueueCounters,
}

/// One agent in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStats {
    pub id: String,
    pub state: AgentState,
    pub reason: Option<u16>,
    /// Time in the current state.
    pub for_: Duration,
    /// Today's counters, the current state's time included.
    pub today: AgentCounters,
}

/// A snapshot of the engine's statistics ([`super::Engine::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub queues: Vec<QueueStats>,
    pub agents: Vec<AgentStats>,
}

fn counters(
    f: &mut fmt::Formatter<'_>,
    waiting: u64,
    longest: Duration,
    c: &QueueCounters,
) -> fmt::Result {
    write!(
        f,
        "waiting={} longest_wait_s={} offered={} answered={} abandoned={} abandoned_wait_s={} \
         overflowed={} in_service_level={} callbacks={} asa_s={:.1} aht_s={:.1}",
        waiting,
        longest.as_secs(),
        c.offered,
        c.answered,
        c.abandoned,
        c.abandoned_wait.as_secs(),
        c.overflowed,
        c.in_service_level,
        c.callbacks,
        c.asa().as_secs_f64(),
        c.aht().as_secs_f64()
    )
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for q in &self.queues {
            write!(f, "queue {} ", q.name)?;
            counters(f, q.waiting, q.longest_wait, &q.today)?;
            write!(f, "\n  queue {} last_interval ", q.name)?;
            counters(f, q.waiting, q.longest_wait, &q.last_interval)?;
            writeln!(f)?;
        }
        for a in &self.agents {
            let t = &a.today.time_in;
            writeln!(
                f,
                "agent {} state={} for_s={} calls={} talk_s={} ready_s={} not_ready_s={} \
                 reserved_s={} on_call_s={} wrap_up_s={}",
                a.id,
                a.state,
                a.for_.as_secs(),
                a.today.calls,
                a.today.talk.as_secs(),
                t[AgentState::Ready.index()].as_secs(),
                t[AgentState::NotReady.index()].as_secs(),
                t[AgentState::Reserved.index()].as_secs(),
                t[AgentState::OnCall.index()].as_secs(),
                t[AgentState::WrapUp.index()].as_secs(),
            )?;
        }
        Ok(())
    }
}
