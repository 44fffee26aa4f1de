//! Hosted calls: callers the appliance answers itself — IVR menus, queues,
//! agents' feature codes — and connects to an agent (or a user) later.
//!
//! The caller's INVITE is answered at once with our own description
//! ([`MediaEngine::answer_locally`]); the caller then hears prompts and
//! music from the media engine and its DTMF drives an [`ivr::Session`].
//! In a queue the call is handed to the ACD ([`acd::Input::Enqueue`]),
//! whose decisions come back through [`B2bua::handle_acd`]: an
//! [`acd::Output::Offer`] rings the agent's registered phones with an offer
//! made on the caller's behalf ([`MediaEngine::offer_onward`]); the first
//! phone to answer is bridged to the caller ([`MediaEngine::bridge_answer`])
//! and from then on the call is an ordinary connected B2BUA call. Every
//! offer ends with exactly one [`acd::Input::RingResult`]; a caller who
//! leaves while waiting or ringing is reported with [`acd::Input::Leave`]
//! (its rings CANCELled at once), a connected call's end with
//! [`acd::Input::CallEnded`].
//!
//! [`MediaEngine::answer_locally`]: crate::media::engine::MediaEngine::answer_locally
//! [`MediaEngine::offer_onward`]: crate::media::engine::MediaEngine::offer_onward
//! [`MediaEngine::bridge_answer`]: crate::media::engine::MediaEngine::bridge_answer

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::acd::{self, AgentId, AgentOp, CallKey, QueueId, RingOutcome};
use crate::config::contact::{ContactCenter, Route, Target};
use crate::ivr::{self, IvrOutput};
use crate::media::player::Clip;
use crate::media::prompts::Prompts;

/// What hosted calls need: the contact-center config, the ACD's names,
/// the IVR menus and the prompts. Shared by every shard.
pub struct ContactPlan {
    pub cc: ContactCenter,
    pub acd: acd::Settings,
    pub menus: ivr::Menus,
    pub prompts: Prompts,
    /// The built-in CRM directory for screen pops (`crm.directory`).
    pub directory: Option<Arc<crate::crm::Directory>>,
    /// Screen pops come from the CRM over HTTP (`crm.lookup.url`): a
    /// queue call asks the control plane and waits at most
    /// `lookup_timeout` for the answer before it is queued.
    pub lookup_http: Option<std::time::Duration>,
}

impl std::fmt::Debug for ContactPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ContactPlan({} queues, {} menus, {} prompts)",
            self.cc.queues.len(),
            self.cc.menus.len(),
            self.prompts.len()
        )
    }
}

impl ContactPlan {
    pub fn new(cc: &ContactCenter, prompts: Prompts, seed: u64) -> ContactPlan {
        ContactPlan {
            cc: cc.clone(),
            acd: acd::Settings::from_config(cc, seed),
            menus: ivr::Menus::new(cc),
            prompts,
            directory: None,
            lookup_http: None,
        }
    }

    /// The prompts named, one after the other (unknown names skipped).
    fn clip(&self, names: &[String]) -> Option<Clip> {
        let clips: Vec<Clip> = names.iter().filter_map(|n| self.prompts.get(n)).collect();
        match clips.len() {
            0 => None,
            1 => clips.into_iter().next(),
            _ => Some(clips.iter().flat_map(|c| c.iter().copied()).collect()),
        }
    }
}

/// Where a hosted call is.
#[derive(Debug)]
enum Stage {
    /// In a menu.
    Ivr(Box<ivr::Session>),
    /// Waiting in a queue (agents may be ringing).
    Queued(QueueId),
    /// Asked for a callback: hears the confirmation, then is hung up; its
    /// place in the queue is kept.
    CallbackBye(Box<Parked>),
    /// Calling the customer back for the reserved agent.
    CallingBack(AgentId),
    /// Click-to-dial: ringing the agent's phone; the customer is dialled
    /// once it answers.
    ClickToDial(AgentId, Dest),
    /// Ringing a user's phones (a route to `user:ID`).
    Dialling,
    /// Hearing a last prompt; hung up when it ends.
    Leaving,
    /// Connected to an agent or user.
    Connected,
}

/// An agent's phones ringing for the call.
#[derive(Debug)]
struct Offer {
    agent: AgentId,
    legs: Vec<u16>,
    /// Its RingResult was sent.
    reported: bool,
}

/// The hosted part of a call.
#[derive(Debug)]
pub(super) struct Hosted {
    /// The caller's INVITE: the agents' INVITEs copy its parties and headers.
    pub(super) origin: Box<Message>,
    stage: Stage,
    /// Key/value data attached along the way (IVR entries, routes).
    pub(super) data: Vec<(String, String)>,
    priority: Option<u8>,
    offers: Vec<Offer>,
    /// The agent connected, if any.
    agent: Option<AgentId>,
    /// Music while queued, once any prompt is over.
    music: Option<Clip>,
    /// Menus and queues passed through, for the record.
    pub(super) path: Vec<String>,
    /// The caller's CRM record (screen pop), found on entering a queue.
    contact: Option<Box<crate::crm::Contact>>,
    /// When it entered its queue (the offer's wait).
    queued_at: Option<Instant>,
    /// An agent marked busy for this call (click-to-dial), freed at its end.
    busy_agent: Option<AgentId>,
    /// Queued once the CRM lookup answers (or its time is up).
    pending_enqueue: Option<QueueId>,
    /// When an agent's phone first rang for it, and when an agent answered.
    offered_at: Option<Instant>,
    connected_at: Option<Instant>,
    /// The CRM was asked already (one lookup per call).
    looked_up: bool,
}

impl Hosted {
    fn new(origin: Box<Message>, stage: Stage) -> Hosted {
        Hosted {
            origin,
            stage,
            data: Vec::new(),
            priority: None,
            offers: Vec::new(),
            agent: None,
            music: None,
            path: Vec::new(),
            contact: None,
            queued_at: None,
            busy_agent: None,
            pending_enqueue: None,
            looked_up: false,
            offered_at: None,
            connected_at: None,
        }
    }

