//! `site-agent extract`: IBSI feature extraction at the site, for one image + mask or for a whole
//! cohort listed in a manifest (parallel, progress bar, per-lesion errors, one row per patient).
//!
//! Output layouts:
//! * one lesion: CSV `feature,ibsi_code,value`, one row per feature, tags as in
//!   `shared/ibsi/reference_values.csv` (registry order);
//! * a manifest: CSV `patient_id,n_lesions,<tag>…`, one row per patient (manifest order), the
//!   lesions aggregated by [`radiomics::cohort::aggregate_patient`]; failures go to stderr and to
//!   `<out>.errors.csv` (`patient_id,lesion_id,reason`), and the run goes on.
//!
//! Values are written with Rust's shortest round-trip formatting (`{}` of f64: parsing the text
//! gives back the same f64); undefined features are `NaN`. Output files are written to a temporary
//! name and renamed, so a failed run never leaves a partial table.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use rayon::prelude::*;

use radiomics::cohort::{AggregateError, LesionAggregation, aggregate_patient};
use radiomics::extract::FeatureValue;
use radiomics::io::{self, IoError, MaskSelection};
use radiomics::pipeline::{PipelineError, Settings, extract_roi};
use radiomics::preprocess::Interpolation;
use radiomics::{Mask, Volume};

/// `site-agent extract` arguments.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXTRACT_HELP)]
pub struct ExtractArgs {
    /// Image: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a DICOM series folder.
    #[arg(long, conflicts_with = "manifest", requires = "mask")]
    pub image: Option<PathBuf>,
    /// Mask: label map on the image grid (NIfTI/NRRD) or a DICOM RTSTRUCT file (with --roi).
    #[arg(long, conflicts_with = "manifest", requires = "image")]
    pub mask: Option<PathBuf>,
    /// Keep only voxels with this label (default: every nonzero voxel).
    #[arg(long, value_name = "N")]
    pub mask_label: Option<i64>,
    /// RTSTRUCT ROI name (needed when the RTSTRUCT holds several ROIs).
    #[arg(long, value_name = "NAME")]
    pub roi: Option<String>,
    /// A cohort: CSV with header `patient_id,lesion_id,image,mask[,mask_label][,roi]`, paths
    /// relative to the manifest. Writes one row per patient.
    #[arg(long, value_name = "CSV")]
    pub manifest: Option<PathBuf>,
    /// Settings preset: ibsi-digital, ibsi-a … ibsi-e (IBSI 1 CT phantom configurations) or paper
    /// (1 mm isotropic trilinear, [-1000, 3000] HU, bin width 10 HU, 3D). Flags below override it.
    #[arg(long, default_value = "paper", value_parser = clap::builder::PossibleValuesParser::new(Settings::PRESETS))]
    pub preset: String,
    /// Isotropic target spacing in mm (in-plane only for the 2D presets ibsi-a/ibsi-b).
    #[arg(long, value_name = "MM", allow_negative_numbers = true)]
    pub spacing: Option<f64>,
    /// Image interpolation (the mask is always trilinear with a 0.5 threshold).
    #[arg(long, value_parser = ["none", "nearest", "trilinear", "tricubic", "lagrange"])]
    pub interpolation: Option<String>,
    /// Re-segmentation range `LO,HI` in image units (HI may be `inf`), or `none`.
    #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
    pub resegment: Option<String>,
    /// Outlier re-segmentation: keep mean ± K standard deviations (`none` to disable).
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    pub outlier_sigma: Option<String>,
    /// Fixed bin size (image units, e.g. HU) for the histogram and texture, from the lower
    /// re-segmentation bound.
    #[arg(
        long,
        value_name = "W",
        conflicts_with = "bin_count",
        allow_negative_numbers = true
    )]
    pub bin_width: Option<f64>,
    /// Fixed bin number over the ROI range.
    #[arg(long, value_name = "N")]
    pub bin_count: Option<u32>,
    /// Patient-level aggregation of lesion features (manifest mode).
    #[arg(long, default_value = "mean", value_parser = ["mean", "volume-weighted", "largest"])]
    pub lesion_aggregation: String,
    /// Output CSV (default: standard output for one lesion; required with --manifest).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Worker threads for --manifest (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

