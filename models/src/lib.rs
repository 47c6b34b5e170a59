//! Pure federated models for fedrad: standardisation, distributed ComBat, federated glmnet-style
//! LASSO logistic regression (CV + bootstrap selection) and exact federated logistic regression.
//!
//! Every federated step is split into a SITE HALF (a function of the site's own rows returning
//! only sums/aggregates) and an AGGREGATOR HALF (combines the sums in site order and solves),
//! with a POOLED REFERENCE used by the tests: federated equals pooled to round-off.
//! No IO: the network layer only moves the (serde) messages defined here.

pub mod combat;
pub mod disclosure;
pub mod error;
pub mod linalg;
pub mod standardize;

pub use disclosure::cross_product_allowed;
pub use error::{ModelsError, Result};
pub use standardize::{Standardizer, VarianceConvention, WeightedMoments, site_moments};
pub mod lasso;
pub mod logistic;
pub mod sampling;
