//! The stacking meta-model: a multilayer perceptron for binary outcomes (scikit-learn
//! `MLPClassifier` conventions), with the loss split into a per-site sum so it can be fitted by
//! exact federated full-batch optimisation.
//!
//! Conventions (scikit-learn's):
//! - layers `n_inputs → hidden… → 1`; hidden activation relu / tanh / logistic; output logistic;
//! - weights initialised Glorot-uniform: every coefficient and intercept of a layer drawn from
//!   U(−b, b), `b = √(6/(fan_in+fan_out))` (`√(2/(fan_in+fan_out))` for the logistic activation),
//!   layer by layer, coefficients (row-major, fan_in × fan_out) then intercepts, from the ChaCha8
//!   stream of the init seed (scikit-learn uses NumPy's generator: same law, other draws);
//! - objective `J(w) = (1/N)·[Σᵢ ℓᵢ + (α/2)·‖W‖²]`, where ℓ is the binary log-loss and ‖W‖² sums
//!   the squared coefficients but not the intercepts; the gradient is `(Σᵢ ∇ℓᵢ + α·W)/N`.
//!   ℓ is computed from the output logit z as `softplus(z) − y·z`, which equals
//!   `−[y ln p + (1−y) ln(1−p)]` without scikit-learn's clipping of p at machine epsilon (they
//!   differ only when |z| > 36).
//!
//! Federated split: a site computes `(Σᵢ ℓᵢ, Σᵢ ∇ℓᵢ, n)` over its rows ([`mlp_loss_grad`]), the
//! aggregator adds the sites' sums in site order and the penalty ([`objective`]).
//!
//! Flat weight layout: for each layer, its coefficient matrix (fan_in × fan_out, row-major) then
//! its intercept vector.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, check_cols, check_finite, check_xy, param};
use crate::lbfgs::LbfgsConfig;
use crate::plan::ProbabilisticModel;
use crate::rng;

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Logistic,
}

/// Architecture, penalty and optimiser settings of the meta-model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpSpec {
    pub n_inputs: usize,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// L2 penalty α ≥ 0 (scikit-learn's `alpha`).
    pub alpha: f64,
    pub optimiser: LbfgsConfig,
}

impl Default for MlpSpec {
    /// scikit-learn's `MLPClassifier` defaults with `solver="lbfgs"` on the three base-learner
    /// probabilities: one hidden layer of 100 relu units, α = 1e-4, at most 200 iterations.
    fn default() -> Self {
        Self {
            n_inputs: 3,
            hidden: vec![100],
            activation: Activation::Relu,
            alpha: 1e-4,
            optimiser: LbfgsConfig::default(),
        }
    }
}

impl MlpSpec {
    /// Layer widths including input and output.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.n_inputs];
        w.extend(&self.hidden);
        w.push(1);
        w
    }

    /// Number of weights (coefficients + intercepts).
    pub fn n_params(&self) -> usize {
        self.widths().windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    pub fn validate(&self) -> Result<()> {
        if self.n_inputs == 0 {
            return Err(param("mlp.n_inputs", 0, "must be at least 1"));
        }
        if self.hidden.contains(&0) {
            return Err(param(
                "mlp.hidden",
                format!("{:?}", self.hidden),
                "layer widths must be ≥ 1",
            ));
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(param("mlp.alpha", self.alpha, "must be ≥ 0"));
        }
        self.optimiser.validate()
    }

    /// A 0/1 mask of the penalised entries (coefficients, not intercepts).
    pub(crate) fn penalty_mask(&self) -> Vec<bool> {
        let mut m = Vec::with_capacity(self.n_params());
        for w in self.widths().windows(2) {
            m.extend(std::iter::repeat_n(true, w[0] * w[1]));
            m.extend(std::iter::repeat_n(false, w[1]));
        }
        m
    }

    fn check_weights(&self, w: &[f64]) -> Result<()> {
        if w.len() != self.n_params() {
            return Err(LearnerError::Protocol {
                what: "MLP weights",
                detail: format!(
                    "got {} weights, the architecture {:?} has {}",
                    w.len(),
                    self.widths(),
                    self.n_params()
                ),
            });
        }
        Ok(())
    }
}

/// Glorot-uniform initial weights (see the module doc).
pub fn init_weights(spec: &MlpSpec, seed: u64) -> Vec<f64> {
    let mut r = rng::stream(seed);
    let factor = if spec.activation == Activation::Logistic {
        2.0
    } else {
        6.0
    };
    let mut out = Vec::with_capacity(spec.n_params());
    for w in spec.widths().windows(2) {
        let b = (factor / (w[0] + w[1]) as f64).sqrt();
        for _ in 0..(w[0] * w[1] + w[1]) {
            out.push(-b + 2.0 * b * rng::unit(&mut r));
        }
    }
    out
}

/// A site's (or any row group's) contribution to the objective at some weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossGradSum {
    /// Σ over rows of the log-loss.
    pub loss_sum: f64,
    /// Σ over rows of the gradient of the log-loss (flat layout), without the penalty.
    pub grad_sum: Vec<f64>,
    /// Number of rows summed.
    pub n: u64,
}

fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn act(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Relu => z.max(0.0),
        Activation::Tanh => z.tanh(),
        Activation::Logistic => sigmoid(z),
    }
}

/// Derivative from the activation's output value (a = act(z)).
fn act_deriv(a: Activation, out: f64, z: f64) -> f64 {
    match a {
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - out * out,
        Activation::Logistic => out * (1.0 - out),
    }
}

struct Layers {
    coef: Vec<Array2<f64>>,
    bias: Vec<ndarray::Array1<f64>>,
}

