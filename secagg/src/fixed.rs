//! Fixed-point encoding of f64 statistics (and exact integer counts) into the ring Z_{2^64}.
//!
//! Convention: a real value `x` is encoded as the integer `round(x · 2^F)` (round half away from
//! zero, Rust's `f64::round`) stored as an `i64` and reinterpreted as `u64` (two's complement).
//! Sums are computed with wrapping `u64` addition, which is addition in Z_{2^64}; the decoded sum
//! is the `u64` reinterpreted as `i64`, converted to f64 and multiplied by 2^−F.
//!
//! Range: the sum over all `n` participants must stay inside `i64`, so each encoded value is
//! limited to `|round(x · 2^F)| ≤ ⌊(2^63 − 1)/n⌋`, i.e. `|x| ≲ 2^(63−F)/n`. If every site respects
//! that per-value limit the total cannot wrap, which is why the limit depends on `n` and is checked
//! on the site side before anything is sent (an aggregator cannot detect a wrapped sum).
//!
//! Precision: multiplying by 2^F is exact in f64 (a power-of-two scale), so the only encoding
//! error is the rounding to an integer: `|x − decode(encode(x))| ≤ 2^−(F+1)`. For a sum over `n`
//! sites the integer sum is exact, hence `|Σ decode − Σ x| ≤ n · 2^−(F+1)`, plus at most half an
//! f64 ulp of the result from converting an integer larger than 2^53 back to f64.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SecAggError};

/// Largest supported number of fractional bits (F = 63 would leave no integer bits at all).
pub const MAX_FRAC_BITS: u32 = 62;

