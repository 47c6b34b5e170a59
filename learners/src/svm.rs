//! RBF-kernel C-SVM (linfa-svm's SMO solver) with Platt-scaled probabilities.
//!
//! Conventions:
//! - kernel `k(x, x') = exp(−γ‖x − x'‖²)` with γ as in scikit-learn/libsvm; linfa parametrises
//!   the Gaussian kernel by `eps = 1/γ` (`k = exp(−‖x − x'‖²/eps)`), and we convert.
//! - `C` is the same box constraint for both classes (`pos_neg_weights(C, C)`).
//! - decision value `f(x) = Σ αᵢ k(xᵢ, x) − ρ` (linfa's `weighted_sum − rho`), positive for `true`.
//! - probability `P(y=1|x) = 1 / (1 + exp(A f(x) + B))` (Platt 1999) with A, B fitted by the
//!   Lin–Lin–Weng Newton method (linfa's `platt_newton_method`, the libsvm algorithm), computed in
//!   f64 here (linfa's own `Pr` output rounds to f32).
//!
//! The Platt caveat: linfa's `Svm::<f64, Pr>` fits A, B on the decision values of the *training*
//! rows, where the SVM is over-confident (support vectors sit on the margin by construction), so
//! its probabilities are too extreme. libsvm / scikit-learn `SVC(probability=True)` instead fit
//! A, B on decision values from an internal 5-fold cross-validation. [`PlattMode::CrossValidated`]
//! (the default) does the libsvm thing with stratified folds; [`PlattMode::InSample`] reproduces
//! linfa's `Pr` behaviour (checked in the tests). Either way the stacking meta-features for a
//! site's own rows come from the outer inner-CV (out-of-fold), never from in-sample predictions.

use linfa::composing::platt_scaling::{PlattParams, platt_newton_method};
use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::{Array1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, check_cols, check_finite, check_xy, param};
use crate::folds::stratified_folds;
use crate::plan::ProbabilisticModel;
use crate::rng::{derive_seed, tag};

/// SVM hyper-parameters (scikit-learn names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvmParams {
    /// Box constraint C > 0.
    pub c: f64,
    /// RBF γ > 0.
    pub gamma: f64,
}

/// How Platt's A, B are fitted (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlattMode {
    /// On the training rows' own decision values (linfa `Svm::<f64, Pr>`): optimistic.
    InSample,
    /// On out-of-fold decision values of a stratified `folds`-fold CV (libsvm uses 5).
    CrossValidated { folds: u32 },
}

impl Default for PlattMode {
    fn default() -> Self {
        PlattMode::CrossValidated { folds: 5 }
    }
}

/// A fitted SVM with its Platt coefficients. Serialisable so it can be relayed to other sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmModel {
    pub params: SvmParams,
    pub n_features: usize,
    pub platt_a: f64,
    pub platt_b: f64,
    svm: Svm<f64, bool>,
}

fn fit_raw(x: ArrayView2<f64>, y: &[bool], p: &SvmParams) -> Result<Svm<f64, bool>> {
    let ds = Dataset::new(x.to_owned(), Array1::from(y.to_vec()));
    Svm::<f64, bool>::params()
        .pos_neg_weights(p.c, p.c)
        .gaussian_kernel(1.0 / p.gamma)
        .fit(&ds)
        .map_err(|e| LearnerError::Svm(e.to_string()))
}

fn decision(svm: &Svm<f64, bool>, x: ArrayView2<f64>) -> Vec<f64> {
    x.axis_iter(Axis(0))
        .map(|row| svm.weighted_sum(&row) - svm.rho)
        .collect()
}

fn platt(dec: &[f64], y: &[bool]) -> Result<(f64, f64)> {
    let params = PlattParams::<f64, ()>::default();
    let checked = params
        .check_ref()
        .map_err(|e| LearnerError::Platt(e.to_string()))?;
    platt_newton_method(
        Array1::from(dec.to_vec()).view(),
        Array1::from(y.to_vec()).view(),
        checked,
    )
    .map_err(|e| LearnerError::Platt(e.to_string()))
}

