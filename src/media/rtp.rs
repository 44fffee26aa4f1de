//! RTP packets (RFC 3550 §5.1): the header fields the relay reads, and
//! in-place rewrites of payload type, sequence number, timestamp and SSRC.
//!
//! Parsing goes through `rtp_rs::RtpReader`, which checks version, CSRC
//! count, header extension and padding against the buffer length before
//! any field is read; nothing here allocates.

/// Fixed header length (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

/// The fields of a valid RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload (after CSRCs and extension).
    pub payload_offset: usize,
    /// Payload length without padding.
    pub payload_len: usize,
}

impl RtpHeader {
    /// Parses `buf`; None when it is not a well-formed RTP packet.
    pub fn parse(buf: &[u8]) -> Option<RtpHeader> {
        let r = rtp_rs::RtpReader::new(buf).ok()?;
        Some(RtpHeader {
            marker: r.mark(),
            payload_type: r.payload_type(),
            seq: u16::from(r.sequence_number()),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
            payload_offset: r.payload_offset(),
            payload_len: r.payload().len(),
        })
    }

    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.payload_offset..self.payload_offset + self.payload_len)
            .unwrap_or_default()
    }
}

/// Whether a datagram on an RTP port is RTCP (RFC 5761 §4: payload types
/// 192–223 in the second byte are RTCP's).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Rewrites the header of a packet already parsed (so at least
/// [`HEADER_LEN`] bytes long): payload type (the marker bit is `marker`),
/// sequence number, timestamp and SSRC.
pub fn rewrite(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    if buf.len() < HEADER_LEN {
        return;
    }
    buf[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Writes a fixed 12-byte header (no CSRC, no extension) into `buf`.
pub fn write_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    if buf.len() < HEADER_LEN {
        return;
    }
    buf[0] = 0x80;
    rewrite(buf, marker, pt, seq, ts, ssrc);
}

/// `a` comes after `b` in sequence-number order (RFC 3550 A.1, modulo 2^16).
pub fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN];
        write_header(&mut v, false, pt, seq, ts, ssrc);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_fields_round_trip() {
        let mut p = packet(0, 65535, 0xdead_beef, 0x1234_5678, &[1, 2, 3]);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.payload_type, h.seq, h.timestamp, h.ssrc),
            (0, 65535, 0xdead_beef, 0x1234_5678)
        );
        assert_eq!(h.payload(&p), [1, 2, 3]);
        rewrite(&mut p, true, 101, 7, 8, 9);
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker);
        assert_eq!((h.payload_type, h.seq, h.timestamp, h.ssrc), (101, 7, 8, 9));
        assert_eq!(h.payload(&p), [1, 2, 3]);
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert!(RtpHeader::parse(&[0x80, 0, 0]).is_none());
        let mut p = packet(0, 1, 2, 3, &[]);
        p[0] = 0x40; // version 1
        assert!(RtpHeader::parse(&p).is_none());
        p[0] = 0x8f; // 15 CSRCs, none present
        assert!(RtpHeader::parse(&p).is_none());
        p[0] = 0xa0; // padding flag, no padding length byte
        assert!(RtpHeader::parse(&p).is_none());
    }

    #[test]
    fn rtcp_is_told_apart_by_payload_type() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert!(is_rtcp(&rr));
        assert!(!is_rtcp(&packet(0, 1, 2, 3, &[0; 4])));
        assert!(!is_rtcp(&packet(96 | 0x80, 1, 2, 3, &[0; 4])[..4]));
    }

    #[test]
    fn sequence_order_wraps() {
        assert!(seq_after(1, 65535));
        assert!(!seq_after(65535, 1));
        assert!(!seq_after(5, 5));
    }
}
