//! Typed errors of secure aggregation: each says what is wrong and how to fix it.

use thiserror::Error;

/// Everything that can go wrong while encoding, masking or aggregating.
///
/// The site-side errors (`Overflow`, `TooFewParticipants`, `RoundReused`, `KeyChanged`, ...) are
/// raised *before* anything is sent: a site never emits a vector it could not mask safely.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SecAggError {
    /// A value to encode is NaN or infinite.
    #[error(
        "value {value} at index {index} is not finite; secure aggregation only sums finite numbers \
         — fix the statistic (NaN/inf) before masking"
    )]
    NonFinite { index: usize, value: f64 },

    /// A value is too large for the fixed-point ring so that the sum over all participants could
    /// wrap around 2^64.
    #[error(
        "value {value} at index {index} is outside the fixed-point range |x| <= {limit:e} \
         ({frac_bits} fractional bits, {participants} participants: the sum of all sites must stay \
         below 2^63 units); lower frac_bits, rescale the statistic, or split it across rounds"
    )]
    Overflow {
        index: usize,
        value: f64,
        limit: f64,
        frac_bits: u32,
        participants: usize,
    },

    /// An integer count is too large for the ring given the number of participants.
    #[error(
        "count {value} at index {index} exceeds {limit} = (2^63-1)/{participants}: the sum over \
         {participants} sites could wrap; split the table or use fewer participants per round"
    )]
    CountOverflow {
        index: usize,
        value: i128,
        limit: i64,
        participants: usize,
    },

    /// `frac_bits` outside the supported range.
    #[error(
        "frac_bits = {0} is out of range: use 0..=62 (0 for integer counts, 24 is the default for \
         real-valued statistics)"
    )]
    InvalidFracBits(u32),

    /// A policy minimum below 2 makes masking meaningless.
    #[error(
        "min_participants = {0} is invalid: with fewer than 2 sites there is no pairwise mask and \
         the aggregator sees the value in clear; use at least 2 (3 is the default)"
    )]
    InvalidPolicy(usize),

    /// The participant set is smaller than the policy minimum.
    #[error(
        "participant set has {got} sites but the policy minimum is {min}: with so few sites the \
         sum reveals individual contributions; wait for more sites or lower min_participants knowingly"
    )]
    TooFewParticipants { got: usize, min: usize },

    /// A site id is empty.
    #[error("site id is empty; every participant needs a non-empty, unique id")]
    EmptySiteId,

    /// The same site appears twice in a participant set or key list.
    #[error("site id {0:?} appears more than once in the participant set or announcement list")]
    DuplicateParticipant(String),

    /// A participant list is not in byte-wise sorted order.
    #[error(
        "participant list is not sorted by id; the round digest is defined over the sorted list, \
         so build specs with RoundSpec::new (which sorts)"
    )]
    UnsortedParticipants,

    /// A site was asked to mask for a round it is not part of, or a vector came from a site
    /// outside the round.
    #[error(
        "site {site:?} is not in the participant set of round {round_id}; only listed sites may \
         mask or submit"
    )]
    NotAParticipant { site: String, round_id: u64 },

    /// A participant has no public key in the site's session.
    #[error(
        "no public key is known for participant {0:?}; relay its KeyAnnouncement \
         (SiteSession::accept_peer_keys) before starting the round"
    )]
    UnknownPeer(String),

    /// A peer's public key differs from the one pinned earlier in this session.
    #[error(
        "public key announced for site {site:?} differs from the one pinned earlier in this \
         session: the relay may be substituting keys; if the site really rotated its key, start a \
         new session"
    )]
    KeyChanged { site: String },

    /// The relayed announcement for our own id carries a key that is not ours.
    #[error(
        "the relayed announcement for our own site id {0:?} carries a different public key: the \
         relay substituted it; refuse this key list"
    )]
    OwnKeyMismatch(String),

    /// The Diffie-Hellman result is all-zero (low-order public key).
    #[error(
        "key agreement with site {0:?} gave the all-zero secret (a low-order public key): that \
         key is invalid or malicious; refuse it"
    )]
    NonContributory(String),

    /// A site was asked to mask twice under the same round id.
    #[error(
        "round {round_id} of study {study:?} was already used for masking by this site; every \
         masked vector (restarts included) needs a fresh round id, because reusing a pad leaks the \
         difference of two inputs"
    )]
    RoundReused { study: String, round_id: u64 },

    /// The study id of a message does not match.
    #[error("study mismatch: this session/round belongs to {expected:?}, the message to {got:?}")]
    StudyMismatch { expected: String, got: String },

    /// The round id of a message does not match the open round.
    #[error(
        "round mismatch: the open round is {expected}, the message is for round {got} (a late \
         vector from an earlier attempt is discarded)"
    )]
    RoundMismatch { expected: u64, got: u64 },

    /// A restart reused the current round id.
    #[error("restart must use a fresh round id: {0} is the id of the round being restarted")]
    RestartRoundIdReused(u64),

    /// Vector length differs from what the round expects.
    #[error("length mismatch: expected {expected} values, got {got}")]
    LengthMismatch { expected: usize, got: usize },

    /// The layout got a different number of parts than it has segments.
    #[error("layout has {expected} segments but {got} parts were given")]
    SegmentCount { expected: usize, got: usize },

    /// An error inside one named segment of a layout.
    #[error("segment {segment:?}: {source}")]
    Segment {
        segment: String,
        #[source]
        source: Box<SecAggError>,
    },

    /// A site delivered twice.
    #[error(
        "site {0:?} already delivered its masked vector for this round; duplicates are refused"
    )]
    DuplicateSubmission(String),

    /// `complete` was called before every participant delivered.
    #[error(
        "round {round_id} is incomplete: no masked vector yet from {missing:?}; wait for them or \
         restart_without(...) those sites under a fresh round id"
    )]
    Incomplete { round_id: u64, missing: Vec<String> },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SecAggError>;
