//! SDP anchoring: offer/answer (RFC 3264) negotiated per leg, with the
//! appliance's own address and port in every description it sends.
//!
//! A leg's offer is rewritten for the other leg: the first audio stream
//! (`m=audio`, RTP/AVP or RTP/AVPF) points at the appliance's port of that
//! leg, the codecs stay in the offerer's order with the offerer's payload
//! type numbers (so relayed packets keep their payload type), and the
//! codecs the appliance can transcode (PCMU, PCMA, Opus) and
//! telephone-event are appended when missing, so a callee that shares no
//! codec with the caller can still answer. Other streams (video, T.38, a
//! second audio) are offered with port 0 (RFC 3264 §5.1: not to be used),
//! and so are secure profiles (RTP/SAVP): the appliance does not terminate
//! SRTP.
//!
//! The answer is rewritten back: when the codec the answerer chose is one
//! the offerer offered, both legs speak it and packets are relayed as they
//! are; otherwise the offerer gets an answer naming its own first codec the
//! appliance can transcode, and the legs are bridged through decode and
//! encode.
//!
//! Attributes that describe a transport the appliance replaces (ICE, DTLS,
//! SDES keys, `a=rtcp`, `a=rtcp-mux`, `a=ssrc`) are dropped from the
//! anchored stream: RTCP goes to the RTP port + 1 (RFC 3550 §11).
//!
//! Pure functions over [`SessionDescription`]: the media engine keeps the
//! state (which leg offered what) and the ports.

use std::net::{IpAddr, SocketAddr};

use crate::sdp::{Attribute, Direction, MediaDescription, SessionDescription};

/// Attributes of the anchored stream that name the peer's own transport.
const DROPPED: &[&str] = &[
    "rtcp",
    "rtcp-mux",
    "rtcp-rsize",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "fingerprint",
    "setup",
    "connection",
    "crypto",
    "ssrc",
    "ssrc-group",
    "msid",
    "mid",
    "label",
];

/// A codec the appliance can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Known {
    Pcmu,
    Pcma,
    Opus,
    TelephoneEvent,
}

impl Known {
    /// RTP clock rate (Opus is always 48 kHz on the wire, RFC 7587 §4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Known::Pcmu | Known::Pcma | Known::TelephoneEvent => 8000,
            Known::Opus => 48000,
        }
    }

    fn rtpmap(self) -> &'static str {
        match self {
            Known::Pcmu => "PCMU/8000",
            Known::Pcma => "PCMA/8000",
            Known::Opus => "opus/48000/2",
            Known::TelephoneEvent => "telephone-event/8000",
        }
    }

    fn static_pt(self) -> Option<u8> {
        match self {
            Known::Pcmu => Some(0),
            Known::Pcma => Some(8),
            _ => None,
        }
    }
}

/// One payload format of an SDP media line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    /// Encoding name, lower case.
    pub name: String,
    pub clock_rate: u32,
    pub channels: u32,
    /// `a=fmtp` parameters.
    pub fmtp: Option<String>,
}

impl Codec {
    /// Which of ours it is, if any.
    pub fn known(&self) -> Option<Known> {
        match (self.name.as_str(), self.clock_rate) {
            ("pcmu", 8000) => Some(Known::Pcmu),
            ("pcma", 8000) => Some(Known::Pcma),
            ("opus", 48000) => Some(Known::Opus),
            ("telephone-event", 8000) => Some(Known::TelephoneEvent),
            _ => None,
        }
    }

    /// Same encoding (name, clock rate and channels).
    pub fn same_as(&self, other: &Codec) -> bool {
        self.name == other.name
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    pub fn is_event(&self) -> bool {
        self.name == "telephone-event"
    }

    fn of_known(k: Known, pt: u8) -> Codec {
        let (name, clock_rate, channels) = match k {
            Known::Pcmu => ("pcmu", 8000, 1),
            Known::Pcma => ("pcma", 8000, 1),
            Known::Opus => ("opus", 48000, 2),
            Known::TelephoneEvent => ("telephone-event", 8000, 1),
        };
        Codec {
            pt,
            name: name.to_owned(),
            clock_rate,
            channels,
            fmtp: match k {
                Known::TelephoneEvent => Some("0-16".to_owned()),
                Known::Opus => Some("useinbandfec=1".to_owned()),
                _ => None,
            },
        }
    }
}

/// What one leg's description says about its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Where it receives RTP (None: rejected, or the address is 0.0.0.0).
    pub rtp: Option<SocketAddr>,
    /// Where it receives RTCP.
    pub rtcp: Option<SocketAddr>,
    /// Its formats, in its order of preference.
    pub codecs: Vec<Codec>,
    pub direction: Direction,
    /// `a=ptime` in ms.
    pub ptime: Option<u32>,
}

