//! IBSI intensity discretisation: fixed bin size (FBS), fixed bin number (FBN), or none.
//!
//! Conventions (IBSI 1, section "Intensity discretisation"; the same as MIRP, the IBSI reference
//! implementation):
//! * **Fixed bin size** `w` with origin `x0`: `bin = floor((x − x0) / w) + 1`. The origin is the lower
//!   bound of the re-segmentation range when one is set, otherwise the minimum intensity in the ROI
//!   (the caller passes the former; `None` means the latter). The number of grey levels `N_g` is the
//!   highest bin present in the ROI (MIRP convention; it enters the normalised GLCM features).
//! * **Fixed bin number** `N` over the ROI range `[min, max]`: `bin = floor(N (x − min) / (max − min)) + 1`,
//!   with `x = max` mapped to `N`; `N_g = N`. When the ROI holds a single intensity every voxel gets
//!   bin `ceil(N / 2)` (IBSI leaves this undefined; MIRP's choice).
//! * **None**: intensities already are grey levels (integers ≥ 1, e.g. the IBSI digital phantom) and
//!   are used as is; `N_g` is the highest level present.

use thiserror::Error;

/// How to map ROI intensities to grey levels 1..N_g.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Discretisation {
    /// Intensities are used as grey levels unchanged; they must be integers ≥ 1.
    None,
    /// Fixed bin size `width` (intensity units). `origin` is the lower edge of bin 1: pass the lower
    /// re-segmentation bound; `None` uses the ROI minimum.
    FixedBinSize { width: f64, origin: Option<f64> },
    /// Fixed number of bins spanning the ROI intensity range.
    FixedBinNumber { bins: u32 },
}

/// Why discretisation cannot be done.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DiscretiseError {
    #[error("no voxels to discretise: the region of interest is empty")]
    Empty,
    #[error("fixed bin size must be a positive finite number, got {0}; use e.g. 25 (HU) for CT")]
    InvalidBinWidth(f64),
    #[error("fixed bin number must be at least 1, got {0}")]
    InvalidBinCount(u32),
    #[error("bin origin must be finite, got {0}")]
    InvalidOrigin(f64),
    #[error(
        "intensity {value} lies below the fixed-bin-size origin {origin}; re-segment the ROI to the range starting at the origin, or lower the origin"
    )]
    BelowOrigin { value: f64, origin: f64 },
    #[error(
        "intensity {0} is not finite (NaN or infinite) inside the ROI; check the image and the mask"
    )]
    NonFinite(f64),
    #[error(
        "discretisation 'none' needs integer grey levels >= 1, found {0}; choose fixed bin size or fixed bin number instead"
    )]
    NotGreyLevels(f64),
    #[error("{0} grey levels exceed the supported maximum of {max}; use a wider bin", max = MAX_LEVEL)]
    TooManyLevels(f64),
}

/// Largest grey level index the crate works with (texture matrices would not fit in memory anyway).
pub const MAX_LEVEL: u32 = 1 << 24;

/// A discretisation resolved against one ROI (its minimum/maximum known), ready to bin values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Discretiser {
    kind: Kind,
    /// Number of grey levels `N_g` (see module docs for the per-method convention).
    pub n_levels: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    None,
    Fbs { width: f64, origin: f64 },
    Fbn { bins: u32, min: f64, max: f64 },
}

impl Discretiser {
    /// Resolve `method` against the ROI intensities `values` (all voxels of the intensity mask).
    pub fn fit(method: Discretisation, values: &[f64]) -> Result<Self, DiscretiseError> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            if !v.is_finite() {
                return Err(DiscretiseError::NonFinite(v));
            }
            min = min.min(v);
            max = max.max(v);
        }
        if values.is_empty() {
            return Err(DiscretiseError::Empty);
        }
        match method {
            Discretisation::None => {
                for &v in values {
                    if v < 1.0 || v.fract() != 0.0 {
                        return Err(DiscretiseError::NotGreyLevels(v));
                    }
                }
                if max > MAX_LEVEL as f64 {
                    return Err(DiscretiseError::TooManyLevels(max));
                }
                Ok(Self {
                    kind: Kind::None,
                    n_levels: max as u32,
                })
            }
            Discretisation::FixedBinSize { width, origin } => {
                if !(width.is_finite() && width > 0.0) {
                    return Err(DiscretiseError::InvalidBinWidth(width));
                }
                let origin = origin.unwrap_or(min);
                if !origin.is_finite() {
                    return Err(DiscretiseError::InvalidOrigin(origin));
                }
                if min < origin {
                    return Err(DiscretiseError::BelowOrigin { value: min, origin });
                }
                let top = fbs_bin(max, width, origin);
                if top > MAX_LEVEL as f64 {
                    return Err(DiscretiseError::TooManyLevels(top));
                }
                Ok(Self {
                    kind: Kind::Fbs { width, origin },
                    n_levels: top as u32,
                })
            }
            Discretisation::FixedBinNumber { bins } => {
                if bins == 0 {
                    return Err(DiscretiseError::InvalidBinCount(bins));
                }
                if bins > MAX_LEVEL {
                    return Err(DiscretiseError::TooManyLevels(bins as f64));
                }
                Ok(Self {
                    kind: Kind::Fbn { bins, min, max },
                    n_levels: bins,
                })
            }
        }
    }

    /// Grey level (1..=n_levels) of an intensity of the ROI this discretiser was fitted on.
    #[inline]
    pub fn level(&self, x: f64) -> u32 {
        match self.kind {
            Kind::None => x as u32,
            Kind::Fbs { width, origin } => {
                (fbs_bin(x, width, origin).max(1.0) as u32).min(self.n_levels)
            }
            Kind::Fbn { bins, min, max } => {
                if max > min {
                    let b = (bins as f64 * (x - min) / (max - min)).floor() + 1.0;
                    (b.max(1.0) as u32).min(bins)
                } else {
                    bins.div_ceil(2)
                }
            }
        }
    }

    /// Fixed bin size and origin, if this is an FBS discretiser (used to map bins back to
    /// intensities, e.g. bin centres for the intensity-volume histogram).
    pub fn fixed_bin_size(&self) -> Option<(f64, f64)> {
        match self.kind {
            Kind::Fbs { width, origin } => Some((width, origin)),
            _ => None,
        }
    }
}

