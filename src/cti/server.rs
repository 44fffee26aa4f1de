//! The control plane's thread, its HTTP routes and the CTI WebSocket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::auth::{Scope, Tokens};
use super::event::{CallCommand, CallOp, ToControl, ToRecords};
use super::hub::{CLIENT_QUEUE, Hub, SHARD_REPLY_TIMEOUT};
use super::link::{CtiLink, POLL_EVERY};
use super::proto::{
    self, Command, ErrorCode, ProtoError, WantedState, error_reply, ok_reply, parse_request,
};
use crate::acd::{self, AgentId, AgentOp, AgentState};
use crate::config::CtiToken;
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

/// What CTI needs besides the [`Plane`].
pub struct CtiSetup {
    pub tokens: Vec<CtiToken>,
    /// PEM certificate chain and key: HTTPS/WSS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_message_bytes: usize,
    pub link: Arc<CtiLink>,
    /// The ACD's agents (id and engine id) and queue names.
    pub agents: Vec<(String, AgentId)>,
    pub queues: Vec<String>,
    /// `node.data_dir`: the store (read here for REST) and recordings.
    pub data_dir: PathBuf,
    /// The record writer: dispositions and agent states, so that a queue
    /// call's record waits for the agent's wrap-up.
    pub records: Option<Box<dyn Fn(ToRecords) + Send + Sync>>,
    /// The CRM lookup over HTTP (`crm.lookup.url`), when screen pops come
    /// from the CRM.
    pub lookup: Option<crate::crm::lookup::Lookup>,
    /// The webhook worker's counters, when it runs.
    pub webhook: Option<crate::crm::webhook::WebhookWaker>,
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
    #[error("cti.tls_cert / cti.tls_key: {0}")]
    Tls(std::io::Error),
    #[error("control plane: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// A command waiting for its shard's answer.
type Waiting = oneshot::Sender<Result<Option<String>, ProtoError>>;

/// Shared by the routes and the ring poller.
pub(super) struct Ctx {
    pub(super) plane: Plane,
    tokens: Tokens,
    pub(super) hub: Mutex<Hub>,
    link: Arc<CtiLink>,
    agents: HashMap<String, AgentId>,
    pending: Mutex<HashMap<u64, Waiting>>,
    next_req: AtomicU64,
    next_shard: AtomicUsize,
    max_message: usize,
    pub(super) store: Mutex<Option<crate::store::Store>>,
    pub(super) data_dir: PathBuf,
    records: Option<Box<dyn Fn(ToRecords) + Send + Sync>>,
    lookup: Option<Arc<crate::crm::lookup::Lookup>>,
    webhook: Option<crate::crm::webhook::WebhookWaker>,
}

/// Wall clock, unix ms (the control plane is shell-side: it owns a thread
/// and real time).
#[allow(clippy::disallowed_methods)]
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Binds `listen` now (so a taken port fails the start with a clear
/// error) and serves on a thread of its own.
pub fn start(listen: SocketAddr, plane: Plane, setup: CtiSetup) -> Result<ControlPlane, CtiError> {
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
    let tls = match &setup.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cfg = runtime
                .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(
                    cert, key,
                ))
                .map_err(CtiError::Tls)?;
            Some(cfg)
        }
        None => None,
    };
    let store = crate::store::Store::open(&setup.data_dir)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ctx = Arc::new(Ctx {
        plane,
        tokens: Tokens::new(setup.tokens),
        hub: Mutex::new(Hub::new(
            setup.agents.iter().map(|(a, _)| a.clone()),
            setup.queues,
        )),
        link: setup.link,
        agents: setup.agents.into_iter().collect(),
        pending: Mutex::new(HashMap::new()),
        next_req: AtomicU64::new(1),
        next_shard: AtomicUsize::new(0),
        max_message: setup.max_message_bytes,
        store: Mutex::new(Some(store)),
        data_dir: setup.data_dir,
        records: setup.records,
        lookup: setup.lookup.map(Arc::new),
        webhook: setup.webhook,
    });
    let app = router(ctx.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let thread = std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(poll_rings(ctx));
                match tls {
                    Some(tls) => {
                        let handle = axum_server::Handle::new();
                        let h = handle.clone();
                        tokio::spawn(async move {
                            let _ = stopped.await;
                            h.graceful_shutdown(Some(Duration::from_secs(1)));
                        });
                        let served = axum_server::from_tcp_rustls(std_listener, tls)
                            .map(|s| s.handle(handle));
                        match served {
                            Ok(s) => {
                                if let Err(e) = s.serve(app.into_make_service()).await {
                                    tracing::error!("control plane: {e}");
                                }
                            }
                            Err(e) => tracing::error!("control plane: {e}"),
                        }
                    }
                    None => {
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
                    }
                }
            });
        })
        .map_err(CtiError::Runtime)?;
    tracing::info!("control plane listening on {scheme}://{listen}");
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

