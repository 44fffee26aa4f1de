//! Criterion benchmarks of the media plane's DSP blocks, each per 20 ms
//! frame of one stream: Opus encode and decode (`opus/encode/48k`,
//! `opus/decode/8k`, ...: a speech-like signal, libopus defaults for VoIP),
//! G.711 (`g711/decode/ulaw`, `g711/encode/alaw`, ...), the resampler
//! (`resample/48k->8k`, ...), the in-band DTMF detector
//! (`dtmf/goertzel/frame`, 160 samples at 8 kHz) and tone generation
//! (`tone/dtmf/48k`). Run: `cargo bench --bench media_dsp`; throughput is in
//! elements (frames) per second on one core, so 1 / time is the number of
//! streams one core sustains in real time ×50.

// Test and benchmark code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::media::dtmf::InbandDetector;
use switchboard::media::g711::G711;
use switchboard::media::opus::{MAX_PACKET, OpusDecoder, OpusEncoder, frame_samples};
use switchboard::media::resample::Resampler;
use switchboard::media::tone::ToneGen;

/// One second of a voice-like signal at `rate`: a 140 Hz pitch with
/// harmonics under a slow syllable envelope, plus a little noise.
fn voice(rate: u32) -> Vec<i16> {
    let mut seed = 0x9E37_79B9u32;
    (0..rate)
        .map(|n| {
            let t = n as f64 / rate as f64;
            let envelope = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let mut v = 0.0;
            for h in 1..=20 {
                let f = 140.0 * h as f64;
                if f >= rate as f64 / 2.0 {
                    break;
                }
                v += (2.0 * std::f64::consts::PI * f * t).sin() / h as f64;
            }
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f64 / u32::MAX as f64 - 0.5) * 0.05;
            (6000.0 * (envelope * v + noise)) as i16
        })
        .collect()
}

fn rate_name(rate: u32) -> String {
    format!("{}k", rate / 1000)
}

fn bench_opus(c: &mut Criterion) {
    let mut g = c.benchmark_group("opus");
    g.throughput(Throughput::Elements(1));
    for rate in [48_000u32, 16_000, 8000] {
        let frame = frame_samples(rate, 1);
        let pcm = voice(rate);
        let mut enc = OpusEncoder::new(rate, 1).expect("encoder");
        let mut packet = [0u8; MAX_PACKET];
        let mut at = 0;
        g.bench_function(format!("encode/{}", rate_name(rate)), |b| {
            b.iter(|| {
                at = (at + frame) % pcm.len();
                let chunk = &pcm[at..at + frame];
                enc.encode(black_box(chunk), &mut packet).expect("encode")
            })
        });
        // A second of packets from a fresh encoder, decoded in a loop.
        let mut enc = OpusEncoder::new(rate, 1).expect("encoder");
        let packets: Vec<Vec<u8>> = pcm
            .chunks_exact(frame)
            .map(|c| {
                let n = enc.encode(c, &mut packet).expect("encode");
                packet[..n].to_vec()
            })
            .collect();
        let mut dec = OpusDecoder::new(rate, 1).expect("decoder");
        let mut out = vec![0i16; frame];
        let mut i = 0;
        g.bench_function(format!("decode/{}", rate_name(rate)), |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                dec.decode(Some(black_box(&packets[i])), &mut out)
                    .expect("decode")
            })
        });
        g.bench_function(format!("plc/{}", rate_name(rate)), |b| {
            b.iter(|| dec.decode(None, black_box(&mut out)).expect("plc"))
        });
    }
    g.finish();
}

fn bench_g711(c: &mut Criterion) {
    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(1));
    let pcm = voice(8000);
    let frame = &pcm[800..960];
    for (name, law) in [("ulaw", G711::Ulaw), ("alaw", G711::Alaw)] {
        let mut codes = [0u8; 160];
        law.encode(frame, &mut codes);
        let mut out = [0i16; 160];
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| law.decode(black_box(&codes), &mut out))
        });
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| law.encode(black_box(frame), &mut codes))
        });
    }
    g.finish();
}

fn bench_resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample");
    g.throughput(Throughput::Elements(1));
    for (from, to) in [
        (48_000u32, 8000u32),
        (8000, 48_000),
        (48_000, 16_000),
        (16_000, 48_000),
        (16_000, 8000),
        (8000, 16_000),
    ] {
        let pcm = voice(from);
        let frame = frame_samples(from, 1);
        let mut rs = Resampler::new(from, to).expect("resampler");
        let mut out = vec![0i16; frame_samples(to, 1)];
        let mut at = 0;
        g.bench_function(format!("{}->{}", rate_name(from), rate_name(to)), |b| {
            b.iter(|| {
                at = (at + frame) % pcm.len();
                rs.process(black_box(&pcm[at..at + frame]), &mut out)
            })
        });
    }
    g.finish();
}

fn bench_dtmf_and_tone(c: &mut Criterion) {
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    let pcm = voice(8000);
    let mut det = InbandDetector::new();
    let mut at = 0;
    g.bench_function("goertzel/frame", |b| {
        b.iter(|| {
            at = (at + 160) % pcm.len();
            det.push(black_box(&pcm[at..at + 160]))
        })
    });
    g.finish();
    let mut g = c.benchmark_group("tone");
    g.throughput(Throughput::Elements(1));
    for rate in [8000u32, 48_000] {
        let mut tone = ToneGen::dtmf('5', rate).expect("tone");
        let mut out = vec![0i16; frame_samples(rate, 1)];
        g.bench_function(format!("dtmf/{}", rate_name(rate)), |b| {
            b.iter(|| tone.fill(black_box(&mut out)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_opus,
    bench_g711,
    bench_resample,
    bench_dtmf_and_tone
);
criterion_main!(benches);