#[inline]
fn fbs_bin(x: f64, width: f64, origin: f64) -> f64 {
    ((x - origin) / width).floor() + 1.0
}

/// Discretise a slice of ROI intensities; returns the grey levels and `N_g`.
pub fn discretise(
    method: Discretisation,
    values: &[f64],
) -> Result<(Vec<u32>, u32), DiscretiseError> {
    let d = Discretiser::fit(method, values)?;
    Ok((values.iter().map(|&v| d.level(v)).collect(), d.n_levels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_bin_size_uses_origin_and_floor() {
        // IBSI example logic: origin -1000, width 25: -1000 -> 1, -975.1 -> 1, -975 -> 2, 400 -> 57.
        let v = [-1000.0, -975.1, -975.0, 400.0];
        let m = Discretisation::FixedBinSize {
            width: 25.0,
            origin: Some(-1000.0),
        };
        let (levels, n) = discretise(m, &v).unwrap();
        assert_eq!(levels, vec![1, 1, 2, 57]);
        assert_eq!(n, 57);
        // Without an origin the ROI minimum is bin 1's lower edge.
        let (levels, n) = discretise(
            Discretisation::FixedBinSize {
                width: 10.0,
                origin: None,
            },
            &[5.0, 14.9, 15.0, 35.0],
        )
        .unwrap();
        assert_eq!(levels, vec![1, 1, 2, 4]);
        assert_eq!(n, 4);
    }

    #[test]
    fn fixed_bin_number_maps_max_to_last_bin() {
        let (levels, n) = discretise(
            Discretisation::FixedBinNumber { bins: 4 },
            &[0.0, 0.99, 1.0, 2.5, 3.99, 4.0],
        )
        .unwrap();
        assert_eq!(levels, vec![1, 1, 2, 3, 4, 4]);
        assert_eq!(n, 4);
        let (levels, _) =
            discretise(Discretisation::FixedBinNumber { bins: 5 }, &[7.0, 7.0]).unwrap();
        assert_eq!(levels, vec![3, 3]);
    }

    #[test]
    fn none_requires_grey_levels() {
        let (levels, n) = discretise(Discretisation::None, &[1.0, 6.0, 4.0]).unwrap();
        assert_eq!((levels, n), (vec![1, 6, 4], 6));
        assert_eq!(
            discretise(Discretisation::None, &[0.0]),
            Err(DiscretiseError::NotGreyLevels(0.0))
        );
        assert_eq!(
            discretise(Discretisation::None, &[1.5]),
            Err(DiscretiseError::NotGreyLevels(1.5))
        );
    }

    #[test]
    fn errors_are_reported() {
        assert_eq!(
            discretise(Discretisation::None, &[]),
            Err(DiscretiseError::Empty)
        );
        assert_eq!(
            discretise(
                Discretisation::FixedBinSize {
                    width: 0.0,
                    origin: None
                },
                &[1.0]
            ),
            Err(DiscretiseError::InvalidBinWidth(0.0))
        );
        assert_eq!(
            discretise(
                Discretisation::FixedBinSize {
                    width: 1.0,
                    origin: Some(0.0)
                },
                &[-1.0]
            ),
            Err(DiscretiseError::BelowOrigin {
                value: -1.0,
                origin: 0.0
            })
        );
        assert_eq!(
            discretise(Discretisation::FixedBinNumber { bins: 0 }, &[1.0]),
            Err(DiscretiseError::InvalidBinCount(0))
        );
        assert!(matches!(
            discretise(Discretisation::FixedBinNumber { bins: 3 }, &[f64::NAN]),
            Err(DiscretiseError::NonFinite(_))
        ));
    }
}
