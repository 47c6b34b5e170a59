//! ComBat harmonisation (Johnson et al. 2007) as distributed ComBat (Chen et al., NeuroImage
//! 2022): exact, from site aggregates, equal to pooled ComBat to round-off.
//!
//! Conventions follow sva::ComBat / neuroCombat 0.2.12 (DESIGN §7):
//! - design W = [one-hot(batch) | covariates]; categorical covariates are one-hot with the first
//!   level (sorted, like `np.unique`) as reference; no intercept (the batch block spans it);
//! - B = (W'W)⁻¹ W'Y (OLS per feature); grand mean = Σ_b (n_b/n)·B_b;
//!   pooled variance = Σ residual² / n (divisor n);
//! - s = (y − grand mean − covariate effect) / √var_pooled;
//! - γ̂_b = per-batch mean of s, δ̂_b = per-batch variance of s (ddof 1);
//! - priors per batch across features: γ̄, τ² = mean and variance (ddof 1) of γ̂;
//!   a = (2v + m²)/v, b = (m·v + m³)/v from the mean m and variance v (ddof 1) of δ̂;
//! - parametric EB: iterate g = (τ²n_bγ̂ + d·γ̄)/(τ²n_b + d), d = (½Σ(s−g)² + b)/(n_b/2 + a − 1)
//!   from (γ̂, δ̂) until max(|g − g_old|/g_old, |d − d_old|/d_old) ≤ 1e-4, with the **signed**
//!   old value in the denominator (as sva and neuroCombat do: a negative ratio never blocks
//!   convergence);
//! - non-parametric EB: `int.eprior` (each feature's γ*, δ* is the likelihood-weighted mean of
//!   the other features' γ̂, δ̂). The likelihood weights are computed in the log domain and
//!   rescaled by their maximum; this equals neuroCombat's direct formula whenever that does not
//!   underflow (where neuroCombat returns NaN, this stays finite);
//! - mean-only: δ* = 1; the parametric γ* is `postmean(γ̂, γ̄, n = 1, d = 1, τ²)` exactly as sva
//!   (the `n = 1` is sva's choice, kept for comparability);
//! - output = (s − γ*_b)/√δ*_b · √var_pooled + grand mean + covariate effect.
//!
//! Edge cases (documented handling):
//! - a batch with one row: error [`ModelsError::BatchTooSmall`] unless `mean_only` (sva switches
//!   to mean-only silently; we ask for it explicitly);
//! - a feature with zero variance within any batch of ≥ 2 rows, or zero pooled residual
//!   variance: as sva (≥ 3.36), the feature is **left unadjusted** (output = input) and excluded
//!   from the priors. neuroCombat instead substitutes δ̂ = 1, so goldens avoid such features;
//! - `ref_batch` is not supported.
//!
//! Federated protocol (batch ⊆ site):
//! 0. [`site_levels`] → [`DesignSpec::from_site_levels`]: the sorted union of batch labels and
//!    categorical levels (labels only, no counts);
//! 1. [`site_cross_products`] (W'W, W'Y, constant-in-batch flags) → [`aggregate_cross_products`]
//!    (B, grand mean, n_b);
//! 2. [`site_residuals`] (Σ residual² per feature) → [`aggregate_residuals`] (pooled variance):
//!    a [`ComBatGlobal`];
//! 3. [`site_estimate`]: the EB step per batch at the site that holds it → [`BatchAdjustment`]s;
//!    with the global part they form a serialisable [`ComBatModel`] whose [`ComBatModel::apply`]
//!    harmonises any rows (validation patients, a new patient) with frozen parameters.
//!
//! Pooled reference: [`combat_pooled`].

use crate::error::{ModelsError, Result};
use crate::linalg::{chol_solve_mat, cholesky, pack_upper, unpack_upper};
use crate::standardize::check_finite;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Kind of a covariate preserved by ComBat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CovariateKind {
    /// Numeric, entered as is (not centred, as in sva/neuroCombat).
    Continuous,
    /// Categorical with its levels; `levels[0]` is the reference (dropped) level.
    Categorical {
        /// All levels, reference first.
        levels: Vec<String>,
    },
}

