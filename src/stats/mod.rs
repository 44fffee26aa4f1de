//! Per-shard counters, summed on read.
//!
//! Each shard owns one [`ShardCounters`] and is its only writer, so a bump is
//! a relaxed load and store on an atomic (no lock, no read-modify-write
//! contention); readers on other threads — the shutdown report now, the
//! `/metrics` endpoint later — sum the shards with [`Snapshot::sum`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::sip::message::{Method, ParseErrorKind};

pub mod prometheus;

const METHODS: usize = Method::COUNTER_NAMES.len();
const STATUSES: usize = 600; // 100..=699
const PARSE_KINDS: usize = ParseErrorKind::ALL.len();

/// Reads one scalar counter of a shard.
type Reader = fn(&ShardCounters) -> u64;

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning shard calls this.
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Everything one shard counts.
#[derive(Debug)]
pub struct ShardCounters {
    pub requests_in: [Counter; METHODS],
    pub requests_out: [Counter; METHODS],
    /// Index: status - 100.
    pub responses_in: Box<[Counter; STATUSES]>,
    pub responses_out: Box<[Counter; STATUSES]>,
    pub parse_errors: [Counter; PARSE_KINDS],
    /// Responses matching no client transaction (dropped).
    pub stray_responses: Counter,
    /// ACKs matching no transaction (dropped).
    pub stray_acks: Counter,
    pub transactions_created: Counter,
    pub transactions_timed_out: Counter,
    /// Messages handed to another shard over the mesh / received from one.
    pub forwarded_out: Counter,
    pub forwarded_in: Counter,
    /// Successful REGISTER requests (including refreshes and removals).
    pub registrations: Counter,
    pub auth_challenges: Counter,
    pub auth_failures: Counter,
    /// Bindings currently held by this shard's registrar (gauge).
    pub bindings: Counter,
    /// Datagrams the driver dropped for exceeding the receive buffer.
    pub datagrams_truncated: Counter,
    pub tcp_accepted: Counter,
    pub tcp_closed_bad_framing: Counter,
    pub tcp_closed_slow: Counter,
    /// Outputs addressed to broadcast/multicast/unspecified addresses.
    pub refused_destinations: Counter,
    /// Calls the B2BUA took (an initial INVITE it routed or refused).
    pub calls_started: Counter,
    /// Calls answered (2xx relayed to the caller).
    pub calls_answered: Counter,
    /// Calls that ended without being answered (refused, busy, cancelled,
    /// no answer).
    pub calls_unanswered: Counter,
    /// Answered calls that have ended.
    pub calls_completed: Counter,
    /// Calls this shard holds now (gauge).
    pub calls_active: Counter,
    /// Blind transfers (REFER) executed / refused or failed.
    pub transfers: Counter,
    pub transfers_failed: Counter,
    /// Conferences formed (`call.conference`).
    pub conferences: Counter,
    /// RTP packets received on media ports.
    pub rtp_in: Counter,
    /// RTP packets sent on (relayed or generated).
    pub rtp_relayed: Counter,
    /// Datagrams on media ports that are not RTP (dropped).
    pub rtp_malformed: Counter,
    /// RTP from a source other than the latched one (dropped).
    pub rtp_foreign: Counter,
    /// RTP with nowhere to go: no peer yet, unmapped payload type, on hold (dropped).
    pub rtp_unrouted: Counter,
    /// RTP dropped because the shard's send queue was full.
    pub rtp_tx_overflow: Counter,
    /// RTCP packets received.
    pub rtcp_in: Counter,
    /// RTCP reports of our own sent (to legs hearing a transcoded stream
    /// or a clip).
    pub rtcp_sent: Counter,
    /// Calls refused because the shard had no free RTP port pair.
    pub media_ports_exhausted: Counter,
    /// Legs ended for RTP inactivity.
    pub media_timeouts: Counter,
    /// Media legs open now (gauge).
    pub media_legs: Counter,
    /// DTMF digits detected (RFC 4733 and in-band).
    pub dtmf_digits: Counter,
}

