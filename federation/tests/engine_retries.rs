//! Idempotent result submission across a round's completion: a site whose reply was lost
//! pushes its result again after the round it answered has completed. The engine recognises
//! the retry — from the completed round's record, then from the results it keeps after the next
//! push, then (after a snapshot) from their digests — and refuses a different payload for the
//! same (study, round, site), so a round is never counted twice.

mod common;

use federation::engine::{Accepted, EngineError, StudyState};
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::StudySpec;
use federation::task::{ResultBody, TaskResult};
use std::collections::BTreeMap;

#[test]
fn a_retried_push_of_the_completed_round_is_a_duplicate_and_a_changed_one_a_conflict() {
    let tables = common::cohort();
    let spec = StudySpec::from_toml(&common::spec_toml(1)).unwrap();
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let policy = common::policy(false);
    let mut memories: BTreeMap<_, SiteMemory> = BTreeMap::new();
    let mut answer = |state: &StudyState, site| {
        let task = state.task_for(site).unwrap();
        let m = memories.entry(site.clone()).or_default();
        answer_with_memory(&task, &tables[site], &policy, m).result
    };
    let sites: Vec<_> = tables.keys().cloned().collect();
    // Round 1, every site; keep what each sent.
    let mut sent: BTreeMap<_, TaskResult> = BTreeMap::new();
    for site in &sites {
        let r = answer(&state, site);
        sent.insert(site.clone(), r.clone());
        state.accept(site, r, 0, 0).unwrap();
    }
    assert_eq!(state.round, 2, "round 1 completed");
    let conflict = |r: &TaskResult| {
        let mut changed = r.clone();
        changed.body = ResultBody::Failure(federation::task::SiteFailure {
            message: "another answer".into(),
        });
        changed
    };
    // Straight after the completion (the caller holds the round's record).
    for site in &sites {
        assert_eq!(
            state.accept(site, sent[site].clone(), 0, 0).unwrap(),
            Accepted::Duplicate
        );
        assert!(matches!(
            state.accept(site, conflict(&sent[site]), 0, 0),
            Err(EngineError::Conflict { .. })
        ));
    }
    // After a push of round 2 (the record's results are kept for retries, not copied).
    let first = &sites[0];
    let r2 = answer(&state, first);
    assert_eq!(state.accept(first, r2, 0, 0).unwrap(), Accepted::Stored);
    for site in &sites {
        assert_eq!(
            state.accept(site, sent[site].clone(), 0, 0).unwrap(),
            Accepted::Duplicate
        );
    }
    // After a snapshot and a restart: only the digests survive, and they still answer.
    state.digest_previous();
    let mut restored: StudyState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    for site in &sites {
        assert_eq!(
            restored.accept(site, sent[site].clone(), 0, 0).unwrap(),
            Accepted::Duplicate
        );
        assert!(matches!(
            restored.accept(site, conflict(&sent[site]), 0, 0),
            Err(EngineError::Conflict { .. })
        ));
    }
}
