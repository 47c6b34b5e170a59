//! IBSI texture families (GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM) and the shared machinery they
//! run on: a discretised ROI on its padded bounding box, neighbourhood offsets, and the slice /
//! direction aggregation methods.
//!
//! Conventions shared by all families (IBSI 1, sections 3.6–3.11; the `digital` and CT settings):
//! * Axis order `[z, y, x]`; a *slice* is a fixed `z` (axial plane); 2D methods never look across
//!   slices.
//! * Neighbourhoods use Chebyshev distance 1: 26 neighbours / 13 unique directions in 3D, 8 neighbours
//!   / 4 directions in 2D. GLSZM/GLDZM zones link 26- (3D) or 8- (2D) connected voxels; the GLDZM
//!   border distance uses 6- (3D) or 4- (2D) connectivity.
//! * Grey levels are the discretised intensities 1..N_g; voxels outside the intensity mask never
//!   take part (they are not neighbours, do not extend runs or zones).
//! * Averaging over slices/directions skips values that are NaN (a slice without any voxel pair has
//!   no GLCM), like MIRP's `nanmean`; a feature with no finite contribution is NaN.
//!
//! Performance: everything works on the ROI bounding box padded by one voxel (so neighbour lookups
//! need no bounds checks), grey levels are stored as compact `u16` indices of the levels present,
//! and matrices are sized by the number of levels present, not by N_g.

pub mod glcm;
pub mod gldzm;
pub mod glrlm;
pub mod glszm;
pub mod ngldm;
pub mod ngtdm;
mod zone;

pub use zone::ZoneFeatures;

use ndarray::{ArrayView3, Zip};
use thiserror::Error;

use crate::registry::Aggregation;

/// Why a texture grid cannot be built.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TextureError {
    #[error("the intensity mask is empty: no voxel to compute texture features on")]
    EmptyRoi,
    #[error("mask shape {mask:?} differs from grey level array shape {levels:?}")]
    ShapeMismatch {
        levels: [usize; 3],
        mask: [usize; 3],
    },
    #[error(
        "{0} distinct grey levels are present; texture matrices support at most 65535 - use a wider bin or fewer bins"
    )]
    TooManyLevels(usize),
    #[error(
        "voxel [z={0}, y={1}, x={2}] is in the intensity mask but not in the morphological mask; the intensity mask must be a subset (re-segmentation only removes voxels)"
    )]
    MaskNotSubset(usize, usize, usize),
    #[error("grey level 0 at voxel [z={0}, y={1}, x={2}]: grey levels start at 1")]
    ZeroLevel(usize, usize, usize),
}

/// Which spatial aggregation methods to compute (IBSI "2D", "2.5D", "3D").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spatial {
    /// Per-slice methods: `_2D_avg`, `_2D_comb` (GLCM/GLRLM) and `_2D` (others).
    pub d2: bool,
    /// Slice-merged methods: `_2_5D_avg`, `_2_5D_comb` and `_2_5D`.
    pub d25: bool,
    /// Volumetric methods: `_3D_avg`, `_3D_comb` and `_3D`.
    pub d3: bool,
}

impl Spatial {
    /// Only the 3D methods (the project's pipeline and LIFEx).
    pub const THREE_D: Spatial = Spatial {
        d2: false,
        d25: false,
        d3: true,
    };
    /// All methods (the IBSI digital phantom reports all).
    pub const ALL: Spatial = Spatial {
        d2: true,
        d25: true,
        d3: true,
    };
}

/// Feature values of one family for one aggregation method, in the family's `FEATURES` order.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyValues {
    pub aggregation: Aggregation,
    pub values: Vec<f64>,
}

