//! Fuzz target `cti_request`: the CTI protocol v1 request parser
//! (`cti::proto::parse_request`), which reads every WebSocket message a
//! CTI client sends (docs/cti.md).
//!
//! Input: the message's bytes, as a client would send them.
//!
//! Invariants checked (beyond "never panics"):
//! * an accepted request's `agent`, `call`, `to` and `digits` are non-empty,
//!   at most 128 characters and free of control characters;
//! * `digits` are DTMF keys only (0-9, *, #, A-D);
//! * disposition at most 128 characters, notes at most 4096;
//! * attached data has at most 64 entries with non-empty keys of at most
//!   128 bytes; `call.set_data` carries at least one;
//! * subscribe lists hold non-empty names of at most 128 bytes;
//! * the command's `agent()` / `call()` accessors agree with its fields;
//! * a refused request carries a non-empty message, and the parse is
//!   deterministic (same input, same answer).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::cti::proto::{Command, parse_request};

fn check_id(what: &str, s: &str) {
    assert!(!s.is_empty(), "{what} is empty");
    assert!(s.chars().count() <= 128, "{what} too long: {s:?}");
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "{what} has control characters: {s:?}"
    );
}

fn check_data(data: &[(String, String)]) {
    assert!(data.len() <= 64, "{} data entries", data.len());
    for (k, v) in data {
        assert!(!k.is_empty() && k.len() <= 128, "data key {k:?}");
        assert!(v.len() <= 128, "data value {v:?}");
        for s in [k, v] {
            assert!(
                !s.chars().any(|c| c.is_control() || c == ';' || c == '='),
                "data {s:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_request(data);
    assert_eq!(parsed, parse_request(data), "parse is not deterministic");
    let req = match parsed {
        Ok(r) => r,
        Err((_, e)) => {
            assert!(!e.message.is_empty(), "{e:?}");
            return;
        }
    };
    let cmd = &req.command;
    if let Some(a) = cmd.agent() {
        check_id("agent", a);
    }
    if let Some(c) = cmd.call() {
        check_id("call", c);
    }
    match cmd {
        Command::CallMake { to, data, .. } => {
            check_id("to", to);
            check_data(data);
        }
        Command::CallTransfer { to, .. } | Command::CallConsult { to, .. } => check_id("to", to),
        Command::CallSendDtmf { digits, .. } => {
            check_id("digits", digits);
            assert!(
                digits
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')),
                "digits {digits:?}"
            );
        }
        Command::CallSetData { data, .. } => {
            assert!(!data.is_empty(), "call.set_data without data");
            check_data(data);
        }
        Command::CallWrapUp {
            disposition, notes, ..
        } => {
            assert!(disposition.chars().count() <= 128, "{disposition:?}");
            assert!(notes.chars().count() <= 4096, "notes too long");
        }
        Command::Subscribe { agents, queues } => {
            for name in agents.iter().chain(queues.iter()).flatten() {
                assert!(!name.is_empty() && name.len() <= 128, "{name:?}");
            }
        }
        _ => {}
    }
    match cmd {
        Command::AgentLogin { .. }
        | Command::AgentLogout { .. }
        | Command::AgentSetState { .. }
        | Command::CallMake { .. } => assert!(cmd.agent().is_some() && cmd.call().is_none()),
        Command::Snapshot | Command::Subscribe { .. } => {
            assert!(cmd.agent().is_none() && cmd.call().is_none())
        }
        _ => assert!(cmd.call().is_some() && cmd.agent().is_none()),
    }
});
