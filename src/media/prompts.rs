//! The prompts and music named in `[prompts]`, decoded once at start.
//!
//! Each entry is a WAV file (16-bit PCM, µ-law or A-law; mono or stereo;
//! 8, 16 or 48 kHz) decoded to mono 8 kHz samples — the rate the media
//! engine encodes from — and shared by every shard and call that plays it.
//!
//! [`load`] is the one place that reads the files, at start (`run`) and in
//! `check-config`: every entry that cannot be used is a [`ConfigProblem`] at
//! the entry's file, line and key, so a bad prompt is refused like any other
//! config mistake. After that the table is immutable.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::player::Clip;
use super::wav;
use crate::config::{Config, ConfigErrors, ConfigProblem, PromptConfig};

/// The rate prompts are decoded to: the media engine's.
pub const RATE: u32 = 8000;

/// Longest prompt accepted, in seconds: every clip stays in memory (16 KB
/// per second at [`RATE`]), so 10 minutes is 9.6 MB.
pub const MAX_SECONDS: usize = 600;

/// Largest file read: [`MAX_SECONDS`] of the widest accepted format
/// (48 kHz, stereo, 16-bit) plus room for other chunks. A larger file is
/// refused without being read whole.
const MAX_FILE_BYTES: u64 = MAX_SECONDS as u64 * 48_000 * 2 * 2 + (1 << 20);

/// What a prompt file must be, for messages.
const ACCEPTED: &str = "16-bit PCM, µ-law or A-law, mono or stereo, 8, 16 or 48 kHz";

/// Decoded prompts by name; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Prompts(Arc<BTreeMap<String, Clip>>);

impl Prompts {
    /// The clip named `name`.
    pub fn get(&self, name: &str) -> Option<Clip> {
        self.0.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A table of the given clips (tests: prompts without files).
    #[cfg(test)]
    pub(crate) fn from_clips(clips: Vec<(&str, Clip)>) -> Prompts {
        Prompts(Arc::new(
            clips.into_iter().map(|(n, c)| (n.to_owned(), c)).collect(),
        ))
    }
}

/// Reads and decodes every `[prompts]` file of `cfg`, loaded from
/// `config_file` (relative files are relative to its directory). Every
/// file that cannot be used is a problem naming its key.
pub fn load(config_file: &Path, cfg: &Config) -> Result<Prompts, ConfigErrors> {
    let dir = config_file.parent().unwrap_or(Path::new(""));
    let mut clips = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in &cfg.prompts {
        match load_file(&resolve(dir, entry)) {
            Ok(clip) => {
                clips.insert(entry.name.clone(), clip);
            }
            Err(message) => problems.push(ConfigProblem {
                file: entry.origin_file.clone(),
                line: entry.line,
                key: format!("prompts.{}", entry.name),
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(Prompts(Arc::new(clips)))
    } else {
        Err(ConfigErrors(problems))
    }
}

/// The file of `entry`, relative to the config file's directory `dir`
/// unless absolute, made absolute so problems say exactly where it looked.
fn resolve(dir: &Path, entry: &PromptConfig) -> PathBuf {
    let path = dir.join(&entry.file);
    std::path::absolute(&path).unwrap_or(path)
}

/// Reads and decodes one file; the error is the problem's message.
fn load_file(path: &Path) -> Result<Clip, String> {
    let shown = path.display();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{shown} is over {} MB, longer than {} minutes in any accepted format (expected at most {} minutes of audio)",
            MAX_FILE_BYTES / 1_000_000,
            MAX_SECONDS / 60,
            MAX_SECONDS / 60,
        ));
    }
    let samples = wav::load_prompt(&bytes, RATE)
        .map_err(|e| format!("{shown} is not a playable WAV: {e} (expected {ACCEPTED})"))?;
    if samples.is_empty() {
        return Err(format!(
            "{shown} holds no audio: its data chunk is empty (expected a WAV file with sound in it)"
        ));
    }
    let limit = MAX_SECONDS * RATE as usize;
    if samples.len() > limit {
        return Err(format!(
            "{shown} lasts {:.1} s (expected at most {} minutes: prompts are held in memory, 16 KB per second)",
            samples.len() as f64 / f64::from(RATE),
            MAX_SECONDS / 60,
        ));
    }
    Ok(samples.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::media::g711::{ulaw_decode, ulaw_encode};
    use crate::media::wav::{WavEncoding, WavFormat, header, pcm16_header};

    fn pcm16(channels: u16, rate: u32, samples: &[i16]) -> Vec<u8> {
        let mut file = pcm16_header(channels, rate, (samples.len() * 2) as u32).to_vec();
        file.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        file
    }

    /// Parses `text` as the config file `dir/site.toml` and loads its prompts.
    fn load_in(dir: &Path, text: &str) -> Result<Prompts, Vec<String>> {
        let config_file = dir.join("site.toml");
        let label = config_file.display().to_string();
        let cfg = config::parse(&label, text, &[]).unwrap_or_else(|e| panic!("{e}"));
        load(&config_file, &cfg).map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn relative_files_are_found_next_to_the_config_and_absolute_ones_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("prompts")).unwrap();
        let tone: Vec<i16> = (0..800).map(|i| (i * 97 % 4000 - 2000) as i16).collect();
        std::fs::write(dir.path().join("prompts/tone.wav"), pcm16(1, 8000, &tone)).unwrap();
        // µ-law at 8 kHz, and 16 kHz stereo PCM (downmixed, resampled).
        let fmt = WavFormat {
            channels: 1,
            sample_rate: 8000,
            encoding: WavEncoding::Ulaw,
        };
        let mut ulaw = header(&fmt, 400).to_vec();
        ulaw.extend(tone[..400].iter().map(|&s| ulaw_encode(s)));
        let abs = other.path().join("hello.wav");
        std::fs::write(&abs, ulaw).unwrap();
        std::fs::write(dir.path().join("wide.wav"), pcm16(2, 16_000, &[300; 3200])).unwrap();

        let text = format!(
            "[prompts]\ntone = \"prompts/tone.wav\"\nhello = {:?}\nwide = \"wide.wav\"\n",
            abs.display().to_string()
        );
        let prompts = load_in(dir.path(), &text).unwrap();
        assert_eq!(prompts.len(), 3);
        assert_eq!(&prompts.get("tone").unwrap()[..], &tone[..]);
        let hello = prompts.get("hello").unwrap();
        let expected: Vec<i16> = tone[..400]
            .iter()
            .map(|&s| ulaw_decode(ulaw_encode(s)))
            .collect();
        assert_eq!(&hello[..], &expected[..]);
        assert_eq!(prompts.get("wide").unwrap().len(), 800);
        assert!(prompts.get("nothing").is_none());
    }

    #[test]
    fn every_unusable_file_is_a_problem_at_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::path::absolute(dir.path()).unwrap();
        let d = d.display();
        std::fs::write(dir.path().join("good.wav"), pcm16(1, 8000, &[1, 2, 3])).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not audio").unwrap();
        std::fs::write(dir.path().join("cd.wav"), pcm16(2, 44_100, &[0; 8])).unwrap();
        std::fs::write(dir.path().join("empty.wav"), pcm16(1, 8000, &[])).unwrap();
        let long = vec![0i16; MAX_SECONDS * 8000 + 8000];
        std::fs::write(dir.path().join("long.wav"), pcm16(1, 8000, &long)).unwrap();
        let text = "[prompts]\ngood = \"good.wav\"\nmissing = \"no/such.wav\"\nnotes = \"notes.txt\"\ncd = \"cd.wav\"\nempty = \"./empty.wav\"\nlong = \"long.wav\"\ndir = \".\"\n";
        let site = format!("{d}/site.toml");
        assert_eq!(
            load_in(dir.path(), text).unwrap_err(),
            [
                format!(
                    "{site}:3: prompts.missing: cannot read {d}/no/such.wav: No such file or directory (os error 2)"
                ),
                format!(
                    "{site}:4: prompts.notes: {d}/notes.txt is not a playable WAV: WAV file of 9 bytes is too short for a header (expected {ACCEPTED})"
                ),
                format!(
                    "{site}:5: prompts.cd: {d}/cd.wav is not a playable WAV: unsupported sample rate 44100 Hz: use 8000, 16000 or 48000 (expected {ACCEPTED})"
                ),
                format!(
                    "{site}:6: prompts.empty: {d}/empty.wav holds no audio: its data chunk is empty (expected a WAV file with sound in it)"
                ),
                format!(
                    "{site}:7: prompts.long: {d}/long.wav lasts 601.0 s (expected at most 10 minutes: prompts are held in memory, 16 KB per second)"
                ),
                format!("{site}:8: prompts.dir: cannot read {d}: Is a directory (os error 21)"),
            ]
        );
    }

