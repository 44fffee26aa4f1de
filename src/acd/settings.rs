//! What the engine precomputes from the configuration once: interned skill
//! names, each queue's requirement steps (entry skills, then `relax`), and
//! for every agent the (queue, step) pairs it is eligible for, so that no
//! decision ever looks at an agent or queue it cannot use.

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
    /// Position in the queue's member order (`members` list, or agent
    /// index when `members` is empty): Linear and RoundRobin order.
    pub rank: u32,
}

/// A queue's precomputed shape.
#[derive(Debug, Clone)]
pub(crate) struct QueueShape {
    /// `after` of each step; step 0 (entry skills) has `Duration::ZERO`.
    pub steps: Vec<Duration>,
    /// First pool index of this queue; pool `base + k` serves step k.
    pub pool_base: u32,
    /// Agents eligible at step k (sizes pools' compaction).
    pub eligible: Vec<u32>,
    /// Size of the rank space (RoundRobin wraps here).
    pub ranks: u32,
    pub strategy: Strategy,
}

/// The engine's settings: the configuration plus its precomputed indexes.
pub struct Settings {
    cc: ContactCenter,
    pub(crate) seed: u64,
    pub(crate) shapes: Vec<QueueShape>,
    /// Per agent: the queues it is eligible for, in queue order.
    pub(crate) memberships: Vec<Vec<Membership>>,
    /// Per pool: its queue.
    pub(crate) pool_queue: Vec<u32>,
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
        let mut shapes = Vec::with_capacity(cc.queues.len());
        let mut pool_queue = Vec::new();
        for (qi, q) in cc.queues.iter().enumerate() {
            let mut reqs: Vec<(Duration, Vec<(usize, u8)>)> = Vec::new();
            let need = |s: &[Skill]| -> Vec<(usize, u8)> {
                s.iter().map(|(n, l)| (intern[n], *l)).collect()
            };
            reqs.push((Duration::ZERO, need(&q.skills)));
            for r in q.relax.iter().take(MAX_STEPS - 1) {
                reqs.push((r.after, need(&r.skills)));
            }
            let pool_base = pool_queue.len() as u32;
            pool_queue.extend(std::iter::repeat_n(qi as u32, reqs.len()));
            let mut eligible = vec![0u32; reqs.len()];
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
            let ranks = if q.members.is_empty() {
                cc.agents.len()
            } else {
                q.members.len()
            } as u32;
            for (a, rank) in members {
                let mut steps = 0u16;
                for (k, (_, need)) in reqs.iter().enumerate() {
                    if meets(&agent_levels[a], need) {
                        steps |= 1 << k;
                        eligible[k] += 1;
                    }
                }
                if steps != 0 {
                    memberships[a].push(Membership {
                        queue: qi as u32,
                        steps,
                        rank,
                    });
                }
            }
            shapes.push(QueueShape {
                steps: reqs.iter().map(|(d, _)| *d).collect(),
                pool_base,
                eligible,
                ranks: ranks.max(1),
                strategy: q.strategy,
            });
        }
        Settings {
            cc: cc.clone(),
            seed,
            shapes,
            memberships,
            pool_queue,
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
