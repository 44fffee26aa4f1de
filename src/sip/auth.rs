//! HTTP Digest authentication for SIP (server side, plus a client helper).
//!
//! Owns: the digest realm, the nonce key, the per-nonce `nc` replay table and
//! the authentication failure counters. It implements RFC 7616 (HTTP Digest,
//! MD5) and RFC 8760 (SHA-256 for SIP digest) with `qop=auth`, as used by RFC
//! 3261 §22 for `WWW-Authenticate` / `Authorization` (registrar, 401) and
//! equally for `Proxy-Authenticate` / `Proxy-Authorization` (407): the header
//! names are the endpoint's business, this module only sees header values.
//!
//! Driven sans-IO by the SIP endpoint:
//! * [`DigestAuth::challenges`] mints a nonce and yields one challenge header
//!   value per configured algorithm (configured order, SHA-256 first by
//!   default, RFC 8760 §2.4);
//! * [`DigestAuth::verify`] takes every `Authorization` header value of a
//!   request and answers an [`AuthOutcome`]. The endpoint answers
//!   `NoCredentials`, `Stale` (with `stale=true`) and `Failed` with a fresh
//!   401; the `reason` of a failure is for logs and counters only and must not
//!   change the SIP answer (no user enumeration);
//! * [`FailureCounters`] counts failures per source IP and per user for a
//!   later ban policy;
//! * [`respond`] is the client side (tests, load generator).
//!
//! Time comes in as `now: Instant` and is turned into milliseconds since an
//! epoch `Instant` given at construction; the nonce key comes from the shell's
//! RNG. Nothing here reads the clock or an RNG.
//!
//! Nonces are self-verifying and stateless to mint: hex of
//! `ts_ms(8) | instance(4) | counter(8) | HMAC-SHA256(key, "sb-nonce-v1" | those 20 bytes)[..16]`.
//! An authentic nonce older than the lifetime is *stale* (answered with
//! `stale=true`, but only when the response hash is right, RFC 7616 §3.3); a
//! nonce whose tag does not verify is a plain failure. Shards that share a key
//! should each set a distinct [`DigestAuth::with_instance`] id so their nonces
//! never collide, and should share one epoch. The `nc` replay table is per
//! `DigestAuth` (per shard): a nonce replayed to another shard is caught only
//! by that shard's own table.
//!
//! Decisions:
//! * `qop=auth` with `nc` and `cnonce` is required. RFC 2069-style credentials
//!   (no `qop`) are refused (`AuthFailure::QopRequired`): we always offer
//!   `qop="auth"`, RFC 7616 makes `qop` mandatory for clients, and without
//!   `nc` there is no replay protection. `auth-int` and the `-sess` algorithms
//!   are not offered and not accepted.
//! * `opaque` is a constant per key and realm; when the client returns it, it
//!   must match, a client that omits it is tolerated.
//! * The `uri` parameter is hashed as sent and not compared with the
//!   Request-URI (proxies may rewrite it in SIP); `userhash` and `username*`
//!   (RFC 7616 §3.4.4, §3.4.5) are not supported: such a client simply fails.
//! * Credentials for another realm are "no credentials" (a fresh challenge).
//!   A request without a `Digest` credential (another scheme, e.g. RFC 4475
//!   `regaut01`) is also "no credentials", never an error.
//! * An unknown user is hashed against a dummy password, so it costs the same
//!   work and ends in the same outcome kind as a wrong password.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest hash algorithms we offer and accept (RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `algorithm=SHA-256` (RFC 8760).
    Sha256,
    /// `algorithm=MD5`, also the default when the parameter is absent.
    Md5,
}

