//! Federated standardisation (z-scores): per-site moments merged exactly, plus weighted moments
//! for the per-fit standardisation inside LASSO.
//!
//! Site half: [`site_moments`] returns one [`stats::Moments`] (n, mean, M2) per feature column.
//! Aggregator half: [`Standardizer::from_site_moments`] merges them in site order with Chan et
//! al.'s exact update (the `stats` crate's [`Moments::merge`]). Pooled reference:
//! [`Standardizer::pooled`] (two-pass mean and sum of squares over all rows).
//!
//! The variance convention is always named: [`VarianceConvention::Population`] divides by n
//! (numpy `ddof=0`, sklearn `StandardScaler`, glmnet's internal standardisation);
//! [`VarianceConvention::Sample`] divides by n − 1 (R `scale()`, numpy `ddof=1`).

use crate::error::{ModelsError, Result};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
pub use stats::Moments;

/// Which divisor the standard deviation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarianceConvention {
    /// `sqrt(M2 / n)`: numpy `ddof=0`, sklearn `StandardScaler`, glmnet.
    Population,
    /// `sqrt(M2 / (n − 1))`: R `scale()` / `sd()`, numpy `ddof=1`.
    Sample,
}

/// Checks that every entry of `x` is finite.
pub(crate) fn check_finite(x: ArrayView2<f64>, what: &str) -> Result<()> {
    for ((row, col), v) in x.indexed_iter() {
        if !v.is_finite() {
            return Err(ModelsError::NonFinite {
                what: what.to_string(),
                row,
                col,
            });
        }
    }
    Ok(())
}

/// SITE HALF: moments (n, mean, M2) of every column of the site's rows `x` (n × p).
pub fn site_moments(x: ArrayView2<f64>) -> Result<Vec<Moments>> {
    check_finite(x, "features")?;
    Ok(x.columns()
        .into_iter()
        .map(|c| {
            let mut m = Moments::EMPTY;
            for &v in c {
                m.push(v);
            }
            m
        })
        .collect())
}

/// Per-feature mean and SD used to z-score: `z = (x − mean) / sd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Total row count.
    pub n: u64,
    /// Feature means.
    pub mean: Vec<f64>,
    /// Feature SDs under [`Standardizer::convention`].
    pub sd: Vec<f64>,
    /// The divisor used for `sd`.
    pub convention: VarianceConvention,
}

impl Standardizer {
    /// AGGREGATOR HALF: merges the sites' moments in the given (site) order.
    pub fn from_site_moments(
        sites: &[Vec<Moments>],
        convention: VarianceConvention,
    ) -> Result<Standardizer> {
        let p = sites
            .first()
            .map(Vec::len)
            .ok_or_else(|| ModelsError::Invalid("no site moments to merge".into()))?;
        let mut merged = vec![Moments::EMPTY; p];
        for s in sites {
            if s.len() != p {
                return Err(ModelsError::Dimension {
                    what: "site moments".into(),
                    expected: p,
                    got: s.len(),
                });
            }
            for (m, x) in merged.iter_mut().zip(s) {
                *m = m.merge(x);
            }
        }
        Self::from_moments(&merged, convention)
    }

    /// Builds a standardiser from already merged moments.
    pub fn from_moments(
        merged: &[Moments],
        convention: VarianceConvention,
    ) -> Result<Standardizer> {
        let n = merged.first().map_or(0, |m| m.n);
        let min_n = match convention {
            VarianceConvention::Population => 1,
            VarianceConvention::Sample => 2,
        };
        if n < min_n {
            return Err(ModelsError::Invalid(format!(
                "standardisation needs at least {min_n} rows, got {n}"
            )));
        }
        let sd = merged
            .iter()
            .map(|m| {
                let v = match convention {
                    VarianceConvention::Population => m.var_population(),
                    VarianceConvention::Sample => m.var_sample(),
                };
                v.unwrap_or(0.0).sqrt()
            })
            .collect();
        Ok(Standardizer {
            n,
            mean: merged.iter().map(|m| m.mean).collect(),
            sd,
            convention,
        })
    }

    /// POOLED REFERENCE: two-pass mean and sum of squared deviations over all rows.
    pub fn pooled(x: ArrayView2<f64>, convention: VarianceConvention) -> Result<Standardizer> {
        check_finite(x, "features")?;
        let n = x.nrows();
        let merged: Vec<Moments> = x
            .columns()
            .into_iter()
            .map(|c| {
                let mean = c.iter().sum::<f64>() / n as f64;
                let m2 = c.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
                Moments {
                    n: n as u64,
                    mean,
                    m2,
                }
            })
            .collect();
        Self::from_moments(&merged, convention)
    }

    /// z-scores rows `x` (n × p). A column with SD 0 maps to 0 (sklearn `StandardScaler`
    /// behaviour: the constant is centred, not divided by zero).
    pub fn transform(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        if x.ncols() != self.mean.len() {
            return Err(ModelsError::Dimension {
                what: "features to standardise".into(),
                expected: self.mean.len(),
                got: x.ncols(),
            });
        }
        let mut z = x.to_owned();
        for (j, mut c) in z.columns_mut().into_iter().enumerate() {
            let (m, s) = (self.mean[j], self.sd[j]);
            c.mapv_inplace(|v| if s > 0.0 { (v - m) / s } else { 0.0 });
        }
        Ok(z)
    }
}

/// Weighted count, mean and `M2 = Σ w (x − mean)²` with an exact merge (West 1979 update,
/// Chan et al. merge with weights). Weights are non-negative (e.g. bootstrap multiplicities,
/// 0 for rows outside a fold); rows with weight 0 contribute nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WeightedMoments {
    /// Sum of weights.
    pub w: f64,
    /// Weighted mean (0 when `w == 0`).
    pub mean: f64,
    /// Weighted sum of squared deviations.
    pub m2: f64,
}

impl WeightedMoments {
    /// Adds value `x` with weight `w ≥ 0`.
    pub fn push(&mut self, x: f64, w: f64) {
        if w == 0.0 {
            return;
        }
        self.w += w;
        let delta = x - self.mean;
        self.mean += delta * (w / self.w);
        self.m2 += w * delta * (x - self.mean);
    }

    /// Exact merge of two disjoint weighted sets.
    pub fn merge(&self, o: &WeightedMoments) -> WeightedMoments {
        if o.w == 0.0 {
            return *self;
        }
        if self.w == 0.0 {
            return *o;
        }
        let w = self.w + o.w;
        let delta = o.mean - self.mean;
        WeightedMoments {
            w,
            mean: self.mean + delta * (o.w / w),
            m2: self.m2 + o.m2 + delta * delta * (self.w * o.w / w),
        }
    }

    /// Weighted population SD `sqrt(M2 / Σw)` (glmnet's internal standardisation).
    pub fn sd_population(&self) -> f64 {
        if self.w > 0.0 {
            (self.m2 / self.w).max(0.0).sqrt()
        } else {
            0.0
        }
    }
}
