//! Builds the statistician's report (`report::StudyReport`) from finished studies: the
//! pipeline's metrics and nested-CV summary, the cohort table and the full-cohort LASSO when
//! they were run, and what each site sent (from the stored round records).

use federation::engine::RoundRecord;
use federation::lasso::LassoOutput;
use federation::pipeline::PipelineOutput;
use federation::table1::Table1Output;
use report::{LassoReport, NamedSeed, Part, Setting, SiteContribution, StudyReport, StudySettings};
use std::collections::BTreeMap;

/// Everything the report is made of.
pub struct ReportInputs<'a> {
    pub pipeline: &'a PipelineOutput,
    pub pipeline_hash: &'a str,
    pub table1: Option<&'a Table1Output>,
    pub lasso: Option<&'a LassoOutput>,
    /// Per site: (messages, bytes) it sent over every study of the run.
    pub traffic: BTreeMap<String, (u64, u64)>,
    /// Per site: patients with a known outcome, when its Table 1 released them.
    pub site_n: BTreeMap<String, u64>,
    /// Policy settings of the sites, as stated in the report.
    pub policy: Vec<Setting>,
    pub generated_at: Option<String>,
}

/// The report of a pipeline study.
pub fn study_report(i: &ReportInputs) -> StudyReport {
    let spec = &i.pipeline.spec;
    let cv = &spec.cv;
    let settings = StudySettings {
        study_id: "pipeline".into(),
        title: "Federated radiomics response prediction (nested-CV stacking ensemble)".into(),
        spec_hash: i.pipeline_hash.to_string(),
        seeds: vec![
            NamedSeed {
                name: "cross-validation, LASSO, learners, MLP".into(),
                seed: cv.seed,
            },
            NamedSeed {
                name: "metrics bootstrap".into(),
                seed: spec.metrics.seed,
            },
        ],
        cv_scheme: format!(
            "{} × {}-fold outer CV (stratified by response within each site), {}-fold inner CV for the base learners' search; LASSO {}-fold CV over {} λ with {} bootstrap replicates, top {} features",
            cv.repeats,
            cv.outer_folds,
            cv.inner_folds,
            spec.lasso.nfolds,
            spec.lasso.nlambda,
            spec.lasso.bootstrap,
            spec.lasso.top_k
        ),
        policy: i.policy.clone(),
        other: vec![
            Setting::new("candidate features", spec.features.len()),
            Setting::new(
                "ComBat",
                format!(
                    "{:?}, batch = {}",
                    spec.combat_mode,
                    spec.batch_column.as_deref().unwrap_or("site")
                ),
            ),
            Setting::new(
                "meta-model",
                format!(
                    "MLP hidden {:?}, {:?}, α = {}",
                    spec.meta.hidden, spec.meta.activation, spec.meta.alpha
                ),
            ),
            Setting::new("score grid bins", spec.metrics.bins),
            Setting::new("bootstrap replicates (CIs)", spec.metrics.bootstrap),
            Setting::new("fedrad", env!("CARGO_PKG_VERSION")),
        ],
        generated_at: i.generated_at.clone(),
    };
    let mut r = StudyReport::new(settings);
    r.table1 = i
        .table1
        .map_or(Part::Omitted, |t| Part::Available(t.clone()));
    r.lasso = i.lasso.map_or(Part::Omitted, |l| {
        Part::Available(LassoReport {
            feature_names: l.features.clone(),
            result: l.result.clone(),
        })
    });
    r.metrics = Part::Available(i.pipeline.metrics.clone());
    r.sites = Part::Available(site_contributions(i));
    r.notes = cv_notes(i.pipeline);
    r
}

/// Per-site traffic and released patient counts from stored round records.
pub fn traffic_from_rounds(
    rounds: &[RoundRecord],
) -> (BTreeMap<String, (u64, u64)>, BTreeMap<String, u64>) {
    let mut by_site: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut n: BTreeMap<String, u64> = BTreeMap::new();
    for round in rounds {
        for (site, bytes) in &round.bytes {
            let e = by_site.entry(site.to_string()).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        // Table 1's first round releases each site's group sizes (or suppresses them).
        for (site, body) in &round.results {
            if let federation::task::ResultBody::Table1Summary(t) = body {
                let sizes: Option<Vec<u64>> = t.group_n.iter().map(|g| g.value()).collect();
                if let Some(sizes) = sizes {
                    n.insert(site.to_string(), sizes.iter().sum());
                }
            }
        }
    }
    (by_site, n)
}

/// Per-site traffic from a study's `traffic.csv` (`round,site,kind,bytes`), added to `into`.
pub fn add_traffic_csv(text: &str, into: &mut BTreeMap<String, (u64, u64)>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if let [_, site, _, bytes] = f.as_slice() {
            let e = into.entry(site.to_string()).or_default();
            e.0 += 1;
            e.1 += bytes.parse::<u64>().unwrap_or(0);
        }
    }
}

fn site_contributions(i: &ReportInputs) -> Vec<SiteContribution> {
    let training: BTreeMap<&str, _> = i
        .pipeline
        .cv
        .sites
        .iter()
        .map(|s| (s.site.as_str(), s))
        .collect();
    i.traffic
        .iter()
        .map(|(site, &(messages, bytes))| {
            let t = training.get(site.as_str());
            SiteContribution {
                n: i.site_n.get(site).copied(),
                messages_sent: messages,
                bytes_sent: bytes,
                suppressed_cells: 0,
                note: t.map(|t| {
                    let mut s = format!(
                        "base learners trained in {} of {} outer fits; {} models shared",
                        t.trained,
                        t.trained + t.refused,
                        t.shared
                    );
                    if let Some(r) = &t.last_refusal {
                        s.push_str(&format!("; not trained when: {r}"));
                    }
                    s
                }),
                site: site.clone(),
            }
        })
        .collect()
}

fn cv_notes(p: &PipelineOutput) -> Vec<String> {
    let cv = &p.cv;
    let mut ranked: Vec<(usize, u32)> = cv.selected_count.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = ranked
        .iter()
        .take(10)
        .filter(|(_, c)| *c > 0)
        .map(|(j, c)| {
            format!(
                "{} ({:.0} %)",
                cv.features[*j],
                100.0 * f64::from(*c) / f64::from(cv.fits.max(1))
            )
        })
        .collect();
    let mut notes = vec![
        format!(
            "Nested CV: {} outer fits; features most often in the LASSO top-{} inside the training folds: {}.",
            cv.fits,
            p.spec.lasso.top_k,
            top.join(", ")
        ),
        format!(
            "Meta-model: mean MLP objective over outer fits {:.4}; clinical fits not converged: {}.",
            cv.mlp_objective_mean, cv.clinical_not_converged
        ),
        format!(
            "Round trips per stage: {}.",
            cv.rounds
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    notes.extend(p.metrics.notes.iter().cloned());
    notes
}
