//! Pairwise mask streams: ChaCha20 keystreams read as little-endian u64 ring elements.
//!
//! Convention: the mask of a pair for a round is the ChaCha20 keystream (20 rounds, original
//! 64-bit-counter / 64-bit-nonce layout, nonce = 0, block counter from 0) under the 32-byte round
//! seed; element k is bytes 8k..8k+8 read little-endian. For the first 2^32 blocks (256 GiB) this
//! is identical to the RFC 8439 keystream with an all-zero 96-bit nonce, so a site written in
//! another language can reproduce it. Each seed is used for exactly one round, hence a fixed nonce.
//!
//! Sign: of the two sites of a pair, the one whose id is smaller (byte-wise) *adds* the mask and
//! the other *subtracts* it, in wrapping u64 arithmetic; summed over all sites every pair
//! contributes `+m − m = 0`.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Keystream bytes generated per refill; a multiple of ChaCha20's 64-byte block and of 8.
const CHUNK_BYTES: usize = 4096;

/// Whether this site adds or subtracts the pair's mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSign {
    /// The smaller id of the pair adds.
    Add,
    /// The larger id of the pair subtracts.
    Subtract,
}

impl MaskSign {
    /// The sign site `me` uses for its pair with `peer` (ids compared byte-wise).
    pub fn for_pair(me: &str, peer: &str) -> Self {
        if me.as_bytes() < peer.as_bytes() {
            Self::Add
        } else {
            Self::Subtract
        }
    }
}

/// Add (or subtract) the mask stream of `seed` to `values`, element-wise in Z_{2^64}.
pub fn apply_mask(seed: &[u8; 32], sign: MaskSign, values: &mut [u64]) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut buf = [0u8; CHUNK_BYTES];
    for chunk in values.chunks_mut(CHUNK_BYTES / 8) {
        let bytes = &mut buf[..chunk.len() * 8];
        rng.fill_bytes(bytes);
        let words = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("chunks_exact(8) yields 8 bytes")));
        match sign {
            MaskSign::Add => chunk
                .iter_mut()
                .zip(words)
                .for_each(|(v, m)| *v = v.wrapping_add(m)),
            MaskSign::Subtract => chunk
                .iter_mut()
                .zip(words)
                .for_each(|(v, m)| *v = v.wrapping_sub(m)),
        }
    }
    buf.fill(0);
}

/// The first `len` mask elements of `seed` (for tests and interoperability checks).
pub fn mask_stream(seed: &[u8; 32], len: usize) -> Vec<u64> {
    let mut v = vec![0u64; len];
    apply_mask(seed, MaskSign::Add, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 §A.1 test vector #1 (all-zero key and nonce, counter 0): the mask stream is the
    /// standard ChaCha20 keystream.
    #[test]
    fn chacha20_keystream_matches_rfc8439_vector() {
        let expected = hex::decode(
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
             da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586",
        )
        .unwrap();
        let words = mask_stream(&[0u8; 32], 8);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn add_then_subtract_cancels_across_chunk_boundaries() {
        let seed = [9u8; 32];
        let orig: Vec<u64> = (0..1500u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut v = orig.clone();
        apply_mask(&seed, MaskSign::Add, &mut v);
        assert_ne!(v, orig);
        apply_mask(&seed, MaskSign::Subtract, &mut v);
        assert_eq!(v, orig);
        // A prefix of a longer stream equals the shorter stream (chunking does not shift it).
        assert_eq!(
            mask_stream(&seed, 1000)[..],
            mask_stream(&seed, 1500)[..1000]
        );
    }
}
