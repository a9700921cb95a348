//! Hash maps and sets keyed by SHA-256 digests (leaf hashes, block ids).
//!
//! Their keys are already uniformly random, so SipHash (std's default)
//! only costs time: under load it was about 4% of all CPU, spent on the
//! mempool, the dedup window, the waiters and the leaf index's memory
//! level. [`DigestState`] instead mixes the first eight bytes of the key
//! with a per-map random secret. An attacker can choose entries, and so
//! grind leaf hashes, but cannot see the secret, so cannot aim them at one
//! bucket (the same argument as for SipHash's key).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` keyed by digests.
pub type DigestMap<K, V> = HashMap<K, V, DigestState>;
/// A `HashSet` of digests.
pub type DigestSet<K> = HashSet<K, DigestState>;

/// Builds [`DigestHasher`]s with a secret drawn from the OS (through std's
/// `RandomState`) for each map.
#[derive(Clone, Debug)]
pub struct DigestState {
    secret: u64,
    multiplier: u64,
}

impl Default for DigestState {
    fn default() -> Self {
        let random = RandomState::new();
        DigestState {
            secret: random.hash_one(0u8),
            // Odd, so the multiplication is a bijection.
            multiplier: random.hash_one(1u8) | 1,
        }
    }
}

impl BuildHasher for DigestState {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            state: self.secret,
            multiplier: self.multiplier,
        }
    }
}

/// Folds whatever the key writes into 64 bits. Digests write a length and
/// 32 bytes; other small keys work too, only not faster than SipHash.
#[derive(Debug)]
pub struct DigestHasher {
    state: u64,
    multiplier: u64,
}

impl DigestHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(self.multiplier);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            // A digest: its first 8 bytes are as random as all 32.
            self.mix(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")));
            if bytes.len() < 32 {
                // Not a digest: keep every byte in.
                for chunk in bytes[8..].chunks(8) {
                    let mut word = [0u8; 8];
                    word[..chunk.len()].copy_from_slice(chunk);
                    self.mix(u64::from_le_bytes(word));
                }
            }
        } else {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            self.mix(u64::from_le_bytes(word) ^ ((bytes.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::merkle::{Hash, leaf_hash};

    #[test]
    fn maps_keyed_by_digests_behave_like_maps() {
        let mut map: DigestMap<Hash, u64> = DigestMap::default();
        for i in 0..10_000u64 {
            assert!(map.insert(leaf_hash(&i.to_be_bytes()), i).is_none());
        }
        for i in 0..10_000u64 {
            assert_eq!(map.get(&leaf_hash(&i.to_be_bytes())), Some(&i));
        }
        assert!(!map.contains_key(&leaf_hash(b"absent")));
        let set: DigestSet<&Hash> = map.keys().collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn equal_keys_hash_equally_and_secrets_differ_between_maps() {
        let a = DigestState::default();
        let b = DigestState::default();
        let key = leaf_hash(b"x");
        assert_eq!(a.hash_one(key), a.hash_one(key));
        assert_ne!(a.hash_one(key), a.hash_one(leaf_hash(b"y")));
        // Two maps share no secret (2^-64 chance of a false failure).
        assert_ne!(a.hash_one(key), b.hash_one(key));
    }

    #[test]
    fn short_and_odd_sized_keys_keep_every_byte() {
        let s = DigestState::default();
        assert_ne!(
            s.hash_one([1u8; 12]),
            s.hash_one([[1u8; 8], [2u8; 8]].concat())
        );
        let mut nine = [0u8; 9];
        let one = s.hash_one(nine);
        nine[8] = 1;
        assert_ne!(one, s.hash_one(nine));
        assert_ne!(s.hash_one(1u16), s.hash_one(2u16));
    }
}
