//! Two-group log-rank test with the hypergeometric variance (R `survdiff(rho = 0)`, lifelines
//! `logrank_test`).
//!
//! At each time with d events among n at risk (n₁ in group 1): E₁ = d·n₁/n,
//! V = n₀n₁d(n − d)/(n²(n − 1)); χ² = (O₁ − E₁)²/ΣV on 1 df, p from the upper tail.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::table::TwoGroupTable;
use crate::metrics::MetricsError;

/// Log-rank result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogRank {
    /// χ² statistic.
    pub statistic: f64,
    /// Degrees of freedom (1).
    pub df: f64,
    /// Upper-tail p-value.
    pub p_value: f64,
    /// Observed events per group.
    pub observed: [u64; 2],
    /// Expected events per group under H₀.
    pub expected: [f64; 2],
    /// Hypergeometric variance of O₁ − E₁.
    pub variance: f64,
}

/// Log-rank test of group 1 vs group 0.
pub fn log_rank(table: &TwoGroupTable) -> Result<LogRank, MetricsError> {
    let (mut o, mut e, mut v) = ([0u64; 2], [0.0f64; 2], 0.0f64);
    for r in &table.rows {
        let d = r.events[0] + r.events[1];
        if d == 0 {
            continue;
        }
        let n = (r.at_risk[0] + r.at_risk[1]) as f64;
        let df = d as f64;
        o[0] += r.events[0];
        o[1] += r.events[1];
        e[0] += df * r.at_risk[0] as f64 / n;
        e[1] += df * r.at_risk[1] as f64 / n;
        if n > 1.0 {
            v += r.at_risk[0] as f64 * r.at_risk[1] as f64 * df * (n - df) / (n * n * (n - 1.0));
        }
    }
    if o[0] + o[1] == 0 || v <= 0.0 {
        return Err(MetricsError::TooFew {
            what: "log-rank test",
            class: "events in comparable risk sets",
            needed: 1,
            got: o[0] + o[1],
        });
    }
    let statistic = (o[1] as f64 - e[1]).powi(2) / v;
    let chi = ChiSquared::new(1.0).map_err(|e| MetricsError::Distribution {
        what: "chi-square",
        reason: e.to_string(),
    })?;
    Ok(LogRank {
        statistic,
        df: 1.0,
        p_value: chi.sf(statistic),
        observed: o,
        expected: e,
        variance: v,
    })
}
