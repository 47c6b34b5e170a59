//! Times one site's full inner-CV random search (default budgets and spaces, 5 inner folds) plus
//! the final refit, per learner, on 20–60 rows × 5 features; and the MLP meta-model's site half
//! and batched driver for the study's 100 × 5 outer fits. Run with
//! `cargo run --release -p learners --example bench_learners`.

use std::collections::BTreeMap;
use std::time::Instant;

use learners::driver::{FitRows, MlpDriver, site_mlp_sums};
use learners::mlp::MlpSpec;
use learners::search::{SearchConfig, fit_learner, search};
use learners::{CvScheme, LearnerKind, folds, rng};
use ndarray::Array2;

fn cohort(n: usize, p: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    let mut r = rng::stream(seed);
    let mut normal = || {
        let u1 = rng::unit(&mut r).max(1e-12);
        let u2 = rng::unit(&mut r);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let mut x = Array2::zeros((n, p));
    let mut y = Vec::new();
    for i in 0..n {
        for j in 0..p {
            x[[i, j]] = normal();
        }
        y.push(x[[i, 0]] * x[[i, 1]] + (2.0 * x[[i, 2]]).sin() + 0.5 * normal() > 0.0);
    }
    (x, y)
}

fn main() {
    let config = SearchConfig::default();
    println!(
        "budgets: svm {}, forest {}, gbm {} candidates × 5 inner folds (+ final refit); Platt {:?}",
        config.budget.svm, config.budget.forest, config.budget.gbm, config.platt
    );
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "rows", "svm ms", "forest ms", "gbm ms", "total ms", "OOF AUCs"
    );
    for n in [20usize, 40, 60] {
        let (x, y) = cohort(n, 5, n as u64);
        let inner = folds::stratified_folds(&y, 5, 1).unwrap();
        let mut ms = Vec::new();
        let mut aucs = Vec::new();
        for kind in LearnerKind::ALL {
            let t = Instant::now();
            let r = search(kind, x.view(), &y, &inner, &config, 42).unwrap();
            let best = r.candidates[r.best].params;
            let _m = fit_learner(x.view(), &y, &best, config.platt, 43).unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            aucs.push(format!("{:.2}", r.candidates[r.best].auc.unwrap()));
        }
        println!(
            "{:>5} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9}",
            n,
            ms[0],
            ms[1],
            ms[2],
            ms.iter().sum::<f64>(),
            aucs.join("/")
        );
    }

    // MLP: 100 repeats × 5 folds, one site holding 80 training rows per fit (3 meta-features).
    let scheme = CvScheme::default();
    let fits = scheme.fit_ids();
    let spec = MlpSpec::default();
    let mut rows = BTreeMap::new();
    for (k, f) in fits.iter().enumerate() {
        let (x, y) = cohort(80, 3, 1000 + k as u64);
        rows.insert(
            *f,
            FitRows {
                x: x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
                y,
            },
        );
    }
    let mut driver = MlpDriver::new(spec.clone(), &fits, 1).unwrap();
    let (mut site_s, mut agg_s) = (0.0, 0.0);
    let mut bytes = 0usize;
    while !driver.is_done() {
        let req = driver.next_requests();
        let t = Instant::now();
        let ans = site_mlp_sums(&spec, &req, &rows).unwrap();
        site_s += t.elapsed().as_secs_f64();
        bytes += ans
            .iter()
            .map(|(_, s)| 8 * (s.grad_sum.len() + 2))
            .sum::<usize>();
        let t = Instant::now();
        driver.apply(&[ans]).unwrap();
        agg_s += t.elapsed().as_secs_f64();
    }
    let res = driver.result().unwrap();
    let evals: Vec<u32> = res.values().map(|f| f.evaluations).collect();
    println!(
        "MLP {:?} relu, {} weights: {} fits in {} round trips (evaluations per fit: min {}, max {}); site half {:.2} s, aggregator {:.2} s; ~{:.1} MB of sums sent by the site (raw f64)",
        spec.hidden,
        spec.n_params(),
        fits.len(),
        driver.round_trips(),
        evals.iter().min().unwrap(),
        evals.iter().max().unwrap(),
        site_s,
        agg_s,
        bytes as f64 / 1e6
    );
}
