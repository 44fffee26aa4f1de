//! RFC 3261 §25 lexical rules and the structured header values the appliance
//! relies on: URIs (§19.1), name-addr / addr-spec with parameters (From, To,
//! Contact, Route), Via (§20.42), CSeq and token lists.
//!
//! Everything here works on one unfolded header value (`&[u8]`, line folding
//! already replaced by a space by the message parser) and returns typed values
//! that borrow nothing: sub-slices are `Bytes` views into the datagram, so
//! parsing copies no text. A value that does not match the grammar gives a
//! [`GrammarError`] naming what was wrong; the caller turns it into `400`.

use bytes::Bytes;

/// What was wrong with a structured header value. The message is a short,
/// fixed phrase used in the `400` reason and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(pub &'static str);

type R<T> = Result<T, GrammarError>;

fn err<T>(what: &'static str) -> R<T> {
    Err(GrammarError(what))
}

/// `token` characters (RFC 3261 §25.1) as a lookup table: the parser asks
/// this for nearly every byte of a message.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub fn is_token_char(c: u8) -> bool {
    TOKEN[usize::from(c)]
}

/// True when `s` is a non-empty `token`.
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_token_char(c))
}

/// `word` characters (Call-ID).
fn is_word_char(c: u8) -> bool {
    is_token_char(c)
        || matches!(
            c,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Trims spaces and tabs from both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_ws(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !is_ws(c)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Offset range of `sub` (a sub-slice of `whole`) inside `whole`.
fn offset_in(whole: &[u8], sub: &[u8]) -> std::ops::Range<usize> {
    let start = (sub.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + sub.len()
}

/// A `Bytes` view of `sub`, which must be a sub-slice of `owner`'s bytes.
pub(crate) fn view(owner: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        return Bytes::new();
    }
    owner.slice(offset_in(owner, sub))
}

/// Checks `%HH` escapes in a URI component and that every other byte is
/// allowed by `ok`.
fn check_escaped(s: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            if i + 2 >= s.len() {
                return false;
            }
            if !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if ok(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Calls `f` with each piece of `s` between top-level occurrences of `sep`
/// (separators inside quoted strings and angle brackets do not split).
/// Unbalanced quotes or brackets are an error — reported after the pieces
/// seen so far, so callers must treat any error as failing the whole value.
pub fn for_each_top<'a>(s: &'a [u8], sep: u8, mut f: impl FnMut(&'a [u8]) -> R<()>) -> R<()> {
    let mut start = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b'<' && !in_angle {
            in_angle = true;
        } else if c == b'>' && in_angle {
            in_angle = false;
        } else if c == sep && !in_angle {
            f(&s[start..i])?;
            start = i + 1;
        }
        i += 1;
    }
    if in_quote {
        return err("unterminated quoted string");
    }
    if in_angle {
        return err("unterminated '<'");
    }
    f(&s[start..])
}

/// URI scheme of a request-URI or name-addr URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other(Bytes),
}

/// A parsed URI. For `sip:`/`sips:` the parts are split out; other schemes
/// keep only their scheme and the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The whole URI text as received.
    pub raw: Bytes,
    pub scheme: Scheme,
    /// User part, still %-escaped (empty when absent).
    pub user: Bytes,
    pub host: Bytes,
    pub port: Option<u16>,
    /// `;name[=value]` URI parameters in order.
    pub params: Vec<(Bytes, Option<Bytes>)>,
    /// Raw `?headers` part without the `?` (empty when absent).
    pub headers: Bytes,
}

impl Uri {
    /// True for `sip:` and `sips:` URIs.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// Value of URI parameter `name` (case-insensitive): `Some(None)` for a
    /// parameter without value.
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        find_param(&self.params, name)
    }

    /// The user part with `%HH` escapes decoded (a `%00` stays a NUL byte:
    /// it does not end the string).
    pub fn user_decoded(&self) -> Vec<u8> {
        unescape(&self.user)
    }

    /// The decoded user part as text (invalid UTF-8 replaced): the form
    /// user ids are compared in.
    pub fn user_text(&self) -> String {
        String::from_utf8_lossy(&self.user_decoded()).into_owned()
    }
}

/// Decodes `%HH` escapes; invalid escapes are kept as they are.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn find_param<'a>(params: &'a [(Bytes, Option<Bytes>)], name: &str) -> Option<Option<&'a Bytes>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_ref())
}

