//! Federated survival analysis (DESIGN §4 step 8): progression-free survival by predicted group
//! (and by observed response) — Kaplan-Meier with Greenwood CIs and medians, the log-rank test,
//! and Cox hazard ratios with Wald CIs.
//!
//! - SITE HALF: [`SiteSurvivalTable::build`] (per-group event/censoring counts per time, small
//!   cells coarsened on the shared time grid at the site) and [`cox_site_contribution`] (the
//!   site's ℓ, U, I at the current β for the site-stratified distributed Newton).
//! - AGGREGATOR HALF: [`pool_survival`] + [`TwoGroupTable::align`], then [`kaplan_meier`],
//!   [`log_rank`], [`fit_cox_binary_pooled`] (unstratified, exact from counts for one binary
//!   covariate), [`fit_cox_binary_stratified`] / [`fit_cox_newton`] (site-stratified).
//! - EXACT: [`GroupTable::from_patients`] and [`fit_cox_patients`].
//!
//! Checked against lifelines (KM, log-rank, `CoxPHFitter`) and statsmodels `PHReg`
//! (Efron and Breslow) golden values in `tests/golden/`.

pub mod cox;
pub mod km;
pub mod logrank;
pub mod table;

pub use cox::{
    CoxCoefficient, CoxContribution, CoxFit, CoxTies, NewtonOptions, cox_binary_contribution,
    cox_site_contribution, fit_cox_binary_pooled, fit_cox_binary_stratified, fit_cox_newton,
    fit_cox_patients,
};
pub use km::{KaplanMeier, KmCi, KmPoint, kaplan_meier};
pub use logrank::{LogRank, log_rank};
pub use table::{
    GroupTable, SiteSurvivalTable, SurvivalCell, SurvivalRow, TimeResolution, TwoGroupRow,
    TwoGroupTable, pool_survival,
};
