//! Aggregator half of the tree histogram: combining site releases into common cells, deciding
//! which cells to refine, and reading statistics off the cells.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{MAX_DEPTH, NodeId, TreeError, TreeRoot, node_interval};
use crate::hypothesis::{MannWhitney, mann_whitney_from_tied_cells};
use crate::quantile::{QuantileEstimate, ValueCell, quantile_type7_from_cells};

/// One cell of the common partition, with the count of each group (summed over sites).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonCell {
    /// The tree node.
    pub node: NodeId,
    /// Count per group index.
    pub counts: Vec<u64>,
}

impl CommonCell {
    /// Sum over groups.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Common cells from all released `(node, group, count)` entries of all sites.
///
/// Each site's release for a group is a partition of its values into tree nodes, and all tree
/// nodes are nested or disjoint, so the maximal nodes among everything released are disjoint and
/// cover every value; each released count is added to the maximal node that contains it. Cells
/// are returned in ascending value order. Entries with count 0 are ignored. Counts are summed in
/// u64, so the order of `released` does not matter.
pub fn common_cells(
    released: &[(NodeId, usize, u64)],
    n_groups: usize,
) -> Result<Vec<CommonCell>, TreeError> {
    let mut sorted: Vec<(NodeId, usize, u64)> = Vec::with_capacity(released.len());
    for &(node, group, count) in released {
        if group >= n_groups {
            return Err(TreeError::BadGroup { group, n_groups });
        }
        if count > 0 {
            sorted.push((node, group, count));
        }
    }
    // Ancestors sort before their descendants with the same left end, so a node either lies in
    // the current maximal node or starts a new one to its right.
    sorted.sort_by_key(|e| e.0);
    let mut cells: Vec<CommonCell> = Vec::new();
    for (node, group, count) in sorted {
        match cells.last_mut() {
            Some(cell) if cell.node.contains(&node) => cell.counts[group] += count,
            _ => {
                let mut counts = vec![0; n_groups];
                counts[group] = count;
                cells.push(CommonCell { node, counts });
            }
        }
    }
    Ok(cells)
}

/// Which statistics the refinement must resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefineTargets {
    /// Type-7 quantile probabilities to resolve (Table 1: 0.25, 0.5, 0.75).
    pub probs: Vec<f64>,
    /// Sets of groups whose pooled values need those quantiles, e.g. `[[1], [0], [0, 1]]` for
    /// responders, non-responders and everyone.
    pub quantile_groups: Vec<Vec<usize>>,
    /// Groups `(a, b)` compared by Mann-Whitney, if any.
    pub mann_whitney: Option<(usize, usize)>,
}

impl RefineTargets {
    /// Table 1's needs: quartiles of group a, of group b and of both, and Mann-Whitney a vs b.
    pub fn table1(group_a: usize, group_b: usize) -> RefineTargets {
        RefineTargets {
            probs: vec![0.25, 0.5, 0.75],
            quantile_groups: vec![vec![group_a], vec![group_b], vec![group_a, group_b]],
            mann_whitney: Some((group_a, group_b)),
        }
    }
}

