//! One SIP dialog as the B2BUA holds it (RFC 3261 §12), and the requests it
//! builds inside it (§12.2.1.1).
//!
//! The B2BUA is a UAS on the caller's leg (the dialog comes from the INVITE,
//! §12.1.1) and a UAC on each callee leg (from the 2xx or a tagged 1xx,
//! §12.1.2). Every in-dialog request is sent back over the [`Peer`] the
//! dialog was learnt from — where the caller's INVITE came from, or where
//! the callee's REGISTER came from — rather than resolved from the remote
//! target: the phone behind a NAT is reached where it really is, and a
//! proxy in the caller's path (which Record-Routes) is that same peer.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sip::build::Fmt;
use crate::sip::endpoint::{Link, Peer};
use crate::sip::message::{Contacts, HeaderName, Message};

/// The appliance's own addresses, for Via sent-by and Contact.
#[derive(Debug, Clone)]
pub struct Local {
    /// Per `sip.listen` index: the address and whether it is TCP.
    pub listen: Vec<(SocketAddr, bool)>,
}

impl Local {
    /// The transport token and address a peer on `link` reaches us at.
    pub fn for_link(&self, link: Link) -> (&'static str, SocketAddr) {
        let fallback = || {
            self.listen
                .first()
                .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)), |l| l.0)
        };
        match link {
            Link::Udp { listen } => (
                "UDP",
                self.listen
                    .get(usize::from(listen))
                    .map_or_else(fallback, |l| l.0),
            ),
            Link::Tcp { .. } => (
                "TCP",
                self.listen
                    .iter()
                    .find(|l| l.1)
                    .map_or_else(fallback, |l| l.0),
            ),
        }
    }

    /// Our Contact URI (in angle brackets) for a peer on `link`.
    pub fn contact(&self, link: Link) -> String {
        let (t, addr) = self.for_link(link);
        if t == "TCP" {
            format!("<sip:sb@{addr};transport=tcp>")
        } else {
            format!("<sip:sb@{addr}>")
        }
    }
}

/// A dialog, seen from our side.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// Our party as we write it in From of our requests, without the tag.
    pub local_party: String,
    /// The remote party as we write it in To of our requests: the remote
    /// tag included once it is known.
    pub remote_party: String,
    pub remote_tag: Option<String>,
    /// CSeq of our last request.
    pub local_seq: u32,
    /// CSeq of the peer's last request (§12.2.2: lower ones get 500).
    pub remote_seq: Option<u32>,
    /// The peer's Contact URI: Request-URI of our requests.
    pub remote_target: String,
    /// Route set, in the order our requests carry it.
    pub route_set: Vec<String>,
    /// Where our requests go.
    pub peer: Peer,
}

/// One request to build in a dialog.
#[derive(Debug, Default)]
pub struct Req<'a> {
    pub method: &'a str,
    pub branch: &'a str,
    /// CSeq number (ACK and CANCEL reuse the INVITE's).
    pub cseq: u32,
    pub max_forwards: u8,
    /// Send our Contact (target-refresh and dialog-creating requests).
    pub contact: bool,
    /// Extra headers, in order.
    pub headers: &'a [(&'a str, &'a str)],
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// User-Agent value; empty = none.
    pub user_agent: &'a str,
}