/// The discretised ROI on its bounding box padded by one voxel on every side.
///
/// `level[v]` is 0 outside the intensity mask and `k + 1` for the `k`-th grey level present
/// (`values[k]` is that grey level, ascending). `morph[v]` is the morphological mask on the same grid.
#[derive(Debug, Clone)]
pub struct TextureGrid {
    /// Padded grid shape `[z, y, x]`.
    pub dims: [usize; 3],
    /// Linear strides for `[z, y, x]`.
    pub strides: [isize; 3],
    pub level: Vec<u16>,
    pub morph: Vec<bool>,
    /// Grey level (1-based, as discretised) of each compact index.
    pub values: Vec<f64>,
    /// Number of grey levels N_g of the discretisation (used by normalised features).
    pub n_levels: u32,
    /// Linear indices of the intensity-mask voxels, in `[z, y, x]` order.
    pub voxels: Vec<u32>,
    /// For each padded `z`, the range of `voxels` lying in that slice.
    pub slices: Vec<std::ops::Range<usize>>,
}

impl TextureGrid {
    /// Build the grid from the image, the intensity mask and the morphological mask (all of the same
    /// shape): `level_of` maps an intensity inside the intensity mask to its grey level (1..=N_g,
    /// e.g. [`crate::discretise::Discretiser::level`]) and `n_levels` is N_g. Only the bounding box
    /// of the masks is stored, so no image-sized array is allocated.
    pub fn new(
        image: ArrayView3<f64>,
        int_mask: ArrayView3<bool>,
        morph_mask: ArrayView3<bool>,
        level_of: impl Fn(f64) -> u32,
        n_levels: u32,
    ) -> Result<Self, TextureError> {
        let shape = dims_of(image.shape());
        for m in [int_mask.shape(), morph_mask.shape()] {
            if dims_of(m) != shape {
                return Err(TextureError::ShapeMismatch {
                    levels: shape,
                    mask: dims_of(m),
                });
            }
        }
        // Bounding box of the union of both masks (the GLDZM distance map needs the whole
        // morphological mask; the intensity mask is normally a subset of it).
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any_int = false;
        // seen[l]: grey level l occurs in the intensity mask (levels are bounded by N_g).
        let mut seen = vec![false; n_levels as usize + 1];
        let mut error = None;
        Zip::indexed(&morph_mask)
            .and(&int_mask)
            .and(&image)
            .for_each(|(z, y, x), &m, &i, &v| {
                if i {
                    if !m {
                        error.get_or_insert(TextureError::MaskNotSubset(z, y, x));
                        return;
                    }
                    any_int = true;
                    let l = level_of(v);
                    if l == 0 {
                        error.get_or_insert(TextureError::ZeroLevel(z, y, x));
                        return;
                    }
                    if l as usize >= seen.len() {
                        seen.resize(l as usize + 1, false);
                    }
                    seen[l as usize] = true;
                }
                if m || i {
                    for (a, c) in [z, y, x].into_iter().enumerate() {
                        lo[a] = lo[a].min(c);
                        hi[a] = hi[a].max(c);
                    }
                }
            });
        if let Some(e) = error {
            return Err(e);
        }
        if !any_int {
            return Err(TextureError::EmptyRoi);
        }
        // Compact index (1-based) of every level present, and the level of every compact index.
        let n_present = seen.iter().filter(|&&s| s).count();
        if n_present > u16::MAX as usize {
            return Err(TextureError::TooManyLevels(n_present));
        }
        let mut compact = vec![0u16; seen.len()];
        let mut values = Vec::with_capacity(n_present);
        for (l, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
            values.push(l as f64);
            compact[l] = values.len() as u16;
        }

        let dims = [hi[0] - lo[0] + 3, hi[1] - lo[1] + 3, hi[2] - lo[2] + 3];
        let strides = [(dims[1] * dims[2]) as isize, dims[2] as isize, 1];
        let n = dims[0] * dims[1] * dims[2];
        let mut level = vec![0u16; n];
        let mut morph = vec![false; n];
        let mut voxels = Vec::new();
        let mut slices = vec![0..0; dims[0]];
        for (pz, slice) in slices.iter_mut().enumerate().take(dims[0] - 1).skip(1) {
            let start = voxels.len();
            let z = lo[0] + pz - 1;
            for py in 1..dims[1] - 1 {
                let y = lo[1] + py - 1;
                for px in 1..dims[2] - 1 {
                    let x = lo[2] + px - 1;
                    let v = pz * dims[1] * dims[2] + py * dims[2] + px;
                    morph[v] = morph_mask[[z, y, x]];
                    if int_mask[[z, y, x]] {
                        level[v] = compact[level_of(image[[z, y, x]]) as usize];
                        voxels.push(v as u32);
                    }
                }
            }
            *slice = start..voxels.len();
        }
        Ok(Self {
            dims,
            strides,
            level,
            morph,
            values,
            n_levels,
            voxels,
            slices,
        })
    }

