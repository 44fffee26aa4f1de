//! The SIP endpoint of one shard: the UAS core (RFC 3261 §8.2) over the
//! server transactions (§17.2), the registrar (§10) with digest
//! authentication, and the routing of each message to the shard that owns it.
//!
//! Sans-IO: the shell feeds [`Endpoint::handle_message`] (a datagram or a
//! framed TCP message, with where it came from), [`Endpoint::handle_forwarded`]
//! (a message another shard handed over), [`Endpoint::handle_binding_change`]
//! (registrar replication) and [`Endpoint::handle_timer`]; after each call it
//! drains [`Endpoint::poll_output`]: transmissions, forwards to other shards,
//! binding broadcasts and timer requests. Time only arrives as `now`.
//!
//! Ownership: a response belongs to the shard named in its top Via branch, a
//! request inside one of our dialogs to the shard named in its To tag, a
//! REGISTER to its user's home shard (a hash of the user), everything else to
//! the shard that received it. A message is forwarded at most once: what
//! arrives over the mesh is handled where it lands.
//!
//! Checks on requests, in order (§8.2): version (505), method (501/405),
//! CSeq method (400), Request-URI scheme (416), Require (420), body type
//! (415), Accept for INVITE (406); then the method: OPTIONS 200, REGISTER via
//! digest auth and the registrar, INVITE 483 when Max-Forwards is exhausted
//! (an INVITE is always forwarded onward by the B2BUA) else 404/480 until the
//! call engine lands, CANCEL 200/481, in-dialog requests 481.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::{AuthOutcome, DigestAlgorithm, DigestAuth, FailureCounters};
use super::build::{self, ResponseParts};
use super::grammar::{Scheme, unescape};
use super::ids::{IdGen, ShardId, shard_of};
use super::message::{self, Contacts, Framing, HeaderName, Limits, Message, Method};
use super::registrar::{
    self, BindingChange, ContactSet, ContactSpec, LocationService, RegisterError, RegisterRequest,
    Registrar, RegistrarLimits,
};
use super::transaction::{
    ServerInvite, ServerNonInvite, TimerConfig, TuEvent, TxOutput, is_rfc3261_branch,
};
use crate::call::record::CallRecord;
use crate::call::{self, B2bua, CallConfig, CallOutput};
use crate::stats::ShardCounters;

/// Methods this endpoint implements (the Allow header): REGISTER, and the
/// call engine's (INVITE and the requests it relays inside calls).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY, MESSAGE";
/// Bodies we understand (the Accept header).
pub const ACCEPT: &str = "application/sdp";
/// Option tags a caller may require: RFC 4028 session timers. (We PRACK a
/// callee's reliable provisional responses, but never send our own, so a
/// caller's `Require: 100rel` gets 420.)
pub const SUPPORTED: &[&str] = &["timer"];

/// How a peer is reached: a UDP listen address (by index in `sip.listen`,
/// the same on every shard) or a TCP connection owned by some shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    Udp { listen: u16 },
    Tcp { shard: ShardId, conn: u64 },
}

/// A peer: link plus its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub link: Link,
    pub addr: SocketAddr,
}

impl Peer {
    /// Over a reliable transport (TCP): no retransmissions (§17).
    pub fn reliable(&self) -> bool {
        matches!(self.link, Link::Tcp { .. })
    }

    fn framing(&self) -> Framing {
        match self.link {
            Link::Udp { .. } => Framing::Datagram,
            Link::Tcp { .. } => Framing::Stream,
        }
    }
}

/// A message handed from one shard to another.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub peer: Peer,
    pub data: Bytes,
}

/// A timer the endpoint asks the shell for; stale firings are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    Transaction(u64),
    Registrar,
    /// The call engine's.
    Call(call::TimerKey),
}

/// What the shell must do.
#[derive(Debug, Clone)]
pub enum Output {
    Transmit {
        peer: Peer,
        data: Bytes,
    },
    Forward {
        shard: ShardId,
        msg: Forwarded,
    },
    /// Send to every other shard (their location replicas).
    Broadcast(BindingChange),
    Timer {
        at: Instant,
        key: TimerKey,
    },
    /// A finished call, for the shard's record sink.
    Record(Box<CallRecord>),
    /// For the ACD engine.
    Acd(crate::acd::Input),
    /// For the control plane (CTI events, command replies).
    Cti(crate::cti::event::ToControl),
}

/// Settings of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub shard: ShardId,
    pub shards: u16,
    pub domain: String,
    /// Server header value; empty = none.
    pub server: String,
    pub timers: TimerConfig,
    pub limits: Limits,
    pub registrar: RegistrarLimits,
    pub nonce_lifetime: Duration,
    pub algorithms: Vec<DigestAlgorithm>,
    /// Digest nonce key, the same on every shard.
    pub nonce_key: [u8; 32],
    /// User-Agent fragments (lower-case) of clients challenged with MD5 only.
    pub md5_only_user_agents: Vec<String>,
    /// user id → password.
    pub users: HashMap<String, String>,
    pub seed: u64,
    /// The B2BUA's settings.
    pub call: CallConfig,
}

enum TxKind {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerTx {
    kind: TxKind,
    peer: Peer,
    key: Vec<u8>,
    scheduled: Option<Instant>,
    /// For an INVITE: the request (to answer 487 on CANCEL) until final.
    invite: Option<Message>,
    to_tag: String,
}

/// Rate limit for log lines about bad input, so a flood cannot flood the log.
struct LogLimit {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    const PER_SECOND: u32 = 20;

    fn allow(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                if self.suppressed > 0 {
                    tracing::info!(
                        suppressed = self.suppressed,
                        "similar log lines about bad input suppressed"
                    );
                }
                self.window_start = Some(now);
                self.in_window = 0;
                self.suppressed = 0;
            }
        }
        self.in_window += 1;
        if self.in_window > Self::PER_SECOND {
            self.suppressed += 1;
            false
        } else {
            true
        }
    }
}

