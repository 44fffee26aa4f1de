//! The embedded store: call detail records (CDRs), the CRM outbox and its
//! dead letters, in one SQLite database (`data_dir/switchboard.db`).
//!
//! # What it owns
//! * `calls`: one row per finished interaction, keyed by its record id, with
//!   the columns the REST API filters on and the whole record as JSON.
//! * `outbox`: webhook bodies still to POST to the CRM, with their attempt
//!   count, next attempt time and last error.
//! * `dead_letters`: outbox rows given up on, kept for the operator.
//!
//! # How it is driven
//! A plain blocking library, used from the control-plane thread and never
//! from a shard (a commit waits for the disk). It never reads the clock:
//! every time (`*_ms`, unix milliseconds) is an input. The caller's loop:
//! 1. When an interaction ends, [`Store::commit_record`] writes the call row
//!    AND its outbox row in one transaction (a crash leaves both or
//!    neither). Committing the same record id again is a no-op, so a retried
//!    commit never queues a second webhook.
//! 2. [`Store::due`] lists outbox rows whose time has come (oldest first);
//!    for each POST the caller reports [`Store::delivered`] (the row goes),
//!    [`Store::failed`] (attempts + 1, retried at the time it gives) or
//!    [`Store::dead_letter`] (moved to `dead_letters` in one transaction).
//!    [`Store::next_due_ms`] says when to look again.
//! 3. The REST API reads with [`Store::list_calls`] (a [`CallFilter`]) and
//!    [`Store::get_call`]; operators see [`Store::dead_letters`] and
//!    [`Store::outbox_len`].
//!
//! # Durability
//! [`Store::open`] sets `journal_mode=WAL` and `synchronous=NORMAL`. In WAL
//! mode a commit appends to `switchboard.db-wal` and, with NORMAL, returns
//! without an fsync (the WAL is fsynced at each checkpoint). That is
//! durable across a process crash (kill -9, a panic, the OOM killer): the
//! committed pages are in the OS page cache and the next open replays the
//! WAL. A power cut or kernel crash may lose the transactions committed
//! since the WAL was last fsynced (at the last checkpoint, every ~1000
//! pages), never corrupt the database. FULL would fsync on every commit: one
//! commit per ended call at hundreds of calls/s would put as many fsyncs on
//! the control-plane thread, milliseconds each on eMMC/SD-class appliance
//! storage; NORMAL keeps commits at page-cache speed and the appliance's
//! power-loss story is the UPS, not the fsync. A deployment that wants
//! power-cut durability per call would switch [`SYNCHRONOUS`] to FULL (or
//! batch commits) without any schema change.
//!
//! `foreign_keys=ON` makes every outbox and dead-letter row point at a call.
//! WAL readers never block the writer; the busy timeout ([`BUSY_TIMEOUT`])
//! covers the rest (an operator's `sqlite3` writing or checkpointing, two
//! opens racing to create the schema).
//!
//! # Schema and migrations
//! `PRAGMA user_version` holds the schema version ([`SCHEMA_VERSION`]); an
//! empty file is created at version 1 in one transaction; a file from a
//! newer build is refused ([`StoreError::NewerSchema`]) rather than guessed
//! at. A file that is not an SQLite database is refused with an error
//! naming it, never a panic.
//!
//! Crash recovery is tested here by reopening the files exactly as a commit
//! left them (without closing the connection); a real kill -9 of the
//! appliance is covered by the CTI issue's integration test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

