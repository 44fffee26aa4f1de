//! Finished call records into the store (`data_dir/switchboard.db`).
//!
//! Each shard's [`StoreSink`] logs the record's `call ended` line and hands
//! the record to the record writer thread over an unbounded channel: a
//! shard never waits for the disk, and a slow disk costs memory, not
//! records. The writer commits each record and its CRM outbox row in one
//! SQLite transaction ([`Store::commit_record`]); when that fails (disk
//! full, I/O error) it logs the record id and the error and tries the same
//! record again, keeping the order, until it goes in or the appliance
//! stops — then the records not stored are named in the log. After each
//! commit it wakes the CRM webhook worker, when there is one, so the new
//! outbox row is POSTed at once.

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};

use crate::call::record::{CallRecord, RecordSink, log_record};
use crate::call::wrapup::{Finished, Finisher};
use crate::crm::webhook::WebhookWaker;
use crate::cti::event::ToRecords;
use crate::store::{NewRecord, Store};

/// Maps the engines' instants to wall-clock milliseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    epoch: Instant,
    epoch_unix_ms: i64,
}

impl WallClock {
    /// The wall clock now, paired with `now`.
    pub fn at(now: Instant) -> WallClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        WallClock {
            epoch: now,
            epoch_unix_ms: i64::try_from(unix.as_millis()).unwrap_or(i64::MAX),
        }
    }

    pub fn unix_ms(&self, t: Instant) -> i64 {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match t.checked_duration_since(self.epoch) {
            Some(after) => self.epoch_unix_ms.saturating_add(ms(after)),
            None => self
                .epoch_unix_ms
                .saturating_sub(ms(self.epoch.saturating_duration_since(t))),
        }
    }
}

/// What the writer thread is told.
#[derive(Debug)]
pub enum WriterMsg {
    /// A call ended (from a shard).
    Record(Box<CallRecord>),
    /// A disposition or an agent's state (from the control plane).
    Cti(ToRecords),
}

/// A shard's record sink: the log line, then the writer thread.
pub struct StoreSink {
    tx: Sender<WriterMsg>,
}

impl StoreSink {
    pub fn new(tx: Sender<WriterMsg>) -> StoreSink {
        StoreSink { tx }
    }
}

impl RecordSink for StoreSink {
    fn handle_record(&mut self, record: CallRecord) {
        log_record(&record);
        if let Err(e) = self.tx.send(WriterMsg::Record(Box::new(record)))
            && let WriterMsg::Record(r) = e.0
        {
            tracing::error!(call_id = %r.call_id, "record writer gone: call record not stored");
        }
    }
}

/// The running record writer.
pub struct RecordWriter {
    thread: JoinHandle<()>,
}

/// Starts the writer thread on `store`; the returned sender is cloned into
/// every shard's [`StoreSink`] (and the control plane's dispositions).
/// Queue calls wait for their agent's wrap-up in `finisher`. The thread
/// ends once every sender is gone and what they sent is stored (or given
/// up at [`RecordWriter::stop`]). `webhook` is woken after each commit.
pub fn start(
    store: Store,
    wall: WallClock,
    finisher: Finisher,
    webhook: Option<WebhookWaker>,
) -> std::io::Result<(RecordWriter, Sender<WriterMsg>)> {
    let (tx, rx) = unbounded();
    let thread = std::thread::Builder::new()
        .name("records".into())
        .spawn(move || run(store, &rx, wall, finisher, webhook.as_ref()))?;
    Ok((RecordWriter { thread }, tx))
}

impl RecordWriter {
    /// Waits for the writer to store what the shards sent (call once every
    /// shard's sender is dropped).
    pub fn stop(self) {
        let _ = self.thread.join();
    }
}

