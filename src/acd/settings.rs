//! What the engine precomputes from the configuration once: interned skill
//! names, each queue's requirement steps (entry skills, then `relax`), the
//! pools of free agents (one per distinct (strategy key, requirement,
//! members), shared by the queues and steps that have the same), and for
//! every agent the queues and pools it belongs to, so that no decision
//! ever looks at an agent, queue or pool it cannot use.

use std::collections::HashMap;
use std::time::Duration;

use super::{AgentId, QueueId};
use crate::config::contact::{AcdConfig, ContactCenter, QueueConfig, Skill, Strategy};

/// Requirement steps per queue are capped here (entry + relax steps); later
/// relax steps are ignored.
pub const MAX_STEPS: usize = 16;

/// One queue an agent may serve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Membership {
    pub queue: u32,
    /// Bit k: the agent meets requirement step k.
    pub steps: u16,
}

/// One pool an agent belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentPool {
    pub pool: u32,
    /// How the pool is keyed (LongestIdle also stands for RingAll).
    pub kind: Strategy,
    /// Linear and RoundRobin pools: the agent's bit (its place in the
    /// pool's member order).
    pub local: u32,
}

/// A queue's precomputed shape.
#[derive(Debug, Clone)]
pub(crate) struct QueueShape {
    /// `after` of each step; step 0 (entry skills) has `Duration::ZERO`.
    pub steps: Vec<Duration>,
    /// The pool serving each step. Queues with the same requirement,
    /// members and kind of key share pools (Linear and RoundRobin share:
    /// both need the free members in member order; the RoundRobin
    /// position is the queue's).
    pub pools: Vec<u32>,
    pub strategy: Strategy,
    // The queue's policy read per decision, kept here, next to the above
    // (the `QueueConfig` is large and cold).
    pub max_length: Option<u32>,
    pub join_empty: bool,
    pub leave_when_empty: bool,
    pub sticky_wait: Duration,
    pub announce_every: Option<Duration>,
    pub overflow_after: Option<Duration>,
    pub max_wait: Option<Duration>,
    pub wrap_up: Duration,
    pub wrap_up_max: Duration,
    pub service_level: Duration,
}

/// The engine's settings: the configuration plus its precomputed indexes.
pub struct Settings {
    cc: ContactCenter,
    pub(crate) seed: u64,
    pub(crate) shapes: Vec<QueueShape>,
    /// Per agent: the queues it is eligible for, in queue order.
    pub(crate) memberships: Vec<Vec<Membership>>,
    /// Per agent: the pools it belongs to, each once.
    pub(crate) agent_pools: Vec<Vec<AgentPool>>,
    /// Per pool: how it is keyed and how many agents it may hold.
    pub(crate) pool_kind: Vec<Strategy>,
    pub(crate) pool_eligible: Vec<u32>,
    /// Per Linear/RoundRobin pool: (rank, agent) by rank.
    pub(crate) pool_members: Vec<Vec<(u32, u32)>>,
    agent_ids: HashMap<String, AgentId>,
    queue_ids: HashMap<String, QueueId>,
}

/// Skill levels of an agent indexed by interned skill (0 = lacks it).
fn levels(skills: &[Skill], intern: &HashMap<String, usize>) -> Vec<u8> {
    let mut v = vec![0u8; intern.len()];
    for (name, level) in skills {
        if let Some(&i) = intern.get(name) {
            v[i] = v[i].max(*level);
        }
    }
    v
}

fn meets(agent: &[u8], need: &[(usize, u8)]) -> bool {
    need.iter().all(|&(s, l)| agent[s] >= l)
}

