//! Secure aggregation in real rounds (issue #8 item 5), every site in process through the same
//! gate the agents use: ComBat and Table 1 with `secure_aggregation = true` equal the plain runs
//! within the fixed-point precision; what the aggregator receives from one site is
//! indistinguishable from uniform and does not decode to that site's statistics; a masked round
//! restarts without a dropped site; sites refuse plain summed requests of a secure study, and
//! plain studies under `require_secure_aggregation`.

mod common;

use federation::engine::{StudyOutput, StudyState};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::secure::{MASKED_SUM_SITE, SecureRounds, SumShape};
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec, Table1Spec};
use federation::table::SiteTable;
use federation::task::{ResultBody, Task, TaskBody};
use federation::{SiteId, StudyId};
use serde_json::Value;
use std::collections::BTreeMap;

fn tables() -> BTreeMap<SiteId, SiteTable> {
    common::cohort_with_ids()
}

fn harmonize(secure: bool) -> StudySpec {
    StudySpec {
        id: StudyId::new("h").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: secure,
            features: [
                "original_firstorder_Mean",
                "original_glcm_Contrast",
                "original_shape_Sphericity",
                "max_diameter_mm",
            ]
            .map(String::from)
            .to_vec(),
            batch_column: None,
            covariates: vec!["age".into(), "grade".into()],
            categorical: vec!["grade".into()],
            mode: HarmonizeMode::Parametric,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn table1(secure: bool) -> StudySpec {
    StudySpec {
        id: StudyId::new("t").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: secure,
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: ["age", "sex", "ki67", "grade"].map(String::from).to_vec(),
            categorical: vec!["sex".into(), "grade".into()],
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn policy(min_count: u64) -> SitePolicy {
    SitePolicy {
        min_count,
        allow_all_studies: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

fn run(spec: StudySpec, min_count: u64) -> StudyState {
    let sites = tables()
        .into_iter()
        .map(|(s, t)| (s, (t, policy(min_count))))
        .collect();
    let state = run_local(spec, &sites, 200).unwrap();
    assert!(state.output.is_some(), "{:?}", state.status);
    state
}

/// Walks two JSON trees: numbers within `rel`·max(|a|,|b|) + `abs`, everything else equal;
/// keys in `skip` are not compared. Returns the largest relative difference seen.
fn close(a: &Value, b: &Value, rel: f64, abs: f64, skip: &[&str], path: &str) -> f64 {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let d = (x - y).abs();
            assert!(
                d <= rel * x.abs().max(y.abs()) + abs,
                "{path}: {x} vs {y} (difference {d:e})"
            );
            d / x.abs().max(y.abs()).max(1e-300)
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            x.iter()
                .zip(y)
                .enumerate()
                .map(|(i, (x, y))| close(x, y, rel, abs, skip, &format!("{path}[{i}]")))
                .fold(0.0, f64::max)
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            x.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| close(v, &y[k], rel, abs, skip, &format!("{path}.{k}")))
                .fold(0.0, f64::max)
        }
        _ => {
            assert_eq!(a, b, "{path}");
            0.0
        }
    }
}

/// ComBat's masked reals travel in the wide three-limb fixed point (`federation::secure`,
/// precision 2^−56 per site): the masked sums differ from the plain ones by less than f64's own
/// rounding of them, so what is left is the order of additions (≈ 1e−12 relative on the fit:
/// `secure_harmonize_wide.rs` measures 3.4e−12): checked at 1e−10.
#[test]
fn secure_combat_equals_the_plain_run_within_the_fixed_point_precision() {
    let plain = run(harmonize(false), 1);
    let secure = run(harmonize(true), 1);
    // One round more: the key round rides on the levels round, so the count is the same.
    assert_eq!(plain.round, secure.round);
    let (Some(StudyOutput::Harmonize(p)), Some(StudyOutput::Harmonize(s))) =
        (&plain.output, &secure.output)
    else {
        panic!("harmonize outputs expected")
    };
    let worst = close(
        &serde_json::to_value(p).unwrap(),
        &serde_json::to_value(s).unwrap(),
        1e-10,
        // Quantities on the standardised scale (γ, δ) sit near 0: absolute bound.
        1e-10,
        &[],
        "model",
    );
    // Not bit-identical (the encoding rounds): the masked run really went through fixed point.
    assert!(worst > 0.0, "{worst}");
    // Harmonised values of every site agree too.
    for (site, t) in tables() {
        let rows = federation::harmonize::site_rows(
            &t,
            match &harmonize(true).analysis {
                AnalysisSpec::Harmonize(h) => h,
                _ => unreachable!(),
            },
            &federation::task::BatchSource::Label(site.to_string()),
        )
        .unwrap();
        let a = p.model.apply(&rows.view()).unwrap();
        let b = s.model.apply(&rows.view()).unwrap();
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(
                (x - y).abs() <= 1e-10 * x.abs().max(1.0),
                "{site}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn secure_table1_equals_the_plain_run_counts_exactly_moments_within_precision() {
    for min_count in [1, 5] {
        let plain = run(table1(false), min_count);
        let secure = run(table1(true), min_count);
        let (Some(StudyOutput::Table1(p)), Some(StudyOutput::Table1(s))) =
            (&plain.output, &secure.output)
        else {
            panic!("table1 outputs expected")
        };
        // Counts are exact (F = 0): n per column, level counts, missing counts.
        assert_eq!(p.n, s.n);
        assert_eq!(p.label_missing, s.label_missing);
        close(
            &serde_json::to_value(p).unwrap(),
            &serde_json::to_value(s).unwrap(),
            // Σx, Σx² are within 7 · 2^-25 ≈ 2e-7 of the plain sums: means, SDs and t statistics
            // agree to ~1e-9 relative here; 1e-7 leaves room for other data.
            1e-7,
            1e-9,
            &["suppressed_by"],
            "table1",
        );
        // The aggregator cannot say which site suppressed a cell, only that one did.
        for (vp, vs) in p.variables.iter().zip(&s.variables) {
            let by = |v: &federation::table1::VariableResult| match v {
                federation::table1::VariableResult::Continuous { suppressed_by, .. }
                | federation::table1::VariableResult::Categorical { suppressed_by, .. } => {
                    suppressed_by.clone()
                }
            };
            let (bp, bs) = (by(vp), by(vs));
            assert_eq!(bp.is_empty(), bs.is_empty());
            assert!(bs.iter().all(|s| s.as_str() == MASKED_SUM_SITE));
        }
        if min_count == 5 {
            assert!(
                p.variables.iter().any(|v| matches!(v,
                    federation::table1::VariableResult::Categorical { suppressed_by, .. } if !suppressed_by.is_empty())),
                "the min_count 5 case must exercise suppression"
            );
        }
    }
}

/// Drives a study by hand, collecting every site's result of every round as the aggregator
/// receives it.
/// Per round: each site's task and answer as the aggregator saw them.
type Rounds = Vec<BTreeMap<SiteId, (Task, ResultBody)>>;

fn drive(spec: StudySpec) -> (StudyState, Rounds) {
    let tables = tables();
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut rounds = Vec::new();
    while !state.status.is_finished() {
        let mut got = BTreeMap::new();
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let memory = memories.entry(site.clone()).or_default();
            let result = answer_with_memory(&task, table, &policy(1), memory).result;
            got.insert(site.clone(), (task, result.body.clone()));
            state.accept(site, result, 0, 0).unwrap();
        }
        rounds.push(got);
    }
    (state, rounds)
}

/// What one site sends in a masked round: not its statistics. Its own plain cross-products,
/// encoded in the round's layout, differ from the masked vector in (almost) every element; the
/// masked elements are spread over the whole ring (their top 4 bits fill 16 buckets evenly,
/// χ² with 15 df far below the 0.001 critical value 37.7) while the plain encoding of
/// statistics sits near 0 (top bits 0000 or 1111); and the sum of all sites but one is still
/// masked garbage, not the partial sum.
#[test]
fn the_aggregator_cannot_recover_one_sites_contribution() {
    let (state, rounds) = drive(harmonize(true));
    assert!(matches!(state.output, Some(StudyOutput::Harmonize(_))));
    let masked_round = rounds
        .iter()
        .find(|r| r.values().all(|(_, b)| matches!(b, ResultBody::Masked(_))))
        .expect("a masked round");
    let tables = tables();
    let mut buckets = [0usize; 16];
    let mut total = 0usize;
    let mut plain_low = 0usize;
    let mut plain_total = 0usize;
    for (site, (task, body)) in masked_round {
        let ResultBody::Masked(v) = body else {
            unreachable!()
        };
        let TaskBody::Masked(m) = &task.body else {
            panic!("a masked task")
        };
        // The site's own plain answer and its fixed-point encoding (what masking hides).
        let spec = match &harmonize(true).analysis {
            AnalysisSpec::Harmonize(h) => h.clone(),
            _ => unreachable!(),
        };
        let plain =
            federation::harmonize::site_answer(&tables[site], &spec, &m.inner, &policy(1)).unwrap();
        let parts = m.shape.encode(&plain).unwrap();
        let refs: Vec<&[f64]> = parts.iter().map(Vec::as_slice).collect();
        let encoded = m.shape.layout().encode(&refs, m.round.n()).unwrap();
        assert_eq!(encoded.len(), v.values.len());
        let same = encoded
            .iter()
            .zip(&v.values)
            .filter(|(a, b)| a == b)
            .count();
        assert!(same <= 1, "site {site}: {same} elements sent in clear");
        for &x in &v.values {
            buckets[(x >> 60) as usize] += 1;
            total += 1;
        }
        for &x in &encoded {
            plain_total += 1;
            if x >> 60 == 0 || x >> 60 == 15 {
                plain_low += 1;
            }
        }
        // Decoding the masked vector as if it were plain gives nothing like the statistics.
        let decoded = m.shape.layout().decode(&v.values).unwrap();
        let w = &parts[1];
        let close = decoded[1]
            .iter()
            .zip(w)
            .filter(|(a, b)| (*a - *b).abs() < 1e-3 * b.abs().max(1.0))
            .count();
        assert_eq!(
            close, 0,
            "site {site}: masked W'W decodes near the plain one"
        );
    }
    assert_eq!(
        plain_low, plain_total,
        "plain encodings are small ring elements"
    );
    let expected = total as f64 / 16.0;
    let chi2: f64 = buckets
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(total >= 16 * 20, "{total} elements");
    assert!(
        chi2 < 37.7,
        "masked elements are not uniform: χ² = {chi2}, {buckets:?}"
    );

    // All sites but one: their wrapping sum is still masked by the pads shared with the last.
    let mut partial = vec![0u64; total / masked_round.len()];
    let mut partial_plain = vec![0u64; partial.len()];
    for (site, (task, body)) in masked_round.iter().skip(1) {
        let ResultBody::Masked(v) = body else {
            unreachable!()
        };
        let TaskBody::Masked(m) = &task.body else {
            unreachable!()
        };
        let spec = match &harmonize(true).analysis {
            AnalysisSpec::Harmonize(h) => h.clone(),
            _ => unreachable!(),
        };
        let plain =
            federation::harmonize::site_answer(&tables[site], &spec, &m.inner, &policy(1)).unwrap();
        let parts = m.shape.encode(&plain).unwrap();
        let refs: Vec<&[f64]> = parts.iter().map(Vec::as_slice).collect();
        let encoded = m.shape.layout().encode(&refs, m.round.n()).unwrap();
        for i in 0..partial.len() {
            partial[i] = partial[i].wrapping_add(v.values[i]);
            partial_plain[i] = partial_plain[i].wrapping_add(encoded[i]);
        }
    }
    let same = partial
        .iter()
        .zip(&partial_plain)
        .filter(|(a, b)| a == b)
        .count();
    assert!(same <= 1, "{same} elements of a partial sum unmasked");
}

/// A masked round whose site drops out restarts without it under a fresh round id; the
/// survivors' sum is exact, a late vector from the first attempt is refused, and a site refuses
/// to re-mask a *different* answer under a round id it used.
#[test]
fn a_masked_round_restarts_without_a_dropped_site() {
    let tables = tables();
    let spec = table1(true);
    let sites: Vec<SiteId> = tables.keys().cloned().collect();
    let mut state = StudyState::new(spec.clone(), sites.clone(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    // The key round, answered by everyone.
    let mut key_results = BTreeMap::new();
    for (site, table) in &tables {
        let task = state.task_for(site).unwrap();
        let r = answer_with_memory(
            &task,
            table,
            &policy(1),
            memories.entry(site.clone()).or_default(),
        );
        key_results.insert(site.clone(), r.result.body.clone());
        state.accept(site, r.result, 0, 0).unwrap();
    }
    // The aggregator half, replayed outside the engine to drop a site from the masked round.
    let mut secure = SecureRounds::new(&spec.analysis, &sites);
    let inner = secure.on_key_round(&key_results).unwrap();
    assert_eq!(inner.len(), sites.len());
    let masked_tasks: BTreeMap<SiteId, TaskBody> = sites
        .iter()
        .map(|s| (s.clone(), state.task_for(s).unwrap().body))
        .collect();
    let TaskBody::Masked(first) = masked_tasks.values().next().unwrap() else {
        panic!("the engine's second round is masked")
    };
    let shape: SumShape = first.shape.clone();
    let summary: BTreeMap<SiteId, TaskBody> = masked_tasks
        .iter()
        .map(|(s, t)| match t {
            TaskBody::Masked(m) => (s.clone(), (*m.inner).clone()),
            _ => unreachable!(),
        })
        .collect();
    let attempt = secure.masked(summary.clone(), shape.clone()).unwrap();
    let wrap = |body: TaskBody| Task {
        study_id: spec.id.clone(),
        study_hash: spec.hash(),
        study_spec_json: spec.canonical_json(),
        round: 2,
        body,
    };
    let dropped = sites[3].clone();
    let mut first_attempt = BTreeMap::new();
    for (site, body) in &attempt {
        let r = answer_with_memory(
            &wrap(body.clone()),
            &tables[site],
            &policy(1),
            memories.get_mut(site).unwrap(),
        );
        assert!(
            matches!(r.result.body, ResultBody::Masked(_)),
            "{:?}",
            r.result.body
        );
        first_attempt.insert(site.clone(), r.result.body);
    }
    // Without the dropped site the partial sum does not open.
    let mut without = first_attempt.clone();
    let late = without.remove(&dropped).unwrap();
    let mut probe = secure.clone();
    assert!(probe.open_sum(&without).unwrap_err().contains("incomplete"));
    // Restart without it: fresh round id, the survivors re-mask their unchanged answers.
    let survivors_inner: BTreeMap<SiteId, TaskBody> = summary
        .iter()
        .filter(|(s, _)| **s != dropped)
        .map(|(s, t)| (s.clone(), t.clone()))
        .collect();
    let restart = secure
        .restart_without(std::slice::from_ref(&dropped), survivors_inner)
        .unwrap();
    assert_eq!(restart.len(), sites.len() - 1);
    let mut second = BTreeMap::new();
    for (site, body) in &restart {
        let TaskBody::Masked(m) = body else {
            unreachable!()
        };
        assert!(!m.round.contains(dropped.as_str()));
        let r = answer_with_memory(
            &wrap(body.clone()),
            &tables[site],
            &policy(1),
            memories.get_mut(site).unwrap(),
        );
        second.insert(site.clone(), r.result.body);
    }
    // A late vector from the first attempt is refused.
    let mut with_late = second.clone();
    with_late.insert(dropped.clone(), late);
    assert!(secure.clone().open_sum(&with_late).is_err());
    let sum = secure.open_sum(&second).unwrap();
    let ResultBody::Table1Summary(pooled) = &sum[&SiteId::new(MASKED_SUM_SITE).unwrap()] else {
        panic!("a pooled summary")
    };
    // The survivors' plain answers, summed in the clear, give the same group sizes.
    let mut n = [0u64; 2];
    for (site, table) in &tables {
        if *site == dropped {
            continue;
        }
        let plain_spec = table1(false);
        let plain_task = Task {
            study_id: plain_spec.id.clone(),
            study_hash: plain_spec.hash(),
            study_spec_json: plain_spec.canonical_json(),
            round: 2,
            body: summary[site].clone(),
        };
        let plain = answer_with_memory(&plain_task, table, &policy(1), &mut SiteMemory::default());
        let ResultBody::Table1Summary(s) = plain.result.body else {
            panic!("{:?}", plain.result.body)
        };
        for g in 0..2 {
            n[g] += s.group_n[g].value().unwrap();
        }
    }
    assert_eq!(pooled.group_n.map(|c| c.value().unwrap()), n);

    // Re-masking a different answer under a used round id is refused by the site.
    let (site, body) = restart.iter().next().unwrap();
    let other_table = tables
        .values()
        .find(|t| t.n_rows() != tables[site].n_rows())
        .unwrap();
    let r = answer_with_memory(
        &wrap(body.clone()),
        other_table,
        &policy(1),
        memories.get_mut(site).unwrap(),
    );
    let ResultBody::Failure(f) = r.result.body else {
        panic!("{:?}", r.result.body)
    };
    assert!(
        f.message.contains("already used") || f.message.contains("differencing"),
        "{}",
        f.message
    );
}

#[test]
fn sites_refuse_plain_sums_of_a_secure_study_and_plain_studies_under_require_secure_aggregation() {
    let tables = tables();
    let (site, table) = tables.iter().next().unwrap();
    let summary = TaskBody::Table1Summary(federation::task::Table1SummaryTask {
        continuous: vec!["age".into(), "ki67".into()],
        categorical: vec!["sex".into(), "grade".into()],
    });
    let task = |spec: &StudySpec| Task {
        study_id: spec.id.clone(),
        study_hash: spec.hash(),
        study_spec_json: spec.canonical_json(),
        round: 1,
        body: summary.clone(),
    };
    // A secure study's spec says masked: a plain summary request is refused.
    let r = answer_with_memory(
        &task(&table1(true)),
        table,
        &policy(1),
        &mut SiteMemory::default(),
    );
    let ResultBody::Failure(f) = r.result.body else {
        panic!("{site}: {:?}", r.result.body)
    };
    assert!(
        f.message.contains("asks for secure aggregation"),
        "{}",
        f.message
    );
    // A plain study at a site whose policy requires masking: refused, naming the setting.
    let strict = SitePolicy {
        require_secure_aggregation: true,
        ..policy(1)
    };
    let r = answer_with_memory(
        &task(&table1(false)),
        table,
        &strict,
        &mut SiteMemory::default(),
    );
    let ResultBody::Failure(f) = r.result.body else {
        panic!("{:?}", r.result.body)
    };
    assert!(
        f.message.contains("require_secure_aggregation = true"),
        "{}",
        f.message
    );
    // The same site takes part in the secure study.
    let sites = tables
        .into_iter()
        .map(|(s, t)| (s, (t, strict.clone())))
        .collect();
    let state = run_local(table1(true), &sites, 200).unwrap();
    assert!(
        matches!(state.output, Some(StudyOutput::Table1(_))),
        "{:?}",
        state.status
    );
    // The policy parses from policy.toml.
    let p = SitePolicy::from_toml("require_secure_aggregation = true").unwrap();
    assert!(p.require_secure_aggregation);
    assert!(
        !SitePolicy::from_toml("")
            .unwrap()
            .require_secure_aggregation
    );
}

/// Fewer than 3 sites: the study fails after the key round, naming the minimum (with two sites
/// each could read the other's statistics off the sum).
#[test]
fn secure_aggregation_needs_three_sites() {
    let sites: BTreeMap<SiteId, (SiteTable, SitePolicy)> = tables()
        .into_iter()
        .take(2)
        .map(|(s, t)| (s, (t, policy(1))))
        .collect();
    let state = run_local(table1(true), &sites, 10).unwrap();
    let federation::engine::StudyStatus::Failed { reason } = &state.status else {
        panic!("{:?}", state.status)
    };
    assert!(reason.contains("policy minimum is 3"), "{reason}");
}

/// The spec option is part of the hash only when on: existing study hashes do not change.
#[test]
fn the_option_leaves_existing_study_hashes_alone() {
    assert!(
        !table1(false)
            .canonical_json()
            .contains("secure_aggregation")
    );
    assert!(
        table1(true)
            .canonical_json()
            .contains("\"secure_aggregation\":true")
    );
    assert_ne!(table1(false).hash(), table1(true).hash());
    let toml = "id = \"t\"\n[analysis]\nkind = \"table1\"\nlabel_column = \"response\"\nvariables = [\"age\"]\nsecure_aggregation = true\n";
    assert!(StudySpec::from_toml(toml).unwrap().secure_aggregation());
}

/// Every site restarts between rounds (its memory written as JSON and read back, as the agent
/// does): the pending key of the key round and the session of the masked rounds survive, the
/// output equals an uninterrupted run's, and a masked round re-asked after a restart (the reply
/// was lost) is answered with the identical vector, which the engine takes as a duplicate.
#[test]
fn secure_sessions_survive_site_restarts_and_retries_are_identical() {
    let tables = tables();
    let spec = harmonize(true);
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut disk: BTreeMap<SiteId, String> = BTreeMap::new();
    let mut retried = 0;
    while !state.status.is_finished() {
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let mut memory: SiteMemory = disk
                .get(site)
                .map(|j| serde_json::from_str(j).unwrap())
                .unwrap_or_default();
            let result = answer_with_memory(&task, table, &policy(1), &mut memory).result;
            let dirty = memory.take_dirty();
            let json = serde_json::to_string(&memory).unwrap();
            if matches!(task.body, TaskBody::SecureKeys(_)) {
                assert!(dirty, "a new key must be persisted");
                assert!(json.contains("pending"), "{json:.300}");
            }
            disk.insert(site.clone(), json);
            if matches!(result.body, ResultBody::Masked(_)) {
                // The reply was lost: the restarted site answers the same task again.
                let mut again: SiteMemory = serde_json::from_str(&disk[site]).unwrap();
                let repeat = answer_with_memory(&task, table, &policy(1), &mut again).result;
                assert_eq!(
                    repeat, result,
                    "site {site}: a retried masked answer differs"
                );
                retried += 1;
                state.accept(site, result, 0, 0).unwrap();
                assert_eq!(
                    state.accept(site, repeat, 0, 0).unwrap(),
                    federation::engine::Accepted::Duplicate
                );
            } else {
                state.accept(site, result, 0, 0).unwrap();
            }
        }
    }
    assert_eq!(retried, 2 * tables.len(), "two masked rounds");
    let reference = run(harmonize(true), 1);
    assert_eq!(state.output, reference.output);
}
