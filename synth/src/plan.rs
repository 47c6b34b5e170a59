//! The cohort plan: every random decision except voxel noise, made up front from the seed.
//!
//! A [`CohortPlan`] holds the sites and their scanners, each patient's clinical record, latent
//! lesion traits, anatomy (liver, vessels, body wall) and lesions in millimetres, and a per-patient
//! render seed. It is cheap (no voxels), so tests can plan thousands of patients to check effect
//! sizes, and rendering can run patients in any order or in parallel with identical results.
//!
//! Randomness: one ChaCha8 stream seeded with `seed_from_u64(params.seed)` is consumed in a fixed
//! order (sites, site assignment, responses site by site, then patient by patient); each patient's render seed is
//! the next `u64` of that stream.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::clinical::{self, ClinicalRecord};
use crate::error::SynthError;
use crate::params::CohortParams;
use crate::shapes::{
    Blob, Capsule, Harmonic, Vec3, add, fibonacci_sphere, norm, rotation_from_quaternion, scale,
};

/// Scanner character of one site (the batch effect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scanner {
    /// In-plane pixel spacing (mm), x and y.
    pub inplane_spacing_mm: f64,
    /// Slice spacing = thickness (mm), z.
    pub slice_thickness_mm: f64,
    /// Output HU = `hu_scale * true HU + hu_offset + noise`.
    pub hu_offset: f64,
    pub hu_scale: f64,
    /// Noise SD (HU).
    pub noise_sd_hu: f64,
    /// PSF Gaussian sigma (mm) `[x, y, z]`.
    pub psf_sigma_mm: [f64; 3],
    /// In-plane noise correlation Gaussian sigma (mm).
    pub noise_corr_mm: f64,
}

impl Scanner {
    /// Voxel spacing `[z, y, x]` (mm), the `radiomics` axis order.
    pub fn spacing_zyx(&self) -> [f64; 3] {
        [
            self.slice_thickness_mm,
            self.inplane_spacing_mm,
            self.inplane_spacing_mm,
        ]
    }
}

/// One site: id, scanner and the (cohort) indices of its patients in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePlan {
    pub id: String,
    pub scanner: Scanner,
    /// Grid size `[z, y, x]` of every image of this site: `round(fov / spacing)`.
    pub dims: [usize; 3],
    pub patients: Vec<usize>,
}

/// Patient-level latent lesion traits (before per-lesion jitter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traits {
    pub log_diameter: f64,
    pub enhancement_hu: f64,
    pub heterogeneity_logit: f64,
}

/// The liver: shape, mean parenchymal HU (before the scanner) and texture amplitude.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Liver {
    pub shape: Blob,
    pub base_hu: f64,
    pub texture_sd_hu: f64,
}

/// A portal-venous vessel inside the liver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vessel {
    pub capsule: Capsule,
    pub hu: f64,
}

/// Tissue layers outside the liver, by distance from its surface: perihepatic fat up to
/// `fat_gap_mm`, then `muscle_mm` of abdominal wall muscle, then subcutaneous fat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyWall {
    pub fat_gap_mm: f64,
    pub muscle_mm: f64,
    pub fat_hu: f64,
    pub muscle_hu: f64,
}

/// One metastasis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionPlan {
    /// `L1`, `L2`, `L3`.
    pub id: String,
    pub shape: Blob,
    /// Nominal longest diameter (mm) = 2 × largest semi-axis before boundary undulation.
    pub diameter_mm: f64,
    /// Viable-tissue HU relative to the liver's base HU.
    pub enhancement_hu: f64,
    /// Heterogeneity h in (0, 1): drives texture SD and necrosis.
    pub heterogeneity: f64,
    pub texture_sd_hu: f64,
    /// Necrotic core radius as a fraction of the lesion radius (0 = no core).
    pub necrosis_fraction: f64,
    pub necrosis_hu: f64,
}

/// Everything about one patient except voxel noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientPlan {
    /// Position in the cohort (0-based); the id is `P{index+1:05}`.
    pub index: usize,
    /// Index into [`CohortPlan::sites`].
    pub site: usize,
    pub clinical: ClinicalRecord,
    pub traits: Traits,
    pub liver: Liver,
    pub vessels: Vec<Vessel>,
    pub wall: BodyWall,
    pub lesions: Vec<LesionPlan>,
    /// World (LPS, mm) position of the crop centre; rounded to 1/8 mm so NIfTI float32 stores the
    /// image origin exactly.
    pub crop_centre_lps: Vec3,
    pub render_seed: u64,
}

