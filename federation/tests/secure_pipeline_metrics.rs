//! The pipeline's metrics follow-up round under secure aggregation (issue #8 item 5), every site
//! in process through the same gate the agents use, on the shared 7-site example cohort with
//! its progression-free survival columns:
//! - the masked follow-up runs, and its paired DeLong test, Kaplan-Meier curves, log-rank test
//!   and unstratified Cox HR equal the pooled reference computed outside the protocol from the
//!   same patients' rows on the same score and time grids (within the fixed-point precision);
//!   with every bin holding one label the paired test equals the per-patient
//!   `stats::metrics::exact::paired_delong`;
//! - with `secure_min_count = 5`, the reference merges the pooled rows' tables the same way;
//! - one site's masked follow-up vector does not decode to its plain per-bin answer, while the
//!   sum of all vectors decodes to the sum of the plain answers;
//! - the report carries no "not computed under secure aggregation" note except the
//!   site-stratified Cox model's;
//! - a site missing the masked follow-up's deadline restarts the metrics from the score round
//!   over the survivors;
//! - on a hand-checked example, the packing censors follow-up beyond the shared grid's horizon
//!   at the horizon and counts the sites that withheld survival.

mod common;

use common::{cohort, spec_toml};
use federation::SiteId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::pipeline::PipelineOutput;
use federation::pipeline::metrics::{MetricsInputs, SECURE_TIME_BINS, TIME_GRID_STEP};
use federation::pipeline::site::site_inputs_cached;
use federation::pipeline::{StageResult, StageTask};
use federation::policy::SitePolicy;
use federation::secure::{SecureRounds, SumShape};
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, StudySpec};
use federation::task::{ResultBody, Task, TaskBody};
use stats::metrics::{
    MergeRule, MetricOptions, PooledScoreTable, ScoreGrid, SiteScoreTable, evaluate_pooled, exact,
    paired_delong_from_tables, site_cross_placements,
};
use stats::survival::{
    CoxTies, GroupTable, KmCi, NewtonOptions, SiteSurvivalTable, TimeResolution, TwoGroupTable,
    fit_cox_binary_pooled, kaplan_meier, log_rank, pool_survival,
};
use std::collections::BTreeMap;

fn policy(min_count: u64) -> SitePolicy {
    SitePolicy {
        min_count,
        ..common::policy(false)
    }
}

/// The common small pipeline study, secure, with the survival endpoint, a score grid of `bins`
/// bins and the pooled tables' minimum cell size.
fn spec(bins: u32, secure_min_count: u64) -> StudySpec {
    spec_with(bins, secure_min_count, "")
}

/// [`spec`] with more `[analysis]` lines.
fn spec_with(bins: u32, secure_min_count: u64, analysis: &str) -> StudySpec {
    let text = spec_toml(1).replacen(
        "kind = \"pipeline\"\n",
        &format!("kind = \"pipeline\"\nsecure_aggregation = true\n{analysis}"),
        1,
    ) + &format!(
        "[analysis.metrics]\nbins = {bins}\nbootstrap = 50\ntime_column = \"pfs_months\"\nevent_column = \"pfs_event\"\nsecure_min_count = {secure_min_count}\n"
    );
    StudySpec::from_toml(&text).unwrap()
}

/// Every round of a study driven by hand (all sites answer), with each site's task and answer.
type Rounds = Vec<BTreeMap<SiteId, (Task, ResultBody)>>;

fn drive(
    spec: &StudySpec,
    min_count: u64,
) -> (PipelineOutput, Rounds, BTreeMap<SiteId, SiteMemory>) {
    let tables = cohort();
    let mut state =
        StudyState::new(spec.clone(), tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut rounds = Vec::new();
    while !state.status.is_finished() {
        let mut got = BTreeMap::new();
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let memory = memories.entry(site.clone()).or_default();
            let result = answer_with_memory(&task, table, &policy(min_count), memory).result;
            got.insert(site.clone(), (task, result.body.clone()));
            state.accept(site, result, 0, 0).unwrap();
        }
        rounds.push(got);
    }
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    let output = match state.output {
        Some(StudyOutput::Pipeline(o)) => *o,
        other => panic!("unexpected output {other:?}"),
    };
    (output, rounds, memories)
}

