//! Image and mask readers (NIfTI, NRRD, DICOM series, DICOM RTSTRUCT): the only module that touches files.
//!
//! Every reader returns a [`Volume`] (intensities as `f64`, geometry in the crate's `[z, y, x]`
//! convention, world coordinates in DICOM LPS) or a [`Mask`]. Malformed input never panics: it
//! becomes an [`IoError`] that names the file and says what is wrong and how to fix it. Header
//! dimensions are checked against [`MAX_VOXELS`] before anything is allocated.

pub mod dicom;
pub mod nifti;
pub mod nrrd;
pub mod rtstruct;

use std::path::{Path, PathBuf};

use ndarray::Array3;

use crate::volume::{Geometry, MAX_VOXELS, Mask, Volume};

/// What can go wrong while reading images and masks.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} file: {problem}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        problem: String,
    },
    #[error("{path}: {what} is not supported yet ({hint})")]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },
    #[error(
        "{path}: header claims {dims:?} voxels ({total} in total), more than the limit of {limit}; the file is corrupt or not a single 3D volume"
    )]
    TooLarge {
        path: PathBuf,
        dims: Vec<u64>,
        total: u128,
        limit: usize,
    },
    #[error(
        "cannot tell the format of {path}: expected .nii, .nii.gz, .nrrd, .nhdr or a DICOM folder/file"
    )]
    UnknownFormat { path: PathBuf },
    #[error(
        "{path}: ROI {requested:?} not found; available ROIs: {available:?} (pass one of them with --roi)"
    )]
    RoiNotFound {
        path: PathBuf,
        requested: Option<String>,
        available: Vec<String>,
    },
    #[error(
        "{path}: the mask is empty{detail}; check the label value and that the mask belongs to this image"
    )]
    EmptyMask { path: PathBuf, detail: String },
    #[error("image and mask grids differ: {}; resample the mask onto the image grid first", .differences.join("; "))]
    GridMismatch { differences: Vec<String> },
}

impl IoError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(path: &Path, format: &'static str, problem: impl Into<String>) -> Self {
        IoError::Malformed {
            path: path.to_path_buf(),
            format,
            problem: problem.into(),
        }
    }
}

/// File formats recognised by [`read_image`] / [`read_mask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti,
    Nrrd,
    /// A folder of DICOM image slices (or a single DICOM file: RTSTRUCT/SEG for masks).
    Dicom,
}

