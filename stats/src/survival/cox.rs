//! Cox proportional hazards, federated two ways, with Efron (R `coxph` default, lifelines
//! `CoxPHFitter`) or Breslow ties, Newton-Raphson, and Wald CIs and p-values.
//!
//! # (a) Site-stratified Cox by distributed Newton (exact)
//!
//! With the site as stratum, every risk set lies inside one site, so the log partial likelihood,
//! its score vector U(β) and information matrix I(β) are sums of per-site terms. SITE HALF:
//! [`cox_site_contribution`] (the site's own rows and the current β in; ℓ, U, I out).
//! AGGREGATOR HALF: [`fit_cox_newton`] sums the contributions (in `SiteId` order) and steps
//! β ← β + I⁻¹U. Equal to `coxph(… + strata(site))` / lifelines `strata=["site"]` / statsmodels
//! `PHReg(strata=site)`.
//!
//! # (b) Unstratified pooled Cox for one binary covariate, from count tables (exact)
//!
//! With x ∈ {0, 1}, every patient at risk contributes e^{xβ} ∈ {1, e^β}, so at each distinct
//! time t with dₖ events and Rₖ at risk in group k (k = 0, 1; d = d₀ + d₁), the Efron term is
//!
//!   ℓₜ(β) = d₁β − Σ_{l=0}^{d−1} log φₗ,  φₗ = Aₗ + Bₗe^β,  Aₗ = R₀ − (l/d)d₀,  Bₗ = R₁ − (l/d)d₁,
//!
//! (the tied events' risk-set mass is removed in steps of l/d, Efron 1977), whence with
//! πₗ = Bₗe^β/φₗ: Uₜ = d₁ − Σₗ πₗ and Iₜ = Σₗ πₗ(1 − πₗ). Breslow is the same with every
//! l replaced by 0: ℓₜ = d₁β − d·log(R₀ + R₁e^β). So the partial likelihood depends on the data
//! only through the per-time, per-group event and at-risk counts — exactly what the survival
//! table ([`super::TwoGroupTable`]) holds — and [`cox_binary_contribution`] evaluates it. With
//! exact times it equals the per-patient Cox to round-off; with coarsened times it is the exact
//! Cox of the coarsened data. Applied per site table it also gives (a) for the group indicator.
//!
//! # Newton and inference
//!
//! Start at β = 0; step δ = I⁻¹U, halving δ while ℓ decreases; stop when max|δ| < 1e-10
//! (Newton converges quadratically, so β is then accurate to round-off). SE = √diag(I(β̂)⁻¹),
//! Wald z = β̂/SE, p = 2Φ(−|z|), HR = e^β̂ with CI e^{β̂ ± z₀.₉₇₅·SE}. The likelihood-ratio
//! statistic 2(ℓ(β̂) − ℓ(0)) is reported too.

use serde::{Deserialize, Serialize};

use super::table::TwoGroupTable;
use crate::metrics::MetricsError;
use crate::metrics::roc::{normal_quantile_two_sided, normal_two_sided_p};

/// Tie handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CoxTies {
    /// Efron (R coxph default, lifelines).
    #[default]
    Efron,
    /// Breslow.
    Breslow,
}

/// Log partial likelihood, score and information at β for some rows (a site, or all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoxContribution {
    /// Log partial likelihood ℓ(β).
    pub loglik: f64,
    /// Score U(β) = ∂ℓ/∂β (length p).
    pub score: Vec<f64>,
    /// Observed information I(β) = −∂²ℓ/∂β∂βᵀ, row-major p×p.
    pub information: Vec<f64>,
}

impl CoxContribution {
    /// Zero contribution for p covariates.
    pub fn zero(p: usize) -> CoxContribution {
        CoxContribution {
            loglik: 0.0,
            score: vec![0.0; p],
            information: vec![0.0; p * p],
        }
    }

    /// Adds another contribution (sites in `SiteId` order for repeatable sums).
    pub fn add(&mut self, o: &CoxContribution) {
        self.loglik += o.loglik;
        for (a, b) in self.score.iter_mut().zip(&o.score) {
            *a += b;
        }
        for (a, b) in self.information.iter_mut().zip(&o.information) {
            *a += b;
        }
    }
}

