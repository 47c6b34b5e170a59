//! The `aggregator` command on bad input: each mistake is one error line saying what and where,
//! a non-zero exit code, and no state or output written. Plus the happy path of `simulate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn aggregator(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn cohort() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv")
}

/// Exit code 1 and a single `error:` line containing `needle`.
fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
}

const TLS: &str = "[tls]\nca_cert = \"ca.pem\"\ncert = \"agg.pem\"\nkey = \"agg.key\"\n";

#[test]
fn serve_refuses_bad_configs_without_creating_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(
        &aggregator(&["serve", "--config", "nope.toml"], d),
        "cannot read nope.toml",
    );

    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nenrolled_sites = [\"S01\"]\n{TLS}"
    );
    std::fs::write(d.join("a.toml"), &cfg).unwrap();
    std::fs::write(d.join("ca.pem"), "").unwrap();
    fails_with(
        &aggregator(&["serve", "--config", "a.toml"], d),
        "tls.cert points at",
    );

    // An unreadable key: the error names the file; nothing is created.
    let pki = tempfile::tempdir().unwrap();
    let mut ca = certs::Ca::init(&pki.path().join("ca"), "t", 5).unwrap();
    let kit = pki.path().join("agg");
    ca.write_aggregator_kit(&kit, &["localhost".into()], &[], certs::Validity::days(1))
        .unwrap();
    std::fs::copy(kit.join("ca.pem"), d.join("ca.pem")).unwrap();
    std::fs::copy(kit.join("aggregator.pem"), d.join("agg.pem")).unwrap();
    std::fs::write(
        d.join("agg.key"),
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    fails_with(&aggregator(&["serve", "--config", "a.toml"], d), "agg.key");
    assert!(!d.join("state").exists(), "state was written on bad input");

    std::fs::write(d.join("a.toml"), cfg.replace("[\"S01\"]", "[\"../x\"]")).unwrap();
    fails_with(
        &aggregator(&["serve", "--config", "a.toml"], d),
        "enrolled_sites",
    );
}

#[test]
fn simulate_refuses_bad_tables_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cohort = cohort();
    let table = cohort.to_str().unwrap();
    let base = ["simulate", "table1", "--table", table, "--out", "t1.csv"];

    let args = [&base[..], &["--variables", "age,bmi"]].concat();
    fails_with(
        &aggregator(&args, d),
        "column \"bmi\" is missing; the table has: patient_id, site",
    );

    let args = [
        &base[..],
        &["--variables", "age", "--label-column", "outcome"],
    ]
    .concat();
    fails_with(&aggregator(&args, d), "column \"outcome\" is missing");

    let args = [
        &base[..],
        &["--variables", "age", "--site-column", "centre"],
    ]
    .concat();
    fails_with(&aggregator(&args, d), "site column \"centre\" is missing");

    // A non-numeric value in one site's continuous column: the study fails naming the site and
    // the column, but not the patient or the value (those stay in that site's log).
    let text = std::fs::read_to_string(&cohort).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let age = header.iter().position(|h| *h == "age").unwrap();
    let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
    let (patient, site) = (cells[0].clone(), cells[1].clone());
    cells[age] = "fifty".into();
    lines[1] = cells.join(",");
    std::fs::write(d.join("bad.csv"), lines.join("\n")).unwrap();
    let out = aggregator(
        &[
            "simulate",
            "table1",
            "--table",
            "bad.csv",
            "--variables",
            "age,sex",
            "--out",
            "t1.csv",
        ],
        d,
    );
    fails_with(
        &out,
        &format!(
            "site {site} could not answer round 1: column \"age\" holds a value that is not a number"
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let error_line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        !error_line.contains(&patient) && !error_line.contains("fifty"),
        "{error_line}"
    );
    assert!(
        !d.join("t1.csv").exists(),
        "output written for a failed study"
    );
}

