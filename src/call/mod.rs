//! The call engine: a back-to-back user agent (B2BUA) that connects a caller
//! to registered phones and stays in the path of both legs.
//!
//! A call is an A leg (the caller's dialog, in which we are the UAS) and one
//! or more B legs (our dialogs towards the callee's phones, in which we are
//! the UAC), each its own RFC 3261 §12 dialog with its own Call-ID, tags,
//! CSeq space and route set. The shard that received the INVITE owns the
//! call: every tag, branch and Call-ID minted here encodes that shard, so
//! later messages of the call reach it.
//!
//! What it does:
//! * **Dial plan**: the Request-URI user names a configured user → that
//!   user's registered contacts, forked in parallel (first 2xx wins, the
//!   others are CANCELled); unknown → 404; nobody registered → 480; nobody
//!   answering within `calls.no_answer_timeout_s` → 480 and CANCEL.
//! * **Flows**: 100 Trying at once; 1xx relayed with their (early-media)
//!   SDP; the 2xx relayed, the callee ACKed at once (or, for an offerless
//!   INVITE, with the answer from the caller's ACK); BYE from either side
//!   answered and sent on; CANCEL → 487 and CANCEL of the B legs; failures
//!   mapped (best response per §16.7; 503 → 500); re-INVITE, UPDATE, INFO,
//!   OPTIONS and other in-dialog requests relayed with their bodies, and
//!   their answers relayed back; 491 on INVITE glare; Contact rewritten to
//!   the appliance; Max-Forwards decremented; Record-Route kept.
//! * **Liveness**: a maximum call duration; a leg whose ACK never comes or
//!   whose in-dialog request times out or gets 481 ends the call, and the
//!   other leg gets a BYE.
//! * **Blind transfer**: a REFER from either party is executed (RFC 3515):
//!   202, NOTIFY with message/sipfrag, an offerless INVITE to the target,
//!   whose offer re-INVITEs the other party (RFC 3725 flow I).
//! * **Records**: a [`record::CallRecord`] per call when it ends.
//!
//! Sans-IO: the [`crate::sip::endpoint::Endpoint`] hands in new INVITEs,
//! in-dialog requests, ACKs, CANCELs and responses; this engine owns the
//! client transactions, dialogs and the caller's 2xx retransmission, and
//! yields [`CallOutput`]s: bytes to send, responses for the endpoint's
//! server transactions, timers and records. Time only arrives as `now`.

mod cti;
pub mod dialog;
mod hosted;
pub mod record;
#[cfg(test)]
mod tests;
pub mod wrapup;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::engine::{LegId as MediaLeg, MediaConfig, MediaEngine, MediaEvent, MediaSock};
use crate::sip::build::{self, ResponseParts};
use crate::sip::endpoint::Peer;
use crate::sip::ids::{IdGen, ShardId};
use crate::sip::message::{HeaderName, Message, Method};
use crate::sip::registrar::LocationService;
use crate::sip::transaction::{
    AckWait, ClientInvite, ClientInviteState, ClientNonInvite, ClientNonInviteState, TimerConfig,
    TuEvent, TxOutput,
};
use crate::stats::ShardCounters;
use dialog::{Dialog, Local, Req};
pub use hosted::ContactPlan;
use record::{CallRecord, EndCause, LegRecord, Side};

/// Methods the B2BUA takes (the Allow header of calls).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY, MESSAGE";

/// Option tags of our requests and answers: we PRACK reliable provisional
/// responses (RFC 3262) and run session timers (RFC 4028).
const SUPPORTED: &str = "100rel, timer";

/// Room the engine's maps start with. Transactions live 32 s after their
/// answer (RFC 6026 Timer M), so the maps grow with the call rate; values are
/// boxed and the maps pre-sized so that growing rehashes pointers, not
/// calls, in one go on the shard's hot path.
const INITIAL_CAPACITY: usize = 16 * 1024;
/// Client transactions: about three per call for 32 s, so room for
/// ~1300 calls/s before the first rehash. The buckets are only touched
/// when used (a few MiB of address space).
pub(crate) const TX_CAPACITY: usize = 128 * 1024;

/// Most contacts one call forks to.
const MAX_FORKS: usize = 16;

/// Headers carried from an incoming request to the one we send on the
/// other leg (besides the body and its Content-Type).
const CARRIED: &[&str] = &[
    "Event",
    "Subscription-State",
    "Info-Package",
    "Content-Disposition",
    "Reason",
    "Subject",
    "Alert-Info",
    "Call-Info",
    "Priority",
    "P-Asserted-Identity",
    "Privacy",
    "User-to-User",
];

/// Settings of the call engine.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub shard: ShardId,
    pub domain: String,
    /// User-Agent / Server value; empty = none.
    pub user_agent: String,
    pub timers: TimerConfig,
    pub local: Local,
    /// Users the dial plan routes to (their registered phones).
    pub users: HashSet<String>,
    pub no_answer: Duration,
    pub max_duration: Duration,
    /// RFC 4028 session interval we ask for (s).
    pub session_expires: u32,
    /// RFC 4028 smallest interval we accept (s).
    pub min_se: u32,
    pub seed: u64,
    /// The media engine's settings.
    pub media: MediaConfig,
    /// Which answered calls are recorded.
    pub recording: crate::config::RecordingConfig,
    /// Queues, IVR menus and agents (hosted calls); None = users only.
    pub contact: Option<Arc<ContactPlan>>,
}

impl CallConfig {
    /// Defaults on udp+tcp 127.0.0.1:5060 for `users` in
    /// `switchboard.local` (tests, fuzzing).
    pub fn loopback(shard: ShardId, users: impl IntoIterator<Item = String>) -> CallConfig {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5060));
        CallConfig {
            shard,
            domain: "switchboard.local".into(),
            user_agent: "Switchboard-test".into(),
            timers: TimerConfig::default(),
            local: Local {
                listen: vec![(addr, false), (addr, true)],
            },
            users: users.into_iter().collect(),
            no_answer: Duration::from_secs(30),
            max_duration: Duration::from_secs(4 * 3600),
            session_expires: 1800,
            min_se: 90,
            seed: 7,
            media: MediaConfig::loopback(),
            recording: crate::config::RecordingConfig::default(),
            contact: None,
        }
    }
}

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegId {
    A,
    B(u16),
}

/// Timers of the call engine; stale firings are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A client transaction.
    Tx(u64),
    /// The 2xx retransmission of a leg's INVITE (waiting for its ACK).
    AckWait(u64, LegId),
    NoAnswer(u64),
    MaxDuration(u64),
    /// RFC 4028: a leg's session refresh (we refresh) or expiry (it does).
    Session(u64, LegId),
    /// A CANCELled INVITE that never got its final response (§9.1).
    CancelGiveUp(u64),
    /// The media engine's liveness and recording sweep (every 20 ms while
    /// legs exist).
    MediaSweep,
    /// The media engine's frame clock (while legs are transcoded).
    MediaTick,
    /// A hosted call's IVR deadline.
    Hosted(u64),
}

/// What the shell (through the endpoint) must do.
#[derive(Debug, Clone)]
pub enum CallOutput {
    Transmit {
        peer: Peer,
        data: Bytes,
    },
    /// A response on the endpoint's server transaction `stx`.
    Respond {
        stx: u64,
        status: u16,
        data: Bytes,
    },
    Timer {
        at: Instant,
        key: TimerKey,
    },
    Record(Box<CallRecord>),
    /// For the ACD engine.
    Acd(crate::acd::Input),
    /// For the control plane (CTI events and command replies).
    Cti(crate::cti::event::ToControl),
}

/// A response to build: status plus what differs from the plain answer.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    status: u16,
    reason: Option<&'a str>,
    to_tag: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
    /// Copy the request's Record-Route (dialog-creating responses).
    record_route: bool,
}

impl<'a> Reply<'a> {
    fn new(status: u16) -> Self {
        Reply {
            status,
            reason: None,
            to_tag: None,
            headers: &[],
            body: b"",
            record_route: false,
        }
    }
    fn reason(mut self, r: Option<&'a str>) -> Self {
        self.reason = r;
        self
    }
    fn tag(mut self, t: Option<&'a str>) -> Self {
        self.to_tag = t;
        self
    }
    fn headers(mut self, h: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = h;
        self
    }
    fn body(mut self, b: &'a [u8]) -> Self {
        self.body = b;
        self
    }
    fn record_route(mut self) -> Self {
        self.record_route = true;
        self
    }
}

/// What a client transaction is for.
#[derive(Debug)]
enum Purpose {
    /// A callee leg's INVITE (initial, or a transfer target's).
    BInvite { call: u64, leg: u16 },
    /// A request relayed from leg `from` (server transaction `stx`).
    Relay {
        call: u64,
        from: LegId,
        stx: u64,
        req: Box<Message>,
    },
    /// The re-INVITE that moves the other party to a transfer target.
    TransferReinvite { call: u64, target: u16 },
    /// Our RFC 4028 refresh (UPDATE or re-INVITE) on a leg.
    Refresh { call: u64, leg: LegId },
    /// A queue callback: our INVITE to the customer who asked for it.
    Callback { call: u64 },
    /// BYE, CANCEL, NOTIFY, PRACK: the answer changes nothing.
    Fire,
}

/// What an INVITE we sent needs for its CANCEL, ACKs and, for an unwanted
/// 2xx, its BYE.
#[derive(Debug, Clone)]
struct InviteParts {
    dialog: Dialog,
    branch: String,
    cseq: u32,
}

#[derive(Debug)]
enum Machine {
    Invite(ClientInvite, Box<InviteParts>),
    NonInvite(ClientNonInvite),
}

#[derive(Debug)]
struct ClientTx {
    machine: Machine,
    peer: Peer,
    key: Vec<u8>,
    scheduled: Option<Instant>,
    purpose: Purpose,
    /// A CANCEL was sent for this INVITE.
    cancelled: bool,
}

impl ClientTx {
    /// Still waiting for a final response.
    fn open(&self) -> bool {
        match &self.machine {
            Machine::Invite(m, _) => matches!(
                m.state(),
                ClientInviteState::Calling | ClientInviteState::Proceeding
            ),
            Machine::NonInvite(m) => matches!(
                m.state(),
                ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
            ),
        }
    }
}

/// One leg's dialog and the state around its INVITE transactions.
#[derive(Debug)]
struct Leg {
    dialog: Dialog,
    /// Our 2xx to this leg's INVITE, retransmitted until its ACK.
    ack_wait: Option<AckWait>,
    ack_scheduled: Option<Instant>,
    /// Our ACK to this leg's last 2xx (re-sent on a retransmitted 2xx).
    last_ack: Option<Bytes>,
    /// A 2xx from this leg (to an INVITE without offer) whose ACK waits for
    /// the answer in the other leg's ACK: its CSeq, and the offer it
    /// carried (rejected in the ACK if the answer never comes).
    ack_deferred: Option<(u32, Bytes)>,
    /// An INVITE transaction is in progress in this dialog (glare → 491).
    invite_busy: bool,
    /// RFC 4028 session timer of this leg, once negotiated.
    session: Option<SessionTimer>,
    /// The peer's Allow lists UPDATE (refresh with UPDATE, not re-INVITE).
    allows_update: bool,
    /// The session description we last sent on this leg, for a re-INVITE
    /// refresh (Content-Type, body).
    last_sdp: Option<(String, Bytes)>,
    /// Its media leg (the forks of a call share one).
    media: Option<MediaLeg>,
}

/// Who refreshes a session (RFC 4028 `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresher {
    Uac,
    Uas,
}

/// A leg's negotiated session timer.
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    /// Session interval (s).
    interval: u32,
    /// We send the refreshes; otherwise the peer must.
    we_refresh: bool,
    /// When the armed timer is due (stale firings are ignored).
    due: Option<Instant>,
}

impl SessionTimer {
    /// §10: refresh at half the interval; the one waiting for a refresh
    /// gives up at the interval minus min(32 s, interval/3).
    fn next(&self, now: Instant) -> Instant {
        let i = u64::from(self.interval);
        let after = if self.we_refresh {
            i / 2
        } else {
            i - (i / 3).min(32)
        };
        now + Duration::from_secs(after.max(1))
    }
}

