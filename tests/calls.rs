//! Calls through the B2BUA, with SIPp 3.6 (Debian `sip-tester`) as the
//! phones: every callee is a SIPp server scenario that first REGISTERs as
//! its user (tests/sipp/register_ok.xml) from the port it then answers on,
//! and runs in the background; the caller (user 1001, no authentication on
//! INVITE) is a SIPp client scenario in the foreground. All over UDP on
//! 127.0.0.1, the basic call also with the caller over TCP.
//!
//! Each test asserts that every SIPp run succeeded (exit 0, one successful
//! call, none failed; SIPp aborts a call on any message its scenario does
//! not expect), then what the message traces show about the two legs (new
//! Call-ID and From tag on the B leg, Request-URI = the registered Contact,
//! Max-Forwards decremented, SDP passed through unchanged, ...), then the
//! counters the appliance prints when it stops.
//!
//! `scenarios_back_to_back` checks the scenario files themselves, each
//! caller against its callee directly, without the appliance (the REFER
//! pieces against stand-ins, tests/sipp/call_stub_*.xml).

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::phones::{
    ABORT_UNEXPECTED, CALL_DEADLINE, Phone, appliance, assert_runs_succeeded, call, finish,
    succeeded,
};
use common::{
    Appliance, Counters, Driver, HANG, Options, PortBlock, SipMsg, Sipp, SippProc, SippRun,
    Stopped, require_tool, reserve_ports,
};

/// SIPp only answers a first challenge in MD5 (see firmware-config/README.md).
/// The caller's SDP offer and each callee's SDP carry these session names,
/// so the traces show whose SDP arrived where.
const CALLER_SDP: &str = "s=switchboard-test-caller";

fn body(m: &SipMsg) -> String {
    m.body_text()
}

/// The final response the caller got to its INVITE.
fn final_status(caller: &SippRun) -> u16 {
    caller
        .received_responses("INVITE")
        .iter()
        .filter_map(|m| m.status())
        .rfind(|s| *s >= 200)
        .unwrap_or_else(|| panic!("no final response to the INVITE\n{}", caller.trace()))
}

/// What the appliance sends the callee (spec 1): a new INVITE with a new
/// Call-ID and From tag, To the user at the domain, Request-URI = the
/// registered Contact, its own Contact, Max-Forwards one less, the caller's
/// SDP unchanged; and the caller gets `100 Trying` first.
fn assert_b_leg_invite(
    a: &Appliance,
    caller: &SippRun,
    callee: &SippRun,
    phone_port: u16,
    user: &str,
) {
    let a_inv = caller.sent_request("INVITE");
    let b_inv = callee.received_request("INVITE");
    let ctx = format!(
        "A leg:\n{}\nB leg:\n{}",
        String::from_utf8_lossy(&a_inv.raw),
        String::from_utf8_lossy(&b_inv.raw)
    );
    assert_ne!(
        a_inv.call_id(),
        b_inv.call_id(),
        "new Call-ID on the B leg\n{ctx}"
    );
    assert!(b_inv.call_id().is_some(), "{ctx}");
    assert_ne!(
        a_inv.tag_of("From"),
        b_inv.tag_of("From"),
        "new From tag on the B leg\n{ctx}"
    );
    assert!(
        b_inv.tag_of("From").is_some(),
        "B leg From has a tag\n{ctx}"
    );
    let to = b_inv.header("To").unwrap_or_default();
    assert!(
        to.contains(&format!("sip:{user}@switchboard.local")) && b_inv.tag_of("To").is_none(),
        "B leg To: <sip:{user}@switchboard.local>, no tag\n{ctx}"
    );
    let want_uri = format!("sip:{user}@127.0.0.1:{phone_port};transport=UDP");
    assert!(
        b_inv
            .request_uri()
            .is_some_and(|u| u.eq_ignore_ascii_case(&want_uri)),
        "B leg Request-URI = the registered Contact {want_uri}\n{ctx}"
    );
    assert_eq!(
        b_inv.header("Max-Forwards"),
        Some("69"),
        "Max-Forwards decremented (the caller sent 70)\n{ctx}"
    );
    let contact = b_inv.header("Contact").unwrap_or_default();
    assert!(
        contact.contains(&format!("127.0.0.1:{}", a.port)),
        "B leg Contact is the appliance (127.0.0.1:{})\n{ctx}",
        a.port
    );
    assert!(body(a_inv).contains(CALLER_SDP), "{ctx}");
    assert_anchored(a, &body(b_inv), &body(a_inv), &ctx);
    let first = caller.received_responses("INVITE");
    assert_eq!(
        first.first().and_then(|m| m.status()),
        Some(100),
        "the appliance answers 100 Trying first\n{}",
        caller.trace()
    );
}

