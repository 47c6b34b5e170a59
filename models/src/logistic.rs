//! Unpenalised logistic regression with intercept by exact federated IRLS (Newton-Raphson), the
//! clinical comparator model (DESIGN §4.7).
//!
//! SITE HALF: [`site_logistic_sums`] returns, for each requested fit (one call serves many fits:
//! every outer fold of every repeat), the log-likelihood, the score `X̃'(v∘(y − p))` and the
//! information `X̃' diag(v∘p(1−p)) X̃` of its rows at the requested β, where X̃ = [1 | X] and v
//! are the fit's row weights. AGGREGATOR HALF: [`LogisticDriver`] sums the replies in site order
//! and takes the Newton step `β ← β + I⁻¹U`. After convergence (max |Δβ_j| ≤ tol·(1 + |β_j|)) one
//! more round evaluates the log-likelihood and information **at the final β**, from which the
//! standard errors `sqrt(diag(I⁻¹))`, Wald z and two-sided normal p-values are taken (as
//! statsmodels `Logit` and R `glm` report them). POOLED REFERENCE: [`logistic_pooled`].

use crate::error::{ModelsError, Result};
use crate::linalg::{chol_inverse, chol_solve_vec, cholesky, packed_len, unpack_upper};
use crate::sampling::{Refusal, SiteData, WeightSpec};
use crate::standardize::check_finite;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// One fit's current coefficients (intercept first) and how the site weights its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRequest {
    /// Fit id.
    pub fit_id: u32,
    /// Row weights.
    pub weights: WeightSpec,
    /// β (length p + 1, intercept first).
    pub beta: Vec<f64>,
}

/// A site's sums for one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticSums {
    /// Fit id.
    pub fit_id: u32,
    /// Rows with non-zero weight.
    pub rows: usize,
    /// Σ v.
    pub sum_w: f64,
    /// Σ v [yη − log(1 + e^η)].
    pub loglik: f64,
    /// Score X̃'(v∘(y − p)), length p + 1.
    pub score: Vec<f64>,
    /// Information X̃'diag(v∘p(1−p))X̃, packed upper triangle.
    pub info: Vec<f64>,
}

/// A site's reply for one fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogisticReply {
    /// The sums.
    Sums(LogisticSums),
    /// The disclosure guard refused.
    Refused(Refusal),
}

/// Numerically stable `log(1 + e^η)`.
#[inline]
pub(crate) fn softplus(eta: f64) -> f64 {
    eta.max(0.0) + (-eta.abs()).exp().ln_1p()
}

/// Numerically stable logistic function.
#[inline]
pub(crate) fn sigmoid(eta: f64) -> f64 {
    if eta >= 0.0 {
        1.0 / (1.0 + (-eta).exp())
    } else {
        let e = eta.exp();
        e / (1.0 + e)
    }
}

/// SITE HALF: sums for every request, in request order. A request whose parameter count
/// exceeds `max_params_per_row ×` its non-zero-weight rows is answered with
/// [`LogisticReply::Refused`] (see [`crate::disclosure`]).
pub fn site_logistic_sums(
    data: &SiteData,
    requests: &[LogisticRequest],
    max_params_per_row: f64,
) -> Result<Vec<LogisticReply>> {
    data.validate()?;
    let p1 = data.x.ncols() + 1;
    requests
        .iter()
        .map(|r| {
            if r.beta.len() != p1 {
                return Err(ModelsError::Dimension {
                    what: "logistic coefficients".into(),
                    expected: p1,
                    got: r.beta.len(),
                });
            }
            let (w, _) = data.weights(&r.weights)?;
            let rows = w.iter().filter(|&&v| v > 0.0).count();
            if !crate::cross_product_allowed(p1, rows, max_params_per_row) {
                return Ok(LogisticReply::Refused(Refusal {
                    fit_id: r.fit_id,
                    params: p1,
                    rows,
                    max_params_per_row,
                }));
            }
            let mut info = vec![0.0; packed_len(p1)];
            let mut score = vec![0.0; p1];
            let mut loglik = 0.0;
            let mut sum_w = 0.0;
            let mut xt = vec![0.0; p1];
            xt[0] = 1.0;
            for i in 0..data.y.len() {
                let v = w[i];
                if v == 0.0 {
                    continue;
                }
                for j in 1..p1 {
                    xt[j] = data.x[[i, j - 1]];
                }
                let eta: f64 = xt.iter().zip(&r.beta).map(|(a, b)| a * b).sum();
                let pr = sigmoid(eta);
                let y = data.y[i];
                loglik += v * (y * eta - softplus(eta));
                sum_w += v;
                let res = v * (y - pr);
                let wt = v * pr * (1.0 - pr);
                let mut k = 0;
                for a in 0..p1 {
                    score[a] += res * xt[a];
                    let wa = wt * xt[a];
                    for b in a..p1 {
                        info[k] += wa * xt[b];
                        k += 1;
                    }
                }
            }
            Ok(LogisticReply::Sums(LogisticSums {
                fit_id: r.fit_id,
                rows,
                sum_w,
                loglik,
                score,
                info,
            }))
        })
        .collect()
}

