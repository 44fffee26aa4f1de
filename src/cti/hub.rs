//! The control plane's picture of agents and calls, and the fan-out of
//! events to CTI clients.
//!
//! Fed in order by the shards' and the ACD's rings ([`super::link`]), the
//! hub keeps the live calls (id → owning shard key, agent, queue, parties,
//! data, state) and the agents' states, so that it can check a token's
//! scope against a command ("agent:1001 cannot hang up 1002's call"),
//! answer `snapshot`, and route each event to the clients subscribed to
//! its agent or queue. An event is rendered to JSON once and the same
//! bytes go to every client; a client whose queue is full misses events
//! (counted, and told with a `lagged` message once it drains) instead of
//! slowing the others.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::auth::Scope;
use super::event::{AgentEvent, CallEvent, CallEventKind};
use super::proto::{ErrorCode, ProtoError, data_json};
use crate::acd::AgentState;

/// Calls that ended are remembered this many (for `call.wrap_up` and late
/// commands, which then get `invalid_state` rather than `not_found`).
const ENDED_KEPT: usize = 4096;

/// A live (or recently ended) call as the control plane knows it.
#[derive(Debug, Clone)]
pub struct CallView {
    pub key: u64,
    pub parent: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub ani: String,
    pub dnis: String,
    pub data: Vec<(String, String)>,
    /// The last event's name (`call.established`, ...).
    pub state: &'static str,
    pub held: bool,
    pub started_ms: i64,
    pub ended: bool,
}

