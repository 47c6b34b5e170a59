//! R type-7 quantiles (numpy's default `linear` method), exact on sorted values and estimated,
//! with an error bound, from counted value intervals.
//!
//! Type 7: with n sorted values x₀ ≤ … ≤ x_{n−1} (0-based), `h = (n − 1)·p`, `k = ⌊h⌋`,
//! `Q(p) = x_k + (h − k)·(x_{k+1} − x_k)` (x_{k+1} is not needed when h = k). The interpolation
//! is written as numpy's `_lerp` (`a + (b−a)·g` for g < 0.5, `b − (b−a)·(1−g)` otherwise),
//! which agrees with R's `(1−g)·a + g·b` up to one rounding.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;

fn check_p(p: f64) -> Result<(), StatsError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(StatsError::BadProbability { p });
    }
    Ok(())
}

/// numpy's `_lerp`: exact at both ends and monotone in g.
fn lerp(a: f64, b: f64, g: f64) -> f64 {
    let d = b - a;
    if g >= 0.5 {
        b - d * (1.0 - g)
    } else {
        a + d * g
    }
}

/// Position of the type-7 quantile: (k, g) with the quantile at `x_k + g·(x_{k+1} − x_k)`.
/// `g == 0` means only `x_k` is needed. Callers guarantee `n >= 1` and `p` in [0, 1].
pub(crate) fn type7_position(n: u64, p: f64) -> (u64, f64) {
    let h = (n - 1) as f64 * p;
    let k = (h.floor() as u64).min(n - 1);
    let g = if k == n - 1 { 0.0 } else { h - k as f64 };
    (k, g)
}

/// The 0-based order statistics a type-7 quantile reads: `[k]` or `[k, k+1]`.
pub fn type7_order_statistics(n: u64, p: f64) -> Result<Vec<u64>, StatsError> {
    check_p(p)?;
    if n == 0 {
        return Err(StatsError::TooFewObservations {
            what: "type-7 quantile",
            group: "the data",
            needed: 1,
            got: 0,
        });
    }
    let (k, g) = type7_position(n, p);
    Ok(if g > 0.0 { vec![k, k + 1] } else { vec![k] })
}

/// Type-7 quantile of values already sorted ascending (R `quantile(type = 7)`, numpy
/// `quantile(method='linear')`). Errors on empty input, NaN, unsorted input or p outside [0, 1].
pub fn quantile_type7(sorted: &[f64], p: f64) -> Result<f64, StatsError> {
    check_p(p)?;
    if let Some(&x) = sorted.iter().find(|x| x.is_nan()) {
        return Err(StatsError::NonFinite {
            what: "type-7 quantile",
            value: x,
        });
    }
    if let Some(i) = (1..sorted.len()).find(|&i| sorted[i] < sorted[i - 1]) {
        return Err(StatsError::NotSorted { index: i });
    }
    if sorted.is_empty() {
        return Err(StatsError::TooFewObservations {
            what: "type-7 quantile",
            group: "the data",
            needed: 1,
            got: 0,
        });
    }
    let (k, g) = type7_position(sorted.len() as u64, p);
    let k = k as usize;
    Ok(if g > 0.0 {
        lerp(sorted[k], sorted[k + 1], g)
    } else {
        sorted[k]
    })
}

/// An interval `[lo, hi]` known to hold `count` values (their positions inside are unknown).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueCell {
    /// Lower end.
    pub lo: f64,
    /// Upper end (`hi >= lo`; `hi == lo` means all `count` values equal `lo`).
    pub hi: f64,
    /// Number of values in the interval.
    pub count: u64,
}

/// A quantile estimated from cells, with a bound on its error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileEstimate {
    /// The estimate.
    pub value: f64,
    /// Width of the widest cell that held an order statistic used. The exact type-7 quantile of
    /// the underlying values lies within `resolution` of `value` (strictly less than the width
    /// of each cell used, and within half the width when that cell holds a single value), so
    /// `resolution == 0` means the estimate is exact.
    pub resolution: f64,
}