/// The SIP endpoint of one shard.
pub struct Endpoint {
    cfg: EndpointConfig,
    ids: IdGen,
    auth: DigestAuth,
    failures: FailureCounters,
    registrar: Registrar,
    registrar_scheduled: Option<Instant>,
    location: LocationService,
    txs: HashMap<u64, Box<ServerTx>>,
    tx_index: HashMap<Vec<u8>, u64>,
    next_tx: u64,
    out: VecDeque<Output>,
    counters: std::sync::Arc<ShardCounters>,
    log_limit: LogLimit,
    draining: bool,
    calls: B2bua,
}

impl Endpoint {
    /// `epoch` anchors nonce timestamps; it must be the same on every shard.
    pub fn new(
        cfg: EndpointConfig,
        epoch: Instant,
        counters: std::sync::Arc<ShardCounters>,
    ) -> Self {
        let auth = DigestAuth::new(
            cfg.domain.clone(),
            cfg.nonce_key,
            cfg.nonce_lifetime,
            cfg.algorithms.clone(),
            epoch,
        )
        .with_instance(u32::from(cfg.shard.0));
        Endpoint {
            ids: IdGen::new(cfg.shard, cfg.seed),
            auth,
            failures: FailureCounters::default(),
            registrar: Registrar::new(cfg.registrar),
            registrar_scheduled: None,
            location: LocationService::new(),
            // Pre-sized like the call engine's (see call::TX_CAPACITY).
            txs: HashMap::with_capacity(crate::call::TX_CAPACITY),
            tx_index: HashMap::with_capacity(crate::call::TX_CAPACITY),
            next_tx: 0,
            out: VecDeque::new(),
            counters: counters.clone(),
            log_limit: LogLimit {
                window_start: None,
                in_window: 0,
                suppressed: 0,
            },
            draining: false,
            calls: B2bua::new(cfg.call.clone(), counters.clone()),
            cfg,
        }
    }

    pub fn shard(&self) -> ShardId {
        self.cfg.shard
    }

    /// The location replica the call engine queries.
    pub fn location(&self) -> &LocationService {
        &self.location
    }

    /// Authentication failures by source and user (for later banning).
    pub fn failures(&self) -> &FailureCounters {
        &self.failures
    }

