//! Recording writes: what the recording writer costs a shard and its own
//! thread.
//!
//! Simulates N concurrent recordings, each producing 32000 bytes per second
//! of stereo PCM (8 kHz × 16 bit × 2) in chunks of `--chunk` bytes (640 =
//! 20 ms, one packet time), through `switchboard::shell::recwriter`, into a
//! temporary directory on the real disk (default under `target/`; tmpfs is
//! refused). Every recording is opened, fed `--seconds` of audio round
//! robin (chunk 0 of every recording, then chunk 1, ...) and closed; then
//! `stop()` drains and joins the writer. The producer (the shard's side)
//! and the writer thread are pinned to different cores (`--producer-core`,
//! `--writer-core`), as on the appliance, where the writer never runs on a
//! shard's core.
//!
//! Modes:
//! * `fast` — the producer submits as fast as it can (a simulated 30 s in
//!   far less). When the queue is full it sleeps 50 µs and retries; the CPU
//!   of those waits is left out of the producer's figure (counted as
//!   `full` waits).
//! * `paced` — real time: every `chunk` duration (20 ms) the producer
//!   submits one chunk of every recording, then sleeps until the next tick,
//!   for `--paced-seconds`. The writer goes idle between ticks, so this is
//!   where wake-ups happen and where `linger` matters.
//!
//! Figures per run:
//! * **producer CPU ns/op** — CPU time (CLOCK_THREAD_CPUTIME_ID) of the
//!   producing thread (pinned to `--producer-core`) per op: building the op
//!   (a `Vec` of `--chunk` bytes; its memory is freed on the writer thread)
//!   plus submitting it. The header line gives the cost of building and
//!   dropping an op on one thread, for comparison.
//! * **in submit ns/op** — time inside `RecordingSink::submit` per op
//!   (`Instant` around each call, minus an empty timed stretch taken just
//!   before it; calls over 50 µs were preempted on this shared box and are
//!   left out):
//!   what a shard pays for the queue push, the fence, and the eventfd write
//!   when the writer sleeps.
//! * **writer ms/MB** — process CPU (CLOCK_PROCESS_CPUTIME_ID, which would
//!   include io_uring's io-wq workers) minus the producer thread's, per MB (10^6
//!   bytes) of audio. Disk write-back by the kernel's flusher threads is not
//!   in it.
//! * **writer µs/open** — the same, for the Opens, which are submitted
//!   first and waited for (file, directory check, journal entry, header);
//!   they are not in the other figures.
//! * **wall** — first Data op to `stop()` returned.
//!
//! A tokio-uring backend was measured against plain `pwrite` with this
//! bench at commit 93554bb (`--backends std,tokio_uring`); it lost on every
//! figure and was removed (bench/RESULTS.md, "Recording writes").
//!
//! Between runs the files are deleted and `sync(2)` flushes the page cache,
//! so a run does not pay for the previous one's write-back. Each
//! configuration runs `--repeat` times, interleaved; the median is printed.
//!
//! ```text
//! cargo bench --bench recwrite -- [--recordings 200,1000] [--seconds 30]
//!     [--chunk 640] [--linger-ms 0,10]
//!     [--modes fast,paced] [--paced-seconds 10] [--repeat 3]
//!     [--producer-core 1] [--writer-core 0] [--dir PATH]
//! ```

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock and sleeps

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::shell::recwriter::{
    BYTES_PER_SECOND, RecConfig, RecCounters, RecOp, RecordingSink, start_with,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fast,
    Paced,
}

struct Args {
    recordings: Vec<u64>,
    seconds: u64,
    chunk: u64,
    lingers: Vec<u64>,
    modes: Vec<Mode>,
    paced_seconds: u64,
    repeat: usize,
    producer_core: usize,
    writer_core: usize,
    dir: PathBuf,
}

fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',').map(|s| f(s.trim())).collect()
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        recordings: vec![200, 1000],
        seconds: 30,
        chunk: 640,
        lingers: vec![0, 10],
        modes: vec![Mode::Fast, Mode::Paced],
        paced_seconds: 10,
        repeat: 3,
        producer_core: 1,
        writer_core: 0,
        dir: PathBuf::from("target"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--bench" {
            continue; // cargo bench passes it
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--recordings" => a.recordings = list(&v, num)?,
            "--seconds" => a.seconds = num(&v)?,
            "--chunk" => a.chunk = num(&v)?,
            "--linger-ms" => a.lingers = list(&v, num)?,
            "--modes" => {
                a.modes = list(&v, |s| match s {
                    "fast" => Ok(Mode::Fast),
                    "paced" => Ok(Mode::Paced),
                    _ => Err(format!("unknown mode {s}")),
                })?
            }
            "--paced-seconds" => a.paced_seconds = num(&v)?,
            "--repeat" => a.repeat = num(&v)?.max(1) as usize,
            "--producer-core" => a.producer_core = num(&v)? as usize,
            "--writer-core" => a.writer_core = num(&v)? as usize,
            "--dir" => a.dir = PathBuf::from(v),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.chunk == 0 || !a.chunk.is_multiple_of(4) {
        return Err("--chunk must be a positive multiple of 4".into());
    }
    Ok(a)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Pins thread `tid` (0: this one) to `core`.
fn pin(tid: i32, core: usize, who: &str) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    if set.set(core).is_ok() && sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set).is_ok() {
        return;
    }
    eprintln!("warning: cannot pin the {who} to CPU {core}");
}

/// Pins the writer thread (named `recwriter`) to `core`, so it never runs
/// on the producer's core (a shard's core is its own).
fn pin_writer(core: usize) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "recwriter"
            && let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok())
        {
            pin(tid, core, "writer");
        }
    }
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type == libc::TMPFS_MAGIC
}

fn chunk_op(id: u64, tick: u64, chunk: u64) -> RecOp {
    RecOp::Data {
        id,
        offset: tick * chunk,
        bytes: vec![(id as u8) ^ (tick as u8); chunk as usize],
    }
}

/// What one `submit` cost: CPU spent waiting on a full queue (left out of
/// the producer's figure), full waits, and the time inside
/// `RecordingSink::submit` calls.
#[derive(Default)]
struct Cost {
    waited: Duration,
    waits: u64,
    inside: Duration,
    /// The empty timed stretches matching `inside`.
    empty: Duration,
    /// Calls whose time counts (not preempted).
    timed: u64,
}

/// A `submit` that took longer was preempted (the box is shared): its time
/// is left out of "in submit". A wake-up's `write(2)` takes a few µs.
const PREEMPTED: Duration = Duration::from_micros(50);

/// Submits `make()`'s op, retrying while the queue is full.
fn submit(sink: &RecordingSink, mut make: impl FnMut() -> RecOp) -> Cost {
    let mut c = Cost::default();
    loop {
        let op = make();
        // An empty timed stretch just before calibrates the timer in place.
        let t0 = Instant::now();
        let t1 = Instant::now();
        let ok = sink.submit(op);
        let t2 = Instant::now();
        if t2 - t1 < PREEMPTED && t1 - t0 < PREEMPTED {
            c.inside += t2 - t1;
            c.empty += t1 - t0;
            c.timed += 1;
        }
        if ok {
            return c;
        }
        let t = thread_cpu();
        std::thread::sleep(Duration::from_micros(50));
        c.waited += thread_cpu() - t;
        c.waits += 1;
    }
}

struct Run {
    ops: u64,
    bytes: u64,
    wall: Duration,
    producer: Duration,
    /// Writer CPU for all the Opens.
    open_cpu: Duration,
    /// Time inside `submit` calls not preempted (timer's own cost included).
    inside: Duration,
    /// As much time again, untimed: the timer's own cost.
    empty: Duration,
    timed: u64,
    writer: Duration,
    full_waits: u64,
}

