//! SDP, the Session Description Protocol (RFC 8866, which obsoletes
//! RFC 4566): the bodies of INVITE, 18x/200 and ACK, parsed into a typed
//! [`SessionDescription`] and emitted again, plus the RFC 3264 offer/answer
//! helpers the call engine uses.
//!
//! What it owns:
//! * the syntax of RFC 8866 §5 (field order) and §9 (ABNF): every field is
//!   typed (`v o s i u e p c b t m` and their parts), `r=`, `z=` and `k=` are
//!   kept as text, attributes (§5.13, §6) are kept in order as a name and an
//!   optional value, and lines with a type letter this module does not know
//!   are kept verbatim with their position, so nothing is lost on emission;
//! * emission ([`SessionDescription::to_bytes`], `Display`): CRLF line ends
//!   and the §5 order (`v o s i u e p c b t r z k a`, then per media
//!   `m i c b k a`). A well-formed CRLF description comes out byte for byte
//!   as it came in; for any accepted input `parse(emit(parse(x))) ==
//!   parse(x)` (while the emission fits [`MAX_SDP_BYTES`]);
//! * offer/answer (RFC 3264): [`Direction`] (RFC 8866 §6.7, reversed by the
//!   answerer, RFC 3264 §6.1), hold detection (§8.4: `sendonly`/`inactive`,
//!   or the legacy `c=0.0.0.0`), the effective connection address of a
//!   stream (media `c=` else session `c=`, RFC 8866 §5.7), port rewriting
//!   (port 0 rejects a stream, RFC 3264 §6), codec lookup (`a=rtpmap`,
//!   `a=fmtp`, RFC 8866 §6.6 and §6.15, with the RFC 3551 static payload
//!   types as fallback) and the `o=` version bump a changed offer needs
//!   (RFC 3264 §8).
//!
//! Lenient where endpoints differ from the ABNF without ambiguity: LF or CRLF
//! line ends, no line end after the last line, trailing empty lines, runs of
//! spaces between sub-fields (and trailing spaces), fields out of §5 order
//! within their section (re-emitted in order), leading zeros in numbers
//! (re-emitted without), an empty `s=`, an `m=` without formats. Strict
//! elsewhere: `v=0` first; exactly one `o=` and `s=` and at least one `t=`
//! before the first `m=`; no second copy of a single-valued field; no
//! session-only field inside a media section; no empty line, NUL or bare CR
//! inside the description; text must be UTF-8 (the default charset; other
//! `a=charset` values are not supported). A refusal is an [`SdpError`] naming
//! the line (1-based) and what was expected there. Input is bounded by
//! [`MAX_SDP_BYTES`], [`MAX_LINES`], [`MAX_MEDIA`] and [`MAX_FORMATS`].
//!
//! How it is used: in this release the B2BUA passes SDP bodies through
//! unchanged and the call engine parses them to read direction, hold state
//! and codecs. Media anchoring (later) rewrites `c=` and `m=` ports with
//! [`SessionDescription::set_connection_address`] and
//! [`MediaDescription::set_port`], then [`SessionDescription::bump_version`].
//! This is not on the per-packet path: parsing allocates a `String` per field
//! and favours clarity.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Largest SDP body accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most lines accepted (trailing empty lines included).
pub const MAX_LINES: usize = 4096;
/// Most media sections (`m=` lines) accepted.
pub const MAX_MEDIA: usize = 64;
/// Most formats accepted on one `m=` line.
pub const MAX_FORMATS: usize = 256;

/// Why a description was refused. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is {len} bytes, more than the {max} accepted")]
    TooLarge { len: usize, max: usize },
    #[error("line {line}: more than {max} lines")]
    TooManyLines { line: usize, max: usize },
    #[error("line {line}: more than {max} media sections")]
    TooManyMedia { line: usize, max: usize },
    #[error("line {line}: expected the version line v=0 first")]
    MissingVersion { line: usize },
    #[error("line {line}: expected {what}")]
    BadLine { line: usize, what: &'static str },
    #[error("line {line}: text is not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: a second {kind}= line (at most one per {scope})")]
    Duplicate {
        line: usize,
        kind: char,
        scope: &'static str,
    },
    #[error("line {line}: {kind}= is not allowed in a media section (only i= c= b= k= a=)")]
    NotInMedia { line: usize, kind: char },
    /// A required field was absent from the session section, which ended at
    /// `line` (the first `m=`, or one past the last line).
    #[error("line {line}: missing {what} in the session section")]
    Missing { line: usize, what: &'static str },
}

impl SdpError {
    /// The 1-based line the error refers to, if any.
    pub fn line(&self) -> Option<usize> {
        match *self {
            SdpError::TooLarge { .. } => None,
            SdpError::TooManyLines { line, .. }
            | SdpError::TooManyMedia { line, .. }
            | SdpError::MissingVersion { line }
            | SdpError::BadLine { line, .. }
            | SdpError::NotUtf8 { line }
            | SdpError::Duplicate { line, .. }
            | SdpError::NotInMedia { line, .. }
            | SdpError::Missing { line, .. } => Some(line),
        }
    }
}

/// `o=` (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user's login, or `-`.
    pub username: String,
    pub session_id: u64,
    /// Incremented on every change of the description (RFC 3264 §8).
    pub session_version: u64,
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    pub address: String,
}

/// `c=` (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// As written: an address or FQDN, for multicast with `/ttl` and
    /// `/count` suffixes.
    pub address: String,
}

impl Connection {
    /// `IN IP4 <ip>` or `IN IP6 <ip>`.
    pub fn new(ip: IpAddr) -> Connection {
        Connection {
            net_type: "IN".to_owned(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.to_owned(),
            address: ip.to_string(),
        }
    }

    /// The IP address, without multicast suffixes; `None` for another
    /// network type, a FQDN, or an address that does not match `addr_type`.
    pub fn ip(&self) -> Option<IpAddr> {
        if self.net_type != "IN" {
            return None;
        }
        let addr = self.address.split('/').next().unwrap_or_default();
        match self.addr_type.as_str() {
            "IP4" => addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            "IP6" => addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        }
    }
}

/// `b=<bwtype>:<bandwidth>` (RFC 8866 §5.8), e.g. `AS` in kbit/s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub bwtype: String,
    pub bandwidth: u64,
}

/// `t=` (RFC 8866 §5.9) with the `r=` lines that follow it (§5.10, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// NTP seconds; 0 for an unbounded session.
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `a=<name>` or `a=<name>:<value>` (RFC 8866 §5.13). `a=x:` has the value
/// `Some("")`, distinct from the flag `a=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    /// `a=<name>:<value>`.
    pub fn new(name: &str, value: &str) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: Some(value.to_owned()),
        }
    }

    /// The property attribute `a=<name>`.
    pub fn flag(name: &str) -> Attribute {
        Attribute {
            name: name.to_owned(),
            value: None,
        }
    }
}

/// A line whose type letter this module does not know, kept verbatim.
/// `after` is the type letter of the field it followed in its section (`r`
/// counts as `t`); it is re-emitted right after that field's lines. A
/// parsed section keeps its unknown lines in emission order (by the §5
/// position of `after`, then as they came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLine {
    pub after: char,
    pub kind: char,
    pub value: String,
}

/// Media direction (RFC 8866 §6.7, RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answerer puts in its answer to an offer with this
    /// one (RFC 3264 §6.1): sendonly and recvonly swap.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// The attribute name: `sendrecv`, `sendonly`, `recvonly`, `inactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for, if it is one.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// Whether the side that wrote it sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote it receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<params>]` (RFC 8866 §6.6), or
/// the RFC 3551 static assignment of the payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// As written, e.g. `PCMU`, `opus`, `telephone-event`.
    pub encoding: &'a str,
    pub clock_rate: u32,
    /// Encoding parameters; for audio, the channel count.
    pub params: Option<&'a str>,
}

