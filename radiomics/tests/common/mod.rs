//! Shared helpers of the IBSI integration tests: where the reference data live, the reference
//! table reader, the IBSI/MIRP matching rule and the per-family scoring. One copy, used by
//! `ibsi_ct.rs`, `ibsi_ct_features.rs`, `ibsi_digital.rs` and `ibsi_dicom.rs`.
//!
//! Matching rule (IBSI/MIRP, `shared/ibsi/README.md`): round the computed value to the precision of
//! the reference value — 3 significant digits for every feature value; the exact integers/values
//! published for diagnostics such as the voxel count 125256 or the maximum 3065 carry more digits
//! and are compared at that precision — then it matches if `|rounded − reference| ≤ tolerance`
//! (empty tolerance = 0; a relative 1e-9 slack absorbs the binary representation of decimals).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use radiomics::io::{self, MaskSelection};
use radiomics::preprocess::{Diagnostics, Preprocessing, resample_whole_image};
use radiomics::{Mask, Volume};

/// `shared/ibsi` (read-only reference data).
pub fn ibsi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ibsi")
}

/// One row of `reference_values.csv`.
#[derive(Debug, Clone)]
pub struct RefRow {
    pub phantom: String,
    pub config: String,
    pub family: String,
    pub feature: String,
    pub ibsi_code: String,
    pub value: f64,
    /// Significant digits written in the published value.
    pub digits: i32,
    pub tol: f64,
}

/// Every row of `reference_values.csv` (2104 rows).
pub fn all_reference_rows() -> &'static [RefRow] {
    static ROWS: OnceLock<Vec<RefRow>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let text = std::fs::read_to_string(ibsi_dir().join("reference_values.csv"))
            .expect("reference_values.csv");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("phantom,config,family,feature,ibsi_code,value,tolerance")
        );
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 7, "unexpected row {line}");
                RefRow {
                    phantom: f[0].to_string(),
                    config: f[1].to_string(),
                    family: f[2].to_string(),
                    feature: f[3].to_string(),
                    ibsi_code: f[4].to_string(),
                    value: f[5].parse().expect("value"),
                    digits: sig_digits(f[5]),
                    tol: if f[6].is_empty() {
                        0.0
                    } else {
                        f[6].parse().expect("tolerance")
                    },
                }
            })
            .collect()
    })
}

/// Rows of one phantom/config whose family passes `keep`.
pub fn reference_rows(phantom: &str, config: &str, keep: impl Fn(&str) -> bool) -> Vec<RefRow> {
    all_reference_rows()
        .iter()
        .filter(|r| r.phantom == phantom && r.config == config && keep(&r.family))
        .cloned()
        .collect()
}

/// Round to `digits` significant digits.
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let d = digits - x.abs().log10().floor() as i32 - 1;
    if d >= 0 {
        let p = 10f64.powi(d);
        (x * p).round() / p
    } else {
        let p = 10f64.powi(-d);
        (x / p).round() * p
    }
}

/// Significant digits written in a published reference value ("125256" → 6, "0.0326" → 3).
pub fn sig_digits(value: &str) -> i32 {
    let mantissa = value
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or("");
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let trimmed = digits.trim_start_matches('0');
    let trimmed = if mantissa.contains('.') {
        trimmed
    } else {
        trimmed.trim_end_matches('0')
    };
    trimmed.len().max(1) as i32
}

/// The matching rule (see the module comment).
pub fn matches(computed: f64, row: &RefRow) -> bool {
    (round_sig(computed, row.digits.max(3)) - row.value).abs()
        <= row.tol + 1e-9 * row.value.abs().max(1.0)
}

/// Outcome of scoring computed values against reference rows.
#[derive(Debug, Default)]
pub struct Score {
    /// family → (matched, total)
    pub per_family: BTreeMap<String, (usize, usize)>,
    pub misses: Vec<String>,
}

impl Score {
    pub fn matched(&self) -> usize {
        self.per_family.values().map(|v| v.0).sum()
    }
    pub fn total(&self) -> usize {
        self.per_family.values().map(|v| v.1).sum()
    }
    /// Print matched/total per family, then every miss.
    pub fn print(&self, label: &str) {
        for (family, (m, t)) in &self.per_family {
            println!("[{label}]   {family:28} {m:3} / {t:3}");
        }
        println!(
            "[{label}]   {:28} {:3} / {:3}",
            "all",
            self.matched(),
            self.total()
        );
        for m in &self.misses {
            println!("  MISS {m}");
        }
    }
}

/// Score `computed(tag) -> (value, ibsi_code)` against `rows`. A code is checked only where both
/// sides have one (diagnostics rows have none).
pub fn score<'a>(
    label: &str,
    rows: &[RefRow],
    computed: impl Fn(&str) -> Option<(f64, Option<&'a str>)>,
) -> Score {
    let mut s = Score::default();
    for r in rows {
        let e = s.per_family.entry(r.family.clone()).or_default();
        e.1 += 1;
        match computed(&r.feature) {
            None => s.misses.push(format!(
                "{label} {:26} {:30} not computed",
                r.family, r.feature
            )),
            Some((_, Some(code))) if !r.ibsi_code.is_empty() && code != r.ibsi_code => {
                s.misses.push(format!(
                    "{label} {:26} {:30} code {code} != {}",
                    r.family, r.feature, r.ibsi_code
                ))
            }
            Some((v, _)) if matches(v, r) => e.0 += 1,
            Some((v, _)) => s.misses.push(format!(
                "{label} {:26} {:30} computed {v:.6} (rounded {}) vs {} ± {}",
                r.family,
                r.feature,
                round_sig(v, r.digits.max(3)),
                r.value,
                r.tol
            )),
        }
    }
    s
}

