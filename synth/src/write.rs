//! Writes a planned cohort to disk: NIfTI images and masks, per-site manifests and clinical tables,
//! and `cohort.json` (the only module of this crate that touches files).
//!
//! Layout (paths inside a site folder are relative to that folder, as the manifest stores them):
//! ```text
//! DIR/cohort.json                      generator parameters, seed, per-site scanner character
//! DIR/<site>/lesions.csv               patient_id,lesion_id,image,mask
//! DIR/<site>/clinical.csv              patient_id,site,response,pfs_months,pfs_event,age,sex,ecog,
//!                                      grade,ki67,months_dx_to_tx,met_pattern,prior_surgery
//! DIR/<site>/images/<patient>.nii.gz   CT, int16 HU
//! DIR/<site>/masks/<patient>_L<k>.nii.gz  one binary mask per lesion (uint8 0/1)
//! ```
//! NIfTI conventions: NIfTI-1 single file, little endian, gzip (fast level, mtime 0 so identical
//! inputs give identical bytes); `sform_code` = `qform_code` = 1 (scanner), both encoding the same
//! index-to-world matrix: the image's LPS geometry converted to NIfTI's RAS by negating x and y.
//! `pixdim[1..=3]` = spacing x, y, z; `xyzt_units` = mm. The generator's spacings and origins are
//! exact in float32, so readers recover the in-memory [`Geometry`] exactly.

use std::fs;
use std::path::Path;

use nifti::writer::WriterOptions;
use nifti::{Endianness, NiftiHeader};
use radiomics::{Geometry, Mask, Volume};
use rayon::prelude::*;
use serde::Serialize;

use crate::clinical::CLINICAL_COLUMNS;
use crate::error::SynthError;
use crate::plan::{CohortPlan, Scanner};
use crate::render::render_patient;

/// Header of `lesions.csv`.
pub const MANIFEST_COLUMNS: [&str; 4] = ["patient_id", "lesion_id", "image", "mask"];

/// One row of a site's `lesions.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestRow {
    pub patient_id: String,
    pub lesion_id: String,
    /// Image path relative to the site folder.
    pub image: String,
    /// Mask path relative to the site folder.
    pub mask: String,
}

/// Image path of a patient, relative to its site folder.
pub fn image_path(patient_id: &str) -> String {
    format!("images/{patient_id}.nii.gz")
}

/// Mask path of a lesion, relative to its site folder.
pub fn mask_path(patient_id: &str, lesion_id: &str) -> String {
    format!("masks/{patient_id}_{lesion_id}.nii.gz")
}

/// The manifest rows of site `site` (patients in id order, lesions in order). Pure.
pub fn lesion_manifest(plan: &CohortPlan, site: usize) -> Vec<ManifestRow> {
    plan.sites[site]
        .patients
        .iter()
        .flat_map(|&i| {
            let p = &plan.patients[i];
            p.lesions.iter().map(move |l| ManifestRow {
                patient_id: p.id().to_string(),
                lesion_id: l.id.clone(),
                image: image_path(p.id()),
                mask: mask_path(p.id(), &l.id),
            })
        })
        .collect()
}

/// Options of [`write_cohort`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Write into a non-empty folder, overwriting files of the same name (other files are left alone).
    pub force: bool,
}

/// What [`write_cohort`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteSummary {
    pub n_sites: usize,
    pub n_patients: usize,
    pub n_lesions: usize,
    pub n_files: usize,
    pub bytes: u64,
}

