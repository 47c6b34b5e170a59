//! Protocol properties of the score count tables and the bootstrap: site-side merging never
//! releases a count in 1..min_count−1 and keeps every total, the aggregator's validation catches
//! a broken table, and the multinomial bootstrap is deterministic and agrees in distribution
//! with the per-patient bootstrap.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats::metrics::{
    self, BootstrapOptions, MergeRule, MetricsError, PooledScoreTable, RankedCells, ScoreGrid,
    SiteScoreTable, exact,
};

fn simulate(rng: &mut ChaCha8Rng, n: usize, decimals: Option<i32>) -> (Vec<f64>, Vec<bool>) {
    let mut p = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let yi = rng.gen_bool(0.45);
        let z: f64 = if yi { 0.8 } else { -0.5 } + rng.gen_range(-1.5..1.5);
        let mut pi = 1.0 / (1.0 + (-z).exp());
        if let Some(d) = decimals {
            let f = 10f64.powi(d);
            pi = (pi * f).round() / f;
        }
        p.push(pi);
        y.push(yi);
    }
    (p, y)
}

#[test]
fn merging_never_releases_small_counts_and_keeps_totals() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut checked = 0;
    for trial in 0..400 {
        let n = rng.gen_range(1..60);
        let (p, y) = simulate(&mut rng, n, if trial % 2 == 0 { Some(2) } else { None });
        let m = rng.gen_range(1..9u64);
        let rule = if trial % 3 == 0 {
            MergeRule::EachCount
        } else {
            MergeRule::CellTotal
        };
        let grid = ScoreGrid::new([10, 100, 1000][trial % 3]).unwrap();
        let n_pos = y.iter().filter(|&&v| v).count() as u64;
        let n_neg = n as u64 - n_pos;
        match SiteScoreTable::build(grid, &p, &y, m, rule) {
            Ok(t) => {
                t.validate(m, rule).unwrap();
                for c in &t.cells {
                    assert!(c.n() >= m, "cell of {} patients with min_count {m}", c.n());
                    if rule == MergeRule::EachCount {
                        for k in [c.n_pos, c.n_neg] {
                            assert!(k == 0 || k >= m, "label count {k} with min_count {m}");
                        }
                    }
                }
                assert_eq!(t.cells.iter().map(|c| c.n_pos).sum::<u64>(), n_pos);
                assert_eq!(t.cells.iter().map(|c| c.n_neg).sum::<u64>(), n_neg);
                let sp: f64 = t.cells.iter().map(|c| c.sum_p).sum();
                assert!((sp - p.iter().sum::<f64>()).abs() < 1e-9);
                // Every patient maps to exactly one released cell.
                for &pi in &p {
                    assert!(t.cell_index(pi).is_some());
                }
                checked += 1;
            }
            Err(MetricsError::SiteTooSmall { .. }) => {
                // Only when no single cell with everyone is releasable.
                let ok_all = match rule {
                    MergeRule::CellTotal => n as u64 >= m,
                    MergeRule::EachCount => {
                        (n_pos == 0 || n_pos >= m) && (n_neg == 0 || n_neg >= m)
                    }
                };
                assert!(!ok_all, "refused a site that could release one cell");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(checked > 200);
}

#[test]
fn aggregator_rejects_a_disclosive_table() {
    let (p, y) = simulate(&mut ChaCha8Rng::seed_from_u64(1), 30, None);
    let mut t =
        SiteScoreTable::build(ScoreGrid::default(), &p, &y, 1, MergeRule::CellTotal).unwrap();
    // A table built with min_count 1 holds single-patient cells: an aggregator expecting 5
    // must refuse it.
    assert!(matches!(
        t.validate(5, MergeRule::CellTotal),
        Err(MetricsError::DisclosureViolation { .. })
    ));
    t.cells.swap(0, 1);
    assert!(matches!(
        t.validate(1, MergeRule::CellTotal),
        Err(MetricsError::BadCell { .. })
    ));
}

#[test]
fn bootstrap_is_deterministic_and_seed_dependent() {
    let (p, y) = simulate(&mut ChaCha8Rng::seed_from_u64(3), 102, Some(2));
    let rc = RankedCells::from_patients(&p, &y).unwrap();
    let t = metrics::youden(&rc).unwrap().threshold;
    let o = BootstrapOptions {
        replicates: 500,
        seed: 42,
        conf_level: 0.95,
    };
    let a = metrics::bootstrap_cis(&rc, t, &o).unwrap();
    let b = metrics::bootstrap_cis(&rc, t, &o).unwrap();
    assert_eq!(a, b);
    let c = metrics::bootstrap_cis(&rc, t, &BootstrapOptions { seed: 43, ..o }).unwrap();
    assert_ne!(a.auc, c.auc);
    // Same for the per-patient bootstrap.
    assert_eq!(
        exact::bootstrap(&p, &y, t, &o).unwrap(),
        exact::bootstrap(&p, &y, t, &o).unwrap()
    );
    // The count table pooled from 7 sites with min_count 1 gives the same replicates as the
    // per-patient tie cells (same cells in the same order, hence the same random draws).
    let sites: Vec<SiteScoreTable> = (0..7)
        .map(|s| {
            let idx: Vec<usize> = (0..p.len()).filter(|i| i % 7 == s).collect();
            let ps: Vec<f64> = idx.iter().map(|&i| p[i]).collect();
            let ys: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
            SiteScoreTable::build(ScoreGrid::default(), &ps, &ys, 1, MergeRule::CellTotal).unwrap()
        })
        .collect();
    let pooled = PooledScoreTable::pool(&sites).unwrap();
    let from_counts = metrics::bootstrap_cis(&pooled.ranked(), t, &o).unwrap();
    for (x, z) in [
        (from_counts.auc, a.auc),
        (from_counts.sensitivity, a.sensitivity),
        (from_counts.brier, a.brier),
    ] {
        assert!((x.lower - z.lower).abs() < 1e-12 && (x.upper - z.upper).abs() < 1e-12);
    }
}

/// The multinomial bootstrap on tie cells and the per-patient index bootstrap draw from the
/// same distribution: their percentile limits agree to Monte-Carlo error (B = 4000).
#[test]
fn multinomial_and_per_patient_bootstrap_agree_in_distribution() {
    let (p, y) = simulate(&mut ChaCha8Rng::seed_from_u64(5), 102, Some(2));
    let rc = RankedCells::from_patients(&p, &y).unwrap();
    let t = metrics::youden(&rc).unwrap().threshold;
    let o = BootstrapOptions {
        replicates: 4000,
        seed: 11,
        conf_level: 0.95,
    };
    let a = metrics::bootstrap_cis(&rc, t, &o).unwrap();
    let b = exact::bootstrap(&p, &y, t, &o).unwrap();
    println!("AUC CI multinomial {:?} vs per-patient {:?}", a.auc, b.auc);
    println!(
        "sens CI multinomial {:?} vs per-patient {:?}",
        a.sensitivity, b.sensitivity
    );
    // Percentile limits of B = 4000 replicates vary by roughly 0.01 (AUC) between seeds.
    assert!((a.auc.lower - b.auc.lower).abs() < 0.02);
    assert!((a.auc.upper - b.auc.upper).abs() < 0.02);
    assert!((a.brier.lower - b.brier.lower).abs() < 0.01);
    assert!((a.sensitivity.lower - b.sensitivity.lower).abs() < 0.05);
    let full = metrics::auc(&rc).unwrap();
    assert!(a.auc.lower < full && full < a.auc.upper);
}