/// The analysis set's rows over all sites, read from each site's own state (as only the site
/// could): (ML probability, clinical probability, responder, PFS time, event).
struct Rows {
    ml: Vec<f64>,
    clinical: Vec<f64>,
    labels: Vec<bool>,
    times: Vec<f64>,
    events: Vec<bool>,
}

fn rows(spec: &StudySpec, memories: &BTreeMap<SiteId, SiteMemory>) -> Rows {
    let AnalysisSpec::Pipeline(p) = &spec.analysis else {
        unreachable!()
    };
    let mut out = Rows {
        ml: vec![],
        clinical: vec![],
        labels: vec![],
        times: vec![],
        events: vec![],
    };
    for (site, table) in cohort() {
        let inputs = site_inputs_cached(&table, p, site.as_str()).unwrap();
        let state = memories[&site].studies.get(&spec.hash().0).unwrap();
        let inp = MetricsInputs::from_state(&inputs, state);
        let surv = inp.survival.clone().unwrap().unwrap();
        let clin = inp.clinical.as_ref().unwrap();
        for i in 0..inp.labels.len() {
            if let (Some(a), Some(b)) = (inp.ml[i], clin[i]) {
                out.ml.push(a);
                out.clinical.push(b);
                out.labels.push(inp.labels[i]);
                out.times.push(surv.times[i]);
                out.events.push(surv.events[i]);
            }
        }
    }
    out
}

/// The shared time grid's points (the horizon is the last).
fn time_grid() -> Vec<f64> {
    (1..=SECURE_TIME_BINS as usize)
        .map(|i| i as f64 * TIME_GRID_STEP)
        .collect()
}

/// The pooled reference of one grouping from the rows: the grid table merged to `min_count`
/// exactly as a site merges its own (`SiteSurvivalTable::build`), then KM, log-rank, Cox.
struct SurvivalRef {
    n: [u64; 2],
    events: [u64; 2],
    median: [Option<f64>; 2],
    chi2: f64,
    hr: f64,
}

fn survival_ref(r: &Rows, groups: &[usize], min_count: u64) -> SurvivalRef {
    let t = SiteSurvivalTable::build(
        &r.times,
        &r.events,
        groups,
        2,
        &TimeResolution::Grid(time_grid()),
        min_count,
        MergeRule::CellTotal,
    )
    .unwrap();
    let pooled = pool_survival(&[t]).unwrap();
    let km: Vec<_> = pooled
        .iter()
        .map(|g| kaplan_meier(g, KmCi::LogLog, 0.95).unwrap())
        .collect();
    let two = TwoGroupTable::align(&pooled[0], &pooled[1]);
    let cox = fit_cox_binary_pooled(&two, CoxTies::Efron, &NewtonOptions::default()).unwrap();
    SurvivalRef {
        n: [km[0].n, km[1].n],
        events: [km[0].events, km[1].events],
        median: [km[0].median, km[1].median],
        chi2: log_rank(&two).unwrap().statistic,
        hr: cox.coefficients[0].hazard_ratio,
    }
}

fn check_survival(out: &PipelineOutput, which: &str, want: &SurvivalRef) {
    let s = out
        .metrics
        .survival
        .iter()
        .find(|s| s.grouping.starts_with(which))
        .unwrap_or_else(|| panic!("no survival by {which}: {:?}", out.metrics.notes));
    assert_eq!(s.curves.len(), 2);
    for g in 0..2 {
        assert_eq!(s.curves[g].n, want.n[g], "{which}: group {g} patients");
        assert_eq!(
            s.curves[g].events, want.events[g],
            "{which}: group {g} events"
        );
        assert_eq!(s.curves[g].median.value, want.median[g], "{which}: median");
    }
    // Counts are exact, so everything computed from them is equal to round-off.
    assert!(
        (s.log_rank.statistic - want.chi2).abs() <= 1e-9 * want.chi2.max(1.0),
        "{which}: log-rank {} vs {}",
        s.log_rank.statistic,
        want.chi2
    );
    assert_eq!(s.cox.len(), 1, "{which}: only the pooled Cox model");
    assert_eq!(s.cox[0].model, "pooled (unstratified)");
    let hr = s.cox[0].hazard_ratio.value.unwrap();
    assert!(
        (hr - want.hr).abs() <= 1e-9 * want.hr,
        "{which}: HR {hr} vs {}",
        want.hr
    );
    eprintln!(
        "{which}: n {:?}, events {:?}, medians {:?}, log-rank χ² {} (ref {}), HR {hr} (ref {})",
        want.n, want.events, want.median, s.log_rank.statistic, want.chi2, want.hr
    );
}

