//! Two real softphones call each other through the appliance (issues #3, #4).
//!
//! baresip 1.0 (Debian) runs twice: A registers as 1001, B as 1002 (digest
//! MD5, as in tests/baresip.rs). A dials `sip:1002@switchboard.local` through
//! its outbound proxy, the appliance; B answers by itself
//! (`answermode=auto`). Each phone sends a sine tone from a WAV file the test
//! writes (A 1000 Hz, B 440 Hz, 8 kHz 16-bit mono, via the `aufile` source),
//! and records what it hears (the `sndfile` filter dumps the decoded audio
//! to `dump-...-dec.wav`). The codec is PCMU. The appliance anchors the
//! media: each phone's RTP goes to the appliance's ports, which relay it,
//! and the appliance records the call: its stereo WAV must hold A's tone on
//! the left (the caller's) channel and B's on the right.
//!
//! `baresip_opus_phone_and_pcmu_phone_hear_each_other`: A loads only the
//! Opus codec, B offers only PCMU. They share no codec, so the call works
//! only through the appliance's transcoding (Opus ↔ PCMU); the same audio
//! checks apply (A's own dump is 48 kHz stereo).
//!
//! Once both recordings hold 2 s of audio, A hangs up and both quit. A
//! Goertzel filter over the middle of each recording must find the other
//! phone's tone, at least 10× stronger than the phone's own tone and than an
//! unrelated frequency. tshark decodes the SIP of the whole run live on `lo`
//! and must find no malformed message, and INVITE, 200, ACK, BYE and 200 on
//! both legs (A → appliance → B), so the check is not vacuous; every SDP
//! address must be 127.0.0.1.
//!
//! `baresip_call_direct_without_appliance` (ignored) runs the same call
//! phone to phone, without the appliance: it checks the peers, the audio
//! path and the checks themselves when the appliance test fails.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::rtp::tone_level_at;
use common::{
    Appliance, Driver, HANG, LOCALHOST, Options, PortBlock, UdpPeer, require_tool, reserve_ports,
    spawn_baresip, unique, wait_child,
};

/// Sample rate of the tones and of PCMU.
const RATE: u32 = 8000;
/// What A (1001, the caller) sends.
const TONE_A: f64 = 1000.0;
/// What B (1002) sends.
const TONE_B: f64 = 440.0;
/// Neither phone sends this: the noise floor.
const TONE_OFF: f64 = 1700.0;
/// Peak amplitude of the tones (about -12 dBFS).
const AMPLITUDE: f64 = 8000.0;
/// Length of the tone files: far longer than any call here (the `aufile`
/// source of baresip 1.0 stops at the end of its file).
const TONE_SECONDS: u32 = 120;
/// Each phone must record this much audio before the call ends.
const HEARD_SAMPLES: usize = 2 * RATE as usize;
/// The heard tone must be this many times stronger (in energy) than the
/// phone's own tone and than the off frequency.
const DOMINANCE: f64 = 10.0;
/// The appliance's recording of the call: A's tone on the left channel,
/// B's on the right, each dominating the other tone and the off frequency.
fn assert_recording(s: &common::Stopped) {
    let root = s.data_dir.path().join("var").join("recordings");
    let files = common::wav_files(&root);
    assert_eq!(
        files.len(),
        1,
        "one recording under {}: {files:?}",
        root.display()
    );
    let bytes = std::fs::read(&files[0]).expect("read the recording");
    let info = switchboard::media::wav::parse(&bytes).expect("the recording is a WAV");
    assert_eq!((info.format.channels, info.format.sample_rate), (2, RATE));
    let data = &bytes[info.data_offset..info.data_offset + info.data_len];
    let channel = |c: usize| -> Vec<i16> {
        data.chunks_exact(4)
            .map(|f| i16::from_le_bytes([f[2 * c], f[2 * c + 1]]))
            .collect()
    };
    for (name, samples, tone, other) in [
        ("left (caller A)", channel(0), TONE_A, TONE_B),
        ("right (B)", channel(1), TONE_B, TONE_A),
    ] {
        assert!(
            samples.len() >= HEARD_SAMPLES,
            "{name}: {} samples",
            samples.len()
        );
        let mid = &samples[samples.len() / 4..samples.len() * 3 / 4];
        let (want, not, off) = (
            tone_level_at(mid, tone, f64::from(RATE)),
            tone_level_at(mid, other, f64::from(RATE)),
            tone_level_at(mid, TONE_OFF, f64::from(RATE)),
        );
        let verdict = format!(
            "recording {name}: amplitude {want:.1} at {tone} Hz, {not:.1} at {other} Hz, {off:.1} at {TONE_OFF} Hz"
        );
        eprintln!("{verdict}");
        assert!(
            want * want >= DOMINANCE * not * not && want * want >= DOMINANCE * off * off,
            "{verdict}: the channel's own party does not dominate"
        );
        assert!(want >= AMPLITUDE / 4.0, "{verdict}: too faint");
    }
}

