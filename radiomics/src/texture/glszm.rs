//! Grey level size zone matrix (GLSZM, IBSI family 9SAK; LIFEx "GLZLM") and its 16 features.
//!
//! A zone is a maximal set of intensity-mask voxels with the same grey level, linked by
//! 26-connectivity in 3D or 8-connectivity within a slice in 2D. `s_ij` counts zones of grey level
//! `i` and size `j` voxels. `N_v` (zone percentage `N_s / N_v`) is summed over merged slice matrices.
//! Feature formulas: see [`super::zone`] (`j` = zone size).

use std::collections::BTreeMap;

use super::zone::zone_features;
use super::{FamilyValues, SliceMatrix, Spatial, TextureGrid, aggregate_slices};

/// Base tags of the GLSZM features, in output order.
pub const FEATURES: [&str; 16] = [
    "szm_sze",       // 5QRC small zone emphasis
    "szm_lze",       // 48P8 large zone emphasis
    "szm_lgze",      // XMSY low grey level zone emphasis
    "szm_hgze",      // 5GN9 high grey level zone emphasis
    "szm_szlge",     // 5RAI small zone low grey level emphasis
    "szm_szhge",     // HW1V small zone high grey level emphasis
    "szm_lzlge",     // YH51 large zone low grey level emphasis
    "szm_lzhge",     // J17V large zone high grey level emphasis
    "szm_glnu",      // JNSA grey level non-uniformity
    "szm_glnu_norm", // Y1RO normalised grey level non-uniformity
    "szm_zsnu",      // 4JP3 zone size non-uniformity
    "szm_zsnu_norm", // VB3A normalised zone size non-uniformity
    "szm_z_perc",    // P30P zone percentage
    "szm_gl_var",    // BYLV grey level variance
    "szm_zs_var",    // 3NSA zone size variance
    "szm_zs_entr",   // GU8N zone size entropy
];

/// One zone: compact grey level index, size in voxels, and the smallest value of a per-voxel map
/// (the GLDZM border distance) over its voxels (0 when no map is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Zone {
    pub level: usize,
    pub size: usize,
    pub min_map: u32,
}

/// Scratch buffers for flood filling, reused across slices.
pub(crate) struct ZoneFinder {
    visited: Vec<bool>,
    stack: Vec<u32>,
}

impl ZoneFinder {
    pub(crate) fn new(grid: &TextureGrid) -> Self {
        Self {
            visited: vec![false; grid.level.len()],
            stack: Vec::new(),
        }
    }

    /// Find the zones among `voxels` (linking through `neigh` offsets) and report each one.
    /// Zones never leave `voxels` when `voxels` is a whole slice (2D offsets) or the whole ROI.
    pub(crate) fn zones(
        &mut self,
        grid: &TextureGrid,
        voxels: &[u32],
        neigh: &[isize],
        map: Option<&[u32]>,
        mut report: impl FnMut(Zone),
    ) {
        let level = &grid.level;
        for &seed in voxels {
            if self.visited[seed as usize] {
                continue;
            }
            let a = level[seed as usize];
            self.visited[seed as usize] = true;
            self.stack.push(seed);
            let mut size = 0usize;
            let mut min_map = u32::MAX;
            while let Some(v) = self.stack.pop() {
                size += 1;
                if let Some(m) = map {
                    min_map = min_map.min(m[v as usize]);
                }
                for &o in neigh {
                    let w = (v as isize + o) as usize;
                    if level[w] == a && !self.visited[w] {
                        self.visited[w] = true;
                        self.stack.push(w as u32);
                    }
                }
            }
            report(Zone {
                level: a as usize - 1,
                size,
                min_map: if map.is_some() { min_map } else { 0 },
            });
        }
        for &v in voxels {
            self.visited[v as usize] = false;
        }
    }
}

/// Zone counts keyed by (level index, zone size); sparse because zone sizes can reach the ROI size.
#[derive(Debug, Clone, Default)]
pub struct Glszm {
    // Ordered, not hashed: feature sums then run in the same order in every process (a HashMap's
    // per-process random order changed the last bits of the features from run to run).
    counts: BTreeMap<(usize, usize), f64>,
    n_v: f64,
}

