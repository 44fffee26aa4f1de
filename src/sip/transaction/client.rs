//! Client transactions: INVITE (RFC 3261 §17.1.1, Figure 5, with RFC 6026
//! §7.2's Accepted state) and non-INVITE (§17.1.2, Figure 6).
//!
//! Created with the encoded request, which they transmit at once. The owner
//! hands in each response matched to the transaction (§17.1.3) as a status
//! code; they pass it up as [`TuEvent::Response`] when the RFC says so.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Class, Machine, TimerConfig, TuEvent, TxOutput};

/// States of [`ClientInvite`] (RFC 3261 Figure 5, RFC 6026 Figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// INVITE sent, no response yet; Timers A and B run.
    Calling,
    /// A 1xx arrived; waiting for a final response (no timer: the TU owns
    /// how long a call may ring, e.g. with CANCEL).
    Proceeding,
    /// A 300-699 arrived and was ACKed; Timer D absorbs retransmissions.
    Completed,
    /// A 2xx arrived (RFC 6026); further 2xx pass up until Timer M.
    Accepted,
    /// Over.
    Terminated,
}

impl ClientInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Calling => "Calling",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// Timer indices of [`ClientInvite`]; timeouts first so they win ties.
mod ict {
    pub(super) const B: usize = 0;
    pub(super) const D: usize = 1;
    pub(super) const M: usize = 2;
    pub(super) const A: usize = 3;
    pub(super) const COUNT: usize = 4;
}

/// The INVITE client transaction (RFC 3261 §17.1.1 + RFC 6026).
///
/// * Calling: Timer A retransmits the INVITE at T1, 2·T1, 4·T1, … (no T2 cap
///   for INVITE; unreliable transports only); Timer B (64·T1) gives up with
///   [`TuEvent::Timeout`].
/// * 1xx → Proceeding (retransmission stops), passed up.
/// * 2xx → Accepted, passed up, as is every further 2xx (RFC 6026: the TU
///   ACKs each one itself); Timer M (64·T1) ends it.
/// * 300-699 → Completed: the ACK is built once with `build_ack`, sent, and
///   the response passed up once; retransmitted finals re-send the stored
///   ACK. Timer D (max(32 s, 64·T1), zero on reliable) ends it.
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    request: Bytes,
    ack: Option<Bytes>,
    a_interval: Duration,
    m: Machine<{ ict::COUNT }>,
}

impl ClientInvite {
    /// Starts the transaction and queues the first transmission of `request`.
    pub fn new(now: Instant, config: TimerConfig, reliable: bool, request: Bytes) -> Self {
        let mut m = Machine::new(config, reliable);
        m.transmit(request.clone());
        if !reliable {
            m.arm(ict::A, now, config.t1);
        }
        m.arm(ict::B, now, config.timeout());
        Self {
            state: ClientInviteState::Calling,
            request,
            ack: None,
            a_interval: config.t1,
            m,
        }
    }

