//! SIP messages (RFC 3261 §7, §20): a zero-copy parser on `bytes` and the
//! typed view the rest of the appliance uses.
//!
//! [`parse`] takes one complete message — a UDP datagram, or a frame cut from
//! a TCP stream by [`crate::sip::framing`] — and returns a [`Message`] whose
//! text fields are `Bytes` views into the received buffer. The headers the
//! SIP core acts on (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact,
//! Content-Length, Content-Type, Expires, Require, Proxy-Require, Supported,
//! Accept) are parsed strictly once here; every other header is kept as its
//! raw (unfolded) value. A message that breaks the grammar is refused with a
//! [`ParseError`] whose reason goes into the `400` answer and the counters.
//!
//! Liberal where RFC 4475 says valid messages are strange (line folding
//! anywhere, LWS around `:` `/` `;` `=`, compact header names, escaped
//! characters, `%00`, extension methods and headers, UTF-8 in values),
//! strict where it says they are broken (spaces in the start line, unbalanced
//! quotes, `<` with spaces, empty parameters, duplicated single-value
//! headers, over-large numbers, Content-Length beyond the datagram).

use bytes::Bytes;

use super::grammar::{
    self, GrammarError, MediaType, NameAddr, Uri, Via, parse_decimal, parse_delta_seconds,
    parse_media_type, parse_name_addr, parse_token_list, parse_vias, trim, view,
};

/// A SIP method. Methods are case-sensitive (§7.1); anything else is
/// `Other` and gets 501 from the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other(Bytes),
}

impl Method {
    /// The method named by `b` (which must already be a token).
    pub fn from_token(b: &Bytes) -> Method {
        match b.as_ref() {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            _ => Method::Other(b.clone()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Options => b"OPTIONS",
            Method::Register => b"REGISTER",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Publish => b"PUBLISH",
            Method::Info => b"INFO",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Update => b"UPDATE",
            Method::Other(b) => b,
        }
    }

    /// Index for per-method counters (`Other` is the last slot).
    pub fn counter_index(&self) -> usize {
        match self {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Bye => 2,
            Method::Cancel => 3,
            Method::Options => 4,
            Method::Register => 5,
            Method::Prack => 6,
            Method::Subscribe => 7,
            Method::Notify => 8,
            Method::Publish => 9,
            Method::Info => 10,
            Method::Refer => 11,
            Method::Message => 12,
            Method::Update => 13,
            Method::Other(_) => 14,
        }
    }

    /// Names in counter order (see [`Method::counter_index`]).
    pub const COUNTER_NAMES: [&'static str; 15] = [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
        "other",
    ];
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Header names the core knows, after compact-form expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    ContentLength,
    ContentType,
    Expires,
    Require,
    ProxyRequire,
    Supported,
    Accept,
    Authorization,
    Route,
    RecordRoute,
    /// Any other header: its name is in [`Header::name_raw`].
    Other,
}

impl HeaderName {
    /// The header a name (long or compact form, any case) refers to.
    pub fn classify(name: &[u8]) -> HeaderName {
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                _ => HeaderName::Other,
            };
        }
        if eq("Via") {
            HeaderName::Via
        } else if eq("From") {
            HeaderName::From
        } else if eq("To") {
            HeaderName::To
        } else if eq("Call-ID") {
            HeaderName::CallId
        } else if eq("CSeq") {
            HeaderName::CSeq
        } else if eq("Max-Forwards") {
            HeaderName::MaxForwards
        } else if eq("Contact") {
            HeaderName::Contact
        } else if eq("Content-Length") {
            HeaderName::ContentLength
        } else if eq("Content-Type") {
            HeaderName::ContentType
        } else if eq("Expires") {
            HeaderName::Expires
        } else if eq("Require") {
            HeaderName::Require
        } else if eq("Proxy-Require") {
            HeaderName::ProxyRequire
        } else if eq("Supported") {
            HeaderName::Supported
        } else if eq("Accept") {
            HeaderName::Accept
        } else if eq("Authorization") {
            HeaderName::Authorization
        } else if eq("Route") {
            HeaderName::Route
        } else if eq("Record-Route") {
            HeaderName::RecordRoute
        } else {
            HeaderName::Other
        }
    }
}