impl SliceMatrix for Glszm {
    fn empty(_grid: &TextureGrid) -> Self {
        Self::default()
    }

    fn clear(&mut self) {
        self.counts.clear();
        self.n_v = 0.0;
    }

    fn merge(&mut self, other: &Self) {
        for (&k, &c) in &other.counts {
            *self.counts.entry(k).or_insert(0.0) += c;
        }
        self.n_v += other.n_v;
    }

    fn features(&self, grid: &TextureGrid) -> Vec<f64> {
        let cells = self.counts.iter().map(|(&(i, j), &c)| (i, j, c));
        zone_features(cells, &grid.values, self.n_v)
            .ibsi16()
            .to_vec()
    }
}

/// GLSZM features for every requested aggregation method (`_2D`, `_2_5D`, `_3D`).
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    let mut finder = ZoneFinder::new(grid);
    let (n2, n3) = (grid.neighbours(false), grid.neighbours(true));
    aggregate_slices::<Glszm>(grid, spatial, FEATURES.len(), |m, voxels, three_d| {
        let neigh = if three_d { &n3 } else { &n2 };
        finder.zones(grid, voxels, neigh, None, |z| {
            *m.counts.entry((z.level, z.size)).or_insert(0.0) += 1.0;
        });
        m.n_v += voxels.len() as f64;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D GLSZM example (8-connectivity).
    #[test]
    fn ibsi_manual_example_zones() {
        let img = [[1, 2, 2, 3], [1, 2, 3, 3], [4, 2, 4, 1], [4, 1, 2, 3]];
        let l = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| img[y][x] as u32);
        let g = test_util::grid(&l);
        let mut finder = ZoneFinder::new(&g);
        let mut zones = Vec::new();
        finder.zones(&g, &g.voxels, &g.neighbours(false), None, |z| {
            zones.push((z.level + 1, z.size))
        });
        zones.sort();
        // Manual: level 1 -> sizes 1, 1, 2; level 2 -> 5; level 3 -> 1, 3; level 4 -> 1, 2.
        assert_eq!(
            zones,
            vec![
                (1, 1),
                (1, 1),
                (1, 2),
                (2, 5),
                (3, 1),
                (3, 3),
                (4, 1),
                (4, 2)
            ]
        );
    }

    /// 3D zones (26-connectivity): the 26 level-1 voxels around a level-2 centre form one zone
    /// (they connect around the centre); in 2D (8-connectivity) the middle slice has a ring of 8.
    /// Also the 2×2×2 block of the GLCM test: level 1 {A, D, E, F} and level 2 {B, C, H} are each
    /// one 26-connected zone, but per slice they split into diagonal pairs.
    #[test]
    fn three_d_zones_by_hand() {
        let g = test_util::grid(&Array3::from_shape_fn((3, 3, 3), |(z, y, x)| {
            if (z, y, x) == (1, 1, 1) { 2 } else { 1 }
        }));
        let mut finder = ZoneFinder::new(&g);
        let mut zones = Vec::new();
        finder.zones(&g, &g.voxels, &g.neighbours(true), None, |z| {
            zones.push((z.level + 1, z.size))
        });
        zones.sort();
        assert_eq!(zones, vec![(1, 26), (2, 1)]);
        let l = [[[1, 2], [2, 1]], [[1, 1], [0, 2]]];
        let g = test_util::grid(&Array3::from_shape_fn((2, 2, 2), |(z, y, x)| l[z][y][x]));
        let mut finder = ZoneFinder::new(&g);
        let mut zones = Vec::new();
        finder.zones(&g, &g.voxels, &g.neighbours(true), None, |z| {
            zones.push((z.level + 1, z.size))
        });
        zones.sort();
        assert_eq!(zones, vec![(1, 4), (2, 3)]);
        let mut per_slice = Vec::new();
        for s in g.slice_voxels() {
            finder.zones(&g, s, &g.neighbours(false), None, |z| {
                per_slice.push((z.level + 1, z.size))
            });
        }
        per_slice.sort();
        // Slice 0: {A, D} and {B, C} (diagonal pairs); slice 1: {E, F} and {H}.
        assert_eq!(per_slice, vec![(1, 2), (1, 2), (2, 1), (2, 2)]);
    }
}