fn is_scheme(s: &[u8]) -> bool {
    !s.is_empty()
        && s[0].is_ascii_alphabetic()
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Host name, IPv4 address or `[IPv6]` reference (liberal: `_` allowed in
/// labels, as deployed DNS names use it).
pub fn is_host(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    if h[0] == b'[' {
        return h.len() > 2
            && h[h.len() - 1] == b']'
            && std::str::from_utf8(&h[1..h.len() - 1])
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
    }
    h.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
        && h[0] != b'.'
        && h[0] != b'-'
}

fn parse_port(p: &[u8]) -> R<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return err("bad port");
    }
    let mut v: u32 = 0;
    for &c in p {
        v = v * 10 + u32::from(c - b'0');
    }
    u16::try_from(v).or(err("bad port"))
}

/// Splits `host[:port]`, handling `[v6]:port`.
fn split_hostport(hp: &[u8]) -> R<(&[u8], Option<u16>)> {
    let (host, port) = if hp.first() == Some(&b'[') {
        match hp.iter().position(|&c| c == b']') {
            Some(e) => {
                let rest = &hp[e + 1..];
                match rest.split_first() {
                    None => (&hp[..=e], None),
                    Some((b':', p)) => (&hp[..=e], Some(parse_port(p)?)),
                    Some(_) => return err("bad host"),
                }
            }
            None => return err("bad host"),
        }
    } else {
        match hp.iter().position(|&c| c == b':') {
            Some(c) => (&hp[..c], Some(parse_port(&hp[c + 1..])?)),
            None => (hp, None),
        }
    };
    if !is_host(host) {
        return err("bad host");
    }
    Ok((host, port))
}