/// SITE HALF of the stratified Cox: ℓ, U, I of the site's own rows at `beta` (the site is one
/// stratum). `covariates[i]` is patient i's covariate vector (length p = `beta.len()`).
pub fn cox_site_contribution(
    times: &[f64],
    events: &[bool],
    covariates: &[Vec<f64>],
    beta: &[f64],
    ties: CoxTies,
) -> Result<CoxContribution, MetricsError> {
    use crate::metrics::table::check_lengths;
    check_lengths(
        "cox_site_contribution",
        "times",
        times.len(),
        "events",
        events.len(),
    )?;
    check_lengths(
        "cox_site_contribution",
        "times",
        times.len(),
        "covariates",
        covariates.len(),
    )?;
    let p = beta.len();
    for (i, x) in covariates.iter().enumerate() {
        if x.len() != p {
            return Err(MetricsError::LengthMismatch {
                what: "cox_site_contribution (a covariate row)",
                a_name: "covariates[i]",
                a: x.len(),
                b_name: "beta",
                b: p,
            });
        }
        if !(times[i].is_finite() && times[i] >= 0.0) {
            return Err(MetricsError::BadTime {
                index: i,
                value: times[i],
            });
        }
    }
    // Descending time: the risk set at t is everyone with time ≥ t.
    let mut idx: Vec<usize> = (0..times.len()).collect();
    idx.sort_by(|&a, &b| times[b].total_cmp(&times[a]));
    let mut out = CoxContribution::zero(p);
    let (mut s0, mut s1, mut s2) = (0.0f64, vec![0.0f64; p], vec![0.0f64; p * p]);
    let mut i = 0;
    while i < idx.len() {
        let t = times[idx[i]];
        let mut j = i;
        let (mut d0, mut d1, mut d2) = (0.0f64, vec![0.0f64; p], vec![0.0f64; p * p]);
        let mut d = 0usize;
        while j < idx.len() && times[idx[j]] == t {
            let x = &covariates[idx[j]];
            let xb: f64 = x.iter().zip(beta).map(|(a, b)| a * b).sum();
            let w = xb.exp();
            s0 += w;
            for a in 0..p {
                s1[a] += w * x[a];
                for b in 0..p {
                    s2[a * p + b] += w * x[a] * x[b];
                }
            }
            if events[idx[j]] {
                d += 1;
                out.loglik += xb;
                for a in 0..p {
                    out.score[a] += x[a];
                }
                d0 += w;
                for a in 0..p {
                    d1[a] += w * x[a];
                    for b in 0..p {
                        d2[a * p + b] += w * x[a] * x[b];
                    }
                }
            }
            j += 1;
        }
        for l in 0..d {
            let f = match ties {
                CoxTies::Efron => l as f64 / d as f64,
                CoxTies::Breslow => 0.0,
            };
            let phi = s0 - f * d0;
            out.loglik -= phi.ln();
            let mu: Vec<f64> = (0..p).map(|a| (s1[a] - f * d1[a]) / phi).collect();
            for a in 0..p {
                out.score[a] -= mu[a];
                for b in 0..p {
                    out.information[a * p + b] +=
                        (s2[a * p + b] - f * d2[a * p + b]) / phi - mu[a] * mu[b];
                }
            }
        }
        i = j;
    }
    Ok(out)
}

/// COUNT-TABLE Cox for the binary group indicator (x = 1 for group 1): ℓ, U, I at `beta` from
/// per-time, per-group event and at-risk counts (derivation in the module docs).
pub fn cox_binary_contribution(table: &TwoGroupTable, beta: f64, ties: CoxTies) -> CoxContribution {
    let eb = beta.exp();
    let mut out = CoxContribution::zero(1);
    for r in &table.rows {
        let d = r.events[0] + r.events[1];
        if d == 0 {
            continue;
        }
        let (r0, r1) = (r.at_risk[0] as f64, r.at_risk[1] as f64);
        let (e0, e1) = (r.events[0] as f64, r.events[1] as f64);
        out.loglik += e1 * beta;
        out.score[0] += e1;
        for l in 0..d {
            let f = match ties {
                CoxTies::Efron => l as f64 / d as f64,
                CoxTies::Breslow => 0.0,
            };
            let a = r0 - f * e0;
            let b = (r1 - f * e1) * eb;
            let phi = a + b;
            let pi = b / phi;
            out.loglik -= phi.ln();
            out.score[0] -= pi;
            out.information[0] += pi * (1.0 - pi);
        }
    }
    out
}

