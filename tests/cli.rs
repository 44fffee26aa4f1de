//! The command line of the real binary (no network peer): `--version`,
//! `check-config` on the demo config (exit 0, `FILE: ok (...)`), on a broken
//! file (exit 1, one `file:line: key: message` line per problem: unknown key,
//! wrong type, bad address, RTP range overlapping the SIP port), on a TOML
//! syntax error and on a missing file; `--set` problems; a `[prompts]` file
//! that cannot be played; and `run` with a broken config or prompt refusing
//! to start before it binds or creates anything.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::time::Instant;

use common::{BIN, DEMO_CONFIG, HANG, reserve_ports, wait_child};

fn switchboard(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The problem lines of a refusal (the `run` banner line left out).
fn problem_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("switchboard: refusing"))
        .map(str::to_string)
        .collect()
}

#[test]
fn version() {
    let out = switchboard(&["--version"]);
    assert!(out.status.success(), "--version exit: {}", out.status);
    assert_eq!(text(&out.stdout).trim(), "switchboard 0.1.0");
}

#[test]
fn check_config_accepts_the_demo() {
    let out = switchboard(&["check-config", DEMO_CONFIG]);
    assert!(
        out.status.success(),
        "check-config on the demo: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{DEMO_CONFIG}: ok (")),
        "stdout: {stdout:?}"
    );
    assert!(stdout.contains("10 users"), "stdout: {stdout:?}");
    assert!(
        stdout
            .trim_end()
            .ends_with(", 28 prompts, 2 queues, 2 menus, 12 contacts)"),
        "the demo prompts, queues, menus and directory are loaded: {stdout:?}"
    );
}

/// Line numbers below refer to this text.
const BROKEN: &str = r#"[node]
cores = [0]
data_dir = "DATA_DIR"

[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:7000", "udp:999.1.2.3:5070"]
t1_ms = "fast"
timer = 5

[media]
rtp_ports = "5000-6000"
"#;

/// (line, key) of each problem in [`BROKEN`].
const BROKEN_PROBLEMS: &[(u32, &str)] = &[
    (6, "sip.listen[2]"),    // bad address
    (7, "sip.t1_ms"),        // wrong type
    (8, "sip.timer"),        // unknown key
    (11, "media.rtp_ports"), // contains SIP port 5060
];

fn write_broken(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let data_dir = dir.join("never-created");
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        BROKEN.replace("DATA_DIR", &data_dir.display().to_string()),
    )
    .expect("write broken.toml");
    (path.display().to_string(), data_dir)
}

fn assert_problems(file: &str, stderr: &str, expected: &[(u32, &str)]) {
    let lines = problem_lines(stderr);
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem, expected {expected:?}, got:\n{stderr}"
    );
    for (line, key) in expected {
        let prefix = format!("{file}:{line}: {key}: ");
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "no line starting {prefix:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_config_lists_every_problem_with_file_line_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, _) = write_broken(dir.path());
    let out = switchboard(&["check-config", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("ok"),
        "no `ok` on stdout: {}",
        text(&out.stdout)
    );
    assert_problems(&file, &text(&out.stderr), BROKEN_PROBLEMS);
}

#[test]
fn check_config_reports_set_problems() {
    let out = switchboard(&["check-config", DEMO_CONFIG, "--set", "sip.t4_ms=fast"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines = problem_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("--set sip.t4_ms: "), "{stderr}");
}

#[test]
fn check_config_reports_a_syntax_error_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("syntax.toml");
    std::fs::write(&path, "[node]\ncores = [0]\n\n[sip\nt1_ms = 5\n").expect("write");
    let file = path.display().to_string();
    let out = switchboard(&["check-config", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines = problem_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with(&format!("{file}:4: ")), "{stderr}");
}

#[test]
fn check_config_names_a_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("absent.toml").display().to_string();
    let out = switchboard(&["check-config", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&file), "names {file}: {stderr}");
}

#[test]
fn run_refuses_a_broken_config_before_binding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, stderr) = run_refused(dir.path(), "run-broken.toml", "t1_ms = \"fast\"", "");
    assert_problems(&file, &stderr, &[(7, "sip.t1_ms")]);
}

/// Writes `name` in `dir`, a config whose addresses are fine and ours (free
/// SIP and CTI ports) and whose data directory must never be created, with
/// `sip_line` as line 7 (in `[sip]`) and `tail` from line 11 on. Runs
/// `switchboard run` on it and checks that it refuses to start: exit 1
/// without binding the SIP port (held here, so a bind would fail and be
/// logged) or creating the data directory, with the same problem lines as
/// `check-config`. Returns the file and the run's stderr.
fn run_refused(dir: &std::path::Path, name: &str, sip_line: &str, tail: &str) -> (String, String) {
    let ports = reserve_ports(2);
    let (sip, cti) = (ports.port(0), ports.port(1));
    let data_dir = dir.join("never-created");
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[node]\ncores = [0]\ndata_dir = {:?}\n\n[sip]\n\
             listen = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\"]\n\
             {sip_line}\n\n[cti]\nlisten = \"127.0.0.1:{cti}\"\n{tail}",
            data_dir.display().to_string()
        ),
    )
    .expect("write");
    let file = path.display().to_string();
    let _udp = UdpSocket::bind(("127.0.0.1", sip)).expect("hold the UDP port");
    let _tcp = TcpListener::bind(("127.0.0.1", sip)).expect("hold the TCP port");

    let mut child = Command::new(BIN)
        .args(["run", "--config", &file])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start switchboard run");
    let status = wait_child(&mut child, Instant::now() + HANG)
        .expect("`run` with a broken config exits by itself");
    let out = child.wait_with_output().expect("output");
    let stderr = text(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to start"),
        "says it refuses: {stderr}"
    );
    for never in [
        "cannot bind",
        "cannot listen",
        "switchboard ready",
        "starting",
    ] {
        assert!(!stderr.contains(never), "{never:?} logged: {stderr}");
    }
    assert!(
        !data_dir.exists(),
        "node.data_dir was created by a refused start"
    );
    let check = switchboard(&["check-config", &file]);
    assert_eq!(
        problem_lines(&text(&check.stderr)),
        problem_lines(&stderr),
        "run and check-config report the same lines"
    );
    (file, stderr)
}

#[test]
fn a_prompt_that_cannot_be_played_is_refused_by_check_config_and_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "not audio").expect("write notes.txt");
    let (file, stderr) = run_refused(
        dir.path(),
        "prompts.toml",
        "",
        "\n[prompts]\nmusic = \"prompts/missing.wav\"\nnotes = \"notes.txt\"\n",
    );
    let expected = [(13, "prompts.music"), (14, "prompts.notes")];
    assert_problems(&file, &stderr, &expected);

    let check = switchboard(&["check-config", &file]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert_eq!(text(&check.stdout), "", "no `ok` line");
    let stderr = text(&check.stderr);
    assert_problems(&file, &stderr, &expected);
    // Relative files are looked for next to the config, and named in full.
    let missing = dir.path().join("prompts/missing.wav");
    assert!(
        stderr.contains(&format!(
            "prompts.music: cannot read {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("is not a playable WAV"), "{stderr}");
}
