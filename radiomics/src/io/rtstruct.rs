//! DICOM RTSTRUCT → voxel mask: rasterise one named ROI's closed planar contours onto the image grid.
//!
//! Convention (IBSI image-processing chapter, "crossing number" algorithm): each contour point is
//! mapped into continuous image index space; a contour belongs to the slice whose index is nearest
//! (it must lie within [`SLICE_SNAP_TOL`] of it); per slice and row, a ray cast along +x crosses the
//! polygon edges of *all* contours of that slice, and a voxel centre is inside when it has passed an
//! odd number of crossings (even-odd rule, so nested contours become holes). Edges are half-open in
//! y (`y1 <= y < y2`) so a vertex lying exactly on a row is counted once. Voxel centres exactly on
//! an edge count as inside on the left edge and outside on the right edge, like the IBSI example
//! implementation; other tools can differ by about one boundary voxel per row.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ndarray::Array3;

use super::IoError;
use super::dicom::{get_floats, get_str};
use crate::volume::{Geometry, Mask};

const FMT: &str = "DICOM RTSTRUCT";

/// How far (in slice index units) a contour may sit from the nearest slice centre.
pub const SLICE_SNAP_TOL: f64 = 0.25;

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// ROI names in a structure set, in file order.
pub fn roi_names(obj: &InMemDicomObject) -> Vec<(i64, String)> {
    items(obj, tags::STRUCTURE_SET_ROI_SEQUENCE)
        .iter()
        .filter_map(|it| {
            let num = it
                .element_opt(tags::ROI_NUMBER)
                .ok()
                .flatten()?
                .to_int::<i64>()
                .ok()?;
            Some((num, get_str(it, tags::ROI_NAME).unwrap_or_default()))
        })
        .collect()
}

/// Rasterise the requested ROI of an RTSTRUCT onto the image grid.
pub fn read_rtstruct(
    path: &Path,
    obj: &InMemDicomObject,
    image: &Geometry,
    dims: [usize; 3],
    roi: Option<&str>,
) -> Result<Mask, IoError> {
    let rois = roi_names(obj);
    let available: Vec<String> = rois.iter().map(|(_, n)| n.clone()).collect();
    let not_found = || IoError::RoiNotFound {
        path: path.to_path_buf(),
        requested: roi.map(str::to_string),
        available: available.clone(),
    };
    let number = match roi {
        Some(name) => {
            if let Some((n, _)) = rois.iter().find(|(_, s)| s == name) {
                *n
            } else {
                let ci: Vec<_> = rois
                    .iter()
                    .filter(|(_, s)| s.eq_ignore_ascii_case(name))
                    .collect();
                match ci.as_slice() {
                    [(n, _)] => *n,
                    _ => return Err(not_found()),
                }
            }
        }
        None if rois.len() == 1 => rois[0].0,
        None => return Err(not_found()),
    };

    let contour_set = items(obj, tags::ROI_CONTOUR_SEQUENCE)
        .iter()
        .find(|it| {
            it.element_opt(tags::REFERENCED_ROI_NUMBER)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<i64>().ok())
                == Some(number)
        })
        .ok_or_else(|| {
            IoError::malformed(
                path,
                FMT,
                format!("ROI number {number} has no ROIContourSequence item"),
            )
        })?;

    // Polygons per slice, in (x, y) continuous index coordinates.
    let mut per_slice: BTreeMap<usize, Vec<Vec<[f64; 2]>>> = BTreeMap::new();
    for c in items(contour_set, tags::CONTOUR_SEQUENCE) {
        let kind = get_str(c, tags::CONTOUR_GEOMETRIC_TYPE).unwrap_or_default();
        if kind != "CLOSED_PLANAR" {
            continue; // POINT / OPEN_PLANAR / OPEN_NONPLANAR enclose no area
        }
        let Some(pts) = get_floats(c, tags::CONTOUR_DATA) else {
            return Err(IoError::malformed(path, FMT, "contour without ContourData"));
        };
        if pts.len() % 3 != 0 || pts.len() < 9 {
            return Err(IoError::malformed(
                path,
                FMT,
                format!("ContourData with {} values", pts.len()),
            ));
        }
        let mut poly = Vec::with_capacity(pts.len() / 3);
        let mut zs = Vec::with_capacity(pts.len() / 3);
        for p in pts.chunks_exact(3) {
            let idx = image
                .world_to_index([p[0], p[1], p[2]])
                .ok_or_else(|| IoError::malformed(path, FMT, "image geometry is singular"))?;
            zs.push(idx[0]);
            poly.push([idx[2], idx[1]]);
        }
        let zmean = zs.iter().sum::<f64>() / zs.len() as f64;
        let k = zmean.round();
        if zs.iter().any(|z| (z - k).abs() > SLICE_SNAP_TOL) {
            return Err(IoError::malformed(
                path,
                FMT,
                format!(
                    "a contour lies between slices (index {zmean:.2}); the RTSTRUCT does not match this image"
                ),
            ));
        }
        if k < 0.0 || k >= dims[0] as f64 {
            continue; // contour outside the image's slice range
        }
        per_slice.entry(k as usize).or_default().push(poly);
    }

    let mut data = Array3::from_elem((dims[0], dims[1], dims[2]), false);
    for (k, polys) in per_slice {
        rasterise_slice(&polys, dims[1], dims[2], |j, i| data[[k, j, i]] = true);
    }
    Ok(Mask {
        data,
        geometry: image.clone(),
    })
}

/// Even-odd fill of polygons (x, y in index units) on an `ny × nx` grid of voxel centres.
pub fn rasterise_slice(
    polys: &[Vec<[f64; 2]>],
    ny: usize,
    nx: usize,
    mut set: impl FnMut(usize, usize),
) {
    let mut xs = Vec::new();
    for j in 0..ny {
        let y = j as f64;
        xs.clear();
        for poly in polys {
            let n = poly.len();
            for e in 0..n {
                let (p, q) = (poly[e], poly[(e + 1) % n]);
                let (lo, hi) = if p[1] <= q[1] { (p, q) } else { (q, p) };
                if lo[1] <= y && y < hi[1] {
                    xs.push(lo[0] + (y - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1]));
                }
            }
        }
        xs.sort_by(|a, b| a.total_cmp(b));
        for pair in xs.chunks_exact(2) {
            // Voxel centres i with pair[0] <= i < pair[1] have passed an odd number of crossings.
            let start = pair[0].ceil().max(0.0);
            let end = pair[1].ceil().min(nx as f64);
            let mut i = start;
            while i < end {
                set(j, i as usize);
                i += 1.0;
            }
        }
    }
}