/// One covariate of the design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CovariateSpec {
    /// Column name.
    pub name: String,
    /// Continuous or categorical.
    pub kind: CovariateKind,
}

/// The global ComBat design: batch labels (one-hot column order) and covariates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignSpec {
    /// Batch labels in design-column order.
    pub batches: Vec<String>,
    /// Covariates in design-column order.
    pub covariates: Vec<CovariateSpec>,
}

/// A covariate column of a site's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum CovariateColumn {
    /// Numeric values.
    Continuous(Vec<f64>),
    /// Level labels.
    Categorical(Vec<String>),
}

/// A site's (or the pooled) rows for ComBat: batch label, covariates and features (n × p).
#[derive(Debug, Clone, Copy)]
pub struct ComBatRows<'a> {
    /// Batch label per row.
    pub batch: &'a [String],
    /// Covariate columns, in [`DesignSpec::covariates`] order.
    pub covariates: &'a [CovariateColumn],
    /// Feature matrix, rows = patients.
    pub features: ArrayView2<'a, f64>,
}

/// ROUND 0 site message: which batch labels and categorical levels occur (no counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLevels {
    /// Batch labels present.
    pub batches: Vec<String>,
    /// Per covariate: the levels present (empty for continuous covariates).
    pub levels: Vec<Vec<String>>,
}

/// ROUND 0 SITE HALF: the labels present at this site.
pub fn site_levels(batch: &[String], covariates: &[CovariateColumn]) -> SiteLevels {
    let batches: BTreeSet<&String> = batch.iter().collect();
    SiteLevels {
        batches: batches.into_iter().cloned().collect(),
        levels: covariates
            .iter()
            .map(|c| match c {
                CovariateColumn::Continuous(_) => Vec::new(),
                CovariateColumn::Categorical(v) => {
                    let s: BTreeSet<&String> = v.iter().collect();
                    s.into_iter().cloned().collect()
                }
            })
            .collect(),
    }
}

impl DesignSpec {
    /// ROUND 0 AGGREGATOR HALF: sorted union of the sites' labels (the order `np.unique` gives,
    /// so the first sorted level is the reference, as in neuroCombat). `covariates` gives each
    /// covariate's name and whether it is categorical.
    pub fn from_site_levels(covariates: &[(String, bool)], sites: &[SiteLevels]) -> Result<Self> {
        let mut batches = BTreeSet::new();
        let mut levels = vec![BTreeSet::new(); covariates.len()];
        for s in sites {
            if s.levels.len() != covariates.len() {
                return Err(ModelsError::Dimension {
                    what: "site covariate levels".into(),
                    expected: covariates.len(),
                    got: s.levels.len(),
                });
            }
            batches.extend(s.batches.iter().cloned());
            for (acc, l) in levels.iter_mut().zip(&s.levels) {
                acc.extend(l.iter().cloned());
            }
        }
        let covs = covariates
            .iter()
            .zip(levels)
            .map(|((name, categorical), lv)| CovariateSpec {
                name: name.clone(),
                kind: if *categorical {
                    CovariateKind::Categorical {
                        levels: lv.into_iter().collect(),
                    }
                } else {
                    CovariateKind::Continuous
                },
            })
            .collect();
        Ok(DesignSpec {
            batches: batches.into_iter().collect(),
            covariates: covs,
        })
    }

    /// Number of design columns: batches + Σ(levels − 1) + continuous covariates.
    pub fn n_columns(&self) -> usize {
        self.batches.len()
            + self
                .covariates
                .iter()
                .map(|c| match &c.kind {
                    CovariateKind::Continuous => 1,
                    CovariateKind::Categorical { levels } => levels.len().saturating_sub(1),
                })
                .sum::<usize>()
    }

    fn batch_index(&self, label: &str) -> Result<usize> {
        self.batches
            .iter()
            .position(|b| b == label)
            .ok_or_else(|| ModelsError::UnknownBatch(label.to_string()))
    }

    /// Batch index of every row.
    fn batch_indices(&self, batch: &[String]) -> Result<Vec<usize>> {
        batch.iter().map(|b| self.batch_index(b)).collect()
    }