    /// A response matched to this transaction. `build_ack` is called at most
    /// once in the transaction's life, for the first 300-699 response
    /// (§17.1.1.3: same Request-URI, Call-ID, From, CSeq number and top Via
    /// as the INVITE, To from the response). Status codes outside 100..=699
    /// and responses out of place are ignored.
    pub fn handle_response(
        &mut self,
        now: Instant,
        status: u16,
        build_ack: impl FnOnce() -> Bytes,
    ) {
        let Some(class) = Class::of(status) else {
            return;
        };
        use ClientInviteState as S;
        match (self.state, class) {
            (S::Calling | S::Proceeding, Class::Provisional) => {
                self.state = S::Proceeding;
                self.m.disarm(ict::A);
                self.m.disarm(ict::B);
                self.m.tu(TuEvent::Response { status });
            }
            (S::Calling | S::Proceeding, Class::Success) => {
                self.state = S::Accepted;
                self.m.disarm(ict::A);
                self.m.disarm(ict::B);
                self.m.arm(ict::M, now, self.m.config.timeout());
                self.m.tu(TuEvent::Response { status });
            }
            (S::Calling | S::Proceeding, Class::Failure) => {
                self.state = S::Completed;
                self.m.disarm(ict::A);
                self.m.disarm(ict::B);
                self.m.tu(TuEvent::Response { status });
                let ack = build_ack();
                self.m.transmit(ack.clone());
                self.ack = Some(ack);
                let d = self.m.config.timer_d(self.m.reliable);
                if d.is_zero() {
                    self.terminate();
                } else {
                    self.m.arm(ict::D, now, d);
                }
            }
            (S::Completed, Class::Failure) => {
                // A retransmitted final: our ACK was lost. Re-send, absorb.
                if let Some(ack) = &self.ack {
                    self.m.transmit(ack.clone());
                }
            }
            (S::Accepted, Class::Success) => self.m.tu(TuEvent::Response { status }),
            _ => {}
        }
    }

    /// The transport failed to send for this transaction (§17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ClientInviteState::Terminated {
            self.m.tu(TuEvent::TransportError);
            self.terminate();
        }
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = [false; ict::COUNT];
        while let Some(timer) = self.m.next_due(now, &mut fired) {
            match (self.state, timer) {
                (ClientInviteState::Calling, ict::A) => {
                    self.m.transmit(self.request.clone());
                    self.a_interval = self.a_interval.saturating_mul(2);
                    self.m.arm(ict::A, now, self.a_interval);
                }
                (ClientInviteState::Calling, ict::B) => {
                    self.m.tu(TuEvent::Timeout);
                    self.terminate();
                }
                (ClientInviteState::Completed, ict::D) | (ClientInviteState::Accepted, ict::M) => {
                    self.terminate();
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

    /// The current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// Whether the transaction is over (its owner may drop it once
    /// `poll_output` is drained).
    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ClientInviteState::Terminated;
        self.m.terminate();
    }
}

impl std::fmt::Display for ClientInviteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// States of [`ClientNonInvite`] (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// Request sent, no response yet; Timers E and F run.
    Trying,
    /// A 1xx arrived; Timer E now retransmits every T2, Timer F still runs.
    Proceeding,
    /// A final response arrived; Timer K absorbs retransmissions.
    Completed,
    /// Over.
    Terminated,
}

impl ClientNonInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

impl std::fmt::Display for ClientNonInviteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Timer indices of [`ClientNonInvite`]; timeouts first so they win ties.
mod nict {
    pub(super) const F: usize = 0;
    pub(super) const K: usize = 1;
    pub(super) const E: usize = 2;
    pub(super) const COUNT: usize = 3;
}

/// The non-INVITE client transaction (RFC 3261 §17.1.2).
///
/// * Trying: Timer E retransmits at T1, then doubling up to T2 (unreliable
///   transports only); Timer F (64·T1) gives up with [`TuEvent::Timeout`].
/// * 1xx → Proceeding, passed up; Timer E keeps running, re-armed at T2.
/// * 200-699 → Completed, passed up once; Timer K (T4, zero on reliable)
///   absorbs retransmissions, then Terminated.
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    request: Bytes,
    e_interval: Duration,
    m: Machine<{ nict::COUNT }>,
}

impl ClientNonInvite {
    /// Starts the transaction and queues the first transmission of `request`.
    pub fn new(now: Instant, config: TimerConfig, reliable: bool, request: Bytes) -> Self {
        let mut m = Machine::new(config, reliable);
        m.transmit(request.clone());
        if !reliable {
            m.arm(nict::E, now, config.t1);
        }
        m.arm(nict::F, now, config.timeout());
        Self {
            state: ClientNonInviteState::Trying,
            request,
            e_interval: config.t1,
            m,
        }
    }