/// The callee's SDP answer reached the caller in the 200, anchored.
fn assert_answer_relayed(a: &Appliance, caller: &SippRun, callee: &SippRun) {
    let sent = callee
        .sent_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap_or_else(|| panic!("the callee sent no 200\n{}", callee.trace()));
    let got = caller
        .received_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap_or_else(|| panic!("the caller got no 200\n{}", caller.trace()));
    assert!(
        body(sent).contains("s=switchboard-test-"),
        "{}",
        callee.trace()
    );
    let ctx = format!(
        "caller got:\n{}\ncallee sent:\n{}",
        String::from_utf8_lossy(&got.raw),
        String::from_utf8_lossy(&sent.raw)
    );
    assert_anchored(a, &body(got), &body(sent), &ctx);
}

/// `m=audio` port and formats, and the `c=` address, of an SDP body.
fn audio_of(sdp: &str) -> (u16, String, String) {
    let m = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap_or_default();
    let (port, rest) = m.split_once(' ').unwrap_or_default();
    let formats = rest.split_once(' ').map(|(_, f)| f).unwrap_or_default();
    let c = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_default();
    (
        port.parse().unwrap_or(0),
        formats.trim().to_owned(),
        c.trim().to_owned(),
    )
}

/// `sent` is `orig` anchored at the appliance: its address, a port of its
/// `media.rtp_ports`, the original's first codec first.
fn assert_anchored(a: &Appliance, sent: &str, orig: &str, ctx: &str) {
    let (port, formats, ip) = audio_of(sent);
    let (orig_port, orig_formats, _) = audio_of(orig);
    assert!(
        (a.rtp_ports.0..=a.rtp_ports.1).contains(&port) && port != orig_port,
        "media anchored at one of the appliance's ports {:?}, not {orig_port}\n{ctx}",
        a.rtp_ports
    );
    assert_eq!(ip, "127.0.0.1", "the appliance's address\n{ctx}");
    assert_eq!(
        formats.split(' ').next(),
        orig_formats.split(' ').next(),
        "the same codec first\n{ctx}"
    );
}

/// Counters every call test expects: nothing malformed, no transaction left
/// to time out.
fn assert_clean(s: &Stopped) {
    let c = &s.counters;
    assert_eq!(c.total("parse_errors_total"), 0, "{}", s.tail());
    assert_eq!(
        c.total("transactions_timed_out"),
        0,
        "every transaction completed\n{}",
        s.tail()
    );
}

/// The call counters: calls taken, answered (and then completed), not
/// answered; none left active.
fn assert_calls(s: &Stopped, started: u64, answered: u64, unanswered: u64) {
    let c = &s.counters;
    exactly(c, "totals", "calls_started", started, s);
    exactly(c, "totals", "calls_answered", answered, s);
    exactly(c, "totals", "calls_completed", answered, s);
    exactly(c, "totals", "calls_unanswered", unanswered, s);
    exactly(c, "totals", "calls_active", 0, s);
}

fn at_least(c: &Counters, group: &str, name: &str, n: u64, s: &Stopped) {
    let v = c.get(group, name);
    assert!(
        v >= n,
        "{group}: {name}={v}, expected at least {n}\n{}",
        s.tail()
    );
}

fn exactly(c: &Counters, group: &str, name: &str, n: u64, s: &Stopped) {
    assert_eq!(c.get(group, name), n, "{group}: {name}\n{}", s.tail());
}

