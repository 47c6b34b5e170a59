//! Neighbourhood grey tone difference matrix (NGTDM, IBSI family IPET; LIFEx "NGLDM") and its 5
//! features.
//!
//! For each intensity-mask voxel `k` with grey level `i`, `X̄_k` is the mean grey level of its
//! neighbours (Chebyshev distance 1: 26 in 3D, 8 in-plane in 2D) that are in the mask, `W_k` their
//! number. Voxels with `W_k = 0` are left out (IBSI's deviation from Amadasun & King: neighbourhoods
//! need not be complete). `s_i = Σ_k |i − X̄_k|`, `n_i` = number of such voxels, `N_vc = Σ n_i`,
//! `p_i = n_i / N_vc`, `N_gp` = number of grey levels with `p_i > 0`. Merging sums `s_i` and `n_i`.
//! Double sums below run over grey levels with `p > 0`.

use super::{FamilyValues, SliceMatrix, Spatial, TextureGrid, aggregate_slices};

/// Base tags of the NGTDM features, in output order.
pub const FEATURES: [&str; 5] = [
    "ngt_coarseness", // QCDE: 1 / Σ p_i s_i (10^6 if the sum is 0)
    "ngt_contrast", // 65HE: [Σ Σ p_i p_j (i−j)² / (N_gp (N_gp − 1))] · Σ s_i / N_vc (0 if N_gp = 1)
    "ngt_busyness", // NQ30: Σ p_i s_i / Σ Σ |i p_i − j p_j| (0 if N_gp = 1)
    "ngt_complexity", // HDEZ: Σ Σ |i − j| (p_i s_i + p_j s_j) / (p_i + p_j) / N_vc
    "ngt_strength", // 1X9X: Σ Σ (p_i + p_j)(i − j)² / Σ s_i (0 if Σ s_i = 0)
];

/// Coarseness when `Σ p_i s_i = 0` (IBSI's explicit cap).
pub const COARSENESS_MAX: f64 = 1e6;

/// `s_i` and `n_i` per grey level present in the grid.
#[derive(Debug, Clone)]
pub struct Ngtdm {
    s: Vec<f64>,
    n: Vec<f64>,
}

impl Ngtdm {
    fn fill(&mut self, grid: &TextureGrid, voxels: &[u32], neigh: &[isize]) {
        let (level, values) = (&grid.level, &grid.values);
        for &v in voxels {
            let a = level[v as usize] as usize - 1;
            let (mut sum, mut w) = (0.0, 0u32);
            for &o in neigh {
                let b = level[(v as isize + o) as usize];
                if b != 0 {
                    sum += values[b as usize - 1];
                    w += 1;
                }
            }
            if w > 0 {
                self.s[a] += (values[a] - sum / w as f64).abs();
                self.n[a] += 1.0;
            }
        }
    }

    /// The 5 features; NaN for an empty matrix.
    pub fn features(&self, values: &[f64]) -> Vec<f64> {
        let n_vc: f64 = self.n.iter().sum();
        if n_vc == 0.0 {
            return vec![f64::NAN; FEATURES.len()];
        }
        // (grey level, p_i, s_i) of the levels with p_i > 0.
        let lv: Vec<(f64, f64, f64)> = (0..self.n.len())
            .filter(|&k| self.n[k] > 0.0)
            .map(|k| (values[k], self.n[k] / n_vc, self.s[k]))
            .collect();
        let ngp = lv.len() as f64;
        let sum_ps: f64 = lv.iter().map(|&(_, p, s)| p * s).sum();
        let sum_s: f64 = lv.iter().map(|&(_, _, s)| s).sum();
        let (mut dyn_range, mut busy_den, mut complexity, mut strength) = (0.0, 0.0, 0.0, 0.0);
        for &(i, pi, si) in &lv {
            for &(j, pj, sj) in &lv {
                let d = i - j;
                dyn_range += pi * pj * d * d;
                busy_den += (i * pi - j * pj).abs();
                complexity += d.abs() * (pi * si + pj * sj) / (pi + pj);
                strength += (pi + pj) * d * d;
            }
        }
        let coarseness = if sum_ps == 0.0 {
            COARSENESS_MAX
        } else {
            1.0 / sum_ps
        };
        let (contrast, busyness) = if ngp > 1.0 {
            (
                dyn_range / (ngp * (ngp - 1.0)) * sum_s / n_vc,
                sum_ps / busy_den,
            )
        } else {
            (0.0, 0.0)
        };
        let strength = if sum_s == 0.0 { 0.0 } else { strength / sum_s };
        vec![coarseness, contrast, busyness, complexity / n_vc, strength]
    }
}

