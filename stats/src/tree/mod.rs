//! The disclosure-safe laminar binary-tree histogram used for federated medians, quartiles and
//! Mann-Whitney.
//!
//! # Why a tree
//! Medians and rank tests need to know where values lie relative to each other across sites,
//! which moments cannot give. Each site instead releases counts of its values in intervals of a
//! single binary tree over a common root interval `[lo, hi]`, splitting an interval only when
//! *both* halves hold either no value or at least `min_count` values. Because every released
//! interval is a node of the same tree, the released sets are laminar (any two are nested or
//! disjoint), and every set the aggregator can form from them by unions and differences has a
//! count of 0 or ≥ `min_count` (see [`site_release`] for the argument).
//!
//! # Geometry and membership
//! Node `(d, i)` covers `[lo + w·i/2^d, lo + w·(i+1)/2^d)` with `w = hi − lo`; the last node at
//! each depth is closed at `hi`. Membership is *not* computed from these floating-point bounds
//! but from `t = (x − lo)/(hi − lo)`: `x` is in node `(d, floor(t·2^d))`, the index clamped to
//! `2^d − 1` so that `x = hi` belongs to the last node. Scaling by a power of two is exact in
//! f64, so `floor(t·2^(d+1)) / 2 == floor(t·2^d)`: a value's node at depth d+1 is always a child
//! of its node at depth d, whatever the rounding in `t`. Depth is limited to [`MAX_DEPTH`] = 52
//! (the f64 mantissa) so that `t·2^d` is an exact integer-valued scaling and indices fit in u64.
//! Internally a value's node at every depth is read off one 52-bit "leaf key"
//! `floor(t·2^52)`: the node at depth d is `key >> (52 − d)`.
//!
//! # Protocol (what the aggregator crate drives)
//! 1. Sites send [`crate::Moments`] per group; the aggregator merges them (`SiteId` order) and
//!    fixes the root with [`TreeRoot::from_pooled_moments`]. The root must then stay fixed for the
//!    study variable: sites must pin it (a site that answered for one root must refuse another),
//!    because nodes of two different trees are not laminar.
//! 2. Round 1: every site answers [`site_release`] for `NodeId::ROOT` for each group.
//! 3. The aggregator keeps the latest release of every (site, group) in a [`HistogramState`].
//!    Each round it asks each site to refine those of *its own* leaves that still limit a
//!    requested statistic ([`masses_to_refine`]), applies the answers, marks leaves that came
//!    back unsplit as blocked for that site, and repeats until nothing needs refining. A site is
//!    only ever asked about its own leaves, which it can always answer.
//! 4. Statistics are read with bounds: [`quantile_from_masses`] brackets a quartile,
//!    [`mann_whitney_from_masses`] gives W's range and the p-value's range; both collapse to the
//!    pooled values when every site could refine to the resolution.
//!
//! The simpler common-cell functions ([`common_cells`], [`cells_to_refine`],
//! [`quantile_from_cells`], [`mann_whitney_from_cells`]) treat the maximal released nodes as
//! the partition. They are exact when every site can refine, but one site that cannot split a
//! node keeps that node coarse for everyone (measured on the example cohort: a single
//! root-level refusal with `min_count` = 2 leaves one cell), so the aggregator should drive the
//! per-site [`HistogramState`] loop.
//!
//! # Limits (measured, see `stats/tests/golden.rs`)
//! With `min_count` = 1 both loops reproduce the pooled Mann-Whitney and quartiles exactly on
//! the example cohort (7 sites, 5–14 patients per site and group) in 8 rounds of depth 4. With
//! `min_count` ≥ 3 most of those small sites cannot split even the root (a split at the pooled
//! mean of 10 values is rarely 5/5 or 0/10), so the quartile brackets span most of the root and
//! the Mann-Whitney p-value range is [0, 1]: the bounds stay correct but are uninformative.
//! Informative federated medians at `min_count` 5 with sites this small need the node counts
//! summed across sites before the aggregator sees them (secure aggregation), not a per-site
//! rule.

mod aggregate;
mod site;
mod state;

pub use aggregate::{
    CellMannWhitney, CommonCell, RefineTargets, cells_to_refine, common_cells,
    mann_whitney_from_cells, quantile_from_cells, tie_cells, value_cells,
};
pub use site::site_release;
pub use state::{
    HistogramState, Mass, QuantileBounds, RefineRequest, TreeMannWhitney, depth_for_resolution,
    mann_whitney_from_masses, masses_to_refine, quantile_from_masses,
};

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::moments::Moments;

