//! Fuzz target `rtp_event`: RFC 4733 telephone-events
//! (`media::dtmf::TelephoneEvent`) and the per-press digit receiver
//! (`media::dtmf::EventReceiver`).
//!
//! Input: the whole input is parsed once as a payload; then it is read as
//! 9-byte records, one received packet each: RTP timestamp (4 bytes, big
//! endian), a flags byte (bit 0: RTP marker; bit 1: reset the receiver
//! first, as on an SSRC change) and the 4-byte payload. `seeds/rtp_event/`
//! holds key presses as an RFC 4733 sender emits them: start, updates and
//! three end packets, a lost start, a long event in 0xFFFF segments,
//! reordering and retransmission.
//!
//! Invariants checked (beyond "never panics"):
//! * `parse` succeeds exactly on 4 bytes or more, and `write` gives back the
//!   first 4 bytes with the reserved bit cleared; `parse(write(ev)) == ev`;
//! * the receiver reports only DTMF digits, the digit of the packet's event;
//! * the same packet delivered twice in a row never reports twice (the
//!   second copy reports nothing), and a packet with the timestamp of the
//!   packet before it (the same press) never reports. (A timestamp can
//!   report again after a jump of 2^20 units or more, which the receiver
//!   takes for a sender restart.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::dtmf::{EventReceiver, TelephoneEvent, event_digit};

fuzz_target!(|data: &[u8]| {
    match TelephoneEvent::parse(data) {
        Ok(ev) => {
            assert!(data.len() >= TelephoneEvent::LEN);
            let mut out = [0u8; 4];
            ev.write(&mut out);
            assert_eq!(out, [data[0], data[1] & 0xBF, data[2], data[3]]);
            assert_eq!(TelephoneEvent::parse(&out), Ok(ev));
        }
        Err(_) => assert!(data.len() < TelephoneEvent::LEN),
    }

    let mut rx = EventReceiver::new();
    let mut previous: Option<u32> = None;
    for record in data.chunks_exact(9) {
        let ts = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
        let flags = record[4];
        if flags & 2 != 0 {
            rx.reset();
            previous = None;
        }
        let marker = flags & 1 != 0;
        let Ok(ev) = TelephoneEvent::parse(&record[5..]) else {
            unreachable!("a 4-byte payload always parses");
        };
        if let Some(digit) = rx.handle_event(ts, marker, ev) {
            assert_eq!(Some(digit), event_digit(ev.event));
            assert_ne!(previous, Some(ts), "a press reported twice");
        }
        assert_eq!(rx.handle_event(ts, marker, ev), None, "duplicate reported");
        previous = Some(ts);
    }
});