impl SliceMatrix for Ngtdm {
    fn empty(grid: &TextureGrid) -> Self {
        Ngtdm {
            s: vec![0.0; grid.n_present()],
            n: vec![0.0; grid.n_present()],
        }
    }

    fn clear(&mut self) {
        self.s.iter_mut().for_each(|x| *x = 0.0);
        self.n.iter_mut().for_each(|x| *x = 0.0);
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.s.iter_mut().zip(&other.s) {
            *a += b;
        }
        for (a, b) in self.n.iter_mut().zip(&other.n) {
            *a += b;
        }
    }

    fn features(&self, grid: &TextureGrid) -> Vec<f64> {
        Ngtdm::features(self, &grid.values)
    }
}

/// NGTDM features for every requested aggregation method (`_2D`, `_2_5D`, `_3D`).
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    let (n2, n3) = (grid.neighbours(false), grid.neighbours(true));
    aggregate_slices::<Ngtdm>(grid, spatial, FEATURES.len(), |m, voxels, three_d| {
        m.fill(grid, voxels, if three_d { &n3 } else { &n2 });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D NGTDM example: only the four centre pixels are evaluated there (complete
    /// neighbourhoods), giving s = (0, 1, 0.625, 1.875) for levels 1..4.
    #[test]
    fn ibsi_manual_example_centre_pixels() {
        let img = [[1, 2, 2, 3], [1, 2, 3, 3], [4, 2, 4, 1], [4, 1, 2, 3]];
        let l = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| img[y][x] as u32);
        let g = test_util::grid(&l);
        let centre: Vec<u32> = g
            .voxels
            .iter()
            .copied()
            .enumerate()
            .filter(|&(k, _)| matches!((k / 4, k % 4), (1 | 2, 1 | 2)))
            .map(|(_, v)| v)
            .collect();
        let mut m = Ngtdm::empty(&g);
        m.fill(&g, &centre, &g.neighbours(false));
        let expected_s = [0.0, 1.0, 0.625, 1.875];
        for (k, &e) in expected_s.iter().enumerate() {
            assert!(
                (m.s[k] - e).abs() < 1e-12,
                "s_{} = {} != {e}",
                k + 1,
                m.s[k]
            );
        }
        assert_eq!(m.n, vec![0.0, 2.0, 1.0, 1.0]);
    }

    /// 3D NGTDM of a 3×3×3 cube of level 1 with a level-2 centre (26-neighbourhoods restricted to
    /// the ROI): centre s = |2 − 1| = 1; a corner averages 7 neighbours (one is the centre):
    /// |1 − 8/7| = 1/7, an edge 11 → 1/11, a face centre 17 → 1/17; 8 corners, 12 edges, 6 faces.
    #[test]
    fn three_d_cube_by_hand() {
        let l = Array3::from_shape_fn(
            (3, 3, 3),
            |(z, y, x)| if (z, y, x) == (1, 1, 1) { 2 } else { 1 },
        );
        let g = test_util::grid(&l);
        let mut m = Ngtdm::empty(&g);
        m.fill(&g, &g.voxels, &g.neighbours(true));
        assert_eq!(m.n, vec![26.0, 1.0]);
        let s1 = 8.0 / 7.0 + 12.0 / 11.0 + 6.0 / 17.0;
        assert!((m.s[0] - s1).abs() < 1e-12, "{} vs {s1}", m.s[0]);
        assert!((m.s[1] - 1.0).abs() < 1e-12);
    }
}