/// Deepest allowed node: the f64 mantissa has 52 fraction bits, so `t·2^52` is still an exact
/// scaling and node indices fit in a u64.
pub const MAX_DEPTH: u8 = 52;

/// Errors of the tree histogram.
///
/// Messages never include counts or patient values, so a site may forward them to the
/// aggregator; fields that hold such data are documented as local-only.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TreeError {
    /// The root interval is not `lo <= hi` with finite ends.
    #[error("invalid tree root: needs finite lo <= hi (lo == hi only for a constant variable)")]
    InvalidRoot {
        /// Given lower end.
        lo: f64,
        /// Given upper end.
        hi: f64,
    },
    /// Pooled moments cannot define a root (no values, or NaN/infinite moments).
    #[error(
        "cannot derive a tree root from pooled moments with n = {n} and non-finite or empty \
         mean/m2; collect at least one finite value per site first"
    )]
    BadMoments {
        /// Pooled count.
        n: u64,
    },
    /// A node id is outside the tree.
    #[error("invalid node (depth {depth}, index {index}): needs depth <= 52 and index < 2^depth")]
    InvalidNode {
        /// Depth given.
        depth: u8,
        /// Index given.
        index: u64,
    },
    /// A value lies outside the root interval (or is NaN). The root was derived from pooled
    /// moments, so this means the moments did not describe these values: recompute them.
    /// `value` is a patient value: log it locally only (it is not in the message).
    #[error(
        "a value lies outside the tree root [{lo}, {hi}] or is NaN; the root must come from \
         pooled moments of these same values (re-send the site's moments and recompute the root)"
    )]
    OutOfRange {
        /// The offending value (local use only, never forward).
        value: f64,
        /// Root lower end.
        lo: f64,
        /// Root upper end.
        hi: f64,
    },
    /// The requested node holds between 1 and `min_count − 1` values, so even releasing it
    /// whole would disclose a small count. (At the root this means the site has too few
    /// values in this group to take part.)
    #[error(
        "node (depth {}, index {}) holds fewer than min_count = {min_count} values; the site \
         cannot release it (leave this site/group out of the histogram)",
        node.depth, node.index
    )]
    TooFewValues {
        /// The node asked for.
        node: NodeId,
        /// The site's policy threshold.
        min_count: u64,
    },
    /// The requested node is below an ancestor that this site's own splitting rule never split,
    /// so answering would let the aggregator difference it against the ancestor's count.
    /// An honest aggregator never asks this (it only asks for common cells).
    #[error(
        "node (depth {}, index {}) is not releasable: this site never splits its ancestor \
         (depth {}, index {}); ask only for common cells of this site's earlier releases",
        node.depth, node.index, ancestor.depth, ancestor.index
    )]
    NotReleasable {
        /// The node asked for.
        node: NodeId,
        /// The first ancestor whose split would isolate fewer than `min_count` values.
        ancestor: NodeId,
    },
    /// A group index is not below the number of groups.
    #[error("group {group} is out of range: there are {n_groups} groups (indices 0..{n_groups})")]
    BadGroup {
        /// Group given.
        group: usize,
        /// Number of groups.
        n_groups: usize,
    },
    /// A site index is not below the number of sites.
    #[error("site {site} is out of range: the histogram was created for {n_sites} sites")]
    BadSite {
        /// Site given.
        site: usize,
        /// Number of sites.
        n_sites: usize,
    },
    /// A site's answer does not fit the request (node outside it, zero count, overlap, order).
    #[error(
        "release from site {site}, group {group} for node (depth {}, index {}) is malformed: \
         {reason}",
        request.depth, request.index
    )]
    BadRelease {
        /// Site index.
        site: usize,
        /// Group index.
        group: usize,
        /// The node that was asked for.
        request: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// A site's refinement of a cell does not add up to what it released for that cell before:
    /// its data changed between rounds (or it answered for another root). Restart the variable.
    #[error(
        "site {site}, group {group}: refinement of node (depth {}, index {}) totals {after} but \
         the site released {before} there earlier; its data or root changed, restart this variable",
        request.depth, request.index
    )]
    InconsistentRelease {
        /// Site index.
        site: usize,
        /// Group index.
        group: usize,
        /// The node that was asked for.
        request: NodeId,
        /// Earlier total in the node.
        before: u64,
        /// New total.
        after: u64,
    },
    /// A statistic could not be computed from the cells.
    #[error(transparent)]
    Stats(#[from] crate::error::StatsError),
}