#[cfg(test)]
mod tests;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "switchboard.db";

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA synchronous` (see the module doc, Durability).
pub const SYNCHRONOUS: &str = "NORMAL";

/// How long a statement waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The version 1 schema.
const SCHEMA_V1: &str = "
CREATE TABLE calls (
    id          TEXT PRIMARY KEY NOT NULL,
    started_ms  INTEGER NOT NULL,
    ended_ms    INTEGER NOT NULL,
    caller      TEXT NOT NULL,
    dialled     TEXT NOT NULL,
    agent       TEXT,
    queue       TEXT,
    disposition TEXT,
    record      TEXT NOT NULL
);
CREATE INDEX calls_ended   ON calls (ended_ms, id);
CREATE INDEX calls_agent   ON calls (agent, ended_ms, id);
CREATE INDEX calls_queue   ON calls (queue, ended_ms, id);
CREATE INDEX calls_caller  ON calls (caller, ended_ms, id);
CREATE INDEX calls_dialled ON calls (dialled, ended_ms, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id       TEXT NOT NULL REFERENCES calls (id),
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL
);
CREATE INDEX outbox_due    ON outbox (next_attempt_ms, id);
CREATE INDEX outbox_record ON outbox (record_id);

CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY,
    record_id       TEXT NOT NULL REFERENCES calls (id),
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    failed_ms       INTEGER NOT NULL
);
CREATE INDEX dead_letters_failed ON dead_letters (failed_ms, id);
CREATE INDEX dead_letters_record ON dead_letters (record_id);
";

/// Columns of `outbox` in [`OutboxItem`] order.
const OUTBOX_COLUMNS: &str =
    "id, record_id, body, attempts, next_attempt_ms, last_error, created_ms";

/// Columns of `calls` in [`CallRow`] order.
const CALL_COLUMNS: &str =
    "id, started_ms, ended_ms, caller, dialled, agent, queue, disposition, record";

/// What went wrong; every variant names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: journal_mode is {mode:?}, expected \"wal\" (does the filesystem support shared memory?)"
    )]
    NotWal { path: PathBuf, mode: String },
    #[error(
        "{path}: schema version {found} is newer than this build's {supported}; refusing to open it"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path}: record {id}: body is not valid JSON: {source}")]
    InvalidJson {
        path: PathBuf,
        id: String,
        source: serde_json::Error,
    },
    #[error("{path}: no outbox row {id}")]
    NoSuchOutboxRow { path: PathBuf, id: OutboxId },
}

/// The id of an outbox row (kept when it moves to `dead_letters`). Never
/// reused (`AUTOINCREMENT`): a late report about a delivered row cannot hit
/// a newer one, and a dead letter's id never collides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId(pub i64);

impl std::fmt::Display for OutboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A finished interaction to commit ([`Store::commit_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The record id: unique per interaction, and the webhook's idempotency
    /// key.
    pub id: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub caller: String,
    pub dialled: String,
    pub agent: Option<String>,
    pub queue: Option<String>,
    pub disposition: Option<String>,
    /// The whole record as JSON: stored in `calls.record` and as the
    /// outbox body to POST.
    pub json: String,
}

/// An outbox row: a webhook body to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: OutboxId,
    pub record_id: String,
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// The record's `ended_ms` (the store does not read the clock).
    pub created_ms: i64,
}

/// A dead letter: an outbox row given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub item: OutboxItem,
    pub failed_ms: i64,
}

/// A stored call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub id: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub caller: String,
    pub dialled: String,
    pub agent: Option<String>,
    pub queue: Option<String>,
    pub disposition: Option<String>,
    pub record: serde_json::Value,
}

/// Which calls [`Store::list_calls`] returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Calls that ended at or after this time.
    pub since_ms: Option<i64>,
    pub agent: Option<String>,
    pub queue: Option<String>,
    /// Matches the caller or the dialled number (exactly).
    pub number: Option<String>,
    /// At most this many rows.
    pub limit: u32,
}

