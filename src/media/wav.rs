//! RIFF/WAVE files: headers for recordings, parsing and crash repair, and
//! loading prompts into 16-bit PCM at the media plane's rate.
//!
//! Owns the byte layout of WAVE files (Microsoft RIFF/WAVE: the `RIFF`
//! container, the `fmt ` chunk as `WAVEFORMATEX` / `WAVEFORMATEXTENSIBLE`,
//! `fact` and `data`; format tags 1 PCM, 6 A-law, 7 µ-law of RFC 2361
//! Appendix A) and nothing else: callers read and write the files.
//!
//! * [`header`] / [`pcm16_header`]: the header to write before the data. A
//!   16-bit PCM header is the canonical 44 bytes, so a recorder writes audio
//!   from offset [`PCM16_HEADER_LEN`] on and patches the sizes at the end.
//! * [`parse`]: where the audio is in a file, walking the chunks (unknown
//!   ones such as `LIST` skipped, odd sizes padded or not), clamping a data
//!   size that runs past the end (a recording cut off by a crash, or the
//!   streaming sizes 0 and 0xFFFFFFFF). Never panics, whatever the bytes.
//! * [`repair`]: the corrected header of a cut-off recording of ours.
//! * [`load_prompt`]: a whole file decoded and resampled for playback
//!   (setup time; allocates).
//!
//! No I/O, no clock: bytes in, bytes or samples out.

use std::ops::Deref;

use thiserror::Error;

use super::g711::{alaw_decode, ulaw_decode};
use super::resample::{ResampleError, Resampler, is_supported_rate};

/// Length of a canonical 16-bit PCM header: audio starts at this offset.
pub const PCM16_HEADER_LEN: usize = 44;
/// Length of a µ-law / A-law header: an 18-byte `fmt ` chunk
/// (`WAVEFORMATEX` with `cbSize` 0) and the `fact` chunk that non-PCM
/// formats carry.
pub const G711_HEADER_LEN: usize = 58;

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// How samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WavEncoding {
    /// 16-bit little-endian linear PCM (format tag 1).
    Pcm16,
    /// 8-bit G.711 µ-law (format tag 7).
    Ulaw,
    /// 8-bit G.711 A-law (format tag 6).
    Alaw,
}

impl WavEncoding {
    fn format_tag(self) -> u16 {
        match self {
            WavEncoding::Pcm16 => WAVE_FORMAT_PCM,
            WavEncoding::Ulaw => WAVE_FORMAT_MULAW,
            WavEncoding::Alaw => WAVE_FORMAT_ALAW,
        }
    }

    /// Bytes per sample of one channel.
    pub fn bytes_per_sample(self) -> u16 {
        match self {
            WavEncoding::Pcm16 => 2,
            WavEncoding::Ulaw | WavEncoding::Alaw => 1,
        }
    }
}

/// The audio format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WavFormat {
    /// Interleaved channels.
    pub channels: u16,
    /// Sample frames per second.
    pub sample_rate: u32,
    /// Sample encoding.
    pub encoding: WavEncoding,
}

impl WavFormat {
    /// Bytes per sample frame (all channels).
    pub fn block_align(&self) -> usize {
        self.channels as usize * self.encoding.bytes_per_sample() as usize
    }
}

/// Where the audio of a parsed file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// The `fmt ` chunk.
    pub format: WavFormat,
    /// Offset of the first audio byte.
    pub data_offset: usize,
    /// Audio bytes present: the declared size clamped to the file, rounded
    /// down to whole sample frames.
    pub data_len: usize,
}

