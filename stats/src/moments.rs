//! First and second moments (count, mean, sum of squared deviations) with an exact parallel merge.
//!
//! A site sends one [`Moments`] per variable and group; the aggregator merges them in `SiteId`
//! order. The merge is the exact pairwise update of Chan, Golub & LeVeque (1979), so merging the
//! sites gives the pooled mean and variance up to round-off (about 1e-15 relative for
//! well-conditioned data), not an approximation.

use serde::{Deserialize, Serialize};

/// Count, mean and `m2 = Σ (x − mean)²` of a set of values.
///
/// Two variance conventions are offered and named explicitly because they are easy to mix up:
/// - [`Moments::var_population`]: `m2 / n` (divisor n; numpy `ddof=0`). Used for the tree root.
/// - [`Moments::var_sample`]: `m2 / (n − 1)` (divisor n − 1; R `var`, numpy `ddof=1`). Used for
///   Table 1's SD and the t-tests.
///
/// Non-finite inputs are not filtered: a NaN propagates into `mean` and `m2` (check with
/// [`Moments::is_finite`]); the caller is responsible for dropping missing values first.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Moments {
    /// Number of values.
    pub n: u64,
    /// Arithmetic mean (0 when `n == 0`).
    pub mean: f64,
    /// Sum of squared deviations from the mean (0 when `n <= 1`).
    pub m2: f64,
}

impl Moments {
    /// Moments of no values.
    pub const EMPTY: Moments = Moments {
        n: 0,
        mean: 0.0,
        m2: 0.0,
    };

    /// Moments of `values` by Welford's single-pass update, which avoids the cancellation of the
    /// textbook `Σx² − n·mean²` formula.
    pub fn from_values(values: &[f64]) -> Moments {
        let mut m = Moments::EMPTY;
        for &x in values {
            m.push(x);
        }
        m
    }

    /// Adds one value (Welford's update).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Exact merge of two disjoint sets of values (Chan et al.):
    /// `n = na + nb`, `δ = mean_b − mean_a`, `mean = mean_a + δ·nb/n`,
    /// `m2 = m2_a + m2_b + δ²·na·nb/n`.
    ///
    /// The merge is commutative in exact arithmetic but not bit-for-bit in floating point, so
    /// merge in a fixed order (the aggregator uses `SiteId` order).
    pub fn merge(&self, other: &Moments) -> Moments {
        if other.n == 0 {
            return *self;
        }
        if self.n == 0 {
            return *other;
        }
        let na = self.n as f64;
        let nb = other.n as f64;
        let n = self.n + other.n;
        let nf = n as f64;
        let delta = other.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * (nb / nf),
            m2: self.m2 + other.m2 + delta * delta * (na * nb / nf),
        }
    }

    /// Merges a sequence in the given order (left fold of [`Moments::merge`]).
    pub fn merge_all<'a, I: IntoIterator<Item = &'a Moments>>(parts: I) -> Moments {
        parts
            .into_iter()
            .fold(Moments::EMPTY, |acc, m| acc.merge(m))
    }

    /// Population variance `m2 / n` (divisor n). `None` when `n == 0`.
    pub fn var_population(&self) -> Option<f64> {
        (self.n > 0).then(|| self.m2 / self.n as f64)
    }

    /// Sample variance `m2 / (n − 1)` (divisor n − 1, unbiased). `None` when `n < 2`.
    pub fn var_sample(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2 / (self.n - 1) as f64)
    }

    /// Sample standard deviation `sqrt(m2 / (n − 1))`, the SD reported in Table 1. `None` when
    /// `n < 2`.
    pub fn sd_sample(&self) -> Option<f64> {
        self.var_sample().map(f64::sqrt)
    }

    /// Population standard deviation `sqrt(m2 / n)`. `None` when `n == 0`.
    pub fn sd_population(&self) -> Option<f64> {
        self.var_population().map(f64::sqrt)
    }

    /// True when mean and m2 are finite (no NaN or infinity was pushed).
    pub fn is_finite(&self) -> bool {
        self.mean.is_finite() && self.m2.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let m = Moments::from_values(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.n, 8);
        assert_eq!(m.mean, 5.0);
        assert!((m.m2 - 32.0).abs() < 1e-12);
        assert!((m.var_population().unwrap() - 4.0).abs() < 1e-12);
        assert!((m.var_sample().unwrap() - 32.0 / 7.0).abs() < 1e-12);
        assert!((m.sd_sample().unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Moments::from_values(&[]), Moments::EMPTY);
        assert_eq!(Moments::EMPTY.var_population(), None);
        let one = Moments::from_values(&[3.5]);
        assert_eq!(one.var_population(), Some(0.0));
        assert_eq!(one.var_sample(), None);
        assert_eq!(one.merge(&Moments::EMPTY), one);
        assert_eq!(Moments::EMPTY.merge(&one), one);
    }

    #[test]
    fn nan_propagates() {
        assert!(!Moments::from_values(&[1.0, f64::NAN]).is_finite());
    }

    #[test]
    fn merge_equals_pooled_over_many_splits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for trial in 0..200 {
            // Offsets far from zero make the naive formula fail; Welford + Chan must not.
            let offset = if trial % 2 == 0 { 0.0 } else { 1.0e6 };
            let n = rng.gen_range(2..300);
            let values: Vec<f64> = (0..n)
                .map(|_| offset + rng.gen_range(-50.0..50.0f64).round() / 10.0)
                .collect();
            let pooled = Moments::from_values(&values);
            // Split into 7 "sites" of random sizes (some empty), merge in site order.
            let mut cuts: Vec<usize> = (0..6).map(|_| rng.gen_range(0..=n)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut start = 0;
            for &c in cuts.iter().chain(std::iter::once(&n)) {
                parts.push(Moments::from_values(&values[start..c]));
                start = c;
            }
            let merged = Moments::merge_all(&parts);
            assert_eq!(merged.n, pooled.n);
            let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
            assert!(rel(merged.mean, pooled.mean) < 1e-12, "trial {trial}");
            // Compare m2 against a two-pass reference, which is the most accurate.
            let mean2 = values.iter().sum::<f64>() / n as f64;
            let m2_ref: f64 = values.iter().map(|x| (x - mean2) * (x - mean2)).sum();
            // Relative error of m2 grows with |mean|/sd (the deviations lose digits), so the
            // bound is 1e-12 for data near zero and looser for the shifted data.
            let tol = if offset == 0.0 { 1e-12 } else { 1e-9 };
            if m2_ref > 0.0 {
                assert!(
                    rel(merged.m2, m2_ref) < tol,
                    "trial {trial}: {} vs {}",
                    merged.m2,
                    m2_ref
                );
                assert!(rel(merged.m2, pooled.m2) < tol, "trial {trial}");
            }
        }
    }
}
