//! Benchmark: the aggregator's full metric set and a B = 2000 stratified bootstrap from a pooled
//! 1000-bin count table (7 sites), plus the site-side table build with min_count merging.
//! Run with `cargo run --release -p stats --example bench_metrics`.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats::metrics::{
    self, BootstrapOptions, MergeRule, MetricOptions, PooledScoreTable, ScoreGrid, SiteScoreTable,
};

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let n_sites = 7;
    let per_site = 3000;
    let grid = ScoreGrid::default();
    let mut data = Vec::new();
    for _ in 0..n_sites {
        let mut p = Vec::with_capacity(per_site);
        let mut y = Vec::with_capacity(per_site);
        for _ in 0..per_site {
            let yi = rng.gen_bool(0.5);
            let z: f64 = if yi { 0.7 } else { -0.7 } + rng.gen_range(-2.5..2.5);
            p.push(1.0 / (1.0 + (-z).exp()));
            y.push(yi);
        }
        data.push((p, y));
    }
    for (min_count, rule) in [(1u64, MergeRule::CellTotal), (5, MergeRule::CellTotal)] {
        let t0 = Instant::now();
        let tables: Vec<SiteScoreTable> = data
            .iter()
            .map(|(p, y)| SiteScoreTable::build(grid, p, y, min_count, rule).unwrap())
            .collect();
        let build = t0.elapsed();
        let pooled = PooledScoreTable::pool(&tables).unwrap();
        let t1 = Instant::now();
        let m = metrics::evaluate_pooled(&pooled, &MetricOptions::default()).unwrap();
        let eval = t1.elapsed();
        let rc = pooled.ranked();
        let opts = BootstrapOptions::default();
        let t2 = Instant::now();
        let ci = metrics::bootstrap_cis(&rc, m.youden.threshold, &opts).unwrap();
        let boot = t2.elapsed();
        println!(
            "min_count {min_count}: {} patients, {} pooled cells ({} ranked); site build {:.2} ms/site; \
             point metrics {:.2} ms; bootstrap B={} {:.1} ms ({:.1} µs/replicate); AUC {:.4} \
             [DeLong {:.4}-{:.4}, bootstrap {:.4}-{:.4}], bound {:.1e}",
            n_sites * per_site,
            pooled.cells.len(),
            rc.cells.len(),
            build.as_secs_f64() * 1e3 / n_sites as f64,
            eval.as_secs_f64() * 1e3,
            opts.replicates,
            boot.as_secs_f64() * 1e3,
            boot.as_secs_f64() * 1e6 / opts.replicates as f64,
            m.auc.auc,
            m.auc.ci_lower,
            m.auc.ci_upper,
            ci.auc.lower,
            ci.auc.upper,
            m.auc_resolution_bound
        );
    }
}
