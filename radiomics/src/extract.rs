//! Feature extraction for one prepared ROI: runs every requested IBSI family and returns values
//! tagged with their registry tag and IBSI code.
//!
//! Input is the image *after* interpolation (the preprocessing module's job), the morphological mask
//! (interpolated) and the intensity mask (interpolated and re-segmented), all on the same grid.
//! Intensity statistics, histogram, IVH and texture use the intensity mask; GLDZM's border distance
//! uses the morphological mask; local intensity peaks use the full image around the intensity mask.
//!
//! Undefined values are NaN, never an error: e.g. GLCM correlation with a single grey level, or a
//! 2D texture feature when no slice yields a matrix. Errors are reserved for inputs that cannot be
//! processed (empty ROI, mismatched shapes, non-finite intensities, invalid discretisation).

use ndarray::Zip;
use thiserror::Error;

use crate::discretise::{Discretisation, DiscretiseError, Discretiser};
use crate::intensity::{self, IvhDiscretisation};
use crate::registry::{self, Aggregation};
use crate::texture::{self, FamilyValues, Spatial, TextureError, TextureGrid};
use crate::volume::{Mask, Volume};

/// One computed feature.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FeatureValue {
    /// Registry tag, e.g. `cm_joint_max_3D_avg` (see [`crate::registry`]).
    pub tag: &'static str,
    /// IBSI feature code, e.g. `GYBY`.
    pub ibsi_code: &'static str,
    pub value: f64,
}

impl FeatureValue {
    /// The registry row of this feature (family, aggregation, IBSI name, LIFEx columns).
    pub fn definition(&self) -> Option<&'static registry::FeatureDef> {
        registry::by_tag(self.tag)
    }
}

/// Which feature families to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Families {
    /// Morphology (computed by [`crate::morphology`]).
    pub morphology: bool,
    pub local_intensity: bool,
    pub statistics: bool,
    pub histogram: bool,
    pub volume_histogram: bool,
    pub glcm: bool,
    pub glrlm: bool,
    pub glszm: bool,
    pub gldzm: bool,
    pub ngtdm: bool,
    pub ngldm: bool,
}

impl Families {
    pub const ALL: Families = Families {
        morphology: true,
        local_intensity: true,
        statistics: true,
        histogram: true,
        volume_histogram: true,
        glcm: true,
        glrlm: true,
        glszm: true,
        gldzm: true,
        ngtdm: true,
        ngldm: true,
    };

    /// No family; switch on the ones wanted.
    pub const NONE: Families = Families {
        morphology: false,
        local_intensity: false,
        statistics: false,
        histogram: false,
        volume_histogram: false,
        glcm: false,
        glrlm: false,
        glszm: false,
        gldzm: false,
        ngtdm: false,
        ngldm: false,
    };

    fn any_texture(&self) -> bool {
        self.glcm || self.glrlm || self.glszm || self.gldzm || self.ngtdm || self.ngldm
    }
}

/// Extraction settings: discretisation and aggregation choices (preprocessing happens before).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSettings {
    /// Discretisation for the intensity histogram and all texture families. A fixed bin size
    /// without an explicit origin takes the lower re-segmentation bound, else the ROI minimum.
    pub discretisation: Discretisation,
    /// Re-segmentation range `[lower, upper]` applied to the intensity mask (upper may be open).
    /// Extraction does not re-segment; the range sets the FBS origin and the IVH total range.
    pub resegmentation_range: Option<(f64, Option<f64>)>,
    /// Discretisation of the intensity-volume histogram.
    pub ivh: IvhDiscretisation,
    /// Texture aggregation methods to compute (2D / 2.5D / 3D).
    pub spatial: Spatial,
    pub families: Families,
}

impl FeatureSettings {
    /// The IBSI digital phantom: grey levels used as is, every aggregation method.
    pub fn ibsi_digital_phantom() -> Self {
        Self {
            discretisation: Discretisation::None,
            resegmentation_range: None,
            ivh: IvhDiscretisation::None,
            spatial: Spatial::ALL,
            families: Families::ALL,
        }
    }

