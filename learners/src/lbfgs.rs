//! A deterministic L-BFGS minimiser written as a state machine: it says which point it needs the
//! objective and gradient at ([`Lbfgs::point`]) and is told the answer ([`Lbfgs::tell`]). That
//! lets the aggregator drive many fits with one round trip per evaluation, and lets the state be
//! serialised between rounds (so an aggregator restart resumes a fit exactly).
//!
//! Algorithm (Nocedal & Wright, Alg. 7.4/7.5):
//! - direction `d = −H∇f` by the two-loop recursion over the last `memory` pairs (s, y), with
//!   `H₀ = (sᵀy / yᵀy)·I` from the newest pair; a pair is stored only if `sᵀy > 1e-10·yᵀy`
//!   (curvature), and if `d` is not a descent direction the memory is cleared and `d = −∇f`;
//! - step: Armijo backtracking from `t = 1` (first iteration `t = 1/max(1, ‖∇f‖₂)`),
//!   `f(x+td) ≤ f(x) + 1e-4·t·∇fᵀd`; a rejected trial shrinks t to the minimiser of the quadratic
//!   through f(x), ∇fᵀd and the trial value, clamped to [0.1t, 0.5t] (0.5t if the trial value is
//!   not finite); at most `max_line_search` trials per iteration;
//! - stop (scipy L-BFGS-B's tests, as scikit-learn uses them): `max|∇f| ≤ gtol`, or
//!   `(f_old − f)/max(|f_old|, |f|, 1) ≤ ftol`, or `max_iter` iterations, or `max_evals`
//!   evaluations, or a failed line search (the last accepted point is kept).
//!
//! Every operation is a fixed sequence of f64 operations, so the same answers give the same
//! iterates, bit for bit.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Result, param};

/// Optimiser settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbfgsConfig {
    /// Stored (s, y) pairs (scipy's `maxcor`, 10).
    pub memory: usize,
    /// Iterations (scikit-learn's `max_iter`, 200).
    pub max_iter: u32,
    /// Objective evaluations (scikit-learn's `max_fun`, 15000).
    pub max_evals: u32,
    /// Gradient tolerance on max|∇f| (scikit-learn passes its `tol`, 1e-4, as scipy's `gtol`).
    pub gtol: f64,
    /// Relative reduction tolerance (scipy's default `factr·eps` = 1e7·2.22e-16).
    pub ftol: f64,
    /// Trials per line search.
    pub max_line_search: u32,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            memory: 10,
            max_iter: 200,
            max_evals: 15000,
            gtol: 1e-4,
            ftol: 1e7 * f64::EPSILON,
            max_line_search: 20,
        }
    }
}

impl LbfgsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.memory == 0 {
            return Err(param("optimiser.memory", 0, "must be at least 1"));
        }
        if self.max_iter == 0 || self.max_evals == 0 || self.max_line_search == 0 {
            return Err(param(
                "optimiser.max_iter/max_evals/max_line_search",
                0,
                "must be at least 1",
            ));
        }
        if !(self.gtol >= 0.0 && self.ftol >= 0.0) {
            return Err(param(
                "optimiser.gtol/ftol",
                format!("{}/{}", self.gtol, self.ftol),
                "must be ≥ 0",
            ));
        }
        Ok(())
    }
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    GradientTolerance,
    FunctionTolerance,
    MaxIter,
    MaxEvals,
    LineSearchFailed,
}

impl Status {
    pub fn converged(self) -> bool {
        matches!(self, Status::GradientTolerance | Status::FunctionTolerance)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    Start,
    Search {
        d: Vec<f64>,
        t: f64,
        gd: f64,
        trials: u32,
        trial: Vec<f64>,
    },
    Done(Status),
}

/// The optimiser state (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lbfgs {
    cfg: LbfgsConfig,
    x: Vec<f64>,
    f: Option<f64>,
    g: Vec<f64>,
    s: VecDeque<Vec<f64>>,
    y: VecDeque<Vec<f64>>,
    phase: Phase,
    iterations: u32,
    evaluations: u32,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

impl Lbfgs {
    pub fn new(x0: Vec<f64>, cfg: LbfgsConfig) -> Self {
        Self {
            cfg,
            x: x0,
            f: None,
            g: Vec::new(),
            s: VecDeque::new(),
            y: VecDeque::new(),
            phase: Phase::Start,
            iterations: 0,
            evaluations: 0,
        }
    }

    /// The point at which the objective and gradient are needed next; `None` once stopped.
    pub fn point(&self) -> Option<&[f64]> {
        match &self.phase {
            Phase::Start => Some(&self.x),
            Phase::Search { trial, .. } => Some(trial),
            Phase::Done(_) => None,
        }
    }

    pub fn status(&self) -> Option<Status> {
        match self.phase {
            Phase::Done(s) => Some(s),
            _ => None,
        }
    }