impl RtpMap<'_> {
    /// Audio channels: the encoding parameter, 1 when absent or not a number.
    pub fn channels(&self) -> u32 {
        self.params.and_then(parse_u32).unwrap_or(1)
    }
}

/// One media section: `m=` and the lines up to the next `m=` (RFC 8866
/// §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `text`, `application`, `message`, ...
    pub media: String,
    /// 0 for a rejected or disabled stream (RFC 3264 §6, §8.2).
    pub port: u16,
    /// `m=audio 49170/2 ...`: the number of ports.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    /// For RTP, payload types as written (`0`, `8`, `101`).
    pub formats: Vec<String>,
    pub information: Option<String>,
    /// Media-level `c=`; several only for layered multicast.
    pub connections: Vec<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
    pub unknown: Vec<UnknownLine>,
}

/// A parsed session description (RFC 8866 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `v=`; always 0.
    pub version: u32,
    pub origin: Origin,
    /// `s=`; may be empty.
    pub session_name: String,
    pub information: Option<String>,
    pub uri: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// At least one in a parsed description.
    pub timings: Vec<Timing>,
    /// `z=`, as text.
    pub zone_adjustments: Option<String>,
    /// `k=` (obsolete), as text.
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
    pub unknown: Vec<UnknownLine>,
}

/// The first direction attribute in `attributes`.
fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .find_map(|a| Direction::from_attribute(&a.name))
}

/// Replaces the direction attributes in `attributes` by one for `dir`, in
/// the place of the first (or at the end).
fn set_direction_in(attributes: &mut Vec<Attribute>, dir: Direction) {
    let first = attributes
        .iter()
        .position(|a| Direction::from_attribute(&a.name).is_some());
    let mut i = 0;
    attributes.retain(|a| {
        let keep = Some(i) == first || Direction::from_attribute(&a.name).is_none();
        i += 1;
        keep
    });
    match first.and_then(|i| attributes.get_mut(i)) {
        Some(a) => *a = Attribute::flag(dir.as_str()),
        None => attributes.push(Attribute::flag(dir.as_str())),
    }
}

impl SessionDescription {
    /// Parses one session description (see the module documentation for
    /// what is accepted).
    pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
        if input.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge {
                len: input.len(),
                max: MAX_SDP_BYTES,
            });
        }
        let lines = split_lines(input)?;
        if lines.is_empty() {
            return Err(SdpError::MissingVersion { line: 1 });
        }
        let mut b = Builder::default();
        for (index, raw) in lines.iter().enumerate() {
            let line = index + 1;
            if raw.is_empty() {
                if line == 1 {
                    return Err(SdpError::MissingVersion { line });
                }
                return Err(bad(line, "a <type>=<value> line, not an empty line"));
            }
            if raw.iter().any(|&c| c == 0 || c == b'\r') {
                return Err(bad(line, "text without NUL or a bare CR"));
            }
            let text = std::str::from_utf8(raw).map_err(|_| SdpError::NotUtf8 { line })?;
            if line == 1 {
                match text.strip_prefix("v=") {
                    Some("0") => continue,
                    Some(_) => return Err(bad(line, "v=0 (version 0 is the only one)")),
                    None => return Err(SdpError::MissingVersion { line }),
                }
            }
            let (kind, value) = split_type(text, line)?;
            b.line(line, kind, value)?;
        }
        b.finish(lines.len() + 1)
    }

    /// The description as CRLF lines in RFC 8866 §5 order. For a parsed
    /// description it parses back equal, unless LF input grew past
    /// [`MAX_SDP_BYTES`] by the added CRs.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Sets the session-level direction attribute (replacing any).
    pub fn set_direction(&mut self, dir: Direction) {
        set_direction_in(&mut self.attributes, dir);
    }

    /// Whether the call is on hold: at least one stream is active (port not
    /// 0) and every active stream is held ([`MediaDescription::is_hold`]).
    pub fn is_hold(&self) -> bool {
        let mut active = self.media.iter().filter(|m| !m.is_rejected()).peekable();
        active.peek().is_some() && active.all(|m| m.is_hold(self))
    }

    /// Points the whole session at `ip`: sets the session-level `c=` and
    /// replaces every media-level `c=` (which would override it).
    pub fn set_connection_address(&mut self, ip: IpAddr) {
        self.connection = Some(Connection::new(ip));
        for m in &mut self.media {
            if !m.connections.is_empty() {
                m.set_connection_address(ip);
            }
        }
    }

    /// Increments the `o=` sess-version, as every changed offer or answer
    /// must (RFC 3264 §8). Wraps at 2^64.
    pub fn bump_version(&mut self) {
        self.origin.session_version = self.origin.session_version.wrapping_add(1);
    }

    /// The first session-level attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

impl MediaDescription {
    /// The effective direction (RFC 8866 §6.7): the media-level attribute,
    /// else the session-level one, else `sendrecv`.
    pub fn direction(&self, session: &SessionDescription) -> Direction {
        direction_in(&self.attributes)
            .or_else(|| session.direction())
            .unwrap_or(Direction::SendRecv)
    }

    /// Sets the media-level direction attribute, replacing any (in the place
    /// of the first).
    pub fn set_direction(&mut self, dir: Direction) {
        set_direction_in(&mut self.attributes, dir);
    }

    /// The effective `c=`: the first media-level one, else the session's.
    pub fn connection<'a>(&'a self, session: &'a SessionDescription) -> Option<&'a Connection> {
        self.connections.first().or(session.connection.as_ref())
    }

    /// The effective connection IP address ([`Self::connection`],
    /// [`Connection::ip`]).
    pub fn connection_address(&self, session: &SessionDescription) -> Option<IpAddr> {
        self.connection(session).and_then(Connection::ip)
    }

    /// Replaces the media-level `c=` lines by one for `ip`.
    pub fn set_connection_address(&mut self, ip: IpAddr) {
        self.connections = vec![Connection::new(ip)];
    }

    /// Sets the `m=` port (0 rejects or disables the stream).
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    /// Port 0: rejected in an answer, disabled in an offer.
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// RFC 3264 §8.4: the stream is held when its direction is `sendonly` or
    /// `inactive`, or, in the legacy (RFC 2543) way, its connection address
    /// is `0.0.0.0`.
    pub fn is_hold(&self, session: &SessionDescription) -> bool {
        matches!(
            self.direction(session),
            Direction::SendOnly | Direction::Inactive
        ) || self.connection_address(session) == Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// The first media-level attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The mapping of payload type `pt`: the first `a=rtpmap:<pt>` (`None`
    /// if that one is malformed), else the RFC 3551 static assignment.
    pub fn rtpmap(&self, pt: &str) -> Option<RtpMap<'_>> {
        match self.format_attribute("rtpmap", pt) {
            Some(rest) => parse_rtpmap(rest),
            None => static_rtpmap(pt),
        }
    }

    /// The parameters of the first `a=fmtp:<pt> <params>`.
    pub fn fmtp(&self, pt: &str) -> Option<&str> {
        self.format_attribute("fmtp", pt)
    }

    /// The value after `<pt> ` of the first attribute `name` for format `pt`.
    fn format_attribute(&self, name: &str, pt: &str) -> Option<&str> {
        self.attributes.iter().find_map(|a| {
            if a.name != name {
                return None;
            }
            let (format, rest) = a.value.as_deref()?.split_once(' ')?;
            (format == pt).then(|| rest.trim_start_matches(' '))
        })
    }
}

fn parse_rtpmap(s: &str) -> Option<RtpMap<'_>> {
    let mut parts = s.trim_end_matches(' ').splitn(3, '/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next().and_then(parse_u32)?;
    Some(RtpMap {
        encoding,
        clock_rate,
        params: parts.next(),
    })
}

