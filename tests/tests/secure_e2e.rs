//! Secure aggregation over loopback mutual TLS (a real aggregator, one real agent per site):
//! Table 1, ComBat and the LASSO with `secure_aggregation = true` equal the plain in-process runs
//! (counts exactly, real values within the fixed-point precision, the LASSO's selection
//! exactly); the aggregator's stored round records hold key announcements and masked vectors,
//! never a site's plain summary, cross-products or LASSO sums;
//! every site's audit log verifies; and each site keeps its X25519 secret in its study memory,
//! readable by its owner only.

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::StudyId;
use federation::engine::{StudyOutput, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec};
use federation::task::ResultBody;
use fedrad_tests::{cohort_example, local_sites, table1_spec};
use serde_json::Value;
use std::time::Duration;

/// Numbers within `rel` relative + `abs`, everything else equal; `skip`ped keys aside.
fn close(a: &Value, b: &Value, rel: f64, abs: f64, skip: &[&str], path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= rel * x.abs().max(y.abs()) + abs,
                "{path}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, rel, abs, skip, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                if !skip.contains(&k.as_str()) {
                    close(v, &y[k], rel, abs, skip, &format!("{path}.{k}"));
                }
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

async fn federated(
    spec: &StudySpec,
    min_count: u64,
) -> (
    federation::engine::StudyState,
    Vec<federation::engine::RoundRecord>,
) {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let opts = SimOptions {
        min_count,
        max_params_per_row: Some(f64::INFINITY),
        ..SimOptions::default()
    };
    let sim = Simulation::start(&table, spec, &opts).await.unwrap();
    let state = sim
        .run_study(spec.clone(), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    for site in &sim.sites {
        let kit = sim.kit(site);
        let entries = site_agent::audit::verify(&kit.join("audit.jsonl")).unwrap();
        assert_eq!(
            entries.len() as u32,
            state.round,
            "site {site}: one audit line per round"
        );
        // The session secret lives in the site's memory file, owner-only.
        let memory = walk(&kit)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == "study-memory.json"))
            .unwrap_or_else(|| panic!("site {site}: no study memory under {}", kit.display()));
        let text = std::fs::read_to_string(&memory).unwrap();
        assert!(
            text.contains("\"secret\""),
            "site {site}: no session in {text:.200}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&memory).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "site {site}: study memory mode {mode:o}");
        }
    }
    let rounds = sim.server.coordinator.rounds(spec.id.as_str()).unwrap();
    sim.shutdown().await;
    (state, rounds)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn reference(spec: &StudySpec, min_count: u64) -> Option<StudyOutput> {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let mut plain = spec.clone();
    match &mut plain.analysis {
        AnalysisSpec::Table1(t) => t.secure_aggregation = false,
        AnalysisSpec::Harmonize(h) => h.secure_aggregation = false,
        AnalysisSpec::Lasso(l) => l.secure_aggregation = false,
        _ => unreachable!(),
    }
    let policy = SitePolicy {
        allow_all_studies: true,
        min_count,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    };
    run_local(plain, &local_sites(&table, &policy), 1000)
        .unwrap()
        .output
}