#[test]
fn simulate_table1_writes_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = cohort();
    let out = aggregator(
        &[
            "simulate",
            "table1",
            "--table",
            cohort.to_str().unwrap(),
            "--variables",
            "age,sex,ecog,ki67",
            "--min-count",
            "1",
            "--out",
            "t1.csv",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("t1.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("variable,level,overall,group_1,group_0,test,statistic,p_value")
    );
    assert!(csv.contains("\nn,,102,51,51,"), "{csv}");
    assert!(
        csv.contains("age,mean ± SD,") && csv.contains("Student t"),
        "{csv}"
    );
    assert!(csv.contains("ecog,0,"), "ecog should be categorical: {csv}");
    assert!(dir.path().join("t1.json").exists());
}

#[test]
fn version_names_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let out = aggregator(&["--version"], dir.path());
    let version = format!("protocol v{}", federation::PROTOCOL_VERSION);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&version),
        "--version should name {version}"
    );
    let out = aggregator(&["simulate", "table1", "--help"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example:"));
    let out = aggregator(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

/// A small pipeline study over the example cohort's 55 radiomics columns (smoke settings).
fn small_pipeline_study(dir: &Path) -> PathBuf {
    let header = std::fs::read_to_string(cohort()).unwrap();
    let features: Vec<String> = header
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|c| c.starts_with("original_"))
        .map(|c| format!("{c:?}"))
        .collect();
    let toml = format!(
        r#"id = "small-pipeline"
[analysis]
kind = "pipeline"
label_column = "response"
features = [{}]
[analysis.cv]
repeats = 1
inner_folds = 3
[analysis.lasso]
nfolds = 3
nlambda = 15
bootstrap = 4
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.meta]
hidden = [4]
[analysis.metrics]
bootstrap = 50
time_column = "pfs_months"
event_column = "pfs_event"
"#,
        features.join(", ")
    );
    let path = dir.join("small.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn simulate_study_writes_the_report_and_report_rebuilds_it_from_results() {
    let dir = tempfile::tempdir().unwrap();
    let study = small_pipeline_study(dir.path());
    let out = aggregator(
        &[
            "simulate",
            "study",
            "--table",
            cohort().to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
            "--max-params-per-row",
            "inf",
            "--out",
            "sim",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim = dir.path().join("sim");
    for f in ["report.html", "metrics.json", "pipeline.json", "roc_ml.csv"] {
        assert!(sim.join(f).exists(), "missing {f}");
    }
    // The server's results folder for a finished pipeline study, as `housekeeping` writes it.
    let results = dir.path().join("state/results/small-pipeline");
    std::fs::create_dir_all(&results).unwrap();
    let pipeline = std::fs::read_to_string(sim.join("pipeline.json")).unwrap();
    std::fs::write(
        results.join("output.json"),
        format!("{{\"Pipeline\":{pipeline}}}"),
    )
    .unwrap();
    std::fs::write(results.join("study.json"), "{\"hash\":\"abc\"}").unwrap();
    std::fs::write(
        results.join("traffic.csv"),
        "round,site,kind,bytes\n1,S01,pipeline,10\n",
    )
    .unwrap();
    let out = aggregator(
        &[
            "report",
            "--state",
            "state",
            "small-pipeline",
            "--out",
            "rep",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.path().join("rep/report.html")).unwrap();
    assert!(html.contains("stacked ML model") && html.contains("S01"));
    // Not a pipeline study: one clear error line.
    std::fs::write(
        results.join("output.json"),
        "{\"Lasso\":{\"features\":[],\"result\":null}}",
    )
    .unwrap();
    let out = aggregator(
        &[
            "report",
            "--state",
            "state",
            "small-pipeline",
            "--out",
            "rep2",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
}

/// The example cohort with 8 radiomics columns (a quick LASSO), two of them renamed, one extra
/// wavelet column, and the GLCM contrast blank at every S03 row; the clinical columns as they are.
fn edited_cohort(dir: &Path) -> PathBuf {
    let mut r = csv::Reader::from_path(cohort()).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let kept = [
        "original_shape_VoxelVolume",
        "original_shape_Sphericity",
        "original_firstorder_Mean",
        "original_firstorder_Entropy",
        "original_glcm_Contrast",
        "original_glcm_Idm",
        "original_glrlm_RunEntropy",
        "original_glszm_ZoneEntropy",
    ];
    let keep: Vec<usize> = (0..header.len())
        .filter(|&j| !header[j].starts_with("original_") || kept.contains(&&*header[j]))
        .collect();
    let rename = |h: &str| match h {
        "original_shape_Sphericity" => "sphericity".to_string(),
        "original_glcm_Idm" => "glcm_inverse_difference_moment".to_string(),
        other => other.to_string(),
    };
    let site = header.iter().position(|h| h == "site").unwrap();
    let mean = header
        .iter()
        .position(|h| h == "original_firstorder_Mean")
        .unwrap();
    let mut w = csv::Writer::from_path(dir.join("edited.csv")).unwrap();
    let mut out: Vec<String> = keep.iter().map(|&j| rename(&header[j])).collect();
    out.push("wavelet_LLH_firstorder_Mean".into());
    w.write_record(&out).unwrap();
    for (i, rec) in r.records().enumerate() {
        let rec: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        let mut row: Vec<String> = keep
            .iter()
            .map(|&j| {
                if header[j] == "original_glcm_Contrast" && rec[site] == "S03" {
                    String::new()
                } else {
                    rec[j].clone()
                }
            })
            .collect();
        let v: f64 = rec[mean].parse().unwrap();
        row.push(format!("{:.6}", 0.5 * v + (i % 7) as f64));
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    dir.join("edited.csv")
}

/// `examples/study.toml` as shipped (its clinical columns, `exclude_columns`, no feature list),
/// with only its costs cut for a test: search budgets, LASSO path and bootstrap, network size.
fn example_study_quick(dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/study.toml"),
    )
    .unwrap();
    for (from, to) in [
        ("svm = 20", "svm = 1"),
        ("forest = 10", "forest = 1"),
        ("gbm = 10", "gbm = 1"),
        ("nfolds = 10", "nfolds = 3"),
        ("nlambda = 100", "nlambda = 12"),
        ("bootstrap = 2000", "bootstrap = 50"),
        ("bootstrap = 100 ", "bootstrap = 3 "),
        ("inner_folds = 5", "inner_folds = 3"),
        ("hidden = [100]", "hidden = [4]"),
        ("min_train_rows = 10", "min_train_rows = 6"),
    ] {
        assert!(text.contains(from), "examples/study.toml has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    text.push_str(
        "\n[analysis.learners.search.forest]\nn_trees = { kind = \"fixed\", value = 5.0 }\n\
         [analysis.learners.search.gbm]\nn_rounds = { kind = \"int_uniform\", low = 5, high = 8 }\n",
    );
    let path = dir.join("study-quick.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// AUC as the Mann-Whitney statistic with mid-ranks (pROC, `wilcox.test`).
fn mann_whitney_auc(scores: &[(f64, bool)]) -> f64 {
    let mut s: Vec<(f64, bool)> = scores.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0;
        rank_sum += mid * s[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let pos = s.iter().filter(|x| x.1).count() as f64;
    let neg = s.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Issue 5's CLI on the shipped example study and a table whose radiomics columns are renamed,
/// extra and (one) blank at a site: the flags override the study file, the features are resolved
/// and the blank one reported, and the outputs are the ones the issue names: one prediction per
/// patient agreeing exactly with the aggregator's AUC (rows released, so the AUC is exact),
/// selection frequencies that add up to top-k, timing per stage that adds up to the study.
#[test]
fn simulate_study_writes_predictions_selection_and_timing() {
    let dir = tempfile::tempdir().unwrap();
    let table = edited_cohort(dir.path());
    let study = example_study_quick(dir.path());
    let out = aggregator(
        &[
            "simulate",
            "study",
            "--table",
            table.to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
            "--repeats",
            "1",
            "--folds",
            "3",
            "--seed",
            "7",
            "--release-predictions",
            "--max-params-per-row",
            "inf",
            "--out",
            "sim",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Progress on stderr (not a terminal here: one line per stage).
    for want in [
        "resolving the feature columns",
        "repeat 1 of 1, folds 1–3",
        "LASSO + bootstrap",
        "meta-model + clinical",
        "ETA",
    ] {
        assert!(
            stderr.contains(want),
            "no {want:?} in the progress:\n{stderr}"
        );
    }
    let sim = dir.path().join("sim");
    let pipeline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sim.join("pipeline.json")).unwrap()).unwrap();
    // The flags override the study file.
    let cv = &pipeline["spec"]["cv"];
    assert_eq!(
        (cv["repeats"].as_u64(), cv["outer_folds"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(cv["seed"].as_u64(), Some(7));
    assert_eq!(pipeline["cv"]["fits"].as_u64(), Some(3));
    // Resolved: the renamed and extra columns in, the blank one out and reported.
    let resolved = &pipeline["cv"]["columns"];
    let features: Vec<&str> = resolved["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        features,
        [
            "original_shape_VoxelVolume",
            "sphericity",
            "original_firstorder_Mean",
            "original_firstorder_Entropy",
            "glcm_inverse_difference_moment",
            "original_glrlm_RunEntropy",
            "original_glszm_ZoneEntropy",
            "wavelet_LLH_firstorder_Mean",
        ]
    );
    assert_eq!(
        resolved["dropped"],
        serde_json::json!([{"column": "original_glcm_Contrast", "sites": [["S03", "missing_values"]]}])
    );

    // predictions.csv: every patient of the table once, in its order, with its label.
    let mut input = csv::Reader::from_path(&table).unwrap();
    let ih = input.headers().unwrap().clone();
    let col = |n: &str| ih.iter().position(|h| h == n).unwrap();
    let input: Vec<(String, String, String)> = input
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[col("patient_id")].to_string(),
                r[col("site")].to_string(),
                r[col("response")].to_string(),
            )
        })
        .collect();
    let mut pred = csv::Reader::from_path(sim.join("predictions.csv")).unwrap();
    assert_eq!(
        pred.headers().unwrap().iter().collect::<Vec<_>>(),
        ["patient_id", "site", "y", "p_ml", "p_clinical"]
    );
    let rows: Vec<csv::StringRecord> = pred.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), input.len());
    let mut ml = Vec::new();
    for (r, (id, site, y)) in rows.iter().zip(&input) {
        assert_eq!(
            (&r[0], &r[1], &r[2]),
            (id.as_str(), site.as_str(), y.as_str())
        );
        let p_clin: f64 = r[4].parse().unwrap();
        assert!((0.0..=1.0).contains(&p_clin), "{r:?}");
        if !r[3].is_empty() {
            let p: f64 = r[3].parse().unwrap();
            assert!((0.0..=1.0).contains(&p), "{r:?}");
            ml.push((p, &r[2] == "1"));
        }
    }
    assert!(
        ml.len() > input.len() / 2,
        "{} of {} scored",
        ml.len(),
        input.len()
    );
    // The aggregator's exact AUC (release_predictions) from the same probabilities.
    let models = pipeline["metrics"]["models"].as_array().unwrap();
    let auc_of = |name: &str| {
        models
            .iter()
            .find(|m| m["name"].as_str().is_some_and(|n| n.contains(name)))
            .unwrap_or_else(|| panic!("no {name} model in {models:?}"))["auc"]["value"]
            .as_f64()
            .unwrap()
    };
    let ours = mann_whitney_auc(&ml);
    assert!(
        (ours - auc_of("stacked ML")).abs() < 1e-12,
        "{ours} vs {}",
        auc_of("stacked ML")
    );
    let clin: Vec<(f64, bool)> = rows
        .iter()
        .map(|r| (r[4].parse().unwrap(), &r[2] == "1"))
        .collect();
    let ours = mann_whitney_auc(&clin);
    assert!(
        (ours - auc_of("clinical model")).abs() < 1e-12,
        "{ours} vs {}",
        auc_of("clinical model")
    );

    // selection.csv: the resolved features, frequencies over the 3 outer fits adding to top-k.
    let sel = std::fs::read_to_string(sim.join("selection.csv")).unwrap();
    let mut lines = sel.lines();
    assert_eq!(lines.next(), Some("feature,frequency"));
    let freq: Vec<(String, f64)> = lines
        .map(|l| {
            let (f, v) = l.rsplit_once(',').unwrap();
            (f.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(freq.len(), features.len());
    assert!(freq.windows(2).all(|w| w[0].1 >= w[1].1), "{freq:?}");
    assert!(freq.iter().all(
        |(f, v)| features.contains(&f.as_str()) && [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0].contains(v)
    ));
    let total: f64 = freq.iter().map(|(_, v)| v).sum();
    assert!((total - 5.0).abs() < 1e-12, "{total}");

    // timing.json: every stage, the rounds the study took, the seconds adding up.
    let timing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sim.join("timing.json")).unwrap()).unwrap();
    let stages = timing["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "columns", "combat", "zscore", "lasso", "train", "relay", "meta-fit", "score",
            "metrics"
        ]
    );
    let rounds = |n: &str| stages[names.iter().position(|x| *x == n).unwrap()]["rounds"].as_u64();
    assert_eq!(
        (
            rounds("columns"),
            rounds("combat"),
            rounds("zscore"),
            rounds("train")
        ),
        (Some(1), Some(4), Some(1), Some(1))
    );
    let sum_rounds: u64 = stages.iter().map(|s| s["rounds"].as_u64().unwrap()).sum();
    assert_eq!(Some(sum_rounds), timing["round_trips"].as_u64());
    let sum_secs: f64 = stages.iter().map(|s| s["seconds"].as_f64().unwrap()).sum();
    let total = timing["study_seconds"].as_f64().unwrap();
    assert!(
        total > 0.0 && (sum_secs - total).abs() < 1e-6,
        "{sum_secs} vs {total}"
    );
}

/// `aggregator status` shows a running pipeline study's repeats, folds, stage, % done, elapsed
/// time and ETA from the server's status.json.
#[test]
fn status_shows_where_a_pipeline_study_is_and_its_eta() {
    let dir = tempfile::tempdir().unwrap();
    let path = aggregator::server::status_path(&dir.path().join("state"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = aggregator::coordinator::now_ms();
    let stage = "repeats 11–20 of 100, folds 1–5 (batch 2/10); 50 of 500 outer fits done; LASSO + bootstrap round 40";
    let status = serde_json::json!({
        "updated_ms": now,
        "sites": [],
        "studies": [{
            "id": "surufatinib-response", "hash": "ab", "kind": "pipeline", "round": 600,
            "answered": 3, "sites": 7, "status": "running", "finished": false, "failed": false,
            "stage": stage, "fraction_done": 0.25,
        }],
        "timing": {"surufatinib-response": {
            "total_seconds": 55.0, "rounds": 599, "stages": [],
            "elapsed_seconds": 60.0, "eta_seconds": 180.0,
        }},
    });
    std::fs::write(&path, status.to_string()).unwrap();
    let out = aggregator(&["status", "--state", "state"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(stage), "{text}");
    assert!(
        text.contains("25 % done, 1 min 00 s elapsed, ETA 3 min 00 s"),
        "{text}"
    );
}