/// Largest WebSocket message read at all: bigger than
/// `cti.max_message_bytes` so that an oversized message still gets an
/// error reply; beyond this the connection (that client's only) closes.
const WS_HARD_LIMIT: usize = 16 << 20;

fn router(ctx: Arc<Ctx>) -> Router {
    let limit = ctx.max_message;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/cti", get(ws_upgrade))
        .route("/v1/cti/{command}", post(rest_command))
        .merge(super::rest::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}

/// The scope of the request's bearer token.
pub(super) fn authorize(ctx: &Ctx, headers: &HeaderMap) -> Result<Scope, ProtoError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    ctx.tokens.check(auth).ok_or_else(|| {
        ProtoError::new(
            ErrorCode::Unauthorized,
            if auth.is_none() {
                "missing Authorization: Bearer <token>"
            } else {
                "unknown token"
            },
        )
    })
}

/// An error as an HTTP response (REST).
pub(super) fn problem(e: &ProtoError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (
        status,
        Json(json!({"error": {"code": e.code.as_str(), "message": e.message}})),
    )
        .into_response();
    if e.code == ErrorCode::Unauthorized {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

async fn ws_upgrade(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let scope = match authorize(&ctx, &headers) {
        Ok(s) => s,
        Err(e) => return problem(&e),
    };
    ws.max_message_size(WS_HARD_LIMIT)
        .max_frame_size(WS_HARD_LIMIT)
        .on_upgrade(move |socket| client(ctx, scope, socket))
}

/// One WebSocket client: requests in, replies and events out (through one
/// queue, so a reply never overtakes the events before it).
async fn client(ctx: Arc<Ctx>, scope: Scope, socket: WebSocket) {
    use futures_util::{SinkExt, StreamExt};
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(CLIENT_QUEUE);
    let id = lock(&ctx.hub).connect(scope.clone(), tx.clone());
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(msg) = stream.next().await {
        let bytes: Bytes = match msg {
            Ok(Message::Text(t)) => Bytes::from(t),
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let reply = if bytes.len() > ctx.max_message {
            error_reply(
                &Value::Null,
                &ProtoError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "message of {} bytes; cti.max_message_bytes is {}",
                        bytes.len(),
                        ctx.max_message
                    ),
                ),
            )
        } else {
            match parse_request(&bytes) {
                Ok(req) => match execute(&ctx, &scope, Some(id), req.command).await {
                    Ok(extra) => ok_reply(&req.id, extra),
                    Err(e) => error_reply(&req.id, &e),
                },
                Err((rid, e)) => error_reply(&rid, &e),
            }
        };
        if tx.send(Utf8Bytes::from(reply.to_string())).await.is_err() {
            break;
        }
    }
    lock(&ctx.hub).disconnect(id);
    drop(tx);
    let _ = writer.await;
}

/// `POST /v1/cti/{command}`: the body holds the command's fields.
async fn rest_command(
    State(ctx): State<Arc<Ctx>>,
    Path(command): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scope = match authorize(&ctx, &headers) {
        Ok(s) => s,
        Err(e) => return problem(&e),
    };
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return problem(&ProtoError::new(
                    ErrorCode::BadJson,
                    "expected a JSON object",
                ));
            }
            Err(e) => {
                return problem(&ProtoError::new(
                    ErrorCode::BadJson,
                    format!("not JSON: {e}"),
                ));
            }
        }
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let result = match proto::parse_command(&command, obj) {
        Ok(cmd) => execute(&ctx, &scope, None, cmd).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(extra) => Json(ok_reply(&id, extra)).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, Json(error_reply(&id, &e))).into_response()
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it cannot leave the hub half-updated in a way
    // that matters more than stopping CTI: carry on with its data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable() -> ProtoError {
    ProtoError::new(
        ErrorCode::Unavailable,
        "the appliance is busy or stopping; try again",
    )
}

