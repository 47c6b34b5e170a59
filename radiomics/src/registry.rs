//! The feature registry: one table of every IBSI feature this crate knows, with its reference tag,
//! IBSI code, family, aggregation method and (where one exists) its LIFEx column.
//!
//! Tags are spelled exactly as in the IBSI/MIRP reference tables (`shared/ibsi/reference_values.csv`):
//! a base tag (`cm_joint_max`, `stat_mean`, …) plus, for texture families, the aggregation suffix
//! (`_2D_avg`, `_2D_comb`, `_2_5D_avg`, `_2_5D_comb`, `_3D_avg`, `_3D_comb` for GLCM/GLRLM and `_2D`,
//! `_2_5D`, `_3D` for GLSZM/GLDZM/NGTDM/NGLDM). Several tags share one IBSI code: the code names the
//! feature, the suffix names the aggregation (whose own IBSI code is [`Aggregation::ibsi_code`]).
//!
//! LIFEx columns come from `shared/ibsi/lifex_features.md`. LIFEx "NGLDM" is IBSI NGTDM, LIFEx "GLZLM"
//! is IBSI GLSZM, and LIFEx averages GLCM/GLRLM features over the 13 3D directions, so LIFEx columns
//! are attached to the `_3D_avg` (GLCM/GLRLM) and `_3D` (GLSZM/NGTDM) tags only.
//! Morphology rows are listed here too (tags and codes); their values are computed by `morphology`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// IBSI feature family. [`Family::as_str`] gives the `family` label used in the reference tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Morphology,
    LocalIntensity,
    IntensityStatistics,
    IntensityHistogram,
    IntensityVolumeHistogram,
    /// Grey level co-occurrence matrix.
    Glcm,
    /// Grey level run length matrix.
    Glrlm,
    /// Grey level size zone matrix (LIFEx "GLZLM").
    Glszm,
    /// Grey level distance zone matrix.
    Gldzm,
    /// Neighbourhood grey tone difference matrix (LIFEx "NGLDM").
    Ngtdm,
    /// Neighbouring grey level dependence matrix (no LIFEx counterpart).
    Ngldm,
}

impl Family {
    /// Every family, in the order features are reported.
    pub const ALL: [Family; 11] = [
        Family::Morphology,
        Family::LocalIntensity,
        Family::IntensityStatistics,
        Family::IntensityHistogram,
        Family::IntensityVolumeHistogram,
        Family::Glcm,
        Family::Glrlm,
        Family::Glszm,
        Family::Gldzm,
        Family::Ngtdm,
        Family::Ngldm,
    ];

    /// The `family` label of the reference tables (`glcm`, `intensity_statistics`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Morphology => "morphology",
            Family::LocalIntensity => "local_intensity",
            Family::IntensityStatistics => "intensity_statistics",
            Family::IntensityHistogram => "intensity_histogram",
            Family::IntensityVolumeHistogram => "intensity_volume_histogram",
            Family::Glcm => "glcm",
            Family::Glrlm => "glrlm",
            Family::Glszm => "glszm",
            Family::Gldzm => "gldzm",
            Family::Ngtdm => "ngtdm",
            Family::Ngldm => "ngldm",
        }
    }

    /// IBSI code of the family.
    pub fn ibsi_code(self) -> &'static str {
        match self {
            Family::Morphology => "HCUG",
            Family::LocalIntensity => "9ST6",
            Family::IntensityStatistics => "UHIW",
            Family::IntensityHistogram => "ZVCW",
            Family::IntensityVolumeHistogram => "P88C",
            Family::Glcm => "LFYI",
            Family::Glrlm => "TP0I",
            Family::Glszm => "9SAK",
            Family::Gldzm => "VMDZ",
            Family::Ngtdm => "IPET",
            Family::Ngldm => "REK0",
        }
    }
}

/// How a feature value is aggregated over slices and directions (IBSI "feature aggregation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Computed once on the 3D ROI (DHQ4); all non-texture families.
    Volume,
    /// GLCM/GLRLM: features per slice and 2D direction, averaged (BTW3), suffix `_2D_avg`.
    Avg2D,
    /// GLCM/GLRLM: per slice, directions merged, averaged over slices (SUJT), suffix `_2D_comb`.
    SliceMerged2D,
    /// GLCM/GLRLM: per direction, slices merged, averaged over directions (JJUI), suffix `_2_5D_avg`.
    DirectionMerged25D,
    /// GLCM/GLRLM: all 2D matrices merged (ZW7Z), suffix `_2_5D_comb`.
    Merged25D,
    /// GLCM/GLRLM: features per 3D direction, averaged over the 13 directions (ITBB), `_3D_avg`.
    /// This is what LIFEx reports.
    Avg3D,
    /// GLCM/GLRLM: the 13 directional matrices merged (IAZD), suffix `_3D_comb`.
    Merged3D,
    /// GLSZM/GLDZM/NGTDM/NGLDM: features per slice, averaged over slices (8QNN), suffix `_2D`.
    Slice2D,
    /// GLSZM/GLDZM/NGTDM/NGLDM: slice matrices merged (62GR), suffix `_2_5D`.
    Merged25DSlices,
    /// GLSZM/GLDZM/NGTDM/NGLDM: one 3D matrix (KOBO), suffix `_3D`.
    Volume3D,
}

impl Aggregation {
    /// Tag suffix used in the reference tables (empty for [`Aggregation::Volume`]).
    pub fn suffix(self) -> &'static str {
        match self {
            Aggregation::Volume => "",
            Aggregation::Avg2D => "_2D_avg",
            Aggregation::SliceMerged2D => "_2D_comb",
            Aggregation::DirectionMerged25D => "_2_5D_avg",
            Aggregation::Merged25D => "_2_5D_comb",
            Aggregation::Avg3D => "_3D_avg",
            Aggregation::Merged3D => "_3D_comb",
            Aggregation::Slice2D => "_2D",
            Aggregation::Merged25DSlices => "_2_5D",
            Aggregation::Volume3D => "_3D",
        }
    }

    /// IBSI code of the aggregation method.
    pub fn ibsi_code(self) -> &'static str {
        match self {
            Aggregation::Volume => "DHQ4",
            Aggregation::Avg2D => "BTW3",
            Aggregation::SliceMerged2D => "SUJT",
            Aggregation::DirectionMerged25D => "JJUI",
            Aggregation::Merged25D => "ZW7Z",
            Aggregation::Avg3D => "ITBB",
            Aggregation::Merged3D => "IAZD",
            Aggregation::Slice2D => "8QNN",
            Aggregation::Merged25DSlices => "62GR",
            Aggregation::Volume3D => "KOBO",
        }
    }

    /// IBSI wording (as in the `aggregation` column of `reference_values_detail.csv`).
    pub fn description(self) -> &'static str {
        match self {
            Aggregation::Volume => "3D volume",
            Aggregation::Avg2D => "2D averaged",
            Aggregation::SliceMerged2D => "2D slice-merged",
            Aggregation::DirectionMerged25D => "2.5D direction-merged",
            Aggregation::Merged25D => "2.5D merged",
            Aggregation::Avg3D => "3D averaged",
            Aggregation::Merged3D => "3D merged",
            Aggregation::Slice2D => "2D",
            Aggregation::Merged25DSlices => "2.5D",
            Aggregation::Volume3D => "3D",
        }
    }
}

