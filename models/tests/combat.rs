//! ComBat tests: neuroCombat 0.2.12 goldens (parametric, non-parametric, mean-only), federated
//! (sites in order) == pooled, frozen application, serde round trip and edge cases.
//!
//! Tolerance against neuroCombat: |ours − theirs| ≤ 1e-10 · max(|theirs|, scale), where scale is
//! the feature's pooled SD for data values and 1 for standardised quantities (γ, δ) — 1e-9 for
//! the raw betas. The largest difference measured is 3.7e-14 (printed by the golden test): both
//! sides run the same EB iteration count and differ only by round-off (neuroCombat inverts W'W
//! explicitly, we use Cholesky). 1e-10 keeps four orders of margin for other BLAS builds while
//! still catching any convention slip (ddof, divisor n, signed denominators), which shows up at
//! 1e-3 or worse.

use models::combat::*;
use ndarray::Array2;
use serde_json::Value;

fn golden() -> Value {
    let text = include_str!("golden/combat_golden.json");
    serde_json::from_str(text).unwrap()
}

fn mat(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let n = rows.len();
    let p = rows.first().map_or(0, Vec::len);
    Array2::from_shape_vec((n, p), rows.into_iter().flatten().collect()).unwrap()
}

fn vecf(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

struct Case {
    batch: Vec<String>,
    covs: Vec<CovariateColumn>,
    cov_kinds: Vec<(String, bool)>,
    y: Array2<f64>,
    train: Vec<usize>,
    test: Vec<usize>,
}

fn case(c: &Value) -> Case {
    let batch: Vec<String> = serde_json::from_value(c["batch"].clone()).unwrap();
    let mut covs = Vec::new();
    let mut kinds = Vec::new();
    for cv in c["covariates"].as_array().unwrap() {
        let name = cv["name"].as_str().unwrap().to_string();
        if cv["kind"] == "categorical" {
            covs.push(CovariateColumn::Categorical(
                serde_json::from_value(cv["values"].clone()).unwrap(),
            ));
            kinds.push((name, true));
        } else {
            covs.push(CovariateColumn::Continuous(vecf(&cv["values"])));
            kinds.push((name, false));
        }
    }
    Case {
        batch,
        covs,
        cov_kinds: kinds,
        y: mat(&c["features"]),
        train: serde_json::from_value(c["train_rows"].clone()).unwrap(),
        test: serde_json::from_value(c["test_rows"].clone()).unwrap(),
    }
}

/// Owned subset of rows, so that `ComBatRows` can borrow it.
struct Owned {
    batch: Vec<String>,
    covs: Vec<CovariateColumn>,
    y: Array2<f64>,
}

impl Owned {
    fn rows(&self) -> ComBatRows<'_> {
        ComBatRows {
            batch: &self.batch,
            covariates: &self.covs,
            features: self.y.view(),
        }
    }
}

fn subset(c: &Case, idx: &[usize]) -> Owned {
    Owned {
        batch: idx.iter().map(|&i| c.batch[i].clone()).collect(),
        covs: c
            .covs
            .iter()
            .map(|cv| match cv {
                CovariateColumn::Continuous(v) => {
                    CovariateColumn::Continuous(idx.iter().map(|&i| v[i]).collect())
                }
                CovariateColumn::Categorical(v) => {
                    CovariateColumn::Categorical(idx.iter().map(|&i| v[i].clone()).collect())
                }
            })
            .collect(),
        y: c.y.select(ndarray::Axis(0), idx),
    }
}

fn options(v: &Value) -> ComBatOptions {
    ComBatOptions {
        mode: if v["mode"] == "parametric" {
            EbMode::Parametric
        } else {
            EbMode::NonParametric
        },
        mean_only: v["mean_only"].as_bool().unwrap(),
        ..ComBatOptions::default()
    }
}

