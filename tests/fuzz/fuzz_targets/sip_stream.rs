//! Fuzz target `sip_stream`: the TCP stream framer (`sip::framing::StreamFramer`)
//! and the message parser over what it cuts (`Framing::Stream`).
//!
//! Input: the bytes of one TCP stream (e.g. an RFC 4475 message, or several
//! messages and CRLF keep-alives back to back). The stream is pushed in
//! chunks whose sizes, and the framer's `max_message_bytes`, are derived from
//! a hash of the input, so raw SIP seeds stay meaningful.
//!
//! Invariants checked (beyond "never panics"):
//! * after `next_frame` returns `Ok(None)`, `buffered() <= max` (memory is
//!   bounded by the limit, whatever the peer sends);
//! * every `Message` frame is at most `max` bytes, and frames are contiguous
//!   slices of the stream: only CR/LF bytes are skipped between them, and a
//!   `Ping` consumed a `\r\n\r\n`;
//! * framing does not depend on segmentation: the frames cut from the chunked
//!   stream equal those cut from the stream pushed at once, and either both or
//!   neither end in an error;
//! * every frame parses or fails (`Framing::Stream`) without panicking, and a
//!   parsed frame's body is no longer than the frame.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::sip::framing::{Frame, StreamFramer};
use switchboard::sip::message::{self, Framing, Limits};

// The harness's one clock read, a base for virtual time: the engines only
// ever see `now` values derived from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `SB_FUZZ_TOLERATE=crlf-frame` skips a known open finding while exploring.
fn tolerate(what: &str) -> bool {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| std::env::var("SB_FUZZ_TOLERATE").unwrap_or_default())
        .split(',')
        .any(|t| t == what)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Run {
    frames: Vec<Frame>,
    failed: bool,
}

fuzz_target!(|data: &[u8]| {
    let h = fnv(data);
    let max = [65535usize, 1300, 200][(h % 3) as usize];
    let chunk_seed = h >> 8;

    let whole = frame_all(data, max, &mut std::iter::once(data.len().max(1)));
    let mut state = chunk_seed | 1;
    let mut sizes = std::iter::from_fn(move || {
        // xorshift: chunk sizes 1..=97, mostly small.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Some(1 + (state % 97) as usize)
    });
    let chunked = frame_all(data, max, &mut sizes);

    let (mut chunked_frames, mut whole_frames) = (chunked.frames, whole.frames);
    if tolerate("crlf-frame") {
        // Known open issue (regressions/sip_stream/): a frame made only of
        // line ends appears for some segmentations. Skip it to look further.
        let junk = |f: &Frame| matches!(f, Frame::Message(m) if m.iter().all(|&c| c == b'\r' || c == b'\n'));
        chunked_frames.retain(|f| !junk(f));
        whole_frames.retain(|f| !junk(f));
    }
    assert_eq!(
        chunked_frames, whole_frames,
        "frames depend on how the stream was segmented"
    );
    assert_eq!(
        chunked.failed, whole.failed,
        "an error depends on how the stream was segmented"
    );

    let limits = Limits {
        max_message_bytes: max,
        ..Limits::default()
    };
    for f in &whole_frames {
        if let Frame::Message(m) = f
            && let Ok(parsed) = message::parse(m.clone(), Framing::Stream, &limits)
        {
            assert!(parsed.body.len() <= m.len());
        }
    }
});

/// Pushes `data` in chunks of `sizes` and drains frames after each push.
fn frame_all(data: &[u8], max: usize, sizes: &mut dyn Iterator<Item = usize>) -> Run {
    let mut f = StreamFramer::new(max);
    let mut now = t0();
    let mut pushed = 0usize;
    // Bytes of the stream consumed by frames so far.
    let mut consumed = 0usize;
    let mut frames = Vec::new();
    while pushed < data.len() {
        let n = sizes.next().unwrap_or(1).min(data.len() - pushed);
        now += Duration::from_millis(1);
        f.push(now, &data[pushed..pushed + n]);
        pushed += n;
        loop {
            match f.next_frame(now) {
                Ok(Some(frame)) => {
                    let upto = pushed - f.buffered();
                    let gap_end = match &frame {
                        Frame::Message(m) => {
                            assert!(m.len() <= max, "frame of {} > max {max}", m.len());
                            assert!(!m.is_empty(), "empty message frame");
                            assert_eq!(
                                &data[upto - m.len()..upto],
                                &m[..],
                                "frame is not the next slice of the stream"
                            );
                            upto - m.len()
                        }
                        Frame::Ping => {
                            assert_eq!(&data[upto - 4..upto], b"\r\n\r\n", "ping without CRLFCRLF");
                            upto - 4
                        }
                    };
                    assert!(
                        data[consumed..gap_end]
                            .iter()
                            .all(|&c| c == b'\r' || c == b'\n'),
                        "skipped non-CRLF bytes between frames: {:?}",
                        Bytes::copy_from_slice(&data[consumed..gap_end])
                    );
                    consumed = upto;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(
                        f.buffered() <= max,
                        "{} bytes buffered, max {max}",
                        f.buffered()
                    );
                    break;
                }
                Err(_) => {
                    return Run {
                        frames,
                        failed: true,
                    };
                }
            }
        }
    }
    Run {
        frames,
        failed: false,
    }
}
