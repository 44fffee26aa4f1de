//! Shard I/O drivers: one object per shard thread that owns every socket the
//! shard does I/O on and turns readiness/completions into [`IoEvent`]s.
//!
//! # What a driver owns
//! * UDP sockets ([`Driver::add_udp`]): one per SIP UDP listen address per
//!   shard, all shards bound to the same `addr:port` with `SO_REUSEPORT`
//!   ([`bind_udp_reuseport`]) so the kernel spreads datagrams by 4-tuple hash.
//! * TCP listeners ([`Driver::add_listener`], [`bind_tcp_reuseport`]); every
//!   connection a listener accepts belongs to the driver that accepted it and
//!   is named by a [`ConnId`] that is never reused.
//! * An eventfd, reachable from any thread through a [`Waker`].
//!
//! # How it is driven
//! The shard loop (single thread, no locks):
//! ```text
//! loop {
//!     driver.poll(timeout_until_next_timer, &mut |ev| shard.on_io(ev))?; // wait, then report every ready event
//!     shard.run_timers(); shard.drain_mesh();                           // may queue sends
//!     driver.flush()?;                                                  // submit queued sends, few syscalls
//! }
//! ```
//! `send_to`/`send_stream` only copy into pooled buffers and queue; nothing
//! reaches the kernel before [`Driver::flush`]. Data handed to the callback is
//! borrowed from the driver's receive buffers and is only valid during the call.
//!
//! # Implementations
//! * [`UringDriver`] (`uring.rs`, Linux ≥ 6.0): multishot `RECVMSG` with a
//!   provided-buffer ring for UDP, batched `SENDMSG`, multishot `ACCEPT`,
//!   `RECV`/`SEND` per TCP connection, a `READ` on the eventfd. One
//!   `io_uring_enter` per `poll` and at most one per `flush`.
//! * [`EpollDriver`] (`epoll.rs`, any Linux): level-triggered epoll,
//!   `recvmmsg`/`sendmmsg` in batches, nonblocking accept/read/write with a
//!   write backlog and `EPOLLOUT`.
//!
//! [`open`] picks one ([`Choice::Auto`] tries io_uring and falls back to epoll).
//!
//! # Errors
//! Nothing the network does panics or fails a method: truncated datagrams are
//! dropped and counted ([`Driver::dropped_truncated`]), failed datagram sends
//! are counted ([`DriverStats::send_errors`]), a broken or reset connection
//! becomes one [`IoEvent::Closed`]. Only local failures (the ring, epoll,
//! registering a socket) come back as `io::Error`.

mod epoll;
mod uring;

pub use epoll::EpollDriver;
pub use uring::UringDriver;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket,
};
use std::os::fd::{AsFd, OwnedFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Both drivers tag each registration (epoll data, io_uring user_data) with
/// an operation kind in the top byte and an index below it.
const KIND_SHIFT: u32 = 56;
const IDX_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// Packs an operation kind and an index into one 64-bit tag.
fn pack_tag(kind: u64, idx: u64) -> u64 {
    (kind << KIND_SHIFT) | (idx & IDX_MASK)
}

/// Splits a tag made by [`pack_tag`] into (kind, index).
fn unpack_tag(tag: u64) -> (u64, u64) {
    (tag >> KIND_SHIFT, tag & IDX_MASK)
}

/// A UDP socket registered with one driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockId(pub u16);

/// A TCP listener registered with one driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u16);

/// An accepted TCP connection; unique for the driver's lifetime (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Why a connection was closed. Reported exactly once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer shut down its sending side (read returned 0).
    PeerClosed,
    /// A socket error, as a raw OS errno (e.g. `ECONNRESET`, `EPIPE`).
    Error(i32),
    /// [`Driver::close`] was called.
    Local,
    /// Unsent bytes exceeded [`DriverOptions::max_stream_backlog`].
    BacklogExceeded,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Error(errno) => {
                write!(f, "error: {}", io::Error::from_raw_os_error(*errno))
            }
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::BacklogExceeded => f.write_str("send backlog exceeded"),
        }
    }
}

