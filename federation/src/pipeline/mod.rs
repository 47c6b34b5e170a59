//! The published study as one federated analysis: repeated nested cross-validation of ComBat →
//! z-score → LASSO + bootstrap selection → site-trained SVM / random forest / boosted trees →
//! federated MLP meta-model, with a federated clinical logistic comparator, then the pooled
//! metrics. `spec` is the study file, `messages` what travels, `site` the site half,
//! `driver` the aggregator half, `metrics` the final stage.

pub mod driver;
pub mod messages;
pub mod metrics;
pub mod secure;
pub mod site;
pub mod spec;

pub use driver::{CvSummary, PipelineDriver};
pub use messages::{PipelineTask, StageResult, StageTask};
pub use metrics::PipelineOutput;
pub use site::{SitePipelineState, site_answer};
pub use spec::PipelineSpec;
