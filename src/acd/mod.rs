//! The ACD (automatic call distributor): queues, agents, waiting callers
//! and offers.
//!
//! # How it is driven
//! A sans-IO, deterministic, single-writer engine. It runs on one thread
//! (`crate::shell::acd`), fed by per-shard lock-free rings with
//! [`Input`]s, and answers with [`Output`]s the shards execute. It never
//! reads a clock: every call takes `now`, [`Engine::poll_timeout`] says
//! when it next needs [`Engine::handle_timeout`], and after any input the
//! caller drains [`Engine::poll_output`] (FIFO). Randomness (the Random
//! strategy) comes from the seed given to [`Settings::from_config`].
//!
//! # The offer contract
//! [`Output::Offer`] (or [`Output::CallBack`] for a parked callback)
//! reserves an agent for a caller; the shard answers each with exactly one
//! [`Input::RingResult`]. Answered: the agent is on the call. NoAnswer,
//! Busy, Failed: a miss (the agent goes NotReady with
//! [`REASON_NO_ANSWER`] after `acd.max_no_answer` consecutive ones, else
//! Ready) and the caller goes back to its place in the queue, not offered
//! the same agent again while another one is eligible. Cancelled: no miss.
//! The engine also ends offers itself ([`Output::Cancel`]): after
//! `acd.ring_timeout` (a miss), when the caller leaves or asks for a
//! callback, when another agent of a ring-all answered, when the agent
//! logs out, when the caller is routed away. The agent is free at once; the
//! shard's later RingResult for such an offer is stale and ignored (the
//! engine remembers, per caller, which agents it still owes a result, so a
//! stale result never ends a newer offer to the same agent). Every other
//! stale or unknown input is ignored too.
//!
//! # Indexes and complexity
//! * Free agents sit in pools (`index::Pool`), one per distinct (kind
//!   of key, requirement step's skills, members list), shared by every
//!   queue and step with the same. Kinds: a FIFO for LongestIdle and
//!   RingAll (agents enter when they become free, so entry order is idle
//!   order); a bitset in member order for Linear and RoundRobin (the first
//!   set bit, or the first after the queue's last offered member,
//!   wrapping); FIFOs per count of calls today for FewestCalls; a bag with
//!   a seeded random slot for Random; a min-heap on (talk today, idle
//!   since) for LeastTalkTime. Removal is lazy: entries carry the agent's
//!   availability serial (checked against one dense array) and die when
//!   met or at compaction, so an agent being taken touches no pool. An
//!   agent becoming free pushes into each of its pools: O(P) (O(P log n)
//!   for LeastTalkTime), P fixed by the configuration, not by the number
//!   of agents. A caller arriving takes from one pool: O(1) amortised
//!   (O(log n) heap; bitset scans are a few words).
//! * Per (queue, step) the waiting callers in a `BTreeMap` ordered by
//!   (priority desc, arrival). An agent becoming free looks at the head of
//!   each non-empty waiting map of the queues it serves and takes the best
//!   caller across them: highest priority, then earliest arrival (longest
//!   wait). O(Q_a) with Q_a its queues, one dense counter read for each
//!   empty one.
//! * Callers by [`CallKey`] in a hash map (multiplicative hash) to a slab
//!   of reusable slots; agents and queues are `Vec`s by index; deadlines
//!   in one heap plus FIFO lanes for fixed delays (ring timeout,
//!   wrap-ups). Nothing scans all agents or all queues per decision;
//!   steady state allocates nothing per decision (slots, vectors, buckets
//!   and heaps are reused). Measured figures: `bench/RESULTS.md`, "ACD
//!   engine".
//!
//! # Policies
//! * Relaxation: a caller's requirement step is the last `relax` step whose
//!   `after` has passed since it entered the queue, applied by its timer.
//! * Sticky: with `acd.sticky_days > 0` the last agent to answer a caller
//!   hash is remembered for that many days; `last_agent` in the Enqueue
//!   wins over the memory. A queue with `sticky_wait > 0` keeps such a
//!   caller for that agent (if logged in and a member) up to `sticky_wait`
//!   or until an offer to that agent fails, then any agent will do.
//!   Sticky callers are counted as waiting; their announced position is the
//!   one their arrival gives them.
//! * Login without a registered phone makes the agent Ready anyway (the
//!   shard's offer will fail and count as a miss).
//! * NotReady or Ready asked while Reserved or OnCall applies when the call
//!   ends (after wrap-up); asked in wrap-up it ends the wrap-up.
//! * Callbacks: a parked caller keeps its place, but is held for
//!   [`CALLBACK_HOLD`] after asking (the shard ends the original call
//!   first) and has no overflow, max-wait or announcements. A failed
//!   callback (NoAnswer, Busy, Failed) is retried after [`CALLBACK_RETRY`]
//!   at its place, up to [`CALLBACK_ATTEMPTS`] attempts, then counted
//!   abandoned; it is not a miss of the agent. A callback the shard reports
//!   Cancelled (the customer's leg ended) is abandoned.
//! * Exits (overflow, max wait) fire on time even while the caller is
//!   ringing an agent: the rings are cancelled first.
//! * Estimated wait (announcements): `AHT × position / max(1, logged-in
//!   members)`, with AHT an exponentially weighted moving average (α =
//!   0.2) of the queue's handle times (talk + wrap-up), [`DEFAULT_AHT`]
//!   before the first handled call.

mod index;
mod settings;
pub mod stats;
mod timers;

#[cfg(test)]
mod tests;

pub use crate::config::contact::{Route, Strategy, Target};
pub use settings::{MAX_STEPS, Settings};
pub use stats::{AgentCounters, AgentStats, QueueCounters, QueueStats, Stats};

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use index::{Entry, Kind, Pick, Pool, WaitKey, Waiting, wait_key};
use timers::{Timer, Timers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u32);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u32);

/// NotReady reason the engine sets after `acd.max_no_answer` misses.
pub const REASON_NO_ANSWER: u16 = 1;
/// Handle time assumed for wait estimates before any call was handled.
pub const DEFAULT_AHT: Duration = Duration::from_secs(180);
/// A parked callback is not offered before this long after it was asked.
pub const CALLBACK_HOLD: Duration = Duration::from_secs(10);
/// Delay before a failed callback is tried again.
pub const CALLBACK_RETRY: Duration = Duration::from_secs(60);
/// Callback attempts before the caller counts as abandoned.
pub const CALLBACK_ATTEMPTS: u8 = 3;