/// The paired DeLong reference: the plain path's two-round computation on the pooled rows'
/// tables (one "site" holding every patient), merged to `min_count`.
fn paired_ref(r: &Rows, bins: u32, min_count: u64) -> stats::metrics::PairedDelong {
    let grid = ScoreGrid::new(bins).unwrap();
    let ta =
        SiteScoreTable::build(grid, &r.ml, &r.labels, min_count, MergeRule::CellTotal).unwrap();
    let tb = SiteScoreTable::build(
        grid,
        &r.clinical,
        &r.labels,
        min_count,
        MergeRule::CellTotal,
    )
    .unwrap();
    let (pa, pb) = (
        PooledScoreTable::pool(std::slice::from_ref(&ta)).unwrap(),
        PooledScoreTable::pool(std::slice::from_ref(&tb)).unwrap(),
    );
    let sums = site_cross_placements(
        &ta,
        &tb,
        &r.ml,
        &r.clinical,
        &r.labels,
        &pb.site_placements(&tb),
    )
    .unwrap();
    paired_delong_from_tables(&pa, &pb, &[(&ta, &sums)], 0.95).unwrap()
}

fn secure_notes_ok(out: &PipelineOutput) {
    let notes = &out.metrics.notes;
    let secure: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("under secure aggregation"))
        .collect();
    assert_eq!(secure.len(), 2, "{notes:?}");
    assert!(
        secure
            .iter()
            .all(|n| n.contains("site-stratified Cox model not computed under secure aggregation")),
        "{notes:?}"
    );
    assert!(
        !notes.iter().any(|n| n.contains("paired DeLong")),
        "{notes:?}"
    );
}

