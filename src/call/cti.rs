//! CTI on the call engine: the events a call's life produces for the
//! control plane ([`crate::cti::event::CallEvent`]) and the commands it
//! carries out ([`crate::cti::event::CallCommand`]).
//!
//! Events leave through [`CallOutput::Cti`] in the order things happen on
//! the call's shard, so a client sees a call's events in order. Every
//! command gets exactly one [`CallReply`].
//!
//! * `call.hangup` ends the call (BYE to every connected leg);
//! * `call.hold` plays the hold music (`media.hold_music`) to the far end —
//!   the customer — and re-INVITEs the agent's phone with `a=inactive`;
//!   `call.retrieve` stops the music and re-INVITEs with `a=sendrecv`;
//! * `call.transfer` moves the customer to a user (RFC 3725 flow I, like a
//!   REFER) and hangs the agent up once the target is connected;
//! * `call.set_data` attaches key/value data (events, the record);
//! * `call.send_dtmf` plays the digits in-band (ITU-T Q.23 tones) to the
//!   far end;
//! * `call.record` pauses or resumes the call's recording;
//! * `call.make` (click-to-dial) rings the agent's phone asking it to
//!   answer at once (`Call-Info: answer-after=0`), then the customer — a
//!   user, or a `sip:` URI with an IP address;
//! * `call.consult` rings a user for the agent while the customer holds;
//!   `call.transfer_complete` hands the customer over,
//!   `call.consult_cancel` gives up, and `call.conference` joins all three
//!   in a conference mixed on the shard (`crate::media::conference`). A
//!   party who hangs up leaves it and the others talk on; the agent
//!   leaving frees them for wrap-up, as a transfer does; the customer
//!   hanging up ends the call for all.

use super::hosted::Dest;
use super::*;
use crate::acd::CallKey;
use crate::cti::event::{CallCommand, CallEvent, CallEventKind, CallOp, CallReply, ToControl};
use crate::cti::proto::{Data, ErrorCode, ProtoError, RecordAction};

/// A consultation: the agent talks to B leg `leg` while the customer
/// holds (`call.consult`), until `call.transfer_complete` or
/// `call.consult_cancel`. Its CTI id is the call's plus `-c<n>`, with the
/// call as its parent.
#[derive(Debug, Clone)]
pub(super) struct Consult {
    leg: u16,
    n: u32,
    target: String,
    answered: bool,
    rang: bool,
}