    /// The covariate part of the design (n × (q − n_batches)), in design-column order.
    fn covariate_design(&self, covariates: &[CovariateColumn], n: usize) -> Result<Array2<f64>> {
        if covariates.len() != self.covariates.len() {
            return Err(ModelsError::Dimension {
                what: "covariate columns".into(),
                expected: self.covariates.len(),
                got: covariates.len(),
            });
        }
        let q = self.n_columns() - self.batches.len();
        let mut d = Array2::zeros((n, q));
        let mut col = 0;
        for (spec, column) in self.covariates.iter().zip(covariates) {
            match (&spec.kind, column) {
                (CovariateKind::Continuous, CovariateColumn::Continuous(v)) => {
                    check_len(&spec.name, n, v.len())?;
                    for (i, &x) in v.iter().enumerate() {
                        if !x.is_finite() {
                            return Err(ModelsError::NonFinite {
                                what: format!("covariate '{}'", spec.name),
                                row: i,
                                col: 0,
                            });
                        }
                        d[[i, col]] = x;
                    }
                    col += 1;
                }
                (CovariateKind::Categorical { levels }, CovariateColumn::Categorical(v)) => {
                    check_len(&spec.name, n, v.len())?;
                    for (i, x) in v.iter().enumerate() {
                        let k = levels.iter().position(|l| l == x).ok_or_else(|| {
                            ModelsError::UnknownLevel {
                                covariate: spec.name.clone(),
                                level: x.clone(),
                            }
                        })?;
                        if k > 0 {
                            d[[i, col + k - 1]] = 1.0;
                        }
                    }
                    col += levels.len().saturating_sub(1);
                }
                _ => {
                    return Err(ModelsError::Invalid(format!(
                        "covariate '{}' is declared with a different kind (continuous vs categorical) than the data column",
                        spec.name
                    )));
                }
            }
        }
        Ok(d)
    }

    /// Full design W (n × q) and batch index per row.
    fn design(&self, rows: &ComBatRows) -> Result<(Array2<f64>, Vec<usize>)> {
        let n = rows.features.nrows();
        check_len("batch", n, rows.batch.len())?;
        let bidx = self.batch_indices(rows.batch)?;
        let cov = self.covariate_design(rows.covariates, n)?;
        let nb = self.batches.len();
        let mut w = Array2::zeros((n, self.n_columns()));
        for i in 0..n {
            w[[i, bidx[i]]] = 1.0;
        }
        w.slice_axis_mut(ndarray::Axis(1), ndarray::Slice::from(nb..))
            .assign(&cov);
        Ok((w, bidx))
    }
}

fn check_len(what: &str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(ModelsError::Dimension {
            what: what.to_string(),
            expected,
            got,
        });
    }
    Ok(())
}

/// ROUND 1 site message: cross-products of the site's training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatCrossProducts {
    /// Rows.
    pub n: u64,
    /// W'W, packed upper triangle (q(q+1)/2).
    pub wtw: Vec<f64>,
    /// W'Y, q × p row-major.
    pub wty: Vec<f64>,
    /// Per feature: constant within some batch of ≥ 2 rows at this site.
    pub constant_in_batch: Vec<bool>,
}

/// ROUND 1 SITE HALF: W'W, W'Y and the constant-in-batch flags for this site's rows.
pub fn site_cross_products(spec: &DesignSpec, rows: &ComBatRows) -> Result<ComBatCrossProducts> {
    check_finite(rows.features, "ComBat features")?;
    let (w, bidx) = spec.design(rows)?;
    let wtw = w.t().dot(&w);
    let wty = w.t().dot(&rows.features);
    Ok(ComBatCrossProducts {
        n: rows.features.nrows() as u64,
        wtw: pack_upper(&wtw),
        wty: wty.iter().copied().collect(),
        constant_in_batch: constant_in_batch(spec.batches.len(), &bidx, rows.features),
    })
}

fn constant_in_batch(nb: usize, bidx: &[usize], y: ArrayView2<f64>) -> Vec<bool> {
    let p = y.ncols();
    let mut out = vec![false; p];
    for b in 0..nb {
        let r: Vec<usize> = (0..bidx.len()).filter(|&i| bidx[i] == b).collect();
        if r.len() < 2 {
            continue;
        }
        for (j, o) in out.iter_mut().enumerate() {
            let first = y[[r[0], j]];
            if r.iter().all(|&i| y[[i, j]] == first) {
                *o = true;
            }
        }
    }
    out
}

