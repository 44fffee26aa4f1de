//! The CRM webhook worker: call records from the durable outbox
//! (`data_dir/switchboard.db`) `POST`ed to `crm.webhook.url`.
//!
//! # Contract
//! Each outbox row (written with its call record by
//! [`Store::commit_record`]) is POSTed with `Content-Type:
//! application/json`, `Idempotency-Key: <record id>` and
//! `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body>`
//! ([`sign`]). Any 2xx acknowledges: the row goes ([`Store::delivered`]).
//! Anything else — another status (redirects are not followed), a refused
//! connection, a POST that takes longer than `crm.webhook.timeout_ms` — is
//! a failed attempt: the row is retried after a capped exponential backoff
//! with equal jitter ([`Backoff`], 1 s doubling to 5 min) until
//! `crm.webhook.max_attempts` attempts have failed; then it moves to the
//! dead letters ([`Store::dead_letter`]) with its last error, and a warning
//! names the record id and why.
//!
//! The attempt count and the next attempt time live in SQLite, so retries
//! carry on across restarts and crashes: a row that was POSTed but not yet
//! marked delivered when the appliance died is POSTed again, with the same
//! `Idempotency-Key` (delivery is at least once; the CRM deduplicates by
//! key). Rows are independent: order on the wire is not guaranteed.
//!
//! # Threads
//! [`start`] runs the worker on its own thread (`crm-webhook`) with a
//! tokio current_thread runtime and its own [`Store`] connection (WAL lets
//! it share the file with the record writer). The loop: POST every due row
//! (a batch of [`BATCH`], oldest due first, [`CONCURRENCY`] at a time),
//! then sleep until the next row is due, a [`WebhookWaker::wake`] (the
//! record writer calls it after each commit) or [`Webhook::stop`] — and at
//! most [`POLL`], so a lost wake never stalls delivery. `stop` abandons an
//! in-flight POST (its row stays due) and returns within about a second.
//!
//! What to do with an attempt's outcome is the pure [`decide`], tested on
//! a virtual clock; the loop around it is thin.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::crm::retry::Backoff;
use crate::crm::sign;
use crate::store::{OutboxItem, Store, StoreError};

/// Rows taken from the outbox per pass.
pub const BATCH: u32 = 64;

/// POSTs in flight at once.
pub const CONCURRENCY: usize = 4;

/// The longest the worker sleeps without looking at the outbox.
pub const POLL: Duration = Duration::from_secs(1);

/// At most one "not delivered, will retry" line per this long.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long [`Webhook::stop`] lets the runtime's leftover tasks finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// The worker's settings (`[crm.webhook]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where records are POSTed (`http://` or `https://`).
    pub url: String,
    /// The HMAC-SHA256 key for [`sign::HEADER`].
    pub secret: String,
    /// Attempts before a record is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// How long one POST may take.
    pub timeout: Duration,
}

impl WebhookSettings {
    pub fn from_config(c: &crate::config::CrmWebhookConfig) -> Self {
        WebhookSettings {
            url: c.url.clone(),
            secret: c.secret.clone(),
            max_attempts: c.max_attempts,
            timeout: c.timeout,
        }
    }

