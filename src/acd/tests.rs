//! Unit tests of the engine on a virtual clock.

use super::*;
use crate::config::contact::{AgentConfig, ContactCenter, QueueConfig, RelaxStep};

const S: Duration = Duration::from_secs(1);

struct W {
    e: Engine,
    now: Instant,
    t0: Instant,
}

fn skill(n: &str, l: u8) -> (String, u8) {
    (n.to_owned(), l)
}

fn center(agents: &[(&str, Vec<(String, u8)>)], queues: Vec<QueueConfig>) -> ContactCenter {
    let mut cc = ContactCenter::default();
    cc.acd.max_no_answer = 2;
    for (id, skills) in agents {
        cc.agents.push(AgentConfig {
            id: (*id).into(),
            skills: skills.clone(),
        });
    }
    cc.queues = queues;
    cc
}

/// Agents 1001..=100n, one queue `q` with `strategy`.
fn simple(n: u32, strategy: Strategy) -> ContactCenter {
    let agents: Vec<(String, Vec<(String, u8)>)> = (1..=n)
        .map(|i| (format!("{}", 1000 + i), Vec::new()))
        .collect();
    let agents: Vec<(&str, Vec<(String, u8)>)> = agents
        .iter()
        .map(|(a, s)| (a.as_str(), s.clone()))
        .collect();
    let mut q = QueueConfig::named("q");
    q.strategy = strategy;
    center(&agents, vec![q])
}

fn offers(o: &[Output]) -> Vec<(u64, u32)> {
    o.iter()
        .filter_map(|o| match o {
            Output::Offer { call, agent, .. } => Some((call.0, agent.0)),
            _ => None,
        })
        .collect()
}

fn cancels(o: &[Output]) -> Vec<(u64, u32)> {
    o.iter()
        .filter_map(|o| match o {
            Output::Cancel { call, agent } => Some((call.0, agent.0)),
            _ => None,
        })
        .collect()
}

fn routes(o: &[Output]) -> Vec<(u64, ExitReason)> {
    o.iter()
        .filter_map(|o| match o {
            Output::Route { call, reason, .. } => Some((call.0, reason.clone())),
            _ => None,
        })
        .collect()
}

impl W {
    fn new(cc: &ContactCenter) -> W {
        let t0 = Instant::now();
        W {
            e: Engine::new(Settings::from_config(cc, 7), t0),
            now: t0,
            t0,
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut v = Vec::new();
        while let Some(o) = self.e.poll_output() {
            v.push(o);
        }
        self.e.check_invariants().unwrap();
        v
    }

    fn input(&mut self, i: Input) -> Vec<Output> {
        self.e.handle(self.now, i);
        self.drain()
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now + d;
        let mut v = Vec::new();
        while let Some(t) = self.e.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.e.handle_timeout(self.now);
            v.extend(self.drain());
        }
        self.now = end;
        v
    }

    fn op(&mut self, a: u32, op: AgentOp) -> Vec<Output> {
        self.input(Input::Agent {
            agent: AgentId(a),
            op,
        })
    }

    fn login(&mut self, a: u32) -> Vec<Output> {
        self.op(a, AgentOp::Login)
    }

    fn enqueue(&mut self, call: u64, q: u32, priority: u8) -> Vec<Output> {
        self.input(Input::Enqueue {
            call: CallKey(call),
            queue: QueueId(q),
            priority,
            caller: call,
            last_agent: None,
        })
    }

    fn ring(&mut self, call: u64, a: u32, outcome: RingOutcome) -> Vec<Output> {
        self.input(Input::RingResult {
            call: CallKey(call),
            agent: AgentId(a),
            outcome,
        })
    }

    /// Answers, ends and wraps up `call` on `a` (talk `talk`).
    fn serve(&mut self, call: u64, a: u32, talk: Duration) -> Vec<Output> {
        let mut v = self.ring(call, a, RingOutcome::Answered);
        v.extend(self.advance(talk));
        v.extend(self.input(Input::CallEnded {
            call: CallKey(call),
            agent: AgentId(a),
        }));
        v
    }

    fn state(&self, a: u32) -> AgentState {
        self.e.agent_state(AgentId(a))
    }