impl DigestAlgorithm {
    /// The token used in the `algorithm` parameter.
    pub fn token(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Md5 => "MD5",
        }
    }

    /// Parses an `algorithm` token, case-insensitively. `-sess` variants and
    /// unknown algorithms give `None`.
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else if token.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else {
            None
        }
    }

    /// Lower-case hex of H(parts joined by ':').
    fn hash_hex(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut h = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    h.update(b":");
                }
                h.update(p);
            }
            hex::encode(h.finalize())
        }
        match self {
            DigestAlgorithm::Sha256 => run::<Sha256>(parts),
            DigestAlgorithm::Md5 => run::<Md5>(parts),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Inputs of the digest `response` computation (RFC 7616 §3.4.1).
#[derive(Debug, Clone, Copy)]
pub struct ResponseInputs<'a> {
    pub algorithm: DigestAlgorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `(nc, cnonce)` exactly as they appear on the wire, for `qop=auth`;
    /// `None` computes the RFC 2069 form (client side only).
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// The `response` value: lower-case hex of
/// `H(H(user:realm:pass):nonce:nc:cnonce:auth:H(method:uri))`.
pub fn compute_response(i: &ResponseInputs<'_>) -> String {
    let alg = i.algorithm;
    let ha1 = alg.hash_hex(&[
        i.username.as_bytes(),
        i.realm.as_bytes(),
        i.password.as_bytes(),
    ]);
    let ha2 = alg.hash_hex(&[i.method.as_bytes(), i.uri.as_bytes()]);
    match i.qop_auth {
        Some((nc, cnonce)) => alg.hash_hex(&[
            ha1.as_bytes(),
            i.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]),
        None => alg.hash_hex(&[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// What [`DigestAuth::verify`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Valid credentials for `user`.
    Authenticated { user: String },
    /// No usable `Digest` credentials for our realm: challenge.
    NoCredentials,
    /// Right password, but the nonce is too old (or no longer tracked):
    /// challenge again with `stale=true`.
    Stale,
    /// Wrong credentials: challenge again, count the failure. `reason` is for
    /// logs only; the SIP answer must not depend on it.
    Failed {
        user: Option<String>,
        reason: AuthFailure,
    },
}

/// Why credentials were refused (for logs and counters, never for the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("malformed Digest credentials: {0}")]
    Malformed(&'static str),
    #[error("algorithm not offered")]
    UnsupportedAlgorithm,
    #[error("qop=auth with nc and cnonce is required")]
    QopRequired,
    #[error("nonce not minted by us")]
    ForgedNonce,
    #[error("opaque does not match the challenge")]
    OpaqueMismatch,
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("nonce count replayed")]
    Replay,
}

/// Why an `Authorization` / `WWW-Authenticate` value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Digest header")]
    NotDigest,
    #[error("malformed Digest header: {what}")]
    Malformed {
        /// The `username` if it could be read, for logs and counters.
        username: Option<String>,
        what: &'static str,
    },
}

/// Parsed `Digest` credentials (the params we use; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// As sent; absent means MD5.
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

/// Parses one `Authorization` (or `Proxy-Authorization`) header value.
/// Tolerates LWS (including CR/LF), any param order, case of param names,
/// quoted or unquoted values and quoted-pair escapes. Never panics.
pub fn parse_credentials(value: &[u8]) -> Result<DigestCredentials, CredentialsError> {
    let params = parse_digest_header(value)?;
    let username = params.text("username");
    let malformed = |what| CredentialsError::Malformed {
        username: username.clone(),
        what,
    };
    if params.duplicate {
        return Err(malformed("duplicate parameter"));
    }
    let need = |name: &'static str| params.text(name).ok_or_else(|| malformed(name));
    Ok(DigestCredentials {
        username: username.clone().ok_or_else(|| malformed("username"))?,
        realm: need("realm")?,
        nonce: need("nonce")?,
        uri: need("uri")?,
        response: need("response")?,
        algorithm: params.text("algorithm"),
        cnonce: params.text("cnonce"),
        opaque: params.text("opaque"),
        qop: params.text("qop"),
        nc: params.text("nc"),
    })
}

/// Default bound of the per-nonce `nc` table.
pub const DEFAULT_NONCE_TABLE: usize = 4096;

const NONCE_PAYLOAD: usize = 20;
const NONCE_TAG: usize = 16;
const NONCE_RAW: usize = NONCE_PAYLOAD + NONCE_TAG;
const NONCE_DOMAIN: &[u8] = b"sb-nonce-v1";
const OPAQUE_DOMAIN: &[u8] = b"sb-opaque-v1";
const DUMMY_PASSWORD: &str = "switchboard-no-such-user-dummy-password";
/// At most this many parameters in one header (bounds parsing work).
const MAX_PARAMS: usize = 32;

type NonceKey = (u64, [u8; NONCE_RAW]);

/// Server side of digest authentication for one realm.
pub struct DigestAuth {
    realm: String,
    mac: Hmac<Sha256>,
    nonce_lifetime_ms: u64,
    algorithms: Vec<DigestAlgorithm>,
    epoch: Instant,
    instance: u32,
    counter: u64,
    opaque: String,
    /// Highest `nc` accepted per nonce, ordered by mint time.
    nc_table: BTreeMap<NonceKey, u32>,
    nc_capacity: usize,
    /// Mint time of the newest nonce evicted from a full table: a nonce
    /// minted at or before it that is not in the table may have been used.
    evicted_upto_ms: Option<u64>,
}

impl fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestAuth")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .field("nonce_lifetime_ms", &self.nonce_lifetime_ms)
            .field("instance", &self.instance)
            .field("tracked_nonces", &self.nc_table.len())
            .finish_non_exhaustive()
    }
}

impl DigestAuth {
    /// `algorithms` is the offer, in order; duplicates are dropped and an
    /// empty list means `[Sha256, Md5]`.
    pub fn new(
        realm: String,
        key: [u8; 32],
        nonce_lifetime: Duration,
        algorithms: Vec<DigestAlgorithm>,
        epoch: Instant,
    ) -> Self {
        // invariant: HMAC accepts keys of any length.
        let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        let mut algs: Vec<DigestAlgorithm> = Vec::new();
        for a in algorithms {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        if algs.is_empty() {
            algs = vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5];
        }
        let mut m = mac.clone();
        m.update(OPAQUE_DOMAIN);
        m.update(realm.as_bytes());
        let opaque = hex::encode(&m.finalize().into_bytes()[..8]);
        DigestAuth {
            realm,
            mac,
            nonce_lifetime_ms: u64::try_from(nonce_lifetime.as_millis()).unwrap_or(u64::MAX),
            algorithms: algs,
            epoch,
            instance: 0,
            counter: 0,
            opaque,
            nc_table: BTreeMap::new(),
            nc_capacity: DEFAULT_NONCE_TABLE,
            evicted_upto_ms: None,
        }
    }

    /// Sets the instance id mixed into nonces (e.g. the shard id), so that
    /// instances sharing a key never mint the same nonce.
    pub fn with_instance(mut self, instance: u32) -> Self {
        self.instance = instance;
        self
    }