impl PatientPlan {
    pub fn id(&self) -> &str {
        &self.clinical.patient_id
    }
}

/// The whole cohort, without voxels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortPlan {
    pub params: CohortParams,
    pub sites: Vec<SitePlan>,
    pub patients: Vec<PatientPlan>,
}

impl CohortPlan {
    /// Clinical records of every patient in cohort order.
    pub fn clinical_table(&self) -> Vec<&ClinicalRecord> {
        self.patients.iter().map(|p| &p.clinical).collect()
    }

    /// Total number of lesions.
    pub fn n_lesions(&self) -> usize {
        self.patients.iter().map(|p| p.lesions.len()).sum()
    }
}

/// Site sizes: weights falling linearly from `ratio` to 1, apportioned by largest remainder with
/// at least one patient per site (ties broken by site order).
pub fn site_sizes(n_sites: usize, n_patients: usize, ratio: f64) -> Vec<usize> {
    let w: Vec<f64> = (0..n_sites)
        .map(|s| {
            if n_sites == 1 {
                1.0
            } else {
                ratio - (ratio - 1.0) * s as f64 / (n_sites - 1) as f64
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    let spare = n_patients - n_sites; // one patient per site is reserved
    let quotas: Vec<f64> = w.iter().map(|v| v / total * spare as f64).collect();
    let mut sizes: Vec<usize> = quotas.iter().map(|q| q.floor() as usize + 1).collect();
    let mut left = n_patients - sizes.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n_sites).collect();
    order.sort_by(|&a, &b| {
        let ra = quotas[a] - quotas[a].floor();
        let rb = quotas[b] - quotas[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &s in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[s] += 1;
        left -= 1;
    }
    sizes
}

fn normal<R: Rng>(rng: &mut R) -> f64 {
    rng.sample(StandardNormal)
}

fn uniform<R: Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.r#gen::<f64>()
}

fn unit_vector<R: Rng>(rng: &mut R) -> Vec3 {
    loop {
        let v = [normal(rng), normal(rng), normal(rng)];
        let n = norm(v);
        if n > 1e-6 {
            return scale(v, 1.0 / n);
        }
    }
}

fn harmonics<R: Rng>(rng: &mut R, count: usize, amp: [f64; 2], freq: [f64; 2]) -> Vec<Harmonic> {
    (0..count)
        .map(|_| Harmonic {
            dir: unit_vector(rng),
            freq: uniform(rng, freq[0], freq[1]),
            phase: uniform(rng, 0.0, std::f64::consts::TAU),
            amp: uniform(rng, amp[0], amp[1]),
        })
        .collect()
}

fn round_to(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}

/// `n` values spread evenly over `[lo, hi]` (one per stratum, jittered within it) in random order.
fn stratified<R: Rng>(rng: &mut R, n: usize, range: [f64; 2]) -> Vec<f64> {
    let mut strata: Vec<usize> = (0..n).collect();
    strata.shuffle(rng);
    strata
        .into_iter()
        .map(|k| {
            let u = (k as f64 + uniform(rng, 0.25, 0.75)) / n as f64;
            range[0] + (range[1] - range[0]) * u
        })
        .collect()
}

const DIRECTIONS: usize = 256;
/// Minimum distance (mm) between a lesion and the liver surface, the crop border or another lesion.
const LESION_MARGIN_MM: f64 = 3.0;

/// Make the plan for `params` (pure; deterministic for a seed).
pub fn plan_cohort(params: &CohortParams) -> Result<CohortPlan, SynthError> {
    params.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let ns = params.n_sites;
    let np = params.n_patients;

    // Sites and scanners.
    let sr = &params.scanner;
    let offsets = stratified(&mut rng, ns, sr.hu_offset);
    let scales = stratified(&mut rng, ns, sr.hu_scale);
    let noises = stratified(&mut rng, ns, sr.noise_sd_hu);
    let mut sites = Vec::with_capacity(ns);
    for s in 0..ns {
        let inplane = *sr.inplane_spacings_mm.choose(&mut rng).expect("validated");
        let thick = *sr.slice_thicknesses_mm.choose(&mut rng).expect("validated");
        let psf = uniform(&mut rng, sr.psf_sigma_mm[0], sr.psf_sigma_mm[1]);
        let scanner = Scanner {
            inplane_spacing_mm: inplane,
            slice_thickness_mm: thick,
            hu_offset: offsets[s],
            hu_scale: scales[s],
            noise_sd_hu: noises[s],
            psf_sigma_mm: [psf, psf, sr.psf_z_fraction * thick],
            noise_corr_mm: uniform(&mut rng, sr.noise_corr_mm[0], sr.noise_corr_mm[1]),
        };
        let sp = scanner.spacing_zyx();
        let f = params.fov_mm;
        let dims = [
            (f[2] / sp[0]).round().max(1.0) as usize,
            (f[1] / sp[1]).round().max(1.0) as usize,
            (f[0] / sp[2]).round().max(1.0) as usize,
        ];
        sites.push(SitePlan {
            id: format!("S{:02}", s + 1),
            scanner,
            dims,
            patients: Vec::new(),
        });
    }

    // Which site each patient goes to, and who responds (exact counts, random order).
    let sizes = site_sizes(ns, np, params.largest_to_smallest_site_ratio);
    let mut site_of: Vec<usize> = sizes
        .iter()
        .enumerate()
        .flat_map(|(s, &n)| std::iter::repeat_n(s, n))
        .collect();
    site_of.shuffle(&mut rng);
    // Responders per site: site rates are the cohort fraction plus a jitter spread evenly over
    // ±`site_response_rate_spread` (sites differ, as in real consortia, but no site is nearly all
    // responders or all non-responders by chance). Counts are rounded, then the total is brought to
    // exactly round(n × fraction) one patient at a time (adding at the lowest-rate site, removing at
    // the highest), and responders are shuffled within each site.
    let c = &params.clinical;
    let jitter = stratified(
        &mut rng,
        ns,
        [-c.site_response_rate_spread, c.site_response_rate_spread],
    );
    let mut k: Vec<usize> = sizes
        .iter()
        .zip(&jitter)
        .map(|(&n_s, j)| (n_s as f64 * (c.responder_fraction + j).clamp(0.0, 1.0)).round() as usize)
        .collect();
    let target = (np as f64 * c.responder_fraction).round() as usize;
    let rate = |k: &[usize], s: usize| k[s] as f64 / sizes[s] as f64;
    while k.iter().sum::<usize>() < target {
        let s = (0..ns)
            .filter(|&s| k[s] < sizes[s])
            .min_by(|&a, &b| rate(&k, a).total_cmp(&rate(&k, b)))
            .expect("target <= n");
        k[s] += 1;
    }
    while k.iter().sum::<usize>() > target {
        let s = (0..ns)
            .filter(|&s| k[s] > 0)
            .max_by(|&a, &b| rate(&k, a).total_cmp(&rate(&k, b)).then(b.cmp(&a)))
            .expect("target >= 0");
        k[s] -= 1;
    }
    let mut responds = vec![false; np];
    for s in 0..ns {
        let mut flags: Vec<bool> = (0..sizes[s]).map(|i| i < k[s]).collect();
        flags.shuffle(&mut rng);
        let members = (0..np).filter(|&i| site_of[i] == s);
        for (i, f) in members.zip(flags) {
            responds[i] = f;
        }
    }

    let mut patients = Vec::with_capacity(np);
    for i in 0..np {
        let site = site_of[i];
        sites[site].patients.push(i);
        patients.push(plan_patient(
            &mut rng,
            params,
            i,
            site,
            &sites[site].id,
            responds[i],
        )?);
    }
    Ok(CohortPlan {
        params: params.clone(),
        sites,
        patients,
    })
}

fn plan_patient(
    rng: &mut ChaCha8Rng,
    params: &CohortParams,
    index: usize,
    site: usize,
    site_id: &str,
    response: bool,
) -> Result<PatientPlan, SynthError> {
    let id = format!("P{:05}", index + 1);
    let mut clinical =
        clinical::draw_clinical(rng, id, site_id.to_string(), response, &params.clinical);
    let (pfs, event) = clinical::draw_pfs(rng, response, &params.survival);
    clinical.pfs_months = pfs;
    clinical.pfs_event = event;

    let e = &params.lesions;
    let r = if response { 1.0 } else { 0.0 };
    let traits = Traits {
        log_diameter: e.diameter_median_mm.ln()
            + r * e.responder_log_diameter_shift
            + e.log_diameter_sd * normal(rng),
        enhancement_hu: e.enhancement_hu
            + r * e.responder_enhancement_shift_hu
            + e.enhancement_sd_hu * normal(rng),
        heterogeneity_logit: e.heterogeneity_logit
            + r * e.responder_heterogeneity_logit_shift
            + e.heterogeneity_logit_sd * normal(rng),
    };

    // Liver: a large tilted ellipsoid whose lateral edge (-x side) runs through the crop.
    let tilt = [
        1.0,
        0.06 * normal(rng),
        0.06 * normal(rng),
        0.06 * normal(rng),
    ];
    let liver = Liver {
        shape: Blob {
            centre: [
                uniform(rng, 22.0, 30.0),
                uniform(rng, 0.0, 8.0),
                uniform(rng, 4.0, 12.0),
            ],
            radii: [
                uniform(rng, 55.0, 61.0),
                uniform(rng, 45.0, 51.0),
                uniform(rng, 49.0, 55.0),
            ],
            rotation: rotation_from_quaternion(tilt),
            harmonics: harmonics(rng, 3, [0.01, 0.025], [2.0, 4.0]),
        },
        base_hu: (60.0 + 10.0 * normal(rng)).clamp(30.0, 95.0),
        texture_sd_hu: uniform(rng, 3.0, 6.0),
    };
    let wall = BodyWall {
        fat_gap_mm: uniform(rng, 1.5, 4.0),
        muscle_mm: uniform(rng, 6.0, 11.0),
        fat_hu: uniform(rng, -110.0, -85.0),
        muscle_hu: uniform(rng, 40.0, 60.0),
    };

    let half = [
        params.fov_mm[0] / 2.0,
        params.fov_mm[1] / 2.0,
        params.fov_mm[2] / 2.0,
    ];
    let dirs = fibonacci_sphere(DIRECTIONS);
    let n_les = clinical::lesion_count(rng, clinical.met_pattern);
    let mut lesions: Vec<LesionPlan> = Vec::with_capacity(n_les);
    for k in 0..n_les {
        let mut diameter = (traits.log_diameter + e.lesion_log_diameter_sd * normal(rng))
            .exp()
            .clamp(e.diameter_range_mm[0], e.diameter_range_mm[1]);
        let enhancement = traits.enhancement_hu + e.lesion_enhancement_sd_hu * normal(rng);
        let logit = traits.heterogeneity_logit + e.lesion_heterogeneity_logit_sd * normal(rng);
        let h = 1.0 / (1.0 + (-logit).exp());
        let axis_ratio = [1.0, uniform(rng, 0.75, 1.0), uniform(rng, 0.7, 1.0)];
        let q = [normal(rng), normal(rng), normal(rng), normal(rng)];
        let rotation = rotation_from_quaternion(q);
        let bumps = harmonics(rng, 3, [0.015, 0.045], [2.0, 5.0]);
        // Place by rejection sampling; if a lesion does not fit after many tries, shrink it by 10 %
        // (never below the minimum diameter); a 2nd/3rd lesion that still cannot fit is dropped.
        let mut placed = None;
        'size: loop {
            let radii = [
                diameter / 2.0 * axis_ratio[0],
                diameter / 2.0 * axis_ratio[1],
                diameter / 2.0 * axis_ratio[2],
            ];
            for _ in 0..300 {
                let mut blob = Blob {
                    centre: [0.0; 3],
                    radii,
                    rotation,
                    harmonics: bumps.clone(),
                };
                let m = blob.max_radius() + LESION_MARGIN_MM;
                if (0..3).any(|a| half[a] <= m) {
                    break;
                }
                blob.centre = [
                    uniform(rng, -half[0] + m, half[0] - m),
                    uniform(rng, -half[1] + m, half[1] - m),
                    uniform(rng, -half[2] + m, half[2] - m),
                ];
                let apart = lesions.iter().all(|o| {
                    norm(crate::shapes::sub(o.shape.centre, blob.centre))
                        >= o.shape.max_radius() + blob.max_radius() + LESION_MARGIN_MM
                });
                if apart
                    && dirs.iter().all(|&u| {
                        let s = blob.surface_point(u);
                        liver.shape.eval(s).dist <= -LESION_MARGIN_MM
                    })
                {
                    placed = Some(blob);
                    break 'size;
                }
            }
            if diameter <= e.diameter_range_mm[0] {
                break;
            }
            diameter = (diameter * 0.9).max(e.diameter_range_mm[0]);
        }
        let Some(shape) = placed else {
            if k == 0 {
                return Err(SynthError::InvalidParams {
                    what: "fov_mm".into(),
                    problem: format!(
                        "a {:.0} mm lesion does not fit inside the liver within the {:?} mm crop; use a larger field of view",
                        e.diameter_range_mm[0], params.fov_mm
                    ),
                });
            }
            continue;
        };
        let nf = ((h - e.necrosis[0]) / (1.0 - e.necrosis[0])).max(0.0) * e.necrosis[1];
        lesions.push(LesionPlan {
            id: format!("L{}", lesions.len() + 1),
            shape,
            diameter_mm: diameter,
            enhancement_hu: enhancement,
            heterogeneity: h,
            texture_sd_hu: e.texture_sd_hu[0] + h * e.texture_sd_hu[1],
            necrosis_fraction: nf,
            necrosis_hu: e.necrosis_hu[0] + e.necrosis_hu[1] * normal(rng),
        });
    }

    // Two or three portal vessels inside the liver, kept clear of the lesions.
    let n_vessels = if rng.gen_bool(0.5) { 2 } else { 3 };
    let mut vessels = Vec::new();
    for _ in 0..n_vessels {
        for _ in 0..60 {
            let radius = uniform(rng, 1.5, 3.5);
            let a = [
                uniform(rng, -half[0], half[0]),
                uniform(rng, -half[1], half[1]),
                uniform(rng, -half[2], half[2]),
            ];
            let b = add(a, scale(unit_vector(rng), uniform(rng, 25.0, 60.0)));
            let cap = Capsule { a, b, radius };
            let inside = liver.shape.eval(a).dist <= -(radius + 2.0)
                && liver.shape.eval(b).dist <= -(radius + 2.0);
            let clear = lesions
                .iter()
                .all(|l| cap.axis_distance(l.shape.centre) >= l.shape.max_radius() + radius + 2.0);
            if inside && clear {
                vessels.push(Vessel {
                    capsule: cap,
                    hu: liver.base_hu + uniform(rng, 70.0, 110.0),
                });
                break;
            }
        }
    }

    let crop_centre_lps = [
        round_to(-95.0 + uniform(rng, -8.0, 8.0), 0.125),
        round_to(20.0 + uniform(rng, -8.0, 8.0), 0.125),
        round_to(-180.0 + uniform(rng, -20.0, 20.0), 0.125),
    ];
    Ok(PatientPlan {
        index,
        site,
        clinical,
        traits,
        liver,
        vessels,
        wall,
        lesions,
        crop_centre_lps,
        render_seed: rng.next_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_sizes_are_uneven_and_sum_up() {
        let s = site_sizes(7, 102, 2.1);
        assert_eq!(s.iter().sum::<usize>(), 102);
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
        assert!(s[0] >= 19 && s[6] <= 11, "{s:?}");
        assert_eq!(site_sizes(3, 3, 2.1), vec![1, 1, 1]);
        assert_eq!(site_sizes(1, 5, 2.1), vec![5]);
        let s = site_sizes(13, 40, 3.0);
        assert_eq!(s.iter().sum::<usize>(), 40);
        assert!(s.iter().all(|&n| n >= 1));
    }

    #[test]
    fn lesions_fit_and_do_not_overlap() {
        let plan = plan_cohort(&CohortParams::new(3, 60, 11)).unwrap();
        let dirs = fibonacci_sphere(1000);
        for p in &plan.patients {
            assert!((1..=3).contains(&p.lesions.len()));
            for (i, l) in p.lesions.iter().enumerate() {
                assert!(l.diameter_mm >= 8.0 && l.diameter_mm <= 35.0);
                for &u in &dirs {
                    assert!(p.liver.shape.eval(l.shape.surface_point(u)).dist < -1.0);
                }
                for o in &p.lesions[i + 1..] {
                    let d = norm(crate::shapes::sub(o.shape.centre, l.shape.centre));
                    assert!(d > o.shape.max_radius() + l.shape.max_radius());
                }
            }
        }
    }
}
