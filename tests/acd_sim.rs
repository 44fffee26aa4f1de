//! Deterministic simulation of the ACD engine against a model of the
//! shards: thousands of callers and a hundred and twenty agents over five
//! queues (skills, relaxation, priorities, ring-all, round-robin, sticky,
//! overflow, max wait, max length, callbacks), with hang-ups while waiting
//! and ringing, unanswered and busy rings, logouts and logins, not-ready,
//! busy phones, wrap-ups. A virtual clock jumps to the next event or engine
//! deadline. After every step the model checks: no caller lost or served
//! twice, no agent holding two calls, FIFO within a priority (queue
//! `general`, where every caller is eligible for the same agents), every
//! ring of a caller who leaves cancelled at once, counters adding up.
//! Seeds: `ACD_SIM_SEED` (one), else a fixed list; a failure names its seed.

// Test code: the engine's clock is virtual, but the base instant is real.
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use switchboard::acd::*;
use switchboard::config::contact::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo * 1000 + self.below((hi - lo) * 1000 + 1))
    }
}

const AGENTS: usize = 120;
const CALLERS: u64 = 3000;

fn center() -> ContactCenter {
    let mut cc = ContactCenter::default();
    cc.acd.ring_timeout = Duration::from_secs(15);
    cc.acd.max_no_answer = 3;
    cc.acd.sticky_days = 1;
    for i in 0..AGENTS {
        let mut skills = vec![("en".to_owned(), 1 + (i % 5) as u8)];
        if i % 3 == 0 {
            skills.push(("fr".into(), 1 + (i % 4) as u8));
        }
        if i % 4 == 1 {
            skills.push(("de".into(), 2 + (i % 3) as u8));
        }
        cc.agents.push(AgentConfig {
            id: format!("{}", 1000 + i),
            skills,
        });
    }
    let mut general = QueueConfig::named("general");
    general.announce_every = Some(Duration::from_secs(45));
    general.wrap_up = Duration::from_secs(5);
    let mut french = QueueConfig::named("french");
    french.strategy = Strategy::RoundRobin;
    french.skills = vec![("fr".into(), 3)];
    french.relax = vec![RelaxStep {
        after: Duration::from_secs(20),
        skills: vec![("fr".into(), 1)],
    }];
    french.max_wait = Some(Duration::from_secs(120));
    let mut vip = QueueConfig::named("vip");
    vip.strategy = Strategy::RingAll;
    vip.members = (0..15).map(|i| format!("{}", 1000 + i * 7)).collect();
    vip.overflow = Some((
        Duration::from_secs(40),
        Route::to(Target::Queue("general".into())),
    ));
    let mut tech = QueueConfig::named("tech");
    tech.strategy = Strategy::FewestCalls;
    tech.skills = vec![("de".into(), 3)];
    tech.sticky_wait = Duration::from_secs(15);
    tech.max_length = Some(25);
    tech.callback_key = Some('1');
    let mut night = QueueConfig::named("night");
    night.strategy = Strategy::Random;
    night.members = (100..110).map(|i| format!("{}", 1000 + i)).collect();
    night.join_empty = false;
    night.leave_when_empty = true;
    night.relax = vec![RelaxStep {
        after: Duration::from_secs(10),
        skills: Vec::new(),
    }];
    cc.queues = vec![general, french, vip, tech, night];
    cc
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    Waiting,
    Parked,
    Connected,
    Answered,
    Abandoned,
    Routed,
}

struct Caller {
    queue: u32,
    priority: u8,
    seq: u64,
    /// Episode number (each Enqueue starts one).
    ep: u32,
    state: Ep,
    /// Failed callback attempts.
    attempts: u8,
    hash: u64,
}

struct Ring {
    call: u64,
    agent: u32,
    /// Not yet ended by a Cancel or a result of ours.
    engine_open: bool,
    /// Not yet reported by the shard.
    shard_open: bool,
    callback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(u64),
    HangUp(u64, u32),
    PressCallback(u64, u32),
    Resolve(u64),
    End(u64, u32),
    Agent(u32),
    Reenqueue(u64, u32, u32),
}

