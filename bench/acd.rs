//! ACD engine throughput and decision latency (`cargo bench --bench acd`).
//!
//! A virtual-clock contact center: 1,000 queues, 50 skills, 100 / 1,000 /
//! 10,000 agents (each with 3 random skills at levels 1..=5; each queue
//! asks for 1-2 skills of some agent at a level it has, so no queue is
//! unservable). Callers arrive at random queues at 70% of the agents'
//! capacity (talk 10-50 s, wrap-up 5 s); the model of the shards answers
//! every Offer at once, ends calls after their talk time and hangs up
//! callers still waiting after 60 s. Every engine entry (`handle` or
//! `handle_timeout`, with draining its outputs) is timed with the real
//! clock (the quarter-hour and day rolls are not timed); a *decision* is
//! an entry that produced output (an offer, an
//! agent state change, ...). decisions/s = decisions / total time inside
//! the engine (entries that found only void timers are in the time, not
//! in the count). Two runs: longest-idle everywhere, and the six
//! single-offer strategies mixed across queues (ring-all is left out: its
//! offer fan-out is O(free members) by definition).

// Benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
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
}

const QUEUES: usize = 1000;
const SKILLS: u64 = 50;
const MIXED: [Strategy; 6] = [
    Strategy::LongestIdle,
    Strategy::RoundRobin,
    Strategy::FewestCalls,
    Strategy::LeastTalkTime,
    Strategy::Random,
    Strategy::Linear,
];

fn center(agents: usize, mixed: bool, rng: &mut Rng) -> ContactCenter {
    let mut cc = ContactCenter::default();
    cc.acd.max_no_answer = 0;
    cc.acd.sticky_days = 0;
    for i in 0..agents {
        let mut skills: Vec<(String, u8)> = Vec::new();
        while skills.len() < 3 {
            let s = format!("s{}", rng.below(SKILLS));
            if !skills.iter().any(|(n, _)| *n == s) {
                skills.push((s, 1 + rng.below(5) as u8));
            }
        }
        cc.agents.push(AgentConfig {
            id: format!("{}", 100_000 + i),
            skills,
        });
    }
    for i in 0..QUEUES {
        let mut q = QueueConfig::named(&format!("q{i}"));
        let model = &cc.agents[rng.below(agents as u64) as usize];
        let n = 1 + rng.below(2) as usize;
        q.skills = model.skills[..n]
            .iter()
            .map(|(s, l)| (s.clone(), 1 + rng.below(u64::from(*l)) as u8))
            .collect();
        q.wrap_up = Duration::from_secs(5);
        q.strategy = if mixed {
            MIXED[i % MIXED.len()]
        } else {
            Strategy::LongestIdle
        };
        cc.queues.push(q);
    }
    cc
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    End(u64, u32),
    Abandon(u64),
}

struct Run {
    agents: usize,
    decisions: u64,
    answered: u64,
    engine: Duration,
    hist: Histogram<u64>,
}

