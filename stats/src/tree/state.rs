//! Aggregator state for one variable's tree histogram: per-site refinement, and quartiles and
//! Mann-Whitney with honest bounds when some site's cells stay coarse.
//!
//! Why per site and not over common cells: the common partition (maximal released nodes, see
//! [`super::common_cells`]) is only as fine as the coarsest site. One site that cannot split the
//! root (e.g. 6 values on one side of the pooled mean and 4 on the other with `min_count` 5)
//! then leaves a single cell for the whole federation. Here every (site, group) is refined on its
//! own leaves, so a coarse site only costs the ranks it holds: a quantile is bracketed by the
//! k-th smallest lower end and the k-th smallest upper end of all released intervals, and
//! Mann-Whitney's W by counting unordered pairs as 0 or 1.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::aggregate::{CommonCell, RefineTargets, common_cells};
use super::{MAX_DEPTH, NodeId, TreeError, TreeRoot, node_interval};
use crate::hypothesis::{MannWhitney, mann_whitney_normal};
use crate::quantile::type7_position;

/// `count` values of `group` held by `site` somewhere in `node` (a leaf of that site's current
/// release for that group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mass {
    /// Site index (`SiteId` order).
    pub site: usize,
    /// Group index.
    pub group: usize,
    /// Tree node.
    pub node: NodeId,
    /// Number of values (> 0).
    pub count: u64,
}

/// Ask `site` to refine its leaf `node` of `group` with [`super::site_release`] and this
/// `extra_depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RefineRequest {
    /// Site index.
    pub site: usize,
    /// Group index.
    pub group: usize,
    /// The site's own leaf to split further.
    pub node: NodeId,
    /// Depth budget for this answer (never past the resolution depth).
    pub extra_depth: u8,
}

/// A type-7 quantile bracketed from interval counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileBounds {
    /// Midpoint of the bracket, the reported estimate.
    pub value: f64,
    /// The exact type-7 quantile is ≥ this.
    pub lower: f64,
    /// The exact type-7 quantile is ≤ this (up to round-off in the node bounds).
    pub upper: f64,
}

impl QuantileBounds {
    /// `upper − lower`; the estimate is within half of it.
    pub fn resolution(&self) -> f64 {
        self.upper - self.lower
    }
}

/// Mann-Whitney from interval counts: a point estimate and the range it could take.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TreeMannWhitney {
    /// Estimate: pairs whose order is unknown count ½ (as ties do), values in the same
    /// resolution-depth node are ties.
    pub test: MannWhitney,
    /// Smallest W consistent with the releases (unordered pairs counted 0).
    pub w_min: f64,
    /// Largest W consistent with the releases (unordered pairs counted 1).
    pub w_max: f64,
    /// Smallest p over W in [w_min, w_max] (same tie sum as the estimate).
    pub p_min: f64,
    /// Largest p over W in [w_min, w_max].
    pub p_max: f64,
    /// Widest node in which two or more values of the two groups remain unordered or are
    /// treated as tied. `<=` the resolution width means `test` equals the pooled test with
    /// values closer than the resolution treated as ties.
    pub resolution: f64,
}

/// Smallest depth whose nodes are at most `resolution_width` wide (capped at [`MAX_DEPTH`]);
/// 0 for a degenerate root. Refinement never goes deeper, so all fully resolved nodes share one
/// depth and two values in the same such node are ties.
pub fn depth_for_resolution(root: &TreeRoot, resolution_width: f64) -> u8 {
    if root.is_degenerate() {
        return 0;
    }
    let mut d = 0u8;
    let mut w = root.width();
    while d < MAX_DEPTH && w > resolution_width {
        d += 1;
        w /= 2.0; // exact
    }
    d
}

fn is_fine(root: &TreeRoot, node: &NodeId, fine_depth: u8) -> bool {
    root.is_degenerate() || node.depth() >= fine_depth
}

fn nested(a: &NodeId, b: &NodeId) -> bool {
    a.contains(b) || b.contains(a)
}