impl Remote {
    /// First voice codec (not telephone-event).
    pub fn voice(&self) -> Option<&Codec> {
        self.codecs.iter().find(|c| !c.is_event())
    }

    /// Its telephone-event format at 8 kHz.
    pub fn events(&self) -> Option<&Codec> {
        self.codecs
            .iter()
            .find(|c| c.known() == Some(Known::TelephoneEvent))
    }

    /// The format it lists that is the same encoding as `c`.
    pub fn find(&self, c: &Codec) -> Option<&Codec> {
        self.codecs.iter().find(|o| o.same_as(c))
    }

    /// Whether it sends audio to us (not on hold towards us).
    pub fn sends(&self) -> bool {
        self.rtp.is_some() && self.direction.sends()
    }
}

/// Problems with a description the appliance must anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("no audio stream over RTP/AVP")]
    NoAudio,
}

/// Whether `m` is a stream the appliance anchors (plain RTP audio).
fn anchorable(m: &MediaDescription) -> bool {
    m.media.eq_ignore_ascii_case("audio")
        && (m.proto.eq_ignore_ascii_case("RTP/AVP") || m.proto.eq_ignore_ascii_case("RTP/AVPF"))
}

/// Index of the stream to anchor: the first plain RTP audio line (a
/// rejected one too, so an answer can reject it in place).
pub fn audio_index(sdp: &SessionDescription) -> Option<usize> {
    sdp.media.iter().position(anchorable)
}

/// Reads the anchored stream of `sdp`.
pub fn describe(sdp: &SessionDescription) -> Result<(usize, Remote), AnchorError> {
    let idx = audio_index(sdp).ok_or(AnchorError::NoAudio)?;
    let m = &sdp.media[idx];
    let ip = m.connection_address(sdp);
    let rtp = match ip {
        Some(ip) if m.port != 0 && !ip.is_unspecified() => Some(SocketAddr::new(ip, m.port)),
        _ => None,
    };
    let rtcp = rtp.map(|a| {
        let port = m
            .attribute("rtcp")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.split(' ').next()?.parse::<u16>().ok())
            .unwrap_or(a.port().wrapping_add(1));
        SocketAddr::new(a.ip(), port)
    });
    let codecs = m
        .formats
        .iter()
        .filter_map(|f| {
            let pt: u8 = f.parse().ok().filter(|p| *p < 128)?;
            let map = m.rtpmap(f)?;
            Some(Codec {
                pt,
                name: map.encoding.to_ascii_lowercase(),
                clock_rate: map.clock_rate,
                channels: map.channels(),
                fmtp: m.fmtp(f).map(str::to_owned),
            })
        })
        .collect();
    let ptime = m
        .attribute("ptime")
        .and_then(|a| a.value.as_deref())
        .and_then(|v| v.trim().parse().ok());
    Ok((
        idx,
        Remote {
            rtp,
            rtcp,
            codecs,
            direction: m.direction(sdp),
            ptime,
        },
    ))
}

/// Our side of one leg: the address and port it sends to, and our origin
/// line (RFC 3264 §5: one session id per leg, the version bumped whenever
/// what we send changes).
#[derive(Debug, Clone)]
pub struct LocalSide {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub version: u64,
    /// What we last sent on this leg (to know whether to bump the version).
    pub last: Option<String>,
}

impl LocalSide {
    pub fn new(ip: IpAddr, port: u16, session_id: u64) -> LocalSide {
        LocalSide {
            ip,
            port,
            session_id,
            version: 1,
            last: None,
        }
    }

    /// Stamps our origin and connection on `sdp`, bumping the version when
    /// the result differs from what this leg last got, and returns the
    /// bytes to send.
    fn finish(&mut self, mut sdp: SessionDescription) -> Vec<u8> {
        sdp.origin.username = "switchboard".to_owned();
        sdp.origin.session_id = self.session_id;
        sdp.origin.net_type = "IN".to_owned();
        sdp.origin.addr_type = if self.ip.is_ipv4() { "IP4" } else { "IP6" }.to_owned();
        sdp.origin.address = self.ip.to_string();
        sdp.origin.session_version = self.version;
        let text = sdp.to_string();
        if self.last.as_ref().is_some_and(|l| *l != text) {
            self.version += 1;
            sdp.origin.session_version = self.version;
            let text = sdp.to_string();
            self.last = Some(text.clone());
            return text.into_bytes();
        }
        self.last = Some(text.clone());
        text.into_bytes()
    }
}

