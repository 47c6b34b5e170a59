//! IBSI 1 compliance of the readers, the preprocessing and the morphology family: CT phantom
//! configs A–E (`diagnostics` + `morphology` rows) and the digital phantom (`morphology` rows),
//! checked with the IBSI/MIRP matching rule (round to 3 significant digits, then
//! `|rounded − reference| ≤ tolerance`). Also DICOM vs NIfTI agreement and bad-input errors.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::{RefRow, ct_nifti as ct, diagnostics_values, ibsi_dir, reference_rows, score};

use radiomics::io::{self, IoError, MaskSelection};
use radiomics::morphology::morphology;
use radiomics::preprocess::{PreprocessError, Preprocessing, preprocess};
use radiomics::{Mask, Volume};

/// Score computed values against the rows, print the table, fail listing every miss.
fn check(label: &str, rows: &[RefRow], computed: &HashMap<String, f64>) {
    let s = score(label, rows, |t| computed.get(t).map(|&v| (v, None)));
    s.print(label);
    assert_eq!(
        s.matched(),
        s.total(),
        "{label}: {} rows do not match:\n{}",
        s.misses.len(),
        s.misses.join("\n")
    );
}

fn run_ct_config(config: &str, settings: Preprocessing) {
    let (img, mask) = ct();
    let t0 = std::time::Instant::now();
    let pre = preprocess(img, mask, &settings).expect("preprocess");
    let t_pre = t0.elapsed();
    let t1 = std::time::Instant::now();
    let morph = morphology(&pre.image, &pre.morph_mask, &pre.int_mask).expect("morphology");
    let t_morph = t1.elapsed();
    let t2 = std::time::Instant::now();
    let (mi, gc) = radiomics::morphology::moran_geary(
        &pre.image.data,
        &pre.int_mask.data,
        pre.image.geometry.spacing,
    );
    let t_moran = t2.elapsed();
    assert_eq!((mi, gc), (morph.moran_i, morph.geary_c));
    // Only a box around the ROI is resampled, never the whole image.
    let box_voxels = pre.image.data.len();
    let grid_voxels: usize = pre.grid.dims.iter().product();
    assert!(
        box_voxels < grid_voxels / 2,
        "box {box_voxels} vs grid {grid_voxels}"
    );
    println!(
        "[{config}] box {:?} of grid {:?}; preprocess {t_pre:?}, morphology {t_morph:?} (Moran/Geary on {} voxels: {t_moran:?})",
        pre.image.data.dim(),
        pre.grid.dims,
        pre.int_mask.count()
    );

    let rows = reference_rows("ct", config, |f| f == "diagnostics" || f == "morphology");
    assert_eq!(
        rows.len(),
        60 + 25,
        "config {config}: expected 60 diagnostics + 25 morphology rows"
    );
    let mut computed = diagnostics_values(img, &settings, &pre.diagnostics, &rows);
    for (k, v) in morph.tagged() {
        computed.insert(k.to_string(), v);
    }
    check(config, &rows, &computed);
}

#[test]
fn ibsi_ct_config_a() {
    run_ct_config("A", Preprocessing::ibsi_a());
}

#[test]
fn ibsi_ct_config_b() {
    run_ct_config("B", Preprocessing::ibsi_b());
}

#[test]
fn ibsi_ct_config_c() {
    run_ct_config("C", Preprocessing::ibsi_c());
}

#[test]
fn ibsi_ct_config_d() {
    run_ct_config("D", Preprocessing::ibsi_d());
}

#[test]
fn ibsi_ct_config_e() {
    run_ct_config("E", Preprocessing::ibsi_e());
}

#[test]
fn ibsi_digital_phantom_morphology() {
    let d = ibsi_dir().join("digital_phantom/nifti");
    let img = io::read_image(&d.join("image/phantom.nii.gz")).expect("digital image");
    let dims: [usize; 3] = img.data.dim().into();
    assert_eq!(dims, [4, 4, 5], "[z,y,x]");
    assert_eq!(img.geometry.spacing, [2.0, 2.0, 2.0]);
    let mask = io::read_mask(
        &d.join("mask/mask.nii.gz"),
        &img.geometry,
        dims,
        &MaskSelection::default(),
    )
    .unwrap();
    assert_eq!(mask.count(), 74);
    let pre = preprocess(&img, &mask, &Preprocessing::ibsi_digital()).unwrap();
    assert_eq!(pre.morph_mask.count(), 74);
    assert_eq!(pre.int_mask.count(), 74);
    let morph = morphology(&pre.image, &pre.morph_mask, &pre.int_mask).unwrap();
    let computed: HashMap<String, f64> = morph
        .tagged()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let rows = reference_rows("digital", "digital", |f| f == "morphology");
    assert_eq!(rows.len(), 25);
    check("digital", &rows, &computed);
}

