//! The site agent: runs inside a hospital, keeps every row local, answers the aggregator's tasks
//! with aggregates that pass the site's policy, and logs everything it sends.

pub mod agent;
pub mod attest;
pub mod audit;
pub mod bench;
pub mod config;
pub mod data;
pub mod extract;
pub mod import;
pub mod journal;
pub mod validate;

pub use agent::{Agent, AgentError, AgentOptions};
pub use config::SiteConfig;
