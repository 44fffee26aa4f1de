//! The shell: everything that touches the real world — threads, CPU pinning,
//! sockets, the I/O drivers (io_uring, or epoll + recvmmsg/sendmmsg), the
//! timer wheels, the cross-shard mesh, signals, the clock and the OS RNG.
//!
//! [`run`] starts one shard thread per configured core (`node.cores`), pinned
//! with `sched_setaffinity`. Every shard binds its own UDP socket and TCP
//! listener on every `sip.listen` address with `SO_REUSEPORT`, so the kernel
//! spreads datagrams and accepted connections over the shards; a connection
//! belongs to the shard that accepted it. Messages owned by another shard go
//! there over the mesh (see [`crate::sip::endpoint`] for the ownership rule).
//!
//! Readiness is logged once every shard has bound its sockets. SIGTERM or
//! SIGINT: shards stop taking new INVITEs, finish what is pending (at most
//! `shell.drain_timeout_s`), the counters are printed and `run` returns.

// The shell is where the clock, sleeping and OS randomness live (.clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod acd;
pub mod driver;
pub mod mesh;
pub mod records;
pub mod recwriter;
pub mod shard;
pub mod wheel;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::call::dialog::Local;
use crate::call::{CallConfig, ContactPlan};
use crate::config::{Config, Cores, DigestAlgorithm as CfgAlgorithm, DriverChoice, Transport};
use crate::media::prompts::Prompts;
use crate::sip::auth::DigestAlgorithm;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::ids::ShardId;
use crate::sip::message::Limits;
use crate::sip::registrar::RegistrarLimits;
use crate::sip::transaction::TimerConfig;
use crate::stats::{ShardCounters, Snapshot};
use driver::{Choice, DriverOptions, Waker};
use mesh::Mesh;
use shard::{Shard, ShardSettings};

