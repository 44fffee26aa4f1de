//! Cutting SIP messages out of a TCP byte stream (RFC 3261 §18.3): the
//! header section ends at the first empty line, the body is Content-Length
//! bytes long. CRLF keep-alives between messages are skipped, and a
//! double-CRLF "ping" is reported so the shell can answer the single-CRLF
//! "pong" of RFC 5626 §4.4.1.
//!
//! Memory is bounded: a header section that does not end within
//! `max_message_bytes`, or a Content-Length that would exceed it, is a
//! [`FrameError`] after which the connection must be closed. The time the
//! current partial message started is kept so the shell can close slow
//! senders (`sip.tcp_message_timeout_s`).

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::message::find_header_end;

/// Why a stream cannot be framed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("header section longer than the maximum message size")]
    HeadersTooLong,
    #[error("Content-Length missing a number or not a number")]
    BadContentLength,
    #[error("message larger than the maximum message size")]
    TooLarge,
}

/// One item cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (headers and exactly Content-Length body bytes).
    Message(Bytes),
    /// A CRLFCRLF keep-alive ping.
    Ping,
}

/// Per-connection framing state.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max: usize,
    partial_since: Option<Instant>,
}

impl StreamFramer {
    pub fn new(max_message_bytes: usize) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            max: max_message_bytes,
            partial_since: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, now: Instant, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// When the oldest incomplete message began arriving, if one is pending.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self, now: Instant) -> Result<Option<Frame>, FrameError> {
        // A message never starts with CR or LF. "\r\n\r\n" is a ping;
        // other line ends between messages are skipped — except a prefix
        // that may still grow into a ping, which waits for more bytes, so
        // the outcome never depends on how the stream was segmented.
        loop {
            let b: &[u8] = &self.buf;
            let skip = if b.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                self.reset_partial(now);
                return Ok(Some(Frame::Ping));
            } else if b.first() == Some(&b'\n') {
                1
            } else if b.first() == Some(&b'\r') {
                match ping_prefix_len(b) {
                    // "\r", "\r\n", "\r\n\r": could become a ping.
                    n if n == b.len() => break,
                    // "\r\n" then not "\r\n": a lone CRLF.
                    n if n >= 2 => 2,
                    // "\r" then not "\n": stray CR.
                    _ => 1,
                }
            } else {
                break;
            };
            self.buf.advance(skip);
        }
        if self.buf.first().is_none_or(|&c| c == b'\r') {
            // Nothing, or only a pending ping prefix: no message is under
            // way, so this is not a slow sender.
            self.partial_since = None;
            return Ok(None);
        }
        let Some(head_end) = find_header_end(&self.buf) else {
            if self.buf.len() > self.max {
                return Err(FrameError::HeadersTooLong);
            }
            return Ok(None);
        };
        let body_len = content_length(&self.buf[..head_end])?;
        let total = head_end.checked_add(body_len).ok_or(FrameError::TooLarge)?;
        if total > self.max {
            return Err(FrameError::TooLarge);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg = self.buf.split_to(total).freeze();
        self.reset_partial(now);
        Ok(Some(Frame::Message(msg)))
    }

    fn reset_partial(&mut self, now: Instant) {
        self.partial_since = if self.buf.is_empty() { None } else { Some(now) };
    }
}

/// How many leading bytes of `b` match the start of "\r\n\r\n".
fn ping_prefix_len(b: &[u8]) -> usize {
    b.iter()
        .zip(b"\r\n\r\n")
        .take_while(|(x, y)| x == y)
        .count()
}

/// Content-Length from a header section (absent = 0 over a stream). Only
/// locates the body here; the message parser validates it again.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut found = None;
    for line in head.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = super::grammar::trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = super::grammar::trim(
                line[colon + 1..]
                    .strip_suffix(b"\r")
                    .unwrap_or(&line[colon + 1..]),
            );
            let n = super::grammar::parse_decimal(v, u32::MAX.into())
                .map_err(|_| FrameError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(n);
        }
    }
    usize::try_from(found.unwrap_or(0)).map_err(|_| FrameError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn frames_split_across_reads() {
        let now = Instant::now();
        let mut f = StreamFramer::new(65535);
        let mut all = MSG.to_vec();
        all.extend_from_slice(MSG);
        for chunk in all.chunks(7) {
            f.push(now, chunk);
        }
        assert_eq!(
            f.next_frame(now).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
        assert_eq!(
            f.next_frame(now).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
        assert_eq!(f.next_frame(now).unwrap(), None);
        assert_eq!(f.partial_since(), None);
    }

    #[test]
    fn keepalive_ping_and_crlf() {
        let now = Instant::now();
        let mut f = StreamFramer::new(65535);
        f.push(now, b"\r\n\r\n");
        assert_eq!(f.next_frame(now).unwrap(), Some(Frame::Ping));
        f.push(now, b"\r\n");
        assert_eq!(f.next_frame(now).unwrap(), None);
        f.push(now, MSG);
        assert!(matches!(
            f.next_frame(now).unwrap(),
            Some(Frame::Message(_))
        ));
    }

    /// Found by the sip_stream fuzz target: "\n\n\r\n\n\n" gave a junk
    /// frame when split after its fifth byte, nothing when sent whole.
    #[test]
    fn line_ends_between_messages_do_not_depend_on_segmentation() {
        let input = b"\n\n\r\n\n\n\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n\r";
        let frames = |chunks: &[&[u8]]| {
            let now = Instant::now();
            let mut f = StreamFramer::new(65535);
            let mut out = Vec::new();
            for c in chunks {
                f.push(now, c);
                while let Some(fr) = f.next_frame(now).unwrap() {
                    out.push(fr);
                }
            }
            out
        };
        let whole = frames(&[input]);
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert_eq!(whole[0], Frame::Ping);
        for split in 1..input.len() {
            assert_eq!(
                frames(&[&input[..split], &input[split..]]),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn lone_crlf_keepalive_is_not_a_slow_message() {
        let now = Instant::now();
        let mut f = StreamFramer::new(65535);
        f.push(now, b"\r\n");
        assert_eq!(f.next_frame(now).unwrap(), None);
        assert_eq!(f.partial_since(), None);
    }

    #[test]
    fn partial_message_remembers_start() {
        let t0 = Instant::now();
        let mut f = StreamFramer::new(65535);
        f.push(t0, &MSG[..10]);
        assert_eq!(f.next_frame(t0).unwrap(), None);
        assert_eq!(f.partial_since(), Some(t0));
    }

    #[test]
    fn limits_bound_memory() {
        let now = Instant::now();
        let mut f = StreamFramer::new(1024);
        f.push(now, b"OPTIONS sip:a@b SIP/2.0\r\n");
        f.push(now, &vec![b'X'; 2000]);
        assert_eq!(f.next_frame(now), Err(FrameError::HeadersTooLong));
        let mut f = StreamFramer::new(1024);
        f.push(
            now,
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999\r\n\r\n",
        );
        assert_eq!(f.next_frame(now), Err(FrameError::TooLarge));
        let mut f = StreamFramer::new(1024);
        f.push(now, b"OPTIONS sip:a@b SIP/2.0\r\nl: -3\r\n\r\n");
        assert_eq!(f.next_frame(now), Err(FrameError::BadContentLength));
    }
}