/// How a LIFEx column relates to the IBSI value of the same feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifexRelation {
    /// Same definition, same value.
    Identical,
    /// LIFEx reports non-excess kurtosis: `lifex = ibsi + 3`.
    PlusThree,
    /// LIFEx reports a standard deviation where IBSI has a variance: `lifex = sqrt(ibsi)`
    /// (whether LIFEx uses 1/N or 1/(N-1) is undocumented).
    SquareRoot,
    /// LIFEx reports entropy in base 10: `lifex = ibsi * log10(2)`.
    Log10Of2,
    /// LIFEx reports millilitres where IBSI uses mm³: `lifex = ibsi / 1000`.
    Millilitre,
    /// LIFEx reports the statistic of the discretised intensities in intensity units (HU) while IBSI
    /// uses bin indices; the two differ by the affine map index → intensity of the discretisation
    /// (a scale by the bin width for spreads). Not comparable without the bin width and origin.
    BinToIntensity,
    /// Same concept, different computation (LIFEx uses a Delaunay triangulation for shape); values
    /// are not expected to agree (sphericity 0.963 vs 0.843 on the IBSI digital phantom).
    DifferentMethod,
}

impl LifexRelation {
    /// Convert an IBSI value to the LIFEx column value where the relation is a fixed function.
    pub fn ibsi_to_lifex(self, ibsi: f64) -> Option<f64> {
        match self {
            LifexRelation::Identical => Some(ibsi),
            LifexRelation::PlusThree => Some(ibsi + 3.0),
            LifexRelation::SquareRoot => Some(ibsi.sqrt()),
            LifexRelation::Log10Of2 => Some(ibsi * std::f64::consts::LOG10_2),
            LifexRelation::Millilitre => Some(ibsi / 1000.0),
            LifexRelation::BinToIntensity | LifexRelation::DifferentMethod => None,
        }
    }
}

/// A LIFEx output column that corresponds to an IBSI feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifexColumn {
    /// Column name as LIFEx writes it (LIFEx ≤ 6 / seed-paper naming, CT units).
    pub column: &'static str,
    pub relation: LifexRelation,
}

const fn lifex(column: &'static str, relation: LifexRelation) -> LifexColumn {
    LifexColumn { column, relation }
}

/// One registry row: a feature tag with its IBSI identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDef {
    /// Reference tag (`cm_joint_max_3D_avg`).
    pub tag: &'static str,
    /// Tag without the aggregation suffix (`cm_joint_max`).
    pub base: &'static str,
    /// 4-character IBSI feature code (`GYBY`).
    pub ibsi_code: &'static str,
    /// IBSI manual feature name (`Joint maximum`).
    pub name: &'static str,
    pub family: Family,
    pub aggregation: Aggregation,
    /// LIFEx columns for this exact tag (empty if LIFEx has none, or reports another aggregation).
    pub lifex: &'static [LifexColumn],
}

/// Families computed once on the volume: tag = base tag.
macro_rules! volume_family {
    ($table:ident, $family:expr, [ $( ($base:literal, $code:literal, $name:literal, $lifex:expr) ),* $(,)? ]) => {
        static $table: &[FeatureDef] = &[
            $( FeatureDef { tag: $base, base: $base, ibsi_code: $code, name: $name, family: $family,
                            aggregation: Aggregation::Volume, lifex: $lifex }, )*
        ];
    };
}

