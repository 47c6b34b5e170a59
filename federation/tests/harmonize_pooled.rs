//! Distributed ComBat through the round engine (every site in process) equals
//! `models::combat::combat_pooled` on the pooled rows, and harmonised values agree to 1e-9
//! relative; permuting rows within sites changes nothing beyond 1e-12.

use federation::engine::StudyOutput;
use federation::harmonize::{HarmonizeOutput, site_rows};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec};
use federation::table::SiteTable;
use federation::task::BatchSource;
use federation::{SiteId, StudyId};
use models::combat::{ComBatOptions, ComBatRows, CovariateColumn, DesignSpec, EbMode};
use ndarray::{Array2, Axis, concatenate};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn tables(permute: bool) -> BTreeMap<SiteId, SiteTable> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[1].clone()).unwrap())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(s, mut rows)| {
            if permute {
                rows.reverse();
                rows.rotate_left(3);
            }
            (s, SiteTable::new(header.clone(), rows).unwrap())
        })
        .collect()
}

fn spec(mode: HarmonizeMode) -> StudySpec {
    StudySpec {
        id: StudyId::new("h").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: false,
            features: [
                "original_firstorder_Mean",
                "original_glcm_Contrast",
                "original_shape_Sphericity",
                "max_diameter_mm",
                "original_glszm_ZoneEntropy",
            ]
            .map(String::from)
            .to_vec(),
            batch_column: None,
            covariates: vec!["age".into(), "grade".into()],
            categorical: vec!["grade".into()],
            mode,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn federated(mode: HarmonizeMode, permute: bool) -> HarmonizeOutput {
    let spec = spec(mode);
    let policy = SitePolicy {
        min_count: 1,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    };
    let sites = tables(permute)
        .into_iter()
        .map(|(s, t)| (s, (t, policy.clone())))
        .collect();
    let state = run_local(spec, &sites, 10).unwrap();
    match state.output {
        Some(StudyOutput::Harmonize(h)) => h,
        other => panic!("{:?} {other:?}", state.status),
    }
}

/// All sites' rows stacked in site order, batch = site id.
fn pooled(h: &HarmonizeSpec) -> (Vec<String>, Vec<CovariateColumn>, Array2<f64>) {
    let mut batch = Vec::new();
    let mut age = Vec::new();
    let mut grade = Vec::new();
    let mut feats = Vec::new();
    for (s, t) in tables(false) {
        let r = site_rows(&t, h, &BatchSource::Label(s.to_string())).unwrap();
        batch.extend(r.batch.clone());
        if let CovariateColumn::Continuous(v) = &r.covariates[0] {
            age.extend(v.clone())
        }
        if let CovariateColumn::Categorical(v) = &r.covariates[1] {
            grade.extend(v.clone())
        }
        feats.push(r.features);
    }
    let views: Vec<_> = feats.iter().map(|f| f.view()).collect();
    (
        batch,
        vec![
            CovariateColumn::Continuous(age),
            CovariateColumn::Categorical(grade),
        ],
        concatenate(Axis(0), &views).unwrap(),
    )
}

fn rel_close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn federated_combat_equals_pooled_in_every_mode() {
    for (mode, eb, mean_only) in [
        (HarmonizeMode::Parametric, EbMode::Parametric, false),
        (HarmonizeMode::Nonparametric, EbMode::NonParametric, false),
        (HarmonizeMode::MeanOnly, EbMode::Parametric, true),
    ] {
        let fed = federated(mode, false);
        let AnalysisSpec::Harmonize(h) = spec(mode).analysis else {
            panic!()
        };
        let (batch, covs, x) = pooled(&h);
        let rows = ComBatRows {
            batch: &batch,
            covariates: &covs,
            features: x.view(),
        };
        let design = DesignSpec::from_site_levels(
            &[("age".into(), false), ("grade".into(), true)],
            &[models::combat::site_levels(&batch, &covs)],
        )
        .unwrap();
        let opts = ComBatOptions {
            mode: eb,
            mean_only,
            ..ComBatOptions::default()
        };
        let (model, harmonised) = models::combat::combat_pooled(&design, &rows, &opts).unwrap();
        rel_close(&fed.model.global.fit.beta, &model.global.fit.beta, 1e-10);
        let fed_h = fed.model.apply(&rows).unwrap();
        rel_close(&fed_h, &harmonised, 1e-9);

        // Row order within sites does not matter.
        let perm = federated(mode, true);
        rel_close(&perm.model.apply(&rows).unwrap(), &fed_h, 1e-12);
    }
}