/// Newton settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NewtonOptions {
    /// Stop when max |step| falls below this (default 1e-10).
    pub tolerance: f64,
    /// Maximum iterations (default 50).
    pub max_iter: usize,
    /// Confidence level of the Wald CIs (default 0.95).
    pub conf_level: f64,
}

impl Default for NewtonOptions {
    fn default() -> Self {
        NewtonOptions {
            tolerance: 1e-10,
            max_iter: 50,
            conf_level: 0.95,
        }
    }
}

/// One coefficient of a fitted Cox model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoxCoefficient {
    /// β̂.
    pub beta: f64,
    /// Wald SE.
    pub se: f64,
    /// Hazard ratio e^β̂.
    pub hazard_ratio: f64,
    /// HR CI lower limit.
    pub hr_ci_lower: f64,
    /// HR CI upper limit.
    pub hr_ci_upper: f64,
    /// Wald z.
    pub z: f64,
    /// Two-sided Wald p.
    pub p_value: f64,
}

/// A fitted Cox model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoxFit {
    /// Coefficients.
    pub coefficients: Vec<CoxCoefficient>,
    /// Covariance I(β̂)⁻¹, row-major.
    pub covariance: Vec<f64>,
    /// ℓ(β̂).
    pub loglik: f64,
    /// ℓ(0).
    pub loglik_null: f64,
    /// Likelihood-ratio statistic 2(ℓ(β̂) − ℓ(0)).
    pub lr_statistic: f64,
    /// Newton iterations (= aggregator round trips after the first evaluation).
    pub iterations: usize,
    /// Ties method.
    pub ties: CoxTies,
    /// Confidence level of the CIs.
    pub conf_level: f64,
}

/// Solves the symmetric system `a x = b` (p×p, row-major) by Gaussian elimination with partial
/// pivoting; returns None if singular. Also used to invert (b = identity columns).
fn solve(a: &[f64], b: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut m: Vec<f64> = a.to_vec();
    let mut x: Vec<f64> = b.to_vec();
    let scale = a.iter().fold(0.0f64, |s, v| s.max(v.abs())).max(1e-300);
    for c in 0..p {
        let piv = (c..p).max_by(|&i, &j| m[i * p + c].abs().total_cmp(&m[j * p + c].abs()))?;
        if m[piv * p + c].abs() <= 1e-13 * scale {
            return None;
        }
        if piv != c {
            for k in 0..p {
                m.swap(piv * p + k, c * p + k);
            }
            x.swap(piv, c);
        }
        for r in c + 1..p {
            let f = m[r * p + c] / m[c * p + c];
            for k in c..p {
                m[r * p + k] -= f * m[c * p + k];
            }
            x[r] -= f * x[c];
        }
    }
    for c in (0..p).rev() {
        let s: f64 = (c + 1..p).map(|k| m[c * p + k] * x[k]).sum();
        x[c] = (x[c] - s) / m[c * p + c];
    }
    Some(x)
}