fn is_param_char(c: u8) -> bool {
    is_unreserved(c) || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_user_char(c: u8) -> bool {
    is_unreserved(c) || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(c: u8) -> bool {
    is_unreserved(c) || matches!(c, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_header_char(c: u8) -> bool {
    is_unreserved(c)
        || matches!(
            c,
            b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        )
}

/// Parses a URI (`raw` must be a view of exactly the URI text).
/// `allow_headers`: `?headers` are not allowed in a Request-URI (§19.1.1).
pub fn parse_uri(raw: Bytes, allow_headers: bool) -> R<Uri> {
    let s: &[u8] = &raw;
    let colon = match s.iter().position(|&c| c == b':') {
        Some(c) => c,
        None => return err("URI without scheme"),
    };
    let scheme_txt = &s[..colon];
    if !is_scheme(scheme_txt) {
        return err("bad URI scheme");
    }
    if s.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return err("whitespace or control character in URI");
    }
    let scheme = if scheme_txt.eq_ignore_ascii_case(b"sip") {
        Scheme::Sip
    } else if scheme_txt.eq_ignore_ascii_case(b"sips") {
        Scheme::Sips
    } else if scheme_txt.eq_ignore_ascii_case(b"tel") {
        Scheme::Tel
    } else {
        Scheme::Other(raw.slice(..colon))
    };
    let mut uri = Uri {
        raw: raw.clone(),
        scheme,
        user: Bytes::new(),
        host: Bytes::new(),
        port: None,
        params: Vec::new(),
        headers: Bytes::new(),
    };
    let rest = &s[colon + 1..];
    if rest.is_empty() {
        return err("empty URI");
    }
    if !uri.is_sip() {
        if matches!(uri.scheme, Scheme::Tel) {
            // tel: number *(;param): keep the number as the "user".
            let end = rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
            uri.user = view(&raw, &rest[..end]);
            uri.params = parse_uri_params(&raw, &rest[end..])?;
        }
        return Ok(uri);
    }
    // userinfo: up to the first '@' (no unescaped '@' is allowed before it).
    let (userinfo, after) = match rest.iter().position(|&c| c == b'@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if let Some(ui) = userinfo {
        let (user, password) = match ui.iter().position(|&c| c == b':') {
            Some(c) => (&ui[..c], Some(&ui[c + 1..])),
            None => (ui, None),
        };
        if user.is_empty() || !check_escaped(user, is_user_char) {
            return err("bad user part in URI");
        }
        if let Some(p) = password
            && !check_escaped(p, is_password_char)
        {
            return err("bad password in URI");
        }
        uri.user = view(&raw, user);
    }
    let (before_headers, headers) = match after.iter().position(|&c| c == b'?') {
        Some(q) => (&after[..q], Some(&after[q + 1..])),
        None => (after, None),
    };
    if let Some(h) = headers {
        if !allow_headers {
            return err("headers not allowed in Request-URI");
        }
        if h.is_empty() || !check_escaped(h, is_header_char) {
            return err("bad URI headers");
        }
        uri.headers = view(&raw, h);
    }
    let semi = before_headers
        .iter()
        .position(|&c| c == b';')
        .unwrap_or(before_headers.len());
    let (host, port) = split_hostport(&before_headers[..semi])?;
    uri.host = view(&raw, host);
    uri.port = port;
    uri.params = parse_uri_params(&raw, &before_headers[semi..])?;
    Ok(uri)
}

/// Parses `;name[=value]...` URI parameters (`s` starts with `;` or is empty).
fn parse_uri_params(raw: &Bytes, s: &[u8]) -> R<Vec<(Bytes, Option<Bytes>)>> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for p in s[1..].split(|&c| c == b';') {
        let (name, value) = match p.iter().position(|&c| c == b'=') {
            Some(e) => (&p[..e], Some(&p[e + 1..])),
            None => (p, None),
        };
        if name.is_empty() || !check_escaped(name, is_param_char) {
            return err("bad URI parameter");
        }
        if let Some(v) = value
            && (v.is_empty() || !check_escaped(v, is_param_char))
        {
            return err("bad URI parameter value");
        }
        out.push((view(raw, name), value.map(|v| view(raw, v))));
    }
    Ok(out)
}

/// Parses header parameters `*( SEMI generic-param )` where `s` is what
/// follows the main value (it starts with `;` after optional LWS, or is
/// blank). `generic-param = token [ EQUAL gen-value ]`, gen-value = token /
/// host / quoted-string, LWS allowed around `;` and `=`.
pub fn parse_header_params(raw: &Bytes, s: &[u8]) -> R<Vec<(Bytes, Option<Bytes>)>> {
    let mut out = Vec::new();
    let s = trim(s);
    if s.is_empty() {
        return Ok(out);
    }
    if s[0] != b';' {
        return err("junk after value");
    }
    for_each_top(&s[1..], b';', |p| {
        let (name, value) = match p.iter().position(|&c| c == b'=') {
            Some(e) => (trim(&p[..e]), Some(trim(&p[e + 1..]))),
            None => (trim(p), None),
        };
        if !is_token(name) {
            return err("empty or bad parameter name");
        }
        if let Some(v) = value {
            let ok = if v.first() == Some(&b'"') {
                quoted_string_len(v) == Some(v.len())
            } else {
                !v.is_empty()
                    && v.iter()
                        .all(|&c| is_token_char(c) || matches!(c, b':' | b'[' | b']'))
            };
            if !ok {
                return err("bad parameter value");
            }
        }
        out.push((view(raw, name), value.map(|v| view(raw, v))));
        Ok(())
    })?;
    Ok(out)
}

/// Length of the quoted string at the start of `s` (including both quotes),
/// or `None` when it does not close. `\` escapes any byte but CR/LF.
pub fn quoted_string_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => {
                if i + 1 >= s.len() || matches!(s[i + 1], b'\r' | b'\n') {
                    return None;
                }
                i += 2;
            }
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// `name-addr` or `addr-spec` with header parameters: From, To, Contact,
/// Route, Record-Route, Refer-To (§20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as received (quotes kept), empty when absent.
    pub display: Bytes,
    pub uri: Uri,
    /// Header parameters (e.g. `tag`, `expires`, `q`) in order.
    pub params: Vec<(Bytes, Option<Bytes>)>,
}

impl NameAddr {
    /// Header parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter value.
    pub fn tag(&self) -> Option<&Bytes> {
        self.param("tag").flatten()
    }
}

/// Parses one name-addr / addr-spec with parameters. `raw` owns `s`.
pub fn parse_name_addr(raw: &Bytes, s: &[u8]) -> R<NameAddr> {
    let s = trim(s);
    if s.is_empty() {
        return err("empty address");
    }
    // Display name: quoted string, or tokens separated by LWS, then '<'.
    let mut i = 0;
    let mut display: &[u8] = &[];
    if s[0] == b'"' {
        let Some(n) = quoted_string_len(s) else {
            return err("unterminated quoted display name");
        };
        display = &s[..n];
        i = n;
        while i < s.len() && is_ws(s[i]) {
            i += 1;
        }
        if s.get(i) != Some(&b'<') {
            return err("quoted display name without <URI>");
        }
    } else if let Some(lt) = s.iter().position(|&c| c == b'<') {
        let dn = trim(&s[..lt]);
        if !dn
            .split(|&c| is_ws(c))
            .filter(|w| !w.is_empty())
            .all(is_token)
        {
            return err("display name must be tokens or a quoted string");
        }
        display = dn;
        i = lt;
    }
    if s.get(i) == Some(&b'<') {
        let rest = &s[i + 1..];
        let Some(gt) = rest.iter().position(|&c| c == b'>') else {
            return err("missing '>'");
        };
        let inner = &rest[..gt];
        if inner.iter().any(|&c| is_ws(c)) {
            return err("whitespace inside <URI>");
        }
        let uri = parse_uri(view(raw, inner), true)?;
        let params = parse_header_params(raw, &rest[gt + 1..])?;
        return Ok(NameAddr {
            display: view(raw, display),
            uri,
            params,
        });
    }
    // addr-spec: the URI ends at the first ';' (its parameters are header
    // parameters) and may not contain ',', '?' or ';' (§20).
    let end = s.iter().position(|&c| c == b';').unwrap_or(s.len());
    let uri_txt = trim(&s[..end]);
    if uri_txt
        .iter()
        .any(|&c| matches!(c, b'?' | b',' | b' ' | b'\t'))
    {
        return err("URI with '?' or ',' must be enclosed in <>");
    }
    let uri = parse_uri(view(raw, uri_txt), false)?;
    let params = parse_header_params(raw, &s[end..])?;
    Ok(NameAddr {
        display: Bytes::new(),
        uri,
        params,
    })
}

/// One Via entry (§20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The entry's text as received (one element of a possibly comma-joined
    /// header), used when echoing it in a response.
    pub raw: Bytes,
    /// `SIP/2.0` normally; other versions are kept to answer 505.
    pub protocol: Bytes,
    /// Transport token, upper-cased in comparisons (`UDP`, `TCP`, ...).
    pub transport: Bytes,
    pub host: Bytes,
    pub port: Option<u16>,
    pub params: Vec<(Bytes, Option<Bytes>)>,
}

