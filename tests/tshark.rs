//! The wire as Wireshark sees it: tshark captures a run on loopback — SIPp
//! OPTIONS over UDP and TCP, SIPp digest REGISTERs (200 and 403), and a few
//! requests answered with 501/420/415 — and its SIP dissector must find every
//! message well formed (no expert item of severity error, which is how it
//! reports "Malformed Packet") and the answers where they belong.
//! Only well-formed requests are sent: a salvaged 400 echoes the sender's own
//! broken headers, which the dissector rightly calls malformed.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const SIPP_ALGORITHMS: &str = r#"registrar.digest_algorithms=["MD5","SHA-256"]"#;

#[test]
fn tshark_finds_no_malformed_sip() {
    require_tool("tshark");
    require_tool("sipp");
    let a = Appliance::start(Options::new(Driver::Auto).set(SIPP_ALGORITHMS));
    let port = a.udp_addr().port();

    // Live decode, one line per SIP frame: protocols | Call-ID | status | method.
    let mut cap = Command::new("tshark")
        .args(["-i", "lo", "-n", "-l", "-f"])
        .arg(format!("port {port}"))
        .args([
            "-d",
            &format!("udp.port=={port},sip"),
            "-d",
            &format!("tcp.port=={port},sip"),
        ])
        .args(["-Y", "sip", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.protocols",
            "-e",
            "sip.Call-ID",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.Method",
            "-e",
            "_ws.expert.severity",
            "-e",
            "_ws.expert.message",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tshark starts");
    // tshark says "Capturing on 'Loopback: lo'" once the capture runs.
    let mut err_lines = BufReader::new(cap.stderr.take().unwrap()).lines();
    loop {
        match err_lines.next() {
            Some(Ok(l)) if l.contains("Capturing on") => break,
            Some(Ok(_)) => {}
            _ => panic!("tshark did not start capturing"),
        }
    }
    std::thread::spawn(move || for _ in err_lines {});
    let (tx, rx) = mpsc::channel::<String>();
    let out = cap.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });

    for transport in ["u1", "t1"] {
        Sipp::new("options.xml", a.udp_addr(), transport)
            .calls(3)
            .run()
            .assert_all_succeeded(3, "OPTIONS");
    }
    Sipp::new("register_ok.xml", a.udp_addr(), "u1")
        .args(&["-s", "1001", "-au", "1001", "-ap", "pw1001"])
        .run()
        .assert_all_succeeded(1, "REGISTER 1001");
    Sipp::new("register_refused.xml", a.udp_addr(), "u1")
        .args(&["-s", "1002", "-au", "1002", "-ap", "nope"])
        .run()
        .assert_all_succeeded(1, "REGISTER wrong password");
    let peer = UdpPeer::new();
    let odd = [
        (
            "method",
            "FOO sip:switchboard.local SIP/2.0\r\n",
            "FOO",
            501,
        ),
        (
            "require",
            "OPTIONS sip:switchboard.local SIP/2.0\r\nRequire: foo\r\n",
            "OPTIONS",
            420,
        ),
        (
            "body",
            "OPTIONS sip:switchboard.local SIP/2.0\r\nContent-Type: text/plain\r\n",
            "OPTIONS",
            415,
        ),
        (
            "marker",
            "OPTIONS sip:switchboard.local SIP/2.0\r\n",
            "OPTIONS",
            200,
        ),
    ];
    let mut marker = String::new();
    for (name, start, method, want) in odd {
        let call_id = format!("{name}-{}", unique());
        let body = if want == 415 { "hello" } else { "" };
        let msg = format!(
            "{start}Via: SIP/2.0/UDP {};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:switchboard.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: {}\r\n\r\n{body}",
            peer.local(),
            body.len()
        );
        let r = peer
            .request(a.udp_addr(), msg.as_bytes(), &call_id)
            .expect("answer");
        assert_eq!(r.status(), Some(want), "{name}");
        marker = call_id;
    }

    // Read the decoded frames until the marker's answer has been seen.
    let mut frames: Vec<Vec<String>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("tshark never showed the marker's answer; saw {frames:?}"));
        let f: Vec<String> = line.split('|').map(str::to_string).collect();
        let done = f.get(1) == Some(&marker) && f.get(2).is_some_and(|s| s == "200");
        frames.push(f);
        if done {
            break;
        }
    }
    common::stop_tshark(&mut cap);
    let stopped = a.stop();

    let malformed: Vec<&Vec<String>> = frames
        .iter()
        // Wireshark marks a message it cannot dissect with an expert item
        // of severity "error" (PI_ERROR = 0x00800000): "Malformed Packet".
        .filter(|f| {
            f.get(4)
                .is_some_and(|sev| sev.split(',').any(|s| s == "8388608"))
        })
        .collect();
    assert!(
        malformed.is_empty(),
        "tshark found malformed SIP: {malformed:?}\n{}",
        stopped.tail()
    );
    let codes: Vec<&str> = frames
        .iter()
        .filter_map(|f| f.get(2))
        .map(String::as_str)
        .collect();
    for code in ["200", "401", "403", "501", "420", "415"] {
        assert!(codes.contains(&code), "no {code} on the wire: {codes:?}");
    }
    let methods: Vec<&str> = frames
        .iter()
        .filter_map(|f| f.get(3))
        .map(String::as_str)
        .collect();
    assert!(
        methods.iter().filter(|m| **m == "OPTIONS").count() >= 6,
        "{methods:?}"
    );
    assert!(methods.contains(&"REGISTER"), "{methods:?}");
}