#[test]
fn dicom_series_and_rtstruct_agree_with_nifti() {
    let (img, mask) = ct();
    let dcm = ibsi_dir().join("ct_phantom/dicom");
    let series = io::read_image(&dcm.join("image")).expect("DICOM series");
    let dims: [usize; 3] = img.data.dim().into();
    assert_eq!(series.data.dim(), img.data.dim());
    io::check_same_grid(
        &img.geometry,
        dims,
        &series.geometry,
        series.data.dim().into(),
    )
    .expect("DICOM and NIfTI grids agree");
    let max_diff = img
        .data
        .iter()
        .zip(series.data.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert_eq!(
        max_diff, 0.0,
        "HU values identical after RescaleSlope/Intercept"
    );

    let rs = dcm.join("mask/DCM_RS_00060.dcm");
    // Without --roi and with several ROIs, or a wrong name, the error lists what exists.
    let sel = MaskSelection {
        roi: Some("no-such-roi".into()),
        ..Default::default()
    };
    let err = io::read_mask(&rs, &series.geometry, dims, &sel).unwrap_err();
    let names = match &err {
        IoError::RoiNotFound { available, .. } => available.clone(),
        other => panic!("expected RoiNotFound, got {other}"),
    };
    assert!(!names.is_empty());
    println!("RTSTRUCT ROIs: {names:?}; error: {err}");
    let sel = MaskSelection {
        roi: Some(names[0].clone()),
        ..Default::default()
    };
    let rt = io::read_mask(&rs, &series.geometry, dims, &sel).expect("RTSTRUCT rasterised");
    let (a, b) = (mask.count(), rt.count());
    let inter = mask
        .data
        .iter()
        .zip(rt.data.iter())
        .filter(|(x, y)| **x && **y)
        .count();
    let dice = 2.0 * inter as f64 / (a + b) as f64;
    let differing = a + b - 2 * inter;
    println!(
        "NIfTI mask {a} voxels, RTSTRUCT mask {b} voxels, differing {differing}, Dice {dice:.6}"
    );
    // Documented bound: rasterisation conventions for voxel centres on the contour differ between
    // tools by at most about one boundary voxel per row; allow 0.5 % of the ROI to differ.
    assert!(
        differing as f64 <= 0.005 * a as f64,
        "differing voxels {differing}"
    );
    assert!(dice >= 0.995, "Dice {dice}");
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn truncated_and_hostile_nifti_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Truncated gzip stream.
    let src = std::fs::read(ibsi_dir().join("ct_phantom/nifti/image/phantom.nii.gz")).unwrap();
    let p = dir.path().join("truncated.nii.gz");
    std::fs::write(&p, &src[..src.len() / 2]).unwrap();
    let err = io::read_image(&p).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IoError::Malformed { .. }), "{msg}");
    assert!(
        msg.contains("truncated.nii.gz") && (msg.contains("truncated") || msg.contains("corrupt")),
        "{msg}"
    );

    // Truncated uncompressed file (header fine, voxel data short).
    let raw = gunzip(&ibsi_dir().join("digital_phantom/nifti/image/phantom.nii.gz"));
    let p = dir.path().join("short.nii");
    std::fs::write(&p, &raw[..raw.len() - 10]).unwrap();
    let msg = io::read_image(&p).unwrap_err().to_string();
    assert!(
        msg.contains("short.nii") && msg.contains("truncated"),
        "{msg}"
    );

    // Header truncated inside the 348 bytes.
    let p = dir.path().join("header.nii");
    std::fs::write(&p, &raw[..100]).unwrap();
    let msg = io::read_image(&p).unwrap_err().to_string();
    assert!(msg.contains("348-byte header"), "{msg}");

    // Hostile header: 30000^3 int16 voxels claimed by a 360-byte file → rejected before allocating.
    let mut hostile = raw[..352].to_vec();
    for (i, d) in [30000i16, 30000, 30000].iter().enumerate() {
        hostile[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    hostile.extend_from_slice(&[0u8; 8]);
    let p = dir.path().join("hostile.nii");
    std::fs::write(&p, &hostile).unwrap();
    let err = io::read_image(&p).unwrap_err();
    assert!(matches!(err, IoError::TooLarge { .. }), "{err}");

    // Not a NIfTI file at all.
    let p = dir.path().join("garbage.nii");
    std::fs::write(&p, vec![7u8; 600]).unwrap();
    let msg = io::read_image(&p).unwrap_err().to_string();
    assert!(msg.contains("sizeof_hdr"), "{msg}");

    // Missing file: the path is named.
    let err = io::read_image(&dir.path().join("missing.nii.gz")).unwrap_err();
    assert!(matches!(err, IoError::Io { .. }) && err.to_string().contains("missing.nii.gz"));
}

#[test]
fn empty_mask_and_mismatched_grid_are_reported() {
    let (img, mask) = ct();
    let dims: [usize; 3] = img.data.dim().into();
    let d = ibsi_dir();
    // Label that does not occur → EmptyMask naming the label.
    let sel = MaskSelection {
        label: Some(7),
        ..Default::default()
    };
    let err = io::read_mask(
        &d.join("ct_phantom/nifti/mask/mask.nii.gz"),
        &img.geometry,
        dims,
        &sel,
    )
    .unwrap_err();
    assert!(
        matches!(err, IoError::EmptyMask { .. }) && err.to_string().contains("label 7"),
        "{err}"
    );
    // Label 1 selects the ROI.
    let sel = MaskSelection {
        label: Some(1),
        ..Default::default()
    };
    let m1 = io::read_mask(
        &d.join("ct_phantom/nifti/mask/mask.nii.gz"),
        &img.geometry,
        dims,
        &sel,
    )
    .unwrap();
    assert_eq!(m1.count(), mask.count());

    // The digital phantom mask is not on the CT grid: every difference is listed.
    let err = io::read_mask(
        &d.join("digital_phantom/nifti/mask/mask.nii.gz"),
        &img.geometry,
        dims,
        &MaskSelection::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IoError::GridMismatch { .. }), "{msg}");
    assert!(
        msg.contains("size") && msg.contains("spacing") && msg.contains("origin"),
        "{msg}"
    );
    assert!(!msg.contains("direction"), "directions agree: {msg}");

    // Preprocessing an empty mask, and a range that removes everything.
    let empty = Mask {
        data: mask.data.mapv(|_| false),
        geometry: mask.geometry.clone(),
    };
    assert!(matches!(
        preprocess(img, &empty, &Preprocessing::ibsi_c()),
        Err(PreprocessError::EmptyMask)
    ));
    let s = Preprocessing {
        resegment_range: Some((5000.0, 6000.0)),
        ..Preprocessing::ibsi_c()
    };
    assert!(matches!(
        preprocess(img, mask, &s),
        Err(PreprocessError::EmptyAfterResegmentation { .. })
    ));
}