/// Common cells that still need splitting, in ascending order.
///
/// A cell is refined when it is not in `blocked` (a cell some site refused to split, which would
/// come back unchanged forever), is above [`MAX_DEPTH`], is wider than `resolution_width`, and
/// - it holds at least two values of the Mann-Whitney groups (`targets.mann_whitney`), or
/// - it holds an order statistic read by a requested type-7 quantile of a requested group set.
///
/// Why every cell with ≥ 2 values for Mann-Whitney, not only cells holding both groups: a
/// single-group cell leaves W unambiguous, but the tie correction `Σ(t³ − t)` of the variance
/// depends on whether its values are equal or distinct, so R's p-value is only reproduced once
/// every multi-value cell is a genuine tie (width ≤ resolution). Cells of one value are not
/// refined for Mann-Whitney, but are for a quantile that reads them (that pins the value to the
/// resolution; with `min_count` ≥ 2 the site never splits such a cell anyway).
pub fn cells_to_refine(
    cells: &[CommonCell],
    root: &TreeRoot,
    resolution_width: f64,
    targets: &RefineTargets,
    blocked: &BTreeSet<NodeId>,
) -> Result<Vec<NodeId>, TreeError> {
    let n_groups = cells.first().map_or(0, |c| c.counts.len());
    let check = |g: usize| -> Result<(), TreeError> {
        if g >= n_groups && !cells.is_empty() {
            return Err(TreeError::BadGroup { group: g, n_groups });
        }
        Ok(())
    };
    let mut needed = vec![false; cells.len()];
    if let Some((a, b)) = targets.mann_whitney {
        check(a)?;
        check(b)?;
        for (i, c) in cells.iter().enumerate() {
            if c.counts[a] + c.counts[b] >= 2 {
                needed[i] = true;
            }
        }
    }
    for groups in &targets.quantile_groups {
        for &g in groups {
            check(g)?;
        }
        let set_count = |c: &CommonCell| groups.iter().map(|&g| c.counts[g]).sum::<u64>();
        let n: u64 = cells.iter().map(set_count).sum();
        if n == 0 {
            continue;
        }
        for &p in &targets.probs {
            let stats = crate::quantile::type7_order_statistics(n, p)?;
            let mut before = 0u64;
            for (i, c) in cells.iter().enumerate() {
                let cnt = set_count(c);
                if stats.iter().any(|&k| k >= before && k < before + cnt) {
                    needed[i] = true;
                }
                before += cnt;
            }
        }
    }
    Ok(cells
        .iter()
        .zip(needed)
        .filter(|(c, need)| {
            let (lo, hi) = node_interval(root, &c.node);
            *need
                && !blocked.contains(&c.node)
                && c.node.depth() < MAX_DEPTH
                && hi - lo > resolution_width
        })
        .map(|(c, _)| c.node)
        .collect())
}

/// Value cells of the summed counts of `groups`, skipping cells with none of them.
pub fn value_cells(root: &TreeRoot, cells: &[CommonCell], groups: &[usize]) -> Vec<ValueCell> {
    cells
        .iter()
        .filter_map(|c| {
            let count: u64 = groups.iter().map(|&g| c.counts[g]).sum();
            (count > 0).then(|| {
                let (lo, hi) = node_interval(root, &c.node);
                ValueCell { lo, hi, count }
            })
        })
        .collect()
}

/// Tie cells `(count a, count b)` in ascending order, treating each common cell as one tie group.
pub fn tie_cells(cells: &[CommonCell], group_a: usize, group_b: usize) -> Vec<(u64, u64)> {
    cells
        .iter()
        .map(|c| (c.counts[group_a], c.counts[group_b]))
        .filter(|&(a, b)| a + b > 0)
        .collect()
}

fn check_groups(cells: &[CommonCell], groups: &[usize]) -> Result<(), TreeError> {
    let n_groups = cells.first().map_or(0, |c| c.counts.len());
    match groups.iter().find(|&&g| g >= n_groups) {
        Some(&group) => Err(TreeError::BadGroup { group, n_groups }),
        None => Ok(()),
    }
}

/// Type-7 quantile of the pooled values of `groups`, estimated from the common cells (see
/// [`quantile_type7_from_cells`] for the estimate and its error bound).
pub fn quantile_from_cells(
    root: &TreeRoot,
    cells: &[CommonCell],
    groups: &[usize],
    p: f64,
) -> Result<QuantileEstimate, TreeError> {
    check_groups(cells, groups)?;
    Ok(quantile_type7_from_cells(
        &value_cells(root, cells, groups),
        p,
    )?)
}

/// Mann-Whitney from common cells, with the resolution it was computed at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellMannWhitney {
    /// The test, treating each common cell as one tie group.
    pub test: MannWhitney,
    /// Width of the widest cell holding ≥ 2 values of the two groups: values closer than this
    /// may have been treated as tied. When it is below the spacing of distinct values in the
    /// data (e.g. 1e-9 of the root for integer ages), the result equals the pooled test.
    pub resolution: f64,
}

