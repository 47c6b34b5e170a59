//! End-to-end checks of the synthetic cohort: determinism to the byte, file layout, NIfTI round trip
//! through radiomics' reader, image sanity, the batch effect, the response signal in the images,
//! plan-level effect sizes, the clinical table, feature extraction and the CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use radiomics::io::{MaskSelection, read_image, read_mask};
use synth::clinical::{Grade, MetPattern};
use synth::{
    CLINICAL_COLUMNS, CohortParams, MANIFEST_COLUMNS, WriteOptions, plan_cohort, render_patient,
    write_cohort,
};

/// Every file under `dir`, relative path → bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn small() -> CohortParams {
    CohortParams::new(2, 5, 42)
}

/// Mann-Whitney AUC with mid-ranks (P(score of a positive > score of a negative)).
fn auc(score: &[f64], y: &[bool]) -> f64 {
    let mut s = 0.0;
    let (mut n1, mut n0) = (0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        if !yi {
            continue;
        }
        n1 += 1.0;
        for (j, &yj) in y.iter().enumerate() {
            if !yj {
                s += if score[i] > score[j] {
                    1.0
                } else if score[i] == score[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    for &yi in y {
        if !yi {
            n0 += 1.0;
        }
    }
    s / (n1 * n0)
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let plan = plan_cohort(&small()).unwrap();
    write_cohort(&plan, a.path(), &WriteOptions::default()).unwrap();
    // Re-plan from scratch and write with a single thread: same bytes regardless of scheduling.
    let plan2 = plan_cohort(&small()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| write_cohort(&plan2, b.path(), &WriteOptions::default()).unwrap());
    let (sa, sb) = (snapshot(a.path()), snapshot(b.path()));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, v) in &sa {
        assert!(
            v == &sb[k],
            "{} differs between identical runs",
            k.display()
        );
    }
    // 1 json + per site 2 csv + per patient 1 image + per lesion 1 mask.
    assert_eq!(sa.len(), 1 + 2 * 2 + 5 + plan.n_lesions());

    let mut other = small();
    other.seed = 43;
    write_cohort(
        &plan_cohort(&other).unwrap(),
        c.path(),
        &WriteOptions::default(),
    )
    .unwrap();
    let sc = snapshot(c.path());
    let img = Path::new("S01/clinical.csv");
    assert_ne!(sa[img], sc[img]);
}

#[test]
fn layout_manifest_and_round_trip_through_radiomics_reader() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_cohort(&small()).unwrap();
    let summary = write_cohort(&plan, dir.path(), &WriteOptions::default()).unwrap();
    assert_eq!(summary.n_patients, 5);
    assert!(dir.path().join("cohort.json").is_file());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cohort.json")).unwrap()).unwrap();
    assert_eq!(json["seed"], 42);
    assert_eq!(json["params"]["n_patients"], 5);
    assert_eq!(json["sites"].as_array().unwrap().len(), 2);

    let mut checked = 0;
    for (s, site) in plan.sites.iter().enumerate() {
        let sdir = dir.path().join(&site.id);
        let mut rdr = csv::Reader::from_path(sdir.join("lesions.csv")).unwrap();
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>(),
            MANIFEST_COLUMNS
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        let n_les: usize = site
            .patients
            .iter()
            .map(|&i| plan.patients[i].lesions.len())
            .sum();
        assert_eq!(rows.len(), n_les);
        for &i in &site.patients {
            let p = &plan.patients[i];
            let mem = render_patient(&plan, i);
            let img_rel = format!("images/{}.nii.gz", p.id());
            let img = read_image(&sdir.join(&img_rel)).unwrap();
            // Geometry round-trips exactly (spacing and origin are exact in float32).
            assert_eq!(img.geometry, mem.ct.geometry, "{}", p.id());
            assert_eq!(img.data, mem.ct.data, "{}", p.id());
            assert_eq!(img.data.dim(), {
                let d = site.dims;
                (d[0], d[1], d[2])
            });
            let dims: [usize; 3] = img.data.dim().into();
            for (l, m) in p.lesions.iter().zip(&mem.lesions) {
                let row = rows
                    .iter()
                    .find(|r| &r[0] == p.id() && r[1] == l.id)
                    .expect("manifest row for every lesion");
                assert_eq!(&row[2], img_rel);
                let mask = read_mask(
                    &sdir.join(&row[3]),
                    &img.geometry,
                    dims,
                    &MaskSelection::default(),
                )
                .unwrap();
                assert_eq!(mask.geometry, mem.ct.geometry);
                assert_eq!(mask.data, m.data);
                checked += 1;
            }
        }
        assert_eq!(s, plan.sites.iter().position(|x| x.id == site.id).unwrap());
    }
    assert_eq!(checked, plan.n_lesions());
}

#[test]
fn images_and_masks_are_sane() {
    let plan = plan_cohort(&CohortParams::new(3, 9, 7)).unwrap();
    for (i, p) in plan.patients.iter().enumerate() {
        let img = render_patient(&plan, i);
        let site = &plan.sites[p.site];
        assert_eq!(img.ct.geometry.spacing, site.scanner.spacing_zyx());
        let d = img.ct.data.dim();
        assert_eq!([d.0, d.1, d.2], site.dims);
        assert!((1..=3).contains(&p.lesions.len()));
        assert_eq!(img.lesions.len(), p.lesions.len());
        let (lo, hi) = img
            .ct
            .data
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= -1024.0 && hi <= 3071.0);
        assert!(img.ct.data.iter().all(|v| v.fract() == 0.0));
        // Body wall fat is in the crop and nothing is implausibly bright (vessels ≲ 250 HU).
        assert!(lo < -60.0, "{} has no fat (min {lo})", p.id());
        assert!(hi < 400.0, "{} max {hi}", p.id());
        let mean_in = |m: &ndarray::Array3<bool>| {
            let (s, n) = img
                .ct
                .data
                .iter()
                .zip(m)
                .filter(|(_, m)| **m)
                .fold((0.0, 0.0), |(s, n), (v, _)| (s + v, n + 1.0));
            s / n
        };
        let liver_hu = mean_in(&img.liver.data);
        assert!((25.0..=110.0).contains(&liver_hu), "liver {liver_hu}");
        assert!(img.liver.count() > img.ct.data.len() / 3);
        let sp = img.ct.geometry.spacing;
        let voxel_mm3 = sp[0] * sp[1] * sp[2];
        for (a, (l, m)) in p.lesions.iter().zip(&img.lesions).enumerate() {
            assert!(m.count() > 0, "{} {} empty", p.id(), l.id);
            // Inside the liver: every lesion voxel centre is inside the liver shape.
            for ((z, y, x), &inside) in m.data.indexed_iter() {
                if inside {
                    let w = img
                        .ct
                        .geometry
                        .index_to_world([z as f64, y as f64, x as f64]);
                    let c = p.crop_centre_lps;
                    let local = [w[0] - c[0], w[1] - c[1], w[2] - c[2]];
                    assert!(p.liver.shape.eval(local).dist < 0.0);
                    assert!(!img.liver.data[[z, y, x]], "lesion voxel in liver mask");
                }
            }
            // Disjoint from the other lesions.
            for m2 in &img.lesions[a + 1..] {
                assert!(m.data.iter().zip(&m2.data).all(|(a, b)| !(*a && *b)));
            }
            // Voxelised volume close to the shape's volume (ellipsoid 4/3·π·abc, ±25 % for the
            // undulating boundary and partial voxels).
            let r = l.shape.radii;
            let v = 4.0 / 3.0 * std::f64::consts::PI * r[0] * r[1] * r[2];
            let got = m.count() as f64 * voxel_mm3;
            assert!(
                (got / v - 1.0).abs() < 0.25,
                "{} {}: {got} vs {v}",
                p.id(),
                l.id
            );
            assert!(l.diameter_mm >= 8.0 && l.diameter_mm <= 35.0);
        }
    }
}

#[test]
fn per_site_scanner_shifts_liver_hu() {
    // Three sites with stratified HU offsets (-15..15) and scales: the measured liver HU follows
    // each patient's true liver HU through its site's scanner, so site means differ.
    let plan = plan_cohort(&CohortParams::new(3, 12, 5)).unwrap();
    let mut site_means = vec![Vec::new(); 3];
    for (i, p) in plan.patients.iter().enumerate() {
        let img = render_patient(&plan, i);
        let (s, n) = img
            .ct
            .data
            .iter()
            .zip(&img.liver.data)
            .filter(|(_, m)| **m)
            .fold((0.0, 0.0), |(s, n), (v, _)| (s + v, n + 1.0));
        let measured = s / n;
        let sc = &plan.sites[p.site].scanner;
        let expected = sc.hu_scale * p.liver.base_hu + sc.hu_offset;
        // Vessels add a few HU to the parenchyma mean, partial volume with fat and hypodense
        // lesions at the mask border removes a few; texture and noise average out.
        let resid = measured - expected;
        assert!((-4.0..6.0).contains(&resid), "{}: residual {resid}", p.id());
        site_means[p.site].push(measured - p.liver.base_hu);
    }
    // With patient anatomy removed, the site effect is the offset (plus scale): sites differ by
    // far more than patients within a site.
    let means: Vec<f64> = site_means
        .iter()
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        .collect();
    let spread = means.iter().cloned().fold(f64::MIN, f64::max)
        - means.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 12.0, "site means {means:?}");
    // And raw liver HU (what a user sees) differs between sites too.
    let offsets: Vec<f64> = plan.sites.iter().map(|s| s.scanner.hu_offset).collect();
    let order = |v: &[f64]| {
        let mut i: Vec<usize> = (0..v.len()).collect();
        i.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        i
    };
    assert_eq!(order(&means), order(&offsets));
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn responders_have_smaller_brighter_more_homogeneous_lesions_in_the_images() {
    // The population effect sizes are pinned on the plan (next test); here the images must carry
    // the planned lesion traits faithfully, and the cohort shows the designed direction.
    let plan = plan_cohort(&CohortParams::new(2, 40, 3)).unwrap();
    let (mut vol, mut mean, mut sd, mut y) = (vec![], vec![], vec![], vec![]);
    let (mut plan_vol, mut plan_mean, mut plan_het) = (vec![], vec![], vec![]);
    for (i, p) in plan.patients.iter().enumerate() {
        let img = render_patient(&plan, i);
        let sc = &plan.sites[p.site].scanner;
        let sp = img.ct.geometry.spacing;
        for (l, m) in p.lesions.iter().zip(&img.lesions) {
            let v: Vec<f64> = img
                .ct
                .data
                .iter()
                .zip(&m.data)
                .filter(|(_, m)| **m)
                .map(|(v, _)| *v)
                .collect();
            let n = v.len() as f64;
            let mu = v.iter().sum::<f64>() / n;
            vol.push((n * sp[0] * sp[1] * sp[2]).ln());
            mean.push(mu);
            sd.push((v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / n).sqrt());
            y.push(p.clinical.response);
            let r = l.shape.radii;
            plan_vol.push((4.0 / 3.0 * std::f64::consts::PI * r[0] * r[1] * r[2]).ln());
            plan_mean.push(sc.hu_scale * (p.liver.base_hu + l.enhancement_hu) + sc.hu_offset);
            plan_het.push(l.heterogeneity);
        }
    }
    let (cv, cm, cs) = (
        pearson(&vol, &plan_vol),
        pearson(&mean, &plan_mean),
        pearson(&sd, &plan_het),
    );
    // Volume is measured almost exactly; mean HU follows the viable-tissue HU (necrosis, partial
    // volume and noise blur it); SD follows heterogeneity (site noise levels add scatter).
    assert!(cv > 0.99, "log volume vs planned: r = {cv}");
    assert!(cm > 0.9, "mean HU vs planned viable HU: r = {cm}");
    assert!(cs > 0.5, "HU SD vs planned heterogeneity: r = {cs}");

    let group_mean = |v: &[f64], r: bool| {
        let s: Vec<f64> = v
            .iter()
            .zip(&y)
            .filter(|(_, y)| **y == r)
            .map(|(v, _)| *v)
            .collect();
        s.iter().sum::<f64>() / s.len() as f64
    };
    assert!(group_mean(&vol, true) < group_mean(&vol, false));
    assert!(group_mean(&mean, true) > group_mean(&mean, false) + 8.0);
    assert!(group_mean(&sd, true) < group_mean(&sd, false));
}

#[test]
fn plan_level_effect_sizes_match_the_design() {
    // A large planned cohort (no voxels) pins the population effect sizes.
    let plan = plan_cohort(&CohortParams::new(7, 6000, 9)).unwrap();
    let n = plan.patients.len() as f64;
    let y: Vec<bool> = plan.patients.iter().map(|p| p.clinical.response).collect();
    assert_eq!(y.iter().filter(|&&r| r).count(), 3000);
    // Site responder rates differ, but within the designed ±15 % band (plus rounding).
    for s in &plan.sites {
        let k = s.patients.iter().filter(|&&i| y[i]).count() as f64;
        let rate = k / s.patients.len() as f64;
        assert!((0.34..=0.66).contains(&rate), "{} rate {rate}", s.id);
    }

    // Oracle AUC of the true patient traits with the design's own log-likelihood-ratio weights
    // (equal-variance Gaussians: weight = shift / sd²): ~0.88 by construction.
    let e = &plan.params.lesions;
    let score: Vec<f64> = plan
        .patients
        .iter()
        .map(|p| {
            let t = &p.traits;
            t.log_diameter * e.responder_log_diameter_shift / e.log_diameter_sd.powi(2)
                + t.enhancement_hu * e.responder_enhancement_shift_hu / e.enhancement_sd_hu.powi(2)
                + t.heterogeneity_logit * e.responder_heterogeneity_logit_shift
                    / e.heterogeneity_logit_sd.powi(2)
        })
        .collect();
    let a = auc(&score, &y);
    assert!((0.85..0.91).contains(&a), "trait oracle AUC {a}");

    // Clinical oracle: naive-Bayes log-likelihood ratio of grade, ECOG and pattern (+ Ki-67 rank):
    // weak on purpose, ~0.65 in the population (~0.6 cross-validated on 102 patients).
    let c = &plan.params.clinical;
    let lr = |p1: f64, p0: f64| (p1 / p0).ln();
    let clin: Vec<f64> = plan
        .patients
        .iter()
        .map(|p| {
            let r = &p.clinical;
            let g = if r.grade == Grade::G1 {
                lr(c.p_grade_g1[1], c.p_grade_g1[0])
            } else {
                lr(1.0 - c.p_grade_g1[1], 1.0 - c.p_grade_g1[0])
            };
            let ec = if r.ecog == 1 {
                lr(c.p_ecog1[1], c.p_ecog1[0])
            } else {
                lr(1.0 - c.p_ecog1[1], 1.0 - c.p_ecog1[0])
            };
            let k = match r.met_pattern {
                MetPattern::Single => 0,
                MetPattern::Multifocal => 1,
                MetPattern::Diffuse => 2,
            };
            g + ec + lr(c.p_met_pattern[1][k], c.p_met_pattern[0][k]) - 0.2 * r.ki67.ln()
        })
        .collect();
    let a = auc(&clin, &y);
    assert!((0.60..0.70).contains(&a), "clinical oracle AUC {a}");
    // Variables without a designed effect carry none.
    let age: Vec<f64> = plan
        .patients
        .iter()
        .map(|p| p.clinical.age as f64)
        .collect();
    assert!((auc(&age, &y) - 0.5).abs() < 0.03);

    // PFS: exponential MLE of the rate ratio ≈ the designed hazard ratio; ~20 % censored.
    let (mut ev, mut tt) = ([0.0; 2], [0.0; 2]);
    for p in &plan.patients {
        let g = usize::from(p.clinical.response);
        ev[g] += f64::from(u8::from(p.clinical.pfs_event));
        tt[g] += p.clinical.pfs_months;
        assert!(p.clinical.pfs_months >= 0.1 && p.clinical.pfs_months <= 36.0);
    }
    let hr = (ev[1] / tt[1]) / (ev[0] / tt[0]);
    assert!((0.50..0.61).contains(&hr), "HR {hr}");
    let censored = n - ev[0] - ev[1];
    assert!(
        (0.15..0.27).contains(&(censored / n)),
        "censored {}",
        censored / n
    );

    // Lesion counts follow the metastasis pattern; 1–3 per patient.
    for p in &plan.patients {
        let k = p.lesions.len();
        match p.clinical.met_pattern {
            MetPattern::Single => assert_eq!(k, 1),
            _ => assert!((2..=3).contains(&k)),
        }
    }
    // Uneven site sizes: the largest site about twice the smallest.
    let sizes: Vec<usize> = plan.sites.iter().map(|s| s.patients.len()).collect();
    assert!(sizes[0] as f64 / sizes[6] as f64 > 1.8, "{sizes:?}");
}

#[test]
fn clinical_table_has_the_example_columns_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_cohort(&CohortParams::new(7, 102, 1)).unwrap();
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("{} is needed for this test: {e}", example.display()));
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[..13], &CLINICAL_COLUMNS[..]);

    let sizes: Vec<usize> = plan.sites.iter().map(|s| s.patients.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 102);
    assert!(sizes.iter().all(|&s| (9..=21).contains(&s)), "{sizes:?}");

    // Write a small cohort and parse its clinical tables.
    let small = plan_cohort(&CohortParams::new(3, 8, 2)).unwrap();
    write_cohort(&small, dir.path(), &WriteOptions::default()).unwrap();
    let mut n = 0;
    for site in &small.sites {
        let mut rdr =
            csv::Reader::from_path(dir.path().join(&site.id).join("clinical.csv")).unwrap();
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>(),
            CLINICAL_COLUMNS
        );
        for r in rdr.records() {
            let r = r.unwrap();
            n += 1;
            assert!(r[0].starts_with('P') && r[0].len() == 6);
            assert_eq!(&r[1], site.id);
            assert!(["0", "1"].contains(&&r[2]));
            let pfs: f64 = r[3].parse().unwrap();
            assert!(pfs > 0.0);
            assert!(["0", "1"].contains(&&r[4]));
            let age: u32 = r[5].parse().unwrap();
            assert!((30..=82).contains(&age));
            assert!(["M", "F"].contains(&&r[6]));
            assert!(["0", "1"].contains(&&r[7]));
            assert!(["G1", "G2"].contains(&&r[8]));
            let ki: f64 = r[9].parse().unwrap();
            assert!((1.0..=20.0).contains(&ki));
            let m: f64 = r[10].parse().unwrap();
            assert!((1.0..=85.0).contains(&m));
            assert!(["single", "multifocal", "diffuse"].contains(&&r[11]));
            assert!(["0", "1"].contains(&&r[12]));
        }
    }
    assert_eq!(n, 8);
}

