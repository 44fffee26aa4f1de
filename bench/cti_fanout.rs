//! CTI event fan-out to WebSocket clients (issue #6; `cargo bench --bench
//! cti_fanout`).
//!
//! One process. The real control plane (`switchboard::cti::start`, its own
//! thread and current-thread tokio runtime, the hub, the 2 ms ring poller)
//! listens on a free 127.0.0.1 port with 1,000 agents `a0000`..`a0999`.
//! WebSocket clients (tokio-tungstenite, on a 2-worker multi-thread tokio
//! runtime of the bench) connect with a supervisor bearer token and
//! subscribe; a producer thread plays a shard: every 1 ms it builds a batch
//! of `call.ringing` events (round-robin over the agents, each carrying its
//! monotonic send time in ns since a shared start `Instant` as attached
//! data `t_ns`) and hands it over with `CtiLink::submit(0, ..)`, for 10 s.
//! Each client records receive time − `t_ns` for every event
//! (hdrhistogram over all clients). CPU is `getrusage(RUSAGE_SELF)` over
//! the producing window (producer, clients and server together) and the
//! server thread's own run time (`/proc/self/task/*/schedstat`), both per
//! event produced.
//!
//! Scenarios: (1) 1,000 clients, each subscribed to one agent, 10,000
//! events/s (10 events/s per client); (2) 100 clients subscribed to
//! everything (`subscribe` with no fields), 1,000 events/s (100,000
//! deliveries/s).
//!
//! Anchor, in the same run: the same clients, producer and rates against a
//! minimal fan-out server written here (`anchor-server` thread, one
//! current-thread runtime like the control plane's, tokio-tungstenite):
//! the producer sends batches over an unbounded channel, the server renders
//! each event to JSON once and `try_send`s it to the matching clients'
//! per-client queues, a writer task per client writes them out. No
//! authentication, no hub state, no polling interval.

// Benchmark code reads the real clock and sleeps to pace the producer
// (.clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchboard::acd::AgentId;
use switchboard::config::{CtiScope, CtiToken};
use switchboard::cti::event::{CallEvent, CallEventKind, ToControl};
use switchboard::cti::link::CtiLink;
use switchboard::cti::{ControlPlane, CtiSetup, Plane};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const TOKEN: &str = "bench-supervisor";
const AGENTS: usize = 1000;
/// How long the producer runs.
const DURATION: Duration = Duration::from_secs(10);
/// The producer's batch interval.
const TICK: Duration = Duration::from_millis(1);
/// After the producer stops: wait at most this long for the last events.
const GRACE: Duration = Duration::from_secs(3);
/// Clients connecting at once (the listeners' backlog is 128).
const CONNECTING: usize = 32;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn agent_name(i: usize) -> String {
    format!("a{i:04}")
}

/// The event a shard would send for agent `i`'s call, stamped `t_ns`.
fn event(i: usize, t_ns: u64) -> CallEvent {
    CallEvent {
        kind: CallEventKind::Ringing,
        // One call per agent: the hub's call table stays at 1,000 entries.
        call: format!("c{i:04}"),
        key: i as u64,
        parent: None,
        queue: Some("support".into()),
        agent: Some(agent_name(i)),
        ani: "+815012345678".into(),
        dnis: "200".into(),
        data: vec![("t_ns".into(), t_ns.to_string())],
        at_ms: 0,
    }
}

/// The `t_ns` of an event's text, without a full JSON parse.
fn sent_ns(text: &str) -> Option<u64> {
    const KEY: &str = "\"t_ns\":\"";
    let at = text.find(KEY)? + KEY.len();
    let rest = &text[at..];
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    clients: usize,
    rate: usize,
    /// Client `i` follows agent `i` (else every client follows everything).
    per_agent: bool,
}

impl Scenario {
    fn subscribe(&self, i: usize) -> String {
        if self.per_agent {
            json!({"type": "subscribe", "id": 1, "agents": [agent_name(i)]}).to_string()
        } else {
            json!({"type": "subscribe", "id": 1}).to_string()
        }
    }

