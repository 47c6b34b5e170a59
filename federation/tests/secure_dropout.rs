//! Dropout in the masked rounds of Table 1, ComBat and standalone LASSO studies (issue #8 item
//! 5): with `on_masked_dropout = "continue_without_site"`, a site silent past a masked round's
//! deadline is left out and the study restarts over the survivors — Table 1 its masked summary
//! round, ComBat from its cross-products round (round 1), the LASSO every fit from its moments
//! round — and finishes with the result a run over the survivors alone gives: bit for bit the
//! secure run over the survivors (the masked sum of the same three sites' fixed-point vectors is
//! the same integers whatever the pads), and the plain run over the survivors within the
//! fixed-point precision of `federation::secure` (counts exactly). The dropped site's late
//! vector is refused as dropped, a survivor's answer to the abandoned attempt as stale; the
//! output names the dropped site with round and reason. Under the default policy, or with only
//! 3 sites to begin with, the study pauses instead. Every site runs in process through the gate
//! the agents use, on 4 sites of the shared example cohort.

mod common;

use federation::SiteId;
use federation::engine::{DroppedSite, EngineError, StudyOutput, StudyState, StudyStatus};
use federation::local::run_local;
use federation::secure::SumShape;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{MaskedDropout, StudySpec};
use federation::table::SiteTable;
use federation::task::{TaskBody, TaskResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The round deadline of the driven studies (ms); the clock below starts at 0.
const DEADLINE_MS: u64 = 60_000;

/// The cohort's first four sites (S01–S04, 21, 18, 16 and 14 patients). The site that goes
/// silent (S02) also holds one patient of grade "G3", a level no other site has: the restarted
/// rounds must not list it (Table 1's layout, ComBat's design), as a run without it would not.
fn four_sites() -> (BTreeMap<SiteId, SiteTable>, SiteId) {
    four_sites_with(|_, _, _| {})
}

/// [`four_sites`] with `edit(site, grade column, rows)` applied to each site's rows first.
fn four_sites_with(
    edit: impl Fn(&SiteId, usize, &mut Vec<Vec<String>>),
) -> (BTreeMap<SiteId, SiteTable>, SiteId) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let grade = header.iter().position(|h| h == "grade").unwrap();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[1].clone()).unwrap())
            .or_default()
            .push(row);
    }
    let silent = rows.keys().nth(1).unwrap().clone();
    rows.get_mut(&silent).unwrap()[0][grade] = "G3".into();
    let tables = rows
        .into_iter()
        .take(4)
        .map(|(s, mut rows)| {
            edit(&s, grade, &mut rows);
            let t = SiteTable::new(header.clone(), rows)
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s, t)
        })
        .collect();
    (tables, silent)
}

fn without(tables: &BTreeMap<SiteId, SiteTable>, gone: &SiteId) -> BTreeMap<SiteId, SiteTable> {
    tables
        .iter()
        .filter(|(s, _)| *s != gone)
        .map(|(s, t)| (s.clone(), t.clone()))
        .collect()
}

fn table1_toml() -> String {
    r#"
id = "dropout-table1"
[analysis]
kind = "table1"
label_column = "response"
variables = ["age", "sex", "ki67", "grade"]
categorical = ["sex", "grade"]
"#
    .into()
}

fn harmonize_toml() -> String {
    r#"
id = "dropout-combat"
[analysis]
kind = "harmonize"
features = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Sphericity", "max_diameter_mm"]
covariates = ["age", "grade"]
categorical = ["grade"]
"#
    .into()
}

fn lasso_toml() -> String {
    r#"
id = "dropout-lasso"
[analysis]
kind = "lasso"
label_column = "response"
features = ["max_diameter_mm", "original_firstorder_Mean", "original_glcm_Contrast", "original_glcm_Idm", "original_shape_Sphericity", "original_glszm_ZoneEntropy"]
nfolds = 3
nlambda = 20
bootstrap = 4
top_k = 2
seed = 7
"#
    .into()
}

