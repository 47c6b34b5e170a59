//! `site-agent validate` on a site whose files carry many distinct problems at once: one run must
//! list every one of them (file, line, fix), exit with code 1, and open no network connection.

use std::net::TcpListener;
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

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A site kit in `dir/S01` whose aggregator URL is a local port that nobody should dial, a
/// 4-patient synthetic cohort in `dir/S01/cohort/S01`, and its clinical table as the data table.
fn site(dir: &Path, listener: &TcpListener) -> std::path::PathBuf {
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let mut ca = certs::Ca::init(&dir.join("ca"), "t", 5).unwrap();
    let kit = ca
        .write_site_kit("S01", dir, &url, certs::Validity::days(1))
        .unwrap();
    let out = agent(
        &[
            "synth",
            "--sites",
            "1",
            "--patients",
            "6",
            "--seed",
            "5",
            "--out",
            "cohort",
        ],
        &kit,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    kit
}

fn study(kit: &Path) {
    std::fs::write(
        kit.join("table1.toml"),
        "id = \"t1\"\n[analysis]\nkind = \"table1\"\nlabel_column = \"response\"\n\
         variables = [\"age\", \"ki67\", \"grade\", \"tumour_stage\"]\n\
         categorical = [\"grade\", \"tumour_stage\"]\n",
    )
    .unwrap();
}

#[test]
fn every_problem_is_listed_in_one_run_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let kit = site(dir.path(), &listener);
    let cohort = kit.join("cohort/S01");

    // The clean site first: no problem, exit 0 (so every problem below is one we introduced).
    std::fs::copy(cohort.join("clinical.csv"), kit.join("data.csv")).unwrap();
    std::fs::write(
        kit.join("site.toml"),
        std::fs::read_to_string(kit.join("site.toml"))
            .unwrap()
            .replace("data/cohort.csv", "data.csv"),
    )
    .unwrap();
    std::fs::write(kit.join("policy.toml"), "min_count = 3\n").unwrap();
    let out = agent(
        &[
            "validate",
            "--config",
            "site.toml",
            "--manifest",
            "cohort/S01/lesions.csv",
        ],
        &kit,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok: no problem found"), "{stdout}");
    assert!(stdout.contains("6 patients"), "{stdout}");

    // Now break it in many independent ways.
    // Policy: two impossible values and a malformed hash.
    std::fs::write(
        kit.join("policy.toml"),
        "min_count = 0\nmax_params_per_row = -1\nallowed_studies = [\"not-a-hash\"]\n",
    )
    .unwrap();
    // Data table: a duplicate id, an empty id, a decimal comma, a bad label; the study needs a
    // column the table lacks.
    let clinical = std::fs::read_to_string(cohort.join("clinical.csv")).unwrap();
    let mut lines: Vec<String> = clinical.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (c_id, c_resp, c_ki67) = (col("patient_id"), col("response"), col("ki67"));
    let set = |line: &str, c: usize, v: &str| {
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        cells[c] = v.to_string();
        cells.join(",")
    };
    let first_id = lines[1].split(',').nth(c_id).unwrap().to_string();
    let third_id = lines[3].split(',').nth(c_id).unwrap().to_string();
    lines[2] = set(&lines[2], c_ki67, "\"12,5\"");
    lines[3] = set(&lines[3], c_id, &first_id); // line 4 repeats line 2's patient
    lines[4] = set(&lines[4], c_resp, "2");
    lines[5] = set(&lines[5], c_id, "");
    std::fs::write(kit.join("data.csv"), lines.join("\n") + "\n").unwrap();
    study(&kit);

    // Manifest: a missing image, a corrupt image, a mask on another patient's grid, an empty
    // mask (a label that is not in the mask), a repeated lesion row. `third_id` lost its row in
    // the table above, so its lesions have no clinical row either.
    let manifest = std::fs::read_to_string(cohort.join("lesions.csv")).unwrap();
    let mut m: Vec<String> = manifest.lines().map(String::from).collect();
    assert!(
        m[0].starts_with("patient_id,lesion_id,image,mask"),
        "{}",
        m[0]
    );
    m[0].push_str(",mask_label");
    for l in m.iter_mut().skip(1) {
        l.push(',');
    }
    let rows: Vec<Vec<String>> = m[1..]
        .iter()
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let other_patient_image = rows
        .iter()
        .find(|r| r[0] != rows[0][0])
        .map(|r| r[2].clone())
        .unwrap();
    std::fs::write(
        cohort.join("images/broken.nii.gz"),
        b"this is not a NIfTI file",
    )
    .unwrap();
    let extra = [
        format!("PX1,L1,images/nowhere.nii.gz,{},", rows[0][3]),
        format!("PX2,L1,images/broken.nii.gz,{},", rows[0][3]),
        format!("{},L9,{other_patient_image},{},", rows[0][0], rows[0][3]),
        format!("{},L8,{},{},7", rows[0][0], rows[0][2], rows[0][3]),
        format!(
            "{},{},{},{},",
            rows[0][0], rows[0][1], rows[0][2], rows[0][3]
        ),
    ];
    m.extend(extra.iter().cloned());
    std::fs::write(cohort.join("lesions.csv"), m.join("\n") + "\n").unwrap();
    // A kit file gone.
    std::fs::remove_file(kit.join("ca.pem")).unwrap();

    let out = agent(
        &[
            "validate",
            "--config",
            "site.toml",
            "--manifest",
            "cohort/S01/lesions.csv",
            "--study",
            "table1.toml",
        ],
        &kit,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let n_lines = m.len(); // manifest lines incl. header; extra rows are the last five
    let expected: Vec<String> = vec![
        // site.toml
        "field ca_cert: points at".into(),
        // policy
        "min_count = 0 would let aggregates over a single patient leave".into(),
        "max_params_per_row = -1 is impossible".into(),
        "\"not-a-hash\" is not a study hash".into(),
        // study vs policy
        "the policy does not allow study t1".into(),
        // data table
        "data.csv line 3".into(),
        "column \"ki67\": \"12,5\" is not a number".into(),
        format!("data.csv line 4: patient id {first_id:?} is also on line 2"),
        "column \"response\": \"2\" is neither outcome label".into(),
        "data.csv line 6: the patient id (patient_id) is empty".into(),
        "column \"tumour_stage\" is missing (needed by study t1 variables)".into(),
        // manifest
        format!(
            "lesions.csv line(s) {}: cohort/S01/images/nowhere.nii.gz does not exist",
            n_lines - 4
        ),
        format!(
            "lesions.csv line(s) {} image: cohort/S01/images/broken.nii.gz is not a valid NIfTI file",
            n_lines - 3
        ),
        format!(
            "lesions.csv line {} (patient {}, lesion L9)",
            n_lines - 2,
            rows[0][0]
        ),
        "image and mask grids differ".into(),
        format!(
            "lesions.csv line {} (patient {}, lesion L8)",
            n_lines - 1,
            rows[0][0]
        ),
        "the mask is empty (no voxel has label 7)".into(),
        format!(
            "lesions.csv line {}: lesion {} of patient {} is also on line 2",
            n_lines, rows[0][1], rows[0][0]
        ),
        "patient PX1 has lesions but no row in the data table".into(),
        format!("patient {third_id} has lesions but no row in the data table"),
    ];
    let missing: Vec<&String> = expected.iter().filter(|e| !stdout.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\n--- stdout:\n{stdout}"
    );
    // Every problem comes with a fix line; the count line matches the list.
    let n_problems = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .count();
    let n_fixes = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("fix: "))
        .count();
    assert_eq!(n_problems, n_fixes, "{stdout}");
    assert!(n_problems >= 17, "{stdout}");
    assert!(
        stdout.contains(&format!("{n_problems} problem(s) found; nothing was sent")),
        "{stdout}"
    );
    assert!(stderr.contains("error:"), "{stderr}");

    // Nobody dialled the aggregator's address.
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "validate opened a connection to the aggregator"
    );
}

