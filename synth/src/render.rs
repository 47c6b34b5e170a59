//! Voxelises one planned patient into a CT volume, a liver mask and one binary mask per lesion (pure).
//!
//! Random fields are drawn from the patient's own ChaCha8 stream in a fixed order: liver texture,
//! scanner noise, then each lesion's texture on its bounding box.
//!
//! Image model, in this order:
//! 1. "True" tissue HU on the site's grid (voxel centres, crop-local mm): body wall outside the
//!    liver (perihepatic fat, muscle, subcutaneous fat), liver parenchyma with smooth texture
//!    (Gaussian-correlated, sigma 2 mm) and portal vessels, then the lesions: viable tissue at
//!    `liver base + enhancement` with internal texture (sigma `texture_corr_mm`) and a necrotic core
//!    blended in. Every tissue edge is a linear partial-volume ramp one voxel wide (`h` = geometric
//!    mean spacing) centred on the boundary.
//! 2. Scanner point-spread function: Gaussian blur with the site's sigma (mm → voxels per axis).
//! 3. Scanner calibration and noise: `HU = scale · true + offset + noise_sd · n`, with `n` unit-SD
//!    noise correlated in-plane (site's `noise_corr_mm`), white across slices.
//! 4. Rounded to integer HU and clamped to [-1024, 3071] (the stored file is int16; the in-memory
//!    `f64` volume holds exactly the stored values).
//!
//! Masks are ground truth: a lesion mask holds the voxels whose centre lies inside the lesion
//! boundary; the liver mask holds voxels inside the liver and outside every lesion (vessels
//! included, as in a clinical liver segmentation).

use ndarray::Array3;
use radiomics::{Geometry, Mask, Volume};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::field::{gaussian_blur, smooth_noise};
use crate::plan::{CohortPlan, PatientPlan, SitePlan};
use crate::shapes::Vec3;

/// Lowest and highest stored HU (int16 CT convention: air at -1024, 12-bit range).
pub const HU_MIN: f64 = -1024.0;
pub const HU_MAX: f64 = 3071.0;
/// Correlation length (Gaussian sigma, mm) of the liver and body-wall texture.
const LIVER_TEXTURE_CORR_MM: f64 = 2.0;
/// SD (HU) of the fat/muscle texture.
const WALL_TEXTURE_SD_HU: f64 = 6.0;
/// Width of the necrotic-core transition, in units of the normalised lesion radius.
const CORE_EDGE: f64 = 0.08;

/// One patient's images, all on the same grid.
#[derive(Debug, Clone)]
pub struct PatientImages {
    /// CT in HU (integers in [-1024, 3071]).
    pub ct: Volume,
    pub liver: Mask,
    /// One mask per planned lesion, in plan order (`L1`, `L2`, ...).
    pub lesions: Vec<Mask>,
}

/// Grid geometry of a patient's images: the site's spacing, axis-aligned LPS directions, origin at
/// the first voxel centre of a crop centred on the patient's crop centre.
pub fn patient_geometry(site: &SitePlan, patient: &PatientPlan) -> Geometry {
    let sp = site.scanner.spacing_zyx();
    let mut g = Geometry::with_spacing(sp);
    // Crop-local position of voxel 0 along each [z, y, x] axis; the crop centre is [x, y, z].
    let c = patient.crop_centre_lps;
    let centre_zyx = [c[2], c[1], c[0]];
    for a in 0..3 {
        g.origin[a] = centre_zyx[a] + first_voxel_offset(site.dims[a], sp[a]);
    }
    g
}

/// Crop-local coordinate (mm) of the centre of voxel 0 along an axis of `n` voxels.
fn first_voxel_offset(n: usize, spacing: f64) -> f64 {
    (0.5 - n as f64 / 2.0) * spacing
}

fn axis_coords(n: usize, spacing: f64) -> Vec<f64> {
    let o = first_voxel_offset(n, spacing);
    (0..n).map(|i| o + i as f64 * spacing).collect()
}

/// Index range `[lo, hi)` of voxels whose centre is within `[c - r, c + r]` on an axis.
fn index_range(coords: &[f64], c: f64, r: f64) -> (usize, usize) {
    let lo = coords.partition_point(|&v| v < c - r);
    let hi = coords.partition_point(|&v| v <= c + r);
    (lo, hi)
}

