//! SIP core and registrar against SIPp 3.6 (Debian `sip-tester`) and a raw
//! socket client, for both I/O drivers (io_uring and epoll):
//!
//! * `OPTIONS` over UDP and over TCP is answered 200 (tests/sipp/options.xml);
//! * `REGISTER` with digest auth: right password → 200, wrong password → 403,
//!   unknown user → 403 (tests/sipp/register_ok.xml, register_refused.xml,
//!   appliance run with the documented `registrar.digest_algorithms =
//!   ["MD5", "SHA-256"]` because SIPp only answers a first MD5 challenge);
//! * with the default config, a raw client sees the 401 offer SHA-256 first
//!   and MD5 second with one nonce, registers with SHA-256, and a replayed
//!   nonce count is refused;
//! * the counters printed at SIGTERM agree (registrations, auth_failures,
//!   responses out), and the appliance exits 0.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{
    Appliance, Driver, Options, Sipp, UdpPeer, authorization, digest_params, options_request,
    register_request, require_tool, unique,
};

/// SIPp only answers a first challenge in MD5 (see firmware-config/README.md).
const SIPP_ALGORITHMS: &str = r#"registrar.digest_algorithms=["MD5","SHA-256"]"#;

fn options_over(driver: Driver, transport: &'static str) {
    require_tool("sipp");
    let mut a = Appliance::start(Options::new(driver));
    let calls = 20;
    let run = Sipp::new("options.xml", a.udp_addr(), transport)
        .calls(calls)
        .args(["-r", "50"].as_slice())
        .run();
    run.assert_all_succeeded(
        u64::from(calls),
        &format!("OPTIONS over {transport}, {driver:?}"),
    );
    a.assert_alive();
    let s = a.stop();
    let options_in = s.counters.get("requests in", "OPTIONS");
    assert!(
        options_in >= u64::from(calls),
        "requests in: OPTIONS={options_in}, expected at least {calls}\n{}",
        s.tail()
    );
    // Retransmissions count as requests in but are absorbed by their
    // transaction: every transaction (all OPTIONS here) answered 200 once.
    assert_eq!(
        s.counters.get("responses out", "200"),
        s.counters.total("transactions_created"),
        "every OPTIONS transaction answered 200 once\n{}",
        s.tail()
    );
    if transport == "t1" {
        assert!(
            s.counters.total("tcp_accepted") >= 2,
            "SIPp's TCP connection accepted\n{}",
            s.tail()
        );
    }
    assert_eq!(s.counters.total("parse_errors_total"), 0, "{}", s.tail());
}

#[test]
fn options_udp_io_uring() {
    options_over(Driver::IoUring, "u1");
}

#[test]
fn options_udp_epoll() {
    options_over(Driver::Epoll, "u1");
}

#[test]
fn options_tcp_io_uring() {
    options_over(Driver::IoUring, "t1");
}

#[test]
fn options_tcp_epoll() {
    options_over(Driver::Epoll, "t1");
}

/// One SIPp registration; `scenario` decides what success means.
fn sipp_register(a: &Appliance, scenario: &str, transport: &'static str, user: &str, pw: &str) {
    let run = Sipp::new(scenario, a.udp_addr(), transport)
        .args(["-s", user, "-au", user, "-ap", pw].as_slice())
        .run();
    run.assert_all_succeeded(
        1,
        &format!(
            "{scenario} as {user}/{pw} over {transport}, {:?}\n{}",
            a.driver,
            a.stderr_tail()
        ),
    );
}

fn register_outcomes(driver: Driver) {
    require_tool("sipp");
    // All cores: a REGISTER is handled on its user's home shard, so this
    // also crosses the shard mesh.
    let mut a = Appliance::start(Options::new(driver).all_cores().set(SIPP_ALGORITHMS));
    sipp_register(&a, "register_ok.xml", "u1", "1001", "pw1001");
    sipp_register(&a, "register_ok.xml", "t1", "1002", "pw1002");
    sipp_register(&a, "register_refused.xml", "u1", "1003", "wrong-password");
    sipp_register(&a, "register_refused.xml", "t1", "1004", "pw1005");
    sipp_register(&a, "register_refused.xml", "u1", "4242", "pw");
    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert_eq!(c.get("requests in", "REGISTER"), 10, "{}", s.tail());
    assert_eq!(c.total("registrations"), 2, "{}", s.tail());
    assert_eq!(c.total("auth_challenges"), 5, "{}", s.tail());
    assert_eq!(c.total("auth_failures"), 3, "{}", s.tail());
    assert_eq!(c.get("responses out", "401"), 5, "{}", s.tail());
    assert_eq!(c.get("responses out", "403"), 3, "{}", s.tail());
    assert_eq!(c.total("parse_errors_total"), 0, "{}", s.tail());
}

#[test]
fn register_right_wrong_unknown_io_uring() {
    register_outcomes(Driver::IoUring);
}

#[test]
fn register_right_wrong_unknown_epoll() {
    register_outcomes(Driver::Epoll);
}