impl Dialog {
    /// The caller's leg: we are the UAS of `invite` from `peer`.
    pub fn from_invite(invite: &Message, peer: Peer, local_tag: String) -> Dialog {
        let raw = |n: HeaderName| {
            invite
                .header_values(n)
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        Dialog {
            call_id: String::from_utf8_lossy(&invite.call_id).into_owned(),
            local_tag,
            local_party: raw(HeaderName::To),
            remote_party: raw(HeaderName::From),
            remote_tag: invite
                .from
                .tag()
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            local_seq: 0,
            remote_seq: Some(invite.cseq.seq),
            // An INVITE without a usable Contact (§8.1.1.8 requires one)
            // still gets requests a Request-URI: its From URI. They go to
            // the address it came from in any case.
            remote_target: contact_uri(invite)
                .unwrap_or_else(|| request_target(&String::from_utf8_lossy(&invite.from.uri.raw))),
            route_set: record_routes(invite),
            peer,
        }
    }

    /// Completes a callee leg from a tagged response to our INVITE
    /// (§12.1.2: route set = Record-Route reversed, target = Contact).
    pub fn learn_from_response(&mut self, resp: &Message) {
        if let Some(to) = resp.header_values(HeaderName::To).next() {
            self.remote_party = String::from_utf8_lossy(to).into_owned();
        }
        self.remote_tag = resp
            .to
            .tag()
            .map(|t| String::from_utf8_lossy(t).into_owned());
        if let Some(c) = contact_uri(resp) {
            self.remote_target = c;
        }
        let mut rr = record_routes(resp);
        rr.reverse();
        self.route_set = rr;
    }

    /// A target refresh (re-INVITE, UPDATE or their 2xx) moves the remote
    /// target to the new Contact (§12.2).
    pub fn refresh_target(&mut self, msg: &Message) {
        if let Some(c) = contact_uri(msg) {
            self.remote_target = c;
        }
    }

    /// Next CSeq number for a new request.
    pub fn next_seq(&mut self) -> u32 {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.local_seq
    }

    /// Builds a request in this dialog.
    pub fn request(&self, local: &Local, r: &Req<'_>) -> Bytes {
        let (transport, addr) = local.for_link(self.peer.link);
        let mut out = BytesMut::with_capacity(640 + r.body.len());
        let _ = write!(
            Fmt(&mut out),
            "{} {} SIP/2.0\r\nVia: SIP/2.0/{transport} {addr};branch={};rport\r\nMax-Forwards: {}\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            r.method,
            self.remote_target,
            r.branch,
            r.max_forwards,
            self.local_party,
            self.local_tag,
            self.remote_party,
            self.call_id,
            r.cseq,
            r.method,
        );
        for route in &self.route_set {
            let _ = write!(Fmt(&mut out), "Route: {route}\r\n");
        }
        if r.contact {
            let _ = write!(
                Fmt(&mut out),
                "Contact: {}\r\n",
                local.contact(self.peer.link)
            );
        }
        finish(&mut out, r);
        out.freeze()
    }
}

/// Writes extra headers, User-Agent, Content-Type/Length and the body.
pub fn finish(out: &mut BytesMut, r: &Req<'_>) {
    for (n, v) in r.headers {
        let _ = write!(Fmt(out), "{n}: {v}\r\n");
    }
    if !r.user_agent.is_empty() {
        let _ = write!(Fmt(out), "User-Agent: {}\r\n", r.user_agent);
    }
    if let Some(ct) = r.content_type {
        let _ = write!(Fmt(out), "Content-Type: {ct}\r\n");
    }
    let _ = write!(Fmt(out), "Content-Length: {}\r\n\r\n", r.body.len());
    out.put_slice(r.body);
}

/// The first Contact URI of a message, without brackets, as a
/// Request-URI (see [`request_target`]).
pub fn contact_uri(msg: &Message) -> Option<String> {
    match &msg.contacts {
        Contacts::List(list) => list
            .first()
            .map(|c| request_target(&String::from_utf8_lossy(&c.uri.raw))),
        _ => None,
    }
}

/// A URI fit for a Request-URI: without `?headers`, which §19.1.5 turns
/// into header fields and a Request-URI must not carry.
pub fn request_target(uri: &str) -> String {
    uri.split_once('?').map_or(uri, |(u, _)| u).to_string()
}

/// Every Record-Route entry in order (comma-separated values split).
pub fn record_routes(msg: &Message) -> Vec<String> {
    let mut out = Vec::new();
    for v in msg.header_values(HeaderName::RecordRoute) {
        let _ = crate::sip::grammar::for_each_top(v, b',', |part| {
            let part = crate::sip::grammar::trim(part);
            if !part.is_empty() {
                out.push(String::from_utf8_lossy(part).into_owned());
            }
            Ok(())
        });
    }
    out
}