impl Via {
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        find_param(&self.params, name)
    }

    /// The `branch` parameter value.
    pub fn branch(&self) -> Option<&Bytes> {
        self.param("branch").flatten()
    }

    /// `host[:port]` as it appears (the sent-by).
    pub fn sent_by(&self) -> (&[u8], Option<u16>) {
        (&self.host, self.port)
    }
}

/// Parses a Via header value, which may hold several comma-separated entries.
pub fn parse_vias(raw: &Bytes, s: &[u8], out: &mut Vec<Via>) -> R<()> {
    for_each_top(s, b',', |part| {
        let part = trim(part);
        if part.is_empty() {
            return err("empty Via entry");
        }
        // sent-protocol = name SLASH version SLASH transport, SWS around '/'.
        let mut pieces = [&[][..]; 3];
        let mut rest = part;
        for (k, piece) in pieces.iter_mut().enumerate() {
            let rest_t = trim(rest);
            let end = rest_t
                .iter()
                .position(|&c| !is_token_char(c))
                .unwrap_or(rest_t.len());
            *piece = &rest_t[..end];
            if piece.is_empty() {
                return err("bad Via sent-protocol");
            }
            rest = trim(&rest_t[end..]);
            if k < 2 {
                match rest.split_first() {
                    Some((b'/', r)) => rest = r,
                    _ => return err("bad Via sent-protocol"),
                }
            }
        }
        // rest = LWS sent-by *(; params)
        let semi = rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
        let sent_by = trim(&rest[..semi]);
        let (host, port) = split_hostport(sent_by).map_err(|_| GrammarError("bad Via sent-by"))?;
        let params = parse_header_params(raw, &rest[semi..])?;
        let protocol_end = offset_in(raw, pieces[1]).end;
        let protocol_start = offset_in(raw, pieces[0]).start;
        out.push(Via {
            raw: view(raw, part),
            protocol: raw.slice(protocol_start..protocol_end),
            transport: view(raw, pieces[2]),
            host: view(raw, host),
            port,
            params,
        });
        Ok(())
    })
}

