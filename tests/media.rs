//! Media through the appliance, against real peers.
//!
//! SIPp plays its own captures (speech in G.711 A-law, then RFC 2833
//! digits) as user 1001 calling 1002; the phone 1002 is SIPp answering with
//! `-rtp_echo`, which sends every RTP packet back. tshark captures the
//! appliance's RTP port range on `lo` and its RTP analysis checks that the
//! streams ran through the appliance's ports and that the appliance added
//! no loss and no sequence error; the call record names the digits, and
//! the call's recording is a stereo WAV as long as the call.
//!
//! Hold: SIPp's caller holds (sendonly re-INVITE) and resumes a call to a
//! SIPp phone; the capture shows the phone hearing the configured hold
//! music in its codec as one continuous stream between the caller's
//! digits.
//!
//! Tone peers: 1001 calls 1002 with a TonePeer (tests/common/rtp.rs) as
//! each one's audio, a 440 Hz tone and a 1000 Hz one; each hears the
//! other's tone through the appliance and not its own.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::phones::{ABORT_UNEXPECTED, Phone, appliance, assert_runs_succeeded, call, finish};
use common::rtp::{ABSENT, LISTEN, TONE_AMPLITUDE, TonePeer, tone_level, traced_media_addr};
use common::{Appliance, Driver, Options, Sipp, require_tool, wav_files};
use switchboard::media::wav::{self, WavEncoding};

/// tshark writing the appliance's RTP ports on `lo` to a file.
struct RtpCapture {
    child: Child,
    file: PathBuf,
}

impl RtpCapture {
    fn start(a: &Appliance, dir: &Path) -> RtpCapture {
        require_tool("tshark");
        let file = dir.join("rtp.pcapng");
        let filter = format!("udp portrange {}-{}", a.rtp_ports.0, a.rtp_ports.1);
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-n", "-f", &filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tshark: {e}"));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("Capturing on") => break,
                Some(Ok(l)) => said.push(l),
                _ => {
                    common::stop_tshark(&mut child);
                    panic!("tshark did not start capturing: {}", said.join("\n"));
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        RtpCapture { child, file }
    }

    /// Stops the capture (SIGINT, so it writes everything out) and returns
    /// tshark's RTP stream analysis of it.
    fn finish(mut self) -> Vec<Stream> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + common::HANG;
        common::wait_child(&mut self.child, deadline).expect("tshark stops on SIGINT");
        let out = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&self.file)
            .args(["-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams"])
            .output()
            .expect("run tshark on the capture");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let streams: Vec<Stream> = text.lines().filter_map(Stream::parse).collect();
        assert!(!streams.is_empty(), "tshark found no RTP stream:\n{text}");
        streams
    }
}

impl Drop for RtpCapture {
    fn drop(&mut self) {
        common::stop_tshark(&mut self.child);
    }
}

/// One line of tshark's `rtp,streams` table.
#[derive(Debug, Clone)]
struct Stream {
    src_port: u16,
    dst_port: u16,
    ssrc: String,
    packets: i64,
    /// Missing sequence numbers, as tshark counts them.
    lost: i64,
}

impl Stream {
    /// `Start  End  Src IP  Src port  Dst IP  Dst port  SSRC  Payload…
    /// Pkts  Lost (x%)  …`; the payload column may be several words.
    fn parse(line: &str) -> Option<Stream> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = f.iter().position(|w| w.starts_with("0x"))?;
        let pct = f
            .iter()
            .position(|w| w.starts_with('(') && w.ends_with("%)"))?;
        if at < 4 || pct < at + 3 {
            return None;
        }
        Some(Stream {
            src_port: f[at - 3].parse().ok()?,
            dst_port: f[at - 1].parse().ok()?,
            ssrc: f[at].to_owned(),
            packets: f[pct - 2].parse().ok()?,
            lost: f[pct - 1].parse().ok()?,
        })
    }
}