    /// The best accepted point and its objective value.
    pub fn best(&self) -> (&[f64], Option<f64>) {
        (&self.x, self.f)
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn evaluations(&self) -> u32 {
        self.evaluations
    }

    fn direction(&self) -> Vec<f64> {
        let mut q: Vec<f64> = self.g.iter().map(|v| -v).collect();
        let k = self.s.len();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            let rho = 1.0 / dot(&self.y[i], &self.s[i]);
            alpha[i] = rho * dot(&self.s[i], &q);
            for (qj, yj) in q.iter_mut().zip(&self.y[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        if k > 0 {
            let gamma = dot(&self.s[k - 1], &self.y[k - 1]) / dot(&self.y[k - 1], &self.y[k - 1]);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for i in 0..k {
            let rho = 1.0 / dot(&self.y[i], &self.s[i]);
            let beta = rho * dot(&self.y[i], &q);
            for (qj, sj) in q.iter_mut().zip(&self.s[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        q
    }

    fn start_search(&mut self, first: bool) {
        let mut d = self.direction();
        let mut gd = dot(&self.g, &d);
        if gd >= 0.0 || !gd.is_finite() {
            self.s.clear();
            self.y.clear();
            d = self.g.iter().map(|v| -v).collect();
            gd = dot(&self.g, &d);
        }
        let t = if first {
            1.0 / dot(&self.g, &self.g).sqrt().max(1.0)
        } else {
            1.0
        };
        let trial = self.x.iter().zip(&d).map(|(x, d)| x + t * d).collect();
        self.phase = Phase::Search {
            d,
            t,
            gd,
            trials: 1,
            trial,
        };
    }

    /// Tells the objective value and gradient at [`Lbfgs::point`].
    pub fn tell(&mut self, f: f64, g: Vec<f64>) {
        self.evaluations += 1;
        match std::mem::replace(&mut self.phase, Phase::Done(Status::MaxEvals)) {
            Phase::Done(s) => {
                self.evaluations -= 1;
                self.phase = Phase::Done(s);
            }
            Phase::Start => {
                self.f = Some(f);
                self.g = g;
                if max_abs(&self.g) <= self.cfg.gtol {
                    self.phase = Phase::Done(Status::GradientTolerance);
                } else if !f.is_finite() {
                    self.phase = Phase::Done(Status::LineSearchFailed);
                } else {
                    self.start_search(true);
                }
            }
            Phase::Search {
                d,
                t,
                gd,
                trials,
                trial,
            } => {
                let f0 = self.f.expect("evaluated start");
                if !f.is_finite() || f > f0 + 1e-4 * t * gd {
                    if trials >= self.cfg.max_line_search {
                        self.phase = Phase::Done(Status::LineSearchFailed);
                        return;
                    }
                    if self.evaluations >= self.cfg.max_evals {
                        self.phase = Phase::Done(Status::MaxEvals);
                        return;
                    }
                    let t_new = if f.is_finite() {
                        let curv = (f - f0 - gd * t) / (t * t);
                        let tq = -gd / (2.0 * curv);
                        tq.clamp(0.1 * t, 0.5 * t)
                    } else {
                        0.5 * t
                    };
                    let trial = self.x.iter().zip(&d).map(|(x, d)| x + t_new * d).collect();
                    self.phase = Phase::Search {
                        d,
                        t: t_new,
                        gd,
                        trials: trials + 1,
                        trial,
                    };
                    return;
                }
                // Accept.
                let s: Vec<f64> = trial.iter().zip(&self.x).map(|(a, b)| a - b).collect();
                let yv: Vec<f64> = g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &yv);
                if sy > 1e-10 * dot(&yv, &yv) {
                    self.s.push_back(s);
                    self.y.push_back(yv);
                    if self.s.len() > self.cfg.memory {
                        self.s.pop_front();
                        self.y.pop_front();
                    }
                }
                self.x = trial;
                self.f = Some(f);
                self.g = g;
                self.iterations += 1;
                let rel = (f0 - f) / f0.abs().max(f.abs()).max(1.0);
                self.phase = if max_abs(&self.g) <= self.cfg.gtol {
                    Phase::Done(Status::GradientTolerance)
                } else if rel <= self.cfg.ftol {
                    Phase::Done(Status::FunctionTolerance)
                } else if self.iterations >= self.cfg.max_iter {
                    Phase::Done(Status::MaxIter)
                } else if self.evaluations >= self.cfg.max_evals {
                    Phase::Done(Status::MaxEvals)
                } else {
                    self.start_search(false);
                    return;
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock: the classic test; L-BFGS must reach (1, 1).
    #[test]
    fn minimises_rosenbrock() {
        let cfg = LbfgsConfig {
            gtol: 1e-8,
            ftol: 0.0,
            max_iter: 500,
            ..LbfgsConfig::default()
        };
        let mut o = Lbfgs::new(vec![-1.2, 1.0], cfg);
        while let Some(p) = o.point() {
            let (a, b) = (p[0], p[1]);
            let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            o.tell(f, g);
        }
        let (x, f) = o.best();
        assert_eq!(
            o.status(),
            Some(Status::GradientTolerance),
            "{:?}",
            o.status()
        );
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6,
            "{x:?}"
        );
        assert!(f.unwrap() < 1e-12);
        assert!(o.iterations() < 100, "{}", o.iterations());
    }
}
