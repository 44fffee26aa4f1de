//! Shared harness for the real-peer integration tests.
//!
//! * [`Appliance`]: starts the real `switchboard` binary on its own loopback
//!   ports and data directory, waits until it answers `OPTIONS` on every
//!   listen address, and stops it with SIGTERM ([`Appliance::stop`] asserts
//!   exit status 0 and parses the `counters:` lines it prints).
//! * [`reserve_ports`]: ports no other test process uses (flock-claimed,
//!   probed free for UDP and TCP).
//! * [`UdpPeer`], [`TcpPeer`], [`SipMsg`]: a tiny raw SIP client.
//! * [`Sipp`]: runs SIPp in the foreground against the appliance, or in
//!   the background ([`Sipp::spawn`], e.g. a phone answering calls) from a
//!   fixed port, optionally with a parsed message trace.
//! * [`require_tool`]: a missing peer is a failure, never a skip.
//!
//! Every wait polls a condition with a deadline; nothing sleeps to pass time.
//! Nothing here sends to any address but 127.0.0.1.

#![allow(dead_code)]

pub mod cti;
pub mod phones;
pub mod receiver;
pub mod rtp;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The appliance binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// The demo config the tests start from.
pub const DEMO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/default.toml");
/// Folder of SIPp scenarios.
pub const SIPP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");
/// RFC 4475 torture messages.
pub const RFC4475_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");

/// Loopback only.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long the harness waits for a condition before declaring a hang.
/// Generous on purpose: this box is shared; it detects hangs, it does not
/// measure speed.
pub const HANG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

/// Fails (never skips) when a peer program is not installed.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(tool);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    });
    assert!(
        found,
        "`{tool}` is not installed (not found on PATH). `make test` installs the test peers \
         (Debian packages sip-tester for sipp, baresip); run `make test` or install it yourself. \
         A missing peer is a failure, not a skip."
    );
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A block of consecutive loopback ports claimed for this test process.
///
/// Claimed with `flock` on a per-port lock file, so no two test processes
/// (nextest runs each test in its own process) get the same port while the
/// block lives — important because the appliance binds with SO_REUSEPORT and
/// two appliances on one port would silently share it. Each port was also
/// probed free for UDP and TCP when claimed.
pub struct PortBlock {
    pub base: u16,
    pub len: u16,
    _locks: Vec<File>,
}

impl PortBlock {
    pub fn port(&self, i: u16) -> u16 {
        assert!(
            i < self.len,
            "port index {i} outside a block of {}",
            self.len
        );
        self.base + i
    }
}

fn lock_dir() -> PathBuf {
    let d = std::env::temp_dir().join("switchboard-test-ports");
    std::fs::create_dir_all(&d).expect("create the port lock directory");
    d
}

fn try_lock(port: u16) -> Option<File> {
    try_lock_name(&port.to_string())
}

fn try_lock_name(name: &str) -> Option<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir().join(format!("{name}.lock")))
        .ok()?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

fn probe_free(port: u16) -> bool {
    // 0.0.0.0 catches wildcard holders as well as 127.0.0.1 ones.
    UdpSocket::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A block of [`RTP_BLOCK`] ports (even base) for one appliance's
/// `media.rtp_ports`, claimed for the life of the returned block. Blocks
/// lie in 10000–32767, below the kernel's ephemeral range, so no
/// client socket lands in them by chance; the appliance skips any port of
/// its range that another program holds anyway. Each call starts its search
/// one block further on, so an appliance restarted within a test does not
/// wait for the kernel to let go of its predecessor's sockets.
pub fn reserve_rtp_block() -> PortBlock {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const BLOCKS: u32 = (32_768 - FIRST) / RTP_BLOCK as u32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
    for i in 0..BLOCKS {
        let base = (FIRST + ((start + i) % BLOCKS) * u32::from(RTP_BLOCK)) as u16;
        if let Some(l) = try_lock_name(&format!("rtp-{base}")) {
            return PortBlock {
                base,
                len: RTP_BLOCK,
                _locks: vec![l],
            };
        }
    }
    panic!("every RTP port block is taken");
}

/// RTP/RTCP ports each test appliance gets (64 pairs per shard of two).
pub const RTP_BLOCK: u16 = 256;

/// `n` consecutive ports, each free for UDP and TCP and claimed for the life
/// of the returned block. They lie above the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default), so no client
/// socket of another test — an HTTP request, a WebSocket, an outgoing TCP
/// connection, whose local port the kernel picks from that range — can take
/// one between the reservation and its bind (baresip once failed to bind
/// its SIP port that way). Where the ephemeral range leaves no room above
/// it, the base comes from the kernel's own free-port choice instead.
pub fn reserve_ports(n: u16) -> PortBlock {
    use std::sync::atomic::{AtomicU32, Ordering};
    assert!(n >= 1);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let first = ephemeral_end().map_or(u32::MAX, |end| end + 1);
    let room = 65_536u32.saturating_sub(first + u32::from(n));
    if room >= 64 {
        let start = std::process::id()
            .wrapping_mul(97)
            .wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed));
        for i in 0..room {
            let base = (first + (start.wrapping_add(i) % room)) as u16;
            if let Some(block) = try_block(base, n) {
                return block;
            }
        }
    }
    for _ in 0..500 {
        let Ok(s) = UdpSocket::bind(("127.0.0.1", 0)) else {
            continue;
        };
        let Ok(addr) = s.local_addr() else { continue };
        drop(s);
        let base = addr.port();
        if u32::from(base) + u32::from(n) > 65535 {
            continue;
        }
        if let Some(block) = try_block(base, n) {
            return block;
        }
    }
    panic!("could not reserve {n} consecutive free loopback ports");
}

