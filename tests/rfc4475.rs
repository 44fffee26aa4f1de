//! RFC 4475 torture messages against the running appliance over UDP, for both
//! I/O drivers (io_uring and epoll), peer: a raw UDP socket.
//!
//! Each of the 49 messages in tests/data/rfc4475 is sent once, from its own
//! fresh socket, and its answer is checked against the handling table in
//! tests/data/rfc4475/README.md (status from the first line; the Call-ID must
//! be the message's own; extra headers where the RFC asks for them). "No
//! answer" is proven without waiting for silence: an OPTIONS sent right after
//! on the same socket must be the only thing answered. Afterwards the
//! appliance still answers OPTIONS and exits 0 on SIGTERM.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::{Appliance, Driver, HANG, Options, RFC4475_DIR, SipMsg, UdpPeer, options_request};

/// Expected handling from tests/data/rfc4475/expected.txt: each message
/// with its acceptable statuses; empty = no answer at all.
fn expected() -> Vec<(String, Vec<u16>)> {
    let text =
        std::fs::read_to_string(format!("{RFC4475_DIR}/expected.txt")).expect("expected.txt");
    let rows: Vec<(String, Vec<u16>)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, codes) = l.split_once(' ').expect("name and codes");
            let codes = match codes.trim() {
                "-" => Vec::new(),
                c => c
                    .split(',')
                    .map(|x| x.parse().expect("status code"))
                    .collect(),
            };
            (name.to_string(), codes)
        })
        .collect();
    assert_eq!(rows.len(), 49, "expected.txt covers the 49 messages");
    rows
}

/// Checks specific to one message's answer; returns a problem, if any.
fn extra_check(name: &str, r: &SipMsg) -> Option<String> {
    match name {
        "bext01" => {
            let u = r.headers_named("Unsupported");
            (u.is_empty() || !u.iter().any(|v| v.contains("nothingSupportsThis")))
                .then(|| format!("420 must list the unknown option tags in Unsupported, got {u:?}"))
        }
        "invut" | "sdp01" => {
            let a = r.headers_named("Accept");
            (!a.iter().any(|v| v.contains("application/sdp")))
                .then(|| format!("{} must carry Accept: application/sdp, got {a:?}", r.start))
        }
        "regaut01" | "escnull" | "dblreq" | "cparam01" | "cparam02" | "regescrt" => {
            let c = r.headers_named("WWW-Authenticate");
            (c.is_empty() || !c.iter().all(|v| v.starts_with("Digest ")))
                .then(|| format!("401 must carry Digest challenges, got {c:?}"))
        }
        _ => None,
    }
}

/// Sends one message and returns a description of what went wrong, if
/// anything.
fn check_one(a: &Appliance, name: &str, want: &[u16], n: usize) -> Option<String> {
    let data = std::fs::read(format!("{RFC4475_DIR}/{name}.dat"))
        .unwrap_or_else(|e| panic!("read {name}.dat: {e}"));
    let own_call_id = SipMsg::parse(&data).and_then(|m| m.call_id().map(str::to_string));
    let peer = UdpPeer::new();
    let to = a.udp_addr();
    peer.send(to, &data);
    let deadline = Instant::now() + HANG;

    let mut answer: Option<SipMsg> = None;
    if !want.is_empty() {
        // The answer must come (REGISTERs may cross to another shard, so it
        // may follow a probe's answer: wait for it first). An INVITE gets
        // 100 Trying before its final answer.
        loop {
            let Some(d) = peer.recv(deadline) else {
                return Some(format!("{name}: no answer, expected {want:?}"));
            };
            let Some(r) = SipMsg::parse(&d) else {
                return Some(format!(
                    "{name}: unparsable answer {:?}",
                    String::from_utf8_lossy(&d)
                ));
            };
            if r.status() != Some(100) {
                answer = Some(r);
                break;
            }
        }
    }

    // Probe: everything before the probe's 200 belongs to the message.
    let probe_id = format!("probe-{n}-{}", common::unique());
    peer.send(
        to,
        options_request(&probe_id, "UDP", peer.local()).as_bytes(),
    );
    loop {
        let Some(d) = peer.recv(deadline) else {
            return Some(format!(
                "{name}: the OPTIONS probe after it was not answered"
            ));
        };
        let m = SipMsg::parse(&d);
        if m.as_ref().and_then(SipMsg::call_id) == Some(probe_id.as_str()) {
            let st = m.as_ref().and_then(SipMsg::status);
            if st != Some(200) {
                return Some(format!("{name}: probe answered {st:?}"));
            }
            break;
        }
        match &answer {
            // A retransmission of the same final answer is fine.
            Some(first) if first.raw == d => {}
            // So is a 100 Trying retransmitted for a retransmitted INVITE.
            Some(_) if m.as_ref().and_then(SipMsg::status) == Some(100) => {}
            Some(first) => {
                return Some(format!(
                    "{name}: a second, different answer: {:?} after {:?}",
                    m.map(|m| m.start),
                    first.start
                ));
            }
            None => {
                return Some(format!(
                    "{name}: expected no answer, got {:?}",
                    String::from_utf8_lossy(&d).lines().next().unwrap_or("")
                ));
            }
        }
    }

    let r = answer?;
    let Some(status) = r.status() else {
        return Some(format!("{name}: answer is not a response: {}", r.start));
    };
    if !want.contains(&status) {
        return Some(format!(
            "{name}: got {} ({status}), expected {want:?}",
            r.start
        ));
    }
    if let Some(cid) = &own_call_id
        && r.call_id() != Some(cid.as_str())
    {
        return Some(format!(
            "{name}: answer carries Call-ID {:?}, the message had {cid:?}",
            r.call_id()
        ));
    }
    extra_check(name, &r).map(|p| format!("{name}: {p}"))
}

