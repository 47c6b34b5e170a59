//! Federated IRLS logistic regression: statsmodels goldens (coefficients, SEs, z, p, log-lik to
//! 1e-8 relative: both sides iterate Newton to ~1e-14, so the remaining difference is the
//! conditioning of the information matrix times round-off), federated == pooled across site
//! splits, batching of many fits per round trip, and the disclosure guard.

use models::logistic::*;
use models::sampling::{FoldRef, SiteData, WeightSpec, assign_stratified_folds};
use ndarray::Array2;
use serde_json::Value;

fn golden() -> Value {
    serde_json::from_str(include_str!("golden/logistic_golden.json")).unwrap()
}

fn xy(c: &Value) -> (Array2<f64>, Vec<f64>) {
    let rows: Vec<Vec<f64>> = serde_json::from_value(c["x"].clone()).unwrap();
    let (n, p) = (rows.len(), rows[0].len());
    let x = Array2::from_shape_vec((n, p), rows.into_iter().flatten().collect()).unwrap();
    (x, serde_json::from_value(c["y"].clone()).unwrap())
}

fn close(what: &str, a: f64, b: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1e-300),
        "{what}: {a} vs {b} (rel {:e})",
        (a - b).abs() / b.abs()
    );
}

/// Splits rows round-robin into `k` sites (site s holds rows i with i % k == s).
fn split(x: &Array2<f64>, y: &[f64], k: usize, nfolds: u32) -> Vec<SiteData> {
    (0..k)
        .map(|s| {
            let idx: Vec<usize> = (0..y.len()).filter(|i| i % k == s).collect();
            let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            let folds = assign_stratified_folds(&ys, nfolds, 11, s as u64);
            SiteData {
                site_id: s as u64,
                x: x.select(ndarray::Axis(0), &idx),
                y: ys,
                fold_schemes: vec![folds],
            }
        })
        .collect()
}

fn run(
    sites: &[SiteData],
    fits: Vec<LogisticFitSpec>,
    ratio: f64,
) -> models::Result<(Vec<LogisticFit>, u32)> {
    let p = sites[0].x.ncols();
    let mut d = LogisticDriver::new(p, fits, LogisticOptions::default())?;
    while !d.is_done() {
        let req = d.next_requests();
        let replies: Vec<Vec<LogisticReply>> = sites
            .iter()
            .map(|s| site_logistic_sums(s, &req, ratio))
            .collect::<models::Result<_>>()?;
        // the aggregator persists its state between rounds
        d = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        d.apply(&replies)?;
    }
    Ok((d.results().unwrap(), d.rounds()))
}

#[test]
fn matches_statsmodels_pooled_and_federated() {
    for c in golden()["cases"].as_array().unwrap() {
        let (x, y) = xy(c);
        let name = c["name"].as_str().unwrap();
        let pooled = logistic_pooled(x.view(), &y, None, LogisticOptions::default()).unwrap();
        assert!(pooled.converged);
        for (key, got) in [
            ("coef", &pooled.coef),
            ("se", &pooled.se),
            ("z", &pooled.z),
            ("p_value", &pooled.p_value),
        ] {
            let want: Vec<f64> = serde_json::from_value(c[key].clone()).unwrap();
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                close(&format!("{name} {key}[{j}]"), *a, *b, 1e-8);
            }
        }
        close(
            &format!("{name} loglik"),
            pooled.loglik,
            c["loglik"].as_f64().unwrap(),
            1e-12,
        );
        for k in [1, 3, 5, 7] {
            let sites = split(&x, &y, k, 5);
            let (fed, rounds) = run(
                &sites,
                vec![LogisticFitSpec {
                    fit_id: 0,
                    weights: WeightSpec::default(),
                }],
                1.0,
            )
            .unwrap();
            let f = &fed[0];
            assert_eq!(f.iterations, pooled.iterations);
            assert_eq!(
                rounds as usize,
                f.iterations + 1,
                "one round per Newton step + final evaluation"
            );
            for j in 0..f.coef.len() {
                close(
                    &format!("{name} k={k} coef[{j}]"),
                    f.coef[j],
                    pooled.coef[j],
                    1e-11,
                );
                close(
                    &format!("{name} k={k} se[{j}]"),
                    f.se[j],
                    pooled.se[j],
                    1e-11,
                );
            }
            close("loglik", f.loglik, pooled.loglik, 1e-13);
        }
    }
}

#[test]
fn fold_fits_are_batched_and_equal_pooled_fold_fits() {
    let g = golden();
    let (x, y) = xy(&g["cases"][0]);
    let sites = split(&x, &y, 4, 5);
    let fits: Vec<LogisticFitSpec> = (0..5)
        .map(|k| LogisticFitSpec {
            fit_id: k,
            weights: WeightSpec {
                outer: None,
                exclude: Some(FoldRef { scheme: 0, fold: k }),
                bootstrap: None,
            },
        })
        .chain(std::iter::once(LogisticFitSpec {
            fit_id: 99,
            weights: WeightSpec {
                outer: None,
                exclude: None,
                bootstrap: Some((5, 1)),
            },
        }))
        .collect();
    let (fed, rounds) = run(&sites, fits.clone(), 0.33).unwrap();
    let max_iter = fed.iter().map(|f| f.iterations).max().unwrap();
    assert_eq!(
        rounds as usize,
        max_iter + 1,
        "rounds grow with the slowest fit, not with the fit count"
    );
    // pooled reference: the same rows and weights gathered in memory
    for (spec, f) in fits.iter().zip(&fed) {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut ws = Vec::new();
        for s in &sites {
            let (w, _) = s.weights(&spec.weights).unwrap();
            for i in 0..s.y.len() {
                xs.extend(s.x.row(i).iter().copied());
                ys.push(s.y[i]);
                ws.push(w[i]);
            }
        }
        let xp = Array2::from_shape_vec((ys.len(), x.ncols()), xs).unwrap();
        let p = logistic_pooled(xp.view(), &ys, Some(&ws), LogisticOptions::default()).unwrap();
        for j in 0..p.coef.len() {
            close("fold coef", f.coef[j], p.coef[j], 1e-10);
            close("fold se", f.se[j], p.se[j], 1e-10);
        }
    }
}

#[test]
fn disclosure_guard_refusal_fails_the_study_naming_the_site() {
    let g = golden();
    let (x, y) = xy(&g["cases"][1]);
    let sites = split(&x, &y, 7, 5);
    // 7 parameters over ~14 rows per site: allowed at 0.5, refused at 0.33 (needs 22 rows).
    assert!(
        run(
            &sites,
            vec![LogisticFitSpec {
                fit_id: 3,
                weights: WeightSpec::default()
            }],
            0.5
        )
        .is_ok()
    );
    let err = run(
        &sites,
        vec![LogisticFitSpec {
            fit_id: 3,
            weights: WeightSpec::default(),
        }],
        0.33,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            models::ModelsError::DisclosureRefused {
                site: 0,
                fit_id: 3,
                params: 7,
                ..
            }
        ),
        "{err}"
    );
}