// ---------------------------------------------------------------------------
// 2. Basic call
// ---------------------------------------------------------------------------

/// INVITE → 100, 180, 200 (SDP both ways unchanged), ACK reaches the callee,
/// the caller's BYE reaches the callee, both answered 200.
fn basic_call(opts: Options, caller_transport: &'static str) {
    let mut a = appliance(opts);
    let callee = Phone::start(&a, "1002", "call_uas_answer.xml", &[]);
    let port = callee.port();
    let (caller, mut phones) = finish(
        call(&a, "call_uac_basic.xml", "1002", caller_transport),
        vec![callee],
    );
    let callee = phones.remove(0);
    assert_runs_succeeded(&a, &[("caller", &caller), ("callee 1002", &callee)]);

    assert_b_leg_invite(&a, &caller, &callee, port, "1002");
    assert_answer_relayed(&a, &caller, &callee);
    assert!(
        caller
            .received_responses("INVITE")
            .iter()
            .any(|m| m.status() == Some(180)),
        "the callee's 180 reached the caller\n{}",
        caller.trace()
    );
    let b_call_id = callee.received_request("INVITE").call_id();
    for method in ["ACK", "BYE"] {
        assert_eq!(
            callee.received_request(method).call_id(),
            b_call_id,
            "{method} in the B-leg dialog\n{}",
            callee.trace()
        );
    }

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 1, 0);
    exactly(c, "totals", "stray_acks", 0, &s);
    at_least(c, "requests in", "INVITE", 1, &s);
    at_least(c, "requests in", "ACK", 1, &s);
    at_least(c, "requests in", "BYE", 1, &s);
    at_least(c, "requests out", "INVITE", 1, &s);
    at_least(c, "requests out", "ACK", 1, &s);
    at_least(c, "requests out", "BYE", 1, &s);
    at_least(c, "responses in", "180", 1, &s);
    at_least(c, "responses in", "200", 2, &s); // INVITE and BYE
    at_least(c, "responses out", "100", 1, &s);
    exactly(c, "responses out", "180", 1, &s);
    if caller_transport == "t1" {
        // The harness's readiness probe, and SIPp.
        at_least(c, "totals", "tcp_accepted", 2, &s);
    }
}

#[test]
fn call_basic_io_uring() {
    basic_call(Options::new(Driver::IoUring), "u1");
}

#[test]
fn call_basic_epoll() {
    basic_call(Options::new(Driver::Epoll), "u1");
}

/// The caller over TCP (the callee over UDP), one shard per CPU.
#[test]
fn call_basic_caller_over_tcp() {
    basic_call(Options::new(Driver::Auto).all_cores(), "t1");
}

// ---------------------------------------------------------------------------
// 3. Callee hangs up
// ---------------------------------------------------------------------------

#[test]
fn call_callee_bye() {
    let mut a = appliance(Options::new(Driver::Auto));
    let callee = Phone::start(&a, "1002", "call_uas_callee_bye.xml", &[]);
    let port = callee.port();
    let (caller, mut phones) = finish(
        call(&a, "call_uac_callee_bye.xml", "1002", "u1"),
        vec![callee],
    );
    let callee = phones.remove(0);
    assert_runs_succeeded(&a, &[("caller", &caller), ("callee 1002", &callee)]);

    assert_b_leg_invite(&a, &caller, &callee, port, "1002");
    assert_answer_relayed(&a, &caller, &callee);
    // The BYE the caller got belongs to its dialog: its Call-ID, the
    // appliance's tag as From, the caller's tag as To.
    let invite = caller.sent_request("INVITE");
    let ok = caller
        .received_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("200");
    let bye = caller.received_request("BYE");
    let ctx = String::from_utf8_lossy(&bye.raw).into_owned();
    assert_eq!(bye.call_id(), invite.call_id(), "{ctx}");
    assert_eq!(bye.tag_of("From"), ok.tag_of("To"), "{ctx}");
    assert_eq!(bye.tag_of("To"), invite.tag_of("From"), "{ctx}");

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 1, 0);
    at_least(c, "requests in", "BYE", 1, &s);
    at_least(c, "requests out", "BYE", 1, &s);
}