    /// IBSI CT configuration C: range [-1000, 400] HU, FBS 25 HU, IVH FBS 2.5 HU, 3D.
    pub fn ibsi_config_c() -> Self {
        Self {
            discretisation: Discretisation::FixedBinSize {
                width: 25.0,
                origin: None,
            },
            resegmentation_range: Some((-1000.0, Some(400.0))),
            ivh: IvhDiscretisation::FixedBinSize { width: 2.5 },
            spatial: Spatial::THREE_D,
            families: Families::ALL,
        }
    }

    /// The seed study's LIFEx-like setting: range [-1000, 3000] HU, FBS 10 HU from -1000, 3D
    /// (LIFEx parity uses the `_3D_avg` GLCM/GLRLM tags), IVH on integer HU.
    pub fn lifex_study() -> Self {
        Self {
            discretisation: Discretisation::FixedBinSize {
                width: 10.0,
                origin: Some(-1000.0),
            },
            resegmentation_range: Some((-1000.0, Some(3000.0))),
            ivh: IvhDiscretisation::None,
            spatial: Spatial::THREE_D,
            families: Families::ALL,
        }
    }
}

/// The project's setting ([`FeatureSettings::lifex_study`]).
impl Default for FeatureSettings {
    fn default() -> Self {
        Self::lifex_study()
    }
}

