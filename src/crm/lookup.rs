//! The screen-pop lookup client: who is calling?
//!
//! When a call arrives, the caller's number (E.164) and, for a customer
//! calling from someone else's phone, the account keyed in on the IVR are
//! looked up ([`LookupKey`]). [`Lookup::lookup`] answers with the
//! [`Contact`] to pop on the agent's screen, or `None`; it never fails and
//! never takes (much) longer than `crm.lookup.timeout_ms`, so a call waits at
//! most that long and then proceeds without a screen pop, at normal priority.
//!
//! Two modes, chosen by `crm.lookup.url`:
//!
//! * **Directory** (`url = ""`, [`Lookup::directory`]): the built-in
//!   [`Directory`] answers from memory. An IVR-entered account identifies the
//!   customer better than the phone they call from, so the account wins when
//!   it matches; otherwise the number.
//! * **HTTP** ([`Lookup::http`]): a `GET` on the URL template, whose
//!   placeholders `{number}` (E.164 with its `+`) and `{account}` (empty when
//!   none was keyed in) are replaced by the percent-encoded values
//!   ([`expand_template`]), with `Accept: application/json`. The answer
//!   ([`contact_from_answer`]):
//!   * a 2xx with a JSON object (or an array, whose first element counts) is
//!     a hit, its fields named by `[crm.lookup.fields]` (a name or a dotted
//!     path such as `contact.name` into nested objects);
//!   * `404`, or a 2xx with an empty body, `null` or `[]`, is a miss;
//!   * any other status, a body that is not JSON (or longer than
//!     [`MAX_BODY`]), a connection error or the timeout is a failure.
//!
//!   Hits and misses are kept `crm.lookup.cache_ttl_s` in a [`Cache`]
//!   (0 = not kept); failures are not kept. Failures feed a [`Breaker`]
//!   (default settings: 5 consecutive failures open it for 30 s); while it
//!   is open, lookups answer `None` at once without a request.
//!
//! The decisions (template expansion, mapping an answer body) are pure
//! functions; [`Lookup`] is the shell-side I/O around them and the only
//! code here that reads the clock (one small `now` function).
//!
//! Concurrency: many lookups may run at once on one (current-thread) tokio
//! runtime. The cache, breaker and counters sit behind one `std` mutex that
//! is held only for short synchronous steps, never across an `.await`; the
//! future of [`Lookup::lookup`] is `Send`.
//!
//! TLS: `https://` URLs are checked against the operating system's
//! certificate store (reqwest's `rustls-platform-verifier`, with rustls on
//! `ring`); a CRM with a private CA needs that CA in the system store.
//! Environment proxies (`HTTP_PROXY`, ...) are not used and redirects are not
//! followed: a redirect is a failure.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{CrmLookupConfig, LookupFields};
use crate::crm::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::crm::cache::Cache;
use crate::crm::directory::{Contact, Directory, E164, Tier};

/// Most answers a cache holds; at capacity the oldest is dropped.
pub const CACHE_CAPACITY: usize = 10_000;

/// Longest answer body read; a longer one is a failure. A contact is a few
/// hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// What a lookup is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    /// The caller's number, if it normalized to E.164.
    pub number: Option<E164>,
    /// The account keyed in on the IVR, if any.
    pub account: Option<String>,
}

/// Why [`Lookup::http`] refused a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("crm.lookup.url {url:?}: not a usable URL once expanded ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("crm.lookup: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why an answer body could not be mapped to a contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("answer is not JSON: {0}")]
    Json(String),
    #[error("answer is a JSON {0}, expected an object (or an array of objects)")]
    NotObject(&'static str),
    #[error("answer has no usable phone and the lookup had no number")]
    NoPhone,
}

