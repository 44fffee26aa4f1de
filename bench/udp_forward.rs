//! UDP forward micro-benchmark: which I/O runtime should a shard thread use?
//!
//! A shard's data plane is, at its core, "receive a datagram on a socket and
//! send it somewhere else" (an RTP relay leg). This benchmark measures exactly
//! that loop on this machine with four I/O strategies and reports packets per
//! second, CPU time per forwarded packet and loss, each as a ratio against a
//! plain one-syscall-per-packet forwarder measured in the same run.
//!
//! # Topology
//!
//! Loopback UDP sockets on 127.0.0.1:
//!
//! ```text
//!  core 1                          core 0                      core 1
//!  generator ──sendmmsg──▶ [F0..Fn-1] forwarder thread ──▶ [S] sink
//!  (same thread as the sink)       (one variant)               (recvmmsg, never sleeps on S)
//! ```
//!
//! * The **forwarder** thread is pinned to `--fwd-core` (`sched_setaffinity`)
//!   and runs one variant over `--sockets` receive sockets. It forwards every
//!   datagram to S with an explicit destination, sending from the socket it
//!   arrived on (a relay leg answers from its own port), and asks for the
//!   source address on receive (a relay latches on it). `--sockets 1` is the
//!   classic single-socket micro-benchmark; `--sockets 1000` is the shape of
//!   a shard with one socket per RTP leg, where each socket sees one packet
//!   now and then and per-socket batching (`recvmmsg`) has nothing to batch.
//! * The **generator** thread, pinned to `--gen-core`, sends RTP-sized
//!   datagrams (`--payload`, default 172 bytes: 12-byte RTP header + 160
//!   bytes of G.711) with `sendmmsg`, round-robin over the forwarder's
//!   sockets, either as fast as it can (`max`) or paced to a fixed offered
//!   rate in bursts of `rate × --tick-us` packets (10 at 100k pps). Each
//!   datagram carries its send time (CLOCK_REALTIME, one stamp per batch).
//! * The **sink** is drained by the generator thread with nonblocking
//!   `recvmmsg`, so nobody ever sleeps on S: a blocking sink on the other
//!   core made every forwarded packet pay a cross-core wake-up (a quarter of
//!   the forwarder's profile), a cost a NIC does not impose. Latency is the
//!   kernel's receive stamp at S (`SO_TIMESTAMPNS`) minus the send stamp, so
//!   it does not depend on when the sink gets to read.
//!
//! # Variants
//!
//! * `std` — `std::net::UdpSocket::recv_from` / `send_to`: two syscalls per
//!   packet. One socket: blocking, no epoll. Several: level-triggered epoll,
//!   each readable socket read until `WouldBlock`. This is the raw-UDP-
//!   forwarder **anchor**.
//! * `mmsg` — nonblocking sockets, level-triggered epoll; per readable
//!   socket `recvmmsg` of up to `--batch` datagrams, then one `sendmmsg` for
//!   all of them.
//! * `io_uring` — the `io-uring` crate: one multishot `RecvMsgMulti` per
//!   socket (registered files), all drawing from one registered
//!   provided-buffer ring; every completion drained from the CQ becomes a
//!   `SendMsg` SQE pointing straight into its provided buffer, and all of
//!   them go to the kernel in the next single `io_uring_enter`, which also
//!   waits for more completions. A buffer returns to the ring when its send
//!   completes. The ring is `SINGLE_ISSUER | DEFER_TASKRUN` with its fd
//!   registered, as a shard's would be.
//! * `tokio_uring` — `tokio-uring`'s `UdpSocket::recv_from` then `send_to`,
//!   awaited, in a loop: one task per socket (its natural usage;
//!   `--tokio-tasks N` runs N such loops per socket).
//! * `driver` / `driver_epoll` (not in the default set) — the appliance's
//!   shard driver (`switchboard::shell::driver`, io_uring or epoll) driven
//!   the way a shard drives it: media sockets (`add_media_udp`), `poll`,
//!   copy each datagram out of the borrowed buffer, `send_to` the sink from
//!   the socket it arrived on, `flush_for_poll`. Syscalls/pkt is the
//!   driver's own count (`DriverStats::syscalls`).
//!
//! The `mmsg` and `io_uring` loops do no heap allocation per packet: all
//! buffers, iovecs, msghdrs and the re-arm list are allocated before the
//! loop. (`std` allocates nothing either; `tokio-uring` boxes a msghdr, an
//! address and an iovec `Vec` per operation.)
//!
//! # What is measured
//!
//! After `--warmup` seconds, two snapshots `--seconds` apart bracket the
//! measurement window. Between them:
//!
//! * **forwarded pps** — datagrams whose send succeeded, counted by the
//!   forwarder.
//! * **CPU ns/pkt** — the forwarder thread's CPU time
//!   (`pthread_getcpuclockid`: the scheduler's exact runtime, user+sys)
//!   divided by forwarded packets. This kernel has no
//!   `CONFIG_IRQ_TIME_ACCOUNTING`, so the loopback softirq that delivers each
//!   forwarded datagram into S runs in, and is charged to, the forwarder
//!   thread: the number is the whole cost of a forward on that core.
//!   **pps per core** is `1e9 / CPU ns/pkt`: what one fully busy core would
//!   forward at that per-packet cost.
//! * **syscalls/pkt** (counted by the loops; unknown for `tokio_uring`),
//!   **sleeps/pkt** (voluntary context switches of the forwarder thread),
//!   io-wq worker and ksoftirqd CPU (in the per-run log).
//! * **loss** — over the whole run after a drain, `1 - received / sent`,
//!   split by where it happened using each socket's kernel drop counter
//!   (`SO_MEMINFO`): at F (the forwarder fell behind) or at S (the sink did).
//! * **foreign load** — CPU used on the two benchmark cores by anything else
//!   (busy ticks from `/proc/stat` minus our threads), in cores. A run above
//!   `--max-foreign` is retried up to `--retries` times and the quietest
//!   attempt kept, because this box is shared.
//!
//! A saturating generator on a 2-core box can be the bottleneck, so the
//! default runs two passes: `max` (throughput; the forwarder may idle part
//! of the time) and a fixed 100k pps (CPU per packet at equal load, which is
//! what decides how many calls a shard core carries). Each pass is repeated
//! `--repeat` times with all variants inside each repetition; the tables give
//! the median and the min–max spread, and ratios against `std` are computed
//! within a repetition.
//!
//! ```text
//! cargo bench --bench udp_forward -- --seconds 5 --payload 172 --repeat 3 \
//!     --rates max,100000 --sockets 1,1000 --quiet-wait 300
//! ```

// A benchmark is an I/O shell: it owns the clock and sleeps on purpose.
#![allow(clippy::disallowed_methods)]

use std::cell::Cell;
use std::fmt::Write as _;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::types::{BufRingEntry, RecvMsgOut};
use io_uring::{IoUring, cqueue, opcode, types};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, Socket, Type};
use switchboard::shell::driver::{self, Choice, DriverOptions, IoEvent, SockId};

/// Size of every receive buffer (and of each provided buffer, which also
/// holds io_uring's `recvmsg_out` header and the source address).
const BUF_SIZE: usize = 2048;
/// RTP header (12) + send timestamp (8).
const MIN_PAYLOAD: usize = 20;
const MAX_PAYLOAD: usize = 1472;
/// Byte offset of the generator's CLOCK_MONOTONIC timestamp in each datagram.
const TS_OFFSET: usize = 12;
/// `SO_MEMINFO` (asm-generic/socket.h) and the index of the drop counter.
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_DROPS: usize = 8;
const SK_MEMINFO_VARS: usize = 9;
/// io_uring user_data tags.
const UD_RECV: u64 = 1 << 32;
const UD_SEND: u64 = 2 << 32;
/// Provided-buffer group id of the receive buffer ring.
const BGID: u16 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Std,
    Mmsg,
    IoUring,
    /// `io_uring` with `IORING_OP_SEND` + destination address instead of
    /// `SendMsg` (not in the default set; an experiment).
    IoUringSendTo,
    TokioUring,
    /// The appliance's own shard driver (`switchboard::shell::driver`) on
    /// io_uring, driven like a shard: poll, handle, send, flush.
    Driver,
    /// The same on the epoll driver.
    DriverEpoll,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Std,
        Variant::Mmsg,
        Variant::IoUring,
        Variant::TokioUring,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Std => "std",
            Variant::Mmsg => "mmsg",
            Variant::IoUring => "io_uring",
            Variant::IoUringSendTo => "io_uring_sendto",
            Variant::TokioUring => "tokio_uring",
            Variant::Driver => "driver",
            Variant::DriverEpoll => "driver_epoll",
        }
    }

    fn parse(s: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .chain([
                Variant::IoUringSendTo,
                Variant::Driver,
                Variant::DriverEpoll,
            ])
            .find(|v| v.name() == s)
    }
}

