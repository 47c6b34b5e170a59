//! Grey level co-occurrence matrix (GLCM, IBSI family LFYI) and its 25 features.
//!
//! The GLCM of direction `m` counts grey level pairs `(i, j)` of neighbouring voxels at `k` and
//! `k + m`, both in the intensity mask, and is made symmetric (`M_m = M_{m+} + M_{m+}^T`); Chebyshev
//! distance 1. `p_ij = M_ij / Σ M`, `p_i. = Σ_j p_ij` (= `p_.j` by symmetry),
//! `p_{i−j}(k) = Σ_{|i−j|=k} p_ij`, `p_{i+j}(k) = Σ_{i+j=k} p_ij`, and `N_g` is the number of grey
//! levels of the discretisation. Grey levels `i, j` are the discretised values (1-based).
//!
//! Undefined cases give NaN: correlation when the marginal variance is 0 (a single grey level),
//! information correlation 1 when the marginal entropy is 0. Entropies use `log2`.

use super::{DirectionalMatrix, FamilyValues, Spatial, TextureGrid, aggregate_directional};

/// Base tags of the GLCM features, in the order of [`Glcm::features`].
pub const FEATURES: [&str; 25] = [
    "cm_joint_max",         // GYBY: max p_ij
    "cm_joint_avg",         // 60VM: μ = Σ i p_ij
    "cm_joint_var",         // UR99: Σ (i − μ)² p_ij
    "cm_joint_entr",        // TU9B: −Σ p_ij log2 p_ij
    "cm_diff_avg",          // TF7R: μ_d = Σ k p_{i−j}(k)
    "cm_diff_var",          // D3YU: Σ (k − μ_d)² p_{i−j}(k)
    "cm_diff_entr",         // NTRS: −Σ p_{i−j} log2 p_{i−j}
    "cm_sum_avg",           // ZGXS: μ_s = Σ k p_{i+j}(k)
    "cm_sum_var",           // OEEB: Σ (k − μ_s)² p_{i+j}(k)
    "cm_sum_entr",          // P6QZ: −Σ p_{i+j} log2 p_{i+j}
    "cm_energy",            // 8ZQL: Σ p_ij² (angular second moment)
    "cm_contrast",          // ACUI: Σ (i − j)² p_ij
    "cm_dissimilarity",     // 8S9J: Σ |i − j| p_ij
    "cm_inv_diff",          // IB1Z: Σ p_ij / (1 + |i − j|)
    "cm_inv_diff_norm",     // NDRX: Σ p_ij / (1 + |i − j| / N_g)
    "cm_inv_diff_mom",      // WF0Z: Σ p_ij / (1 + (i − j)²)
    "cm_inv_diff_mom_norm", // 1QCO: Σ p_ij / (1 + (i − j)² / N_g²)
    "cm_inv_var",           // E8JP: Σ_{i≠j} p_ij / (i − j)²
    "cm_corr",              // NI2N: Σ (i − μ_i.)(j − μ_.j) p_ij / (σ_i. σ_.j)
    "cm_auto_corr",         // QWB0: Σ i j p_ij
    "cm_clust_tend",        // DG8W: Σ (i + j − μ_i. − μ_.j)² p_ij
    "cm_clust_shade",       // 7NFM: Σ (i + j − μ_i. − μ_.j)³ p_ij
    "cm_clust_prom",        // AE86: Σ (i + j − μ_i. − μ_.j)⁴ p_ij
    "cm_info_corr1",        // R8DG: (HXY − HXY1) / HX
    "cm_info_corr2",        // JN9H: sqrt(1 − exp(−2 (HXY2 − HXY)))
];

/// A symmetric co-occurrence count matrix over the grey levels present in the grid.
#[derive(Debug, Clone)]
pub struct Glcm {
    n: usize,
    counts: Vec<f64>,
    /// Cells that became non-zero (row-major index), so clearing and features are O(non-zero).
    touched: Vec<u32>,
}

impl Glcm {
    fn new(n: usize) -> Self {
        Self {
            n,
            counts: vec![0.0; n * n],
            touched: Vec::new(),
        }
    }

    #[inline]
    fn add(&mut self, k: usize, c: f64) {
        if self.counts[k] == 0.0 {
            self.touched.push(k as u32);
        }
        self.counts[k] += c;
    }

    /// Count the unordered pair of compact level indices `a`, `b` in both orders.
    #[inline]
    fn add_pair(&mut self, a: usize, b: usize) {
        self.add(a * self.n + b, 1.0);
        self.add(b * self.n + a, 1.0);
    }

