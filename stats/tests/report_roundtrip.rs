//! The report data model: assembled from a federated run (7 sites, count tables for two models,
//! the paired comparison, survival by predicted group) and round-tripped through JSON.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats::metrics::{
    self, BootstrapOptions, MergeRule, MetricOptions, PooledScoreTable, ScoreGrid, SiteScoreTable,
};
use stats::report::{
    ComparisonReport, CoxReport, KmCurveReport, MetricsSource, ModelReport, Report, SurvivalReport,
};
use stats::survival::{
    self, CoxTies, KmCi, NewtonOptions, SiteSurvivalTable, TimeResolution, TwoGroupTable,
};

#[test]
fn report_from_a_federated_run_round_trips_through_json() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (min_count, rule, grid) = (5u64, MergeRule::CellTotal, ScoreGrid::default());
    // 7 sites × 20 patients: ML and clinical probabilities, response, PFS.
    let sites: Vec<_> = (0..7)
        .map(|_| {
            let mut v = Vec::new();
            for _ in 0..20 {
                let y = rng.gen_bool(0.5);
                let zl: f64 = if y { 0.8 } else { -0.8 } + rng.gen_range(-1.5..1.5);
                let zc: f64 = if y { 0.3 } else { -0.3 } + rng.gen_range(-1.5..1.5);
                let t: f64 = rng.gen_range(1.0..30.0_f64).round();
                v.push((
                    1.0 / (1.0 + (-zl).exp()),
                    1.0 / (1.0 + (-zc).exp()),
                    y,
                    t,
                    rng.gen_bool(0.7),
                ));
            }
            v
        })
        .collect();
    let col = |s: &Vec<(f64, f64, bool, f64, bool)>, k: usize| -> Vec<f64> {
        s.iter().map(|r| if k == 0 { r.0 } else { r.1 }).collect()
    };
    let labels =
        |s: &Vec<(f64, f64, bool, f64, bool)>| -> Vec<bool> { s.iter().map(|r| r.2).collect() };
    let ta: Vec<SiteScoreTable> = sites
        .iter()
        .map(|s| SiteScoreTable::build(grid, &col(s, 0), &labels(s), min_count, rule).unwrap())
        .collect();
    let tb: Vec<SiteScoreTable> = sites
        .iter()
        .map(|s| SiteScoreTable::build(grid, &col(s, 1), &labels(s), min_count, rule).unwrap())
        .collect();
    let pa = PooledScoreTable::pool(&ta).unwrap();
    let pb = PooledScoreTable::pool(&tb).unwrap();
    let opts = MetricOptions::default();
    let ma = metrics::evaluate_pooled(&pa, &opts).unwrap();
    let mb = metrics::evaluate_pooled(&pb, &opts).unwrap();
    let boot = BootstrapOptions {
        replicates: 200,
        ..Default::default()
    };
    let ba = metrics::bootstrap_cis(&pa.ranked(), ma.youden.threshold, &boot).unwrap();
    let replies: Vec<Vec<metrics::CrossPlacementSums>> = sites
        .iter()
        .zip(ta.iter().zip(&tb))
        .map(|(s, (a, b))| {
            let vb = pb.site_placements(b);
            metrics::site_cross_placements(a, b, &col(s, 0), &col(s, 1), &labels(s), &vb).unwrap()
        })
        .collect();
    let pairs: Vec<_> = ta
        .iter()
        .zip(&replies)
        .map(|(t, r)| (t, r.as_slice()))
        .collect();
    let paired = metrics::paired_delong_from_tables(&pa, &pb, &pairs, 0.95).unwrap();
    // Survival by predicted group: the aggregator tells each site which of its cells are high.
    let surv: Vec<SiteSurvivalTable> = sites
        .iter()
        .zip(&ta)
        .map(|(s, t)| {
            let high = pa.site_cell_is_high(t, ma.youden.threshold);
            let g: Vec<usize> = s
                .iter()
                .map(|r| high[t.cell_index(r.0).unwrap()] as usize)
                .collect();
            let times: Vec<f64> = s.iter().map(|r| r.3).collect();
            let ev: Vec<bool> = s.iter().map(|r| r.4).collect();
            let grid: Vec<f64> = (1..=31).map(f64::from).collect();
            SiteSurvivalTable::build(
                &times,
                &ev,
                &g,
                2,
                &TimeResolution::Grid(grid),
                min_count,
                rule,
            )
            .unwrap()
        })
        .collect();
    let groups = survival::pool_survival(&surv).unwrap();
    let two = TwoGroupTable::align(&groups[0], &groups[1]);
    let cox =
        survival::fit_cox_binary_pooled(&two, CoxTies::Efron, &NewtonOptions::default()).unwrap();
    let mut report = Report::new(MetricsSource::CountTables {
        score_bins: grid.n_bins(),
        max_min_count: min_count,
    });
    report
        .models
        .push(ModelReport::new("stacking ML", &ma, Some(&ba)));
    report.models.push(ModelReport::new("clinical", &mb, None));
    report.comparisons.push(ComparisonReport {
        model_a: "stacking ML".into(),
        model_b: "clinical".into(),
        delong: paired,
        source: "two-round placement sums over the 1-D tables".into(),
    });
    report.survival.push(SurvivalReport {
        grouping: "predicted group at the Youden cut-off".into(),
        endpoint: "PFS, months".into(),
        curves: vec![
            KmCurveReport::new(
                "predicted low",
                &survival::kaplan_meier(&groups[0], KmCi::LogLog, 0.95).unwrap(),
            ),
            KmCurveReport::new(
                "predicted high",
                &survival::kaplan_meier(&groups[1], KmCi::LogLog, 0.95).unwrap(),
            ),
        ],
        log_rank: survival::log_rank(&two).unwrap(),
        cox: vec![CoxReport::new("pooled", &cox)],
        time_resolution: "monthly grid, merged at sites".into(),
    });
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    // Plot-ready: the ROC starts at (0, 0) with no threshold and ends at (1, 1).
    let roc = &back.models[0].roc;
    assert_eq!((roc[0].threshold, roc[0].fpr, roc[0].tpr), (None, 0.0, 0.0));
    assert_eq!(
        (roc.last().unwrap().fpr, roc.last().unwrap().tpr),
        (1.0, 1.0)
    );
    assert_eq!(back.models[0].decision_curve.len(), 99);
    assert!(back.models[0].auc_bootstrap.is_some());
}