    fn today(&self, q: usize) -> QueueCounters {
        self.e.stats(self.now).queues[q].today
    }
}

#[test]
fn longest_idle_picks_the_agent_ready_longest() {
    let mut w = W::new(&simple(3, Strategy::LongestIdle));
    w.login(2);
    w.advance(S);
    w.login(0);
    w.advance(S);
    w.login(1);
    assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 2)]);
    assert_eq!(offers(&w.enqueue(2, 0, 0)), vec![(2, 0)]);
    // Agent 2 ends its call and wrap-up: it is now the most recently idle.
    w.serve(1, 2, S);
    w.advance(Duration::from_secs(11));
    assert_eq!(w.state(2), AgentState::Ready);
    assert_eq!(offers(&w.enqueue(3, 0, 0)), vec![(3, 1)]);
    assert_eq!(offers(&w.enqueue(4, 0, 0)), vec![(4, 2)]);
}

#[test]
fn round_robin_continues_after_the_last_offered_member() {
    let mut w = W::new(&simple(4, Strategy::RoundRobin));
    for a in [3, 1, 0, 2] {
        w.login(a);
    }
    let mut got = Vec::new();
    for c in 1..=6 {
        let o = offers(&w.enqueue(c, 0, 0));
        assert_eq!(o.len(), 1);
        got.push(o[0].1);
        // The caller leaves: the agent is free at once.
        w.input(Input::Leave { call: CallKey(c) });
        w.ring(c, o[0].1, RingOutcome::Cancelled);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 0, 1]);
}

#[test]
fn linear_always_starts_from_the_first_member() {
    let mut cc = simple(3, Strategy::Linear);
    cc.queues[0].members = vec!["1003".into(), "1001".into(), "1002".into()];
    let mut w = W::new(&cc);
    for a in 0..3 {
        w.login(a);
    }
    assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 2)]);
    assert_eq!(offers(&w.enqueue(2, 0, 0)), vec![(2, 0)]);
    w.input(Input::Leave { call: CallKey(1) });
    w.ring(1, 2, RingOutcome::Cancelled);
    assert_eq!(offers(&w.enqueue(3, 0, 0)), vec![(3, 2)]);
}

#[test]
fn fewest_calls_and_least_talk_time() {
    for strategy in [Strategy::FewestCalls, Strategy::LeastTalkTime] {
        let mut w = W::new(&simple(2, strategy));
        w.login(0);
        w.login(1);
        // Agent 0 takes two short calls, agent 1 one long call.
        assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 0)]);
        w.serve(1, 0, S);
        assert_eq!(offers(&w.enqueue(2, 0, 0)), vec![(2, 1)]);
        w.serve(2, 1, Duration::from_secs(100));
        assert_eq!(offers(&w.enqueue(3, 0, 0)), vec![(3, 0)]);
        w.serve(3, 0, S);
        w.advance(Duration::from_secs(20));
        // Agent 1 is idle longest; fewest-calls still prefers it, least
        // talk time prefers agent 0.
        let want = if strategy == Strategy::FewestCalls {
            1
        } else {
            0
        };
        assert_eq!(offers(&w.enqueue(5, 0, 0)), vec![(5, want)], "{strategy:?}");
    }
}

#[test]
fn random_is_seeded_and_deterministic() {
    let run = || {
        let mut w = W::new(&simple(8, Strategy::Random));
        for a in 0..8 {
            w.login(a);
        }
        (1..=8)
            .map(|c| offers(&w.enqueue(c, 0, 0))[0].1)
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..8).collect::<Vec<_>>());
    assert_ne!(a, (0..8).collect::<Vec<_>>());
}

#[test]
fn ring_all_first_answer_wins_and_the_others_are_cancelled() {
    let mut w = W::new(&simple(3, Strategy::RingAll));
    for a in 0..3 {
        w.login(a);
    }
    let mut o = offers(&w.enqueue(1, 0, 0));
    o.sort();
    assert_eq!(o, vec![(1, 0), (1, 1), (1, 2)]);
    let out = w.ring(1, 1, RingOutcome::Answered);
    let mut c = cancels(&out);
    c.sort();
    assert_eq!(c, vec![(1, 0), (1, 2)]);
    assert_eq!(w.state(0), AgentState::Ready);
    assert_eq!(w.state(1), AgentState::OnCall);
    // The shard's late Cancelled results are ignored.
    w.ring(1, 0, RingOutcome::Cancelled);
    w.ring(1, 2, RingOutcome::Cancelled);
    assert_eq!(w.today(0).answered, 1);
}