    /// When it was queued, first offered to an agent, and connected.
    pub(super) fn times(&self) -> (Option<Instant>, Option<Instant>, Option<Instant>) {
        (self.queued_at, self.offered_at, self.connected_at)
    }

    /// A click-to-dial call from `agent`'s phone to `dest`.
    pub(super) fn click_to_dial(origin: Box<Message>, agent: AgentId, dest: Dest) -> Hosted {
        let mut h = Hosted::new(origin, Stage::ClickToDial(agent, dest));
        h.path.push("click-to-dial".into());
        h.busy_agent = Some(agent);
        h
    }

    /// The agent on the call, or being rung for it.
    pub(super) fn agent_id(&self) -> Option<AgentId> {
        if let Some(a) = self.agent.or(self.busy_agent) {
            return Some(a);
        }
        match self.stage {
            Stage::CallingBack(a) | Stage::ClickToDial(a, _) => Some(a),
            _ => self
                .offers
                .iter()
                .rev()
                .find(|o| !o.reported)
                .map(|o| o.agent),
        }
    }

    /// B leg `new` rings for the same offer as `old` (which is being
    /// cancelled): the offer is reported once both have ended.
    pub(super) fn ring_instead(&mut self, old: u16, new: u16) {
        if let Some(o) = self.offers.iter_mut().find(|o| o.legs.contains(&old)) {
            o.legs.push(new);
        }
    }

    /// The connected agent leaves the call (a CTI transfer moved the
    /// caller on): returned once, for the ACD's CallEnded.
    pub(super) fn release_agent(&mut self) -> Option<AgentId> {
        self.agent.take()
    }
}

/// Where click-to-dial rings the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dest {
    /// A configured user's registered phones.
    User(String),
    /// A SIP URI with an IP address (and port, default 5060), over UDP.
    Uri {
        uri: String,
        user: String,
        addr: std::net::SocketAddr,
    },
}

impl Dest {
    /// `to` of `call.make`: a configured user id, or `sip:user@IP[:port]`.
    pub(super) fn parse(to: &str, users: &HashSet<String>) -> Result<Dest, String> {
        if users.contains(to) {
            return Ok(Dest::User(to.to_owned()));
        }
        let Some(rest) = to.strip_prefix("sip:") else {
            return Err(format!(
                "call.make: \"to\" {to:?} is neither a configured user nor a sip:user@IP[:port] URI"
            ));
        };
        let rest = rest.split(';').next().unwrap_or_default();
        let (user, host) = rest.split_once('@').unwrap_or(("", rest));
        let addr = host
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                host.parse::<std::net::IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, 5060))
            })
            .map_err(|_| {
                format!("call.make: \"to\" {to:?}: the host must be an IP address (with an optional port)")
            })?;
        if user.is_empty()
            || user
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(format!(
                "call.make: \"to\" {to:?}: expected sip:user@IP[:port]"
            ));
        }
        Ok(Dest::Uri {
            uri: format!("sip:{user}@{addr}"),
            user: user.to_owned(),
            addr,
        })
    }

    /// The user part shown to the agent's phone (and used as the number
    /// dialled).
    pub(super) fn user(&self) -> String {
        match self {
            Dest::User(u) => u.clone(),
            Dest::Uri { user, .. } => user.clone(),
        }
    }
}

/// An INVITE as if `agent` had dialled `to`: the parties and headers a
/// click-to-dial call's leg to the customer copies ([`B2bua::fork`]).
/// None if the names do not make a valid request.
pub(super) fn origin_for(agent: &str, to: &str, domain: &str) -> Option<Box<Message>> {
    let text = format!(
        "INVITE sip:{to}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKclick\r\nFrom: <sip:{agent}@{domain}>;tag=click\r\nTo: <sip:{to}@{domain}>\r\nCall-ID: click@{domain}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    crate::sip::message::parse(
        Bytes::from(text),
        crate::sip::message::Framing::Datagram,
        &crate::sip::message::Limits::default(),
    )
    .ok()
    .map(Box::new)
}

/// A customer waiting for a queue callback: how to reach them.
#[derive(Debug)]
pub(super) struct Parked {
    /// Their Contact (the Request-URI of our INVITE) and where it came from.
    target: String,
    peer: Peer,
    /// Their From URI (our To).
    party: String,
    caller_user: String,
    dialled: String,
    origin: Box<Message>,
    data: Vec<(String, String)>,
    path: Vec<String>,
    music: Option<Clip>,
}

/// Feature codes an agent dials: what they do, and the prompt confirming it.
fn feature(cc: &ContactCenter, dialled: &str) -> Option<(AgentOp, &'static str)> {
    let f = &cc.acd.features;
    if dialled == f.login {
        Some((AgentOp::Login, "agent_logged_in"))
    } else if dialled == f.logout {
        Some((AgentOp::Logout, "agent_logged_out"))
    } else if dialled == f.ready {
        Some((AgentOp::Ready, "agent_ready"))
    } else if let Some(reason) = dialled.strip_prefix(f.not_ready.as_str()) {
        let reason = if reason.is_empty() {
            0
        } else {
            reason.parse().ok()?
        };
        Some((AgentOp::NotReady { reason }, "agent_not_ready"))
    } else {
        None
    }
}

/// How a ring that did not connect ended, from its final status.
fn outcome(status: u16) -> RingOutcome {
    match status {
        487 => RingOutcome::Cancelled,
        486 | 600 | 603 => RingOutcome::Busy,
        408 | 480 => RingOutcome::NoAnswer,
        _ => RingOutcome::Failed,
    }
}

/// A stable hash of the caller's number (sticky routing).
fn caller_hash(user: &str) -> u64 {
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    let key = if digits.is_empty() { user } else { &digits };
    // FNV-1a: stable across runs and shards.
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1
}

impl B2bua {
    pub(super) fn plan(&self) -> Option<Arc<ContactPlan>> {
        self.cfg.contact.clone()
    }

    /// The ACD's key for call `id` of this shard.
    pub fn call_key(&self, id: u64) -> CallKey {
        CallKey((u64::from(self.cfg.shard.0) << 48) | id)
    }

