//! When an interaction ends: a queue call's record waits for its agent's
//! wrap-up (after-call work), so that the one record stored and sent to
//! the CRM carries the disposition, the notes and the wrap-up time.
//!
//! A record whose call went through a queue with `wrap_up_s` > 0 and was
//! answered by an agent is held until the first of:
//! * that agent leaves the wrap-up state (the ACD's `agent.state` event:
//!   its wrap-up timer ran out, or `call.wrap_up` / the agent made itself
//!   ready);
//! * the queue's `wrap_up_max_s` plus a grace period has passed since the
//!   call ended (the ACD ends wrap-up by then in any case);
//! * the appliance stops (held records are finished and stored then).
//!
//! Any other record, including a transferred call's (its agent did its
//! wrap-up on leaving the call), is finished at once. A disposition given with
//! `call.wrap_up` (during the call or in wrap-up) is attached to the call's
//! record whenever it arrives. Sans-IO: time comes in as unix ms.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::record::CallRecord;

/// Extra time past `wrap_up_max` before a held record is finished anyway.
pub const GRACE: Duration = Duration::from_secs(5);
/// Clock disagreement tolerated between a record's end (mapped by the
/// record writer) and an agent's state change (stamped by the ACD thread):
/// a change stamped this much before the end still ends the wrap-up.
pub const SKEW_MS: i64 = 500;
/// Dispositions kept for calls whose record has not arrived.
const EARLY_KEPT: usize = 4096;

/// A record ready to store, with what wrap-up added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub record: CallRecord,
    pub disposition: Option<String>,
    pub notes: Option<String>,
    /// Time from the call's end to the agent leaving wrap-up.
    pub wrap_up_ms: Option<i64>,
}

#[derive(Debug)]
struct Held {
    agent: String,
    ended_ms: i64,
    deadline_ms: i64,
    finished: Finished,
}

/// Holds records through wrap-up (see the module doc).
#[derive(Debug, Default)]
pub struct Finisher {
    /// Queue name → its wrap-up limit (queues with wrap-up only).
    wrap_max: HashMap<String, Duration>,
    held: Vec<Held>,
    early: HashMap<String, (String, String)>,
    early_order: VecDeque<String>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Finisher {
    /// `queues`: each queue's name, wrap-up time and wrap-up limit.
    pub fn new(queues: impl IntoIterator<Item = (String, Duration, Duration)>) -> Finisher {
        Finisher {
            wrap_max: queues
                .into_iter()
                .filter(|(_, wrap, _)| !wrap.is_zero())
                .map(|(q, wrap, max)| (q, max.max(wrap)))
                .collect(),
            ..Finisher::default()
        }
    }

    /// A call ended at `ended_ms`: finished now, or held for wrap-up.
    pub fn handle_record(&mut self, record: CallRecord, ended_ms: i64) -> Option<Finished> {
        let (disposition, notes) = match self.early.remove(&record.id) {
            Some((d, n)) => (Some(d), Some(n)),
            None => (None, None),
        };
        // A transferred call's agent did its wrap-up when it left the
        // call, long before this end.
        let wrap = record
            .queue()
            .filter(|_| record.transfers == 0)
            .and_then(|q| self.wrap_max.get(q))
            .copied();
        let agent = record.agent().map(str::to_owned);
        let finished = Finished {
            record,
            disposition,
            notes,
            wrap_up_ms: None,
        };
        match (wrap, agent) {
            (Some(max), Some(agent)) => {
                self.held.push(Held {
                    agent,
                    ended_ms,
                    deadline_ms: ended_ms.saturating_add(ms(max + GRACE)),
                    finished,
                });
                None
            }
            _ => Some(finished),
        }
    }

    /// `call.wrap_up` for call `id`.
    pub fn handle_wrap_up(&mut self, id: &str, disposition: String, notes: String) {
        if let Some(h) = self.held.iter_mut().find(|h| h.finished.record.id == id) {
            h.finished.disposition = Some(disposition);
            h.finished.notes = Some(notes);
            return;
        }
        if self
            .early
            .insert(id.to_owned(), (disposition, notes))
            .is_none()
        {
            self.early_order.push_back(id.to_owned());
        }
        while self.early_order.len() > EARLY_KEPT {
            if let Some(old) = self.early_order.pop_front() {
                self.early.remove(&old);
            }
        }
    }

    /// Agent `agent` changed state at `at_ms`; `in_wrap_up` says whether
    /// the new state is wrap-up. Leaving it finishes the agent's held
    /// records.
    pub fn handle_agent(&mut self, agent: &str, in_wrap_up: bool, at_ms: i64) -> Vec<Finished> {
        if in_wrap_up {
            return Vec::new();
        }
        self.take(
            |h| h.agent == agent && at_ms.saturating_add(SKEW_MS) >= h.ended_ms,
            Some(at_ms),
        )
    }

    /// When the next held record is due regardless.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.held.iter().map(|h| h.deadline_ms).min()
    }