    /// The 25 feature values (see [`FEATURES`]); all NaN for an empty matrix.
    pub fn features(&self, values: &[f64], n_g: f64) -> Vec<f64> {
        let total: f64 = self.touched.iter().map(|&k| self.counts[k as usize]).sum();
        if total == 0.0 {
            return vec![f64::NAN; FEATURES.len()];
        }
        let n = self.n;
        let vmin = values[0];
        let span = (values[n - 1] - vmin) as usize;
        let mut marg = vec![0.0; n];
        let mut pdiff = vec![0.0; span + 1];
        let mut psum = vec![0.0; 2 * span + 1];
        let (mut joint_max, mut joint_entr, mut energy) = (0.0f64, 0.0, 0.0);
        let (mut contrast, mut dissim, mut inv_diff, mut inv_diff_norm) = (0.0, 0.0, 0.0, 0.0);
        let (mut inv_diff_mom, mut inv_diff_mom_norm, mut inv_var, mut auto_corr) =
            (0.0, 0.0, 0.0, 0.0);
        for &k in &self.touched {
            let k = k as usize;
            let p = self.counts[k] / total;
            let (a, b) = (k / n, k % n);
            let (i, j) = (values[a], values[b]);
            let d = (i - j).abs();
            marg[a] += p;
            pdiff[d as usize] += p;
            psum[(i + j - 2.0 * vmin) as usize] += p;
            joint_max = joint_max.max(p);
            joint_entr -= p * p.log2();
            energy += p * p;
            contrast += d * d * p;
            dissim += d * p;
            inv_diff += p / (1.0 + d);
            inv_diff_norm += p / (1.0 + d / n_g);
            inv_diff_mom += p / (1.0 + d * d);
            inv_diff_mom_norm += p / (1.0 + d * d / (n_g * n_g));
            if d > 0.0 {
                inv_var += p / (d * d);
            }
            auto_corr += i * j * p;
        }
        let mu: f64 = marg.iter().zip(values).map(|(&p, &i)| p * i).sum();
        let var: f64 = marg
            .iter()
            .zip(values)
            .map(|(&p, &i)| p * (i - mu) * (i - mu))
            .sum();
        let hx: f64 = -marg
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * p.log2())
            .sum::<f64>();
        let (mut cov, mut tend, mut shade, mut prom, mut hxy1) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &k in &self.touched {
            let k = k as usize;
            let p = self.counts[k] / total;
            let (a, b) = (k / n, k % n);
            let (i, j) = (values[a], values[b]);
            cov += (i - mu) * (j - mu) * p;
            let s = i + j - 2.0 * mu;
            let s2 = s * s;
            tend += s2 * p;
            shade += s2 * s * p;
            prom += s2 * s2 * p;
            hxy1 -= p * (marg[a] * marg[b]).log2();
        }
        let (diff_avg, diff_var, diff_entr) = moments(&pdiff, 0.0);
        let (sum_avg, sum_var, sum_entr) = moments(&psum, 2.0 * vmin);
        // HXY2 = −Σ_i Σ_j p_i. p_.j log2(p_i. p_.j) = 2 HX because the marginals sum to 1.
        let hxy2 = 2.0 * hx;
        let corr = if var > 0.0 { cov / var } else { f64::NAN };
        let info1 = if hx > 0.0 {
            (joint_entr - hxy1) / hx
        } else {
            f64::NAN
        };
        let info2 = (1.0 - (-2.0 * (hxy2 - joint_entr)).exp()).max(0.0).sqrt();
        vec![
            joint_max,
            mu,
            var,
            joint_entr,
            diff_avg,
            diff_var,
            diff_entr,
            sum_avg,
            sum_var,
            sum_entr,
            energy,
            contrast,
            dissim,
            inv_diff,
            inv_diff_norm,
            inv_diff_mom,
            inv_diff_mom_norm,
            inv_var,
            corr,
            auto_corr,
            tend,
            shade,
            prom,
            info1,
            info2,
        ]
    }
}

/// Mean, variance and entropy of a distribution over `k = first, first + 1, …`.
fn moments(p: &[f64], first: f64) -> (f64, f64, f64) {
    let mean: f64 = p
        .iter()
        .enumerate()
        .map(|(k, &p)| (first + k as f64) * p)
        .sum();
    let var: f64 = p
        .iter()
        .enumerate()
        .map(|(k, &p)| (first + k as f64 - mean).powi(2) * p)
        .sum();
    let entr: f64 = -p
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * p.log2())
        .sum::<f64>();
    (mean, var, entr)
}

impl DirectionalMatrix for Glcm {
    fn empty(grid: &TextureGrid) -> Self {
        Glcm::new(grid.n_present())
    }

    fn clear(&mut self) {
        for &k in &self.touched {
            self.counts[k as usize] = 0.0;
        }
        self.touched.clear();
    }

