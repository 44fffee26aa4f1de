//! Server transactions: INVITE (RFC 3261 §17.2.1, Figure 7, with RFC 6026
//! §7.1's Accepted state) and non-INVITE (§17.2.2, Figure 8), plus
//! [`AckWait`], the UAS core's 2xx retransmission (§13.3.1.4).
//!
//! Created by the owner when a request that matches no transaction arrives
//! (§17.2.3). The transaction user sends responses through `send_response`
//! with the encoded bytes; the owner reports request retransmissions with
//! `handle_request` and, for INVITE, the ACK of a non-2xx final with
//! `handle_ack`. ACKs for a 2xx are not the INVITE transaction's: the
//! endpoint routes them to the dialog and its [`AckWait`].

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Class, Machine, TimerConfig, TransactionError, TuEvent, TxOutput};

/// States of [`ServerInvite`] (RFC 3261 Figure 7, RFC 6026 Figure 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// INVITE received; the TU may send 1xx, then one final.
    Proceeding,
    /// A 300-699 was sent; Timer G retransmits it, Timer H waits for the ACK.
    Completed,
    /// The ACK arrived; Timer I absorbs further ACKs.
    Confirmed,
    /// A 2xx was sent (RFC 6026); INVITE retransmissions are absorbed, more
    /// 2xx from the TU are sent, until Timer L.
    Accepted,
    /// Over.
    Terminated,
}

impl ServerInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

impl std::fmt::Display for ServerInviteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Timer indices of [`ServerInvite`]; timeouts first so they win ties.
mod ist {
    pub(super) const H: usize = 0;
    pub(super) const I: usize = 1;
    pub(super) const L: usize = 2;
    pub(super) const G: usize = 3;
    pub(super) const COUNT: usize = 4;
}

/// The INVITE server transaction (RFC 3261 §17.2.1 + RFC 6026).
///
/// The §17.2.1 "100 Trying within 200 ms" is left to the TU: the endpoint
/// sends `send_response(now, 100, …)` as soon as it creates the transaction,
/// unless it answers at once anyway.
///
/// * Proceeding: each 1xx from the TU is sent and remembered; a retransmitted
///   INVITE re-sends the last one.
/// * 2xx from the TU → Accepted (Timer L = 64·T1); the TU's [`AckWait`]
///   retransmits the 2xx, INVITE retransmissions are absorbed, further 2xx
///   from the TU are sent.
/// * 300-699 from the TU → Completed: Timer G retransmits it at T1 doubling
///   up to T2 (unreliable only), a retransmitted INVITE re-sends it, Timer H
///   (64·T1) gives up with [`TuEvent::Timeout`]; the ACK → Confirmed, Timer I
///   (T4, zero on reliable) absorbs further ACKs, then Terminated.
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    last_response: Option<Bytes>,
    g_interval: Duration,
    m: Machine<{ ist::COUNT }>,
}

impl ServerInvite {
    /// A new transaction for an INVITE that just arrived. Queues nothing.
    pub fn new(_now: Instant, config: TimerConfig, reliable: bool) -> Self {
        Self {
            state: ServerInviteState::Proceeding,
            last_response: None,
            g_interval: config.t1,
            m: Machine::new(config, reliable),
        }
    }

