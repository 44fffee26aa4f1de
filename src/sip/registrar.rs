//! SIP registrar (RFC 3261 §10.3) and the location service replicas.
//!
//! Owns: the bindings of every address-of-record (AOR) registered on this
//! appliance, their expiry timers, and the stream of [`BindingChange`]s that
//! keeps per-shard [`LocationService`] replicas in sync.
//!
//! Driven sans-IO by the SIP endpoint, which parses the REGISTER, checks the
//! Request-URI domain and `Require` (§10.3 steps 1–2), authenticates and
//! authorizes the user against the To AOR (steps 3–5, see `sip::auth`) and
//! then hands plain values to [`Registrar::handle_register`] (steps 6–8). It
//! answers 200 OK with one Contact per [`BindingView`] (each with its
//! `expires` parameter), or the status of [`RegisterError::status_code`].
//! Timers: [`Registrar::poll_timeout`] gives the earliest binding expiry,
//! [`Registrar::handle_timeout`] removes what is due. After every input drain
//! [`Registrar::poll_change`] and broadcast the changes to the shards, whose
//! [`LocationService::apply`] replaces the user's binding set; the call
//! engine asks [`LocationService::lookup`].
//!
//! Rules and decisions:
//! * `Contact: *` requires `Expires: 0` and no other Contact, else 400
//!   (§10.3 step 6). A `*` inside a list of contacts is the same error.
//! * Per contact, the interval is the `expires` param, else the `Expires`
//!   header, else `default_expires`; 0 removes the binding; `0 < e <
//!   min_expires` (and `e` < 1 hour, as §10.3 step 7 allows 423 only then)
//!   rejects the whole request with 423 and `Min-Expires`; `e > max_expires`
//!   is shortened to `max_expires`. The default is shortened the same way.
//! * Bindings are matched with the URI comparison rules of §19.1.4. For an
//!   existing binding with the same Call-ID, a CSeq not higher than the stored
//!   one aborts the whole request (§10.3 step 7: "the update MUST be aborted
//!   and the request fails"): [`RegisterError::OutOfOrder`], answered 500.
//!   Updates are all-or-nothing (step 7, last paragraph). A contact that
//!   appears twice in one request: the later one wins.
//! * More than `max_contacts` bindings for one AOR after the update:
//!   [`RegisterError::TooManyContacts`], answered **403**. It is a policy
//!   refusal that retrying will not fix; 503 (Kamailio's choice) would claim
//!   overload and make phones fail over or back off, and pollutes overload
//!   monitoring.
//! * Contact URIs must be `sip:` or `sips:` and parse; `q` must be within
//!   0..=1: otherwise 400 ([`RegisterError::BadContact`]).
//! * A binding is live while `now < expires_at`. Lookups filter by `now`, so
//!   an expired binding is never returned even before its removal arrives.
//! * Other Contact header params (e.g. `+sip.instance`, `reg-id`) are kept
//!   verbatim in [`Binding::raw_params`] but not interpreted (no RFC 5626
//!   outbound or GRUU yet).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::endpoint::Link;

/// Transport on which a binding was registered (and the phone is reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// The Via / `transport=` token.
    pub fn token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
}

/// Registrar policy, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarLimits {
    /// Shorter non-zero intervals get 423 (if also under one hour).
    pub min_expires: u32,
    /// Longer intervals are shortened to this.
    pub max_expires: u32,
    /// Used when neither the contact nor the request gives an interval.
    pub default_expires: u32,
    /// Bindings per AOR.
    pub max_contacts: usize,
}

impl Default for RegistrarLimits {
    fn default() -> Self {
        RegistrarLimits {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// One Contact header value of a REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactSpec {
    /// The URI, without angle brackets or display name.
    pub uri: String,
    /// The `expires` contact param.
    pub expires_param: Option<u32>,
    /// The `q` contact param (must be within 0..=1).
    pub q: Option<f32>,
    /// Other contact params verbatim (with their leading `;`), may be empty.
    pub raw_params: String,
}

/// The Contact header fields of a REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactSet {
    /// No Contact: a query for the current bindings.
    None,
    /// `Contact: *` alone.
    Star,
    /// Contact values in order (a `*` among them is a 400).
    List(Vec<ContactSpec>),
}

/// An authenticated REGISTER, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    /// The AOR's user part (already authenticated and authorized).
    pub user: String,
    pub contacts: ContactSet,
    pub expires_header: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (reach the phone there, NAT-friendly).
    pub source: SocketAddr,
    pub transport: Transport,
    /// How the REGISTER reached us (listen socket or connection): the way
    /// back to the phone.
    pub link: Link,
}

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub uri: String,
    pub source: SocketAddr,
    pub transport: Transport,
    /// The way back to the phone (NAT-friendly: where its REGISTER came from).
    pub link: Link,
    pub expires_at: Instant,
    pub q: Option<f32>,
    pub call_id: String,
    pub cseq: u32,
    /// Other contact params verbatim.
    pub raw_params: String,
    /// When the binding was last added or refreshed.
    pub updated_at: Instant,
}

