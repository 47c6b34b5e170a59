//! certs crate (work in progress).