/// One thing that happened, reported by [`Driver::poll`].
#[derive(Debug)]
pub enum IoEvent<'a> {
    /// A whole datagram arrived on `sock` (truncated ones are dropped, not reported).
    Datagram {
        sock: SockId,
        src: SocketAddr,
        data: &'a [u8],
    },
    /// A listener accepted a connection; it now belongs to this driver.
    Accepted {
        listener: ListenerId,
        conn: ConnId,
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// Bytes as they arrive on a connection; framing is the caller's job.
    Stream { conn: ConnId, data: &'a [u8] },
    /// The connection is gone (peer closed, error, or closed by us); its id is dead.
    Closed { conn: ConnId, reason: CloseReason },
    /// A [`Waker`] was used since the last `Wake`.
    Wake,
}

/// Counters kept by a driver (per shard; sum on read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams larger than `max_datagram`, dropped on receive.
    pub dropped_truncated: u64,
    /// Datagram sends the kernel refused (unreachable, bad address family, ...).
    pub send_errors: u64,
    /// Datagrams dropped because a socket's send queue was full.
    pub send_dropped: u64,
    /// Failed accepts (fd limits, connections reset before accept).
    pub accept_errors: u64,
    /// Stream writes the kernel took only part of (continued by the driver).
    pub partial_writes: u64,
    /// Syscalls the driver made to move data or wait: `io_uring_enter`
    /// (io_uring) or `epoll_wait`/`recvmmsg`/`sendmmsg`/`accept4`/`read`/
    /// `send` (epoll). Lets benchmarks report syscalls per packet.
    pub syscalls: u64,
}

/// A shard's I/O driver. See the module docs for how it is driven.
pub trait Driver: Send {
    /// `"io_uring"` or `"epoll"`.
    fn name(&self) -> &'static str;
    /// Register a bound UDP socket (made nonblocking here).
    fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SockId>;
    /// Register a listening TCP socket (made nonblocking here).
    fn add_listener(&mut self, l: TcpListener) -> io::Result<ListenerId>;
    /// Copy `data` into a pooled buffer and queue it until [`Driver::flush`].
    fn send_to(&mut self, sock: SockId, dst: SocketAddr, data: &[u8]);
    /// Queue bytes on a connection; short writes are continued by the driver.
    /// If the unsent backlog exceeds `max_stream_backlog` the connection is
    /// closed ([`CloseReason::BacklogExceeded`], reported by the next `poll`).
    /// Unknown or closed connections are ignored.
    fn send_stream(&mut self, conn: ConnId, data: &[u8]);
    /// Close a connection now, discarding unsent bytes; the next `poll`
    /// reports `Closed { reason: Local }`.
    fn close(&mut self, conn: ConnId);
    /// Hand every queued send to the kernel in as few syscalls as possible.
    fn flush(&mut self) -> io::Result<()>;
    /// Wait up to `timeout` (`None`: forever) for something to happen, then
    /// report every ready event through `on`.
    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()>;
    /// A handle other threads use to make `poll` return with [`IoEvent::Wake`].
    fn waker(&self) -> Waker;
    /// Counters.
    fn stats(&self) -> DriverStats;
    /// Datagrams dropped because they did not fit `max_datagram`.
    fn dropped_truncated(&self) -> u64 {
        self.stats().dropped_truncated
    }
    /// Bytes queued on `conn` that the kernel has not taken yet; `None` if the
    /// connection is unknown or closed. Lets callers apply backpressure.
    fn stream_backlog(&self, conn: ConnId) -> Option<usize>;
}

/// Sizes for a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Datagrams per receive batch (`recvmmsg` vector length; io_uring uses
    /// `4 × batch` provided buffers, at least 32).
    pub batch: usize,
    /// io_uring submission queue size (completion queue is 4×).
    pub ring_entries: u32,
    /// Receive buffer size per datagram; larger datagrams are dropped.
    pub max_datagram: usize,
    /// Unsent bytes per connection above which it is closed.
    pub max_stream_backlog: usize,
    /// Read buffer per connection read.
    pub stream_read_buffer: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            batch: 64,
            ring_entries: 1024,
            max_datagram: 65535,
            max_stream_backlog: 1 << 20,
            stream_read_buffer: 16 * 1024,
        }
    }
}

impl DriverOptions {
    fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
        if self.batch == 0 || self.batch > 1024 {
            return bad("driver batch must be 1..=1024");
        }
        if self.max_datagram == 0 || self.max_datagram > (1 << 20) {
            return bad("driver max_datagram must be 1..=1048576");
        }
        if self.ring_entries < 8 || self.ring_entries > 32768 {
            return bad("driver ring_entries must be 8..=32768");
        }
        if self.stream_read_buffer == 0 || self.stream_read_buffer > (1 << 24) {
            return bad("driver stream_read_buffer must be 1..=16777216");
        }
        if self.max_stream_backlog == 0 {
            return bad("driver max_stream_backlog must be > 0");
        }
        Ok(())
    }
}