const EXTRACT_HELP: &str = "\
Examples:
  # one lesion, the study's settings, CSV to stdout
  site-agent extract --image ct.nii.gz --mask gtv.nii.gz
  # label 2 of a label map, IBSI CT configuration C, to a file
  site-agent extract --image ct.nii.gz --mask labels.nii.gz --mask-label 2 --preset ibsi-c --out f.csv
  # DICOM series + RTSTRUCT
  site-agent extract --image dicom/CT/ --mask dicom/RS.dcm --roi GTV-1 --out f.csv
  # the paper preset with Lagrange interpolation (as LIFEx) and 25 HU bins
  site-agent extract --image ct.nii.gz --mask gtv.nii.gz --interpolation lagrange --bin-width 25
  # a cohort: one row per patient, lesions averaged
  site-agent extract --manifest lesions.csv --preset paper --out features.csv

Manifest (paths relative to the manifest; mask_label and roi columns optional):
  patient_id,lesion_id,image,mask,mask_label
  P001,L1,P001/ct.nii.gz,P001/labels.nii.gz,1
  P001,L2,P001/ct.nii.gz,P001/labels.nii.gz,2

Output: one lesion -> feature,ibsi_code,value (IBSI reference tags); a manifest ->
patient_id,n_lesions,<one column per tag>, plus <out>.errors.csv listing failed lesions.
A one-voxel ROI is computed: defined features get values, undefined ones (e.g. GLCM without
neighbour pairs) are NaN. DICOM-SEG masks are not supported yet.";

/// Why one lesion could not be extracted (each names the file and what to fix).
#[derive(Debug, thiserror::Error)]
pub enum LesionError {
    #[error("{0}")]
    Io(#[from] IoError),
    /// The image shared with another lesion of the manifest could not be read (reason given there).
    #[error("{0}")]
    SharedImage(String),
    #[error("{}: {source}", image.display())]
    Pipeline {
        image: PathBuf,
        #[source]
        source: PipelineError,
    },
}

/// Errors of the `extract` command as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ExtractCmdError {
    #[error("invalid option: {0}")]
    Usage(String),
    #[error(transparent)]
    Lesion(#[from] LesionError),
    #[error("{path}: {problem}")]
    Manifest { path: PathBuf, problem: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no lesion of the {total} in the manifest could be extracted; see {errors} for the reasons"
    )]
    NothingExtracted { total: usize, errors: PathBuf },
    #[error("patient {patient}: {source}")]
    Aggregate {
        patient: String,
        #[source]
        source: AggregateError,
    },
}

fn usage(msg: impl Into<String>) -> ExtractCmdError {
    ExtractCmdError::Usage(msg.into())
}

/// Settings from a preset plus the override flags.
pub fn build_settings(a: &ExtractArgs) -> Result<Settings, ExtractCmdError> {
    let mut s = Settings::preset(&a.preset).ok_or_else(|| {
        usage(format!(
            "unknown preset {:?}; choose one of {}",
            a.preset,
            Settings::PRESETS.join(", ")
        ))
    })?;
    if let Some(mm) = a.spacing {
        if !(mm.is_finite() && mm > 0.0) {
            return Err(usage(format!(
                "--spacing {mm}: must be a positive number of mm"
            )));
        }
        s.set_spacing(mm);
    }
    if let Some(i) = &a.interpolation {
        s.preprocessing.interpolation = match i.as_str() {
            "none" => Interpolation::None,
            "nearest" => Interpolation::Nearest,
            "trilinear" => Interpolation::Linear,
            "tricubic" => Interpolation::CubicSpline,
            "lagrange" => Interpolation::Lagrange,
            other => return Err(usage(format!("--interpolation {other:?} is not known"))),
        };
        if s.preprocessing.interpolation != Interpolation::None && s.preprocessing.spacing.is_none()
        {
            return Err(usage(format!(
                "--interpolation {i} needs a target spacing: add --spacing MM (preset {} keeps the image grid)",
                a.preset
            )));
        }
    }
    if let Some(r) = &a.resegment {
        s.set_resegmentation(parse_range(r)?);
    }
    if let Some(k) = &a.outlier_sigma {
        s.preprocessing.outlier_sigma = if k.eq_ignore_ascii_case("none") {
            None
        } else {
            let k: f64 = k
                .parse()
                .map_err(|_| usage(format!("--outlier-sigma {k:?}: expected a number or none")))?;
            if !(k.is_finite() && k > 0.0) {
                return Err(usage(format!("--outlier-sigma {k}: must be positive")));
            }
            Some(k)
        };
    }
    if let Some(w) = a.bin_width {
        if !(w.is_finite() && w > 0.0) {
            return Err(usage(format!("--bin-width {w}: must be positive")));
        }
        s.set_bin_width(w);
    }
    if let Some(n) = a.bin_count {
        if n == 0 {
            return Err(usage("--bin-count 0: need at least one bin"));
        }
        s.set_bin_count(n);
    }
    Ok(s)
}