/// Rewrites `m` (the anchored stream) to point at `local` with `codecs`.
fn anchor_stream(
    sdp: &mut SessionDescription,
    idx: usize,
    ip: IpAddr,
    port: u16,
    codecs: &[Codec],
) {
    // Our address where the description had one: session level, media
    // level, or both.
    let session_level = sdp.connection.is_some();
    if session_level {
        sdp.connection = Some(crate::sdp::Connection::new(ip));
    }
    let m = &mut sdp.media[idx];
    m.port = port;
    m.port_count = None;
    if !m.connections.is_empty() || !session_level {
        m.connections = vec![crate::sdp::Connection::new(ip)];
    }
    m.attributes
        .retain(|a| !DROPPED.contains(&a.name.as_str()) && a.name != "rtpmap" && a.name != "fmtp");
    // rtpmap/fmtp go first, in format order, before the other attributes.
    let mut maps = Vec::with_capacity(codecs.len() * 2);
    for c in codecs {
        let ch = if c.channels > 1 {
            format!("/{}", c.channels)
        } else {
            String::new()
        };
        let name = match c.known() {
            Some(k) => k.rtpmap().split('/').next().unwrap_or_default().to_owned(),
            None => c.name.clone(),
        };
        maps.push(Attribute::new(
            "rtpmap",
            &format!("{} {}/{}{}", c.pt, name, c.clock_rate, ch),
        ));
        if let Some(f) = &c.fmtp {
            maps.push(Attribute::new("fmtp", &format!("{} {}", c.pt, f)));
        }
    }
    maps.append(&mut m.attributes);
    m.attributes = maps;
    m.formats = codecs.iter().map(|c| c.pt.to_string()).collect();
}

/// Disables every stream but the anchored one (port 0).
fn disable_others(sdp: &mut SessionDescription, keep: usize) {
    for (i, m) in sdp.media.iter_mut().enumerate() {
        if i != keep {
            m.port = 0;
            m.port_count = None;
        }
    }
}

/// A dynamic payload type not used by `codecs` (RFC 3551 §3: 96–127).
fn free_dynamic_pt(codecs: &[Codec]) -> Option<u8> {
    (96..=127u8).find(|pt| codecs.iter().all(|c| c.pt != *pt))
}

/// The offer to send on the other leg, given the offerer's `offer`: its
/// codecs plus the ones we can transcode and telephone-event. Returns the
/// bytes and the formats we offered (what the other leg may send us).
pub fn offer(
    offer: &SessionDescription,
    local: &mut LocalSide,
    transcode: bool,
) -> Result<(Vec<u8>, Vec<Codec>), AnchorError> {
    let (idx, remote) = describe(offer)?;
    let mut codecs = remote.codecs.clone();
    let extras: &[Known] = if transcode {
        &[Known::Pcmu, Known::Pcma, Known::Opus, Known::TelephoneEvent]
    } else {
        &[Known::TelephoneEvent]
    };
    for &k in extras {
        if codecs.iter().any(|c| c.known() == Some(k)) {
            continue;
        }
        let taken = |pt: u8| codecs.iter().any(|c| c.pt == pt);
        let pt = match k.static_pt() {
            Some(pt) if !taken(pt) => Some(pt),
            _ => free_dynamic_pt(&codecs),
        };
        if let Some(pt) = pt {
            codecs.push(Codec::of_known(k, pt));
        }
    }
    let mut sdp = offer.clone();
    disable_others(&mut sdp, idx);
    let port = if sdp.media[idx].port == 0 {
        0
    } else {
        local.port
    };
    anchor_stream(&mut sdp, idx, local.ip, port, &codecs);
    Ok((local.finish(sdp), codecs))
}

/// How the two legs' audio is joined after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The offerer's voice codec (its payload type).
    pub offerer: Option<Codec>,
    /// The answerer's voice codec (the payload type it sends).
    pub answerer: Option<Codec>,
    /// telephone-event on each side.
    pub offerer_events: Option<Codec>,
    pub answerer_events: Option<Codec>,
}