/// With `secure_min_count = 1` on a 20 000-bin grid every pooled cell is one bin holding one
/// label, so the pooled tables describe the patients exactly: the masked paired test equals
/// both the two-round table computation on the rows' tables and the per-patient DeLong; the
/// survival analyses equal those of the rows' grid tables.
#[test]
fn masked_follow_up_equals_the_pooled_reference_and_the_exact_paired_delong() {
    let bins = 20_000;
    let study = spec(bins, 1);
    let (out, rounds, memories) = drive(&study, 1);
    secure_notes_ok(&out);
    // The follow-up ran masked: one masked round with the follow-up shape, no plain metrics
    // round at all.
    assert!(rounds.iter().any(|r| r.values().all(|(t, _)| matches!(
        &t.body, TaskBody::Masked(m) if matches!(m.shape, SumShape::PipelineFollowUp(_))))));
    for r in &rounds {
        for (t, _) in r.values() {
            if let TaskBody::Pipeline(p) = &t.body {
                assert!(
                    !matches!(p.stage, StageTask::Metrics(_)),
                    "a plain metrics round"
                );
            }
        }
    }
    let r = rows(&study, &memories);
    let ml = &out.metrics.models[0];
    let clin = &out.metrics.models[1];
    assert_eq!(
        ml.auc_resolution_bound.unwrap_or(0.0),
        0.0,
        "every ML bin holds one label"
    );
    assert_eq!(
        clin.auc_resolution_bound.unwrap_or(0.0),
        0.0,
        "every clinical bin holds one label"
    );

    let cmp = &out.metrics.comparisons;
    assert_eq!(cmp.len(), 1, "{:?}", out.metrics.notes);
    let got = cmp[0].delong;
    let table = paired_ref(&r, bins, 1);
    let per_patient = exact::paired_delong(&r.ml, &r.clinical, &r.labels, 0.95).unwrap();
    eprintln!(
        "paired DeLong: masked Δ {} SE {} z {} p {}; rows' tables Δ {} SE {}; per patient Δ {} SE {}",
        got.difference,
        got.se_difference,
        got.z,
        got.p_value,
        table.difference,
        table.se_difference,
        per_patient.difference,
        per_patient.se_difference
    );
    for (name, want) in [("rows' tables", table), ("per patient", per_patient)] {
        // AUCs from counts and the cell order (Σp with 24 fractional bits moves no cell past
        // another): equal to round-off. The covariance from the cross sums with 32 bits: each
        // opened per-cell sum within 7 · 2^−33 ≈ 8e−10, times V^A ≤ 1, over ≤ 102 cells, over
        // n₁(n₁ − 1) ≥ 2000 per class: |Δcov| ≤ 2 · 102 · 8e−10 / 2000 ≈ 8e−11.
        assert!((got.auc_a - want.auc_a).abs() < 1e-12, "{name}: AUC A");
        assert!((got.auc_b - want.auc_b).abs() < 1e-12, "{name}: AUC B");
        assert!(
            (got.covariance - want.covariance).abs() < 8e-11,
            "{name}: covariance {} vs {}",
            got.covariance,
            want.covariance
        );
        assert!(
            (got.se_difference - want.se_difference).abs() < 1e-8 * want.se_difference,
            "{name}: SE {} vs {}",
            got.se_difference,
            want.se_difference
        );
        assert!((got.p_value - want.p_value).abs() < 1e-8, "{name}: p");
    }

    // Survival by observed response and by predicted group (pooled cell score ≥ the reported
    // cut-off: with one patient per cell, the patient's own probability).
    let response: Vec<usize> = r.labels.iter().map(|&y| usize::from(y)).collect();
    check_survival(&out, "observed response", &survival_ref(&r, &response, 1));
    let predicted: Vec<usize> = r.ml.iter().map(|&p| usize::from(p >= ml.cutoff)).collect();
    check_survival(&out, "predicted group", &survival_ref(&r, &predicted, 1));

    // Grid binning bias, measured against the per-patient (exact-time) analyses.
    let exact_two = |groups: &[usize]| {
        let pick = |g: usize| {
            let (t, e): (Vec<f64>, Vec<bool>) = (0..r.times.len())
                .filter(|&i| groups[i] == g)
                .map(|i| (r.times[i], r.events[i]))
                .unzip();
            GroupTable::from_patients(&t, &e).unwrap()
        };
        let (g0, g1) = (pick(0), pick(1));
        let two = TwoGroupTable::align(&g0, &g1);
        let cox = fit_cox_binary_pooled(&two, CoxTies::Efron, &NewtonOptions::default()).unwrap();
        let med = |g: &GroupTable| kaplan_meier(g, KmCi::LogLog, 0.95).unwrap().median;
        (
            cox.coefficients[0].hazard_ratio,
            log_rank(&two).unwrap().statistic,
            [med(&g0), med(&g1)],
        )
    };
    for (name, groups) in [
        ("observed response", &response),
        ("predicted group", &predicted),
    ] {
        let (hr, chi2, med) = exact_two(groups);
        let grid = survival_ref(&r, groups, 1);
        eprintln!(
            "grid bias, {name}: HR {} (exact times {hr}), log-rank χ² {} ({chi2}), medians {:?} ({med:?})",
            grid.hr, grid.chi2, grid.median
        );
        // Times move up by less than one step: medians by less than one step.
        for g in 0..2 {
            if let (Some(a), Some(b)) = (grid.median[g], med[g]) {
                assert!(
                    a >= b && a - b < TIME_GRID_STEP + 1e-12,
                    "{name}: median {a} vs {b}"
                );
            }
        }
    }
}

