//! SIPp phones and callers around a running appliance: a phone registers
//! (digest auth) and then runs a UAS scenario; a caller runs a UAC
//! scenario against the appliance; `finish` waits for all of them.

use std::time::{Duration, Instant};

use super::{Appliance, Options, PortBlock, Sipp, SippProc, SippRun, require_tool, reserve_ports};

pub const SIPP_ALGORITHMS: &str = r#"registrar.digest_algorithms=["MD5","SHA-256"]"#;

/// SIPp aborts a call on a message its scenario does not expect, instead of
/// carrying on until its global timeout (the harness passes `-nd`, which
/// turns every default behaviour off; this turns that one back on).
pub const ABORT_UNEXPECTED: &[&str] = &["-default_behaviors", "abortunexp"];

/// An appliance whose registrar offers MD5 first (SIPp answers only MD5).
pub fn appliance(opts: Options) -> Appliance {
    require_tool("sipp");
    Appliance::start(opts.set(SIPP_ALGORITHMS))
}

/// A phone: a SIPp server scenario registered as `user` from its own port,
/// answering in the background.
pub struct Phone {
    pub user: String,
    pub proc: SippProc,
    _port: PortBlock,
}

impl Phone {
    /// REGISTERs `user` (password `pw<user>`) from a fresh port, then starts
    /// `scenario` listening on that same port and waits until it listens.
    pub fn start(a: &Appliance, user: &str, scenario: &str, extra: &[&str]) -> Phone {
        let port = reserve_ports(1);
        let password = format!("pw{user}");
        let reg = Sipp::new("register_ok.xml", a.udp_addr(), "u1")
            .local_port(port.port(0))
            .args(&["-s", user, "-au", user, "-ap", &password])
            .run();
        reg.assert_all_succeeded(
            1,
            &format!(
                "REGISTER {user} from port {}\n{}",
                port.port(0),
                a.stderr_tail()
            ),
        );
        let mut proc = Sipp::new(scenario, a.udp_addr(), "u1")
            .local_port(port.port(0))
            .trace_messages()
            .args(&["-s", user])
            .args(ABORT_UNEXPECTED)
            .args(extra)
            .spawn();
        proc.wait_listening();
        Phone {
            user: user.to_string(),
            proc,
            _port: port,
        }
    }

    pub fn port(&self) -> u16 {
        self.proc.sip_port
    }
}

/// How long the SIPp runs of one call may take in all (SIPp's own
/// `-timeout` is 60 s): a hang guard, not a measurement.
pub const CALL_DEADLINE: Duration = Duration::from_secs(90);

/// The caller, user 1001, calling `callee` through the appliance.
pub fn call(a: &Appliance, scenario: &str, callee: &str, transport: &'static str) -> SippProc {
    let target = if transport == "t1" {
        a.tcp_addr()
    } else {
        a.udp_addr()
    };
    Sipp::new(scenario, target, transport)
        .trace_messages()
        .args(&["-s", callee])
        .args(ABORT_UNEXPECTED)
        .spawn()
}

/// Waits for the caller and the phones to finish their call; the first to
/// fail stops the others (see [`SippProc::wait_all`]). Returns the
/// caller's run, then the phones' in the order given.
pub fn finish(caller: SippProc, phones: Vec<Phone>) -> (SippRun, Vec<SippRun>) {
    let mut procs = vec![caller];
    procs.extend(phones.into_iter().map(|p| p.proc));
    let mut runs = SippProc::wait_all(procs, Instant::now() + CALL_DEADLINE).into_iter();
    let caller = runs.next().expect("the caller's run");
    (caller, runs.collect())
}

/// SIPp's verdict on a one-call run: exit 0, one successful call, none
/// failed.
pub fn succeeded(r: &SippRun) -> bool {
    r.status.code() == Some(0)
        && r.stats.get("SuccessfulCall(C)").map(|v| v.trim()) == Some("1")
        && r.stats.get("FailedCall(C)").map(|v| v.trim()) == Some("0")
}

/// Every SIPp run succeeded; on failure the message shows every run's
/// report and trace and the appliance's log.
pub fn assert_runs_succeeded(a: &Appliance, runs: &[(&str, &SippRun)]) {
    if !runs.iter().all(|(_, r)| succeeded(r)) {
        let mut msg = String::from("a SIPp run failed\n");
        for (name, r) in runs {
            msg.push_str(&format!(
                "===== {name} =====\n{}\n{}\n",
                r.report(),
                r.trace()
            ));
        }
        panic!("{msg}{}", a.stderr_tail());
    }
}
