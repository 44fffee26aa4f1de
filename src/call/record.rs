//! Call records: what happened to one call, handed to a [`RecordSink`] when
//! the call ends. Storage (SQLite, the CRM outbox) comes with the CRM issue;
//! until then the shell's sink writes one log line per call.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::media::engine::LegStats;

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller (A leg).
    Caller,
    /// The called party (the answering B leg).
    Callee,
    /// The appliance itself (timeout, shutdown, a leg that died).
    System,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
            Side::System => "system",
        })
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// Answered, then a BYE.
    Normal,
    /// The caller gave up while it rang (CANCEL, or BYE in the early dialog).
    CallerCancelled,
    /// Refused before ringing anyone: unknown number (404), nobody
    /// registered (480), shutting down (503).
    Refused(u16),
    /// Every callee leg failed; the caller got this status.
    Failed(u16),
    /// Nobody answered within `calls.no_answer_timeout_s`.
    NoAnswer,
    /// `calls.max_duration_s` reached.
    MaxDuration,
    /// A leg stopped answering (ACK never came, a request timed out, 481).
    LegLost,
    /// RFC 4028 session interval passed without a refresh.
    SessionExpired,
    /// The appliance is shutting down.
    Shutdown,
    /// A party sent no RTP for the media timeout.
    MediaTimeout,
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndCause::Normal => f.write_str("normal"),
            EndCause::CallerCancelled => f.write_str("caller-cancelled"),
            EndCause::Refused(s) => write!(f, "refused-{s}"),
            EndCause::Failed(s) => write!(f, "failed-{s}"),
            EndCause::NoAnswer => f.write_str("no-answer"),
            EndCause::MaxDuration => f.write_str("max-duration"),
            EndCause::LegLost => f.write_str("leg-lost"),
            EndCause::SessionExpired => f.write_str("session-expired"),
            EndCause::Shutdown => f.write_str("shutdown"),
            EndCause::MediaTimeout => f.write_str("rtp-timeout"),
        }
    }
}

/// One leg of a call as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegRecord {
    pub call_id: String,
    /// The user part dialled (callee legs) or the caller's user part.
    pub user: String,
    pub peer: SocketAddr,
    /// Final status this leg answered (callee legs), if any.
    pub status: Option<u16>,
    /// Its media statistics (legs that carried audio).
    pub media: Option<LegStats>,
}

/// Everything kept about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The record's id ([`record_id`]): the call's CTI id, the store's key
    /// and the webhook's `Idempotency-Key`.
    pub id: String,
    /// The caller leg's Call-ID: the call's name in logs.
    pub call_id: String,
    pub caller: LegRecord,
    /// Every callee leg tried (forks, transfer targets), in order.
    pub callees: Vec<LegRecord>,
    /// The number dialled (Request-URI user).
    pub dialled: String,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub ended: Instant,
    pub cause: EndCause,
    /// Who hung up (answered calls) or gave up.
    pub hung_up_by: Side,
    /// Blind transfers executed in this call.
    pub transfers: u32,
    /// DTMF digits the caller sent, in order.
    pub digits: String,
    /// DTMF digits the other parties sent.
    pub callee_digits: String,
    /// The id of its recording (the writer names the file by Call-ID).
    pub recording: Option<u64>,
    /// Menus and queues it passed through (`ivr:main`, `queue:sales`).
    pub path: Vec<String>,
    /// Key/value data attached on the way (IVR entries, routes, CTI).
    pub data: Vec<(String, String)>,
    /// Time the call spent held over CTI.
    pub held_ms: u64,
    /// A hosted call: when it entered its (last) queue, when an agent's
    /// phone first rang for it, and when an agent answered.
    pub queued: Option<Instant>,
    pub offered: Option<Instant>,
    pub connected: Option<Instant>,
}

/// `k=v;k=v`: how attached data is written in logs and in the
/// `X-Switchboard-Data` header of an agent's INVITE.
pub fn data_text(data: &[(String, String)]) -> String {
    let pairs: Vec<String> = data.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(";")
}

/// Where finished call records go. The shard owns one; it must not block.
pub trait RecordSink: Send {
    fn handle_record(&mut self, record: CallRecord);
}

/// Logs each record as one line (the default until the store lands).
#[derive(Debug, Default)]
pub struct LogSink;

impl RecordSink for LogSink {
    fn handle_record(&mut self, r: CallRecord) {
        log_record(&r);
    }
}