impl Agreement {
    /// Both speak the same codec: relay without decoding.
    pub fn relays(&self) -> bool {
        match (&self.offerer, &self.answerer) {
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        }
    }
}

/// The answer to send back to the offerer, given the offerer's `offer`
/// (as it sent it) and the other leg's `answer` to our rewritten offer.
pub fn answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
    local: &mut LocalSide,
) -> Result<(Vec<u8>, Agreement), AnchorError> {
    let (o_idx, offered) = describe(offer)?;
    let (a_idx, answered) = describe(answer)?;
    let chosen = answered.voice().cloned();
    let a_events = answered.events().cloned();
    let o_events = offered.events().cloned().filter(|_| a_events.is_some());
    // The answerer's choice, if the offerer offered it too; else the
    // offerer's first codec we can transcode to it.
    let mine = chosen.as_ref().and_then(|c| {
        offered.find(c).cloned().or_else(|| {
            offered
                .codecs
                .iter()
                .find(|o| o.known().is_some_and(|k| k != Known::TelephoneEvent))
                .cloned()
        })
    });
    let mut codecs: Vec<Codec> = mine.iter().cloned().collect();
    if let Some(e) = offered.events().filter(|_| mine.is_some()) {
        codecs.push(e.clone());
    }
    let mut sdp = answer.clone();
    // The answer has as many m= lines as the offer, in its order (§6).
    sdp.media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == o_idx {
                sdp.media.get(a_idx).cloned().unwrap_or_else(|| m.clone())
            } else {
                let mut r = m.clone();
                r.port = 0;
                r
            }
        })
        .collect();
    if mine.is_none() || sdp.media[o_idx].port == 0 {
        let m = &mut sdp.media[o_idx];
        // Nothing in common, or the answerer refused: reject the stream,
        // keeping one format (§6).
        m.formats.truncate(1);
        m.port = 0;
    } else {
        anchor_stream(&mut sdp, o_idx, local.ip, local.port, &codecs);
    }
    let agreement = Agreement {
        offerer: mine,
        answerer: chosen,
        offerer_events: o_events,
        answerer_events: a_events,
    };
    Ok((local.finish(sdp), agreement))
}

/// What [`answer_locally`] agreed with an offerer the appliance answers
/// itself (an IVR, a queue): the codec and events it speaks, and the offer
/// narrowed to them, which later stands for the offerer when an agent's
/// phone is offered the call.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    pub sdp: Vec<u8>,
    pub voice: Option<Codec>,
    pub events: Option<Codec>,
    pub narrowed: SessionDescription,
}

/// The appliance answers `offer` itself: its first codec we can decode and
/// encode, plus its telephone-event, on the anchored stream; the other
/// streams rejected. With no codec of ours the stream is rejected (§6).
pub fn answer_locally(
    offer: &SessionDescription,
    local: &mut LocalSide,
) -> Result<LocalAnswer, AnchorError> {
    let (idx, offered) = describe(offer)?;
    let voice = offered
        .codecs
        .iter()
        .find(|c| c.known().is_some_and(|k| k != Known::TelephoneEvent))
        .cloned();
    let events = offered.events().cloned().filter(|_| voice.is_some());
    let codecs: Vec<Codec> = voice.iter().chain(events.iter()).cloned().collect();
    let mut narrowed = offer.clone();
    {
        let m = &mut narrowed.media[idx];
        m.formats
            .retain(|f| codecs.iter().any(|c| c.pt.to_string() == *f));
        m.attributes.retain(|a| {
            !matches!(a.name.as_str(), "rtpmap" | "fmtp")
                || a.value.as_deref().is_some_and(|v| {
                    let pt = v.split_whitespace().next().unwrap_or_default();
                    codecs.iter().any(|c| c.pt.to_string() == pt)
                })
        });
    }
    let mut sdp = offer.clone();
    disable_others(&mut sdp, idx);
    let direction = offered.direction.reverse();
    if voice.is_none() || sdp.media[idx].port == 0 {
        let m = &mut sdp.media[idx];
        m.formats.truncate(1);
        m.port = 0;
    } else {
        anchor_stream(&mut sdp, idx, local.ip, local.port, &codecs);
        sdp.media[idx].set_direction(direction);
    }
    sdp.attributes
        .retain(|a| Direction::from_attribute(&a.name).is_none());
    Ok(LocalAnswer {
        sdp: local.finish(sdp),
        voice,
        events,
        narrowed,
    })
}