fn width(root: &TreeRoot, node: &NodeId) -> f64 {
    let (lo, hi) = node_interval(root, node);
    hi - lo
}

fn check_group(group: usize, n_groups: usize) -> Result<(), TreeError> {
    if group >= n_groups {
        return Err(TreeError::BadGroup { group, n_groups });
    }
    Ok(())
}

/// The k-th (0-based) smallest lower end and upper end, in 52-bit keys, of the masses' nodes.
fn kth_bounds(items: &[(NodeId, u64)], k: u64) -> (NodeId, NodeId) {
    let kth = |mut v: Vec<(u64, NodeId, u64)>| -> NodeId {
        v.sort_by_key(|e| (e.0, e.1));
        let mut before = 0;
        for (_, node, c) in v {
            if k < before + c {
                return node;
            }
            before += c;
        }
        unreachable!("k below the total count")
    };
    let by_lo = items
        .iter()
        .map(|&(n, c)| (n.key_range().0, n, c))
        .collect();
    let by_hi = items
        .iter()
        .map(|&(n, c)| (n.key_range().1, n, c))
        .collect();
    (kth(by_lo), kth(by_hi))
}

/// Bracket of the type-7 quantile `p` of the values of `groups`.
///
/// Each value lies in its node `[lo, hi]`, so the k-th smallest value is at least the k-th
/// smallest `lo` and at most the k-th smallest `hi` (order statistics are monotone); the type-7
/// interpolation `x_k + g·(x_{k+1} − x_k)` is monotone in both order statistics, so applying it
/// to the two brackets brackets the quantile. With disjoint fine cells this is the cell holding
/// the order statistic.
pub fn quantile_from_masses(
    root: &TreeRoot,
    masses: &[Mass],
    groups: &[usize],
    p: f64,
) -> Result<QuantileBounds, TreeError> {
    let items: Vec<(NodeId, u64)> = masses
        .iter()
        .filter(|m| groups.contains(&m.group) && m.count > 0)
        .map(|m| (m.node, m.count))
        .collect();
    let n: u64 = items.iter().map(|e| e.1).sum();
    crate::quantile::type7_order_statistics(n, p)?; // validates p and n > 0
    let (k, g) = type7_position(n, p);
    let ends = |k: u64| -> (f64, f64) {
        let (lo_node, hi_node) = kth_bounds(&items, k);
        (
            node_interval(root, &lo_node).0,
            node_interval(root, &hi_node).1,
        )
    };
    let (lk, uk) = ends(k);
    let (lower, upper) = if g > 0.0 {
        let (lk1, uk1) = ends(k + 1);
        (lk + (lk1 - lk) * g, uk + (uk1 - uk) * g)
    } else {
        (lk, uk)
    };
    Ok(QuantileBounds {
        value: 0.5 * (lower + upper),
        lower,
        upper,
    })
}