impl Consult {
    /// Its B leg.
    pub(super) fn leg(&self) -> u16 {
        self.leg
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

/// The call's consultation, once the consulted party answered; `none`
/// is the error's message when there is no consultation.
fn answered_consult(call: &Call, none: &str) -> Result<Consult, ProtoError> {
    let Some(c) = call.consult.clone() else {
        return Err(err(ErrorCode::InvalidState, none));
    };
    if !c.answered {
        return Err(err(
            ErrorCode::InvalidState,
            "the consulted party has not answered (call.consult_cancel to give up)",
        ));
    }
    Ok(c)
}

/// The error of a command a conference does not take (hold, transfer,
/// consult).
fn not_conferenced(call: &Call) -> Result<(), ProtoError> {
    match call.conference {
        Some(_) => Err(err(
            ErrorCode::InvalidState,
            "the call is a conference (its parties leave by hanging up; call.hangup ends it)",
        )),
        None => Ok(()),
    }
}

impl B2bua {
    /// Wall-clock unix ms of `t` (0 without a wall clock, in tests).
    pub(super) fn wall_ms(&self, t: Instant) -> i64 {
        self.cfg.media.wall.map_or(0, |(at, ms)| {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            let d = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if t >= at {
                ms.saturating_add(d(t - at))
            } else {
                ms.saturating_sub(d(at - t))
            }
        })
    }

    /// The call's CTI id (= its record id).
    pub(super) fn cti_id(&self, call: &Call) -> String {
        record::record_id(&call.a.dialog.call_id, self.wall_ms(call.started))
    }

    /// The agent (or user) on the appliance's side of the call.
    fn cti_agent(&self, call: &Call) -> Option<String> {
        let hosted = call.hosted.as_ref().and_then(|h| h.agent_id());
        if let (Some(a), Some(plan)) = (hosted, self.plan()) {
            return Some(plan.acd.agent_name(a).to_owned());
        }
        let b = if call.phase == Phase::Answered {
            call.b.get(usize::from(call.peer))
        } else {
            call.b.first()
        };
        b.map(|b| b.user.clone())
    }

    /// Event `kind` about call `id` as it is now.
    pub(super) fn call_event(
        &self,
        now: Instant,
        id: u64,
        call: &Call,
        kind: CallEventKind,
    ) -> CallEvent {
        let queue = call.hosted.as_ref().and_then(|h| {
            h.path
                .iter()
                .rev()
                .find_map(|p| p.strip_prefix("queue:"))
                .map(str::to_owned)
        });
        let mut data = call
            .hosted
            .as_ref()
            .map(|h| h.data.clone())
            .unwrap_or_default();
        data.extend(call.data.iter().cloned());
        CallEvent {
            kind,
            call: self.cti_id(call),
            key: self.call_key(id).0,
            parent: None,
            queue,
            agent: self.cti_agent(call),
            ani: call.caller_user.clone(),
            dnis: call.dialled.clone(),
            data,
            at_ms: self.wall_ms(now),
        }
    }

    /// Tells the control plane `kind` happened to call `id`.
    pub(super) fn emit(&mut self, now: Instant, id: u64, kind: CallEventKind) {
        if let Some(call) = self.calls.get(&id) {
            let e = self.call_event(now, id, call, kind);
            self.push_event(e);
        }
    }

    pub(super) fn push_event(&mut self, e: CallEvent) {
        self.out
            .push_back(CallOutput::Cti(ToControl::Event(Box::new(e))));
    }

    /// A command from the control plane; its reply goes out at once.
    pub fn handle_cti(&mut self, now: Instant, cmd: CallCommand, location: &LocationService) {
        let result = self.cti_command(now, cmd.key, cmd.op, location);
        self.out
            .push_back(CallOutput::Cti(ToControl::Reply(CallReply {
                req: cmd.req,
                result,
            })));
        self.arm_media_tick(now);
    }

    fn cti_command(
        &mut self,
        now: Instant,
        key: u64,
        op: CallOp,
        location: &LocationService,
    ) -> Result<Option<String>, ProtoError> {
        if let CallOp::Make { agent, to, data } = op {
            return self
                .click_to_dial(now, &agent, &to, data, location)
                .map(Some);
        }
        let (_, id) = Self::split_key(CallKey(key));
        if !self.calls.contains_key(&id) {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        }
        match op {
            CallOp::Hangup => {
                self.end_call(now, id, EndCause::Normal, Side::System, None);
                Ok(None)
            }
            CallOp::SetData { data } => {
                self.set_data(now, id, data);
                Ok(None)
            }
            CallOp::Hold => self.cti_hold(now, id, true).map(|()| None),
            CallOp::Retrieve => self.cti_hold(now, id, false).map(|()| None),
            CallOp::Transfer { to } => self.cti_transfer(now, id, to, location).map(|()| None),
            CallOp::Record { action } => {
                let rec = self.calls.get(&id).and_then(|c| c.recording);
                let Some(r) = rec else {
                    return Err(err(
                        ErrorCode::InvalidState,
                        "the call is not being recorded (recording.mode)",
                    ));
                };
                let on = action == RecordAction::Resume;
                self.media.pause_recording(now, r, !on);
                self.emit(now, id, CallEventKind::Recording { on });
                Ok(None)
            }
            CallOp::SendDtmf { digits } => self.send_dtmf(now, id, &digits).map(|()| None),
            CallOp::Answer => self.cti_answer(now, id).map(|()| None),
            CallOp::Consult { to } => self.cti_consult(now, id, to, location).map(|()| None),
            CallOp::ConsultComplete => self.consult_complete(now, id).map(|()| None),
            CallOp::ConsultCancel => self.consult_cancel(now, id).map(|()| None),
            CallOp::Conference => self.cti_conference(now, id).map(|()| None),
            CallOp::Contact(c) => {
                self.lookup_answered(now, id, c);
                Ok(None)
            }
            CallOp::Make { .. } => Ok(None),
        }
    }

    /// Merges `data` into the call's attached data (a key given again
    /// replaces its value).
    fn set_data(&mut self, now: Instant, id: u64, data: Data) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        for (k, v) in data {
            match call.data.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => call.data.push((k, v)),
            }
        }
        self.emit(now, id, CallEventKind::DataSet);
    }