    /// Bounds the `nc` replay table (at least 1).
    pub fn with_nonce_table_capacity(mut self, capacity: usize) -> Self {
        self.nc_capacity = capacity.max(1);
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn algorithms(&self) -> &[DigestAlgorithm] {
        &self.algorithms
    }

    /// Number of nonces currently tracked for `nc` replay.
    pub fn tracked_nonces(&self) -> usize {
        self.nc_table.len()
    }

    /// Challenge header values (`WWW-Authenticate` or `Proxy-Authenticate`),
    /// one per algorithm in configured order, sharing one fresh nonce.
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<String> {
        let algorithms = self.algorithms.clone();
        self.challenges_for(now, stale, &algorithms)
    }

    /// Like [`DigestAuth::challenges`], for the given algorithms only (in
    /// that order): for clients that fail on an algorithm they lack.
    pub fn challenges_for(
        &mut self,
        now: Instant,
        stale: bool,
        algorithms: &[DigestAlgorithm],
    ) -> Vec<String> {
        let nonce = self.mint_nonce(now);
        let realm = quote(&self.realm);
        algorithms
            .iter()
            .map(|alg| {
                let mut s = format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"",
                    self.opaque,
                    alg.token()
                );
                if stale {
                    s.push_str(", stale=true");
                }
                s
            })
            .collect()
    }

    /// Verifies the request's credentials. `authorization_values` are all
    /// `Authorization` header values of the request; `password_of` looks up a
    /// user's password (`None`: unknown user).
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        authorization_values: &[&[u8]],
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let (creds, alg) = match self.select(authorization_values) {
            Ok(selected) => selected,
            Err(outcome) => return outcome,
        };
        let user = Some(creds.username.clone());
        let fail = |reason| AuthOutcome::Failed {
            user: user.clone(),
            reason,
        };

        // Checks that do not depend on the user come first.
        let qop_ok = creds
            .qop
            .as_deref()
            .is_some_and(|q| q.eq_ignore_ascii_case("auth"));
        let (Some(nc_str), Some(cnonce), true) =
            (creds.nc.as_deref(), creds.cnonce.as_deref(), qop_ok)
        else {
            return fail(AuthFailure::QopRequired);
        };
        let Some(nc) = parse_nc(nc_str) else {
            return fail(AuthFailure::Malformed("nc"));
        };
        let Some(nonce) = self.decode_nonce(&creds.nonce) else {
            return fail(AuthFailure::ForgedNonce);
        };
        if creds.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            return fail(AuthFailure::OpaqueMismatch);
        }

        // Same work for known and unknown users.
        let password = password_of(&creds.username);
        let expected = compute_response(&ResponseInputs {
            algorithm: alg,
            username: &creds.username,
            realm: &creds.realm,
            password: password.as_deref().unwrap_or(DUMMY_PASSWORD),
            method,
            uri: &creds.uri,
            nonce: &creds.nonce,
            qop_auth: Some((nc_str, cnonce)),
        });
        let matches = ct_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        );
        if password.is_none() {
            return fail(AuthFailure::UnknownUser);
        }
        if !matches {
            return fail(AuthFailure::WrongPassword);
        }

        let now_ms = self.ms(now);
        if now_ms.saturating_sub(nonce.0) > self.nonce_lifetime_ms {
            return AuthOutcome::Stale;
        }
        self.prune_nc(now_ms);
        match self.nc_table.get_mut(&nonce) {
            Some(last) if nc <= *last => return fail(AuthFailure::Replay),
            Some(last) => *last = nc,
            None => {
                if self.evicted_upto_ms.is_some_and(|w| nonce.0 <= w) {
                    // Possibly used before its entry was evicted: make the
                    // client take a fresh nonce rather than risk a replay.
                    return AuthOutcome::Stale;
                }
                self.nc_table.insert(nonce, nc);
                while self.nc_table.len() > self.nc_capacity {
                    if let Some(((ts, _), _)) = self.nc_table.pop_first() {
                        self.evicted_upto_ms = Some(self.evicted_upto_ms.unwrap_or(0).max(ts));
                    }
                }
            }
        }
        AuthOutcome::Authenticated {
            user: creds.username,
        }
    }

    /// Picks the credentials for our realm with an algorithm we offer
    /// (preferring our configured order), or the outcome when there are none.
    fn select(
        &self,
        values: &[&[u8]],
    ) -> Result<(DigestCredentials, DigestAlgorithm), AuthOutcome> {
        let mut best: Option<(usize, DigestCredentials, DigestAlgorithm)> = None;
        let mut fallback: Option<AuthOutcome> = None;
        for v in values {
            match parse_credentials(v) {
                Err(CredentialsError::NotDigest) => {}
                Err(CredentialsError::Malformed { username, what }) => {
                    if fallback.is_none() {
                        fallback = Some(AuthOutcome::Failed {
                            user: username,
                            reason: AuthFailure::Malformed(what),
                        });
                    }
                }
                Ok(c) => {
                    if c.realm != self.realm {
                        continue;
                    }
                    let alg = DigestAlgorithm::from_token(c.algorithm.as_deref().unwrap_or("MD5"));
                    let rank = alg.and_then(|a| self.algorithms.iter().position(|x| *x == a));
                    match (alg, rank) {
                        (Some(a), Some(r)) => {
                            if best.as_ref().is_none_or(|(br, _, _)| r < *br) {
                                best = Some((r, c, a));
                            }
                        }
                        _ => {
                            // Our realm beats a malformed header of unknown realm.
                            if !matches!(
                                fallback,
                                Some(AuthOutcome::Failed {
                                    reason: AuthFailure::UnsupportedAlgorithm,
                                    ..
                                })
                            ) {
                                fallback = Some(AuthOutcome::Failed {
                                    user: Some(c.username),
                                    reason: AuthFailure::UnsupportedAlgorithm,
                                });
                            }
                        }
                    }
                }
            }
        }
        match best {
            Some((_, c, a)) => Ok((c, a)),
            None => Err(fallback.unwrap_or(AuthOutcome::NoCredentials)),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn tag(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut m = self.mac.clone();
        m.update(NONCE_DOMAIN);
        m.update(payload);
        m
    }

    fn mint_nonce(&mut self, now: Instant) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut raw = [0u8; NONCE_RAW];
        raw[..8].copy_from_slice(&self.ms(now).to_be_bytes());
        raw[8..12].copy_from_slice(&self.instance.to_be_bytes());
        raw[12..NONCE_PAYLOAD].copy_from_slice(&self.counter.to_be_bytes());
        let tag = self.tag(&raw[..NONCE_PAYLOAD]).finalize().into_bytes();
        raw[NONCE_PAYLOAD..].copy_from_slice(&tag[..NONCE_TAG]);
        hex::encode(raw)
    }

    /// `(mint ms, raw bytes)` of an authentic nonce, `None` if forged.
    fn decode_nonce(&self, nonce: &str) -> Option<NonceKey> {
        let mut raw = [0u8; NONCE_RAW];
        hex::decode_to_slice(nonce, &mut raw).ok()?;
        self.tag(&raw[..NONCE_PAYLOAD])
            .verify_truncated_left(&raw[NONCE_PAYLOAD..])
            .ok()?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        Some((u64::from_be_bytes(ts), raw))
    }

    /// Drops table entries whose nonce has expired.
    fn prune_nc(&mut self, now_ms: u64) {
        while let Some((&(ts, _), _)) = self.nc_table.first_key_value() {
            if now_ms.saturating_sub(ts) <= self.nonce_lifetime_ms {
                break;
            }
            self.nc_table.pop_first();
        }
    }
}