/// Render and write every patient of `plan` under `out`, plus manifests, clinical tables and
/// `cohort.json`. Patients are rendered in parallel (rayon); each patient's bytes depend only on the
/// plan, so the output is identical for any thread count.
pub fn write_cohort(
    plan: &CohortPlan,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteSummary, SynthError> {
    if out.exists() {
        let mut entries = fs::read_dir(out).map_err(|e| SynthError::io(out, e))?;
        if entries.next().is_some() && !opts.force {
            return Err(SynthError::OutputNotEmpty {
                path: out.to_path_buf(),
            });
        }
    }
    for s in &plan.sites {
        for sub in ["images", "masks"] {
            let d = out.join(&s.id).join(sub);
            fs::create_dir_all(&d).map_err(|e| SynthError::io(&d, e))?;
        }
    }

    let per_patient: Vec<Result<(u64, usize), SynthError>> = (0..plan.patients.len())
        .into_par_iter()
        .map(|i| write_patient(plan, i, out))
        .collect();
    let mut bytes = 0;
    let mut n_files = 0;
    for r in per_patient {
        let (b, f) = r?;
        bytes += b;
        n_files += f;
    }

    for (s, site) in plan.sites.iter().enumerate() {
        let dir = out.join(&site.id);
        let manifest = dir.join("lesions.csv");
        let rows: Vec<Vec<String>> = lesion_manifest(plan, s)
            .into_iter()
            .map(|r| vec![r.patient_id, r.lesion_id, r.image, r.mask])
            .collect();
        bytes += write_csv(&manifest, &MANIFEST_COLUMNS, &rows)?;
        let clinical = dir.join("clinical.csv");
        let rows: Vec<Vec<String>> = site
            .patients
            .iter()
            .map(|&i| plan.patients[i].clinical.csv_row())
            .collect();
        bytes += write_csv(&clinical, &CLINICAL_COLUMNS, &rows)?;
        n_files += 2;
    }

    let json = out.join("cohort.json");
    let text =
        serde_json::to_string_pretty(&CohortJson::new(plan)).map_err(|e| SynthError::Table {
            path: json.clone(),
            message: e.to_string(),
        })? + "\n";
    fs::write(&json, &text).map_err(|e| SynthError::io(&json, e))?;
    bytes += text.len() as u64;
    n_files += 1;

    Ok(WriteSummary {
        n_sites: plan.sites.len(),
        n_patients: plan.patients.len(),
        n_lesions: plan.n_lesions(),
        n_files,
        bytes,
    })
}

/// Render one patient and write its image and lesion masks; returns (bytes, files).
fn write_patient(plan: &CohortPlan, i: usize, out: &Path) -> Result<(u64, usize), SynthError> {
    let p = &plan.patients[i];
    let site_dir = out.join(&plan.sites[p.site].id);
    let img = render_patient(plan, i);
    let mut paths = vec![site_dir.join(image_path(p.id()))];
    write_ct(
        &paths[0],
        &img.ct,
        &format!("fedrad synth seed {} {}", plan.params.seed, p.id()),
    )?;
    for (l, m) in p.lesions.iter().zip(&img.lesions) {
        let path = site_dir.join(mask_path(p.id(), &l.id));
        write_mask(&path, m, &format!("fedrad synth {} {} mask", p.id(), l.id))?;
        paths.push(path);
    }
    let mut bytes = 0;
    for path in &paths {
        bytes += fs::metadata(path)
            .map_err(|e| SynthError::io(path, e))?
            .len();
    }
    Ok((bytes, paths.len()))
}

fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<u64, SynthError> {
    let err = |e: csv::Error| SynthError::Table {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(err)?;
    for r in rows {
        w.write_record(r).map_err(err)?;
    }
    let buf = w.into_inner().map_err(|e| SynthError::Table {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    fs::write(path, &buf).map_err(|e| SynthError::io(path, e))?;
    Ok(buf.len() as u64)
}

/// `cohort.json`: parameters, seed, layout and each site's scanner.
#[derive(Debug, Serialize)]
struct CohortJson<'a> {
    generator: &'static str,
    generator_version: &'static str,
    seed: u64,
    n_sites: usize,
    n_patients: usize,
    n_lesions: usize,
    layout: Layout,
    params: &'a crate::params::CohortParams,
    sites: Vec<SiteJson<'a>>,
}

#[derive(Debug, Serialize)]
struct Layout {
    manifest: &'static str,
    clinical: &'static str,
    image: &'static str,
    mask: &'static str,
    paths: &'static str,
}

#[derive(Debug, Serialize)]
struct SiteJson<'a> {
    id: &'a str,
    n_patients: usize,
    n_lesions: usize,
    dims_zyx: [usize; 3],
    scanner: &'a Scanner,
}

impl<'a> CohortJson<'a> {
    fn new(plan: &'a CohortPlan) -> Self {
        Self {
            generator: "fedrad synth",
            generator_version: env!("CARGO_PKG_VERSION"),
            seed: plan.params.seed,
            n_sites: plan.sites.len(),
            n_patients: plan.patients.len(),
            n_lesions: plan.n_lesions(),
            layout: Layout {
                manifest: "<site>/lesions.csv (patient_id,lesion_id,image,mask)",
                clinical: "<site>/clinical.csv",
                image: "<site>/images/<patient>.nii.gz (int16 HU)",
                mask: "<site>/masks/<patient>_L<k>.nii.gz (one binary uint8 mask per lesion)",
                paths: "manifest paths are relative to the manifest's folder",
            },
            params: &plan.params,
            sites: plan
                .sites
                .iter()
                .map(|s| SiteJson {
                    id: &s.id,
                    n_patients: s.patients.len(),
                    n_lesions: s
                        .patients
                        .iter()
                        .map(|&i| plan.patients[i].lesions.len())
                        .sum(),
                    dims_zyx: s.dims,
                    scanner: &s.scanner,
                })
                .collect(),
        }
    }
}

/// Write a CT volume as int16 NIfTI (values are rounded and clamped to the int16 range).
pub fn write_ct(path: &Path, ct: &Volume, description: &str) -> Result<(), SynthError> {
    let header = nifti_header(path, &ct.geometry, description)?;
    let data = ct
        .data
        .mapv(|v| v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16);
    // The nifti crate takes arrays indexed [x, y, z] (it writes them x fastest): pass the transpose.
    WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&data.t())
        .map_err(|e| nifti_err(path, e))
}

/// Write a binary mask as uint8 NIfTI (1 inside, 0 outside).
pub fn write_mask(path: &Path, mask: &Mask, description: &str) -> Result<(), SynthError> {
    let header = nifti_header(path, &mask.geometry, description)?;
    let data = mask.data.mapv(u8::from);
    WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&data.t())
        .map_err(|e| nifti_err(path, e))
}

