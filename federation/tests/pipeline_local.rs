//! The nested-CV pipeline study through the round engine with every site in process, on the
//! shared 7-site example cohort: it completes, every stage's answers pass the site gate, and
//! the study is deterministic for its seed.

mod common;

use common::{cohort, spec_toml};

#[test]
fn pipeline_runs_end_to_end_and_is_deterministic() {
    let a = common::run(&spec_toml(1), cohort(), false);
    eprintln!("{}", serde_json::to_string_pretty(&a.cv).unwrap());
    eprintln!(
        "{}",
        serde_json::to_string_pretty(
            &a.metrics
                .models
                .iter()
                .map(|m| (&m.name, &m.auc))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
    assert_eq!(a.cv.fits, 5);
    assert_eq!(a.cv.selected_count.iter().sum::<u32>(), 5 * 5);
    assert_eq!(a.metrics.models.len(), 2, "{:?}", a.metrics.notes);
    let b = common::run(&spec_toml(1), cohort(), false);
    assert_eq!(a, b);
}

/// A site agent restarted before every round from what it last persisted (its memory file is
/// written only when an answer marks it dirty, and the kept LASSO standardisations go to a
/// journal that is appended to and emptied, as the agent does) answers the study exactly as
/// one that never stopped: nothing a later round relies on is kept only in memory — e.g. the
/// LASSO sub-fits' standardisations, which the aggregator sends once.
#[test]
fn a_site_restarted_from_its_persisted_memory_before_every_round_answers_the_same() {
    use federation::engine::{StudyOutput, StudyState, StudyStatus};
    use federation::site::{SiteMemory, answer_with_memory};
    use federation::study::StudySpec;
    use std::collections::BTreeMap;

    let reference = common::run(&spec_toml(1), cohort(), false);
    let tables = cohort();
    let spec = StudySpec::from_toml(&spec_toml(1)).unwrap();
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX).unwrap();
    let mut disk: BTreeMap<_, String> = BTreeMap::new();
    let mut journal: BTreeMap<_, federation::site::KeptStdChanges> = BTreeMap::new();
    let (mut rounds, mut journalled, mut emptied) = (0, 0usize, 0usize);
    while !state.status.is_finished() {
        rounds += 1;
        assert!(rounds < 100_000);
        for (site, table) in &tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            // A fresh process: only what was written survives.
            let mut memory: SiteMemory = disk
                .get(site)
                .map(|j| serde_json::from_str(j).unwrap())
                .unwrap_or_default();
            memory.apply_kept_std(journal.get(site).cloned().unwrap_or_default());
            let result =
                answer_with_memory(&task, table, &common::policy(false), &mut memory).result;
            if memory.take_dirty() {
                disk.insert(site.clone(), serde_json::to_string(&memory).unwrap());
            }
            let changes = memory.take_kept_std();
            if !changes.is_empty() {
                let j = journal.entry(site.clone()).or_default();
                if memory.kept_std_is_empty() {
                    j.clear();
                    emptied += 1;
                } else {
                    journalled += changes.len();
                    j.extend(changes);
                }
            }
            state.accept(site, result, 0, 0).unwrap();
        }
    }
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    // The LASSO stage kept standardisations through the journal, and the training stage
    // emptied it at every site.
    assert!(journalled > 0, "nothing was journalled");
    assert_eq!(emptied, tables.len());
    assert!(journal.values().all(Vec::is_empty));
    let Some(StudyOutput::Pipeline(out)) = state.output else {
        panic!("no pipeline output");
    };
    assert_eq!(*out, reference);
}
