//! Fuzz target `wav`: the WAVE parser, the crash repair of recordings and
//! prompt loading (`media::wav::{parse, repair, load_prompt, header}`).
//!
//! Input: one file's bytes. The prompt's target rate is 8, 16 or 48 kHz by
//! the input length modulo 3, so the seeds stay real files
//! (`seeds/wav/`: 16-bit PCM, µ-law and A-law with `fact`, stereo,
//! `WAVE_FORMAT_EXTENSIBLE`, a `LIST` chunk and an unpadded odd chunk, a
//! recording cut off by a crash, an unsupported 44.1 kHz file).
//!
//! Invariants checked (beyond "never panics"):
//! * a parsed file's audio lies within the input and is whole sample
//!   frames; writing `header` for its format and audio length, then the
//!   audio, parses back to the same format and length;
//! * `load_prompt` succeeds only on parsed files and returns exactly
//!   frames × target / source samples;
//! * `repair` of the input as a file of its own length either leaves it
//!   alone (then the file parses with all its audio after byte 44) or gives
//!   a header that, written back, parses, covers the audio and needs no
//!   further repair.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::wav::{PCM16_HEADER_LEN, header, load_prompt, parse, repair};

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    if let Ok(info) = parsed {
        assert!(info.data_offset + info.data_len <= data.len());
        let block = info.format.block_align();
        assert_eq!(info.data_len % block, 0);
        let audio = &data[info.data_offset..info.data_offset + info.data_len];
        let mut file = header(&info.format, audio.len() as u32).to_vec();
        file.extend_from_slice(audio);
        let again = parse(&file).expect("our own header parses");
        assert_eq!(again.format, info.format);
        assert_eq!(again.data_len, audio.len());
    }

    let target = [8000u32, 16_000, 48_000][data.len() % 3];
    if let Ok(samples) = load_prompt(data, target) {
        let info = parsed.expect("a loaded prompt parsed");
        let frames = info.data_len / info.format.block_align();
        let expected = frames * target as usize / info.format.sample_rate as usize;
        assert_eq!(samples.len(), expected);
    }

    match repair(data.len() as u64, data) {
        Ok(None) => {
            let info = parse(data).expect("a header that needs no repair parses");
            assert_eq!(info.data_offset, PCM16_HEADER_LEN);
            let block = info.format.block_align();
            assert_eq!(
                info.data_len,
                (data.len() - PCM16_HEADER_LEN) / block * block
            );
        }
        Ok(Some(fixed)) => {
            let mut file = data.to_vec();
            file[..PCM16_HEADER_LEN].copy_from_slice(&fixed);
            let info = parse(&file).expect("a repaired header parses");
            assert_eq!(info.data_offset, PCM16_HEADER_LEN);
            let block = info.format.block_align();
            assert_eq!(
                info.data_len,
                (data.len() - PCM16_HEADER_LEN) / block * block
            );
            assert_eq!(repair(file.len() as u64, &file), Ok(None));
        }
        Err(_) => {}
    }
});
