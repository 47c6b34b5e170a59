//! Signed key announcements (issue #8, secure aggregation against a key-substituting
//! aggregator): every site signs the X25519 key it announces with its certificate's key
//! (`site_agent::attest::CertAttestor`, real certificates from a consortium CA), the aggregator
//! relays the signatures with the keys, and a site refuses a masked round whose relayed keys are
//! not signed by the sites they are relayed for — a substituted key, a signature relabelled from
//! another site, signatures left out, or this site's own key listed under another id — with an
//! error naming the site and what failed. The honest run equals the unsigned in-process run.
//!
//! The study is a secure ComBat over the 7-site example cohort, every site through the same
//! gate the agent uses (`federation::site::answer_with_memory`); the test plays the aggregator
//! and tampers with one site's first masked task.

use certs::attest::{SiteSigner, SiteVerifier};
use certs::{Ca, Validity};
use federation::engine::{StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec};
use federation::table::SiteTable;
use federation::task::{Task, TaskBody};
use federation::{SiteId, StudyId};
use site_agent::attest::CertAttestor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

fn tables() -> BTreeMap<SiteId, SiteTable> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[1].clone()).unwrap())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(s, rows)| {
            let t = SiteTable::new(header.clone(), rows)
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s, t)
        })
        .collect()
}

