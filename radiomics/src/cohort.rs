//! Patient-level aggregation of lesion features: one feature vector per patient from the feature
//! vectors of that patient's lesions (pure; no IO).
//!
//! Methods ([`LesionAggregation`]):
//! * `Mean` (the study's choice, the default): arithmetic mean over lesions of each feature.
//! * `VolumeWeighted`: mean weighted by each lesion's `morph_volume` (IBSI RNU0, mesh volume, mm³;
//!   `morph_vol_approx`, the voxel-counting volume, when the mesh volume is absent).
//! * `Largest`: the features of the lesion with the largest volume (same tag; first one on ties).
//!
//! NaN convention: a feature that is undefined for a lesion (NaN, e.g. GLCM of a one-voxel lesion)
//! is skipped for that feature, like pandas' `groupby().mean()` (`skipna=True`) or numpy's
//! `nanmean`; the weights of the remaining lesions are renormalised. A feature undefined for every
//! lesion stays NaN. `Largest` takes the largest lesion's value as is (NaN included).

use thiserror::Error;

/// How lesion features are combined into one patient vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LesionAggregation {
    /// Arithmetic mean over lesions (NaN skipped).
    #[default]
    Mean,
    /// Mean weighted by `morph_volume` (NaN skipped, weights renormalised).
    VolumeWeighted,
    /// The lesion with the largest `morph_volume`.
    Largest,
}

impl LesionAggregation {
    /// Parse `mean`, `volume-weighted`, `largest`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mean" => Some(Self::Mean),
            "volume-weighted" | "volume_weighted" => Some(Self::VolumeWeighted),
            "largest" => Some(Self::Largest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::VolumeWeighted => "volume-weighted",
            Self::Largest => "largest",
        }
    }
}

/// The tag whose value weighs lesions (`morph_volume`, IBSI RNU0, mesh volume, mm³).
pub const VOLUME_TAG: &str = "morph_volume";
/// Fallback weight when the mesh volume is absent (e.g. a LIFEx import, whose `SHAPE_Volume(mL)`
/// is the voxel-counting volume): `morph_vol_approx` (IBSI YEKZ, mm³).
pub const VOLUME_FALLBACK_TAG: &str = "morph_vol_approx";

/// Why a patient's lesions cannot be aggregated.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AggregateError {
    #[error("no lesion to aggregate")]
    NoLesion,
    #[error(
        "lesion {lesion} has {got} features but lesion 0 has {expected}; every lesion must be extracted with the same settings"
    )]
    LengthMismatch {
        lesion: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "lesion {lesion} feature {index} is {got} but lesion 0 has {expected} there; every lesion must be extracted with the same settings"
    )]
    TagMismatch {
        lesion: usize,
        index: usize,
        expected: String,
        got: String,
    },
    #[error(
        "{method} aggregation needs the feature {VOLUME_TAG} or {VOLUME_FALLBACK_TAG} (enable the morphology family, or import a volume column) but both are missing"
    )]
    NoVolume { method: &'static str },
    #[error(
        "{method} aggregation: lesion {lesion} has {VOLUME_TAG} = {value}; volumes must be finite and positive"
    )]
    BadVolume {
        method: &'static str,
        lesion: usize,
        value: f64,
    },
}

