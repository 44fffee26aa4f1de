//! Keeps docs/cti.md and docs/cti.schema.json true to the CTI protocol v1
//! parser (`switchboard::cti::proto`).
//!
//! Every fenced example in docs/cti.md is tagged in its info string (the
//! convention is written at the top of the .md): ```` ```json request ````,
//! `reply`, `event`, `record`, `body <command>` (a REST body) or `http`.
//! Requests must parse into the command their `type` names, REST bodies into
//! the command their path names; requests, replies, events and records must
//! validate against the schema; every command and every emitted event must
//! have an example; the error table must match `ErrorCode`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};
use switchboard::cti::proto::{self, COMMANDS, Command, EVENTS, ErrorCode};

/// Events sent besides the ones in `proto::EVENTS`: `call.data`
/// (`CallEventKind::DataSet`) and the `lagged` note.
const EXTRA_EVENTS: &[&str] = &["call.data", "lagged"];

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One fenced ```json block.
struct Block {
    line: usize,
    tag: String,
    arg: Option<String>,
    text: String,
}

impl Block {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("docs/cti.md:{}: not JSON: {e}\n{}", self.line, self.text))
    }
}

/// The ```json blocks of the document (indented ones, in list items, too).
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```json") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut words = info.split_whitespace();
        let tag = words.next().unwrap_or("").to_owned();
        let arg = words.next().map(str::to_owned);
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            text.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            text.push('\n');
        }
        out.push(Block {
            line: n + 1,
            tag,
            arg,
            text,
        });
    }
    out
}

/// Event names the document says are not emitted (`not-emitted: a, b`).
fn not_emitted(md: &str) -> BTreeSet<String> {
    md.lines()
        .filter_map(|l| l.trim().strip_prefix("not-emitted:"))
        .flat_map(|rest| rest.split(',').map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::AgentLogin { .. } => "agent.login",
        Command::AgentLogout { .. } => "agent.logout",
        Command::AgentSetState { .. } => "agent.set_state",
        Command::CallMake { .. } => "call.make",
        Command::CallAnswer { .. } => "call.answer",
        Command::CallHangup { .. } => "call.hangup",
        Command::CallHold { .. } => "call.hold",
        Command::CallRetrieve { .. } => "call.retrieve",
        Command::CallTransfer { .. } => "call.transfer",
        Command::CallConsult { .. } => "call.consult",
        Command::CallTransferComplete { .. } => "call.transfer_complete",
        Command::CallConsultCancel { .. } => "call.consult_cancel",
        Command::CallConference { .. } => "call.conference",
        Command::CallSendDtmf { .. } => "call.send_dtmf",
        Command::CallSetData { .. } => "call.set_data",
        Command::CallRecord { .. } => "call.record",
        Command::CallWrapUp { .. } => "call.wrap_up",
        Command::Snapshot => "snapshot",
        Command::Subscribe { .. } => "subscribe",
    }
}

/// Every error code; the match makes a new variant fail to compile here.
fn all_codes() -> Vec<ErrorCode> {
    let all = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidState,
        ErrorCode::Unsupported,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
    ];
    for c in all {
        match c {
            ErrorCode::BadJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownCommand
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::NotFound
            | ErrorCode::InvalidState
            | ErrorCode::Unsupported
            | ErrorCode::TooLarge
            | ErrorCode::Unavailable => {}
        }
    }
    all.to_vec()
}

/// The schema, and validators for its `$defs` entries.
struct Schema {
    doc: Value,
}

impl Schema {
    fn load() -> Schema {
        let doc: Value = serde_json::from_str(&read("docs/cti.schema.json"))
            .unwrap_or_else(|e| panic!("docs/cti.schema.json: not JSON: {e}"));
        assert_eq!(
            doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "the schema must be draft 2020-12"
        );
        Schema { doc }
    }

    fn defs(&self) -> &Map<String, Value> {
        self.doc["$defs"].as_object().expect("$defs")
    }

    /// A validator of `$defs/<name>` (`None`: the whole schema).
    fn validator(&self, name: Option<&str>) -> jsonschema::Validator {
        let mut doc = self.doc.clone();
        if let (Some(name), Value::Object(m)) = (name, &mut doc) {
            assert!(self.defs().contains_key(name), "schema has no $defs/{name}");
            m.remove("oneOf");
            m.insert("$ref".into(), format!("#/$defs/{name}").into());
        }
        jsonschema::draft202012::new(&doc)
            .unwrap_or_else(|e| panic!("docs/cti.schema.json ({name:?}): {e}"))
    }
}

fn assert_valid(v: &jsonschema::Validator, what: &str, line: usize, value: &Value) {
    let errors: Vec<String> = v.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "docs/cti.md:{line}: {what} example does not validate against docs/cti.schema.json:\n  {}\n{value}",
        errors.join("\n  ")
    );
}

#[test]
fn every_example_parses_and_validates() {
    let md = read("docs/cti.md");
    let schema = Schema::load();
    let whole = schema.validator(None);
    let request = schema.validator(Some("request"));
    let reply = schema.validator(Some("reply"));
    let event = schema.validator(Some("event"));
    let record = schema.validator(Some("call_record"));
    let hidden = not_emitted(&md);
    let found = blocks(&md);
    assert!(found.len() > 40, "only {} json blocks found", found.len());
    for b in &found {
        match b.tag.as_str() {
            "request" => {
                let req = proto::parse_request(b.text.as_bytes()).unwrap_or_else(|(_, e)| {
                    panic!("docs/cti.md:{}: request refused: {e}\n{}", b.line, b.text)
                });
                let v = b.json();
                assert_eq!(
                    Some(command_name(&req.command)),
                    v["type"].as_str(),
                    "docs/cti.md:{}",
                    b.line
                );
                assert_valid(&request, "request", b.line, &v);
                assert_valid(&whole, "request", b.line, &v);
            }
            "body" => {
                let cmd = b.arg.as_deref().unwrap_or_else(|| {
                    panic!("docs/cti.md:{}: `json body` needs the command", b.line)
                });
                assert!(COMMANDS.contains(&cmd), "docs/cti.md:{}: {cmd}", b.line);
                let Value::Object(obj) = b.json() else {
                    panic!("docs/cti.md:{}: a REST body is an object", b.line);
                };
                assert!(!obj.contains_key("type"), "docs/cti.md:{}", b.line);
                let parsed = proto::parse_command(cmd, obj.clone())
                    .unwrap_or_else(|e| panic!("docs/cti.md:{}: body refused: {e}", b.line));
                assert_eq!(command_name(&parsed), cmd, "docs/cti.md:{}", b.line);
                let mut as_request = obj;
                as_request.insert("type".into(), cmd.into());
                assert_valid(&request, "REST body", b.line, &Value::Object(as_request));
            }
            "reply" => {
                let v = b.json();
                assert_valid(&reply, "reply", b.line, &v);
                assert_valid(&whole, "reply", b.line, &v);
            }
            "event" => {
                let v = b.json();
                let t = v["type"].as_str().unwrap_or_default();
                assert!(
                    EVENTS.contains(&t) || EXTRA_EVENTS.contains(&t),
                    "docs/cti.md:{}: {t:?} is not an event",
                    b.line
                );
                assert!(
                    !hidden.contains(t),
                    "docs/cti.md:{}: {t} is documented as not emitted",
                    b.line
                );
                assert_valid(&event, "event", b.line, &v);
                assert_valid(&whole, "event", b.line, &v);
            }
            "record" => assert_valid(&record, "record", b.line, &b.json()),
            "http" => {
                b.json();
            }
            other => panic!(
                "docs/cti.md:{}: unknown example tag {other:?} (request, reply, event, record, body <command>, http)",
                b.line
            ),
        }
    }
}

#[test]
fn every_command_and_emitted_event_has_an_example() {
    let md = read("docs/cti.md");
    let found = blocks(&md);
    let of = |tag: &str| -> BTreeSet<String> {
        found
            .iter()
            .filter(|b| b.tag == tag)
            .filter_map(|b| b.json()["type"].as_str().map(str::to_owned))
            .collect()
    };
    let requests = of("request");
    for c in COMMANDS {
        assert!(
            requests.contains(*c),
            "docs/cti.md has no request example of {c}"
        );
        assert!(
            md.contains(&format!("### {c}")) || md.contains(&format!("`{c}`")),
            "docs/cti.md does not describe {c}"
        );
    }
    let hidden = not_emitted(&md);
    for h in &hidden {
        assert!(
            EVENTS.contains(&h.as_str()),
            "not-emitted {h:?} is not in proto::EVENTS"
        );
    }
    let events = of("event");
    for e in EVENTS.iter().chain(EXTRA_EVENTS) {
        if hidden.contains(*e) {
            assert!(
                md.contains(&format!("`{e}`")),
                "docs/cti.md must say {e} is not emitted"
            );
            continue;
        }
        assert!(
            events.contains(*e),
            "docs/cti.md has no event example of {e}"
        );
    }
    assert_eq!(
        found.iter().filter(|b| b.tag == "record").count(),
        1,
        "one full call record example"
    );
}

#[test]
fn the_schema_names_every_command_and_event() {
    let schema = Schema::load();
    let defs = schema.defs();
    let listed = |prefix: &str| -> BTreeSet<String> {
        defs.keys()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
            .collect()
    };
    let commands: BTreeSet<String> = COMMANDS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(listed("request."), commands);
    let events: BTreeSet<String> = EVENTS
        .iter()
        .chain(EXTRA_EVENTS)
        .filter(|e| **e != "lagged")
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(listed("event."), events);
    let codes: BTreeSet<String> = all_codes().iter().map(|c| c.as_str().to_owned()).collect();
    let in_schema: BTreeSet<String> = defs["error_code"]["enum"]
        .as_array()
        .expect("error_code enum")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(in_schema, codes);
}

/// Dropping any field of a request example is refused by the parser exactly
/// when the schema refuses it (so "required" in the schema means required).
#[test]
fn the_schema_requires_what_the_parser_requires() {
    let md = read("docs/cti.md");
    let schema = Schema::load();
    let request = schema.validator(Some("request"));
    let mut checked = 0;
    for b in blocks(&md).iter().filter(|b| b.tag == "request") {
        let Value::Object(obj) = b.json() else {
            panic!("docs/cti.md:{}: not an object", b.line);
        };
        for key in obj.keys().filter(|k| *k != "type") {
            let mut less = obj.clone();
            less.remove(key);
            let less = Value::Object(less);
            let parsed = proto::parse_request(less.to_string().as_bytes()).is_ok();
            assert_eq!(
                parsed,
                request.is_valid(&less),
                "docs/cti.md:{}: without {key:?}: the parser says {parsed}, the schema the opposite",
                b.line
            );
            checked += 1;
        }
    }
    assert!(checked > 30);
    // And a few refusals the schema must share.
    for bad in [
        r#"{"type":"call.send_dtmf","call":"c","digits":"12x"}"#,
        r#"{"type":"agent.set_state","agent":"1","state":"asleep"}"#,
        r#"{"type":"call.set_data","call":"c","data":{}}"#,
        r#"{"type":"call.set_data","call":"c","data":{"a;b":"1"}}"#,
        r#"{"type":"call.set_data","call":"c","data":{"a":{"b":1}}}"#,
        r#"{"type":"call.record","call":"c","action":"stop"}"#,
        r#"{"type":"call.hangup","call":""}"#,
        r#"{"type":"call.hangup","call":"a\u0007b"}"#,
        r#"{"type":"subscribe","queues":"support"}"#,
        r#"{"type":"call.explode"}"#,
    ] {
        assert!(proto::parse_request(bad.as_bytes()).is_err(), "{bad}");
        let v: Value = serde_json::from_str(bad).unwrap();
        assert!(!request.is_valid(&v), "the schema accepts {bad}");
    }
}

#[test]
fn the_error_table_matches_error_code() {
    let md = read("docs/cti.md");
    for code in all_codes() {
        let row = format!("| `{}` | {} |", code.as_str(), code.http_status());
        assert!(
            md.contains(&row),
            "docs/cti.md's error table has no row starting {row:?}"
        );
    }
}
