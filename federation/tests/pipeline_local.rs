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