/// `text` with secure aggregation on/off and the dropout rule (`None`: the default).
fn spec(text: &str, secure: bool, dropout: Option<&str>) -> StudySpec {
    let mut extra = String::new();
    if secure {
        extra += "secure_aggregation = true\n";
    }
    if let Some(d) = dropout {
        extra += &format!("on_masked_dropout = \"{d}\"\n");
    }
    StudySpec::from_toml(&text.replacen("[analysis]\n", &format!("[analysis]\n{extra}"), 1))
        .unwrap()
}

/// Runs `spec` to completion over `tables` (no dropout) and returns its output.
fn run(spec: StudySpec, tables: &BTreeMap<SiteId, SiteTable>) -> StudyOutput {
    let sites = tables
        .iter()
        .map(|(s, t)| (s.clone(), (t.clone(), common::open_policy())))
        .collect();
    let state = run_local(spec, &sites, 2000).unwrap();
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    state.output.unwrap()
}

/// The study driven by hand with a clock (every answer at 1 s) up to its `nth` masked round
/// (1-based), which every site but `silent` answers. Returns the state, the sites' memories,
/// the silent site's answer (computed, never delivered) and the others' answers to that round.
fn until_masked_round(
    spec: StudySpec,
    tables: &BTreeMap<SiteId, SiteTable>,
    silent: &SiteId,
    nth: usize,
) -> (
    StudyState,
    BTreeMap<SiteId, SiteMemory>,
    TaskResult,
    BTreeMap<SiteId, TaskResult>,
) {
    let mut state =
        StudyState::new(spec, tables.keys().cloned().collect(), 0, DEADLINE_MS).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut masked_seen = 0;
    loop {
        assert!(!state.status.is_finished(), "{:?}", state.status);
        let masked = state
            .task_for(silent)
            .is_some_and(|t| matches!(t.body, TaskBody::Masked(_)));
        if masked {
            masked_seen += 1;
        }
        let hold = masked && masked_seen == nth;
        let mut answered = BTreeMap::new();
        let mut late = None;
        for (s, t) in tables {
            let task = state.task_for(s).unwrap();
            let result = answer_with_memory(
                &task,
                t,
                &common::open_policy(),
                memories.entry(s.clone()).or_default(),
            )
            .result;
            if hold && s == silent {
                late = Some(result);
                continue;
            }
            answered.insert(s.clone(), result.clone());
            state.accept(s, result, 0, 1_000).unwrap();
        }
        if let Some(late) = late {
            return (state, memories, late, answered);
        }
    }
}