#[test]
fn priority_first_then_fifo() {
    let mut w = W::new(&simple(1, Strategy::LongestIdle));
    w.enqueue(1, 0, 0);
    w.enqueue(2, 0, 5);
    w.enqueue(3, 0, 0);
    w.enqueue(4, 0, 5);
    let mut order = Vec::new();
    let mut out = w.login(0);
    for _ in 0..4 {
        let o = offers(&out);

        assert_eq!(o.len(), 1);
        order.push(o[0].0);
        w.serve(o[0].0, 0, S);
        out = w.advance(Duration::from_secs(10));
    }
    assert_eq!(order, vec![2, 4, 1, 3]);
}

#[test]
fn skills_decide_and_relax_with_time() {
    let mut q = QueueConfig::named("fr");
    q.skills = vec![skill("french", 4)];
    q.relax = vec![RelaxStep {
        after: Duration::from_secs(30),
        skills: vec![skill("french", 2)],
    }];
    let cc = center(
        &[
            ("1001", vec![skill("french", 2)]),
            ("1002", vec![skill("english", 5)]),
        ],
        vec![q],
    );
    let mut w = W::new(&cc);
    w.login(0);
    w.login(1);
    assert!(offers(&w.enqueue(1, 0, 0)).is_empty());
    assert!(offers(&w.advance(Duration::from_secs(29))).is_empty());
    assert_eq!(offers(&w.advance(Duration::from_secs(2))), vec![(1, 0)]);
    // Agent 1002 never qualifies.
    assert!(!w.e.settings().serves(AgentId(1), QueueId(0)));
}

#[test]
fn sticky_caller_waits_for_their_agent_then_takes_anyone() {
    let mut cc = simple(2, Strategy::LongestIdle);
    cc.queues[0].sticky_wait = Duration::from_secs(20);
    let mut w = W::new(&cc);
    w.login(0);
    w.login(1);
    // Caller 77 is answered by agent 1.
    w.advance(S);
    w.input(Input::Agent {
        agent: AgentId(0),
        op: AgentOp::NotReady { reason: 9 },
    });
    assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 1)]);
    w.serve(1, 1, S);
    w.op(0, AgentOp::Ready);
    // Caller 1 again (caller hash = call id 1 in enqueue()) while agent 1
    // wraps up: it waits for agent 1 although agent 0 is free.
    w.input(Input::Enqueue {
        call: CallKey(2),
        queue: QueueId(0),
        priority: 0,
        caller: 1,
        last_agent: None,
    });
    assert_eq!(w.state(0), AgentState::Ready);
    // Agent 1 is ready after its 10 s wrap-up: it gets the caller.
    let o = w.advance(Duration::from_secs(10));
    assert_eq!(offers(&o), vec![(2, 1)]);
    w.serve(2, 1, S);
    // Third time: agent 1 wraps up for 10 s but the wait is only 20 s,
    // and then a no-answer ends the stickiness at once.
    w.op(1, AgentOp::NotReady { reason: 3 });
    w.input(Input::Enqueue {
        call: CallKey(3),
        queue: QueueId(0),
        priority: 0,
        caller: 1,
        last_agent: None,
    });
    w.op(0, AgentOp::NotReady { reason: 3 });
    w.op(0, AgentOp::Ready);
    assert_eq!(w.state(0), AgentState::Ready);
    let o = w.advance(Duration::from_secs(21));
    assert_eq!(offers(&o), vec![(3, 0)]);
    // last_agent overrides the memory.
    let o = w.input(Input::Enqueue {
        call: CallKey(4),
        queue: QueueId(0),
        priority: 0,
        caller: 1,
        last_agent: Some(AgentId(0)),
    });
    assert!(offers(&o).is_empty());
    w.ring(3, 0, RingOutcome::Answered);
    let o = w.input(Input::CallEnded {
        call: CallKey(3),
        agent: AgentId(0),
    });
    assert!(offers(&o).is_empty());
    let o = w.advance(Duration::from_secs(10));
    assert_eq!(offers(&o), vec![(4, 0)]);
}

