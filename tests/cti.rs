//! CTI against the real binary: a WebSocket client on `/v1/cti` (token
//! `demo-token`, admin) drives agents and calls while SIPp plays the
//! phones and the customers, and the events, the SIP on the wire (SIPp's
//! message traces and scenario checks) and the REST resources are checked.
//!
//! * screen pop: agent 1002 logged in and made ready over CTI; a customer
//!   (+815012345678) dials 200; `call.offered` carries the directory record
//!   (Hanako Yamada, vip), then `call.ringing`, `call.established` and
//!   `call.cleared` follow in order; the record is at `GET /v1/calls/{id}`;
//! * click-to-dial: `call.make` rings agent 1002's phone (asked to answer
//!   at once, `Call-Info: answer-after=0`), then the customer;
//! * hold, retrieve and transfer: the agent's phone gets the `a=inactive`
//!   and `a=sendrecv` re-INVITEs, the customer is re-INVITEd to user 1003
//!   and the agent hung up; a token scoped to agent 1001 can neither see
//!   nor hang up the call;
//! * conference: after a consultation, `call.conference` joins customer,
//!   agent and consulted user; each party's RTP (a [`TonePeer`] saying its
//!   own tone) carries the other two's tones and not its own; a party
//!   hanging up leaves, `call.conferenced` names those left, and the two
//!   left hear each other only;
//! * bad input: no token, malformed JSON, unknown commands and oversized
//!   messages get error replies, and the connection stays usable.

// Test code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::cti::{Cti, get_json, http};
use common::phones::{ABORT_UNEXPECTED, Phone, appliance, assert_runs_succeeded, finish};
use common::rtp::{ABSENT, LISTEN, TonePeer, traced_media_addr};
use common::{Appliance, Driver, HANG, Options, Sipp, SippProc, reserve_ports};
use serde_json::{Value, json};

const ADMIN: &str = "demo-token";
const AGENT_1001: &str = "token-of-agent-1001";
/// The demo's tokens plus one scoped to agent 1001.
const TOKENS: &str = r#"cti.tokens=[{token="demo-token",scope="admin"},{token="token-of-agent-1001",scope="agent:1001"}]"#;

/// The demo appliance with agents logged in over CTI only.
fn cti_appliance() -> Appliance {
    appliance(
        Options::new(Driver::Epoll)
            .set("acd.auto_login=false")
            .set(TOKENS),
    )
}

/// Logs `agent` in over CTI and makes it ready (through not-ready, so
/// both state changes are seen as events).
fn login_ready(cti: &mut Cti, agent: &str) {
    cti.ok(json!({"type": "agent.login", "agent": agent}));
    // Logged in, an agent is ready at once (the ACD answers in an event).
    cti.event("logged in", |e| {
        e["type"] == "agent.state" && e["agent"] == agent && e["state"] == "ready"
    });
    cti.ok(json!({"type": "agent.set_state", "agent": agent, "state": "not_ready", "reason": 2}));
    let e = cti.event("not ready", |e| {
        e["type"] == "agent.state" && e["agent"] == agent && e["state"] == "not_ready"
    });
    assert_eq!(e["reason"], 2, "{e}");
    cti.ok(json!({"type": "agent.set_state", "agent": agent, "state": "ready"}));
    cti.event("ready", |e| {
        e["type"] == "agent.state" && e["agent"] == agent && e["state"] == "ready"
    });
}

/// An agent's phone (registered `user`) taking one call with `scenario`.
fn phone(a: &Appliance, user: &str, scenario: &str) -> Phone {
    Phone::start(a, user, scenario, &["-m", "1", "-timeout", "60s"])
}

/// An admin CTI client subscribed to everything.
fn subscribed(a: &Appliance) -> Cti {
    let mut cti = Cti::connect(a.cti_port, ADMIN);
    cti.ok(json!({"type": "subscribe"}));
    cti
}

/// A customer calling the support queue (200) with `scenario`, connected
/// to an agent: its SIPp run and the call's id.
fn queue_call(a: &Appliance, cti: &mut Cti, scenario: &str) -> (SippProc, String) {
    let caller = Sipp::new(scenario, a.udp_addr(), "u1")
        .trace_messages()
        .args(&["-s", "200"])
        .args(ABORT_UNEXPECTED)
        .spawn();
    let established = cti.event("call.established", |e| e["type"] == "call.established");
    let call = established["call"].as_str().expect("a call id").to_owned();
    (caller, call)
}

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}"))
}