/// The interval the tree subdivides. `lo == hi` is a degenerate root for a constant variable
/// (every value equals `lo`); it is never split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRoot", into = "RawRoot")]
pub struct TreeRoot {
    lo: f64,
    hi: f64,
}

#[derive(Serialize, Deserialize)]
struct RawRoot {
    lo: f64,
    hi: f64,
}

impl TryFrom<RawRoot> for TreeRoot {
    type Error = TreeError;
    fn try_from(r: RawRoot) -> Result<Self, TreeError> {
        TreeRoot::new(r.lo, r.hi)
    }
}

impl From<TreeRoot> for RawRoot {
    fn from(r: TreeRoot) -> Self {
        RawRoot { lo: r.lo, hi: r.hi }
    }
}

/// 2^52 as u64: the number of leaf keys.
const LEAVES: u64 = 1 << MAX_DEPTH;

impl TreeRoot {
    /// Root `[lo, hi]`; errors unless both are finite and `lo <= hi`.
    pub fn new(lo: f64, hi: f64) -> Result<TreeRoot, TreeError> {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(TreeError::InvalidRoot { lo, hi });
        }
        Ok(TreeRoot { lo, hi })
    }

    /// Root chosen by the aggregator from the pooled moments of all values (all groups, all
    /// sites): `[μ − kσ, μ + kσ]` with σ the **population** SD (`sqrt(m2/n)`) and
    /// `k = ceil(sqrt(n)) + 1`.
    ///
    /// Why no value can fall outside: by Chebyshev's inequality applied to the empirical
    /// distribution of the n values, the fraction with `|x − μ| >= kσ` is at most `1/k²`, and
    /// `k > sqrt(n)` makes `1/k² < 1/n`, i.e. fewer than one value. (Samuelson's inequality gives
    /// the sharper `|x − μ| <= σ·sqrt(n − 1)`.) The interval is then widened on each side by
    /// `1e-9·(kσ + |μ|)` so that round-off in the merged μ and σ cannot push an extreme value
    /// out. σ = 0 gives the degenerate root `[μ, μ]` (all values equal μ, which the exact merge
    /// of identical values reproduces exactly).
    ///
    /// The root is wide (about `2·sqrt(n)` SDs) on purpose: it reveals nothing beyond μ and σ,
    /// which were already released; the tree's depth recovers the resolution.
    pub fn from_pooled_moments(pooled: &Moments) -> Result<TreeRoot, TreeError> {
        if pooled.n == 0 || !pooled.is_finite() || pooled.m2 < 0.0 {
            return Err(TreeError::BadMoments { n: pooled.n });
        }
        let sigma = (pooled.m2 / pooled.n as f64).sqrt();
        let mu = pooled.mean;
        if sigma == 0.0 {
            return TreeRoot::new(mu, mu);
        }
        let k = (pooled.n as f64).sqrt().ceil() + 1.0;
        let half = k * sigma;
        let pad = 1e-9 * (half + mu.abs());
        TreeRoot::new(mu - half - pad, mu + half + pad)
    }

    /// Lower end.
    pub fn lo(&self) -> f64 {
        self.lo
    }

    /// Upper end.
    pub fn hi(&self) -> f64 {
        self.hi
    }

    /// `hi − lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }

    /// True for a constant-variable root (`lo == hi`).
    pub fn is_degenerate(&self) -> bool {
        self.lo == self.hi
    }

    /// `floor(t·2^52)` clamped to `2^52 − 1`, with `t = (x − lo)/(hi − lo)` (0 for a degenerate
    /// root). Errors when `x` is outside `[lo, hi]` or NaN.
    pub(crate) fn leaf_key(&self, x: f64) -> Result<u64, TreeError> {
        if !(x >= self.lo && x <= self.hi) {
            return Err(TreeError::OutOfRange {
                value: x,
                lo: self.lo,
                hi: self.hi,
            });
        }
        if self.is_degenerate() {
            return Ok(0);
        }
        // Both operands are rounded monotonically, so lo <= x <= hi gives 0 <= t <= 1.
        let t = (x - self.lo) / (self.hi - self.lo);
        let scaled = t * LEAVES as f64; // exact: power-of-two scaling
        Ok((scaled.floor() as u64).min(LEAVES - 1))
    }

    /// The node at `depth` that holds `x`: index `floor(t·2^depth)` clamped to `2^depth − 1`.
    pub fn node_of(&self, x: f64, depth: u8) -> Result<NodeId, TreeError> {
        if depth > MAX_DEPTH {
            return Err(TreeError::InvalidNode { depth, index: 0 });
        }
        let key = self.leaf_key(x)?;
        Ok(NodeId {
            depth,
            index: key >> (MAX_DEPTH - depth),
        })
    }
}