/// Why features cannot be extracted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ExtractError {
    #[error(
        "the intensity mask is empty: nothing to compute (check the mask label and the re-segmentation range)"
    )]
    EmptyRoi,
    #[error(
        "{what} has shape {got:?} but the image has shape {image:?}; resample the mask onto the image grid"
    )]
    ShapeMismatch {
        what: &'static str,
        image: [usize; 3],
        got: [usize; 3],
    },
    #[error("voxel spacing {0:?} mm is invalid: every spacing must be positive and finite")]
    InvalidSpacing([f64; 3]),
    #[error(
        "intensity {value} at voxel [z={z}, y={y}, x={x}] inside the intensity mask is not finite"
    )]
    NonFiniteIntensity {
        value: f64,
        z: usize,
        y: usize,
        x: usize,
    },
    #[error("discretisation failed: {0}")]
    Discretise(#[from] DiscretiseError),
    #[error("texture features failed: {0}")]
    Texture(#[from] TextureError),
    #[error("morphology failed: {0}")]
    Morphology(String),
    #[error("internal error: computed feature {0} is missing from the registry")]
    UnregisteredTag(String),
}

/// A texture family's entry point.
type FamilyFn = fn(&TextureGrid, Spatial) -> Vec<FamilyValues>;

fn shape(a: &[usize]) -> [usize; 3] {
    [a[0], a[1], a[2]]
}

/// Compute all requested families for one ROI, in the order morphology, local intensity,
/// statistics, IVH, intensity histogram, GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM (each texture
/// family in the aggregation order 2D, 2.5D, 3D).
pub fn compute_features(
    image: &Volume,
    morph_mask: &Mask,
    int_mask: &Mask,
    settings: &FeatureSettings,
) -> Result<Vec<FeatureValue>, ExtractError> {
    let img_shape = shape(image.data.shape());
    for (what, m) in [
        ("morphological mask", morph_mask),
        ("intensity mask", int_mask),
    ] {
        let got = shape(m.data.shape());
        if got != img_shape {
            return Err(ExtractError::ShapeMismatch {
                what,
                image: img_shape,
                got,
            });
        }
    }
    let spacing = image.geometry.spacing;
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ExtractError::InvalidSpacing(spacing));
    }
    let mut values = Vec::new();
    let mut bad = None;
    Zip::indexed(&int_mask.data)
        .and(&image.data)
        .for_each(|(z, y, x), &m, &v| {
            if m {
                if v.is_finite() {
                    values.push(v);
                } else if bad.is_none() {
                    bad = Some(ExtractError::NonFiniteIntensity { value: v, z, y, x });
                }
            }
        });
    if let Some(e) = bad {
        return Err(e);
    }
    if values.is_empty() {
        return Err(ExtractError::EmptyRoi);
    }

    let fam = settings.families;
    let mut out = Vec::new();
    if fam.morphology {
        // Morphology (mesh, PCA, densities, Moran's I, ...) lives in `crate::morphology`.
        let m = crate::morphology::morphology(image, morph_mask, int_mask)
            .map_err(|e| ExtractError::Morphology(e.to_string()))?;
        let (names, vals): (Vec<&str>, Vec<f64>) = m.tagged().into_iter().unzip();
        push_volume(&mut out, &names, &vals)?;
    }
    if fam.local_intensity {
        let v = intensity::local_intensity(image.data.view(), int_mask.data.view(), spacing);
        push_volume(&mut out, &intensity::LOCAL_FEATURES, &v)?;
    }
    if fam.statistics {
        push_volume(
            &mut out,
            &intensity::STAT_FEATURES,
            &intensity::intensity_statistics(&values),
        )?;
    }
    if fam.volume_histogram {
        let v = intensity::intensity_volume_histogram(
            &values,
            settings.ivh,
            settings.resegmentation_range,
        )?;
        push_volume(&mut out, &intensity::IVH_FEATURES, &v)?;
    }
    if !(fam.histogram || fam.any_texture()) {
        return Ok(out);
    }
    let method = match settings.discretisation {
        Discretisation::FixedBinSize {
            width,
            origin: None,
        } => Discretisation::FixedBinSize {
            width,
            origin: settings.resegmentation_range.map(|r| r.0),
        },
        m => m,
    };
    let disc = Discretiser::fit(method, &values)?;
    if fam.histogram {
        let levels: Vec<u32> = values.iter().map(|&v| disc.level(v)).collect();
        push_volume(
            &mut out,
            &intensity::IH_FEATURES,
            &intensity::intensity_histogram(&levels, disc.n_levels),
        )?;
    }
    if fam.any_texture() {
        let grid = TextureGrid::new(
            image.data.view(),
            int_mask.data.view(),
            morph_mask.data.view(),
            |x| disc.level(x),
            disc.n_levels,
        )?;
        let sp = settings.spatial;
        let families: [(bool, &[&str], FamilyFn); 6] = [
            (fam.glcm, &texture::glcm::FEATURES, texture::glcm::compute),
            (
                fam.glrlm,
                &texture::glrlm::FEATURES,
                texture::glrlm::compute,
            ),
            (
                fam.glszm,
                &texture::glszm::FEATURES,
                texture::glszm::compute,
            ),
            (
                fam.gldzm,
                &texture::gldzm::FEATURES,
                texture::gldzm::compute,
            ),
            (
                fam.ngtdm,
                &texture::ngtdm::FEATURES,
                texture::ngtdm::compute,
            ),
            (
                fam.ngldm,
                &texture::ngldm::FEATURES,
                texture::ngldm::compute,
            ),
        ];
        for (wanted, names, compute) in families {
            if wanted {
                for fv in compute(&grid, sp) {
                    push(&mut out, names, fv.aggregation, &fv.values)?;
                }
            }
        }
    }
    Ok(out)
}

fn push_volume(
    out: &mut Vec<FeatureValue>,
    names: &[&str],
    values: &[f64],
) -> Result<(), ExtractError> {
    push(out, names, Aggregation::Volume, values)
}