/// The last port of the kernel's ephemeral range.
fn ephemeral_end() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().nth(1)?.parse().ok()
}

/// Ports `base..base + n` if each is free and not claimed, claimed now.
fn try_block(base: u16, n: u16) -> Option<PortBlock> {
    let mut locks = Vec::new();
    for p in base..base + n {
        match try_lock(p) {
            Some(l) if probe_free(p) => locks.push(l),
            _ => return None,
        }
    }
    Some(PortBlock {
        base,
        len: n,
        _locks: locks,
    })
}

// ---------------------------------------------------------------------------
// The appliance
// ---------------------------------------------------------------------------

/// `shell.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Auto,
    IoUring,
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// How to start the appliance. `cores` is the TOML value of `node.cores`.
#[derive(Debug, Clone)]
pub struct Options {
    pub driver: Driver,
    pub cores: String,
    pub udp: bool,
    pub tcp: bool,
    pub sets: Vec<String>,
}

impl Options {
    /// UDP and TCP on one port, one shard (on the first CPU this process
    /// may use).
    pub fn new(driver: Driver) -> Self {
        Options {
            driver,
            cores: format!("[{}]", first_cpu()),
            udp: true,
            tcp: true,
            sets: Vec::new(),
        }
    }

    /// One shard per CPU (`node.cores="all"`): exercises the shard mesh.
    pub fn all_cores(mut self) -> Self {
        self.cores = "\"all\"".into();
        self
    }

    /// An extra `--set KEY=VALUE` (applied after the harness's own).
    pub fn set(mut self, kv: &str) -> Self {
        self.sets.push(kv.to_string());
        self
    }
}

/// The first CPU in this process's affinity mask (so `taskset` works).
pub fn first_cpu() -> usize {
    let mask = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .expect("read the CPU affinity mask");
    (0..nix::sched::CpuSet::count())
        .find(|&c| mask.is_set(c).unwrap_or(false))
        .expect("at least one CPU")
}

/// Counters printed at shutdown, by group (`requests in`, `responses out`,
/// `parse errors`, `totals`, ...) and name.
#[derive(Debug, Clone, Default)]
pub struct Counters(pub HashMap<String, HashMap<String, u64>>);

impl Counters {
    /// Parses every `counters: GROUP: k=v k=v` line (the log prefix before
    /// `counters:` is ignored; `none` means an empty group).
    pub fn parse(stderr: &str) -> Counters {
        let mut c = Counters::default();
        for line in stderr.lines() {
            let Some(pos) = line.find("counters: ") else {
                continue;
            };
            let rest = &line[pos + "counters: ".len()..];
            let Some((group, items)) = rest.split_once(':') else {
                continue;
            };
            let map = c.0.entry(group.trim().to_string()).or_default();
            for item in items.split_whitespace() {
                if let Some((k, v)) = item.split_once('=')
                    && let Ok(v) = v.parse::<u64>()
                {
                    map.insert(k.to_string(), v);
                }
            }
        }
        c
    }

    /// One counter; 0 when the group lists no such entry. Panics when the
    /// group itself was never printed (the report is missing).
    pub fn get(&self, group: &str, name: &str) -> u64 {
        let g = self.0.get(group).unwrap_or_else(|| {
            panic!(
                "no `counters: {group}:` line in the shutdown report (groups seen: {:?})",
                self.0.keys().collect::<Vec<_>>()
            )
        });
        g.get(name).copied().unwrap_or(0)
    }

    pub fn total(&self, name: &str) -> u64 {
        self.get("totals", name)
    }
}

/// What `stop` hands back: the full stderr and the parsed counters.
#[derive(Debug)]
pub struct Stopped {
    pub stderr: String,
    pub counters: Counters,
    /// The stopped appliance's data directory (recordings, database),
    /// removed when this is dropped.
    pub data_dir: tempfile::TempDir,
}

impl Stopped {
    pub fn tail(&self) -> String {
        tail(&self.stderr, 40)
    }
}

/// The last `n` lines of a log, for assertion messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- appliance stderr (last {} lines) ---\n{}\n---",
        lines.len() - from,
        lines[from..].join("\n")
    )
}

/// A running appliance. Dropping it kills the process if still running.
pub struct Appliance {
    child: Option<Child>,
    pub port: u16,
    pub cti_port: u16,
    /// `media.rtp_ports` of this instance (a block of its own).
    pub rtp_ports: (u16, u16),
    pub driver: Driver,
    pub data_dir: tempfile::TempDir,
    stderr_path: PathBuf,
    _ports: PortBlock,
    _rtp: PortBlock,
}

/// Why an attempt to start did not reach "ready".
enum StartFailure {
    /// Another socket took our port between claim and bind: retry.
    PortTaken(String),
    Fatal(String),
}