/// The common dropout scenario: 4 sites, `silent` misses the `nth` masked round. Checks the
/// transition (nothing within the deadline; past it the site is left out, the round restarts as
/// a new engine round over the survivors under one fresh round id, persisted and read back),
/// that the late vector is refused as dropped and a survivor's answer to the abandoned attempt
/// as stale, then lets the survivors finish. Returns the final state and the missed round.
fn dropout(
    spec: StudySpec,
    tables: &BTreeMap<SiteId, SiteTable>,
    silent: &SiteId,
    nth: usize,
) -> (StudyState, u32) {
    let (mut state, mut memories, late, first_attempt) =
        until_masked_round(spec, tables, silent, nth);
    let round = state.round;
    let TaskBody::Masked(abandoned) = state.task_for(silent).unwrap().body else {
        panic!("the silent site's task is masked")
    };
    assert_eq!(state.missing(), vec![silent.clone()]);
    // Within the deadline nothing happens.
    assert!(!state.tick(1_000 + DEADLINE_MS - 1_000));
    assert_eq!(state.round, round);
    // Past it: the silent site is left out and the round restarts as the next one without it.
    assert!(state.tick(100_000));
    assert_eq!(state.status, StudyStatus::Running);
    assert_eq!(state.round, round + 1);
    // The aggregator persists the transition before handing out the restarted round.
    let mut state: StudyState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert!(!state.sites.contains(silent));
    assert_eq!(state.sites.len(), tables.len() - 1);
    assert_eq!(state.dropped.len(), 1);
    assert_eq!(state.dropped[0].site, *silent);
    assert_eq!(state.dropped[0].round, round);
    assert!(
        state.dropped[0].reason.contains("deadline")
            && state.dropped[0]
                .reason
                .contains(&format!("masked round {round}")),
        "{}",
        state.dropped[0].reason
    );
    assert!(state.task_for(silent).is_none());
    let survivors = state.sites.clone();
    let mut round_ids = Vec::new();
    for s in &survivors {
        let TaskBody::Masked(m) = state.task_for(s).unwrap().body else {
            panic!("the restarted round is masked")
        };
        assert!(!m.round.contains(silent.as_str()));
        assert_eq!(m.round.n(), survivors.len());
        assert!(m.round.round_id > abandoned.round.round_id);
        round_ids.push(m.round.round_id);
    }
    round_ids.dedup();
    assert_eq!(round_ids.len(), 1, "one fresh round id for every survivor");
    // The late vector of the abandoned attempt is refused naming the round it missed, as is any
    // later result from the dropped site; a survivor's answer to the abandoned attempt is stale.
    match state.accept(silent, late.clone(), 0, 100_001) {
        Err(EngineError::Dropped { site, round: r, .. }) => {
            assert_eq!(site, *silent);
            assert_eq!(r, round);
        }
        other => panic!("the late vector was not refused as dropped: {other:?}"),
    }
    let mut relabelled = late;
    relabelled.round = state.round;
    assert!(matches!(
        state.accept(silent, relabelled, 0, 100_001),
        Err(EngineError::Dropped { .. })
    ));
    for (s, old) in &first_attempt {
        assert!(
            matches!(
                state.accept(s, old.clone(), 0, 100_001),
                Err(EngineError::Stale { .. })
            ),
            "{s}'s answer to the abandoned attempt was not refused as stale"
        );
    }
    assert_eq!(state.progress(), (0, survivors.len()));
    // The survivors finish the study; the dropped site is never asked again.
    let mut now = 100_002;
    while !state.status.is_finished() {
        assert!(state.round < 2000, "the study does not finish");
        assert!(state.task_for(silent).is_none());
        for s in &survivors {
            let task = state.task_for(s).unwrap();
            let result = answer_with_memory(
                &task,
                &tables[s],
                &common::open_policy(),
                memories.get_mut(s).unwrap(),
            )
            .result;
            state.accept(s, result, 0, now).unwrap();
            now += 1;
        }
    }
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    (state, round)
}

/// The output's record of the dropout: the site, the missed round and the reason.
fn assert_named(dropped: &[DroppedSite], silent: &SiteId, round: u32) {
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].site, *silent);
    assert_eq!(dropped[0].round, round);
    assert!(dropped[0].reason.contains("deadline"), "{dropped:?}");
}

