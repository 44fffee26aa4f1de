//! Fuzz target `sip_message`: the SIP message parser
//! (`sip::message::parse`, both framings), the lenient header salvager used
//! for `400` answers (`salvage_request`, `build::bad_request_salvaged`), and
//! the response builder (`build::response`).
//!
//! Input: one raw SIP message (a datagram), e.g. an RFC 4475 torture test.
//!
//! Invariants checked (beyond "never panics"):
//! * a parsed message has at least one Via, and a body no longer than the input;
//! * a response's status is 100..=699;
//! * a message larger than `max_message_bytes` is refused as `TooLarge`;
//! * for every parsed request, the `100` and `200` responses built from it
//!   parse again, as responses with that status, echoing the Call-ID, CSeq,
//!   Via count and From tag, and with the To tag of the request or ours;
//! * whatever `salvage_request` keeps is non-empty and free of control
//!   characters, and the salvaged `400` starts with its status line.

#![no_main]

use std::net::SocketAddr;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::sip::build::{self, ResponseParts};
use switchboard::sip::message::{self, Framing, Limits, Message, ParseErrorKind};

const OUR_TAG: &[u8] = b"fz7tag";

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let limits = Limits::default();

    for framing in [Framing::Datagram, Framing::Stream] {
        if let Ok(m) = message::parse(buf.clone(), framing, &limits) {
            check_parsed(&m, data.len());
            if m.is_request() {
                check_responses(&m);
            }
        }
    }

    // Size and header-count limits are enforced, never panic.
    if !data.is_empty() {
        let tight = Limits {
            max_message_bytes: data.len() - 1,
            max_headers: 4,
        };
        let r = message::parse(buf.clone(), Framing::Datagram, &tight);
        assert!(
            matches!(&r, Err(e) if e.kind == ParseErrorKind::TooLarge),
            "an over-long message must be TooLarge, got {r:?}"
        );
        let few = Limits {
            max_message_bytes: data.len(),
            max_headers: 4,
        };
        if let Ok(m) = message::parse(buf.clone(), Framing::Datagram, &few) {
            assert!(m.headers.len() <= 4, "max_headers not enforced");
        }
    }

    if let Some(salvaged) = message::salvage_request(&buf) {
        for (name, value) in &salvaged {
            assert!(!value.is_empty(), "salvaged an empty {name:?}");
            assert!(
                !value.iter().any(|&c| c < 0x20 && c != b'\t'),
                "salvaged {name:?} with a control character: {value:?}"
            );
        }
        let out = build::bad_request_salvaged(&salvaged, "fuzz", OUR_TAG, "Switchboard");
        assert!(out.starts_with(b"SIP/2.0 400 Bad Request (fuzz)\r\n"));
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    }
});

fn check_parsed(m: &Message, input_len: usize) {
    assert!(!m.vias.is_empty(), "parsed a message without Via");
    assert!(m.body.len() <= input_len);
    if let Some(status) = m.status() {
        assert!((100..=699).contains(&status), "status {status}");
    }
}

/// Responses built from a parsed request must parse again.
fn check_responses(req: &Message) {
    let source: SocketAddr = "192.0.2.7:5062".parse().unwrap();
    for (status, source) in [(100u16, Some(source)), (200, Some(source)), (200, None)] {
        let out = build::response(
            req,
            status,
            &ResponseParts {
                to_tag: Some(OUR_TAG),
                source,
                headers: &[("Allow", "INVITE, ACK"), ("Accept", "application/sdp")],
                server: "Switchboard",
                ..Default::default()
            },
        );
        let back = match message::parse(out.clone(), Framing::Datagram, &no_limits()) {
            Ok(m) => m,
            Err(e) => panic!(
                "response {status} to a parsed request does not parse: {e}\nrequest headers: {:?}\nresponse: {:?}",
                req.headers, out
            ),
        };
        assert_eq!(back.status(), Some(status));
        assert_eq!(back.call_id, req.call_id, "Call-ID not echoed");
        assert_eq!(back.cseq, req.cseq, "CSeq not echoed");
        assert_eq!(back.vias.len(), req.vias.len(), "Via count changed");
        assert_eq!(back.from.tag(), req.from.tag(), "From tag changed");
        match req.to.tag() {
            // `To: ...;tag` (no value) is left alone: ours is appended after
            // it, and the first `tag` wins (see README.md, observations).
            None if req.to.param("tag").is_some() => {}
            Some(t) => assert_eq!(back.to.tag(), Some(t), "To tag changed"),
            None if status > 100 => {
                assert_eq!(
                    back.to.tag().map(|t| &t[..]),
                    Some(OUR_TAG),
                    "our To tag missing"
                )
            }
            None => assert_eq!(back.to.tag(), None, "a 100 must not add a To tag"),
        }
        assert!(back.body.is_empty());
    }
}

/// The echo of a near-limit request may exceed the request's own limit.
fn no_limits() -> Limits {
    Limits {
        max_message_bytes: usize::MAX,
        max_headers: usize::MAX,
    }
}