impl Settings {
    /// Precomputes the indexes; `seed` drives the Random strategy.
    pub fn from_config(cc: &ContactCenter, seed: u64) -> Settings {
        let mut intern: HashMap<String, usize> = HashMap::new();
        let all = cc
            .agents
            .iter()
            .flat_map(|a| a.skills.iter())
            .chain(cc.queues.iter().flat_map(|q| {
                q.skills
                    .iter()
                    .chain(q.relax.iter().flat_map(|r| r.skills.iter()))
            }));
        for (name, _) in all {
            let n = intern.len();
            intern.entry(name.clone()).or_insert(n);
        }
        let agent_levels: Vec<Vec<u8>> = cc
            .agents
            .iter()
            .map(|a| levels(&a.skills, &intern))
            .collect();
        let agent_ids: HashMap<String, AgentId> = cc
            .agents
            .iter()
            .enumerate()
            .rev()
            .map(|(i, a)| (a.id.clone(), AgentId(i as u32)))
            .collect();
        let queue_ids: HashMap<String, QueueId> = cc
            .queues
            .iter()
            .enumerate()
            .rev()
            .map(|(i, q)| (q.name.clone(), QueueId(i as u32)))
            .collect();
        let mut memberships: Vec<Vec<Membership>> = vec![Vec::new(); cc.agents.len()];
        let mut agent_pools: Vec<Vec<AgentPool>> = vec![Vec::new(); cc.agents.len()];
        let mut shapes = Vec::with_capacity(cc.queues.len());
        let mut pool_kind: Vec<Strategy> = Vec::new();
        type PoolKey = (u8, u32, Vec<(usize, u8)>, Vec<u32>);
        let mut pool_ids: HashMap<PoolKey, u32> = HashMap::new();
        for (qi, q) in cc.queues.iter().enumerate() {
            let mut reqs: Vec<(Duration, Vec<(usize, u8)>)> = Vec::new();
            let need = |s: &[Skill]| -> Vec<(usize, u8)> {
                let mut v: Vec<(usize, u8)> = s.iter().map(|(n, l)| (intern[n], *l)).collect();
                v.sort_unstable();
                v
            };
            reqs.push((Duration::ZERO, need(&q.skills)));
            for r in q.relax.iter().take(MAX_STEPS - 1) {
                reqs.push((r.after, need(&r.skills)));
            }
            let members: Vec<(usize, u32)> = if q.members.is_empty() {
                (0..cc.agents.len()).map(|a| (a, a as u32)).collect()
            } else {
                let mut seen = vec![false; cc.agents.len()];
                q.members
                    .iter()
                    .enumerate()
                    .filter_map(|(rank, id)| {
                        let a = agent_ids.get(id)?.0 as usize;
                        (!std::mem::replace(&mut seen[a], true)).then_some((a, rank as u32))
                    })
                    .collect()
            };
            let member_key: Vec<u32> = if q.members.is_empty() {
                Vec::new()
            } else {
                members.iter().map(|(a, _)| *a as u32).collect()
            };
            let (code, kind) = match q.strategy {
                Strategy::LongestIdle | Strategy::RingAll => (0, Strategy::LongestIdle),
                Strategy::FewestCalls => (1, Strategy::FewestCalls),
                Strategy::LeastTalkTime => (2, Strategy::LeastTalkTime),
                Strategy::Random => (3, Strategy::Random),
                Strategy::Linear | Strategy::RoundRobin => (4, Strategy::Linear),
            };
            let owner = u32::MAX;
            let pools: Vec<u32> = reqs
                .iter()
                .map(|(_, need)| {
                    let key = (code, owner, need.clone(), member_key.clone());
                    let n = pool_kind.len() as u32;
                    *pool_ids.entry(key).or_insert_with(|| {
                        pool_kind.push(kind);
                        n
                    })
                })
                .collect();
            for (a, rank) in members {
                let mut steps = 0u16;
                for (k, (_, need)) in reqs.iter().enumerate() {
                    if meets(&agent_levels[a], need) {
                        steps |= 1 << k;
                        agent_pools[a].push(AgentPool {
                            pool: pools[k],
                            kind,
                            local: rank,
                        });
                    }
                }
                if steps != 0 {
                    memberships[a].push(Membership {
                        queue: qi as u32,
                        steps,
                    });
                }
            }
            shapes.push(QueueShape {
                steps: reqs.iter().map(|(d, _)| *d).collect(),
                pools,
                strategy: q.strategy,
                max_length: q.max_length,
                join_empty: q.join_empty,
                leave_when_empty: q.leave_when_empty,
                sticky_wait: q.sticky_wait,
                announce_every: q.announce_every.filter(|d| !d.is_zero()),
                overflow_after: q.overflow.as_ref().map(|(d, _)| *d),
                max_wait: q.max_wait,
                wrap_up: q.wrap_up,
                wrap_up_max: q.wrap_up_max,
                service_level: q.service_level,
            });
        }
        let mut pool_eligible = vec![0u32; pool_kind.len()];
        let mut pool_members: Vec<Vec<(u32, u32)>> = vec![Vec::new(); pool_kind.len()];
        for (a, ps) in agent_pools.iter_mut().enumerate() {
            ps.sort_by_key(|p| p.pool);
            ps.dedup_by_key(|p| p.pool);
            ps.shrink_to_fit();
            for p in ps.iter() {
                pool_eligible[p.pool as usize] += 1;
                if p.kind == Strategy::Linear {
                    // `local` holds the rank until numbered below.
                    pool_members[p.pool as usize].push((p.local, a as u32));
                }
            }
        }
        for m in &mut pool_members {
            m.sort_unstable();
        }
        for (a, ps) in agent_pools.iter_mut().enumerate() {
            for p in ps.iter_mut().filter(|p| p.kind == Strategy::Linear) {
                let m = &pool_members[p.pool as usize];
                p.local = m.partition_point(|&(r, x)| (r, x) < (p.local, a as u32)) as u32;
            }
        }
        Settings {
            cc: cc.clone(),
            seed,
            shapes,
            memberships,
            agent_pools,
            pool_kind,
            pool_eligible,
            pool_members,
            agent_ids,
            queue_ids,
        }
    }

    pub fn agent(&self, id: &str) -> Option<AgentId> {
        self.agent_ids.get(id).copied()
    }

    pub fn agent_name(&self, a: AgentId) -> &str {
        &self.cc.agents[a.0 as usize].id
    }

    pub fn queue(&self, name: &str) -> Option<QueueId> {
        self.queue_ids.get(name).copied()
    }

    pub fn queue_name(&self, q: QueueId) -> &str {
        &self.cc.queues[q.0 as usize].name
    }

    pub fn queue_config(&self, q: QueueId) -> &QueueConfig {
        &self.cc.queues[q.0 as usize]
    }

    pub fn agents(&self) -> usize {
        self.cc.agents.len()
    }

    pub fn queues(&self) -> usize {
        self.cc.queues.len()
    }

    /// The `[acd]` policy.
    pub fn acd(&self) -> &AcdConfig {
        &self.cc.acd
    }

    /// Whether agent `a` may take calls of queue `q` at some step.
    pub fn serves(&self, a: AgentId, q: QueueId) -> bool {
        self.memberships
            .get(a.0 as usize)
            .is_some_and(|m| m.iter().any(|m| m.queue == q.0))
    }

    pub(crate) fn qc(&self, q: u32) -> &QueueConfig {
        &self.cc.queues[q as usize]
    }
}