/// What a client needs to answer a challenge.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub cnonce: &'a str,
    pub nc: u32,
}

/// Client side: answers one challenge header value (`WWW-Authenticate` or
/// `Proxy-Authenticate`) with an `Authorization` header value. Uses
/// `qop=auth` when offered, RFC 2069 form otherwise.
pub fn respond(challenge: &[u8], req: &ClientRequest<'_>) -> Result<String, CredentialsError> {
    let params = parse_digest_header(challenge)?;
    let malformed = |what| CredentialsError::Malformed {
        username: None,
        what,
    };
    let realm = params.text("realm").ok_or_else(|| malformed("realm"))?;
    let nonce = params.text("nonce").ok_or_else(|| malformed("nonce"))?;
    let algorithm = match params.text("algorithm") {
        None => DigestAlgorithm::Md5,
        Some(a) => DigestAlgorithm::from_token(&a).ok_or_else(|| malformed("algorithm"))?,
    };
    let qop_auth = params.text("qop").is_some_and(|q| {
        q.split(',').any(|t| {
            t.trim_matches(|c: char| c.is_ascii_whitespace())
                .eq_ignore_ascii_case("auth")
        })
    });
    let nc = format!("{:08x}", req.nc);
    let response = compute_response(&ResponseInputs {
        algorithm,
        username: req.username,
        realm: &realm,
        password: req.password,
        method: req.method,
        uri: req.uri,
        nonce: &nonce,
        qop_auth: qop_auth.then_some((nc.as_str(), req.cnonce)),
    });
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(req.username),
        quote(&realm),
        quote(&nonce),
        quote(req.uri),
        algorithm.token()
    );
    if qop_auth {
        out.push_str(&format!(
            ", qop=auth, nc={nc}, cnonce={}",
            quote(req.cnonce)
        ));
    }
    if let Some(opaque) = params.text("opaque") {
        out.push_str(&format!(", opaque={}", quote(&opaque)));
    }
    Ok(out)
}

/// Default bound of each [`FailureCounters`] map.
pub const DEFAULT_FAILURE_CAPACITY: usize = 4096;
/// User names are counted on at most this many bytes.
const MAX_COUNTED_USER: usize = 128;

/// Authentication failures per source IP and per user, for a ban policy.
/// Each map is bounded; when full, the entry with the lowest count (the
/// least recently hit among equals) is evicted, so heavy hitters stay.
#[derive(Debug, Clone)]
pub struct FailureCounters {
    sources: BoundedCounts<IpAddr>,
    users: BoundedCounts<String>,
}

impl Default for FailureCounters {
    fn default() -> Self {
        Self::new(DEFAULT_FAILURE_CAPACITY)
    }
}

impl FailureCounters {
    /// `capacity` entries per map (at least 1).
    pub fn new(capacity: usize) -> Self {
        FailureCounters {
            sources: BoundedCounts::new(capacity),
            users: BoundedCounts::new(capacity),
        }
    }

    /// Counts one failure from `src`, and for `user` when known.
    pub fn record(&mut self, src: IpAddr, user: Option<&str>) {
        self.sources.bump(src.to_canonical());
        if let Some(u) = user {
            self.users.bump(counted_user(u).to_owned());
        }
    }

    pub fn by_source(&self, ip: IpAddr) -> u64 {
        self.sources.get(&ip.to_canonical())
    }

    pub fn by_user(&self, user: &str) -> u64 {
        self.users.get(counted_user(user))
    }

    /// Forgets a source (e.g. after its ban is lifted).
    pub fn clear_source(&mut self, ip: IpAddr) {
        self.sources.remove(&ip.to_canonical());
    }

    /// Forgets a user (e.g. after a successful login).
    pub fn clear_user(&mut self, user: &str) {
        self.users.remove(counted_user(user));
    }

