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

/// Largest gRPC message either side sends or accepts (256 MiB), set on the agent's client and
/// the aggregator's server alike. tonic's default of 4 MiB is too small for the published
/// protocol: a pipeline batch of 10 repeats sends every site one LASSO task of about 7.5 MB
/// (each of its 5 000 bootstrap sub-fits' standardisation and coefficients), and a default
/// agent refused it and retried forever. The bound still caps what a length prefix can make
/// the decoder allocate.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