/// Mann-Whitney of `group_a` vs `group_b` from masses (see [`TreeMannWhitney`]).
///
/// Pairs of an A-mass and a B-mass in disjoint nodes are ordered; pairs in the same node at the
/// resolution depth `fine_depth` are ties (½); any other pair (nested nodes) is unordered:
/// ½ in the estimate, 0 or 1 in the bounds. The tie sum `Σ(t³ − t)` counts the values in each
/// fine node as one tie group; values in coarser nodes are assumed distinct (exact once every
/// coarse node holds a single value, which refinement reaches unless a site blocks it).
pub fn mann_whitney_from_masses(
    root: &TreeRoot,
    masses: &[Mass],
    group_a: usize,
    group_b: usize,
    fine_depth: u8,
) -> Result<TreeMannWhitney, TreeError> {
    let a: Vec<&Mass> = masses
        .iter()
        .filter(|m| m.group == group_a && m.count > 0)
        .collect();
    let b: Vec<&Mass> = masses
        .iter()
        .filter(|m| m.group == group_b && m.count > 0)
        .collect();
    let n_a: u64 = a.iter().map(|m| m.count).sum();
    let n_b: u64 = b.iter().map(|m| m.count).sum();
    // All in u128, in units of ½ pair.
    let (mut twice_lo, mut unordered) = (0u128, 0u128);
    for x in &a {
        let (xs, xe) = x.node.key_range();
        for y in &b {
            let (ys, ye) = y.node.key_range();
            let pairs = x.count as u128 * y.count as u128;
            if xs >= ye {
                twice_lo += 2 * pairs; // every a above every b
            } else if xe <= ys {
                // every a below every b
            } else if x.node == y.node && is_fine(root, &x.node, fine_depth) {
                twice_lo += pairs; // ties count ½
            } else {
                unordered += pairs;
            }
        }
    }
    // Tie groups: the values of both groups in each fine node.
    let mut fine_counts: BTreeMap<NodeId, u128> = BTreeMap::new();
    for m in a.iter().chain(&b) {
        if is_fine(root, &m.node, fine_depth) {
            *fine_counts.entry(m.node).or_default() += m.count as u128;
        }
    }
    let tie_sum: u128 = fine_counts.values().map(|&t| t * t * t - t).sum();
    let tie_sum = tie_sum as f64;
    let w_min = twice_lo as f64 / 2.0;
    let w_max = (twice_lo + 2 * unordered) as f64 / 2.0;
    let w_est = (twice_lo + unordered) as f64 / 2.0;
    let test = mann_whitney_normal(w_est, n_a, n_b, tie_sum)?;
    // p falls as |W − n_a·n_b/2| grows.
    let mu = n_a as f64 * n_b as f64 / 2.0;
    let nearest = mu.clamp(w_min, w_max);
    let farthest = if (w_min - mu).abs() >= (w_max - mu).abs() {
        w_min
    } else {
        w_max
    };
    let p_max = mann_whitney_normal(nearest, n_a, n_b, tie_sum)?.p_value;
    let p_min = mann_whitney_normal(farthest, n_a, n_b, tie_sum)?.p_value;
    let both: Vec<&Mass> = a.iter().chain(&b).copied().collect();
    let resolution = both
        .iter()
        .filter(|m| {
            both.iter()
                .filter(|o| nested(&o.node, &m.node))
                .map(|o| o.count)
                .sum::<u64>()
                >= 2
        })
        .map(|m| width(root, &m.node))
        .fold(0.0, f64::max);
    Ok(TreeMannWhitney {
        test,
        w_min,
        w_max,
        p_min,
        p_max,
        resolution,
    })
}