    fn deliveries(&self, events: u64) -> u64 {
        if self.per_agent {
            events
        } else {
            events * self.clients as u64
        }
    }
}

// ---------------------------------------------------------------- producer

/// Plays a shard: a batch every [`TICK`] for [`DURATION`]; returns the
/// events produced.
fn produce(rate: usize, mut push: impl FnMut(Vec<CallEvent>)) -> u64 {
    let per_tick = (rate / 1000).max(1);
    let ticks = DURATION.as_millis() as u32;
    let t0 = Instant::now();
    let mut agent = 0;
    let mut sent = 0;
    for k in 0..ticks {
        let due = t0 + TICK * k;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let t = now_ns();
        let batch = (0..per_tick)
            .map(|_| {
                let e = event(agent, t);
                agent = (agent + 1) % AGENTS;
                e
            })
            .collect();
        sent += per_tick as u64;
        push(batch);
    }
    sent
}

// ----------------------------------------------------------------- clients

#[derive(Default)]
struct ClientOut {
    connected: bool,
    lat_ns: Vec<u64>,
    lagged: u64,
}

async fn connect(
    url: &str,
    token: &str,
    subscribe: String,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|e| format!("{e}"))?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .map_err(|e| e.to_string())?;
    ws.send(Message::text(subscribe))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                if v["type"] == "result" {
                    return if v["ok"] == true {
                        Ok(ws)
                    } else {
                        Err(t.to_string())
                    };
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("closed before the subscribe reply".into()),
            Err(_) => return Err("no subscribe reply in 10 s".into()),
        }
    }
}

/// One client: connect, subscribe, then record every event's latency
/// until told to stop (or the server goes away).
async fn client(
    addr: SocketAddr,
    subscribe: String,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> ClientOut {
    let mut out = ClientOut::default();
    let permit = gate.acquire_owned().await;
    let ws = match connect(&format!("ws://{addr}/v1/cti"), TOKEN, subscribe).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = ready.send(Err(e));
            return out;
        }
    };
    drop(permit);
    out.connected = true;
    let _ = ready.send(Ok(()));
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let now = now_ns();
                    if let Some(sent) = sent_ns(t.as_str()) {
                        out.lat_ns.push(now.saturating_sub(sent));
                        received.fetch_add(1, Ordering::Relaxed);
                    } else if t.as_str().contains("\"lagged\"") {
                        out.lagged += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    out
}

// ------------------------------------------------------------------ anchor

type Tx = mpsc::Sender<Utf8Bytes>;

#[derive(Default)]
struct Subs {
    next: u64,
    all: Vec<(u64, Tx)>,
    by_agent: HashMap<String, Vec<(u64, Tx)>>,
}

impl Subs {
    fn remove(&mut self, id: u64) {
        self.all.retain(|(c, _)| *c != id);
        for v in self.by_agent.values_mut() {
            v.retain(|(c, _)| *c != id);
        }
    }
}

