//! Gradient-boosted trees with XGBoost's second-order objective for binary log-loss, exact
//! greedy split finding, written to follow XGBoost's `tree_method = "exact"`
//! (`grow_colmaker,prune`) so that it can be checked against XGBoost to ~1e-6
//! (`learners/tests/golden/xgboost_exact.json`, produced by `learners/tests/golden/make_xgboost_golden.py`).
//!
//! Why not forust-ml (the GBM that builds here): it exposes `gamma`, `min_leaf_weight`,
//! `colsample_bytree` and `subsample`, but it is histogram-based (`nbins` ≤ 65 535 bin edges, no
//! exact greedy enumeration), keeps gradients and parameters in f32 and pulls rayon; none of that
//! is wrong, but it could not be checked against XGBoost's exact method split for split, and
//! the trees here are a few hundred lines.
//!
//! Conventions (XGBoost's, with its parameter names):
//! - margin `F(x) = logit(base_score) + Σ_t f_t(x)`, `p = σ(F)`; `base_score` defaults to the
//!   training mean of y, i.e. the start margin is `logit(ȳ)`;
//! - per row `g = p − y`, `h = max(p(1−p), 1e-16)`;
//! - a node's weight `w = −G/(H+λ)`; a leaf stores `η·w`;
//! - candidate splits between consecutive distinct values of a feature, threshold at the
//!   midpoint, left iff `x < threshold`; a candidate needs `H_L ≥ min_child_weight` and
//!   `H_R ≥ min_child_weight`; XGBoost's `loss_chg = G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)`;
//!   a node splits on the best candidate if `loss_chg > 1e-6` (XGBoost's `kRtEps`) and its depth
//!   is below `max_depth`;
//! - γ (`gamma` = XGBoost's `min_split_loss`) acts by post-pruning, bottom-up: a split whose
//!   children are both leaves is collapsed into a leaf (value `η·w`) if `loss_chg < γ`.
//!   In the XGBoost paper's notation the gain is `½[…] − γ_paper`; XGBoost's `gain`/`loss_chg`
//!   drops the ½, so XGBoost's (and this crate's) `gamma` equals `2·γ_paper`: a split survives
//!   iff `½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ/2 ≥ 0`. (Checked against XGBoost 3.2: on a
//!   one-split example with `loss_chg = 4/3`, γ = 1.0 keeps the split and γ = 1.4 removes it.)
//! - candidate order as XGBoost's dense-data path: features in ascending index, values scanned
//!   from the largest down; a candidate replaces the best only if strictly better, so ties keep
//!   the lower feature index and, within a feature, the larger threshold;
//! - `subsample`: each round uses `max(1, round(subsample·n))` rows drawn without replacement
//!   (XGBoost flips a Bernoulli coin per row: same expected size, not the same draws);
//!   `colsample_bytree`: each tree uses `max(1, round(colsample·p))` features drawn without
//!   replacement (as XGBoost's column sampler). Round t draws from `derive_seed(seed, [FIT, t])`.
//!
//! Arithmetic is f64 except one place where XGBoost's f32 matters for *decisions*: a split's
//! `loss_chg` is rounded to f32 before candidates are compared and before pruning compares it
//! with γ (also rounded to f32), because XGBoost stores it as `bst_float`, and ties created by
//! that rounding pick different splits. XGBoost also keeps per-row gradients, leaf values and
//! predictions in f32; that is where the ~1e-7 differences in the golden comparison come from.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, check_cols, check_finite, check_xy, param};
use crate::plan::ProbabilisticModel;
use crate::rng::{self, derive_seed, tag};

/// XGBoost's `kRtEps`: a split must reduce the loss by more than this.
const RT_EPS: f64 = 1e-6;
const LEAF: u32 = u32::MAX;

/// Boosting hyper-parameters (XGBoost names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GbmParams {
    /// Number of boosting rounds (trees).
    pub n_rounds: u32,
    /// Learning rate η in (0, 1].
    pub eta: f64,
    /// Maximum depth ≥ 1 (root = depth 0).
    pub max_depth: u32,
    /// Minimum hessian sum in each child.
    pub min_child_weight: f64,
    /// Row fraction per round, in (0, 1].
    pub subsample: f64,
    /// Feature fraction per tree, in (0, 1].
    pub colsample_bytree: f64,
    /// L2 penalty λ ≥ 0 on leaf weights.
    pub lambda: f64,
    /// XGBoost's γ (`min_split_loss`) ≥ 0; see the module doc for the factor ½.
    pub gamma: f64,
    /// Start probability; `None` = training mean of y (margin `logit(ȳ)`).
    #[serde(default)]
    pub base_score: Option<f64>,
}

