//! Grey level distance zone matrix (GLDZM, IBSI family VMDZ) and its 16 features.
//!
//! Zones are those of the GLSZM (intensity mask, 26-/8-connectivity). The distance of a voxel to the
//! ROI edge is taken on the **morphological** mask (IBSI): the number of 6-connected (3D) or
//! 4-connected in-plane (2D) steps needed to leave the mask, so voxels on the border have distance 1
//! (the image edge counts as outside). This equals the Manhattan distance to the nearest non-mask
//! voxel and is computed by a multi-source breadth-first search, which gives the same result as the
//! IBSI's iterative erosion. A zone's distance is the minimum over its voxels; `d_ij` counts zones of
//! grey level `i` at distance `j`. Feature formulas: see [`super::zone`] (`j` = zone distance).

use std::collections::VecDeque;

use super::glszm::ZoneFinder;
use super::zone::zone_features;
use super::{FamilyValues, SliceMatrix, SparseCounts, Spatial, TextureGrid, aggregate_slices};

/// Base tags of the GLDZM features, in output order.
pub const FEATURES: [&str; 16] = [
    "dzm_sde",       // 0GBI small distance emphasis
    "dzm_lde",       // MB4I large distance emphasis
    "dzm_lgze",      // S1RA low grey level zone emphasis
    "dzm_hgze",      // K26C high grey level zone emphasis
    "dzm_sdlge",     // RUVG small distance low grey level emphasis
    "dzm_sdhge",     // DKNJ small distance high grey level emphasis
    "dzm_ldlge",     // A7WM large distance low grey level emphasis
    "dzm_ldhge",     // KLTH large distance high grey level emphasis
    "dzm_glnu",      // VFT7 grey level non-uniformity
    "dzm_glnu_norm", // 7HP3 normalised grey level non-uniformity
    "dzm_zdnu",      // V294 zone distance non-uniformity
    "dzm_zdnu_norm", // IATH normalised zone distance non-uniformity
    "dzm_z_perc",    // VIWW zone percentage
    "dzm_gl_var",    // QK93 grey level variance
    "dzm_zd_var",    // 7WT1 zone distance variance
    "dzm_zd_entr",   // GBDU zone distance entropy
];

/// Border distance of every morphological-mask voxel of the grid (0 outside the mask), using
/// 6-connectivity (`three_d`) or 4-connectivity within each slice.
pub fn distance_map(grid: &TextureGrid, three_d: bool) -> Vec<u32> {
    let offs = grid.face_neighbours(three_d);
    let mut dist = vec![0u32; grid.morph.len()];
    let mut queue = VecDeque::new();
    // Border voxels: in the mask with a face neighbour outside it. The one-voxel padding is outside
    // the mask, so neighbour indices of mask voxels are always valid.
    for (v, &m) in grid.morph.iter().enumerate() {
        if m && offs.iter().any(|&o| !grid.morph[(v as isize + o) as usize]) {
            dist[v] = 1;
            queue.push_back(v);
        }
    }
    while let Some(v) = queue.pop_front() {
        let d = dist[v] + 1;
        for &o in &offs {
            let w = (v as isize + o) as usize;
            if grid.morph[w] && dist[w] == 0 {
                dist[w] = d;
                queue.push_back(w);
            }
        }
    }
    dist
}

/// Zone counts by (level index, distance) with the voxel count.
#[derive(Debug, Clone)]
pub struct Gldzm {
    counts: SparseCounts,
    n_v: f64,
}