    /// The shard a key belongs to, and the call id.
    pub fn split_key(key: CallKey) -> (u16, u64) {
        ((key.0 >> 48) as u16, key.0 & ((1 << 48) - 1))
    }

    pub(super) fn tell_acd(&mut self, input: acd::Input) {
        self.out.push_back(CallOutput::Acd(input));
    }

    /// A user's phones came (first binding) or went (last one): the ACD
    /// logs its agent in or out when `acd.auto_login` is on.
    pub fn handle_phone(&mut self, user: &str, registered: bool) {
        let Some(plan) = self.plan() else { return };
        let Some(agent) = plan.acd.agent(user) else {
            return;
        };
        let op = if registered {
            AgentOp::PhoneRegistered
        } else {
            AgentOp::PhoneUnregistered
        };
        self.tell_acd(acd::Input::Agent { agent, op });
    }

    /// The route for a dialled number that is not a user: a dial-plan
    /// entry, or an agent's feature code.
    pub(super) fn hosted_route(&self, dialled: &str, caller: &str) -> Option<HostedEntry> {
        let plan = self.cfg.contact.as_ref()?;
        if let Some(r) = plan.cc.route(dialled) {
            return Some(HostedEntry::Route(r.clone()));
        }
        let agent = plan.acd.agent(caller)?;
        let (op, prompt) = feature(&plan.cc, dialled)?;
        Some(HostedEntry::Feature(agent, op, prompt))
    }

