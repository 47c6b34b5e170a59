//! Benchmark: full federated LASSO (path + 5-fold CV + 100 bootstrap replicates) on the
//! 102 × 56 cohort example split over its 7 sites; prints wall time, round trips, fit-requests
//! and payload bytes per site. Run in release:
//! `cargo run --release -p models --example bench_lasso`.
//! The cohort rows come from the committed golden file (no file IO at run time).

use models::lasso::*;
use models::sampling::{SiteData, assign_stratified_folds};
use ndarray::Array2;
use std::time::Instant;

fn request_floats(r: &FitRequest) -> usize {
    match &r.kind {
        RequestKind::Moments => 4,
        RequestKind::Irls {
            mean,
            sd,
            beta,
            cols,
            ..
        } => mean.len() + sd.len() + beta.len() + 6 + cols.as_ref().map_or(0, Vec::len),
    }
}

fn reply_floats(s: &FitSums) -> usize {
    match s {
        FitSums::Moments(m) => 3 * m.features.len() + 3,
        FitSums::Irls(s) => s.rx.len() + s.wx.len() + s.hess.len() + 8,
        FitSums::Refused(_) => 4,
    }
}

fn run(label: &str, cfg: &LassoConfig, sites: &[SiteData]) {
    let t = Instant::now();
    let mut d = LassoDriver::new(cfg.clone()).expect("config");
    let (mut up, mut down, mut site_time) = (0usize, 0usize, 0.0f64);
    while !d.is_done() {
        let req = d.next_requests();
        down += req.iter().map(request_floats).sum::<usize>();
        let ts = Instant::now();
        let replies: Vec<Vec<FitSums>> = sites
            .iter()
            .map(|s| site_irls_sums(s, &req, f64::INFINITY).expect("site"))
            .collect();
        site_time += ts.elapsed().as_secs_f64();
        up += replies[0].iter().map(reply_floats).sum::<usize>();
        d.apply(&replies).expect("apply");
    }
    let secs = t.elapsed().as_secs_f64();
    let r = d.result().expect("result");
    println!("== {label}");
    println!(
        "fits {}, round trips {}, fit-requests per site {}, wall {:.2} s (all 7 sites' work {:.2} s, aggregator {:.2} s)",
        d.n_fits(),
        r.rounds,
        r.fit_requests,
        secs,
        site_time,
        secs - site_time
    );
    println!(
        "payload per site (8-byte floats): down {:.1} MB, up (site 1) {:.1} MB",
        down as f64 * 8.0 / 1e6,
        up as f64 * 8.0 / 1e6
    );
    println!(
        "path {} λ, λ.min = {:.5} (index {}), λ.1se = {:.5}, selected at λ.min: {:?}",
        r.cv.lambdas.len(),
        r.cv.lambda_min,
        r.cv.index_min,
        r.cv.lambda_1se,
        r.cv.selected_min
    );
    if let Some(b) = &r.bootstrap {
        let top: Vec<String> = b
            .top_k
            .iter()
            .map(|&j| format!("{j} ({:.2})", b.frequency[j]))
            .collect();
        println!(
            "bootstrap B = {}: top-5 (frequency) {}",
            b.replicates,
            top.join(", ")
        );
    }
}

fn main() {
    let g: serde_json::Value =
        serde_json::from_str(include_str!("../tests/golden/lasso_golden.json")).expect("golden");
    let c = &g["cases"][1];
    let rows: Vec<Vec<f64>> = serde_json::from_value(c["x"].clone()).expect("x");
    let y: Vec<f64> = serde_json::from_value(c["y"].clone()).expect("y");
    let site_of: Vec<u64> = serde_json::from_value(c["sites"].clone()).expect("sites");
    let (n, p) = (rows.len(), rows[0].len());
    let x = Array2::from_shape_vec((n, p), rows.into_iter().flatten().collect()).expect("shape");
    let mut ids = site_of.clone();
    ids.sort_unstable();
    ids.dedup();
    let sites: Vec<SiteData> = ids
        .iter()
        .map(|&id| {
            let idx: Vec<usize> = (0..n).filter(|&i| site_of[i] == id).collect();
            let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            SiteData {
                site_id: id,
                x: x.select(ndarray::Axis(0), &idx),
                fold_schemes: vec![assign_stratified_folds(&ys, 5, 2026, id)],
                y: ys,
            }
        })
        .collect();
    println!("cohort {n} × {p}, {} sites", sites.len());
    let mut cfg = LassoConfig::new(p, 5);
    cfg.bootstrap = Some(BootstrapConfig {
        replicates: 100,
        seed: 1,
        top_k: 5,
        lambda: BootstrapLambda::MainLambdaMin,
    });
    run("CV + 100 bootstrap replicates at λ.min", &cfg, &sites);
    let quick = std::env::args().any(|a| a == "--quick");
    if !quick {
        cfg.bootstrap = Some(BootstrapConfig {
            replicates: 100,
            seed: 1,
            top_k: 5,
            lambda: BootstrapLambda::PerReplicateCv,
        });
        run(
            "CV + 100 bootstrap replicates, each with its own 5-fold CV",
            &cfg,
            &sites,
        );
    }
}
