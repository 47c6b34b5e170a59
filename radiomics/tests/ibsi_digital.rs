//! IBSI 1 digital phantom: every reference value of the intensity and texture families.
//!
//! Reads `shared/ibsi/digital_phantom/nifti/{image,mask}` (5×4×4 voxels, 2 mm, grey levels 1..6),
//! extracts the features twice — directly with the digital phantom feature settings, and through the
//! `ibsi-digital` pipeline preset (no resampling, re-segmentation or discretisation) — and checks
//! each digital-phantom row of `reference_values.csv` with the IBSI/MIRP matching rule of `common`.
//! Prints matched/total per family and fails listing every mismatch. Morphology rows (computed by
//! `radiomics::morphology`, validated in `ibsi_ct.rs`) must be present with their codes; their match
//! count is printed.

mod common;

use std::collections::HashMap;

use common::{ibsi_dir, reference_rows, score};
use radiomics::extract::{Families, FeatureSettings, FeatureValue, compute_features};
use radiomics::io::{MaskSelection, read_image, read_mask};
use radiomics::pipeline::{Settings, extract_roi};

fn check(label: &str, features: &[FeatureValue]) {
    let computed: HashMap<&str, (f64, &str)> = features
        .iter()
        .map(|f| (f.tag, (f.value, f.ibsi_code)))
        .collect();
    let lookup = |t: &str| computed.get(t).map(|&(v, c)| (v, Some(c)));
    let rows = reference_rows("digital", "digital", |f| f != "morphology");
    let s = score(label, &rows, lookup);
    println!("IBSI digital phantom ({label}), matched / total per family:");
    s.print(label);
    let morph_rows = reference_rows("digital", "digital", |f| f == "morphology");
    let m = score(label, &morph_rows, lookup);
    println!(
        "  morphology {} / {} (informational)",
        m.matched(),
        m.total()
    );
    assert_eq!(m.total(), 25);
    assert!(
        m.misses
            .iter()
            .all(|x| !x.contains("not computed") && !x.contains("code")),
        "morphology tags must be delivered with their codes: {:?}",
        m.misses
    );
    assert_eq!(
        s.total(),
        482 - 25,
        "every non-morphology digital row is checked"
    );
    assert!(
        s.misses.is_empty(),
        "{} mismatches:\n{}",
        s.misses.len(),
        s.misses.join("\n")
    );
}

#[test]
fn ibsi_digital_phantom_reference_values() {
    let dir = ibsi_dir().join("digital_phantom/nifti");
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
    check("direct", &features);

    let preset = Settings::preset("ibsi-digital").expect("preset");
    let via_pipeline = extract_roi(&image, &mask, &preset).expect("pipeline");
    check("ibsi-digital preset", &via_pipeline);
}