/// What is wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WavError {
    /// Shorter than the smallest header.
    #[error("WAV file of {len} bytes is too short for a header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The file does not start with `RIFF`.
    #[error("not a WAV file: no RIFF header")]
    NotRiff,
    /// A RIFF file of another form than `WAVE`.
    #[error("not a WAV file: RIFF form is not WAVE")]
    NotWave,
    /// No `fmt ` chunk before the audio.
    #[error("WAV file has no fmt chunk before its data")]
    MissingFmt,
    /// No `data` chunk.
    #[error("WAV file has no data chunk")]
    MissingData,
    /// The `fmt ` chunk is too short or says zero channels or zero Hz.
    #[error("WAV fmt chunk is malformed: {0}")]
    BadFmt(&'static str),
    /// Not 16-bit PCM, µ-law or A-law.
    #[error(
        "unsupported WAV encoding (format tag {tag:#06x}, {bits} bits per sample): use 16-bit PCM, µ-law or A-law"
    )]
    UnsupportedEncoding {
        /// `wFormatTag` (the sub-format's for `WAVE_FORMAT_EXTENSIBLE`).
        tag: u16,
        /// `wBitsPerSample`.
        bits: u16,
    },
    /// A sample rate the media plane does not run at.
    #[error("unsupported sample rate {0} Hz: use 8000, 16000 or 48000")]
    UnsupportedRate(u32),
    /// Prompts are mono or stereo.
    #[error("unsupported channel count {0}: use mono or stereo")]
    UnsupportedChannels(u16),
    /// [`repair`] only fixes the 44-byte PCM16 headers we write.
    #[error("not a 44-byte 16-bit PCM header as the recorder writes: cannot repair")]
    NotOurHeader,
    /// Resampler construction failed.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// A header to write before the audio: 44 bytes for PCM16, 58 for G.711
/// (see [`G711_HEADER_LEN`]). Dereferences to its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavHeader {
    bytes: [u8; G711_HEADER_LEN],
    len: usize,
}

