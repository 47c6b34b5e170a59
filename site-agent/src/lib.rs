//! site-agent crate (work in progress).
