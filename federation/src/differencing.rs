//! The differencing guard: a site refuses to release an aggregate over a patient set that
//! differs from a set it already released an aggregate over (in the same study) by 1 to
//! `min_count − 1` patients, because the difference of the two aggregates would describe those
//! few patients.
//!
//! # What a "patient set" is
//!
//! Each answer is computed over a *population*: the rows the request makes eligible. It is
//! recorded as the sorted list of 64-bit patient keys (the first 8 bytes, big-endian, of
//! SHA-256 over the patient id of the table's id column, or over `#<row number>` when the table
//! has no id column). Keys, not ids, are kept so that the site's state file holds no identifiers
//! in clear; the ledger never leaves the site. Populations per analysis (see
//! [`populations`]):
//!
//! - Table 1 (summary and histogram rounds), ComBat (every round), the pipeline's stages: every
//!   row of the site's table. Within one run of the agent these are one and the same set; the
//!   guard fires when the table changes while a study runs (a patient removed or added and the
//!   agent restarted), which is exactly "an aggregate over the rows, then over the rows minus
//!   one patient".
//! - LASSO: per fit, the rows its `WeightSpec::outer` fold leaves in (all rows when there is no
//!   outer fold). Fits excluding an *inner* CV fold, and bootstrap replicates, are resamplings
//!   *within* that population that the approved study spec fixes (fold count and seed are part
//!   of the spec hash the site admin allowed): they are not compared as separate sets. A
//!   held-out fold differs from its population by a whole fold (n/nfolds rows), and bootstrap
//!   multiplicities are weights, not subsets, so neither is a "set minus a few patients"; the
//!   protection against small folds is the spec review (nfolds against the smallest site) and,
//!   for cross-products, `max_params_per_row`. Documented limitation: the site does not check
//!   that `n/nfolds ≥ min_count`, because the consortium's small-site demo studies rely on it.
//!
//! # Rule
//!
//! With `A` a released set and `B` the requested one, the request is refused when
//! `1 ≤ |A Δ B| < min_count` (symmetric difference). Equal sets (the usual case: every round of a
//! study over the same rows) and sets differing by at least `min_count` patients (e.g. two outer
//! training sets of a 5-fold CV, which differ by two folds) pass. Sets within one answer are also
//! compared with each other. Ledgers are per study (keyed by study hash) and persisted with the
//! site's memory; a new study starts an empty ledger (documented limitation: two *different*
//! studies over sets one patient apart are not compared — the site admin approves each study's
//! hash separately).

use crate::study::{AnalysisSpec, StudySpec};
use crate::table::SiteTable;
use crate::task::{Task, TaskBody};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A set of patients as sorted, de-duplicated 64-bit keys (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PatientSet(Vec<u64>);

/// The key of one patient id.
pub fn patient_key(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("SHA-256 has 32 bytes"))
}

impl PatientSet {
    /// The set of the given patient ids.
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut keys: Vec<u64> = ids.into_iter().map(patient_key).collect();
        keys.sort_unstable();
        keys.dedup();
        Self(keys)
    }

    /// Every row of the table.
    pub fn all_rows(table: &SiteTable) -> Self {
        Self::rows(table, |_| true)
    }

    /// The rows for which `keep(row)` holds.
    pub fn rows(table: &SiteTable, keep: impl Fn(usize) -> bool) -> Self {
        let ids: Vec<String> = (0..table.n_rows())
            .filter(|&r| keep(r))
            .map(|r| table.patient(r))
            .collect();
        Self::from_ids(ids.iter().map(String::as_str))
    }

    /// Number of patients.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// |self Δ other|, by a merge of the two sorted key lists.
    pub fn symmetric_difference(&self, other: &Self) -> usize {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        a.len() + b.len() - 2 * common
    }

    /// Hex SHA-256 of the keys (the ledger's index, so equal sets are stored once).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for k in &self.0 {
            h.update(k.to_le_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by the site's differencing guard (policy min_count = {min_count}): this request \
     covers {requested} patients, {difference} patient(s) different from a set of {released} \
     patients this site already released an aggregate over in this study; the difference of the \
     two aggregates would describe fewer than min_count patients. If the site's table changed \
     while the study ran, restore the table the study started with or submit the study afresh \
     (a new study hash); otherwise the request itself is suspicious"
)]
pub struct DifferencingRefusal {
    pub min_count: u64,
    pub requested: usize,
    pub released: usize,
    pub difference: usize,
}

/// The sets one study has released aggregates over. Persisted with the site's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseLedger {
    /// By [`PatientSet::digest`].
    sets: BTreeMap<String, PatientSet>,
    /// Set when a new set was recorded since the last [`ReleaseLedger::take_dirty`].
    #[serde(skip)]
    dirty: bool,
}

/// Equal when the released sets are (the transient dirty flag aside).
impl PartialEq for ReleaseLedger {
    fn eq(&self, other: &Self) -> bool {
        self.sets == other.sets
    }
}

impl ReleaseLedger {
    /// Number of distinct sets released.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether nothing was released yet.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Checks `requested` against every released set and against each other; nothing is
    /// recorded. Sets already in the ledger pass at once (the usual case: a later round over the
    /// same rows).
    pub fn check(
        &self,
        requested: &[PatientSet],
        min_count: u64,
    ) -> Result<(), DifferencingRefusal> {
        let mut fresh: Vec<&PatientSet> = Vec::new();
        for set in requested {
            let digest = set.digest();
            if self.sets.contains_key(&digest) || fresh.contains(&set) {
                continue;
            }
            for old in self.sets.values().chain(fresh.iter().copied()) {
                let difference = set.symmetric_difference(old);
                if difference > 0 && (difference as u64) < min_count {
                    return Err(DifferencingRefusal {
                        min_count,
                        requested: set.len(),
                        released: old.len(),
                        difference,
                    });
                }
            }
            fresh.push(set);
        }
        Ok(())
    }