/// Expert severity "error" (PI_ERROR): how tshark flags a malformed packet.
const PI_ERROR: &str = "8388608";

#[test]
fn baresip_call_io_uring() {
    call(
        Route::Appliance(Options::new(Driver::IoUring).all_cores()),
        [Codec::G711, Codec::G711],
    );
}

#[test]
fn baresip_call_epoll() {
    call(
        Route::Appliance(Options::new(Driver::Epoll)),
        [Codec::G711, Codec::G711],
    );
}

/// A speaks only Opus, B only PCMU: the appliance transcodes, and each
/// still hears the other (and the recording has both).
#[test]
fn baresip_opus_phone_and_pcmu_phone_hear_each_other() {
    call(
        Route::Appliance(Options::new(Driver::IoUring)),
        [Codec::Opus, Codec::Pcmu],
    );
}

/// What a phone may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// baresip's g711 module: PCMU and PCMA.
    G711,
    /// PCMU only.
    Pcmu,
    /// Opus only (48 kHz on the wire and in the phone's own recording).
    Opus,
}

impl Codec {
    /// The module line and the account's codec list.
    fn config(self) -> (&'static str, &'static str) {
        match self {
            Codec::G711 => ("module g711.so", ""),
            Codec::Pcmu => ("module g711.so", ";audio_codecs=PCMU/8000/1"),
            Codec::Opus => ("module opus.so", ";audio_codecs=opus/48000/2"),
        }
    }

    /// Sample rate of what the phone decodes (and dumps).
    fn rate(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => RATE,
        }
    }
}

/// The control: the same call phone to phone, no appliance. When the
/// tests above fail and this one passes, the fault is the appliance's, not
/// the phones', the capture's or the audio checks'.
#[test]
fn baresip_call_direct_without_appliance() {
    call(Route::Direct, [Codec::G711, Codec::G711]);
}

enum Route {
    /// Register with the appliance and call through it.
    Appliance(Options),
    /// No appliance: A dials B's address.
    Direct,
}

