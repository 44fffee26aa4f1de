//! Fuzz target `digest`: HTTP Digest for SIP (`sip::auth`): the
//! `Authorization` parser (`parse_credentials`), the server check
//! (`DigestAuth::verify`) and the client side (`respond`) on arbitrary
//! challenges.
//!
//! Input: one header value, used three ways: as an `Authorization` value, as
//! a `WWW-Authenticate` challenge, and split at `\n` into realm, username,
//! password, uri and cnonce for a full challenge/response round trip.
//!
//! Invariants checked (beyond "never panics"):
//! * `verify` of arbitrary credentials never authenticates a user that the
//!   password lookup does not know (values are split at NUL bytes, so one
//!   input can carry several `Authorization` headers);
//! * an answer `respond` builds to any challenge parses back with
//!   `parse_credentials` (so realm, nonce, uri and response are present),
//!   carrying our username and uri, and a cnonce exactly when it has a qop;
//! * round trip: for any realm, user, password, uri and cnonce without
//!   control characters, answering a fresh `challenges` nonce with `respond`
//!   authenticates as that user, with either algorithm; replaying the same
//!   answer is refused as a replay.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::sip::auth::{
    self, AuthFailure, AuthOutcome, ClientRequest, DigestAlgorithm, DigestAuth,
};

const KEY: [u8; 32] = [0x5b; 32];
const REALM: &str = "switchboard.local";

// The harness's one clock read, a base for virtual time: the engines only
// ever see `now` values derived from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn passwords(user: &str) -> Option<String> {
    match user {
        "1001" => Some("pw1001".into()),
        "alice" => Some("s3cret".into()),
        _ => None,
    }
}

fn clean(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary Authorization values.
    let _ = auth::parse_credentials(data);
    let now = t0();
    let mut server = DigestAuth::new(
        REALM.into(),
        KEY,
        Duration::from_secs(300),
        vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        now,
    );
    let values: Vec<&[u8]> = data.split(|&c| c == 0).collect();
    for at in [now, now + Duration::from_secs(400)] {
        match server.verify(at, "REGISTER", &values, passwords) {
            AuthOutcome::Authenticated { user } => assert!(
                passwords(&user).is_some(),
                "authenticated unknown user {user:?}"
            ),
            AuthOutcome::NoCredentials | AuthOutcome::Stale | AuthOutcome::Failed { .. } => {}
        }
    }

    // 2. Arbitrary challenges.
    let req = ClientRequest {
        username: "alice",
        password: "s3cret",
        method: "REGISTER",
        uri: "sip:switchboard.local",
        cnonce: "0a4f113b",
        nc: 1,
    };
    if let Ok(answer) = auth::respond(data, &req) {
        let creds = match auth::parse_credentials(answer.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("our own answer does not parse: {e}: {answer:?}"),
        };
        assert_eq!(creds.username, req.username);
        assert_eq!(creds.uri, req.uri);
        assert_eq!(
            creds.cnonce.as_deref(),
            creds.qop.as_ref().map(|_| req.cnonce)
        );
    }

    // 3. Round trip with fuzzed names.
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let realm = parts.next().unwrap_or_default();
    let username = parts.next().unwrap_or_default();
    let password = parts.next().unwrap_or_default();
    let uri = parts.next().unwrap_or("sip:switchboard.local");
    let cnonce = parts.next().unwrap_or("abc");
    if ![realm, username, uri, cnonce].into_iter().all(clean) {
        return;
    }
    for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
        let mut server =
            DigestAuth::new(realm.into(), KEY, Duration::from_secs(300), vec![alg], now);
        let challenges = server.challenges(now, false);
        assert_eq!(challenges.len(), 1);
        let req = ClientRequest {
            username,
            password,
            method: "REGISTER",
            uri,
            cnonce,
            nc: 1,
        };
        let answer = match auth::respond(challenges[0].as_bytes(), &req) {
            Ok(a) => a,
            Err(e) => panic!("cannot answer our own challenge {:?}: {e}", challenges[0]),
        };
        let lookup = |u: &str| (u == username).then(|| password.to_owned());
        let first = server.verify(now, "REGISTER", &[answer.as_bytes()], lookup);
        assert_eq!(
            first,
            AuthOutcome::Authenticated {
                user: username.to_owned()
            },
            "round trip failed ({alg:?}): challenge {:?}, answer {answer:?}",
            challenges[0]
        );
        let again = server.verify(now, "REGISTER", &[answer.as_bytes()], lookup);
        assert!(
            matches!(
                again,
                AuthOutcome::Failed {
                    reason: AuthFailure::Replay,
                    ..
                }
            ),
            "replay not refused: {again:?}"
        );
    }
});
