//! The bad-input corpus (`tests/corpus/`, written by `tests/corpus/generate.py`, plus inputs the
//! fuzzers found): every malformed NIfTI / NRRD / DICOM / CSV / TOML file is fed to the real
//! parser and must give an error whose message names the problem. A panic fails the test, and
//! so does an allocation sized by a header field alone: each family runs in a child process
//! whose address space is capped at 2 GiB (`ulimit -v`), while several files claim 8 GiB of
//! voxels in a few hundred bytes.
//!
//! Every file in a corpus folder must have an expectation here, so a new file cannot be added
//! without saying what error it must give.

use federation::policy::SitePolicy;
use federation::study::StudySpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Address-space cap of the child process, in KiB (2 GiB).
const ADDRESS_SPACE_KIB: u64 = 2 * 1024 * 1024;
const CHILD_ENV: &str = "FEDRAD_CORPUS_CHILD";

fn corpus(family: &str) -> PathBuf {
    fedrad_tests::repo_root().join("tests/corpus").join(family)
}

/// In the parent: re-runs this one test in a child under the address-space cap and checks that
/// it passed; returns `false`. In the child: returns `true` (run the checks).
fn in_capped_child(test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    if !cfg!(target_os = "linux") {
        return true; // no `ulimit -v` to rely on: run the checks uncapped
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" --exact {test} --test-threads=1 --nocapture"
        ))
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test} failed under a {ADDRESS_SPACE_KIB} KiB address-space cap:\n{text}"
    );
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    false
}

