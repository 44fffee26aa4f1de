//! RTCP (RFC 3550 §6) parse and build, without allocation.
//!
//! Owns the wire format of the RTCP packets a media relay and an endpoint
//! need: sender and receiver reports (§6.4.1, §6.4.2) with their report
//! blocks, SDES (§6.5, CNAME §6.5.1) and BYE (§6.6). Other packet types
//! (APP, RTPFB/PSFB feedback, XR) are passed through as [`RtcpPacket::Other`].
//! Also: the RTP/RTCP demultiplexing test of RFC 5761 §4 ([`is_rtcp`]), NTP
//! timestamps (§4) and in-place rewriting of the SSRCs a relay changes.
//!
//! Driven by the caller: [`parse_compound`] borrows a received datagram and
//! yields one packet at a time (report blocks, SDES chunks and BYE sources are
//! read lazily from the borrowed bytes); the `write_*` functions fill a
//! caller-provided buffer and return the length written. Nothing here panics
//! on any input (fuzz target `rtcp`).
//!
//! Parsing checks each packet's header (version 2, declared length within
//! the datagram, padding within the packet) and its body against the count
//! field before yielding it, so the lazy iterators never meet a short body.
//! The compound-packet rules of RFC 3550 §6.1 / Appendix A.2 (first packet an
//! SR or RR, padding only in the last) are checked by [`validate_compound`],
//! not by the iterator: a relay forwards what it does not understand.

use thiserror::Error;

/// Packet type: sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Packet type: receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Packet type: source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Packet type: goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Packet type: application-defined (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// SDES item type CNAME (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;
/// At most 31 report blocks, sources or chunks: the 5-bit count field.
pub const MAX_COUNT: usize = 31;

const HEADER_LEN: usize = 4;
const SENDER_INFO_LEN: usize = 20;
const BLOCK_LEN: usize = 24;
/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Why an RTCP datagram was refused or a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Fewer bytes than a header, or than a fixed part, at `offset`.
    #[error("truncated RTCP packet at offset {offset}: need {need} bytes, have {have}")]
    Truncated {
        offset: usize,
        need: usize,
        have: usize,
    },
    /// The version field is not 2 (RFC 3550 §6.4.1).
    #[error("RTCP version {version} at offset {offset}, expected 2")]
    BadVersion { offset: usize, version: u8 },
    /// The padding count is zero or larger than the packet body.
    #[error("bad RTCP padding at offset {offset}")]
    BadPadding { offset: usize },
    /// The body does not hold what the count field announces.
    #[error("RTCP packet type {pt} at offset {offset}: body does not hold its {count} items")]
    BadBody { offset: usize, pt: u8, count: u8 },
    /// A compound packet does not start with an SR or RR (RFC 3550 §6.1).
    #[error("compound RTCP packet starts with type {pt}, not SR or RR")]
    FirstNotReport { pt: u8 },
    /// A packet other than the last carries padding (RFC 3550 §6.4.1).
    #[error("padding on an RTCP packet that is not the last (offset {offset})")]
    PaddingNotLast { offset: usize },
    /// An empty datagram.
    #[error("empty RTCP datagram")]
    Empty,
    /// The output buffer is too small for what is to be written.
    #[error("RTCP output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// More than [`MAX_COUNT`] report blocks or sources.
    #[error("{count} RTCP report blocks or sources, at most 31 fit")]
    TooMany { count: usize },
    /// An SDES text or BYE reason longer than 255 bytes.
    #[error("RTCP text of {len} bytes, at most 255 fit")]
    TextTooLong { len: usize },
}

/// One reception report block (RFC 3550 §6.4.1): what a receiver says about
/// one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on (SSRC_n).
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 (A.3).
    pub fraction_lost: u8,
    /// Cumulative packets lost, a 24-bit signed value (negative with
    /// duplicates); written clamped to -2^23..=2^23-1.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | max).
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units (A.8).
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (0: none yet).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn read(b: &[u8]) -> Option<Self> {
        let lost = u32_at(b, 4)?;
        // Sign-extend the 24-bit cumulative count.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(Self {
            ssrc: u32_at(b, 0)?,
            fraction_lost: (lost >> 24) as u8,
            cumulative_lost,
            ext_highest_seq: u32_at(b, 8)?,
            jitter: u32_at(b, 12)?,
            lsr: u32_at(b, 16)?,
            dlsr: u32_at(b, 20)?,
        })
    }

    fn write(&self, b: &mut [u8]) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        put_u32(b, 0, self.ssrc);
        put_u32(b, 4, (u32::from(self.fraction_lost) << 24) | lost);
        put_u32(b, 8, self.ext_highest_seq);
        put_u32(b, 12, self.jitter);
        put_u32(b, 16, self.lsr);
        put_u32(b, 20, self.dlsr);
    }
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// 64-bit NTP timestamp (see [`ntp_from_unix_ms`]).
    pub ntp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_ts: u32,
    /// Packets sent since the start (wraps).
    pub packets: u32,
    /// Payload octets sent since the start (wraps).
    pub octets: u32,
}

