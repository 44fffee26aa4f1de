//! epoll shard driver: the fallback for kernels or sandboxes without a
//! usable io_uring.
//!
//! Readiness based and level triggered, so an event that is not fully
//! drained (we cap the work per event for fairness) simply comes back on the
//! next `epoll_wait`:
//! * UDP: `recvmmsg` of up to `batch` datagrams per call into one
//!   preallocated `batch × max_datagram` buffer (no allocation per datagram),
//!   `MSG_TRUNC` datagrams dropped and counted. Media sockets are read the
//!   same way; datagrams over `media_payload_max` are dropped and counted
//!   too, so both drivers accept the same sizes. Sends are queued per socket
//!   and leave in `flush` through `sendmmsg`, up to `batch` per call; if the
//!   socket buffer is full the rest waits for `EPOLLOUT`.
//! * TCP: nonblocking `accept4`, `read` into a shared scratch buffer, `send`
//!   (`MSG_NOSIGNAL`) of the connection's backlog in `flush`; a backlog the
//!   kernel did not take arms `EPOLLOUT` until it drains.
//! * Wake: an `EFD_NONBLOCK` eventfd in the epoll set, read to reset it.
//!
//! Nothing is in flight between calls, so a removed socket is closed at once
//! and its id may be reused by the next `add_*udp` (oldest free id first).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{
    ACCEPT_PAUSE, CloseReason, ConnId, Driver, DriverOptions, DriverStats, IoEvent, ListenerId,
    PendingCloses, SendPool, Slots, SockId, StreamOut, Waker, accept_error_needs_pause,
    connect_socket, errno_of, is_icmp_report, sockaddr_to_std, timeout_ms, zeroed_storage,
};

// epoll data layout: kind in the top 8 bits, an index or ConnId below.
const K_UDP: u64 = 1;
const K_LISTENER: u64 = 2;
const K_CONN: u64 = 3;
const K_WAKE: u64 = 4;

fn token(kind: u64, idx: u64) -> u64 {
    super::pack_tag(kind, idx)
}

/// `recvmmsg` calls per ready socket per `poll` before moving on.
const UDP_ROUNDS: usize = 4;
/// Accepts per ready listener per `poll`.
const ACCEPTS_PER_EVENT: usize = 64;
/// Reads per ready connection per `poll`.
const READS_PER_EVENT: usize = 4;
/// Datagrams waiting for `EPOLLOUT` per socket before new ones are dropped.
const UDP_QUEUE_LIMIT: usize = 16384;
/// epoll events fetched per `epoll_wait`.
const EVENTS: usize = 256;

struct UdpSock {
    sock: UdpSocket,
    /// Largest payload reported; longer datagrams are dropped as truncated.
    limit: usize,
    /// Send slots queued for this socket, oldest first.
    queue: VecDeque<u32>,
    /// In `dirty_udp`.
    dirty: bool,
    /// EPOLLOUT is armed.
    want_out: bool,
}

struct Listener {
    listener: TcpListener,
    paused_until: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    out: StreamOut,
    want_out: bool,
    dirty: bool,
}

/// Preallocated `recvmmsg` state: `batch` buffers of `max_datagram` bytes,
/// source addresses and headers. Pointers are rebuilt before every call
/// from fresh `&mut` borrows, so nothing dangles across moves.
struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    stride: usize,
}

impl RecvBatch {
    fn new(batch: usize, stride: usize) -> Self {
        RecvBatch {
            bufs: vec![0; batch * stride],
            names: vec![zeroed_storage(); batch],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                batch
            ],
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            hdrs: vec![unsafe { mem::zeroed() }; batch],
            stride,
        }
    }

    /// Receive up to `batch` datagrams; returns how many (0 on EAGAIN).
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        let n = self.hdrs.len();
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            // SAFETY: i * stride + stride ≤ bufs.len() by construction.
            self.iovs[i] = libc::iovec {
                iov_base: unsafe { base.add(i * self.stride) }.cast(),
                iov_len: self.stride,
            };
        }
        let iovs = self.iovs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            // SAFETY: msghdr is plain old data; all-zero is a valid value.
            let mut m: libc::msghdr = unsafe { mem::zeroed() };
            // SAFETY: i < n = names.len() = iovs.len().
            m.msg_name = unsafe { names.add(i) }.cast();
            m.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: as above.
            m.msg_iov = unsafe { iovs.add(i) };
            m.msg_iovlen = 1;
            *h = libc::mmsghdr {
                msg_hdr: m,
                msg_len: 0,
            };
        }
        loop {
            // SAFETY: `hdrs` holds `n` initialised headers whose name/iov
            // pointers address `names`, `iovs` and `bufs`, all owned by self,
            // alive and not otherwise borrowed during this synchronous call.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Ok(0),
                e => return Err(e.into()),
            }
        }
    }
}