/// Aggregate lesion feature vectors `lesions[k] = [(tag, value), …]` (same tags in the same order
/// for every lesion) into one patient vector with the same tags.
pub fn aggregate_patient<T: AsRef<str> + Clone>(
    lesions: &[Vec<(T, f64)>],
    method: LesionAggregation,
) -> Result<Vec<(T, f64)>, AggregateError> {
    let first = lesions.first().ok_or(AggregateError::NoLesion)?;
    for (k, l) in lesions.iter().enumerate().skip(1) {
        if l.len() != first.len() {
            return Err(AggregateError::LengthMismatch {
                lesion: k,
                expected: first.len(),
                got: l.len(),
            });
        }
        if let Some(i) = (0..l.len()).find(|&i| l[i].0.as_ref() != first[i].0.as_ref()) {
            return Err(AggregateError::TagMismatch {
                lesion: k,
                index: i,
                expected: first[i].0.as_ref().to_string(),
                got: l[i].0.as_ref().to_string(),
            });
        }
    }
    let weights: Vec<f64> = match method {
        LesionAggregation::Mean => vec![1.0; lesions.len()],
        LesionAggregation::VolumeWeighted | LesionAggregation::Largest => {
            let name = method.as_str();
            let find = |tag: &str| first.iter().position(|(t, _)| t.as_ref() == tag);
            let vi = find(VOLUME_TAG)
                .or_else(|| find(VOLUME_FALLBACK_TAG))
                .ok_or(AggregateError::NoVolume { method: name })?;
            let vols: Vec<f64> = lesions.iter().map(|l| l[vi].1).collect();
            if let Some((k, &v)) = vols
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v > 0.0))
            {
                return Err(AggregateError::BadVolume {
                    method: name,
                    lesion: k,
                    value: v,
                });
            }
            if method == LesionAggregation::Largest {
                // First maximum on ties: deterministic, independent of float summation order.
                let mut best = 0;
                for (k, &v) in vols.iter().enumerate() {
                    if v > vols[best] {
                        best = k;
                    }
                }
                return Ok(lesions[best].clone());
            }
            vols
        }
    };
    Ok((0..first.len())
        .map(|i| {
            let (mut sw, mut s) = (0.0, 0.0);
            for (l, &w) in lesions.iter().zip(&weights) {
                let v = l[i].1;
                if !v.is_nan() {
                    sw += w;
                    s += w * v;
                }
            }
            let value = if sw > 0.0 { s / sw } else { f64::NAN };
            (first[i].0.clone(), value)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesion(vol: f64, a: f64, b: f64) -> Vec<(&'static str, f64)> {
        vec![
            ("morph_volume", vol),
            ("stat_mean", a),
            ("cm_corr_3D_avg", b),
        ]
    }

    #[test]
    fn mean_weighted_and_largest_by_hand() {
        let ls = vec![lesion(100.0, 10.0, 0.5), lesion(300.0, 30.0, f64::NAN)];
        let m = aggregate_patient(&ls, LesionAggregation::Mean).unwrap();
        assert_eq!(m[0], ("morph_volume", 200.0));
        assert_eq!(m[1], ("stat_mean", 20.0));
        assert_eq!(m[2], ("cm_corr_3D_avg", 0.5), "NaN skipped");
        let w = aggregate_patient(&ls, LesionAggregation::VolumeWeighted).unwrap();
        // (100·100 + 300·300)/400 = 250; (100·10 + 300·30)/400 = 25.
        assert_eq!(w[0].1, 250.0);
        assert_eq!(w[1].1, 25.0);
        assert_eq!(w[2].1, 0.5, "weights renormalised over the defined lesions");
        let l = aggregate_patient(&ls, LesionAggregation::Largest).unwrap();
        assert_eq!(l[1].1, 30.0);
        assert!(l[2].1.is_nan(), "largest lesion's value taken as is");
    }

    #[test]
    fn single_lesion_is_identity_and_ties_take_the_first() {
        let one = vec![lesion(5.0, 1.0, 2.0)];
        for m in [
            LesionAggregation::Mean,
            LesionAggregation::VolumeWeighted,
            LesionAggregation::Largest,
        ] {
            assert_eq!(aggregate_patient(&one, m).unwrap(), one[0]);
        }
        let tie = vec![lesion(5.0, 1.0, 2.0), lesion(5.0, 9.0, 9.0)];
        assert_eq!(
            aggregate_patient(&tie, LesionAggregation::Largest).unwrap()[1].1,
            1.0
        );
        let all_nan = vec![lesion(1.0, 1.0, f64::NAN), lesion(2.0, 1.0, f64::NAN)];
        assert!(
            aggregate_patient(&all_nan, LesionAggregation::Mean).unwrap()[2]
                .1
                .is_nan()
        );
    }

    #[test]
    fn errors() {
        let empty: Vec<Vec<(&str, f64)>> = vec![];
        assert_eq!(
            aggregate_patient(&empty, LesionAggregation::Mean),
            Err(AggregateError::NoLesion)
        );
        let short = vec![lesion(1.0, 1.0, 1.0), vec![("morph_volume", 1.0)]];
        assert!(matches!(
            aggregate_patient(&short, LesionAggregation::Mean),
            Err(AggregateError::LengthMismatch { lesion: 1, .. })
        ));
        let swapped = vec![
            lesion(1.0, 1.0, 1.0),
            vec![
                ("morph_volume", 1.0),
                ("cm_corr_3D_avg", 1.0),
                ("stat_mean", 1.0),
            ],
        ];
        assert!(matches!(
            aggregate_patient(&swapped, LesionAggregation::Mean),
            Err(AggregateError::TagMismatch { index: 1, .. })
        ));
        let approx = vec![
            vec![("morph_vol_approx", 1.0), ("stat_mean", 1.0)],
            vec![("morph_vol_approx", 3.0), ("stat_mean", 5.0)],
        ];
        assert_eq!(
            aggregate_patient(&approx, LesionAggregation::VolumeWeighted).unwrap()[1].1,
            4.0,
            "voxel-counting volume as fallback weight"
        );
        let no_vol = vec![vec![("stat_mean", 1.0)]];
        assert!(matches!(
            aggregate_patient(&no_vol, LesionAggregation::VolumeWeighted),
            Err(AggregateError::NoVolume { .. })
        ));
        let zero = vec![lesion(0.0, 1.0, 1.0)];
        assert!(matches!(
            aggregate_patient(&zero, LesionAggregation::Largest),
            Err(AggregateError::BadVolume { lesion: 0, .. })
        ));
        assert_eq!(
            LesionAggregation::parse("Volume-Weighted"),
            Some(LesionAggregation::VolumeWeighted)
        );
        assert_eq!(LesionAggregation::parse("median"), None);
    }
}