/// The report blocks of an SR or RR, read lazily from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    bytes: &'a [u8],
}

impl<'a> ReportBlocks<'a> {
    /// How many blocks remain.
    pub fn len(&self) -> usize {
        self.bytes.len() / BLOCK_LEN
    }

    /// No blocks remain.
    pub fn is_empty(&self) -> bool {
        self.bytes.len() < BLOCK_LEN
    }
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (head, rest) = self.bytes.split_at_checked(BLOCK_LEN)?;
        self.bytes = rest;
        ReportBlock::read(head)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

/// One SDES item (RFC 3550 §6.5): type and raw value (UTF-8 by the RFC, not
/// checked here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItem<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// The items of one SDES chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItems<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<SdesItem<'a>> {
        let (&kind, rest) = self.bytes.split_first()?;
        if kind == 0 {
            self.bytes = &[];
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        let (value, rest) = rest.split_at_checked(usize::from(len))?;
        self.bytes = rest;
        Some(SdesItem { kind, value })
    }
}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    pub items: SdesItems<'a>,
}

impl<'a> SdesChunk<'a> {
    /// The CNAME item's value, if the chunk has one.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items
            .clone()
            .find(|i| i.kind == SDES_CNAME)
            .map(|i| i.value)
    }
}

/// The chunks of an SDES packet, read lazily (validated when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunks<'a> {
    bytes: &'a [u8],
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let end = sdes_chunk_len(self.bytes)?;
        let chunk = self.bytes.get(..end)?;
        self.bytes = self.bytes.get(end..)?;
        Some(SdesChunk {
            ssrc: u32_at(chunk, 0)?,
            items: SdesItems {
                bytes: chunk.get(4..)?,
            },
        })
    }
}

/// A list of SSRCs (the sources of a BYE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsrcList<'a> {
    bytes: &'a [u8],
}

impl SsrcList<'_> {
    /// How many sources remain.
    pub fn len(&self) -> usize {
        self.bytes.len() / 4
    }

    /// No sources remain.
    pub fn is_empty(&self) -> bool {
        self.bytes.len() < 4
    }
}

impl Iterator for SsrcList<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let v = u32_at(self.bytes, 0)?;
        self.bytes = self.bytes.get(4..)?;
        Some(v)
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report (PT 200).
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
        reports: ReportBlocks<'a>,
    },
    /// Receiver report (PT 201).
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    /// Source description (PT 202).
    Sdes(SdesChunks<'a>),
    /// Goodbye (PT 203) with an optional reason.
    Bye {
        ssrcs: SsrcList<'a>,
        reason: Option<&'a [u8]>,
    },
    /// Any other packet type, body without padding.
    Other { pt: u8, count: u8, body: &'a [u8] },
}

impl<'a> RtcpPacket<'a> {
    /// The sender information of an SR.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        match *self {
            Self::SenderReport {
                ssrc,
                ntp,
                rtp_ts,
                packets,
                octets,
                ..
            } => Some(SenderInfo {
                ssrc,
                ntp,
                rtp_ts,
                packets,
                octets,
            }),
            _ => None,
        }
    }

    /// The report blocks of an SR or RR.
    pub fn report_blocks(&self) -> Option<ReportBlocks<'a>> {
        match *self {
            Self::SenderReport { reports, .. } | Self::ReceiverReport { reports, .. } => {
                Some(reports)
            }
            _ => None,
        }
    }

    /// The RTCP packet type.
    pub fn packet_type(&self) -> u8 {
        match self {
            Self::SenderReport { .. } => PT_SR,
            Self::ReceiverReport { .. } => PT_RR,
            Self::Sdes(_) => PT_SDES,
            Self::Bye { .. } => PT_BYE,
            Self::Other { pt, .. } => *pt,
        }
    }
}

/// The fixed header of one packet within a compound datagram.
#[derive(Debug, Clone, Copy)]
struct Header {
    offset: usize,
    padding: bool,
    count: u8,
    pt: u8,
    /// Whole packet length in bytes, header included.
    len: usize,
}