/// Result of round 1: the regression part of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatFit {
    /// The design.
    pub spec: DesignSpec,
    /// B (q × p): batch coefficients then covariate coefficients.
    pub beta: Array2<f64>,
    /// Σ_b (n_b/n)·B_b per feature.
    pub grand_mean: Vec<f64>,
    /// Rows per batch (diagonal of W'W's batch block).
    pub batch_n: Vec<u64>,
    /// Total rows.
    pub n: u64,
    /// Features left unadjusted (constant within a batch, or zero pooled variance).
    pub unadjusted: Vec<bool>,
}

/// ROUND 1 AGGREGATOR HALF: sums the sites' W'W and W'Y in site order and solves for B.
pub fn aggregate_cross_products(
    spec: &DesignSpec,
    sites: &[ComBatCrossProducts],
) -> Result<ComBatFit> {
    let q = spec.n_columns();
    let first = sites
        .first()
        .ok_or_else(|| ModelsError::Invalid("no site cross-products".into()))?;
    let p = first.constant_in_batch.len();
    let mut wtw = vec![0.0; q * (q + 1) / 2];
    let mut wty = Array2::<f64>::zeros((q, p));
    let mut unadjusted = vec![false; p];
    let mut n = 0;
    for s in sites {
        check_len("W'W", wtw.len(), s.wtw.len())?;
        check_len("W'Y", q * p, s.wty.len())?;
        check_len("constant flags", p, s.constant_in_batch.len())?;
        for (a, b) in wtw.iter_mut().zip(&s.wtw) {
            *a += b;
        }
        for (a, b) in wty.iter_mut().zip(&s.wty) {
            *a += b;
        }
        for (u, c) in unadjusted.iter_mut().zip(&s.constant_in_batch) {
            *u |= *c;
        }
        n += s.n;
    }
    let wtw = unpack_upper(&wtw, q)?;
    finish_regression(spec, &wtw, &wty, n, unadjusted)
}

fn finish_regression(
    spec: &DesignSpec,
    wtw: &Array2<f64>,
    wty: &Array2<f64>,
    n: u64,
    unadjusted: Vec<bool>,
) -> Result<ComBatFit> {
    let nb = spec.batches.len();
    let mut batch_n = Vec::with_capacity(nb);
    for (b, label) in spec.batches.iter().enumerate() {
        let nbv = wtw[[b, b]];
        if nbv < 1.0 {
            return Err(ModelsError::Invalid(format!(
                "batch '{label}' has no rows; remove it from the design"
            )));
        }
        batch_n.push(nbv.round() as u64);
    }
    let l = cholesky(wtw, "ComBat normal equations W'W")?;
    let beta = chol_solve_mat(&l, wty);
    let p = wty.ncols();
    let nf = n as f64;
    let grand_mean = (0..p)
        .map(|j| {
            (0..nb)
                .map(|b| (batch_n[b] as f64 / nf) * beta[[b, j]])
                .sum()
        })
        .collect();
    Ok(ComBatFit {
        spec: spec.clone(),
        beta,
        grand_mean,
        batch_n,
        n,
        unadjusted,
    })
}

/// ROUND 2 site message: per-feature residual sum of squares of the site's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatResiduals {
    /// Rows.
    pub n: u64,
    /// Σ (y − W B)² per feature.
    pub rss: Vec<f64>,
}

/// ROUND 2 SITE HALF: residual sums of squares under the round-1 B.
pub fn site_residuals(fit: &ComBatFit, rows: &ComBatRows) -> Result<ComBatResiduals> {
    check_finite(rows.features, "ComBat features")?;
    let (w, _) = fit.spec.design(rows)?;
    check_len("features", fit.beta.ncols(), rows.features.ncols())?;
    let resid = &rows.features - &w.dot(&fit.beta);
    Ok(ComBatResiduals {
        n: rows.features.nrows() as u64,
        rss: resid
            .columns()
            .into_iter()
            .map(|c| c.iter().map(|r| r * r).sum())
            .collect(),
    })
}

