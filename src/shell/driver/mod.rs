//! Shard I/O drivers: one object per shard thread that owns every socket the
//! shard does I/O on and turns readiness/completions into [`IoEvent`]s.
//!
//! # What a driver owns
//! * UDP sockets ([`Driver::add_udp`]): one per SIP UDP listen address per
//!   shard, all shards bound to the same `addr:port` with `SO_REUSEPORT`
//!   ([`bind_udp_reuseport`]) so the kernel spreads datagrams by 4-tuple hash.
//! * Media (RTP/RTCP) UDP sockets ([`Driver::add_media_udp`]): one per call
//!   leg, thousands per shard, added and removed ([`Driver::remove_udp`]) as
//!   calls come and go. They receive into their own pool of small buffers
//!   ([`DriverOptions::media_buffer_len`], [`DriverOptions::media_buffers`])
//!   so RTP never competes with SIP for the big ones. A [`SockId`] names one
//!   socket of either kind; the id of a removed socket is handed out again
//!   only once no kernel operation can still refer to it.
//! * TCP listeners ([`Driver::add_listener`], [`bind_tcp_reuseport`]); every
//!   connection a listener accepts belongs to the driver that accepted it and
//!   is named by a [`ConnId`] that is never reused.
//! * An eventfd, reachable from any thread through a [`Waker`].
//!
//! # How it is driven
//! The shard loop (single thread, no locks):
//! ```text
//! loop {
//!     driver.poll(timeout_until_next_timer, &mut |ev| shard.on_io(ev))?; // submit queued sends, wait, report every ready event
//!     shard.run_timers(); shard.drain_mesh();                           // may queue sends
//!     driver.flush_for_poll()?;                                         // queued sends become kernel requests
//! }
//! driver.flush()?;                                                      // no poll follows: hand them over now
//! ```
//! `send_to`/`send_stream` only copy into pooled buffers and queue; nothing
//! reaches the kernel before [`Driver::flush`], or before the next
//! [`Driver::poll`] after [`Driver::flush_for_poll`] (io_uring submits the
//! sends in the same `io_uring_enter` that waits, so a busy loop costs one
//! syscall per turn). Data handed to the callback is borrowed from the
//! driver's receive buffers and is only valid during the call.
//!
//! **One thread drives a driver.** It may be built and given its sockets on
//! one thread and moved to another, but the thread that first calls
//! `poll`/`flush`/`flush_for_poll` is the only one that may call them (and
//! drop the driver) afterwards: the io_uring ring is then bound to that
//! thread (`IORING_SETUP_SINGLE_ISSUER`, enabled on first use), and a call
//! from another thread fails. In production each shard thread opens its own.
//!
//! # Implementations
//! * [`UringDriver`] (`uring.rs`, Linux ≥ 6.0): multishot `RECVMSG` with a
//!   provided-buffer ring for SIP UDP and another for media, batched
//!   `SENDMSG`, multishot `ACCEPT`, `RECV`/`SEND` per TCP connection, a
//!   `READ` on the eventfd. One `io_uring_enter` per `poll`, none per
//!   `flush_for_poll`, at most one per `flush`. Ring flags: see
//!   [`RingFlags`] and [`Driver::flags`].
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
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
///
/// A datagram names only its socket: the shard maps a media [`SockId`] to its
/// call leg with one table lookup, no address parsing.
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
    /// io_uring: multishot receives that ended because their provided-buffer
    /// ring was empty (`ENOBUFS`); each is re-armed by the next `poll`, and
    /// the datagrams wait in the socket meanwhile. Often non-zero means
    /// [`DriverOptions::media_buffers`] is too small for the socket count.
    pub buffers_exhausted: u64,
    /// Receives that reported an ICMP error for an earlier send (a
    /// connected media socket's peer went away: `ECONNREFUSED` and kin);
    /// the socket goes on receiving.
    pub icmp_errors: u64,
    /// Syscalls the driver made to move data or wait: `io_uring_enter`
    /// (io_uring) or `epoll_wait`/`recvmmsg`/`sendmmsg`/`accept4`/`read`/
    /// `send` (epoll). Lets benchmarks report syscalls per packet.
    pub syscalls: u64,
}