fn media_test(driver: Driver) {
    require_tool("sipp");
    let a = appliance(Options::new(driver));
    let phone = Phone::start(&a, "1002", "media_uas_echo.xml", &["-rtp_echo"]);
    let capture = RtpCapture::start(&a, a.data_dir.path());
    let caller = call(&a, "media_uac_pcap.xml", "1002", "u1");
    let (caller, phones) = finish(caller, vec![phone]);
    assert_runs_succeeded(&a, &[("caller 1001", &caller), ("phone 1002", &phones[0])]);
    let streams = capture.finish();
    let ours = |p: u16| (a.rtp_ports.0..=a.rtp_ports.1).contains(&p);
    let table = format!("{streams:#?}");

    // Each party sends to one of our ports and hears from the other.
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = streams
            .iter()
            .map(|s| s.dst_port)
            .filter(|p| ours(*p))
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    assert_eq!(
        ports.len(),
        2,
        "two anchored ports (caller's, phone's)\n{table}"
    );
    let mut relayed_total = 0;
    for (i, &port) in ports.iter().enumerate() {
        let other = ports[1 - i];
        let into: Vec<&Stream> = streams.iter().filter(|s| s.dst_port == port).collect();
        let out: Vec<&Stream> = streams.iter().filter(|s| s.src_port == other).collect();
        let sum = |v: &[&Stream], f: fn(&Stream) -> i64| v.iter().map(|s| f(s)).sum::<i64>();
        // Speech (236 packets) and three key presses (10 packets each).
        assert!(
            sum(&into, |s| s.packets) >= 266,
            "all of it reached port {port}\n{table}"
        );
        assert_eq!(
            sum(&out, |s| s.packets),
            sum(&into, |s| s.packets),
            "what reached port {port} left port {other}\n{table}"
        );
        // The digits' captures have gaps of their own between key presses;
        // the appliance adds none.
        assert_eq!(
            sum(&out, |s| s.lost),
            sum(&into, |s| s.lost),
            "no loss added between port {port} and port {other}\n{table}"
        );
        // Speech then digits (two SSRCs in) go out as one stream.
        assert_eq!(
            out.len(),
            1,
            "one continuous stream out of port {other}\n{table}"
        );
        assert_eq!(
            out[0].ssrc, "0xDEE0EE8F",
            "the speech capture's SSRC, kept when the digits start\n{table}"
        );
        relayed_total += sum(&out, |s| s.packets);
    }

    let stopped = a.stop();
    let log = stopped.tail();
    assert!(
        stopped.stderr.contains("digits=19#"),
        "the record names the digits 1, 9, #\n{log}"
    );
    assert_eq!(stopped.counters.total("rtp_malformed"), 0, "{log}");
    assert_eq!(stopped.counters.total("rtp_foreign"), 0, "{log}");
    // The phone's echo sends the digits back: they count as its own.
    assert!(stopped.stderr.contains("callee_digits=19#"), "{log}");
    assert_eq!(stopped.counters.total("dtmf_digits"), 6, "{log}");
    assert!(
        stopped.counters.total("rtp_relayed") as i64 >= relayed_total,
        "{log}"
    );
    assert_eq!(
        stopped.counters.total("media_legs"),
        0,
        "legs closed\n{log}"
    );

    // The recording: one stereo 8 kHz 16-bit WAV under YYYY/MM/DD, as long
    // as the call was connected (the record's talk time) within 100 ms.
    let talk_ms: i64 = field(&stopped.stderr, "talk_ms=").expect("talk_ms in the record");
    let root = stopped.data_dir.path().join("var").join("recordings");
    let files = wav_files(&root);
    assert_eq!(files.len(), 1, "one recording: {files:?}\n{log}");
    let rel = files[0]
        .strip_prefix(&root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let parts: Vec<&str> = rel.split('/').collect();
    assert!(
        parts.len() == 4 && parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2,
        "recordings/YYYY/MM/DD/<call-id>.wav, got {rel}"
    );
    let bytes = std::fs::read(&files[0]).unwrap();
    let info = wav::parse(&bytes).unwrap_or_else(|e| panic!("{rel} is not a WAV: {e}"));
    assert_eq!(info.format.channels, 2, "stereo");
    assert_eq!(info.format.sample_rate, 8000);
    assert_eq!(info.format.encoding, WavEncoding::Pcm16);
    let wav_ms = (info.data_len / 4 / 8) as i64;
    assert!(
        (wav_ms - talk_ms).abs() <= 100,
        "the recording lasts {wav_ms} ms, the call {talk_ms} ms"
    );
    // The caller's speech is on the left, the phone's echo of it on the right.
    let data = &bytes[info.data_offset..info.data_offset + info.data_len];
    let energy = |ch: usize| -> f64 {
        data.chunks_exact(4)
            .map(|f| f64::from(i16::from_le_bytes([f[2 * ch], f[2 * ch + 1]])).powi(2))
            .sum::<f64>()
            / (data.len() / 4) as f64
    };
    assert!(
        energy(0) > 1e4 && energy(1) > 1e4,
        "speech on both channels: {} {}",
        energy(0),
        energy(1)
    );
    assert_eq!(stopped.counters.get("recordings", "closed"), 1, "{log}");
    assert_eq!(
        stopped.counters.get("recordings", "write_errors"),
        0,
        "{log}"
    );
}

/// One RTP packet of a capture, as tshark decodes it.
#[derive(Debug)]
struct Packet {
    src_port: u16,
    ssrc: String,
    seq: u16,
    marker: bool,
    pt: u8,
    payload: Vec<u8>,
}

/// Every RTP packet the appliance sent from its ports, in capture order.
fn packets_from(file: &Path, ports: (u16, u16)) -> Vec<Packet> {
    let filter = format!(
        "rtp && udp.srcport >= {} && udp.srcport <= {}",
        ports.0, ports.1
    );
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-Y",
            &filter,
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "rtp.ssrc",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.marker",
        ])
        .args(["-e", "rtp.p_type", "-e", "rtp.payload"])
        .output()
        .expect("run tshark on the capture");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let hex: String = f.get(5)?.chars().filter(char::is_ascii_hexdigit).collect();
            let payload = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()?;
            Some(Packet {
                src_port: f[0].parse().ok()?,
                ssrc: f[1].to_owned(),
                seq: f[2].parse().ok()?,
                marker: matches!(f[3], "1" | "True" | "true"),
                pt: f[4].parse().ok()?,
                payload,
            })
        })
        .collect()
}

