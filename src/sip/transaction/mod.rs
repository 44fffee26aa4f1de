//! SIP transaction state machines: RFC 3261 §17 as updated by RFC 6026, sans-IO.
//!
//! What it owns: the state, the retransmission and timeout timers, and the
//! stored request/response/ACK bytes of one transaction. Five machines:
//!
//! * [`ClientInvite`]: §17.1.1 (Figure 5) with RFC 6026's Accepted state and
//!   Timer M; Timers A, B, D, M.
//! * [`ClientNonInvite`]: §17.1.2 (Figure 6); Timers E, F, K.
//! * [`ServerInvite`]: §17.2.1 (Figure 7) with RFC 6026's Accepted state and
//!   Timer L; Timers G, H, I, L.
//! * [`ServerNonInvite`]: §17.2.2 (Figure 8); Timer J.
//! * [`AckWait`]: the UAS core's 2xx retransmission of §13.3.1.4, which RFC 3261
//!   takes out of the INVITE server transaction; it retransmits the 2xx until
//!   the ACK arrives or 64·T1 passes.
//!
//! What it does not own: parsing, matching a message to its transaction
//! (§17.1.3, §17.2.3; the endpoint does that, helped by
//! [`is_rfc3261_branch`]), building messages other than through the
//! `build_ack` closure the owner hands in, sockets, the clock, counters.
//!
//! How it is driven (the quinn-proto / str0m model): every method takes
//! `now: Instant`; the machines never read a clock. Inputs are `handle_*`
//! calls with already-parsed facts (a status code) and already-encoded
//! [`Bytes`]. After any call, drain [`TxOutput`]s with `poll_output` until it
//! returns `None`, then ask `poll_timeout` for the earliest armed deadline and
//! call `handle_timeout(now)` at (or after) it. `handle_timeout` fires only
//! timers whose stored deadline is `<= now`, each at most once per call, so an
//! early, late or spurious wake-up is harmless. A timer that fires late is
//! re-armed relative to `now`, so a late owner never gets a burst of
//! retransmissions. [`TxOutput::Terminated`] is yielded exactly once, as the
//! last output; the owner then drops the machine. Inputs to a terminated
//! machine (and any out-of-place input, e.g. a 1xx after a final response) are
//! ignored: peer input never panics and never errors. Only a transaction user
//! mistake (`send_response` with a bad status or in a state that takes no
//! response) is reported, as a [`TransactionError`], and changes nothing.
//!
//! Transport: each machine is told at creation whether its transport is
//! reliable (TCP, TLS, WebSocket). On a reliable transport the retransmission
//! timers A, E and G are not used and the wait timers D, I, J and K are zero
//! (the machine terminates at once), per §17.1.1.2, §17.1.2.2, §17.2.1 and
//! §17.2.2. [`AckWait`] retransmits on every transport (§13.3.1.4: "independent
//! of whatever transport protocols are used").

mod client;
mod server;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use client::{ClientInvite, ClientInviteState, ClientNonInvite, ClientNonInviteState};
pub use server::{AckWait, ServerInvite, ServerInviteState, ServerNonInvite, ServerNonInviteState};

/// The RFC 3261 magic cookie that starts every compliant Via branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// Whether a Via `branch` value was minted by an RFC 3261 element, i.e. starts
/// with the magic cookie `z9hG4bK` (§8.1.1.7, §17.2.3). Such branches are
/// matched by branch + sent-by + method; others need the RFC 2543 rules. The
/// comparison is case-sensitive, as the RFC names the exact characters and
/// common stacks compare bytes.
pub fn is_rfc3261_branch(branch: &[u8]) -> bool {
    branch.starts_with(MAGIC_COOKIE)
}

/// RFC 3261 base timer values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M, and [`AckWait`]'s give-up.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D (§17.1.1.2): "at least 32 s" on an unreliable transport; we use
    /// max(32 s, 64·T1) so it also covers a peer's full Timer G/H span when T1
    /// is raised. Zero on a reliable transport.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.timeout())
        }
    }

    /// Next retransmission interval when doubling, capped at T2
    /// (Timers E, G and the §13.3.1.4 2xx retransmission).
    fn double_capped(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.t2)
    }
}

/// Something a transaction wants done, drained with `poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes to the peer over the transaction's transport.
    Transmit(Bytes),
    /// Tell the transaction user.
    Tu(TuEvent),
    /// The transaction is over; the owner drops it. Always the last output.
    Terminated,
}