    /// The retry policy: [`Backoff::default`]'s waits, these attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            max_attempts: self.max_attempts.max(1),
            ..Backoff::default()
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("crm.webhook.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("crm.webhook: {0}")]
    Store(#[from] StoreError),
    #[error("crm.webhook: cannot build the HTTP client: {0}")]
    Client(String),
    #[error("crm.webhook: cannot start the worker thread: {0}")]
    Thread(std::io::Error),
}

/// Delivery counters since start (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Records the CRM acknowledged (2xx).
    pub delivered: u64,
    /// Attempts that failed (each retry or dead letter counts one).
    pub failed_attempts: u64,
    /// Records given up on (moved to the dead letters).
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    wake: Notify,
    counters: Counters,
}

/// The running worker (see the module doc). Dropping it without
/// [`Webhook::stop`] also ends the thread, without waiting for it.
#[derive(Debug)]
pub struct Webhook {
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Wakes the worker (after a commit) so delivery starts at once.
#[derive(Debug, Clone)]
pub struct WebhookWaker {
    shared: Arc<Shared>,
}

impl WebhookWaker {
    /// Delivery looks at the outbox now (a wake while it is busy is kept
    /// for its next sleep).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// The worker's counters (for `/metrics`).
    pub fn stats(&self) -> WebhookStats {
        let c = &self.shared.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

impl Webhook {
    /// Ends the worker: an in-flight POST is abandoned (its row stays due)
    /// and the thread is joined, in well under a second.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn stats(&self) -> WebhookStats {
        WebhookWaker {
            shared: self.shared.clone(),
        }
        .stats()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the worker on its own thread with its own connection to
/// `data_dir`'s store. Returns once the store is open and the HTTP client
/// built (errors are returned, not logged).
pub fn start(
    settings: WebhookSettings,
    data_dir: &Path,
) -> Result<(Webhook, WebhookWaker), WebhookError> {
    let url = reqwest::Url::parse(&settings.url).map_err(|e| WebhookError::Url {
        url: settings.url.clone(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WebhookError::Url {
            url: settings.url.clone(),
            reason: "not an http:// or https:// URL".into(),
        });
    }
    let store = Store::open(data_dir)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| WebhookError::Client(error_chain(&e)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WebhookError::Client(format!("cannot build the runtime: {e}")))?;
    let shared = Arc::new(Shared {
        wake: Notify::new(),
        counters: Counters::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = Worker {
        settings,
        url,
        client,
        store,
        rng: ChaCha8Rng::seed_from_u64(clock_seed()),
        shared: shared.clone(),
        unlogged_failures: 0,
        last_failure: None,
        last_failure_log: None,
    };
    let thread = std::thread::Builder::new()
        .name("crm-webhook".into())
        .spawn(move || {
            rt.block_on(worker.run(stop_rx));
            // Abandoned POSTs and idle connections: not worth waiting for.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        })
        .map_err(WebhookError::Thread)?;
    Ok((
        Webhook {
            stop: stop_tx,
            shared: shared.clone(),
            thread: Some(thread),
        },
        WebhookWaker { shared },
    ))
}

/// What to do with an outbox row after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Acknowledged: the row goes.
    Delivered,
    /// Failed: try again at `at_ms` (unix milliseconds).
    Retry { at_ms: i64, error: String },
    /// Failed for the last time: move the row to the dead letters.
    DeadLetter { error: String },
}

/// The decision for a row that had failed `attempts` times before this
/// attempt, whose outcome (`Ok` = a 2xx, `Err` = why not) came at `now_ms`.
pub fn decide(
    attempts: u32,
    outcome: Result<(), String>,
    now_ms: i64,
    backoff: &Backoff,
    rng: &mut impl Rng,
) -> Decision {
    let error = match outcome {
        Ok(()) => return Decision::Delivered,
        Err(e) => e,
    };
    let failed = attempts.saturating_add(1);
    if backoff.gives_up(failed) {
        return Decision::DeadLetter { error };
    }
    let wait = backoff.delay(attempts, rng);
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    Decision::Retry {
        at_ms: now_ms.saturating_add(wait_ms),
        error,
    }
}

/// The worker's state, owned by its thread.
struct Worker {
    settings: WebhookSettings,
    url: reqwest::Url,
    client: reqwest::Client,
    store: Store,
    rng: ChaCha8Rng,
    shared: Arc<Shared>,
    /// Failed attempts not logged yet, the last of them, and when the last
    /// such line was logged ([`Worker::log_failures`]).
    unlogged_failures: u64,
    last_failure: Option<(String, String)>,
    last_failure_log: Option<tokio::time::Instant>,
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(url = %self.url, "CRM webhook delivery started");
        loop {
            if *stop.borrow() {
                break;
            }
            let pass = tokio::select! {
                r = self.pass() => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            let wait = match pass {
                // A full batch: there may be more due now.
                Ok(Pass::Full) => continue,
                Ok(Pass::Done) => self.until_next_due(),
                Err(e) => {
                    tracing::error!("CRM webhook: outbox unreadable, trying again: {e}");
                    POLL
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shared.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let s = &self.shared.counters;
        tracing::info!(
            delivered = s.delivered.load(Ordering::Relaxed),
            failed_attempts = s.failed_attempts.load(Ordering::Relaxed),
            dead_lettered = s.dead_lettered.load(Ordering::Relaxed),
            "CRM webhook delivery stopped"
        );
    }

    /// How long to sleep: until the earliest row is due, at most [`POLL`].
    fn until_next_due(&self) -> Duration {
        match self.store.next_due_ms() {
            Ok(Some(due)) => {
                let ms = due.saturating_sub(unix_ms()).clamp(0, 1000);
                Duration::from_millis(ms.unsigned_abs()).min(POLL)
            }
            Ok(None) => POLL,
            Err(e) => {
                tracing::error!("CRM webhook: cannot read the next due time: {e}");
                POLL
            }
        }
    }

    /// POSTs the rows due now (one batch) and records each outcome.
    async fn pass(&mut self) -> Result<Pass, StoreError> {
        let due = self.store.due(unix_ms(), BATCH)?;
        let full = due.len() >= BATCH as usize;
        let mut pending = due.into_iter();
        let mut in_flight = JoinSet::new();
        let mut tally = Tally::default();
        loop {
            while in_flight.len() < CONCURRENCY {
                let Some(item) = pending.next() else { break };
                let req = self.request(&item);
                in_flight.spawn(async move { (item, post(req).await) });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            // A panicked or cancelled task leaves its row due.
            if let Ok((item, outcome)) = joined {
                self.record(&item, outcome, &mut tally);
            }
        }
        self.log_failures(tally.retried, tally.last_failure.take());
        // A store that refuses updates leaves the rows due: do not spin on
        // them, wait for the next poll.
        Ok(if full && !tally.store_error {
            Pass::Full
        } else {
            Pass::Done
        })
    }

    /// Failed attempts are logged together, at most once per
    /// [`FAILURE_LOG_EVERY`] (the first at once): a CRM that is down for a
    /// while must not flood the log. Each is at debug level too.
    fn log_failures(&mut self, failed: u64, last: Option<(String, String)>) {
        self.unlogged_failures += failed;
        if let Some(last) = last {
            self.last_failure = Some(last);
        }
        let now = tokio::time::Instant::now();
        let due = self
            .last_failure_log
            .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY);
        if !due || self.unlogged_failures == 0 {
            return;
        }
        if let Some((record, error)) = self.last_failure.take() {
            tracing::info!(
                failed = self.unlogged_failures,
                "CRM webhook not delivered, will retry (last: record {record}: {error})"
            );
        }
        self.unlogged_failures = 0;
        self.last_failure_log = Some(now);
    }

    fn request(&self, item: &OutboxItem) -> reqwest::RequestBuilder {
        let body = item.body.clone();
        self.client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", item.record_id.as_str())
            .header(
                sign::HEADER,
                sign::signature(self.settings.secret.as_bytes(), body.as_bytes()),
            )
            .body(body)
    }

    /// Stores the decision for `item`'s attempt and counts it.
    fn record(&mut self, item: &OutboxItem, outcome: Result<(), String>, tally: &mut Tally) {
        let now = unix_ms();
        let backoff = self.settings.backoff();
        let c = &self.shared.counters;
        let decision = decide(item.attempts, outcome, now, &backoff, &mut self.rng);
        let stored = match &decision {
            Decision::Delivered => {
                c.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(record = %item.record_id, "CRM webhook delivered");
                self.store.delivered(item.id)
            }
            Decision::Retry { at_ms, error } => {
                c.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    record = %item.record_id,
                    attempt = item.attempts.saturating_add(1),
                    retry_in_ms = at_ms.saturating_sub(now),
                    "CRM webhook not delivered, will retry: {error}"
                );
                tally.retried += 1;
                tally.last_failure = Some((item.record_id.clone(), error.clone()));
                self.store.failed(item.id, *at_ms, error)
            }
            Decision::DeadLetter { error } => {
                c.failed_attempts.fetch_add(1, Ordering::Relaxed);
                c.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    record = %item.record_id,
                    attempts = item.attempts.saturating_add(1),
                    "CRM webhook given up, record moved to the dead letters: {error}"
                );
                self.store.dead_letter(item.id, now, error)
            }
        };
        if let Err(e) = stored {
            // The row stays as it was: it is tried again when due.
            tally.store_error = true;
            tracing::error!(record = %item.record_id, "CRM webhook: cannot update the outbox: {e}");
        }
    }
}

/// What happened in one pass, for its log line.
#[derive(Debug, Default)]
struct Tally {
    /// Attempts failed and rescheduled.
    retried: u64,
    /// The last of those: record id and error.
    last_failure: Option<(String, String)>,
    /// An outbox update failed.
    store_error: bool,
}

/// Whether a pass took a full batch.
enum Pass {
    Full,
    Done,
}

/// One POST: `Ok` on a 2xx, else why not.
async fn post(req: reqwest::RequestBuilder) -> Result<(), String> {
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(e) => Err(error_chain(&e)),
    }
}

/// An error and its sources on one line ("error sending request: ...:
/// Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Unix milliseconds now: the outbox's times are wall-clock times.
// The webhook worker is shell-side: it owns a thread and real time.
#[allow(clippy::disallowed_methods)]
fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A jitter seed from the clock (jitter needs spread, not secrecy).
// The webhook worker is shell-side: it owns a thread and real time.
#[allow(clippy::disallowed_methods)]
fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Truncating the nanoseconds keeps their fast-moving low bits.
    (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
// Tests read the real clock and run a real receiver on loopback.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;
    use std::time::Instant;

    use crate::store::NewRecord;

    const SEED: u64 = 0x0BAD_5EED;
    const SECRET: &str = "test-secret";
    /// The longest any wait in these tests may take.
    const HANG: Duration = Duration::from_secs(20);

    fn backoff(max_attempts: u32) -> Backoff {
        WebhookSettings {
            url: String::new(),
            secret: String::new(),
            max_attempts,
            timeout: Duration::from_secs(1),
        }
        .backoff()
    }

    #[test]
    fn webhook_decide_delivered_on_2xx() {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        assert_eq!(
            decide(5, Ok(()), 1_000, &backoff(12), &mut rng),
            Decision::Delivered
        );
    }

    #[test]
    fn webhook_decide_retries_with_growing_jittered_backoff() {
        let b = backoff(12);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let now = 1_700_000_000_000i64;
        let mut last_ceiling = 0;
        for attempts in 0..11u32 {
            let d = decide(attempts, Err("HTTP 500".into()), now, &b, &mut rng);
            let Decision::Retry { at_ms, error } = d else {
                panic!("seed {SEED:#x}: attempt {attempts}: {d:?}");
            };
            assert_eq!(error, "HTTP 500");
            let c = i64::try_from(b.ceiling(attempts).as_millis()).unwrap();
            let wait = at_ms - now;
            assert!(
                wait >= c / 2 && wait <= c,
                "seed {SEED:#x}: attempt {attempts}: wait {wait} ms not in [{}, {c}]",
                c / 2
            );
            assert!(c >= last_ceiling);
            last_ceiling = c;
        }
        // 1 s first, capped at 5 min.
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(10), Duration::from_secs(300));
    }

    #[test]
    fn webhook_decide_dead_letters_at_max_attempts() {
        let b = backoff(3);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let fail = || Err::<(), _>("timed out".to_owned());
        assert!(matches!(
            decide(0, fail(), 0, &b, &mut rng),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(1, fail(), 0, &b, &mut rng),
            Decision::Retry { .. }
        ));
        assert_eq!(
            decide(2, fail(), 0, &b, &mut rng),
            Decision::DeadLetter {
                error: "timed out".into()
            }
        );
        // A 2xx on the last attempt still counts.
        assert_eq!(decide(2, Ok(()), 0, &b, &mut rng), Decision::Delivered);
        // One attempt only: the first failure is final.
        assert!(matches!(
            decide(0, fail(), 0, &backoff(1), &mut rng),
            Decision::DeadLetter { .. }
        ));
        // max_attempts 0 (refused by the config) behaves as 1.
        assert!(matches!(
            decide(0, fail(), 0, &backoff(0), &mut rng),
            Decision::DeadLetter { .. }
        ));
    }

    /// A record failing every time, on a virtual clock: exactly
    /// max_attempts POSTs, spread as the default policy says (12 attempts:
    /// 11 waits of 0.5..1, 1..2, ..., 150..300 s).
    #[test]
    fn webhook_decide_virtual_clock_full_run() {
        let b = backoff(12);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let mut now = 0i64;
        let mut attempts = 0u32;
        let mut posts = 0;
        loop {
            posts += 1;
            match decide(attempts, Err("refused".into()), now, &b, &mut rng) {
                Decision::Retry { at_ms, .. } => {
                    assert!(at_ms > now);
                    now = at_ms;
                    attempts += 1;
                }
                Decision::DeadLetter { .. } => break,
                Decision::Delivered => unreachable!(),
            }
        }
        assert_eq!(posts, 12);
        let ceilings: i64 = (0..11)
            .map(|a| i64::try_from(b.ceiling(a).as_millis()).unwrap())
            .sum();
        assert!(
            now >= ceilings / 2 && now <= ceilings,
            "seed {SEED:#x}: {now} ms"
        );
    }

    #[test]
    fn webhook_error_chain_joins_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(WrapErr(inner));
        assert_eq!(error_chain(&outer), "wrapped: refused");
    }

    #[derive(Debug)]
    struct WrapErr(std::io::Error);
    impl std::fmt::Display for WrapErr {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for WrapErr {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn webhook_start_refuses_a_bad_url() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["", "not a url", "ftp://127.0.0.1/x"] {
            let s = WebhookSettings {
                url: url.into(),
                secret: SECRET.into(),
                max_attempts: 3,
                timeout: Duration::from_secs(1),
            };
            match start(s, dir.path()) {
                Err(WebhookError::Url { .. }) => {}
                Err(e) => panic!("{url:?}: {e}"),
                Ok(_) => panic!("{url:?} accepted"),
            }
        }
    }

    /// One request as the receiver saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A tiny HTTP/1.1 receiver on 127.0.0.1: answers each request with
    /// the next status of `script` (the last one repeats; 0 = never
    /// answer) and keeps what it saw.
    struct Receiver {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Receiver {
        fn start(script: Vec<u16>) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let status = script[n.min(script.len() - 1)];
                    n += 1;
                    let log = log.clone();
                    std::thread::spawn(move || serve(stream, status, &log));
                }
            });
            Receiver { url, seen }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn serve(stream: TcpStream, status: u16, log: &Mutex<Vec<Seen>>) {
        stream.set_read_timeout(Some(HANG)).unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        log.lock().unwrap().push(Seen { headers, body });
        if status == 0 {
            // Never answer: hold the connection until the client gives up.
            let _ = r.read(&mut [0; 1]);
            return;
        }
        let mut w = stream;
        let _ = write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    fn record(id: &str) -> NewRecord {
        NewRecord {
            id: id.into(),
            started_ms: 1_000,
            ended_ms: 2_000,
            caller: "1001".into(),
            dialled: "999".into(),
            agent: None,
            queue: None,
            disposition: None,
            json: format!(r#"{{"id":"{id}","caller":"1001"}}"#),
        }
    }

    fn settings(url: &str, max_attempts: u32, timeout: Duration) -> WebhookSettings {
        WebhookSettings {
            url: url.into(),
            secret: SECRET.into(),
            max_attempts,
            timeout,
        }
    }

    fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + HANG;
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: not within {HANG:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn webhook_end_to_end_500_is_retried_then_2xx_delivers() {
        let rx = Receiver::start(vec![500, 204]);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (hook, waker) = start(settings(&rx.url, 5, HANG), dir.path()).unwrap();
        store.commit_record(&record("rec-1")).unwrap();
        waker.wake();
        wait_until("record delivered", || {
            store.outbox_len().unwrap() == 0 && hook.stats().delivered == 1
        });
        let seen = rx.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for s in &seen {
            assert_eq!(s.body, record("rec-1").json.as_bytes());
            assert_eq!(s.header("Idempotency-Key"), Some("rec-1"));
            assert_eq!(s.header("Content-Type"), Some("application/json"));
            let sig = s.header(sign::HEADER).expect("signature header");
            assert!(sign::verify(SECRET.as_bytes(), &s.body, sig), "{sig}");
        }
        assert_eq!(
            hook.stats(),
            WebhookStats {
                delivered: 1,
                failed_attempts: 1,
                dead_lettered: 0
            }
        );
        assert!(store.dead_letters(10).unwrap().is_empty());
        hook.stop();
    }

    #[test]
    fn webhook_end_to_end_max_attempts_dead_letters() {
        let rx = Receiver::start(vec![500]);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (hook, waker) = start(settings(&rx.url, 2, HANG), dir.path()).unwrap();
        store.commit_record(&record("rec-dead")).unwrap();
        waker.wake();
        wait_until("record dead-lettered", || {
            !store.dead_letters(10).unwrap().is_empty()
        });
        let dead = store.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].item.record_id, "rec-dead");
        assert_eq!(dead[0].item.attempts, 2);
        let err = dead[0].item.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("500"), "{err}");
        assert_eq!(store.outbox_len().unwrap(), 0);
        assert_eq!(rx.seen().len(), 2);
        assert_eq!(
            hook.stats(),
            WebhookStats {
                delivered: 0,
                failed_attempts: 2,
                dead_lettered: 1
            }
        );
        hook.stop();
    }

    #[test]
    fn webhook_connection_refused_is_a_failed_attempt() {
        // A port nothing listens on: bind, note, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let url = format!("http://127.0.0.1:{port}/hook");
        let (hook, waker) = start(settings(&url, 1, HANG), dir.path()).unwrap();
        store.commit_record(&record("rec-refused")).unwrap();
        waker.wake();
        wait_until("record dead-lettered", || hook.stats().dead_lettered == 1);
        let dead = store.dead_letters(10).unwrap();
        let err = dead[0].item.last_error.as_deref().unwrap_or_default();
        assert!(err.to_lowercase().contains("refused"), "{err}");
        hook.stop();
    }

    #[test]
    fn webhook_timeout_is_a_failed_attempt_and_stop_is_prompt() {
        let rx = Receiver::start(vec![0]);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let timeout = Duration::from_millis(300);
        let (hook, waker) = start(settings(&rx.url, 10, timeout), dir.path()).unwrap();
        store.commit_record(&record("rec-slow")).unwrap();
        waker.wake();
        wait_until("a timed-out attempt", || hook.stats().failed_attempts >= 1);
        let row = store.due(i64::MAX, 10).unwrap();
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].attempts, 1);
        let err = row[0].last_error.as_deref().unwrap_or_default();
        assert!(err.contains("timed out"), "{err}");
        // The retry hangs again (within 1 s); stop abandons it at once.
        wait_until("the retry in flight", || rx.seen().len() >= 2);
        let t = Instant::now();
        hook.stop();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // The abandoned POST left the row due.
        assert_eq!(store.outbox_len().unwrap(), 1);
    }

    #[test]
    fn webhook_restart_carries_on_from_the_stored_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.commit_record(&record("rec-restart")).unwrap();
        // An earlier run failed twice.
        let id = store.due(i64::MAX, 1).unwrap()[0].id;
        store.failed(id, 0, "HTTP 503").unwrap();
        store.failed(id, 0, "HTTP 503").unwrap();
        let rx = Receiver::start(vec![500]);
        let (hook, _waker) = start(settings(&rx.url, 3, HANG), dir.path()).unwrap();
        // Due already: the first POST of this run is the third attempt.
        wait_until("record dead-lettered", || hook.stats().dead_lettered == 1);
        assert_eq!(rx.seen().len(), 1);
        assert_eq!(store.dead_letters(1).unwrap()[0].item.attempts, 3);
        hook.stop();
    }

    #[test]
    fn webhook_without_wake_polls_within_a_second() {
        let rx = Receiver::start(vec![200]);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (hook, _waker) = start(settings(&rx.url, 3, HANG), dir.path()).unwrap();
        // Let the worker find the outbox empty and go to sleep.
        std::thread::sleep(Duration::from_millis(50));
        store.commit_record(&record("rec-poll")).unwrap();
        let t = Instant::now();
        wait_until("record delivered", || hook.stats().delivered == 1);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        hook.stop();
    }
}