/// RFC 3551 §6, tables 4 and 5.
fn static_rtpmap(pt: &str) -> Option<RtpMap<'static>> {
    let (encoding, clock_rate, params) = match pt {
        "0" => ("PCMU", 8000, None),
        "3" => ("GSM", 8000, None),
        "4" => ("G723", 8000, None),
        "5" => ("DVI4", 8000, None),
        "6" => ("DVI4", 16000, None),
        "7" => ("LPC", 8000, None),
        "8" => ("PCMA", 8000, None),
        "9" => ("G722", 8000, None),
        "10" => ("L16", 44100, Some("2")),
        "11" => ("L16", 44100, None),
        "12" => ("QCELP", 8000, None),
        "13" => ("CN", 8000, None),
        "14" => ("MPA", 90000, None),
        "15" => ("G728", 8000, None),
        "16" => ("DVI4", 11025, None),
        "17" => ("DVI4", 22050, None),
        "18" => ("G729", 8000, None),
        "25" => ("CelB", 90000, None),
        "26" => ("JPEG", 90000, None),
        "28" => ("nv", 90000, None),
        "31" => ("H261", 90000, None),
        "32" => ("MPV", 90000, None),
        "33" => ("MP2T", 90000, None),
        "34" => ("H263", 90000, None),
        _ => return None,
    };
    Some(RtpMap {
        encoding,
        clock_rate,
        params,
    })
}

// ---------------------------------------------------------------------------
// Parsing

const ORIGIN_FORM: &str =
    "o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>";
const ORIGIN_NUMBERS: &str = "o= sess-id and sess-version as decimal numbers below 2^64";
const CONNECTION_FORM: &str = "c=<nettype> <addrtype> <connection-address>";
const BANDWIDTH_FORM: &str = "b=<bwtype>:<bandwidth> (a token, then a decimal number)";
const TIMING_FORM: &str = "t=<start-time> <stop-time> (decimal numbers)";
const MEDIA_FORM: &str = "m=<media> <port>[/<number of ports>] <proto> <fmt> ...";
const MEDIA_PORT: &str = "m= port 0..=65535, optionally /<number of ports> 0..=65535";
const ATTRIBUTE_FORM: &str = "a=<attribute> or a=<attribute>:<value> (the name a token)";

fn bad(line: usize, what: &'static str) -> SdpError {
    SdpError::BadLine { line, what }
}

/// Splits at LF (the one ending the last line ends no empty line), drops
/// one CR before each LF, then drops trailing empty lines.
fn split_lines(input: &[u8]) -> Result<Vec<&[u8]>, SdpError> {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let mut lines = Vec::new();
    for (index, line) in body.split(|&c| c == b'\n').enumerate() {
        if index >= MAX_LINES {
            return Err(SdpError::TooManyLines {
                line: index + 1,
                max: MAX_LINES,
            });
        }
        lines.push(line.strip_suffix(b"\r").unwrap_or(line));
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

/// `<letter>=<value>`.
fn split_type(text: &str, line: usize) -> Result<(char, &str), SdpError> {
    match text.split_at_checked(2) {
        Some((head, value)) => match head.as_bytes() {
            [k, b'='] if k.is_ascii_alphabetic() => Ok((char::from(*k), value)),
            _ => Err(bad(line, "<type>=<value> with a letter as the type")),
        },
        None => Err(bad(line, "<type>=<value> with a letter as the type")),
    }
}

/// RFC 8866 §9 `token-char`.
fn is_token_char(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x27 | 0x2A..=0x2B | 0x2D..=0x2E | 0x30..=0x39 | 0x41..=0x5A | 0x5E..=0x7E)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// RFC 8866 §9 `non-ws-string`: VCHAR or non-ASCII.
fn is_non_ws(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c > 0x20 && c != 0x7F)
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_u32(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

fn parse_u16(s: &str) -> Option<u16> {
    parse_u64(s).and_then(|n| u16::try_from(n).ok())
}

/// Sub-fields separated by one or more spaces.
fn fields(value: &str) -> impl Iterator<Item = &str> {
    value.split(' ').filter(|f| !f.is_empty())
}

/// Exactly `N` space-separated sub-fields.
fn exact_fields<const N: usize>(value: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut it = fields(value);
    for slot in &mut out {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let [user, id, version, net, addr_type, addr] =
        exact_fields::<6>(value).ok_or_else(|| bad(line, ORIGIN_FORM))?;
    if !is_non_ws(user) || !is_token(net) || !is_token(addr_type) || !is_non_ws(addr) {
        return Err(bad(line, ORIGIN_FORM));
    }
    let (Some(session_id), Some(session_version)) = (parse_u64(id), parse_u64(version)) else {
        return Err(bad(line, ORIGIN_NUMBERS));
    };
    Ok(Origin {
        username: user.to_owned(),
        session_id,
        session_version,
        net_type: net.to_owned(),
        addr_type: addr_type.to_owned(),
        address: addr.to_owned(),
    })
}

fn parse_connection(value: &str, line: usize) -> Result<Connection, SdpError> {
    match exact_fields::<3>(value) {
        Some([net, addr_type, addr]) if is_token(net) && is_token(addr_type) && is_non_ws(addr) => {
            Ok(Connection {
                net_type: net.to_owned(),
                addr_type: addr_type.to_owned(),
                address: addr.to_owned(),
            })
        }
        _ => Err(bad(line, CONNECTION_FORM)),
    }
}

fn parse_bandwidth(value: &str, line: usize) -> Result<Bandwidth, SdpError> {
    match value.split_once(':') {
        Some((bwtype, n)) if is_token(bwtype) => match parse_u64(n) {
            Some(bandwidth) => Ok(Bandwidth {
                bwtype: bwtype.to_owned(),
                bandwidth,
            }),
            None => Err(bad(line, BANDWIDTH_FORM)),
        },
        _ => Err(bad(line, BANDWIDTH_FORM)),
    }
}

fn parse_timing(value: &str, line: usize) -> Result<Timing, SdpError> {
    match exact_fields::<2>(value).map(|[a, b]| (parse_u64(a), parse_u64(b))) {
        Some((Some(start), Some(stop))) => Ok(Timing {
            start,
            stop,
            repeats: Vec::new(),
        }),
        _ => Err(bad(line, TIMING_FORM)),
    }
}

fn parse_attribute(value: &str, line: usize) -> Result<Attribute, SdpError> {
    let (name, value) = match value.split_once(':') {
        Some((name, v)) => (name, Some(v.to_owned())),
        None => (value, None),
    };
    if !is_token(name) {
        return Err(bad(line, ATTRIBUTE_FORM));
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

fn parse_media(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let mut it = fields(value);
    let (Some(media), Some(port), Some(proto)) = (it.next(), it.next(), it.next()) else {
        return Err(bad(line, MEDIA_FORM));
    };
    if !is_token(media) || proto.split('/').any(|p| !is_token(p)) {
        return Err(bad(line, MEDIA_FORM));
    }
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (parse_u16(p), parse_u16(n).map(Some)),
        None => (parse_u16(port), Some(None)),
    };
    let (Some(port), Some(port_count)) = (port, port_count) else {
        return Err(bad(line, MEDIA_PORT));
    };
    let mut formats = Vec::new();
    for f in it {
        if !is_token(f) {
            return Err(bad(line, MEDIA_FORM));
        }
        if formats.len() >= MAX_FORMATS {
            return Err(bad(line, "m= with at most 256 formats"));
        }
        formats.push(f.to_owned());
    }
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        proto: proto.to_owned(),
        formats,
        information: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
        unknown: Vec::new(),
    })
}

/// Type letters of the session section, in emission order (`r` goes with
/// `t`).
const SESSION_ORDER: [char; 13] = [
    'v', 'o', 's', 'i', 'u', 'e', 'p', 'c', 'b', 't', 'z', 'k', 'a',
];
/// Type letters of a media section, in emission order.
const MEDIA_ORDER: [char; 6] = ['m', 'i', 'c', 'b', 'k', 'a'];

/// The session fields seen so far, then the media sections.
struct Builder {
    origin: Option<Origin>,
    session_name: Option<String>,
    information: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timings: Vec<Timing>,
    zone_adjustments: Option<String>,
    key: Option<String>,
    attributes: Vec<Attribute>,
    unknown: Vec<UnknownLine>,
    /// The type letter of the last known line of the current section.
    last: char,
    media: Vec<MediaDescription>,
    /// The session's required fields, taken at the first `m=`.
    session: Option<(Origin, String)>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            origin: None,
            session_name: None,
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timings: Vec::new(),
            zone_adjustments: None,
            key: None,
            attributes: Vec::new(),
            unknown: Vec::new(),
            last: 'v',
            media: Vec::new(),
            session: None,
        }
    }
}

/// Sets a single-valued field, refusing a second one.
fn once<T>(
    slot: &mut Option<T>,
    v: T,
    line: usize,
    kind: char,
    scope: &'static str,
) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::Duplicate { line, kind, scope });
    }
    *slot = Some(v);
    Ok(())
}