    /// Number of grey levels present in the intensity mask.
    pub fn n_present(&self) -> usize {
        self.values.len()
    }

    /// Linear offset of a `[dz, dy, dx]` step.
    #[inline]
    pub fn offset(&self, d: [isize; 3]) -> isize {
        d[0] * self.strides[0] + d[1] * self.strides[1] + d[2] * self.strides[2]
    }

    /// Voxel lists of the non-empty slices.
    pub fn slice_voxels(&self) -> impl Iterator<Item = &[u32]> {
        self.slices
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| &self.voxels[r.clone()])
    }

    /// Linear offsets of the neighbours within Chebyshev distance 1 (26 in 3D, 8 in-plane in 2D).
    pub fn neighbours(&self, three_d: bool) -> Vec<isize> {
        let mut out = Vec::with_capacity(26);
        let zr: &[isize] = if three_d { &[-1, 0, 1] } else { &[0] };
        for &dz in zr {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    if (dz, dy, dx) != (0, 0, 0) {
                        out.push(self.offset([dz, dy, dx]));
                    }
                }
            }
        }
        out
    }

    /// Linear offsets of the face neighbours (6 in 3D, 4 in-plane in 2D).
    pub fn face_neighbours(&self, three_d: bool) -> Vec<isize> {
        let mut out = vec![
            self.offset([0, 1, 0]),
            self.offset([0, -1, 0]),
            self.offset([0, 0, 1]),
            self.offset([0, 0, -1]),
        ];
        if three_d {
            out.push(self.offset([1, 0, 0]));
            out.push(self.offset([-1, 0, 0]));
        }
        out
    }
}

fn dims_of(s: &[usize]) -> [usize; 3] {
    [s[0], s[1], s[2]]
}

/// The 13 unique 3D direction vectors `[dz, dy, dx]` for Chebyshev distance 1 (IBSI GLCM section).
pub const DIRECTIONS_3D: [[isize; 3]; 13] = [
    [0, 0, 1],
    [0, 1, 0],
    [1, 0, 0],
    [0, 1, 1],
    [0, 1, -1],
    [1, 0, 1],
    [1, 0, -1],
    [1, 1, 0],
    [1, -1, 0],
    [1, 1, 1],
    [1, 1, -1],
    [1, -1, 1],
    [1, -1, -1],
];

/// The 4 in-plane 2D direction vectors `[dz, dy, dx]`: (1,0), (1,1), (0,1), (-1,1) in (x, y).
pub const DIRECTIONS_2D: [[isize; 3]; 4] = [[0, 0, 1], [0, 1, 1], [0, 1, 0], [0, 1, -1]];

/// Running mean per feature that skips NaN (MIRP `nanmean`).
#[derive(Debug, Clone)]
pub(crate) struct NanMean {
    sum: Vec<f64>,
    n: Vec<u32>,
}

impl NanMean {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            sum: vec![0.0; k],
            n: vec![0; k],
        }
    }

    pub(crate) fn add(&mut self, values: &[f64]) {
        for ((s, n), &v) in self.sum.iter_mut().zip(self.n.iter_mut()).zip(values) {
            if !v.is_nan() {
                *s += v;
                *n += 1;
            }
        }
    }

    pub(crate) fn finish(&self) -> Vec<f64> {
        self.sum
            .iter()
            .zip(&self.n)
            .map(|(&s, &n)| if n == 0 { f64::NAN } else { s / n as f64 })
            .collect()
    }
}