    /// Connected call `id`, its agent's leg and the far end's; the error
    /// a command gets when it has ended or is not connected.
    fn connected(&self, id: u64) -> Result<(&Call, LegId, LegId), ProtoError> {
        let Some(call) = self.calls.get(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        if call.phase != Phase::Answered {
            return Err(err(ErrorCode::InvalidState, "the call is not connected"));
        }
        let b = LegId::B(call.peer);
        Ok(if call.a_is_agent {
            (call, LegId::A, b)
        } else {
            (call, b, LegId::A)
        })
    }

    fn cti_hold(&mut self, now: Instant, id: u64, on: bool) -> Result<(), ProtoError> {
        let (call, agent, far) = self.connected(id)?;
        not_conferenced(call)?;
        if call.consult.is_some() {
            return Err(err(
                ErrorCode::InvalidState,
                "a consultation is in progress (call.consult_cancel or call.transfer_complete)",
            ));
        }
        if call.held == on {
            return Err(err(
                ErrorCode::InvalidState,
                if on {
                    "the call is already held"
                } else {
                    "the call is not held"
                },
            ));
        }
        if call.transfer.is_some() {
            return Err(err(ErrorCode::InvalidState, "a transfer is in progress"));
        }
        let Some(l) = call.leg(agent) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        if l.invite_busy {
            return Err(err(
                ErrorCode::InvalidState,
                "a re-INVITE is in progress on the agent's leg; try again",
            ));
        }
        let Some((ct, sdp)) = l.last_sdp.clone() else {
            return Err(err(
                ErrorCode::InvalidState,
                "no session description to re-offer on the agent's leg",
            ));
        };
        let far_media = call.leg(far).and_then(|l| l.media);
        let body = with_direction(&sdp, if on { "inactive" } else { "sendrecv" });
        if let Some(c) = self.calls.get_mut(&id) {
            if on {
                c.held = true;
                c.held_since = Some(now);
            } else {
                c.unhold(now);
            }
            if let Some(l) = c.leg_mut(agent) {
                l.last_sdp = Some((ct.clone(), body.clone()));
                l.invite_busy = true;
            }
        }
        if let Some(m) = far_media {
            match self.cfg.media.hold_music.clone() {
                Some(music) if on => {
                    self.media.play(now, m, music, true);
                }
                _ => self.media.stop_playing(m),
            }
        }
        self.send_in_dialog(
            now,
            id,
            agent,
            Method::Invite,
            &[("Supported", SUPPORTED)],
            Some(&ct),
            &body,
            Purpose::Refresh {
                call: id,
                leg: agent,
            },
        );
        self.emit(
            now,
            id,
            if on {
                CallEventKind::Held
            } else {
                CallEventKind::Retrieved
            },
        );
        Ok(())
    }

    fn cti_transfer(
        &mut self,
        now: Instant,
        id: u64,
        to: String,
        location: &LocationService,
    ) -> Result<(), ProtoError> {
        let (call, agent, far) = self.connected(id)?;
        not_conferenced(call)?;
        if far != LegId::A {
            return Err(err(
                ErrorCode::Unsupported,
                "a click-to-dial call cannot be transferred in this release",
            ));
        }
        if call.transfer.is_some() {
            return Err(err(ErrorCode::InvalidState, "a transfer is in progress"));
        }
        if call.held {
            return Err(err(ErrorCode::InvalidState, "retrieve the call first"));
        }
        match self.start_transfer(now, id, agent, far, to, false, location) {
            Ok(idx) => {
                self.send_transfer_invite(now, id, idx);
                Ok(())
            }
            Err((404, _)) => Err(err(ErrorCode::NotFound, "no such user to transfer to")),
            Err((480, _)) => Err(err(
                ErrorCode::InvalidState,
                "the transfer target's phone is not registered",
            )),
            Err((_, reason)) => Err(err(ErrorCode::Unavailable, reason)),
        }
    }

    /// `call.send_dtmf`: the digits as in-band tones (ITU-T Q.23, 100 ms
    /// each with 60 ms gaps) to the far end, in place of the agent's voice
    /// while they play.
    fn send_dtmf(&mut self, now: Instant, id: u64, digits: &str) -> Result<(), ProtoError> {
        let (call, _, far) = self.connected(id)?;
        if call.held {
            return Err(err(ErrorCode::InvalidState, "retrieve the call first"));
        }
        let Some(m) = call.leg(far).and_then(|l| l.media) else {
            return Err(err(ErrorCode::InvalidState, "the far end has no media"));
        };
        let clip =
            dtmf_clip(digits).ok_or_else(|| err(ErrorCode::BadRequest, "not DTMF digits"))?;
        if !self.media.play(now, m, clip, false) {
            return Err(err(
                ErrorCode::InvalidState,
                "the far end's media is not set up (no codec agreed yet)",
            ));
        }
        Ok(())
    }

    /// A CTI transfer connected the caller to B leg `target`: the agent's
    /// leg (`referrer`) is hung up, and the ACD hears the agent is free.
    pub(super) fn transfer_done(&mut self, now: Instant, id: u64, referrer: LegId, target: u16) {
        if let LegId::B(i) = referrer {
            self.drop_leg(now, id, i);
        }
        let key = self.call_key(id);
        let freed = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.hosted.as_mut())
            .and_then(|h| h.release_agent());
        if let Some(agent) = freed {
            self.tell_acd(crate::acd::Input::CallEnded { call: key, agent });
        }
        let to = self
            .calls
            .get(&id)
            .and_then(|c| c.b.get(usize::from(target)))
            .map(|b| b.user.clone())
            .unwrap_or_default();
        self.emit(now, id, CallEventKind::Transferred { to });
    }

