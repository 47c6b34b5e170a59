//! The pipeline's metrics stage driven directly (MetricsDriver + the site half) on synthetic
//! per-site probabilities: the exact path equals `stats::metrics::exact` on the pooled rows, the
//! count path equals it when no two scores share a bin and stays within the stated resolution
//! bound otherwise, survival equals `stats::survival` on the pooled rows at `min_count = 1`, no
//! message reveals a single patient's value, and bad input becomes notes.

mod common;

use federation::SiteId;
use federation::pipeline::PipelineSpec;
use federation::pipeline::StageResult;
use federation::pipeline::metrics::{
    GroupRelease, MetricsDriver, MetricsInputs, MetricsResult, MetricsTask, ReleasedTimes,
    ScoreRelease, SurvivalColumns, TIME_GRID_STEP, site_metrics,
};
use federation::policy::SitePolicy;
use federation::task::ResultBody;
use stats::metrics::{
    BootstrapOptions, MetricOptions, PooledScoreTable, RankedCells, bootstrap_cis, exact,
};
use stats::report::Report;
use stats::survival::{CoxTies, GroupTable, KmCi, NewtonOptions, fit_cox_patients, kaplan_meier};
use std::collections::BTreeMap;

/// splitmix64: a small deterministic generator for the synthetic cohorts.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unif(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn spec(survival: bool, clinical: bool, bootstrap: u32) -> PipelineSpec {
    let mut t = String::from(
        "label_column = \"response\"\nfeatures = [\"f1\", \"f2\", \"f3\", \"f4\", \"f5\"]\n[metrics]\nbins = 1000\nseed = 7\n",
    );
    t += &format!("bootstrap = {bootstrap}\n");
    if survival {
        t += "time_column = \"pfs_months\"\nevent_column = \"pfs_event\"\n";
    }
    if clinical {
        t += "[clinical]\nnumeric = [\"ki67\"]\n";
    }
    let s: PipelineSpec = toml::from_str(&t).unwrap();
    s.validate().unwrap();
    s
}

/// One synthetic site: its inputs and its policy.
struct Site {
    id: SiteId,
    inputs: MetricsInputs,
    policy: SitePolicy,
}

fn policy(min_count: u64, release: bool) -> SitePolicy {
    SitePolicy {
        min_count,
        release_predictions: release,
        allow_all_studies: true,
        ..SitePolicy::default()
    }
}