fn push(
    out: &mut Vec<FeatureValue>,
    names: &[&str],
    agg: Aggregation,
    values: &[f64],
) -> Result<(), ExtractError> {
    for (base, &value) in names.iter().zip(values) {
        let def = registry::by_base(base, agg)
            .ok_or_else(|| ExtractError::UnregisteredTag(format!("{base}{}", agg.suffix())))?;
        out.push(FeatureValue {
            tag: def.tag,
            ibsi_code: def.ibsi_code,
            value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;
    use ndarray::Array3;

    fn volume(data: Array3<f64>) -> Volume {
        Volume {
            data,
            geometry: Geometry::with_spacing([2.0, 1.0, 1.0]),
        }
    }

    fn mask(data: Array3<bool>) -> Mask {
        Mask {
            data,
            geometry: Geometry::with_spacing([2.0, 1.0, 1.0]),
        }
    }

    fn intensity_and_texture() -> FeatureSettings {
        let mut s = FeatureSettings::ibsi_config_c();
        s.spatial = Spatial::ALL;
        s.families = Families {
            morphology: false,
            ..Families::ALL
        };
        s
    }

    #[test]
    fn single_voxel_roi_gives_values_not_panics() {
        let img = volume(Array3::from_elem((3, 3, 3), 10.0));
        let mut m = Array3::from_elem((3, 3, 3), false);
        m[[1, 1, 1]] = true;
        let m = mask(m);
        let f = compute_features(&img, &m, &m, &intensity_and_texture()).unwrap();
        let get = |t: &str| f.iter().find(|v| v.tag == t).unwrap().value;
        assert_eq!(get("stat_mean"), 10.0);
        assert_eq!(get("stat_var"), 0.0);
        assert_eq!(get("loc_peak_glob"), 10.0);
        // No neighbour pair: GLCM undefined; a single run / zone / dependence is defined.
        assert!(get("cm_joint_max_3D_avg").is_nan());
        assert_eq!(get("rlm_sre_3D_avg"), 1.0);
        assert_eq!(get("szm_z_perc_3D"), 1.0);
        // A voxel without any neighbour has no NGTDM neighbourhood: the matrix is empty.
        assert!(get("ngt_coarseness_3D").is_nan());
        assert_eq!(get("ngl_dc_perc_3D"), 1.0);
    }

    #[test]
    fn constant_roi() {
        let img = volume(Array3::from_elem((4, 5, 6), 100.0));
        let m = mask(Array3::from_elem((4, 5, 6), true));
        let f = compute_features(&img, &m, &m, &intensity_and_texture()).unwrap();
        let get = |t: &str| f.iter().find(|v| v.tag == t).unwrap().value;
        assert_eq!(get("cm_joint_max_3D_comb"), 1.0);
        assert!(get("cm_corr_3D_comb").is_nan());
        assert_eq!(get("ngt_contrast_3D"), 0.0);
        // Σ p_i s_i = 0: IBSI caps coarseness at 10^6.
        assert_eq!(
            get("ngt_coarseness_3D"),
            crate::texture::ngtdm::COARSENESS_MAX
        );
        assert_eq!(get("ih_uniformity"), 1.0);
        // Whole image in the ROI: every border voxel has distance 1, the centre ones more.
        assert!(get("dzm_lde_3D") >= 1.0);
        assert!(f.iter().all(|v| registry::by_tag(v.tag).is_some()));
    }

    #[test]
    fn errors_are_typed() {
        let img = volume(Array3::from_elem((2, 2, 2), 0.0));
        let empty = mask(Array3::from_elem((2, 2, 2), false));
        let s = intensity_and_texture();
        assert_eq!(
            compute_features(&img, &empty, &empty, &s),
            Err(ExtractError::EmptyRoi)
        );
        let small = mask(Array3::from_elem((1, 2, 2), true));
        assert!(matches!(
            compute_features(&img, &small, &small, &s),
            Err(ExtractError::ShapeMismatch { .. })
        ));
        let full = mask(Array3::from_elem((2, 2, 2), true));
        // Intensities below the FBS origin (-1000 + the range) need re-segmentation first.
        let low = volume(Array3::from_elem((2, 2, 2), -2000.0));
        assert!(matches!(
            compute_features(&low, &full, &full, &s),
            Err(ExtractError::Discretise(
                DiscretiseError::BelowOrigin { .. }
            ))
        ));
        let mut nan = Array3::from_elem((2, 2, 2), 0.0);
        nan[[1, 1, 1]] = f64::NAN;
        assert!(matches!(
            compute_features(&volume(nan), &full, &full, &s),
            Err(ExtractError::NonFiniteIntensity {
                z: 1,
                y: 1,
                x: 1,
                ..
            })
        ));
        let mut digital = FeatureSettings::ibsi_digital_phantom();
        digital.families.morphology = false;
        assert!(matches!(
            compute_features(&img, &full, &full, &digital),
            Err(ExtractError::Discretise(DiscretiseError::NotGreyLevels(_)))
        ));
    }
}