impl Leg {
    fn new(dialog: Dialog) -> Leg {
        Leg {
            dialog,
            ack_wait: None,
            ack_scheduled: None,
            last_ack: None,
            ack_deferred: None,
            invite_busy: false,
            session: None,
            allows_update: false,
            last_sdp: None,
            media: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    /// INVITE sent, nothing back yet.
    Trying,
    /// A provisional response arrived (a CANCEL may be sent now).
    Early,
    /// It answered and is (or was) the connected party.
    Answered,
    /// Final failure, cancelled, or hung up.
    Done,
}

#[derive(Debug)]
struct BLeg {
    leg: Leg,
    tx: u64,
    state: BState,
    /// CANCEL once a provisional response arrives.
    cancel_wanted: bool,
    user: String,
    status: Option<u16>,
    /// A transfer target (not a fork of the original call).
    transfer: bool,
    /// A consultation target (`call.consult`).
    consult: bool,
    /// Cancelled by `call.answer`: sent again asking to auto-answer.
    reoffer: bool,
    /// RSeq of the last reliable provisional response we PRACKed.
    rseq: Option<u32>,
}

impl BLeg {
    /// A callee leg whose INVITE (client transaction `tx`) just went out.
    fn new(leg: Leg, tx: u64, user: String) -> BLeg {
        BLeg {
            leg,
            tx,
            state: BState::Trying,
            cancel_wanted: false,
            user,
            status: None,
            transfer: false,
            consult: false,
            reoffer: false,
            rseq: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ringing the callee(s).
    Setup,
    /// Connected: A with `b[peer]`.
    Answered,
}

/// A blind transfer in progress: the REFER came from `referrer`.
#[derive(Debug)]
struct Transfer {
    referrer: LegId,
    /// The leg being moved (the one that stays).
    moved: LegId,
    target: u16,
    /// The target's offer, waiting for the moved leg's INVITE transaction
    /// (its ACK) to end before the re-INVITE carries it.
    pending_offer: Option<(Option<String>, Bytes)>,
    /// Asked by a REFER (its subscription gets NOTIFYs); else by CTI (the
    /// appliance hangs the referrer up once the target is connected).
    refer: bool,
}

#[derive(Debug)]
struct Call {
    a: Leg,
    /// The caller's INVITE and its server transaction, until answered
    /// finally.
    a_invite: Option<(u64, Box<Message>)>,
    a_offer: bool,
    /// RFC 4028 terms for the caller's leg, decided from its INVITE.
    a_session: Option<(u32, Refresher)>,
    b: Vec<BLeg>,
    phase: Phase,
    /// The B leg A is connected to.
    peer: u16,
    best: Option<(u16, String)>,
    dialled: String,
    caller_user: String,
    started: Instant,
    answered: Option<Instant>,
    transfer: Option<Transfer>,
    transfers: u32,
    /// Client transactions relaying a request of this call (some may have
    /// finished already): answered 487 if the call ends first.
    relays: Vec<u64>,
    /// Every media leg opened for the call (closed when it ends).
    media: Vec<MediaLeg>,
    /// DTMF digits heard from the caller, and from the other parties.
    digits: String,
    callee_digits: String,
    /// Its recording, once answered (if recorded).
    recording: Option<u64>,
    /// An IVR or queue call, answered here.
    hosted: Option<Box<hosted::Hosted>>,
    /// Data attached over CTI (`call.set_data`, `call.make`).
    data: Vec<(String, String)>,
    /// Held over CTI (since when), and the hold time before.
    held: bool,
    held_since: Option<Instant>,
    held_total: Duration,
    /// The A leg is the agent's phone (click-to-dial), not the customer.
    a_is_agent: bool,
    /// `call.ringing` was told.
    rang: bool,
    /// A consultation in progress (`call.consult`), and how many there were.
    consult: Option<cti::Consult>,
    /// `call.answer` asked the agent's phone to answer by itself.
    auto_answer: bool,
    consults: u32,
    /// In a conference (`call.conference`): the B legs in it with the
    /// customer, the agent's first.
    conference: Option<Vec<u16>>,
}

impl Call {
    /// A call in setup from caller leg `a`, with the caller's media leg
    /// `ma` and `mb` for the other side; the rest starts empty.
    fn new(
        mut a: Leg,
        dialled: String,
        caller_user: String,
        started: Instant,
        (ma, mb): (MediaLeg, MediaLeg),
    ) -> Call {
        a.media = Some(ma);
        Call {
            a,
            a_invite: None,
            a_offer: true,
            a_session: None,
            b: Vec::new(),
            phase: Phase::Setup,
            peer: 0,
            best: None,
            dialled,
            caller_user,
            started,
            answered: None,
            transfer: None,
            transfers: 0,
            relays: Vec::new(),
            media: vec![ma, mb],
            digits: String::new(),
            callee_digits: String::new(),
            recording: None,
            hosted: None,
            data: Vec::new(),
            held: false,
            held_since: None,
            held_total: Duration::ZERO,
            a_is_agent: false,
            rang: false,
            consult: None,
            auto_answer: false,
            consults: 0,
            conference: None,
        }
    }

    /// Off hold at `now`: the time held is added up.
    fn unhold(&mut self, now: Instant) {
        self.held = false;
        if let Some(t) = self.held_since.take() {
            self.held_total += now.saturating_duration_since(t);
        }
    }

    fn leg_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        match id {
            LegId::A => Some(&mut self.a),
            LegId::B(i) => self.b.get_mut(usize::from(i)).map(|b| &mut b.leg),
        }
    }

    fn leg(&self, id: LegId) -> Option<&Leg> {
        match id {
            LegId::A => Some(&self.a),
            LegId::B(i) => self.b.get(usize::from(i)).map(|b| &b.leg),
        }
    }

    /// The leg connected to `id` in an answered call.
    fn other(&self, id: LegId) -> Option<LegId> {
        if self.phase != Phase::Answered {
            return None;
        }
        match id {
            LegId::A => Some(LegId::B(self.peer)),
            LegId::B(i) if i == self.peer => Some(LegId::A),
            LegId::B(_) => None,
        }
    }
}

/// The B2BUA of one shard.
pub struct B2bua {
    cfg: CallConfig,
    ids: IdGen,
    calls: HashMap<u64, Box<Call>>,
    next_call: u64,
    /// Our local tag → the call and leg.
    dialogs: HashMap<String, (u64, LegId)>,
    /// Server transaction of a caller's INVITE → its call (for CANCEL).
    invites: HashMap<u64, u64>,
    txs: HashMap<u64, Box<ClientTx>>,
    /// branch + NUL + CSeq method → client transaction.
    tx_index: HashMap<Vec<u8>, u64>,
    next_tx: u64,
    out: VecDeque<CallOutput>,
    counters: Arc<ShardCounters>,
    draining: bool,
    media: MediaEngine,
    /// The media sweep timer is set.
    sweep_armed: bool,
    /// The media frame clock is set.
    tick_armed: bool,
    /// Users hosted calls were routed to, rung once the location
    /// service is at hand.
    pending_dials: Vec<(u64, String, Option<crate::acd::AgentId>)>,
    /// Customers waiting for a queue callback, by call id.
    parked: HashMap<u64, Box<hosted::Parked>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tx_key(branch: &[u8], method: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(branch.len() + 1 + method.len());
    k.extend_from_slice(branch);
    k.push(0);
    k.extend_from_slice(method);
    k
}

/// What the caller hears when every callee leg failed with `status`
/// (§16.7: a 503 from downstream becomes 500, so the caller does not take
/// it for the appliance being overloaded; our own timeout is 480).
fn map_failure(status: u16) -> u16 {
    match status {
        503 => 500,
        408 => 480,
        s => s,
    }
}

/// §16.7 choice among final failures: 6xx beats all; else the lowest class.
fn better(new: u16, old: u16) -> bool {
    let class = |s: u16| s / 100;
    if class(old) == 6 {
        return false;
    }
    if class(new) == 6 {
        return true;
    }
    class(new) < class(old)
}

impl B2bua {
    pub fn new(cfg: CallConfig, counters: Arc<ShardCounters>) -> B2bua {
        B2bua {
            ids: IdGen::new(cfg.shard, cfg.seed ^ 0x6361_6c6c),
            calls: HashMap::with_capacity(INITIAL_CAPACITY),
            next_call: 0,
            dialogs: HashMap::with_capacity(INITIAL_CAPACITY),
            invites: HashMap::with_capacity(INITIAL_CAPACITY),
            txs: HashMap::with_capacity(TX_CAPACITY),
            tx_index: HashMap::with_capacity(TX_CAPACITY),
            next_tx: 0,
            out: VecDeque::new(),
            cfg: cfg.clone(),
            media: MediaEngine::new(cfg.media.clone(), counters.clone()),
            counters,
            draining: false,
            sweep_armed: false,
            tick_armed: false,
            pending_dials: Vec::new(),
            parked: HashMap::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    /// Whether outputs wait.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.pending_dials.is_empty()
    }

    /// The shard's media engine (the shell adds port pairs and drains
    /// its send queue).
    pub fn media_mut(&mut self) -> &mut MediaEngine {
        &mut self.media
    }

    /// A datagram on one of the media engine's sockets.
    pub fn handle_media(
        &mut self,
        now: Instant,
        sock: MediaSock,
        src: std::net::SocketAddr,
        data: &[u8],
    ) {
        self.media.handle_packet(now, sock, src, data);
        self.media_events(now);
        self.arm_media_tick(now);
    }

    /// Starts the media clock once a leg is transcoded or hears a clip
    /// (a packet or an SDP exchange may have started either).
    fn arm_media_tick(&mut self, now: Instant) {
        if !self.tick_armed && self.media.wants_tick() {
            self.tick_armed = true;
            self.out.push_back(CallOutput::Timer {
                at: now + crate::media::engine::TICK,
                key: TimerKey::MediaTick,
            });
        }
    }

    /// Acts on what the media engine reported.
    fn media_events(&mut self, now: Instant) {
        while let Some(ev) = self.media.poll_event() {
            match ev {
                MediaEvent::Dtmf { call, leg, digit } => {
                    let mut hosted = false;
                    if let Some(c) = self.calls.get_mut(&call) {
                        if c.a.media == Some(leg) {
                            c.digits.push(digit);
                            hosted = c.hosted.is_some();
                        } else {
                            c.callee_digits.push(digit);
                        }
                    }
                    self.emit(now, call, crate::cti::event::CallEventKind::Dtmf { digit });
                    if hosted {
                        self.hosted_digit(now, call, digit);
                    }
                }
                MediaEvent::Inactive { call, .. } => {
                    if self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.phase == Phase::Answered)
                    {
                        self.end_call(now, call, EndCause::MediaTimeout, Side::System, None);
                    }
                }
                // Prompts are played once to hosted callers.
                MediaEvent::PlayDone { call, leg } => {
                    if self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.hosted.is_some() && c.a.media == Some(leg))
                    {
                        self.hosted_play_done(now, call);
                    }
                }
            }
        }
    }

    /// The two media legs of new call `id` (the caller's, then the other
    /// side's); without a free port pair the INVITE is refused with 503
    /// and `None` comes back.
    fn open_call_media(
        &mut self,
        now: Instant,
        id: u64,
        stx: u64,
        msg: &Message,
        peer: Peer,
        local_tag: &str,
    ) -> Option<(MediaLeg, MediaLeg)> {
        if let (Some(ma), Some(mb)) = (self.open_media(now, id), self.open_media(now, id)) {
            return Some((ma, mb));
        }
        self.media.close_legs_of(id);
        let headers = [
            ("Retry-After", "5"),
            ("Warning", "399 switchboard \"no free RTP port\""),
        ];
        self.refuse(now, stx, msg, peer, 503, local_tag, &headers);
        None
    }

    /// Opens a media leg for call `id`, arming the sweep.
    fn open_media(&mut self, now: Instant, id: u64) -> Option<MediaLeg> {
        let leg = self.media.open_leg(now, id).ok()?;
        if !self.sweep_armed {
            self.sweep_armed = true;
            self.out.push_back(CallOutput::Timer {
                at: now + crate::media::engine::SWEEP,
                key: TimerKey::MediaSweep,
            });
        }
        Some(leg)
    }

    /// Calls held now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Work a draining shard waits for: calls, and requests still waiting
    /// for their final response (the BYEs of the drain).
    pub fn pending_work(&self) -> usize {
        self.calls.len() + self.txs.values().filter(|t| t.open()).count()
    }

    /// Whether `tag` is one of our dialogs' local tags.
    pub fn owns_tag(&self, tag: &[u8]) -> bool {
        std::str::from_utf8(tag).is_ok_and(|t| self.dialogs.contains_key(t))
    }

    /// Whether server transaction `stx` is a caller's INVITE we handle.
    pub fn owns_invite(&self, stx: u64) -> bool {
        self.invites.contains_key(&stx)
    }

    /// SIGTERM: end every call with BYE (or CANCEL and 503 while ringing).
    pub fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.end_call(now, id, EndCause::Shutdown, Side::System, None);
        }
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    /// A new INVITE (no To tag) on server transaction `stx`, already past
    /// the endpoint's §8.2 checks.
    pub fn handle_invite(
        &mut self,
        now: Instant,
        stx: u64,
        peer: Peer,
        msg: Message,
        location: &LocationService,
    ) {
        self.counters.calls_started.bump();
        self.reply(stx, &msg, peer, Reply::new(100));
        let dialled = msg.request_uri().map(|u| u.user_text()).unwrap_or_default();
        let local_tag = self.ids.tag();
        if self.draining {
            self.refuse(
                now,
                stx,
                &msg,
                peer,
                503,
                &local_tag,
                &[("Retry-After", "30")],
            );
            return;
        }
        let entry = if self.cfg.users.contains(&dialled) {
            None
        } else {
            match self.hosted_route(&dialled, &text(&msg.from.uri.user)) {
                Some(e) => Some(e),
                None => {
                    self.refuse(now, stx, &msg, peer, 404, &local_tag, &[]);
                    return;
                }
            }
        };
        // The offer is parsed (RFC 4566) before it goes on: a broken one is
        // the caller's to fix, not the phone's.
        if !msg.body.is_empty()
            && msg
                .content_type
                .as_ref()
                .is_some_and(|t| t.matches("application", "sdp"))
            && let Err(e) = crate::sdp::SessionDescription::parse(&msg.body)
        {
            self.refuse_sdp(now, stx, &msg, peer, &local_tag, &format!("bad SDP: {e}"));
            return;
        }
        // RFC 4028 §8.1: too short an interval gets 422 with our Min-SE.
        let se = session_expires(&msg);
        if let Some((n, _)) = se
            && n < self.cfg.min_se
        {
            let min_se = self.cfg.min_se.to_string();
            self.refuse(
                now,
                stx,
                &msg,
                peer,
                422,
                &local_tag,
                &[("Min-SE", &min_se)],
            );
            return;
        }
        let a_session = self.plan_a_session(&msg, se);
        if let Some(entry) = entry {
            self.host(now, stx, peer, msg, entry, local_tag, a_session);
            return;
        }
        let contacts: Vec<_> = location
            .lookup(now, &dialled)
            .take(MAX_FORKS)
            .cloned()
            .collect();
        if contacts.is_empty() {
            self.refuse(now, stx, &msg, peer, 480, &local_tag, &[]);
            return;
        }
        let id = self.next_call;
        // Media: the caller's leg, and one the callee's phones share.
        let Some((ma, mb)) = self.open_call_media(now, id, stx, &msg, peer, &local_tag) else {
            return;
        };
        let (ct, body) = body_of(&msg);
        let b_body = match ct
            .as_deref()
            .filter(|t| is_sdp(t))
            .map(|_| self.media.translate_offer(ma, mb, &body))
        {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                self.media.close_legs_of(id);
                self.refuse_sdp(now, stx, &msg, peer, &local_tag, &e.to_string());
                return;
            }
            None => body,
        };
        self.next_call += 1;
        let a = Dialog::from_invite(&msg, peer, local_tag.clone());
        let a_allows_update = allows_update(&msg);
        self.dialogs.insert(local_tag, (id, LegId::A));
        self.invites.insert(stx, id);
        let caller_user = text(&msg.from.uri.user);
        let mut call = Call {
            a_offer: !msg.body.is_empty(),
            a_session,
            ..Call::new(Leg::new(a), dialled.clone(), caller_user, now, (ma, mb))
        };
        call.a.invite_busy = true;
        call.a.allows_update = a_allows_update;
        let max_forwards = msg.max_forwards.unwrap_or(70).saturating_sub(1);
        for c in &contacts {
            let peer = Peer {
                link: c.link,
                addr: c.source,
            };
            self.fork(
                now,
                id,
                &mut call,
                &msg,
                (ct.clone(), b_body.clone()),
                &dialled,
                &c.uri,
                peer,
                max_forwards,
            );
        }
        call.a_invite = Some((stx, Box::new(msg)));
        self.calls.insert(id, Box::new(call));
        self.counters.calls_active.set(self.calls.len() as u64);
        self.out.push_back(CallOutput::Timer {
            at: now + self.cfg.no_answer,
            key: TimerKey::NoAnswer(id),
        });
    }

    /// The caller CANCELled its INVITE (the endpoint answered the CANCEL).
    pub fn handle_cancel(&mut self, now: Instant, stx: u64) {
        if let Some(&id) = self.invites.get(&stx) {
            self.end_call(now, id, EndCause::CallerCancelled, Side::Caller, Some(487));
        }
    }

    /// An ACK for a 2xx, in one of our dialogs.
    pub fn handle_ack(&mut self, now: Instant, msg: &Message) {
        self.ack(now, msg);
        self.arm_media_tick(now);
    }

    fn ack(&mut self, now: Instant, msg: &Message) {
        let Some((id, leg)) = self.dialog_of(msg) else {
            self.counters.stray_acks.bump();
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(l) = call.leg_mut(leg) else { return };
        if let Some(w) = l.ack_wait.as_mut() {
            w.handle_ack(now);
        }
        l.ack_wait = None;
        l.invite_busy = false;
        // The answer of an offerless INVITE rides in this ACK: pass it on.
        let other = match leg {
            LegId::A if call.phase == Phase::Setup => None,
            LegId::A => Some(LegId::B(call.peer)),
            LegId::B(i) if i == call.peer => Some(LegId::A),
            LegId::B(_) => None,
        };
        let pending_transfer = call
            .transfer
            .as_mut()
            .filter(|t| t.moved == leg)
            .and_then(|t| t.pending_offer.take().map(|o| (t.target, o)));
        if let Some((target, offer)) = pending_transfer {
            self.transfer_reinvite(now, id, leg, target, offer);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let from_media = call.leg(leg).and_then(|l| l.media);
        if let Some(o) = other
            && let Some(ol) = call.leg_mut(o)
            && let Some((cseq, _)) = ol.ack_deferred.take()
        {
            let (ct, body) = translate(
                &mut self.media,
                now,
                from_media,
                ol.media,
                Sdp::Answer,
                body_of(msg),
            );
            let ct = ct.filter(|_| !body.is_empty());
            let ack = build_ack(
                &self.cfg,
                &mut self.ids,
                &ol.dialog,
                cseq,
                &body,
                ct.as_deref(),
            );
            ol.last_ack = Some(ack.clone());
            let peer = ol.dialog.peer;
            self.counters.requests_out[Method::Ack.counter_index()].bump();
            self.out.push_back(CallOutput::Transmit { peer, data: ack });
        }
    }

    /// A request (not ACK, not CANCEL) carrying one of our tags in To, on
    /// the endpoint's server transaction `stx`.
    pub fn handle_in_dialog(
        &mut self,
        now: Instant,
        stx: u64,
        peer: Peer,
        msg: Message,
        location: &LocationService,
    ) {
        self.in_dialog(now, stx, peer, msg, location);
        self.arm_media_tick(now);
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        stx: u64,
        peer: Peer,
        msg: Message,
        location: &LocationService,
    ) {
        let Some((id, leg)) = self.dialog_of(&msg) else {
            self.reply(stx, &msg, peer, Reply::new(481));
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            self.reply(stx, &msg, peer, Reply::new(481));
            return;
        };
        let Some(l) = call.leg_mut(leg) else { return };
        // §12.2.2: CSeq must grow.
        if let Some(last) = l.dialog.remote_seq
            && msg.cseq.seq <= last
        {
            self.reply(
                stx,
                &msg,
                peer,
                Reply::new(500).reason(Some("Server Internal Error (CSeq out of order)")),
            );
            return;
        }
        l.dialog.remote_seq = Some(msg.cseq.seq);
        let method = msg.method().clone();
        match method {
            Method::Bye => {
                self.reply(stx, &msg, peer, Reply::new(200));
                let side = if leg == LegId::A {
                    Side::Caller
                } else {
                    Side::Callee
                };
                let transferring = self
                    .calls
                    .get(&id)
                    .and_then(|c| c.transfer.as_ref())
                    .is_some_and(|t| t.referrer == leg);
                let hosted_alone = self.calls.get(&id).is_some_and(|c| hosted::unconnected(c));
                match (leg, self.calls.get(&id).map(|c| c.phase)) {
                    (LegId::A, _) if hosted_alone => {
                        self.end_call(now, id, EndCause::Normal, side, None)
                    }
                    // The transferor may leave once its REFER is accepted.
                    (LegId::B(i), _) if transferring => self.retire_b(id, i),
                    // The consulted party hung up: back to the customer.
                    (LegId::B(i), _)
                        if self
                            .calls
                            .get(&id)
                            .is_some_and(|c| c.consult.as_ref().is_some_and(|k| k.leg() == i)) =>
                    {
                        self.retire_b(id, i);
                        self.consult_hung_up(now, id);
                    }
                    // A party of a conference hung up: the others talk on.
                    (LegId::B(i), _) if self.conferenced(id, i) => {
                        self.retire_b(id, i);
                        self.conference_left(now, id, i);
                    }
                    (LegId::A, Some(Phase::Setup)) => {
                        self.end_call(now, id, EndCause::CallerCancelled, side, Some(487))
                    }
                    (LegId::B(i), Some(Phase::Setup)) => self.b_failed(now, id, i, 480, None),
                    (LegId::B(i), _) if self.calls.get(&id).is_some_and(|c| c.peer != i) => {
                        self.retire_b(id, i)
                    }
                    _ => self.end_call(now, id, EndCause::Normal, side, None),
                }
            }
            Method::Refer if self.calls.get(&id).is_some_and(|c| c.conference.is_some()) => {
                let r = Reply::new(403).reason(Some("Forbidden (the call is a conference)"));
                self.reply(stx, &msg, peer, r);
            }
            Method::Refer => self.refer(now, id, leg, stx, peer, msg, location),
            Method::Prack => {
                // We never send reliable provisionals: nothing to acknowledge.
                self.reply(stx, &msg, peer, Reply::new(481));
            }
            _ if leg == LegId::A && self.calls.get(&id).is_some_and(|c| hosted::unconnected(c)) => {
                self.hosted_request(now, id, leg, stx, peer, msg)
            }
            // A conference's parties are answered here (the mix is ours).
            _ if self.calls.get(&id).is_some_and(|c| c.conference.is_some()) => {
                self.hosted_request(now, id, leg, stx, peer, msg)
            }
            _ => self.relay(now, id, leg, stx, peer, msg),
        }
    }

    /// A response to one of our requests.
    pub fn handle_response(&mut self, now: Instant, msg: Message) {
        self.response(now, msg);
        self.arm_media_tick(now);
    }

    fn response(&mut self, now: Instant, msg: Message) {
        let Some(status) = msg.status() else { return };
        let key = tx_key(
            msg.top_via().branch().map_or(&b""[..], |b| b),
            msg.cseq.method.as_bytes(),
        );
        let Some(&tid) = self.tx_index.get(&key) else {
            self.counters.stray_responses.bump();
            return;
        };
        let Some(tx) = self.txs.get_mut(&tid) else {
            return;
        };
        let mut events = Vec::new();
        match &mut tx.machine {
            Machine::Invite(m, parts) => {
                let local = &self.cfg.local;
                let ua = &self.cfg.user_agent;
                m.handle_response(now, status, || {
                    let mut d = parts.dialog.clone();
                    if let Some(to) = msg.header_values(HeaderName::To).next() {
                        d.remote_party = text(to);
                    }
                    d.request(
                        local,
                        &Req {
                            method: "ACK",
                            branch: &parts.branch,
                            cseq: parts.cseq,
                            max_forwards: 70,
                            user_agent: ua,
                            ..Default::default()
                        },
                    )
                });
            }
            Machine::NonInvite(m) => m.handle_response(now, status),
        }
        self.drain_tx(tid, &mut events);
        for ev in events {
            if let TuEvent::Response { .. } = ev {
                self.on_response(now, tid, &msg);
            }
        }
        self.reap_tx(tid);
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Instant, key: TimerKey) {
        self.timer(now, key);
        // A timer may have started a prompt (an IVR retry, a hosted
        // caller's goodbye): its frames need the media clock.
        self.arm_media_tick(now);
    }

    fn timer(&mut self, now: Instant, key: TimerKey) {
        match key {
            TimerKey::Tx(tid) => {
                let Some(tx) = self.txs.get_mut(&tid) else {
                    return;
                };
                tx.scheduled = None;
                match &mut tx.machine {
                    Machine::Invite(m, _) => m.handle_timeout(now),
                    Machine::NonInvite(m) => m.handle_timeout(now),
                }
                let mut events = Vec::new();
                self.drain_tx(tid, &mut events);
                for ev in events {
                    if matches!(ev, TuEvent::Timeout | TuEvent::TransportError) {
                        self.on_tx_timeout(now, tid);
                    }
                }
                self.reap_tx(tid);
            }
            TimerKey::AckWait(id, leg) => {
                let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg)) else {
                    return;
                };
                l.ack_scheduled = None;
                if let Some(w) = l.ack_wait.as_mut() {
                    w.handle_timeout(now);
                }
                if self.drain_ack_wait(id, leg) {
                    // §13.3.1.4: no ACK — the leg is gone; end the call.
                    self.end_call(now, id, EndCause::LegLost, Side::System, None);
                }
            }
            TimerKey::NoAnswer(id) => {
                if self.calls.get(&id).is_some_and(|c| c.phase == Phase::Setup) {
                    self.end_call(now, id, EndCause::NoAnswer, Side::System, Some(480));
                }
            }
            TimerKey::Session(id, leg) => self.on_session_timer(now, id, leg),
            TimerKey::CancelGiveUp(tid) => {
                if self.txs.get(&tid).is_some_and(|t| t.open())
                    && let Some(tx) = self.txs.remove(&tid)
                {
                    self.tx_index.remove(&tx.key);
                    self.counters.transactions_timed_out.bump();
                }
            }
            TimerKey::MediaSweep => {
                self.media.sweep(now);
                self.media_events(now);
                self.sweep_armed = self.media.open_legs() > 0;
                if self.sweep_armed {
                    self.out.push_back(CallOutput::Timer {
                        at: now + crate::media::engine::SWEEP,
                        key: TimerKey::MediaSweep,
                    });
                }
            }
            TimerKey::MediaTick => {
                self.media.tick(now);
                // A clip that ended (PlayDone) moves its IVR or queue on now.
                self.media_events(now);
                self.tick_armed = self.media.wants_tick();
                if self.tick_armed {
                    self.out.push_back(CallOutput::Timer {
                        at: now + crate::media::engine::TICK,
                        key: TimerKey::MediaTick,
                    });
                }
            }
            TimerKey::Hosted(id) => self.hosted_timer(now, id),
            TimerKey::MaxDuration(id) => {
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.phase == Phase::Answered)
                {
                    self.end_call(now, id, EndCause::MaxDuration, Side::System, None);
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Call logic
    // ------------------------------------------------------------------

    /// Starts a B leg to `target` (a registered contact URI) at `peer`.
    #[allow(clippy::too_many_arguments)]
    fn fork(
        &mut self,
        now: Instant,
        id: u64,
        call: &mut Call,
        a_invite: &Message,
        (ct, body): (Option<String>, Bytes),
        callee: &str,
        target: &str,
        peer: Peer,
        max_forwards: u8,
    ) {
        let display = text(&a_invite.from.display);
        let user = text(&a_invite.from.uri.user);
        let domain = &self.cfg.domain;
        let from_uri = if user.is_empty() {
            format!("<sip:anonymous@{domain}>")
        } else {
            format!("<sip:{user}@{domain}>")
        };
        let local_party = if display.is_empty() {
            from_uri
        } else {
            format!("{display} {from_uri}")
        };
        let dialog = Dialog {
            call_id: self.ids.call_id(domain),
            local_tag: self.ids.tag(),
            local_party,
            remote_party: format!("<sip:{callee}@{domain}>"),
            remote_tag: None,
            local_seq: 0,
            remote_seq: None,
            remote_target: dialog::request_target(target),
            route_set: Vec::new(),
            peer,
        };
        let carried = self.b_invite_headers(call, a_invite);
        let headers: Vec<(&str, &str)> = carried.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let media = call.media.get(1).copied();
        self.invite_b_leg(
            now,
            id,
            call,
            dialog,
            (max_forwards, &headers),
            (ct, body),
            media,
            callee.to_string(),
        );
    }

    /// Sends a callee INVITE in `dialog` (`local_seq` one below the CSeq
    /// to use) and adds its leg to `call`; returns the leg's index.
    #[allow(clippy::too_many_arguments)]
    fn invite_b_leg(
        &mut self,
        now: Instant,
        id: u64,
        call: &mut Call,
        dialog: Dialog,
        (max_forwards, headers): (u8, &[(&str, &str)]),
        (ct, body): (Option<String>, Bytes),
        media: Option<MediaLeg>,
        user: String,
    ) -> u16 {
        let idx = call.b.len() as u16;
        let tid = self.send_invite(
            now,
            dialog.clone(),
            Purpose::BInvite { call: id, leg: idx },
            max_forwards,
            headers,
            ct.as_deref(),
            &body,
        );
        self.dialogs
            .insert(dialog.local_tag.clone(), (id, LegId::B(idx)));
        let mut leg = Leg::new(dialog);
        leg.invite_busy = true;
        leg.dialog.local_seq += 1;
        leg.last_sdp = ct.map(|ct| (ct, body));
        leg.media = media;
        call.b.push(BLeg::new(leg, tid, user));
        idx
    }

    /// The headers of an INVITE to a callee of `call`: those carried from
    /// the caller's INVITE, the call's data, our session timer terms, and
    /// `Call-Info: answer-after=0` once `call.answer` asked for it.
    fn b_invite_headers(&self, call: &Call, a_invite: &Message) -> Vec<(&'static str, String)> {
        let mut carried = carried(a_invite);
        if let Some(data) = call
            .hosted
            .as_ref()
            .map(|h| record::data_text(&h.data))
            .filter(|d| !d.is_empty())
        {
            carried.push(("X-Switchboard-Data", data));
        }
        carried.push(("Session-Expires", self.cfg.session_expires.to_string()));
        carried.push(("Min-SE", self.cfg.min_se.to_string()));
        if call.auto_answer {
            carried.retain(|(n, _)| !n.eq_ignore_ascii_case("Call-Info"));
            carried.push((
                "Call-Info",
                format!("<sip:{}>;answer-after=0", self.cfg.domain),
            ));
        }
        carried
    }

    /// Sends an INVITE in `dialog` (whose `local_seq` is the CSeq to use
    /// minus one) as a new client transaction.
    #[allow(clippy::too_many_arguments)]
    fn send_invite(
        &mut self,
        now: Instant,
        mut dialog: Dialog,
        purpose: Purpose,
        max_forwards: u8,
        carried: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> u64 {
        let cseq = dialog.next_seq();
        let branch = self.ids.branch();
        let headers: Vec<(&str, &str)> = carried
            .iter()
            .copied()
            .chain([("Allow", ALLOW), ("Supported", SUPPORTED)])
            .collect();
        let data = dialog.request(
            &self.cfg.local,
            &Req {
                method: "INVITE",
                branch: &branch,
                cseq,
                max_forwards,
                contact: true,
                headers: &headers,
                content_type: if body.is_empty() { None } else { content_type },
                body,
                user_agent: &self.cfg.user_agent,
            },
        );
        let peer = dialog.peer;
        let parts = InviteParts {
            dialog,
            branch: branch.clone(),
            cseq,
        };
        let machine = Machine::Invite(
            ClientInvite::new(now, self.cfg.timers, peer.reliable(), data),
            Box::new(parts),
        );
        self.start_tx(machine, peer, &branch, b"INVITE", purpose)
    }

    /// Sends a non-INVITE request (already built with `branch`).
    fn send_request(
        &mut self,
        now: Instant,
        peer: Peer,
        method: Method,
        branch: &str,
        data: Bytes,
        purpose: Purpose,
    ) -> u64 {
        let machine = Machine::NonInvite(ClientNonInvite::new(
            now,
            self.cfg.timers,
            peer.reliable(),
            data,
        ));
        self.start_tx(machine, peer, branch, method.as_bytes(), purpose)
    }

    fn start_tx(
        &mut self,
        machine: Machine,
        peer: Peer,
        branch: &str,
        method: &[u8],
        purpose: Purpose,
    ) -> u64 {
        let tid = self.next_tx;
        self.next_tx += 1;
        let key = tx_key(branch.as_bytes(), method);
        self.counters.requests_out
            [Method::from_token(&Bytes::copy_from_slice(method)).counter_index()]
        .bump();
        self.counters.transactions_created.bump();
        self.tx_index.insert(key.clone(), tid);
        self.txs.insert(
            tid,
            Box::new(ClientTx {
                machine,
                peer,
                key,
                scheduled: None,
                purpose,
                cancelled: false,
            }),
        );
        let mut events = Vec::new();
        self.drain_tx(tid, &mut events);
        tid
    }

    /// Sends an in-dialog request on `leg` of call `id`.
    #[allow(clippy::too_many_arguments)]
    fn send_in_dialog(
        &mut self,
        now: Instant,
        id: u64,
        leg: LegId,
        method: Method,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
        purpose: Purpose,
    ) -> Option<u64> {
        let branch = self.ids.branch();
        let call = self.calls.get_mut(&id)?;
        let l = call.leg_mut(leg)?;
        if method == Method::Invite {
            let d = l.dialog.clone();
            l.invite_busy = true;
            l.dialog.local_seq = l.dialog.local_seq.wrapping_add(1);
            return Some(self.send_invite(now, d, purpose, 70, headers, content_type, body));
        }
        let cseq = l.dialog.next_seq();
        let contact = matches!(method, Method::Update | Method::Notify | Method::Refer);
        let data = l.dialog.request(
            &self.cfg.local,
            &Req {
                method: &text(method.as_bytes()),
                branch: &branch,
                cseq,
                max_forwards: 70,
                contact,
                headers,
                content_type,
                body,
                user_agent: &self.cfg.user_agent,
            },
        );
        let peer = l.dialog.peer;
        Some(self.send_request(now, peer, method, &branch, data, purpose))
    }

    fn on_response(&mut self, now: Instant, tid: u64, msg: &Message) {
        let Some(tx) = self.txs.get(&tid) else { return };
        let Some(status) = msg.status() else { return };
        match &tx.purpose {
            Purpose::BInvite { call, leg } => {
                let (call, leg) = (*call, *leg);
                if self.calls.contains_key(&call) {
                    self.on_b_invite_response(now, call, leg, tid, msg, status);
                } else if (200..300).contains(&status) {
                    self.ack_and_bye(now, tid, msg);
                } else if status < 200 {
                    // The call ended before this phone rang: stop it now.
                    self.send_cancel(now, tid);
                }
            }
            Purpose::Callback { call } => {
                let call = *call;
                self.callback_response(now, call, tid, msg, status);
            }
            _ if status < 200 => {}
            Purpose::Relay { .. } => {
                if let Some((call, from, stx, req)) = self.take_relay(tid) {
                    self.on_relay_final(now, call, from, stx, &req, msg, status);
                }
            }
            Purpose::TransferReinvite { call, target } => {
                let (call, target) = (*call, *target);
                self.on_transfer_reinvite(now, call, target, msg, status);
                self.done(tid);
            }
            Purpose::Refresh { call, leg } => {
                let (call, leg) = (*call, *leg);
                self.on_refresh_final(now, call, leg, tid, msg);
                self.done(tid);
            }
            Purpose::Fire => {
                if (200..300).contains(&status) {
                    self.reack(tid, msg);
                }
            }
        }
    }

    /// The final answer of a client transaction has been handled: later
    /// 2xx retransmissions only get an ACK again.
    fn done(&mut self, tid: u64) {
        if let Some(tx) = self.txs.get_mut(&tid) {
            tx.purpose = Purpose::Fire;
        }
    }

    /// Takes a relay's origin out of its transaction (once).
    fn take_relay(&mut self, tid: u64) -> Option<(u64, LegId, u64, Box<Message>)> {
        let tx = self.txs.get_mut(&tid)?;
        match std::mem::replace(&mut tx.purpose, Purpose::Fire) {
            Purpose::Relay {
                call,
                from,
                stx,
                req,
            } => Some((call, from, stx, req)),
            other => {
                tx.purpose = other;
                None
            }
        }
    }

    /// A retransmitted 2xx to an INVITE whose answer was handled: its ACK
    /// was lost, send one again (§13.2.2.4).
    fn reack(&mut self, tid: u64, msg: &Message) {
        let Some(tx) = self.txs.get(&tid) else { return };
        let Machine::Invite(_, parts) = &tx.machine else {
            return;
        };
        let mut d = parts.dialog.clone();
        d.learn_from_response(msg);
        let ack = build_ack(&self.cfg, &mut self.ids, &d, parts.cseq, b"", None);
        self.out.push_back(CallOutput::Transmit {
            peer: d.peer,
            data: ack,
        });
    }

    fn on_tx_timeout(&mut self, now: Instant, tid: u64) {
        let Some(tx) = self.txs.get(&tid) else { return };
        match &tx.purpose {
            Purpose::BInvite { call, leg } => {
                let (call, leg) = (*call, *leg);
                self.b_failed(now, call, leg, 408, None);
            }
            Purpose::Relay { .. } => {
                let Some((call, from, stx, req)) = self.take_relay(tid) else {
                    return;
                };
                if let Some(l) = self.calls.get(&call).and_then(|c| c.leg(from)) {
                    let peer = l.dialog.peer;
                    self.reply(stx, &req, peer, Reply::new(408));
                }
                // RFC 5057: a timed-out in-dialog request means the peer is gone.
                self.end_call(now, call, EndCause::LegLost, Side::System, None);
            }
            Purpose::TransferReinvite { call, target } => {
                let (call, target) = (*call, *target);
                self.transfer_failed(now, call, target, 408);
            }
            Purpose::Refresh { call, .. } => {
                let call = *call;
                self.end_call(now, call, EndCause::LegLost, Side::System, None);
            }
            Purpose::Callback { call } => {
                let call = *call;
                self.callback_failed(now, call, 408);
            }
            Purpose::Fire => {}
        }
    }

    fn on_b_invite_response(
        &mut self,
        now: Instant,
        id: u64,
        leg: u16,
        tid: u64,
        msg: &Message,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(b) = call.b.get_mut(usize::from(leg)) else {
            return;
        };
        let transfer = b.transfer;
        if b.consult {
            self.consult_response(now, id, leg, msg, status);
            return;
        }
        if status < 200 {
            if b.state == BState::Trying {
                b.state = BState::Early;
            }
            if status == 100 {
                // Provisional enough to CANCEL (§9.1), nothing to relay.
                if b.cancel_wanted {
                    b.cancel_wanted = false;
                    self.send_cancel(now, tid);
                }
                return;
            }
            // RFC 3262: a reliable provisional response gets a PRACK (once
            // per RSeq; a retransmission is answered by our PRACK's own
            // retransmission).
            let reliable = msg
                .require
                .iter()
                .any(|t| t.eq_ignore_ascii_case(b"100rel"));
            let rseq = msg
                .other_header("RSeq")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok());
            let fresh_rseq = rseq.filter(|r| b.rseq.is_none_or(|last| *r > last));
            if reliable && let Some(rseq) = fresh_rseq {
                b.rseq = Some(rseq);
                b.leg.dialog.learn_from_response(msg);
                let invite_seq = b.leg.dialog.local_seq;
                let cseq = b.leg.dialog.next_seq();
                let branch = self.ids.branch();
                let rack = format!("{rseq} {invite_seq} INVITE");
                let data = b.leg.dialog.request(
                    &self.cfg.local,
                    &Req {
                        method: "PRACK",
                        branch: &branch,
                        cseq,
                        max_forwards: 70,
                        headers: &[("RAck", &rack)],
                        user_agent: &self.cfg.user_agent,
                        ..Default::default()
                    },
                );
                let peer = b.leg.dialog.peer;
                self.send_request(now, peer, Method::Prack, &branch, data, Purpose::Fire);
            } else if reliable && rseq.is_some() {
                return; // a retransmission, already relayed
            }
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let Some(b) = call.b.get_mut(usize::from(leg)) else {
                return;
            };
            if b.cancel_wanted {
                b.cancel_wanted = false;
                self.send_cancel(now, tid);
                return;
            }
            if transfer {
                self.transfer_progress(now, id, status);
                return;
            }
            if call.phase == Phase::Setup
                && b.state == BState::Early
                && let Some((stx, invite)) = call.a_invite.take()
            {
                let tag = call.a.dialog.local_tag.clone();
                let peer = call.a.dialog.peer;
                let reason = reason_of(msg);
                let kind = if call.a_offer {
                    Sdp::Answer
                } else {
                    Sdp::Offer
                };
                let (ct, body) = translate(
                    &mut self.media,
                    now,
                    b.leg.media,
                    call.a.media,
                    kind,
                    body_of(msg),
                );
                let contact = self.cfg.local.contact(peer.link);
                let mut headers = vec![("Contact", contact.as_str()), ("Allow", ALLOW)];
                if let Some(ct) = ct.as_deref() {
                    headers.push(("Content-Type", ct));
                }
                self.reply(
                    stx,
                    &invite,
                    peer,
                    Reply::new(status)
                        .reason(reason.as_deref())
                        .tag(Some(&tag))
                        .headers(&headers)
                        .body(&body)
                        .record_route(),
                );
                if let Some(c) = self.calls.get_mut(&id) {
                    c.a_invite = Some((stx, invite));
                }
            }
            if (status == 180 || status == 183)
                && let Some(c) = self.calls.get_mut(&id)
                && c.phase == Phase::Setup
                && !c.rang
            {
                c.rang = true;
                self.emit(now, id, crate::cti::event::CallEventKind::Ringing);
            }
            return;
        }
        if status < 300 {
            if b.state == BState::Answered {
                // A retransmitted 2xx: our ACK was lost.
                if let Some(ack) = b.leg.last_ack.clone() {
                    let peer = b.leg.dialog.peer;
                    self.out.push_back(CallOutput::Transmit { peer, data: ack });
                }
                return;
            }
            let wanted = b.state != BState::Done && !b.cancel_wanted;
            if transfer && wanted {
                self.transfer_answered(now, id, leg, msg);
                return;
            }
            if !wanted || call.phase != Phase::Setup {
                b.state = BState::Done;
                b.status = Some(status);
                self.ack_and_bye(now, tid, msg);
                return;
            }
            // The winner.
            b.state = BState::Answered;
            b.status = Some(status);
            b.leg.dialog.learn_from_response(msg);
            b.leg.allows_update = allows_update(msg);
            // RFC 4028 §7.2: no Session-Expires in the 2xx, no timer.
            b.leg.session = session_expires(msg).map(|(n, r)| SessionTimer {
                interval: n,
                we_refresh: r != Some(Refresher::Uas),
                due: None,
            });
            b.leg.invite_busy = false;
            let cseq = b.leg.dialog.local_seq;
            if call.a_offer {
                let ack = build_ack(&self.cfg, &mut self.ids, &b.leg.dialog, cseq, b"", None);
                b.leg.last_ack = Some(ack.clone());
                let peer = b.leg.dialog.peer;
                self.counters.requests_out[Method::Ack.counter_index()].bump();
                self.out.push_back(CallOutput::Transmit { peer, data: ack });
            } else {
                b.leg.ack_deferred = Some((cseq, msg.body.clone()));
            }
            call.phase = Phase::Answered;
            call.peer = leg;
            let hosted = call.hosted.is_some();
            if !hosted {
                call.answered = Some(now);
                self.counters.calls_answered.bump();
            }
            // Cancel the other forks.
            let others: Vec<u16> = call
                .b
                .iter()
                .enumerate()
                .filter(|(i, o)| *i != usize::from(leg) && o.state != BState::Done)
                .map(|(i, _)| i as u16)
                .collect();
            for o in others {
                self.cancel_b(now, id, o);
            }
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let b_media = call.b.get(usize::from(leg)).and_then(|b| b.leg.media);
            if let (Some(a), Some(b)) = (call.a.media, b_media) {
                self.media.arm(now, a);
                self.media.arm(now, b);
                if self.cfg.recording.records(&call.dialled) {
                    call.recording = self
                        .media
                        .start_recording(now, &call.a.dialog.call_id, a, b);
                }
            }
            if let Some((stx, invite)) = call.a_invite.take() {
                self.invites.remove(&stx);
                let tag = call.a.dialog.local_tag.clone();
                let peer = call.a.dialog.peer;
                let kind = if call.a_offer {
                    Sdp::Answer
                } else {
                    Sdp::Offer
                };
                let (ct, body) = translate(
                    &mut self.media,
                    now,
                    b_media,
                    call.a.media,
                    kind,
                    body_of(msg),
                );
                let contact = self.cfg.local.contact(peer.link);
                let mut headers = vec![
                    ("Contact", contact.as_str()),
                    ("Allow", ALLOW),
                    ("Supported", SUPPORTED),
                ];
                let se = call.a_session.map(|(n, r)| {
                    call.a.session = Some(SessionTimer {
                        interval: n,
                        we_refresh: r == Refresher::Uas,
                        due: None,
                    });
                    se_value(n, r)
                });
                if let Some(v) = se.as_deref() {
                    headers.push(("Session-Expires", v));
                    if call.a_session.is_some_and(|(_, r)| r == Refresher::Uac) {
                        headers.push(("Require", "timer"));
                    }
                }
                if let Some(ct) = ct.as_deref() {
                    headers.push(("Content-Type", ct));
                    call.a.last_sdp = Some((ct.to_string(), body.clone()));
                }
                let data = self.reply(
                    stx,
                    &invite,
                    peer,
                    Reply::new(status)
                        .reason(reason_of(msg).as_deref())
                        .tag(Some(&tag))
                        .headers(&headers)
                        .body(&body)
                        .record_route(),
                );
                self.start_ack_wait(now, id, LegId::A, data);
            }
            if hosted {
                self.hosted_answered(now, id, leg, &msg.body);
            }
            self.emit(now, id, crate::cti::event::CallEventKind::Established);
            self.arm_session(now, id, LegId::A);
            self.arm_session(now, id, LegId::B(leg));
            self.out.push_back(CallOutput::Timer {
                at: now + self.cfg.max_duration,
                key: TimerKey::MaxDuration(id),
            });
            return;
        }
        // 3xx-6xx.
        if b.reoffer {
            // Cancelled by call.answer: ring again first, so the offer
            // still has a leg when this one's end is counted.
            b.reoffer = false;
            self.reoffer(now, id, leg);
            let Some(b) = self
                .calls
                .get_mut(&id)
                .and_then(|c| c.b.get_mut(usize::from(leg)))
            else {
                return;
            };
            b.state = BState::Done;
            b.status = Some(status);
            b.leg.invite_busy = false;
            self.b_failed(now, id, leg, status, reason_of(msg));
            return;
        }
        let was_transfer = transfer;
        b.state = BState::Done;
        b.status = Some(status);
        b.leg.invite_busy = false;
        if was_transfer {
            self.transfer_failed(now, id, leg, status);
        } else {
            self.b_failed(now, id, leg, status, reason_of(msg));
        }
    }

    /// A B leg failed finally with `status`; when it was the last hope,
    /// the caller hears the best failure.
    fn b_failed(&mut self, now: Instant, id: u64, leg: u16, status: u16, reason: Option<String>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(b) = call.b.get_mut(usize::from(leg)) {
            if b.transfer {
                self.transfer_failed(now, id, leg, status);
                return;
            }
            if call.hosted.is_some() {
                self.hosted_leg_failed(now, id, leg, status);
                return;
            }
            b.state = BState::Done;
            b.status.get_or_insert(status);
        }
        if call.phase != Phase::Setup {
            return;
        }
        if status != 487 && call.best.as_ref().is_none_or(|(s, _)| better(status, *s)) {
            call.best = Some((status, reason.unwrap_or_default()));
        }
        if call.b.iter().any(|b| b.state != BState::Done) {
            return;
        }
        let (status, _) = call.best.clone().unwrap_or((480, String::new()));
        let mapped = map_failure(status);
        self.end_call(
            now,
            id,
            EndCause::Failed(mapped),
            Side::Callee,
            Some(mapped),
        );
    }

    /// Stops ringing B leg `leg` (CANCEL now, or once it has rung).
    fn cancel_b(&mut self, now: Instant, id: u64, leg: u16) {
        let Some(b) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.b.get_mut(usize::from(leg)))
        else {
            return;
        };
        match b.state {
            BState::Trying => b.cancel_wanted = true,
            BState::Early => {
                b.state = BState::Done;
                let tid = b.tx;
                self.send_cancel(now, tid);
            }
            BState::Answered | BState::Done => {}
        }
        if let Some(b) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.b.get_mut(usize::from(leg)))
            && b.state == BState::Trying
        {
            b.state = BState::Done;
            b.cancel_wanted = true;
        }
    }

    /// CANCEL for the INVITE of client transaction `tid` (§9.1).
    fn send_cancel(&mut self, now: Instant, tid: u64) {
        let Some(tx) = self.txs.get_mut(&tid) else {
            return;
        };
        let Machine::Invite(m, parts) = &tx.machine else {
            return;
        };
        if tx.cancelled || !matches!(m.state(), ClientInviteState::Proceeding) {
            return;
        }
        tx.cancelled = true;
        // §9.1: without a final response 64·T1 after the CANCEL, the INVITE
        // transaction is destroyed.
        self.out.push_back(CallOutput::Timer {
            at: now + self.cfg.timers.timeout(),
            key: TimerKey::CancelGiveUp(tid),
        });
        let data = parts.dialog.request(
            &self.cfg.local,
            &Req {
                method: "CANCEL",
                branch: &parts.branch,
                cseq: parts.cseq,
                max_forwards: 70,
                user_agent: &self.cfg.user_agent,
                ..Default::default()
            },
        );
        let (peer, branch) = (tx.peer, parts.branch.clone());
        self.send_request(now, peer, Method::Cancel, &branch, data, Purpose::Fire);
    }

    /// An unwanted 2xx (a fork that lost, a call already gone): ACK it and
    /// hang up at once (§13.2.2.4 for the forked case).
    fn ack_and_bye(&mut self, now: Instant, tid: u64, msg: &Message) {
        let Some(tx) = self.txs.get(&tid) else { return };
        let Machine::Invite(_, parts) = &tx.machine else {
            return;
        };
        let mut d = parts.dialog.clone();
        d.learn_from_response(msg);
        let ack = build_ack(&self.cfg, &mut self.ids, &d, parts.cseq, b"", None);
        let peer = d.peer;
        self.out.push_back(CallOutput::Transmit { peer, data: ack });
        let branch = self.ids.branch();
        let data = d.request(
            &self.cfg.local,
            &Req {
                method: "BYE",
                branch: &branch,
                cseq: parts.cseq.wrapping_add(1),
                max_forwards: 70,
                user_agent: &self.cfg.user_agent,
                ..Default::default()
            },
        );
        self.send_request(now, peer, Method::Bye, &branch, data, Purpose::Fire);
        self.done(tid);
    }

    /// A B leg that is no longer part of the call (a fork that lost, a
    /// transferred party) hung up.
    fn retire_b(&mut self, id: u64, leg: u16) {
        if let Some(b) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.b.get_mut(usize::from(leg)))
        {
            b.state = BState::Done;
            let tag = b.leg.dialog.local_tag.clone();
            self.dialogs.remove(&tag);
        }
    }

    /// Ends a call: the caller gets `final_status` if it was not answered
    /// finally yet; answered legs get a BYE (except `by`'s, which hung up);
    /// ringing legs a CANCEL. Emits the record.
    fn end_call(
        &mut self,
        now: Instant,
        id: u64,
        cause: EndCause,
        by: Side,
        final_status: Option<u16>,
    ) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        // Told as the call stands (its agent, queue and data).
        let cleared = self.call_event(
            now,
            id,
            &call,
            crate::cti::event::CallEventKind::Cleared {
                cause: cause.to_string(),
            },
        );
        let consult_cleared = self.consult_event(
            now,
            id,
            &call,
            crate::cti::event::CallEventKind::Cleared {
                cause: cause.to_string(),
            },
        );
        let mut hosted = call.hosted.take();
        if let Some(h) = hosted.as_mut() {
            self.hosted_ended(id, h);
        }
        // Caller not answered finally yet.
        if let Some((stx, invite)) = call.a_invite.take() {
            self.invites.remove(&stx);
            let status = final_status.unwrap_or(match cause {
                EndCause::Shutdown => 503,
                _ => 480,
            });
            let reason = match cause {
                EndCause::NoAnswer => Some("Temporarily Unavailable (no answer)"),
                EndCause::Shutdown => Some("Service Unavailable (shutting down)"),
                _ => None,
            };
            let tag = call.a.dialog.local_tag.clone();
            let peer = call.a.dialog.peer;
            self.reply(
                stx,
                &invite,
                peer,
                Reply::new(status).reason(reason).tag(Some(&tag)),
            );
        }
        // §15.1.2: requests still pending in the ended dialogs get 487.
        for tid in std::mem::take(&mut call.relays) {
            let Some(tx) = self.txs.get_mut(&tid) else {
                continue;
            };
            if let Purpose::Relay { from, stx, req, .. } =
                std::mem::replace(&mut tx.purpose, Purpose::Fire)
                && let Some(l) = call.leg(from)
            {
                let peer = l.dialog.peer;
                self.reply(stx, &req, peer, Reply::new(487));
            }
        }
        let answered = call.phase == Phase::Answered;
        // The caller's leg (a hosted caller was answered here).
        if (answered || hosted.is_some()) && by != Side::Caller {
            self.bye(now, &mut call.a);
        }
        for i in 0..call.b.len() {
            let is_peer = answered && i == usize::from(call.peer);
            let b = &mut call.b[i];
            match b.state {
                BState::Answered if is_peer && by == Side::Callee => {}
                BState::Answered => self.bye(now, &mut call.b[i].leg),
                // Not rung yet: its first provisional response finds the
                // call gone and gets the CANCEL then (`on_response`).
                BState::Trying => {
                    b.status.get_or_insert(487);
                }
                BState::Early => {
                    b.status.get_or_insert(487);
                    let tid = b.tx;
                    self.send_cancel(now, tid);
                }
                BState::Done => {}
            }
        }
        self.dialogs.remove(&call.a.dialog.local_tag);
        for b in &call.b {
            self.dialogs.remove(&b.leg.dialog.local_tag);
        }
        if answered || hosted.is_some() {
            self.counters.calls_completed.bump();
        } else {
            self.counters.calls_unanswered.bump();
        }
        self.counters.calls_active.set(self.calls.len() as u64);
        let caller_media = call.a.media.and_then(|m| self.media.stats(m));
        let callee_media: Vec<_> = call
            .b
            .iter()
            .map(|b| {
                b.leg
                    .media
                    .filter(|_| b.status.is_some_and(|s| (200..300).contains(&s)))
                    .and_then(|m| self.media.stats(m))
            })
            .collect();
        if let Some(r) = call.recording {
            self.media.stop_recording(now, r);
        }
        for m in call.media.drain(..) {
            self.media.close_leg(m);
        }
        if let Some(e) = consult_cleared {
            self.push_event(e);
        }
        self.push_event(cleared);
        let times = hosted.as_ref().map_or((None, None, None), |h| h.times());
        let record = CallRecord {
            id: self.cti_id(&call),
            call_id: call.a.dialog.call_id.clone(),
            caller: LegRecord {
                call_id: call.a.dialog.call_id.clone(),
                user: call.caller_user.clone(),
                peer: call.a.dialog.peer.addr,
                status: None,
                media: caller_media,
            },
            callees: call
                .b
                .iter()
                .zip(callee_media)
                .map(|(b, media)| LegRecord {
                    call_id: b.leg.dialog.call_id.clone(),
                    user: b.user.clone(),
                    peer: b.leg.dialog.peer.addr,
                    status: b.status,
                    media,
                })
                .collect(),
            dialled: call.dialled.clone(),
            started: call.started,
            answered: call.answered,
            ended: now,
            cause,
            hung_up_by: by,
            transfers: call.transfers,
            digits: std::mem::take(&mut call.digits),
            callee_digits: std::mem::take(&mut call.callee_digits),
            recording: call.recording,
            path: hosted.as_ref().map(|h| h.path.clone()).unwrap_or_default(),
            data: hosted
                .map(|h| h.data)
                .unwrap_or_default()
                .into_iter()
                .chain(std::mem::take(&mut call.data))
                .collect(),
            held_ms: (call.held_total
                + call
                    .held_since
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)))
            .as_millis() as u64,
            queued: times.0,
            offered: times.1,
            connected: times.2,
        };
        self.out.push_back(CallOutput::Record(Box::new(record)));
    }

    /// BYE on a confirmed leg.
    fn bye(&mut self, now: Instant, leg: &mut Leg) {
        leg.ack_wait = None;
        // §13.2.2.4: its 2xx still gets its ACK, with an answer that
        // rejects every stream (the real answer never came).
        if let Some((cseq, offer)) = leg.ack_deferred.take() {
            let answer = reject_all(&offer);
            let ct = (!answer.is_empty()).then_some("application/sdp");
            let ack = build_ack(&self.cfg, &mut self.ids, &leg.dialog, cseq, &answer, ct);
            self.out.push_back(CallOutput::Transmit {
                peer: leg.dialog.peer,
                data: ack,
            });
        }
        let branch = self.ids.branch();
        let cseq = leg.dialog.next_seq();
        let data = leg.dialog.request(
            &self.cfg.local,
            &Req {
                method: "BYE",
                branch: &branch,
                cseq,
                max_forwards: 70,
                user_agent: &self.cfg.user_agent,
                ..Default::default()
            },
        );
        let peer = leg.dialog.peer;
        self.send_request(now, peer, Method::Bye, &branch, data, Purpose::Fire);
    }

    /// Relays an in-dialog request from `from` to the connected leg.
    fn relay(&mut self, now: Instant, id: u64, from: LegId, stx: u64, peer: Peer, msg: Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(to) = call.other(from) else {
            // Early dialog, or a leg no longer connected.
            let status = if call.phase == Phase::Setup && *msg.method() == Method::Update {
                // UPDATE in the early dialog: not relayed yet.
                491
            } else {
                481
            };
            self.reply(stx, &msg, peer, Reply::new(status));
            return;
        };
        let is_invite = *msg.method() == Method::Invite;
        if is_invite {
            let busy = call.leg(from).is_some_and(|l| l.invite_busy)
                || call.leg(to).is_some_and(|l| l.invite_busy)
                || call.transfer.is_some();
            if busy {
                self.reply(stx, &msg, peer, Reply::new(491));
                return;
            }
            if let Some(l) = call.leg_mut(from) {
                l.invite_busy = true;
            }
        }
        if matches!(msg.method(), Method::Invite | Method::Update)
            && let Some(l) = call.leg_mut(from)
        {
            l.dialog.refresh_target(&msg);
        }
        let mut carried = carried(&msg);
        // Our session timer on the far leg rides on the relayed request.
        if matches!(msg.method(), Method::Invite | Method::Update)
            && let Some(st) = call.leg(to).and_then(|l| l.session)
        {
            let r = if st.we_refresh {
                Refresher::Uac
            } else {
                Refresher::Uas
            };
            carried.push(("Session-Expires", se_value(st.interval, r)));
        }
        let (from_media, to_media) = (
            call.leg(from).and_then(|l| l.media),
            call.leg(to).and_then(|l| l.media),
        );
        let (ct, body) = translate(
            &mut self.media,
            now,
            from_media,
            to_media,
            Sdp::Offer,
            body_of(&msg),
        );
        if let (Some(ct), Some(l)) = (&ct, call.leg_mut(to)) {
            l.last_sdp = Some((ct.clone(), body.clone()));
        }
        let headers: Vec<(&str, &str)> = carried.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let method = msg.method().clone();
        let purpose = Purpose::Relay {
            call: id,
            from,
            stx,
            req: Box::new(msg),
        };
        let tid = self.send_in_dialog(now, id, to, method, &headers, ct.as_deref(), &body, purpose);
        if let (Some(tid), Some(call)) = (tid, self.calls.get_mut(&id)) {
            call.relays.retain(|t| self.txs.contains_key(t));
            call.relays.push(tid);
        }
    }

    /// The far leg answered a relayed request finally: answer the origin.
    #[allow(clippy::too_many_arguments)]
    fn on_relay_final(
        &mut self,
        now: Instant,
        id: u64,
        from: LegId,
        stx: u64,
        req: &Message,
        msg: &Message,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(to) = call.other(from) else {
            return;
        };
        let is_invite = *req.method() == Method::Invite;
        let offered = !req.body.is_empty();
        if let Some(l) = call.leg_mut(to) {
            if is_invite {
                l.invite_busy = false;
            }
            if (200..300).contains(&status)
                && matches!(req.method(), Method::Invite | Method::Update)
            {
                l.dialog.refresh_target(msg);
            }
            if is_invite && (200..300).contains(&status) {
                // The 2xx carries its INVITE's CSeq number (§8.2.6.2), the ACK's.
                let cseq = msg.cseq.seq;
                if offered {
                    let d = l.dialog.clone();
                    let ack = build_ack(&self.cfg, &mut self.ids, &d, cseq, b"", None);
                    if let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(to)) {
                        l.last_ack = Some(ack.clone());
                        let peer = l.dialog.peer;
                        self.out.push_back(CallOutput::Transmit { peer, data: ack });
                    }
                } else {
                    l.ack_deferred = Some((cseq, msg.body.clone()));
                }
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let to_media = call.leg(to).and_then(|l| l.media);
        let Some(fl) = call.leg_mut(from) else { return };
        let peer = fl.dialog.peer;
        if is_invite && status >= 300 {
            fl.invite_busy = false;
        }
        let kind = if offered { Sdp::Answer } else { Sdp::Offer };
        let (ct, body) = if status < 300 {
            translate(&mut self.media, now, to_media, fl.media, kind, body_of(msg))
        } else {
            body_of(msg)
        };
        let contact = self.cfg.local.contact(peer.link);
        let refreshing =
            (200..300).contains(&status) && matches!(req.method(), Method::Invite | Method::Update);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        let mut se = None;
        if refreshing {
            headers.push(("Contact", contact.as_str()));
            // The origin's session timer, as its UAS now.
            se = fl.session.map(|st| {
                let r = if st.we_refresh {
                    Refresher::Uas
                } else {
                    Refresher::Uac
                };
                (se_value(st.interval, r), r)
            });
        }
        if let Some((v, r)) = &se {
            headers.push(("Session-Expires", v.as_str()));
            if *r == Refresher::Uac {
                headers.push(("Require", "timer"));
            }
        }
        if let Some(ct) = ct.as_deref() {
            headers.push(("Content-Type", ct));
            fl.last_sdp = Some((ct.to_string(), body.clone()));
        }
        let status_out = if status == 503 { 500 } else { status };
        let data = self.reply(
            stx,
            req,
            peer,
            Reply::new(status_out)
                .reason(reason_of(msg).as_deref())
                .headers(&headers)
                .body(&body),
        );
        if is_invite && (200..300).contains(&status) {
            self.start_ack_wait(now, id, from, data);
        }
        if refreshing {
            // A successful re-INVITE or UPDATE refreshes both sessions.
            self.arm_session(now, id, from);
            self.arm_session(now, id, to);
        }
        // RFC 5057: 481 / 408 to an in-dialog request: that dialog is gone.
        if matches!(status, 481 | 408) {
            self.end_call(now, id, EndCause::LegLost, Side::System, None);
        }
    }

    // ------------------------------------------------------------------
    // Blind transfer (RFC 3515, RFC 5589 §6)
    // ------------------------------------------------------------------

    /// A REFER from the connected callee: blind transfer of the caller
    /// (RFC 3515; RFC 5589 §6). Only the callee side may transfer: the
    /// caller leg is the one that stays.
    #[allow(clippy::too_many_arguments)]
    fn refer(
        &mut self,
        now: Instant,
        id: u64,
        referrer: LegId,
        stx: u64,
        peer: Peer,
        msg: Message,
        location: &LocationService,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let Some(moved) = call.other(referrer) else {
            self.reply(stx, &msg, peer, Reply::new(481));
            return;
        };
        if moved != LegId::A {
            self.counters.transfers_failed.bump();
            self.reply(
                stx,
                &msg,
                peer,
                Reply::new(403).reason(Some(
                    "Forbidden (only the called party can transfer the caller)",
                )),
            );
            return;
        }
        if call.transfer.is_some() {
            self.reply(stx, &msg, peer, Reply::new(491));
            return;
        }
        let target = msg
            .other_header("Refer-To")
            .or_else(|| msg.other_header("r"))
            .and_then(|v| {
                crate::sip::grammar::parse_name_addr(v, v)
                    .ok()
                    .map(|na| na.uri.user_text())
            });
        let Some(target) = target.filter(|t| !t.is_empty()) else {
            self.reply(
                stx,
                &msg,
                peer,
                Reply::new(400).reason(Some("Bad Request (Refer-To missing or not a SIP URI)")),
            );
            return;
        };
        match self.start_transfer(now, id, referrer, moved, target, true, location) {
            Err((status, reason)) => {
                self.reply(stx, &msg, peer, Reply::new(status).reason(Some(reason)));
            }
            Ok(tid) => {
                let contact_hdr = self.cfg.local.contact(peer.link);
                self.reply(
                    stx,
                    &msg,
                    peer,
                    Reply::new(202).headers(&[("Contact", contact_hdr.as_str())]),
                );
                self.notify(now, id, referrer, "SIP/2.0 100 Trying", false);
                self.send_transfer_invite(now, id, tid);
            }
        }
    }

    /// Starts moving `moved` (the caller) of call `id` to user `target`:
    /// checks the target and sets the transfer up; its INVITE goes out
    /// with [`B2bua::send_transfer_invite`]. `Err` is the status and
    /// reason refusing it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_transfer(
        &mut self,
        now: Instant,
        id: u64,
        referrer: LegId,
        moved: LegId,
        target: String,
        refer: bool,
        location: &LocationService,
    ) -> Result<u16, (u16, &'static str)> {
        let contact = location.lookup(now, &target).next().cloned();
        let known = self.cfg.users.contains(&target);
        let Some(contact) = contact.filter(|_| known) else {
            self.counters.transfers_failed.bump();
            return Err(if known {
                (
                    480,
                    "Temporarily Unavailable (transfer target not registered)",
                )
            } else {
                (404, "Not Found (transfer target unknown)")
            });
        };
        let Some(target_media) = self.open_media(now, id) else {
            self.counters.transfers_failed.bump();
            return Err((503, "Service Unavailable (no free RTP port)"));
        };
        // RFC 3725 flow I: an offerless INVITE to the target; its offer
        // goes to the caller in a re-INVITE.
        let Some(call) = self.calls.get_mut(&id) else {
            return Err((481, "Call/Transaction Does Not Exist"));
        };
        let domain = &self.cfg.domain;
        let dialog = Dialog {
            call_id: self.ids.call_id(domain),
            local_tag: self.ids.tag(),
            local_party: format!("<sip:{}@{domain}>", call.caller_user),
            remote_party: format!("<sip:{target}@{domain}>"),
            remote_tag: None,
            local_seq: 0,
            remote_seq: None,
            remote_target: dialog::request_target(&contact.uri),
            route_set: Vec::new(),
            peer: Peer {
                link: contact.link,
                addr: contact.source,
            },
        };
        let idx = call.b.len() as u16;
        call.transfer = Some(Transfer {
            referrer,
            moved,
            target: idx,
            pending_offer: None,
            refer,
        });
        let mut leg = Leg::new(dialog.clone());
        leg.invite_busy = true;
        leg.dialog.local_seq = 1;
        leg.media = Some(target_media);
        call.media.push(target_media);
        call.b.push(BLeg {
            transfer: true,
            ..BLeg::new(leg, u64::MAX, target)
        });
        self.dialogs
            .insert(dialog.local_tag.clone(), (id, LegId::B(idx)));
        Ok(idx)
    }

    /// The offerless INVITE to transfer target `idx` of call `id`.
    pub(super) fn send_transfer_invite(&mut self, now: Instant, id: u64, idx: u16) {
        let Some(dialog) = self
            .calls
            .get(&id)
            .and_then(|c| c.b.get(usize::from(idx)))
            .map(|b| {
                let mut d = b.leg.dialog.clone();
                d.local_seq = 0;
                d
            })
        else {
            return;
        };
        let tid = self.send_invite(
            now,
            dialog,
            Purpose::BInvite { call: id, leg: idx },
            70,
            &[],
            None,
            b"",
        );
        if let Some(b) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.b.get_mut(usize::from(idx)))
        {
            b.tx = tid;
        }
    }

    /// Sends the REFER's implicit subscription a NOTIFY (RFC 3515 §2.4.5),
    /// unless the referrer has left.
    fn notify(&mut self, now: Instant, id: u64, leg: LegId, frag: &str, last: bool) {
        let gone = match (self.calls.get(&id), leg) {
            (Some(c), LegId::B(i)) => {
                c.b.get(usize::from(i))
                    .is_none_or(|b| b.state == BState::Done)
            }
            (Some(_), LegId::A) => false,
            (None, _) => true,
        };
        if gone {
            return;
        }
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let body = format!("{frag}\r\n");
        self.send_in_dialog(
            now,
            id,
            leg,
            Method::Notify,
            &[("Event", "refer"), ("Subscription-State", state)],
            Some("message/sipfrag;version=2.0"),
            body.as_bytes(),
            Purpose::Fire,
        );
    }

    fn transfer_progress(&mut self, now: Instant, id: u64, status: u16) {
        let Some(t) = self.calls.get(&id).and_then(|c| c.transfer.as_ref()) else {
            return;
        };
        if t.refer && (status == 180 || status == 183) {
            let referrer = t.referrer;
            let frag = format!("SIP/2.0 {status} {}", build::reason_phrase(status));
            self.notify(now, id, referrer, &frag, false);
        }
    }

    /// The transfer target answered with its offer: re-INVITE the caller
    /// with it.
    fn transfer_answered(&mut self, now: Instant, id: u64, leg: u16, msg: &Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(moved) = call.transfer.as_ref().map(|t| t.moved) else {
            return;
        };
        let Some(b) = call.b.get_mut(usize::from(leg)) else {
            return;
        };
        b.state = BState::Answered;
        b.status = msg.status();
        b.leg.dialog.learn_from_response(msg);
        b.leg.invite_busy = false;
        b.leg.ack_deferred = Some((b.leg.dialog.local_seq, msg.body.clone()));
        let offer = body_of(msg);
        if call.leg(moved).is_some_and(|l| l.invite_busy) {
            // E.g. the caller's ACK of the original answer is still on its
            // way: re-INVITE once it arrives.
            if let Some(t) = call.transfer.as_mut() {
                t.pending_offer = Some(offer);
            }
            return;
        }
        self.transfer_reinvite(now, id, moved, leg, offer);
    }

    /// Sends the moved party the target's offer (RFC 3725 flow I).
    fn transfer_reinvite(
        &mut self,
        now: Instant,
        id: u64,
        moved: LegId,
        target: u16,
        offer: (Option<String>, Bytes),
    ) {
        let legs = self.calls.get(&id).map(|c| {
            (
                c.b.get(usize::from(target)).and_then(|b| b.leg.media),
                c.leg(moved).and_then(|l| l.media),
            )
        });
        let (from, to) = legs.unwrap_or_default();
        let (ct, body) = translate(&mut self.media, now, from, to, Sdp::Offer, offer);
        self.send_in_dialog(
            now,
            id,
            moved,
            Method::Invite,
            &[],
            ct.as_deref(),
            &body,
            Purpose::TransferReinvite { call: id, target },
        );
    }

    /// The caller answered the transfer re-INVITE.
    fn on_transfer_reinvite(
        &mut self,
        now: Instant,
        id: u64,
        target: u16,
        msg: &Message,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = call.transfer.as_ref() else {
            return;
        };
        let (moved, referrer, refer) = (t.moved, t.referrer, t.refer);
        if !(200..300).contains(&status) {
            if let Some(l) = call.leg_mut(moved) {
                l.invite_busy = false;
            }
            // Hang up the target; the caller keeps its old session.
            if let Some(b) = call.b.get_mut(usize::from(target)) {
                b.state = BState::Done;
                let cseq = b
                    .leg
                    .ack_deferred
                    .take()
                    .map_or(b.leg.dialog.local_seq, |(c, _)| c);
                let d = b.leg.dialog.clone();
                let ack = build_ack(&self.cfg, &mut self.ids, &d, cseq, b"", None);
                self.out.push_back(CallOutput::Transmit {
                    peer: d.peer,
                    data: ack,
                });
                if let Some(b) = self
                    .calls
                    .get_mut(&id)
                    .and_then(|c| c.b.get_mut(usize::from(target)))
                {
                    let mut leg = std::mem::replace(&mut b.leg, Leg::new(d));
                    self.bye(now, &mut leg);
                    if let Some(b) = self
                        .calls
                        .get_mut(&id)
                        .and_then(|c| c.b.get_mut(usize::from(target)))
                    {
                        b.leg = leg;
                    }
                }
            }
            self.transfer_failed(now, id, target, status);
            return;
        }
        // ACK the caller's 2xx, and the target's with the caller's answer.
        // The 2xx carries its INVITE's CSeq number (§8.2.6.2), the ACK's.
        let cseq = msg.cseq.seq;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(ml) = call.leg_mut(moved) else {
            return;
        };
        ml.invite_busy = false;
        ml.dialog.refresh_target(msg);
        let md = ml.dialog.clone();
        let ack = build_ack(&self.cfg, &mut self.ids, &md, cseq, b"", None);
        if let Some(ml) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(moved)) {
            ml.last_ack = Some(ack.clone());
        }
        self.out.push_back(CallOutput::Transmit {
            peer: md.peer,
            data: ack,
        });
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let moved_media = call.leg(moved).and_then(|l| l.media);
        if let Some(b) = call.b.get_mut(usize::from(target)) {
            let (ct, body) = translate(
                &mut self.media,
                now,
                moved_media,
                b.leg.media,
                Sdp::Answer,
                body_of(msg),
            );
            let cseq = b
                .leg
                .ack_deferred
                .take()
                .map_or(b.leg.dialog.local_seq, |(c, _)| c);
            let d = b.leg.dialog.clone();
            let ack = build_ack(&self.cfg, &mut self.ids, &d, cseq, &body, ct.as_deref());
            if let Some(b) = self
                .calls
                .get_mut(&id)
                .and_then(|c| c.b.get_mut(usize::from(target)))
            {
                b.leg.last_ack = Some(ack.clone());
            }
            self.out.push_back(CallOutput::Transmit {
                peer: d.peer,
                data: ack,
            });
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.peer = target;
        call.transfer = None;
        call.transfers += 1;
        self.counters.transfers.bump();
        if refer {
            self.notify(now, id, referrer, "SIP/2.0 200 OK", true);
        } else {
            self.transfer_done(now, id, referrer, target);
        }
    }

    /// The transfer did not happen: tell the referrer; if it already left,
    /// the caller has nobody and the call ends.
    fn transfer_failed(&mut self, now: Instant, id: u64, leg: u16, status: u16) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = call.transfer.take() else {
            return;
        };
        if let Some(b) = call.b.get_mut(usize::from(leg)) {
            b.state = BState::Done;
            b.status.get_or_insert(status);
        }
        self.counters.transfers_failed.bump();
        let referrer_gone = match t.referrer {
            LegId::B(i) => call
                .b
                .get(usize::from(i))
                .is_none_or(|b| b.state == BState::Done),
            LegId::A => false,
        };
        if referrer_gone {
            self.end_call(now, id, EndCause::Failed(status), Side::System, None);
            return;
        }
        if t.refer {
            let frag = format!("SIP/2.0 {status} {}", build::reason_phrase(status));
            self.notify(now, id, t.referrer, &frag, true);
        } else {
            self.transfer_abandoned(now, id, t.referrer, status);
        }
    }

    // ------------------------------------------------------------------
    // Session timers (RFC 4028)
    // ------------------------------------------------------------------

    /// The caller leg's session interval and refresher, from its INVITE
    /// (§9): its Session-Expires, lowered to ours but not below its Min-SE;
    /// the refresher it names, else itself when it supports timers, else us.
    /// A caller that neither supports timers nor got a Session-Expires from
    /// a proxy runs none.
    fn plan_a_session(
        &self,
        msg: &Message,
        se: Option<(u32, Option<Refresher>)>,
    ) -> Option<(u32, Refresher)> {
        let supports = msg
            .supported
            .iter()
            .any(|t| t.eq_ignore_ascii_case(b"timer"));
        let floor = min_se(msg).unwrap_or(90).max(90);
        match se {
            Some((n, r)) => {
                let n = n.min(self.cfg.session_expires).max(floor);
                let r = r.unwrap_or(if supports {
                    Refresher::Uac
                } else {
                    Refresher::Uas
                });
                Some((n, r))
            }
            None if supports => Some((self.cfg.session_expires.max(floor), Refresher::Uac)),
            None => None,
        }
    }

    /// (Re)starts a leg's session timer from `now` (after a 2xx to an
    /// INVITE or UPDATE on it).
    fn arm_session(&mut self, now: Instant, id: u64, leg: LegId) {
        let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg)) else {
            return;
        };
        let Some(st) = l.session.as_mut() else { return };
        let at = st.next(now);
        st.due = Some(at);
        self.out.push_back(CallOutput::Timer {
            at,
            key: TimerKey::Session(id, leg),
        });
    }

    fn on_session_timer(&mut self, now: Instant, id: u64, leg: LegId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.phase != Phase::Answered {
            return;
        }
        let Some(l) = call.leg_mut(leg) else { return };
        let Some(st) = l.session.as_mut() else { return };
        if st.due.is_none_or(|d| now < d) {
            return; // re-armed since
        }
        st.due = None;
        if !st.we_refresh {
            self.end_call(now, id, EndCause::SessionExpired, Side::System, None);
            return;
        }
        let value = se_value(st.interval, Refresher::Uac);
        let headers = [
            ("Session-Expires", value.as_str()),
            ("Supported", SUPPORTED),
        ];
        let purpose = Purpose::Refresh { call: id, leg };
        if l.allows_update {
            self.send_in_dialog(now, id, leg, Method::Update, &headers, None, b"", purpose);
        } else if l.invite_busy {
            // An INVITE is in progress; it refreshes the session itself.
            if let Some(st) = l.session.as_mut() {
                let at = now + Duration::from_secs(10);
                st.due = Some(at);
                self.out.push_back(CallOutput::Timer {
                    at,
                    key: TimerKey::Session(id, leg),
                });
            }
        } else {
            let (ct, body) = l.last_sdp.clone().unzip();
            let body = body.unwrap_or_default();
            let headers = [("Session-Expires", value.as_str())];
            self.send_in_dialog(
                now,
                id,
                leg,
                Method::Invite,
                &headers,
                ct.as_deref(),
                &body,
                purpose,
            );
        }
    }

    /// The answer to our session refresh.
    fn on_refresh_final(&mut self, now: Instant, id: u64, leg: LegId, tid: u64, msg: &Message) {
        let Some(status) = msg.status() else { return };
        let is_invite = matches!(
            self.txs.get(&tid).map(|t| &t.machine),
            Some(Machine::Invite(..))
        );
        let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg)) else {
            return;
        };
        if is_invite {
            l.invite_busy = false;
        }
        if (200..300).contains(&status) {
            if is_invite {
                // The 2xx carries its INVITE's CSeq number (§8.2.6.2), the ACK's.
                let cseq = msg.cseq.seq;
                l.dialog.refresh_target(msg);
                let d = l.dialog.clone();
                let ack = build_ack(&self.cfg, &mut self.ids, &d, cseq, b"", None);
                self.out.push_back(CallOutput::Transmit {
                    peer: d.peer,
                    data: ack,
                });
            }
            self.arm_session(now, id, leg);
        } else if matches!(status, 481 | 408) {
            self.end_call(now, id, EndCause::LegLost, Side::System, None);
        } else {
            // 491, 5xx…: try again at the next half interval.
            self.arm_session(now, id, leg);
        }
    }

    // ------------------------------------------------------------------
    // Plumbing
    // ------------------------------------------------------------------

    fn dialog_of(&self, msg: &Message) -> Option<(u64, LegId)> {
        let tag = msg.to.tag()?;
        let tag = std::str::from_utf8(tag).ok()?;
        self.dialogs.get(tag).copied()
    }

    /// 488 Not Acceptable Here for an offer we cannot take, saying why in
    /// a Warning (RFC 3261 §20.43).
    fn refuse_sdp(
        &mut self,
        now: Instant,
        stx: u64,
        msg: &Message,
        peer: Peer,
        tag: &str,
        why: &str,
    ) {
        let why = why.replace(['\r', '\n', '"', '\\'], " ");
        let warning = format!("399 switchboard \"{why}\"");
        self.refuse(now, stx, msg, peer, 488, tag, &[("Warning", &warning)]);
    }

    /// Answers a call we do not route finally, and records it.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        now: Instant,
        stx: u64,
        msg: &Message,
        peer: Peer,
        status: u16,
        tag: &str,
        headers: &[(&str, &str)],
    ) {
        let call_id = text(&msg.call_id);
        let record = CallRecord {
            id: record::record_id(&call_id, self.wall_ms(now)),
            call_id: call_id.clone(),
            caller: LegRecord {
                call_id,
                user: text(&msg.from.uri.user),
                peer: peer.addr,
                status: None,
                media: None,
            },
            callees: Vec::new(),
            dialled: msg.request_uri().map(|u| u.user_text()).unwrap_or_default(),
            started: now,
            answered: None,
            ended: now,
            cause: EndCause::Refused(status),
            hung_up_by: Side::System,
            transfers: 0,
            digits: String::new(),
            callee_digits: String::new(),
            recording: None,
            path: Vec::new(),
            data: Vec::new(),
            held_ms: 0,
            queued: None,
            offered: None,
            connected: None,
        };
        self.out.push_back(CallOutput::Record(Box::new(record)));
        self.counters.calls_unanswered.bump();
        self.reply(
            stx,
            msg,
            peer,
            Reply::new(status).tag(Some(tag)).headers(headers),
        );
    }

    /// Builds a response to `req` and hands it to server transaction `stx`.
    fn reply(&mut self, stx: u64, req: &Message, peer: Peer, r: Reply<'_>) -> Bytes {
        let data = build::response(
            req,
            r.status,
            &ResponseParts {
                reason: r.reason,
                to_tag: r.to_tag.map(str::as_bytes),
                source: Some(peer.addr),
                headers: r.headers,
                server: &self.cfg.user_agent,
                record_route: r.record_route,
                body: r.body,
            },
        );
        self.out.push_back(CallOutput::Respond {
            stx,
            status: r.status,
            data: data.clone(),
        });
        data
    }

    fn start_ack_wait(&mut self, now: Instant, id: u64, leg: LegId, data: Bytes) {
        let timers = self.cfg.timers;
        let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg)) else {
            return;
        };
        l.ack_wait = Some(AckWait::new(now, timers, data));
        l.ack_scheduled = None;
        self.drain_ack_wait(id, leg);
    }

    /// Moves an AckWait's outputs out; true when it gave up.
    fn drain_ack_wait(&mut self, id: u64, leg: LegId) -> bool {
        let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg)) else {
            return false;
        };
        let peer = l.dialog.peer;
        let Some(w) = l.ack_wait.as_mut() else {
            return false;
        };
        let mut gave_up = false;
        let mut sends = Vec::new();
        let mut done = false;
        while let Some(o) = w.poll_output() {
            match o {
                TxOutput::Transmit(b) => sends.push(b),
                TxOutput::Tu(TuEvent::Timeout) => gave_up = true,
                TxOutput::Tu(_) => {}
                TxOutput::Terminated => done = true,
            }
        }
        let next = w.poll_timeout();
        if done {
            l.ack_wait = None;
        }
        let arm = !done && next.is_some() && next != l.ack_scheduled;
        if arm {
            l.ack_scheduled = next;
        }
        for data in sends {
            self.out.push_back(CallOutput::Transmit { peer, data });
        }
        if arm && let Some(at) = next {
            self.out.push_back(CallOutput::Timer {
                at,
                key: TimerKey::AckWait(id, leg),
            });
        }
        gave_up
    }

    /// Moves a client transaction's outputs out and keeps its timer armed;
    /// collects the events for its user.
    fn drain_tx(&mut self, tid: u64, events: &mut Vec<TuEvent>) {
        let Some(tx) = self.txs.get_mut(&tid) else {
            return;
        };
        let peer = tx.peer;
        loop {
            let o = match &mut tx.machine {
                Machine::Invite(m, _) => m.poll_output(),
                Machine::NonInvite(m) => m.poll_output(),
            };
            match o {
                Some(TxOutput::Transmit(data)) => {
                    self.out.push_back(CallOutput::Transmit { peer, data })
                }
                Some(TxOutput::Tu(ev)) => {
                    if ev == TuEvent::Timeout {
                        self.counters.transactions_timed_out.bump();
                    }
                    events.push(ev)
                }
                Some(TxOutput::Terminated) | None => break,
            }
        }
        let next = match &tx.machine {
            Machine::Invite(m, _) => m.poll_timeout(),
            Machine::NonInvite(m) => m.poll_timeout(),
        };
        if next.is_some() && next != tx.scheduled {
            tx.scheduled = next;
            if let Some(at) = next {
                self.out.push_back(CallOutput::Timer {
                    at,
                    key: TimerKey::Tx(tid),
                });
            }
        }
    }

    /// Drops a terminated client transaction.
    fn reap_tx(&mut self, tid: u64) {
        let done = self.txs.get(&tid).is_some_and(|t| match &t.machine {
            Machine::Invite(m, _) => m.is_terminated(),
            Machine::NonInvite(m) => m.is_terminated(),
        });
        if done && let Some(tx) = self.txs.remove(&tid) {
            self.tx_index.remove(&tx.key);
        }
    }
}

