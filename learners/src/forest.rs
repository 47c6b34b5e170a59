//! Random forest classifier with probability output (scikit-learn `RandomForestClassifier`
//! semantics), written here on purpose instead of using linfa-ensemble.
//!
//! Why not linfa-ensemble/linfa-trees: (1) a linfa `DecisionTree` stores only the majority label
//! of a leaf, picked from a `HashMap` whose iteration order is randomised per map, so a leaf with
//! a class tie gets a random label and the tree's post-fit pruning (which merges equal-label
//! siblings) changes shape from run to run: fitting the same data twice in one process gave two
//! different trees (probe of 2026-11-28, depth-1 tree on six rows). A study whose results must
//! repeat bit for bit cannot use that. (2) linfa-ensemble draws one feature subset per *tree*,
//! with replacement, not a fresh subset per *split* as Breiman's forest does, and (3) it has no
//! `predict_proba`, only majority votes.
//!
//! Conventions (scikit-learn): bootstrap of n draws with replacement, implemented as integer
//! sample weights; Gini criterion; at each node the features are visited in a random order and
//! the best split over the first `max(1, ⌊max_features·p⌋)` non-constant features is taken
//! (continuing past that number only while no valid split was found); thresholds are midpoints
//! between consecutive distinct values, left iff `x ≤ threshold`; `min_samples_leaf` and
//! `min_samples_split` count distinct rows; a leaf stores the weighted fraction of positives, and
//! `predict_proba` is the mean of the trees' leaf fractions. Ties between candidate splits keep
//! the first found. Random streams: tree t uses `derive_seed(seed, [FIT, t])`.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, check_cols, check_finite, check_xy, param};
use crate::plan::ProbabilisticModel;
use crate::rng::{self, derive_seed, tag};

/// Forest hyper-parameters (scikit-learn names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub n_trees: u32,
    /// `None`: grow until pure or limited by the sample counts.
    pub max_depth: Option<u32>,
    /// Fraction of the features tried at each split, in (0, 1].
    pub max_features: f64,
    pub min_samples_split: u32,
    pub min_samples_leaf: u32,
    pub bootstrap: bool,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            max_depth: None,
            max_features: 0.5,
            min_samples_split: 2,
            min_samples_leaf: 1,
            bootstrap: true,
        }
    }
}

const LEAF: u32 = u32::MAX;

/// One node of a flat tree; a leaf has `feature == u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    pub threshold: f64,
    pub left: u32,
    pub right: u32,
    /// Weighted fraction of positives among the node's training rows.
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    fn leaf_value(&self, row: ndarray::ArrayView1<f64>) -> f64 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            i = if row[n.feature as usize] <= n.threshold {
                n.left
            } else {
                n.right
            } as usize;
        }
    }
}

/// A fitted forest. Serialisable so it can be relayed to other sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestModel {
    pub params: ForestParams,
    pub n_features: usize,
    pub trees: Vec<Tree>,
}

fn gini_sum(wp: f64, w: f64) -> f64 {
    // w · Gini = w · 2p(1−p) with p = wp/w; zero for an empty side.
    if w <= 0.0 {
        0.0
    } else {
        2.0 * wp * (w - wp) / w
    }
}

struct Builder<'x, 'a> {
    x: ArrayView2<'x, f64>,
    y: &'a [bool],
    w: Vec<f64>,
    p: ForestParams,
    mtry: usize,
    nodes: Vec<Node>,
}

impl Builder<'_, '_> {
    fn leaf(&mut self, wp: f64, wt: f64) -> u32 {
        self.nodes.push(Node {
            feature: LEAF,
            threshold: 0.0,
            left: LEAF,
            right: LEAF,
            value: wp / wt,
        });
        (self.nodes.len() - 1) as u32
    }

    fn build(&mut self, rows: &mut [usize], depth: u32, r: &mut rand_chacha::ChaCha8Rng) -> u32 {
        let wt: f64 = rows.iter().map(|&i| self.w[i]).sum();
        let wp: f64 = rows
            .iter()
            .filter(|&&i| self.y[i])
            .map(|&i| self.w[i])
            .sum();
        let n = rows.len() as u32;
        let at_limit = self.p.max_depth.is_some_and(|d| depth >= d)
            || n < self.p.min_samples_split
            || n < 2 * self.p.min_samples_leaf
            || wp == 0.0
            || wp == wt;
        if at_limit {
            return self.leaf(wp, wt);
        }
        let p = self.x.ncols();
        let mut order: Vec<usize> = (0..p).collect();
        rng::shuffle(r, &mut order);
        let mut best: Option<(f64, usize, f64)> = None; // (children Gini sum, feature, threshold)
        let mut visited = 0usize;
        let msl = self.p.min_samples_leaf as usize;
        for &f in &order {
            if visited >= self.mtry && best.is_some() {
                break;
            }
            rows.sort_by(|&a, &b| self.x[[a, f]].total_cmp(&self.x[[b, f]]));
            let first = self.x[[rows[0], f]];
            let last = self.x[[rows[rows.len() - 1], f]];
            if first == last {
                continue; // constant here: not counted as visited (scikit-learn)
            }
            visited += 1;
            let (mut lw, mut lp) = (0.0, 0.0);
            for j in 0..rows.len() - 1 {
                let i = rows[j];
                lw += self.w[i];
                if self.y[i] {
                    lp += self.w[i];
                }
                let (a, b) = (self.x[[i, f]], self.x[[rows[j + 1], f]]);
                if a == b || j + 1 < msl || rows.len() - j - 1 < msl {
                    continue;
                }
                let score = gini_sum(lp, lw) + gini_sum(wp - lp, wt - lw);
                if best.is_none_or(|(s, _, _)| score < s) {
                    let mut thr = a / 2.0 + b / 2.0;
                    if thr >= b {
                        thr = a;
                    }
                    best = Some((score, f, thr));
                }
            }
        }
        let Some((_, f, thr)) = best else {
            return self.leaf(wp, wt);
        };
        let me = self.leaf(wp, wt);
        let mut left: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.x[[i, f]] <= thr)
            .collect();
        let mut right: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.x[[i, f]] > thr)
            .collect();
        let l = self.build(&mut left, depth + 1, r);
        let rr = self.build(&mut right, depth + 1, r);
        let node = &mut self.nodes[me as usize];
        node.feature = f as u32;
        node.threshold = thr;
        node.left = l;
        node.right = rr;
        me
    }
}