    /// Next output for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// SIGTERM: stop taking new INVITEs and end every call (BYE to
    /// answered legs, CANCEL and 503 while ringing); everything else is
    /// still answered.
    pub fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        self.calls.begin_drain(now);
        self.pump_calls(now);
    }

    /// The work a draining shard waits for: INVITEs not answered finally,
    /// calls, and our BYEs still waiting for their answer. (An answered
    /// INVITE only waits for its ACK; leaving then costs the peer nothing
    /// but a retransmission into a closed socket.)
    pub fn pending_invites(&self) -> usize {
        self.txs.values().filter(|t| t.invite.is_some()).count() + self.calls.pending_work()
    }

    /// Calls this shard holds.
    pub fn active_calls(&self) -> usize {
        self.calls.active_calls()
    }

    /// A datagram on one of the media engine's sockets (the RTP fast
    /// path: the call engine only hears of it when the media engine
    /// reports something).
    pub fn handle_media(
        &mut self,
        now: Instant,
        sock: crate::media::engine::MediaSock,
        src: std::net::SocketAddr,
        data: &[u8],
    ) {
        self.calls.handle_media(now, sock, src, data);
        if self.calls.has_output() {
            self.pump_calls(now);
        }
    }

    /// The shard's media engine.
    pub fn media_mut(&mut self) -> &mut crate::media::engine::MediaEngine {
        self.calls.media_mut()
    }

    /// A datagram or framed stream message that arrived on this shard.
    pub fn handle_message(&mut self, now: Instant, peer: Peer, data: Bytes) {
        self.handle(now, peer, data, false);
    }

    /// A message another shard forwarded here: handled here, never again
    /// forwarded.
    pub fn handle_forwarded(&mut self, now: Instant, msg: Forwarded) {
        self.counters.forwarded_in.bump();
        self.handle(now, msg.peer, msg.data, true);
    }

    /// A decision of the ACD about one of this shard's calls.
    pub fn handle_acd(&mut self, now: Instant, out: crate::acd::Output) {
        self.calls.handle_acd(now, out, &self.location);
        self.pump_calls(now);
    }

    /// A CTI command for one of this shard's calls (or a new one).
    pub fn handle_cti(&mut self, now: Instant, cmd: crate::cti::event::CallCommand) {
        self.calls.handle_cti(now, cmd, &self.location);
        self.pump_calls(now);
    }

    /// Another shard's registrar changed a user's bindings.
    pub fn handle_binding_change(&mut self, change: BindingChange) {
        self.location.apply(change);
    }

    /// A timer the endpoint asked for has fired (maybe late, maybe stale).
    pub fn handle_timer(&mut self, now: Instant, key: TimerKey) {
        match key {
            TimerKey::Transaction(id) => {
                if let Some(tx) = self.txs.get_mut(&id) {
                    match &mut tx.kind {
                        TxKind::Invite(t) => t.handle_timeout(now),
                        TxKind::NonInvite(t) => t.handle_timeout(now),
                    }
                    tx.scheduled = None;
                    self.drain_tx(id);
                }
            }
            TimerKey::Registrar => {
                self.registrar_scheduled = None;
                self.registrar.handle_timeout(now);
                self.after_registrar(now);
            }
            TimerKey::Call(k) => {
                self.calls.handle_timer(now, k);
                self.pump_calls(now);
            }
        }
    }

    /// Carries out what the call engine asked for.
    fn pump_calls(&mut self, now: Instant) {
        self.calls.dial_pending(now, &self.location);
        while let Some(o) = self.calls.poll_output() {
            match o {
                CallOutput::Transmit { peer, data } => self.transmit(peer, data),
                CallOutput::Respond { stx, status, data } => {
                    let Some(tx) = self.txs.get_mut(&stx) else {
                        continue;
                    };
                    let r = match &mut tx.kind {
                        TxKind::Invite(t) => t.send_response(now, status, data),
                        TxKind::NonInvite(t) => t.send_response(now, status, data),
                    };
                    match r {
                        Ok(()) => self.counters.response_out(status),
                        Err(e) => tracing::debug!(error = %e, "call engine response refused"),
                    }
                    self.drain_tx(stx);
                }
                CallOutput::Timer { at, key } => self.out.push_back(Output::Timer {
                    at,
                    key: TimerKey::Call(key),
                }),
                CallOutput::Record(r) => self.out.push_back(Output::Record(r)),
                CallOutput::Acd(i) => self.out.push_back(Output::Acd(i)),
                CallOutput::Cti(m) => self.out.push_back(Output::Cti(m)),
            }
        }
    }

    fn handle(&mut self, now: Instant, peer: Peer, data: Bytes, forwarded: bool) {
        let msg = match message::parse(data.clone(), peer.framing(), &self.cfg.limits) {
            Ok(m) => m,
            Err(e) => {
                self.counters.parse_errors[e.kind.index()].bump();
                self.answer_unparsable(now, peer, &data, e.what);
                return;
            }
        };
        if !forwarded
            && let Some(owner) = self.owner_of(&msg)
            && owner != self.cfg.shard
            && owner.0 < self.cfg.shards
        {
            self.counters.forwarded_out.bump();
            self.out.push_back(Output::Forward {
                shard: owner,
                msg: Forwarded { peer, data },
            });
            return;
        }
        match msg.status() {
            Some(status) => {
                self.counters.response_in(status);
                self.calls.handle_response(now, msg);
                self.pump_calls(now);
            }
            None => self.handle_request(now, peer, msg),
        }
    }

    /// The shard owning a message, when it is not simply "here".
    fn owner_of(&self, msg: &Message) -> Option<ShardId> {
        if !msg.is_request() {
            return msg.top_via().branch().and_then(|b| shard_of(b));
        }
        if let Some(tag) = msg.to.tag()
            && let Some(s) = shard_of(tag)
        {
            return Some(s);
        }
        if *msg.method() == Method::Register && msg.to.uri.is_sip() {
            return Some(self.home_shard(&msg.to.uri.user));
        }
        None
    }

    /// The shard whose registrar holds `user` (FNV-1a of the decoded user).
    fn home_shard(&self, user_escaped: &[u8]) -> ShardId {
        let mut h: u32 = 0x811c_9dc5;
        for b in unescape(user_escaped) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        // invariant: shards >= 1 and the result < shards <= u16::MAX.
        ShardId((h % u32::from(self.cfg.shards.max(1))) as u16)
    }

    /// A message that did not parse: 400 to a request we can still address,
    /// a counted drop otherwise (responses, binary junk).
    fn answer_unparsable(&mut self, now: Instant, peer: Peer, data: &Bytes, why: &'static str) {
        let salvaged = message::salvage_request(data);
        if self.log_limit.allow(now) {
            tracing::info!(src = %peer.addr, problem = why, answered = salvaged.is_some(), "malformed SIP message");
        }
        let Some(salvaged) = salvaged else { return };
        // Never answer a broken ACK (§17.2.1: ACK gets no response).
        if data.windows(4).next().is_some_and(|w| w == b"ACK ") {
            return;
        }
        let tag = self.ids.tag();
        let resp = build::bad_request_salvaged(&salvaged, why, tag.as_bytes(), &self.cfg.server);
        self.counters.response_out(400);
        self.transmit(peer, resp);
    }

    fn transmit(&mut self, peer: Peer, data: Bytes) {
        let ip = peer.addr.ip();
        let refused = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast())
            || peer.addr.port() == 0;
        if refused {
            self.counters.refused_destinations.bump();
            return;
        }
        self.out.push_back(Output::Transmit { peer, data });
    }

    /// The transaction a request belongs to (§17.2.3); an ACK belongs to
    /// its INVITE.
    fn tx_key(msg: &Message) -> Vec<u8> {
        let class: &[u8] = match msg.method() {
            Method::Ack | Method::Invite => b"INVITE",
            m => m.as_bytes(),
        };
        Self::tx_key_in(msg, class)
    }

    /// The key `msg` would have in a transaction of method `class` — how a
    /// CANCEL finds its INVITE (§9.2).
    fn tx_key_in(msg: &Message, class: &[u8]) -> Vec<u8> {
        let via = msg.top_via();
        let mut k = Vec::with_capacity(96);
        match via.branch() {
            Some(b) if is_rfc3261_branch(b) => {
                k.extend_from_slice(b);
                k.push(0);
                k.extend_from_slice(&via.host.to_ascii_lowercase());
                k.extend_from_slice(&via.port.unwrap_or(0).to_be_bytes());
            }
            _ => {
                // RFC 2543 matching (§17.2.3): Request-URI, tags, Call-ID,
                // CSeq number and top Via.
                if let Some(u) = msg.request_uri() {
                    k.extend_from_slice(&u.raw);
                }
                k.push(0);
                k.extend_from_slice(msg.from.tag().map_or(&b""[..], |t| t));
                k.push(0);
                if *msg.method() != Method::Ack {
                    k.extend_from_slice(msg.to.tag().map_or(&b""[..], |t| t));
                }
                k.push(0);
                k.extend_from_slice(&msg.call_id);
                k.extend_from_slice(&msg.cseq.seq.to_be_bytes());
                k.extend_from_slice(&via.raw);
            }
        }
        k.push(0);
        k.extend_from_slice(class);
        k
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, msg: Message) {
        let method = msg.method().clone();
        self.counters.requests_in[method.counter_index()].bump();
        let key = Self::tx_key(&msg);
        if let Some(&id) = self.tx_index.get(&key) {
            // A retransmission, or the ACK of a non-2xx final.
            if let Some(tx) = self.txs.get_mut(&id) {
                match (&mut tx.kind, &method) {
                    (TxKind::Invite(t), Method::Ack) => t.handle_ack(now),
                    (TxKind::Invite(t), _) => t.handle_request(now),
                    (TxKind::NonInvite(t), _) => t.handle_request(now),
                }
                self.drain_tx(id);
            }
            return;
        }
        if method == Method::Ack {
            // ACK for a 2xx: the dialog's business.
            if msg.to.tag().is_some_and(|t| self.calls.owns_tag(t)) {
                self.calls.handle_ack(now, &msg);
                self.pump_calls(now);
            } else {
                self.counters.stray_acks.bump();
            }
            return;
        }
        let id = self.next_tx;
        self.next_tx += 1;
        let kind = if method == Method::Invite {
            TxKind::Invite(ServerInvite::new(now, self.cfg.timers, peer.reliable()))
        } else {
            TxKind::NonInvite(ServerNonInvite::new(now, self.cfg.timers, peer.reliable()))
        };
        self.counters.transactions_created.bump();
        let to_tag = match msg.to.tag() {
            Some(_) => String::new(),
            None => self.ids.tag(),
        };
        self.txs.insert(
            id,
            Box::new(ServerTx {
                kind,
                peer,
                key: key.clone(),
                scheduled: None,
                invite: None,
                to_tag,
            }),
        );
        self.tx_index.insert(key, id);
        let answer = match self.decide(now, peer, &msg) {
            Decision::Answer(a) => a,
            Decision::Call => {
                if method == Method::Invite && msg.to.tag().is_none() {
                    self.calls.handle_invite(now, id, peer, msg, &self.location);
                } else {
                    self.calls
                        .handle_in_dialog(now, id, peer, msg, &self.location);
                }
                self.pump_calls(now);
                self.drain_tx(id);
                return;
            }
        };
        let provisional = answer.status < 200;
        self.respond(now, id, &msg, answer);
        if method == Method::Invite
            && provisional
            && let Some(tx) = self.txs.get_mut(&id)
        {
            // Kept until the final answer, so a CANCEL can answer it 487.
            tx.invite = Some(msg);
        }
        self.drain_tx(id);
    }

    /// Sends `answer` on transaction `id`.
    fn respond(&mut self, now: Instant, id: u64, req: &Message, answer: Answer) {
        let Some(tx) = self.txs.get(&id) else { return };
        let headers: Vec<(&str, &str)> = answer
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let data = build::response(
            req,
            answer.status,
            &ResponseParts {
                reason: answer.reason,
                to_tag: (!tx.to_tag.is_empty()).then_some(tx.to_tag.as_bytes()),
                source: Some(tx.peer.addr),
                headers: &headers,
                server: &self.cfg.server,
                ..Default::default()
            },
        );
        self.counters.response_out(answer.status);
        if let Some(tx) = self.txs.get_mut(&id) {
            let r = match &mut tx.kind {
                TxKind::Invite(t) => t.send_response(now, answer.status, data),
                TxKind::NonInvite(t) => t.send_response(now, answer.status, data),
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "transaction refused a response");
            }
        }
    }

    /// Moves a transaction's outputs to the shell and keeps its timer armed.
    fn drain_tx(&mut self, id: u64) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let mut sends = Vec::new();
        let mut terminated = false;
        let mut timed_out = false;
        loop {
            let o = match &mut tx.kind {
                TxKind::Invite(t) => t.poll_output(),
                TxKind::NonInvite(t) => t.poll_output(),
            };
            match o {
                Some(TxOutput::Transmit(b)) => sends.push(b),
                Some(TxOutput::Tu(TuEvent::Timeout)) => timed_out = true,
                Some(TxOutput::Tu(_)) => {}
                Some(TxOutput::Terminated) => terminated = true,
                None => break,
            }
        }
        let peer = tx.peer;
        let next = match &tx.kind {
            TxKind::Invite(t) => t.poll_timeout(),
            TxKind::NonInvite(t) => t.poll_timeout(),
        };
        let reschedule = !terminated && next.is_some() && next != tx.scheduled;
        if reschedule {
            tx.scheduled = next;
        }
        if terminated {
            let key = std::mem::take(&mut tx.key);
            self.txs.remove(&id);
            self.tx_index.remove(&key);
        }
        if timed_out {
            self.counters.transactions_timed_out.bump();
        }
        for data in sends {
            self.transmit(peer, data);
        }
        if reschedule && let Some(at) = next {
            self.out.push_back(Output::Timer {
                at,
                key: TimerKey::Transaction(id),
            });
        }
    }

    /// The UAS core's decision for a new request (§8.2).
    fn decide(&mut self, now: Instant, peer: Peer, msg: &Message) -> Decision {
        let method = msg.method();
        // In one of our dialogs: the call engine's, whatever the method.
        if !matches!(method, Method::Cancel | Method::Register | Method::Ack)
            && msg.to.tag().is_some_and(|t| self.calls.owns_tag(t))
            && msg.version.eq_ignore_ascii_case(b"SIP/2.0")
            && msg.cseq.method == *method
        {
            return Decision::Call;
        }
        if let Some(refused) = self.check(msg) {
            return Decision::Answer(refused);
        }
        Decision::Answer(match method {
            Method::Options => Answer::status(200)
                .with("Allow", ALLOW)
                .with("Accept", ACCEPT)
                .with("Accept-Encoding", "identity")
                .with("Accept-Language", "en")
                .with("Supported", &SUPPORTED.join(", ")),
            Method::Register => self.register(now, peer, msg),
            Method::Invite => match self.invite(msg) {
                Some(refused) => refused,
                None => return Decision::Call,
            },
            Method::Cancel => self.cancel(now, msg),
            _ if msg.to.tag().is_some() || *method == Method::Bye => Answer::status(481),
            _ => Answer::status(405).with("Allow", ALLOW),
        })
    }

    /// The §8.2 checks every request outside our dialogs passes first:
    /// `Some` refuses it.
    fn check(&mut self, msg: &Message) -> Option<Answer> {
        let method = msg.method();
        if !msg.version.eq_ignore_ascii_case(b"SIP/2.0") {
            return Some(Answer::status(505));
        }
        if let Method::Other(_) = method {
            return Some(Answer::status(501).with("Allow", ALLOW));
        }
        if msg.cseq.method != *method {
            return Some(Answer::reason(
                400,
                "Bad Request (CSeq method does not match)",
            ));
        }
        let uri = msg.request_uri().map(|u| &u.scheme);
        if !matches!(uri, Some(Scheme::Sip | Scheme::Sips | Scheme::Tel)) {
            return Some(Answer::status(416));
        }
        if *method != Method::Cancel {
            let unsupported: Vec<String> = msg
                .require
                .iter()
                .filter(|t| {
                    !SUPPORTED
                        .iter()
                        .any(|s| t.eq_ignore_ascii_case(s.as_bytes()))
                })
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect();
            if !unsupported.is_empty() {
                return Some(Answer::status(420).with("Unsupported", &unsupported.join(", ")));
            }
        }
        if !msg.body.is_empty() {
            match &msg.content_type {
                None => {
                    return Some(Answer::reason(
                        400,
                        "Bad Request (body without Content-Type)",
                    ));
                }
                Some(t)
                    if !(t.matches("application", "sdp") || t.matches("multipart", "mixed")) =>
                {
                    return Some(Answer::status(415).with("Accept", ACCEPT));
                }
                Some(_) => {}
            }
        }
        if *method == Method::Invite
            && let Some(accept) = &msg.accept
            && !accept.iter().any(|a| a.matches("application", "sdp"))
        {
            return Some(Answer::status(406).with("Accept", ACCEPT));
        }
        None
    }

    /// An INVITE outside our dialogs: `None` hands it to the call engine.
    fn invite(&mut self, msg: &Message) -> Option<Answer> {
        if msg.to.tag().is_some() {
            return Some(Answer::status(481));
        }
        if self.draining {
            return Some(Answer::status(503).with("Retry-After", "30"));
        }
        if msg.max_forwards == Some(0) {
            return Some(Answer::status(483));
        }
        None
    }

    /// CANCEL (§9.2): matches the INVITE transaction with the same branch.
    fn cancel(&mut self, now: Instant, msg: &Message) -> Answer {
        let key = Self::tx_key_in(msg, b"INVITE");
        let Some(&invite_id) = self.tx_index.get(&key) else {
            return Answer::status(481);
        };
        if self.calls.owns_invite(invite_id) {
            self.calls.handle_cancel(now, invite_id);
            self.pump_calls(now);
        } else if let Some(invite) = self.txs.get_mut(&invite_id).and_then(|t| t.invite.take()) {
            self.respond(now, invite_id, &invite, Answer::status(487));
            self.drain_tx(invite_id);
        }
        Answer::status(200)
    }

    fn register(&mut self, now: Instant, peer: Peer, msg: &Message) -> Answer {
        if !msg.to.uri.is_sip() {
            return Answer::reason(400, "Bad Request (To is not a SIP or SIPS URI)");
        }
        let creds: Vec<&[u8]> = msg
            .header_values(HeaderName::Authorization)
            .map(|v| &v[..])
            .collect();
        let users = &self.cfg.users;
        let outcome = self
            .auth
            .verify(now, "REGISTER", &creds, |u| users.get(u).cloned());
        let user = match outcome {
            AuthOutcome::Authenticated { user } => user,
            AuthOutcome::NoCredentials => return self.challenge(now, msg, false),
            AuthOutcome::Stale => return self.challenge(now, msg, true),
            AuthOutcome::Failed { user, reason } => {
                return self.auth_failed(now, peer, user.as_deref(), &format!("{reason:?}"));
            }
        };
        let aor_user = msg.to.uri.user_text();
        if aor_user != user {
            return self.auth_failed(
                now,
                peer,
                Some(&user),
                "authenticated user differs from the To user",
            );
        }
        let contacts = match &msg.contacts {
            Contacts::None => ContactSet::None,
            Contacts::Star => ContactSet::Star,
            Contacts::List(list) => {
                let mut specs = Vec::with_capacity(list.len());
                for c in list {
                    let expires_param = match c.param("expires") {
                        Some(Some(v)) => match super::grammar::parse_delta_seconds(v) {
                            Ok(e) => Some(e),
                            Err(_) => {
                                return Answer::reason(400, "Bad Request (bad Contact expires)");
                            }
                        },
                        Some(None) => {
                            return Answer::reason(400, "Bad Request (bad Contact expires)");
                        }
                        None => None,
                    };
                    let q = match c.param("q") {
                        Some(Some(v)) => match std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<f32>().ok())
                        {
                            Some(q) => Some(q),
                            None => return Answer::reason(400, "Bad Request (bad Contact q)"),
                        },
                        _ => None,
                    };
                    let raw_params = c
                        .params
                        .iter()
                        .filter(|(n, _)| {
                            !n.eq_ignore_ascii_case(b"expires") && !n.eq_ignore_ascii_case(b"q")
                        })
                        .map(|(n, v)| match v {
                            Some(v) => format!(
                                ";{}={}",
                                String::from_utf8_lossy(n),
                                String::from_utf8_lossy(v)
                            ),
                            None => format!(";{}", String::from_utf8_lossy(n)),
                        })
                        .collect();
                    specs.push(ContactSpec {
                        uri: String::from_utf8_lossy(&c.uri.raw).into_owned(),
                        expires_param,
                        q,
                        raw_params,
                    });
                }
                ContactSet::List(specs)
            }
        };
        let transport = match peer.link {
            Link::Udp { .. } => registrar::Transport::Udp,
            Link::Tcp { .. } => registrar::Transport::Tcp,
        };
        let req = RegisterRequest {
            user: user.clone(),
            contacts,
            expires_header: msg.expires,
            call_id: String::from_utf8_lossy(&msg.call_id).into_owned(),
            cseq: msg.cseq.seq,
            source: peer.addr,
            transport,
            link: peer.link,
        };
        let result = self.registrar.handle_register(now, req);
        self.after_registrar(now);
        match result {
            Ok(ok) => {
                self.counters.registrations.bump();
                let mut answer = Answer::status(200);
                for b in ok.bindings {
                    let mut v = format!("<{}>;expires={}", b.uri, b.expires_in);
                    if let Some(q) = b.q {
                        v.push_str(&format!(";q={q}"));
                    }
                    answer = answer.with("Contact", &v);
                }
                answer
            }
            Err(RegisterError::IntervalTooBrief { min_expires }) => {
                Answer::status(423).with("Min-Expires", &min_expires.to_string())
            }
            Err(e) => {
                if self.log_limit.allow(now) {
                    tracing::info!(user = %user, src = %peer.addr, problem = %e, "REGISTER refused");
                }
                let reason = match e.status_code() {
                    400 => "Bad Request (bad Contact)",
                    403 => "Forbidden (too many contacts)",
                    _ => "Server Internal Error (CSeq out of order)",
                };
                Answer::reason(e.status_code(), reason)
            }
        }
    }

    /// 401 with one challenge per configured algorithm, in configured
    /// order — or MD5 alone for clients known to fail on any challenge
    /// they cannot answer (`registrar.md5_only_user_agents`).
    fn challenge(&mut self, now: Instant, msg: &Message, stale: bool) -> Answer {
        self.counters.auth_challenges.bump();
        let md5_only = self.auth.algorithms().contains(&DigestAlgorithm::Md5)
            && msg.other_header("User-Agent").is_some_and(|ua| {
                let ua = String::from_utf8_lossy(ua).to_ascii_lowercase();
                self.cfg
                    .md5_only_user_agents
                    .iter()
                    .any(|f| ua.contains(f.as_str()))
            });
        let challenges = if md5_only {
            self.auth
                .challenges_for(now, stale, &[DigestAlgorithm::Md5])
        } else {
            self.auth.challenges(now, stale)
        };
        let mut answer = Answer::status(401);
        for c in challenges {
            answer = answer.with("WWW-Authenticate", &c);
        }
        answer
    }

    /// Wrong password, unknown user, replay: one answer for all (no user
    /// enumeration), counted per source and per claimed user.
    fn auth_failed(&mut self, now: Instant, peer: Peer, user: Option<&str>, why: &str) -> Answer {
        self.counters.auth_failures.bump();
        self.failures.record(peer.addr.ip(), user);
        if self.log_limit.allow(now) {
            tracing::info!(src = %peer.addr, user = user.unwrap_or("-"), problem = why, "digest authentication failed");
        }
        Answer::status(403)
    }

    /// Broadcasts registrar changes and keeps its expiry timer armed.
    fn after_registrar(&mut self, now: Instant) {
        while let Some(change) = self.registrar.poll_change() {
            // A user's first phone or last one: its agent's phone state.
            let had = self.location.has_user(&change.user);
            if had == change.bindings.is_empty() {
                self.calls.handle_phone(&change.user, !had);
            }
            self.location.apply(change.clone());
            if self.cfg.shards > 1 {
                self.out.push_back(Output::Broadcast(change));
            }
        }
        if self.calls.has_output() {
            self.pump_calls(now);
        }
        self.counters
            .bindings
            .set(self.registrar.binding_count() as u64);
        let next = self.registrar.poll_timeout();
        if next.is_some() && next != self.registrar_scheduled {
            self.registrar_scheduled = next;
            if let Some(at) = next {
                self.out.push_back(Output::Timer {
                    at,
                    key: TimerKey::Registrar,
                });
            }
        }
    }
}