/// The caller puts the call on hold with a sendonly re-INVITE: the phone
/// hears the configured hold music (a 600 Hz tone here) from the
/// appliance, in its codec (A-law), as the same RTP stream it was hearing
/// — one SSRC, sequence numbers without a gap at either switch; the
/// caller resumes and the phone hears the caller again.
fn hold_music_test(driver: Driver) {
    require_tool("sipp");
    let dir = tempfile::tempdir().expect("temp dir");
    let music = dir.path().join("hold.wav");
    let tone: Vec<i16> = (0..8000)
        .map(|n| {
            (8000.0 * (2.0 * std::f64::consts::PI * 600.0 * f64::from(n) / 8000.0).sin()) as i16
        })
        .collect();
    let mut bytes = wav::pcm16_header(1, 8000, 16_000).to_vec();
    bytes.extend(tone.iter().flat_map(|s| s.to_le_bytes()));
    std::fs::write(&music, bytes).unwrap();
    let a = appliance(
        Options::new(driver)
            .set(&format!("prompts.hold={:?}", music.display().to_string()))
            .set("media.hold_music=\"hold\""),
    );
    let phone = Phone::start(&a, "1002", "media_uas_hold.xml", &[]);
    let capture = RtpCapture::start(&a, dir.path());
    let file = capture.file.clone();
    let caller = call(&a, "media_uac_hold.xml", "1002", "u1");
    let (caller, phones) = finish(caller, vec![phone]);
    assert_runs_succeeded(&a, &[("caller 1001", &caller), ("phone 1002", &phones[0])]);
    capture.finish();
    let sent = packets_from(&file, a.rtp_ports);
    let log = a.stop().tail();
    let table: String = sent
        .iter()
        .map(|p| {
            format!(
                "{} {} {} m={} pt={}\n",
                p.src_port, p.ssrc, p.seq, p.marker, p.pt
            )
        })
        .collect();

    // Only the phone's port sends (the phone itself sends nothing).
    let port = sent.first().expect("the appliance sent RTP").src_port;
    assert!(sent.iter().all(|p| p.src_port == port), "{table}{log}");
    assert!(
        sent.iter().all(|p| p.ssrc == sent[0].ssrc),
        "one SSRC: digit, music, digit\n{table}"
    );
    // The music: PCMA frames between the two digits, a marker on the
    // first frame of each switch, numbering without a gap.
    let music: Vec<&Packet> = sent.iter().filter(|p| p.pt == 8).collect();
    assert!(
        music.len() >= 60,
        "1.5 s of hold: {} frames\n{table}",
        music.len()
    );
    let first = sent.iter().position(|p| p.pt == 8).unwrap();
    let last = sent.iter().rposition(|p| p.pt == 8).unwrap();
    assert!(
        first > 0 && last + 1 < sent.len(),
        "digit 1, music, digit 9\n{table}"
    );
    assert_eq!(
        last - first + 1,
        music.len(),
        "the music is one run\n{table}"
    );
    for i in [first, last + 1] {
        assert!(
            sent[i].marker,
            "a marker where the source switches\n{table}"
        );
        assert_eq!(
            sent[i].seq,
            sent[i - 1].seq.wrapping_add(1),
            "no gap where the source switches\n{table}"
        );
    }
    for w in sent[first..=last].windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "{table}");
    }
    let mut pcm = Vec::new();
    for p in &music {
        let mut frame = vec![0i16; p.payload.len()];
        switchboard::media::g711::decode_alaw(&p.payload, &mut frame);
        pcm.extend(frame);
    }
    let (at_600, at_1000) = (tone_level(&pcm, 600.0), tone_level(&pcm, 1000.0));
    println!("hold music heard: amplitude {at_600:.1} at 600 Hz, {at_1000:.1} at 1000 Hz");
    assert!(
        at_600 > 5000.0 && at_1000 < 100.0,
        "the phone hears the 600 Hz music: {at_600:.1} / {at_1000:.1}"
    );
}

