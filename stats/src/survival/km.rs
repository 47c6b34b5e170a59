//! Kaplan-Meier estimate with Greenwood variance, pointwise CIs and the median with its CI.
//!
//! Conventions (lifelines `KaplanMeierFitter`, checked against it to 1e-10):
//! - S(t) = Π_{tᵢ ≤ t} (1 − dᵢ/nᵢ); one point per row of the life table (event or censoring
//!   time), as lifelines' `timeline`.
//! - **Greenwood**: Var S(t) = S(t)²·Σ dᵢ/(nᵢ(nᵢ − dᵢ)); a term with nᵢ = dᵢ (the curve reaching
//!   0) is taken as 0, as lifelines does (R gives NaN/Inf there).
//! - **CI** [`KmCi::LogLog`] (default; lifelines' "exponential Greenwood"):
//!   exp(−exp(log(−log S) ∓ z·√Σ/ log S)); [`KmCi::Log`] (R `survfit`'s default
//!   `conf.type = "log"`): exp(log S ± z·√Σ), upper capped at 1. Where S = 1 the band is (1, 1).
//! - **Median** = the first time with S ≤ 0.5 (None if S stays above 0.5); its CI = the first
//!   times with the lower / upper band ≤ 0.5 (lifelines `median_survival_times` on
//!   `confidence_interval_`). R's `quantile.survfit` takes the midpoint to the next time when S
//!   equals 0.5 exactly on a flat stretch; lifelines does not, and neither does this module.

use serde::{Deserialize, Serialize};

use super::table::GroupTable;
use crate::metrics::MetricsError;
use crate::metrics::roc::normal_quantile_two_sided;

/// Pointwise CI transform for the survival curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KmCi {
    /// log(−log S) (lifelines' default; R `conf.type = "log-log"`).
    #[default]
    LogLog,
    /// log S (R `survfit`'s default `conf.type = "log"`).
    Log,
}

/// One step of the KM curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KmPoint {
    /// Time.
    pub time: f64,
    /// At risk just before the time.
    pub at_risk: u64,
    /// Events at the time.
    pub events: u64,
    /// Censorings at the time.
    pub censored: u64,
    /// S(time) (right-continuous: after the events at `time`).
    pub survival: f64,
    /// Greenwood variance of S(time).
    pub variance: f64,
    /// Lower CI limit.
    pub ci_lower: f64,
    /// Upper CI limit.
    pub ci_upper: f64,
}

/// A KM curve with its median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KaplanMeier {
    /// Patients.
    pub n: u64,
    /// Events.
    pub events: u64,
    /// Steps, ascending (S = 1 before the first).
    pub points: Vec<KmPoint>,
    /// Median survival time (None = not reached).
    pub median: Option<f64>,
    /// Median CI lower limit (None = not reached).
    pub median_ci_lower: Option<f64>,
    /// Median CI upper limit (None = not reached, i.e. +∞).
    pub median_ci_upper: Option<f64>,
    /// CI transform used.
    pub ci_method: KmCi,
    /// Confidence level.
    pub conf_level: f64,
}

/// Kaplan-Meier from a life table.
pub fn kaplan_meier(
    table: &GroupTable,
    ci: KmCi,
    conf_level: f64,
) -> Result<KaplanMeier, MetricsError> {
    let z = normal_quantile_two_sided(conf_level)?;
    if table.n() == 0 {
        return Err(MetricsError::TooFew {
            what: "Kaplan-Meier",
            class: "patients",
            needed: 1,
            got: 0,
        });
    }
    let mut s = 1.0f64;
    let mut gw = 0.0f64;
    let mut points = Vec::with_capacity(table.rows.len());
    for r in &table.rows {
        if r.events > 0 {
            let (n, d) = (r.at_risk as f64, r.events as f64);
            s *= 1.0 - d / n;
            if r.at_risk > r.events {
                gw += d / (n * (n - d));
            }
        }
        let (lo, hi) = band(s, gw, z, ci);
        points.push(KmPoint {
            time: r.time,
            at_risk: r.at_risk,
            events: r.events,
            censored: r.censored,
            survival: s,
            variance: s * s * gw,
            ci_lower: lo,
            ci_upper: hi,
        });
    }
    let first_le =
        |f: &dyn Fn(&KmPoint) -> f64| points.iter().find(|p| f(p) <= 0.5).map(|p| p.time);
    Ok(KaplanMeier {
        n: table.n(),
        events: table.rows.iter().map(|r| r.events).sum(),
        median: first_le(&|p| p.survival),
        median_ci_lower: first_le(&|p| p.ci_lower),
        median_ci_upper: first_le(&|p| p.ci_upper),
        points,
        ci_method: ci,
        conf_level,
    })
}

fn band(s: f64, gw: f64, z: f64, ci: KmCi) -> (f64, f64) {
    let se = gw.sqrt();
    match ci {
        KmCi::LogLog => {
            let v = s.ln();
            let lo = (-((-v).ln() - z * se / v).exp()).exp();
            let hi = (-((-v).ln() + z * se / v).exp()).exp();
            // lifelines fills the NaN of S = 1 (v = 0) with 1.
            (
                if lo.is_nan() { 1.0 } else { lo },
                if hi.is_nan() { 1.0 } else { hi },
            )
        }
        KmCi::Log => {
            if s == 0.0 {
                return (0.0, 0.0);
            }
            let l = s.ln();
            ((l - z * se).exp(), (l + z * se).exp().min(1.0))
        }
    }
}