/// A shard's I/O driver. See the module docs for how it is driven; one
/// thread drives a driver.
pub trait Driver: Send {
    /// `"io_uring"` or `"epoll"`.
    fn name(&self) -> &'static str;
    /// How the driver was set up: for io_uring the ring flags it got
    /// ([`RingFlags::as_str`]: `"single_issuer+defer_taskrun"`,
    /// `"coop_taskrun"` or `"none"`), for epoll `"level_triggered"`.
    fn flags(&self) -> &'static str;
    /// Register a bound UDP socket for SIP (made nonblocking here). Receives
    /// datagrams up to [`DriverOptions::max_datagram`] bytes.
    fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SockId>;
    /// Register a bound UDP socket for media (RTP/RTCP; made nonblocking
    /// here). Receives into the small media buffers: datagrams larger than
    /// [`DriverOptions::media_payload_max`] are dropped and counted as
    /// truncated. epoll treats it like [`Driver::add_udp`] apart from that
    /// limit.
    fn add_media_udp(&mut self, sock: UdpSocket) -> io::Result<SockId>;
    /// Stop receiving on a UDP socket (of either kind) and close it once no
    /// kernel operation refers to it: datagrams already queued with
    /// `send_to` still leave, no further [`IoEvent::Datagram`] is reported
    /// for it, and later `send_to`s on it are counted as send errors. Its id
    /// is not handed out again while operations on it may be in flight.
    /// Unknown or removed ids are ignored.
    fn remove_udp(&mut self, sock: SockId);
    /// Connect a UDP socket to `peer` (a media socket latched to it), or
    /// undo that with `None`. While connected, the kernel delivers only
    /// `peer`'s datagrams to the socket and sends to `peer` use the
    /// socket's cached route (io_uring: a plain `SEND`, no address); sends
    /// elsewhere still work. Unknown or removed ids are ignored.
    fn connect_udp(&mut self, sock: SockId, peer: Option<SocketAddr>) -> io::Result<()>;
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
    /// [`Driver::flush`] for a caller whose next call is [`Driver::poll`]
    /// (the shard loop): io_uring turns the queued sends into submission
    /// entries but lets `poll` submit them in the `io_uring_enter` that waits
    /// (one syscall per loop instead of two); epoll sends them now, like
    /// `flush`. A caller that does not poll next must use `flush`.
    fn flush_for_poll(&mut self) -> io::Result<()> {
        self.flush()
    }
    /// Wait up to `timeout` (`None`: forever) for something to happen, then
    /// report every ready event through `on`. Sends left by
    /// [`Driver::flush_for_poll`] are submitted first, in the same syscall.
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

/// io_uring setup flags, weakest first. [`UringDriver`] asks for
/// [`DriverOptions::max_ring_flags`] and falls back one step at a time when
/// the kernel refuses (`EINVAL`); [`Driver::flags`] says what it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RingFlags {
    /// No task-run flags: completions interrupt the thread (IPIs) and the
    /// ring may be driven from any thread.
    None,
    /// `IORING_SETUP_COOP_TASKRUN | SUBMIT_ALL` (Linux 5.19): completions
    /// wait for the thread's next kernel entry instead of an IPI; the ring
    /// may still be driven from any thread.
    CoopTaskrun,
    /// `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL` (Linux 6.1),
    /// created `R_DISABLED` and enabled by the first `poll`/`flush` so the
    /// thread that drives the ring is its issuer: completions are produced
    /// only when that thread waits (`poll`), in a batch, never interrupting
    /// it while it works and with no locking. On this project's test VM a C
    /// io_uring forwarder used 0.81–0.87× the CPU per packet of a
    /// recvmmsg/sendmmsg forwarder with these flags (or COOP_TASKRUN),
    /// 1.06–1.11× without.
    #[default]
    SingleIssuerDeferTaskrun,
}

impl RingFlags {
    /// Strongest first: the order in which they are tried.
    const FALLBACK: [RingFlags; 3] = [
        RingFlags::SingleIssuerDeferTaskrun,
        RingFlags::CoopTaskrun,
        RingFlags::None,
    ];

