//! federation crate (work in progress).