/// Command-line configuration.
#[derive(Clone, Debug)]
struct Config {
    seconds: f64,
    warmup: f64,
    payload: usize,
    /// `None` = saturating generator, `Some(pps)` = fixed offered rate.
    rates: Vec<Option<u64>>,
    /// Forwarder socket counts to run (each is a separate pass).
    sockets: Vec<usize>,
    repeat: usize,
    variants: Vec<Variant>,
    batch: usize,
    tick_us: u64,
    fwd_core: usize,
    gen_core: usize,
    rcvbuf: usize,
    /// Provided buffers in the io_uring ring; `None` = auto (see `uring_bufs`).
    uring_bufs: Option<u16>,
    tokio_tasks: usize,
    /// Retry a run when other processes used more than this many cores'
    /// worth of CPU on our two cores during its window.
    max_foreign: f64,
    retries: usize,
    /// Seconds to wait for a quiet box before each attempt.
    quiet_wait: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seconds: 5.0,
            warmup: 1.0,
            payload: 172,
            rates: vec![None, Some(100_000)],
            sockets: vec![1],
            repeat: 3,
            variants: Variant::ALL.to_vec(),
            batch: 64,
            tick_us: 100,
            fwd_core: 0,
            gen_core: 1,
            rcvbuf: 8 << 20,
            uring_bufs: None,
            tokio_tasks: 1,
            max_foreign: 0.05,
            retries: 4,
            quiet_wait: 60.0,
        }
    }
}