/// Which driver [`open`] builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// io_uring if the kernel supports every op we use, else epoll.
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// epoll.
    Epoll,
}

impl FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Choice::Auto),
            "io_uring" | "uring" => Ok(Choice::IoUring),
            "epoll" => Ok(Choice::Epoll),
            other => Err(format!(
                "unknown I/O driver {other:?}, expected auto, io_uring or epoll"
            )),
        }
    }
}

/// Build a driver. `Auto` probes io_uring (the ops, the provided-buffer ring
/// and multishot recvmsg) and falls back to epoll with a warning.
pub fn open(choice: Choice, opts: &DriverOptions) -> io::Result<Box<dyn Driver>> {
    opts.validate()?;
    let driver: Box<dyn Driver> = match choice {
        Choice::Epoll => Box::new(EpollDriver::new(opts)?),
        Choice::IoUring => match UringDriver::new(opts) {
            Ok(d) => Box::new(d),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("io_uring driver requested but cannot be set up: {e}"),
                ));
            }
        },
        Choice::Auto => match UringDriver::new(opts) {
            Ok(d) => Box::new(d),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable, falling back to epoll");
                Box::new(EpollDriver::new(opts)?)
            }
        },
    };
    tracing::info!(driver = driver.name(), "shard I/O driver ready");
    Ok(driver)
}

/// Wakes a driver's `poll` from any thread (writes its eventfd).
#[derive(Clone, Debug)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    fn new(fd: Arc<OwnedFd>) -> Self {
        Waker { fd }
    }

    /// Make the driver's current or next `poll` return with [`IoEvent::Wake`].
    /// Wakes are coalesced (eventfd counter): many wakes before the driver
    /// looks give one `Wake`, or two with io_uring when the first wake
    /// already completed the pending eventfd read.
    pub fn wake(&self) {
        loop {
            match nix::unistd::write(self.fd.as_fd(), &1u64.to_ne_bytes()) {
                Ok(_) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                // EAGAIN: the counter is saturated, so a wake is already pending.
                Err(e) => {
                    tracing::debug!(error = %e, "waker write failed");
                    return;
                }
            }
        }
    }
}