/// A matrix family aggregated over directions (GLCM, GLRLM): the per-matrix operations the
/// aggregation driver needs.
pub(crate) trait DirectionalMatrix {
    /// Empty matrix for `n` grey levels present in the grid.
    fn empty(grid: &TextureGrid) -> Self;
    fn clear(&mut self);
    /// Add the co-occurrences / runs of `voxels` along linear direction `off`.
    fn fill(&mut self, grid: &TextureGrid, voxels: &[u32], off: isize);
    fn merge(&mut self, other: &Self);
    /// Feature values (NaN for all features if the matrix is empty).
    fn features(&self, grid: &TextureGrid) -> Vec<f64>;
}

/// Compute a directional family with every requested IBSI aggregation method.
pub(crate) fn aggregate_directional<M: DirectionalMatrix>(
    grid: &TextureGrid,
    spatial: Spatial,
    n_features: usize,
) -> Vec<FamilyValues> {
    let mut out = Vec::new();
    if spatial.d2 || spatial.d25 {
        let offs: Vec<isize> = DIRECTIONS_2D.iter().map(|&d| grid.offset(d)).collect();
        let mut avg_2d = NanMean::new(n_features);
        let mut comb_2d = NanMean::new(n_features);
        let mut per_dir: Vec<M> = offs.iter().map(|_| M::empty(grid)).collect();
        let mut cur = M::empty(grid);
        let mut slice_merged = M::empty(grid);
        for voxels in grid.slice_voxels() {
            slice_merged.clear();
            for (k, &off) in offs.iter().enumerate() {
                cur.clear();
                cur.fill(grid, voxels, off);
                if spatial.d2 {
                    avg_2d.add(&cur.features(grid));
                    slice_merged.merge(&cur);
                }
                if spatial.d25 {
                    per_dir[k].merge(&cur);
                }
            }
            if spatial.d2 {
                comb_2d.add(&slice_merged.features(grid));
            }
        }
        if spatial.d2 {
            out.push(FamilyValues {
                aggregation: Aggregation::Avg2D,
                values: avg_2d.finish(),
            });
            out.push(FamilyValues {
                aggregation: Aggregation::SliceMerged2D,
                values: comb_2d.finish(),
            });
        }
        if spatial.d25 {
            let mut avg = NanMean::new(n_features);
            let mut all = M::empty(grid);
            for m in &per_dir {
                avg.add(&m.features(grid));
                all.merge(m);
            }
            out.push(FamilyValues {
                aggregation: Aggregation::DirectionMerged25D,
                values: avg.finish(),
            });
            out.push(FamilyValues {
                aggregation: Aggregation::Merged25D,
                values: all.features(grid),
            });
        }
    }
    if spatial.d3 {
        let mut avg = NanMean::new(n_features);
        let mut all = M::empty(grid);
        let mut cur = M::empty(grid);
        for d in DIRECTIONS_3D {
            cur.clear();
            cur.fill(grid, &grid.voxels, grid.offset(d));
            avg.add(&cur.features(grid));
            all.merge(&cur);
        }
        out.push(FamilyValues {
            aggregation: Aggregation::Avg3D,
            values: avg.finish(),
        });
        out.push(FamilyValues {
            aggregation: Aggregation::Merged3D,
            values: all.features(grid),
        });
    }
    out
}

/// A non-directional matrix family (GLSZM, GLDZM, NGTDM, NGLDM).
pub(crate) trait SliceMatrix {
    fn empty(grid: &TextureGrid) -> Self;
    fn clear(&mut self);
    fn merge(&mut self, other: &Self);
    fn features(&self, grid: &TextureGrid) -> Vec<f64>;
}

/// Compute a non-directional family with every requested IBSI aggregation method. `fill(m, voxels,
/// three_d)` adds the contribution of `voxels` (one slice for 2D, the whole ROI for 3D).
pub(crate) fn aggregate_slices<M: SliceMatrix>(
    grid: &TextureGrid,
    spatial: Spatial,
    n_features: usize,
    mut fill: impl FnMut(&mut M, &[u32], bool),
) -> Vec<FamilyValues> {
    let mut out = Vec::new();
    if spatial.d2 || spatial.d25 {
        let mut avg = NanMean::new(n_features);
        let mut merged = M::empty(grid);
        let mut cur = M::empty(grid);
        for voxels in grid.slice_voxels() {
            cur.clear();
            fill(&mut cur, voxels, false);
            if spatial.d2 {
                avg.add(&cur.features(grid));
            }
            if spatial.d25 {
                merged.merge(&cur);
            }
        }
        if spatial.d2 {
            out.push(FamilyValues {
                aggregation: Aggregation::Slice2D,
                values: avg.finish(),
            });
        }
        if spatial.d25 {
            out.push(FamilyValues {
                aggregation: Aggregation::Merged25DSlices,
                values: merged.features(grid),
            });
        }
    }
    if spatial.d3 {
        let mut m = M::empty(grid);
        fill(&mut m, &grid.voxels, true);
        out.push(FamilyValues {
            aggregation: Aggregation::Volume3D,
            values: m.features(grid),
        });
    }
    out
}