/// Guess the format from the path: `.nii`/`.nii.gz` → NIfTI, `.nrrd`/`.nhdr` → NRRD, a directory or
/// `.dcm` → DICOM.
pub fn detect_format(path: &Path) -> Result<Format, IoError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if path.is_dir() || name.ends_with(".dcm") {
        Ok(Format::Dicom)
    } else if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        Ok(Format::Nifti)
    } else if name.ends_with(".nrrd") || name.ends_with(".nhdr") {
        Ok(Format::Nrrd)
    } else {
        Err(IoError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

/// Read an image volume (NIfTI, NRRD or a DICOM series folder).
pub fn read_image(path: &Path) -> Result<Volume, IoError> {
    match detect_format(path)? {
        Format::Nifti => nifti::read_nifti(path),
        Format::Nrrd => nrrd::read_nrrd(path),
        Format::Dicom => {
            if path.is_dir() {
                dicom::read_dicom_series(path)
            } else {
                Err(IoError::Unsupported {
                    path: path.to_path_buf(),
                    what: "a single DICOM file as an image".into(),
                    hint: "pass the folder that holds the whole series".into(),
                })
            }
        }
    }
}

/// How to turn a stored mask into a binary ROI.
#[derive(Debug, Clone, Default)]
pub struct MaskSelection {
    /// Label value to keep for label-map masks (NIfTI/NRRD); `None` keeps every nonzero voxel.
    pub label: Option<i64>,
    /// ROI name for RTSTRUCT (exact match, then case-insensitive); `None` works if there is one ROI.
    pub roi: Option<String>,
}

/// Read a mask for `image`: a label map (NIfTI/NRRD, binarised with [`select_label`]) or a DICOM
/// RTSTRUCT rasterised onto the image grid. The result is checked to be on the image grid and
/// non-empty.
pub fn read_mask(
    path: &Path,
    image: &Geometry,
    dims: [usize; 3],
    sel: &MaskSelection,
) -> Result<Mask, IoError> {
    let mask = match detect_format(path)? {
        Format::Nifti => {
            // Straight to booleans: no f64 copy of a whole-CT label map.
            let (data, geometry) = nifti::read_nifti_mask(path, |v| label_matches(v, sel.label))?;
            check_same_grid(image, dims, &geometry, data.dim().into())?;
            Mask { data, geometry }
        }
        Format::Nrrd => {
            let labels = nrrd::read_nrrd(path)?;
            check_same_grid(image, dims, &labels.geometry, labels.data.dim().into())?;
            let data = select_label(&labels.data, sel.label);
            Mask {
                data,
                geometry: labels.geometry,
            }
        }
        Format::Dicom => {
            let file = if path.is_dir() {
                dicom::single_non_image_object(path)?
            } else {
                path.to_path_buf()
            };
            dicom::read_dicom_mask(&file, image, dims, sel.roi.as_deref())?
        }
    };
    if mask.count() == 0 {
        let detail = match sel.label {
            Some(l) => format!(" (no voxel has label {l})"),
            None => " (no nonzero voxel)".to_string(),
        };
        return Err(IoError::EmptyMask {
            path: path.to_path_buf(),
            detail,
        });
    }
    Ok(mask)
}

/// Binarise a label map: voxels equal to `label` (compared after rounding to the nearest integer,
/// since labels stored as floats may carry rounding noise), or every nonzero voxel when `label` is
/// `None`. NaN voxels are outside.
pub fn select_label(labels: &Array3<f64>, label: Option<i64>) -> Array3<bool> {
    labels.mapv(|v| label_matches(v, label))
}

/// The voxel rule of [`select_label`] for one value.
pub fn label_matches(v: f64, label: Option<i64>) -> bool {
    match label {
        Some(l) => v.is_finite() && v.round() as i64 == l,
        None => v.is_finite() && v != 0.0,
    }
}

/// Tolerances used by [`check_same_grid`]: spacing relative 1e-4, origin 1e-3 mm plus 1 % of the
/// smallest spacing (NIfTI stores float32 positions), direction cosines 1e-4.
pub const GRID_SPACING_RTOL: f64 = 1e-4;
pub const GRID_ORIGIN_ATOL_MM: f64 = 1e-3;
pub const GRID_DIRECTION_ATOL: f64 = 1e-4;

/// Check that a mask lies on the image grid (same size, spacing, origin and direction within
/// tolerances). The error lists every difference found, so the user can see what to fix.
pub fn check_same_grid(
    image: &Geometry,
    image_dims: [usize; 3],
    mask: &Geometry,
    mask_dims: [usize; 3],
) -> Result<(), IoError> {
    let mut diffs = Vec::new();
    if image_dims != mask_dims {
        diffs.push(format!(
            "size [z,y,x] image {image_dims:?} vs mask {mask_dims:?}"
        ));
    }
    let sp_bad = (0..3).any(|a| {
        let (s, t) = (image.spacing[a], mask.spacing[a]);
        (s - t).abs() > GRID_SPACING_RTOL * s.abs().max(t.abs())
    });
    if sp_bad {
        diffs.push(format!(
            "spacing [z,y,x] mm image {:?} vs mask {:?} (relative tolerance {GRID_SPACING_RTOL})",
            image.spacing, mask.spacing
        ));
    }
    let min_sp = image.spacing.iter().cloned().fold(f64::INFINITY, f64::min);
    let otol = GRID_ORIGIN_ATOL_MM + 0.01 * min_sp;
    if (0..3).any(|a| (image.origin[a] - mask.origin[a]).abs() > otol) {
        diffs.push(format!(
            "origin [z,y,x] mm image {:?} vs mask {:?} (tolerance {otol:.4} mm)",
            image.origin, mask.origin
        ));
    }
    let dir_bad = (0..3).any(|a| {
        (0..3).any(|c| (image.direction[a][c] - mask.direction[a][c]).abs() > GRID_DIRECTION_ATOL)
    });
    if dir_bad {
        diffs.push(format!(
            "direction cosines image {:?} vs mask {:?} (tolerance {GRID_DIRECTION_ATOL})",
            image.direction, mask.direction
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(IoError::GridMismatch { differences: diffs })
    }
}

/// Reject dimensions whose product exceeds [`MAX_VOXELS`] (or any zero dimension) before allocating.
pub(crate) fn check_dims(
    path: &Path,
    format: &'static str,
    dims: &[u64],
) -> Result<usize, IoError> {
    if dims.contains(&0) {
        return Err(IoError::malformed(
            path,
            format,
            format!("zero-length dimension in {dims:?}"),
        ));
    }
    let total: u128 = dims.iter().map(|&d| d as u128).product();
    if total > MAX_VOXELS as u128 {
        return Err(IoError::TooLarge {
            path: path.to_path_buf(),
            dims: dims.to_vec(),
            total,
            limit: MAX_VOXELS,
        });
    }
    Ok(total as usize)
}

/// Spacing (column norms) and unit direction rows from a 3x3 index-to-world matrix whose columns are
/// the world `[x, y, z]` steps along file axes i, j, k (fastest first). Returns geometry in the
/// crate's `[z, y, x]` = `[k, j, i]` order.
pub(crate) fn geometry_from_columns(
    path: &Path,
    format: &'static str,
    cols: [[f64; 3]; 3],
    origin_xyz: [f64; 3],
) -> Result<Geometry, IoError> {
    let mut spacing = [0.0; 3];
    let mut direction = [[0.0; 3]; 3];
    for (file_axis, col) in cols.iter().enumerate() {
        let n = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
        if !n.is_finite() || n <= 0.0 {
            return Err(IoError::malformed(
                path,
                format,
                format!("axis {file_axis} has zero or non-finite spacing {col:?}"),
            ));
        }
        let a = 2 - file_axis; // file axis i (x) -> array axis 2
        spacing[a] = n;
        direction[a] = [col[0] / n, col[1] / n, col[2] / n];
    }
    if origin_xyz.iter().any(|v| !v.is_finite()) {
        return Err(IoError::malformed(
            path,
            format,
            format!("non-finite origin {origin_xyz:?}"),
        ));
    }
    Ok(Geometry {
        spacing,
        origin: [origin_xyz[2], origin_xyz[1], origin_xyz[0]],
        direction,
    })
}

/// Build a `[z, y, x]` array from values stored x-fastest (NIfTI, NRRD, DICOM all store that way).
pub(crate) fn array_from_x_fastest(
    path: &Path,
    format: &'static str,
    dims_xyz: [usize; 3],
    values: Vec<f64>,
) -> Result<Array3<f64>, IoError> {
    let shape = (dims_xyz[2], dims_xyz[1], dims_xyz[0]);
    let n = values.len();
    Array3::from_shape_vec(shape, values).map_err(|_| {
        IoError::malformed(
            path,
            format,
            format!("{n} voxel values do not fill a {dims_xyz:?} (x,y,z) grid"),
        )
    })
}