// ---------------------------------------------------------------------------
// 4. Caller cancels while ringing
// ---------------------------------------------------------------------------

#[test]
fn call_cancel() {
    let mut a = appliance(Options::new(Driver::Auto));
    let callee = Phone::start(&a, "1002", "call_uas_ring_cancel.xml", &[]);
    let port = callee.port();
    let (caller, mut phones) = finish(call(&a, "call_uac_cancel.xml", "1002", "u1"), vec![callee]);
    let callee = phones.remove(0);
    assert_runs_succeeded(&a, &[("caller", &caller), ("callee 1002", &callee)]);

    assert_b_leg_invite(&a, &caller, &callee, port, "1002");
    assert!(
        caller
            .received_responses("CANCEL")
            .iter()
            .any(|m| m.status() == Some(200)),
        "the CANCEL was answered 200\n{}",
        caller.trace()
    );
    assert_eq!(final_status(&caller), 487, "{}", caller.trace());
    assert_eq!(
        callee.received_request("CANCEL").call_id(),
        callee.received_request("INVITE").call_id(),
        "{}",
        callee.trace()
    );

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 0, 1);
    at_least(c, "requests in", "CANCEL", 1, &s);
    at_least(c, "requests out", "CANCEL", 1, &s);
    at_least(c, "responses in", "487", 1, &s);
    exactly(c, "responses out", "487", 1, &s);
    exactly(c, "requests out", "BYE", 0, &s);
}

// ---------------------------------------------------------------------------
// 5. Callee refuses
// ---------------------------------------------------------------------------

/// The callee answers `status`; the caller must get `relayed`.
fn callee_refuses(status: u16, relayed: u16) {
    let mut a = appliance(Options::new(Driver::Auto));
    let code = status.to_string();
    let callee = Phone::start(
        &a,
        "1002",
        "call_uas_reject.xml",
        &["-key", "status", &code],
    );
    let (caller, mut phones) = finish(call(&a, "call_uac_reject.xml", "1002", "u1"), vec![callee]);
    let callee = phones.remove(0);
    assert_runs_succeeded(&a, &[("caller", &caller), ("callee 1002", &callee)]);
    assert_eq!(
        final_status(&caller),
        relayed,
        "the callee answered {status}\n{}",
        caller.trace()
    );

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 0, 1);
    at_least(c, "responses in", &code, 1, &s);
    exactly(c, "responses out", &relayed.to_string(), 1, &s);
    if status != relayed {
        exactly(c, "responses out", &code, 0, &s);
    }
    exactly(c, "requests out", "BYE", 0, &s);
}

#[test]
fn call_busy() {
    callee_refuses(486, 486);
}

#[test]
fn call_busy_decline_603() {
    callee_refuses(603, 603);
}

#[test]
fn call_busy_phone_says_404() {
    callee_refuses(404, 404);
}

/// A B2BUA must not pass a 503 on as it is (RFC 3261 §16.7 spirit: the
/// caller would take it as the appliance being unavailable).
#[test]
fn call_busy_phone_503_becomes_500() {
    callee_refuses(503, 500);
}

// ---------------------------------------------------------------------------
// 6. Unknown number, known but unregistered user
// ---------------------------------------------------------------------------

#[test]
fn call_unknown() {
    let mut a = appliance(Options::new(Driver::Auto));
    let (unknown, _) = finish(call(&a, "call_uac_reject.xml", "999", "u1"), vec![]);
    let (unregistered, _) = finish(call(&a, "call_uac_reject.xml", "1009", "u1"), vec![]);
    assert_runs_succeeded(
        &a,
        &[
            ("caller of 999", &unknown),
            ("caller of 1009", &unregistered),
        ],
    );
    assert_eq!(final_status(&unknown), 404, "{}", unknown.trace());
    assert_eq!(final_status(&unregistered), 480, "{}", unregistered.trace());
    for run in [&unknown, &unregistered] {
        assert_eq!(
            run.received_responses("INVITE")
                .first()
                .and_then(|m| m.status()),
            Some(100),
            "100 Trying first, then the routing answer\n{}",
            run.trace()
        );
    }

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 2, 0, 2);
    at_least(c, "requests in", "INVITE", 2, &s);
    exactly(c, "responses out", "404", 1, &s);
    exactly(c, "responses out", "480", 1, &s);
    exactly(c, "requests out", "INVITE", 0, &s);
}

