//! End to end, without a network: 3 sites (one too small to train), R repeats × 5 outer folds,
//! base learners at the sites, meta-features, the MLP fitted by the batched federated driver,
//! outer scoring and per-patient averaging. This is the sequence the federation layer runs, with
//! each `site_*` call happening at a site and each `driver` call at the aggregator.

mod common;

use std::collections::BTreeMap;

use learners::driver::{FitRows, MlpDriver, site_mlp_sums};
use learners::metrics::auc;
use learners::mlp::MlpSpec;
use learners::search::{Budget, Range, SearchConfig};
use learners::site::{SharedModel, SiteOutcome, SiteTrainingConfig, fit_seed, train_site};
use learners::stacking::meta_features;
use learners::{CvScheme, LearnerKind, OuterAverager, ProbabilisticModel, SitePlan};
use ndarray::Array2;

struct Site {
    id: String,
    x: Array2<f64>,
    y: Vec<bool>,
    plan: SitePlan,
}

#[test]
fn nested_cv_runs_end_to_end_and_beats_chance() {
    let scheme = CvScheme {
        seed: 7,
        repeats: 2,
        outer_folds: 5,
        inner_folds: 3,
    };
    let sites: Vec<Site> = [("S01", 40usize, 1u64), ("S02", 30, 2), ("S03", 9, 3)]
        .into_iter()
        .map(|(id, n, seed)| {
            let (x, y) = common::nonlinear(n, 4, seed);
            let plan = SitePlan::new(scheme, id, &y).unwrap();
            Site {
                id: id.into(),
                x,
                y,
                plan,
            }
        })
        .collect();
    let mut search = SearchConfig {
        budget: Budget {
            svm: 2,
            forest: 2,
            gbm: 2,
        },
        ..SearchConfig::default()
    };
    search.forest.n_trees = Range::Fixed { value: 25.0 };
    search.gbm.n_rounds = Range::IntUniform { low: 10, high: 60 };
    let config = SiteTrainingConfig {
        search,
        ..SiteTrainingConfig::default()
    };

    // Step 5 (sites): train per fit; relay models; build meta-feature rows locally.
    let fits = scheme.fit_ids();
    let mut site_rows: Vec<BTreeMap<_, FitRows>> = vec![BTreeMap::new(); sites.len()];
    let mut site_test: Vec<BTreeMap<_, Array2<f64>>> = vec![BTreeMap::new(); sites.len()];
    let mut refused = 0;
    for &fit in &fits {
        let mut trained = Vec::new();
        let mut shared: Vec<SharedModel> = Vec::new();
        for s in &sites {
            let f = s.plan.fit(fit).unwrap();
            let out = train_site(
                f.train_rows(s.x.view()).view(),
                &f.train_labels(&s.y),
                &f.inner_fold,
                &config,
                fit_seed(scheme.seed, fit, &s.id),
            )
            .unwrap();
            match out {
                SiteOutcome::Trained(m) => {
                    shared.extend(m.shareable(&s.id));
                    trained.push(Some(m));
                }
                SiteOutcome::Refused(_) => {
                    refused += 1;
                    trained.push(None);
                }
            }
        }
        for (k, s) in sites.iter().enumerate() {
            let f = s.plan.fit(fit).unwrap();
            let xtr = f.train_rows(s.x.view());
            let own = trained[k].as_ref();
            let meta = meta_features(&s.id, xtr.view(), own, &shared, &LearnerKind::ALL).unwrap();
            site_rows[k].insert(
                fit,
                FitRows {
                    x: meta,
                    y: f.train_labels(&s.y),
                },
            );
            let meta_test = meta_features(
                &s.id,
                f.test_rows(s.x.view()).view(),
                None,
                &shared,
                &LearnerKind::ALL,
            )
            .unwrap();
            site_test[k].insert(fit, meta_test);
        }
    }
    assert_eq!(refused, fits.len(), "S03 (9 patients) never trains");

    // Step 6 (aggregator + sites): every fit's MLP in one batched optimisation.
    let spec = MlpSpec {
        hidden: vec![8],
        alpha: 1e-2,
        ..MlpSpec::default()
    };
    let mut driver = MlpDriver::new(spec.clone(), &fits, scheme.seed).unwrap();
    while !driver.is_done() {
        let req = driver.next_requests();
        let answers: Vec<_> = site_rows
            .iter()
            .map(|rows| site_mlp_sums(&spec, &req, rows).unwrap())
            .collect();
        driver.apply(&answers).unwrap();
    }
    let models = driver.result().unwrap();
    eprintln!(
        "{} fits, {} MLP round trips",
        fits.len(),
        driver.round_trips()
    );
    assert!(driver.round_trips() <= spec.optimiser.max_iter * 3);

    // Scoring at the sites and averaging over repeats.
    let mut all_p = Vec::new();
    let mut all_y = Vec::new();
    for (k, s) in sites.iter().enumerate() {
        let mut avg = OuterAverager::new(s.y.len(), scheme.repeats);
        for f in &s.plan.fits {
            let p = models[&f.id]
                .model
                .predict_proba(site_test[k][&f.id].view())
                .unwrap();
            avg.add(f, &p).unwrap();
        }
        all_p.extend(avg.finish().unwrap());
        all_y.extend(s.y.iter().copied());
    }
    let a = auc(&all_p, &all_y).unwrap();
    eprintln!("nested-CV AUC over {} patients: {a:.3}", all_y.len());
    assert!(a > 0.6, "{a}");
}