/// Why the appliance could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("node.cores: {0}")]
    Cores(String),
    #[error("shard {shard}: {what}: {source}")]
    Io {
        shard: u16,
        what: String,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the ACD thread: {0}")]
    Acd(std::io::Error),
    #[error("shard {0} stopped unexpectedly")]
    ShardDied(u16),
    #[error(transparent)]
    ControlPlane(#[from] crate::cti::CtiError),
    #[error("recordings in {dir}: {source}")]
    Recordings { dir: String, source: std::io::Error },
    #[error("call records: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("call records: cannot start the writer thread: {0}")]
    RecordWriter(std::io::Error),
    #[error("crm.lookup.url: {0}")]
    CrmLookup(#[from] crate::crm::lookup::LookupError),
    #[error("cannot start CRM webhook delivery: {0}")]
    Webhook(#[from] crate::crm::webhook::WebhookError),
}

/// The CPUs shards run on, checked against this process's affinity mask.
pub fn resolve_cores(cores: &Cores) -> Result<Vec<usize>, ShellError> {
    let mask = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| ShellError::Cores(format!("cannot read CPU affinity: {e}")))?;
    let available: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| mask.is_set(c).unwrap_or(false))
        .collect();
    match cores {
        Cores::All => {
            if available.is_empty() {
                return Err(ShellError::Cores("no CPU available".into()));
            }
            Ok(available)
        }
        Cores::List(list) => {
            for c in list {
                if !available.contains(c) {
                    return Err(ShellError::Cores(format!(
                        "CPU {c} is not available to this process (available: {available:?})"
                    )));
                }
            }
            Ok(list.clone())
        }
    }
}

/// Moves the calling thread (and the threads it starts next) to the CPUs
/// this process may use other than `shards`; a no-op when there are none.
fn keep_off(shards: &[usize]) {
    let Ok(mask) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let mut rest = CpuSet::new();
    let mut any = false;
    for c in (0..CpuSet::count()).filter(|c| !shards.contains(c)) {
        if mask.is_set(c).unwrap_or(false) && rest.set(c).is_ok() {
            any = true;
        }
    }
    if any && let Err(e) = sched_setaffinity(Pid::from_raw(0), &rest) {
        tracing::debug!(error = %e, "cannot move the control threads off the shard CPUs");
    }
}

fn pin(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// Maps the config to one shard's endpoint settings.
fn endpoint_config(
    cfg: &Config,
    prompts: &Prompts,
    plan: &Arc<ContactPlan>,
    shard: u16,
    shards: u16,
    nonce_key: [u8; 32],
    seed: u64,
) -> EndpointConfig {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    EndpointConfig {
        shard: ShardId(shard),
        shards,
        domain: cfg.sip.domain.clone(),
        server: cfg.sip.user_agent.clone(),
        timers: TimerConfig {
            t1: cfg.sip.t1,
            t2: cfg.sip.t2,
            t4: cfg.sip.t4,
        },
        limits: Limits {
            max_message_bytes: cfg.sip.max_message_bytes,
            max_headers: cfg.sip.max_headers,
        },
        registrar: RegistrarLimits {
            min_expires: secs(cfg.registrar.min_expires),
            max_expires: secs(cfg.registrar.max_expires),
            default_expires: secs(cfg.registrar.default_expires),
            max_contacts: cfg.registrar.max_contacts,
        },
        nonce_lifetime: cfg.registrar.nonce_lifetime,
        algorithms: cfg
            .registrar
            .digest_algorithms
            .iter()
            .map(|a| match a {
                CfgAlgorithm::Sha256 => DigestAlgorithm::Sha256,
                CfgAlgorithm::Md5 => DigestAlgorithm::Md5,
            })
            .collect(),
        nonce_key,
        md5_only_user_agents: cfg
            .registrar
            .md5_only_user_agents
            .iter()
            .map(|f| f.to_ascii_lowercase())
            .collect(),
        users: cfg
            .users
            .iter()
            .map(|u| (u.id.clone(), u.password.clone()))
            .collect(),
        seed,
        call: CallConfig {
            shard: ShardId(shard),
            domain: cfg.sip.domain.clone(),
            user_agent: cfg.sip.user_agent.clone(),
            timers: TimerConfig {
                t1: cfg.sip.t1,
                t2: cfg.sip.t2,
                t4: cfg.sip.t4,
            },
            local: Local {
                listen: cfg
                    .sip
                    .listen
                    .iter()
                    .map(|l| (l.addr, l.transport == Transport::Tcp))
                    .collect(),
            },
            users: cfg.users.iter().map(|u| u.id.clone()).collect(),
            no_answer: cfg.calls.no_answer_timeout,
            max_duration: cfg.calls.max_duration,
            session_expires: secs(cfg.calls.session_expires),
            min_se: secs(cfg.calls.min_se),
            seed: seed.rotate_left(17),
            media: crate::media::engine::MediaConfig {
                ip: media_ip(cfg),
                rtp_timeout: cfg.media.rtp_timeout,
                hold_timeout: cfg.media.hold_timeout,
                transcode: cfg.media.transcode,
                inband_dtmf: cfg.media.inband_dtmf,
                seed: seed.rotate_left(29),
                shard,
                hold_music: cfg.media.hold_music.as_deref().and_then(|n| prompts.get(n)),
                wall: Some(wall_clock()),
            },
            recording: cfg.recording.clone(),
            contact: Some(plan.clone()),
        },
    }
}

/// Now, and now in Unix milliseconds.
fn wall_clock() -> (Instant, u64) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (Instant::now(), unix)
}

/// The address media binds to and SDP names: `media.ip`, else the first
/// SIP listen address's IP.
fn media_ip(cfg: &Config) -> std::net::IpAddr {
    cfg.media.ip.unwrap_or_else(|| {
        cfg.sip
            .listen
            .first()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |l| l.addr.ip())
    })
}

/// Raises the soft limit on open files to the hard one: every RTP port is
/// a socket, and the io_uring driver's registered file table is sized by
/// it. Warns when even the hard limit cannot hold the configured ports.
fn raise_file_limit(cfg: &Config, shards: u16) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let ports = u64::from(cfg.media.rtp_ports.high - cfg.media.rtp_ports.low) + 1;
    // Sockets for every RTP/RTCP port, plus each shard's TCP connections,
    // listeners and files.
    let per_shard = cfg.sip.tcp_max_connections as u64 + 64;
    let wanted = ports + per_shard * u64::from(shards);
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "the open-file limit (ulimit -n) is below what media.rtp_ports and \
             sip.tcp_max_connections need; raise it (LimitNOFILE= in the systemd unit)"
        );
    } else {
        tracing::debug!(limit, "open-file limit");
    }
}