/// Counters since the [`Lookup`] was made. Every call of
/// [`Lookup::lookup`] adds one to exactly one of `hits`, `misses`, `errors`,
/// `timeouts` and `breaker_open`; `cache_hits` counts the hits and misses
/// answered from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Answered with a contact.
    pub hits: u64,
    /// Answered "not found" (404, empty answer, not in the directory, or
    /// nothing to ask).
    pub misses: u64,
    /// Failed: a status other than 2xx/404, an unusable body, a connection
    /// error.
    pub errors: u64,
    /// Took longer than the timeout.
    pub timeouts: u64,
    /// Hits and misses that came from the cache (no request made).
    pub cache_hits: u64,
    /// Refused at once because the breaker was open.
    pub breaker_open: u64,
}

/// Answers lookups: the directory, or the CRM over HTTP.
pub struct Lookup {
    mode: Mode,
    state: Mutex<State>,
}

enum Mode {
    Directory(Arc<Directory>),
    Http(Http),
}

struct Http {
    client: reqwest::Client,
    template: String,
    timeout: Duration,
    fields: LookupFields,
    /// `None` when `cache_ttl_s` is 0.
    cache_ttl: Option<Duration>,
}

struct State {
    stats: LookupStats,
    cache: Cache<LookupKey, Option<Contact>>,
    breaker: Breaker,
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Directory(d) => format!("directory ({} contacts)", d.len()),
            Mode::Http(h) => format!("http {}", h.template),
        };
        f.debug_struct("Lookup").field("mode", &mode).finish()
    }
}

/// How one HTTP lookup ended.
enum Outcome {
    Answer(Option<Contact>),
    Failed(String),
    TimedOut,
}

impl Lookup {
    /// Lookups answered by the built-in directory (`crm.lookup.url = ""`).
    pub fn directory(dir: Arc<Directory>) -> Lookup {
        Lookup::with_mode(Mode::Directory(dir), Duration::ZERO)
    }