/// A fit to run: its id and row weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticFitSpec {
    /// Fit id (unique within the driver).
    pub fit_id: u32,
    /// Row weights.
    pub weights: WeightSpec,
}

/// Newton-Raphson options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogisticOptions {
    /// Newton steps before giving up (the fit is then reported with `converged = false`).
    pub max_iter: usize,
    /// Convergence: max |Δβ_j| ≤ tol·(1 + |β_j|).
    pub tol: f64,
}

impl Default for LogisticOptions {
    fn default() -> Self {
        LogisticOptions {
            max_iter: 50,
            tol: 1e-10,
        }
    }
}

/// A fitted logistic regression (coefficients intercept first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticFit {
    /// Fit id.
    pub fit_id: u32,
    /// β̂.
    pub coef: Vec<f64>,
    /// Standard errors sqrt(diag(I(β̂)⁻¹)).
    pub se: Vec<f64>,
    /// Wald z = β̂ / se.
    pub z: Vec<f64>,
    /// Two-sided normal p-values.
    pub p_value: Vec<f64>,
    /// Log-likelihood at β̂.
    pub loglik: f64,
    /// Σ weights.
    pub sum_w: f64,
    /// Newton steps taken.
    pub iterations: usize,
    /// Whether the tolerance was reached.
    pub converged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LogPhase {
    Step,
    Final { converged: bool },
    Done(LogisticFit),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LogFitState {
    spec: LogisticFitSpec,
    beta: Vec<f64>,
    iterations: usize,
    phase: LogPhase,
}

/// AGGREGATOR HALF: advances many logistic fits in lock-step (one round trip per Newton step of
/// the slowest fit, plus the final evaluation round). Serialisable between rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticDriver {
    n_features: usize,
    options: LogisticOptions,
    fits: Vec<LogFitState>,
    rounds: u32,
}

fn finish(
    fit_id: u32,
    beta: &[f64],
    s: &Summed,
    iterations: usize,
    converged: bool,
) -> Result<LogisticFit> {
    let l = cholesky(&s.info, "logistic information matrix")?;
    let inv = chol_inverse(&l);
    let se: Vec<f64> = (0..beta.len()).map(|j| inv[[j, j]].sqrt()).collect();
    let z: Vec<f64> = beta.iter().zip(&se).map(|(b, s)| b / s).collect();
    let normal = Normal::standard();
    let p_value = z.iter().map(|z| 2.0 * normal.sf(z.abs())).collect();
    Ok(LogisticFit {
        fit_id,
        coef: beta.to_vec(),
        se,
        z,
        p_value,
        loglik: s.loglik,
        sum_w: s.sum_w,
        iterations,
        converged,
    })
}

struct Summed {
    loglik: f64,
    sum_w: f64,
    score: Array1<f64>,
    info: Array2<f64>,
}