    /// Answers a caller ourselves and starts its hosted life at `entry`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn host(
        &mut self,
        now: Instant,
        stx: u64,
        peer: Peer,
        msg: Message,
        entry: HostedEntry,
        local_tag: String,
        a_session: Option<(u32, Refresher)>,
    ) {
        let dialled = msg.request_uri().map(|u| u.user_text()).unwrap_or_default();
        let (ct, body) = body_of(&msg);
        if body.is_empty() || !ct.as_deref().is_some_and(is_sdp) {
            let headers = [("Warning", "399 switchboard \"an offer is needed here\"")];
            self.refuse(now, stx, &msg, peer, 488, &local_tag, &headers);
            return;
        }
        let id = self.next_call;
        let Some((ma, mb)) = self.open_call_media(now, id, stx, &msg, peer, &local_tag) else {
            return;
        };
        let answer = match self.media.answer_locally(ma, &body) {
            Ok(a) => a,
            Err(e) => {
                self.media.close_legs_of(id);
                self.refuse_sdp(now, stx, &msg, peer, &local_tag, &e.to_string());
                return;
            }
        };
        self.next_call += 1;
        let a = Dialog::from_invite(&msg, peer, local_tag.clone());
        self.dialogs.insert(local_tag.clone(), (id, LegId::A));
        let mut call = Call {
            a_session,
            answered: Some(now),
            ..Call::new(
                Leg::new(a),
                dialled,
                text(&msg.from.uri.user),
                now,
                (ma, mb),
            )
        };
        call.a.allows_update = allows_update(&msg);
        let contact = self.cfg.local.contact(peer.link);
        let mut headers = vec![
            ("Contact", contact.as_str()),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("Content-Type", "application/sdp"),
        ];
        let se = a_session.map(|(n, r)| {
            call.a.session = Some(SessionTimer {
                interval: n,
                we_refresh: r == Refresher::Uas,
                due: None,
            });
            se_value(n, r)
        });
        if let Some(v) = se.as_deref() {
            headers.push(("Session-Expires", v));
            if a_session.is_some_and(|(_, r)| r == Refresher::Uac) {
                headers.push(("Require", "timer"));
            }
        }
        call.a.last_sdp = Some(("application/sdp".into(), answer.clone()));
        let data = self.reply(
            stx,
            &msg,
            peer,
            Reply::new(200)
                .tag(Some(&local_tag))
                .headers(&headers)
                .body(&answer)
                .record_route(),
        );
        call.hosted = Some(Box::new(Hosted::new(Box::new(msg), Stage::Leaving)));
        self.calls.insert(id, Box::new(call));
        self.counters.calls_active.set(self.calls.len() as u64);
        self.counters.calls_answered.bump();
        self.media.arm(now, ma);
        self.start_ack_wait(now, id, LegId::A, data);
        self.arm_session(now, id, LegId::A);
        self.out.push_back(CallOutput::Timer {
            at: now + self.cfg.max_duration,
            key: TimerKey::MaxDuration(id),
        });
        match entry {
            HostedEntry::Route(r) => self.enter(now, id, r, 0),
            HostedEntry::Feature(agent, op, prompt) => {
                self.tell_acd(acd::Input::Agent { agent, op });
                self.leave_with(now, id, &[prompt.to_owned()]);
            }
        }
    }

    /// Plays `names` to the caller, then hangs up.
    fn leave_with(&mut self, now: Instant, id: u64, names: &[String]) {
        let Some(plan) = self.plan() else { return };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(h) = call.hosted.as_mut() {
            h.stage = Stage::Leaving;
        }
        let played = match (plan.clip(names), call.a.media) {
            (Some(clip), Some(ma)) => self.media.play(now, ma, clip, false),
            _ => false,
        };
        if !played {
            self.end_call(now, id, EndCause::Normal, Side::System, None);
        }
    }

    /// The call goes to `route` (`hops` counts routes followed in a row).
    fn enter(&mut self, now: Instant, id: u64, route: Route, hops: u32) {
        let Some(plan) = self.plan() else { return };
        let wall = self.wall_unix_s(now);
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        h.data.extend(route.set.iter().cloned());
        if let Some(p) = route.priority {
            h.priority = Some(p);
        }
        h.path.push(route.target.to_string());
        match route.target {
            Target::Queue(name) => {
                let Some(queue) = plan.acd.queue(&name) else {
                    self.end_call(now, id, EndCause::Normal, Side::System, None);
                    return;
                };
                let qc = plan.acd.queue_config(queue);
                if h.contact.is_none() {
                    h.contact = screen_pop(&plan, &h.origin, &h.data).map(Box::new);
                }
                h.stage = Stage::Queued(queue);
                h.music = qc.music.as_deref().and_then(|m| plan.prompts.get(m));
                let entry = qc.entry_prompt.clone();
                match plan.lookup_http {
                    Some(wait) if !h.looked_up => {
                        // Ask the CRM; queued at its answer or in `wait`.
                        h.looked_up = true;
                        h.pending_enqueue = Some(queue);
                        let number = caller_number(&h.origin);
                        let account = h
                            .data
                            .iter()
                            .rev()
                            .find(|(k, _)| k == "account")
                            .map(|(_, v)| v.clone());
                        let key = self.call_key(id).0;
                        self.out
                            .push_back(CallOutput::Cti(crate::cti::event::ToControl::Lookup {
                                key,
                                number,
                                account,
                            }));
                        self.out.push_back(CallOutput::Timer {
                            at: now + wait + std::time::Duration::from_millis(50),
                            key: TimerKey::Hosted(id),
                        });
                    }
                    _ => self.enqueue(now, id, queue),
                }
                match entry.and_then(|e| plan.clip(&[e])) {
                    Some(clip) => self.play_to_caller(now, id, clip, false),
                    None => self.queue_music(now, id),
                }
            }
            Target::Menu(name) => {
                let session = ivr::Session::start(&plan.menus, &name, now, wall);
                h.stage = Stage::Ivr(Box::new(session));
                self.drive_ivr(now, id, hops);
            }
            Target::User(user) => {
                h.stage = Stage::Dialling;
                self.dial(id, &user);
            }
            Target::Hangup => self.leave_with(now, id, &["goodbye".to_owned()]),
        }
    }

    /// Hands call `id` to the ACD in `queue`: its priority raised by the
    /// caller's tier, its last agent for sticky routing.
    fn enqueue(&mut self, now: Instant, id: u64, queue: QueueId) {
        let Some(plan) = self.plan() else { return };
        let key = self.call_key(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let caller = caller_hash(&call.caller_user);
        let Some(h) = call.hosted.as_mut() else {
            return;
        };
        let qc = plan.acd.queue_config(queue);
        let tier = h.contact.as_ref().map_or(0, |c| c.tier.priority());
        let priority = h.priority.unwrap_or(qc.priority).saturating_add(tier);
        let last_agent = h
            .contact
            .as_ref()
            .and_then(|c| c.last_agent.as_deref())
            .and_then(|a| plan.acd.agent(a));
        h.queued_at = Some(now);
        self.tell_acd(acd::Input::Enqueue {
            call: key,
            queue,
            priority,
            caller,
            last_agent,
        });
    }

    /// The CRM's screen pop for call `id` came back (or its time is up:
    /// `None` then): the call is queued now.
    pub(super) fn lookup_answered(
        &mut self,
        now: Instant,
        id: u64,
        contact: Option<Box<crate::crm::Contact>>,
    ) {
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        let Some(queue) = h.pending_enqueue.take() else {
            return;
        };
        if contact.is_some() {
            h.contact = contact;
        }
        if matches!(h.stage, Stage::Queued(_)) {
            self.enqueue(now, id, queue);
        }
    }

    fn play_to_caller(&mut self, now: Instant, id: u64, clip: Clip, looping: bool) {
        if let Some(ma) = self.calls.get(&id).and_then(|c| c.a.media) {
            self.media.play(now, ma, clip, looping);
        }
    }

    /// The queue's music (or silence) while the caller waits.
    fn queue_music(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let Some(ma) = call.a.media else { return };
        match call.hosted.as_ref().and_then(|h| h.music.clone()) {
            Some(m) => {
                self.media.play(now, ma, m, true);
            }
            None => self.media.stop_playing(ma),
        }
    }

    /// Carries out what the call's IVR session wants.
    fn drive_ivr(&mut self, now: Instant, id: u64, hops: u32) {
        let Some(plan) = self.plan() else { return };
        loop {
            let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
                return;
            };
            let Stage::Ivr(s) = &mut h.stage else { return };
            let Some(o) = s.poll_output() else {
                let at = s.poll_timeout();
                if let Some(at) = at {
                    self.out.push_back(CallOutput::Timer {
                        at,
                        key: TimerKey::Hosted(id),
                    });
                }
                return;
            };
            match o {
                IvrOutput::Play(names) => {
                    let ma = self.calls.get(&id).and_then(|c| c.a.media);
                    let played = match (plan.clip(&names), ma) {
                        (Some(clip), Some(ma)) => self.media.play(now, ma, clip, false),
                        _ => false,
                    };
                    if !played {
                        // Nothing to hear: the menu waits for digits now.
                        if let Some(Stage::Ivr(s)) = self
                            .calls
                            .get_mut(&id)
                            .and_then(|c| c.hosted.as_mut())
                            .map(|h| &mut h.stage)
                        {
                            s.handle_prompt_done(&plan.menus, now);
                        }
                    }
                }
                IvrOutput::StopPlaying => {
                    if let Some(ma) = self.calls.get(&id).and_then(|c| c.a.media) {
                        self.media.stop_playing(ma);
                    }
                }
                IvrOutput::Data { key, value } => h.data.push((key, value)),
                IvrOutput::Priority(p) => h.priority = Some(p),
                IvrOutput::Done(route) => {
                    if let Stage::Ivr(s) = &h.stage {
                        let here = format!("ivr:{}", s.menu());
                        if h.path.last() != Some(&here) {
                            h.path.push(here);
                        }
                    }
                    if hops < 16 {
                        self.enter(now, id, route, hops + 1);
                    } else {
                        self.end_call(now, id, EndCause::Normal, Side::System, None);
                    }
                    return;
                }
            }
        }
    }

    /// A digit from the caller of hosted call `id`.
    pub(super) fn hosted_digit(&mut self, now: Instant, id: u64, digit: char) {
        let Some(plan) = self.plan() else { return };
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        match &mut h.stage {
            Stage::Ivr(s) => {
                s.handle_digit(&plan.menus, now, digit);
                self.drive_ivr(now, id, 0);
            }
            Stage::Queued(q) if plan.acd.queue_config(*q).callback_key == Some(digit) => {
                self.park(now, id);
            }
            _ => {}
        }
    }

    /// The queued caller of call `id` asked for a callback: the ACD keeps
    /// its place, the caller hears the confirmation and is hung up.
    fn park(&mut self, now: Instant, id: u64) {
        let key = self.call_key(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(h) = call.hosted.as_mut() else {
            return;
        };
        let origin = &h.origin;
        let parked = Parked {
            target: dialog::contact_uri(origin)
                .unwrap_or_else(|| format!("sip:{}@{}", call.caller_user, call.a.dialog.peer.addr)),
            peer: call.a.dialog.peer,
            party: format!("<{}>", text(&origin.from.uri.raw)),
            caller_user: call.caller_user.clone(),
            dialled: call.dialled.clone(),
            origin: origin.clone(),
            data: h.data.clone(),
            path: h.path.clone(),
            music: h.music.clone(),
        };
        // Rings already going stop; the ACD hears of them as usual.
        let legs: Vec<u16> = h.offers.iter().flat_map(|o| o.legs.clone()).collect();
        h.stage = Stage::CallbackBye(Box::new(parked));
        for leg in legs {
            self.cancel_b(now, id, leg);
        }
        self.tell_acd(acd::Input::Callback { call: key });
        let played = match (
            self.plan().and_then(|p| p.prompts.get("callback_ok")),
            self.calls.get(&id).and_then(|c| c.a.media),
        ) {
            (Some(clip), Some(ma)) => self.media.play(now, ma, clip, false),
            _ => false,
        };
        if !played {
            self.end_call(now, id, EndCause::Normal, Side::System, None);
        }
    }

    /// The ACD reserved `agent` for parked customer `id`: call them back
    /// (a new call with the same id, so the ACD's key still names it).
    fn call_back(&mut self, now: Instant, id: u64, agent: AgentId) -> bool {
        let Some(p) = self.parked.remove(&id) else {
            return false;
        };
        if self.calls.contains_key(&id) {
            return false;
        }
        let (Some(ma), Some(mb)) = (self.open_media(now, id), self.open_media(now, id)) else {
            self.media.close_legs_of(id);
            return false;
        };
        let Ok(offer) = self.media.offer_locally(ma) else {
            self.media.close_legs_of(id);
            return false;
        };
        let domain = self.cfg.domain.clone();
        let dialog = Dialog {
            call_id: self.ids.call_id(&domain),
            local_tag: self.ids.tag(),
            local_party: format!("<sip:{}@{domain}>", p.dialled),
            remote_party: p.party.clone(),
            remote_tag: None,
            local_seq: 0,
            remote_seq: None,
            remote_target: p.target.clone(),
            route_set: Vec::new(),
            peer: p.peer,
        };
        let a = self.invite_a_leg(now, id, dialog, &[], offer);
        let mut path = p.path;
        path.push("callback".into());
        let mut hosted = Hosted::new(p.origin, Stage::CallingBack(agent));
        hosted.data = p.data;
        hosted.music = p.music;
        hosted.path = path;
        let call = Call {
            hosted: Some(Box::new(hosted)),
            ..Call::new(a, p.dialled, p.caller_user, now, (ma, mb))
        };
        self.calls.insert(id, Box::new(call));
        self.counters.calls_active.set(self.calls.len() as u64);
        true
    }

    /// Sends our INVITE with `offer` opening the A leg of new call `id`
    /// (a callback's customer, a click-to-dial agent): the leg to keep.
    pub(super) fn invite_a_leg(
        &mut self,
        now: Instant,
        id: u64,
        dialog: Dialog,
        headers: &[(&str, &str)],
        offer: Bytes,
    ) -> Leg {
        self.send_invite(
            now,
            dialog.clone(),
            Purpose::Callback { call: id },
            70,
            headers,
            Some("application/sdp"),
            &offer,
        );
        self.dialogs
            .insert(dialog.local_tag.clone(), (id, LegId::A));
        let mut a = Leg::new(dialog);
        a.dialog.local_seq = 1;
        a.invite_busy = true;
        a.last_sdp = Some(("application/sdp".into(), offer));
        a
    }

    /// The customer called back answered (or not).
    pub(super) fn callback_response(
        &mut self,
        now: Instant,
        id: u64,
        tid: u64,
        msg: &Message,
        status: u16,
    ) {
        if status < 200 {
            return;
        }
        if status >= 300 {
            self.callback_failed(now, id, status);
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            self.ack_and_bye(now, tid, msg);
            return;
        };
        let (agent, dest) = match call.hosted.as_ref().map(|h| &h.stage) {
            Some(Stage::CallingBack(agent)) => (*agent, None),
            Some(Stage::ClickToDial(agent, dest)) => (*agent, Some(dest.clone())),
            _ => {
                // A retransmitted 2xx: our ACK again.
                if let Some(ack) = call.a.last_ack.clone() {
                    let peer = call.a.dialog.peer;
                    self.out.push_back(CallOutput::Transmit { peer, data: ack });
                }
                return;
            }
        };
        call.a.dialog.learn_from_response(msg);
        call.a.invite_busy = false;
        let ack = build_ack(
            &self.cfg,
            &mut self.ids,
            &call.a.dialog,
            msg.cseq.seq,
            b"",
            None,
        );
        call.a.last_ack = Some(ack.clone());
        let peer = call.a.dialog.peer;
        self.counters.requests_out[Method::Ack.counter_index()].bump();
        self.out.push_back(CallOutput::Transmit { peer, data: ack });
        call.answered = Some(now);
        self.counters.calls_answered.bump();
        let ma = call.a.media;
        if let Some(h) = call.hosted.as_mut() {
            h.stage = Stage::Dialling;
        }
        let user = self
            .plan()
            .map(|p| p.acd.agent_name(agent).to_owned())
            .unwrap_or_default();
        if let Some(ma) = ma {
            if let Err(e) = self.media.accept_local_answer(ma, &msg.body) {
                tracing::debug!(error = %e, "callback answer unusable");
            }
            self.media.arm(now, ma);
        }
        self.queue_music(now, id);
        match dest {
            None => self.pending_dials.push((id, user, Some(agent))),
            Some(Dest::User(u)) => self.pending_dials.push((id, u, None)),
            Some(Dest::Uri { uri, user, addr }) => {
                let peer = Peer {
                    link: crate::sip::endpoint::Link::Udp {
                        listen: self.udp_listen(),
                    },
                    addr,
                };
                if !self.dial_contacts(now, id, &user, None, &[(uri, peer)]) {
                    self.leave_with(now, id, &["goodbye".to_owned()]);
                }
            }
        }
        self.done(tid);
    }

    /// The first UDP listen address (click-to-dial to a URI goes out there).
    fn udp_listen(&self) -> u16 {
        self.cfg
            .local
            .listen
            .iter()
            .position(|(_, tcp)| !tcp)
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(0)
    }

    /// The customer called back did not answer: the callback ends.
    pub(super) fn callback_failed(&mut self, now: Instant, id: u64, status: u16) {
        let key = self.call_key(id);
        let agent = match self
            .calls
            .get(&id)
            .and_then(|c| c.hosted.as_ref())
            .map(|h| &h.stage)
        {
            Some(Stage::CallingBack(agent)) => *agent,
            Some(Stage::ClickToDial(..)) => {
                // The agent's own phone did not answer: nothing to tell the
                // ACD but that the agent is free again (at the call's end).
                self.end_call(now, id, EndCause::Failed(status), Side::Caller, None);
                return;
            }
            _ => return,
        };
        if let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) {
            h.stage = Stage::Leaving;
        }
        self.tell_acd(acd::Input::RingResult {
            call: key,
            agent,
            outcome: outcome(status),
        });
        self.end_call(now, id, EndCause::Failed(status), Side::Caller, None);
    }

    /// A prompt to the caller of hosted call `id` ended.
    pub(super) fn hosted_play_done(&mut self, now: Instant, id: u64) {
        let Some(plan) = self.plan() else { return };
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        match &mut h.stage {
            Stage::Ivr(s) => {
                s.handle_prompt_done(&plan.menus, now);
                self.drive_ivr(now, id, 0);
            }
            Stage::Queued(_) | Stage::Dialling => self.queue_music(now, id),
            Stage::Leaving | Stage::CallbackBye(_) => {
                self.end_call(now, id, EndCause::Normal, Side::System, None)
            }
            Stage::CallingBack(_) | Stage::ClickToDial(..) | Stage::Connected => {}
        }
    }

    /// The IVR's timer for call `id`.
    pub(super) fn hosted_timer(&mut self, now: Instant, id: u64) {
        let Some(plan) = self.plan() else { return };
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        if h.pending_enqueue.is_some() {
            // The CRM did not answer in time: queued without a screen pop.
            self.lookup_answered(now, id, None);
            return;
        }
        if let Stage::Ivr(s) = &mut h.stage {
            s.handle_timeout(&plan.menus, now);
            self.drive_ivr(now, id, 0);
        }
    }

    /// A decision of the ACD about one of this shard's calls.
    pub fn handle_acd(&mut self, now: Instant, out: acd::Output, location: &LocationService) {
        self.acd_output(now, out, location);
        // An announcement or a goodbye may have started a prompt.
        self.arm_media_tick(now);
    }

    fn acd_output(&mut self, now: Instant, out: acd::Output, location: &LocationService) {
        let Some(plan) = self.plan() else { return };
        match out {
            acd::Output::Offer { call, agent, .. } => {
                let (_, id) = Self::split_key(call);
                let queued = self
                    .calls
                    .get(&id)
                    .and_then(|c| c.hosted.as_ref())
                    .is_some_and(|h| matches!(h.stage, Stage::Queued(_)));
                if !queued {
                    // Gone or connected meanwhile: the offer ends at once.
                    self.tell_acd(acd::Input::RingResult {
                        call,
                        agent,
                        outcome: RingOutcome::Cancelled,
                    });
                    return;
                }
                let user = plan.acd.agent_name(agent).to_owned();
                if !self.dial_at(now, id, &user, Some(agent), location) {
                    self.tell_acd(acd::Input::RingResult {
                        call,
                        agent,
                        outcome: RingOutcome::Failed,
                    });
                } else if let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) {
                    h.offered_at.get_or_insert(now);
                    let kind = crate::cti::event::CallEventKind::Offered {
                        wait_ms: h
                            .queued_at
                            .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                        contact: h.contact.clone(),
                    };
                    self.emit(now, id, kind);
                }
            }
            acd::Output::Cancel { call, agent } => {
                let (_, id) = Self::split_key(call);
                let legs: Vec<u16> = self
                    .calls
                    .get(&id)
                    .and_then(|c| c.hosted.as_ref())
                    .and_then(|h| h.offers.iter().find(|o| o.agent == agent && !o.reported))
                    .map(|o| o.legs.clone())
                    .unwrap_or_default();
                for leg in legs {
                    self.cancel_b(now, id, leg);
                }
            }
            acd::Output::Announce {
                call,
                position,
                wait,
            } => {
                let (_, id) = Self::split_key(call);
                let mut names = vec!["position".to_owned(), number(position)];
                let minutes = wait.as_secs().div_ceil(60);
                names.push("wait".to_owned());
                if minutes <= 1 {
                    names.push("less_than_a_minute".to_owned());
                } else {
                    names.push(number(minutes as u32));
                    names.push("minutes".to_owned());
                }
                if let Some(clip) = plan.clip(&names) {
                    self.play_to_caller(now, id, clip, false);
                }
            }
            acd::Output::Route { call, route, .. } => {
                let (_, id) = Self::split_key(call);
                if let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut())
                    && matches!(h.stage, Stage::Queued(_))
                {
                    // Leaving the queue: any ring still going is stopped.
                    let legs: Vec<u16> = h.offers.iter().flat_map(|o| o.legs.clone()).collect();
                    for leg in legs {
                        self.cancel_b(now, id, leg);
                    }
                    self.enter(now, id, route, 0);
                }
            }
            acd::Output::CallBack { call, agent, .. } => {
                let (_, id) = Self::split_key(call);
                if !self.call_back(now, id, agent) {
                    self.tell_acd(acd::Input::RingResult {
                        call,
                        agent,
                        outcome: RingOutcome::Failed,
                    });
                }
            }
            acd::Output::AgentState { .. } => {}
        }
    }

    /// Rings `user`'s registered phones for hosted call `id` (an agent's
    /// offer when `agent` is set). False when nobody is registered.
    fn dial_at(
        &mut self,
        now: Instant,
        id: u64,
        user: &str,
        agent: Option<AgentId>,
        location: &LocationService,
    ) -> bool {
        let contacts: Vec<(String, Peer)> = location
            .lookup(now, user)
            .take(MAX_FORKS)
            .map(|c| {
                (
                    c.uri.clone(),
                    Peer {
                        link: c.link,
                        addr: c.source,
                    },
                )
            })
            .collect();
        self.dial_contacts(now, id, user, agent, &contacts)
    }

    /// Rings `contacts` (target URI, where to send) for hosted call `id`,
    /// as `user`. False when there is none or the call cannot ring.
    fn dial_contacts(
        &mut self,
        now: Instant,
        id: u64,
        user: &str,
        agent: Option<AgentId>,
        contacts: &[(String, Peer)],
    ) -> bool {
        if contacts.is_empty() {
            return false;
        }
        let Some(mut call) = self.calls.remove(&id) else {
            return false;
        };
        let (Some(ma), Some(&mb)) = (call.a.media, call.media.get(1)) else {
            self.calls.insert(id, call);
            return false;
        };
        let Ok(offer) = self.media.offer_onward(ma, mb) else {
            self.calls.insert(id, call);
            return false;
        };
        let Some(origin) = call.hosted.as_ref().map(|h| h.origin.clone()) else {
            self.calls.insert(id, call);
            return false;
        };
        let first = call.b.len() as u16;
        let max_forwards = origin.max_forwards.unwrap_or(70).saturating_sub(1);
        for (uri, peer) in contacts {
            self.fork(
                now,
                id,
                &mut call,
                &origin,
                (Some("application/sdp".into()), offer.clone()),
                user,
                uri,
                *peer,
                max_forwards,
            );
        }
        let legs = (first..call.b.len() as u16).collect();
        if let (Some(h), Some(agent)) = (call.hosted.as_mut(), agent) {
            h.offers.push(Offer {
                agent,
                legs,
                reported: false,
            });
        }
        self.calls.insert(id, call);
        true
    }

    /// A route to `user:ID` from a hosted call: rung at the end of the
    /// current input, when the location service is at hand
    /// ([`B2bua::dial_pending`]).
    fn dial(&mut self, id: u64, user: &str) {
        self.pending_dials.push((id, user.to_owned(), None));
    }

    /// Rings the users that hosted calls were routed to.
    pub fn dial_pending(&mut self, now: Instant, location: &LocationService) {
        for (id, user, agent) in std::mem::take(&mut self.pending_dials) {
            if !self.dial_at(now, id, &user, agent, location) {
                if let Some(agent) = agent {
                    let call = self.call_key(id);
                    self.tell_acd(acd::Input::RingResult {
                        call,
                        agent,
                        outcome: RingOutcome::Failed,
                    });
                }
                self.leave_with(now, id, &["goodbye".to_owned()]);
            }
        }
    }

    /// The wall clock at `now`, in seconds since the Unix epoch.
    fn wall_unix_s(&self, now: Instant) -> i64 {
        self.cfg.media.wall.map_or(0, |(at, ms)| {
            let ms = if now >= at {
                ms + (now - at).as_millis() as u64
            } else {
                ms.saturating_sub((at - now).as_millis() as u64)
            };
            (ms / 1000) as i64
        })
    }

    /// A hosted call's phone answered (B leg `leg`): bridge it to the
    /// caller.
    pub(super) fn hosted_answered(&mut self, now: Instant, id: u64, leg: u16, answer: &[u8]) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let b_media = call.b.get(usize::from(leg)).and_then(|b| b.leg.media);
        if let (Some(a), Some(b)) = (call.a.media, b_media)
            && let Err(e) = self.media.bridge_answer(now, b, a, answer)
        {
            tracing::debug!(error = %e, "agent's answer cannot be bridged");
        }
        let key = self.call_key(id);
        let Some(h) = self.calls.get_mut(&id).and_then(|c| c.hosted.as_mut()) else {
            return;
        };
        h.stage = Stage::Connected;
        h.connected_at.get_or_insert(now);
        let mut results = Vec::new();
        for o in &mut h.offers {
            if o.reported {
                continue;
            }
            if o.legs.contains(&leg) {
                o.reported = true;
                h.agent = Some(o.agent);
                results.push((o.agent, RingOutcome::Answered));
            }
        }
        for (agent, outcome) in results {
            self.tell_acd(acd::Input::RingResult {
                call: key,
                agent,
                outcome,
            });
        }
    }

    /// B leg `leg` of hosted call `id` ended without connecting: once all
    /// phones of its offer have, the ACD hears how the ring ended.
    pub(super) fn hosted_leg_failed(&mut self, now: Instant, id: u64, leg: u16, status: u16) {
        let key = self.call_key(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(b) = call.b.get_mut(usize::from(leg)) {
            b.state = BState::Done;
            b.status.get_or_insert(status);
        }
        let done = |l: &u16| {
            call.b
                .get(usize::from(*l))
                .is_none_or(|b| b.state == BState::Done)
        };
        let mut results = Vec::new();
        let Some(h) = call.hosted.as_mut() else {
            return;
        };
        for o in &mut h.offers {
            if !o.reported && o.legs.contains(&leg) && o.legs.iter().all(done) {
                o.reported = true;
                results.push(o.agent);
            }
        }
        let dialling = matches!(h.stage, Stage::Dialling)
            && call.b.iter().all(|b| b.state == BState::Done || b.transfer);
        for agent in results {
            self.tell_acd(acd::Input::RingResult {
                call: key,
                agent,
                outcome: outcome(status),
            });
        }
        if dialling {
            self.leave_with(now, id, &["goodbye".to_owned()]);
        }
    }

    /// Hosted call `call` ends: the ACD hears of it.
    pub(super) fn hosted_ended(&mut self, id: u64, h: &mut Hosted) {
        let key = self.call_key(id);
        if let Some(agent) = h.busy_agent.take() {
            self.tell_acd(acd::Input::Agent {
                agent,
                op: AgentOp::Busy(false),
            });
        }
        match &h.stage {
            Stage::CallbackBye(_) => {
                if let Stage::CallbackBye(p) = std::mem::replace(&mut h.stage, Stage::Leaving) {
                    self.parked.insert(id, p);
                }
            }
            Stage::CallingBack(agent) => {
                self.tell_acd(acd::Input::RingResult {
                    call: key,
                    agent: *agent,
                    outcome: RingOutcome::Cancelled,
                });
            }
            Stage::Queued(_) | Stage::Dialling => {
                if matches!(h.stage, Stage::Queued(_)) {
                    self.tell_acd(acd::Input::Leave { call: key });
                }
                for o in h.offers.iter().filter(|o| !o.reported) {
                    self.tell_acd(acd::Input::RingResult {
                        call: key,
                        agent: o.agent,
                        outcome: RingOutcome::Cancelled,
                    });
                }
            }
            Stage::Connected => {
                if let Some(agent) = h.agent {
                    self.tell_acd(acd::Input::CallEnded { call: key, agent });
                }
            }
            _ => {}
        }
    }

    /// A request from a hosted caller not connected to anyone, or from a
    /// party of a conference (leg `leg`): answered here (a re-offer gets
    /// our description again).
    pub(super) fn hosted_request(
        &mut self,
        now: Instant,
        id: u64,
        leg: LegId,
        stx: u64,
        peer: Peer,
        msg: Message,
    ) {
        let Some(l) = self.calls.get(&id).and_then(|c| c.leg(leg)) else {
            return;
        };
        let Some(ma) = l.media else { return };
        let method = msg.method().clone();
        let (ct, body) = body_of(&msg);
        let offer = matches!(method, Method::Invite | Method::Update)
            && !body.is_empty()
            && ct.as_deref().is_some_and(is_sdp);
        let answer = if offer {
            match self.media.answer_locally(ma, &body) {
                Ok(a) => Some(a),
                Err(e) => {
                    let tag = l.dialog.local_tag.clone();
                    self.refuse_sdp(now, stx, &msg, peer, &tag, &e.to_string());
                    return;
                }
            }
        } else if method == Method::Invite {
            l.last_sdp.as_ref().map(|(_, b)| b.clone())
        } else {
            None
        };
        let contact = self.cfg.local.contact(peer.link);
        let mut headers = vec![("Contact", contact.as_str())];
        if answer.is_some() {
            headers.push(("Content-Type", "application/sdp"));
        }
        let body = answer.unwrap_or_default();
        let data = self.reply(
            stx,
            &msg,
            peer,
            Reply::new(200).headers(&headers).body(&body),
        );
        if let Some(l) = self.calls.get_mut(&id).and_then(|c| c.leg_mut(leg))
            && !body.is_empty()
        {
            l.last_sdp = Some(("application/sdp".into(), body));
        }
        if method == Method::Invite {
            self.start_ack_wait(now, id, leg, data);
        }
        if matches!(method, Method::Invite | Method::Update) {
            self.arm_session(now, id, leg);
        }
    }
}