/// `LO,HI` (HI may be `inf`) or `none`.
fn parse_range(r: &str) -> Result<Option<(f64, f64)>, ExtractCmdError> {
    if r.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        usage(format!(
            "--resegment {r:?}: expected LO,HI (e.g. -1000,3000), LO,inf or none"
        ))
    };
    let (lo, hi) = r.split_once(',').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    if lo.is_nan() || hi.is_nan() || lo > hi || lo == f64::INFINITY {
        return Err(bad());
    }
    Ok(Some((lo, hi)))
}

/// Read one image + mask and extract its features.
pub fn extract_lesion(
    image_path: &Path,
    mask_path: &Path,
    sel: &MaskSelection,
    settings: &Settings,
) -> Result<Vec<FeatureValue>, LesionError> {
    let image = io::read_image(image_path)?;
    extract_with_image(&image, image_path, mask_path, sel, settings)
}

fn extract_with_image(
    image: &Volume,
    image_path: &Path,
    mask_path: &Path,
    sel: &MaskSelection,
    settings: &Settings,
) -> Result<Vec<FeatureValue>, LesionError> {
    let dims: [usize; 3] = image.data.dim().into();
    let mask: Mask = io::read_mask(mask_path, &image.geometry, dims, sel)?;
    extract_roi(image, &mask, settings).map_err(|source| LesionError::Pipeline {
        image: image_path.to_path_buf(),
        source,
    })
}

/// Shortest round-trip text of a value (`NaN` for undefined features).
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// Write `text` to `path` through a temporary file + rename (no partial output on failure).
fn write_atomic(path: &Path, text: &str) -> Result<(), ExtractCmdError> {
    let tmp = path.with_extension("tmp-partial");
    let err = |source| ExtractCmdError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Run `site-agent extract`.
pub fn run(a: &ExtractArgs) -> Result<(), ExtractCmdError> {
    let settings = build_settings(a)?;
    if let Some(manifest) = &a.manifest {
        let out = a
            .out
            .as_deref()
            .ok_or_else(|| usage("--manifest needs --out FILE (the patient table)"))?;
        let method = LesionAggregation::parse(&a.lesion_aggregation)
            .ok_or_else(|| usage(format!("--lesion-aggregation {:?}", a.lesion_aggregation)))?;
        let summary = run_manifest(manifest, &settings, method, out, a.threads)?;
        eprintln!("{summary}");
        return Ok(());
    }
    let (Some(image), Some(mask)) = (&a.image, &a.mask) else {
        return Err(usage(
            "give --image and --mask (one lesion) or --manifest (a cohort); see --help",
        ));
    };
    let sel = MaskSelection {
        label: a.mask_label,
        roi: a.roi.clone(),
    };
    let features = extract_lesion(image, mask, &sel, &settings)?;
    let mut text = String::from("feature,ibsi_code,value\n");
    for f in &features {
        text.push_str(&format!(
            "{},{},{}\n",
            f.tag,
            f.ibsi_code,
            fmt_value(f.value)
        ));
    }
    match &a.out {
        Some(p) => write_atomic(p, &text),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|source| ExtractCmdError::Write {
                path: "<stdout>".into(),
                source,
            }),
    }
}

/// One manifest row, paths resolved against the manifest's folder.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub patient_id: String,
    pub lesion_id: String,
    pub image: PathBuf,
    pub mask: PathBuf,
    pub selection: MaskSelection,
}

