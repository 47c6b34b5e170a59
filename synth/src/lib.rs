//! Synthetic multi-centre liver-metastasis CT cohort for fedrad's tests and one-command demo.
//!
//! Each patient has a CT crop around the liver with 1–3 metastases, one binary mask per lesion and
//! a clinical record; each site has its own scanner character (voxel spacing, PSF, noise level and
//! grain, HU offset and scale), a real batch effect. A latent response (≈ 50 % responders) drives
//! lesion size, enhancement and homogeneity (responders: smaller, brighter, more homogeneous
//! lesions), weakly shifts grade, ECOG, Ki-67 and metastasis pattern, and sets the PFS hazard
//! (HR ≈ 0.55). All effect sizes are in [`params`] and are written to `cohort.json`.
//!
//! Pipeline: [`plan::plan_cohort`] (every random decision except voxel noise, no voxels) →
//! [`render::render_patient`] (pure, per patient, in-memory [`radiomics::Volume`] and
//! [`radiomics::Mask`]s) → [`write::write_cohort`] (files). Everything is deterministic for a seed:
//! ChaCha8 streams, one per cohort plan and one per patient render, so parallel rendering gives the
//! same bytes as serial.

pub mod cli;
pub mod clinical;
pub mod error;
pub mod field;
pub mod params;
pub mod plan;
pub mod render;
pub mod shapes;
pub mod write;

pub use cli::{SynthArgs, cli_run};
pub use clinical::{CLINICAL_COLUMNS, ClinicalRecord};
pub use error::SynthError;
pub use params::CohortParams;
pub use plan::{CohortPlan, plan_cohort};
pub use render::{PatientImages, render_patient};
pub use write::{MANIFEST_COLUMNS, WriteOptions, WriteSummary, write_cohort};
