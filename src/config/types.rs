//! Value types of the config that have their own text syntax — listen
//! addresses, port ranges, digest algorithm names, SIP user ids, host names —
//! and their parsers.
//!
//! Each parser is pure (`&str` in, typed value or [`ValueError`] out); the
//! error's `Display` is the "what was expected" half of a config problem, so
//! `validate` can put it after `file:line: key:` unchanged.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Why a config value's text is not a valid value of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not `udp:IP:PORT` / `tcp:IP:PORT`.
    #[error("{0:?} is not a listen address (expected \"udp:IP:PORT\" or \"tcp:IP:PORT\")")]
    ListenAddr(String),
    /// Not `IP:PORT`.
    #[error(
        "{0:?} is not a socket address (expected \"IP:PORT\", e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"
    )]
    SocketAddr(String),
    /// Port 0 means "any port", which a server cannot advertise.
    #[error("{0:?} has port 0 (expected a port 1..=65535)")]
    PortZero(String),
    /// Not `LOW-HIGH` with two port numbers.
    #[error("{0:?} is not a port range (expected \"LOW-HIGH\", e.g. \"20000-29999\")")]
    PortRangeSyntax(String),
    /// Port numbers present but outside the allowed shape.
    #[error(
        "{0:?} is not a usable RTP port range (expected 1024 <= LOW < HIGH <= 65535 with LOW even)"
    )]
    PortRangeBounds(String),
    /// An algorithm name this registrar does not implement.
    #[error("{0:?} is not a supported digest algorithm (expected \"SHA-256\" or \"MD5\")")]
    DigestAlgorithm(String),
    /// An empty SIP user id.
    #[error("user id is empty (expected a SIP user part such as \"1001\")")]
    UserIdEmpty,
    /// A character RFC 3261 does not allow unescaped in a user part.
    #[error(
        "{id:?} contains {bad:?}, which is not allowed in a SIP user part (expected letters, digits and -_.!~*'()&=+$,;?/)"
    )]
    UserIdChar {
        /// The whole id.
        id: String,
        /// The first offending character.
        bad: char,
    },
    /// Not a DNS host name or IP address.
    #[error("{0:?} is not a host name (expected e.g. \"switchboard.local\" or an IP address)")]
    HostName(String),
}

/// SIP transport of a listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// RFC 3261 §18 over UDP datagrams.
    Udp,
    /// RFC 3261 §18 over a TCP stream.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// One SIP listen socket: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// UDP or TCP.
    pub transport: Transport,
    /// IP and (non-zero) port.
    pub addr: SocketAddr,
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl FromStr for ListenAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (transport, rest) = if let Some(rest) = s.strip_prefix("udp:") {
            (Transport::Udp, rest)
        } else if let Some(rest) = s.strip_prefix("tcp:") {
            (Transport::Tcp, rest)
        } else {
            return Err(ValueError::ListenAddr(s.to_owned()));
        };
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| ValueError::ListenAddr(s.to_owned()))?;
        if addr.port() == 0 {
            return Err(ValueError::PortZero(s.to_owned()));
        }
        Ok(ListenAddr { transport, addr })
    }
}

/// Parses `IP:PORT` with a non-zero port (the CTI listen address).
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, ValueError> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| ValueError::SocketAddr(s.to_owned()))?;
    if addr.port() == 0 {
        return Err(ValueError::PortZero(s.to_owned()));
    }
    Ok(addr)
}

/// An inclusive UDP port range for RTP/RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port (even: RTP on even, RTCP on the odd port above).
    pub low: u16,
    /// Last port, inclusive.
    pub high: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.high - self.low) + 1
    }

    /// Always false: a valid range holds at least two ports.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl FromStr for PortRange {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let syntax = || ValueError::PortRangeSyntax(s.to_owned());
        let (low, high) = s.split_once('-').ok_or_else(syntax)?;
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(low) || !all_digits(high) {
            return Err(syntax());
        }
        let bounds = || ValueError::PortRangeBounds(s.to_owned());
        let low: u16 = low.parse().map_err(|_| bounds())?;
        let high: u16 = high.parse().map_err(|_| bounds())?;
        if low < 1024 || low >= high || low & 1 == 1 {
            return Err(bounds());
        }
        Ok(PortRange { low, high })
    }
}

/// A digest algorithm the registrar can challenge with (RFC 7616 / RFC 2617).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `algorithm=SHA-256` (RFC 7616, RFC 8760 for SIP).
    Sha256,
    /// `algorithm=MD5` (RFC 2617), still the only one many phones speak.
    Md5,
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Md5 => "MD5",
        })
    }
}