/// What becomes of a new request.
enum Decision {
    Answer(Answer),
    /// The call engine takes it.
    Call,
}

/// A response decision: status, optional reason, extra headers.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    reason: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn status(status: u16) -> Self {
        Answer {
            status,
            reason: None,
            headers: Vec::new(),
        }
    }

    fn reason(status: u16, reason: &'static str) -> Self {
        Answer {
            reason: Some(reason),
            ..Answer::status(status)
        }
    }

    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{ClientRequest, respond};
    use std::sync::Arc;

    fn config(shard: u16, shards: u16) -> EndpointConfig {
        EndpointConfig {
            shard: ShardId(shard),
            shards,
            domain: "switchboard.local".into(),
            server: "Switchboard-test".into(),
            timers: TimerConfig::default(),
            limits: Limits::default(),
            registrar: RegistrarLimits::default(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            nonce_key: [7; 32],
            md5_only_user_agents: vec!["baresip v1.".into()],
            users: (1001..=1010)
                .map(|u| (u.to_string(), format!("pw{u}")))
                .collect(),
            seed: 42,
            call: CallConfig::loopback(ShardId(shard), (1001..=1010).map(|u| u.to_string())),
        }
    }

    struct World {
        ep: Endpoint,
        now: Instant,
    }

    const PEER: Peer = Peer {
        link: Link::Udp { listen: 0 },
        addr: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000),
    };

    impl World {
        fn new() -> Self {
            let now = Instant::now();
            let mut ep = Endpoint::new(config(0, 1), now, Arc::new(ShardCounters::default()));
            ep.media_mut().add_virtual_pairs(30000, 64);
            World { ep, now }
        }

        /// Sends `data`, returns every transmitted response.
        fn send(&mut self, data: &[u8]) -> Vec<Message> {
            self.ep
                .handle_message(self.now, PEER, Bytes::copy_from_slice(data));
            let mut out = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                if let Output::Transmit { data, .. } = o {
                    match message::parse(data.clone(), Framing::Datagram, &Limits::default()) {
                        Ok(m) => out.push(m),
                        // A salvaged 400 echoes the sender's broken headers.
                        Err(_) => {
                            assert!(data.starts_with(b"SIP/2.0 400 Bad Request ("), "{data:?}");
                            out.push(bad_request_placeholder());
                        }
                    }
                }
            }
            out
        }

        fn status_of(&mut self, data: &[u8]) -> Option<u16> {
            let r = self.send(data);
            assert!(r.len() <= 1, "one answer at most, got {}", r.len());
            r.first().and_then(Message::status)
        }
    }

    fn bad_request_placeholder() -> Message {
        let text = "SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP x\r\nTo: <sip:x@y>\r\nFrom: <sip:x@y>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap()
    }

    fn register(user: &str, cseq: u32, auth: Option<&str>) -> String {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKr{cseq};rport\r\nMax-Forwards: 70\r\nTo: <sip:{user}@switchboard.local>\r\nFrom: <sip:{user}@switchboard.local>;tag=f1\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:40000>\r\n{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn header<'a>(m: &'a Message, name: &str) -> Vec<&'a str> {
        m.headers
            .iter()
            .filter(|h| h.is_named(name))
            .map(|h| std::str::from_utf8(&h.value).unwrap())
            .collect()
    }

    /// Authenticates with the first offered challenge.
    fn authorization(challenge: &str, user: &str, password: &str, nc: u32) -> String {
        respond(
            challenge.as_bytes(),
            &ClientRequest {
                username: user,
                password,
                method: "REGISTER",
                uri: "sip:switchboard.local",
                cnonce: "abc123",
                nc,
            },
        )
        .unwrap()
    }

    /// RFC 4475 §3 handling table (tests/data/rfc4475/README.md).
    #[test]
    fn rfc4475_answers() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
        let table = std::fs::read_to_string(format!("{dir}/expected.txt")).unwrap();
        let expected: Vec<(&str, Vec<u16>)> = table
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, codes) = l.split_once(' ').unwrap();
                let codes = match codes {
                    "-" => Vec::new(),
                    c => c.split(',').map(|x| x.parse().unwrap()).collect(),
                };
                (name, codes)
            })
            .collect();
        assert_eq!(expected.len(), 49);
        for (name, want) in &expected {
            let data = std::fs::read(format!("{dir}/{name}.dat")).unwrap();
            let mut w = World::new();
            let got = w.send(&data);
            // INVITEs get 100 Trying first; the table names the final answer.
            match (
                got.iter().find(|m| m.status() != Some(100)),
                want.is_empty(),
            ) {
                (None, true) => {}
                (Some(r), false) => {
                    let st = r.status().unwrap();
                    assert!(want.contains(&st), "{name}: got {st}, want {want:?}");
                    match *name {
                        "bext01" => assert_eq!(
                            header(r, "Unsupported"),
                            ["nothingSupportsThis, nothingSupportsThisEither"]
                        ),
                        "invut" | "sdp01" => assert_eq!(header(r, "Accept"), ["application/sdp"]),
                        "regaut01" => assert!(
                            header(r, "WWW-Authenticate")
                                .iter()
                                .all(|c| c.starts_with("Digest "))
                        ),
                        _ => {}
                    }
                }
                (got, _) => panic!("{name}: got {:?}, want {want:?}", got.map(Message::status)),
            }
        }
    }

    #[test]
    fn options_lists_allow_accept_supported() {
        let mut w = World::new();
        let r = w.send(b"OPTIONS sip:switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKo1\r\nMax-Forwards: 70\r\nTo: <sip:switchboard.local>\r\nFrom: <sip:probe@x>;tag=1\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r[0].status(), Some(200));
        assert_eq!(header(&r[0], "Allow"), [ALLOW]);
        assert_eq!(header(&r[0], "Accept"), [ACCEPT]);
        assert_eq!(header(&r[0], "Supported"), ["timer"]);
        assert!(r[0].to.tag().is_some());
    }

    #[test]
    fn register_digest_sha256_then_md5_and_bindings() {
        let mut w = World::new();
        let r = w.send(register("1001", 1, None).as_bytes());
        assert_eq!(r[0].status(), Some(401));
        let ch = header(&r[0], "WWW-Authenticate");
        assert_eq!(ch.len(), 2);
        assert!(
            ch[0].contains("algorithm=SHA-256"),
            "SHA-256 offered first: {ch:?}"
        );
        assert!(ch[1].contains("algorithm=MD5"));
        for (i, c) in ch.iter().enumerate() {
            // One nonce serves both challenges: the nonce count must rise.
            let a = authorization(c, "1001", "pw1001", 1 + i as u32);
            let cseq = 2 + i as u32;
            let r = w.send(register("1001", cseq, Some(&a)).as_bytes());
            assert_eq!(r[0].status(), Some(200), "challenge {i}");
            assert_eq!(
                header(&r[0], "Contact"),
                ["<sip:1001@127.0.0.1:40000>;expires=600"]
            );
        }
        let bound: Vec<_> = w.ep.location().lookup(w.now, "1001").collect();
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].source, PEER.addr);
    }

    #[test]
    fn listed_user_agents_get_md5_only() {
        let mut w = World::new();
        let req = register("1001", 1, None).replace(
            "Expires: 600",
            "User-Agent: baresip v1.0.0 (x86_64/linux)\r\nExpires: 600",
        );
        let r = w.send(req.as_bytes());
        let ch = header(&r[0], "WWW-Authenticate");
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert!(ch[0].contains("algorithm=MD5"));
        let a = authorization(ch[0], "1001", "pw1001", 1);
        let r = w.send(register("1001", 2, Some(&a)).as_bytes());
        assert_eq!(r[0].status(), Some(200));
    }

    #[test]
    fn wrong_password_and_unknown_user_get_the_same_answer() {
        let mut w = World::new();
        let r = w.send(register("1002", 1, None).as_bytes());
        let ch = header(&r[0], "WWW-Authenticate")[0].to_string();
        let wrong = authorization(&ch, "1002", "nope", 1);
        let r1 = w.send(register("1002", 2, Some(&wrong)).as_bytes());
        let unknown = authorization(&ch, "9999", "whatever", 1);
        let r2 = w.send(register("9999", 3, Some(&unknown)).as_bytes());
        assert_eq!(r1[0].status(), Some(403));
        assert_eq!(r2[0].status(), Some(403));
        assert_eq!(r1[0].start, r2[0].start, "same status line");
        let names = |m: &Message| {
            m.headers
                .iter()
                .map(|h| (h.name, h.name_raw.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&r1[0]), names(&r2[0]), "same headers");
        assert_eq!(w.ep.failures().by_source(PEER.addr.ip()), 2);
        assert_eq!(w.ep.failures().by_user("1002"), 1);
        assert_eq!(w.ep.failures().by_user("9999"), 1);
        assert_eq!(w.ep.location().lookup(w.now, "1002").count(), 0);
    }

    #[test]
    fn nist_absorbs_retransmitted_request() {
        let mut w = World::new();
        let req = register("1003", 1, None);
        let a = w.send(req.as_bytes());
        let b = w.send(req.as_bytes());
        assert_eq!(a.len(), 1);
        assert_eq!(
            b.len(),
            1,
            "retransmission answered with the stored response"
        );
        assert_eq!(a[0].to.tag(), b[0].to.tag(), "same response, not a new one");
        assert_eq!(w.ep.counters.transactions_created.get(), 1);
    }

    #[test]
    fn invite_error_retransmitted_until_ack_then_absorbed() {
        let mut w = World::new();
        let invite = "INVITE sip:5555@switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKi1\r\nMax-Forwards: 70\r\nTo: <sip:5555@switchboard.local>\r\nFrom: <sip:1001@switchboard.local>;tag=a\r\nCall-ID: i1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let r = w.send(invite.as_bytes());
        assert_eq!(r[0].status(), Some(100));
        assert_eq!(r[1].status(), Some(404));
        let tag = String::from_utf8(r[1].to.tag().unwrap().to_vec()).unwrap();
        // Timer G fires: the 404 is sent again.
        let mut timer = None;
        w.ep.handle_message(w.now, PEER, Bytes::from_static(b""));
        while let Some(o) = w.ep.poll_output() {
            if let Output::Timer { at, key } = o {
                timer = Some((at, key));
            }
        }
        // (the empty datagram above is a counted drop and yields no timer)
        assert!(timer.is_none());
        let r = w.send(invite.as_bytes());
        assert_eq!(r[0].status(), Some(404), "duplicate INVITE re-answered");
        let ack = format!(
            "ACK sip:5555@switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKi1\r\nMax-Forwards: 70\r\nTo: <sip:5555@switchboard.local>;tag={tag}\r\nFrom: <sip:1001@switchboard.local>;tag=a\r\nCall-ID: i1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(w.send(ack.as_bytes()).is_empty());
        assert_eq!(
            w.ep.counters.stray_acks.get(),
            0,
            "ACK matched the INVITE transaction"
        );
    }

    #[test]
    fn register_is_forwarded_to_the_users_home_shard() {
        let now = Instant::now();
        let counters = Arc::new(ShardCounters::default());
        let mut eps: Vec<Endpoint> = (0..4)
            .map(|s| Endpoint::new(config(s, 4), now, counters.clone()))
            .collect();
        let req = Bytes::from(register("1004", 1, None));
        eps[0].handle_message(now, PEER, req.clone());
        let home = eps[0].home_shard(b"1004");
        let mut forwarded = None;
        while let Some(o) = eps[0].poll_output() {
            match o {
                Output::Forward { shard, msg } => forwarded = Some((shard, msg)),
                Output::Transmit { .. } if home != ShardId(0) => {
                    panic!("answered on the wrong shard")
                }
                _ => {}
            }
        }
        if home == ShardId(0) {
            return;
        }
        let (shard, msg) = forwarded.expect("forwarded");
        assert_eq!(shard, home);
        eps[usize::from(shard.0)].handle_forwarded(now, msg);
        let mut answered = false;
        while let Some(o) = eps[usize::from(shard.0)].poll_output() {
            assert!(
                !matches!(o, Output::Forward { .. }),
                "never forwarded twice"
            );
            answered |= matches!(o, Output::Transmit { .. });
        }
        assert!(answered);
    }

    #[test]
    fn zero_max_forwards_invite_gets_483() {
        let mut w = World::new();
        let invite = "INVITE sip:1001@switchboard.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKmf\r\nMax-Forwards: 0\r\nTo: <sip:1001@switchboard.local>\r\nFrom: <sip:x@y>;tag=a\r\nCall-ID: mf\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(w.status_of(invite.as_bytes()), Some(483));
    }

    #[test]
    fn garbage_never_panics_and_is_counted() {
        let mut w = World::new();
        let mut rng_state: u64 = 0x9e3779b97f4a7c15;
        let base = register("1005", 1, None).into_bytes();
        for i in 0..3000 {
            let mut m = base.clone();
            for _ in 0..(i % 7 + 1) {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                let pos = (rng_state as usize) % m.len();
                match rng_state % 3 {
                    0 => m[pos] = (rng_state >> 8) as u8,
                    1 => m.truncate(pos),
                    _ => m.insert(pos, b"\r\n;,<\"%:"[(rng_state >> 16) as usize % 8]),
                }
                if m.is_empty() {
                    break;
                }
            }
            let _ = w.send(&m);
        }
    }
}
