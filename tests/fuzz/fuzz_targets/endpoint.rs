//! Fuzz target `endpoint`: the whole SIP endpoint (`sip::endpoint::Endpoint`:
//! parser, UAS checks, server transactions, digest auth, registrar, shard
//! routing) driven as the shell drives it, on a virtual clock.
//!
//! A world of two shards (0 and 1). `Forward` outputs are handed to the named
//! shard, `Broadcast`s to the other one, `Timer`s are kept and fired in time
//! order as the clock advances.
//!
//! The shards host a small contact center (users 1002 and 1003 are agents of
//! queue `support`, dialled as 200; 300 is IVR `main`: 1 → support, 9 →
//! account digits ended by `#`, then support; feature codes *71–*74), and a
//! real ACD engine (`switchboard::acd::Engine`) takes their `Acd` outputs and
//! hands its decisions to the shard of each call, as the shell's ACD thread
//! does. Prompts are empty: a menu waits for digits at once.
//!
//! Input: messages separated by the line `\n--sbfuzz`. The first message goes
//! to shard 0 over UDP from 127.0.0.1:40000 with auto-auth on, so a raw SIP
//! message (e.g. an RFC 4475 test) is a valid input. Every later message
//! starts with one op byte:
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0-1 | peer: 0 UDP 127.0.0.1:40000, 1 TCP 127.0.0.1:40001 (stream framing), 2 UDP [::1]:5070, 3 UDP 0.0.0.0:5060 (must never be answered) |
//! | 2 | receiving shard (0 or 1) |
//! | 3 | auto-auth: a 401 to this message is answered once with a valid `Authorization` for the To user (password from the users table, else a wrong one) on a fresh branch |
//! | 4-7 | n: the clock first advances n² · 250 ms, firing due timers |
//!
//! At the end the clock runs three hours on, firing every timer.
//!
//! Invariants checked (beyond "never panics"):
//! * one input makes at most `MAX_OUTPUTS` outputs (including what forwards
//!   and fired timers cascade into), and a clock advance fires at most
//!   `MAX_FIRINGS` timers (no timer storm);
//! * nothing is transmitted to an unspecified, multicast or port-0 address;
//! * every transmission is a SIP response that parses (status 100..=699), or
//!   a salvaged `400 Bad Request (…)` (which echoes the sender's broken
//!   headers and need not parse);
//! * a transmission is at most `2 · request + 8 KiB` bytes and at most 65535
//!   (no reflection amplification; a UDP datagram cannot be larger);
//! * at the end no INVITE transaction is pending, no timer is left, and no
//!   binding is left in any registrar or location replica.

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::acd;
use switchboard::call::{CallConfig, ContactPlan};
use switchboard::config::contact::{
    AgentConfig, Collect, ContactCenter, MenuConfig, QueueConfig, Route, Target,
};
use switchboard::sip::auth::{self, ClientRequest, DigestAlgorithm};
use switchboard::sip::endpoint::{Endpoint, EndpointConfig, Link, Output, Peer, TimerKey};
use switchboard::sip::ids::{ShardId, shard_of};
use switchboard::sip::message::{self, Framing, Limits};
use switchboard::sip::registrar::RegistrarLimits;
use switchboard::sip::transaction::TimerConfig;
use switchboard::stats::ShardCounters;

const DELIM: &[u8] = b"\n--sbfuzz";
const MAX_INPUTS: usize = 64;
const MAX_OUTPUTS: usize = 64;
const MAX_FIRINGS: usize = 10_000;
const MAX_DATAGRAM: usize = 65535;
const SHARDS: u16 = 2;

// The harness's one clock read, a base for virtual time: the engines only
// ever see `now` values derived from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `SB_FUZZ_TRACE=1` prints what each input did (for reading a reproducer).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SB_FUZZ_TRACE").is_some())
}