#[test]
fn overflow_and_max_wait_route_the_caller() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].overflow = Some((
        Duration::from_secs(30),
        Route::to(Target::Queue("other".into())),
    ));
    cc.queues[0].max_wait = Some(Duration::from_secs(20));
    let mut w = W::new(&cc);
    w.enqueue(1, 0, 0);
    assert_eq!(
        routes(&w.advance(Duration::from_secs(20))),
        vec![(1, ExitReason::MaxWait)]
    );
    cc.queues[0].max_wait = None;
    let mut w = W::new(&cc);
    w.enqueue(1, 0, 0);
    let o = w.advance(Duration::from_secs(31));
    assert_eq!(routes(&o), vec![(1, ExitReason::Overflow)]);
    assert!(o.iter().any(|o| matches!(o, Output::Route { route, .. }
        if route.target == Target::Queue("other".into()))));
    assert_eq!(w.today(0).overflowed, 1);
    assert_eq!(w.e.waiting(QueueId(0)), 0);
}

#[test]
fn overflow_while_ringing_cancels_the_ring_first() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].max_wait = Some(Duration::from_secs(10));
    cc.acd.ring_timeout = Duration::from_secs(60);
    let mut w = W::new(&cc);
    w.login(0);
    w.enqueue(1, 0, 0);
    let o = w.advance(Duration::from_secs(10));
    assert_eq!(cancels(&o), vec![(1, 0)]);
    assert_eq!(routes(&o), vec![(1, ExitReason::MaxWait)]);
    assert_eq!(w.state(0), AgentState::Ready);
}

#[test]
fn max_length_join_empty_and_leave_when_empty() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].max_length = Some(1);
    let mut w = W::new(&cc);
    assert!(routes(&w.enqueue(1, 0, 0)).is_empty());
    assert_eq!(
        routes(&w.enqueue(2, 0, 0)),
        vec![(2, ExitReason::MaxLength)]
    );
    let t = w.today(0);
    assert_eq!((t.offered, t.overflowed), (2, 1));

    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].join_empty = false;
    cc.queues[0].leave_when_empty = true;
    let mut w = W::new(&cc);
    assert_eq!(routes(&w.enqueue(1, 0, 0)), vec![(1, ExitReason::Empty)]);
    w.login(0);
    w.op(0, AgentOp::NotReady { reason: 2 });
    assert!(routes(&w.enqueue(2, 0, 0)).is_empty());
    assert_eq!(
        routes(&w.op(0, AgentOp::Logout)),
        vec![(2, ExitReason::Empty)]
    );
}

#[test]
fn ring_timeout_cancels_requeues_at_head_and_counts_misses() {
    let mut cc = simple(2, Strategy::Linear);
    cc.acd.ring_timeout = Duration::from_secs(15);
    let mut w = W::new(&cc);
    w.login(0);
    assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 0)]);
    w.enqueue(2, 0, 0);
    // Timeout: Cancel, a miss, and the caller is offered again first (the
    // same agent, as no other is free).
    let o = w.advance(Duration::from_secs(15));
    assert_eq!(cancels(&o), vec![(1, 0)]);
    assert_eq!(offers(&o), vec![(1, 0)]);
    // The shard's late Cancelled for the first offer does not end the new one.
    w.ring(1, 0, RingOutcome::Cancelled);
    assert_eq!(w.state(0), AgentState::Reserved);
    // Second miss: max_no_answer = 2 → NotReady(no answer).
    let o = w.advance(Duration::from_secs(15));
    assert_eq!(cancels(&o), vec![(1, 0)]);
    assert_eq!(w.state(0), AgentState::NotReady);
    assert_eq!(w.e.agent_reason(AgentId(0)), Some(REASON_NO_ANSWER));
    // Agent 1 logs in: caller 1 (head) first, not caller 2.
    assert_eq!(offers(&w.login(1)), vec![(1, 1)]);
}