/// Fits the SVM on all rows and Platt-scales it (see [`PlattMode`]). `seed` only drives the
/// Platt CV folds.
pub fn fit_svm(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &SvmParams,
    mode: PlattMode,
    seed: u64,
) -> Result<SvmModel> {
    check_xy("SVM", x, y.len())?;
    if !(params.c > 0.0 && params.c.is_finite()) {
        return Err(param("svm.c", params.c, "must be a positive finite number"));
    }
    if !(params.gamma > 0.0 && params.gamma.is_finite()) {
        return Err(param(
            "svm.gamma",
            params.gamma,
            "must be a positive finite number",
        ));
    }
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == y.len() {
        return Err(LearnerError::NeedBothClasses {
            what: "SVM",
            positives,
            negatives: y.len() - positives,
        });
    }
    let svm = fit_raw(x, y, params)?;
    let dec = match mode {
        PlattMode::InSample => decision(&svm, x),
        PlattMode::CrossValidated { folds } => {
            let k = (folds as usize).max(2);
            let fold = stratified_folds(y, k, derive_seed(seed, &[tag::PLATT_FOLDS]))?;
            let mut dec = vec![0.0; y.len()];
            for f in 0..k as u32 {
                let tr: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
                let te: Vec<usize> = (0..y.len()).filter(|&i| fold[i] == f).collect();
                if te.is_empty() {
                    continue;
                }
                let ytr: Vec<bool> = tr.iter().map(|&i| y[i]).collect();
                let p = ytr.iter().filter(|&&v| v).count();
                // libsvm's rule when a CV training part holds one class: +1 / −1 (0 if empty).
                let vals: Vec<f64> = if p == 0 || p == ytr.len() {
                    let v = if ytr.is_empty() {
                        0.0
                    } else if p > 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    vec![v; te.len()]
                } else {
                    let m = fit_raw(x.select(Axis(0), &tr).view(), &ytr, params)?;
                    decision(&m, x.select(Axis(0), &te).view())
                };
                for (&i, v) in te.iter().zip(vals) {
                    dec[i] = v;
                }
            }
            dec
        }
    };
    let (platt_a, platt_b) = platt(&dec, y)?;
    Ok(SvmModel {
        params: *params,
        n_features: x.ncols(),
        platt_a,
        platt_b,
        svm,
    })
}

impl SvmModel {
    /// Decision values f(x) (positive means class `true`).
    pub fn decision_function(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        check_cols("SVM", self.n_features, x.ncols())?;
        check_finite("SVM", x)?;
        Ok(decision(&self.svm, x))
    }
}

/// Numerically stable 1 / (1 + exp(t)).
pub(crate) fn sigmoid_neg(t: f64) -> f64 {
    if t >= 0.0 {
        let e = (-t).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + t.exp())
    }
}

impl ProbabilisticModel for SvmModel {
    fn n_features(&self) -> usize {
        self.n_features
    }
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        Ok(self
            .decision_function(x)?
            .into_iter()
            .map(|f| sigmoid_neg(self.platt_a * f + self.platt_b))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::dataset::Pr;
    use ndarray::Array2;

    fn data() -> (Array2<f64>, Vec<bool>) {
        let mut x = Array2::zeros((40, 2));
        let mut y = Vec::new();
        for i in 0..40 {
            let a = (i as f64 * 0.7).sin() * 2.0;
            let b = (i as f64 * 1.3).cos() * 2.0;
            x[[i, 0]] = a;
            x[[i, 1]] = b;
            y.push(a * a + b * b < 2.0);
        }
        (x, y)
    }

    #[test]
    fn in_sample_mode_reproduces_linfa_pr() {
        let (x, y) = data();
        let p = SvmParams { c: 1.0, gamma: 0.5 };
        let ours = fit_svm(x.view(), &y, &p, PlattMode::InSample, 0).unwrap();
        let ds = Dataset::new(x.clone(), Array1::from(y.clone()));
        let linfa_model = Svm::<f64, Pr>::params()
            .pos_neg_weights(1.0, 1.0)
            .gaussian_kernel(2.0)
            .fit(&ds)
            .unwrap();
        let theirs = linfa_model.predict(&x);
        let mine = ours.predict_proba(x.view()).unwrap();
        for (a, b) in mine.iter().zip(theirs.iter()) {
            // linfa rounds its Pr to f32.
            assert!((a - f64::from(**b)).abs() < 1e-6, "{a} vs {}", **b);
        }
    }

    #[test]
    fn cross_validated_platt_is_less_extreme_and_serialises() {
        let (x, y) = data();
        let p = SvmParams {
            c: 10.0,
            gamma: 1.0,
        };
        let ins = fit_svm(x.view(), &y, &p, PlattMode::InSample, 0).unwrap();
        let cv = fit_svm(x.view(), &y, &p, PlattMode::default(), 0).unwrap();
        // Same SVM, different calibration: CV slopes are flatter (|A| smaller).
        assert_eq!(
            ins.decision_function(x.view()).unwrap(),
            cv.decision_function(x.view()).unwrap()
        );
        assert!(
            cv.platt_a.abs() < ins.platt_a.abs(),
            "{} vs {}",
            cv.platt_a,
            ins.platt_a
        );
        let json = serde_json::to_string(&cv).unwrap();
        let back: SvmModel = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.predict_proba(x.view()).unwrap(),
            cv.predict_proba(x.view()).unwrap()
        );
        assert!(fit_svm(x.view(), &[true; 40], &p, PlattMode::InSample, 0).is_err());
        assert!(cv.predict_proba(Array2::zeros((2, 3)).view()).is_err());
    }
}
