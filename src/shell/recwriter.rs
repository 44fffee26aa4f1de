//! The recording file writer: the I/O half of call recording.
//!
//! Shards produce the audio; this module puts it on disk off the shard's hot
//! path. It owns one writer thread, the `.wav` files of the recordings in
//! progress and the journal of open recordings.
//!
//! # How it is driven
//! A shard hands [`RecOp`]s to a [`RecordingSink`]: `submit` pushes onto a
//! bounded queue shared by all shards (crossbeam `ArrayQueue`: a CAS on the
//! tail, no lock; crossbeam-channel was not used because its `try_send` locks
//! a mutex to notify a sleeping receiver) and, only when the writer has said
//! it is asleep, writes the writer's eventfd (one `write(2)`). A full queue
//! makes `submit` return `false` and counts the op in
//! [`RecCounters::dropped_ops`]; the call goes on.
//!
//! The writer thread drains the queue in batches of up to 4096 ops, writes
//! each with `pwrite`, then the headers that became due. While recordings
//! are active it looks at the queue every [`RecConfig::linger`] (10 ms) and
//! never needs waking; after a second with nothing to write it sleeps on the
//! eventfd until a `submit` wakes it. [`RecordingWriter::stop`] drains
//! everything queued, finishes the recordings still open and joins the
//! thread.
//!
//! # File layout
//! `<dir>/YYYY/MM/DD/<call-id>.wav`, the date being the recording's start
//! (UTC); a second recording of the same Call-ID on the same day gets
//! `<call-id>-<id>.wav`. Stereo WAV: 8 kHz, 16-bit PCM little-endian, two
//! channels (caller left, other party right), the canonical 44-byte header,
//! data from offset 44. The Call-ID is sanitized for the file name
//! ([`sanitize_call_id`]): no `/`, no leading `.`, only `[A-Za-z0-9._@-]`.
//!
//! # Crash rules
//! * Open writes the journal entry `<dir>/.open/<id>-<call-id>` (holding the
//!   file's path relative to `<dir>`) before the file has any audio; Close
//!   removes it once the final header is written. Restart needs no directory
//!   walk: [`repair_open_recordings`] reads `.open/` only.
//! * The header is rewritten every time the data grows by one second of audio
//!   (32000 bytes) and on Close, so a killed appliance leaves files that play,
//!   their header at most ~1 s behind the data.
//! * Repair sets the header from the file length (data = length − 44 rounded
//!   down to whole 4-byte frames; a torn last frame is cut off) and removes the
//!   journal entry. Nothing is fsynced: the rules hold for a killed process,
//!   not for a power cut (the page cache is lost then).
//! * A write error (disk full, EIO, ...) stops that recording only: its later
//!   ops are dropped, the file keeps the header as far as written, one warning
//!   names the path and the error, [`RecCounters::write_errors`] counts it.
//!   When even that header cannot be written the journal entry stays, so the
//!   next start repairs the file.
//!
//! # Why plain `pwrite`
//! Two backends were built and measured with `bench/recwrite.rs`
//! (bench/RESULTS.md, "Recording writes"; 8 kHz stereo in 640-byte ops, ext4,
//! 2-vCPU KVM guest): one `pwrite` per op on this thread, and tokio-uring
//! with each batch's writes submitted together. `pwrite` took 1.6–2.5× less
//! writer CPU per MB (e.g. 4.9 vs 8.2 ms/MB for 1000 recordings in real
//! time, 3.0 vs 6.5 ms/MB flat out) and finished 1.3–2.4× sooner; the cost
//! to the shard was the same. Small writes into the page cache cost the
//! same kernel work either way, and tokio-uring adds a task and an op per
//! write, so it was removed. As built: a shard pays 15–35 ns per `submit`;
//! 1000 concurrent recordings cost the writer ~0.17 of a core (5.2 ms/MB),
//! and an Open 0.06–1.2 ms (ext4 inode allocation, two inodes per
//! recording).

// The writer thread sleeps (the linger) and blocks on its eventfd: that is
// its job, and it never runs on a shard.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::stats::Counter;

/// Bytes before the audio.
pub const HEADER_LEN: u64 = 44;
/// One stereo 16-bit sample frame.
pub const FRAME_LEN: u64 = 4;
/// One second of audio: 8000 frames of 4 bytes.
pub const BYTES_PER_SECOND: u64 = 32_000;
/// The journal directory under the recordings directory.
const OPEN_DIR: &str = ".open";
/// Longest sanitized Call-ID kept in a file name (names stay under 255 bytes).
const MAX_NAME: usize = 160;
/// Most ops written per batch, so headers and closes are not held back
/// behind an endless stream of data.
const MAX_BATCH: usize = 4096;
/// How long the writer keeps polling an empty queue before it sleeps until
/// a sender wakes it.
const IDLE_BEFORE_WAIT: Duration = Duration::from_secs(1);