fn spec() -> StudySpec {
    StudySpec {
        id: StudyId::new("signed").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: true,
            features: ["original_firstorder_Mean", "original_glcm_Contrast"]
                .map(String::from)
                .to_vec(),
            batch_column: None,
            covariates: vec!["age".into()],
            categorical: vec![],
            mode: HarmonizeMode::Parametric,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn policy(spec: &StudySpec) -> SitePolicy {
    SitePolicy {
        min_count: 1,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    }
}

/// One attestor per site, from kits the consortium CA issued.
fn attestors(
    dir: &std::path::Path,
    sites: impl Iterator<Item = SiteId>,
) -> BTreeMap<SiteId, Arc<CertAttestor>> {
    certs::ensure_ring_provider();
    let mut ca = Ca::init(&dir.join("ca"), "test CA", 30).unwrap();
    sites
        .map(|s| {
            let kit = ca
                .write_site_kit(
                    s.as_str(),
                    &dir.join("kits"),
                    "https://x:1",
                    Validity::days(2),
                )
                .unwrap();
            let a = CertAttestor::new(
                SiteSigner::from_files(&kit.join("site.pem"), &kit.join("site.key")).unwrap(),
                SiteVerifier::from_ca_file(&kit.join("ca.pem")).unwrap(),
            );
            (s, Arc::new(a))
        })
        .collect()
}

/// Runs the study with every site through its gate (each with its attestor but `unsigned`), the
/// aggregator's tasks passing through `tamper` on their way to the site. Returns the final state and every
/// task handed out, per site.
fn run(
    attestors: &BTreeMap<SiteId, Arc<CertAttestor>>,
    unsigned: Option<&SiteId>,
    tamper: &mut dyn FnMut(&SiteId, &mut Task),
) -> (StudyState, Vec<(SiteId, Task)>) {
    let spec = spec();
    let tables = tables();
    let policy = policy(&spec);
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = tables
        .keys()
        .map(|s| {
            let mut m = SiteMemory::default();
            if Some(s) != unsigned {
                m.secure.set_attestor(attestors[s].clone());
            }
            (s.clone(), m)
        })
        .collect();
    let mut seen = Vec::new();
    while !state.status.is_finished() {
        assert!(state.round < 50, "the study does not finish");
        let round: BTreeMap<SiteId, Task> = tables
            .keys()
            .filter_map(|s| Some((s.clone(), state.task_for(s)?)))
            .collect();
        for (site, task) in &round {
            let mut task = task.clone();
            tamper(site, &mut task);
            seen.push((site.clone(), task.clone()));
            let answer = answer_with_memory(
                &task,
                &tables[site],
                &policy,
                memories.get_mut(site).unwrap(),
            );
            state.accept(site, answer.result, 0, 0).unwrap();
            if state.status.is_finished() {
                break;
            }
        }
    }
    (state, seen)
}

fn first_masked(task: &mut Task) -> Option<&mut federation::task::MaskedTask> {
    match &mut task.body {
        TaskBody::Masked(m) if !m.attestations.is_empty() => Some(m),
        _ => None,
    }
}

fn failed_with(state: &StudyState) -> String {
    match &state.status {
        StudyStatus::Failed { reason } => reason.clone(),
        other => panic!("the study was expected to fail, it is {other:?}"),
    }
}

fn s(id: &str) -> SiteId {
    SiteId::new(id).unwrap()
}

#[test]
fn signed_announcements_run_unchanged_and_every_substitution_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let attestors = attestors(dir.path(), tables().into_keys());

    // Honest: every key-round answer carries the site's own signature, the first masked round
    // relays all seven, later ones none (the keys are pinned by then), and the output equals the
    // unsigned in-process run.
    let (state, seen) = run(&attestors, None, &mut |_, _| {});
    assert_eq!(state.status, StudyStatus::Completed);
    let reference = run_local(
        spec(),
        &tables()
            .into_iter()
            .map(|(s, t)| (s, (t, policy(&spec()))))
            .collect(),
        50,
    )
    .unwrap();
    assert_eq!(state.output, reference.output);
    let masked: Vec<usize> = seen
        .iter()
        .filter(|(site, _)| *site == s("S01"))
        .filter_map(|(_, t)| match &t.body {
            TaskBody::Masked(m) => Some(m.attestations.len()),
            _ => None,
        })
        .collect();
    assert!(masked.len() >= 2, "{masked:?}");
    assert_eq!(masked[0], 7);
    assert!(masked[1..].iter().all(|&n| n == 0), "{masked:?}");

    // The aggregator substitutes its own key for S02's in what it relays to S01.
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S01")
            && let Some(m) = first_masked(task)
        {
            m.keys
                .iter_mut()
                .find(|k| k.site_id == "S02")
                .unwrap()
                .public_key = [0x42; 32];
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S01 could not answer")
            && reason.contains("key relayed for site S02 is not signed by that site")
            && reason.contains("signature does not verify"),
        "{reason}"
    );

    // … and relabels S03's genuine signature (and key) as S02's.
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S01")
            && let Some(m) = first_masked(task)
        {
            let s03 = m
                .keys
                .iter()
                .find(|k| k.site_id == "S03")
                .unwrap()
                .public_key;
            m.keys
                .iter_mut()
                .find(|k| k.site_id == "S02")
                .unwrap()
                .public_key = s03;
            let mut a = m
                .attestations
                .iter()
                .find(|a| a.site_id == "S03")
                .unwrap()
                .clone();
            a.site_id = "S02".into();
            m.attestations.retain(|a| a.site_id != "S02");
            m.attestations.push(a);
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S02") && reason.contains("belongs to site \"S03\""),
        "{reason}"
    );

    // … or leaves the signatures out (as an aggregator of an older release would).
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S04")
            && let Some(m) = first_masked(task)
        {
            m.attestations.clear();
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S04 could not answer")
            && reason.contains("no signature was relayed with it"),
        "{reason}"
    );

    // … or lists S01's own key under S02's id (and S02's under S01's).
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S01")
            && let Some(m) = first_masked(task)
        {
            for k in &mut m.keys {
                k.site_id = match k.site_id.as_str() {
                    "S01" => "S02".into(),
                    "S02" => "S01".into(),
                    other => other.into(),
                };
            }
            m.keys.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S01 could not answer")
            && reason.contains(
                "the key relayed under this site's own id \"S01\" is not this site's key"
            ),
        "{reason}"
    );

    // … or relabels S01's own key as another site's.
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S01")
            && let Some(m) = first_masked(task)
        {
            m.keys
                .iter_mut()
                .find(|k| k.site_id == "S01")
                .unwrap()
                .site_id = "S09".into();
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("this site is \"S01\" and its own key is listed as \"S09\"'s"),
        "{reason}"
    );

    // After the first masked sum every key is pinned: a substitution in a later round (which
    // carries no signatures) is refused by the pin.
    let mut masked_seen = 0;
    let (state, _) = run(&attestors, None, &mut |site, task| {
        if *site == s("S05")
            && let TaskBody::Masked(m) = &mut task.body
        {
            masked_seen += 1;
            if masked_seen == 2 {
                m.keys
                    .iter_mut()
                    .find(|k| k.site_id == "S06")
                    .unwrap()
                    .public_key = [0x42; 32];
            }
        }
    });
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S05 could not answer") && reason.contains("S06"),
        "{reason}"
    );

    // A site that does not sign (no certificate access, e.g. an older release) cannot take
    // part with signing peers: nothing is relayed for it, and the first peer to mask refuses.
    let (state, _) = run(&attestors, Some(&s("S07")), &mut |_, _| {});
    let reason = failed_with(&state);
    assert!(
        reason.contains("site S01 could not answer")
            && reason.contains("key relayed for site S07 is not signed by that site")
            && reason.contains("no signature was relayed with it"),
        "{reason}"
    );
}
