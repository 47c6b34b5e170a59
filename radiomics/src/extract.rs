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

use thiserror::Error;

use crate::discretise::{Discretisation, DiscretiseError, Discretiser};
use crate::intensity::{self, IvhDiscretisation};
use crate::registry::{self, Aggregation};
use crate::texture::{self, FamilyValues, Spatial, TextureError, TextureGrid};
use crate::volume::{Mask, Volume};

/// One computed feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureValue {
    /// Registry tag, e.g. `cm_joint_max_3D_avg` (see [`crate::registry`]).
    pub tag: &'static str,
    /// IBSI feature code, e.g. `GYBY`.
    pub ibsi_code: &'static str,
    pub value: f64,
}

/// Which feature families to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// Morphology (computed by the `morphology` module; see [`compute_features`]).
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

    fn any_texture(&self) -> bool {
        self.glcm || self.glrlm || self.glszm || self.gldzm || self.ngtdm || self.ngldm
    }
}

/// Extraction settings: discretisation and aggregation choices (preprocessing happens before).
#[derive(Debug, Clone, Copy, PartialEq)]
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
    #[error("internal error: computed feature {0} is missing from the registry")]
    UnregisteredTag(String),
}

/// A texture family's entry point.
type FamilyFn = fn(&TextureGrid, Spatial) -> Vec<FamilyValues>;

fn shape(a: &[usize]) -> [usize; 3] {
    [a[0], a[1], a[2]]
}

/// Compute all requested families for one ROI.
///
/// Morphology is computed by the `morphology` module (another engineer's work); its call site is
/// marked below. Until it is wired in, no `morph_*` values are returned even when
/// `settings.families.morphology` is set.
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
    for ((z, y, x), &m) in int_mask.data.indexed_iter() {
        if m {
            let v = image.data[[z, y, x]];
            if !v.is_finite() {
                return Err(ExtractError::NonFiniteIntensity { value: v, z, y, x });
            }
            values.push(v);
        }
    }
    if values.is_empty() {
        return Err(ExtractError::EmptyRoi);
    }

    let fam = settings.families;
    let mut out = Vec::new();
    if fam.morphology {
        // Call site for morphology: `crate::morphology::compute(...)` (marching-cubes mesh, PCA,
        // Moran's I, ...) belongs here once that module exists; push its values with `push_volume`.
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
