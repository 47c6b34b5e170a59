//! `site-agent extract` end to end: IBSI CT phantom values through the CLI (NIfTI and DICOM +
//! RTSTRUCT), the cohort manifest (parallel, deterministic, per-lesion failures), and every kind of
//! bad input giving one clear error line, exit code 1 and no output file.
//!
//! The IBSI matching rule is the radiomics test helper, included from its one source file.

#[path = "../../radiomics/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::Array3;
use radiomics::io::nifti::write_nifti;
use radiomics::{Geometry, Volume};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_site-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{:?} does not mention {n:?}",
            lines[0]
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `feature,ibsi_code,value` → tag → (value, code).
fn parse_features(csv: &str) -> HashMap<String, (f64, String)> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("feature,ibsi_code,value"));
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            assert_eq!(c.len(), 3, "{l}");
            (c[0].to_string(), (c[2].parse().unwrap(), c[1].to_string()))
        })
        .collect()
}

fn check_config(config: &str, csv: &str) -> (usize, usize) {
    let got = parse_features(csv);
    let rows = common::reference_rows("ct", config, |f| f != "diagnostics");
    let sc = common::score(config, &rows, |t| {
        got.get(t).map(|(v, c)| (*v, Some(c.as_str())))
    });
    sc.print(config);
    assert!(sc.misses.is_empty(), "{}", sc.misses.join("\n"));
    // Every output tag is a registry tag with its code.
    for (tag, (_, code)) in &got {
        let def = radiomics::registry::by_tag(tag).expect("registry tag");
        assert_eq!(def.ibsi_code, code);
    }
    (sc.matched(), sc.total())
}

#[test]
fn ibsi_config_c_through_the_cli_nifti_and_dicom() {
    let ibsi = common::ibsi_dir().join("ct_phantom");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.csv");
    ok(&agent(&[
        "extract",
        "--image",
        s(&ibsi.join("nifti/image/phantom.nii.gz")),
        "--mask",
        s(&ibsi.join("nifti/mask/mask.nii.gz")),
        "--preset",
        "ibsi-c",
        "--out",
        s(&out),
    ]));
    let nifti = std::fs::read_to_string(&out).unwrap();
    assert_eq!(check_config("C", &nifti), (210, 210));

    // DICOM series + RTSTRUCT to stdout: the same table.
    let dicom = ok(&agent(&[
        "extract",
        "--image",
        s(&ibsi.join("dicom/image")),
        "--mask",
        s(&ibsi.join("dicom/mask/DCM_RS_00060.dcm")),
        "--roi",
        "GTV-1",
        "--preset",
        "ibsi-c",
    ]));
    assert_eq!(check_config("C", &dicom), (210, 210));
}

/// A synthetic CT-like cube with a textured spherical lesion per label.
fn write_case(dir: &Path, name: &str, labels: &[(usize, [f64; 3], f64)]) -> (PathBuf, PathBuf) {
    let n = 40;
    let g = Geometry::with_spacing([1.5, 0.9, 0.9]);
    let data = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        (30.0 + 80.0 * ((x * 7 + y * 3 + z * 5) % 13) as f64 / 13.0 - 20.0 * (z % 3) as f64).round()
    });
    let lab = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        labels
            .iter()
            .find(|(_, c, r)| {
                (z as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2) + (x as f64 - c[2]).powi(2)
                    <= r * r
            })
            .map_or(0.0, |l| l.0 as f64)
    });
    let img = dir.join(format!("{name}_ct.nii.gz"));
    let mask = dir.join(format!("{name}_labels.nii.gz"));
    write_nifti(
        &img,
        &Volume {
            data,
            geometry: g.clone(),
        },
        true,
    )
    .unwrap();
    write_nifti(
        &mask,
        &Volume {
            data: lab,
            geometry: g,
        },
        true,
    )
    .unwrap();
    (img, mask)
}

