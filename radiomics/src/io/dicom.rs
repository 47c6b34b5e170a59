//! DICOM readers: a CT/MR/PET image series folder → [`Volume`]; RTSTRUCT (and, not yet, SEG) → [`Mask`].
//!
//! Series conventions: slices are sorted by the projection of ImagePositionPatient onto the slice
//! normal (row cosine × column cosine); slice spacing is the spacing of those projections, which
//! must be uniform (relative tolerance [`SLICE_SPACING_RTOL`]); a stack whose slice positions do not
//! move along the normal (gantry tilt / sheared stack) is rejected with a clear error. Stored values
//! are converted with RescaleSlope/RescaleIntercept (HU for CT). World frame is DICOM LPS.
//! Array axes: `[slice, row, column]` = `[z, y, x]`; `direction[1]` is the column cosine (the way
//! rows advance), `direction[2]` the row cosine (the way columns advance).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use super::{IoError, check_dims};
use crate::volume::{Geometry, Mask, Volume};

const FMT: &str = "DICOM";

/// Largest allowed relative deviation of any slice gap from the median gap.
pub const SLICE_SPACING_RTOL: f64 = 0.01;
/// Largest allowed in-plane drift (mm) of successive slice positions (gantry tilt check).
pub const TILT_TOL_MM: f64 = 0.01;

fn open(path: &Path) -> Result<DefaultDicomObject, IoError> {
    OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| IoError::malformed(path, FMT, e.to_string()))
}

fn open_header(path: &Path) -> Result<DefaultDicomObject, IoError> {
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| IoError::malformed(path, FMT, e.to_string()))
}

pub(crate) fn get_str(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').to_string())
}

pub(crate) fn get_floats(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
}

fn req_floats(
    path: &Path,
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &str,
    n: usize,
) -> Result<Vec<f64>, IoError> {
    match get_floats(obj, tag) {
        Some(v) if v.len() == n && v.iter().all(|x| x.is_finite()) => Ok(v),
        Some(v) if v.len() == n => Err(IoError::malformed(
            path,
            FMT,
            format!("{name} {v:?} holds a non-finite number"),
        )),
        Some(v) => Err(IoError::malformed(
            path,
            FMT,
            format!("{name} has {} values, expected {n}", v.len()),
        )),
        None => Err(IoError::malformed(path, FMT, format!("missing {name}"))),
    }
}

fn modality(obj: &InMemDicomObject) -> String {
    get_str(obj, tags::MODALITY)
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| IoError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| IoError::io(dir, e))?;
        let p = entry.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

struct Slice {
    path: PathBuf,
    pos: [f64; 3],
    proj: f64,
}

