//! Key agreement: X25519 key pairs, relayed public-key announcements, and the HKDF-SHA256
//! derivation of per-pair and per-round mask seeds.
//!
//! Derivation (all strings are ASCII, `lp(s)` = 8-byte little-endian length followed by the bytes,
//! so that concatenations are unambiguous; ids are ordered byte-wise, `lo < hi`):
//!
//! ```text
//! dh        = X25519(secret_i, public_j)                       (= X25519(secret_j, public_i))
//! pair_key  = HKDF-SHA256(salt = "fedrad/secagg/v1/pair-salt", ikm = dh,
//!                         info = "fedrad/secagg/v1/pair" ‖ lp(study) ‖ lp(lo) ‖ pk_lo ‖ lp(hi) ‖ pk_hi,
//!                         L = 32)
//! digest_r  = SHA-256("fedrad/secagg/v1/round" ‖ lp(study) ‖ round_id (u64 LE) ‖ n (u64 LE)
//!                     ‖ for each participant in id order: lp(id) ‖ pk)
//! seed_ij,r = HKDF-Expand(prk = pair_key, info = "fedrad/secagg/v1/round-seed" ‖ digest_r, L = 32)
//! ```
//!
//! So a pair seed is bound to the study, the sorted pair of ids and their keys; a round seed is
//! additionally bound to the round id and to the exact participant set (ids and keys). Two rounds
//! with different ids, or the same id with a different set, never share a pad.

use std::fmt;

use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Result, SecAggError};

const PAIR_SALT: &[u8] = b"fedrad/secagg/v1/pair-salt";
const PAIR_INFO: &[u8] = b"fedrad/secagg/v1/pair";
const ROUND_DIGEST: &[u8] = b"fedrad/secagg/v1/round";
const ROUND_SEED_INFO: &[u8] = b"fedrad/secagg/v1/round-seed";

/// A site's public key as relayed by the aggregator. Serialises its key as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAnnouncement {
    /// The announcing site.
    pub site_id: String,
    /// Its X25519 public key (Montgomery u-coordinate, RFC 7748 byte order).
    #[serde(with = "hex32")]
    pub public_key: [u8; 32],
}

/// A site's X25519 secret key (one per study session). `Debug` does not print it; the key is
/// wiped from memory when dropped.
#[derive(Clone)]
pub struct SiteSecret(StaticSecret);