impl Builder {
    fn line(&mut self, line: usize, kind: char, value: &str) -> Result<(), SdpError> {
        if kind == 'v' {
            return Err(SdpError::Duplicate {
                line,
                kind,
                scope: "description",
            });
        }
        if kind == 'm' {
            return self.media_line(line, value);
        }
        match self.media.last_mut() {
            None => self.session_line(line, kind, value),
            Some(m) => media_field(m, &mut self.last, line, kind, value),
        }
    }

    fn session_line(&mut self, line: usize, kind: char, value: &str) -> Result<(), SdpError> {
        const S: &str = "session";
        match kind {
            'o' => once(&mut self.origin, parse_origin(value, line)?, line, kind, S)?,
            's' => once(&mut self.session_name, value.to_owned(), line, kind, S)?,
            'i' => once(&mut self.information, value.to_owned(), line, kind, S)?,
            'u' => once(&mut self.uri, value.to_owned(), line, kind, S)?,
            'e' => self.emails.push(value.to_owned()),
            'p' => self.phones.push(value.to_owned()),
            'c' => once(
                &mut self.connection,
                parse_connection(value, line)?,
                line,
                kind,
                S,
            )?,
            'b' => self.bandwidths.push(parse_bandwidth(value, line)?),
            't' => self.timings.push(parse_timing(value, line)?),
            'r' => match self.timings.last_mut() {
                Some(t) => t.repeats.push(value.to_owned()),
                None => return Err(bad(line, "r= after a t= line")),
            },
            'z' => once(&mut self.zone_adjustments, value.to_owned(), line, kind, S)?,
            'k' => once(&mut self.key, value.to_owned(), line, kind, S)?,
            'a' => self.attributes.push(parse_attribute(value, line)?),
            _ => {
                self.unknown.push(UnknownLine {
                    after: self.last,
                    kind,
                    value: value.to_owned(),
                });
                return Ok(());
            }
        }
        self.last = if kind == 'r' { 't' } else { kind };
        Ok(())
    }

    fn media_line(&mut self, line: usize, value: &str) -> Result<(), SdpError> {
        if self.media.is_empty() {
            self.session = Some(self.take_required(line)?);
        }
        if self.media.len() >= MAX_MEDIA {
            return Err(SdpError::TooManyMedia {
                line,
                max: MAX_MEDIA,
            });
        }
        self.media.push(parse_media(value, line)?);
        self.last = 'm';
        Ok(())
    }

    /// `o=`, `s=` and `t=`, which the session section must have; `line` is
    /// where it ended.
    fn take_required(&mut self, line: usize) -> Result<(Origin, String), SdpError> {
        let origin = self.origin.take().ok_or(SdpError::Missing {
            line,
            what: "o= (origin)",
        })?;
        let name = self.session_name.take().ok_or(SdpError::Missing {
            line,
            what: "s= (session name)",
        })?;
        if self.timings.is_empty() {
            return Err(SdpError::Missing {
                line,
                what: "t= (timing)",
            });
        }
        Ok((origin, name))
    }

    fn finish(mut self, end_line: usize) -> Result<SessionDescription, SdpError> {
        let (origin, session_name) = match self.session.take() {
            Some(s) => s,
            None => self.take_required(end_line)?,
        };
        // Emission groups unknown lines by `after`; store them that way so
        // that the emission parses back equal.
        sort_unknown(&mut self.unknown, &SESSION_ORDER);
        for m in &mut self.media {
            sort_unknown(&mut m.unknown, &MEDIA_ORDER);
        }
        Ok(SessionDescription {
            version: 0,
            origin,
            session_name,
            information: self.information,
            uri: self.uri,
            emails: self.emails,
            phones: self.phones,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timings: self.timings,
            zone_adjustments: self.zone_adjustments,
            key: self.key,
            attributes: self.attributes,
            media: self.media,
            unknown: self.unknown,
        })
    }
}

/// Stable sort by the position of `after` in `order` (absent: last).
fn sort_unknown(unknown: &mut [UnknownLine], order: &[char]) {
    unknown.sort_by_key(|u| {
        order
            .iter()
            .position(|&k| k == u.after)
            .unwrap_or(order.len())
    });
}

fn media_field(
    m: &mut MediaDescription,
    last: &mut char,
    line: usize,
    kind: char,
    value: &str,
) -> Result<(), SdpError> {
    const M: &str = "media section";
    match kind {
        'i' => once(&mut m.information, value.to_owned(), line, kind, M)?,
        'c' => m.connections.push(parse_connection(value, line)?),
        'b' => m.bandwidths.push(parse_bandwidth(value, line)?),
        'k' => once(&mut m.key, value.to_owned(), line, kind, M)?,
        'a' => m.attributes.push(parse_attribute(value, line)?),
        'o' | 's' | 'u' | 'e' | 'p' | 't' | 'r' | 'z' => {
            return Err(SdpError::NotInMedia { line, kind });
        }
        _ => {
            m.unknown.push(UnknownLine {
                after: *last,
                kind,
                value: value.to_owned(),
            });
            return Ok(());
        }
    }
    *last = kind;
    Ok(())
}

// ---------------------------------------------------------------------------
// Emission

/// Writes `kind=value\r\n`.
fn field(f: &mut fmt::Formatter<'_>, kind: char, value: impl fmt::Display) -> fmt::Result {
    write!(f, "{kind}={value}\r\n")
}

fn unknown_after(f: &mut fmt::Formatter<'_>, unknown: &[UnknownLine], after: char) -> fmt::Result {
    for u in unknown.iter().filter(|u| u.after == after) {
        field(f, u.kind, &u.value)?;
    }
    Ok(())
}

/// Unknown lines whose `after` is no field of the section go last.
fn unknown_rest(
    f: &mut fmt::Formatter<'_>,
    unknown: &[UnknownLine],
    order: &[char],
) -> fmt::Result {
    for u in unknown.iter().filter(|u| !order.contains(&u.after)) {
        field(f, u.kind, &u.value)?;
    }
    Ok(())
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bwtype, self.bandwidth)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

