//! A real softphone registers: baresip 1.0 (Debian) as user 1001/pw1001 with
//! digest auth against the appliance's default config (no algorithm
//! override: the appliance recognises baresip 1.x by its User-Agent and
//! challenges it with MD5 alone, see `registrar.md5_only_user_agents`), for
//! both I/O drivers. baresip must report `200 OK ... [1 binding]`; after it
//! quits, the appliance exits 0 on SIGTERM and its counters show the
//! registration and no authentication failure.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::time::Instant;

use common::{
    Appliance, Driver, HANG, Options, require_tool, reserve_ports, spawn_baresip, wait_child,
};

fn baresip_registers(opts: Options) {
    require_tool("baresip");
    let mut a = Appliance::start(opts);
    let ports = reserve_ports(2);
    let dir = tempfile::Builder::new()
        .prefix("switchboard-baresip-")
        .tempdir()
        .expect("temp dir");
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:1001@switchboard.local>;auth_pass=pw1001;outbound=\"sip:127.0.0.1:{}\";regint=300\n",
            a.port
        ),
    )
    .expect("write accounts");
    std::fs::write(
        dir.path().join("config"),
        format!(
            "sip_listen 127.0.0.1:{}\n\
             module_path /usr/lib/baresip/modules\n\
             module stdio.so\n\
             module g711.so\n\
             module account.so\n\
             module_app menu.so\n\
             audio_player aubridge,nil\n\
             audio_source aubridge,nil\n",
            ports.port(0)
        ),
    )
    .expect("write config");

    let (mut child, rx) = spawn_baresip(dir.path());

    let deadline = Instant::now() + HANG;
    let mut output = Vec::new();
    let mut registered = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("200 OK") && line.contains("binding");
                output.push(line);
                if done {
                    registered = true;
                    break;
                }
            }
            // Timed out, or baresip closed its output (exited).
            Err(_) => break,
        }
    }
    if !registered {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "baresip did not report `200 OK ... binding` ({:?})\n--- baresip output ---\n{}\n{}",
            a.driver,
            output.join("\n"),
            a.stderr_tail()
        );
    }

    // Quit from the menu (it unregisters first), else terminate.
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"q\n");
        let _ = stdin.flush();
    }
    if wait_child(&mut child, Instant::now() + HANG).is_none() {
        panic!(
            "baresip did not quit on `q`\n--- baresip output ---\n{}",
            output.join("\n")
        );
    }

    a.assert_alive();
    let s = a.stop();
    let c = &s.counters;
    assert!(
        c.total("registrations") >= 1,
        "baresip's REGISTER was accepted\n{}",
        s.tail()
    );
    assert!(
        c.total("auth_challenges") >= 1,
        "baresip was challenged\n{}",
        s.tail()
    );
    assert_eq!(
        c.total("auth_failures"),
        0,
        "baresip authenticated without failure\n{}",
        s.tail()
    );
    assert_eq!(c.get("responses out", "403"), 0, "{}", s.tail());
}

#[test]
fn baresip_registers_io_uring() {
    baresip_registers(Options::new(Driver::IoUring).all_cores());
}

#[test]
fn baresip_registers_epoll() {
    baresip_registers(Options::new(Driver::Epoll));
}
