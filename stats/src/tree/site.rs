//! Site half of the tree histogram: which node counts a site may release.

use super::{MAX_DEPTH, NodeId, TreeError, TreeRoot};

/// A site's values as sorted leaf keys, so the count in any node is two binary searches.
struct SortedKeys(Vec<u64>);

impl SortedKeys {
    fn count(&self, node: &NodeId) -> u64 {
        let (start, end) = node.key_range();
        let lo = self.0.partition_point(|&k| k < start);
        let hi = self.0.partition_point(|&k| k < end);
        (hi - lo) as u64
    }
}

/// A count that may be disclosed on its own: none, or at least `min_count`.
fn safe(count: u64, min_count: u64) -> bool {
    count == 0 || count >= min_count
}

/// Counts a site releases for `node`, for one group's values.
///
/// Starting at `node`, a node is split into its two children while
/// (a) the depth budget remains (`depth < node.depth + extra_depth`, and `< 52`),
/// (b) the root is not degenerate (a zero-width interval has nothing to resolve), and
/// (c) the node's count is > 0 and BOTH children have count 0 or ≥ `min_count`;
/// otherwise the node itself is released. Only nonzero released nodes are returned, in
/// ascending order (they are disjoint and together hold every value of `node`). Values outside
/// `node` are ignored; a value outside the root (or NaN) is an [`TreeError::OutOfRange`] error.
///
/// # Disclosure guarantee
/// Let T be the tree this rule generates from the root with unlimited depth (it depends only on
/// this site's values, the root and `min_count`). Before answering, the function checks that
/// `node` is a node of T — every ancestor of `node` has both children with count 0 or
/// ≥ `min_count` — and refuses with [`TreeError::NotReleasable`] otherwise; it also refuses a
/// node holding 1..`min_count`−1 values ([`TreeError::TooFewValues`]). So every count this site
/// ever releases, whatever it is asked and in whatever order, is the count of a node of T and is
/// ≥ `min_count`. Any two released nodes are nested or disjoint, and a node N minus the union of
/// released nodes inside it is a disjoint union of children of split nodes of T, each holding 0
/// or ≥ `min_count` values. Hence every set that unions and differences of released sets can
/// form holds 0 or ≥ `min_count` of this site's values: no combination of answers isolates
/// fewer than `min_count` patients. The root and `min_count` must be the same for every request
/// of a study variable (the site agent pins them).
///
/// A node that the rule will not split is released whole; the aggregator sees it come back
/// unchanged and stops asking (blocked cell). A refusal reveals only that some split would
/// isolate fewer than `min_count` values, which the unsplit release already implies.
pub fn site_release(
    values: &[f64],
    root: &TreeRoot,
    node: NodeId,
    extra_depth: u8,
    min_count: u64,
) -> Result<Vec<(NodeId, u64)>, TreeError> {
    // Re-validate: NodeId fields are private, but keep the check cheap and explicit.
    let node = NodeId::new(node.depth(), node.index())?;
    let mut keys = values
        .iter()
        .map(|&x| root.leaf_key(x))
        .collect::<Result<Vec<u64>, TreeError>>()?;
    keys.sort_unstable();
    let keys = SortedKeys(keys);

    // `node` must be a node of this site's tree T (see the doc): a degenerate root is never
    // split, otherwise every ancestor must have safe children.
    if root.is_degenerate() && node.depth() > 0 {
        return Err(TreeError::NotReleasable {
            node,
            ancestor: NodeId::ROOT,
        });
    }
    for d in 0..node.depth() {
        let ancestor = node.ancestor_at(d).expect("d < node depth");
        let (l, r) = ancestor
            .children()
            .expect("ancestor above node has children");
        if !safe(keys.count(&l), min_count) || !safe(keys.count(&r), min_count) {
            return Err(TreeError::NotReleasable { node, ancestor });
        }
    }

    let count = keys.count(&node);
    if count == 0 {
        return Ok(Vec::new());
    }
    if count < min_count {
        return Err(TreeError::TooFewValues { node, min_count });
    }
    let max_depth = node.depth().saturating_add(extra_depth).min(MAX_DEPTH);
    let mut out = Vec::new();
    split(&keys, root, node, max_depth, min_count, &mut out);
    Ok(out)
}

/// Depth-first, left child first, so the output is in ascending order.
fn split(
    keys: &SortedKeys,
    root: &TreeRoot,
    node: NodeId,
    max_depth: u8,
    min_count: u64,
    out: &mut Vec<(NodeId, u64)>,
) {
    let count = keys.count(&node);
    if node.depth() < max_depth
        && !root.is_degenerate()
        && let Some((l, r)) = node.children()
    {
        let (cl, cr) = (keys.count(&l), keys.count(&r));
        if safe(cl, min_count) && safe(cr, min_count) {
            for (child, c) in [(l, cl), (r, cr)] {
                if c > 0 {
                    split(keys, root, child, max_depth, min_count, out);
                }
            }
            return;
        }
    }
    out.push((node, count));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(d: u8, i: u64) -> NodeId {
        NodeId::new(d, i).unwrap()
    }

    #[test]
    fn splits_only_when_both_halves_are_safe() {
        let root = TreeRoot::new(0.0, 8.0).unwrap();
        // 5 values in [0,4), 1 value in [4,8): with min_count 2 the root must not split.
        let v = [0.5, 1.5, 2.5, 3.5, 3.6, 7.0];
        assert_eq!(
            site_release(&v, &root, NodeId::ROOT, 3, 2).unwrap(),
            vec![(NodeId::ROOT, 6)]
        );
        // With min_count 1 it splits down to depth 3 (width-1 cells).
        let r = site_release(&v, &root, NodeId::ROOT, 3, 1).unwrap();
        assert_eq!(
            r,
            vec![
                (n(3, 0), 1),
                (n(3, 1), 1),
                (n(3, 2), 1),
                (n(3, 3), 2),
                (n(3, 7), 1)
            ]
        );
        // Asking below the unsplit root is refused for min_count 2.
        assert!(matches!(
            site_release(&v, &root, n(1, 0), 3, 2),
            Err(TreeError::NotReleasable { .. })
        ));
        // Too few values at all.
        assert!(matches!(
            site_release(&v[..1], &root, NodeId::ROOT, 3, 2),
            Err(TreeError::TooFewValues { .. })
        ));
        assert!(matches!(
            site_release(&[9.0], &root, NodeId::ROOT, 3, 1),
            Err(TreeError::OutOfRange { .. })
        ));
        assert_eq!(
            site_release(&[], &root, NodeId::ROOT, 3, 5).unwrap(),
            vec![]
        );
    }

    #[test]
    fn zero_child_does_not_block_a_split() {
        let root = TreeRoot::new(0.0, 8.0).unwrap();
        let v = [5.0, 5.5, 6.0, 6.5, 7.9];
        // All 5 in the right half: (0, 5) is safe for min_count 5; next level (3 in [4,6),
        // 2 in [6,8)) is not.
        assert_eq!(
            site_release(&v, &root, NodeId::ROOT, 4, 5).unwrap(),
            vec![(n(1, 1), 5)]
        );
    }

    #[test]
    fn degenerate_root_is_not_split() {
        let root = TreeRoot::new(2.0, 2.0).unwrap();
        assert_eq!(
            site_release(&[2.0; 4], &root, NodeId::ROOT, 8, 1).unwrap(),
            vec![(NodeId::ROOT, 4)]
        );
        assert!(site_release(&[2.0; 4], &root, n(1, 0), 8, 1).is_err());
    }
}