fn run(a: &Args, n: u64, linger_ms: u64, mode: Mode) -> Run {
    let dir = tempfile::Builder::new()
        .prefix("recwrite-")
        .tempdir_in(&a.dir)
        .expect("temp dir");
    let counters = Arc::new(RecCounters::default());
    let cfg = RecConfig {
        linger: Duration::from_millis(linger_ms),
        ..RecConfig::default()
    };
    let (writer, sink) =
        start_with(dir.path().to_path_buf(), counters.clone(), cfg).expect("start");
    pin_writer(a.writer_core);
    let seconds = if mode == Mode::Paced {
        a.paced_seconds
    } else {
        a.seconds
    };
    let ticks = seconds * BYTES_PER_SECOND / a.chunk;
    let tick_len = Duration::from_nanos(a.chunk * 1_000_000_000 / BYTES_PER_SECOND);
    let (mut waited, mut full_waits, mut ops, mut inside, mut empty, mut timed) = (
        Duration::ZERO,
        0,
        0u64,
        Duration::ZERO,
        Duration::ZERO,
        0u64,
    );
    let mut account = |c: Cost| {
        waited += c.waited;
        full_waits += c.waits;
        inside += c.inside;
        empty += c.empty;
        timed += c.timed;
        ops += 1;
    };

    // Opens first, measured apart: creating files is not streaming audio.
    let (po, co) = (thread_cpu(), process_cpu());
    for id in 0..n {
        submit(&sink, || RecOp::Open {
            id,
            call_id: format!("bench-{id}@switchboard"),
            started_unix_ms: 1_795_392_000_000,
        });
    }
    while counters.opened.get() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let open_cpu = (process_cpu() - co).saturating_sub(thread_cpu() - po);

    let (t0, p0, c0) = (Instant::now(), thread_cpu(), process_cpu());
    let mut idle = Duration::ZERO; // paced: CPU of the tick sleeps, left out
    for tick in 0..ticks {
        for id in 0..n {
            account(submit(&sink, || chunk_op(id, tick, a.chunk)));
        }
        if mode == Mode::Paced {
            let due = t0 + tick_len * (tick as u32 + 1);
            let t = thread_cpu();
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            idle += thread_cpu() - t;
        }
    }
    for id in 0..n {
        account(submit(&sink, || RecOp::Close {
            id,
            data_len: ticks * a.chunk,
        }));
    }
    let producer = thread_cpu() - p0 - waited - idle;
    writer.stop();
    let wall = t0.elapsed();
    let writer_cpu = (process_cpu() - c0).saturating_sub(thread_cpu() - p0);
    assert_eq!(counters.write_errors.get(), 0, "write errors");
    assert_eq!(counters.closed.get(), n);
    let bytes = counters.bytes_written.get();
    assert_eq!(bytes, n * ticks * a.chunk);
    drop(dir);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    Run {
        ops,
        bytes,
        wall,
        producer,
        open_cpu,
        inside,
        empty,
        timed,
        writer: writer_cpu,
        full_waits,
    }
}

/// CPU per op of building each op and dropping it (no writer).
fn baseline(n: u64, ticks: u64, chunk: u64) -> f64 {
    let t = thread_cpu();
    let mut ops = 0u64;
    for tick in 0..ticks {
        for id in 0..n {
            std::hint::black_box(chunk_op(id, tick, chunk));
            ops += 1;
        }
    }
    (thread_cpu() - t).as_nanos() as f64 / ops as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("recwrite: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&a.dir).expect("bench dir");
    if is_tmpfs(&a.dir) {
        eprintln!(
            "recwrite: {} is tmpfs; give --dir on a real disk",
            a.dir.display()
        );
        std::process::exit(2);
    }
    pin(0, a.producer_core, "producer");
    let base: Vec<f64> = (0..5).map(|_| baseline(1000, 1500, a.chunk)).collect();
    let base = median(base);
    println!(
        "recwrite: chunk {} B, dir {}, build + drop an op {base:.0} ns, loadavg {}",
        a.chunk,
        a.dir.display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| mode | recordings | linger | ops | MB | wall s | producer CPU ns/op | in submit ns/op | writer CPU ms/MB | writer CPU µs/open | full waits |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &mode in &a.modes {
        for &n in &a.recordings {
            // Repetitions interleave the linger values.
            let mut results: Vec<Vec<Run>> = a.lingers.iter().map(|_| Vec::new()).collect();
            for _ in 0..a.repeat {
                for (i, &linger) in a.lingers.iter().enumerate() {
                    results[i].push(run(&a, n, linger, mode));
                }
            }
            for (&linger, runs) in a.lingers.iter().zip(results) {
                let per_op = |r: &Run| r.producer.as_nanos() as f64 / r.ops as f64;
                let producer = median(runs.iter().map(per_op).collect());
                let writer = median(
                    runs.iter()
                        .map(|r| r.writer.as_secs_f64() * 1e3 / (r.bytes as f64 / 1e6))
                        .collect(),
                );
                let submit = median(
                    runs.iter()
                        .map(|r| {
                            (r.inside.as_nanos() as f64 - r.empty.as_nanos() as f64)
                                / r.timed as f64
                        })
                        .collect(),
                );
                let open = median(
                    runs.iter()
                        .map(|r| r.open_cpu.as_secs_f64() * 1e6 / n as f64)
                        .collect(),
                );
                let wall = median(runs.iter().map(|r| r.wall.as_secs_f64()).collect());
                let waits = median(runs.iter().map(|r| r.full_waits as f64).collect());
                let r0 = &runs[0];
                println!(
                    "| {mode:?} | {n} | {linger} ms | {} | {:.0} | {wall:.2} | {producer:.0} | {submit:.0} | {writer:.2} | {open:.0} | {waits:.0} |",
                    r0.ops,
                    r0.bytes as f64 / 1e6,
                );
            }
        }
    }
}