/// Reads the header at `offset` and checks the declared length.
fn header_at(buf: &[u8], offset: usize) -> Result<Header, RtcpError> {
    let rest = buf.get(offset..).unwrap_or(&[]);
    if rest.len() < HEADER_LEN {
        return Err(RtcpError::Truncated {
            offset,
            need: HEADER_LEN,
            have: rest.len(),
        });
    }
    let version = rest[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion { offset, version });
    }
    let words = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
    let len = (words + 1) * 4;
    if rest.len() < len {
        return Err(RtcpError::Truncated {
            offset,
            need: len,
            have: rest.len(),
        });
    }
    Ok(Header {
        offset,
        padding: rest[0] & 0x20 != 0,
        count: rest[0] & 0x1f,
        pt: rest[1],
        len,
    })
}

/// The body of the packet (after the 4-byte header), padding removed.
fn body<'a>(buf: &'a [u8], h: &Header) -> Result<&'a [u8], RtcpError> {
    let bad = RtcpError::BadPadding { offset: h.offset };
    let body = buf
        .get(h.offset + HEADER_LEN..h.offset + h.len)
        .ok_or(bad)?;
    if !h.padding {
        return Ok(body);
    }
    let pad = usize::from(*body.last().ok_or(bad)?);
    if pad == 0 || pad > body.len() {
        return Err(bad);
    }
    Ok(&body[..body.len() - pad])
}

/// The length of the SDES chunk at the start of `b` (SSRC, items, null
/// terminator, padding to 32 bits), if it is complete.
fn sdes_chunk_len(b: &[u8]) -> Option<usize> {
    let mut pos = 4;
    if b.len() < pos {
        return None;
    }
    loop {
        let kind = *b.get(pos)?;
        if kind == 0 {
            // The null item, then null octets up to the next 32-bit boundary.
            let end = (pos + 1).next_multiple_of(4);
            return (end <= b.len()).then_some(end);
        }
        let len = usize::from(*b.get(pos + 1)?);
        pos += 2 + len;
        if pos > b.len() {
            return None;
        }
    }
}

fn parse_one<'a>(buf: &'a [u8], h: &Header) -> Result<RtcpPacket<'a>, RtcpError> {
    let b = body(buf, h)?;
    let bad = RtcpError::BadBody {
        offset: h.offset,
        pt: h.pt,
        count: h.count,
    };
    let count = usize::from(h.count);
    match h.pt {
        PT_SR => {
            let blocks = b
                .get(4 + SENDER_INFO_LEN..4 + SENDER_INFO_LEN + count * BLOCK_LEN)
                .ok_or(bad)?;
            Ok(RtcpPacket::SenderReport {
                ssrc: u32_at(b, 0).ok_or(bad)?,
                ntp: (u64::from(u32_at(b, 4).ok_or(bad)?) << 32)
                    | u64::from(u32_at(b, 8).ok_or(bad)?),
                rtp_ts: u32_at(b, 12).ok_or(bad)?,
                packets: u32_at(b, 16).ok_or(bad)?,
                octets: u32_at(b, 20).ok_or(bad)?,
                reports: ReportBlocks { bytes: blocks },
            })
        }
        PT_RR => {
            let blocks = b.get(4..4 + count * BLOCK_LEN).ok_or(bad)?;
            Ok(RtcpPacket::ReceiverReport {
                ssrc: u32_at(b, 0).ok_or(bad)?,
                reports: ReportBlocks { bytes: blocks },
            })
        }
        PT_SDES => {
            let mut pos = 0;
            for _ in 0..count {
                pos += sdes_chunk_len(b.get(pos..).ok_or(bad)?).ok_or(bad)?;
            }
            Ok(RtcpPacket::Sdes(SdesChunks {
                bytes: &b[..pos],
                left: h.count,
            }))
        }
        PT_BYE => {
            let ssrcs = b.get(..count * 4).ok_or(bad)?;
            let rest = &b[count * 4..];
            let reason = match rest.split_first() {
                None => None,
                Some((&len, text)) => Some(text.get(..usize::from(len)).ok_or(bad)?),
            };
            Ok(RtcpPacket::Bye {
                ssrcs: SsrcList { bytes: ssrcs },
                reason,
            })
        }
        pt => Ok(RtcpPacket::Other {
            pt,
            count: h.count,
            body: b,
        }),
    }
}

/// Iterator over the packets of a compound RTCP datagram (see
/// [`parse_compound`]). After the first error it yields nothing more: the
/// rest of the datagram cannot be framed.
#[derive(Debug, Clone)]
pub struct CompoundIter<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for CompoundIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let parsed = header_at(self.buf, self.offset).and_then(|h| {
            self.offset += h.len;
            parse_one(self.buf, &h)
        });
        self.failed = parsed.is_err();
        Some(parsed)
    }
}