fn call(route: Route, codecs: [Codec; 2]) {
    require_tool("baresip");
    require_tool("tshark");
    let work = tempfile::Builder::new()
        .prefix("switchboard-baresip-call-")
        .tempdir()
        .expect("temp dir");
    let appliance = match &route {
        Route::Appliance(opts) => Some(Appliance::start(opts.clone())),
        Route::Direct => None,
    };
    // Phone ports: SIP, then RTP and RTCP (see `Phone::start`).
    let a_ports = reserve_ports(4);
    let b_ports = reserve_ports(4);
    // Receives the marker datagram that closes the capture.
    let marker_ports = reserve_ports(1);
    let marker_sock =
        UdpSocket::bind((LOCALHOST, marker_ports.port(0))).expect("bind the marker port");
    let a_sip = a_ports.port(0);
    let b_sip = b_ports.port(0);
    let appliance_port = appliance.as_ref().map(|a| a.port);
    let mut sip_ports = vec![a_sip, b_sip, marker_ports.port(0)];
    sip_ports.extend(appliance_port);
    let mut cap = Capture::start(&sip_ports);

    let account = |user: &str, codec: Codec| match &appliance {
        Some(a) => format!(
            "<sip:{user}@switchboard.local>;auth_pass=pw{user};outbound=\"sip:127.0.0.1:{}\";regint=300;answermode=auto{}",
            a.port,
            codec.config().1
        ),
        None => format!(
            "<sip:{user}@127.0.0.1>;regint=0;answermode=auto{}",
            codec.config().1
        ),
    };
    let mut phones = [
        Phone::start(
            "A",
            &account("1001", codecs[0]),
            codecs[0],
            TONE_A,
            &work.path().join("a"),
            a_ports,
        ),
        Phone::start(
            "B",
            &account("1002", codecs[1]),
            codecs[1],
            TONE_B,
            &work.path().join("b"),
            b_ports,
        ),
    ];
    let report = |phones: &[Phone; 2], appliance: &Option<Appliance>| -> String {
        format!(
            "{}\n{}\n{}",
            phones[0].output(),
            phones[1].output(),
            appliance
                .as_ref()
                .map(|a| a.stderr_tail())
                .unwrap_or_default()
        )
    };
    // Waits until each phone prints a line matching `want`; one matching
    // `abort` first fails at once.
    let expect_both = |phones: &mut [Phone; 2],
                       what: &str,
                       want: &dyn Fn(&str) -> bool,
                       abort: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + HANG;
        for i in [0, 1] {
            if let Err(e) = phones[i].wait_line(deadline, want, abort) {
                panic!(
                    "phone {}: no {what} ({e})\n{}",
                    phones[i].name,
                    report(phones, &appliance)
                );
            }
        }
    };

    if appliance.is_some() {
        expect_both(
            &mut phones,
            "registration (`200 OK ... binding`)",
            &|l| l.contains("200 OK") && l.contains("binding"),
            &|_| false,
        );
    }
    let target = match &appliance {
        Some(_) => "sip:1002@switchboard.local".to_string(),
        None => format!("sip:1002@127.0.0.1:{b_sip}"),
    };
    phones[0].cmd(&format!("/dial {target}"));
    expect_both(
        &mut phones,
        &format!("`Call established` after A dialled {target}"),
        &|l| l.contains("Call established"),
        // The call ended before it was set up (`session closed: 480 ...`).
        &|l| l.contains("session closed"),
    );

    // Audio flows until both recordings hold HEARD_SAMPLES (the phones'
    // output paces the polling).
    // 2 s of 16-bit mono at each phone's own rate.
    let want = |c: Codec| 44 + 4 * u64::from(c.rate());
    let want_bytes = want(codecs[0]).max(want(codecs[1]));
    let deadline = Instant::now() + HANG;
    loop {
        let sizes = [phones[0].recorded_bytes(), phones[1].recorded_bytes()];
        if sizes[0] >= want(codecs[0]) && sizes[1] >= want(codecs[1]) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the recordings did not reach {want_bytes} bytes within {HANG:?}: \
                 A {} bytes, B {} bytes\n{}",
                sizes[0],
                sizes[1],
                report(&phones, &appliance)
            );
        }
        for p in &mut phones {
            p.pump(Duration::from_millis(50));
        }
    }

    phones[0].cmd("/hangup");
    expect_both(
        &mut phones,
        "end of call after A hung up",
        &|l| l.contains("Call with") && l.contains("terminated"),
        &|_| false,
    );
    // `/quit` unregisters, then exits.
    for p in &mut phones {
        p.cmd("/quit");
    }
    for i in [0, 1] {
        if !phones[i].wait_exit() {
            panic!(
                "phone {} did not quit on /quit\n{}",
                phones[i].name,
                report(&phones, &appliance)
            );
        }
    }

    // Everything sent before the marker has been decoded once the marker has.
    let frames = cap.finish(&marker_sock);

    if let Some(mut a) = appliance {
        a.assert_alive();
        let s = a.stop();
        let c = &s.counters;
        assert!(c.total("registrations") >= 2, "{}", s.tail());
        assert_eq!(c.total("auth_failures"), 0, "{}", s.tail());
        assert!(c.get("requests in", "INVITE") >= 1, "{}", s.tail());
        assert!(c.get("requests in", "BYE") >= 1, "{}", s.tail());
        assert!(
            c.total("rtp_relayed") >= 2 * HEARD_SAMPLES as u64 / 160,
            "the audio ran through the appliance\n{}",
            s.tail()
        );
        assert_recording(&s);
    }

    // The wire: no malformed SIP; the call's INVITE, 200 and BYE on every
    // leg; SDP offering loopback only.
    let shown = || {
        frames
            .iter()
            .map(|f| f.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!("tshark decoded {} SIP frames", frames.len());
    let malformed: Vec<&str> = frames
        .iter()
        .filter(|f| f.severities.iter().any(|s| s == PI_ERROR))
        .map(|f| f.raw.as_str())
        .collect();
    assert!(
        malformed.is_empty(),
        "tshark found malformed SIP:\n{}\n--- all SIP frames ---\n{}",
        malformed.join("\n"),
        shown()
    );
    let legs: Vec<(u16, u16)> = match appliance_port {
        Some(ap) => vec![(a_sip, ap), (ap, b_sip)],
        None => vec![(a_sip, b_sip)],
    };
    for (from, to) in legs {
        let sent = |method: &str| {
            frames
                .iter()
                .any(|f| f.src == from && f.dst == to && f.method == method)
        };
        let ok_back = |method: &str| {
            frames.iter().any(|f| {
                f.src == to && f.dst == from && f.status == "200" && f.cseq_method == method
            })
        };
        for (what, seen) in [
            ("INVITE", sent("INVITE")),
            ("200 to the INVITE", ok_back("INVITE")),
            ("ACK", sent("ACK")),
            ("BYE", sent("BYE")),
            ("200 to the BYE", ok_back("BYE")),
        ] {
            assert!(
                seen,
                "no {what} on the leg {from} -> {to} in the capture\n--- all SIP frames ---\n{}",
                shown()
            );
        }
    }
    let sdp_addrs: Vec<&String> = frames.iter().flat_map(|f| &f.sdp_addrs).collect();
    assert!(
        !sdp_addrs.is_empty() && sdp_addrs.iter().all(|a| *a == "127.0.0.1"),
        "SDP connection addresses: {sdp_addrs:?}"
    );

    // The audio: each phone heard the other's tone, not its own.
    for (p, own, other) in [(&phones[0], TONE_A, TONE_B), (&phones[1], TONE_B, TONE_A)] {
        let path = p
            .recording()
            .unwrap_or_else(|| panic!("phone {} left no recording", p.name));
        let (rate, samples) = read_wav(&path);
        assert!(
            samples.len() >= HEARD_SAMPLES * (rate / RATE) as usize,
            "phone {}: {} samples recorded, want at least {HEARD_SAMPLES}",
            p.name,
            samples.len()
        );
        let mid = &samples[samples.len() / 4..samples.len() * 3 / 4];
        let heard = tone_level_at(mid, other, f64::from(rate));
        let itself = tone_level_at(mid, own, f64::from(rate));
        let off = tone_level_at(mid, TONE_OFF, f64::from(rate));
        let verdict = format!(
            "phone {} (sends {own} Hz) heard amplitude {heard:.1} at {other} Hz, \
             {itself:.1} at {own} Hz, {off:.1} at {TONE_OFF} Hz over {} samples",
            p.name,
            mid.len()
        );
        eprintln!("{verdict}");
        // Energy ratios: amplitude squared.
        assert!(
            heard * heard >= DOMINANCE * itself * itself && heard * heard >= DOMINANCE * off * off,
            "{verdict}: the other phone's tone does not dominate"
        );
        // The tone arrives at about its sent level (G.711 keeps it); a
        // quarter rules out a faint leak under silence.
        assert!(
            heard >= AMPLITUDE / 4.0,
            "{verdict}: the other phone's tone is too faint"
        );
    }
}

// ---------------------------------------------------------------------------
// A baresip phone
// ---------------------------------------------------------------------------

struct Phone {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    log: Vec<String>,
    dir: PathBuf,
    _ports: PortBlock,
}

impl Phone {
    /// Starts baresip in `dir` (created) with `account`, sending a sine of
    /// `tone_hz` and recording what it hears into `dir`. `ports`: SIP on
    /// the first port, RTP and RTCP on the next pair that starts even.
    fn start(
        name: &'static str,
        account: &str,
        codec: Codec,
        tone_hz: f64,
        dir: &Path,
        ports: PortBlock,
    ) -> Phone {
        std::fs::create_dir_all(dir).expect("phone dir");
        let tone = dir.join("tone.wav");
        // baresip's aufile source wants the codec's rate and channels.
        let (rate, channels) = match codec {
            Codec::Opus => (48000, 2),
            _ => (RATE, 1),
        };
        write_tone(&tone, tone_hz, TONE_SECONDS, rate, channels);
        // libre picks the RTP port as (min + rand % (max - min)) & ~1, RTCP
        // the next one: min even and max = min + 2 leave only min.
        let rtp = if ports.port(1).is_multiple_of(2) {
            ports.port(1)
        } else {
            ports.port(2)
        };
        assert!(rtp < ports.port(3));
        std::fs::write(dir.join("accounts"), format!("{account}\n")).expect("write accounts");
        // `net_interface lo` fails in baresip 1.0 ("could not get network
        // address"); the address works and puts 127.0.0.1 in the SDP.
        std::fs::write(
            dir.join("config"),
            format!(
                "sip_listen 127.0.0.1:{sip}\n\
                 net_interface 127.0.0.1\n\
                 rtp_ports {rtp}-{rtp_max}\n\
                 module_path /usr/lib/baresip/modules\n\
                 module stdio.so\n\
                 {codec_module}\n\
                 module aufile.so\n\
                 module aubridge.so\n\
                 module sndfile.so\n\
                 module account.so\n\
                 module_app menu.so\n\
                 audio_source aufile,{tone}\n\
                 audio_player aubridge,nil\n\
                 snd_path {dir}\n",
                sip = ports.port(0),
                codec_module = codec.config().0,
                rtp_max = rtp + 2,
                tone = tone.display(),
                dir = dir.display(),
            ),
        )
        .expect("write config");

        let (mut child, rx) = spawn_baresip(dir);
        Phone {
            name,
            stdin: child.stdin.take(),
            child,
            rx,
            log: Vec::new(),
            dir: dir.to_path_buf(),
            _ports: ports,
        }
    }

    /// A menu command (`/dial ...`, `/hangup`, `/quit`).
    fn cmd(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("baresip stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("phone {}: cannot send {line:?}: {e}", self.name));
    }

    /// Collects output for at most `max` (returns at the first line).
    fn pump(&mut self, max: Duration) {
        if let Ok(line) = self.rx.recv_timeout(max) {
            self.log.push(line);
        }
        while let Ok(line) = self.rx.try_recv() {
            self.log.push(line);
        }
    }

    /// Waits for an output line matching `want` (the next one: earlier
    /// lines were consumed by earlier waits); a line matching `abort`
    /// first is an error.
    fn wait_line(
        &mut self,
        deadline: Instant,
        want: &dyn Fn(&str) -> bool,
        abort: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if want(&line) {
                        self.log.push(line);
                        return Ok(());
                    }
                    if abort(&line) {
                        let e = format!("instead: {line}");
                        self.log.push(line);
                        return Err(e);
                    }
                    self.log.push(line);
                }
                Err(RecvTimeoutError::Timeout) => return Err(format!("none within {HANG:?}")),
                Err(RecvTimeoutError::Disconnected) => return Err("baresip exited".into()),
            }
        }
    }

    /// Closes stdin and waits for the exit; false if it had to be killed.
    fn wait_exit(&mut self) -> bool {
        let ok = wait_child(&mut self.child, Instant::now() + HANG).is_some();
        self.stdin = None;
        while let Ok(line) = self.rx.recv_timeout(Duration::ZERO) {
            self.log.push(line);
        }
        ok
    }

    /// The decoded audio sndfile dumps (`dump-<time>-dec.wav`).
    fn recording(&self) -> Option<PathBuf> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
    }

    fn recorded_bytes(&self) -> u64 {
        self.recording()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    fn output(&self) -> String {
        format!(
            "--- baresip {} output ---\n{}",
            self.name,
            self.log.join("\n")
        )
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        common::stop_tshark(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// tshark
// ---------------------------------------------------------------------------

/// One decoded SIP frame.
#[derive(Debug)]
struct Frame {
    src: u16,
    dst: u16,
    call_id: String,
    status: String,
    method: String,
    cseq_method: String,
    sdp_addrs: Vec<String>,
    severities: Vec<String>,
    raw: String,
}

/// tshark decoding SIP live on `lo`, one line per frame.
struct Capture {
    child: Child,
    rx: Receiver<String>,
}

impl Capture {
    /// Captures UDP and TCP on `ports`, each decoded as SIP.
    fn start(ports: &[u16]) -> Capture {
        let filter = ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut cmd = Command::new("tshark");
        cmd.args(["-i", "lo", "-n", "-l", "-f", &filter]);
        for p in ports {
            cmd.args(["-d", &format!("udp.port=={p},sip")]);
            cmd.args(["-d", &format!("tcp.port=={p},sip")]);
        }
        cmd.args(["-Y", "sip", "-T", "fields", "-E", "separator=|"]);
        for f in [
            "udp.srcport",
            "udp.dstport",
            "sip.Call-ID",
            "sip.Status-Code",
            "sip.Method",
            "sip.CSeq.method",
            "sdp.connection_info.address",
            "_ws.expert.severity",
            "_ws.expert.message",
        ] {
            cmd.args(["-e", f]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tshark: {e}"));
        // tshark says "Capturing on 'Loopback: lo'" once the capture runs.
        let mut err_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut said = Vec::new();
        loop {
            match err_lines.next() {
                Some(Ok(l)) if l.contains("Capturing on") => break,
                Some(Ok(l)) => said.push(l),
                _ => {
                    common::stop_tshark(&mut child);
                    panic!("tshark did not start capturing: {}", said.join("\n"));
                }
            }
        }
        std::thread::spawn(move || for _ in err_lines {});
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Capture { child, rx }
    }

    /// Sends a marker OPTIONS to `marker` (a captured port), reads frames
    /// until tshark shows it, stops tshark and returns the frames before it.
    fn finish(&mut self, marker: &UdpSocket) -> Vec<Frame> {
        let call_id = format!("marker-{}", unique());
        let to = marker.local_addr().expect("marker address");
        let peer = UdpPeer::new();
        peer.send(
            to,
            common::options_request(&call_id, "UDP", peer.local()).as_bytes(),
        );
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.rx.recv_timeout(left) else {
                panic!("tshark never showed the marker; saw:\n{frames:#?}");
            };
            let f = parse_frame(&line);
            if f.call_id == call_id {
                break;
            }
            frames.push(f);
        }
        common::stop_tshark(&mut self.child);
        frames
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        common::stop_tshark(&mut self.child);
    }
}

fn parse_frame(line: &str) -> Frame {
    let f: Vec<&str> = line.split('|').collect();
    let field = |i: usize| f.get(i).copied().unwrap_or("").to_string();
    let list = |i: usize| {
        f.get(i)
            .map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Frame {
        src: field(0).parse().unwrap_or(0),
        dst: field(1).parse().unwrap_or(0),
        call_id: field(2),
        status: field(3),
        method: field(4),
        cseq_method: field(5),
        sdp_addrs: list(6),
        severities: list(7),
        raw: line.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------

/// A WAV file (PCM, 16-bit, mono, RATE) holding a sine of `hz`.
fn write_tone(path: &Path, hz: f64, seconds: u32, rate: u32, channels: u16) {
    let n = rate * seconds;
    let data_len = n * 2 * u32::from(channels);
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(&switchboard::media::wav::pcm16_header(
        channels, rate, data_len,
    ));
    for i in 0..n {
        let t = f64::from(i) / f64::from(rate);
        // invariant: |AMPLITUDE| < i16::MAX.
        let s = (AMPLITUDE * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16;
        for _ in 0..channels {
            b.extend_from_slice(&s.to_le_bytes());
        }
    }
    std::fs::write(path, b).expect("write the tone WAV");
}

/// The rate and (first channel's) samples of a PCM 16-bit WAV at 8, 16
/// or 48 kHz (panics on anything else).
fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "{}: not a WAV file",
        path.display()
    );
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut pos = 12;
    let mut format = None;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let (fmt, channels, rate, bits) = (
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            );
            assert!(
                fmt == 1
                    && (1..=2).contains(&channels)
                    && [8000, 16000, 48000].contains(&rate)
                    && bits == 16,
                "{}: format {fmt}, {channels} channels, {rate} Hz, {bits} bits; \
                 want PCM mono or stereo at 8, 16 or 48 kHz, 16 bits",
                path.display()
            );
            format = Some((rate, usize::from(channels)));
        } else if id == b"data" {
            let Some((rate, channels)) = format else {
                panic!("{}: data before fmt", path.display());
            };
            // A writer that did not finish leaves the size short or zero:
            // take what is there.
            let end = if len == 0 {
                b.len()
            } else {
                (body + len).min(b.len())
            };
            let samples = b[body..end]
                .chunks_exact(2 * channels)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, samples);
        }
        pos = body + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}