/// Masses that still limit a requested statistic, as requests to the sites that hold them.
///
/// A mass is refined when its node is above `fine_depth` (wider than the resolution), it is not
/// blocked (its site already answered it unsplit), and
/// - Mann-Whitney groups: its node overlaps (is nested with) nodes holding ≥ 2 values of the two
///   groups in total, itself included — their order or tie structure is unknown; or
/// - quantiles: its group is in a requested group set and its node meets the open bracket
///   `(k-th lower end, k-th upper end)` of an order statistic that quantile reads.
pub fn masses_to_refine(
    root: &TreeRoot,
    masses: &[Mass],
    fine_depth: u8,
    targets: &RefineTargets,
    blocked: &BTreeSet<(usize, usize, NodeId)>,
    extra_depth: u8,
) -> Result<Vec<RefineRequest>, TreeError> {
    let mut need = vec![false; masses.len()];
    if let Some((ga, gb)) = targets.mann_whitney {
        let in_ab = |m: &Mass| m.group == ga || m.group == gb;
        for (i, m) in masses.iter().enumerate() {
            if in_ab(m) {
                let around: u64 = masses
                    .iter()
                    .filter(|o| in_ab(o) && nested(&o.node, &m.node))
                    .map(|o| o.count)
                    .sum();
                if around >= 2 {
                    need[i] = true;
                }
            }
        }
    }
    for groups in &targets.quantile_groups {
        let items: Vec<(NodeId, u64)> = masses
            .iter()
            .filter(|m| groups.contains(&m.group) && m.count > 0)
            .map(|m| (m.node, m.count))
            .collect();
        let n: u64 = items.iter().map(|e| e.1).sum();
        if n == 0 {
            continue;
        }
        for &p in &targets.probs {
            for k in crate::quantile::type7_order_statistics(n, p)? {
                let (lo_node, hi_node) = kth_bounds(&items, k);
                let (lo, hi) = (lo_node.key_range().0, hi_node.key_range().1);
                for (i, m) in masses.iter().enumerate() {
                    let (s, e) = m.node.key_range();
                    if groups.contains(&m.group) && s < hi && e > lo {
                        need[i] = true;
                    }
                }
            }
        }
    }
    let mut out: Vec<RefineRequest> = masses
        .iter()
        .zip(need)
        .filter(|(m, need)| {
            *need
                && !is_fine(root, &m.node, fine_depth)
                && !blocked.contains(&(m.site, m.group, m.node))
        })
        .map(|(m, _)| RefineRequest {
            site: m.site,
            group: m.group,
            node: m.node,
            extra_depth: extra_depth.min(fine_depth - m.node.depth()),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Aggregator bookkeeping for one variable: the latest release of every (site, group), the
/// leaves each site could not split, and the round logic.
///
/// Typical loop (the aggregator crate sends the requests over the network and batches all
/// variables' requests into the same round trip):
/// ```
/// # use stats::tree::*;
/// # let root = TreeRoot::new(0.0, 8.0).unwrap();
/// # let site_values = vec![vec![vec![1.0, 2.0], vec![3.0, 5.0]]]; // [site][group]
/// let mut state = HistogramState::new(root, site_values.len(), 2, 1e-9 * root.width());
/// let targets = RefineTargets::table1(0, 1);
/// let mut requests = state.initial_requests(4);
/// while !requests.is_empty() {
///     for r in &requests {
///         let values = &site_values[r.site][r.group];
///         let answer = site_release(values, &root, r.node, r.extra_depth, 1).unwrap();
///         state.apply_release(r.site, r.group, r.node, &answer).unwrap();
///     }
///     state.finish_round(&requests);
///     requests = state.next_requests(&targets, 4).unwrap();
/// }
/// let mw = state.mann_whitney(0, 1).unwrap();
/// # assert_eq!(mw.test.w, 0.0);
/// let median = state.quantile(&[0, 1], 0.5).unwrap();
/// # assert!((median.value - 2.5).abs() <= median.resolution());
/// ```
///
/// Serialisable, because the aggregator persists it between rounds; the per-(site, group) maps
/// are written as lists of `(node, count)` pairs since JSON object keys must be strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramState {
    root: TreeRoot,
    n_sites: usize,
    n_groups: usize,
    fine_depth: u8,
    /// Latest partition per (site, group), index `site * n_groups + group`.
    #[serde(with = "release_maps")]
    releases: Vec<BTreeMap<NodeId, u64>>,
    /// Whether a (site, group) has answered at least once.
    answered: Vec<bool>,
    blocked: BTreeSet<(usize, usize, NodeId)>,
}

impl HistogramState {
    /// Empty state for `n_sites` sites (indices in `SiteId` order) and `n_groups` groups;
    /// refinement stops at nodes no wider than `resolution_width` (see
    /// [`depth_for_resolution`]).
    pub fn new(
        root: TreeRoot,
        n_sites: usize,
        n_groups: usize,
        resolution_width: f64,
    ) -> HistogramState {
        HistogramState {
            root,
            n_sites,
            n_groups,
            fine_depth: depth_for_resolution(&root, resolution_width),
            releases: vec![BTreeMap::new(); n_sites * n_groups],
            answered: vec![false; n_sites * n_groups],
            blocked: BTreeSet::new(),
        }
    }

    /// The root.
    pub fn root(&self) -> &TreeRoot {
        &self.root
    }

    /// Depth at which nodes are at most the resolution wide.
    pub fn fine_depth(&self) -> u8 {
        self.fine_depth
    }

    /// (site, group, node) leaves found unsplittable.
    pub fn blocked(&self) -> &BTreeSet<(usize, usize, NodeId)> {
        &self.blocked
    }

    /// Round 1: the root, for every site and group.
    pub fn initial_requests(&self, extra_depth: u8) -> Vec<RefineRequest> {
        (0..self.n_sites)
            .flat_map(|site| {
                (0..self.n_groups).map(move |group| RefineRequest {
                    site,
                    group,
                    node: NodeId::ROOT,
                    extra_depth: extra_depth.min(self.fine_depth),
                })
            })
            .collect()
    }

    /// Records a site's answer for `request` (one group): its earlier nodes inside `request` are
    /// replaced by the new ones.
    ///
    /// Checks that the answer is ascending, disjoint, nonzero and inside `request`, that the site
    /// had not released a strict ancestor of `request` (only its own leaves may be asked), and —
    /// after the site's first answer — that the new counts add up to what it released inside
    /// `request` before.
    pub fn apply_release(
        &mut self,
        site: usize,
        group: usize,
        request: NodeId,
        release: &[(NodeId, u64)],
    ) -> Result<(), TreeError> {
        if site >= self.n_sites {
            return Err(TreeError::BadSite {
                site,
                n_sites: self.n_sites,
            });
        }
        if group >= self.n_groups {
            return Err(TreeError::BadGroup {
                group,
                n_groups: self.n_groups,
            });
        }
        let bad = |reason: String| TreeError::BadRelease {
            site,
            group,
            request,
            reason,
        };
        let mut prev_end: Option<u64> = None;
        for &(node, count) in release {
            if !request.contains(&node) {
                return Err(bad(format!(
                    "node (depth {}, index {}) is outside the request",
                    node.depth(),
                    node.index()
                )));
            }
            if count == 0 {
                return Err(bad("zero counts must be left out".into()));
            }
            let (start, end) = node.key_range();
            if prev_end.is_some_and(|e| start < e) {
                return Err(bad("nodes overlap or are not in ascending order".into()));
            }
            prev_end = Some(end);
        }
        let idx = site * self.n_groups + group;
        let map = &mut self.releases[idx];
        if let Some(anc) = map.keys().find(|n| n.contains(&request) && **n != request) {
            return Err(bad(format!(
                "the site released the enclosing node (depth {}, index {}) whole; ask only for \
                 its own leaves",
                anc.depth(),
                anc.index()
            )));
        }
        let old: Vec<NodeId> = map
            .range(request..)
            .take_while(|(n, _)| request.contains(n))
            .map(|(n, _)| *n)
            .collect();
        let before: u64 = old.iter().map(|n| map[n]).sum();
        let after: u64 = release.iter().map(|&(_, c)| c).sum();
        if self.answered[idx] && before != after {
            return Err(TreeError::InconsistentRelease {
                site,
                group,
                request,
                before,
                after,
            });
        }
        for n in old {
            map.remove(&n);
        }
        map.extend(release.iter().copied());
        self.answered[idx] = true;
        Ok(())
    }

    /// Every (site, group) leaf with its count, in site, group, node order.
    pub fn masses(&self) -> Vec<Mass> {
        self.releases
            .iter()
            .enumerate()
            .flat_map(|(idx, map)| {
                let (site, group) = (idx / self.n_groups, idx % self.n_groups);
                map.iter().map(move |(&node, &count)| Mass {
                    site,
                    group,
                    node,
                    count,
                })
            })
            .collect()
    }

    /// Common cells (maximal released nodes; see [`common_cells`]), for display or for the
    /// cell-based functions.
    pub fn common_cells(&self) -> Vec<CommonCell> {
        let released: Vec<(NodeId, usize, u64)> = self
            .masses()
            .into_iter()
            .map(|m| (m.node, m.group, m.count))
            .collect();
        common_cells(&released, self.n_groups).expect("groups are in range by construction")
    }

    /// Call once all of a round's `requested` answers are applied: a request whose node is still
    /// a leaf of that site's release came back unsplit and is never asked again.
    pub fn finish_round(&mut self, requested: &[RefineRequest]) {
        for r in requested {
            if r.site < self.n_sites
                && r.group < self.n_groups
                && self.releases[r.site * self.n_groups + r.group].contains_key(&r.node)
            {
                self.blocked.insert((r.site, r.group, r.node));
            }
        }
    }

    /// Requests for the next round ([`masses_to_refine`]); empty when done.
    pub fn next_requests(
        &self,
        targets: &RefineTargets,
        extra_depth: u8,
    ) -> Result<Vec<RefineRequest>, TreeError> {
        for g in targets
            .quantile_groups
            .iter()
            .flatten()
            .chain(targets.mann_whitney.iter().flat_map(|(a, b)| [a, b]))
        {
            check_group(*g, self.n_groups)?;
        }
        masses_to_refine(
            &self.root,
            &self.masses(),
            self.fine_depth,
            targets,
            &self.blocked,
            extra_depth,
        )
    }

    /// Type-7 quantile of the pooled values of `groups` ([`quantile_from_masses`]).
    pub fn quantile(&self, groups: &[usize], p: f64) -> Result<QuantileBounds, TreeError> {
        for &g in groups {
            check_group(g, self.n_groups)?;
        }
        quantile_from_masses(&self.root, &self.masses(), groups, p)
    }

    /// Mann-Whitney of `group_a` vs `group_b` ([`mann_whitney_from_masses`]).
    pub fn mann_whitney(
        &self,
        group_a: usize,
        group_b: usize,
    ) -> Result<TreeMannWhitney, TreeError> {
        check_group(group_a, self.n_groups)?;
        check_group(group_b, self.n_groups)?;
        mann_whitney_from_masses(
            &self.root,
            &self.masses(),
            group_a,
            group_b,
            self.fine_depth,
        )
    }
}

/// Serde for `Vec<BTreeMap<NodeId, u64>>` as `Vec<Vec<(NodeId, u64)>>`.
mod release_maps {
    use super::NodeId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(v: &[BTreeMap<NodeId, u64>], s: S) -> Result<S::Ok, S::Error> {
        let lists: Vec<Vec<(NodeId, u64)>> = v
            .iter()
            .map(|m| m.iter().map(|(n, c)| (*n, *c)).collect())
            .collect();
        lists.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<BTreeMap<NodeId, u64>>, D::Error> {
        let lists: Vec<Vec<(NodeId, u64)>> = Vec::deserialize(d)?;
        Ok(lists.into_iter().map(|l| l.into_iter().collect()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let root = TreeRoot::new(0.0, 8.0).unwrap();
        let mut st = HistogramState::new(root, 2, 2, 1e-9 * root.width());
        let req = st.initial_requests(4);
        for r in &req {
            let vals = [[1.0, 2.0, 2.5], [3.0, 5.0, 7.5]][r.group];
            let ans = crate::tree::site_release(&vals, &root, r.node, r.extra_depth, 1).unwrap();
            st.apply_release(r.site, r.group, r.node, &ans).unwrap();
        }
        st.finish_round(&req);
        let json = serde_json::to_string(&st).unwrap();
        let back: HistogramState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
    }

    fn n(d: u8, i: u64) -> NodeId {
        NodeId::new(d, i).unwrap()
    }

    fn mass(site: usize, group: usize, node: NodeId, count: u64) -> Mass {
        Mass {
            site,
            group,
            node,
            count,
        }
    }

    #[test]
    fn resolution_depth() {
        let root = TreeRoot::new(0.0, 16.0).unwrap();
        assert_eq!(depth_for_resolution(&root, 16.0), 0);
        assert_eq!(depth_for_resolution(&root, 1.0), 4);
        assert_eq!(depth_for_resolution(&root, 0.9), 5);
        assert_eq!(depth_for_resolution(&root, 0.0), MAX_DEPTH);
        let c = TreeRoot::new(1.0, 1.0).unwrap();
        assert_eq!(depth_for_resolution(&c, 0.0), 0);
    }

    #[test]
    fn quantile_bracket_with_a_coarse_site() {
        let root = TreeRoot::new(0.0, 16.0).unwrap();
        // Site 0 knows its 4 values only in [0, 16); site 1 resolved its 5 values to width 1.
        let masses = vec![
            mass(0, 0, NodeId::ROOT, 4),
            mass(1, 0, n(4, 3), 2),
            mass(1, 0, n(4, 5), 1),
            mass(1, 0, n(4, 9), 2),
        ];
        // n = 9, median = order statistic 4. Lower ends sorted: 0×4, 3, 3, 5, 9, 9 -> 4th is 3.
        // Upper ends: 4, 4, 6, 10, 10, 16×4 -> 4th is 10.
        let q = quantile_from_masses(&root, &masses, &[0], 0.5).unwrap();
        assert_eq!((q.lower, q.upper), (3.0, 10.0));
        assert_eq!(q.value, 6.5);
    }

    #[test]
    fn mann_whitney_bounds() {
        let root = TreeRoot::new(0.0, 16.0).unwrap();
        // a: 2 values in [0,4), 1 in [8,16) (coarse); b: 1 in [4,8), 1 in [8,9) (fine at depth 4).
        let masses = vec![
            mass(0, 0, n(2, 0), 2),
            mass(0, 0, n(1, 1), 1),
            mass(1, 1, n(2, 1), 1),
            mass(1, 1, n(4, 8), 1),
        ];
        let r = mann_whitney_from_masses(&root, &masses, 0, 1, 4).unwrap();
        // Sure pairs: a in [8,16) above b in [4,8): 1. Unordered: a [8,16) vs b [8,9): 1.
        assert_eq!((r.w_min, r.w_max, r.test.w), (1.0, 2.0, 1.5));
        assert!(r.p_min <= r.test.p_value && r.test.p_value <= r.p_max);
        assert_eq!(r.resolution, 8.0);
    }

    #[test]
    fn state_checks_releases() {
        let root = TreeRoot::new(0.0, 8.0).unwrap();
        let mut st = HistogramState::new(root, 2, 1, 1.0);
        assert_eq!(st.fine_depth(), 3);
        st.apply_release(0, 0, NodeId::ROOT, &[(n(1, 0), 3), (n(1, 1), 2)])
            .unwrap();
        assert!(st.apply_release(2, 0, NodeId::ROOT, &[]).is_err());
        assert!(st.apply_release(0, 1, NodeId::ROOT, &[]).is_err());
        assert!(matches!(
            st.apply_release(0, 0, n(1, 0), &[(n(2, 0), 1)]),
            Err(TreeError::InconsistentRelease { .. })
        ));
        assert!(st.apply_release(0, 0, n(1, 0), &[(n(2, 2), 3)]).is_err());
        assert!(
            st.apply_release(0, 0, n(1, 0), &[(n(1, 0), 1), (n(2, 0), 2)])
                .is_err()
        );
        assert!(st.apply_release(0, 0, n(1, 0), &[(n(2, 0), 0)]).is_err());
        st.apply_release(0, 0, n(1, 0), &[(n(2, 0), 1), (n(3, 2), 2)])
            .unwrap();
        assert!(st.apply_release(0, 0, n(2, 3), &[]).is_err());
        st.apply_release(1, 0, NodeId::ROOT, &[(NodeId::ROOT, 5)])
            .unwrap();
        assert_eq!(
            st.common_cells(),
            vec![CommonCell {
                node: NodeId::ROOT,
                counts: vec![10]
            }]
        );
        let req = [RefineRequest {
            site: 1,
            group: 0,
            node: NodeId::ROOT,
            extra_depth: 3,
        }];
        st.finish_round(&req);
        assert!(st.blocked().contains(&(1, 0, NodeId::ROOT)));
        // Site 1's root is blocked; site 0's coarse leaves are still refined.
        let t = RefineTargets {
            probs: vec![0.5],
            quantile_groups: vec![vec![0]],
            mann_whitney: None,
        };
        let next = st.next_requests(&t, 4).unwrap();
        assert!(next.iter().all(|r| r.site == 0 && r.extra_depth <= 3));
        assert!(!next.is_empty());
    }
}