impl Appliance {
    /// Starts the appliance and waits until it is ready (OPTIONS answered
    /// 200 on every listen address, `switchboard ready` logged with the
    /// requested driver). Retries with new ports on a bind conflict.
    pub fn start(opts: Options) -> Appliance {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&opts) {
                Ok(a) => return a,
                Err(StartFailure::PortTaken(log)) => last = log,
                Err(StartFailure::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "the appliance could not bind its ports in 5 attempts\n{}",
            tail(&last, 40)
        );
    }

    fn try_start(opts: &Options) -> Result<Appliance, StartFailure> {
        let ports = reserve_ports(2);
        let port = ports.port(0);
        let cti_port = ports.port(1);
        let rtp = reserve_rtp_block();
        let rtp_ports = (rtp.base, rtp.base + RTP_BLOCK - 1);
        let data_dir = tempfile::Builder::new()
            .prefix("switchboard-test-")
            .tempdir()
            .expect("create a temporary data directory");
        let stderr_path = data_dir.path().join("appliance.stderr");
        let stderr_file = File::create(&stderr_path).expect("create the stderr log file");
        let mut listen = Vec::new();
        if opts.udp {
            listen.push(format!("\"udp:127.0.0.1:{port}\""));
        }
        if opts.tcp {
            listen.push(format!("\"tcp:127.0.0.1:{port}\""));
        }
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            DEMO_CONFIG.into(),
            "--set".into(),
            format!("sip.listen=[{}]", listen.join(",")),
            "--set".into(),
            format!(
                "node.data_dir={:?}",
                data_dir.path().join("var").display().to_string()
            ),
            "--set".into(),
            format!("cti.listen=\"127.0.0.1:{cti_port}\""),
            "--set".into(),
            format!("node.cores={}", opts.cores),
            "--set".into(),
            format!("shell.driver=\"{}\"", opts.driver.name()),
            "--set".into(),
            format!("media.rtp_ports=\"{}-{}\"", rtp_ports.0, rtp_ports.1),
        ];
        for s in &opts.sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let mut a = Appliance {
            child: Some(child),
            port,
            cti_port,
            rtp_ports,
            driver: opts.driver,
            data_dir,
            stderr_path,
            _ports: ports,
            _rtp: rtp,
        };
        match a.wait_ready(opts) {
            Ok(()) => Ok(a),
            Err(e) => {
                a.kill();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, opts: &Options) -> Result<(), StartFailure> {
        let deadline = Instant::now() + HANG;
        let early_exit = |a: &mut Appliance| -> Option<StartFailure> {
            let status = a.child.as_mut()?.try_wait().ok()??;
            let log = a.stderr();
            if log.contains("cannot bind") || log.contains("cannot listen") {
                return Some(StartFailure::PortTaken(log));
            }
            Some(StartFailure::Fatal(format!(
                "the appliance exited before it was ready ({status})\n{}",
                tail(&log, 40)
            )))
        };
        if opts.udp {
            let peer = UdpPeer::new();
            let mut n = 0u32;
            loop {
                if let Some(f) = early_exit(self) {
                    return Err(f);
                }
                if Instant::now() > deadline {
                    return Err(StartFailure::Fatal(format!(
                        "the appliance did not answer OPTIONS over UDP within {HANG:?}\n{}",
                        tail(&self.stderr(), 40)
                    )));
                }
                n += 1;
                let call_id = format!("ready-udp-{n}-{}", std::process::id());
                peer.send(
                    self.udp_addr(),
                    options_request(&call_id, "UDP", peer.local()).as_bytes(),
                );
                // The receive timeout paces the probes.
                let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
                if let Some(r) = peer.recv_call(&call_id, until)
                    && r.status() == Some(200)
                {
                    break;
                }
            }
        }
        if opts.tcp {
            loop {
                if let Some(f) = early_exit(self) {
                    return Err(f);
                }
                if Instant::now() > deadline {
                    return Err(StartFailure::Fatal(format!(
                        "the appliance did not answer OPTIONS over TCP within {HANG:?}\n{}",
                        tail(&self.stderr(), 40)
                    )));
                }
                let Ok(mut c) = TcpPeer::connect(self.tcp_addr()) else {
                    // Not listening yet (paces the retry).
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let call_id = format!("ready-tcp-{}", std::process::id());
                c.send(options_request(&call_id, "TCP", c.local()).as_bytes());
                match c.recv_msg(deadline) {
                    Ok(Some(r)) if r.status() == Some(200) => break,
                    other => {
                        return Err(StartFailure::Fatal(format!(
                            "OPTIONS over TCP was not answered 200: {other:?}\n{}",
                            tail(&self.stderr(), 40)
                        )));
                    }
                }
            }
        }
        // The ready line is logged right after the shards start serving.
        let want_driver = format!("driver=\"{}\"", self.driver.name());
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| l.contains("switchboard ready")) {
                if self.driver != Driver::Auto && !line.contains(&want_driver) {
                    return Err(StartFailure::Fatal(format!(
                        "ready line does not name {want_driver}: {line}\n{}",
                        tail(&log, 40)
                    )));
                }
                return Ok(());
            }
            if let Some(f) = early_exit(self) {
                return Err(f);
            }
            if Instant::now() > deadline {
                return Err(StartFailure::Fatal(format!(
                    "no `switchboard ready` line within {HANG:?}\n{}",
                    tail(&log, 40)
                )));
            }
            // Paces the polling of the log file.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.port))
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("appliance running").id()
    }

    /// Everything the appliance wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr(), 40)
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("the appliance died: {status}\n{}", tail(&self.stderr(), 60));
        }
    }

    /// Resident memory in KiB (VmRSS from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// One OPTIONS over UDP from a fresh socket; panics unless answered 200.
    pub fn assert_alive(&mut self) {
        self.assert_running();
        let peer = UdpPeer::new();
        let call_id = format!("alive-{}", unique());
        let r = peer.request(
            self.udp_addr(),
            options_request(&call_id, "UDP", peer.local()).as_bytes(),
            &call_id,
        );
        match r {
            Some(r) if r.status() == Some(200) => {}
            other => panic!(
                "OPTIONS after the test was not answered 200: {:?}\n{}",
                other.map(|m| m.start),
                self.stderr_tail()
            ),
        }
    }

    /// SIGTERM, wait for the exit, assert status 0; returns the log and the
    /// counters it printed.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().expect("appliance running");
        // invariant: a child's pid fits i32.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            panic!("cannot send SIGTERM: {e}\n{}", self.stderr_tail());
        }
        // drain_timeout_s is at most 10 s in these tests; give it room.
        let deadline = Instant::now() + Duration::from_secs(40);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    wait_a_little(&mut child, deadline - Instant::now());
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the appliance did not exit after SIGTERM\n{}",
                        self.stderr_tail()
                    );
                }
            }
        };
        let stderr = self.stderr();
        assert!(
            status.success(),
            "the appliance exited with {status} after SIGTERM (expected 0)\n{}",
            tail(&stderr, 60)
        );
        let counters = Counters::parse(&stderr);
        assert!(
            counters.0.contains_key("totals"),
            "no counters printed at shutdown\n{}",
            tail(&stderr, 60)
        );
        let data_dir = std::mem::replace(
            &mut self.data_dir,
            tempfile::tempdir().expect("create a temporary directory"),
        );
        Stopped {
            stderr,
            counters,
            data_dir,
        }
    }

    /// SIGKILL, as a power cut or a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Blocks until the child exits or `max` passes, whichever is first: a
