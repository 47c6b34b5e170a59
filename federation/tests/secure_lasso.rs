//! Secure aggregation of the LASSO (issue #8 item 5), every site in process through the same gate
//! the agents use: a `kind = "lasso"` study with `secure_aggregation = true` selects the same
//! features as the plain run, with coefficients, λ path, CV curve and standardisation within the
//! fixed-point precision (`federation::lasso::secure`); what one site sends in a masked LASSO
//! round is indistinguishable from uniform and does not decode to its sums; a refusal of the
//! parameters-per-row guard still fails the study naming the site and the fit; and sites whose
//! policy requires secure aggregation take part in a secure LASSO and refuse a plain one.

mod common;

use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::lasso::LassoOutput;
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, LassoSpec, StudySpec};
use federation::table::SiteTable;
use federation::task::{ResultBody, Task, TaskBody};
use federation::{SiteId, StudyId};
use std::collections::BTreeMap;

fn tables() -> BTreeMap<SiteId, SiteTable> {
    common::cohort_with_ids()
}

/// The end-to-end LASSO's features, plus the first-order energy (values up to 3.6e9: its
/// Σv·x² needs the wide two-limb encoding) and a feature whose mean lies far from 0 in SDs.
const FEATURES: [&str; 10] = [
    "max_diameter_mm",
    "original_firstorder_Mean",
    "original_firstorder_Skewness",
    "original_glcm_Contrast",
    "original_glcm_Idm",
    "original_shape_Sphericity",
    "original_glrlm_RunEntropy",
    "original_glszm_ZoneEntropy",
    "original_firstorder_Energy",
    "original_glcm_Idmn",
];