/// An event for the transaction user (UAC/UAS core, dialog, B2BUA leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuEvent {
    /// Client transactions: pass up the response the owner just handed in
    /// with `handle_response` (the owner still holds the parsed message).
    Response {
        /// Its status code.
        status: u16,
    },
    /// Timer B, F or H fired, or [`AckWait`] gave up: the peer did not answer.
    Timeout,
    /// The owner reported that the transport failed to send for us.
    TransportError,
}

/// A transaction user asked for something the machine cannot do. Nothing was
/// sent and the state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// A response status outside 100..=699.
    #[error("status code {0} is outside 100..=699")]
    InvalidStatus(u16),
    /// The transaction takes no response of this class in its current state
    /// (e.g. a second final response, or anything after Terminated).
    #[error("cannot send a {status} response in state {state}")]
    WrongState {
        /// The status the TU tried to send.
        status: u16,
        /// The machine's state, e.g. "Completed".
        state: &'static str,
    },
}

/// Response classes as the machines see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// 1xx.
    Provisional,
    /// 2xx.
    Success,
    /// 300-699.
    Failure,
}

impl Class {
    fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(Self::Provisional),
            200..=299 => Some(Self::Success),
            300..=699 => Some(Self::Failure),
            _ => None,
        }
    }
}

/// The plumbing every machine shares: config, transport flag, `N` timer
/// deadlines indexed by the machine's own timer constants, and the output
/// queue.
#[derive(Debug)]
struct Machine<const N: usize> {
    config: TimerConfig,
    reliable: bool,
    deadlines: [Option<Instant>; N],
    outputs: VecDeque<TxOutput>,
    terminated: bool,
}

impl<const N: usize> Machine<N> {
    fn new(config: TimerConfig, reliable: bool) -> Self {
        Self {
            config,
            reliable,
            deadlines: [None; N],
            outputs: VecDeque::new(),
            terminated: false,
        }
    }

    /// Arms `timer` to fire `after` from `now`. A deadline past the end of
    /// `Instant`'s range (absurd config) means "never".
    fn arm(&mut self, timer: usize, now: Instant, after: Duration) {
        if let Some(slot) = self.deadlines.get_mut(timer) {
            *slot = now.checked_add(after);
        }
    }

    fn disarm(&mut self, timer: usize) {
        if let Some(slot) = self.deadlines.get_mut(timer) {
            *slot = None;
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The earliest timer due at `now` that has not fired in this
    /// `handle_timeout` call yet (ties go to the lower index, so a machine
    /// gives its timeout timers low indices). Disarms it and marks it fired.
    fn next_due(&mut self, now: Instant, fired: &mut [bool; N]) -> Option<usize> {
        let mut best: Option<(usize, Instant)> = None;
        for (i, (deadline, done)) in self.deadlines.iter().zip(fired.iter()).enumerate() {
            if let Some(at) = *deadline
                && !*done
                && at <= now
                && best.is_none_or(|(_, b)| at < b)
            {
                best = Some((i, at));
            }
        }
        let (i, _) = best?;
        if let Some(done) = fired.get_mut(i) {
            *done = true;
        }
        self.disarm(i);
        Some(i)
    }

    fn transmit(&mut self, bytes: Bytes) {
        self.outputs.push_back(TxOutput::Transmit(bytes));
    }

    fn tu(&mut self, event: TuEvent) {
        self.outputs.push_back(TxOutput::Tu(event));
    }

    /// Disarms everything and queues [`TxOutput::Terminated`] (once).
    fn terminate(&mut self) {
        if !self.terminated {
            self.terminated = true;
            self.deadlines = [None; N];
            self.outputs.push_back(TxOutput::Terminated);
        }
    }

    fn poll_output(&mut self) -> Option<TxOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_magic_cookie_rfc3261_8_1_1_7() {
        assert!(is_rfc3261_branch(b"z9hG4bK776asdhds"));
        assert!(is_rfc3261_branch(b"z9hG4bK"));
        assert!(!is_rfc3261_branch(b"776asdhds"));
        assert!(!is_rfc3261_branch(b"z9hG4b"));
        assert!(!is_rfc3261_branch(b""));
        assert!(!is_rfc3261_branch(b"Z9HG4BK776"));
    }

    #[test]
    fn timer_config_defaults_table_4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.timeout(), Duration::from_secs(32));
        assert_eq!(c.timer_d(false), Duration::from_secs(32));
        assert_eq!(c.timer_d(true), Duration::ZERO);
    }

