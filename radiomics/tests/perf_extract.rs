//! Timing of a full 3D extraction on a CT-sized volume (512 × 512 × 300, ~0.9 M voxel lesion).
//! Ignored by default (needs ~0.8 GB and a release build to be meaningful):
//! `cargo test --release -p radiomics --test perf_extract -- --ignored --nocapture`.

use std::time::Instant;

use ndarray::Array3;
use radiomics::extract::{FeatureSettings, compute_features};
use radiomics::{Geometry, Mask, Volume};

/// Deterministic xorshift noise in [-1, 1).
fn noise(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[test]
#[ignore = "large; run in release with --ignored"]
fn large_ct_lesion_3d_extraction() {
    let (nz, ny, nx) = (300usize, 512usize, 512usize);
    let (cz, cy, cx, r) = (150.0, 256.0, 256.0, 60.0);
    let t0 = Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    // Body at ~40 HU with texture, air outside a cylinder, a textured lesion inside.
    let data = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
        let (fz, fy, fx) = (z as f64, y as f64, x as f64);
        let body = (fy - 256.0).powi(2) + (fx - 256.0).powi(2) < 230.0f64.powi(2);
        let n = noise(&mut seed);
        if !body {
            return -1000.0 + (5.0 * n).round();
        }
        (40.0 + 60.0 * (fx / 6.0).sin() * (fy / 9.0).cos() + 25.0 * (fz / 4.0).sin() + 30.0 * n)
            .round()
    });
    let mask = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
        (z as f64 - cz).powi(2) + (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2) <= r * r
    });
    let geometry = Geometry::with_spacing([1.0, 1.0, 1.0]);
    let image = Volume {
        data,
        geometry: geometry.clone(),
    };
    let mask = Mask {
        data: mask,
        geometry,
    };
    let n = mask.count();
    println!("setup: {:.2?}, lesion voxels {n}", t0.elapsed());

    let mut settings = FeatureSettings::lifex_study();
    settings.families.morphology = false;
    let t = Instant::now();
    let f = compute_features(&image, &mask, &mask, &settings).expect("extraction");
    let all = t.elapsed();
    println!(
        "all families (3D, FBS 10 HU): {} features in {all:.2?}",
        f.len()
    );
    assert!(f.iter().all(|v| v.value.is_finite()), "all features finite");

    // Every aggregation method (2D, 2.5D, 3D) of every texture family.
    let mut all_spatial = settings;
    all_spatial.spatial = radiomics::texture::Spatial::ALL;
    let t = Instant::now();
    let f = compute_features(&image, &mask, &mask, &all_spatial).expect("extraction");
    println!(
        "all families, 2D + 2.5D + 3D: {} features in {:.2?}",
        f.len(),
        t.elapsed()
    );

    // Per-family timings.
    type Pick = fn(&mut radiomics::extract::Families);
    let picks: [(&str, Pick); 8] = [
        ("local intensity", |f| f.local_intensity = true),
        ("statistics+histogram+ivh", |f| {
            f.statistics = true;
            f.histogram = true;
            f.volume_histogram = true
        }),
        ("glcm", |f| f.glcm = true),
        ("glrlm", |f| f.glrlm = true),
        ("glszm", |f| f.glszm = true),
        ("gldzm", |f| f.gldzm = true),
        ("ngtdm", |f| f.ngtdm = true),
        ("ngldm", |f| f.ngldm = true),
    ];
    for (name, pick) in picks {
        let mut s = settings;
        s.families = radiomics::extract::Families::NONE;
        pick(&mut s.families);
        let t = Instant::now();
        compute_features(&image, &mask, &mask, &s).expect("extraction");
        println!("  {name:26} {:.2?}", t.elapsed());
    }
}