/// The default config (no algorithm override): the 401 offers SHA-256 first
/// and MD5 second with the same nonce (RFC 8760); SHA-256 registers; the
/// same nonce count again is a replay (403); a listed User-Agent gets MD5
/// alone.
fn default_challenge_order(driver: Driver) {
    let a = Appliance::start(Options::new(driver));
    let peer = UdpPeer::new();
    let to = a.udp_addr();
    let call_id = format!("sha-{}", unique());
    let reg = |cseq: u32, extra: &str| {
        register_request("1005", &call_id, cseq, "UDP", peer.local(), extra)
    };

    let r = peer
        .request(to, reg(1, "").as_bytes(), &call_id)
        .unwrap_or_else(|| panic!("no answer to REGISTER\n{}", a.stderr_tail()));
    assert_eq!(r.status(), Some(401), "{}\n{}", r.start, a.stderr_tail());
    let challenges = r.headers_named("WWW-Authenticate");
    assert_eq!(
        challenges.len(),
        2,
        "two challenges by default: {challenges:?}"
    );
    let first = digest_params(challenges[0]);
    let second = digest_params(challenges[1]);
    assert!(
        challenges.iter().all(|c| c.starts_with("Digest ")),
        "{challenges:?}"
    );
    assert_eq!(
        first.get("algorithm").map(String::as_str),
        Some("SHA-256"),
        "SHA-256 first: {challenges:?}"
    );
    assert_eq!(
        second.get("algorithm").map(String::as_str),
        Some("MD5"),
        "MD5 second: {challenges:?}"
    );
    assert_eq!(
        first.get("nonce"),
        second.get("nonce"),
        "same nonce: {challenges:?}"
    );
    assert_eq!(
        first.get("realm").map(String::as_str),
        Some("switchboard.local"),
        "{challenges:?}"
    );

    let auth1 = authorization(challenges[0], "1005", "pw1005", 1);
    let ok = peer
        .request(to, reg(2, &auth1).as_bytes(), &call_id)
        .unwrap_or_else(|| panic!("no answer to the SHA-256 REGISTER\n{}", a.stderr_tail()));
    assert_eq!(
        ok.status(),
        Some(200),
        "SHA-256 response accepted: {}\n{}",
        ok.start,
        a.stderr_tail()
    );
    let contact = ok.header("Contact").unwrap_or_default();
    assert!(
        contact.contains("expires="),
        "200 lists the binding with its expiry: Contact: {contact}"
    );

    // The same nonce count again is a replay.
    let replay = peer
        .request(to, reg(3, &auth1).as_bytes(), &call_id)
        .unwrap_or_else(|| panic!("no answer to the replay\n{}", a.stderr_tail()));
    assert_eq!(
        replay.status(),
        Some(403),
        "nc replay refused: {}",
        replay.start
    );

    // The next nonce count is fine (MD5 this time, same nonce).
    let auth2 = authorization(challenges[1], "1005", "pw1005", 2);
    let ok2 = peer
        .request(to, reg(4, &auth2).as_bytes(), &call_id)
        .unwrap_or_else(|| panic!("no answer to the MD5 REGISTER\n{}", a.stderr_tail()));
    assert_eq!(ok2.status(), Some(200), "MD5 with nc=2: {}", ok2.start);

    // Wrong password and unknown user: the same answer.
    let wrong_id = format!("wrong-{}", unique());
    let unknown_id = format!("unknown-{}", unique());
    let mut answers = Vec::new();
    for (user, pw, cid) in [("1006", "nope", &wrong_id), ("4242", "pw", &unknown_id)] {
        let r = peer
            .request(
                to,
                register_request(user, cid, 1, "UDP", peer.local(), "").as_bytes(),
                cid,
            )
            .expect("401");
        assert_eq!(r.status(), Some(401), "{user}: {}", r.start);
        let ch = r.headers_named("WWW-Authenticate")[0].to_string();
        let auth = authorization(&ch, user, pw, 1);
        let r = peer
            .request(
                to,
                register_request(user, cid, 2, "UDP", peer.local(), &auth).as_bytes(),
                cid,
            )
            .expect("403");
        answers.push(r.start.clone());
        assert_eq!(r.status(), Some(403), "{user}/{pw}: {}", r.start);
    }
    assert_eq!(
        answers[0], answers[1],
        "wrong password and unknown user look the same"
    );

    // A listed client (baresip 1.x) gets MD5 alone.
    let ua_id = format!("ua-{}", unique());
    let r = peer
        .request(
            to,
            register_request(
                "1007",
                &ua_id,
                1,
                "UDP",
                peer.local(),
                "User-Agent: baresip v1.0.0 (x86_64/linux)\r\n",
            )
            .as_bytes(),
            &ua_id,
        )
        .expect("401");
    let ch = r.headers_named("WWW-Authenticate");
    assert_eq!(ch.len(), 1, "one challenge for baresip: {ch:?}");
    assert_eq!(
        digest_params(ch[0]).get("algorithm").map(String::as_str),
        Some("MD5"),
        "{ch:?}"
    );

    // OPTIONS still lists what the brief promises.
    let oid = format!("opt-{}", unique());
    let o = peer
        .request(
            to,
            options_request(&oid, "UDP", peer.local()).as_bytes(),
            &oid,
        )
        .expect("200");
    assert_eq!(o.status(), Some(200));
    assert!(
        o.header("Allow").is_some_and(|v| v.contains("REGISTER")),
        "{:?}",
        o.headers
    );
    assert_eq!(
        o.header("Accept"),
        Some("application/sdp"),
        "{:?}",
        o.headers
    );
    assert!(!o.headers_named("Supported").is_empty(), "{:?}", o.headers);

    let s = a.stop();
    let c = &s.counters;
    assert_eq!(c.total("registrations"), 2, "{}", s.tail());
    assert_eq!(
        c.total("auth_failures"),
        3,
        "replay, wrong password, unknown user\n{}",
        s.tail()
    );
    assert_eq!(c.get("responses out", "403"), 3, "{}", s.tail());
}

#[test]
fn default_challenge_sha256_then_md5_io_uring() {
    default_challenge_order(Driver::IoUring);
}

#[test]
fn default_challenge_sha256_then_md5_epoll() {
    default_challenge_order(Driver::Epoll);
}