    /// The TU sends a response. Queues its transmission or, if the state
    /// takes no response of this class, returns an error and changes nothing.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: Bytes,
    ) -> Result<(), TransactionError> {
        let class = Class::of(status).ok_or(TransactionError::InvalidStatus(status))?;
        use ServerInviteState as S;
        match (self.state, class) {
            (S::Proceeding, Class::Provisional) => {
                self.m.transmit(response.clone());
                self.last_response = Some(response);
            }
            (S::Proceeding, Class::Success) => {
                self.state = S::Accepted;
                self.m.transmit(response);
                self.last_response = None;
                self.m.arm(ist::L, now, self.m.config.timeout());
            }
            (S::Proceeding, Class::Failure) => {
                self.state = S::Completed;
                self.m.transmit(response.clone());
                self.last_response = Some(response);
                if !self.m.reliable {
                    self.m.arm(ist::G, now, self.g_interval);
                }
                self.m.arm(ist::H, now, self.m.config.timeout());
            }
            (S::Accepted, Class::Success) => self.m.transmit(response),
            (state, _) => {
                return Err(TransactionError::WrongState {
                    status,
                    state: state.name(),
                });
            }
        }
        Ok(())
    }

    /// A retransmission of the INVITE arrived: re-send the last 1xx in
    /// Proceeding (if any) or the final in Completed; absorb otherwise.
    pub fn handle_request(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ServerInviteState::Proceeding | ServerInviteState::Completed
        ) && let Some(response) = &self.last_response
        {
            self.m.transmit(response.clone());
        }
    }

    /// An ACK matched this transaction, i.e. it acknowledges our 300-699
    /// (§17.2.3). Completed → Confirmed; ignored in any other state.
    pub fn handle_ack(&mut self, now: Instant) {
        if self.state != ServerInviteState::Completed {
            return;
        }
        self.state = ServerInviteState::Confirmed;
        self.m.disarm(ist::G);
        self.m.disarm(ist::H);
        if self.m.reliable || self.m.config.t4.is_zero() {
            self.terminate();
        } else {
            self.m.arm(ist::I, now, self.m.config.t4);
        }
    }

    /// The transport failed to send a response (§17.2.4): the TU is told,
    /// the transaction ends.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ServerInviteState::Terminated {
            self.m.tu(TuEvent::TransportError);
            self.terminate();
        }
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        use ServerInviteState as S;
        let mut fired = [false; ist::COUNT];
        while let Some(timer) = self.m.next_due(now, &mut fired) {
            match (self.state, timer) {
                (S::Completed, ist::G) => {
                    if let Some(response) = &self.last_response {
                        self.m.transmit(response.clone());
                    }
                    self.g_interval = self.m.config.double_capped(self.g_interval);
                    self.m.arm(ist::G, now, self.g_interval);
                }
                (S::Completed, ist::H) => {
                    self.m.tu(TuEvent::Timeout);
                    self.terminate();
                }
                (S::Confirmed, ist::I) | (S::Accepted, ist::L) => self.terminate(),
                _ => {}
            }
        }
    }

    /// The earliest armed deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.m.poll_timeout()
    }

    /// The next queued output.
    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.m.poll_output()
    }

    /// The current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ServerInviteState::Terminated;
        self.m.terminate();
    }
}

/// States of [`ServerNonInvite`] (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// Request received, nothing sent; retransmissions are absorbed.
    Trying,
    /// A 1xx was sent; retransmissions re-send it.
    Proceeding,
    /// A final was sent; retransmissions re-send it until Timer J.
    Completed,
    /// Over.
    Terminated,
}

impl ServerNonInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

impl std::fmt::Display for ServerNonInviteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Timer index of [`ServerNonInvite`].
mod nist {
    pub(super) const J: usize = 0;
    pub(super) const COUNT: usize = 1;
}

/// The non-INVITE server transaction (RFC 3261 §17.2.2).
///
/// * Trying: request retransmissions are absorbed.
/// * 1xx from the TU → Proceeding; retransmissions re-send the last 1xx.
/// * 200-699 from the TU → Completed; retransmissions re-send it; further
///   finals from the TU are refused; Timer J (64·T1, zero on reliable) ends it.
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    last_response: Option<Bytes>,
    m: Machine<{ nist::COUNT }>,
}

impl ServerNonInvite {
    /// A new transaction for a request that just arrived. Queues nothing.
    pub fn new(_now: Instant, config: TimerConfig, reliable: bool) -> Self {
        Self {
            state: ServerNonInviteState::Trying,
            last_response: None,
            m: Machine::new(config, reliable),
        }
    }