    /// (sources, users) currently counted.
    pub fn len(&self) -> (usize, usize) {
        (self.sources.map.len(), self.users.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.sources.map.is_empty() && self.users.map.is_empty()
    }
}

fn counted_user(user: &str) -> &str {
    if user.len() <= MAX_COUNTED_USER {
        return user;
    }
    let mut end = MAX_COUNTED_USER;
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    &user[..end]
}

#[derive(Debug, Clone)]
struct BoundedCounts<K> {
    map: HashMap<K, (u64, u64)>,
    /// (count, last-hit sequence) → key; first entry is the eviction victim.
    order: BTreeMap<(u64, u64), K>,
    capacity: usize,
    seq: u64,
}

impl<K: Clone + Eq + Hash> BoundedCounts<K> {
    fn new(capacity: usize) -> Self {
        BoundedCounts {
            map: HashMap::new(),
            order: BTreeMap::new(),
            capacity: capacity.max(1),
            seq: 0,
        }
    }

    fn bump(&mut self, key: K) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(entry) = self.map.get_mut(&key) {
            let old = *entry;
            let new = (old.0.saturating_add(1), seq);
            *entry = new;
            let k = self.order.remove(&old).unwrap_or(key);
            self.order.insert(new, k);
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_first() {
                Some((_, victim)) => {
                    self.map.remove(&victim);
                }
                None => break,
            }
        }
        self.map.insert(key.clone(), (1, seq));
        self.order.insert((1, seq), key);
    }

    fn get<Q>(&self, key: &Q) -> u64
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map_or(0, |e| e.0)
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e);
        }
    }
}

/// Constant-time equality for equal lengths (lengths are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `nc`: 1 to 8 hex digits, not zero.
fn parse_nc(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok().filter(|n| *n > 0)
}

/// A quoted-string, escaping `"` and `\`; control characters are dropped so
/// a value can never break the header.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Params of a `Digest` header, names lower-cased.
struct Params {
    items: Vec<(String, Vec<u8>)>,
    duplicate: bool,
}