struct Sim {
    seed: u64,
    rng: Rng,
    e: Engine,
    now: Instant,
    events: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    n: u64,
    callers: HashMap<u64, Caller>,
    rings: HashMap<u64, Ring>,
    ring_ids: u64,
    /// Per agent: the ring the engine holds open, and the call connected.
    open: Vec<Option<u64>>,
    connected: Vec<Option<u64>>,
    /// AgentState as reported.
    states: Vec<AgentState>,
    seq: u64,
    answered: u64,
    abandoned: u64,
    routed: u64,
    /// Whether the outputs being processed answer a timeout (a Cancel
    /// there is a ring timeout).
    in_timeout: bool,
    arrivals_done: bool,
    t0: Instant,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let now = Instant::now();
        let settings = Settings::from_config(&center(), seed);
        Sim {
            seed,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            e: Engine::new(settings, now),
            now,
            events: BinaryHeap::new(),
            n: 0,
            callers: HashMap::new(),
            rings: HashMap::new(),
            ring_ids: 0,
            open: vec![None; AGENTS],
            connected: vec![None; AGENTS],
            states: vec![AgentState::LoggedOut; AGENTS],
            seq: 0,
            answered: 0,
            abandoned: 0,
            routed: 0,
            in_timeout: false,
            arrivals_done: false,
            t0: now,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: at {:?}: {what}", self.seed, self.now - self.t0);
    }

    fn at(&mut self, d: Duration, ev: Ev) {
        self.n += 1;
        self.events.push(Reverse((self.now + d, self.n, ev)));
    }

    fn input(&mut self, i: Input) {
        self.e.handle(self.now, i.clone());
        self.outputs(Some(&i));
    }

    fn enqueue(&mut self, call: u64, queue: u32) {
        let c = self.callers.get_mut(&call).unwrap();
        c.ep += 1;
        c.queue = queue;
        c.state = Ep::Waiting;
        self.seq += 1;
        c.seq = self.seq;
        let (ep, priority, hash) = (c.ep, c.priority, c.hash);
        self.input(Input::Enqueue {
            call: CallKey(call),
            queue: QueueId(queue),
            priority,
            caller: hash,
            last_agent: None,
        });
        if self.callers[&call].state == Ep::Waiting {
            let patience = self.rng.secs(5, 240);
            self.at(patience, Ev::HangUp(call, ep));
            if queue == 3 && self.rng.chance(30) {
                let t = self.rng.secs(2, 60);
                self.at(t, Ev::PressCallback(call, ep));
            }
        }
    }

    fn engine_rings(&self, call: u64) -> Vec<u32> {
        self.rings
            .values()
            .filter(|r| r.call == call && r.engine_open)
            .map(|r| r.agent)
            .collect()
    }

