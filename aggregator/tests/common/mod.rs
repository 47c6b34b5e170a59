//! Shared by the aggregator's fault tests: the undisturbed in-process reference run.

use aggregator::simulate::PooledTable;
use federation::engine::{StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;

/// `spec` over every site of `table` in process (no network, no fault), each site with
/// `min_count = 1` and a policy allowing exactly this study; asserts it completed.
pub fn reference(table: &PooledTable, spec: &StudySpec) -> StudyState {
    let policy = SitePolicy {
        min_count: 1,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    };
    let tables = table
        .by_site
        .iter()
        .map(|(s, rows)| {
            let t = SiteTable::new(table.header.clone(), rows.clone())
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s.clone(), (t, policy.clone()))
        })
        .collect();
    let state = run_local(spec.clone(), &tables, 1000).unwrap();
    assert_eq!(state.status, StudyStatus::Completed);
    state
}