/// With `secure_min_count = 5` (sites at `min_count = 5`) the pooled score tables are merged on
/// the sum and the follow-up's cross sums to the merged ML cells, the survival tables to counts
/// of at least 5: the results equal the same merges applied to the pooled rows.
#[test]
fn merged_pooled_follow_up_equals_the_merged_reference() {
    let bins = 1000;
    let study = spec(bins, 5);
    let (out, _, memories) = drive(&study, 5);
    secure_notes_ok(&out);
    let r = rows(&study, &memories);
    let got = out.metrics.comparisons[0].delong;
    let want = paired_ref(&r, bins, 5);
    eprintln!(
        "merged: masked paired Δ {} SE {} vs rows' tables Δ {} SE {}",
        got.difference, got.se_difference, want.difference, want.se_difference
    );
    // Cell means from Σp with 24 fractional bits: the AUCs to 1e−6, the rest follows.
    assert!((got.auc_a - want.auc_a).abs() < 1e-6);
    assert!((got.auc_b - want.auc_b).abs() < 1e-6);
    assert!((got.se_difference - want.se_difference).abs() < 1e-6 * want.se_difference);
    let response: Vec<usize> = r.labels.iter().map(|&y| usize::from(y)).collect();
    check_survival(&out, "observed response", &survival_ref(&r, &response, 5));
    // The predicted group of a patient is its pooled (merged) ML cell's: score ≥ the cut-off.
    let grid = ScoreGrid::new(bins).unwrap();
    let ta = SiteScoreTable::build(grid, &r.ml, &r.labels, 5, MergeRule::CellTotal).unwrap();
    let pooled = PooledScoreTable::pool(std::slice::from_ref(&ta)).unwrap();
    let cutoff = evaluate_pooled(&pooled, &MetricOptions::default())
        .unwrap()
        .youden
        .threshold;
    assert!((cutoff - out.metrics.models[0].cutoff).abs() < 1e-6);
    let high = pooled.site_cell_is_high(&ta, cutoff);
    let predicted: Vec<usize> =
        r.ml.iter()
            .map(|&p| usize::from(high[ta.cell_index(p).unwrap()]))
            .collect();
    check_survival(&out, "predicted group", &survival_ref(&r, &predicted, 5));
}

/// One site's masked follow-up vector, decoded as if it were the sum, is nothing like its own
/// per-bin answer (no element within 1e−3 of the plain value), while the sum of all sites'
/// vectors decodes to the sum of their plain answers within the stated precision.
#[test]
fn one_sites_masked_follow_up_vector_is_not_its_plain_answer() {
    let study = spec(1000, 1);
    let (_, rounds, memories) = drive(&study, 1);
    let AnalysisSpec::Pipeline(p) = &study.analysis else {
        unreachable!()
    };
    let round = rounds
        .iter()
        .find(|r| {
            r.values().all(|(t, b)| {
                matches!(&t.body, TaskBody::Masked(m) if matches!(m.shape, SumShape::PipelineFollowUp(_)))
                    && matches!(b, ResultBody::Masked(_))
            })
        })
        .expect("a masked follow-up round");
    let tables = cohort();
    let mut sum_plain: Option<Vec<Vec<f64>>> = None;
    let mut vectors = Vec::new();
    let mut shape = None;
    let mut round_spec = None;
    for (site, (task, body)) in round {
        let (TaskBody::Masked(m), ResultBody::Masked(v)) = (&task.body, body) else {
            unreachable!()
        };
        let TaskBody::Pipeline(inner) = &*m.inner else {
            panic!("a pipeline request")
        };
        shape = Some(m.shape.clone());
        round_spec = Some(m.round.clone());
        vectors.push(v.clone());
        // The site's plain answer, recomputed by the pipeline half with its own state (the
        // follow-up reads the score sums and changes nothing).
        let st = memories[site].studies.get(&study.hash().0).unwrap();
        let plain = federation::pipeline::secure::site_masked_metrics(
            &tables[site],
            p,
            inner,
            &policy(1),
            st,
            &m.shape,
        )
        .unwrap();
        assert!(matches!(plain, StageResult::Metrics(_)));
        let parts = m.shape.encode(&ResultBody::Pipeline(plain)).unwrap();
        let nonzero: usize = parts.iter().flatten().filter(|x| **x != 0.0).count();
        assert!(nonzero > 0, "site {site}: an empty plain answer");
        let decoded = m.shape.layout().decode(&v.values).unwrap();
        let (near, total) = common::near_plain(&decoded, &parts);
        assert!(
            near * 1000 <= total,
            "site {site}: {near} of {total} masked values decode near the plain ones"
        );
        sum_plain = Some(common::add_parts(sum_plain, parts));
    }
    let shape = shape.unwrap();
    let mut agg = secagg::MaskedRound::new(
        round_spec.unwrap(),
        shape.layout().total_len(),
        &SecureRounds::policy(),
    )
    .unwrap();
    for v in &vectors {
        agg.accept(v).unwrap();
    }
    let sum = shape.layout().decode(&agg.complete().unwrap()).unwrap();
    let bounds = shape.layout().sum_error_bounds(vectors.len());
    let mut worst = 0.0f64;
    for ((s, p), bound) in sum.iter().zip(sum_plain.as_ref().unwrap()).zip(bounds) {
        for (x, y) in s.iter().zip(p) {
            worst = worst.max((x - y).abs());
            assert!(
                (x - y).abs() <= bound + 1e-13 * y.abs(),
                "{x} vs {y} (bound {bound:e})"
            );
        }
    }
    eprintln!("masked follow-up sum: worst |opened − plain sum| = {worst:e}");
}