/// Shard `shard`'s slice of `media.rtp_ports`, as its first RTP port and
/// the number of RTP/RTCP pairs (each shard owns a contiguous run, so a
/// port names its shard).
pub fn port_slice(low: u16, high: u16, shard: u16, shards: u16) -> (u16, u16) {
    let first = low + (low & 1);
    let pairs = u32::from(high.saturating_sub(first).saturating_add(1)) / 2;
    let (i, n) = (u32::from(shard), u32::from(shards.max(1)));
    let start = pairs * i / n;
    let end = pairs * (i + 1) / n;
    // invariant: start <= pairs <= 32768, so the port stays within u16.
    ((u32::from(first) + 2 * start) as u16, (end - start) as u16)
}

enum Event {
    Signal(i32),
    ShardExited(u16, Result<(), ShellError>),
}

/// Starts the shards, waits for SIGTERM/SIGINT, drains and stops them, and
/// prints the counters. Returns once every shard has exited.
pub fn run(
    cfg: Config,
    prompts: Prompts,
    directory: Option<Arc<crate::crm::Directory>>,
) -> Result<(), ShellError> {
    let cpus = resolve_cores(&cfg.node.cores)?;
    let n = cpus.len();
    let shards = u16::try_from(n)
        .map_err(|_| ShellError::Cores(format!("{n} cores is more than supported")))?;
    raise_file_limit(&cfg, shards);
    let epoch = Instant::now();
    let nonce_key: [u8; 32] = rand::random();
    let mesh = Mesh::new(n, cfg.shell.mesh_capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<ShardCounters>> =
        (0..n).map(|_| Arc::new(ShardCounters::default())).collect();
    let (ready_tx, ready_rx) = unbounded::<(u16, Result<(Waker, &'static str), ShellError>)>();
    let (event_tx, event_rx) = unbounded::<Event>();
    let choice = match cfg.shell.driver {
        DriverChoice::Auto => Choice::Auto,
        DriverChoice::IoUring => Choice::IoUring,
        DriverChoice::Epoll => Choice::Epoll,
    };
    // Recordings a killed appliance left open get their headers fixed
    // before anything new is written; then the writer starts.
    let rec_dir = cfg.node.data_dir.join("recordings");
    let rec_err = |source| ShellError::Recordings {
        dir: rec_dir.display().to_string(),
        source,
    };
    match recwriter::repair_open_recordings(&rec_dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            repaired = n,
            "recordings left open by an earlier run repaired"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(rec_err(e)),
    }
    // The writer thread (and this thread, which only waits for signals)
    // stay off the shards' CPUs when there are others.
    keep_off(&cpus);
    // The contact center: the plan every shard reads (and the ACD thread
    // below).
    let http_lookup = !cfg.crm.lookup.url.is_empty();
    let plan = Arc::new(ContactPlan {
        directory,
        lookup_http: http_lookup.then_some(cfg.crm.lookup.timeout),
        ..ContactPlan::new(&cfg.contact, prompts.clone(), rand::random())
    });
    // Call records: the store opens (or is created) now, so a broken
    // database stops the start with its path named.
    let store = crate::store::Store::open(&cfg.node.data_dir)?;
    // CRM webhook delivery from the outbox (its own thread and store
    // connection), started first so the record writer can wake it after
    // each commit. No URL: nothing is POSTed and the outbox rows stay.
    let webhook = if cfg.crm.webhook.url.is_empty() {
        None
    } else {
        let settings = crate::crm::webhook::WebhookSettings::from_config(&cfg.crm.webhook);
        Some(crate::crm::webhook::start(settings, &cfg.node.data_dir)?)
    };
    // Queue calls' records wait for their agents' wrap-up.
    let finisher = crate::call::wrapup::Finisher::new(
        cfg.contact
            .queues
            .iter()
            .map(|q| (q.name.clone(), q.wrap_up, q.wrap_up_max)),
    );
    let (record_writer, record_tx) = records::start(
        store,
        records::WallClock::at(Instant::now()),
        finisher,
        webhook.as_ref().map(|(_, waker)| waker.clone()),
    )
    .map_err(ShellError::RecordWriter)?;
    // The control plane (HTTP on cti.listen): bound now, so a taken port
    // stops the start with a clear error.
    let acd_link = acd::AcdLink::new(n);
    let cti_link = Arc::new(crate::cti::link::CtiLink::new(n));
    let control_plane = crate::cti::start(
        cfg.cti.listen,
        crate::cti::Plane {
            counters: counters.clone(),
            acd_stats: Box::new({
                let link = acd_link.clone();
                move || link.stats.load_full()
            }),
            started: epoch,
        },
        crate::cti::CtiSetup {
            tokens: cfg.cti.tokens.clone(),
            tls: cfg.cti.tls.clone(),
            max_message_bytes: cfg.cti.max_message_bytes,
            link: cti_link.clone(),
            agents: (0..plan.acd.agents())
                .map(|i| {
                    // invariant: the ACD numbers its agents 0..agents() < u32::MAX.
                    let id = crate::acd::AgentId(i as u32);
                    (plan.acd.agent_name(id).to_owned(), id)
                })
                .collect(),
            queues: cfg.contact.queues.iter().map(|q| q.name.clone()).collect(),
            data_dir: cfg.node.data_dir.clone(),
            webhook: webhook.as_ref().map(|(_, waker)| waker.clone()),
            lookup: if http_lookup {
                Some(crate::crm::lookup::Lookup::http(&cfg.crm.lookup)?)
            } else {
                None
            },
            records: Some(Box::new({
                let tx = record_tx.clone();
                move |m| {
                    let _ = tx.send(records::WriterMsg::Cti(m));
                }
            })),
        },
    )?;
    let rec_counters = Arc::new(recwriter::RecCounters::default());
    let (rec_writer, rec_sink) =
        recwriter::start(rec_dir.clone(), rec_counters.clone()).map_err(rec_err)?;
    let cfg = Arc::new(cfg);
    let acd_stop = Arc::new(AtomicBool::new(false));
    let acd_wakers = Arc::new(std::sync::OnceLock::new());
    let acd_engine = crate::acd::Engine::new(
        crate::acd::Settings::from_config(&cfg.contact, rand::random()),
        Instant::now(),
    );
    let acd_thread = acd::start(
        acd_engine,
        acd_link.clone(),
        acd_stop.clone(),
        acd_wakers.clone(),
        cti_link.clone(),
    )
    .map_err(ShellError::Acd)?;

    let mut go_senders: Vec<Sender<Arc<Vec<Waker>>>> = Vec::new();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        // invariant: i < n <= u16::MAX (checked above).
        let id = i as u16;
        let (go_tx, go_rx) = bounded::<Arc<Vec<Waker>>>(1);
        go_senders.push(go_tx);
        let ctx = ShardContext {
            id,
            cpu,
            shards,
            cfg: cfg.clone(),
            choice,
            mesh: mesh.clone(),
            stop: stop.clone(),
            counters: counters[i].clone(),
            epoch,
            nonce_key,
            seed: rand::random(),
            recordings: rec_sink.clone(),
            prompts: prompts.clone(),
            plan: plan.clone(),
            acd: acd_link.clone(),
            cti: cti_link.clone(),
            records: record_tx.clone(),
        };
        let ready_tx = ready_tx.clone();
        let event_tx = event_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                let r = shard_main(ctx, &ready_tx, &go_rx);
                let _ = event_tx.send(Event::ShardExited(id, r));
            })
            .map_err(|e| ShellError::Io {
                shard: id,
                what: "cannot start thread".into(),
                source: e,
            })?;
        handles.push(h);
    }
    drop(ready_tx);

    // Wait until every shard has bound its sockets (or one failed).
    let mut wakers: HashMap<u16, Waker> = HashMap::new();
    let mut driver_name = "";
    let mut failure = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok((id, Ok((w, name)))) => {
                wakers.insert(id, w);
                driver_name = name;
            }
            Ok((_, Err(e))) => {
                failure = Some(e);
                break;
            }
            Err(_) => break,
        }
    }
    // Every shard waits for the wakers before its loop; on a failure it
    // sees `stop` set and returns at once.
    if failure.is_some() {
        stop.store(true, Ordering::Relaxed);
    }
    let ordered: Arc<Vec<Waker>> = Arc::new(
        (0..shards)
            .filter_map(|i| wakers.get(&i).cloned())
            .collect(),
    );
    let _ = acd_wakers.set(ordered.clone());
    cti_link.set_wakers(
        {
            let w = ordered.clone();
            move |s| {
                if let Some(w) = w.get(s) {
                    w.wake();
                }
            }
        },
        {
            let l = acd_link.clone();
            move || l.wake_acd()
        },
    );
    for g in &go_senders {
        let _ = g.send(ordered.clone());
    }
    if let Some(e) = failure {
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    let listen: Vec<String> = cfg.sip.listen.iter().map(ToString::to_string).collect();
    tracing::info!(
        shards = n,
        cores = ?cpus,
        driver = driver_name,
        listen = %listen.join(","),
        "switchboard ready"
    );

    // Signals arrive on their own thread and join the event stream.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(ShellError::Signals)?;
    let sig_handle = signals.handle();
    {
        let event_tx = event_tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for s in signals.forever() {
                    if event_tx.send(Event::Signal(s)).is_err() {
                        break;
                    }
                }
            })
            .map_err(ShellError::Signals)?;
    }
    drop(event_tx);

    let result = wait_and_drain(&event_rx, n, &stop, &ordered);
    sig_handle.close();
    for h in handles {
        let _ = h.join();
    }
    // The shards' last inputs (calls ended by the drain) are in the rings.
    acd_stop.store(true, Ordering::Relaxed);
    acd_link.wake_acd();
    let _ = acd_thread.join();
    control_plane.stop();
    // Every shard's sender is gone with its thread: the writer stores what
    // they sent and ends.
    drop(record_tx);
    record_writer.stop();
    // Rows not delivered yet stay in the outbox for the next start.
    if let Some((webhook, _)) = webhook {
        webhook.stop();
    }
    // The shards handed over their last recording ops when they ended
    // their calls: the writer finishes them.
    rec_writer.stop();
    let snapshot = Snapshot::sum(counters.iter().map(|c| c.as_ref()));
    for line in snapshot.to_string().lines() {
        tracing::info!("counters: {line}");
    }
    let rc = &rec_counters;
    tracing::info!(
        "counters: recordings: opened={} closed={} bytes_written={} write_errors={} dropped_ops={} repaired={}",
        rc.opened.get(),
        rc.closed.get(),
        rc.bytes_written.get(),
        rc.write_errors.get(),
        rc.dropped_ops.load(Ordering::Relaxed),
        rc.repaired.get()
    );
    if mesh.dropped() > 0 {
        tracing::warn!(
            dropped = mesh.dropped(),
            "mesh messages dropped on full queues"
        );
    }
    tracing::info!("switchboard stopped");
    result
}