fn lasso(secure: bool, bootstrap: u32) -> StudySpec {
    StudySpec {
        id: StudyId::new("lasso").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Lasso(LassoSpec {
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            features: FEATURES.map(String::from).to_vec(),
            nfolds: 5,
            foldid_column: None,
            nlambda: 100,
            bootstrap,
            top_k: 3,
            seed: 7,
            secure_aggregation: secure,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn policy() -> SitePolicy {
    SitePolicy {
        min_count: 5,
        allow_all_studies: true,
        // 11 parameters on sites of 11–21 rows: above DataSHIELD's default ratio.
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

fn run_with(spec: StudySpec, policy: &SitePolicy) -> StudyState {
    let sites = tables()
        .into_iter()
        .map(|(s, t)| (s, (t, policy.clone())))
        .collect();
    run_local(spec, &sites, 1000).unwrap()
}

fn output(state: &StudyState) -> &LassoOutput {
    match &state.output {
        Some(StudyOutput::Lasso(o)) => o,
        _ => panic!("{}", state.status.describe()),
    }
}

/// Largest |a − b| / max(|a|, |b|, floor) over two equally long lists.
fn worst(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(floor))
        .fold(0.0, f64::max)
}

/// The masked run equals the plain run within the stated precision: the same λ path length and
/// CV choice, the same selected features (λ.min, bootstrap top-k, selection frequencies exactly),
/// the same active set at every λ, and the standardisation, λ values, coefficients and CV curve
/// within the tolerances below (measured values printed with `--nocapture`).
#[test]
fn secure_lasso_selects_the_same_features_as_the_plain_run_within_the_fixed_point_precision() {
    let plain = run_with(lasso(false, 20), &policy());
    let secure = run_with(lasso(true, 20), &policy());
    // One round more: the key round.
    assert_eq!(secure.round, plain.round + 1);
    let (p, s) = (&output(&plain).result, &output(&secure).result);
    let (pp, sp) = (&p.cv.path, &s.cv.path);

    // Standardisation: the SDs from the sites' masked power sums against the plain path's
    // merged Welford moments: f64 cancellation only, ≈ 4·2^-53·(mean/SD)² (2e-13 for
    // `original_glcm_Idmn`, mean/SD = 39; see the next test).
    let sd = worst(&pp.sd, &sp.sd, 0.0);
    let mean = worst(&pp.mean, &sp.mean, 1e-300);
    println!("relative difference, SD {sd:e}, mean {mean:e}");
    assert!(sd <= 1e-11, "SD {sd:e}");
    assert!(mean <= 1e-12, "mean {mean:e}");
    assert!(
        sd > 0.0 || mean > 0.0,
        "the masked run did not go through fixed point"
    );

    assert_eq!(pp.lambdas.len(), sp.lambdas.len());
    let lambdas = worst(&pp.lambdas, &sp.lambdas, 0.0);
    assert!(lambdas <= 1e-9, "λ {lambdas:e}");
    let mut coef = 0.0f64;
    for k in 0..pp.lambdas.len() {
        let active = |b: &[f64]| b.iter().map(|v| *v != 0.0).collect::<Vec<_>>();
        assert_eq!(
            active(&pp.beta[k]),
            active(&sp.beta[k]),
            "λ#{k}: active sets"
        );
        // Coefficients on the standardised scale (O(1)), relative with a floor of 1e-3 for those
        // near 0. Both runs stop within the IRLS tolerance (1e-10 on (H/V)·Δβ²) of the exact
        // solution, which dominates the difference (~3e-8), not the fixed point.
        coef = coef.max(worst(&pp.beta[k], &sp.beta[k], 1e-3));
        coef = coef.max(worst(&[pp.beta0[k]], &[sp.beta0[k]], 1e-3));
    }
    let cvm = worst(&p.cv.cvm, &s.cv.cvm, 0.0);
    let dev = worst(&pp.dev_ratio, &sp.dev_ratio, 1e-3);
    println!(
        "relative difference, λ {lambdas:e}, coefficients {coef:e}, cvm {cvm:e}, dev.ratio {dev:e}"
    );
    assert!(coef <= 1e-6, "coefficients {coef:e}");
    assert!(cvm <= 1e-8, "cvm {cvm:e}");
    assert!(dev <= 1e-8, "dev ratio {dev:e}");

    assert_eq!(p.cv.index_min, s.cv.index_min);
    assert_eq!(p.cv.index_1se, s.cv.index_1se);
    assert_eq!(p.cv.selected_min, s.cv.selected_min);
    let (pb, sb) = (p.bootstrap.as_ref().unwrap(), s.bootstrap.as_ref().unwrap());
    assert_eq!(pb.top_k, sb.top_k);
    assert_eq!(pb.frequency, sb.frequency);
    assert_eq!(pb.selected, sb.selected);
}

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
            let result = answer_with_memory(&task, table, &policy(), memory).result;
            got.insert(site.clone(), (task, result.body.clone()));
            state.accept(site, result, 0, 0).unwrap();
        }
        rounds.push(got);
    }
    (state, rounds)
}

/// What one site sends in a masked LASSO round is not its sums: checked on the moments round
/// and on an IRLS round with x̃ᵀWx̃. The site's own plain answer, packed in the round's layout,
/// differs from the masked vector in (almost) every element; the masked elements fill the ring
/// (top 4 bits in 16 buckets: χ² with 15 df below its 1e−9 critical value 73.6 — the keys are
/// fresh every run, so a 0.001 level would fail one run in a thousand; a plain encoding, all in
/// buckets 0 and 15, gives a χ² in the thousands) while plain
/// encodings of statistics sit near 0 (top bits 0000 or 1111); decoded as if plain, the masked
/// vector is nothing like the sums; and the sum of all sites but one is still masked.
#[test]
fn the_aggregator_cannot_recover_one_sites_lasso_sums() {
    let (state, rounds) = drive(lasso(true, 2));
    assert!(
        matches!(state.output, Some(StudyOutput::Lasso(_))),
        "{}",
        state.status.describe()
    );
    // Only the key round and masked rounds: no plain LASSO sum ever reached the aggregator.
    for (i, r) in rounds.iter().enumerate() {
        for (site, (_, body)) in r {
            match (i, body) {
                (0, ResultBody::SecureKey(k)) => assert!(k.inner.is_none()),
                (_, ResultBody::Masked(v)) if i > 0 => assert_eq!(v.site_id, site.as_str()),
                _ => panic!("round {}: site {site} sent {}", i + 1, body.kind()),
            }
        }
    }
    let tables = tables();
    let spec = match &lasso(true, 2).analysis {
        AnalysisSpec::Lasso(l) => l.clone(),
        _ => unreachable!(),
    };
    let is_irls_with_hessian = |r: &BTreeMap<SiteId, (Task, ResultBody)>| {
        r.values().all(|(t, _)| match &t.body {
            TaskBody::Masked(m) => matches!(&m.shape,
                federation::secure::SumShape::LassoSums { fits, .. }
                    if fits.iter().any(|f| matches!(&f.kind,
                        federation::lasso::secure::SlotKind::Irls(
                            federation::lasso::secure::HessForm::Packed
                            | federation::lasso::secure::HessForm::Columns(_))))),
            _ => false,
        })
    };
    let moments_round = &rounds[1];
    let irls_round = rounds
        .iter()
        .find(|r| is_irls_with_hessian(r))
        .expect("an IRLS round with x̃ᵀWx̃");
    for round in [moments_round, irls_round] {
        let mut buckets = [0usize; 16];
        let (mut total, mut plain_low, mut plain_total) = (0usize, 0usize, 0usize);
        let n = round.len();
        let mut partial: Option<(Vec<u64>, Vec<u64>)> = None;
        for (i, (site, (task, body))) in round.iter().enumerate() {
            let ResultBody::Masked(v) = body else {
                unreachable!()
            };
            let TaskBody::Masked(m) = &task.body else {
                panic!("a masked task")
            };
            let TaskBody::LassoSums(inner) = &*m.inner else {
                panic!("a LASSO request inside")
            };
            let plain =
                federation::lasso::site_answer(&tables[site], &spec, inner, &policy()).unwrap();
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
            // Decoded as if it were plain, the masked vector is nowhere near the sums.
            let decoded = m.shape.layout().decode(&v.values).unwrap();
            for (seg, (d, p)) in decoded.iter().zip(&parts).enumerate() {
                let near = d
                    .iter()
                    .zip(p)
                    .filter(|(a, b)| (*a - *b).abs() < 1e-3 * b.abs().max(1.0))
                    .count();
                assert!(
                    near * 100 <= d.len().max(100),
                    "site {site}: segment {seg} decodes near the plain sums ({near} of {})",
                    d.len()
                );
            }
            // All sites but the first: still masked by the pads shared with it.
            if i > 0 {
                let (pm, pp) = partial
                    .get_or_insert_with(|| (vec![0u64; encoded.len()], vec![0u64; encoded.len()]));
                for j in 0..encoded.len() {
                    pm[j] = pm[j].wrapping_add(v.values[j]);
                    pp[j] = pp[j].wrapping_add(encoded[j]);
                }
            }
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
            chi2 < 73.6,
            "masked elements are not uniform: χ² = {chi2}, {buckets:?}"
        );
        let (pm, pp) = partial.unwrap();
        let same = pm.iter().zip(&pp).filter(|(a, b)| a == b).count();
        assert!(
            same <= 1,
            "{same} elements of a sum over {} of {n} sites unmasked",
            n - 1
        );
    }
}

/// The parameters-per-row guard at one site: in a masked round its refusal cannot be masked
/// (there are no sums), so the site answers with a failure naming the fit and the rule, in the
/// clear; the study fails naming that site, as the plain run does.
#[test]
fn a_refusal_in_a_masked_lasso_round_fails_the_study_naming_the_site_and_the_fit() {
    let tables = tables();
    // The smallest site refuses 11 parameters: its rows × 0.33 < 11.
    let (small, _) = tables.iter().min_by_key(|(_, t)| t.n_rows()).unwrap();
    let run = |secure: bool| {
        let sites = tables
            .iter()
            .map(|(s, t)| {
                let p = if s == small {
                    SitePolicy {
                        max_params_per_row: 0.33,
                        ..policy()
                    }
                } else {
                    policy()
                };
                (s.clone(), (t.clone(), p))
            })
            .collect();
        run_local(lasso(secure, 2), &sites, 1000).unwrap()
    };
    for secure in [false, true] {
        let state = run(secure);
        let StudyStatus::Failed { reason } = &state.status else {
            panic!("secure {secure}: {:?}", state.status)
        };
        assert!(reason.contains(&format!("site {small}")), "{reason}");
        assert!(reason.contains("refused fit 0"), "{reason}");
        assert!(reason.contains("11 parameters"), "{reason}");
        assert!(reason.contains("max_params_per_row = 0.33"), "{reason}");
        assert!(reason.contains("relax its policy"), "{reason}");
    }
}

/// `require_secure_aggregation`: a plain LASSO is refused naming the setting; the secure LASSO
/// runs at such sites. A secure study's spec makes even a lenient site refuse a plain request.
#[test]
fn sites_requiring_secure_aggregation_take_part_in_a_secure_lasso_only() {
    let strict = SitePolicy {
        require_secure_aggregation: true,
        ..policy()
    };
    let state = run_with(lasso(false, 0), &strict);
    let StudyStatus::Failed { reason } = &state.status else {
        panic!("{:?}", state.status)
    };
    assert!(
        reason.contains("require_secure_aggregation = true") && reason.contains("LASSO"),
        "{reason}"
    );
    let state = run_with(lasso(true, 0), &strict);
    assert!(
        matches!(state.output, Some(StudyOutput::Lasso(_))),
        "{}",
        state.status.describe()
    );
    // A plain LASSO request for a study whose spec says secure: refused.
    let tables = tables();
    let (site, table) = tables.iter().next().unwrap();
    let spec = lasso(true, 0);
    let plain_task = {
        let plain = StudyState::new(lasso(false, 0), vec![site.clone()], 0, u64::MAX).unwrap();
        plain.task_for(site).unwrap().body
    };
    let task = Task {
        study_id: spec.id.clone(),
        study_hash: spec.hash(),
        study_spec_json: spec.canonical_json(),
        round: 1,
        body: plain_task,
    };
    let r = answer_with_memory(&task, table, &policy(), &mut SiteMemory::default());
    let ResultBody::Failure(f) = r.result.body else {
        panic!("{:?}", r.result.body)
    };
    assert!(
        f.message.contains("asks for secure aggregation"),
        "{}",
        f.message
    );
    // The option is part of the hash only when on.
    assert!(
        !lasso(false, 0)
            .canonical_json()
            .contains("secure_aggregation")
    );
    assert_ne!(lasso(false, 0).hash(), lasso(true, 0).hash());
}

/// A secure LASSO whose aggregator state is written and read back after every accepted result
/// (as the aggregator persists it) ends exactly as an undisturbed secure run with the same
/// site sessions: the masked rounds' state (keys, round ids, the open round) survives.
#[test]
fn a_secure_lasso_resumed_from_its_persisted_state_ends_identically() {
    let tables = tables();
    let spec = lasso(true, 2);
    let run = |persist: bool| {
        let mut state =
            StudyState::new(spec.clone(), tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
        let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
        while !state.status.is_finished() {
            assert!(state.round < 1000);
            // Results received in the open round are held in memory by the aggregator (a
            // restart asks the sites again); here they are handed back after each reload.
            let mut received = Vec::new();
            for (site, table) in &tables {
                let round = state.round;
                let task = state.task_for(site).unwrap();
                let memory = memories.entry(site.clone()).or_default();
                let result = answer_with_memory(&task, table, &policy(), memory).result;
                received.push((site.clone(), result.body.clone(), 0));
                state.accept(site, result, 0, 0).unwrap();
                if persist {
                    let json = serde_json::to_string(&state).unwrap();
                    state = serde_json::from_str(&json).unwrap();
                    if state.round == round && !state.status.is_finished() {
                        state.restore(received.clone(), 0);
                    }
                }
            }
        }
        state
    };
    let (a, b) = (run(false), run(true));
    assert_eq!(a.status, StudyStatus::Completed, "{}", a.status.describe());
    // Fresh keys per run: the masks differ, the decoded sums and so the output do not.
    assert_eq!(a.output, b.output);
    assert_eq!(a.round, b.round);
}

/// The masked standardisation against the exact one: per feature, the full-data SD from the
/// sites' masked power sums and from the plain path's merged Welford moments, each against a
/// two-pass SD over the pooled rows. The masked error is f64's cancellation in
/// Σvx² − (Σvx)²/V, bounded in `federation::lasso::secure` by about 4·2^−53·(1 + mean²/var)
/// relative on the variance (half that on the SD); the fixed point adds nothing measurable.
#[test]
fn the_masked_standardisation_is_within_f64_cancellation_of_the_exact_sd() {
    let plain = run_with(lasso(false, 0), &policy());
    let secure = run_with(lasso(true, 0), &policy());
    let (pp, sp) = (
        &output(&plain).result.cv.path,
        &output(&secure).result.cv.path,
    );
    let tables = tables();
    for (j, f) in FEATURES.iter().enumerate() {
        let xs: Vec<f64> = tables
            .values()
            .flat_map(|t| t.numeric_column(f).unwrap())
            .map(Option::unwrap)
            .collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let sd = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        let (ep, es) = ((pp.sd[j] - sd) / sd, (sp.sd[j] - sd) / sd);
        let ratio = mean / sd;
        println!("{f}: mean/SD {ratio:.1}, SD relative error plain {ep:.1e}, masked {es:.1e}");
        let bound = 4.0 * 2f64.powi(-53) * (1.0 + ratio * ratio) + 1e-15;
        assert!(
            es.abs() <= bound,
            "{f}: masked SD off by {es:e} (bound {bound:e})"
        );
        assert!(ep.abs() <= 1e-15, "{f}: plain SD off by {ep:e}");
    }
}

/// A secure pipeline whose site misses the deadline of a masked LASSO round
/// (`on_masked_dropout = "continue_without_site"`): the site is left out, every LASSO fit of the
/// batch starts again over the survivors (the restarted round asks for the moments again, under
/// a fresh round id, without the site), and the study completes naming the dropped site.
#[test]
fn a_site_missing_a_masked_pipeline_lasso_round_is_left_out_and_the_lasso_restarts() {
    use federation::secure::SumShape;
    let tables = tables();
    // The shared test pipeline (1 repeat), secure, continuing without a dropped site.
    let toml = common::spec_toml(1).replacen(
        "kind = \"pipeline\"\n",
        "kind = \"pipeline\"\nsecure_aggregation = true\non_masked_dropout = \"continue_without_site\"\n",
        1,
    );
    let spec = StudySpec::from_toml(&toml).unwrap();
    assert!(spec.secure_aggregation());
    let silent = tables.keys().nth(2).unwrap().clone();
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, 60_000).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut lasso_irls_seen = false;
    let round = loop {
        assert!(!state.status.is_finished(), "{:?}", state.status);
        // The first masked LASSO round with IRLS sums (the fits are under way).
        let in_lasso_irls = state.task_for(&silent).is_some_and(|t| {
            matches!(&t.body, TaskBody::Masked(m) if matches!(&m.shape,
                SumShape::PipelineLasso { fits, .. }
                    if fits.iter().flat_map(|(_, s)| s).any(|s| !matches!(
                        s.kind, federation::lasso::secure::SlotKind::Moments))))
        });
        if in_lasso_irls {
            lasso_irls_seen = true;
        }
        for (s, t) in &tables {
            let task = state.task_for(s).unwrap();
            if in_lasso_irls && *s == silent {
                continue;
            }
            let memory = memories.entry(s.clone()).or_default();
            let result = answer_with_memory(&task, t, &policy(), memory).result;
            state.accept(s, result, 0, 1_000).unwrap();
        }
        if in_lasso_irls {
            break state.round;
        }
    };
    assert!(lasso_irls_seen);
    assert!(state.tick(100_000), "the deadline passed");
    assert_eq!(state.round, round + 1, "{:?}", state.status);
    assert!(!state.sites.contains(&silent));
    // The restarted round: the LASSO's moments again, over the survivors only.
    for s in &state.sites {
        let TaskBody::Masked(m) = state.task_for(s).unwrap().body else {
            panic!("the restarted round is masked")
        };
        assert!(!m.round.contains(silent.as_str()));
        let SumShape::PipelineLasso { fits, .. } = &m.shape else {
            panic!("{:?}", m.shape)
        };
        assert!(
            fits.iter()
                .flat_map(|(_, s)| s)
                .all(|s| s.kind == federation::lasso::secure::SlotKind::Moments)
        );
    }
    let survivors = state.sites.clone();
    let mut now = 100_001;
    while !state.status.is_finished() {
        for s in &survivors {
            let Some(task) = state.task_for(s) else {
                continue;
            };
            let result =
                answer_with_memory(&task, &tables[s], &policy(), memories.get_mut(s).unwrap())
                    .result;
            state.accept(s, result, 0, now).unwrap();
            now += 1;
        }
    }
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    let Some(StudyOutput::Pipeline(out)) = &state.output else {
        panic!("a pipeline output")
    };
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
            .is_some_and(|d| d.contains("LASSO")),
        "{entry:?}"
    );
    assert!(out.cv.per_fit.iter().all(|f| f.selected.len() == 5));
}

// `require_secure_aggregation` and a secure pipeline: every summed stage of the pipeline
// (ComBat's sums and the z-score included) now has a masked form, so such a site takes part;
// tested in `secure_pipeline_combat.rs`
// (`a_site_requiring_secure_aggregation_takes_part_in_a_secure_pipeline`).
