//! Bearer tokens and what their scope lets them see and command.
//!
//! Every `/v1` request (REST, and the WebSocket upgrade) carries
//! `Authorization: Bearer <token>`; the token must be one of
//! `[[cti.tokens]]`. Its scope decides:
//!
//! | scope | sees | commands |
//! |---|---|---|
//! | `admin` | everything, the outbox and dead letters | everything |
//! | `supervisor` | every agent, queue and call | everything but the outbox |
//! | `agent:<id>` | its own state, calls it is on, queue statistics | itself and its calls |

use crate::config::{CtiScope, CtiToken};

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<CtiToken>);

impl Tokens {
    pub fn new(tokens: Vec<CtiToken>) -> Tokens {
        Tokens(tokens)
    }

    /// The scope of the token in an `Authorization` header value. Tokens
    /// are compared in constant time, each one.
    pub fn check(&self, authorization: Option<&str>) -> Option<Scope> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let mut found = None;
        for t in &self.0 {
            if constant_time_eq(t.token.as_bytes(), token.as_bytes()) {
                found = Some(Scope(t.scope.clone()));
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An authenticated client's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub CtiScope);

impl Scope {
    /// May see and command agent `agent`.
    pub fn covers_agent(&self, agent: &str) -> bool {
        match &self.0 {
            CtiScope::Admin | CtiScope::Supervisor => true,
            CtiScope::Agent(me) => me == agent,
        }
    }

    /// May see and command a call whose agent is `agent`.
    pub fn covers_call(&self, agent: Option<&str>) -> bool {
        match &self.0 {
            CtiScope::Admin | CtiScope::Supervisor => true,
            CtiScope::Agent(me) => agent == Some(me.as_str()),
        }
    }

    /// Sees every agent and call.
    pub fn sees_all(&self) -> bool {
        !matches!(self.0, CtiScope::Agent(_))
    }

    /// May read the outbox and dead letters.
    pub fn is_admin(&self) -> bool {
        matches!(self.0, CtiScope::Admin)
    }

    /// The agent this scope is limited to.
    pub fn agent(&self) -> Option<&str> {
        match &self.0 {
            CtiScope::Agent(a) => Some(a),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            CtiToken {
                token: "demo-token".into(),
                scope: CtiScope::Admin,
            },
            CtiToken {
                token: "agent-1001-token".into(),
                scope: CtiScope::Agent("1001".into()),
            },
        ])
    }

    #[test]
    fn only_configured_bearer_tokens_pass() {
        let t = tokens();
        assert_eq!(
            t.check(Some("Bearer demo-token")),
            Some(Scope(CtiScope::Admin))
        );
        assert_eq!(t.check(Some("Bearer demo-tokem")), None);
        assert_eq!(t.check(Some("demo-token")), None);
        assert_eq!(t.check(Some("Basic demo-token")), None);
        assert_eq!(t.check(None), None);
        assert_eq!(t.check(Some("Bearer ")), None);
    }

    #[test]
    fn an_agent_token_covers_only_its_agent_and_calls() {
        let s = tokens().check(Some("Bearer agent-1001-token")).unwrap();
        assert!(s.covers_agent("1001"));
        assert!(!s.covers_agent("1002"));
        assert!(s.covers_call(Some("1001")));
        assert!(!s.covers_call(Some("1002")));
        assert!(!s.covers_call(None));
        assert!(!s.sees_all());
        assert!(!s.is_admin());
    }
}