impl LogisticDriver {
    /// A driver for `fits` on `n_features` columns (intercept added internally), starting at β = 0.
    pub fn new(
        n_features: usize,
        fits: Vec<LogisticFitSpec>,
        options: LogisticOptions,
    ) -> Result<Self> {
        let mut ids: Vec<u32> = fits.iter().map(|f| f.fit_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ModelsError::Invalid("duplicate logistic fit ids".into()));
        }
        Ok(LogisticDriver {
            n_features,
            options,
            fits: fits
                .into_iter()
                .map(|spec| LogFitState {
                    spec,
                    beta: vec![0.0; n_features + 1],
                    iterations: 0,
                    phase: LogPhase::Step,
                })
                .collect(),
            rounds: 0,
        })
    }

    /// Requests for this round (identical for every site).
    pub fn next_requests(&self) -> Vec<LogisticRequest> {
        self.fits
            .iter()
            .filter(|f| !matches!(f.phase, LogPhase::Done(_)))
            .map(|f| LogisticRequest {
                fit_id: f.spec.fit_id,
                weights: f.spec.weights,
                beta: f.beta.clone(),
            })
            .collect()
    }

    /// Applies the sites' replies (outer index = site, in site order; inner = request order).
    pub fn apply(&mut self, replies: &[Vec<LogisticReply>]) -> Result<()> {
        let p1 = self.n_features + 1;
        let active: Vec<usize> = (0..self.fits.len())
            .filter(|&i| !matches!(self.fits[i].phase, LogPhase::Done(_)))
            .collect();
        let mut summed: Vec<Summed> = active
            .iter()
            .map(|_| Summed {
                loglik: 0.0,
                sum_w: 0.0,
                score: Array1::zeros(p1),
                info: Array2::zeros((p1, p1)),
            })
            .collect();
        for (site, rep) in replies.iter().enumerate() {
            if rep.len() != active.len() {
                return Err(ModelsError::Dimension {
                    what: format!("logistic replies of site #{site}"),
                    expected: active.len(),
                    got: rep.len(),
                });
            }
            for (k, r) in rep.iter().enumerate() {
                let fit_id = self.fits[active[k]].spec.fit_id;
                let s = match r {
                    LogisticReply::Refused(r) => return Err(r.clone().into_error(site)),
                    LogisticReply::Sums(s) => s,
                };
                if s.fit_id != fit_id || s.score.len() != p1 || s.info.len() != packed_len(p1) {
                    return Err(ModelsError::Invalid(format!(
                        "site #{site} reply {k} does not match fit {fit_id} with {p1} parameters"
                    )));
                }
                let acc = &mut summed[k];
                acc.loglik += s.loglik;
                acc.sum_w += s.sum_w;
                for (a, b) in acc.score.iter_mut().zip(&s.score) {
                    *a += b;
                }
                acc.info += &unpack_upper(&s.info, p1)?;
            }
        }
        for (k, &i) in active.iter().enumerate() {
            let f = &mut self.fits[i];
            let s = &summed[k];
            match f.phase {
                LogPhase::Final { converged } => {
                    f.phase =
                        LogPhase::Done(finish(f.spec.fit_id, &f.beta, s, f.iterations, converged)?);
                }
                LogPhase::Step => {
                    let l = cholesky(&s.info, "logistic information matrix")?;
                    let delta = chol_solve_vec(&l, s.score.view());
                    let mut small = true;
                    for (b, d) in f.beta.iter_mut().zip(delta.iter()) {
                        *b += d;
                        if d.abs() > self.options.tol * (1.0 + b.abs()) || !d.is_finite() {
                            small = false;
                        }
                    }
                    f.iterations += 1;
                    if small {
                        f.phase = LogPhase::Final { converged: true };
                    } else if f.iterations >= self.options.max_iter {
                        f.phase = LogPhase::Final { converged: false };
                    }
                }
                LogPhase::Done(_) => {}
            }
        }
        self.rounds += 1;
        Ok(())
    }

    /// True when every fit has its final evaluation.
    pub fn is_done(&self) -> bool {
        self.fits
            .iter()
            .all(|f| matches!(f.phase, LogPhase::Done(_)))
    }

    /// Round trips so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The fits, in the order given to [`LogisticDriver::new`] (None until done).
    pub fn results(&self) -> Option<Vec<LogisticFit>> {
        self.fits
            .iter()
            .map(|f| match &f.phase {
                LogPhase::Done(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

/// POOLED REFERENCE: Newton-Raphson on all rows in memory (`x` n × p without intercept column,
/// `weights` optional row weights), same convergence rule and final evaluation.
pub fn logistic_pooled(
    x: ArrayView2<f64>,
    y: &[f64],
    weights: Option<&[f64]>,
    options: LogisticOptions,
) -> Result<LogisticFit> {
    check_finite(x, "features")?;
    let n = x.nrows();
    let p1 = x.ncols() + 1;
    let mut xt = Array2::<f64>::ones((n, p1));
    xt.slice_axis_mut(ndarray::Axis(1), ndarray::Slice::from(1..))
        .assign(&x);
    let v: Vec<f64> = weights.map_or_else(|| vec![1.0; n], <[f64]>::to_vec);
    let eval = |beta: &Array1<f64>| -> Summed {
        let eta = xt.dot(beta);
        let pr = eta.mapv(sigmoid);
        let res = Array1::from_iter((0..n).map(|i| v[i] * (y[i] - pr[i])));
        let wt = Array1::from_iter((0..n).map(|i| v[i] * pr[i] * (1.0 - pr[i])));
        let xw = &xt * &wt.view().insert_axis(ndarray::Axis(1));
        Summed {
            loglik: (0..n)
                .map(|i| v[i] * (y[i] * eta[i] - softplus(eta[i])))
                .sum(),
            sum_w: v.iter().sum(),
            score: xt.t().dot(&res),
            info: xt.t().dot(&xw),
        }
    };
    let mut beta = Array1::<f64>::zeros(p1);
    let mut it = 0;
    let mut converged = false;
    while it < options.max_iter {
        let s = eval(&beta);
        let l = cholesky(&s.info, "logistic information matrix")?;
        let d = chol_solve_vec(&l, s.score.view());
        beta += &d;
        it += 1;
        if d.iter()
            .zip(beta.iter())
            .all(|(d, b)| d.abs() <= options.tol * (1.0 + b.abs()))
        {
            converged = true;
            break;
        }
    }
    let s = eval(&beta);
    finish(0, beta.as_slice().unwrap_or(&[]), &s, it, converged)
}