/// A site that misses the masked follow-up's deadline (`on_masked_dropout =
/// "continue_without_site"`): the follow-up's placements, cut-off and cells were built from a
/// score round the site was summed into, so the metrics stage starts again from its score
/// round over the survivors, and the paired test and survival are computed on their patients.
#[test]
fn a_site_missing_the_masked_follow_up_restarts_the_metrics_from_the_score_round() {
    let tables = cohort();
    let silent = tables.keys().nth(3).unwrap().clone();
    let study = spec_with(1000, 1, "on_masked_dropout = \"continue_without_site\"\n");
    let mut state =
        StudyState::new(study.clone(), tables.keys().cloned().collect(), 0, 60_000).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut dropped = false;
    let mut now = 0u64;
    while !state.status.is_finished() {
        let follow_up = state.task_for(&silent).is_some_and(|t| {
            matches!(&t.body, TaskBody::Masked(m) if matches!(m.shape, SumShape::PipelineFollowUp(_)))
        });
        for (s, t) in &tables {
            let Some(task) = state.task_for(s) else {
                continue;
            };
            let result =
                answer_with_memory(&task, t, &policy(1), memories.entry(s.clone()).or_default())
                    .result;
            if follow_up && s == &silent && !dropped {
                continue;
            }
            state.accept(s, result, 0, now).unwrap();
        }
        if follow_up && !dropped {
            now += 100_000;
            assert!(state.tick(now), "the deadline passed");
            dropped = true;
            assert!(!state.sites.contains(&silent));
            // The restarted round is the masked score round, without the silent site.
            for s in &state.sites {
                let TaskBody::Masked(m) = state.task_for(s).unwrap().body else {
                    panic!("the restarted round is masked")
                };
                assert!(matches!(m.shape, SumShape::PipelineScores { .. }));
                assert!(!m.round.contains(silent.as_str()));
            }
        }
    }
    assert!(dropped, "the study reached a masked follow-up round");
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    let Some(StudyOutput::Pipeline(out)) = state.output else {
        panic!("a pipeline output")
    };
    let silent_n = tables[&silent].n_rows() as u64;
    let ml = &out.metrics.models[0];
    assert_eq!(
        ml.n_pos + ml.n_neg,
        102 - silent_n,
        "{:?}",
        out.metrics.notes
    );
    assert_eq!(out.metrics.comparisons.len(), 1, "{:?}", out.metrics.notes);
    assert_eq!(out.metrics.survival.len(), 2, "{:?}", out.metrics.notes);
    for s in &out.metrics.survival {
        let n: u64 = s.curves.iter().map(|c| c.n).sum();
        assert_eq!(n, 102 - silent_n, "{}", s.grouping);
    }
    assert!(
        out.metrics
            .notes
            .iter()
            .any(|n| n.contains(silent.as_str()) && n.contains("left out")),
        "{:?}",
        out.metrics.notes
    );
}