impl Binding {
    /// Live while `now < expires_at`.
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Seconds left, rounded up (what the 200 OK's `expires` param says).
    pub fn expires_in(&self, now: Instant) -> u32 {
        let left = self.expires_at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }
}

/// One Contact of the 200 OK.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingView {
    pub uri: String,
    pub expires_in: u32,
    pub q: Option<f32>,
}

/// The answer to an accepted REGISTER: all current bindings of the AOR.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterOk {
    pub bindings: Vec<BindingView>,
}

/// A user's complete binding set after a change (empty: all removed).
#[derive(Debug, Clone, PartialEq)]
pub struct BindingChange {
    pub user: String,
    /// Sorted like [`LocationService::lookup`].
    pub bindings: Vec<Binding>,
}

/// Why a REGISTER was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("Contact: * needs Expires: 0 and no other Contact")]
    InvalidStar,
    #[error("bad contact {uri:?}: {reason}")]
    BadContact { uri: String, reason: &'static str },
    #[error("interval too brief, minimum {min_expires}s")]
    IntervalTooBrief { min_expires: u32 },
    #[error("out of order: Call-ID {call_id:?} CSeq {cseq} is not above stored {stored_cseq}")]
    OutOfOrder {
        call_id: String,
        cseq: u32,
        stored_cseq: u32,
    },
    #[error("too many contacts, at most {max}")]
    TooManyContacts { max: usize },
}

impl RegisterError {
    /// The SIP status code to answer with (423 also carries `Min-Expires`).
    pub fn status_code(&self) -> u16 {
        match self {
            RegisterError::InvalidStar | RegisterError::BadContact { .. } => 400,
            RegisterError::IntervalTooBrief { .. } => 423,
            RegisterError::OutOfOrder { .. } => 500,
            RegisterError::TooManyContacts { .. } => 403,
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    id: u64,
    binding: Binding,
}

/// The registrar: owns all bindings and their expiry.
#[derive(Debug)]
pub struct Registrar {
    limits: RegistrarLimits,
    aors: HashMap<String, Vec<Stored>>,
    /// (expires_at, binding id) → user.
    expiry: BTreeMap<(Instant, u64), String>,
    changes: VecDeque<BindingChange>,
    next_id: u64,
    count: usize,
}

/// A contact checked and with its interval decided.
struct Checked<'a> {
    spec: &'a ContactSpec,
    parsed: SipUri,
    expires: u32,
}

impl Registrar {
    pub fn new(limits: RegistrarLimits) -> Self {
        Registrar {
            limits,
            aors: HashMap::new(),
            expiry: BTreeMap::new(),
            changes: VecDeque::new(),
            next_id: 0,
            count: 0,
        }
    }

    pub fn limits(&self) -> &RegistrarLimits {
        &self.limits
    }

    /// RFC 3261 §10.3 steps 6–8 for an authenticated REGISTER.
    pub fn handle_register(
        &mut self,
        now: Instant,
        req: RegisterRequest,
    ) -> Result<RegisterOk, RegisterError> {
        self.handle_timeout(now);
        let list = match &req.contacts {
            ContactSet::None => return Ok(self.view(now, &req.user)),
            ContactSet::List(list) if list.is_empty() => return Ok(self.view(now, &req.user)),
            ContactSet::Star => {
                if req.expires_header != Some(0) {
                    return Err(RegisterError::InvalidStar);
                }
                return self.remove_all(now, &req);
            }
            ContactSet::List(list) => list,
        };
        if list.iter().any(|c| c.uri.trim() == "*") {
            return Err(RegisterError::InvalidStar);
        }

        // Check everything before touching anything.
        let mut checked = Vec::with_capacity(list.len());
        for spec in list {
            let parsed = SipUri::parse(&spec.uri).map_err(|reason| RegisterError::BadContact {
                uri: spec.uri.clone(),
                reason,
            })?;
            if spec.q.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
                return Err(RegisterError::BadContact {
                    uri: spec.uri.clone(),
                    reason: "q outside 0..=1",
                });
            }
            checked.push(Checked {
                spec,
                parsed,
                expires: 0,
            });
        }
        for c in &mut checked {
            c.expires = self.interval(c.spec.expires_param.or(req.expires_header))?;
        }

        // Tentative new set: (binding, matchable URI, touched by this request).
        let existing = self.aors.get(&req.user).map_or(&[][..], Vec::as_slice);
        let mut next: Vec<(Stored, Option<SipUri>, bool)> = existing
            .iter()
            .map(|s| (s.clone(), SipUri::parse(&s.binding.uri).ok(), false))
            .collect();
        let mut changed = false;
        for c in checked {
            let found = next
                .iter()
                .position(|(_, u, _)| u.as_ref().is_some_and(|u| u.matches(&c.parsed)));
            if let Some(i) = found {
                let (stored, _, touched) = &next[i];
                let old = &stored.binding;
                if !touched && old.call_id == req.call_id && req.cseq <= old.cseq {
                    return Err(RegisterError::OutOfOrder {
                        call_id: req.call_id.clone(),
                        cseq: req.cseq,
                        stored_cseq: old.cseq,
                    });
                }
            }
            match (found, c.expires) {
                (Some(i), 0) => {
                    next.remove(i);
                    changed = true;
                }
                (None, 0) => {}
                (Some(i), e) => {
                    let (stored, uri, touched) = &mut next[i];
                    stored.binding = make_binding(now, &req, c.spec, e);
                    *uri = Some(c.parsed);
                    *touched = true;
                    changed = true;
                }
                (None, e) => {
                    self.next_id += 1;
                    next.push((
                        Stored {
                            id: self.next_id,
                            binding: make_binding(now, &req, c.spec, e),
                        },
                        Some(c.parsed),
                        true,
                    ));
                    changed = true;
                }
            }
        }
        if next.len() > self.limits.max_contacts {
            return Err(RegisterError::TooManyContacts {
                max: self.limits.max_contacts,
            });
        }
        if changed {
            self.commit(&req.user, next.into_iter().map(|(s, _, _)| s).collect());
        }
        Ok(self.view(now, &req.user))
    }