/// Type-7 quantile estimated from disjoint ascending cells with counts.
///
/// The order statistic k (0-based) lying in a cell with `a` values in earlier cells is estimated
/// as `lo + (hi − lo)·(k − a + 0.5)/count`, i.e. the cell's values are taken as spread evenly,
/// each at the centre of its 1/count slice. Any value in the cell is in `[lo, hi]`, so the error
/// of each order statistic is below the cell width (at most half of it for a one-value cell),
/// and the type-7 interpolation, a convex combination, keeps the error below the wider of the
/// (at most two) cells used — reported as [`QuantileEstimate::resolution`].
///
/// Cells must satisfy `lo <= hi` and `hi_i <= lo_{i+1}` (touching ends are allowed, as for
/// half-open tree intervals). Cells with count 0 are skipped.
pub fn quantile_type7_from_cells(
    cells: &[ValueCell],
    p: f64,
) -> Result<QuantileEstimate, StatsError> {
    check_p(p)?;
    for (i, c) in cells.iter().enumerate() {
        if !(c.lo.is_finite() && c.hi.is_finite()) || c.hi < c.lo {
            return Err(StatsError::BadCell {
                index: i,
                reason: format!("needs finite lo <= hi, got [{}, {}]", c.lo, c.hi),
            });
        }
        if i > 0 && c.lo < cells[i - 1].hi {
            return Err(StatsError::BadCell {
                index: i,
                reason: format!(
                    "starts at {} before the previous cell ends at {}; cells must be disjoint and ascending",
                    c.lo,
                    cells[i - 1].hi
                ),
            });
        }
    }
    let n: u64 = cells.iter().map(|c| c.count).sum();
    if n == 0 {
        return Err(StatsError::TooFewObservations {
            what: "type-7 quantile from cells",
            group: "the cells",
            needed: 1,
            got: 0,
        });
    }
    let (k, g) = type7_position(n, p);
    let (xk, wk) = order_statistic_from_cells(cells, k);
    if g > 0.0 {
        let (xk1, wk1) = order_statistic_from_cells(cells, k + 1);
        Ok(QuantileEstimate {
            value: lerp(xk, xk1, g),
            resolution: wk.max(wk1),
        })
    } else {
        Ok(QuantileEstimate {
            value: xk,
            resolution: wk,
        })
    }
}

/// Estimate of the 0-based order statistic `k` and the width of its cell. `k` must be < total.
fn order_statistic_from_cells(cells: &[ValueCell], k: u64) -> (f64, f64) {
    let mut before = 0u64;
    for c in cells.iter().filter(|c| c.count > 0) {
        if k < before + c.count {
            let w = c.hi - c.lo;
            let frac = ((k - before) as f64 + 0.5) / c.count as f64;
            return (c.lo + w * frac, w);
        }
        before += c.count;
    }
    unreachable!("order statistic {k} beyond the total count {before}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_hand_values() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_type7(&x, 0.0).unwrap(), 1.0);
        assert_eq!(quantile_type7(&x, 1.0).unwrap(), 4.0);
        assert_eq!(quantile_type7(&x, 0.5).unwrap(), 2.5);
        assert_eq!(quantile_type7(&x, 0.25).unwrap(), 1.75);
        assert_eq!(quantile_type7(&[7.0], 0.3).unwrap(), 7.0);
        assert!(quantile_type7(&[], 0.5).is_err());
        assert!(quantile_type7(&x, 1.5).is_err());
        assert!(quantile_type7(&[2.0, 1.0], 0.5).is_err());
        assert_eq!(type7_order_statistics(5, 0.5).unwrap(), vec![2]);
        assert_eq!(type7_order_statistics(4, 0.5).unwrap(), vec![1, 2]);
    }

    #[test]
    fn cells_of_zero_width_are_exact() {
        let x = [1.0, 2.0, 2.0, 5.0, 9.0, 9.0, 9.0];
        let cells = [
            ValueCell {
                lo: 1.0,
                hi: 1.0,
                count: 1,
            },
            ValueCell {
                lo: 2.0,
                hi: 2.0,
                count: 2,
            },
            ValueCell {
                lo: 3.0,
                hi: 4.0,
                count: 0,
            },
            ValueCell {
                lo: 5.0,
                hi: 5.0,
                count: 1,
            },
            ValueCell {
                lo: 9.0,
                hi: 9.0,
                count: 3,
            },
        ];
        for p in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0] {
            let e = quantile_type7_from_cells(&cells, p).unwrap();
            assert_eq!(e.value, quantile_type7(&x, p).unwrap());
            assert_eq!(e.resolution, 0.0);
        }
    }

    #[test]
    fn cell_estimate_within_resolution() {
        // 3 values in [10, 13): estimates at 10.5, 11.5, 12.5.
        let cells = [ValueCell {
            lo: 10.0,
            hi: 13.0,
            count: 3,
        }];
        let e = quantile_type7_from_cells(&cells, 0.5).unwrap();
        assert_eq!(e.value, 11.5);
        assert_eq!(e.resolution, 3.0);
        let bad = [cells[0], cells[0]];
        assert!(quantile_type7_from_cells(&bad, 0.5).is_err());
    }
}
