//! Media plane: everything a shard does with RTP, as sans-IO pieces.
//!
//! Nothing here reads the clock, touches a socket or a file (but
//! [`prompts::load`], once at start), or spawns a thread: time comes in as
//! `now` (or a sample/millisecond count), packets come in as byte slices,
//! and output goes into caller-provided buffers.
//!
//! | module | owns |
//! | --- | --- |
//! | [`anchor`] | SDP rewriting: each leg talks to the appliance (RFC 3264) |
//! | [`g711`] | µ-law / A-law (ITU-T G.711) encode and decode |
//! | [`resample`] | 8/16/48 kHz conversion of 16-bit linear PCM |
//! | [`tone`] | tone and DTMF generation |
//! | [`dtmf`] | RFC 4733 telephone-events and in-band (Goertzel) detection |
//! | [`opus`] | Opus (RFC 6716, RTP per RFC 7587) through libopus |
//! | [`wav`] | WAV headers: write, parse, repair; prompt loading |
//! | [`jitter`] | adaptive jitter buffer |
//! | [`plc`] | packet-loss concealment for decoded audio |
//! | [`mixer`] | N−1 mixes per participant |
//! | [`quality`] | RFC 3550 receive statistics and an estimated MOS |
//! | [`rtcp`] | RTCP SR/RR parse and build |
//! | [`reports`] | RTCP we generate for a leg: schedule, SR/RR, LSR/DLSR |
//! | [`recorder`] | stereo recording timeline aligned to wall time |
//! | [`player`] | prompt and music playback |
//! | [`prompts`] | the `[prompts]` WAV files, decoded once at start |
//! | [`transcode`] | decoding, and bridging legs that share no codec |
//! | [`conference`] | a conference of legs: each hears the mix of the others |
//! | [`engine`] | the shard's media engine: legs, relay, recording, transcoding |
//! | [`rtp`] | RTP headers |

pub mod anchor;
pub mod conference;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod opus;
pub mod player;
pub mod plc;
pub mod prompts;
pub mod quality;
pub mod recorder;
pub mod reports;
pub mod resample;
pub mod rtcp;
pub mod rtp;
#[cfg(test)]
pub(crate) mod testaudio;
pub mod tone;
pub mod transcode;
pub mod wav;