    /// The shard reports every ring of `call` it still has as Cancelled.
    fn shard_cancels(&mut self, call: u64) {
        let mut ids: Vec<u64> = self
            .rings
            .iter()
            .filter(|(_, r)| r.call == call && r.shard_open)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            self.report(id, RingOutcome::Cancelled);
        }
    }

    fn report(&mut self, id: u64, outcome: RingOutcome) {
        let Some(r) = self.rings.get_mut(&id) else {
            return;
        };
        if !r.shard_open {
            return;
        }
        r.shard_open = false;
        let (call, agent, engine_open, callback) = (r.call, r.agent, r.engine_open, r.callback);
        r.engine_open = false;
        self.rings.remove(&id);
        if engine_open {
            self.open[agent as usize] = None;
        }
        let answered = engine_open && outcome == RingOutcome::Answered;
        if engine_open && callback && outcome != RingOutcome::Answered {
            let c = self.callers.get_mut(&call).unwrap();
            c.attempts += 1;
            if c.attempts >= CALLBACK_ATTEMPTS {
                c.state = Ep::Abandoned;
                self.abandoned += 1;
            }
        }
        if answered {
            let st = self.callers[&call].state;
            if !matches!(st, Ep::Waiting | Ep::Parked) {
                self.fail(format!("call {call} answered while {st:?}"));
            }
            self.callers.get_mut(&call).unwrap().state = Ep::Connected;
            self.answered += 1;
            if self.connected[agent as usize].is_some() {
                self.fail(format!("agent {agent} holds two calls"));
            }
            self.connected[agent as usize] = Some(call);
            let talk = self.rng.secs(5, 200);
            let ep = self.callers[&call].ep;
            self.at(talk, Ev::End(call, ep));
        }
        self.input(Input::RingResult {
            call: CallKey(call),
            agent: AgentId(agent),
            outcome,
        });
        if answered && self.states[agent as usize] != AgentState::OnCall {
            self.fail(format!(
                "agent {agent} answered but {:?}",
                self.states[agent as usize]
            ));
        }
    }

    fn outputs(&mut self, cause: Option<&Input>) {
        let mut outs = Vec::new();
        while let Some(o) = self.e.poll_output() {
            outs.push(o);
        }
        // A caller who leaves: each ring the engine had is cancelled in this
        // very batch.
        if let Some(Input::Leave { call }) = cause {
            for a in self.engine_rings(call.0) {
                if !outs.contains(&Output::Cancel {
                    call: *call,
                    agent: AgentId(a),
                }) {
                    self.fail(format!(
                        "leave of {} did not cancel agent {a} at once",
                        call.0
                    ));
                }
            }
        }
        let logout_of = match cause {
            Some(Input::Agent {
                agent,
                op: AgentOp::Logout | AgentOp::PhoneUnregistered,
            }) => Some(agent.0),
            _ => None,
        };
        for o in outs {
            self.output(o, logout_of);
        }
        if let Err(e) = self.e.check_invariants() {
            self.fail(e);
        }
    }

    fn output(&mut self, o: Output, logout_of: Option<u32>) {
        match o {
            Output::Offer { call, agent, queue } | Output::CallBack { call, agent, queue } => {
                let callback = matches!(o, Output::CallBack { .. });
                let (c, a) = (call.0, agent.0);
                let Some(caller) = self.callers.get(&c) else {
                    self.fail(format!("offer of unknown call {c}"));
                };
                let want = if callback { Ep::Parked } else { Ep::Waiting };
                if caller.state != want || caller.queue != queue.0 {
                    self.fail(format!(
                        "{o:?} for a caller {:?} in {}",
                        caller.state, caller.queue
                    ));
                }
                if self.open[a as usize].is_some() || self.connected[a as usize].is_some() {
                    self.fail(format!(
                        "{o:?} to an agent holding {:?}/{:?}",
                        self.open[a as usize], self.connected[a as usize]
                    ));
                }
                let ringing = self.engine_rings(c);
                if !ringing.is_empty() && queue.0 != 2 {
                    self.fail(format!("{o:?} while ringing {ringing:?}"));
                }
                if queue.0 == 0 && !callback && ringing.is_empty() {
                    self.check_fifo(c);
                }
                self.ring_ids += 1;
                let id = self.ring_ids;
                self.rings.insert(
                    id,
                    Ring {
                        call: c,
                        agent: a,
                        engine_open: true,
                        shard_open: true,
                        callback,
                    },
                );
                self.open[a as usize] = Some(id);
                let t = self.rng.secs(0, 20);
                self.at(t, Ev::Resolve(id));
            }
            Output::Cancel { call, agent } => {
                let id = self
                    .rings
                    .iter()
                    .find(|(_, r)| r.call == call.0 && r.agent == agent.0 && r.engine_open)
                    .map(|(id, _)| *id);
                let Some(id) = id else {
                    self.fail(format!("{o:?} of no open ring"));
                };
                let r = self.rings.get_mut(&id).unwrap();
                r.engine_open = false;
                self.open[agent.0 as usize] = None;
                if r.callback && self.in_timeout && logout_of.is_none() {
                    let c = self.callers.get_mut(&call.0).unwrap();
                    c.attempts += 1;
                    if c.attempts >= CALLBACK_ATTEMPTS {
                        c.state = Ep::Abandoned;
                        self.abandoned += 1;
                    }
                }
                let t = self.rng.secs(0, 1);
                self.at(t, Ev::Resolve(id));
            }
            Output::Announce { call, position, .. } => {
                let c = &self.callers[&call.0];
                if c.state != Ep::Waiting || position == 0 {
                    self.fail(format!("{o:?} to a caller {:?}", c.state));
                }
            }
            Output::Route {
                call, ref route, ..
            } => {
                let st = self.callers[&call.0].state;
                if st != Ep::Waiting {
                    self.fail(format!("{o:?} of a caller {st:?}"));
                }
                let c = self.callers.get_mut(&call.0).unwrap();
                c.state = Ep::Routed;
                self.routed += 1;
                let ep = c.ep;
                if !self.engine_rings(call.0).is_empty() {
                    self.fail(format!("{o:?} with rings open"));
                }
                self.shard_cancels(call.0);
                if let Target::Queue(name) = &route.target {
                    let q = self.e.settings().queue(name).unwrap();
                    self.at(Duration::from_millis(100), Ev::Reenqueue(call.0, ep, q.0));
                }
            }
            Output::AgentState { agent, state, .. } => {
                self.states[agent.0 as usize] = state;
            }
        }
    }

    /// No caller of queue `general` waits with a better place than `call`.
    fn check_fifo(&self, call: u64) {
        let me = &self.callers[&call];
        let key = |c: &Caller| (u8::MAX - c.priority, c.seq);
        for (k, c) in &self.callers {
            if *k != call
                && c.queue == 0
                && c.state == Ep::Waiting
                && self.engine_rings(*k).is_empty()
                && key(c) < key(me)
            {
                self.fail(format!(
                    "offer of {call} {:?} before {k} {:?}",
                    key(me),
                    key(c)
                ));
            }
        }
    }

    fn agent_action(&mut self, a: u32) {
        let op = match self.states[a as usize] {
            AgentState::LoggedOut => {
                if self.rng.chance(50) {
                    AgentOp::Login
                } else {
                    AgentOp::PhoneRegistered
                }
            }
            AgentState::Ready => match self.rng.below(100) {
                0..=14 => AgentOp::NotReady {
                    reason: 2 + self.rng.below(3) as u16,
                },
                15..=19 => AgentOp::Logout,
                20..=22 => AgentOp::PhoneUnregistered,
                23..=30 => AgentOp::Busy(true),
                _ => AgentOp::Busy(false),
            },
            AgentState::NotReady => AgentOp::Ready,
            AgentState::WrapUp => AgentOp::ExtendWrapUp(Duration::from_secs(5)),
            AgentState::Reserved | AgentState::OnCall => match self.rng.below(10) {
                0 => AgentOp::Logout,
                1 => AgentOp::NotReady { reason: 7 },
                _ => AgentOp::Busy(false),
            },
        };
        let op = if self.arrivals_done {
            // Winding down: everyone works.
            match self.states[a as usize] {
                AgentState::LoggedOut => AgentOp::Login,
                _ => AgentOp::Ready,
            }
        } else {
            op
        };
        let busy_off = self.arrivals_done;
        self.input(Input::Agent {
            agent: AgentId(a),
            op,
        });
        if busy_off {
            self.input(Input::Agent {
                agent: AgentId(a),
                op: AgentOp::Busy(false),
            });
        }
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(call) => {
                let queue = match self.rng.below(10) {
                    0..=3 => 0,
                    4..=5 => 1,
                    6 => 2,
                    7..=8 => 3,
                    _ => 4,
                };
                self.callers.insert(
                    call,
                    Caller {
                        queue,
                        priority: self.rng.below(3) as u8,
                        seq: 0,
                        ep: 0,
                        state: Ep::Waiting,
                        attempts: 0,
                        hash: self.rng.below(300),
                    },
                );
                self.enqueue(call, queue);
                if call + 1 < CALLERS {
                    let gap = Duration::from_millis(self.rng.below(1500));
                    self.at(gap, Ev::Arrive(call + 1));
                } else {
                    self.arrivals_done = true;
                }
            }
            Ev::HangUp(call, ep) => {
                let c = &self.callers[&call];
                if c.ep != ep || c.state != Ep::Waiting || self.arrivals_done {
                    return;
                }
                self.callers.get_mut(&call).unwrap().state = Ep::Abandoned;
                self.abandoned += 1;
                self.input(Input::Leave {
                    call: CallKey(call),
                });
                self.shard_cancels(call);
            }
            Ev::PressCallback(call, ep) => {
                let c = &self.callers[&call];
                if c.ep != ep || c.state != Ep::Waiting {
                    return;
                }
                self.callers.get_mut(&call).unwrap().state = Ep::Parked;
                self.input(Input::Callback {
                    call: CallKey(call),
                });
                self.shard_cancels(call);
            }
            Ev::Resolve(id) => {
                let Some(r) = self.rings.get(&id) else { return };
                let twin = self
                    .rings
                    .iter()
                    .any(|(k, x)| *k != id && x.call == r.call && x.agent == r.agent);
                let outcome = if !r.engine_open {
                    RingOutcome::Cancelled
                } else if r.callback {
                    if self.rng.chance(60) {
                        RingOutcome::Answered
                    } else {
                        RingOutcome::Failed
                    }
                } else {
                    match self.rng.below(100) {
                        0..=74 => RingOutcome::Answered,
                        75..=86 => RingOutcome::NoAnswer,
                        87..=92 => RingOutcome::Busy,
                        93..=96 => RingOutcome::Failed,
                        _ if twin => RingOutcome::Failed,
                        _ => RingOutcome::Cancelled,
                    }
                };
                self.report(id, outcome);
            }
            Ev::End(call, ep) => {
                let c = self.callers.get_mut(&call).unwrap();
                if c.ep != ep || c.state != Ep::Connected {
                    return;
                }
                c.state = Ep::Answered;
                let agent = self
                    .connected
                    .iter()
                    .position(|x| *x == Some(call))
                    .unwrap_or_else(|| self.fail(format!("call {call} connected to nobody")));
                self.connected[agent] = None;
                self.input(Input::CallEnded {
                    call: CallKey(call),
                    agent: AgentId(agent as u32),
                });
            }
            Ev::Agent(a) => {
                self.agent_action(a);
                let t = if self.arrivals_done {
                    self.rng.secs(1, 5)
                } else {
                    self.rng.secs(10, 120)
                };
                self.at(t, Ev::Agent(a));
            }
            Ev::Reenqueue(call, ep, q) => {
                if self.callers[&call].ep == ep {
                    self.enqueue(call, q);
                }
            }
        }
    }

    fn run(&mut self) {
        for a in 0..AGENTS as u32 {
            if a % 5 != 0 {
                self.input(Input::Agent {
                    agent: AgentId(a),
                    op: AgentOp::PhoneRegistered,
                });
            }
            let t = self.rng.secs(1, 60);
            self.at(t, Ev::Agent(a));
        }
        self.at(Duration::ZERO, Ev::Arrive(0));
        let start = self.now;
        let mut steps = 0u64;
        let mut last_interval = start;
        loop {
            steps += 1;
            let next_ev = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_to = self.e.poll_timeout();
            let done = self.arrivals_done
                && self
                    .callers
                    .values()
                    .all(|c| !matches!(c.state, Ep::Waiting | Ep::Parked | Ep::Connected));
            if done || steps > 2_000_000 || self.now - start > Duration::from_secs(86_400) {
                break;
            }
            match (next_ev, next_to) {
                (Some(e), Some(t)) if t < e => self.timeout(t),
                (_, Some(t)) if next_ev.is_none() => self.timeout(t),
                (Some(_), _) => {
                    let Reverse((t, _, ev)) = self.events.pop().unwrap();
                    self.now = self.now.max(t);
                    self.event(ev);
                }
                (None, None) => break,
                _ => unreachable!(),
            }
            if self.now - last_interval >= Duration::from_secs(900) {
                last_interval = self.now;
                self.e.roll_interval(self.now);
            }
            if steps.is_multiple_of(500) {
                self.check_stats();
            }
        }
        // Every caller ended in exactly one way.
        let stuck: Vec<_> = self
            .callers
            .iter()
            .filter(|(_, c)| matches!(c.state, Ep::Waiting | Ep::Parked | Ep::Connected))
            .map(|(k, c)| (*k, c.state, c.queue))
            .collect();
        if !stuck.is_empty() {
            self.fail(format!("callers never ended: {stuck:?}"));
        }
        self.check_stats();
        let s = self.e.stats(self.now);
        let sum = |f: fn(&QueueCounters) -> u64| s.queues.iter().map(|q| f(&q.today)).sum::<u64>();
        let (ans, ab, ov) = (
            sum(|c| c.answered),
            sum(|c| c.abandoned),
            sum(|c| c.overflowed),
        );
        if (ans, ab, ov) != (self.answered, self.abandoned, self.routed) {
            self.fail(format!(
                "engine answered/abandoned/routed {ans}/{ab}/{ov}, model {}/{}/{}",
                self.answered, self.abandoned, self.routed
            ));
        }
        if std::env::var("ACD_SIM_VERBOSE").is_ok() {
            eprintln!(
                "seed {}: {} answered {} abandoned {} routed\n{s}",
                self.seed, self.answered, self.abandoned, self.routed
            );
        }
        assert!(
            self.answered > CALLERS / 3,
            "seed {}: only {} answered",
            self.seed,
            self.answered
        );
    }

    fn timeout(&mut self, t: Instant) {
        self.now = self.now.max(t);
        self.e.handle_timeout(self.now);
        self.in_timeout = true;
        self.outputs(None);
        self.in_timeout = false;
    }

    fn check_stats(&self) {
        let s = self.e.stats(self.now);
        for q in &s.queues {
            let t = &q.today;
            if t.offered != t.answered + t.abandoned + t.overflowed + q.waiting {
                self.fail(format!("queue {}: {t:?} waiting {}", q.name, q.waiting));
            }
        }
    }
}

#[test]
fn seeded_contact_center_simulation() {
    let seeds: Vec<u64> = match std::env::var("ACD_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("ACD_SIM_SEED is a number")],
        Err(_) => vec![1, 2, 3, 0xACD, 424242],
    };
    for seed in seeds {
        let mut sim = Sim::new(seed);
        sim.run();
    }
}