impl fmt::Display for SessionDescription {
    /// CRLF lines in RFC 8866 §5 order. Fields are written as they are: a
    /// value holding CR or LF (never the case after parsing) breaks the
    /// output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in SESSION_ORDER {
            match kind {
                'v' => field(f, 'v', self.version)?,
                'o' => field(f, 'o', &self.origin)?,
                's' => field(f, 's', &self.session_name)?,
                'i' => self.information.iter().try_for_each(|v| field(f, 'i', v))?,
                'u' => self.uri.iter().try_for_each(|v| field(f, 'u', v))?,
                'e' => self.emails.iter().try_for_each(|v| field(f, 'e', v))?,
                'p' => self.phones.iter().try_for_each(|v| field(f, 'p', v))?,
                'c' => self.connection.iter().try_for_each(|v| field(f, 'c', v))?,
                'b' => self.bandwidths.iter().try_for_each(|v| field(f, 'b', v))?,
                't' => {
                    for t in &self.timings {
                        write!(f, "t={} {}\r\n", t.start, t.stop)?;
                        t.repeats.iter().try_for_each(|r| field(f, 'r', r))?;
                    }
                }
                'z' => self
                    .zone_adjustments
                    .iter()
                    .try_for_each(|v| field(f, 'z', v))?,
                'k' => self.key.iter().try_for_each(|v| field(f, 'k', v))?,
                _ => self.attributes.iter().try_for_each(|v| field(f, 'a', v))?,
            }
            unknown_after(f, &self.unknown, kind)?;
        }
        unknown_rest(f, &self.unknown, &SESSION_ORDER)?;
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

