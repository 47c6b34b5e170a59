//! One ROI end to end: IBSI preprocessing ([`crate::preprocess`]) followed by feature extraction
//! ([`crate::extract`]), with the named presets the CLI offers (IBSI CT configurations A–E, the
//! digital phantom, and the study's "paper" setting).
//!
//! Pure computation on in-memory volumes (no IO). Conventions:
//! * The re-segmentation range lives in two places (preprocessing removes voxels; feature
//!   extraction uses the lower bound as fixed-bin-size origin and the range for the IVH); the
//!   setters here keep them consistent.
//! * Non-finite intensities (NaN, ±inf) anywhere that can reach the resampled ROI box are an error,
//!   never silently dropped (a NaN would otherwise be removed by range re-segmentation, since every
//!   comparison with NaN is false, and bias the features).
//! * A ROI of one voxel is computed: every feature that is defined gets its value, undefined ones
//!   (e.g. GLCM features without any neighbour pair, PCA-based elongation, Moran's I) are NaN. See
//!   [`crate::extract`] and the tests below.

use thiserror::Error;

use crate::discretise::Discretisation;
use crate::extract::{ExtractError, FeatureSettings, FeatureValue, compute_features};
use crate::intensity::IvhDiscretisation;
use crate::preprocess::{Interpolation, PreprocessError, Preprocessing, ROI_MARGIN_MM, preprocess};
use crate::texture::Spatial;
use crate::volume::{Mask, Volume};

/// Preprocessing + feature settings of one extraction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub preprocessing: Preprocessing,
    pub features: FeatureSettings,
}

const TWO_D: Spatial = Spatial {
    d2: true,
    d25: true,
    d3: false,
};

impl Settings {
    /// Names accepted by [`Settings::preset`].
    pub const PRESETS: [&'static str; 7] = [
        "ibsi-digital",
        "ibsi-a",
        "ibsi-b",
        "ibsi-c",
        "ibsi-d",
        "ibsi-e",
        "paper",
    ];

    /// A preset by name (`ibsi-a` … `ibsi-e`, `ibsi-digital`, `paper`; case-insensitive).
    ///
    /// * `ibsi-digital`: no interpolation, no re-segmentation, grey levels used as is, 2D + 2.5D + 3D.
    /// * `ibsi-a` … `ibsi-e`: the IBSI 1 CT phantom configurations (`shared/ibsi/README.md`):
    ///   A FBS 25 HU (2D), B FBN 32 (2D), C FBS 25 HU + IVH FBS 2.5 HU, D FBN 32, E FBN 32 + IVH
    ///   FBN 1000 (3D); ranges and interpolation as in [`Preprocessing::preset`].
    /// * `paper`: 1 mm isotropic trilinear (LIFEx used Lagrange: override the interpolation),
    ///   rounded HU, re-segmentation [-1000, 3000] HU, FBS 10 HU from -1000 HU, 3D, every family.
    pub fn preset(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        let pre = Preprocessing::preset(&name)?;
        let range = pre.resegment_range.map(|(lo, hi)| (lo, Some(hi)));
        let fbs = |width| Discretisation::FixedBinSize {
            width,
            origin: None,
        };
        let fbn32 = Discretisation::FixedBinNumber { bins: 32 };
        let features = match name.as_str() {
            "ibsi-digital" | "digital" => FeatureSettings::ibsi_digital_phantom(),
            "paper" => FeatureSettings::lifex_study(),
            "ibsi-c" | "c" => FeatureSettings::ibsi_config_c(),
            cfg => {
                let (discretisation, ivh, spatial) = match cfg {
                    "ibsi-a" | "a" => (fbs(25.0), IvhDiscretisation::None, TWO_D),
                    "ibsi-b" | "b" => (fbn32, IvhDiscretisation::None, TWO_D),
                    "ibsi-d" | "d" => (fbn32, IvhDiscretisation::None, Spatial::THREE_D),
                    "ibsi-e" | "e" => (
                        fbn32,
                        IvhDiscretisation::FixedBinNumber { bins: 1000 },
                        Spatial::THREE_D,
                    ),
                    _ => return None,
                };
                FeatureSettings {
                    discretisation,
                    resegmentation_range: range,
                    ivh,
                    spatial,
                    families: crate::extract::Families::ALL,
                }
            }
        };
        debug_assert_eq!(features.resegmentation_range, range);
        Some(Self {
            preprocessing: pre,
            features,
        })
    }

    /// The study's setting (see [`Settings::preset`]).
    pub fn paper() -> Self {
        Self::preset("paper").expect("paper preset")
    }

    /// Set (or clear) the re-segmentation range in both places. An infinite upper bound means an
    /// open range. A fixed bin size then starts at the new lower bound (or the ROI minimum).
    pub fn set_resegmentation(&mut self, range: Option<(f64, f64)>) {
        self.preprocessing.resegment_range = range;
        self.features.resegmentation_range =
            range.map(|(lo, hi)| (lo, if hi.is_finite() { Some(hi) } else { None }));
        if let Discretisation::FixedBinSize { width, .. } = self.features.discretisation {
            self.features.discretisation = Discretisation::FixedBinSize {
                width,
                origin: None,
            };
        }
    }

