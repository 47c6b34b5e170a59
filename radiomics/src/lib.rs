//! IBSI-compliant radiomics: image/mask readers, IBSI preprocessing and every IBSI feature family.
//!
//! Pure computation on in-memory volumes; the `io` module is the only place that touches files.

pub mod cohort;
pub mod discretise;
pub mod extract;
pub mod intensity;
pub mod registry;
pub mod texture;
pub mod volume;

pub mod io;
pub mod morphology;
pub mod pipeline;
pub mod preprocess;

pub use volume::{Geometry, Mask, Volume};