    /// The TU sends a response. Queues its transmission or, if the state
    /// takes no response, returns an error and changes nothing.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: Bytes,
    ) -> Result<(), TransactionError> {
        let class = Class::of(status).ok_or(TransactionError::InvalidStatus(status))?;
        use ServerNonInviteState as S;
        match (self.state, class) {
            (S::Trying | S::Proceeding, Class::Provisional) => {
                self.state = S::Proceeding;
                self.m.transmit(response.clone());
                self.last_response = Some(response);
            }
            (S::Trying | S::Proceeding, Class::Success | Class::Failure) => {
                self.state = S::Completed;
                self.m.transmit(response.clone());
                self.last_response = Some(response);
                if self.m.reliable {
                    self.terminate();
                } else {
                    self.m.arm(nist::J, now, self.m.config.timeout());
                }
            }
            (state, _) => {
                return Err(TransactionError::WrongState {
                    status,
                    state: state.name(),
                });
            }
        }
        Ok(())
    }

    /// A retransmission of the request arrived: absorbed in Trying, answered
    /// with the last response in Proceeding and Completed.
    pub fn handle_request(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed
        ) && let Some(response) = &self.last_response
        {
            self.m.transmit(response.clone());
        }
    }

    /// The transport failed to send a response (§17.2.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ServerNonInviteState::Terminated {
            self.m.tu(TuEvent::TransportError);
            self.terminate();
        }
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = [false; nist::COUNT];
        while let Some(timer) = self.m.next_due(now, &mut fired) {
            if (self.state, timer) == (ServerNonInviteState::Completed, nist::J) {
                self.terminate();
            }
        }
    }

    /// The earliest armed deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.m.poll_timeout()
    }

    /// The next queued output.
    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.m.poll_output()
    }

    /// The current state.
    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ServerNonInviteState::Terminated;
        self.m.terminate();
    }
}

/// Timer indices of [`AckWait`]; give-up first so it wins ties.
mod ack_wait {
    pub(super) const GIVE_UP: usize = 0;
    pub(super) const RETRANSMIT: usize = 1;
    pub(super) const COUNT: usize = 2;
}

/// The UAS core's 2xx retransmission until the ACK arrives (RFC 3261
/// §13.3.1.4; the INVITE server transaction does not do it).
///
/// Started by the TU right after it sent the 2xx through
/// [`ServerInvite::send_response`], which carried the first copy: `AckWait`
/// only retransmits, at T1, then doubling up to T2, on every transport
/// ("independent of whatever transport protocols are used"). The ACK
/// (`handle_ack`) ends it quietly; after 64·T1 without one it gives up with
/// [`TuEvent::Timeout`], and the TU should end the dialog with a BYE.
#[derive(Debug)]
pub struct AckWait {
    response: Bytes,
    interval: Duration,
    m: Machine<{ ack_wait::COUNT }>,
}

impl AckWait {
    /// Starts waiting for the ACK of `response` (the 2xx already sent once).
    pub fn new(now: Instant, config: TimerConfig, response: Bytes) -> Self {
        let mut m = Machine::new(config, false);
        m.arm(ack_wait::RETRANSMIT, now, config.t1);
        m.arm(ack_wait::GIVE_UP, now, config.timeout());
        Self {
            response,
            interval: config.t1,
            m,
        }
    }

    /// The ACK for the 2xx arrived: stop retransmitting.
    pub fn handle_ack(&mut self, _now: Instant) {
        self.m.terminate();
    }