/// One recording operation from a shard.
#[derive(Debug)]
pub enum RecOp {
    /// Create the file (and directories), write a header with data length 0.
    /// `started_unix_ms` picks the YYYY/MM/DD directory (UTC).
    Open {
        id: u64,
        call_id: String,
        started_unix_ms: u64,
    },
    /// Interleaved stereo PCM bytes to write at data offset `offset` (file
    /// offset 44 + offset); whole 4-byte frames.
    Data {
        id: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The recording is complete: final header with `data_len`, close.
    Close { id: u64, data_len: u64 },
}

/// The writer's counters. The writer thread is the single writer of every
/// [`Counter`]; `repaired` is for whoever calls [`repair_open_recordings`]
/// (before the writer starts); `dropped_ops` is bumped by senders.
#[derive(Debug, Default)]
pub struct RecCounters {
    /// Recordings whose file was created.
    pub opened: Counter,
    /// Recordings finished with their final header (Close, or still open at
    /// [`RecordingWriter::stop`]).
    pub closed: Counter,
    /// Audio bytes written (headers not included).
    pub bytes_written: Counter,
    /// Recordings stopped by an I/O error (one per recording).
    pub write_errors: Counter,
    /// Files fixed by [`repair_open_recordings`] at start-up.
    pub repaired: Counter,
    /// Ops refused because the queue was full (any sender).
    pub dropped_ops: AtomicU64,
}

/// Writer settings; [`start`] uses the defaults.
#[derive(Clone, Debug)]
pub struct RecConfig {
    /// Ops the queue holds (all shards share it).
    pub capacity: usize,
    /// While recordings are active the writer looks at the queue this often
    /// (sleeping in between), so senders never have to wake it; after one
    /// second with nothing to write it sleeps until the next `submit` wakes
    /// it. Zero: never poll, every idle period ends with a wake-up.
    pub linger: Duration,
}

impl Default for RecConfig {
    fn default() -> Self {
        RecConfig {
            capacity: 65_536,
            linger: Duration::from_millis(10),
        }
    }
}

/// What the senders and the writer thread share.
struct Shared {
    queue: ArrayQueue<RecOp>,
    /// The writer is about to block on `wake`: the next sender writes it.
    armed: AtomicBool,
    stop: AtomicBool,
    /// Stop without finishing open recordings (as a killed process would).
    abandon: AtomicBool,
    wake: EventFd,
    counters: Arc<RecCounters>,
}

impl Shared {
    fn new(capacity: usize, counters: Arc<RecCounters>) -> io::Result<Shared> {
        Ok(Shared {
            queue: ArrayQueue::new(capacity.max(1)),
            armed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(io::Error::from)?,
            counters,
        })
    }

    fn wake(&self) {
        // Anything but EINTR (EAGAIN: counter saturated) means a wake is pending.
        while let Err(Errno::EINTR) = self.wake.write(1) {}
    }