impl SliceMatrix for Gldzm {
    fn empty(grid: &TextureGrid) -> Self {
        // Distances never exceed half the largest extent (+1 margin).
        let max_d = grid.dims.iter().copied().max().unwrap_or(1) + 1;
        Gldzm {
            counts: SparseCounts::new(grid.n_present(), max_d),
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
        zone_features(self.counts.iter(), &grid.values, self.n_v)
            .ibsi16()
            .to_vec()
    }
}

/// GLDZM features for every requested aggregation method (`_2D`, `_2_5D`, `_3D`).
pub fn compute(grid: &TextureGrid, spatial: Spatial) -> Vec<FamilyValues> {
    let mut finder = ZoneFinder::new(grid);
    let (n2, n3) = (grid.neighbours(false), grid.neighbours(true));
    let dist2 = if spatial.d2 || spatial.d25 {
        distance_map(grid, false)
    } else {
        Vec::new()
    };
    let dist3 = if spatial.d3 {
        distance_map(grid, true)
    } else {
        Vec::new()
    };
    aggregate_slices::<Gldzm>(grid, spatial, FEATURES.len(), |m, voxels, three_d| {
        let (neigh, dist) = if three_d {
            (&n3, &dist3)
        } else {
            (&n2, &dist2)
        };
        finder.zones(grid, voxels, neigh, Some(dist), |z| {
            // The intensity mask is a subset of the morphological mask (checked when the grid is
            // built), so every zone has a distance of at least 1.
            m.counts.add(z.level, z.min_map as usize, 1.0);
        });
        m.n_v += voxels.len() as f64;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::texture::test_util;
    use ndarray::Array3;

    /// The IBSI manual's 2D GLDZM example: distance map and matrix.
    #[test]
    fn ibsi_manual_example() {
        let img = [[1, 2, 2, 3], [1, 2, 3, 3], [4, 2, 4, 1], [4, 1, 2, 3]];
        let l = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| img[y][x] as u32);
        let g = test_util::grid(&l);
        let d = distance_map(&g, false);
        let got: Vec<u32> = g.voxels.iter().map(|&v| d[v as usize]).collect();
        assert_eq!(got, vec![1, 1, 1, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 1, 1, 1]);
        let mut m = Gldzm::empty(&g);
        let mut finder = ZoneFinder::new(&g);
        finder.zones(&g, &g.voxels, &g.neighbours(false), Some(&d), |z| {
            m.counts.add(z.level, z.min_map as usize, 1.0)
        });
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        // The manual's table (levels 1..4: 3, 2, 2, 1 zones at distance 1; level 4 one at distance 2)
        // links level-2 voxels by 4-connectivity; with the IBSI's 8-connectivity the diagonal voxel
        // joins the big level-2 zone, leaving one level-2 zone. Everything else is as in the manual.
        assert_eq!(
            cells,
            vec![
                (0, 1, 3.0),
                (1, 1, 1.0),
                (2, 1, 2.0),
                (3, 1, 1.0),
                (3, 2, 1.0)
            ]
        );
    }

    /// 3D distance map of a 3×3×3 cube (face connectivity): 26 border voxels at distance 1, the
    /// centre at 2. With a level-2 centre the matrix has the level-1 zone at distance 1 and the
    /// level-2 zone at distance 2.
    #[test]
    fn three_d_distance_zones_by_hand() {
        let l = Array3::from_shape_fn(
            (3, 3, 3),
            |(z, y, x)| if (z, y, x) == (1, 1, 1) { 2 } else { 1 },
        );
        let g = test_util::grid(&l);
        let d = distance_map(&g, true);
        let got: Vec<u32> = g.voxels.iter().map(|&v| d[v as usize]).collect();
        let want: Vec<u32> = (0..27).map(|k| if k == 13 { 2 } else { 1 }).collect();
        assert_eq!(got, want);
        let mut m = Gldzm::empty(&g);
        let mut finder = ZoneFinder::new(&g);
        finder.zones(&g, &g.voxels, &g.neighbours(true), Some(&d), |z| {
            m.counts.add(z.level, z.min_map as usize, 1.0)
        });
        let mut cells: Vec<(usize, usize, f64)> = m.counts.iter().collect();
        cells.sort_by_key(|c| (c.0, c.1));
        assert_eq!(cells, vec![(0, 1, 1.0), (1, 2, 1.0)]);
    }
}
