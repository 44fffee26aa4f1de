//! io_uring shard driver (Linux ≥ 6.0).
//!
//! Owns one io_uring instance per shard plus every buffer the kernel reads
//! or writes on its behalf. All I/O is completion based:
//!
//! | what | op | why |
//! | --- | --- | --- |
//! | UDP receive | `RECVMSG` multishot + provided-buffer ring | one SQE per socket receives until the ring runs dry; source address and payload land in one pooled buffer (parsed with `types::RecvMsgOut`), no per-datagram SQE or allocation |
//! | UDP send | `SENDMSG`, one per datagram, all pushed in `flush` | one `io_uring_enter` sends the whole batch |
//! | TCP accept | `ACCEPT` multishot | one SQE per listener for all connections |
//! | TCP receive | `RECV` into a per-connection buffer, re-armed after each completion | connections are few and bursty; a private buffer keeps the pool for UDP |
//! | TCP send | `SEND` of the queued bytes, re-issued for the remainder on a short write | at most one in flight per connection keeps ordering trivial |
//! | wake | `READ` of the eventfd, re-armed | another thread's `Waker::wake` completes it |
//! | wait | `io_uring_enter` with `IORING_ENTER_EXT_ARG` timeout (`SubmitArgs`) | submit and wait in one syscall, no timeout SQEs to manage |
//!
//! # Memory the kernel touches
//! Every pointer put into an SQE points into memory owned by the driver that
//! is not moved, reused or freed until that op's final CQE is reaped:
//! the buffer ring and its buffers (anonymous mmaps), each UDP socket's
//! boxed `msghdr` template, boxed datagram send slots (out of the free list
//! while in flight), each connection's read buffer and in-flight send
//! vector (the connection is only removed when neither op is in flight) and
//! the eventfd read buffer. `Drop` cancels everything and reaps the
//! completions before freeing; if that does not finish, it leaks the memory
//! rather than free it under the kernel.
//!
//! # Re-arming
//! A multishot op that ends (a CQE without `IORING_CQE_F_MORE`: provided
//! buffers ran out (`ENOBUFS`), an error, or a cancellation because the
//! submitting thread exited) is queued for re-arming at the start of the
//! next `poll`, after the buffers of the batch went back to the ring.
//! Listeners that hit a resource limit (`EMFILE`, ...) rest 100 ms first.

use std::alloc::{self, Layout};
use std::collections::HashMap;
use std::io;
use std::mem::{self, ManuallyDrop};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::{
    ACCEPT_PAUSE, CloseReason, ConnId, Driver, DriverOptions, DriverStats, IoEvent, ListenerId,
    PendingCloses, SOCKADDR_MAX, SendPool, SockId, Waker, accept_error_needs_pause,
    sockaddr_from_bytes,
};

// user_data layout: kind in the top 8 bits, an index or ConnId below.
const K_UDP_RECV: u64 = 1;
const K_UDP_SEND: u64 = 2;
const K_ACCEPT: u64 = 3;
const K_CONN_RECV: u64 = 4;
const K_CONN_SEND: u64 = 5;
const K_WAKE: u64 = 6;
const K_CANCEL: u64 = 7;
const K_PROBE: u64 = 8;

fn user_data(kind: u64, idx: u64) -> u64 {
    super::pack_tag(kind, idx)
}

/// Buffer group id of the UDP provided-buffer ring (one ring per io_uring).
const BGID: u16 = 0;
/// CQEs copied out of the completion ring per round.
const CQE_CHUNK: usize = 256;
/// Rounds of CQE draining per `poll`, so a flood cannot starve timers.
const DRAIN_ROUNDS: usize = 8;
/// Bytes of `struct io_uring_recvmsg_out` that precede the name in a buffer.
const RECVMSG_OUT_LEN: usize = 16;

/// The kernel's `struct io_uring_buf` (16 bytes). The ring tail lives in the
/// `resv` field of entry 0, so entries are written field by field through raw
/// pointers and entry 0's `resv` is never written by us except as the tail.
#[repr(C)]
struct RawBufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(mem::size_of::<RawBufEntry>() == mem::size_of::<types::BufRingEntry>());
const _: () = assert!(mem::size_of::<RawBufEntry>() == 16);
const TAIL_OFFSET: usize = 14;

/// An anonymous private mapping: page aligned, zeroed, lazily backed.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at a kernel-chosen address
        // aliases no existing memory; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping created in `new`, and
        // the driver only drops it once no op can reference it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A heap buffer addressed only through a raw pointer, for memory the