/// Polls `GET path` until it answers 200.
fn get_eventually(a: &Appliance, path: &str) -> Value {
    let deadline = Instant::now() + HANG;
    loop {
        let (status, body) = get_json(a.cti_port, path, ADMIN);
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path}: {status} {body}\n{}",
            a.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_queue_call_pops_the_directory_record_then_is_established_and_cleared_in_order() {
    // Wrap-up long enough that only call.wrap_up ends it.
    let a = appliance(
        Options::new(Driver::Epoll)
            .set("acd.auto_login=false")
            .set(TOKENS)
            .set("queues[0].wrap_up_s=600")
            .set("queues[0].wrap_up_max_s=600"),
    );
    let mut cti = Cti::connect(a.cti_port, ADMIN);
    let sub = cti.ok(json!({"type": "subscribe"}));
    assert_eq!(sub["subscribed"]["agents"], "*", "{sub}");
    let phone = phone(&a, "1002", "acd_agent.xml");
    login_ready(&mut cti, "1002");
    let snap = cti.ok(json!({"type": "snapshot"}));
    let agents = snap["agents"].as_array().expect("agents in the snapshot");
    assert!(
        agents
            .iter()
            .any(|x| x["agent"] == "1002" && x["state"] == "ready"),
        "{snap}"
    );

    let caller = Sipp::new("acd_caller.xml", a.udp_addr(), "u1")
        .trace_messages()
        .args(&["-s", "200"])
        .args(ABORT_UNEXPECTED)
        .spawn();
    let offered = cti.event("call.offered", |e| e["type"] == "call.offered");
    let call = offered["call"].as_str().expect("a call id").to_owned();
    assert_eq!(offered["agent"], "1002", "{offered}");
    assert_eq!(offered["queue"], "support", "{offered}");
    assert_eq!(offered["ani"], "+815012345678", "{offered}");
    assert_eq!(offered["dnis"], "200", "{offered}");
    assert_eq!(offered["contact"]["name"], "Hanako Yamada", "{offered}");
    assert_eq!(offered["contact"]["account"], "A-1001", "{offered}");
    assert_eq!(offered["contact"]["tier"], "vip", "{offered}");
    let ringing = cti.call_event(&call, "call.ringing");
    let established = cti.call_event(&call, "call.established");
    let cleared = cti.call_event(&call, "call.cleared");
    assert!(
        seq(&offered) < seq(&ringing) && seq(&ringing) < seq(&established),
        "{offered}\n{ringing}\n{established}"
    );
    assert!(
        seq(&established) < seq(&cleared),
        "{established}\n{cleared}"
    );
    assert_eq!(cleared["cause"], "normal", "{cleared}");
    assert_eq!(established["agent"], "1002", "{established}");

    let (caller, phones) = finish(caller, vec![phone]);
    assert_runs_succeeded(&a, &[("caller", &caller), ("agent 1002", &phones[0])]);

    // The agent is in wrap-up: the record waits for its disposition.
    cti.event("wrap-up", |e| {
        e["type"] == "agent.state" && e["agent"] == "1002" && e["state"] == "wrap_up"
    });
    let (status, _) = get_json(a.cti_port, &format!("/v1/calls/{call}"), ADMIN);
    assert_eq!(status, 404, "no record before the interaction ends");
    cti.ok(json!({
        "type": "call.wrap_up", "call": call, "disposition": "sale", "notes": "wants the blue one"
    }));
    let w = cti.call_event(&call, "call.wrap_up");
    assert_eq!(w["disposition"], "sale", "{w}");
    cti.event("ready after wrap-up", |e| {
        e["type"] == "agent.state" && e["agent"] == "1002" && e["state"] == "ready"
    });

    // The interaction's record, under the call's id.
    let record = get_eventually(&a, &format!("/v1/calls/{call}"));
    assert_eq!(record["id"], call.as_str(), "{record}");
    assert_eq!(record["disposition"], "sale", "{record}");
    assert_eq!(record["notes"], "wants the blue one", "{record}");
    assert!(record["wrap_up_ms"].is_u64(), "{record}");
    for t in ["talk_ms", "queue_ms", "ring_ms", "connected_ms"] {
        assert!(record[t].is_u64(), "{t}: {record}");
    }
    assert!(
        record["connected_ms"].as_u64() >= record["answered_ms"].as_u64(),
        "the agent answered after the appliance did: {record}"
    );
    assert_eq!(record["agent"], "1002", "{record}");
    assert_eq!(record["queue"], "support", "{record}");
    let (status, list) = get_json(a.cti_port, "/v1/calls?agent=1002", ADMIN);
    assert_eq!(status, 200, "{list}");
    assert!(
        list["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|r| r["id"] == call.as_str())),
        "{list}"
    );
    // An agent-scoped token does not see 1002's calls.
    let (status, _) = get_json(a.cti_port, &format!("/v1/calls/{call}"), AGENT_1001);
    assert_eq!(status, 404);
    let (status, _) = get_json(a.cti_port, "/v1/calls?agent=1002", AGENT_1001);
    assert_eq!(status, 403);
    let (status, queues) = get_json(a.cti_port, "/v1/queues", ADMIN);
    assert_eq!(status, 200, "{queues}");
    assert_eq!(queues["queues"][0]["queue"], "support", "{queues}");
    // Subscribed to everything: queue statistics come each second.
    let stats = cti.event("queue.stats with the answered call", |e| {
        e["type"] == "queue.stats"
            && e["queue"] == "support"
            && e["today"]["answered"].as_u64() >= Some(1)
    });
    assert_eq!(stats["today"]["offered"], 1, "{stats}");
    a.stop();
}

#[test]
fn click_to_dial_rings_the_agent_then_the_customer() {
    let a = cti_appliance();
    let mut cti = Cti::connect(a.cti_port, ADMIN);
    cti.ok(json!({"type": "subscribe", "agents": ["1002"]}));
    let phone = phone(&a, "1002", "acd_agent.xml");
    let port = reserve_ports(1);
    let mut customer = Sipp::new("call_uas_answer.xml", a.udp_addr(), "u1")
        .local_port(port.port(0))
        .trace_messages()
        .args(&["-s", "customer", "-m", "1"])
        .args(ABORT_UNEXPECTED)
        .spawn();
    customer.wait_listening();
    let to = format!("sip:+815012345678@127.0.0.1:{}", port.port(0));
    let made = cti.ok(json!({
        "type": "call.make", "agent": "1002", "to": to, "data": {"ticket": "T-42"}
    }));
    let call = made["call"]
        .as_str()
        .expect("call.make names its call")
        .to_owned();
    let established = cti.call_event(&call, "call.established");
    assert_eq!(established["agent"], "1002", "{established}");
    assert_eq!(established["data"]["ticket"], "T-42", "{established}");
    assert_eq!(established["dnis"], "+815012345678", "{established}");
    let mut runs =
        SippProc::wait_all(vec![phone.proc, customer], Instant::now() + HANG).into_iter();
    let (phone_run, customer_run) = (runs.next().unwrap(), runs.next().unwrap());
    assert_runs_succeeded(
        &a,
        &[("agent 1002", &phone_run), ("customer", &customer_run)],
    );
    cti.call_event(&call, "call.cleared");
    // The agent's phone was asked to answer at once, and rang first: the
    // customer's INVITE only left once the agent's phone had answered.
    let invite = phone_run.received_request("INVITE");
    let info = invite.header("Call-Info").unwrap_or_default();
    assert!(info.contains("answer-after=0"), "Call-Info: {info:?}");
    assert_eq!(
        invite.header("From").map(|f| f.contains("+815012345678")),
        Some(true),
        "the agent's phone shows whom it calls: {:?}",
        invite.header("From")
    );
    customer_run.received_request("INVITE");
    a.stop();
}

#[test]
fn hold_retrieve_and_transfer_over_cti_are_seen_on_the_wire() {
    let a = cti_appliance();
    let mut cti = subscribed(&a);
    let agent = phone(&a, "1002", "cti_agent_hold.xml");
    let target = phone(&a, "1003", "call_uas_late_offer.xml");
    login_ready(&mut cti, "1002");
    let (caller, call) = queue_call(&a, &mut cti, "call_uac_transferred.xml");

    // Agent 1001's token sees neither the call nor may it touch it.
    let mut other = Cti::connect(a.cti_port, AGENT_1001);
    let r = other.request(json!({"type": "call.hangup", "call": call}));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    let snap = other.ok(json!({"type": "snapshot"}));
    assert_eq!(snap["calls"], json!([]), "{snap}");
    assert_eq!(snap["agents"].as_array().map(Vec::len), Some(1), "{snap}");
    let r = other.request(json!({"type": "agent.logout", "agent": "1002"}));
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    cti.ok(json!({"type": "call.hold", "call": call}));
    cti.call_event(&call, "call.held");
    // Retrieve once the phone has answered the hold re-INVITE.
    let deadline = Instant::now() + HANG;
    loop {
        let r = cti.request(json!({"type": "call.retrieve", "call": call}));
        if r["ok"] == true {
            break;
        }
        assert_eq!(r["error"]["code"], "invalid_state", "{r}");
        assert!(Instant::now() < deadline, "retrieve refused: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    cti.call_event(&call, "call.retrieved");
    cti.ok(json!({"type": "call.send_dtmf", "call": call, "digits": "12#"}));
    cti.ok(json!({"type": "call.set_data", "call": call, "data": {"case": "C-9"}}));
    let data = cti.call_event(&call, "call.data");
    assert_eq!(data["data"]["case"], "C-9", "{data}");
    let deadline = Instant::now() + HANG;
    loop {
        let r = cti.request(json!({"type": "call.transfer", "call": call, "to": "1003"}));
        if r["ok"] == true {
            break;
        }
        assert_eq!(r["error"]["code"], "invalid_state", "{r}");
        assert!(Instant::now() < deadline, "transfer refused: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved = cti.call_event(&call, "call.transferred");
    assert_eq!(moved["to"], "1003", "{moved}");
    cti.call_event(&call, "call.cleared");

    let (caller, phones) = finish(caller, vec![agent, target]);
    assert_runs_succeeded(
        &a,
        &[
            ("caller", &caller),
            ("agent 1002", &phones[0]),
            ("target 1003", &phones[1]),
        ],
    );
    // On the wire: the hold and resume re-INVITEs to the agent's phone,
    // then its BYE; the caller's re-INVITE towards the target.
    let reinvites = phones[0].received_requests("INVITE");
    assert_eq!(reinvites.len(), 3, "{}", phones[0].trace());
    assert!(String::from_utf8_lossy(&reinvites[1].body).contains("a=inactive"));
    assert!(String::from_utf8_lossy(&reinvites[2].body).contains("a=sendrecv"));
    phones[0].received_request("BYE");
    assert_eq!(
        caller.received_requests("INVITE").len(),
        1,
        "{}",
        caller.trace()
    );
    phones[1].received_request("INVITE");
    a.stop();
}

#[test]
fn bad_input_gets_error_replies_and_never_a_disconnect() {
    let a = appliance(
        Options::new(Driver::Epoll)
            .set(TOKENS)
            .set("cti.max_message_bytes=1024"),
    );
    // No token, or an unknown one: 401, on REST and on the upgrade.
    let (status, body) = http(a.cti_port, "GET", "/v1/calls", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    assert!(Cti::try_connect(a.cti_port, "wrong-token").is_err());

    let mut cti = Cti::connect(a.cti_port, ADMIN);
    let mut watcher = Cti::connect(a.cti_port, ADMIN);
    cti.send_text("{not json");
    let r = cti.reply_to(&Value::Null);
    assert_eq!(r["error"]["code"], "bad_json", "{r}");
    let r = cti.request(json!({"type": "call.explode"}));
    assert_eq!(r["error"]["code"], "unknown_command", "{r}");
    let r = cti.request(json!({"type": "call.hangup"}));
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = cti.request(json!({"type": "call.hangup", "call": "no-such-call"}));
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    let r = cti.request(json!({"type": "agent.set_state", "agent": "1004", "state": "ready"}));
    assert_eq!(r["error"]["code"], "invalid_state", "{r}");
    let big = json!({"type": "snapshot", "pad": "x".repeat(4000)}).to_string();
    cti.send_text(&big);
    let r = cti.reply_to(&Value::Null);
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    // Both connections still work.
    cti.ok(json!({"type": "snapshot"}));
    watcher.ok(json!({"type": "snapshot"}));

    // REST: the same commands, with HTTP statuses.
    let (status, body) = http(
        a.cti_port,
        "POST",
        "/v1/cti/agent.login",
        Some(AGENT_1001),
        r#"{"agent":"1002"}"#,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(
        a.cti_port,
        "POST",
        "/v1/cti/agent.login",
        Some(AGENT_1001),
        r#"{"agent":"1001"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(a.cti_port, "POST", "/v1/cti/call.hangup", Some(ADMIN), "{");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(a.cti_port, "/v1/outbox", AGENT_1001);
    assert_eq!(status, 403, "{body}");
    let (status, body) = get_json(a.cti_port, "/v1/outbox", ADMIN);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dead_letters"], json!([]), "{body}");
    a.stop();
}

/// A CRM answering every contact lookup with one JSON record; the request
/// lines it got go to the returned receiver.
fn fake_crm(port: u16, answer: &'static str) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the fake CRM");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the head.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = tx.send(line.trim_end().to_owned());
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    rx
}

#[test]
fn the_screen_pop_comes_from_the_crm_over_http_when_configured() {
    let crm_port = reserve_ports(1);
    let asked = fake_crm(
        crm_port.port(0),
        r#"{"contact": {"name": "Taro CRM"}, "account": "C-77", "tier": "vip", "last_agent": "1002"}"#,
    );
    let a = appliance(
        Options::new(Driver::Epoll)
            .set("acd.auto_login=false")
            .set(TOKENS)
            .set(&format!(
                "crm.lookup.url=\"http://127.0.0.1:{}/contacts?phone={{number}}\"",
                crm_port.port(0)
            ))
            .set("crm.lookup.fields.name=\"contact.name\""),
    );
    let mut cti = subscribed(&a);
    let phone = phone(&a, "1002", "acd_agent.xml");
    login_ready(&mut cti, "1002");
    let caller = Sipp::new("acd_caller.xml", a.udp_addr(), "u1")
        .args(&["-s", "200"])
        .args(ABORT_UNEXPECTED)
        .spawn();
    let offered = cti.event("call.offered", |e| e["type"] == "call.offered");
    assert_eq!(offered["contact"]["name"], "Taro CRM", "{offered}");
    assert_eq!(offered["contact"]["account"], "C-77", "{offered}");
    assert_eq!(offered["contact"]["tier"], "vip", "{offered}");
    assert_eq!(offered["contact"]["last_agent"], "1002", "{offered}");
    let line = asked.recv_timeout(HANG).expect("the CRM was asked");
    assert_eq!(line, "GET /contacts?phone=%2B815012345678 HTTP/1.1");
    let (_, metrics) = http(a.cti_port, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("switchboard_crm_lookups_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    let (caller, phones) = finish(caller, vec![phone]);
    assert_runs_succeeded(&a, &[("caller", &caller), ("agent 1002", &phones[0])]);
    a.stop();
}

#[test]
fn consult_then_transfer_complete_hands_the_customer_to_the_consulted_party() {
    let a = cti_appliance();
    let mut cti = subscribed(&a);
    let agent = phone(&a, "1002", "call_uas_answer.xml");
    let target = phone(&a, "1003", "call_uas_answer.xml");
    login_ready(&mut cti, "1002");
    let (caller, call) = queue_call(&a, &mut cti, "acd_caller.xml");
    let r = cti.request(json!({"type": "call.transfer_complete", "call": call}));
    assert_eq!(r["error"]["code"], "invalid_state", "{r}");

    cti.ok(json!({"type": "call.consult", "call": call, "to": "1003"}));
    cti.call_event(&call, "call.held");
    let child = format!("{call}-c1");
    let consulted = cti.call_event(&child, "call.established");
    assert_eq!(consulted["parent"], call.as_str(), "{consulted}");
    assert_eq!(consulted["dnis"], "1003", "{consulted}");
    assert_eq!(consulted["agent"], "1002", "{consulted}");
    cti.ok(json!({"type": "call.transfer_complete", "call": call}));
    let gone = cti.call_event(&child, "call.cleared");
    assert_eq!(gone["cause"], "transferred", "{gone}");
    let moved = cti.call_event(&call, "call.transferred");
    assert_eq!(moved["to"], "1003", "{moved}");
    // The agent is free again; the customer and 1003 talk until hung up.
    cti.event("1002 after the transfer", |e| {
        e["type"] == "agent.state" && e["agent"] == "1002" && e["state"] != "on_call"
    });
    cti.ok(json!({"type": "call.hangup", "call": call}));
    cti.call_event(&call, "call.cleared");

    let (caller, phones) = finish(caller, vec![agent, target]);
    assert_runs_succeeded(
        &a,
        &[
            ("caller", &caller),
            ("agent 1002", &phones[0]),
            ("consulted 1003", &phones[1]),
        ],
    );
    // The consulted party got an offer; the customer was never re-INVITEd.
    let invite = phones[1].received_request("INVITE");
    assert!(String::from_utf8_lossy(&invite.body).contains("m=audio"));
    assert!(
        caller.received_requests("INVITE").is_empty(),
        "{}",
        caller.trace()
    );
    phones[0].received_request("BYE");
    a.stop();
}

#[test]
fn call_answer_asks_the_ringing_phone_to_answer_by_itself() {
    let a = cti_appliance();
    let mut cti = subscribed(&a);
    let agent = phone(&a, "1002", "cti_agent_answer.xml");
    login_ready(&mut cti, "1002");
    let caller = Sipp::new("acd_caller.xml", a.udp_addr(), "u1")
        .args(&["-s", "200"])
        .args(ABORT_UNEXPECTED)
        .spawn();
    let ringing = cti.event("call.ringing", |e| e["type"] == "call.ringing");
    let call = ringing["call"].as_str().expect("a call id").to_owned();
    cti.ok(json!({"type": "call.answer", "call": call}));
    let established = cti.call_event(&call, "call.established");
    assert_eq!(established["agent"], "1002", "{established}");
    let r = cti.request(json!({"type": "call.answer", "call": call}));
    assert_eq!(r["error"]["code"], "invalid_state", "{r}");
    cti.ok(json!({"type": "call.hangup", "call": call}));
    cti.call_event(&call, "call.cleared");
    let (caller, phones) = finish(caller, vec![agent]);
    assert_runs_succeeded(&a, &[("caller", &caller), ("agent 1002", &phones[0])]);
    let invites = phones[0].received_requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", phones[0].trace());
    assert_eq!(invites[0].call_id(), invites[1].call_id());
    assert!(
        invites[1]
            .header("Call-Info")
            .is_some_and(|v| v.contains("answer-after=0")),
        "{:?}",
        invites[1].header("Call-Info")
    );
    a.stop();
}

/// Who hangs up first in [`conference`].
#[derive(Clone, Copy, PartialEq)]
enum Leaves {
    Agent,
    Consulted,
}

/// Polls until `peer` no longer hears `hz` (over [`LISTEN`]).
fn wait_not_hearing(peer: &TonePeer, hz: f64, who: &str) {
    let deadline = Instant::now() + HANG;
    while peer.level(hz, LISTEN) >= ABSENT {
        assert!(
            Instant::now() < deadline,
            "{who} still hears {hz} Hz: {}",
            peer.spectrum(&[440.0, 1000.0, 1800.0], LISTEN)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A customer (440 Hz) in queue 200 answered by agent 1002 (1000 Hz), who
/// consults 1003 (1800 Hz) and makes it a conference; `leaves` hangs up
/// (its SIPp scenario, 8 s after it answered).
fn conference(leaves: Leaves) {
    let a = cti_appliance();
    let mut cti = subscribed(&a);
    let (customer, agent, consulted) = (
        TonePeer::start(440.0),
        TonePeer::start(1000.0),
        TonePeer::start(1800.0),
    );
    let scenario = |who: Leaves| {
        if who == leaves {
            "tone_phone_hangs_up.xml"
        } else {
            "tone_phone.xml"
        }
    };
    let start = |user: &str, who: Leaves, peer: &TonePeer| {
        let rtp = peer.port().to_string();
        let args = ["-m", "1", "-timeout", "60s", "-set", "rtp", rtp.as_str()];
        Phone::start(&a, user, scenario(who), &args)
    };
    let agent_phone = start("1002", Leaves::Agent, &agent);
    let consulted_phone = start("1003", Leaves::Consulted, &consulted);
    login_ready(&mut cti, "1002");
    let caller = Sipp::new("tone_caller.xml", a.udp_addr(), "u1")
        .trace_messages()
        .args(&["-s", "200", "-set", "rtp", &customer.port().to_string()])
        .args(ABORT_UNEXPECTED)
        .spawn();
    let established = cti.event("call.established", |e| e["type"] == "call.established");
    let call = established["call"].as_str().expect("a call id").to_owned();
    let ani = established["ani"].clone();
    // Everything up to the hang-up fits in the leaving phone's 8 s.
    let deadline = Instant::now() + Duration::from_secs(6);
    customer.send_to(traced_media_addr(&caller, deadline));
    agent.send_to(traced_media_addr(&agent_phone.proc, deadline));
    customer.wait_hearing(1000.0, deadline);

    cti.ok(json!({"type": "call.consult", "call": call, "to": "1003"}));
    let child = format!("{call}-c1");
    cti.call_event(&child, "call.established");
    consulted.send_to(traced_media_addr(&consulted_phone.proc, deadline));
    consulted.wait_hearing(1000.0, deadline);
    cti.ok(json!({"type": "call.conference", "call": call}));
    let merged = cti.call_event(&child, "call.cleared");
    assert_eq!(merged["cause"], "conferenced", "{merged}");
    let conf = cti.call_event(&call, "call.conferenced");
    assert_eq!(conf["parties"], json!([ani, "1002", "1003"]), "{conf}");
    let r = cti.request(json!({"type": "call.hold", "call": call}));
    assert_eq!(r["error"]["code"], "invalid_state", "{r}");
    // Each hears the other two, and not itself.
    let parties = [
        ("customer", &customer),
        ("agent", &agent),
        ("1003", &consulted),
    ];
    for (who, peer) in parties {
        for (_, other) in parties {
            if !std::ptr::eq(peer, other) {
                peer.wait_hearing(other.tone_hz(), deadline);
            }
        }
        let own = peer.level(peer.tone_hz(), LISTEN);
        assert!(
            own < ABSENT,
            "{who} hears itself: {}",
            peer.spectrum(&[440.0, 1000.0, 1800.0], LISTEN)
        );
    }

    // One party hangs up: the customer and the other talk on.
    let (stays, user, gone) = match leaves {
        Leaves::Agent => (&consulted, "1003", &agent),
        Leaves::Consulted => (&agent, "1002", &consulted),
    };
    let left = cti.call_event(&call, "call.conferenced");
    assert_eq!(left["parties"], json!([ani, user]), "{left}");
    assert_eq!(left["agent"], user, "{left}");
    let deadline = Instant::now() + HANG;
    customer.wait_hearing(stays.tone_hz(), deadline);
    stays.wait_hearing(440.0, deadline);
    wait_not_hearing(&customer, gone.tone_hz(), "the customer");
    wait_not_hearing(stays, gone.tone_hz(), user);
    if leaves == Leaves::Agent {
        // Freed for the ACD, as after a transfer.
        cti.event("1002 after leaving", |e| {
            e["type"] == "agent.state" && e["agent"] == "1002" && e["state"] != "on_call"
        });
    }
    cti.ok(json!({"type": "call.hangup", "call": call}));
    cti.call_event(&call, "call.cleared");
    let record = get_eventually(&a, &format!("/v1/calls/{call}"));
    let transfers = u64::from(leaves == Leaves::Agent);
    assert_eq!(record["transfers"], transfers, "{record}");

    let (caller, phones) = finish(caller, vec![agent_phone, consulted_phone]);
    assert_runs_succeeded(
        &a,
        &[
            ("customer", &caller),
            ("agent 1002", &phones[0]),
            ("consulted 1003", &phones[1]),
        ],
    );
    // Nobody was re-INVITEd: the conference is mixed by the appliance.
    for (who, run) in [("customer", &caller), ("agent", &phones[0])] {
        let invites = run.received_requests("INVITE").len();
        let expected = usize::from(who == "agent");
        assert_eq!(invites, expected, "{who}: {}", run.trace());
    }
    a.stop();
}

#[test]
fn a_conference_mixes_all_three_and_the_agent_leaving_leaves_customer_and_colleague() {
    conference(Leaves::Agent);
}

#[test]
fn a_conference_the_consulted_colleague_leaves_is_the_customer_and_agent_again() {
    conference(Leaves::Consulted);
}