    /// Lookups answered by the CRM over HTTP (`crm.lookup.url` set). Refuses
    /// a template that does not make a valid `http(s)` URL once expanded.
    pub fn http(cfg: &CrmLookupConfig) -> Result<Lookup, LookupError> {
        let sample = LookupKey {
            number: E164::normalize("+15555550100"),
            account: Some("A-1001".to_owned()),
        };
        let expanded = expand_template(&cfg.url, &sample);
        let bad = |reason: String| LookupError::BadUrl {
            url: cfg.url.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&expanded).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("scheme {:?}", url.scheme())));
        }
        // Several parts of the program may install it; the first wins and
        // the others' `Err` says only that one is there already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let http = Http {
            client,
            template: cfg.url.clone(),
            timeout: cfg.timeout,
            fields: cfg.fields.clone(),
            cache_ttl: (!cfg.cache_ttl.is_zero()).then_some(cfg.cache_ttl),
        };
        Ok(Lookup::with_mode(Mode::Http(http), cfg.cache_ttl))
    }

    fn with_mode(mode: Mode, ttl: Duration) -> Lookup {
        Lookup {
            mode,
            state: Mutex::new(State {
                stats: LookupStats::default(),
                cache: Cache::new(ttl, CACHE_CAPACITY),
                breaker: Breaker::new(BreakerConfig::default()),
            }),
        }
    }

    /// The contact for `key`, or `None`. Never takes longer than the
    /// configured timeout (plus scheduling); never errors: a failure, a
    /// timeout, an open breaker or a miss all give `None` (counted in
    /// [`Lookup::stats`] and logged at debug; the breaker opening is logged
    /// at warn).
    pub async fn lookup(&self, key: &LookupKey) -> Option<Contact> {
        match &self.mode {
            Mode::Directory(dir) => {
                let found = directory_lookup(dir, key).cloned();
                let mut st = self.state();
                if found.is_some() {
                    st.stats.hits += 1;
                } else {
                    st.stats.misses += 1;
                }
                found
            }
            Mode::Http(http) => self.http_lookup(http, key).await,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> LookupStats {
        self.state().stats
    }

    /// The breaker's state (always closed in directory mode).
    pub fn breaker_state(&self) -> BreakerState {
        self.state().breaker.state()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the cache, breaker or
        // counters inconsistent beyond one lookup: keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn http_lookup(&self, http: &Http, key: &LookupKey) -> Option<Contact> {
        if key.number.is_none() && key.account.as_deref().is_none_or(|a| a.trim().is_empty()) {
            self.state().stats.misses += 1;
            return None;
        }
        // Cache, then breaker: one short step under the lock.
        {
            let now = now();
            let mut st = self.state();
            if http.cache_ttl.is_some()
                && let Some(cached) = st.cache.get(now, key).cloned()
            {
                st.stats.cache_hits += 1;
                if cached.is_some() {
                    st.stats.hits += 1;
                } else {
                    st.stats.misses += 1;
                }
                return cached;
            }
            if !st.breaker.allow(now) {
                st.stats.breaker_open += 1;
                tracing::debug!(?key, "crm lookup skipped: breaker open");
                return None;
            }
        }
        let url = expand_template(&http.template, key);
        let outcome = match tokio::time::timeout(http.timeout, fetch(http, &url, key)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::TimedOut,
        };
        let now = now();
        let mut st = self.state();
        match outcome {
            Outcome::Answer(found) => {
                st.breaker.success(now);
                if let Some(ttl) = http.cache_ttl {
                    st.cache.put_for(now, key.clone(), found.clone(), ttl);
                }
                if found.is_some() {
                    st.stats.hits += 1;
                } else {
                    st.stats.misses += 1;
                    tracing::debug!(?key, "crm lookup: not found");
                }
                found
            }
            Outcome::Failed(why) => {
                st.stats.errors += 1;
                tracing::debug!(?key, %url, error = %why, "crm lookup failed");
                fail(&mut st, now, &url);
                None
            }
            Outcome::TimedOut => {
                st.stats.timeouts += 1;
                tracing::debug!(?key, %url, timeout = ?http.timeout, "crm lookup timed out");
                fail(&mut st, now, &url);
                None
            }
        }
    }
}

/// Reports a failure to the breaker, warning when that opens it.
fn fail(st: &mut State, now: Instant, url: &str) {
    let before = st.breaker.state();
    st.breaker.failure(now);
    if before != BreakerState::Open && st.breaker.state() == BreakerState::Open {
        tracing::warn!(
            %url,
            "crm lookup breaker open: the CRM keeps failing; calls get no screen pop until a probe succeeds"
        );
    }
}

/// The clock, for the cache and the breaker.
// The lookup client is shell-side I/O (it already waits on the network);
// the cache and breaker it drives stay sans-IO and take this `now`.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// One request and its body, mapped. The caller bounds it with the timeout.
async fn fetch(http: &Http, url: &str, key: &LookupKey) -> Outcome {
    let sent = http
        .client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::TimedOut,
        Err(e) => return Outcome::Failed(error_chain(&e)),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Outcome::Answer(None);
    }
    if !status.is_success() {
        return Outcome::Failed(format!("HTTP status {status}"));
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Outcome::Failed(format!("answer longer than {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Outcome::Failed(format!("answer longer than {MAX_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Outcome::TimedOut,
            Err(e) => return Outcome::Failed(error_chain(&e)),
        }
    }
    match contact_from_answer(&body, &http.fields, key) {
        Ok(found) => Outcome::Answer(found),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// An error with its sources, `: `-separated (reqwest's own message alone
/// says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The directory's answer: the account when given and listed, else the
/// number.
pub fn directory_lookup<'d>(dir: &'d Directory, key: &LookupKey) -> Option<&'d Contact> {
    key.account
        .as_deref()
        .and_then(|a| dir.lookup_account(a))
        .or_else(|| {
            key.number
                .as_ref()
                .and_then(|n| dir.lookup_number(n.as_str()))
        })
}

/// The URL for `key`: `{number}` becomes the E.164 number with its `+` and
/// `{account}` the account (empty when absent), both percent-encoded (every
/// byte but `A-Z a-z 0-9 - . _ ~`, so `+` is `%2B` and a space `%20`).
/// Other text, braces included, is kept as is; substituted values are not
/// expanded again.
pub fn expand_template(template: &str, key: &LookupKey) -> String {
    let number = key.number.as_ref().map_or("", E164::as_str);
    let account = key.account.as_deref().unwrap_or("");
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{number}") {
            percent_encode(number, &mut out);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{account}") {
            percent_encode(account, &mut out);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Appends `value` percent-encoded (RFC 3986: all but unreserved bytes).
fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Maps a CRM's answer body (a 2xx's) to a contact.
///
/// * Empty (or only whitespace), `null`, `[]` or `[null]`: `Ok(None)`, a miss.
/// * A JSON array: its first element is the answer.
/// * A JSON object: a hit. Each field of `fields` is a key or a dotted path
///   (`contact.name`) into nested objects; a string is taken as is
///   (trimmed), a number is turned into its text, anything else (or a
///   missing field) counts as absent.
///   * `name`: empty when absent.
///   * `account`: the answer's, else the asked account, else empty.
///   * `tier`: `prospect`, `regular` or `vip` (any case); absent or
///     anything else is `prospect`, the lowest priority: an unrecognized
///     tier never jumps the queue.
///   * `phone`: the answer's when it normalizes to E.164
///     ([`E164::normalize`]), else the asked number; neither is
///     [`AnswerError::NoPhone`].
///   * `last_agent`: optional; empty is absent.
///   * `notes`: always empty (not mapped).
/// * Anything else (a string, number, bool; bad JSON, more than 128 levels
///   deep): an error.
pub fn contact_from_answer(
    body: &[u8],
    fields: &LookupFields,
    asked: &LookupKey,
) -> Result<Option<Contact>, AnswerError> {
    // ASCII whitespace around the answer (form feed included, which JSON
    // itself does not allow) is not part of it.
    let body = body.trim_ascii();
    if body.is_empty() {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| AnswerError::Json(e.to_string()))?;
    let object = match &value {
        Value::Array(items) => match items.first() {
            None | Some(Value::Null) => return Ok(None),
            Some(first) => first,
        },
        other => other,
    };
    let object = match object {
        Value::Null => return Ok(None),
        Value::Object(_) => object,
        Value::Bool(_) => return Err(AnswerError::NotObject("bool")),
        Value::Number(_) => return Err(AnswerError::NotObject("number")),
        Value::String(_) => return Err(AnswerError::NotObject("string")),
        Value::Array(_) => return Err(AnswerError::NotObject("array")),
    };
    let get = |path: &str| field_text(object, path);
    let phone = get(&fields.phone)
        .and_then(|p| E164::normalize(&p))
        .or_else(|| asked.number.clone())
        .ok_or(AnswerError::NoPhone)?;
    let tier = get(&fields.tier)
        .and_then(|t| Tier::from_str(&t).ok())
        .unwrap_or(Tier::Prospect);
    let account = get(&fields.account)
        .or_else(|| asked.account.as_ref().map(|a| a.trim().to_owned()))
        .unwrap_or_default();
    Ok(Some(Contact {
        phone,
        account,
        name: get(&fields.name).unwrap_or_default(),
        tier,
        last_agent: get(&fields.last_agent).filter(|a| !a.is_empty()),
        notes: String::new(),
    }))
}

/// The text at a dotted `path` in `value`: a string (trimmed) or a number's
/// text; `None` for anything else or a missing step.
fn field_text(value: &Value, path: &str) -> Option<String> {
    let mut at = value;
    for step in path.split('.') {
        at = at.as_object()?.get(step)?;
    }
    match at {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Response};

    fn key(number: &str, account: Option<&str>) -> LookupKey {
        LookupKey {
            number: E164::normalize(number),
            account: account.map(str::to_owned),
        }
    }

    fn fields() -> LookupFields {
        LookupFields::default()
    }

    fn answer(body: &str, asked: &LookupKey) -> Result<Option<Contact>, AnswerError> {
        contact_from_answer(body.as_bytes(), &fields(), asked)
    }

    // ---- template expansion -------------------------------------------

    #[test]
    fn lookup_template_percent_encodes_plus_and_spaces() {
        let url = expand_template(
            "http://crm.local/contacts?phone={number}&account={account}",
            &key("+815012345678", Some("A 1001/x&y")),
        );
        assert_eq!(
            url,
            "http://crm.local/contacts?phone=%2B815012345678&account=A%201001%2Fx%26y"
        );
    }

    #[test]
    fn lookup_template_without_account_or_number_leaves_them_empty() {
        let k = LookupKey {
            number: None,
            account: None,
        };
        assert_eq!(
            expand_template("http://h/c/{number}?a={account}", &k),
            "http://h/c/?a="
        );
    }

    #[test]
    fn lookup_template_keeps_other_braces_and_does_not_reexpand() {
        let k = key("+15555550100", Some("{number}"));
        assert_eq!(
            expand_template("http://h/{x}/{number}{account}{", &k),
            "http://h/{x}/%2B15555550100%7Bnumber%7D{"
        );
        assert_eq!(
            expand_template("http://h/ü?n={number}", &key("+15555550100", Some("é"))),
            "http://h/ü?n=%2B15555550100"
        );
        let mut s = String::new();
        percent_encode("é~-._", &mut s);
        assert_eq!(s, "%C3%A9~-._");
    }

    // ---- answer mapping -----------------------------------------------

    #[test]
    fn lookup_answer_maps_default_fields() {
        let asked = key("+815012345678", None);
        let c = answer(
            r#"{"name":"Hanako Yamada","account":"A-1001","tier":"VIP","last_agent":"1003","phone":"+81 50 1234 5678"}"#,
            &asked,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.name, "Hanako Yamada");
        assert_eq!(c.account, "A-1001");
        assert_eq!(c.tier, Tier::Vip);
        assert_eq!(c.last_agent.as_deref(), Some("1003"));
        assert_eq!(c.phone.as_str(), "+815012345678");
        assert_eq!(c.notes, "");
    }

    #[test]
    fn lookup_answer_follows_dotted_paths() {
        let f = LookupFields {
            name: "contact.name".into(),
            account: "contact.ids.account".into(),
            tier: "segment".into(),
            last_agent: "owner.agent".into(),
            phone: "contact.phone".into(),
        };
        let body =
            br#"{"contact":{"name":"Alice","ids":{"account":"A-2001"},"phone":"+15555550100"},
                        "segment":"regular","owner":{"agent":1002}}"#;
        let c = contact_from_answer(body, &f, &key("+15555550199", None))
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "Alice");
        assert_eq!(c.account, "A-2001");
        assert_eq!(c.tier, Tier::Regular);
        assert_eq!(c.last_agent.as_deref(), Some("1002"), "number → text");
        assert_eq!(c.phone.as_str(), "+15555550100", "answer's phone wins");
        // A path through a non-object is absent, not an error.
        let c = contact_from_answer(
            br#"{"contact":"x","owner":[1]}"#,
            &f,
            &key("+15555550199", None),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.name, "");
        assert_eq!(c.last_agent, None);
    }

    #[test]
    fn lookup_answer_array_takes_first_element() {
        let asked = key("+15555550100", None);
        let c = answer(r#"[{"name":"First"},{"name":"Second"}]"#, &asked)
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "First");
        assert_eq!(answer("[]", &asked), Ok(None));
        assert_eq!(answer("[null]", &asked), Ok(None));
        assert_eq!(answer(" null ", &asked), Ok(None));
        assert_eq!(answer("", &asked), Ok(None));
        assert_eq!(answer(" \r\n", &asked), Ok(None));
        // Whitespace JSON does not know (a form feed) around a miss: still
        // a miss (fuzz regressions/lookup_answer).
        assert_eq!(answer("[]\x0c", &asked), Ok(None));
    }

    #[test]
    fn lookup_answer_numbers_become_strings() {
        let asked = key("+15555550100", None);
        let c = answer(
            r#"{"name":42,"account":1001,"last_agent":1003.5,"phone":15555550123}"#,
            &asked,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.name, "42");
        assert_eq!(c.account, "1001");
        assert_eq!(c.last_agent.as_deref(), Some("1003.5"));
        assert_eq!(c.phone.as_str(), "+15555550123");
    }

    #[test]
    fn lookup_answer_unknown_or_missing_tier_is_prospect() {
        let asked = key("+15555550100", None);
        for body in [
            r#"{"name":"A","tier":"gold"}"#,
            r#"{"name":"A"}"#,
            r#"{"name":"A","tier":10}"#,
            r#"{"name":"A","tier":null}"#,
            r#"{"name":"A","tier":{"vip":true}}"#,
        ] {
            let c = answer(body, &asked).unwrap().unwrap();
            assert_eq!(c.tier, Tier::Prospect, "{body}");
        }
        let c = answer(r#"{"tier":" Regular "}"#, &asked).unwrap().unwrap();
        assert_eq!(c.tier, Tier::Regular);
    }

    #[test]
    fn lookup_answer_phone_and_account_fall_back_to_the_asked() {
        let asked = key("+15555550100", Some(" 1001 "));
        let c = answer(
            r#"{"name":"A","phone":"05012345678","last_agent":""}"#,
            &asked,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.phone.as_str(), "+15555550100", "national number ignored");
        assert_eq!(c.account, "1001");
        assert_eq!(c.last_agent, None, "empty is absent");
        let no_number = LookupKey {
            number: None,
            account: Some("1001".into()),
        };
        assert_eq!(
            answer(r#"{"name":"A"}"#, &no_number),
            Err(AnswerError::NoPhone)
        );
        let c = answer(r#"{"name":"A","phone":"+15555550100"}"#, &no_number)
            .unwrap()
            .unwrap();
        assert_eq!(c.phone.as_str(), "+15555550100");
    }

    #[test]
    fn lookup_answer_refuses_non_objects_and_bad_json() {
        let asked = key("+15555550100", None);
        assert!(matches!(answer("{", &asked), Err(AnswerError::Json(_))));
        assert!(matches!(
            answer("<html>", &asked),
            Err(AnswerError::Json(_))
        ));
        assert_eq!(
            answer("\"x\"", &asked),
            Err(AnswerError::NotObject("string"))
        );
        assert_eq!(answer("7", &asked), Err(AnswerError::NotObject("number")));
        assert_eq!(answer("true", &asked), Err(AnswerError::NotObject("bool")));
        assert_eq!(
            answer("[[1]]", &asked),
            Err(AnswerError::NotObject("array"))
        );
        assert_eq!(answer("[3]", &asked), Err(AnswerError::NotObject("number")));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(answer(&deep, &asked), Err(AnswerError::Json(_))));
        assert!(contact_from_answer(&[0xff, 0xfe, b'{'], &fields(), &asked).is_err());
    }

    // ---- directory mode -----------------------------------------------

    fn demo() -> Arc<Directory> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/contacts.csv");
        Arc::new(Directory::load(path).expect("the shipped directory loads"))
    }

    #[tokio::test]
    async fn lookup_directory_prefers_a_matching_account() {
        let l = Lookup::directory(demo());
        // Taro's phone, Hanako's account keyed in: the account wins.
        let c = l.lookup(&key("+815098765432", Some("1001"))).await.unwrap();
        assert_eq!(c.name, "Hanako Yamada");
        // Unknown account: the number answers.
        let c = l.lookup(&key("+815098765432", Some("9999"))).await.unwrap();
        assert_eq!(c.name, "Taro Suzuki");
        let c = l.lookup(&key("+815098765432", None)).await.unwrap();
        assert_eq!(c.name, "Taro Suzuki");
        assert!(l.lookup(&key("+19999999999", None)).await.is_none());
        let s = l.stats();
        assert_eq!((s.hits, s.misses), (3, 1));
    }

    // ---- HTTP mode against a fake CRM ----------------------------------

    /// A fake CRM on 127.0.0.1: counts requests, remembers the last
    /// path+query, and answers with `reply`.
    struct Fake {
        base: String,
        requests: Arc<AtomicUsize>,
        last: Arc<Mutex<String>>,
    }

    async fn fake<F, Fut>(reply: F) -> Fake
    where
        F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response> + Send + 'static,
    {
        let requests = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(String::new()));
        let (r, l) = (requests.clone(), last.clone());
        let app = Router::new().fallback(move |uri: Uri, headers: axum::http::HeaderMap| {
            let (r, l, reply) = (r.clone(), l.clone(), reply.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    headers.get("accept").and_then(|v| v.to_str().ok()),
                    Some("application/json")
                );
                let pq = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
                *l.lock().unwrap() = pq.clone();
                reply(pq).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake {
            base: format!("http://{addr}"),
            requests,
            last,
        }
    }

    impl Fake {
        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        fn lookup(&self, timeout_ms: u64, cache_ttl_s: u64) -> Lookup {
            Lookup::http(&CrmLookupConfig {
                url: format!(
                    "{}/contacts?phone={{number}}&account={{account}}",
                    self.base
                ),
                timeout: Duration::from_millis(timeout_ms),
                cache_ttl: Duration::from_secs(cache_ttl_s),
                fields: LookupFields::default(),
            })
            .unwrap()
        }
    }

    fn status(code: StatusCode) -> Response {
        code.into_response()
    }

    #[tokio::test]
    async fn lookup_http_hit_is_mapped_and_cached() {
        let crm = fake(|pq: String| async move {
            if pq.contains("phone=%2B815012345678") {
                (
                    [("content-type", "application/json")],
                    r#"{"name":"Hanako Yamada","account":"A-1001","tier":"vip","last_agent":"1003"}"#,
                )
                    .into_response()
            } else {
                status(StatusCode::NOT_FOUND)
            }
        })
        .await;
        let l = crm.lookup(2000, 300);
        let k = key("+815012345678", Some("A 1001"));
        let c = l.lookup(&k).await.expect("hit");
        assert_eq!(c.name, "Hanako Yamada");
        assert_eq!(c.tier, Tier::Vip);
        assert_eq!(c.phone.as_str(), "+815012345678", "the asked number");
        assert_eq!(c.last_agent.as_deref(), Some("1003"));
        assert_eq!(
            *crm.last.lock().unwrap(),
            "/contacts?phone=%2B815012345678&account=A%201001"
        );
        assert_eq!(l.lookup(&k).await, Some(c));
        assert_eq!(crm.requests(), 1, "second answer from the cache");
        let s = l.stats();
        assert_eq!((s.hits, s.cache_hits, s.misses, s.errors), (2, 1, 0, 0));
    }

    #[tokio::test]
    async fn lookup_http_404_is_a_cached_miss() {
        let crm = fake(|_| async { status(StatusCode::NOT_FOUND) }).await;
        let l = crm.lookup(2000, 300);
        let k = key("+19999999999", None);
        assert_eq!(l.lookup(&k).await, None);
        assert_eq!(l.lookup(&k).await, None);
        assert_eq!(crm.requests(), 1, "the miss was cached");
        let s = l.stats();
        assert_eq!((s.misses, s.cache_hits, s.errors), (2, 1, 0));
        assert_eq!(l.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn lookup_http_empty_answers_are_misses_and_ttl_zero_keeps_nothing() {
        let crm = fake(|pq: String| async move {
            if pq.contains("%2B1555") {
                (StatusCode::OK, "[]").into_response()
            } else {
                status(StatusCode::NO_CONTENT)
            }
        })
        .await;
        let l = crm.lookup(2000, 0);
        for n in ["+15555550100", "+815012345678", "+15555550100"] {
            assert_eq!(l.lookup(&key(n, None)).await, None);
        }
        assert_eq!(crm.requests(), 3, "cache_ttl_s = 0 keeps nothing");
        assert_eq!(l.stats().misses, 3);
    }

    #[tokio::test]
    async fn lookup_http_500_is_not_cached() {
        let crm = fake(|_| async { status(StatusCode::INTERNAL_SERVER_ERROR) }).await;
        let l = crm.lookup(2000, 300);
        let k = key("+15555550100", None);
        assert_eq!(l.lookup(&k).await, None);
        assert_eq!(l.lookup(&k).await, None);
        assert_eq!(crm.requests(), 2, "failures are not cached");
        let s = l.stats();
        assert_eq!((s.errors, s.misses, s.cache_hits), (2, 0, 0));
    }

    #[tokio::test]
    async fn lookup_http_bad_json_and_redirect_are_failures() {
        let crm = fake(|pq: String| async move {
            if pq.contains("account=json") {
                (StatusCode::OK, "<html>oops</html>").into_response()
            } else {
                (StatusCode::FOUND, [("location", "http://127.0.0.1:9/")]).into_response()
            }
        })
        .await;
        let l = crm.lookup(2000, 300);
        assert_eq!(l.lookup(&key("+15555550100", Some("json"))).await, None);
        assert_eq!(l.lookup(&key("+15555550100", Some("redir"))).await, None);
        assert_eq!(l.stats().errors, 2);
        assert_eq!(crm.requests(), 2);
    }

    #[tokio::test]
    async fn lookup_http_slow_crm_times_out() {
        let crm = fake(|_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            status(StatusCode::NOT_FOUND)
        })
        .await;
        let l = crm.lookup(100, 300);
        assert_eq!(l.lookup(&key("+15555550100", None)).await, None);
        let s = l.stats();
        assert_eq!((s.timeouts, s.misses, s.errors), (1, 0, 0));
    }

    #[tokio::test]
    async fn lookup_http_five_failures_open_the_breaker() {
        let crm = fake(|_| async { status(StatusCode::SERVICE_UNAVAILABLE) }).await;
        let l = crm.lookup(2000, 300);
        for i in 0..5 {
            assert_eq!(l.lookup(&key("+15555550100", None)).await, None, "{i}");
        }
        assert_eq!(crm.requests(), 5);
        assert_eq!(l.breaker_state(), BreakerState::Open);
        assert_eq!(l.lookup(&key("+15555550101", None)).await, None);
        assert_eq!(crm.requests(), 5, "open breaker: no request");
        let s = l.stats();
        assert_eq!((s.errors, s.breaker_open), (5, 1));
    }

    #[tokio::test]
    async fn lookup_http_connection_refused_is_a_failure() {
        // Bind then drop to get a port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let l = Lookup::http(&CrmLookupConfig {
            url: format!("http://{addr}/c/{{number}}"),
            timeout: Duration::from_millis(1000),
            cache_ttl: Duration::from_secs(300),
            fields: LookupFields::default(),
        })
        .unwrap();
        assert_eq!(l.lookup(&key("+15555550100", None)).await, None);
        let s = l.stats();
        assert_eq!(s.errors + s.timeouts, 1);
    }

    #[tokio::test]
    async fn lookup_http_with_nothing_to_ask_makes_no_request() {
        let crm = fake(|_| async { status(StatusCode::NOT_FOUND) }).await;
        let l = crm.lookup(2000, 300);
        let k = LookupKey {
            number: None,
            account: Some("  ".into()),
        };
        assert_eq!(l.lookup(&k).await, None);
        assert_eq!(crm.requests(), 0);
        assert_eq!(l.stats().misses, 1);
    }

    #[test]
    fn lookup_http_refuses_a_template_that_is_no_url() {
        for url in ["http://", "not a url {number}", "ftp://h/{number}"] {
            let e = Lookup::http(&CrmLookupConfig {
                url: url.into(),
                timeout: Duration::from_millis(300),
                cache_ttl: Duration::ZERO,
                fields: LookupFields::default(),
            })
            .unwrap_err();
            assert!(matches!(e, LookupError::BadUrl { .. }), "{url}: {e}");
        }
        let ok = Lookup::http(&CrmLookupConfig {
            url: "https://crm.example/contacts/{number}".into(),
            timeout: Duration::from_millis(300),
            cache_ttl: Duration::ZERO,
            fields: LookupFields::default(),
        });
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn lookup_future_is_send_and_lookup_is_sync() {
        fn send<T: Send>(_: &T) {}
        fn sync<T: Sync + Send>() {}
        sync::<Lookup>();
        let l = Lookup::directory(Arc::new(Directory::default()));
        let k = key("+15555550100", None);
        let fut = l.lookup(&k);
        send(&fut);
    }
}
