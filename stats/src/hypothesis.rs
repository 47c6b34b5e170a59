//! Two-group hypothesis tests for Table 1, computed from aggregates only.
//!
//! Conventions (each matches R and scipy; golden values come from scipy):
//! - [`student_t_test`]: two-sided, pooled variance, df = na + nb − 2
//!   (R `t.test(x, y, var.equal = TRUE)`, scipy `ttest_ind(equal_var=True)`).
//! - [`welch_t_test`]: two-sided, Welch–Satterthwaite df
//!   (R `t.test(x, y)`, scipy `ttest_ind(equal_var=False)`).
//! - [`chi_square_independence`]: Pearson χ² without Yates' continuity correction
//!   (R `chisq.test(correct = FALSE)`, scipy `chi2_contingency(correction=False)`).
//! - [`mann_whitney_from_tied_cells`]: Wilcoxon rank-sum W = U of group A with mid-ranks, normal
//!   approximation with tie and continuity corrections (R `wilcox.test(x, y, exact = FALSE,
//!   correct = TRUE)`, scipy `mannwhitneyu(x, y, method='asymptotic', use_continuity=True)`).
//!
//! CDFs come from statrs. Two-sided p-values are computed as `2·F(−|s|)` (lower tail), never as
//! `2·(1 − F(|s|))`, so small p-values keep their relative precision.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

use crate::error::StatsError;
use crate::moments::Moments;

/// Result of a test: statistic, degrees of freedom (None for z tests) and p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// t or χ² statistic.
    pub statistic: f64,
    /// Degrees of freedom of the reference distribution (fractional for Welch).
    pub df: Option<f64>,
    /// Two-sided p-value (upper tail for χ²).
    pub p_value: f64,
}

/// Mann-Whitney result (normal approximation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// W = U of group A = R_A − n_A(n_A + 1)/2 with mid-ranks; equals the number of (a, b) pairs
    /// with a > b plus half the number of tied pairs. R's `W`, scipy's `U` for `x` = group A.
    pub w: f64,
    /// Signed z after continuity correction: `(W − n_A n_B/2 − sign(W − n_A n_B/2)·0.5) / σ`
    /// (R's internal z; scipy reports the same magnitude).
    pub z: f64,
    /// Two-sided p-value `min(1, 2·Φ(−|z|))`.
    pub p_value: f64,
}

fn check_moments(what: &'static str, m: &Moments) -> Result<(), StatsError> {
    if !m.mean.is_finite() {
        return Err(StatsError::NonFinite {
            what,
            value: m.mean,
        });
    }
    if !m.m2.is_finite() {
        return Err(StatsError::NonFinite { what, value: m.m2 });
    }
    Ok(())
}

fn t_two_sided(what: &'static str, t: f64, df: f64) -> Result<f64, StatsError> {
    let dist = StudentsT::new(0.0, 1.0, df).map_err(|e| StatsError::Distribution {
        what,
        reason: e.to_string(),
    })?;
    Ok((2.0 * dist.cdf(-t.abs())).min(1.0))
}