struct Anchor {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<CallEvent>>,
    missed: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Anchor {
    fn start() -> std::io::Result<Anchor> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let missed = Arc::new(AtomicU64::new(0));
        let m = missed.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("anchor-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let subs = Arc::new(Mutex::new(Subs::default()));
                    tokio::spawn(dispatch(rx, subs.clone(), m));
                    let mut stopped = stopped;
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            acc = listener.accept() => {
                                if let Ok((s, _)) = acc {
                                    tokio::spawn(anchor_client(s, subs.clone()));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(Anchor {
            addr,
            tx,
            missed,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The same fields as the hub's `call.*` events, rendered once per event.
fn render(e: &CallEvent, seq: u64) -> String {
    let data: serde_json::Map<String, Value> = e
        .data
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "type": e.kind.name(),
        "seq": seq,
        "ts": e.at_ms,
        "call": e.call,
        "parent": e.parent,
        "queue": e.queue,
        "agent": e.agent,
        "ani": e.ani,
        "dnis": e.dnis,
        "data": data,
    })
    .to_string()
}

async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Vec<CallEvent>>,
    subs: Arc<Mutex<Subs>>,
    missed: Arc<AtomicU64>,
) {
    let mut seq = 0;
    while let Some(batch) = rx.recv().await {
        let subs = lock(&subs);
        for e in batch {
            seq += 1;
            let text = Utf8Bytes::from(render(&e, seq));
            let agent = e.agent.as_deref().and_then(|a| subs.by_agent.get(a));
            for (_, tx) in subs.all.iter().chain(agent.into_iter().flatten()) {
                if tx.try_send(text.clone()).is_err() {
                    missed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn anchor_client(s: tokio::net::TcpStream, subs: Arc<Mutex<Subs>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(4096);
    let writer = tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if sink.send(Message::Text(t)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut me = None;
    while let Some(Ok(msg)) = stream.next().await {
        let t = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            continue;
        };
        let agents: Option<Vec<String>> = v.get("agents").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        });
        {
            let mut s = lock(&subs);
            let id = *me.get_or_insert_with(|| {
                s.next += 1;
                s.next
            });
            s.remove(id);
            match agents {
                Some(list) => {
                    for a in list {
                        s.by_agent.entry(a).or_default().push((id, tx.clone()));
                    }
                }
                None => s.all.push((id, tx.clone())),
            }
        }
        let reply = json!({"type": "result", "id": v.get("id"), "ok": true}).to_string();
        if tx.send(Utf8Bytes::from(reply)).await.is_err() {
            break;
        }
    }
    if let Some(id) = me {
        lock(&subs).remove(id);
    }
    drop(tx);
    let _ = writer.await;
}

// ------------------------------------------------------------- measurement

/// CPU time of the whole process, µs.
fn process_cpu_us() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0;
    };
    let us = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
    };
    us(u.user_time()) + us(u.system_time())
}

/// CPU time of this process's thread named `name`, µs (its scheduler run
/// time; 0 when not found).
fn thread_cpu_us(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in dir.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        return stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |ns| ns / 1000);
    }
    0
}

/// `GET /metrics` over a plain socket: (name, value) of every sample.
fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return out;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return out;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ')
            && let Ok(v) = v.parse::<f64>()
        {
            out.insert(k.to_owned(), v);
        }
    }
    out
}

struct Report {
    server: &'static str,
    scenario: Scenario,
    clients_ok: usize,
    sent: u64,
    received: u64,
    missed: u64,
    lagged: u64,
    ring_full: u64,
    hist: Histogram<u64>,
    process_cpu_us: u64,
    server_cpu_us: u64,
    wall: Duration,
}

enum Server {
    Switchboard {
        plane: ControlPlane,
        link: Arc<CtiLink>,
        _dir: tempfile::TempDir,
    },
    Anchor(Anchor),
}

