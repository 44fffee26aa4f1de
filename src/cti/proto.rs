//! CTI protocol v1: the JSON messages on `/v1/cti` (WebSocket) and
//! `POST /v1/cti/{type}` (REST), parsed once at the edge into typed
//! [`Command`]s and rendered from typed replies and events.
//!
//! * A request is a JSON object `{"type": "<command>", "id": <any JSON>,
//!   ...}`; a command that acts on an agent names it in `agent`, one that
//!   acts on a call in `call` (CONTRACT).
//! * Each request gets exactly one reply, `{"type":"result","id":<the
//!   request's id>,"ok":true, ...}` or `{"type":"result","id":...,
//!   "ok":false,"error":{"code":"...","message":"..."}}`.
//! * Events are `{"type":"<event>","seq":N,"ts":<unix ms>, ...}`.
//!
//! Parsing never panics: anything that is not a known command with the
//! right fields is a [`ProtoError`] naming what is wrong, answered with an
//! error reply (docs/cti.md lists the codes).

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Why a request was refused; `code` is the stable, machine-readable part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

/// Error codes of replies (docs/cti.md "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// A known command with a missing or wrong field.
    BadRequest,
    /// `type` names no command.
    UnknownCommand,
    /// No token, or a token that is not configured.
    Unauthorized,
    /// The token's scope does not cover this agent or call.
    Forbidden,
    /// No such call, agent or queue.
    NotFound,
    /// The call or agent is not in a state where the command applies.
    InvalidState,
    /// The appliance does not do this (yet); the message says why.
    Unsupported,
    /// The message is larger than `cti.max_message_bytes`.
    TooLarge,
    /// The appliance is busy or stopping; try again.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status a REST request gets with this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadJson | ErrorCode::BadRequest | ErrorCode::UnknownCommand => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidState => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unsupported => 501,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state `agent.set_state` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WantedState {
    Ready,
    NotReady,
}

/// `call.record`'s action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAction {
    Pause,
    Resume,
}

/// Attached data: string keys and values (numbers and booleans given by a
/// client are kept as their JSON text).
pub type Data = Vec<(String, String)>;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    AgentLogin {
        agent: String,
    },
    AgentLogout {
        agent: String,
    },
    AgentSetState {
        agent: String,
        state: WantedState,
        reason: u16,
    },
    CallMake {
        agent: String,
        to: String,
        data: Data,
    },
    CallAnswer {
        call: String,
    },
    CallHangup {
        call: String,
    },
    CallHold {
        call: String,
    },
    CallRetrieve {
        call: String,
    },
    CallTransfer {
        call: String,
        to: String,
    },
    CallConsult {
        call: String,
        to: String,
    },
    CallTransferComplete {
        call: String,
    },
    CallConsultCancel {
        call: String,
    },
    CallConference {
        call: String,
    },
    CallSendDtmf {
        call: String,
        digits: String,
    },
    CallSetData {
        call: String,
        data: Data,
    },
    CallRecord {
        call: String,
        action: RecordAction,
    },
    CallWrapUp {
        call: String,
        disposition: String,
        notes: String,
    },
    Snapshot,
    Subscribe {
        /// None: every agent the token may see.
        agents: Option<Vec<String>>,
        queues: Option<Vec<String>>,
    },
}

/// Every command's `type`, in docs order.
pub const COMMANDS: &[&str] = &[
    "agent.login",
    "agent.logout",
    "agent.set_state",
    "call.make",
    "call.answer",
    "call.hangup",
    "call.hold",
    "call.retrieve",
    "call.transfer",
    "call.consult",
    "call.transfer_complete",
    "call.consult_cancel",
    "call.conference",
    "call.send_dtmf",
    "call.set_data",
    "call.record",
    "call.wrap_up",
    "snapshot",
    "subscribe",
];

