//! Test support: a simulated federation (sites × groups of raw values) driven through the tree
//! protocol exactly as the aggregator crate would drive it, plus tolerance helpers.

#![allow(dead_code)]

use std::collections::BTreeSet;

use stats::tree::{
    CommonCell, HistogramState, NodeId, RefineTargets, TreeRoot, cells_to_refine, site_release,
};
use stats::{Moments, TreeError};

/// One request a site answered and its answer.
pub type Answer = (NodeId, Vec<(NodeId, u64)>);

/// Result of running a refinement protocol to completion.
pub struct FederatedRun {
    pub root: TreeRoot,
    pub state: HistogramState,
    pub rounds: usize,
    pub blocked: usize,
    /// Every answer each site gave, per (site, group): (request, answer).
    pub releases: Vec<Vec<Vec<Answer>>>,
}

impl FederatedRun {
    pub fn cells(&self) -> Vec<CommonCell> {
        self.state.common_cells()
    }
}

/// Pooled moments of all values, merged in site order then group order.
pub fn pooled_moments(sites: &[Vec<Vec<f64>>]) -> Moments {
    let parts: Vec<Moments> = sites
        .iter()
        .flat_map(|groups| groups.iter().map(|v| Moments::from_values(v)))
        .collect();
    Moments::merge_all(&parts)
}

/// The per-site protocol ([`HistogramState`]): rounds of `extra_depth` until nothing needs
/// refining. `sites[s][g]` are site s's values of group g; every (site, group) must hold 0 or
/// >= `min_count` values.
pub fn run_federated(
    sites: &[Vec<Vec<f64>>],
    n_groups: usize,
    min_count: u64,
    extra_depth: u8,
    relative_resolution: f64,
) -> Result<FederatedRun, TreeError> {
    let root = TreeRoot::from_pooled_moments(&pooled_moments(sites))?;
    let targets = RefineTargets::table1(0, 1);
    let mut state = HistogramState::new(
        root,
        sites.len(),
        n_groups,
        relative_resolution * root.width(),
    );
    let mut releases = vec![vec![Vec::new(); n_groups]; sites.len()];
    let mut requests = state.initial_requests(extra_depth);
    let mut rounds = 0;
    while !requests.is_empty() {
        rounds += 1;
        assert!(rounds < 100, "refinement does not terminate");
        for r in &requests {
            let values = &sites[r.site][r.group];
            let answer = site_release(values, &root, r.node, r.extra_depth, min_count)?;
            state.apply_release(r.site, r.group, r.node, &answer)?;
            releases[r.site][r.group].push((r.node, answer));
        }
        state.finish_round(&requests);
        requests = state.next_requests(&targets, extra_depth)?;
    }
    Ok(FederatedRun {
        root,
        blocked: state.blocked().len(),
        state,
        rounds,
        releases,
    })
}

/// The common-cell protocol: every site is asked about every common cell that
/// [`cells_to_refine`] selects; cells that come back unchanged are blocked for everyone.
pub fn run_common_cells(
    sites: &[Vec<Vec<f64>>],
    n_groups: usize,
    min_count: u64,
    extra_depth: u8,
    relative_resolution: f64,
) -> Result<FederatedRun, TreeError> {
    let root = TreeRoot::from_pooled_moments(&pooled_moments(sites))?;
    let resolution = relative_resolution * root.width();
    let targets = RefineTargets::table1(0, 1);
    let mut state = HistogramState::new(root, sites.len(), n_groups, resolution);
    let mut releases = vec![vec![Vec::new(); n_groups]; sites.len()];
    let mut blocked = BTreeSet::new();
    let mut requests = vec![NodeId::ROOT];
    let mut rounds = 0;
    while !requests.is_empty() {
        rounds += 1;
        assert!(rounds < 100, "refinement does not terminate");
        for (s, groups) in sites.iter().enumerate() {
            for (g, values) in groups.iter().enumerate() {
                for &node in &requests {
                    let answer = site_release(values, &root, node, extra_depth, min_count)?;
                    state.apply_release(s, g, node, &answer)?;
                    releases[s][g].push((node, answer));
                }
            }
        }
        let cells: BTreeSet<NodeId> = state.common_cells().iter().map(|c| c.node).collect();
        blocked.extend(requests.iter().filter(|n| cells.contains(n)));
        requests = cells_to_refine(&state.common_cells(), &root, resolution, &targets, &blocked)?;
    }
    Ok(FederatedRun {
        root,
        blocked: blocked.len(),
        state,
        rounds,
        releases,
    })
}

/// |a − b| <= tol · max(1, |b|).
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// Panics naming `what` unless `close(got, want, tol)`.
pub fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        close(got, want, tol),
        "{what}: got {got:.17e}, want {want:.17e} (tol {tol:e})"
    );
}

/// A golden-file number.
pub fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// A golden-file array of numbers.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}