    /// Fixed bin size `width`, starting at the lower re-segmentation bound (or the ROI minimum).
    pub fn set_bin_width(&mut self, width: f64) {
        self.features.discretisation = Discretisation::FixedBinSize {
            width,
            origin: None,
        };
    }

    /// Fixed bin number over the ROI range.
    pub fn set_bin_count(&mut self, bins: u32) {
        self.features.discretisation = Discretisation::FixedBinNumber { bins };
    }

    /// Target spacing (mm), isotropic. For in-plane (2D) presets only x and y are resampled.
    pub fn set_spacing(&mut self, mm: f64) {
        self.preprocessing.spacing = Some([mm, mm, mm]);
        if self.preprocessing.interpolation == Interpolation::None {
            self.preprocessing.interpolation = Interpolation::Linear;
        }
    }
}

/// Why one ROI could not be processed.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(
        "the image has {count} non-finite voxel(s) (NaN or infinite) near the ROI, first {value} at voxel [z={}, y={}, x={}]; fix or re-export the image",
        first[0], first[1], first[2]
    )]
    NonFiniteImage {
        count: usize,
        first: [usize; 3],
        value: f64,
    },
    #[error("{0}")]
    Preprocess(#[from] PreprocessError),
    #[error("{0}")]
    Extract(#[from] ExtractError),
}

/// Extra input voxels scanned for non-finite values around the ROI box: the cubic spline's
/// prefilter block (24) plus its 4-tap support.
const NAN_SCAN_EXTRA_VOXELS: usize = 28;

/// Check that no non-finite intensity can reach the resampled ROI box (the ROI bounding box grown
/// by [`ROI_MARGIN_MM`] plus the target spacing and the interpolation support, in input voxels).
pub fn check_finite_near_roi(
    image: &Volume,
    mask: &Mask,
    settings: &Preprocessing,
) -> Result<(), PipelineError> {
    let dims: [usize; 3] = image.data.dim().into();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    ndarray::Zip::indexed(&mask.data).for_each(|(z, y, x), &m| {
        if m {
            for (a, v) in [z, y, x].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v);
            }
        }
    });
    if lo[0] == usize::MAX {
        return Ok(()); // empty mask: reported by preprocessing
    }
    let mut range = [(0, 0); 3];
    for a in 0..3 {
        let sp = image.geometry.spacing[a];
        let target = settings.spacing.map(|s| s[a]).unwrap_or(sp).max(sp);
        let grow = ((ROI_MARGIN_MM + 2.0 * target) / sp).ceil() as usize + NAN_SCAN_EXTRA_VOXELS;
        range[a] = (lo[a].saturating_sub(grow), (hi[a] + grow + 1).min(dims[a]));
    }
    // (`ndarray::s!` expands to code that `forbid(unsafe_code)` rejects.)
    let region = image.data.slice_each_axis(|ax| {
        let (a, b) = range[ax.axis.index()];
        ndarray::Slice::from(a..b)
    });
    let mut count = 0;
    let mut first = None;
    ndarray::Zip::indexed(&region).for_each(|(z, y, x), &v| {
        if !v.is_finite() {
            count += 1;
            if first.is_none() {
                first = Some(([z + range[0].0, y + range[1].0, x + range[2].0], v));
            }
        }
    });
    match first {
        None => Ok(()),
        Some((first, value)) => Err(PipelineError::NonFiniteImage {
            count,
            first,
            value,
        }),
    }
}