    #[test]
    fn absurd_timer_config_never_panics() {
        let c = TimerConfig {
            t1: Duration::MAX,
            t2: Duration::ZERO,
            t4: Duration::MAX,
        };
        let now = Instant::now();
        let mut ict = ClientInvite::new(now, c, false, Bytes::from_static(b"INVITE"));
        ict.handle_timeout(now);
        ict.handle_response(now, 486, || Bytes::from_static(b"ACK"));
        while ict.poll_output().is_some() {}
        let mut ist = ServerInvite::new(now, c, false);
        assert!(
            ist.send_response(now, 486, Bytes::from_static(b"486"))
                .is_ok()
        );
        // T2 = 0: Timer G re-arms at `now` but fires at most once per call.
        ist.handle_timeout(now);
        ist.handle_timeout(now);
        while ist.poll_output().is_some() {}
    }

    /// Random input sequences (any status, any order, clock jumping forward,
    /// standing still or going back) never panic; `Terminated` comes once,
    /// last, and a terminated machine is silent with no timer armed.
    #[test]
    fn any_input_sequence_never_panics_and_terminates_once() {
        use rand::{RngExt, SeedableRng};
        use rand_chacha::ChaCha8Rng;

        #[derive(Default)]
        struct Check {
            terminated: bool,
        }
        impl Check {
            fn outputs(&mut self, seed: u64, outs: Vec<TxOutput>, timeout: Option<Instant>) {
                for o in outs {
                    assert!(
                        !self.terminated,
                        "seed {seed}: output after Terminated: {o:?}"
                    );
                    self.terminated = o == TxOutput::Terminated;
                }
                if self.terminated {
                    assert_eq!(timeout, None, "seed {seed}: timer armed after Terminated");
                }
            }
        }

        let statuses = [0, 99, 100, 180, 200, 202, 300, 486, 699, 700, u16::MAX];
        for seed in 0..300u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let t0 = Instant::now();
            let mut now = t0 + Duration::from_secs(10);
            let reliable = rng.random_bool(0.5);
            let cfg = TimerConfig::default();
            let req = Bytes::from_static(b"REQ");
            let mut ict = ClientInvite::new(now, cfg, reliable, req.clone());
            let mut nict = ClientNonInvite::new(now, cfg, reliable, req);
            let mut ist = ServerInvite::new(now, cfg, reliable);
            let mut nist = ServerNonInvite::new(now, cfg, reliable);
            let mut wait = AckWait::new(now, cfg, Bytes::from_static(b"200"));
            let mut checks: [Check; 5] = Default::default();
            for _ in 0..200 {
                now = match rng.random_range(0..10) {
                    0 => now
                        .checked_sub(Duration::from_millis(rng.random_range(0..1000)))
                        .unwrap_or(now),
                    1..=3 => now,
                    _ => now + Duration::from_millis(rng.random_range(0..20_000)),
                };
                let status = statuses[rng.random_range(0..statuses.len())];
                let body = Bytes::from_static(b"RESP");
                match rng.random_range(0..12) {
                    0 => ict.handle_response(now, status, || Bytes::from_static(b"ACK")),
                    1 => nict.handle_response(now, status),
                    2 => {
                        let _ = ist.send_response(now, status, body);
                    }
                    3 => {
                        let _ = nist.send_response(now, status, body);
                    }
                    4 => ist.handle_request(now),
                    5 => nist.handle_request(now),
                    6 => ist.handle_ack(now),
                    7 => wait.handle_ack(now),
                    8 => match rng.random_range(0..5) {
                        0 => ict.handle_transport_error(now),
                        1 => nict.handle_transport_error(now),
                        2 => ist.handle_transport_error(now),
                        3 => nist.handle_transport_error(now),
                        _ => wait.handle_transport_error(now),
                    },
                    _ => {
                        ict.handle_timeout(now);
                        nict.handle_timeout(now);
                        ist.handle_timeout(now);
                        nist.handle_timeout(now);
                        wait.handle_timeout(now);
                    }
                }
                let [a, b, c, d, e] = &mut checks;
                a.outputs(
                    seed,
                    std::iter::from_fn(|| ict.poll_output()).collect(),
                    ict.poll_timeout(),
                );
                b.outputs(
                    seed,
                    std::iter::from_fn(|| nict.poll_output()).collect(),
                    nict.poll_timeout(),
                );
                c.outputs(
                    seed,
                    std::iter::from_fn(|| ist.poll_output()).collect(),
                    ist.poll_timeout(),
                );
                d.outputs(
                    seed,
                    std::iter::from_fn(|| nist.poll_output()).collect(),
                    nist.poll_timeout(),
                );
                e.outputs(
                    seed,
                    std::iter::from_fn(|| wait.poll_output()).collect(),
                    wait.poll_timeout(),
                );
                assert_eq!(a.terminated, ict.is_terminated(), "seed {seed}");
                assert_eq!(b.terminated, nict.is_terminated(), "seed {seed}");
                assert_eq!(c.terminated, ist.is_terminated(), "seed {seed}");
                assert_eq!(d.terminated, nist.is_terminated(), "seed {seed}");
                assert_eq!(e.terminated, wait.is_terminated(), "seed {seed}");
            }
        }
    }

    /// A virtual-clock world: client and server machines joined by a lossy,
    /// jittery, reordering channel; time jumps to the next timer or delivery.
    mod sim {
        use super::super::*;
        use rand::{RngExt, SeedableRng};
        use rand_chacha::ChaCha8Rng;

        const SEEDS: u64 = 500;
        const MAX_STEPS: usize = 100_000;

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Dir {
            ToServer,
            ToClient,
        }

        struct Packet {
            at: Instant,
            seq: u64,
            dir: Dir,
            bytes: Bytes,
        }

        /// Loss, 0-200 ms jitter (which reorders), a per-run seeded RNG.
        struct Channel {
            rng: ChaCha8Rng,
            loss: f64,
            in_flight: Vec<Packet>,
            seq: u64,
            lost: u64,
            /// A window in which the link loses everything.
            blackout: Option<(Instant, Instant)>,
        }

        impl Channel {
            fn send(&mut self, now: Instant, dir: Dir, bytes: Bytes) {
                let dark = self
                    .blackout
                    .is_some_and(|(from, to)| from <= now && now < to);
                if dark || (self.loss > 0.0 && self.rng.random_bool(self.loss)) {
                    self.lost += 1;
                    return;
                }
                let delay = Duration::from_millis(self.rng.random_range(0..=200));
                self.seq += 1;
                self.in_flight.push(Packet {
                    at: now + delay,
                    seq: self.seq,
                    dir,
                    bytes,
                });
            }

            fn next_at(&self) -> Option<Instant> {
                self.in_flight.iter().map(|p| p.at).min()
            }

            /// The earliest packet due at `now` (ties in send order).
            fn take_due(&mut self, now: Instant) -> Option<Packet> {
                let i = self
                    .in_flight
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.at <= now)
                    .min_by_key(|(_, p)| (p.at, p.seq))
                    .map(|(i, _)| i)?;
                Some(self.in_flight.swap_remove(i))
            }
        }

        struct Setup {
            rng: ChaCha8Rng,
            channel: Channel,
            reliable: bool,
        }

        /// Loss 0-40 %. Every fifth seed loses nothing; every tenth is also a
        /// reliable transport (no loss, no retransmission timers). One seed
        /// in seven adds a blackout of 5-60 s starting in the first 3 s, so
        /// the timeout paths (Timers B, F, H, AckWait's give-up) run too.
        fn setup(seed: u64, t0: Instant) -> Setup {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let reliable = seed.is_multiple_of(10);
            let loss = if seed.is_multiple_of(5) {
                0.0
            } else {
                rng.random_range(0.0..0.4)
            };
            let blackout = (seed % 7 == 3 && loss > 0.0).then(|| {
                let from = t0 + Duration::from_millis(rng.random_range(0..3000));
                (
                    from,
                    from + Duration::from_millis(rng.random_range(5000..60_000)),
                )
            });
            let channel = Channel {
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c4a1),
                loss,
                in_flight: Vec::new(),
                seq: 0,
                lost: 0,
                blackout,
            };
            Setup {
                rng,
                channel,
                reliable,
            }
        }

        fn status_bytes(status: u16) -> Bytes {
            Bytes::from(format!("R{status}"))
        }

        fn parse_status(bytes: &[u8]) -> Option<u16> {
            std::str::from_utf8(bytes.strip_prefix(b"R")?)
                .ok()?
                .parse()
                .ok()
        }

        fn bound(c: &TimerConfig) -> Duration {
            c.timeout() + c.t4.max(Duration::from_secs(32))
        }

        fn min_opt(xs: &[Option<Instant>]) -> Option<Instant> {
            xs.iter().flatten().min().copied()
        }

        #[derive(Default)]
        struct ClientLog {
            provisional: usize,
            finals: Vec<u16>,
            timeouts: usize,
            transmits: usize,
            terminated_at: Option<Instant>,
        }

        /// One INVITE: ICT ↔ IST + AckWait, the UAS TU sends 100 at once,
        /// maybe a 180, then 200 or 486 within 0-2 s.
        fn run_invite(seed: u64) -> Result<Outcome, String> {
            let cfg = TimerConfig::default();
            let t0 = Instant::now();
            let Setup {
                mut rng,
                mut channel,
                reliable,
            } = setup(seed, t0);
            let mut now = t0;

            let mut ict = ClientInvite::new(now, cfg, reliable, Bytes::from_static(b"INVITE"));
            let mut client = ClientLog::default();
            let mut acks_built = 0usize;

            let mut ist: Option<ServerInvite> = None;
            let mut ist_done: Option<Instant> = None;
            let mut ist_timeout = false;
            let mut ack_wait: Option<AckWait> = None;
            let mut ack_wait_done: Option<Instant> = None;
            let mut ack_wait_timeout = false;
            let mut ringing_at: Option<Instant> = None;
            let mut final_at: Option<(Instant, u16)> = None;
            let mut final_sent: Option<Instant> = None;
            let mut finals_delivered_to_client = 0usize;

            for _ in 0..MAX_STEPS {
                // Server TU: scheduled responses.
                if let Some(s) = ist.as_mut() {
                    if ringing_at.is_some_and(|at| at <= now) {
                        ringing_at = None;
                        s.send_response(now, 180, status_bytes(180))
                            .map_err(|e| format!("180: {e}"))?;
                    }
                    if let Some((at, status)) = final_at
                        && at <= now
                    {
                        final_at = None;
                        ringing_at = None;
                        s.send_response(now, status, status_bytes(status))
                            .map_err(|e| format!("final: {e}"))?;
                        final_sent = Some(now);
                        if status == 200 {
                            ack_wait = Some(AckWait::new(now, cfg, status_bytes(200)));
                        }
                    }
                }
                // Deliveries.
                while let Some(p) = channel.take_due(now) {
                    match p.dir {
                        Dir::ToServer => match &p.bytes[..] {
                            b"INVITE" => match ist.as_mut() {
                                Some(s) => s.handle_request(now),
                                None if ist_done.is_none() => {
                                    let mut s = ServerInvite::new(now, cfg, reliable);
                                    // The endpoint sends 100 Trying at once.
                                    s.send_response(now, 100, status_bytes(100))
                                        .map_err(|e| format!("100: {e}"))?;
                                    if rng.random_bool(0.5) {
                                        ringing_at = Some(
                                            now + Duration::from_millis(rng.random_range(0..1000)),
                                        );
                                    }
                                    let status = if rng.random_bool(0.5) { 200 } else { 486 };
                                    final_at = Some((
                                        now + Duration::from_millis(rng.random_range(0..2000)),
                                        status,
                                    ));
                                    ist = Some(s);
                                }
                                None => {} // a stray late copy; the endpoint would reject it.
                            },
                            b"ACK-non2xx" => {
                                if let Some(s) = ist.as_mut() {
                                    s.handle_ack(now);
                                }
                            }
                            b"ACK-2xx" => {
                                if let Some(w) = ack_wait.as_mut() {
                                    w.handle_ack(now);
                                }
                            }
                            other => return Err(format!("server got {other:?}")),
                        },
                        Dir::ToClient => {
                            let status = parse_status(&p.bytes)
                                .ok_or_else(|| format!("client got {:?}", p.bytes))?;
                            if status >= 200 {
                                finals_delivered_to_client += 1;
                            }
                            if client.terminated_at.is_some() {
                                // RFC 6026: a stray 2xx goes to the UAC core,
                                // which ACKs it again.
                                if status == 200 {
                                    channel.send(
                                        now,
                                        Dir::ToServer,
                                        Bytes::from_static(b"ACK-2xx"),
                                    );
                                }
                            } else {
                                ict.handle_response(now, status, || {
                                    acks_built += 1;
                                    Bytes::from_static(b"ACK-non2xx")
                                });
                            }
                        }
                    }
                }
                // Timers (every machine, every step: spurious calls are harmless).
                ict.handle_timeout(now);
                if let Some(s) = ist.as_mut() {
                    s.handle_timeout(now);
                }
                if let Some(w) = ack_wait.as_mut() {
                    w.handle_timeout(now);
                }
                // Outputs.
                while let Some(out) = ict.poll_output() {
                    match out {
                        TxOutput::Transmit(b) => {
                            client.transmits += 1;
                            channel.send(now, Dir::ToServer, b);
                        }
                        TxOutput::Tu(TuEvent::Response { status }) => match status {
                            100..=199 => client.provisional += 1,
                            _ => {
                                client.finals.push(status);
                                if status == 200 {
                                    // The UAC core ACKs every 2xx it is given.
                                    channel.send(
                                        now,
                                        Dir::ToServer,
                                        Bytes::from_static(b"ACK-2xx"),
                                    );
                                }
                            }
                        },
                        TxOutput::Tu(TuEvent::Timeout) => client.timeouts += 1,
                        TxOutput::Tu(TuEvent::TransportError) => {
                            return Err("client transport error".into());
                        }
                        TxOutput::Terminated => {
                            if client.terminated_at.replace(now).is_some() {
                                return Err("ICT terminated twice".into());
                            }
                        }
                    }
                }
                if let Some(s) = ist.as_mut() {
                    while let Some(out) = s.poll_output() {
                        match out {
                            TxOutput::Transmit(b) => channel.send(now, Dir::ToClient, b),
                            TxOutput::Tu(TuEvent::Timeout) => ist_timeout = true,
                            TxOutput::Tu(e) => return Err(format!("IST TU event {e:?}")),
                            TxOutput::Terminated => ist_done = Some(now),
                        }
                    }
                    if ist_done.is_some() {
                        ist = None;
                    }
                }
                if let Some(w) = ack_wait.as_mut() {
                    while let Some(out) = w.poll_output() {
                        match out {
                            TxOutput::Transmit(b) => channel.send(now, Dir::ToClient, b),
                            TxOutput::Tu(TuEvent::Timeout) => ack_wait_timeout = true,
                            TxOutput::Tu(e) => return Err(format!("AckWait TU event {e:?}")),
                            TxOutput::Terminated => ack_wait_done = Some(now),
                        }
                    }
                    if ack_wait_done.is_some() {
                        ack_wait = None;
                    }
                }
                // Jump to the next deadline.
                let next = min_opt(&[
                    ict.poll_timeout(),
                    ist.as_ref().and_then(ServerInvite::poll_timeout),
                    ack_wait.as_ref().and_then(AckWait::poll_timeout),
                    channel.next_at(),
                    if ist.is_some() { ringing_at } else { None },
                    if ist.is_some() {
                        final_at.map(|(at, _)| at)
                    } else {
                        None
                    },
                ]);
                match next {
                    Some(at) if at < now => return Err(format!("deadline in the past: {at:?}")),
                    Some(at) => now = at,
                    None => break,
                }
            }
            if channel.next_at().is_some() {
                return Err("world did not settle".into());
            }

            // Invariants.
            let bound = bound(&cfg);
            let from = final_sent.map_or(t0, |f| f.max(t0));
            let non2xx = client.finals.iter().filter(|&&s| s != 200).count();
            if client.finals.iter().any(|&s| s != client.finals[0]) {
                return Err(format!("mixed finals {:?}", client.finals));
            }
            if non2xx > 1 {
                return Err(format!("non-2xx final passed up {non2xx} times"));
            }
            if acks_built > 1 {
                return Err(format!("build_ack called {acks_built} times"));
            }
            if client.timeouts > 0 && !client.finals.is_empty() {
                return Err("both a final and a Timeout".into());
            }
            if client.timeouts > 1 {
                return Err("two Timeouts".into());
            }
            let stuck_in_proceeding = ict.state() == ClientInviteState::Proceeding
                && finals_delivered_to_client == 0
                && client.provisional > 0;
            if stuck_in_proceeding {
                // RFC 3261 Figure 5: no Timer B in Proceeding; every final
                // was lost and the TU's own guard (CANCEL, Timer C) decides.
                if channel.lost == 0 {
                    return Err("stuck in Proceeding without loss".into());
                }
            } else {
                if client.finals.is_empty() && client.timeouts == 0 {
                    return Err("client got neither a final nor a Timeout".into());
                }
                match client.terminated_at {
                    None => return Err(format!("ICT not terminated: {:?}", ict.state())),
                    Some(at) if at - from > bound => {
                        return Err(format!("ICT lived {:?}", at - from));
                    }
                    Some(_) => {}
                }
            }
            if ist.is_some() || ack_wait.is_some() {
                return Err("server machine not terminated".into());
            }
            if let Some(at) = ist_done
                && at - from > bound
            {
                return Err(format!("IST lived {:?} after its final", at - from));
            }
            if let Some(at) = ack_wait_done
                && at - from > cfg.timeout()
            {
                return Err(format!("AckWait lived {:?}", at - from));
            }
            if channel.lost == 0 {
                if client.finals.is_empty() || client.timeouts > 0 {
                    return Err("lossless, yet no final".into());
                }
                if ist_timeout || ack_wait_timeout {
                    return Err("lossless, yet the server timed out".into());
                }
            }
            if reliable && client.transmits != 1 + usize::from(acks_built == 1) {
                return Err(format!("reliable: ICT sent {} messages", client.transmits));
            }
            Ok(Outcome {
                final_status: client.finals.first().copied(),
                timeout: client.timeouts > 0,
                stuck: stuck_in_proceeding,
                lost: channel.lost,
                reliable,
                server_timeout: ist_timeout || ack_wait_timeout,
            })
        }

        /// One non-INVITE: NICT ↔ NIST, the UAS TU maybe sends a 1xx, then
        /// a final (200 or 404) within 0-3 s.
        fn run_non_invite(seed: u64) -> Result<Outcome, String> {
            let cfg = TimerConfig::default();
            let t0 = Instant::now();
            let Setup {
                mut rng,
                mut channel,
                reliable,
            } = setup(seed, t0);
            let mut now = t0;

            let mut nict = ClientNonInvite::new(now, cfg, reliable, Bytes::from_static(b"REQ"));
            let mut client = ClientLog::default();
            let mut nist: Option<ServerNonInvite> = None;
            let mut nist_done: Option<Instant> = None;
            let mut provisional_at: Option<Instant> = None;
            let mut final_at: Option<(Instant, u16)> = None;
            let mut final_sent: Option<Instant> = None;

            for _ in 0..MAX_STEPS {
                if let Some(s) = nist.as_mut() {
                    if let Some(at) = provisional_at
                        && at <= now
                    {
                        provisional_at = None;
                        s.send_response(now, 183, status_bytes(183))
                            .map_err(|e| format!("1xx: {e}"))?;
                    }
                    if let Some((at, status)) = final_at
                        && at <= now
                    {
                        final_at = None;
                        provisional_at = None;
                        s.send_response(now, status, status_bytes(status))
                            .map_err(|e| format!("final: {e}"))?;
                        final_sent = Some(now);
                    }
                }
                while let Some(p) = channel.take_due(now) {
                    match p.dir {
                        Dir::ToServer => match nist.as_mut() {
                            Some(s) => s.handle_request(now),
                            None if nist_done.is_none() => {
                                nist = Some(ServerNonInvite::new(now, cfg, reliable));
                                if rng.random_bool(0.3) {
                                    provisional_at = Some(
                                        now + Duration::from_millis(rng.random_range(0..1500)),
                                    );
                                }
                                let status = if rng.random_bool(0.5) { 200 } else { 404 };
                                final_at = Some((
                                    now + Duration::from_millis(rng.random_range(0..3000)),
                                    status,
                                ));
                            }
                            None => {}
                        },
                        Dir::ToClient => {
                            let status = parse_status(&p.bytes)
                                .ok_or_else(|| format!("client got {:?}", p.bytes))?;
                            nict.handle_response(now, status);
                        }
                    }
                }
                nict.handle_timeout(now);
                if let Some(s) = nist.as_mut() {
                    s.handle_timeout(now);
                }
                while let Some(out) = nict.poll_output() {
                    match out {
                        TxOutput::Transmit(b) => {
                            client.transmits += 1;
                            channel.send(now, Dir::ToServer, b);
                        }
                        TxOutput::Tu(TuEvent::Response { status }) if status < 200 => {
                            client.provisional += 1;
                        }
                        TxOutput::Tu(TuEvent::Response { status }) => client.finals.push(status),
                        TxOutput::Tu(TuEvent::Timeout) => client.timeouts += 1,
                        TxOutput::Tu(TuEvent::TransportError) => {
                            return Err("client transport error".into());
                        }
                        TxOutput::Terminated => {
                            if client.terminated_at.replace(now).is_some() {
                                return Err("NICT terminated twice".into());
                            }
                        }
                    }
                }
                if let Some(s) = nist.as_mut() {
                    while let Some(out) = s.poll_output() {
                        match out {
                            TxOutput::Transmit(b) => channel.send(now, Dir::ToClient, b),
                            TxOutput::Tu(e) => return Err(format!("NIST TU event {e:?}")),
                            TxOutput::Terminated => nist_done = Some(now),
                        }
                    }
                    if nist_done.is_some() {
                        nist = None;
                    }
                }
                let next = min_opt(&[
                    nict.poll_timeout(),
                    nist.as_ref().and_then(ServerNonInvite::poll_timeout),
                    channel.next_at(),
                    if nist.is_some() { provisional_at } else { None },
                    if nist.is_some() {
                        final_at.map(|(at, _)| at)
                    } else {
                        None
                    },
                ]);
                match next {
                    Some(at) if at < now => return Err(format!("deadline in the past: {at:?}")),
                    Some(at) => now = at,
                    None => break,
                }
            }
            if channel.next_at().is_some() {
                return Err("world did not settle".into());
            }

            let bound = bound(&cfg);
            let exactly_one = usize::from(client.finals.len() == 1 && client.timeouts == 0)
                + usize::from(client.finals.is_empty() && client.timeouts == 1);
            if exactly_one != 1 {
                return Err(format!(
                    "finals {:?}, timeouts {}",
                    client.finals, client.timeouts
                ));
            }
            match client.terminated_at {
                None => return Err(format!("NICT not terminated: {:?}", nict.state())),
                // NICT: Timer F bounds it from its own start.
                Some(at) if at - t0 > bound => return Err(format!("NICT lived {:?}", at - t0)),
                Some(_) => {}
            }
            if nist.is_some() {
                return Err("NIST not terminated".into());
            }
            if let (Some(at), Some(sent)) = (nist_done, final_sent)
                && at - sent > bound
            {
                return Err(format!("NIST lived {:?} after its final", at - sent));
            }
            if channel.lost == 0 && (client.finals.is_empty() || client.timeouts > 0) {
                return Err("lossless, yet no final".into());
            }
            if reliable && client.transmits != 1 {
                return Err(format!("reliable: NICT sent {} messages", client.transmits));
            }
            Ok(Outcome {
                final_status: client.finals.first().copied(),
                timeout: client.timeouts > 0,
                stuck: false,
                lost: channel.lost,
                reliable,
                server_timeout: false,
            })
        }

        /// What one run ended with, to check the seeds covered every path.
        #[derive(Debug)]
        struct Outcome {
            final_status: Option<u16>,
            timeout: bool,
            stuck: bool,
            lost: u64,
            reliable: bool,
            server_timeout: bool,
        }

        fn run_seeds(kind: &str, run: fn(u64) -> Result<Outcome, String>) -> Vec<Outcome> {
            let mut failures = Vec::new();
            let mut outcomes = Vec::new();
            for seed in 0..SEEDS {
                match run(seed) {
                    Ok(o) => outcomes.push(o),
                    Err(e) => failures.push(format!("{kind} seed {seed}: {e}")),
                }
            }
            assert!(
                failures.is_empty(),
                "{} failures:\n{}",
                failures.len(),
                failures.join("\n")
            );
            let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
            println!(
                "{kind}: {} runs, 2xx {}, non-2xx {}, client timeout {}, stuck in Proceeding {}, \
                 server timeout {}, lossy {}, reliable {}",
                outcomes.len(),
                count(|o| o.final_status.is_some_and(|s| s < 300)),
                count(|o| o.final_status.is_some_and(|s| s >= 300)),
                count(|o| o.timeout),
                count(|o| o.stuck),
                count(|o| o.server_timeout),
                count(|o| o.lost > 0),
                count(|o| o.reliable),
            );
            outcomes
        }

        #[test]
        fn sim_invite_ict_ist_ack_wait_lossy_channel() {
            let runs = run_seeds("invite", run_invite);
            // The seeds reach every ending: 2xx, non-2xx, client Timer B,
            // server Timer H / AckWait give-up, and reliable transports.
            assert!(runs.iter().any(|o| o.final_status == Some(200)));
            assert!(runs.iter().any(|o| o.final_status == Some(486)));
            assert!(runs.iter().any(|o| o.timeout));
            assert!(runs.iter().any(|o| o.server_timeout));
            assert!(runs.iter().any(|o| o.reliable && o.final_status.is_some()));
        }

        #[test]
        fn sim_non_invite_nict_nist_lossy_channel() {
            let runs = run_seeds("non-invite", run_non_invite);
            assert!(runs.iter().any(|o| o.final_status == Some(200)));
            assert!(runs.iter().any(|o| o.final_status == Some(404)));
            assert!(runs.iter().any(|o| o.timeout));
            assert!(runs.iter().any(|o| o.reliable && o.final_status.is_some()));
        }
    }
}