/// The packets of a compound RTCP datagram, in order (RFC 3550 §6.1).
pub fn parse_compound(buf: &[u8]) -> CompoundIter<'_> {
    CompoundIter {
        buf,
        offset: 0,
        failed: false,
    }
}

/// Checks the compound-packet rules of RFC 3550 Appendix A.2: not empty,
/// every packet frames and parses, the first is an SR or RR, and only the
/// last carries padding. Returns the number of packets.
pub fn validate_compound(buf: &[u8]) -> Result<usize, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut offset = 0;
    let mut n = 0;
    while offset < buf.len() {
        let h = header_at(buf, offset)?;
        if n == 0 && h.pt != PT_SR && h.pt != PT_RR {
            return Err(RtcpError::FirstNotReport { pt: h.pt });
        }
        if h.padding && offset + h.len != buf.len() {
            return Err(RtcpError::PaddingNotLast { offset });
        }
        parse_one(buf, &h)?;
        offset += h.len;
        n += 1;
    }
    Ok(n)
}

/// RTP/RTCP demultiplexing on one port (RFC 5761 §4): version 2 and a second
/// octet in 192..=223, the range RTCP packet types use and RTP payload types
/// 64..=95 (with the marker bit) are kept out of. Also at least a header.
pub fn is_rtcp(buf: &[u8]) -> bool {
    matches!(buf, [b0, b1, _, _, ..] if b0 >> 6 == 2 && (192..=223).contains(b1))
}