/// AGGREGATOR HALF: Newton-Raphson on a summed contribution. `eval(β)` returns the summed ℓ, U,
/// I at β (in the federation: one round trip in which every site returns its contribution).
pub fn fit_cox_newton<F>(
    p: usize,
    ties: CoxTies,
    options: &NewtonOptions,
    mut eval: F,
) -> Result<CoxFit, MetricsError>
where
    F: FnMut(&[f64]) -> Result<CoxContribution, MetricsError>,
{
    let z = normal_quantile_two_sided(options.conf_level)?;
    let mut beta = vec![0.0f64; p];
    let mut cur = eval(&beta)?;
    let loglik_null = cur.loglik;
    let mut iterations = 0;
    let mut last_step = f64::INFINITY;
    loop {
        if iterations >= options.max_iter {
            return Err(MetricsError::NoConvergence {
                iterations,
                step: last_step,
            });
        }
        let step =
            solve(&cur.information, &cur.score, p).ok_or(MetricsError::SingularInformation)?;
        iterations += 1;
        let mut scale = 1.0;
        let (new_beta, new) = loop {
            let nb: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + scale * s).collect();
            let nc = eval(&nb)?;
            if nc.loglik.is_finite() && nc.loglik >= cur.loglik - 1e-12 * cur.loglik.abs() {
                break (nb, nc);
            }
            scale *= 0.5;
            if scale < 1e-10 {
                return Err(MetricsError::NoConvergence {
                    iterations,
                    step: last_step,
                });
            }
        };
        last_step = step.iter().fold(0.0f64, |m, s| m.max((scale * s).abs()));
        beta = new_beta;
        cur = new;
        if last_step < options.tolerance {
            break;
        }
    }
    let mut covariance = vec![0.0f64; p * p];
    for c in 0..p {
        let mut e = vec![0.0; p];
        e[c] = 1.0;
        let col = solve(&cur.information, &e, p).ok_or(MetricsError::SingularInformation)?;
        for r in 0..p {
            covariance[r * p + c] = col[r];
        }
    }
    let coefficients = (0..p)
        .map(|j| {
            let se = covariance[j * p + j].sqrt();
            let b = beta[j];
            CoxCoefficient {
                beta: b,
                se,
                hazard_ratio: b.exp(),
                hr_ci_lower: (b - z * se).exp(),
                hr_ci_upper: (b + z * se).exp(),
                z: b / se,
                p_value: normal_two_sided_p(b / se),
            }
        })
        .collect();
    Ok(CoxFit {
        coefficients,
        covariance,
        loglik: cur.loglik,
        loglik_null,
        lr_statistic: 2.0 * (cur.loglik - loglik_null),
        iterations,
        ties,
        conf_level: options.conf_level,
    })
}

/// Unstratified pooled Cox for the binary group indicator from the pooled two-group table.
pub fn fit_cox_binary_pooled(
    table: &TwoGroupTable,
    ties: CoxTies,
    options: &NewtonOptions,
) -> Result<CoxFit, MetricsError> {
    fit_cox_newton(1, ties, options, |b| {
        Ok(cox_binary_contribution(table, b[0], ties))
    })
}

/// Site-stratified Cox for the binary group indicator from each site's own two-group table
/// (in `SiteId` order).
pub fn fit_cox_binary_stratified(
    site_tables: &[TwoGroupTable],
    ties: CoxTies,
    options: &NewtonOptions,
) -> Result<CoxFit, MetricsError> {
    fit_cox_newton(1, ties, options, |b| {
        let mut s = CoxContribution::zero(1);
        for t in site_tables {
            s.add(&cox_binary_contribution(t, b[0], ties));
        }
        Ok(s)
    })
}

/// EXACT per-patient Cox; `strata[i]` (e.g. the site) makes it stratified, all-equal strata
/// make it the unstratified pooled Cox.
pub fn fit_cox_patients(
    times: &[f64],
    events: &[bool],
    covariates: &[Vec<f64>],
    strata: &[usize],
    ties: CoxTies,
    options: &NewtonOptions,
) -> Result<CoxFit, MetricsError> {
    crate::metrics::table::check_lengths(
        "fit_cox_patients",
        "times",
        times.len(),
        "strata",
        strata.len(),
    )?;
    let p = covariates.first().map(|x| x.len()).unwrap_or(0);
    let mut levels: Vec<usize> = strata.to_vec();
    levels.sort_unstable();
    levels.dedup();
    let groups: Vec<Vec<usize>> = levels
        .iter()
        .map(|&s| (0..times.len()).filter(|&i| strata[i] == s).collect())
        .collect();
    fit_cox_newton(p, ties, options, |b| {
        let mut sum = CoxContribution::zero(p);
        for g in &groups {
            let t: Vec<f64> = g.iter().map(|&i| times[i]).collect();
            let e: Vec<bool> = g.iter().map(|&i| events[i]).collect();
            let x: Vec<Vec<f64>> = g.iter().map(|&i| covariates[i].clone()).collect();
            sum.add(&cox_site_contribution(&t, &e, &x, b, ties)?);
        }
        Ok(sum)
    })
}
