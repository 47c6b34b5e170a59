//! Per-stage timing of one lesion at the study's `paper` preset on the IBSI CT phantom GTV:
//! reading, preprocessing, morphology (and its parts) and every other family, to see where the time
//! goes. `cargo run --release -p radiomics --example bench_extract [-- <shared/ibsi dir>]`.

use std::path::PathBuf;
use std::time::Instant;

use radiomics::extract::{Families, compute_features};
use radiomics::io::{self, MaskSelection};
use radiomics::pipeline::Settings;
use radiomics::preprocess::preprocess;

fn main() {
    let ibsi = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/ibsi"));
    let d = ibsi.join("ct_phantom/nifti");
    let t = Instant::now();
    let img = io::read_image(&d.join("image/phantom.nii.gz")).expect("image");
    let dims: [usize; 3] = img.data.dim().into();
    let mask = io::read_mask(
        &d.join("mask/mask.nii.gz"),
        &img.geometry,
        dims,
        &MaskSelection::default(),
    )
    .expect("mask");
    println!("read: {:.3} s", t.elapsed().as_secs_f64());
    let s = Settings::paper();
    let t = Instant::now();
    let pre = preprocess(&img, &mask, &s.preprocessing).expect("preprocess");
    println!(
        "preprocess: {:.3} s (box {:?}, ROI {} voxels)",
        t.elapsed().as_secs_f64(),
        pre.image.data.dim(),
        pre.int_mask.count()
    );
    let t = Instant::now();
    let m = radiomics::morphology::morphology(&pre.image, &pre.morph_mask, &pre.int_mask)
        .expect("morphology");
    println!("morphology: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let _ = radiomics::morphology::moran_geary(
        &pre.image.data,
        &pre.int_mask.data,
        pre.image.geometry.spacing,
    );
    println!("  of which Moran/Geary: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mesh =
        radiomics::morphology::mesh_from_mask(&pre.morph_mask.data, pre.image.geometry.spacing);
    println!(
        "  of which mesh: {:.3} s ({} vertices)",
        t.elapsed().as_secs_f64(),
        mesh.vertices.len()
    );
    let t = Instant::now();
    let hull = radiomics::morphology::convex_hull(&mesh.vertices);
    println!(
        "  of which convex hull: {:.3} s ({} hull vertices)",
        t.elapsed().as_secs_f64(),
        hull.map_or(0, |h| h.vertices.len())
    );
    let _ = m;
    type Pick = fn(&mut Families);
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
        let mut fs = s.features;
        fs.families = Families::NONE;
        pick(&mut fs.families);
        let t = Instant::now();
        compute_features(&pre.image, &pre.morph_mask, &pre.int_mask, &fs).expect("features");
        println!("{name:26} {:.3} s", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let f = compute_features(&pre.image, &pre.morph_mask, &pre.int_mask, &s.features).unwrap();
    println!(
        "all {} features after preprocessing: {:.3} s",
        f.len(),
        t.elapsed().as_secs_f64()
    );
}