impl fmt::Debug for SiteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteSecret")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SiteSecret {
    /// A fresh secret from a cryptographically secure RNG (e.g. `rand::rngs::OsRng`).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_bytes(*bytes)
    }

    /// A secret from 32 stored bytes (clamped by X25519 on use, RFC 7748 §5).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The secret's bytes. Sensitive: only for persisting the session in protected storage.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// Raw X25519 with a peer's public key; errors on the all-zero (non-contributory) result.
    pub(crate) fn agree(
        &self,
        peer_id: &str,
        peer_public: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(SecAggError::NonContributory(peer_id.to_string()));
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// Append `lp(bytes)`: 8-byte LE length, then the bytes.
fn push_lp(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// The long-lived key shared by sites `a` and `b` in `study` (symmetric in a and b).
pub(crate) fn pair_key(
    study_id: &str,
    me: (&str, &[u8; 32]),
    peer: (&str, &[u8; 32]),
    secret: &SiteSecret,
) -> Result<Zeroizing<[u8; 32]>> {
    let dh = secret.agree(peer.0, peer.1)?;
    let (lo, hi) = if me.0.as_bytes() < peer.0.as_bytes() {
        (me, peer)
    } else {
        (peer, me)
    };
    let mut info = Vec::with_capacity(PAIR_INFO.len() + study_id.len() + 96);
    info.extend_from_slice(PAIR_INFO);
    push_lp(&mut info, study_id.as_bytes());
    push_lp(&mut info, lo.0.as_bytes());
    info.extend_from_slice(lo.1);
    push_lp(&mut info, hi.0.as_bytes());
    info.extend_from_slice(hi.1);
    let hk = Hkdf::<Sha256>::new(Some(PAIR_SALT), dh.as_ref());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(okm)
}

/// Digest of a round: study, round id and the participant set with their keys, in id order.
///
/// Two sites that compute the same digest were told the same round; sites may sign it or compare
/// it out of band to detect an aggregator that shows different participant sets to different
/// sites (see the crate docs).
pub fn round_digest<'a>(
    study_id: &str,
    round_id: u64,
    participants: impl ExactSizeIterator<Item = (&'a str, &'a [u8; 32])>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROUND_DIGEST);
    h.update((study_id.len() as u64).to_le_bytes());
    h.update(study_id.as_bytes());
    h.update(round_id.to_le_bytes());
    h.update((participants.len() as u64).to_le_bytes());
    for (id, pk) in participants {
        h.update((id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
        h.update(pk);
    }
    h.finalize().into()
}

/// The ChaCha20 key of one pair for one round.
pub(crate) fn round_seed(pair_key: &[u8; 32], digest: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::from_prk(pair_key).expect("a 32-byte PRK is long enough for SHA-256");
    let mut info = [0u8; ROUND_SEED_INFO.len() + 32];
    info[..ROUND_SEED_INFO.len()].copy_from_slice(ROUND_SEED_INFO);
    info[ROUND_SEED_INFO.len()..].copy_from_slice(digest);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// Serde helper: `[u8; 32]` as a 64-digit lowercase hex string.
pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(|e| {
            D::Error::custom(format!("expected 64 hex digits for a 32-byte key: {e}"))
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// RFC 7748 §6.1 test vector: the X25519 wiring (clamping, byte order) is the standard one.
    #[test]
    fn rfc7748_diffie_hellman_vector() {
        let alice = SiteSecret::from_bytes(h32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = SiteSecret::from_bytes(h32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            alice.public_key(),
            h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob.public_key(),
            h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*alice.agree("bob", &bob.public_key()).unwrap(), shared);
        assert_eq!(*bob.agree("alice", &alice.public_key()).unwrap(), shared);
    }

    #[test]
    fn pair_key_is_symmetric_and_bound_to_study_and_ids() {
        let a = SiteSecret::from_bytes([1; 32]);
        let b = SiteSecret::from_bytes([2; 32]);
        let (pa, pb) = (a.public_key(), b.public_key());
        let k_ab = pair_key("s", ("a", &pa), ("b", &pb), &a).unwrap();
        let k_ba = pair_key("s", ("b", &pb), ("a", &pa), &b).unwrap();
        assert_eq!(*k_ab, *k_ba);
        let other_study = pair_key("t", ("a", &pa), ("b", &pb), &a).unwrap();
        assert_ne!(*k_ab, *other_study);
        let other_ids = pair_key("s", ("a2", &pa), ("b", &pb), &a).unwrap();
        assert_ne!(*k_ab, *other_ids);
    }

    /// A pair's round seed changes with every field the round digest binds: round id, study,
    /// participant set and participant keys. Tested on the seed of one fixed pair, since a
    /// site's combined pad would differ anyway when the set changes.
    #[test]
    fn round_seed_is_bound_to_round_study_set_and_keys() {
        let pair = [3u8; 32];
        let (k0, k1, k2) = ([10u8; 32], [11u8; 32], [12u8; 32]);
        let seed = |study: &str, round: u64, set: &[(&str, &[u8; 32])]| {
            *round_seed(&pair, &round_digest(study, round, set.iter().copied()))
        };
        let base = seed("s", 1, &[("a", &k0), ("b", &k1), ("c", &k2)]);
        let variants = [
            seed("s", 2, &[("a", &k0), ("b", &k1), ("c", &k2)]),
            seed("t", 1, &[("a", &k0), ("b", &k1), ("c", &k2)]),
            seed("s", 1, &[("a", &k0), ("b", &k1)]),
            seed("s", 1, &[("a", &k0), ("b", &k1), ("d", &k2)]),
            seed("s", 1, &[("a", &k0), ("b", &k1), ("c", &k0)]),
            // Length prefixes: moving a byte between adjacent ids must change the digest.
            seed("s", 1, &[("a", &k0), ("bc", &k1)]),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i} gave the same round seed");
        }
        assert_eq!(seed("s", 1, &[("a", &k0), ("b", &k1), ("c", &k2)]), base);
        assert_ne!(
            *round_seed(&[4u8; 32], &round_digest("s", 1, std::iter::empty())),
            base
        );
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let a = SiteSecret::from_bytes([7; 32]);
        let err = a.agree("evil", &[0u8; 32]).unwrap_err();
        assert_eq!(err, SecAggError::NonContributory("evil".into()));
    }

    #[test]
    fn announcement_serialises_key_as_hex() {
        let ann = KeyAnnouncement {
            site_id: "site-a".into(),
            public_key: [0xab; 32],
        };
        let json = serde_json::to_string(&ann).unwrap();
        assert!(json.contains(&"ab".repeat(32)));
        let back: KeyAnnouncement = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ann);
        assert!(
            serde_json::from_str::<KeyAnnouncement>(r#"{"site_id":"x","public_key":"abcd"}"#)
                .is_err()
        );
    }
}