// ---------------------------------------------------------------------------
// 7. No answer
// ---------------------------------------------------------------------------

/// The callee rings forever; the appliance's no-answer timer (2 s here)
/// cancels it and answers the caller 480. Nothing here measures the 2 s.
#[test]
fn call_no_answer() {
    let mut a = appliance(Options::new(Driver::Auto).set("calls.no_answer_timeout_s=2"));
    let callee = Phone::start(&a, "1002", "call_uas_ring_cancel.xml", &[]);
    let (caller, mut phones) = finish(call(&a, "call_uac_reject.xml", "1002", "u1"), vec![callee]);
    let callee = phones.remove(0);
    assert_runs_succeeded(&a, &[("caller", &caller), ("callee 1002", &callee)]);
    assert_eq!(final_status(&caller), 480, "{}", caller.trace());
    callee.received_request("CANCEL");

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 0, 1);
    at_least(c, "requests out", "CANCEL", 1, &s);
    at_least(c, "responses in", "487", 1, &s);
    exactly(c, "responses out", "480", 1, &s);
    exactly(c, "requests in", "CANCEL", 0, &s);
}

// ---------------------------------------------------------------------------
// 8. Forking to two contacts
// ---------------------------------------------------------------------------

/// 1002 registered twice (two phones, two ports): both ring, one answers at
/// once, the other is cancelled; the caller gets exactly one answer and its
/// BYE reaches only the winner.
#[test]
fn call_fork() {
    let mut a = appliance(Options::new(Driver::Auto).all_cores());
    let winner = Phone::start(&a, "1002", "call_uas_answer.xml", &[]);
    let loser = Phone::start(&a, "1002", "call_uas_ring_cancel.xml", &[]);
    let winner_port = winner.port();
    assert_eq!(winner.user, loser.user);
    let caller = call(&a, "call_uac_basic.xml", "1002", "u1");
    let (caller, mut phones) = finish(caller, vec![winner, loser]);
    let (winner, loser) = (phones.remove(0), phones.remove(0));
    assert_runs_succeeded(
        &a,
        &[
            ("caller", &caller),
            ("answering phone", &winner),
            ("ringing phone", &loser),
        ],
    );
    assert_b_leg_invite(&a, &caller, &winner, winner_port, "1002");
    assert_answer_relayed(&a, &caller, &winner);
    let mut answers: Vec<&str> = caller
        .received_responses("INVITE")
        .into_iter()
        .filter(|m| m.status() == Some(200))
        .filter_map(|m| m.tag_of("To"))
        .collect();
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "one answer (one dialog)\n{}",
        caller.trace()
    );
    loser.received_request("CANCEL");
    assert!(
        loser.received_requests("BYE").is_empty(),
        "no BYE to the cancelled phone\n{}",
        loser.trace()
    );

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 1, 0);
    at_least(c, "requests out", "INVITE", 2, &s);
    at_least(c, "requests out", "CANCEL", 1, &s);
    // Counted per request, not per retransmission: one BYE, to the winner.
    exactly(c, "requests out", "BYE", 1, &s);
    at_least(c, "totals", "registrations", 2, &s);
}

// ---------------------------------------------------------------------------
// 9. REFER blind transfer
// ---------------------------------------------------------------------------

