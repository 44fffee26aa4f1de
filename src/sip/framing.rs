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
        // Keep-alives: "\r\n\r\n" is a ping, lone CRLFs are skipped.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                self.reset_partial(now);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 4 {
                self.buf.advance(2);
                continue;
            }
            if self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
                continue;
            }
            break;
        }
        if self.buf.is_empty() || self.buf.as_ref() == b"\r\n" || self.buf.as_ref() == b"\r" {
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