#[test]
fn manifest_cohort_is_deterministic_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_case(
        d,
        "p1",
        &[(1, [12.0, 15.0, 15.0], 5.0), (2, [26.0, 24.0, 24.0], 7.0)],
    );
    write_case(d, "p2", &[(1, [20.0, 20.0, 20.0], 6.0)]);
    write_case(d, "p3", &[(1, [20.0, 20.0, 20.0], 6.0)]);
    let manifest = d.join("lesions.csv");
    std::fs::write(
        &manifest,
        "patient_id,lesion_id,image,mask,mask_label\n\
         P1,L1,p1_ct.nii.gz,p1_labels.nii.gz,1\n\
         P2,L1,p2_ct.nii.gz,p2_labels.nii.gz,1\n\
         P1,L2,p1_ct.nii.gz,p1_labels.nii.gz,2\n\
         P2,L2,p2_ct.nii.gz,p2_labels.nii.gz,7\n\
         P3,L1,missing.nii.gz,p3_labels.nii.gz,1\n\
         P3,L2,missing.nii.gz,p3_labels.nii.gz,1\n",
    )
    .unwrap();
    let run = |threads: &str, agg: &str, out: &Path| {
        agent(&[
            "extract",
            "--manifest",
            s(&manifest),
            "--preset",
            "paper",
            "--threads",
            threads,
            "--lesion-aggregation",
            agg,
            "--out",
            s(out),
        ])
    };
    let (o1, o2) = (d.join("t1.csv"), d.join("t2.csv"));
    let r1 = run("1", "mean", &o1);
    ok(&r1);
    ok(&run("2", "mean", &o2));
    let t1 = std::fs::read_to_string(&o1).unwrap();
    assert_eq!(
        t1,
        std::fs::read_to_string(&o2).unwrap(),
        "thread count changes nothing"
    );
    let mut lines = t1.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..2], &["patient_id", "n_lesions"]);
    assert!(header.contains(&"morph_volume") && header.contains(&"ngt_coarseness_3D"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "P3 has no successful lesion: no row");
    assert_eq!((rows[0][0], rows[0][1]), ("P1", "2"));
    assert_eq!((rows[1][0], rows[1][1]), ("P2", "1"));

    // Failures: stderr lines and the errors table.
    let err = String::from_utf8_lossy(&r1.stderr);
    assert!(
        err.contains("patient P2 lesion L2") && err.contains("label 7"),
        "{err}"
    );
    assert!(
        err.contains("patient P3 lesion L1") && err.contains("missing.nii.gz"),
        "{err}"
    );
    let errors = std::fs::read_to_string(d.join("t1.csv.errors.csv")).unwrap();
    let e: Vec<&str> = errors.lines().collect();
    assert_eq!(e[0], "patient_id,lesion_id,reason");
    assert_eq!(e.len(), 5, "{errors}");
    assert!(e[1].starts_with("P2,L2,") && e[2].starts_with("P3,L1,") && e[4].starts_with("P3,,"));
    // The second lesion of the unreadable image gets the same reason (image read once).
    assert!(
        e[3].starts_with("P3,L2,") && e[3].contains("missing.nii.gz"),
        "{errors}"
    );

    // P1 = mean of its two lesions extracted one by one.
    let single = |label: &str| {
        parse_features(&ok(&agent(&[
            "extract",
            "--image",
            s(&d.join("p1_ct.nii.gz")),
            "--mask",
            s(&d.join("p1_labels.nii.gz")),
            "--mask-label",
            label,
        ])))
    };
    let (l1, l2) = (single("1"), single("2"));
    for (k, tag) in header.iter().enumerate().skip(2) {
        let (a, b) = (l1[*tag].0, l2[*tag].0);
        let want = match (a.is_nan(), b.is_nan()) {
            (true, true) => f64::NAN,
            (true, false) => b,
            (false, true) => a,
            _ => (a + b) / 2.0,
        };
        let got: f64 = rows[0][k].parse().unwrap();
        assert!(
            (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{tag}: {got} vs {want}"
        );
    }
    // Largest lesion = lesion 2 (radius 7).
    let o3 = d.join("t3.csv");
    ok(&run("2", "largest", &o3));
    let t3 = std::fs::read_to_string(&o3).unwrap();
    let p1: Vec<&str> = t3.lines().nth(1).unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == "stat_mean").unwrap();
    assert_eq!(p1[k].parse::<f64>().unwrap(), l2["stat_mean"].0);
}

#[test]
fn bad_manifests_are_rejected_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    let out = dir.path().join("o.csv");
    for (text, needle) in [
        (
            "patient,lesion_id,image,mask\nP1,L1,a,b\n",
            "missing column \"patient_id\"",
        ),
        ("patient_id,lesion_id,image,mask\n", "no lesion rows"),
        (
            "patient_id,lesion_id,image,mask\nP1,L1,a,b\nP1,L1,c,d\n",
            "already listed on line 2",
        ),
        (
            "patient_id,lesion_id,image,mask,mask_label\nP1,L1,a,b,one\n",
            "not an integer",
        ),
    ] {
        std::fs::write(&m, text).unwrap();
        fails_with(
            &agent(&["extract", "--manifest", s(&m), "--out", s(&out)]),
            &[needle],
        );
        assert!(!out.exists());
    }
    std::fs::write(&m, "patient_id,lesion_id,image,mask\nP1,L1,a.nii,b.nii\n").unwrap();
    let o = agent(&["extract", "--manifest", s(&m), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    // The lesion, the patient, then the run: each on its own line, the last one fatal.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("lesion L1") && lines[0].contains("a.nii"),
        "{err}"
    );
    assert!(lines[2].contains("no lesion of the 1"), "{err}");
    assert!(!out.exists());
    assert!(dir.path().join("o.csv.errors.csv").exists());
}