fn nifti_err(path: &Path, e: nifti::NiftiError) -> SynthError {
    SynthError::Nifti {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// NIfTI-1 header fields for `g` (dim, datatype and bitpix are filled in by the writer).
pub fn nifti_header(
    path: &Path,
    g: &Geometry,
    description: &str,
) -> Result<NiftiHeader, SynthError> {
    let geo_err = |problem: String| SynthError::Geometry {
        path: path.to_path_buf(),
        problem,
    };
    // Index-to-world columns (RAS) for file axes i, j, k = array axes x, y, z = [2, 1, 0].
    let mut cols = [[0.0f64; 3]; 3];
    let mut spacing = [0.0f64; 3];
    for (file_axis, arr_axis) in [2usize, 1, 0].into_iter().enumerate() {
        let d = g.direction[arr_axis];
        let s = g.spacing[arr_axis];
        if !(s > 0.0 && s.is_finite()) {
            return Err(geo_err(format!("spacing {:?} is not positive", g.spacing)));
        }
        spacing[file_axis] = s;
        // `+ 0.0` turns the -0.0 of negated zeros into +0.0 (tidier headers, same meaning).
        cols[file_axis] = [-d[0] * s + 0.0, -d[1] * s + 0.0, d[2] * s + 0.0];
    }
    let o = g.origin_xyz();
    let origin_ras = [-o[0] + 0.0, -o[1] + 0.0, o[2] + 0.0];

    // Rotation (unit columns), made proper with qfac = -1 if needed, as the qform requires.
    let mut r = [[0.0f64; 3]; 3]; // r[row][col]
    for c in 0..3 {
        for row in 0..3 {
            r[row][c] = cols[c][row] / spacing[c];
        }
    }
    for a in 0..3 {
        for b in 0..3 {
            let dot: f64 = (0..3).map(|k| r[k][a] * r[k][b]).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            if (dot - want).abs() > 1e-6 {
                return Err(geo_err(format!(
                    "direction cosines {:?} are not orthonormal",
                    g.direction
                )));
            }
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let [b, c, d] = quaternion_bcd(&r);

    let mut h = NiftiHeader {
        endianness: Endianness::Little,
        xyzt_units: 2, // NIFTI_UNITS_MM
        qform_code: 1, // NIFTI_XFORM_SCANNER_ANAT
        sform_code: 1,
        quatern_b: b as f32,
        quatern_c: c as f32,
        quatern_d: d as f32,
        quatern_x: origin_ras[0] as f32,
        quatern_y: origin_ras[1] as f32,
        quatern_z: origin_ras[2] as f32,
        ..NiftiHeader::default()
    };
    h.pixdim = [
        qfac as f32,
        spacing[0] as f32,
        spacing[1] as f32,
        spacing[2] as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    let row = |k: usize| -> [f32; 4] {
        [
            cols[0][k] as f32,
            cols[1][k] as f32,
            cols[2][k] as f32,
            origin_ras[k] as f32,
        ]
    };
    h.srow_x = row(0);
    h.srow_y = row(1);
    h.srow_z = row(2);
    let mut descrip = description.as_bytes().to_vec();
    descrip.truncate(79);
    descrip.resize(80, 0);
    h.descrip = descrip;
    Ok(h)
}

/// Quaternion (b, c, d) of a proper rotation matrix `r[row][col]`, with a ≥ 0 — the algorithm of
/// `nifti_mat44_to_quatern` in nifti1_io.c.
fn quaternion_bcd(r: &[[f64; 3]; 3]) -> [f64; 3] {
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let a = r11 + r22 + r33 + 1.0;
    let (a, b, c, d) = if a > 0.5 {
        let a = 0.5 * a.sqrt();
        (
            a,
            0.25 * (r32 - r23) / a,
            0.25 * (r13 - r31) / a,
            0.25 * (r21 - r12) / a,
        )
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (
                0.25 * (r32 - r23) / b,
                b,
                0.25 * (r12 + r21) / b,
                0.25 * (r13 + r31) / b,
            )
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (
                0.25 * (r13 - r31) / c,
                0.25 * (r12 + r21) / c,
                c,
                0.25 * (r23 + r32) / c,
            )
        } else {
            let d = 0.5 * zd.sqrt();
            (
                0.25 * (r21 - r12) / d,
                0.25 * (r13 + r31) / d,
                0.25 * (r23 + r32) / d,
                d,
            )
        }
    };
    if a < 0.0 { [-b, -c, -d] } else { [b, c, d] }
}
