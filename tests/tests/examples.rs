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
    let text = std::fs::read_to_string(repo_root().join("examples/pipeline-study.toml")).unwrap();
    let s = federation::study::StudySpec::from_toml(&text).unwrap();
    let federation::study::AnalysisSpec::Pipeline(p) = s.analysis else {
        panic!("not a pipeline study")
    };
    assert_eq!(
        (p.cv.repeats, p.cv.outer_folds, p.cv.inner_folds),
        (100, 5, 5)
    );
    assert_eq!((p.lasso.bootstrap, p.lasso.top_k), (100, 5));
    assert_eq!(p.features.len(), 55);
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
