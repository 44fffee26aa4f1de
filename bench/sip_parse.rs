//! Criterion benchmarks of SIP message parsing: Switchboard's zero-copy
//! parser (`sip/parse/<msg>`) against rsip 0.4 (`sip/parse_rsip/<msg>`) on
//! the same bytes. Messages: a short INVITE with SDP, a REGISTER with digest
//! credentials, a 200 OK response, and RFC 4475's `wsinv` (folding, odd
//! whitespace). Run: `cargo bench --bench sip_parse`; throughput is reported
//! in elements (messages) per second on one core.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::sip::message::{Framing, Limits, parse};

const SDP: &str = "v=0\r\n\
o=- 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A short INVITE with SDP (Content-Length computed from the body).
fn invite() -> String {
    format!(
        "INVITE sip:1002@switchboard.local SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1002@switchboard.local>\r\n\
From: \"Agent 1001\" <sip:1001@switchboard.local>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:1001@192.0.2.10:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Supported: replaces, timer\r\n\
User-Agent: bench\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n{SDP}",
        SDP.len()
    )
}

const REGISTER: &str = "REGISTER sip:switchboard.local SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1001@switchboard.local>\r\n\
From: <sip:1001@switchboard.local>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1827 REGISTER\r\n\
Contact: <sip:1001@192.0.2.10:5060>;expires=3600\r\n\
Authorization: Digest username=\"1001\", realm=\"switchboard.local\", nonce=\"0123456789abcdef0123456789abcdef\", uri=\"sip:switchboard.local\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n\
Content-Length: 0\r\n\
\r\n";

const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=192.0.2.10;rport=5060\r\n\
To: <sip:1002@switchboard.local>;tag=a6c85cf\r\n\
From: \"Agent 1001\" <sip:1001@switchboard.local>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:1002@192.0.2.20>\r\n\
Content-Length: 0\r\n\
\r\n";

fn messages() -> Vec<(&'static str, Bytes)> {
    let wsinv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc4475/wsinv.dat"
    ))
    .expect("tests/data/rfc4475/wsinv.dat");
    vec![
        ("invite", Bytes::from(invite())),
        ("register", Bytes::from_static(REGISTER.as_bytes())),
        ("response", Bytes::from_static(OK.as_bytes())),
        ("wsinv", Bytes::from(wsinv)),
    ]
}

/// Which valid RFC 4475 messages (class V/S in tests/data/rfc4475/README.md,
/// i.e. every message our parser accepts) rsip refuses: printed once.
fn conformance_report(limits: &Limits) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/data/rfc4475")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    names.sort();
    let mut ours = 0;
    let mut refused = Vec::new();
    for p in &names {
        let data = std::fs::read(p).expect("read");
        if parse(Bytes::from(data.clone()), Framing::Datagram, limits).is_ok() {
            ours += 1;
            if rsip::SipMessage::try_from(data.as_slice()).is_err() {
                refused.push(
                    p.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
        }
    }
    eprintln!(
        "RFC 4475: our parser accepts {ours} of {} messages; rsip refuses {} of those: {}",
        names.len(),
        refused.len(),
        refused.join(", ")
    );
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    conformance_report(&limits);
    let msgs = messages();
    let mut g = c.benchmark_group("sip/parse");
    g.throughput(Throughput::Elements(1));
    for (name, data) in &msgs {
        assert!(
            parse(data.clone(), Framing::Datagram, &limits).is_ok(),
            "{name} parses"
        );
        g.bench_function(*name, |b| {
            b.iter(|| parse(black_box(data.clone()), Framing::Datagram, &limits))
        });
    }
    g.finish();
    // rsip keeps header values as strings; the endpoint needs Via, From, To,
    // CSeq, Call-ID (and Contact for REGISTER/INVITE) typed, as our parser
    // delivers them. This group is rsip plus that typed access.
    let mut g = c.benchmark_group("sip/parse_rsip_typed");
    g.throughput(Throughput::Elements(1));
    for (name, data) in &msgs {
        if rsip_typed(data).is_none() {
            eprintln!("rsip cannot type the core headers of {name}; not benchmarked");
            continue;
        }
        g.bench_function(*name, |b| b.iter(|| rsip_typed(black_box(data))));
    }
    g.finish();
    let mut g = c.benchmark_group("sip/parse_rsip");
    g.throughput(Throughput::Elements(1));
    for (name, data) in &msgs {
        if rsip::SipMessage::try_from(data.as_ref()).is_err() {
            eprintln!("rsip refuses {name}; not benchmarked");
            continue;
        }
        g.bench_function(*name, |b| {
            b.iter(|| rsip::SipMessage::try_from(black_box(data.as_ref())))
        });
    }
    g.finish();
}

/// rsip parse plus typed Via, From, To, CSeq, Call-ID and (if present)
/// Contact: what the endpoint reads from every message.
fn rsip_typed(data: &[u8]) -> Option<usize> {
    use rsip::prelude::*;
    let m = rsip::SipMessage::try_from(data).ok()?;
    let via = m.via_header().ok()?.typed().ok()?;
    let from = m.from_header().ok()?.typed().ok()?;
    let to = m.to_header().ok()?.typed().ok()?;
    let cseq = m.cseq_header().ok()?.typed().ok()?;
    let call_id = m.call_id_header().ok()?;
    let contact = m.contact_header().ok().and_then(|c| c.typed().ok());
    Some(
        via.params.len()
            + from.params.len()
            + to.params.len()
            + cseq.seq as usize
            + call_id.value().len()
            + contact.map_or(0, |c| c.params.len()),
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