    /// Blocks the writer until a sender or `stop` wakes it, unless an op or
    /// the stop arrived meanwhile.
    fn wait(&self) {
        self.armed.store(true, Ordering::Relaxed);
        // Pairs with the fence in `submit`: either that sender sees `armed`,
        // or this check sees its op.
        fence(Ordering::SeqCst);
        if self.queue.is_empty() && !self.stop.load(Ordering::Acquire) {
            while let Err(Errno::EINTR) = self.wake.read() {}
        }
        self.armed.store(false, Ordering::Relaxed);
    }
}

/// Where shards send their recording ops. Cheap to clone, `Send`; `submit`
/// never blocks and takes no lock.
#[derive(Clone)]
pub struct RecordingSink {
    shared: Arc<Shared>,
}

impl RecordingSink {
    /// Queues `op`. Returns `false` when the queue is full: the op is dropped
    /// and counted in [`RecCounters::dropped_ops`].
    pub fn submit(&self, op: RecOp) -> bool {
        if self.try_submit(op).is_err() {
            self.shared
                .counters
                .dropped_ops
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues `op`, or hands it back when the queue is full (for an op
    /// that must not be lost: the caller retries).
    pub fn try_submit(&self, op: RecOp) -> Result<(), RecOp> {
        let s = &*self.shared;
        s.queue.push(op)?;
        // Pairs with the fence in `Shared::wait`.
        fence(Ordering::SeqCst);
        if s.armed.load(Ordering::Relaxed) && s.armed.swap(false, Ordering::Relaxed) {
            s.wake();
        }
        Ok(())
    }
}

/// Owns the writer thread. [`RecordingWriter::stop`] finishes cleanly;
/// dropping it without `stop` writes what is queued but leaves the open
/// recordings as a killed process would (for [`repair_open_recordings`]).
pub struct RecordingWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingWriter {
    /// Writes everything queued, finishes every recording still open (final
    /// header, journal entry removed) and joins the thread.
    pub fn stop(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, abandon: bool) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.abandon.store(abandon, Ordering::Relaxed);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if thread.join().is_err() {
            tracing::error!("recording writer thread panicked");
        }
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// Starts the writer thread with the default [`RecConfig`]. `dir` is
/// `<data_dir>/recordings`; it and its journal directory are created.
pub fn start(
    dir: PathBuf,
    counters: Arc<RecCounters>,
) -> io::Result<(RecordingWriter, RecordingSink)> {
    start_with(dir, counters, RecConfig::default())
}

/// [`start`] with explicit settings.
pub fn start_with(
    dir: PathBuf,
    counters: Arc<RecCounters>,
    cfg: RecConfig,
) -> io::Result<(RecordingWriter, RecordingSink)> {
    fs::create_dir_all(dir.join(OPEN_DIR))?;
    let shared = Arc::new(Shared::new(cfg.capacity, counters)?);
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("recwriter".into())
            .spawn(move || {
                let book = Book::new(dir, shared.counters.clone());
                run(&shared, book, cfg.linger);
            })?
    };
    let sink = RecordingSink {
        shared: shared.clone(),
    };
    Ok((
        RecordingWriter {
            shared,
            thread: Some(thread),
        },
        sink,
    ))
}

/// The writer loop: batches of ops become audio writes, then the headers
/// they make due.
fn run(shared: &Shared, mut book: Book, linger: Duration) {
    let mut batch = Vec::new();
    // Empty looks in a row allowed before sleeping until woken.
    let idle_polls = IDLE_BEFORE_WAIT
        .as_nanos()
        .checked_div(linger.as_nanos())
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let mut idle = 0;
    loop {
        while batch.len() < MAX_BATCH {
            match shared.queue.pop() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        if !batch.is_empty() {
            idle = 0;
            let writes = book.handle_ops(batch.drain(..));
            let done = book.write(writes);
            let headers = book.handle_written(done);
            let done = book.write(headers);
            book.handle_headers_written(done);
            continue; // a backlog is written at once
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        if idle < idle_polls {
            idle += 1;
            std::thread::sleep(linger);
        } else {
            shared.wait();
        }
    }
    if !shared.abandon.load(Ordering::Relaxed) {
        let headers = book.handle_stop();
        let done = book.write(headers);
        book.handle_headers_written(done);
    }
}

/// One positioned write: audio (`pos` ≥ 44) or a header (`pos` = 0).
struct Write {
    id: u64,
    pos: u64,
    buf: Vec<u8>,
}

/// A [`Write`]'s outcome.
struct Done {
    id: u64,
    pos: u64,
    len: usize,
    result: io::Result<()>,
}

/// A recording being written.
struct Rec {
    file: File,
    path: PathBuf,
    marker: PathBuf,
    /// Audio bytes on disk: the end of the furthest successful write.
    end: u64,
    /// Data length in the header on disk.
    header: u64,
    /// Data length of the header being written now.
    pending: Option<u64>,
    /// Close received: the final data length.
    close: Option<u64>,
    /// The first write error: the recording stops.
    error: Option<io::Error>,
}

enum Slot {
    Live(Rec),
    /// Failed; later ops are dropped until its Close.
    Failed,
}

/// The writer thread's state: every recording by id. Turns ops into writes
/// and write results into headers, closes and counts.
struct Book {
    dir: PathBuf,
    counters: Arc<RecCounters>,
    recs: HashMap<u64, Slot>,
    /// Recordings that may need a header after this batch.
    touched: Vec<u64>,
}

impl Book {
    fn new(dir: PathBuf, counters: Arc<RecCounters>) -> Self {
        Book {
            dir,
            counters,
            recs: HashMap::new(),
            touched: Vec::new(),
        }
    }

    /// Performs the writes (`pwrite` each) and reports every result.
    fn write(&self, writes: Vec<Write>) -> Vec<Done> {
        writes
            .into_iter()
            .map(|w| {
                let result = match self.recs.get(&w.id) {
                    Some(Slot::Live(r)) => r.file.write_all_at(&w.buf, w.pos),
                    _ => Err(io::Error::other("recording file already closed")),
                };
                Done {
                    id: w.id,
                    pos: w.pos,
                    len: w.buf.len(),
                    result,
                }
            })
            .collect()
    }

    /// Opens files, notes closes, and returns the audio writes of `ops`.
    fn handle_ops(&mut self, ops: impl Iterator<Item = RecOp>) -> Vec<Write> {
        let mut writes = Vec::new();
        for op in ops {
            match op {
                RecOp::Open {
                    id,
                    call_id,
                    started_unix_ms,
                } => self.open(id, &call_id, started_unix_ms),
                RecOp::Data { id, offset, bytes } => {
                    if let Some(Slot::Live(r)) = self.recs.get(&id)
                        && r.close.is_none()
                        && r.error.is_none()
                    {
                        writes.push(Write {
                            id,
                            pos: HEADER_LEN.saturating_add(offset),
                            buf: bytes,
                        });
                    }
                }
                RecOp::Close { id, data_len } => match self.recs.get_mut(&id) {
                    Some(Slot::Live(r)) if r.close.is_none() => {
                        r.close = Some(data_len - data_len % FRAME_LEN);
                        self.touched.push(id);
                    }
                    Some(Slot::Live(_)) => {}
                    Some(Slot::Failed) => {
                        self.recs.remove(&id);
                    }
                    None => {}
                },
            }
        }
        writes
    }

    fn open(&mut self, id: u64, call_id: &str, started_unix_ms: u64) {
        if self.recs.contains_key(&id) {
            tracing::warn!(
                id,
                call_id,
                "recording id already open; second Open ignored"
            );
            self.counters.write_errors.bump();
            return;
        }
        match open_file(&self.dir, id, call_id, started_unix_ms) {
            Ok((file, path, marker)) => {
                self.counters.opened.bump();
                let rec = Rec {
                    file,
                    path,
                    marker,
                    end: 0,
                    header: 0,
                    pending: None,
                    close: None,
                    error: None,
                };
                self.recs.insert(id, Slot::Live(rec));
            }
            Err((path, e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot start recording; not recorded");
                self.counters.write_errors.bump();
                self.recs.insert(id, Slot::Failed);
            }
        }
    }

    /// Takes the audio writes' results; returns the headers now due.
    fn handle_written(&mut self, done: Vec<Done>) -> Vec<Write> {
        for d in done {
            let Some(Slot::Live(r)) = self.recs.get_mut(&d.id) else {
                continue;
            };
            match d.result {
                Ok(()) => {
                    // invariant: a usize length always fits in u64 on Linux.
                    let len = d.len as u64;
                    r.end = r.end.max(d.pos - HEADER_LEN + len);
                    self.counters.bytes_written.add(len);
                }
                Err(e) => {
                    if r.error.is_none() {
                        r.error = Some(e);
                    }
                }
            }
            self.touched.push(d.id);
        }
        self.poll_headers()
    }

    /// Headers due for the touched recordings: failed ones (as far as
    /// written), closing ones (final length), and those grown by a second.
    fn poll_headers(&mut self) -> Vec<Write> {
        let mut writes = Vec::new();
        for id in self.touched.drain(..) {
            let Some(Slot::Live(r)) = self.recs.get_mut(&id) else {
                continue;
            };
            if r.pending.is_some() {
                continue; // touched twice
            }
            let end = r.end - r.end % FRAME_LEN;
            let data_len = if r.error.is_some() {
                Some(end)
            } else if let Some(len) = r.close {
                if len == r.end {
                    Some(len)
                } else {
                    // Data ops were dropped (hole: silence) or went past the end.
                    match set_len(&r.path, HEADER_LEN + len) {
                        Ok(()) => Some(len),
                        Err(e) => {
                            r.error = Some(e);
                            Some(end)
                        }
                    }
                }
            } else if r.end >= r.header + BYTES_PER_SECOND {
                Some(end)
            } else {
                None
            };
            if let Some(len) = data_len {
                r.pending = Some(len);
                writes.push(Write {
                    id,
                    pos: 0,
                    buf: wav_header(len).to_vec(),
                });
            }
        }
        writes
    }

    /// Takes the headers' results; finishes closing and failed recordings.
    fn handle_headers_written(&mut self, done: Vec<Done>) {
        for d in done {
            let Some(Slot::Live(r)) = self.recs.get_mut(&d.id) else {
                continue;
            };
            let written = r.pending.take();
            let header_ok = match d.result {
                Ok(()) => {
                    r.header = written.unwrap_or(r.header);
                    true
                }
                Err(e) => {
                    if r.error.is_none() {
                        r.error = Some(e);
                    }
                    false
                }
            };
            if r.error.is_none() && r.close.is_none() {
                continue;
            }
            let closed = r.close.is_some();
            let Some(Slot::Live(r)) = self.recs.remove(&d.id) else {
                continue; // invariant: matched Live just above
            };
            if !closed {
                // Its later Data and Close are dropped.
                self.recs.insert(d.id, Slot::Failed);
            }
            if header_ok && let Err(e) = fs::remove_file(&r.marker) {
                tracing::warn!(marker = %r.marker.display(), error = %e, "cannot remove recording journal entry");
            }
            match r.error {
                Some(e) => {
                    tracing::warn!(
                        path = %r.path.display(),
                        error = %e,
                        data_len = r.header,
                        "recording stopped by a write error; the call goes on"
                    );
                    self.counters.write_errors.bump();
                }
                None => self.counters.closed.bump(),
            }
            // Dropping `r.file` closes it.
        }
    }

    /// At stop: every recording still open is finished as far as written.
    fn handle_stop(&mut self) -> Vec<Write> {
        for (id, slot) in &mut self.recs {
            if let Slot::Live(r) = slot
                && r.close.is_none()
            {
                tracing::warn!(path = %r.path.display(), data_len = r.end, "recording still open at stop; finished as far as written");
                r.close = Some(r.end - r.end % FRAME_LEN);
                self.touched.push(*id);
            }
        }
        self.poll_headers()
    }
}

/// Creates the recording's file and journal entry and writes the empty
/// header. Returns the file, its path and the journal entry's path, or the
/// path it tried and the error.
fn open_file(
    dir: &Path,
    id: u64,
    call_id: &str,
    started_unix_ms: u64,
) -> Result<(File, PathBuf, PathBuf), (PathBuf, io::Error)> {
    let name = sanitize_call_id(call_id);
    let day = day_dir(started_unix_ms);
    let mut rel = format!("{day}/{name}.wav");
    let mut path = dir.join(&rel);
    fs::create_dir_all(dir.join(&day)).map_err(|e| (path.clone(), e))?;
    // Not O_TRUNC: an existing non-empty file is an earlier recording.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| (path.clone(), e))?;
    let meta = file.metadata().map_err(|e| (path.clone(), e))?;
    if meta.is_file() && meta.len() > 0 {
        rel = format!("{day}/{name}-{id}.wav");
        path = dir.join(&rel);
        file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| (path.clone(), e))?;
    }
    let marker = dir.join(OPEN_DIR).join(format!("{id}-{name}"));
    fs::write(&marker, rel.as_bytes()).map_err(|e| (path.clone(), e))?;
    if let Err(e) = file.write_all_at(&wav_header(0), 0) {
        // The journal entry stays: the next start turns the file into an
        // empty WAV (or drops the entry when it is not a regular file).
        return Err((path, e));
    }
    Ok((file, path, marker))
}

fn set_len(path: &Path, len: u64) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(len)
}

/// The Call-ID as a file name: characters outside `[A-Za-z0-9._@-]` become
/// `_`, a leading `.` becomes `_` (so never `.`, `..` or a hidden file),
/// at most 160 bytes, never empty.
pub fn sanitize_call_id(call_id: &str) -> String {
    let mut name: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// `YYYY/MM/DD` of a Unix time in milliseconds, UTC.
pub fn day_dir(unix_ms: u64) -> String {
    // invariant: u64::MAX / 86_400_000 < i64::MAX.
    let (y, m, d) = civil_from_days((unix_ms / 86_400_000) as i64);
    format!("{y:04}/{m:02}/{d:02}")
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // invariant: 1 <= m <= 12 and 1 <= d <= 31.
    (y, m as u32, d as u32)
}

/// The canonical 44-byte header of an 8 kHz 16-bit stereo PCM WAV with
/// `data_len` audio bytes (saturating at the 4 GiB RIFF limit).
pub fn wav_header(data_len: u64) -> [u8; 44] {
    const MAX_DATA: u64 = (u32::MAX as u64 - 36) / FRAME_LEN * FRAME_LEN;
    // invariant: clamped to MAX_DATA, so it fits in u32.
    crate::media::wav::pcm16_header(2, 8000, data_len.min(MAX_DATA) as u32)
}

/// At start-up, before shards run: repairs every recording a killed
/// appliance left open (the journal in `<dir>/.open`), logging each with
/// its path and new length. Returns how many files were repaired (the
/// caller adds it to [`RecCounters::repaired`]). A file that cannot be
/// repaired now is logged and keeps its journal entry; a journal entry
/// naming no regular file is dropped.
pub fn repair_open_recordings(dir: &Path) -> io::Result<usize> {
    let journal = dir.join(OPEN_DIR);
    let entries = match fs::read_dir(&journal) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut repaired = 0;
    for entry in entries {
        let marker = entry?.path();
        let rel = match fs::read_to_string(&marker) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(marker = %marker.display(), error = %e, "cannot read recording journal entry");
                continue;
            }
        };
        let rel = Path::new(rel.trim_end());
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            tracing::warn!(marker = %marker.display(), "recording journal entry holds no relative path; dropped");
            remove_marker(&marker);
            continue;
        }
        let path = dir.join(rel);
        match repair_file(&path) {
            Ok(Some(data_len)) => {
                tracing::info!(
                    path = %path.display(),
                    file_len = HEADER_LEN + data_len,
                    data_len,
                    "recording left open repaired"
                );
                repaired += 1;
                remove_marker(&marker);
            }
            Ok(None) => {
                tracing::info!(path = %path.display(), "recording left open is gone or not a regular file; journal entry dropped");
                remove_marker(&marker);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot repair recording; retried at next start");
            }
        }
    }
    Ok(repaired)
}

fn remove_marker(marker: &Path) {
    if let Err(e) = fs::remove_file(marker) {
        tracing::warn!(marker = %marker.display(), error = %e, "cannot remove recording journal entry");
    }
}

/// Sets the header from the file's length, cutting a torn last frame.
/// `None` if there is no regular file at `path`.
fn repair_file(path: &Path) -> io::Result<Option<u64>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let file = OpenOptions::new().write(true).open(path)?;
    let data_len = meta.len().saturating_sub(HEADER_LEN) / FRAME_LEN * FRAME_LEN;
    if meta.len() != HEADER_LEN + data_len {
        file.set_len(HEADER_LEN + data_len)?;
    }
    file.write_all_at(&wav_header(data_len), 0)?;
    Ok(Some(data_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_2026_11_23_MS: u64 = 1_795_392_000_000;

    fn counters() -> Arc<RecCounters> {
        Arc::new(RecCounters::default())
    }

    fn cfg() -> RecConfig {
        RecConfig {
            linger: Duration::ZERO,
            ..RecConfig::default()
        }
    }

    /// Audio whose bytes name the recording and the position.
    fn audio(id: u64, offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((offset + i) as u8) ^ (id as u8).wrapping_mul(31))
            .collect()
    }

    fn open(id: u64, call_id: &str) -> RecOp {
        RecOp::Open {
            id,
            call_id: call_id.into(),
            started_unix_ms: DAY_2026_11_23_MS + 3_600_000,
        }
    }

    fn wav_path(dir: &Path, name: &str) -> PathBuf {
        dir.join("2026/11/23").join(format!("{name}.wav"))
    }

    /// Checks the header field by field and returns the data length it names.
    fn parse_wav(bytes: &[u8]) -> u64 {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(16), 16);
        assert_eq!(u16_at(20), 1, "PCM");
        assert_eq!(u16_at(22), 2, "stereo");
        assert_eq!(u32_at(24), 8000);
        assert_eq!(u32_at(28), 32_000);
        assert_eq!(u16_at(32), 4);
        assert_eq!(u16_at(34), 16);
        assert_eq!(&bytes[36..40], b"data");
        let data = u64::from(u32_at(40));
        assert_eq!(u64::from(u32_at(4)), 36 + data, "RIFF size");
        data
    }

    fn markers(dir: &Path) -> usize {
        fs::read_dir(dir.join(OPEN_DIR)).unwrap().count()
    }

    #[test]
    fn write_then_close_gives_a_wav_of_exact_length() {
        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        // The default settings: the writer polls while busy.
        let (w, sink) = start(tmp.path().into(), c.clone()).unwrap();
        assert!(sink.submit(open(7, "abc@host")));
        let chunk = 640;
        let mut expected = Vec::new();
        for i in 0..125u64 {
            let bytes = audio(7, i * chunk, chunk as usize);
            expected.extend_from_slice(&bytes);
            assert!(sink.submit(RecOp::Data {
                id: 7,
                offset: i * chunk,
                bytes,
            }));
        }
        let len = expected.len() as u64;
        assert!(sink.submit(RecOp::Close {
            id: 7,
            data_len: len
        }));
        w.stop();
        let bytes = fs::read(wav_path(tmp.path(), "abc@host")).unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN + len);
        assert_eq!(parse_wav(&bytes), len);
        assert_eq!(&bytes[44..], &expected[..]);
        assert_eq!(c.opened.get(), 1);
        assert_eq!(c.closed.get(), 1);
        assert_eq!(c.bytes_written.get(), len);
        assert_eq!(c.write_errors.get(), 0);
        assert_eq!(markers(tmp.path()), 0, "journal entry removed on Close");
    }

