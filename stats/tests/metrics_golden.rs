//! Checks the classification metrics against scikit-learn / fast-DeLong / hoslem.test / dcurves
//! golden values (tests/golden/metrics_golden.json, made by
//! `python3 stats/tests/golden/gen_metrics.py`), on the exact path, on per-patient tie cells and
//! through the federated count tables of 7 simulated sites.

mod common;

use common::{assert_close as close, floats, num};
use serde_json::Value;
use stats::metrics::{
    self, MergeRule, MetricOptions, PooledScoreTable, RankedCells, ScoreGrid, SiteScoreTable, exact,
};

const GOLDEN: &str = include_str!("golden/metrics_golden.json");

struct Case {
    name: String,
    y: Vec<bool>,
    p: Vec<f64>,
    pc: Vec<f64>,
    site: Vec<usize>,
    doc: Value,
}

fn cases() -> Vec<Case> {
    let doc: Value = serde_json::from_str(GOLDEN).expect("golden json");
    doc["classification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            y: c["data"]["y"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() == 1)
                .collect(),
            p: floats(&c["data"]["p"]),
            pc: floats(&c["data"]["p_clinical"]),
            site: c["data"]["site"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            doc: c.clone(),
        })
        .collect()
}

/// Checks a metric set against the golden values. `tol` 1e-12 for exact data; thresholds are
/// compared with `tol` too because a cell's mean of k equal values can differ from the value by
/// an ulp.
fn check_metric_set(label: &str, m: &metrics::MetricSet, g: &Value, tol: f64) {
    close(&format!("{label} auc"), m.auc.auc, num(&g["auc"]), tol);
    close(
        &format!("{label} delong var"),
        m.auc.variance,
        num(&g["auc_var_delong"]),
        tol,
    );
    close(
        &format!("{label} ci lo"),
        m.auc.ci_lower,
        num(&g["auc_ci"][0]),
        tol,
    );
    close(
        &format!("{label} ci hi"),
        m.auc.ci_upper,
        num(&g["auc_ci"][1]),
        tol,
    );
    // ROC: sklearn (drop_intermediate=False) gives +inf then one point per distinct score.
    let fpr = floats(&g["roc"]["fpr"]);
    let tpr = floats(&g["roc"]["tpr"]);
    assert_eq!(m.roc.len(), fpr.len(), "{label} roc length");
    for (i, pt) in m.roc.iter().enumerate() {
        close(&format!("{label} roc fpr {i}"), pt.fpr, fpr[i], tol);
        close(&format!("{label} roc tpr {i}"), pt.tpr, tpr[i], tol);
        match g["roc"]["thresholds"][i].as_f64() {
            None => assert!(pt.threshold.is_infinite()),
            Some(t) => close(&format!("{label} roc thr {i}"), pt.threshold, t, tol),
        }
    }
    close(
        &format!("{label} youden"),
        m.youden.threshold,
        num(&g["youden_threshold"]),
        tol,
    );
    let c = &g["confusion"];
    assert_eq!(
        (
            m.confusion.tp,
            m.confusion.fp,
            m.confusion.tn,
            m.confusion.fn_
        ),
        (
            c["tp"].as_u64().unwrap(),
            c["fp"].as_u64().unwrap(),
            c["tn"].as_u64().unwrap(),
            c["fn"].as_u64().unwrap()
        ),
        "{label} confusion"
    );
    for (k, v) in [
        ("accuracy", m.accuracy),
        ("sensitivity", m.sensitivity),
        ("specificity", m.specificity),
        ("ppv", m.ppv),
        ("npv", m.npv),
        ("f1", m.f1),
        ("brier", m.brier),
    ] {
        close(&format!("{label} {k}"), v, num(&g[k]), tol.max(1e-14));
    }
    let hl = &g["hosmer_lemeshow"];
    close(
        &format!("{label} HL"),
        m.calibration.hosmer_lemeshow.statistic,
        num(&hl["statistic"]),
        1e-10,
    );
    close(
        &format!("{label} HL p"),
        m.calibration.hosmer_lemeshow.p_value,
        num(&hl["p_value"]),
        1e-10,
    );
    assert_eq!(m.calibration.hosmer_lemeshow.df, num(&hl["df"]));
    let groups = hl["groups"].as_array().unwrap();
    assert_eq!(m.calibration.bins.len(), groups.len(), "{label} HL groups");
    for (b, gg) in m.calibration.bins.iter().zip(groups) {
        assert_eq!(b.n, gg["n"].as_u64().unwrap(), "{label} HL group n");
        assert_eq!(b.n_pos, gg["n_pos"].as_u64().unwrap());
        close(
            "mean predicted",
            b.mean_predicted,
            num(&gg["mean_predicted"]),
            1e-12,
        );
        close("observed", b.observed, num(&gg["observed"]), 1e-14);
    }
    let dca = g["dca"].as_array().unwrap();
    assert_eq!(m.decision_curve.len(), dca.len());
    for (d, gd) in m.decision_curve.iter().zip(dca) {
        close("dca threshold", d.threshold, num(&gd["threshold"]), 0.0);
        close("net benefit", d.net_benefit, num(&gd["net_benefit"]), 1e-12);
        close("treat all", d.treat_all, num(&gd["treat_all"]), 1e-12);
    }
}

