//! A site's release policy: what may leave the hospital, checked before anything is sent.
//!
//! Besides the fields below, two rules follow from `min_count` without a setting of their own:
//! every released count is 0 or ≥ `min_count` (`crate::site`), and no two aggregates of one
//! study cover patient sets that differ by 1..`min_count − 1` patients (the differencing guard,
//! `crate::differencing`).

use crate::ids::StudyHash;
use serde::{Deserialize, Serialize};

/// The site admin's `policy.toml`. Everything not allowed here stays inside the hospital.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicy {
    /// No aggregate over fewer patients than this leaves the site (cells with 1..min_count-1
    /// patients are suppressed; zero counts may be released).
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// Answer every study, whatever its hash. Off by default: a site normally lists the studies
    /// its ethics approval covers.
    #[serde(default)]
    pub allow_all_studies: bool,
    /// Study hashes (`aggregator submit` prints them) this site agrees to answer.
    #[serde(default)]
    pub allowed_studies: Vec<String>,
    /// Per-patient predictions may leave the site.
    #[serde(default)]
    pub release_predictions: bool,
    /// Fitted base models may leave the site.
    #[serde(default)]
    pub share_models: bool,
    /// Disclosure guard for cross-product matrices: parameters ≤ ratio × rows (DataSHIELD's
    /// `nfilter.glm`, default 0.33); `inf` turns it off.
    #[serde(default = "default_params_ratio")]
    pub max_params_per_row: f64,
    /// Summed statistics (Table 1 count tables and moments, ComBat's cross-products and residual
    /// sums, LASSO sums, pipeline stages) leave only pairwise-masked (`crate::secure`): a plain
    /// summed request is refused with a message naming this setting. Such a site takes part in
    /// Table 1, ComBat and LASSO studies with `secure_aggregation = true`. Off by default.
    #[serde(default)]
    pub require_secure_aggregation: bool,
}

fn default_min_count() -> u64 {
    5
}
fn default_params_ratio() -> f64 {
    0.33
}

impl Default for SitePolicy {
    fn default() -> Self {
        Self {
            min_count: default_min_count(),
            allow_all_studies: false,
            allowed_studies: Vec::new(),
            release_predictions: false,
            share_models: false,
            max_params_per_row: default_params_ratio(),
            require_secure_aggregation: false,
        }
    }
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: {0}")]
    Parse(String),
    #[error("policy: min_count must be at least 1 (got 0); 5 is the usual choice")]
    ZeroMinCount,
    #[error("policy: max_params_per_row must be a positive number (got {0})")]
    BadRatio(f64),
}

impl SitePolicy {
    /// Parses and checks a `policy.toml` text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: SitePolicy =
            toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_count == 0 {
            return Err(PolicyError::ZeroMinCount);
        }
        // `inf` turns the guard off (a consortium decision, e.g. for wide LASSO designs).
        if self.max_params_per_row.is_nan() || self.max_params_per_row <= 0.0 {
            return Err(PolicyError::BadRatio(self.max_params_per_row));
        }
        Ok(())
    }

    /// Whether this site answers the study with this hash.
    pub fn allows_study(&self, hash: &StudyHash) -> bool {
        self.allow_all_studies || self.allowed_studies.iter().any(|h| h == &hash.0)
    }

    /// A count may leave the site if it is zero or at least `min_count`.
    pub fn count_releasable(&self, count: u64) -> bool {
        count == 0 || count >= self.min_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_conservative() {
        let p = SitePolicy::from_toml("").unwrap();
        assert_eq!(p.min_count, 5);
        assert!(!p.allow_all_studies && !p.release_predictions && !p.share_models);
        assert!(!p.allows_study(&StudyHash("abc".into())));
        assert!(p.count_releasable(0) && !p.count_releasable(4) && p.count_releasable(5));
    }

    #[test]
    fn unknown_keys_and_zero_min_count_are_refused() {
        assert!(SitePolicy::from_toml("min_cuont = 3").is_err());
        assert!(matches!(
            SitePolicy::from_toml("min_count = 0"),
            Err(PolicyError::ZeroMinCount)
        ));
        let p = SitePolicy::from_toml("allowed_studies = [\"abc\"]").unwrap();
        assert!(p.allows_study(&StudyHash("abc".into())));
    }
}