/// Mann-Whitney of `group_a` vs `group_b` from common cells, each cell one tie group.
pub fn mann_whitney_from_cells(
    root: &TreeRoot,
    cells: &[CommonCell],
    group_a: usize,
    group_b: usize,
) -> Result<CellMannWhitney, TreeError> {
    check_groups(cells, &[group_a, group_b])?;
    let test = mann_whitney_from_tied_cells(&tie_cells(cells, group_a, group_b))?;
    let resolution = cells
        .iter()
        .filter(|c| c.counts[group_a] + c.counts[group_b] >= 2)
        .map(|c| {
            let (lo, hi) = node_interval(root, &c.node);
            hi - lo
        })
        .fold(0.0, f64::max);
    Ok(CellMannWhitney { test, resolution })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(d: u8, i: u64) -> NodeId {
        NodeId::new(d, i).unwrap()
    }

    #[test]
    fn common_cells_take_maximal_nodes() {
        // Site 1 released [0,4) whole; site 2 split it; both released depth-2 cells on the right.
        let released = vec![
            (n(1, 0), 0, 5),
            (n(2, 0), 1, 2),
            (n(3, 3), 1, 1),
            (n(2, 3), 0, 4),
            (n(3, 6), 1, 6),
            (n(3, 7), 0, 1),
            (n(2, 2), 1, 0),
        ];
        let cells = common_cells(&released, 2).unwrap();
        assert_eq!(
            cells,
            vec![
                CommonCell {
                    node: n(1, 0),
                    counts: vec![5, 3]
                },
                CommonCell {
                    node: n(2, 3),
                    counts: vec![5, 6]
                },
            ]
        );
        assert!(common_cells(&[(n(0, 0), 2, 1)], 2).is_err());
    }

    #[test]
    fn refine_rules() {
        let root = TreeRoot::new(0.0, 16.0).unwrap();
        let cells = vec![
            CommonCell {
                node: n(2, 0),
                counts: vec![1, 0],
            },
            CommonCell {
                node: n(2, 1),
                counts: vec![3, 0],
            },
            CommonCell {
                node: n(3, 4),
                counts: vec![0, 1],
            },
            CommonCell {
                node: n(3, 5),
                counts: vec![2, 2],
            },
            CommonCell {
                node: n(2, 3),
                counts: vec![0, 1],
            },
        ];
        let none = BTreeSet::new();
        // Mann-Whitney only: every cell with >= 2 values.
        let mw = RefineTargets {
            probs: vec![],
            quantile_groups: vec![],
            mann_whitney: Some((0, 1)),
        };
        assert_eq!(
            cells_to_refine(&cells, &root, 0.0, &mw, &none).unwrap(),
            vec![n(2, 1), n(3, 5)]
        );
        // Resolution 2 excludes the width-2 cells.
        assert_eq!(
            cells_to_refine(&cells, &root, 2.0, &mw, &none).unwrap(),
            vec![n(2, 1)]
        );
        // Median of group 1 (n = 4 -> order stats 1 and 2, both in cell (3,5)); median of
        // group 0 (n = 6 -> stats 2, 3, in cell (2,1) and (3,5)).
        let q = RefineTargets {
            probs: vec![0.5],
            quantile_groups: vec![vec![1]],
            mann_whitney: None,
        };
        assert_eq!(
            cells_to_refine(&cells, &root, 0.0, &q, &none).unwrap(),
            vec![n(3, 5)]
        );
        // q1 of group 1: h = 0.75 -> stats 0 (cell (3,4), one value) and 1.
        let q1 = RefineTargets {
            probs: vec![0.25],
            quantile_groups: vec![vec![1]],
            mann_whitney: None,
        };
        assert_eq!(
            cells_to_refine(&cells, &root, 0.0, &q1, &none).unwrap(),
            vec![n(3, 4), n(3, 5)]
        );
        let blocked: BTreeSet<NodeId> = [n(3, 5)].into_iter().collect();
        assert_eq!(
            cells_to_refine(&cells, &root, 0.0, &q1, &blocked).unwrap(),
            vec![n(3, 4)]
        );
        let bad = RefineTargets {
            probs: vec![0.5],
            quantile_groups: vec![vec![2]],
            mann_whitney: None,
        };
        assert!(cells_to_refine(&cells, &root, 0.0, &bad, &none).is_err());
    }
}
