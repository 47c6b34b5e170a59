//! The aggregator: enrols sites by certificate, drives studies' rounds, combines site aggregates,
//! persists every transition in sled, and writes results.

pub mod bench;
pub mod commands;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod failpoint;
pub mod reporting;
pub mod results;
pub mod roundlog;
pub mod server;
pub mod service;
pub mod simulate;
pub mod store;
pub mod timing;

pub use config::AggregatorConfig;
pub use server::Server;