/// kernel writes behind Rust's back (no `Box`/`Vec` uniqueness involved).
struct RawBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl RawBuf {
    fn new(len: usize) -> Self {
        let len = len.max(1);
        // invariant: `len` ≤ 16 MiB (validated options), far below isize::MAX.
        let layout = Layout::array::<u8>(len).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        RawBuf { ptr, len }
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// # Safety
    /// No op that writes this buffer may be in flight while the slice lives.
    unsafe fn slice(&self, n: usize) -> &[u8] {
        // SAFETY: `n` is clamped to the allocation; the caller guarantees no
        // concurrent kernel write.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), n.min(self.len)) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // invariant: same layout as in `new`, which succeeded.
        let layout = Layout::array::<u8>(self.len).expect("buffer layout");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// The provided-buffer ring for UDP receives: `entries` buffers of `stride`
/// bytes, handed to the kernel through a ring of `io_uring_buf` entries.
struct BufRing {
    ring: Mmap,
    bufs: Mmap,
    entries: u16,
    /// Distance between buffers (64-byte aligned).
    stride: usize,
    /// Length offered to the kernel per buffer: header + name + `max_datagram`,
    /// so a datagram one byte over `max_datagram` is truncated (and dropped)
    /// exactly as with the epoll driver.
    buf_len: u32,
    /// Tail we will publish next (kernel owns the head).
    tail: u16,
}

impl BufRing {
    fn new(entries: u16, buf_len: u32) -> io::Result<Self> {
        debug_assert!(entries.is_power_of_two());
        let stride = (buf_len as usize).next_multiple_of(64);
        let ring = Mmap::new(usize::from(entries) * mem::size_of::<RawBufEntry>())?;
        let bufs = Mmap::new(usize::from(entries) * stride)?;
        let mut br = BufRing {
            ring,
            bufs,
            entries,
            stride,
            buf_len,
            tail: 0,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Give buffer `bid` back to the kernel (visible after `publish`).
    fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.ptr.as_ptr() as u64 + (usize::from(bid) * self.stride) as u64;
        // SAFETY: `slot` < entries, so the entry lies inside the ring mapping.
        // We only write addr/len/bid, never `resv` (entry 0's resv is the
        // tail). The kernel reads entries only between its head and the
        // published tail; this slot is past the published tail, and it is
        // free because each buffer is in the ring at most once and the ring
        // has as many slots as buffers.
        unsafe {
            let e = self.ring.ptr.as_ptr().cast::<RawBufEntry>().add(slot);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.buf_len);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish recycled buffers to the kernel (release store of the tail).
    fn publish(&self) {
        // SAFETY: offset 14 of the page-aligned ring is entry 0's `resv`,
        // the u16 tail shared with the kernel; it is 2-byte aligned and lives
        // as long as the mapping. Atomics are the sanctioned way to share it.
        let tail = unsafe { &*self.ring.ptr.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// # Safety
    /// `bid` must have come back in a CQE and not been recycled yet.
    unsafe fn data(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.buf_len as usize);
        let off = usize::from(bid.min(self.entries - 1)) * self.stride;
        // SAFETY: the range lies inside the buffer mapping; the caller
        // guarantees the kernel is done with it and will not reuse it while
        // the slice lives (it is recycled only after the callback returns).
        unsafe { std::slice::from_raw_parts(self.bufs.ptr.as_ptr().add(off), len) }
    }
}

/// A `msghdr` template for multishot recvmsg: only the name and control
/// lengths matter (name sized for IPv6, no control data).
fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_namelen = SOCKADDR_MAX as libc::socklen_t;
    msg
}

/// The submission side plus the count of ops whose final CQE is pending.
struct Sq {
    ring: IoUring,
    inflight: usize,
    /// `io_uring_enter` calls made (`DriverStats::syscalls`).
    enters: u64,
}

impl Sq {
    /// Push one SQE, submitting first if the queue is full.
    ///
    /// # Safety
    /// Every buffer the entry points to must stay valid and unmoved (and,
    /// for kernel writes, unread) until the op's final CQE is reaped.
    unsafe fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        for _ in 0..64 {
            // SAFETY: forwarded from the caller's contract.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                self.inflight += 1;
                return Ok(());
            }
            self.enters += 1;
            match self.ring.submit() {
                Ok(_) => {}
                Err(err) if is_transient(&err) => {}
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.enters += 1;
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submit and wait for at least one completion or the timeout.
    fn enter(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.enters += 1;
        let r = match wait {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Errors from `io_uring_enter` after which simply trying again later is right.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

struct UdpSock {
    sock: UdpSocket,
    /// Boxed: its address is in the armed multishot recvmsg SQE.
    msg: Box<libc::msghdr>,
    armed: bool,
    /// Consecutive receive ops that ended in an unexpected error without
    /// delivering anything; past `MAX_UDP_FAILS` the socket is given up
    /// (logged) instead of re-armed in a busy loop.
    fails: u8,
}

const MAX_UDP_FAILS: u8 = 16;

struct Listener {
    listener: TcpListener,
    armed: bool,
    paused_until: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    /// Target of the in-flight RECV when `recv_busy`.
    rbuf: RawBuf,
    recv_busy: bool,
    /// Bytes from `send_stream` not yet handed to the kernel.
    queued: Vec<u8>,
    /// Bytes of the in-flight SEND: `sending[sent..]` is unsent. Never
    /// modified while `send_busy`.
    sending: Vec<u8>,
    sent: usize,
    send_busy: bool,
    /// Closed was (or is queued to be) reported; waiting for ops to finish.
    closing: bool,
    /// In `UringDriver::dirty`.
    dirty: bool,
}

impl Conn {
    fn backlog(&self) -> usize {
        self.queued.len() + self.sending.len() - self.sent
    }
}

/// The io_uring driver. See the module docs.
pub struct UringDriver {
    sq: Sq,
    bufs: ManuallyDrop<BufRing>,
    pool: ManuallyDrop<SendPool>,
    wake_buf: ManuallyDrop<RawBuf>,
    probe_msg: Option<Box<libc::msghdr>>,
    udp: Vec<UdpSock>,
    listeners: Vec<Listener>,
    paused_listeners: usize,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    /// Datagram slots queued by `send_to`, pushed as SQEs by `flush`.
    udp_queue: Vec<u32>,
    /// Connections with new bytes in `queued`.
    dirty: Vec<ConnId>,
    closed: PendingCloses,
    rearm_udp: Vec<u16>,
    rearm_listeners: Vec<u16>,
    wake_fd: Arc<OwnedFd>,
    wake_armed: bool,
    cqes: Vec<cqueue::Entry>,
    opts: DriverOptions,
    stats: DriverStats,
}

// SAFETY: the raw pointers inside (mmaps, RawBufs, msghdr templates, send
// slots) point to memory owned exclusively by this driver, and an io_uring
// without IORING_SETUP_SINGLE_ISSUER may be driven from any thread. Ops
// cancelled because the thread that submitted them exited come back as
// ECANCELED and are re-armed.
unsafe impl Send for UringDriver {}

impl UringDriver {
    /// Set up the ring, register the provided-buffer ring and probe every op
    /// the driver needs. Fails (so `open(Auto)` falls back) when the kernel
    /// or a seccomp policy lacks any of them.
    pub fn new(opts: &DriverOptions) -> io::Result<Self> {
        opts.validate()?;
        let ring = build_ring(opts.ring_entries)?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(unsupported("IORING_FEAT_EXT_ARG (Linux 5.11)"));
        }
        if !params.is_feature_nodrop() {
            return Err(unsupported("IORING_FEAT_NODROP (Linux 5.5)"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "RECVMSG"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::Accept::CODE, "ACCEPT"),
            (opcode::Recv::CODE, "RECV"),
            (opcode::Send::CODE, "SEND"),
            (opcode::Read::CODE, "READ"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(unsupported(name));
            }
        }

        let nbufs = (opts.batch * 4).clamp(32, 32768).next_power_of_two();
        // invariant: clamped to 32768 above, which fits u16.
        let nbufs = u16::try_from(nbufs).expect("buffer count fits u16");
        // invariant: validated max_datagram ≤ 1 MiB, so the sum fits u32.
        let buf_len = u32::try_from(RECVMSG_OUT_LEN + SOCKADDR_MAX + opts.max_datagram)
            .expect("buffer length fits u32");
        let bufs = BufRing::new(nbufs, buf_len)?;
        let wake =
            nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)?;
        let wake_fd: OwnedFd = wake.into();

        let mut d = UringDriver {
            sq: Sq {
                ring,
                inflight: 0,
                enters: 0,
            },
            bufs: ManuallyDrop::new(bufs),
            pool: ManuallyDrop::new(SendPool::new()),
            wake_buf: ManuallyDrop::new(RawBuf::new(8)),
            probe_msg: None,
            udp: Vec::new(),
            listeners: Vec::new(),
            paused_listeners: 0,
            conns: HashMap::new(),
            next_conn: 1,
            udp_queue: Vec::new(),
            dirty: Vec::new(),
            closed: PendingCloses::new(),
            rearm_udp: Vec::new(),
            rearm_listeners: Vec::new(),
            wake_fd: Arc::new(wake_fd),
            wake_armed: false,
            cqes: Vec::with_capacity(CQE_CHUNK),
            opts: opts.clone(),
            stats: DriverStats::default(),
        };
        // SAFETY: the ring mapping lives in `d.bufs` until Drop, which
        // unregisters it before freeing (or leaks it if ops are stuck).
        unsafe {
            d.sq.ring.submitter().register_buf_ring_with_flags(
                d.bufs.ring.ptr.as_ptr() as u64,
                nbufs,
                BGID,
                0,
            )
        }
        .map_err(|e| io::Error::new(e.kind(), format!("provided buffer ring (Linux 5.19): {e}")))?;
        d.probe_multishot_recvmsg()?;
        d.arm_wake()?;
        d.sq.submit()?;
        Ok(d)
    }

    /// Arm a multishot recvmsg on an unbound UDP socket (which never
    /// receives) and cancel it: `ECANCELED` means the kernel accepted it,
    /// `EINVAL` means it predates multishot recvmsg (Linux 6.0).
    fn probe_multishot_recvmsg(&mut self) -> io::Result<()> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let msg: &libc::msghdr = self.probe_msg.insert(Box::new(recv_template()));
        let probe_ud = user_data(K_PROBE, 0);
        let recv = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), msg, BGID)
            .build()
            .user_data(probe_ud);
        let cancel = opcode::AsyncCancel::new(probe_ud)
            .build()
            .user_data(user_data(K_CANCEL, 0));
        // SAFETY: the msghdr is boxed in `self.probe_msg`, which lives until
        // Drop has reaped (or leaked past) every op. The socket never
        // receives, so no provided buffer is consumed; the cancel op
        // references no memory.
        unsafe {
            self.sq.push(&recv)?;
            self.sq.push(&cancel)?;
        }
        let mut result = None;
        for _ in 0..20 {
            self.sq.enter(Some(Duration::from_millis(50)))?;
            for cqe in self.sq.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.sq.inflight = self.sq.inflight.saturating_sub(1);
                }
                if cqe.user_data() == probe_ud && !cqueue::more(cqe.flags()) {
                    result = Some(cqe.result());
                }
            }
            if self.sq.inflight == 0 {
                break;
            }
        }
        drop(sock);
        match result {
            Some(r) if r == -libc::ECANCELED => Ok(()),
            Some(r) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "multishot RECVMSG (Linux 6.0) probe failed: {}",
                    io::Error::from_raw_os_error(-r)
                ),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "multishot RECVMSG probe did not complete",
            )),
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.wake_fd.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(user_data(K_WAKE, 0));
        // SAFETY: `wake_buf` (8 bytes) is owned by the driver and freed only
        // after Drop reaped this op; nothing reads it (the value is unused).
        unsafe { self.sq.push(&e)? };
        self.wake_armed = true;
        Ok(())
    }

    fn arm_udp(&mut self, idx: u16) -> io::Result<()> {
        let Some(u) = self.udp.get_mut(usize::from(idx)) else {
            return Ok(());
        };
        if u.armed {
            return Ok(());
        }
        let e = opcode::RecvMsgMulti::new(types::Fd(u.sock.as_raw_fd()), &*u.msg, BGID)
            .build()
            .user_data(user_data(K_UDP_RECV, u64::from(idx)));
        // SAFETY: the msghdr template is boxed in the socket entry; sockets
        // are never removed, so it lives until Drop reaps this op. Received
        // data goes to provided buffers (see BufRing).
        unsafe { self.sq.push(&e)? };
        u.armed = true;
        Ok(())
    }

    fn arm_accept(&mut self, idx: u16) -> io::Result<()> {
        let Some(l) = self.listeners.get_mut(usize::from(idx)) else {
            return Ok(());
        };
        if l.armed || l.paused_until.is_some() {
            return Ok(());
        }
        let e = opcode::AcceptMulti::new(types::Fd(l.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(K_ACCEPT, u64::from(idx)));
        // SAFETY: multishot accept without an address buffer references no memory.
        unsafe { self.sq.push(&e)? };
        l.armed = true;
        Ok(())
    }

    /// Re-arm ops that ended, and listeners whose rest is over.
    fn rearm(&mut self) -> io::Result<()> {
        if !self.wake_armed {
            self.arm_wake()?;
        }
        while let Some(i) = self.rearm_udp.pop() {
            self.arm_udp(i)?;
        }
        while let Some(i) = self.rearm_listeners.pop() {
            self.arm_accept(i)?;
        }
        if self.paused_listeners > 0 {
            let now = Instant::now();
            for i in 0..self.listeners.len() {
                let l = &mut self.listeners[i];
                if l.paused_until.is_some_and(|t| t <= now) {
                    l.paused_until = None;
                    self.paused_listeners -= 1;
                    // invariant: listener indices come from add_listener, which caps them at u16.
                    self.arm_accept(u16::try_from(i).expect("listener index fits u16"))?;
                }
            }
        }
        Ok(())
    }

    fn next_pause_end(&self) -> Option<Instant> {
        if self.paused_listeners == 0 {
            return None;
        }
        self.listeners.iter().filter_map(|l| l.paused_until).min()
    }

    fn deliver_closed(&mut self, on: &mut dyn FnMut(IoEvent<'_>)) -> bool {
        let any = !self.closed.is_empty();
        while let Some((conn, reason)) = self.closed.pop_front() {
            on(IoEvent::Closed { conn, reason });
        }
        any
    }

    /// Copy CQEs out in chunks and handle them; buffers go back to the ring
    /// after each chunk.
    fn drain(&mut self, on: &mut dyn FnMut(IoEvent<'_>)) -> io::Result<()> {
        let mut first_err = None;
        for _ in 0..DRAIN_ROUNDS {
            let mut cqes = mem::take(&mut self.cqes);
            cqes.clear();
            cqes.extend(self.sq.ring.completion().take(CQE_CHUNK));
            let n = cqes.len();
            for cqe in &cqes {
                if let Err(e) = self.complete(cqe, on) {
                    first_err.get_or_insert(e);
                }
            }
            self.bufs.publish();
            self.cqes = cqes;
            if n < CQE_CHUNK {
                break;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn complete(&mut self, cqe: &cqueue::Entry, on: &mut dyn FnMut(IoEvent<'_>)) -> io::Result<()> {
        let ud = cqe.user_data();
        let res = cqe.result();
        let flags = cqe.flags();
        let more = cqueue::more(flags);
        if !more {
            self.sq.inflight = self.sq.inflight.saturating_sub(1);
        }
        let (kind, idx) = super::unpack_tag(ud);
        match kind {
            // invariant (all `as u16`/`as u32` below): indices were put into
            // user_data from u16/u32 values by this driver.
            K_UDP_RECV => self.on_udp_recv(idx as u16, res, flags, more, on),
            K_UDP_SEND => {
                if res < 0 {
                    self.stats.send_errors += 1;
                    tracing::debug!(error = %io::Error::from_raw_os_error(-res), "datagram send failed");
                }
                self.pool.release(idx as u32);
            }
            K_ACCEPT => return self.on_accept(idx as u16, res, more, on),
            K_CONN_RECV => return self.on_conn_recv(ConnId(idx), res, on),
            K_CONN_SEND => return self.on_conn_send(ConnId(idx), res, on),
            K_WAKE => {
                self.wake_armed = false;
                if res >= 0 {
                    on(IoEvent::Wake);
                } else if res != -libc::ECANCELED {
                    tracing::warn!(error = %io::Error::from_raw_os_error(-res), "eventfd read failed");
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_udp_recv(
        &mut self,
        sock: u16,
        res: i32,
        flags: u32,
        more: bool,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) {
        if let (true, Some(u)) = (res > 0, self.udp.get_mut(usize::from(sock))) {
            u.fails = 0;
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            if let (true, Some(u)) = (res > 0, self.udp.get(usize::from(sock))) {
                // SAFETY: the kernel filled `res` bytes of buffer `bid`, which
                // is ours until `recycle` below, after the callback returned.
                let buf = unsafe { self.bufs.data(bid, res as usize) };
                match types::RecvMsgOut::parse(buf, &u.msg) {
                    Ok(out) if out.is_payload_truncated() => self.stats.dropped_truncated += 1,
                    Ok(out) => match sockaddr_from_bytes(out.name_data()) {
                        Some(src) => on(IoEvent::Datagram {
                            sock: SockId(sock),
                            src,
                            data: out.payload_data(),
                        }),
                        None => {
                            tracing::debug!("datagram with unknown source address family dropped")
                        }
                    },
                    Err(()) => tracing::debug!(len = res, "malformed recvmsg multishot buffer"),
                }
            }
            self.bufs.recycle(bid);
        }
        if more {
            return;
        }
        let Some(u) = self.udp.get_mut(usize::from(sock)) else {
            return;
        };
        u.armed = false;
        if res < 0
            && !matches!(
                -res,
                libc::ENOBUFS | libc::ECANCELED | libc::EINTR | libc::EAGAIN
            )
        {
            u.fails = u.fails.saturating_add(1);
            let error = io::Error::from_raw_os_error(-res);
            if u.fails >= MAX_UDP_FAILS {
                tracing::error!(%error, sock, "UDP receive keeps failing; socket no longer read");
                return;
            }
            tracing::warn!(%error, sock, "UDP receive ended with an error; re-arming");
        }
        self.rearm_udp.push(sock);
    }

    fn on_accept(
        &mut self,
        l: u16,
        res: i32,
        more: bool,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let mut pause = false;
        if res >= 0 {
            // SAFETY: a successful accept CQE carries a new fd that nothing
            // else owns; wrapping it makes us its only owner.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.new_conn(ListenerId(l), TcpStream::from(fd), on)?;
        } else if res != -libc::ECANCELED {
            self.stats.accept_errors += 1;
            pause = accept_error_needs_pause(-res);
            tracing::warn!(error = %io::Error::from_raw_os_error(-res), listener = l, "accept failed");
        }
        if more {
            return Ok(());
        }
        if let Some(lst) = self.listeners.get_mut(usize::from(l)) {
            lst.armed = false;
            if pause {
                lst.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                self.paused_listeners += 1;
            } else {
                self.rearm_listeners.push(l);
            }
        }
        Ok(())
    }

    fn new_conn(
        &mut self,
        listener: ListenerId,
        stream: TcpStream,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => {
                // Reset between accept and now: nothing to report.
                self.stats.accept_errors += 1;
                tracing::debug!(error = %e, "accepted connection vanished");
                return Ok(());
            }
        };
        let _ = stream.set_nodelay(true);
        // invariant: ConnIds stay below 2^56 (the user_data index width);
        // that is 10^16 connections, beyond any uptime.
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let conn = Conn {
            stream,
            rbuf: RawBuf::new(self.opts.stream_read_buffer),
            recv_busy: false,
            queued: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            send_busy: false,
            closing: false,
            dirty: false,
        };
        let conn = self.conns.entry(id).or_insert(conn);
        on(IoEvent::Accepted {
            listener,
            conn: id,
            peer,
            local,
        });
        arm_conn_recv(&mut self.sq, id, conn)
    }

    fn on_conn_recv(
        &mut self,
        id: ConnId,
        res: i32,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        conn.recv_busy = false;
        if conn.closing {
            self.reap(id);
            return Ok(());
        }
        if res > 0 {
            // SAFETY: the RECV that wrote `res` bytes has completed and the
            // next one is armed only after the callback returns.
            let data = unsafe { conn.rbuf.slice(res as usize) };
            on(IoEvent::Stream { conn: id, data });
            return arm_conn_recv(&mut self.sq, id, conn);
        }
        match -res {
            0 => self.fail_conn(id, CloseReason::PeerClosed, on),
            libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ENOBUFS => {
                return arm_conn_recv(&mut self.sq, id, conn);
            }
            errno => self.fail_conn(id, CloseReason::Error(errno), on),
        }
        Ok(())
    }

    fn on_conn_send(
        &mut self,
        id: ConnId,
        res: i32,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        conn.send_busy = false;
        if conn.closing {
            self.reap(id);
            return Ok(());
        }
        if res >= 0 {
            conn.sent = (conn.sent + res as usize).min(conn.sending.len());
            if conn.sent < conn.sending.len() {
                self.stats.partial_writes += 1;
            } else {
                conn.sending.clear();
                conn.sent = 0;
                if conn.queued.is_empty() {
                    return Ok(());
                }
                mem::swap(&mut conn.queued, &mut conn.sending);
            }
            return submit_conn_send(&mut self.sq, id, conn);
        }
        match -res {
            libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ENOBUFS => {
                submit_conn_send(&mut self.sq, id, conn)
            }
            errno => {
                self.fail_conn(id, CloseReason::Error(errno), on);
                Ok(())
            }
        }
    }

    /// Report `Closed` now (inside `poll`) and start closing.
    fn fail_conn(&mut self, id: ConnId, reason: CloseReason, on: &mut dyn FnMut(IoEvent<'_>)) {
        on(IoEvent::Closed { conn: id, reason });
        self.begin_close(id);
    }

    /// Mark closing, drop unsent bytes and shut the socket down so in-flight
    /// RECV/SEND complete promptly; the fd is closed once both are reaped.
    fn begin_close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.closing = true;
        conn.queued = Vec::new();
        let _ = conn.stream.shutdown(Shutdown::Both);
        self.reap(id);
    }

    fn reap(&mut self, id: ConnId) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| c.closing && !c.recv_busy && !c.send_busy)
        {
            self.conns.remove(&id);
        }
    }

    /// Wait for in-flight ops to finish after cancelling them; true when none is left.
    fn quiesce(&mut self) -> bool {
        for conn in self.conns.values() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        // A pending eventfd READ completes once the counter is non-zero.
        Waker::new(self.wake_fd.clone()).wake();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(K_CANCEL, 0));
        // SAFETY: a cancel op references no memory.
        let _ = unsafe { self.sq.push(&cancel) };
        for _ in 0..200 {
            if self.sq.inflight == 0 {
                return true;
            }
            if self.sq.enter(Some(Duration::from_millis(10))).is_err() {
                return false;
            }
            for cqe in self.sq.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.sq.inflight = self.sq.inflight.saturating_sub(1);
                }
            }
        }
        self.sq.inflight == 0
    }
}

fn arm_conn_recv(sq: &mut Sq, id: ConnId, conn: &mut Conn) -> io::Result<()> {
    let len = u32::try_from(conn.rbuf.len).unwrap_or(u32::MAX);
    let e = opcode::Recv::new(
        types::Fd(conn.stream.as_raw_fd()),
        conn.rbuf.as_mut_ptr(),
        len,
    )
    .build()
    .user_data(user_data(K_CONN_RECV, id.0));
    // SAFETY: `rbuf` is owned by the connection, which is removed (and the
    // buffer freed) only when `recv_busy` is false, i.e. after this op's CQE,
    // or after Drop reaped every op. Nothing reads it while the op is armed.
    unsafe { sq.push(&e)? };
    conn.recv_busy = true;
    Ok(())
}

fn submit_conn_send(sq: &mut Sq, id: ConnId, conn: &mut Conn) -> io::Result<()> {
    let rest = &conn.sending[conn.sent..];
    if rest.is_empty() {
        return Ok(());
    }
    let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
    let e = opcode::Send::new(types::Fd(conn.stream.as_raw_fd()), rest.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(K_CONN_SEND, id.0));
    // SAFETY: `sending` is not modified while `send_busy` (only `queued`
    // grows), and the connection (owning the vector's heap buffer) is removed
    // only after this op's CQE, or after Drop reaped every op.
    unsafe { sq.push(&e)? };
    conn.send_busy = true;
    Ok(())
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    // COOP_TASKRUN (5.19) avoids IPIs for completions; SUBMIT_ALL (5.18)
    // keeps submitting after one bad SQE. Retry plain on older kernels.
    match IoUring::builder()
        .setup_cqsize(cq)
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_submit_all()
        .build(entries)
    {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq)
            .setup_clamp()
            .build(entries),
        Err(e) => Err(e),
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {what}"))
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        sock.set_nonblocking(true)?;
        let idx =
            u16::try_from(self.udp.len()).map_err(|_| io::Error::other("too many UDP sockets"))?;
        self.udp.push(UdpSock {
            sock,
            msg: Box::new(recv_template()),
            armed: false,
            fails: 0,
        });
        self.arm_udp(idx)?;
        Ok(SockId(idx))
    }

    fn add_listener(&mut self, l: TcpListener) -> io::Result<ListenerId> {
        l.set_nonblocking(true)?;
        let idx = u16::try_from(self.listeners.len())
            .map_err(|_| io::Error::other("too many listeners"))?;
        self.listeners.push(Listener {
            listener: l,
            armed: false,
            paused_until: None,
        });
        self.arm_accept(idx)?;
        Ok(ListenerId(idx))
    }

    fn send_to(&mut self, sock: SockId, dst: SocketAddr, data: &[u8]) {
        if usize::from(sock.0) >= self.udp.len() {
            self.stats.send_errors += 1;
            return;
        }
        let slot = self.pool.alloc(sock, &dst, data);
        self.udp_queue.push(slot);
    }

    fn send_stream(&mut self, id: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closing || data.is_empty() {
            return;
        }
        conn.queued.extend_from_slice(data);
        if conn.backlog() > self.opts.max_stream_backlog {
            self.closed.push_back((id, CloseReason::BacklogExceeded));
            self.begin_close(id);
            return;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|c| !c.closing) {
            self.closed.push_back((id, CloseReason::Local));
            self.begin_close(id);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut queue = mem::take(&mut self.udp_queue);
        let mut result = Ok(());
        for (i, &slot) in queue.iter().enumerate() {
            let s = self.pool.get_mut(slot);
            let Some(u) = self.udp.get(usize::from(s.sock.0)) else {
                self.stats.send_errors += 1;
                self.pool.release(slot);
                continue;
            };
            let fd = u.sock.as_raw_fd();
            let msg = s.prepare_msghdr();
            let e = opcode::SendMsg::new(types::Fd(fd), msg)
                .build()
                .user_data(user_data(K_UDP_SEND, u64::from(slot)));
            // SAFETY: the slot is boxed (stable address) and was taken off the
            // free list by `send_to`; it returns there only when this op's CQE
            // is reaped. Its msghdr/iovec point into the slot itself.
            if let Err(e) = unsafe { self.sq.push(&e) } {
                for &rest in &queue[i..] {
                    self.stats.send_errors += 1;
                    self.pool.release(rest);
                }
                result = Err(e);
                break;
            }
        }
        queue.clear();
        self.udp_queue = queue;
        result?;

        let mut dirty = mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.dirty = false;
            if conn.closing || conn.send_busy || conn.queued.is_empty() {
                continue;
            }
            mem::swap(&mut conn.queued, &mut conn.sending);
            conn.sent = 0;
            submit_conn_send(&mut self.sq, id, conn)?;
        }
        self.dirty = dirty;
        self.sq.submit()
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        let delivered = self.deliver_closed(on);
        self.rearm()?;
        let wait = if delivered || !self.sq.ring.completion().is_empty() {
            Some(Duration::ZERO)
        } else {
            match (timeout, self.next_pause_end()) {
                (t, None) => t,
                (None, Some(end)) => Some(end.saturating_duration_since(Instant::now())),
                (Some(t), Some(end)) => Some(t.min(end.saturating_duration_since(Instant::now()))),
            }
        };
        self.sq.enter(wait)?;
        self.drain(on)
    }

    fn waker(&self) -> Waker {
        Waker::new(self.wake_fd.clone())
    }

    fn stats(&self) -> DriverStats {
        DriverStats {
            syscalls: self.sq.enters,
            ..self.stats
        }
    }

    fn stream_backlog(&self, id: ConnId) -> Option<usize> {
        self.conns
            .get(&id)
            .filter(|c| !c.closing)
            .map(Conn::backlog)
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        if self.quiesce() {
            let _ = self.sq.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: no op is in flight any more, so nothing references
            // these; they are dropped exactly once, here.
            unsafe {
                ManuallyDrop::drop(&mut self.bufs);
                ManuallyDrop::drop(&mut self.pool);
                ManuallyDrop::drop(&mut self.wake_buf);
            }
        } else {
            tracing::error!(
                inflight = self.sq.inflight,
                "io_uring ops did not finish on shutdown; leaking their buffers"
            );
            // The ManuallyDrop fields are simply not dropped; the rest of the
            // memory the kernel may still use is forgotten too.
            mem::forget(mem::take(&mut self.conns));
            mem::forget(mem::take(&mut self.udp));
            mem::forget(self.probe_msg.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Drop must cancel and reap every op (multishot recvmsg, multishot
    /// accept, eventfd read, a connection's recv and a send stuck on a full
    /// socket) before it frees the buffers those ops point to.
    #[test]
    fn quiesce_reaps_every_op_including_a_blocked_send() {
        let opts = DriverOptions {
            max_stream_backlog: 64 << 20,
            ..DriverOptions::default()
        };
        let mut d = UringDriver::new(&opts).expect("io_uring");
        let sock =
            super::super::bind_udp_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        d.add_udp(sock).expect("add udp");
        let l =
            super::super::bind_tcp_reuseport("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let target = l.local_addr().expect("addr");
        d.add_listener(l).expect("add listener");
        let mut client = TcpStream::connect(target).expect("connect");
        client.write_all(b"hi").expect("write");
        let mut conn = None;
        for _ in 0..200 {
            d.poll(Some(Duration::from_millis(10)), &mut |ev| {
                if let IoEvent::Accepted { conn: c, .. } = ev {
                    conn = Some(c);
                }
            })
            .expect("poll");
            if conn.is_some() {
                break;
            }
        }
        let conn = conn.expect("accepted");
        // The client never reads: 32 MiB cannot all fit in socket buffers.
        d.send_stream(conn, &vec![0u8; 32 << 20]);
        d.flush().expect("flush");
        d.poll(Some(Duration::from_millis(10)), &mut |_| {})
            .expect("poll");
        assert!(
            d.conns
                .get(&conn)
                .is_some_and(|c| c.send_busy && c.recv_busy)
        );
        assert!(
            d.sq.inflight >= 5,
            "udp, accept, wake, recv, send: {}",
            d.sq.inflight
        );
        assert!(d.quiesce(), "ops still in flight: {}", d.sq.inflight);
        assert_eq!(d.sq.inflight, 0);
        drop(client);
    }

    #[test]
    fn buffer_ring_recycles_into_free_slots() {
        let mut br = BufRing::new(4, 100).expect("buf ring");
        assert_eq!(br.tail, 4);
        br.recycle(2);
        br.recycle(9); // out of range: ignored
        assert_eq!(br.tail, 5);
        let e = br.ring.ptr.as_ptr().cast::<RawBufEntry>();
        // SAFETY (test): entry 0 lies in the 4-entry ring mapping; nothing
        // else accesses it.
        let (addr, len, bid) = unsafe { ((*e).addr, (*e).len, (*e).bid) };
        assert_eq!(bid, 2);
        assert_eq!(len, 100);
        assert_eq!(addr, br.bufs.ptr.as_ptr() as u64 + 2 * 128);
    }
}