/// Every event's `type`, in docs order.
pub const EVENTS: &[&str] = &[
    "agent.state",
    "call.offered",
    "call.ringing",
    "call.established",
    "call.held",
    "call.retrieved",
    "call.transferred",
    "call.conferenced",
    "call.dtmf",
    "call.recording",
    "call.data",
    "call.cleared",
    "call.wrap_up",
    "queue.stats",
];

/// Longest agent id, call id, number or disposition taken.
const MAX_ID: usize = 128;
/// Longest notes text.
const MAX_NOTES: usize = 4096;
/// Most attached-data entries in one command.
const MAX_DATA: usize = 64;

impl Command {
    /// The agent the command acts on.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Command::AgentLogin { agent }
            | Command::AgentLogout { agent }
            | Command::AgentSetState { agent, .. }
            | Command::CallMake { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// The call the command acts on.
    pub fn call(&self) -> Option<&str> {
        match self {
            Command::CallAnswer { call }
            | Command::CallHangup { call }
            | Command::CallHold { call }
            | Command::CallRetrieve { call }
            | Command::CallTransfer { call, .. }
            | Command::CallConsult { call, .. }
            | Command::CallTransferComplete { call }
            | Command::CallConsultCancel { call }
            | Command::CallConference { call }
            | Command::CallSendDtmf { call, .. }
            | Command::CallSetData { call, .. }
            | Command::CallRecord { call, .. }
            | Command::CallWrapUp { call, .. } => Some(call),
            _ => None,
        }
    }
}

/// A request: its client id (echoed in the reply) and its command.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Value,
    pub command: Command,
}

/// Parses one request. On error the client id is returned too (when the
/// message had one) so the error reply can carry it.
pub fn parse_request(bytes: &[u8]) -> Result<Request, (Value, ProtoError)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        (
            Value::Null,
            ProtoError::new(ErrorCode::BadJson, format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err((
            Value::Null,
            ProtoError::new(ErrorCode::BadJson, "expected a JSON object"),
        ));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Err((
            id,
            ProtoError::new(ErrorCode::BadRequest, "missing \"type\" (a command name)"),
        ));
    };
    let kind = kind.to_owned();
    parse_command(&kind, obj)
        .map(|command| Request {
            id: id.clone(),
            command,
        })
        .map_err(|e| (id, e))
}

/// The command `kind` from the fields of `obj` (REST bodies come here with
/// the `type` taken from the path).
pub fn parse_command(kind: &str, obj: Map<String, Value>) -> Result<Command, ProtoError> {
    let f = Fields { kind, obj };
    let cmd = match kind {
        "agent.login" => Command::AgentLogin {
            agent: f.id("agent")?,
        },
        "agent.logout" => Command::AgentLogout {
            agent: f.id("agent")?,
        },
        "agent.set_state" => Command::AgentSetState {
            agent: f.id("agent")?,
            state: f.typed("state")?,
            reason: f.opt_typed::<u16>("reason")?.unwrap_or(0),
        },
        "call.make" => Command::CallMake {
            agent: f.id("agent")?,
            to: f.id("to")?,
            data: f.data("data")?,
        },
        "call.answer" => Command::CallAnswer {
            call: f.id("call")?,
        },
        "call.hangup" => Command::CallHangup {
            call: f.id("call")?,
        },
        "call.hold" => Command::CallHold {
            call: f.id("call")?,
        },
        "call.retrieve" => Command::CallRetrieve {
            call: f.id("call")?,
        },
        "call.transfer" => Command::CallTransfer {
            call: f.id("call")?,
            to: f.id("to")?,
        },
        "call.consult" => Command::CallConsult {
            call: f.id("call")?,
            to: f.id("to")?,
        },
        "call.transfer_complete" => Command::CallTransferComplete {
            call: f.id("call")?,
        },
        "call.consult_cancel" => Command::CallConsultCancel {
            call: f.id("call")?,
        },
        "call.conference" => Command::CallConference {
            call: f.id("call")?,
        },
        "call.send_dtmf" => {
            let digits = f.id("digits")?;
            if let Some(bad) = digits.chars().find(|c| !is_dtmf(*c)) {
                return Err(f.bad(format!(
                    "\"digits\": {bad:?} is not a DTMF key (expected 0-9, *, #, A-D)"
                )));
            }
            Command::CallSendDtmf {
                call: f.id("call")?,
                digits,
            }
        }
        "call.set_data" => {
            let data = f.data("data")?;
            if data.is_empty() {
                return Err(f.bad("\"data\": expected a non-empty object of key: value"));
            }
            Command::CallSetData {
                call: f.id("call")?,
                data,
            }
        }
        "call.record" => Command::CallRecord {
            call: f.id("call")?,
            action: f.typed("action")?,
        },
        "call.wrap_up" => Command::CallWrapUp {
            call: f.id("call")?,
            disposition: f.opt_text("disposition", MAX_ID)?.unwrap_or_default(),
            notes: f.opt_text("notes", MAX_NOTES)?.unwrap_or_default(),
        },
        "snapshot" => Command::Snapshot,
        "subscribe" => Command::Subscribe {
            agents: f.opt_list("agents")?,
            queues: f.opt_list("queues")?,
        },
        other => {
            let mut shown: String = other.chars().take(64).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(ProtoError::new(
                ErrorCode::UnknownCommand,
                format!("{shown:?} is not a command (docs/cti.md lists them)"),
            ));
        }
    };
    Ok(cmd)
}

fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// A request's fields, read with messages that name the field.
struct Fields<'a> {
    kind: &'a str,
    obj: Map<String, Value>,
}

impl Fields<'_> {
    fn bad(&self, what: impl std::fmt::Display) -> ProtoError {
        ProtoError::new(ErrorCode::BadRequest, format!("{}: {what}", self.kind))
    }

    /// A required non-empty string of at most [`MAX_ID`] characters
    /// without control characters.
    fn id(&self, key: &str) -> Result<String, ProtoError> {
        let id = self
            .opt_text(key, MAX_ID)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.bad(format!("missing \"{key}\" (a non-empty string)")))?;
        if id.chars().any(char::is_control) {
            return Err(self.bad(format!("\"{key}\" contains control characters")));
        }
        Ok(id)
    }

    fn opt_text(&self, key: &str, max: usize) -> Result<Option<String>, ProtoError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(self.bad(format!("\"{key}\" is longer than {max} characters")))
            }
            Some(Value::String(s)) if s.chars().any(|c| c.is_control() && c != '\n') => {
                Err(self.bad(format!("\"{key}\" contains control characters")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.bad(format!("\"{key}\" must be a string"))),
        }
    }

    fn typed<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<T, ProtoError> {
        self.opt_typed(key)?
            .ok_or_else(|| self.bad(format!("missing \"{key}\"")))
    }

    fn opt_typed<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, ProtoError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| self.bad(format!("\"{key}\": {e}"))),
        }
    }

    fn data(&self, key: &str) -> Result<Data, ProtoError> {
        let obj = match self.obj.get(key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(self.bad(format!("\"{key}\" must be an object of key: value"))),
        };
        if obj.len() > MAX_DATA {
            return Err(self.bad(format!("\"{key}\" has more than {MAX_DATA} entries")));
        }
        let mut out = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => {
                    return Err(self.bad(format!(
                        "\"{key}\".{k}: values must be strings, numbers or booleans"
                    )));
                }
            };
            let clean = |s: &str| {
                !s.is_empty()
                    && s.len() <= MAX_ID
                    && !s.chars().any(|c| c.is_control() || c == ';' || c == '=')
            };
            if !clean(k) || (!text.is_empty() && !clean(&text)) {
                return Err(self.bad(format!(
                    "\"{key}\".{k:?}: keys and values are at most {MAX_ID} characters without control characters, ';' or '='"
                )));
            }
            out.push((k.clone(), text));
        }
        Ok(out)
    }

    fn opt_list(&self, key: &str) -> Result<Option<Vec<String>>, ProtoError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() && s.len() <= MAX_ID => Ok(s.clone()),
                    _ => Err(self.bad(format!("\"{key}\" must be an array of names"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.bad(format!("\"{key}\" must be an array of names"))),
        }
    }
}