    /// The transport failed to send the 2xx: the TU is told, retransmission
    /// stops.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !self.m.terminated {
            self.m.tu(TuEvent::TransportError);
            self.m.terminate();
        }
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = [false; ack_wait::COUNT];
        while let Some(timer) = self.m.next_due(now, &mut fired) {
            match timer {
                ack_wait::RETRANSMIT => {
                    self.m.transmit(self.response.clone());
                    self.interval = self.m.config.double_capped(self.interval);
                    self.m.arm(ack_wait::RETRANSMIT, now, self.interval);
                }
                ack_wait::GIVE_UP => {
                    self.m.tu(TuEvent::Timeout);
                    self.m.terminate();
                }
                _ => {}
            }
        }
    }

    /// The earliest armed deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.m.poll_timeout()
    }

    /// The next queued output.
    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.m.poll_output()
    }

    /// Whether the wait is over (ACK received, gave up, or transport error).
    pub fn is_terminated(&self) -> bool {
        self.m.terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn drain(out: impl FnMut() -> Option<TxOutput>) -> Vec<TxOutput> {
        std::iter::from_fn(out).collect()
    }

    fn tx(b: &'static [u8]) -> TxOutput {
        TxOutput::Transmit(Bytes::from_static(b))
    }

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// Runs a machine's timers deadline by deadline up to `end`; returns
    /// the offsets at which `bytes` was transmitted and the outputs of the
    /// last wake-up.
    fn retransmissions(
        base: Instant,
        end: Duration,
        bytes: &'static [u8],
        mut poll_timeout: impl FnMut() -> Option<Instant>,
        mut step: impl FnMut(Instant) -> Vec<TxOutput>,
    ) -> (Vec<Duration>, Option<(Duration, Vec<TxOutput>)>) {
        let mut sends = Vec::new();
        let mut last = None;
        while let Some(at) = poll_timeout() {
            if at - base > end {
                break;
            }
            let out = step(at);
            if out.contains(&tx(bytes)) {
                sends.push(at - base);
            }
            last = Some((at - base, out));
        }
        (sends, last)
    }

    /// 0.5, 1, 2, 4, 4, 4, … s intervals from t = 0 until (excluding) `until`.
    fn capped_schedule(until: Duration) -> Vec<Duration> {
        let mut v = Vec::new();
        let (mut at, mut step) = (Duration::ZERO, ms(500));
        loop {
            at += step;
            if at >= until {
                return v;
            }
            v.push(at);
            step = (step * 2).min(secs(4));
        }
    }

    fn ist(now: Instant, reliable: bool) -> ServerInvite {
        ServerInvite::new(now, TimerConfig::default(), reliable)
    }

    fn nist(now: Instant, reliable: bool) -> ServerNonInvite {
        ServerNonInvite::new(now, TimerConfig::default(), reliable)
    }

    #[test]
    fn ist_timer_g_retransmits_non_2xx_at_0_5_1_2_4_4_until_ack() {
        let t0 = Instant::now();
        let mut s = ist(t0, false);
        s.send_response(t0, 100, b(b"100")).unwrap();
        s.send_response(t0, 486, b(b"486")).unwrap();
        assert_eq!(s.state(), ServerInviteState::Completed);
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"100"), tx(b"486")]);
        let s = std::cell::RefCell::new(s);
        let (sends, _) = retransmissions(
            t0,
            secs(20),
            b"486",
            || s.borrow().poll_timeout(),
            |now| {
                let mut s = s.borrow_mut();
                s.handle_timeout(now);
                drain(|| s.poll_output())
            },
        );
        assert_eq!(sends, capped_schedule(secs(20)));
        let mut s = s.into_inner();
        let ack_at = t0 + secs(20) + ms(1);
        s.handle_ack(ack_at);
        assert_eq!(s.state(), ServerInviteState::Confirmed);
        // Timer G and H are off; Timer I = T4.
        assert_eq!(s.poll_timeout(), Some(ack_at + secs(5)));
        // ACK retransmissions are absorbed in Confirmed.
        s.handle_ack(ack_at + ms(100));
        s.handle_request(ack_at + ms(100));
        assert_eq!(drain(|| s.poll_output()), vec![]);
        s.handle_timeout(ack_at + secs(5));
        assert_eq!(drain(|| s.poll_output()), vec![TxOutput::Terminated]);
        assert!(s.is_terminated());
    }

    #[test]
    fn ist_timer_h_times_out_at_64_t1_without_ack() {
        let t0 = Instant::now();
        let mut s = ist(t0, false);
        s.send_response(t0, 603, b(b"603")).unwrap();
        drain(|| s.poll_output());
        let s = std::cell::RefCell::new(s);
        let (sends, last) = retransmissions(
            t0,
            secs(100),
            b"603",
            || s.borrow().poll_timeout(),
            |now| {
                let mut s = s.borrow_mut();
                s.handle_timeout(now);
                drain(|| s.poll_output())
            },
        );
        assert_eq!(sends, capped_schedule(secs(32)));
        assert_eq!(
            last,
            Some((
                secs(32),
                vec![TxOutput::Tu(TuEvent::Timeout), TxOutput::Terminated]
            ))
        );
    }

    #[test]
    fn ist_duplicate_invite_resends_last_response() {
        let t0 = Instant::now();
        let mut s = ist(t0, false);
        s.handle_request(t0);
        assert_eq!(
            drain(|| s.poll_output()),
            vec![],
            "nothing sent yet: absorbed"
        );
        s.send_response(t0, 100, b(b"100")).unwrap();
        s.handle_request(t0 + ms(10));
        s.send_response(t0 + ms(20), 180, b(b"180")).unwrap();
        s.handle_request(t0 + ms(30));
        assert_eq!(
            drain(|| s.poll_output()),
            vec![tx(b"100"), tx(b"100"), tx(b"180"), tx(b"180")]
        );
        s.send_response(t0 + ms(40), 404, b(b"404")).unwrap();
        s.handle_request(t0 + ms(50));
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"404"), tx(b"404")]);
    }

    #[test]
    fn ist_rfc6026_accepted_absorbs_invite_sends_further_2xx_timer_l() {
        let t0 = Instant::now();
        let mut s = ist(t0, false);
        s.send_response(t0, 180, b(b"180")).unwrap();
        s.send_response(t0 + ms(100), 200, b(b"200")).unwrap();
        assert_eq!(s.state(), ServerInviteState::Accepted);
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"180"), tx(b"200")]);
        s.handle_request(t0 + ms(200));
        s.handle_ack(t0 + ms(200)); // a 2xx ACK is the TU's business
        assert_eq!(drain(|| s.poll_output()), vec![]);
        assert_eq!(s.state(), ServerInviteState::Accepted);
        s.send_response(t0 + ms(600), 200, b(b"200")).unwrap();
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"200")]);
        assert_eq!(
            s.send_response(t0 + ms(700), 486, b(b"486")),
            Err(TransactionError::WrongState {
                status: 486,
                state: "Accepted"
            })
        );
        assert_eq!(s.poll_timeout(), Some(t0 + ms(100) + secs(32)), "Timer L");
        s.handle_timeout(t0 + ms(100) + secs(32));
        assert_eq!(drain(|| s.poll_output()), vec![TxOutput::Terminated]);
    }

    #[test]
    fn ist_reliable_no_timer_g_and_timer_i_zero() {
        let t0 = Instant::now();
        let mut s = ist(t0, true);
        s.send_response(t0, 486, b(b"486")).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + secs(32)), "only Timer H");
        s.handle_timeout(t0 + secs(10));
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"486")]);
        s.handle_ack(t0 + secs(10));
        assert_eq!(drain(|| s.poll_output()), vec![TxOutput::Terminated]);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn ist_refuses_bad_status_and_responses_after_final() {
        let t0 = Instant::now();
        let mut s = ist(t0, false);
        assert_eq!(
            s.send_response(t0, 99, b(b"x")),
            Err(TransactionError::InvalidStatus(99))
        );
        assert_eq!(
            s.send_response(t0, 700, b(b"x")),
            Err(TransactionError::InvalidStatus(700))
        );
        s.send_response(t0, 500, b(b"500")).unwrap();
        assert!(s.send_response(t0, 180, b(b"180")).is_err());
        assert!(s.send_response(t0, 200, b(b"200")).is_err());
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"500")]);
        s.handle_transport_error(t0);
        assert_eq!(
            drain(|| s.poll_output()),
            vec![TxOutput::Tu(TuEvent::TransportError), TxOutput::Terminated]
        );
        assert!(s.send_response(t0, 500, b(b"500")).is_err());
        s.handle_request(t0);
        s.handle_ack(t0);
        s.handle_timeout(t0 + secs(100));
        assert_eq!(drain(|| s.poll_output()), vec![]);
    }

    #[test]
    fn nist_duplicate_absorbed_in_trying_answered_in_proceeding_and_completed() {
        let t0 = Instant::now();
        let mut s = nist(t0, false);
        s.handle_request(t0 + ms(500));
        assert_eq!(drain(|| s.poll_output()), vec![], "Trying absorbs");
        s.send_response(t0 + ms(600), 100, b(b"100")).unwrap();
        assert_eq!(s.state(), ServerNonInviteState::Proceeding);
        s.handle_request(t0 + ms(1500));
        assert_eq!(drain(|| s.poll_output()), vec![tx(b"100"), tx(b"100")]);
        s.send_response(t0 + ms(1600), 200, b(b"200")).unwrap();
        assert_eq!(s.state(), ServerNonInviteState::Completed);
        s.handle_request(t0 + ms(3500));
        s.handle_request(t0 + ms(7500));
        assert_eq!(
            drain(|| s.poll_output()),
            vec![tx(b"200"), tx(b"200"), tx(b"200")]
        );
        assert!(s.send_response(t0 + ms(8000), 500, b(b"500")).is_err());
        // No retransmission timer on the server side of non-INVITE.
        assert_eq!(s.poll_timeout(), Some(t0 + ms(1600) + secs(32)), "Timer J");
    }

    #[test]
    fn nist_timer_j_terminates_at_64_t1() {
        let t0 = Instant::now();
        let mut s = nist(t0, false);
        s.send_response(t0, 404, b(b"404")).unwrap();
        drain(|| s.poll_output());
        s.handle_timeout(t0 + secs(32) - ms(1));
        assert_eq!(drain(|| s.poll_output()), vec![]);
        s.handle_timeout(t0 + secs(32));
        assert_eq!(drain(|| s.poll_output()), vec![TxOutput::Terminated]);
        s.handle_request(t0 + secs(33));
        assert_eq!(drain(|| s.poll_output()), vec![]);
    }

    #[test]
    fn nist_reliable_timer_j_zero() {
        let t0 = Instant::now();
        let mut s = nist(t0, true);
        s.send_response(t0, 200, b(b"200")).unwrap();
        assert_eq!(
            drain(|| s.poll_output()),
            vec![tx(b"200"), TxOutput::Terminated]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn ack_wait_retransmits_2xx_at_0_5_1_2_4_4_until_ack() {
        let t0 = Instant::now();
        let w = std::cell::RefCell::new(AckWait::new(t0, TimerConfig::default(), b(b"200")));
        assert_eq!(
            drain(|| w.borrow_mut().poll_output()),
            vec![],
            "first copy went via the IST"
        );
        let (sends, _) = retransmissions(
            t0,
            secs(12),
            b"200",
            || w.borrow().poll_timeout(),
            |now| {
                let mut w = w.borrow_mut();
                w.handle_timeout(now);
                drain(|| w.poll_output())
            },
        );
        assert_eq!(sends, capped_schedule(secs(12)));
        let mut w = w.into_inner();
        w.handle_ack(t0 + secs(12));
        assert_eq!(drain(|| w.poll_output()), vec![TxOutput::Terminated]);
        assert!(w.is_terminated());
        assert_eq!(w.poll_timeout(), None);
        w.handle_ack(t0 + secs(13));
        w.handle_timeout(t0 + secs(100));
        assert_eq!(drain(|| w.poll_output()), vec![]);
    }

    #[test]
    fn ack_wait_gives_up_at_64_t1_rfc3261_13_3_1_4() {
        let t0 = Instant::now();
        let w = std::cell::RefCell::new(AckWait::new(t0, TimerConfig::default(), b(b"200")));
        let (sends, last) = retransmissions(
            t0,
            secs(100),
            b"200",
            || w.borrow().poll_timeout(),
            |now| {
                let mut w = w.borrow_mut();
                w.handle_timeout(now);
                drain(|| w.poll_output())
            },
        );
        assert_eq!(sends, capped_schedule(secs(32)));
        assert_eq!(
            last,
            Some((
                secs(32),
                vec![TxOutput::Tu(TuEvent::Timeout), TxOutput::Terminated]
            ))
        );
    }

    #[test]
    fn ack_wait_transport_error_stops_it() {
        let t0 = Instant::now();
        let mut w = AckWait::new(t0, TimerConfig::default(), b(b"200"));
        w.handle_transport_error(t0);
        w.handle_transport_error(t0);
        assert_eq!(
            drain(|| w.poll_output()),
            vec![TxOutput::Tu(TuEvent::TransportError), TxOutput::Terminated]
        );
    }
}
