//! Media through the appliance, against real peers.
//!
//! SIPp plays its own captures (speech in G.711 A-law, then RFC 2833
//! digits) as user 1001 calling 1002; the phone 1002 is SIPp answering with
//! `-rtp_echo`, which sends every RTP packet back. tshark captures the
//! appliance's RTP port range on `lo` and its RTP analysis checks that the
//! streams ran through the appliance's ports and that the appliance added
//! no loss and no sequence error; the call record names the digits, and
//! the call's recording is a stereo WAV as long as the call.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::phones::{Phone, appliance, assert_runs_succeeded, call, finish};
use common::{Appliance, Driver, Options, require_tool, wav_files};
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