    /// Earliest binding expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Removes every binding with `expires_at <= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut users: BTreeSet<String> = BTreeSet::new();
        while let Some((&(at, _), _)) = self.expiry.first_key_value() {
            if at > now {
                break;
            }
            if let Some((_, user)) = self.expiry.pop_first() {
                users.insert(user);
            }
        }
        for user in users {
            let Some(set) = self.aors.get_mut(&user) else {
                continue;
            };
            let before = set.len();
            set.retain(|s| s.binding.is_live(now));
            self.count = self.count.saturating_sub(before - set.len());
            let bindings = set.iter().map(|s| s.binding.clone()).collect();
            if set.is_empty() {
                self.aors.remove(&user);
            }
            self.changes.push_back(BindingChange { user, bindings });
        }
    }

    /// Next queued change for the replicas.
    pub fn poll_change(&mut self) -> Option<BindingChange> {
        self.changes.pop_front()
    }

    /// Live bindings of `user`, by q descending then most recent first.
    pub fn lookup<'a>(&'a self, now: Instant, user: &str) -> impl Iterator<Item = &'a Binding> {
        self.aors
            .get(user)
            .into_iter()
            .flatten()
            .map(|s| &s.binding)
            .filter(move |b| b.is_live(now))
    }

    /// Bindings held (for counters); may include some due for expiry.
    pub fn binding_count(&self) -> usize {
        self.count
    }

    /// Users with at least one binding.
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    /// The interval for a requested value (already past the 0 check).
    fn interval(&self, requested: Option<u32>) -> Result<u32, RegisterError> {
        let l = &self.limits;
        match requested {
            None => Ok(l.default_expires.min(l.max_expires)),
            Some(0) => Ok(0),
            Some(e) if e < l.min_expires && e < 3600 => Err(RegisterError::IntervalTooBrief {
                min_expires: l.min_expires,
            }),
            Some(e) => Ok(e.min(l.max_expires)),
        }
    }

    fn remove_all(
        &mut self,
        now: Instant,
        req: &RegisterRequest,
    ) -> Result<RegisterOk, RegisterError> {
        let Some(set) = self.aors.get(&req.user) else {
            return Ok(self.view(now, &req.user));
        };
        if let Some(old) = set
            .iter()
            .find(|s| s.binding.call_id == req.call_id && req.cseq <= s.binding.cseq)
        {
            return Err(RegisterError::OutOfOrder {
                call_id: req.call_id.clone(),
                cseq: req.cseq,
                stored_cseq: old.binding.cseq,
            });
        }
        self.commit(&req.user, Vec::new());
        Ok(self.view(now, &req.user))
    }

    /// Replaces the user's set, keeps the expiry index and count in step and
    /// queues the change.
    fn commit(&mut self, user: &str, mut set: Vec<Stored>) {
        if let Some(old) = self.aors.remove(user) {
            self.count = self.count.saturating_sub(old.len());
            for s in &old {
                self.expiry.remove(&(s.binding.expires_at, s.id));
            }
        }
        set.sort_by(|a, b| order(&a.binding, a.id, &b.binding, b.id));
        for s in &set {
            self.expiry
                .insert((s.binding.expires_at, s.id), user.to_owned());
        }
        self.count += set.len();
        let bindings = set.iter().map(|s| s.binding.clone()).collect();
        if !set.is_empty() {
            self.aors.insert(user.to_owned(), set);
        }
        self.changes.push_back(BindingChange {
            user: user.to_owned(),
            bindings,
        });
    }

    fn view(&self, now: Instant, user: &str) -> RegisterOk {
        RegisterOk {
            bindings: self
                .lookup(now, user)
                .map(|b| BindingView {
                    uri: b.uri.clone(),
                    expires_in: b.expires_in(now),
                    q: b.q,
                })
                .collect(),
        }
    }
}

fn make_binding(now: Instant, req: &RegisterRequest, spec: &ContactSpec, expires: u32) -> Binding {
    Binding {
        uri: spec.uri.clone(),
        source: req.source,
        transport: req.transport,
        link: req.link,
        expires_at: deadline(now, expires),
        q: spec.q,
        call_id: req.call_id.clone(),
        cseq: req.cseq,
        raw_params: spec.raw_params.clone(),
        updated_at: now,
    }
}