/// 1001 calls 1002, who answers and REFERs it to 1003: 202, NOTIFYs
/// (100 Trying first, 200 OK last with the subscription terminated), 1003
/// INVITEd without SDP and answering with an offer, the caller re-INVITEd
/// with that offer, its answer ACKed to 1003; 1002 hangs up; the caller's
/// BYE reaches 1003.
#[test]
fn call_refer() {
    let mut a = appliance(Options::new(Driver::Auto).all_cores());
    let transferor = Phone::start(&a, "1002", "call_uas_transferor.xml", &[]);
    let target = Phone::start(&a, "1003", "call_uas_late_offer.xml", &[]);
    let transferor_port = transferor.port();
    let caller = call(&a, "call_uac_transferred.xml", "1002", "u1");
    let (caller, mut phones) = finish(caller, vec![transferor, target]);
    let (transferor, target) = (phones.remove(0), phones.remove(0));
    assert_runs_succeeded(
        &a,
        &[
            ("caller 1001", &caller),
            ("transferor 1002", &transferor),
            ("target 1003", &target),
        ],
    );
    assert_b_leg_invite(&a, &caller, &transferor, transferor_port, "1002");
    assert_answer_relayed(&a, &caller, &transferor);

    // The transferor's side: 202, then NOTIFYs in its dialog.
    assert!(
        transferor
            .received_responses("REFER")
            .iter()
            .any(|m| m.status() == Some(202)),
        "{}",
        transferor.trace()
    );
    let notifies = transferor.received_requests("NOTIFY");
    let dialog = transferor.received_request("INVITE").call_id();
    for n in &notifies {
        let ctx = String::from_utf8_lossy(&n.raw).into_owned();
        assert_eq!(n.call_id(), dialog, "NOTIFY in the REFER's dialog\n{ctx}");
        assert!(
            n.header("Event").is_some_and(|e| e.starts_with("refer")),
            "{ctx}"
        );
        assert!(
            n.header("Content-Type").is_some_and(|t| t
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("message/sipfrag"))),
            "{ctx}"
        );
    }
    let first = notifies.first().expect("NOTIFYs (scenario checked)");
    let last = notifies.last().expect("NOTIFYs");
    assert!(
        body(first).starts_with("SIP/2.0 100"),
        "first NOTIFY reports 100 Trying\n{}",
        String::from_utf8_lossy(&first.raw)
    );
    assert!(
        body(last).starts_with("SIP/2.0 200"),
        "last NOTIFY reports 200 OK\n{}",
        String::from_utf8_lossy(&last.raw)
    );
    let state = last.header("Subscription-State").unwrap_or_default();
    assert!(
        state.starts_with("terminated") && state.contains("reason=noresource"),
        "last NOTIFY ends the subscription: Subscription-State: {state}"
    );

    // The target: INVITEd without an offer; its offer goes to the caller in
    // a re-INVITE; the caller's answer comes back in the ACK.
    let t_inv = target.received_request("INVITE");
    assert!(
        t_inv.body.is_empty(),
        "the target's INVITE has no SDP\n{}",
        String::from_utf8_lossy(&t_inv.raw)
    );
    let t_offer = target
        .sent_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("the target answered 200 (scenario checked)");
    let reinvite = caller
        .received_requests("INVITE")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("the caller was not re-INVITEd\n{}", caller.trace()));
    assert_eq!(
        reinvite.call_id(),
        caller.sent_request("INVITE").call_id(),
        "re-INVITE in the caller's dialog"
    );
    assert_anchored(
        &a,
        &body(reinvite),
        &body(t_offer),
        "the target's offer, anchored",
    );
    let first_answer = caller
        .received_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("the caller was answered");
    assert_eq!(
        audio_of(&body(reinvite)).0,
        audio_of(&body(first_answer)).0,
        "the caller keeps sending to the same port of the appliance"
    );
    let c_answer = caller
        .sent_responses("INVITE")
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("the caller answered the re-INVITE (scenario checked)");
    assert_anchored(
        &a,
        &body(target.received_request("ACK")),
        &body(c_answer),
        "the caller's answer reaches the target in the ACK, anchored",
    );
    assert_eq!(
        target.received_request("BYE").call_id(),
        t_inv.call_id(),
        "the caller's BYE reaches the target"
    );
    assert!(
        caller.received_requests("BYE").is_empty(),
        "the transferor's BYE ends only its own leg\n{}",
        caller.trace()
    );

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_clean(&s);
    exactly(c, "totals", "transfers", 1, &s);
    exactly(c, "totals", "transfers_failed", 0, &s);
    exactly(c, "totals", "calls_active", 0, &s);
    at_least(c, "requests in", "REFER", 1, &s);
    exactly(c, "responses out", "202", 1, &s);
    at_least(c, "requests out", "NOTIFY", 2, &s);
    // 1002, 1003, and the re-INVITE of the caller.
    at_least(c, "requests out", "INVITE", 3, &s);
    at_least(c, "totals", "registrations", 2, &s);
}