fn run(agents: usize, mixed: bool, measured: u64) -> Run {
    let mut rng = Rng(0x5EED_0000 + agents as u64);
    let cc = center(agents, mixed, &mut rng);
    let t0 = Instant::now();
    let mut e = Engine::new(Settings::from_config(&cc, 42), t0);
    let mut now = t0;
    let mut outs: Vec<Output> = Vec::with_capacity(64);
    let mut pending: Vec<Input> = Vec::new();
    let mut events: BinaryHeap<Reverse<(Instant, u64, Ev)>> = BinaryHeap::new();
    let mut n_ev = 0u64;
    // 70% of capacity: mean handle 35 s per call.
    let gap_ns = (35e9 / (0.7 * agents as f64)) as u64;
    let mut next_arrival = t0;
    let mut next_call = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("histogram");
    let (mut decisions, mut answered, mut engine) = (0u64, 0u64, Duration::ZERO);
    let warmup = measured / 4;
    let mut entries = 0u64;
    for a in 0..agents {
        e.handle(
            now,
            Input::Agent {
                agent: AgentId(a as u32),
                op: AgentOp::Login,
            },
        );
    }
    while e.poll_output().is_some() {}
    let mut next_roll = t0 + Duration::from_secs(900);
    let mut rolls = 0u64;
    while decisions < measured {
        // The shell's quarter-hour and midnight rolls (not timed: they are
        // not decisions).
        if now >= next_roll {
            e.roll_interval(now);
            rolls += 1;
            if rolls.is_multiple_of(96) {
                e.roll_day(now);
            }
            next_roll += Duration::from_secs(900);
        }
        let input = if let Some(i) = pending.pop() {
            Some(i)
        } else {
            let next_ev = events.peek().map(|Reverse((t, _, _))| *t);
            let next_to = e.poll_timeout();
            let mut t = next_arrival;
            if let Some(x) = next_ev {
                t = t.min(x);
            }
            if let Some(x) = next_to {
                t = t.min(x);
            }
            now = now.max(t);
            if next_to == Some(t) {
                None
            } else if next_ev == Some(t) {
                let Some(Reverse((_, _, ev))) = events.pop() else {
                    unreachable!()
                };
                Some(match ev {
                    Ev::End(call, agent) => Input::CallEnded {
                        call: CallKey(call),
                        agent: AgentId(agent),
                    },
                    Ev::Abandon(call) => Input::Leave {
                        call: CallKey(call),
                    },
                })
            } else {
                next_call += 1;
                next_arrival = now + Duration::from_nanos(gap_ns / 2 + rng.below(gap_ns));
                n_ev += 1;
                events.push(Reverse((
                    now + Duration::from_secs(60),
                    n_ev,
                    Ev::Abandon(next_call),
                )));
                Some(Input::Enqueue {
                    call: CallKey(next_call),
                    queue: QueueId(rng.below(QUEUES as u64) as u32),
                    priority: rng.below(2) as u8,
                    caller: next_call,
                    last_agent: None,
                })
            }
        };
        let start = Instant::now();
        match input {
            Some(i) => e.handle(now, i),
            None => e.handle_timeout(now),
        }
        while let Some(o) = e.poll_output() {
            outs.push(o);
        }
        let took = start.elapsed();
        entries += 1;
        let decided = !outs.is_empty();
        if entries > warmup {
            engine += took;
            if decided {
                decisions += 1;
                hist.saturating_record(took.as_nanos() as u64);
            }
        }
        for o in outs.drain(..) {
            if let Output::Offer { call, agent, .. } = o {
                pending.push(Input::RingResult {
                    call,
                    agent,
                    outcome: RingOutcome::Answered,
                });
                if entries > warmup {
                    answered += 1;
                }
                n_ev += 1;
                let talk = Duration::from_secs(10 + rng.below(41));
                events.push(Reverse((now + talk, n_ev, Ev::End(call.0, agent.0))));
            }
        }
    }
    std::hint::black_box(e.stats(now));
    Run {
        agents,
        decisions,
        answered,
        engine,
        hist,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let measured: u64 = std::env::var("ACD_BENCH_DECISIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    println!(
        "{:<13} {:>7} {:>14} {:>12} {:>8} {:>8} {:>9} {:>8}",
        "strategies", "agents", "decisions/s", "offers/s", "p50_ns", "p99_ns", "p99.9_ns", "max_us"
    );
    // ACD_BENCH_ONLY=mixed:10000 (or longest-idle:100, ...) runs one case.
    let only = std::env::var("ACD_BENCH_ONLY").ok();
    for mixed in [false, true] {
        for agents in [100, 1_000, 10_000] {
            let name = if mixed { "mixed" } else { "longest-idle" };
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{name}:{agents}"))
            {
                continue;
            }
            let r = run(agents, mixed, measured);
            let secs = r.engine.as_secs_f64();
            println!(
                "{:<13} {:>7} {:>14.0} {:>12.0} {:>8} {:>8} {:>9} {:>8}",
                if mixed { "mixed(6)" } else { "longest-idle" },
                r.agents,
                r.decisions as f64 / secs,
                r.answered as f64 / secs,
                r.hist.value_at_quantile(0.5),
                r.hist.value_at_quantile(0.99),
                r.hist.value_at_quantile(0.999),
                r.hist.max() / 1000,
            );
        }
    }
}