impl Params {
    /// The value of `name` as UTF-8 text (invalid UTF-8 counts as absent).
    fn text(&self, name: &str) -> Option<String> {
        self.items
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    }
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_lws(&mut self) {
        while self.peek().is_some_and(is_lws) {
            self.i += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        self.b.get(start..self.i).unwrap_or_default()
    }

    /// A quoted-string (cursor on the opening quote) with quoted-pairs undone.
    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted-string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        None => return Err("unterminated quoted-string"),
                        Some(c) => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// Parses `Digest name=value, ...`. Another scheme (or an empty value) is
/// `NotDigest`, whatever follows it.
fn parse_digest_header(value: &[u8]) -> Result<Params, CredentialsError> {
    let mut c = Cursor { b: value, i: 0 };
    c.skip_lws();
    let scheme = c.take_while(is_token);
    if !scheme.eq_ignore_ascii_case(b"Digest") || c.peek().is_some_and(|b| !is_lws(b)) {
        return Err(CredentialsError::NotDigest);
    }
    let mut items: Vec<(String, Vec<u8>)> = Vec::new();
    let mut duplicate = false;
    let result = (|| {
        loop {
            c.skip_lws();
            match c.peek() {
                None => return Ok(()),
                Some(b',') => {
                    c.i += 1;
                    continue;
                }
                Some(_) => {}
            }
            if items.len() >= MAX_PARAMS {
                return Err("too many parameters");
            }
            let name = c.take_while(is_token);
            if name.is_empty() {
                return Err("expected a parameter name");
            }
            c.skip_lws();
            if c.peek() != Some(b'=') {
                return Err("expected '='");
            }
            c.i += 1;
            c.skip_lws();
            let val = if c.peek() == Some(b'"') {
                c.quoted()?
            } else {
                let v = c.take_while(|b| b > b' ' && b != b',' && b != b'"' && b != 0x7f);
                if v.is_empty() {
                    return Err("expected a parameter value");
                }
                v.to_vec()
            };
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if items.iter().any(|(n, _)| *n == name) {
                duplicate = true;
            } else {
                items.push((name, val));
            }
            c.skip_lws();
            match c.peek() {
                None | Some(b',') => {}
                Some(_) => return Err("expected ','"),
            }
        }
    })();
    let params = Params { items, duplicate };
    match result {
        Ok(()) if params.items.is_empty() => Err(CredentialsError::Malformed {
            username: None,
            what: "no parameters",
        }),
        Ok(()) => Ok(params),
        Err(what) => Err(CredentialsError::Malformed {
            username: params.text("username"),
            what,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const REALM: &str = "sb.example";
    const LIFETIME: Duration = Duration::from_secs(300);

    fn auth(t0: Instant) -> DigestAuth {
        DigestAuth::new(
            REALM.to_owned(),
            [7u8; 32],
            LIFETIME,
            vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            t0,
        )
    }

    fn passwords(user: &str) -> Option<String> {
        (user == "alice").then(|| "s3cret".to_owned())
    }

    fn answer(challenge: &str, user: &str, password: &str, nc: u32) -> String {
        respond(
            challenge.as_bytes(),
            &ClientRequest {
                username: user,
                password,
                method: "REGISTER",
                uri: "sip:sb.example",
                cnonce: "0a4f113b",
                nc,
            },
        )
        .unwrap()
    }

    fn verify_one(a: &mut DigestAuth, now: Instant, value: &str) -> AuthOutcome {
        a.verify(now, "REGISTER", &[value.as_bytes()], passwords)
    }

    #[test]
    fn rfc7616_3_9_1_md5_and_sha256_vectors() {
        // RFC 7616 §3.9.1 example (values also recomputed independently
        // with Python hashlib).
        let base = ResponseInputs {
            algorithm: DigestAlgorithm::Md5,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop_auth: Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
        };
        assert_eq!(compute_response(&base), "8ca523f5e9506fed4657c9700eebdbec");
        let sha = ResponseInputs {
            algorithm: DigestAlgorithm::Sha256,
            ..base
        };
        assert_eq!(
            compute_response(&sha),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_example_authorization_header_parses() {
        let v = b"Digest username=\"Mufasa\",\r\n realm=\"http-auth@example.org\",\r\n uri=\"/dir/index.html\",\r\n algorithm=SHA-256,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n nc=00000001,\r\n cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n qop=auth,\r\n response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        let inputs = ResponseInputs {
            algorithm: DigestAlgorithm::Sha256,
            username: &c.username,
            realm: &c.realm,
            password: "Circle of Life",
            method: "GET",
            uri: &c.uri,
            nonce: &c.nonce,
            qop_auth: Some(("00000001", c.cnonce.as_deref().unwrap())),
        };
        assert_eq!(compute_response(&inputs), c.response);
    }

    #[test]
    fn challenges_one_per_algorithm_in_configured_order() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].starts_with("Digest realm=\"sb.example\", nonce=\""));
        assert!(ch[0].contains("algorithm=SHA-256, qop=\"auth\""));
        assert!(ch[1].contains("algorithm=MD5"));
        assert!(!ch[0].contains("stale"));
        let st = a.challenges(t0, true);
        assert!(st.iter().all(|c| c.ends_with(", stale=true")));
        // Fresh nonce each time.
        assert_ne!(
            parse_digest_header(ch[0].as_bytes()).unwrap().text("nonce"),
            parse_digest_header(st[0].as_bytes()).unwrap().text("nonce")
        );
        let md5_only = DigestAuth::new(
            REALM.into(),
            [1; 32],
            LIFETIME,
            vec![DigestAlgorithm::Md5, DigestAlgorithm::Md5],
            t0,
        );
        assert_eq!(md5_only.algorithms(), &[DigestAlgorithm::Md5]);
    }

    #[test]
    fn both_algorithms_round_trip() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        for (i, ch) in a.challenges(t0, false).into_iter().enumerate() {
            // The challenges share one nonce, so the nc keeps increasing.
            let v = answer(&ch, "alice", "s3cret", i as u32 + 1);
            let expect_alg = if i == 0 { "SHA-256" } else { "MD5" };
            assert!(v.contains(&format!("algorithm={expect_alg}")));
            assert_eq!(
                verify_one(&mut a, t0 + Duration::from_secs(1), &v),
                AuthOutcome::Authenticated {
                    user: "alice".into()
                }
            );
        }
    }

    #[test]
    fn nonce_reuse_with_increasing_nc_is_accepted() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        for nc in 1..=3 {
            let v = answer(&ch, "alice", "s3cret", nc);
            assert!(matches!(
                verify_one(&mut a, t0, &v),
                AuthOutcome::Authenticated { .. }
            ));
        }
        assert_eq!(a.tracked_nonces(), 1);
    }

    #[test]
    fn replayed_nc_fails() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let v2 = answer(&ch, "alice", "s3cret", 2);
        assert!(matches!(
            verify_one(&mut a, t0, &v2),
            AuthOutcome::Authenticated { .. }
        ));
        for nc in [2, 1] {
            let v = answer(&ch, "alice", "s3cret", nc);
            assert_eq!(
                verify_one(&mut a, t0, &v),
                AuthOutcome::Failed {
                    user: Some("alice".into()),
                    reason: AuthFailure::Replay
                }
            );
        }
    }