/// Parses a decimal number that must fit `max`; leading zeros allowed.
pub fn parse_decimal(s: &[u8], max: u64) -> R<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return err("not a number");
    }
    let mut v: u64 = 0;
    for &c in s {
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
        {
            Some(v) => v,
            None => return err("number too large"),
        };
    }
    if v > max {
        return err("number too large");
    }
    Ok(v)
}

/// Parses a delta-seconds value, saturating at 2^32-1 as §20.19 allows.
pub fn parse_delta_seconds(s: &[u8]) -> R<u32> {
    let s = trim(s);
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return err("bad delta-seconds");
    }
    let significant = s
        .iter()
        .position(|&c| c != b'0')
        .map_or(&s[s.len()..], |p| &s[p..]);
    if significant.len() > 10 {
        return Ok(u32::MAX);
    }
    Ok(u32::try_from(parse_decimal(significant.max(b"0"), u64::MAX)?).unwrap_or(u32::MAX))
}

/// Parses a Call-ID value: `word [ "@" word ]`.
pub fn is_call_id(s: &[u8]) -> bool {
    let mut parts = s.splitn(2, |&c| c == b'@');
    let a = parts.next().unwrap_or(&[]);
    let ok = |w: &[u8]| !w.is_empty() && w.iter().all(|&c| is_word_char(c));
    ok(a) && parts.next().is_none_or(ok)
}

/// Parses a comma-separated list of tokens (Require, Supported, Allow...).
/// An empty value is an empty list.
pub fn parse_token_list(raw: &Bytes, s: &[u8], out: &mut Vec<Bytes>) -> R<()> {
    let s = trim(s);
    if s.is_empty() {
        return Ok(());
    }
    for t in s.split(|&c| c == b',') {
        let t = trim(t);
        if !is_token(t) {
            return err("bad token in list");
        }
        out.push(view(raw, t));
    }
    Ok(())
}

/// `type/subtype` of a Content-Type or Accept entry, lower-cased compare
/// helpers; parameters are checked but not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: Bytes,
    pub subtype: Bytes,
}

impl MediaType {
    /// True when this type is `t/s` (case-insensitive); `*` matches anything.
    pub fn matches(&self, t: &str, s: &str) -> bool {
        (self.kind.as_ref() == b"*" || self.kind.eq_ignore_ascii_case(t.as_bytes()))
            && (self.subtype.as_ref() == b"*" || self.subtype.eq_ignore_ascii_case(s.as_bytes()))
    }
}

