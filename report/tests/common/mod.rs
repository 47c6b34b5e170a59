//! Shared test helpers: the fixture study.
pub mod fixture;
