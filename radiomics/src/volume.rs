//! In-memory image and mask volumes with their physical geometry (the one shared image type).
//!
//! Axis order is `[z, y, x]` (slowest to fastest), the order in which NIfTI/DICOM voxel data are laid
//! out in memory once read; `spacing`, `origin` and `direction` follow the same `[z, y, x]` order.
//! Intensities are `f64` (the IBSI recommends at least 32-bit float; f64 keeps every feature's sums
//! exact enough to match the 3-significant-digit reference values with margin).

use ndarray::Array3;

/// Physical placement of a voxel grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Voxel spacing in mm, `[z, y, x]`.
    pub spacing: [f64; 3],
    /// World position (mm) of the centre of voxel `[0, 0, 0]`, stored `[z, y, x]`.
    pub origin: [f64; 3],
    /// Direction cosines: row `a` is the world unit vector of array axis `a` (`[z, y, x]` axes),
    /// each row in world `[x, y, z]` order (LPS as in DICOM). Identity-like for axis-aligned images.
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    /// Axis-aligned geometry with the given spacing and a zero origin.
    pub fn with_spacing(spacing: [f64; 3]) -> Self {
        Self {
            spacing,
            origin: [0.0; 3],
            direction: [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        }
    }
}

/// A scalar image volume.
#[derive(Debug, Clone)]
pub struct Volume {
    pub data: Array3<f64>,
    pub geometry: Geometry,
}

/// A binary region-of-interest mask on the same grid as its image.
#[derive(Debug, Clone)]
pub struct Mask {
    pub data: Array3<bool>,
    pub geometry: Geometry,
}

impl Mask {
    /// Number of voxels inside the region.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }
}

/// Largest voxel count any reader or resampler will allocate (2^30 voxels = 8 GiB of f64).
/// A header claiming more is rejected before any allocation, so a hostile file cannot exhaust memory.
pub const MAX_VOXELS: usize = 1 << 30;

impl Geometry {
    /// World origin (centre of voxel `[0, 0, 0]`) in world `[x, y, z]` order.
    pub fn origin_xyz(&self) -> [f64; 3] {
        [self.origin[2], self.origin[1], self.origin[0]]
    }

    /// Columns of the index-to-world matrix: world `[x, y, z]` step for one voxel along array axis `a`
    /// (`a` in `[z, y, x]` order), i.e. `spacing[a] * direction[a]`.
    fn step(&self, a: usize) -> [f64; 3] {
        let d = self.direction[a];
        let s = self.spacing[a];
        [d[0] * s, d[1] * s, d[2] * s]
    }

    /// World position `[x, y, z]` (mm) of a continuous array index `[z, y, x]` (voxel centres at integers).
    pub fn index_to_world(&self, idx: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin_xyz();
        for (a, &i) in idx.iter().enumerate() {
            let s = self.step(a);
            for c in 0..3 {
                p[c] += i * s[c];
            }
        }
        p
    }

    /// Continuous array index `[z, y, x]` of a world position `[x, y, z]`; `None` if the direction
    /// matrix is singular (degenerate geometry).
    pub fn world_to_index(&self, p: [f64; 3]) -> Option<[f64; 3]> {
        // Solve M * idx = p - origin with M's columns = step(a), by Cramer's rule.
        let o = self.origin_xyz();
        let r = [p[0] - o[0], p[1] - o[1], p[2] - o[2]];
        let (c0, c1, c2) = (self.step(0), self.step(1), self.step(2));
        let det3 = |a: [f64; 3], b: [f64; 3], c: [f64; 3]| {
            a[0] * (b[1] * c[2] - b[2] * c[1]) - b[0] * (a[1] * c[2] - a[2] * c[1])
                + c[0] * (a[1] * b[2] - a[2] * b[1])
        };
        let det = det3(c0, c1, c2);
        if det.abs() < 1e-12 {
            return None;
        }
        Some([
            det3(r, c1, c2) / det,
            det3(c0, r, c2) / det,
            det3(c0, c1, r) / det,
        ])
    }
}