/// The epoll driver. See the module docs.
pub struct EpollDriver {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    udp: Slots<UdpSock>,
    listeners: Vec<Listener>,
    paused_listeners: usize,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    rx: RecvBatch,
    tx_iovs: Vec<libc::iovec>,
    tx_hdrs: Vec<libc::mmsghdr>,
    pool: SendPool,
    dirty_udp: Vec<u16>,
    dirty_conns: Vec<ConnId>,
    closed: PendingCloses,
    wake: Arc<OwnedFd>,
    stream_buf: Vec<u8>,
    opts: DriverOptions,
    stats: DriverStats,
}

// SAFETY: the only non-Send fields are the libc iovec/mmsghdr scratch arrays,
// whose raw pointers are rebuilt before every syscall and point into memory
// owned by this driver; nothing is shared with other threads.
unsafe impl Send for EpollDriver {}

impl EpollDriver {
    pub fn new(opts: &DriverOptions) -> io::Result<Self> {
        opts.validate()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake: OwnedFd =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?.into();
        epoll.add(
            &wake,
            EpollEvent::new(EpollFlags::EPOLLIN, token(K_WAKE, 0)),
        )?;
        Ok(EpollDriver {
            epoll,
            events: vec![EpollEvent::empty(); EVENTS],
            udp: Slots::new(),
            listeners: Vec::new(),
            paused_listeners: 0,
            conns: HashMap::new(),
            next_conn: 1,
            rx: RecvBatch::new(opts.batch, opts.max_datagram),
            tx_iovs: Vec::with_capacity(opts.batch),
            tx_hdrs: Vec::with_capacity(opts.batch),
            pool: SendPool::new(),
            dirty_udp: Vec::new(),
            dirty_conns: Vec::new(),
            closed: PendingCloses::new(),
            wake: Arc::new(wake),
            stream_buf: vec![0; opts.stream_read_buffer],
            opts: opts.clone(),
            stats: DriverStats::default(),
        })
    }