/// Carries out one command for a client with `scope`.
async fn execute(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    client: Option<u64>,
    cmd: Command,
) -> Result<Map<String, Value>, ProtoError> {
    let none = Map::new();
    match cmd {
        Command::AgentLogin { agent } => agent_op(ctx, scope, &agent, AgentOp::Login).map(|_| none),
        Command::AgentLogout { agent } => {
            agent_op(ctx, scope, &agent, AgentOp::Logout).map(|_| none)
        }
        Command::AgentSetState {
            agent,
            state,
            reason,
        } => {
            let op = match state {
                WantedState::Ready => AgentOp::Ready,
                WantedState::NotReady => AgentOp::NotReady { reason },
            };
            agent_op(ctx, scope, &agent, op).map(|_| none)
        }
        Command::CallMake { agent, to, data } => {
            lock(&ctx.hub).agent_for(scope, &agent)?;
            let shards = ctx.link.shards().max(1);
            let shard = ctx.next_shard.fetch_add(1, Ordering::Relaxed) % shards;
            let call = to_shard(ctx, shard, 0, CallOp::Make { agent, to, data }).await?;
            let mut m = Map::new();
            m.insert("call".into(), call.unwrap_or_default().into());
            Ok(m)
        }
        Command::CallAnswer { call } => call_op(ctx, scope, &call, CallOp::Answer).await,
        Command::CallHangup { call } => call_op(ctx, scope, &call, CallOp::Hangup).await,
        Command::CallHold { call } => call_op(ctx, scope, &call, CallOp::Hold).await,
        Command::CallRetrieve { call } => call_op(ctx, scope, &call, CallOp::Retrieve).await,
        Command::CallTransfer { call, to } => {
            call_op(ctx, scope, &call, CallOp::Transfer { to }).await
        }
        Command::CallSendDtmf { call, digits } => {
            call_op(ctx, scope, &call, CallOp::SendDtmf { digits }).await
        }
        Command::CallSetData { call, data } => {
            call_op(ctx, scope, &call, CallOp::SetData { data }).await
        }
        Command::CallRecord { call, action } => {
            call_op(ctx, scope, &call, CallOp::Record { action }).await
        }
        Command::CallConsult { call, to } => {
            call_op(ctx, scope, &call, CallOp::Consult { to }).await
        }
        Command::CallTransferComplete { call } => {
            call_op(ctx, scope, &call, CallOp::ConsultComplete).await
        }
        Command::CallConsultCancel { call } => {
            call_op(ctx, scope, &call, CallOp::ConsultCancel).await
        }
        Command::CallConference { call } => call_op(ctx, scope, &call, CallOp::Conference).await,
        Command::CallWrapUp {
            call,
            disposition,
            notes,
        } => wrap_up(ctx, scope, &call, disposition, notes),
        Command::Snapshot => Ok(lock(&ctx.hub).snapshot(scope)),
        Command::Subscribe { agents, queues } => {
            let Some(client) = client else {
                return Err(ProtoError::new(
                    ErrorCode::BadRequest,
                    "subscribe: events come over the WebSocket (GET /v1/cti)",
                ));
            };
            let reply = lock(&ctx.hub).subscribe(client, agents, queues)?;
            let mut m = Map::new();
            m.insert("subscribed".into(), reply);
            Ok(m)
        }
    }
}