const EWMA_ALPHA: f64 = 0.2;
const DAY: Duration = Duration::from_secs(86_400);
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Ready,
    NotReady,
    Reserved,
    OnCall,
    WrapUp,
}

impl AgentState {
    /// Index into [`AgentCounters::time_in`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Every state, in [`AgentState::index`] order.
    pub const ALL: [AgentState; 6] = [
        AgentState::LoggedOut,
        AgentState::Ready,
        AgentState::NotReady,
        AgentState::Reserved,
        AgentState::OnCall,
        AgentState::WrapUp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Ready => "ready",
            AgentState::NotReady => "not_ready",
            AgentState::Reserved => "reserved",
            AgentState::OnCall => "on_call",
            AgentState::WrapUp => "wrap_up",
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

/// The answered call an agent holds.
#[derive(Debug, Clone, Copy)]
struct Current {
    key: CallKey,
    queue: u32,
    answered: Instant,
    /// Set at CallEnded.
    talk: Duration,
}

#[derive(Debug)]
struct Agent {
    state: AgentState,
    reason: Option<u16>,
    /// Entered the current state.
    since: Instant,
    /// Start of the current state's not yet counted time (today).
    acct: Instant,
    /// Bumped at every state change and timer re-arm (timer validity).
    serial: u32,
    /// Bumped each time the agent becomes free (pool entry validity).
    avail: u32,
    busy: bool,
    registered: bool,
    misses: u32,
    pending: Option<Option<u16>>,
    /// The caller slot while Reserved.
    offer: u32,
    cur: Option<Current>,
    wrap_start: Instant,
    wrap_end: Instant,
    ready_since: Instant,
    today: AgentCounters,
    /// Caller slots waiting for this agent only (sticky phase).
    sticky: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    /// In its queue's waiting map of its step.
    Waiting,
    /// In agent's sticky list.
    Sticky(u32),
    /// Parked callback held until its timer.
    Held(Instant),
    /// Offers out.
    Ringing,
}

#[derive(Debug)]
struct Call {
    key: CallKey,
    queue: u32,
    priority: u8,
    seq: u64,
    caller: u64,
    enqueued: Instant,
    step: u8,
    phase: Phase,
    parked: bool,
    attempts: u8,
    offers: Vec<u32>,
    tried: Vec<u32>,
    /// Agents whose ended offers still owe a RingResult.
    stale: Vec<u32>,
    sticky_until: Option<Instant>,
    next_announce: Option<Instant>,
    tgen: u32,
    armed: Option<Instant>,
}

impl Call {
    fn key(&self) -> WaitKey {
        wait_key(self.priority, self.seq)
    }
}

#[derive(Debug)]
struct QueueRt {
    waiting: Vec<Waiting>,
    /// Callers in the queue in any phase.
    present: u32,
    logged_in: u32,
    /// RoundRobin: the rank of the member last offered a call.
    rr_last: Option<u32>,
    aht: Option<f64>,
    today: QueueCounters,
    interval: QueueCounters,
    last_interval: QueueCounters,
}

/// How an offer ended, for the agent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Miss,
    NoMiss,
    Logout,
}

pub struct Engine {
    s: Settings,
    agents: Vec<Agent>,
    calls: Vec<Call>,
    free: Vec<u32>,
    index: KeyMap<CallKey, u32>,
    queues: Vec<QueueRt>,
    pools: Vec<Pool>,
    timers: Timers,
    out: VecDeque<Output>,
    seq: u64,
    rng: u64,
    epoch: Instant,
    sticky: KeyMap<u64, (u32, Instant)>,
    /// Per agent: its availability serial while free (Ready, not busy),
    /// else 0. Dense, so that pool entries are checked without touching
    /// the agent records.
    free_serial: Vec<u32>,
    /// Per queue: callers in its waiting maps (dense: an agent becoming
    /// free skips its empty queues without touching them).
    in_maps: Vec<u32>,
    scratch: Vec<Entry>,
    picked: Vec<u32>,
    freed: Vec<u32>,
    emptied: Vec<u32>,
}

/// A multiplicative hasher for call keys and caller hashes (SipHash's
/// flood resistance is not needed for keys the shards mint).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

fn step_at(steps: &[Duration], waited: Duration) -> u8 {
    let mut k = 0;
    for (i, after) in steps.iter().enumerate().skip(1) {
        if *after <= waited {
            k = i;
        }
    }
    k as u8
}

fn bump(today: &mut QueueCounters, interval: &mut QueueCounters, f: impl Fn(&mut QueueCounters)) {
    f(today);
    f(interval);
}

impl Engine {
    pub fn new(settings: Settings, now: Instant) -> Engine {
        let agents = (0..settings.agents())
            .map(|_| Agent {
                state: AgentState::LoggedOut,
                reason: None,
                since: now,
                acct: now,
                serial: 0,
                avail: 0,
                busy: false,
                registered: false,
                misses: 0,
                pending: None,
                offer: NONE,
                cur: None,
                wrap_start: now,
                wrap_end: now,
                ready_since: now,
                today: AgentCounters::default(),
                sticky: Vec::new(),
            })
            .collect();
        let queues = settings
            .shapes
            .iter()
            .map(|sh| QueueRt {
                waiting: sh.steps.iter().map(|_| Waiting::new()).collect(),
                present: 0,
                logged_in: 0,
                rr_last: None,
                aht: None,
                today: QueueCounters::default(),
                interval: QueueCounters::default(),
                last_interval: QueueCounters::default(),
            })
            .collect();
        let pools: Vec<Pool> = settings
            .pool_kind
            .iter()
            .zip(&settings.pool_eligible)
            .zip(&settings.pool_members)
            .map(|((k, n), m)| {
                let kind = match k {
                    Strategy::LongestIdle | Strategy::RingAll => Kind::Fifo,
                    Strategy::FewestCalls => Kind::Buckets,
                    Strategy::LeastTalkTime => Kind::Heap,
                    Strategy::Random => Kind::Bag,
                    Strategy::Linear | Strategy::RoundRobin => Kind::Bits,
                };
                Pool::new(kind, *n, m.clone())
            })
            .collect();
        let settings_agents = settings.agents();
        let settings_queues = settings.queues();
        Engine {
            rng: (settings.seed ^ 0x9E37_79B9_7F4A_7C15) | 1,
            s: settings,
            agents,
            calls: Vec::new(),
            free: Vec::new(),
            index: KeyMap::default(),
            queues,
            pools,
            timers: Timers::default(),
            out: VecDeque::new(),
            seq: 0,
            epoch: now,
            sticky: KeyMap::default(),
            free_serial: vec![0; settings_agents],
            in_maps: vec![0; settings_queues],
            scratch: Vec::new(),
            picked: Vec::new(),
            freed: Vec::new(),
            emptied: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// Agent `a`'s state (LoggedOut for an unknown agent).
    pub fn agent_state(&self, a: AgentId) -> AgentState {
        self.agents
            .get(a.0 as usize)
            .map_or(AgentState::LoggedOut, |g| g.state)
    }

    /// Agent `a`'s NotReady reason.
    pub fn agent_reason(&self, a: AgentId) -> Option<u16> {
        self.agents.get(a.0 as usize).and_then(|g| g.reason)
    }

    /// Whether agent `a`'s phone is registered (as last reported by
    /// PhoneRegistered / PhoneUnregistered).
    pub fn agent_registered(&self, a: AgentId) -> bool {
        self.agents.get(a.0 as usize).is_some_and(|g| g.registered)
    }

    /// Callers in queue `q` now (waiting, ringing, parked).
    pub fn waiting(&self, q: QueueId) -> u32 {
        self.queues.get(q.0 as usize).map_or(0, |q| q.present)
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Enqueue {
                call,
                queue,
                priority,
                caller,
                last_agent,
            } => self.enqueue(now, call, queue.0, priority, caller, last_agent),
            Input::Leave { call } => {
                if let Some(&c) = self.index.get(&call) {
                    self.abandon(now, c);
                }
            }
            Input::RingResult {
                call,
                agent,
                outcome,
            } => self.ring_result(now, call, agent.0, outcome),
            Input::CallEnded { call, agent } => self.call_ended(now, call, agent.0),
            Input::Callback { call } => self.callback(now, call),
            Input::Agent { agent, op } => {
                if (agent.0 as usize) < self.agents.len() {
                    self.agent_op(now, agent.0, op);
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, t)) = self.timers.pop_due(now) {
            match t {
                Timer::Agent(a, serial) => {
                    let g = &self.agents[a as usize];
                    if g.serial != serial {
                        continue;
                    }
                    match g.state {
                        AgentState::Reserved => {
                            let c = g.offer;
                            self.cancel_ring(c, a, true);
                            if self.calls[c as usize].parked {
                                self.callback_failed(now, c, a);
                            } else {
                                self.end_offer(now, a, c, End::Miss);
                            }
                        }
                        AgentState::WrapUp => {
                            self.finish_wrap(now, a);
                            self.after_call(now, a);
                            if self.free_agent(a) {
                                self.serve_agent(now, a);
                            }
                        }
                        _ => {}
                    }
                }
                Timer::Call(c, gen_) => {
                    let call = &mut self.calls[c as usize];
                    if call.phase == Phase::Free || call.tgen != gen_ {
                        continue;
                    }
                    call.armed = None;
                    self.call_timer(now, c);
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Callers
    // ------------------------------------------------------------------

    fn enqueue(
        &mut self,
        now: Instant,
        key: CallKey,
        q: u32,
        priority: u8,
        caller: u64,
        last_agent: Option<AgentId>,
    ) {
        if q as usize >= self.queues.len() || self.index.contains_key(&key) {
            return;
        }
        let qc = &self.s.shapes[q as usize];
        let rt = &mut self.queues[q as usize];
        bump(&mut rt.today, &mut rt.interval, |c| c.offered += 1);
        let reject = if qc.max_length.is_some_and(|m| rt.present >= m) {
            Some(ExitReason::MaxLength)
        } else if !qc.join_empty && rt.logged_in == 0 {
            Some(ExitReason::Empty)
        } else {
            None
        };
        if let Some(reason) = reject {
            bump(&mut rt.today, &mut rt.interval, |c| c.overflowed += 1);
            self.out.push_back(Output::Route {
                call: key,
                route: self.s.qc(q).exit.clone(),
                reason,
            });
            return;
        }
        rt.present += 1;
        let sticky_wait = qc.sticky_wait;
        let announce = qc.announce_every;
        let mut target = None;
        if !sticky_wait.is_zero() {
            let days = self.s.acd().sticky_days;
            let remembered = (days > 0)
                .then(|| self.sticky.get(&caller))
                .flatten()
                .filter(|(_, at)| now.saturating_duration_since(*at) < DAY * days)
                .map(|(a, _)| *a);
            target = last_agent.map(|a| a.0).or(remembered).filter(|&a| {
                (a as usize) < self.agents.len()
                    && self.agents[a as usize].state != AgentState::LoggedOut
                    && self.s.serves(AgentId(a), QueueId(q))
            });
        }
        self.seq += 1;
        let c = match self.free.pop() {
            Some(c) => c,
            None => {
                self.calls.push(Call {
                    key,
                    queue: 0,
                    priority: 0,
                    seq: 0,
                    caller: 0,
                    enqueued: now,
                    step: 0,
                    phase: Phase::Free,
                    parked: false,
                    attempts: 0,
                    offers: Vec::new(),
                    tried: Vec::new(),
                    stale: Vec::new(),
                    sticky_until: None,
                    next_announce: None,
                    tgen: 0,
                    armed: None,
                });
                (self.calls.len() - 1) as u32
            }
        };
        let step = step_at(&self.s.shapes[q as usize].steps, Duration::ZERO);
        let call = &mut self.calls[c as usize];
        call.key = key;
        call.queue = q;
        call.priority = priority;
        call.seq = self.seq;
        call.caller = caller;
        call.enqueued = now;
        call.step = step;
        call.parked = false;
        call.attempts = 0;
        call.offers.clear();
        call.tried.clear();
        call.stale.clear();
        call.sticky_until = target.map(|_| now + sticky_wait);
        call.phase = target.map_or(Phase::Waiting, Phase::Sticky);
        call.next_announce = announce.map(|d| now + d);
        call.armed = None;
        self.index.insert(key, c);
        self.place(now, c);
        self.arm_call(c);
    }

    /// Puts caller `c` (detached, phase says where) where it belongs: to
    /// an agent if one is free for it, else in its waiting map or sticky
    /// list.
    fn place(&mut self, now: Instant, c: u32) {
        self.place_but(now, c, None);
    }

    /// [`Engine::place`], but not with agent `but`: it has just been freed
    /// by this caller and will take the best waiting caller itself (which
    /// keeps FIFO).
    fn place_but(&mut self, now: Instant, c: u32, but: Option<u32>) {
        match self.calls[c as usize].phase {
            Phase::Sticky(t) => {
                if self.free_agent(t) && but != Some(t) {
                    self.offer(now, c, &[t]);
                } else {
                    self.agents[t as usize].sticky.push(c);
                }
            }
            Phase::Held(_) | Phase::Free => {}
            Phase::Waiting | Phase::Ringing => {
                self.calls[c as usize].phase = Phase::Waiting;
                if !self.pick_for_call(now, c, but) {
                    let call = &self.calls[c as usize];
                    let rt = &mut self.queues[call.queue as usize];
                    rt.waiting[call.step as usize].insert(call.key(), c);
                    self.in_maps[call.queue as usize] += 1;
                }
            }
        }
    }

    /// Takes caller `c` out of its waiting map or sticky list.
    fn detach(&mut self, c: u32) {
        let call = &self.calls[c as usize];
        match call.phase {
            Phase::Waiting => {
                let rt = &mut self.queues[call.queue as usize];
                if rt.waiting[call.step as usize].remove(&call.key()).is_some() {
                    self.in_maps[call.queue as usize] -= 1;
                }
            }
            Phase::Sticky(t) => {
                let l = &mut self.agents[t as usize].sticky;
                if let Some(i) = l.iter().position(|&x| x == c) {
                    l.swap_remove(i);
                }
            }
            _ => {}
        }
    }

    /// Removes caller `c` from the engine.
    fn release(&mut self, c: u32) {
        self.detach(c);
        let call = &mut self.calls[c as usize];
        call.phase = Phase::Free;
        call.tgen = call.tgen.wrapping_add(1);
        self.queues[call.queue as usize].present -= 1;
        self.index.remove(&call.key);
        self.free.push(c);
    }

    /// Tells the shard to stop ringing agent `a` for caller `c`; with
    /// `owe`, the shard's later RingResult for that ring is expected and
    /// will be ignored as stale.
    fn cancel_ring(&mut self, c: u32, a: u32, owe: bool) {
        let call = &mut self.calls[c as usize];
        self.out.push_back(Output::Cancel {
            call: call.key,
            agent: AgentId(a),
        });
        if owe {
            call.stale.push(a);
        }
    }

    /// Ends every open offer of caller `c` (Cancel out, agents free, no
    /// miss); the agents are served by [`Engine::serve_freed`].
    fn cancel_offers(&mut self, now: Instant, c: u32, owe: bool) {
        let offers = std::mem::take(&mut self.calls[c as usize].offers);
        for &a in &offers {
            self.cancel_ring(c, a, owe);
            self.agents[a as usize].offer = NONE;
            self.agent_free_again(now, a, End::NoMiss);
            self.freed.push(a);
        }
        let mut offers = offers;
        offers.clear();
        self.calls[c as usize].offers = offers;
    }

    /// Serves the agents freed meanwhile.
    fn serve_freed(&mut self, now: Instant) {
        while let Some(a) = self.freed.pop() {
            if self.free_agent(a) {
                self.serve_agent(now, a);
            }
        }
    }

    fn abandon(&mut self, now: Instant, c: u32) {
        self.cancel_offers(now, c, false);
        let call = &self.calls[c as usize];
        let wait = now.saturating_duration_since(call.enqueued);
        let rt = &mut self.queues[call.queue as usize];
        bump(&mut rt.today, &mut rt.interval, |k| {
            k.abandoned += 1;
            k.abandoned_wait += wait;
        });
        self.release(c);
        self.serve_freed(now);
    }

    fn route(&mut self, now: Instant, c: u32, reason: ExitReason) {
        self.cancel_offers(now, c, false);
        let call = &self.calls[c as usize];
        let qc = self.s.qc(call.queue);
        let route = match (&reason, &qc.overflow) {
            (ExitReason::Overflow, Some((_, r))) => r.clone(),
            _ => qc.exit.clone(),
        };
        self.out.push_back(Output::Route {
            call: call.key,
            route,
            reason,
        });
        let rt = &mut self.queues[call.queue as usize];
        bump(&mut rt.today, &mut rt.interval, |k| k.overflowed += 1);
        self.release(c);
        self.serve_freed(now);
    }

    fn callback(&mut self, now: Instant, key: CallKey) {
        let Some(&c) = self.index.get(&key) else {
            return;
        };
        if self.calls[c as usize].parked {
            return;
        }
        self.cancel_offers(now, c, true);
        self.detach(c);
        let call = &mut self.calls[c as usize];
        call.parked = true;
        call.sticky_until = None;
        call.phase = Phase::Held(now + CALLBACK_HOLD);
        let rt = &mut self.queues[call.queue as usize];
        bump(&mut rt.today, &mut rt.interval, |k| k.callbacks += 1);
        self.arm_call(c);
        self.serve_freed(now);
    }

    /// Caller `c`'s timer: exits, sticky end, hold end, relaxation,
    /// announcements; then the next one.
    fn call_timer(&mut self, now: Instant, c: u32) {
        let call = &self.calls[c as usize];
        let qc = &self.s.shapes[call.queue as usize];
        let every = qc.announce_every;
        if !call.parked {
            let over = qc.overflow_after.map(|d| call.enqueued + d);
            let max = qc.max_wait.map(|d| call.enqueued + d);
            let due = |t: Option<Instant>| t.filter(|t| *t <= now);
            let reason = match (due(over), due(max)) {
                (Some(o), Some(m)) if m < o => Some(ExitReason::MaxWait),
                (Some(_), _) => Some(ExitReason::Overflow),
                (None, Some(_)) => Some(ExitReason::MaxWait),
                (None, None) => None,
            };
            if let Some(r) = reason {
                return self.route(now, c, r);
            }
        }
        let step = step_at(
            &self.s.shapes[call.queue as usize].steps,
            now.saturating_duration_since(call.enqueued),
        );
        let sticky_over = call.sticky_until.is_some_and(|t| t <= now);
        let held_over = matches!(call.phase, Phase::Held(t) if t <= now);
        if sticky_over || held_over || step != call.step {
            self.detach(c);
            let call = &mut self.calls[c as usize];
            if sticky_over {
                call.sticky_until = None;
                if matches!(call.phase, Phase::Sticky(_)) {
                    call.phase = Phase::Waiting;
                }
            }
            call.step = step;
            let phase = call.phase;
            match phase {
                Phase::Ringing | Phase::Free => {}
                Phase::Held(t) if t > now => {}
                Phase::Held(_) => {
                    call.phase = Phase::Waiting;
                    self.place(now, c);
                }
                Phase::Waiting | Phase::Sticky(_) => self.place(now, c),
            }
        }
        let call = &mut self.calls[c as usize];
        if let (Some(at), Some(every)) = (call.next_announce, every)
            && at <= now
        {
            let mut next = at + every;
            while next <= now {
                next += every;
            }
            call.next_announce = Some(next);
            if matches!(call.phase, Phase::Waiting | Phase::Sticky(_)) && !call.parked {
                let key = call.key();
                let rt = &self.queues[call.queue as usize];
                let ahead: usize = rt.waiting.iter().map(|w| w.range(..key).count()).sum();
                let position = ahead as u32 + 1;
                let aht = rt.aht.map_or(DEFAULT_AHT, Duration::from_secs_f64);
                let wait = aht * position / rt.logged_in.max(1);
                self.out.push_back(Output::Announce {
                    call: call.key,
                    position,
                    wait,
                });
            }
        }
        self.arm_call(c);
    }

    /// Arms caller `c`'s next deadline, if any and not armed already.
    fn arm_call(&mut self, c: u32) {
        let call = &self.calls[c as usize];
        if call.phase == Phase::Free {
            return;
        }
        let qc = &self.s.shapes[call.queue as usize];
        let steps = &qc.steps;
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !call.parked {
            at(qc.overflow_after.map(|d| call.enqueued + d));
            at(qc.max_wait.map(|d| call.enqueued + d));
            at(call.next_announce);
        }
        at(call.sticky_until);
        if let Phase::Held(t) = call.phase {
            at(Some(t));
        }
        at(steps
            .get(call.step as usize + 1)
            .map(|d| call.enqueued + *d));
        if next.is_some() && next != call.armed {
            let call = &mut self.calls[c as usize];
            call.tgen = call.tgen.wrapping_add(1);
            call.armed = next;
            if let Some(t) = next {
                self.timers.arm(t, Timer::Call(c, call.tgen));
            }
        }
    }

    // ------------------------------------------------------------------
    // Matching
    // ------------------------------------------------------------------

    fn free_agent(&self, a: u32) -> bool {
        let g = &self.agents[a as usize];
        g.state == AgentState::Ready && !g.busy
    }

    /// Finds agent(s) for waiting caller `c` (detached) in the pool of its
    /// step and offers; false when none is free. An agent the caller
    /// already tried is taken only when no other is free; `but` never.
    fn pick_for_call(&mut self, now: Instant, c: u32, but: Option<u32>) -> bool {
        let call = &self.calls[c as usize];
        let q = call.queue as usize;
        let shape = &self.s.shapes[q];
        let free = &self.free_serial;
        let valid = |a: u32, serial: u32| {
            let f = free[a as usize];
            // Bits pools ask with serial 0: whether the agent is free.
            if serial == 0 { f != 0 } else { f == serial }
        };
        let pool = &mut self.pools[shape.pools[usize::from(call.step)] as usize];
        let mut picked = std::mem::take(&mut self.picked);
        picked.clear();
        if shape.strategy == Strategy::RingAll && !call.parked {
            pool.take_all(valid, but, &mut picked);
        } else {
            let rr = shape.strategy == Strategy::RoundRobin;
            let rt = &mut self.queues[q];
            let tried = &call.tried;
            let found = pool.pick(Pick {
                valid,
                avoid: |a| tried.contains(&a),
                never: but,
                after: if rr { rt.rr_last } else { None },
                rng: &mut self.rng,
                scratch: &mut self.scratch,
            });
            if let Some((a, rank)) = found {
                if rr {
                    rt.rr_last = Some(rank);
                }
                picked.push(a);
            }
        }
        let any = !picked.is_empty();
        if any {
            self.offer(now, c, &picked);
        }
        self.picked = picked;
        any
    }

    /// Free agent `a` takes the best caller it can serve: its sticky
    /// callers, then the heads of its queues' waiting maps; highest
    /// priority first, then earliest arrival.
    fn serve_agent(&mut self, now: Instant, a: u32) {
        let mut best: Option<(WaitKey, u32)> = None;
        for &c in &self.agents[a as usize].sticky {
            let k = self.calls[c as usize].key();
            if best.is_none_or(|(b, _)| k < b) {
                best = Some((k, c));
            }
        }
        for m in self.s.memberships(a) {
            if self.in_maps[m.queue as usize] == 0 {
                continue;
            }
            let rt = &self.queues[m.queue as usize];
            let mut bits = m.steps;
            while bits != 0 {
                let k = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some((&key, &c)) = rt.waiting[k].first_key_value()
                    && best.is_none_or(|(b, _)| key < b)
                {
                    best = Some((key, c));
                }
            }
        }
        if let Some((_, c)) = best {
            self.detach(c);
            self.offer(now, c, &[a]);
        }
    }

    /// Offers caller `c` (detached) to `agents`.
    fn offer(&mut self, now: Instant, c: u32, agents: &[u32]) {
        let ring = self.s.acd().ring_timeout;
        let call = &mut self.calls[c as usize];
        call.phase = Phase::Ringing;
        let (key, q, parked) = (call.key, call.queue, call.parked);
        for &a in agents {
            self.calls[c as usize].offers.push(a);
            self.out.push_back(if parked {
                Output::CallBack {
                    call: key,
                    agent: AgentId(a),
                    queue: QueueId(q),
                }
            } else {
                Output::Offer {
                    call: key,
                    agent: AgentId(a),
                    queue: QueueId(q),
                }
            });
            self.agents[a as usize].offer = c;
            self.set_state(now, a, AgentState::Reserved, None);
            let serial = self.agents[a as usize].serial;
            self.timers.arm_after(now, ring, Timer::Agent(a, serial));
        }
    }

    fn ring_result(&mut self, now: Instant, key: CallKey, a: u32, outcome: RingOutcome) {
        let Some(&c) = self.index.get(&key) else {
            return;
        };
        let call = &mut self.calls[c as usize];
        // A result for an offer the engine already ended. With a newer
        // offer to the same agent open, an answer or failure is the newer
        // ring's (an ended ring reports Cancelled).
        if let Some(i) = call.stale.iter().position(|&x| x == a)
            && (outcome == RingOutcome::Cancelled || !call.offers.contains(&a))
        {
            call.stale.swap_remove(i);
            return;
        }
        if !call.offers.contains(&a)
            || (a as usize) >= self.agents.len()
            || self.agents[a as usize].offer != c
        {
            return;
        }
        match outcome {
            RingOutcome::Answered => self.answered(now, c, a),
            RingOutcome::NoAnswer | RingOutcome::Busy | RingOutcome::Failed if call.parked => {
                self.callback_failed(now, c, a);
            }
            RingOutcome::NoAnswer | RingOutcome::Busy | RingOutcome::Failed => {
                call.sticky_until = None;
                self.end_offer(now, a, c, End::Miss);
            }
            RingOutcome::Cancelled if call.parked => {
                call.offers.retain(|&x| x != a);
                self.agents[a as usize].offer = NONE;
                self.agent_free_again(now, a, End::NoMiss);
                self.freed.push(a);
                self.abandon(now, c);
            }
            RingOutcome::Cancelled => self.end_offer(now, a, c, End::NoMiss),
        }
    }

    /// Callback of parked caller `c` through agent `a` failed: retried
    /// after [`CALLBACK_RETRY`], abandoned after [`CALLBACK_ATTEMPTS`];
    /// not a miss of the agent.
    fn callback_failed(&mut self, now: Instant, c: u32, a: u32) {
        let call = &mut self.calls[c as usize];
        call.attempts += 1;
        let give_up = call.attempts >= CALLBACK_ATTEMPTS;
        call.offers.retain(|&x| x != a);
        let last = call.offers.is_empty();
        self.agents[a as usize].offer = NONE;
        self.agent_free_again(now, a, End::NoMiss);
        self.freed.push(a);
        if last && give_up {
            self.abandon(now, c);
        } else if last {
            self.calls[c as usize].phase = Phase::Held(now + CALLBACK_RETRY);
            self.arm_call(c);
        }
        self.serve_freed(now);
    }

    /// Offer of caller `c` to agent `a` ended without an answer: the agent
    /// is free again (or not), the caller back in place once no offer is
    /// left.
    fn end_offer(&mut self, now: Instant, a: u32, c: u32, end: End) {
        self.agents[a as usize].offer = NONE;
        let call = &mut self.calls[c as usize];
        call.offers.retain(|&x| x != a);
        if end == End::Miss && !call.tried.contains(&a) {
            call.tried.push(a);
        }
        let requeue = call.offers.is_empty();
        self.agent_free_again(now, a, end);
        if requeue {
            let logged_out = self.agents[a as usize].state == AgentState::LoggedOut;
            let call = &mut self.calls[c as usize];
            call.step = step_at(
                &self.s.shapes[call.queue as usize].steps,
                now.saturating_duration_since(call.enqueued),
            );
            // A sticky caller whose offer was cancelled (no miss) keeps
            // waiting for its agent; any miss or logout ends the stickiness.
            if call.sticky_until.is_some() && end == End::NoMiss && !logged_out {
                call.phase = Phase::Sticky(a);
            } else {
                call.sticky_until = None;
                call.phase = Phase::Waiting;
            }
            self.place_but(now, c, Some(a));
            self.arm_call(c);
        }
        if self.free_agent(a) {
            self.serve_agent(now, a);
        }
        self.serve_freed(now);
    }

    fn answered(&mut self, now: Instant, c: u32, a: u32) {
        let call = &mut self.calls[c as usize];
        call.offers.retain(|&x| x != a);
        let (key, q, caller) = (call.key, call.queue, call.caller);
        let wait = now.saturating_duration_since(call.enqueued);
        self.cancel_offers(now, c, false);
        let sl = self.s.shapes[q as usize].service_level;
        let rt = &mut self.queues[q as usize];
        bump(&mut rt.today, &mut rt.interval, |k| {
            k.answered += 1;
            k.answered_wait += wait;
            if wait <= sl {
                k.in_service_level += 1;
            }
        });
        if self.s.acd().sticky_days > 0 {
            self.sticky.insert(caller, (a, now));
        }
        self.release(c);
        let g = &mut self.agents[a as usize];
        g.offer = NONE;
        g.misses = 0;
        g.today.calls += 1;
        g.cur = Some(Current {
            key,
            queue: q,
            answered: now,
            talk: Duration::ZERO,
        });
        self.set_state(now, a, AgentState::OnCall, None);
        self.serve_freed(now);
    }

    // ------------------------------------------------------------------
    // Agents
    // ------------------------------------------------------------------

    /// Agent `a`'s offer ended: Ready, or NotReady after too many misses
    /// or when asked meanwhile, or LoggedOut. Not served here.
    fn agent_free_again(&mut self, now: Instant, a: u32, end: End) {
        let max = self.s.acd().max_no_answer;
        let g = &mut self.agents[a as usize];
        if end == End::Logout {
            return;
        }
        if end == End::Miss {
            g.misses += 1;
            if max > 0 && g.misses >= max {
                g.misses = 0;
                g.pending = None;
                return self.set_state(now, a, AgentState::NotReady, Some(REASON_NO_ANSWER));
            }
        }
        self.after_call(now, a);
    }

    /// The agent is done with a call or offer: the pending state, else
    /// Ready.
    fn after_call(&mut self, now: Instant, a: u32) {
        match self.agents[a as usize].pending.take() {
            Some(Some(r)) => self.set_state(now, a, AgentState::NotReady, Some(r)),
            _ => self.set_state(now, a, AgentState::Ready, None),
        }
    }

    fn call_ended(&mut self, now: Instant, key: CallKey, a: u32) {
        let Some(g) = self.agents.get_mut(a as usize) else {
            return;
        };
        let Some(cur) = g.cur.as_mut().filter(|c| c.key == key && c.talk.is_zero()) else {
            return;
        };
        if g.state != AgentState::OnCall && g.state != AgentState::LoggedOut {
            return;
        }
        let talk = now
            .saturating_duration_since(cur.answered)
            .max(Duration::from_nanos(1));
        cur.talk = talk;
        g.today.talk += talk;
        let q = cur.queue;
        if g.state == AgentState::LoggedOut {
            self.finish_wrap(now, a);
            return;
        }
        let wrap = self.s.shapes[q as usize].wrap_up;
        if wrap.is_zero() {
            self.agents[a as usize].wrap_start = now;
            self.finish_wrap(now, a);
            self.after_call(now, a);
            if self.free_agent(a) {
                self.serve_agent(now, a);
            }
            return;
        }
        self.set_state(now, a, AgentState::WrapUp, None);
        let g = &mut self.agents[a as usize];
        g.wrap_start = now;
        g.wrap_end = now + wrap;
        self.timers.arm_after(now, wrap, Timer::Agent(a, g.serial));
    }

    /// Records the handle time of agent `a`'s call (talk + wrap-up so far).
    fn finish_wrap(&mut self, now: Instant, a: u32) {
        let g = &mut self.agents[a as usize];
        let Some(cur) = g.cur.take() else {
            return;
        };
        let wrap = if g.state == AgentState::WrapUp {
            now.saturating_duration_since(g.wrap_start)
        } else {
            Duration::ZERO
        };
        let handle = cur.talk + wrap;
        let rt = &mut self.queues[cur.queue as usize];
        bump(&mut rt.today, &mut rt.interval, |k| {
            k.handled += 1;
            k.handle_time += handle;
        });
        let h = handle.as_secs_f64();
        rt.aht = Some(rt.aht.map_or(h, |x| x + EWMA_ALPHA * (h - x)));
    }

    fn agent_op(&mut self, now: Instant, a: u32, op: AgentOp) {
        use AgentState as S;
        let state = self.agents[a as usize].state;
        match op {
            AgentOp::Login => {
                if state == S::LoggedOut {
                    self.login(now, a);
                }
            }
            AgentOp::PhoneRegistered => {
                self.agents[a as usize].registered = true;
                if self.s.acd().auto_login && state == S::LoggedOut {
                    self.login(now, a);
                }
            }
            AgentOp::Logout | AgentOp::PhoneUnregistered => {
                if matches!(op, AgentOp::PhoneUnregistered) {
                    self.agents[a as usize].registered = false;
                }
                if state == S::LoggedOut {
                    return;
                }
                self.logout(now, a);
            }
            AgentOp::Ready => match state {
                S::NotReady => self.set_state(now, a, S::Ready, None),
                S::WrapUp => {
                    self.finish_wrap(now, a);
                    self.agents[a as usize].pending = None;
                    self.set_state(now, a, S::Ready, None);
                }
                S::Reserved | S::OnCall => self.agents[a as usize].pending = None,
                _ => {}
            },
            AgentOp::NotReady { reason } => match state {
                S::Ready | S::NotReady => self.set_state(now, a, S::NotReady, Some(reason)),
                S::WrapUp => {
                    self.finish_wrap(now, a);
                    self.agents[a as usize].pending = None;
                    self.set_state(now, a, S::NotReady, Some(reason));
                }
                S::Reserved | S::OnCall => self.agents[a as usize].pending = Some(Some(reason)),
                S::LoggedOut => {}
            },
            AgentOp::ExtendWrapUp(d) => {
                let g = &mut self.agents[a as usize];
                if state != S::WrapUp {
                    return;
                }
                let Some(cur) = g.cur else { return };
                let cap = g.wrap_start + self.s.shapes[cur.queue as usize].wrap_up_max;
                let end = (g.wrap_end + d).min(cap).max(g.wrap_end);
                if end != g.wrap_end {
                    g.wrap_end = end;
                    g.serial = g.serial.wrapping_add(1);
                    self.timers.arm(end, Timer::Agent(a, g.serial));
                }
            }
            AgentOp::Busy(b) => {
                let g = &mut self.agents[a as usize];
                let was = g.busy;
                g.busy = b;
                if b {
                    self.free_serial[a as usize] = 0;
                } else if was && state == S::Ready {
                    // Idle (for LongestIdle) since the other call ended.
                    g.ready_since = now;
                    self.make_available(a);
                }
            }
        }
        if self.free_agent(a) {
            self.serve_agent(now, a);
        }
        self.serve_freed(now);
        self.drain_emptied(now);
    }

    /// Ready, or back OnCall if the agent logged out during a call that
    /// has not ended yet.
    fn login(&mut self, now: Instant, a: u32) {
        if self.agents[a as usize].cur.is_some() {
            self.set_state(now, a, AgentState::OnCall, None);
        } else {
            self.set_state(now, a, AgentState::Ready, None);
        }
    }

    fn logout(&mut self, now: Instant, a: u32) {
        let g = &mut self.agents[a as usize];
        g.pending = None;
        match g.state {
            AgentState::Reserved => {
                let c = g.offer;
                self.cancel_ring(c, a, true);
                self.set_state(now, a, AgentState::LoggedOut, None);
                self.end_offer(now, a, c, End::Logout);
            }
            AgentState::WrapUp => {
                self.finish_wrap(now, a);
                self.set_state(now, a, AgentState::LoggedOut, None);
            }
            _ => self.set_state(now, a, AgentState::LoggedOut, None),
        }
        for c in std::mem::take(&mut self.agents[a as usize].sticky) {
            let call = &mut self.calls[c as usize];
            call.sticky_until = None;
            call.phase = Phase::Waiting;
            self.place(now, c);
            self.arm_call(c);
        }
    }

    /// Queues whose last member logged out, with `leave_when_empty`: their
    /// callers (not parked callbacks) go to `exit`.
    fn drain_emptied(&mut self, now: Instant) {
        while let Some(q) = self.emptied.pop() {
            if self.queues[q as usize].logged_in != 0 {
                continue;
            }
            let mut out: Vec<u32> = Vec::new();
            for w in &self.queues[q as usize].waiting {
                out.extend(w.values().copied());
            }
            for c in out {
                if !self.calls[c as usize].parked {
                    self.route(now, c, ExitReason::Empty);
                }
            }
        }
    }

    /// Moves agent `a` to `state`: time accounting, the AgentState output,
    /// logged-in counts, and (Ready) the pools. Serving is the caller's.
    fn set_state(&mut self, now: Instant, a: u32, state: AgentState, reason: Option<u16>) {
        self.free_serial[a as usize] = 0;
        let g = &mut self.agents[a as usize];
        let old = g.state;
        g.today.time_in[old.index()] += now.saturating_duration_since(g.acct);
        g.acct = now;
        g.since = now;
        g.state = state;
        g.reason = reason.filter(|_| state == AgentState::NotReady);
        g.serial = g.serial.wrapping_add(1);
        self.out.push_back(Output::AgentState {
            agent: AgentId(a),
            state,
            reason: g.reason,
        });
        if (old == AgentState::LoggedOut) != (state == AgentState::LoggedOut) {
            let login = old == AgentState::LoggedOut;
            for m in self.s.memberships(a) {
                let rt = &mut self.queues[m.queue as usize];
                if login {
                    rt.logged_in += 1;
                } else {
                    rt.logged_in -= 1;
                    if rt.logged_in == 0 && self.s.shapes[m.queue as usize].leave_when_empty {
                        self.emptied.push(m.queue);
                    }
                }
            }
        }
        if state == AgentState::Ready {
            self.agents[a as usize].ready_since = now;
            if !self.agents[a as usize].busy {
                self.make_available(a);
            }
        }
    }

    /// Agent `a` became free: one entry in each of its pools.
    fn make_available(&mut self, a: u32) {
        let g = &mut self.agents[a as usize];
        g.avail = g.avail.wrapping_add(1).max(1);
        let serial = g.avail;
        self.free_serial[a as usize] = serial;
        let g = &self.agents[a as usize];
        let free = &self.free_serial;
        let valid = |x: u32, s: u32| free[x as usize] == s;
        let idle = g
            .ready_since
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64;
        for p in self.s.agent_pools(a) {
            let key = match p.kind {
                Strategy::FewestCalls => (g.today.calls, idle),
                Strategy::LeastTalkTime => (g.today.talk.as_nanos() as u64, idle),
                Strategy::Linear | Strategy::RoundRobin => (u64::from(p.local), 0),
                _ => (0, 0),
            };
            self.pools[p.pool as usize].push((key.0, key.1, a, serial), valid);
        }
    }

    // ------------------------------------------------------------------
    // Statistics
    // ------------------------------------------------------------------

    /// Closes the current 15-minute interval and starts the next.
    pub fn roll_interval(&mut self, _now: Instant) {
        for q in &mut self.queues {
            q.last_interval = std::mem::take(&mut q.interval);
        }
    }

    /// Starts a new day: today's counters restart (the interval too), the
    /// agents' state times count from `now`, and expired sticky memories
    /// are dropped.
    pub fn roll_day(&mut self, now: Instant) {
        self.roll_interval(now);
        for q in &mut self.queues {
            q.today = QueueCounters::default();
            let present = q.present;
            // Callers still in the queue stay counted as offered today.
            q.today.offered = u64::from(present);
            q.interval.offered = u64::from(present);
        }
        for g in &mut self.agents {
            g.today = AgentCounters::default();
            g.acct = now;
        }
        let keep = DAY * self.s.acd().sticky_days;
        self.sticky
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < keep);
        // FewestCalls and LeastTalkTime keys restart at zero.
        for p in 0..self.pools.len() {
            if !matches!(
                self.s.pool_kind[p],
                Strategy::FewestCalls | Strategy::LeastTalkTime
            ) {
                continue;
            }
            let free = &self.free_serial;
            self.pools[p].rekey(|a, s| free[a as usize] == s);
        }
    }

    /// A snapshot of the statistics at `now`.
    pub fn stats(&self, now: Instant) -> Stats {
        let mut longest = vec![Duration::ZERO; self.queues.len()];
        for c in &self.calls {
            if c.phase != Phase::Free {
                let w = now.saturating_duration_since(c.enqueued);
                let l = &mut longest[c.queue as usize];
                *l = (*l).max(w);
            }
        }
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| QueueStats {
                name: self.s.queue_name(QueueId(i as u32)).to_owned(),
                waiting: u64::from(q.present),
                longest_wait: longest[i],
                today: q.today,
                interval: q.interval,
                last_interval: q.last_interval,
            })
            .collect();
        let agents = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut today = g.today;
                today.time_in[g.state.index()] += now.saturating_duration_since(g.acct);
                AgentStats {
                    id: self.s.agent_name(AgentId(i as u32)).to_owned(),
                    state: g.state,
                    reason: g.reason,
                    for_: now.saturating_duration_since(g.since),
                    today,
                }
            })
            .collect();
        Stats { queues, agents }
    }

    /// Checks the engine's internal invariants (tests, simulations):
    /// counters add up, every offer is held by exactly one Reserved agent,
    /// every waiting caller is where its phase says.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut present = vec![0u32; self.queues.len()];
        for (i, c) in self.calls.iter().enumerate() {
            if c.phase == Phase::Free {
                continue;
            }
            present[c.queue as usize] += 1;
            if self.index.get(&c.key) != Some(&(i as u32)) {
                return Err(format!("call {:?} not indexed", c.key));
            }
            match c.phase {
                Phase::Ringing => {
                    if c.offers.is_empty() {
                        return Err(format!("call {:?} ringing nobody", c.key));
                    }
                    for &a in &c.offers {
                        let g = &self.agents[a as usize];
                        if g.state != AgentState::Reserved || g.offer != i as u32 {
                            return Err(format!("call {:?}: agent {a} not reserved for it", c.key));
                        }
                    }
                }
                Phase::Waiting
                    if self.queues[c.queue as usize].waiting[c.step as usize].get(&c.key())
                        != Some(&(i as u32)) =>
                {
                    return Err(format!("call {:?} waiting but not in its map", c.key));
                }
                Phase::Sticky(t) if !self.agents[t as usize].sticky.contains(&(i as u32)) => {
                    return Err(format!("call {:?} sticky but not listed", c.key));
                }
                _ => {}
            }
            if c.phase != Phase::Ringing && !c.offers.is_empty() {
                return Err(format!("call {:?} has offers while {:?}", c.key, c.phase));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            let t = &q.today;
            if q.present != present[i] {
                return Err(format!(
                    "queue {i}: present {} != {}",
                    q.present, present[i]
                ));
            }
            if t.offered != t.answered + t.abandoned + t.overflowed + u64::from(q.present) {
                return Err(format!(
                    "queue {i}: counters do not add up: {t:?} present {}",
                    q.present
                ));
            }
            let in_maps: usize = q.waiting.iter().map(|w| w.len()).sum();
            if in_maps != self.in_maps[i] as usize {
                return Err(format!(
                    "queue {i}: in_maps {} != {in_maps}",
                    self.in_maps[i]
                ));
            }
        }
        for (a, g) in self.agents.iter().enumerate() {
            let free = g.state == AgentState::Ready && !g.busy;
            if free != (self.free_serial[a] == g.avail && g.avail != 0) {
                return Err(format!(
                    "agent {a}: free {free} but serial {}",
                    self.free_serial[a]
                ));
            }
            let reserved = g.state == AgentState::Reserved;
            if reserved != (g.offer != NONE) {
                return Err(format!("agent {a}: {:?} with offer {}", g.state, g.offer));
            }
            if reserved && !self.calls[g.offer as usize].offers.contains(&(a as u32)) {
                return Err(format!("agent {a}: reserved for a call not ringing it"));
            }
            if g.state == AgentState::OnCall && g.cur.is_none() {
                return Err(format!("agent {a}: on call without a call"));
            }
            if reserved && g.cur.is_some() {
                return Err(format!("agent {a}: reserved while holding a call"));
            }
        }
        Ok(())
    }
}