/// The open database (see the module doc).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `data_dir/switchboard.db`, sets the
    /// pragmas and creates or checks the schema.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let sqlite = |what| {
            let path = path.clone();
            move |source| StoreError::Sqlite { path, what, source }
        };
        let conn = Connection::open(&path).map_err(sqlite("open the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("set the busy timeout"))?;
        // The first statement that reads the file: a non-SQLite file fails
        // here with "file is not a database".
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite(
                "read the schema version (is it an SQLite database?)",
            ))?;
        let mode = wal_mode(&conn).map_err(sqlite("set journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { path, mode });
        }
        conn.pragma_update(None, "synchronous", SYNCHRONOUS)
            .map_err(sqlite("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite("enable foreign keys"))?;
        // Every list_calls filter combination is its own statement.
        conn.set_prepared_statement_cache_capacity(32);
        let mut store = Store { conn, path };
        store.migrate(version)?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
        let path = self.path.clone();
        move |source| StoreError::Sqlite { path, what, source }
    }

    fn migrate(&mut self, version: i64) -> Result<(), StoreError> {
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // version 0: a new file. Future versions add `if version < N` steps
        // here, each in the same transaction as its user_version bump. The
        // write lock is taken first and the version read again, so a second
        // process opening the same new file waits and then finds it done.
        let fail = self.err("create the schema");
        let tx = match self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return Err(fail(e)),
        };
        let r = tx
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .and_then(|v| {
                if v == 0 {
                    tx.execute_batch(SCHEMA_V1)?;
                    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                }
                Ok(())
            })
            .and_then(|()| tx.commit());
        r.map_err(fail)
    }

    /// Commits a finished interaction: its `calls` row and its outbox row
    /// (body = `json`, attempts 0, due at `ended_ms`) in one transaction.
    /// A record id already stored is left alone (Ok, no second outbox row).
    pub fn commit_record(&mut self, rec: &NewRecord) -> Result<(), StoreError> {
        if let Err(source) = serde_json::from_str::<serde::de::IgnoredAny>(&rec.json) {
            return Err(StoreError::InvalidJson {
                path: self.path.clone(),
                id: rec.id.clone(),
                source,
            });
        }
        let fail = self.err("commit a call record");
        let r = (|| {
            let tx = self.conn.transaction()?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO calls (id, started_ms, ended_ms, caller, dialled, agent, queue, \
                     disposition, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    rec.id,
                    rec.started_ms,
                    rec.ended_ms,
                    rec.caller,
                    rec.dialled,
                    rec.agent,
                    rec.queue,
                    rec.disposition,
                    rec.json,
                ])?;
            if inserted == 1 {
                tx.prepare_cached(
                    "INSERT INTO outbox (record_id, body, attempts, next_attempt_ms, created_ms) \
                     VALUES (?1, ?2, 0, ?3, ?3)",
                )?
                .execute(params![rec.id, rec.json, rec.ended_ms])?;
            }
            tx.commit()
        })();
        r.map_err(fail)
    }

    /// Outbox rows due at `now_ms` (`next_attempt_ms <= now_ms`), at most
    /// `limit`, earliest due first (then oldest row first).
    pub fn due(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE next_attempt_ms <= ?1 \
             ORDER BY next_attempt_ms, id LIMIT ?2"
        );
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![now_ms, i64::from(limit)], outbox_item)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        r.map_err(self.err("list due outbox rows"))
    }

    /// When the earliest outbox row is due; `None` when the outbox is empty.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let r = (|| {
            self.conn
                .prepare_cached("SELECT MIN(next_attempt_ms) FROM outbox")?
                .query_row([], |r| r.get(0))
        })();
        r.map_err(self.err("read the next due time"))
    }

    /// The CRM took the webhook: the outbox row goes.
    pub fn delivered(&mut self, id: OutboxId) -> Result<(), StoreError> {
        let r = (|| {
            self.conn
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute([id.0])
        })();
        let n = r.map_err(self.err("delete a delivered outbox row"))?;
        self.one_row(n, id)
    }

    /// An attempt failed: counts it, records `error` and retries at
    /// `next_attempt_ms`.
    pub fn failed(
        &mut self,
        id: OutboxId,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let r = (|| {
            self.conn
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, \
                     last_error = ?3 WHERE id = ?1",
                )?
                .execute(params![id.0, next_attempt_ms, error])
        })();
        let n = r.map_err(self.err("reschedule a failed outbox row"))?;
        self.one_row(n, id)
    }

    /// Gives up on an outbox row after a failed attempt (counted, with its
    /// `error`): moves it to `dead_letters` in one transaction.
    pub fn dead_letter(
        &mut self,
        id: OutboxId,
        now_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let fail = self.err("move an outbox row to dead_letters");
        let r = (|| {
            let tx = self.conn.transaction()?;
            let moved = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (id, record_id, body, attempts, next_attempt_ms, \
                     last_error, created_ms, failed_ms) \
                     SELECT id, record_id, body, attempts + 1, next_attempt_ms, ?2, created_ms, ?3 \
                     FROM outbox WHERE id = ?1",
                )?
                .execute(params![id.0, error, now_ms])?;
            tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute([id.0])?;
            tx.commit()?;
            Ok(moved)
        })();
        let n = r.map_err(fail)?;
        self.one_row(n, id)
    }

    /// The newest `limit` dead letters, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS}, failed_ms FROM dead_letters \
             ORDER BY failed_ms DESC, id DESC LIMIT ?1"
        );
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([i64::from(limit)], |r| {
                Ok(DeadLetter {
                    item: outbox_item(r)?,
                    failed_ms: r.get(7)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        r.map_err(self.err("list dead letters"))
    }

    /// How many webhooks wait in the outbox.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let r = (|| {
            self.conn
                .prepare_cached("SELECT COUNT(*) FROM outbox")?
                .query_row([], |r| r.get::<_, i64>(0))
        })();
        let n = r.map_err(self.err("count outbox rows"))?;
        // invariant: COUNT(*) is never negative.
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Calls matching `filter`, newest (by `ended_ms`) first.
    pub fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRow>, StoreError> {
        let limit = i64::from(filter.limit);
        let (sql, args) = list_calls_query(filter, &limit);
        let rows = (|| {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args.as_slice(), raw_call)?;
            rows.collect::<Result<Vec<_>, _>>()
        })();
        let rows = rows.map_err(self.err("list calls"))?;
        rows.into_iter().map(|raw| self.call_row(raw)).collect()
    }

    /// The call with record id `id`.
    pub fn get_call(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1");
        let raw = (|| {
            self.conn
                .prepare_cached(&sql)?
                .query_row([id], raw_call)
                .optional()
        })();
        let raw = raw.map_err(self.err("read a call"))?;
        raw.map(|raw| self.call_row(raw)).transpose()
    }

    fn one_row(&self, changed: usize, id: OutboxId) -> Result<(), StoreError> {
        if changed == 0 {
            return Err(StoreError::NoSuchOutboxRow {
                path: self.path.clone(),
                id,
            });
        }
        Ok(())
    }

    fn call_row(&self, (mut row, json): (CallRow, String)) -> Result<CallRow, StoreError> {
        row.record = serde_json::from_str(&json).map_err(|source| StoreError::InvalidJson {
            path: self.path.clone(),
            id: row.id.clone(),
            source,
        })?;
        Ok(row)
    }
}