    #[test]
    fn wrong_password_does_not_poison_nc() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let bad = answer(&ch, "alice", "guess", 9);
        assert!(matches!(
            verify_one(&mut a, t0, &bad),
            AuthOutcome::Failed {
                reason: AuthFailure::WrongPassword,
                ..
            }
        ));
        let good = answer(&ch, "alice", "s3cret", 1);
        assert!(matches!(
            verify_one(&mut a, t0, &good),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn expired_authentic_nonce_is_stale() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let v = answer(&ch, "alice", "s3cret", 1);
        let late = t0 + LIFETIME + Duration::from_millis(1);
        assert_eq!(verify_one(&mut a, late, &v), AuthOutcome::Stale);
        // Exactly at the lifetime it is still fresh.
        assert!(matches!(
            verify_one(&mut a, t0 + LIFETIME, &v),
            AuthOutcome::Authenticated { .. }
        ));
        // Stale only with the right password.
        let bad = answer(&ch, "alice", "guess", 2);
        assert!(matches!(
            verify_one(&mut a, late, &bad),
            AuthOutcome::Failed { .. }
        ));
    }

    #[test]
    fn forged_nonce_fails_plainly() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let nonce = parse_digest_header(ch.as_bytes())
            .unwrap()
            .text("nonce")
            .unwrap();
        // Flip a timestamp nibble: the tag no longer verifies.
        let mut forged = nonce.clone().into_bytes();
        forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        let other_key = DigestAuth::new(REALM.into(), [8; 32], LIFETIME, vec![], t0)
            .challenges(t0, false)
            .remove(0);
        for ch in [
            ch.replace(&nonce, &forged),
            other_key,
            ch.replace(&nonce, "abc"),
        ] {
            let v = answer(&ch, "alice", "s3cret", 1);
            let out = verify_one(&mut a, t0 + LIFETIME * 2, &v);
            assert!(
                matches!(
                    out,
                    AuthOutcome::Failed {
                        reason: AuthFailure::ForgedNonce | AuthFailure::OpaqueMismatch,
                        ..
                    }
                ),
                "{out:?}"
            );
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_same_outcome_kind() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let wrong = verify_one(&mut a, t0, &answer(&ch, "alice", "guess", 1));
        let unknown = verify_one(&mut a, t0, &answer(&ch, "mallory", "s3cret", 1));
        assert_eq!(
            wrong,
            AuthOutcome::Failed {
                user: Some("alice".into()),
                reason: AuthFailure::WrongPassword
            }
        );
        assert_eq!(
            unknown,
            AuthOutcome::Failed {
                user: Some("mallory".into()),
                reason: AuthFailure::UnknownUser
            }
        );
        // Unknown user whose password happens to be the dummy still fails.
        let dummy = verify_one(&mut a, t0, &answer(&ch, "mallory", DUMMY_PASSWORD, 2));
        assert!(matches!(
            dummy,
            AuthOutcome::Failed {
                reason: AuthFailure::UnknownUser,
                ..
            }
        ));
    }

    #[test]
    fn unknown_scheme_is_no_credentials() {
        // RFC 4475 §3.1.2.x regaut01.
        let t0 = Instant::now();
        let mut a = auth(t0);
        for v in [
            &b"NoOneKnowsThisScheme opaque-data=here"[..],
            b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            b"",
            b"   ",
            b"Digestusername=\"alice\"",
        ] {
            assert_eq!(
                a.verify(t0, "REGISTER", &[v], passwords),
                AuthOutcome::NoCredentials
            );
        }
        assert_eq!(
            a.verify(t0, "REGISTER", &[], passwords),
            AuthOutcome::NoCredentials
        );
    }

    #[test]
    fn other_realm_is_no_credentials_and_ours_is_picked_among_several() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let mut other = DigestAuth::new("elsewhere".into(), [9; 32], LIFETIME, vec![], t0);
        let foreign = answer(&other.challenges(t0, false)[0], "alice", "s3cret", 1);
        assert_eq!(verify_one(&mut a, t0, &foreign), AuthOutcome::NoCredentials);
        let ours = answer(&a.challenges(t0, false)[1], "alice", "s3cret", 1);
        let out = a.verify(
            t0,
            "REGISTER",
            &[
                b"NoOneKnowsThisScheme x=y",
                foreign.as_bytes(),
                ours.as_bytes(),
            ],
            passwords,
        );
        assert_eq!(
            out,
            AuthOutcome::Authenticated {
                user: "alice".into()
            }
        );
    }

    #[test]
    fn unsupported_algorithm_fails() {
        let t0 = Instant::now();
        let mut sha_only = DigestAuth::new(
            REALM.into(),
            [7; 32],
            LIFETIME,
            vec![DigestAlgorithm::Sha256],
            t0,
        );
        let ch = sha_only
            .challenges(t0, false)
            .remove(0)
            .replace("SHA-256", "MD5");
        let v = answer(&ch, "alice", "s3cret", 1);
        assert!(matches!(
            verify_one(&mut sha_only, t0, &v),
            AuthOutcome::Failed {
                reason: AuthFailure::UnsupportedAlgorithm,
                ..
            }
        ));
        let v = v.replace("algorithm=MD5", "algorithm=SHA-512-256");
        assert!(matches!(
            verify_one(&mut sha_only, t0, &v),
            AuthOutcome::Failed {
                reason: AuthFailure::UnsupportedAlgorithm,
                ..
            }
        ));
    }