/// The caller's CRM record from the built-in directory: the account the
/// caller entered in the IVR (`account` data) first — a customer may call
/// from someone else's phone — then the number: P-Asserted-Identity's
/// user part, else From's, normalized to E.164.
fn screen_pop(
    plan: &ContactPlan,
    origin: &Message,
    data: &[(String, String)],
) -> Option<crate::crm::Contact> {
    let dir = plan.directory.as_ref()?;
    if let Some((_, account)) = data.iter().rev().find(|(k, _)| k == "account")
        && let Some(c) = dir.lookup_account(account)
    {
        return Some(c.clone());
    }
    let pai = origin
        .other_header("P-Asserted-Identity")
        .and_then(|v| crate::sip::grammar::parse_name_addr(v, v).ok())
        .map(|na| na.uri.user_text());
    let from = text(&origin.from.uri.user);
    pai.iter()
        .chain(std::iter::once(&from))
        .find_map(|n| dir.lookup_number(n))
        .cloned()
}

/// The caller's number for a CRM lookup: P-Asserted-Identity's user part
/// if it normalizes to E.164, else From's.
fn caller_number(origin: &Message) -> Option<String> {
    let pai = origin
        .other_header("P-Asserted-Identity")
        .and_then(|v| crate::sip::grammar::parse_name_addr(v, v).ok())
        .map(|na| na.uri.user_text());
    let from = text(&origin.from.uri.user);
    pai.into_iter()
        .chain(std::iter::once(from))
        .find_map(|n| crate::crm::E164::normalize(&n))
        .map(|e| e.as_str().to_owned())
}

/// The prompt saying `n` (numbers above ten are said as "ten").
fn number(n: u32) -> String {
    format!("n{}", n.min(10))
}

/// How a hosted call starts.
pub(super) enum HostedEntry {
    Route(Route),
    Feature(AgentId, AgentOp, &'static str),
}

/// Whether a hosted call is waiting for an agent or a phone (its A leg
/// is ours alone).
pub(super) fn unconnected(call: &Call) -> bool {
    call.hosted
        .as_ref()
        .is_some_and(|h| !matches!(h.stage, Stage::Connected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_codes_name_their_operation_and_reason() {
        let cc = ContactCenter::default();
        assert_eq!(feature(&cc, "*71").map(|f| f.0), Some(AgentOp::Login));
        assert_eq!(
            feature(&cc, "*742").map(|f| f.0),
            Some(AgentOp::NotReady { reason: 2 })
        );
        assert_eq!(feature(&cc, "*74x"), None);
        assert_eq!(feature(&cc, "200"), None);
    }

    #[test]
    fn caller_hash_ignores_formatting() {
        assert_eq!(caller_hash("+81-50-1234"), caller_hash("81501234"));
        assert_ne!(caller_hash("1001"), caller_hash("1002"));
    }
}