/// A success reply, with `extra` fields merged in.
pub fn ok_reply(id: &Value, extra: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), "result".into());
    m.insert("id".into(), id.clone());
    m.insert("ok".into(), true.into());
    m.extend(extra);
    Value::Object(m)
}

/// An error reply.
pub fn error_reply(id: &Value, e: &ProtoError) -> Value {
    json!({
        "type": "result",
        "id": id,
        "ok": false,
        "error": {"code": e.code.as_str(), "message": e.message},
    })
}

/// `data` as a JSON object.
pub fn data_json(data: &[(String, String)]) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Command, (Value, ProtoError)> {
        parse_request(text.as_bytes()).map(|r| r.command)
    }

    fn code(text: &str) -> ErrorCode {
        parse(text).unwrap_err().1.code
    }

    #[test]
    fn every_command_parses_with_its_fields() {
        assert_eq!(
            parse(
                r#"{"type":"agent.set_state","id":1,"agent":"1002","state":"not_ready","reason":3}"#
            )
            .unwrap(),
            Command::AgentSetState {
                agent: "1002".into(),
                state: WantedState::NotReady,
                reason: 3
            }
        );
        assert_eq!(
            parse(r#"{"type":"call.make","id":"a","agent":"1002","to":"+815012345678","data":{"ticket":42}}"#)
                .unwrap(),
            Command::CallMake {
                agent: "1002".into(),
                to: "+815012345678".into(),
                data: vec![("ticket".into(), "42".into())]
            }
        );
        assert_eq!(
            parse(r#"{"type":"call.wrap_up","id":2,"call":"c1","disposition":"sale"}"#).unwrap(),
            Command::CallWrapUp {
                call: "c1".into(),
                disposition: "sale".into(),
                notes: String::new()
            }
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","id":3,"queues":["support"]}"#).unwrap(),
            Command::Subscribe {
                agents: None,
                queues: Some(vec!["support".into()])
            }
        );
        assert_eq!(parse(r#"{"type":"snapshot"}"#).unwrap(), Command::Snapshot);
    }

    #[test]
    fn every_listed_command_is_known() {
        for c in COMMANDS {
            let text = format!(r#"{{"type":"{c}","id":1}}"#);
            assert_ne!(
                parse(&text).err().map(|e| e.1.code),
                Some(ErrorCode::UnknownCommand),
                "{c}"
            );
        }
    }

    #[test]
    fn bad_requests_name_the_problem_and_keep_the_id() {
        let (id, e) = parse_request(br#"{"type":"call.hangup","id":7}"#).unwrap_err();
        assert_eq!(id, Value::from(7));
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(
            e.message,
            "call.hangup: missing \"call\" (a non-empty string)"
        );
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"call.explode","id":1}"#),
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            code(r#"{"type":"agent.set_state","agent":"1","state":"asleep"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"call.send_dtmf","call":"c","digits":"12x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"call.set_data","call":"c","data":{"a":{"b":1}}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"call.set_data","call":"c","data":{"a;b":"1"}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"call.hangup","call":"a\nb"}"#),
            ErrorCode::BadRequest
        );
        let long = "x".repeat(200);
        assert_eq!(
            code(&format!(r#"{{"type":"call.hangup","call":"{long}"}}"#)),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn replies_have_the_contract_shape() {
        let id = Value::from("r1");
        assert_eq!(
            ok_reply(&id, Map::new()),
            json!({"type":"result","id":"r1","ok":true})
        );
        let e = ProtoError::new(ErrorCode::Forbidden, "no");
        assert_eq!(
            error_reply(&id, &e),
            json!({"type":"result","id":"r1","ok":false,"error":{"code":"forbidden","message":"no"}})
        );
    }
}
