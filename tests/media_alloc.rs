//! The relay path allocates nothing per packet.
//!
//! A counting global allocator (this test binary only) counts the heap
//! allocations made on this thread while RTP is relayed for real: two
//! "phones" (UDP sockets) send through a media engine whose port pairs are
//! bound sockets registered with the shard's I/O driver, with the shard's
//! loop (poll → engine → send queue → driver → flush) driven here. After a
//! warm-up that lets every pool reach its working size, thousands of
//! relayed packets must cost zero allocations, on io_uring and on epoll.

#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::media::engine::{MediaConfig, MediaEngine, MediaSock, PortPair};
use switchboard::shell::driver::{self, Choice, DriverOptions, IoEvent, SockId};
use switchboard::stats::ShardCounters;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
    )
}

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0xffu8; 172];
    switchboard::media::rtp::write_header(&mut p, false, 0, seq, u32::from(seq) * 160, 7);
    p
}

fn relay_allocates_nothing_per_packet(choice: Choice) {
    let mut drv = driver::open(choice, &DriverOptions::default()).expect("open the driver");
    let mut media = MediaEngine::new(MediaConfig::loopback(), Arc::new(ShardCounters::default()));
    let mut ports = Vec::new();
    for _ in 0..2 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        for s in [&rtp, &rtcp] {
            s.set_nonblocking(true).unwrap();
        }
        let r = drv.add_udp(rtp).unwrap();
        let c = drv.add_udp(rtcp).unwrap();
        media.add_pair(PortPair {
            port,
            rtp: MediaSock(r.0),
            rtcp: MediaSock(c.0),
        });
        ports.push(port);
    }
    let phone_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let phone_b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in [&phone_a, &phone_b] {
        p.set_nonblocking(true).unwrap();
    }
    let now = Instant::now();
    let a = media.open_leg(now, 1).unwrap();
    let b = media.open_leg(now, 1).unwrap();
    let a_port = phone_a.local_addr().unwrap().port();
    let b_port = phone_b.local_addr().unwrap().port();
    media.translate_offer(a, b, sdp(a_port).as_bytes()).unwrap();
    media
        .translate_answer(now, b, a, sdp(b_port).as_bytes())
        .unwrap();
    let to_a: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let to_b: SocketAddr = ([127, 0, 0, 1], ports[1]).into();

    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = |seq: u16, media: &mut MediaEngine| {
        // A burst each way, relayed in one loop turn or a few.
        for i in 0..8 {
            phone_a.send_to(&rtp(seq + i), to_a).unwrap();
            phone_b.send_to(&rtp(seq + i), to_b).unwrap();
        }
        let mut got = 0;
        while got < 16 {
            assert!(Instant::now() < deadline, "relay stalled ({choice:?})");
            drv.poll(Some(Duration::from_millis(50)), &mut |ev| {
                if let IoEvent::Datagram { sock, src, data } = ev {
                    media.handle_packet(Instant::now(), MediaSock(sock.0), src, data);
                }
            })
            .unwrap();
            media.drain_transmits(|s, d, data| drv.send_to(SockId(s.0), d, data));
            drv.flush().unwrap();
            for p in [&phone_a, &phone_b] {
                while p.recv_from(&mut buf).is_ok() {
                    got += 1;
                }
            }
        }
    };
    // Warm-up: pools and queues reach their working size.
    for r in 0..200u16 {
        round(r * 8, &mut media);
    }
    // The counter counts (a box made while counting is seen).
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(ALLOCS.with(Cell::get), 1, "the counting allocator counts");
    ALLOCS.with(|a| a.set(0));
    for r in 200..1450u16 {
        round(r * 8, &mut media);
    }
    COUNTING.with(|c| c.set(false));
    let allocs = ALLOCS.with(Cell::get);
    let relayed = 1250 * 16;
    assert_eq!(
        allocs, 0,
        "{allocs} allocations while relaying {relayed} packets ({choice:?})"
    );
}

#[test]
fn relay_allocates_nothing_per_packet_io_uring() {
    relay_allocates_nothing_per_packet(Choice::IoUring);
}

#[test]
fn relay_allocates_nothing_per_packet_epoll() {
    relay_allocates_nothing_per_packet(Choice::Epoll);
}