    /// A CTI transfer failed: the caller stays with the agent.
    pub(super) fn transfer_abandoned(
        &mut self,
        _now: Instant,
        id: u64,
        _referrer: LegId,
        status: u16,
    ) {
        tracing::info!(
            call = id,
            status,
            "cti transfer failed; the call stays with the agent"
        );
    }

    /// `call.answer`: the agent's ringing phones are asked to answer by
    /// themselves — each ringing INVITE is CANCELled and sent again (same
    /// Call-ID, next CSeq) with `Call-Info: answer-after=0`, which phones
    /// that support auto-answer obey. The ACD's ring goes on meanwhile.
    fn cti_answer(&mut self, now: Instant, id: u64) -> Result<(), ProtoError> {
        let Some(call) = self.calls.get(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        if call.phase == Phase::Answered {
            return Err(err(ErrorCode::InvalidState, "the call is answered already"));
        }
        let Some(origin) = call.hosted.as_ref().map(|h| h.origin.clone()) else {
            return Err(err(
                ErrorCode::Unsupported,
                "call.answer applies to calls the appliance offers to agents (queue calls)",
            ));
        };
        let ringing: Vec<u16> = call
            .b
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                matches!(b.state, BState::Trying | BState::Early) && !b.transfer && !b.consult
            })
            .map(|(i, _)| i as u16)
            .collect();
        if ringing.is_empty() {
            return Err(err(
                ErrorCode::InvalidState,
                "no phone is ringing for the call",
            ));
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        call.auto_answer = true;
        for &old in &ringing {
            if let Some(b) = call.b.get_mut(usize::from(old)) {
                b.reoffer = true;
            }
        }
        // Each one is sent again once its CANCEL has ended it (487), so the
        // phone never sees two INVITEs of one Call-ID at once.
        for old in ringing {
            self.cancel_b(now, id, old);
        }
        let _ = origin;
        Ok(())
    }