impl Default for GbmParams {
    /// XGBoost's defaults (except `n_rounds`, which XGBoost leaves to the caller).
    fn default() -> Self {
        Self {
            n_rounds: 100,
            eta: 0.3,
            max_depth: 6,
            min_child_weight: 1.0,
            subsample: 1.0,
            colsample_bytree: 1.0,
            lambda: 1.0,
            gamma: 0.0,
            base_score: None,
        }
    }
}

/// One node of a flat regression tree; a leaf has `feature == u32::MAX` and stores `η·w`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GNode {
    pub feature: u32,
    pub threshold: f64,
    pub left: u32,
    pub right: u32,
    /// Leaf: η·w. Internal: η·w of the node (what it would predict if pruned).
    pub value: f64,
    /// XGBoost's `loss_chg` of the split (0 for leaves).
    pub loss_chg: f64,
    /// Hessian sum H of the node's rows (XGBoost's `cover`).
    pub cover: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegTree {
    pub nodes: Vec<GNode>,
}

impl RegTree {
    pub fn predict_row(&self, row: ndarray::ArrayView1<f64>) -> f64 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            i = if row[n.feature as usize] < n.threshold {
                n.left
            } else {
                n.right
            } as usize;
        }
    }
    pub fn n_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.feature == LEAF).count()
    }
}

/// A fitted booster. Serialisable so it can be relayed to other sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmModel {
    pub params: GbmParams,
    pub n_features: usize,
    pub base_margin: f64,
    pub trees: Vec<RegTree>,
}

struct Grower<'x, 'a> {
    x: ArrayView2<'x, f64>,
    g: &'a [f64],
    h: &'a [f64],
    feats: &'a [usize],
    p: &'a GbmParams,
    nodes: Vec<GNode>,
}

fn node_gain(g: f64, h: f64, lambda: f64) -> f64 {
    g * g / (h + lambda)
}