/// A node of the tree: depth `d <= 52`, index `i < 2^d`.
///
/// Ordering (`Ord`) is by left end, then by depth, so disjoint nodes sort in ascending value
/// order and an ancestor sorts just before its first descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawNode", into = "RawNode")]
pub struct NodeId {
    depth: u8,
    index: u64,
}

#[derive(Serialize, Deserialize)]
struct RawNode {
    depth: u8,
    index: u64,
}

impl TryFrom<RawNode> for NodeId {
    type Error = TreeError;
    fn try_from(r: RawNode) -> Result<Self, TreeError> {
        NodeId::new(r.depth, r.index)
    }
}

impl From<NodeId> for RawNode {
    fn from(n: NodeId) -> Self {
        RawNode {
            depth: n.depth,
            index: n.index,
        }
    }
}

impl NodeId {
    /// The root node (0, 0).
    pub const ROOT: NodeId = NodeId { depth: 0, index: 0 };

    /// Checked constructor: `depth <= 52` and `index < 2^depth`.
    pub fn new(depth: u8, index: u64) -> Result<NodeId, TreeError> {
        if depth > MAX_DEPTH || index >= (1u64 << depth) {
            return Err(TreeError::InvalidNode { depth, index });
        }
        Ok(NodeId { depth, index })
    }

    /// Depth (0 = root).
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Index within its depth (0 = leftmost).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The two halves, or `None` at [`MAX_DEPTH`].
    pub fn children(&self) -> Option<(NodeId, NodeId)> {
        (self.depth < MAX_DEPTH).then(|| {
            let d = self.depth + 1;
            (
                NodeId {
                    depth: d,
                    index: 2 * self.index,
                },
                NodeId {
                    depth: d,
                    index: 2 * self.index + 1,
                },
            )
        })
    }

    /// The enclosing node one level up, or `None` for the root.
    pub fn parent(&self) -> Option<NodeId> {
        (self.depth > 0).then(|| NodeId {
            depth: self.depth - 1,
            index: self.index >> 1,
        })
    }

    /// The other half of the parent, or `None` for the root.
    pub fn sibling(&self) -> Option<NodeId> {
        (self.depth > 0).then_some(NodeId {
            depth: self.depth,
            index: self.index ^ 1,
        })
    }

    /// The ancestor (or self) at `depth`, or `None` when `depth` is deeper than this node.
    pub fn ancestor_at(&self, depth: u8) -> Option<NodeId> {
        (depth <= self.depth).then(|| NodeId {
            depth,
            index: self.index >> (self.depth - depth),
        })
    }

    /// True when `other` is this node or lies inside it.
    pub fn contains(&self, other: &NodeId) -> bool {
        other.ancestor_at(self.depth) == Some(*self)
    }

