//! IBSI 1 CT phantom, configurations A–E: every reference value of the intensity and texture
//! families, computed from the IBSI preprocessing (`radiomics::preprocess`) and checked with the
//! IBSI/MIRP matching rule (round to 3 significant digits, `|rounded − reference| ≤ tolerance`).
//! Prints matched/total per configuration and family, and fails listing every mismatch.
//! Morphology and diagnostics rows are checked by `ibsi_ct.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use radiomics::discretise::Discretisation;
use radiomics::extract::{Families, FeatureSettings, compute_features};
use radiomics::intensity::IvhDiscretisation;
use radiomics::io::{self, MaskSelection};
use radiomics::preprocess::{Preprocessing, preprocess};
use radiomics::texture::Spatial;
use radiomics::{Mask, Volume};

fn ibsi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ibsi")
}

fn ct() -> &'static (Volume, Mask) {
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

const TWO_D: Spatial = Spatial {
    d2: true,
    d25: true,
    d3: false,
};

/// Feature settings of each IBSI CT configuration (see shared/ibsi/README.md).
fn feature_settings(config: &str) -> FeatureSettings {
    let fbs25 = Discretisation::FixedBinSize {
        width: 25.0,
        origin: None,
    };
    let fbn32 = Discretisation::FixedBinNumber { bins: 32 };
    let (discretisation, range, ivh, spatial) = match config {
        "A" => (
            fbs25,
            Some((-500.0, Some(400.0))),
            IvhDiscretisation::None,
            TWO_D,
        ),
        "B" => (
            fbn32,
            Some((-500.0, Some(400.0))),
            IvhDiscretisation::None,
            TWO_D,
        ),
        "C" => (
            fbs25,
            Some((-1000.0, Some(400.0))),
            IvhDiscretisation::FixedBinSize { width: 2.5 },
            Spatial::THREE_D,
        ),
        "D" => (fbn32, None, IvhDiscretisation::None, Spatial::THREE_D),
        "E" => (
            fbn32,
            Some((-1000.0, Some(400.0))),
            IvhDiscretisation::FixedBinNumber { bins: 1000 },
            Spatial::THREE_D,
        ),
        _ => unreachable!("unknown configuration {config}"),
    };
    FeatureSettings {
        discretisation,
        resegmentation_range: range,
        ivh,
        spatial,
        families: Families {
            morphology: false,
            ..Families::ALL
        },
    }
}

fn run(config: &str, pre_settings: Preprocessing) -> Vec<String> {
    let (img, mask) = ct();
    let pre = preprocess(img, mask, &pre_settings).expect("preprocess");
    let t = std::time::Instant::now();
    let features = compute_features(
        &pre.image,
        &pre.morph_mask,
        &pre.int_mask,
        &feature_settings(config),
    )
    .expect("feature extraction");
    println!(
        "[{config}] {} features in {:.2?}",
        features.len(),
        t.elapsed()
    );
    let computed: HashMap<&str, f64> = features.iter().map(|f| (f.tag, f.value)).collect();

    let csv =
        std::fs::read_to_string(ibsi_dir().join("reference_values.csv")).expect("reference table");
    let mut per_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        if c[0] != "ct" || c[1] != config || c[2] == "diagnostics" || c[2] == "morphology" {
            continue;
        }
        let (family, tag) = (c[2], c[3]);
        let reference: f64 = c[5].parse().expect("value");
        let tol: f64 = if c[6].is_empty() {
            0.0
        } else {
            c[6].parse().expect("tolerance")
        };
        let e = per_family.entry(family.to_string()).or_default();
        e.1 += 1;
        match computed.get(tag) {
            Some(&v) if (round_sig(v, 3) - reference).abs() <= tol + 1e-9 * reference.abs() => e.0 += 1,
            Some(&v) => misses.push(format!(
                "[{config}] {family:26} {tag:30} computed {v:.6} (rounded {}) vs {reference} ± {tol}",
                round_sig(v, 3)
            )),
            None => misses.push(format!("[{config}] {family:26} {tag:30} not computed")),
        }
    }
    for (family, (m, t)) in &per_family {
        println!("[{config}]   {family:26} {m:3} / {t:3}");
    }
    for m in &misses {
        println!("  MISS {m}");
    }
    misses
}

#[test]
fn ibsi_ct_features_config_a() {
    let m = run("A", Preprocessing::ibsi_a());
    assert!(m.is_empty(), "{} mismatches:\n{}", m.len(), m.join("\n"));
}

#[test]
fn ibsi_ct_features_config_b() {
    let m = run("B", Preprocessing::ibsi_b());
    assert!(m.is_empty(), "{} mismatches:\n{}", m.len(), m.join("\n"));
}

#[test]
fn ibsi_ct_features_config_c() {
    let m = run("C", Preprocessing::ibsi_c());
    assert!(m.is_empty(), "{} mismatches:\n{}", m.len(), m.join("\n"));
}

#[test]
fn ibsi_ct_features_config_d() {
    let m = run("D", Preprocessing::ibsi_d());
    assert!(m.is_empty(), "{} mismatches:\n{}", m.len(), m.join("\n"));
}

#[test]
fn ibsi_ct_features_config_e() {
    let m = run("E", Preprocessing::ibsi_e());
    assert!(m.is_empty(), "{} mismatches:\n{}", m.len(), m.join("\n"));
}