/// poll(2) on a pidfd, so it returns the moment the process ends.
fn wait_a_little(child: &mut Child, max: Duration) {
    wait_any(&[&*child], max);
}

/// Blocks until one of `children` exits or `max` passes, whichever is first
/// (poll(2) on their pidfds).
fn wait_any(children: &[&Child], max: Duration) {
    let mut fds = Vec::new();
    for c in children {
        // invariant: a child's pid fits pid_t.
        let pid = c.id() as libc::pid_t;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // invariant: file descriptors fit i32.
            fds.push(libc::pollfd {
                fd: fd as i32,
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }
    if fds.len() < children.len() {
        // No pidfd support (or the process is gone): pace the caller's
        // try_wait polling instead.
        for f in &fds {
            // SAFETY: closing fds we opened above.
            unsafe { libc::close(f.fd) };
        }
        std::thread::sleep(max.min(Duration::from_millis(10)));
        return;
    }
    let ms = i32::try_from(max.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: a valid array of pollfds; then we close the fds we own.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
        for f in &fds {
            libc::close(f.fd);
        }
    }
}

/// Waits for a child process with a deadline; kills it when the deadline
/// passes and returns `None`.
pub fn wait_child(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => {
                wait_a_little(child, deadline - Instant::now())
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A process-unique number for Call-IDs and tags.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// Raw SIP
// ---------------------------------------------------------------------------

/// A parsed SIP message (start line, headers, body) as received.
#[derive(Debug, Clone)]
pub struct SipMsg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

fn compact(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "i" => "call-id",
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "e" => "content-encoding",
        "s" => "subject",
        _ => name,
    }
}

impl SipMsg {
    /// Parses the header section (and whatever follows as the body).
    pub fn parse(raw: &[u8]) -> Option<SipMsg> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], raw.get(i + 4..).unwrap_or(&[]).to_vec()),
            None => (&text[..], Vec::new()),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for l in lines {
            if l.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(l.trim());
                }
                continue;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        Some(SipMsg {
            start,
            headers,
            body,
            raw: raw.to_vec(),
        })
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// All values of a header (compact forms understood), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let want = compact(name).to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| compact(n).eq_ignore_ascii_case(&want))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).first().copied()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0 ") {
            return None;
        }
        self.start.split(' ').next()
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split(' ').nth(1)
    }

    /// The method named in CSeq.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The `tag` parameter of a From or To header value.
    pub fn tag_of(&self, header: &str) -> Option<&str> {
        let v = self.header(header)?;
        // Parameters after the URI (after `>` when the URI is bracketed).
        let params = v.rsplit_once('>').map_or(v, |(_, p)| p);
        params.split(';').find_map(|p| {
            let (k, val) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("tag").then(|| val.trim())
        })
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An OPTIONS request from `local` (transport `UDP`/`TCP` in the Via).
pub fn options_request(call_id: &str, transport: &str, local: SocketAddr) -> String {
    format!(
        "OPTIONS sip:switchboard.local SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=t-{call_id}\r\n\
         To: <sip:switchboard.local>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A REGISTER for `user` with optional extra header lines (each ending CRLF).
pub fn register_request(
    user: &str,
    call_id: &str,
    cseq: u32,
    transport: &str,
    local: SocketAddr,
    extra: &str,
) -> String {
    format!(
        "REGISTER sip:switchboard.local SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@switchboard.local>;tag=t-{call_id}\r\n\
         To: <sip:{user}@switchboard.local>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{local};transport={}>\r\n\
         Expires: 300\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n",
        transport.to_ascii_lowercase()
    )
}

/// A UDP socket on 127.0.0.1 (kernel-chosen port).
pub struct UdpPeer {
    pub sock: UdpSocket,
}

impl Default for UdpPeer {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpPeer {
    pub fn new() -> Self {
        let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind a loopback UDP socket");
        UdpPeer { sock }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("local address")
    }

    /// Sends one datagram; only loopback destinations are allowed.
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        assert!(to.ip().is_loopback(), "tests only send to loopback");
        match self.sock.send_to(data, to) {
            Ok(_) => {}
            // Over the loopback MTU or the socket buffer: report, the caller
            // decides whether that matters.
            Err(e) => panic!("send of {} bytes to {to} failed: {e}", data.len()),
        }
    }

    /// The next datagram before `deadline`.
    pub fn recv(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => return Some(buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors surfaced on the socket: keep listening.
                Err(_) => continue,
            }
        }
    }

    /// The next response with this Call-ID before `deadline` (others are
    /// skipped).
    pub fn recv_call(&self, call_id: &str, deadline: Instant) -> Option<SipMsg> {
        loop {
            let d = self.recv(deadline)?;
            if let Some(m) = SipMsg::parse(&d)
                && m.call_id() == Some(call_id)
            {
                return Some(m);
            }
        }
    }

    /// Sends a request and returns the first final response for its Call-ID
    /// (provisional responses skipped), waiting at most [`HANG`].
    pub fn request(&self, to: SocketAddr, data: &[u8], call_id: &str) -> Option<SipMsg> {
        self.send(to, data);
        let deadline = Instant::now() + HANG;
        loop {
            let m = self.recv_call(call_id, deadline)?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
    }
}

/// A TCP connection to the appliance with SIP stream framing.
pub struct TcpPeer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpPeer {
    pub fn connect(to: SocketAddr) -> std::io::Result<TcpPeer> {
        assert!(to.ip().is_loopback(), "tests only connect to loopback");
        let stream = TcpStream::connect_timeout(&to, HANG)?;
        stream.set_nodelay(true)?;
        Ok(TcpPeer {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Writes all of `data`; errors are returned (the peer may have closed).
    pub fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data)
    }

    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data).expect("TCP write");
    }

    /// Reads more bytes before `deadline`: `Ok(0)` on EOF, `Err` on reset,
    /// `Err(TimedOut)` when the deadline passes.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let mut chunk = [0u8; 8192];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ErrorKind::TimedOut.into());
            };
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ErrorKind::TimedOut.into());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Raw bytes received so far and not yet consumed.
    pub fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// At least `n` raw bytes before `deadline` (or fewer on EOF/timeout).
    pub fn recv_raw(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.take_raw()
    }

    /// The next framed SIP message (headers + Content-Length body).
    /// `Ok(None)` on EOF; `Err` on reset or deadline.
    pub fn recv_msg(&mut self, deadline: Instant) -> std::io::Result<Option<SipMsg>> {
        loop {
            // Skip keep-alive CRLFs between messages.
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = SipMsg::parse(&self.buf[..end + 4]).expect("parse a response head");
                let len: usize = head
                    .header("Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let raw: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Ok(SipMsg::parse(&raw));
                }
            }
            if self.fill(deadline)? == 0 {
                return Ok(None);
            }
        }
    }

    /// Waits until the appliance closes the connection (EOF or reset).
    /// Returns a description of what happened instead, on failure.
    pub fn wait_closed(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    // Answers (e.g. 400/513) may precede the close; discard.
                    self.buf.clear();
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err("the connection was still open at the deadline".into());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(format!("unexpected read error: {e}")),
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// One SIPp run: scenario, target and arguments.
pub struct Sipp {
    scenario: PathBuf,
    target: SocketAddr,
    transport: &'static str,
    calls: u32,
    args: Vec<String>,
    timeout_s: u32,
    local_port: Option<u16>,
    trace_messages: bool,
}

/// What a SIPp run left behind.
#[derive(Debug)]
pub struct SippRun {
    pub status: ExitStatus,
    /// Killed by the harness (still running at its deadline, or when a
    /// run it waited for together with this one failed).
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
    /// The error log (`-trace_err`), empty when nothing unexpected happened.
    pub errors: String,
    /// Last row of the `-trace_stat` CSV, by column name.
    pub stats: HashMap<String, String>,
    /// Every message sent and received, in order (`-trace_msg`), when the
    /// run asked for [`Sipp::trace_messages`]; empty otherwise.
    pub messages: Vec<Traced>,
}

/// One message in a SIPp message trace.
#[derive(Debug, Clone)]
pub struct Traced {
    /// Sent by SIPp (else received).
    pub sent: bool,
    pub msg: SipMsg,
}

impl SippRun {
    pub fn stat(&self, column: &str) -> u64 {
        self.stats
            .get(column)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no numeric SIPp stat {column:?}\n{}", self.report()))
    }

    /// Everything useful for an assertion message.
    pub fn report(&self) -> String {
        format!(
            "sipp exit: {}{}\n--- sipp stdout (tail) ---\n{}\n--- sipp stderr ---\n{}\n--- sipp errors ---\n{}",
            self.status,
            if self.killed {
                " (killed by the harness: still running at its deadline or when another SIPp of the call failed)"
            } else {
                ""
            },
            tail_lines(&self.stdout, 30),
            tail_lines(&self.stderr, 20),
            tail_lines(&self.errors, 40)
        )
    }

    /// SIPp's own verdict: exit 0 = every call succeeded.
    pub fn assert_all_succeeded(&self, calls: u64, ctx: &str) {
        assert_eq!(
            self.status.code(),
            Some(0),
            "{ctx}: SIPp did not succeed on every call\n{}",
            self.report()
        );
        assert_eq!(
            self.stat("SuccessfulCall(C)"),
            calls,
            "{ctx}: successful calls\n{}",
            self.report()
        );
        assert_eq!(
            self.stat("FailedCall(C)"),
            0,
            "{ctx}: failed calls\n{}",
            self.report()
        );
    }

    /// Messages SIPp received, in order.
    pub fn received(&self) -> impl Iterator<Item = &SipMsg> {
        self.messages.iter().filter(|t| !t.sent).map(|t| &t.msg)
    }

    /// Messages SIPp sent, in order (retransmissions included).
    pub fn sent(&self) -> impl Iterator<Item = &SipMsg> {
        self.messages.iter().filter(|t| t.sent).map(|t| &t.msg)
    }

    /// The first request of `method` SIPp received; panics when none came.
    pub fn received_request(&self, method: &str) -> &SipMsg {
        self.received()
            .find(|m| m.method() == Some(method))
            .unwrap_or_else(|| panic!("SIPp received no {method}\n{}", self.trace()))
    }

    /// Every request of `method` SIPp received.
    pub fn received_requests(&self, method: &str) -> Vec<&SipMsg> {
        self.received()
            .filter(|m| m.method() == Some(method))
            .collect()
    }

    /// The first request of `method` SIPp sent; panics when none was sent.
    pub fn sent_request(&self, method: &str) -> &SipMsg {
        self.sent()
            .find(|m| m.method() == Some(method))
            .unwrap_or_else(|| panic!("SIPp sent no {method}\n{}", self.trace()))
    }

    /// Responses SIPp received to `method` (by CSeq), in order.
    pub fn received_responses(&self, method: &str) -> Vec<&SipMsg> {
        self.received()
            .filter(|m| m.status().is_some() && m.cseq_method() == Some(method))
            .collect()
    }

    /// Responses SIPp sent to `method` (by CSeq), in order.
    pub fn sent_responses(&self, method: &str) -> Vec<&SipMsg> {
        self.sent()
            .filter(|m| m.status().is_some() && m.cseq_method() == Some(method))
            .collect()
    }

    /// Start lines of the whole trace, for assertion messages.
    pub fn trace(&self) -> String {
        let mut s = String::from("--- sipp message trace (start lines) ---\n");
        for t in &self.messages {
            s.push_str(if t.sent { "  sent " } else { "  recv " });
            s.push_str(&t.msg.start);
            if let Some(c) = t.msg.header("CSeq") {
                s.push_str(&format!("   [CSeq: {c}]"));
            }
            s.push('\n');
        }
        s
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Sipp {
    /// `scenario` is a file name in tests/sipp; transport `u1` or `t1`.
    /// `target` is where a client scenario sends (a server scenario answers
    /// whoever sent to it, but SIPp still wants a remote host).
    pub fn new(scenario: &str, target: SocketAddr, transport: &'static str) -> Sipp {
        Sipp {
            scenario: Path::new(SIPP_DIR).join(scenario),
            target,
            transport,
            calls: 1,
            args: Vec::new(),
            timeout_s: 60,
            local_port: None,
            trace_messages: false,
        }
    }

    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    pub fn timeout_s(mut self, s: u32) -> Self {
        self.timeout_s = s;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// SIPp's own SIP port (`-p`), e.g. the port a phone registered from
    /// and then answers on. The caller keeps it reserved
    /// ([`reserve_ports`]); by default each run takes a fresh one.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// Record every message (`-trace_msg`) into [`SippRun::messages`].
    pub fn trace_messages(mut self) -> Self {
        self.trace_messages = true;
        self
    }

    /// Runs SIPp in the foreground to completion (it stops by itself after
    /// `-m` calls, or at `-timeout` with an error; the harness kills it if
    /// it outlives that by far).
    pub fn run(self) -> SippRun {
        let deadline = Instant::now() + Duration::from_secs(u64::from(self.timeout_s) + 30);
        self.spawn().wait(deadline)
    }

    /// Starts SIPp in the background: a server scenario (`uas`) answering
    /// while a client runs in the foreground. Wait for it with
    /// [`SippProc::wait`]; dropping the handle kills it.
    pub fn spawn(self) -> SippProc {
        require_tool("sipp");
        assert!(self.target.ip().is_loopback());
        // Own SIP port (UDP+TCP), control port, media ports (mp and mp+2).
        let ports = reserve_ports(6);
        let sip_port = self.local_port.unwrap_or(ports.port(0));
        let dir = tempfile::Builder::new()
            .prefix("switchboard-sipp-")
            .tempdir()
            .expect("create a SIPp work directory");
        let stat = dir.path().join("stat.csv");
        let errors = dir.path().join("errors.log");
        let messages = dir.path().join("messages.log");
        let stdout = File::create(dir.path().join("stdout")).expect("create SIPp's stdout file");
        let stderr = File::create(dir.path().join("stderr")).expect("create SIPp's stderr file");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(&self.scenario)
            .arg(self.target.to_string())
            .args(["-t", self.transport])
            .args(["-i", "127.0.0.1"])
            .args(["-p", &sip_port.to_string()])
            .args(["-cp", &ports.port(1).to_string()])
            .args(["-mp", &ports.port(2).to_string()])
            .args(["-m", &self.calls.to_string()])
            .args([
                "-timeout",
                &format!("{}s", self.timeout_s),
                "-timeout_error",
            ])
            .arg("-nostdin")
            .arg("-nd")
            .arg("-trace_stat")
            .arg("-stf")
            .arg(&stat)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors);
        if self.trace_messages {
            cmd.arg("-trace_msg").arg("-message_file").arg(&messages);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sipp: {e}"));
        SippProc {
            child: Some(child),
            dir,
            sip_port,
            transport: self.transport,
            scenario: self.scenario,
            _ports: ports,
        }
    }
}

/// A SIPp process running in the background. Dropping it kills SIPp.
pub struct SippProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The SIP port it listens on (`-p`).
    pub sip_port: u16,
    transport: &'static str,
    scenario: PathBuf,
    _ports: PortBlock,
}

impl SippProc {
    /// Where it takes SIP messages.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.sip_port))
    }

    /// Waits until SIPp has bound its SIP port (UDP) or listens on it (TCP),
    /// as the kernel reports in /proc/net — no probing bind that could steal
    /// the port. Panics with SIPp's output if it exits first or takes longer
    /// than [`HANG`].
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + HANG;
        let table = if self.transport.starts_with('t') {
            "/proc/net/tcp"
        } else {
            "/proc/net/udp"
        };
        loop {
            if port_bound(table, self.sip_port) {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "SIPp ({}) exited before it listened on port {}\n{}",
                    self.scenario.display(),
                    self.sip_port,
                    self.collect(status, false).report()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "SIPp ({}) did not bind port {} within {HANG:?}",
                    self.scenario.display(),
                    self.sip_port
                );
            }
            // Paces the polling of /proc/net.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until SIPp's message trace (it must run with
    /// [`Sipp::trace_messages`]) holds `needle`, e.g. the ACK it sent: the
    /// call has reached that point. Panics after [`HANG`].
    pub fn wait_traced(&mut self, needle: &str) {
        let deadline = Instant::now() + HANG;
        let path = self.dir.path().join("messages.log");
        loop {
            let text = std::fs::read(&path).unwrap_or_default();
            if find(&text, needle.as_bytes()).is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SIPp ({}) never traced {needle:?} within {HANG:?}",
                self.scenario.display()
            );
            // Paces the polling of the trace file.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for SIPp to exit by itself; kills it at `deadline` (then
    /// [`SippRun::killed`] is set). Returns what it left behind.
    pub fn wait(mut self, deadline: Instant) -> SippRun {
        let mut child = self.child.take().expect("SIPp running");
        match wait_child(&mut child, deadline) {
            Some(status) => self.collect(status, false),
            // wait_child killed and reaped it.
            None => {
                let status = child.wait().expect("the exit status of the killed SIPp");
                self.collect(status, true)
            }
        }
    }

    /// Waits for several SIPp processes (the two or three ends of a call):
    /// returns when all have exited; as soon as one fails (exits non-zero),
    /// or at `deadline`, the others are killed — their peer will not come.
    /// Runs are returned in the order given.
    pub fn wait_all(procs: Vec<SippProc>, deadline: Instant) -> Vec<SippRun> {
        let mut procs = procs;
        let mut done: Vec<Option<(ExitStatus, bool)>> = vec![None; procs.len()];
        loop {
            for (p, d) in procs.iter_mut().zip(done.iter_mut()) {
                if d.is_none()
                    && let Some(c) = p.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    *d = Some((status, false));
                }
            }
            let failed = done.iter().flatten().any(|(s, _)| !s.success());
            let all = done.iter().all(Option::is_some);
            if all {
                break;
            }
            if failed || Instant::now() >= deadline {
                for (p, d) in procs.iter_mut().zip(done.iter_mut()) {
                    if d.is_none()
                        && let Some(c) = p.child.as_mut()
                    {
                        let _ = c.kill();
                        let status = c.wait().expect("the exit status of the killed SIPp");
                        *d = Some((status, true));
                    }
                }
                break;
            }
            let running: Vec<&Child> = procs
                .iter()
                .zip(done.iter())
                .filter(|(_, d)| d.is_none())
                .filter_map(|(p, _)| p.child.as_ref())
                .collect();
            wait_any(&running, deadline - Instant::now());
        }
        procs
            .iter_mut()
            .zip(done)
            .map(|(p, d)| {
                let (status, killed) = d.expect("every process ended");
                p.child = None;
                p.collect(status, killed)
            })
            .collect()
    }

    fn collect(&self, status: ExitStatus, killed: bool) -> SippRun {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        SippRun {
            status,
            killed,
            stdout: read("stdout").unwrap_or_default(),
            stderr: read("stderr").unwrap_or_default(),
            errors: read("errors.log").unwrap_or_default(),
            stats: read("stat.csv")
                .map(|t| parse_sipp_csv(&t))
                .unwrap_or_default(),
            messages: std::fs::read(self.dir.path().join("messages.log"))
                .map(|b| parse_sipp_messages(&b))
                .unwrap_or_default(),
        }
    }
}

impl Drop for SippProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take()
            && let Ok(None) = c.try_wait()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether /proc/net/{udp,tcp} lists a socket bound to 127.0.0.1 or the
/// wildcard on `port` (listening, for TCP).
fn port_bound(table: &str, port: u16) -> bool {
    let tcp = table.ends_with("tcp");
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    let want = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    text.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 3 && want.iter().any(|w| cols[1] == w) && (!tcp || cols[3] == "0A")
    })
}