/// Preprocess one ROI and compute its features (registry order, see
/// [`crate::extract::compute_features`]). `mask` must be on the image grid.
pub fn extract_roi(
    image: &Volume,
    mask: &Mask,
    settings: &Settings,
) -> Result<Vec<FeatureValue>, PipelineError> {
    check_finite_near_roi(image, mask, &settings.preprocessing)?;
    let pre = preprocess(image, mask, &settings.preprocessing)?;
    Ok(compute_features(
        &pre.image,
        &pre.morph_mask,
        &pre.int_mask,
        &settings.features,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;
    use ndarray::Array3;

    fn blob(n: usize, r: f64) -> (Volume, Mask) {
        let c = (n as f64 - 1.0) / 2.0;
        let data = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            (40.0 + 30.0 * ((x * 7 + y * 3 + z * 5) % 11) as f64 - 150.0).round()
        });
        let mask = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let d = (z as f64 - c).powi(2) + (y as f64 - c).powi(2) + (x as f64 - c).powi(2);
            d <= r * r
        });
        let g = Geometry::with_spacing([1.0, 1.0, 1.0]);
        (
            Volume {
                data,
                geometry: g.clone(),
            },
            Mask {
                data: mask,
                geometry: g,
            },
        )
    }

    #[test]
    fn presets_are_consistent() {
        for name in Settings::PRESETS {
            let s = Settings::preset(name).unwrap();
            let range = s.preprocessing.resegment_range.map(|(l, h)| (l, Some(h)));
            assert_eq!(s.features.resegmentation_range, range, "{name}");
        }
        assert!(Settings::preset("ibsi-f").is_none());
        let p = Settings::paper();
        assert_eq!(p.preprocessing.spacing, Some([1.0; 3]));
        assert_eq!(p.preprocessing.resegment_range, Some((-1000.0, 3000.0)));
        assert_eq!(
            p.features.discretisation,
            Discretisation::FixedBinSize {
                width: 10.0,
                origin: Some(-1000.0)
            }
        );
        assert_eq!(p.features.spatial, Spatial::THREE_D);
        let mut s = Settings::paper();
        s.set_resegmentation(Some((-500.0, f64::INFINITY)));
        assert_eq!(s.features.resegmentation_range, Some((-500.0, None)));
        assert_eq!(
            s.features.discretisation,
            Discretisation::FixedBinSize {
                width: 10.0,
                origin: None
            }
        );
    }

    #[test]
    fn paper_preset_runs_on_a_blob() {
        let (img, mask) = blob(20, 6.0);
        let f = extract_roi(&img, &mask, &Settings::paper()).unwrap();
        assert!(f.len() > 150, "{} features", f.len());
        let get = |t: &str| f.iter().find(|v| v.tag == t).unwrap().value;
        assert!((get("morph_vol_approx") - mask.count() as f64).abs() < 1e-9);
        assert!(get("cm_joint_max_3D_avg").is_finite());
    }

    /// Same input, same bits: no hash-order or thread-order dependence in any family.
    #[test]
    fn repeated_extraction_is_bitwise_identical() {
        let (img, mask) = blob(24, 8.0);
        let a = extract_roi(&img, &mask, &Settings::paper()).unwrap();
        for _ in 0..3 {
            let b = extract_roi(&img, &mask, &Settings::paper()).unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.tag, y.tag);
                assert!(
                    x.value.to_bits() == y.value.to_bits(),
                    "{}: {} vs {}",
                    x.tag,
                    x.value,
                    y.value
                );
            }
        }
    }

    #[test]
    fn nan_near_the_roi_is_an_error_but_far_away_is_not() {
        let (b, m) = blob(16, 4.0);
        // Long along x: the ROI sits at x 4..12, the far NaN at x = 119 (> 10 mm + support).
        let mut img = Volume {
            data: Array3::from_shape_fn((16, 16, 120), |(z, y, x)| b.data[[z, y, x % 16]]),
            geometry: b.geometry.clone(),
        };
        let mask = Mask {
            data: Array3::from_shape_fn((16, 16, 120), |(z, y, x)| x < 16 && m.data[[z, y, x]]),
            geometry: b.geometry.clone(),
        };
        img.data[[0, 0, 119]] = f64::NAN;
        extract_roi(&img, &mask, &Settings::paper()).unwrap();
        img.data[[8, 9, 10]] = f64::NAN;
        img.data[[8, 9, 11]] = f64::INFINITY;
        let e = extract_roi(&img, &mask, &Settings::paper()).unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::NonFiniteImage {
                    count: 2,
                    first: [8, 9, 10],
                    ..
                }
            ),
            "{e}"
        );
    }

    /// Decision for a one-voxel ROI: compute what is defined, NaN for what is not.
    #[test]
    fn one_voxel_roi_gives_defined_values_and_nans() {
        let (img, _) = blob(9, 0.0);
        let mut m = Array3::from_elem((9, 9, 9), false);
        m[[4, 4, 4]] = true;
        let mask = Mask {
            data: m,
            geometry: img.geometry.clone(),
        };
        let mut s = Settings::paper();
        s.preprocessing.interpolation = Interpolation::None;
        let f = extract_roi(&img, &mask, &s).unwrap();
        let get = |t: &str| f.iter().find(|v| v.tag == t).unwrap().value;
        assert_eq!(get("morph_vol_approx"), 1.0);
        assert_eq!(get("stat_mean"), img.data[[4, 4, 4]]);
        assert_eq!(get("stat_var"), 0.0);
        assert!(get("cm_joint_max_3D_avg").is_nan(), "no neighbour pair");
        assert_eq!(get("szm_z_perc_3D"), 1.0);
        let n_nan = f.iter().filter(|v| v.value.is_nan()).count();
        assert!(n_nan > 0 && n_nan < f.len(), "{n_nan} NaN of {}", f.len());
    }

    #[test]
    fn everything_outside_the_range_is_a_preprocessing_error() {
        let (mut img, mask) = blob(20, 5.0);
        img.data.fill(-3000.0);
        let e = extract_roi(&img, &mask, &Settings::paper()).unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::Preprocess(PreprocessError::EmptyAfterResegmentation { .. })
            ),
            "{e}"
        );
        let empty = Mask {
            data: mask.data.mapv(|_| false),
            geometry: mask.geometry.clone(),
        };
        assert!(matches!(
            extract_roi(&img, &empty, &Settings::paper()),
            Err(PipelineError::Preprocess(PreprocessError::EmptyMask))
        ));
    }
}