/// Two-sided two-sample t-test with pooled variance (R `t.test(var.equal = TRUE)`).
///
/// `t = (mean_a − mean_b) / sqrt(s²·(1/na + 1/nb))` with `s² = (m2_a + m2_b)/(na + nb − 2)`,
/// df = na + nb − 2. Like R it accepts a group with a single value as long as df ≥ 1, and it
/// refuses data whose standard error is below `10·ε·max(|mean_a|, |mean_b|)` ("essentially
/// constant").
pub fn student_t_test(a: &Moments, b: &Moments) -> Result<TestResult, StatsError> {
    const WHAT: &str = "Student t-test";
    check_moments(WHAT, a)?;
    check_moments(WHAT, b)?;
    for (m, g) in [(a, "group a"), (b, "group b")] {
        if m.n < 1 {
            return Err(StatsError::TooFewObservations {
                what: WHAT,
                group: g,
                needed: 1,
                got: m.n,
            });
        }
    }
    if a.n + b.n < 3 {
        return Err(StatsError::TooFewObservations {
            what: WHAT,
            group: "both groups together",
            needed: 3,
            got: a.n + b.n,
        });
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let df = na + nb - 2.0;
    let pooled_var = (a.m2 + b.m2) / df;
    let stderr = (pooled_var * (1.0 / na + 1.0 / nb)).sqrt();
    check_stderr(WHAT, stderr, a, b)?;
    let t = (a.mean - b.mean) / stderr;
    Ok(TestResult {
        statistic: t,
        df: Some(df),
        p_value: t_two_sided(WHAT, t, df)?,
    })
}

fn check_stderr(
    what: &'static str,
    stderr: f64,
    a: &Moments,
    b: &Moments,
) -> Result<(), StatsError> {
    // R: if (stderr < 10 * .Machine$double.eps * max(abs(mx), abs(my))) stop("data are essentially constant")
    if stderr.is_nan()
        || stderr <= 0.0
        || stderr < 10.0 * f64::EPSILON * a.mean.abs().max(b.mean.abs())
    {
        return Err(StatsError::EssentiallyConstant { what, stderr });
    }
    Ok(())
}

/// Two-sided Welch t-test (R `t.test(var.equal = FALSE)`, the R default).
///
/// `t = (mean_a − mean_b) / sqrt(va/na + vb/nb)` with sample variances, and Welch–Satterthwaite
/// `df = (va/na + vb/nb)² / ((va/na)²/(na−1) + (vb/nb)²/(nb−1))`. Needs ≥ 2 values per group.
pub fn welch_t_test(a: &Moments, b: &Moments) -> Result<TestResult, StatsError> {
    const WHAT: &str = "Welch t-test";
    check_moments(WHAT, a)?;
    check_moments(WHAT, b)?;
    let mut vars = [0.0; 2];
    for (i, (m, g)) in [(a, "group a"), (b, "group b")].into_iter().enumerate() {
        vars[i] = m.var_sample().ok_or(StatsError::TooFewObservations {
            what: WHAT,
            group: g,
            needed: 2,
            got: m.n,
        })?;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let sea = vars[0] / na;
    let seb = vars[1] / nb;
    let se2 = sea + seb;
    let stderr = se2.sqrt();
    check_stderr(WHAT, stderr, a, b)?;
    let df = se2 * se2 / (sea * sea / (na - 1.0) + seb * seb / (nb - 1.0));
    let t = (a.mean - b.mean) / stderr;
    Ok(TestResult {
        statistic: t,
        df: Some(df),
        p_value: t_two_sided(WHAT, t, df)?,
    })
}

/// Pearson χ² test of independence on an r × c table of counts, **without** Yates' continuity
/// correction (R `chisq.test(correct = FALSE)`, scipy `chi2_contingency(correction=False)`).
///
/// Rows and columns whose counts are all zero carry no information and would make an expected
/// count zero, so they are dropped first; df = (r − 1)(c − 1) of the remaining table. Expected
/// counts are `row_total · col_total / N`; the statistic is summed in row-major order.
///
/// Errors: ragged rows, or fewer than 2 rows or 2 columns left after dropping empty ones. Small
/// expected counts (< 5) are not refused; flagging them is the report's job.
pub fn chi_square_independence(table: &[Vec<u64>]) -> Result<TestResult, StatsError> {
    let ncol = table.first().map_or(0, Vec::len);
    if let Some((i, row)) = table.iter().enumerate().find(|(_, r)| r.len() != ncol) {
        return Err(StatsError::BadTable {
            reason: format!(
                "row {i} has {} columns but row 0 has {ncol}; every row needs one count per column",
                row.len()
            ),
        });
    }
    let row_tot: Vec<u128> = table
        .iter()
        .map(|r| r.iter().map(|&c| c as u128).sum())
        .collect();
    let col_tot: Vec<u128> = (0..ncol)
        .map(|j| table.iter().map(|r| r[j] as u128).sum())
        .collect();
    let rows: Vec<usize> = (0..table.len()).filter(|&i| row_tot[i] > 0).collect();
    let cols: Vec<usize> = (0..ncol).filter(|&j| col_tot[j] > 0).collect();
    if rows.len() < 2 || cols.len() < 2 {
        return Err(StatsError::BadTable {
            reason: format!(
                "after dropping all-zero rows and columns the table is {} × {}; at least 2 × 2 \
                 is needed (a variable with one observed level cannot be tested)",
                rows.len(),
                cols.len()
            ),
        });
    }
    let n: u128 = row_tot.iter().sum();
    let nf = n as f64;
    let mut stat = 0.0;
    for &i in &rows {
        for &j in &cols {
            let expected = row_tot[i] as f64 * col_tot[j] as f64 / nf;
            let d = table[i][j] as f64 - expected;
            stat += d * d / expected;
        }
    }
    let df = ((rows.len() - 1) * (cols.len() - 1)) as f64;
    let dist = ChiSquared::new(df).map_err(|e| StatsError::Distribution {
        what: "chi-square",
        reason: e.to_string(),
    })?;
    Ok(TestResult {
        statistic: stat,
        df: Some(df),
        p_value: dist.sf(stat),
    })
}

/// Mann-Whitney / Wilcoxon rank-sum test from tie groups.
///
/// `cells` are in ascending value order; each cell is one tie group (all values in it are equal)
/// given as `(count in group A, count in group B)`. Empty cells `(0, 0)` are ignored.
///
/// - `W = R_A − n_A(n_A+1)/2` with mid-ranks, computed exactly in integers as
///   `Σ_cells a·(B_below + b/2)` (pairs with a > b plus half the ties).
/// - `σ² = n_A n_B / 12 · ((N + 1) − Σ(t³ − t) / (N(N − 1)))`, t = tie-group sizes.
/// - `z = (W − n_A n_B/2 − sign(W − n_A n_B/2)·0.5) / σ` (continuity correction toward 0).
/// - `p = min(1, 2·Φ(−|z|))`.
///
/// This is R `wilcox.test(x, y, exact = FALSE, correct = TRUE)` with x = group A, and scipy
/// `mannwhitneyu(x, y, alternative='two-sided', method='asymptotic', use_continuity=True)`.
/// Errors when a group is empty or when every value is tied (σ = 0).
pub fn mann_whitney_from_tied_cells(cells: &[(u64, u64)]) -> Result<MannWhitney, StatsError> {
    let mut n_a: u128 = 0;
    let mut n_b: u128 = 0;
    let mut twice_w: u128 = 0;
    let mut tie_term: u128 = 0;
    for &(a, b) in cells {
        let (a, b) = (a as u128, b as u128);
        // Each A value here beats every B value below and ties with the b values here.
        twice_w += a * (2 * n_b + b);
        let t = a + b;
        tie_term += t * t * t - t;
        n_a += a;
        n_b += b;
    }
    mann_whitney_normal(
        twice_w as f64 / 2.0,
        n_a as u64,
        n_b as u64,
        tie_term as f64,
    )
}

/// The normal approximation of [`mann_whitney_from_tied_cells`] from its ingredients: W (U of
/// group A), the group sizes and the tie sum `Σ(t³ − t)` over tie groups. Used directly when W is
/// assembled from interval counts (the tree histogram).
pub fn mann_whitney_normal(
    w: f64,
    n_a: u64,
    n_b: u64,
    tie_sum: f64,
) -> Result<MannWhitney, StatsError> {
    const WHAT: &str = "Mann-Whitney test";
    for (n, g) in [(n_a, "group a"), (n_b, "group b")] {
        if n == 0 {
            return Err(StatsError::TooFewObservations {
                what: WHAT,
                group: g,
                needed: 1,
                got: 0,
            });
        }
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let n = na + nb;
    let mu = na * nb / 2.0;
    let sigma2 = na * nb / 12.0 * ((n + 1.0) - tie_sum / (n * (n - 1.0)));
    let sigma = sigma2.sqrt();
    if sigma.is_nan() || sigma <= 0.0 {
        return Err(StatsError::EssentiallyConstant {
            what: WHAT,
            stderr: sigma,
        });
    }
    let centred = w - mu;
    let correction = if centred > 0.0 {
        0.5
    } else if centred < 0.0 {
        -0.5
    } else {
        0.0
    };
    let z = (centred - correction) / sigma;
    let p = (2.0 * Normal::standard().cdf(-z.abs())).min(1.0);
    Ok(MannWhitney { w, z, p_value: p })
}

/// Mann-Whitney on raw values (the pooled reference): sorts all values, makes one tie cell per
/// distinct value (values equal under `==`, so −0.0 ties with 0.0) and calls
/// [`mann_whitney_from_tied_cells`]. Group A = `a`.
pub fn mann_whitney_pooled(a: &[f64], b: &[f64]) -> Result<MannWhitney, StatsError> {
    let mut tagged: Vec<(f64, bool)> = Vec::with_capacity(a.len() + b.len());
    for (vals, is_a) in [(a, true), (b, false)] {
        for &x in vals {
            if !x.is_finite() {
                return Err(StatsError::NonFinite {
                    what: "Mann-Whitney test",
                    value: x,
                });
            }
            tagged.push((x, is_a));
        }
    }
    tagged.sort_by(|x, y| x.0.partial_cmp(&y.0).expect("finite values are ordered"));
    let mut cells: Vec<(u64, u64)> = Vec::new();
    let mut prev: Option<f64> = None;
    for (x, is_a) in tagged {
        if prev != Some(x) {
            cells.push((0, 0));
            prev = Some(x);
        }
        let cell = cells.last_mut().expect("a cell was just pushed");
        if is_a {
            cell.0 += 1;
        } else {
            cell.1 += 1;
        }
    }
    mann_whitney_from_tied_cells(&cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mw_w_counts_pairs() {
        // a = {1, 3}, b = {2, 3}: pairs a>b: (3,2) = 1; ties: (3,3) = 0.5 -> W = 1.5
        let r = mann_whitney_pooled(&[1.0, 3.0], &[2.0, 3.0]).unwrap();
        assert_eq!(r.w, 1.5);
        // Centred W = -0.5 -> continuity correction brings it to 0 -> p = 1.
        assert_eq!(r.z, 0.0);
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn mw_refuses_degenerate() {
        assert!(mann_whitney_from_tied_cells(&[(3, 0)]).is_err());
        assert!(mann_whitney_from_tied_cells(&[(2, 3)]).is_err());
        assert!(mann_whitney_pooled(&[1.0], &[f64::NAN]).is_err());
    }

    #[test]
    fn chi_square_refuses_degenerate() {
        assert!(chi_square_independence(&[vec![1, 2]]).is_err());
        assert!(chi_square_independence(&[vec![1, 0], vec![2, 0]]).is_err());
        assert!(chi_square_independence(&[vec![1, 2], vec![2]]).is_err());
        assert!(chi_square_independence(&[]).is_err());
    }

    #[test]
    fn chi_square_drops_empty_rows_and_columns() {
        let full = chi_square_independence(&[vec![3, 5], vec![6, 1]]).unwrap();
        let padded =
            chi_square_independence(&[vec![3, 0, 5], vec![0, 0, 0], vec![6, 0, 1]]).unwrap();
        assert_eq!(full, padded);
        assert_eq!(full.df, Some(1.0));
    }

    #[test]
    fn t_tests_refuse_constant_and_small() {
        let c = Moments::from_values(&[2.0, 2.0, 2.0]);
        assert!(matches!(
            student_t_test(&c, &c),
            Err(StatsError::EssentiallyConstant { .. })
        ));
        let one = Moments::from_values(&[1.0]);
        assert!(welch_t_test(&one, &c).is_err());
        assert!(student_t_test(&one, &one).is_err());
        // R allows var.equal with one value in a group if df >= 1.
        assert!(student_t_test(&one, &Moments::from_values(&[2.0, 3.0])).is_ok());
    }

    /// R's documented output for its `sleep` data set (group 1 vs group 2):
    /// `t.test(extra ~ group, data = sleep)`: t = -1.8608, df = 17.776, p-value = 0.07939;
    /// with `var.equal = TRUE`: df = 18, p-value = 0.07919;
    /// `wilcox.test(extra ~ group, data = sleep, exact = FALSE)`: W = 25.5, p-value = 0.06933.
    #[test]
    fn r_sleep_example() {
        let g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
        let g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
        let (a, b) = (Moments::from_values(&g1), Moments::from_values(&g2));
        let w = welch_t_test(&a, &b).unwrap();
        assert!((w.statistic - -1.8608).abs() < 5e-5);
        assert!((w.df.unwrap() - 17.776).abs() < 5e-4);
        assert!((w.p_value - 0.07939).abs() < 5e-6);
        let s = student_t_test(&a, &b).unwrap();
        assert_eq!(s.df, Some(18.0));
        assert!((s.p_value - 0.07919).abs() < 5e-6);
        let mw = mann_whitney_pooled(&g1, &g2).unwrap();
        assert_eq!(mw.w, 25.5);
        assert!((mw.p_value - 0.06933).abs() < 5e-6);
    }

    #[test]
    fn t_test_symmetry() {
        let a = Moments::from_values(&[1.0, 2.0, 4.0, 8.0]);
        let b = Moments::from_values(&[3.0, 3.5, 9.0]);
        let ab = student_t_test(&a, &b).unwrap();
        let ba = student_t_test(&b, &a).unwrap();
        assert_eq!(ab.statistic, -ba.statistic);
        assert_eq!(ab.p_value, ba.p_value);
        let w = welch_t_test(&a, &b).unwrap();
        assert!(w.df.unwrap() < ab.df.unwrap());
    }
}