#[test]
fn a_missed_caller_goes_to_another_free_agent() {
    let mut w = W::new(&simple(2, Strategy::Linear));
    w.login(0);
    w.login(1);
    assert_eq!(offers(&w.enqueue(1, 0, 0)), vec![(1, 0)]);
    w.op(1, AgentOp::Busy(true));
    assert!(offers(&w.enqueue(2, 0, 0)).is_empty());
    w.op(1, AgentOp::Busy(false));
    // (caller 2 went to agent 1 when it became free)
    w.input(Input::Leave { call: CallKey(2) });
    w.ring(2, 1, RingOutcome::Cancelled);
    // Agent 0 does not answer: caller 1 goes to agent 1, agent 0 is Ready.
    let o = w.ring(1, 0, RingOutcome::NoAnswer);
    assert_eq!(offers(&o), vec![(1, 1)]);
    assert_eq!(w.state(0), AgentState::Ready);
}

#[test]
fn leave_while_ringing_cancels_at_once() {
    let mut w = W::new(&simple(2, Strategy::RingAll));
    w.login(0);
    w.login(1);
    assert_eq!(offers(&w.enqueue(1, 0, 0)).len(), 2);
    let o = w.input(Input::Leave { call: CallKey(1) });
    let mut c = cancels(&o);
    c.sort();
    assert_eq!(c, vec![(1, 0), (1, 1)]);
    assert_eq!(w.state(0), AgentState::Ready);
    assert_eq!(w.state(1), AgentState::Ready);
    assert_eq!(w.today(0).abandoned, 1);
    assert_eq!(w.e.agent_reason(AgentId(0)), None);
}

#[test]
fn wrap_up_then_ready_and_extension_is_capped() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].wrap_up = Duration::from_secs(10);
    cc.queues[0].wrap_up_max = Duration::from_secs(25);
    let mut w = W::new(&cc);
    w.login(0);
    w.enqueue(1, 0, 0);
    w.serve(1, 0, Duration::from_secs(5));
    assert_eq!(w.state(0), AgentState::WrapUp);
    w.op(0, AgentOp::ExtendWrapUp(Duration::from_secs(100)));
    w.advance(Duration::from_secs(24));
    assert_eq!(w.state(0), AgentState::WrapUp);
    w.advance(S);
    assert_eq!(w.state(0), AgentState::Ready);
    let t = w.today(0);
    assert_eq!(t.handled, 1);
    assert_eq!(t.aht(), Duration::from_secs(30));
}

#[test]
fn callback_keeps_the_place_and_calls_back() {
    let mut w = W::new(&simple(1, Strategy::LongestIdle));
    w.enqueue(1, 0, 0);
    w.enqueue(2, 0, 0);
    w.input(Input::Callback { call: CallKey(1) });
    assert_eq!(w.today(0).callbacks, 1);
    w.advance(CALLBACK_HOLD);
    let o = w.login(0);
    assert!(o.iter().any(|o| matches!(
        o,
        Output::CallBack {
            call: CallKey(1),
            agent: AgentId(0),
            ..
        }
    )));
    // A failed callback is retried later, caller 2 meanwhile.
    let o = w.ring(1, 0, RingOutcome::Failed);
    assert_eq!(offers(&o), vec![(2, 0)]);
    assert_eq!(w.e.agent_reason(AgentId(0)), None);
    w.serve(2, 0, S);
    let o = w.advance(CALLBACK_RETRY);
    assert!(o.iter().any(|o| matches!(
        o,
        Output::CallBack {
            call: CallKey(1),
            ..
        }
    )));
    w.ring(1, 0, RingOutcome::Answered);
    let t = w.today(0);
    assert_eq!((t.offered, t.answered, t.abandoned), (2, 2, 0));
}