    #[test]
    fn many_recordings_interleaved() {
        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        let (w, sink) = start_with(tmp.path().into(), c.clone(), cfg()).unwrap();
        let n = 60u64;
        for id in 0..n {
            assert!(sink.submit(open(id, &format!("call-{id}"))));
        }
        // Recording `id` gets `id + 1` chunks; all interleaved round robin.
        let chunk = 3200u64;
        for round in 0..n {
            for id in round..n {
                let offset = round * chunk;
                assert!(sink.submit(RecOp::Data {
                    id,
                    offset,
                    bytes: audio(id, offset, chunk as usize),
                }));
            }
        }
        for id in 0..n {
            assert!(sink.submit(RecOp::Close {
                id,
                data_len: (id + 1) * chunk,
            }));
        }
        w.stop();
        for id in 0..n {
            let bytes = fs::read(wav_path(tmp.path(), &format!("call-{id}"))).unwrap();
            let len = (id + 1) * chunk;
            assert_eq!(parse_wav(&bytes), len, "recording {id}");
            assert_eq!(&bytes[44..], &audio(id, 0, len as usize)[..]);
        }
        assert_eq!(c.closed.get(), n);
        assert_eq!(c.write_errors.get(), 0);
        assert_eq!(markers(tmp.path()), 0);
    }