/// Parses `type/subtype *(; param)`.
pub fn parse_media_type(raw: &Bytes, s: &[u8]) -> R<MediaType> {
    let s = trim(s);
    let semi = s.iter().position(|&c| c == b';').unwrap_or(s.len());
    let main = trim(&s[..semi]);
    let Some(slash) = main.iter().position(|&c| c == b'/') else {
        return err("bad media type");
    };
    let (t, st) = (trim(&main[..slash]), trim(&main[slash + 1..]));
    if !is_token(t) || !is_token(st) {
        return err("bad media type");
    }
    parse_header_params(raw, &s[semi..])?;
    Ok(MediaType {
        kind: view(raw, t),
        subtype: view(raw, st),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn uri_sip_parts() {
        let u = parse_uri(
            b("sip:alice:pw@example.com:5070;transport=tcp;lr?subject=x"),
            true,
        )
        .unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(&u.user[..], b"alice");
        assert_eq!(&u.host[..], b"example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some(Some(&b("tcp"))));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(&u.headers[..], b"subject=x");
    }

    #[test]
    fn uri_request_uri_refuses_headers() {
        assert!(parse_uri(b("sip:user@example.com?Route=%3Csip:example.com%3E"), false).is_err());
    }

    #[test]
    fn uri_ipv6_and_bad_escapes() {
        let u = parse_uri(b("sip:[2001:db8::10]:5060"), false).unwrap();
        assert_eq!(&u.host[..], b"[2001:db8::10]");
        assert!(parse_uri(b("sip:a%zz@example.com"), false).is_err());
        assert!(parse_uri(b("sip:a%4@example.com"), false).is_err());
        assert!(parse_uri(b("sip:"), false).is_err());
        assert!(parse_uri(b("<sip:x@y>"), false).is_err());
    }

    #[test]
    fn unescape_keeps_nul() {
        assert_eq!(unescape(b"null-%00-null"), b"null-\0-null");
        assert_eq!(unescape(b"%75se%72"), b"user");
        assert_eq!(unescape(b"100%"), b"100%");
    }

    #[test]
    fn name_addr_forms() {
        let raw = b("\"A B\" <sip:a@b.c>;tag=1");
        let na = parse_name_addr(&raw, &raw).unwrap();
        assert_eq!(&na.display[..], b"\"A B\"");
        assert_eq!(na.tag(), Some(&b("1")));
        let raw = b("caller<sip:caller@example.com>;tag=323");
        assert!(parse_name_addr(&raw, &raw).is_ok());
        let raw = b("sip:+1972@gw1.example.net;unknownparam");
        let na = parse_name_addr(&raw, &raw).unwrap();
        assert_eq!(na.param("unknownparam"), Some(None));
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        ] {
            let raw = b(bad);
            assert!(parse_name_addr(&raw, &raw).is_err(), "{bad}");
        }
    }

    #[test]
    fn via_lws_and_lists() {
        let raw = b(
            "SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        );
        let mut v = Vec::new();
        parse_vias(&raw, &raw, &mut v).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(&v[0].transport[..], b"TCP");
        assert_eq!(v[0].branch(), Some(&b("z9hG4bK9ikj8")));
        assert_eq!(&v[1].host[..], b"192.168.255.111");
        let raw = b("SIP/2.0/UDP 192.0.2.15;;,;,,");
        assert!(parse_vias(&raw, &raw, &mut Vec::new()).is_err());
    }

    #[test]
    fn delta_seconds_saturate() {
        assert_eq!(parse_delta_seconds(b"0068").unwrap(), 68);
        assert_eq!(
            parse_delta_seconds(b"100000000000000000000000").unwrap(),
            u32::MAX
        );
        assert!(parse_delta_seconds(b"-1").is_err());
    }

    #[test]
    fn call_id_words() {
        assert!(is_call_id(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert!(!is_call_id(b"a b"));
        assert!(!is_call_id(b""));
    }
}
