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
