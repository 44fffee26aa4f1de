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
use crate::crm::webhook::WebhookWaker;
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

/// A shard's record sink: the log line, then the writer thread.
pub struct StoreSink {
    tx: Sender<CallRecord>,
}

impl StoreSink {
    pub fn new(tx: Sender<CallRecord>) -> StoreSink {
        StoreSink { tx }
    }
}

impl RecordSink for StoreSink {
    fn handle_record(&mut self, record: CallRecord) {
        log_record(&record);
        if let Err(e) = self.tx.send(record) {
            tracing::error!(call_id = %e.0.call_id, "record writer gone: call record not stored");
        }
    }
}

/// The running record writer.
pub struct RecordWriter {
    thread: JoinHandle<()>,
}

/// Starts the writer thread on `store`; the returned sender is cloned into
/// every shard's [`StoreSink`]. The thread ends once every sender is gone
/// and what they sent is stored (or given up at [`RecordWriter::stop`]).
/// `webhook` is woken after each commit.
pub fn start(
    store: Store,
    wall: WallClock,
    webhook: Option<WebhookWaker>,
) -> std::io::Result<(RecordWriter, Sender<CallRecord>)> {
    let (tx, rx) = unbounded();
    let thread = std::thread::Builder::new()
        .name("records".into())
        .spawn(move || run(store, &rx, wall, webhook.as_ref()))?;
    Ok((RecordWriter { thread }, tx))
}

impl RecordWriter {
    /// Waits for the writer to store what the shards sent (call once every
    /// shard's sender is dropped).
    pub fn stop(self) {
        let _ = self.thread.join();
    }
}

/// The store's row for `r`.
fn new_record(r: &CallRecord, wall: &WallClock) -> NewRecord {
    let started_ms = wall.unix_ms(r.started);
    let id = r.id.clone();
    let json = r.to_json(&id, |t| wall.unix_ms(t)).to_string();
    NewRecord {
        id,
        started_ms,
        ended_ms: wall.unix_ms(r.ended),
        caller: r.caller.user.clone(),
        dialled: r.dialled.clone(),
        agent: r.agent().map(str::to_owned),
        queue: r.queue().map(str::to_owned),
        disposition: None,
        json,
    }
}

/// How long the writer waits before retrying a record the store refused.
const RETRY: Duration = Duration::from_secs(1);

fn run(
    mut store: Store,
    rx: &Receiver<CallRecord>,
    wall: WallClock,
    webhook: Option<&WebhookWaker>,
) {
    let mut stored = 0u64;
    // Records in arrival order, the first one refused by the store.
    let mut backlog: VecDeque<NewRecord> = VecDeque::new();
    let mut open = true;
    while open || !backlog.is_empty() {
        if backlog.is_empty() {
            match rx.recv() {
                Ok(r) => backlog.push_back(new_record(&r, &wall)),
                Err(_) => open = false,
            }
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
                        Ok(r) => backlog.push_back(new_record(&r, &wall)),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
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