/// The global (aggregator-held) part of a ComBat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatGlobal {
    /// Regression part.
    pub fit: ComBatFit,
    /// Pooled residual variance per feature (divisor n).
    pub var_pooled: Vec<f64>,
}

/// ROUND 2 AGGREGATOR HALF: pooled variance = Σ rss / n (divisor n, as sva).
pub fn aggregate_residuals(fit: &ComBatFit, sites: &[ComBatResiduals]) -> Result<ComBatGlobal> {
    let p = fit.beta.ncols();
    let mut rss = vec![0.0; p];
    let mut n = 0;
    for s in sites {
        check_len("residual sums", p, s.rss.len())?;
        for (a, b) in rss.iter_mut().zip(&s.rss) {
            *a += b;
        }
        n += s.n;
    }
    if n != fit.n {
        return Err(ModelsError::Invalid(format!(
            "round 2 covers {n} rows but round 1 covered {}; every site must send both rounds for the same rows",
            fit.n
        )));
    }
    Ok(finish_global(fit.clone(), rss))
}

fn finish_global(mut fit: ComBatFit, rss: Vec<f64>) -> ComBatGlobal {
    let nf = fit.n as f64;
    let var_pooled: Vec<f64> = rss.iter().map(|r| r / nf).collect();
    for (u, v) in fit.unadjusted.iter_mut().zip(&var_pooled) {
        if v.is_nan() || *v <= 0.0 {
            *u = true;
        }
    }
    ComBatGlobal { fit, var_pooled }
}

/// Empirical-Bayes variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EbMode {
    /// Parametric priors (normal / inverse gamma), sva's default.
    Parametric,
    /// Non-parametric (`int.eprior`).
    NonParametric,
    /// No shrinkage: γ* = γ̂, δ* = δ̂ (neuroCombat `eb=False`).
    None,
}

/// ComBat options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComBatOptions {
    /// EB variant.
    pub mode: EbMode,
    /// Adjust location only (δ* = 1).
    pub mean_only: bool,
    /// Convergence tolerance of the parametric iteration (sva: 1e-4).
    pub tol: f64,
    /// Iteration cap of the parametric iteration.
    pub max_iter: usize,
}

impl Default for ComBatOptions {
    fn default() -> Self {
        ComBatOptions {
            mode: EbMode::Parametric,
            mean_only: false,
            tol: 1e-4,
            max_iter: 10_000,
        }
    }
}

/// Per-batch EB estimates (computed at the site holding the batch). Vectors run over all p
/// features; unadjusted features hold γ* = 0, δ* = 1 and are bypassed by [`ComBatModel::apply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAdjustment {
    /// Batch label.
    pub batch: String,
    /// Rows of the batch.
    pub n: u64,
    /// Per-batch mean of standardised data.
    pub gamma_hat: Vec<f64>,
    /// Per-batch variance (ddof 1) of standardised data (1 when mean-only).
    pub delta_hat: Vec<f64>,
    /// Prior mean of γ (across adjusted features; 0 when there are fewer than 2).
    pub gamma_bar: f64,
    /// Prior variance τ² of γ (ddof 1; 0 when there are fewer than 2 adjusted features).
    pub tau2: f64,
    /// Inverse-gamma prior shape a (parametric, not mean-only).
    pub a_prior: Option<f64>,
    /// Inverse-gamma prior scale b (parametric, not mean-only).
    pub b_prior: Option<f64>,
    /// EB location.
    pub gamma_star: Vec<f64>,
    /// EB scale.
    pub delta_star: Vec<f64>,
    /// Parametric iterations used (0 otherwise).
    pub iterations: usize,
}

/// A complete, frozen, serialisable ComBat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComBatModel {
    /// Grand mean, pooled variance, betas, design.
    pub global: ComBatGlobal,
    /// Options used for the EB step.
    pub options: ComBatOptions,
    /// Per-batch γ*, δ* (a site's model may hold only its own batches).
    pub batches: Vec<BatchAdjustment>,
}