    /// Records sets whose aggregates were released.
    pub fn record(&mut self, released: Vec<PatientSet>) {
        for set in released {
            let digest = set.digest();
            if let std::collections::btree_map::Entry::Vacant(e) = self.sets.entry(digest) {
                e.insert(set);
                self.dirty = true;
            }
        }
    }

    /// True (once) when a set was recorded since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }
}

/// The populations an answer to `body` aggregates over (see the module docs). An empty list
/// means the answer holds no aggregate over patients (e.g. a key announcement).
pub fn populations(
    spec: &StudySpec,
    body: &TaskBody,
    table: &SiteTable,
) -> Result<Vec<PatientSet>, String> {
    Ok(match (&spec.analysis, body) {
        (AnalysisSpec::Lasso(l), TaskBody::LassoSums(t)) => {
            let outers: std::collections::BTreeSet<_> = t
                .requests
                .iter()
                .map(|r| r.weights.outer.map(|f| (f.scheme, f.fold)))
                .collect();
            if outers.iter().all(Option::is_none) {
                vec![PatientSet::all_rows(table)]
            } else {
                let data = crate::lasso::site_data_cached(table, l, t.site_key)
                    .map_err(|e| e.public_message())?;
                outers
                    .into_iter()
                    .map(|o| match o {
                        None => Ok(PatientSet::all_rows(table)),
                        Some((scheme, fold)) => {
                            let folds = data.fold_schemes.get(scheme as usize).ok_or_else(|| {
                                format!(
                                    "the task names fold scheme {scheme}, which this site does not hold"
                                )
                            })?;
                            Ok(PatientSet::rows(table, |r| folds.get(r) != Some(&fold)))
                        }
                    })
                    .collect::<Result<_, String>>()?
            }
        }
        (_, TaskBody::SecureKeys(k)) => match &k.inner {
            Some(inner) => populations(spec, inner, table)?,
            None => Vec::new(),
        },
        (_, TaskBody::Masked(m)) => populations(spec, &m.inner, table)?,
        _ => vec![PatientSet::all_rows(table)],
    })
}

/// Runs a task through a study's ledger: the populations are computed and checked, `release`
/// computes the answer, and the populations are recorded only if `release` reports that it
/// released something (a failure message releases no aggregate).
pub fn guarded<T>(
    task: &Task,
    spec: &StudySpec,
    table: &SiteTable,
    ledger: &mut ReleaseLedger,
    min_count: u64,
    release: impl FnOnce() -> (T, bool),
) -> Result<T, String> {
    let sets = populations(spec, &task.body, table)?;
    ledger.check(&sets, min_count).map_err(|e| e.to_string())?;
    let (out, released) = release();
    if released {
        ledger.record(sets);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> PatientSet {
        PatientSet::from_ids(ids.iter().copied())
    }

    #[test]
    fn symmetric_difference_counts_both_sides() {
        let a = set(&["a", "b", "c", "d"]);
        let b = set(&["b", "c", "d", "e", "f"]);
        assert_eq!(a.symmetric_difference(&b), 3);
        assert_eq!(b.symmetric_difference(&a), 3);
        assert_eq!(a.symmetric_difference(&a), 0);
        assert_eq!(set(&["a", "a"]).len(), 1);
    }

    #[test]
    fn near_duplicates_are_refused_equal_and_distant_sets_pass() {
        let ids: Vec<String> = (0..20).map(|i| format!("P{i}")).collect();
        let all = PatientSet::from_ids(ids.iter().map(String::as_str));
        let minus_one = PatientSet::from_ids(ids[1..].iter().map(String::as_str));
        let minus_five = PatientSet::from_ids(ids[5..].iter().map(String::as_str));
        let mut ledger = ReleaseLedger::default();
        ledger.check(std::slice::from_ref(&all), 5).unwrap();
        ledger.record(vec![all.clone()]);
        assert!(ledger.take_dirty() && !ledger.take_dirty());
        // The same set again: fine, and nothing new to persist.
        ledger.check(std::slice::from_ref(&all), 5).unwrap();
        ledger.record(vec![all.clone()]);
        assert!(!ledger.take_dirty());
        let e = ledger
            .check(std::slice::from_ref(&minus_one), 5)
            .unwrap_err();
        assert_eq!(e.difference, 1);
        assert!(e.to_string().contains("min_count = 5"), "{e}");
        // A difference of exactly min_count is allowed.
        ledger.check(std::slice::from_ref(&minus_five), 5).unwrap();
        // min_count = 1 turns the guard off (no difference is below 1).
        ledger.check(std::slice::from_ref(&minus_one), 1).unwrap();
        // Two sets of one request are compared with each other too.
        let fresh = ReleaseLedger::default();
        assert!(fresh.check(&[all, minus_five.clone()], 5).is_ok());
        assert_eq!(
            fresh
                .check(&[minus_five, minus_one], 5)
                .unwrap_err()
                .difference,
            4
        );
        let e = fresh
            .check(
                &[
                    PatientSet::from_ids(ids[5..].iter().map(String::as_str)),
                    PatientSet::from_ids(ids[6..].iter().map(String::as_str)),
                ],
                5,
            )
            .unwrap_err();
        assert_eq!(e.difference, 1);
    }
}
