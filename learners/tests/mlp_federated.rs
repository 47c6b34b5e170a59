//! The MLP meta-model: analytic gradients against finite differences, the federated fit equal
//! bit for bit to the pooled (site-grouped) fit, resumable driver state, and learning.

mod common;

use std::collections::BTreeMap;

use learners::driver::{FitRows, MlpDriver, fit_mlp_pooled, site_mlp_sums};
use learners::metrics::auc;
use learners::mlp::{Activation, MlpSpec, init_weights, mlp_loss_grad, objective};
use learners::{FitId, ProbabilisticModel};
use ndarray::{Array2, Axis};

fn spec(activation: Activation) -> MlpSpec {
    MlpSpec {
        n_inputs: 3,
        hidden: vec![6, 4],
        activation,
        alpha: 0.3,
        ..MlpSpec::default()
    }
}

#[test]
fn gradient_matches_central_differences() {
    let (x, y) = common::nonlinear(25, 3, 8);
    for act in [Activation::Relu, Activation::Tanh, Activation::Logistic] {
        let s = spec(act);
        let w = init_weights(&s, 17);
        let j = |w: &[f64]| {
            let part = mlp_loss_grad(&s, w, x.view(), &y).unwrap();
            objective(&s, w, &[&part]).unwrap()
        };
        let (_, g) = j(&w);
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for k in 0..w.len() {
            let mut wp = w.clone();
            let mut wm = w.clone();
            wp[k] += h;
            wm[k] -= h;
            let fd = (j(&wp).0 - j(&wm).0) / (2.0 * h);
            worst = worst.max((fd - g[k]).abs());
        }
        // relu has kinks; with random inputs none is within h of a row's pre-activation here.
        assert!(worst < 1e-7, "{act:?}: max |fd − grad| = {worst:e}");
    }
}

/// Three sites; every (repeat, fold) fit uses a different subset of each site's rows.
fn sites() -> (Vec<BTreeMap<FitId, FitRows>>, Vec<FitId>) {
    let fits: Vec<FitId> = (0..2)
        .flat_map(|repeat| (0..3).map(move |fold| FitId { repeat, fold }))
        .collect();
    let mut out = Vec::new();
    for s in 0..3u64 {
        let (x, y) = common::nonlinear(20 + 7 * s as usize, 3, 100 + s);
        let mut m = BTreeMap::new();
        for f in &fits {
            let keep: Vec<usize> = (0..y.len())
                .filter(|i| !(i + f.fold as usize + f.repeat as usize).is_multiple_of(3))
                .collect();
            m.insert(
                *f,
                FitRows {
                    x: x.select(Axis(0), &keep),
                    y: keep.iter().map(|&i| y[i]).collect(),
                },
            );
        }
        out.push(m);
    }
    (out, fits)
}

