//! The federated study as pure logic: ids, site policy, study specs, tasks and results, the round
//! engine, and both halves (site and aggregator) of every analysis.
//!
//! Nothing here does IO: no network, no files, no clock (time is passed in as milliseconds), so
//! every step can be tested against a pooled reference without starting a server.

pub mod differencing;
pub mod engine;
pub mod harmonize;
pub mod ids;
pub mod lasso;
pub mod local;
pub mod pipeline;
pub mod policy;
pub mod records;
pub mod secure;
pub mod site;
pub mod study;
pub mod table;
pub mod table1;
pub mod task;

pub use ids::{SiteId, StudyHash, StudyId};

/// Version of the federation protocol spoken by this build. Both the agent and the aggregator
/// refuse a peer whose version differs, naming both numbers.
///
/// 2: LASSO moments as packed columns, x̃ᵀWx̃ as an optional low-rank factor, the pipeline's
/// column-names round and masked LASSO / meta-model / score rounds (a version-1 peer would
/// misread or not know them).
///
/// 3: the LASSO's vectors — x̃ᵀWx̃ (`IrlsSums.hess`, `IrlsSums.hess_factor`), x̃ᵀr and x̃ᵀw
/// (`IrlsSums.rx`, `IrlsSums.wx`) and the coefficients (`IrlsRequest.beta`) — as little-endian
/// bytes in new fields, and so the meta-model's weights and gradients (`FitVector.values`,
/// `FitMlpSums.grad_sum`; a version-2 peer would find none of them).
///
/// 4: the pipeline's LASSO Hessians in each site's row basis (`IrlsRequest.basis`,
/// `IrlsSums.hess_basis`, `IrlsSums.basis_r`); a version-3 site would ignore the request for
/// them and answer in a form the aggregator no longer expects there.
pub const PROTOCOL_VERSION: u32 = 4;