/// A `-trace_msg` log: entries start with a line of dashes and a time
/// stamp, then `UDP message sent (N bytes):` or `TCP message received [N]
/// bytes :`, a blank line and exactly N bytes of message.
fn parse_sipp_messages(log: &[u8]) -> Vec<Traced> {
    const SEP: &[u8] = b"----------------------------------------------- ";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&log[i..], SEP) {
        let start = i + at;
        let Some(nl1) = find(&log[start..], b"\n").map(|n| start + n + 1) else {
            break;
        };
        let Some(nl2) = find(&log[nl1..], b"\n").map(|n| nl1 + n + 1) else {
            break;
        };
        let what = String::from_utf8_lossy(&log[nl1..nl2]).into_owned();
        // The blank line after the description.
        let body_at = nl2 + usize::from(log.get(nl2) == Some(&b'\n'));
        let len: Option<usize> = what
            .split(['(', '['])
            .nth(1)
            .and_then(|r| r.split([')', ']']).next())
            .and_then(|n| n.split_whitespace().next()?.parse().ok());
        let sent = what.contains(" sent ");
        match len {
            Some(n) if what.contains(" message ") && body_at + n <= log.len() => {
                if let Some(msg) = SipMsg::parse(&log[body_at..body_at + n]) {
                    out.push(Traced { sent, msg });
                }
                i = body_at + n;
            }
            _ => i = nl2,
        }
    }
    out
}