/// One header line: its (expanded) name, the name as received for extension
/// headers (empty for the known ones), and its value, trimmed, with line
/// folding replaced by single spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub name_raw: Bytes,
    pub value: Bytes,
}

impl Header {
    /// True when this header is `name` (long or compact form, any case).
    pub fn is_named(&self, name: &str) -> bool {
        match self.name {
            HeaderName::Other => self.name_raw.eq_ignore_ascii_case(name.as_bytes()),
            known => HeaderName::classify(name.as_bytes()) == known,
        }
    }
}

/// The CSeq header (§20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// The Contact header(s) of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Contacts {
    #[default]
    None,
    /// `Contact: *` (REGISTER removal of all bindings).
    Star,
    List(Vec<NameAddr>),
}

/// Start line of a message. Requests carry their parsed URI inline: most
/// messages are requests, and boxing it would add an allocation to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { status: u16, reason: Bytes },
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    pub start: StartLine,
    /// `SIP/2.0` normally; other versions are kept so the endpoint can
    /// answer 505.
    pub version: Bytes,
    /// Every header in order of arrival.
    pub headers: Vec<Header>,
    /// All Via entries, topmost first.
    pub vias: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: Bytes,
    pub cseq: CSeq,
    pub max_forwards: Option<u8>,
    pub contacts: Contacts,
    pub expires: Option<u32>,
    pub content_type: Option<MediaType>,
    /// Accept entries; `None` when no Accept header was present.
    pub accept: Option<Vec<MediaType>>,
    pub require: Vec<Bytes>,
    pub proxy_require: Vec<Bytes>,
    pub supported: Vec<Bytes>,
    pub body: Bytes,
}

impl Message {
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or the CSeq method of a response.
    pub fn method(&self) -> &Method {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => &self.cseq.method,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The top Via (every parsed message has at least one).
    pub fn top_via(&self) -> &Via {
        // invariant: parse() refuses a message without a Via.
        &self.vias[0]
    }

    /// Values of every header with this (known) name, in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &Bytes> {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| &h.value)
    }

    /// First value of an extension header named `name` (case-insensitive).
    pub fn other_header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name == HeaderName::Other && h.is_named(name))
            .map(|h| &h.value)
    }
}

/// Why a message was refused; `kind` is counted, `what` explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {what}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub what: &'static str,
}

/// Classes of parse failure, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not SIP at all (binary, empty, no start line).
    NotSip,
    BadStartLine,
    BadHeaderLine,
    MissingHeader,
    DuplicateHeader,
    BadHeaderValue,
    BadContentLength,
    TooLarge,
    TooManyHeaders,
}

impl ParseErrorKind {
    pub const ALL: [ParseErrorKind; 9] = [
        ParseErrorKind::NotSip,
        ParseErrorKind::BadStartLine,
        ParseErrorKind::BadHeaderLine,
        ParseErrorKind::MissingHeader,
        ParseErrorKind::DuplicateHeader,
        ParseErrorKind::BadHeaderValue,
        ParseErrorKind::BadContentLength,
        ParseErrorKind::TooLarge,
        ParseErrorKind::TooManyHeaders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParseErrorKind::NotSip => "not_sip",
            ParseErrorKind::BadStartLine => "bad_start_line",
            ParseErrorKind::BadHeaderLine => "bad_header_line",
            ParseErrorKind::MissingHeader => "missing_header",
            ParseErrorKind::DuplicateHeader => "duplicate_header",
            ParseErrorKind::BadHeaderValue => "bad_header_value",
            ParseErrorKind::BadContentLength => "bad_content_length",
            ParseErrorKind::TooLarge => "too_large",
            ParseErrorKind::TooManyHeaders => "too_many_headers",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

fn fail<T>(kind: ParseErrorKind, what: &'static str) -> Result<T, ParseError> {
    Err(ParseError { kind, what })
}

fn bad_value(e: GrammarError) -> ParseError {
    ParseError {
        kind: ParseErrorKind::BadHeaderValue,
        what: e.0,
    }
}

/// Limits applied while parsing (from `sip.max_message_bytes`,
/// `sip.max_headers`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65535,
            max_headers: 256,
        }
    }
}

/// How the message arrived: over a datagram transport a missing
/// Content-Length means "the rest of the datagram" (§18.3); over a stream the
/// framer has already cut the message at its Content-Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

