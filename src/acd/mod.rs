//! TEMP STUB (not committed): the API of the helper's engine.
pub use crate::config::contact::{Route, Strategy, Target};
use std::time::{Duration, Instant};
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u32);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u32);
pub struct Settings {
    cc: crate::config::contact::ContactCenter,
}
impl Settings {
    pub fn from_config(cc: &crate::config::contact::ContactCenter, _seed: u64) -> Settings {
        Settings { cc: cc.clone() }
    }
    pub fn agent(&self, id: &str) -> Option<AgentId> {
        self.cc
            .agents
            .iter()
            .position(|a| a.id == id)
            .map(|i| AgentId(i as u32))
    }
    pub fn agent_name(&self, a: AgentId) -> &str {
        &self.cc.agents[a.0 as usize].id
    }
    pub fn queue(&self, name: &str) -> Option<QueueId> {
        self.cc
            .queues
            .iter()
            .position(|a| a.name == name)
            .map(|i| QueueId(i as u32))
    }
    pub fn queue_name(&self, q: QueueId) -> &str {
        &self.cc.queues[q.0 as usize].name
    }
    pub fn queue_config(&self, q: QueueId) -> &crate::config::contact::QueueConfig {
        &self.cc.queues[q.0 as usize]
    }
    pub fn agents(&self) -> usize {
        self.cc.agents.len()
    }
    pub fn queues(&self) -> usize {
        self.cc.queues.len()
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Ready,
    NotReady,
    Reserved,
    OnCall,
    WrapUp,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingOutcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOp {
    Login,
    Logout,
    Ready,
    NotReady { reason: u16 },
    PhoneRegistered,
    PhoneUnregistered,
    ExtendWrapUp(Duration),
    Busy(bool),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Overflow,
    MaxWait,
    MaxLength,
    Empty,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Enqueue {
        call: CallKey,
        queue: QueueId,
        priority: u8,
        caller: u64,
        last_agent: Option<AgentId>,
    },
    Leave {
        call: CallKey,
    },
    RingResult {
        call: CallKey,
        agent: AgentId,
        outcome: RingOutcome,
    },
    CallEnded {
        call: CallKey,
        agent: AgentId,
    },
    Callback {
        call: CallKey,
    },
    Agent {
        agent: AgentId,
        op: AgentOp,
    },
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Offer {
        call: CallKey,
        agent: AgentId,
        queue: QueueId,
    },
    Cancel {
        call: CallKey,
        agent: AgentId,
    },
    Announce {
        call: CallKey,
        position: u32,
        wait: Duration,
    },
    Route {
        call: CallKey,
        route: Route,
        reason: ExitReason,
    },
    CallBack {
        call: CallKey,
        agent: AgentId,
        queue: QueueId,
    },
    AgentState {
        agent: AgentId,
        state: AgentState,
        reason: Option<u16>,
    },
}
pub struct Stats;
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stats")
    }
}
pub struct Engine {
    s: Settings,
}
impl Engine {
    pub fn new(settings: Settings, _now: Instant) -> Engine {
        Engine { s: settings }
    }
    pub fn settings(&self) -> &Settings {
        &self.s
    }
    pub fn handle(&mut self, _now: Instant, _input: Input) {}
    pub fn poll_output(&mut self) -> Option<Output> {
        None
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    pub fn handle_timeout(&mut self, _now: Instant) {}
    pub fn roll_interval(&mut self, _now: Instant) {}
    pub fn roll_day(&mut self, _now: Instant) {}
    pub fn stats(&self, _now: Instant) -> Stats {
        Stats
    }
}
