//! Identifiers the appliance mints — To/From tags, Via branches, Call-IDs —
//! each carrying the number of the shard that owns the transaction or dialog
//! (ARCHITECTURE: "every identifier the appliance mints encodes the owning
//! shard"), so a message that the kernel hands to another shard is forwarded
//! to its owner once over the mesh.
//!
//! Layout: `sb` + three hex digits of shard + 16 random hex digits; branches
//! add the RFC 3261 magic cookie in front (`z9hG4bK`). Randomness comes from
//! a seeded RNG the shell injects.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Index of a shard (0-based, < 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

const MAGIC: &[u8] = b"z9hG4bK";
const PREFIX: &[u8] = b"sb";

/// Mints identifiers for one shard.
#[derive(Debug)]
pub struct IdGen {
    shard: ShardId,
    rng: ChaCha8Rng,
}

impl IdGen {
    pub fn new(shard: ShardId, seed: u64) -> Self {
        IdGen {
            shard,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn mint(&mut self, prefix: &str) -> String {
        let r: u64 = self.rng.random();
        format!("{prefix}sb{:03x}{r:016x}", self.shard.0 & 0xfff)
    }

    /// A To/From tag.
    pub fn tag(&mut self) -> String {
        self.mint("")
    }

    /// A Via branch with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        self.mint("z9hG4bK")
    }

    /// A Call-ID (`…@domain`).
    pub fn call_id(&mut self, domain: &str) -> String {
        format!("{}@{domain}", self.mint(""))
    }

    /// Random bytes for keys (e.g. the digest nonce key).
    pub fn key32(&mut self) -> [u8; 32] {
        let mut k = [0u8; 32];
        self.rng.fill_bytes(&mut k);
        k
    }
}

/// The shard encoded in an identifier we minted, `None` for foreign ones.
pub fn shard_of(id: &[u8]) -> Option<ShardId> {
    let id = id.strip_prefix(MAGIC).unwrap_or(id);
    let rest = id.strip_prefix(PREFIX)?;
    if rest.len() < 3 + 16 {
        return None;
    }
    let hex = std::str::from_utf8(&rest[..3]).ok()?;
    u16::from_str_radix(hex, 16).ok().map(ShardId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_encode_their_shard() {
        let mut g = IdGen::new(ShardId(7), 1);
        for id in [g.tag(), g.branch(), g.call_id("switchboard.local")] {
            assert_eq!(shard_of(id.as_bytes()), Some(ShardId(7)), "{id}");
        }
        assert!(g.branch().starts_with("z9hG4bK"));
    }

    #[test]
    fn foreign_ids_have_no_shard() {
        assert_eq!(shard_of(b"z9hG4bKkdjuw"), None);
        assert_eq!(shard_of(b"sb"), None);
        assert_eq!(shard_of(b"sbzzz0000000000000000"), None);
        assert_eq!(shard_of(b""), None);
    }
}