/// Value of a `diagnostics` row from our diagnostics (+ whole-image interpolation stats).
pub fn diagnostic(name: &str, d: &Diagnostics, whole: (f64, f64, f64)) -> Option<f64> {
    let axis = |s: &str| -> Option<usize> {
        if s.contains("_x_") {
            Some(2)
        } else if s.contains("_y_") {
            Some(1)
        } else if s.contains("_z_") {
            Some(0)
        } else {
            None
        }
    };
    let stage_roi = |stage: &str, morph: bool| match (stage, morph) {
        ("init", _) => &d.init_roi,
        ("interp", _) => &d.interp_roi,
        ("reseg", false) => &d.reseg_int_roi,
        ("reseg", true) => &d.reseg_morph_roi,
        _ => unreachable!(),
    };
    let stage = ["init", "interp", "reseg"]
        .into_iter()
        .find(|s| name.contains(&format!("_{s}_")))?;
    if name.ends_with("_img") {
        let (mean, min, max) = if stage == "init" {
            (d.init_mean, d.init_min, d.init_max)
        } else {
            whole
        };
        return Some(match name.split('_').next()? {
            "img" => {
                (if stage == "init" {
                    d.init_dims
                } else {
                    d.interp_dims
                })[axis(name)?] as f64
            }
            "vox" => {
                (if stage == "init" {
                    d.init_spacing
                } else {
                    d.interp_spacing
                })[axis(name)?]
            }
            "mean" => mean,
            "min" => min,
            "max" => max,
            _ => return None,
        });
    }
    let morph = name.starts_with("morph_mask");
    let r = stage_roi(stage, morph);
    if name.contains("_bb_dim_") {
        Some(r.bbox_dims[axis(name)?] as f64)
    } else if name.contains("_dim_") {
        Some(r.grid_dims[axis(name)?] as f64)
    } else if name.contains("vox_count") {
        Some(r.count as f64)
    } else if name.contains("mean_int") {
        Some(r.mean)
    } else if name.contains("min_int") {
        Some(r.min)
    } else if name.contains("max_int") {
        Some(r.max)
    } else {
        None
    }
}

/// Every `diagnostics` value we can compute for one CT configuration: the preprocessing
/// diagnostics plus mean/min/max of the whole interpolated image (resampled whole for this only).
pub fn diagnostics_values(
    image: &Volume,
    settings: &Preprocessing,
    d: &Diagnostics,
    rows: &[RefRow],
) -> HashMap<String, f64> {
    let whole = resample_whole_image(image, settings).expect("whole-image resample");
    let (mut s, mut mn, mut mx) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &v in whole.data.iter() {
        s += v;
        mn = mn.min(v);
        mx = mx.max(v);
    }
    let whole_stats = (s / whole.data.len() as f64, mn, mx);
    rows.iter()
        .filter(|r| r.family == "diagnostics")
        .filter_map(|r| diagnostic(&r.feature, d, whole_stats).map(|v| (r.feature.clone(), v)))
        .collect()
}

/// The IBSI CT phantom read from its NIfTI files (image + GTV mask), loaded once per test binary.
pub fn ct_nifti() -> &'static (Volume, Mask) {
    static CT: OnceLock<(Volume, Mask)> = OnceLock::new();
    CT.get_or_init(|| {
        let d = ibsi_dir().join("ct_phantom/nifti");
        let img = io::read_image(&d.join("image/phantom.nii.gz")).expect("CT image");
        let dims: [usize; 3] = img.data.dim().into();
        let mask = io::read_mask(
            &d.join("mask/mask.nii.gz"),
            &img.geometry,
            dims,
            &MaskSelection::default(),
        )
        .expect("CT mask");
        (img, mask)
    })
}

#[test]
fn round_sig_and_matching_examples() {
    assert_eq!(round_sig(0.094594, 3), 0.0946);
    assert_eq!(round_sig(-0.35467, 3), -0.355);
    assert_eq!(round_sig(567.0, 3), 567.0);
    assert_eq!(round_sig(11023.0, 3), 11000.0);
    assert_eq!(sig_digits("125256"), 6);
    assert_eq!(sig_digits("0.0326"), 3);
    assert_eq!(sig_digits("-3.5e-05"), 2);
    let row = |v: &str, tol: f64| RefRow {
        phantom: String::new(),
        config: String::new(),
        family: String::new(),
        feature: String::new(),
        ibsi_code: String::new(),
        value: v.parse().unwrap(),
        digits: sig_digits(v),
        tol,
    };
    assert!(!matches(2.16, &row("2.15", 0.0)));
    assert!(matches(2.1549, &row("2.15", 0.0)));
    assert!(matches(2.16, &row("2.15", 0.01)));
    // Diagnostics compared at their published precision: 125255 is not 125256.
    assert!(!matches(125255.0, &row("125256", 0.0)));
}