impl WavHeader {
    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Deref for WavHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Little-endian writer over a fixed buffer (sizes are known statically).
struct Put<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Put<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Writes a header for `fmt` into `buf` (44 or 58 bytes long).
fn write_header(buf: &mut [u8], fmt: &WavFormat, data_len: u32) {
    let g711 = fmt.encoding != WavEncoding::Pcm16;
    let block = fmt.block_align().min(u16::MAX as usize) as u16;
    let bits = fmt.encoding.bytes_per_sample() * 8;
    // RIFF size: everything after its own 8 bytes, including the pad byte
    // that follows an odd-sized data chunk.
    let riff = (buf.len() as u32 - 8)
        .saturating_add(data_len)
        .saturating_add(data_len & 1);
    let mut w = Put { buf, pos: 0 };
    w.bytes(b"RIFF");
    w.u32(riff);
    w.bytes(b"WAVE");
    w.bytes(b"fmt ");
    w.u32(if g711 { 18 } else { 16 });
    w.u16(fmt.encoding.format_tag());
    w.u16(fmt.channels);
    w.u32(fmt.sample_rate);
    w.u32(fmt.sample_rate.saturating_mul(block as u32));
    w.u16(block);
    w.u16(bits);
    if g711 {
        w.u16(0); // cbSize
        w.bytes(b"fact");
        w.u32(4);
        w.u32(data_len / block.max(1) as u32); // sample frames
    }
    w.bytes(b"data");
    w.u32(data_len);
}

/// The canonical 44-byte header of a 16-bit PCM file with `data_len` bytes
/// of audio.
pub fn pcm16_header(channels: u16, sample_rate: u32, data_len: u32) -> [u8; PCM16_HEADER_LEN] {
    let mut buf = [0u8; PCM16_HEADER_LEN];
    let fmt = WavFormat {
        channels,
        sample_rate,
        encoding: WavEncoding::Pcm16,
    };
    write_header(&mut buf, &fmt, data_len);
    buf
}

/// The header for `data_len` bytes of audio in `fmt`: 44 bytes for PCM16,
/// 58 for µ-law / A-law. An odd `data_len` is counted with its pad byte in
/// the RIFF size; the writer appends that zero byte after the audio.
pub fn header(fmt: &WavFormat, data_len: u32) -> WavHeader {
    let mut bytes = [0u8; G711_HEADER_LEN];
    let len = match fmt.encoding {
        WavEncoding::Pcm16 => PCM16_HEADER_LEN,
        WavEncoding::Ulaw | WavEncoding::Alaw => G711_HEADER_LEN,
    };
    write_header(&mut bytes[..len], fmt, data_len);
    WavHeader { bytes, len }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A plausible chunk id: four printable ASCII characters.
fn looks_like_chunk_id(b: &[u8], at: usize) -> bool {
    b.get(at..at + 4)
        .is_some_and(|id| id.iter().all(|c| (0x20..0x7F).contains(c)))
}

fn parse_fmt(body: &[u8]) -> Result<WavFormat, WavError> {
    let field16 = |at| le16(body, at).ok_or(WavError::BadFmt("shorter than 16 bytes"));
    let mut tag = field16(0)?;
    let channels = field16(2)?;
    let sample_rate = le32(body, 4).ok_or(WavError::BadFmt("shorter than 16 bytes"))?;
    let bits = field16(14)?;
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // WAVEFORMATEXTENSIBLE: the sub-format GUID's first two bytes are
        // the format tag.
        tag = le16(body, 24).ok_or(WavError::BadFmt("extensible format without sub-format"))?;
    }
    if channels == 0 {
        return Err(WavError::BadFmt("zero channels"));
    }
    if sample_rate == 0 {
        return Err(WavError::BadFmt("zero sample rate"));
    }
    let encoding = match (tag, bits) {
        (WAVE_FORMAT_PCM, 16) => WavEncoding::Pcm16,
        (WAVE_FORMAT_MULAW, 8) => WavEncoding::Ulaw,
        (WAVE_FORMAT_ALAW, 8) => WavEncoding::Alaw,
        _ => return Err(WavError::UnsupportedEncoding { tag, bits }),
    };
    Ok(WavFormat {
        channels,
        sample_rate,
        encoding,
    })
}

/// Finds the format and the audio of a WAVE file (see the module doc).
pub fn parse(bytes: &[u8]) -> Result<WavInfo, WavError> {
    if bytes.len() < 12 {
        return Err(WavError::TooShort { len: bytes.len() });
    }
    if &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    // A data chunk met before the fmt chunk: (offset, declared length).
    let mut early_data: Option<(usize, usize)> = None;
    let mut pos = 12usize;
    while let (Some(id), Some(size)) = (bytes.get(pos..pos + 4), le32(bytes, pos + 4)) {
        let body = pos + 8;
        let available = bytes.len() - body;
        let declared = size as usize;
        match id {
            b"fmt " => format = Some(parse_fmt(&bytes[body..body + declared.min(available)])?),
            b"data" => {
                // Sizes 0 and 0xFFFFFFFF are what streaming writers (and a
                // crash before the final patch) leave: the data runs to the
                // end. So does a size larger than the file.
                let unknown = size == 0 || size == u32::MAX || declared > available;
                let len = if unknown { available } else { declared };
                match format {
                    Some(format) => return Ok(info(format, body, len)),
                    None if unknown => break,
                    None => early_data = Some((body, len)),
                }
            }
            _ => {}
        }
        // Chunks are padded to even sizes (RIFF); tolerate writers that
        // forgot the pad byte.
        let end = body as u64 + size as u64;
        let mut next = end + (size & 1) as u64;
        if size & 1 == 1
            && !looks_like_chunk_id(bytes, next as usize)
            && looks_like_chunk_id(bytes, end as usize)
        {
            next = end;
        }
        if next > bytes.len() as u64 {
            break;
        }
        pos = next as usize;
    }
    match (format, early_data) {
        (Some(format), Some((offset, len))) => Ok(info(format, offset, len)),
        (Some(_), None) => Err(WavError::MissingData),
        (None, _) => Err(WavError::MissingFmt),
    }
}

fn info(format: WavFormat, data_offset: usize, len: usize) -> WavInfo {
    let block = format.block_align().max(1);
    WavInfo {
        format,
        data_offset,
        data_len: len - len % block,
    }
}

/// The header to write back at offset 0 of a 16-bit PCM recording of ours
/// (the 44-byte layout of [`pcm16_header`]) now `file_len` bytes long, whose
/// sizes a crash left wrong (0, or stale); `None` if they are right.
/// `first_bytes` is the file's start (at least 44 bytes). The data length
/// is rounded down to whole sample frames (a partly written last frame is
/// left out) and capped at what a RIFF size can express.
pub fn repair(
    file_len: u64,
    first_bytes: &[u8],
) -> Result<Option<[u8; PCM16_HEADER_LEN]>, WavError> {
    let Some(current) = first_bytes.get(..PCM16_HEADER_LEN) else {
        return Err(WavError::TooShort {
            len: first_bytes.len(),
        });
    };
    if file_len < PCM16_HEADER_LEN as u64 {
        return Err(WavError::TooShort {
            len: file_len.min(usize::MAX as u64) as usize,
        });
    }
    let ours = &current[0..4] == b"RIFF"
        && &current[8..16] == b"WAVEfmt "
        && le32(current, 16) == Some(16)
        && le16(current, 20) == Some(WAVE_FORMAT_PCM)
        && le16(current, 34) == Some(16)
        && &current[36..40] == b"data";
    if !ours {
        return Err(WavError::NotOurHeader);
    }
    let channels = le16(current, 22).unwrap_or(0);
    let sample_rate = le32(current, 24).unwrap_or(0);
    if channels == 0 || sample_rate == 0 {
        return Err(WavError::NotOurHeader);
    }
    let block = 2 * channels as u64;
    let max_data = (u32::MAX as u64 - (PCM16_HEADER_LEN as u64 - 8)) / block * block;
    let data = ((file_len - PCM16_HEADER_LEN as u64) / block * block).min(max_data);
    let fixed = pcm16_header(channels, sample_rate, data as u32);
    Ok((fixed[..] != current[..]).then_some(fixed))
}

/// Decodes a mono or stereo (downmixed) 16-bit PCM, µ-law or A-law file at
/// 8, 16 or 48 kHz into mono samples at `target_rate` (8, 16 or 48 kHz).
/// The resampler's delay is compensated: sample `n·to/from` of the result
/// lines up with input frame `n`, and the length is `frames·to/from`.
pub fn load_prompt(bytes: &[u8], target_rate: u32) -> Result<Vec<i16>, WavError> {
    let info = parse(bytes)?;
    let fmt = info.format;
    if !is_supported_rate(fmt.sample_rate) {
        return Err(WavError::UnsupportedRate(fmt.sample_rate));
    }
    if !is_supported_rate(target_rate) {
        return Err(WavError::UnsupportedRate(target_rate));
    }
    if !(1..=2).contains(&fmt.channels) {
        return Err(WavError::UnsupportedChannels(fmt.channels));
    }
    let data = &bytes[info.data_offset..info.data_offset + info.data_len];
    let channels = fmt.channels as usize;
    let width = fmt.encoding.bytes_per_sample() as usize;
    let sample = |chunk: &[u8]| -> i32 {
        match fmt.encoding {
            WavEncoding::Pcm16 => i16::from_le_bytes([chunk[0], chunk[1]]) as i32,
            WavEncoding::Ulaw => ulaw_decode(chunk[0]) as i32,
            WavEncoding::Alaw => alaw_decode(chunk[0]) as i32,
        }
    };
    let mono: Vec<i16> = data
        .chunks_exact(width * channels)
        .map(|frame| {
            let sum: i32 = frame.chunks_exact(width).map(sample).sum();
            // The mean of one or two i16 values fits an i16.
            (sum / channels as i32) as i16
        })
        .collect();
    if fmt.sample_rate == target_rate {
        return Ok(mono);
    }
    let mut resampler = Resampler::new(fmt.sample_rate, target_rate)?;
    let expected = mono.len() * target_rate as usize / fmt.sample_rate as usize;
    // Push the delay's worth of silence after the audio to flush the
    // filter, then drop the delay from the front.
    let flush = vec![0i16; resampler.latency_in()];
    let mut out = vec![0i16; resampler.output_len(mono.len() + flush.len())];
    let n = resampler.process(&mono, &mut out);
    let m = resampler.process(&flush, &mut out[n..]);
    out.truncate(n + m);
    out.drain(..resampler.latency_out().min(out.len()));
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::{alaw_encode, ulaw_encode};
    use crate::media::tone::test_signals::sine;

    fn pcm_file(channels: u16, rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut f = pcm16_header(channels, rate, (samples.len() * 2) as u32).to_vec();
        for s in samples {
            f.extend_from_slice(&s.to_le_bytes());
        }
        f
    }

    #[test]
    fn pcm16_header_is_the_canonical_44_bytes() {
        let h = pcm16_header(1, 8000, 16_000);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"RIFF");
        expected.extend_from_slice(&(36u32 + 16_000).to_le_bytes());
        expected.extend_from_slice(b"WAVEfmt ");
        expected.extend_from_slice(&16u32.to_le_bytes());
        expected.extend_from_slice(&1u16.to_le_bytes()); // PCM
        expected.extend_from_slice(&1u16.to_le_bytes()); // mono
        expected.extend_from_slice(&8000u32.to_le_bytes());
        expected.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
        expected.extend_from_slice(&2u16.to_le_bytes()); // block align
        expected.extend_from_slice(&16u16.to_le_bytes());
        expected.extend_from_slice(b"data");
        expected.extend_from_slice(&16_000u32.to_le_bytes());
        assert_eq!(h.to_vec(), expected);
        let fmt = WavFormat {
            channels: 1,
            sample_rate: 8000,
            encoding: WavEncoding::Pcm16,
        };
        assert_eq!(header(&fmt, 16_000).as_bytes(), &h[..]);
        assert_eq!(header(&fmt, 16_000).len(), PCM16_HEADER_LEN);
    }

