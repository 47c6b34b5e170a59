//! The documented example configurations in `examples/` load, so they cannot rot.

use fedrad_tests::repo_root;
use std::path::Path;

fn copy_with_referenced_files(example: &str, dir: &Path, files: &[&str]) -> std::path::PathBuf {
    let target = dir.join(example);
    std::fs::copy(repo_root().join("examples").join(example), &target).unwrap();
    for f in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "").unwrap();
        // Agents refuse private keys that others can read (chmod 600, as `certs` writes them).
        #[cfg(unix)]
        if f.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    target
}

#[test]
fn policy_and_study_examples_parse() {
    let policy = std::fs::read_to_string(repo_root().join("examples/policy.toml")).unwrap();
    let p = federation::policy::SitePolicy::from_toml(&policy).unwrap();
    assert_eq!(p.min_count, 5);
    let study = std::fs::read_to_string(repo_root().join("examples/table1-study.toml")).unwrap();
    let s = federation::study::StudySpec::from_toml(&study).unwrap();
    assert_eq!(s.id.as_str(), "table1-demo");
}

#[test]
fn the_published_protocol_example_parses_with_the_study_settings() {
    let text = std::fs::read_to_string(repo_root().join("examples/study.toml")).unwrap();
    let s = federation::study::StudySpec::from_toml(&text).unwrap();
    let federation::study::AnalysisSpec::Pipeline(p) = s.analysis else {
        panic!("not a pipeline study")
    };
    assert_eq!(
        (p.cv.repeats, p.cv.outer_folds, p.cv.inner_folds),
        (100, 5, 5)
    );
    assert_eq!((p.lasso.bootstrap, p.lasso.top_k), (100, 5));
    // No feature list: resolved from the sites' columns at the start of the study; every
    // clinical and outcome column of the study's tables is kept out.
    assert!(p.features.is_empty());
    let excluded = p.excluded_columns();
    for c in [
        "age",
        "sex",
        "ecog",
        "grade",
        "ki67",
        "months_dx_to_tx",
        "met_pattern",
        "prior_surgery",
        "response",
        "pfs_months",
        "pfs_event",
        "site",
    ] {
        assert!(
            excluded.iter().any(|e| e == c),
            "{c} could become a feature"
        );
    }
    // An unknown key anywhere is refused with its name.
    let bad = text.replace("svm = 20", "svm = 20\nsvn = 3");
    let err = federation::study::StudySpec::from_toml(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("svn"), "{err}");
}

#[test]
fn aggregator_and_site_examples_load() {
    let dir = tempfile::tempdir().unwrap();
    let agg = copy_with_referenced_files(
        "aggregator.toml",
        dir.path(),
        &[
            "agg/ca.pem",
            "agg/aggregator.pem",
            "agg/aggregator.key",
            "ca/crl.pem",
        ],
    );
    let cfg = aggregator::AggregatorConfig::load(&agg).unwrap();
    assert_eq!(cfg.enrolled_sites.len(), 7);
    assert_eq!(cfg.round_deadline_ms, 600_000);

    std::fs::copy(
        repo_root().join("examples/policy.toml"),
        dir.path().join("policy.toml"),
    )
    .unwrap();
    let site = copy_with_referenced_files(
        "site.toml",
        dir.path(),
        &["ca.pem", "site.pem", "site.key", "data/cohort.csv"],
    );
    let cfg = site_agent::SiteConfig::load(&site).unwrap();
    assert_eq!(cfg.aggregator_name, "aggregator.example.org");
    assert_eq!(cfg.policy.min_count, 5);
}

