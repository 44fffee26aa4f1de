//! Deterministic tests of the B2BUA through the [`Endpoint`] that owns it:
//! virtual phones are socket addresses, time is a virtual clock, timers are
//! collected from the outputs and fired in order by [`World::advance`].
//! Nothing sleeps and nothing touches a socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::CallConfig;
use super::dialog::contact_uri;
use super::record::{CallRecord, EndCause, Side};
use crate::media::engine::MediaSock;
use crate::sip::auth::DigestAlgorithm;
use crate::sip::endpoint::{Endpoint, EndpointConfig, Link, Output, Peer, TimerKey};
use crate::sip::ids::ShardId;
use crate::sip::message::{self, Framing, HeaderName, Limits, Message};
use crate::sip::registrar::{Binding, BindingChange, RegistrarLimits, Transport};
use crate::sip::transaction::TimerConfig;
use crate::stats::ShardCounters;

// ----------------------------------------------------------------------
// The world
// ----------------------------------------------------------------------

const fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The caller (user 1001, not registered: it just calls).
const CALLER: SocketAddr = local(40000);
/// User 1002's phone.
const PHONE1: SocketAddr = local(41001);
/// User 1002's second phone (forking).
const PHONE2: SocketAddr = local(41002);
/// User 1003's phone (transfer target).
const PHONE3: SocketAddr = local(41003);

/// What 1002's first phone registered as its Contact: not its source
/// address (a phone behind NAT), so the Request-URI and the destination
/// can be told apart.
const PHONE1_CONTACT: &str = "sip:1002@10.0.0.12:5062;line=a1";
const PHONE2_CONTACT: &str = "sip:1002@10.0.0.22:5062;line=b2";
const PHONE3_CONTACT: &str = "sip:1003@10.0.0.13:5062";

/// The appliance's Contact on UDP (CallConfig::loopback).
const APPLIANCE_CONTACT: &str = "<sip:sb@127.0.0.1:5060>";

const CALLER_SDP: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8\r\na=sendrecv\r\n";
const CALLER_HOLD_SDP: &str = "v=0\r\no=caller 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8\r\na=sendonly\r\n";
const PHONE1_SDP: &str = "v=0\r\no=phone1 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 0\r\na=sendrecv\r\n";
const PHONE1_HOLD_ANSWER: &str = "v=0\r\no=phone1 7 8 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 0\r\na=recvonly\r\n";
const PHONE2_SDP: &str = "v=0\r\no=phone2 9 9 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 32000 RTP/AVP 0\r\na=sendrecv\r\n";
const PHONE3_SDP: &str = "v=0\r\no=phone3 3 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 33000 RTP/AVP 0\r\na=sendrecv\r\n";
const CALLER_REANSWER_SDP: &str = "v=0\r\no=caller 1 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n";

type Out = Vec<(SocketAddr, Message)>;

struct World {
    ep: Endpoint,
    now: Instant,
    /// Armed timers: deadline, arming order (ties), key.
    timers: Vec<(Instant, u64, TimerKey)>,
    armed: u64,
    records: Vec<CallRecord>,
    /// What the call engine told the ACD.
    acd: Vec<crate::acd::Input>,
    cti: Vec<crate::cti::event::ToControl>,
}

fn config() -> EndpointConfig {
    let users: Vec<String> = (1001..=1005).map(|u| u.to_string()).collect();
    EndpointConfig {
        shard: ShardId(0),
        shards: 1,
        domain: "switchboard.local".into(),
        server: "Switchboard-test".into(),
        timers: TimerConfig::default(),
        limits: Limits::default(),
        registrar: RegistrarLimits::default(),
        nonce_lifetime: Duration::from_secs(300),
        algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        nonce_key: [7; 32],
        md5_only_user_agents: Vec::new(),
        users: users
            .iter()
            .map(|u| (u.clone(), format!("pw{u}")))
            .collect(),
        seed: 42,
        call: CallConfig {
            // Engine tests send no RTP: only the media tests shorten this.
            media: crate::media::engine::MediaConfig {
                rtp_timeout: Duration::from_secs(86_400),
                hold_timeout: Duration::from_secs(86_400),
                ..crate::media::engine::MediaConfig::loopback()
            },
            ..CallConfig::loopback(ShardId(0), users)
        },
    }
}

impl World {
    /// 1002 on PHONE1, 1003 on PHONE3; 1004 is a user with no phone.
    fn new() -> World {
        let mut w = World::bare();
        w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);
        w.bind("1003", &[(PHONE3, PHONE3_CONTACT)]);
        w
    }

    fn bare() -> World {
        World::bare_with(config())
    }

    fn bare_with(cfg: EndpointConfig) -> World {
        let now = Instant::now();
        let mut ep = Endpoint::new(cfg, now, Arc::new(ShardCounters::default()));
        ep.media_mut().add_virtual_pairs(50000, 512);
        World {
            ep,
            now,
            timers: Vec::new(),
            armed: 0,
            records: Vec::new(),
            acd: Vec::new(),
            cti: Vec::new(),
        }
    }

    /// Replaces `user`'s bindings, as the registrar would after a REGISTER.
    fn bind(&mut self, user: &str, phones: &[(SocketAddr, &str)]) {
        let bindings = phones
            .iter()
            .enumerate()
            .map(|(i, (source, uri))| Binding {
                uri: uri.to_string(),
                source: *source,
                transport: Transport::Udp,
                link: Link::Udp { listen: 0 },
                expires_at: self.now + Duration::from_secs(3600),
                q: None,
                call_id: format!("reg-{user}-{i}"),
                cseq: 1,
                raw_params: String::new(),
                updated_at: self.now,
            })
            .collect();
        self.ep.handle_binding_change(BindingChange {
            user: user.into(),
            bindings,
        });
    }

    /// Drains the endpoint: transmissions (parsed: everything we send must
    /// parse), timers, records.
    fn collect(&mut self) -> Out {
        let mut out = Vec::new();
        while let Some(o) = self.ep.poll_output() {
            match o {
                Output::Transmit { peer, data } => {
                    let m = message::parse(data.clone(), Framing::Datagram, &Limits::default())
                        .unwrap_or_else(|e| panic!("unparsable output {e}: {data:?}"));
                    out.push((peer.addr, m));
                }
                Output::Timer { at, key } => {
                    self.armed += 1;
                    self.timers.push((at, self.armed, key));
                }
                Output::Record(r) => self.records.push(*r),
                Output::Acd(i) => self.acd.push(i),
                Output::Cti(m) => self.cti.push(m),
                Output::Forward { .. } | Output::Broadcast(_) => {
                    panic!("one shard: nothing to forward or broadcast")
                }
            }
        }
        out
    }

    /// Delivers `text` from `from`; returns everything sent as a result.
    fn send(&mut self, from: SocketAddr, text: &str) -> Out {
        let peer = Peer {
            link: Link::Udp { listen: 0 },
            addr: from,
        };
        self.ep
            .handle_message(self.now, peer, Bytes::copy_from_slice(text.as_bytes()));
        self.collect()
    }

    /// Delivers an RTP/RTCP datagram from `from` to our media socket
    /// `sock`; returns the SIP sent as a result and the datagrams relayed
    /// (socket, destination, bytes).
    fn media(
        &mut self,
        sock: u16,
        from: SocketAddr,
        data: &[u8],
    ) -> (Out, Vec<(u16, SocketAddr, Vec<u8>)>) {
        self.ep.handle_media(self.now, MediaSock(sock), from, data);
        let mut relayed = Vec::new();
        self.ep
            .media_mut()
            .drain_transmits(|s, d, b| relayed.push((s.0, d, b.to_vec())));
        (self.collect(), relayed)
    }

    /// Moves the clock by `d`, firing due timers in deadline order.
    fn advance(&mut self, d: Duration) -> Out {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.0 <= end)
                .min_by_key(|(_, t)| (t.0, t.1))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let (at, _, key) = self.timers.remove(i);
            self.now = self.now.max(at);
            self.ep.handle_timer(self.now, key);
            out.extend(self.collect());
        }
        self.now = end;
        out
    }

    /// The invariant at the end of a test: once the call is over and its
    /// timers have run out, nothing is left — no call, no INVITE waiting
    /// for its final answer, no client transaction waiting for one.
    fn assert_quiet(&mut self) {
        let out = self.advance(Duration::from_secs(300));
        assert_eq!(self.ep.active_calls(), 0, "calls leaked");
        assert_eq!(self.ep.media_mut().open_legs(), 0, "media legs leaked");
        assert_eq!(
            self.ep.pending_invites(),
            0,
            "open transactions leaked; last sends: {:?}",
            summary(&out)
        );
    }

    fn record(&self) -> &CallRecord {
        assert_eq!(self.records.len(), 1, "exactly one call record");
        &self.records[0]
    }
}

// ----------------------------------------------------------------------
// Reading what comes out
// ----------------------------------------------------------------------

/// "INVITE" for a request, "200 INVITE" for a response.
fn describe(m: &Message) -> String {
    match m.status() {
        Some(s) => format!("{s} {}", m.cseq.method),
        None => m.method().to_string(),
    }
}

/// Every transmission as "port <- what", sorted.
fn summary(out: &Out) -> Vec<String> {
    let mut v: Vec<String> = out
        .iter()
        .map(|(a, m)| format!("{} <- {}", a.port(), describe(m)))
        .collect();
    v.sort();
    v
}

#[track_caller]
fn expect(out: &Out, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(summary(out), want);
}

/// The one message to `to` that `describe`s as `what`.
#[track_caller]
fn one(out: &Out, to: SocketAddr, what: &str) -> Message {
    let found: Vec<&Message> = out
        .iter()
        .filter(|(a, m)| *a == to && describe(m) == what)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {what} to {to}; sent: {:?}",
        summary(out)
    );
    found[0].clone()
}

fn count(out: &Out, to: SocketAddr, what: &str) -> usize {
    out.iter()
        .filter(|(a, m)| *a == to && describe(m) == what)
        .count()
}

/// First value of header `name`.
fn hv(m: &Message, name: &str) -> Option<String> {
    m.headers
        .iter()
        .find(|h| h.is_named(name))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn to_tag(m: &Message) -> Option<String> {
    m.to.tag().map(|t| s(t))
}

fn branch(m: &Message) -> String {
    s(m.top_via().branch().expect("branch"))
}

fn ruri(m: &Message) -> String {
    s(&m.request_uri().expect("request").raw)
}

fn body(m: &Message) -> String {
    s(&m.body)
}

/// Whether `m`'s body is `orig` as the appliance anchors it: the audio
/// stream at one of our ports (50000 up in these tests), on our address,
/// the original's first codec first, the same direction.
fn is_anchored(m: &Message, orig: &str) -> bool {
    use crate::sdp::SessionDescription;
    let (Ok(sent), Ok(orig)) = (
        SessionDescription::parse(&m.body),
        SessionDescription::parse(orig.as_bytes()),
    ) else {
        return false;
    };
    let (Some(a), Some(o)) = (sent.media.first(), orig.media.first()) else {
        return false;
    };
    sent.origin.username == "switchboard"
        && a.port != o.port
        && (50000..52000).contains(&a.port)
        && a.formats.first() == o.formats.first()
        && a.direction(&sent) == o.direction(&orig)
        && a.connection_address(&sent) == Some([127, 0, 0, 1].into())
}

#[track_caller]
fn anchored(m: &Message, orig: &str) {
    assert!(is_anchored(m, orig), "not {orig:?} anchored: {:?}", body(m));
}

// ----------------------------------------------------------------------
// Virtual user agents
// ----------------------------------------------------------------------

static BRANCHES: AtomicU64 = AtomicU64::new(1);

fn new_branch() -> String {
    format!("z9hG4bKua{}", BRANCHES.fetch_add(1, Ordering::Relaxed))
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        486 => "Busy Here",
        487 => "Request Terminated",
        491 => "Request Pending",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Whatever",
    }
}

/// Content-Type line for `body` (SDP unless `extra` names one).
fn content_type(extra: &str, body: &str) -> &'static str {
    if body.is_empty() || extra.contains("Content-Type") {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    }
}

/// A response to `req` as a UA writes it: Via, From, To (plus `tag` when
/// To has none), Call-ID and CSeq echoed.
fn respond(req: &Message, status: u16, tag: Option<&str>, extra: &str, body: &str) -> String {
    let mut t = format!("SIP/2.0 {status} {}\r\n", reason(status));
    for h in &req.headers {
        let v = s(&h.value);
        match h.name {
            HeaderName::Via => t += &format!("Via: {v}\r\n"),
            HeaderName::From => t += &format!("From: {v}\r\n"),
            HeaderName::To => match tag {
                Some(tag) if req.to.tag().is_none() => t += &format!("To: {v};tag={tag}\r\n"),
                _ => t += &format!("To: {v}\r\n"),
            },
            HeaderName::CallId => t += &format!("Call-ID: {v}\r\n"),
            HeaderName::CSeq => t += &format!("CSeq: {v}\r\n"),
            _ => {}
        }
    }
    t += extra;
    t += content_type(extra, body);
    t += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    t
}

/// A phone's answer with its Contact (18x, 2xx).
fn phone_answer(req: &Message, status: u16, tag: &str, contact: &str, body: &str) -> String {
    respond(
        req,
        status,
        Some(tag),
        &format!("Contact: <{contact}>\r\n"),
        body,
    )
}

/// The caller's initial INVITE to `callee`.
fn caller_invite(callee: &str, call_id: &str, body: &str) -> String {
    format!(
        "INVITE sip:{callee}@switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch={};rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:1001@switchboard.local>;tag=alice-{call_id}\r\nTo: <sip:{callee}@switchboard.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@127.0.0.1:40000>\r\n{}Content-Length: {}\r\n\r\n{body}",
        new_branch(),
        content_type("", body),
        body.len()
    )
}