impl fmt::Display for MediaDescription {
    /// The media section as CRLF lines, `m=` first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in MEDIA_ORDER {
            match kind {
                'm' => {
                    write!(f, "m={} {}", self.media, self.port)?;
                    if let Some(n) = self.port_count {
                        write!(f, "/{n}")?;
                    }
                    write!(f, " {}", self.proto)?;
                    for format in &self.formats {
                        write!(f, " {format}")?;
                    }
                    f.write_str("\r\n")?;
                }
                'i' => self.information.iter().try_for_each(|v| field(f, 'i', v))?,
                'c' => self.connections.iter().try_for_each(|v| field(f, 'c', v))?,
                'b' => self.bandwidths.iter().try_for_each(|v| field(f, 'b', v))?,
                'k' => self.key.iter().try_for_each(|v| field(f, 'k', v))?,
                _ => self.attributes.iter().try_for_each(|v| field(f, 'a', v))?,
            }
            unknown_after(f, &self.unknown, kind)?;
        }
        unknown_rest(f, &self.unknown, &MEDIA_ORDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv6Addr;

    /// The fuzz seeds (`tests/fuzz/seeds/sdp/`): well-formed CRLF SDPs.
    macro_rules! seeds {
        ($($name:literal),* $(,)?) => {
            [$(($name, include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/seeds/sdp/", $name
            )) as &[u8])),*]
        };
    }

    const SEEDS: [(&str, &[u8]); 14] = seeds![
        "audio_video.sdp",
        "baresip.sdp",
        "hold_inactive_session_level.sdp",
        "hold_legacy_zero_address.sdp",
        "hold_sendonly.sdp",
        "ipv6.sdp",
        "opus_rfc7587.sdp",
        "pcmu_pcma_telephone_event.sdp",
        "rejected_stream_port0.sdp",
        "rfc4566_example.sdp",
        "rtcp_attribute.sdp",
        "sipp_uac.sdp",
        "srtp_sdes.sdp",
        "timing_repeat_zone_multicast.sdp",
    ];

    fn seed(name: &str) -> SessionDescription {
        let (_, bytes) = SEEDS.iter().find(|(n, _)| *n == name).unwrap();
        SessionDescription::parse(bytes).unwrap()
    }

    fn parse(s: &str) -> Result<SessionDescription, SdpError> {
        SessionDescription::parse(s.as_bytes())
    }

    /// `lines` joined with CRLF, each line ended.
    fn sdp(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\r\n")).collect()
    }

    const HEAD: [&str; 5] = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
    ];

    fn with_head(rest: &[&str]) -> String {
        let mut lines = HEAD.to_vec();
        lines.extend_from_slice(rest);
        sdp(&lines)
    }

    /// Parse, emit, parse again: equal, and emission is a fixed point.
    fn assert_round_trips(d: &SessionDescription) {
        let out = d.to_bytes();
        let again = SessionDescription::parse(&out)
            .unwrap_or_else(|e| panic!("emitted SDP does not parse: {e}\n{}", d));
        assert_eq!(&again, d, "re-parse differs:\n{d}");
        assert_eq!(again.to_bytes(), out);
    }

    #[test]
    fn seeds_reemit_byte_for_byte_and_round_trip() {
        for (name, bytes) in SEEDS {
            let d = SessionDescription::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                String::from_utf8_lossy(&d.to_bytes()),
                String::from_utf8_lossy(bytes),
                "{name}"
            );
            assert_round_trips(&d);
        }
    }

    #[test]
    fn parses_every_field_typed() {
        let d = seed("timing_repeat_zone_multicast.sdp");
        assert_eq!(d.version, 0);
        assert_eq!(
            d.origin,
            Origin {
                username: "mhandley".into(),
                session_id: 2890844526,
                session_version: 2890842807,
                net_type: "IN".into(),
                addr_type: "IP4".into(),
                address: "126.16.64.4".into(),
            }
        );
        assert_eq!(d.session_name, "Weekly standup");
        assert_eq!(d.uri.as_deref(), Some("https://example.net/standup"));
        assert_eq!(d.emails, ["ops@example.net"]);
        assert_eq!(d.phones, ["+1 617 555-6011"]);
        let c = d.connection.as_ref().unwrap();
        assert_eq!(c.address, "224.2.1.1/127/3");
        assert_eq!(c.ip(), Some(IpAddr::V4(Ipv4Addr::new(224, 2, 1, 1))));
        assert_eq!(
            d.bandwidths,
            [Bandwidth {
                bwtype: "AS".into(),
                bandwidth: 128
            }]
        );
        assert_eq!(d.timings.len(), 1);
        assert_eq!(
            (d.timings[0].start, d.timings[0].stop),
            (3034423619, 3042462419)
        );
        assert_eq!(d.timings[0].repeats, ["604800 3600 0 90000", "7d 1h 0 25h"]);
        assert_eq!(
            d.zone_adjustments.as_deref(),
            Some("2882844526 -1h 2898848070 0")
        );
        assert_eq!(d.attributes, [Attribute::new("tool", "sdr")]);
        let m = &d.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.port_count, m.proto.as_str()),
            ("audio", 49170, Some(2), "RTP/AVP")
        );
        assert_eq!(m.formats, ["0"]);
        assert_eq!(m.information.as_deref(), Some("Moderator audio"));

        let v = seed("audio_video.sdp");
        assert_eq!(v.media.len(), 2);
        assert_eq!(v.media[1].media, "video");
        assert_eq!(v.media[1].formats, ["96", "97"]);
        assert_eq!(v.media[1].bandwidths.len(), 2);
        assert_eq!(
            v.media[1].attributes[3],
            Attribute::new("rtcp-fb", "* nack")
        );
        assert_eq!(seed("srtp_sdes.sdp").media[0].proto, "RTP/SAVP");
    }

    #[test]
    fn lf_line_ends_and_missing_final_newline_are_accepted_and_emitted_as_crlf() {
        let crlf = seed("pcmu_pcma_telephone_event.sdp");
        let text = String::from_utf8(crlf.to_bytes()).unwrap();
        let lf = text.replace("\r\n", "\n");
        assert_eq!(parse(&lf).unwrap(), crlf);
        assert_eq!(parse(lf.trim_end()).unwrap(), crlf);
        assert_eq!(parse(text.trim_end()).unwrap().to_bytes(), text.as_bytes());
        // Mixed, and trailing empty lines (some stacks add one).
        let mixed = text.replacen("\r\n", "\n", 3) + "\r\n\n";
        assert_eq!(parse(&mixed).unwrap(), crlf);
    }

    #[test]
    fn rejects_missing_version_with_line_number() {
        for input in [
            "",
            "\r\n",
            "o=- 1 1 IN IP4 192.0.2.1\r\n",
            "\r\nv=0\r\n",
            "V=0\r\n",
        ] {
            assert_eq!(
                parse(input),
                Err(SdpError::MissingVersion { line: 1 }),
                "{input:?}"
            );
        }
        let e = parse("v=1\r\n").unwrap_err();
        assert!(matches!(e, SdpError::BadLine { line: 1, .. }), "{e:?}");
        assert_eq!(
            parse("s=x\r\n").unwrap_err().to_string(),
            "line 1: expected the version line v=0 first"
        );
    }

    #[test]
    fn rejects_garbage_naming_line_and_expectation() {
        let cases: [(&[&str], usize, &str); 12] = [
            (&["hello world"], 6, "<type>=<value>"),
            (&["a"], 6, "<type>=<value>"),
            (&["1=x"], 6, "<type>=<value>"),
            (&["a =x"], 6, "<type>=<value>"),
            (&["", "a=x"], 6, "not an empty line"),
            (&["m=audio"], 6, "m=<media>"),
            (&["m=audio 70000 RTP/AVP 0"], 6, "m= port"),
            (&["m=audio 5004/x RTP/AVP 0"], 6, "m= port"),
            (&["m=audio 5004 RTP/ 0"], 6, "m=<media>"),
            (&["a=rtpmap:0 PCMU/8000", "a=:x"], 7, "a=<attribute>"),
            (&["b=AS"], 6, "b=<bwtype>"),
            (&["m=audio 4000 RTP/AVP 0", "c=IN IP4"], 7, "c=<nettype>"),
        ];
        for (rest, line, what) in cases {
            let e = parse(&with_head(rest)).unwrap_err();
            assert_eq!(e.line(), Some(line), "{rest:?}: {e}");
            assert!(e.to_string().contains(what), "{rest:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!("line {line}: expected")),
                "{e}"
            );
        }
        let origin = |o: &str| parse(&sdp(&["v=0", o, "s=-", "t=0 0"])).unwrap_err();
        for o in [
            "o=- 1 1 IN IP4",
            "o=- 1 1 IN IP4 a b",
            "o=-\t1 1 IN IP4 192.0.2.1",
        ] {
            assert!(
                matches!(origin(o), SdpError::BadLine { line: 2, what } if what == ORIGIN_FORM),
                "{o}"
            );
        }
        for o in [
            "o=- x 1 IN IP4 a",
            "o=- 1 +1 IN IP4 a",
            "o=- 1 99999999999999999999 IN IP4 a",
        ] {
            assert!(
                matches!(origin(o), SdpError::BadLine { line: 2, what } if what == ORIGIN_NUMBERS),
                "{o}"
            );
        }
        let t = parse(&sdp(&["v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0"])).unwrap_err();
        assert_eq!(
            t,
            SdpError::BadLine {
                line: 4,
                what: TIMING_FORM
            }
        );
        let r = parse(&sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 a",
            "s=-",
            "r=1 1 0",
            "t=0 0",
        ]))
        .unwrap_err();
        assert_eq!(
            r,
            SdpError::BadLine {
                line: 4,
                what: "r= after a t= line"
            }
        );
    }

    #[test]
    fn rejects_nul_bare_cr_and_non_utf8() {
        let nul = with_head(&["s=a\0b"]);
        assert_eq!(
            parse(&nul),
            Err(SdpError::BadLine {
                line: 6,
                what: "text without NUL or a bare CR"
            })
        );
        let cr = with_head(&["a=x\ry"]);
        assert!(matches!(parse(&cr), Err(SdpError::BadLine { line: 6, .. })));
        let mut latin1 = with_head(&[]).into_bytes();
        latin1.extend_from_slice(b"i=caf\xe9\r\n");
        assert_eq!(
            SessionDescription::parse(&latin1),
            Err(SdpError::NotUtf8 { line: 6 })
        );
        let utf8 = with_head(&["i=café ☎"]);
        assert_eq!(parse(&utf8).unwrap().information.as_deref(), Some("café ☎"));
    }

    #[test]
    fn rejects_duplicates_and_session_fields_in_media() {
        let dup = |extra: &str| parse(&with_head(&[extra])).unwrap_err();
        assert_eq!(
            dup("o=- 2 2 IN IP4 192.0.2.1"),
            SdpError::Duplicate {
                line: 6,
                kind: 'o',
                scope: "session"
            }
        );
        assert!(matches!(
            dup("s=again"),
            SdpError::Duplicate { kind: 's', .. }
        ));
        assert!(matches!(
            dup("c=IN IP4 192.0.2.9"),
            SdpError::Duplicate { kind: 'c', .. }
        ));
        assert!(matches!(dup("v=0"), SdpError::Duplicate { kind: 'v', .. }));
        let e = dup("m=audio 1 RTP/AVP 0\r\ni=a\r\ni=b");
        assert_eq!(
            e,
            SdpError::Duplicate {
                line: 8,
                kind: 'i',
                scope: "media section"
            }
        );
        for kind in ['o', 's', 'u', 'e', 'p', 't', 'r', 'z'] {
            let e = parse(&with_head(&["m=audio 1 RTP/AVP 0", &format!("{kind}=x")])).unwrap_err();
            assert_eq!(e, SdpError::NotInMedia { line: 7, kind });
        }
        // Several media-level c= (layered multicast) and b= are fine.
        let d = parse(&with_head(&[
            "m=video 1 RTP/AVP 31",
            "c=IN IP4 224.2.1.1/127",
            "c=IN IP4 224.2.1.2/127",
        ]))
        .unwrap();
        assert_eq!(d.media[0].connections.len(), 2);
    }

    #[test]
    fn reports_missing_required_session_fields_where_the_session_ends() {
        let no_o = sdp(&["v=0", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0"]);
        assert_eq!(
            parse(&no_o),
            Err(SdpError::Missing {
                line: 4,
                what: "o= (origin)"
            })
        );
        let no_s = sdp(&["v=0", "o=- 1 1 IN IP4 a", "t=0 0"]);
        assert_eq!(
            parse(&no_s),
            Err(SdpError::Missing {
                line: 4,
                what: "s= (session name)"
            })
        );
        let no_t = sdp(&["v=0", "o=- 1 1 IN IP4 a", "s=-", "m=audio 1 RTP/AVP 0"]);
        let e = parse(&no_t).unwrap_err();
        assert_eq!(
            e,
            SdpError::Missing {
                line: 4,
                what: "t= (timing)"
            }
        );
        assert_eq!(
            e.to_string(),
            "line 4: missing t= (timing) in the session section"
        );
    }

    #[test]
    fn enforces_size_line_and_media_limits() {
        let big = vec![b'a'; MAX_SDP_BYTES + 1];
        assert_eq!(
            SessionDescription::parse(&big),
            Err(SdpError::TooLarge {
                len: MAX_SDP_BYTES + 1,
                max: MAX_SDP_BYTES
            })
        );
        let mut lines = HEAD.to_vec();
        lines.resize(MAX_LINES, "a=x");
        assert!(parse(&sdp(&lines)).is_ok());
        lines.push("a=x");
        assert_eq!(
            parse(&sdp(&lines)),
            Err(SdpError::TooManyLines {
                line: MAX_LINES + 1,
                max: MAX_LINES
            })
        );
        let mut lines = HEAD.to_vec();
        lines.resize(HEAD.len() + MAX_MEDIA, "m=audio 0 RTP/AVP 0");
        assert_eq!(parse(&sdp(&lines)).unwrap().media.len(), MAX_MEDIA);
        lines.push("m=audio 0 RTP/AVP 0");
        assert_eq!(
            parse(&sdp(&lines)),
            Err(SdpError::TooManyMedia {
                line: HEAD.len() + MAX_MEDIA + 1,
                max: MAX_MEDIA
            })
        );
        let many = format!("m=audio 1 RTP/AVP{}", " 0".repeat(MAX_FORMATS));
        assert_eq!(
            parse(&with_head(&[&many])).unwrap().media[0].formats.len(),
            MAX_FORMATS
        );
        let too_many = format!("{many} 0");
        assert!(matches!(
            parse(&with_head(&[&too_many])),
            Err(SdpError::BadLine { line: 6, .. })
        ));
    }

    #[test]
    fn unknown_lines_and_attributes_survive_reemission_in_place() {
        let input = sdp(&[
            "v=0",
            "x=after version",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "Y=after name",
            "t=0 0",
            "a=x-vendor-flag",
            "a=x-vendor:some value: with colons",
            "m=audio 4000 RTP/AVP 0",
            "y=after m",
            "c=IN IP4 192.0.2.2",
            "a=unknown-attr",
            "w=last",
        ]);
        let d = parse(&input).unwrap();
        assert_eq!(d.unknown.len(), 2);
        assert_eq!(
            d.unknown[1],
            UnknownLine {
                after: 's',
                kind: 'Y',
                value: "after name".into()
            }
        );
        assert_eq!(
            d.attributes[1],
            Attribute::new("x-vendor", "some value: with colons")
        );
        assert_eq!(d.media[0].unknown.len(), 2);
        assert_eq!(d.to_bytes(), input.as_bytes());
        assert_round_trips(&d);
    }

    #[test]
    fn unknown_lines_interleaved_with_fields_are_stored_in_emission_order() {
        // Fuzz finding: `M=` after t=, `A=` after a=, then `M=` after a
        // second t= came out grouped by position, and re-parsed in another
        // order.
        let d = parse(&sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "t=0 0",
            "M=first",
            "a=x",
            "A=second",
            "t=0 0",
            "M=third",
            "m=audio 1 RTP/AVP 0",
            "a=y",
            "Q=fourth",
            "c=IN IP4 192.0.2.2",
            "Q=fifth",
        ]))
        .unwrap();
        let values: Vec<_> = d.unknown.iter().map(|u| u.value.as_str()).collect();
        assert_eq!(values, ["first", "third", "second"]);
        let values: Vec<_> = d.media[0]
            .unknown
            .iter()
            .map(|u| u.value.as_str())
            .collect();
        assert_eq!(values, ["fifth", "fourth"]);
        assert_round_trips(&d);
    }

    #[test]
    fn out_of_order_fields_reemit_in_rfc_order_and_reparse_equal() {
        let input = sdp(&[
            "v=0",
            "s=-",
            "o=- 1 1 IN IP4 192.0.2.1",
            "t=0 0",
            "a=group:BUNDLE 0",
            "q=unknown after a",
            "c=IN IP4 192.0.2.1",
            "b=AS:64",
            "m=audio 4000 RTP/AVP 0",
            "a=sendrecv",
            "c=IN IP4 192.0.2.2",
            "b=AS:64",
        ]);
        let d = parse(&input).unwrap();
        let out = String::from_utf8(d.to_bytes()).unwrap();
        assert_eq!(
            out,
            sdp(&[
                "v=0",
                "o=- 1 1 IN IP4 192.0.2.1",
                "s=-",
                "c=IN IP4 192.0.2.1",
                "b=AS:64",
                "t=0 0",
                "a=group:BUNDLE 0",
                "q=unknown after a",
                "m=audio 4000 RTP/AVP 0",
                "c=IN IP4 192.0.2.2",
                "b=AS:64",
                "a=sendrecv",
            ])
        );
        assert_round_trips(&d);
    }

    #[test]
    fn extra_spaces_and_leading_zeros_reemit_canonically() {
        let d = parse(&sdp(&[
            "v=0",
            "o=-  007 0010 IN  IP4 192.0.2.1 ",
            "s= ",
            "t=0  0",
            "m=audio  04000  RTP/AVP 0  8 ",
            "b=AS:064",
        ]))
        .unwrap();
        assert_eq!((d.origin.session_id, d.origin.session_version), (7, 10));
        assert_eq!(d.session_name, " ");
        assert_eq!(d.media[0].port, 4000);
        assert_eq!(d.media[0].formats, ["0", "8"]);
        assert_eq!(
            String::from_utf8(d.to_bytes()).unwrap(),
            sdp(&[
                "v=0",
                "o=- 7 10 IN IP4 192.0.2.1",
                "s= ",
                "t=0 0",
                "m=audio 4000 RTP/AVP 0 8",
                "b=AS:64",
            ])
        );
        assert_round_trips(&d);
    }

    #[test]
    fn attribute_with_empty_value_is_distinct_from_flag() {
        let d = parse(&with_head(&["a=x", "a=x:", "a=y:a:b"])).unwrap();
        assert_eq!(
            d.attributes,
            [
                Attribute::flag("x"),
                Attribute::new("x", ""),
                Attribute::new("y", "a:b")
            ]
        );
        assert_round_trips(&d);
    }

    #[test]
    fn direction_falls_back_to_session_then_sendrecv() {
        let d = seed("pcmu_pcma_telephone_event.sdp");
        assert_eq!(d.media[0].direction(&d), Direction::SendRecv);
        let d = seed("hold_inactive_session_level.sdp");
        assert_eq!(d.direction(), Some(Direction::Inactive));
        assert_eq!(d.media[0].direction(&d), Direction::Inactive);
        let d = seed("sipp_uac.sdp");
        assert_eq!(d.direction(), None);
        assert_eq!(d.media[0].direction(&d), Direction::SendRecv);
        // Media level wins over session level.
        let d = parse(&with_head(&[
            "a=sendonly",
            "m=audio 1 RTP/AVP 0",
            "a=recvonly",
        ]))
        .unwrap();
        assert_eq!(d.media[0].direction(&d), Direction::RecvOnly);
    }

    #[test]
    fn set_direction_replaces_direction_attributes_in_place() {
        let mut d = parse(&with_head(&[
            "m=audio 1 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "a=sendonly",
            "a=ptime:20",
            "a=inactive",
        ]))
        .unwrap();
        d.media[0].set_direction(Direction::RecvOnly);
        let names: Vec<_> = d.media[0]
            .attributes
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["rtpmap", "recvonly", "ptime"]);
        let mut s = seed("sipp_uac.sdp");
        s.media[0].set_direction(Direction::Inactive);
        assert_eq!(
            s.media[0].attributes.last(),
            Some(&Attribute::flag("inactive"))
        );
        s.set_direction(Direction::SendOnly);
        assert_eq!(s.direction(), Some(Direction::SendOnly));
        assert_eq!(s.media[0].direction(&s), Direction::Inactive);
        assert_round_trips(&s);
    }

    #[test]
    fn direction_reverse_swaps_send_and_receive() {
        use Direction::*;
        for (offer, answer) in [
            (SendRecv, SendRecv),
            (SendOnly, RecvOnly),
            (RecvOnly, SendOnly),
            (Inactive, Inactive),
        ] {
            assert_eq!(offer.reverse(), answer);
            assert_eq!(offer.reverse().reverse(), offer);
            assert_eq!(Direction::from_attribute(offer.as_str()), Some(offer));
            assert_eq!(offer.sends(), answer.receives());
        }
        assert_eq!(Direction::from_attribute("SENDONLY"), None);
    }

    #[test]
    fn hold_is_sendonly_or_inactive_or_zero_address() {
        let held = |name: &str| {
            let d = seed(name);
            (
                d.media.iter().map(|m| m.is_hold(&d)).collect::<Vec<_>>(),
                d.is_hold(),
            )
        };
        assert_eq!(held("hold_sendonly.sdp"), (vec![true], true));
        assert_eq!(held("hold_inactive_session_level.sdp"), (vec![true], true));
        assert_eq!(held("hold_legacy_zero_address.sdp"), (vec![true], true));
        assert_eq!(held("pcmu_pcma_telephone_event.sdp"), (vec![false], false));
        // recvonly is what the held party answers, not a hold.
        let mut d = seed("sipp_uac.sdp");
        d.media[0].set_direction(Direction::RecvOnly);
        assert!(!d.is_hold());
        // A held stream next to an active one: no whole-call hold.
        let mut v = seed("audio_video.sdp");
        v.media[0].set_direction(Direction::SendOnly);
        assert!(v.media[0].is_hold(&v) && !v.media[1].is_hold(&v));
        assert!(!v.is_hold());
        // Rejected streams do not count; no active stream is no hold.
        let mut r = seed("rejected_stream_port0.sdp");
        r.media[0].set_direction(Direction::Inactive);
        assert!(r.is_hold());
        r.media[0].set_port(0);
        assert!(!r.is_hold());
        // A media-level 0.0.0.0 holds that stream only.
        let z = parse(&with_head(&["m=audio 1 RTP/AVP 0", "c=IN IP4 0.0.0.0"])).unwrap();
        assert!(z.media[0].is_hold(&z));
    }

    #[test]
    fn connection_address_prefers_media_over_session() {
        let d = seed("rtcp_attribute.sdp");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(d.media[0].connection_address(&d), Some(ip("126.16.64.4")));
        assert_eq!(d.media[1].connection_address(&d), Some(ip("126.16.64.5")));
        let v6 = seed("ipv6.sdp");
        assert_eq!(
            v6.media[0].connection_address(&v6),
            Some(ip("2001:db8:0:1::20"))
        );
        assert_eq!(
            v6.connection.as_ref().and_then(Connection::ip),
            Some(ip("2001:db8::10"))
        );
        // A FQDN or mismatched address type is no IP address.
        let fqdn = parse(&with_head(&[
            "m=audio 1 RTP/AVP 0",
            "c=IN IP4 media.example.com",
        ]))
        .unwrap();
        assert_eq!(fqdn.media[0].connection_address(&fqdn), None);
        let mismatch = parse(&with_head(&["m=audio 1 RTP/AVP 0", "c=IN IP6 192.0.2.1"])).unwrap();
        assert_eq!(mismatch.media[0].connection_address(&mismatch), None);
    }

    #[test]
    fn set_connection_address_and_port_rewrite_c_and_m_lines() {
        let mut d = seed("rtcp_attribute.sdp");
        let anchor = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99));
        d.set_connection_address(anchor);
        d.media[0].set_port(30000);
        d.bump_version();
        for m in &d.media {
            assert_eq!(m.connection_address(&d), Some(anchor));
        }
        let out = String::from_utf8(d.to_bytes()).unwrap();
        assert!(
            out.contains("\r\nc=IN IP6 2001:db8::99\r\nt=0 0\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nm=audio 30000 RTP/AVP 0\r\n"), "{out}");
        assert!(
            out.contains("\r\nm=audio 49180 RTP/AVP 8\r\nc=IN IP6 2001:db8::99\r\n"),
            "{out}"
        );
        assert!(out.contains("o=- 2890844526 2890842808 IN IP4"), "{out}");
        assert_round_trips(&d);

        // Media-level only: the session c= stays.
        let mut s = seed("sipp_uac.sdp");
        s.media[0].set_connection_address(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(s.connection.as_ref().unwrap().address, "127.0.0.1");
        assert_eq!(
            s.media[0].connections,
            [Connection::new("10.1.2.3".parse().unwrap())]
        );
        s.media[0].set_port(0);
        assert!(s.media[0].is_rejected());
        assert_round_trips(&s);
    }

    #[test]
    fn rtpmap_and_fmtp_look_up_by_payload_type() {
        let d = seed("opus_rfc7587.sdp");
        let m = &d.media[0];
        let opus = m.rtpmap("101").unwrap();
        assert_eq!(
            (opus.encoding, opus.clock_rate, opus.params),
            ("opus", 48000, Some("2"))
        );
        assert_eq!(opus.channels(), 2);
        assert_eq!(
            m.fmtp("101"),
            Some(
                "maxplaybackrate=16000; sprop-maxcapturerate=16000; maxaveragebitrate=20000; stereo=1; useinbandfec=1; usedtx=0"
            )
        );
        assert_eq!(m.fmtp("10"), None);
        assert_eq!(m.rtpmap("96"), None);

        let g711 = seed("pcmu_pcma_telephone_event.sdp");
        let m = &g711.media[0];
        let te = m.rtpmap("101").unwrap();
        assert_eq!(
            (te.encoding, te.clock_rate, te.channels()),
            ("telephone-event", 8000, 1)
        );
        assert_eq!(m.fmtp("101"), Some("0-16"));
        assert_eq!(m.rtpmap("8").map(|r| r.encoding), Some("PCMA"));

        // Static payload types need no a=rtpmap (RFC 3551).
        let s = seed("rfc4566_example.sdp");
        let pcmu = s.media[0].rtpmap("0").unwrap();
        assert_eq!((pcmu.encoding, pcmu.clock_rate), ("PCMU", 8000));
        assert_eq!(
            s.media[1].rtpmap("99").map(|r| r.encoding),
            Some("h263-1998")
        );
        // A malformed explicit mapping is not replaced by the static one.
        let bad = parse(&with_head(&["m=audio 1 RTP/AVP 0", "a=rtpmap:0 PCMU"])).unwrap();
        assert_eq!(bad.media[0].rtpmap("0"), None);
    }

    #[test]
    fn bump_version_increments_sess_version_and_wraps() {
        let mut d = seed("hold_sendonly.sdp");
        d.bump_version();
        assert_eq!(d.origin.session_version, 2808844566);
        d.origin.session_version = u64::MAX;
        d.bump_version();
        assert_eq!(d.origin.session_version, 0);
        assert_round_trips(&d);
    }

    /// xorshift32: deterministic, no clock or OS randomness.
    fn next(x: &mut u32) -> u32 {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x
    }

    /// Parsing never panics, and whatever parses round-trips.
    fn check_any(input: &[u8]) {
        if let Ok(d) = SessionDescription::parse(input) {
            assert_round_trips(&d);
            for m in &d.media {
                let _ = (m.direction(&d), m.is_hold(&d), m.connection_address(&d));
                for f in &m.formats {
                    let _ = (m.rtpmap(f), m.fmtp(f));
                }
            }
            let _ = d.is_hold();
        }
    }

    #[test]
    fn never_panics_on_truncations_and_mutations_and_parses_round_trip() {
        const BYTES: &[u8] = b"\r\n\0\xff\xe9 =:/aAvmoctbrz09-.";
        let mut x: u32 = 0x5eed_5d9f;
        let mut parsed = 0;
        for (_, seed) in SEEDS {
            for end in 0..=seed.len() {
                check_any(&seed[..end]);
            }
            for _ in 0..3000 {
                let mut v = seed.to_vec();
                for _ in 0..1 + next(&mut x) % 3 {
                    let pos = next(&mut x) as usize % (v.len() + 1);
                    let byte = BYTES[next(&mut x) as usize % BYTES.len()];
                    match next(&mut x) % 4 {
                        0 if pos < v.len() => v[pos] = byte,
                        1 if pos < v.len() => {
                            v.remove(pos);
                        }
                        2 => {
                            // Duplicate a span, e.g. a whole line.
                            let len = (next(&mut x) % 40) as usize;
                            let span = v[pos..(pos + len).min(v.len())].to_vec();
                            v.splice(pos..pos, span);
                        }
                        _ => v.insert(pos, byte),
                    }
                }
                if SessionDescription::parse(&v).is_ok() {
                    parsed += 1;
                }
                check_any(&v);
            }
        }
        // The mutations explore both sides of the grammar.
        assert!(
            parsed > 1000 && parsed < SEEDS.len() * 3000,
            "{parsed} parsed"
        );
    }
}