fn agent_op(ctx: &Ctx, scope: &Scope, agent: &str, op: AgentOp) -> Result<(), ProtoError> {
    let state = lock(&ctx.hub).agent_for(scope, agent)?.state;
    let Some(&id) = ctx.agents.get(agent) else {
        return Err(ProtoError::new(
            ErrorCode::NotFound,
            format!("no agent {agent:?}"),
        ));
    };
    if state == AgentState::LoggedOut && matches!(op, AgentOp::Ready | AgentOp::NotReady { .. }) {
        return Err(ProtoError::new(
            ErrorCode::InvalidState,
            format!("agent {agent} is logged out (agent.login first)"),
        ));
    }
    if ctx.link.acd(acd::Input::Agent { agent: id, op }) {
        Ok(())
    } else {
        Err(unavailable())
    }
}

/// The call `id` if `scope` covers it and it is still up: its shard key.
fn call_of(ctx: &Ctx, scope: &Scope, id: &str) -> Result<u64, ProtoError> {
    let hub = lock(&ctx.hub);
    let call = hub.call_for(scope, id)?;
    if call.ended {
        return Err(ProtoError::new(
            ErrorCode::InvalidState,
            format!("call {id} has ended"),
        ));
    }
    Ok(call.key)
}

async fn call_op(
    ctx: &Arc<Ctx>,
    scope: &Scope,
    id: &str,
    op: CallOp,
) -> Result<Map<String, Value>, ProtoError> {
    let key = call_of(ctx, scope, id)?;
    let shard = usize::try_from(key >> 48).unwrap_or(usize::MAX);
    to_shard(ctx, shard, key, op).await?;
    Ok(Map::new())
}

/// Sends `op` to shard `shard` and waits for its answer.
async fn to_shard(
    ctx: &Arc<Ctx>,
    shard: usize,
    key: u64,
    op: CallOp,
) -> Result<Option<String>, ProtoError> {
    let req = ctx.next_req.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    lock(&ctx.pending).insert(req, tx);
    if !ctx.link.command(shard, CallCommand { req, key, op }) {
        lock(&ctx.pending).remove(&req);
        return Err(unavailable());
    }
    match tokio::time::timeout(SHARD_REPLY_TIMEOUT, rx).await {
        Ok(Ok(result)) => result,
        _ => {
            lock(&ctx.pending).remove(&req);
            Err(unavailable())
        }
    }
}

/// `call.wrap_up`: the disposition goes to the call's record, and an agent
/// in wrap-up for it is made ready.
fn wrap_up(
    ctx: &Ctx,
    scope: &Scope,
    id: &str,
    disposition: String,
    notes: String,
) -> Result<Map<String, Value>, ProtoError> {
    let mut hub = lock(&ctx.hub);
    let agent = hub.call_for(scope, id)?.agent.clone();
    if let Some(records) = &ctx.records {
        records(ToRecords::WrapUp {
            call: id.to_owned(),
            disposition: disposition.clone(),
            notes: notes.clone(),
        });
    }
    hub.wrap_up_event(id, &disposition, &notes, now_ms());
    if let Some(a) = agent.as_deref()
        && hub.agent(a).is_some_and(|v| v.state == AgentState::WrapUp)
        && let Some(&aid) = ctx.agents.get(a)
    {
        ctx.link.acd(acd::Input::Agent {
            agent: aid,
            op: AgentOp::Ready,
        });
    }
    Ok(Map::new())
}