impl ComBatGlobal {
    /// Standardised data s (n × p) and the "stand mean" (grand mean + covariate effect).
    fn standardise(&self, rows: &ComBatRows) -> Result<(Array2<f64>, Array2<f64>, Vec<usize>)> {
        let spec = &self.fit.spec;
        let n = rows.features.nrows();
        let p = self.var_pooled.len();
        check_len("features", p, rows.features.ncols())?;
        check_finite(rows.features, "ComBat features")?;
        check_len("batch", n, rows.batch.len())?;
        let bidx = spec.batch_indices(rows.batch)?;
        let cov = spec.covariate_design(rows.covariates, n)?;
        let nb = spec.batches.len();
        let bcov = self
            .fit
            .beta
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(nb..));
        let mut mean = cov.dot(&bcov);
        for mut r in mean.rows_mut() {
            for (j, v) in r.iter_mut().enumerate() {
                *v += self.fit.grand_mean[j];
            }
        }
        let mut s = Array2::zeros((n, p));
        for i in 0..n {
            for j in 0..p {
                s[[i, j]] = if self.fit.unadjusted[j] {
                    0.0
                } else {
                    (rows.features[[i, j]] - mean[[i, j]]) / self.var_pooled[j].sqrt()
                };
            }
        }
        Ok((s, mean, bidx))
    }
}

/// ROUND 3 SITE HALF: EB estimates for every batch present in `rows`, which must hold every row
/// of those batches (batch nested within site).
pub fn site_estimate(
    global: &ComBatGlobal,
    rows: &ComBatRows,
    options: &ComBatOptions,
) -> Result<Vec<BatchAdjustment>> {
    let (s, _, bidx) = global.standardise(rows)?;
    let spec = &global.fit.spec;
    let present: BTreeSet<usize> = bidx.iter().copied().collect();
    let mut out = Vec::new();
    for b in present {
        let r: Vec<usize> = (0..bidx.len()).filter(|&i| bidx[i] == b).collect();
        if r.len() as u64 != global.fit.batch_n[b] {
            return Err(ModelsError::BatchSplit {
                batch: spec.batches[b].clone(),
                global: global.fit.batch_n[b],
                local: r.len() as u64,
            });
        }
        let sb = s.select(ndarray::Axis(0), &r);
        out.push(batch_eb(
            &spec.batches[b],
            &sb,
            &global.fit.unadjusted,
            options,
        )?);
    }
    Ok(out)
}

fn unreachable_priors() -> Result<(f64, f64)> {
    Err(ModelsError::Invalid(
        "parametric ComBat priors need at least 2 adjustable features".into(),
    ))
}

fn mean_var_ddof1(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var)
}