impl FromStr for DigestAlgorithm {
    type Err = ValueError;

    /// Algorithm tokens are case-insensitive (RFC 7616 §3.3 compares them so).
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Ok(DigestAlgorithm::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Ok(DigestAlgorithm::Md5)
        } else {
            Err(ValueError::DigestAlgorithm(s.to_owned()))
        }
    }
}

/// Checks a SIP user id: RFC 3261 §25.1 `user = 1*( unreserved / escaped /
/// user-unreserved )`, without `%` escapes (config ids are written plainly).
pub fn check_user_id(id: &str) -> Result<(), ValueError> {
    if id.is_empty() {
        return Err(ValueError::UserIdEmpty);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c);
    match id.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(ValueError::UserIdChar {
            id: id.to_owned(),
            bad,
        }),
        None => Ok(()),
    }
}

/// Checks a host name for `sip.domain`: an IP address, or dot-separated
/// labels of letters, digits and `-` (no label empty, longer than 63 or
/// starting/ending with `-`), at most 253 characters.
pub fn check_host_name(host: &str) -> Result<(), ValueError> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(ValueError::HostName(host.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_round_trips_v4_and_v6() {
        for text in ["udp:127.0.0.1:5060", "tcp:[::1]:5061", "udp:0.0.0.0:5060"] {
            let parsed: ListenAddr = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let a: ListenAddr = "tcp:[::1]:5061".parse().unwrap();
        assert_eq!(a.transport, Transport::Tcp);
    }

    #[test]
    fn listen_addr_rejects_bad_forms() {
        for text in [
            "udp:1.2.3:5060",
            "sctp:127.0.0.1:5060",
            "udp:::1:5060",
            "127.0.0.1:5060",
            "UDP:127.0.0.1:5060",
            "udp:localhost:5060",
        ] {
            assert!(
                matches!(text.parse::<ListenAddr>(), Err(ValueError::ListenAddr(_))),
                "{text}"
            );
        }
        assert_eq!(
            "udp:127.0.0.1:0".parse::<ListenAddr>(),
            Err(ValueError::PortZero("udp:127.0.0.1:0".into()))
        );
    }

    #[test]
    fn port_range_requires_even_low_below_high_above_1023() {
        assert_eq!(
            "20000-29999".parse::<PortRange>(),
            Ok(PortRange {
                low: 20000,
                high: 29999
            })
        );
        assert!(matches!(
            "20001-29999".parse::<PortRange>(),
            Err(ValueError::PortRangeBounds(_))
        ));
        assert!(matches!(
            "1000-2000".parse::<PortRange>(),
            Err(ValueError::PortRangeBounds(_))
        ));
        assert!(matches!(
            "3000-3000".parse::<PortRange>(),
            Err(ValueError::PortRangeBounds(_))
        ));
        assert!(matches!(
            "20000-70000".parse::<PortRange>(),
            Err(ValueError::PortRangeBounds(_))
        ));
        assert!(matches!(
            "20000:29999".parse::<PortRange>(),
            Err(ValueError::PortRangeSyntax(_))
        ));
        assert!(matches!(
            "-1-5".parse::<PortRange>(),
            Err(ValueError::PortRangeSyntax(_))
        ));
    }

    #[test]
    fn digest_algorithm_names_are_case_insensitive() {
        assert_eq!("sha-256".parse(), Ok(DigestAlgorithm::Sha256));
        assert_eq!("MD5".parse(), Ok(DigestAlgorithm::Md5));
        assert!("SHA256".parse::<DigestAlgorithm>().is_err());
        assert_eq!(DigestAlgorithm::Sha256.to_string(), "SHA-256");
    }

    #[test]
    fn user_id_allows_rfc3261_user_unreserved() {
        assert!(check_user_id("1001").is_ok());
        assert!(check_user_id("alice.smith-2_x!~*'()&=+$,;?/").is_ok());
        assert_eq!(
            check_user_id("a b"),
            Err(ValueError::UserIdChar {
                id: "a b".into(),
                bad: ' '
            })
        );
        assert!(check_user_id("a@b").is_err());
        assert!(check_user_id("a:b").is_err());
        assert_eq!(check_user_id(""), Err(ValueError::UserIdEmpty));
    }

    #[test]
    fn host_name_accepts_labels_and_ips() {
        assert!(check_host_name("switchboard.local").is_ok());
        assert!(check_host_name("10.0.0.1").is_ok());
        assert!(check_host_name("::1").is_ok());
        assert!(check_host_name("").is_err());
        assert!(check_host_name("bad_host").is_err());
        assert!(check_host_name("-a.b").is_err());
        assert!(check_host_name("a..b").is_err());
    }
}