/// The appliance's own offer (a call it places: a queue callback): PCMU,
/// PCMA and telephone-event on our port.
pub fn offer_locally(local: &mut LocalSide) -> Vec<u8> {
    let ip4 = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    let text = format!(
        "v=0\r\no=switchboard 0 0 IN {ip4} {ip}\r\ns=-\r\nc=IN {ip4} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = local.ip,
        port = local.port
    );
    match SessionDescription::parse(text.as_bytes()) {
        Ok(sdp) => local.finish(sdp),
        // invariant: the text above is a valid description.
        Err(_) => text.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(text: &str) -> SessionDescription {
        SessionDescription::parse(text.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    const CALLER: &str = "v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 0 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp:49171
a=candidate:1 1 UDP 1 192.0.2.10 49170 typ host
m=video 51372 RTP/AVP 31
";

    fn local(port: u16) -> LocalSide {
        LocalSide::new("127.0.0.1".parse().unwrap(), port, 42)
    }

    #[test]
    fn offer_points_at_our_port_and_keeps_offerer_payload_types() {
        let mut l = local(20002);
        let (bytes, codecs) = offer(&sdp(CALLER), &mut l, true).unwrap();
        let out = SessionDescription::parse(&bytes).unwrap();
        let (idx, r) = describe(&out).unwrap();
        assert_eq!(idx, 0);
        assert_eq!(r.rtp, Some("127.0.0.1:20002".parse().unwrap()));
        assert_eq!(r.rtcp, Some("127.0.0.1:20003".parse().unwrap()));
        let names: Vec<_> = r.codecs.iter().map(|c| (c.pt, c.name.as_str())).collect();
        assert_eq!(
            names,
            [
                (0, "pcmu"),
                (101, "telephone-event"),
                (8, "pcma"),
                (96, "opus")
            ]
        );
        assert_eq!(codecs.len(), 4);
        assert_eq!(out.media[1].port, 0, "video is not anchored");
        let m = &out.media[0];
        assert!(m.attribute("candidate").is_none());
        assert!(m.attribute("rtcp").is_none());
        assert_eq!(
            m.attribute("ptime").and_then(|a| a.value.as_deref()),
            Some("20")
        );
        assert_eq!(out.origin.username, "switchboard");
        assert_eq!(out.origin.address, "127.0.0.1");
        assert_eq!(out.connection.as_ref().unwrap().address, "127.0.0.1");
    }

    #[test]
    fn offer_without_transcoding_adds_only_telephone_event() {
        let caller = CALLER
            .replace(" 0 101", " 0")
            .replace("a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n", "");
        let (_, codecs) = offer(&sdp(&caller), &mut local(20002), false).unwrap();
        let names: Vec<_> = codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pcmu", "telephone-event"]);
        assert_eq!(codecs[1].pt, 96);
    }

    #[test]
    fn origin_version_grows_only_when_the_description_changes() {
        let mut l = local(20002);
        let first = offer(&sdp(CALLER), &mut l, true).unwrap().0;
        let again = offer(&sdp(CALLER), &mut l, true).unwrap().0;
        assert_eq!(first, again);
        let hold = CALLER.replace("a=sendrecv", "a=sendonly");
        let held = SessionDescription::parse(&offer(&sdp(&hold), &mut l, true).unwrap().0).unwrap();
        assert_eq!(held.origin.session_version, 2);
        assert_eq!(held.media[0].direction(&held), Direction::SendOnly);
    }

    fn callee_answer(pt_line: &str, maps: &str) -> SessionDescription {
        sdp(&format!(
            "v=0
o=bob 1 1 IN IP4 192.0.2.20
s=-
c=IN IP4 192.0.2.20
t=0 0
m=audio 30000 RTP/AVP {pt_line}
{maps}a=sendrecv
"
        ))
    }

    #[test]
    fn answer_with_a_shared_codec_relays() {
        let caller = sdp(CALLER);
        let a = callee_answer("0 101", "a=rtpmap:101 telephone-event/8000\n");
        let mut l = local(20000);
        let (bytes, agreed) = answer(&caller, &a, &mut l).unwrap();
        assert!(agreed.relays());
        assert_eq!(agreed.offerer.as_ref().unwrap().pt, 0);
        assert_eq!(agreed.answerer_events.as_ref().unwrap().pt, 101);
        let out = SessionDescription::parse(&bytes).unwrap();
        assert_eq!(out.media.len(), 2, "as many m= lines as the offer");
        assert_eq!(out.media[1].port, 0);
        let (_, r) = describe(&out).unwrap();
        assert_eq!(r.rtp, Some("127.0.0.1:20000".parse().unwrap()));
        let pts: Vec<u8> = r.codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [0, 101]);
    }

    #[test]
    fn answer_with_an_extra_codec_transcodes_to_the_offerers_own() {
        let caller = sdp(CALLER);
        let a = callee_answer("96", "a=rtpmap:96 opus/48000/2\n");
        let (bytes, agreed) = answer(&caller, &a, &mut local(20000)).unwrap();
        assert!(!agreed.relays());
        assert_eq!(agreed.offerer.as_ref().unwrap().known(), Some(Known::Pcmu));
        assert_eq!(agreed.answerer.as_ref().unwrap().known(), Some(Known::Opus));
        assert!(
            agreed.offerer_events.is_none(),
            "callee has no telephone-event"
        );
        let (_, r) = describe(&SessionDescription::parse(&bytes).unwrap()).unwrap();
        let names: Vec<_> = r.codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pcmu", "telephone-event"]);
    }

    #[test]
    fn answer_without_common_ground_rejects_the_stream() {
        let caller = sdp(&CALLER
            .replace(" 0 101", " 18 101")
            .replace("a=rtpmap:101", "a=rtpmap:18 G729/8000\na=rtpmap:101"));
        let a = callee_answer("9", "a=rtpmap:9 G722/8000\n");
        let (bytes, agreed) = answer(&caller, &a, &mut local(20000)).unwrap();
        assert!(agreed.offerer.is_none());
        let out = SessionDescription::parse(&bytes).unwrap();
        assert_eq!(out.media[0].port, 0);
    }

    #[test]
    fn hold_address_and_rejected_streams_have_no_remote() {
        let held = sdp(&CALLER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"));
        assert_eq!(describe(&held).unwrap().1.rtp, None);
        let rejected = sdp(&CALLER.replace("m=audio 49170", "m=audio 0"));
        assert_eq!(describe(&rejected).unwrap().1.rtp, None);
        let none = sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=video 1 RTP/AVP 31\n");
        assert_eq!(describe(&none), Err(AnchorError::NoAudio));
        let srtp = sdp(&CALLER.replace("RTP/AVP 0 101", "RTP/SAVP 0 101"));
        assert_eq!(describe(&srtp), Err(AnchorError::NoAudio));
    }

    #[test]
    fn answering_locally_picks_the_offerers_first_codec_of_ours() {
        let caller = sdp(&CALLER
            .replace(" 0 101", " 18 8 0 101")
            .replace("a=rtpmap:101", "a=rtpmap:18 G729/8000\na=rtpmap:101"));
        let mut l = local(20000);
        let a = answer_locally(&caller, &mut l).unwrap();
        assert_eq!(a.voice.as_ref().and_then(Codec::known), Some(Known::Pcma));
        assert_eq!(a.events.as_ref().map(|c| c.pt), Some(101));
        let out = SessionDescription::parse(&a.sdp).unwrap();
        let (_, r) = describe(&out).unwrap();
        assert_eq!(r.rtp, Some("127.0.0.1:20000".parse().unwrap()));
        let pts: Vec<u8> = r.codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [8, 101]);
        assert_eq!(r.direction, Direction::SendRecv);
        assert_eq!(out.media[1].port, 0, "video rejected");
        let (_, n) = describe(&a.narrowed).unwrap();
        let pts: Vec<u8> = n.codecs.iter().map(|c| c.pt).collect();
        assert_eq!(pts, [8, 101], "the narrowed offer keeps what was agreed");
        assert_eq!(n.rtp, Some("192.0.2.10:49170".parse().unwrap()));
    }

    #[test]
    fn answering_locally_without_a_codec_of_ours_rejects_the_stream() {
        let caller = sdp(&CALLER
            .replace(" 0 101", " 18")
            .replace("a=rtpmap:101 telephone-event/8000", "a=rtpmap:18 G729/8000"));
        let a = answer_locally(&caller, &mut local(20000)).unwrap();
        assert!(a.voice.is_none());
        assert_eq!(SessionDescription::parse(&a.sdp).unwrap().media[0].port, 0);
    }
}