/// Logs `r` as one `call ended` line.
pub fn log_record(r: &CallRecord) {
    let talk_ms = r
        .answered
        .map(|a| r.ended.saturating_duration_since(a).as_millis());
    let callees: Vec<String> = r
        .callees
        .iter()
        .map(|l| format!("{}:{}", l.user, l.status.unwrap_or(0)))
        .collect();
    tracing::info!(
        call_id = %r.call_id,
        from = %r.caller.user,
        to = %r.dialled,
        legs = %callees.join(","),
        cause = %r.cause,
        hung_up_by = %r.hung_up_by,
        setup_ms = r.answered.map(|a| a.saturating_duration_since(r.started).as_millis()),
        talk_ms,
        transfers = r.transfers,
        caller_rtp = r.caller.media.map(|m| m.packets_in),
        caller_lost = r.caller.media.map(|m| m.lost),
        callee_rtp = r.callees.iter().find_map(|c| c.media).map(|m| m.packets_in),
        digits = %r.digits,
        callee_digits = %r.callee_digits,
        recording = r.recording.map(|id| format!("{id:x}")),
        path = %r.path.join(">"),
        data = %data_text(&r.data),
        "call ended"
    );
}

/// A call's id: unique per call and stable (CTI events, the store, the CRM
/// webhook's `Idempotency-Key` and `/v1/calls/{id}` use it). Hex of the
/// start (unix ms) and a hash of the caller leg's Call-ID.
pub fn record_id(call_id: &str, started_unix_ms: i64) -> String {
    // FNV-1a: the same in every build and run (DefaultHasher is not
    // guaranteed to be).
    let h = call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{started_unix_ms:011x}-{h:016x}")
}

impl CallRecord {
    /// The agent who took the call: the user of the callee leg that
    /// answered.
    pub fn agent(&self) -> Option<&str> {
        self.callees
            .iter()
            .find(|l| l.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|l| l.user.as_str())
    }

    /// The last queue the call passed through.
    pub fn queue(&self) -> Option<&str> {
        self.path
            .iter()
            .rev()
            .find_map(|p| p.strip_prefix("queue:"))
    }

    /// The record as JSON (the store's and the webhook's body);
    /// `unix_ms` maps the engine's instants to wall-clock milliseconds.
    pub fn to_json(&self, id: &str, unix_ms: impl Fn(Instant) -> i64) -> serde_json::Value {
        let leg = |l: &LegRecord| {
            serde_json::json!({
                "call_id": l.call_id,
                "user": l.user,
                "peer": l.peer.to_string(),
                "status": l.status,
                "media": l.media.map(|m| serde_json::json!({
                    "packets_in": m.packets_in,
                    "packets_out": m.packets_out,
                    "lost": m.lost,
                    "jitter_us": m.jitter_us,
                    "mos": f64::from(m.mos_x100) / 100.0,
                })),
            })
        };
        let data: serde_json::Map<String, serde_json::Value> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({
            "id": id,
            "call_id": self.call_id,
            "caller": leg(&self.caller),
            "dialled": self.dialled,
            "legs": self.callees.iter().map(leg).collect::<Vec<_>>(),
            "agent": self.agent(),
            "queue": self.queue(),
            "path": self.path,
            "data": data,
            "started_ms": unix_ms(self.started),
            "answered_ms": self.answered.map(&unix_ms),
            "ended_ms": unix_ms(self.ended),
            "queue_ms": self.queued.map(|q| {
                self.offered.or(self.connected).unwrap_or(self.ended).saturating_duration_since(q).as_millis() as u64
            }),
            "ring_ms": self.offered.map(|o| {
                self.connected.unwrap_or(self.ended).saturating_duration_since(o).as_millis() as u64
            }),
            "connected_ms": self.connected.map(&unix_ms),
            "talk_ms": self
                .connected
                .or(self.answered)
                .map(|a| self.ended.saturating_duration_since(a).as_millis() as u64),
            "held_ms": self.held_ms,
            "cause": self.cause.to_string(),
            "hung_up_by": self.hung_up_by.to_string(),
            "transfers": self.transfers,
            "digits": self.digits,
            "callee_digits": self.callee_digits,
            "recording": self.recording.map(|r| format!("{r:x}")),
            "recording_url": self.recording.map(|_| format!("/v1/recordings/{id}")),
        })
    }
}