fn start_switchboard() -> Result<(SocketAddr, Server), String> {
    // A free port: bind :0, note it, let go (start() binds it again).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let link = Arc::new(CtiLink::new(1));
    let plane = switchboard::cti::start(
        addr,
        Plane {
            counters: vec![],
            acd_stats: Box::new(|| None),
            started: Instant::now(),
        },
        CtiSetup {
            tokens: vec![CtiToken {
                token: TOKEN.into(),
                scope: CtiScope::Supervisor,
            }],
            tls: None,
            max_message_bytes: 65536,
            link: link.clone(),
            agents: (0..AGENTS)
                .map(|i| (agent_name(i), AgentId(i as u32)))
                .collect(),
            queues: vec!["support".into()],
            data_dir: dir.path().to_owned(),
            records: None,
            lookup: None,
            webhook: None,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((
        addr,
        Server::Switchboard {
            plane,
            link,
            _dir: dir,
        },
    ))
}

fn run(rt: &tokio::runtime::Runtime, sc: Scenario, anchor: bool) -> Result<Report, String> {
    let (addr, server) = if anchor {
        let a = Anchor::start().map_err(|e| e.to_string())?;
        (a.addr, Server::Anchor(a))
    } else {
        start_switchboard()?
    };
    let server_thread = if anchor {
        "anchor-server"
    } else {
        "control-plane"
    };
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let handles: Vec<_> = (0..sc.clients)
        .map(|i| {
            rt.spawn(client(
                addr,
                sc.subscribe(i),
                gate.clone(),
                ready_tx.clone(),
                received.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let (mut ok, mut first_err) = (0, None);
    rt.block_on(async {
        // Every client answers once (its sender lives on in the task).
        for _ in 0..sc.clients {
            let Some(r) = ready_rx.recv().await else {
                break;
            };
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = &first_err {
        eprintln!(
            "{}: {} of {} clients could not connect (first: {e})",
            sc.name,
            sc.clients - ok,
            sc.clients
        );
    }

    let cpu0 = process_cpu_us();
    let srv0 = thread_cpu_us(server_thread);
    let t0 = Instant::now();
    let sent = match &server {
        Server::Switchboard { link, .. } => {
            let link = link.clone();
            let producer = std::thread::spawn(move || {
                let mut backlog = VecDeque::new();
                let sent = produce(sc.rate, |batch| {
                    backlog.extend(batch.into_iter().map(|e| ToControl::Event(Box::new(e))));
                    link.submit(0, &mut backlog);
                });
                while !backlog.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    link.submit(0, &mut backlog);
                }
                sent
            });
            producer.join().unwrap_or(0)
        }
        Server::Anchor(a) => {
            let tx = a.tx.clone();
            let producer = std::thread::spawn(move || {
                produce(sc.rate, |batch| {
                    let _ = tx.send(batch);
                })
            });
            producer.join().unwrap_or(0)
        }
    };
    let expected = sc.deliveries(sent) * ok as u64 / sc.clients as u64;
    let grace_end = Instant::now() + GRACE;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = t0.elapsed();
    let process_cpu = process_cpu_us().saturating_sub(cpu0);
    let server_cpu = thread_cpu_us(server_thread).saturating_sub(srv0);

    let (missed, ring_full) = match &server {
        Server::Switchboard { .. } => {
            let m = metrics(addr);
            let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            println!(
                "  {} /metrics: switchboard_cti_clients {} switchboard_cti_events_delivered_total {} switchboard_cti_events_missed_total {} switchboard_cti_ring_full_total {}",
                sc.name,
                get("switchboard_cti_clients"),
                get("switchboard_cti_events_delivered_total"),
                get("switchboard_cti_events_missed_total"),
                get("switchboard_cti_ring_full_total"),
            );
            (
                get("switchboard_cti_events_missed_total") as u64,
                get("switchboard_cti_ring_full_total") as u64,
            )
        }
        Server::Anchor(a) => (a.missed.load(Ordering::Relaxed), 0),
    };

    let _ = stop_tx.send(true);
    let outs: Vec<ClientOut> = rt.block_on(async {
        let mut outs = Vec::new();
        for h in handles {
            outs.push(h.await.unwrap_or_default());
        }
        outs
    });
    match server {
        Server::Switchboard { plane, .. } => plane.stop(),
        Server::Anchor(a) => a.stop(),
    }

    let mut hist =
        Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut lagged = 0;
    for o in &outs {
        lagged += o.lagged;
        for &l in &o.lat_ns {
            hist.saturating_record(l.max(1_000));
        }
    }
    Ok(Report {
        server: if anchor { "anchor" } else { "switchboard" },
        scenario: sc,
        clients_ok: outs.iter().filter(|o| o.connected).count(),
        sent,
        received: hist.len(),
        missed,
        lagged,
        ring_full,
        hist,
        process_cpu_us: process_cpu,
        server_cpu_us: server_cpu,
        wall,
    })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn print_header() {
    println!(
        "{:<12} {:<22} {:>7} {:>6} {:>7} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11} {:>10}",
        "server",
        "scenario",
        "clients",
        "ev/s",
        "sent",
        "received",
        "missed",
        "lagged",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p99.9ms",
        "max_ms",
        "wall_s",
        "cpu_us/ev",
        "srv_us/ev",
    );
}

fn print(r: &Report) {
    let h = &r.hist;
    let per = |us: u64| us as f64 / r.sent.max(1) as f64;
    println!(
        "{:<12} {:<22} {:>7} {:>6} {:>7} {:>9} {:>8} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>11.2} {:>10.2}",
        r.server,
        r.scenario.name,
        r.clients_ok,
        r.scenario.rate,
        r.sent,
        r.received,
        r.missed,
        r.lagged,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        r.wall.as_secs_f64(),
        per(r.process_cpu_us),
        per(r.server_cpu_us),
    );
    if r.ring_full > 0 {
        println!("  (ring full {} times)", r.ring_full);
    }
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65536);
        if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_err() {
            eprintln!("cannot raise RLIMIT_NOFILE from {soft} to {want}");
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `--hold ...` is the client side of
    // bench/cti_fanout/setup_latency.sh (see `mod hold`).
    let _ = epoch();
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold") {
        std::process::exit(hold::main(&args[1..]));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-clients")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the clients' runtime: {e}");
            std::process::exit(1);
        }
    };
    let scenarios = [
        Scenario {
            name: "1000 x 1 agent",
            clients: 1000,
            rate: 10_000,
            per_agent: true,
        },
        Scenario {
            name: "100 x all",
            clients: 100,
            rate: 1_000,
            per_agent: false,
        },
    ];
    println!(
        "CTI fan-out: {} s per run, batches every {} ms; latency = client receive - producer stamp; cpu_us/ev = getrusage(self) / events produced; srv_us/ev = server thread only",
        DURATION.as_secs(),
        TICK.as_millis()
    );
    let mut reports = Vec::new();
    for sc in scenarios {
        for anchor in [true, false] {
            match run(&rt, sc, anchor) {
                Ok(r) => reports.push(r),
                Err(e) => eprintln!(
                    "{} ({}): {e}",
                    sc.name,
                    if anchor { "anchor" } else { "ours" }
                ),
            }
        }
    }
    println!();
    print_header();
    for r in &reports {
        print(r);
    }
    println!();
    for pair in reports.chunks(2) {
        if let [a, s] = pair {
            let p99 = |r: &Report| r.hist.value_at_quantile(0.99) as f64;
            println!(
                "{}: switchboard p99 {:.2} ms = {:.2}x anchor ({:.2} ms); target < 50 ms: {}",
                s.scenario.name,
                p99(s) / 1e6,
                p99(s) / p99(a).max(1.0),
                p99(a) / 1e6,
                if p99(s) < 50e6 && s.received == s.scenario.deliveries(s.sent) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}

// -------------------------------------------------------------------- hold

/// `cti_fanout --hold N --url URL --token T [--agents all|ID,ID,..]
/// --stop-file PATH`: N WebSocket clients of an appliance that is already
/// running (the client side of bench/cti_fanout/setup_latency.sh). Each
/// connects with `Authorization: Bearer T` and subscribes to everything
/// (`all`, the default) or to one agent of the list (client `i` to agent
/// `i mod len`); once all have their `subscribe` answered it prints `ready
/// N`, then counts what arrives until PATH exists. At the end it prints one
/// line `hold: ...`: clients subscribed, events received, `lagged` messages
/// and the events they say were missed, and the delivery latency by the
/// events' own `ts` (wall clock in ms: receive time - ts).
mod hold {
    use super::{CONNECTING, Message, Semaphore, StreamExt, connect, json, mpsc, watch};
    use std::io::Write;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[derive(Default)]
    struct Counts {
        events: u64,
        lagged: u64,
        missed: u64,
        lat_ms: Vec<u64>,
    }

    fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The value of `"key":<digits>` in a JSON text, without a full parse.
    fn num(text: &str, key: &str) -> Option<u64> {
        let k = format!("\"{key}\":");
        let at = text.find(&k)? + k.len();
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    }

    async fn one(
        url: String,
        token: String,
        subscribe: String,
        gate: Arc<Semaphore>,
        ready: mpsc::UnboundedSender<Result<(), String>>,
        mut stop: watch::Receiver<bool>,
    ) -> Counts {
        let mut c = Counts::default();
        let permit = gate.acquire_owned().await;
        let ws = match connect(&url, &token, subscribe).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ready.send(Err(e));
                return c;
            }
        };
        drop(permit);
        let _ = ready.send(Ok(()));
        let (_sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        if t.starts_with("{\"type\":\"lagged\"") {
                            c.lagged += 1;
                            c.missed += num(t, "missed").unwrap_or(0);
                        } else if let Some(ts) = num(t, "ts") {
                            c.events += 1;
                            c.lat_ms.push(wall_ms().saturating_sub(ts));
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        c
    }

    fn pct(sorted: &[u64], p: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn main(args: &[String]) -> i32 {
        let n: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        let (mut url, mut token, mut agents, mut stop_file) = (
            String::new(),
            String::new(),
            "all".to_string(),
            String::new(),
        );
        let mut it = args.iter().skip(1);
        while let Some(k) = it.next() {
            let v = it.next().cloned().unwrap_or_default();
            match k.as_str() {
                "--url" => url = v,
                "--token" => token = v,
                "--agents" => agents = v,
                "--stop-file" => stop_file = v,
                _ => {
                    eprintln!("hold: unknown argument {k}");
                    return 2;
                }
            }
        }
        if n == 0 || url.is_empty() || token.is_empty() || stop_file.is_empty() {
            eprintln!(
                "usage: cti_fanout --hold N --url URL --token T [--agents all|ID,ID,..] --stop-file PATH"
            );
            return 2;
        }
        let list: Vec<String> = if agents == "all" {
            Vec::new()
        } else {
            agents.split(',').map(str::to_string).collect()
        };
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hold-clients")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("hold: cannot start a runtime: {e}");
                return 1;
            }
        };
        let gate = Arc::new(Semaphore::new(CONNECTING));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let sub = if list.is_empty() {
                    json!({"type": "subscribe", "id": 1}).to_string()
                } else {
                    json!({"type": "subscribe", "id": 1, "agents": [list[i % list.len()]]})
                        .to_string()
                };
                rt.spawn(one(
                    url.clone(),
                    token.clone(),
                    sub,
                    gate.clone(),
                    ready_tx.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        drop(ready_tx);
        let (mut ok, mut failed) = (0usize, 0usize);
        rt.block_on(async {
            while let Some(r) = ready_rx.recv().await {
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("hold: a client failed: {e}");
                        }
                        failed += 1;
                    }
                }
                if ok + failed == n {
                    break;
                }
            }
        });
        println!("ready {ok} failed {failed}");
        let _ = std::io::stdout().flush();
        let stop = std::path::Path::new(&stop_file);
        rt.block_on(async {
            while !stop.exists() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let _ = stop_tx.send(true);
        let mut all = Counts::default();
        rt.block_on(async {
            for h in handles {
                if let Ok(c) = h.await {
                    all.events += c.events;
                    all.lagged += c.lagged;
                    all.missed += c.missed;
                    all.lat_ms.extend(c.lat_ms);
                }
            }
        });
        all.lat_ms.sort_unstable();
        println!(
            "hold: clients {ok} failed {failed} events {} lagged {} missed {} latency_ms p50 {} p99 {} max {}",
            all.events,
            all.lagged,
            all.missed,
            pct(&all.lat_ms, 50.0),
            pct(&all.lat_ms, 99.0),
            all.lat_ms.last().copied().unwrap_or(0)
        );
        rt.shutdown_timeout(Duration::from_secs(1));
        if failed == 0 { 0 } else { 1 }
    }
}