/// `now + secs`, saturating instead of panicking on an overflowing Instant.
fn deadline(now: Instant, secs: u32) -> Instant {
    let mut d = Duration::from_secs(secs.into());
    loop {
        if let Some(at) = now.checked_add(d) {
            return at;
        }
        d /= 2;
    }
}

/// Lookup order: q descending (absent q counts as 1.0), then most recently
/// updated, then most recently created.
fn order(a: &Binding, a_id: u64, b: &Binding, b_id: u64) -> std::cmp::Ordering {
    let q = |x: &Binding| x.q.unwrap_or(1.0);
    q(b).total_cmp(&q(a))
        .then(b.updated_at.cmp(&a.updated_at))
        .then(b_id.cmp(&a_id))
}

/// A per-shard read replica of the bindings, fed by [`BindingChange`]s.
#[derive(Debug, Default, Clone)]
pub struct LocationService {
    aors: HashMap<String, Vec<Binding>>,
    count: usize,
}

impl LocationService {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the user's binding set. Apply changes in the order the
    /// registrar produced them.
    pub fn apply(&mut self, change: BindingChange) {
        let BindingChange { user, mut bindings } = change;
        if let Some(old) = self.aors.remove(&user) {
            self.count = self.count.saturating_sub(old.len());
        }
        if bindings.is_empty() {
            return;
        }
        // Stable sort keeps the registrar's tie order.
        bindings.sort_by(|a, b| {
            let q = |x: &Binding| x.q.unwrap_or(1.0);
            q(b).total_cmp(&q(a)).then(b.updated_at.cmp(&a.updated_at))
        });
        self.count += bindings.len();
        self.aors.insert(user, bindings);
    }

    /// Live bindings of `user`, by q descending then most recent first.
    pub fn lookup<'a>(&'a self, now: Instant, user: &str) -> impl Iterator<Item = &'a Binding> {
        self.aors
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |b| b.is_live(now))
    }

    /// Bindings held (may include some expired but not yet removed).
    pub fn binding_count(&self) -> usize {
        self.count
    }

    /// Whether `user` holds any binding (its phones are registered).
    pub fn has_user(&self, user: &str) -> bool {
        self.aors.contains_key(user)
    }
}

/// A SIP/SIPS URI reduced to what RFC 3261 §19.1.4 compares: escapes
/// undone, everything but userinfo lower-cased.
#[derive(Debug, Clone, PartialEq)]
struct SipUri {
    sips: bool,
    user: Option<Vec<u8>>,
    password: Option<Vec<u8>>,
    host: String,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
    headers: Vec<(String, String)>,
}

impl SipUri {
    fn parse(s: &str) -> Result<SipUri, &'static str> {
        if s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
        {
            return Err("whitespace, control or bracket in URI");
        }
        let (scheme, rest) = s.split_once(':').ok_or("not a sip: or sips: URI")?;
        let sips = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            return Err("not a sip: or sips: URI");
        };
        // '@' is only allowed unescaped in the userinfo separator.
        let (userinfo, after) = match rest.split_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some("") => return Err("empty user part"),
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(unescape(u)), Some(unescape(p))),
                None => (Some(unescape(u)), None),
            },
        };
        let hp_end = after.find([';', '?']).unwrap_or(after.len());
        let (hostport, tail) = after.split_at(hp_end);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, rest) = v6.split_once(']').ok_or("unterminated IPv6 reference")?;
            if addr.is_empty() {
                return Err("empty host");
            }
            let port = match rest {
                "" => None,
                r => Some(r.strip_prefix(':').ok_or("junk after IPv6 reference")?),
            };
            (format!("[{addr}]"), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err("empty host");
        }
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().map_err(|_| "port out of range")?)
            }
            Some(_) => return Err("bad port"),
        };
        let (params_str, headers_str) = match tail.split_once('?') {
            Some((p, h)) => (p, Some(h)),
            None => (tail, None),
        };
        let mut params: Vec<(String, Option<String>)> = Vec::new();
        for p in params_str.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(lower(v))),
                None => (p, None),
            };
            let name = lower(name);
            if !params.iter().any(|(n, _)| *n == name) {
                params.push((name, value));
            }
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for h in headers_str
            .unwrap_or("")
            .split('&')
            .filter(|h| !h.is_empty())
        {
            let (n, v) = h.split_once('=').unwrap_or((h, ""));
            headers.push((lower(n), lower(v)));
        }
        headers.sort();
        Ok(SipUri {
            sips,
            user,
            password,
            host: lower(&host),
            port,
            params,
            headers,
        })
    }

    /// RFC 3261 §19.1.4 equivalence.
    fn matches(&self, other: &SipUri) -> bool {
        if self.sips != other.sips
            || self.user != other.user
            || self.password != other.password
            || self.host != other.host
            || self.port != other.port
            || self.headers != other.headers
        {
            return false;
        }
        let param = |u: &SipUri, name: &str| {
            u.params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        // user, ttl, method, maddr (and transport, per the §19.1.4
        // examples) must be in both or neither.
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            if param(self, name) != param(other, name) {
                return false;
            }
        }
        // Any other parameter in both must agree.
        self.params
            .iter()
            .all(|(n, v)| param(other, n).is_none_or(|ov| ov == *v))
    }
}