/// EB step of one batch: `sb` is the batch's standardised data (n_b × p).
fn batch_eb(
    label: &str,
    sb: &Array2<f64>,
    unadjusted: &[bool],
    opt: &ComBatOptions,
) -> Result<BatchAdjustment> {
    let nb = sb.nrows();
    let p = sb.ncols();
    if nb < 2 && !opt.mean_only {
        return Err(ModelsError::BatchTooSmall {
            batch: label.to_string(),
            n: nb as u64,
        });
    }
    let adj: Vec<usize> = (0..p).filter(|&j| !unadjusted[j]).collect();
    if adj.len() < 2 && opt.mode != EbMode::None {
        return Err(ModelsError::Invalid(format!(
            "empirical Bayes needs at least 2 adjustable features (got {}); use EbMode::None",
            adj.len()
        )));
    }
    let nbf = nb as f64;
    let mut gamma_hat = vec![0.0; p];
    let mut delta_hat = vec![1.0; p];
    for &j in &adj {
        let col = sb.column(j);
        let m = col.sum() / nbf;
        gamma_hat[j] = m;
        if !opt.mean_only {
            delta_hat[j] = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (nbf - 1.0);
        }
    }
    let g_adj: Vec<f64> = adj.iter().map(|&j| gamma_hat[j]).collect();
    let d_adj: Vec<f64> = adj.iter().map(|&j| delta_hat[j]).collect();
    // With fewer than 2 adjustable features there are no priors (only EbMode::None gets here);
    // 0 keeps the model serialisable (JSON has no NaN).
    let (gamma_bar, tau2) = if adj.len() >= 2 {
        mean_var_ddof1(&g_adj)
    } else {
        (0.0, 0.0)
    };
    // Inverse-gamma priors for δ (reported whenever δ is estimated, as neuroCombat does).
    let (mut a_prior, mut b_prior) = (None, None);
    if !opt.mean_only && adj.len() >= 2 {
        let (m, v) = mean_var_ddof1(&d_adj);
        a_prior = Some((2.0 * v + m * m) / v);
        b_prior = Some((m * v + m * m * m) / v);
    }
    let mut gamma_star = vec![0.0; p];
    let mut delta_star = vec![1.0; p];
    let mut iterations = 0;
    match opt.mode {
        EbMode::None => {
            for &j in &adj {
                gamma_star[j] = gamma_hat[j];
                delta_star[j] = delta_hat[j];
            }
        }
        EbMode::Parametric if opt.mean_only => {
            // sva: postmean(gamma.hat, gamma.bar, 1, 1, t2)
            for &j in &adj {
                gamma_star[j] = (tau2 * gamma_hat[j] + gamma_bar) / (tau2 + 1.0);
            }
        }
        EbMode::Parametric => {
            let (a, b) = match (a_prior, b_prior) {
                (Some(a), Some(b)) => (a, b),
                _ => unreachable_priors()?,
            };
            let mut g_old = g_adj.clone();
            let mut d_old = d_adj.clone();
            let k = adj.len();
            let mut g_new = vec![0.0; k];
            let mut d_new = vec![0.0; k];
            loop {
                if iterations >= opt.max_iter {
                    return Err(ModelsError::NotConverged {
                        what: format!("parametric ComBat EB iteration for batch '{label}'"),
                        iterations,
                    });
                }
                let mut change = f64::NEG_INFINITY;
                for (t, &j) in adj.iter().enumerate() {
                    g_new[t] =
                        (tau2 * nbf * g_adj[t] + d_old[t] * gamma_bar) / (tau2 * nbf + d_old[t]);
                    let sum2: f64 = sb
                        .column(j)
                        .iter()
                        .map(|x| (x - g_new[t]) * (x - g_new[t]))
                        .sum();
                    d_new[t] = (0.5 * sum2 + b) / (nbf / 2.0 + a - 1.0);
                }
                for t in 0..k {
                    // signed denominators, as sva/neuroCombat
                    change = change
                        .max((g_new[t] - g_old[t]).abs() / g_old[t])
                        .max((d_new[t] - d_old[t]).abs() / d_old[t]);
                }
                g_old.copy_from_slice(&g_new);
                d_old.copy_from_slice(&d_new);
                iterations += 1;
                if change.is_nan() || change <= opt.tol {
                    if change.is_nan() {
                        return Err(ModelsError::NotConverged {
                            what: format!(
                                "parametric ComBat EB iteration for batch '{label}' (NaN change)"
                            ),
                            iterations,
                        });
                    }
                    break;
                }
            }
            for (t, &j) in adj.iter().enumerate() {
                gamma_star[j] = g_new[t];
                delta_star[j] = d_new[t];
            }
        }
        EbMode::NonParametric => {
            let two_pi = 2.0 * std::f64::consts::PI;
            for (t, &j) in adj.iter().enumerate() {
                let x = sb.column(j);
                let mut logl = Vec::with_capacity(adj.len() - 1);
                let mut gd = Vec::with_capacity(adj.len() - 1);
                for (u, &k) in adj.iter().enumerate() {
                    if u == t {
                        continue;
                    }
                    let (g, d) = (gamma_hat[k], delta_hat[k]);
                    let sum2: f64 = x.iter().map(|v| (v - g) * (v - g)).sum();
                    logl.push(-(nbf / 2.0) * (two_pi * d).ln() - sum2 / (2.0 * d));
                    gd.push((g, d));
                }
                let mx = logl.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let (mut sw, mut sg, mut sd) = (0.0, 0.0, 0.0);
                for (l, (g, d)) in logl.iter().zip(&gd) {
                    let w = (l - mx).exp();
                    sw += w;
                    sg += g * w;
                    sd += d * w;
                }
                gamma_star[j] = sg / sw;
                delta_star[j] = sd / sw;
            }
        }
    }
    if opt.mean_only {
        for d in delta_star.iter_mut() {
            *d = 1.0;
        }
    }
    Ok(BatchAdjustment {
        batch: label.to_string(),
        n: nb as u64,
        gamma_hat,
        delta_hat,
        gamma_bar,
        tau2,
        a_prior,
        b_prior,
        gamma_star,
        delta_star,
        iterations,
    })
}