/// Sites of the given sizes. Responders get higher ML scores (AUC ≈ 0.8) and clinical scores
/// correlated with them; responders progress later. With `distinct_bins`, every patient of the
/// study gets its own bin of the 1000-bin grid under each model (no two scores share a bin).
fn cohort(
    sizes: &[usize],
    seed: u64,
    distinct_bins: bool,
    min_count: u64,
    release: bool,
) -> Vec<Site> {
    let mut rng = Rng(seed);
    let total: usize = sizes.iter().sum();
    // Distinct bins per model: a random permutation of 1000 bins, taken in order.
    let perm = |rng: &mut Rng| {
        let mut v: Vec<u32> = (0..1000).collect();
        for i in (1..v.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    };
    let bins_ml = perm(&mut rng);
    let bins_cl = perm(&mut rng);
    assert!(total <= 1000);
    let mut k = 0;
    let mut sites = Vec::new();
    for (s, &n) in sizes.iter().enumerate() {
        let mut labels = Vec::new();
        let mut ml = Vec::new();
        let mut cl = Vec::new();
        let mut times = Vec::new();
        let mut events = Vec::new();
        for _ in 0..n {
            let y = rng.unif() < 0.4;
            let (pm, pc) = if distinct_bins {
                // One bin per patient and model; the signal is added below by reassigning.
                let pm = (bins_ml[k] as f64 + 0.1 + 0.8 * rng.unif()) / 1000.0;
                let pc = (bins_cl[k] as f64 + 0.1 + 0.8 * rng.unif()) / 1000.0;
                (pm, pc)
            } else {
                let pm: f64 = if y {
                    0.3 + 0.6 * rng.unif()
                } else {
                    0.1 + 0.5 * rng.unif()
                };
                let pc = (0.6 * pm + 0.4 * rng.unif()).clamp(0.0, 1.0);
                ((pm * 100.0).round() / 100.0, (pc * 100.0).round() / 100.0)
            };
            k += 1;
            // Exponential PFS, longer for responders, one decimal (ties across patients happen).
            let rate = if y { 0.06 } else { 0.15 };
            let t = (-(1.0 - rng.unif()).ln() / rate).max(0.1);
            let t = ((t * 10.0).round() / 10.0).max(0.1);
            let c = 6.0 + 30.0 * rng.unif();
            let (t, e) = if t <= c {
                (t, true)
            } else {
                ((c * 10.0).round() / 10.0, false)
            };
            labels.push(y);
            ml.push(Some(pm));
            cl.push(Some(pc));
            times.push(Some(t));
            events.push(Some(if e { 1.0 } else { 0.0 }));
        }
        let survival = Some(SurvivalColumns::checked(
            "pfs_months",
            "pfs_event",
            &times,
            &events,
        ));
        sites.push(Site {
            id: SiteId::new(format!("S{:02}", s + 1)).unwrap(),
            inputs: MetricsInputs {
                labels,
                ml,
                clinical: Some(cl),
                survival,
            },
            policy: policy(min_count, release),
        });
    }
    // With distinct bins the scores above carry no signal; give them one by sorting each
    // model's scores and handing the high ones to responders (keeps every score in its own bin).
    if distinct_bins {
        for model in 0..2 {
            let mut all: Vec<f64> = Vec::new();
            let mut who: Vec<(usize, usize, f64)> = Vec::new();
            for (s, site) in sites.iter().enumerate() {
                let v = if model == 0 {
                    &site.inputs.ml
                } else {
                    site.inputs.clinical.as_ref().unwrap()
                };
                for (i, p) in v.iter().enumerate() {
                    all.push(p.unwrap());
                    let noise = rng.unif() * if model == 0 { 3.0 } else { 4.0 };
                    let key = f64::from(u8::from(site.inputs.labels[i])) + noise;
                    who.push((s, i, key));
                }
            }
            all.sort_by(f64::total_cmp);
            who.sort_by(|a, b| a.2.total_cmp(&b.2));
            for ((s, i, _), p) in who.into_iter().zip(all) {
                let v = if model == 0 {
                    &mut sites[s].inputs.ml
                } else {
                    sites[s].inputs.clinical.as_mut().unwrap()
                };
                v[i] = Some(p);
            }
        }
    }
    sites
}

/// Every message of a run: (site, task, answer) per round.
type Transcript = Vec<Vec<(SiteId, MetricsTask, MetricsResult)>>;

fn run(spec: &PipelineSpec, sites: &[Site]) -> (Report, Transcript) {
    let mut d = MetricsDriver::new(spec, sites.len());
    let mut transcript = Vec::new();
    for _ in 0..5 {
        let mut results = BTreeMap::new();
        let mut round = Vec::new();
        for s in sites {
            let task = d.task_for(&s.id);
            let answer = site_metrics(&s.inputs, &task, &s.policy).unwrap();
            // The site's single gate: no released count below min_count.
            let gate = StageResult::Metrics(answer.clone()).released_counts();
            assert!(
                gate.iter().all(|&c| c >= s.policy.min_count),
                "gate: {gate:?} at {}",
                s.id
            );
            results.insert(
                s.id.clone(),
                ResultBody::Pipeline(StageResult::Metrics(answer.clone())),
            );
            round.push((s.id.clone(), task, answer));
        }
        transcript.push(round);
        if let Some(r) = d.on_round(&results).unwrap() {
            // The report survives JSON (the aggregator persists it).
            let json = serde_json::to_string(&r).unwrap();
            let back: Report = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
            return (r, transcript);
        }
    }
    panic!("the metrics stage did not finish in 5 rounds");
}

/// Pooled rows (SiteId order) of the analysis set: (ml, clinical, labels, times, events, site).
#[allow(clippy::type_complexity)]
fn pooled_rows(
    sites: &[Site],
) -> (
    Vec<f64>,
    Vec<f64>,
    Vec<bool>,
    Vec<f64>,
    Vec<bool>,
    Vec<usize>,
) {
    let mut out = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (k, s) in sites.iter().enumerate() {
        let surv = s.inputs.survival.as_ref().unwrap().as_ref().unwrap();
        for i in 0..s.inputs.labels.len() {
            out.0.push(s.inputs.ml[i].unwrap());
            out.1.push(s.inputs.clinical.as_ref().unwrap()[i].unwrap());
            out.2.push(s.inputs.labels[i]);
            out.3.push(surv.times[i]);
            out.4.push(surv.events[i]);
            out.5.push(k);
        }
    }
    out
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
        "{what}: {a} vs {b} (tol {tol})"
    );
}

