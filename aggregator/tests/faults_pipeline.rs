//! Crash safety of a pipeline study (issue #8 item 1, the nested-CV study): the real
//! `aggregator serve` binary is SIGKILLed twice during one short pipeline study — once while
//! the LASSO + bootstrap stage runs and once while the meta-model (MLP L-BFGS + clinical IRLS)
//! is being fitted — and started again each time on the same state directory, with snapshots
//! every second so each restart loads a snapshot *and* replays logged rounds. The site agents
//! (in this process, their study memory on disk) keep running and reconnect. The finished
//! output must equal the undisturbed in-process run (`federation::local::run_local`) exactly:
//! the whole `output.json` (selections, selection counts, every AUC, CI, curve and survival
//! figure) compared as JSON numbers, i.e. bit for bit (persisted floats round-trip exactly), and
//! every round recorded once with one result per site (`traffic.csv`).
//!
//! Kept small for CI (debug build, 2 shared cores): the 7-site example cohort (102 patients),
//! 8 radiomics features, 1 repeat of 3 outer folds, small LASSO / search / MLP budgets.

mod common;

use aggregator::simulate::PooledTable;
use common::{Consortium, check_results, wait_until};
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const STUDY_ID: &str = "pipeline-kill";

fn table() -> PooledTable {
    PooledTable::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv"),
        "site",
    )
    .unwrap()
}

/// The first eight radiomics columns of the example cohort, one repeat, small budgets.
fn study_toml(table: &PooledTable) -> String {
    let features: Vec<String> = table
        .header
        .iter()
        .filter(|c| c.starts_with("original_"))
        .take(8)
        .map(|c| format!("{c:?}"))
        .collect();
    format!(
        r#"id = "{STUDY_ID}"
[analysis]
kind = "pipeline"
label_column = "response"
features = [{}]
[analysis.cv]
seed = 5
repeats = 1
outer_folds = 3
inner_folds = 2
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 12
bootstrap = 3
top_k = 3
[analysis.learners]
min_train_rows = 8
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.learners.search.forest]
n_trees = {{ kind = "fixed", value = 10.0 }}
[analysis.learners.search.gbm]
n_rounds = {{ kind = "fixed", value = 10.0 }}
[analysis.meta]
hidden = [3]
alpha = 0.01
[analysis.clinical]
numeric = ["ki67", "months_dx_to_tx"]
categorical = [{{ column = "grade", levels = ["G1", "G2"] }}]
[analysis.metrics]
bins = 100
bootstrap = 40
time_column = "pfs_months"
event_column = "pfs_event"
"#,
        features.join(", ")
    )
}

/// `(round, finished, stage)` of the study in the server's `status.json`.
fn progress(c: &Consortium) -> Option<(u64, bool, String)> {
    let text = std::fs::read_to_string(c.state.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let st = v["studies"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == STUDY_ID)?
        .clone();
    Some((
        st["round"].as_u64()?,
        st["finished"].as_bool()?,
        st["stage"].as_str().unwrap_or_default().to_string(),
    ))
}

#[test]
fn sigkill_during_the_lasso_and_during_the_meta_fit_then_restart_gives_the_undisturbed_output() {
    let t0 = Instant::now();
    let table = table();
    let toml = study_toml(&table);
    let spec = StudySpec::from_toml(&toml).unwrap();
    let hash = spec.hash().0;
    // The parameters-per-row guard is off (8 LASSO parameters exceed 0.33 × the smallest
    // site's training rows); the reference runs under the same policy.
    let reference = common::reference_with(
        &table,
        &spec,
        SitePolicy {
            min_count: 1,
            max_params_per_row: f64::INFINITY,
            allowed_studies: vec![hash.clone()],
            ..SitePolicy::default()
        },
    );
    eprintln!(
        "reference: {} rounds in {:.1} s",
        reference.round,
        t0.elapsed().as_secs_f64()
    );

    let c = Consortium::new(
        &table,
        &format!("min_count = 1\nmax_params_per_row = inf\nallowed_studies = [\"{hash}\"]\n"),
        // No periodic snapshot: what is durable at a kill is then only what the rules for
        // rounds make so (the stage's first round logged or snapshotted, its recomputable
        // rounds not), and the restart must rewind past the stage's unlogged rounds.
        1e6,
        // A little work per task, so each stage lasts several status updates.
        Duration::from_millis(25),
    );
    let mut server = c.serve(None);
    c.wait_listening(&mut server);
    c.submit(&toml);

    let mut kills = Vec::new();
    for stage in ["LASSO", "meta-model"] {
        let mut first = None;
        // A few rounds into the stage: its rounds are recomputable and not logged, so the
        // restart must rewind to before them and ask the sites again.
        wait_until(
            &format!("the {stage} stage"),
            Duration::from_secs(240),
            || {
                progress(&c).is_some_and(|(round, done, s)| {
                    let at = !done && s.contains(stage);
                    if at && first.is_none() {
                        first = Some(round);
                    }
                    at && first.is_some_and(|f| round >= f + 3)
                })
            },
        );
        server.0.kill().unwrap(); // SIGKILL: nothing flushed, no shutdown code
        server.0.wait().unwrap();
        let (round, done, at) = progress(&c).unwrap();
        assert!(!done, "the study finished before the kill");
        eprintln!("killed at round {round}: {at}");
        kills.push((round, at));
        let log_len = c.log().len();
        server = c.serve(None);
        wait_until("the restarted server", Duration::from_secs(60), || {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("the restarted aggregator exited ({status}):\n{}", c.log());
            }
            c.log()[log_len..].contains("aggregator listening")
        });
        let restart_log = c.log()[log_len..].to_string();
        let resumed: u64 = restart_log
            .split("resuming at round ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no 'resuming at round' after the restart:\n{restart_log}"));
        eprintln!("resumed at round {resumed}");
        assert!(
            resumed < round,
            "killed at round {round} of the {stage} stage, resumed at {resumed}: the stage's rounds are not logged, so the restart should have rewound and asked again"
        );
    }
    assert!(kills[0].0 < kills[1].0, "{kills:?}");

    let results = c.results(STUDY_ID);
    wait_until(
        "the restarted study to finish",
        Duration::from_secs(240),
        || results.join("study.json").exists(),
    );
    drop(server);
    check_results(&results, &reference, "pipeline killed twice");
    // Spelled out for the reader: the same selections as the reference.
    let output: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("output.json")).unwrap())
            .unwrap();
    let Some(federation::engine::StudyOutput::Pipeline(expected)) = &reference.output else {
        panic!("the reference is not a pipeline output")
    };
    assert_eq!(
        output["Pipeline"]["cv"]["selected_count"],
        serde_json::to_value(&expected.cv.selected_count).unwrap()
    );
    assert_eq!(expected.cv.fits, 3);
    eprintln!("whole test {:.1} s", t0.elapsed().as_secs_f64());
}