impl ComBatModel {
    /// Harmonises rows with the frozen parameters: `(s − γ*_b)/√δ*_b · √var + grand mean +
    /// covariate effect`, where s uses the *training* grand mean, pooled variance and covariate
    /// betas with these rows' own covariates. Unadjusted features are returned unchanged.
    /// Every row's batch must have a [`BatchAdjustment`] in the model.
    pub fn apply(&self, rows: &ComBatRows) -> Result<Array2<f64>> {
        let (s, mean, bidx) = self.global.standardise(rows)?;
        let spec = &self.global.fit.spec;
        let mut adj_for_batch: Vec<Option<&BatchAdjustment>> = vec![None; spec.batches.len()];
        for a in &self.batches {
            let b = spec.batch_index(&a.batch)?;
            adj_for_batch[b] = Some(a);
        }
        let (n, p) = s.dim();
        let mut out = Array2::zeros((n, p));
        for i in 0..n {
            let a = adj_for_batch[bidx[i]]
                .ok_or_else(|| ModelsError::UnknownBatch(spec.batches[bidx[i]].clone()))?;
            for j in 0..p {
                out[[i, j]] = if self.global.fit.unadjusted[j] {
                    rows.features[[i, j]]
                } else {
                    (s[[i, j]] - a.gamma_star[j]) / a.delta_star[j].sqrt()
                        * self.global.var_pooled[j].sqrt()
                        + mean[[i, j]]
                };
            }
        }
        Ok(out)
    }
}

/// POOLED REFERENCE: ComBat on all rows at once (W'W and W'Y from the full design matrix,
/// residuals from the full matrix). Returns the model and the harmonised training rows.
pub fn combat_pooled(
    spec: &DesignSpec,
    rows: &ComBatRows,
    options: &ComBatOptions,
) -> Result<(ComBatModel, Array2<f64>)> {
    check_finite(rows.features, "ComBat features")?;
    let (w, bidx) = spec.design(rows)?;
    let wtw = w.t().dot(&w);
    let wty = w.t().dot(&rows.features);
    let unadjusted = constant_in_batch(spec.batches.len(), &bidx, rows.features);
    let fit = finish_regression(spec, &wtw, &wty, rows.features.nrows() as u64, unadjusted)?;
    let resid = &rows.features - &w.dot(&fit.beta);
    let rss: Vec<f64> = resid
        .columns()
        .into_iter()
        .map(|c| c.iter().map(|r| r * r).sum())
        .collect();
    let global = finish_global(fit, rss);
    let batches = site_estimate(&global, rows, options)?;
    let model = ComBatModel {
        global,
        options: *options,
        batches,
    };
    let out = model.apply(rows)?;
    Ok((model, out))
}

/// Convenience for tests and the simulator: runs the federated protocol over `sites` (in site
/// order) and returns the model with every site's batch adjustments.
pub fn combat_federated(
    spec: &DesignSpec,
    sites: &[ComBatRows],
    options: &ComBatOptions,
) -> Result<ComBatModel> {
    let r1: Vec<ComBatCrossProducts> = sites
        .iter()
        .map(|s| site_cross_products(spec, s))
        .collect::<Result<_>>()?;
    let fit = aggregate_cross_products(spec, &r1)?;
    let r2: Vec<ComBatResiduals> = sites
        .iter()
        .map(|s| site_residuals(&fit, s))
        .collect::<Result<_>>()?;
    let global = aggregate_residuals(&fit, &r2)?;
    let mut batches = Vec::new();
    for s in sites {
        batches.extend(site_estimate(&global, s, options)?);
    }
    Ok(ComBatModel {
        global,
        options: *options,
        batches,
    })
}