/// A UDP socket for a shard: `SO_REUSEADDR` + `SO_REUSEPORT`, nonblocking,
/// IPv6 sockets v6-only, 4 MiB socket buffers (best effort, capped by
/// `net.core.[rw]mem_max`).
pub fn bind_udp_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    prepare_reuseport(&s, addr)?;
    for r in [
        s.set_recv_buffer_size(4 << 20),
        s.set_send_buffer_size(4 << 20),
    ] {
        if let Err(e) = r {
            tracing::debug!(error = %e, %addr, "could not enlarge UDP socket buffer");
        }
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A listening TCP socket for a shard: `SO_REUSEADDR` + `SO_REUSEPORT` (the
/// kernel spreads new connections across shards), nonblocking, backlog 1024.
pub fn bind_tcp_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    prepare_reuseport(&s, addr)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn prepare_reuseport(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    s.set_reuse_address(true)?;
    set_reuse_port(s)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)
}

fn set_reuse_port(s: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: `s` is an open socket for the duration of the call; the option
    // value points to a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------
// Shared helpers for both drivers.
// ---------------------------------------------------------------------------

/// Largest socket address we ask the kernel for (IPv4 or IPv6).
const SOCKADDR_MAX: usize = mem::size_of::<libc::sockaddr_in6>();

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// Write `addr` into `out`, returning the length to hand to the kernel.
fn sockaddr_from_std(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    *out = zeroed_storage();
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned at least as
            // strictly as sockaddr_in; we write one whole value into it.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Read an IPv4/IPv6 socket address the kernel wrote into `storage`.
fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, it is
            // long enough, and sockaddr_storage is suitably aligned.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Read a socket address from raw (possibly unaligned) bytes.
fn sockaddr_from_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    let mut storage = zeroed_storage();
    let n = bytes.len().min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `n` bytes fit in both the source slice and the destination
    // storage, and the two do not overlap (storage is a local).
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    sockaddr_to_std(&storage, n)
}

/// One queued datagram: payload, destination and (for io_uring) the
/// `msghdr`/`iovec` the kernel reads. Boxed in [`SendPool`] so its address is
/// stable while a `SENDMSG` is in flight.
struct SendSlot {
    sock: SockId,
    data: Vec<u8>,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    iov: libc::iovec,
    msg: libc::msghdr,
}

impl SendSlot {
    /// Point `iov`/`msg` at this slot's own payload and address. Call right
    /// before handing `&self.msg` to the kernel, after the last change to `data`.
    fn prepare_msghdr(&mut self) -> *const libc::msghdr {
        self.iov = libc::iovec {
            iov_base: self.data.as_mut_ptr().cast(),
            iov_len: self.data.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = self.addr_len;
        msg.msg_iov = &mut self.iov;
        msg.msg_iovlen = 1;
        self.msg = msg;
        &self.msg
    }
}

/// Free list of datagram send buffers, so `send_to` does not allocate once warm.
struct SendPool {
    #[expect(
        clippy::vec_box,
        reason = "slot addresses must stay fixed while the Vec grows (in-flight SENDMSG)"
    )]
    slots: Vec<Box<SendSlot>>,
    free: Vec<u32>,
}

impl SendPool {
    fn new() -> Self {
        SendPool {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Copy a datagram into a free slot (growing the pool if none is free).
    fn alloc(&mut self, sock: SockId, dst: &SocketAddr, data: &[u8]) -> u32 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Box::new(SendSlot {
                    sock,
                    data: Vec::with_capacity(data.len().max(1500)),
                    addr: zeroed_storage(),
                    addr_len: 0,
                    iov: libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                    // SAFETY: msghdr is plain old data; all-zero is a valid value.
                    msg: unsafe { mem::zeroed() },
                }));
                // invariant: a driver never has 2^32 datagrams queued at once
                // (each needs its own buffer); exceeding it would be an OOM first.
                u32::try_from(self.slots.len() - 1).expect("send pool index fits u32")
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.sock = sock;
        slot.data.clear();
        slot.data.extend_from_slice(data);
        slot.addr_len = sockaddr_from_std(dst, &mut slot.addr);
        idx
    }

    fn get(&self, idx: u32) -> &SendSlot {
        &self.slots[idx as usize]
    }

    fn get_mut(&mut self, idx: u32) -> &mut SendSlot {
        &mut self.slots[idx as usize]
    }

    fn release(&mut self, idx: u32) {
        self.free.push(idx);
    }
}

/// Outgoing bytes of one TCP connection: `buf[off..]` is unsent.
#[derive(Default)]
struct StreamOut {
    buf: Vec<u8>,
    off: usize,
}

impl StreamOut {
    fn pending(&self) -> &[u8] {
        &self.buf[self.off..]
    }
    fn len(&self) -> usize {
        self.buf.len() - self.off
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push(&mut self, data: &[u8]) {
        if self.off > 0 && self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
        }
        self.buf.extend_from_slice(data);
    }
    fn advance(&mut self, n: usize) {
        self.off = (self.off + n).min(self.buf.len());
        if self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
        } else if self.off >= 64 * 1024 && self.off * 2 >= self.buf.len() {
            self.buf.drain(..self.off);
            self.off = 0;
        }
    }
}

/// Queue of pending `Closed` events raised outside `poll`.
type PendingCloses = VecDeque<(ConnId, CloseReason)>;