/// Write the digital phantom as NRRD (raw and gzip, LPS and RAS) and read it back.
#[test]
fn nrrd_reader_round_trips_the_digital_phantom() {
    let nii =
        io::read_image(&ibsi_dir().join("digital_phantom/nifti/image/phantom.nii.gz")).unwrap();
    let (nz, ny, nx) = nii.data.dim();
    let bytes: Vec<u8> = nii
        .data
        .iter()
        .flat_map(|&v| (v as i16).to_le_bytes())
        .collect();
    let o = nii.geometry.origin_xyz();
    let dir = tempfile::tempdir().unwrap();
    for (enc, space, flip) in [
        ("raw", "left-posterior-superior", 1.0),
        ("gzip", "right-anterior-superior", -1.0),
    ] {
        let header = format!(
            "NRRD0004\n# test\ntype: short\ndimension: 3\nspace: {space}\nsizes: {nx} {ny} {nz}\nspace directions: ({},0,0) (0,{},0) (0,0,2)\nkinds: domain domain domain\nendian: little\nencoding: {enc}\nspace origin: ({},{},{})\n\n",
            2.0 * flip,
            2.0 * flip,
            o[0] * flip,
            o[1] * flip,
            o[2]
        );
        let p = dir.path().join(format!("ph_{enc}.nrrd"));
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        if enc == "gzip" {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&bytes).unwrap();
            f.write_all(&e.finish().unwrap()).unwrap();
        } else {
            f.write_all(&bytes).unwrap();
        }
        drop(f);
        let v = io::read_image(&p).unwrap();
        assert_eq!(v.data, nii.data, "{enc}");
        io::check_same_grid(
            &nii.geometry,
            [nz, ny, nx],
            &v.geometry,
            v.data.dim().into(),
        )
        .unwrap();

        // Truncated copy → clear error.
        let full = std::fs::read(&p).unwrap();
        let t = dir.path().join(format!("trunc_{enc}.nrrd"));
        std::fs::write(&t, &full[..full.len() - 20]).unwrap();
        let msg = io::read_image(&t).unwrap_err().to_string();
        assert!(
            msg.contains("trunc_") && (msg.contains("truncated") || msg.contains("corrupt")),
            "{msg}"
        );
    }
}