thread_local! {
    /// Largest |ours − theirs| / max(|theirs|, scale) seen, for the report.
    static WORST: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

fn assert_close(what: &str, got: f64, want: f64, scale: f64, tol: f64) {
    let err = (got - want).abs();
    if want.abs().max(scale) > 0.0 {
        WORST.with(|w| w.set(w.get().max(err / want.abs().max(scale))));
    }
    assert!(
        err <= tol * want.abs().max(scale),
        "{what}: got {got}, want {want}, err {err:e}"
    );
}

/// Splits training rows into sites: batches in sorted order dealt to `n_sites` sites
/// (batch nested within site), rows kept in their original order within a site.
fn sites_of(c: &Case, idx: &[usize], n_sites: usize) -> Vec<Owned> {
    let mut labels: Vec<&String> = idx.iter().map(|&i| &c.batch[i]).collect();
    labels.sort();
    labels.dedup();
    (0..n_sites)
        .map(|s| {
            let rows: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| labels.iter().position(|l| **l == c.batch[i]).unwrap() % n_sites == s)
                .collect();
            subset(c, &rows)
        })
        .filter(|o| !o.batch.is_empty())
        .collect()
}

#[test]
fn matches_neurocombat_goldens_pooled_and_federated() {
    let g = golden();
    for c in g["cases"].as_array().unwrap() {
        let cs = case(c);
        let train = subset(&cs, &cs.train);
        let spec =
            DesignSpec::from_site_levels(&cs.cov_kinds, &[site_levels(&train.batch, &train.covs)])
                .unwrap();
        for v in c["variants"].as_array().unwrap() {
            let label = format!("{} {} mean_only={}", c["name"], v["mode"], v["mean_only"]);
            let opt = options(v);
            let (model, out) = combat_pooled(&spec, &train.rows(), &opt).unwrap();
            let want_batches: Vec<String> = serde_json::from_value(v["batches"].clone()).unwrap();
            assert_eq!(spec.batches, want_batches);
            let want = mat(&v["data"]);
            let vp = vecf(&v["var_pooled"]);
            for (j, (a, b)) in model.global.var_pooled.iter().zip(&vp).enumerate() {
                assert_close(&format!("{label} var_pooled[{j}]"), *a, *b, 0.0, 1e-10);
            }
            let gm = vecf(&v["grand_mean"]);
            for (j, (a, b)) in model.global.fit.grand_mean.iter().zip(&gm).enumerate() {
                assert_close(
                    &format!("{label} grand_mean[{j}]"),
                    *a,
                    *b,
                    vp[j].sqrt(),
                    1e-10,
                );
            }
            let beta = mat(&v["beta"]);
            for ((i, j), b) in beta.indexed_iter() {
                let a = model.global.fit.beta[[i, j]];
                assert_close(&format!("{label} beta[{i},{j}]"), a, *b, vp[j].sqrt(), 1e-9);
            }
            let gs = mat(&v["gamma_star"]);
            let ds = mat(&v["delta_star"]);
            let gh = mat(&v["gamma_hat"]);
            for (b, adj) in model.batches.iter().enumerate() {
                assert_eq!(adj.batch, want_batches[b]);
                for j in 0..gs.ncols() {
                    assert_close(
                        &format!("{label} gamma_hat[{b},{j}]"),
                        adj.gamma_hat[j],
                        gh[[b, j]],
                        1.0,
                        1e-10,
                    );
                    assert_close(
                        &format!("{label} gamma*[{b},{j}]"),
                        adj.gamma_star[j],
                        gs[[b, j]],
                        1.0,
                        1e-10,
                    );
                    assert_close(
                        &format!("{label} delta*[{b},{j}]"),
                        adj.delta_star[j],
                        ds[[b, j]],
                        1.0,
                        1e-10,
                    );
                }
                assert_close(
                    &format!("{label} gamma_bar[{b}]"),
                    adj.gamma_bar,
                    vecf(&v["gamma_bar"])[b],
                    1.0,
                    1e-10,
                );
                assert_close(
                    &format!("{label} t2[{b}]"),
                    adj.tau2,
                    vecf(&v["t2"])[b],
                    1.0,
                    1e-10,
                );
                if let Some(a) = v.get("a_prior") {
                    assert_close(
                        &format!("{label} a[{b}]"),
                        adj.a_prior.unwrap(),
                        vecf(a)[b],
                        1.0,
                        1e-9,
                    );
                    assert_close(
                        &format!("{label} b[{b}]"),
                        adj.b_prior.unwrap(),
                        vecf(&v["b_prior"])[b],
                        1.0,
                        1e-9,
                    );
                }
            }
            for ((i, j), w) in want.indexed_iter() {
                assert_close(
                    &format!("{label} data[{i},{j}]"),
                    out[[i, j]],
                    *w,
                    vp[j].sqrt(),
                    1e-10,
                );
            }

            eprintln!(
                "{label}: worst normalised difference to neuroCombat so far {:e}",
                WORST.with(|w| w.get())
            );
            // Federated over 3 sites (batches dealt round-robin) == pooled to round-off.
            let sites = sites_of(&cs, &cs.train, 3);
            let site_rows: Vec<ComBatRows> = sites.iter().map(Owned::rows).collect();
            let levels: Vec<SiteLevels> = sites
                .iter()
                .map(|s| site_levels(&s.batch, &s.covs))
                .collect();
            let fspec = DesignSpec::from_site_levels(&cs.cov_kinds, &levels).unwrap();
            assert_eq!(fspec, spec);
            let fed = combat_federated(&fspec, &site_rows, &opt).unwrap();
            for (a, b) in fed.global.var_pooled.iter().zip(&model.global.var_pooled) {
                assert_close(&format!("{label} fed var"), *a, *b, 0.0, 1e-12);
            }
            // Apply the federated model at each site to its own rows and compare with pooled.
            for s in &sites {
                let fo = fed.apply(&s.rows()).unwrap();
                let po = model.apply(&s.rows()).unwrap();
                for ((i, j), w) in po.indexed_iter() {
                    assert_close(
                        &format!("{label} fed data[{i},{j}]"),
                        fo[[i, j]],
                        *w,
                        vp[j].sqrt(),
                        1e-11,
                    );
                }
            }

            // Frozen application to held-out rows (golden computed by hand from the estimates).
            if !cs.test.is_empty() {
                let test = subset(&cs, &cs.test);
                let applied = model.apply(&test.rows()).unwrap();
                let want = mat(&v["applied_test"]);
                for ((i, j), w) in want.indexed_iter() {
                    assert_close(
                        &format!("{label} applied[{i},{j}]"),
                        applied[[i, j]],
                        *w,
                        vp[j].sqrt(),
                        1e-10,
                    );
                }
            }
            // The model survives a serde round trip bit for bit.
            let json = serde_json::to_string(&model).unwrap();
            let back: ComBatModel = serde_json::from_str(&json).unwrap();
            assert_eq!(back, model);
        }
    }
}