impl CallView {
    fn json(&self, id: &str) -> Value {
        json!({
            "call": id,
            "parent": self.parent,
            "queue": self.queue,
            "agent": self.agent,
            "ani": self.ani,
            "dnis": self.dnis,
            "data": data_json(&self.data),
            "state": self.state,
            "held": self.held,
            "started_ms": self.started_ms,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AgentView {
    pub state: AgentState,
    pub reason: Option<u16>,
    pub since_ms: i64,
}

/// What a client asked to receive.
#[derive(Debug, Clone, Default)]
struct Filter {
    /// Everything its scope covers.
    all: bool,
    agents: HashSet<String>,
    queues: HashSet<String>,
}

struct Client {
    scope: Scope,
    filter: Filter,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Events not delivered because its queue was full.
    missed: u64,
}

/// A client's outgoing queue length (events waiting to be written).
pub const CLIENT_QUEUE: usize = 4096;

/// The hub; owned by the control plane thread (behind its mutex, held for
/// short synchronous steps only).
pub struct Hub {
    calls: HashMap<String, CallView>,
    ended: VecDeque<String>,
    agents: BTreeMap<String, AgentView>,
    queues: Vec<String>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    seq: u64,
    /// Clients by what they follow (an index over `clients`' filters).
    by_agent: HashMap<String, Vec<u64>>,
    by_queue: HashMap<String, Vec<u64>>,
    all: Vec<u64>,
    /// Events delivered and missed, for /metrics.
    pub delivered: u64,
    pub missed: u64,
}

impl Hub {
    /// A hub for the configured agents (all logged out) and queues.
    pub fn new(agents: impl IntoIterator<Item = String>, queues: Vec<String>) -> Hub {
        Hub {
            calls: HashMap::new(),
            ended: VecDeque::new(),
            agents: agents
                .into_iter()
                .map(|a| {
                    (
                        a,
                        AgentView {
                            state: AgentState::LoggedOut,
                            reason: None,
                            since_ms: 0,
                        },
                    )
                })
                .collect(),
            queues,
            clients: HashMap::new(),
            next_client: 1,
            seq: 0,
            by_agent: HashMap::new(),
            by_queue: HashMap::new(),
            all: Vec::new(),
            delivered: 0,
            missed: 0,
        }
    }

    pub fn call(&self, id: &str) -> Option<&CallView> {
        self.calls.get(id)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentView> {
        self.agents.get(id)
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q == name)
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Checks that `scope` may act on call `id` and returns it.
    pub fn call_for(&self, scope: &Scope, id: &str) -> Result<&CallView, ProtoError> {
        let call = self
            .calls
            .get(id)
            .filter(|c| scope.covers_call(c.agent.as_deref()))
            .ok_or_else(|| ProtoError::new(ErrorCode::NotFound, format!("no call {id:?}")))?;
        Ok(call)
    }

    /// Checks that `scope` may act on agent `id`.
    pub fn agent_for(&self, scope: &Scope, id: &str) -> Result<&AgentView, ProtoError> {
        if !scope.covers_agent(id) {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("this token's scope does not cover agent {id:?}"),
            ));
        }
        self.agents
            .get(id)
            .ok_or_else(|| ProtoError::new(ErrorCode::NotFound, format!("no agent {id:?}")))
    }

    /// A new client; its events go to `tx`.
    pub fn connect(&mut self, scope: Scope, tx: mpsc::Sender<Utf8Bytes>) -> u64 {
        let id = self.next_client;
        self.next_client += 1;
        self.clients.insert(
            id,
            Client {
                scope,
                filter: Filter::default(),
                tx,
                missed: 0,
            },
        );
        id
    }

    pub fn disconnect(&mut self, id: u64) {
        if self.clients.remove(&id).is_some() {
            self.unindex(id);
        }
    }

    fn unindex(&mut self, id: u64) {
        self.all.retain(|c| *c != id);
        for v in self.by_agent.values_mut() {
            v.retain(|c| *c != id);
        }
        for v in self.by_queue.values_mut() {
            v.retain(|c| *c != id);
        }
        self.by_agent.retain(|_, v| !v.is_empty());
        self.by_queue.retain(|_, v| !v.is_empty());
    }

    /// `subscribe`: replaces what client `id` follows. None for both = all
    /// its scope covers. Names outside its scope are refused.
    pub fn subscribe(
        &mut self,
        id: u64,
        agents: Option<Vec<String>>,
        queues: Option<Vec<String>>,
    ) -> Result<Value, ProtoError> {
        let Some(client) = self.clients.get(&id) else {
            return Err(ProtoError::new(ErrorCode::Unavailable, "not connected"));
        };
        let scope = client.scope.clone();
        for a in agents.iter().flatten() {
            self.agent_for(&scope, a)?;
        }
        for q in queues.iter().flatten() {
            if !self.has_queue(q) {
                return Err(ProtoError::new(
                    ErrorCode::NotFound,
                    format!("no queue {q:?}"),
                ));
            }
        }
        let mut filter = Filter::default();
        match (agents, queues) {
            (None, None) => match scope.agent() {
                Some(me) => {
                    filter.agents.insert(me.to_owned());
                }
                None => filter.all = true,
            },
            (a, q) => {
                filter.agents = a.unwrap_or_default().into_iter().collect();
                filter.queues = q.unwrap_or_default().into_iter().collect();
            }
        }
        self.unindex(id);
        if filter.all {
            self.all.push(id);
        }
        for a in &filter.agents {
            self.by_agent.entry(a.clone()).or_default().push(id);
        }
        for q in &filter.queues {
            self.by_queue.entry(q.clone()).or_default().push(id);
        }
        let reply = json!({
            "agents": if filter.all { Value::from("*") } else { filter.agents.iter().cloned().collect::<Vec<_>>().into() },
            "queues": if filter.all { Value::from("*") } else { filter.queues.iter().cloned().collect::<Vec<_>>().into() },
        });
        if let Some(c) = self.clients.get_mut(&id) {
            c.filter = filter;
        }
        Ok(reply)
    }

    /// `snapshot`: the agents, queues and calls `scope` may see.
    pub fn snapshot(&self, scope: &Scope) -> Map<String, Value> {
        let agents: Vec<Value> = self
            .agents
            .iter()
            .filter(|(a, _)| scope.covers_agent(a))
            .map(|(a, v)| {
                json!({"agent": a, "state": v.state.name(), "reason": v.reason, "since_ms": v.since_ms})
            })
            .collect();
        let mut calls: Vec<(&String, &CallView)> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.ended && scope.covers_call(c.agent.as_deref()))
            .collect();
        calls.sort_by_key(|(id, c)| (c.started_ms, id.as_str()));
        let mut m = Map::new();
        m.insert("seq".into(), self.seq.into());
        m.insert("agents".into(), agents.into());
        m.insert("queues".into(), self.queues.clone().into());
        m.insert(
            "calls".into(),
            calls
                .iter()
                .map(|(id, c)| c.json(id))
                .collect::<Vec<_>>()
                .into(),
        );
        m
    }

    /// An agent's state changed.
    pub fn handle_agent(&mut self, e: &AgentEvent) {
        self.agents.insert(
            e.agent.clone(),
            AgentView {
                state: e.state,
                reason: e.reason,
                since_ms: e.at_ms,
            },
        );
        self.seq += 1;
        let text = json!({
            "type": "agent.state",
            "seq": self.seq,
            "ts": e.at_ms,
            "agent": e.agent,
            "state": e.state.name(),
            "reason": e.reason,
        })
        .to_string();
        let agent = e.agent.clone();
        self.fan_out(Utf8Bytes::from(text), Some(&agent), None);
    }

    /// Something happened to a call: the picture is updated and the event
    /// goes to the clients following its agent or queue.
    pub fn handle_call(&mut self, e: &CallEvent) {
        let view = self
            .calls
            .entry(e.call.clone())
            .or_insert_with(|| CallView {
                key: e.key,
                parent: e.parent.clone(),
                queue: None,
                agent: None,
                ani: e.ani.clone(),
                dnis: e.dnis.clone(),
                data: Vec::new(),
                state: "",
                held: false,
                started_ms: e.at_ms,
                ended: false,
            });
        view.key = e.key;
        if e.queue.is_some() {
            view.queue = e.queue.clone();
        }
        if e.agent.is_some() {
            view.agent = e.agent.clone();
        }
        view.data = e.data.clone();
        match &e.kind {
            CallEventKind::Held => view.held = true,
            CallEventKind::Retrieved | CallEventKind::Conferenced { .. } => view.held = false,
            CallEventKind::Cleared { .. } => view.ended = true,
            _ => {}
        }
        if !matches!(
            e.kind,
            CallEventKind::Dtmf { .. } | CallEventKind::DataSet | CallEventKind::Recording { .. }
        ) {
            view.state = e.kind.name();
        }
        let (parent, agent, queue, ended) = (
            view.parent.clone(),
            view.agent.clone(),
            view.queue.clone(),
            view.ended,
        );
        if ended {
            self.ended.push_back(e.call.clone());
            while self.ended.len() > ENDED_KEPT {
                if let Some(old) = self.ended.pop_front() {
                    self.calls.remove(&old);
                }
            }
        }
        self.seq += 1;
        let mut m = Map::new();
        m.insert("type".into(), e.kind.name().into());
        m.insert("seq".into(), self.seq.into());
        m.insert("ts".into(), e.at_ms.into());
        m.insert("call".into(), e.call.clone().into());
        m.insert("parent".into(), parent.into());
        m.insert("queue".into(), queue.clone().into());
        m.insert("agent".into(), agent.clone().into());
        m.insert("ani".into(), e.ani.clone().into());
        m.insert("dnis".into(), e.dnis.clone().into());
        m.insert("data".into(), data_json(&e.data));
        match &e.kind {
            CallEventKind::Offered { wait_ms, contact } => {
                m.insert("wait_ms".into(), (*wait_ms).into());
                m.insert(
                    "contact".into(),
                    contact
                        .as_ref()
                        .and_then(|c| serde_json::to_value(c).ok())
                        .unwrap_or(Value::Null),
                );
            }
            CallEventKind::Transferred { to } => {
                m.insert("to".into(), to.clone().into());
            }
            CallEventKind::Conferenced { parties } => {
                m.insert("parties".into(), parties.clone().into());
            }
            CallEventKind::Dtmf { digit } => {
                m.insert("digit".into(), digit.to_string().into());
            }
            CallEventKind::Recording { on } => {
                m.insert(
                    "recording".into(),
                    (if *on { "on" } else { "paused" }).into(),
                );
            }
            CallEventKind::Cleared { cause } => {
                m.insert("cause".into(), cause.clone().into());
            }
            _ => {}
        }
        let text = Value::Object(m).to_string();
        self.fan_out(Utf8Bytes::from(text), agent.as_deref(), queue.as_deref());
    }

    /// `call.wrap_up` was taken: its event.
    pub fn wrap_up_event(&mut self, id: &str, disposition: &str, notes: &str, at_ms: i64) {
        let Some(view) = self.calls.get(id) else {
            return;
        };
        self.seq += 1;
        let mut m = Map::new();
        m.insert("type".into(), "call.wrap_up".into());
        m.insert("seq".into(), self.seq.into());
        m.insert("ts".into(), at_ms.into());
        let Value::Object(v) = view.json(id) else {
            return;
        };
        m.extend(v);
        m.remove("state");
        m.remove("held");
        m.insert("disposition".into(), disposition.into());
        m.insert("notes".into(), notes.into());
        let (agent, queue) = (view.agent.clone(), view.queue.clone());
        self.fan_out(
            Utf8Bytes::from(Value::Object(m).to_string()),
            agent.as_deref(),
            queue.as_deref(),
        );
    }

    /// `queue.stats` for queue `name` to the clients following it (by name,
    /// or everything).
    pub fn queue_stats(&mut self, name: &str, stats: Value, at_ms: i64) {
        let mut targets = self.by_queue.get(name).cloned().unwrap_or_default();
        targets.extend(&self.all);
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        self.seq += 1;
        let mut m = Map::new();
        m.insert("type".into(), "queue.stats".into());
        m.insert("seq".into(), self.seq.into());
        m.insert("ts".into(), at_ms.into());
        m.insert("queue".into(), name.into());
        if let Value::Object(s) = stats {
            m.extend(s);
        }
        let text = Utf8Bytes::from(Value::Object(m).to_string());
        for id in targets {
            self.send(id, &text);
        }
    }

    /// Queues some client follows by name (for `queue.stats`).
    pub fn followed_queues(&self) -> Vec<String> {
        if self.all.is_empty() {
            self.by_queue.keys().cloned().collect()
        } else {
            self.queues.clone()
        }
    }

    fn fan_out(&mut self, text: Utf8Bytes, agent: Option<&str>, queue: Option<&str>) {
        let mut targets: Vec<u64> = Vec::new();
        for &id in &self.all {
            if self
                .clients
                .get(&id)
                .is_some_and(|c| c.scope.covers_call(agent) || c.scope.sees_all())
            {
                targets.push(id);
            }
        }
        if let Some(ids) = agent.and_then(|a| self.by_agent.get(a)) {
            targets.extend(ids);
        }
        if let Some(ids) = queue.and_then(|q| self.by_queue.get(q)) {
            for &id in ids {
                if self
                    .clients
                    .get(&id)
                    .is_some_and(|c| c.scope.covers_call(agent))
                {
                    targets.push(id);
                }
            }
        }
        if targets.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        for id in targets {
            self.send(id, &text);
        }
    }

    fn send(&mut self, id: u64, text: &Utf8Bytes) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.missed > 0 {
            let note = json!({"type": "lagged", "missed": c.missed}).to_string();
            if c.tx.try_send(Utf8Bytes::from(note)).is_err() {
                c.missed += 1;
                self.missed += 1;
                return;
            }
            c.missed = 0;
        }
        match c.tx.try_send(text.clone()) {
            Ok(()) => self.delivered += 1,
            Err(_) => {
                c.missed += 1;
                self.missed += 1;
            }
        }
    }
}

/// How long a command waits for the shard owning its call.
pub const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CtiScope;