/// Feeds every file of `family` to `parse` and checks its error against `cases`
/// (file name → substrings the message must contain). Catches panics to name the file.
fn check_family(
    family: &str,
    cases: &[(&str, &[&str])],
    parse: impl Fn(&Path) -> Result<(), String> + std::panic::RefUnwindSafe,
) {
    let dir = corpus(family);
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = cases.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "tests/corpus/{family} and the expectations in corpus.rs disagree"
    );
    let mut failures = Vec::new();
    for (file, needles) in cases {
        let path = dir.join(file);
        match std::panic::catch_unwind(|| parse(&path)) {
            Err(_) => failures.push(format!("{file}: the parser panicked")),
            Ok(Ok(())) => failures.push(format!("{file}: accepted, expected an error")),
            Ok(Err(msg)) => {
                for n in *needles {
                    if !msg.contains(n) {
                        failures.push(format!("{file}: message lacks {n:?}: {msg}"));
                    }
                }
                if msg.contains('\n') {
                    failures.push(format!("{file}: message spans several lines: {msg}"));
                }
                println!("{family}/{file}: {msg}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn image(path: &Path) -> Result<(), String> {
    radiomics::io::read_image(path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn nifti_corpus() {
    if !in_capped_child("nifti_corpus") {
        return;
    }
    check_family(
        "nifti",
        &[
            ("truncated_header.nii", &["inside the 348-byte header"]),
            ("wrong_magic.nii", &["bad magic"]),
            ("bad_sizeof_hdr.nii", &["sizeof_hdr is 999"]),
            (
                "absurd_dims_2pow31.nii",
                &["[2048, 1024, 1024]", "2147483648 in total", "limit"],
            ),
            ("huge_claim_tiny_file.nii", &["truncated", "file has 0"]),
            ("huge_claim_tiny_file.nii.gz", &["truncated", "file has 0"]),
            ("negative_dim.nii", &["dim[2] = -5 must be positive"]),
            ("zero_ndim.nii", &["dim[0] = 0, must be 1..7"]),
            (
                "unknown_datatype.nii",
                &["datatype code 9999", "not supported"],
            ),
            ("rgb_datatype.nii", &["RGB24", "not supported"]),
            (
                "data_shorter_than_header.nii",
                &["truncated", "file has 10"],
            ),
            ("nan_voxel_size.nii", &["non-finite spacing"]),
            (
                "vox_offset_inside_header.nii",
                &["vox_offset 100 points inside"],
            ),
            ("vox_offset_past_end.nii", &["file ends before vox_offset"]),
            ("four_d.nii", &["4-dimensional image"]),
            ("not_gzip.nii.gz", &["corrupt or truncated compressed data"]),
            (
                "truncated_gzip.nii.gz",
                &["corrupt or truncated compressed data"],
            ),
        ],
        image,
    );
}

#[test]
fn nrrd_corpus() {
    if !in_capped_child("nrrd_corpus") {
        return;
    }
    check_family(
        "nrrd",
        &[
            ("wrong_magic.nrrd", &["missing NRRD000x magic"]),
            ("truncated_header.nrrd", &["'dimension'"]),
            (
                "absurd_dims_2pow31.nrrd",
                &["[2048, 1024, 1024]", "2147483648 in total", "limit"],
            ),
            (
                "huge_claim_tiny_file.nrrd",
                &["truncated", "2097152000 bytes", "0 present"],
            ),
            ("negative_dims.nrrd", &["'sizes'", "\"2 -2 2\""]),
            ("zero_dim.nrrd", &["zero-length dimension"]),
            ("unknown_type.nrrd", &["NRRD type \"quaternion\""]),
            ("data_shorter_than_header.nrrd", &["truncated", "5 present"]),
            ("nan_voxel_size.nrrd", &["non-finite spacing"]),
            (
                "nan_spacings.nrrd",
                &["'spacings' must be 3 positive numbers"],
            ),
            ("missing_sizes.nrrd", &["missing 'sizes' field"]),
            ("four_d.nrrd", &["4-dimensional NRRD"]),
            ("unknown_encoding.nrrd", &["NRRD encoding \"bzip2\""]),
            ("corrupt_gzip.nrrd", &["corrupt or truncated gzip data"]),
            ("bad_ascii_value.nrrd", &["bad ascii value"]),
            ("unreadable_header_line.nrrd", &["unreadable header line"]),
            (
                "missing_data_file.nhdr",
                &["cannot read", "does-not-exist.raw"],
            ),
            (
                "data_file_is_a_device.nhdr",
                &["'data file' /dev/zero is not a regular file"],
            ),
        ],
        image,
    );
}

#[test]
fn dicom_corpus() {
    if !in_capped_child("dicom_corpus") {
        return;
    }
    // The series reader takes a folder: each file is read as a one-slice series.
    let parse = |file: &Path| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(file, dir.path().join("slice.dcm")).unwrap();
        image(dir.path())
    };
    check_family(
        "dicom",
        &[
            (
                "not_dicom.dcm",
                &["no DICOM image slices", "could not be read as DICOM"],
            ),
            (
                "wrong_magic.dcm",
                &["no DICOM image slices", "could not be read as DICOM"],
            ),
            (
                "truncated_header.dcm",
                &["no DICOM image slices", "could not be read as DICOM"],
            ),
            ("data_shorter_than_header.dcm", &["slice.dcm"]),
            ("absurd_dims.dcm", &["[65535, 65535, 1]", "limit"]),
            ("huge_claim_tiny_file.dcm", &["slice.dcm"]),
            ("zero_rows.dcm", &["zero-length dimension"]),
            ("nan_voxel_size.dcm", &["PixelSpacing", "non-finite"]),
            (
                "missing_orientation.dcm",
                &["missing ImageOrientationPatient"],
            ),
            (
                "degenerate_orientation.dcm",
                &["not two orthonormal vectors"],
            ),
            ("unknown_bits_allocated.dcm", &["slice.dcm"]),
        ],
        parse,
    );
}

#[test]
fn csv_corpus() {
    if !in_capped_child("csv_corpus") {
        return;
    }
    // Loading checks the structure; the typed accessors every analysis uses check the cells.
    let parse = |file: &Path| {
        let table = site_agent::data::load_table(file, "patient_id").map_err(|e| e.to_string())?;
        table.numeric_column("age").map_err(|e| e.to_string())?;
        table
            .label_column("response", "1", "0")
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    check_family(
        "csv",
        &[
            (
                "missing_id_column.csv",
                &["column \"patient_id\" is missing"],
            ),
            (
                "ragged_rows.csv",
                &["row 2 has 2 cells but the header has 3"],
            ),
            ("duplicate_column.csv", &["\"age\" appears twice"]),
            ("empty.csv", &["no header row"]),
            (
                "non_numeric.csv",
                &[
                    "column \"age\" row 2 (patient P2)",
                    "\"sixty\" is not a number",
                ],
            ),
            ("infinite_value.csv", &["\"inf\" is not a number"]),
            ("bad_label.csv", &["\"yes\" is neither of the labels"]),
            ("invalid_utf8.csv", &["invalid_utf8.csv line 2", "UTF-8"]),
        ],
        parse,
    );
}

#[test]
fn toml_corpus() {
    if !in_capped_child("toml_corpus") {
        return;
    }
    // The file name says which loader: study_* → StudySpec, policy_* → SitePolicy, site_* →
    // the agent's site.toml loader.
    let parse = |file: &Path| {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        if name.starts_with("study_") {
            StudySpec::from_toml(&text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else if name.starts_with("policy_") {
            SitePolicy::from_toml(&text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            site_agent::SiteConfig::load(file)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    // toml's messages quote the offending line; they are flattened to one line for the check.
    let parse = move |file: &Path| parse(file).map_err(|m| m.replace('\n', " "));
    check_family(
        "toml",
        &[
            ("study_unknown_key.toml", &["unknown field `colour`"]),
            // serde's tagged enum hides the field name; toml points at the [analysis] table.
            (
                "study_wrong_type.toml",
                &[
                    "invalid type: string \"age\", expected a sequence",
                    "[analysis]",
                ],
            ),
            ("study_missing_analysis.toml", &["missing field `analysis`"]),
            (
                "study_unknown_kind.toml",
                &["unknown variant `deep_learning`"],
            ),
            (
                "study_bad_id.toml",
                &["\"../etc/passwd\"", "1 to 64 characters"],
            ),
            (
                "study_categorical_not_listed.toml",
                &["categorical variable \"stage\" is not in analysis.variables"],
            ),
            ("study_not_toml.toml", &["study spec:", "line 1"]),
            ("policy_unknown_key.toml", &["unknown field `min_cuont`"]),
            ("policy_wrong_type.toml", &["invalid type", "min_count"]),
            (
                "policy_zero_min_count.toml",
                &["min_count must be at least 1"],
            ),
            (
                "policy_nan_ratio.toml",
                &["max_params_per_row must be a positive number"],
            ),
            (
                "policy_negative_ratio.toml",
                &["max_params_per_row must be a positive number (got -1)"],
            ),
            ("site_unknown_key.toml", &["unknown field `pasword`"]),
            ("site_wrong_type.toml", &["invalid type", "aggregator_url"]),
            ("site_missing_field.toml", &["missing field `key`"]),
        ],
        parse,
    );
}