fn opt(a: Option<f64>, b: f64, tol: f64, what: &str) {
    match a {
        Some(a) => close(a, b, tol, what),
        None => assert!(!b.is_finite(), "{what}: None vs {b}"),
    }
}

/// The model report equals a per-patient metric set to `tol`.
fn assert_model_equals(r: &stats::report::ModelReport, m: &stats::metrics::MetricSet, tol: f64) {
    opt(r.auc.value, m.auc.auc, tol, "auc");
    opt(r.auc.ci_lower, m.auc.ci_lower, tol, "auc lower");
    opt(r.auc.ci_upper, m.auc.ci_upper, tol, "auc upper");
    close(r.cutoff, m.youden.threshold, tol, "cutoff");
    close(r.youden_j, m.youden.j, tol, "youden j");
    assert_eq!(r.confusion, m.confusion);
    opt(r.accuracy.value, m.accuracy, tol, "accuracy");
    opt(r.sensitivity.value, m.sensitivity, tol, "sensitivity");
    opt(r.specificity.value, m.specificity, tol, "specificity");
    opt(r.ppv.value, m.ppv, tol, "ppv");
    opt(r.npv.value, m.npv, tol, "npv");
    opt(r.f1.value, m.f1, tol, "f1");
    opt(r.brier.value, m.brier, tol, "brier");
    close(
        r.hosmer_lemeshow.statistic,
        m.calibration.hosmer_lemeshow.statistic,
        tol * 1e3,
        "HL",
    );
    assert_eq!(r.calibration.len(), m.calibration.bins.len());
    for (a, b) in r.calibration.iter().zip(&m.calibration.bins) {
        assert_eq!(a.n, b.n);
        close(a.mean_predicted, b.mean_predicted, tol, "calibration mean");
    }
    assert_eq!(r.decision_curve.len(), m.decision_curve.len());
    for (a, b) in r.decision_curve.iter().zip(&m.decision_curve) {
        close(a.net_benefit, b.net_benefit, tol, "net benefit");
    }
    assert_eq!(r.roc.len(), m.roc.len());
}

fn boot_opts(b: u32) -> BootstrapOptions {
    BootstrapOptions {
        replicates: b as usize,
        seed: 7,
        conf_level: 0.95,
    }
}

fn assert_boot_equals(r: &stats::report::ModelReport, b: &stats::metrics::BootstrapCis, tol: f64) {
    let ab = r.auc_bootstrap.as_ref().expect("bootstrap CI");
    opt(ab.ci_lower, b.auc.lower, tol, "boot auc lower");
    opt(ab.ci_upper, b.auc.upper, tol, "boot auc upper");
    for (e, c, what) in [
        (&r.accuracy, &b.accuracy, "accuracy"),
        (&r.sensitivity, &b.sensitivity, "sensitivity"),
        (&r.specificity, &b.specificity, "specificity"),
        (&r.f1, &b.f1, "f1"),
        (&r.brier, &b.brier, "brier"),
    ] {
        opt(e.ci_lower, c.lower, tol, what);
        opt(e.ci_upper, c.upper, tol, what);
        assert!(e.ci_method.as_deref().unwrap().contains("bootstrap"));
    }
}

const SIZES: [usize; 7] = [21, 18, 16, 14, 12, 11, 10];