/// Read a folder holding one DICOM image series. Non-image objects (RTSTRUCT, SEG, …) and
/// non-DICOM files in the folder are skipped; several series in one folder is an error.
pub fn read_dicom_series(dir: &Path) -> Result<Volume, IoError> {
    let mut headers = Vec::new();
    let mut skipped: Option<(usize, IoError)> = None;
    for p in dicom_files(dir)? {
        // Files that are not DICOM at all (README, DICOMDIR quirks) are skipped; the first reason
        // is kept for the error below in case nothing readable is left.
        let obj = match open_header(&p) {
            Ok(obj) => obj,
            Err(e) => {
                let (n, _) = skipped.get_or_insert((0, e));
                *n += 1;
                continue;
            }
        };
        if get_floats(&obj, tags::IMAGE_POSITION_PATIENT).is_none() {
            continue; // not an image slice (RTSTRUCT, SEG, SR, ...)
        }
        headers.push((p, obj));
    }
    if headers.is_empty() {
        let why = match skipped {
            Some((n, e)) => format!("; {n} file(s) could not be read as DICOM, e.g. {e}"),
            None => String::new(),
        };
        return Err(IoError::malformed(
            dir,
            FMT,
            format!("no DICOM image slices (with ImagePositionPatient) in this folder{why}"),
        ));
    }
    let mut series: Vec<String> = headers
        .iter()
        .map(|(_, o)| get_str(o, tags::SERIES_INSTANCE_UID).unwrap_or_default())
        .collect();
    series.sort();
    series.dedup();
    if series.len() > 1 {
        return Err(IoError::Unsupported {
            path: dir.to_path_buf(),
            what: format!("{} image series in one folder ({series:?})", series.len()),
            hint: "put each series in its own folder".into(),
        });
    }
    let (p0, first) = &headers[0];
    let iop = req_floats(
        p0,
        first,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
        6,
    )?;
    let ps = req_floats(p0, first, tags::PIXEL_SPACING, "PixelSpacing", 2)?;
    let rows = first
        .element(tags::ROWS)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or_else(|| IoError::malformed(p0, FMT, "missing Rows"))? as usize;
    let cols = first
        .element(tags::COLUMNS)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or_else(|| IoError::malformed(p0, FMT, "missing Columns"))? as usize;
    let row_dir = [iop[0], iop[1], iop[2]];
    let col_dir = [iop[3], iop[4], iop[5]];
    let normal = cross(row_dir, col_dir);
    let nn = norm(normal);
    if !(0.9..1.1).contains(&nn) || norm(row_dir) < 0.9 || norm(col_dir) < 0.9 {
        return Err(IoError::malformed(
            p0,
            FMT,
            format!("ImageOrientationPatient {iop:?} is not two orthonormal vectors"),
        ));
    }
    let normal = [normal[0] / nn, normal[1] / nn, normal[2] / nn];

    let mut slices = Vec::with_capacity(headers.len());
    for (p, o) in &headers {
        let pos = req_floats(
            p,
            o,
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient",
            3,
        )?;
        let iop_k = req_floats(
            p,
            o,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
            6,
        )?;
        if iop_k.iter().zip(&iop).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(IoError::Unsupported {
                path: p.clone(),
                what: "slices with different orientations in one series".into(),
                hint: "the series must be a single stack of parallel slices".into(),
            });
        }
        let ps_k = req_floats(p, o, tags::PIXEL_SPACING, "PixelSpacing", 2)?;
        if (ps_k[0] - ps[0]).abs() > 1e-4 || (ps_k[1] - ps[1]).abs() > 1e-4 {
            return Err(IoError::malformed(
                p,
                FMT,
                format!("PixelSpacing {ps_k:?} differs from the first slice's {ps:?}"),
            ));
        }
        let pos = [pos[0], pos[1], pos[2]];
        slices.push(Slice {
            path: p.clone(),
            pos,
            proj: dot(pos, normal),
        });
    }
    slices.sort_by(|a, b| a.proj.total_cmp(&b.proj));
    let nz = slices.len();
    check_dims(dir, FMT, &[cols as u64, rows as u64, nz as u64])?;

    // Slice spacing: uniform along the normal; positions must not drift in-plane (gantry tilt).
    let dz = if nz > 1 {
        let mut gaps: Vec<f64> = slices.windows(2).map(|w| w[1].proj - w[0].proj).collect();
        if let Some(i) = gaps.iter().position(|g| g.abs() < 1e-6) {
            return Err(IoError::malformed(
                &slices[i + 1].path,
                FMT,
                "two slices share the same position (duplicate slice or mixed series)",
            ));
        }
        for w in slices.windows(2) {
            let d = sub(w[1].pos, w[0].pos);
            let along = dot(d, normal);
            let inplane = sub(d, [normal[0] * along, normal[1] * along, normal[2] * along]);
            if norm(inplane) > TILT_TOL_MM + 1e-3 * along.abs() {
                return Err(IoError::Unsupported {
                    path: w[1].path.clone(),
                    what: format!(
                        "a tilted or sheared stack (slice positions drift {:.3} mm in-plane per slice; gantry tilt?)",
                        norm(inplane)
                    ),
                    hint: "resample the series onto an untilted grid first".into(),
                });
            }
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        for (i, g) in gaps.iter_mut().enumerate() {
            if (*g - median).abs() > SLICE_SPACING_RTOL * median {
                return Err(IoError::Unsupported {
                    path: slices[i + 1].path.clone(),
                    what: format!(
                        "non-uniform slice spacing ({g:.4} mm here vs {median:.4} mm typical; missing slice?)"
                    ),
                    hint: "the series must have evenly spaced slices".into(),
                });
            }
        }
        median
    } else {
        first
            .element_opt(tags::SLICE_THICKNESS)
            .ok()
            .flatten()
            .and_then(|e| e.to_float64().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(1.0)
    };

    // Pixel data, stored values → rescaled (modality LUT applied here, by us).
    // Reserved once the first slice has shown that its pixel data really fills rows × cols, so a
    // header alone cannot make us reserve gigabytes.
    let mut values = Vec::new();
    for s in &slices {
        let obj = open(&s.path)?;
        let r = obj
            .element(tags::ROWS)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0) as usize;
        let c = obj
            .element(tags::COLUMNS)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0) as usize;
        if r != rows || c != cols {
            return Err(IoError::malformed(
                &s.path,
                FMT,
                format!("slice is {r}x{c}, first slice is {rows}x{cols}"),
            ));
        }
        let slope = get_floats(&obj, tags::RESCALE_SLOPE)
            .and_then(|v| v.first().copied())
            .unwrap_or(1.0);
        let inter = get_floats(&obj, tags::RESCALE_INTERCEPT)
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        let decoded = obj.decode_pixel_data().map_err(|e| {
            IoError::malformed(&s.path, FMT, format!("cannot decode pixel data: {e}"))
        })?;
        let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        let raw: Vec<f64> = decoded.to_vec_with_options::<f64>(&opts).map_err(|e| {
            IoError::malformed(&s.path, FMT, format!("cannot convert pixel data: {e}"))
        })?;
        if raw.len() != rows * cols {
            return Err(IoError::Unsupported {
                path: s.path.clone(),
                what: format!(
                    "{} pixel values for a {rows}x{cols} slice (multi-frame or colour)",
                    raw.len()
                ),
                hint: "only single-frame greyscale slices are read".into(),
            });
        }
        if values.is_empty() {
            values.reserve_exact(rows * cols * nz);
        }
        values.extend(raw.into_iter().map(|v| v * slope + inter));
    }

    let spacing = [dz, ps[0], ps[1]]; // PixelSpacing = [row spacing (y), column spacing (x)]
    let geometry = Geometry {
        spacing,
        origin: [slices[0].pos[2], slices[0].pos[1], slices[0].pos[0]],
        direction: [normal, col_dir, row_dir],
    };
    let data = ndarray::Array3::from_shape_vec((nz, rows, cols), values).map_err(|e| {
        IoError::malformed(dir, FMT, format!("pixel data does not fill the grid: {e}"))
    })?;
    Ok(Volume { data, geometry })
}