/// Render patient `index` of `plan`. Deterministic: depends only on the plan.
pub fn render_patient(plan: &CohortPlan, index: usize) -> PatientImages {
    let p = &plan.patients[index];
    let site = &plan.sites[p.site];
    let sc = &site.scanner;
    let dims = site.dims;
    let [nz, ny, nx] = dims;
    let sp = sc.spacing_zyx();
    let n = nz * ny * nx;
    let mut rng = ChaCha8Rng::seed_from_u64(p.render_seed);

    // Random fields, always drawn in this order.
    let tex_sigma = |mm: f64| [mm / sp[0], mm / sp[1], mm / sp[2]];
    let liver_tex = smooth_noise(&mut rng, dims, tex_sigma(LIVER_TEXTURE_CORR_MM));
    let noise = smooth_noise(
        &mut rng,
        dims,
        [0.0, sc.noise_corr_mm / sp[1], sc.noise_corr_mm / sp[2]],
    );

    let zs = axis_coords(nz, sp[0]);
    let ys = axis_coords(ny, sp[1]);
    let xs = axis_coords(nx, sp[2]);
    let h = (sp[0] * sp[1] * sp[2]).cbrt();
    let ramp = |d: f64| (0.5 - d / h).clamp(0.0, 1.0);
    let idx = |z: usize, y: usize, x: usize| (z * ny + y) * nx + x;

    // 1a. Liver and body wall.
    let liver = &p.liver;
    let wall = &p.wall;
    let mut truth = vec![0.0; n];
    let mut liver_w = vec![0.0; n];
    let mut in_liver = vec![false; n];
    for (z, &pz) in zs.iter().enumerate() {
        for (y, &py) in ys.iter().enumerate() {
            for (x, &px) in xs.iter().enumerate() {
                let i = idx(z, y, x);
                let q = [px, py, pz];
                // Deep inside the liver the exact distance does not matter (weight 1, no wall).
                let bound = liver.shape.dist_upper_bound(q);
                let d = if bound < -h {
                    bound
                } else {
                    liver.shape.eval(q).dist
                };
                let w = ramp(d);
                let t = liver_tex[i];
                let liver_hu = liver.base_hu + liver.texture_sd_hu * t;
                let muscle = ramp(wall.fat_gap_mm - d) * ramp(d - wall.fat_gap_mm - wall.muscle_mm);
                let wall_hu =
                    wall.fat_hu + (wall.muscle_hu - wall.fat_hu) * muscle + WALL_TEXTURE_SD_HU * t;
                truth[i] = w * liver_hu + (1.0 - w) * wall_hu;
                liver_w[i] = w;
                in_liver[i] = d < 0.0;
            }
        }
    }

    // 1b. Vessels (only where there is liver), within each vessel's bounding box.
    for v in &p.vessels {
        let c = &v.capsule;
        let r = c.radius + h;
        let bbox = |a: usize, coords: &[f64]| {
            let lo = c.a[a].min(c.b[a]);
            let hi = c.a[a].max(c.b[a]);
            index_range(coords, (lo + hi) / 2.0, (hi - lo) / 2.0 + r)
        };
        let (x0, x1) = bbox(0, &xs);
        let (y0, y1) = bbox(1, &ys);
        let (z0, z1) = bbox(2, &zs);
        for z in z0..z1 {
            for y in y0..y1 {
                for x in x0..x1 {
                    let i = idx(z, y, x);
                    let wv = ramp(c.dist([xs[x], ys[y], zs[z]])) * liver_w[i];
                    if wv > 0.0 {
                        let liver_hu = liver.base_hu + liver.texture_sd_hu * liver_tex[i];
                        truth[i] += wv * (v.hu - liver_hu);
                    }
                }
            }
        }
    }

    // 1c. Lesions.
    let mut lesion_masks = Vec::with_capacity(p.lesions.len());
    for l in &p.lesions {
        let mut m = Array3::<bool>::from_elem((nz, ny, nx), false);
        let c: Vec3 = l.shape.centre;
        let r = l.shape.max_radius() + h;
        let (x0, x1) = index_range(&xs, c[0], r);
        let (y0, y1) = index_range(&ys, c[1], r);
        let (z0, z1) = index_range(&zs, c[2], r);
        // Internal texture, drawn on the lesion's bounding box only.
        let bdims = [z1 - z0, y1 - y0, x1 - x0];
        let lesion_tex = smooth_noise(
            &mut rng,
            bdims,
            tex_sigma(plan.params.lesions.texture_corr_mm),
        );
        for z in z0..z1 {
            for y in y0..y1 {
                for x in x0..x1 {
                    let e = l.shape.eval([xs[x], ys[y], zs[z]]);
                    let w = ramp(e.dist);
                    if w <= 0.0 {
                        continue;
                    }
                    let i = idx(z, y, x);
                    let t = lesion_tex[((z - z0) * bdims[1] + y - y0) * bdims[2] + x - x0];
                    let viable = liver.base_hu + l.enhancement_hu + l.texture_sd_hu * t;
                    let core = if l.necrosis_fraction > 0.0 {
                        let edge = l.necrosis_fraction * (1.0 + 0.15 * t);
                        ((edge - e.q) / CORE_EDGE + 0.5).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let lesion_hu = viable + core * (l.necrosis_hu - viable);
                    truth[i] += w * (lesion_hu - truth[i]);
                    if e.dist < 0.0 {
                        m[[z, y, x]] = true;
                        in_liver[i] = false;
                    }
                }
            }
        }
        lesion_masks.push(m);
    }

    // 2. PSF.
    let psf = sc.psf_sigma_mm;
    gaussian_blur(
        &mut truth,
        dims,
        [psf[2] / sp[0], psf[1] / sp[1], psf[0] / sp[2]],
    );

    // 3–4. Calibration, noise, quantisation.
    let ct: Vec<f64> = truth
        .iter()
        .zip(&noise)
        .map(|(&t, &e)| {
            (sc.hu_scale * t + sc.hu_offset + sc.noise_sd_hu * e)
                .round()
                .clamp(HU_MIN, HU_MAX)
        })
        .collect();

    let geometry = patient_geometry(site, p);
    let shape = (nz, ny, nx);
    let ct = Array3::from_shape_vec(shape, ct).expect("buffer has nz*ny*nx voxels");
    let liver_mask = Array3::from_shape_vec(shape, in_liver).expect("buffer has nz*ny*nx voxels");
    PatientImages {
        ct: Volume {
            data: ct,
            geometry: geometry.clone(),
        },
        liver: Mask {
            data: liver_mask,
            geometry: geometry.clone(),
        },
        lesions: lesion_masks
            .into_iter()
            .map(|data| Mask {
                data,
                geometry: geometry.clone(),
            })
            .collect(),
    }
}