// ---------------------------------------------------------------------------
// The scenarios themselves, back to back (no appliance)
// ---------------------------------------------------------------------------

/// `uas` listening on its own port and `uac` sending to it directly, both in
/// the background.
struct Pair {
    caller: SippProc,
    callee: SippProc,
    _port: PortBlock,
}

fn pair(
    uas: &str,
    uac: &str,
    transport: &'static str,
    uas_args: &[&str],
    uac_args: &[&str],
) -> Pair {
    let port = reserve_ports(1);
    // A server scenario never sends first: its remote address is unused.
    let unused = std::net::SocketAddr::from((common::LOCALHOST, port.port(0)));
    let mut callee = Sipp::new(uas, unused, transport)
        .local_port(port.port(0))
        .trace_messages()
        .args(&["-s", "1002"])
        .args(ABORT_UNEXPECTED)
        .args(uas_args)
        .spawn();
    callee.wait_listening();
    let caller = Sipp::new(uac, callee.addr(), transport)
        .trace_messages()
        .args(&["-s", "1002"])
        .args(ABORT_UNEXPECTED)
        .args(uac_args)
        .spawn();
    Pair {
        caller,
        callee,
        _port: port,
    }
}

/// Both sides of a pair succeed; returns (caller, callee).
fn pair_ok(
    uas: &str,
    uac: &str,
    transport: &'static str,
    uas_args: &[&str],
    uac_args: &[&str],
) -> (SippRun, SippRun) {
    let p = pair(uas, uac, transport, uas_args, uac_args);
    let mut runs = SippProc::wait_all(vec![p.caller, p.callee], Instant::now() + CALL_DEADLINE);
    let (caller, callee) = (runs.remove(0), runs.remove(0));
    for (name, r) in [(uac, &caller), (uas, &callee)] {
        if !succeeded(r) {
            panic!(
                "{uac} against {uas} over {transport}: {name} failed\n===== {uac} =====\n{}\n{}\n===== {uas} =====\n{}\n{}",
                caller.report(),
                caller.trace(),
                callee.report(),
                callee.trace()
            );
        }
    }
    (caller, callee)
}