#[test]
fn callback_failing_every_attempt_is_abandoned() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.acd.ring_timeout = Duration::from_secs(1000);
    let mut w = W::new(&cc);
    w.login(0);
    w.op(0, AgentOp::NotReady { reason: 4 });
    w.enqueue(1, 0, 0);
    w.input(Input::Callback { call: CallKey(1) });
    w.op(0, AgentOp::Ready);
    for i in 0..CALLBACK_ATTEMPTS {
        let o = w.advance(CALLBACK_RETRY);

        assert!(
            o.iter().any(|o| matches!(o, Output::CallBack { .. })),
            "attempt {i}"
        );
        w.ring(1, 0, RingOutcome::NoAnswer);
    }
    let t = w.today(0);
    assert_eq!((t.abandoned, t.callbacks), (1, 1));
    assert_eq!(w.state(0), AgentState::Ready);
}

#[test]
fn phone_unregister_logs_out_and_register_logs_in() {
    let mut w = W::new(&simple(1, Strategy::LongestIdle));
    w.op(0, AgentOp::PhoneRegistered);
    assert_eq!(w.state(0), AgentState::Ready);
    assert!(w.e.agent_registered(AgentId(0)));
    w.enqueue(1, 0, 0);
    let o = w.op(0, AgentOp::PhoneUnregistered);
    assert_eq!(cancels(&o), vec![(1, 0)]);
    assert_eq!(w.state(0), AgentState::LoggedOut);
    assert_eq!(w.e.waiting(QueueId(0)), 1);
    assert!(o.iter().any(|o| matches!(
        o,
        Output::AgentState {
            state: AgentState::LoggedOut,
            ..
        }
    )));
}

#[test]
fn stale_and_unknown_inputs_are_ignored() {
    let mut w = W::new(&simple(1, Strategy::LongestIdle));
    w.ring(9, 0, RingOutcome::Answered);
    w.input(Input::Leave { call: CallKey(9) });
    w.input(Input::CallEnded {
        call: CallKey(9),
        agent: AgentId(0),
    });
    w.input(Input::Callback { call: CallKey(9) });
    w.op(5, AgentOp::Login);
    w.enqueue(1, 7, 0);
    w.login(0);
    w.enqueue(1, 0, 0);
    w.enqueue(1, 0, 0);
    w.ring(1, 0, RingOutcome::Answered);
    w.ring(1, 0, RingOutcome::Answered);
    w.input(Input::Leave { call: CallKey(1) });
    w.input(Input::CallEnded {
        call: CallKey(1),
        agent: AgentId(0),
    });
    w.input(Input::CallEnded {
        call: CallKey(1),
        agent: AgentId(0),
    });
    let t = w.today(0);
    assert_eq!((t.offered, t.answered, t.abandoned), (1, 1, 0));
    assert_eq!(w.state(0), AgentState::WrapUp);
}

#[test]
fn announcements_give_position_and_an_estimate() {
    let mut cc = simple(1, Strategy::LongestIdle);
    cc.queues[0].announce_every = Some(Duration::from_secs(30));
    let mut w = W::new(&cc);
    w.login(0);
    w.op(0, AgentOp::NotReady { reason: 2 });
    w.enqueue(1, 0, 0);
    w.enqueue(2, 0, 0);
    let o = w.advance(Duration::from_secs(30));
    let ann: Vec<_> = o
        .iter()
        .filter_map(|o| match o {
            Output::Announce {
                call,
                position,
                wait,
            } => Some((call.0, *position, *wait)),
            _ => None,
        })
        .collect();
    assert_eq!(ann, vec![(1, 1, DEFAULT_AHT), (2, 2, DEFAULT_AHT * 2)]);
}