/// Convert a poll timeout to whole milliseconds, rounding up so a sub-ms
/// timer does not turn into a busy loop.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Errors from `accept` that mean "out of a resource": stop accepting for a
/// moment instead of spinning on a listener that stays readable.
fn accept_error_needs_pause(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// How long a listener rests after a resource error from accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    //! Every behaviour test is a generic fn over the driver choice, run for
    //! both drivers by `both_drivers!`. Real loopback sockets; no sleeps: we
    //! poll with short timeouts until a condition holds or a deadline passes.

    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::thread;
    use std::time::Instant;

    /// Owned copy of an [`IoEvent`] for assertions.
    #[derive(Clone, Debug, PartialEq)]
    enum Ev {
        Dgram(SockId, SocketAddr, Vec<u8>),
        Accepted(ListenerId, ConnId, SocketAddr, SocketAddr),
        Stream(ConnId, Vec<u8>),
        Closed(ConnId, CloseReason),
        Wake,
    }

    impl From<IoEvent<'_>> for Ev {
        fn from(ev: IoEvent<'_>) -> Self {
            match ev {
                IoEvent::Datagram { sock, src, data } => Ev::Dgram(sock, src, data.to_vec()),
                IoEvent::Accepted {
                    listener,
                    conn,
                    peer,
                    local,
                } => Ev::Accepted(listener, conn, peer, local),
                IoEvent::Stream { conn, data } => Ev::Stream(conn, data.to_vec()),
                IoEvent::Closed { conn, reason } => Ev::Closed(conn, reason),
                IoEvent::Wake => Ev::Wake,
            }
        }
    }

    const DEADLINE: Duration = Duration::from_secs(20);

    fn opts() -> DriverOptions {
        DriverOptions {
            batch: 8,
            ring_entries: 64,
            max_datagram: 2048,
            ..DriverOptions::default()
        }
    }

    fn make(choice: Choice, o: &DriverOptions) -> Box<dyn Driver> {
        let d = open(choice, o).expect("open driver");
        if choice == Choice::Epoll {
            assert_eq!(d.name(), "epoll");
        } else {
            assert_eq!(d.name(), "io_uring");
        }
        d
    }

    fn poll_once(d: &mut dyn Driver, timeout: Option<Duration>, evs: &mut Vec<Ev>) {
        d.poll(timeout, &mut |ev| evs.push(ev.into()))
            .expect("poll");
    }

    /// Poll (10 ms at a time) until `done` holds; panics after `DEADLINE`.
    fn pump(
        d: &mut dyn Driver,
        evs: &mut Vec<Ev>,
        what: &str,
        mut done: impl FnMut(&dyn Driver, &[Ev]) -> bool,
    ) {
        let start = Instant::now();
        while !done(&*d, evs) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; events so far: {evs:?}"
            );
            poll_once(d, Some(Duration::from_millis(10)), evs);
        }
    }

    fn dgrams(evs: &[Ev]) -> usize {
        evs.iter().filter(|e| matches!(e, Ev::Dgram(..))).count()
    }

    fn addr(s: &str) -> SocketAddr {
        s.to_socket_addrs().expect("addr").next().expect("one addr")
    }

    /// Bursts of `burst` datagrams (> batch) from a plain socket, echoed back
    /// through `send_to`/`flush` in one go, `rounds` times.
    fn udp_echo(choice: Choice, bind: &str, rounds: usize, burst: usize) {
        let mut d = make(choice, &opts());
        let sock = bind_udp_reuseport(addr(bind)).expect("bind");
        let local = sock.local_addr().expect("local addr");
        let id = d.add_udp(sock).expect("add_udp");
        let peer = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).expect("peer");
        peer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let peer_addr = peer.local_addr().expect("peer addr");
        for round in 0..rounds {
            let mut sent: Vec<Vec<u8>> = (0..burst)
                .map(|i| {
                    let mut m = format!("round {round} msg {i} ").into_bytes();
                    m.resize(m.len() + (i * 37) % 1400, b'a' + (i % 26) as u8);
                    m
                })
                .collect();
            for m in &sent {
                peer.send_to(m, local).expect("peer send");
            }
            let mut evs = Vec::new();
            pump(&mut *d, &mut evs, "burst", |_, evs| dgrams(evs) >= burst);
            assert_eq!(dgrams(&evs), burst, "no extra datagrams");
            for ev in &evs {
                if let Ev::Dgram(sock, src, data) = ev {
                    assert_eq!((*sock, *src), (id, peer_addr));
                    d.send_to(*sock, *src, data);
                }
            }
            d.flush().expect("flush");
            let mut echoed = Vec::new();
            let mut buf = [0u8; 4096];
            for _ in 0..burst {
                let (n, from) = peer.recv_from(&mut buf).expect("echo");
                assert_eq!(from, local);
                echoed.push(buf[..n].to_vec());
            }
            sent.sort();
            echoed.sort();
            assert_eq!(echoed, sent, "round {round}");
        }
        assert_eq!(d.stats().send_errors, 0);
        assert_eq!(d.dropped_truncated(), 0);
    }

    fn udp_echo_bursts_larger_than_batch(choice: Choice) {
        udp_echo(choice, "127.0.0.1:0", 20, 50);
    }

    fn udp_echo_ipv6(choice: Choice) {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipping: no IPv6 loopback");
            return;
        }
        udp_echo(choice, "[::1]:0", 4, 30);
    }

    fn reuseport_spreads_datagrams_across_drivers(choice: Choice) {
        let mut a = make(choice, &opts());
        let mut b = make(choice, &opts());
        let s1 = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind 1");
        let target = s1.local_addr().expect("addr");
        let s2 = bind_udp_reuseport(target).expect("bind same port");
        a.add_udp(s1).expect("add a");
        b.add_udp(s2).expect("add b");
        const SOURCES: usize = 64;
        for i in 0..SOURCES {
            let s = UdpSocket::bind("127.0.0.1:0").expect("source");
            s.send_to(format!("from {i}").as_bytes(), target)
                .expect("send");
        }
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        let start = Instant::now();
        while dgrams(&ea) + dgrams(&eb) < SOURCES {
            assert!(
                start.elapsed() < DEADLINE,
                "got {} + {}",
                dgrams(&ea),
                dgrams(&eb)
            );
            poll_once(&mut *a, Some(Duration::from_millis(5)), &mut ea);
            poll_once(&mut *b, Some(Duration::from_millis(5)), &mut eb);
        }
        assert_eq!(dgrams(&ea) + dgrams(&eb), SOURCES);
        assert!(
            dgrams(&ea) > 0 && dgrams(&eb) > 0,
            "a {} b {}",
            dgrams(&ea),
            dgrams(&eb)
        );
    }

    fn oversize_datagram_dropped_and_counted(choice: Choice) {
        let o = DriverOptions {
            max_datagram: 1024,
            ..opts()
        };
        let mut d = make(choice, &o);
        let sock = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind");
        let target = sock.local_addr().expect("addr");
        d.add_udp(sock).expect("add");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.send_to(&[1u8; 1025], target).expect("oversize");
        peer.send_to(&[2u8; 1024], target).expect("exact fit");
        peer.send_to(&[3u8; 60000], target).expect("huge");
        peer.send_to(b"small", target).expect("small");
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "small datagram", |_, evs| {
            evs.iter()
                .any(|e| matches!(e, Ev::Dgram(_, _, data) if data == b"small"))
        });
        let lens: Vec<usize> = evs
            .iter()
            .filter_map(|e| match e {
                Ev::Dgram(_, _, data) => Some(data.len()),
                _ => None,
            })
            .collect();
        assert_eq!(lens, vec![1024, 5]);
        assert_eq!(d.dropped_truncated(), 2);
    }

    fn datagram_send_error_is_counted(choice: Choice) {
        let mut d = make(choice, &opts());
        let sock = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind");
        let id = d.add_udp(sock).expect("add");
        // An IPv6 destination on an IPv4 socket: the kernel refuses it.
        d.send_to(id, addr("[::1]:9"), b"nope");
        d.send_to(SockId(999), addr("127.0.0.1:9"), b"unknown socket");
        d.flush().expect("flush");
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "send error count", |d, _| {
            d.stats().send_errors == 2
        });
        assert!(evs.is_empty(), "{evs:?}");
    }

    /// Accept, read a request, answer 3 MiB in pieces under backpressure,
    /// then see the peer's close.
    fn tcp_stream_large_response_and_peer_close(choice: Choice) {
        let mut d = make(choice, &opts());
        let l = bind_tcp_reuseport(addr("127.0.0.1:0")).expect("listen");
        let target = l.local_addr().expect("addr");
        // Small, fixed socket buffers (inherited by the accepted socket) so
        // the kernel takes only part of each write: short writes guaranteed.
        socket2::SockRef::from(&l)
            .set_send_buffer_size(16 * 1024)
            .expect("sndbuf");
        let lid = d.add_listener(l).expect("add listener");
        const REQ: usize = 10_000;
        const RESP: usize = 3 << 20;
        let body: Vec<u8> = (0..RESP).map(|i| (i % 251) as u8).collect();
        let expect = body.clone();
        let client = thread::spawn(move || {
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            sock.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
            sock.connect(&target.into()).expect("connect");
            let mut s: TcpStream = sock.into();
            s.set_read_timeout(Some(DEADLINE)).expect("timeout");
            s.write_all(&[b'q'; REQ]).expect("request");
            let mut got = vec![0u8; RESP];
            s.read_exact(&mut got).expect("response");
            assert!(got == expect, "response corrupted");
            s.local_addr().expect("client addr")
            // dropped here: the driver sees the close
        });
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "request", |_, evs| {
            evs.iter()
                .filter_map(|e| {
                    if let Ev::Stream(_, b) = e {
                        Some(b.len())
                    } else {
                        None
                    }
                })
                .sum::<usize>()
                >= REQ
        });
        let Some(&Ev::Accepted(l2, conn, peer, local)) = evs.first() else {
            panic!("first event not Accepted: {evs:?}")
        };
        assert_eq!((l2, local), (lid, target));
        assert!(
            evs[1..].iter().all(
                |e| matches!(e, Ev::Stream(c, b) if *c == conn && b.iter().all(|&x| x == b'q'))
            )
        );

        const PIECE: usize = 64 * 1024;
        let mut off = 0;
        let start = Instant::now();
        evs.clear();
        while off < RESP || d.stream_backlog(conn) != Some(0) {
            assert!(
                start.elapsed() < DEADLINE,
                "stuck at {off}, backlog {:?}",
                d.stream_backlog(conn)
            );
            while off < RESP && d.stream_backlog(conn).expect("conn alive") < 512 * 1024 {
                d.send_stream(conn, &body[off..off + PIECE]);
                off += PIECE;
            }
            d.flush().expect("flush");
            poll_once(&mut *d, Some(Duration::from_millis(10)), &mut evs);
            if evs.iter().any(|e| matches!(e, Ev::Closed(..))) {
                break;
            }
        }
        pump(&mut *d, &mut evs, "peer close", |_, evs| {
            evs.iter().any(|e| matches!(e, Ev::Closed(..)))
        });
        assert_eq!(evs.last(), Some(&Ev::Closed(conn, CloseReason::PeerClosed)));
        let client_addr = client.join().expect("client thread");
        assert_eq!(peer, client_addr);
        assert_eq!(d.stream_backlog(conn), None);
        assert!(d.stats().partial_writes > 0, "short writes were exercised");
    }

    fn accept_one(d: &mut dyn Driver) -> (TcpStream, ConnId) {
        let l = bind_tcp_reuseport(addr("127.0.0.1:0")).expect("listen");
        let target = l.local_addr().expect("addr");
        d.add_listener(l).expect("add listener");
        let client = TcpStream::connect(target).expect("connect");
        let mut evs = Vec::new();
        pump(d, &mut evs, "accept", |_, evs| !evs.is_empty());
        let Ev::Accepted(_, conn, ..) = evs[0] else {
            panic!("{evs:?}")
        };
        (client, conn)
    }

    fn close_by_us_reports_local_once(choice: Choice) {
        let mut d = make(choice, &opts());
        let (mut client, conn) = accept_one(&mut *d);
        d.send_stream(conn, b"bye");
        d.flush().expect("flush");
        d.close(conn);
        d.close(conn);
        d.send_stream(conn, b"ignored");
        d.flush().expect("flush");
        assert_eq!(d.stream_backlog(conn), None);
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "local close", |_, evs| !evs.is_empty());
        poll_once(&mut *d, Some(Duration::from_millis(20)), &mut evs);
        assert_eq!(evs, vec![Ev::Closed(conn, CloseReason::Local)]);
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("EOF from driver");
        assert_eq!(got, b"bye");
        // Unknown ids are ignored.
        d.send_stream(ConnId(9999), b"x");
        d.close(ConnId(9999));
    }

    fn backlog_limit_closes_connection(choice: Choice) {
        let o = DriverOptions {
            max_stream_backlog: 64 * 1024,
            ..opts()
        };
        let mut d = make(choice, &o);
        let (_client, conn) = accept_one(&mut *d);
        d.send_stream(conn, &vec![7u8; 100 * 1024]);
        d.flush().expect("flush");
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "backlog close", |_, evs| !evs.is_empty());
        assert_eq!(evs, vec![Ev::Closed(conn, CloseReason::BacklogExceeded)]);
    }

    fn peer_reset_reports_closed(choice: Choice) {
        let mut d = make(choice, &opts());
        let (client, conn) = accept_one(&mut *d);
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(client);
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "reset", |_, evs| !evs.is_empty());
        assert_eq!(
            evs,
            vec![Ev::Closed(conn, CloseReason::Error(libc::ECONNRESET))]
        );
    }

    fn waker_wakes_poll_without_timeout(choice: Choice) {
        let mut d = make(choice, &opts());
        let w = d.waker();
        let t = thread::spawn(move || w.wake());
        let mut evs = Vec::new();
        poll_once(&mut *d, None, &mut evs);
        assert_eq!(evs, vec![Ev::Wake]);
        t.join().expect("waker thread");
    }

    fn wakes_coalesce(choice: Choice) {
        let mut d = make(choice, &opts());
        let w = d.waker();
        w.clone().wake();
        w.wake();
        w.wake();
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "wake", |_, evs| !evs.is_empty());
        poll_once(&mut *d, Some(Duration::from_millis(20)), &mut evs);
        poll_once(&mut *d, Some(Duration::from_millis(20)), &mut evs);
        // io_uring may complete its eventfd READ after the first write, so
        // the later two can show up as one more Wake; never as three.
        assert!(
            evs.iter().all(|e| *e == Ev::Wake) && (1..=2).contains(&evs.len()),
            "{evs:?}"
        );
        evs.clear();
        poll_once(&mut *d, Some(Duration::from_millis(20)), &mut evs);
        assert!(evs.is_empty(), "{evs:?}");
        // Re-armed: a later wake is seen again.
        w.wake();
        evs.clear();
        poll_once(&mut *d, None, &mut evs);
        assert_eq!(evs, vec![Ev::Wake]);
    }

    /// A driver set up on one thread and run on another (a shard may be
    /// built before its thread starts). For io_uring the kernel cancels the
    /// first thread's ops when it exits; the driver must re-arm them.
    fn driver_moved_to_another_thread_keeps_working(choice: Choice) {
        let (mut d, target, listen, waker) = thread::spawn(move || {
            let mut d = make(choice, &opts());
            let sock = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind");
            let target = sock.local_addr().expect("addr");
            d.add_udp(sock).expect("add");
            let l = bind_tcp_reuseport(addr("127.0.0.1:0")).expect("listen");
            let listen = l.local_addr().expect("addr");
            d.add_listener(l).expect("add listener");
            let waker = d.waker();
            // Submit the receive and accept ops from this thread.
            d.flush().expect("flush");
            d.poll(Some(Duration::ZERO), &mut |ev| panic!("unexpected {ev:?}"))
                .expect("poll");
            (d, target, listen, waker)
        })
        .join()
        .expect("setup thread");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.send_to(b"after move", target).expect("send");
        let _client = TcpStream::connect(listen).expect("connect");
        waker.wake();
        let mut evs = Vec::new();
        pump(&mut *d, &mut evs, "datagram, accept and wake", |_, evs| {
            evs.iter()
                .any(|e| matches!(e, Ev::Dgram(_, _, b) if b == b"after move"))
                && evs.iter().any(|e| matches!(e, Ev::Accepted(..)))
                && evs.contains(&Ev::Wake)
        });
    }

    macro_rules! both_drivers {
        ($($name:ident),* $(,)?) => {
            mod uring {
                $( #[test] fn $name() { super::$name(super::Choice::IoUring) } )*
            }
            mod epoll {
                $( #[test] fn $name() { super::$name(super::Choice::Epoll) } )*
            }
        };
    }

    both_drivers!(
        udp_echo_bursts_larger_than_batch,
        udp_echo_ipv6,
        reuseport_spreads_datagrams_across_drivers,
        oversize_datagram_dropped_and_counted,
        datagram_send_error_is_counted,
        tcp_stream_large_response_and_peer_close,
        close_by_us_reports_local_once,
        backlog_limit_closes_connection,
        peer_reset_reports_closed,
        waker_wakes_poll_without_timeout,
        wakes_coalesce,
        driver_moved_to_another_thread_keeps_working,
    );

    #[test]
    fn open_auto_picks_io_uring_on_this_kernel() {
        let d = open(Choice::Auto, &DriverOptions::default()).expect("open");
        assert_eq!(d.name(), "io_uring");
    }

    #[test]
    fn options_are_validated() {
        for bad in [
            DriverOptions {
                batch: 0,
                ..DriverOptions::default()
            },
            DriverOptions {
                max_datagram: 0,
                ..DriverOptions::default()
            },
            DriverOptions {
                ring_entries: 1,
                ..DriverOptions::default()
            },
        ] {
            for choice in [Choice::Auto, Choice::IoUring, Choice::Epoll] {
                let err = open(choice, &bad).err().expect("refused");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn choice_parses_config_names() {
        assert_eq!("auto".parse(), Ok(Choice::Auto));
        assert_eq!("io_uring".parse(), Ok(Choice::IoUring));
        assert_eq!("epoll".parse(), Ok(Choice::Epoll));
        assert!("kqueue".parse::<Choice>().is_err());
    }

    #[test]
    fn sockaddr_round_trips_v4_and_v6() {
        for a in ["192.0.2.7:5060", "[2001:db8::1]:5061", "[fe80::1%2]:7"] {
            let a = addr(a);
            let mut st = zeroed_storage();
            let len = sockaddr_from_std(&a, &mut st);
            assert_eq!(sockaddr_to_std(&st, len as usize), Some(a));
            // SAFETY (test): `st` is a live local of at least `len` bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st as *const libc::sockaddr_storage).cast::<u8>(),
                    len as usize,
                )
            };
            assert_eq!(sockaddr_from_bytes(bytes), Some(a));
        }
        assert_eq!(sockaddr_from_bytes(&[0u8; 4]), None);
    }

    #[test]
    fn waker_and_driver_are_thread_safe_types() {
        fn check<T: Clone + Send + Sync>() {}
        fn send<T: Send>() {}
        check::<Waker>();
        send::<Box<dyn Driver>>();
    }
}