#[test]
fn exact_path_matches_sklearn_delong_hoslem_dcurves() {
    for c in cases() {
        let m = exact::evaluate(&c.p, &c.y, &MetricOptions::default()).unwrap();
        check_metric_set(&format!("{} exact", c.name), &m, &c.doc, 1e-12);
    }
}

#[test]
fn tie_cells_from_patients_match_the_goldens() {
    for c in cases() {
        let rc = RankedCells::from_patients(&c.p, &c.y).unwrap();
        let m = metrics::evaluate(&rc, &MetricOptions::default()).unwrap();
        check_metric_set(&format!("{} cells", c.name), &m, &c.doc, 1e-12);
    }
}

fn split_sites(c: &Case, n_sites: usize) -> Vec<(Vec<f64>, Vec<bool>)> {
    (0..n_sites)
        .map(|s| {
            let idx: Vec<usize> = (0..c.y.len()).filter(|&i| c.site[i] == s).collect();
            (
                idx.iter().map(|&i| c.p[i]).collect(),
                idx.iter().map(|&i| c.y[i]).collect(),
            )
        })
        .collect()
}

/// Builds every site's table; a site that cannot release under `min_count` sits out (as in the
/// federation). Returns the tables, the pool, and the participating sites' data.
#[allow(clippy::type_complexity)]
fn federate(
    c: &Case,
    grid: ScoreGrid,
    min_count: u64,
    rule: MergeRule,
) -> (
    Vec<SiteScoreTable>,
    PooledScoreTable,
    Vec<(Vec<f64>, Vec<bool>)>,
) {
    let mut sites = Vec::new();
    let mut data = Vec::new();
    for (p, y) in split_sites(c, 7) {
        match SiteScoreTable::build(grid, &p, &y, min_count, rule) {
            Ok(t) => {
                t.validate(min_count, rule).unwrap();
                sites.push(t);
                data.push((p, y));
            }
            Err(metrics::MetricsError::SiteTooSmall { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let pooled = PooledScoreTable::pool(&sites).unwrap();
    (sites, pooled, data)
}

/// With min_count = 1 and a grid on which no two distinct probabilities share a bin, the count
/// path over 7 sites reproduces every golden value (AUC and DeLong to round-off).
#[test]
fn seven_site_count_tables_equal_exact_when_no_bin_is_shared() {
    for c in cases() {
        // cohort102 has 2-decimal probabilities: the default 1000-bin grid separates them. The
        // continuous cohort needs a finer grid to avoid two patients sharing a bin.
        let grid = if c.name.contains("ties") {
            ScoreGrid::default()
        } else {
            ScoreGrid::new(100_000_000).unwrap()
        };
        let (_, pooled, data) = federate(&c, grid, 1, MergeRule::CellTotal);
        assert_eq!(data.len(), 7);
        let m = metrics::evaluate_pooled(&pooled, &MetricOptions::default()).unwrap();
        // Ties in the data are ties in the table (same bin, both labels): the bound counts
        // them at ½ but the AUC is still exact because they are true ties.
        check_metric_set(&format!("{} 7-site counts", c.name), &m, &c.doc, 1e-12);
    }
}

/// On the default grid with merged cells, the AUC error stays within the bound computed from
/// the tables, Brier stays exact, and the site-side classification reproduces the confusion
/// matrix.
#[test]
fn merged_tables_stay_within_the_stated_bound() {
    for c in cases() {
        for (min_count, rule) in [
            (1u64, MergeRule::CellTotal),
            (3, MergeRule::CellTotal),
            (5, MergeRule::CellTotal),
            (10, MergeRule::CellTotal),
            (3, MergeRule::EachCount),
            (5, MergeRule::EachCount),
        ] {
            let (sites, pooled, data) = federate(&c, ScoreGrid::default(), min_count, rule);
            let p: Vec<f64> = data.iter().flat_map(|d| d.0.clone()).collect();
            let y: Vec<bool> = data.iter().flat_map(|d| d.1.clone()).collect();
            let exact_m = exact::evaluate(&p, &y, &MetricOptions::default()).unwrap();
            let m = metrics::evaluate_pooled(&pooled, &MetricOptions::default()).unwrap();
            let err = (m.auc.auc - exact_m.auc.auc).abs();
            println!(
                "{} min_count {min_count} {rule:?}: {} sites, {} patients, {} pooled cells, AUC {:.6} vs exact {:.6}, |err| {:.2e} <= bound {:.2e}; cut-off {:.4} vs {:.4}; sens {:.4}/{:.4} spec {:.4}/{:.4}",
                c.name,
                sites.len(),
                p.len(),
                pooled.cells.len(),
                m.auc.auc,
                exact_m.auc.auc,
                err,
                m.auc_resolution_bound,
                m.youden.threshold,
                exact_m.youden.threshold,
                m.sensitivity,
                exact_m.sensitivity,
                m.specificity,
                exact_m.specificity
            );
            assert!(
                err <= m.auc_resolution_bound + 1e-12,
                "AUC outside the bound"
            );
            close("brier exact from counts", m.brier, exact_m.brier, 1e-13);
            // The groups a site forms from site_cell_is_high reproduce the confusion matrix.
            let mut cm = metrics::Confusion::default();
            for ((p, y), st) in data.iter().zip(&sites) {
                let high = pooled.site_cell_is_high(st, m.youden.threshold);
                for (pi, &yi) in p.iter().zip(y) {
                    let h = high[st.cell_index(*pi).unwrap()];
                    match (h, yi) {
                        (true, true) => cm.tp += 1,
                        (true, false) => cm.fp += 1,
                        (false, true) => cm.fn_ += 1,
                        (false, false) => cm.tn += 1,
                    }
                }
            }
            assert_eq!(cm, m.confusion, "site-side groups vs reported confusion");
        }
    }
}

#[test]
fn paired_delong_matches_fast_delong() {
    for c in cases() {
        let g = &c.doc["paired"];
        let e = exact::paired_delong(&c.p, &c.pc, &c.y, 0.95).unwrap();
        let cells = metrics::paired_cells_from_patients(&c.p, &c.pc, &c.y).unwrap();
        let t = metrics::paired_delong(&cells, 0.95).unwrap();
        for (label, r) in [("exact", &e), ("cells", &t)] {
            close(&format!("{label} auc a"), r.auc_a, num(&g["auc_a"]), 1e-12);
            close(&format!("{label} auc b"), r.auc_b, num(&g["auc_b"]), 1e-12);
            close(&format!("{label} var a"), r.var_a, num(&g["var_a"]), 1e-12);
            close(&format!("{label} var b"), r.var_b, num(&g["var_b"]), 1e-12);
            close(
                &format!("{label} cov"),
                r.covariance,
                num(&g["covariance"]),
                1e-12,
            );
            close(&format!("{label} z"), r.z, num(&g["z"]), 1e-10);
            close(&format!("{label} p"), r.p_value, num(&g["p_value"]), 1e-10);
        }
    }
}

/// Joint tables over 7 sites: exact with min_count = 1 on a grid fine enough that no two
/// patients share a joint cell; with coarse merged grids the approximation is measured.
#[test]
fn joint_tables_approximate_the_exact_paired_test() {
    for c in cases() {
        for (g, min_count) in [(1000u32, 1u64), (10, 1), (10, 3), (20, 3), (10, 5), (5, 5)] {
            let mut tables = Vec::new();
            let mut kept: Vec<usize> = Vec::new();
            for s in 0..7 {
                let idx: Vec<usize> = (0..c.y.len()).filter(|&i| c.site[i] == s).collect();
                let pa: Vec<f64> = idx.iter().map(|&i| c.p[i]).collect();
                let pb: Vec<f64> = idx.iter().map(|&i| c.pc[i]).collect();
                let y: Vec<bool> = idx.iter().map(|&i| c.y[i]).collect();
                match metrics::SiteJointTable::build(
                    g,
                    &pa,
                    &pb,
                    &y,
                    min_count,
                    MergeRule::CellTotal,
                ) {
                    Ok(t) => {
                        tables.push(t);
                        kept.extend(idx);
                    }
                    Err(metrics::MetricsError::SiteTooSmall { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let pa: Vec<f64> = kept.iter().map(|&i| c.p[i]).collect();
            let pb: Vec<f64> = kept.iter().map(|&i| c.pc[i]).collect();
            let y: Vec<bool> = kept.iter().map(|&i| c.y[i]).collect();
            let e = exact::paired_delong(&pa, &pb, &y, 0.95).unwrap();
            assert!(
                tables
                    .iter()
                    .all(|t| t.is_releasable(min_count, MergeRule::CellTotal))
            );
            let cells = metrics::pool_joint(&tables).unwrap();
            let t = metrics::paired_delong(&cells, 0.95).unwrap();
            println!(
                "{} G={g} min_count={min_count}: {} cells; AUC_a {:.4}/{:.4} AUC_b {:.4}/{:.4} z {:.3}/{:.3} p {:.2e}/{:.2e}",
                c.name,
                cells.len(),
                t.auc_a,
                e.auc_a,
                t.auc_b,
                e.auc_b,
                t.z,
                e.z,
                t.p_value,
                e.p_value
            );
            if g == 1000 && min_count == 1 && c.name.contains("ties") {
                // 2-decimal probabilities never share a 1000-bin cell on both axes unless equal.
                close("joint exact z", t.z, e.z, 1e-10);
            } else {
                // Coarse joint grids: a run along the serpentine mixes the second model's scores
                // across a whole row, so its AUC drifts (measured: up to 0.18 for the clinical
                // model at G = 10, min_count = 5 on cohort102, printed above). Not asserted
                // beyond validity: this is why the two-round design is the recommended one.
                assert!((0.0..=1.0).contains(&t.auc_a) && (0.0..=1.0).contains(&t.auc_b));
            }
        }
    }
}

/// The two-round paired comparison over the 1-D tables equals the exact paired DeLong test of
/// the binned data (every patient at its pooled cell's mean under each model), for every
/// min_count and rule, and the per-patient test when nothing is merged.
#[test]
fn two_round_paired_delong_is_exact_for_the_binned_data() {
    for c in cases() {
        for (grid, min_count, rule) in [
            (
                ScoreGrid::new(100_000_000).unwrap(),
                1u64,
                MergeRule::CellTotal,
            ),
            (ScoreGrid::default(), 1, MergeRule::CellTotal),
            (ScoreGrid::default(), 3, MergeRule::CellTotal),
            (ScoreGrid::default(), 5, MergeRule::CellTotal),
            (ScoreGrid::default(), 3, MergeRule::EachCount),
        ] {
            // Site data and tables for both models; sites that cannot release sit out.
            let mut site_data = Vec::new();
            for s in 0..7 {
                let idx: Vec<usize> = (0..c.y.len()).filter(|&i| c.site[i] == s).collect();
                let pa: Vec<f64> = idx.iter().map(|&i| c.p[i]).collect();
                let pb: Vec<f64> = idx.iter().map(|&i| c.pc[i]).collect();
                let y: Vec<bool> = idx.iter().map(|&i| c.y[i]).collect();
                let ta = SiteScoreTable::build(grid, &pa, &y, min_count, rule);
                let tb = SiteScoreTable::build(grid, &pb, &y, min_count, rule);
                if let (Ok(ta), Ok(tb)) = (ta, tb) {
                    site_data.push((pa, pb, y, ta, tb));
                }
            }
            let ta: Vec<SiteScoreTable> = site_data.iter().map(|d| d.3.clone()).collect();
            let tb: Vec<SiteScoreTable> = site_data.iter().map(|d| d.4.clone()).collect();
            let pooled_a = PooledScoreTable::pool(&ta).unwrap();
            let pooled_b = PooledScoreTable::pool(&tb).unwrap();
            // Round 1 (aggregator -> site): B placements; round 2 (site -> aggregator): sums.
            let replies: Vec<Vec<metrics::CrossPlacementSums>> = site_data
                .iter()
                .map(|(pa, pb, y, ta, tb)| {
                    let vb = pooled_b.site_placements(tb);
                    metrics::site_cross_placements(ta, tb, pa, pb, y, &vb).unwrap()
                })
                .collect();
            let sites: Vec<(&SiteScoreTable, &[metrics::CrossPlacementSums])> = ta
                .iter()
                .zip(&replies)
                .map(|(t, r)| (t, r.as_slice()))
                .collect();
            let fed =
                metrics::paired_delong_from_tables(&pooled_a, &pooled_b, &sites, 0.95).unwrap();
            // Oracle: per-patient test on the binned data.
            let mean_of = |pooled: &PooledScoreTable, t: &SiteScoreTable, p: f64| {
                let cell = t.cells[t.cell_index(p).unwrap()];
                pooled
                    .cells
                    .iter()
                    .find(|q| q.lo_bin == cell.lo_bin && q.hi_bin == cell.hi_bin)
                    .unwrap()
                    .mean_p()
            };
            let (mut ba, mut bb, mut yy, mut ra, mut rb) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (pa, pb, y, ta, tb) in &site_data {
                for i in 0..y.len() {
                    ba.push(mean_of(&pooled_a, ta, pa[i]));
                    bb.push(mean_of(&pooled_b, tb, pb[i]));
                    ra.push(pa[i]);
                    rb.push(pb[i]);
                    yy.push(y[i]);
                }
            }
            let oracle = exact::paired_delong(&ba, &bb, &yy, 0.95).unwrap();
            let raw = exact::paired_delong(&ra, &rb, &yy, 0.95).unwrap();
            println!(
                "{} grid {} min_count {min_count} {rule:?}: z {:.4} (binned oracle {:.4}, per patient {:.4}); p {:.3e} vs {:.3e}",
                c.name,
                grid.n_bins(),
                fed.z,
                oracle.z,
                raw.z,
                fed.p_value,
                raw.p_value
            );
            for (k, g, o) in [
                ("auc a", fed.auc_a, oracle.auc_a),
                ("auc b", fed.auc_b, oracle.auc_b),
                ("var a", fed.var_a, oracle.var_a),
                ("var b", fed.var_b, oracle.var_b),
                ("cov", fed.covariance, oracle.covariance),
                ("z", fed.z, oracle.z),
            ] {
                close(&format!("{} {k}", c.name), g, o, 1e-10);
            }
            if min_count == 1 && grid.n_bins() == 100_000_000 {
                close("unmerged z = per-patient z", fed.z, raw.z, 1e-10);
                close(
                    "unmerged p",
                    fed.p_value,
                    num(&c.doc["paired"]["p_value"]),
                    1e-10,
                );
            }
        }
    }
}
