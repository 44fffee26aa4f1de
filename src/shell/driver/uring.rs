//! io_uring shard driver (Linux ≥ 6.0).
//!
//! Owns one io_uring instance per shard plus every buffer the kernel reads
//! or writes on its behalf. All I/O is completion based:
//!
//! | what | op | why |
//! | --- | --- | --- |
//! | UDP files | a sparse registered file table, one slot per UDP socket index (as far as `RLIMIT_NOFILE` allows) | SQEs name sockets by slot (`IOSQE_FIXED_FILE`): no fd lookup per op (`fget` was 3 % of a relaying shard; fixed files measured 5–6 % less CPU per relayed packet, bench/RESULTS.md) |
//! | UDP receive | `RECVMSG` multishot + provided-buffer ring | one SQE per socket receives until the ring runs dry; source address and payload land in one pooled buffer (parsed with `types::RecvMsgOut`), no per-datagram SQE or allocation. SIP sockets draw from a ring of big buffers (group 0), media sockets from a ring of small ones (group 1) |
//! | UDP send | `SENDMSG` with `MSG_DONTWAIT`, one per datagram, queued by `flush_for_poll`/`flush` | the `io_uring_enter` of the next `poll` (or of `flush`) sends the whole batch; a send the socket has no room for (`EAGAIN`) is re-issued without `MSG_DONTWAIT` so the kernel waits for room |
//! | TCP accept | `ACCEPT` multishot | one SQE per listener for all connections |
//! | TCP receive | `RECV` into a per-connection buffer, re-armed after each completion | connections are few and bursty; a private buffer keeps the pools for UDP |
//! | TCP send | `SEND` of the queued bytes, re-issued for the remainder on a short write | at most one in flight per connection keeps ordering trivial |
//! | wake | `READ` of the eventfd, re-armed | another thread's `Waker::wake` completes it |
//! | wait | `io_uring_enter` with `IORING_ENTER_EXT_ARG` timeout (`SubmitArgs`) | submit and wait in one syscall, no timeout SQEs to manage |
//!
//! # Ring setup and the driving thread
//! The ring asks for `SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL` and falls
//! back to `COOP_TASKRUN | SUBMIT_ALL`, then to no flags, when the kernel
//! refuses ([`RingFlags`], [`Driver::flags`]). With `DEFER_TASKRUN` the
//! kernel posts completions only while the issuing thread waits in
//! `io_uring_enter` with `IORING_ENTER_GETEVENTS`; every enter of `poll`
//! carries it, also with a zero timeout. `SINGLE_ISSUER` binds the ring to
//! one thread, so the ring is created `IORING_SETUP_R_DISABLED` and enabled
//! (`IORING_REGISTER_ENABLE_RINGS`) by the first `poll`/`flush`/
//! `flush_for_poll`: the thread that drives the driver is the issuer, even
//! if another thread built it. Nothing is submitted before that (sockets
//! added earlier are armed then). Probing the kernel's ops happens on a
//! separate short-lived ring without flags.
//!
//! # One enter per loop
//! `flush_for_poll` only writes SQEs; `poll` submits them in the same
//! `io_uring_enter` that waits. The UDP sends carry `MSG_DONTWAIT`, so each
//! completes (successfully or with an error) while that enter submits it and
//! its CQE is already posted when the enter starts waiting; the enter
//! therefore asks for one completion more than the number of such sends, and
//! returns for a real event (a datagram, a wake, ...) or the timeout, not
//! for its own sends. Their CQEs are reaped with the rest and only return
//! send slots. CQEs already visible when `poll` starts (a `flush`'s sends)
//! are reaped first without a syscall.
//!
//! # Memory the kernel touches
//! Every pointer put into an SQE points into memory owned by the driver that
//! is not moved, reused or freed until that op's final CQE is reaped:
//! the buffer rings and their buffers (anonymous mmaps), each UDP socket's
//! boxed `msghdr` template (a removed socket is dropped only once its
//! receive has ended and no send naming its fd is queued or in flight),
//! boxed datagram send slots (out of the free list while queued or in
//! flight), each connection's read buffer and in-flight send vector (the
//! connection is only removed when neither op is in flight) and the eventfd
//! read buffer. `Drop` cancels everything and reaps the completions before
//! freeing; if that does not finish, it leaks the memory rather than free it
//! under the kernel. SQEs written but never submitted (a ring never enabled)
//! are never read by the kernel.
//!
//! # Re-arming
//! A multishot op that ends (a CQE without `IORING_CQE_F_MORE`: provided
//! buffers ran out (`ENOBUFS`, counted in `DriverStats::buffers_exhausted`),
//! an error, or a cancellation) is queued for re-arming at the start of the
//! next `poll`, after the buffers of the batch went back to their ring, and
//! the re-arm goes to the kernel in that poll's enter: a dry media ring costs
//! one SQE per affected socket, no extra syscall. Listeners that hit a
//! resource limit (`EMFILE`, ...) rest 100 ms first.

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
    MAX_RING_BUFFERS, PendingCloses, RECVMSG_OUT_LEN, RingFlags, SOCKADDR_MAX, SendPool, Slots,
    SockId, Waker, accept_error_needs_pause, connect_socket, is_icmp_report, sockaddr_from_bytes,
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
const K_MEDIA_RECV: u64 = 9;
/// A datagram send re-issued without `MSG_DONTWAIT` after `EAGAIN`.
const K_UDP_RESEND: u64 = 10;

