//! One shard: a pinned thread running its own I/O driver, timer wheel and
//! SIP endpoint, and talking to the other shards only through the mesh.
//!
//! Loop: wait for I/O (up to the next timer), feed every event to the
//! endpoint, take what the mesh brought, fire due timers, then carry out the
//! endpoint's outputs (sends batched until one `flush_for_poll`, forwards and
//! broadcasts pushed to the mesh, timers into the wheel) and wake the shards
//! it pushed to, once each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::driver::{ConnId, Driver, IoEvent, ListenerId, SockId, Waker};
use super::mesh::{Mesh, MeshMsg};
use super::recwriter::{RecOp, RecordingSink};
use super::wheel::TimerWheel;
use crate::call::record::{LogSink, RecordSink};
use crate::media::engine::{MediaSock, PortPair, RecordingOp};
use crate::sip::endpoint::{Endpoint, Link, Output, Peer, TimerKey};
use crate::sip::framing::{Frame, StreamFramer};
use crate::sip::ids::ShardId;
use crate::stats::ShardCounters;

/// Timers of the shell itself plus the endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardTimer {
    Endpoint(TimerKey),
    /// Sweep TCP connections for idle and slow senders.
    Housekeeping,
}

/// One accepted TCP connection.
struct Conn {
    peer: SocketAddr,
    framer: StreamFramer,
    last_activity: Instant,
}

/// Settings the shard loop needs beyond the endpoint's.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub timer_tick: Duration,
    pub tcp_idle_timeout: Duration,
    pub tcp_message_timeout: Duration,
    pub tcp_max_connections: usize,
    pub max_message_bytes: usize,
    pub drain_timeout: Duration,
    /// Address RTP sockets bind to.
    pub media_ip: std::net::IpAddr,
    /// This shard's RTP ports: the first RTP port and the pair count.
    pub media_ports: (u16, u16),
}

/// Bound RTP pairs kept ready beyond those in use; more are bound as calls
/// take them (two per call), up to the shard's slice.
const WARM_PAIRS: usize = 64;

