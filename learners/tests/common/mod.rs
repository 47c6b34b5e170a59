//! Synthetic cohorts for the learners' tests: a nonlinear signal a linear model cannot capture.
#![allow(dead_code)]

use learners::rng;
use ndarray::Array2;

/// `n` rows × `p` (≥ 3) standard-normal-ish features; y = 1 iff
/// `x0·x1 + sin(2·x2) + 0.5·noise > 0` (an interaction and a non-monotone term).
pub fn nonlinear(n: usize, p: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    let mut r = rng::stream(seed);
    let mut normal = || {
        // Box–Muller from two uniforms.
        let u1 = rng::unit(&mut r).max(1e-12);
        let u2 = rng::unit(&mut r);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let mut x = Array2::zeros((n, p));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        for j in 0..p {
            x[[i, j]] = normal();
        }
        let s = x[[i, 0]] * x[[i, 1]] + (2.0 * x[[i, 2]]).sin() + 0.5 * normal();
        y.push(s > 0.0);
    }
    (x, y)
}