/// The statement and named arguments for [`Store::list_calls`]: one
/// statement per combination of filters (each cached), so every
/// combination can use its index.
fn list_calls_query<'a>(
    filter: &'a CallFilter,
    limit: &'a i64,
) -> (String, Vec<(&'static str, &'a dyn rusqlite::ToSql)>) {
    let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1");
    let mut args: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":limit", limit)];
    if let Some(since) = &filter.since_ms {
        sql.push_str(" AND ended_ms >= :since");
        args.push((":since", since));
    }
    if let Some(agent) = &filter.agent {
        sql.push_str(" AND agent = :agent");
        args.push((":agent", agent));
    }
    if let Some(queue) = &filter.queue {
        sql.push_str(" AND queue = :queue");
        args.push((":queue", queue));
    }
    if let Some(number) = &filter.number {
        sql.push_str(" AND (caller = :number OR dialled = :number)");
        args.push((":number", number));
    }
    sql.push_str(" ORDER BY ended_ms DESC, id DESC LIMIT :limit");
    (sql, args)
}

fn outbox_item(r: &Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: OutboxId(r.get(0)?),
        record_id: r.get(1)?,
        body: r.get(2)?,
        attempts: r.get(3)?,
        next_attempt_ms: r.get(4)?,
        last_error: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

/// A call row with its record still as text (parsed by `Store::call_row`).
fn raw_call(r: &Row<'_>) -> rusqlite::Result<(CallRow, String)> {
    Ok((
        CallRow {
            id: r.get(0)?,
            started_ms: r.get(1)?,
            ended_ms: r.get(2)?,
            caller: r.get(3)?,
            dialled: r.get(4)?,
            agent: r.get(5)?,
            queue: r.get(6)?,
            disposition: r.get(7)?,
            record: serde_json::Value::Null,
        },
        r.get(8)?,
    ))
}

/// Pause between tries of [`wal_mode`].
const WAL_RETRY: Duration = Duration::from_millis(10);

/// Sets `journal_mode=WAL` and returns the mode now in force. Two
/// connections switching a new file at once: SQLite answers one of them
/// `SQLITE_BUSY` at once, without its busy handler (waiting could
/// deadlock), so this waits and tries again itself, for up to
/// [`BUSY_TIMEOUT`] like any other busy statement.
// The store runs on its own threads, never a shard's: waiting is what the
// busy handler would do too.
#[allow(clippy::disallowed_methods)]
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let tries = BUSY_TIMEOUT.as_millis() / WAL_RETRY.as_millis();
    let mut tried = 0;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tried < tries =>
            {
                tried += 1;
                std::thread::sleep(WAL_RETRY);
            }
            other => return other,
        }
    }
}