    #[test]
    fn rfc2069_style_without_qop_is_refused() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let no_qop = ch.replace(", qop=\"auth\"", "");
        let v = answer(&no_qop, "alice", "s3cret", 1);
        assert!(!v.contains("qop"));
        assert!(matches!(
            verify_one(&mut a, t0, &v),
            AuthOutcome::Failed {
                reason: AuthFailure::QopRequired,
                ..
            }
        ));
    }

    #[test]
    fn parsing_tolerates_lws_escapes_order_and_case() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let p = parse_digest_header(ch.as_bytes()).unwrap();
        let nonce = p.text("nonce").unwrap();
        let opaque = p.text("opaque").unwrap();
        let user = "al\"i\\ce";
        let response = compute_response(&ResponseInputs {
            algorithm: DigestAlgorithm::Sha256,
            username: user,
            realm: REALM,
            password: "pw",
            method: "REGISTER",
            uri: "sip:sb.example",
            nonce: &nonce,
            qop_auth: Some(("00000001", "xyz")),
        });
        let v = format!(
            "digest   NC=00000001 ,\r\n\tQop=\"auth\",RESPONSE=\"{}\" , ,Uri = \"sip:sb.example\",\
             CNonce=xyz, Opaque=\"{opaque}\", nonce={nonce},algorithm=sha-256,\
             realm=\"sb\\.example\", Username=\"al\\\"i\\\\ce\", future-param=\"x,y\"",
            response.to_ascii_uppercase()
        );
        let out = a.verify(t0, "REGISTER", &[v.as_bytes()], |u| {
            (u == user).then(|| "pw".into())
        });
        assert_eq!(out, AuthOutcome::Authenticated { user: user.into() });
    }

    #[test]
    fn malformed_digest_fails_without_panicking() {
        let t0 = Instant::now();
        let mut a = auth(t0);
        let cases: &[&[u8]] = &[
            b"Digest",
            b"Digest ",
            b"Digest username",
            b"Digest username=",
            b"Digest username=\"alice",
            b"Digest username=\"alice\\",
            b"Digest username=\"alice\" realm=\"x\"",
            b"Digest =x",
            b"Digest username=\"alice\", username=\"bob\", realm=\"sb.example\"",
            b"Digest username=\"a\", realm=\"sb.example\", nonce=\"n\", uri=\"u\"",
            b"Digest \xff\xfe=\x80",
            b"Digest username=\"\xff\", realm=\"sb.example\", nonce=\"n\", uri=\"u\", response=\"r\"",
        ];
        for v in cases {
            let out = a.verify(t0, "REGISTER", &[v], passwords);
            assert!(
                matches!(
                    out,
                    AuthOutcome::Failed {
                        reason: AuthFailure::Malformed(_),
                        ..
                    }
                ),
                "{:?} -> {out:?}",
                String::from_utf8_lossy(v)
            );
        }
        let too_many = format!("Digest {}", "a=b, ".repeat(100));
        assert!(matches!(
            parse_credentials(too_many.as_bytes()),
            Err(CredentialsError::Malformed { .. })
        ));
    }

    #[test]
    fn parser_never_panics_on_byte_soup() {
        // Cheap deterministic fuzz: every prefix and byte-mutations of a
        // valid header.
        let t0 = Instant::now();
        let mut a = auth(t0);
        let ch = a.challenges(t0, false).remove(0);
        let good = answer(&ch, "alice", "s3cret", 1).into_bytes();
        for end in 0..=good.len() {
            let _ = a.verify(t0, "REGISTER", &[&good[..end]], passwords);
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut v = good.clone();
            let pos = x as usize % v.len();
            v[pos] = b"\"\\,= \r\n\x00\xffaZ"[(x >> 8) as usize % 11];
            let _ = parse_credentials(&v);
            let _ = a.verify(t0, "REGISTER", &[&v], passwords);
        }
    }

    #[test]
    fn nc_table_is_bounded_and_evicted_nonces_go_stale() {
        let t0 = Instant::now();
        let mut a = auth(t0).with_nonce_table_capacity(2);
        let chs: Vec<String> = (0..3u64)
            .map(|i| a.challenges(t0 + Duration::from_millis(i), false).remove(0))
            .collect();
        for ch in &chs {
            let v = answer(ch, "alice", "s3cret", 1);
            assert!(matches!(
                verify_one(&mut a, t0 + Duration::from_secs(1), &v),
                AuthOutcome::Authenticated { .. }
            ));
        }
        assert_eq!(a.tracked_nonces(), 2);
        // The oldest nonce was evicted: even a higher nc is answered stale,
        // so a replay can never authenticate.
        let v = answer(&chs[0], "alice", "s3cret", 2);
        assert_eq!(
            verify_one(&mut a, t0 + Duration::from_secs(1), &v),
            AuthOutcome::Stale
        );
        // Expiry empties the table.
        let fresh = a.challenges(t0 + LIFETIME * 3, false).remove(0);
        let v = answer(&fresh, "alice", "s3cret", 1);
        assert!(matches!(
            verify_one(&mut a, t0 + LIFETIME * 3, &v),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(a.tracked_nonces(), 1);
    }

    #[test]
    fn instances_mint_distinct_nonces() {
        let t0 = Instant::now();
        let mut a = auth(t0).with_instance(0);
        let mut b = auth(t0).with_instance(1);
        let na = a.challenges(t0, false).remove(0);
        let nb = b.challenges(t0, false).remove(0);
        assert_ne!(na, nb);
        // Same key: a nonce from one instance verifies on the other.
        let v = answer(&nb, "alice", "s3cret", 1);
        assert!(matches!(
            verify_one(&mut a, t0, &v),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn realm_with_quotes_is_escaped_and_round_trips() {
        let t0 = Instant::now();
        let mut a = DigestAuth::new("we \"quote\"\r\n".into(), [3; 32], LIFETIME, vec![], t0);
        let ch = a.challenges(t0, false).remove(0);
        assert!(ch.starts_with("Digest realm=\"we \\\"quote\\\"\""));
        assert!(!ch.contains('\r'));
    }

    #[test]
    fn failure_counters_count_and_stay_bounded() {
        let mut f = FailureCounters::new(3);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for _ in 0..5 {
            f.record(ip, Some("alice"));
        }
        f.record(ip, None);
        assert_eq!(f.by_source(ip), 6);
        assert_eq!(f.by_user("alice"), 5);
        // IPv4-mapped IPv6 counts as the IPv4 source.
        assert_eq!(f.by_source("::ffff:192.0.2.1".parse().unwrap()), 6);
        for i in 0..10u8 {
            f.record(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)),
                Some(&format!("u{i}")),
            );
        }
        let (s, u) = f.len();
        assert_eq!((s, u), (3, 3));
        // The heavy hitters survive the churn.
        assert_eq!(f.by_source(ip), 6);
        assert_eq!(f.by_user("alice"), 5);
        assert_eq!(f.by_user("u9"), 1);
        assert_eq!(f.by_user("u0"), 0);
        f.clear_user("alice");
        f.clear_source(ip);
        assert_eq!(f.by_user("alice"), 0);
        assert_eq!(f.by_source(ip), 0);
        // Long user names are counted on a bounded prefix.
        let long = "é".repeat(200);
        f.record(ip, Some(&long));
        assert_eq!(f.by_user(&long), 1);
    }
}
