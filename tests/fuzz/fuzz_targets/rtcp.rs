//! Fuzz target `rtcp`: the RTCP parser, builders and in-place rewriters
//! (`media::rtcp`).
//!
//! Input: one RTCP datagram, binary (`seeds/rtcp/`: SR and RR with report
//! blocks and SDES CNAME, RR + BYE with a reason, APP, a padded last
//! packet, truncated and wrong-version packets).
//!
//! Invariants checked (beyond "never panics"):
//! * `parse_compound` yields at most one packet per 4 bytes and stops after
//!   its first error;
//! * `validate_compound` accepting `n` packets means the iterator yields `n`
//!   packets without error, the first an SR or RR, and `is_rtcp` holds;
//! * every parsed SR / RR rebuilds (`write_sr` / `write_rr`) into a datagram
//!   that parses back to the same sender information and report blocks;
//! * SDES items and BYE sources iterate within their packet;
//! * `set_sender_ssrc` and `set_report_ssrc` succeed on every datagram that
//!   parses whole, agree with each other, keep the datagram's framing (same
//!   packet types, same errors) and leave SR / RR sender SSRCs at the new
//!   value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::rtcp::{
    self, PT_RR, PT_SR, ReportBlock, RtcpPacket, is_rtcp, parse_compound, validate_compound,
};

fuzz_target!(|data: &[u8]| {
    let parsed: Vec<_> = parse_compound(data).collect();
    assert!(parsed.len() <= data.len() / 4 + 1);
    if let Some(i) = parsed.iter().position(Result::is_err) {
        assert_eq!(i, parsed.len() - 1, "iteration went on after an error");
    }

    if let Ok(n) = validate_compound(data) {
        assert_eq!(n, parsed.len());
        assert!(parsed.iter().all(Result::is_ok));
        let first = parsed[0].as_ref().map(|p| p.packet_type());
        assert!(matches!(first, Ok(PT_SR | PT_RR)));
        assert!(is_rtcp(data));
    }

    for p in parsed.iter().flatten() {
        check_packet(p);
    }

    // In-place rewriting keeps the framing; a datagram that parses whole
    // is rewritten whole.
    let whole = parsed.iter().all(Result::is_ok);
    let mut copy = data.to_vec();
    let rewritten = rtcp::set_sender_ssrc(&mut copy, 0x5eed_0001);
    let moved = rtcp::set_report_ssrc(&mut copy, 0, 0x5eed_0002);
    assert_eq!(rewritten.is_ok(), moved.is_ok());
    if whole {
        assert!(rewritten.is_ok() && moved.is_ok());
    }
    let again: Vec<_> = parse_compound(&copy).collect();
    assert_eq!(again.len(), parsed.len());
    for (a, b) in parsed.iter().zip(&again) {
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.packet_type(), b.packet_type());
                if let RtcpPacket::SenderReport { ssrc, .. }
                | RtcpPacket::ReceiverReport { ssrc, .. } = b
                {
                    assert_eq!(*ssrc, 0x5eed_0001);
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("rewriting changed the framing"),
        }
    }

    // Time helpers on arbitrary values.
    if let Some(w) = data.get(..8) {
        let ms = u64::from_be_bytes(w.try_into().unwrap_or([0; 8]));
        let ntp = rtcp::ntp_from_unix_ms(ms);
        assert_eq!(ntp >> 32, (ms / 1000 + 2_208_988_800) & 0xffff_ffff);
        let _ = rtcp::ntp_middle(ntp);
        let _ = rtcp::ms_to_ntp_short(ms);
    }
});

fn check_packet(p: &RtcpPacket<'_>) {
    match *p {
        RtcpPacket::SenderReport { ssrc, reports, .. }
        | RtcpPacket::ReceiverReport { ssrc, reports } => {
            let blocks: Vec<ReportBlock> = reports.collect();
            check_blocks(&blocks);
            let info = p.sender_info();
            let mut buf = [0u8; 1024];
            let n = match &info {
                Some(info) => rtcp::write_sr(&mut buf, info, &blocks, "fuzz"),
                None => rtcp::write_rr(&mut buf, ssrc, &blocks, ""),
            }
            .expect("a parsed report rebuilds");
            assert_eq!(validate_compound(&buf[..n]), Ok(2));
            let back = match parse_compound(&buf[..n]).next() {
                Some(Ok(back)) => back,
                other => panic!("rebuilt report parses as {other:?}"),
            };
            assert_eq!(back.packet_type(), p.packet_type());
            assert_eq!(back.sender_info(), info);
            let again: Vec<_> = back.report_blocks().into_iter().flatten().collect();
            assert_eq!(again, blocks);
            if let RtcpPacket::ReceiverReport { ssrc: s, .. } = back {
                assert_eq!(s, ssrc);
            }
        }
        RtcpPacket::Sdes(chunks) => {
            let mut n = 0;
            for c in chunks {
                n += 1;
                for item in c.items {
                    assert_ne!(item.kind, 0);
                    assert!(item.value.len() <= 255);
                }
                let _ = c.cname();
            }
            assert!(n <= rtcp::MAX_COUNT);
        }
        RtcpPacket::Bye { ssrcs, reason } => {
            assert!(ssrcs.len() <= rtcp::MAX_COUNT);
            assert_eq!(ssrcs.count(), ssrcs.len());
            assert!(reason.is_none_or(|r| r.len() <= 255));
        }
        RtcpPacket::Other { pt, .. } => {
            assert!(!matches!(pt, PT_SR | PT_RR | rtcp::PT_SDES | rtcp::PT_BYE));
        }
    }
}

fn check_blocks(blocks: &[ReportBlock]) {
    assert!(blocks.len() <= rtcp::MAX_COUNT);
    for b in blocks {
        assert!((-0x80_0000..=0x7f_ffff).contains(&b.cumulative_lost));
    }
}