/// Read and check a manifest (header `patient_id,lesion_id,image,mask[,mask_label][,roi]`).
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>, ExtractCmdError> {
    let err = |problem: String| ExtractCmdError::Manifest {
        path: path.to_path_buf(),
        problem,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| err(format!("bad header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            err(format!(
                "missing column {name:?}; the header must be patient_id,lesion_id,image,mask[,mask_label][,roi] (found {})",
                header.join(",")
            ))
        })
    };
    let (ip, il, ii, im) = (
        need("patient_id")?,
        need("lesion_id")?,
        need("image")?,
        need("mask")?,
    );
    let (ilabel, iroi) = (col("mask_label"), col("roi"));
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    let mut seen = HashMap::new();
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 2;
        let rec = rec.map_err(|e| err(format!("line {line}: {e}")))?;
        let get = |i: usize| rec.get(i).unwrap_or("").to_string();
        let (patient_id, lesion_id) = (get(ip), get(il));
        if patient_id.is_empty() || lesion_id.is_empty() || get(ii).is_empty() || get(im).is_empty()
        {
            return Err(err(format!(
                "line {line}: patient_id, lesion_id, image and mask must all be filled"
            )));
        }
        if let Some(prev) = seen.insert((patient_id.clone(), lesion_id.clone()), line) {
            return Err(err(format!(
                "line {line}: lesion {lesion_id} of patient {patient_id} already listed on line {prev}"
            )));
        }
        let label = match ilabel.map(get).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .map_err(|_| err(format!("line {line}: mask_label {s:?} is not an integer")))?,
            ),
        };
        let roi = iroi.map(get).filter(|s| !s.is_empty());
        rows.push(ManifestRow {
            patient_id,
            lesion_id,
            image: base.join(get(ii)),
            mask: base.join(get(im)),
            selection: MaskSelection { label, roi },
        });
    }
    if rows.is_empty() {
        return Err(err("no lesion rows after the header".into()));
    }
    Ok(rows)
}

/// One lesion's features or the reason it failed.
pub type LesionResult = Result<Vec<FeatureValue>, LesionError>;