/// Shift every slice of the phantom series in-plane by `shift_per_slice` mm (a sheared stack, as a
/// gantry-tilted acquisition gives) or drop one slice, write the copies, and check the errors.
#[test]
fn tilted_or_gappy_dicom_series_is_rejected() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let src = ibsi_dir().join("ct_phantom/dicom/image");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let files = &files[..6];
    let tilt = tempfile::tempdir().unwrap();
    let gap = tempfile::tempdir().unwrap();
    let mut slices: Vec<(f64, PathBuf)> = Vec::new();
    for f in files {
        let obj = dicom_object::open_file(f).unwrap();
        let z = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap()[2];
        slices.push((z, f.clone()));
    }
    slices.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (k, (_, f)) in slices.iter().enumerate() {
        let mut obj = dicom_object::open_file(f).unwrap();
        let mut ipp = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let name = f.file_name().unwrap();
        if k != 3 {
            obj.write_to_file(gap.path().join(name)).unwrap();
        }
        ipp[1] += 0.5 * k as f64; // 0.5 mm posterior drift per slice
        let s = format!("{:.4}\\{:.4}\\{:.4}", ipp[0], ipp[1], ipp[2]);
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(s),
        ));
        obj.write_to_file(tilt.path().join(name)).unwrap();
    }
    let err = io::read_image(tilt.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, IoError::Unsupported { .. }) && msg.contains("gantry tilt"),
        "{msg}"
    );
    let err = io::read_image(gap.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, IoError::Unsupported { .. }) && msg.contains("non-uniform slice spacing"),
        "{msg}"
    );
    // The untouched subset reads fine.
    let ok = tempfile::tempdir().unwrap();
    for (_, f) in &slices {
        std::fs::copy(f, ok.path().join(f.file_name().unwrap())).unwrap();
    }
    let v = io::read_image(ok.path()).unwrap();
    assert_eq!(v.data.dim(), (6, 201, 204));
    assert!((v.geometry.spacing[0] - 3.0).abs() < 1e-6);
}

/// The NIfTI writer is the reader's inverse (grid and values), in float32 and int16, raw and gzip;
/// a label map reads straight into the same mask as via the f64 path.
#[test]
fn nifti_writer_round_trips_the_ct_phantom() {
    let (img, mask) = ct();
    let dims: [usize; 3] = img.data.dim().into();
    let dir = tempfile::tempdir().unwrap();
    for (name, int16) in [("ct_f32.nii", false), ("ct_i16.nii.gz", true)] {
        let p = dir.path().join(name);
        io::nifti::write_nifti(&p, img, int16).unwrap();
        let back = io::read_image(&p).unwrap();
        io::check_same_grid(&img.geometry, dims, &back.geometry, back.data.dim().into())
            .expect("same grid");
        assert_eq!(
            back.data, img.data,
            "{name}: integer HU survive float32 and int16"
        );
    }
    let labels = Volume {
        data: mask.data.mapv(|m| if m { 3.0 } else { 0.0 }),
        geometry: mask.geometry.clone(),
    };
    let p = dir.path().join("labels.nii.gz");
    io::nifti::write_nifti(&p, &labels, true).unwrap();
    let sel = MaskSelection {
        label: Some(3),
        ..Default::default()
    };
    let m = io::read_mask(&p, &img.geometry, dims, &sel).unwrap();
    assert!(m.data == mask.data);
}