    /// `"single_issuer+defer_taskrun"`, `"coop_taskrun"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RingFlags::None => "none",
            RingFlags::CoopTaskrun => "coop_taskrun",
            RingFlags::SingleIssuerDeferTaskrun => "single_issuer+defer_taskrun",
        }
    }
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
    /// io_uring: size of one media receive buffer, including the 16-byte
    /// `io_uring_recvmsg_out` header and the 28-byte source address slot
    /// (so 2048 takes RTP datagrams up to 2004 bytes; see
    /// [`DriverOptions::media_payload_max`]). 128..=65536.
    pub media_buffer_len: usize,
    /// io_uring: media receive buffers, shared by every media socket
    /// (rounded up to a power of two, 1..=32768; one ring). Sizing rule: at
    /// least 4 per media socket. A buffer is busy from the moment the kernel
    /// fills it until the shard's handler returns, so the pool must cover
    /// every datagram that arrives between two `poll`s: at 20 ms packet time
    /// that is about one per socket per 20 ms the loop stays away, and 4
    /// leave room for bursts and late loops. When the pool runs dry the
    /// receives stop (counted in [`DriverStats::buffers_exhausted`]) and are
    /// re-armed by the next `poll`; datagrams wait in the socket meanwhile.
    pub media_buffers: usize,
    /// io_uring: the strongest ring setup to ask for (see [`RingFlags`]).
    /// Lower it to [`RingFlags::CoopTaskrun`] to keep a driver movable
    /// between threads, or to work around a kernel problem.
    pub max_ring_flags: RingFlags,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            batch: 64,
            ring_entries: 1024,
            max_datagram: 65535,
            max_stream_backlog: 1 << 20,
            stream_read_buffer: 16 * 1024,
            media_buffer_len: 2048,
            media_buffers: 4096,
            max_ring_flags: RingFlags::default(),
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
        if !(128..=65536).contains(&self.media_buffer_len) {
            return bad("driver media_buffer_len must be 128..=65536");
        }
        if !(1..=MAX_RING_BUFFERS).contains(&self.media_buffers) {
            return bad("driver media_buffers must be 1..=32768");
        }
        Ok(())
    }

    /// Largest media datagram payload received; larger ones are dropped and
    /// counted as truncated. io_uring: `media_buffer_len` less the
    /// `recvmsg_out` header and the address slot. epoll reads media with the
    /// SIP buffers, so there it is also capped by `max_datagram`.
    pub fn media_payload_max(&self) -> usize {
        self.media_buffer_len
            .saturating_sub(RECVMSG_OUT_LEN + SOCKADDR_MAX)
    }
}

/// Most buffers in one provided-buffer ring (the kernel's limit is 2^15).
const MAX_RING_BUFFERS: usize = 32768;
/// Bytes of `struct io_uring_recvmsg_out` that precede the name in a buffer.
const RECVMSG_OUT_LEN: usize = 16;

/// Slot-based socket table shared by both drivers: a removed socket's index
/// goes to the back of a FIFO free list when the driver says it may be
/// reused, so ids are recycled as late as possible.
struct Slots<T> {
    items: Vec<Option<T>>,
    free: VecDeque<u16>,
}

impl<T> Slots<T> {
    fn new() -> Self {
        Slots {
            items: Vec::new(),
            free: VecDeque::new(),
        }
    }

    /// The index the next `insert` uses.
    fn next_index(&self) -> io::Result<u16> {
        match self.free.front() {
            Some(&idx) => Ok(idx),
            None => u16::try_from(self.items.len())
                .map_err(|_| io::Error::other("too many UDP sockets (65536) on one driver")),
        }
    }

    /// Store `item` at [`Slots::next_index`]; call that first (it fails when
    /// the table is full).
    fn insert(&mut self, item: T) -> u16 {
        if let Some(idx) = self.free.pop_front() {
            self.items[usize::from(idx)] = Some(item);
            return idx;
        }
        // invariant: the caller checked next_index, so len < 65536.
        let idx = self.items.len() as u16;
        self.items.push(Some(item));
        idx
    }

