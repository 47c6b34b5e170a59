//! stats crate (work in progress).
