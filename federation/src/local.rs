//! Runs a study to completion in one process, every site answering through the same gate the
//! agents use, with no network and no persistence: the reference the network runs are compared
//! against, and a dry run for statisticians.

use crate::engine::{Accepted, StudyState};
use crate::policy::SitePolicy;
use crate::site;
use crate::study::StudySpec;
use crate::table::SiteTable;
use crate::{SiteId, engine::EngineError};
use std::collections::BTreeMap;

/// Why a local run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the study cannot start: {0}")]
    Start(String),
    #[error("a retried push from site {0} changed the study (results must be idempotent)")]
    NotIdempotent(SiteId),
    #[error("the study did not finish within {0} rounds")]
    TooManyRounds(u32),
}

/// Runs `spec` over `tables` (one per site, each with its own policy) until it completes or
/// fails. Every result is also re-submitted once to exercise idempotency.
pub fn run_local(
    spec: StudySpec,
    tables: &BTreeMap<SiteId, (SiteTable, SitePolicy)>,
    max_rounds: u32,
) -> Result<StudyState, LocalError> {
    let mut state = StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX)
        .map_err(LocalError::Start)?;
    // Each site's own memory between rounds (multi-stage studies keep state at the site).
    let mut memories: BTreeMap<SiteId, site::SiteMemory> = BTreeMap::new();
    while !state.status.is_finished() {
        if state.round > max_rounds {
            return Err(LocalError::TooManyRounds(max_rounds));
        }
        for (site, (table, policy)) in tables {
            let Some(task) = state.task_for(site) else {
                continue;
            };
            let memory = memories.entry(site.clone()).or_default();
            let result = site::answer_with_memory(&task, table, policy, memory).result;
            let retry = result.clone();
            state.accept(site, result, 0, 0)?;
            // A retried push of the same payload (a lost reply) must change nothing.
            if state.accept(site, retry, 0, 0)? != Accepted::Duplicate {
                return Err(LocalError::NotIdempotent(site.clone()));
            }
        }
    }
    Ok(state)
}
