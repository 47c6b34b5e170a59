//! aggregator crate (work in progress).