#[test]
fn hold_music_to_the_held_party_as_one_continuous_stream_io_uring() {
    hold_music_test(Driver::IoUring);
}

#[test]
fn hold_music_to_the_held_party_as_one_continuous_stream_epoll() {
    hold_music_test(Driver::Epoll);
}

/// The integer after `key` in `text` (first occurrence).
fn field(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn sipp_pcap_speech_and_digits_through_the_appliance_io_uring() {
    media_test(Driver::IoUring);
}

#[test]
fn sipp_pcap_speech_and_digits_through_the_appliance_epoll() {
    media_test(Driver::Epoll);
}

/// A killed appliance leaves a recording that already plays (its header
/// is at most about a second behind); the next start repairs the header to
/// the audio on disk.
#[test]
fn a_recording_cut_by_kill_9_plays_and_is_repaired_at_the_next_start() {
    require_tool("sipp");
    let data = tempfile::tempdir().expect("temp dir");
    let var = data.path().join("var");
    let data_dir = format!("node.data_dir={:?}", var.display().to_string());
    let mut a = appliance(Options::new(Driver::IoUring).set(&data_dir));
    let phone = Phone::start(&a, "1002", "media_uas_echo.xml", &["-rtp_echo"]);
    let _caller = call(&a, "media_uac_pcap.xml", "1002", "u1");
    // Wait for 3 s of audio on disk, then cut the power.
    let root = var.join("recordings");
    let deadline = Instant::now() + common::HANG;
    let file = loop {
        let found = wav_files(&root)
            .into_iter()
            .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 44 + 3 * 32000));
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no recording grew\n{}",
            a.stderr_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    a.kill();
    drop(phone);
    let bytes = std::fs::read(&file).unwrap();
    let cut = wav::parse(&bytes).expect("the cut recording is a WAV that plays");
    assert!(cut.data_len >= 2 * 32000, "its header names at least 2 s");

    let b = appliance(Options::new(Driver::IoUring).set(&data_dir));
    let log = b.stop();
    assert!(
        log.stderr.contains("recording left open repaired"),
        "{}",
        log.tail()
    );
    let bytes = std::fs::read(&file).unwrap();
    let fixed = wav::parse(&bytes).unwrap();
    assert_eq!(
        fixed.data_len,
        (bytes.len() - 44) / 4 * 4,
        "the header names all the audio on disk"
    );
    assert!(fixed.data_len >= cut.data_len);
}