#[test]
fn seven_site_cohort_federated_equals_pooled_bitwise_order_independent_of_site_split() {
    let g = golden();
    let c = &g["cases"][1];
    let cs = case(c);
    let all = subset(&cs, &cs.train);
    let spec = DesignSpec::from_site_levels(&[], &[site_levels(&all.batch, &all.covs)]).unwrap();
    let opt = ComBatOptions::default();
    let (pooled, _) = combat_pooled(&spec, &all.rows(), &opt).unwrap();
    for n_sites in [3, 5, 7] {
        let sites = sites_of(&cs, &cs.train, n_sites);
        let rows: Vec<ComBatRows> = sites.iter().map(Owned::rows).collect();
        let fed = combat_federated(&spec, &rows, &opt).unwrap();
        for j in 0..pooled.global.var_pooled.len() {
            let s = pooled.global.var_pooled[j].sqrt();
            assert_close(
                "grand mean",
                fed.global.fit.grand_mean[j],
                pooled.global.fit.grand_mean[j],
                s,
                1e-12,
            );
            assert_close(
                "var",
                fed.global.var_pooled[j],
                pooled.global.var_pooled[j],
                0.0,
                1e-12,
            );
        }
        let mut fb = fed.batches.clone();
        fb.sort_by(|a, b| a.batch.cmp(&b.batch));
        for (a, b) in fb.iter().zip(&pooled.batches) {
            assert_eq!(a.batch, b.batch);
            assert_eq!(a.iterations, b.iterations);
            for j in 0..a.gamma_star.len() {
                assert_close("gamma*", a.gamma_star[j], b.gamma_star[j], 1.0, 1e-11);
                assert_close("delta*", a.delta_star[j], b.delta_star[j], 1.0, 1e-11);
            }
        }
    }
}