/// Everything a shard owns except its driver (borrowed separately while
/// the driver reports events).
pub struct Shard {
    pub id: ShardId,
    pub endpoint: Endpoint,
    pub settings: ShardSettings,
    pub counters: Arc<ShardCounters>,
    pub mesh: Arc<Mesh>,
    /// Listen index (in `sip.listen`) of each UDP socket, and back.
    pub udp_listen: HashMap<SockId, u16>,
    pub listen_udp: HashMap<u16, SockId>,
    pub tcp_listeners: HashMap<ListenerId, u16>,
    conns: HashMap<ConnId, Conn>,
    wheel: TimerWheel<ShardTimer>,
    fired: Vec<ShardTimer>,
    /// Work decided while the driver was borrowed.
    stream_sends: Vec<(ConnId, Bytes)>,
    closes: Vec<ConnId>,
    touched: Vec<bool>,
    /// Where finished call records go (the log until the shell sets the
    /// store's sink).
    pub records: Box<dyn RecordSink>,
    /// Sockets of the media engine, by socket index.
    media_socks: Vec<bool>,
    /// Pairs of the slice not tried yet.
    media_next: u16,
    /// Where recording ops go (the writer thread), once running.
    pub recordings: Option<RecordingSink>,
    /// Recording ops waiting for room in the writer's queue.
    rec_retry: std::collections::VecDeque<RecOp>,
    /// The rings to the ACD thread, once running.
    pub acd: Option<Arc<super::acd::AcdLink>>,
    /// Inputs for the ACD not yet in its ring.
    acd_backlog: std::collections::VecDeque<crate::acd::Input>,
    /// The rings to the control plane (CTI), once set.
    pub cti: Option<Arc<crate::cti::link::CtiLink>>,
    /// CTI events and replies waiting for room in the ring.
    cti_backlog: std::collections::VecDeque<crate::cti::event::ToControl>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        endpoint: Endpoint,
        settings: ShardSettings,
        counters: Arc<ShardCounters>,
        mesh: Arc<Mesh>,
        now: Instant,
    ) -> Self {
        let shards = mesh.shards();
        let mut wheel = TimerWheel::new(now, settings.timer_tick);
        wheel.insert(now + Duration::from_secs(1), ShardTimer::Housekeeping);
        Shard {
            id,
            endpoint,
            settings,
            counters,
            mesh,
            udp_listen: HashMap::new(),
            listen_udp: HashMap::new(),
            tcp_listeners: HashMap::new(),
            conns: HashMap::new(),
            wheel,
            fired: Vec::new(),
            stream_sends: Vec::new(),
            closes: Vec::new(),
            touched: vec![false; shards],
            records: Box::new(LogSink),
            media_socks: Vec::new(),
            media_next: 0,
            recordings: None,
            rec_retry: std::collections::VecDeque::new(),
            acd: None,
            acd_backlog: std::collections::VecDeque::new(),
            cti: None,
            cti_backlog: std::collections::VecDeque::new(),
        }
    }

    /// Runs until `stop` is set and the drain is over.
    pub fn run(
        &mut self,
        driver: &mut dyn Driver,
        wakers: &[Waker],
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timeout = self
                .wheel
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
                .map(|d| {
                    if drain_deadline.is_some() {
                        d.min(Duration::from_millis(50))
                    } else {
                        d
                    }
                });
            driver.poll(timeout, &mut |ev| self.on_io(ev))?;
            let now = Instant::now();
            let me = usize::from(self.id.0);
            let mesh = self.mesh.clone();
            mesh.drain(me, |m| self.on_mesh(now, m));
            if let Some(link) = self.acd.clone() {
                link.drain(me, |o| self.endpoint.handle_acd(now, o));
            }
            if let Some(link) = self.cti.clone() {
                link.drain_commands(me, |c| self.endpoint.handle_cti(now, c));
            }
            self.wheel.expire(now, &mut self.fired);
            let fired = std::mem::take(&mut self.fired);
            for t in &fired {
                match *t {
                    ShardTimer::Endpoint(k) => self.endpoint.handle_timer(now, k),
                    ShardTimer::Housekeeping => self.housekeeping(now),
                }
            }
            self.fired = fired;
            self.fired.clear();
            self.execute(now, driver);
            driver.flush_for_poll()?;
            self.wake_touched(wakers);
            self.counters
                .datagrams_truncated
                .set(driver.dropped_truncated());

            if stop.load(Ordering::Relaxed) {
                let deadline = *drain_deadline.get_or_insert_with(|| {
                    tracing::info!(shard = self.id.0, "draining");
                    self.endpoint.begin_drain(now);
                    now + self.settings.drain_timeout
                });
                let pending = self.endpoint.pending_invites();
                if pending == 0 || now >= deadline {
                    if pending > 0 {
                        tracing::warn!(
                            shard = self.id.0,
                            pending,
                            "drain timeout, exiting with work pending"
                        );
                    }
                    return driver.flush();
                }
            }
        }
    }

    /// Applies what other shards sent before this message arrived (e.g. a
    /// registration a REGISTER's 200 OK already confirmed), so a message
    /// never overtakes the mesh traffic that happened before it.
    fn catch_up_mesh(&mut self, now: Instant) {
        let mesh = Arc::clone(&self.mesh);
        mesh.drain(usize::from(self.id.0), |m| self.on_mesh(now, m));
    }

    fn on_io(&mut self, ev: IoEvent<'_>) {
        let now = Instant::now();
        let media = matches!(ev, IoEvent::Datagram { sock, .. } if self.media_socks.get(usize::from(sock.0)) == Some(&true));
        if !media && matches!(ev, IoEvent::Datagram { .. } | IoEvent::Stream { .. }) {
            self.catch_up_mesh(now);
        }
        match ev {
            IoEvent::Datagram { sock, src, data }
                if self.media_socks.get(usize::from(sock.0)) == Some(&true) =>
            {
                self.endpoint
                    .handle_media(now, MediaSock(sock.0), src, data);
            }
            IoEvent::Datagram { sock, src, data } => {
                let Some(&listen) = self.udp_listen.get(&sock) else {
                    return;
                };
                let peer = Peer {
                    link: Link::Udp { listen },
                    addr: src,
                };
                self.endpoint
                    .handle_message(now, peer, Bytes::copy_from_slice(data));
            }
            IoEvent::Accepted { conn, peer, .. } => {
                self.counters.tcp_accepted.bump();
                if self.conns.len() >= self.settings.tcp_max_connections {
                    tracing::warn!(%peer, max = self.settings.tcp_max_connections, "too many TCP connections on this shard, closing");
                    self.closes.push(conn);
                    return;
                }
                self.conns.insert(
                    conn,
                    Conn {
                        peer,
                        framer: StreamFramer::new(self.settings.max_message_bytes),
                        last_activity: now,
                    },
                );
            }
            IoEvent::Stream { conn, data } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.last_activity = now;
                c.framer.push(now, data);
                loop {
                    match c.framer.next_frame(now) {
                        Ok(Some(Frame::Message(msg))) => {
                            let peer = Peer {
                                link: Link::Tcp {
                                    shard: self.id,
                                    conn: conn.0,
                                },
                                addr: c.peer,
                            };
                            self.endpoint.handle_message(now, peer, msg);
                        }
                        Ok(Some(Frame::Ping)) => {
                            self.stream_sends.push((conn, Bytes::from_static(b"\r\n")))
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.counters.tcp_closed_bad_framing.bump();
                            tracing::info!(peer = %c.peer, problem = %e, "closing TCP connection: cannot frame SIP");
                            self.closes.push(conn);
                            break;
                        }
                    }
                }
            }
            IoEvent::Closed { conn, .. } => {
                self.conns.remove(&conn);
            }
            IoEvent::Wake => {}
        }
    }

    fn on_mesh(&mut self, now: Instant, m: MeshMsg) {
        match m {
            MeshMsg::Sip(f) => self.endpoint.handle_forwarded(now, f),
            MeshMsg::Binding(b) => self.endpoint.handle_binding_change(b),
            MeshMsg::Stream { conn, data } => self.stream_sends.push((ConnId(conn), data)),
        }
    }

    /// Closes idle TCP connections and slow senders.
    fn housekeeping(&mut self, now: Instant) {
        for (id, c) in &self.conns {
            let slow = c.framer.partial_since().is_some_and(|t| {
                now.saturating_duration_since(t) > self.settings.tcp_message_timeout
            });
            let idle =
                now.saturating_duration_since(c.last_activity) > self.settings.tcp_idle_timeout;
            if slow {
                self.counters.tcp_closed_slow.bump();
                tracing::info!(peer = %c.peer, "closing TCP connection: message not completed in time");
            }
            if slow || idle {
                self.closes.push(*id);
            }
        }
        self.wheel
            .insert(now + Duration::from_secs(1), ShardTimer::Housekeeping);
    }

    /// Carries out the endpoint's outputs and the deferred stream work.
    fn execute(&mut self, now: Instant, driver: &mut dyn Driver) {
        let me = usize::from(self.id.0);
        while let Some(o) = self.endpoint.poll_output() {
            match o {
                Output::Transmit { peer, data } => match peer.link {
                    Link::Udp { listen } => {
                        if let Some(&sock) = self.listen_udp.get(&listen) {
                            driver.send_to(sock, peer.addr, &data);
                        }
                    }
                    Link::Tcp { shard, conn } if shard == self.id => {
                        driver.send_stream(ConnId(conn), &data)
                    }
                    Link::Tcp { shard, conn } => {
                        self.push(me, usize::from(shard.0), MeshMsg::Stream { conn, data })
                    }
                },
                Output::Forward { shard, msg } => {
                    self.push(me, usize::from(shard.0), MeshMsg::Sip(msg))
                }
                Output::Broadcast(change) => {
                    for to in (0..self.mesh.shards()).filter(|&s| s != me) {
                        self.push(me, to, MeshMsg::Binding(change.clone()));
                    }
                }
                Output::Timer { at, key } => {
                    self.wheel.insert(at.max(now), ShardTimer::Endpoint(key))
                }
                Output::Record(r) => self.records.handle_record(*r),
                Output::Acd(i) => self.acd_backlog.push_back(i),
                Output::Cti(m) => {
                    if self.cti.is_some() {
                        self.cti_backlog.push_back(m);
                    }
                }
            }
        }
        if !self.cti_backlog.is_empty()
            && let Some(link) = &self.cti
        {
            link.submit(me, &mut self.cti_backlog);
        }
        if !self.acd_backlog.is_empty()
            && let Some(link) = &self.acd
            && link.submit(me, &mut self.acd_backlog)
        {
            link.wake_acd();
        }
        while let Some((sock, peer)) = self.endpoint.media_mut().poll_connect() {
            if let Err(e) = driver.connect_udp(SockId(sock.0), peer) {
                // Only the kernel's filtering and the cached route are lost:
                // the engine still latches and addresses every packet.
                tracing::debug!(sock = sock.0, ?peer, error = %e, "cannot connect an RTP socket");
            }
        }
        self.endpoint
            .media_mut()
            .drain_transmits(|sock, dst, data| driver.send_to(SockId(sock.0), dst, data));
        self.top_up_media(driver);
        self.hand_over_recordings();
        for (conn, data) in self.stream_sends.drain(..) {
            driver.send_stream(conn, &data);
        }
        for conn in self.closes.drain(..) {
            driver.close(conn);
            self.conns.remove(&conn);
        }
    }

    /// Passes the media engine's recording work to the writer thread (the
    /// wall clock dates a new recording's directory).
    fn hand_over_recordings(&mut self) {
        while let Some(op) = self.endpoint.media_mut().poll_recording() {
            let op = match op {
                RecordingOp::Open { id, call_id } => RecOp::Open {
                    id,
                    call_id,
                    started_unix_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                },
                RecordingOp::Data { id, offset, bytes } => RecOp::Data { id, offset, bytes },
                RecordingOp::Close { id, data_len } => RecOp::Close { id, data_len },
            };
            self.rec_retry.push_back(op);
        }
        let Some(sink) = &self.recordings else {
            self.rec_retry.clear();
            return;
        };
        // In order; a full queue drops audio (counted by the sink) but
        // keeps opens and closes for the next turn of the loop.
        while let Some(op) = self.rec_retry.pop_front() {
            if let Err(op) = sink.try_submit(op) {
                match op {
                    RecOp::Data { .. } => {
                        sink.submit(op);
                    }
                    op => {
                        self.rec_retry.push_front(op);
                        break;
                    }
                }
            }
        }
    }

    /// Bind RTP pairs for the start, waiting up to `patience` while the
    /// whole slice is still held: a predecessor killed with `kill -9` keeps
    /// its io_uring sockets until the kernel has torn its ring down, a few
    /// milliseconds after it exited. True once at least one pair is bound.
    pub fn bind_initial_media(&mut self, driver: &mut dyn Driver, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            self.top_up_media(driver);
            if self.endpoint.media_mut().free_pairs() > 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
            self.media_next = 0;
        }
    }

    /// Binds RTP/RTCP pairs of this shard's slice until `WARM_PAIRS` are
    /// free (a port another process holds is skipped).
    pub fn top_up_media(&mut self, driver: &mut dyn Driver) {
        let (first, count) = self.settings.media_ports;
        while self.endpoint.media_mut().free_pairs() < WARM_PAIRS && self.media_next < count {
            let port = first + 2 * self.media_next;
            self.media_next += 1;
            let ip = self.settings.media_ip;
            let bind = |p: u16| -> std::io::Result<std::net::UdpSocket> {
                let s = std::net::UdpSocket::bind(SocketAddr::new(ip, p))?;
                s.set_nonblocking(true)?;
                Ok(s)
            };
            let (rtp, rtcp) = match (bind(port), bind(port + 1)) {
                (Ok(a), Ok(b)) => (a, b),
                (a, b) => {
                    let e = a.err().or(b.err());
                    tracing::debug!(port, error = ?e, "RTP port pair not available, skipped");
                    continue;
                }
            };
            let (Ok(rtp), Ok(rtcp)) = (driver.add_media_udp(rtp), driver.add_media_udp(rtcp))
            else {
                tracing::warn!(port, "cannot register an RTP socket with the driver");
                continue;
            };
            for s in [rtp, rtcp] {
                let i = usize::from(s.0);
                if self.media_socks.len() <= i {
                    self.media_socks.resize(i + 1, false);
                }
                self.media_socks[i] = true;
            }
            self.endpoint.media_mut().add_pair(PortPair {
                port,
                rtp: MediaSock(rtp.0),
                rtcp: MediaSock(rtcp.0),
            });
        }
    }

    fn push(&mut self, from: usize, to: usize, msg: MeshMsg) {
        if self.mesh.push(from, to, msg) {
            if let Some(t) = self.touched.get_mut(to) {
                *t = true;
            }
        } else {
            tracing::warn!(from, to, "mesh queue full, message dropped");
        }
    }

    fn wake_touched(&mut self, wakers: &[Waker]) {
        for (i, t) in self.touched.iter_mut().enumerate() {
            if std::mem::take(t)
                && let Some(w) = wakers.get(i)
            {
                w.wake();
            }
        }
    }
}
