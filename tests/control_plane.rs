//! The control plane of the real binary over HTTP (`cti.listen`):
//! `/healthz` answers 200 with JSON, `/metrics` exposes the shards'
//! counters and the ACD's queues and agents in the Prometheus text format, and a port already taken stops
//! the start with an error naming `cti.listen`.

// Test code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Appliance, BIN, Driver, Options, UdpPeer, options_request, unique};

/// One HTTP/1.1 GET on a fresh connection: (status, content type, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the control plane");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[test]
fn healthz_and_metrics_are_served_on_cti_listen() {
    let a = Appliance::start(Options::new(Driver::Epoll));
    let (status, ctype, body) = get(a.cti_port, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    // Two OPTIONS of ours (besides the harness's readiness probes) are
    // counted; the figure only grows.
    let before = options_received(&get(a.cti_port, "/metrics").2);
    let peer = UdpPeer::new();
    for _ in 0..2 {
        let call_id = unique();
        let req = options_request(&call_id, "UDP", peer.local());
        let resp = peer.request(a.udp_addr(), req.as_bytes(), &call_id);
        assert_eq!(resp.and_then(|r| r.status()), Some(200));
    }
    let (status, ctype, text) = get(a.cti_port, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert_eq!(options_received(&text), before + 2, "{text}");
    assert!(
        text.lines()
            .any(|l| l == "# TYPE switchboard_calls_active gauge"),
        "{text}"
    );
    // The ACD's figures: the demo's queues, and its ten agents, logged
    // out while no phone is registered.
    for line in [
        "switchboard_queue_waiting{queue=\"support\"} 0",
        "switchboard_queue_offered_total{queue=\"sales\"} 0",
        "switchboard_agents{state=\"logged_out\"} 10",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let (status, _, _) = get(a.cti_port, "/nowhere");
    assert_eq!(status, 404);
    a.stop();
}

fn options_received(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("switchboard_sip_requests_received_total{method=\"OPTIONS\"} ")
        })
        .map_or(0, |v| v.parse().expect("a count"))
}

#[test]
fn a_taken_cti_port_stops_the_start_with_an_error_naming_cti_listen() {
    let a = Appliance::start(Options::new(Driver::Epoll));
    // A second appliance on other SIP ports but the first one's CTI port.
    let sip = common::reserve_ports(1);
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            common::DEMO_CONFIG,
            "--set",
            &format!("sip.listen=[\"udp:127.0.0.1:{}\"]", sip.port(0)),
            "--set",
            &format!("cti.listen=\"127.0.0.1:{}\"", a.cti_port),
            "--set",
            &format!("node.data_dir={:?}", data.path().display().to_string()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second appliance");
    let status = common::wait_child(&mut child, Instant::now() + Duration::from_secs(20))
        .expect("the second appliance exits");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cti.listen 127.0.0.1:{}: cannot listen",
            a.cti_port
        )),
        "{err}"
    );
    a.stop();
}

/// With `cti.tls_cert` and `cti.tls_key` (a self-signed pair made by
/// `openssl`), the control plane speaks HTTPS only: curl reaches `/v1`
/// with the token over TLS, and a plain-HTTP request gets no answer.
#[test]
fn tls_certificate_and_key_make_the_control_plane_https() {
    common::require_tool("openssl");
    common::require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let a = Appliance::start(
        Options::new(Driver::Epoll)
            .set(&format!("cti.tls_cert={:?}", cert.display().to_string()))
            .set(&format!("cti.tls_key={:?}", key.display().to_string())),
    );
    let url = format!("https://127.0.0.1:{}/v1/agents", a.cti_port);
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "10"])
        .args(["-H", "Authorization: Bearer demo-token", &url])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("\"agents\""), "{body}");
    assert!(body.contains("\"1001\""), "{body}");
    // Plain HTTP on the TLS port is not served.
    let plain = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/healthz", a.cti_port))
        .output()
        .expect("run curl");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("\"status\":\"ok\""),
        "plain HTTP answered on the TLS port"
    );
    a.stop();
}
