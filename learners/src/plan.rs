//! Nested cross-validation as pure data: which rows each (repeat, outer fold) fit trains on at a
//! site, its inner folds, and the averaging of each patient's outer probabilities over repeats.
//!
//! The network layer batches all fits of one step into one round trip: the aggregator iterates
//! [`CvScheme::fit_ids`], each site looks its rows up in its [`SitePlan`]. Nothing here knows
//! about models: any fitted model implementing [`ProbabilisticModel`] (the base learners, the MLP,
//! the clinical logistic comparator of the `models` crate) can be scored on a fit's test rows and
//! fed to [`OuterAverager`].

use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, param};
use crate::folds;

/// One outer fit of the nested CV: repeat `repeat` (0-based), outer test fold `fold` (0-based).
/// Ordered by repeat then fold, which is the order in which batches list fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FitId {
    pub repeat: u32,
    pub fold: u32,
}

/// The study's cross-validation design. The study: 100 repeats of stratified 5-fold outer CV with
/// 5-fold inner CV, `seed` sent by the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CvScheme {
    pub seed: u64,
    pub repeats: u32,
    pub outer_folds: u32,
    pub inner_folds: u32,
}

impl Default for CvScheme {
    fn default() -> Self {
        Self {
            seed: 20240101,
            repeats: 100,
            outer_folds: 5,
            inner_folds: 5,
        }
    }
}

impl CvScheme {
    pub fn validate(&self) -> Result<()> {
        if self.repeats == 0 {
            return Err(param("repeats", self.repeats, "must be at least 1"));
        }
        if self.outer_folds < 2 {
            return Err(param("outer_folds", self.outer_folds, "must be at least 2"));
        }
        if self.inner_folds < 2 {
            return Err(param("inner_folds", self.inner_folds, "must be at least 2"));
        }
        Ok(())
    }

    /// All outer fits, repeat-major: (0,0), (0,1), …, (R−1, K−1).
    pub fn fit_ids(&self) -> Vec<FitId> {
        (0..self.repeats)
            .flat_map(|repeat| (0..self.outer_folds).map(move |fold| FitId { repeat, fold }))
            .collect()
    }
}

/// One outer fit at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteFit {
    pub id: FitId,
    /// Outer training rows (indices into the site's table), ascending.
    pub train: Vec<usize>,
    /// Outer test rows, ascending. Their probabilities go to [`OuterAverager::add`].
    pub test: Vec<usize>,
    /// Inner fold of each training row, aligned with `train`.
    pub inner_fold: Vec<u32>,
}

impl SiteFit {
    /// Labels of the training rows, aligned with `train`.
    pub fn train_labels(&self, labels: &[bool]) -> Vec<bool> {
        self.train.iter().map(|&i| labels[i]).collect()
    }
    /// The training rows of `x`.
    pub fn train_rows(&self, x: ArrayView2<f64>) -> ndarray::Array2<f64> {
        x.select(Axis(0), &self.train)
    }
    /// The test rows of `x`.
    pub fn test_rows(&self, x: ArrayView2<f64>) -> ndarray::Array2<f64> {
        x.select(Axis(0), &self.test)
    }
}

/// Every outer fit of one site, computed locally from the scheme, the site id and its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePlan {
    pub site: String,
    pub scheme: CvScheme,
    pub n_rows: usize,
    /// Every outer fit, in [`CvScheme::fit_ids`] order (a list, so that it serialises to JSON).
    pub fits: Vec<SiteFit>,
}

impl SitePlan {
    pub fn new(scheme: CvScheme, site: &str, labels: &[bool]) -> Result<Self> {
        scheme.validate()?;
        let mut fits = Vec::new();
        for repeat in 0..scheme.repeats {
            let outer = folds::outer_folds(
                scheme.seed,
                repeat,
                site,
                labels,
                scheme.outer_folds as usize,
            )?;
            for fold in 0..scheme.outer_folds {
                let train: Vec<usize> = (0..labels.len()).filter(|&i| outer[i] != fold).collect();
                let test: Vec<usize> = (0..labels.len()).filter(|&i| outer[i] == fold).collect();
                let train_labels: Vec<bool> = train.iter().map(|&i| labels[i]).collect();
                let inner_fold = folds::inner_folds(
                    scheme.seed,
                    repeat,
                    fold,
                    site,
                    &train_labels,
                    scheme.inner_folds as usize,
                )?;
                let id = FitId { repeat, fold };
                fits.push(SiteFit {
                    id,
                    train,
                    test,
                    inner_fold,
                });
            }
        }
        Ok(Self {
            site: site.to_string(),
            scheme,
            n_rows: labels.len(),
            fits,
        })
    }