fn torture(driver: Driver) {
    let expected = expected();
    let files = std::fs::read_dir(RFC4475_DIR)
        .expect("tests/data/rfc4475")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dat"))
        })
        .count();
    assert_eq!(files, 49, "49 .dat files in {RFC4475_DIR}");

    // Messages whose transaction keys collide (RFC 3261 §17.2.3: same top
    // Via branch and sent-by, same method) would be a retransmission of one
    // another to a single appliance, so they go to separate rounds, each
    // against a fresh appliance.
    let mut rounds: Vec<Vec<(usize, &str, &[u16])>> = Vec::new();
    let mut keys: Vec<Vec<String>> = Vec::new();
    for (n, (name, want)) in expected.iter().enumerate() {
        let key = transaction_key(name);
        let round = match &key {
            Some(k) => keys.iter().position(|ks| !ks.contains(k)),
            None => Some(0),
        }
        .unwrap_or(keys.len());
        if round == keys.len() {
            keys.push(Vec::new());
            rounds.push(Vec::new());
        }
        if let Some(k) = key {
            keys[round].push(k);
        }
        rounds[round].push((n, name.as_str(), want.as_slice()));
    }

    let mut problems = Vec::new();
    for round in &rounds {
        // All cores: REGISTERs go to their user's home shard over the mesh.
        // INVITEs answered with an error and never ACKed must not hold the
        // drain: the default drain timeout is kept.
        let mut a = Appliance::start(Options::new(driver).all_cores());
        let mut round_problems = Vec::new();
        for (n, name, want) in round {
            if let Some(p) = check_one(&a, name, want, *n) {
                round_problems.push(p);
            }
            a.assert_running();
        }
        a.assert_alive();
        let stderr_tail = a.stderr_tail();
        let s = a.stop();
        let expected_400 = round.iter().filter(|(_, _, w)| *w == [400]).count() as u64;
        assert!(
            s.counters.get("responses out", "400") >= expected_400,
            "400 counter below the {expected_400} messages answered 400\n{}",
            s.tail()
        );
        if expected_400 > 0 {
            assert!(
                s.counters.total("parse_errors_total") >= 1,
                "parse errors counted\n{}",
                s.tail()
            );
        }
        if !round_problems.is_empty() {
            round_problems.push(stderr_tail);
        }
        problems.extend(round_problems);
    }
    assert!(
        problems.is_empty(),
        "RFC 4475 messages not handled as expected ({driver:?}):\n  {}",
        problems.join("\n  ")
    );
}

/// RFC 3261 §17.2.3 server transaction key of a message: top Via branch,
/// sent-by and method (INVITE and ACK together); `None` without a magic
/// cookie branch (RFC 2543 matching then also uses tags and Call-ID).
fn transaction_key(name: &str) -> Option<String> {
    let data = std::fs::read(format!("{RFC4475_DIR}/{name}.dat")).ok()?;
    let m = SipMsg::parse(&data)?;
    let method = m.start.split(' ').next()?.to_string();
    let via = m.header("Via")?.to_ascii_lowercase();
    let sent_by = via
        .split(';')
        .next()?
        .split_whitespace()
        .nth(1)?
        .to_string();
    let branch = via
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))?
        .to_string();
    if !branch.starts_with("z9hg4bk") {
        return None;
    }
    let class = if method == "ACK" {
        "INVITE".to_string()
    } else {
        method
    };
    Some(format!("{branch} {sent_by} {class}"))
}

#[test]
fn rfc4475_torture_io_uring() {
    torture(Driver::IoUring);
}

#[test]
fn rfc4475_torture_epoll() {
    torture(Driver::Epoll);
}
