//! REST resources under `/v1` (read side; commands are `POST
//! /v1/cti/{command}` in [`super::server`]).
//!
//! * `GET /v1/calls?since=<unix ms>&agent=&queue=&number=&limit=` — stored
//!   call records, newest first (an `agent:<id>` token sees its own only);
//! * `GET /v1/calls/{id}` — one record;
//! * `GET /v1/recordings/{id}` — the WAV of call record `id`;
//! * `GET /v1/agents`, `GET /v1/queues` — the ACD's figures (last second);
//! * `GET /v1/outbox` — undelivered webhooks and dead letters (admin).
//!
//! The store is read off the runtime thread (`spawn_blocking`), so a slow
//! disk does not hold up event fan-out.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::proto::{ErrorCode, ProtoError};
use super::server::{Ctx, authorize, lock, problem};
use crate::acd::stats::{QueueCounters, QueueStats};
use crate::store::{CallFilter, CallRow, Store};

pub(super) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/v1/calls", get(calls))
        .route("/v1/calls/{id}", get(call))
        .route("/v1/recordings/{id}", get(recording))
        .route("/v1/agents", get(agents))
        .route("/v1/queues", get(queues))
        .route("/v1/outbox", get(outbox))
}

/// Most rows one `GET /v1/calls` returns.
const MAX_ROWS: u32 = 1000;

#[derive(Debug, Deserialize)]
struct CallsQuery {
    since: Option<i64>,
    agent: Option<String>,
    queue: Option<String>,
    number: Option<String>,
    limit: Option<u32>,
}

fn store_error(e: impl std::fmt::Display) -> ProtoError {
    tracing::warn!(error = %e, "control plane: store read failed");
    ProtoError::new(
        ErrorCode::Unavailable,
        format!("the call store cannot be read: {e}"),
    )
}

/// Runs `f` on the store off the runtime thread.
async fn with_store<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ProtoError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let guard = lock(&ctx.store);
        match guard.as_ref() {
            Some(s) => f(s).map_err(store_error),
            None => Err(store_error("closed")),
        }
    })
    .await
    .unwrap_or_else(|e| Err(store_error(e)))
}

fn row_json(r: CallRow) -> Value {
    let mut v = r.record;
    if let Value::Object(m) = &mut v {
        m.entry("disposition")
            .or_insert_with(|| r.disposition.map_or(Value::Null, Value::from));
    }
    v
}

async fn calls(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Query<CallsQuery>,
) -> Response {
    let scope = match authorize(&ctx, &headers) {
        Ok(s) => s,
        Err(e) => return problem(&e),
    };
    if let (Some(me), Some(asked)) = (scope.agent(), q.agent.as_deref())
        && me != asked
    {
        return problem(&ProtoError::new(
            ErrorCode::Forbidden,
            format!("this token's scope does not cover agent {asked:?}"),
        ));
    }
    let filter = CallFilter {
        since_ms: q.since,
        agent: scope.agent().map(str::to_owned).or(q.agent),
        queue: q.queue,
        number: q.number,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_ROWS),
    };
    match with_store(&ctx, move |s| s.list_calls(&filter)).await {
        Ok(rows) => Json(json!({"calls": rows.into_iter().map(row_json).collect::<Vec<_>>()}))
            .into_response(),
        Err(e) => problem(&e),
    }
}

/// Call record `id` if the scope covers its agent.
async fn covered_call(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    id: String,
) -> Result<CallRow, ProtoError> {
    let scope = authorize(ctx, headers)?;
    let shown = id.clone();
    let row = with_store(ctx, move |s| s.get_call(&id)).await?;
    row.filter(|r| scope.covers_call(r.agent.as_deref()))
        .ok_or_else(|| ProtoError::new(ErrorCode::NotFound, format!("no call {shown:?}")))
}

async fn call(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match covered_call(&ctx, &headers, id).await {
        Ok(row) => Json(row_json(row)).into_response(),
        Err(e) => problem(&e),
    }
}

