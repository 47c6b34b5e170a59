//! Neighbouring grey level dependence matrix (NGLDM, IBSI family REK0) and its 17 features.
//!
//! For each intensity-mask voxel `k` with grey level `i`, the dependence count is
//! `j_k = 1 + #{neighbours m in the mask with |X(k) − X(m)| ≤ α}` over the Chebyshev-distance-1
//! neighbourhood (26 in 3D, 8 in-plane in 2D), with coarseness `α = 0` (same grey level). `s_ij`
//! counts voxels with grey level `i` and dependence `j`; every voxel contributes, so `N_s = N_v`.
//! Merging sums `s_ij` and `N_v`. Feature formulas: see [`super::zone`] (`j` = dependence count).
//! This is *not* LIFEx's "NGLDM" (which is IBSI's NGTDM, see [`super::ngtdm`]).

use super::zone::zone_features;
use super::{FamilyValues, SliceMatrix, SparseCounts, Spatial, TextureGrid, aggregate_slices};

/// Base tags of the NGLDM features, in output order.
pub const FEATURES: [&str; 17] = [
    "ngl_lde",       // SODN low dependence emphasis
    "ngl_hde",       // IMOQ high dependence emphasis
    "ngl_lgce",      // TL9H low grey level count emphasis
    "ngl_hgce",      // OAE7 high grey level count emphasis
    "ngl_ldlge",     // EQ3F low dependence low grey level emphasis
    "ngl_ldhge",     // JA6D low dependence high grey level emphasis
    "ngl_hdlge",     // NBZI high dependence low grey level emphasis
    "ngl_hdhge",     // 9QMG high dependence high grey level emphasis
    "ngl_glnu",      // FP8K grey level non-uniformity
    "ngl_glnu_norm", // 5SPA normalised grey level non-uniformity
    "ngl_dcnu",      // Z87G dependence count non-uniformity
    "ngl_dcnu_norm", // OKJI normalised dependence count non-uniformity
    "ngl_dc_perc",   // 6XV8 dependence count percentage (N_s / N_v, 1 by construction)
    "ngl_gl_var",    // 1PFV grey level variance
    "ngl_dc_var",    // DNX2 dependence count variance
    "ngl_dc_entr",   // FCBV dependence count entropy
    "ngl_dc_energy", // CAS9 dependence count energy Σ p_ij²
];

/// Dependence counts by (level index, dependence j = 1..=27) with the voxel count.
#[derive(Debug, Clone)]
pub struct Ngldm {
    counts: SparseCounts,
    n_v: f64,
}

impl Ngldm {
    fn fill(&mut self, grid: &TextureGrid, voxels: &[u32], neigh: &[isize]) {
        let level = &grid.level;
        for &v in voxels {
            let a = level[v as usize];
            // α = 0: dependent neighbours share the grey level (outside-mask voxels have level 0).
            let j = 1 + neigh
                .iter()
                .filter(|&&o| level[(v as isize + o) as usize] == a)
                .count();
            self.counts.add(a as usize - 1, j, 1.0);
        }
        self.n_v += voxels.len() as f64;
    }
}

impl SliceMatrix for Ngldm {
    fn empty(grid: &TextureGrid) -> Self {
        Ngldm {
            counts: SparseCounts::new(grid.n_present(), 28),
            n_v: 0.0,
        }
    }

    fn clear(&mut self) {
        self.counts.clear();
        self.n_v = 0.0;
    }

    fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.n_v += other.n_v;
    }

    fn features(&self, grid: &TextureGrid) -> Vec<f64> {
        let f = zone_features(self.counts.iter(), &grid.values, self.n_v);
        let mut out = f.ibsi16().to_vec();
        out.push(if self.counts.is_empty() {
            f64::NAN
        } else {
            f.energy
        });
        out
    }
}

/// NGLDM features for every requested aggregation method (`_2D`, `_2_5D`, `_3D`).
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    let (n2, n3) = (grid.neighbours(false), grid.neighbours(true));
    aggregate_slices::<Ngldm>(grid, spatial, FEATURES.len(), |m, voxels, three_d| {
        m.fill(grid, voxels, if three_d { &n3 } else { &n2 });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D NGLDM example evaluates the four centre pixels (dependence k = j − 1):
    /// level 2 -> k = 2 and 3, level 3 -> k = 2, level 4 -> k = 0.
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
        let mut m = Ngldm::empty(&g);
        m.fill(&g, &centre, &g.neighbours(false));
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        assert_eq!(
            cells,
            vec![(1, 3, 1.0), (1, 4, 1.0), (2, 3, 1.0), (3, 1, 1.0)]
        );
    }

    /// 3D NGLDM (α = 0, Chebyshev distance 1) of a 3×3×3 cube of level 1 with a level-2 centre:
    /// j = 1 + same-level neighbours in the ROI: corner 1 + 6 = 7, edge 1 + 10 = 11, face 1 + 16 =
    /// 17 (the centre is a neighbour of all of them but has another level); the centre j = 1.
    #[test]
    fn three_d_cube_by_hand() {
        let l = Array3::from_shape_fn(
            (3, 3, 3),
            |(z, y, x)| if (z, y, x) == (1, 1, 1) { 2 } else { 1 },
        );
        let g = test_util::grid(&l);
        let mut m = Ngldm::empty(&g);
        m.fill(&g, &g.voxels, &g.neighbours(true));
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        assert_eq!(
            cells,
            vec![(0, 7, 8.0), (0, 11, 12.0), (0, 17, 6.0), (1, 1, 1.0)]
        );
        assert_eq!(m.n_v, 27.0);
    }
}