    #[test]
    fn a_file_too_big_for_ten_minutes_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(dir.path().join("big.wav")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap(); // sparse: cheap to make
        let err = load_in(dir.path(), "[prompts]\nbig = \"big.wav\"\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].ends_with("big.wav is over 116 MB, longer than 10 minutes in any accepted format (expected at most 10 minutes of audio)"),
            "{err:?}"
        );
    }

    #[test]
    fn a_prompt_set_on_the_command_line_is_reported_as_set() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("site.toml");
        let cfg = config::parse(
            "site.toml",
            "",
            &["prompts.hold=\"/no/such/hold.wav\"".into()],
        )
        .unwrap();
        let err = load(&config_file, &cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--set prompts.hold: cannot read /no/such/hold.wav: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn no_entries_give_an_empty_table() {
        let prompts = load(Path::new("site.toml"), &Config::default()).unwrap();
        assert!(prompts.is_empty());
    }

    #[test]
    fn the_demo_hold_music_loads_and_loops_quietly() {
        let config_file = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/firmware-config/default.toml"
        ));
        let cfg = config::load(config_file, &[]).unwrap();
        let name = cfg
            .media
            .hold_music
            .as_deref()
            .expect("the demo plays hold music");
        let prompts = load(config_file, &cfg).unwrap();
        let music = prompts.get(name).unwrap();
        // About 12 s at 8 kHz.
        assert!(
            (11 * 8000..=13 * 8000).contains(&music.len()),
            "{}",
            music.len()
        );
        // Peak around -12 dBFS (8231), well clear of clipping.
        let peak = music.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((7000..=9000).contains(&peak), "peak {peak}");
        // It starts and ends in silence, so the loop point does not click,
        // and it is not silent in between.
        for s in music[..8].iter().chain(&music[music.len() - 8..]) {
            assert!(s.unsigned_abs() < 100, "edge sample {s}");
        }
        let rms =
            (music.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / music.len() as f64).sqrt();
        assert!(rms > 1000.0, "rms {rms}");
    }
}