fn wait_and_drain(
    events: &Receiver<Event>,
    n: usize,
    stop: &AtomicBool,
    wakers: &[Waker],
) -> Result<(), ShellError> {
    let mut exited = 0;
    let mut result = Ok(());
    let begin_stop = || {
        stop.store(true, Ordering::Relaxed);
        for w in wakers {
            w.wake();
        }
    };
    while exited < n {
        match events.recv() {
            Ok(Event::Signal(s)) => {
                if !stop.load(Ordering::Relaxed) {
                    tracing::info!(signal = s, "stopping: draining shards");
                }
                begin_stop();
            }
            Ok(Event::ShardExited(id, r)) => {
                exited += 1;
                if !stop.load(Ordering::Relaxed) {
                    // A shard ended on its own: that is a failure; stop all.
                    tracing::error!(shard = id, "shard exited unexpectedly, stopping");
                    result = Err(r.err().unwrap_or(ShellError::ShardDied(id)));
                    begin_stop();
                } else if let Err(e) = r {
                    tracing::error!(shard = id, error = %e, "shard failed while stopping");
                    result = Err(e);
                }
            }
            Err(_) => break,
        }
    }
    result
}

struct ShardContext {
    id: u16,
    cpu: usize,
    shards: u16,
    cfg: Arc<Config>,
    choice: Choice,
    mesh: Arc<Mesh>,
    stop: Arc<AtomicBool>,
    counters: Arc<ShardCounters>,
    epoch: Instant,
    nonce_key: [u8; 32],
    seed: u64,
    recordings: recwriter::RecordingSink,
    prompts: Prompts,
    plan: Arc<ContactPlan>,
    acd: Arc<acd::AcdLink>,
    cti: Arc<crate::cti::link::CtiLink>,
    records: Sender<records::WriterMsg>,
}