/// Fits the forest (see the module doc for the conventions).
pub fn fit_forest(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &ForestParams,
    seed: u64,
) -> Result<ForestModel> {
    check_xy("random forest", x, y.len())?;
    if params.n_trees == 0 {
        return Err(param(
            "forest.n_trees",
            params.n_trees,
            "must be at least 1",
        ));
    }
    if !(params.max_features > 0.0 && params.max_features <= 1.0) {
        return Err(param(
            "forest.max_features",
            params.max_features,
            "must lie in (0, 1]",
        ));
    }
    if params.min_samples_leaf == 0 || params.min_samples_split < 2 {
        return Err(param(
            "forest.min_samples_leaf/min_samples_split",
            format!("{}/{}", params.min_samples_leaf, params.min_samples_split),
            "need min_samples_leaf ≥ 1 and min_samples_split ≥ 2",
        ));
    }
    if params.max_depth == Some(0) {
        return Err(param(
            "forest.max_depth",
            0,
            "must be at least 1 (or absent for no limit)",
        ));
    }
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == y.len() {
        return Err(LearnerError::NeedBothClasses {
            what: "random forest",
            positives,
            negatives: y.len() - positives,
        });
    }
    let n = y.len();
    let p = x.ncols();
    let mtry = ((params.max_features * p as f64).floor() as usize).max(1);
    let mut trees = Vec::with_capacity(params.n_trees as usize);
    for t in 0..params.n_trees {
        let mut r = rng::stream(derive_seed(seed, &[tag::FIT, u64::from(t)]));
        let mut w = vec![0.0; n];
        if params.bootstrap {
            for _ in 0..n {
                w[rng::below(&mut r, n as u64) as usize] += 1.0;
            }
        } else {
            w.iter_mut().for_each(|v| *v = 1.0);
        }
        let mut rows: Vec<usize> = (0..n).filter(|&i| w[i] > 0.0).collect();
        let mut b = Builder {
            x,
            y,
            w,
            p: *params,
            mtry,
            nodes: Vec::new(),
        };
        b.build(&mut rows, 0, &mut r);
        trees.push(Tree { nodes: b.nodes });
    }
    Ok(ForestModel {
        params: *params,
        n_features: p,
        trees,
    })
}

impl ProbabilisticModel for ForestModel {
    fn n_features(&self) -> usize {
        self.n_features
    }
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        check_cols("random forest", self.n_features, x.ncols())?;
        check_finite("random forest", x)?;
        let k = self.trees.len() as f64;
        Ok(x.outer_iter()
            .map(|row| self.trees.iter().map(|t| t.leaf_value(row)).sum::<f64>() / k)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn single_unbagged_tree_finds_the_hand_split() {
        // x0 separates perfectly at 2.5 (Gini 0); x1 is noise. One tree, all features, no bootstrap.
        let x = array![[1.0, 5.0], [2.0, 1.0], [3.0, 4.0], [4.0, 2.0]];
        let y = [false, false, true, true];
        let p = ForestParams {
            n_trees: 1,
            max_features: 1.0,
            bootstrap: false,
            ..ForestParams::default()
        };
        let m = fit_forest(x.view(), &y, &p, 1).unwrap();
        let root = m.trees[0].nodes[0];
        assert_eq!((root.feature, root.threshold), (0, 2.5));
        assert_eq!(m.trees[0].nodes.len(), 3);
        assert_eq!(m.predict_proba(x.view()).unwrap(), vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn depth_limit_gives_leaf_fractions_and_fit_repeats() {
        let x = array![[0.0], [0.0], [1.0], [1.0], [2.0], [2.0]];
        let y = [false, true, false, true, true, true];
        let p = ForestParams {
            n_trees: 1,
            max_depth: Some(1),
            max_features: 1.0,
            bootstrap: false,
            ..ForestParams::default()
        };
        let a = fit_forest(x.view(), &y, &p, 3).unwrap();
        // Best depth-1 split: {0,0,1,1} | {2,2} → leaf fractions 0.5 and 1.0 (this is the case
        // where linfa-trees' tie-broken labels were random).
        assert_eq!(
            a.predict_proba(x.view()).unwrap(),
            vec![0.5, 0.5, 0.5, 0.5, 1.0, 1.0]
        );
        let q = ForestParams {
            n_trees: 30,
            ..ForestParams::default()
        };
        let b1 = fit_forest(x.view(), &y, &q, 3).unwrap();
        let b2 = fit_forest(x.view(), &y, &q, 3).unwrap();
        assert_eq!(b1, b2);
        let json = serde_json::to_string(&b1).unwrap();
        let back: ForestModel = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.predict_proba(x.view()).unwrap(),
            b1.predict_proba(x.view()).unwrap()
        );
    }
}