    #[test]
    fn g711_header_carries_cbsize_and_a_fact_chunk() {
        let fmt = WavFormat {
            channels: 2,
            sample_rate: 8000,
            encoding: WavEncoding::Alaw,
        };
        let h = header(&fmt, 801);
        assert_eq!(h.len(), G711_HEADER_LEN);
        assert_eq!(le32(&h, 4), Some(50 + 801 + 1)); // pad byte counted
        assert_eq!(le32(&h, 16), Some(18));
        assert_eq!(le16(&h, 20), Some(WAVE_FORMAT_ALAW));
        assert_eq!(le32(&h, 28), Some(16_000)); // byte rate
        assert_eq!(le16(&h, 32), Some(2)); // block align
        assert_eq!(le16(&h, 34), Some(8));
        assert_eq!(le16(&h, 36), Some(0)); // cbSize
        assert_eq!(&h[38..42], b"fact");
        assert_eq!(le32(&h, 46), Some(400)); // frames
        assert_eq!(&h[50..54], b"data");
        assert_eq!(le32(&h, 54), Some(801));
    }

    #[test]
    fn parse_reads_back_every_header_we_write() {
        for encoding in [WavEncoding::Pcm16, WavEncoding::Ulaw, WavEncoding::Alaw] {
            for channels in [1u16, 2] {
                let fmt = WavFormat {
                    channels,
                    sample_rate: 16_000,
                    encoding,
                };
                let data_len = 320 * fmt.block_align();
                let mut file = header(&fmt, data_len as u32).to_vec();
                file.resize(file.len() + data_len, 0x55);
                let info = parse(&file).unwrap();
                assert_eq!(info.format, fmt);
                assert_eq!(info.data_offset, header(&fmt, 0).len());
                assert_eq!(info.data_len, data_len);
            }
        }
    }