    /// A response matched to this transaction. Status codes outside
    /// 100..=699 and responses out of place are ignored.
    pub fn handle_response(&mut self, now: Instant, status: u16) {
        let Some(class) = Class::of(status) else {
            return;
        };
        use ClientNonInviteState as S;
        match (self.state, class) {
            (S::Trying | S::Proceeding, Class::Provisional) => {
                self.state = S::Proceeding;
                self.m.tu(TuEvent::Response { status });
            }
            (S::Trying | S::Proceeding, Class::Success | Class::Failure) => {
                self.state = S::Completed;
                self.m.disarm(nict::E);
                self.m.disarm(nict::F);
                self.m.tu(TuEvent::Response { status });
                if self.m.reliable || self.m.config.t4.is_zero() {
                    self.terminate();
                } else {
                    self.m.arm(nict::K, now, self.m.config.t4);
                }
            }
            // Completed absorbs retransmissions; Terminated ignores all.
            _ => {}
        }
    }

    /// The transport failed to send for this transaction (§17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ClientNonInviteState::Terminated {
            self.m.tu(TuEvent::TransportError);
            self.terminate();
        }
    }

    /// Fires every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        use ClientNonInviteState as S;
        let mut fired = [false; nict::COUNT];
        while let Some(timer) = self.m.next_due(now, &mut fired) {
            match (self.state, timer) {
                (S::Trying | S::Proceeding, nict::E) => {
                    self.m.transmit(self.request.clone());
                    self.e_interval = if self.state == S::Proceeding {
                        self.m.config.t2
                    } else {
                        self.m.config.double_capped(self.e_interval)
                    };
                    self.m.arm(nict::E, now, self.e_interval);
                }
                (S::Trying | S::Proceeding, nict::F) => {
                    self.m.tu(TuEvent::Timeout);
                    self.terminate();
                }
                (S::Completed, nict::K) => self.terminate(),
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
    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }

    fn terminate(&mut self) {
        self.state = ClientNonInviteState::Terminated;
        self.m.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(out: impl FnMut() -> Option<TxOutput>) -> Vec<TxOutput> {
        std::iter::from_fn(out).collect()
    }

    fn tx(b: &'static [u8]) -> TxOutput {
        TxOutput::Transmit(Bytes::from_static(b))
    }

    fn resp(status: u16) -> TxOutput {
        TxOutput::Tu(TuEvent::Response { status })
    }

    /// Steps the virtual clock deadline by deadline until `end`, returning
    /// (offset, outputs) for every wake-up that produced output.
    fn run_until(
        base: Instant,
        end: Duration,
        mut poll_timeout: impl FnMut() -> Option<Instant>,
        mut step: impl FnMut(Instant) -> Vec<TxOutput>,
    ) -> Vec<(Duration, Vec<TxOutput>)> {
        let mut log = Vec::new();
        while let Some(at) = poll_timeout() {
            if at - base > end {
                break;
            }
            let out = step(at);
            if !out.is_empty() {
                log.push((at - base, out));
            }
        }
        log
    }

    fn invite(now: Instant, reliable: bool) -> ClientInvite {
        ClientInvite::new(
            now,
            TimerConfig::default(),
            reliable,
            Bytes::from_static(b"INVITE"),
        )
    }

    fn non_invite(now: Instant, reliable: bool) -> ClientNonInvite {
        ClientNonInvite::new(
            now,
            TimerConfig::default(),
            reliable,
            Bytes::from_static(b"OPTIONS"),
        )
    }

    fn no_ack() -> Bytes {
        panic!("build_ack must not be called here")
    }

    /// Timer A: intervals 0.5, 1, 2, 4, 8, 16 s (no T2 cap for INVITE), so
    /// sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; the next interval (32 s)
    /// never runs because Timer B fires at 64·T1 = 32 s.
    #[test]
    fn ict_timer_a_retransmits_at_0_5_1_2_4_8_16_32() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        assert_eq!(drain(|| c.poll_output()), vec![tx(b"INVITE")]);
        assert_eq!(c.poll_timeout(), Some(t0 + ms(500)));
        let c = std::cell::RefCell::new(c);
        let log = run_until(
            t0,
            Duration::from_secs(100),
            || c.borrow().poll_timeout(),
            |now| {
                let mut c = c.borrow_mut();
                c.handle_timeout(now);
                drain(|| c.poll_output())
            },
        );
        let sends: Vec<Duration> = log
            .iter()
            .filter(|(_, o)| o == &vec![tx(b"INVITE")])
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(
            sends,
            [500, 1500, 3500, 7500, 15500, 31500].map(ms).to_vec(),
            "Timer A"
        );
        let last = log.last().map(|(at, o)| (*at, o.clone()));
        assert_eq!(
            last,
            Some((
                Duration::from_secs(32),
                vec![TxOutput::Tu(TuEvent::Timeout), TxOutput::Terminated]
            )),
            "Timer B"
        );
        assert!(c.borrow().is_terminated());
        assert_eq!(c.borrow().poll_timeout(), None);
    }

    #[test]
    fn ict_provisional_stops_timer_a_and_b_rfc3261_17_1_1_2() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        c.handle_response(t0 + ms(100), 180, no_ack);
        assert_eq!(c.state(), ClientInviteState::Proceeding);
        assert_eq!(drain(|| c.poll_output()), vec![resp(180)]);
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(drain(|| c.poll_output()), vec![]);
        c.handle_response(t0 + Duration::from_secs(61), 183, no_ack);
        assert_eq!(drain(|| c.poll_output()), vec![resp(183)]);
    }

    #[test]
    fn ict_ack_resent_on_retransmitted_final_build_ack_called_once() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        let built = std::cell::Cell::new(0);
        let build = || {
            built.set(built.get() + 1);
            Bytes::from_static(b"ACK")
        };
        c.handle_response(t0 + ms(200), 486, build);
        assert_eq!(c.state(), ClientInviteState::Completed);
        assert_eq!(drain(|| c.poll_output()), vec![resp(486), tx(b"ACK")]);
        for i in 1..4u64 {
            c.handle_response(t0 + ms(200 + 500 * i), 486, build);
            assert_eq!(drain(|| c.poll_output()), vec![tx(b"ACK")], "absorbed");
        }
        // A late 1xx or a 2xx in Completed is ignored.
        c.handle_response(t0 + ms(3000), 180, build);
        c.handle_response(t0 + ms(3000), 200, build);
        assert_eq!(drain(|| c.poll_output()), vec![]);
        assert_eq!(built.get(), 1);
        // Timer D = 32 s from the first final.
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + ms(200) + Duration::from_secs(32))
        );
        c.handle_timeout(t0 + ms(200) + Duration::from_secs(32));
        assert_eq!(drain(|| c.poll_output()), vec![TxOutput::Terminated]);
        c.handle_response(t0 + Duration::from_secs(40), 486, build);
        assert_eq!(drain(|| c.poll_output()), vec![], "terminated ignores");
        assert_eq!(built.get(), 1);
    }

    #[test]
    fn ict_rfc6026_accepted_passes_every_2xx_up_until_timer_m() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        c.handle_response(t0 + ms(100), 100, no_ack);
        c.handle_response(t0 + ms(300), 200, no_ack);
        assert_eq!(c.state(), ClientInviteState::Accepted);
        assert_eq!(drain(|| c.poll_output()), vec![resp(100), resp(200)]);
        // Further 2xx (retransmissions or forked answers) pass up; the TU ACKs.
        c.handle_response(t0 + ms(800), 200, no_ack);
        c.handle_response(t0 + ms(900), 202, no_ack);
        // Non-2xx and 1xx in Accepted are not for the TU.
        c.handle_response(t0 + ms(950), 486, no_ack);
        c.handle_response(t0 + ms(950), 180, no_ack);
        assert_eq!(drain(|| c.poll_output()), vec![resp(200), resp(202)]);
        // Timer M = 64·T1 from entering Accepted, even on a reliable transport.
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + ms(300) + Duration::from_secs(32))
        );
        c.handle_timeout(t0 + ms(300) + Duration::from_secs(32));
        assert_eq!(drain(|| c.poll_output()), vec![TxOutput::Terminated]);
    }

    #[test]
    fn ict_reliable_no_timer_a_and_timer_d_zero() {
        let t0 = Instant::now();
        let mut c = invite(t0, true);
        assert_eq!(drain(|| c.poll_output()), vec![tx(b"INVITE")]);
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer B"
        );
        c.handle_response(t0 + ms(50), 603, || Bytes::from_static(b"ACK"));
        assert_eq!(
            drain(|| c.poll_output()),
            vec![resp(603), tx(b"ACK"), TxOutput::Terminated]
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn ict_reliable_timer_b_still_fires() {
        let t0 = Instant::now();
        let mut c = invite(t0, true);
        drain(|| c.poll_output());
        c.handle_timeout(t0 + Duration::from_secs(31));
        assert_eq!(drain(|| c.poll_output()), vec![]);
        c.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(
            drain(|| c.poll_output()),
            vec![TxOutput::Tu(TuEvent::Timeout), TxOutput::Terminated]
        );
    }

    #[test]
    fn ict_transport_error_informs_tu_and_terminates_rfc3261_17_1_4() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        c.handle_transport_error(t0);
        assert_eq!(
            drain(|| c.poll_output()),
            vec![TxOutput::Tu(TuEvent::TransportError), TxOutput::Terminated]
        );
        c.handle_transport_error(t0);
        c.handle_timeout(t0 + Duration::from_secs(100));
        assert_eq!(drain(|| c.poll_output()), vec![]);
    }

    #[test]
    fn ict_late_wake_up_fires_each_timer_once_and_timeout_wins() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        // Woken only at 40 s: A fired at most once, then B.
        c.handle_timeout(t0 + Duration::from_secs(40));
        assert_eq!(
            drain(|| c.poll_output()),
            vec![
                tx(b"INVITE"),
                TxOutput::Tu(TuEvent::Timeout),
                TxOutput::Terminated
            ]
        );
    }

    #[test]
    fn ict_early_and_spurious_wake_ups_are_harmless() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        for off in [0, 1, 100, 499] {
            c.handle_timeout(t0 + ms(off));
        }
        assert_eq!(drain(|| c.poll_output()), vec![]);
        c.handle_timeout(t0 + ms(500));
        c.handle_timeout(t0 + ms(500));
        assert_eq!(drain(|| c.poll_output()), vec![tx(b"INVITE")]);
        assert_eq!(c.poll_timeout(), Some(t0 + ms(1500)));
    }

    #[test]
    fn ict_ignores_invalid_status_codes() {
        let t0 = Instant::now();
        let mut c = invite(t0, false);
        drain(|| c.poll_output());
        for s in [0, 99, 700, u16::MAX] {
            c.handle_response(t0, s, no_ack);
        }
        assert_eq!(drain(|| c.poll_output()), vec![]);
        assert_eq!(c.state(), ClientInviteState::Calling);
    }

    /// Timer E: intervals 0.5, 1, 2, 4, 4, 4, … (capped at T2), so sends at
    /// 0, 0.5, 1.5, 3.5, 7.5, 11.5, …, 31.5 s; Timer F at 64·T1 = 32 s.
    #[test]
    fn nict_timer_e_retransmits_at_0_5_1_2_4_4_4() {
        let t0 = Instant::now();
        let c = std::cell::RefCell::new(non_invite(t0, false));
        assert_eq!(drain(|| c.borrow_mut().poll_output()), vec![tx(b"OPTIONS")]);
        let log = run_until(
            t0,
            Duration::from_secs(100),
            || c.borrow().poll_timeout(),
            |now| {
                let mut c = c.borrow_mut();
                c.handle_timeout(now);
                drain(|| c.poll_output())
            },
        );
        let sends: Vec<Duration> = log
            .iter()
            .filter(|(_, o)| o == &vec![tx(b"OPTIONS")])
            .map(|(at, _)| *at)
            .collect();
        let expected: Vec<Duration> = [500, 1500, 3500]
            .into_iter()
            .chain((0..7).map(|i| 7500 + 4000 * i))
            .map(ms)
            .collect();
        assert_eq!(sends, expected, "Timer E");
        assert_eq!(
            log.last().map(|(at, o)| (*at, o.clone())),
            Some((
                Duration::from_secs(32),
                vec![TxOutput::Tu(TuEvent::Timeout), TxOutput::Terminated]
            )),
            "Timer F"
        );
    }

    #[test]
    fn nict_proceeding_retransmits_every_t2_until_timer_f() {
        let t0 = Instant::now();
        let mut c = non_invite(t0, false);
        drain(|| c.poll_output());
        c.handle_timeout(t0 + ms(500)); // E: next in 1 s
        c.handle_response(t0 + ms(600), 100);
        assert_eq!(c.state(), ClientNonInviteState::Proceeding);
        assert_eq!(drain(|| c.poll_output()), vec![tx(b"OPTIONS"), resp(100)]);
        // The armed E deadline stands; from then on every T2.
        assert_eq!(c.poll_timeout(), Some(t0 + ms(1500)));
        c.handle_timeout(t0 + ms(1500));
        assert_eq!(c.poll_timeout(), Some(t0 + ms(5500)));
        c.handle_timeout(t0 + ms(5500));
        assert_eq!(c.poll_timeout(), Some(t0 + ms(9500)));
        assert_eq!(
            drain(|| c.poll_output()),
            vec![tx(b"OPTIONS"), tx(b"OPTIONS")]
        );
        c.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(
            drain(|| c.poll_output()),
            vec![
                tx(b"OPTIONS"),
                TxOutput::Tu(TuEvent::Timeout),
                TxOutput::Terminated
            ]
        );
    }

    #[test]
    fn nict_final_once_then_timer_k_absorbs_retransmissions() {
        let t0 = Instant::now();
        let mut c = non_invite(t0, false);
        drain(|| c.poll_output());
        c.handle_response(t0 + ms(100), 180);
        c.handle_response(t0 + ms(200), 200);
        c.handle_response(t0 + ms(300), 200);
        c.handle_response(t0 + ms(300), 183);
        assert_eq!(c.state(), ClientNonInviteState::Completed);
        assert_eq!(drain(|| c.poll_output()), vec![resp(180), resp(200)]);
        // Timer K = T4.
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + ms(200) + Duration::from_secs(5))
        );
        c.handle_timeout(t0 + ms(200) + Duration::from_secs(5));
        assert_eq!(drain(|| c.poll_output()), vec![TxOutput::Terminated]);
    }

    #[test]
    fn nict_reliable_no_timer_e_and_timer_k_zero() {
        let t0 = Instant::now();
        let mut c = non_invite(t0, true);
        assert_eq!(drain(|| c.poll_output()), vec![tx(b"OPTIONS")]);
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer F"
        );
        c.handle_response(t0 + ms(10), 404);
        assert_eq!(
            drain(|| c.poll_output()),
            vec![resp(404), TxOutput::Terminated]
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn nict_transport_error_informs_tu_and_terminates() {
        let t0 = Instant::now();
        let mut c = non_invite(t0, false);
        drain(|| c.poll_output());
        c.handle_transport_error(t0);
        assert_eq!(
            drain(|| c.poll_output()),
            vec![TxOutput::Tu(TuEvent::TransportError), TxOutput::Terminated]
        );
        c.handle_response(t0, 200);
        assert_eq!(drain(|| c.poll_output()), vec![]);
    }
}