type Ready = Sender<(u16, Result<(Waker, &'static str), ShellError>)>;

fn shard_main(
    ctx: ShardContext,
    ready: &Ready,
    go: &Receiver<Arc<Vec<Waker>>>,
) -> Result<(), ShellError> {
    let id = ctx.id;
    let io = |what: String| {
        move |source| ShellError::Io {
            shard: id,
            what,
            source,
        }
    };
    let setup = || -> Result<(Box<dyn driver::Driver>, Shard), ShellError> {
        pin(ctx.cpu)
            .map_err(|e| io(format!("cannot pin to CPU {}", ctx.cpu))(std::io::Error::from(e)))?;
        let media_ports = port_slice(
            ctx.cfg.media.rtp_ports.low,
            ctx.cfg.media.rtp_ports.high,
            id,
            ctx.shards,
        );
        let opts = DriverOptions {
            batch: ctx.cfg.shell.batch,
            ring_entries: ctx.cfg.shell.ring_entries,
            max_datagram: ctx.cfg.sip.max_message_bytes.max(1),
            // 4 receive buffers per media socket (two per pair of the
            // shard's slice), within what one buffer ring holds.
            media_buffers: (8 * usize::from(media_ports.1)).clamp(4096, 32768),
            ..DriverOptions::default()
        };
        let mut drv =
            driver::open(ctx.choice, &opts).map_err(io("cannot open the I/O driver".into()))?;
        let now = Instant::now();
        let endpoint = Endpoint::new(
            endpoint_config(
                &ctx.cfg,
                &ctx.prompts,
                &ctx.plan,
                id,
                ctx.shards,
                ctx.nonce_key,
                ctx.seed,
            ),
            ctx.epoch,
            ctx.counters.clone(),
        );
        let settings = ShardSettings {
            timer_tick: ctx.cfg.shell.timer_tick,
            tcp_idle_timeout: ctx.cfg.sip.tcp_idle_timeout,
            tcp_message_timeout: ctx.cfg.sip.tcp_message_timeout,
            tcp_max_connections: ctx.cfg.sip.tcp_max_connections,
            max_message_bytes: ctx.cfg.sip.max_message_bytes,
            drain_timeout: ctx.cfg.shell.drain_timeout,
            media_ip: media_ip(&ctx.cfg),
            media_ports,
        };
        let mut shard = Shard::new(
            ShardId(id),
            endpoint,
            settings,
            ctx.counters.clone(),
            ctx.mesh.clone(),
            now,
        );
        for (i, l) in ctx.cfg.sip.listen.iter().enumerate() {
            // invariant: the config limits listen entries far below u16::MAX.
            let idx = i as u16;
            match l.transport {
                Transport::Udp => {
                    let s = driver::bind_udp_reuseport(l.addr)
                        .map_err(io(format!("cannot bind {l}")))?;
                    let sock = drv.add_udp(s).map_err(io(format!("cannot register {l}")))?;
                    shard.udp_listen.insert(sock, idx);
                    shard.listen_udp.insert(idx, sock);
                }
                Transport::Tcp => {
                    let s = driver::bind_tcp_reuseport(l.addr)
                        .map_err(io(format!("cannot listen on {l}")))?;
                    let lid = drv
                        .add_listener(s)
                        .map_err(io(format!("cannot register {l}")))?;
                    shard.tcp_listeners.insert(lid, idx);
                }
            }
        }
        shard.recordings = Some(ctx.recordings.clone());
        shard.acd = Some(ctx.acd.clone());
        shard.cti = Some(ctx.cti.clone());
        shard.records = Box::new(records::StoreSink::new(ctx.records.clone()));
        if !shard.bind_initial_media(drv.as_mut(), Duration::from_secs(2)) {
            return Err(ShellError::Io {
                shard: id,
                what: format!(
                    "no RTP port pair of media.rtp_ports {} could be bound on {}",
                    ctx.cfg.media.rtp_ports,
                    media_ip(&ctx.cfg)
                ),
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            });
        }
        Ok((drv, shard))
    };
    let (mut drv, mut shard) = match setup() {
        Ok(x) => x,
        Err(e) => {
            // Reported through `ready`; `run` stops every shard and returns it.
            let _ = ready.send((id, Err(e)));
            return Ok(());
        }
    };
    let _ = ready.send((id, Ok((drv.waker(), drv.name()))));
    let Ok(wakers) = go.recv() else {
        return Ok(());
    };
    if ctx.stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let result = shard
        .run(drv.as_mut(), &wakers, &ctx.stop)
        .map_err(|e| ShellError::Io {
            shard: id,
            what: "I/O loop".into(),
            source: e,
        });
    let d = drv.stats();
    tracing::info!(
        shard = id,
        send_errors = d.send_errors,
        send_dropped = d.send_dropped,
        dropped_truncated = d.dropped_truncated,
        buffers_exhausted = d.buffers_exhausted,
        icmp_errors = d.icmp_errors,
        accept_errors = d.accept_errors,
        syscalls = d.syscalls,
        "counters: driver"
    );
    result
}