#[test]
fn scenarios_back_to_back() {
    require_tool("sipp");
    for transport in ["u1", "t1"] {
        let (caller, callee) = pair_ok(
            "call_uas_answer.xml",
            "call_uac_basic.xml",
            transport,
            &[],
            &[],
        );
        assert_eq!(
            body(caller.sent_request("INVITE")),
            body(callee.received_request("INVITE"))
        );
        let ok = |r: &SippRun, sent: bool| {
            let msgs = if sent {
                r.sent_responses("INVITE")
            } else {
                r.received_responses("INVITE")
            };
            msgs.into_iter().find(|m| m.status() == Some(200)).map(body)
        };
        assert_eq!(
            ok(&callee, true),
            ok(&caller, false),
            "the answer arrives whole"
        );
        // The trace helpers the appliance tests lean on.
        let invite = callee.received_request("INVITE");
        assert_eq!(invite.request_uri(), Some("sip:1002@switchboard.local"));
        assert_eq!(invite.header("Max-Forwards"), Some("70"));
        assert!(
            invite
                .tag_of("From")
                .is_some_and(|t| t.starts_with("caller-"))
        );
        assert_eq!(invite.tag_of("To"), None);
        let ok = caller.received_responses("INVITE");
        assert!(
            ok.last()
                .and_then(|m| m.tag_of("To"))
                .is_some_and(|t| t.starts_with("callee-"))
        );
        assert_eq!(ok.last().and_then(|m| m.cseq_method()), Some("INVITE"));
        assert_eq!(callee.received_request("BYE").call_id(), invite.call_id());
    }
    pair_ok(
        "call_uas_callee_bye.xml",
        "call_uac_callee_bye.xml",
        "u1",
        &[],
        &[],
    );
    let (caller, callee) = pair_ok(
        "call_uas_ring_cancel.xml",
        "call_uac_cancel.xml",
        "u1",
        &[],
        &[],
    );
    assert_eq!(final_status(&caller), 487);
    callee.received_request("CANCEL");
    for code in [404u16, 480, 486, 500, 603] {
        let (caller, _) = pair_ok(
            "call_uas_reject.xml",
            "call_uac_reject.xml",
            "u1",
            &["-key", "status", &code.to_string()],
            &[],
        );
        assert_eq!(final_status(&caller), code, "{}", caller.trace());
    }
    pair_ok(
        "call_uas_late_offer.xml",
        "call_stub_late_offer_uac.xml",
        "u1",
        &[],
        &[],
    );
    pair_ok(
        "call_stub_reinvite_uas.xml",
        "call_uac_transferred.xml",
        "u1",
        &[],
        &[],
    );
    pair_ok(
        "call_uas_transferor.xml",
        "call_stub_refer_uac.xml",
        "u1",
        &[],
        &["-key", "final", "200 OK"],
    );

    // The scenarios catch what they are there to catch (the other side is
    // left waiting and killed).
    let p = pair(
        "call_uas_reject.xml",
        "call_uac_reject.xml",
        "u1",
        &["-key", "status", "503"],
        &[],
    );
    let caller = p.caller.wait(Instant::now() + HANG);
    assert!(
        !caller.killed && caller.status.code() != Some(0),
        "the caller refuses a 503\n{}",
        caller.report()
    );
    let p = pair(
        "call_uas_transferor.xml",
        "call_stub_refer_uac.xml",
        "u1",
        &[],
        &["-key", "final", "486 Busy Here"],
    );
    let transferor = p.callee.wait(Instant::now() + HANG);
    assert!(
        !transferor.killed && transferor.status.code() != Some(0),
        "the transferor fails when the final NOTIFY is not 200\n{}",
        transferor.report()
    );
    let p = pair(
        "call_uas_late_offer.xml",
        "call_uac_basic.xml",
        "u1",
        &[],
        &[],
    );
    let target = p.callee.wait(Instant::now() + HANG);
    assert!(
        !target.killed && target.status.code() != Some(0),
        "the transfer target fails on an INVITE with SDP\n{}",
        target.report()
    );
}

// ---------------------------------------------------------------------------
// SIGTERM with a call up (CONTRACT: end active calls cleanly with BYE)
// ---------------------------------------------------------------------------

#[test]
fn sigterm_ends_an_answered_call_with_bye_to_both_legs() {
    let a = appliance(Options::new(Driver::Auto));
    // The callee waits for a BYE; so does the caller (the callee-hangs-up
    // caller scenario): only the appliance can send both.
    let callee = Phone::start(&a, "1002", "call_uas_answer.xml", &[]);
    let mut caller = call(&a, "call_uac_callee_bye.xml", "1002", "u1");
    caller.wait_traced("ACK sip:");
    let s = a.stop();
    let (caller, phones) = finish(caller, vec![callee]);
    assert!(succeeded(&caller), "caller: {}", caller.report());
    assert!(succeeded(&phones[0]), "callee: {}", phones[0].report());
    let c = &s.counters;
    assert_clean(&s);
    assert_calls(&s, 1, 1, 0);
    exactly(c, "requests out", "BYE", 2, &s);
    assert!(
        s.stderr.contains("cause=shutdown"),
        "the call record names the shutdown: {}",
        s.tail()
    );
}
