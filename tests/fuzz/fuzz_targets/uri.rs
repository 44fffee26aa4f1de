//! Fuzz target `uri`: the structured-value grammar (`sip::grammar`):
//! `parse_uri`, `parse_name_addr` (From, To, Contact) and `parse_vias`.
//!
//! Input: one header value, e.g. `sip:alice@atlanta.com;transport=tcp`,
//! `"Bob" <sips:bob@biloxi.com>;tag=a48s` or
//! `SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP h`.
//! Each parser sees the whole input.
//!
//! Invariants checked (beyond "never panics"):
//! * `parse_uri(raw, false)` accepting means `parse_uri(raw, true)` accepts
//!   with the same result (allowing `?headers` only widens the grammar), and
//!   a refusal with headers allowed is a refusal without;
//! * a URI's parts are views of its text, and the URI re-parses from its
//!   own `raw` to the same value;
//! * a parsed name-addr's URI parses alone (headers allowed);
//! * every parsed Via entry's `raw` parses alone to exactly that one entry.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::sip::grammar::{self, Uri};

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);

    let strict = grammar::parse_uri(raw.clone(), false);
    let lenient = grammar::parse_uri(raw.clone(), true);
    match (&strict, &lenient) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "allow_headers changed a header-less URI"),
        (Ok(a), Err(e)) => panic!("accepted only without headers allowed: {a:?} / {e}"),
        (Err(_), _) => {}
    }
    if let Ok(u) = &lenient {
        check_uri(u, data);
    }

    if let Ok(na) = grammar::parse_name_addr(&raw, &raw) {
        let alone = grammar::parse_uri(na.uri.raw.clone(), true);
        assert_eq!(
            alone.as_ref().ok(),
            Some(&na.uri),
            "name-addr URI does not parse alone"
        );
        check_uri(&na.uri, data);
    }

    let mut vias = Vec::new();
    if grammar::parse_vias(&raw, &raw, &mut vias).is_ok() {
        assert!(!vias.is_empty(), "a Via header with no entry");
        for v in &vias {
            let mut again = Vec::new();
            let r = grammar::parse_vias(&v.raw, &v.raw, &mut again);
            assert!(
                r.is_ok(),
                "Via entry {:?} does not parse alone: {r:?}",
                v.raw
            );
            assert_eq!(again.len(), 1, "Via entry {:?} split again", v.raw);
            let a = &again[0];
            assert_eq!(
                (&a.protocol, &a.transport, &a.host, a.port, &a.params),
                (&v.protocol, &v.transport, &v.host, v.port, &v.params),
                "Via entry {:?} parses differently alone",
                v.raw
            );
        }
    } else {
        // A failed parse may have pushed entries before the bad one; fine.
    }
});

fn check_uri(u: &Uri, input: &[u8]) {
    for part in [&u.raw, &u.user, &u.host, &u.headers] {
        assert!(part.len() <= input.len());
    }
    let again = grammar::parse_uri(u.raw.clone(), true);
    assert_eq!(
        again.as_ref().ok(),
        Some(u),
        "URI does not re-parse from raw"
    );
    // Helpers on a parsed URI never panic.
    let _ = u.user_decoded();
    let _ = u.param("transport");
    let _ = u.is_sip();
}