    fn get(&self, idx: u16) -> Option<&T> {
        self.items.get(usize::from(idx)).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, idx: u16) -> Option<&mut T> {
        self.items
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
    }

    /// Take the item out and make its index reusable.
    fn remove(&mut self, idx: u16) -> Option<T> {
        let item = self.items.get_mut(usize::from(idx))?.take()?;
        self.free.push_back(idx);
        Some(item)
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
    tracing::info!(
        driver = driver.name(),
        flags = driver.flags(),
        "shard I/O driver ready"
    );
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

/// Socket errors that stand for an ICMP report on an earlier datagram
/// (connected UDP sockets receive them), not for a broken socket.
fn is_icmp_report(e: i32) -> bool {
    matches!(
        e,
        libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN
    )
}

/// `connect(2)` a UDP socket to `peer`, or dissolve its association
/// (`AF_UNSPEC`) with `None`.
fn connect_socket(sock: &UdpSocket, peer: Option<SocketAddr>) -> io::Result<()> {
    let mut st = zeroed_storage();
    let len = match peer {
        Some(a) => sockaddr_from_std(&a, &mut st),
        None => {
            st.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
            mem::size_of::<libc::sa_family_t>() as libc::socklen_t
        }
    };
    // SAFETY: `st` is a live sockaddr_storage of at least `len` bytes; the
    // fd is owned by `sock` for the duration of the call.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&st as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One queued datagram: payload, destination and (for io_uring) the
/// `msghdr`/`iovec` the kernel reads. Boxed in [`SendPool`] so its address is
/// stable while a `SENDMSG` is in flight.
struct SendSlot {
    sock: SockId,
    dst: SocketAddr,
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
                    dst: *dst,
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
        slot.dst = *dst;
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
    //! Every behaviour test is a generic fn over the driver kind, run for
    //! io_uring (default flags), io_uring with `COOP_TASKRUN` only and epoll
    //! by `both_drivers!`. Real loopback sockets; no sleeps: we poll with
    //! short timeouts until a condition holds or a deadline passes.

    use super::*;
    use std::collections::HashMap;
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

    /// Which driver a behaviour test runs on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        /// io_uring with the default (strongest) ring flags.
        Uring,
        /// io_uring capped at `COOP_TASKRUN` (the fallback ring).
        UringCoop,
        Epoll,
    }

    fn make(kind: Kind, o: &DriverOptions) -> Box<dyn Driver> {
        let (choice, max_ring_flags) = match kind {
            Kind::Uring => (Choice::IoUring, RingFlags::SingleIssuerDeferTaskrun),
            Kind::UringCoop => (Choice::IoUring, RingFlags::CoopTaskrun),
            Kind::Epoll => (Choice::Epoll, RingFlags::default()),
        };
        let o = DriverOptions {
            max_ring_flags,
            ..o.clone()
        };
        let d = open(choice, &o).expect("open driver");
        match kind {
            Kind::Epoll => assert_eq!(d.name(), "epoll"),
            Kind::Uring => assert_eq!(
                (d.name(), d.flags()),
                ("io_uring", "single_issuer+defer_taskrun")
            ),
            Kind::UringCoop => assert_eq!((d.name(), d.flags()), ("io_uring", "coop_taskrun")),
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
    fn udp_echo(choice: Kind, bind: &str, rounds: usize, burst: usize) {
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

    fn udp_echo_bursts_larger_than_batch(choice: Kind) {
        udp_echo(choice, "127.0.0.1:0", 20, 50);
    }

    fn udp_echo_ipv6(choice: Kind) {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipping: no IPv6 loopback");
            return;
        }
        udp_echo(choice, "[::1]:0", 4, 30);
    }

    fn reuseport_spreads_datagrams_across_drivers(choice: Kind) {
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

    fn oversize_datagram_dropped_and_counted(choice: Kind) {
        let o = DriverOptions {
            max_datagram: 1024,
            ..opts()
        };
        let mut d = make(choice, &o);
        let sock = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind");
        let target = sock.local_addr().expect("addr");
        d.add_udp(sock).expect("add");
        check_size_limit(&mut *d, target, 1024, 60000);
    }

    /// Send `limit + 1`, `limit`, `huge` and 5 bytes to `target`: only the
    /// `limit` and the 5-byte datagram are reported, the others counted.
    fn check_size_limit(d: &mut dyn Driver, target: SocketAddr, limit: usize, huge: usize) {
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.send_to(&vec![1u8; limit + 1], target)
            .expect("one over");
        peer.send_to(&vec![2u8; limit], target).expect("exact fit");
        peer.send_to(&vec![3u8; huge], target).expect("huge");
        peer.send_to(b"small", target).expect("small");
        let mut evs = Vec::new();
        pump(d, &mut evs, "small datagram", |_, evs| {
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
        assert_eq!(lens, vec![limit, 5]);
        assert_eq!(d.dropped_truncated(), 2);
    }

    fn datagram_send_error_is_counted(choice: Kind) {
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
    fn tcp_stream_large_response_and_peer_close(choice: Kind) {
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

    fn close_by_us_reports_local_once(choice: Kind) {
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

    fn backlog_limit_closes_connection(choice: Kind) {
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

    fn peer_reset_reports_closed(choice: Kind) {
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

    fn waker_wakes_poll_without_timeout(choice: Kind) {
        let mut d = make(choice, &opts());
        let w = d.waker();
        let t = thread::spawn(move || w.wake());
        let mut evs = Vec::new();
        poll_once(&mut *d, None, &mut evs);
        assert_eq!(evs, vec![Ev::Wake]);
        t.join().expect("waker thread");
    }

    fn wakes_coalesce(choice: Kind) {
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
    /// built before its thread starts). With `SINGLE_ISSUER` the ring is
    /// enabled by the first poll/flush, so the thread that drives it is its
    /// issuer; rings not bound to a thread (coop, epoll) are also driven
    /// once by the first thread: the kernel cancels that thread's ops when
    /// it exits and the driver must re-arm them.
    fn driver_moved_to_another_thread_keeps_working(choice: Kind) {
        let (mut d, target, listen, waker) = thread::spawn(move || {
            let mut d = make(choice, &opts());
            let sock = bind_udp_reuseport(addr("127.0.0.1:0")).expect("bind");
            let target = sock.local_addr().expect("addr");
            d.add_udp(sock).expect("add");
            let media = UdpSocket::bind("127.0.0.1:0").expect("bind media");
            d.add_media_udp(media).expect("add media");
            let l = bind_tcp_reuseport(addr("127.0.0.1:0")).expect("listen");
            let listen = l.local_addr().expect("addr");
            d.add_listener(l).expect("add listener");
            let waker = d.waker();
            if choice != Kind::Uring {
                // Submit the receive and accept ops from this thread.
                d.flush().expect("flush");
                d.poll(Some(Duration::ZERO), &mut |ev| panic!("unexpected {ev:?}"))
                    .expect("poll");
            }
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

    /// Raise the soft open-file limit for tests with thousands of sockets.
    pub(super) fn raise_nofile(want: u64) {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY (test): a valid out-pointer and a plain resource id.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            // SAFETY (test): as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
        }
    }

    fn media_socket(d: &mut dyn Driver) -> (SockId, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind media");
        let a = s.local_addr().expect("addr");
        (d.add_media_udp(s).expect("add media"), a)
    }

    /// Sends queued by `flush_for_poll` reach the wire with the next poll,
    /// in order, even one that returns nothing.
    fn flush_for_poll_sends_leave_with_the_next_poll(choice: Kind) {
        let mut d = make(choice, &opts());
        let (id, local) = media_socket(&mut *d);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let peer_addr = peer.local_addr().expect("peer addr");
        for i in 0..3 {
            d.send_to(id, peer_addr, format!("m{i}").as_bytes());
        }
        d.flush_for_poll().expect("flush_for_poll");
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        let mut buf = [0u8; 16];
        for i in 0..3 {
            let (n, from) = peer.recv_from(&mut buf).expect("datagram");
            assert_eq!((&buf[..n], from), (format!("m{i}").as_bytes(), local));
        }
        poll_once(&mut *d, Some(Duration::from_millis(10)), &mut evs);
        assert!(evs.is_empty(), "{evs:?}");
        assert_eq!(d.stats().send_errors, 0);
    }

    /// 2000 media sockets (more than the submission queue: arming them
    /// submits as it goes), one datagram into each, one answer out of each.
    fn many_media_sockets_each_receive_and_answer(choice: Kind) {
        const N: usize = 2000;
        raise_nofile(8192);
        let o = DriverOptions {
            media_buffers: 4 * N,
            ..opts()
        };
        let mut d = make(choice, &o);
        let socks: Vec<(SockId, SocketAddr)> = (0..N).map(|_| media_socket(&mut *d)).collect();
        let index: HashMap<SockId, usize> = socks
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| (id, i))
            .collect();
        assert_eq!(index.len(), N, "ids are distinct");
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let peer_addr = peer.local_addr().expect("peer addr");
        for (i, &(_, a)) in socks.iter().enumerate() {
            peer.send_to(format!("to {i}").as_bytes(), a).expect("send");
        }
        pump(&mut *d, &mut evs, "a datagram per socket", |_, evs| {
            dgrams(evs) >= N
        });
        let mut seen = vec![false; N];
        for ev in &evs {
            let Ev::Dgram(id, src, data) = ev else {
                panic!("{ev:?}")
            };
            let i = index[id];
            assert_eq!(
                (src, data.as_slice()),
                (&peer_addr, format!("to {i}").as_bytes())
            );
            assert!(!seen[i], "socket {i} twice");
            seen[i] = true;
        }
        // Answer in chunks the peer's receive buffer holds.
        let mut buf = [0u8; 64];
        for chunk in evs.chunks(100) {
            for ev in chunk {
                if let Ev::Dgram(id, src, data) = ev {
                    d.send_to(*id, *src, data);
                }
            }
            d.flush().expect("flush");
            for _ in chunk {
                let (n, from) = peer.recv_from(&mut buf).expect("answer");
                let i: usize = std::str::from_utf8(&buf[3..n])
                    .expect("utf8")
                    .parse()
                    .expect("index");
                assert_eq!(from, socks[i].1, "answered from its own socket");
            }
        }
        assert_eq!(d.stats().send_errors, 0);
        assert_eq!(d.dropped_truncated(), 0);
    }

    /// A burst far larger than the media buffer pool: io_uring's receives
    /// run dry and are re-armed; nothing is lost either way.
    fn media_burst_larger_than_the_buffer_pool_all_arrives(choice: Kind) {
        let o = DriverOptions {
            media_buffers: 16,
            ..opts()
        };
        let mut d = make(choice, &o);
        let socks: Vec<(SockId, SocketAddr)> = (0..8).map(|_| media_socket(&mut *d)).collect();
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        const PER: usize = 75;
        for i in 0..PER * socks.len() {
            peer.send_to(&[i as u8; 160], socks[i % socks.len()].1)
                .expect("send");
        }
        pump(&mut *d, &mut evs, "the whole burst", |_, evs| {
            dgrams(evs) >= PER * 8
        });
        for &(id, _) in &socks {
            let n = evs
                .iter()
                .filter(|e| matches!(e, Ev::Dgram(s, _, d) if *s == id && d.len() == 160))
                .count();
            assert_eq!(n, PER, "{id:?}");
        }
        if choice != Kind::Epoll {
            assert!(d.stats().buffers_exhausted > 0, "{:?}", d.stats());
        }
    }

    fn media_oversize_datagram_dropped_and_counted(choice: Kind) {
        let o = DriverOptions {
            media_buffer_len: 256,
            ..opts()
        };
        assert_eq!(o.media_payload_max(), 256 - 16 - 28);
        let mut d = make(choice, &o);
        let (_, target) = media_socket(&mut *d);
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        check_size_limit(&mut *d, target, 212, 2000);
    }

    /// After `remove_udp` nothing more is reported for the socket, sends
    /// queued before still leave, later ones count as errors, the socket is
    /// closed once the kernel is done with it, and only then is its id
    /// handed out again.
    fn remove_udp_stops_receiving_and_closes_the_socket(choice: Kind) {
        let mut d = make(choice, &opts());
        let (ia, a_addr) = media_socket(&mut *d);
        let (ib, b_addr) = media_socket(&mut *d);
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let peer_addr = peer.local_addr().expect("peer addr");
        peer.send_to(b"to a before", a_addr).expect("send");
        d.send_to(ia, peer_addr, b"queued before remove");
        d.remove_udp(ia);
        d.remove_udp(ia);
        d.remove_udp(SockId(999));
        d.send_to(ia, peer_addr, b"after remove");
        assert_eq!(d.stats().send_errors, 1);
        let (it, _) = media_socket(&mut *d);
        if choice == Kind::Epoll {
            assert_eq!(it, ia, "nothing in flight: the id is free at once");
        } else {
            assert_ne!(it, ia, "not reused while its receive may be in flight");
        }
        d.flush().expect("flush");
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("queued datagram");
        assert_eq!((&buf[..n], from), (&b"queued before remove"[..], a_addr));
        peer.send_to(b"to a after", a_addr).expect("send");
        peer.send_to(b"to b", b_addr).expect("send");
        pump(&mut *d, &mut evs, "datagram to b", |_, evs| {
            evs.iter()
                .any(|e| matches!(e, Ev::Dgram(s, ..) if *s == ib))
        });
        // Closed once nothing refers to it: its port can be bound again.
        pump(&mut *d, &mut evs, "a closed", |_, _| {
            UdpSocket::bind(a_addr).is_ok()
        });
        poll_once(&mut *d, Some(Duration::from_millis(10)), &mut evs);
        assert!(
            evs.iter()
                .all(|e| matches!(e, Ev::Dgram(s, _, data) if *s == ib && data == b"to b")),
            "{evs:?}"
        );
        if choice != Kind::Epoll {
            let (ic, _) = media_socket(&mut *d);
            assert_eq!(ic, ia, "free again once the kernel let go");
        }
    }

    /// A media socket bound to a port named explicitly, as the shell binds
    /// RTP ports: disconnecting keeps the port (a socket bound to port 0
    /// would lose it).
    fn media_socket_on_named_port(d: &mut dyn Driver) -> (SockId, SocketAddr) {
        let port = {
            let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
            probe.local_addr().expect("addr").port()
        };
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let id = d
            .add_media_udp(UdpSocket::bind(local).expect("bind media"))
            .expect("add media");
        (id, local)
    }

    /// A media socket connected to its latched peer hears only that peer,
    /// still sends to it (and elsewhere), and hears everyone again once
    /// disconnected.
    fn connected_media_socket_hears_only_its_peer(choice: Kind) {
        let mut d = make(choice, &opts());
        let (id, local) = media_socket_on_named_port(&mut *d);
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        let other = UdpSocket::bind("127.0.0.1:0").expect("other");
        for s in [&peer, &other] {
            s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        }
        let (p, o) = (
            peer.local_addr().expect("addr"),
            other.local_addr().expect("addr"),
        );
        d.connect_udp(id, Some(p)).expect("connect");
        d.connect_udp(SockId(999), Some(p))
            .expect("unknown ids are ignored");
        other.send_to(b"not latched", local).expect("send");
        peer.send_to(b"latched", local).expect("send");
        pump(&mut *d, &mut evs, "the peer's datagram", |_, evs| {
            dgrams(evs) >= 1
        });
        poll_once(&mut *d, Some(Duration::from_millis(20)), &mut evs);
        let got: Vec<(SocketAddr, Vec<u8>)> = evs
            .drain(..)
            .filter_map(|e| match e {
                Ev::Dgram(_, from, data) => Some((from, data)),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![(p, b"latched".to_vec())],
            "only the peer is heard"
        );
        d.send_to(id, p, b"to the peer");
        d.send_to(id, o, b"elsewhere");
        d.flush().expect("flush");
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("at the peer");
        assert_eq!((&buf[..n], from), (&b"to the peer"[..], local));
        let (n, from) = other.recv_from(&mut buf).expect("elsewhere");
        assert_eq!((&buf[..n], from), (&b"elsewhere"[..], local));
        d.connect_udp(id, None).expect("disconnect");
        other.send_to(b"heard again", local).expect("send");
        pump(&mut *d, &mut evs, "the other's datagram", |_, evs| {
            evs.iter().any(
                |e| matches!(e, Ev::Dgram(_, from, data) if *from == o && data == b"heard again"),
            )
        });
        assert_eq!(d.stats().send_errors, 0);
    }

    /// A connected socket learns of ICMP port-unreachable replies (the peer
    /// went away) as `ECONNREFUSED` on its next receive: that is not a
    /// broken socket. Many of them in a row must not stop the socket from
    /// being read once the peer is back.
    /// More consecutive receive errors than a driver tolerates from a
    /// broken socket (io_uring gives up after 16).
    const MAX_FAILS_SEEN: usize = 16;

    fn icmp_errors_on_a_connected_socket_do_not_stop_its_receives(choice: Kind) {
        // The vanished peer lives on a loopback address of its own (one
        // per driver kind): its port, released and bound again below, is
        // never taken meanwhile by another test process binding ephemeral
        // ports on 127.0.0.1 (which then also got the datagrams sent "into
        // the void").
        let peer_ip = [127, 0, 0, 20 + choice as u8];
        let mut d = make(choice, &opts());
        let (id, local) = media_socket_on_named_port(&mut *d);
        let gone = UdpSocket::bind(SocketAddr::from((peer_ip, 0))).expect("peer");
        let peer_addr = gone.local_addr().expect("addr");
        drop(gone);
        d.connect_udp(id, Some(peer_addr)).expect("connect");
        let mut evs = Vec::new();
        for _ in 0..3 * MAX_FAILS_SEEN {
            d.send_to(id, peer_addr, b"into the void");
            d.flush().expect("flush");
            poll_once(&mut *d, Some(Duration::from_millis(2)), &mut evs);
        }
        let back = UdpSocket::bind(peer_addr).expect("the peer is back");
        back.send_to(b"hello again", local).expect("send");
        pump(
            &mut *d,
            &mut evs,
            "the returning peer's datagram",
            |_, evs| {
                evs.iter().any(
                    |e| matches!(e, Ev::Dgram(s, _, data) if *s == id && data == b"hello again"),
                )
            },
        );
        assert!(d.stats().icmp_errors > 0, "{:?}", d.stats());
    }

    /// Once the driver is dropped every socket it held is closed: a
    /// restarted appliance binds the same RTP and SIP ports at once.
    fn drop_releases_every_port_at_once(choice: Kind) {
        let mut d = make(choice, &opts());
        let media: Vec<SocketAddr> = (0..4).map(|_| media_socket(&mut *d).1).collect();
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind sip");
        let sip_addr = sip.local_addr().expect("addr");
        d.add_udp(sip).expect("add sip");
        let mut evs = Vec::new();
        poll_once(&mut *d, Some(Duration::ZERO), &mut evs);
        drop(d);
        for a in media.iter().chain([&sip_addr]) {
            if let Err(e) = UdpSocket::bind(a) {
                panic!("{a} still held after drop: {e}");
            }
        }
    }

    macro_rules! both_drivers {
        ($($name:ident),* $(,)?) => {
            mod uring {
                $( #[test] fn $name() { super::$name(super::Kind::Uring) } )*
            }
            mod uring_coop {
                $( #[test] fn $name() { super::$name(super::Kind::UringCoop) } )*
            }
            mod epoll {
                $( #[test] fn $name() { super::$name(super::Kind::Epoll) } )*
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
        flush_for_poll_sends_leave_with_the_next_poll,
        many_media_sockets_each_receive_and_answer,
        media_burst_larger_than_the_buffer_pool_all_arrives,
        media_oversize_datagram_dropped_and_counted,
        remove_udp_stops_receiving_and_closes_the_socket,
        drop_releases_every_port_at_once,
        connected_media_socket_hears_only_its_peer,
        icmp_errors_on_a_connected_socket_do_not_stop_its_receives,
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
