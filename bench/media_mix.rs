//! Criterion benchmarks of the media plane's per-frame work, each per 20 ms
//! frame at 8 kHz (160 samples):
//! * `mix/tick/n=<N>`: one mixer tick (inputs set, `mix`, every output
//!   read) for N participants who all hear all (the total-minus-own path);
//! * `mix/tick_whisper/n=<N>`: the same with a whisper matrix (a supervisor
//!   only the agent hears: the general per-listener path);
//! * `conference/tick/<codec>/n=<N>`: one conference frame of N members
//!   ([`switchboard::media::conference`]): each member's packet into its
//!   jitter buffer, decoded, mixed, and each member's mix encoded — the
//!   whole per-frame cost of a conference call on a shard;
//! * `jitter/push_pop`: one packet pushed and one frame popped;
//! * `recorder/push_poll`: one packet on each channel and one poll.
//!
//! Run: `cargo bench --bench media_mix`; throughput is in elements (ticks or
//! frames) per second on one core.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::media::anchor::Known;
use switchboard::media::conference::Conference;
use switchboard::media::g711;
use switchboard::media::jitter::{JitterBuffer, JitterConfig, Playout};
use switchboard::media::mixer::Mixer;
use switchboard::media::opus::OpusEncoder;
use switchboard::media::recorder::{Channel, Recorder};

const FRAME: usize = 160;

/// A speech-like test frame for participant `p`.
fn frame(p: usize) -> [i16; FRAME] {
    std::array::from_fn(|i| (((p * 131 + i * 37) % 4001) as i16 - 2000) * 4)
}

fn mix(c: &mut Criterion) {
    let mut g = c.benchmark_group("mix");
    g.throughput(Throughput::Elements(1));
    for n in [2usize, 4, 8, 16] {
        for whisper in [false, true] {
            let mut m = Mixer::new(FRAME);
            let ids: Vec<_> = (0..n).map(|_| m.add().expect("room")).collect();
            if whisper {
                // ids[0] caller, ids[1] agent, last the supervisor.
                m.whisper(ids[n - 1], ids[1]).expect("known ids");
            }
            let inputs: Vec<_> = (0..n).map(frame).collect();
            let name = if whisper { "tick_whisper" } else { "tick" };
            g.bench_function(format!("{name}/n={n}"), |b| {
                b.iter(|| {
                    for (id, f) in ids.iter().zip(&inputs) {
                        m.set_input(*id, f).expect("known id");
                    }
                    m.mix();
                    for id in &ids {
                        black_box(m.output(*id));
                    }
                })
            });
        }
    }
    g.finish();
}

fn conference(c: &mut Criterion) {
    let mut g = c.benchmark_group("conference");
    g.throughput(Throughput::Elements(1));
    for (codec, pt, sizes) in [
        (Known::Pcmu, 0u8, &[3usize, 8][..]),
        (Known::Opus, 96, &[3][..]),
    ] {
        for &n in sizes {
            let mut conf = Conference::new();
            let slots: Vec<usize> = (0..n)
                .map(|i| {
                    conf.add(i as u32, pt, codec, 20, 7 + i as u32)
                        .expect("room")
                })
                .collect();
            // Each member's 20 ms frame, encoded once.
            let payloads: Vec<Vec<u8>> = (0..n)
                .map(|p| {
                    let pcm = frame(p);
                    if codec == Known::Opus {
                        let mut e = OpusEncoder::new(8000, 1).expect("libopus");
                        let mut out = vec![0u8; 400];
                        let len = e.encode(&pcm, &mut out).expect("encodes");
                        out.truncate(len);
                        out
                    } else {
                        let mut out = vec![0u8; FRAME];
                        g711::encode_ulaw(&pcm, &mut out);
                        out
                    }
                })
                .collect();
            let step = codec.clock_rate() / 50;
            let mut k = 0u64;
            let name = format!("tick/{}/n={n}", if pt == 0 { "pcmu" } else { "opus" });
            g.bench_function(name, |b| {
                b.iter(|| {
                    let now = 20 * k;
                    let header = (pt, k as u16, (k as u32).wrapping_mul(step), false);
                    for (&s, p) in slots.iter().zip(&payloads) {
                        conf.push(s, now, header, p);
                    }
                    conf.tick(now, &mut |m| {
                        black_box(m.payload);
                    });
                    k += 1;
                })
            });
        }
    }
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1));
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let payload = [0x55u8; FRAME];
    let mut k = 0u64;
    g.bench_function("push_pop", |b| {
        b.iter(|| {
            let now = 20 * k;
            jb.push(now, k as u16, (k as u32).wrapping_mul(160), false, &payload);
            if let Playout::Frame(p) = jb.pop(now + 5) {
                black_box(p);
            }
            k += 1;
        })
    });
    g.finish();
}

fn recorder(c: &mut Criterion) {
    let mut g = c.benchmark_group("recorder");
    g.throughput(Throughput::Elements(1));
    let mut r = Recorder::new(0);
    let pcm = frame(1);
    let mut out = vec![0u8; 4 * 8 * 1000];
    let mut k = 0u64;
    g.bench_function("push_poll", |b| {
        b.iter(|| {
            let now = 20 * (k + 1);
            let ts = (k as u32).wrapping_mul(160);
            r.push(Channel::Left, now, k as u16, ts, &pcm);
            r.push(Channel::Right, now, k as u16, ts, &pcm);
            black_box(r.poll_chunk(now, &mut out));
            k += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, mix, conference, jitter, recorder);
criterion_main!(benches);