/// Every bad input: one error line naming the problem (and the file), exit 1, no output file.
#[test]
fn bad_lesion_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, mask) = write_case(d, "c", &[(1, [20.0, 20.0, 20.0], 5.0)]);
    let out = d.join("out.csv");
    let run = |image: &Path, mask: &Path, extra: &[&str]| {
        let mut a = vec![
            "extract",
            "--image",
            s(image),
            "--mask",
            s(mask),
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        let o = agent(&a);
        assert!(!out.exists(), "no output on error");
        o
    };
    // Label absent / empty mask.
    fails_with(
        &run(&img, &mask, &["--mask-label", "4"]),
        &["mask is empty", "label 4"],
    );
    let g = Geometry::with_spacing([1.5, 0.9, 0.9]);
    let empty = d.join("empty.nii");
    write_nifti(
        &empty,
        &Volume {
            data: Array3::zeros((40, 40, 40)),
            geometry: g.clone(),
        },
        true,
    )
    .unwrap();
    fails_with(&run(&img, &empty, &[]), &["empty.nii", "mask is empty"]);
    // Mask on another grid (shifted origin: "outside the image") and of another size.
    let shifted = d.join("shifted.nii");
    let mut gs = g.clone();
    gs.origin = [0.0, 0.0, 100.0];
    write_nifti(
        &shifted,
        &Volume {
            data: Array3::from_elem((40, 40, 40), 1.0),
            geometry: gs,
        },
        true,
    )
    .unwrap();
    fails_with(&run(&img, &shifted, &[]), &["grids differ", "origin"]);
    let small = d.join("small.nii");
    write_nifti(
        &small,
        &Volume {
            data: Array3::from_elem((10, 40, 40), 1.0),
            geometry: g.clone(),
        },
        true,
    )
    .unwrap();
    fails_with(&run(&img, &small, &[]), &["grids differ", "size"]);
    // Everything outside the re-segmentation range.
    fails_with(
        &run(&img, &mask, &["--resegment", "5000,6000"]),
        &["c_ct.nii.gz", "re-segmentation removed every ROI voxel"],
    );
    // NaN voxels in the ROI (float32 image).
    let nan_img = d.join("nan.nii.gz");
    let mut v = radiomics::io::read_image(&img).unwrap();
    v.data[[20, 20, 20]] = f64::NAN;
    write_nifti(&nan_img, &v, false).unwrap();
    fails_with(
        &run(&nan_img, &mask, &[]),
        &["nan.nii.gz", "non-finite", "z=20, y=20, x=20"],
    );
    // Truncated and corrupt files.
    let bytes = std::fs::read(&img).unwrap();
    let trunc = d.join("trunc.nii.gz");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&run(&trunc, &mask, &[]), &["trunc.nii.gz"]);
    let junk = d.join("junk.nii");
    std::fs::write(&junk, vec![42u8; 1000]).unwrap();
    fails_with(&run(&junk, &mask, &[]), &["junk.nii", "not a NIfTI file"]);
    fails_with(&run(&img, &junk, &[]), &["junk.nii"]);
    // Unknown format.
    fails_with(
        &run(&d.join("x.png"), &mask, &[]),
        &["cannot tell the format"],
    );

    // DICOM: a series with a missing slice, and a SEG mask.
    let ibsi = common::ibsi_dir().join("ct_phantom/dicom");
    let gap = d.join("gap");
    std::fs::create_dir(&gap).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(ibsi.join("image"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (k, f) in files.iter().enumerate() {
        if k != 30 {
            std::fs::copy(f, gap.join(f.file_name().unwrap())).unwrap();
        }
    }
    let rs = ibsi.join("mask/DCM_RS_00060.dcm");
    fails_with(
        &run(&gap, &rs, &["--roi", "GTV-1"]),
        &["gap", "non-uniform slice spacing"],
    );
    // Same RTSTRUCT bytes with the modality spelled SEG (same length, space-padded).
    let mut seg = std::fs::read(&rs).unwrap();
    let pat = b"RTSTRUCT";
    let mut n = 0;
    for i in 0..seg.len() - pat.len() {
        if &seg[i..i + pat.len()] == pat {
            seg[i..i + pat.len()].copy_from_slice(b"SEG     ");
            n += 1;
        }
    }
    assert!(n > 0);
    let segp = d.join("seg.dcm");
    std::fs::write(&segp, seg).unwrap();
    fails_with(
        &run(&ibsi.join("image"), &segp, &[]),
        &["DICOM-SEG", "not supported yet"],
    );
    // RTSTRUCT without the ROI name: the error lists the ROIs.
    fails_with(
        &run(&ibsi.join("image"), &rs, &["--roi", "nope"]),
        &["GTV-1", "--roi"],
    );

    // Usage errors: exit 1 with a hint.
    fails_with(
        &agent(&[
            "extract",
            "--image",
            s(&img),
            "--mask",
            s(&mask),
            "--resegment",
            "x",
        ]),
        &["--resegment"],
    );
}

/// One-voxel ROI: computed, with NaN where a feature is undefined (documented decision).
#[test]
fn one_voxel_roi_gives_values_and_nans() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write_case(dir.path(), "o", &[]);
    let mut m = Array3::zeros((40, 40, 40));
    m[[20, 20, 20]] = 1.0;
    let mask = dir.path().join("one.nii");
    write_nifti(
        &mask,
        &Volume {
            data: m,
            geometry: Geometry::with_spacing([1.5, 0.9, 0.9]),
        },
        true,
    )
    .unwrap();
    // Keep the native grid: resampling a 0.9×0.9×1.5 mm voxel to 1 mm would lose it at δ = 0.5.
    let f = parse_features(&ok(&agent(&[
        "extract",
        "--image",
        s(&img),
        "--mask",
        s(&mask),
        "--interpolation",
        "none",
    ])));
    assert_eq!(f["stat_var"].0, 0.0);
    assert!(f["cm_joint_max_3D_avg"].0.is_nan());
    assert_eq!(f["szm_z_perc_3D"].0, 1.0);
    // Resampled to 3 mm the voxel vanishes (partial volume < 0.5): a clear error.
    fails_with(
        &agent(&[
            "extract",
            "--image",
            s(&img),
            "--mask",
            s(&mask),
            "--spacing",
            "3",
        ]),
        &["vanished after interpolation"],
    );
}