/// The last data row of a SIPp `-trace_stat` CSV, keyed by the header row.
fn parse_sipp_csv(text: &str) -> HashMap<String, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return HashMap::new();
    };
    let Some(last) = lines.next_back() else {
        return HashMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Digest (RFC 7616) for raw-socket registrations
// ---------------------------------------------------------------------------

/// `key="value"` / `key=value` parameters of a `Digest ...` challenge.
pub fn digest_params(challenge: &str) -> HashMap<String, String> {
    let body = challenge
        .trim()
        .strip_prefix("Digest")
        .unwrap_or(challenge)
        .trim();
    let mut out = HashMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.insert(key, value.to_string());
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

fn hash_hex(algorithm: &str, data: &str) -> String {
    use sha2::Digest;
    if algorithm.eq_ignore_ascii_case("SHA-256") {
        hex::encode(sha2::Sha256::digest(data.as_bytes()))
    } else {
        hex::encode(md5::Md5::digest(data.as_bytes()))
    }
}

/// An `Authorization` header line (with CRLF) answering `challenge` with
/// qop=auth for a REGISTER to `sip:switchboard.local`.
pub fn authorization(challenge: &str, user: &str, password: &str, nc: u32) -> String {
    let p = digest_params(challenge);
    let algorithm = p.get("algorithm").cloned().unwrap_or_else(|| "MD5".into());
    let realm = p.get("realm").cloned().unwrap_or_default();
    let nonce = p.get("nonce").cloned().unwrap_or_default();
    let uri = "sip:switchboard.local";
    let cnonce = "0a4f113b";
    let nc = format!("{nc:08x}");
    let ha1 = hash_hex(&algorithm, &format!("{user}:{realm}:{password}"));
    let ha2 = hash_hex(&algorithm, &format!("REGISTER:{uri}"));
    let response = hash_hex(
        &algorithm,
        &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"),
    );
    let mut h = format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}, cnonce=\"{cnonce}\", \
         qop=auth, nc={nc}"
    );
    if let Some(o) = p.get("opaque") {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    h.push_str("\r\n");
    h
}

// ---------------------------------------------------------------------------
// baresip
// ---------------------------------------------------------------------------

/// Starts baresip with its config folder `dir` (also its HOME), stdin piped
/// for menu commands; every line it prints on stdout or stderr arrives on
/// the receiver.
pub fn spawn_baresip(dir: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start baresip: {e}"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// Every `.wav` under `dir`.
pub fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "wav") {
                out.push(p);
            }
        }
    }
    out
}

/// Stops a tshark child so that its capture child (dumpcap) goes too:
/// SIGTERM lets tshark stop dumpcap and exit; SIGKILL of tshark alone
/// would leave dumpcap capturing on `lo` (slowing every later test and
/// benchmark on the box).
pub fn stop_tshark(child: &mut Child) {
    // invariant: a child's pid fits i32.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if wait_child(child, Instant::now() + Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