    /// Records whose wrap-up outlasted its limit.
    pub fn handle_timeout(&mut self, now_ms: i64) -> Vec<Finished> {
        self.take(|h| h.deadline_ms <= now_ms, None)
    }

    /// Everything held (the appliance stops).
    pub fn drain(&mut self, now_ms: i64) -> Vec<Finished> {
        self.take(|_| true, Some(now_ms))
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn take(&mut self, pick: impl Fn(&Held) -> bool, end_ms: Option<i64>) -> Vec<Finished> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            if pick(&self.held[i]) {
                let h = self.held.remove(i);
                let mut f = h.finished;
                let end = end_ms.unwrap_or(h.deadline_ms);
                f.wrap_up_ms = Some(end.saturating_sub(h.ended_ms).max(0));
                out.push(f);
            } else {
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::record::{EndCause, LegRecord, Side};
    use std::time::Instant;

    fn record(id: &str, agent: Option<&str>, queue: Option<&str>) -> CallRecord {
        let t = Instant::now();
        let leg = |user: &str, status| LegRecord {
            call_id: "c".into(),
            user: user.into(),
            peer: "127.0.0.1:5060".parse().unwrap(),
            status,
            media: None,
        };
        CallRecord {
            id: id.into(),
            call_id: "c".into(),
            caller: leg("+815012345678", None),
            callees: agent.map(|a| leg(a, Some(200))).into_iter().collect(),
            dialled: "200".into(),
            started: t,
            answered: Some(t),
            ended: t,
            cause: EndCause::Normal,
            hung_up_by: Side::Caller,
            transfers: 0,
            digits: String::new(),
            callee_digits: String::new(),
            recording: None,
            path: queue.map(|q| format!("queue:{q}")).into_iter().collect(),
            data: Vec::new(),
            held_ms: 0,
            queued: None,
            offered: None,
            connected: None,
        }
    }

    fn finisher() -> Finisher {
        Finisher::new([
            (
                "support".to_owned(),
                Duration::from_secs(10),
                Duration::from_secs(300),
            ),
            ("sales".to_owned(), Duration::ZERO, Duration::from_secs(300)),
        ])
    }

    #[test]
    fn a_queue_call_waits_for_its_agents_wrap_up_and_takes_the_disposition() {
        let mut f = finisher();
        assert!(
            f.handle_record(record("r1", Some("1002"), Some("support")), 1_000)
                .is_none()
        );
        assert_eq!(f.poll_timeout(), Some(1_000 + 305_000));
        f.handle_wrap_up("r1", "sale".into(), "wants blue".into());
        assert!(f.handle_agent("1002", true, 1_001).is_empty());
        assert!(f.handle_agent("1003", false, 2_000).is_empty());
        // A change from before the call ended does not end its wrap-up.
        assert!(
            f.handle_agent("1002", false, 1_000 - SKEW_MS - 1)
                .is_empty()
        );
        let done = f.handle_agent("1002", false, 7_500);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].disposition.as_deref(), Some("sale"));
        assert_eq!(done[0].notes.as_deref(), Some("wants blue"));
        assert_eq!(done[0].wrap_up_ms, Some(6_500));
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn other_calls_finish_at_once_with_an_early_disposition() {
        let mut f = finisher();
        f.handle_wrap_up("r2", "callback".into(), String::new());
        let done = f
            .handle_record(record("r2", Some("1001"), Some("sales")), 5)
            .expect("no wrap-up in sales");
        assert_eq!(done.disposition.as_deref(), Some("callback"));
        assert!(
            f.handle_record(record("r3", None, Some("support")), 5)
                .is_some()
        );
        assert!(
            f.handle_record(record("r4", Some("1001"), None), 5)
                .is_some()
        );
        let mut moved = record("r5", Some("1002"), Some("support"));
        moved.transfers = 1;
        assert!(
            f.handle_record(moved, 5).is_some(),
            "transferred: finished at its end"
        );
    }

    #[test]
    fn a_wrap_up_that_never_ends_is_finished_at_its_limit_or_at_stop() {
        let mut f = finisher();
        f.handle_record(record("r1", Some("1002"), Some("support")), 0);
        f.handle_record(record("r2", Some("1003"), Some("support")), 10_000);
        assert!(f.handle_timeout(304_999).is_empty());
        let done = f.handle_timeout(305_000);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].record.id, "r1");
        assert_eq!(done[0].wrap_up_ms, Some(305_000));
        let rest = f.drain(20_000);
        assert_eq!(rest[0].wrap_up_ms, Some(10_000));
        assert_eq!(f.poll_timeout(), None);
    }
}