#[test]
fn exact_path_equals_the_per_patient_reference() {
    let spec = spec(false, true, 400);
    let sites = cohort(&SIZES, 1, false, 5, true);
    let (r, transcript) = run(&spec, &sites);
    assert_eq!(r.source, stats::report::MetricsSource::Exact);
    // Rows need no follow-up round for the paired test.
    assert_eq!(transcript.len(), 1);
    let (ml, cl, y, ..) = pooled_rows(&sites);
    let o = MetricOptions::default();
    let m_ml = exact::evaluate(&ml, &y, &o).unwrap();
    let m_cl = exact::evaluate(&cl, &y, &o).unwrap();
    assert_eq!(r.models.len(), 2, "{:?}", r.notes);
    assert_model_equals(&r.models[0], &m_ml, 1e-12);
    assert_model_equals(&r.models[1], &m_cl, 1e-12);
    // Bootstrap: the multinomial bootstrap on one tie group per distinct probability (exactly),
    // and the per-patient index bootstrap within Monte-Carlo error.
    let rc = RankedCells::from_patients(&ml, &y).unwrap();
    let b = bootstrap_cis(&rc, m_ml.youden.threshold, &boot_opts(400)).unwrap();
    assert_boot_equals(&r.models[0], &b, 0.0);
    let b_idx = exact::bootstrap(&ml, &y, m_ml.youden.threshold, &boot_opts(400)).unwrap();
    assert_boot_equals(&r.models[0], &b_idx, 0.04);
    // Paired DeLong per patient.
    let d = exact::paired_delong(&ml, &cl, &y, 0.95).unwrap();
    let c = &r.comparisons[0].delong;
    for (a, b, w) in [
        (c.auc_a, d.auc_a, "auc a"),
        (c.auc_b, d.auc_b, "auc b"),
        (c.covariance, d.covariance, "cov"),
        (c.z, d.z, "z"),
        (c.p_value, d.p_value, "p"),
    ] {
        close(a, b, 1e-12, w);
    }
}

#[test]
fn count_path_equals_exact_when_no_two_scores_share_a_bin() {
    let spec = spec(false, true, 300);
    let exact_sites = cohort(&SIZES, 2, true, 1, true);
    let count_sites = cohort(&SIZES, 2, true, 1, false);
    let (re, _) = run(&spec, &exact_sites);
    let (rc, transcript) = run(&spec, &count_sites);
    assert!(matches!(
        rc.source,
        stats::report::MetricsSource::CountTables {
            score_bins: 1000,
            max_min_count: 1
        }
    ));
    // Round 2 carries the cross placements of the paired test.
    assert_eq!(transcript.len(), 2);
    let (ml, cl, y, ..) = pooled_rows(&count_sites);
    let o = MetricOptions::default();
    let m_ml = exact::evaluate(&ml, &y, &o).unwrap();
    let m_cl = exact::evaluate(&cl, &y, &o).unwrap();
    // Signal present (the synthetic scores are informative).
    assert!(m_ml.auc.auc > 0.65, "{}", m_ml.auc.auc);
    assert_eq!(rc.models[0].auc_resolution_bound, Some(0.0));
    // Cell means equal the single probability of each bin: every metric as exact.
    assert_model_equals(&rc.models[0], &m_ml, 1e-12);
    assert_model_equals(&rc.models[1], &m_cl, 1e-12);
    // Same cells, same order, same seed: the two paths' bootstrap CIs are identical.
    for k in 0..2 {
        let (a, b) = (
            rc.models[k].auc_bootstrap.as_ref().unwrap(),
            re.models[k].auc_bootstrap.as_ref().unwrap(),
        );
        assert_eq!((a.ci_lower, a.ci_upper), (b.ci_lower, b.ci_upper));
        for (a, b) in [
            (&rc.models[k].f1, &re.models[k].f1),
            (&rc.models[k].brier, &re.models[k].brier),
            (&rc.models[k].sensitivity, &re.models[k].sensitivity),
        ] {
            assert_eq!((a.ci_lower, a.ci_upper), (b.ci_lower, b.ci_upper));
        }
    }
    let d = exact::paired_delong(&ml, &cl, &y, 0.95).unwrap();
    let c = &rc.comparisons[0].delong;
    close(c.covariance, d.covariance, 1e-12, "cov");
    close(c.z, d.z, 1e-10, "z");
    close(c.p_value, d.p_value, 1e-12, "p");
    assert!(rc.comparisons[0].source.contains("two rounds"));
}

#[test]
fn merged_cells_stay_within_the_resolution_bound() {
    let spec = spec(false, true, 200);
    for min_count in [3, 5] {
        let sites = cohort(&SIZES, 3, false, min_count, false);
        let (r, _) = run(&spec, &sites);
        let (ml, cl, y, ..) = pooled_rows(&sites);
        let o = MetricOptions::default();
        for (m, p) in [(&r.models[0], &ml), (&r.models[1], &cl)] {
            let e = exact::evaluate(p, &y, &o).unwrap();
            let bound = m.auc_resolution_bound.unwrap();
            let auc = m.auc.value.unwrap();
            assert!(
                (auc - e.auc.auc).abs() <= bound + 1e-12,
                "min_count {min_count}: |{auc} - {}| > {bound}",
                e.auc.auc
            );
            // Brier is exact from the cells' Σ(p − y)².
            close(m.brier.value.unwrap(), e.brier, 1e-12, "brier");
            assert!(m.auc_bootstrap.is_some());
        }
        // The paired test of the binned data: its AUCs are the reported count-path AUCs.
        let c = &r.comparisons[0].delong;
        close(
            c.auc_a,
            r.models[0].auc.value.unwrap(),
            1e-12,
            "paired auc a",
        );
        close(
            c.auc_b,
            r.models[1].auc.value.unwrap(),
            1e-12,
            "paired auc b",
        );
        assert!(c.p_value.is_finite());
        assert!(
            r.notes.iter().any(|n| n.contains("resolution bound")),
            "{:?}",
            r.notes
        );
    }
}

