//! IBSI 1 CT phantom, configurations A–E, read through the DICOM path: the 60-slice CT series and
//! the RTSTRUCT GTV (`shared/ibsi/ct_phantom/dicom`), rasterised by `radiomics::io`, then every
//! reference row (diagnostics, morphology, intensity and texture) checked with the same IBSI/MIRP
//! matching rule as the NIfTI tests (`common`). Prints matched/total per configuration and family.
//!
//! The RTSTRUCT polygons are rasterised here, while the IBSI reference values were computed on the
//! NIfTI voxel mask that ships with the phantom; the rasterised GTV equals that mask voxel for voxel
//! (checked), so every row must match: 406 + 406 + 270 + 270 + 270 = 1622 rows.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::{ct_nifti, diagnostics_values, ibsi_dir, reference_rows, score};
use radiomics::io::{self, IoError, MaskSelection};
use radiomics::pipeline::Settings;
use radiomics::preprocess::preprocess;
use radiomics::{Mask, Volume};

/// Read the DICOM series and the GTV from the RTSTRUCT once.
fn ct_dicom() -> &'static (Volume, Mask, String) {
    static CT: OnceLock<(Volume, Mask, String)> = OnceLock::new();
    CT.get_or_init(|| {
        let d = ibsi_dir().join("ct_phantom/dicom");
        let img = io::read_image(&d.join("image")).expect("DICOM series");
        let dims: [usize; 3] = img.data.dim().into();
        let rs = d.join("mask/DCM_RS_00060.dcm");
        // Pick the GTV by name from the ROI list the reader reports.
        let names = match io::read_mask(
            &rs,
            &img.geometry,
            dims,
            &MaskSelection {
                roi: Some("?".into()),
                ..Default::default()
            },
        ) {
            Err(IoError::RoiNotFound { available, .. }) => available,
            other => panic!("expected the ROI list, got {other:?}"),
        };
        let gtv = names
            .iter()
            .find(|n| n.to_ascii_uppercase().contains("GTV"))
            .unwrap_or(&names[0])
            .clone();
        let sel = MaskSelection {
            roi: Some(gtv.clone()),
            ..Default::default()
        };
        let mask = io::read_mask(&rs, &img.geometry, dims, &sel).expect("RTSTRUCT GTV");
        (img, mask, gtv)
    })
}

fn run(config: &str) {
    let (img, mask, roi) = ct_dicom();
    let settings = Settings::preset(&format!("ibsi-{config}")).expect("preset");
    let pre = preprocess(img, mask, &settings.preprocessing).expect("preprocess");
    let features = radiomics::extract::compute_features(
        &pre.image,
        &pre.morph_mask,
        &pre.int_mask,
        &settings.features,
    )
    .expect("features");
    let rows = reference_rows("ct", config, |_| true);
    let diag = diagnostics_values(img, &settings.preprocessing, &pre.diagnostics, &rows);
    let feats: HashMap<&str, (f64, &str)> = features
        .iter()
        .map(|f| (f.tag, (f.value, f.ibsi_code)))
        .collect();
    let s = score(config, &rows, |t| {
        feats
            .get(t)
            .map(|&(v, c)| (v, Some(c)))
            .or_else(|| diag.get(t).map(|&v| (v, None)))
    });
    println!(
        "[{config}] DICOM series + RTSTRUCT ROI {roi:?}: matched {} / {} reference rows",
        s.matched(),
        s.total()
    );
    s.print(config);
    assert_eq!(
        s.total(),
        if matches!(config, "A" | "B") {
            406
        } else {
            270
        }
    );
    let (_, nifti_mask) = ct_nifti();
    assert!(
        nifti_mask.data == mask.data,
        "the rasterised RTSTRUCT GTV differs from the NIfTI mask"
    );
    assert!(
        s.misses.is_empty(),
        "{} misses:\n{}",
        s.misses.len(),
        s.misses.join("\n")
    );
}

#[test]
fn ibsi_dicom_config_a() {
    run("A");
}

#[test]
fn ibsi_dicom_config_b() {
    run("B");
}

#[test]
fn ibsi_dicom_config_c() {
    run("C");
}

#[test]
fn ibsi_dicom_config_d() {
    run("D");
}

#[test]
fn ibsi_dicom_config_e() {
    run("E");
}