async fn recording(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let row = match covered_call(&ctx, &headers, id.clone()).await {
        Ok(r) => r,
        Err(e) => return problem(&e),
    };
    let dir = ctx.data_dir.join("recordings");
    let found = tokio::task::spawn_blocking(move || {
        let path = recording_path(&dir, &row.record)?;
        std::fs::read(&path).ok()
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        None => problem(&ProtoError::new(
            ErrorCode::NotFound,
            format!("call {id:?} has no recording"),
        )),
    }
}

/// Where the recording of a stored record is (`<dir>/YYYY/MM/DD/<call
/// id>[-<recording id>].wav`, dated by its start; see
/// `shell::recwriter`).
fn recording_path(dir: &std::path::Path, record: &Value) -> Option<PathBuf> {
    let rec = record.get("recording")?.as_str()?;
    let rec_id = u64::from_str_radix(rec, 16).ok()?;
    let call_id = record.get("call_id")?.as_str()?;
    let name = crate::shell::recwriter::sanitize_call_id(call_id);
    let mut days = Vec::new();
    for key in ["answered_ms", "started_ms", "ended_ms"] {
        if let Some(ms) = record.get(key).and_then(Value::as_i64)
            && let Ok(ms) = u64::try_from(ms)
        {
            let d = crate::shell::recwriter::day_dir(ms);
            if !days.contains(&d) {
                days.push(d);
            }
        }
    }
    for day in days {
        for file in [format!("{name}-{rec_id}.wav"), format!("{name}.wav")] {
            let p = dir.join(&day).join(file);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn counters_json(c: &QueueCounters) -> Value {
    json!({
        "offered": c.offered,
        "answered": c.answered,
        "abandoned": c.abandoned,
        "overflowed": c.overflowed,
        "callbacks": c.callbacks,
        "in_service_level": c.in_service_level,
        "handled": c.handled,
        "asa_ms": c.answered_wait.as_millis().checked_div(u128::from(c.answered)).unwrap_or(0) as u64,
        "aht_ms": c.handle_time.as_millis().checked_div(u128::from(c.handled)).unwrap_or(0) as u64,
    })
}

/// A queue's figures (`/v1/queues` and the `queue.stats` event).
pub(super) fn queue_json(q: &QueueStats) -> Value {
    json!({
        "queue": q.name,
        "waiting": q.waiting,
        "longest_wait_ms": q.longest_wait.as_millis() as u64,
        "today": counters_json(&q.today),
        "interval": counters_json(&q.interval),
    })
}

async fn queues(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&ctx, &headers) {
        return problem(&e);
    }
    let queues: Vec<Value> = (ctx.plane.acd_stats)()
        .map(|s| s.queues.iter().map(queue_json).collect())
        .unwrap_or_default();
    Json(json!({"queues": queues})).into_response()
}

async fn agents(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    let scope = match authorize(&ctx, &headers) {
        Ok(s) => s,
        Err(e) => return problem(&e),
    };
    let stats = (ctx.plane.acd_stats)();
    let hub = lock(&ctx.hub);
    let snap = hub.snapshot(&scope);
    let mut agents = snap.get("agents").cloned().unwrap_or(Value::Null);
    if let (Value::Array(list), Some(stats)) = (&mut agents, stats) {
        for a in list {
            let Some(id) = a.get("agent").and_then(Value::as_str) else {
                continue;
            };
            if let Some(s) = stats.agents.iter().find(|s| s.id == id)
                && let Value::Object(m) = a
            {
                m.insert("calls_today".into(), s.today.calls.into());
                m.insert("talk_today_s".into(), s.today.talk.as_secs().into());
            }
        }
    }
    Json(json!({"agents": agents})).into_response()
}

async fn outbox(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    let scope = match authorize(&ctx, &headers) {
        Ok(s) => s,
        Err(e) => return problem(&e),
    };
    if !scope.is_admin() {
        return problem(&ProtoError::new(
            ErrorCode::Forbidden,
            "the outbox needs an admin token",
        ));
    }
    let got = with_store(&ctx, |s| Ok((s.outbox_len()?, s.dead_letters(MAX_ROWS)?))).await;
    match got {
        Ok((pending, dead)) => Json(json!({
            "pending": pending,
            "dead_letters": dead.into_iter().map(|d| json!({
                "record_id": d.item.record_id,
                "attempts": d.item.attempts,
                "last_error": d.item.last_error,
                "failed_ms": d.failed_ms,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => problem(&e),
    }
}