#[test]
fn federated_fit_equals_pooled_bit_for_bit_and_resumes() {
    let (site_rows, fits) = sites();
    let s = MlpSpec {
        hidden: vec![8],
        alpha: 1e-3,
        ..MlpSpec::default()
    };
    // Federated: the aggregator only ever sees sums.
    let mut agg = MlpDriver::new(s.clone(), &fits, 2024).unwrap();
    let mut rounds = 0;
    let mut resumed = None;
    while !agg.is_done() {
        let req = agg.next_requests();
        let answers: Vec<_> = site_rows
            .iter()
            .map(|rows| site_mlp_sums(&s, &req, rows).unwrap())
            .collect();
        agg.apply(&answers).unwrap();
        rounds += 1;
        if rounds == 5 {
            // Persist and restore the aggregator mid-fit (as across a restart).
            resumed = Some(
                serde_json::from_str::<MlpDriver>(&serde_json::to_string(&agg).unwrap()).unwrap(),
            );
        }
    }
    let fed = agg.result().unwrap();
    let mut again = resumed.unwrap();
    while !again.is_done() {
        let req = again.next_requests();
        let answers: Vec<_> = site_rows
            .iter()
            .map(|rows| site_mlp_sums(&s, &req, rows).unwrap())
            .collect();
        again.apply(&answers).unwrap();
    }
    assert_eq!(
        again.result().unwrap(),
        fed,
        "a resumed driver must finish with the same bits"
    );
    assert_eq!(agg.round_trips(), rounds);
    let max_evals = fed.values().map(|f| f.evaluations).max().unwrap();
    assert_eq!(
        rounds, max_evals,
        "round trips = evaluations of the slowest fit, not the fit count"
    );
    eprintln!(
        "{} fits, {} round trips, evaluations per fit {:?}",
        fits.len(),
        rounds,
        fed.values().map(|f| f.evaluations).collect::<Vec<_>>()
    );

    // Pooled (release_predictions): same driver, per-site groups → identical models.
    let groups: Vec<&BTreeMap<FitId, FitRows>> = site_rows.iter().collect();
    let pooled = fit_mlp_pooled(&s, &fits, 2024, &groups).unwrap();
    assert_eq!(pooled, fed);
    for f in fed.values() {
        assert!(
            f.status.converged() || f.iterations == s.optimiser.max_iter,
            "{:?}",
            f.status
        );
    }

    // One block of all rows (no site grouping): the first sums agree to round-off, but over
    // ~200 L-BFGS iterations on a non-convex objective the last-bit differences grow, so the
    // fitted models differ visibly. This is why the pooled path keeps the site grouping.
    let mut block = BTreeMap::new();
    for f in &fits {
        let xs: Vec<_> = site_rows.iter().map(|m| m[f].x.view()).collect();
        let ys: Vec<bool> = site_rows.iter().flat_map(|m| m[f].y.clone()).collect();
        block.insert(
            *f,
            FitRows {
                x: ndarray::concatenate(Axis(0), &xs).unwrap(),
                y: ys,
            },
        );
    }
    let w0 = init_weights(&s, learners::driver::init_seed(2024, fits[0]));
    let grouped: Vec<_> = site_rows
        .iter()
        .map(|m| mlp_loss_grad(&s, &w0, m[&fits[0]].x.view(), &m[&fits[0]].y).unwrap())
        .collect();
    let (j_grouped, _) = objective(&s, &w0, &grouped.iter().collect::<Vec<_>>()).unwrap();
    let one = mlp_loss_grad(&s, &w0, block[&fits[0]].x.view(), &block[&fits[0]].y).unwrap();
    let (j_block, _) = objective(&s, &w0, &[&one]).unwrap();
    assert!(
        (j_grouped - j_block).abs() <= 1e-14 * j_grouped.abs(),
        "{j_grouped} vs {j_block}"
    );
    let single = fit_mlp_pooled(&s, &fits, 2024, &[&block]).unwrap();
    let mut worst_p: f64 = 0.0;
    let mut worst_j: f64 = 0.0;
    for f in &fits {
        let x = &block[f].x;
        let a = fed[f].model.predict_proba(x.view()).unwrap();
        let b = single[f].model.predict_proba(x.view()).unwrap();
        worst_p = a
            .iter()
            .zip(&b)
            .fold(worst_p, |m, (p, q)| m.max((p - q).abs()));
        worst_j = worst_j.max((fed[f].objective - single[f].objective).abs() / fed[f].objective);
    }
    eprintln!(
        "one-block pooled vs federated: max |Δp| = {worst_p:.3e}, max relative ΔJ = {worst_j:.3e}"
    );
    assert!(
        worst_j < 0.05,
        "both must reach a similar optimum: {worst_j}"
    );
}

#[test]
fn driver_rejects_partial_or_duplicate_answers_without_changing_state() {
    let (site_rows, fits) = sites();
    let s = MlpSpec {
        hidden: vec![4],
        ..MlpSpec::default()
    };
    let mut agg = MlpDriver::new(s.clone(), &fits, 1).unwrap();
    let before = agg.clone();
    let req = agg.next_requests();
    let mut answers: Vec<_> = site_rows
        .iter()
        .map(|rows| site_mlp_sums(&s, &req, rows).unwrap())
        .collect();
    answers[1].pop();
    assert!(agg.apply(&answers).is_err());
    answers[1] = answers[0].clone();
    let dup = answers[0][0].clone();
    answers[1].push(dup);
    assert!(agg.apply(&answers).is_err());
    assert!(agg.apply(&[]).is_err());
    assert_eq!(agg, before);
    assert!(agg.result().is_err(), "an unfinished fit has no result");
}

#[test]
fn meta_model_learns_a_stacked_signal() {
    // Inputs that look like three noisy base-learner probabilities of the same outcome.
    let (x, y) = common::nonlinear(200, 3, 77);
    let mut meta = Array2::zeros((200, 3));
    for i in 0..200 {
        let shift = if y[i] { 0.08 } else { -0.08 };
        for j in 0..3 {
            meta[[i, j]] = (0.5 + shift + 0.15 * x[[i, j]]).clamp(0.0, 1.0);
        }
    }
    let mean: Vec<f64> = meta.rows().into_iter().map(|r| r.sum() / 3.0).collect();
    let reference = auc(&mean, &y).unwrap();
    let mut rows = BTreeMap::new();
    let fit = FitId { repeat: 0, fold: 0 };
    rows.insert(
        fit,
        FitRows {
            x: meta.clone(),
            y: y.clone(),
        },
    );
    let out = fit_mlp_pooled(&MlpSpec::default(), &[fit], 5, &[&rows]).unwrap();
    let p = out[&fit].model.predict_proba(meta.view()).unwrap();
    let a = auc(&p, &y).unwrap();
    eprintln!(
        "MLP training AUC {a:.3} (mean of inputs {reference:.3}), status {:?}, {} iterations",
        out[&fit].status, out[&fit].iterations
    );
    assert!(
        reference > 0.6 && reference < 0.95,
        "the synthetic inputs should be informative but noisy: {reference}"
    );
    assert!(a >= reference - 0.02, "{a} vs {reference}");
}
