//! Distributed ComBat over loopback mutual TLS equals the pooled reference
//! (`models::combat::combat_pooled` on all rows at once) to 1e-9 relative, in every mode, and
//! the `simulate harmonize` output keeps the table's rows, order and columns.

use aggregator::commands::{HarmonizeArgs, simulate_harmonize};
use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::StudyId;
use federation::engine::StudyOutput;
use federation::harmonize::site_rows;
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec};
use federation::table::SiteTable;
use federation::task::BatchSource;
use fedrad_tests::cohort_example;
use models::combat::{ComBatOptions, ComBatRows, CovariateColumn, DesignSpec, EbMode};
use ndarray::{Array2, Axis, concatenate};
use std::time::Duration;

const FEATURES: [&str; 4] = [
    "original_firstorder_Mean",
    "original_glcm_Contrast",
    "original_shape_Sphericity",
    "original_glszm_ZoneEntropy",
];

fn spec(mode: HarmonizeMode) -> HarmonizeSpec {
    HarmonizeSpec {
        secure_aggregation: false,
        features: FEATURES.map(String::from).to_vec(),
        batch_column: None,
        covariates: vec!["age".into()],
        categorical: vec![],
        mode,
        on_masked_dropout: Default::default(),
    }
}

/// One site's batch label, covariates and features.
type SitePart = (String, Vec<CovariateColumn>, Array2<f64>);

/// The pooled reference on every row at once.
fn pooled(
    table: &PooledTable,
    h: &HarmonizeSpec,
    opts: &ComBatOptions,
) -> (Array2<f64>, Vec<SitePart>) {
    let mut parts = Vec::new();
    for (site, rows) in &table.by_site {
        let t = SiteTable::new(table.header.clone(), rows.clone()).unwrap();
        let r = site_rows(&t, h, &BatchSource::Label(site.to_string())).unwrap();
        parts.push((site.to_string(), r.covariates, r.features));
    }
    let batch: Vec<String> = parts
        .iter()
        .flat_map(|(s, _, f)| vec![s.clone(); f.nrows()])
        .collect();
    let age: Vec<f64> = parts
        .iter()
        .flat_map(|(_, c, _)| match &c[0] {
            CovariateColumn::Continuous(v) => v.clone(),
            CovariateColumn::Categorical(_) => unreachable!(),
        })
        .collect();
    let covs = vec![CovariateColumn::Continuous(age)];
    let views: Vec<_> = parts.iter().map(|(_, _, f)| f.view()).collect();
    let x = concatenate(Axis(0), &views).unwrap();
    let rows = ComBatRows {
        batch: &batch,
        covariates: &covs,
        features: x.view(),
    };
    let design = DesignSpec::from_site_levels(
        &[("age".into(), false)],
        &[models::combat::site_levels(&batch, &covs)],
    )
    .unwrap();
    let (_, harmonised) = models::combat::combat_pooled(&design, &rows, opts).unwrap();
    (harmonised, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_combat_over_mtls_equals_the_pooled_reference() {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    for (mode, opts) in [
        (HarmonizeMode::Parametric, ComBatOptions::default()),
        (
            HarmonizeMode::Nonparametric,
            ComBatOptions {
                mode: EbMode::NonParametric,
                ..ComBatOptions::default()
            },
        ),
        (
            HarmonizeMode::MeanOnly,
            ComBatOptions {
                mean_only: true,
                ..ComBatOptions::default()
            },
        ),
    ] {
        let h = spec(mode);
        let study = StudySpec {
            id: StudyId::new("combat").unwrap(),
            title: String::new(),
            analysis: AnalysisSpec::Harmonize(h.clone()),
        };
        let sim = Simulation::start(&table, &study, &SimOptions::default())
            .await
            .unwrap();
        let state = sim.run_study(study, Duration::from_secs(60)).await.unwrap();
        let rounds = sim.server.coordinator.rounds("combat").unwrap();
        sim.shutdown().await;
        let Some(StudyOutput::Harmonize(out)) = state.output else {
            panic!("{}", state.status.describe())
        };
        assert_eq!(state.round, 4, "ComBat takes four rounds whatever the data");

        let (reference, parts) = pooled(&table, &h, &opts);
        let mut offset = 0;
        for (site, covs, x) in &parts {
            let batch = vec![site.clone(); x.nrows()];
            let got = out
                .model
                .apply(&ComBatRows {
                    batch: &batch,
                    covariates: covs,
                    features: x.view(),
                })
                .unwrap();
            for (i, row) in got.rows().into_iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let want = reference[[offset + i, j]];
                    assert!(
                        (v - want).abs() <= 1e-9 * want.abs().max(1.0),
                        "{mode:?} {site} row {i} feature {j}: {v} vs {want}"
                    );
                }
            }
            offset += x.nrows();
        }
        // What a site sends does not grow with its rows: W'W, W'Y and the residual sums have a
        // fixed size for a given design.
        for r in &rounds {
            let sizes: Vec<u64> = r.bytes.values().copied().collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(
                hi - lo <= 16,
                "round {} bytes vary with the site: {sizes:?}",
                r.round
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_harmonize_keeps_rows_order_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.csv");
    let cohort = cohort_example();
    simulate_harmonize(HarmonizeArgs {
        table: &cohort,
        site_column: "site",
        id_column: "patient_id",
        batch_column: None,
        covariates: vec!["age".into()],
        categorical: None,
        features: None,
        features_after: None,
        mode: HarmonizeMode::Parametric,
        min_count: 5,
        out: &out,
    })
    .await
    .unwrap();
    let read = |p: &std::path::Path| {
        let mut r = csv::Reader::from_path(p).unwrap();
        let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<Vec<String>> = r
            .records()
            .map(|x| x.unwrap().iter().map(String::from).collect())
            .collect();
        (h, rows)
    };
    let (h0, r0) = read(&cohort);
    let (h1, r1) = read(&out);
    assert_eq!(h0, h1);
    assert_eq!(r0.len(), r1.len());
    let mean = h0
        .iter()
        .position(|c| c == "original_firstorder_Mean")
        .unwrap();
    let age = h0.iter().position(|c| c == "age").unwrap();
    for (a, b) in r0.iter().zip(&r1) {
        assert_eq!(a[0], b[0], "row order changed");
        assert_eq!(a[age], b[age], "a covariate was modified");
        assert_ne!(a[mean], b[mean], "a feature was not harmonised");
    }
    assert!(dir.path().join("h.model.json").exists());
}