/// 1001 calls 1002, each party's audio a TonePeer: the caller sends 440 Hz,
/// the phone 1000 Hz. Each peer is told the appliance's media address from
/// the SDP its SIPp received; each hears the other's tone (filling the
/// listening window, so whatever came before is out of it) and not its own
/// beyond a leak. The phone hangs up after 8 s; both runs succeed.
#[test]
fn tone_peers_hear_each_other_through_the_appliance_and_not_themselves() {
    require_tool("sipp");
    let a = appliance(Options::new(Driver::Auto));
    let caller_tone = TonePeer::start(440.0);
    let phone_tone = TonePeer::start(1000.0);
    let phone_rtp = phone_tone.port().to_string();
    let phone = Phone::start(
        &a,
        "1002",
        "tone_phone_hangs_up.xml",
        &["-set", "rtp", &phone_rtp],
    );
    let caller = Sipp::new("tone_caller.xml", a.udp_addr(), "u1")
        .trace_messages()
        .args(&["-s", "1002", "-set", "rtp", &caller_tone.port().to_string()])
        .args(ABORT_UNEXPECTED)
        .spawn();
    // The phone's 8 s before its BYE are for all of this.
    let deadline = Instant::now() + std::time::Duration::from_secs(6);
    phone_tone.send_to(traced_media_addr(&phone.proc, deadline));
    caller_tone.send_to(traced_media_addr(&caller, deadline));
    let steady = 0.9 * TONE_AMPLITUDE;
    let heard_1000 = caller_tone.wait_level(1000.0, steady, deadline);
    let heard_440 = phone_tone.wait_level(440.0, steady, deadline);
    let (own_440, own_1000) = (
        caller_tone.level(440.0, LISTEN),
        phone_tone.level(1000.0, LISTEN),
    );
    let freqs = [440.0, 1000.0];
    println!(
        "caller hears 1000 Hz at {heard_1000:.1}, its own 440 Hz at {own_440:.1}; \
         phone hears 440 Hz at {heard_440:.1}, its own 1000 Hz at {own_1000:.1}"
    );
    assert!(
        own_440 < ABSENT,
        "the caller hears itself: {}",
        caller_tone.spectrum(&freqs, LISTEN)
    );
    assert!(
        own_1000 < ABSENT,
        "the phone hears itself: {}",
        phone_tone.spectrum(&freqs, LISTEN)
    );
    let (caller, phones) = finish(caller, vec![phone]);
    assert_runs_succeeded(&a, &[("caller 1001", &caller), ("phone 1002", &phones[0])]);
    let stopped = a.stop();
    assert_eq!(
        stopped.counters.total("media_legs"),
        0,
        "legs closed\n{}",
        stopped.tail()
    );
}