/// Undoes %XX escapes (a bad escape is kept literally).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
        let escaped = match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => Some(h * 16 + l),
            _ => None,
        };
        if let Some(v) = escaped {
            // Both digits are < 16, so this fits a byte.
            out.push(v as u8);
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Unescaped and lower-cased, for the case-insensitive components.
fn lower(s: &str) -> String {
    String::from_utf8_lossy(&unescape(s)).to_lowercase()
}

/// Public form of the §19.1.4 comparison, for other modules and tests.
/// URIs that do not parse as SIP/SIPS never match.
pub fn sip_uri_eq(a: &str, b: &str) -> bool {
    match (SipUri::parse(a), SipUri::parse(b)) {
        (Ok(a), Ok(b)) => a.matches(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ids::ShardId;

    const LIMITS: RegistrarLimits = RegistrarLimits {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 1800,
        max_contacts: 3,
    };

    fn contact(uri: &str) -> ContactSpec {
        ContactSpec {
            uri: uri.to_owned(),
            expires_param: None,
            q: None,
            raw_params: String::new(),
        }
    }

    fn contact_exp(uri: &str, e: u32) -> ContactSpec {
        ContactSpec {
            expires_param: Some(e),
            ..contact(uri)
        }
    }

    fn req(
        user: &str,
        contacts: ContactSet,
        expires: Option<u32>,
        call_id: &str,
        cseq: u32,
    ) -> RegisterRequest {
        RegisterRequest {
            user: user.to_owned(),
            contacts,
            expires_header: expires,
            call_id: call_id.to_owned(),
            cseq,
            source: "192.0.2.10:5060".parse().unwrap(),
            transport: Transport::Udp,
            link: Link::Udp { listen: 0 },
        }
    }

    fn list(c: Vec<ContactSpec>) -> ContactSet {
        ContactSet::List(c)
    }

    fn uris(ok: &RegisterOk) -> Vec<(&str, u32)> {
        ok.bindings
            .iter()
            .map(|b| (b.uri.as_str(), b.expires_in))
            .collect()
    }

    fn drain(r: &mut Registrar) -> Vec<BindingChange> {
        std::iter::from_fn(|| r.poll_change()).collect()
    }

    #[test]
    fn add_refresh_remove_one_contact() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let c = "sip:alice@192.0.2.10:5060";
        let ok = r
            .handle_register(
                t0,
                req("alice", list(vec![contact(c)]), Some(600), "cid", 1),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![(c, 600)]);
        assert_eq!(r.binding_count(), 1);
        assert_eq!(drain(&mut r).len(), 1);

        let t1 = t0 + Duration::from_secs(300);
        let ok = r
            .handle_register(
                t1,
                req("alice", list(vec![contact(c)]), Some(900), "cid", 2),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![(c, 900)]);
        assert_eq!(r.binding_count(), 1);
        let ch = drain(&mut r);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].bindings[0].cseq, 2);

        // Fetch: no Contact, no change.
        let ok = r
            .handle_register(
                t1 + Duration::from_millis(500),
                req("alice", ContactSet::None, None, "cid", 3),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![(c, 900)]);
        assert!(drain(&mut r).is_empty());

        let ok = r
            .handle_register(
                t1,
                req("alice", list(vec![contact_exp(c, 0)]), None, "cid", 4),
            )
            .unwrap();
        assert!(ok.bindings.is_empty());
        assert_eq!(r.binding_count(), 0);
        assert_eq!(r.aor_count(), 0);
        assert_eq!(r.poll_timeout(), None);
        let ch = drain(&mut r);
        assert_eq!(ch.len(), 1);
        assert!(ch[0].bindings.is_empty());
    }

    #[test]
    fn several_contacts_per_user_sorted_by_q_then_recency() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let mut desk = contact("sip:alice@192.0.2.10");
        desk.q = Some(0.5);
        let mut soft = contact("sips:alice@198.51.100.7:5061;transport=tls");
        soft.q = Some(1.0);
        r.handle_register(t0, req("alice", list(vec![desk, soft]), None, "a", 1))
            .unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let mobile = contact_exp("sip:alice@203.0.113.5:40000", 120);
        let ok = r
            .handle_register(t1, req("alice", list(vec![mobile]), None, "b", 1))
            .unwrap();
        assert_eq!(
            uris(&ok),
            vec![
                ("sip:alice@203.0.113.5:40000", 120),
                ("sips:alice@198.51.100.7:5061;transport=tls", 1799),
                ("sip:alice@192.0.2.10", 1799),
            ]
        );
        assert_eq!(r.binding_count(), 3);
        assert_eq!(r.lookup(t1, "alice").count(), 3);
        assert_eq!(r.lookup(t1, "bob").count(), 0);
    }

    #[test]
    fn expires_zero_header_removes_only_listed_contacts() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact("sip:a@h1"), contact("sip:a@h2")]),
                Some(600),
                "c",
                1,
            ),
        )
        .unwrap();
        let ok = r
            .handle_register(
                t0,
                req("alice", list(vec![contact("sip:a@H1")]), Some(0), "c", 2),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![("sip:a@h2", 600)]);
        // Removing a binding that does not exist changes nothing.
        drain(&mut r);
        r.handle_register(
            t0,
            req("alice", list(vec![contact("sip:a@h9")]), Some(0), "c", 3),
        )
        .unwrap();
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn star_removes_all() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact("sip:a@h1"), contact("sip:a@h2")]),
                None,
                "c",
                1,
            ),
        )
        .unwrap();
        let ok = r
            .handle_register(t0, req("alice", ContactSet::Star, Some(0), "other", 1))
            .unwrap();
        assert!(ok.bindings.is_empty());
        assert_eq!(r.binding_count(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn star_needs_expires_zero_and_no_other_contact() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        for (contacts, exp) in [
            (ContactSet::Star, None),
            (ContactSet::Star, Some(60)),
            (list(vec![contact("*"), contact("sip:a@h1")]), Some(0)),
            (list(vec![contact("sip:a@h1"), contact("*")]), Some(0)),
        ] {
            let e = r
                .handle_register(t0, req("alice", contacts, exp, "c", 1))
                .unwrap_err();
            assert_eq!(e, RegisterError::InvalidStar);
            assert_eq!(e.status_code(), 400);
        }
    }

    #[test]
    fn star_with_old_cseq_same_call_id_fails() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req("alice", list(vec![contact("sip:a@h1")]), None, "c", 5),
        )
        .unwrap();
        let e = r
            .handle_register(t0, req("alice", ContactSet::Star, Some(0), "c", 5))
            .unwrap_err();
        assert_eq!(e.status_code(), 500);
        assert_eq!(r.binding_count(), 1);
        r.handle_register(t0, req("alice", ContactSet::Star, Some(0), "c", 6))
            .unwrap();
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn interval_too_brief_is_423_and_changes_nothing() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let e = r
            .handle_register(
                t0,
                req(
                    "alice",
                    list(vec![contact("sip:a@h1"), contact_exp("sip:a@h2", 59)]),
                    None,
                    "c",
                    1,
                ),
            )
            .unwrap_err();
        assert_eq!(e, RegisterError::IntervalTooBrief { min_expires: 60 });
        assert_eq!(e.status_code(), 423);
        assert_eq!(r.binding_count(), 0);
        let e = r
            .handle_register(
                t0,
                req("alice", list(vec![contact("sip:a@h1")]), Some(1), "c", 2),
            )
            .unwrap_err();
        assert_eq!(e.status_code(), 423);
        // Exactly the minimum is fine.
        let ok = r
            .handle_register(
                t0,
                req("alice", list(vec![contact("sip:a@h1")]), Some(60), "c", 3),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![("sip:a@h1", 60)]);
    }

    #[test]
    fn min_expires_above_one_hour_never_rejects_an_hour_or_more() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarLimits {
            min_expires: 7200,
            max_expires: 86400,
            ..LIMITS
        });
        assert_eq!(
            r.handle_register(
                t0,
                req("a", list(vec![contact("sip:a@h")]), Some(3599), "c", 1)
            )
            .unwrap_err()
            .status_code(),
            423
        );
        let ok = r
            .handle_register(
                t0,
                req("a", list(vec![contact("sip:a@h")]), Some(3600), "c", 2),
            )
            .unwrap();
        assert_eq!(ok.bindings[0].expires_in, 3600);
    }

    #[test]
    fn above_max_is_clamped_and_default_applies() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let ok = r
            .handle_register(
                t0,
                req(
                    "alice",
                    list(vec![contact_exp("sip:a@h1", u32::MAX), contact("sip:a@h2")]),
                    None,
                    "c",
                    1,
                ),
            )
            .unwrap();
        let mut got = uris(&ok);
        got.sort();
        assert_eq!(got, vec![("sip:a@h1", 3600), ("sip:a@h2", 1800)]);
        // The contact param beats the header.
        let ok = r
            .handle_register(
                t0,
                req(
                    "bob",
                    list(vec![contact_exp("sip:b@h", 100)]),
                    Some(900),
                    "c",
                    1,
                ),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![("sip:b@h", 100)]);
    }

    #[test]
    fn expiry_via_handle_timeout_with_virtual_clock() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact_exp("sip:a@h1", 60)]),
                None,
                "c",
                1,
            ),
        )
        .unwrap();
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact_exp("sip:a@h2", 120)]),
                None,
                "c",
                2,
            ),
        )
        .unwrap();
        r.handle_register(
            t0,
            req("bob", list(vec![contact_exp("sip:b@h", 60)]), None, "d", 1),
        )
        .unwrap();
        drain(&mut r);
        let mut now = t0;
        let mut steps = Vec::new();
        while let Some(at) = r.poll_timeout() {
            assert!(at >= now);
            now = at;
            r.handle_timeout(now);
            let mut users: Vec<_> = drain(&mut r).into_iter().map(|c| c.user).collect();
            users.sort();
            steps.push(((now - t0).as_secs(), users, r.binding_count()));
        }
        assert_eq!(
            steps,
            vec![
                (60, vec!["alice".to_owned(), "bob".to_owned()], 1),
                (120, vec!["alice".to_owned()], 0),
            ]
        );
        assert_eq!(r.aor_count(), 0);
    }

    #[test]
    fn lookup_never_returns_expired_before_timeout_runs() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact_exp("sip:a@h1", 60)]),
                None,
                "c",
                1,
            ),
        )
        .unwrap();
        let mut loc = LocationService::new();
        for c in drain(&mut r) {
            loc.apply(c);
        }
        let almost = t0 + Duration::from_millis(59_999);
        let at = t0 + Duration::from_secs(60);
        assert_eq!(r.lookup(almost, "alice").count(), 1);
        assert_eq!(loc.lookup(almost, "alice").count(), 1);
        assert_eq!(r.lookup(at, "alice").count(), 0);
        assert_eq!(loc.lookup(at, "alice").count(), 0);
        assert_eq!(
            r.lookup(almost, "alice").next().unwrap().expires_in(almost),
            1
        );
    }

    #[test]
    fn cseq_ordering_same_call_id() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let c = || list(vec![contact("sip:a@h1")]);
        r.handle_register(t0, req("alice", c(), Some(600), "cid", 10))
            .unwrap();
        for cseq in [10, 9] {
            let e = r
                .handle_register(t0, req("alice", c(), Some(900), "cid", cseq))
                .unwrap_err();
            assert_eq!(
                e,
                RegisterError::OutOfOrder {
                    call_id: "cid".into(),
                    cseq,
                    stored_cseq: 10
                }
            );
            assert_eq!(e.status_code(), 500);
        }
        // Removal with an old CSeq also fails.
        assert!(
            r.handle_register(
                t0,
                req(
                    "alice",
                    list(vec![contact_exp("sip:a@h1", 0)]),
                    None,
                    "cid",
                    3
                )
            )
            .is_err()
        );
        // A different Call-ID (phone rebooted) may use any CSeq.
        let ok = r
            .handle_register(t0, req("alice", c(), Some(900), "new-cid", 1))
            .unwrap();
        assert_eq!(uris(&ok), vec![("sip:a@h1", 900)]);
    }

    #[test]
    fn failed_request_is_all_or_nothing() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact("sip:a@h1")]),
                Some(600),
                "cid",
                5,
            ),
        )
        .unwrap();
        drain(&mut r);
        // h2 would be added, but h1 is out of order: nothing changes.
        let e = r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact("sip:a@h2"), contact("sip:a@h1")]),
                Some(600),
                "cid",
                4,
            ),
        );
        assert!(e.is_err());
        assert_eq!(r.binding_count(), 1);
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn too_many_contacts_is_403() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![
                    contact("sip:a@h1"),
                    contact("sip:a@h2"),
                    contact("sip:a@h3"),
                ]),
                None,
                "c",
                1,
            ),
        )
        .unwrap();
        let e = r
            .handle_register(
                t0,
                req("alice", list(vec![contact("sip:a@h4")]), None, "c", 2),
            )
            .unwrap_err();
        assert_eq!(e, RegisterError::TooManyContacts { max: 3 });
        assert_eq!(e.status_code(), 403);
        // Replacing one in the same request is fine.
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact_exp("sip:a@h1", 0), contact("sip:a@h4")]),
                None,
                "c",
                3,
            ),
        )
        .unwrap();
        assert_eq!(r.binding_count(), 3);
    }

    #[test]
    fn bad_contacts_are_400() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let mut bad_q = contact("sip:a@h");
        bad_q.q = Some(1.5);
        let mut nan_q = contact("sip:a@h");
        nan_q.q = Some(f32::NAN);
        for c in [
            contact("tel:+15551234"),
            contact("mailto:a@h"),
            contact("sip:"),
            contact("sip:a@"),
            contact("sip:@h"),
            contact("<sip:a@h>"),
            contact("sip:a@h:99999"),
            contact("sip:a@h:x"),
            contact("sip:a@[::1"),
            contact("sip:a@h extra"),
            contact(""),
            bad_q,
            nan_q,
        ] {
            let e = r
                .handle_register(t0, req("alice", list(vec![c.clone()]), None, "c", 1))
                .unwrap_err();
            assert!(
                matches!(e, RegisterError::BadContact { .. }),
                "{c:?}: {e:?}"
            );
            assert_eq!(e.status_code(), 400);
        }
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn rfc3261_19_1_4_uri_comparison() {
        let equal = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
            ("sip:[2001:DB8::1]:5060", "SIP:[2001:db8::1]:5060"),
        ];
        for (a, b) in equal {
            assert!(sip_uri_eq(a, b), "{a} == {b}");
            assert!(sip_uri_eq(b, a), "{b} == {a}");
        }
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            ("sip:a@h", "sips:a@h"),
            ("sip:a@h;maddr=1.2.3.4", "sip:a@h"),
            ("sip:a@h;user=phone", "sip:a@h"),
            ("sip:a:pw@h", "sip:a@h"),
            ("sip:a@h;x=1", "sip:a@h;x=2"),
        ];
        for (a, b) in different {
            assert!(!sip_uri_eq(a, b), "{a} != {b}");
            assert!(!sip_uri_eq(b, a), "{b} != {a}");
        }
    }

    #[test]
    fn equivalent_uri_refreshes_instead_of_adding() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        r.handle_register(
            t0,
            req(
                "alice",
                list(vec![contact("sip:alice@Host.example;LR")]),
                None,
                "c",
                1,
            ),
        )
        .unwrap();
        let ok = r
            .handle_register(
                t0,
                req(
                    "alice",
                    list(vec![contact("sip:%61lice@host.example;lr;foo=bar")]),
                    Some(120),
                    "c",
                    2,
                ),
            )
            .unwrap();
        assert_eq!(
            uris(&ok),
            vec![("sip:%61lice@host.example;lr;foo=bar", 120)]
        );
    }

    #[test]
    fn duplicate_contact_in_one_request_last_wins() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let ok = r
            .handle_register(
                t0,
                req(
                    "alice",
                    list(vec![
                        contact_exp("sip:a@h", 100),
                        contact_exp("sip:a@h", 200),
                    ]),
                    None,
                    "c",
                    1,
                ),
            )
            .unwrap();
        assert_eq!(uris(&ok), vec![("sip:a@h", 200)]);
    }

    #[test]
    fn binding_keeps_source_transport_and_connection() {
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let mut rq = req(
            "alice",
            list(vec![contact("sip:a@10.0.0.5:5060;transport=tcp")]),
            None,
            "c",
            1,
        );
        rq.transport = Transport::Tcp;
        rq.link = Link::Tcp {
            shard: ShardId(1),
            conn: 42,
        };
        rq.source = "203.0.113.9:40123".parse().unwrap();
        if let ContactSet::List(l) = &mut rq.contacts {
            l[0].raw_params = ";+sip.instance=\"<urn:uuid:1>\"".into();
        }
        r.handle_register(t0, rq).unwrap();
        let b = r.lookup(t0, "alice").next().unwrap();
        assert_eq!(b.transport, Transport::Tcp);
        assert_eq!(
            b.link,
            Link::Tcp {
                shard: ShardId(1),
                conn: 42
            }
        );
        assert_eq!(b.source, "203.0.113.9:40123".parse().unwrap());
        assert_eq!(b.raw_params, ";+sip.instance=\"<urn:uuid:1>\"");
        assert_eq!(b.transport.token(), "TCP");
    }

    #[test]
    fn uri_parser_never_panics_on_byte_soup() {
        let seed = "sips:al%41ce:pw@[2001:db8::1]:5061;transport=tls;lr?h=v&x=%zz";
        let alphabet = [
            '@', ':', ';', '?', '=', '&', '%', '[', ']', 'é', '€', 'a', '9',
        ];
        let mut x: u32 = 0xDEAD_BEEF;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut chars: Vec<char> = seed.chars().collect();
            let pos = x as usize % chars.len();
            chars[pos] = alphabet[(x >> 8) as usize % alphabet.len()];
            chars.truncate(((x >> 16) as usize % (seed.len() + 1)).max(1));
            let s: String = chars.into_iter().collect();
            let _ = sip_uri_eq(&s, seed);
        }
        for end in 0..=seed.len() {
            let _ = SipUri::parse(&seed[..end]);
        }
    }

    #[test]
    fn change_stream_keeps_replica_equal_to_registrar() {
        // Seeded pseudo-random REGISTER traffic on a virtual clock; after
        // every step the replica must answer exactly as the registrar.
        let t0 = Instant::now();
        let mut r = Registrar::new(LIMITS);
        let mut loc = LocationService::new();
        let users = ["alice", "bob", "carol"];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = t0;
        let mut cseq = 0;
        for step in 0..2000 {
            now += Duration::from_secs(next() % 40);
            let user = users[(next() % 3) as usize];
            cseq += 1;
            let contacts = match next() % 10 {
                0 => ContactSet::Star,
                1 => ContactSet::None,
                _ => {
                    let n = 1 + next() % 2;
                    list(
                        (0..n)
                            .map(|_| {
                                let mut c = contact(&format!("sip:{user}@h{}", next() % 5));
                                c.expires_param = [None, Some(0), Some(60), Some(90), Some(300)]
                                    [(next() % 5) as usize];
                                c.q = [None, Some(0.1), Some(0.9)][(next() % 3) as usize];
                                c
                            })
                            .collect(),
                    )
                }
            };
            let expires = [None, Some(0), Some(120)][(next() % 3) as usize];
            let call_id = format!("cid-{}", next() % 2);
            let _ = r.handle_register(now, req(user, contacts, expires, &call_id, cseq));
            let at = r.poll_timeout().filter(|_| next() % 4 == 0);
            if let Some(at) = at {
                now = now.max(at);
                r.handle_timeout(now);
            }
            while let Some(c) = r.poll_change() {
                loc.apply(c);
            }
            for u in users {
                let a: Vec<&Binding> = r.lookup(now, u).collect();
                let b: Vec<&Binding> = loc.lookup(now, u).collect();
                assert_eq!(a, b, "step {step} user {u}");
                assert!(a.len() <= LIMITS.max_contacts);
                assert!(
                    a.windows(2)
                        .all(|w| w[0].q.unwrap_or(1.0) >= w[1].q.unwrap_or(1.0))
                );
            }
            assert_eq!(r.binding_count(), loc.binding_count(), "step {step}");
            assert_eq!(r.binding_count(), r.expiry.len(), "step {step}");
        }
    }
}
