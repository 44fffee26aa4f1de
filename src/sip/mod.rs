//! The SIP core (RFC 3261), sans-IO: message parsing and building, framing,
//! transactions (§17), digest authentication, the registrar and the endpoint
//! that ties them together. Nothing here reads a clock or touches a socket;
//! the shard shell feeds datagrams, stream bytes and timer expiries in and
//! executes what comes out.

pub mod auth;
pub mod build;
pub mod endpoint;
pub mod framing;
pub mod grammar;
pub mod ids;
pub mod message;
pub mod registrar;
pub mod transaction;