#[test]
fn radiomics_extracts_features_from_generated_lesions() {
    use radiomics::extract::{FeatureSettings, compute_features};
    let plan = plan_cohort(&CohortParams::new(1, 2, 8)).unwrap();
    let img = render_patient(&plan, 0);
    let settings = FeatureSettings::default();
    for m in img.lesions.iter().take(2) {
        let f = compute_features(&img.ct, m, m, &settings).unwrap();
        assert!(f.len() > 100, "{} features", f.len());
        // IBSI volume by voxel counting (YEKZ) = voxels × voxel volume.
        let sp = img.ct.geometry.spacing;
        let vox = m.count() as f64 * sp[0] * sp[1] * sp[2];
        let counted = f
            .iter()
            .find(|v| v.ibsi_code == "YEKZ")
            .expect("approximate volume feature");
        assert!((counted.value - vox).abs() < 1e-6 * vox);
        let n_finite = f.iter().filter(|v| v.value.is_finite()).count();
        assert!(n_finite * 10 > f.len() * 9, "{n_finite}/{}", f.len());
        // Mean intensity (Q4LE) inside the lesion equals the mask mean.
        let (s, n) = img
            .ct
            .data
            .iter()
            .zip(&m.data)
            .filter(|(_, m)| **m)
            .fold((0.0, 0.0), |(s, n), (v, _)| (s + v, n + 1.0));
        let mean = f.iter().find(|v| v.ibsi_code == "Q4LE").unwrap().value;
        assert!((mean - s / n).abs() < 1e-9 * (1.0 + mean.abs()));
    }
}