    fn fill(&mut self, grid: &TextureGrid, voxels: &[u32], off: isize) {
        let level = &grid.level;
        for &v in voxels {
            let a = level[v as usize];
            let b = level[(v as isize + off) as usize];
            if b != 0 {
                self.add_pair(a as usize - 1, b as usize - 1);
            }
        }
    }

    fn merge(&mut self, other: &Self) {
        for &k in &other.touched {
            self.add(k as usize, other.counts[k as usize]);
        }
    }

    fn features(&self, grid: &TextureGrid) -> Vec<f64> {
        Glcm::features(self, &grid.values, grid.n_levels as f64)
    }
}

/// GLCM features for every requested aggregation method (`_2D_avg`, `_2D_comb`, `_2_5D_avg`,
/// `_2_5D_comb`, `_3D_avg`, `_3D_comb`).
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    aggregate_directional::<Glcm>(grid, spatial, FEATURES.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D GLCM example (grey levels 1..4, direction (1,0) = along x).
    #[test]
    fn ibsi_manual_example_matrix() {
        let img = [[1, 2, 2, 3], [1, 2, 3, 3], [4, 2, 4, 1], [4, 1, 2, 3]];
        let l = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| img[y][x] as u32);
        let g = test_util::grid(&l);
        let mut m = Glcm::empty(&g);
        m.fill(&g, &g.voxels, g.offset([0, 0, 1]));
        // Expected symmetric matrix from the manual: rows i = 1..4.
        let expected = [
            [0.0, 3.0, 0.0, 2.0],
            [3.0, 2.0, 3.0, 2.0],
            [0.0, 3.0, 2.0, 0.0],
            [2.0, 2.0, 0.0, 0.0],
        ];
        for (i, row) in expected.iter().enumerate() {
            for (j, &e) in row.iter().enumerate() {
                assert_eq!(m.counts[i * 4 + j], e, "cell ({}, {})", i + 1, j + 1);
            }
        }
        let f = m.features(&g.values, 4.0);
        // p = M / 24: joint maximum = 3/24, contrast = Σ (i−j)² p.
        assert!((f[0] - 3.0 / 24.0).abs() < 1e-12);
        let contrast = (2.0 * 3.0 + 2.0 * 9.0 * 2.0 + 2.0 * 3.0 + 2.0 * 4.0 * 2.0) / 24.0;
        assert!((f[11] - contrast).abs() < 1e-12, "{} vs {contrast}", f[11]);
    }

    /// 2×2×2 block, grey levels by [z][y][x], 0 = outside the ROI (voxel [1,1,0]).
    fn block_2x2x2() -> Array3<u32> {
        let l = [[[1, 2], [2, 1]], [[1, 1], [0, 2]]];
        Array3::from_shape_fn((2, 2, 2), |(z, y, x)| l[z][y][x])
    }

    /// Hand-computed 3D matrices of the 2×2×2 block (7 ROI voxels: level 1 at A[0,0,0], D[0,1,1],
    /// E[1,0,0], F[1,0,1]; level 2 at B[0,0,1], C[0,1,0], H[1,1,1]).
    #[test]
    fn three_d_matrices_of_a_tiny_block() {
        let g = test_util::grid(&block_2x2x2());
        let cells = |m: &Glcm| -> Vec<f64> { m.counts.clone() };
        // Along z: pairs {A,E} = (1,1), {B,F} = (2,1), {D,H} = (1,2); C's partner is outside.
        let mut m = Glcm::empty(&g);
        m.fill(&g, &g.voxels, g.offset([1, 0, 0]));
        assert_eq!(cells(&m), vec![2.0, 2.0, 2.0, 0.0]);
        // Along the body diagonal (1,1,1): only {A,H} = (1,2).
        let mut m = Glcm::empty(&g);
        m.fill(&g, &g.voxels, g.offset([1, 1, 1]));
        assert_eq!(cells(&m), vec![0.0, 1.0, 1.0, 0.0]);
        // All 13 directions merged: every ROI pair of a 2×2×2 block is a 26-neighbour pair, so
        // M = 2 × pair counts: 1–1: C(4,2) = 6, 2–2: C(3,2) = 3, 1–2: 4·3 = 12 → [[12, 12], [12, 6]].
        let mut merged = Glcm::empty(&g);
        for o in g.neighbours(true).into_iter().filter(|&o| o > 0) {
            merged.fill(&g, &g.voxels, o);
        }
        assert_eq!(cells(&merged), vec![12.0, 12.0, 12.0, 6.0]);
        let comb = compute(&g, Spatial::THREE_D)
            .into_iter()
            .find(|f| f.aggregation == crate::registry::Aggregation::Merged3D)
            .unwrap();
        assert!(
            (comb.values[0] - 12.0 / 42.0).abs() < 1e-15,
            "joint maximum"
        );
    }
}
