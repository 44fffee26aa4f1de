//! The counters in the Prometheus text exposition format (version 0.0.4),
//! for `GET /metrics`.
//!
//! Every metric is prefixed `switchboard_`. Labelled families: SIP requests
//! by method and responses by status, each received and sent, and parse
//! errors by reason. Each scalar counter becomes `switchboard_NAME_total`;
//! the gauges (bindings, active calls, open media legs) keep their name.

use std::fmt::Write;

use super::Snapshot;

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

fn family<K: std::fmt::Display>(
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
        for line in [
            "# TYPE switchboard_sip_requests_received_total counter",
            "switchboard_sip_requests_received_total{method=\"OPTIONS\"} 2",
            "switchboard_sip_responses_sent_total{status=\"200\"} 1",
            "# TYPE switchboard_calls_active gauge",
            "switchboard_calls_active 3",
            "# TYPE switchboard_calls_started_total counter",
            "switchboard_calls_started_total 5",
            "switchboard_rtp_in_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').expect("name and value");
            assert!(name.starts_with("switchboard_"), "{l}");
            value.parse::<u64>().expect("an integer value");
        }
    }
}