/// The 64-bit NTP timestamp (RFC 3550 §4: seconds since 1900 in the high 32
/// bits, fraction in the low 32) of a Unix time in milliseconds. The seconds
/// wrap modulo 2^32 (NTP era 1, from 2036), as on the wire.
pub fn ntp_from_unix_ms(ms: u64) -> u64 {
    let secs = (ms / 1000).wrapping_add(NTP_UNIX_OFFSET_S) & 0xffff_ffff;
    let frac = ((ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp: the LSR field of a report block.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Milliseconds as the 1/65536-second units of LSR, DLSR and RTT maths.
pub fn ms_to_ntp_short(ms: u64) -> u32 {
    ((u128::from(ms) << 16) / 1000) as u32
}

/// Round-trip time from a received report block (RFC 3550 §6.4.1): `now` is
/// the middle 32 bits of the NTP time of arrival. `None` when the block
/// echoes no SR (LSR 0) or the result would be negative.
pub fn rtt_ms(now_middle: u32, block: &ReportBlock) -> Option<u64> {
    if block.lsr == 0 {
        return None;
    }
    let elapsed = now_middle.wrapping_sub(block.lsr);
    let rtt = elapsed.checked_sub(block.dlsr)?;
    // Units of 1/65536 s; a wrap reads as an absurd value, refuse > 1 min.
    let ms = (u64::from(rtt) * 1000) >> 16;
    (ms <= 60_000).then_some(ms)
}

fn check_blocks(blocks: &[ReportBlock]) -> Result<(), RtcpError> {
    if blocks.len() > MAX_COUNT {
        return Err(RtcpError::TooMany {
            count: blocks.len(),
        });
    }
    Ok(())
}

fn need(out: &[u8], n: usize) -> Result<(), RtcpError> {
    if out.len() < n {
        return Err(RtcpError::BufferTooSmall {
            need: n,
            have: out.len(),
        });
    }
    Ok(())
}

fn put_header(out: &mut [u8], count: usize, pt: u8, len: usize) {
    out[0] = 0x80 | (count as u8 & 0x1f);
    out[1] = pt;
    let words = (len / 4 - 1) as u16;
    out[2..4].copy_from_slice(&words.to_be_bytes());
}

/// The length of an SDES packet with one CNAME chunk.
fn sdes_len(cname: &str) -> usize {
    // Header, SSRC, type + length + text, then 1..=4 null octets.
    (HEADER_LEN + 4 + 2 + cname.len() + 1).next_multiple_of(4)
}

fn write_sdes(out: &mut [u8], ssrc: u32, cname: &str) -> usize {
    let len = sdes_len(cname);
    put_header(out, 1, PT_SDES, len);
    put_u32(out, 4, ssrc);
    out[8] = SDES_CNAME;
    out[9] = cname.len() as u8;
    out[10..10 + cname.len()].copy_from_slice(cname.as_bytes());
    out[10 + cname.len()..len].fill(0);
    len
}

fn check_text(text: &str) -> Result<(), RtcpError> {
    if text.len() > 255 {
        return Err(RtcpError::TextTooLong { len: text.len() });
    }
    Ok(())
}

/// Writes a compound SR + SDES (CNAME) into `out`; returns its length.
pub fn write_sr(
    out: &mut [u8],
    info: &SenderInfo,
    blocks: &[ReportBlock],
    cname: &str,
) -> Result<usize, RtcpError> {
    check_blocks(blocks)?;
    check_text(cname)?;
    let sr_len = HEADER_LEN + 4 + SENDER_INFO_LEN + blocks.len() * BLOCK_LEN;
    need(out, sr_len + sdes_len(cname))?;
    put_header(out, blocks.len(), PT_SR, sr_len);
    put_u32(out, 4, info.ssrc);
    put_u32(out, 8, (info.ntp >> 32) as u32);
    put_u32(out, 12, info.ntp as u32);
    put_u32(out, 16, info.rtp_ts);
    put_u32(out, 20, info.packets);
    put_u32(out, 24, info.octets);
    for (i, b) in blocks.iter().enumerate() {
        let at = 28 + i * BLOCK_LEN;
        b.write(&mut out[at..at + BLOCK_LEN]);
    }
    Ok(sr_len + write_sdes(&mut out[sr_len..], info.ssrc, cname))
}

/// Writes a compound RR + SDES (CNAME) into `out`; returns its length. An
/// RR with no blocks is what a receiver that has heard nobody sends.
pub fn write_rr(
    out: &mut [u8],
    ssrc: u32,
    blocks: &[ReportBlock],
    cname: &str,
) -> Result<usize, RtcpError> {
    check_blocks(blocks)?;
    check_text(cname)?;
    let rr_len = HEADER_LEN + 4 + blocks.len() * BLOCK_LEN;
    need(out, rr_len + sdes_len(cname))?;
    put_header(out, blocks.len(), PT_RR, rr_len);
    put_u32(out, 4, ssrc);
    for (i, b) in blocks.iter().enumerate() {
        let at = 8 + i * BLOCK_LEN;
        b.write(&mut out[at..at + BLOCK_LEN]);
    }
    Ok(rr_len + write_sdes(&mut out[rr_len..], ssrc, cname))
}

/// Writes one BYE packet (to append after an SR or RR: a compound datagram
/// must start with a report); returns its length.
pub fn write_bye(out: &mut [u8], ssrcs: &[u32], reason: &str) -> Result<usize, RtcpError> {
    if ssrcs.len() > MAX_COUNT {
        return Err(RtcpError::TooMany { count: ssrcs.len() });
    }
    check_text(reason)?;
    let text = if reason.is_empty() {
        0
    } else {
        1 + reason.len()
    };
    let len = (HEADER_LEN + ssrcs.len() * 4 + text).next_multiple_of(4);
    need(out, len)?;
    put_header(out, ssrcs.len(), PT_BYE, len);
    for (i, s) in ssrcs.iter().enumerate() {
        put_u32(out, 4 + i * 4, *s);
    }
    let at = 4 + ssrcs.len() * 4;
    if text > 0 {
        out[at] = reason.len() as u8;
        out[at + 1..at + text].copy_from_slice(reason.as_bytes());
    }
    out[at + text..len].fill(0);
    Ok(len)
}

/// Where the sender SSRC sits in a packet: the first word of the body for
/// SR, RR, APP, feedback and XR, the first chunk / source of SDES and BYE
/// when there is one. `None` for packets without one, or whose padding is
/// broken (the padding count is never overwritten).
fn sender_ssrc_offset(buf: &[u8], h: &Header) -> Option<usize> {
    let has = match h.pt {
        PT_SDES | PT_BYE => h.count > 0,
        _ => true,
    };
    let body = body(buf, h).ok()?;
    (has && body.len() >= 4).then_some(h.offset + HEADER_LEN)
}

/// Rewrites the sender SSRC of every packet of a compound datagram in place
/// (for relayed RTCP: the relay's outgoing leg has its own SSRC). A packet
/// whose header or length is broken stops the walk with an error (what was
/// rewritten before it stays). Returns the number rewritten.
pub fn set_sender_ssrc(buf: &mut [u8], ssrc: u32) -> Result<usize, RtcpError> {
    let mut offset = 0;
    let mut n = 0;
    while offset < buf.len() {
        let h = header_at(buf, offset)?;
        if let Some(at) = sender_ssrc_offset(buf, &h) {
            put_u32(buf, at, ssrc);
            n += 1;
        }
        offset += h.len;
    }
    Ok(n)
}

/// Rewrites, in place, the source SSRC of every report block (SR and RR)
/// that reports on `from` to `to` (for relayed RTCP: the reported stream was
/// sent with another SSRC on the other leg). Returns the number rewritten.
pub fn set_report_ssrc(buf: &mut [u8], from: u32, to: u32) -> Result<usize, RtcpError> {
    let mut offset = 0;
    let mut n = 0;
    while offset < buf.len() {
        let h = header_at(buf, offset)?;
        offset += h.len;
        let first = match h.pt {
            PT_SR => HEADER_LEN + 4 + SENDER_INFO_LEN,
            PT_RR => HEADER_LEN + 4,
            _ => continue,
        };
        let Ok(body) = body(buf, &h) else {
            continue;
        };
        let end = h.offset + HEADER_LEN + body.len();
        for i in 0..usize::from(h.count) {
            let at = h.offset + first + i * BLOCK_LEN;
            if at + BLOCK_LEN > end {
                break;
            }
            if u32_at(buf, at) == Some(from) {
                put_u32(buf, at, to);
                n += 1;
            }
        }
    }
    Ok(n)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// Callers check the length first (`need`, header walk).
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(w) = b.get_mut(at..at + 4) {
        w.copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            cumulative_lost: lost,
            ext_highest_seq: 0x0001_0005,
            jitter: 77,
            lsr: 0x1234_5678,
            dlsr: 0x0001_8000,
        }
    }

    fn info() -> SenderInfo {
        SenderInfo {
            ssrc: 0xdead_beef,
            ntp: 0x83aa_7e80_8000_0000,
            rtp_ts: 160_000,
            packets: 1000,
            octets: 160_000,
        }
    }

    #[test]
    fn sr_with_blocks_and_cname_round_trips() {
        let mut buf = [0u8; 256];
        let blocks = [block(1, 3), block(2, -5)];
        let n = write_sr(&mut buf, &info(), &blocks, "agent@switchboard").unwrap();
        assert_eq!(n % 4, 0);
        assert_eq!(validate_compound(&buf[..n]), Ok(2));
        let mut it = parse_compound(&buf[..n]);
        let sr = it.next().unwrap().unwrap();
        assert_eq!(sr.packet_type(), PT_SR);
        assert_eq!(sr.sender_info(), Some(info()));
        let reports = sr.report_blocks().unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports.collect::<Vec<_>>(), blocks);
        match it.next().unwrap().unwrap() {
            RtcpPacket::Sdes(mut chunks) => {
                let c = chunks.next().unwrap();
                assert_eq!(c.ssrc, 0xdead_beef);
                assert_eq!(c.cname(), Some(&b"agent@switchboard"[..]));
                assert!(chunks.next().is_none());
            }
            p => panic!("not SDES: {p:?}"),
        }
        assert!(it.next().is_none());
    }

    #[test]
    fn rr_without_blocks_is_a_valid_compound() {
        let mut buf = [0u8; 64];
        let n = write_rr(&mut buf, 7, &[], "x").unwrap();
        // RR 8 bytes + SDES 4 + 4 + 2 + 1 + 1 null = 12 -> 12.
        assert_eq!(n, 8 + 12);
        let pkts: Vec<_> = parse_compound(&buf[..n]).collect();
        assert!(matches!(
            pkts[0],
            Ok(RtcpPacket::ReceiverReport { ssrc: 7, reports }) if reports.is_empty()
        ));
        assert_eq!(validate_compound(&buf[..n]), Ok(2));
    }

    #[test]
    fn cumulative_lost_is_24_bit_signed_and_clamped() {
        let mut buf = [0u8; 128];
        for (written, read) in [
            (-1, -1),
            (-0x80_0000, -0x80_0000),
            (0x7f_ffff, 0x7f_ffff),
            (0x100_0000, 0x7f_ffff),
            (-0x100_0000, -0x80_0000),
        ] {
            let n = write_rr(&mut buf, 1, &[block(9, written)], "c").unwrap();
            let Some(Ok(RtcpPacket::ReceiverReport { mut reports, .. })) =
                parse_compound(&buf[..n]).next()
            else {
                panic!("no RR")
            };
            assert_eq!(reports.next().unwrap().cumulative_lost, read, "{written}");
        }
    }

    #[test]
    fn cname_padding_always_leaves_a_null_octet() {
        for len in 0..12 {
            let cname = "c".repeat(len);
            let mut buf = [0u8; 64];
            let n = write_rr(&mut buf, 1, &[], &cname).unwrap();
            let sdes = &buf[8..n];
            assert_eq!(sdes.len() % 4, 0);
            assert_eq!(sdes[10 + len], 0, "len {len}");
            let Some(Ok(RtcpPacket::Sdes(mut c))) = parse_compound(&buf[..n]).nth(1) else {
                panic!("no SDES")
            };
            assert_eq!(c.next().unwrap().cname(), Some(cname.as_bytes()));
        }
    }

    #[test]
    fn bye_with_reason_appended_to_rr() {
        let mut buf = [0u8; 128];
        let mut n = write_rr(&mut buf, 5, &[], "c").unwrap();
        n += write_bye(&mut buf[n..], &[5, 6], "hangup").unwrap();
        assert_eq!(validate_compound(&buf[..n]), Ok(3));
        let Some(Ok(RtcpPacket::Bye { ssrcs, reason })) = parse_compound(&buf[..n]).nth(2) else {
            panic!("no BYE")
        };
        assert_eq!(ssrcs.collect::<Vec<_>>(), [5, 6]);
        assert_eq!(reason, Some(&b"hangup"[..]));
    }

    #[test]
    fn writers_refuse_small_buffers_and_too_many_blocks() {
        let mut small = [0u8; 20];
        assert!(matches!(
            write_sr(&mut small, &info(), &[], "c"),
            Err(RtcpError::BufferTooSmall { .. })
        ));
        let mut buf = [0u8; 2048];
        let blocks = [block(1, 0); 32];
        assert_eq!(
            write_rr(&mut buf, 1, &blocks, "c"),
            Err(RtcpError::TooMany { count: 32 })
        );
        assert!(write_rr(&mut buf, 1, &blocks[..31], "c").is_ok());
        let long = "x".repeat(256);
        assert_eq!(
            write_bye(&mut buf, &[1], &long),
            Err(RtcpError::TextTooLong { len: 256 })
        );
    }

    #[test]
    fn truncated_length_and_bad_version_are_errors_then_iteration_stops() {
        let mut buf = [0u8; 64];
        let n = write_rr(&mut buf, 1, &[block(2, 0)], "c").unwrap();
        let cut = &buf[..n - 4];
        let pkts: Vec<_> = parse_compound(cut).collect();
        assert!(pkts[0].is_ok());
        assert!(matches!(pkts[1], Err(RtcpError::Truncated { .. })));
        assert_eq!(pkts.len(), 2);

        let mut v1 = buf;
        v1[0] = (v1[0] & 0x3f) | 0x40;
        let first = parse_compound(&v1[..n]).next().unwrap();
        assert_eq!(
            first,
            Err(RtcpError::BadVersion {
                offset: 0,
                version: 1
            })
        );
    }

    #[test]
    fn count_larger_than_body_is_refused() {
        let mut buf = [0u8; 64];
        let n = write_rr(&mut buf, 1, &[], "c").unwrap();
        buf[0] |= 3; // claims three blocks in an 8-byte RR
        assert!(matches!(
            parse_compound(&buf[..n]).next(),
            Some(Err(RtcpError::BadBody { pt: PT_RR, .. }))
        ));
    }

    #[test]
    fn padding_is_stripped_and_checked() {
        // An APP-like packet of type 204 with 4 bytes of padding.
        let mut p = [0u8; 16];
        p[0] = 0x80 | 0x20;
        p[1] = PT_APP;
        p[3] = 3; // 16 bytes
        p[4..8].copy_from_slice(&9u32.to_be_bytes());
        p[15] = 4;
        match parse_compound(&p).next() {
            Some(Ok(RtcpPacket::Other { pt, body, .. })) => {
                assert_eq!(pt, PT_APP);
                assert_eq!(body.len(), 8);
            }
            o => panic!("{o:?}"),
        }
        p[15] = 13; // more than the body
        assert!(matches!(
            parse_compound(&p).next(),
            Some(Err(RtcpError::BadPadding { .. }))
        ));
        p[15] = 0;
        assert!(matches!(
            parse_compound(&p).next(),
            Some(Err(RtcpError::BadPadding { .. }))
        ));
    }

    #[test]
    fn compound_must_start_with_a_report_and_pad_only_last() {
        let mut buf = [0u8; 64];
        let n = write_bye(&mut buf, &[1], "").unwrap();
        assert_eq!(
            validate_compound(&buf[..n]),
            Err(RtcpError::FirstNotReport { pt: PT_BYE })
        );
        let n = write_rr(&mut buf, 1, &[], "c").unwrap();
        buf[0] |= 0x20;
        buf[7] = 4; // last byte of the RR body as padding count
        // RR body is only the SSRC: padding 4 empties it -> bad body.
        assert!(validate_compound(&buf[..n]).is_err());
        assert_eq!(validate_compound(&[]), Err(RtcpError::Empty));
    }

    #[test]
    fn is_rtcp_follows_rfc5761_ranges() {
        let mut buf = [0u8; 64];
        let n = write_rr(&mut buf, 1, &[], "c").unwrap();
        assert!(is_rtcp(&buf[..n]));
        // RTP PCMU (PT 0), with and without marker; PT 96 with marker = 224.
        assert!(!is_rtcp(&[0x80, 0x00, 0, 1, 0, 0, 0, 0]));
        assert!(!is_rtcp(&[0x80, 0x80, 0, 1]));
        assert!(!is_rtcp(&[0x80, 224, 0, 1]));
        assert!(is_rtcp(&[0x80, 192, 0, 1]));
        assert!(is_rtcp(&[0x80, 223, 0, 1]));
        assert!(!is_rtcp(&[0x40, 200, 0, 1]));
        assert!(!is_rtcp(&[0x80, 200, 0]));
    }

    #[test]
    fn ntp_timestamp_of_known_instants() {
        // The Unix epoch is NTP second 2 208 988 800.
        assert_eq!(ntp_from_unix_ms(0), 2_208_988_800u64 << 32);
        // Half a second is a fraction of 2^31.
        assert_eq!(ntp_from_unix_ms(1500) & 0xffff_ffff, 1 << 31);
        assert_eq!(ntp_from_unix_ms(1500) >> 32, 2_208_988_801);
        // 2036-02-07T06:28:16Z is the NTP era rollover: seconds wrap to 0.
        assert_eq!(ntp_from_unix_ms(2_085_978_496_000) >> 32, 0);
        assert_eq!(ntp_middle(0x0000_1234_5678_0000), 0x1234_5678);
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        // RFC 3550 §6.4.1 example: A=0xb710:8000 (46864.5 s), LSR=0xb705:2000
        // (46853.125 s), DLSR=0x0005:4000 (5.25 s): RTT 6.125 s.
        let b = ReportBlock {
            lsr: 0xb705_2000,
            dlsr: 0x0005_4000,
            ..ReportBlock::default()
        };
        assert_eq!(rtt_ms(0xb710_8000, &b), Some(6125));
        assert_eq!(rtt_ms(0xb705_2000, &b), None);
        assert_eq!(rtt_ms(1, &ReportBlock::default()), None);
        assert_eq!(ms_to_ntp_short(1000), 0x1_0000);
    }

    #[test]
    fn sender_and_report_ssrcs_are_rewritten_in_place() {
        let mut buf = [0u8; 256];
        let mut n = write_sr(&mut buf, &info(), &[block(42, 0), block(43, 0)], "c").unwrap();
        n += write_bye(&mut buf[n..], &[0xdead_beef], "").unwrap();
        assert_eq!(set_sender_ssrc(&mut buf[..n], 0x0101_0101), Ok(3));
        assert_eq!(set_report_ssrc(&mut buf[..n], 42, 4242), Ok(1));
        let pkts: Vec<_> = parse_compound(&buf[..n]).map(Result::unwrap).collect();
        let RtcpPacket::SenderReport { ssrc, reports, .. } = pkts[0] else {
            panic!()
        };
        assert_eq!(ssrc, 0x0101_0101);
        assert_eq!(reports.map(|b| b.ssrc).collect::<Vec<_>>(), [4242, 43]);
        let RtcpPacket::Sdes(mut c) = pkts[1] else {
            panic!()
        };
        assert_eq!(c.next().unwrap().ssrc, 0x0101_0101);
        let RtcpPacket::Bye { mut ssrcs, .. } = pkts[2] else {
            panic!()
        };
        assert_eq!(ssrcs.next(), Some(0x0101_0101));
        assert!(matches!(
            set_sender_ssrc(&mut buf[..3], 1),
            Err(RtcpError::Truncated { .. })
        ));
    }

    #[test]
    fn sdes_with_unterminated_chunk_is_refused() {
        // SDES, one chunk, CNAME "ab" and no null octet in an 12-byte packet.
        let p = [0x81, PT_SDES, 0, 2, 0, 0, 0, 1, SDES_CNAME, 2, b'a', b'b'];
        assert!(matches!(
            parse_compound(&p).next(),
            Some(Err(RtcpError::BadBody { pt: PT_SDES, .. }))
        ));
    }
}