/// The follow-up's packing on a hand-checked example (4 bins, a 3-point time grid): the site
/// half (`follow_up_by_bin`) and the packing of two sites, summed and decoded. Site A has a
/// patient followed to 7.5 (beyond the horizon 3: censored at 3, counted once); site B has no
/// survival columns (withheld, counted per grouping). Cross sums by hand: the placement a
/// patient adds is the one sent for its clinical bin, into its ML bin, then merged to the ML
/// cells (0–1) and (2–3).
#[test]
fn follow_up_packing_censors_beyond_the_horizon_and_counts_withheld_sites() {
    use federation::pipeline::metrics::{
        FollowUpTask, GroupRelease, MetricsResult, SurvivalColumns, SurvivalRequest,
        follow_up_by_bin,
    };
    use federation::pipeline::secure::{FollowUpShape, FollowUpSurvivalShape};
    let fu = FollowUpShape {
        bins: 4,
        ml_cells: vec![(0, 1), (2, 3)],
        survival: Some(FollowUpSurvivalShape {
            time_step: 1.0,
            time_bins: 3,
            by_predicted: true,
        }),
        min_count: 1,
    };
    let task = FollowUpTask {
        bins: 4,
        cross_placements: Some(vec![(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.4, 0.6)]),
        survival: Some(SurvivalRequest {
            predicted_high: Some(vec![false, false, true, true]),
            time_step: 1.0,
        }),
    };
    let some = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
    let a = MetricsInputs {
        labels: vec![true, false, true, false],
        ml: some(&[0.1, 0.3, 0.6, 0.9]),
        clinical: Some(some(&[0.9, 0.1, 0.6, 0.4])),
        survival: Some(Ok(SurvivalColumns {
            times: vec![0.5, 2.2, 7.5, 3.0],
            events: vec![true, false, true, true],
        })),
    };
    let b = MetricsInputs {
        labels: vec![true, false],
        ml: some(&[0.2, 0.7]),
        clinical: Some(some(&[0.2, 0.8])),
        survival: None,
    };
    let shape = SumShape::PipelineFollowUp(fu.clone());
    let mut sum: Option<Vec<Vec<f64>>> = None;
    for inp in [&a, &b] {
        let r = follow_up_by_bin(inp, &task, &fu).unwrap();
        assert!(r.masked_sum.is_none());
        let parts = shape
            .encode(&ResultBody::Pipeline(StageResult::Metrics(
                MetricsResult::FollowUp(r),
            )))
            .unwrap();
        sum = Some(match sum {
            None => parts,
            Some(acc) => acc
                .iter()
                .zip(&parts)
                .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
                .collect(),
        });
    }
    let ResultBody::Pipeline(StageResult::Metrics(MetricsResult::FollowUp(r))) =
        shape.decode(&sum.unwrap()).unwrap()
    else {
        panic!("a follow-up answer")
    };
    let facts = r.masked_sum.clone().unwrap();
    assert_eq!(facts.beyond_horizon, 1);
    assert_eq!(facts.horizon, 3.0);
    assert_eq!(facts.survival_withheld, [1, 1]);
    assert_eq!(facts.paired_withheld, 0);
    let cross = r.cross_placements.unwrap();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    assert!(close(cross[0].sum_v10_pos, 0.4 + 0.1) && close(cross[0].sum_v01_neg, 0.9));
    assert!(close(cross[1].sum_v10_pos, 0.3) && close(cross[1].sum_v01_neg, 0.8 + 0.6));
    let cells = |g: &GroupRelease| match g {
        GroupRelease::Table { table, .. } => table
            .groups
            .iter()
            .map(|cells| {
                cells
                    .iter()
                    .map(|c| (c.time, c.events, c.censored))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
        GroupRelease::Withheld { reason } => panic!("withheld: {reason}"),
    };
    let s = r.survival.unwrap();
    // By response: non-responders 2.2 (censored) and 3.0 (event) at 3; responders 0.5 (event)
    // at 1 and 7.5 censored at the horizon 3.
    assert_eq!(
        cells(&s.by_response),
        vec![vec![(3.0, 1, 1)], vec![(1.0, 1, 0), (3.0, 0, 1)]]
    );
    // By predicted group (bins 2 and 3 high): low 0.5 (event) and 2.2 (censored); high 7.5
    // (censored at 3) and 3.0 (event).
    assert_eq!(
        cells(s.by_predicted.as_ref().unwrap()),
        vec![vec![(1.0, 1, 0), (3.0, 0, 1)], vec![(3.0, 1, 1)]]
    );
}
