//! IBSI 1 digital phantom: every reference value of the intensity and texture families.
//!
//! Reads `shared/ibsi/digital_phantom/nifti/{image,mask}` (5×4×4 voxels, 2 mm, grey levels 1..6,
//! no resampling, re-segmentation or discretisation), extracts the features with the IBSI digital
//! phantom settings, and checks each digital-phantom row of `reference_values.csv` for the families
//! computed here with the IBSI/MIRP matching rule: round the computed value to 3 significant
//! digits, then `|rounded − reference| ≤ tolerance` (empty tolerance = 0; a relative 1e-9 slack
//! absorbs the binary representation of decimal values). Prints matched/total per family and fails
//! listing every mismatch. Morphology rows (computed by `radiomics::morphology`, validated in
//! `ibsi_ct.rs`) must be present with their codes; their match count is printed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use radiomics::extract::{Families, FeatureSettings, compute_features};
use radiomics::io::{MaskSelection, read_image, read_mask};

const IBSI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/ibsi");

/// Families this test is responsible for (morphology is checked by the morphology tests).
const FAMILIES: [&str; 10] = [
    "local_intensity",
    "intensity_statistics",
    "intensity_histogram",
    "intensity_volume_histogram",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
];

/// Round to `digits` significant digits.
fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let d = digits - v.abs().log10().floor() as i32 - 1;
    if d >= 0 {
        let p = 10f64.powi(d);
        (v * p).round() / p
    } else {
        let p = 10f64.powi(-d);
        (v / p).round() * p
    }
}

fn matches(value: f64, reference: f64, tolerance: f64) -> bool {
    let r = round_sig(value, 3);
    (r - reference).abs() <= tolerance + 1e-9 * reference.abs()
}

#[test]
fn round_sig_examples() {
    assert_eq!(round_sig(0.094594, 3), 0.0946);
    assert_eq!(round_sig(-0.35467, 3), -0.355);
    assert_eq!(round_sig(567.0, 3), 567.0);
    assert_eq!(round_sig(11023.0, 3), 11000.0);
    assert!(!matches(2.16, 2.15, 0.0));
    assert!(matches(2.1549, 2.15, 0.0));
}

#[test]
fn ibsi_digital_phantom_reference_values() {
    let dir = Path::new(IBSI).join("digital_phantom/nifti");
    let image = read_image(&dir.join("image/phantom.nii.gz")).expect("read digital phantom image");
    let dims: [usize; 3] = image.data.dim().into();
    let mask = read_mask(
        &dir.join("mask/mask.nii.gz"),
        &image.geometry,
        dims,
        &MaskSelection::default(),
    )
    .expect("read digital phantom mask");
    assert_eq!(
        dims,
        [4, 4, 5],
        "phantom is 5x4x4 (x, y, z), stored [z, y, x]"
    );
    assert_eq!(mask.count(), 74);

    let settings = FeatureSettings::ibsi_digital_phantom();
    assert_eq!(settings.families, Families::ALL);
    let features = compute_features(&image, &mask, &mask, &settings).expect("feature extraction");
    let computed: HashMap<&str, (f64, &str)> = features
        .iter()
        .map(|f| (f.tag, (f.value, f.ibsi_code)))
        .collect();

    let csv = std::fs::read_to_string(Path::new(IBSI).join("reference_values.csv"))
        .expect("reference table");
    let mut per_family: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut morphology = (0, 0);
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let (phantom, family, tag, code, value, tol) = (c[0], c[2], c[3], c[4], c[5], c[6]);
        if phantom != "digital" {
            continue;
        }
        if family == "morphology" {
            // Values come from the morphology module (validated in ibsi_ct.rs); here extraction
            // must deliver every tag with its code, and the match count is reported.
            let &(v, got_code) = computed
                .get(tag)
                .unwrap_or_else(|| panic!("{tag} not computed"));
            assert_eq!(got_code, code, "{tag}");
            morphology.1 += 1;
            let tolerance: f64 = tol.parse().expect("morphology tolerance");
            if matches(v, value.parse().expect("value"), tolerance) {
                morphology.0 += 1;
            }
            continue;
        }
        if !FAMILIES.contains(&family) {
            continue;
        }
        let reference: f64 = value.parse().expect("reference value");
        let tolerance: f64 = if tol.is_empty() {
            0.0
        } else {
            tol.parse().expect("tolerance")
        };
        let entry = per_family.entry(family).or_default();
        entry.1 += 1;
        match computed.get(tag) {
            None => failures.push(format!("{family:28} {tag:32} not computed")),
            Some(&(v, got_code)) => {
                if got_code != code {
                    failures.push(format!("{family:28} {tag:32} code {got_code} != {code}"));
                } else if matches(v, reference, tolerance) {
                    entry.0 += 1;
                } else {
                    failures.push(format!(
                        "{family:28} {tag:32} computed {v:.6} (rounded {}) reference {reference} tol {tolerance}",
                        round_sig(v, 3)
                    ));
                }
            }
        }
    }
    let (mut ok, mut total) = (0, 0);
    println!("IBSI digital phantom, matched / total per family:");
    for (family, (m, t)) in &per_family {
        println!("  {family:28} {m:3} / {t:3}");
        ok += m;
        total += t;
    }
    println!("  {:28} {ok:3} / {total:3}", "all intensity + texture");
    println!(
        "  {:28} {:3} / {:3} (informational)",
        "morphology", morphology.0, morphology.1
    );
    assert_eq!(morphology.1, 25);
    assert_eq!(
        total,
        482 - 25,
        "every non-morphology digital row is checked"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