/// `import-features` on the pyradiomics-style example cohort: one row per patient, kurtosis
/// converted, clinical and non-IBSI columns reported as unmapped.
#[test]
fn import_pyradiomics_example_cohort() {
    let table =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.csv");
    let o = agent(&[
        "import-features",
        "--format",
        "pyradiomics",
        "--table",
        s(&table),
        "--out",
        s(&out),
    ]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unmapped column \"site\""), "{err}");
    assert!(
        err.contains("unmapped column \"original_glcm_Homogeneity\"") && err.contains("ambiguous"),
        "{err}"
    );
    assert!(
        err.contains("unmapped column \"original_shape_Maximum2DDiameterSlice\""),
        "{err}"
    );
    assert!(
        err.contains("original_firstorder_Kurtosis -> stat_kurt"),
        "{err}"
    );
    let src = std::fs::read_to_string(&table).unwrap();
    let mut src_lines = src.lines();
    let src_header: Vec<&str> = src_lines.next().unwrap().split(',').collect();
    let first: Vec<&str> = src_lines.next().unwrap().split(',').collect();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..2], &["patient_id", "n_lesions"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), src.lines().count() - 1, "one row per patient");
    assert_eq!((rows[0][0], rows[0][1]), (first[0], "1"));
    let col = |h: &[&str], name: &str| h.iter().position(|x| *x == name).unwrap();
    let v = |r: &[&str], k: usize| r[k].parse::<f64>().unwrap();
    assert_eq!(
        v(&rows[0], col(&header, "stat_mean")),
        v(&first, col(&src_header, "original_firstorder_Mean"))
    );
    assert!(
        (v(&rows[0], col(&header, "stat_kurt"))
            - (v(&first, col(&src_header, "original_firstorder_Kurtosis")) - 3.0))
            .abs()
            < 1e-12
    );
    assert_eq!(
        v(&rows[0], col(&header, "szm_zsnu_3D")),
        v(
            &first,
            col(&src_header, "original_glszm_SizeZoneNonUniformity")
        )
    );
    // Every output column is a registry tag.
    for t in &header[2..] {
        assert!(radiomics::registry::by_tag(t).is_some(), "{t}");
    }
}