#[test]
fn survival_equals_the_pooled_reference_at_min_count_one() {
    let spec = spec(true, true, 100);
    let sites = cohort(&SIZES, 4, true, 1, false);
    let (r, transcript) = run(&spec, &sites);
    assert_eq!(transcript.len(), 2);
    let (ml, _, y, times, events, site) = pooled_rows(&sites);
    let t = exact::youden(&ml, &y).unwrap().threshold;
    close(r.models[0].cutoff, t, 1e-15, "cutoff");
    assert_eq!(r.survival.len(), 2, "{:?}", r.notes);
    let newton = NewtonOptions::default();
    for (s, group) in r
        .survival
        .iter()
        .zip([ml.iter().map(|&p| p >= t).collect::<Vec<bool>>(), y.clone()])
    {
        assert_eq!(
            s.time_resolution,
            "exact event and censoring times at every site"
        );
        for g in 0..2 {
            let idx: Vec<usize> = (0..y.len()).filter(|&i| group[i] == (g == 1)).collect();
            let tt: Vec<f64> = idx.iter().map(|&i| times[i]).collect();
            let ee: Vec<bool> = idx.iter().map(|&i| events[i]).collect();
            let km = kaplan_meier(
                &GroupTable::from_patients(&tt, &ee).unwrap(),
                KmCi::LogLog,
                0.95,
            )
            .unwrap();
            let c = &s.curves[g];
            assert_eq!(c.n, km.n);
            assert_eq!(c.events, km.events);
            assert_eq!(c.median.value, km.median);
            assert_eq!(c.median.ci_lower, km.median_ci_lower);
            assert_eq!(c.median.ci_upper, km.median_ci_upper);
            assert_eq!(c.steps.len(), km.points.len());
            for (a, b) in c.steps.iter().zip(&km.points) {
                close(a.time, b.time, 0.0, "time");
                close(a.survival, b.survival, 1e-12, "S(t)");
                opt(a.ci_lower, b.ci_lower, 1e-12, "S lower");
                assert_eq!(a.at_risk, b.at_risk);
            }
        }
        // Log-rank against the per-patient life tables.
        let pt = |g: bool| {
            let idx: Vec<usize> = (0..y.len()).filter(|&i| group[i] == g).collect();
            GroupTable::from_patients(
                &idx.iter().map(|&i| times[i]).collect::<Vec<_>>(),
                &idx.iter().map(|&i| events[i]).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let two = stats::survival::TwoGroupTable::align(&pt(false), &pt(true));
        let lr = stats::survival::log_rank(&two).unwrap();
        close(s.log_rank.statistic, lr.statistic, 1e-10, "log-rank");
        close(s.log_rank.p_value, lr.p_value, 1e-12, "log-rank p");
        // Cox per patient: unstratified, and stratified by site.
        let x: Vec<Vec<f64>> = group
            .iter()
            .map(|&g| vec![f64::from(u8::from(g))])
            .collect();
        let pooled = fit_cox_patients(
            &times,
            &events,
            &x,
            &vec![0; x.len()],
            CoxTies::Efron,
            &newton,
        )
        .unwrap();
        let strat = fit_cox_patients(&times, &events, &x, &site, CoxTies::Efron, &newton).unwrap();
        assert_eq!(s.cox.len(), 2);
        for (c, f, name) in [
            (&s.cox[0], &pooled, "pooled"),
            (&s.cox[1], &strat, "site-stratified"),
        ] {
            assert!(c.model.starts_with(name));
            assert_eq!(c.ties, "Efron");
            let k = f.coefficients[0];
            close(c.hazard_ratio.value.unwrap(), k.hazard_ratio, 1e-9, "HR");
            close(
                c.hazard_ratio.ci_lower.unwrap(),
                k.hr_ci_lower,
                1e-9,
                "HR lower",
            );
            close(
                c.hazard_ratio.ci_upper.unwrap(),
                k.hr_ci_upper,
                1e-9,
                "HR upper",
            );
            close(c.p_value, k.p_value, 1e-9, "Wald p");
        }
    }
}

#[test]
fn coarsened_survival_runs_and_says_so() {
    let spec = spec(true, true, 100);
    let sites = cohort(&[40, 35, 30], 5, false, 3, false);
    let (r, transcript) = run(&spec, &sites);
    let last = transcript.last().unwrap();
    let grid_sites = last
        .iter()
        .filter(|(_, _, a)| {
            matches!(a, MetricsResult::FollowUp(f) if matches!(
                f.survival.as_ref().map(|s| &s.by_response),
                Some(GroupRelease::Table { times: ReleasedTimes::Grid { step }, .. }) if *step == TIME_GRID_STEP
            ))
        })
        .count();
    assert!(grid_sites > 0);
    // Survival by response is computed on the coarsened tables, and the report says how.
    let s = r
        .survival
        .iter()
        .find(|s| s.grouping == "observed response")
        .unwrap_or_else(|| panic!("{:?}", r.notes));
    assert!(
        s.time_resolution.contains("time grid"),
        "{}",
        s.time_resolution
    );
    assert_eq!(s.curves.len(), 2);
}

/// Every value a metrics message carries is an aggregate over at least min_count patients.
#[test]
fn no_message_reveals_a_single_patient() {
    let spec = spec(true, true, 100);
    let min_count = 5;
    let sites = cohort(&[40, 35, 30, 25], 6, false, min_count, false);
    let (report, transcript) = run(&spec, &sites);
    eprintln!("{}", serde_json::to_string_pretty(&report.notes).unwrap());
    for s in &report.survival {
        eprintln!("{} / {}: {:?}", s.grouping, s.time_resolution, s.cox);
    }
    assert_eq!(transcript.len(), 2);
    let mut checked_cells = 0;
    let mut checked_rows = 0;
    for round in &transcript {
        for (id, task, answer) in round {
            let site = sites.iter().find(|s| &s.id == id).unwrap();
            let ml: Vec<f64> = site.inputs.ml.iter().map(|p| p.unwrap()).collect();
            let cl: Vec<f64> = site
                .inputs
                .clinical
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.unwrap())
                .collect();
            let surv = site.inputs.survival.as_ref().unwrap().as_ref().unwrap();
            match answer {
                MetricsResult::Scores {
                    ml: m, clinical, ..
                } => {
                    for (r, p) in [(m, &ml), (clinical.as_ref().unwrap(), &cl)] {
                        let ScoreRelease::Table(t) = r else {
                            panic!("a count-table site released {r:?}")
                        };
                        for (ci, c) in t.cells.iter().enumerate() {
                            // The cell's numbers are sums over its patients, and there are ≥ min_count.
                            let members: Vec<f64> = p
                                .iter()
                                .copied()
                                .filter(|&x| t.cell_index(x) == Some(ci))
                                .collect();
                            assert_eq!(members.len() as u64, c.n());
                            assert!(c.n() >= min_count, "{id}: cell of {}", c.n());
                            close(c.sum_p, members.iter().sum(), 1e-12, "cell sum");
                            checked_cells += 1;
                        }
                    }
                }
                MetricsResult::FollowUp(f) => {
                    let MetricsTask::FollowUp(task) = task else {
                        panic!()
                    };
                    // Cross placements: one sum per released ML cell (≥ min_count patients each).
                    let cells = match &transcript[0].iter().find(|r| &r.0 == id).unwrap().2 {
                        MetricsResult::Scores {
                            ml: ScoreRelease::Table(t),
                            ..
                        } => t.cells.len(),
                        _ => unreachable!(),
                    };
                    assert_eq!(f.cross_placements.as_ref().unwrap().len(), cells);
                    assert_eq!(
                        task.survival
                            .as_ref()
                            .unwrap()
                            .predicted_high
                            .as_ref()
                            .unwrap()
                            .len(),
                        cells
                    );
                    let s = f.survival.as_ref().unwrap();
                    for g in s.by_predicted.iter().chain([&s.by_response]) {
                        let GroupRelease::Table { table, times } = g else {
                            continue;
                        };
                        for cell in table.groups.iter().flatten() {
                            assert!(cell.events + cell.censored >= min_count);
                            // A released time is a grid point, or shared by ≥ min_count patients.
                            let sharing =
                                surv.times.iter().filter(|&&t| t == cell.time).count() as u64;
                            match times {
                                ReleasedTimes::Exact => assert!(sharing >= min_count),
                                ReleasedTimes::Grid { step } => {
                                    // A grid point of the study, not a patient's own time.
                                    let k = cell.time / step;
                                    assert_eq!(k, k.round(), "not a grid point: {}", cell.time);
                                    let _ = sharing;
                                }
                            }
                            checked_rows += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked_cells > 8 && checked_rows > 4,
        "{checked_cells} {checked_rows}"
    );
}

fn notes_contain(r: &Report, s: &str) -> bool {
    r.notes.iter().any(|n| n.contains(s))
}

#[test]
fn bad_input_becomes_notes() {
    let spec = spec(true, true, 50);
    // One class only.
    let mut sites = cohort(&SIZES, 8, false, 5, false);
    for s in &mut sites {
        s.inputs.labels.iter_mut().for_each(|y| *y = false);
    }
    let (r, _) = run(&spec, &sites);
    assert!(r.models.is_empty());
    assert!(
        notes_contain(&r, "stacked ML model: metrics not computed"),
        "{:?}",
        r.notes
    );
    assert!(notes_contain(&r, "positives"), "{:?}", r.notes);
    assert!(
        notes_contain(&r, "survival by predicted group: not computed"),
        "{:?}",
        r.notes
    );
    assert!(
        notes_contain(&r, "Kaplan-Meier of responders not computed"),
        "{:?}",
        r.notes
    );

    // No events.
    let mut sites = cohort(&SIZES, 9, false, 5, false);
    for s in &mut sites {
        let c = s.inputs.survival.as_mut().unwrap().as_mut().unwrap();
        c.events.iter_mut().for_each(|e| *e = false);
    }
    let (r, _) = run(&spec, &sites);
    assert_eq!(r.models.len(), 2);
    assert!(r.survival.is_empty());
    assert!(
        notes_contain(&r, "log-rank test not computed"),
        "{:?}",
        r.notes
    );

    // All scores equal.
    let mut sites = cohort(&SIZES, 10, false, 5, false);
    for s in &mut sites {
        s.inputs.ml.iter_mut().for_each(|p| *p = Some(0.5));
    }
    let (r, _) = run(&spec, &sites);
    assert!(
        notes_contain(&r, "every patient has the same score"),
        "{:?}",
        r.notes
    );
    assert_eq!(r.models[0].auc.value, Some(0.5));
    assert!(
        notes_contain(&r, "Kaplan-Meier of predicted low not computed"),
        "{:?}",
        r.notes
    );

    // Times ≤ 0 at one site; NaN scores at another.
    let mut sites = cohort(&SIZES, 11, false, 5, false);
    let mut times: Vec<Option<f64>> = sites[2]
        .inputs
        .survival
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .times
        .iter()
        .map(|&t| Some(t))
        .collect();
    times[3] = Some(0.0);
    let events: Vec<Option<f64>> = vec![Some(1.0); times.len()];
    sites[2].inputs.survival = Some(SurvivalColumns::checked(
        "pfs_months",
        "pfs_event",
        &times,
        &events,
    ));
    sites[4].inputs.ml[1] = Some(f64::NAN);
    let (r, _) = run(&spec, &sites);
    assert!(
        notes_contain(
            &r,
            "site S03 sat out: column \"pfs_months\" holds a time ≤ 0"
        ),
        "{:?}",
        r.notes
    );
    assert!(
        notes_contain(&r, "stacked ML model: site S05 sat out"),
        "{:?}",
        r.notes
    );
    assert_eq!(r.models.len(), 2, "{:?}", r.notes);
    assert!(
        notes_contain(&r, "paired DeLong test: computed on the 6 sites"),
        "{:?}",
        r.notes
    );
    // Negative times everywhere: no survival at all, still a report.
    let mut sites = cohort(&[20, 20], 12, false, 5, false);
    for s in &mut sites {
        let n = s.inputs.labels.len();
        s.inputs.survival = Some(SurvivalColumns::checked(
            "pfs_months",
            "pfs_event",
            &vec![Some(-1.0); n],
            &vec![Some(1.0); n],
        ));
    }
    let (r, _) = run(&spec, &sites);
    assert!(r.survival.is_empty());
    assert!(
        notes_contain(&r, "no site released a survival table"),
        "{:?}",
        r.notes
    );
    assert_eq!(r.models.len(), 2);
}

#[test]
fn pooled_placements_match_the_sites_tables() {
    // Sanity of the follow-up task: one placement per released clinical cell.
    let spec = spec(false, true, 50);
    let sites = cohort(&[30, 30], 13, false, 5, false);
    let (_, transcript) = run(&spec, &sites);
    let tables: Vec<_> = transcript[0]
        .iter()
        .map(|(_, _, a)| match a {
            MetricsResult::Scores {
                clinical: Some(ScoreRelease::Table(t)),
                ..
            } => t.clone(),
            _ => unreachable!(),
        })
        .collect();
    let pooled = PooledScoreTable::pool(&tables).unwrap();
    for ((_, task, _), t) in transcript[1].iter().zip(&tables) {
        let MetricsTask::FollowUp(f) = task else {
            panic!()
        };
        assert_eq!(
            f.cross_placements.as_ref().unwrap(),
            &pooled.site_placements(t)
        );
    }
}

/// The whole study in process on the 7-site example cohort with its PFS columns: the metrics
/// stage's per-site follow-up round passes every site's gate and the report has the paired test
/// and, per grouping, either the survival analysis or the notes saying why not.
#[test]
fn whole_study_with_survival_on_the_example_cohort() {
    // The shared pipeline fixture with the cohort's PFS columns switched on.
    let toml = format!(
        "{}\n[analysis.metrics]\nbootstrap = 500\ntime_column = \"pfs_months\"\nevent_column = \"pfs_event\"\n",
        common::spec_toml(1)
    );
    let o = common::run(&toml, common::cohort(), false);
    let r = &o.metrics;
    eprintln!("{}", serde_json::to_string_pretty(&r.notes).unwrap());
    assert_eq!(r.models.len(), 2, "{:?}", r.notes);
    assert!(r.models.iter().all(|m| m.auc_bootstrap.is_some()));
    assert_eq!(r.comparisons.len(), 1, "{:?}", r.notes);
    for grouping in ["predicted group", "observed response"] {
        let done = r.survival.iter().any(|s| s.grouping.starts_with(grouping));
        let noted = r
            .notes
            .iter()
            .any(|n| n.starts_with(&format!("survival by {grouping}")));
        assert!(done || noted, "{grouping}: {:?}", r.notes);
    }
    for s in &r.survival {
        eprintln!("{}: {} | {:?}", s.grouping, s.time_resolution, s.log_rank);
        assert_eq!(s.curves.len(), 2);
        assert!(s.cox.iter().all(|c| c.ties == "Efron"));
    }
}

/// Some sites release rows, the others tables: the aggregator bins the rows itself, computes
/// their cross placements and cut-off flags, and gets what an all-table run gets.
#[test]
fn mixed_rows_and_tables_agree_with_tables() {
    let spec = spec(true, true, 200);
    let tables = cohort(&SIZES, 14, true, 1, false);
    let mut mixed = cohort(&SIZES, 14, true, 1, false);
    for k in [0, 3, 5] {
        mixed[k].policy.release_predictions = true;
    }
    let (rt, _) = run(&spec, &tables);
    let (rm, transcript) = run(&spec, &mixed);
    assert!(matches!(
        rm.source,
        stats::report::MetricsSource::CountTables { .. }
    ));
    // Row sites get no cross placements to compute; table sites do.
    for (id, task, _) in &transcript[1] {
        let MetricsTask::FollowUp(f) = task else {
            panic!()
        };
        let rows = ["S01", "S04", "S06"].contains(&id.as_str());
        assert_eq!(f.cross_placements.is_none(), rows, "{id}");
    }
    for k in 0..2 {
        assert_eq!(rm.models[k].auc, rt.models[k].auc);
        assert_eq!(rm.models[k].confusion, rt.models[k].confusion);
    }
    close(
        rm.comparisons[0].delong.z,
        rt.comparisons[0].delong.z,
        1e-12,
        "z",
    );
    assert_eq!(rm.survival.len(), 2, "{:?}", rm.notes);
    for (a, b) in rm.survival.iter().zip(&rt.survival) {
        close(
            a.log_rank.statistic,
            b.log_rank.statistic,
            1e-12,
            "log-rank",
        );
        assert_eq!(a.curves, b.curves);
    }
}