/// Walks two JSON trees: numbers within `rel`·max(|a|,|b|) + `abs`, everything else equal;
/// keys in `skip` are not compared.
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
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, rel, abs, skip, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            for (k, v) in x.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
                close(v, &y[k], rel, abs, skip, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// Table 1: the site silent in the masked summary round is left out, the summary restarts over
/// the survivors with their levels only (no "G3"), and the table equals the survivors' own:
/// bit for bit the secure run, counts exactly and moments within 3 · 2^−25 of the plain run.
#[test]
fn table1_a_site_missing_the_masked_summary_is_left_out_and_the_table_is_the_survivors() {
    let (tables, silent) = four_sites();
    let (state, round) = dropout(
        spec(&table1_toml(), true, Some("continue_without_site")),
        &tables,
        &silent,
        1,
    );
    assert_eq!(round, 2, "the summary round follows the key round");
    let Some(StudyOutput::Table1(mut out)) = state.output.clone() else {
        panic!("a Table 1 output")
    };
    assert_named(&out.dropped, &silent, round);
    assert_eq!(out.dropped, state.dropped);
    assert!(!out.sites.contains(&silent));
    let has_g3 = |o: &federation::table1::Table1Output| {
        o.variables.iter().any(|v| {
            matches!(v, federation::table1::VariableResult::Categorical { levels, .. }
                if levels.iter().any(|l| l.level == "G3"))
        })
    };
    assert!(
        !has_g3(&out),
        "a level only the dropped site held is listed"
    );
    // With the silent site the table would list G3 (the check above can fail).
    let Some(StudyOutput::Table1(all)) = Some(run(spec(&table1_toml(), true, None), &tables))
    else {
        panic!("a Table 1 output")
    };
    assert!(has_g3(&all));

    let survivors = without(&tables, &silent);
    out.dropped.clear();
    let StudyOutput::Table1(alone) = run(spec(&table1_toml(), true, None), &survivors) else {
        panic!("a Table 1 output")
    };
    assert_eq!(out, alone, "the secure run over the survivors alone");
    let StudyOutput::Table1(plain) = run(spec(&table1_toml(), false, None), &survivors) else {
        panic!("a Table 1 output")
    };
    assert_eq!(out.n, plain.n);
    assert_eq!(out.label_missing, plain.label_missing);
    assert_eq!(out.histogram_rounds, plain.histogram_rounds);
    close(
        &serde_json::to_value(&out).unwrap(),
        &serde_json::to_value(&plain).unwrap(),
        // Σx, Σx² within 3 · 2^−25 of the plain sums: means, SDs and t statistics to ~1e−9.
        1e-7,
        1e-9,
        &["suppressed_by"],
        "table1",
    );
}

/// ComBat: the site silent in the second masked round (residuals; the pooled B already summed
/// its rows) is left out and the harmonisation restarts from the cross-products round with the
/// design rebuilt from the survivors' levels (its batch and its "G3" level gone). The model
/// equals the secure run over the survivors bit for bit, the plain run within 1e−6.
#[test]
fn combat_a_site_missing_a_masked_round_is_left_out_and_the_fit_restarts_from_round_one() {
    let (tables, silent) = four_sites();
    let (state, round) = dropout(
        spec(&harmonize_toml(), true, Some("continue_without_site")),
        &tables,
        &silent,
        2,
    );
    // Key round (with the levels), cross-products, then the residuals it missed.
    assert_eq!(round, 3);
    let Some(StudyOutput::Harmonize(mut out)) = state.output.clone() else {
        panic!("a ComBat output")
    };
    assert_named(&out.dropped, &silent, round);
    assert!(
        !out.model
            .global
            .fit
            .spec
            .batches
            .iter()
            .any(|b| b == silent.as_str()),
        "the dropped site's batch is in the design"
    );
    assert_eq!(out.model.batches.len(), 3);

    let survivors = without(&tables, &silent);
    out.dropped.clear();
    let StudyOutput::Harmonize(alone) = run(spec(&harmonize_toml(), true, None), &survivors) else {
        panic!("a ComBat output")
    };
    assert_eq!(out, alone, "the secure run over the survivors alone");
    let StudyOutput::Harmonize(plain) = run(spec(&harmonize_toml(), false, None), &survivors)
    else {
        panic!("a ComBat output")
    };
    // As in `secure_rounds.rs`: sums within 3 · 2^−25, the fit within 1e−6 (γ, δ near 0).
    close(
        &serde_json::to_value(&out).unwrap(),
        &serde_json::to_value(&plain).unwrap(),
        1e-6,
        1e-6,
        &[],
        "model",
    );
}

/// ComBat: a dropout in the first masked round (cross-products) restarts that round too.
#[test]
fn combat_a_site_missing_the_cross_products_round_is_left_out_too() {
    let (tables, silent) = four_sites();
    let (state, round) = dropout(
        spec(&harmonize_toml(), true, Some("continue_without_site")),
        &tables,
        &silent,
        1,
    );
    assert_eq!(round, 2);
    let Some(StudyOutput::Harmonize(mut out)) = state.output.clone() else {
        panic!("a ComBat output")
    };
    assert_named(&out.dropped, &silent, round);
    out.dropped.clear();
    let StudyOutput::Harmonize(alone) = run(
        spec(&harmonize_toml(), true, None),
        &without(&tables, &silent),
    ) else {
        panic!("a ComBat output")
    };
    assert_eq!(out, alone);
}

/// Standalone LASSO: the site silent in a masked IRLS round (the third masked round: the fits
/// are under way) is left out and every fit restarts from its moments round over the survivors.
/// The result equals the secure run over the survivors bit for bit, and the plain run in its
/// selection (λ.min, bootstrap frequencies and top-k exactly) with numbers within the
/// precision `secure_lasso.rs` measures (coefficients to the IRLS tolerance).
#[test]
fn lasso_a_site_missing_a_masked_round_is_left_out_and_every_fit_restarts_from_its_moments() {
    let (tables, silent) = four_sites();
    let study = spec(&lasso_toml(), true, Some("continue_without_site"));
    // The round it misses carries IRLS sums, not only moments.
    let (state, ..) = until_masked_round(study.clone(), &tables, &silent, 3);
    let TaskBody::Masked(m) = state.task_for(&silent).unwrap().body else {
        panic!("a masked round")
    };
    let SumShape::LassoSums { fits, .. } = &m.shape else {
        panic!("a LASSO layout")
    };
    assert!(
        fits.iter()
            .any(|f| !matches!(f.kind, federation::lasso::secure::SlotKind::Moments))
    );
    let (state, round) = dropout(study, &tables, &silent, 3);
    let Some(StudyOutput::Lasso(mut out)) = state.output.clone() else {
        panic!("a LASSO output")
    };
    assert_named(&out.dropped, &silent, round);

    let survivors = without(&tables, &silent);
    out.dropped.clear();
    let StudyOutput::Lasso(alone) = run(spec(&lasso_toml(), true, None), &survivors) else {
        panic!("a LASSO output")
    };
    assert_eq!(out, alone, "the secure run over the survivors alone");
    let StudyOutput::Lasso(plain) = run(spec(&lasso_toml(), false, None), &survivors) else {
        panic!("a LASSO output")
    };
    close(
        &serde_json::to_value(&out).unwrap(),
        &serde_json::to_value(&plain).unwrap(),
        1e-6,
        1e-7,
        &[],
        "lasso",
    );
}

/// Under the default policy a silent site pauses the study naming it, and its late vector
/// resumes it; with the option but only 3 sites to begin with (2 would remain), it pauses too.
#[test]
fn without_the_option_or_with_three_sites_a_masked_dropout_pauses() {
    let (tables, silent) = four_sites();
    let three: BTreeMap<SiteId, SiteTable> = tables.clone().into_iter().take(3).collect();
    for (text, nth) in [(table1_toml(), 1), (harmonize_toml(), 2), (lasso_toml(), 3)] {
        let (mut state, _, late, _) =
            until_masked_round(spec(&text, true, None), &tables, &silent, nth);
        let round = state.round;
        assert!(state.tick(100_000));
        assert_eq!(
            state.status,
            StudyStatus::Paused {
                missing: vec![silent.clone()],
                since_ms: 100_000
            },
            "{text}"
        );
        assert_eq!(state.round, round);
        assert!(state.dropped.is_empty());
        assert_eq!(state.sites.len(), 4);
        // The late vector completes the round: the study resumes as before.
        state.accept(&silent, late, 0, 100_001).unwrap();
        assert_eq!(state.status, StudyStatus::Running);
        assert_eq!(state.round, round + 1);

        let (mut state, ..) = until_masked_round(
            spec(&text, true, Some("continue_without_site")),
            &three,
            &silent,
            nth,
        );
        let round = state.round;
        assert!(state.tick(100_000));
        assert!(
            matches!(&state.status, StudyStatus::Paused { missing, .. } if *missing == vec![silent.clone()]),
            "{:?}",
            state.status
        );
        assert_eq!(state.round, round);
        assert!(state.dropped.is_empty());
        assert_eq!(state.sites.len(), 3);
    }
}

/// A restart the analysis cannot build pauses the study with its state unchanged: here the
/// survivors hold one grade only, so ComBat's design over them would have a single-level
/// categorical covariate. The silent site's late vector then completes the round as usual.
#[test]
fn a_restart_the_analysis_cannot_build_pauses_instead() {
    let (tables, silent) = four_sites_with(|site, grade, rows| {
        if site.as_str() != "S02" {
            for r in rows {
                r[grade] = "G1".into();
            }
        }
    });
    assert_eq!(silent.as_str(), "S02");
    let (mut state, _, late, _) = until_masked_round(
        spec(&harmonize_toml(), true, Some("continue_without_site")),
        &tables,
        &silent,
        1,
    );
    let round = state.round;
    let before = serde_json::to_string(&state).unwrap();
    assert!(state.tick(100_000));
    assert!(
        matches!(&state.status, StudyStatus::Paused { missing, .. } if *missing == vec![silent.clone()]),
        "{:?}",
        state.status
    );
    assert_eq!(state.round, round);
    assert!(state.dropped.is_empty());
    // Nothing but the status changed (the driver undid its restart).
    let mut paused = state.clone();
    paused.status = StudyStatus::Running;
    assert_eq!(serde_json::to_string(&paused).unwrap(), before);
    state.accept(&silent, late, 0, 100_001).unwrap();
    assert_eq!(state.status, StudyStatus::Running);
    assert_eq!(state.round, round + 1);
}

/// The option is part of the spec: in the hash when set, absent from the canonical JSON at its
/// default (existing hashes unchanged); an unknown value, or the option without secure
/// aggregation, is refused naming the fix.
#[test]
fn the_option_is_part_of_the_study_hash_and_bad_values_are_refused() {
    for text in [table1_toml(), harmonize_toml(), lasso_toml()] {
        let default = spec(&text, true, None);
        assert!(!default.canonical_json().contains("on_masked_dropout"));
        assert_eq!(spec(&text, true, Some("pause")).hash(), default.hash());
        assert_eq!(default.on_masked_dropout(), MaskedDropout::Pause);
        assert!(!default.continues_without_dropped_sites());
        let cont = spec(&text, true, Some("continue_without_site"));
        assert!(cont.canonical_json().contains("continue_without_site"));
        assert_ne!(cont.hash(), default.hash());
        assert!(cont.continues_without_dropped_sites());
        let back: StudySpec = serde_json::from_str(&cont.canonical_json()).unwrap();
        assert_eq!(back, cont);

        let bad = text.replacen(
            "[analysis]\n",
            "[analysis]\nsecure_aggregation = true\non_masked_dropout = \"skip\"\n",
            1,
        );
        let e = StudySpec::from_toml(&bad).unwrap_err().to_string();
        assert!(
            e.contains("skip") && e.contains("pause") && e.contains("continue_without_site"),
            "{e}"
        );
        let plain = text.replacen(
            "[analysis]\n",
            "[analysis]\non_masked_dropout = \"continue_without_site\"\n",
            1,
        );
        let e = StudySpec::from_toml(&plain).unwrap_err().to_string();
        assert!(e.contains("secure_aggregation = true"), "{e}");
    }
}