/// The README's site-admin walkthrough: the example site.toml and policy.toml, a data table, the
/// two example studies. With the studies' hashes in allowed_studies (as the walkthrough says),
/// `site-agent validate` finds nothing; without them it names both studies.
#[test]
fn the_walkthrough_site_validates_against_the_example_studies() {
    let dir = tempfile::tempdir().unwrap();
    let site =
        copy_with_referenced_files("site.toml", dir.path(), &["ca.pem", "site.pem", "site.key"]);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(
        repo_root().join("../shared/examples/cohort_example.csv"),
        dir.path().join("data/cohort.csv"),
    )
    .unwrap();
    let policy = std::fs::read_to_string(repo_root().join("examples/policy.toml")).unwrap();
    std::fs::write(dir.path().join("policy.toml"), &policy).unwrap();
    let studies: Vec<std::path::PathBuf> = ["table1-study.toml", "study.toml"]
        .iter()
        .map(|s| repo_root().join("examples").join(s))
        .collect();
    let args = site_agent::validate::ValidateArgs {
        config: site.clone(),
        manifest: None,
        study: studies.clone(),
        skip_images: false,
    };
    let report = site_agent::validate::validate(&args);
    let refused: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.problem.contains("the policy does not allow study"))
        .collect();
    assert_eq!(refused.len(), 2, "{}", report.render());
    assert_eq!(report.problems.len(), 2, "{}", report.render());

    let hashes: Vec<String> = studies
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            format!(
                "\"{}\"",
                federation::study::StudySpec::from_toml(&text)
                    .unwrap()
                    .hash()
            )
        })
        .collect();
    let allowed = policy.replace(
        "allowed_studies = []",
        &format!("allowed_studies = [{}]", hashes.join(", ")),
    );
    assert_ne!(
        allowed, policy,
        "examples/policy.toml no longer has `allowed_studies = []`"
    );
    std::fs::write(dir.path().join("policy.toml"), allowed).unwrap();
    let report = site_agent::validate::validate(&args);
    assert!(report.is_ok(), "{}", report.render());
    assert!(
        report.render().contains("102 patients"),
        "{}",
        report.render()
    );
}

/// `examples/lesions.csv` is the manifest layout `extract --manifest` and `validate --manifest`
/// read (NIfTI label maps, a DICOM series with an RTSTRUCT ROI).
#[test]
fn the_manifest_example_parses() {
    let rows =
        site_agent::extract::read_manifest(&repo_root().join("examples/lesions.csv")).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].selection.label, Some(2));
    assert_eq!(rows[2].selection.roi.as_deref(), Some("GTV-1"));
}

/// On the shared example cohort, the example study (no feature list) resolves exactly the
/// cohort's 55 radiomics columns in table order, the list the file used to spell out, so the
/// published-protocol runs in BENCHMARKS.md are the same study plus the column-names round.
#[test]
fn the_published_protocol_example_resolves_the_cohorts_radiomics_columns() {
    use federation::pipeline::driver::resolve_features;
    use federation::pipeline::site::column_report;
    let text = std::fs::read_to_string(repo_root().join("examples/study.toml")).unwrap();
    let federation::study::AnalysisSpec::Pipeline(p) =
        federation::study::StudySpec::from_toml(&text)
            .unwrap()
            .analysis
    else {
        panic!("not a pipeline study")
    };
    let mut r =
        csv::Reader::from_path(repo_root().join("../shared/examples/cohort_example.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(row[1].clone()).or_default().push(row);
    }
    let sites: Vec<(
        federation::SiteId,
        federation::pipeline::messages::ColumnReport,
    )> = rows
        .into_iter()
        .map(|(s, rows)| {
            let table = federation::table::SiteTable::new(header.clone(), rows)
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (federation::SiteId::new(s).unwrap(), column_report(&table))
        })
        .collect();
    let reports: Vec<_> = sites.iter().map(|(s, r)| (s, r)).collect();
    let resolved = resolve_features(&p, &reports).unwrap();
    let radiomics: Vec<&String> = header
        .iter()
        .filter(|h| h.starts_with("original_"))
        .collect();
    assert_eq!(resolved.features.len(), 55);
    assert!(resolved.features.iter().eq(radiomics));
    assert!(resolved.dropped.is_empty(), "{:?}", resolved.dropped);
}