#[test]
fn single_row_batch_is_an_error_unless_mean_only() {
    let g = golden();
    let cs = case(&g["cases"][0]);
    // Rows 0..12 are batch A; keep only one A row.
    let idx: Vec<usize> = std::iter::once(0).chain(12..cs.y.nrows()).collect();
    let d = subset(&cs, &idx);
    let spec =
        DesignSpec::from_site_levels(&cs.cov_kinds, &[site_levels(&d.batch, &d.covs)]).unwrap();
    let err = combat_pooled(&spec, &d.rows(), &ComBatOptions::default()).unwrap_err();
    assert!(
        matches!(err, models::ModelsError::BatchTooSmall { ref batch, n: 1 } if batch == "A"),
        "{err}"
    );
    let opt = ComBatOptions {
        mean_only: true,
        ..ComBatOptions::default()
    };
    let (m, out) = combat_pooled(&spec, &d.rows(), &opt).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert!(
        m.batches
            .iter()
            .all(|b| b.delta_star.iter().all(|&d| d == 1.0))
    );
}

#[test]
fn feature_constant_within_a_batch_is_left_unadjusted_like_sva() {
    let g = golden();
    let cs = case(&g["cases"][0]);
    let d = subset(&cs, &cs.train);
    let mut y = d.y.clone();
    // feature 3 constant within batch B
    for (i, b) in d.batch.iter().enumerate() {
        if b == "B" {
            y[[i, 3]] = 7.25;
        }
    }
    let spec =
        DesignSpec::from_site_levels(&cs.cov_kinds, &[site_levels(&d.batch, &d.covs)]).unwrap();
    let rows = ComBatRows {
        batch: &d.batch,
        covariates: &d.covs,
        features: y.view(),
    };
    let (m, out) = combat_pooled(&spec, &rows, &ComBatOptions::default()).unwrap();
    assert!(m.global.fit.unadjusted[3]);
    for i in 0..y.nrows() {
        assert_eq!(out[[i, 3]], y[[i, 3]]);
    }
    // The other features equal a run without feature 3 (sva drops it from the priors).
    let keep: Vec<usize> = (0..y.ncols()).filter(|&j| j != 3).collect();
    let y2 = y.select(ndarray::Axis(1), &keep);
    let rows2 = ComBatRows {
        batch: &d.batch,
        covariates: &d.covs,
        features: y2.view(),
    };
    let (_, out2) = combat_pooled(&spec, &rows2, &ComBatOptions::default()).unwrap();
    for (k, &j) in keep.iter().enumerate() {
        for i in 0..y.nrows() {
            assert!((out[[i, j]] - out2[[i, k]]).abs() <= 1e-12 * out2[[i, k]].abs().max(1.0));
        }
    }
}

#[test]
fn unknown_batch_or_level_and_split_batch_are_errors() {
    let g = golden();
    let cs = case(&g["cases"][0]);
    let d = subset(&cs, &cs.train);
    let spec =
        DesignSpec::from_site_levels(&cs.cov_kinds, &[site_levels(&d.batch, &d.covs)]).unwrap();
    let (model, _) = combat_pooled(&spec, &d.rows(), &ComBatOptions::default()).unwrap();
    let mut e = subset(&cs, &[0, 1]);
    e.batch[1] = "Z".into();
    assert!(
        matches!(model.apply(&e.rows()), Err(models::ModelsError::UnknownBatch(ref b)) if b == "Z")
    );
    let mut e = subset(&cs, &[0, 1]);
    e.covs[0] = CovariateColumn::Categorical(vec!["F".into(), "X".into()]);
    assert!(matches!(
        model.apply(&e.rows()),
        Err(models::ModelsError::UnknownLevel { .. })
    ));
    // A site holding only part of batch A cannot run the EB step for it.
    let fit =
        aggregate_cross_products(&spec, &[site_cross_products(&spec, &d.rows()).unwrap()]).unwrap();
    let global = aggregate_residuals(&fit, &[site_residuals(&fit, &d.rows()).unwrap()]).unwrap();
    let part = subset(&cs, &[0, 1, 2]);
    assert!(matches!(
        site_estimate(&global, &part.rows(), &ComBatOptions::default()),
        Err(models::ModelsError::BatchSplit { .. })
    ));
}
