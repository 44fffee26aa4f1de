#!/usr/bin/env python3
"""Generates music.wav, the demo appliance's hold music.

A slow I-vi-IV-V progression (Cmaj7, Am7, Fmaj7, G7; 3 s each, 12 s in all):
an up-and-down arpeggio of soft bell-like tones (sine with two quiet
harmonics, gentle attack, exponential decay) over a quiet sustained pad.
Arpeggio notes sit at 350-1050 Hz, inside the 300-3400 Hz telephone band.

Written as 8 kHz, 16-bit, mono PCM (what the media engine plays), peak
normalised to -12 dBFS. It starts and ends in silence (the last notes decay
before the end, then short fades at both ends), so it loops without a click.

Deterministic: no randomness, so running it again gives the same file.
Python 3 standard library only. Run from anywhere:

    python3 firmware-config/prompts/make_music.py
"""

import math
import os
import struct
import wave

RATE = 8000
CHORD_S = 3.0
PEAK_DBFS = -12.0

# (arpeggio MIDI notes, up and down; pad MIDI notes) per chord.
PROGRESSION = [
    ([72, 76, 79, 83, 84, 83, 79, 76], [60, 64, 67]),  # Cmaj7
    ([69, 72, 76, 79, 81, 79, 76, 72], [57, 60, 64]),  # Am7
    ([65, 69, 72, 76, 77, 76, 72, 69], [53, 57, 60]),  # Fmaj7
    ([67, 71, 74, 77, 79, 77, 74, None], [55, 59, 62]),  # G7, a rest to let it ring out
]

ARP_GAIN = 0.5
ARP_RING_S = 1.4       # how long an arpeggio note sounds (overlapping, like a held pedal)
ARP_DECAY_S = 0.45     # exponential decay time constant
ARP_ATTACK_S = 0.012
PAD_GAIN = 0.09
PAD_FADE_S = 0.5       # pad attack and release
EDGE_FADE_S = 0.05     # fades at both ends of the file
TAIL_S = 0.6           # the last notes must have decayed this long before the end


def hz(midi):
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def add_arp_note(out, start, midi):
    f = hz(midi)
    n0 = int(round(start * RATE))
    n = int(ARP_RING_S * RATE)
    attack = ARP_ATTACK_S * RATE
    for i in range(n):
        if n0 + i >= len(out):
            break
        t = i / RATE
        env = math.exp(-t / ARP_DECAY_S)
        if i < attack:
            env *= 0.5 - 0.5 * math.cos(math.pi * i / attack)
        # Fade the very end of the ring so the note stops without a step.
        left = n - i
        if left < 0.1 * RATE:
            env *= left / (0.1 * RATE)
        w = 2.0 * math.pi * f * t
        out[n0 + i] += ARP_GAIN * env * (
            math.sin(w) + 0.25 * math.sin(2 * w) + 0.08 * math.sin(3 * w)
        )


def add_pad(out, start, length, notes):
    n0 = int(round(start * RATE))
    n = int(round(length * RATE))
    fade = PAD_FADE_S * RATE
    for midi in notes:
        f = hz(midi)
        for i in range(n):
            if n0 + i >= len(out):
                break
            env = min(1.0, i / fade, (n - i) / fade)
            env = 0.5 - 0.5 * math.cos(math.pi * env)  # raised-cosine edges
            w = 2.0 * math.pi * f * (n0 + i) / RATE
            out[n0 + i] += PAD_GAIN * env * (math.sin(w) + 0.3 * math.sin(2 * w))


def render():
    total = int(CHORD_S * len(PROGRESSION) * RATE)
    out = [0.0] * total
    step = CHORD_S / 8
    for c, (arp, pad) in enumerate(PROGRESSION):
        start = c * CHORD_S
        # The pad of each chord overlaps the next one's by its fade.
        pad_len = CHORD_S + (PAD_FADE_S if c + 1 < len(PROGRESSION) else 0.0)
        add_pad(out, start, pad_len, pad)
        for k, midi in enumerate(arp):
            if midi is not None:
                add_arp_note(out, start + k * step, midi)
    # Short fades at both ends: the loop point is silence to silence.
    edge = int(EDGE_FADE_S * RATE)
    tail = int(TAIL_S * RATE)
    for i in range(tail):
        out[total - 1 - i] *= min(1.0, i / tail) ** 2
    for i in range(edge):
        out[i] *= i / edge
    peak = max(abs(s) for s in out)
    scale = 10.0 ** (PEAK_DBFS / 20.0) * 32767.0 / peak
    return [max(-32768, min(32767, int(round(s * scale)))) for s in out]


def main():
    samples = render()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "music.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % len(samples), *samples))
    peak = max(abs(s) for s in samples)
    print(
        "%s: %d samples, %.1f s, peak %.1f dBFS"
        % (path, len(samples), len(samples) / RATE, 20 * math.log10(peak / 32767))
    )


if __name__ == "__main__":
    main()