    /// B leg `old` of call `id`, cancelled by `call.answer`, ended: its
    /// INVITE goes again (same Call-ID, next CSeq, a new tag) with
    /// `Call-Info: answer-after=0`, ringing for the same offer.
    pub(super) fn reoffer(&mut self, now: Instant, id: u64, old: u16) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let Some(origin) = call.hosted.as_ref().map(|h| h.origin.clone()) else {
            self.calls.insert(id, call);
            return;
        };
        let Some(ob) = call
            .b
            .get(usize::from(old))
            .filter(|_| call.phase == Phase::Setup)
        else {
            self.calls.insert(id, call);
            return;
        };
        let headers = self.b_invite_headers(&call, &origin);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let max_forwards = origin.max_forwards.unwrap_or(70).saturating_sub(1);
        let mut d = ob.leg.dialog.clone();
        d.local_tag = self.ids.tag();
        d.remote_tag = None;
        let (ct, body) = ob.leg.last_sdp.clone().unzip();
        let body = body.unwrap_or_default();
        let (media, user) = (ob.leg.media, ob.user.clone());
        let idx = self.invite_b_leg(
            now,
            id,
            &mut call,
            d,
            (max_forwards, &headers),
            (ct, body),
            media,
            user,
        );
        if let Some(h) = call.hosted.as_mut() {
            h.ring_instead(old, idx);
        }
        self.calls.insert(id, call);
    }

    /// The CTI id of consultation `n` of call `call`.
    fn consult_id(&self, call: &Call, n: u32) -> String {
        format!("{}-c{n}", self.cti_id(call))
    }

    /// Event `kind` about the consultation of call `id`.
    pub(super) fn consult_event(
        &self,
        now: Instant,
        id: u64,
        call: &Call,
        kind: CallEventKind,
    ) -> Option<CallEvent> {
        let c = call.consult.as_ref()?;
        let mut e = self.call_event(now, id, call, kind);
        e.parent = Some(e.call.clone());
        e.call = self.consult_id(call, c.n);
        e.dnis = c.target.clone();
        Some(e)
    }

    fn emit_consult(&mut self, now: Instant, id: u64, kind: CallEventKind) {
        if let Some(e) = self
            .calls
            .get(&id)
            .and_then(|c| self.consult_event(now, id, c, kind))
        {
            self.push_event(e);
        }
    }

    /// `call.consult`: the customer holds (music), the agent's side rings
    /// user `to` with an offer made for the customer's codecs; once it
    /// answers, the agent talks to it.
    fn cti_consult(
        &mut self,
        now: Instant,
        id: u64,
        to: String,
        location: &LocationService,
    ) -> Result<(), ProtoError> {
        let (call, agent, far) = self.connected(id)?;
        not_conferenced(call)?;
        let (LegId::B(_), LegId::A, Some(h)) = (agent, far, call.hosted.as_ref()) else {
            return Err(err(
                ErrorCode::Unsupported,
                "consultation is offered on queue and IVR calls in this release",
            ));
        };
        if call.transfer.is_some() || call.consult.is_some() || call.held {
            return Err(err(
                ErrorCode::InvalidState,
                "the call is held, transferring or already consulting",
            ));
        }
        let origin = h.origin.clone();
        let Some(ma) = call.a.media else {
            return Err(err(ErrorCode::InvalidState, "the customer has no media"));
        };
        if !self.cfg.users.contains(&to) {
            return Err(err(
                ErrorCode::NotFound,
                format!("no user {to:?} to consult"),
            ));
        }
        let Some(contact) = location.lookup(now, &to).next().cloned() else {
            return Err(err(
                ErrorCode::InvalidState,
                format!("user {to}'s phone is not registered"),
            ));
        };
        let Some(mc) = self.open_media(now, id) else {
            return Err(err(ErrorCode::Unavailable, "no free RTP port"));
        };
        let offer = match self.media.offer_onward(ma, mc) {
            Ok(o) => o,
            Err(e) => {
                self.media.close_leg(mc);
                return Err(err(ErrorCode::InvalidState, e.to_string()));
            }
        };
        let Some(mut call) = self.calls.remove(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        let idx = call.b.len() as u16;
        let peer = Peer {
            link: contact.link,
            addr: contact.source,
        };
        let max_forwards = origin.max_forwards.unwrap_or(70).saturating_sub(1);
        self.fork(
            now,
            id,
            &mut call,
            &origin,
            (Some("application/sdp".into()), offer),
            &to,
            &contact.uri,
            peer,
            max_forwards,
        );
        if let Some(b) = call.b.get_mut(usize::from(idx)) {
            b.consult = true;
            b.leg.media = Some(mc);
        }
        call.media.push(mc);
        call.consults += 1;
        call.consult = Some(Consult {
            leg: idx,
            n: call.consults,
            target: to,
            answered: false,
            rang: false,
        });
        call.held = true;
        call.held_since = Some(now);
        self.calls.insert(id, call);
        if let Some(music) = self.cfg.media.hold_music.clone() {
            self.media.play(now, ma, music, true);
        }
        self.emit(now, id, CallEventKind::Held);
        Ok(())
    }

    /// The consultation target answered (or not).
    pub(super) fn consult_response(
        &mut self,
        now: Instant,
        id: u64,
        leg: u16,
        msg: &Message,
        status: u16,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(b) = call.b.get_mut(usize::from(leg)) else {
            return;
        };
        if status < 200 {
            if b.state == BState::Trying {
                b.state = BState::Early;
            }
            if matches!(status, 180 | 183)
                && let Some(c) = call.consult.as_mut().filter(|c| c.leg == leg && !c.rang)
            {
                c.rang = true;
                self.emit_consult(now, id, CallEventKind::Ringing);
            }
            return;
        }
        if status >= 300 {
            b.state = BState::Done;
            b.status = Some(status);
            b.leg.invite_busy = false;
            let tag = b.leg.dialog.local_tag.clone();
            self.dialogs.remove(&tag);
            if call.consult.as_ref().is_some_and(|c| c.leg == leg) {
                self.consult_end(now, id, format!("failed-{status}"));
            }
            return;
        }
        if b.state == BState::Answered {
            // A retransmitted 2xx: our ACK again.
            if let Some(ack) = b.leg.last_ack.clone() {
                let peer = b.leg.dialog.peer;
                self.out.push_back(CallOutput::Transmit { peer, data: ack });
            }
            return;
        }
        let wanted = b.state != BState::Done && call.consult.as_ref().is_some_and(|c| c.leg == leg);
        b.state = BState::Answered;
        b.status = Some(status);
        b.leg.dialog.learn_from_response(msg);
        b.leg.invite_busy = false;
        let cseq = b.leg.dialog.local_seq;
        let ack = build_ack(&self.cfg, &mut self.ids, &b.leg.dialog, cseq, b"", None);
        b.leg.last_ack = Some(ack.clone());
        let peer = b.leg.dialog.peer;
        self.counters.requests_out[Method::Ack.counter_index()].bump();
        self.out.push_back(CallOutput::Transmit { peer, data: ack });
        if !wanted {
            // Cancelled meanwhile: hang it up.
            let d = b.leg.dialog.clone();
            let mut l = std::mem::replace(&mut b.leg, Leg::new(d));
            b.state = BState::Done;
            self.bye(now, &mut l);
            return;
        }
        let mc = b.leg.media;
        let mb = call.b.get(usize::from(call.peer)).and_then(|b| b.leg.media);
        if let Some(c) = call.consult.as_mut() {
            c.answered = true;
        }
        if let (Some(mb), Some(mc)) = (mb, mc) {
            if let Err(e) = self.media.accept_local_answer(mc, &msg.body) {
                tracing::debug!(error = %e, "consultation answer unusable");
            }
            self.media.arm(now, mc);
            self.media.pair(mb, mc);
        }
        self.emit_consult(now, id, CallEventKind::Established);
    }

    /// The consultation ends (`cause`): the agent talks to the customer
    /// again.
    fn consult_end(&mut self, now: Instant, id: u64, cause: String) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let Some(e) = self.consult_event(now, id, call, CallEventKind::Cleared { cause }) else {
            return;
        };
        self.push_event(e);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.consult = None;
        call.unhold(now);
        let ma = call.a.media;
        let mb = call.b.get(usize::from(call.peer)).and_then(|b| b.leg.media);
        if let (Some(ma), Some(mb)) = (ma, mb) {
            self.media.stop_playing(ma);
            self.media.pair(ma, mb);
        }
        self.emit(now, id, CallEventKind::Retrieved);
    }

    /// The consulted party hung up.
    pub(super) fn consult_hung_up(&mut self, now: Instant, id: u64) {
        self.consult_end(now, id, "normal".into());
    }

    /// Hangs up B leg `leg` of call `id` (a consultation target or the
    /// agent), answered or still ringing.
    fn drop_leg(&mut self, now: Instant, id: u64, leg: u16) {
        let Some(b) = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.b.get_mut(usize::from(leg)))
        else {
            return;
        };
        match b.state {
            BState::Answered => {
                b.state = BState::Done;
                let d = b.leg.dialog.clone();
                let mut l = std::mem::replace(&mut b.leg, Leg::new(d));
                self.bye(now, &mut l);
                let tag = l.dialog.local_tag.clone();
                if let Some(b) = self
                    .calls
                    .get_mut(&id)
                    .and_then(|c| c.b.get_mut(usize::from(leg)))
                {
                    b.leg = l;
                }
                self.dialogs.remove(&tag);
            }
            BState::Trying | BState::Early => self.cancel_b(now, id, leg),
            BState::Done => {}
        }
    }

    /// `call.consult_cancel`: the target is hung up, the agent and the
    /// customer talk again.
    fn consult_cancel(&mut self, now: Instant, id: u64) -> Result<(), ProtoError> {
        let Some(c) = self.calls.get(&id).and_then(|c| c.consult.clone()) else {
            return Err(err(ErrorCode::InvalidState, "no consultation in progress"));
        };
        self.drop_leg(now, id, c.leg);
        self.consult_end(now, id, "consult-cancelled".into());
        Ok(())
    }

    /// `call.transfer_complete`: the customer talks to the consulted party
    /// and the agent is hung up.
    fn consult_complete(&mut self, now: Instant, id: u64) -> Result<(), ProtoError> {
        let Some(call) = self.calls.get(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        let c = answered_consult(call, "no consultation in progress")?;
        let agent_leg = call.peer;
        let ma = call.a.media;
        let mb = call.b.get(usize::from(agent_leg)).and_then(|b| b.leg.media);
        let mc = call.b.get(usize::from(c.leg)).and_then(|b| b.leg.media);
        let cause = "transferred".into();
        self.emit_consult(now, id, CallEventKind::Cleared { cause });
        self.drop_leg(now, id, agent_leg);
        let key = self.call_key(id);
        let freed = self.calls.get_mut(&id).and_then(|call| {
            call.consult = None;
            call.unhold(now);
            call.peer = c.leg;
            call.transfers += 1;
            call.hosted.as_mut().and_then(|h| h.release_agent())
        });
        if let Some(agent) = freed {
            self.tell_acd(crate::acd::Input::CallEnded { call: key, agent });
        }
        if let (Some(ma), Some(mc)) = (ma, mc) {
            self.media.stop_playing(ma);
            self.media.pair(ma, mc);
        }
        if let (Some(mb), Some(mc)) = (mb, mc) {
            self.media.hand_recording(mb, mc);
        }
        self.counters.transfers.bump();
        self.emit(now, id, CallEventKind::Transferred { to: c.target });
        Ok(())
    }

    /// `call.conference`: the customer, the agent and the consulted party
    /// in one conference.
    fn cti_conference(&mut self, now: Instant, id: u64) -> Result<(), ProtoError> {
        let Some(call) = self.calls.get(&id) else {
            return Err(err(ErrorCode::NotFound, "the call has ended"));
        };
        if call.conference.is_some() {
            return Err(err(
                ErrorCode::InvalidState,
                "the call is a conference already",
            ));
        }
        let none = "no consultation in progress (call.consult the third party first)";
        let c = answered_consult(call, none)?;
        let agent_leg = call.peer;
        let media = |i: u16| call.b.get(usize::from(i)).and_then(|b| b.leg.media);
        let (Some(ma), Some(mb), Some(mc)) = (call.a.media, media(agent_leg), media(c.leg)) else {
            return Err(err(ErrorCode::InvalidState, "a party has no media"));
        };
        if let Err(e) = self.media.conference(&[ma, mb, mc]) {
            // Nothing moved: the consultation goes on.
            return Err(err(ErrorCode::InvalidState, e.to_string()));
        }
        let cause = "conferenced".into();
        self.emit_consult(now, id, CallEventKind::Cleared { cause });
        if let Some(call) = self.calls.get_mut(&id) {
            call.consult = None;
            call.unhold(now);
            call.conference = Some(vec![agent_leg, c.leg]);
        }
        self.counters.conferences.bump();
        self.emit_conferenced(now, id, &[agent_leg, c.leg]);
        Ok(())
    }

    /// Whether B leg `leg` of call `id` is a party of its conference.
    pub(super) fn conferenced(&self, id: u64, leg: u16) -> bool {
        self.calls
            .get(&id)
            .and_then(|c| c.conference.as_ref())
            .is_some_and(|legs| legs.contains(&leg))
    }

    /// `call.conferenced`: the customer and B legs `legs` of call `id` are
    /// its parties now.
    fn emit_conferenced(&mut self, now: Instant, id: u64, legs: &[u16]) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let mut parties = vec![call.caller_user.clone()];
        for &i in legs {
            if let Some(b) = call.b.get(usize::from(i)) {
                parties.push(b.user.clone());
            }
        }
        let e = self.call_event(now, id, call, CallEventKind::Conferenced { parties });
        self.push_event(e);
    }

    /// B leg `leg` (hung up) leaves call `id`'s conference. The agent
    /// leaving is freed (wrap-up follows, as after a transfer) and the
    /// next party takes its place; with one other party left, the
    /// customer and it are an ordinary call again.
    pub(super) fn conference_left(&mut self, now: Instant, id: u64, leg: u16) {
        let key = self.call_key(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(legs) = call.conference.as_mut() else {
            return;
        };
        legs.retain(|&l| l != leg);
        let rest = legs.clone();
        let media = |i: u16| call.b.get(usize::from(i)).and_then(|b| b.leg.media);
        let gone = media(leg);
        let mut freed = None;
        let mut successor = None;
        if leg == call.peer
            && let Some(&next) = rest.first()
        {
            successor = media(next);
            call.peer = next;
            call.transfers += 1;
            freed = call.hosted.as_mut().and_then(|h| h.release_agent());
        }
        let ma = call.a.media;
        if rest.len() < 2 {
            call.conference = None;
        }
        let pair = match rest.as_slice() {
            [one] => call.b.get(usize::from(*one)).and_then(|b| b.leg.media),
            _ => None,
        };
        if let Some(m) = gone {
            self.media.leave(m);
            if let Some(s) = successor {
                self.media.hand_recording(m, s);
            }
        }
        if let (Some(ma), Some(mo)) = (ma, pair) {
            self.media.pair(ma, mo);
        }
        if let Some(agent) = freed {
            self.tell_acd(crate::acd::Input::CallEnded { call: key, agent });
        }
        self.emit_conferenced(now, id, &rest);
    }

    /// `call.make`: a new call from `agent`'s phone to `to`.
    fn click_to_dial(
        &mut self,
        now: Instant,
        agent: &str,
        to: &str,
        data: Data,
        location: &LocationService,
    ) -> Result<String, ProtoError> {
        if self.draining {
            return Err(err(ErrorCode::Unavailable, "the appliance is stopping"));
        }
        let Some(plan) = self.plan() else {
            return Err(err(ErrorCode::NotFound, "no agents are configured"));
        };
        let Some(agent_id) = plan.acd.agent(agent) else {
            return Err(err(ErrorCode::NotFound, format!("no agent {agent:?}")));
        };
        let Some(phone) = location.lookup(now, agent).next().cloned() else {
            return Err(err(
                ErrorCode::InvalidState,
                format!("agent {agent}'s phone is not registered"),
            ));
        };
        let dest = Dest::parse(to, &self.cfg.users).map_err(|m| err(ErrorCode::BadRequest, m))?;
        let shown = dest.user();
        let Some(origin) = hosted::origin_for(agent, &shown, &self.cfg.domain) else {
            return Err(err(
                ErrorCode::BadRequest,
                format!("call.make: {to:?} cannot be dialled"),
            ));
        };
        let id = self.next_call;
        let (Some(ma), Some(mb)) = (self.open_media(now, id), self.open_media(now, id)) else {
            self.media.close_legs_of(id);
            return Err(err(ErrorCode::Unavailable, "no free RTP port"));
        };
        let Ok(offer) = self.media.offer_locally(ma) else {
            self.media.close_legs_of(id);
            return Err(err(ErrorCode::Unavailable, "no media for the call"));
        };
        self.next_call += 1;
        let domain = self.cfg.domain.clone();
        let dialog = Dialog {
            call_id: self.ids.call_id(&domain),
            local_tag: self.ids.tag(),
            local_party: format!("<sip:{shown}@{domain}>"),
            remote_party: format!("<sip:{agent}@{domain}>"),
            remote_tag: None,
            local_seq: 0,
            remote_seq: None,
            remote_target: dialog::request_target(&phone.uri),
            route_set: Vec::new(),
            peer: Peer {
                link: phone.link,
                addr: phone.source,
            },
        };
        let call_info = format!("<sip:{domain}>;answer-after=0");
        let a = self.invite_a_leg(now, id, dialog, &[("Call-Info", call_info.as_str())], offer);
        let mut call = Call {
            hosted: Some(Box::new(hosted::Hosted::click_to_dial(
                origin, agent_id, dest,
            ))),
            a_is_agent: true,
            ..Call::new(a, shown, agent.to_owned(), now, (ma, mb))
        };
        call.data = data;
        let cti_id = self.cti_id(&call);
        self.calls.insert(id, Box::new(call));
        self.counters.calls_active.set(self.calls.len() as u64);
        self.tell_acd(crate::acd::Input::Agent {
            agent: agent_id,
            op: crate::acd::AgentOp::Busy(true),
        });
        Ok(cti_id)
    }
}