    pub fn fit(&self, id: FitId) -> Result<&SiteFit> {
        self.fits
            .binary_search_by(|f| f.id.cmp(&id))
            .ok()
            .map(|i| &self.fits[i])
            .ok_or_else(|| LearnerError::Protocol {
                what: "site plan",
                detail: format!(
                    "fit (repeat {}, fold {}) is not in this plan ({} repeats × {} folds)",
                    id.repeat, id.fold, self.scheme.repeats, self.scheme.outer_folds
                ),
            })
    }
}

/// Anything that turns feature rows into P(y = 1): lets the nested-CV code score the base
/// learners, the meta-model and the clinical comparator the same way.
pub trait ProbabilisticModel {
    /// Number of feature columns the model expects.
    fn n_features(&self) -> usize;
    /// P(y = 1) per row. Pure: same model and rows, same bits.
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>>;
}

/// Averages each patient's outer-test probabilities over repeats (the study's "each patient's
/// 100 outer probabilities averaged"). Stays at the site: only the averaged scores feed the
/// count tables of the pooled metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OuterAverager {
    repeats: u32,
    sum: Vec<f64>,
    count: Vec<u32>,
    seen: Vec<FitId>,
}

impl OuterAverager {
    pub fn new(n_rows: usize, repeats: u32) -> Self {
        Self {
            repeats,
            sum: vec![0.0; n_rows],
            count: vec![0; n_rows],
            seen: Vec::new(),
        }
    }

    /// Adds the probabilities of `fit`'s test rows (aligned with `fit.test`).
    pub fn add(&mut self, fit: &SiteFit, probs: &[f64]) -> Result<()> {
        if probs.len() != fit.test.len() {
            return Err(LearnerError::Protocol {
                what: "outer averaging",
                detail: format!(
                    "fit ({}, {}) has {} test rows but {} probabilities",
                    fit.id.repeat,
                    fit.id.fold,
                    fit.test.len(),
                    probs.len()
                ),
            });
        }
        if self.seen.contains(&fit.id) {
            return Err(LearnerError::Protocol {
                what: "outer averaging",
                detail: format!("fit ({}, {}) was added twice", fit.id.repeat, fit.id.fold),
            });
        }
        for (&row, &p) in fit.test.iter().zip(probs) {
            if !(0.0..=1.0).contains(&p) {
                return Err(param("probability", p, "must lie in [0, 1]"));
            }
            self.sum[row] += p;
            self.count[row] += 1;
        }
        self.seen.push(fit.id);
        Ok(())
    }

    /// The mean outer probability of every row; an error names the first row that did not get
    /// exactly one probability per repeat.
    pub fn finish(&self) -> Result<Vec<f64>> {
        for (row, &c) in self.count.iter().enumerate() {
            if c != self.repeats {
                return Err(LearnerError::Protocol {
                    what: "outer averaging",
                    detail: format!(
                        "row {row} has {c} outer probabilities, expected one per repeat ({})",
                        self.repeats
                    ),
                });
            }
        }
        Ok(self
            .sum
            .iter()
            .map(|s| s / f64::from(self.repeats))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_partitions_rows_and_averager_checks_coverage() {
        let labels: Vec<bool> = (0..23).map(|i| i % 3 != 0).collect();
        let scheme = CvScheme {
            seed: 5,
            repeats: 3,
            outer_folds: 5,
            inner_folds: 4,
        };
        let plan = SitePlan::new(scheme, "S07", &labels).unwrap();
        assert_eq!(plan.fits.len(), 15);
        assert_eq!(
            scheme.fit_ids(),
            plan.fits.iter().map(|f| f.id).collect::<Vec<_>>()
        );
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<SitePlan>(&json).unwrap(), plan);
        let mut avg = OuterAverager::new(labels.len(), 3);
        for fit in &plan.fits {
            assert_eq!(fit.train.len() + fit.test.len(), 23);
            assert!(fit.train.iter().all(|i| !fit.test.contains(i)));
            assert_eq!(fit.inner_fold.len(), fit.train.len());
            let probs: Vec<f64> = fit
                .test
                .iter()
                .map(|&i| i as f64 / 100.0 + fit.id.repeat as f64 * 0.1)
                .collect();
            avg.add(fit, &probs).unwrap();
        }
        let m = avg.finish().unwrap();
        assert!((m[4] - (0.04 + 0.1)).abs() < 1e-12);
        let fit = plan.fit(FitId { repeat: 0, fold: 0 }).unwrap();
        assert!(avg.add(fit, &vec![0.5; fit.test.len()]).is_err());
        let partial = OuterAverager::new(labels.len(), 3);
        assert!(partial.finish().is_err());
    }
}
