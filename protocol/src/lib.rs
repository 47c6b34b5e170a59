//! protocol crate (work in progress).