fn parse_text(t: &str) -> Message {
    message::parse(
        Bytes::copy_from_slice(t.as_bytes()),
        Framing::Datagram,
        &Limits::default(),
    )
    .expect("test message parses")
}

/// CANCEL for the INVITE `inv` (§9.1: same Request-URI, Via, From, To,
/// Call-ID, CSeq number).
fn cancel_for(inv: &Message) -> String {
    format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
        ruri(inv),
        hv(inv, "Via").unwrap(),
        hv(inv, "From").unwrap(),
        hv(inv, "To").unwrap(),
        s(&inv.call_id),
        inv.cseq.seq
    )
}

/// ACK for a non-2xx final `resp` to `inv` (§17.1.1.3: same branch, To of
/// the response).
fn ack_non2xx(inv: &Message, resp: &Message) -> String {
    format!(
        "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
        ruri(inv),
        hv(inv, "Via").unwrap(),
        hv(inv, "From").unwrap(),
        hv(resp, "To").unwrap(),
        s(&inv.call_id),
        inv.cseq.seq
    )
}

/// A UA's side of a dialog.
#[derive(Debug, Clone)]
struct Dlg {
    me: SocketAddr,
    contact: String,
    call_id: String,
    /// From of our requests (with our tag).
    local: String,
    /// To of our requests (with the remote tag).
    remote: String,
    /// Request-URI of our requests.
    target: String,
    cseq: u32,
}

impl Dlg {
    /// The UAS view of a phone that answered `inv` with `tag`.
    fn uas(inv: &Message, me: SocketAddr, tag: &str, contact: &str) -> Dlg {
        Dlg {
            me,
            contact: contact.into(),
            call_id: s(&inv.call_id),
            local: format!("{};tag={tag}", hv(inv, "To").unwrap()),
            remote: hv(inv, "From").unwrap(),
            target: contact_uri(inv).expect("INVITE has a Contact"),
            cseq: 0,
        }
    }

    /// The UAC view of the caller once `ok` (a 2xx to its INVITE) came.
    fn uac(ok: &Message, me: SocketAddr, contact: &str) -> Dlg {
        Dlg {
            me,
            contact: contact.into(),
            call_id: s(&ok.call_id),
            local: hv(ok, "From").unwrap(),
            remote: hv(ok, "To").unwrap(),
            target: contact_uri(ok).expect("2xx has a Contact"),
            cseq: ok.cseq.seq,
        }
    }

    fn build(&self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <{}>\r\n{extra}{}Content-Length: {}\r\n\r\n{body}",
            self.target,
            self.me,
            new_branch(),
            self.local,
            self.remote,
            self.call_id,
            self.contact,
            content_type(extra, body),
            body.len()
        )
    }

    /// A new request in the dialog.
    fn request(&mut self, method: &str, extra: &str, body: &str) -> String {
        self.cseq += 1;
        self.build(method, self.cseq, extra, body)
    }

    /// The ACK of a 2xx to our INVITE with CSeq `cseq` (a new transaction).
    fn ack(&self, cseq: u32, body: &str) -> String {
        self.build("ACK", cseq, "", body)
    }
}

// ----------------------------------------------------------------------
// Scenarios
// ----------------------------------------------------------------------

/// A call from the caller to 1002 (PHONE1), answered and ACKed.
struct Connected {
    /// The caller's INVITE as it sent it.
    a_invite: Message,
    /// The caller's dialog (UAC side).
    caller: Dlg,
    /// What the phone got.
    b_invite: Message,
    /// The phone's dialog (UAS side).
    phone: Dlg,
    /// The ACK the appliance sent the phone.
    b_ack: Message,
    /// The appliance's tag in the caller's dialog.
    a_tag: String,
}

const PHONE_TAG: &str = "p1tag";

/// Caller INVITE → phone rings.
fn ring(w: &mut World, call_id: &str) -> (Message, Message) {
    let text = caller_invite("1002", call_id, CALLER_SDP);
    let a_invite = parse_text(&text);
    let out = w.send(CALLER, &text);
    expect(&out, &["40000 <- 100 INVITE", "41001 <- INVITE"]);
    let b_invite = one(&out, PHONE1, "INVITE");
    let out = w.send(
        PHONE1,
        &phone_answer(&b_invite, 180, PHONE_TAG, PHONE1_CONTACT, ""),
    );
    expect(&out, &["40000 <- 180 INVITE"]);
    (a_invite, b_invite)
}

fn connect(w: &mut World, call_id: &str) -> Connected {
    let (a_invite, b_invite) = ring(w, call_id);
    let out = w.send(
        PHONE1,
        &phone_answer(&b_invite, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["40000 <- 200 INVITE", "41001 <- ACK"]);
    let ok = one(&out, CALLER, "200 INVITE");
    let b_ack = one(&out, PHONE1, "ACK");
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    let out = w.send(CALLER, &caller.ack(1, ""));
    expect(&out, &[]);
    let phone = Dlg::uas(&b_invite, PHONE1, PHONE_TAG, PHONE1_CONTACT);
    let a_tag = to_tag(&ok).expect("200 has a To tag");
    Connected {
        a_tag,
        a_invite,
        caller,
        b_invite,
        phone,
        b_ack,
    }
}

// ----------------------------------------------------------------------
// 1. Basic call
// ----------------------------------------------------------------------

#[test]
fn basic_call_relays_invite_ringing_answer_ack_and_bye() {
    let mut w = World::new();
    let text = caller_invite("1002", "basic-1", CALLER_SDP);
    let out = w.send(CALLER, &text);
    expect(&out, &["40000 <- 100 INVITE", "41001 <- INVITE"]);
    let trying = one(&out, CALLER, "100 INVITE");
    assert_eq!(s(&trying.call_id), "basic-1");
    let inv = one(&out, PHONE1, "INVITE");
    assert_eq!(ruri(&inv), PHONE1_CONTACT, "Request-URI = the binding");
    assert_eq!(inv.max_forwards, Some(69), "Max-Forwards decremented");
    assert_ne!(s(&inv.call_id), "basic-1", "a new Call-ID on the B leg");
    assert_eq!(
        hv(&inv, "Contact").as_deref(),
        Some(APPLIANCE_CONTACT),
        "the appliance's Contact"
    );
    anchored(&inv, CALLER_SDP);
    assert_eq!(hv(&inv, "Content-Type").as_deref(), Some("application/sdp"));
    assert!(inv.from.tag().is_some());
    assert!(inv.to.tag().is_none());
    assert_eq!(inv.cseq.seq, 1);
    assert_eq!(s(&inv.to.uri.user), "1002");
    assert_eq!(s(&inv.from.uri.user), "1001");
    assert_eq!(s(&inv.top_via().host), "127.0.0.1");
    assert_eq!(inv.top_via().port, Some(5060));

    // 180 → the caller hears it, in a dialog of the appliance's.
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 180, PHONE_TAG, PHONE1_CONTACT, ""),
    );
    expect(&out, &["40000 <- 180 INVITE"]);
    let ringing = one(&out, CALLER, "180 INVITE");
    let a_tag = to_tag(&ringing).expect("180 has a To tag");
    assert_eq!(s(&ringing.call_id), "basic-1");
    assert_eq!(
        ringing.from.tag().map(|t| s(t)).as_deref(),
        Some("alice-basic-1")
    );
    assert_ne!(a_tag, PHONE_TAG, "the caller sees the appliance's tag");

    // 200 → ACK to the phone, 200 to the caller with the phone's SDP.
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["40000 <- 200 INVITE", "41001 <- ACK"]);
    let ack = one(&out, PHONE1, "ACK");
    assert_eq!(ruri(&ack), PHONE1_CONTACT, "ACK to the phone's Contact");
    assert_eq!(ack.cseq.seq, 1);
    assert_eq!(to_tag(&ack).as_deref(), Some(PHONE_TAG));
    assert_eq!(ack.call_id, inv.call_id);
    assert_ne!(branch(&ack), branch(&inv), "2xx ACK is its own transaction");
    let ok = one(&out, CALLER, "200 INVITE");
    anchored(&ok, PHONE1_SDP);
    assert_eq!(hv(&ok, "Content-Type").as_deref(), Some("application/sdp"));
    assert_eq!(hv(&ok, "Contact").as_deref(), Some(APPLIANCE_CONTACT));
    assert_eq!(to_tag(&ok), Some(a_tag.clone()), "same dialog as the 180");
    assert_eq!(s(&ok.call_id), "basic-1");

    // ACK → absorbed.
    let mut caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    assert_eq!(caller.target, "sip:sb@127.0.0.1:5060");
    expect(&w.send(CALLER, &caller.ack(1, "")), &[]);
    assert!(w.records.is_empty());

    // BYE → 200 to the caller, BYE to the phone.
    let out = w.send(CALLER, &caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41001 <- BYE"]);
    let bye = one(&out, PHONE1, "BYE");
    assert_eq!(ruri(&bye), PHONE1_CONTACT);
    assert_eq!(bye.call_id, inv.call_id);
    assert_eq!(to_tag(&bye).as_deref(), Some(PHONE_TAG));
    assert_eq!(bye.from.tag(), inv.from.tag());
    assert_eq!(bye.cseq.seq, 2, "the B leg's CSeq grows");
    expect(&w.send(PHONE1, &respond(&bye, 200, None, "", "")), &[]);

    let r = w.record();
    assert_eq!(r.cause, EndCause::Normal);
    assert_eq!(r.hung_up_by, Side::Caller);
    assert_eq!(r.call_id, "basic-1");
    assert_eq!(r.caller.user, "1001");
    assert_eq!(r.caller.peer, CALLER);
    assert_eq!(r.dialled, "1002");
    assert_eq!(r.callees.len(), 1);
    assert_eq!(r.callees[0].user, "1002");
    assert_eq!(r.callees[0].peer, PHONE1);
    assert_eq!(r.callees[0].status, Some(200));
    assert_eq!(r.callees[0].call_id, s(&inv.call_id));
    assert!(r.answered.is_some());
    assert_eq!(r.transfers, 0);
    w.assert_quiet();
}

#[test]
fn retransmitted_initial_invite_is_absorbed_not_forked_again() {
    let mut w = World::new();
    let text = caller_invite("1002", "retx-1", CALLER_SDP);
    let out = w.send(CALLER, &text);
    expect(&out, &["40000 <- 100 INVITE", "41001 <- INVITE"]);
    let out = w.send(CALLER, &text);
    expect(&out, &["40000 <- 100 INVITE"]);
    assert_eq!(w.ep.active_calls(), 1);
}

// ----------------------------------------------------------------------
// 2. Callee hangs up
// ----------------------------------------------------------------------