    fn event(kind: CallEventKind, agent: Option<&str>) -> CallEvent {
        CallEvent {
            kind,
            call: "c1".into(),
            key: 7,
            parent: None,
            queue: Some("support".into()),
            agent: agent.map(str::to_owned),
            ani: "+815012345678".into(),
            dnis: "200".into(),
            data: vec![],
            at_ms: 1000,
        }
    }

    fn hub() -> Hub {
        Hub::new(
            ["1001".to_owned(), "1002".to_owned()],
            vec!["support".into(), "sales".into()],
        )
    }

    fn recv(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(t) = rx.try_recv() {
            out.push(serde_json::from_str(t.as_str()).unwrap());
        }
        out
    }

    #[test]
    fn an_agent_client_gets_only_its_own_calls() {
        let mut h = hub();
        let (tx1, mut rx1) = mpsc::channel(16);
        let (tx2, mut rx2) = mpsc::channel(16);
        let a = h.connect(Scope(CtiScope::Agent("1001".into())), tx1);
        let s = h.connect(Scope(CtiScope::Supervisor), tx2);
        h.subscribe(a, None, None).unwrap();
        h.subscribe(s, None, None).unwrap();
        h.handle_call(&event(CallEventKind::Ringing, Some("1002")));
        h.handle_call(&event(CallEventKind::Established, Some("1002")));
        assert!(recv(&mut rx1).is_empty());
        let got = recv(&mut rx2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["type"], "call.ringing");
        assert_eq!(got[1]["type"], "call.established");
        assert!(got[0]["seq"].as_u64() < got[1]["seq"].as_u64());
        // The agent token may not subscribe to another agent or touch its call.
        assert_eq!(
            h.subscribe(a, Some(vec!["1002".into()]), None)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        let scope = Scope(CtiScope::Agent("1001".into()));
        assert_eq!(
            h.call_for(&scope, "c1").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert!(h.call_for(&Scope(CtiScope::Admin), "c1").is_ok());
    }

    #[test]
    fn queue_subscribers_get_the_queue_calls_and_snapshot_lists_live_calls() {
        let mut h = hub();
        let (tx, mut rx) = mpsc::channel(16);
        let c = h.connect(Scope(CtiScope::Supervisor), tx);
        h.subscribe(c, None, Some(vec!["support".into()])).unwrap();
        h.handle_call(&event(
            CallEventKind::Offered {
                wait_ms: 5,
                contact: None,
            },
            Some("1001"),
        ));
        let got = recv(&mut rx);
        assert_eq!(got[0]["type"], "call.offered");
        assert_eq!(got[0]["wait_ms"], 5);
        assert_eq!(got[0]["ani"], "+815012345678");
        let snap = h.snapshot(&Scope(CtiScope::Supervisor));
        assert_eq!(snap["calls"][0]["call"], "c1");
        h.handle_call(&event(
            CallEventKind::Cleared {
                cause: "normal".into(),
            },
            None,
        ));
        assert_eq!(recv(&mut rx)[0]["cause"], "normal");
        let snap = h.snapshot(&Scope(CtiScope::Supervisor));
        assert_eq!(snap["calls"], json!([]));
        assert_eq!(
            h.subscribe(c, None, Some(vec!["nope".into()]))
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn a_full_client_misses_events_and_is_told_without_slowing_others() {
        let mut h = hub();
        let (slow_tx, mut slow_rx) = mpsc::channel(1);
        let (tx, mut rx) = mpsc::channel(64);
        let slow = h.connect(Scope(CtiScope::Admin), slow_tx);
        let fast = h.connect(Scope(CtiScope::Admin), tx);
        h.subscribe(slow, None, None).unwrap();
        h.subscribe(fast, None, None).unwrap();
        for _ in 0..3 {
            h.handle_call(&event(CallEventKind::Ringing, Some("1001")));
        }
        assert_eq!(recv(&mut rx).len(), 3);
        assert_eq!(recv(&mut slow_rx).len(), 1);
        h.handle_call(&event(CallEventKind::Established, Some("1001")));
        let got = recv(&mut slow_rx);
        assert_eq!(got[0], json!({"type": "lagged", "missed": 2}));
        assert_eq!(h.missed, 3);
    }

    #[test]
    fn agent_state_events_update_the_picture() {
        let mut h = hub();
        let (tx, mut rx) = mpsc::channel(16);
        let c = h.connect(Scope(CtiScope::Agent("1002".into())), tx);
        h.subscribe(c, None, None).unwrap();
        h.handle_agent(&AgentEvent {
            agent: "1002".into(),
            state: AgentState::Ready,
            reason: None,
            at_ms: 5,
        });
        h.handle_agent(&AgentEvent {
            agent: "1001".into(),
            state: AgentState::Ready,
            reason: None,
            at_ms: 5,
        });
        let got = recv(&mut rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["state"], "ready");
        assert_eq!(h.agent("1002").unwrap().state, AgentState::Ready);
        let snap = h.snapshot(&Scope(CtiScope::Agent("1002".into())));
        assert_eq!(snap["agents"].as_array().unwrap().len(), 1);
    }
}