/// `SB_FUZZ_TOLERATE=salvage-size` skips a known open finding while exploring.
fn tolerate(what: &str) -> bool {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| std::env::var("SB_FUZZ_TOLERATE").unwrap_or_default())
        .split(',')
        .any(|t| t == what)
}

fn first_line(data: &[u8]) -> String {
    let end = data
        .iter()
        .position(|&c| c == b'\n')
        .unwrap_or(data.len())
        .min(120);
    String::from_utf8_lossy(&data[..end]).trim_end().to_owned()
}

fn users() -> HashMap<String, String> {
    (1001..=1010)
        .map(|u| (u.to_string(), format!("pw{u}")))
        .collect()
}

/// The contact center every shard hosts (see the module doc).
fn contact_center() -> &'static ContactCenter {
    static CC: OnceLock<ContactCenter> = OnceLock::new();
    CC.get_or_init(|| {
        let mut cc = ContactCenter::default();
        for id in ["1002", "1003"] {
            cc.agents.push(AgentConfig {
                id: id.into(),
                skills: Vec::new(),
            });
        }
        let mut support = QueueConfig::named("support");
        support.callback_key = Some('*');
        support.announce_every = Some(Duration::from_secs(30));
        cc.queues.push(support);
        let queue = Route::to(Target::Queue("support".into()));
        let mut main = MenuConfig::new("main", "main_menu");
        main.options = vec![
            ('1', queue.clone()),
            ('9', Route::to(Target::Menu("account".into()))),
        ];
        let mut account = MenuConfig::new("account", "account_prompt");
        account.collect = Collect::Digits {
            key: "account".into(),
            min: 1,
            max: 12,
            terminator: Some('#'),
            then: queue.clone(),
        };
        cc.menus = vec![main, account];
        cc.dialplan = vec![
            ("200".into(), queue),
            ("300".into(), Route::to(Target::Menu("main".into()))),
        ];
        cc
    })
}

fn config(shard: u16) -> EndpointConfig {
    EndpointConfig {
        shard: ShardId(shard),
        shards: SHARDS,
        domain: "switchboard.local".into(),
        server: "Switchboard-fuzz".into(),
        timers: TimerConfig::default(),
        limits: Limits::default(),
        registrar: RegistrarLimits::default(),
        nonce_lifetime: Duration::from_secs(300),
        algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        nonce_key: [7; 32],
        md5_only_user_agents: vec!["baresip v1.".into()],
        users: users(),
        seed: 42 + u64::from(shard),
        call: CallConfig {
            // Every call ends within the three virtual hours the target runs.
            max_duration: Duration::from_secs(3600),
            contact: Some(Arc::new(ContactPlan::new(
                contact_center(),
                Default::default(),
                3,
            ))),
            ..CallConfig::loopback(ShardId(shard), users().into_keys())
        },
    }
}

fn peer(kind: u8) -> Peer {
    let (link, addr) = match kind & 3 {
        0 => (Link::Udp { listen: 0 }, "127.0.0.1:40000"),
        1 => (
            Link::Tcp {
                shard: ShardId(0),
                conn: 7,
            },
            "127.0.0.1:40001",
        ),
        2 => (Link::Udp { listen: 1 }, "[::1]:5070"),
        _ => (Link::Udp { listen: 0 }, "0.0.0.0:5060"),
    };
    Peer {
        link,
        addr: addr.parse().unwrap(),
    }
}

fn refused(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast())
        || addr.port() == 0
}

struct Node {
    ep: Endpoint,
    counters: Arc<ShardCounters>,
    timers: Vec<(Instant, TimerKey)>,
}

struct World {
    nodes: Vec<Node>,
    acd: acd::Engine,
    now: Instant,
    branch: u64,
}

/// What one input led to.
#[derive(Default)]
struct Effects {
    outputs: usize,
    /// Responses transmitted: (status, data). Status 0 = salvaged 400.
    responses: Vec<(u16, Bytes)>,
}