    fn read_udp(&mut self, idx: u16, on: &mut dyn FnMut(IoEvent<'_>)) {
        let Some(u) = self.udp.get(idx) else {
            return;
        };
        let fd = u.sock.as_raw_fd();
        let limit = u.limit;
        for _ in 0..UDP_ROUNDS {
            self.stats.syscalls += 1;
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(e) if e.raw_os_error().is_some_and(is_icmp_report) => {
                    // An ICMP error for an earlier send, reported once:
                    // datagrams behind it are still to be read.
                    self.stats.icmp_errors += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, sock = idx, "recvmmsg failed");
                    return;
                }
            };
            for i in 0..n {
                let h = &self.rx.hdrs[i];
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || h.msg_len as usize > limit {
                    self.stats.dropped_truncated += 1;
                    continue;
                }
                let Some(src) = sockaddr_to_std(&self.rx.names[i], h.msg_hdr.msg_namelen as usize)
                else {
                    tracing::debug!("datagram with unknown source address family dropped");
                    continue;
                };
                let len = (h.msg_len as usize).min(self.rx.stride);
                let data = &self.rx.bufs[i * self.rx.stride..i * self.rx.stride + len];
                on(IoEvent::Datagram {
                    sock: SockId(idx),
                    src,
                    data,
                });
            }
            if n < self.rx.hdrs.len() {
                return;
            }
        }
    }

    /// Send as much of socket `idx`'s queue as the kernel takes.
    fn send_udp(&mut self, idx: u16) {
        let Some(u) = self.udp.get_mut(idx) else {
            return;
        };
        let fd = u.sock.as_raw_fd();
        let batch = self.opts.batch;
        let mut blocked = false;
        while !u.queue.is_empty() {
            let n = u.queue.len().min(batch);
            self.tx_iovs.clear();
            self.tx_hdrs.clear();
            for &slot in u.queue.iter().take(n) {
                let s = self.pool.get(slot);
                self.tx_iovs.push(libc::iovec {
                    iov_base: s.data.as_ptr().cast_mut().cast(),
                    iov_len: s.data.len(),
                });
            }
            let iov_base = self.tx_iovs.as_mut_ptr();
            for (k, &slot) in u.queue.iter().take(n).enumerate() {
                let s = self.pool.get(slot);
                // SAFETY: msghdr is plain old data; all-zero is a valid value.
                let mut m: libc::msghdr = unsafe { mem::zeroed() };
                m.msg_name = (&s.addr as *const libc::sockaddr_storage).cast_mut().cast();
                m.msg_namelen = s.addr_len;
                // SAFETY: k < n = tx_iovs.len(); the vector is not touched
                // again until after the syscall.
                m.msg_iov = unsafe { iov_base.add(k) };
                m.msg_iovlen = 1;
                self.tx_hdrs.push(libc::mmsghdr {
                    msg_hdr: m,
                    msg_len: 0,
                });
            }
            self.stats.syscalls += 1;
            // SAFETY: `tx_hdrs` holds `n` headers pointing at `tx_iovs` and at
            // the pool slots' payloads and addresses; none of them is moved or
            // mutated during this synchronous call, and the kernel only reads.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.tx_hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for _ in 0..r {
                    if let Some(slot) = u.queue.pop_front() {
                        self.pool.release(slot);
                    }
                }
                continue;
            }
            if r == 0 {
                blocked = true;
                break;
            }
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN | Errno::ENOBUFS => {
                    blocked = true;
                    break;
                }
                e => {
                    // The first datagram was refused (bad address, unreachable, too big).
                    self.stats.send_errors += 1;
                    tracing::debug!(error = %e, sock = idx, "datagram send failed");
                    if let Some(slot) = u.queue.pop_front() {
                        self.pool.release(slot);
                    }
                }
            }
        }
        if blocked != u.want_out {
            let flags = if blocked {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut ev = EpollEvent::new(flags, token(K_UDP, u64::from(idx)));
            match self.epoll.modify(u.sock.as_fd(), &mut ev) {
                Ok(()) => u.want_out = blocked,
                Err(e) => tracing::warn!(error = %e, "epoll modify (UDP) failed"),
            }
        }
    }

    fn accept(&mut self, idx: u16, on: &mut dyn FnMut(IoEvent<'_>)) -> io::Result<()> {
        let Some(l) = self.listeners.get(usize::from(idx)) else {
            return Ok(());
        };
        let lfd = l.listener.as_raw_fd();
        for _ in 0..ACCEPTS_PER_EVENT {
            self.stats.syscalls += 1;
            // SAFETY: `lfd` is a listening socket owned by self; null address
            // pointers are allowed (we ask getpeername below).
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let errno = Errno::last();
                match errno {
                    Errno::EAGAIN => return Ok(()),
                    Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO => continue,
                    e => {
                        self.stats.accept_errors += 1;
                        tracing::warn!(error = %e, listener = idx, "accept failed");
                        if accept_error_needs_pause(e as i32) {
                            self.pause_listener(idx);
                        }
                        return Ok(());
                    }
                }
            }
            // SAFETY: accept4 returned a new fd that nothing else owns.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
                (Ok(p), Ok(l)) => (p, l),
                _ => {
                    self.stats.accept_errors += 1;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let id = ConnId(self.next_conn);
            self.next_conn += 1;
            self.epoll.add(
                &stream,
                EpollEvent::new(EpollFlags::EPOLLIN, token(K_CONN, id.0)),
            )?;
            self.conns.insert(
                id,
                Conn {
                    stream,
                    out: StreamOut::default(),
                    want_out: false,
                    dirty: false,
                },
            );
            on(IoEvent::Accepted {
                listener: ListenerId(idx),
                conn: id,
                peer,
                local,
            });
        }
        Ok(())
    }

    fn pause_listener(&mut self, idx: u16) {
        let Some(l) = self.listeners.get_mut(usize::from(idx)) else {
            return;
        };
        if l.paused_until.is_some() {
            return;
        }
        if let Err(e) = self.epoll.delete(l.listener.as_fd()) {
            tracing::warn!(error = %e, "epoll delete (listener) failed");
            return;
        }
        l.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        self.paused_listeners += 1;
    }

    fn resume_listeners(&mut self) -> io::Result<()> {
        if self.paused_listeners == 0 {
            return Ok(());
        }
        let now = Instant::now();
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.paused_until.is_some_and(|t| t <= now) {
                l.paused_until = None;
                self.paused_listeners -= 1;
                self.epoll.add(
                    &l.listener,
                    EpollEvent::new(EpollFlags::EPOLLIN, token(K_LISTENER, i as u64)),
                )?;
            }
        }
        Ok(())
    }

    fn read_conn(&mut self, id: ConnId, on: &mut dyn FnMut(IoEvent<'_>)) {
        for _ in 0..READS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            self.stats.syscalls += 1;
            match (&conn.stream).read(&mut self.stream_buf) {
                Ok(0) => return self.fail_conn(id, CloseReason::PeerClosed, on),
                Ok(n) => {
                    on(IoEvent::Stream {
                        conn: id,
                        data: &self.stream_buf[..n],
                    });
                    if n < self.stream_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail_conn(id, CloseReason::Error(errno_of(&e)), on),
            }
        }
    }

    /// Write as much backlog as the kernel takes; arm/disarm EPOLLOUT.
    /// Returns the error that killed the connection, if any.
    fn write_conn(&mut self, id: ConnId) -> Option<CloseReason> {
        let conn = self.conns.get_mut(&id)?;
        let sock = socket2::SockRef::from(&conn.stream);
        while !conn.out.is_empty() {
            self.stats.syscalls += 1;
            match sock.send_with_flags(conn.out.pending(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            {
                Ok(n) => {
                    if n < conn.out.len() {
                        self.stats.partial_writes += 1;
                    }
                    conn.out.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(CloseReason::Error(errno_of(&e))),
            }
        }
        let want_out = !conn.out.is_empty();
        if want_out != conn.want_out {
            let flags = if want_out {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            let mut ev = EpollEvent::new(flags, token(K_CONN, id.0));
            if let Err(e) = self.epoll.modify(&conn.stream, &mut ev) {
                return Some(CloseReason::Error(e as i32));
            }
            conn.want_out = want_out;
        }
        None
    }

    /// Report `Closed` now (inside `poll`) and drop the connection.
    fn fail_conn(&mut self, id: ConnId, reason: CloseReason, on: &mut dyn FnMut(IoEvent<'_>)) {
        if self.conns.remove(&id).is_some() {
            on(IoEvent::Closed { conn: id, reason });
        }
    }

    /// Drop the connection now and report `Closed` from the next `poll`.
    fn close_later(&mut self, id: ConnId, reason: CloseReason) {
        if self.conns.remove(&id).is_some() {
            self.closed.push_back((id, reason));
        }
    }

    fn add_udp_limited(&mut self, sock: UdpSocket, limit: usize) -> io::Result<SockId> {
        sock.set_nonblocking(true)?;
        let idx = self.udp.next_index()?;
        self.epoll.add(
            &sock,
            EpollEvent::new(EpollFlags::EPOLLIN, token(K_UDP, u64::from(idx))),
        )?;
        let idx = self.udp.insert(UdpSock {
            sock,
            limit,
            queue: VecDeque::new(),
            dirty: false,
            want_out: false,
        });
        Ok(SockId(idx))
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 8];
        // Nonblocking: EAGAIN just means another event already reset it.
        let _ = nix::unistd::read(self.wake.as_fd(), &mut buf);
    }
}

impl Driver for EpollDriver {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn flags(&self) -> &'static str {
        "level_triggered"
    }

    fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        self.add_udp_limited(sock, usize::MAX)
    }

    fn add_media_udp(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        let limit = self.opts.media_payload_max();
        self.add_udp_limited(sock, limit)
    }

    fn remove_udp(&mut self, sock: SockId) {
        if self.udp.get(sock.0).is_none() {
            return;
        }
        // Datagrams queued before the removal still leave, as far as the
        // socket takes them now.
        self.send_udp(sock.0);
        let Some(u) = self.udp.remove(sock.0) else {
            return;
        };
        if let Err(e) = self.epoll.delete(u.sock.as_fd()) {
            tracing::warn!(error = %e, "epoll delete (UDP) failed");
        }
        for slot in u.queue {
            self.stats.send_dropped += 1;
            self.pool.release(slot);
        }
    }

    fn add_listener(&mut self, l: TcpListener) -> io::Result<ListenerId> {
        l.set_nonblocking(true)?;
        let idx = u16::try_from(self.listeners.len())
            .map_err(|_| io::Error::other("too many listeners"))?;
        self.epoll.add(
            &l,
            EpollEvent::new(EpollFlags::EPOLLIN, token(K_LISTENER, u64::from(idx))),
        )?;
        self.listeners.push(Listener {
            listener: l,
            paused_until: None,
        });
        Ok(ListenerId(idx))
    }

    fn connect_udp(&mut self, sock: SockId, peer: Option<SocketAddr>) -> io::Result<()> {
        match self.udp.get(sock.0) {
            Some(u) => connect_socket(&u.sock, peer),
            None => Ok(()),
        }
    }

    fn send_to(&mut self, sock: SockId, dst: SocketAddr, data: &[u8]) {
        let Some(u) = self.udp.get_mut(sock.0) else {
            self.stats.send_errors += 1;
            return;
        };
        if u.queue.len() >= UDP_QUEUE_LIMIT {
            self.stats.send_dropped += 1;
            return;
        }
        let slot = self.pool.alloc(sock, &dst, data);
        u.queue.push_back(slot);
        if !u.dirty {
            u.dirty = true;
            self.dirty_udp.push(sock.0);
        }
    }

    fn send_stream(&mut self, id: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if data.is_empty() {
            return;
        }
        conn.out.push(data);
        if conn.out.len() > self.opts.max_stream_backlog {
            self.close_later(id, CloseReason::BacklogExceeded);
            return;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty_conns.push(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        self.close_later(id, CloseReason::Local);
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut dirty = mem::take(&mut self.dirty_udp);
        for idx in dirty.drain(..) {
            if let Some(u) = self.udp.get_mut(idx) {
                u.dirty = false;
                // A socket waiting for EPOLLOUT is retried when it fires.
                if !u.want_out {
                    self.send_udp(idx);
                }
            }
        }
        self.dirty_udp = dirty;

        let mut dirty = mem::take(&mut self.dirty_conns);
        for id in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.dirty = false;
            if conn.want_out {
                continue;
            }
            if let Some(reason) = self.write_conn(id) {
                self.close_later(id, reason);
            }
        }
        self.dirty_conns = dirty;
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let mut delivered = false;
        while let Some((conn, reason)) = self.closed.pop_front() {
            on(IoEvent::Closed { conn, reason });
            delivered = true;
        }
        self.resume_listeners()?;
        let mut timeout = if delivered {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        if self.paused_listeners > 0 {
            let now = Instant::now();
            if let Some(end) = self.listeners.iter().filter_map(|l| l.paused_until).min() {
                let rest = end.saturating_duration_since(now);
                timeout = Some(timeout.map_or(rest, |t| t.min(rest)));
            }
        }
        // invariant: timeout_ms clamps to i32::MAX and -1, both valid epoll timeouts.
        let t = EpollTimeout::try_from(timeout_ms(timeout)).expect("epoll timeout in range");
        self.stats.syscalls += 1;
        let n = match self.epoll.wait(&mut self.events, t) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for i in 0..n {
            let ev = self.events[i];
            let flags = ev.events();
            let (kind, idx) = super::unpack_tag(ev.data());
            match kind {
                K_UDP => {
                    // invariant (u16 casts): tokens were built from u16 indices.
                    if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) {
                        self.read_udp(idx as u16, on);
                    }
                    if flags.contains(EpollFlags::EPOLLOUT) {
                        self.send_udp(idx as u16);
                    }
                }
                K_LISTENER => self.accept(idx as u16, on)?,
                K_CONN => {
                    let id = ConnId(idx);
                    if flags.intersects(
                        EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
                    ) {
                        self.read_conn(id, on);
                    }
                    if flags.contains(EpollFlags::EPOLLOUT)
                        && let Some(reason) = self.write_conn(id)
                    {
                        self.fail_conn(id, reason, on);
                    }
                }
                K_WAKE => {
                    self.drain_wake();
                    on(IoEvent::Wake);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn waker(&self) -> Waker {
        Waker::new(self.wake.clone())
    }

    fn stats(&self) -> DriverStats {
        self.stats
    }

    fn stream_backlog(&self, id: ConnId) -> Option<usize> {
        self.conns.get(&id).map(|c| c.out.len())
    }
}