/// A dense grey level × `j` count matrix that remembers its non-zero cells, so that clearing and
/// feature computation cost O(non-zero) instead of O(size) (many small per-slice matrices).
#[derive(Debug, Clone)]
pub(crate) struct SparseCounts {
    n_j: usize,
    counts: Vec<f64>,
    touched: Vec<u32>,
}

impl SparseCounts {
    pub(crate) fn new(n_levels: usize, n_j: usize) -> Self {
        Self {
            n_j,
            counts: vec![0.0; n_levels * n_j],
            touched: Vec::new(),
        }
    }

    /// Add `c` to cell (level index `i`, column `j`), `j < n_j`.
    #[inline]
    pub(crate) fn add(&mut self, i: usize, j: usize, c: f64) {
        let k = i * self.n_j + j;
        if self.counts[k] == 0.0 {
            self.touched.push(k as u32);
        }
        self.counts[k] += c;
    }

    pub(crate) fn clear(&mut self) {
        for &k in &self.touched {
            self.counts[k as usize] = 0.0;
        }
        self.touched.clear();
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for &k in &other.touched {
            let k = k as usize;
            self.add(k / other.n_j, k % other.n_j, other.counts[k]);
        }
    }

    /// Non-zero cells as (level index, column, count).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, usize, f64)> + Clone + '_ {
        self.touched.iter().map(move |&k| {
            let k = k as usize;
            (k / self.n_j, k % self.n_j, self.counts[k])
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use ndarray::Array3;

    /// A grid from explicit grey levels (0 = outside the ROI); both masks = level > 0.
    pub(crate) fn grid(levels: &Array3<u32>) -> TextureGrid {
        let mask = levels.mapv(|l| l > 0);
        let image = levels.mapv(|l| l as f64);
        let n = *levels.iter().max().unwrap();
        TextureGrid::new(image.view(), mask.view(), mask.view(), |x| x as u32, n).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn grid_compacts_levels_and_pads() {
        let mut l = Array3::<u32>::zeros((3, 4, 5));
        l[[1, 1, 1]] = 7;
        l[[1, 2, 3]] = 2;
        l[[2, 2, 3]] = 7;
        let g = test_util::grid(&l);
        assert_eq!(g.dims, [2 + 2, 2 + 2, 3 + 2]);
        assert_eq!(g.values, vec![2.0, 7.0]);
        assert_eq!(g.n_levels, 7);
        assert_eq!(g.voxels.len(), 3);
        assert_eq!(g.slice_voxels().count(), 2);
        assert_eq!(g.neighbours(true).len(), 26);
        assert_eq!(g.neighbours(false).len(), 8);
    }

    #[test]
    fn grid_rejects_bad_masks() {
        let img = Array3::<f64>::from_elem((1, 1, 2), 1.0);
        let int = Array3::from_elem((1, 1, 2), true);
        let mut morph = int.clone();
        morph[[0, 0, 1]] = false;
        let lv = |x: f64| x as u32;
        assert_eq!(
            TextureGrid::new(img.view(), int.view(), morph.view(), lv, 1).unwrap_err(),
            TextureError::MaskNotSubset(0, 0, 1)
        );
        let none = Array3::from_elem((1, 1, 2), false);
        assert_eq!(
            TextureGrid::new(img.view(), none.view(), none.view(), lv, 1).unwrap_err(),
            TextureError::EmptyRoi
        );
    }
}