impl World {
    fn new() -> Self {
        let epoch = t0();
        World {
            nodes: (0..SHARDS)
                .map(|s| {
                    let counters = Arc::new(ShardCounters::default());
                    let mut ep = Endpoint::new(config(s), epoch, counters.clone());
                    ep.media_mut().add_virtual_pairs(30000, 64);
                    Node {
                        ep,
                        counters,
                        timers: Vec::new(),
                    }
                })
                .collect(),
            acd: acd::Engine::new(acd::Settings::from_config(contact_center(), 5), epoch),
            now: epoch,
            branch: 0,
        }
    }

    /// Delivers `data` to `shard` and runs every consequence.
    fn send(&mut self, shard: usize, peer: Peer, data: Bytes) -> Effects {
        let bound = data.len();
        if trace() {
            eprintln!(
                "t+{:?} shard {shard} <- {} {:?}: {}",
                self.now - t0(),
                peer.addr,
                peer.link,
                first_line(&data)
            );
        }
        self.nodes[shard].ep.handle_message(self.now, peer, data);
        let mut fx = Effects::default();
        self.drain(bound, &mut fx);
        fx
    }

    /// Drains every node's outputs, following forwards and broadcasts.
    /// `request_len` bounds the size of what may be transmitted.
    fn drain(&mut self, request_len: usize, fx: &mut Effects) {
        loop {
            let mut progressed = false;
            for s in 0..self.nodes.len() {
                while let Some(o) = self.nodes[s].ep.poll_output() {
                    progressed = true;
                    fx.outputs += 1;
                    assert!(
                        fx.outputs <= MAX_OUTPUTS,
                        "more than {MAX_OUTPUTS} outputs for one input"
                    );
                    self.output(s, o, request_len, fx);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn output(&mut self, from: usize, o: Output, request_len: usize, fx: &mut Effects) {
        match o {
            Output::Transmit { peer, data } => {
                assert!(!refused(peer.addr), "transmitted to {}", peer.addr);
                let limit = (2 * request_len + 8192).min(MAX_DATAGRAM);
                // Known open issue (regressions/endpoint/): a salvaged 400
                // repeats every To header with our tag appended.
                let known =
                    tolerate("salvage-size") && data.starts_with(b"SIP/2.0 400 Bad Request (");
                assert!(
                    known || data.len() <= limit,
                    "a {}-byte transmission for a {request_len}-byte input (limit {limit}): {:?}",
                    data.len(),
                    data.slice(..data.len().min(200)),
                );
                let unlimited = Limits {
                    max_message_bytes: usize::MAX,
                    max_headers: usize::MAX,
                };
                match message::parse(data.clone(), Framing::Datagram, &unlimited) {
                    Ok(m) if m.is_request() => {
                        // The B2BUA's own requests: on a branch of this shard.
                        let method = m.method().as_bytes();
                        assert!(
                            [
                                &b"INVITE"[..],
                                b"ACK",
                                b"CANCEL",
                                b"BYE",
                                b"PRACK",
                                b"UPDATE",
                                b"NOTIFY",
                                b"INFO",
                                b"OPTIONS",
                                b"MESSAGE",
                                b"REFER",
                            ]
                            .contains(&method),
                            "transmitted an unexpected request: {data:?}"
                        );
                        let branch = m.top_via().branch().map(|b| b.to_vec());
                        assert_eq!(
                            branch.as_deref().and_then(shard_of),
                            Some(ShardId(from as u16)),
                            "a request on a branch not minted by shard {from}: {data:?}"
                        );
                        if trace() {
                            eprintln!("  shard {from} -> {}: {}", peer.addr, first_line(&data));
                        }
                    }
                    Ok(m) => {
                        let status = m.status().unwrap_or_else(|| {
                            panic!("transmitted neither request nor response: {data:?}");
                        });
                        assert!((100..=699).contains(&status));
                        if trace() {
                            eprintln!("  shard {from} -> {}: {}", peer.addr, first_line(&data));
                        }
                        fx.responses.push((status, data));
                    }
                    Err(e) => {
                        assert!(
                            data.starts_with(b"SIP/2.0 400 Bad Request ("),
                            "transmitted unparsable {data:?}: {e}"
                        );
                        if trace() {
                            eprintln!(
                                "  shard {from} -> {}: {} (salvaged)",
                                peer.addr,
                                first_line(&data)
                            );
                        }
                        fx.responses.push((0, data));
                    }
                }
            }
            Output::Forward { shard, msg } => {
                let to = usize::from(shard.0);
                assert!(to < self.nodes.len(), "forward to shard {}", shard.0);
                assert_ne!(to, from, "forward to itself");
                if trace() {
                    eprintln!("  shard {from} forwards to shard {to}");
                }
                self.nodes[to].ep.handle_forwarded(self.now, msg);
            }
            Output::Record(_) | Output::Cti(_) => {}
            Output::Acd(input) => {
                if trace() {
                    eprintln!("  shard {from} -> acd: {input:?}");
                }
                self.acd.handle(self.now, input);
                self.acd_decisions();
            }
            Output::Broadcast(change) => {
                if trace() {
                    eprintln!(
                        "  shard {from} broadcasts {}: {} binding(s)",
                        change.user,
                        change.bindings.len()
                    );
                }
                for (s, n) in self.nodes.iter_mut().enumerate() {
                    if s != from {
                        n.ep.handle_binding_change(change.clone());
                    }
                }
            }
            Output::Timer { at, key } => self.nodes[from].timers.push((at, key)),
        }
    }

    /// Hands each of the ACD's decisions to the shard of its call (the
    /// shard id is the call key's top 16 bits).
    fn acd_decisions(&mut self) {
        while let Some(o) = self.acd.poll_output() {
            let call = match &o {
                acd::Output::Offer { call, .. }
                | acd::Output::Cancel { call, .. }
                | acd::Output::Announce { call, .. }
                | acd::Output::Route { call, .. }
                | acd::Output::CallBack { call, .. } => *call,
                acd::Output::AgentState { .. } => continue,
            };
            let shard = (call.0 >> 48) as usize;
            assert!(
                shard < self.nodes.len(),
                "an ACD decision for shard {shard}"
            );
            if trace() {
                eprintln!("  acd -> shard {shard}: {o:?}");
            }
            self.nodes[shard].ep.handle_acd(self.now, o);
        }
    }

    /// Advances the clock to `to`, firing due timers (the shards' and the
    /// ACD's) in time order.
    fn advance(&mut self, to: Instant) {
        let mut fired = 0usize;
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .flat_map(|(s, n)| n.timers.iter().enumerate().map(move |(i, t)| (t.0, s, i)))
                .filter(|t| t.0 <= to)
                .min();
            if let Some(at) = self.acd.poll_timeout().filter(|&at| at <= to)
                && next.is_none_or(|(t, _, _)| at < t)
            {
                self.now = self.now.max(at);
                fired += 1;
                assert!(fired <= MAX_FIRINGS, "timer storm: {MAX_FIRINGS} firings");
                self.acd.handle_timeout(self.now);
                self.acd_decisions();
                let mut fx = Effects::default();
                self.drain(MAX_DATAGRAM, &mut fx);
                continue;
            }
            let Some((at, s, i)) = next else { break };
            let (_, key) = self.nodes[s].timers.swap_remove(i);
            self.now = self.now.max(at);
            fired += 1;
            assert!(fired <= MAX_FIRINGS, "timer storm: {MAX_FIRINGS} firings");
            if trace() {
                eprintln!("t+{:?} shard {s} timer {key:?}", self.now - t0());
            }
            self.nodes[s].ep.handle_timer(self.now, key);
            let mut fx = Effects::default();
            // A timer retransmits something already sent: bound it loosely.
            self.drain(MAX_DATAGRAM, &mut fx);
        }
        self.now = self.now.max(to);
    }

    /// Answers a 401 to `request` once, with a valid Authorization for the
    /// To user, on a fresh branch.
    fn auto_auth(&mut self, shard: usize, peer: Peer, request: &Bytes, fx: &Effects) {
        let Some((_, challenge_resp)) = fx.responses.iter().find(|(s, _)| *s == 401) else {
            return;
        };
        let Ok(resp) = message::parse(
            challenge_resp.clone(),
            Framing::Datagram,
            &Limits::default(),
        ) else {
            return;
        };
        let Some(challenge) = resp
            .headers
            .iter()
            .find(|h| h.name_raw.eq_ignore_ascii_case(b"WWW-Authenticate"))
            .map(|h| h.value.clone())
        else {
            return;
        };
        let Ok(req) = message::parse(request.clone(), peer_framing(peer), &Limits::default())
        else {
            return;
        };
        let user = String::from_utf8_lossy(&req.to.uri.user_decoded()).into_owned();
        let password = users()
            .get(&user)
            .cloned()
            .unwrap_or_else(|| "wrong".into());
        let uri = req
            .request_uri()
            .map(|u| String::from_utf8_lossy(&u.raw).into_owned())
            .unwrap_or_default();
        let Ok(answer) = auth::respond(
            &challenge,
            &ClientRequest {
                username: &user,
                password: &password,
                method: "REGISTER",
                uri: &uri,
                cnonce: "f0zz",
                nc: 1,
            },
        ) else {
            return;
        };
        let Some(nl) = request.iter().position(|&c| c == b'\n') else {
            return;
        };
        self.branch += 1;
        let mut again = request[..=nl].to_vec();
        again.extend_from_slice(
            format!(
                "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKfzauth{}\r\nAuthorization: {answer}\r\n",
                self.branch
            )
            .as_bytes(),
        );
        // The added headers sit before the body: Content-Length still holds.
        again.extend_from_slice(&request[nl + 1..]);
        self.send(shard, peer, Bytes::from(again));
    }
}

fn peer_framing(p: Peer) -> Framing {
    match p.link {
        Link::Udp { .. } => Framing::Datagram,
        Link::Tcp { .. } => Framing::Stream,
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(DELIM.len()).position(|w| w == DELIM) {
        out.push(&rest[..i]);
        rest = &rest[i + DELIM.len()..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    for (i, chunk) in split(data).into_iter().take(MAX_INPUTS).enumerate() {
        let (op, msg) = match (i, chunk.split_first()) {
            (0, _) => (0b1000u8, chunk),
            (_, Some((&op, msg))) => (op, msg),
            (_, None) => continue,
        };
        let n = u64::from(op >> 4);
        let to = w.now + Duration::from_millis(n * n * 250);
        w.advance(to);
        let shard = usize::from((op >> 2) & 1);
        let peer = peer(op);
        let msg = Bytes::copy_from_slice(msg);
        let fx = w.send(shard, peer, msg.clone());
        if op & 0b1000 != 0 {
            w.auto_auth(shard, peer, &msg, &fx);
        }
    }

    // Run the clock past every expiry: RFC 3261 timers end within 64·T1 + T4,
    // bindings within registrar.max_expires.
    let end = w.now + Duration::from_secs(3 * 3600);
    w.advance(end);
    for (s, n) in w.nodes.iter().enumerate() {
        assert_eq!(
            n.ep.pending_invites(),
            0,
            "shard {s}: INVITE transaction leaked"
        );
        assert!(
            n.timers.is_empty(),
            "shard {s}: timers left: {:?}",
            n.timers
        );
        assert_eq!(
            n.counters.bindings.get(),
            0,
            "shard {s}: registrar bindings leaked"
        );
        assert_eq!(
            n.ep.location().binding_count(),
            0,
            "shard {s}: location replica bindings leaked"
        );
    }
});