    /// Range of 52-bit leaf keys `[start, end)` covered by this node.
    pub(crate) fn key_range(&self) -> (u64, u64) {
        let shift = MAX_DEPTH - self.depth;
        (self.index << shift, (self.index + 1) << shift)
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_range()
            .0
            .cmp(&other.key_range().0)
            .then(self.depth.cmp(&other.depth))
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// True when `descendant` is `ancestor` or lies inside it.
pub fn contains(ancestor: &NodeId, descendant: &NodeId) -> bool {
    ancestor.contains(descendant)
}

/// The interval `(lo, hi)` of a node, for reporting and quantile estimates:
/// `lo + w·i/2^d` and `lo + w·(i+1)/2^d` (`w = hi − lo`), with the root's own ends returned
/// exactly at the edges. The same formula is used for every end, so adjacent nodes share their
/// boundary bit for bit and children nest exactly in their parent. (Membership uses the
/// leaf-key rule in the module doc; a value can differ from these bounds by round-off only.)
pub fn node_interval(root: &TreeRoot, node: &NodeId) -> (f64, f64) {
    let scale = (1u64 << node.depth) as f64;
    let at = |i: u64| -> f64 {
        if i == 0 {
            root.lo
        } else if i == 1u64 << node.depth {
            root.hi
        } else {
            // i / 2^d is exact; one rounding in the product, one in the sum.
            root.lo + root.width() * (i as f64 / scale)
        }
    };
    (at(node.index), at(node.index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_relations() {
        let n = NodeId::new(3, 5).unwrap();
        assert_eq!(n.parent(), Some(NodeId::new(2, 2).unwrap()));
        assert_eq!(n.sibling(), Some(NodeId::new(3, 4).unwrap()));
        assert!(contains(&NodeId::ROOT, &n));
        assert!(contains(&NodeId::new(1, 1).unwrap(), &n));
        assert!(!contains(&NodeId::new(1, 0).unwrap(), &n));
        assert!(!contains(&n, &NodeId::new(1, 1).unwrap()));
        assert!(NodeId::new(3, 8).is_err());
        assert!(NodeId::new(53, 0).is_err());
        assert!(NodeId::new(52, (1 << 52) - 1).is_ok());
        assert_eq!(NodeId::new(52, 0).unwrap().children(), None);
        // Order: ancestor first at the same left end, then by position.
        let mut v = vec![
            NodeId::new(2, 3).unwrap(),
            NodeId::new(2, 2).unwrap(),
            NodeId::new(1, 1).unwrap(),
            NodeId::ROOT,
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                NodeId::ROOT,
                NodeId::new(1, 1).unwrap(),
                NodeId::new(2, 2).unwrap(),
                NodeId::new(2, 3).unwrap()
            ]
        );
    }

    #[test]
    fn membership_is_nested_at_every_depth() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let root = TreeRoot::new(-3.7, 1234.5).unwrap();
        for _ in 0..2000 {
            let x = if rng.gen_bool(0.1) {
                if rng.gen_bool(0.5) {
                    root.lo()
                } else {
                    root.hi()
                }
            } else {
                rng.gen_range(root.lo()..=root.hi())
            };
            let mut prev = root.node_of(x, 0).unwrap();
            assert_eq!(prev, NodeId::ROOT);
            for d in 1..=MAX_DEPTH {
                let n = root.node_of(x, d).unwrap();
                assert_eq!(n.parent(), Some(prev), "x = {x}, depth {d}");
                // Direct definition floor(t·2^d) clamped must agree with the leaf-key shift.
                let t = (x - root.lo()) / root.width();
                let direct = ((t * (1u64 << d) as f64).floor() as u64).min((1u64 << d) - 1);
                assert_eq!(n.index(), direct);
                prev = n;
            }
        }
        assert_eq!(root.node_of(root.hi(), 4).unwrap().index(), 15);
        assert!(root.node_of(1234.6, 1).is_err());
        assert!(root.node_of(f64::NAN, 1).is_err());
    }

    #[test]
    fn intervals_nest_and_abut() {
        let root = TreeRoot::new(0.1, 0.7).unwrap();
        for d in 0..12u8 {
            for i in 0..(1u64 << d) {
                let n = NodeId::new(d, i).unwrap();
                let (lo, hi) = node_interval(&root, &n);
                assert!(lo < hi);
                if let Some((l, r)) = n.children() {
                    let (llo, lhi) = node_interval(&root, &l);
                    let (rlo, rhi) = node_interval(&root, &r);
                    assert_eq!((llo, rhi), (lo, hi));
                    assert_eq!(lhi, rlo);
                }
            }
        }
        assert_eq!(
            node_interval(&root, &NodeId::new(5, 31).unwrap()).1,
            root.hi()
        );
    }

    #[test]
    fn root_from_moments_covers_extremes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [1usize, 2, 3, 5, 10, 50, 400] {
            for _ in 0..50 {
                // Heavy outlier: the worst case for Chebyshev.
                let mut v: Vec<f64> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
                v[0] = 1e6 * rng.gen_range(0.5..1.0);
                let root = TreeRoot::from_pooled_moments(&Moments::from_values(&v)).unwrap();
                for &x in &v {
                    assert!(root.node_of(x, 10).is_ok(), "n = {n}: {x} outside root");
                }
            }
        }
        let c = TreeRoot::from_pooled_moments(&Moments::from_values(&[0.1; 9])).unwrap();
        assert!(c.is_degenerate());
        assert_eq!(c.lo(), 0.1);
        assert!(TreeRoot::from_pooled_moments(&Moments::EMPTY).is_err());
        assert!(TreeRoot::new(1.0, 0.0).is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: NodeId = serde_json::from_str(r#"{"depth":2,"index":3}"#).unwrap();
        assert_eq!(ok, NodeId::new(2, 3).unwrap());
        assert!(serde_json::from_str::<NodeId>(r#"{"depth":2,"index":4}"#).is_err());
        assert!(serde_json::from_str::<TreeRoot>(r#"{"lo":2.0,"hi":1.0}"#).is_err());
    }
}