fn user_data(kind: u64, idx: u64) -> u64 {
    super::pack_tag(kind, idx)
}

/// Buffer group of the SIP provided-buffer ring.
const BGID_SIP: u16 = 0;
/// Buffer group of the media provided-buffer ring.
const BGID_MEDIA: u16 = 1;
/// CQEs copied out of the completion ring per round.
const CQE_CHUNK: usize = 256;
/// Rounds of CQE draining per `poll`, so a flood cannot starve timers.
const DRAIN_ROUNDS: usize = 8;

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
    /// `MSG_DONTWAIT` datagram sends pushed since the last enter. Each
    /// completes while the enter that submits it runs, so that enter waits
    /// for this many CQEs more than the one it is after.
    inline_sends: u32,
}

impl Sq {
    fn new(ring: IoUring) -> Self {
        Sq {
            ring,
            inflight: 0,
            enters: 0,
            inline_sends: 0,
        }
    }

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
            self.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// [`Sq::push`] for a datagram send with `MSG_DONTWAIT`, which completes
    /// during the enter that submits it.
    ///
    /// # Safety
    /// As for [`Sq::push`].
    unsafe fn push_inline_send(&mut self, e: &squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.push(e)? };
        self.inline_sends += 1;
        Ok(())
    }

    /// Submit what is queued, without waiting.
    fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.enters += 1;
        let r = self.ring.submit();
        // If the kernel took fewer than all, undercounting is harmless (one
        // early return from a wait); overcounting could make a wait too long.
        self.inline_sends = 0;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(ring_error(e)),
        }
    }

    /// Submit and wait (always with `IORING_ENTER_GETEVENTS`, which
    /// `DEFER_TASKRUN` needs to post completions) for one completion beyond
    /// the queued inline sends, or the timeout.
    fn enter(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.enters += 1;
        let want = 1 + self.inline_sends as usize;
        self.inline_sends = 0;
        let r = match wait {
            None => self.ring.submit_and_wait(want),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_transient(&e) => Ok(()),
            Err(e) => Err(ring_error(e)),
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

/// Explain `EEXIST`, the kernel's answer to a second thread on a
/// `SINGLE_ISSUER` ring.
fn ring_error(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EEXIST) {
        io::Error::new(
            e.kind(),
            "io_uring driver used from a thread other than the one that drives it \
             (one thread drives a driver)",
        )
    } else {
        e
    }
}

/// How an SQE names a file.
#[derive(Clone, Copy)]
enum Target {
    Fixed(u32),
    Fd(std::os::fd::RawFd),
}

struct UdpSock {
    sock: UdpSocket,
    /// Boxed: its address is in the armed multishot recvmsg SQE.
    msg: Box<libc::msghdr>,
    /// Receives into the media ring (else the SIP ring).
    media: bool,
    armed: bool,
    /// Consecutive receive ops that ended in an unexpected error without
    /// delivering anything; past `MAX_UDP_FAILS` the socket is given up
    /// (logged) instead of re-armed in a busy loop.
    fails: u8,
    /// `remove_udp` was called: nothing more is reported, and the socket is
    /// dropped once `idle`.
    removing: bool,
    /// Datagram sends naming this socket's fd, queued or in flight.
    sends: u32,
    /// The peer it is connected to: sends there go out as plain `SEND`s.
    peer: Option<SocketAddr>,
}

impl UdpSock {
    fn idle(&self) -> bool {
        !self.armed && self.sends == 0
    }
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
    flags: RingFlags,
    /// Slots of the registered file table (0: none registered): a UDP
    /// socket whose index is below it is named by its slot
    /// (`IOSQE_FIXED_FILE`), which saves the kernel an fd lookup per op.
    fixed_files: u32,
    /// Created `R_DISABLED` and not enabled yet: nothing was submitted.
    disabled: bool,
    sip_bufs: ManuallyDrop<BufRing>,
    media_bufs: ManuallyDrop<BufRing>,
    pool: ManuallyDrop<SendPool>,
    wake_buf: ManuallyDrop<RawBuf>,
    udp: Slots<UdpSock>,
    listeners: Vec<Listener>,
    paused_listeners: usize,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    /// Datagram slots queued by `send_to`, pushed as SQEs by `flush*`.
    udp_queue: Vec<u32>,
    /// Connections with new bytes in `queued`.
    dirty: Vec<ConnId>,
    closed: PendingCloses,
    /// UDP sockets to arm: new ones and those whose multishot receive ended.
    rearm_udp: Vec<u16>,
    rearm_listeners: Vec<u16>,
    wake_fd: Arc<OwnedFd>,
    wake_armed: bool,
    cqes: Vec<cqueue::Entry>,
    opts: DriverOptions,
    stats: DriverStats,
}

// SAFETY: the raw pointers inside (mmaps, RawBufs, msghdr templates, send
// slots) point to memory owned exclusively by this driver. The ring may be
// moved to another thread before it is enabled (nothing was submitted); once
// enabled, a SINGLE_ISSUER ring refuses other threads (EEXIST, reported as
// an error, never memory unsafety), and rings without it may be driven from
// any thread (ops cancelled because their submitting thread exited come back
// as ECANCELED and are re-armed).
unsafe impl Send for UringDriver {}

impl UringDriver {
    /// Probe every op the driver needs, set up the ring (with the strongest
    /// [`RingFlags`] the kernel accepts, up to `opts.max_ring_flags`) and
    /// register the SIP and media provided-buffer rings. Fails (so
    /// `open(Auto)` falls back) when the kernel or a seccomp policy lacks any
    /// of them.
    pub fn new(opts: &DriverOptions) -> io::Result<Self> {
        opts.validate()?;
        probe_kernel()?;
        let (ring, flags) = build_ring(opts.ring_entries, opts.max_ring_flags)?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(unsupported("IORING_FEAT_EXT_ARG (Linux 5.11)"));
        }
        if !params.is_feature_nodrop() {
            return Err(unsupported("IORING_FEAT_NODROP (Linux 5.5)"));
        }

        let sip_n = (opts.batch * 4)
            .clamp(32, MAX_RING_BUFFERS)
            .next_power_of_two();
        // invariant: validated max_datagram ≤ 1 MiB, so the sum fits u32.
        let sip_len = u32::try_from(RECVMSG_OUT_LEN + SOCKADDR_MAX + opts.max_datagram)
            .expect("buffer length fits u32");
        let media_n = opts.media_buffers.next_power_of_two().min(MAX_RING_BUFFERS);
        // invariant: validated media_buffer_len ≤ 65536.
        let media_len = u32::try_from(opts.media_buffer_len).expect("buffer length fits u32");
        // invariant: both counts are clamped to MAX_RING_BUFFERS = 2^15.
        let sip_n = u16::try_from(sip_n).expect("buffer count fits u16");
        let media_n = u16::try_from(media_n).expect("buffer count fits u16");
        let sip_bufs = BufRing::new(sip_n, sip_len)?;
        let media_bufs = BufRing::new(media_n, media_len)?;
        let wake =
            nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)?;
        let wake_fd: OwnedFd = wake.into();

        let d = UringDriver {
            sq: Sq::new(ring),
            flags,
            fixed_files: 0,
            disabled: flags == RingFlags::SingleIssuerDeferTaskrun,
            sip_bufs: ManuallyDrop::new(sip_bufs),
            media_bufs: ManuallyDrop::new(media_bufs),
            pool: ManuallyDrop::new(SendPool::new()),
            wake_buf: ManuallyDrop::new(RawBuf::new(8)),
            udp: Slots::new(),
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
        for (br, n, bgid) in [
            (&d.sip_bufs, sip_n, BGID_SIP),
            (&d.media_bufs, media_n, BGID_MEDIA),
        ] {
            // SAFETY: the ring mapping lives in `d` until Drop, which
            // unregisters it before freeing (or leaks it if ops are stuck).
            unsafe {
                d.sq.ring.submitter().register_buf_ring_with_flags(
                    br.ring.ptr.as_ptr() as u64,
                    n,
                    bgid,
                    0,
                )
            }
            .map_err(|e| {
                io::Error::new(e.kind(), format!("provided buffer ring (Linux 5.19): {e}"))
            })?;
        }
        let mut d = d;
        // A sparse table, one slot per possible UDP socket index, as far as
        // the fd limit allows (the kernel checks it against RLIMIT_NOFILE).
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur.min(u64::from(u16::MAX) + 1) as u32
        } else {
            0
        };
        if files > 0 && d.sq.ring.submitter().register_files_sparse(files).is_ok() {
            d.fixed_files = files;
        }
        tracing::debug!(
            flags = flags.as_str(),
            fixed_files = d.fixed_files,
            "io_uring ring set up"
        );
        Ok(d)
    }

    /// The ring flags this driver got.
    pub fn ring_flags(&self) -> RingFlags {
        self.flags
    }

    /// Enable a ring created `R_DISABLED`: the calling thread becomes its
    /// issuer. Called by everything that may submit.
    fn enable(&mut self) -> io::Result<()> {
        if self.disabled {
            self.sq
                .ring
                .submitter()
                .register_enable_rings()
                .map_err(ring_error)?;
            self.disabled = false;
        }
        Ok(())
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

    /// How SQEs name UDP socket `idx`: its registered slot, else its fd.
    fn udp_target(&self, idx: u16, fd: std::os::fd::RawFd) -> Target {
        if u32::from(idx) < self.fixed_files {
            Target::Fixed(u32::from(idx))
        } else {
            Target::Fd(fd)
        }
    }

    fn arm_udp(&mut self, idx: u16) -> io::Result<()> {
        let Some(u) = self.udp.get_mut(idx) else {
            return Ok(());
        };
        if u.armed || u.removing {
            return Ok(());
        }
        let (kind, bgid) = if u.media {
            (K_MEDIA_RECV, BGID_MEDIA)
        } else {
            (K_UDP_RECV, BGID_SIP)
        };
        let fd = u.sock.as_raw_fd();
        let msg: *const libc::msghdr = &*u.msg;
        let e = match self.udp_target(idx, fd) {
            Target::Fixed(slot) => opcode::RecvMsgMulti::new(types::Fixed(slot), msg, bgid).build(),
            Target::Fd(fd) => opcode::RecvMsgMulti::new(types::Fd(fd), msg, bgid).build(),
        }
        .user_data(user_data(kind, u64::from(idx)));
        let Some(u) = self.udp.get_mut(idx) else {
            return Ok(());
        };
        // SAFETY: the msghdr template is boxed in the socket entry, which is
        // dropped only when `armed` is false again, i.e. after this op's
        // final CQE (or after Drop reaped every op). Received data goes to
        // provided buffers (see BufRing).
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

    /// Arm new sockets, re-arm ops that ended, and listeners whose rest is
    /// over. Only pushes SQEs; the next enter submits them.
    fn rearm(&mut self) -> io::Result<()> {
        if !self.wake_armed {
            self.arm_wake()?;
        }
        while let Some(i) = self.rearm_udp.pop() {
            if let Err(e) = self.arm_udp(i) {
                self.rearm_udp.push(i);
                return Err(e);
            }
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

    fn add_udp_socket(&mut self, sock: UdpSocket, media: bool) -> io::Result<SockId> {
        sock.set_nonblocking(true)?;
        self.udp.next_index()?;
        let idx = self.udp.insert(UdpSock {
            sock,
            msg: Box::new(recv_template()),
            media,
            armed: false,
            fails: 0,
            removing: false,
            sends: 0,
            peer: None,
        });
        if u32::from(idx) < self.fixed_files
            && let Some(u) = self.udp.get(idx)
            && self
                .sq
                .ring
                .submitter()
                .register_files_update(u32::from(idx), &[u.sock.as_raw_fd()])
                .is_err()
        {
            // The slot stays empty: SQEs would fail with EBADF. Use fds
            // for every socket from now on.
            tracing::warn!(
                idx,
                "cannot register a socket with io_uring; using plain fds"
            );
            self.fixed_files = 0;
        }
        // Armed by the next poll/flush, from the thread that drives the ring.
        self.rearm_udp.push(idx);
        Ok(SockId(idx))
    }

    /// Drop a removed socket (closing its fd) once nothing refers to it;
    /// its id becomes reusable then.
    fn reap_udp(&mut self, idx: u16) {
        if self.udp.get(idx).is_some_and(|u| u.removing && u.idle()) {
            if u32::from(idx) < self.fixed_files {
                // The table's reference would keep the socket open.
                let _ = self
                    .sq
                    .ring
                    .submitter()
                    .register_files_update(u32::from(idx), &[-1]);
            }
            self.udp.remove(idx);
        }
    }

    /// Write an SQE for every queued datagram and every connection with new
    /// bytes; submits only if the submission queue fills up.
    fn push_sends(&mut self) -> io::Result<()> {
        self.enable()?;
        let mut queue = mem::take(&mut self.udp_queue);
        let mut result = Ok(());
        for (i, &slot) in queue.iter().enumerate() {
            let s = self.pool.get_mut(slot);
            // invariant: `sends` keeps the socket alive while a slot names it.
            let Some(u) = self.udp.get(s.sock.0) else {
                self.stats.send_errors += 1;
                self.pool.release(slot);
                continue;
            };
            let target = if u32::from(s.sock.0) < self.fixed_files {
                Target::Fixed(u32::from(s.sock.0))
            } else {
                Target::Fd(u.sock.as_raw_fd())
            };
            let e = if u.peer == Some(s.dst) {
                // Connected: no address to copy, the socket's cached route.
                // invariant: datagrams are at most 64 KiB.
                let (buf, len) = (s.data.as_ptr(), s.data.len() as u32);
                match target {
                    Target::Fixed(f) => opcode::Send::new(types::Fixed(f), buf, len),
                    Target::Fd(fd) => opcode::Send::new(types::Fd(fd), buf, len),
                }
                .flags(libc::MSG_DONTWAIT)
                .build()
            } else {
                let msg = s.prepare_msghdr();
                match target {
                    Target::Fixed(f) => opcode::SendMsg::new(types::Fixed(f), msg),
                    Target::Fd(fd) => opcode::SendMsg::new(types::Fd(fd), msg),
                }
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
            }
            .user_data(user_data(K_UDP_SEND, u64::from(slot)));
            // SAFETY: the slot is boxed (stable address) and was taken off the
            // free list by `send_to`; it returns there only when this op's CQE
            // is reaped. Its msghdr/iovec point into the slot itself. The
            // socket (whose fd the SQE names) is kept open while `sends` > 0.
            if let Err(e) = unsafe { self.sq.push_inline_send(&e) } {
                for &rest in &queue[i..] {
                    self.stats.send_errors += 1;
                    self.finish_send(rest);
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
        Ok(())
    }

    /// Copy CQEs out in chunks and handle them; buffers go back to their
    /// ring after each chunk.
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
            self.sip_bufs.publish();
            self.media_bufs.publish();
            self.cqes = cqes;
            if n < CQE_CHUNK {
                break;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn complete(&mut self, cqe: &cqueue::Entry, on: &mut dyn FnMut(IoEvent<'_>)) -> io::Result<()> {
        let res = cqe.result();
        let flags = cqe.flags();
        let more = cqueue::more(flags);
        if !more {
            self.sq.inflight = self.sq.inflight.saturating_sub(1);
        }
        let (kind, idx) = super::unpack_tag(cqe.user_data());
        match kind {
            // invariant (all `as u16`/`as u32` below): indices were put into
            // user_data from u16/u32 values by this driver.
            K_UDP_SEND | K_UDP_RESEND => self.on_udp_send(kind, idx as u32, res),
            K_MEDIA_RECV => self.on_udp_recv(true, idx as u16, res, flags, more, on),
            K_UDP_RECV => self.on_udp_recv(false, idx as u16, res, flags, more, on),
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

    /// A datagram send finished: its slot goes back to the pool. A first
    /// attempt the socket had no room for is re-issued once without
    /// `MSG_DONTWAIT` (the kernel then waits for room, as a blocking send).
    fn on_udp_send(&mut self, kind: u64, slot: u32, res: i32) {
        if kind == K_UDP_SEND && res == -libc::EAGAIN && self.resend(slot).is_ok() {
            return;
        }
        if res < 0 {
            self.stats.send_errors += 1;
            tracing::debug!(error = %io::Error::from_raw_os_error(-res), "datagram send failed");
        }
        self.finish_send(slot);
    }

    fn resend(&mut self, slot: u32) -> io::Result<()> {
        let s = self.pool.get(slot);
        let Some(u) = self.udp.get(s.sock.0) else {
            return Err(io::Error::other("socket gone"));
        };
        let e = match self.udp_target(s.sock.0, u.sock.as_raw_fd()) {
            Target::Fixed(f) => opcode::SendMsg::new(types::Fixed(f), &s.msg).build(),
            Target::Fd(fd) => opcode::SendMsg::new(types::Fd(fd), &s.msg).build(),
        }
        .user_data(user_data(K_UDP_RESEND, u64::from(slot)));
        // SAFETY: as in `push_sends`: the slot (whose msghdr still points at
        // its own payload and address, untouched since) stays off the free
        // list until this op's CQE, and `sends` keeps the socket open.
        unsafe { self.sq.push(&e) }
    }

    /// Return a send slot and drop the socket's reference.
    fn finish_send(&mut self, slot: u32) {
        let sock = self.pool.get(slot).sock;
        self.pool.release(slot);
        if let Some(u) = self.udp.get_mut(sock.0) {
            u.sends = u.sends.saturating_sub(1);
            if u.removing && u.sends == 0 {
                self.reap_udp(sock.0);
            }
        }
    }

    fn on_udp_recv(
        &mut self,
        media: bool,
        idx: u16,
        res: i32,
        flags: u32,
        more: bool,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) {
        let ring = if media {
            &mut *self.media_bufs
        } else {
            &mut *self.sip_bufs
        };
        let Some(u) = self.udp.get_mut(idx) else {
            // invariant: a socket outlives its receive op; be safe anyway.
            if let Some(bid) = cqueue::buffer_select(flags) {
                ring.recycle(bid);
            }
            return;
        };
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 && !u.removing {
                u.fails = 0;
                // SAFETY: the kernel filled `res` bytes of buffer `bid`, which
                // is ours until `recycle` below, after the callback returned.
                let buf = unsafe { ring.data(bid, res as usize) };
                match types::RecvMsgOut::parse(buf, &u.msg) {
                    Ok(out) if out.is_payload_truncated() => self.stats.dropped_truncated += 1,
                    Ok(out) => match sockaddr_from_bytes(out.name_data()) {
                        Some(src) => on(IoEvent::Datagram {
                            sock: SockId(idx),
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
            ring.recycle(bid);
        }
        if more {
            return;
        }
        u.armed = false;
        if u.removing {
            self.reap_udp(idx);
            return;
        }
        match -res {
            libc::ENOBUFS => self.stats.buffers_exhausted += 1,
            // An ICMP error for an earlier send (the peer of a connected
            // media socket went away): reported once, the socket is fine.
            e if is_icmp_report(e) => {
                self.stats.icmp_errors += 1;
                tracing::debug!(sock = idx, error = %io::Error::from_raw_os_error(e), "ICMP error on a connected socket");
            }
            e if res < 0 && !matches!(e, libc::ECANCELED | libc::EINTR | libc::EAGAIN) => {
                u.fails = u.fails.saturating_add(1);
                let error = io::Error::from_raw_os_error(e);
                if u.fails >= MAX_UDP_FAILS {
                    tracing::error!(%error, sock = idx, "UDP receive keeps failing; socket no longer read");
                    return;
                }
                tracing::warn!(%error, sock = idx, "UDP receive ended with an error; re-arming");
            }
            _ => {}
        }
        self.rearm_udp.push(idx);
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
        if self.disabled {
            // Never enabled: no SQE was ever submitted.
            return true;
        }
        // SQEs a `flush_for_poll` left go first, so those datagrams leave.
        let _ = self.sq.submit();
        if self.sq.inflight == 0 {
            return true;
        }
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

/// Build the ring with the strongest flags the kernel accepts, at most `max`.
fn build_ring(entries: u32, max: RingFlags) -> io::Result<(IoUring, RingFlags)> {
    choose_flags(max, |flags| {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries.saturating_mul(4)).setup_clamp();
        match flags {
            RingFlags::SingleIssuerDeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_r_disabled()
                    .setup_submit_all();
            }
            RingFlags::CoopTaskrun => {
                b.setup_coop_taskrun().setup_submit_all();
            }
            RingFlags::None => {}
        }
        b.build(entries)
    })
}

/// Try `build` with each of [`RingFlags::FALLBACK`] not above `max`,
/// strongest first, moving on only when the kernel says `EINVAL` (flags it
/// does not know); any other error is returned as is.
fn choose_flags<T>(
    max: RingFlags,
    mut build: impl FnMut(RingFlags) -> io::Result<T>,
) -> io::Result<(T, RingFlags)> {
    let mut refused = None;
    for flags in RingFlags::FALLBACK.into_iter().filter(|&f| f <= max) {
        match build(flags) {
            Ok(t) => return Ok((t, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(
                    flags = flags.as_str(),
                    "io_uring refused these setup flags; trying weaker ones"
                );
                refused = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Check, on a short-lived ring without flags, that the kernel has every op
/// the driver uses, provided-buffer rings and multishot recvmsg: arm one on
/// an unbound UDP socket (which never receives) and cancel it; `ECANCELED`
/// means the kernel accepted it, `EINVAL` that it predates multishot recvmsg
/// (Linux 6.0).
fn probe_kernel() -> io::Result<()> {
    let ring = IoUring::builder().build(8)?;
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
    let bufs = BufRing::new(1, 64)?;
    // SAFETY: `bufs` outlives the ring: it is dropped after it below, or
    // leaked if the probe op could not be reaped.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring.ptr.as_ptr() as u64, 1, BGID_SIP, 0)
    }
    .map_err(|e| io::Error::new(e.kind(), format!("provided buffer ring (Linux 5.19): {e}")))?;
    let mut sq = Sq::new(ring);
    let msg = Box::new(recv_template());
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let probe_ud = user_data(K_PROBE, 0);
    let recv = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), &*msg, BGID_SIP)
        .build()
        .user_data(probe_ud);
    let cancel = opcode::AsyncCancel::new(probe_ud)
        .build()
        .user_data(user_data(K_CANCEL, 0));
    // SAFETY: `msg` and `bufs` live until the op is reaped or are leaked
    // below; the socket never receives, so no buffer is consumed; the cancel
    // op references no memory.
    unsafe {
        sq.push(&recv)?;
        sq.push(&cancel)?;
    }
    let mut result = None;
    for _ in 0..20 {
        sq.enter(Some(Duration::from_millis(50)))?;
        for cqe in sq.ring.completion() {
            if !cqueue::more(cqe.flags()) {
                sq.inflight = sq.inflight.saturating_sub(1);
            }
            if cqe.user_data() == probe_ud && !cqueue::more(cqe.flags()) {
                result = Some(cqe.result());
            }
        }
        if sq.inflight == 0 {
            break;
        }
    }
    if sq.inflight == 0 {
        let _ = sq.ring.submitter().unregister_buf_ring(BGID_SIP);
    } else {
        mem::forget(msg);
        mem::forget(bufs);
    }
    drop(sq);
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

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {what}"))
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn flags(&self) -> &'static str {
        self.flags.as_str()
    }

    fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        self.add_udp_socket(sock, false)
    }

    fn add_media_udp(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        self.add_udp_socket(sock, true)
    }

    fn remove_udp(&mut self, sock: SockId) {
        let Some(u) = self.udp.get_mut(sock.0) else {
            return;
        };
        if u.removing {
            return;
        }
        u.removing = true;
        if u.armed {
            let kind = if u.media { K_MEDIA_RECV } else { K_UDP_RECV };
            let cancel = opcode::AsyncCancel::new(user_data(kind, u64::from(sock.0)))
                .build()
                .user_data(user_data(K_CANCEL, 0));
            // SAFETY: a cancel op references no memory. (An armed receive
            // means the ring is enabled, so pushing may submit.)
            if let Err(e) = unsafe { self.sq.push(&cancel) } {
                tracing::warn!(error = %e, sock = sock.0, "cannot cancel a removed socket's receive");
            }
        }
        self.reap_udp(sock.0);
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
        // Armed by the next poll/flush, from the thread that drives the ring.
        self.rearm_listeners.push(idx);
        Ok(ListenerId(idx))
    }

    fn connect_udp(&mut self, sock: SockId, peer: Option<SocketAddr>) -> io::Result<()> {
        let Some(u) = self.udp.get_mut(sock.0).filter(|u| !u.removing) else {
            return Ok(());
        };
        connect_socket(&u.sock, peer)?;
        u.peer = peer;
        Ok(())
    }

    fn send_to(&mut self, sock: SockId, dst: SocketAddr, data: &[u8]) {
        let Some(u) = self.udp.get_mut(sock.0).filter(|u| !u.removing) else {
            self.stats.send_errors += 1;
            return;
        };
        u.sends += 1;
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
        self.push_sends()?;
        self.rearm()?;
        self.sq.submit()
    }

    fn flush_for_poll(&mut self) -> io::Result<()> {
        self.push_sends()
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on: &mut dyn FnMut(IoEvent<'_>),
    ) -> io::Result<()> {
        self.enable()?;
        let mut ready = self.deliver_closed(on);
        if !self.sq.ring.completion().is_empty() {
            // Visible without a syscall: a `flush`'s send completions (reaped
            // quietly) or what the last drain left of a flood.
            let mut events = 0usize;
            self.drain(&mut |ev| {
                events += 1;
                on(ev);
            })?;
            ready |= events > 0;
        }
        self.rearm()?;
        let wait = if ready {
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
            for bgid in [BGID_SIP, BGID_MEDIA] {
                let _ = self.sq.ring.submitter().unregister_buf_ring(bgid);
            }
            // The table holds a reference to every UDP socket; the kernel
            // would drop it only when it tears the ring down, after the
            // process is gone — too late for a restart binding the same
            // RTP ports. With nothing in flight this lets go at once.
            if self.fixed_files > 0 {
                let _ = self.sq.ring.submitter().unregister_files();
            }
            // SAFETY: no op is in flight any more, so nothing references
            // these; they are dropped exactly once, here.
            unsafe {
                ManuallyDrop::drop(&mut self.sip_bufs);
                ManuallyDrop::drop(&mut self.media_bufs);
                ManuallyDrop::drop(&mut self.pool);
                ManuallyDrop::drop(&mut self.wake_buf);
            }
        } else {
            tracing::error!(
                inflight = self.sq.inflight,
                "io_uring ops did not finish on shutdown (or the driver was dropped by \
                 a thread that does not drive it); leaking their buffers"
            );
            // The ManuallyDrop fields are simply not dropped; the rest of the
            // memory the kernel may still use is forgotten too.
            mem::forget(mem::take(&mut self.conns));
            mem::forget(mem::replace(&mut self.udp, Slots::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::thread;

    fn local(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

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
        let sock = super::super::bind_udp_reuseport(local("127.0.0.1:0")).expect("bind");
        d.add_udp(sock).expect("add udp");
        let media = UdpSocket::bind("127.0.0.1:0").expect("bind media");
        d.add_media_udp(media).expect("add media");
        let l = super::super::bind_tcp_reuseport(local("127.0.0.1:0")).expect("listen");
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
            d.sq.inflight >= 6,
            "udp, media, accept, wake, recv, send: {}",
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

    #[test]
    fn ring_flags_fall_back_in_order_on_einval_only() {
        use RingFlags::{CoopTaskrun as Coop, None as Plain, SingleIssuerDeferTaskrun as Defer};
        // (ceiling asked for, strongest the kernel knows) → (got, tried)
        for (max, kernel, got, tried) in [
            (Defer, Defer, Defer, vec![Defer]),
            (Defer, Coop, Coop, vec![Defer, Coop]),
            (Defer, Plain, Plain, vec![Defer, Coop, Plain]),
            (Coop, Defer, Coop, vec![Coop]),
            (Plain, Defer, Plain, vec![Plain]),
        ] {
            let mut seen = Vec::new();
            let (_, chosen) = choose_flags(max, |f| {
                seen.push(f);
                if f <= kernel {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(libc::EINVAL))
                }
            })
            .expect("built");
            assert_eq!(
                (chosen, seen),
                (got, tried),
                "max {max:?}, kernel {kernel:?}"
            );
        }
        let mut tried = Vec::new();
        // Other errors are not a reason to fall back.
        let err = choose_flags(RingFlags::SingleIssuerDeferTaskrun, |f| -> io::Result<()> {
            tried.push(f);
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        })
        .expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        assert_eq!(tried.len(), 1);
        // Nothing accepted: the kernel's EINVAL.
        let err = choose_flags(RingFlags::SingleIssuerDeferTaskrun, |_| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        })
        .expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn this_kernel_gets_single_issuer_and_defer_taskrun() {
        let d = UringDriver::new(&DriverOptions::default()).expect("io_uring");
        assert_eq!(d.ring_flags(), RingFlags::SingleIssuerDeferTaskrun);
        assert_eq!(d.flags(), "single_issuer+defer_taskrun");
        for max in [RingFlags::CoopTaskrun, RingFlags::None] {
            let o = DriverOptions {
                max_ring_flags: max,
                ..DriverOptions::default()
            };
            assert_eq!(UringDriver::new(&o).expect("io_uring").ring_flags(), max);
        }
    }

    /// The shard loop's shape: poll, answer, flush_for_poll, against a peer
    /// that sends its next request only once it has the previous answer.
    /// Each poll makes exactly one io_uring_enter, which submits the answer
    /// and then waits for the next request: it does not return early for the
    /// completion of its own send.
    fn one_enter_per_loop(max: RingFlags) {
        let o = DriverOptions {
            max_ring_flags: max,
            ..DriverOptions::default()
        };
        let mut d = UringDriver::new(&o).expect("io_uring");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let target = sock.local_addr().expect("addr");
        let id = d.add_media_udp(sock).expect("add");
        const ROUNDS: u64 = 200;
        let peer = thread::spawn(move || {
            let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
            peer.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = [0u8; 64];
            for i in 0..ROUNDS {
                peer.send_to(format!("req {i}").as_bytes(), target)
                    .expect("send");
                let (n, from) = peer.recv_from(&mut buf).expect("answer");
                assert_eq!((&buf[..n], from), (format!("req {i}").as_bytes(), target));
            }
        });
        let mut got = Vec::new();
        let mut enters = None;
        for i in 0..ROUNDS {
            d.poll(Some(Duration::from_secs(10)), &mut |ev| {
                if let IoEvent::Datagram { sock, src, data } = ev {
                    got.push((sock, src, data.to_vec()));
                }
            })
            .expect("poll");
            assert_eq!(
                got.len(),
                1,
                "round {i}: each poll returns with the request"
            );
            let (sock, src, data) = got.pop().expect("request");
            assert_eq!((sock, data), (id, format!("req {i}").into_bytes()));
            d.send_to(sock, src, format!("req {i}").as_bytes());
            d.flush_for_poll().expect("flush_for_poll");
            // Count from the first answer on (the first poll also armed).
            enters.get_or_insert(d.stats().syscalls);
        }
        d.flush().expect("flush");
        peer.join().expect("peer");
        let enters = d.stats().syscalls - enters.unwrap_or_default();
        // ROUNDS - 1 polls, plus the final flush.
        assert_eq!(enters, ROUNDS, "one enter per loop");
        assert_eq!(d.stats().send_errors, 0);
    }

    #[test]
    fn one_enter_per_loop_single_issuer_defer_taskrun() {
        one_enter_per_loop(RingFlags::SingleIssuerDeferTaskrun);
    }

    #[test]
    fn one_enter_per_loop_coop_taskrun() {
        one_enter_per_loop(RingFlags::CoopTaskrun);
    }

    #[test]
    fn one_enter_per_loop_no_flags() {
        one_enter_per_loop(RingFlags::None);
    }

    /// A SINGLE_ISSUER ring belongs to the thread that first drove it; a
    /// second thread gets a clear error (and its Drop leaks rather than
    /// frees under the kernel).
    #[test]
    fn second_driving_thread_is_refused_on_a_single_issuer_ring() {
        let mut d = UringDriver::new(&DriverOptions::default()).expect("io_uring");
        d.add_media_udp(UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .expect("add");
        d.poll(Some(Duration::ZERO), &mut |_| {}).expect("poll");
        let err = thread::spawn(move || {
            let e = d
                .poll(Some(Duration::ZERO), &mut |_| {})
                .expect_err("refused");
            // Give the ring back to its thread for a clean drop.
            (e, d)
        })
        .join()
        .expect("second thread");
        let (e, d) = err;
        assert!(e.to_string().contains("one thread drives a driver"), "{e}");
        drop(d);
    }

    /// Arming thousands of multishot receives through an 8-entry submission
    /// queue submits as it goes instead of failing.
    #[test]
    fn arming_5000_media_sockets_through_a_tiny_submission_queue() {
        const N: usize = 5000;
        super::super::tests::raise_nofile(16384);
        let o = DriverOptions {
            ring_entries: 8,
            media_buffers: 4 * N,
            ..DriverOptions::default()
        };
        let mut d = UringDriver::new(&o).expect("io_uring");
        let mut last = None;
        for _ in 0..N {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let a = s.local_addr().expect("addr");
            last = Some((d.add_media_udp(s).expect("add"), a));
        }
        d.poll(Some(Duration::ZERO), &mut |_| {}).expect("arm");
        assert!(d.udp.items.iter().flatten().all(|u| u.armed));
        assert!(d.sq.inflight > N, "{}", d.sq.inflight);
        let (id, target) = last.expect("sockets");
        UdpSocket::bind("127.0.0.1:0")
            .expect("peer")
            .send_to(b"last", target)
            .expect("send");
        let mut got = None;
        let start = Instant::now();
        while got.is_none() {
            assert!(start.elapsed() < Duration::from_secs(20));
            d.poll(Some(Duration::from_millis(10)), &mut |ev| {
                if let IoEvent::Datagram { sock, data, .. } = ev {
                    got = Some((sock, data.to_vec()));
                }
            })
            .expect("poll");
        }
        assert_eq!(got, Some((id, b"last".to_vec())));
    }
}
