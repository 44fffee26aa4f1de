//! The counters in the Prometheus text exposition format (version 0.0.4),
//! for `GET /metrics`.
//!
//! Every metric is prefixed `switchboard_`. Labelled families: SIP requests
//! by method and responses by status, each received and sent, and parse
//! errors by reason. Each scalar counter becomes `switchboard_NAME_total`;
//! the gauges (bindings, active calls, open media legs) keep their name.

use std::fmt::Write;

use super::Snapshot;
use crate::acd::AgentState;
use crate::acd::stats::{QueueStats, Stats};

/// Scalars that go up and down.
const GAUGES: [&str; 3] = ["bindings", "calls_active", "media_legs"];

/// Appends `snapshot` to `out` in the Prometheus text format.
pub fn render(snapshot: &Snapshot, out: &mut String) {
    family(
        out,
        "sip_requests_received_total",
        "SIP requests received, by method.",
        "method",
        &snapshot.requests_in,
    );
    family(
        out,
        "sip_requests_sent_total",
        "SIP requests sent (relayed or our own), by method.",
        "method",
        &snapshot.requests_out,
    );
    family(
        out,
        "sip_responses_received_total",
        "SIP responses received, by status.",
        "status",
        &snapshot.responses_in,
    );
    family(
        out,
        "sip_responses_sent_total",
        "SIP responses sent, by status.",
        "status",
        &snapshot.responses_out,
    );
    family(
        out,
        "sip_parse_errors_total",
        "Messages refused by the parser, by reason.",
        "reason",
        &snapshot.parse_errors,
    );
    for (name, value) in &snapshot.scalars {
        if *name == "parse_errors_total" {
            continue; // the family above, summed
        }
        let gauge = GAUGES.contains(name);
        let (metric, kind) = if gauge {
            (format!("switchboard_{name}"), "gauge")
        } else {
            (format!("switchboard_{name}_total"), "counter")
        };
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        let _ = writeln!(out, "{metric} {value}");
    }
}

/// Appends the ACD's figures: per queue (today's counters, reset at
/// midnight like any restarted counter) and agents per state.
pub fn render_acd(stats: &Stats, out: &mut String) {
    type Field = fn(&QueueStats) -> f64;
    let queue_metrics: [(&str, &str, &str, Field); 11] = [
        (
            "queue_waiting",
            "gauge",
            "Callers waiting now (ringing and parked callbacks included).",
            |q| q.waiting as f64,
        ),
        (
            "queue_longest_wait_seconds",
            "gauge",
            "The longest current wait.",
            |q| q.longest_wait.as_secs_f64(),
        ),
        (
            "queue_offered_total",
            "counter",
            "Callers offered to the queue today.",
            |q| q.today.offered as f64,
        ),
        (
            "queue_answered_total",
            "counter",
            "Callers answered by an agent today.",
            |q| q.today.answered as f64,
        ),
        (
            "queue_abandoned_total",
            "counter",
            "Callers who hung up before an agent answered, today.",
            |q| q.today.abandoned as f64,
        ),
        (
            "queue_overflowed_total",
            "counter",
            "Callers sent on by overflow, maximum wait or length, or the empty rules, today.",
            |q| q.today.overflowed as f64,
        ),
        (
            "queue_answered_in_service_level_total",
            "counter",
            "Callers answered within the queue's service level today.",
            |q| q.today.in_service_level as f64,
        ),
        (
            "queue_callbacks_total",
            "counter",
            "Callbacks asked for today.",
            |q| q.today.callbacks as f64,
        ),
        (
            "queue_asa_seconds",
            "gauge",
            "Average speed of answer today.",
            |q| q.today.asa().as_secs_f64(),
        ),
        (
            "queue_aht_seconds",
            "gauge",
            "Average handle time (talk and wrap-up) today.",
            |q| q.today.aht().as_secs_f64(),
        ),
        (
            "queue_answered_last_interval",
            "gauge",
            "Callers answered in the last closed 15-minute interval.",
            |q| q.last_interval.answered as f64,
        ),
    ];
    for (name, kind, help, field) in queue_metrics {
        let _ = writeln!(out, "# HELP switchboard_{name} {help}");
        let _ = writeln!(out, "# TYPE switchboard_{name} {kind}");
        for q in &stats.queues {
            let _ = writeln!(
                out,
                "switchboard_{name}{{queue=\"{}\"}} {}",
                q.name,
                field(q)
            );
        }
    }
    let _ = writeln!(out, "# HELP switchboard_agents Agents per state.");
    let _ = writeln!(out, "# TYPE switchboard_agents gauge");
    for state in AgentState::ALL {
        let n = stats.agents.iter().filter(|a| a.state == state).count();
        let _ = writeln!(out, "switchboard_agents{{state=\"{}\"}} {n}", state.name());
    }
}