/// Where the header section ends: (offset of the first body byte, offset of
/// the end of the last header line). Accepts CRLF or bare LF line ends.
pub fn find_header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = memchr(b'\n', &buf[i..]) {
        let nl = i + p;
        // The line after `nl` is empty when it is "\n" or "\r\n".
        let next = &buf[nl + 1..];
        if next.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if next.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

/// Parses one SIP message from `buf`. Leading CRLFs (keep-alives, §7.5) are
/// skipped; over a datagram, bytes after Content-Length are ignored.
pub fn parse(buf: Bytes, framing: Framing, limits: &Limits) -> Result<Message, ParseError> {
    if buf.len() > limits.max_message_bytes {
        return fail(ParseErrorKind::TooLarge, "message too large");
    }
    let skip = buf
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(buf.len());
    let buf = buf.slice(skip..);
    let Some(body_start) = find_header_end(&buf) else {
        if buf.is_empty() || !looks_like_text(&buf) {
            return fail(ParseErrorKind::NotSip, "not a SIP message");
        }
        return fail(
            ParseErrorKind::BadHeaderLine,
            "header section not terminated",
        );
    };
    let head = &buf[..body_start];
    // Start line.
    let first_nl = memchr(b'\n', head).unwrap_or(head.len());
    let start_line = strip_cr(&head[..first_nl]);
    if !looks_like_text(start_line) {
        return fail(ParseErrorKind::NotSip, "not a SIP message");
    }
    let (start, version) = parse_start_line(&buf, start_line)?;

    let mut b = Builder {
        headers: Vec::with_capacity(24),
        ..Builder::default()
    };
    let mut lines = HeaderLines {
        buf: &buf,
        pos: first_nl + 1,
        end: body_start,
    };
    let mut count = 0usize;
    while let Some(line) = lines.next_header()? {
        count += 1;
        if count > limits.max_headers {
            return fail(ParseErrorKind::TooManyHeaders, "too many headers");
        }
        b.add(&buf, line)?;
    }
    let body_avail = buf.slice(body_start..);
    let body = match (b.content_length, framing) {
        (Some(n), _) if n > body_avail.len() => {
            return fail(
                ParseErrorKind::BadContentLength,
                "Content-Length larger than the body",
            );
        }
        (Some(n), _) => body_avail.slice(..n),
        (None, Framing::Datagram) => body_avail,
        (None, Framing::Stream) => Bytes::new(),
    };
    b.finish(start, version, body)
}

fn looks_like_text(s: &[u8]) -> bool {
    // A start line is printable ASCII or UTF-8; binary junk has controls.
    !s.iter()
        .take(256)
        .any(|&c| c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n')
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_version(owner: &Bytes, v: &[u8]) -> Result<Bytes, ParseError> {
    // "SIP/" 1*DIGIT "." 1*DIGIT, the name case-insensitive.
    let ok = v.len() > 4 && v[..4].eq_ignore_ascii_case(b"SIP/") && {
        let rest = &v[4..];
        let mut parts = rest.splitn(2, |&c| c == b'.');
        let a = parts.next().unwrap_or(&[]);
        let b = parts.next().unwrap_or(&[]);
        !a.is_empty()
            && !b.is_empty()
            && a.iter().all(u8::is_ascii_digit)
            && b.iter().all(u8::is_ascii_digit)
    };
    if !ok {
        return fail(ParseErrorKind::BadStartLine, "bad SIP version");
    }
    Ok(view(owner, v))
}

fn parse_start_line(owner: &Bytes, line: &[u8]) -> Result<(StartLine, Bytes), ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut it = line.splitn(3, |&c| c == b' ');
        let version = parse_version(owner, it.next().unwrap_or(&[]))?;
        let code = it.next().unwrap_or(&[]);
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return fail(ParseErrorKind::BadStartLine, "bad status code");
        }
        let status = u16::from(code[0] - b'0') * 100
            + u16::from(code[1] - b'0') * 10
            + u16::from(code[2] - b'0');
        if !(100..=699).contains(&status) {
            return fail(ParseErrorKind::BadStartLine, "bad status code");
        }
        let reason = it.next().unwrap_or(&[]);
        if reason.iter().any(|&c| c < 0x20 && c != b'\t') {
            return fail(
                ParseErrorKind::BadStartLine,
                "control character in reason phrase",
            );
        }
        return Ok((
            StartLine::Response {
                status,
                reason: view(owner, reason),
            },
            version,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (single spaces).
    let mut it = line.split(|&c| c == b' ');
    let (Some(m), Some(u), Some(v), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return fail(ParseErrorKind::BadStartLine, "malformed Request-Line");
    };
    let parts = [m, u, v];
    if parts.iter().any(|p| p.is_empty()) {
        return fail(ParseErrorKind::BadStartLine, "malformed Request-Line");
    }
    if !grammar::is_token(parts[0]) {
        return fail(ParseErrorKind::BadStartLine, "bad method");
    }
    let version = parse_version(owner, parts[2])?;
    let uri = grammar::parse_uri(view(owner, parts[1]), false).map_err(|e| ParseError {
        kind: ParseErrorKind::BadStartLine,
        what: e.0,
    })?;
    Ok((
        StartLine::Request {
            method: Method::from_token(&view(owner, parts[0])),
            uri,
        },
        version,
    ))
}

/// Iterates over header lines, joining folded continuation lines.
struct HeaderLines<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

/// One (possibly folded) header line: name and raw value text.
struct RawHeader {
    name: Bytes,
    value: Bytes,
}

impl HeaderLines<'_> {
    fn next_header(&mut self) -> Result<Option<RawHeader>, ParseError> {
        let head = &self.buf[..self.end];
        if self.pos >= self.end {
            return Ok(None);
        }
        let line_end = |from: usize| memchr(b'\n', &head[from..]).map_or(head.len(), |p| from + p);
        let first_end = line_end(self.pos);
        let first = strip_cr(&head[self.pos..first_end]);
        if first.is_empty() {
            self.pos = self.end;
            return Ok(None);
        }
        if matches!(first[0], b' ' | b'\t') {
            return fail(
                ParseErrorKind::BadHeaderLine,
                "continuation line without a header",
            );
        }
        // Gather continuation lines.
        let mut next = first_end + 1;
        let mut folded = false;
        while next < self.end && matches!(head[next], b' ' | b'\t') {
            folded = true;
            next = line_end(next) + 1;
        }
        let whole_end = next.min(self.end);
        let whole = &head[self.pos..whole_end];
        self.pos = whole_end;
        let Some(colon) = memchr(b':', whole) else {
            return fail(ParseErrorKind::BadHeaderLine, "header line without ':'");
        };
        let name = trim(&whole[..colon]);
        if !grammar::is_token(name) {
            return fail(ParseErrorKind::BadHeaderLine, "bad header name");
        }
        let name = view(self.buf, name);
        let raw_value = &whole[colon + 1..];
        let value = if folded || raw_value.contains(&b'\r') || raw_value.contains(&b'\n') {
            // Replace CR/LF with spaces, then trim: folding becomes LWS.
            let unfolded: Vec<u8> = raw_value
                .iter()
                .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                .collect();
            let t = trim(&unfolded);
            Bytes::copy_from_slice(t)
        } else {
            view(self.buf, trim(raw_value))
        };
        Ok(Some(RawHeader { name, value }))
    }
}

#[derive(Default)]
struct Builder {
    headers: Vec<Header>,
    vias: Vec<Via>,
    from: Option<NameAddr>,
    to: Option<NameAddr>,
    call_id: Option<Bytes>,
    cseq: Option<CSeq>,
    max_forwards: Option<u8>,
    contacts: Contacts,
    expires: Option<u32>,
    content_length: Option<usize>,
    content_type: Option<MediaType>,
    accept: Option<Vec<MediaType>>,
    require: Vec<Bytes>,
    proxy_require: Vec<Bytes>,
    supported: Vec<Bytes>,
}

fn once<T>(slot: &mut Option<T>, v: T, what: &'static str) -> Result<(), ParseError> {
    if slot.is_some() {
        return fail(ParseErrorKind::DuplicateHeader, what);
    }
    *slot = Some(v);
    Ok(())
}

impl Builder {
    fn add(&mut self, _buf: &Bytes, h: RawHeader) -> Result<(), ParseError> {
        let name = HeaderName::classify(&h.name);
        let raw = &h.value;
        let v: &[u8] = raw;
        match name {
            HeaderName::Via => parse_vias(raw, v, &mut self.vias).map_err(bad_value)?,
            HeaderName::From => {
                let na = parse_name_addr(raw, v).map_err(|_| bad("bad From header"))?;
                if na.param("tag") == Some(None) {
                    return Err(bad("From tag without a value"));
                }
                once(&mut self.from, na, "duplicate From header")?;
            }
            HeaderName::To => {
                let na = parse_name_addr(raw, v).map_err(|_| bad("bad To header"))?;
                if na.param("tag") == Some(None) {
                    return Err(bad("To tag without a value"));
                }
                once(&mut self.to, na, "duplicate To header")?;
            }
            HeaderName::CallId => {
                if !grammar::is_call_id(v) {
                    return Err(bad("bad Call-ID header"));
                }
                once(&mut self.call_id, raw.clone(), "duplicate Call-ID header")?;
            }
            HeaderName::CSeq => {
                let c = parse_cseq(raw, v)?;
                once(&mut self.cseq, c, "duplicate CSeq header")?;
            }
            HeaderName::MaxForwards => {
                let n = parse_decimal(v, 255).map_err(|_| bad("bad Max-Forwards header"))?;
                // invariant: parse_decimal checked n <= 255.
                once(
                    &mut self.max_forwards,
                    n as u8,
                    "duplicate Max-Forwards header",
                )?;
            }
            HeaderName::ContentLength => {
                let n = parse_decimal(v, u32::MAX.into()).map_err(|_| ParseError {
                    kind: ParseErrorKind::BadContentLength,
                    what: "bad Content-Length header",
                })?;
                if self.content_length.is_some() {
                    return fail(
                        ParseErrorKind::BadContentLength,
                        "duplicate Content-Length header",
                    );
                }
                self.content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            HeaderName::ContentType => {
                let t = parse_media_type(raw, v).map_err(|_| bad("bad Content-Type header"))?;
                once(&mut self.content_type, t, "duplicate Content-Type header")?;
            }
            HeaderName::Expires => {
                let e = parse_delta_seconds(v).map_err(|_| bad("bad Expires header"))?;
                once(&mut self.expires, e, "duplicate Expires header")?;
            }
            HeaderName::Contact => self.add_contact(raw, v)?,
            HeaderName::Require => parse_token_list(raw, v, &mut self.require)
                .map_err(|_| bad("bad Require header"))?,
            HeaderName::ProxyRequire => parse_token_list(raw, v, &mut self.proxy_require)
                .map_err(|_| bad("bad Proxy-Require header"))?,
            HeaderName::Supported => parse_token_list(raw, v, &mut self.supported)
                .map_err(|_| bad("bad Supported header"))?,
            HeaderName::Accept => {
                let list = self.accept.get_or_insert_with(Vec::new);
                let t = trim(v);
                if !t.is_empty() {
                    grammar::for_each_top(t, b',', |part| {
                        list.push(
                            parse_media_type(raw, part)
                                .map_err(|_| GrammarError("bad Accept header"))?,
                        );
                        Ok(())
                    })
                    .map_err(bad_value)?;
                }
            }
            HeaderName::Authorization
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Other => {}
        }
        // Known headers are identified by `name`; only extension headers
        // keep a view of their name (one refcount less per header).
        let name_raw = if name == HeaderName::Other {
            h.name
        } else {
            Bytes::new()
        };
        self.headers.push(Header {
            name,
            name_raw,
            value: h.value,
        });
        Ok(())
    }

    fn add_contact(&mut self, raw: &Bytes, v: &[u8]) -> Result<(), ParseError> {
        if trim(v) == b"*" {
            if !matches!(self.contacts, Contacts::None) {
                return Err(bad("Contact: * mixed with other contacts"));
            }
            self.contacts = Contacts::Star;
            return Ok(());
        }
        if matches!(self.contacts, Contacts::Star) {
            return Err(bad("Contact: * mixed with other contacts"));
        }
        if matches!(self.contacts, Contacts::None) {
            self.contacts = Contacts::List(Vec::new());
        }
        let Contacts::List(list) = &mut self.contacts else {
            return Err(bad("Contact: * mixed with other contacts"));
        };
        grammar::for_each_top(v, b',', |p| {
            list.push(parse_name_addr(raw, p)?);
            Ok(())
        })
        .map_err(|_| bad("bad Contact header"))?;
        Ok(())
    }

    fn finish(self, start: StartLine, version: Bytes, body: Bytes) -> Result<Message, ParseError> {
        let missing = |w| ParseError {
            kind: ParseErrorKind::MissingHeader,
            what: w,
        };
        if self.vias.is_empty() {
            return Err(missing("missing Via header"));
        }
        let from = self.from.ok_or(missing("missing From header"))?;
        let to = self.to.ok_or(missing("missing To header"))?;
        let call_id = self.call_id.ok_or(missing("missing Call-ID header"))?;
        let cseq = self.cseq.ok_or(missing("missing CSeq header"))?;
        Ok(Message {
            start,
            version,
            headers: self.headers,
            vias: self.vias,
            from,
            to,
            call_id,
            cseq,
            max_forwards: self.max_forwards,
            contacts: self.contacts,
            expires: self.expires,
            content_type: self.content_type,
            accept: self.accept,
            require: self.require,
            proxy_require: self.proxy_require,
            supported: self.supported,
            body,
        })
    }
}

fn bad(what: &'static str) -> ParseError {
    ParseError {
        kind: ParseErrorKind::BadHeaderValue,
        what,
    }
}

fn parse_cseq(raw: &Bytes, v: &[u8]) -> Result<CSeq, ParseError> {
    let v = trim(v);
    let split = v.iter().position(|&c| c == b' ' || c == b'\t');
    let Some(split) = split else {
        return Err(bad("bad CSeq header"));
    };
    let seq = parse_decimal(&v[..split], u32::MAX.into()).map_err(|_| bad("bad CSeq number"))?;
    let m = trim(&v[split..]);
    if !grammar::is_token(m) {
        return Err(bad("bad CSeq method"));
    }
    Ok(CSeq {
        // invariant: parse_decimal checked seq <= u32::MAX.
        seq: seq as u32,
        method: Method::from_token(&view(raw, m)),
    })
}

/// Via lines a salvaged `400` echoes at most.
pub const SALVAGED_VIAS: usize = 16;

/// The raw values of the headers a `400` answer must echo (Via, From, To,
/// Call-ID, CSeq), scraped leniently from a message that failed to parse.
/// Returns `None` when the bytes are not a SIP request at all (then nothing is
/// answered). Values containing control characters are left out.
pub fn salvage_request(buf: &Bytes) -> Option<Vec<(HeaderName, Bytes)>> {
    let skip = buf.iter().position(|&c| c != b'\r' && c != b'\n')?;
    let buf = buf.slice(skip..);
    let end = find_header_end(&buf).unwrap_or(buf.len());
    let first_nl = memchr(b'\n', &buf[..end]).unwrap_or(end);
    let start = strip_cr(&buf[..first_nl]);
    // Must look like "TOKEN SP ... SIP/x.y".
    if start.len() < 4 || start[..4].eq_ignore_ascii_case(b"SIP/") || !looks_like_text(start) {
        return None;
    }
    let method_end = memchr(b' ', start)?;
    if !grammar::is_token(&start[..method_end])
        || !start.windows(4).any(|w| w.eq_ignore_ascii_case(b"SIP/"))
    {
        return None;
    }
    let mut lines = HeaderLines {
        buf: &buf,
        pos: first_nl + 1,
        end,
    };
    // At most SALVAGED_VIAS Via lines and one of each other header, so the
    // answer is never much larger than what was sent (no amplification).
    let mut out: Vec<(HeaderName, Bytes)> = Vec::new();
    let mut seen = 0usize;
    while let Ok(Some(h)) = lines.next_header() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let name = HeaderName::classify(&h.name);
        let wanted = match name {
            HeaderName::Via => {
                out.iter().filter(|(n, _)| *n == HeaderName::Via).count() < SALVAGED_VIAS
            }
            HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq => {
                !out.iter().any(|(n, _)| *n == name)
            }
            _ => false,
        };
        if wanted && !h.value.iter().any(|&c| c < 0x20 && c != b'\t') && !h.value.is_empty() {
            out.push((name, h.value));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Message, ParseError> {
        parse(
            Bytes::copy_from_slice(s.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
    }

    const OPTIONS: &str = "OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nTo: <sip:user@example.com>\r\nFrom: <sip:caller@example.com>;tag=a\r\nCall-ID: c1@h\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn parses_minimal_options() {
        let m = p(OPTIONS).unwrap();
        assert_eq!(m.method(), &Method::Options);
        assert_eq!(&m.call_id[..], b"c1@h");
        assert_eq!(m.cseq.seq, 1);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(m.from.tag().map(|t| &t[..]), Some(&b"a"[..]));
        assert!(m.body.is_empty());
    }

    #[test]
    fn leading_crlf_skipped_and_bare_lf_accepted() {
        assert!(p(&format!("\r\n\r\n{OPTIONS}")).is_ok());
        assert!(p(&OPTIONS.replace("\r\n", "\n")).is_ok());
    }

    #[test]
    fn response_status_line() {
        let r = p("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=x\r\nFrom: <sip:a@b>;tag=y\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.method(), &Method::Invite);
        assert!(p("SIP/2.0 4294967301 big\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nFrom: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").is_err());
    }

    #[test]
    fn missing_headers_refused() {
        let e = p("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::MissingHeader);
    }

    #[test]
    fn content_length_rules() {
        let base = OPTIONS.replace("Content-Length: 0", "Content-Length: 5");
        let e = p(&base).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadContentLength);
        let m = p(&format!("{base}hello trailing")).unwrap();
        assert_eq!(&m.body[..], b"hello");
        let e = p(&OPTIONS.replace("Content-Length: 0", "Content-Length: -1")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadContentLength);
    }

    #[test]
    fn binary_is_not_sip() {
        let e = parse(
            Bytes::from_static(&[0u8, 1, 2, 0xff, 0x10]),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NotSip);
        assert!(salvage_request(&Bytes::from_static(&[0u8, 1, 2])).is_none());
    }

    #[test]
    fn too_many_headers() {
        let many = "X-A: 1\r\n".repeat(300);
        let msg = OPTIONS.replace(
            "Content-Length: 0\r\n",
            &format!("{many}Content-Length: 0\r\n"),
        );
        assert_eq!(p(&msg).unwrap_err().kind, ParseErrorKind::TooManyHeaders);
    }

    /// Found by the endpoint fuzz target: 340 To lines made a 400 eight
    /// times the request's size.
    #[test]
    fn salvage_echoes_each_header_once_and_bounded_vias() {
        let mut bad = String::from("INVITE sip:a@b SIP/2.0\r\n");
        for _ in 0..100 {
            bad.push_str("Via: SIP/2.0/UDP h\r\nt: x\r\nf: y\r\ni: z\r\nCSeq: 1 INVITE\r\n");
        }
        bad.push_str("\r\n");
        let s = salvage_request(&Bytes::from(bad)).unwrap();
        let count = |n| s.iter().filter(|(h, _)| *h == n).count();
        assert_eq!(count(HeaderName::Via), SALVAGED_VIAS);
        for n in [
            HeaderName::To,
            HeaderName::From,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            assert_eq!(count(n), 1);
        }
    }

    #[test]
    fn valueless_tag_refused() {
        let e = p(&OPTIONS.replace(
            "From: <sip:caller@example.com>;tag=a",
            "From: <sip:caller@example.com>;tag",
        ))
        .unwrap_err();
        assert_eq!(e.what, "From tag without a value");
    }

    #[test]
    fn salvage_finds_echo_headers() {
        let bad = Bytes::from_static(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;;,;\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\r\n");
        let s = salvage_request(&bad).unwrap();
        assert_eq!(s.len(), 5);
    }

    /// RFC 4475: which torture messages must parse (the endpoint then gives
    /// the specific answer) and which the parser itself must refuse.
    #[test]
    fn rfc4475_parse_outcomes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
        let refused = [
            "badinv01", "quotbal", "lwsruri", "scalar02", "multi01", "insuf", "clerr", "ncl",
            "mcl01", "scalarlg", "bigcode", "ltgtruri", "lwsstart", "trws", "escruri", "regbadct",
            "badaspec", "baddn",
        ];
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "dat") {
                continue;
            }
            n += 1;
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let data = Bytes::from(std::fs::read(&path).unwrap());
            let r = parse(data, Framing::Datagram, &Limits::default());
            if refused.contains(&name.as_str()) {
                assert!(r.is_err(), "{name} must be refused, parsed as {r:?}");
            } else {
                assert!(r.is_ok(), "{name} must parse: {r:?}");
            }
        }
        assert_eq!(n, 49);
    }
}
