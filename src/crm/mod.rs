//! CRM sync: screen-pop lookups and call records pushed to the CRM.
//!
//! Two flows, both off the call path's hot loop:
//!
//! * **Lookup on arrival.** When a call arrives, the caller's number (user
//!   part of From or P-Asserted-Identity, normalized to E.164) is looked up
//!   to pop the contact on the agent's screen and to raise the call's queue
//!   priority by tier. With `crm.lookup.url` empty the built-in
//!   [`directory`] (`firmware-config/contacts.csv`) answers; otherwise an
//!   HTTP `GET` on the URL template does, with a short timeout, results (hits
//!   and misses) kept in a TTL [`cache`], and a circuit [`breaker`] so a sick
//!   CRM costs nothing but a missing screen pop. [`lookup`] is the client
//!   that does either ([`Lookup`]).
//! * **Records out.** Each finished call's JSON record is written to the
//!   durable outbox in `var/switchboard.db` and `POST`ed to
//!   `crm.webhook.url` with `Idempotency-Key: <record id>` and
//!   `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body>`
//!   ([`sign`], CONTRACT "Control plane"); any 2xx acknowledges, anything
//!   else is retried per [`retry`] until given up.
//!
//! Most of this module is pure and sans-IO: the directory, the signature,
//! the retry policy, the breaker and the cache. None reads the clock or
//! draws randomness; callers pass `now` and a seeded RNG. The exceptions
//! are [`webhook`], the outbox worker: it runs on its own thread (started
//! by `shell`) with real time and HTTP, and keeps its decision (delivered,
//! retry at T, dead letter) in the pure [`webhook::decide`]; and
//! [`lookup`], the shell-side HTTP client that drives the cache and the
//! breaker (its template expansion and answer mapping are pure functions).

pub mod breaker;
pub mod cache;
pub mod directory;
pub mod lookup;
pub mod retry;
pub mod sign;
pub mod webhook;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use cache::Cache;
pub use directory::{Contact, Directory, DirectoryError, E164, Tier};
pub use lookup::{AnswerError, Lookup, LookupError, LookupKey, LookupStats};
pub use retry::Backoff;