/// The store's row for a finished interaction.
fn new_record(f: &Finished, wall: &WallClock) -> NewRecord {
    let r = &f.record;
    let started_ms = wall.unix_ms(r.started);
    let id = r.id.clone();
    let mut json = r.to_json(&id, |t| wall.unix_ms(t));
    if let serde_json::Value::Object(m) = &mut json {
        m.insert("disposition".into(), f.disposition.clone().into());
        m.insert("notes".into(), f.notes.clone().into());
        m.insert("wrap_up_ms".into(), f.wrap_up_ms.into());
    }
    NewRecord {
        id,
        started_ms,
        ended_ms: wall.unix_ms(r.ended),
        caller: r.caller.user.clone(),
        dialled: r.dialled.clone(),
        agent: r.agent().map(str::to_owned),
        queue: r.queue().map(str::to_owned),
        disposition: f.disposition.clone(),
        json: json.to_string(),
    }
}

/// Wall clock now, unix ms (the writer is shell-side: it owns a thread).
fn now_ms() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(unix.as_millis()).unwrap_or(i64::MAX)
}

/// Feeds one message to the finisher; what it finishes joins `backlog`.
fn take(
    msg: WriterMsg,
    finisher: &mut Finisher,
    backlog: &mut VecDeque<NewRecord>,
    wall: &WallClock,
) {
    let done = match msg {
        WriterMsg::Record(r) => {
            let ended = wall.unix_ms(r.ended);
            finisher.handle_record(*r, ended).into_iter().collect()
        }
        WriterMsg::Cti(ToRecords::WrapUp {
            call,
            disposition,
            notes,
        }) => {
            finisher.handle_wrap_up(&call, disposition, notes);
            Vec::new()
        }
        WriterMsg::Cti(ToRecords::Agent {
            agent,
            in_wrap_up,
            at_ms,
        }) => finisher.handle_agent(&agent, in_wrap_up, at_ms),
    };
    backlog.extend(done.iter().map(|f| new_record(f, wall)));
}

/// How long the writer waits before retrying a record the store refused.
const RETRY: Duration = Duration::from_secs(1);

fn run(
    mut store: Store,
    rx: &Receiver<WriterMsg>,
    wall: WallClock,
    mut finisher: Finisher,
    webhook: Option<&WebhookWaker>,
) {
    let mut stored = 0u64;
    // Records in finishing order, the first one refused by the store.
    let mut backlog: VecDeque<NewRecord> = VecDeque::new();
    let mut open = true;
    while open || !backlog.is_empty() {
        if backlog.is_empty() {
            // Wait for a message, or for a held record's wrap-up limit.
            let wait = finisher.poll_timeout().map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
            });
            let got = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(m) => take(m, &mut finisher, &mut backlog, &wall),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    // Stopping: records still in wrap-up end now.
                    let rest = finisher.drain(now_ms());
                    backlog.extend(rest.iter().map(|f| new_record(f, &wall)));
                }
            }
            let due = finisher.handle_timeout(now_ms());
            backlog.extend(due.iter().map(|f| new_record(f, &wall)));
        }
        while let Some(rec) = backlog.front() {
            match store.commit_record(rec) {
                Ok(()) => {
                    stored += 1;
                    backlog.pop_front();
                    if let Some(w) = webhook {
                        w.wake();
                    }
                }
                Err(e) if open => {
                    tracing::error!(record = %rec.id, waiting = backlog.len(), "call record not stored yet, retrying: {e}");
                    // Take what arrives meanwhile; notice the stop.
                    match rx.recv_timeout(RETRY) {
                        Ok(m) => take(m, &mut finisher, &mut backlog, &wall),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            let rest = finisher.drain(now_ms());
                            backlog.extend(rest.iter().map(|f| new_record(f, &wall)));
                        }
                    }
                    break;
                }
                Err(e) => {
                    // Stopping, and the store still refuses: name them all.
                    for rec in backlog.drain(..) {
                        tracing::error!(record = %rec.id, json = %rec.json, "call record lost at stop: {e}");
                    }
                }
            }
        }
    }
    tracing::info!(
        stored,
        db = %store.path().display(),
        "call records stored"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_instants_both_sides_of_its_epoch() {
        let t = Instant::now();
        let w = WallClock {
            epoch: t,
            epoch_unix_ms: 1_000_000,
        };
        assert_eq!(w.unix_ms(t + Duration::from_millis(1500)), 1_001_500);
        if let Some(before) = t.checked_sub(Duration::from_millis(250)) {
            assert_eq!(w.unix_ms(before), 999_750);
        }
    }
}
