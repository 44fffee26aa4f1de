//! Fuzz target `sdp`: the SDP parser and emitter (`sdp::SessionDescription`)
//! and the offer/answer helpers the call engine uses on it.
//!
//! Input: one raw SDP body (`seeds/sdp/`: G.711, Opus, hold, IPv6, multiple
//! and rejected streams, baresip and SIPp offers, RFC 4566 examples).
//!
//! Invariants checked (beyond "never panics"):
//! * a refusal names a line within the input (1 to lines + 1), except
//!   `TooLarge`;
//! * a parsed description has `v=0`, at least one `t=`, at most `MAX_MEDIA`
//!   media sections, each with at most `MAX_FORMATS` formats;
//! * emission is CRLF lines starting with `v=0`, no larger than the input
//!   plus one CR per LF and a final CRLF; it parses back to the same
//!   description and emits the same bytes again (when within
//!   `MAX_SDP_BYTES`);
//! * `Direction::reverse` is an involution; a media section's direction is
//!   its own attribute, else the session's, else sendrecv; `is_hold` is
//!   sendonly / inactive / `c=0.0.0.0`;
//! * after `set_direction`, `set_connection_address`, `set_port` and
//!   `bump_version`, the helpers read back what was set and the edited
//!   description still round-trips.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use switchboard::sdp::{
    Direction, MAX_FORMATS, MAX_MEDIA, MAX_SDP_BYTES, SdpError, SessionDescription,
};

fuzz_target!(|data: &[u8]| {
    let d = match SessionDescription::parse(data) {
        Ok(d) => d,
        Err(e) => return check_error(&e, data),
    };
    assert_eq!(d.version, 0);
    assert!(!d.timings.is_empty(), "parsed without t=");
    assert!(d.media.len() <= MAX_MEDIA);
    assert!(d.media.iter().all(|m| m.formats.len() <= MAX_FORMATS));

    let out = d.to_bytes();
    assert!(out.starts_with(b"v=0\r\n"));
    assert!(out.ends_with(b"\r\n"));
    let lfs = data.iter().filter(|&&c| c == b'\n').count();
    assert!(out.len() <= data.len() + lfs + 2, "emission grew");
    // Every CR is followed by LF and every LF preceded by CR.
    assert!(
        out.windows(2).all(|w| (w[0] == b'\r') == (w[1] == b'\n')),
        "a bare CR or LF in the emission"
    );
    round_trip(&d);

    for m in &d.media {
        let dir = m.direction(&d);
        assert_eq!(dir.reverse().reverse(), dir);
        let expected = m
            .attributes
            .iter()
            .find_map(|a| Direction::from_attribute(&a.name))
            .or_else(|| d.direction())
            .unwrap_or(Direction::SendRecv);
        assert_eq!(dir, expected);
        let zero = m.connection_address(&d) == Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            m.is_hold(&d),
            matches!(dir, Direction::SendOnly | Direction::Inactive) || zero
        );
        for f in &m.formats {
            let _ = (m.rtpmap(f), m.fmtp(f));
        }
    }
    let _ = d.is_hold();

    // The edits media anchoring and hold handling make.
    let anchor = if data.len() % 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99))
    };
    let mut e = d.clone();
    e.set_connection_address(anchor);
    e.bump_version();
    assert_eq!(
        e.origin.session_version,
        d.origin.session_version.wrapping_add(1)
    );
    let snapshot = e.clone();
    // At most MAX_MEDIA (64) sections: the ports stay below 30128.
    let port = |i: usize| 30000 + 2 * u16::try_from(i).unwrap_or(0);
    for (i, m) in e.media.iter_mut().enumerate() {
        let dir = m.direction(&snapshot).reverse();
        m.set_direction(dir);
        m.set_port(port(i));
    }
    for (i, m) in e.media.iter().enumerate() {
        assert_eq!(m.port, port(i));
        assert_eq!(m.connection_address(&e), Some(anchor));
        assert_eq!(
            m.direction(&e),
            snapshot.media[i].direction(&snapshot).reverse()
        );
    }
    round_trip(&e);
});

/// parse(emit(d)) == d and the emission is a fixed point.
fn round_trip(d: &SessionDescription) {
    let out = d.to_bytes();
    if out.len() > MAX_SDP_BYTES {
        // LF input grows by a CR per line; past the limit it is refused.
        return;
    }
    let again = match SessionDescription::parse(&out) {
        Ok(a) => a,
        Err(e) => panic!(
            "emission does not parse: {e}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(&again, d, "re-parse differs");
    assert_eq!(again.to_bytes(), out, "emission is not a fixed point");
}

fn check_error(e: &SdpError, data: &[u8]) {
    assert!(!e.to_string().is_empty());
    let lines = data.split(|&c| c == b'\n').count();
    match (e, e.line()) {
        (SdpError::TooLarge { len, max }, None) => {
            assert_eq!(*len, data.len());
            assert!(len > max);
        }
        (_, Some(line)) => assert!(
            (1..=lines + 1).contains(&line),
            "{e} but the input has {lines} lines"
        ),
        (_, None) => panic!("{e} names no line"),
    }
}
