//! The control plane: HTTP on `cti.listen`, served by one thread running a
//! tokio runtime, off the shard cores.
//!
//! It reads what the shards publish (their counters, atomics with one
//! writer each) and never makes a shard wait: a slow or stuck HTTP client
//! costs this thread only.
//!
//! Served so far:
//! * `GET /healthz` → `200` with JSON `{"status":"ok","version":...,
//!   "shards":N,"uptime_s":S}` while the appliance runs;
//! * `GET /metrics` → the counters of every shard, summed, and the ACD's
//!   queue and agent figures (republished by the ACD thread each second),
//!   in the Prometheus text format ([`crate::stats::prometheus`]).
//!
//! CTI over WebSocket (`/v1/cti`), the REST resources and the CRM sync come
//! next (issue #6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::stats::{ShardCounters, Snapshot, prometheus};

/// What the control plane reads.
pub struct Plane {
    /// One per shard, in shard order.
    pub counters: Vec<Arc<ShardCounters>>,
    /// The ACD's latest published statistics (none before its first).
    pub acd_stats: Box<dyn Fn() -> Option<Arc<crate::acd::stats::Stats>> + Send + Sync>,
    /// When the appliance started (for `uptime_s`).
    pub started: Instant,
}

/// The running control plane; [`ControlPlane::stop`] ends it.
pub struct ControlPlane {
    thread: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CtiError {
    #[error("cti.listen {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control plane: cannot start its runtime: {0}")]
    Runtime(std::io::Error),
}

/// Binds `listen` now (so a taken port fails the start with a clear
/// error) and serves on a thread of its own.
pub fn start(listen: SocketAddr, plane: Plane) -> Result<ControlPlane, CtiError> {
    let listen_err = |source| CtiError::Listen {
        addr: listen,
        source,
    };
    let std_listener = std::net::TcpListener::bind(listen).map_err(listen_err)?;
    std_listener.set_nonblocking(true).map_err(listen_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(CtiError::Runtime)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(Arc::new(plane));
    let thread = std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("control plane: {e}");
                        return;
                    }
                };
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = served.await {
                    tracing::error!("control plane: {e}");
                }
            });
        })
        .map_err(CtiError::Runtime)?;
    tracing::info!("control plane listening on http://{listen}");
    Ok(ControlPlane {
        thread: Some(thread),
        stop: Some(stop),
    })
}

impl ControlPlane {
    /// Stops taking requests and waits for the thread.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlPlane {
    /// Dropped on a failed start: the thread ends without being waited for.
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn router(plane: Arc<Plane>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(plane)
}

async fn healthz(State(plane): State<Arc<Plane>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "shards": plane.counters.len(),
        "uptime_s": plane.started.elapsed().as_secs(),
    }))
}

async fn metrics(State(plane): State<Arc<Plane>>) -> impl IntoResponse {
    let snapshot = Snapshot::sum(plane.counters.iter().map(|c| c.as_ref()));
    let mut body = String::with_capacity(8192);
    prometheus::render(&snapshot, &mut body);
    if let Some(stats) = (plane.acd_stats)() {
        prometheus::render_acd(&stats, &mut body);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