/// An ACK for a 2xx in dialog `d` (§13.2.2.4: a new transaction, our own
/// branch, the INVITE's CSeq number).
fn build_ack(
    cfg: &CallConfig,
    ids: &mut IdGen,
    d: &Dialog,
    cseq: u32,
    body: &[u8],
    ct: Option<&str>,
) -> Bytes {
    let branch = ids.branch();
    d.request(
        &cfg.local,
        &Req {
            method: "ACK",
            branch: &branch,
            cseq,
            max_forwards: 70,
            content_type: ct,
            body,
            user_agent: &cfg.user_agent,
            ..Default::default()
        },
    )
}

/// `Session-Expires` (or compact `x`): interval and refresher (RFC 4028 §4).
fn session_expires(msg: &Message) -> Option<(u32, Option<Refresher>)> {
    let v = msg
        .other_header("Session-Expires")
        .or_else(|| msg.other_header("x"))?;
    let v = std::str::from_utf8(v).ok()?;
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse::<u32>().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, val)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("refresher")
        {
            refresher = match val.trim().to_ascii_lowercase().as_str() {
                "uac" => Some(Refresher::Uac),
                "uas" => Some(Refresher::Uas),
                _ => None,
            };
        }
    }
    Some((n, refresher))
}

/// `Min-SE` (RFC 4028 §5).
fn min_se(msg: &Message) -> Option<u32> {
    let v = msg.other_header("Min-SE")?;
    std::str::from_utf8(v)
        .ok()?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn se_value(n: u32, r: Refresher) -> String {
    let r = match r {
        Refresher::Uac => "uac",
        Refresher::Uas => "uas",
    };
    format!("{n};refresher={r}")
}

/// Whether the message's Allow lists UPDATE.
fn allows_update(msg: &Message) -> bool {
    msg.headers.iter().filter(|h| h.is_named("Allow")).any(|h| {
        h.value
            .split(|&c| c == b',')
            .any(|m| crate::sip::grammar::trim(m).eq_ignore_ascii_case(b"UPDATE"))
    })
}

/// An SDP answer refusing every stream of `offer` (RFC 3264 §6: port 0);
/// empty when the offer does not parse.
fn reject_all(offer: &[u8]) -> Vec<u8> {
    match crate::sdp::SessionDescription::parse(offer) {
        Ok(mut sd) => {
            for m in &mut sd.media {
                m.set_port(0);
            }
            sd.to_bytes()
        }
        Err(_) => Vec::new(),
    }
}

/// The reason phrase of a response, when it differs from the standard one.
fn reason_of(msg: &Message) -> Option<String> {
    match &msg.start {
        crate::sip::message::StartLine::Response { reason, .. } if !reason.is_empty() => {
            Some(text(reason))
        }
        _ => None,
    }
}

/// The [`CARRIED`] headers of `msg`, for the request on the other leg.
fn carried(msg: &Message) -> Vec<(&'static str, String)> {
    CARRIED
        .iter()
        .filter_map(|h| msg.other_header(h).map(|v| (*h, text(v))))
        .collect()
}

/// Whether a Content-Type is SDP.
fn is_sdp(ct: &str) -> bool {
    ct.split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
}

/// Which way a session description crosses the B2BUA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdp {
    Offer,
    Answer,
}

