//! A CRM webhook receiver for the tests: HTTP/1.1 on a loopback port,
//! answering every request `200` and keeping what it got (headers and
//! body, whether the signature verified with [`SECRET`]). It can be
//! stopped (the port closed, so POSTs are refused) and started again on
//! the same port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::HANG;

/// `crm.webhook.secret` of the demo config.
pub const SECRET: &str = "demo-secret";

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `X-Switchboard-Signature` verified over the body with [`SECRET`].
    pub signature_ok: bool,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn key(&self) -> Option<&str> {
        self.header("Idempotency-Key")
    }
}

/// The receiver: listening between [`Receiver::listen`] and
/// [`Receiver::close`]; what it got survives both.
pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Receiver {
    /// A receiver for `port` (reserved by the caller), not listening yet.
    pub fn new(port: u16) -> Receiver {
        Receiver {
            port,
            got: Arc::default(),
            running: None,
        }
    }

    /// Starts listening on 127.0.0.1:`port`.
    pub fn listen(&mut self) {
        assert!(self.running.is_none(), "receiver already listening");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("receiver cannot bind port {}: {e}", self.port));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let got = self.got.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let got = got.clone();
                        std::thread::spawn(move || serve(stream, &got));
                    }
                    // Paces the accept polling; the stop flag is checked
                    // each round.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, thread));
    }

    /// Stops listening: the port is closed (new POSTs are refused).
    pub fn close(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    /// Everything received so far.
    pub fn got(&self) -> Vec<Delivery> {
        self.got.lock().expect("receiver log").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads one request per connection (the appliance may keep it alive; we
/// answer `Connection: close`) and answers 200.
fn serve(stream: TcpStream, got: &Mutex<Vec<Delivery>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(HANG));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(clone);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let signature_ok = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(switchboard::crm::sign::HEADER))
        .is_some_and(|(_, v)| switchboard::crm::sign::verify(SECRET.as_bytes(), &body, v));
    // Logged before answering: the appliance may count it delivered as
    // soon as the 200 is out.
    got.lock().expect("receiver log").push(Delivery {
        path,
        headers,
        body,
        signature_ok,
    });
    let mut w = stream;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}