/// GLCM/GLRLM: six aggregations; LIFEx columns belong to the 3D-averaged variant.
macro_rules! directional_family {
    ($table:ident, $family:expr, [ $( ($base:literal, $code:literal, $name:literal, $lifex:expr) ),* $(,)? ]) => {
        static $table: &[FeatureDef] = &[
            $(
                FeatureDef { tag: concat!($base, "_2D_avg"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Avg2D, lifex: &[] },
                FeatureDef { tag: concat!($base, "_2D_comb"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::SliceMerged2D, lifex: &[] },
                FeatureDef { tag: concat!($base, "_2_5D_avg"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::DirectionMerged25D, lifex: &[] },
                FeatureDef { tag: concat!($base, "_2_5D_comb"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Merged25D, lifex: &[] },
                FeatureDef { tag: concat!($base, "_3D_avg"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Avg3D, lifex: $lifex },
                FeatureDef { tag: concat!($base, "_3D_comb"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Merged3D, lifex: &[] },
            )*
        ];
    };
}

/// GLSZM/GLDZM/NGTDM/NGLDM: three aggregations; LIFEx columns belong to the 3D variant.
macro_rules! zone_family {
    ($table:ident, $family:expr, [ $( ($base:literal, $code:literal, $name:literal, $lifex:expr) ),* $(,)? ]) => {
        static $table: &[FeatureDef] = &[
            $(
                FeatureDef { tag: concat!($base, "_2D"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Slice2D, lifex: &[] },
                FeatureDef { tag: concat!($base, "_2_5D"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Merged25DSlices, lifex: &[] },
                FeatureDef { tag: concat!($base, "_3D"), base: $base, ibsi_code: $code, name: $name,
                             family: $family, aggregation: Aggregation::Volume3D, lifex: $lifex },
            )*
        ];
    };
}

// ---------------------------------------------------------------------------------------------
// The table. Rows (base tag, IBSI code, IBSI name) follow `reference_values_detail.csv`; the IBSI
// codes there were checked against the manual and DICOM PS3.16 (see shared/ibsi/README.md). Note
// that ivh_v10/ivh_v90 share BC2M and ivh_i10/ivh_i90 share GBPN (one code per feature definition).
// ---------------------------------------------------------------------------------------------

volume_family!(
    MORPHOLOGY,
    Family::Morphology,
    [
        ("morph_volume", "RNU0", "Volume (mesh)", &[]),
        (
            "morph_vol_approx",
            "YEKZ",
            "Volume (voxel counting)",
            &[lifex("SHAPE_Volume(mL)", LifexRelation::Millilitre)]
        ),
        (
            "morph_area_mesh",
            "C0JK",
            "Surface area (mesh)",
            &[lifex(
                "SHAPE_Surface(mm2)[onlyFor3DROI]",
                LifexRelation::DifferentMethod
            )]
        ),
        ("morph_av", "2PR5", "Surface to volume ratio", &[]),
        (
            "morph_comp_1",
            "SKGS",
            "Compactness 1",
            &[lifex(
                "SHAPE_Compacity [onlyFor3DROI]",
                LifexRelation::DifferentMethod
            )]
        ),
        ("morph_comp_2", "BQWJ", "Compactness 2", &[]),
        ("morph_sph_dispr", "KRCK", "Spherical disproportion", &[]),
        (
            "morph_sphericity",
            "QCFX",
            "Sphericity",
            &[lifex(
                "SHAPE_Sphericity [only for 3D ROI (nz>1)]",
                LifexRelation::DifferentMethod
            )]
        ),
        ("morph_asphericity", "25C7", "Asphericity", &[]),
        ("morph_com", "KLMA", "Centre of mass shift", &[]),
        ("morph_diam", "L0JK", "Maximum 3D diameter", &[]),
        ("morph_pca_maj_axis", "TDIC", "Major axis length", &[]),
        ("morph_pca_min_axis", "P9VJ", "Minor axis length", &[]),
        ("morph_pca_least_axis", "7J51", "Least axis length", &[]),
        ("morph_pca_elongation", "Q3CK", "Elongation", &[]),
        ("morph_pca_flatness", "N17B", "Flatness", &[]),
        (
            "morph_vol_dens_aabb",
            "PBX1",
            "Volume density (axis-aligned bounding box)",
            &[]
        ),
        (
            "morph_area_dens_aabb",
            "R59B",
            "Area density (axis-aligned bounding box)",
            &[]
        ),
        (
            "morph_vol_dens_aee",
            "6BDE",
            "Volume density (approximate enclosing ellipsoid)",
            &[]
        ),
        (
            "morph_area_dens_aee",
            "RDD2",
            "Area density (approximate enclosing ellipsoid)",
            &[]
        ),
        (
            "morph_vol_dens_conv_hull",
            "R3ER",
            "Volume density (convex hull)",
            &[]
        ),
        (
            "morph_area_dens_conv_hull",
            "7T7F",
            "Area density (convex hull)",
            &[]
        ),
        ("morph_integ_int", "99N0", "Integrated intensity", &[]),
        ("morph_moran_i", "N365", "Moran's I index", &[]),
        ("morph_geary_c", "NPT7", "Geary's C measure", &[]),
    ]
);
volume_family!(
    LOCAL_INTENSITY,
    Family::LocalIntensity,
    [
        ("loc_peak_loc", "VJGA", "Local intensity peak", &[]),
        (
            "loc_peak_glob",
            "0F91",
            "Global intensity peak",
            &[lifex(
                "CONVENTIONAL_HUpeakSphere1mL",
                LifexRelation::Identical
            )]
        ),
    ]
);
volume_family!(
    INTENSITY_STATISTICS,
    Family::IntensityStatistics,
    [
        (
            "stat_mean",
            "Q4LE",
            "Mean intensity",
            &[lifex("CONVENTIONAL_HUmean", LifexRelation::Identical)]
        ),
        (
            "stat_var",
            "ECT3",
            "Intensity variance",
            &[lifex("CONVENTIONAL_HUstd", LifexRelation::SquareRoot)]
        ),
        (
            "stat_skew",
            "KE2A",
            "Intensity skewness",
            &[lifex("CONVENTIONAL_HUSkewness", LifexRelation::Identical)]
        ),
        (
            "stat_kurt",
            "IPH6",
            "(Excess) intensity kurtosis",
            &[
                lifex("CONVENTIONAL_HUExcessKurtosis", LifexRelation::Identical),
                lifex("CONVENTIONAL_HUKurtosis", LifexRelation::PlusThree)
            ]
        ),
        (
            "stat_median",
            "Y12H",
            "Median intensity",
            &[lifex("CONVENTIONAL_HUQ2", LifexRelation::Identical)]
        ),
        (
            "stat_min",
            "1GSF",
            "Minimum intensity",
            &[lifex("CONVENTIONAL_HUmin", LifexRelation::Identical)]
        ),
        ("stat_p10", "QG58", "10th intensity percentile", &[]),
        ("stat_p90", "8DWT", "90th intensity percentile", &[]),
        (
            "stat_max",
            "84IY",
            "Maximum intensity",
            &[lifex("CONVENTIONAL_HUmax", LifexRelation::Identical)]
        ),
        ("stat_iqr", "SALO", "Intensity interquartile range", &[]),
        ("stat_range", "2OJQ", "Intensity range", &[]),
        (
            "stat_mad",
            "4FUA",
            "Intensity-based mean absolute deviation",
            &[]
        ),
        (
            "stat_rmad",
            "1128",
            "Intensity-based robust mean absolute deviation",
            &[]
        ),
        (
            "stat_medad",
            "N72L",
            "Intensity-based median absolute deviation",
            &[]
        ),
        (
            "stat_cov",
            "7TET",
            "Intensity-based coefficient of variation",
            &[]
        ),
        (
            "stat_qcod",
            "9S40",
            "Intensity-based quartile coefficient of dispersion",
            &[]
        ),
        ("stat_energy", "N8CA", "Intensity-based energy", &[]),
        ("stat_rms", "5ZWQ", "Root mean square intensity", &[]),
    ]
);
volume_family!(
    INTENSITY_HISTOGRAM,
    Family::IntensityHistogram,
    [
        (
            "ih_mean",
            "X6K6",
            "Mean discretised intensity",
            &[lifex("DISCRETIZED_HUmean", LifexRelation::BinToIntensity)]
        ),
        (
            "ih_var",
            "CH89",
            "Discretised intensity variance",
            &[lifex("DISCRETIZED_HUstd", LifexRelation::BinToIntensity)]
        ),
        (
            "ih_skew",
            "88K1",
            "Discretised intensity skewness",
            &[lifex("DISCRETIZED_HUSkewness", LifexRelation::Identical)]
        ),
        (
            "ih_kurt",
            "C3I7",
            "(Excess) discretised intensity kurtosis",
            &[
                lifex("DISCRETIZED_HUExcessKurtosis", LifexRelation::Identical),
                lifex("DISCRETIZED_HUKurtosis", LifexRelation::PlusThree)
            ]
        ),
        (
            "ih_median",
            "WIFQ",
            "Median discretised intensity",
            &[lifex("DISCRETIZED_HUQ2", LifexRelation::BinToIntensity)]
        ),
        (
            "ih_min",
            "1PR8",
            "Minimum discretised intensity",
            &[lifex("DISCRETIZED_HUmin", LifexRelation::BinToIntensity)]
        ),
        (
            "ih_p10",
            "GPMT",
            "10th discretised intensity percentile",
            &[]
        ),
        (
            "ih_p90",
            "OZ0C",
            "90th discretised intensity percentile",
            &[]
        ),
        (
            "ih_max",
            "3NCY",
            "Maximum discretised intensity",
            &[lifex("DISCRETIZED_HUmax", LifexRelation::BinToIntensity)]
        ),
        ("ih_mode", "AMMC", "Intensity histogram mode", &[]),
        (
            "ih_iqr",
            "WR0O",
            "Discretised intensity interquartile range",
            &[]
        ),
        ("ih_range", "5Z3W", "Discretised intensity range", &[]),
        (
            "ih_mad",
            "D2ZX",
            "Intensity histogram mean absolute deviation",
            &[]
        ),
        (
            "ih_rmad",
            "WRZB",
            "Intensity histogram robust mean absolute deviation",
            &[]
        ),
        (
            "ih_medad",
            "4RNL",
            "Intensity histogram median absolute deviation",
            &[]
        ),
        (
            "ih_cov",
            "CWYJ",
            "Intensity histogram coefficient of variation",
            &[]
        ),
        (
            "ih_qcod",
            "SLWD",
            "Intensity histogram quartile coefficient of dispersion",
            &[]
        ),
        (
            "ih_entropy",
            "TLU2",
            "Discretised intensity entropy",
            &[
                lifex("DISCRETIZED_HISTO_Entropy_log2", LifexRelation::Identical),
                lifex("DISCRETIZED_HISTO_Entropy_log10", LifexRelation::Log10Of2)
            ]
        ),
        (
            "ih_uniformity",
            "BJ5W",
            "Discretised intensity uniformity",
            &[lifex(
                "DISCRETIZED_HISTO_Energy [=Uniformity]",
                LifexRelation::Identical
            )]
        ),
        ("ih_max_grad", "12CE", "Maximum histogram gradient", &[]),
        (
            "ih_max_grad_g",
            "8E6O",
            "Maximum histogram gradient intensity",
            &[]
        ),
        ("ih_min_grad", "VQB3", "Minimum histogram gradient", &[]),
        (
            "ih_min_grad_g",
            "RHQZ",
            "Minimum histogram gradient intensity",
            &[]
        ),
    ]
);
volume_family!(
    INTENSITY_VOLUME_HISTOGRAM,
    Family::IntensityVolumeHistogram,
    [
        (
            "ivh_v10",
            "BC2M",
            "Volume at intensity fraction (volume fraction at 10% intensity)",
            &[]
        ),
        (
            "ivh_v90",
            "BC2M",
            "Volume at intensity fraction (volume fraction at 90% intensity)",
            &[]
        ),
        (
            "ivh_i10",
            "GBPN",
            "Intensity at volume fraction (intensity at 10% volume)",
            &[]
        ),
        (
            "ivh_i90",
            "GBPN",
            "Intensity at volume fraction (intensity at 90% volume)",
            &[]
        ),
        (
            "ivh_diff_v10_v90",
            "DDTU",
            "Volume fraction difference between intensity fractions",
            &[]
        ),
        (
            "ivh_diff_i10_i90",
            "CNV2",
            "Intensity fraction difference between volume fractions",
            &[]
        ),
    ]
);
directional_family!(
    GLCM,
    Family::Glcm,
    [
        ("cm_joint_max", "GYBY", "Joint maximum", &[]),
        ("cm_joint_avg", "60VM", "Joint average", &[]),
        ("cm_joint_var", "UR99", "Joint variance", &[]),
        (
            "cm_joint_entr",
            "TU9B",
            "Joint entropy",
            &[
                lifex(
                    "GLCM_Entropy_log2 [=Joint entropy]",
                    LifexRelation::Identical
                ),
                lifex("GLCM_Entropy_log10", LifexRelation::Log10Of2)
            ]
        ),
        ("cm_diff_avg", "TF7R", "Difference average", &[]),
        ("cm_diff_var", "D3YU", "Difference variance", &[]),
        ("cm_diff_entr", "NTRS", "Difference entropy", &[]),
        ("cm_sum_avg", "ZGXS", "Sum average", &[]),
        ("cm_sum_var", "OEEB", "Sum variance", &[]),
        ("cm_sum_entr", "P6QZ", "Sum entropy", &[]),
        (
            "cm_energy",
            "8ZQL",
            "Angular second moment",
            &[lifex(
                "GLCM_Energy [=Angular second moment]",
                LifexRelation::Identical
            )]
        ),
        (
            "cm_contrast",
            "ACUI",
            "Contrast",
            &[lifex("GLCM_Contrast [=Variance]", LifexRelation::Identical)]
        ),
        (
            "cm_dissimilarity",
            "8S9J",
            "Dissimilarity",
            &[lifex("GLCM_Dissimilarity", LifexRelation::Identical)]
        ),
        (
            "cm_inv_diff",
            "IB1Z",
            "Inverse difference",
            &[lifex(
                "GLCM_Homogeneity [=Inverse difference]",
                LifexRelation::Identical
            )]
        ),
        (
            "cm_inv_diff_norm",
            "NDRX",
            "Normalised inverse difference",
            &[]
        ),
        ("cm_inv_diff_mom", "WF0Z", "Inverse difference moment", &[]),
        (
            "cm_inv_diff_mom_norm",
            "1QCO",
            "Normalised inverse difference moment",
            &[]
        ),
        ("cm_inv_var", "E8JP", "Inverse variance", &[]),
        (
            "cm_corr",
            "NI2N",
            "Correlation",
            &[lifex("GLCM_Correlation", LifexRelation::Identical)]
        ),
        ("cm_auto_corr", "QWB0", "Autocorrelation", &[]),
        ("cm_clust_tend", "DG8W", "Cluster tendency", &[]),
        ("cm_clust_shade", "7NFM", "Cluster shade", &[]),
        ("cm_clust_prom", "AE86", "Cluster prominence", &[]),
        ("cm_info_corr1", "R8DG", "Information correlation 1", &[]),
        ("cm_info_corr2", "JN9H", "Information correlation 2", &[]),
    ]
);
directional_family!(
    GLRLM,
    Family::Glrlm,
    [
        (
            "rlm_sre",
            "22OV",
            "Short runs emphasis",
            &[lifex("GLRLM_SRE", LifexRelation::Identical)]
        ),
        (
            "rlm_lre",
            "W4KF",
            "Long runs emphasis",
            &[lifex("GLRLM_LRE", LifexRelation::Identical)]
        ),
        (
            "rlm_lgre",
            "V3SW",
            "Low grey level run emphasis",
            &[lifex("GLRLM_LGRE", LifexRelation::Identical)]
        ),
        (
            "rlm_hgre",
            "G3QZ",
            "High grey level run emphasis",
            &[lifex("GLRLM_HGRE", LifexRelation::Identical)]
        ),
        (
            "rlm_srlge",
            "HTZT",
            "Short run low grey level emphasis",
            &[lifex("GLRLM_SRLGE", LifexRelation::Identical)]
        ),
        (
            "rlm_srhge",
            "GD3A",
            "Short run high grey level emphasis",
            &[lifex("GLRLM_SRHGE", LifexRelation::Identical)]
        ),
        (
            "rlm_lrlge",
            "IVPO",
            "Long run low grey level emphasis",
            &[lifex("GLRLM_LRLGE", LifexRelation::Identical)]
        ),
        (
            "rlm_lrhge",
            "3KUM",
            "Long run high grey level emphasis",
            &[lifex("GLRLM_LRHGE", LifexRelation::Identical)]
        ),
        (
            "rlm_glnu",
            "R5YN",
            "Grey level non-uniformity",
            &[lifex("GLRLM_GLNU", LifexRelation::Identical)]
        ),
        (
            "rlm_glnu_norm",
            "OVBL",
            "Normalised grey level non-uniformity",
            &[]
        ),
        (
            "rlm_rlnu",
            "W92Y",
            "Run length non-uniformity",
            &[lifex("GLRLM_RLNU", LifexRelation::Identical)]
        ),
        (
            "rlm_rlnu_norm",
            "IC23",
            "Normalised run length non-uniformity",
            &[]
        ),
        (
            "rlm_r_perc",
            "9ZK5",
            "Run percentage",
            &[lifex("GLRLM_RP", LifexRelation::Identical)]
        ),
        ("rlm_gl_var", "8CE5", "Grey level variance", &[]),
        ("rlm_rl_var", "SXLW", "Run length variance", &[]),
        ("rlm_rl_entr", "HJ9O", "Run entropy", &[]),
    ]
);
zone_family!(
    GLSZM,
    Family::Glszm,
    [
        (
            "szm_sze",
            "5QRC",
            "Small zone emphasis",
            &[lifex("GLZLM_SZE", LifexRelation::Identical)]
        ),
        (
            "szm_lze",
            "48P8",
            "Large zone emphasis",
            &[lifex("GLZLM_LZE", LifexRelation::Identical)]
        ),
        (
            "szm_lgze",
            "XMSY",
            "Low grey level zone emphasis",
            &[lifex("GLZLM_LGZE", LifexRelation::Identical)]
        ),
        (
            "szm_hgze",
            "5GN9",
            "High grey level zone emphasis",
            &[lifex("GLZLM_HGZE", LifexRelation::Identical)]
        ),
        (
            "szm_szlge",
            "5RAI",
            "Small zone low grey level emphasis",
            &[lifex("GLZLM_SZLGE", LifexRelation::Identical)]
        ),
        (
            "szm_szhge",
            "HW1V",
            "Small zone high grey level emphasis",
            &[lifex("GLZLM_SZHGE", LifexRelation::Identical)]
        ),
        (
            "szm_lzlge",
            "YH51",
            "Large zone low grey level emphasis",
            &[lifex("GLZLM_LZLGE", LifexRelation::Identical)]
        ),
        (
            "szm_lzhge",
            "J17V",
            "Large zone high grey level emphasis",
            &[lifex("GLZLM_LZHGE", LifexRelation::Identical)]
        ),
        (
            "szm_glnu",
            "JNSA",
            "Grey level non-uniformity",
            &[lifex("GLZLM_GLNU", LifexRelation::Identical)]
        ),
        (
            "szm_glnu_norm",
            "Y1RO",
            "Normalised grey level non-uniformity",
            &[]
        ),
        (
            "szm_zsnu",
            "4JP3",
            "Zone size non-uniformity",
            &[lifex("GLZLM_ZLNU", LifexRelation::Identical)]
        ),
        (
            "szm_zsnu_norm",
            "VB3A",
            "Normalised zone size non-uniformity",
            &[]
        ),
        (
            "szm_z_perc",
            "P30P",
            "Zone percentage",
            &[lifex("GLZLM_ZP", LifexRelation::Identical)]
        ),
        ("szm_gl_var", "BYLV", "Grey level variance", &[]),
        ("szm_zs_var", "3NSA", "Zone size variance", &[]),
        ("szm_zs_entr", "GU8N", "Zone size entropy", &[]),
    ]
);
zone_family!(
    GLDZM,
    Family::Gldzm,
    [
        ("dzm_sde", "0GBI", "Small distance emphasis", &[]),
        ("dzm_lde", "MB4I", "Large distance emphasis", &[]),
        ("dzm_lgze", "S1RA", "Low grey level zone emphasis", &[]),
        ("dzm_hgze", "K26C", "High grey level zone emphasis", &[]),
        (
            "dzm_sdlge",
            "RUVG",
            "Small distance low grey level emphasis",
            &[]
        ),
        (
            "dzm_sdhge",
            "DKNJ",
            "Small distance high grey level emphasis",
            &[]
        ),
        (
            "dzm_ldlge",
            "A7WM",
            "Large distance low grey level emphasis",
            &[]
        ),
        (
            "dzm_ldhge",
            "KLTH",
            "Large distance high grey level emphasis",
            &[]
        ),
        ("dzm_glnu", "VFT7", "Grey level non-uniformity", &[]),
        (
            "dzm_glnu_norm",
            "7HP3",
            "Normalised grey level non-uniformity",
            &[]
        ),
        ("dzm_zdnu", "V294", "Zone distance non-uniformity", &[]),
        (
            "dzm_zdnu_norm",
            "IATH",
            "Normalised zone distance non-uniformity",
            &[]
        ),
        ("dzm_z_perc", "VIWW", "Zone percentage", &[]),
        ("dzm_gl_var", "QK93", "Grey level variance", &[]),
        ("dzm_zd_var", "7WT1", "Zone distance variance", &[]),
        ("dzm_zd_entr", "GBDU", "Zone distance entropy", &[]),
    ]
);
zone_family!(
    NGTDM,
    Family::Ngtdm,
    [
        (
            "ngt_coarseness",
            "QCDE",
            "Coarseness",
            &[lifex("NGLDM_Coarseness", LifexRelation::Identical)]
        ),
        (
            "ngt_contrast",
            "65HE",
            "Contrast",
            &[lifex("NGLDM_Contrast", LifexRelation::Identical)]
        ),
        (
            "ngt_busyness",
            "NQ30",
            "Busyness",
            &[lifex("NGLDM_Busyness", LifexRelation::Identical)]
        ),
        ("ngt_complexity", "HDEZ", "Complexity", &[]),
        ("ngt_strength", "1X9X", "Strength", &[]),
    ]
);
zone_family!(
    NGLDM,
    Family::Ngldm,
    [
        ("ngl_lde", "SODN", "Low dependence emphasis", &[]),
        ("ngl_hde", "IMOQ", "High dependence emphasis", &[]),
        ("ngl_lgce", "TL9H", "Low grey level count emphasis", &[]),
        ("ngl_hgce", "OAE7", "High grey level count emphasis", &[]),
        (
            "ngl_ldlge",
            "EQ3F",
            "Low dependence low grey level emphasis",
            &[]
        ),
        (
            "ngl_ldhge",
            "JA6D",
            "Low dependence high grey level emphasis",
            &[]
        ),
        (
            "ngl_hdlge",
            "NBZI",
            "High dependence low grey level emphasis",
            &[]
        ),
        (
            "ngl_hdhge",
            "9QMG",
            "High dependence high grey level emphasis",
            &[]
        ),
        ("ngl_glnu", "FP8K", "Grey level non-uniformity", &[]),
        (
            "ngl_glnu_norm",
            "5SPA",
            "Normalised grey level non-uniformity",
            &[]
        ),
        ("ngl_dcnu", "Z87G", "Dependence count non-uniformity", &[]),
        (
            "ngl_dcnu_norm",
            "OKJI",
            "Normalised dependence count non-uniformity",
            &[]
        ),
        ("ngl_dc_perc", "6XV8", "Dependence count percentage", &[]),
        ("ngl_gl_var", "1PFV", "Grey level variance", &[]),
        ("ngl_dc_var", "DNX2", "Dependence count variance", &[]),
        ("ngl_dc_entr", "FCBV", "Dependence count entropy", &[]),
        ("ngl_dc_energy", "CAS9", "Dependence count energy", &[]),
    ]
);

/// Every family table, in reporting order.
static TABLES: [&[FeatureDef]; 11] = [
    MORPHOLOGY,
    LOCAL_INTENSITY,
    INTENSITY_STATISTICS,
    INTENSITY_HISTOGRAM,
    INTENSITY_VOLUME_HISTOGRAM,
    GLCM,
    GLRLM,
    GLSZM,
    GLDZM,
    NGTDM,
    NGLDM,
];

/// Every registry row (all families, all aggregations).
pub fn all() -> impl Iterator<Item = &'static FeatureDef> {
    TABLES.iter().flat_map(|t| t.iter())
}

/// Rows of one family.
pub fn family(family: Family) -> impl Iterator<Item = &'static FeatureDef> {
    all().filter(move |d| d.family == family)
}

fn tag_index() -> &'static HashMap<&'static str, &'static FeatureDef> {
    static INDEX: OnceLock<HashMap<&'static str, &'static FeatureDef>> = OnceLock::new();
    INDEX.get_or_init(|| all().map(|d| (d.tag, d)).collect())
}

/// Look a feature up by its reference tag (`szm_hgze_3D`).
pub fn by_tag(tag: &str) -> Option<&'static FeatureDef> {
    tag_index().get(tag).copied()
}

/// Look a feature up by base tag and aggregation (`("cm_energy", Aggregation::Avg3D)`).
pub fn by_base(base: &str, aggregation: Aggregation) -> Option<&'static FeatureDef> {
    all().find(|d| d.base == base && d.aggregation == aggregation)
}

/// All rows carrying an IBSI feature code: one per aggregation for texture features, and two for
/// the IVH codes BC2M (V10, V90) and GBPN (I10, I90).
pub fn by_code(code: &str) -> Vec<&'static FeatureDef> {
    all().filter(|d| d.ibsi_code == code).collect()
}

/// The row (and relation) for a LIFEx column name, if the column maps to an IBSI feature.
pub fn by_lifex(column: &str) -> Option<(&'static FeatureDef, LifexColumn)> {
    all().find_map(|d| d.lifex.iter().find(|c| c.column == column).map(|c| (d, *c)))
}

impl LifexRelation {
    /// Convert a LIFEx column value to the IBSI value where the relation is a fixed function (the
    /// inverse of [`LifexRelation::ibsi_to_lifex`]); `None` where the values are not comparable.
    pub fn lifex_to_ibsi(self, lifex: f64) -> Option<f64> {
        match self {
            LifexRelation::Identical => Some(lifex),
            LifexRelation::PlusThree => Some(lifex - 3.0),
            LifexRelation::SquareRoot => Some(lifex * lifex),
            LifexRelation::Log10Of2 => Some(lifex / std::f64::consts::LOG10_2),
            LifexRelation::Millilitre => Some(lifex * 1000.0),
            LifexRelation::BinToIntensity | LifexRelation::DifferentMethod => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pyradiomics names. pyradiomics (3.x) writes `<image type>_<class>_<Feature>` columns, e.g.
// `original_firstorder_Mean`, `original_glcm_JointEntropy`. With its defaults (3D, distance 1,
// symmetric GLCM, features averaged over the 13 directions) its GLCM/GLRLM values correspond to the
// IBSI "3D averaged" aggregation (`_3D_avg`) and GLSZM/GLDM/NGTDM to the 3D matrices (`_3D`);
// pyradiomics "GLDM" is IBSI NGLDM (α = 0). Only `original_*` columns are IBSI features: filtered
// images (`wavelet-*`, `log-sigma-*`, `square`, …) are outside IBSI 1.
// Conventions that differ (documented in pyradiomics' feature definitions):
// * `firstorder_Kurtosis` is the ordinary (non-excess) kurtosis: IBSI `stat_kurt` = value − 3.
// * `firstorder_Energy`/`RootMeanSquared` add `voxelArrayShift` (default 0) before squaring: equal to
//   IBSI only with the default shift 0, which is assumed.
// * `firstorder_Entropy`/`Uniformity` are computed on pyradiomics' discretised histogram: the IBSI
//   intensity-histogram features (`ih_*`) of the same discretisation.
// * The pyradiomics discretisation (bin edges at multiples of the bin width) and resampling grid are
//   not IBSI's (shared/ibsi/README.md): mapped values follow the same definitions but are not
//   expected to equal this crate's values on the same image.
// Names without an IBSI equivalent are listed with `tag: None` and the reason, so an importer can
// say why a column was not mapped.
// ---------------------------------------------------------------------------------------------

/// How a pyradiomics value relates to the IBSI value of the mapped tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyradiomicsRelation {
    /// Same definition.
    Identical,
    /// pyradiomics reports non-excess kurtosis: `pyradiomics = ibsi + 3`.
    PlusThree,
}

impl PyradiomicsRelation {
    /// The IBSI value of a pyradiomics value.
    pub fn to_ibsi(self, v: f64) -> f64 {
        match self {
            PyradiomicsRelation::Identical => v,
            PyradiomicsRelation::PlusThree => v - 3.0,
        }
    }
}

/// One pyradiomics feature name (without the `original_` prefix) and its IBSI counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyradiomicsName {
    /// `<class>_<Feature>`, e.g. `glcm_JointEntropy`.
    pub name: &'static str,
    /// Registry tag, or `None` when there is no IBSI equivalent (see `note`).
    pub tag: Option<&'static str>,
    pub relation: PyradiomicsRelation,
    /// Why a name is unmapped, or a caveat of the mapping.
    pub note: &'static str,
}

const fn py(name: &'static str, tag: &'static str) -> PyradiomicsName {
    PyradiomicsName {
        name,
        tag: Some(tag),
        relation: PyradiomicsRelation::Identical,
        note: "",
    }
}

const fn py_none(name: &'static str, note: &'static str) -> PyradiomicsName {
    PyradiomicsName {
        name,
        tag: None,
        relation: PyradiomicsRelation::Identical,
        note,
    }
}

/// Every pyradiomics 3.x feature of the `original` image type, mapped or explained.
pub static PYRADIOMICS: &[PyradiomicsName] = &[
    // shape (3D)
    py("shape_VoxelVolume", "morph_vol_approx"),
    py("shape_MeshVolume", "morph_volume"),
    py("shape_SurfaceArea", "morph_area_mesh"),
    py("shape_SurfaceVolumeRatio", "morph_av"),
    py("shape_Sphericity", "morph_sphericity"),
    py("shape_Maximum3DDiameter", "morph_diam"),
    py("shape_MajorAxisLength", "morph_pca_maj_axis"),
    py("shape_Elongation", "morph_pca_elongation"),
    py("shape_Flatness", "morph_pca_flatness"),
    py_none(
        "shape_MinorAxisLength",
        "same formula as IBSI PCA minor axis, but pyradiomics failed the IBSI digital phantom check for it (shared/ibsi/README.md)",
    ),
    py_none(
        "shape_LeastAxisLength",
        "same formula as IBSI PCA least axis, but pyradiomics failed the IBSI digital phantom check for it (shared/ibsi/README.md)",
    ),
    py_none(
        "shape_Maximum2DDiameterSlice",
        "no IBSI feature (2D diameters)",
    ),
    py_none(
        "shape_Maximum2DDiameterColumn",
        "no IBSI feature (2D diameters)",
    ),
    py_none(
        "shape_Maximum2DDiameterRow",
        "no IBSI feature (2D diameters)",
    ),
    py_none(
        "shape_Compactness1",
        "removed from pyradiomics (deprecated)",
    ),
    py_none(
        "shape_Compactness2",
        "removed from pyradiomics (deprecated)",
    ),
    py_none(
        "shape_SphericalDisproportion",
        "removed from pyradiomics (deprecated)",
    ),
    // first order
    py("firstorder_Mean", "stat_mean"),
    py("firstorder_Median", "stat_median"),
    py("firstorder_Minimum", "stat_min"),
    py("firstorder_Maximum", "stat_max"),
    py("firstorder_10Percentile", "stat_p10"),
    py("firstorder_90Percentile", "stat_p90"),
    py("firstorder_Range", "stat_range"),
    py("firstorder_InterquartileRange", "stat_iqr"),
    py("firstorder_MeanAbsoluteDeviation", "stat_mad"),
    py("firstorder_RobustMeanAbsoluteDeviation", "stat_rmad"),
    py("firstorder_Variance", "stat_var"),
    py("firstorder_Skewness", "stat_skew"),
    PyradiomicsName {
        name: "firstorder_Kurtosis",
        tag: Some("stat_kurt"),
        relation: PyradiomicsRelation::PlusThree,
        note: "pyradiomics kurtosis is not excess kurtosis: IBSI value = pyradiomics − 3",
    },
    py("firstorder_Energy", "stat_energy"),
    py("firstorder_RootMeanSquared", "stat_rms"),
    py("firstorder_Entropy", "ih_entropy"),
    py("firstorder_Uniformity", "ih_uniformity"),
    py_none(
        "firstorder_TotalEnergy",
        "no IBSI feature (energy scaled by the voxel volume)",
    ),
    py_none(
        "firstorder_StandardDeviation",
        "removed from pyradiomics; IBSI has the variance (stat_var) only",
    ),
    // GLCM (averaged over the 13 directions = IBSI 3D averaged)
    py("glcm_Autocorrelation", "cm_auto_corr_3D_avg"),
    py("glcm_JointAverage", "cm_joint_avg_3D_avg"),
    py("glcm_ClusterProminence", "cm_clust_prom_3D_avg"),
    py("glcm_ClusterShade", "cm_clust_shade_3D_avg"),
    py("glcm_ClusterTendency", "cm_clust_tend_3D_avg"),
    py("glcm_Contrast", "cm_contrast_3D_avg"),
    py("glcm_Correlation", "cm_corr_3D_avg"),
    py("glcm_DifferenceAverage", "cm_diff_avg_3D_avg"),
    py("glcm_DifferenceEntropy", "cm_diff_entr_3D_avg"),
    py("glcm_DifferenceVariance", "cm_diff_var_3D_avg"),
    py("glcm_Dissimilarity", "cm_dissimilarity_3D_avg"),
    py("glcm_JointEnergy", "cm_energy_3D_avg"),
    py("glcm_JointEntropy", "cm_joint_entr_3D_avg"),
    py("glcm_Id", "cm_inv_diff_3D_avg"),
    py("glcm_Idn", "cm_inv_diff_norm_3D_avg"),
    py("glcm_Idm", "cm_inv_diff_mom_3D_avg"),
    py("glcm_Idmn", "cm_inv_diff_mom_norm_3D_avg"),
    py("glcm_InverseVariance", "cm_inv_var_3D_avg"),
    py("glcm_Imc1", "cm_info_corr1_3D_avg"),
    py("glcm_Imc2", "cm_info_corr2_3D_avg"),
    py("glcm_MaximumProbability", "cm_joint_max_3D_avg"),
    py("glcm_SumAverage", "cm_sum_avg_3D_avg"),
    py("glcm_SumEntropy", "cm_sum_entr_3D_avg"),
    py("glcm_SumSquares", "cm_joint_var_3D_avg"),
    py_none(
        "glcm_MCC",
        "no IBSI feature (maximal correlation coefficient)",
    ),
    py_none(
        "glcm_Homogeneity",
        "ambiguous legacy name (pyradiomics Homogeneity1 = Id, Homogeneity2 = Idm); export Id or Idm",
    ),
    py_none(
        "glcm_Homogeneity1",
        "removed from pyradiomics (= glcm_Id, IBSI cm_inv_diff); export glcm_Id",
    ),
    py_none(
        "glcm_Homogeneity2",
        "removed from pyradiomics (= glcm_Idm, IBSI cm_inv_diff_mom); export glcm_Idm",
    ),
    py_none(
        "glcm_SumVariance",
        "removed from pyradiomics (= ClusterTendency)",
    ),
    // GLRLM (averaged over the 13 directions = IBSI 3D averaged)
    py("glrlm_ShortRunEmphasis", "rlm_sre_3D_avg"),
    py("glrlm_LongRunEmphasis", "rlm_lre_3D_avg"),
    py("glrlm_GrayLevelNonUniformity", "rlm_glnu_3D_avg"),
    py(
        "glrlm_GrayLevelNonUniformityNormalized",
        "rlm_glnu_norm_3D_avg",
    ),
    py("glrlm_RunLengthNonUniformity", "rlm_rlnu_3D_avg"),
    py(
        "glrlm_RunLengthNonUniformityNormalized",
        "rlm_rlnu_norm_3D_avg",
    ),
    py("glrlm_RunPercentage", "rlm_r_perc_3D_avg"),
    py("glrlm_GrayLevelVariance", "rlm_gl_var_3D_avg"),
    py("glrlm_RunVariance", "rlm_rl_var_3D_avg"),
    py("glrlm_RunEntropy", "rlm_rl_entr_3D_avg"),
    py("glrlm_LowGrayLevelRunEmphasis", "rlm_lgre_3D_avg"),
    py("glrlm_HighGrayLevelRunEmphasis", "rlm_hgre_3D_avg"),
    py("glrlm_ShortRunLowGrayLevelEmphasis", "rlm_srlge_3D_avg"),
    py("glrlm_ShortRunHighGrayLevelEmphasis", "rlm_srhge_3D_avg"),
    py("glrlm_LongRunLowGrayLevelEmphasis", "rlm_lrlge_3D_avg"),
    py("glrlm_LongRunHighGrayLevelEmphasis", "rlm_lrhge_3D_avg"),
    // GLSZM (3D, 26-connectivity)
    py("glszm_SmallAreaEmphasis", "szm_sze_3D"),
    py("glszm_LargeAreaEmphasis", "szm_lze_3D"),
    py("glszm_GrayLevelNonUniformity", "szm_glnu_3D"),
    py("glszm_GrayLevelNonUniformityNormalized", "szm_glnu_norm_3D"),
    py("glszm_SizeZoneNonUniformity", "szm_zsnu_3D"),
    py("glszm_SizeZoneNonUniformityNormalized", "szm_zsnu_norm_3D"),
    py("glszm_ZonePercentage", "szm_z_perc_3D"),
    py("glszm_GrayLevelVariance", "szm_gl_var_3D"),
    py("glszm_ZoneVariance", "szm_zs_var_3D"),
    py("glszm_ZoneEntropy", "szm_zs_entr_3D"),
    py("glszm_LowGrayLevelZoneEmphasis", "szm_lgze_3D"),
    py("glszm_HighGrayLevelZoneEmphasis", "szm_hgze_3D"),
    py("glszm_SmallAreaLowGrayLevelEmphasis", "szm_szlge_3D"),
    py("glszm_SmallAreaHighGrayLevelEmphasis", "szm_szhge_3D"),
    py("glszm_LargeAreaLowGrayLevelEmphasis", "szm_lzlge_3D"),
    py("glszm_LargeAreaHighGrayLevelEmphasis", "szm_lzhge_3D"),
    // GLDM = IBSI NGLDM (α = 0, distance 1)
    py("gldm_SmallDependenceEmphasis", "ngl_lde_3D"),
    py("gldm_LargeDependenceEmphasis", "ngl_hde_3D"),
    py("gldm_GrayLevelNonUniformity", "ngl_glnu_3D"),
    py("gldm_DependenceNonUniformity", "ngl_dcnu_3D"),
    py("gldm_DependenceNonUniformityNormalized", "ngl_dcnu_norm_3D"),
    py("gldm_GrayLevelVariance", "ngl_gl_var_3D"),
    py("gldm_DependenceVariance", "ngl_dc_var_3D"),
    py("gldm_DependenceEntropy", "ngl_dc_entr_3D"),
    py("gldm_LowGrayLevelEmphasis", "ngl_lgce_3D"),
    py("gldm_HighGrayLevelEmphasis", "ngl_hgce_3D"),
    py("gldm_SmallDependenceLowGrayLevelEmphasis", "ngl_ldlge_3D"),
    py("gldm_SmallDependenceHighGrayLevelEmphasis", "ngl_ldhge_3D"),
    py("gldm_LargeDependenceLowGrayLevelEmphasis", "ngl_hdlge_3D"),
    py("gldm_LargeDependenceHighGrayLevelEmphasis", "ngl_hdhge_3D"),
    py_none(
        "gldm_GrayLevelNonUniformityNormalized",
        "removed from pyradiomics (duplicate of firstorder_Uniformity)",
    ),
    // NGTDM (3D)
    py("ngtdm_Coarseness", "ngt_coarseness_3D"),
    py("ngtdm_Contrast", "ngt_contrast_3D"),
    py("ngtdm_Busyness", "ngt_busyness_3D"),
    py("ngtdm_Complexity", "ngt_complexity_3D"),
    py("ngtdm_Strength", "ngt_strength_3D"),
];

/// A pyradiomics column name (`original_glcm_JointEntropy`, or without the image-type prefix):
/// `Ok(entry)` for a known `original` feature (mapped or not), `Err(reason)` otherwise.
pub fn by_pyradiomics(column: &str) -> Result<&'static PyradiomicsName, String> {
    let (image_type, rest) = match column.split_once('_') {
        Some((t, r))
            if !t.is_empty()
                && !matches!(
                    t,
                    "shape" | "firstorder" | "glcm" | "glrlm" | "glszm" | "gldm" | "ngtdm"
                ) =>
        {
            (t, r)
        }
        _ => ("original", column),
    };
    if image_type.starts_with("diagnostics") {
        return Err("pyradiomics diagnostics column, not a feature".into());
    }
    if image_type != "original" {
        return Err(format!(
            "feature of the filtered image type {image_type:?}: IBSI 1 covers the original image only"
        ));
    }
    PYRADIOMICS
        .iter()
        .find(|p| p.name == rest)
        .ok_or_else(|| "not a pyradiomics feature name".to_string())
}

/// The pyradiomics entry mapped to this tag, if any.
impl FeatureDef {
    pub fn pyradiomics(&self) -> Option<&'static PyradiomicsName> {
        PYRADIOMICS.iter().find(|p| p.tag == Some(self.tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tags_are_unique_and_suffixes_consistent() {
        let mut seen = HashSet::new();
        for d in all() {
            assert!(seen.insert(d.tag), "duplicate tag {}", d.tag);
            assert_eq!(d.tag, format!("{}{}", d.base, d.aggregation.suffix()));
            assert_eq!(d.ibsi_code.len(), 4, "{}", d.tag);
        }
        // 25 morphology + 2 + 18 + 23 + 6 + 6*(25+16) + 3*(16+16+5+17) = 482 = the digital phantom set.
        assert_eq!(seen.len(), 482);
    }

    #[test]
    fn lookups() {
        let d = by_tag("rlm_lrhge_3D_avg").expect("rlm_lrhge_3D_avg");
        assert_eq!(d.ibsi_code, "3KUM");
        assert_eq!(d.family, Family::Glrlm);
        assert_eq!(d.aggregation.ibsi_code(), "ITBB");
        assert_eq!(d.lifex[0].column, "GLRLM_LRHGE");
        assert_eq!(by_code("GYBY").len(), 6);
        assert_eq!(by_code("BC2M").len(), 2);
        let (def, col) = by_lifex("NGLDM_Coarseness").expect("lifex column");
        assert_eq!(def.tag, "ngt_coarseness_3D");
        assert_eq!(col.relation, LifexRelation::Identical);
        let (def, col) = by_lifex("DISCRETIZED_HUKurtosis").expect("lifex column");
        assert_eq!(def.tag, "ih_kurt");
        assert_eq!(col.relation.ibsi_to_lifex(-0.355), Some(-0.355 + 3.0));
        assert_eq!(
            by_base("szm_hgze", Aggregation::Volume3D).map(|d| d.tag),
            Some("szm_hgze_3D")
        );
        assert!(by_tag("cm_joint_max").is_none());
    }

    #[test]
    fn pyradiomics_names_map_to_registry_tags_once() {
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for p in PYRADIOMICS {
            assert!(names.insert(p.name), "duplicate name {}", p.name);
            match p.tag {
                Some(t) => {
                    let def = by_tag(t).unwrap_or_else(|| panic!("{}: no tag {t}", p.name));
                    assert!(seen.insert(t), "two names map to {t}");
                    assert_eq!(def.pyradiomics().map(|x| x.name), Some(p.name));
                }
                None => assert!(!p.note.is_empty(), "{} needs a reason", p.name),
            }
        }
        // shape 9 + first order 17 + GLCM 24 + GLRLM 16 + GLSZM 16 + GLDM 14 + NGTDM 5.
        assert_eq!(seen.len(), 101);
        let k = by_pyradiomics("original_firstorder_Kurtosis").unwrap();
        assert_eq!(k.tag, Some("stat_kurt"));
        assert_eq!(k.relation.to_ibsi(2.5), -0.5);
        assert_eq!(
            by_pyradiomics("glcm_Idm").unwrap().tag,
            Some("cm_inv_diff_mom_3D_avg")
        );
        assert!(
            by_pyradiomics("wavelet-LLH_glcm_Idm")
                .unwrap_err()
                .contains("filtered")
        );
        assert!(by_pyradiomics("diagnostics_Versions_PyRadiomics").is_err());
        assert!(
            by_pyradiomics("original_shape_MinorAxisLength")
                .unwrap()
                .tag
                .is_none()
        );
        assert!(by_pyradiomics("age").is_err());
        for r in [
            LifexRelation::Identical,
            LifexRelation::PlusThree,
            LifexRelation::SquareRoot,
            LifexRelation::Log10Of2,
            LifexRelation::Millilitre,
        ] {
            let v = 2.75;
            let back = r.lifex_to_ibsi(r.ibsi_to_lifex(v).unwrap()).unwrap();
            assert!((back - v).abs() < 1e-12, "{r:?}");
        }
        assert_eq!(LifexRelation::BinToIntensity.lifex_to_ibsi(1.0), None);
    }
}