const USAGE: &str = "\
usage: cargo bench --bench udp_forward -- [options]
  --seconds S        measured window per run (default 5)
  --warmup S         warm-up before the window (default 1)
  --payload BYTES    datagram size, 20..=1472 (default 172 = RTP + 160 B G.711)
  --rates LIST       comma list of offered rates: max or packets/s (default max,100000)
  --sockets LIST     comma list of forwarder socket counts, one pass each (default 1);
                     the generator spreads packets round-robin over the sockets
  --repeat N         repetitions of every (rate, variant) (default 3)
  --variants LIST    std,mmsg,io_uring,tokio_uring (default all four);
                     io_uring_sendto (IORING_OP_SEND with an address) can be added, and
                     driver / driver_epoll (the shard driver on io_uring / epoll)
  --batch N          sendmmsg/recvmmsg batch (default 64)
  --tick-us US       pacing tick of a fixed-rate generator (default 100)
  --fwd-core N       core of the forwarder (default 0)
  --gen-core N       core of generator + sink (default 1)
  --rcvbuf BYTES     SO_RCVBUFFORCE of forwarder and sink sockets (default 8 MiB)
  --uring-bufs N     provided buffers in the io_uring buffer ring, power of two, or auto
                     (default auto = max(1024, 4 per socket rounded up to a power of two))
  --tokio-tasks N    concurrent recv/send loops in tokio_uring (default 1)
  --max-foreign C    retry a run if other processes used more than C cores of CPU
                     on the two benchmark cores during its window (default 0.05)
  --retries N        retries per run for --max-foreign; the quietest attempt is kept (default 4)
  --quiet-wait S     before each attempt, wait up to S seconds for one second in which
                     the two cores were less than --max-foreign busy (default 60)";

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` appends `--bench` to the arguments of every bench.
        if flag == "--bench" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--seconds" => cfg.seconds = value.parse().map_err(|_| bad("seconds"))?,
            "--warmup" => cfg.warmup = value.parse().map_err(|_| bad("seconds"))?,
            "--payload" => cfg.payload = value.parse().map_err(|_| bad("bytes"))?,
            "--repeat" => cfg.repeat = value.parse().map_err(|_| bad("a count"))?,
            "--batch" => cfg.batch = value.parse().map_err(|_| bad("a count"))?,
            "--tick-us" => cfg.tick_us = value.parse().map_err(|_| bad("microseconds"))?,
            "--fwd-core" => cfg.fwd_core = value.parse().map_err(|_| bad("a core"))?,
            "--gen-core" => cfg.gen_core = value.parse().map_err(|_| bad("a core"))?,
            "--rcvbuf" => cfg.rcvbuf = value.parse().map_err(|_| bad("bytes"))?,
            "--uring-bufs" => {
                cfg.uring_bufs = match value.as_str() {
                    "auto" => None,
                    n => Some(n.parse().map_err(|_| bad("a count or auto"))?),
                }
            }
            "--tokio-tasks" => cfg.tokio_tasks = value.parse().map_err(|_| bad("a count"))?,
            "--max-foreign" => cfg.max_foreign = value.parse().map_err(|_| bad("cores"))?,
            "--retries" => cfg.retries = value.parse().map_err(|_| bad("a count"))?,
            "--quiet-wait" => cfg.quiet_wait = value.parse().map_err(|_| bad("seconds"))?,
            "--rates" => {
                cfg.rates = value
                    .split(',')
                    .map(|r| match r {
                        "max" => Ok(None),
                        n => n.parse().map(Some).map_err(|_| bad("max or packets/s")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--sockets" => {
                cfg.sockets = value
                    .split(',')
                    .map(|n| match n.parse::<usize>() {
                        Ok(n) if (1..=4096).contains(&n) => Ok(n),
                        _ => Err(bad("socket counts 1..=4096")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--variants" => {
                cfg.variants = value
                    .split(',')
                    .map(|v| Variant::parse(v).ok_or_else(|| bad("variant names")))
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&cfg.payload) {
        return Err(format!(
            "--payload must be {MIN_PAYLOAD}..={MAX_PAYLOAD}\n{USAGE}"
        ));
    }
    if cfg.batch == 0 || cfg.batch > 1024 || cfg.repeat == 0 || cfg.tokio_tasks == 0 {
        return Err(format!(
            "--batch must be 1..=1024, --repeat and --tokio-tasks >= 1\n{USAGE}"
        ));
    }
    if cfg
        .uring_bufs
        .is_some_and(|n| !n.is_power_of_two() || n > 32768)
    {
        return Err(format!(
            "--uring-bufs must be a power of two <= 32768\n{USAGE}"
        ));
    }
    if cfg.rates.contains(&Some(0)) {
        return Err(format!("--rates: a fixed rate must be > 0\n{USAGE}"));
    }
    Ok(cfg)
}

// ---------------------------------------------------------------------------
// Shared counters and small OS helpers
// ---------------------------------------------------------------------------

/// A counter on its own cache line, written by one thread and read by main.
#[derive(Default)]
#[repr(align(128))]
struct Counter(AtomicU64);

impl Counter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Shared {
    stop_gen: AtomicBool,
    stop_fwd: AtomicBool,
    stop_sink: AtomicBool,
    /// The sink records latency only inside the measurement window.
    measuring: AtomicBool,
    generated: Counter,
    forwarded: Counter,
    /// Syscalls made by the forwarder loop (not maintained by tokio_uring).
    syscalls: Counter,
    sunk: Counter,
}

/// Counted oddities of a forwarder run, printed with the per-run line.
#[derive(Debug, Default, Clone)]
struct FwdReport {
    send_errors: u64,
    recv_errors: u64,
    truncated: u64,
    /// io_uring: multishot receive ended (buffer ring empty) and was re-armed.
    rearms: u64,
}

fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU clock of another live thread of this process.
fn thread_cpu_clock(handle: &JoinHandle<impl Sized>) -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the pthread_t comes from a JoinHandle not yet joined, so the
    // thread exists; `clock` is a valid out-pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid failed: {rc}");
    clock
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn pin_to(core: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(core)?;
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A bound loopback UDP socket with a forced receive buffer.
fn udp_socket(rcvbuf: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let size = rcvbuf as libc::c_int;
    // SAFETY: plain setsockopt with an int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Not root: fall back to the rmem_max-capped option.
        s.set_recv_buffer_size(rcvbuf)?;
    }
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(s.into())
}

fn local_v4(s: &UdpSocket) -> io::Result<SocketAddrV4> {
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::other("expected an IPv4 socket")),
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Kernel drop counter of a socket (receive queue full, etc.).
fn socket_drops(fd: RawFd) -> u64 {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is large enough for SK_MEMINFO_VARS u32s; len says so.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc == 0 {
        u64::from(info[SK_MEMINFO_DROPS])
    } else {
        0
    }
}

/// Receive-side batch storage for `recvmmsg`/`sendmmsg`: buffers, iovecs,
/// source-address slots and headers, allocated once. The pointers inside the
/// headers point into the boxed slices, which never move.
struct MmsgBatch {
    bufs: Box<[u8]>,
    iov: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_in]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl MmsgBatch {
    fn new(n: usize, iov_len: usize, with_names: bool) -> Self {
        let mut b = MmsgBatch {
            bufs: vec![0u8; n * BUF_SIZE].into_boxed_slice(),
            // SAFETY (zeroed): iovec, sockaddr_in and mmsghdr are plain C
            // structs for which all-zero is a valid value.
            iov: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            names: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            hdrs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
        };
        let base = b.bufs.as_mut_ptr();
        for i in 0..n {
            b.iov[i] = libc::iovec {
                // SAFETY: i * BUF_SIZE is inside `bufs`.
                iov_base: unsafe { base.add(i * BUF_SIZE) }.cast(),
                iov_len,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = 1;
            if with_names {
                h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
        }
        b
    }

    fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * BUF_SIZE..(i + 1) * BUF_SIZE]
    }

    fn buf(&self, i: usize) -> &[u8] {
        &self.bufs[i * BUF_SIZE..(i + 1) * BUF_SIZE]
    }
}

// ---------------------------------------------------------------------------
// Generator + sink (one thread on core `--gen-core`)
// ---------------------------------------------------------------------------

fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// The sink side: drains S without ever sleeping on it, so the forwarder's
/// sends never have to wake a thread (which would charge a cross-core wake-up
/// to every forwarded packet, a cost a NIC would not have).
struct Sink {
    fd: RawFd,
    rx: MmsgBatch,
    /// Per-message control buffers for the SCM_TIMESTAMPNS receive stamp.
    ctrl: Box<[u64]>,
    hist: Histogram<u64>,
    total: u64,
}

const CTRL_WORDS: usize = 8;

impl Sink {
    fn new(sock: &UdpSocket, batch: usize) -> io::Result<Self> {
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt with an int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        sock.set_nonblocking(true)?;
        let mut sink = Sink {
            fd: sock.as_raw_fd(),
            rx: MmsgBatch::new(batch, BUF_SIZE, false),
            ctrl: vec![0u64; batch * CTRL_WORDS].into_boxed_slice(),
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds are valid"),
            total: 0,
        };
        for i in 0..batch {
            sink.rx.hdrs[i].msg_hdr.msg_control = sink.ctrl[i * CTRL_WORDS..].as_mut_ptr().cast();
        }
        Ok(sink)
    }

    /// Reads everything queued on S; records latency while `measuring`.
    fn drain(&mut self, sh: &Shared) -> io::Result<()> {
        let batch = self.rx.hdrs.len();
        loop {
            for h in self.rx.hdrs.iter_mut() {
                h.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            }
            // SAFETY: hdrs point to live iovecs, buffers and control buffers.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd,
                    self.rx.hdrs.as_mut_ptr(),
                    batch as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                return match errno() {
                    libc::EAGAIN | libc::EINTR => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            let n = r as usize;
            if sh.measuring.load(Ordering::Relaxed) {
                for i in 0..n {
                    if let Some(lat) = self.latency_ns(i) {
                        self.hist.saturating_record(lat.max(1));
                    }
                }
            }
            self.total += n as u64;
            sh.sunk.set(self.total);
            if n < batch {
                return Ok(());
            }
        }
    }

    /// Kernel receive stamp at S minus the generator's send stamp.
    fn latency_ns(&self, i: usize) -> Option<u64> {
        let h = &self.rx.hdrs[i];
        if (h.msg_len as usize) < MIN_PAYLOAD {
            return None;
        }
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&self.rx.buf(i)[TS_OFFSET..TS_OFFSET + 8]);
        // SAFETY: msg_hdr describes our control buffer as filled by the
        // kernel; CMSG_* walk it within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let rx = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    return Some(rx.saturating_sub(u64::from_le_bytes(sent)));
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        None
    }
}

/// Sends RTP-sized datagrams to F (as fast as possible, or `rate` packets/s
/// in bursts of `rate × tick`), draining the sink between batches; after
/// `stop_gen` it keeps draining until `stop_sink`.
fn generator(
    sock: UdpSocket,
    dests: &[SocketAddrV4],
    sink_sock: UdpSocket,
    sh: &Shared,
    cfg: &Config,
    rate: Option<u64>,
) -> io::Result<Histogram<u64>> {
    // Sleep to the microsecond: the default 50 µs timer slack would double
    // the pacing tick.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut sink = Sink::new(&sink_sock, cfg.batch)?;
    let batch = cfg.batch;
    let mut m = MmsgBatch::new(batch, cfg.payload, false);
    for i in 0..batch {
        let b = m.buf_mut(i);
        b[0] = 0x80; // RTP v2, no padding/extension/CSRC
        b[1] = 0; // PT 0 = PCMU
        b[8..12].copy_from_slice(&0x5357_4244u32.to_be_bytes()); // SSRC "SWBD"
        for (j, byte) in b[MIN_PAYLOAD..cfg.payload].iter_mut().enumerate() {
            *byte = 0xd5 ^ (j as u8); // not all-zero, not compressible
        }
    }
    // Destinations round-robin over the forwarder's sockets, per packet.
    let dests: Box<[libc::sockaddr_in]> = dests.iter().map(|&a| sockaddr_in(a)).collect();
    let mut next_dest = 0usize;
    let fd = sock.as_raw_fd();
    let burst = rate.map(|r| (r * cfg.tick_us / 1_000_000).max(1));
    let start = Instant::now();
    let mut seq: u16 = 0;
    let mut sent: u64 = 0;
    while !sh.stop_gen.load(Ordering::Relaxed) {
        let want = match (rate, burst) {
            (Some(r), Some(burst)) => {
                let due = (start.elapsed().as_nanos() * u128::from(r) / 1_000_000_000) as u64;
                if due <= sent {
                    sink.drain(sh)?;
                    // Sleep until the next burst is due.
                    let next = Duration::from_nanos((sent + burst) * 1_000_000_000 / r);
                    if let Some(d) = (start + next).checked_duration_since(Instant::now()) {
                        thread::sleep(d);
                    }
                    continue;
                }
                (due - sent).min(batch as u64) as usize
            }
            _ => batch,
        };
        let now = realtime_ns().to_le_bytes();
        for i in 0..want {
            let b = m.buf_mut(i);
            b[2..4].copy_from_slice(&seq.to_be_bytes());
            b[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&now);
            seq = seq.wrapping_add(1);
            let h = &mut m.hdrs[i].msg_hdr;
            h.msg_name = (&dests[next_dest] as *const libc::sockaddr_in)
                .cast_mut()
                .cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            next_dest = if next_dest + 1 == dests.len() {
                0
            } else {
                next_dest + 1
            };
        }
        // SAFETY: hdrs[..want] point to live iovecs and buffers.
        let r = unsafe { libc::sendmmsg(fd, m.hdrs.as_mut_ptr(), want as libc::c_uint, 0) };
        if r < 0 {
            match errno() {
                libc::EINTR | libc::EAGAIN | libc::ENOBUFS => continue,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        sent += r as u64;
        sh.generated.set(sent);
        sink.drain(sh)?;
    }
    while !sh.stop_sink.load(Ordering::Relaxed) {
        sink.drain(sh)?;
        thread::sleep(Duration::from_millis(1));
    }
    sink.drain(sh)?;
    Ok(sink.hist)
}

// ---------------------------------------------------------------------------
// Forwarder variants (core `--fwd-core`)
// ---------------------------------------------------------------------------

/// An epoll instance watching a set of sockets for input; each event's
/// `u64` is the socket's index.
struct Epoll(RawFd);

impl Epoll {
    fn new(fds: &[RawFd]) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no pointer arguments.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let ep = Epoll(epfd);
        for (i, &fd) in fds.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid epoll fd, socket fd and event pointer.
            if unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(ep)
    }

    /// Blocks until at least one socket is readable; 0 on EINTR.
    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        // SAFETY: `events` is a valid array of events.len() entries.
        let r = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as libc::c_int, -1)
        };
        if r < 0 {
            return match errno() {
                libc::EINTR => Ok(0),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        Ok(r as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.0) };
    }
}

const EPOLL_EVENTS: usize = 256;

/// (1) Anchor: `recv_from` + `send_to`, two syscalls per packet. With one
/// socket the socket blocks (no epoll at all); with several, level-triggered
/// epoll says which are readable and each is read until `WouldBlock`.
fn forward_std(
    socks: Vec<UdpSocket>,
    sink: SocketAddrV4,
    sh: &Shared,
    ready: &dyn Fn(),
) -> io::Result<FwdReport> {
    let mut report = FwdReport::default();
    let mut buf = [0u8; BUF_SIZE];
    let sink = SocketAddr::V4(sink);
    let mut forwarded = 0u64;
    let mut syscalls = 0u64;
    if let [sock] = socks.as_slice() {
        ready();
        loop {
            let recv = sock.recv_from(&mut buf);
            syscalls += 1;
            if sh.stop_fwd.load(Ordering::Relaxed) {
                return Ok(report);
            }
            let n = match recv {
                Ok((n, _from)) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    report.recv_errors += 1;
                    continue;
                }
            };
            syscalls += 1;
            match sock.send_to(&buf[..n], sink) {
                Ok(_) => forwarded += 1,
                Err(_) => report.send_errors += 1,
            }
            sh.forwarded.set(forwarded);
            sh.syscalls.set(syscalls);
        }
    }
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    let ep = Epoll::new(&fds)?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
    ready();
    loop {
        let nev = ep.wait(&mut events)?;
        syscalls += 1;
        if sh.stop_fwd.load(Ordering::Relaxed) {
            return Ok(report);
        }
        for ev in &events[..nev] {
            let sock = &socks[ev.u64 as usize];
            loop {
                syscalls += 1;
                let n = match sock.recv_from(&mut buf) {
                    Ok((n, _from)) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        report.recv_errors += 1;
                        break;
                    }
                };
                syscalls += 1;
                match sock.send_to(&buf[..n], sink) {
                    Ok(_) => forwarded += 1,
                    Err(_) => report.send_errors += 1,
                }
                sh.forwarded.set(forwarded);
                sh.syscalls.set(syscalls);
            }
        }
    }
}

/// (2) Nonblocking sockets, level-triggered epoll; per readable socket,
/// `recvmmsg` of up to `batch` datagrams then one `sendmmsg` for all of
/// them (from the same socket), until the socket is empty.
fn forward_mmsg(
    socks: Vec<UdpSocket>,
    sink: SocketAddrV4,
    sh: &Shared,
    batch: usize,
    ready: &dyn Fn(),
) -> io::Result<FwdReport> {
    let mut report = FwdReport::default();
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    let ep = Epoll::new(&fds)?;

    let mut rx = MmsgBatch::new(batch, BUF_SIZE, true);
    // Send headers share rx's buffers; their iovec lengths are set per batch.
    let sink_sa = sockaddr_in(sink);
    // SAFETY (zeroed): plain C structs.
    let mut tx_iov: Box<[libc::iovec]> = (0..batch).map(|_| unsafe { mem::zeroed() }).collect();
    let mut tx: Box<[libc::mmsghdr]> = (0..batch).map(|_| unsafe { mem::zeroed() }).collect();
    for i in 0..batch {
        tx_iov[i].iov_base = rx.iov[i].iov_base;
        let h = &mut tx[i].msg_hdr;
        h.msg_iov = &mut tx_iov[i];
        h.msg_iovlen = 1;
        h.msg_name = (&sink_sa as *const libc::sockaddr_in).cast_mut().cast();
        h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    let name_len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

    let mut forwarded = 0u64;
    let mut syscalls = 0u64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
    ready();
    loop {
        let nev = ep.wait(&mut events)?;
        syscalls += 1;
        if sh.stop_fwd.load(Ordering::Relaxed) {
            return Ok(report);
        }
        for ev in &events[..nev] {
            let fd = fds[ev.u64 as usize];
            loop {
                for h in rx.hdrs.iter_mut() {
                    h.msg_hdr.msg_namelen = name_len;
                }
                // SAFETY: rx.hdrs point to live buffers, iovecs and names.
                let r = unsafe {
                    libc::recvmmsg(
                        fd,
                        rx.hdrs.as_mut_ptr(),
                        batch as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                syscalls += 1;
                if r < 0 {
                    match errno() {
                        libc::EAGAIN | libc::EINTR => {}
                        _ => report.recv_errors += 1,
                    }
                    break;
                }
                let n = r as usize;
                for i in 0..n {
                    tx_iov[i].iov_len = rx.hdrs[i].msg_len as usize;
                    if rx.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        report.truncated += 1;
                    }
                }
                let mut done = 0usize;
                while done < n {
                    // SAFETY: tx[done..n] point to live iovecs, buffers, sink_sa.
                    let s = unsafe {
                        libc::sendmmsg(fd, tx.as_mut_ptr().add(done), (n - done) as libc::c_uint, 0)
                    };
                    syscalls += 1;
                    if s < 0 {
                        if errno() == libc::EINTR {
                            continue;
                        }
                        // Drop the rest of the batch, like a relay would.
                        report.send_errors += (n - done) as u64;
                        break;
                    }
                    done += s as usize;
                    forwarded += s as u64;
                }
                // Published per batch: under overload this loop may not
                // return to epoll for the whole window.
                sh.forwarded.set(forwarded);
                sh.syscalls.set(syscalls);
                if n < batch {
                    break; // socket is (very likely) empty
                }
            }
        }
    }
}

/// The io_uring provided-buffer ring: `entries` descriptors in an mmap'd,
/// page-aligned area shared with the kernel (`IORING_REGISTER_PBUF_RING`).
struct BufRing {
    base: *mut BufRingEntry,
    map_len: usize,
    mask: u16,
    /// Local tail; published to the kernel by `publish`.
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<Self> {
        let map_len = usize::from(entries) * mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping, no fd.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            base: p.cast(),
            map_len,
            mask: entries - 1,
            tail: 0,
        })
    }

    /// Hand buffer `bid` (at `addr`, `len` bytes) to the kernel; takes
    /// effect at the next `publish`.
    fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        // SAFETY: the index is masked into the mapping; set_* do not touch
        // the `resv` field that doubles as the shared tail.
        let e = unsafe { &mut *self.base.add(usize::from(self.tail & self.mask)) };
        e.set_addr(addr as u64);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail lives in the first entry of our mapping, is
        // 2-byte aligned, and the kernel only reads it.
        unsafe {
            let tail = BufRingEntry::tail(self.base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; the ring that used it is gone.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// Provided buffers for `nsocks` sockets. Each multishot receive may take
/// many buffers per wake-up (the kernel retries a ready socket several
/// times); when the ring runs dry every receive ends with ENOBUFS and must be
/// re-armed, which on a saturated 1000-socket run cost ~10% more CPU per
/// packet with 1024 buffers than with 4096.
fn uring_bufs(cfg: &Config, nsocks: usize) -> u16 {
    cfg.uring_bufs
        .unwrap_or_else(|| (4 * nsocks).next_power_of_two().clamp(1024, 32768) as u16)
}

fn uring_builder() -> io_uring::Builder {
    let mut b = IoUring::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    b
}

/// Checks that io_uring works here with what the `io_uring` variant needs.
fn probe_io_uring(bufs: u16) -> Result<String, String> {
    let ring = uring_builder()
        .setup_cqsize(u32::from(bufs) * 4)
        .build(u32::from(bufs))
        .map_err(|e| format!("io_uring_setup(SINGLE_ISSUER|DEFER_TASKRUN): {e}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("opcode {name} not supported"));
        }
    }
    let br = BufRing::new(bufs).map_err(|e| format!("mmap buffer ring: {e}"))?;
    // SAFETY: the mapping outlives the ring (ring dropped first below).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(br.base as u64, bufs, BGID, 0)
            .map_err(|e| format!("IORING_REGISTER_PBUF_RING: {e}"))?;
    }
    let p = ring.params();
    let info = format!(
        "ok (sq {} / cq {} entries, feature nodrop={} submit_stable={} fast_poll={})",
        p.sq_entries(),
        p.cq_entries(),
        p.is_feature_nodrop(),
        p.is_feature_submit_stable(),
        p.is_feature_fast_poll(),
    );
    drop(ring);
    drop(br);
    Ok(info)
}

/// (3) io_uring: multishot RecvMsg + provided-buffer ring, batched SendMsg.
fn forward_io_uring(
    socks: Vec<UdpSocket>,
    sink: SocketAddrV4,
    sh: &Shared,
    nbufs: u16,
    sendto: bool,
    ready: &dyn Fn(),
) -> io::Result<FwdReport> {
    let mut report = FwdReport::default();
    let n = usize::from(nbufs);
    let nsocks = socks.len();

    // Everything the kernel points into is allocated before the ring and
    // dropped after it (the ring is dropped explicitly at the end).
    let mut bufs = vec![0u8; n * BUF_SIZE].into_boxed_slice();
    let buf_base = bufs.as_mut_ptr();
    let mut buf_ring = BufRing::new(nbufs)?;
    let sink_sa = sockaddr_in(sink);
    // SAFETY (zeroed): plain C structs.
    let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
    recv_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let mut send_iov: Box<[libc::iovec]> = (0..n).map(|_| unsafe { mem::zeroed() }).collect();
    let mut send_hdr: Box<[libc::msghdr]> = (0..n).map(|_| unsafe { mem::zeroed() }).collect();
    for i in 0..n {
        let h = &mut send_hdr[i];
        h.msg_iov = &mut send_iov[i];
        h.msg_iovlen = 1;
        h.msg_name = (&sink_sa as *const libc::sockaddr_in).cast_mut().cast();
        h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    // Sockets whose multishot receive ended and must be re-armed; sized so
    // that pushing never allocates.
    let mut rearm: Vec<u32> = Vec::with_capacity(nsocks);

    let cq_entries = (2 * n + nsocks).next_power_of_two().max(4 * n) as u32;
    let mut ring: IoUring = uring_builder()
        .setup_cqsize(cq_entries)
        .build(u32::from(nbufs))?;
    // SAFETY: `buf_ring` is a page-aligned mapping of `nbufs` entries that
    // outlives `ring`.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(buf_ring.base as u64, nbufs, BGID, 0)?
    };
    for bid in 0..nbufs {
        // SAFETY: bid < nbufs, inside `bufs`.
        let addr = unsafe { buf_base.add(usize::from(bid) * BUF_SIZE) };
        buf_ring.push(bid, addr, BUF_SIZE as u32);
    }
    buf_ring.publish();
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    ring.submitter().register_files(&fds)?;
    let (mut submitter, mut sq, mut cq) = ring.split();
    submitter.register_ring_fd()?;
    let recv_sqe = |idx: u32| {
        opcode::RecvMsgMulti::new(types::Fixed(idx), &*recv_hdr, BGID)
            .build()
            .user_data(UD_RECV | u64::from(idx))
    };

    let mut syscalls = 0u64;
    // Pushes an SQE, flushing the SQ to the kernel first if it is full.
    let push = |sq: &mut io_uring::SubmissionQueue<'_>,
                sqe: &io_uring::squeue::Entry,
                syscalls: &mut u64|
     -> io::Result<()> {
        // SAFETY: every SQE pushed here points into memory (headers,
        // iovecs, buffers, sink_sa) that outlives the ring and is not
        // reused before the operation's completion.
        while unsafe { sq.push(sqe) }.is_err() {
            sq.sync();
            submitter.submit()?;
            *syscalls += 1;
            sq.sync();
        }
        Ok(())
    };
    for idx in 0..nsocks as u32 {
        push(&mut sq, &recv_sqe(idx), &mut syscalls)?;
    }
    sq.sync();

    let mut forwarded = 0u64;
    ready();
    loop {
        // One enter: submits all queued sends (and re-armed receives) and
        // waits for at least one completion.
        match submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        syscalls += 1;
        sq.sync();
        cq.sync();
        let mut returned = false;
        for cqe in &mut cq {
            let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            if ud & UD_RECV != 0 {
                let idx = (ud & 0xffff_ffff) as u32;
                if !cqueue::more(flags) {
                    rearm.push(idx);
                }
                if res < 0 {
                    if res == -libc::ENOBUFS {
                        report.rearms += 1;
                    } else {
                        report.recv_errors += 1;
                    }
                    continue;
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    report.recv_errors += 1;
                    continue;
                };
                let i = usize::from(bid);
                // SAFETY: the kernel wrote `res` bytes into buffer `bid`,
                // which it handed back to us with this completion.
                let data =
                    unsafe { std::slice::from_raw_parts(buf_base.add(i * BUF_SIZE), res as usize) };
                let Ok(msg) = RecvMsgOut::parse(data, &recv_hdr) else {
                    report.recv_errors += 1;
                    buf_ring.push(bid, data.as_ptr().cast_mut(), BUF_SIZE as u32);
                    returned = true;
                    continue;
                };
                if msg.is_payload_truncated() {
                    report.truncated += 1;
                }
                let payload = msg.payload_data();
                send_iov[i].iov_base = payload.as_ptr().cast_mut().cast();
                send_iov[i].iov_len = payload.len();
                // Send from the socket the datagram arrived on.
                let sqe = if sendto {
                    opcode::Send::new(types::Fixed(idx), payload.as_ptr(), payload.len() as u32)
                        .dest_addr((&sink_sa as *const libc::sockaddr_in).cast())
                        .dest_addr_len(mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
                        .build()
                } else {
                    opcode::SendMsg::new(types::Fixed(idx), &send_hdr[i]).build()
                }
                .user_data(UD_SEND | u64::from(bid));
                push(&mut sq, &sqe, &mut syscalls)?;
            } else {
                let bid = (ud & 0xffff) as u16;
                if res < 0 {
                    report.send_errors += 1;
                } else {
                    forwarded += 1;
                }
                // SAFETY: bid < nbufs, inside `bufs`.
                let addr = unsafe { buf_base.add(usize::from(bid) * BUF_SIZE) };
                buf_ring.push(bid, addr, BUF_SIZE as u32);
                returned = true;
            }
        }
        cq.sync();
        if returned {
            buf_ring.publish();
        }
        sh.forwarded.set(forwarded);
        sh.syscalls.set(syscalls);
        if sh.stop_fwd.load(Ordering::Relaxed) {
            break;
        }
        for idx in rearm.drain(..) {
            push(&mut sq, &recv_sqe(idx), &mut syscalls)?;
        }
        sq.sync();
    }
    drop((sq, cq));
    // Closing the ring cancels the multishot receives and any sends before
    // the buffers, headers and buffer ring are freed.
    drop(ring);
    drop(buf_ring);
    drop(bufs);
    Ok(report)
}

/// (5) The shard driver: sockets registered as media sockets
/// (`add_media_udp`, 4 media buffers per socket, at least the default
/// 4096), then the shard loop's shape: `poll` (datagrams are copied out of
/// the borrowed receive buffers into a reused arena, as a shard's handler
/// would consume them), one `send_to` per datagram from the socket it
/// arrived on, `flush_for_poll`. Syscalls are the driver's own count
/// (`DriverStats::syscalls`).
fn forward_driver(
    socks: Vec<UdpSocket>,
    sink: SocketAddrV4,
    sh: &Shared,
    choice: Choice,
    ready: &dyn Fn(),
) -> io::Result<FwdReport> {
    let opts = DriverOptions {
        media_buffers: (4 * socks.len()).clamp(4096, 32768),
        ..DriverOptions::default()
    };
    let mut d = driver::open(choice, &opts)?;
    for s in socks {
        d.add_media_udp(s)?;
    }
    let sink = SocketAddr::V4(sink);
    // Reused across polls: no allocation per packet once warm.
    let mut got: Vec<(SockId, usize)> = Vec::with_capacity(4096);
    let mut arena: Vec<u8> = Vec::with_capacity(4096 * BUF_SIZE);
    let mut sent = 0u64;
    ready();
    loop {
        got.clear();
        arena.clear();
        d.poll(Some(Duration::from_millis(100)), &mut |ev| {
            if let IoEvent::Datagram { sock, data, .. } = ev {
                arena.extend_from_slice(data);
                got.push((sock, data.len()));
            }
        })?;
        if sh.stop_fwd.load(Ordering::Relaxed) {
            break;
        }
        let mut off = 0;
        for &(sock, len) in &got {
            d.send_to(sock, sink, &arena[off..off + len]);
            off += len;
        }
        sent += got.len() as u64;
        d.flush_for_poll()?;
        let st = d.stats();
        sh.forwarded
            .set(sent.saturating_sub(st.send_errors + st.send_dropped));
        sh.syscalls.set(st.syscalls);
    }
    let st = d.stats();
    Ok(FwdReport {
        send_errors: st.send_errors + st.send_dropped,
        recv_errors: 0,
        truncated: st.dropped_truncated,
        rearms: st.buffers_exhausted,
    })
}

/// (4) tokio-uring: `recv_from` then `send_to`, awaited, in a loop; one
/// task per socket (times `--tokio-tasks`).
fn forward_tokio_uring(
    socks: Vec<UdpSocket>,
    sink: SocketAddrV4,
    sh: Arc<Shared>,
    tasks: usize,
    ready: &dyn Fn(),
) -> io::Result<FwdReport> {
    use tokio_uring::buf::BoundedBuf;

    async fn one_loop(
        sock: Rc<tokio_uring::net::UdpSocket>,
        sink: SocketAddr,
        sh: Arc<Shared>,
        count: Rc<Cell<u64>>,
        errors: Rc<Cell<u64>>,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let (res, b) = sock.recv_from(buf).await;
            if sh.stop_fwd.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match res {
                Ok((n, _from)) => n,
                Err(_) => {
                    errors.set(errors.get() + 1);
                    buf = b;
                    continue;
                }
            };
            let (res, slice) = sock.send_to(b.slice(..n), sink).await;
            buf = slice.into_inner();
            match res {
                Ok(_) => {
                    count.set(count.get() + 1);
                    sh.forwarded.set(count.get());
                }
                Err(_) => errors.set(errors.get() + 1),
            }
        }
    }

    tokio_uring::start(async move {
        let count = Rc::new(Cell::new(0u64));
        let errors = Rc::new(Cell::new(0u64));
        let mut handles = Vec::new();
        for sock in socks {
            let sock = Rc::new(tokio_uring::net::UdpSocket::from_std(sock));
            for _ in 0..tasks {
                handles.push(tokio_uring::spawn(one_loop(
                    sock.clone(),
                    SocketAddr::V4(sink),
                    sh.clone(),
                    count.clone(),
                    errors.clone(),
                )));
            }
        }
        ready();
        for h in handles {
            h.await.map_err(io::Error::other)??;
        }
        Ok(FwdReport {
            send_errors: errors.get(),
            ..FwdReport::default()
        })
    })
}

// ---------------------------------------------------------------------------
// One run: sockets, threads, snapshots
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Snap {
    t_ns: u64,
    generated: u64,
    forwarded: u64,
    syscalls: u64,
    fwd_cpu_ns: u64,
    gen_cpu_ns: u64,
    fwd_vcsw: u64,
    fwd_ivcsw: u64,
    core_busy_ticks: u64,
    gen_core_busy_ticks: u64,
    iou_ticks: u64,
    ksoftirqd_ticks: u64,
}

/// Voluntary and involuntary context switches of thread `tid`.
fn ctx_switches(tid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// Busy clock ticks (user+nice+system+irq+softirq) of one core.
fn core_busy_ticks(core: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{core} ");
    stat.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal ...
            [0, 1, 2, 5, 6]
                .iter()
                .map(|&i| f.get(i).copied().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// utime+stime ticks from a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(3) ... utime(14) stime(15).
    [11, 12]
        .iter()
        .map(|&i| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0))
        .sum()
}

/// Pid of the `ksoftirqd/N` kernel thread of `core`, if visible.
fn ksoftirqd_pid(core: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{core}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// CPU ticks of io_uring kernel worker threads (`iou-wrk-*`, `iou-sqp-*`)
/// attached to this process, and how many there are.
fn io_uring_worker_ticks() -> (u64, usize) {
    let mut ticks = 0;
    let mut count = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("iou-") {
            continue;
        }
        count += 1;
        ticks += stat_ticks(&p.join("stat").to_string_lossy());
    }
    (ticks, count)
}

struct Clocks {
    fwd: libc::clockid_t,
    gen_: libc::clockid_t,
    fwd_tid: i32,
    fwd_core: usize,
    gen_core: usize,
    ksoftirqd: Option<u32>,
}

fn snapshot(sh: &Shared, c: &Clocks) -> Snap {
    let (vcsw, ivcsw) = ctx_switches(c.fwd_tid);
    Snap {
        t_ns: mono_ns(),
        generated: sh.generated.get(),
        forwarded: sh.forwarded.get(),
        syscalls: sh.syscalls.get(),
        fwd_cpu_ns: clock_ns(c.fwd),
        gen_cpu_ns: clock_ns(c.gen_),
        fwd_vcsw: vcsw,
        fwd_ivcsw: ivcsw,
        core_busy_ticks: core_busy_ticks(c.fwd_core),
        gen_core_busy_ticks: core_busy_ticks(c.gen_core),
        iou_ticks: io_uring_worker_ticks().0,
        ksoftirqd_ticks: c
            .ksoftirqd
            .map_or(0, |pid| stat_ticks(&format!("/proc/{pid}/stat"))),
    }
}

#[derive(Clone, Debug)]
struct RunResult {
    variant: Variant,
    offered_pps: f64,
    fwd_pps: f64,
    /// Forwarder thread CPU seconds per second.
    fwd_util: f64,
    ns_per_pkt: f64,
    core_ns_per_pkt: f64,
    syscalls_per_pkt: Option<f64>,
    sleeps_per_pkt: f64,
    preempt_per_s: f64,
    gen_util: f64,
    loss_pct: f64,
    drops_fwd: u64,
    drops_sink: u64,
    lat_us: [f64; 3],
    iou_workers: usize,
    iou_util: f64,
    /// ksoftirqd of the forwarder's core, cores' worth of CPU.
    ksoftirqd_util: f64,
    /// CPU used on the two benchmark cores by anything but our threads
    /// (and the forwarder core's ksoftirqd), in cores.
    foreign: f64,
    report: FwdReport,
}

fn spawn_pinned<T: Send + 'static>(
    name: &str,
    core: usize,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<T>>> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            pin_to(core)?;
            f()
        })
}

fn join<T>(h: JoinHandle<io::Result<T>>, what: &str) -> io::Result<T> {
    h.join()
        .map_err(|_| io::Error::other(format!("{what} thread panicked")))?
}

/// Raises every stop flag when a run ends, also on an error path, so no
/// benchmark thread outlives its run.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for flag in [&self.0.stop_gen, &self.0.stop_fwd, &self.0.stop_sink] {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

fn run_one(
    cfg: &Config,
    variant: Variant,
    rate: Option<u64>,
    nsocks: usize,
) -> io::Result<RunResult> {
    let sh = Arc::new(Shared::default());
    let _stop = StopOnDrop(sh.clone());
    let fwd_socks: Vec<UdpSocket> = (0..nsocks)
        .map(|_| udp_socket(cfg.rcvbuf))
        .collect::<io::Result<_>>()?;
    let sink_sock = udp_socket(cfg.rcvbuf)?;
    let gen_sock = udp_socket(1 << 20)?;
    let fwd_addrs: Vec<SocketAddrV4> = fwd_socks.iter().map(local_v4).collect::<io::Result<_>>()?;
    let sink_addr = local_v4(&sink_sock)?;
    // Duplicates kept by main for the drop counters.
    let fwd_fds: Vec<UdpSocket> = fwd_socks
        .iter()
        .map(UdpSocket::try_clone)
        .collect::<io::Result<_>>()?;
    let sink_fd = sink_sock.try_clone()?;
    let waker = udp_socket(1 << 16)?;

    // Forwarder first; it reports its tid once set up.
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<i32>(1);
    let fwd = {
        let sh = sh.clone();
        let cfg = cfg.clone();
        spawn_pinned(
            &format!("fwd-{}", variant.name()),
            cfg.fwd_core,
            move || {
                let ready = move || {
                    // The receiver waits for exactly this message.
                    let _ = ready_tx.send(gettid());
                };
                match variant {
                    Variant::Std => forward_std(fwd_socks, sink_addr, &sh, &ready),
                    Variant::Mmsg => forward_mmsg(fwd_socks, sink_addr, &sh, cfg.batch, &ready),
                    Variant::IoUring | Variant::IoUringSendTo => {
                        let nbufs = uring_bufs(&cfg, nsocks);
                        let sendto = variant == Variant::IoUringSendTo;
                        forward_io_uring(fwd_socks, sink_addr, &sh, nbufs, sendto, &ready)
                    }
                    Variant::Driver => {
                        forward_driver(fwd_socks, sink_addr, &sh, Choice::IoUring, &ready)
                    }
                    Variant::DriverEpoll => {
                        forward_driver(fwd_socks, sink_addr, &sh, Choice::Epoll, &ready)
                    }
                    Variant::TokioUring => forward_tokio_uring(
                        fwd_socks,
                        sink_addr,
                        sh.clone(),
                        cfg.tokio_tasks,
                        &ready,
                    ),
                }
            },
        )?
    };
    let fwd_tid = match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(tid) => tid,
        Err(_) => {
            return Err(match fwd.join() {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => io::Error::other("forwarder ended before it was ready"),
                Err(_) => io::Error::other("forwarder panicked during setup"),
            });
        }
    };
    let gen_t = {
        let sh = sh.clone();
        let cfg = cfg.clone();
        let fwd_addrs_gen = fwd_addrs.clone();
        spawn_pinned("gen", cfg.gen_core, move || {
            generator(gen_sock, &fwd_addrs_gen, sink_sock, &sh, &cfg, rate)
        })?
    };
    let clocks = Clocks {
        fwd: thread_cpu_clock(&fwd),
        gen_: thread_cpu_clock(&gen_t),
        fwd_tid,
        fwd_core: cfg.fwd_core,
        gen_core: cfg.gen_core,
        ksoftirqd: ksoftirqd_pid(cfg.fwd_core),
    };

    thread::sleep(Duration::from_secs_f64(cfg.warmup));
    sh.measuring.store(true, Ordering::Relaxed);
    let a = snapshot(&sh, &clocks);
    thread::sleep(Duration::from_secs_f64(cfg.seconds));
    let b = snapshot(&sh, &clocks);
    sh.measuring.store(false, Ordering::Relaxed);
    let iou_workers = io_uring_worker_ticks().1;

    // Stop the generator, let the pipeline drain, then count.
    sh.stop_gen.store(true, Ordering::Relaxed);
    let mut last = (u64::MAX, u64::MAX);
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(30));
        let now = (sh.forwarded.get(), sh.sunk.get());
        if now == last {
            break;
        }
        last = now;
    }
    let (generated, sunk) = (sh.generated.get(), sh.sunk.get());
    let drops_fwd: u64 = fwd_fds.iter().map(|s| socket_drops(s.as_raw_fd())).sum();
    let drops_sink = socket_drops(sink_fd.as_raw_fd());

    // Stop the forwarder: it checks the flag after each receive, so poke it
    // with datagrams until it exits.
    sh.stop_fwd.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fwd.is_finished() {
        if Instant::now() > deadline {
            return Err(io::Error::other("forwarder did not stop"));
        }
        for &addr in &fwd_addrs {
            let _ = waker.send_to(b"stop", addr);
        }
        thread::sleep(Duration::from_millis(2));
    }
    let report = join(fwd, "forwarder")?;
    sh.stop_sink.store(true, Ordering::Relaxed);
    let hist = join(gen_t, "generator")?;

    let secs = (b.t_ns - a.t_ns) as f64 / 1e9;
    let fwd_pkts = (b.forwarded - a.forwarded).max(1) as f64;
    let tick_ns = 1e9 / clk_tck();
    let fwd_cpu = (b.fwd_cpu_ns - a.fwd_cpu_ns) as f64;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1e3;
    let window_ns = (b.t_ns - a.t_ns) as f64;
    let busy_ns = (b.core_busy_ticks - a.core_busy_ticks + b.gen_core_busy_ticks
        - a.gen_core_busy_ticks) as f64
        * tick_ns;
    let ours_ns = fwd_cpu
        + (b.gen_cpu_ns - a.gen_cpu_ns) as f64
        + b.iou_ticks.saturating_sub(a.iou_ticks) as f64 * tick_ns
        + b.ksoftirqd_ticks.saturating_sub(a.ksoftirqd_ticks) as f64 * tick_ns;
    Ok(RunResult {
        variant,
        offered_pps: (b.generated - a.generated) as f64 / secs,
        fwd_pps: fwd_pkts / secs,
        fwd_util: fwd_cpu / 1e9 / secs,
        ns_per_pkt: fwd_cpu / fwd_pkts,
        core_ns_per_pkt: (b.core_busy_ticks - a.core_busy_ticks) as f64 * tick_ns / fwd_pkts,
        syscalls_per_pkt: (variant != Variant::TokioUring)
            .then(|| (b.syscalls - a.syscalls) as f64 / fwd_pkts),
        sleeps_per_pkt: (b.fwd_vcsw - a.fwd_vcsw) as f64 / fwd_pkts,
        preempt_per_s: (b.fwd_ivcsw - a.fwd_ivcsw) as f64 / secs,
        gen_util: (b.gen_cpu_ns - a.gen_cpu_ns) as f64 / 1e9 / secs,
        loss_pct: if generated == 0 {
            0.0
        } else {
            100.0 * generated.saturating_sub(sunk) as f64 / generated as f64
        },
        drops_fwd,
        drops_sink,
        lat_us: [q(0.5), q(0.99), q(0.999)],
        iou_workers,
        iou_util: b.iou_ticks.saturating_sub(a.iou_ticks) as f64 * tick_ns / 1e9 / secs,
        ksoftirqd_util: b.ksoftirqd_ticks.saturating_sub(a.ksoftirqd_ticks) as f64 * tick_ns
            / window_ns,
        foreign: ((busy_ns - ours_ns) / window_ns).max(0.0),
        report,
    })
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

fn median_min_max(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let med = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (med, xs[0], xs[n - 1])
}

/// "median (min–max)" with `d` decimals, or just the median for one sample.
fn spread(mut xs: Vec<f64>, d: usize) -> String {
    let (m, lo, hi) = median_min_max(&mut xs);
    if xs.len() == 1 {
        format!("{m:.d$}")
    } else {
        format!("{m:.d$} ({lo:.d$}–{hi:.d$})")
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    median_min_max(&mut xs).0
}

fn rate_label(rate: Option<u64>) -> String {
    match rate {
        None => "max (saturating generator)".to_string(),
        Some(r) => format!("fixed {r} pps offered"),
    }
}

/// Markdown table for one rate: `reps[rep][variant]`.
fn table(
    rate: Option<u64>,
    nsocks: usize,
    reps: &[Vec<RunResult>],
    variants: &[Variant],
) -> String {
    let mut out = String::new();
    let anchor = |rep: &Vec<RunResult>| rep.iter().find(|r| r.variant == Variant::Std).cloned();
    let _ = writeln!(
        out,
        "\n### {}, {nsocks} forwarder socket{}\n",
        rate_label(rate),
        if nsocks == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "| variant | offered kpps | forwarded kpps | fwd vs std | fwd thread busy % | CPU ns/pkt | pps per core (k) | per-core vs std | gen+sink busy % | syscalls/pkt | sleeps/pkt | loss % (at F / at S) | latency p50/p99/p99.9 µs | foreign load (cores) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &v in variants {
        let runs: Vec<&RunResult> = reps
            .iter()
            .filter_map(|rep| rep.iter().find(|r| r.variant == v))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let col = |f: &dyn Fn(&RunResult) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
        let ratio = |f: &dyn Fn(&RunResult) -> f64| -> String {
            let mut xs: Vec<f64> = reps
                .iter()
                .filter_map(|rep| {
                    let a = anchor(rep)?;
                    let r = rep.iter().find(|r| r.variant == v)?;
                    Some(f(r) / f(&a))
                })
                .collect();
            if v == Variant::Std {
                "anchor".into()
            } else if xs.is_empty() {
                "n/a".into()
            } else {
                let (m, lo, hi) = median_min_max(&mut xs);
                if xs.len() == 1 {
                    format!("{m:.2}×")
                } else {
                    format!("{m:.2}× ({lo:.2}–{hi:.2})")
                }
            }
        };
        let syscalls = if runs.iter().all(|r| r.syscalls_per_pkt.is_some()) {
            format!("{:.3}", median(col(&|r| r.syscalls_per_pkt.unwrap_or(0.0))))
        } else {
            "n/a".into()
        };
        let drops_total: f64 = median(col(&|r| r.loss_pct));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2} ({:.0} / {:.0}) | {:.0} / {:.0} / {:.0} | {} |",
            v.name(),
            spread(col(&|r| r.offered_pps / 1e3), 0),
            spread(col(&|r| r.fwd_pps / 1e3), 0),
            ratio(&|r| r.fwd_pps),
            spread(col(&|r| r.fwd_util * 100.0), 0),
            spread(col(&|r| r.ns_per_pkt), 0),
            spread(col(&|r| 1e6 / r.ns_per_pkt), 0),
            ratio(&|r| 1.0 / r.ns_per_pkt),
            format_args!("{:.0}", median(col(&|r| r.gen_util * 100.0))),
            syscalls,
            median(col(&|r| r.sleeps_per_pkt)),
            drops_total,
            median(col(&|r| r.drops_fwd as f64)),
            median(col(&|r| r.drops_sink as f64)),
            median(col(&|r| r.lat_us[0])),
            median(col(&|r| r.lat_us[1])),
            median(col(&|r| r.lat_us[2])),
            spread(col(&|r| r.foreign), 2),
        );
    }
    out
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{model}, {cpus} online CPUs, Linux {kernel}")
}

/// One per-attempt line on stderr.
fn log_run(rate: Option<u64>, nsocks: usize, rep: usize, attempt: usize, r: &RunResult) {
    eprintln!(
        "[{} socks {} rep {} try {} {:>11}] offered {:>8.0} fwd {:>8.0} pps | fwd cpu {:>5.1}% {:>5.0} ns/pkt (core {:>5.0}) | sys/pkt {} sleeps/pkt {:.3} preempt/s {:.0} | gen+sink {:.0}% | loss {:.3}% (F {} S {}) | lat p50 {:.0} p99 {:.0} µs | iou-wrk {} ({:.1}%) ksoftirqd {:.1}% | foreign {:.3} cores | {:?}",
        if rate.is_some() { "fixed" } else { "max" },
        nsocks,
        rep + 1,
        attempt + 1,
        r.variant.name(),
        r.offered_pps,
        r.fwd_pps,
        r.fwd_util * 100.0,
        r.ns_per_pkt,
        r.core_ns_per_pkt,
        r.syscalls_per_pkt
            .map_or("n/a".to_string(), |s| format!("{s:.3}")),
        r.sleeps_per_pkt,
        r.preempt_per_s,
        r.gen_util * 100.0,
        r.loss_pct,
        r.drops_fwd,
        r.drops_sink,
        r.lat_us[0],
        r.lat_us[1],
        r.iou_workers,
        r.iou_util * 100.0,
        r.ksoftirqd_util * 100.0,
        r.foreign,
        r.report,
    );
}

/// Waits (at most `--quiet-wait` seconds) for a one-second window in which
/// the two benchmark cores together were busy less than `--max-foreign`
/// cores: the benchmark is idle here, so any load is someone else's.
fn wait_for_quiet(cfg: &Config) {
    let tick_ns = 1e9 / clk_tck();
    let busy = || core_busy_ticks(cfg.fwd_core) + core_busy_ticks(cfg.gen_core);
    let start = Instant::now();
    loop {
        let (b0, t0) = (busy(), Instant::now());
        thread::sleep(Duration::from_secs(1));
        let load = (busy() - b0) as f64 * tick_ns / t0.elapsed().as_nanos() as f64;
        if load <= cfg.max_foreign {
            return;
        }
        if start.elapsed().as_secs_f64() > cfg.quiet_wait {
            eprintln!(
                "box still busy ({load:.2} cores) after {:.0} s; running anyway",
                cfg.quiet_wait
            );
            return;
        }
    }
}

/// Runs one (variant, rate) until the box was quiet enough during the
/// window (`--max-foreign`), at most `1 + --retries` times; keeps the
/// quietest attempt.
fn run_with_retries(
    cfg: &Config,
    v: Variant,
    rate: Option<u64>,
    nsocks: usize,
    rep: usize,
) -> io::Result<RunResult> {
    let mut best: Option<RunResult> = None;
    for attempt in 0..=cfg.retries {
        wait_for_quiet(cfg);
        let r = run_one(cfg, v, rate, nsocks)?;
        log_run(rate, nsocks, rep, attempt, &r);
        let quiet = r.foreign <= cfg.max_foreign;
        if best.as_ref().is_none_or(|b| r.foreign < b.foreign) {
            best = Some(r);
        }
        if quiet {
            break;
        }
    }
    Ok(best.expect("at least one attempt ran"))
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    println!("## UDP forward: {}", machine());
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!("args: {}", argv.join(" "));
    println!(
        "config: sockets={:?} seconds={} warmup={} payload={} batch={} tick_us={} fwd_core={} gen_core={} rcvbuf={} uring_bufs={} tokio_tasks={} repeat={} max_foreign={} retries={} quiet_wait={}",
        cfg.sockets,
        cfg.seconds,
        cfg.warmup,
        cfg.payload,
        cfg.batch,
        cfg.tick_us,
        cfg.fwd_core,
        cfg.gen_core,
        cfg.rcvbuf,
        cfg.uring_bufs.map_or("auto".to_string(), |n| n.to_string()),
        cfg.tokio_tasks,
        cfg.repeat,
        cfg.max_foreign,
        cfg.retries,
        cfg.quiet_wait,
    );
    let mut variants = cfg.variants.clone();
    if variants.contains(&Variant::IoUring) || variants.contains(&Variant::IoUringSendTo) {
        match probe_io_uring(uring_bufs(&cfg, 1)) {
            Ok(info) => println!("io_uring probe: {info}"),
            Err(e) => {
                println!("io_uring probe FAILED: {e}; skipping the io_uring variant");
                variants.retain(|&v| !matches!(v, Variant::IoUring | Variant::IoUringSendTo));
            }
        }
    }

    for &nsocks in &cfg.sockets {
        for &rate in &cfg.rates {
            let mut reps: Vec<Vec<RunResult>> = Vec::new();
            for rep in 0..cfg.repeat {
                let mut row = Vec::new();
                for &v in &variants {
                    match run_with_retries(&cfg, v, rate, nsocks, rep) {
                        Ok(r) => row.push(r),
                        Err(e) => eprintln!("[rep {} {}] FAILED: {e}", rep + 1, v.name()),
                    }
                }
                reps.push(row);
            }
            print!("{}", table(rate, nsocks, &reps, &variants));
        }
    }
    println!(
        "\nCPU ns/pkt = forwarder thread CPU (user+sys, includes loopback delivery) / forwarded; \
         pps per core = 1e9 / CPU ns/pkt; ratios are per repetition against std, then median (min–max)."
    );
}