/// Moves what the engines sent into the hub (events out to the clients,
/// replies to the waiting commands), and sends `queue.stats` each second.
async fn poll_rings(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_stats = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let mut replies = Vec::new();
        {
            let mut hub = lock(&ctx.hub);
            ctx.link.drain_agents(|a| {
                if let Some(records) = &ctx.records {
                    records(ToRecords::Agent {
                        agent: a.agent.clone(),
                        in_wrap_up: a.state == AgentState::WrapUp,
                        at_ms: a.at_ms,
                    });
                }
                hub.handle_agent(&a);
            });
            ctx.link.drain_shards(|m| match m {
                ToControl::Event(e) => hub.handle_call(&e),
                ToControl::Reply(r) => replies.push(r),
                ToControl::Lookup {
                    key,
                    number,
                    account,
                } => lookup(&ctx, key, number, account),
            });
        }
        if !replies.is_empty() {
            let mut pending = lock(&ctx.pending);
            for r in replies {
                if let Some(tx) = pending.remove(&r.req) {
                    let _ = tx.send(r.result);
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= next_stats {
            next_stats = now + Duration::from_secs(1);
            queue_stats(&ctx);
        }
    }
}

/// Asks the CRM about the caller of call `key` (on its own task: a slow
/// CRM holds nothing up) and hands the answer to the call's shard.
fn lookup(ctx: &Arc<Ctx>, key: u64, number: Option<String>, account: Option<String>) {
    let Some(client) = ctx.lookup.clone() else {
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let asked = crate::crm::lookup::LookupKey {
            number: number.as_deref().and_then(crate::crm::E164::normalize),
            account,
        };
        let found = client.lookup(&asked).await;
        let shard = usize::try_from(key >> 48).unwrap_or(usize::MAX);
        ctx.link.command(
            shard,
            CallCommand {
                req: 0,
                key,
                op: CallOp::Contact(found.map(Box::new)),
            },
        );
    });
}

fn queue_stats(ctx: &Ctx) {
    let mut hub = lock(&ctx.hub);
    let followed = hub.followed_queues();
    if followed.is_empty() {
        return;
    }
    let Some(stats) = (ctx.plane.acd_stats)() else {
        return;
    };
    let at = now_ms();
    for q in stats.queues.iter().filter(|q| followed.contains(&q.name)) {
        hub.queue_stats(&q.name, super::rest::queue_json(q), at);
    }
}

async fn healthz(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    let plane = &ctx.plane;
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "shards": plane.counters.len(),
        "uptime_s": plane.started.elapsed().as_secs(),
    }))
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    let plane = &ctx.plane;
    let snapshot = Snapshot::sum(plane.counters.iter().map(|c| c.as_ref()));
    let mut body = String::with_capacity(8192);
    prometheus::render(&snapshot, &mut body);
    if let Some(stats) = (plane.acd_stats)() {
        prometheus::render_acd(&stats, &mut body);
    }
    {
        let hub = lock(&ctx.hub);
        let out = &mut body;
        let clients = hub.clients() as u64;
        prometheus::scalar(
            out,
            "cti_clients",
            "gauge",
            "CTI WebSocket clients connected.",
            clients,
        );
        prometheus::scalar(
            out,
            "cti_events_delivered_total",
            "counter",
            "CTI events queued to clients.",
            hub.delivered,
        );
        prometheus::scalar(
            out,
            "cti_events_missed_total",
            "counter",
            "CTI events a slow client missed (its queue was full).",
            hub.missed,
        );
        prometheus::scalar(
            out,
            "cti_ring_full_total",
            "counter",
            "Times a ring between the engines and the control plane was full.",
            ctx.link.full.load(Ordering::Relaxed),
        );
        if let Some(w) = &ctx.webhook {
            let st = w.stats();
            for (name, help, value) in [
                (
                    "webhook_delivered_total",
                    "Call records the CRM acknowledged.",
                    st.delivered,
                ),
                (
                    "webhook_failed_attempts_total",
                    "Webhook POSTs that failed (retried or dead-lettered).",
                    st.failed_attempts,
                ),
                (
                    "webhook_dead_lettered_total",
                    "Call records given up on (GET /v1/outbox).",
                    st.dead_lettered,
                ),
            ] {
                prometheus::scalar(out, name, "counter", help, value);
            }
        }
        if let Some(l) = &ctx.lookup {
            let st = l.stats();
            prometheus::family(
                out,
                "crm_lookups_total",
                "CRM screen-pop lookups by result.",
                "result",
                &[
                    ("hit", st.hits),
                    ("miss", st.misses),
                    ("error", st.errors),
                    ("timeout", st.timeouts),
                    ("cache_hit", st.cache_hits),
                    ("breaker_open", st.breaker_open),
                ],
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
