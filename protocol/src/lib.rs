//! The `fedrad.v1` wire protocol: generated gRPC types, conversions to the domain types at the
//! edge, and the mutual-TLS plumbing both sides use.
//!
//! Code generation uses the vendored `protoc` from `protoc-bin-vendored` (see `build.rs`), so a
//! fresh machine needs no system protobuf compiler.

pub mod convert;
mod convert_combat;
mod convert_lasso;
pub mod convert_pipeline;
pub mod convert_pipeline_metrics;
mod convert_secure;
mod convert_secure_lasso;
pub mod tls;

/// Generated protobuf and tonic types. Not domain types: convert with `convert` at the edge.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("fedrad.v1");
}

pub use convert::ConvertError;
pub use federation::PROTOCOL_VERSION;