impl Default for ShardCounters {
    fn default() -> Self {
        ShardCounters {
            requests_in: Default::default(),
            requests_out: Default::default(),
            responses_in: Box::new(std::array::from_fn(|_| Counter::default())),
            responses_out: Box::new(std::array::from_fn(|_| Counter::default())),
            parse_errors: Default::default(),
            stray_responses: Counter::default(),
            stray_acks: Counter::default(),
            transactions_created: Counter::default(),
            transactions_timed_out: Counter::default(),
            forwarded_out: Counter::default(),
            forwarded_in: Counter::default(),
            registrations: Counter::default(),
            auth_challenges: Counter::default(),
            auth_failures: Counter::default(),
            bindings: Counter::default(),
            datagrams_truncated: Counter::default(),
            tcp_accepted: Counter::default(),
            tcp_closed_bad_framing: Counter::default(),
            tcp_closed_slow: Counter::default(),
            refused_destinations: Counter::default(),
            calls_started: Counter::default(),
            calls_answered: Counter::default(),
            calls_unanswered: Counter::default(),
            calls_completed: Counter::default(),
            calls_active: Counter::default(),
            transfers: Counter::default(),
            transfers_failed: Counter::default(),
            conferences: Counter::default(),
            rtp_in: Counter::default(),
            rtp_relayed: Counter::default(),
            rtp_malformed: Counter::default(),
            rtp_foreign: Counter::default(),
            rtp_unrouted: Counter::default(),
            rtp_tx_overflow: Counter::default(),
            rtcp_in: Counter::default(),
            rtcp_sent: Counter::default(),
            media_ports_exhausted: Counter::default(),
            media_timeouts: Counter::default(),
            media_legs: Counter::default(),
            dtmf_digits: Counter::default(),
        }
    }
}

impl ShardCounters {
    pub fn response_in(&self, status: u16) {
        if let Some(c) = status
            .checked_sub(100)
            .and_then(|i| self.responses_in.get(usize::from(i)))
        {
            c.bump();
        }
    }

    pub fn response_out(&self, status: u16) {
        if let Some(c) = status
            .checked_sub(100)
            .and_then(|i| self.responses_out.get(usize::from(i)))
        {
            c.bump();
        }
    }
}