impl Grower<'_, '_> {
    fn grow(&mut self, rows: &mut [usize], depth: u32) -> u32 {
        let (gs, hs) = rows
            .iter()
            .fold((0.0, 0.0), |(a, b), &i| (a + self.g[i], b + self.h[i]));
        let lambda = self.p.lambda;
        let me = self.nodes.len() as u32;
        self.nodes.push(GNode {
            feature: LEAF,
            threshold: 0.0,
            left: LEAF,
            right: LEAF,
            value: self.p.eta * (-gs / (hs + lambda)),
            loss_chg: 0.0,
            cover: hs,
        });
        if depth >= self.p.max_depth {
            return me;
        }
        let root_gain = node_gain(gs, hs, lambda);
        let mcw = self.p.min_child_weight;
        let mut best: Option<(f64, usize, f64)> = None;
        for &f in self.feats {
            // Descending by value: XGBoost's backward enumeration over a dense column.
            rows.sort_by(|&a, &b| self.x[[b, f]].total_cmp(&self.x[[a, f]]));
            let (mut eg, mut eh) = (0.0, 0.0);
            let mut last = f64::NAN;
            for (k, &i) in rows.iter().enumerate() {
                let v = self.x[[i, f]];
                if k > 0 && v != last && eh >= mcw {
                    let (cg, ch) = (gs - eg, hs - eh);
                    if ch >= mcw {
                        // XGBoost stores loss_chg as f32 (`bst_float`): rounding here makes
                        // near-equal candidates tie exactly as they do in XGBoost, and ties keep
                        // the earlier candidate (in round 1 all rows of a class share one
                        // gradient, so different features often isolate the same rows).
                        let loss_chg = ((node_gain(cg, ch, lambda) + node_gain(eg, eh, lambda)
                            - root_gain) as f32) as f64;
                        if best.is_none_or(|(b, _, _)| loss_chg > b) {
                            best = Some((loss_chg, f, (v + last) * 0.5));
                        }
                    }
                }
                eg += self.g[i];
                eh += self.h[i];
                last = v;
            }
        }
        let Some((loss_chg, f, thr)) = best else {
            return me;
        };
        if loss_chg <= RT_EPS {
            return me;
        }
        let mut left: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.x[[i, f]] < thr)
            .collect();
        let mut right: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| self.x[[i, f]] >= thr)
            .collect();
        let l = self.grow(&mut left, depth + 1);
        let r = self.grow(&mut right, depth + 1);
        let n = &mut self.nodes[me as usize];
        n.feature = f as u32;
        n.threshold = thr;
        n.left = l;
        n.right = r;
        n.loss_chg = loss_chg;
        me
    }

    /// XGBoost's pruner: bottom-up, collapse splits with both children leaves and loss_chg < γ.
    fn prune(&mut self, i: u32) -> bool {
        let n = self.nodes[i as usize];
        if n.feature == LEAF {
            return true;
        }
        let l = self.prune(n.left);
        let r = self.prune(n.right);
        // XGBoost compares its f32 loss_chg with its f32 `min_split_loss`.
        if l && r && n.loss_chg < f64::from(self.p.gamma as f32) {
            let m = &mut self.nodes[i as usize];
            m.feature = LEAF;
            m.left = LEAF;
            m.right = LEAF;
            m.loss_chg = 0.0;
            return true;
        }
        false
    }

    /// Drops nodes that pruning disconnected and renumbers (root stays 0).
    fn compact(&self) -> RegTree {
        let mut out = Vec::new();
        let mut stack = vec![(0u32, None::<(usize, bool)>)];
        while let Some((i, parent)) = stack.pop() {
            let n = self.nodes[i as usize];
            let idx = out.len();
            out.push(n);
            if let Some((p, is_left)) = parent {
                let pn: &mut GNode = &mut out[p];
                if is_left {
                    pn.left = idx as u32
                } else {
                    pn.right = idx as u32
                }
            }
            if n.feature != LEAF {
                stack.push((n.right, Some((idx, false))));
                stack.push((n.left, Some((idx, true))));
            }
        }
        RegTree { nodes: out }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn validate(p: &GbmParams) -> Result<()> {
    let unit = |v: f64| v > 0.0 && v <= 1.0;
    if p.n_rounds == 0 {
        return Err(param("gbm.n_rounds", p.n_rounds, "must be at least 1"));
    }
    if !unit(p.eta) {
        return Err(param("gbm.eta", p.eta, "must lie in (0, 1]"));
    }
    if p.max_depth == 0 {
        return Err(param("gbm.max_depth", p.max_depth, "must be at least 1"));
    }
    if !(p.min_child_weight >= 0.0 && p.min_child_weight.is_finite()) {
        return Err(param(
            "gbm.min_child_weight",
            p.min_child_weight,
            "must be ≥ 0",
        ));
    }
    if !unit(p.subsample) {
        return Err(param("gbm.subsample", p.subsample, "must lie in (0, 1]"));
    }
    if !unit(p.colsample_bytree) {
        return Err(param(
            "gbm.colsample_bytree",
            p.colsample_bytree,
            "must lie in (0, 1]",
        ));
    }
    if !(p.lambda >= 0.0 && p.lambda.is_finite()) {
        return Err(param("gbm.lambda", p.lambda, "must be ≥ 0"));
    }
    if !(p.gamma >= 0.0 && p.gamma.is_finite()) {
        return Err(param("gbm.gamma", p.gamma, "must be ≥ 0"));
    }
    if let Some(b) = p.base_score
        && !(b > 0.0 && b < 1.0)
    {
        return Err(param("gbm.base_score", b, "must lie in (0, 1)"));
    }
    Ok(())
}

/// Fits the booster (see the module doc).
pub fn fit_gbm(x: ArrayView2<f64>, y: &[bool], params: &GbmParams, seed: u64) -> Result<GbmModel> {
    check_xy("gradient boosting", x, y.len())?;
    validate(params)?;
    let n = y.len();
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == n {
        return Err(LearnerError::NeedBothClasses {
            what: "gradient boosting",
            positives,
            negatives: n - positives,
        });
    }
    let base = params.base_score.unwrap_or(positives as f64 / n as f64);
    let base_margin = (base / (1.0 - base)).ln();
    let p_feat = x.ncols();
    let mut margin = vec![base_margin; n];
    let mut trees = Vec::with_capacity(params.n_rounds as usize);
    let (mut g, mut h) = (vec![0.0; n], vec![0.0; n]);
    for t in 0..params.n_rounds {
        for i in 0..n {
            let p = sigmoid(margin[i]);
            g[i] = p - if y[i] { 1.0 } else { 0.0 };
            h[i] = (p * (1.0 - p)).max(1e-16);
        }
        let mut r = rng::stream(derive_seed(seed, &[tag::FIT, u64::from(t)]));
        let mut feats: Vec<usize> = if params.colsample_bytree < 1.0 {
            let m = ((params.colsample_bytree * p_feat as f64).round() as usize).max(1);
            rng::sample_without_replacement(&mut r, p_feat, m)
        } else {
            (0..p_feat).collect()
        };
        feats.sort_unstable();
        let mut rows: Vec<usize> = if params.subsample < 1.0 {
            let m = ((params.subsample * n as f64).round() as usize).max(1);
            rng::sample_without_replacement(&mut r, n, m)
        } else {
            (0..n).collect()
        };
        let mut grower = Grower {
            x,
            g: &g,
            h: &h,
            feats: &feats,
            p: params,
            nodes: Vec::new(),
        };
        grower.grow(&mut rows, 0);
        grower.prune(0);
        let tree = grower.compact();
        for (i, m) in margin.iter_mut().enumerate() {
            *m += tree.predict_row(x.row(i));
        }
        trees.push(tree);
    }
    Ok(GbmModel {
        params: *params,
        n_features: p_feat,
        base_margin,
        trees,
    })
}

impl GbmModel {
    /// Margins (log-odds) F(x).
    pub fn predict_margin(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        check_cols("gradient boosting", self.n_features, x.ncols())?;
        check_finite("gradient boosting", x)?;
        Ok(x.outer_iter()
            .map(|row| {
                self.trees
                    .iter()
                    .fold(self.base_margin, |m, t| m + t.predict_row(row))
            })
            .collect())
    }
}

impl ProbabilisticModel for GbmModel {
    fn n_features(&self) -> usize {
        self.n_features
    }
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        Ok(self.predict_margin(x)?.into_iter().map(sigmoid).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Hand computation: x = 1..4, y = 0,0,1,1, base_score 0.5 (margin 0, p = ½), so
    /// g = (½, ½, −½, −½), h = ¼ each, λ = 1. Root G = 0, H = 1. Best split x < 2.5:
    /// G_L = 1, H_L = ½, G_R = −1, H_R = ½ → loss_chg = 1/1.5 + 1/1.5 − 0 = 4/3
    /// (paper gain ½·4/3 − γ_paper); leaves −G/(H+λ)·η = ∓(1/1.5)·η. The other candidates
    /// (x < 1.5: G_L = ½, H_L = ¼ → 0.25/1.25 + 0.25/1.75 = 0.342857…) are worse.
    #[test]
    fn one_split_matches_hand_computation() {
        let x = array![[1.0], [2.0], [3.0], [4.0]];
        let y = [false, false, true, true];
        let base = GbmParams {
            n_rounds: 1,
            eta: 0.5,
            max_depth: 1,
            min_child_weight: 0.0,
            base_score: Some(0.5),
            ..GbmParams::default()
        };
        let m = fit_gbm(x.view(), &y, &base, 0).unwrap();
        let t = &m.trees[0];
        assert_eq!(t.nodes.len(), 3);
        assert_eq!((t.nodes[0].feature, t.nodes[0].threshold), (0, 2.5));
        // loss_chg is kept in f32, as XGBoost's `gain=1.33333337` in its dump.
        assert_eq!(t.nodes[0].loss_chg, f64::from((4.0f64 / 3.0) as f32));
        assert!((t.nodes[1].value - (-0.5 / 1.5)).abs() < 1e-15);
        assert!((t.nodes[2].value - (0.5 / 1.5)).abs() < 1e-15);
        assert_eq!(m.base_margin, 0.0);
        // γ below 4/3 keeps the split, above removes it (XGBoost 3.2 does the same).
        let keep = fit_gbm(x.view(), &y, &GbmParams { gamma: 1.0, ..base }, 0).unwrap();
        assert_eq!(keep.trees[0].n_leaves(), 2);
        let cut = fit_gbm(x.view(), &y, &GbmParams { gamma: 1.4, ..base }, 0).unwrap();
        assert_eq!(cut.trees[0].n_leaves(), 1);
        assert_eq!(cut.trees[0].nodes[0].value, 0.0);
        // min_child_weight 0.6 > ½ forbids every split of this node.
        let mcw = fit_gbm(
            x.view(),
            &y,
            &GbmParams {
                min_child_weight: 0.6,
                ..base
            },
            0,
        )
        .unwrap();
        assert_eq!(mcw.trees[0].n_leaves(), 1);
        // Default base score: logit(mean y) = logit(½) = 0.
        let d = fit_gbm(
            x.view(),
            &y,
            &GbmParams {
                base_score: None,
                ..base
            },
            0,
        )
        .unwrap();
        assert_eq!(d.base_margin, 0.0);
    }

    #[test]
    fn pruning_is_bottom_up() {
        // Depth 2; γ large enough to remove everything: the whole tree collapses to the root.
        let x = array![[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]];
        let y = [false, true, false, true, true, true];
        let p = GbmParams {
            n_rounds: 1,
            max_depth: 2,
            min_child_weight: 0.0,
            gamma: 100.0,
            ..GbmParams::default()
        };
        let m = fit_gbm(x.view(), &y, &p, 0).unwrap();
        assert_eq!(m.trees[0].nodes.len(), 1);
        let json = serde_json::to_string(&m).unwrap();
        let back: GbmModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