    #[test]
    fn killed_writer_leaves_playable_files_and_repair_fixes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        let (w, sink) = start_with(tmp.path().into(), c.clone(), cfg()).unwrap();
        assert!(sink.submit(open(1, "killed")));
        let chunk = 640u64;
        let len = 75 * chunk; // 1.5 s
        for i in 0..75 {
            assert!(sink.submit(RecOp::Data {
                id: 1,
                offset: i * chunk,
                bytes: audio(1, i * chunk, chunk as usize),
            }));
        }
        drop(w); // no stop: as if the process were killed after the writes
        let path = wav_path(tmp.path(), "killed");
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN + len);
        let header = parse_wav(&bytes);
        assert!(
            header + BYTES_PER_SECOND > len,
            "header {header} over a second behind"
        );
        assert_eq!(markers(tmp.path()), 1);

        // A torn last frame, as a kill mid-write leaves it.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, &[9, 9]))
            .unwrap();

        assert_eq!(repair_open_recordings(tmp.path()).unwrap(), 1);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN + len, "torn frame cut");
        assert_eq!(parse_wav(&bytes), len);
        assert_eq!(&bytes[44..], &audio(1, 0, len as usize)[..]);
        assert_eq!(markers(tmp.path()), 0);
        assert_eq!(
            repair_open_recordings(tmp.path()).unwrap(),
            0,
            "nothing left"
        );
    }

    #[test]
    fn repair_handles_short_missing_and_hostile_journal_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let journal = dir.join(OPEN_DIR);
        fs::create_dir_all(dir.join("2026/11/23")).unwrap();
        fs::create_dir_all(&journal).unwrap();
        // Killed between create and header: a 10-byte file.
        fs::write(dir.join("2026/11/23/short.wav"), [0u8; 10]).unwrap();
        fs::write(journal.join("1-short"), "2026/11/23/short.wav\n").unwrap();
        fs::write(journal.join("2-gone"), "2026/11/23/gone.wav").unwrap();
        fs::write(journal.join("3-evil"), "../outside.wav").unwrap();
        fs::write(journal.join("4-abs"), "/etc/passwd").unwrap();
        assert_eq!(repair_open_recordings(dir).unwrap(), 1);
        let bytes = fs::read(dir.join("2026/11/23/short.wav")).unwrap();
        assert_eq!(bytes.len(), 44);
        assert_eq!(parse_wav(&bytes), 0);
        assert_eq!(markers(dir), 0);
        assert_eq!(repair_open_recordings(&dir.join("nowhere")).unwrap(), 0);
    }

    #[test]
    fn disk_full_stops_only_that_recording() {
        let tmp = tempfile::tempdir().unwrap();
        let day = tmp.path().join("2026/11/23");
        fs::create_dir_all(&day).unwrap();
        std::os::unix::fs::symlink("/dev/full", day.join("full.wav")).unwrap();
        let c = counters();
        let (w, sink) = start_with(tmp.path().into(), c.clone(), cfg()).unwrap();
        assert!(sink.submit(open(1, "full")));
        assert!(sink.submit(open(2, "fine")));
        for i in 0..10u64 {
            for id in [1, 2] {
                assert!(sink.submit(RecOp::Data {
                    id,
                    offset: i * 640,
                    bytes: audio(id, i * 640, 640),
                }));
            }
        }
        assert!(sink.submit(RecOp::Close {
            id: 1,
            data_len: 6400
        }));
        assert!(sink.submit(RecOp::Close {
            id: 2,
            data_len: 6400
        }));
        w.stop();
        assert_eq!(c.write_errors.get(), 1);
        assert_eq!(c.closed.get(), 1);
        assert_eq!(
            c.bytes_written.get(),
            6400,
            "the failed recording's data was dropped"
        );
        let bytes = fs::read(wav_path(tmp.path(), "fine")).unwrap();
        assert_eq!(parse_wav(&bytes), 6400);
        assert_eq!(&bytes[44..], &audio(2, 0, 6400)[..]);
        // The failed one's entry stays for the next start, which drops it.
        assert_eq!(markers(tmp.path()), 1);
        assert_eq!(repair_open_recordings(tmp.path()).unwrap(), 0);
        assert_eq!(markers(tmp.path()), 0);
    }

    #[test]
    fn write_error_mid_recording_keeps_the_header_as_far_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        let mut book = Book::new(tmp.path().into(), c.clone());
        fs::create_dir_all(tmp.path().join(OPEN_DIR)).unwrap();
        let writes = book.handle_ops(
            [
                open(5, "mid"),
                RecOp::Data {
                    id: 5,
                    offset: 0,
                    bytes: audio(5, 0, 800),
                },
                RecOp::Data {
                    id: 5,
                    offset: 800,
                    bytes: audio(5, 800, 800),
                },
            ]
            .into_iter(),
        );
        let mut done = book.write(writes);
        done[1].result = Err(io::Error::from_raw_os_error(libc::ENOSPC));
        let headers = book.handle_written(done);
        let done = book.write(headers);
        book.handle_headers_written(done);
        assert_eq!(c.write_errors.get(), 1);
        let later = book.handle_ops(
            [
                RecOp::Data {
                    id: 5,
                    offset: 1600,
                    bytes: audio(5, 1600, 800),
                },
                RecOp::Close {
                    id: 5,
                    data_len: 2400,
                },
            ]
            .into_iter(),
        );
        assert!(later.is_empty(), "ops after the error are dropped");
        assert!(book.recs.is_empty(), "Close forgets the failed recording");
        let bytes = fs::read(wav_path(tmp.path(), "mid")).unwrap();
        assert_eq!(parse_wav(&bytes), 800);
        assert_eq!(markers(tmp.path()), 0);
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        let c = counters();
        let sink = RecordingSink {
            shared: Arc::new(Shared::new(2, c.clone()).unwrap()),
        };
        assert!(sink.submit(RecOp::Close { id: 1, data_len: 0 }));
        assert!(sink.clone().submit(RecOp::Close { id: 2, data_len: 0 }));
        assert!(!sink.submit(RecOp::Close { id: 3, data_len: 0 }));
        assert_eq!(c.dropped_ops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn hostile_call_ids_are_sanitized() {
        assert_eq!(
            sanitize_call_id("a84b4c76e66710@pc33.atlanta.com"),
            "a84b4c76e66710@pc33.atlanta.com"
        );
        assert_eq!(sanitize_call_id("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(sanitize_call_id(".."), "_.");
        assert_eq!(sanitize_call_id(".hidden"), "_hidden");
        assert_eq!(sanitize_call_id(""), "_");
        assert_eq!(sanitize_call_id("a/b\\c d\0é"), "a_b_c_d__");
        assert_eq!(sanitize_call_id(&"x".repeat(1000)).len(), MAX_NAME);

        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        let (w, sink) = start_with(tmp.path().into(), c.clone(), cfg()).unwrap();
        assert!(sink.submit(open(1, "../../escape")));
        assert!(sink.submit(RecOp::Close { id: 1, data_len: 0 }));
        w.stop();
        assert_eq!(
            parse_wav(&fs::read(wav_path(tmp.path(), "_._.._escape")).unwrap()),
            0
        );
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            2,
            "only 2026/ and .open/"
        );
    }

    #[test]
    fn date_directory_from_start_time_utc() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(day_dir(DAY_2026_11_23_MS), "2026/11/23");
        assert_eq!(day_dir(DAY_2026_11_23_MS + 86_400_000 - 1), "2026/11/23");
        assert_eq!(day_dir(DAY_2026_11_23_MS + 86_400_000), "2026/11/24");
        assert_eq!(day_dir(DAY_2026_11_23_MS - 1), "2026/11/22");
    }

    #[test]
    fn same_call_id_twice_a_day_keeps_both() {
        let tmp = tempfile::tempdir().unwrap();
        let (w, sink) = start_with(tmp.path().into(), counters(), cfg()).unwrap();
        for id in [1, 2] {
            assert!(sink.submit(open(id, "dup")));
            assert!(sink.submit(RecOp::Data {
                id,
                offset: 0,
                bytes: audio(id, 0, 400),
            }));
            assert!(sink.submit(RecOp::Close { id, data_len: 400 }));
        }
        w.stop();
        let first = fs::read(wav_path(tmp.path(), "dup")).unwrap();
        let second = fs::read(wav_path(tmp.path(), "dup-2")).unwrap();
        assert_eq!(&first[44..], &audio(1, 0, 400)[..]);
        assert_eq!(&second[44..], &audio(2, 0, 400)[..]);
    }

    #[test]
    fn stop_finishes_open_recordings_and_close_sets_the_final_length() {
        let tmp = tempfile::tempdir().unwrap();
        let c = counters();
        let (w, sink) = start_with(tmp.path().into(), c.clone(), cfg()).unwrap();
        assert!(sink.submit(open(1, "unclosed")));
        assert!(sink.submit(RecOp::Data {
            id: 1,
            offset: 0,
            bytes: audio(1, 0, 1000),
        }));
        // Recording 2 lost its middle Data op (queue full): Close still
        // names the full length; the hole is silence.
        assert!(sink.submit(open(2, "holes")));
        assert!(sink.submit(RecOp::Data {
            id: 2,
            offset: 0,
            bytes: audio(2, 0, 400),
        }));
        assert!(sink.submit(RecOp::Close {
            id: 2,
            data_len: 1200
        }));
        w.stop();
        assert_eq!(c.closed.get(), 2);
        assert_eq!(
            parse_wav(&fs::read(wav_path(tmp.path(), "unclosed")).unwrap()),
            1000
        );
        let holes = fs::read(wav_path(tmp.path(), "holes")).unwrap();
        assert_eq!(parse_wav(&holes), 1200);
        assert_eq!(holes.len(), 44 + 1200);
        assert!(holes[44 + 400..].iter().all(|&b| b == 0));
        assert_eq!(markers(tmp.path()), 0);
    }
}