/// The sum over all shards, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub requests_in: Vec<(&'static str, u64)>,
    pub requests_out: Vec<(&'static str, u64)>,
    pub responses_in: Vec<(u16, u64)>,
    pub responses_out: Vec<(u16, u64)>,
    pub parse_errors: Vec<(&'static str, u64)>,
    pub scalars: Vec<(&'static str, u64)>,
}

impl Snapshot {
    /// Sums the shards' counters; zero entries are left out.
    pub fn sum<'a>(shards: impl IntoIterator<Item = &'a ShardCounters>) -> Snapshot {
        let shards: Vec<&ShardCounters> = shards.into_iter().collect();
        let total = |f: &dyn Fn(&ShardCounters) -> u64| shards.iter().map(|s| f(s)).sum::<u64>();
        let mut s = Snapshot::default();
        for (i, name) in Method::COUNTER_NAMES.iter().enumerate() {
            let n = total(&|c| c.requests_in[i].get());
            if n > 0 {
                s.requests_in.push((name, n));
            }
            let n = total(&|c| c.requests_out[i].get());
            if n > 0 {
                s.requests_out.push((name, n));
            }
        }
        for i in 0..STATUSES {
            // invariant: i < 600, so i + 100 fits u16.
            let code = i as u16 + 100;
            let n = total(&|c| c.responses_in[i].get());
            if n > 0 {
                s.responses_in.push((code, n));
            }
            let n = total(&|c| c.responses_out[i].get());
            if n > 0 {
                s.responses_out.push((code, n));
            }
        }
        for k in ParseErrorKind::ALL {
            let n = total(&|c| c.parse_errors[k.index()].get());
            if n > 0 {
                s.parse_errors.push((k.name(), n));
            }
        }
        let scalars: [(&'static str, Reader); 36] = [
            ("stray_responses", |c| c.stray_responses.get()),
            ("stray_acks", |c| c.stray_acks.get()),
            ("transactions_created", |c| c.transactions_created.get()),
            ("transactions_timed_out", |c| c.transactions_timed_out.get()),
            ("forwarded_out", |c| c.forwarded_out.get()),
            ("forwarded_in", |c| c.forwarded_in.get()),
            ("registrations", |c| c.registrations.get()),
            ("auth_challenges", |c| c.auth_challenges.get()),
            ("auth_failures", |c| c.auth_failures.get()),
            ("bindings", |c| c.bindings.get()),
            ("datagrams_truncated", |c| c.datagrams_truncated.get()),
            ("tcp_accepted", |c| c.tcp_accepted.get()),
            ("tcp_closed_bad_framing", |c| c.tcp_closed_bad_framing.get()),
            ("tcp_closed_slow", |c| c.tcp_closed_slow.get()),
            ("refused_destinations", |c| c.refused_destinations.get()),
            ("calls_started", |c| c.calls_started.get()),
            ("calls_answered", |c| c.calls_answered.get()),
            ("calls_unanswered", |c| c.calls_unanswered.get()),
            ("calls_completed", |c| c.calls_completed.get()),
            ("calls_active", |c| c.calls_active.get()),
            ("transfers", |c| c.transfers.get()),
            ("transfers_failed", |c| c.transfers_failed.get()),
            ("conferences", |c| c.conferences.get()),
            ("rtp_in", |c| c.rtp_in.get()),
            ("rtp_relayed", |c| c.rtp_relayed.get()),
            ("rtp_malformed", |c| c.rtp_malformed.get()),
            ("rtp_foreign", |c| c.rtp_foreign.get()),
            ("rtp_unrouted", |c| c.rtp_unrouted.get()),
            ("rtp_tx_overflow", |c| c.rtp_tx_overflow.get()),
            ("rtcp_in", |c| c.rtcp_in.get()),
            ("rtcp_sent", |c| c.rtcp_sent.get()),
            ("media_ports_exhausted", |c| c.media_ports_exhausted.get()),
            ("media_timeouts", |c| c.media_timeouts.get()),
            ("media_legs", |c| c.media_legs.get()),
            ("dtmf_digits", |c| c.dtmf_digits.get()),
            ("parse_errors_total", |c| {
                c.parse_errors.iter().map(Counter::get).sum()
            }),
        ];
        for (name, f) in scalars {
            s.scalars.push((name, total(&|c| f(c))));
        }
        s
    }

    /// A scalar by name (0 when unknown).
    pub fn scalar(&self, name: &str) -> u64 {
        self.scalars
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

impl fmt::Display for Snapshot {
    /// One line per group, `name=value` pairs: easy to grep in the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn line<K: fmt::Display>(
            f: &mut fmt::Formatter<'_>,
            title: &str,
            items: &[(K, u64)],
        ) -> fmt::Result {
            write!(f, "{title}:")?;
            if items.is_empty() {
                write!(f, " none")?;
            }
            for (k, v) in items {
                write!(f, " {k}={v}")?;
            }
            writeln!(f)
        }
        line(f, "requests in", &self.requests_in)?;
        line(f, "requests out", &self.requests_out)?;
        line(f, "responses in", &self.responses_in)?;
        line(f, "responses out", &self.responses_out)?;
        line(f, "parse errors", &self.parse_errors)?;
        line(f, "totals", &self.scalars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_summed_on_read() {
        let a = ShardCounters::default();
        let b = ShardCounters::default();
        a.requests_in[Method::Options.counter_index()].bump();
        b.requests_in[Method::Options.counter_index()].add(2);
        a.response_out(200);
        b.response_out(200);
        b.response_out(999); // out of range: ignored, no panic
        b.parse_errors[ParseErrorKind::NotSip.index()].bump();
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.requests_in, vec![("OPTIONS", 3)]);
        assert_eq!(s.responses_out, vec![(200, 2)]);
        assert_eq!(s.parse_errors, vec![("not_sip", 1)]);
        assert_eq!(s.scalar("parse_errors_total"), 1);
        let text = s.to_string();
        assert!(text.contains("requests in: OPTIONS=3"));
    }
}