/// `digits` as in-band DTMF at the prompts' rate: each digit 100 ms of its
/// two tones, then 60 ms of silence.
fn dtmf_clip(digits: &str) -> Option<crate::media::player::Clip> {
    use crate::media::prompts::RATE;
    use crate::media::tone::ToneGen;
    let on = (RATE / 10) as usize;
    let off = (RATE * 6 / 100) as usize;
    let mut pcm = Vec::with_capacity(digits.len() * (on + off));
    for d in digits.chars() {
        let mut g = ToneGen::dtmf(d, RATE).ok()?;
        let start = pcm.len();
        pcm.resize(start + on, 0);
        g.fill(&mut pcm[start..]);
        pcm.resize(pcm.len() + off, 0);
    }
    Some(pcm.into())
}

/// `sdp` with every direction attribute made `a={dir}` (one added at
/// session level when there is none) and the `o=` version raised (RFC
/// 3264 §8: a changed offer in the same session).
pub(super) fn with_direction(sdp: &[u8], dir: &str) -> Bytes {
    let text = String::from_utf8_lossy(sdp);
    let mut out = String::with_capacity(text.len() + 16);
    let mut seen = false;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(o) = line.strip_prefix("o=") {
            let mut f: Vec<String> = o.split(' ').map(str::to_owned).collect();
            if let Some(v) = f.get_mut(2)
                && let Ok(n) = v.parse::<u64>()
            {
                *v = n.wrapping_add(1).to_string();
            }
            lines.push(format!("o={}", f.join(" ")));
        } else if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            seen = true;
            lines.push(format!("a={dir}"));
        } else if !line.is_empty() {
            lines.push(line.to_owned());
        }
    }
    if !seen {
        let at = lines
            .iter()
            .position(|l| l.starts_with("t="))
            .map_or(lines.len(), |i| i + 1);
        lines.insert(at, format!("a={dir}"));
    }
    for l in lines {
        out.push_str(&l);
        out.push_str("\r\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_digits_become_tones_with_gaps() {
        let clip = dtmf_clip("1#").unwrap();
        assert_eq!(clip.len(), 2 * (800 + 480));
        assert!(clip[..800].iter().any(|s| s.unsigned_abs() > 1000));
        assert!(clip[800..1280].iter().all(|s| *s == 0));
        assert!(dtmf_clip("x").is_none());
    }

    #[test]
    fn a_hold_offer_changes_direction_and_version() {
        let sdp = b"v=0\r\no=- 1 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n";
        let held = with_direction(sdp, "inactive");
        assert_eq!(
            &held[..],
            b"v=0\r\no=- 1 8 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n"
        );
        let plain =
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let held = with_direction(plain, "inactive");
        assert!(String::from_utf8_lossy(&held).contains("t=0 0\r\na=inactive\r\nm=audio"));
    }
}