    /// A file with chunks in a given order, sizes as written.
    fn chunked(chunks: &[(&[u8; 4], &[u8], bool)]) -> Vec<u8> {
        let mut f = b"RIFF\0\0\0\0WAVE".to_vec();
        for (id, body, pad) in chunks {
            f.extend_from_slice(*id);
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(body);
            if *pad && body.len() % 2 == 1 {
                f.push(0);
            }
        }
        let riff = (f.len() - 8) as u32;
        f[4..8].copy_from_slice(&riff.to_le_bytes());
        f
    }

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * bits as u32 / 8).to_le_bytes());
        b.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    #[test]
    fn parse_skips_list_chunks_and_odd_sizes_with_or_without_pad() {
        let fmt = fmt_body(1, 1, 8000, 16);
        for pad in [true, false] {
            let file = chunked(&[
                (b"LIST", b"INFOISFT\x05\0\0\0sox\0\0", pad),
                (b"junk", b"odd", pad),
                (b"fmt ", &fmt, pad),
                (b"data", &[1, 0, 2, 0, 3, 0], pad),
            ]);
            let info = parse(&file).unwrap();
            assert_eq!(info.format.encoding, WavEncoding::Pcm16);
            assert_eq!(
                &file[info.data_offset..info.data_offset + info.data_len],
                &[1, 0, 2, 0, 3, 0]
            );
        }
    }

    #[test]
    fn parse_accepts_data_before_fmt() {
        let fmt = fmt_body(7, 1, 8000, 8);
        let file = chunked(&[(b"data", &[0xFF; 4], true), (b"fmt ", &fmt, true)]);
        let info = parse(&file).unwrap();
        assert_eq!(info.format.encoding, WavEncoding::Ulaw);
        assert_eq!((info.data_offset, info.data_len), (20, 4));
    }

    #[test]
    fn parse_clamps_truncated_and_streaming_data_sizes() {
        let mut file = pcm_file(1, 8000, &[7; 100]);
        // Truncated: header says 200 bytes, 151 remain: 75 whole samples.
        file.truncate(44 + 151);
        let info = parse(&file).unwrap();
        assert_eq!(info.data_len, 150);
        for size in [0u32, u32::MAX] {
            let mut f = pcm_file(1, 8000, &[7; 100]);
            f[40..44].copy_from_slice(&size.to_le_bytes());
            assert_eq!(parse(&f).unwrap().data_len, 200, "size {size:#x}");
        }
    }

    #[test]
    fn parse_rounds_data_down_to_whole_frames() {
        let fmt = fmt_body(1, 2, 8000, 16);
        let file = chunked(&[(b"fmt ", &fmt, true), (b"data", &[1; 10], true)]);
        assert_eq!(parse(&file).unwrap().data_len, 8);
    }

    #[test]
    fn parse_understands_wave_format_extensible() {
        let mut fmt = fmt_body(0xFFFE, 1, 48_000, 16);
        fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        fmt.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        fmt.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        fmt.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
        ]);
        let file = chunked(&[(b"fmt ", &fmt, true), (b"data", &[0; 4], true)]);
        let info = parse(&file).unwrap();
        assert_eq!(info.format.encoding, WavEncoding::Pcm16);
        assert_eq!(info.format.sample_rate, 48_000);
    }

    #[test]
    fn parse_names_what_is_wrong() {
        assert_eq!(parse(b"RIFF"), Err(WavError::TooShort { len: 4 }));
        assert_eq!(parse(b"RIFX\0\0\0\0WAVEfmt "), Err(WavError::NotRiff));
        assert_eq!(parse(b"RIFF\0\0\0\0AVI LIST"), Err(WavError::NotWave));
        let data_only = chunked(&[(b"data", &[0; 4], true)]);
        assert_eq!(parse(&data_only), Err(WavError::MissingFmt));
        let fmt = fmt_body(1, 1, 8000, 16);
        let fmt_only = chunked(&[(b"fmt ", &fmt, true)]);
        assert_eq!(parse(&fmt_only), Err(WavError::MissingData));
        let float = chunked(&[(b"fmt ", &fmt_body(3, 1, 8000, 32), true)]);
        let err = parse(&float).unwrap_err();
        assert_eq!(err, WavError::UnsupportedEncoding { tag: 3, bits: 32 });
        assert!(err.to_string().contains("use 16-bit PCM, µ-law or A-law"));
        let short_fmt = chunked(&[(b"fmt ", &[1, 0, 1, 0], true)]);
        assert!(matches!(parse(&short_fmt), Err(WavError::BadFmt(_))));
        let no_channels = chunked(&[(b"fmt ", &fmt_body(1, 0, 8000, 16), true)]);
        assert!(matches!(parse(&no_channels), Err(WavError::BadFmt(_))));
    }

    #[test]
    fn parse_never_panics_on_cut_or_scrambled_files() {
        let file = chunked(&[
            (b"LIST", b"INFOabc", true),
            (b"fmt ", &fmt_body(6, 2, 16_000, 8), true),
            (b"data", &[0xD5; 33], true),
        ]);
        for len in 0..=file.len() {
            let _ = parse(&file[..len]);
            let _ = load_prompt(&file[..len], 8000);
        }
        let mut state = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut f = file.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % f.len();
                f[at] = (state >> 24) as u8;
            }
            if let Ok(info) = parse(&f) {
                assert!(info.data_offset + info.data_len <= f.len());
                assert_eq!(info.data_len % info.format.block_align(), 0);
            }
        }
    }

    #[test]
    fn repair_fixes_sizes_a_crash_left_at_zero() {
        let mut file = pcm_file(1, 16_000, &[5; 1000]);
        file[4..8].fill(0);
        file[40..44].fill(0);
        let fixed = repair(file.len() as u64, &file[..64]).unwrap().unwrap();
        assert_eq!(fixed, pcm16_header(1, 16_000, 2000));
        file[..44].copy_from_slice(&fixed);
        assert_eq!(repair(file.len() as u64, &file).unwrap(), None);
    }

    #[test]
    fn repair_rounds_down_to_whole_frames_and_updates_stale_sizes() {
        // Stereo: 4-byte frames; the crash left 3 bytes of a frame.
        let file = pcm_file(2, 8000, &[1; 40]);
        let fixed = repair(file.len() as u64 + 1000 + 3, &file)
            .unwrap()
            .unwrap();
        assert_eq!(le32(&fixed, 40), Some(80 + 1000));
        assert_eq!(le32(&fixed, 4), Some(36 + 1080));
        // A header for more data than the file holds is shrunk too.
        let fixed = repair(44 + 8, &file).unwrap().unwrap();
        assert_eq!(le32(&fixed, 40), Some(8));
    }

    #[test]
    fn repair_caps_data_at_the_riff_limit() {
        let file = pcm16_header(1, 8000, 0);
        let fixed = repair(8 << 30, &file).unwrap().unwrap();
        let data = le32(&fixed, 40).unwrap();
        assert_eq!(data % 2, 0);
        assert!(data as u64 + 36 <= u32::MAX as u64);
        assert_eq!(le32(&fixed, 4), Some(data + 36));
    }

    #[test]
    fn repair_refuses_headers_it_did_not_write() {
        let fmt = WavFormat {
            channels: 1,
            sample_rate: 8000,
            encoding: WavEncoding::Ulaw,
        };
        let ulaw = header(&fmt, 0);
        assert_eq!(repair(1000, &ulaw), Err(WavError::NotOurHeader));
        assert_eq!(repair(1000, &[0; 20]), Err(WavError::TooShort { len: 20 }));
        assert_eq!(
            repair(30, &pcm16_header(1, 8000, 0)),
            Err(WavError::TooShort { len: 30 })
        );
    }

    #[test]
    fn load_prompt_at_the_same_rate_returns_the_samples() {
        let samples: Vec<i16> = (0..500).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let file = pcm_file(1, 8000, &samples);
        assert_eq!(load_prompt(&file, 8000).unwrap(), samples);
    }

    #[test]
    fn load_prompt_downmixes_stereo() {
        let interleaved = [1000i16, 3000, -2000, -4000, i16::MAX, i16::MAX];
        let file = pcm_file(2, 16_000, &interleaved);
        assert_eq!(
            load_prompt(&file, 16_000).unwrap(),
            vec![2000, -3000, i16::MAX]
        );
    }

    #[test]
    fn load_prompt_decodes_g711() {
        let pcm = sine(440.0, 8000, 9000.0, 400);
        for (encoding, encode, decode) in [
            (
                WavEncoding::Ulaw,
                ulaw_encode as fn(i16) -> u8,
                ulaw_decode as fn(u8) -> i16,
            ),
            (WavEncoding::Alaw, alaw_encode, alaw_decode),
        ] {
            let fmt = WavFormat {
                channels: 1,
                sample_rate: 8000,
                encoding,
            };
            let mut file = header(&fmt, pcm.len() as u32).to_vec();
            file.extend(pcm.iter().map(|&s| encode(s)));
            let expected: Vec<i16> = pcm.iter().map(|&s| decode(encode(s))).collect();
            assert_eq!(load_prompt(&file, 8000).unwrap(), expected);
        }
    }

    #[test]
    fn load_prompt_resamples_with_the_delay_removed() {
        // 8 kHz prompt played at 48 kHz: same length in time, and output
        // sample 6n lines up with input sample n.
        let input = sine(500.0, 8000, 10_000.0, 800);
        let out = load_prompt(&pcm_file(1, 8000, &input), 48_000).unwrap();
        assert_eq!(out.len(), 4800);
        for n in 40..760 {
            let d = (out[6 * n] as i32 - input[n] as i32).abs();
            assert!(d < 60, "sample {n}: {} vs {}", out[6 * n], input[n]);
        }
        // 48 kHz down to 16 kHz: output n lines up with input 3n.
        let input = sine(500.0, 48_000, 10_000.0, 4800);
        let out = load_prompt(&pcm_file(1, 48_000, &input), 16_000).unwrap();
        assert_eq!(out.len(), 1600);
        for n in 40..1560 {
            let d = (out[n] as i32 - input[3 * n] as i32).abs();
            assert!(d < 60, "sample {n}: {} vs {}", out[n], input[3 * n]);
        }
    }

    #[test]
    fn load_prompt_explains_unsupported_files() {
        let file = pcm_file(1, 44_100, &[0; 10]);
        let err = load_prompt(&file, 8000).unwrap_err();
        assert_eq!(err, WavError::UnsupportedRate(44_100));
        assert_eq!(
            err.to_string(),
            "unsupported sample rate 44100 Hz: use 8000, 16000 or 48000"
        );
        let file = pcm_file(3, 8000, &[0; 9]);
        assert_eq!(
            load_prompt(&file, 8000),
            Err(WavError::UnsupportedChannels(3))
        );
        let file = pcm_file(1, 8000, &[0; 9]);
        assert_eq!(
            load_prompt(&file, 22_050),
            Err(WavError::UnsupportedRate(22_050))
        );
    }
}
