//! Round messages and the aggregator's state machine for one masked round.
//!
//! Flow of one round (the aggregator only ever holds the running wrapping sum, never a single
//! site's vector after it has been added):
//!
//! ```text
//! aggregator: MaskedRound::new(spec, len, &policy)      → send spec (+ layout) to every participant
//! site:       SiteSession::mask_values(&spec, ...)      → MaskedVector
//! aggregator: round.accept(&masked) ... until Complete  → round.complete() → Layout::decode(sum)
//!             on a timeout: round.restart_without(&round.missing(), fresh_round_id, &policy)
//!             → send the new spec to the survivors, who re-mask under fresh pads
//! ```
//!
//! Dropout rule: **restart** (not mask recovery). If a participant does not deliver, the masks it
//! shares with the others do not cancel and the partial sum is useless, so the round is restarted
//! with the surviving set under a fresh round id; every survivor re-masks its (unchanged) input
//! with new pads. See the crate docs for what this rule does not protect against.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecAggError};

/// Minimum participant count below which sites refuse to mask and aggregators refuse to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggPolicy {
    min_participants: usize,
}

impl Default for SecAggPolicy {
    /// Minimum 3: with 2 sites the sum lets each site recover the other's value as soon as it
    /// learns the result, so 3 is the smallest set in which a sum hides individual inputs from
    /// every participant.
    fn default() -> Self {
        Self {
            min_participants: Self::DEFAULT_MIN_PARTICIPANTS,
        }
    }
}

impl SecAggPolicy {
    /// The default minimum participant count.
    pub const DEFAULT_MIN_PARTICIPANTS: usize = 3;

    /// A policy with the given minimum (at least 2).
    pub fn new(min_participants: usize) -> Result<Self> {
        if min_participants < 2 {
            return Err(SecAggError::InvalidPolicy(min_participants));
        }
        Ok(Self { min_participants })
    }

    /// The minimum participant count.
    pub fn min_participants(&self) -> usize {
        self.min_participants
    }

    /// Error unless `n` sites satisfy the policy.
    pub fn check(&self, n: usize) -> Result<()> {
        if n < self.min_participants {
            return Err(SecAggError::TooFewParticipants {
                got: n,
                min: self.min_participants,
            });
        }
        Ok(())
    }
}

/// What the aggregator tells every participant about a round: which study, a round id that is
/// fresh for every masked exchange (restarts included), and the participant set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSpec {
    /// The study whose session keys are used.
    pub study_id: String,
    /// Fresh for every masked vector a site produces; sites refuse reuse.
    pub round_id: u64,
    /// Participant ids, sorted byte-wise and unique (checked by [`RoundSpec::validate`]).
    pub participants: Vec<String>,
}

impl RoundSpec {
    /// A spec with the participants sorted; errors on an empty or duplicated id.
    pub fn new<I, S>(study_id: impl Into<String>, round_id: u64, participants: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut participants: Vec<String> = participants.into_iter().map(Into::into).collect();
        participants.sort();
        let spec = Self {
            study_id: study_id.into(),
            round_id,
            participants,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Check that ids are non-empty, sorted and unique (a spec received over the wire is checked
    /// before use, so that every site derives the same round digest).
    pub fn validate(&self) -> Result<()> {
        for id in &self.participants {
            if id.is_empty() {
                return Err(SecAggError::EmptySiteId);
            }
        }
        let mut sorted = self.participants.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            if w[0] == w[1] {
                return Err(SecAggError::DuplicateParticipant(w[0].clone()));
            }
        }
        if sorted != self.participants {
            // Not a security problem in itself, but the digest is defined over the sorted order.
            return Err(SecAggError::UnsortedParticipants);
        }
        Ok(())
    }

    /// Whether `site` takes part.
    pub fn contains(&self, site: &str) -> bool {
        self.participants
            .binary_search_by(|p| p.as_str().cmp(site))
            .is_ok()
    }

    /// Number of participants (the `n` of the fixed-point range and error bound).
    pub fn n(&self) -> usize {
        self.participants.len()
    }
}

/// One site's masked contribution to a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedVector {
    /// Sender.
    pub site_id: String,
    /// Study of the round.
    pub study_id: String,
    /// Round the vector was masked for.
    pub round_id: u64,
    /// Masked ring elements (uniformly distributed to anyone without the pair seeds).
    pub values: Vec<u64>,
}

/// Progress after accepting a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStatus {
    /// Still waiting for `missing` participants.
    Waiting { missing: usize },
    /// Every participant delivered; call [`MaskedRound::complete`].
    Complete,
}

