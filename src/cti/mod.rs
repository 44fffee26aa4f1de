//! The control plane: HTTP and WebSocket on `cti.listen`, served by one
//! thread running a tokio runtime, off the shard cores.
//!
//! It never makes a shard wait: it reads what the shards publish (counters,
//! atomics with one writer each), talks to the engines over lock-free rings
//! ([`link`]), and a slow or stuck client costs this thread only.
//!
//! Served:
//! * `GET /healthz` → `200` with JSON `{"status":"ok","version":...,
//!   "shards":N,"uptime_s":S}` while the appliance runs;
//! * `GET /metrics` → the counters of every shard, summed, the ACD's queue
//!   and agent figures and the CTI figures, in the Prometheus text format
//!   ([`crate::stats::prometheus`]);
//! * `GET /v1/cti` → the CTI WebSocket ([`proto`], docs/cti.md);
//! * `POST /v1/cti/{command}` → the same commands over REST;
//! * `GET /v1/calls`, `/v1/calls/{id}`, `/v1/recordings/{id}`,
//!   `/v1/agents`, `/v1/queues`, `/v1/outbox` → [`rest`].
//!
//! Every `/v1` request needs `Authorization: Bearer <token>` ([`auth`]).

pub mod auth;
pub mod event;
pub mod hub;
pub mod link;
pub mod proto;
mod rest;
mod server;

pub use server::{ControlPlane, CtiError, CtiSetup, Plane, start};