/// Passes a session description from media leg `from` to `to` through the
/// media engine (so each side talks to our ports); other bodies, and legs
/// without media, pass unchanged. A description the engine cannot anchor
/// is logged and passed as it is: the parties may still reach each other
/// directly.
fn translate(
    media: &mut MediaEngine,
    now: Instant,
    from: Option<MediaLeg>,
    to: Option<MediaLeg>,
    kind: Sdp,
    (ct, body): (Option<String>, Bytes),
) -> (Option<String>, Bytes) {
    let (Some(f), Some(t)) = (from, to) else {
        return (ct, body);
    };
    if body.is_empty() || !ct.as_deref().is_some_and(is_sdp) {
        return (ct, body);
    }
    let out = match kind {
        Sdp::Offer => media.translate_offer(f, t, &body),
        Sdp::Answer => media.translate_answer(now, f, t, &body),
    };
    match out {
        Ok(b) => (ct, b),
        Err(e) => {
            tracing::warn!(problem = %e, ?kind, "cannot anchor media, passing the description on");
            (ct, body)
        }
    }
}

/// Content-Type value and body of a message (None when it has no body).
fn body_of(msg: &Message) -> (Option<String>, Bytes) {
    if msg.body.is_empty() {
        return (None, Bytes::new());
    }
    let ct = msg
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .map(|h| text(&h.value));
    (ct, msg.body.clone())
}
