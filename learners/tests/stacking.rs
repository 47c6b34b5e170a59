//! Meta-feature weighting: size-weighted means over the available sites' models, own model
//! contributing out-of-fold values for its own training rows; small sites still get features.

mod common;

use learners::search::{Budget, Range, SearchConfig};
use learners::site::{SharedModel, SiteModels, SiteOutcome, SiteTrainingConfig, train_site};
use learners::stacking::meta_features;
use learners::{LearnerError, LearnerKind, ProbabilisticModel, folds};

fn quick() -> SiteTrainingConfig {
    let mut search = SearchConfig {
        budget: Budget {
            svm: 2,
            forest: 2,
            gbm: 2,
        },
        ..SearchConfig::default()
    };
    search.forest.n_trees = Range::Fixed { value: 25.0 };
    SiteTrainingConfig {
        search,
        ..SiteTrainingConfig::default()
    }
}

fn train(n: usize, seed: u64) -> (ndarray::Array2<f64>, SiteModels) {
    let (x, y) = common::nonlinear(n, 4, seed);
    let inner = folds::stratified_folds(&y, 3, seed).unwrap();
    match train_site(x.view(), &y, &inner, &quick(), seed).unwrap() {
        SiteOutcome::Trained(m) => (x, m),
        SiteOutcome::Refused(r) => panic!("{r}"),
    }
}

#[test]
fn weighted_means_with_own_out_of_fold_values() {
    let (xa, ma) = train(30, 1);
    let (_, mb) = train(45, 2);
    let (xc, _) = common::nonlinear(6, 4, 3); // site C: too small to train, receives features
    let mut shared: Vec<SharedModel> = ma.shareable("A");
    shared.extend(mb.shareable("B"));
    let (na, nb) = (30.0, 45.0);

    // Site A's training rows: own OOF (weight 30) + B's model (weight 45).
    let fa = meta_features("A", xa.view(), Some(&ma), &shared, &LearnerKind::ALL).unwrap();
    for (c, kind) in LearnerKind::ALL.iter().enumerate() {
        let oof = ma.oof(*kind).unwrap();
        let pb = shared
            .iter()
            .find(|m| m.site == "B" && m.model.kind() == *kind)
            .unwrap()
            .model
            .predict_proba(xa.view())
            .unwrap();
        for r in 0..30 {
            let want = (na * oof[r] + nb * pb[r]) / (na + nb);
            assert!((fa[[r, c]] - want).abs() < 1e-15, "row {r} {kind:?}");
        }
    }
    // Site A's validation rows: its own fitted model scores them like B's.
    let fv = meta_features("A", xc.view(), None, &shared, &LearnerKind::ALL).unwrap();
    // Site C (refused) gets the same weighted mean of A's and B's models for its rows.
    let fc = meta_features("C", xc.view(), None, &shared, &LearnerKind::ALL).unwrap();
    assert_eq!(fv, fc);
    for (c, kind) in LearnerKind::ALL.iter().enumerate() {
        let pa = shared[c].model.predict_proba(xc.view()).unwrap();
        assert_eq!(shared[c].model.kind(), *kind);
        let pb = shared[3 + c].model.predict_proba(xc.view()).unwrap();
        for r in 0..6 {
            assert!((fc[[r, c]] - (na * pa[r] + nb * pb[r]) / (na + nb)).abs() < 1e-15);
        }
    }
    // Arrival order does not matter (summed in site-id order).
    let mut reversed = shared.clone();
    reversed.reverse();
    assert_eq!(
        meta_features("C", xc.view(), None, &reversed, &LearnerKind::ALL).unwrap(),
        fc
    );
    // Only one site shares: its model alone.
    let only_b: Vec<SharedModel> = shared.iter().filter(|m| m.site == "B").cloned().collect();
    let fb = meta_features("C", xc.view(), None, &only_b, &LearnerKind::ALL).unwrap();
    for (a, b) in fb
        .column(0)
        .iter()
        .zip(only_b[0].model.predict_proba(xc.view()).unwrap())
    {
        assert!((a - b).abs() < 1e-15, "(n·p)/n is p up to one rounding");
    }
    // Nobody shares anything: a typed error naming the learner.
    assert!(matches!(
        meta_features("C", xc.view(), None, &[], &LearnerKind::ALL),
        Err(LearnerError::NoModel { kind: "svm" })
    ));
    let mut dup = shared.clone();
    dup.push(shared[0].clone());
    assert!(meta_features("C", xc.view(), None, &dup, &LearnerKind::ALL).is_err());
}
