//! Switchboard: a contact-center telephony appliance.
//!
//! One binary, thread-per-core: each shard (see [`shell`]) owns its sockets,
//! SIP transactions and registrations; protocol logic lives in sans-IO engines
//! ([`sip`]) driven with `now` and inputs, so the same code runs in
//! production and in deterministic tests.

// Unit tests build virtual clocks from one real `Instant::now()` base.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod acd;
pub mod call;
pub mod config;
pub mod crm;
pub mod cti;
pub mod ivr;
pub mod media;
pub mod sdp;
pub mod shell;
pub mod sip;
pub mod stats;
pub mod store;