#[test]
fn callee_bye_is_answered_and_caller_gets_bye() {
    let mut w = World::new();
    let mut c = connect(&mut w, "calleebye-1");
    let out = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    expect(&out, &["40000 <- BYE", "41001 <- 200 BYE"]);
    let bye = one(&out, CALLER, "BYE");
    assert_eq!(
        ruri(&bye),
        "sip:1001@127.0.0.1:40000",
        "to the caller's Contact"
    );
    assert_eq!(s(&bye.call_id), "calleebye-1");
    assert_eq!(
        to_tag(&bye).as_deref(),
        Some("alice-calleebye-1"),
        "To = the caller's From"
    );
    assert_eq!(bye.from.tag().map(|t| s(t)), Some(c.a_tag.clone()));
    assert_eq!(
        bye.cseq.seq, 1,
        "first request of the appliance on the A leg"
    );
    expect(&w.send(CALLER, &respond(&bye, 200, None, "", "")), &[]);
    let r = w.record();
    assert_eq!(r.cause, EndCause::Normal);
    assert_eq!(r.hung_up_by, Side::Callee);
    // The A leg is gone: a late BYE from the caller gets 481.
    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 481 BYE"]);
    let _ = &c.a_invite;
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// 3. / 4. CANCEL
// ----------------------------------------------------------------------

#[test]
fn caller_cancel_while_ringing_cancels_the_phone() {
    let mut w = World::new();
    let (a_inv, b_inv) = ring(&mut w, "cancel-1");
    let out = w.send(CALLER, &cancel_for(&a_inv));
    expect(
        &out,
        &[
            "40000 <- 200 CANCEL",
            "40000 <- 487 INVITE",
            "41001 <- CANCEL",
        ],
    );
    let r487 = one(&out, CALLER, "487 INVITE");
    assert!(to_tag(&r487).is_some());
    let cancel = one(&out, PHONE1, "CANCEL");
    assert_eq!(branch(&cancel), branch(&b_inv), "§9.1: the INVITE's branch");
    assert_eq!(ruri(&cancel), ruri(&b_inv));
    assert_eq!(cancel.cseq.seq, b_inv.cseq.seq);
    assert_eq!(cancel.call_id, b_inv.call_id);
    assert!(cancel.to.tag().is_none(), "§9.1: To as in the INVITE");
    // The caller ACKs its 487.
    expect(&w.send(CALLER, &ack_non2xx(&a_inv, &r487)), &[]);
    // The phone answers the CANCEL and its INVITE.
    expect(&w.send(PHONE1, &respond(&cancel, 200, None, "", "")), &[]);
    let out = w.send(PHONE1, &respond(&b_inv, 487, Some(PHONE_TAG), "", ""));
    expect(&out, &["41001 <- ACK"]);
    let ack = one(&out, PHONE1, "ACK");
    assert_eq!(branch(&ack), branch(&b_inv), "non-2xx ACK: same branch");
    assert_eq!(ack.cseq.seq, 1);
    assert_eq!(to_tag(&ack).as_deref(), Some(PHONE_TAG));
    let r = w.record();
    assert_eq!(r.cause, EndCause::CallerCancelled);
    assert_eq!(r.hung_up_by, Side::Caller);
    assert!(r.answered.is_none());
    w.assert_quiet();
}

#[test]
fn cancel_before_any_provisional_waits_for_the_first_1xx() {
    let mut w = World::new();
    let text = caller_invite("1002", "cancel-2", CALLER_SDP);
    let a_inv = parse_text(&text);
    let out = w.send(CALLER, &text);
    let b_inv = one(&out, PHONE1, "INVITE");
    let out = w.send(CALLER, &cancel_for(&a_inv));
    expect(&out, &["40000 <- 200 CANCEL", "40000 <- 487 INVITE"]);
    // Timer A still retransmits the INVITE, but no CANCEL goes out.
    let out = w.advance(Duration::from_millis(1600));
    assert_eq!(
        count(&out, PHONE1, "INVITE"),
        2,
        "Timer A at 0.5 s and 1.5 s"
    );
    assert_eq!(count(&out, PHONE1, "CANCEL"), 0, "§9.1: not before a 1xx");
    // The first provisional: the CANCEL follows at once.
    let out = w.send(
        PHONE1,
        &phone_answer(&b_inv, 180, PHONE_TAG, PHONE1_CONTACT, ""),
    );
    expect(&out, &["41001 <- CANCEL"]);
    let cancel = one(&out, PHONE1, "CANCEL");
    assert_eq!(branch(&cancel), branch(&b_inv));
    expect(&w.send(PHONE1, &respond(&cancel, 200, None, "", "")), &[]);
    let out = w.send(PHONE1, &respond(&b_inv, 487, Some(PHONE_TAG), "", ""));
    expect(&out, &["41001 <- ACK"]);
    w.assert_quiet();
}

/// RFC 3261 §9.1: a CANCEL may be sent once *any* provisional response
/// arrived, 100 Trying included.
#[test]
fn cancel_goes_out_after_100_trying() {
    let mut w = World::new();
    let text = caller_invite("1002", "cancel-3", CALLER_SDP);
    let a_inv = parse_text(&text);
    let out = w.send(CALLER, &text);
    let b_inv = one(&out, PHONE1, "INVITE");
    expect(&w.send(PHONE1, &respond(&b_inv, 100, None, "", "")), &[]);
    let out = w.send(CALLER, &cancel_for(&a_inv));
    assert_eq!(
        count(&out, PHONE1, "CANCEL"),
        1,
        "CANCEL after 100; sent: {:?}",
        summary(&out)
    );
}

/// After a CANCEL the phone must answer the INVITE (487); one that never
/// does leaves the INVITE client transaction in Proceeding for ever —
/// RFC 3261 §9.1 says to give up on it after 64·T1.
#[test]
fn cancelled_leg_without_final_response_is_given_up() {
    let mut w = World::new();
    let (a_inv, _b_inv) = ring(&mut w, "cancel-4");
    let out = w.send(CALLER, &cancel_for(&a_inv));
    let cancel = one(&out, PHONE1, "CANCEL");
    let r487 = one(&out, CALLER, "487 INVITE");
    w.send(CALLER, &ack_non2xx(&a_inv, &r487));
    expect(&w.send(PHONE1, &respond(&cancel, 200, None, "", "")), &[]);
    // The phone never sends its 487.
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// 5. Failures
// ----------------------------------------------------------------------

#[test]
fn phone_failures_are_mapped_for_the_caller() {
    for (phone, caller) in [(486, 486), (503, 500), (603, 603)] {
        let mut w = World::new();
        let text = caller_invite("1002", &format!("fail-{phone}"), CALLER_SDP);
        let a_inv = parse_text(&text);
        let out = w.send(CALLER, &text);
        let b_inv = one(&out, PHONE1, "INVITE");
        let out = w.send(PHONE1, &respond(&b_inv, phone, Some(PHONE_TAG), "", ""));
        expect(
            &out,
            &["41001 <- ACK", &format!("40000 <- {caller} INVITE")],
        );
        let ack = one(&out, PHONE1, "ACK");
        assert_eq!(branch(&ack), branch(&b_inv));
        let fin = one(&out, CALLER, &format!("{caller} INVITE"));
        assert!(to_tag(&fin).is_some());
        // The retransmitted final gets the same ACK; the caller hears nothing new.
        let out = w.send(PHONE1, &respond(&b_inv, phone, Some(PHONE_TAG), "", ""));
        expect(&out, &["41001 <- ACK"]);
        expect(&w.send(CALLER, &ack_non2xx(&a_inv, &fin)), &[]);
        let r = w.record();
        assert_eq!(r.cause, EndCause::Failed(caller), "phone {phone}");
        assert_eq!(r.callees[0].status, Some(phone));
        w.assert_quiet();
    }
}

#[test]
fn forked_failures_pick_the_best_answer() {
    let mut w = World::new();
    w.bind(
        "1002",
        &[(PHONE1, PHONE1_CONTACT), (PHONE2, PHONE2_CONTACT)],
    );
    let out = w.send(CALLER, &caller_invite("1002", "fail-fork", CALLER_SDP));
    let i1 = one(&out, PHONE1, "INVITE");
    let i2 = one(&out, PHONE2, "INVITE");
    let out = w.send(PHONE1, &respond(&i1, 486, Some("t1"), "", ""));
    expect(&out, &["41001 <- ACK"]);
    let out = w.send(PHONE2, &respond(&i2, 603, Some("t2"), "", ""));
    expect(&out, &["41002 <- ACK", "40000 <- 603 INVITE"]);
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// 6. Refusals
// ----------------------------------------------------------------------

#[test]
fn unknown_user_404_unregistered_user_480() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("5555", "unknown-1", CALLER_SDP));
    expect(&out, &["40000 <- 100 INVITE", "40000 <- 404 INVITE"]);
    assert!(to_tag(&one(&out, CALLER, "404 INVITE")).is_some());
    let out = w.send(CALLER, &caller_invite("1004", "unbound-1", CALLER_SDP));
    expect(&out, &["40000 <- 100 INVITE", "40000 <- 480 INVITE"]);
    // An expired binding counts as none.
    w.advance(Duration::from_secs(3601));
    let out = w.send(CALLER, &caller_invite("1002", "expired-1", CALLER_SDP));
    expect(&out, &["40000 <- 100 INVITE", "40000 <- 480 INVITE"]);
    assert_eq!(w.ep.active_calls(), 0);
    w.assert_quiet();
}

#[test]
fn drain_ends_calls_and_refuses_new_invites_with_503() {
    let mut w = World::new();
    let c = connect(&mut w, "drain-1");
    w.ep.begin_drain(w.now);
    let out = w.collect();
    expect(&out, &["40000 <- BYE", "41001 <- BYE"]);
    let b1 = one(&out, CALLER, "BYE");
    let b2 = one(&out, PHONE1, "BYE");
    assert_eq!(w.record().cause, EndCause::Shutdown);
    let out = w.send(CALLER, &caller_invite("1002", "drain-2", CALLER_SDP));
    let refused = out
        .iter()
        .find(|(_, m)| m.status().is_some_and(|s| s >= 200))
        .map(|(_, m)| m.clone())
        .expect("a final answer");
    assert_eq!(refused.status(), Some(503));
    assert_eq!(hv(&refused, "Retry-After").as_deref(), Some("30"));
    assert_eq!(count(&out, PHONE1, "INVITE"), 0);
    w.send(CALLER, &respond(&b1, 200, None, "", ""));
    w.send(PHONE1, &respond(&b2, 200, None, "", ""));
    let _ = c;
    w.assert_quiet();
}

#[test]
fn drain_while_ringing_answers_503_and_cancels() {
    let mut w = World::new();
    let (_a, _b) = ring(&mut w, "drain-3");
    w.ep.begin_drain(w.now);
    let out = w.collect();
    expect(&out, &["40000 <- 503 INVITE", "41001 <- CANCEL"]);
}

// ----------------------------------------------------------------------
// 7. No answer
// ----------------------------------------------------------------------

#[test]
fn no_answer_gives_480_and_cancels_the_phone() {
    let mut w = World::new();
    let (a_inv, b_inv) = ring(&mut w, "noanswer-1");
    let out = w.advance(Duration::from_millis(29_900));
    expect(&out, &[]);
    let out = w.advance(Duration::from_millis(100));
    expect(&out, &["40000 <- 480 INVITE", "41001 <- CANCEL"]);
    let fin = one(&out, CALLER, "480 INVITE");
    let cancel = one(&out, PHONE1, "CANCEL");
    assert_eq!(branch(&cancel), branch(&b_inv));
    w.send(CALLER, &ack_non2xx(&a_inv, &fin));
    w.send(PHONE1, &respond(&cancel, 200, None, "", ""));
    expect(
        &w.send(PHONE1, &respond(&b_inv, 487, Some(PHONE_TAG), "", "")),
        &["41001 <- ACK"],
    );
    assert_eq!(w.record().cause, EndCause::NoAnswer);
    w.assert_quiet();
}

/// A phone that answered 100 Trying and then stays silent: the no-answer
/// timer answers the caller, and the phone must be CANCELled (§9.1 allows
/// it after the 100) — otherwise it rings for ever and its INVITE client
/// transaction (Proceeding, no timer) never ends.
#[test]
fn no_answer_after_only_100_trying_cancels_the_phone() {
    let mut w = World::new();
    let text = caller_invite("1002", "noanswer-2", CALLER_SDP);
    let out = w.send(CALLER, &text);
    let b_inv = one(&out, PHONE1, "INVITE");
    expect(&w.send(PHONE1, &respond(&b_inv, 100, None, "", "")), &[]);
    let out = w.advance(Duration::from_secs(30));
    assert_eq!(count(&out, CALLER, "480 INVITE"), 1);
    assert_eq!(
        count(&out, PHONE1, "CANCEL"),
        1,
        "phone must be cancelled; sent: {:?}",
        summary(&out)
    );
    w.assert_quiet();
}

#[test]
fn dead_phone_times_out_and_caller_gets_480() {
    let mut w = World::new();
    let text = caller_invite("1002", "dead-1", CALLER_SDP);
    let a_inv = parse_text(&text);
    let out = w.send(CALLER, &text);
    let _ = one(&out, PHONE1, "INVITE");
    let out = w.advance(Duration::from_secs(30));
    let fin = one(&out, CALLER, "480 INVITE");
    assert_eq!(
        count(&out, PHONE1, "INVITE"),
        5,
        "Timer A: 0.5 1.5 3.5 7.5 15.5 s"
    );
    assert_eq!(count(&out, PHONE1, "CANCEL"), 0, "never rang: no CANCEL");
    expect(&w.send(CALLER, &ack_non2xx(&a_inv, &fin)), &[]);
    // Timer A's last retransmission (31.5 s), then Timer B (32 s) ends
    // the B leg quietly.
    let out = w.advance(Duration::from_secs(3));
    expect(&out, &["41001 <- INVITE"]);
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// 8. Forking
// ----------------------------------------------------------------------

#[test]
fn forking_first_answer_wins_others_cancelled_late_200_gets_ack_and_bye() {
    let mut w = World::new();
    w.bind(
        "1002",
        &[(PHONE1, PHONE1_CONTACT), (PHONE2, PHONE2_CONTACT)],
    );
    let out = w.send(CALLER, &caller_invite("1002", "fork-1", CALLER_SDP));
    expect(
        &out,
        &["40000 <- 100 INVITE", "41001 <- INVITE", "41002 <- INVITE"],
    );
    let i1 = one(&out, PHONE1, "INVITE");
    let i2 = one(&out, PHONE2, "INVITE");
    assert_eq!(ruri(&i1), PHONE1_CONTACT);
    assert_eq!(ruri(&i2), PHONE2_CONTACT);
    assert_ne!(i1.call_id, i2.call_id);
    assert_ne!(i1.from.tag(), i2.from.tag());
    anchored(&i1, CALLER_SDP);
    assert_eq!(body(&i1), body(&i2), "the forks share the callee-side port");

    let out = w.send(PHONE1, &phone_answer(&i1, 180, "t1", PHONE1_CONTACT, ""));
    expect(&out, &["40000 <- 180 INVITE"]);
    let out = w.send(
        PHONE2,
        &phone_answer(&i2, 200, "t2", PHONE2_CONTACT, PHONE2_SDP),
    );
    expect(
        &out,
        &["40000 <- 200 INVITE", "41001 <- CANCEL", "41002 <- ACK"],
    );
    let ok = one(&out, CALLER, "200 INVITE");
    anchored(&ok, PHONE2_SDP);
    let cancel = one(&out, PHONE1, "CANCEL");
    assert_eq!(branch(&cancel), branch(&i1));
    let mut caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    expect(&w.send(CALLER, &caller.ack(1, "")), &[]);

    // PHONE1 had answered before the CANCEL reached it.
    expect(&w.send(PHONE1, &respond(&cancel, 200, None, "", "")), &[]);
    let out = w.send(
        PHONE1,
        &phone_answer(&i1, 200, "t1", PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["41001 <- ACK", "41001 <- BYE"]);
    let ack = one(&out, PHONE1, "ACK");
    let bye = one(&out, PHONE1, "BYE");
    assert_eq!(ack.cseq.seq, 1);
    assert_eq!(to_tag(&ack).as_deref(), Some("t1"));
    assert_eq!(to_tag(&bye).as_deref(), Some("t1"));
    assert_eq!(bye.call_id, i1.call_id);
    assert!(bye.cseq.seq > 1);
    assert_eq!(ruri(&bye), PHONE1_CONTACT);
    expect(&w.send(PHONE1, &respond(&bye, 200, None, "", "")), &[]);

    // The call goes on with PHONE2.
    assert_eq!(w.ep.active_calls(), 1);
    let out = w.send(CALLER, &caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41002 <- BYE"]);
    let bye2 = one(&out, PHONE2, "BYE");
    w.send(PHONE2, &respond(&bye2, 200, None, "", ""));
    let r = w.record();
    assert_eq!(r.callees.len(), 2);
    assert_eq!(
        r.callees.iter().filter(|c| c.status == Some(200)).count(),
        2
    );
    w.assert_quiet();
}

#[test]
fn forking_unrung_fork_is_cancelled_on_its_first_1xx() {
    let mut w = World::new();
    w.bind(
        "1002",
        &[(PHONE1, PHONE1_CONTACT), (PHONE2, PHONE2_CONTACT)],
    );
    let out = w.send(CALLER, &caller_invite("1002", "fork-2", CALLER_SDP));
    let i1 = one(&out, PHONE1, "INVITE");
    let i2 = one(&out, PHONE2, "INVITE");
    let out = w.send(
        PHONE2,
        &phone_answer(&i2, 200, "t2", PHONE2_CONTACT, PHONE2_SDP),
    );
    expect(&out, &["40000 <- 200 INVITE", "41002 <- ACK"]);
    let ok = one(&out, CALLER, "200 INVITE");
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    w.send(CALLER, &caller.ack(1, ""));
    // PHONE1's 180 shows up late: CANCEL it, and the caller hears nothing.
    let out = w.send(PHONE1, &phone_answer(&i1, 180, "t1", PHONE1_CONTACT, ""));
    expect(&out, &["41001 <- CANCEL"]);
    let cancel = one(&out, PHONE1, "CANCEL");
    w.send(PHONE1, &respond(&cancel, 200, None, "", ""));
    expect(
        &w.send(PHONE1, &respond(&i1, 487, Some("t1"), "", "")),
        &["41001 <- ACK"],
    );
}

// ----------------------------------------------------------------------
// 9. re-INVITE (hold) and glare
// ----------------------------------------------------------------------

#[test]
fn reinvite_hold_is_relayed_and_glare_gets_491() {
    let mut w = World::new();
    let mut c = connect(&mut w, "hold-1");
    let out = w.send(CALLER, &c.caller.request("INVITE", "", CALLER_HOLD_SDP));
    expect(&out, &["41001 <- INVITE"]);
    let re = one(&out, PHONE1, "INVITE");
    anchored(&re, CALLER_HOLD_SDP);
    assert_eq!(re.call_id, c.b_invite.call_id, "in the B dialog");
    assert_eq!(to_tag(&re).as_deref(), Some(PHONE_TAG));
    assert_eq!(re.from.tag(), c.b_invite.from.tag());
    assert_eq!(re.cseq.seq, 2);
    assert_eq!(ruri(&re), PHONE1_CONTACT);
    assert_eq!(hv(&re, "Contact").as_deref(), Some(APPLIANCE_CONTACT));

    // Glare: another re-INVITE from either side while this one is pending.
    let glare_a = c.caller.request("INVITE", "", CALLER_SDP);
    let out = w.send(CALLER, &glare_a);
    expect(&out, &["40000 <- 491 INVITE"]);
    let r491 = one(&out, CALLER, "491 INVITE");
    expect(
        &w.send(CALLER, &ack_non2xx(&parse_text(&glare_a), &r491)),
        &[],
    );
    let glare_b = c.phone.request("INVITE", "", PHONE1_SDP);
    let out = w.send(PHONE1, &glare_b);
    expect(&out, &["41001 <- 491 INVITE"]);
    let r491 = one(&out, PHONE1, "491 INVITE");
    expect(
        &w.send(PHONE1, &ack_non2xx(&parse_text(&glare_b), &r491)),
        &[],
    );

    // The phone accepts the hold.
    let out = w.send(
        PHONE1,
        &phone_answer(&re, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_HOLD_ANSWER),
    );
    expect(&out, &["40000 <- 200 INVITE", "41001 <- ACK"]);
    let ack = one(&out, PHONE1, "ACK");
    assert_eq!(ack.cseq.seq, 2);
    assert_eq!(ack.call_id, re.call_id);
    let ok = one(&out, CALLER, "200 INVITE");
    anchored(&ok, PHONE1_HOLD_ANSWER);
    assert_eq!(ok.cseq.seq, 2, "answers the caller's CSeq 2");
    assert_eq!(hv(&ok, "Contact").as_deref(), Some(APPLIANCE_CONTACT));
    // The caller's ACK is absorbed.
    expect(&w.send(CALLER, &c.caller.ack(2, "")), &[]);

    // Resume from the phone's side now works (nothing pending).
    let out = w.send(PHONE1, &c.phone.request("INVITE", "", PHONE1_SDP));
    expect(&out, &["40000 <- INVITE"]);
    let re_a = one(&out, CALLER, "INVITE");
    anchored(&re_a, PHONE1_SDP);
    assert_eq!(s(&re_a.call_id), "hold-1");
    assert_eq!(ruri(&re_a), "sip:1001@127.0.0.1:40000");
    let out = w.send(
        CALLER,
        &respond(
            &re_a,
            200,
            None,
            "Contact: <sip:1001@127.0.0.1:40000>\r\n",
            CALLER_SDP,
        ),
    );
    expect(&out, &["40000 <- ACK", "41001 <- 200 INVITE"]);
    let ok = one(&out, PHONE1, "200 INVITE");
    anchored(&ok, CALLER_SDP);
    expect(&w.send(PHONE1, &c.phone.ack(c.phone.cseq, "")), &[]);

    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41001 <- BYE"]);
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    let _ = (&c.a_invite, &c.b_ack);
    w.assert_quiet();
}

#[test]
fn reinvite_rejected_by_the_phone_is_relayed_and_the_call_survives() {
    let mut w = World::new();
    let mut c = connect(&mut w, "hold-2");
    let re_text = c.caller.request("INVITE", "", CALLER_HOLD_SDP);
    let out = w.send(CALLER, &re_text);
    let re = one(&out, PHONE1, "INVITE");
    let out = w.send(PHONE1, &respond(&re, 488, None, "", ""));
    expect(&out, &["40000 <- 488 INVITE", "41001 <- ACK"]);
    let r = one(&out, CALLER, "488 INVITE");
    w.send(CALLER, &ack_non2xx(&parse_text(&re_text), &r));
    // Not busy any more: a new re-INVITE goes through.
    let out = w.send(CALLER, &c.caller.request("INVITE", "", CALLER_SDP));
    expect(&out, &["41001 <- INVITE"]);
    assert_eq!(w.ep.active_calls(), 1);
}

// ----------------------------------------------------------------------
// 10. INFO / OPTIONS
// ----------------------------------------------------------------------

#[test]
fn info_and_options_are_relayed_both_ways() {
    let mut w = World::new();
    let mut c = connect(&mut w, "info-1");
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let out = w.send(
        CALLER,
        &c.caller
            .request("INFO", "Content-Type: application/dtmf-relay\r\n", dtmf),
    );
    expect(&out, &["41001 <- INFO"]);
    let info = one(&out, PHONE1, "INFO");
    assert_eq!(body(&info), dtmf);
    assert_eq!(
        hv(&info, "Content-Type").as_deref(),
        Some("application/dtmf-relay")
    );
    assert_eq!(info.call_id, c.b_invite.call_id);
    assert_eq!(to_tag(&info).as_deref(), Some(PHONE_TAG));
    let out = w.send(PHONE1, &respond(&info, 200, None, "", ""));
    expect(&out, &["40000 <- 200 INFO"]);
    let ok = one(&out, CALLER, "200 INFO");
    assert_eq!(ok.cseq.seq, c.caller.cseq);
    assert_eq!(s(&ok.call_id), "info-1");

    // OPTIONS from the phone, answered with a body-less 200.
    let out = w.send(
        PHONE1,
        &c.phone
            .request("OPTIONS", "Accept: application/sdp\r\n", ""),
    );
    expect(&out, &["40000 <- OPTIONS"]);
    let opt = one(&out, CALLER, "OPTIONS");
    assert_eq!(s(&opt.call_id), "info-1");
    assert_eq!(to_tag(&opt).as_deref(), Some("alice-info-1"));
    let out = w.send(
        CALLER,
        &respond(&opt, 200, None, "Allow: INVITE, ACK, BYE\r\n", ""),
    );
    expect(&out, &["41001 <- 200 OPTIONS"]);
    let ok = one(&out, PHONE1, "200 OPTIONS");
    assert_eq!(ok.cseq.seq, c.phone.cseq);

    // A failure is relayed as well (INFO refused by the caller).
    let out = w.send(
        PHONE1,
        &c.phone
            .request("INFO", "Content-Type: application/dtmf-relay\r\n", dtmf),
    );
    let info = one(&out, CALLER, "INFO");
    let out = w.send(CALLER, &respond(&info, 415, None, "", ""));
    expect(&out, &["41001 <- 415 INFO"]);
    assert_eq!(w.ep.active_calls(), 1);

    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    w.assert_quiet();
}

#[test]
fn in_dialog_request_with_old_cseq_gets_500() {
    let mut w = World::new();
    let mut c = connect(&mut w, "cseq-1");
    let out = w.send(CALLER, &c.caller.request("INFO", "", ""));
    let info = one(&out, PHONE1, "INFO");
    w.send(PHONE1, &respond(&info, 200, None, "", ""));
    // CSeq 2 again, new transaction.
    let stale = c.caller.build("INFO", c.caller.cseq, "", "");
    expect(&w.send(CALLER, &stale), &["40000 <- 500 INFO"]);
}

// ----------------------------------------------------------------------
// 11. REFER (blind transfer)
// ----------------------------------------------------------------------

#[test]
fn refer_from_callee_moves_the_caller_to_the_target() {
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-1");
    let out = w.send(
        PHONE1,
        &c.phone.request(
            "REFER",
            "Refer-To: <sip:1003@switchboard.local>\r\nReferred-By: <sip:1002@switchboard.local>\r\n",
            "",
        ),
    );
    expect(
        &out,
        &["41001 <- 202 REFER", "41001 <- NOTIFY", "41003 <- INVITE"],
    );
    let notify = one(&out, PHONE1, "NOTIFY");
    assert_eq!(body(&notify).trim_end(), "SIP/2.0 100 Trying");
    assert_eq!(hv(&notify, "Event").as_deref(), Some("refer"));
    assert!(
        hv(&notify, "Subscription-State")
            .unwrap()
            .starts_with("active"),
    );
    assert_eq!(
        hv(&notify, "Content-Type").as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    assert_eq!(
        notify.call_id, c.b_invite.call_id,
        "in the referrer's dialog"
    );
    assert_eq!(to_tag(&notify).as_deref(), Some(PHONE_TAG));
    expect(&w.send(PHONE1, &respond(&notify, 200, None, "", "")), &[]);

    let i3 = one(&out, PHONE3, "INVITE");
    assert_eq!(ruri(&i3), PHONE3_CONTACT);
    assert!(i3.body.is_empty(), "offerless INVITE");
    assert!(hv(&i3, "Content-Type").is_none());
    assert_ne!(i3.call_id, c.b_invite.call_id);
    assert_eq!(s(&i3.from.uri.user), "1001", "the target sees the caller");
    assert_eq!(s(&i3.to.uri.user), "1003");

    // The target answers with its offer: the caller is re-INVITEd with it.
    let out = w.send(PHONE3, &phone_answer(&i3, 180, "t3", PHONE3_CONTACT, ""));
    // Progress reaches the referrer (RFC 3515 §2.4.5); the caller hears nothing.
    expect(&out, &["41001 <- NOTIFY"]);
    let n = one(&out, PHONE1, "NOTIFY");
    assert_eq!(body(&n).trim_end(), "SIP/2.0 180 Ringing");
    assert!(n.cseq.seq > notify.cseq.seq);
    expect(&w.send(PHONE1, &respond(&n, 200, None, "", "")), &[]);
    let out = w.send(
        PHONE3,
        &phone_answer(&i3, 200, "t3", PHONE3_CONTACT, PHONE3_SDP),
    );
    expect(&out, &["40000 <- INVITE"]);
    let re = one(&out, CALLER, "INVITE");
    anchored(&re, PHONE3_SDP);
    assert_eq!(s(&re.call_id), "refer-1");
    assert_eq!(to_tag(&re).as_deref(), Some("alice-refer-1"));
    assert_eq!(hv(&re, "Contact").as_deref(), Some(APPLIANCE_CONTACT));

    // The caller answers: ACK to both, with the caller's answer to 1003.
    let out = w.send(
        CALLER,
        &respond(
            &re,
            200,
            None,
            "Contact: <sip:1001@127.0.0.1:40000>\r\n",
            CALLER_REANSWER_SDP,
        ),
    );
    expect(&out, &["40000 <- ACK", "41003 <- ACK", "41001 <- NOTIFY"]);
    let a_ack = one(&out, CALLER, "ACK");
    assert_eq!(a_ack.cseq.seq, re.cseq.seq);
    assert!(a_ack.body.is_empty());
    let t_ack = one(&out, PHONE3, "ACK");
    assert_eq!(t_ack.cseq.seq, 1);
    assert_eq!(t_ack.call_id, i3.call_id);
    assert_eq!(to_tag(&t_ack).as_deref(), Some("t3"));
    // The answer rides in the ACK.
    anchored(&t_ack, CALLER_REANSWER_SDP);
    assert_eq!(
        hv(&t_ack, "Content-Type").as_deref(),
        Some("application/sdp")
    );
    let fin = one(&out, PHONE1, "NOTIFY");
    assert_eq!(body(&fin).trim_end(), "SIP/2.0 200 OK");
    assert!(
        hv(&fin, "Subscription-State")
            .unwrap()
            .starts_with("terminated"),
    );
    assert!(fin.cseq.seq > notify.cseq.seq);
    expect(&w.send(PHONE1, &respond(&fin, 200, None, "", "")), &[]);

    // The transferor leaves: the call stays.
    let out = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    expect(&out, &["41001 <- 200 BYE"]);
    assert_eq!(w.ep.active_calls(), 1);
    assert!(w.records.is_empty());

    // The caller hangs up: 1003 gets the BYE.
    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41003 <- BYE"]);
    let bye = one(&out, PHONE3, "BYE");
    assert_eq!(bye.call_id, i3.call_id);
    assert_eq!(to_tag(&bye).as_deref(), Some("t3"));
    assert_eq!(ruri(&bye), PHONE3_CONTACT);
    w.send(PHONE3, &respond(&bye, 200, None, "", ""));
    let r = w.record();
    assert_eq!(r.transfers, 1);
    assert_eq!(r.cause, EndCause::Normal);
    assert_eq!(r.hung_up_by, Side::Caller);
    assert_eq!(r.callees.len(), 2);
    assert_eq!(r.callees[1].user, "1003");
    assert_eq!(r.callees[1].status, Some(200));
    w.assert_quiet();
}

#[test]
fn transferred_caller_and_target_talk_in_dialog() {
    // After the transfer, in-dialog requests flow caller <-> 1003.
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-2");
    let out = w.send(
        PHONE1,
        &c.phone
            .request("REFER", "Refer-To: <sip:1003@switchboard.local>\r\n", ""),
    );
    let n = one(&out, PHONE1, "NOTIFY");
    w.send(PHONE1, &respond(&n, 200, None, "", ""));
    let i3 = one(&out, PHONE3, "INVITE");
    let out = w.send(
        PHONE3,
        &phone_answer(&i3, 200, "t3", PHONE3_CONTACT, PHONE3_SDP),
    );
    let re = one(&out, CALLER, "INVITE");
    let out = w.send(
        CALLER,
        &respond(
            &re,
            200,
            None,
            "Contact: <sip:1001@127.0.0.1:40000>\r\n",
            CALLER_REANSWER_SDP,
        ),
    );
    let n = one(&out, PHONE1, "NOTIFY");
    w.send(PHONE1, &respond(&n, 200, None, "", ""));
    let out = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    expect(&out, &["41001 <- 200 BYE"]);
    // INFO from the caller goes to 1003 now.
    let out = w.send(CALLER, &c.caller.request("INFO", "", ""));
    expect(&out, &["41003 <- INFO"]);
    let info = one(&out, PHONE3, "INFO");
    assert_eq!(info.call_id, i3.call_id);
    assert_eq!(info.cseq.seq, 2, "after the INVITE's CSeq 1");
    expect(
        &w.send(PHONE3, &respond(&info, 200, None, "", "")),
        &["40000 <- 200 INFO"],
    );
    // 1003 hangs up: the caller gets the BYE.
    let mut target = Dlg::uas(&i3, PHONE3, "t3", PHONE3_CONTACT);
    let out = w.send(PHONE3, &target.request("BYE", "", ""));
    expect(&out, &["41003 <- 200 BYE", "40000 <- BYE"]);
    let bye = one(&out, CALLER, "BYE");
    w.send(CALLER, &respond(&bye, 200, None, "", ""));
    assert_eq!(w.record().hung_up_by, Side::Callee);
    w.assert_quiet();
}

#[test]
fn refer_to_unknown_user_gets_404_and_the_call_continues() {
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-3");
    let out = w.send(
        PHONE1,
        &c.phone
            .request("REFER", "Refer-To: <sip:5555@switchboard.local>\r\n", ""),
    );
    expect(&out, &["41001 <- 404 REFER"]);
    let out = w.send(
        PHONE1,
        &c.phone
            .request("REFER", "Refer-To: <sip:1004@switchboard.local>\r\n", ""),
    );
    expect(&out, &["41001 <- 480 REFER"]);
    assert_eq!(w.ep.active_calls(), 1);
    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41001 <- BYE"]);
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    assert_eq!(w.record().transfers, 0);
    w.assert_quiet();
}

#[test]
fn refer_from_the_caller_is_refused() {
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-4");
    let out = w.send(
        CALLER,
        &c.caller
            .request("REFER", "Refer-To: <sip:1003@switchboard.local>\r\n", ""),
    );
    expect(&out, &["40000 <- 403 REFER"]);
    assert_eq!(count(&out, PHONE3, "INVITE"), 0);
}

#[test]
fn transfer_target_busy_notifies_failure_and_keeps_the_call() {
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-5");
    let out = w.send(
        PHONE1,
        &c.phone
            .request("REFER", "Refer-To: <sip:1003@switchboard.local>\r\n", ""),
    );
    let n = one(&out, PHONE1, "NOTIFY");
    w.send(PHONE1, &respond(&n, 200, None, "", ""));
    let i3 = one(&out, PHONE3, "INVITE");
    let out = w.send(PHONE3, &respond(&i3, 486, Some("t3"), "", ""));
    expect(&out, &["41003 <- ACK", "41001 <- NOTIFY"]);
    let n = one(&out, PHONE1, "NOTIFY");
    assert_eq!(body(&n).trim_end(), "SIP/2.0 486 Busy Here");
    assert!(
        hv(&n, "Subscription-State")
            .unwrap()
            .starts_with("terminated")
    );
    w.send(PHONE1, &respond(&n, 200, None, "", ""));
    // Caller and phone still connected.
    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41001 <- BYE"]);
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// 12. / 13. 2xx retransmission and ACK
// ----------------------------------------------------------------------

#[test]
fn caller_never_acks_200_then_both_legs_get_bye() {
    let mut w = World::new();
    let (_a_inv, b_inv) = ring(&mut w, "noack-1");
    let out = w.send(
        PHONE1,
        &phone_answer(&b_inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let first = one(&out, CALLER, "200 INVITE");
    // 64·T1 = 32 s: retransmissions at T1, doubling up to T2.
    let out = w.advance(Duration::from_millis(31_999));
    let retx: Vec<&Message> = out
        .iter()
        .filter(|(a, m)| *a == CALLER && describe(m) == "200 INVITE")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        retx.len(),
        10,
        "0.5 1.5 3.5 7.5 11.5 … 31.5 s: {:?}",
        summary(&out)
    );
    assert!(
        retx.iter()
            .all(|m| is_anchored(m, PHONE1_SDP) && to_tag(m) == to_tag(&first))
    );
    assert_eq!(count(&out, CALLER, "BYE") + count(&out, PHONE1, "BYE"), 0);
    let out = w.advance(Duration::from_millis(1));
    expect(&out, &["40000 <- BYE", "41001 <- BYE"]);
    let b1 = one(&out, CALLER, "BYE");
    let b2 = one(&out, PHONE1, "BYE");
    assert_eq!(w.record().cause, EndCause::LegLost);
    w.send(CALLER, &respond(&b1, 200, None, "", ""));
    w.send(PHONE1, &respond(&b2, 200, None, "", ""));
    let out = w.advance(Duration::from_secs(60));
    assert_eq!(
        count(&out, CALLER, "200 INVITE"),
        0,
        "no 200 after giving up"
    );
    w.assert_quiet();
}

#[test]
fn retransmitted_200_from_phone_gets_the_same_ack() {
    let mut w = World::new();
    let c = connect(&mut w, "retx200-1");
    let again = phone_answer(&c.b_invite, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP);
    for _ in 0..2 {
        let out = w.send(PHONE1, &again);
        expect(&out, &["41001 <- ACK"]);
        let ack = one(&out, PHONE1, "ACK");
        assert_eq!(branch(&ack), branch(&c.b_ack), "the very same ACK");
        assert_eq!(ack.cseq, c.b_ack.cseq);
    }
    assert_eq!(w.ep.active_calls(), 1);
}

#[test]
fn retransmitted_200_to_caller_stops_at_its_ack() {
    let mut w = World::new();
    let (_a, b_inv) = ring(&mut w, "retx200-2");
    let out = w.send(
        PHONE1,
        &phone_answer(&b_inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    let out = w.advance(Duration::from_millis(600));
    assert_eq!(count(&out, CALLER, "200 INVITE"), 1);
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    expect(&w.send(CALLER, &caller.ack(1, "")), &[]);
    let out = w.advance(Duration::from_secs(40));
    expect(&out, &[]);
    assert_eq!(w.ep.active_calls(), 1);
}

// ----------------------------------------------------------------------
// Route sets
// ----------------------------------------------------------------------

#[test]
fn record_route_gives_both_legs_their_route_sets() {
    let mut w = World::new();
    let text = caller_invite("1002", "rr-1", CALLER_SDP).replacen(
        "Contact:",
        "Record-Route: <sip:edge.example;lr>\r\nContact:",
        1,
    );
    let out = w.send(CALLER, &text);
    let inv = one(&out, PHONE1, "INVITE");
    assert!(hv(&inv, "Record-Route").is_none(), "a B2BUA starts afresh");
    let out = w.send(
        PHONE1,
        &respond(
            &inv,
            200,
            Some(PHONE_TAG),
            &format!(
                "Record-Route: <sip:p2.example;lr>\r\nRecord-Route: <sip:p1.example;lr>\r\nContact: <{PHONE1_CONTACT}>\r\n"
            ),
            PHONE1_SDP,
        ),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    assert_eq!(
        hv(&ok, "Record-Route").as_deref(),
        Some("<sip:edge.example;lr>"),
        "§12.1.1: copied into the dialog-creating response"
    );
    let ack = one(&out, PHONE1, "ACK");
    let routes: Vec<String> = ack
        .headers
        .iter()
        .filter(|h| h.is_named("Route"))
        .map(|h| s(&h.value))
        .collect();
    assert_eq!(
        routes,
        ["<sip:p1.example;lr>", "<sip:p2.example;lr>"],
        "§12.1.2: reversed"
    );
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    w.send(CALLER, &caller.ack(1, ""));
    let mut phone = Dlg::uas(&inv, PHONE1, PHONE_TAG, PHONE1_CONTACT);
    let out = w.send(PHONE1, &phone.request("BYE", "", ""));
    let bye = one(&out, CALLER, "BYE");
    assert_eq!(hv(&bye, "Route").as_deref(), Some("<sip:edge.example;lr>"));
    assert_eq!(ruri(&bye), "sip:1001@127.0.0.1:40000");
}

/// Guard against a silent change of a constant the tests lean on.
#[test]
fn loopback_config_is_what_the_tests_assume() {
    let cfg = config();
    assert_eq!(cfg.call.no_answer, Duration::from_secs(30));
    assert_eq!(cfg.call.timers.timeout(), Duration::from_secs(32));
    assert!(cfg.users.contains_key("1003"));
    assert!(cfg.call.users.contains("1004"));
    assert!(!cfg.call.users.contains("5555"));
}

// ----------------------------------------------------------------------
// More flows
// ----------------------------------------------------------------------

#[test]
fn early_media_183_is_relayed_with_its_sdp() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("1002", "early-1", CALLER_SDP));
    let inv = one(&out, PHONE1, "INVITE");
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 183, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["40000 <- 183 INVITE"]);
    let r = one(&out, CALLER, "183 INVITE");
    anchored(&r, PHONE1_SDP);
    assert_eq!(hv(&r, "Content-Type").as_deref(), Some("application/sdp"));
    assert_eq!(hv(&r, "Contact").as_deref(), Some(APPLIANCE_CONTACT));
    assert!(to_tag(&r).is_some());
}

#[test]
fn offerless_invite_answer_rides_in_the_callers_ack() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("1002", "late-1", ""));
    let inv = one(&out, PHONE1, "INVITE");
    assert!(inv.body.is_empty());
    assert!(hv(&inv, "Content-Type").is_none());
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["40000 <- 200 INVITE"]);
    let ok = one(&out, CALLER, "200 INVITE");
    anchored(&ok, PHONE1_SDP);
    let mut caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    let out = w.send(CALLER, &caller.ack(1, CALLER_SDP));
    expect(&out, &["41001 <- ACK"]);
    let ack = one(&out, PHONE1, "ACK");
    anchored(&ack, CALLER_SDP);
    assert_eq!(hv(&ack, "Content-Type").as_deref(), Some("application/sdp"));
    assert_eq!(ack.cseq.seq, 1);
    assert_eq!(to_tag(&ack).as_deref(), Some(PHONE_TAG));
    // A retransmitted 200 gets that same ACK.
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["41001 <- ACK"]);
    assert_eq!(branch(&one(&out, PHONE1, "ACK")), branch(&ack));
    let out = w.send(CALLER, &caller.request("BYE", "", ""));
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    w.assert_quiet();
}

/// §13.2.2.4: the UAC core MUST ACK every 2xx (with an answer when the
/// 2xx carried the offer) and only then BYE. With an offerless INVITE the
/// ACK to the phone waits for the caller's; when that never comes the
/// phone still gets its ACK (with an answer refusing every stream), then
/// the BYE.
#[test]
fn offerless_call_caller_never_acks_phone_still_gets_ack_before_bye() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("1002", "late-2", ""));
    let inv = one(&out, PHONE1, "INVITE");
    let out = w.send(
        PHONE1,
        &phone_answer(&inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["40000 <- 200 INVITE"]);
    let out = w.advance(Duration::from_secs(32));
    assert_eq!(count(&out, CALLER, "BYE"), 1);
    assert_eq!(count(&out, PHONE1, "BYE"), 1);
    let sent_to_phone: Vec<String> = out
        .iter()
        .filter(|(a, _)| *a == PHONE1)
        .map(|(_, m)| describe(m))
        .collect();
    assert_eq!(sent_to_phone, ["ACK", "BYE"], "ACK first, then BYE");
}

#[test]
fn answer_crossing_the_cancel_gets_ack_and_bye() {
    let mut w = World::new();
    let (a_inv, b_inv) = ring(&mut w, "cross-1");
    let out = w.send(CALLER, &cancel_for(&a_inv));
    let cancel = one(&out, PHONE1, "CANCEL");
    let r487 = one(&out, CALLER, "487 INVITE");
    w.send(CALLER, &ack_non2xx(&a_inv, &r487));
    // The phone had answered already: 200 to the CANCEL, 200 to the INVITE.
    expect(&w.send(PHONE1, &respond(&cancel, 200, None, "", "")), &[]);
    let out = w.send(
        PHONE1,
        &phone_answer(&b_inv, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    expect(&out, &["41001 <- ACK", "41001 <- BYE"]);
    let bye = one(&out, PHONE1, "BYE");
    assert_eq!(to_tag(&bye).as_deref(), Some(PHONE_TAG));
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    assert_eq!(w.record().cause, EndCause::CallerCancelled);
    w.assert_quiet();
}

#[test]
fn max_duration_ends_the_call_with_bye_both_ways() {
    let mut w = World::new();
    let _c = connect(&mut w, "long-1");
    let out = w.advance(Duration::from_secs(4 * 3600 - 1));
    expect(&out, &[]);
    let out = w.advance(Duration::from_secs(1));
    expect(&out, &["40000 <- BYE", "41001 <- BYE"]);
    let b1 = one(&out, CALLER, "BYE");
    let b2 = one(&out, PHONE1, "BYE");
    w.send(CALLER, &respond(&b1, 200, None, "", ""));
    w.send(PHONE1, &respond(&b2, 200, None, "", ""));
    let r = w.record();
    assert_eq!(r.cause, EndCause::MaxDuration);
    assert_eq!(r.hung_up_by, Side::System);
    w.assert_quiet();
}

#[test]
fn relayed_request_to_a_dead_phone_times_out_408_and_ends_the_call() {
    let mut w = World::new();
    let mut c = connect(&mut w, "dead-2");
    let out = w.send(CALLER, &c.caller.request("INFO", "", ""));
    let _ = one(&out, PHONE1, "INFO");
    let out = w.advance(Duration::from_secs(32));
    assert!(count(&out, PHONE1, "INFO") >= 5, "Timer E retransmissions");
    assert_eq!(count(&out, CALLER, "408 INFO"), 1);
    assert_eq!(count(&out, CALLER, "BYE"), 1);
    assert_eq!(count(&out, PHONE1, "BYE"), 1);
    let bye = one(&out, CALLER, "BYE");
    w.send(CALLER, &respond(&bye, 200, None, "", ""));
    assert_eq!(w.record().cause, EndCause::LegLost);
    w.assert_quiet();
}

/// §15.1.2: when a dialog ends, the requests pending in it still get a
/// final response (487, sent when the dialog ends). Here the caller's INFO
/// is at the phone when the phone hangs up; the phone's late answer to it
/// changes nothing.
#[test]
fn request_pending_when_the_call_ends_still_gets_an_answer() {
    let mut w = World::new();
    let mut c = connect(&mut w, "pending-1");
    let out = w.send(CALLER, &c.caller.request("INFO", "", ""));
    let info = one(&out, PHONE1, "INFO");
    let at_bye = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    let bye = one(&at_bye, CALLER, "BYE");
    w.send(CALLER, &respond(&bye, 200, None, "", ""));
    // The phone answers the INFO it still has (481: its dialog is gone).
    let out = w.send(PHONE1, &respond(&info, 481, None, "", ""));
    let out = [at_bye, out, w.advance(Duration::from_secs(40))].concat();
    assert_eq!(
        out.iter()
            .filter(|(a, m)| *a == CALLER && m.cseq.method == crate::sip::message::Method::Info)
            .count(),
        1,
        "the caller's INFO gets a final response; sent: {:?}",
        summary(&out)
    );
}

/// Same for a re-INVITE: pending at the phone when the phone hangs up.
#[test]
fn reinvite_pending_when_the_call_ends_gets_487() {
    let mut w = World::new();
    let mut c = connect(&mut w, "pending-2");
    let out = w.send(CALLER, &c.caller.request("INVITE", "", CALLER_HOLD_SDP));
    let re = one(&out, PHONE1, "INVITE");
    let out = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    let bye = one(&out, CALLER, "BYE");
    w.send(CALLER, &respond(&bye, 200, None, "", ""));
    let out = w.send(PHONE1, &respond(&re, 487, None, "", ""));
    assert_eq!(count(&out, PHONE1, "ACK"), 1, "the phone's 487 is ACKed");
    let out = [out, w.advance(Duration::from_secs(40))].concat();
    assert!(
        out.iter().any(|(a, m)| *a == CALLER
            && m.cseq.method == crate::sip::message::Method::Invite
            && m.status().is_some_and(|s| s >= 300)),
        "the caller's re-INVITE gets a final response; sent: {:?}",
        summary(&out)
    );
}

#[test]
fn transferor_may_hang_up_before_the_transfer_completes() {
    let mut w = World::new();
    let mut c = connect(&mut w, "refer-6");
    let out = w.send(
        PHONE1,
        &c.phone
            .request("REFER", "Refer-To: <sip:1003@switchboard.local>\r\n", ""),
    );
    let n = one(&out, PHONE1, "NOTIFY");
    w.send(PHONE1, &respond(&n, 200, None, "", ""));
    let i3 = one(&out, PHONE3, "INVITE");
    // Right after the 202: BYE from the transferor; the caller stays.
    let out = w.send(PHONE1, &c.phone.request("BYE", "", ""));
    expect(&out, &["41001 <- 200 BYE"]);
    let out = w.send(
        PHONE3,
        &phone_answer(&i3, 200, "t3", PHONE3_CONTACT, PHONE3_SDP),
    );
    expect(&out, &["40000 <- INVITE"]);
    let re = one(&out, CALLER, "INVITE");
    let out = w.send(
        CALLER,
        &respond(
            &re,
            200,
            None,
            "Contact: <sip:1001@127.0.0.1:40000>\r\n",
            CALLER_REANSWER_SDP,
        ),
    );
    // No NOTIFY to the departed transferor.
    expect(&out, &["40000 <- ACK", "41003 <- ACK"]);
    let out = w.send(CALLER, &c.caller.request("BYE", "", ""));
    expect(&out, &["40000 <- 200 BYE", "41003 <- BYE"]);
    let bye = one(&out, PHONE3, "BYE");
    w.send(PHONE3, &respond(&bye, 200, None, "", ""));
    assert_eq!(w.record().transfers, 1);
    w.assert_quiet();
}

// ----------------------------------------------------------------------
// RFC 4028 session timers, RFC 3262 PRACK
// ----------------------------------------------------------------------

/// Requests of one kind sent to `to`, retransmissions counted once.
fn distinct(out: &Out, to: SocketAddr, what: &str) -> usize {
    let mut branches: Vec<String> = out
        .iter()
        .filter(|(a, m)| *a == to && describe(m) == what)
        .map(|(_, m)| branch(m))
        .collect();
    branches.sort();
    branches.dedup();
    branches.len()
}

/// The caller's INVITE with extra headers after Max-Forwards.
fn caller_invite_with(callee: &str, call_id: &str, extra: &str) -> String {
    caller_invite(callee, call_id, CALLER_SDP).replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{extra}"),
        1,
    )
}

#[test]
fn session_interval_below_min_se_gets_422_with_min_se() {
    let mut w = World::new();
    let out = w.send(
        CALLER,
        &caller_invite_with(
            "1002",
            "se-422",
            "Supported: timer\r\nSession-Expires: 60\r\n",
        ),
    );
    expect(&out, &["40000 <- 100 INVITE", "40000 <- 422 INVITE"]);
    let r = one(&out, CALLER, "422 INVITE");
    assert_eq!(hv(&r, "Min-SE").as_deref(), Some("90"));
    assert_eq!(w.record().cause, EndCause::Refused(422));
}

/// Connects a caller that asked for a 120 s session it refreshes itself.
fn connect_with_timer(w: &mut World, call_id: &str) -> (Dlg, Dlg, Message) {
    let text = caller_invite_with(
        "1002",
        call_id,
        "Supported: timer\r\nSession-Expires: 120\r\n",
    );
    let out = w.send(CALLER, &text);
    let b_invite = one(&out, PHONE1, "INVITE");
    // The phone leg asks for our configured interval.
    assert_eq!(hv(&b_invite, "Session-Expires").as_deref(), Some("1800"));
    assert_eq!(hv(&b_invite, "Min-SE").as_deref(), Some("90"));
    assert!(hv(&b_invite, "Supported").is_some_and(|v| v.contains("timer")));
    let out = w.send(
        PHONE1,
        &phone_answer(&b_invite, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    assert_eq!(
        hv(&ok, "Session-Expires").as_deref(),
        Some("120;refresher=uac")
    );
    assert_eq!(hv(&ok, "Require").as_deref(), Some("timer"));
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    expect(&w.send(CALLER, &caller.ack(1, "")), &[]);
    let phone = Dlg::uas(&b_invite, PHONE1, PHONE_TAG, PHONE1_CONTACT);
    (caller, phone, b_invite)
}

#[test]
fn caller_that_stops_refreshing_has_its_session_expire() {
    let mut w = World::new();
    let (_caller, _phone, _) = connect_with_timer(&mut w, "se-expire");
    // §10: the side waiting for refreshes gives up at interval - min(32, interval/3).
    let out = w.advance(Duration::from_secs(87));
    expect(&out, &[]);
    let out = w.advance(Duration::from_secs(2));
    assert_eq!(distinct(&out, CALLER, "BYE"), 1, "{:?}", summary(&out));
    assert_eq!(distinct(&out, PHONE1, "BYE"), 1, "{:?}", summary(&out));
    assert_eq!(w.record().cause, EndCause::SessionExpired);
}

#[test]
fn caller_refresh_reinvite_keeps_the_session_up() {
    let mut w = World::new();
    let (mut caller, mut phone, _) = connect_with_timer(&mut w, "se-refresh");
    w.advance(Duration::from_secs(60));
    let out = w.send(
        CALLER,
        &caller.request(
            "INVITE",
            "Session-Expires: 120;refresher=uac\r\n",
            CALLER_SDP,
        ),
    );
    let re = one(&out, PHONE1, "INVITE");
    let out = w.send(
        PHONE1,
        &phone_answer(&re, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    assert_eq!(
        hv(&ok, "Session-Expires").as_deref(),
        Some("120;refresher=uac")
    );
    assert_eq!(hv(&ok, "Require").as_deref(), Some("timer"));
    w.send(CALLER, &caller.ack(caller.cseq, ""));
    // 80 s after the refresh (140 s into the call) the call is still up.
    let out = w.advance(Duration::from_secs(80));
    expect(&out, &[]);
    w.send(CALLER, &caller.request("BYE", "", ""));
    let _ = phone.request("BYE", "", "");
    assert_eq!(w.record().cause, EndCause::Normal);
}

#[test]
fn we_refresh_the_phone_leg_with_update_when_it_asks_us_to() {
    let mut w = World::new();
    let text = caller_invite("1002", "se-update", CALLER_SDP);
    let out = w.send(CALLER, &text);
    let b_invite = one(&out, PHONE1, "INVITE");
    let extra = format!(
        "Contact: <{PHONE1_CONTACT}>\r\nSession-Expires: 100;refresher=uac\r\nRequire: timer\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n"
    );
    let out = w.send(
        PHONE1,
        &respond(&b_invite, 200, Some(PHONE_TAG), &extra, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    // The caller did not ask for timers: none on its leg.
    assert_eq!(hv(&ok, "Session-Expires"), None);
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    w.send(CALLER, &caller.ack(1, ""));
    for round in 0..3 {
        let out = w.advance(Duration::from_secs(50));
        let upd = one(&out, PHONE1, "UPDATE");
        assert_eq!(
            hv(&upd, "Session-Expires").as_deref(),
            Some("100;refresher=uac"),
            "round {round}"
        );
        assert_eq!(count(&out, CALLER, "BYE"), 0);
        w.send(
            PHONE1,
            &respond(
                &upd,
                200,
                None,
                "Session-Expires: 100;refresher=uac\r\n",
                "",
            ),
        );
    }
    w.send(CALLER, &caller.clone().request("BYE", "", ""));
    assert_eq!(w.record().cause, EndCause::Normal);
}

#[test]
fn phone_leg_refresh_unanswered_ends_the_call() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("1002", "se-dead", CALLER_SDP));
    let b_invite = one(&out, PHONE1, "INVITE");
    // No UPDATE in Allow: the refresh is a re-INVITE with the last offer.
    let extra = format!("Contact: <{PHONE1_CONTACT}>\r\nSession-Expires: 100;refresher=uac\r\n");
    let out = w.send(
        PHONE1,
        &respond(&b_invite, 200, Some(PHONE_TAG), &extra, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    w.send(CALLER, &caller.ack(1, ""));
    let out = w.advance(Duration::from_secs(50));
    let re = one(&out, PHONE1, "INVITE");
    // The refresh carries the session we offered.
    anchored(&re, CALLER_SDP);
    // The phone is gone: Timer B ends the refresh, and the call with it.
    let out = w.advance(Duration::from_secs(40));
    assert_eq!(distinct(&out, CALLER, "BYE"), 1, "{:?}", summary(&out));
    assert_eq!(w.record().cause, EndCause::LegLost);
}

#[test]
fn reliable_ringing_is_pracked_and_relayed_unreliably() {
    let mut w = World::new();
    let out = w.send(CALLER, &caller_invite("1002", "prack", CALLER_SDP));
    let b_invite = one(&out, PHONE1, "INVITE");
    assert!(hv(&b_invite, "Supported").is_some_and(|v| v.contains("100rel")));
    let ringing = respond(
        &b_invite,
        180,
        Some(PHONE_TAG),
        &format!("Contact: <{PHONE1_CONTACT}>\r\nRequire: 100rel\r\nRSeq: 7\r\n"),
        "",
    );
    let out = w.send(PHONE1, &ringing);
    let prack = one(&out, PHONE1, "PRACK");
    assert_eq!(hv(&prack, "RAck").as_deref(), Some("7 1 INVITE"));
    assert_eq!(
        ruri(&prack),
        PHONE1_CONTACT,
        "PRACK goes to the phone's Contact"
    );
    assert!(to_tag(&prack).as_deref() == Some(PHONE_TAG));
    assert_eq!(prack.cseq.seq, 2);
    let to_caller = one(&out, CALLER, "180 INVITE");
    assert_eq!(
        hv(&to_caller, "Require"),
        None,
        "never reliable towards the caller"
    );
    assert_eq!(hv(&to_caller, "RSeq"), None);
    // A retransmission of the same reliable 180 is not PRACKed or relayed again.
    expect(&w.send(PHONE1, &ringing), &[]);
    w.send(PHONE1, &respond(&prack, 200, None, "", ""));
    let out = w.send(
        PHONE1,
        &phone_answer(&b_invite, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    w.send(CALLER, &caller.ack(1, ""));
    let out = w.send(CALLER, &caller.clone().request("BYE", "", ""));
    let bye = one(&out, PHONE1, "BYE");
    assert!(bye.cseq.seq > 2, "BYE after the PRACK's CSeq");
}

/// The transferor's REFER may overtake the caller's ACK of the original
/// answer (separate UAs): it is accepted, and the caller's re-INVITE waits
/// for that ACK.
#[test]
fn refer_before_the_callers_ack_waits_for_it() {
    let mut w = World::new();
    let (_a, b_invite) = ring(&mut w, "refer-early");
    let out = w.send(
        PHONE1,
        &phone_answer(&b_invite, 200, PHONE_TAG, PHONE1_CONTACT, PHONE1_SDP),
    );
    let ok = one(&out, CALLER, "200 INVITE");
    let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
    let mut phone = Dlg::uas(&b_invite, PHONE1, PHONE_TAG, PHONE1_CONTACT);
    let out = w.send(
        PHONE1,
        &phone.request("REFER", "Refer-To: <sip:1003@switchboard.local>\r\n", ""),
    );
    expect(
        &out,
        &["41001 <- 202 REFER", "41001 <- NOTIFY", "41003 <- INVITE"],
    );
    let i3 = one(&out, PHONE3, "INVITE");
    let out = w.send(
        PHONE3,
        &phone_answer(&i3, 200, "t3", PHONE3_CONTACT, PHONE3_SDP),
    );
    assert_eq!(count(&out, CALLER, "INVITE"), 0, "{:?}", summary(&out));
    let out = w.send(CALLER, &caller.ack(1, ""));
    let re = one(&out, CALLER, "INVITE");
    anchored(&re, PHONE3_SDP);
}

// ----------------------------------------------------------------------
// Media anchoring (the engine's own behaviour is tested in media::engine)
// ----------------------------------------------------------------------

/// Our first pair (the caller's leg) and second (the phones' side).
const A_RTP: u16 = 0x8000;
const B_RTP: u16 = 0x8002;

fn rtp_packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    crate::media::rtp::write_header(&mut p, false, pt, seq, u32::from(seq) * 160, 0x5eed);
    p.extend_from_slice(payload);
    p
}

#[test]
fn rtp_flows_between_the_parties_through_our_ports_and_digits_reach_the_record() {
    let mut w = World::new();
    let c = connect(&mut w, "media-1");
    // The caller's SDP said 127.0.0.1:30000, the phone's 127.0.0.1:31000.
    let caller_rtp: SocketAddr = "127.0.0.1:30000".parse().unwrap();
    let phone_rtp: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let (sip, relayed) = w.media(A_RTP, caller_rtp, &rtp_packet(0, 1, &[0xff; 160]));
    assert!(sip.is_empty());
    assert_eq!(relayed.len(), 1);
    assert_eq!((relayed[0].0, relayed[0].1), (B_RTP, phone_rtp));
    assert_eq!(
        relayed[0].2,
        rtp_packet(0, 1, &[0xff; 160]),
        "relayed untouched"
    );
    let (_, back) = w.media(B_RTP, phone_rtp, &rtp_packet(0, 9, &[0x7f; 160]));
    assert_eq!((back[0].0, back[0].1), (A_RTP, caller_rtp));
    let mut caller = c.caller;
    let out = w.send(CALLER, &caller.request("BYE", "", ""));
    let bye = one(&out, PHONE1, "BYE");
    w.send(PHONE1, &respond(&bye, 200, None, "", ""));
    let r = w.record();
    assert_eq!(r.caller.media.map(|m| m.packets_in), Some(1));
    assert_eq!(r.callees[0].media.map(|m| m.packets_in), Some(1));
    w.assert_quiet();
}

#[test]
fn silent_parties_end_the_call_with_bye_both_ways() {
    let mut cfg = config();
    cfg.call.media.rtp_timeout = Duration::from_secs(20);
    let mut w = World::bare_with(cfg);
    w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);
    let _c = connect(&mut w, "media-2");
    let out = w.advance(Duration::from_secs(19));
    expect(&out, &[]);
    let out = w.advance(Duration::from_secs(2));
    assert_eq!(distinct(&out, CALLER, "BYE"), 1, "{:?}", summary(&out));
    assert_eq!(distinct(&out, PHONE1, "BYE"), 1);
    assert_eq!(w.record().cause, EndCause::MediaTimeout);
}

#[test]
fn no_free_rtp_port_gets_503() {
    let mut w = World::bare_with(config());
    w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);
    // Take every pair but one: the call needs two.
    let legs: Vec<_> = (0..511)
        .map(|_| w.ep.media_mut().open_leg(w.now, 99).unwrap())
        .collect();
    let out = w.send(CALLER, &caller_invite("1002", "media-3", CALLER_SDP));
    let r = one(&out, CALLER, "503 INVITE");
    assert!(hv(&r, "Warning").is_some_and(|v| v.contains("no free RTP port")));
    assert_eq!(
        w.ep.media_mut().open_legs(),
        511,
        "the half-opened call gave its leg back"
    );
    for l in legs {
        w.ep.media_mut().close_leg(l);
    }
}

#[test]
fn an_offer_without_plain_rtp_audio_gets_488() {
    let mut w = World::new();
    let srtp = CALLER_SDP.replace("RTP/AVP", "RTP/SAVP");
    let out = w.send(CALLER, &caller_invite("1002", "media-4", &srtp));
    let r = one(&out, CALLER, "488 INVITE");
    assert!(hv(&r, "Warning").is_some_and(|v| v.contains("no audio")));
    assert_eq!(w.ep.media_mut().open_legs(), 0);
}

// ----------------------------------------------------------------------
// Hosted calls: queues (the test plays the ACD)
// ----------------------------------------------------------------------

mod hosted {
    use super::*;
    use crate::acd::{self, AgentId, AgentOp, CallKey, Input, QueueId, RingOutcome};
    use crate::config::contact::{AgentConfig, ContactCenter, QueueConfig, Route, Target};

    /// Agents 1002 (PHONE1) and 1003 (PHONE3) in queue `support` on 200.
    fn queue_world() -> World {
        let mut cc = ContactCenter::default();
        for id in ["1002", "1003"] {
            cc.agents.push(AgentConfig {
                id: id.into(),
                skills: Vec::new(),
            });
        }
        cc.queues.push(QueueConfig::named("support"));
        cc.dialplan
            .push(("200".into(), Route::to(Target::Queue("support".into()))));
        let mut cfg = config();
        let plan = super::super::ContactPlan::new(&cc, Default::default(), 3);
        cfg.call.contact = Some(Arc::new(plan));
        let mut w = World::bare_with(cfg);
        w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);
        w.bind("1003", &[(PHONE3, PHONE3_CONTACT)]);
        w
    }

    /// Agents are numbered in config order.
    fn agent(_w: &World, id: &str) -> AgentId {
        match id {
            "1002" => AgentId(0),
            _ => AgentId(1),
        }
    }

    /// The caller dials 200: answered here, queued.
    fn queued(w: &mut World, call_id: &str) -> (Dlg, CallKey) {
        let out = w.send(CALLER, &caller_invite("200", call_id, CALLER_SDP));
        expect(&out, &["40000 <- 100 INVITE", "40000 <- 200 INVITE"]);
        let ok = one(&out, CALLER, "200 INVITE");
        anchored(
            &ok,
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n",
        );
        let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
        expect(&w.send(CALLER, &caller.ack(1, "")), &[]);
        let Some(Input::Enqueue {
            call,
            queue,
            priority,
            ..
        }) = w.acd.pop()
        else {
            panic!("no Enqueue: {:?}", w.acd)
        };
        assert_eq!((queue, priority), (QueueId(0), 0));
        (caller, call)
    }

    fn offer(w: &mut World, call: CallKey, agent: AgentId) -> Out {
        w.ep.handle_acd(
            w.now,
            acd::Output::Offer {
                call,
                agent,
                queue: QueueId(0),
            },
        );
        w.collect()
    }

    #[test]
    fn a_queued_caller_is_answered_here_and_bridged_to_the_agent_who_answers() {
        let mut w = queue_world();
        let (mut caller, call) = queued(&mut w, "q1");
        let a1002 = agent(&w, "1002");
        let out = offer(&mut w, call, a1002);
        let inv = one(&out, PHONE1, "INVITE");
        assert!(ruri(&inv).starts_with("sip:1002@10.0.0.12"));
        anchored(&inv, CALLER_SDP);
        let out = w.send(PHONE1, &phone_answer(&inv, 180, "ag", PHONE1_CONTACT, ""));
        expect(&out, &[]);
        assert!(w.acd.is_empty(), "ringing is not news for the ACD");
        let out = w.send(
            PHONE1,
            &phone_answer(&inv, 200, "ag", PHONE1_CONTACT, PHONE1_SDP),
        );
        expect(&out, &["41001 <- ACK"]);
        assert_eq!(
            w.acd,
            [Input::RingResult {
                call,
                agent: a1002,
                outcome: RingOutcome::Answered
            }]
        );
        w.acd.clear();
        // Connected: the caller's BYE goes to the agent.
        let out = w.send(CALLER, &caller.request("BYE", "", ""));
        expect(&out, &["40000 <- 200 BYE", "41001 <- BYE"]);
        assert_eq!(w.acd, [Input::CallEnded { call, agent: a1002 }]);
        let bye = one(&out, PHONE1, "BYE");
        w.send(PHONE1, &respond(&bye, 200, None, "", ""));
        w.assert_quiet();
        assert_eq!(w.record().dialled, "200");
    }

    #[test]
    fn a_caller_hanging_up_while_the_agent_rings_cancels_the_ring_at_once() {
        let mut w = queue_world();
        let (mut caller, call) = queued(&mut w, "q2");
        let a1002 = agent(&w, "1002");
        let inv = one(&offer(&mut w, call, a1002), PHONE1, "INVITE");
        w.send(PHONE1, &phone_answer(&inv, 180, "ag", PHONE1_CONTACT, ""));
        let out = w.send(CALLER, &caller.request("BYE", "", ""));
        expect(&out, &["40000 <- 200 BYE", "41001 <- CANCEL"]);
        assert_eq!(
            w.acd,
            [
                Input::Leave { call },
                Input::RingResult {
                    call,
                    agent: a1002,
                    outcome: RingOutcome::Cancelled
                }
            ]
        );
        let cancel = one(&out, PHONE1, "CANCEL");
        w.send(PHONE1, &respond(&cancel, 200, None, "", ""));
        let resp = respond(&inv, 487, Some("ag"), "", "");
        let out = w.send(PHONE1, &resp);
        expect(&out, &["41001 <- ACK"]);
        w.assert_quiet();
    }

    #[test]
    fn a_busy_agent_is_reported_and_the_caller_waits_for_the_next() {
        let mut w = queue_world();
        let (mut caller, call) = queued(&mut w, "q3");
        let (a1002, a1003) = (agent(&w, "1002"), agent(&w, "1003"));
        let inv = one(&offer(&mut w, call, a1002), PHONE1, "INVITE");
        let out = w.send(PHONE1, &respond(&inv, 486, Some("ag"), "", ""));
        expect(&out, &["41001 <- ACK"]);
        assert_eq!(
            w.acd,
            [Input::RingResult {
                call,
                agent: a1002,
                outcome: RingOutcome::Busy
            }]
        );
        w.acd.clear();
        assert_eq!(w.ep.active_calls(), 1, "the caller still waits");
        // The ACD's Cancel for a ring already over changes nothing.
        w.ep.handle_acd(w.now, acd::Output::Cancel { call, agent: a1002 });
        expect(&w.collect(), &[]);
        let inv = one(&offer(&mut w, call, a1003), PHONE3, "INVITE");
        let out = w.send(
            PHONE3,
            &phone_answer(&inv, 200, "ag3", PHONE3_CONTACT, PHONE3_SDP),
        );
        expect(&out, &["41003 <- ACK"]);
        let out = w.send(CALLER, &caller.request("BYE", "", ""));
        expect(&out, &["40000 <- 200 BYE", "41003 <- BYE"]);
        let bye = one(&out, PHONE3, "BYE");
        w.send(PHONE3, &respond(&bye, 200, None, "", ""));
        w.assert_quiet();
    }

    #[test]
    fn the_acds_ring_timeout_cancels_the_phone() {
        let mut w = queue_world();
        let (mut caller, call) = queued(&mut w, "q4");
        let a1002 = agent(&w, "1002");
        let inv = one(&offer(&mut w, call, a1002), PHONE1, "INVITE");
        w.send(PHONE1, &phone_answer(&inv, 180, "ag", PHONE1_CONTACT, ""));
        w.ep.handle_acd(w.now, acd::Output::Cancel { call, agent: a1002 });
        let out = w.collect();
        expect(&out, &["41001 <- CANCEL"]);
        let cancel = one(&out, PHONE1, "CANCEL");
        w.send(PHONE1, &respond(&cancel, 200, None, "", ""));
        w.send(PHONE1, &respond(&inv, 487, Some("ag"), "", ""));
        assert_eq!(
            w.acd,
            [Input::RingResult {
                call,
                agent: a1002,
                outcome: RingOutcome::Cancelled
            }]
        );
        let out = w.send(CALLER, &caller.request("BYE", "", ""));
        expect(&out, &["40000 <- 200 BYE"]);
        w.assert_quiet();
    }

    #[test]
    fn an_offer_for_a_caller_already_gone_ends_at_once() {
        let mut w = queue_world();
        let a1002 = agent(&w, "1002");
        let out = offer(&mut w, CallKey(77), a1002);
        expect(&out, &[]);
        assert_eq!(
            w.acd,
            [Input::RingResult {
                call: CallKey(77),
                agent: a1002,
                outcome: RingOutcome::Cancelled
            }]
        );
    }

    #[test]
    fn an_agent_dials_a_feature_code_and_is_logged_in() {
        let mut w = queue_world();
        let text = caller_invite("*71", "f1", CALLER_SDP).replace("sip:1001@", "sip:1002@");
        let out = w.send(CALLER, &text);
        // No prompt to play here: answered, then hung up at once.
        expect(
            &out,
            &["40000 <- 100 INVITE", "40000 <- 200 INVITE", "40000 <- BYE"],
        );
        assert_eq!(
            w.acd,
            [Input::Agent {
                agent: agent(&w, "1002"),
                op: AgentOp::Login
            }]
        );
        // A user who is no agent gets 404 for the code.
        let text = caller_invite("*71", "f2", CALLER_SDP).replace("sip:1001@", "sip:1004@");
        expect(
            &w.send(CALLER, &text),
            &["40000 <- 100 INVITE", "40000 <- 404 INVITE"],
        );
    }

    const DTMF_SDP: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    /// The demo's IVR: 300 → main (1 → sales, 2 → support, 9 → account
    /// digits ended by # → support).
    fn ivr_world() -> World {
        ivr_world_with(Default::default())
    }

    /// Prompts that really play: 0.4 s of audio each (the media engine
    /// reports their end).
    fn spoken() -> crate::media::prompts::Prompts {
        let clip: crate::media::player::Clip = vec![1000i16; 3200].into();
        crate::media::prompts::Prompts::from_clips(vec![
            ("welcome", clip.clone()),
            ("goodbye", clip),
        ])
    }

    fn ivr_world_with(prompts: crate::media::prompts::Prompts) -> World {
        use crate::config::contact::{Collect, MenuConfig};
        let mut cc = ContactCenter::default();
        for id in ["1002", "1003"] {
            cc.agents.push(AgentConfig {
                id: id.into(),
                skills: Vec::new(),
            });
        }
        cc.queues.push(QueueConfig::named("support"));
        cc.queues.push(QueueConfig::named("sales"));
        let menu = |name: &str, collect: Collect, options: Vec<(char, Route)>| MenuConfig {
            name: name.into(),
            prompt: "welcome".into(),
            collect,
            options,
            timeout: Duration::from_secs(5),
            retries: 2,
            invalid_prompt: None,
            failure: Route::to(Target::Hangup),
            hours: None,
            closed: Route::to(Target::Hangup),
            closed_prompt: None,
        };
        let q = |n: &str| Route::to(Target::Queue(n.into()));
        cc.menus.push(menu(
            "main",
            Collect::Choice,
            vec![
                ('1', q("sales")),
                ('2', q("support")),
                ('9', Route::to(Target::Menu("account".into()))),
            ],
        ));
        cc.menus.push(menu(
            "account",
            Collect::Digits {
                key: "account".into(),
                min: 1,
                max: 16,
                terminator: Some('#'),
                then: q("support"),
            },
            Vec::new(),
        ));
        cc.dialplan
            .push(("300".into(), Route::to(Target::Menu("main".into()))));
        let mut cfg = config();
        let plan = super::super::ContactPlan::new(&cc, prompts, 3);
        cfg.call.contact = Some(Arc::new(plan));
        let mut w = World::bare_with(cfg);
        w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);
        w
    }

    /// The caller presses `keys` (RFC 4733 events: start, then end).
    fn press(w: &mut World, keys: &str, seq: &mut u16) -> Out {
        let caller_rtp: SocketAddr = "127.0.0.1:30000".parse().unwrap();
        let mut sip = Vec::new();
        for k in keys.chars() {
            let code = match k {
                '*' => 10,
                '#' => 11,
                d => d.to_digit(10).unwrap() as u8,
            };
            let ts = u32::from(*seq) * 1000;
            for end in [false, true] {
                *seq += 1;
                let mut p = rtp_packet(101, *seq, &[code, if end { 0x80 } else { 0 }, 0, 160]);
                p[4..8].copy_from_slice(&ts.to_be_bytes());
                sip.extend(w.media(A_RTP, caller_rtp, &p).0);
            }
        }
        sip
    }

    #[test]
    fn the_ivr_routes_keys_to_queues_and_an_account_rides_with_the_call() {
        let mut w = ivr_world();
        let out = w.send(CALLER, &caller_invite("300", "ivr1", DTMF_SDP));
        let ok = one(&out, CALLER, "200 INVITE");
        let mut caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
        w.send(CALLER, &caller.ack(1, ""));
        assert!(w.acd.is_empty(), "in the menu, not queued");
        let mut seq = 0;
        press(&mut w, "9", &mut seq);
        assert!(w.acd.is_empty(), "in the account menu");
        press(&mut w, "4711#", &mut seq);
        let Some(Input::Enqueue { call, queue, .. }) = w.acd.pop() else {
            panic!("not queued: {:?}", w.acd)
        };
        assert_eq!(queue, QueueId(0), "support");
        let inv = one(&offer(&mut w, call, AgentId(0)), PHONE1, "INVITE");
        assert_eq!(
            hv(&inv, "X-Switchboard-Data").as_deref(),
            Some("account=4711"),
            "the account reaches the agent"
        );
        w.send(
            PHONE1,
            &phone_answer(&inv, 200, "ag", PHONE1_CONTACT, PHONE1_SDP),
        );
        let out = w.send(CALLER, &caller.request("BYE", "", ""));
        let bye = one(&out, PHONE1, "BYE");
        w.send(PHONE1, &respond(&bye, 200, None, "", ""));
        w.assert_quiet();
        let r = w.record();
        assert_eq!(r.data, [("account".to_owned(), "4711".to_owned())]);
        assert_eq!(r.path, ["ivr:main", "ivr:account", "queue:support"]);
    }

    #[test]
    fn ivr_key_1_queues_for_sales_and_a_silent_caller_is_hung_up() {
        let mut w = ivr_world();
        let out = w.send(CALLER, &caller_invite("300", "ivr2", DTMF_SDP));
        let ok = one(&out, CALLER, "200 INVITE");
        let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
        w.send(CALLER, &caller.ack(1, ""));
        let mut seq = 0;
        press(&mut w, "1", &mut seq);
        assert!(
            matches!(
                w.acd.as_slice(),
                [Input::Enqueue {
                    queue: QueueId(1),
                    ..
                }]
            ),
            "{:?}",
            w.acd
        );
        // Another caller says nothing: three tries of 5 s, then hung up.
        let out = w.send(CALLER, &caller_invite("300", "ivr3", DTMF_SDP));
        let ok = one(&out, CALLER, "200 INVITE");
        let silent = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
        w.send(CALLER, &silent.ack(1, ""));
        let out = w.advance(Duration::from_secs(16));
        let byes: Vec<String> = out
            .iter()
            .filter(|(_, m)| describe(m) == "BYE")
            .map(|(_, m)| s(&m.call_id))
            .collect();
        assert!(
            !byes.is_empty() && byes.iter().all(|c| c == "ivr3"),
            "{byes:?}"
        );
    }

    #[test]
    fn with_spoken_prompts_a_silent_caller_is_hung_up_in_either_menu() {
        for (call_id, keys) in [("ivr4", ""), ("ivr5", "9")] {
            let mut w = ivr_world_with(spoken());
            let out = w.send(CALLER, &caller_invite("300", call_id, DTMF_SDP));
            let ok = one(&out, CALLER, "200 INVITE");
            let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
            w.send(CALLER, &caller.ack(1, ""));
            let mut seq = 0;
            w.advance(Duration::from_millis(100));
            press(&mut w, keys, &mut seq);
            // Three prompts of 0.4 s and three waits of 5 s, then goodbye.
            let out = w.advance(Duration::from_secs(20));
            assert!(
                out.iter().any(|(_, m)| describe(m) == "BYE"),
                "{call_id} pressing {keys:?}: not hung up: {:?}",
                out.iter().map(|(_, m)| describe(m)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_caller_asking_for_a_callback_is_hung_up_then_called_back_for_the_agent() {
        let mut cc = ContactCenter::default();
        cc.agents.push(AgentConfig {
            id: "1002".into(),
            skills: Vec::new(),
        });
        let mut q = QueueConfig::named("support");
        q.callback_key = Some('*');
        cc.queues.push(q);
        cc.dialplan
            .push(("200".into(), Route::to(Target::Queue("support".into()))));
        let mut cfg = config();
        let plan = super::super::ContactPlan::new(&cc, Default::default(), 3);
        cfg.call.contact = Some(Arc::new(plan));
        let mut w = World::bare_with(cfg);
        w.bind("1002", &[(PHONE1, PHONE1_CONTACT)]);

        let out = w.send(CALLER, &caller_invite("200", "cb1", DTMF_SDP));
        let ok = one(&out, CALLER, "200 INVITE");
        let caller = Dlg::uac(&ok, CALLER, "sip:1001@127.0.0.1:40000");
        w.send(CALLER, &caller.ack(1, ""));
        let Some(Input::Enqueue { call, .. }) = w.acd.pop() else {
            panic!("not queued")
        };
        let mut seq = 0;
        let out = press(&mut w, "*", &mut seq);
        assert_eq!(w.acd, [Input::Callback { call }]);
        w.acd.clear();
        // No confirmation prompt in this plan: hung up at once.
        let bye = one(&out, CALLER, "BYE");
        w.send(CALLER, &respond(&bye, 200, None, "", ""));
        assert_eq!(w.ep.active_calls(), 0, "the caller was hung up");
        assert!(w.acd.is_empty(), "no Leave: the place is kept");

        // The agent is reserved: the customer is called back at its Contact.
        w.ep.handle_acd(
            w.now,
            acd::Output::CallBack {
                call,
                agent: AgentId(0),
                queue: QueueId(0),
            },
        );
        let out = w.collect();
        let inv = one(&out, CALLER, "INVITE");
        assert_eq!(ruri(&inv), "sip:1001@127.0.0.1:40000");
        assert!(body(&inv).contains("telephone-event"));
        let out = w.send(
            CALLER,
            &phone_answer(&inv, 200, "cust", "sip:1001@127.0.0.1:40000", CALLER_SDP),
        );
        expect(&out, &["40000 <- ACK", "41001 <- INVITE"]);
        let agent_inv = one(&out, PHONE1, "INVITE");
        let out = w.send(
            PHONE1,
            &phone_answer(&agent_inv, 200, "ag", PHONE1_CONTACT, PHONE1_SDP),
        );
        expect(&out, &["41001 <- ACK"]);
        assert_eq!(
            w.acd,
            [Input::RingResult {
                call,
                agent: AgentId(0),
                outcome: RingOutcome::Answered
            }]
        );
        w.acd.clear();
        // The agent hangs up: the customer gets the BYE.
        let mut agent = Dlg::uas(&agent_inv, PHONE1, "ag", PHONE1_CONTACT);
        let out = w.send(PHONE1, &agent.request("BYE", "", ""));
        expect(&out, &["41001 <- 200 BYE", "40000 <- BYE"]);
        assert_eq!(
            w.acd,
            [Input::CallEnded {
                call,
                agent: AgentId(0)
            }]
        );
        let bye = one(&out, CALLER, "BYE");
        w.send(CALLER, &respond(&bye, 200, None, "", ""));
        w.assert_quiet();
        let last = w.records.last().expect("a record of the callback");
        assert_eq!(last.path, ["queue:support", "callback"]);
    }
}