/// The aggregator's state for one masked round: who takes part, who has delivered, and the
/// running wrapping sum. Serialisable so that an aggregator can persist an open round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedRound {
    spec: RoundSpec,
    len: usize,
    sum: Vec<u64>,
    received: BTreeSet<String>,
}

impl MaskedRound {
    /// Open a round for vectors of `len` ring elements.
    pub fn new(spec: RoundSpec, len: usize, policy: &SecAggPolicy) -> Result<Self> {
        spec.validate()?;
        policy.check(spec.n())?;
        Ok(Self {
            spec,
            len,
            sum: vec![0; len],
            received: BTreeSet::new(),
        })
    }

    /// The round's spec (send it to every participant).
    pub fn spec(&self) -> &RoundSpec {
        &self.spec
    }

    /// Length of the vectors in this round.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether vectors are empty (a degenerate but legal round).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sites that have delivered.
    pub fn received(&self) -> &BTreeSet<String> {
        &self.received
    }

    /// Sites that have not delivered yet, in id order.
    pub fn missing(&self) -> Vec<String> {
        self.spec
            .participants
            .iter()
            .filter(|p| !self.received.contains(*p))
            .cloned()
            .collect()
    }

    /// Whether every participant has delivered.
    pub fn is_complete(&self) -> bool {
        self.received.len() == self.spec.n()
    }

    /// Add a site's masked vector to the running sum. Refuses vectors for another study or round
    /// (e.g. a late vector from before a restart), from non-participants, of the wrong length, or
    /// a second vector from the same site; a refused vector leaves the state unchanged.
    pub fn accept(&mut self, msg: &MaskedVector) -> Result<RoundStatus> {
        if msg.study_id != self.spec.study_id {
            return Err(SecAggError::StudyMismatch {
                expected: self.spec.study_id.clone(),
                got: msg.study_id.clone(),
            });
        }
        if msg.round_id != self.spec.round_id {
            return Err(SecAggError::RoundMismatch {
                expected: self.spec.round_id,
                got: msg.round_id,
            });
        }
        if !self.spec.contains(&msg.site_id) {
            return Err(SecAggError::NotAParticipant {
                site: msg.site_id.clone(),
                round_id: self.spec.round_id,
            });
        }
        if self.received.contains(&msg.site_id) {
            return Err(SecAggError::DuplicateSubmission(msg.site_id.clone()));
        }
        if msg.values.len() != self.len {
            return Err(SecAggError::LengthMismatch {
                expected: self.len,
                got: msg.values.len(),
            });
        }
        for (s, v) in self.sum.iter_mut().zip(&msg.values) {
            *s = s.wrapping_add(*v);
        }
        self.received.insert(msg.site_id.clone());
        Ok(if self.is_complete() {
            RoundStatus::Complete
        } else {
            RoundStatus::Waiting {
                missing: self.spec.n() - self.received.len(),
            }
        })
    }

    /// The unmasked sum of the encoded inputs of all participants (decode it with the round's
    /// [`crate::Layout`] or [`crate::FixedPoint`]). Errors, naming the missing sites, unless every
    /// participant has delivered: a partial sum still contains uncancelled masks.
    pub fn complete(&self) -> Result<Vec<u64>> {
        if !self.is_complete() {
            return Err(SecAggError::Incomplete {
                round_id: self.spec.round_id,
                missing: self.missing(),
            });
        }
        Ok(self.sum.clone())
    }

    /// Restart the round without `dropped` under `next_round_id`: same study and length, the
    /// surviving participants, nothing received. The partial sum is discarded. Errors if a
    /// dropped id is not a participant, if `next_round_id` equals the current id (pads must be
    /// fresh), or if the survivors fall below the policy minimum.
    pub fn restart_without(
        &self,
        dropped: &[String],
        next_round_id: u64,
        policy: &SecAggPolicy,
    ) -> Result<MaskedRound> {
        if next_round_id == self.spec.round_id {
            return Err(SecAggError::RestartRoundIdReused(next_round_id));
        }
        for d in dropped {
            if !self.spec.contains(d) {
                return Err(SecAggError::NotAParticipant {
                    site: d.clone(),
                    round_id: self.spec.round_id,
                });
            }
        }
        let survivors: Vec<String> = self
            .spec
            .participants
            .iter()
            .filter(|p| !dropped.contains(p))
            .cloned()
            .collect();
        let spec = RoundSpec::new(self.spec.study_id.clone(), next_round_id, survivors)?;
        MaskedRound::new(spec, self.len, policy)
    }

    /// [`MaskedRound::restart_without`] the sites that have not delivered.
    pub fn restart_without_missing(
        &self,
        next_round_id: u64,
        policy: &SecAggPolicy,
    ) -> Result<MaskedRound> {
        self.restart_without(&self.missing(), next_round_id, policy)
    }
}