/// A fixed-point format with `frac_bits` fractional bits over the 64-bit ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    /// F = 24: resolution 6.0e−8, range ≈ 5.5e11 / n per value.
    fn default() -> Self {
        Self {
            frac_bits: Self::DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    /// Default fractional bits for real-valued statistics.
    pub const DEFAULT_FRAC_BITS: u32 = 24;

    /// A format with `frac_bits` fractional bits (0..=62).
    pub fn new(frac_bits: u32) -> Result<Self> {
        if frac_bits > MAX_FRAC_BITS {
            return Err(SecAggError::InvalidFracBits(frac_bits));
        }
        Ok(Self { frac_bits })
    }

    /// F = 0: integers (count tables). Encoding an integer-valued f64 is then exact.
    pub const fn integer() -> Self {
        Self { frac_bits: 0 }
    }

    /// Number of fractional bits F.
    pub const fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// The largest F for which values with `|x| ≤ max_abs` can be summed over `participants`
    /// sites without overflow, or `None` if even F = 0 cannot hold them.
    ///
    /// Use it to pick a format from a *public* bound on a statistic (e.g. a count of patients times
    /// a bound on a standardised feature); all sites and the aggregator must agree on the format.
    pub fn for_bound(max_abs: f64, participants: usize) -> Option<Self> {
        if !max_abs.is_finite() || max_abs < 0.0 {
            return None;
        }
        (0..=MAX_FRAC_BITS)
            .rev()
            .map(|f| Self { frac_bits: f })
            .find(|fp| fp.encode_one(0, max_abs, participants).is_ok())
    }

    /// 2^−F, the spacing of representable values.
    pub fn resolution(&self) -> f64 {
        scale_down(self.frac_bits)
    }

    /// Bound on the encoding error of one value: 2^−(F+1).
    pub fn encode_error_bound(&self) -> f64 {
        0.5 * self.resolution()
    }

    /// Bound on the error of a decoded sum over `n` sites: n · 2^−(F+1) (plus half an f64 ulp of
    /// the result, see the module docs).
    pub fn sum_error_bound(&self, n: usize) -> f64 {
        n as f64 * self.encode_error_bound()
    }

    /// Largest encoded magnitude (in units of 2^−F) allowed per value when `participants` sites
    /// contribute: ⌊(2^63 − 1)/n⌋.
    pub fn max_units(participants: usize) -> i64 {
        i64::MAX / participants.max(1) as i64
    }

    /// Largest |x| (approximately, as f64) accepted per value for `participants` sites.
    pub fn max_abs(&self, participants: usize) -> f64 {
        Self::max_units(participants) as f64 * self.resolution()
    }

    /// Encode one value; `index` is only used in the error message.
    fn encode_one(&self, index: usize, x: f64, participants: usize) -> Result<u64> {
        if !x.is_finite() {
            return Err(SecAggError::NonFinite { index, value: x });
        }
        // Exact: scaling by a power of two only changes the exponent (barring overflow to inf,
        // caught below, and subnormal underflow, which rounds to 0 anyway).
        let scaled = (x * scale_up(self.frac_bits)).round();
        let limit = Self::max_units(participants);
        // `scaled` is integer-valued; compare in i128 so that values near 2^63 are not rounded
        // by an f64 comparison against `limit as f64`.
        if !scaled.is_finite()
            || scaled.abs() >= 2f64.powi(100)
            || (scaled as i128).abs() > limit as i128
        {
            return Err(SecAggError::Overflow {
                index,
                value: x,
                limit: self.max_abs(participants),
                frac_bits: self.frac_bits,
                participants,
            });
        }
        Ok((scaled as i64) as u64)
    }

    /// Encode one value for a round with `participants` sites.
    pub fn encode(&self, x: f64, participants: usize) -> Result<u64> {
        self.encode_one(0, x, participants)
    }

    /// Encode a slice, appending to `out`. On error nothing is left half-appended.
    pub fn encode_into(&self, xs: &[f64], participants: usize, out: &mut Vec<u64>) -> Result<()> {
        let start = out.len();
        out.reserve(xs.len());
        for (i, &x) in xs.iter().enumerate() {
            match self.encode_one(i, x, participants) {
                Ok(v) => out.push(v),
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Encode a slice for a round with `participants` sites.
    pub fn encode_slice(&self, xs: &[f64], participants: usize) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(xs.len());
        self.encode_into(xs, participants, &mut out)?;
        Ok(out)
    }

    /// Decode one ring element (a single encoded value or a sum of them).
    pub fn decode(&self, v: u64) -> f64 {
        (v as i64) as f64 * self.resolution()
    }

    /// Decode a slice of ring elements.
    pub fn decode_slice(&self, vs: &[u64]) -> Vec<f64> {
        vs.iter().map(|&v| self.decode(v)).collect()
    }
}

/// 2^f for f in 0..=62, exactly.
fn scale_up(f: u32) -> f64 {
    (1u64 << f) as f64
}

/// 2^−f for f in 0..=62, exactly.
fn scale_down(f: u32) -> f64 {
    1.0 / scale_up(f)
}

/// Encode exact signed integer counts (F = 0) for a round with `participants` sites.
pub fn encode_counts(counts: &[i64], participants: usize) -> Result<Vec<u64>> {
    let limit = FixedPoint::max_units(participants);
    counts
        .iter()
        .enumerate()
        .map(|(index, &c)| {
            if (c as i128).abs() > limit as i128 {
                Err(SecAggError::CountOverflow {
                    index,
                    value: c as i128,
                    limit,
                    participants,
                })
            } else {
                Ok(c as u64)
            }
        })
        .collect()
}

/// Decode summed counts (F = 0) exactly.
pub fn decode_counts(sum: &[u64]) -> Vec<i64> {
    sum.iter().map(|&v| v as i64).collect()
}

/// One named part of a packed vector, with its own fixed-point format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Name used in error messages (e.g. `"xtwx"`, `"counts"`).
    pub name: String,
    /// Number of values.
    pub len: usize,
    /// Format of this segment (F = 0 for counts).
    pub format: FixedPoint,
}

/// How several statistics are packed into one masked vector: segments laid end to end.
///
/// The aggregator and every site must use the same layout for a round (send it with the round
/// request); masking itself does not care about the layout, only about the total length.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Layout {
    segments: Vec<Segment>,
}

impl Layout {
    /// An empty layout; add segments with [`Layout::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A layout with one segment.
    pub fn single(name: impl Into<String>, len: usize, format: FixedPoint) -> Self {
        Self::new().with(name, len, format)
    }

    /// Append a segment.
    pub fn with(mut self, name: impl Into<String>, len: usize, format: FixedPoint) -> Self {
        self.segments.push(Segment {
            name: name.into(),
            len,
            format,
        });
        self
    }

    /// The segments in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total number of ring elements.
    pub fn total_len(&self) -> usize {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Bound on the absolute error of each decoded sum in each segment over `n` sites.
    pub fn sum_error_bounds(&self, n: usize) -> Vec<f64> {
        self.segments
            .iter()
            .map(|s| s.format.sum_error_bound(n))
            .collect()
    }

    /// Encode one part per segment for a round with `participants` sites.
    pub fn encode(&self, parts: &[&[f64]], participants: usize) -> Result<Vec<u64>> {
        if parts.len() != self.segments.len() {
            return Err(SecAggError::SegmentCount {
                expected: self.segments.len(),
                got: parts.len(),
            });
        }
        let mut out = Vec::with_capacity(self.total_len());
        for (seg, part) in self.segments.iter().zip(parts) {
            let wrap = |e: SecAggError| SecAggError::Segment {
                segment: seg.name.clone(),
                source: Box::new(e),
            };
            if part.len() != seg.len {
                return Err(wrap(SecAggError::LengthMismatch {
                    expected: seg.len,
                    got: part.len(),
                }));
            }
            seg.format
                .encode_into(part, participants, &mut out)
                .map_err(wrap)?;
        }
        Ok(out)
    }

    /// Decode an (unmasked) sum into one f64 vector per segment.
    pub fn decode(&self, sum: &[u64]) -> Result<Vec<Vec<f64>>> {
        if sum.len() != self.total_len() {
            return Err(SecAggError::LengthMismatch {
                expected: self.total_len(),
                got: sum.len(),
            });
        }
        let mut rest = sum;
        Ok(self
            .segments
            .iter()
            .map(|seg| {
                let (head, tail) = rest.split_at(seg.len);
                rest = tail;
                seg.format.decode_slice(head)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_half_unit_bound_is_attained() {
        let fp = FixedPoint::new(4).unwrap();
        // 2^-5 lies exactly half-way between 0 and 2^-4: rounds away from zero to 2^-4, the
        // error equals the bound 2^-(F+1).
        let x = 0.03125;
        let back = fp.decode(fp.encode(x, 3).unwrap());
        assert_eq!(back, 0.0625);
        assert_eq!((back - x).abs(), fp.encode_error_bound());
        // Negative values use two's complement.
        assert_eq!(fp.encode(-1.0, 3).unwrap(), (-16i64) as u64);
        assert_eq!(fp.decode((-16i64) as u64), -1.0);
    }

    #[test]
    fn overflow_limit_is_exact_in_units() {
        let fp = FixedPoint::integer();
        let n = 3;
        let limit = FixedPoint::max_units(n);
        assert_eq!(limit, i64::MAX / 3);
        assert!(fp.encode(limit as f64 - 1024.0, n).is_ok());
        let err = fp.encode(1e300, n).unwrap_err();
        assert!(matches!(
            err,
            SecAggError::Overflow {
                participants: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("lower frac_bits"));
        assert!(matches!(
            fp.encode(f64::NAN, n),
            Err(SecAggError::NonFinite { .. })
        ));
        assert!(FixedPoint::new(63).is_err());
    }

    #[test]
    fn for_bound_picks_the_largest_safe_format() {
        let fp = FixedPoint::for_bound(1000.0, 50).unwrap();
        // 1000 · 2^F ≤ (2^63-1)/50  ⇔  F ≤ log2(2^63/50/1000) ≈ 47.4
        assert_eq!(fp.frac_bits(), 47);
        assert!(fp.encode(1000.0, 50).is_ok());
        assert!(FixedPoint::new(48).unwrap().encode(1000.0, 50).is_err());
        assert!(FixedPoint::for_bound(1e300, 2).is_none());
    }
}