#[test]
fn study_levels_and_event_column_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let kit = site(dir.path(), &listener);
    let mut data = String::from("patient_id,response,f1,f2,grade,pfs_months,pfs_event\n");
    for i in 0..8 {
        let grade = if i == 3 { "G3" } else { "G1" };
        let event = if i == 5 { "yes" } else { "1" };
        data.push_str(&format!("P{i},{},{i}.5,{i},{grade},12,{event}\n", i % 2));
    }
    std::fs::create_dir_all(kit.join("data")).unwrap();
    std::fs::write(kit.join("data/cohort.csv"), data).unwrap();
    std::fs::write(kit.join("policy.toml"), "allow_all_studies = true\n").unwrap();
    std::fs::write(
        kit.join("p.toml"),
        "id = \"p\"\n[analysis]\nkind = \"pipeline\"\nlabel_column = \"response\"\n\
         features = [\"f1\", \"f2\", \"f3\"]\n\
         [analysis.lasso]\ntop_k = 2\n\
         [analysis.clinical]\ncategorical = [{ column = \"grade\", levels = [\"G1\", \"G2\"] }]\n\
         [analysis.metrics]\ntime_column = \"pfs_months\"\nevent_column = \"pfs_event\"\n",
    )
    .unwrap();
    let out = agent(
        &["validate", "--config", "site.toml", "--study", "p.toml"],
        &kit,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for needle in [
        "data/cohort.csv line 5 (patient P3) column \"grade\": \"G3\" is not one of the declared levels",
        "declares G1, G2",
        "line 7 (patient P5) column \"pfs_event\": \"yes\" is not an event indicator",
        "column \"f3\" is missing (needed by study p features)",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    assert!(stdout.contains("3 problem(s) found"), "{stdout}");
}
