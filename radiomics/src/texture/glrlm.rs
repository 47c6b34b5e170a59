//! Grey level run length matrix (GLRLM, IBSI family TP0I) and its 16 features.
//!
//! `r_ij` counts runs of grey level `i` and length `j` along direction `m` (13 directions in 3D, 4
//! in-plane in 2D); a run is a maximal sequence of intensity-mask voxels with the same grey level
//! (voxels outside the mask end a run). `N_v` is the number of voxels the matrix was built from and
//! is summed when matrices are merged, so the run percentage `N_s / N_v` stays normalised (IBSI).
//! Feature formulas: see [`super::zone`] (`j` = run length).

use super::zone::zone_features;
use super::{
    DirectionalMatrix, FamilyValues, SparseCounts, Spatial, TextureGrid, aggregate_directional,
};

/// Base tags of the GLRLM features, in output order.
pub const FEATURES: [&str; 16] = [
    "rlm_sre",       // 22OV short runs emphasis
    "rlm_lre",       // W4KF long runs emphasis
    "rlm_lgre",      // V3SW low grey level run emphasis
    "rlm_hgre",      // G3QZ high grey level run emphasis
    "rlm_srlge",     // HTZT short run low grey level emphasis
    "rlm_srhge",     // GD3A short run high grey level emphasis
    "rlm_lrlge",     // IVPO long run low grey level emphasis
    "rlm_lrhge",     // 3KUM long run high grey level emphasis
    "rlm_glnu",      // R5YN grey level non-uniformity
    "rlm_glnu_norm", // OVBL normalised grey level non-uniformity
    "rlm_rlnu",      // W92Y run length non-uniformity
    "rlm_rlnu_norm", // IC23 normalised run length non-uniformity
    "rlm_r_perc",    // 9ZK5 run percentage
    "rlm_gl_var",    // 8CE5 grey level variance
    "rlm_rl_var",    // SXLW run length variance
    "rlm_rl_entr",   // HJ9O run entropy
];

/// A run length matrix with its voxel count.
#[derive(Debug, Clone)]
pub struct Glrlm {
    counts: SparseCounts,
    n_v: f64,
}

impl DirectionalMatrix for Glrlm {
    fn empty(grid: &TextureGrid) -> Self {
        // No run is longer than the largest padded grid extent.
        let max_run = grid.dims.iter().copied().max().unwrap_or(1) + 1;
        Glrlm {
            counts: SparseCounts::new(grid.n_present(), max_run),
            n_v: 0.0,
        }
    }

    fn clear(&mut self) {
        self.counts.clear();
        self.n_v = 0.0;
    }

    fn fill(&mut self, grid: &TextureGrid, voxels: &[u32], off: isize) {
        let level = &grid.level;
        for &v in voxels {
            let a = level[v as usize];
            // Only start counting at the first voxel of a run; the padding guarantees `v − off` and
            // every step of the walk stay inside the grid.
            if level[(v as isize - off) as usize] == a {
                continue;
            }
            let mut len = 1usize;
            let mut w = v as isize + off;
            while level[w as usize] == a {
                len += 1;
                w += off;
            }
            self.counts.add(a as usize - 1, len, 1.0);
        }
        self.n_v += voxels.len() as f64;
    }

    fn merge(&mut self, other: &Self) {
        self.counts.merge(&other.counts);
        self.n_v += other.n_v;
    }

    fn features(&self, grid: &TextureGrid) -> Vec<f64> {
        zone_features(self.counts.iter(), &grid.values, self.n_v)
            .ibsi16()
            .to_vec()
    }
}

/// GLRLM features for every requested aggregation method.
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    aggregate_directional::<Glrlm>(grid, spatial, FEATURES.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D GLRLM example, direction (1,0) (along x).
    #[test]
    fn ibsi_manual_example_runs() {
        let img = [[1, 2, 2, 3], [1, 2, 3, 3], [4, 2, 4, 1], [4, 1, 2, 3]];
        let l = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| img[y][x] as u32);
        let g = test_util::grid(&l);
        let mut m = Glrlm::empty(&g);
        m.fill(&g, &g.voxels, g.offset([0, 0, 1]));
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        // Level 1: four runs of 1; level 2: three of 1, one of 2; level 3: two of 1, one of 2;
        // level 4: three of 1.
        assert_eq!(
            cells,
            vec![
                (0, 1, 4.0),
                (1, 1, 3.0),
                (1, 2, 1.0),
                (2, 1, 2.0),
                (2, 2, 1.0),
                (3, 1, 3.0)
            ]
        );
        assert_eq!(m.n_v, 16.0);
    }

    /// 2×2×2 block, grey levels by [z][y][x], 0 = outside the ROI (voxel [1,1,0]).
    fn block_2x2x2() -> Array3<u32> {
        let l = [[[1, 2], [2, 1]], [[1, 1], [0, 2]]];
        Array3::from_shape_fn((2, 2, 2), |(z, y, x)| l[z][y][x])
    }

    /// Runs along z of the 2×2×2 block (columns (y,x)): (0,0) 1,1 → level 1 length 2; (0,1) 2,1 →
    /// level 2 length 1 + level 1 length 1; (1,0) 2,outside → level 2 length 1; (1,1) 1,2 → one
    /// run of each level.
    #[test]
    fn three_d_runs_of_a_tiny_block() {
        let g = test_util::grid(&block_2x2x2());
        let mut m = Glrlm::empty(&g);
        m.fill(&g, &g.voxels, g.offset([1, 0, 0]));
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        assert_eq!(cells, vec![(0, 1, 2.0), (0, 2, 1.0), (1, 1, 3.0)]);
        assert_eq!(m.n_v, 7.0);
        // Along the diagonal (1,1,1) every voxel is a run of its own.
        let mut d = Glrlm::empty(&g);
        d.fill(&g, &g.voxels, g.offset([1, 1, 1]));
        let mut cells: Vec<(usize, usize, f64)> = d.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        assert_eq!(cells, vec![(0, 1, 4.0), (1, 1, 3.0)]);
    }
}