/// Appends one scalar `switchboard_{name}` of `kind` (`counter` or
/// `gauge`) with its help line.
pub fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP switchboard_{name} {help}");
    let _ = writeln!(out, "# TYPE switchboard_{name} {kind}");
    let _ = writeln!(out, "switchboard_{name} {value}");
}

/// Appends a counter family `switchboard_{name}{label="k"}`, one line per
/// item.
pub fn family<K: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    items: &[(K, u64)],
) {
    let _ = writeln!(out, "# HELP switchboard_{name} {help}");
    let _ = writeln!(out, "# TYPE switchboard_{name} counter");
    for (k, v) in items {
        let _ = writeln!(out, "switchboard_{name}{{{label}=\"{k}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;
    use crate::stats::ShardCounters;

    #[test]
    fn queues_and_agents_per_state_are_exposed() {
        use crate::acd::stats::{AgentStats, QueueCounters};
        use std::time::Duration;
        let today = QueueCounters {
            offered: 7,
            answered: 5,
            abandoned: 1,
            answered_wait: Duration::from_secs(10),
            ..QueueCounters::default()
        };
        let agent = |id: &str, state| AgentStats {
            id: id.into(),
            state,
            reason: None,
            for_: Duration::ZERO,
            today: Default::default(),
        };
        let stats = Stats {
            queues: vec![QueueStats {
                name: "support".into(),
                waiting: 1,
                longest_wait: Duration::from_secs(4),
                today,
                interval: QueueCounters::default(),
                last_interval: QueueCounters::default(),
            }],
            agents: vec![
                agent("1001", AgentState::Ready),
                agent("1002", AgentState::Ready),
                agent("1003", AgentState::OnCall),
            ],
        };
        let mut text = String::new();
        render_acd(&stats, &mut text);
        assert_lines(
            &text,
            &[
                "switchboard_queue_waiting{queue=\"support\"} 1",
                "switchboard_queue_longest_wait_seconds{queue=\"support\"} 4",
                "switchboard_queue_offered_total{queue=\"support\"} 7",
                "switchboard_queue_answered_total{queue=\"support\"} 5",
                "switchboard_queue_asa_seconds{queue=\"support\"} 2",
                "# TYPE switchboard_queue_offered_total counter",
                "switchboard_agents{state=\"ready\"} 2",
                "switchboard_agents{state=\"on_call\"} 1",
                "switchboard_agents{state=\"logged_out\"} 0",
            ],
        );
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn counters_of_all_shards_are_exposed_summed_with_types() {
        let a = ShardCounters::default();
        let b = ShardCounters::default();
        let options = Method::COUNTER_NAMES
            .iter()
            .position(|m| *m == "OPTIONS")
            .expect("OPTIONS is counted");
        a.requests_in[options].bump();
        b.requests_in[options].bump();
        b.response_out(200);
        a.calls_active.set(3);
        a.calls_started.add(5);
        let mut text = String::new();
        render(&Snapshot::sum([&a, &b]), &mut text);
        assert_lines(
            &text,
            &[
                "# TYPE switchboard_sip_requests_received_total counter",
                "switchboard_sip_requests_received_total{method=\"OPTIONS\"} 2",
                "switchboard_sip_responses_sent_total{status=\"200\"} 1",
                "# TYPE switchboard_calls_active gauge",
                "switchboard_calls_active 3",
                "# TYPE switchboard_calls_started_total counter",
                "switchboard_calls_started_total 5",
                "switchboard_rtp_in_total 0",
            ],
        );
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').expect("name and value");
            assert!(name.starts_with("switchboard_"), "{l}");
            value.parse::<u64>().expect("an integer value");
        }
    }
}
