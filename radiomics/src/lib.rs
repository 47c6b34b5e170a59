//! radiomics crate (work in progress).
