//! Secure aggregation of the pipeline study's ComBat and z-score stages (issue #8 item 5), every
//! site in process through the same gate the agents use, on the shared 7-site example cohort:
//! - with `secure_aggregation = true` ComBat's cross-products and residuals and the z-score
//!   moments travel masked (no plain round of them), and the fitted ComBat models, harmonised
//!   values and z-scores equal the plain run's within the stated precision, with the same
//!   features selected;
//! - one site's masked ComBat or moments vector, decoded, is not its plain sums, while the sum
//!   over all sites opens to the sum (resp. Chan merge) of their plain answers;
//! - a site whose policy has `require_secure_aggregation = true` takes part in a secure pipeline
//!   through these stages, and still refuses them in the clear;
//! - dropout: a site missing a masked ComBat or z-score round is left out and the batch's ComBat
//!   restarts over the survivors (`on_masked_dropout = "continue_without_site"`): the study then
//!   equals a secure study run over the survivors alone; without the option it pauses.

mod common;

use common::{cohort, spec_toml};
use federation::SiteId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::local::run_local;
use federation::pipeline::{PipelineOutput, StageResult, StageTask};
use federation::policy::SitePolicy;
use federation::secure::{SecureRounds, SumShape};
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, StudySpec};
use federation::table::SiteTable;
use federation::task::{MaskedTask, ResultBody, Task, TaskBody, TaskResult};
use learners::FitId;
use models::combat::{ComBatModel, ComBatRows};
use models::standardize::Standardizer;
use ndarray::Array2;
use std::collections::BTreeMap;

fn policy() -> SitePolicy {
    SitePolicy {
        min_count: 1,
        ..common::policy(false)
    }
}

fn strict() -> SitePolicy {
    SitePolicy {
        require_secure_aggregation: true,
        ..policy()
    }
}

/// The common small pipeline study (1 repeat × 5 outer folds), optionally secure, with a
/// dropout rule.
fn spec(secure: bool, dropout: Option<&str>) -> StudySpec {
    let mut text = spec_toml(1);
    if secure {
        let mut extra = "kind = \"pipeline\"\nsecure_aggregation = true\n".to_string();
        if let Some(d) = dropout {
            extra += &format!("on_masked_dropout = \"{d}\"\n");
        }
        text = text.replacen("kind = \"pipeline\"\n", &extra, 1);
        text += "[analysis.metrics]\nsecure_min_count = 1\n";
    }
    StudySpec::from_toml(&text).unwrap()
}

/// Every round of a study driven by hand (all sites answer), with each site's task and answer.
type Rounds = Vec<BTreeMap<SiteId, (Task, ResultBody)>>;

fn drive(
    spec: StudySpec,
    tables: &BTreeMap<SiteId, SiteTable>,
    policy: &SitePolicy,
) -> (StudyState, Rounds, BTreeMap<SiteId, SiteMemory>) {
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut rounds = Vec::new();
    while !state.status.is_finished() {
        let mut got = BTreeMap::new();
        for (site, table) in tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let memory = memories.entry(site.clone()).or_default();
            let result = answer_with_memory(&task, table, policy, memory).result;
            got.insert(site.clone(), (task, result.body.clone()));
            state.accept(site, result, 0, 0).unwrap();
        }
        rounds.push(got);
    }
    (state, rounds, memories)
}

fn output(state: &StudyState) -> &PipelineOutput {
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    match &state.output {
        Some(StudyOutput::Pipeline(o)) => o,
        other => panic!("unexpected output {other:?}"),
    }
}

/// The pipeline request a task carries, plain or inside a masked round.
fn pipeline_stage(task: &Task) -> Option<(&StageTask, bool)> {
    match &task.body {
        TaskBody::Pipeline(p) => Some((&p.stage, false)),
        TaskBody::Masked(m) => match &*m.inner {
            TaskBody::Pipeline(p) => Some((&p.stage, true)),
            _ => None,
        },
        _ => None,
    }
}