/// Extract every manifest row. Rows sharing an image file are processed together so the image is
/// read once; groups and the lesions inside them run in parallel. Results come back in manifest
/// order whatever the thread count.
pub fn extract_rows(
    rows: &[ManifestRow],
    settings: &Settings,
    progress: &indicatif::ProgressBar,
) -> Vec<LesionResult> {
    let mut groups: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut by_image: HashMap<&Path, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let g = *by_image.entry(r.image.as_path()).or_insert_with(|| {
            groups.push((r.image.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let done = AtomicUsize::new(0);
    let per_group: Vec<Vec<(usize, LesionResult)>> = groups
        .par_iter()
        .map(|(image_path, idx)| {
            let finish = |r| {
                progress.inc(1);
                done.fetch_add(1, Ordering::Relaxed);
                r
            };
            match io::read_image(image_path) {
                Err(e) => {
                    // Every lesion of this image fails with the same reading error (the first
                    // keeps the typed error, the others its text: IoError is not Clone).
                    let msg = e.to_string();
                    let mut first = Some(e);
                    idx.iter()
                        .map(|&i| {
                            let err = match first.take() {
                                Some(e) => LesionError::Io(e),
                                None => LesionError::SharedImage(msg.clone()),
                            };
                            (i, finish(Err(err)))
                        })
                        .collect()
                }
                Ok(image) => idx
                    .par_iter()
                    .map(|&i| {
                        let r = &rows[i];
                        let res =
                            extract_with_image(&image, image_path, &r.mask, &r.selection, settings);
                        (i, finish(res))
                    })
                    .collect(),
            }
        })
        .collect();
    let mut out: Vec<Option<LesionResult>> = (0..rows.len()).map(|_| None).collect();
    for (i, r) in per_group.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every row is processed exactly once"))
        .collect()
}

/// Patient table + failures of a cohort run.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortTable {
    /// Feature tags (column order).
    pub tags: Vec<&'static str>,
    /// (patient_id, n_lesions, values) in manifest order of first appearance.
    pub patients: Vec<(String, usize, Vec<f64>)>,
    /// (patient_id, lesion_id, reason); lesion_id empty for "patient omitted".
    pub errors: Vec<(String, String, String)>,
}

/// Group lesion results by patient (manifest order) and aggregate each patient's successes.
pub fn build_table<T: std::fmt::Display>(
    rows: &[ManifestRow],
    results: &[Result<Vec<FeatureValue>, T>],
    method: LesionAggregation,
) -> Result<CohortTable, ExtractCmdError> {
    let mut order: Vec<&str> = Vec::new();
    let mut lesions: HashMap<&str, Vec<Vec<(&'static str, f64)>>> = HashMap::new();
    let mut errors = Vec::new();
    for (r, res) in rows.iter().zip(results) {
        let entry = lesions.entry(r.patient_id.as_str()).or_insert_with(|| {
            order.push(r.patient_id.as_str());
            Vec::new()
        });
        match res {
            Ok(f) => entry.push(f.iter().map(|v| (v.tag, v.value)).collect()),
            Err(e) => errors.push((r.patient_id.clone(), r.lesion_id.clone(), e.to_string())),
        }
    }
    let mut tags: Option<Vec<&'static str>> = None;
    let mut patients = Vec::new();
    for p in order {
        let ls = &lesions[p];
        if ls.is_empty() {
            errors.push((
                p.to_string(),
                String::new(),
                "no lesion of this patient could be extracted; the patient has no row".into(),
            ));
            continue;
        }
        let agg = aggregate_patient(ls, method).map_err(|source| ExtractCmdError::Aggregate {
            patient: p.to_string(),
            source,
        })?;
        let t: Vec<&'static str> = agg.iter().map(|x| x.0).collect();
        match &tags {
            None => tags = Some(t),
            Some(prev) if *prev != t => {
                return Err(ExtractCmdError::Aggregate {
                    patient: p.to_string(),
                    source: AggregateError::LengthMismatch {
                        lesion: 0,
                        expected: prev.len(),
                        got: t.len(),
                    },
                });
            }
            Some(_) => {}
        }
        patients.push((p.to_string(), ls.len(), agg.iter().map(|x| x.1).collect()));
    }
    Ok(CohortTable {
        tags: tags.unwrap_or_default(),
        patients,
        errors,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl CohortTable {
    /// `patient_id,n_lesions,<tags>` CSV.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("patient_id,n_lesions");
        for t in &self.tags {
            s.push(',');
            s.push_str(t);
        }
        s.push('\n');
        for (p, n, vals) in &self.patients {
            s.push_str(&csv_field(p));
            s.push_str(&format!(",{n}"));
            for v in vals {
                s.push(',');
                s.push_str(&fmt_value(*v));
            }
            s.push('\n');
        }
        s
    }

    /// `patient_id,lesion_id,reason` CSV.
    pub fn errors_csv(&self) -> String {
        let mut s = String::from("patient_id,lesion_id,reason\n");
        for (p, l, r) in &self.errors {
            s.push_str(&format!(
                "{},{},{}\n",
                csv_field(p),
                csv_field(l),
                csv_field(&r.replace('\n', " "))
            ));
        }
        s
    }
}

/// `<out>.errors.csv` next to the output table.
pub fn errors_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".errors.csv");
    PathBuf::from(s)
}

/// A progress bar on stderr, hidden when stderr is not a terminal (logs, CI, pipes).
pub fn progress_bar(n: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_string());
    pb
}

/// Run a whole manifest; returns a one-paragraph summary.
pub fn run_manifest(
    manifest: &Path,
    settings: &Settings,
    method: LesionAggregation,
    out: &Path,
    threads: Option<usize>,
) -> Result<String, ExtractCmdError> {
    let rows = read_manifest(manifest)?;
    let t0 = std::time::Instant::now();
    let pb = progress_bar(rows.len(), "extracting lesions");
    let results = match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| usage(format!("--threads {n}: {e}")))?
            .install(|| extract_rows(&rows, settings, &pb)),
        None => extract_rows(&rows, settings, &pb),
    };
    pb.finish_and_clear();
    let table = build_table(&rows, &results, method)?;
    let epath = errors_path(out);
    for (p, l, r) in &table.errors {
        if l.is_empty() {
            eprintln!("error: patient {p}: {r}");
        } else {
            eprintln!("error: patient {p} lesion {l}: {r}");
        }
    }
    write_atomic(&epath, &table.errors_csv())?;
    if table.patients.is_empty() {
        return Err(ExtractCmdError::NothingExtracted {
            total: rows.len(),
            errors: epath,
        });
    }
    write_atomic(out, &table.to_csv())?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let n_patients = table.patients.len();
    let omitted = table.errors.iter().filter(|e| e.1.is_empty()).count();
    let memory = crate::bench::peak_memory_mib()
        .map(|m| format!("; peak memory (VmHWM) {m:.0} MiB"))
        .unwrap_or_default();
    Ok(format!(
        "extracted {} of {} lesions in {:.1?}; wrote {} patients x {} features ({} aggregation) to {}; {} lesion(s) failed, {} patient(s) omitted (see {}){}",
        rows.len() - failed,
        rows.len(),
        t0.elapsed(),
        n_patients,
        table.tags.len(),
        method.as_str(),
        out.display(),
        failed,
        omitted,
        epath.display(),
        memory
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ExtractArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: ExtractArgs,
        }
        let mut v = vec!["x", "--image", "i.nii", "--mask", "m.nii"];
        v.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(v).unwrap().a
    }

    #[test]
    fn flags_override_the_preset() {
        let s = build_settings(&args(&[])).unwrap();
        assert_eq!(s, Settings::paper());
        let s = build_settings(&args(&[
            "--interpolation",
            "lagrange",
            "--resegment",
            "-500,inf",
            "--outlier-sigma",
            "3",
            "--bin-count",
            "64",
            "--spacing",
            "2",
        ]))
        .unwrap();
        assert_eq!(s.preprocessing.interpolation, Interpolation::Lagrange);
        assert_eq!(
            s.preprocessing.resegment_range,
            Some((-500.0, f64::INFINITY))
        );
        assert_eq!(s.features.resegmentation_range, Some((-500.0, None)));
        assert_eq!(s.preprocessing.outlier_sigma, Some(3.0));
        assert_eq!(s.preprocessing.spacing, Some([2.0; 3]));
        assert_eq!(
            s.features.discretisation,
            radiomics::discretise::Discretisation::FixedBinNumber { bins: 64 }
        );
        let s = build_settings(&args(&["--preset", "ibsi-c", "--resegment", "none"])).unwrap();
        assert_eq!(s.preprocessing.resegment_range, None);
        for bad in [
            &["--resegment", "3000,-1000"][..],
            &["--resegment", "abc"],
            &["--spacing", "-1"],
            &["--bin-width", "0"],
            &["--outlier-sigma", "x"],
            &["--preset", "ibsi-digital", "--interpolation", "trilinear"],
        ] {
            assert!(
                matches!(build_settings(&args(bad)), Err(ExtractCmdError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    fn row(p: &str, l: &str) -> ManifestRow {
        ManifestRow {
            patient_id: p.into(),
            lesion_id: l.into(),
            image: "i".into(),
            mask: "m".into(),
            selection: MaskSelection::default(),
        }
    }

    fn fv(tag: &'static str, value: f64) -> FeatureValue {
        FeatureValue {
            tag,
            ibsi_code: "XXXX",
            value,
        }
    }

    #[test]
    fn table_groups_by_patient_in_manifest_order_and_lists_failures() {
        let rows = vec![row("B", "1"), row("A", "1"), row("B", "2"), row("C", "1")];
        let ok = |v, x| Ok(vec![fv("morph_volume", v), fv("stat_mean", x)]);
        let results: Vec<Result<Vec<FeatureValue>, String>> = vec![
            ok(1.0, 10.0),
            Err("boom".to_string()),
            ok(3.0, 30.0),
            ok(2.0, 5.0),
        ];
        let t = build_table(&rows, &results, LesionAggregation::Mean).unwrap();
        assert_eq!(t.tags, vec!["morph_volume", "stat_mean"]);
        assert_eq!(
            t.patients,
            vec![
                ("B".into(), 2, vec![2.0, 20.0]),
                ("C".into(), 1, vec![2.0, 5.0])
            ]
        );
        assert_eq!(t.errors.len(), 2);
        assert_eq!(t.errors[0], ("A".into(), "1".into(), "boom".into()));
        assert_eq!(t.errors[1].0, "A");
        assert!(t.errors[1].1.is_empty());
        assert_eq!(
            t.to_csv(),
            "patient_id,n_lesions,morph_volume,stat_mean\nB,2,2,20\nC,1,2,5\n"
        );
        let w = build_table(&rows, &results, LesionAggregation::VolumeWeighted).unwrap();
        assert_eq!(w.patients[0].2, vec![2.5, 25.0]);
        assert!(
            t.errors_csv()
                .starts_with("patient_id,lesion_id,reason\nA,1,boom\n")
        );
    }
}