fn unpack(spec: &MlpSpec, w: &[f64]) -> Layers {
    let mut coef = Vec::new();
    let mut bias = Vec::new();
    let mut o = 0;
    for l in spec.widths().windows(2) {
        let (i, j) = (l[0], l[1]);
        coef.push(Array2::from_shape_vec((i, j), w[o..o + i * j].to_vec()).expect("shape"));
        o += i * j;
        bias.push(ndarray::Array1::from(w[o..o + j].to_vec()));
        o += j;
    }
    Layers { coef, bias }
}

/// Forward pass: pre-activations and activations of every layer (activations[0] = x).
fn forward(spec: &MlpSpec, l: &Layers, x: ArrayView2<f64>) -> (Vec<Array2<f64>>, Vec<Array2<f64>>) {
    let mut zs = Vec::new();
    let mut acts = vec![x.to_owned()];
    let last = l.coef.len() - 1;
    for k in 0..l.coef.len() {
        let z = acts[k].dot(&l.coef[k]) + &l.bias[k];
        let a = if k == last {
            z.clone() // output: keep the logit; the sigmoid is applied in the loss
        } else {
            z.mapv(|v| act(spec.activation, v))
        };
        zs.push(z);
        acts.push(a);
    }
    (zs, acts)
}

/// SITE HALF: loss and gradient sums over the given rows at `weights`.
pub fn mlp_loss_grad(
    spec: &MlpSpec,
    weights: &[f64],
    x: ArrayView2<f64>,
    y: &[bool],
) -> Result<LossGradSum> {
    spec.check_weights(weights)?;
    check_cols("MLP", spec.n_inputs, x.ncols())?;
    check_xy("MLP", x, y.len())?;
    let n = y.len();
    if n == 0 {
        return Ok(LossGradSum {
            loss_sum: 0.0,
            grad_sum: vec![0.0; spec.n_params()],
            n: 0,
        });
    }
    let l = unpack(spec, weights);
    let (zs, acts) = forward(spec, &l, x);
    let z_out = zs.last().expect("output layer").column(0).to_owned();
    let mut loss_sum = 0.0;
    let mut delta = Array2::zeros((n, 1));
    for i in 0..n {
        let z = z_out[i];
        let yi = if y[i] { 1.0 } else { 0.0 };
        loss_sum += softplus(z) - yi * z;
        delta[[i, 0]] = sigmoid(z) - yi;
    }
    let depth = l.coef.len();
    let mut grads_w = vec![Array2::zeros((0, 0)); depth];
    let mut grads_b = vec![ndarray::Array1::zeros(0); depth];
    for k in (0..depth).rev() {
        grads_w[k] = acts[k].t().dot(&delta);
        grads_b[k] = delta.sum_axis(Axis(0));
        if k > 0 {
            let mut back = delta.dot(&l.coef[k].t());
            let a = &acts[k];
            let z = &zs[k - 1];
            ndarray::Zip::from(&mut back)
                .and(a)
                .and(z)
                .for_each(|d, &out, &zv| *d *= act_deriv(spec.activation, out, zv));
            delta = back;
        }
    }
    let mut grad_sum = Vec::with_capacity(spec.n_params());
    for k in 0..depth {
        grad_sum.extend(grads_w[k].iter());
        grad_sum.extend(grads_b[k].iter());
    }
    Ok(LossGradSum {
        loss_sum,
        grad_sum,
        n: n as u64,
    })
}

/// AGGREGATOR HALF: adds the contributions in the order given (site order) and the penalty;
/// returns the objective J and its gradient (see the module doc).
pub fn objective(
    spec: &MlpSpec,
    weights: &[f64],
    parts: &[&LossGradSum],
) -> Result<(f64, Vec<f64>)> {
    spec.check_weights(weights)?;
    let mut loss = 0.0;
    let mut grad = vec![0.0; weights.len()];
    let mut n = 0u64;
    for p in parts {
        if p.grad_sum.len() != weights.len() {
            return Err(LearnerError::Protocol {
                what: "MLP sums",
                detail: format!(
                    "a gradient sum has {} entries, expected {}",
                    p.grad_sum.len(),
                    weights.len()
                ),
            });
        }
        loss += p.loss_sum;
        for (g, v) in grad.iter_mut().zip(&p.grad_sum) {
            *g += v;
        }
        n += p.n;
    }
    if n == 0 {
        return Err(LearnerError::Protocol {
            what: "MLP sums",
            detail: "no rows in any contribution: the fit has no training patients".into(),
        });
    }
    let nf = n as f64;
    let mask = spec.penalty_mask();
    let mut pen = 0.0;
    for ((g, &w), &m) in grad.iter_mut().zip(weights).zip(&mask) {
        if m {
            pen += w * w;
            *g += spec.alpha * w;
        }
        *g /= nf;
    }
    Ok(((loss + 0.5 * spec.alpha * pen) / nf, grad))
}

/// A fitted meta-model. Serialisable so it can be sent back to the sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpModel {
    pub spec: MlpSpec,
    pub weights: Vec<f64>,
}

impl ProbabilisticModel for MlpModel {
    fn n_features(&self) -> usize {
        self.spec.n_inputs
    }
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        self.spec.check_weights(&self.weights)?;
        check_cols("MLP", self.spec.n_inputs, x.ncols())?;
        check_finite("MLP", x)?;
        let l = unpack(&self.spec, &self.weights);
        let (zs, _) = forward(&self.spec, &l, x);
        Ok(zs
            .last()
            .expect("output")
            .column(0)
            .iter()
            .map(|&z| sigmoid(z))
            .collect())
    }
}
