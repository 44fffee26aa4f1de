//! A CTI client for the tests: a real WebSocket (tungstenite, blocking) on
//! the appliance's control plane, plus plain HTTP for the REST resources.
//!
//! [`Cti::request`] sends a command and waits for its reply, keeping the
//! events that arrive meanwhile; [`Cti::event`] returns the next event
//! matching a condition, or fails the test after [`super::HANG`].

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::HANG;

pub struct Cti {
    ws: WebSocket<TcpStream>,
    events: VecDeque<Value>,
    next_id: u64,
    /// Every event seen, in order (for failure messages).
    pub seen: Vec<Value>,
}

impl Cti {
    /// Connects to `/v1/cti` on `port` with `Authorization: Bearer <token>`.
    pub fn connect(port: u16, token: &str) -> Cti {
        Cti::try_connect(port, token).unwrap_or_else(|e| panic!("CTI connect: {e}"))
    }

    pub fn try_connect(port: u16, token: &str) -> Result<Cti, tungstenite::Error> {
        let mut req = format!("ws://127.0.0.1:{port}/v1/cti").into_client_request()?;
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(tungstenite::Error::Io)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(tungstenite::Error::Io)?;
        let (ws, _) = tungstenite::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::Error::from(ErrorKind::WouldBlock))
            }
        })?;
        Ok(Cti {
            ws,
            events: VecDeque::new(),
            next_id: 1,
            seen: Vec::new(),
        })
    }

    /// Sends raw text (for malformed-input checks).
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .expect("send a CTI message");
    }

    /// The next message (reply or event), or None at `deadline`.
    fn read(&mut self, deadline: Instant) -> Option<Value> {
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("CTI sends JSON"));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(e) => panic!("CTI connection failed: {e}"),
            }
        }
        None
    }

    /// The reply to the next message read with `"type":"result"` and id
    /// `id`; events read meanwhile are kept.
    pub fn reply_to(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + HANG;
        while let Some(m) = self.read(deadline) {
            if m["type"] == "result" && &m["id"] == id {
                return m;
            }
            if m["type"] != "result" {
                self.seen.push(m.clone());
                self.events.push_back(m);
            }
        }
        panic!(
            "no reply to request {id} within {HANG:?}; events: {:#?}",
            self.seen
        );
    }

    /// Sends `cmd` (an object; its `id` is set here) and returns the reply.
    pub fn request(&mut self, mut cmd: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        cmd["id"] = id.clone();
        self.send_text(&cmd.to_string());
        self.reply_to(&id)
    }

    /// Like [`Cti::request`], asserting `"ok": true`.
    pub fn ok(&mut self, cmd: Value) -> Value {
        let shown = cmd.to_string();
        let r = self.request(cmd);
        assert_eq!(r["ok"], true, "{shown} → {r}");
        r
    }

    /// The first event not yet taken for which `pred` holds (the others
    /// stay queued, and every event is kept in [`Cti::seen`]).
    pub fn event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            // Events not matching stay queued for later waits.
            if let Some(i) = self.events.iter().position(&pred)
                && let Some(e) = self.events.remove(i)
            {
                return e;
            }
            match self.read(deadline) {
                Some(m) if m["type"] != "result" => {
                    self.seen.push(m.clone());
                    self.events.push_back(m);
                }
                Some(_) => {}
                None => panic!("no {what} within {HANG:?}; events seen: {:#?}", self.seen),
            }
        }
    }

    /// The next event of `call` named `kind`.
    pub fn call_event(&mut self, call: &str, kind: &str) -> Value {
        self.event(&format!("{kind} of call {call}"), |e| {
            e["call"] == call && e["type"] == kind
        })
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the control plane");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path` with `token`, parsed as JSON: (status, body).
pub fn get_json(port: u16, path: &str, token: &str) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, Some(token), "");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")),
    )
}
