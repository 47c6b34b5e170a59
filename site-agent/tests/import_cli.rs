//! `site-agent import-features` on exports as real sites have them: a pyradiomics batch CSV
//! (image/mask paths, `diagnostics_*` columns with tuples and versions, filtered-image features)
//! and a LIFEx 7 export; mapped columns become IBSI tags with their conversion, and every column
//! that could not be mapped is named on stderr with the reason.

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_site-agent"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn read_table(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    (h, rows)
}

#[test]
fn a_pyradiomics_batch_export_is_mapped_and_its_other_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pyrad.csv"),
        "ID,Image,Mask,diagnostics_Versions_PyRadiomics,diagnostics_Mask-original_BoundingBox,original_shape_VoxelVolume,original_firstorder_Mean,original_firstorder_Kurtosis,wavelet-LLH_firstorder_Mean,age\n\
         P1,ct/P1.nrrd,seg/P1_L1.nrrd,v3.1.0,\"(10, 12, 5, 20, 20, 8)\",1000,40,4.5,3,61\n\
         P1,ct/P1.nrrd,seg/P1_L2.nrrd,v3.1.0,\"(40, 42, 9, 10, 10, 4)\",3000,60,5.5,4,61\n\
         P2,ct/P2.nrrd,seg/P2_L1.nrrd,v3.1.0,\"(1, 2, 3, 4, 5, 6)\",500,10,3.0,1,70\n",
    )
    .unwrap();
    let out = agent(
        &[
            "import-features",
            "--format",
            "pyradiomics",
            "--table",
            "pyrad.csv",
            "--id-column",
            "ID",
            "--out",
            "features.csv",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for col in [
        "Image",
        "Mask",
        "diagnostics_Versions_PyRadiomics",
        "diagnostics_Mask-original_BoundingBox",
        "wavelet-LLH_firstorder_Mean",
        "age",
    ] {
        assert!(
            stderr.contains(&format!("unmapped column {col:?}: ")),
            "{col} not reported as unmapped:\n{stderr}"
        );
    }
    assert!(stderr.contains("6 unmapped"), "{stderr}");
    let (h, rows) = read_table(&dir.path().join("features.csv"));
    assert_eq!(&h[..2], ["patient_id", "n_lesions"]);
    let col = |t: &str| {
        h.iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("{t} in {h:?}"))
    };
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][1], "2", "two lesions of P1");
    // Lesions are averaged; pyradiomics kurtosis is the non-excess one (IBSI = value - 3).
    assert_eq!(rows[0][col("stat_mean")], "50");
    assert_eq!(rows[0][col("stat_kurt")], "2");
    assert_eq!(rows[1][col("stat_kurt")], "0");
}

#[test]
fn a_lifex7_export_maps_through_the_renamed_families() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifex.csv"),
        "patient_id,INTENSITY_BASED_mean,INTENSITY_BASED_std,GLCM_Homogeneity [=Inverse difference],INTENSITY-HISTOGRAM_mean,Comment\n\
         P7,12.5,3,0.4,110,reviewed\n",
    )
    .unwrap();
    let out = agent(
        &[
            "import-features",
            "--format",
            "lifex",
            "--table",
            "lifex.csv",
            "--out",
            "features.csv",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unmapped column \"INTENSITY-HISTOGRAM_mean\": "),
        "{stderr}"
    );
    assert!(stderr.contains("unmapped column \"Comment\": "), "{stderr}");
    let (h, rows) = read_table(&dir.path().join("features.csv"));
    let get = |t: &str| rows[0][h.iter().position(|x| x == t).unwrap()].clone();
    assert_eq!(get("stat_mean"), "12.5");
    assert_eq!(get("stat_var"), "9", "LIFEx std 3 -> IBSI variance 9");
    assert_eq!(get("cm_inv_diff_3D_avg"), "0.4");
}
