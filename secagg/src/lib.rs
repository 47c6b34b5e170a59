//! Secure aggregation for summed statistics: sites mask fixed-point vectors with pairwise masks
//! that cancel in the sum, so the aggregator learns only the sum over sites.
//!
//! This is a simplified Bonawitz et al. (CCS 2017) protocol for an **honest-but-curious
//! aggregator**, meant for the summed statistics of fedrad (ComBat and LASSO/IRLS cross-products
//! X'WX / X'WY, MLP gradient sums, count tables). The crate is pure (no IO); it provides message
//! types and state machines that the gRPC layer relays.
//!
//! # Protocol
//!
//! 1. **Keys** (once per study session): each site makes an X25519 key pair ([`SiteSecret`],
//!    [`SiteSession`]) and sends its [`KeyAnnouncement`]; the aggregator relays the list to every
//!    site ([`SiteSession::accept_peer_keys`], which pins each key for the session).
//! 2. **Round**: the aggregator opens a [`MaskedRound`] with a [`RoundSpec`] (study, a fresh
//!    round id, the sorted participant set) and a [`Layout`] (segments with their
//!    [`FixedPoint`] formats) and sends both to the participants.
//! 3. **Masking** ([`SiteSession::mask_values`]): the site encodes its values in fixed point over
//!    Z_{2^64}, checks that the sum over `n` sites cannot wrap, and for every peer j adds (if its
//!    id is smaller) or subtracts (if larger) the ChaCha20 stream keyed by the pair's round seed
//!    (HKDF-SHA256 of the X25519 secret, bound to the study, the pair, the round id and the
//!    participant set; see [`keys`]). It refuses round ids it has used before, except for an
//!    exact repeat (same round, set and input), which yields the identical vector so that a retry
//!    after a lost reply or a restart can re-send it without revealing anything new.
//! 4. **Aggregation**: [`MaskedRound::accept`] adds each [`MaskedVector`] (wrapping);
//!    [`MaskedRound::complete`] returns the exact sum of the encoded inputs;
//!    [`Layout::decode`] turns it back into f64.
//! 5. **Dropout** — rule: *restart*. If a site never delivers, its masks do not cancel; the
//!    aggregator calls [`MaskedRound::restart_without`] with a fresh round id and the survivors
//!    re-mask their unchanged inputs with fresh pads. No mask recovery is implemented.
//!
//! ```
//! use secagg::*;
//! # fn main() -> Result<()> {
//! let policy = SecAggPolicy::default(); // refuse sets smaller than 3
//! let mut rng = rand::rngs::OsRng;
//! // Session setup: every site announces its key; the aggregator relays the list.
//! let mut sites: Vec<SiteSession> = ["a", "b", "c"]
//!     .iter()
//!     .map(|id| SiteSession::new("study-1", *id, SiteSecret::generate(&mut rng), policy))
//!     .collect::<Result<_>>()?;
//! let keys: Vec<KeyAnnouncement> = sites.iter().map(|s| s.announcement()).collect();
//! for s in &mut sites {
//!     s.accept_peer_keys(&keys)?;
//! }
//! // One round: the aggregator sends spec + layout, sites return masked vectors.
//! let layout = Layout::new()
//!     .with("xtwx", 2, FixedPoint::default())
//!     .with("counts", 1, FixedPoint::integer());
//! let spec = RoundSpec::new("study-1", 1, ["a", "b", "c"])?;
//! let mut round = MaskedRound::new(spec.clone(), layout.total_len(), &policy)?;
//! for (i, s) in sites.iter_mut().enumerate() {
//!     let masked = s.mask_values(&spec, &layout, &[&[0.5, -1.25 * i as f64], &[10.0]])?;
//!     round.accept(&masked)?;
//! }
//! let sums = layout.decode(&round.complete()?)?;
//! assert_eq!(sums, vec![vec![1.5, -3.75], vec![30.0]]);
//! # Ok(())
//! # }
//! ```
//!
//! # Precision
//!
//! Values are encoded as `round(x · 2^F)`; each encoded value is within 2^−(F+1) of `x`, the
//! integer sum is exact, so the decoded sum over `n` sites is within `n · 2^−(F+1)` of the exact
//! real sum (plus half an f64 ulp of the result). Per value, `|x| ≤ ⌊(2^63−1)/n⌋ · 2^−F`
//! (≈ 2^(63−F)/n) is enforced on the site before sending, which guarantees that the total cannot
//! wrap. Default F = 24: resolution 6e−8, per-value range ≈ 1.1e10 at n = 50. Counts use F = 0
//! ([`FixedPoint::integer`], [`encode_counts`]) and are exact. Statistics with a very wide
//! dynamic range (raw, unstandardised features squared and summed over thousands of patients)
//! need a smaller F ([`FixedPoint::for_bound`]) — or standardisation — to fit.
//!
//! # Threat model
//!
//! Protected: an aggregator that follows the protocol but inspects everything it receives learns
//! nothing about one site's vector beyond what the sum reveals. A masked vector is the encoding
//! plus at least one ChaCha20 pad the aggregator cannot compute (it never sees a DH secret), so
//! it is computationally indistinguishable from uniform; the sum of any strict subset of the
//! participants' vectors is still masked by the pads shared with the rest. The same holds against
//! any coalition of the aggregator with up to `n − 2` sites for the remaining sites' *individual*
//! values (the coalition learns the sum of the non-colluding sites, inherently).
//!
//! Site-side safeguards that also hold against a *misbehaving* aggregator:
//! - sites refuse participant sets smaller than [`SecAggPolicy::min_participants`] (default 3:
//!   with 2 sites each site could recover the other's value from the sum);
//! - sites refuse to mask twice under one round id ([`SecAggError::RoundReused`]), and round
//!   seeds are bound to the participant set, so no pad is ever reused — reusing a pad across two
//!   vectors would reveal their difference;
//! - peer keys are pinned for the session ([`SecAggError::KeyChanged`]) and a substituted own key
//!   is detected ([`SecAggError::OwnKeyMismatch`]); low-order keys are refused.
//!
//! **Not** protected (the integration must close these or accept them):
//! - *Key substitution at first contact.* The aggregator relays public keys; a malicious relay
//!   could hand site A its own key in place of B's at the first announcement and later strip A's
//!   masks. Pinning only helps after first contact. Fix: sign each `KeyAnnouncement` with the
//!   site's mTLS certificate key and verify it on receipt (the transport already authenticates
//!   sites), or compare [`SiteSession::round_digest`] out of band. fedrad's integration does the
//!   former (`federation::secure::KeyAttestation`, checked before the keys are pinned).
//! - *Lying about the participant set.* The aggregator could show sites sets that contain
//!   Sybil sites whose keys it holds; with every peer of a site being a Sybil, that site's value
//!   is exposed. The policy minimum limits the damage only if Sybils are excluded by signed key
//!   announcements; sites may also sign/compare the round digest, which binds the exact set.
//! - *Delayed rather than dropped sites.* With the restart rule, if the aggregator does receive a
//!   "dropped" site's vector for the first attempt after all, it can hold the full sum of the
//!   first attempt and the survivors' sum of the restart; their difference is that site's value.
//!   An honest aggregator discards late vectors ([`MaskedRound::accept`] refuses them); a
//!   malicious one is not stopped. Bonawitz's double masking with secret-shared self-masks closes
//!   this and is not implemented.
//! - *Integrity.* A site can send garbage and corrupt the sum undetectably; a malicious
//!   aggregator can report a wrong sum. Masking gives confidentiality, not correctness.
//! - *What the sum itself reveals* (e.g. differencing across rounds with different participant
//!   sets, or the model fitted from the sum) is out of scope — that is a disclosure-control
//!   question, not a masking one.
//! - Side channels, memory of compromised sites, and quantum adversaries (X25519).

pub mod error;
pub mod fixed;
pub mod keys;
pub mod mask;
pub mod round;
pub mod site;

pub use error::{Result, SecAggError};
pub use fixed::{FixedPoint, Layout, MAX_FRAC_BITS, Segment, decode_counts, encode_counts};
pub use keys::{KeyAnnouncement, SiteSecret, round_digest};
pub use mask::{MaskSign, apply_mask, mask_stream};
pub use round::{MaskedRound, MaskedVector, RoundSpec, RoundStatus, SecAggPolicy};
pub use site::SiteSession;