/// The aggregator's records: the key round carries keys (each signed by its site) and level
/// names, the summed rounds only masked vectors.
fn assert_only_masked_sums(rounds: &[federation::engine::RoundRecord], masked_rounds: &[u32]) {
    for r in rounds {
        for (site, body) in &r.results {
            match body {
                ResultBody::Masked(v) => {
                    assert!(masked_rounds.contains(&r.round), "round {}", r.round);
                    assert_eq!(v.site_id, site.as_str());
                }
                ResultBody::SecureKey(k) => {
                    assert_eq!(r.round, 1);
                    // Signed by the site's certificate key (site_agent::attest), which the
                    // peers checked before masking (a bad signature would have failed the study).
                    let a = k
                        .attestation
                        .as_ref()
                        .expect("an unsigned key announcement");
                    assert_eq!(a.site_id, site.as_str());
                    assert_eq!(
                        certs::site_id_from_der(&a.certificate).unwrap(),
                        site.as_str()
                    );
                }
                ResultBody::Table1Summary(_)
                | ResultBody::ComBatCrossProducts(_)
                | ResultBody::ComBatResiduals(_)
                | ResultBody::LassoSums(_) => {
                    panic!("round {}: site {site} sent a plain sum", r.round)
                }
                _ => assert!(!masked_rounds.contains(&r.round)),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_table1_over_mtls_equals_the_plain_reference() {
    let mut spec = table1_spec();
    spec.id = StudyId::new("table1-secure").unwrap();
    if let AnalysisSpec::Table1(t) = &mut spec.analysis {
        t.secure_aggregation = true;
    }
    let (state, rounds) = federated(&spec, 5).await;
    assert_only_masked_sums(&rounds, &[2]);
    let (Some(StudyOutput::Table1(s)), Some(StudyOutput::Table1(p))) =
        (&state.output, reference(&spec, 5))
    else {
        panic!("table1 outputs")
    };
    assert_eq!(s.n, p.n);
    close(
        &serde_json::to_value(&p).unwrap(),
        &serde_json::to_value(s).unwrap(),
        // Σx, Σx² travel with 2^-24 resolution: within 7 · 2^-25 of the plain sums.
        1e-7,
        1e-9,
        &["suppressed_by"],
        "table1",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_combat_over_mtls_equals_the_plain_reference() {
    let spec = StudySpec {
        id: StudyId::new("combat-secure").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: true,
            features: [
                "original_firstorder_Mean",
                "original_glcm_Contrast",
                "original_shape_Sphericity",
                "original_glszm_ZoneEntropy",
            ]
            .map(String::from)
            .to_vec(),
            batch_column: None,
            covariates: vec!["age".into()],
            categorical: vec![],
            mode: HarmonizeMode::Parametric,
            on_masked_dropout: Default::default(),
        }),
    };
    let (state, rounds) = federated(&spec, 5).await;
    assert_only_masked_sums(&rounds, &[2, 3]);
    let (Some(StudyOutput::Harmonize(s)), Some(StudyOutput::Harmonize(p))) =
        (&state.output, reference(&spec, 5))
    else {
        panic!("harmonize outputs")
    };
    // Sums within 7 sites · 2^-25 ≈ 2e-7 absolute: ~1e-8 relative on the feature scale,
    // ~1e-7 absolute on the standardised scale (γ, δ near 0).
    close(
        &serde_json::to_value(&p).unwrap(),
        &serde_json::to_value(s).unwrap(),
        1e-6,
        1e-6,
        &[],
        "model",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_lasso_over_mtls_selects_what_the_plain_reference_selects() {
    let spec = StudySpec {
        id: StudyId::new("lasso-secure").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Lasso(federation::study::LassoSpec {
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            features: [
                "max_diameter_mm",
                "original_firstorder_Mean",
                "original_firstorder_Skewness",
                "original_glcm_Contrast",
                "original_glcm_Idm",
                "original_shape_Sphericity",
                "original_glrlm_RunEntropy",
                "original_glszm_ZoneEntropy",
                "original_firstorder_Energy",
            ]
            .map(String::from)
            .to_vec(),
            nfolds: 5,
            foldid_column: None,
            nlambda: 100,
            bootstrap: 5,
            top_k: 3,
            seed: 7,
            secure_aggregation: true,
            on_masked_dropout: Default::default(),
        }),
    };
    let (state, rounds) = federated(&spec, 5).await;
    // Every round after the key round is masked: no plain LASSO sum reached the aggregator.
    let masked: Vec<u32> = (2..=state.round).collect();
    assert_only_masked_sums(&rounds, &masked);
    assert!(
        rounds.iter().filter(|r| r.round >= 2).all(|r| r
            .results
            .values()
            .all(|b| matches!(b, ResultBody::Masked(_)))),
        "a LASSO round after the key round was not masked"
    );
    let (Some(StudyOutput::Lasso(s)), Some(StudyOutput::Lasso(p))) =
        (&state.output, reference(&spec, 5))
    else {
        panic!("LASSO outputs")
    };
    // The same selection, exactly.
    assert_eq!(s.result.cv.selected_min, p.result.cv.selected_min);
    assert_eq!(s.result.cv.index_min, p.result.cv.index_min);
    let (sb, pb) = (
        s.result.bootstrap.as_ref().unwrap(),
        p.result.bootstrap.as_ref().unwrap(),
    );
    assert_eq!(sb.top_k, pb.top_k);
    assert_eq!(sb.frequency, pb.frequency);
    // Numbers within the precision `federation::lasso::secure` states (measured there: SDs
    // within 2e-13, coefficients within 3e-8 relative — the IRLS tolerance): 1e-6 here.
    close(
        &serde_json::to_value(&p).unwrap(),
        &serde_json::to_value(s).unwrap(),
        1e-6,
        1e-9,
        &[],
        "lasso",
    );
}