/// The single non-image DICOM object (RTSTRUCT or SEG) in a folder, for mask folders.
pub fn single_non_image_object(dir: &Path) -> Result<PathBuf, IoError> {
    let mut found = Vec::new();
    for p in dicom_files(dir)? {
        let Ok(obj) = open_header(&p) else { continue };
        let m = modality(&obj);
        if m == "RTSTRUCT" || m == "SEG" {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(IoError::malformed(
            dir,
            FMT,
            "no RTSTRUCT or SEG object in this folder",
        )),
        n => Err(IoError::Unsupported {
            path: dir.to_path_buf(),
            what: format!("{n} RTSTRUCT/SEG objects in one folder ({found:?})"),
            hint: "pass the mask file itself".into(),
        }),
    }
}

/// Read a DICOM mask object (RTSTRUCT rasterised onto the image grid; SEG not yet supported).
pub fn read_dicom_mask(
    file: &Path,
    image: &Geometry,
    dims: [usize; 3],
    roi: Option<&str>,
) -> Result<Mask, IoError> {
    let obj = open(file)?;
    match modality(&obj).as_str() {
        "RTSTRUCT" => super::rtstruct::read_rtstruct(file, &obj, image, dims, roi),
        "SEG" => Err(IoError::Unsupported {
            path: file.to_path_buf(),
            what: "DICOM-SEG masks".into(),
            hint: "convert the segmentation to NIfTI/NRRD, or export it as RTSTRUCT".into(),
        }),
        other => Err(IoError::Unsupported {
            path: file.to_path_buf(),
            what: format!("DICOM modality {other:?} as a mask"),
            hint: "masks must be RTSTRUCT, NIfTI or NRRD".into(),
        }),
    }
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}
pub(crate) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
