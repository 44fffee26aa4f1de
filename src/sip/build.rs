//! Building SIP responses (RFC 3261 §8.2.6): the answer copies Via, From,
//! To (adding our tag), Call-ID and CSeq from the request, marks the top Via
//! with `received` / `rport` (§18.2.1, RFC 3581), and carries the extra
//! headers the caller gives. The output is one contiguous `Bytes`, ready for
//! a socket and kept by the transaction for retransmission.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::grammar::Via;
use super::message::{HeaderName, Message};

/// The standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        482 => "Loop Detected",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// What goes into a response besides the copied headers.
#[derive(Debug, Default)]
pub struct ResponseParts<'a> {
    /// Reason phrase; `None` = the standard one.
    pub reason: Option<&'a str>,
    /// Tag to add to To when the request's To has none (not for 100).
    pub to_tag: Option<&'a [u8]>,
    /// Where the request came from, for `received` / `rport`.
    pub source: Option<SocketAddr>,
    /// Extra headers, written as `Name: value`.
    pub headers: &'a [(&'a str, &'a str)],
    /// Server header value; empty = none.
    pub server: &'a str,
    /// Copy the request's Record-Route headers (§12.1.1: a UAS does so in
    /// every response that creates a dialog).
    pub record_route: bool,
    /// The body (its Content-Type goes in `headers`).
    pub body: &'a [u8],
}

/// Builds the response to `req` with `status`.
pub fn response(req: &Message, status: u16, parts: &ResponseParts<'_>) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    let reason = parts.reason.unwrap_or_else(|| reason_phrase(status));
    let _ = write!(Fmt(&mut out), "SIP/2.0 {status} {reason}\r\n");
    for (i, via) in req.vias.iter().enumerate() {
        out.put_slice(b"Via: ");
        if i == 0 {
            write_top_via(&mut out, via, parts.source);
        } else {
            out.put_slice(&via.raw);
        }
        out.put_slice(b"\r\n");
    }
    for h in &req.headers {
        match h.name {
            HeaderName::From => header(&mut out, "From", &h.value),
            HeaderName::To => {
                out.put_slice(b"To: ");
                out.put_slice(&h.value);
                if status > 100
                    && req.to.tag().is_none()
                    && let Some(tag) = parts.to_tag
                {
                    out.put_slice(b";tag=");
                    out.put_slice(tag);
                }
                out.put_slice(b"\r\n");
            }
            HeaderName::CallId => header(&mut out, "Call-ID", &h.value),
            HeaderName::CSeq => header(&mut out, "CSeq", &h.value),
            HeaderName::RecordRoute if parts.record_route => {
                header(&mut out, "Record-Route", &h.value)
            }
            _ => {}
        }
    }
    finish(&mut out, parts, parts.body);
    out.freeze()
}

/// Builds a `400 Bad Request` from headers salvaged out of a message that
/// did not parse (see [`super::message::salvage_request`]).
pub fn bad_request_salvaged(
    salvaged: &[(HeaderName, Bytes)],
    why: &str,
    to_tag: &[u8],
    server: &str,
) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    let _ = write!(Fmt(&mut out), "SIP/2.0 400 Bad Request ({why})\r\n");
    for (name, value) in salvaged {
        let n = match name {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            _ => continue,
        };
        out.put_slice(n.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        if *name == HeaderName::To && !contains_tag(value) {
            out.put_slice(b";tag=");
            out.put_slice(to_tag);
        }
        out.put_slice(b"\r\n");
    }
    finish(
        &mut out,
        &ResponseParts {
            server,
            ..Default::default()
        },
        b"",
    );
    out.freeze()
}

fn contains_tag(v: &[u8]) -> bool {
    v.windows(5).any(|w| w.eq_ignore_ascii_case(b";tag="))
}

fn header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn finish(out: &mut BytesMut, parts: &ResponseParts<'_>, body: &[u8]) {
    for (n, v) in parts.headers {
        header(out, n, v.as_bytes());
    }
    if !parts.server.is_empty() {
        header(out, "Server", parts.server.as_bytes());
    }
    let _ = write!(Fmt(out), "Content-Length: {}\r\n\r\n", body.len());
    out.put_slice(body);
}

/// The top Via with `received=` when the sent-by host is not the source IP
/// and `rport=` filled in when the client asked for it (RFC 3581).
fn write_top_via(out: &mut BytesMut, via: &Via, source: Option<SocketAddr>) {
    let Some(src) = source else {
        out.put_slice(&via.raw);
        return;
    };
    out.put_slice(&via.protocol);
    out.put_u8(b'/');
    out.put_slice(&via.transport);
    out.put_u8(b' ');
    out.put_slice(&via.host);
    if let Some(p) = via.port {
        let _ = write!(Fmt(out), ":{p}");
    }
    let ip = src.ip().to_string();
    let host_is_source = {
        let h: &[u8] = &via.host;
        let h = h
            .strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(h);
        h == ip.as_bytes()
    };
    let mut has_rport = false;
    for (name, value) in &via.params {
        if name.eq_ignore_ascii_case(b"received") {
            continue; // replaced below
        }
        out.put_u8(b';');
        out.put_slice(name);
        if name.eq_ignore_ascii_case(b"rport") {
            has_rport = true;
            let _ = write!(Fmt(out), "={}", src.port());
        } else if let Some(v) = value {
            out.put_u8(b'=');
            out.put_slice(v);
        }
    }
    if has_rport || !host_is_source {
        let _ = write!(Fmt(out), ";received={ip}");
    }
}

/// `fmt::Write` over a `BytesMut` (for `write!` into a message).
pub struct Fmt<'a>(pub &'a mut BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Framing, Limits, parse};

    fn req(s: &str) -> Message {
        parse(
            Bytes::copy_from_slice(s.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag() {
        let m = req(
            "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h:5062;branch=z9hG4bK1;rport, SIP/2.0/TCP p\r\nt: <sip:a@b>\r\nf: <sip:c@d>;tag=9\r\ni: cid\r\nCSeq: 4 OPTIONS\r\n\r\n",
        );
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let r = response(
            &m,
            200,
            &ResponseParts {
                to_tag: Some(b"xyz"),
                source: Some(src),
                headers: &[("Allow", "INVITE, ACK")],
                server: "Switchboard",
                ..Default::default()
            },
        );
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains(
            "Via: SIP/2.0/UDP h:5062;branch=z9hG4bK1;rport=40000;received=127.0.0.1\r\n"
        ));
        assert!(text.contains("Via: SIP/2.0/TCP p\r\n"));
        assert!(text.contains("To: <sip:a@b>;tag=xyz\r\n"));
        assert!(text.contains("From: <sip:c@d>;tag=9\r\n"));
        assert!(text.contains("Call-ID: cid\r\nCSeq: 4 OPTIONS\r\n"));
        assert!(
            text.ends_with(
                "Allow: INVITE, ACK\r\nServer: Switchboard\r\nContent-Length: 0\r\n\r\n"
            )
        );
        // The answer itself parses.
        let back = parse(r, Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(back.status(), Some(200));
    }

    #[test]
    fn received_omitted_when_sent_by_is_source() {
        let m = req(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=9\r\nCall-ID: cid\r\nCSeq: 4 OPTIONS\r\n\r\n",
        );
        let r = response(
            &m,
            404,
            &ResponseParts {
                source: Some("127.0.0.1:5062".parse().unwrap()),
                ..Default::default()
            },
        );
        let text = std::str::from_utf8(&r).unwrap();
        assert!(
            text.contains("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"),
            "{text}"
        );
        assert!(text.contains("404 Not Found"));
    }
}
