//! The issue's load check, peer: SIPp 3.6 (tests/sipp/options.xml over UDP):
//! the appliance (default driver "auto", one shard per core) answers an
//! OPTIONS burst of 2,000 per second for 10 s with nothing lost — SIPp
//! exits 0 with 20,000 successful calls and none failed, and the counters
//! printed at SIGTERM show every request answered 200.
//!
//! Runs alone (`make test` runs it after everything else) so no other test
//! loads the box; it asserts on outcomes only, never on timings.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Appliance, Driver, Options, Sipp, require_tool};

const RATE: u32 = 2_000;
const CALLS: u32 = 20_000;

#[test]
fn options_burst_2000_per_second_for_10_s() {
    require_tool("sipp");
    let mut a = Appliance::start(Options::new(Driver::Auto).all_cores());
    let run = Sipp::new("options.xml", a.udp_addr(), "u1")
        .calls(CALLS)
        .args(&["-r", &RATE.to_string(), "-rp", "1000"])
        // Generous: the burst itself lasts 10 s.
        .timeout_s(120)
        .run();
    let retrans = run.stats.get("Retransmissions(C)").cloned();
    run.assert_all_succeeded(
        u64::from(CALLS),
        &format!(
            "OPTIONS burst {RATE}/s x {CALLS} (SIPp retransmissions: {retrans:?})\n{}",
            a.stderr_tail()
        ),
    );
    a.assert_alive();
    let s = a.stop();
    let options_in = s.counters.get("requests in", "OPTIONS");
    let ok_out = s.counters.get("responses out", "200");
    assert!(
        options_in >= u64::from(CALLS),
        "requests in: OPTIONS={options_in}, expected at least {CALLS}\n{}",
        s.tail()
    );
    assert!(
        ok_out >= u64::from(CALLS),
        "responses out: 200={ok_out}, expected at least {CALLS}\n{}",
        s.tail()
    );
    // Retransmissions count as requests in but are absorbed by their
    // transaction: every transaction (all OPTIONS here) answered 200 once.
    assert_eq!(
        ok_out,
        s.counters.total("transactions_created"),
        "every OPTIONS transaction answered 200 exactly once\n{}",
        s.tail()
    );
    println!(
        "burst: {CALLS} OPTIONS at {RATE}/s: SIPp successful={} failed={} retransmissions={:?}; \
         appliance OPTIONS in={options_in} 200 out={ok_out}",
        run.stat("SuccessfulCall(C)"),
        run.stat("FailedCall(C)"),
        retrans
    );
}
