//! Checks the exact-greedy booster against XGBoost 3.2 (`tree_method = "exact"`) on the golden
//! file made by `golden/make_xgboost_golden.py`: same margins on training and test rows.

use learners::ProbabilisticModel;
use learners::gbm::{GbmParams, fit_gbm};
use ndarray::Array2;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    params: P,
    n_leaves: usize,
    train_margin: Vec<f64>,
    test_margin: Vec<f64>,
    test_prob: Vec<f64>,
}

#[derive(Deserialize)]
struct P {
    n_rounds: u32,
    eta: f64,
    max_depth: u32,
    min_child_weight: f64,
    reg_lambda: f64,
    gamma: f64,
}

#[derive(Deserialize)]
struct Golden {
    x_train: Vec<Vec<f64>>,
    y_train: Vec<u8>,
    x_test: Vec<Vec<f64>>,
    base_score: f64,
    cases: Vec<Case>,
}

fn matrix(rows: &[Vec<f64>]) -> Array2<f64> {
    let p = rows[0].len();
    Array2::from_shape_vec((rows.len(), p), rows.iter().flatten().copied().collect()).unwrap()
}

#[test]
fn margins_match_xgboost_exact() {
    let g: Golden = serde_json::from_str(include_str!("golden/xgboost_exact.json")).unwrap();
    let xtr = matrix(&g.x_train);
    let xte = matrix(&g.x_test);
    let y: Vec<bool> = g.y_train.iter().map(|&v| v == 1).collect();
    let mut worst = 0.0f64;
    for (k, c) in g.cases.iter().enumerate() {
        let p = GbmParams {
            n_rounds: c.params.n_rounds,
            eta: c.params.eta,
            max_depth: c.params.max_depth,
            min_child_weight: c.params.min_child_weight,
            subsample: 1.0,
            colsample_bytree: 1.0,
            lambda: c.params.reg_lambda,
            gamma: c.params.gamma,
            base_score: Some(g.base_score),
        };
        let m = fit_gbm(xtr.view(), &y, &p, 0).unwrap();
        let leaves: usize = m.trees.iter().map(|t| t.n_leaves()).sum();
        assert_eq!(
            leaves, c.n_leaves,
            "case {k}: leaf count differs from XGBoost"
        );
        let tr = m.predict_margin(xtr.view()).unwrap();
        let te = m.predict_margin(xte.view()).unwrap();
        let pr = m.predict_proba(xte.view()).unwrap();
        for (a, b) in tr
            .iter()
            .zip(&c.train_margin)
            .chain(te.iter().zip(&c.test_margin))
        {
            // XGBoost accumulates f32 leaf values: allow f32 round-off relative to the margin.
            let tol = 1e-6 * (1.0 + b.abs());
            assert!((a - b).abs() <= tol, "case {k}: margin {a} vs XGBoost {b}");
            worst = worst.max((a - b).abs());
        }
        for (a, b) in pr.iter().zip(&c.test_prob) {
            assert!(
                (a - b).abs() <= 1e-6,
                "case {k}: probability {a} vs XGBoost {b}"
            );
        }
    }
    eprintln!("largest |margin − XGBoost margin| = {worst:.3e}");
}
