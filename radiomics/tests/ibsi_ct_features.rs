//! IBSI 1 CT phantom, configurations A–E: every reference value of the intensity and texture
//! families, computed with the named presets of `radiomics::pipeline` (IBSI preprocessing, then
//! feature extraction) from the NIfTI files, and checked with the IBSI/MIRP matching rule of
//! `common` (round to 3 significant digits, `|rounded − reference| ≤ tolerance`). Prints
//! matched/total per configuration and family, and fails listing every mismatch. Morphology and
//! diagnostics rows are checked by `ibsi_ct.rs`; the DICOM path by `ibsi_dicom.rs`.

mod common;

use std::collections::HashMap;

use common::{ct_nifti, reference_rows, score};
use radiomics::pipeline::{Settings, extract_roi};

fn run(config: &str) {
    let (img, mask) = ct_nifti();
    let mut settings = Settings::preset(&format!("ibsi-{config}")).expect("preset");
    settings.features.families.morphology = false;
    let t = std::time::Instant::now();
    let features = extract_roi(img, mask, &settings).expect("feature extraction");
    println!(
        "[{config}] {} features in {:.2?}",
        features.len(),
        t.elapsed()
    );
    let computed: HashMap<&str, (f64, &str)> = features
        .iter()
        .map(|f| (f.tag, (f.value, f.ibsi_code)))
        .collect();
    let rows = reference_rows("ct", config, |f| f != "diagnostics" && f != "morphology");
    let s = score(config, &rows, |t| {
        computed.get(t).map(|&(v, c)| (v, Some(c)))
    });
    s.print(config);
    assert!(s.total() > 0);
    assert!(
        s.misses.is_empty(),
        "{} mismatches:\n{}",
        s.misses.len(),
        s.misses.join("\n")
    );
}

#[test]
fn ibsi_ct_features_config_a() {
    run("A");
}

#[test]
fn ibsi_ct_features_config_b() {
    run("B");
}

#[test]
fn ibsi_ct_features_config_c() {
    run("C");
}

#[test]
fn ibsi_ct_features_config_d() {
    run("D");
}

#[test]
fn ibsi_ct_features_config_e() {
    run("E");
}