/// Per fit: the ComBat model the aggregator sent in the z-score round, and the z-score it sent
/// in the first LASSO round (the first site's copy; every site gets the same).
fn preprocessing(rounds: &Rounds) -> BTreeMap<FitId, (ComBatModel, Standardizer)> {
    let mut models = BTreeMap::new();
    let mut zs = BTreeMap::new();
    for r in rounds {
        let Some((task, _)) = r.values().next() else {
            continue;
        };
        match pipeline_stage(task) {
            Some((StageTask::Moments { models: m }, _)) => models.extend(m.iter().cloned()),
            Some((StageTask::Lasso { standardizers, .. }, _)) => {
                zs.extend(standardizers.iter().cloned())
            }
            _ => {}
        }
    }
    assert_eq!(models.len(), zs.len());
    models
        .into_iter()
        .map(|(f, m)| {
            let z = zs[&f].clone();
            (f, (m, z))
        })
        .collect()
}

/// The features of `spec` at every row of `table`, with the site as its batch (the pipeline's
/// default batch).
fn feature_rows(spec: &StudySpec, site: &SiteId, table: &SiteTable) -> (Vec<String>, Array2<f64>) {
    let AnalysisSpec::Pipeline(p) = &spec.analysis else {
        unreachable!()
    };
    let n = table.n_rows();
    let mut x = Array2::zeros((n, p.features.len()));
    for (j, f) in p.features.iter().enumerate() {
        for (i, v) in table.numeric_column(f).unwrap().into_iter().enumerate() {
            x[[i, j]] = v.unwrap();
        }
    }
    (vec![site.to_string(); n], x)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

/// Precision, plain vs secure, measured on this cohort (55 features incl. the first-order
/// energies, |Σx²| per site up to 3e19, mean/SD up to 39):
/// - ComBat's sums travel exactly (counts) or in the wide three-limb format (2^−56 absolute per
///   site), so the fitted regression and pooled variance differ from the plain run's only by
///   the order of f64 additions: grand mean, B and pooled variance within 1e−13 relative
///   (measured 8.3e−15), the sites' empirical-Bayes γ*, δ* within 1e−11 (measured 7.1e−15);
/// - the harmonised values of every patient (each fit's model applied to every site's rows)
///   within 1e−11 of the feature's pooled SD (measured 8.9e−15);
/// - the z-score: the moments travel as raw power sums (n, Σx, Σx²), so the pooled variance
///   carries f64's cancellation in Σx² − (Σx)²/n, ≈ 4·2^−53·(1 + mean²/var) relative, 3.4e−13
///   at this cohort's mean/SD of 39 (the plain path's Chan merge of (mean, M2) is exact to
///   ~1e−16): means within 1e−12 of the SD (measured 5.3e−15) and SDs within 1e−12 relative
///   (measured 1.6e−13);
/// - the LASSO then selects the same features in every fit.
#[test]
fn secure_combat_and_zscore_equal_the_plain_run_within_the_stated_precision() {
    let tables = cohort();
    let (plain_state, plain_rounds, _) = drive(spec(false, None), &tables, &policy());
    let study = spec(true, None);
    let (secure_state, secure_rounds, _) = drive(study.clone(), &tables, &policy());
    let (plain, secure) = (output(&plain_state), output(&secure_state));

    // In the secure run ComBat's cross-products and residuals and the z-score went masked
    // only, its levels and estimates plain (they are not sums).
    let mut seen = BTreeMap::new();
    for r in &secure_rounds {
        for (task, _) in r.values() {
            if let Some((stage, masked)) = pipeline_stage(task) {
                let name = match stage {
                    StageTask::ComBat { round, .. } => format!("combat {round}"),
                    StageTask::Moments { .. } => "zscore".into(),
                    _ => continue,
                };
                seen.insert(name, masked);
            }
        }
    }
    assert_eq!(
        seen,
        BTreeMap::from([
            ("combat 0".to_string(), false),
            ("combat 1".to_string(), true),
            ("combat 2".to_string(), true),
            ("combat 3".to_string(), false),
            ("zscore".to_string(), true),
        ])
    );

    let (p_pre, s_pre) = (preprocessing(&plain_rounds), preprocessing(&secure_rounds));
    assert_eq!(p_pre.len(), 5);
    assert_eq!(
        p_pre.keys().collect::<Vec<_>>(),
        s_pre.keys().collect::<Vec<_>>()
    );
    let (mut w_global, mut w_eb, mut w_harm, mut w_mean, mut w_sd) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (fit, (pm, pz)) in &p_pre {
        let (sm, sz) = &s_pre[fit];
        let (pg, sg) = (&pm.global, &sm.global);
        assert_eq!(pg.fit.spec, sg.fit.spec);
        assert_eq!(pg.fit.batch_n, sg.fit.batch_n);
        assert_eq!(pg.fit.n, sg.fit.n);
        assert_eq!(pg.fit.unadjusted, sg.fit.unadjusted);
        for (a, b) in pg
            .fit
            .grand_mean
            .iter()
            .zip(&sg.fit.grand_mean)
            .chain(pg.fit.beta.iter().zip(sg.fit.beta.iter()))
            .chain(pg.var_pooled.iter().zip(&sg.var_pooled))
        {
            w_global = w_global.max(rel(*a, *b));
        }
        assert_eq!(pm.batches.len(), sm.batches.len());
        for (a, b) in pm.batches.iter().zip(&sm.batches) {
            assert_eq!((&a.batch, a.n), (&b.batch, b.n));
            for (x, y) in a
                .gamma_star
                .iter()
                .zip(&b.gamma_star)
                .chain(a.delta_star.iter().zip(&b.delta_star))
            {
                w_eb = w_eb.max((x - y).abs() / x.abs().max(1.0));
            }
        }
        // Harmonised values of every patient, in units of the feature's pooled SD.
        for (site, table) in &tables {
            let (batch, x) = feature_rows(&study, site, table);
            let rows = ComBatRows {
                batch: &batch,
                covariates: &[],
                features: x.view(),
            };
            let (hp, hs) = (pm.apply(&rows).unwrap(), sm.apply(&rows).unwrap());
            for ((i, j), a) in hp.indexed_iter() {
                w_harm = w_harm.max((a - hs[[i, j]]).abs() / pz.sd[j]);
            }
        }
        assert_eq!(pz.n, sz.n);
        for j in 0..pz.mean.len() {
            w_mean = w_mean.max((pz.mean[j] - sz.mean[j]).abs() / pz.sd[j]);
            w_sd = w_sd.max(rel(pz.sd[j], sz.sd[j]));
        }
    }
    eprintln!(
        "ComBat regression/pooled variance {w_global:e}, EB γ*/δ* {w_eb:e}, harmonised values {w_harm:e} SD; z-score means {w_mean:e} SD, SDs {w_sd:e}"
    );
    assert!(
        w_global < 1e-13,
        "ComBat regression differs by {w_global:e}"
    );
    assert!(w_eb < 1e-11, "ComBat γ*/δ* differ by {w_eb:e}");
    assert!(w_harm < 1e-11, "harmonised values differ by {w_harm:e} SD");
    assert!(w_mean < 1e-12, "z-score means differ by {w_mean:e} SD");
    assert!(w_sd < 1e-12, "z-score SDs differ by {w_sd:e}");

    assert_eq!(plain.cv.fits, secure.cv.fits);
    assert_eq!(plain.cv.selected_count, secure.cv.selected_count);
    for (a, b) in plain.cv.per_fit.iter().zip(&secure.cv.per_fit) {
        assert_eq!((a.fit, &a.selected), (b.fit, &b.selected));
        assert!(
            rel(a.lambda_min, b.lambda_min) < 1e-8,
            "λ.min {} vs {}",
            a.lambda_min,
            b.lambda_min
        );
    }
}

/// The plain answer a site gives to a masked round's inner request, recomputed by the pipeline
/// half with the site's own state (ComBat rounds are pure; the z-score round stores the same
/// models again).
fn plain_answer_of(
    study: &StudySpec,
    memory: &mut SiteMemory,
    table: &SiteTable,
    round: u32,
    m: &MaskedTask,
) -> StageResult {
    let AnalysisSpec::Pipeline(p) = &study.analysis else {
        unreachable!()
    };
    let TaskBody::Pipeline(inner) = &*m.inner else {
        panic!("a pipeline request")
    };
    let st = memory.studies.get_mut(&study.hash().0).unwrap();
    federation::pipeline::site_answer(table, p, inner, round, &policy(), st).unwrap()
}

/// Adds the plain answers of all sites as the aggregator's plain path would (ComBat sums; the
/// z-score's Chan merge).
fn plain_total(answers: &[StageResult]) -> StageResult {
    let mut it = answers.iter();
    let mut acc = it.next().unwrap().clone();
    for a in it {
        match (&mut acc, a) {
            (StageResult::ComBatCrossProducts(x), StageResult::ComBatCrossProducts(y)) => {
                for ((_, s), (_, t)) in x.iter_mut().zip(y) {
                    s.n += t.n;
                    s.wtw.iter_mut().zip(&t.wtw).for_each(|(u, v)| *u += v);
                    s.wty.iter_mut().zip(&t.wty).for_each(|(u, v)| *u += v);
                    for (u, v) in s.constant_in_batch.iter_mut().zip(&t.constant_in_batch) {
                        *u |= *v;
                    }
                }
            }
            (StageResult::ComBatResiduals(x), StageResult::ComBatResiduals(y)) => {
                for ((_, s), (_, t)) in x.iter_mut().zip(y) {
                    s.n += t.n;
                    s.rss.iter_mut().zip(&t.rss).for_each(|(u, v)| *u += v);
                }
            }
            (StageResult::Moments(x), StageResult::Moments(y)) => {
                for ((_, s), (_, t)) in x.iter_mut().zip(y) {
                    for (u, v) in s.iter_mut().zip(t) {
                        *u = u.merge(v);
                    }
                }
            }
            _ => panic!("answers of different kinds"),
        }
    }
    acc
}

/// The opened sum against the plain total: counts exactly, sums within `tol` relative (or
/// absolute below 1).
fn assert_close(opened: &StageResult, plain: &StageResult, tol: f64) -> f64 {
    let mut worst = 0.0f64;
    let mut near = |a: f64, b: f64| {
        let d = (a - b).abs() / a.abs().max(1.0);
        worst = worst.max(d);
        assert!(d <= tol, "{a} vs {b}");
    };
    match (opened, plain) {
        (StageResult::ComBatCrossProducts(x), StageResult::ComBatCrossProducts(y)) => {
            for ((f, s), (g, t)) in x.iter().zip(y) {
                assert_eq!(
                    (f, s.n, &s.constant_in_batch),
                    (g, t.n, &t.constant_in_batch)
                );
                s.wtw.iter().zip(&t.wtw).for_each(|(a, b)| near(*a, *b));
                s.wty.iter().zip(&t.wty).for_each(|(a, b)| near(*a, *b));
            }
        }
        (StageResult::ComBatResiduals(x), StageResult::ComBatResiduals(y)) => {
            for ((f, s), (g, t)) in x.iter().zip(y) {
                assert_eq!((f, s.n), (g, t.n));
                s.rss.iter().zip(&t.rss).for_each(|(a, b)| near(*a, *b));
            }
        }
        (StageResult::Moments(x), StageResult::Moments(y)) => {
            for ((f, s), (g, t)) in x.iter().zip(y) {
                assert_eq!(f, g);
                for (a, b) in s.iter().zip(t) {
                    assert_eq!(a.n, b.n);
                    near(a.mean, b.mean);
                    near(a.m2, b.m2);
                }
            }
        }
        _ => panic!("the opened sum is not of the plain answers' kind"),
    }
    worst
}

/// What one site sends in a masked ComBat cross-products, residuals or z-score round, decoded
/// as if it were the sum, is nothing like its own plain sums (no element within 1e−3 of the
/// plain value), while the sum of all sites' vectors opens to the sum of their plain answers
/// (the z-score: to their Chan merge) — counts exactly, sums to 1e−12 relative.
#[test]
fn one_sites_masked_combat_and_moments_vectors_are_not_its_plain_sums() {
    let tables = cohort();
    let study = spec(true, None);
    let (state, rounds, mut memories) = drive(study.clone(), &tables, &policy());
    output(&state);
    let mut checked = Vec::new();
    for round in &rounds {
        let Some((task, _)) = round.values().next() else {
            continue;
        };
        let TaskBody::Masked(m0) = &task.body else {
            continue;
        };
        let kind = match &m0.shape {
            SumShape::PipelineComBat { fits } => match fits[0].1 {
                SumShape::ComBatCrossProducts { .. } => "cross-products",
                _ => "residuals",
            },
            SumShape::PipelineMoments { .. } => "z-score moments",
            _ => continue,
        };
        let mut vectors = Vec::new();
        let mut plains = Vec::new();
        for (site, (task, body)) in round {
            let (TaskBody::Masked(m), ResultBody::Masked(v)) = (&task.body, body) else {
                panic!("site {site}: a {kind} round not masked")
            };
            vectors.push(v.clone());
            let plain = plain_answer_of(
                &study,
                memories.get_mut(site).unwrap(),
                &tables[site],
                task.round,
                m,
            );
            let parts = m
                .shape
                .encode(&ResultBody::Pipeline(plain.clone()))
                .unwrap();
            let decoded = m.shape.layout().decode(&v.values).unwrap();
            let (near, total) = common::near_plain(&decoded, &parts);
            assert!(
                near * 1000 <= total,
                "site {site}, {kind}: {near} of {total} masked values decode near the plain ones"
            );
            plains.push(plain);
        }
        let mut agg = secagg::MaskedRound::new(
            m0.round.clone(),
            m0.shape.layout().total_len(),
            &SecureRounds::policy(),
        )
        .unwrap();
        for v in &vectors {
            agg.accept(v).unwrap();
        }
        let parts = m0.shape.layout().decode(&agg.complete().unwrap()).unwrap();
        let ResultBody::Pipeline(opened) = m0.shape.decode(&parts).unwrap() else {
            panic!("a pipeline answer")
        };
        let worst = assert_close(&opened, &plain_total(&plains), 1e-12);
        eprintln!("{kind}: opened sum within {worst:e} of the plain total");
        checked.push(kind);
    }
    assert_eq!(
        checked,
        ["cross-products", "residuals", "z-score moments"],
        "one masked round of each"
    );
}

/// `require_secure_aggregation`: such sites take part in a secure pipeline (its ComBat and
/// z-score sums are masked, its other plain requests are not sums) and the study is the one
/// the other sites get; they still refuse a plain ComBat cross-products or z-score request of
/// a secure study (an aggregator cannot get them in the clear) and a plain pipeline study.
#[test]
fn a_site_requiring_secure_aggregation_takes_part_in_a_secure_pipeline() {
    let tables = cohort();
    let with = |p: SitePolicy| -> BTreeMap<SiteId, (SiteTable, SitePolicy)> {
        tables
            .iter()
            .map(|(s, t)| (s.clone(), (t.clone(), p.clone())))
            .collect()
    };
    let strict_run = run_local(spec(true, None), &with(strict()), 100_000).unwrap();
    let relaxed_run = run_local(spec(true, None), &with(policy()), 100_000).unwrap();
    let (a, b) = (output(&strict_run), output(&relaxed_run));
    // Masked sums open exactly whatever the masks, so both runs are the same study.
    assert_eq!(a.cv.per_fit, b.cv.per_fit);
    assert_eq!(a.metrics, b.metrics);

    // A plain pipeline study is refused at its first summed stage, naming the setting.
    let plain = run_local(spec(false, None), &with(strict()), 100_000).unwrap();
    let StudyStatus::Failed { reason } = &plain.status else {
        panic!("{:?}", plain.status)
    };
    assert!(
        reason.contains("require_secure_aggregation = true") && reason.contains("plain"),
        "{reason}"
    );

    // In a secure study, a ComBat cross-products or z-score request sent in the clear is
    // refused by any site (whatever its policy): only masked answers leave.
    let (_, rounds, mut memories) = drive(spec(true, None), &tables, &policy());
    for want in ["cross-products", "z-score"] {
        let (site, task) = rounds
            .iter()
            .flat_map(|r| r.iter())
            .find_map(|(s, (t, _))| match (&t.body, want) {
                (TaskBody::Masked(m), "cross-products")
                    if matches!(&*m.inner, TaskBody::Pipeline(p) if matches!(p.stage, StageTask::ComBat { round: 1, .. })) =>
                {
                    Some((s.clone(), t.clone()))
                }
                (TaskBody::Masked(m), "z-score")
                    if matches!(&*m.inner, TaskBody::Pipeline(p) if matches!(p.stage, StageTask::Moments { .. })) =>
                {
                    Some((s.clone(), t.clone()))
                }
                _ => None,
            })
            .unwrap();
        let TaskBody::Masked(m) = &task.body else {
            unreachable!()
        };
        let unmasked = Task {
            body: (*m.inner).clone(),
            round: task.round + 1000,
            ..task.clone()
        };
        for p in [policy(), strict()] {
            let a = answer_with_memory(
                &unmasked,
                &tables[&site],
                &p,
                memories.get_mut(&site).unwrap(),
            );
            let ResultBody::Failure(f) = &a.result.body else {
                panic!("{want}: a plain answer left the site: {:?}", a.result.body)
            };
            assert!(
                f.message.contains("sent a plain pipeline request"),
                "{}",
                f.message
            );
        }
    }

    // Which requests a strict site answers in the clear: none that is summed.
    use federation::pipeline::secure::{has_masked_form, is_unmasked_sum};
    for r in &rounds {
        for (t, _) in r.values() {
            if let Some((stage, masked)) = pipeline_stage(t) {
                assert!(
                    !is_unmasked_sum(stage),
                    "{} is summed but plain",
                    stage.name()
                );
                assert_eq!(has_masked_form(stage), masked, "{}", stage.name());
            }
        }
    }
}

/// Drives a secure pipeline study until the first masked round whose shape `at` picks, in which
/// every site but `silent` answers; returns the state, the sites' memories and the silent
/// site's vector for that round (computed, not delivered).
fn until_masked_round(
    study: StudySpec,
    sites: &BTreeMap<SiteId, SiteTable>,
    silent: &SiteId,
    at: impl Fn(&SumShape) -> bool,
) -> (StudyState, BTreeMap<SiteId, SiteMemory>, TaskResult) {
    let mut state = StudyState::new(study, sites.keys().cloned().collect(), 0, 60_000).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    loop {
        assert!(!state.status.is_finished(), "{:?}", state.status);
        let masked = state
            .task_for(silent)
            .is_some_and(|t| matches!(&t.body, TaskBody::Masked(m) if at(&m.shape)));
        let mut late = None;
        for (s, t) in sites {
            let Some(task) = state.task_for(s) else {
                continue;
            };
            let memory = memories.entry(s.clone()).or_default();
            let result = answer_with_memory(&task, t, &policy(), memory).result;
            if masked && s == silent {
                late = Some(result);
                continue;
            }
            state.accept(s, result, 0, 1_000).unwrap();
        }
        if let Some(late) = late {
            return (state, memories, late);
        }
    }
}

fn is_cross_products(s: &SumShape) -> bool {
    matches!(s, SumShape::PipelineComBat { fits } if matches!(fits[0].1, SumShape::ComBatCrossProducts { .. }))
}

fn is_moments(s: &SumShape) -> bool {
    matches!(s, SumShape::PipelineMoments { .. })
}

/// A site that misses a masked ComBat cross-products round, or the z-score round, is left out;
/// the batch's ComBat restarts from its cross-products round with a design without the
/// site's batch, masked over the survivors, and the study finishes as exactly the secure study
/// of the survivors alone (same ComBat and z-score digests, features, MLP weights and
/// metrics: the masked sums open exactly, and each site's folds depend on its own rows only).
#[test]
fn a_site_missing_a_masked_combat_or_zscore_round_is_left_out_and_combat_restarts() {
    let tables = cohort();
    let silent = tables.keys().nth(3).unwrap().clone();
    let survivors_only: BTreeMap<SiteId, SiteTable> = tables
        .iter()
        .filter(|(s, _)| **s != silent)
        .map(|(s, t)| (s.clone(), t.clone()))
        .collect();
    let study = spec(true, Some("continue_without_site"));
    let (reference, _, _) = drive(study.clone(), &survivors_only, &policy());
    let reference = output(&reference).clone();
    for (stage, at) in [
        ("ComBat", is_cross_products as fn(&SumShape) -> bool),
        ("z-score", is_moments),
    ] {
        let (mut state, mut memories, late) =
            until_masked_round(study.clone(), &tables, &silent, at);
        let round = state.round;
        assert_eq!(state.missing(), vec![silent.clone()]);
        assert!(state.tick(100_000));
        assert_eq!(state.status, StudyStatus::Running, "{stage}");
        assert_eq!(state.round, round + 1);
        assert!(!state.sites.contains(&silent));
        // The restarted round: ComBat's cross-products over the survivors, one batch fewer.
        for s in &state.sites {
            let TaskBody::Masked(m) = state.task_for(s).unwrap().body else {
                panic!("{stage}: the restarted round is masked")
            };
            assert!(!m.round.contains(silent.as_str()));
            let SumShape::PipelineComBat { fits } = &m.shape else {
                panic!(
                    "{stage}: the restart is ComBat's cross-products round: {:?}",
                    m.shape
                )
            };
            for (_, f) in fits {
                assert!(
                    matches!(f, SumShape::ComBatCrossProducts { columns, .. } if *columns == tables.len() - 1),
                    "{f:?}"
                );
            }
        }
        // The late vector is refused.
        assert!(state.accept(&silent, late, 0, 100_001).is_err());
        let mut now = 100_002;
        while !state.status.is_finished() {
            assert!(state.task_for(&silent).is_none());
            for (s, t) in &survivors_only {
                let Some(task) = state.task_for(s) else {
                    continue;
                };
                let result =
                    answer_with_memory(&task, t, &policy(), memories.get_mut(s).unwrap()).result;
                state.accept(s, result, 0, now).unwrap();
                now += 1;
            }
        }
        let out = output(&state);
        let entry = out
            .cv
            .sites
            .iter()
            .find(|s| s.site == silent.as_str())
            .unwrap();
        assert!(
            entry
                .dropped
                .as_deref()
                .is_some_and(|d| d.contains(stage) && d.contains(&format!("masked round {round}"))),
            "{entry:?}"
        );
        assert_eq!(out.cv.per_fit, reference.cv.per_fit, "{stage}");
        assert_eq!(out.cv.selected_count, reference.cv.selected_count);
        assert_eq!(out.metrics.models, reference.metrics.models, "{stage}");
        assert!(
            out.metrics
                .notes
                .iter()
                .any(|n| n.contains(&format!("site {silent} was left out of the study"))),
            "{:?}",
            out.metrics.notes
        );
    }

    // Without the study's consent a missed masked ComBat round pauses, and the late vector
    // completes it.
    let (mut state, _, late) =
        until_masked_round(spec(true, None), &tables, &silent, is_cross_products);
    let round = state.round;
    assert!(state.tick(100_000));
    assert!(matches!(state.status, StudyStatus::Paused { .. }));
    state.accept(&silent, late, 0, 100_001).unwrap();
    assert_eq!(state.status, StudyStatus::Running);
    assert!(state.round > round);
}