#[test]
fn stats_add_up_print_and_roll() {
    let mut cc = simple(2, Strategy::LongestIdle);
    cc.queues[0].name = "support".into();
    cc.queues[0].wrap_up = Duration::ZERO;
    let mut w = W::new(&cc);
    w.login(0);
    w.enqueue(1, 0, 0);
    w.advance(Duration::from_secs(2));
    w.serve(1, 0, Duration::from_secs(4));
    w.enqueue(2, 0, 0);
    w.ring(2, 0, RingOutcome::Answered);
    w.advance(Duration::from_secs(1));
    w.enqueue(3, 0, 0);
    w.advance(Duration::from_secs(3));
    w.input(Input::Leave { call: CallKey(3) });
    let s = w.e.stats(w.now);
    let t = s.queues[0].today;
    assert_eq!(
        (t.offered, t.answered, t.abandoned, s.queues[0].waiting),
        (3, 2, 1, 0)
    );
    assert_eq!(t.abandoned_wait, Duration::from_secs(3));
    assert_eq!(t.asa(), Duration::from_secs(1));
    assert_eq!(t.answered_wait, Duration::from_secs(2));
    let text = s.to_string();
    let first = text.lines().find(|l| l.contains("queue support")).unwrap();
    assert!(first.starts_with("queue support waiting=0 longest_wait_s=0 offered=3 answered=2 abandoned=1 abandoned_wait_s=3 overflowed=0 in_service_level=2 callbacks=0 asa_s=1.0 aht_s=4.0"), "{first}");
    assert!(
        text.contains("\n  queue support last_interval waiting=0 longest_wait_s=0 offered=0"),
        "{text}"
    );
    assert!(text.contains("agent 1001 state=on_call"), "{text}");
    assert!(text.contains("agent 1002 state=logged_out"), "{text}");
    w.e.roll_interval(w.now);
    let s = w.e.stats(w.now);
    assert_eq!(s.queues[0].interval, QueueCounters::default());
    assert_eq!(s.queues[0].last_interval.answered, 2);
    assert!(
        s.to_string().contains(
            "  queue support last_interval waiting=0 longest_wait_s=0 offered=3 answered=2"
        ),
        "{s}"
    );
    assert_eq!(w.today(0).offered, 3);
    w.advance(Duration::from_secs(5));
    w.e.roll_day(w.now);
    let s = w.e.stats(w.now);
    assert_eq!(s.queues[0].today, QueueCounters::default());
    assert_eq!(s.agents[0].today.calls, 0);
    assert_eq!(s.agents[0].for_, Duration::from_secs(9));
    w.input(Input::CallEnded {
        call: CallKey(2),
        agent: AgentId(0),
    });
    assert_eq!(
        w.e.stats(w.now).agents[0].today.talk,
        Duration::from_secs(9)
    );
    let _ = w.t0;
}

#[test]
fn fewest_calls_counts_restart_with_the_day() {
    let mut w = W::new(&simple(2, Strategy::FewestCalls));
    w.login(0);
    w.login(1);
    // Agent 0: one call, agent 1: two.
    for (c, a) in [(1, 0), (2, 1)] {
        assert_eq!(offers(&w.enqueue(c, 0, 0)), vec![(c, a)]);
        w.serve(c, a, S);
    }
    w.advance(Duration::from_secs(20));
    w.op(0, AgentOp::NotReady { reason: 2 });
    assert_eq!(offers(&w.enqueue(3, 0, 0)), vec![(3, 1)]);
    w.serve(3, 1, S);
    w.advance(Duration::from_secs(20));
    w.op(0, AgentOp::Ready);
    assert_eq!(offers(&w.enqueue(4, 0, 0)), vec![(4, 0)]);
    w.serve(4, 0, S);
    w.advance(Duration::from_secs(20));
    // Before the roll agent 1 (3 calls) would lose to agent 0 (2 calls);
    // after it, agent 0 takes one call and agent 1 (0 today) is next.
    w.e.roll_day(w.now);
    let first = offers(&w.enqueue(5, 0, 0))[0].1;
    w.serve(5, first, S);
    w.advance(Duration::from_secs(20));
    let other = 1 - first;
    assert_eq!(offers(&w.enqueue(6, 0, 0)), vec![(6, other)]);
}

#[test]
fn round_robin_follows_the_members_order() {
    let mut cc = simple(3, Strategy::RoundRobin);
    cc.queues[0].members = vec!["1002".into(), "1003".into(), "1001".into()];
    let mut w = W::new(&cc);
    for a in 0..3 {
        w.login(a);
    }
    let mut got = Vec::new();
    for c in 1..=4 {
        let o = offers(&w.enqueue(c, 0, 0));
        got.push(o[0].1);
        w.input(Input::Leave { call: CallKey(c) });
    }
    assert_eq!(got, vec![1, 2, 0, 1]);
}
